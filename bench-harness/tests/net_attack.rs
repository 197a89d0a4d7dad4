//! Attacks on `mdbus send` and `mdbus recv` between "hosts" (network namespaces, see
//! `net_multihost.rs`), the attacker in a namespace of its own with its own address:
//!
//! ```text
//!   ns "snd" 10.234.0.1    ns "rx1" 10.234.0.2    ns "rx2" 10.234.0.3    ns "rogue" 10.234.0.4
//!   replay -> s -> send    recv -> s (local)      recv -> s (local)      the attacker
//! ```
//!
//! The attacker forges datagrams of the real session (its name is on the wire for anyone on
//! the group to read) with a small forger built here: a sequence number far ahead, a heartbeat
//! announcing one, an end of session below what was delivered, a newer session of the stream;
//! and floods the retransmission server from many source ports. Beside them: the publisher
//! behind the sender killed, and a lossless receiver whose local subscriber stopped reading.
//! Each case checks what the receivers delivered against the sender's stream, record by
//! record, and that what was refused was counted.

mod common;

use std::net::{SocketAddrV4, UdpSocket};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use mdbus_bus::schema::GapScope;
use mdbus_bus::{Bus, ENVELOPE_MSG_TYPE, ReceiveError, SubscribeOptions};
use mdbus_codecs::moldudp64::{
    HEADER_LEN, PacketBuilder, Session, encode_end_of_session, encode_heartbeat,
};
use mdbus_feed_handlers::net::wire;

/// Namespaces of these tests are named `mdbat<pid>-<n>-<host>`.
const PREFIX: &str = "mdbat";

/// A data packet of `session` numbered `seq`, one message of a junk record.
fn data_packet(session: Session, seq: u64) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let mut b = PacketBuilder::new(&mut buf, session, seq).expect("packet");
    b.push(b"\x01\0\0\0forged record").expect("message");
    let n = b.finish();
    buf[..n].to_vec()
}

fn heartbeat(session: Session, next: u64) -> Vec<u8> {
    let mut buf = [0u8; HEADER_LEN];
    encode_heartbeat(&mut buf, session, next).expect("heartbeat");
    buf.to_vec()
}

fn end_of_session(session: Session, next: u64) -> Vec<u8> {
    let mut buf = [0u8; HEADER_LEN];
    encode_end_of_session(&mut buf, session, next).expect("end of session");
    buf.to_vec()
}

/// Sends `packets` to the group from the attacker's host, each `times` times (a datagram may
/// be lost like any other).
fn forge(net: &Net, packets: Vec<Vec<u8>>, times: usize) {
    let ns = net.ns(ROGUE).to_owned();
    thread::spawn(move || {
        enter_netns(&ns);
        let sock = UdpSocket::bind((host_ip(ROGUE), 0)).expect("forger socket");
        for _ in 0..times {
            for p in &packets {
                let n = sock.send_to(p, GROUP).expect("send a forged datagram");
                assert_eq!(n, p.len());
            }
            thread::sleep(Duration::from_millis(5));
        }
    })
    .join()
    .expect("forger");
}

/// Waits until both receivers delivered `n` messages of the session.
fn wait_both(net: &Net, n: u64) {
    let deadline = Instant::now() + LIMIT;
    while [RX1, RX2]
        .iter()
        .any(|&h| live_counter(&net.root(h), "recv", "messages") < n)
    {
        assert!(
            Instant::now() < deadline,
            "the receivers got no {n} messages"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// A run paced so the session is live while the attacker acts in `attack` (with the
/// session's name), once both receivers are 1,000 messages in.
fn attacked_run(net: &Net, attack: impl FnOnce(&Net, Session)) -> Outcome {
    let spec = Spec {
        speed: "5000/s",
        ..Spec::default()
    };
    run(net, &spec, |net, session| {
        wait_both(net, 1000);
        attack(net, session_of(session));
    })
}

/// Every receiver delivered the whole real session, in one local epoch, with nothing lost.
fn assert_whole_session(o: &Outcome) {
    let total = o.stream.len() as u64;
    for (h, what) in [(RX1, "rx1"), (RX2, "rx2")] {
        let r = o.rx(h);
        let s = &r.summary;
        assert_eq!(
            r.epochs.len(),
            1,
            "{what}: one session, one local epoch: {s}"
        );
        assert_complete(what, &r.epochs[0], &o.stream);
        assert_eq!(counter(s, "messages"), total, "{what}: {s}");
        assert_eq!(counter(s, "unrecoverable"), 0, "{what}: {s}");
        assert_eq!(counter(s, "sessions"), 1, "{what}: {s}");
        assert_eq!(counter(s, "sessions_ended"), 1, "{what}: {s}");
        assert_eq!(s["lost"], 0, "{what}: {s}");
        assert_same_books(what, &o.replay_book, &r.book);
    }
}

#[test]
fn forged_jumps_far_ahead_are_counted_and_the_session_completes() {
    let net = Net::with_prefix(PREFIX);
    let o = attacked_run(&net, |net, session| {
        let at = live_counter(&net.root(RX1), "recv", "messages");
        let mut packets = vec![
            data_packet(session, at + 1_000_000_000_000),
            data_packet(session, u64::MAX),
            heartbeat(session, 1_000_000_000_000_000_000),
        ];
        // A run of forged packets that go on from each other: the real feed is not silent,
        // so they corroborate nothing.
        packets.extend((0..8).map(|i| data_packet(session, at + 2_000_000_000 + i)));
        forge(net, packets, 1);
    });
    assert_whole_session(&o);
    for h in [RX1, RX2] {
        let s = &o.rx(h).summary;
        // Counted, not acted on: no gap, no re-request. (The packet at u64::MAX cannot hold
        // its message, whose number would be 2^64: malformed.)
        assert!(
            counter(s, "implausible_jumps") + counter(s, "malformed") >= 3,
            "{s}"
        );
        assert_eq!(counter(s, "jumps_corroborated"), 0, "{s}");
        assert_eq!(counter(s, "gaps"), 0, "{s}");
        assert_eq!(counter(s, "requests"), 0, "{s}");
    }
}

#[test]
fn a_forged_end_of_session_below_what_was_delivered_is_ignored() {
    let net = Net::with_prefix(PREFIX);
    let o = attacked_run(&net, |net, session| {
        forge(net, vec![end_of_session(session, 10)], 3);
    });
    assert_whole_session(&o);
    for h in [RX1, RX2] {
        let s = &o.rx(h).summary;
        assert!(counter(s, "forged_end_of_session") >= 1, "{s}");
    }
}

#[test]
fn a_forged_newer_session_does_not_take_the_receivers_off_the_real_one() {
    let net = Net::with_prefix(PREFIX);
    let o = attacked_run(&net, |net, session| {
        let (tag, epoch) = wire::parse_session(session).expect("one of ours");
        let newer = wire::session_name(tag, epoch + 100);
        forge(net, vec![data_packet(newer, 1), heartbeat(newer, 2)], 3);
    });
    assert_whole_session(&o);
    for h in [RX1, RX2] {
        let s = &o.rx(h).summary;
        assert!(counter(s, "other_session") >= 2, "{s}");
    }
}

/// What the attacker sent and got back.
#[derive(Debug, Default)]
struct Flood {
    requests: u64,
    bytes_sent: u64,
    bytes_received: u64,
}

#[test]
fn re_requests_from_many_ports_of_one_host_get_little_back() {
    let net = Net::with_prefix(PREFIX);
    let spec = Spec {
        send: &["--linger-ms", "1000", "--reply-rate", "2000"],
        speed: "5000/s",
        ..Spec::default()
    };
    let mut flood = Flood::default();
    let o = run(&net, &spec, |net, session| {
        wait_both(net, 1000);
        let ns = net.ns(ROGUE).to_owned();
        let session = session_of(session);
        flood = thread::spawn(move || {
            enter_netns(&ns);
            let server = SocketAddrV4::new(host_ip(SND), PORT + 1);
            let socks: Vec<UdpSocket> = (0..500)
                .map(|_| {
                    let s = UdpSocket::bind((host_ip(ROGUE), 0)).expect("flood socket");
                    s.set_nonblocking(true).expect("nonblocking");
                    s
                })
                .collect();
            let req = request_packet(session, 1, 1000);
            let mut f = Flood::default();
            let mut buf = [0u8; 2048];
            let read = |f: &mut Flood, buf: &mut [u8]| {
                for s in &socks {
                    while let Ok(n) = s.recv(buf) {
                        f.bytes_received += n as u64;
                    }
                }
            };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(2) {
                for s in &socks {
                    if let Ok(n) = s.send_to(&req, server) {
                        f.requests += 1;
                        f.bytes_sent += n as u64;
                    }
                }
                read(&mut f, &mut buf);
            }
            thread::sleep(Duration::from_millis(300));
            read(&mut f, &mut buf);
            f
        })
        .join()
        .expect("flooder");
    });
    assert_whole_session(&o);
    let s = &o.send;
    assert!(flood.requests > 1000, "{flood:?}");
    assert!(
        flood.bytes_received > 0,
        "some requests were answered: {flood:?} {s}"
    );
    let ratio = flood.bytes_received as f64 / flood.bytes_sent as f64;
    eprintln!("flood: {flood:?}, {ratio:.2} bytes back per byte sent");
    assert!(
        ratio < 10.0,
        "{ratio:.1} bytes back per byte sent: {flood:?} {s}"
    );
    assert!(counter(s, "rate_limited") > 0, "{flood:?} {s}");
}

#[test]
fn a_killed_publisher_ends_the_session_with_a_gap_notice() {
    let net = Net::with_prefix(PREFIX);
    let readers = [Reader::start(net.root(RX1)), Reader::start(net.root(RX2))];
    let mut rx = [
        start_recv(&net, RX1, "rx1", &[]),
        start_recv(&net, RX2, "rx2", &[]),
    ];
    let (mut tx, session) = start_send(&net, "send", &["--linger-ms", "300"]);
    let mut replay = start_replay(&net, "2000/s");
    wait_both(&net, 1000);
    replay.assert_running();
    replay.signal(libc::SIGKILL);
    replay.wait();
    // Sender and receivers end by themselves.
    let sent = send_summary(&tx.wait_ok());
    let outs = rx.each_mut().map(|p| p.wait_ok());
    assert_eq!(sent["session"], session.as_str());
    assert_eq!(counter(&sent, "publisher_died"), 1, "{sent}");
    assert!(counter(&sent, "end_of_session") >= 1, "{sent}");
    // What the publisher committed before it died, all of it sent.
    let stream = sender_stream(&net);
    let total = stream.len() as u64;
    assert!(total >= 1000, "{total}");
    assert_eq!(
        counter(&sent, "messages"),
        total + 1,
        "the records and the notice: {sent}"
    );
    let [r1, r2] = readers;
    for ((what, done), epochs) in ["rx1", "rx2"]
        .into_iter()
        .zip(&outs)
        .zip([r1.finish(), r2.finish()])
    {
        let lines = json_lines(what, &done.out);
        let s = &lines[0];
        assert_eq!(counter(s, "sessions_ended"), 1, "{what}: {s}");
        assert_eq!(epochs.len(), 1, "{what}");
        let items = &epochs[0];
        let (last, records) = items.split_last().expect("records");
        assert_complete(what, records, &stream);
        // Then the notice: from the stream's next record on, nothing is known.
        let Item::Rec(t, p) = last else {
            panic!("{what}: the stream ends with a notice, not {last:?}");
        };
        assert_eq!(*t, ENVELOPE_MSG_TYPE);
        let env = mdbus_bus::schema::root_as_envelope(p).expect("an envelope");
        let g = env.event_as_gap_notice().expect("a gap notice");
        assert_eq!(
            (g.scope(), g.first_missing_seq(), g.recoverable()),
            (GapScope::Stream, total, false),
            "{what}"
        );
    }
}

/// Waits until receiver `rx` (bus root `root`) has counted something in its counter `name`;
/// fails, saying `what`, if it ends or `deadline` passes first.
fn wait_counted(rx: &mut Proc, root: &Path, name: &str, deadline: Instant, what: &str) {
    while live_counter(root, "recv", name) == 0 {
        rx.assert_running();
        assert!(Instant::now() < deadline, "{what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_stopped_lossless_subscriber_gets_a_gap_notice_and_the_summary_says_lost() {
    let net = Net::with_prefix(PREFIX);
    let mut rx = start_recv(&net, RX1, "rx1", &["--lossless", "--ring-mb", "1"]);
    // Registered on the lossless stream (the receiver waits for it), and not reading.
    let bus = Bus::with_root(net.root(RX1)).expect("bus root");
    let mut sub = bus
        .subscriber(STREAM, &SubscribeOptions::default())
        .expect("the local stream");
    let (mut tx, _session) = start_send(&net, "send", &["--linger-ms", "300"]);
    // The sample is more than the 1 MiB ring holds.
    let mut replay = start_replay(&net, "max");
    let replayed = replay.wait_ok();
    let sent = send_summary(&tx.wait_ok());
    // The receiver handled the whole session while its subscriber read nothing: its counters
    // (written by its loop) say so, and it is still up, waiting to publish the notice.
    let deadline = Instant::now() + LIMIT;
    let root = net.root(RX1);
    wait_counted(
        &mut rx,
        &root,
        "sessions_ended",
        deadline,
        "the receiver did not get to the end",
    );
    let total = counter(&sent, "messages");
    assert_eq!(live_counter(&root, "recv", "messages"), total);
    let dropped = live_counter(&root, "recv", "local_lost");
    assert!(
        dropped > 0,
        "the ring held the whole stream: raise the load"
    );
    rx.assert_running();
    // Now read it all: records, and the notice of what was dropped, in place.
    let mut items = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "reading the local stream");
        match sub.poll(|m| items.push(Item::of(m.msg_type(), m.payload()))) {
            Ok(true) => {}
            Ok(false) => thread::sleep(Duration::from_micros(200)),
            Err(ReceiveError::Closed) => break,
            Err(e) => panic!("reading: {e}"),
        }
    }
    let done = rx.wait_ok();
    let stream = sender_stream(&net);
    let w = walk("rx1", &items, &stream);
    assert_eq!(
        w.next,
        total + 1,
        "every message delivered or in a notice: {w:?}"
    );
    let lost: u64 = w.gaps.iter().map(|g| g.1).sum();
    assert_eq!(lost, dropped, "{w:?}");
    assert_eq!(w.delivered + lost, total);
    let s = &json_lines("rx1", &done.out)[0];
    assert_eq!(counter(s, "local_lost"), dropped, "{s}");
    assert_eq!(s["lost"], dropped, "the summary counts them lost: {s}");
    assert_eq!(counter(s, "local_gap_notices"), w.gaps.len() as u64, "{s}");
    assert!(
        done.err.contains(&format!("{dropped} lost")),
        "the report says lost: {}",
        done.err
    );
    replay_book(&replayed);
}

#[test]
fn sigterm_stops_a_receiver_whose_lossless_subscriber_stopped() {
    let net = Net::with_prefix(PREFIX);
    let mut rx = start_recv(&net, RX1, "rx1", &["--lossless", "--ring-mb", "1"]);
    let bus = Bus::with_root(net.root(RX1)).expect("bus root");
    // Registered, never read: the ring fills and stays full.
    let _sub = bus
        .subscriber(STREAM, &SubscribeOptions::default())
        .expect("the local stream");
    let (_tx, _session) = start_send(&net, "send", &["--linger-ms", "300"]);
    let _replay = start_replay(&net, "max");
    let deadline = Instant::now() + LIMIT;
    let root = net.root(RX1);
    wait_counted(
        &mut rx,
        &root,
        "local_lost",
        deadline,
        "the receiver published no local_lost: the ring never filled, or its counters froze",
    );
    // Dropping into the full ring: a stop signal still ends it, with its summary.
    rx.signal(libc::SIGTERM);
    let done = rx.wait_ok();
    let s = &json_lines("rx1", &done.out)[0];
    assert!(counter(s, "local_lost") > 0, "{s}");
    assert_eq!(
        s["lost"],
        counter(s, "local_lost") + counter(s, "unrecoverable")
    );
}
