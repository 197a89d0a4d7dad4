//! `mdbus send` and `mdbus recv` between "hosts": network namespaces joined by a bridge, with
//! real multicast, real loss (nftables in a receiver's namespace), the seeded fault injector,
//! restarts, junk on the group, a re-request flood, and tshark as an independent reader of the
//! wire.
//!
//! ```text
//!   ns "snd" 10.234.0.1    ns "rx1" 10.234.0.2    ns "rx2" 10.234.0.3    ns "rogue" 10.234.0.4
//!   replay -> s -> send    recv -> s (local)      recv -> s (local)      flood / junk
//!        eth0 |                 eth0 |                 eth0 |                 eth0 |
//!   ----------+------------- br0 (its own namespace "br") --+-----------------------+--------
//! ```
//!
//! Every case replays the real AAPL ITCH sample into the sender's stream and checks, for each
//! receiver, that its local stream holds every record of the sender's stream exactly once, in
//! order, byte for byte, with a transport gap notice exactly where messages were lost on
//! purpose; that the `--summary` counters agree; and, where nothing was lost for good, that
//! `recv --book-summary` equals `replay --book-summary`.
//!
//! Needs root (namespaces, veth, bridge, nftables) and `ip`, `nft` and `tshark`. A case fails,
//! never skips, when its setup fails. Namespaces are named after this process and deleted on
//! drop; children are killed on drop.

mod common;

use std::net::{SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use mdbus_codecs::moldudp64::{HEADER_LEN, PacketBuilder, Session, encode_header};
use mdbus_feed_handlers::net::wire;

// ---------------------------------------------------------------------------------------------
// The cases

#[test]
fn clean_two_receivers_get_the_stream_byte_for_byte() {
    let net = Net::new();
    let o = run(&net, &Spec::default(), |_, _| {});
    assert_all_delivered(&o);
    for h in [RX1, RX2] {
        let s = &o.rx(h).summary;
        for c in [
            "gaps",
            "requests",
            "recovered",
            "duplicates",
            "malformed",
            "foreign_session",
        ] {
            assert_eq!(counter(s, c), 0, "{c}: {s}");
        }
        assert!(counter(s, "packets") >= counter(&o.send, "packets"), "{s}");
    }
    assert_eq!(counter(&o.send, "requests"), 0);
    assert!(counter(&o.send, "end_of_session") >= 1);
}

#[test]
fn nftables_loss_of_one_and_five_percent_is_recovered() {
    let net = Net::new();
    let rule = |pct: u32| format!("udp dport {PORT} numgen random mod 100 < {pct} counter drop");
    net.nft(RX1, &[&rule(1)]);
    net.nft(RX2, &[&rule(5)]);
    let spec = Spec {
        rx1: JOIN_START,
        rx2: JOIN_START,
        ..Spec::default()
    };
    let o = run(&net, &spec, |_, _| {});
    assert_all_delivered(&o);
    let (dropped1, dropped2) = (net.nft_counted(RX1), net.nft_counted(RX2));
    // 5% of some 760 datagrams: never none.
    assert!(dropped2 > 0, "nftables dropped nothing at rx2");
    for (h, dropped) in [(RX1, dropped1), (RX2, dropped2)] {
        let s = &o.rx(h).summary;
        if dropped > 0 {
            assert!(counter(s, "gaps") > 0, "{dropped} dropped: {s}");
            assert!(counter(s, "requests") > 0, "{dropped} dropped: {s}");
            assert!(counter(s, "recovered") > 0, "{dropped} dropped: {s}");
            assert!(counter(s, "packets_recovery") > 0, "{dropped} dropped: {s}");
        }
    }
    assert!(counter(&o.send, "requests") > 0, "{}", o.send);
    assert_eq!(counter(&o.send, "not_available"), 0, "{}", o.send);
    eprintln!("nftables dropped {dropped1} and {dropped2} datagrams");
}

#[test]
fn a_burst_of_loss_mid_stream_is_recovered_from_the_store() {
    let net = Net::new();
    // Datagrams 201 to 300 of the group port, all of them: a burst in the middle of ~760.
    net.nft(
        RX1,
        &[&format!(
            "udp dport {PORT} numgen inc mod 1000000 200-299 counter drop"
        )],
    );
    let o = run(&net, &Spec::default(), |_, _| {});
    assert_all_delivered(&o);
    assert_eq!(net.nft_counted(RX1), 100, "the burst dropped 100 datagrams");
    let s = &o.rx(RX1).summary;
    // Each of the 100 datagrams carried at least one message.
    assert!(counter(s, "recovered") >= 100, "{s}");
    assert!(counter(s, "requests") > 0, "{s}");
    assert!(
        counter(s, "out_of_order") > 0,
        "later packets waited for the burst: {s}"
    );
    let s2 = &o.rx(RX2).summary;
    assert_eq!(counter(s2, "recovered"), 0, "rx2 lost nothing: {s2}");
}

/// Drops the first data datagram of the group port (heartbeats and the end of session carry
/// no message: 20 bytes of UDP payload, 28 with the UDP header).
fn drop_first_data_datagram(net: &Net, h: usize) {
    net.nft(
        h,
        &[&format!(
            "udp dport {PORT} udp length > 28 numgen inc mod 1000000 0 counter drop"
        )],
    );
}

/// No heartbeats (the first datagram is the first data packet), re-requests answered for a
/// while.
const NO_HEARTBEATS: &[&str] = &["--linger-ms", "1000", "--heartbeat-ms", "60000"];

#[test]
fn losing_the_first_datagram_is_recovered_with_join_start() {
    let net = Net::new();
    drop_first_data_datagram(&net, RX1);
    drop_first_data_datagram(&net, RX2);
    let spec = Spec {
        send: NO_HEARTBEATS,
        rx1: JOIN_START,
        rx2: JOIN_START,
        ..Spec::default()
    };
    let o = run(&net, &spec, |_, _| {});
    assert_all_delivered(&o);
    for h in [RX1, RX2] {
        assert_eq!(net.nft_counted(h), 1, "one datagram dropped");
        let s = &o.rx(h).summary;
        assert!(counter(s, "recovered") >= 1, "{s}");
        assert_eq!(counter(s, "gaps"), 1, "{s}");
    }
}

/// A receiver listening before the session began is not late: losing the session's first
/// datagram is a gap to recover, as it is with `--join start`.
#[test]
fn a_receiver_up_before_the_session_recovers_a_lost_first_datagram() {
    let net = Net::new();
    drop_first_data_datagram(&net, RX1);
    let spec = Spec {
        send: NO_HEARTBEATS,
        ..Spec::default()
    };
    let o = run(&net, &spec, |_, _| {});
    assert_eq!(net.nft_counted(RX1), 1, "one datagram dropped");
    assert_all_delivered(&o);
    assert!(counter(&o.rx(RX1).summary, "recovered") >= 1);
}

#[test]
fn reordering_and_duplication_from_the_fault_injector() {
    let net = Net::new();
    let spec = Spec {
        send: &[
            "--linger-ms",
            "1000",
            "--fault",
            "dup=0.05,reorder=0.05,delay=3,seed=7",
        ],
        // The first datagram may be held back or dropped too: not a late join.
        rx1: JOIN_START,
        rx2: &[
            "--join",
            "start",
            "--fault",
            "drop=0.02,dup=0.03,reorder=0.05,delay=2,seed=9",
        ],
        ..Spec::default()
    };
    let o = run(&net, &spec, |_, _| {});
    assert_all_delivered(&o);
    assert_eq!(counter(&o.send, "fault_dropped"), 0);
    for h in [RX1, RX2] {
        let s = &o.rx(h).summary;
        assert!(counter(s, "duplicates") > 0, "{s}");
        assert!(counter(s, "out_of_order") > 0, "{s}");
    }
    let s2 = &o.rx(RX2).summary;
    assert!(counter(s2, "fault_dropped") > 0, "{s2}");
    assert!(counter(s2, "recovered") > 0, "{s2}");
}

#[test]
fn loss_beyond_a_tiny_store_becomes_exact_gap_notices() {
    let net = Net::new();
    let dropped_seqs = [1000u64, 5000, 5001];
    let spec = Spec {
        send: &[
            "--linger-ms",
            "1000",
            "--store-messages",
            "64",
            "--fault",
            "drop-seq=1000,drop-seq=5000-5001,seed=1",
        ],
        // Re-requested long after the store moved on.
        rx1: &["--nak-delay-us", "200000"],
        rx2: &["--nak-delay-us", "200000"],
        ..Spec::default()
    };
    let o = run(&net, &spec, |_, _| {});
    let total = o.stream.len() as u64;
    let missing = counter(&o.send, "fault_dropped");
    assert!(
        missing >= 2,
        "the packets of 1000 and 5000-5001: {}",
        o.send
    );
    assert!(counter(&o.send, "not_available") >= 1, "{}", o.send);
    let mut notices = Vec::new();
    for (h, what) in [(RX1, "rx1"), (RX2, "rx2")] {
        let r = o.rx(h);
        let s = &r.summary;
        assert_eq!(r.epochs.len(), 1, "{what}: one local epoch");
        let w = walk(what, &r.epochs[0], &o.stream);
        // Every message exactly once: delivered, or inside exactly one notice.
        assert_eq!(w.next, total + 1, "{what}: the walk reaches the end: {w:?}");
        let lost: u64 = w.gaps.iter().map(|g| g.1).sum();
        assert_eq!(w.delivered + lost, total, "{what}");
        assert_eq!(
            lost, missing,
            "{what}: the notices cover what the injector dropped"
        );
        assert_eq!(counter(s, "unrecoverable"), lost, "{what}: {s}");
        assert_eq!(counter(s, "messages"), w.delivered, "{what}: {s}");
        // Each notice covers dropped sequence numbers, each dropped one is in a notice.
        for &(first, count) in &w.gaps {
            assert!(
                dropped_seqs
                    .iter()
                    .any(|s| (first..first + count).contains(s)),
                "{what}: notice {first}+{count} covers none of {dropped_seqs:?}"
            );
        }
        for s in dropped_seqs {
            assert!(
                w.gaps.iter().any(|&(f, c)| (f..f + c).contains(&s)),
                "{what}: message {s} is in no notice: {:?}",
                w.gaps
            );
        }
        notices.push(w.gaps);
    }
    assert_eq!(
        notices[0], notices[1],
        "the sender's loss, the same at both receivers"
    );
}

#[test]
fn a_restarted_sender_is_a_new_session_in_a_new_local_epoch() {
    let net = Net::new();
    let readers = [Reader::start(net.root(RX1)), Reader::start(net.root(RX2))];
    // The first sender dies without an end of session: its session is followed until it has
    // been silent this long, and meanwhile the second session's packets are only counted.
    // Short here, so that the second session is recovered well within the sender's linger
    // however busy the host.
    let timeout = ["--session-timeout-ms", "200"];
    let mut rx = [
        start_recv(&net, RX1, "rx1", &timeout),
        start_recv(&net, RX2, "rx2", &timeout),
    ];
    let send_args = ["--linger-ms", "3000"];
    let (mut first, s1) = start_send(&net, "send1", &send_args);
    // Paced, and paused while the sender is replaced, so the stream is still running when the
    // sender dies and the new one starts.
    let mut replay = start_replay(&net, "5000/s");
    for (h, p) in [RX1, RX2].into_iter().zip(&mut rx) {
        wait_delivered(&net, h, 1000, p);
    }
    pause(&mut replay);
    // Dies without an end of session; a new sender takes over and starts from the oldest record.
    first.assert_running();
    first.child.kill().expect("kill the first sender");
    first.wait();
    let (mut second, s2) = start_send(&net, "send2", &send_args);
    assert!(s2 > s1, "the new session {s2} sorts after the old {s1}");
    replay.signal(libc::SIGCONT);
    let replayed = replay.wait_ok();
    let outs = rx.each_mut().map(|p| p.wait_ok());
    let sent = send_summary(&second.wait_ok());
    let stream = sender_stream(&net);
    let total = stream.len() as u64;
    assert_eq!(sent["session"], s2.as_str());
    assert_eq!(counter(&sent, "messages"), total, "{sent}");
    let [r1, r2] = readers;
    let epochs = [r1.finish(), r2.finish()];
    for ((what, done), epochs) in ["rx1", "rx2"].into_iter().zip(&outs).zip(epochs) {
        let r = recv_out(what, done, epochs);
        let s = &r.summary;
        assert_eq!(counter(s, "sessions"), 2, "{what}: {s}");
        assert_eq!(counter(s, "sessions_ended"), 1, "{what}: {s}");
        assert_eq!(r.epochs.len(), 2, "{what}: a local epoch per session");
        // The first session: a prefix of the stream (and a notice of what it still missed,
        // if anything), none of the second's records.
        let w1 = walk(&format!("{what} epoch 1"), &r.epochs[0], &stream);
        assert!(w1.delivered >= 1000, "{what}: {w1:?}");
        assert!(
            w1.next <= total,
            "{what}: the first sender died before the end: {w1:?}"
        );
        let abandoned: u64 = w1.gaps.iter().map(|g| g.1).sum();
        assert_eq!(counter(s, "abandoned"), abandoned, "{what}: {s}");
        // The second session from its start: everything, exactly once.
        assert_complete(&format!("{what} epoch 2"), &r.epochs[1], &stream);
        assert_eq!(counter(s, "messages"), w1.delivered + total, "{what}: {s}");
        assert_eq!(counter(s, "late_joins"), 0, "{what}: {s}");
        assert_eq!(counter(s, "unrecoverable"), 0, "{what}: {s}");
    }
    replay_book(&replayed);
}

#[test]
fn a_restarted_receiver_joins_late_and_says_so() {
    let net = Net::new();
    let readers = [Reader::start(net.root(RX1)), Reader::start(net.root(RX2))];
    let mut first = start_recv(&net, RX1, "rx1-first", &[]);
    let mut rx2 = start_recv(&net, RX2, "rx2", &[]);
    let (mut tx, _session) = start_send(&net, "send", &["--linger-ms", "1000"]);
    // Paced, and paused while the receiver restarts, so it joins a running session.
    let mut replay = start_replay(&net, "5000/s");
    wait_delivered(&net, RX1, 1000, &mut first);
    pause(&mut replay);
    first.signal(libc::SIGTERM);
    let before = json_lines("rx1-first", &first.wait_ok().out);
    let m1 = counter(&before[0], "messages");
    let mut again = start_recv(&net, RX1, "rx1-again", &[]);
    replay.signal(libc::SIGCONT);
    let replayed = replay.wait_ok();
    let after = again.wait_ok();
    let d2 = rx2.wait_ok();
    let sent = send_summary(&tx.wait_ok());
    let stream = sender_stream(&net);
    let total = stream.len() as u64;
    assert_eq!(counter(&sent, "messages"), total);
    let [r1, r2] = readers;
    let (e1, e2) = (r1.finish(), r2.finish());

    // The first receiver's epoch: what it delivered before it was stopped, from the start.
    assert_eq!(e1.len(), 2, "an epoch per receiver run");
    let w1 = walk("rx1 first run", &e1[0], &stream);
    assert_eq!((w1.delivered, w1.gaps.as_slice()), (m1, &[][..]), "{w1:?}");
    // The second: a notice of everything before its first message, then the rest.
    let again = recv_out("rx1-again", &after, vec![e1[1].clone()]);
    let s = &again.summary;
    let Some(&Item::Gap { first, count }) = again.epochs[0].first() else {
        panic!("the late receiver's stream starts with a gap notice");
    };
    assert_eq!(first, 1);
    assert!(
        count >= m1,
        "joined after the first run stopped: {count} < {m1}"
    );
    assert_eq!(counter(s, "late_joins"), 1, "{s}");
    assert_eq!(counter(s, "late_join_messages"), count, "{s}");
    let w = walk("rx1 second run", &again.epochs[0], &stream);
    assert_eq!(w.gaps, [(1, count)], "only the late-join notice");
    assert_eq!(w.next, total + 1, "then every message to the end");
    assert_eq!(counter(s, "messages"), w.delivered, "{s}");
    assert_eq!(counter(s, "unrecoverable"), 0, "{s}");

    // The other receiver saw none of it.
    let rx2 = recv_out("rx2", &d2, e2);
    assert_eq!(rx2.epochs.len(), 1);
    assert_complete("rx2", &rx2.epochs[0], &stream);
    assert_same_books("rx2", &replay_book(&replayed), &rx2.book);
}

/// Sends junk to the group from the sender's host: `(malformed, foreign)` datagrams sent.
fn send_junk(ns: String, session: Session) -> (u64, u64) {
    thread::spawn(move || {
        enter_netns(&ns);
        let sock = UdpSocket::bind((host_ip(SND), 0)).expect("junk socket");
        let mut malformed = 0;
        let mut foreign = 0;
        let send = |bytes: &[u8]| {
            let n = sock.send_to(bytes, GROUP).expect("send junk");
            assert_eq!(n, bytes.len());
        };
        for i in 0..20u8 {
            // Shorter than a MoldUDP64 header.
            let short: Vec<u8> = (0..=i % 19).map(|k| k.wrapping_mul(37) ^ i).collect();
            send(&short);
            malformed += 1;
            // Header-sized garbage that names no session of ours.
            let mut garbage = vec![b'#'; 20 + usize::from(i)];
            garbage[10..]
                .iter_mut()
                .enumerate()
                .for_each(|(k, b)| *b = (k as u8) ^ i);
            send(&garbage);
            foreign += 1;
            // A packet of our session cut short inside its first message block, numbered far
            // ahead: it must not open a gap.
            let mut cut = [0u8; HEADER_LEN + 12];
            encode_header(&mut cut, session, 50_000_000 + u64::from(i), 3).expect("header");
            cut[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&200u16.to_be_bytes());
            send(&cut);
            malformed += 1;
            // A sound packet of another stream on the same group.
            let other = wire::session_name(wire::stream_tag("other"), wire::epoch_token_now());
            let mut buf = [0u8; 64];
            let mut b = PacketBuilder::new(&mut buf, other, 1 + u64::from(i)).expect("packet");
            b.push(b"\x01\0\0\0other stream").expect("message");
            let n = b.finish();
            send(&buf[..n]);
            foreign += 1;
        }
        (malformed, foreign)
    })
    .join()
    .expect("junk sender")
}

#[test]
fn garbage_and_truncated_datagrams_are_counted_and_ignored() {
    let net = Net::new();
    let spec = Spec {
        speed: "10000/s",
        ..Spec::default()
    };
    let mut sent_junk = (0, 0);
    let o = run(&net, &spec, |net, session| {
        // Into a running session (the receivers follow it already).
        let deadline = Instant::now() + LIMIT;
        while [RX1, RX2]
            .iter()
            .any(|&h| live_counter(&net.root(h), "recv", "messages") < 100)
        {
            assert!(Instant::now() < deadline, "the receivers got no messages");
            thread::sleep(Duration::from_millis(2));
        }
        sent_junk = send_junk(net.ns(SND).to_owned(), session_of(session));
    });
    assert_all_delivered(&o);
    let (malformed, foreign) = sent_junk;
    for h in [RX1, RX2] {
        let s = &o.rx(h).summary;
        // A cut packet numbered far ahead is held off as an implausible jump unless one near
        // it came first; then it is read, and found malformed. Either way counted once.
        assert_eq!(
            counter(s, "malformed") + counter(s, "implausible_jumps"),
            malformed,
            "{s}"
        );
        assert_eq!(counter(s, "foreign_session"), foreign, "{s}");
        assert_eq!(counter(s, "gaps"), 0, "junk opened no gap: {s}");
        assert_eq!(counter(s, "requests"), 0, "{s}");
    }
}

/// What a re-request flood got.
#[derive(Debug, Default)]
struct Flood {
    requests: u64,
    junk: u64,
    /// Messages in the answers the flooder read.
    answered: u64,
    /// From the first request to the last read.
    elapsed: Duration,
}

/// Floods the sender's retransmission server from the rogue host until `stop`.
fn flood(ns: String, session: Session, stop: Arc<AtomicBool>) -> JoinHandle<Flood> {
    thread::spawn(move || {
        enter_netns(&ns);
        let sock = UdpSocket::bind((host_ip(ROGUE), 0)).expect("flood socket");
        sock.set_nonblocking(true).expect("nonblocking");
        let server = SocketAddrV4::new(host_ip(SND), PORT + 1);
        let req = request_packet(session, 1, 1000);
        let junk = request_packet(Session(*b"XXXXXXXXXX"), 1, 10);
        let mut f = Flood::default();
        let start = Instant::now();
        let mut buf = [0u8; 2048];
        let mut read = |f: &mut Flood| {
            while let Ok(n) = sock.recv(&mut buf) {
                if n >= HEADER_LEN {
                    let count = u16::from_be_bytes([buf[18], buf[19]]);
                    if count != 0 && count != u16::MAX {
                        f.answered += u64::from(count);
                    }
                }
            }
        };
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..8 {
                // A full buffer only slows the flood down.
                if sock.send_to(&req, server).is_ok() {
                    f.requests += 1;
                }
                if sock.send_to(&junk, server).is_ok() && sock.send_to(&req[..7], server).is_ok() {
                    f.junk += 2;
                }
            }
            read(&mut f);
            // Some 12,000 datagrams a second (4,000 requests for 1,000 messages each): far
            // beyond the rate, yet not so many that a sender starved of cpu by a loaded test
            // machine overflows its socket and loses the real receivers' requests with them.
            thread::sleep(Duration::from_millis(2));
        }
        thread::sleep(Duration::from_millis(20));
        read(&mut f);
        f.elapsed = start.elapsed();
        f
    })
}

#[test]
fn a_re_request_flood_is_bounded_and_the_receivers_still_get_everything() {
    let net = Net::new();
    let rule = format!("udp dport {PORT} numgen random mod 100 < 3 counter drop");
    net.nft(RX1, &[&rule]);
    net.nft(RX2, &[&rule]);
    const RATE: u64 = 2000;
    /// The sender's default burst of answers per host (`SenderConfig::reply_burst`).
    const BURST: u64 = 20_000;
    let rate = RATE.to_string();
    let spec = Spec {
        send: &["--linger-ms", "1000", "--reply-rate", &rate],
        rx1: JOIN_START,
        rx2: JOIN_START,
        speed: "10000/s",
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut flooder = None;
    let o = run(&net, &spec, |net, session| {
        flooder = Some(flood(
            net.ns(ROGUE).to_owned(),
            session_of(session),
            stop.clone(),
        ));
    });
    stop.store(true, Ordering::Relaxed);
    let f = flooder.expect("flooded").join().expect("flooder");
    assert_all_delivered(&o);
    for h in [RX1, RX2] {
        let s = &o.rx(h).summary;
        assert!(counter(s, "recovered") > 0, "3% loss was recovered: {s}");
    }
    let s = &o.send;
    assert!(f.requests > 1000, "{f:?}");
    assert!(counter(s, "rate_limited") > 0, "{s} {f:?}");
    assert!(counter(s, "bad_requests") > 0, "{s} {f:?}");
    // What the server counted came from the flooder or the two receivers.
    let rx_requests: u64 = [RX1, RX2]
        .iter()
        .map(|&h| counter(&o.rx(h).summary, "requests"))
        .sum();
    assert!(
        counter(s, "requests") <= f.requests + f.junk + rx_requests,
        "{s} {f:?}"
    );
    // The flooder got its burst, then no more than the rate allows.
    let allowed = BURST + (RATE as f64 * f.elapsed.as_secs_f64()).ceil() as u64;
    assert!(f.answered > 0, "the first requests were answered: {f:?}");
    assert!(f.answered <= allowed, "{f:?} allowed {allowed}");
    // And the sender as a whole answered no more than three sources may get in its lifetime.
    let all = 3 * (BURST + (RATE as f64 * o.send_lifetime.as_secs_f64()).ceil() as u64);
    assert!(
        counter(s, "retransmit_messages") <= all,
        "{s} allowed {all}"
    );
    assert!(
        (f.requests as f64) * 1000.0 > 2.0 * allowed as f64,
        "the flood asked for far more than it may get: {f:?}"
    );
}

#[test]
fn tshark_decodes_the_session_sequences_and_counts() {
    let net = Net::new();
    let cap = net.file("rx2.pcapng");
    let cap_s = cap.display().to_string();
    let filter = format!("udp port {PORT}");
    let mut tshark = Proc::spawn(
        &net,
        "tshark",
        Some(RX2),
        Some("tshark"),
        &strings(&["-i", "eth0", "-f", &filter, "-w", &cap_s]),
    );
    let deadline = Instant::now() + LIMIT;
    while !tshark.stderr().contains("Capturing on") {
        tshark.assert_running();
        assert!(
            Instant::now() < deadline,
            "tshark did not start: {}",
            tshark.stderr()
        );
        thread::sleep(Duration::from_millis(10));
    }
    let o = run(&net, &Spec::default(), |_, _| {});
    assert_all_delivered(&o);
    // Let the last repeats of the end of session in, then stop the capture.
    thread::sleep(Duration::from_millis(100));
    tshark.signal(libc::SIGINT);
    tshark.wait_ok();
    let decode = format!("udp.port=={PORT},moldudp64");
    let fields = host_cmd(
        "tshark",
        &[
            "-r",
            &cap_s,
            "-d",
            &decode,
            "-T",
            "fields",
            "-E",
            "separator=,",
            "-e",
            "moldudp64.session",
            "-e",
            "moldudp64.sequence",
            "-e",
            "moldudp64.count",
        ],
        None,
    );
    let total = counter(&o.send, "messages");
    let (mut next, mut data_packets, mut messages, mut ends) = (1u64, 0u64, 0u64, 0u64);
    for line in fields.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 3, "session, sequence, count: {line:?}");
        assert_eq!(f[0], o.session, "tshark's session: {line:?}");
        let seq: u64 = f[1].parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let count: u64 = f[2].parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        match count {
            // A heartbeat or the end of session: the next sequence number.
            0 | 0xFFFF => {
                assert_eq!(seq, next, "{line:?}");
                ends += u64::from(count == 0xFFFF);
            }
            _ => {
                assert_eq!(seq, next, "data packets in order, none missing: {line:?}");
                next += count;
                messages += count;
                data_packets += 1;
            }
        }
    }
    assert_eq!(
        messages, total,
        "tshark counted the messages the sender reported"
    );
    assert_eq!(next, total + 1);
    assert_eq!(data_packets, counter(&o.send, "packets"));
    assert!(ends >= 1, "tshark saw the end of session");
}
