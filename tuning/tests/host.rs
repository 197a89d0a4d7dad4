//! On the machine running the tests: the real checks (smoke), the real topology, and the
//! runtime functions on real threads. Each runtime test runs in its own spawned thread so the
//! settings it changes die with that thread.

use std::collections::BTreeMap;

use mdbus_tuning::{
    Action, CHECK_IDS, LAYOUT_VERSION, Layout, RealtimeOutcome, RoleKind, RoleLayout,
    RuntimeSettings, StepOutcome, SysRoot, Topology, TuneError, apply_role, current_affinity,
    lock_memory, name_thread, parse_roles, pin_current_thread, plan, run_checks, set_realtime,
    unlock_memory,
};

#[test]
fn real_checks_return_a_full_report() {
    let report = run_checks(&SysRoot::host());
    let ids: Vec<&str> = report.checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, CHECK_IDS);
    for check in &report.checks {
        assert!(!check.found.is_empty(), "{} found nothing", check.id);
    }
    let json = serde_json::to_value(&report).expect("serialises");
    for check in json["checks"].as_array().expect("array") {
        let status = check["status"].as_str().expect("status is a string");
        assert!(["pass", "warn", "fail"].contains(&status), "{status}");
    }
    let table = report.to_string();
    assert_eq!(
        table.lines().filter(|l| l.starts_with('[')).count(),
        CHECK_IDS.len()
    );
    println!("{table}");
}

#[test]
fn real_topology_plans() {
    let topology = Topology::read(&SysRoot::host()).expect("this host has a topology");
    assert!(!topology.cpus.is_empty());
    let layout = plan(&topology, &parse_roles("feed_handler,strategy").unwrap()).unwrap();
    let online = topology.cpu_ids();
    for role in layout.roles.values() {
        for cpu in &role.cores {
            assert!(online.contains(cpu), "cpu {cpu} is not online");
        }
    }
    println!("{layout}");
}

/// Runs `f` on a fresh thread and returns its result.
fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().expect("test thread panicked")
}

/// `(policy, rt_priority)` of the calling thread from `/proc/thread-self/stat`.
fn sched_of_this_thread() -> (u32, u32) {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
    let after_comm = &stat[stat.rfind(')').expect("comm") + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Field 3 (state) is fields[0]; rt_priority is field 40, policy field 41.
    (
        fields[38].parse().expect("policy"),
        fields[37].parse().expect("rt_priority"),
    )
}

fn comm_of_this_thread() -> String {
    std::fs::read_to_string("/proc/thread-self/comm")
        .expect("comm")
        .trim()
        .to_string()
}

#[test]
fn pin_verifies_and_rejects_impossible_cpus() {
    on_thread(|| {
        let allowed = current_affinity().expect("affinity");
        let cpu = *allowed.last().expect("some cpu");
        pin_current_thread(cpu).expect("pin to an allowed cpu");
        assert_eq!(current_affinity().unwrap(), vec![cpu]);

        assert!(matches!(
            pin_current_thread(1 << 20),
            Err(TuneError::Pin { .. })
        ));
        if !allowed.contains(&1023) {
            let err = pin_current_thread(1023).unwrap_err();
            assert!(err.to_string().contains("cpu 1023"), "{err}");
        }
        // A failed pin leaves the previous mask in place.
        assert_eq!(current_affinity().unwrap(), vec![cpu]);
    });
}

#[test]
fn thread_names_are_truncated_to_fifteen_bytes() {
    on_thread(|| {
        assert_eq!(
            name_thread("book_builder-12345").unwrap(),
            "book_builder-12"
        );
        assert_eq!(comm_of_this_thread(), "book_builder-12");
    });
}

#[test]
fn realtime_applies_or_warns() {
    on_thread(|| match set_realtime(1).expect("priority 1 is valid") {
        RealtimeOutcome::Applied { priority } => {
            assert_eq!(priority, 1);
            assert_eq!(sched_of_this_thread(), (1, 1), "SCHED_FIFO priority 1");
        }
        RealtimeOutcome::NotPermitted { hint, .. } => {
            assert!(hint.contains("RLIMIT_RTPRIO"), "{hint}");
            assert_eq!(sched_of_this_thread().0, 0, "still SCHED_OTHER");
        }
    });
}

#[test]
fn lock_memory_locks_or_explains() {
    match lock_memory() {
        Ok(()) => {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let locked_kb: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmLck:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .expect("VmLck in status");
            assert!(locked_kb > 0, "mlockall succeeded but nothing is locked");
            unlock_memory().expect("munlockall");
        }
        Err(err) => {
            let msg = err.to_string();
            assert!(msg.contains("memlock limit"), "{msg}");
            assert!(msg.contains("ulimit -l unlimited"), "{msg}");
        }
    }
}

fn test_layout(cpu: usize, priority: Option<i32>) -> Layout {
    let mut roles = BTreeMap::new();
    roles.insert(
        "probe".to_string(),
        RoleLayout {
            kind: RoleKind::Strategy,
            cores: vec![cpu],
            priority,
        },
    );
    Layout {
        version: LAYOUT_VERSION,
        housekeeping: vec![],
        isolated: vec![],
        kernel_cmdline: String::new(),
        warnings: vec![],
        notes: vec![],
        commands: vec![],
        runtime: RuntimeSettings {
            lock_memory: false,
            prefault_stack: 128 * 1024,
        },
        roles,
        sysctls: vec![],
    }
}

#[test]
fn apply_role_reports_and_the_guard_restores() {
    on_thread(|| {
        let before_affinity = current_affinity().unwrap();
        let before_name = comm_of_this_thread();
        let cpu = before_affinity[0];
        let layout = test_layout(cpu, Some(1));

        let guard = apply_role(&layout, "probe", 0).expect("role exists");
        let report = guard.report().clone();
        assert!(report.is_ok(), "{report}");
        assert_eq!(
            report.outcome(Action::NameThread),
            Some(&StepOutcome::Applied("probe-0".into()))
        );
        assert_eq!(
            report.outcome(Action::Pin),
            Some(&StepOutcome::Applied(format!("cpu {cpu}")))
        );
        assert!(matches!(
            report.outcome(Action::LockMemory),
            Some(StepOutcome::NotRequested(_))
        ));
        assert!(matches!(
            report.outcome(Action::PrefaultStack),
            Some(StepOutcome::Applied(_))
        ));
        assert!(matches!(
            report.outcome(Action::Realtime),
            Some(StepOutcome::Applied(_) | StepOutcome::Warning(_))
        ));
        assert_eq!(current_affinity().unwrap(), vec![cpu]);
        assert_eq!(comm_of_this_thread(), "probe-0");
        assert!(report.to_string().contains("probe[0]"));

        drop(guard);
        assert_eq!(current_affinity().unwrap(), before_affinity);
        assert_eq!(comm_of_this_thread(), before_name);
        assert_eq!(sched_of_this_thread().0, 0, "back to SCHED_OTHER");
    });
}

#[test]
fn apply_role_keep_and_missing_pieces() {
    on_thread(|| {
        let cpu = current_affinity().unwrap()[0];
        let layout = test_layout(cpu, None);

        let report = apply_role(&layout, "probe", 0).unwrap().keep();
        assert!(report.is_complete(), "{report}");
        assert_eq!(current_affinity().unwrap(), vec![cpu], "kept after keep()");

        // Instance 1 has no core in the layout: a warning, not an error.
        let guard = apply_role(&layout, "probe", 1).unwrap();
        assert!(matches!(
            guard.report().outcome(Action::Pin),
            Some(StepOutcome::Warning(_))
        ));
        assert!(!guard.report().is_complete());
        drop(guard);

        let err = apply_role(&layout, "trader", 0).unwrap_err();
        assert!(err.to_string().contains("probe"), "{err}");
    });
}
