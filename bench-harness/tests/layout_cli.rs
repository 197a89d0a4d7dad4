//! `--layout FILE` and `$MDBUS_LAYOUT` on `mdbus bench ring|replay|udp|all`, `mdbus replay` and
//! `mdbus demo`, through the built binary: threads land on the cores `mdbus tune plan --out`
//! gave their roles, explicit `--cores`/`--cpus` win, and a bad layout is a clear error with a
//! nonzero exit status before anything runs. No timing is asserted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mdbus_tuning::Layout;
use serde_json::Value;

fn mdbus_env(args: &[&str], layout_env: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdbus"));
    cmd.args(args).env_remove("MDBUS_LAYOUT");
    if let Some(p) = layout_env {
        cmd.env("MDBUS_LAYOUT", p);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run mdbus {args:?}: {e}"))
}

fn mdbus(args: &[&str]) -> Output {
    mdbus_env(args, None)
}

/// `mdbus tune plan --roles ROLES --out PATH`, which must succeed.
fn plan_layout(roles: &str, path: &Path) {
    let out = mdbus(&["tune", "plan", "--roles", roles, "--out", s(path)]);
    assert!(out.status.success(), "tune plan --roles {roles}: {out:?}");
}

fn ok_output(out: Output, args: &[&str]) -> (Value, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "mdbus {args:?} failed: {}\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let v = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("mdbus {args:?}: not JSON ({e}): {stdout}"));
    (v, stderr)
}

fn json(args: &[&str]) -> (Value, String) {
    ok_output(mdbus(args), args)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A layout for feed_handler, book_builder and strategy, planned on this host.
fn planned(dir: &Path) -> (PathBuf, Layout) {
    let path = dir.join("layout.toml");
    plan_layout("feed_handler,book_builder,strategy", &path);
    let layout = Layout::load(&path).unwrap();
    (path, layout)
}

fn core(layout: &Layout, role: &str) -> u64 {
    layout.core_for(role, 0).unwrap() as u64
}

fn cores_used(report: &Value) -> Vec<u64> {
    report["host"]["cores_used"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect()
}

fn allowed() -> Vec<usize> {
    mdbus_tuning::current_affinity().unwrap()
}

#[test]
fn bench_scenarios_pin_to_the_planned_cores() {
    let dir = tempfile::tempdir().unwrap();
    let (path, layout) = planned(dir.path());
    let ring_cores = vec![core(&layout, "feed_handler"), core(&layout, "strategy")];
    let stage_cores = vec![
        core(&layout, "feed_handler"),
        core(&layout, "book_builder"),
        core(&layout, "strategy"),
    ];

    let (v, _) = json(&["bench", "ring", "--quick", "--json", "--layout", s(&path)]);
    assert_eq!(cores_used(&v), ring_cores, "{}", v["host"]);
    assert_eq!(v["host"]["pinned"], true);
    assert_eq!(v["layout"]["file"], s(&path));
    let roles: Vec<&str> = v["layout"]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["feed_handler", "strategy"]);

    let (v, _) = json(&["bench", "replay", "--quick", "--json", "--layout", s(&path)]);
    assert_eq!(cores_used(&v), stage_cores, "{}", v["host"]);
    assert_eq!(v["layout"]["threads"][1]["role"], "book_builder");

    // `bench all` passes the layout on to every scenario.
    let (v, _) = json(&["bench", "all", "--quick", "--json", "--layout", s(&path)]);
    assert_eq!(cores_used(&v["scenarios"]["ring"]), ring_cores);
    assert_eq!(cores_used(&v["scenarios"]["replay"]), stage_cores);
    assert_eq!(v["scenarios"]["ring"]["layout"]["file"], s(&path));
    assert_eq!(v["scenarios"]["udp"]["layout"]["file"], s(&path));
}

/// `text` (a layout file) with role `role` on `cpu`.
fn with_core(text: &str, role: &str, cpu: usize) -> String {
    let section = text
        .find(&format!("[roles.{role}]"))
        .unwrap_or_else(|| panic!("no role {role} in {text}"));
    let at = section + text[section..].find("cores = [").unwrap();
    let end = at + text[at..].find(']').unwrap();
    format!("{}cores = [{cpu}{}", &text[..at], &text[end..])
}

/// `bench udp`, quick and without the throughput and recovery phases.
const UDP: [&str; 8] = [
    "bench",
    "udp",
    "--quick",
    "--json",
    "--throughput-count",
    "0",
    "--recovery-count",
    "0",
];

/// The (thread, role, cpu, from_layout) of each thread in a report's `layout`.
fn layout_threads(report: &Value) -> Vec<(String, String, u64, bool)> {
    report["layout"]["threads"]
        .as_array()
        .unwrap_or_else(|| panic!("no layout threads in {report}"))
        .iter()
        .map(|t| {
            (
                t["thread"].as_str().unwrap().to_string(),
                t["role"].as_str().unwrap_or("-").to_string(),
                t["cpu"].as_u64().unwrap(),
                t["from_layout"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn udp_with(layout: &Path, extra: &[&str]) -> Value {
    let mut args = UDP.to_vec();
    args.extend(extra);
    args.extend(["--layout", s(layout)]);
    let (v, _) = json(&args);
    assert_eq!(v["layout"]["file"], s(layout));
    assert_eq!(v["host"]["pinned"], true, "{}", v["host"]);
    // The report's own record of the threads agrees with the layout record.
    let threads: Vec<u64> = layout_threads(&v).iter().map(|t| t.2).collect();
    let params: Vec<u64> = v["params"]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["cpu"].as_u64().unwrap())
        .collect();
    assert_eq!(threads, params, "{v}");
    assert_eq!(cores_used(&v), threads, "{}", v["host"]);
    v
}

#[test]
fn bench_udp_takes_its_threads_from_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("udp.toml");
    plan_layout("feed_handler,sender,receiver,strategy", &path);
    let layout = Layout::load(&path).unwrap();
    let [p, sn, r, c] =
        ["feed_handler", "sender", "receiver", "strategy"].map(|x| core(&layout, x));

    // As planned, by $MDBUS_LAYOUT: four threads when the plan has four distinct cpus, else
    // the measuring thread in the feed handler's role and the transport thread in another.
    let (v, _) = ok_output(mdbus_env(&UDP, Some(&path)), &UDP);
    assert_eq!(v["layout"]["file"], s(&path));
    let threads = layout_threads(&v);
    let mut distinct = vec![p, sn, r, c];
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() == 4 {
        let want = [
            ("producer", "feed_handler", p),
            ("sender", "sender", sn),
            ("receiver", "receiver", r),
            ("consumer", "strategy", c),
        ];
        for (got, want) in threads.iter().zip(want) {
            assert_eq!((got.0.as_str(), got.1.as_str(), got.2), want, "{threads:?}");
        }
        assert_eq!(threads.len(), 4);
    } else {
        assert_eq!(threads.len(), 2, "{threads:?}");
        assert_eq!(threads[0].0, "producer+consumer");
        assert_eq!((threads[0].1.as_str(), threads[0].2), ("feed_handler", p));
        assert_eq!(threads[1].0, "sender+receiver");
        assert_eq!(threads[1].2, core(&layout, &threads[1].1), "{threads:?}");
        let notes = v["notes"].to_string();
        assert!(notes.contains("2-cpu placement"), "{notes}");
    }
    assert!(threads.iter().all(|t| t.3), "{threads:?}");

    let plan = std::fs::read_to_string(&path).unwrap();
    let cpus = allowed();
    if cpus.len() >= 2 {
        // Sender on the feed handler's cpu, receiver elsewhere: the transport thread takes the
        // receiver's role, on its own cpu.
        let (a, b) = (cpus[0], cpus[1]);
        let mut text = plan.clone();
        for (role, cpu) in [
            ("feed_handler", a),
            ("sender", a),
            ("receiver", b),
            ("strategy", b),
        ] {
            text = with_core(&text, role, cpu);
        }
        let two = dir.path().join("two.toml");
        std::fs::write(&two, text).unwrap();
        let v = udp_with(&two, &[]);
        let threads = layout_threads(&v);
        assert_eq!(threads[0].1, "feed_handler");
        assert_eq!(
            (threads[1].1.as_str(), threads[1].2),
            ("receiver", b as u64)
        );
    }
    if cpus.len() >= 4 {
        let mut text = plan.clone();
        for (i, role) in ["feed_handler", "sender", "receiver", "strategy"]
            .iter()
            .enumerate()
        {
            text = with_core(&text, role, cpus[i]);
        }
        let four = dir.path().join("four.toml");
        std::fs::write(&four, text).unwrap();
        let v = udp_with(&four, &[]);
        let threads: Vec<(String, u64)> =
            layout_threads(&v).into_iter().map(|t| (t.1, t.2)).collect();
        let want: Vec<(String, u64)> = ["feed_handler", "sender", "receiver", "strategy"]
            .iter()
            .zip(&cpus)
            .map(|(r, &c)| (r.to_string(), c as u64))
            .collect();
        assert_eq!(threads, want);
    }

    // --cpus chooses the cpus; the layout still gives the roles.
    let c0 = cpus[0];
    let list = format!("{c0},{c0}");
    let v = udp_with(&path, &["--cpus", &list]);
    let threads = layout_threads(&v);
    assert_eq!(threads.len(), 2);
    assert_eq!(threads[0].1, "feed_handler");
    assert_eq!(threads[1].1, "sender");
    assert!(
        threads.iter().all(|t| t.2 == c0 as u64 && !t.3),
        "{threads:?}"
    );
}

#[test]
fn bench_udp_refuses_bad_layouts_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |layout: &Path, expect: &[&str]| {
        let mut args = UDP.to_vec();
        args.extend(["--layout", s(layout)]);
        let out = mdbus(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "mdbus {args:?} succeeded: {stderr}");
        assert!(out.stdout.is_empty(), "mdbus {args:?} printed a report");
        for e in expect {
            assert!(stderr.contains(e), "{e:?} not in {stderr}");
        }
    };
    let garbage = dir.path().join("garbage.toml");
    std::fs::write(&garbage, "this is not [a layout").unwrap();
    refused(&garbage, &["layout", "garbage.toml"]);
    refused(&dir.path().join("missing.toml"), &["missing.toml"]);

    // A layout with no role for the transport thread.
    let feed_only = dir.path().join("feed-only.toml");
    plan_layout("feed_handler", &feed_only);
    refused(
        &feed_only,
        &[
            "feed-only.toml",
            "\"sender\"",
            "tune plan --roles feed_handler,sender,receiver,strategy",
        ],
    );

    // The transport thread's role on a cpu this host lacks.
    let path = dir.path().join("udp.toml");
    plan_layout("feed_handler,sender", &path);
    let plan = std::fs::read_to_string(&path).unwrap();
    let far = dir.path().join("far.toml");
    std::fs::write(&far, with_core(&plan, "sender", 4000)).unwrap();
    refused(
        &far,
        &["far.toml", "cpu 4000", "does not have", "\"sender\""],
    );
}

#[test]
fn the_environment_names_the_layout_and_explicit_cores_win() {
    let dir = tempfile::tempdir().unwrap();
    let (path, layout) = planned(dir.path());
    let args = ["bench", "ring", "--quick", "--json", "--systems", "floor"];
    let (v, _) = ok_output(mdbus_env(&args, Some(&path)), &args);
    assert_eq!(
        cores_used(&v),
        [core(&layout, "feed_handler"), core(&layout, "strategy")]
    );
    assert_eq!(v["layout"]["file"], s(&path));
    assert_eq!(v["layout"]["threads"][0]["from_layout"], true);

    // --cores chooses the cores; the layout still names the roles.
    let c = allowed()[0];
    let cores = format!("{c},{c}");
    let args = [
        "bench",
        "ring",
        "--quick",
        "--json",
        "--systems",
        "floor",
        "--cores",
        &cores,
    ];
    let (v, _) = ok_output(mdbus_env(&args, Some(&path)), &args);
    assert_eq!(cores_used(&v), [c as u64, c as u64]);
    assert_eq!(v["layout"]["threads"][0]["from_layout"], false);
    assert_eq!(v["layout"]["threads"][0]["role"], "feed_handler");

    // So does demo's --cpus.
    let cpu = c.to_string();
    let (v, _) = json(&[
        "demo",
        "--rate",
        "0",
        "--json",
        "--layout",
        s(&path),
        "--cpus",
        &cpu,
    ]);
    assert_eq!(v["placement"]["feed_cpu"], c as u64);
    assert_eq!(v["placement"]["layout"]["file"], s(&path));
    assert_eq!(v["matches_reference"], true);

    // Without a layout (and no MDBUS_LAYOUT), no layout is recorded.
    let (v, _) = json(&["bench", "ring", "--quick", "--json", "--systems", "floor"]);
    assert!(v.get("layout").is_none(), "{v}");
}

#[test]
fn replay_runs_its_threads_where_the_layout_says() {
    let dir = tempfile::tempdir().unwrap();
    let (path, layout) = planned(dir.path());
    let aapl = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codecs/testdata/itch/aapl-2020-01-30-10k.itch");
    let root = dir.path().join("bus");
    let (v, stderr) = json(&[
        "replay",
        s(&aapl),
        "--root",
        s(&root),
        "--book",
        "--json",
        "--layout",
        s(&path),
    ]);
    assert_eq!(v["published"], 10_000, "{v}");
    for (thread, role) in [
        ("feed handler", "feed_handler"),
        ("book builder", "book_builder"),
    ] {
        let line = format!("{thread} on cpu {} (role {role}[0])", core(&layout, role));
        assert!(stderr.contains(&line), "{line:?} in {stderr}");
    }
}

/// Every command that takes a layout.
const ALL_COMMANDS: [&str; 5] = ["bench ring", "bench replay", "bench all", "demo", "replay"];

/// Runs each of `which` (from [`ALL_COMMANDS`]) with `layout` (by `--layout`, or by
/// `$MDBUS_LAYOUT` when `env`) and checks each fails, naming what is wrong.
fn each_command_refuses(layout: &Path, env: bool, which: &[&str], expect: &[&str]) {
    let aapl = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codecs/testdata/itch/aapl-2020-01-30-10k.itch");
    let root = layout.with_extension("bus");
    let commands: [Vec<&str>; 5] = [
        vec!["bench", "ring", "--quick", "--json"],
        vec!["bench", "replay", "--quick", "--json"],
        vec!["bench", "all", "--quick", "--json"],
        vec!["demo", "--json"],
        vec!["replay", s(&aapl), "--root", s(&root), "--book"],
    ];
    for (name, mut args) in ALL_COMMANDS.iter().zip(commands) {
        if !which.contains(name) {
            continue;
        }
        if !env {
            args.extend(["--layout", s(layout)]);
        }
        let out = mdbus_env(&args, env.then_some(layout));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "mdbus {args:?} succeeded: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "mdbus {args:?} printed a report: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for e in expect {
            assert!(stderr.contains(e), "mdbus {args:?}: {e:?} not in {stderr}");
        }
    }
}

#[test]
fn bad_layouts_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = planned(dir.path());
    let plan = std::fs::read_to_string(&path).unwrap();

    // Not a layout at all.
    let garbage = dir.path().join("garbage.toml");
    std::fs::write(&garbage, "this is not [a layout").unwrap();
    each_command_refuses(&garbage, false, &ALL_COMMANDS, &["layout", "garbage.toml"]);

    // A missing file, named by the environment.
    let missing = dir.path().join("missing.toml");
    each_command_refuses(&missing, true, &ALL_COMMANDS, &["missing.toml"]);

    // A core this host lacks.
    let section = plan.find("[roles.strategy]").unwrap();
    let cores_at = section + plan[section..].find("cores = [").unwrap();
    let end = cores_at + plan[cores_at..].find(']').unwrap();
    let far = format!("{}cores = [4000{}", &plan[..cores_at], &plan[end..]);
    let far_path = dir.path().join("far.toml");
    std::fs::write(&far_path, far).unwrap();
    let out = mdbus(&["bench", "ring", "--quick", "--layout", s(&far_path)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cpu 4000")
            && stderr.contains("does not have")
            && stderr.contains("\"strategy\"")
            && stderr.contains("far.toml"),
        "{stderr}"
    );
    // A book builder on a missing core: refused by every command with a book builder thread
    // (`bench ring` has none).
    let book_far = plan.replacen(
        &plan[plan.find("[roles.book_builder]").unwrap()..]
            .lines()
            .find(|l| l.starts_with("cores"))
            .unwrap()
            .to_string(),
        "cores = [4000]",
        1,
    );
    let book_far_path = dir.path().join("book-far.toml");
    std::fs::write(&book_far_path, book_far).unwrap();
    each_command_refuses(
        &book_far_path,
        false,
        &ALL_COMMANDS[1..],
        &["cpu 4000", "book-far.toml", "book_builder"],
    );
    let args = [
        "bench",
        "ring",
        "--quick",
        "--json",
        "--layout",
        s(&book_far_path),
    ];
    let (v, _) = json(&args);
    assert_eq!(v["layout"]["file"], s(&book_far_path));

    // A layout without the roles a command needs.
    let feed_only = dir.path().join("feed-only.toml");
    plan_layout("feed_handler", &feed_only);
    let out = mdbus(&["bench", "ring", "--quick", "--layout", s(&feed_only)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"consumer\" or \"strategy\"") && stderr.contains("tune plan --roles"),
        "{stderr}"
    );
}
