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

#[test]
fn feed_recovers_dropped_packets_and_prints_the_reference_book() {
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
    let stats: Value = serde_json::from_str(lines[0]).expect("counters JSON");
    let v: Value = serde_json::from_str(lines[1]).expect("book summary JSON");

    assert!(played.dropped[0] > 0, "the exchange dropped nothing");
    assert!(answered > 0, "no re-request was answered");
    assert_eq!(stats["ended"], true, "{stats}");
    assert_eq!(stats["session"], "20200130AA", "{stats}");
    assert_eq!(stats["pipeline"]["messages"], 10_000, "{stats}");
    assert_eq!(stats["sequencer"]["unrecoverable"], 0, "{stats}");
    assert_eq!(
        stats["sequencer"]["recovered"], played.dropped[0],
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
    // The book service published its streams under the root.
    for stream in ["itch", "itch.book", "itch.levels", "itch.trades"] {
        assert!(
            std::fs::read_dir(dir.path())
                .expect("read the root")
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with(stream)),
            "no stream {stream} under the root"
        );
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
    // An address of no local interface cannot be bound.
    let out = Command::new(env!("CARGO_BIN_EXE_mdbus"))
        .args(["feed", "--group", "192.0.2.1:5000"])
        .output()
        .expect("run mdbus feed");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("192.0.2.1:5000"), "{err}");
}
