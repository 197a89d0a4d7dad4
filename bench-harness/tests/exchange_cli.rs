//! `mdbus exchange` played to `mdbus feed`: on this host's loopback, and across two network
//! namespaces with 5 % of line A's packets dropped by the exchange's seeded fault injector. In
//! each case the feed must recover every message by re-request and its book summary must
//! equal `mdbus replay --book-summary` of the same file. No timing is asserted.
//!
//! The namespace case needs root (namespaces, veth, bridge); it fails, never skips, when its
//! setup fails. Namespaces are named `x18<pid>-...` and deleted on drop; children are killed
//! on drop.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Where a child runs: on this host with its output under a folder, or in a host of `Net`.
#[derive(Clone, Copy)]
enum At<'a> {
    Here(&'a Path),
    Host(&'a Net, usize),
}

impl At<'_> {
    fn dir(&self) -> &Path {
        match self {
            At::Here(d) => d,
            At::Host(net, _) => net.dir.path(),
        }
    }

    /// Runs `mdbus args`; its output goes to files; killed on drop.
    fn spawn(&self, name: &str, args: &[String]) -> Proc {
        match *self {
            At::Host(net, h) => Proc::spawn(net, name, Some(h), None, args),
            At::Here(dir) => {
                let (out, err) = (
                    dir.join(format!("{name}.out")),
                    dir.join(format!("{name}.err")),
                );
                let mut cmd = Command::new(MDBUS);
                cmd.args(args)
                    .stdin(Stdio::null())
                    .stdout(fs::File::create(&out).expect("output file"))
                    .stderr(fs::File::create(&err).expect("output file"));
                let child = cmd
                    .spawn()
                    .unwrap_or_else(|e| panic!("{name}: cannot start: {e}"));
                Proc {
                    name: name.to_owned(),
                    child,
                    out,
                    err,
                }
            }
        }
    }
}

/// Waits until `p` printed `what` on stderr; fails the case if it exits first.
fn wait_for_stderr(p: &mut Proc, what: &str) {
    let deadline = Instant::now() + LIMIT;
    while !p.stderr().contains(what) {
        p.assert_running();
        assert!(
            Instant::now() < deadline,
            "{} did not print {what:?} within {LIMIT:?}: {}",
            p.name,
            p.stderr()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// `mdbus replay FILE --book-summary` of the bundled AAPL file, under its own root.
fn replay_books(dir: &Path) -> Value {
    let root = dir.join("replay-root");
    fs::create_dir_all(&root).expect("replay root");
    let mut args = strings(&["replay"]);
    args.push(itch_file().display().to_string());
    args.extend(strings(&["--book-summary", "--no-progress", "--root"]));
    args.push(root.display().to_string());
    let mut p = At::Here(dir).spawn("replay", &args);
    replay_book(&p.wait_ok())
}

/// Starts `mdbus feed` on `group` (in host `ns`, or here) recovering from `server`,
/// from sequence number 1 (a first packet lost to the injector is recovered too).
fn start_feed(at: At<'_>, interface: &str, group: &str, server: &str) -> Proc {
    let root = at.dir().join("feed-root");
    fs::create_dir_all(&root).expect("feed root");
    let mut args = strings(&["feed", "--group", group, "--interface", interface]);
    args.extend(strings(&["--request-server", server]));
    args.extend(strings(&[
        "--late-join",
        "from-sequence:1",
        "--idle",
        "sleep:50us",
    ]));
    args.extend(strings(&["--summary", "--book-summary", "--root"]));
    args.push(root.display().to_string());
    let mut p = at.spawn("feed", &args);
    wait_for_stderr(&mut p, "listening on");
    p
}

/// Starts `mdbus exchange --summary` of the AAPL file (in host `ns`, or here), at
/// 50,000 messages/s with a 2 s linger unless `extra` says otherwise.
fn start_exchange(at: At<'_>, extra: &[&str]) -> Proc {
    let root = at.dir().join("exchange-root");
    fs::create_dir_all(&root).expect("exchange root");
    let mut args = strings(&["exchange"]);
    args.push(itch_file().display().to_string());
    for (flag, value) in [("--speed", "50000/s"), ("--linger", "2s")] {
        if !extra.contains(&flag) {
            args.extend(strings(&[flag, value]));
        }
    }
    args.push("--summary".into());
    args.push("--root".into());
    args.push(root.display().to_string());
    args.extend(strings(extra));
    at.spawn("exchange", &args)
}

/// The feed ended the session with every message, nothing lost, books equal to the replay's.
fn check_feed(feed: &Done, replay: &Value) -> Value {
    let lines = json_lines("feed", &feed.out);
    assert_eq!(
        lines.len(),
        2,
        "feed: a summary and a book summary: {}",
        feed.out
    );
    let (stats, books) = (&lines[0], &lines[1]);
    assert_eq!(stats["ended"], true, "{stats}");
    assert_eq!(stats["session"], "AAPL202001", "{stats}");
    assert_eq!(stats["pipeline"]["messages"], 10_000, "{stats}");
    assert_eq!(stats["sequencer"]["unrecoverable"], 0, "{stats}");
    assert_eq!(books["books"], replay["books"], "books");
    assert_eq!(books["counts"], replay["counts"], "counts");
    // The rest (the book builder's own counters) depends on how the builder was sized.
    assert_eq!(books["messages"], replay["messages"], "messages");
    assert_eq!(books["gaps"], 0, "{books}");
    stats.clone()
}

fn exchange_summary(done: &Done) -> Value {
    let lines = json_lines("exchange", &done.out);
    assert_eq!(lines.len(), 1, "exchange prints one summary: {}", done.out);
    assert_eq!(lines[0]["role"], "exchange", "{}", lines[0]);
    lines[0].clone()
}

#[test]
fn a_feed_on_loopback_gets_the_books_of_the_replay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let here = At::Here(dir.path());
    let replay = replay_books(dir.path());
    let group = "239.255.118.10:31810";
    let mut feed = start_feed(here, "127.0.0.1", group, "127.0.0.1:31811");
    let mut ex = start_exchange(
        here,
        &[
            "--group",
            group,
            "--interface",
            "127.0.0.1",
            "--request-port",
            "31811",
        ],
    );
    let feed_done = feed.wait_ok();
    let ex_done = ex.wait_ok();
    assert!(
        ex_done.err.contains(&format!(
            "as session AAPL202001 on {group}, re-requests on 127.0.0.1:31811"
        )),
        "the start line: {}",
        ex_done.err
    );
    check_feed(&feed_done, &replay);
    let s = exchange_summary(&ex_done);
    assert_eq!(s["counters"]["messages"], 10_000, "{s}");
    assert_eq!(s["session"], "AAPL202001", "{s}");
    assert!(s["counters"]["end_of_session"].as_u64() >= Some(3), "{s}");
    assert_eq!(s["counters"]["send_errors"], 0, "{s}");
}

#[test]
fn a_feed_in_another_namespace_recovers_five_percent_loss_by_re_request() {
    let net = Net::with_prefix("x18");
    let replay = replay_books(net.dir.path());
    let group = "239.255.118.20:31820";
    let server = format!("{}:31821", host_ip(SND));
    let rx_ip = host_ip(RX1).to_string();
    let mut feed = start_feed(At::Host(&net, RX1), &rx_ip, group, &server);
    let snd_ip = host_ip(SND).to_string();
    let mut ex = start_exchange(
        At::Host(&net, SND),
        &[
            "--group",
            group,
            "--interface",
            &snd_ip,
            "--fault",
            "drop=0.05,seed=18",
        ],
    );
    let feed_done = feed.wait_ok();
    let ex_done = ex.wait_ok();
    let stats = check_feed(&feed_done, &replay);
    let s = exchange_summary(&ex_done);
    assert_eq!(s["counters"]["messages"], 10_000, "{s}");
    // The injector dropped about 5 % of the packets; the feed recovered each message.
    let packets = s["counters"]["packets"].as_u64().expect("packets");
    let dropped = s["counters"]["fault_dropped_packets"]
        .as_u64()
        .expect("dropped packets");
    assert!(
        dropped * 100 >= packets * 2 && dropped * 100 <= packets * 10,
        "{dropped} of {packets} packets dropped: {s}"
    );
    assert!(s["counters"]["fault_dropped"].as_u64() > Some(0), "{s}");
    // Every dropped message recovered (and any the feed's own socket lost on a busy host).
    assert!(
        stats["sequencer"]["recovered"].as_u64() >= s["counters"]["fault_dropped"].as_u64(),
        "every dropped message recovered: {stats} / {s}"
    );
    assert!(
        s["counters"]["retransmit_messages"].as_u64() >= s["counters"]["fault_dropped"].as_u64(),
        "{s}"
    );
    assert!(s["counters"]["requests"].as_u64() > Some(0), "{s}");
}

#[test]
fn bad_arguments_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |args: &[&str]| {
        Command::new(MDBUS)
            .arg("exchange")
            .args(args)
            .output()
            .expect("run mdbus exchange")
    };
    let file = itch_file().display().to_string();
    let root = dir.path().join("root");
    let root = root.to_str().expect("utf-8 path");
    let cases: [(&[&str], &str); 5] = [
        (
            &[&file, "--group", "239.255.118.30:0", "--root", root],
            "a port is needed",
        ),
        (
            &[
                &file,
                "--group",
                "239.255.118.30:31830",
                "--fault",
                "drop=2",
            ],
            "drop",
        ),
        (
            &[
                &file,
                "--group",
                "239.255.118.30:31830",
                "--session",
                "ELEVENCHARS",
            ],
            "at most 10",
        ),
        (
            &[&file, "--group", "239.255.118.30:31830", "--speed", "0x"],
            "speed",
        ),
        (
            &[
                "/nonexistent/x.itch",
                "--group",
                "239.255.118.30:31830",
                "--root",
                root,
            ],
            "/nonexistent/x.itch",
        ),
    ];
    for (args, want) in cases {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // The default re-request port is the group's + 1: none above 65535.
    let out = run(&[&file, "--group", "239.255.118.30:65535", "--root", root]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--request-port"),
        "{err}"
    );
    assert!(!Path::new(root).join("AAPL202001.exchange.stat").exists());

    // An IEX capture plays its segments as captured: the MoldUDP64 play's flags are refused,
    // each named, rather than silently ignored.
    let deep = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codecs/testdata/iex/deepplus-all-message-types.pcap")
        .display()
        .to_string();
    let out = run(&[
        &deep,
        "--group",
        "239.255.118.30:31830",
        "--heartbeat",
        "2s",
        "--session",
        "X",
        "--root",
        root,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--session, --heartbeat do not apply"), "{err}");
}

/// SIGTERM ends the session cleanly: what was played so far, the end-of-session packets,
/// the summary, and the counters file (seen by `mdbus stat` while it ran) marked finished.
#[test]
fn sigterm_ends_the_session_cleanly_with_a_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let here = At::Here(dir.path());
    let mut ex = start_exchange(
        here,
        &[
            "--group",
            "239.255.118.40:31840",
            "--interface",
            "127.0.0.1",
            "--speed",
            "1000/s",
            "--linger",
            "200ms",
        ],
    );
    let stat = dir.path().join("exchange-root/AAPL202001.exchange.stat");
    wait_ready(&mut ex, &stat);
    let seen = Command::new(MDBUS)
        .args(["stat", "--root"])
        .arg(dir.path().join("exchange-root"))
        .output()
        .expect("run mdbus stat");
    let seen = String::from_utf8_lossy(&seen.stdout);
    assert!(seen.contains("exchange AAPL202001"), "{seen}");
    ex.signal(libc::SIGTERM);
    let done = ex.wait_ok();
    let s = exchange_summary(&done);
    assert!(s["counters"]["messages"].as_u64() < Some(10_000), "{s}");
    assert!(s["counters"]["end_of_session"].as_u64() >= Some(3), "{s}");
    assert!(done.err.contains("end of session"), "{}", done.err);
    let c = mdbus_shm::counters::read_counters(&stat).expect("counters file");
    assert!(c.finished, "{c:?}");
    assert_eq!(c.get("messages"), s["counters"]["messages"].as_u64());
}

/// The bundled IEX DEEP 1.0 sample (121,315 segments, 392,010 whole messages, the sequence
/// restarting at 1 eleven times, its last segment cut).
fn deep_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/testdata/iex/deep10-2017-04-25.pcap.gz")
}

/// Writes the first `n` datagrams of the DEEP sample to `path` as a pcap (Ethernet, IPv4,
/// UDP; payloads, addresses and timestamps as captured).
fn deep_prefix(path: &Path, n: usize) {
    let mut r = mdbus_codecs::capture::open_capture(deep_file()).expect("the DEEP sample");
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for _ in 0..n {
        let d = r.next_datagram().expect("enough datagrams").expect("reads");
        let udp_len = u16::try_from(8 + d.payload.len()).expect("a datagram");
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&(20 + udp_len).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        frame.extend_from_slice(&d.src.ip().octets());
        frame.extend_from_slice(&d.dst.ip().octets());
        frame.extend_from_slice(&d.src.port().to_be_bytes());
        frame.extend_from_slice(&d.dst.port().to_be_bytes());
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(d.payload);
        let (sec, usec) = (d.ts_ns / 1_000_000_000, d.ts_ns % 1_000_000_000 / 1_000);
        let len = u32::try_from(frame.len()).expect("a frame");
        for v in [u32::try_from(sec).expect("seconds"), usec as u32, len, len] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&frame);
    }
    fs::write(path, out).expect("the prefix pcap");
}

/// `mdbus exchange` plays the start of the IEX DEEP sample (30,000 segments: the sequence
/// restarts at 1 six times in them) on lines A and B in one namespace; nftables in the
/// receiving namespace drops 5 % of line A only; `mdbus feed --protocol iex-deep` there fills
/// every loss from line B, and its message counts and books equal `mdbus replay
/// --book-summary`'s of the same file. (A prefix, paced: a debug build's feed on a busy host
/// keeps up with it.)
#[test]
fn an_iex_feed_in_another_namespace_fills_line_a_s_losses_from_line_b() {
    let net = Net::with_prefix("mdi");
    let dir = net.dir.path();
    let file = dir.join("deep-prefix.pcap");
    deep_prefix(&file, 30_000);
    // The replay's books.
    let root = dir.join("replay-root");
    fs::create_dir_all(&root).expect("replay root");
    let mut args = strings(&["replay"]);
    args.push(file.display().to_string());
    args.extend(strings(&["--book-summary", "--no-progress", "--root"]));
    args.push(root.display().to_string());
    let replay = replay_book(&At::Here(dir).spawn("replay", &args).wait_ok());
    let total = replay["messages"].as_u64().expect("messages");
    assert!(total > 90_000, "{replay}");
    assert_eq!(replay["gaps"], 0, "{replay}");

    let x = std::process::id() % 250;
    let (line_a, line_b) = (format!("239.77.{x}.1:31777"), format!("239.77.{x}.2:31777"));
    net.nft(
        RX1,
        &[&format!(
            "ip daddr 239.77.{x}.1 udp dport 31777 numgen random mod 100 < 5 counter drop"
        )],
    );
    let rx_ip = host_ip(RX1).to_string();
    let feed_root = dir.join("feed-root");
    fs::create_dir_all(&feed_root).expect("feed root");
    let mut args = strings(&["feed", "--protocol", "iex-deep", "--feed", STREAM]);
    args.extend(strings(&[
        "--group",
        &line_a,
        "--line-b",
        &line_b,
        "--interface",
        &rx_ip,
    ]));
    args.extend(strings(&[
        "--late-join",
        "from-sequence:1",
        "--nak-delay",
        "50ms",
    ]));
    args.extend(strings(&[
        "--idle",
        "sleep:50us",
        "--summary",
        "--book",
        "--book-summary",
        "--root",
    ]));
    args.push(feed_root.display().to_string());
    let mut feed = At::Host(&net, RX1).spawn("feed", &args);
    wait_for_stderr(&mut feed, "listening on");

    let snd_ip = host_ip(SND).to_string();
    let ex_root = dir.join("exchange-root");
    fs::create_dir_all(&ex_root).expect("exchange root");
    let mut args = strings(&["exchange"]);
    args.push(file.display().to_string());
    args.extend(strings(&[
        "--group",
        &line_a,
        "--line-b",
        &line_b,
        "--interface",
        &snd_ip,
    ]));
    args.extend(strings(&["--speed", "4000/s", "--summary", "--root"]));
    args.push(ex_root.display().to_string());
    let ex_done = At::Host(&net, SND).spawn("exchange", &args).wait_ok();
    assert!(
        ex_done.err.contains("as IEX-TP DEEP segments"),
        "the start line: {}",
        ex_done.err
    );
    let s = exchange_summary(&ex_done);
    assert_eq!(s["counters"]["messages"], total, "{s}");
    assert_eq!(s["protocol"], "DEEP", "{s}");
    assert_eq!(s["counters"]["end_of_session"], 0, "{s}");
    assert_eq!(s["counters"]["send_errors"], 0, "{s}");

    // IEX-TP has no end of session: the feed is stopped once it delivered or declared lost
    // every message the exchange sent.
    let deadline = Instant::now() + LIMIT;
    loop {
        let done = live_counter(&feed_root, "feed", "sequencer.messages")
            + live_counter(&feed_root, "feed", "sequencer.unrecoverable");
        if done >= total {
            break;
        }
        feed.assert_running();
        assert!(
            Instant::now() < deadline,
            "the feed accounted for {done} of {total} messages within {LIMIT:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    feed.signal(libc::SIGTERM);
    let feed_done = feed.wait_ok();
    let lines = json_lines("feed", &feed_done.out);
    assert_eq!(
        lines.len(),
        2,
        "a summary and a book summary: {}",
        feed_done.out
    );
    let (stats, books) = (&lines[0], &lines[1]);
    assert!(net.nft_counted(RX1) > 0, "nftables dropped line A packets");
    let (a, b) = (
        stats["packets_a"].as_u64().expect("packets_a"),
        stats["packets_b"].as_u64().expect("packets_b"),
    );
    assert_eq!(b, 30_000, "line B lost nothing: {stats}");
    assert!(a < b, "line A lost packets: {stats}");
    assert_eq!(stats["pipeline"]["messages"], total, "{stats}");
    assert_eq!(stats["sequencer"]["unrecoverable"], 0, "{stats}");
    assert_eq!(stats["iex"]["restarts"], 6, "{stats}");
    assert_eq!(stats["session"], "1132527616", "{stats}");
    assert_eq!(books["messages"], replay["messages"], "messages");
    assert_eq!(books["counts"], replay["counts"], "counts");
    assert_eq!(books["gaps"], replay["gaps"], "gaps");
    assert_eq!(books["books"], replay["books"], "books");
    // --book: the book service published the IEX books' tops and prints on the feed's streams.
    let svc = &stats["book_service"];
    assert!(svc["bbos_published"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert!(svc["trades_published"].as_u64().unwrap_or(0) > 0, "{stats}");
}
