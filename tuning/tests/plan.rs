//! `plan()` on made-up topologies, and the layout file round trip.

use std::collections::BTreeSet;

use mdbus_tuning::{
    Layout, PlanError, PlanOptions, Role, RoleKind, Topology, parse_roles, plan, plan_with,
};

fn roles(spec: &str) -> Vec<Role> {
    parse_roles(spec).expect("role list parses")
}

/// Every (role, index) -> cpu in the layout.
fn placements(layout: &Layout) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for (name, role) in &layout.roles {
        for (i, &cpu) in role.cores.iter().enumerate() {
            out.push((name.clone(), i, cpu));
        }
    }
    out
}

/// The physical core (as its sorted cpu list) of `cpu`.
fn core_of(topology: &Topology, cpu: usize) -> Vec<usize> {
    topology
        .physical_cores()
        .into_iter()
        .find(|c| c.cpus.contains(&cpu))
        .expect("cpu in topology")
        .cpus
}

#[test]
fn two_core_box_uses_both_cpus_and_puts_the_strategy_on_its_feeds_cpu() {
    let topology = Topology::synthetic(1, 2, 1);
    let layout = plan(&topology, &roles("feed_handler,book_builder,strategy:2")).unwrap();
    // Cpu 1 is isolated for the feed handler; the book builder runs beside the OS on cpu 0
    // rather than time-share with the feed; the strategies share the feed handler's cpu (the
    // arrangement the demo runs on two cpus: the strategy in the feed handler's waits).
    assert_eq!(layout.core_for("feed_handler", 0), Some(1));
    assert_eq!(layout.core_for("book_builder", 0), Some(0));
    assert_eq!(layout.core_for("strategy", 0), Some(1));
    assert_eq!(layout.core_for("strategy", 1), Some(1));
    assert_eq!(layout.housekeeping, vec![0]);
    assert_eq!(layout.isolated, vec![1]);
    assert_eq!(
        layout.kernel_cmdline,
        "isolcpus=managed_irq,domain,1 nohz_full=1 rcu_nocbs=1 irqaffinity=0"
    );
    let warned = |a: &str, b: &str| {
        layout
            .warnings
            .iter()
            .any(|w| w.contains(a) && w.contains(b))
    };
    assert!(
        warned(
            "book_builder[0] runs on cpu 0 beside the OS",
            "not isolated"
        ),
        "{:?}",
        layout.warnings
    );
    assert!(
        warned(
            "feed_handler[0], strategy[0], strategy[1] time-share cpu 1",
            "feed's thread"
        ),
        "{:?}",
        layout.warnings
    );

    // Two roles: one each, never two busy pollers on one cpu.
    let layout = plan(&topology, &roles("feed_handler,book_builder")).unwrap();
    assert_eq!(layout.core_for("feed_handler", 0), Some(1));
    assert_eq!(layout.core_for("book_builder", 0), Some(0));
    assert!(!layout.warnings.iter().any(|w| w.contains("time-share")));

    // Without a feed handler or receiver, what does not fit time-shares the last cpu.
    let layout = plan(&topology, &roles("book_builder,strategy:2")).unwrap();
    assert_eq!(layout.core_for("book_builder", 0), Some(1));
    assert_eq!(layout.core_for("strategy", 0), Some(0));
    assert_eq!(layout.core_for("strategy", 1), Some(0));

    // One role fits without compromise.
    let layout = plan(&topology, &roles("feed_handler")).unwrap();
    assert_eq!(layout.core_for("feed_handler", 0), Some(1));
    assert!(layout.warnings.is_empty(), "{:?}", layout.warnings);
}

#[test]
fn single_cpu_runs_everything_beside_the_os() {
    let topology = Topology::synthetic(1, 1, 1);
    let layout = plan(&topology, &roles("feed_handler,strategy")).unwrap();
    assert_eq!(layout.core_for("feed_handler", 0), Some(0));
    assert_eq!(layout.core_for("strategy", 0), Some(0));
    assert!(layout.isolated.is_empty());
    assert!(layout.kernel_cmdline.is_empty());
    assert!(
        layout
            .warnings
            .iter()
            .any(|w| w.contains("no cpu outside the housekeeping core"))
    );

    // One core with two threads: the sibling first, cpu 0 last.
    let topology = Topology::synthetic(1, 1, 2);
    let layout = plan(&topology, &roles("feed_handler")).unwrap();
    assert_eq!(layout.core_for("feed_handler", 0), Some(1));
}

#[test]
fn eight_smt_cores_give_whole_cores_and_isolate_siblings() {
    let topology = Topology::synthetic(1, 8, 2); // cpus 0-15, siblings c and c+8
    let layout = plan(
        &topology,
        &roles("feed_handler,book_builder,strategy:2,recorder=background"),
    )
    .unwrap();
    assert!(layout.warnings.is_empty(), "{:?}", layout.warnings);
    let critical: Vec<(String, usize, usize)> = placements(&layout)
        .into_iter()
        .filter(|(n, _, _)| n != "recorder")
        .collect();
    assert_eq!(critical.len(), 4);
    let mut cores_used = BTreeSet::new();
    for (name, i, cpu) in &critical {
        let core = core_of(&topology, *cpu);
        assert!(!core.contains(&0), "{name}[{i}] on the OS core");
        assert!(
            cores_used.insert(core.clone()),
            "{name}[{i}] shares core {core:?}"
        );
    }
    // Data-flow order: feed handler first.
    assert_eq!(layout.core_for("feed_handler", 0), Some(1));
    assert_eq!(layout.core_for("book_builder", 0), Some(2));
    assert_eq!(layout.core_for("strategy", 0), Some(3));
    assert_eq!(layout.core_for("strategy", 1), Some(4));
    // Siblings of used cores are isolated too, and nothing runs on them.
    assert_eq!(layout.isolated, vec![1, 2, 3, 4, 9, 10, 11, 12]);
    assert!(
        layout.notes.iter().any(|n| n.contains("9-12")),
        "{:?}",
        layout.notes
    );
    // The background role lands on a housekeeping cpu away from cpu 0.
    let rec = layout.core_for("recorder", 0).unwrap();
    assert!(
        layout.housekeeping.contains(&rec) && rec != 0,
        "recorder on {rec}"
    );
    assert!(layout.kernel_cmdline.contains("irqaffinity=0,5-8,13-15"));
}

#[test]
fn eight_smt_cores_split_siblings_when_short() {
    let topology = Topology::synthetic(1, 8, 2);
    // 10 critical threads on 7 free cores (14 threads): 3 cores are split.
    let layout = plan(&topology, &roles("feed_handler,book_builder,strategy:8")).unwrap();
    let cpus: Vec<usize> = placements(&layout).iter().map(|p| p.2).collect();
    let distinct: BTreeSet<usize> = cpus.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        10,
        "each thread has its own hardware thread"
    );
    assert!(
        !distinct.contains(&0) && !distinct.contains(&8),
        "OS core untouched"
    );
    assert_eq!(layout.core_for("feed_handler", 0), Some(1));
    assert_eq!(layout.core_for("book_builder", 0), Some(2));
    let smt_warnings = layout.warnings.iter().filter(|w| w.contains("SMT")).count();
    assert_eq!(smt_warnings, 3, "{:?}", layout.warnings);
    assert_eq!(layout.housekeeping, vec![0, 8]);
}

#[test]
fn two_numa_nodes_keep_roles_on_one_node() {
    let topology = Topology::synthetic(2, 16, 1); // node 0: 0-15, node 1: 16-31
    let layout = plan(&topology, &roles("feed_handler,book_builder,strategy:4")).unwrap();
    assert!(layout.warnings.is_empty(), "{:?}", layout.warnings);
    for (name, i, cpu) in placements(&layout) {
        assert!(
            (1..16).contains(&cpu),
            "{name}[{i}] on cpu {cpu}, off node 0"
        );
    }

    // 16 threads do not fit the 15 free cores of node 0 but fit node 1.
    let layout = plan(&topology, &roles("feed_handler,strategy:15")).unwrap();
    assert!(layout.warnings.is_empty(), "{:?}", layout.warnings);
    for (name, i, cpu) in placements(&layout) {
        assert!(
            (16..32).contains(&cpu),
            "{name}[{i}] on cpu {cpu}, off node 1"
        );
    }

    // 20 fit no node: spread, with a warning, feed handler on the bigger node.
    let layout = plan(&topology, &roles("feed_handler,strategy:19")).unwrap();
    assert!(
        layout
            .warnings
            .iter()
            .any(|w| w.contains("span NUMA nodes 0, 1"))
    );
    assert_eq!(layout.core_for("feed_handler", 0), Some(16));

    // The NIC is on node 1: ask for it.
    let options = PlanOptions {
        prefer_node: Some(1),
    };
    let layout = plan_with(&topology, &roles("feed_handler,strategy:2"), &options).unwrap();
    assert_eq!(layout.core_for("feed_handler", 0), Some(16));
    assert_eq!(layout.core_for("strategy", 1), Some(18));
    let bad = PlanOptions {
        prefer_node: Some(7),
    };
    assert_eq!(
        plan_with(&topology, &roles("feed_handler"), &bad),
        Err(PlanError::UnknownNode(7))
    );
}

#[test]
fn two_numa_nodes_with_smt() {
    let topology = Topology::synthetic(2, 16, 2); // 64 cpus; siblings c and c+32
    let layout = plan(
        &topology,
        &roles("feed_handler,book_builder,sender,strategy:3"),
    )
    .unwrap();
    assert!(layout.warnings.is_empty(), "{:?}", layout.warnings);
    let mut cores = BTreeSet::new();
    for (name, i, cpu) in placements(&layout) {
        let core = core_of(&topology, cpu);
        assert!(cores.insert(core), "{name}[{i}] shares a core");
        assert!((1..16).contains(&cpu), "{name}[{i}] on cpu {cpu}");
    }
    assert_eq!(layout.isolated.len(), 12);
    assert!(layout.kernel_cmdline.contains("nohz_full=1-6,33-38"));
}

#[test]
fn bad_role_lists_are_errors() {
    let topology = Topology::synthetic(1, 4, 1);
    assert_eq!(plan(&topology, &[]), Err(PlanError::NoRoles));
    assert_eq!(
        plan(&topology, &[Role::new("s", RoleKind::Strategy, 0)]),
        Err(PlanError::ZeroCount("s".into()))
    );
    assert_eq!(
        plan(&Topology::from_cpus(vec![]), &roles("strategy")),
        Err(PlanError::NoCpus)
    );
}

#[test]
fn layout_file_round_trip() {
    let topology = Topology::synthetic(2, 8, 2);
    let mut layout = plan(&topology, &roles("feed_handler,book_builder,strategy:2")).unwrap();
    layout.roles.get_mut("feed_handler").unwrap().priority = Some(50);
    layout.runtime.prefault_stack = 1 << 20;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layout.toml");
    layout.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[roles.feed_handler]"), "{text}");
    assert!(text.contains("priority = 50"), "{text}");

    let back = Layout::load(&path).unwrap();
    assert_eq!(back, layout);
    assert_eq!(back.core_for("strategy", 1), layout.core_for("strategy", 1));
    assert_eq!(back.core_for("strategy", 2), None);

    // A hand-edited file with a typo is an error naming the file.
    std::fs::write(&path, text.replace("cores = [", "cors = [")).unwrap();
    let err = Layout::load(&path).unwrap_err().to_string();
    assert!(err.contains("layout.toml") && err.contains("cors"), "{err}");

    let missing = Layout::load(dir.path().join("nope.toml")).unwrap_err();
    assert!(missing.is_missing());
}

#[test]
fn layout_prints_for_an_operator() {
    let topology = Topology::synthetic(1, 4, 1);
    let layout = plan(&topology, &roles("feed_handler,strategy:2")).unwrap();
    let text = layout.to_string();
    assert!(text.contains("feed_handler  feed_handler  1"), "{text}");
    assert!(text.contains("isolcpus=managed_irq,domain,1-3"), "{text}");
    assert!(text.contains("kernel.watchdog_cpumask = 0"), "{text}");
    assert!(
        text.contains("echo 1 > /proc/irq/default_smp_affinity"),
        "{text}"
    );
}
