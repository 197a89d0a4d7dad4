//! Runs the built `mdbus` binary: `replay` of a sanitized capture says sequencing was off;
//! `record` on a full tmpfs says exactly what reached the file; `record` stops cleanly, with
//! its summary, on SIGINT/SIGTERM (also while it waits for its stream) and when its publisher
//! dies. No timing is asserted; a command that never ends fails the test after a long wait.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mdbus_feed_handlers::record::RecordReader;
use serde_json::Value;

#[path = "../../shm/tests/common/host.rs"]
mod host;
use host::{Tmpfs, is_root};

const MDBUS: &str = env!("CARGO_BIN_EXE_mdbus");

/// How long a command may take to end before it is taken as hung.
const HANG: Duration = Duration::from_secs(60);

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codecs/testdata")
        .join(rel)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn mdbus(args: &[&str]) -> Output {
    Command::new(MDBUS)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mdbus {args:?}: {e}"))
}

fn spawn(args: &[&str]) -> Child {
    Command::new(MDBUS)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run mdbus {args:?}: {e}"))
}

/// Sends `signal` (a name for kill(1): TERM, INT, KILL) to `child`.
fn signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill(1)")
        .success();
    assert!(ok, "kill -{signal} {}", child.id());
}

/// Waits for `child` to end; kills it and fails if it takes longer than [`HANG`].
fn finish(mut child: Child, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > HANG {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "{what} did not end: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

/// Waits until a line of `child`'s stderr contains `needle` (a thread keeps reading the
/// rest); fails if none does within [`HANG`].
fn await_stderr(child: &mut Child, needle: &str) {
    let err = BufReader::new(child.stderr.take().expect("stderr piped"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    loop {
        let left = HANG.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return,
            Ok(_) => {}
            Err(e) => panic!("no line {needle:?} on stderr: {e}"),
        }
    }
}

#[test]
fn a_sanitized_capture_replays_in_capture_order_and_says_sequencing_was_off() {
    let dir = tempfile::tempdir().unwrap();
    let file = testdata("pcap/sanitized/nasdaq-itch-5-packets-sequence-0.pcap");
    let out = mdbus(&["replay", "--root", s(dir.path()), "--json", s(&file)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("sequencing off") && stderr.contains("sanitized"),
        "{stderr}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["published"], 5, "{v}");
    assert_eq!(v["zero_sequence_packets"], 5);
    assert!(
        v["unsequenced"]
            .as_str()
            .is_some_and(|w| w.contains("capture order")),
        "{v}"
    );
}

/// The two numbers of "`<records>` complete records (`<bytes>` bytes)" in `text`.
fn reached(text: &str) -> Option<(u64, u64)> {
    let at = text.find(" complete records (")?;
    let records = text[..at].rsplit(' ').next()?.parse().ok()?;
    let rest = &text[at + " complete records (".len()..];
    let bytes = rest.split(' ').next()?.parse().ok()?;
    Some((records, bytes))
}

#[test]
fn record_on_a_full_disk_says_exactly_what_reached_the_file() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bus");
    let aapl = testdata("itch/aapl-2020-01-30-10k.itch");
    // The stream outlives its publisher: its ring retains the session for the recorder.
    let out = mdbus(&["replay", "--root", s(&root), "--feed", "aapl", s(&aapl)]);
    assert!(out.status.success());
    // 64 KiB hold about 500 of the session's 10,001 records.
    let disk = Tmpfs::mount(dir.path().join("disk"), "64k");
    let file = disk.dir.join("aapl.mdbrec");
    let out = mdbus(&["record", "--root", s(&root), "--stream", "aapl", s(&file)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the disk filled: {stderr}");
    let (records, bytes) =
        reached(&stderr).unwrap_or_else(|| panic!("no count of what reached the file: {stderr}"));
    assert_eq!(bytes, std::fs::metadata(&file).unwrap().len(), "{stderr}");
    let complete = complete_records(&file);
    assert!(complete > 100, "{complete}");
    assert_eq!(records, complete, "{stderr}");
}

#[test]
fn record_stops_cleanly_on_sigterm_while_it_waits_for_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("never.mdbrec");
    let mut child = spawn(&[
        "record",
        "--root",
        s(dir.path()),
        "--stream",
        "never",
        "--wait-secs",
        "3600",
        s(&file),
    ]);
    await_stderr(&mut child, "waiting for stream");
    signal(&child, "TERM");
    let out = finish(child, "record waiting for its stream");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {stdout}", out.status);
    assert!(
        stdout.contains("recorded 0 records") && stdout.contains("Stopped"),
        "{stdout}"
    );
}

#[test]
fn record_stops_cleanly_on_sigint_and_when_its_publisher_dies() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bus");
    let aapl = testdata("itch/aapl-2020-01-30-10k.itch");
    // A live stream that lasts (10,000 messages at 100 per second).
    let mut publisher = spawn(&[
        "replay",
        "--root",
        s(&root),
        "--feed",
        "live",
        "--speed",
        "100/s",
        s(&aapl),
    ]);
    let record = |name: &str| {
        let file = dir.path().join(name);
        let child = spawn(&[
            "record",
            "--root",
            s(&root),
            "--stream",
            "live",
            "--json",
            s(&file),
        ]);
        (child, file)
    };
    let (interrupted, interrupted_file) = record("interrupted.mdbrec");
    let (orphaned, orphaned_file) = record("orphaned.mdbrec");
    // Both recorders have the file open once it exists.
    for f in [&interrupted_file, &orphaned_file] {
        let started = Instant::now();
        while !f.exists() {
            assert!(started.elapsed() < HANG, "{} never appeared", f.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_millis(300));

    signal(&interrupted, "INT");
    assert_recorded(
        interrupted,
        "record after SIGINT",
        "Stopped",
        &interrupted_file,
    );

    // SIGKILL: the publisher cannot close its stream.
    publisher.kill().unwrap();
    publisher.wait().unwrap();
    assert_recorded(
        orphaned,
        "record after its publisher died",
        "PublisherDead",
        &orphaned_file,
    );
}

/// Waits for `record --json` (`child`) to end; checks that it succeeded, that its summary
/// gives `stop` as the reason it stopped, and that the bytes it counts are all of `file`.
fn assert_recorded(child: Child, what: &str, stop: &str, file: &Path) {
    let out = finish(child, what);
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("the summary");
    assert_eq!(v["stop"], stop, "{v}");
    assert_eq!(
        v["bytes"].as_u64(),
        Some(std::fs::metadata(file).unwrap().len())
    );
}

#[test]
fn record_reports_a_segment_that_turns_corrupt_and_keeps_what_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bus");
    let aapl = testdata("itch/aapl-2020-01-30-10k.itch");
    let out = mdbus(&["replay", "--root", s(&root), "--feed", "aapl", s(&aapl)]);
    assert!(out.status.success());
    // The stream's state word (offset 128 of the segment) says neither live, closed nor
    // replaced once everything is read.
    let seg = root.join("aapl.ring");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[128..132].copy_from_slice(&0xdead_u32.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    let file = dir.path().join("aapl.mdbrec");
    let child = spawn(&[
        "record",
        "--root",
        s(&root),
        "--stream",
        "aapl",
        "--keep-going",
        s(&file),
    ]);
    let out = finish(child, "record of a corrupt segment");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");
    // What it says is in the file is.
    let at = stderr.find(" records (").expect("a count of records");
    let records: u64 = stderr[..at].rsplit(' ').next().unwrap().parse().unwrap();
    let len = std::fs::metadata(&file).unwrap().len();
    assert!(
        stderr.contains(&format!("{records} records ({len} bytes) in the file")),
        "{stderr}"
    );
    assert_eq!(records, complete_records(&file), "{stderr}");
}

/// The complete records of a recording.
fn complete_records(file: &Path) -> u64 {
    let mut r = RecordReader::open(file).unwrap();
    let mut n = 0;
    while let Some(Ok(_)) = r.next_record() {
        n += 1;
    }
    n
}
