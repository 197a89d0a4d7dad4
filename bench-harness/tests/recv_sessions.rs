//! A receiver that goes on from session to session prints its summaries at the end of each
//! session, as README's two-host walkthrough says, not only when it is stopped.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");

#[test]
fn the_summaries_come_at_the_end_of_the_session() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (rx_root, tx_root) = (dir.path().join("rx"), dir.path().join("tx"));
    let itch = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../codecs/testdata/itch/aapl-2020-01-30-10k.itch"
    );
    let group = "239.255.119.7:31907";
    let mut recv = Command::new(MDBUS)
        .args([
            "recv",
            "itch",
            "--group",
            group,
            "--interface",
            "127.0.0.1",
            "--idle",
            "sleep:50",
            "--summary",
            "--book-summary",
            "--root",
        ])
        .arg(&rx_root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mdbus recv");
    // Its stdout, line by line, from a thread (the receiver keeps running).
    let (lines_tx, lines) = mpsc::channel();
    let stdout = recv.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.expect("a line")).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut send = Command::new(MDBUS)
        .args([
            "send",
            "itch",
            "--group",
            group,
            "--interface",
            "127.0.0.1",
            "--start",
            "oldest",
            "--idle",
            "sleep:50",
            "--linger-ms",
            "500",
            "--root",
        ])
        .arg(&tx_root)
        .args(["--follow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mdbus send");
    let replay = Command::new(MDBUS)
        .args([
            "replay",
            itch,
            "--speed",
            "20000/s",
            "--no-progress",
            "--root",
        ])
        .arg(&tx_root)
        .output()
        .expect("run mdbus replay");
    assert!(replay.status.success());

    // Both summaries arrive while the receiver runs on.
    let counters = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("the counters summary at the end of the session");
    let books = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("the book summary at the end of the session");
    assert!(
        recv.try_wait().expect("poll recv").is_none(),
        "the receiver goes on to the next session"
    );
    let counters: serde_json::Value = serde_json::from_str(&counters).expect("json");
    assert_eq!(counters["role"], "recv", "{counters}");
    assert_eq!(counters["lost"], 0, "{counters}");
    let books: serde_json::Value = serde_json::from_str(&books).expect("json");
    let want = Command::new(MDBUS)
        .args(["replay", itch, "--book-summary", "--no-progress", "--root"])
        .arg(dir.path().join("ref"))
        .output()
        .expect("run mdbus replay --book-summary");
    let want: serde_json::Value = serde_json::from_slice(&want.stdout).expect("json");
    assert_eq!(books["books"], want["books"]);
    assert_eq!(books["messages"], want["messages"]);

    let _ = send.kill();
    let _ = send.wait();
    // SAFETY: kill(2) with our own child's pid and SIGTERM has no memory effects.
    unsafe { libc::kill(recv.id() as libc::pid_t, libc::SIGTERM) };
    let status = recv.wait().expect("wait for recv");
    assert!(status.success(), "{status:?}");
    // Nothing arrived after the end of the session: no second summary at exit.
    assert!(lines.recv_timeout(Duration::from_millis(200)).is_err());
}
