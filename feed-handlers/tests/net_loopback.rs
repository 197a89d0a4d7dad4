//! The network transport end to end on one host: publisher -> ring -> Sender -> multicast on
//! the loopback interface -> Receiver -> ring -> subscriber, with real sockets and threads.
//! Loss, duplication, reordering, truncation and garbage come from the seeded fault
//! injector; multi-host runs over network namespaces and nftables live in the CLI tests.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mdbus_bus::schema::{Envelope, GapScope};
use mdbus_bus::{
    Bus, ENVELOPE_MSG_TYPE, Publisher, ReceiveError, StartAt, StreamConfig, SubscribeOptions,
    Subscriber,
};
use mdbus_codecs::moldudp64::{RequestPacket, Session};
use mdbus_feed_handlers::net::fault::FaultConfig;
use mdbus_feed_handlers::net::{
    Idle, Receiver, ReceiverConfig, ReceiverStats, RequestServer, Sender, SenderConfig, SenderStats,
};

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A group and port no other test in this process uses.
fn group() -> SocketAddrV4 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let port = 20_000 + (std::process::id() % 2_000) as u16 * 8 + n;
    SocketAddrV4::new(Ipv4Addr::new(239, 255, 91, 1 + n as u8), port)
}

fn sender_cfg(stream: &str, group: SocketAddrV4) -> SenderConfig {
    let mut c = SenderConfig::new(stream, group);
    c.send.interface = LO;
    c.request_addr = SocketAddrV4::new(LO, 0);
    c.idle = Idle::Yield;
    c.start = StartAt::Oldest;
    c.linger = Duration::from_millis(300);
    c.heartbeat_interval = Duration::from_millis(20);
    c
}

fn receiver_cfg(stream: &str, group: SocketAddrV4, server: SocketAddrV4) -> ReceiverConfig {
    let mut c = ReceiverConfig::new(stream, group);
    c.interface = LO;
    c.request_server = RequestServer::Addr(server);
    c.idle = Idle::Yield;
    c.exit_at_end_of_session = true;
    c.ring = StreamConfig {
        capacity: 4 << 20,
        ..StreamConfig::default()
    };
    c
}

/// The i-th test message: varied sizes and types, content derived from `i`.
fn message(i: u64) -> (u32, Vec<u8>) {
    let len = 8 + (i * 7919 % 200) as usize;
    let mut v = vec![0u8; len];
    v[..8].copy_from_slice(&i.to_le_bytes());
    for (k, b) in v.iter_mut().enumerate().skip(8) {
        *b = (i as u8).wrapping_mul(31).wrapping_add(k as u8);
    }
    (100 + (i % 3) as u32, v)
}

/// What a subscriber of the received stream saw.
#[derive(Debug, Default)]
struct Seen {
    records: Vec<(u32, Vec<u8>)>,
    /// (first, count) of transport gap notices.
    gaps: Vec<(u64, u64)>,
    closed: bool,
}

/// Reads `name` on `bus` until it closes (or `limit` passes).
fn read_all(bus: &Bus, name: &str, limit: Duration) -> Seen {
    let deadline = Instant::now() + limit;
    let mut sub = loop {
        match bus.subscriber(name, &SubscribeOptions::default()) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "no stream {name}: {e}");
                thread::sleep(Duration::from_millis(5));
            }
        }
    };
    let mut seen = Seen::default();
    while Instant::now() < deadline {
        let r = sub.poll(|m| {
            if m.msg_type() == ENVELOPE_MSG_TYPE
                && let Ok(env) = mdbus_bus::schema::root_as_envelope(m.payload())
                && let Some(g) = env.event_as_gap_notice()
                && g.scope() == GapScope::Transport
            {
                seen.gaps.push((g.first_missing_seq(), g.count()));
                return;
            }
            seen.records.push((m.msg_type(), m.payload().to_vec()));
        });
        match r {
            Ok(true) => {}
            Ok(false) => thread::sleep(Duration::from_micros(200)),
            Err(ReceiveError::Closed) => {
                seen.closed = true;
                break;
            }
            Err(e) => panic!("reading {name}: {e}"),
        }
    }
    seen
}

/// Two bus roots, as on two hosts: the sender's (`bus_a`) and the receiver's (`bus_b`). Keep
/// the directories alive as long as the buses.
fn two_hosts() -> ([tempfile::TempDir; 2], Bus, Bus) {
    let roots = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let bus_a = Bus::with_root(roots[0].path()).unwrap();
    let bus_b = Bus::with_root(roots[1].path()).unwrap();
    (roots, bus_a, bus_b)
}

/// Publishes the test messages `range` (see [`message`]).
fn publish(publisher: &mut Publisher, range: Range<u64>) {
    for i in range {
        let (t, p) = message(i);
        publisher.publish(t, &p).unwrap();
    }
}

/// The address a receiver on this host sends its re-requests to, for `sender`.
fn server_of(sender: &Sender) -> SocketAddrV4 {
    SocketAddrV4::new(LO, sender.request_addr().unwrap().port())
}

/// Polls `sender` and `receiver` in turn until `done` holds for the receiver's stats; fails
/// with those stats once `deadline` has passed.
#[track_caller]
fn pump(
    sender: &mut Sender,
    receiver: &mut Receiver,
    deadline: Instant,
    done: impl Fn(&ReceiverStats) -> bool,
) {
    while !done(&receiver.stats()) {
        assert!(Instant::now() < deadline, "{:?}", receiver.stats());
        sender.poll_once().unwrap();
        receiver.poll_once(&mut |_, _| {}).unwrap();
    }
}

/// Everything `sub` holds now: (message type, payload) of each record, in order.
fn drain(sub: &mut Subscriber) -> Vec<(u32, Vec<u8>)> {
    let mut got = Vec::new();
    while sub
        .poll(|m| got.push((m.msg_type(), m.payload().to_vec())))
        .unwrap()
    {}
    got
}

/// A stream from host A to host B: on A a publisher of `name` and its sender to a group of its
/// own; each test makes its receiver on B.
struct Link {
    name: &'static str,
    bus_b: Bus,
    publisher: Publisher,
    sender: Sender,
    group: SocketAddrV4,
    /// Last, so that the roots outlive what is open in them.
    _roots: [tempfile::TempDir; 2],
}

impl Link {
    /// The publisher with a default ring.
    fn new(name: &'static str) -> Link {
        Link::with_ring(name, &StreamConfig::default())
    }

    /// The publisher with the ring `ring`.
    fn with_ring(name: &'static str, ring: &StreamConfig) -> Link {
        let (roots, bus_a, bus_b) = two_hosts();
        let group = group();
        let publisher = bus_a.publisher(name, ring).unwrap();
        let sender = Sender::new(&bus_a, sender_cfg(name, group)).unwrap();
        Link {
            name,
            bus_b,
            publisher,
            sender,
            group,
            _roots: roots,
        }
    }

    /// The test receiver's configuration for this stream, re-requests to its sender.
    fn receiver_cfg(&self) -> ReceiverConfig {
        receiver_cfg(self.name, self.group, server_of(&self.sender))
    }

    /// A subscriber of the received stream on B.
    fn subscriber(&self) -> Subscriber {
        self.bus_b
            .subscriber(self.name, &SubscribeOptions::default())
            .unwrap()
    }
}

struct Run {
    sent: SenderStats,
    received: ReceiverStats,
    seen: Seen,
    dropped_log: Vec<(u64, u16)>,
}

/// Publishes `n` messages through a sender and a receiver configured by the closures.
fn run(
    n: u64,
    tweak_tx: impl FnOnce(&mut SenderConfig),
    tweak_rx: impl FnOnce(&mut ReceiverConfig),
) -> Run {
    let (_roots, bus_a, bus_b) = two_hosts();
    let g = group();
    let mut publisher = bus_a
        .publisher(
            "src",
            &StreamConfig {
                capacity: 16 << 20,
                ..StreamConfig::default()
            },
        )
        .unwrap();
    let mut tc = sender_cfg("src", g);
    tweak_tx(&mut tc);
    let sender = Sender::new(&bus_a, tc).unwrap();
    let server = match sender.request_addr().unwrap() {
        std::net::SocketAddr::V4(a) => SocketAddrV4::new(LO, a.port()),
        other => panic!("{other}"),
    };
    let mut rc = receiver_cfg("src", g, server);
    tweak_rx(&mut rc);
    let receiver = Receiver::new(&bus_b, rc).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rx = {
        let stop = stop.clone();
        thread::spawn(move || receiver.run(&stop).unwrap())
    };
    let reader = {
        let bus_b = bus_b.clone();
        thread::spawn(move || read_all(&bus_b, "src", Duration::from_secs(60)))
    };
    let tx = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut s = sender;
            let mut log = Vec::new();
            // Run until the stream closes and the linger time passed.
            loop {
                let p = s.poll_once().unwrap();
                if p.done || stop.load(Ordering::Relaxed) {
                    break;
                }
                if p.records == 0 {
                    thread::yield_now();
                }
            }
            if let Some(f) = s.fault() {
                log = f.dropped_log().to_vec();
            }
            (s.stats(), log)
        })
    };
    for i in 0..n {
        let (t, p) = message(i);
        publisher.publish(t, &p).unwrap();
        if i % 64 == 0 {
            // Let the sender keep up with a broadcast ring on two cores.
            thread::sleep(Duration::from_micros(50));
        }
    }
    drop(publisher);
    let (sent, dropped_log) = tx.join().unwrap();
    let received = rx.join().unwrap();
    let seen = reader.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    Run {
        sent,
        received,
        seen,
        dropped_log,
    }
}

fn expect_all(r: &Run, n: u64) {
    assert!(
        r.seen.closed,
        "the received stream ends when the session does"
    );
    assert_eq!(r.seen.gaps, vec![], "no gap notices: {:?}", r.received);
    assert_eq!(r.seen.records.len() as u64, n, "{:?}", r.received);
    for (i, rec) in r.seen.records.iter().enumerate() {
        assert_eq!(*rec, message(i as u64), "record {i}");
    }
    assert_eq!(r.sent.messages, n);
    assert_eq!(r.sent.stream_lost, 0);
}

#[test]
fn delivers_every_message_in_order_byte_identical() {
    let r = run(20_000, |_| {}, |_| {});
    expect_all(&r, 20_000);
    assert_eq!(r.received.messages, 20_000);
    assert_eq!(r.received.sessions, 1);
    assert_eq!(r.received.sessions_ended, 1);
    assert_eq!(r.received.late_joins, 0);
    assert!(r.sent.end_of_session >= 1);
}

#[test]
fn recovers_loss_duplication_and_reordering_from_the_sender() {
    let fault: FaultConfig = "drop=0.05,dup=0.02,reorder=0.05,delay=3,seed=7"
        .parse()
        .unwrap();
    let r = run(20_000, |t| t.fault = fault, |_| {});
    expect_all(&r, 20_000);
    assert!(r.sent.fault_dropped > 0, "the injector dropped messages");
    assert!(r.received.recovered > 0, "{:?}", r.received);
    assert!(r.received.requests > 0);
    assert!(r.sent.retransmit_messages > 0);
    assert_eq!(r.received.unrecoverable, 0);
}

#[test]
fn survives_truncated_and_garbage_datagrams_at_the_receiver() {
    let fault: FaultConfig = "truncate=0.02,garbage=0.02,drop=0.01,seed=11"
        .parse()
        .unwrap();
    let r = run(10_000, |_| {}, |rc| rc.fault = fault);
    expect_all(&r, 10_000);
    assert!(
        r.received.malformed + r.received.foreign_session > 0,
        "{:?}",
        r.received
    );
    assert!(r.received.recovered > 0);
}

#[test]
fn loss_the_store_no_longer_holds_becomes_an_exact_gap_notice() {
    // A store of 64 messages, gone long before the re-request (NAK delay 20 ms).
    let fault: FaultConfig = "drop-seq=1000-1000,drop-seq=5000-5001,seed=1"
        .parse()
        .unwrap();
    let r = run(
        10_000,
        |t| {
            t.fault = fault;
            t.store_messages = 64;
        },
        |rc| rc.sequencer.nak_delay = Duration::from_millis(20),
    );
    assert!(r.seen.closed);
    // Exactly the messages of the dropped packets, as the injector logged them. How many
    // packets that is depends on the batching (5000 and 5001 may be sent apart); adjacent
    // ones are one run of missing messages.
    let mut lost: Vec<(u64, u64)> = Vec::new();
    for &(first, count) in &r.dropped_log {
        match lost.last_mut() {
            Some((f, c)) if *f + *c == first => *c += u64::from(count),
            _ => lost.push((first, u64::from(count))),
        }
    }
    assert_eq!(lost.len(), 2, "two runs dropped: {lost:?}");
    let holds = |seq: u64| lost.iter().any(|&(f, c)| seq >= f && seq < f + c);
    assert!(holds(1000) && holds(5000) && holds(5001), "{lost:?}");
    assert_eq!(r.seen.gaps, lost);
    let missing: u64 = lost.iter().map(|g| g.1).sum();
    assert_eq!(r.seen.records.len() as u64, 10_000 - missing);
    // Everything else is there, in order, byte-identical.
    let mut expected = (0..10_000u64).filter(|i| {
        let seq = i + 1;
        !lost.iter().any(|&(f, c)| seq >= f && seq < f + c)
    });
    for (k, rec) in r.seen.records.iter().enumerate() {
        let i = expected.next().unwrap();
        assert_eq!(*rec, message(i), "record {k}");
    }
    assert_eq!(r.received.unrecoverable, missing);
    assert!(r.sent.not_available >= 1);
}

#[test]
fn a_late_receiver_starts_at_the_live_edge_and_says_so() {
    let mut l = Link::new("late");
    publish(&mut l.publisher, 0..100);
    while l.sender.stats().messages < 100 {
        l.sender.poll_once().unwrap();
    }
    let mut receiver = Receiver::new(&l.bus_b, l.receiver_cfg()).unwrap();
    let mut sub = l.subscriber();
    publish(&mut l.publisher, 100..110);
    let deadline = Instant::now() + Duration::from_secs(20);
    pump(&mut l.sender, &mut receiver, deadline, |s| s.messages >= 10);
    let s = receiver.stats();
    assert_eq!((s.late_joins, s.late_join_messages), (1, 100));
    // First the notice of what was missed, then messages 100.. as sent.
    let got = drain(&mut sub);
    assert_eq!(got.len(), 11);
    let env = mdbus_bus::schema::root_as_envelope(&got[0].1).unwrap();
    let g = env.event_as_gap_notice().expect("a gap notice first");
    assert_eq!(
        (g.first_missing_seq(), g.count(), g.recoverable(), g.scope()),
        (1, 100, false, GapScope::Transport)
    );
    for (k, rec) in got[1..].iter().enumerate() {
        assert_eq!(*rec, message(100 + k as u64));
    }
}

#[test]
fn another_stream_on_the_same_group_is_ignored_and_counted() {
    let (_roots, bus_a, bus_b) = two_hosts();
    let g = group();
    let mut mine = bus_a.publisher("mine", &StreamConfig::default()).unwrap();
    let mut other = bus_a.publisher("other", &StreamConfig::default()).unwrap();
    let mut s1 = Sender::new(&bus_a, sender_cfg("mine", g)).unwrap();
    let mut c2 = sender_cfg("other", g);
    c2.request_addr = SocketAddrV4::new(LO, 0);
    let mut s2 = Sender::new(&bus_a, c2).unwrap();
    let server = server_of(&s1);
    let mut receiver = Receiver::new(&bus_b, receiver_cfg("mine", g, server)).unwrap();
    for i in 0..50 {
        let (t, p) = message(i);
        mine.publish(t, &p).unwrap();
        other.publish(t, &p).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.stats().messages < 50 || receiver.stats().foreign_session == 0 {
        assert!(Instant::now() < deadline, "{:?}", receiver.stats());
        s1.poll_once().unwrap();
        s2.poll_once().unwrap();
        receiver.poll_once(&mut |_, _| {}).unwrap();
    }
    let s = receiver.stats();
    assert_eq!(s.messages, 50);
    assert_eq!(s.sessions, 1);
    assert_eq!(receiver.session(), Some(s1.session()));
}

#[test]
fn a_restarted_sender_is_a_new_session_and_a_new_local_epoch() {
    let (_roots, bus_a, bus_b) = two_hosts();
    let g = group();
    let mut publisher = bus_a.publisher("rs", &StreamConfig::default()).unwrap();
    let mut cfg = sender_cfg("rs", g);
    cfg.start = StartAt::Next;
    let mut first = Sender::new(&bus_a, cfg.clone()).unwrap();
    let server = server_of(&first);
    let mut rc = receiver_cfg("rs", g, server);
    rc.exit_at_end_of_session = false;
    // The new session is followed once the old one has been silent this long.
    rc.session_timeout = Duration::from_millis(50);
    let mut receiver = Receiver::new(&bus_b, rc).unwrap();
    let mut sub = bus_b
        .subscriber("rs", &SubscribeOptions::default())
        .unwrap();
    let epoch0 = sub.epoch();
    let deadline = Instant::now() + Duration::from_secs(20);
    publish(&mut publisher, 0..20);
    pump(&mut first, &mut receiver, deadline, |s| s.messages >= 20);
    let s1 = first.session();
    // The sender dies without an end of session; a new one takes over the same port.
    drop(first);
    cfg.request_addr = server;
    let mut second = Sender::new(&bus_a, cfg).unwrap();
    assert_ne!(second.session(), s1);
    assert!(
        second.session().0 > s1.0,
        "newer sessions sort after older ones"
    );
    publish(&mut publisher, 20..30);
    pump(&mut second, &mut receiver, deadline, |s| s.messages >= 30);
    assert_eq!(receiver.session(), Some(second.session()));
    assert_eq!(receiver.stats().sessions, 2);
    // A stale packet of the first session is ignored and counted.
    let stale = {
        let mut buf = [0u8; 20];
        mdbus_codecs::moldudp64::encode_heartbeat(&mut buf, s1, 21).unwrap();
        buf
    };
    let sock = UdpSocket::bind((LO, 0)).unwrap();
    sock.send_to(&stale, receiver.line_a_addr().unwrap())
        .unwrap();
    while receiver.stats().stale_session == 0 {
        assert!(Instant::now() < deadline, "{:?}", receiver.stats());
        receiver.poll_once(&mut |_, _| {}).unwrap();
    }
    // The old local stream was closed after its 20 records; the new one has a new epoch.
    let mut old = Vec::new();
    loop {
        match sub.poll(|m| old.push(m.payload().to_vec())) {
            Ok(true) => {}
            Ok(false) => thread::sleep(Duration::from_millis(1)),
            Err(ReceiveError::Closed) | Err(ReceiveError::NewEpoch { .. }) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline);
    }
    assert_eq!(old.len(), 20);
    let change = sub.reopen().unwrap();
    assert_ne!(change.new, epoch0);
    let mut new = Vec::new();
    while sub.poll(|m| new.push(m.payload().to_vec())).unwrap() {}
    // The second sender started at the live edge: a late-join notice (it joined its own
    // session at 1, so none), then 20..30.
    let payloads: Vec<Vec<u8>> = (20..30).map(|i| message(i).1).collect();
    assert_eq!(new, payloads);
}

#[test]
fn senders_started_back_to_back_are_newer_sessions_each() {
    // A sender restarted at once (a crash loop, a supervisor's quick restart) must still be
    // a newer session than the one it replaces: receivers follow newer sessions only, and
    // one of the same name would have its sequence numbers taken for duplicates.
    let (_roots, bus_a, _bus_b) = two_hosts();
    let g = group();
    let _publisher = bus_a.publisher("b2b", &StreamConfig::default()).unwrap();
    let mut last = None;
    for _ in 0..5 {
        let sender = Sender::new(&bus_a, sender_cfg("b2b", g)).unwrap();
        let session = sender.session();
        if let Some(before) = last {
            assert!(session > before, "{session:?} after {before:?}");
        }
        last = Some(session);
    }
}

#[test]
fn a_request_flood_is_bounded() {
    let (a, _b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bus_a = Bus::with_root(a.path()).unwrap();
    let g = group();
    let mut publisher = bus_a.publisher("flood", &StreamConfig::default()).unwrap();
    let mut cfg = sender_cfg("flood", g);
    cfg.reply_rate = 1_000;
    cfg.reply_burst = 100;
    let mut sender = Sender::new(&bus_a, cfg).unwrap();
    publish(&mut publisher, 0..1_000);
    while sender.stats().messages < 1_000 {
        sender.poll_once().unwrap();
    }
    let server = sender.request_addr().unwrap();
    let attacker = UdpSocket::bind((LO, 0)).unwrap();
    attacker.set_nonblocking(true).unwrap();
    let mut req = [0u8; 20];
    RequestPacket {
        session: sender.session(),
        sequence_number: 1,
        message_count: 1000,
    }
    .encode(&mut req)
    .unwrap();
    // Also junk: wrong session, too short.
    let mut junk = [0u8; 20];
    RequestPacket {
        session: Session(*b"XXXXXXXXXX"),
        sequence_number: 1,
        message_count: 10,
    }
    .encode(&mut junk)
    .unwrap();
    let start = Instant::now();
    for _ in 0..500 {
        attacker.send_to(&req, server).unwrap();
        attacker.send_to(&junk, server).unwrap();
        attacker.send_to(&req[..7], server).unwrap();
        sender.poll_once().unwrap();
    }
    while sender.stats().requests < 1_500 && start.elapsed() < Duration::from_secs(20) {
        sender.poll_once().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let s = sender.stats();
    assert_eq!(s.requests, 1_500, "{s:?}");
    assert_eq!(s.bad_requests, 1_000);
    // Replies stay within the bucket: the burst plus the rate over the elapsed time.
    let allowed = 100 + (1_000.0 * elapsed).ceil() as u64;
    assert!(s.retransmit_messages <= allowed, "{s:?} allowed {allowed}");
    assert!(s.rate_limited > 0);
    // Count what actually arrived: no more than was reported sent.
    let mut buf = [0u8; 2048];
    let mut packets = 0;
    while attacker.recv_from(&mut buf).is_ok() {
        packets += 1;
    }
    assert!(packets as u64 <= s.retransmit_packets);
}

#[test]
fn the_sender_reports_records_it_could_not_read() {
    // A small broadcast ring that laps a sender which is not polled for a while.
    let mut l = Link::with_ring(
        "lap",
        &StreamConfig {
            capacity: 4096,
            max_msg_len: 256,
            ..StreamConfig::default()
        },
    );
    let mut receiver = Receiver::new(&l.bus_b, l.receiver_cfg()).unwrap();
    let mut sub = l.subscriber();
    for i in 0..500u64 {
        l.publisher.publish(7, &i.to_le_bytes()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = l.sender.stats();
        let r = receiver.stats();
        if s.stream_lost > 0 && r.messages == s.messages && s.messages > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{s:?} {r:?}");
        l.sender.poll_once().unwrap();
        receiver.poll_once(&mut |_, _| {}).unwrap();
    }
    let lost = l.sender.stats().stream_lost;
    let mut notices = Vec::new();
    let mut values = Vec::new();
    while sub
        .poll(|m| {
            if m.msg_type() == ENVELOPE_MSG_TYPE {
                let env: Envelope<'_> = mdbus_bus::schema::root_as_envelope(m.payload()).unwrap();
                let g = env.event_as_gap_notice().unwrap();
                assert_eq!(g.scope(), GapScope::Stream);
                notices.push((g.first_missing_seq(), g.count()));
            } else {
                values.push(u64::from_le_bytes(m.payload().try_into().unwrap()));
            }
        })
        .unwrap()
    {}
    // Every record is either delivered or inside a notice, exactly once.
    assert_eq!(notices.iter().map(|n| n.1).sum::<u64>(), lost);
    assert_eq!(values.len() as u64 + lost, 500);
    let mut covered: Vec<u64> = values.clone();
    for (first, count) in &notices {
        covered.extend(*first..first + count);
    }
    covered.sort_unstable();
    assert_eq!(covered, (0..500).collect::<Vec<_>>());
}

#[test]
fn two_lines_fill_each_others_losses() {
    let g_b = group();
    let fault: FaultConfig = "drop=0.1,seed=3".parse().unwrap();
    let r = run(
        10_000,
        |t| {
            t.line_b = Some(g_b);
            t.fault = fault;
        },
        |rc| {
            rc.line_b = Some(mdbus_feed_handlers::net::LineConfig {
                group: g_b,
                source: None,
            })
        },
    );
    expect_all(&r, 10_000);
    assert!(r.received.packets_b > 0, "{:?}", r.received);
    // Most packets arrive on both lines: the second copy is a duplicate.
    assert!(r.received.duplicates > 0, "{:?}", r.received);
    assert_eq!(r.received.unrecoverable, 0);
}

/// Sends `bytes` to the receiver's line A from another socket (a forger on this host).
fn forge(receiver: &Receiver, bytes: &[u8]) {
    let sock = UdpSocket::bind((LO, 0)).unwrap();
    sock.send_to(bytes, receiver.line_a_addr().unwrap())
        .unwrap();
}

#[test]
fn a_forged_newer_session_does_not_take_over_a_live_one() {
    let mut l = Link::new("fe");
    let mut rc = l.receiver_cfg();
    rc.exit_at_end_of_session = false;
    let mut receiver = Receiver::new(&l.bus_b, rc).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    publish(&mut l.publisher, 0..20);
    pump(&mut l.sender, &mut receiver, deadline, |s| s.messages >= 20);
    let real = l.sender.session();
    // A newer epoch with the stream's tag: a data packet and a heartbeat far ahead.
    let (tag, epoch) = mdbus_feed_handlers::net::wire::parse_session(real).unwrap();
    let forged = mdbus_feed_handlers::net::wire::session_name(tag, epoch + 1000);
    let mut buf = [0u8; 128];
    let mut b = mdbus_codecs::moldudp64::PacketBuilder::new(&mut buf, forged, 1).unwrap();
    b.push(b"\x07\0\0\0forged").unwrap();
    let n = b.finish();
    forge(&receiver, &buf[..n]);
    let mut hb = [0u8; 20];
    mdbus_codecs::moldudp64::encode_heartbeat(&mut hb, forged, 1_000).unwrap();
    forge(&receiver, &hb);
    pump(&mut l.sender, &mut receiver, deadline, |s| {
        s.other_session >= 2
    });
    publish(&mut l.publisher, 20..40);
    pump(&mut l.sender, &mut receiver, deadline, |s| s.messages >= 40);
    let s = receiver.stats();
    assert_eq!(receiver.session(), Some(real), "{s:?}");
    assert_eq!(
        (s.sessions, s.other_session, s.unrecoverable),
        (1, 2, 0),
        "{s:?}"
    );
    let mut sub = l.subscriber();
    let got = drain(&mut sub);
    let want: Vec<_> = (0..40).map(message).collect();
    assert_eq!(got, want, "every real message, in one local epoch");
}

#[test]
fn a_stopped_lossless_subscriber_gets_a_gap_notice_and_the_receiver_keeps_going() {
    let mut l = Link::new("ll");
    let mut rc = l.receiver_cfg();
    rc.ring = StreamConfig {
        capacity: 4096,
        max_msg_len: 512,
        mode: mdbus_bus::Mode::Lossless,
        ..StreamConfig::default()
    };
    let mut receiver = Receiver::new(&l.bus_b, rc).unwrap();
    // Registered, so the ring waits for it; not read until the session is over.
    let mut sub = l.subscriber();
    const N: u64 = 300;
    publish(&mut l.publisher, 0..N);
    drop(l.publisher);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Everything is received and handled while the subscriber reads nothing.
    pump(&mut l.sender, &mut receiver, deadline, |s| {
        s.messages >= N && s.sessions_ended > 0
    });
    let s = receiver.stats();
    assert!(s.local_lost > 0, "the ring holds far fewer than {N}: {s:?}");
    assert_eq!(s.lost(), s.local_lost, "{s:?}");
    // Now the subscriber reads: the receiver publishes the notice and closes the stream.
    let mut seen = Vec::new();
    let mut gaps = Vec::new();
    let mut closed = false;
    while !closed {
        assert!(Instant::now() < deadline, "{:?}", receiver.stats());
        receiver.poll_once(&mut |_, _| {}).unwrap();
        loop {
            let r = sub.poll(|m| {
                if m.msg_type() == ENVELOPE_MSG_TYPE {
                    let env = mdbus_bus::schema::root_as_envelope(m.payload()).unwrap();
                    let g = env.event_as_gap_notice().expect("only gap notices");
                    assert_eq!((g.scope(), g.recoverable()), (GapScope::Transport, false));
                    gaps.push((g.first_missing_seq(), g.count()));
                } else {
                    seen.push((m.msg_type(), m.payload().to_vec()));
                }
            });
            match r {
                Ok(true) => {}
                Ok(false) => break,
                Err(ReceiveError::Closed) => {
                    closed = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    let s = receiver.stats();
    assert_eq!(s.local_gap_notices, gaps.len() as u64, "{s:?}");
    assert_eq!(s.notices_unpublished, 0, "{s:?}");
    assert_eq!(gaps.iter().map(|g| g.1).sum::<u64>(), s.local_lost, "{s:?}");
    // Every message delivered or inside a notice, in order, exactly once.
    let mut covered: Vec<u64> = Vec::new();
    for (first, count) in &gaps {
        covered.extend(first - 1..first - 1 + count);
    }
    assert_eq!(seen.len() as u64 + s.local_lost, N);
    for (k, rec) in seen.iter().enumerate() {
        let i = u64::from_le_bytes(rec.1[..8].try_into().unwrap());
        assert_eq!(*rec, message(i), "record {k}");
        covered.push(i);
    }
    covered.sort_unstable();
    assert_eq!(covered, (0..N).collect::<Vec<_>>());
}

#[test]
fn a_forged_first_packet_far_ahead_makes_no_absurd_late_join() {
    let mut l = Link::new("ff");
    publish(&mut l.publisher, 0..100);
    while l.sender.stats().messages < 100 {
        l.sender.poll_once().unwrap();
    }
    let mut rc = l.receiver_cfg();
    // The sequencer holds a live-edge join's first packet this long for the stream to
    // confirm or contradict it (the sender's heartbeats come every 20 ms).
    rc.sequencer.nak_delay = Duration::from_millis(500);
    let mut receiver = Receiver::new(&l.bus_b, rc).unwrap();
    let mut sub = l.subscriber();
    // The first packet the late receiver sees is forged, numbered far ahead.
    let mut buf = [0u8; 128];
    let mut b =
        mdbus_codecs::moldudp64::PacketBuilder::new(&mut buf, l.sender.session(), 1 << 40).unwrap();
    b.push(b"\x07\0\0\0forged").unwrap();
    let n = b.finish();
    forge(&receiver, &buf[..n]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.stats().packets == 0 {
        assert!(Instant::now() < deadline);
        receiver.poll_once(&mut |_, _| {}).unwrap();
    }
    publish(&mut l.publisher, 100..110);
    pump(&mut l.sender, &mut receiver, deadline, |s| s.messages >= 10);
    let s = receiver.stats();
    assert_eq!((s.late_joins, s.late_join_messages), (1, 100), "{s:?}");
    assert_eq!(s.anchors_replaced, 1, "{s:?}");
    let got = drain(&mut sub);
    let env = mdbus_bus::schema::root_as_envelope(&got[0].1).unwrap();
    let g = env.event_as_gap_notice().expect("a gap notice first");
    assert_eq!((g.first_missing_seq(), g.count()), (1, 100));
    let real: Vec<_> = (100..110).map(message).collect();
    assert_eq!(
        &got[1..],
        &real[..],
        "then the real messages, nothing forged"
    );
}

/// Environment of the publisher child of [`a_killed_publisher_ends_the_session`].
const CHILD_ROOT: &str = "MDBUS_NET_TEST_PUBLISHER_ROOT";

#[test]
fn a_killed_publisher_ends_the_session() {
    if let Ok(root) = std::env::var(CHILD_ROOT) {
        // The child: publish 50 records, say so, then wait to be killed.
        let bus = Bus::with_root(root).unwrap();
        let mut publisher = bus.publisher("pd", &StreamConfig::default()).unwrap();
        publish(&mut publisher, 0..50);
        println!("published");
        std::io::Write::flush(&mut std::io::stdout()).unwrap();
        thread::sleep(Duration::from_secs(60));
        return;
    }
    let (roots, bus_a, bus_b) = two_hosts();
    let g = group();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_publisher_ends_the_session",
            "--nocapture",
        ])
        .env(CHILD_ROOT, roots[0].path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("published") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert!(n > 0, "the publisher child exited early");
    }
    let mut sender = Sender::new(&bus_a, sender_cfg("pd", g)).unwrap();
    let server = server_of(&sender);
    let mut receiver = Receiver::new(&bus_b, receiver_cfg("pd", g, server)).unwrap();
    let mut sub = bus_b
        .subscriber("pd", &SubscribeOptions::default())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    pump(&mut sender, &mut receiver, deadline, |s| s.messages >= 50);
    child.kill().unwrap();
    child.wait().unwrap();
    // Both end the session by themselves.
    let mut ended = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "{:?} {:?}",
            sender.stats(),
            receiver.stats()
        );
        let done = sender.poll_once().unwrap().done;
        ended |= receiver.poll_once(&mut |_, _| {}).unwrap().ended;
        if done && ended {
            break;
        }
        thread::sleep(Duration::from_micros(100));
    }
    assert_eq!(sender.stats().publisher_died, 1, "{:?}", sender.stats());
    // The 50 records, then the notice that the stream broke off after them.
    let mut got = Vec::new();
    let mut notice = None;
    loop {
        let r = sub.poll(|m| {
            if m.msg_type() == ENVELOPE_MSG_TYPE {
                let env = mdbus_bus::schema::root_as_envelope(m.payload()).unwrap();
                let g = env.event_as_gap_notice().expect("a gap notice");
                notice = Some((g.scope(), g.first_missing_seq(), g.recoverable()));
            } else {
                assert!(notice.is_none(), "nothing after the notice");
                got.push((m.msg_type(), m.payload().to_vec()));
            }
        });
        match r {
            Ok(true) => {}
            Ok(false) => panic!("the local stream is closed at the end of the session"),
            Err(ReceiveError::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let want: Vec<_> = (0..50).map(message).collect();
    assert_eq!(got, want);
    assert_eq!(notice, Some((GapScope::Stream, 50, false)));
}

#[test]
fn with_follow_newer_a_newer_session_takes_over_at_once() {
    let mut l = Link::new("fn");
    let mut rc = l.receiver_cfg();
    rc.exit_at_end_of_session = false;
    rc.follow_newer = true;
    let mut receiver = Receiver::new(&l.bus_b, rc).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    publish(&mut l.publisher, 0..5);
    pump(&mut l.sender, &mut receiver, deadline, |s| s.messages >= 5);
    // The operator trusts the group: a newer session is a restarted sender.
    let (tag, epoch) = mdbus_feed_handlers::net::wire::parse_session(l.sender.session()).unwrap();
    let newer = mdbus_feed_handlers::net::wire::session_name(tag, epoch + 1);
    let mut hb = [0u8; 20];
    mdbus_codecs::moldudp64::encode_heartbeat(&mut hb, newer, 1).unwrap();
    forge(&receiver, &hb);
    while receiver.session() != Some(newer) {
        assert!(Instant::now() < deadline, "{:?}", receiver.stats());
        receiver.poll_once(&mut |_, _| {}).unwrap();
    }
    let s = receiver.stats();
    assert_eq!((s.sessions, s.other_session), (2, 0), "{s:?}");
}
