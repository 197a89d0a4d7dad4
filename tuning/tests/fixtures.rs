//! Host checks and topology reading against fake `/proc` and `/sys` trees with known answers.
//!
//! Each directory under `tests/fixtures/` is one host (see the README there); its `facts.toml`
//! holds the non-file facts (limits, capabilities, statvfs).

use std::path::PathBuf;

use mdbus_tuning::{
    CHECK_IDS, Report, StaticFacts, Status, SysRoot, Topology, parse_roles, plan, run_checks,
};

fn fixture(host: &str) -> SysRoot {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(host);
    let facts = StaticFacts::load(root.join("facts.toml")).expect("fixture facts parse");
    SysRoot::new(root, facts)
}

/// Asserts every check's status and unknown flag: `(id, status, unknown)`.
fn assert_statuses(report: &Report, expected: &[(&str, Status, bool)]) {
    assert_eq!(report.checks.len(), CHECK_IDS.len(), "one result per check");
    assert_eq!(
        expected.len(),
        CHECK_IDS.len(),
        "the test covers every check"
    );
    for (id, status, unknown) in expected {
        let check = report
            .get(id)
            .unwrap_or_else(|| panic!("no check {id} in report"));
        assert_eq!(
            (check.status, check.unknown),
            (*status, *unknown),
            "check {id}: found {:?}",
            check.found
        );
        assert!(!check.found.is_empty(), "check {id} says what it found");
        assert!(!check.why.is_empty(), "check {id} says why");
        if check.status == Status::Pass {
            assert!(check.fix.is_none(), "check {id} passes but has a fix");
        } else {
            assert!(
                check.fix.as_deref().is_some_and(|f| !f.is_empty()),
                "check {id} is {} without a fix",
                check.status
            );
        }
    }
}

fn found<'a>(report: &'a Report, id: &str) -> &'a str {
    &report.get(id).expect("check present").found
}

#[test]
fn tuned_host_passes_everything() {
    use Status::*;
    let report = run_checks(&fixture("tuned"));
    assert_statuses(
        &report,
        &[
            ("isolated_cores", Pass, false),
            ("irqbalance", Pass, false),
            ("nic_irq_affinity", Pass, false),
            ("cpu_governor", Pass, false),
            ("c_states", Pass, false),
            ("transparent_hugepages", Pass, false),
            ("huge_pages", Pass, false),
            ("swap", Pass, false),
            ("clocksource", Pass, false),
            ("invariant_tsc", Pass, false),
            ("socket_buffers", Pass, false),
            ("busy_polling", Pass, false),
            ("numa", Pass, false),
            ("dev_shm", Pass, false),
            ("memlock", Pass, false),
            ("realtime", Pass, false),
        ],
    );
    assert_eq!(report.worst(), Pass);
    assert_eq!(report.hostname.as_deref(), Some("tuned-box"));
    assert_eq!(
        found(&report, "isolated_cores"),
        "isolated 1-3,5-7; nohz_full 1-3,5-7; rcu_nocbs 1-3,5-7"
    );
    // Five eth0 interrupts (the nvme queue on cpu 1 is not a NIC queue).
    assert!(
        found(&report, "nic_irq_affinity").starts_with("5 NIC IRQs: 5 IRQs on 0,4"),
        "{}",
        found(&report, "nic_irq_affinity")
    );
    // C6 and C1E are disabled, so C1 is the deepest state in use.
    assert!(found(&report, "c_states").contains("C1 (2 us) on 0-7"));
    assert!(found(&report, "huge_pages").contains("1000 of 1024"));
    assert!(found(&report, "realtime").contains("SCHED_FIFO 1-99"));
    assert!(found(&report, "dev_shm").contains("8 GiB"));
}

#[test]
fn laptop_warns_and_fails_on_memlock() {
    use Status::*;
    let report = run_checks(&fixture("laptop"));
    assert_statuses(
        &report,
        &[
            ("isolated_cores", Warn, false),
            ("irqbalance", Warn, false),
            ("nic_irq_affinity", Warn, false),
            ("cpu_governor", Warn, false),
            ("c_states", Warn, false),
            ("transparent_hugepages", Warn, false),
            ("huge_pages", Warn, false),
            ("swap", Warn, false),
            ("clocksource", Pass, false),
            ("invariant_tsc", Pass, false),
            ("socket_buffers", Warn, false),
            ("busy_polling", Warn, false),
            ("numa", Pass, false),
            ("dev_shm", Pass, false),
            ("memlock", Fail, false),
            ("realtime", Warn, false),
        ],
    );
    assert_eq!(report.worst(), Fail);
    // The wired NIC (by msi_irqs) and the four iwlwifi queues (by name); not ahci or i915.
    assert!(
        found(&report, "nic_irq_affinity").starts_with("5 NIC IRQs"),
        "{}",
        found(&report, "nic_irq_affinity")
    );
    assert!(found(&report, "cpu_governor").contains("powersave on 0-3"));
    assert!(found(&report, "c_states").contains("C10 (890 us)"));
    assert!(found(&report, "socket_buffers").contains("208 KiB"));
    assert!(found(&report, "memlock").contains("soft 8 MiB"));
    assert!(
        report
            .get("socket_buffers")
            .and_then(|c| c.fix.as_deref())
            .is_some_and(|f| f.contains("net.core.rmem_max=16777216"))
    );
}

#[test]
fn container_missing_files_are_unknown_not_panics() {
    use Status::*;
    let report = run_checks(&fixture("container"));
    assert_statuses(
        &report,
        &[
            ("isolated_cores", Warn, false),
            ("irqbalance", Pass, false),
            ("nic_irq_affinity", Warn, true),
            ("cpu_governor", Warn, true),
            ("c_states", Warn, true),
            ("transparent_hugepages", Warn, true),
            ("huge_pages", Warn, true),
            ("swap", Warn, true),
            ("clocksource", Warn, true),
            ("invariant_tsc", Warn, true),
            ("socket_buffers", Warn, true),
            ("busy_polling", Warn, true),
            ("numa", Warn, true),
            ("dev_shm", Fail, false),
            ("memlock", Fail, false),
            ("realtime", Warn, false),
        ],
    );
    // Missing and malformed files are named in what was found.
    assert!(found(&report, "nic_irq_affinity").contains("/proc/interrupts"));
    assert!(found(&report, "huge_pages").contains("HugePages_Total"));
    assert!(found(&report, "socket_buffers").contains("garbage"));
    // /dev/shm size came from the size= option in /proc/mounts.
    assert!(
        found(&report, "dev_shm").contains("64 MiB (/proc/mounts)"),
        "{}",
        found(&report, "dev_shm")
    );
    // Root, but the capability set lacks CAP_IPC_LOCK and CAP_SYS_NICE.
    assert!(found(&report, "memlock").contains("root without CAP_IPC_LOCK"));
    assert!(found(&report, "realtime").contains("root without CAP_SYS_NICE"));
    assert_eq!(report.kernel, None);
}

#[test]
fn misconfigured_server_fails_where_it_hurts() {
    use Status::*;
    let report = run_checks(&fixture("misconfigured"));
    assert_statuses(
        &report,
        &[
            ("isolated_cores", Warn, false),
            ("irqbalance", Pass, false),
            ("nic_irq_affinity", Fail, false),
            ("cpu_governor", Warn, false),
            ("c_states", Pass, false),
            ("transparent_hugepages", Fail, false),
            ("huge_pages", Warn, false),
            ("swap", Pass, false),
            ("clocksource", Fail, false),
            ("invariant_tsc", Warn, false),
            ("socket_buffers", Warn, false),
            ("busy_polling", Warn, false),
            ("numa", Warn, false),
            ("dev_shm", Warn, false),
            ("memlock", Warn, false),
            ("realtime", Pass, false),
        ],
    );
    let iso = found(&report, "isolated_cores");
    assert!(iso.contains("cpus 4-5 still take the timer tick"), "{iso}");
    assert!(iso.contains("cpus 4-5 still run RCU callbacks"), "{iso}");
    let nic = found(&report, "nic_irq_affinity");
    assert!(
        nic.contains("62 (mlx5_comp2@pci:0000:5e:00.0) -> 2"),
        "{nic}"
    );
    assert!(
        !nic.contains("61 ("),
        "irq 61 is on housekeeping cpu 1: {nic}"
    );
    let fix = report.get("nic_irq_affinity").and_then(|c| c.fix.clone());
    assert_eq!(
        fix.as_deref(),
        Some(
            "for irq in 60 61 62 63; do echo 0-1,6-7 > /proc/irq/$irq/smp_affinity_list; done \
             (and stop irqbalance so it stays)"
        )
    );
    assert!(found(&report, "numa").contains("span nodes 0, 1"));
    assert!(found(&report, "c_states").contains("idle=poll"));
    assert!(found(&report, "realtime").contains("RT throttling off"));
}

#[test]
fn report_serialises_and_prints() {
    let report = run_checks(&fixture("laptop"));
    let json = serde_json::to_string(&report).expect("report serialises");
    let back: Report = serde_json::from_str(&json).expect("report deserialises");
    assert_eq!(back, report);
    let value: serde_json::Value = serde_json::from_str(&json).expect("valid json");
    assert_eq!(value["checks"][0]["id"], "isolated_cores");
    assert_eq!(value["checks"][14]["status"], "fail");

    let table = report.to_string();
    assert!(table.starts_with("mdbus host check on laptop (kernel 6.5.0-21-generic)"));
    assert!(table.contains("[FAIL]  memlock limit"), "{table}");
    assert!(table.contains("[PASS]  clocksource"), "{table}");
    assert!(table.contains("fix: ulimit -l unlimited"), "{table}");
    assert!(
        table.contains("16 checks: 4 pass, 11 warn, 1 fail; worst: [FAIL]"),
        "{table}"
    );
    assert!(!table.contains('\u{1b}'), "no colour escapes");
}

#[test]
fn an_empty_root_gives_a_full_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = run_checks(&SysRoot::new(dir.path(), StaticFacts::default()));
    assert_eq!(report.checks.len(), CHECK_IDS.len());
    for check in &report.checks {
        assert_ne!(check.status, Status::Pass, "{} passed on nothing", check.id);
        assert!(check.unknown, "{} is not marked unknown", check.id);
    }
}

#[test]
fn topology_from_fixture_trees() {
    let tuned = Topology::read(&fixture("tuned")).expect("tuned topology");
    assert_eq!(tuned.cpus.len(), 8);
    assert!(tuned.notes.is_empty(), "{:?}", tuned.notes);
    assert_eq!(tuned.isolated, vec![1, 2, 3, 5, 6, 7]);
    let cores: Vec<Vec<usize>> = tuned.physical_cores().into_iter().map(|c| c.cpus).collect();
    assert_eq!(cores, vec![vec![0, 4], vec![1, 5], vec![2, 6], vec![3, 7]]);

    let server = Topology::read(&fixture("misconfigured")).expect("server topology");
    assert_eq!(server.nodes(), vec![0, 1]);
    assert_eq!(server.cpus[5].node, 1);
    assert_eq!(server.cpus[5].package, 1);

    // No /sys at all: cpus from /proc/cpuinfo, each its own core, node 0, with notes.
    let container = Topology::read(&fixture("container")).expect("container topology");
    assert_eq!(container.cpu_ids(), vec![0, 1]);
    assert_eq!(container.physical_cores().len(), 2);
    assert!(container.notes.iter().any(|n| n.contains("/proc/cpuinfo")));

    let empty = tempfile::tempdir().expect("tempdir");
    let err = Topology::read(&SysRoot::new(empty.path(), StaticFacts::default())).unwrap_err();
    assert!(
        err.to_string().contains("/sys/devices/system/cpu/online"),
        "{err}"
    );
}

#[test]
fn plan_on_the_tuned_fixture_matches_its_isolation() {
    let topology = Topology::read(&fixture("tuned")).expect("topology");
    let roles = parse_roles("feed_handler,book_builder,strategy").expect("roles");
    let layout = plan(&topology, &roles).expect("plan");
    assert_eq!(layout.isolated, vec![1, 2, 3, 5, 6, 7]);
    assert_eq!(layout.housekeeping, vec![0, 4]);
    // Same set as the kernel isolates already: no note about a difference.
    assert!(
        !layout
            .notes
            .iter()
            .any(|n| n.contains("the kernel isolates"))
    );
}
