//! Ctrl-C ends a paced replay where it is: its report (marked interrupted), its book service
//! finished, every stream closed cleanly, exit status 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");

#[test]
fn sigint_ends_a_paced_replay_with_its_report_and_closed_streams() {
    let dir = tempfile::tempdir().expect("temp dir");
    let itch = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../codecs/testdata/itch/aapl-2020-01-30-10k.itch"
    );
    // 10,000 messages at 500 a second: 20 s unless interrupted.
    let child = Command::new(MDBUS)
        .args([
            "replay", itch, "--speed", "500/s", "--book", "--json", "--root",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mdbus replay");
    // Wait until it has published something (its counters say so), then interrupt it.
    let stat = dir.path().join("itch.replay.stat");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let published = mdbus_shm::counters::read_counters(&stat)
            .ok()
            .and_then(|c| c.get("published"))
            .unwrap_or(0);
        if published > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the replay never published");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) with a pid of our own child and SIGINT has no memory effects.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0);
    let out = child.wait_with_output().expect("wait for mdbus replay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(err.contains("interrupted after"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["interrupted"], true, "{report}");
    let published = report["published"].as_u64().expect("published");
    assert!(published > 0 && published < 10_000, "{report}");
    assert_eq!(report["book_service"]["ended"], true, "{report}");

    let out = Command::new(MDBUS)
        .args(["streams", "--json", "--root"])
        .arg(dir.path())
        .output()
        .expect("run mdbus streams");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().count(),
        4,
        "itch and its three book streams: {text}"
    );
    for line in text.lines() {
        let s: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(s["state"], "closed", "{s}");
    }
}
