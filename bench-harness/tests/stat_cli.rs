//! Runs the built `mdbus` binary: `mdbus stat` sees a replay, its book service and a recorder
//! while they run (state `running`, counters moving), and after they end shows them finished
//! (with `--all`) with the final values the commands printed. No timing is asserted; a
//! command that never ends fails the test after a long wait.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");

/// How long a command may take to end (or a role to show up) before it is taken as hung.
const HANG: Duration = Duration::from_secs(120);

/// Paced so that the roles run for seconds: long enough to be seen running.
const SPEED: &str = "2000/s";

fn aapl() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/testdata/itch/aapl-2020-01-30-10k.itch")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A child `mdbus`, killed if the test ends before it does.
struct Running {
    child: Option<Child>,
    what: &'static str,
}

impl Running {
    fn spawn(what: &'static str, args: &[&str]) -> Running {
        let child = Command::new(MDBUS)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run mdbus {args:?}: {e}"));
        Running {
            child: Some(child),
            what,
        }
    }

    fn exited(&mut self) -> bool {
        let child = self.child.as_mut().expect("running");
        child.try_wait().expect("try_wait").is_some()
    }

    /// Waits for the child to end successfully and returns its output.
    fn finish(mut self) -> Output {
        let deadline = Instant::now() + HANG;
        while !self.exited() {
            assert!(Instant::now() < deadline, "{} did not end", self.what);
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = self
            .child
            .take()
            .expect("running")
            .wait_with_output()
            .expect("output");
        assert!(
            out.status.success(),
            "{} failed: {}",
            self.what,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `mdbus stat --root ROOT --json [extra]`: one object per role.
fn stat_json(root: &Path, extra: &[&str]) -> Vec<Value> {
    let out = Command::new(MDBUS)
        .args(["stat", "--root", s(root), "--json"])
        .args(extra)
        .output()
        .expect("run mdbus stat");
    assert!(
        out.status.success(),
        "mdbus stat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn stat_text(root: &Path, extra: &[&str]) -> String {
    let out = Command::new(MDBUS)
        .args(["stat", "--root", s(root)])
        .args(extra)
        .output()
        .expect("run mdbus stat");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn role<'a>(roles: &'a [Value], name: &str, stream: &str) -> Option<&'a Value> {
    roles
        .iter()
        .find(|r| r["role"] == name && r["stream"] == stream)
}

/// Polls `mdbus stat` until each of `wanted` (role, stream, a counter) was seen running with
/// that counter above 0; fails if `until` ends first.
fn wait_seen_running(root: &Path, wanted: &[(&str, &str, &str)], until: &mut Running) {
    let mut seen = vec![false; wanted.len()];
    let deadline = Instant::now() + HANG;
    while !seen.iter().all(|s| *s) {
        let roles = stat_json(root, &[]);
        for (i, (name, stream, counter)) in wanted.iter().enumerate() {
            if let Some(r) = role(&roles, name, stream)
                && r["state"] == "running"
                && r["counters"][counter].as_u64() > Some(0)
            {
                assert!(r["uptime_s"].as_f64().is_some(), "{r}");
                assert_eq!(r["pid"].as_u64().map(|p| p > 0), Some(true), "{r}");
                seen[i] = true;
            }
        }
        assert!(
            !until.exited() || seen.iter().all(|s| *s),
            "{} ended before mdbus stat saw {wanted:?} running (seen: {seen:?})",
            until.what
        );
        assert!(Instant::now() < deadline, "never saw {wanted:?} running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts that `role` is finished and each of its counters named in `report` (a number,
/// or `true`/`false` as 1/0) has the report's value; returns how many were compared.
fn assert_final(role: &Value, report: &Value) -> usize {
    assert_eq!(role["state"], "finished", "{role}");
    assert_eq!(role["finished"], true, "{role}");
    assert!(role["uptime_s"].as_f64() > Some(0.0), "{role}");
    let counters = role["counters"].as_object().expect("counters");
    let mut compared = 0;
    for (name, v) in counters {
        let expected = match &report[name] {
            Value::Number(n) => n.as_u64(),
            Value::Bool(b) => Some(u64::from(*b)),
            _ => None,
        };
        if let Some(e) = expected {
            assert_eq!(v.as_u64(), Some(e), "counter {name} of {role}");
            compared += 1;
        }
    }
    compared
}

#[test]
fn stat_shows_a_replay_and_its_book_service_running_then_finished() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let file = aapl();
    let mut replay = Running::spawn(
        "mdbus replay --book",
        &[
            "replay",
            "--root",
            s(&root),
            "--speed",
            SPEED,
            "--book",
            "--json",
            "--no-progress",
            s(&file),
        ],
    );
    wait_seen_running(
        &root,
        &[
            ("replay", "itch", "published"),
            ("book", "itch", "messages"),
        ],
        &mut replay,
    );
    let text = stat_text(&root, &[]);
    assert!(text.contains("replay itch (pid "), "{text}");
    assert!(text.contains("book itch (pid "), "{text}");

    let out = replay.finish();
    let report: Value = serde_json::from_slice(&out.stdout).expect("the replay's JSON report");
    assert_eq!(report["published"], 10_000);

    // Finished roles are hidden unless asked for.
    let shown = stat_json(&root, &[]);
    assert!(role(&shown, "replay", "itch").is_none(), "{shown:?}");
    assert!(role(&shown, "book", "itch").is_none(), "{shown:?}");
    let text = stat_text(&root, &[]);
    assert!(text.contains("2 finished: --all shows them"), "{text}");

    let all = stat_json(&root, &["--all"]);
    let r = role(&all, "replay", "itch").expect("the replay with --all");
    assert!(assert_final(r, &report) >= 25, "{r}");
    assert_eq!(r["counters"]["published"], 10_000);
    let b = role(&all, "book", "itch").expect("the book service with --all");
    assert_eq!(assert_final(b, &report["book_service"]), 16, "{b}");
    assert_eq!(b["counters"]["messages"], 10_000);
    assert_eq!(b["counters"]["ended"], 1);
    let text = stat_text(&root, &["--all"]);
    assert!(text.contains("replay itch (pid "), "{text}");
    assert!(text.contains(", finished, up "), "{text}");
}

#[test]
fn stat_shows_a_recorder_running_then_finished() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let out_file = dir.path().join("rec.mdbrec");
    let file = aapl();
    let recorder = Running::spawn(
        "mdbus record",
        &[
            "record",
            "--root",
            s(&root),
            "--stream",
            "recorded",
            "--wait-secs",
            "60",
            "--json",
            s(&out_file),
        ],
    );
    let mut replay = Running::spawn(
        "mdbus replay",
        &[
            "replay",
            "--root",
            s(&root),
            "--feed",
            "recorded",
            "--speed",
            SPEED,
            "--json",
            "--no-progress",
            s(&file),
        ],
    );
    wait_seen_running(
        &root,
        &[
            ("record", "recorded", "records"),
            ("replay", "recorded", "published"),
        ],
        &mut replay,
    );
    let replayed: Value = serde_json::from_slice(&replay.finish().stdout).expect("replay JSON");
    let out = recorder.finish();
    let recorded: Value = serde_json::from_slice(&out.stdout).expect("the recorder's JSON");
    assert!(recorded["records"].as_u64() > Some(0), "{recorded}");

    let all = stat_json(&root, &["--all"]);
    let r = role(&all, "record", "recorded").expect("the recorder with --all");
    assert_eq!(assert_final(r, &recorded), 4, "{r}");
    assert_eq!(
        r["counters"]["bytes"].as_u64(),
        Some(std::fs::metadata(&out_file).expect("recording").len())
    );
    let p = role(&all, "replay", "recorded").expect("the replay with --all");
    assert!(assert_final(p, &replayed) >= 25, "{p}");
    // Only this stream.
    let only = stat_json(&root, &["--all", "recorded"]);
    assert_eq!(only.len(), 2, "{only:?}");
}

/// A UDP port on loopback that was free a moment ago.
fn free_port() -> u16 {
    std::net::UdpSocket::bind(("127.0.0.1", 0))
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn stat_shows_a_live_feed_and_its_book_service_running_then_finished() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let (port, request_port) = (free_port(), free_port());
    let group = format!("127.0.0.1:{port}");
    let request_server = format!("127.0.0.1:{request_port}");
    let mut feed = Running::spawn(
        "mdbus feed --book",
        &[
            "feed",
            "--group",
            &group,
            "--interface",
            "127.0.0.1",
            "--request-server",
            &request_server,
            "--book",
            "--summary",
            "--root",
            s(&root),
        ],
    );
    // Ready once it says where it listens; the rest of stderr is drained meanwhile.
    let stderr = feed
        .child
        .as_mut()
        .and_then(|c| c.stderr.take())
        .expect("stderr");
    let mut stderr = BufReader::new(stderr);
    loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).expect("read stderr");
        assert!(n > 0, "mdbus feed exited before listening");
        if line.contains("listening on") {
            break;
        }
    }
    let drain = std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let exchange_root = dir.path().join("exchange-root");
    let file = aapl();
    let exchange = Running::spawn(
        "mdbus exchange",
        &[
            "exchange",
            s(&file),
            "--group",
            &group,
            "--interface",
            "127.0.0.1",
            "--request-port",
            &request_port.to_string(),
            "--speed",
            SPEED,
            "--linger",
            "200ms",
            "--root",
            s(&exchange_root),
        ],
    );
    wait_seen_running(
        &root,
        &[("feed", "itch", "packets_a"), ("book", "itch", "messages")],
        &mut feed,
    );
    let out = feed.finish();
    let _ = drain.join();
    exchange.finish();
    let summary: Value = serde_json::from_slice(&out.stdout).expect("the feed's summary");
    assert_eq!(summary["pipeline"]["messages"], 10_000, "{summary}");

    let all = stat_json(&root, &["--all"]);
    let f = role(&all, "feed", "itch").expect("the feed with --all");
    assert_eq!(f["state"], "finished", "{f}");
    assert_eq!(f["counters"]["packets_a"], summary["packets_a"], "{f}");
    assert_eq!(f["counters"]["pipeline.messages"], 10_000, "{f}");
    let b = role(&all, "book", "itch").expect("the book service with --all");
    assert_eq!(assert_final(b, &summary["book_service"]), 16, "{b}");
    assert_eq!(b["counters"]["messages"], 10_000);
}

#[test]
fn a_watch_interval_that_is_not_a_duration_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    for bad in ["inf", "NaN", "0", "-1", "1e300"] {
        let out = Command::new(MDBUS)
            .args(["stat", "--root", s(&root), &format!("--watch={bad}")])
            .output()
            .expect("run mdbus stat");
        let err = String::from_utf8_lossy(&out.stderr);
        // A usage error, as every flag's bad value.
        assert_eq!(out.status.code(), Some(2), "--watch {bad}: {err}");
        assert!(err.contains("--watch"), "--watch {bad}: {err}");
        assert!(!err.contains("panicked"), "--watch {bad}: {err}");
    }
}
