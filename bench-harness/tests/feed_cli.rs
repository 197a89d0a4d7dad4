//! Runs the built `mdbus feed` against a test exchange on loopback that plays the real AAPL
//! session as MoldUDP64 packets, dropping some on purpose and answering re-requests; checks
//! the end-of-session book summary and counters. No timing is asserted.

#[path = "../../feed-handlers/tests/live_common/mod.rs"]
mod live_common;

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use live_common::{LIMIT, Line, aapl, spawn_exchange, spawn_server, store};
use serde_json::Value;

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A UDP port on loopback that was free a moment ago.
fn free_port() -> u16 {
    UdpSocket::bind((LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// Waits for `child` at most [`LIMIT`], killing it on time-out.
fn wait_bounded(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for mdbus") {
            return status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mdbus feed did not finish within {LIMIT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// One run of `mdbus feed` against the test exchange, to the end of the session.
struct Run {
    /// The bus root (removed when dropped).
    root: tempfile::TempDir,
    /// What the exchange did.
    played: live_common::Played,
    /// Re-requests the retransmission server answered.
    answered: u64,
    /// The `--summary` JSON.
    stats: Value,
    /// The `--book-summary` JSON.
    book: Value,
}

/// Runs `mdbus feed --summary --book-summary` with `extra` flags against the test exchange,
/// which drops every 37th packet (never the first) and answers re-requests; the run must
/// succeed and print both JSON objects.
fn run_against_exchange(extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let server_sock = UdpSocket::bind((LOCALHOST, 0)).expect("server socket");
    let server_addr = server_sock.local_addr().expect("server address");
    let group = format!("{LOCALHOST}:{port}");
    let request_server = server_addr.to_string();
    let root = dir.path().to_str().expect("utf-8 temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mdbus"))
        .args([
            "feed",
            "--group",
            &group,
            "--interface",
            "127.0.0.1",
            "--request-server",
            &request_server,
            "--rcvbuf",
            "4194304",
            "--summary",
            "--book-summary",
            "--root",
            root,
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mdbus feed");

    // Ready once it says where it listens.
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).expect("read stderr");
        seen.push_str(&line);
        if n == 0 {
            let status = wait_bounded(&mut child);
            panic!("mdbus feed exited ({status}) before listening:\n{seen}");
        }
        if line.contains("listening on") {
            assert!(line.contains(&group), "{line}");
            break;
        }
    }
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });

    let messages = Arc::new(aapl());
    let done = Arc::new(AtomicBool::new(false));
    let store = store(messages.len());
    let server = spawn_server(None, move || server_sock, store.clone(), done.clone());
    let exchange = spawn_exchange(
        None,
        LOCALHOST,
        None,
        messages,
        vec![Line {
            dest: SocketAddr::from((LOCALHOST, port)),
            // Never the first packet: the handler joins at the first one it sees.
            drop: Box::new(|i| i % 37 == 5),
        }],
        store,
        done.clone(),
    );
    let status = wait_bounded(&mut child);
    done.store(true, Ordering::Relaxed);
    let played = exchange.join().expect("exchange thread");
    let answered = server.join().expect("server thread");
    let stderr = rest.join().expect("stderr reader");
    let stdout = out.join().expect("stdout reader");
    assert!(
        status.success(),
        "mdbus feed failed: {status}\n{seen}{stderr}"
    );

    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    Run {
        root: dir,
        played,
        answered,
        stats: serde_json::from_str(lines[0]).expect("counters JSON"),
        book: serde_json::from_str(lines[1]).expect("book summary JSON"),
    }
}

/// Every dropped message was re-requested and recovered, none lost, and the book service's
/// summary is the reference one of the AAPL session.
fn check_recovered_reference_book(run: &Run) {
    let (stats, v) = (&run.stats, &run.book);
    assert!(run.played.dropped[0] > 0, "the exchange dropped nothing");
    assert!(run.answered > 0, "no re-request was answered");
    assert_eq!(stats["ended"], true, "{stats}");
    assert_eq!(stats["session"], "20200130AA", "{stats}");
    assert_eq!(stats["pipeline"]["messages"], 10_000, "{stats}");
    assert_eq!(stats["sequencer"]["unrecoverable"], 0, "{stats}");
    assert_eq!(
        stats["sequencer"]["recovered"], run.played.dropped[0],
        "{stats}"
    );
    assert!(stats["requests_sent"].as_u64() > Some(0), "{stats}");

    assert_eq!(v["messages"], 10_000, "{v}");
    assert_eq!(v["gaps"], 0, "{v}");
    assert_eq!(v["counts"]["A"], 4_758, "{v}");
    let b = &v["books"]["13"];
    assert_eq!(b["best_bid"], 3_201_400, "{v}");
    assert_eq!(b["bid_size"], 25, "{v}");
    assert_eq!(b["best_ask"], 3_203_000, "{v}");
    assert_eq!(b["ask_size"], 100, "{v}");
    assert_eq!(b["resting_orders"], 215, "{v}");
    assert_eq!(b["executed_shares"], 81_556, "{v}");
    assert_eq!(b["prints"], 1_089, "{v}");
}

/// Data capacity of the ring of the feed stream (`itch`) under the run's bus root.
fn feed_ring_capacity(run: &Run) -> u64 {
    let bus = mdbus_bus::Bus::with_root(run.root.path()).expect("open the bus root");
    let streams = bus.streams().expect("list the streams");
    streams
        .iter()
        .find(|s| s.name == "itch")
        .unwrap_or_else(|| panic!("no stream itch under the root: {streams:?}"))
        .segment
        .capacity
}

#[test]
fn feed_recovers_dropped_packets_and_prints_the_reference_book() {
    let run = run_against_exchange(&[]);
    check_recovered_reference_book(&run);
    // The book service published its streams under the root.
    for stream in ["itch", "itch.book", "itch.levels", "itch.trades"] {
        assert!(
            std::fs::read_dir(run.root.path())
                .expect("read the root")
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with(stream)),
            "no stream {stream} under the root"
        );
    }
    // The default ring: a replay's.
    assert_eq!(feed_ring_capacity(&run), 16 << 20);
}

#[test]
fn feed_with_tuned_recovery_recovers_every_dropped_packet() {
    const MAX_REQUEST: u64 = 16;
    let run = run_against_exchange(&[
        "--nak-delay",
        "500us",
        "--request-timeout",
        "20ms",
        "--max-retries",
        "8",
        "--max-outstanding-requests",
        "2",
        "--max-request-messages",
        "16",
        "--coalesce-within",
        "0",
        "--late-join",
        "from-sequence:1",
        "--ring-bytes",
        "4194304",
        "--idle",
        "sleep:50us",
        // The test exchange's session, padded or not.
        "--session",
        "20200130AA",
        "--backoff-factor",
        "3",
        "--backoff-max",
        "100ms",
        // The whole session fits in the store and its window: nothing is given up for room.
        "--reorder-bytes",
        "1048576",
        "--reorder-messages",
        "16384",
        "--max-gaps",
        "256",
        "--heartbeat-events",
        "2ms",
    ]);
    check_recovered_reference_book(&run);
    // A dropped packet holds more than 16 messages: each gap took several requests of at
    // most 16 messages (with the default of 1,024, one request per dropped packet).
    let dropped = run.played.dropped[0];
    let requests = run.stats["requests_sent"].as_u64().expect("requests_sent");
    assert!(
        requests >= dropped.div_ceil(MAX_REQUEST),
        "{requests} requests for {dropped} messages: {}",
        run.stats
    );
    assert_eq!(feed_ring_capacity(&run), 4 << 20);
    assert_eq!(run.stats["sequencer"]["overflows"], 0, "{}", run.stats);
    assert_eq!(
        run.stats["sequencer"]["foreign_session"], 0,
        "{}",
        run.stats
    );
}

#[test]
fn feed_refuses_bad_tuning_values_with_a_clear_message() {
    for (flag, value, why) in [
        ("--nak-delay", "5parsecs", "unknown unit"),
        ("--request-timeout", "10", "no unit"),
        ("--request-timeout", "0ms", "more than 0"),
        ("--ring-bytes", "3000000", "not a power of two"),
        ("--max-request-messages", "0", "1..=65535"),
        ("--late-join", "soon", "live-edge or from-sequence"),
        ("--idle", "sleep:forever", "sleep:DURATION"),
        ("--session", "20200130AAX", "at most 10"),
        ("--session", "SÉANCE", "not a printable ASCII character"),
        ("--session", " ", "not blank"),
        ("--backoff-factor", "0", "1..=4294967295"),
        ("--backoff-max", "1.5ms", "smaller unit"),
        ("--reorder-bytes", "0", "1..=4294967295"),
        ("--reorder-bytes", "4294967296", "1..=4294967295"),
        ("--reorder-messages", "0", "1..=1073741824"),
        ("--reorder-messages", "2000000000", "1..=1073741824"),
        ("--max-gaps", "1", "2..=1048576"),
        ("--max-gaps", "99999999", "2..=1048576"),
        ("--heartbeat-events", "0s", "more than 0"),
        ("--heartbeat-events", "5", "no unit"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mdbus"))
            .args(["feed", "--group", "127.0.0.1:0", flag, value])
            .output()
            .expect("run mdbus feed");
        let err = String::from_utf8_lossy(&out.stderr);
        // A usage error (clap's status 2), refused before anything is set up; not a panic.
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag), "{flag} {value}: {err}");
        assert!(err.contains(value), "{flag} {value}: {err}");
        assert!(err.contains(why), "{flag} {value}: {err}");
        assert!(!err.contains("panicked"), "{flag} {value}: {err}");
        assert!(!err.contains("listening on"), "{flag} {value}: {err}");
    }
}

#[test]
fn feed_rejects_a_group_that_is_not_an_address() {
    let out = Command::new(env!("CARGO_BIN_EXE_mdbus"))
        .args(["feed", "--group", "not-an-address"])
        .output()
        .expect("run mdbus feed");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--group"), "{err}");
    assert!(err.contains("not-an-address"), "{err}");
}

#[test]
fn feed_reports_a_bind_failure() {
    // An address of no local interface cannot be bound. A root of its own: a test never
    // touches the operator's default bus root (a live feed there owns the stream `itch`).
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_mdbus"))
        .args(["feed", "--group", "192.0.2.1:5000", "--root"])
        .arg(dir.path())
        .output()
        .expect("run mdbus feed");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("192.0.2.1:5000"), "{err}");
}

#[test]
fn feed_refuses_an_unknown_protocol_and_re_requests_for_iex() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mdbus"))
            .args(["feed", "--group", "127.0.0.1:0", "--root"])
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run mdbus feed")
    };
    let out = run(&["--protocol", "iex-dep"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--protocol") && err.contains("iex-deep"),
        "{err}"
    );
    // IEX-TP feeds recover from line B: a re-request server is refused, not ignored.
    let out = run(&["--protocol", "iex-deep", "--request-server", "127.0.0.1:9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--request-server 127.0.0.1:9"), "{err}");
    assert!(err.contains("line B"), "{err}");
    assert!(!err.contains("listening on"), "{err}");
}
