//! Shared parts of the live feed tests: a test exchange that plays the real AAPL session as
//! MoldUDP64 over UDP (dropping packets on purpose), its retransmission server, and a checker
//! of what reached the bus.

#![allow(dead_code)] // each test binary uses a different part

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mdbus_bus::{Bus, Mode, ReceiveError, StreamConfig, SubscribeOptions, Subscriber};
use mdbus_codecs::fb::{self, Event};
use mdbus_codecs::moldudp64::{MoldError, PacketBuilder, Session, encode_end_of_session};
use mdbus_codecs::nasdaq::itch;
use mdbus_codecs::nasdaq::normalize::Normalizer;
use mdbus_codecs::retransmit::{RetransmitConfig, RetransmitStore};

/// The session the test exchange runs.
pub const SESSION: Session = Session(*b"20200130AA");

/// Bound on every wait of these tests.
pub const LIMIT: Duration = Duration::from_secs(60);

/// The 10,000 real AAPL messages (Nasdaq's length-prefixed ITCH file, split).
pub fn aapl() -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codecs/testdata/itch/aapl-2020-01-30-10k.itch");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let (msg, next) = itch::frame_at(&bytes, offset)
            .unwrap_or_else(|e| panic!("{} at offset {offset}: {e}", path.display()));
        out.push(msg.to_vec());
        offset = next;
    }
    assert_eq!(out.len(), 10_000);
    out
}

/// A broadcast stream large enough for the whole session and its notices.
pub fn stream_config() -> StreamConfig {
    StreamConfig {
        capacity: 8 << 20,
        max_msg_len: 1024,
        mode: Mode::Broadcast,
        ..StreamConfig::default()
    }
}

/// A subscriber that sees the stream from its first record.
pub fn subscriber(bus: &Bus, stream: &str) -> Subscriber {
    bus.subscriber(
        stream,
        &SubscribeOptions {
            lossless: false,
            ..SubscribeOptions::default()
        },
    )
    .expect("subscribe")
}

/// Where the exchange sends, and which packets it drops on that line.
pub struct Line {
    pub dest: SocketAddr,
    pub drop: Box<dyn Fn(usize) -> bool + Send>,
}

/// What the exchange did.
#[derive(Debug, Default)]
pub struct Played {
    /// (first sequence number, message count) of every packet, in order.
    pub packets: Vec<(u64, u64)>,
    /// Messages dropped on each line.
    pub dropped: Vec<u64>,
    /// End-of-session packets sent (per line).
    pub eos_sent: u64,
}

/// Plays `messages` as MoldUDP64 packets of at most 1,400 bytes on every line (each dropping
/// its own packets), pushing every message into `store` before sending it; then repeats
/// end of session every 2 ms until `done` is set (or the test limit passes).
pub fn spawn_exchange(
    netns: Option<String>,
    bind: Ipv4Addr,
    multicast_if: Option<Ipv4Addr>,
    messages: Arc<Vec<Vec<u8>>>,
    lines: Vec<Line>,
    store: Arc<Mutex<RetransmitStore>>,
    done: Arc<AtomicBool>,
) -> JoinHandle<Played> {
    std::thread::spawn(move || {
        if let Some(ns) = &netns {
            enter_netns(ns);
        }
        let sock = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .expect("exchange socket");
        if let Some(ifaddr) = multicast_if {
            sock.set_multicast_if_v4(&ifaddr).expect("IP_MULTICAST_IF");
            sock.set_multicast_ttl_v4(1).expect("IP_MULTICAST_TTL");
        }
        sock.bind(&SocketAddr::from((bind, 0)).into())
            .expect("exchange bind");
        let sock: UdpSocket = sock.into();
        let mut played = Played {
            dropped: vec![0; lines.len()],
            ..Played::default()
        };
        let mut buf = [0u8; 1400];
        let mut next = 0usize; // index of the next message to send
        while next < messages.len() {
            let first = next as u64 + 1;
            let mut b = PacketBuilder::new(&mut buf, SESSION, first).expect("header fits");
            while next < messages.len() {
                match b.push(&messages[next]) {
                    Ok(()) => next += 1,
                    Err(MoldError::PacketFull { .. }) => break,
                    Err(e) => panic!("message {}: {e}", next + 1),
                }
            }
            let count = u64::from(b.count());
            let len = b.finish();
            {
                let mut store = store.lock().expect("store lock");
                for m in &messages[first as usize - 1..first as usize - 1 + count as usize] {
                    store.push(m).expect("store push");
                }
            }
            let i = played.packets.len();
            played.packets.push((first, count));
            for (l, line) in lines.iter().enumerate() {
                if (line.drop)(i) {
                    played.dropped[l] += count;
                } else {
                    sock.send_to(&buf[..len], line.dest).expect("exchange send");
                }
            }
            if i % 16 == 15 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let end = messages.len() as u64 + 1;
        let n = encode_end_of_session(&mut buf, SESSION, end).expect("header fits");
        let start = Instant::now();
        while !done.load(Ordering::Relaxed) && start.elapsed() < LIMIT {
            for line in &lines {
                sock.send_to(&buf[..n], line.dest).expect("exchange send");
            }
            played.eos_sent += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        played
    })
}

/// A retransmission store for the test session holding `capacity` messages.
pub fn store(capacity: usize) -> Arc<Mutex<RetransmitStore>> {
    Arc::new(Mutex::new(
        RetransmitStore::new(RetransmitConfig {
            capacity_messages: capacity,
            ..RetransmitConfig::new(SESSION)
        })
        .expect("store config"),
    ))
}

/// Answers re-requests arriving on `sock` from `store` until `done` is set; returns the
/// number of requests answered.
pub fn spawn_server(
    netns: Option<String>,
    sock: impl FnOnce() -> UdpSocket + Send + 'static,
    store: Arc<Mutex<RetransmitStore>>,
    done: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        if let Some(ns) = &netns {
            enter_netns(ns);
        }
        let sock = sock();
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .expect("read timeout");
        let epoch = Instant::now();
        let mut buf = [0u8; 64];
        let mut answered = 0;
        let start = Instant::now();
        while !done.load(Ordering::Relaxed) && start.elapsed() < LIMIT {
            let Ok((n, src)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let now = epoch.elapsed().as_nanos() as u64;
            let mut store = store.lock().expect("store lock");
            let reply = store.handle_request(now, src, &buf[..n], |p| {
                sock.send_to(p, src).expect("server send");
            });
            if reply.is_ok() {
                answered += 1;
            }
        }
        answered
    })
}

/// Waits for `h` at most [`LIMIT`]; on time-out sets `stop`, joins, and fails the test.
pub fn join_bounded<T>(h: JoinHandle<T>, stop: &AtomicBool, what: &str) -> T {
    let start = Instant::now();
    while !h.is_finished() {
        if start.elapsed() > LIMIT {
            stop.store(true, Ordering::Relaxed);
            let _ = h.join();
            panic!("{what}: did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    h.join()
        .unwrap_or_else(|_| panic!("{what}: thread panicked"))
}

/// One record of the stream, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A normalized ITCH message: its source sequence number.
    Msg(u64),
    /// A gap notice of lost messages (first, count).
    Lost(u64, u64),
}

/// What the stream carried.
#[derive(Debug, Default)]
pub struct Collected {
    /// Messages and lost-gap notices, in stream order.
    pub items: Vec<Item>,
    /// Gap notices of messages being re-requested (first, count).
    pub recovering: Vec<(u64, u64)>,
    /// The end-of-session event's sequence number.
    pub end: Option<u64>,
}

/// Reads the whole stream. Every record must verify; every normalized message must be
/// byte for byte the normalization of the source message of its sequence number.
pub fn collect(sub: &mut Subscriber, source: &[Vec<u8>]) -> Collected {
    let mut norm = Normalizer::new();
    let mut out = Collected::default();
    loop {
        let more = sub.poll(|m| {
            let env = fb::read_verified(m.payload())
                .unwrap_or_else(|e| panic!("bus record {}: {e}", m.seq()));
            let seq = env.header().seq();
            match env.event_type() {
                Event::GapNotice => {
                    let g = env.event_as_gap_notice().expect("tag checked");
                    assert_eq!(g.first_missing_seq(), seq);
                    if g.recoverable() {
                        out.recovering.push((seq, g.count()));
                    } else {
                        out.items.push(Item::Lost(seq, g.count()));
                    }
                }
                Event::EndOfSession => out.end = Some(seq),
                Event::Heartbeat => {}
                _ => {
                    let src = source
                        .get((seq as usize).wrapping_sub(1))
                        .unwrap_or_else(|| panic!("sequence number {seq} not in the source"));
                    let decoded = itch::decode(src).expect("the source decodes");
                    let want = norm.normalize(&decoded, seq, env.header().recv_ts_ns());
                    assert_eq!(m.payload(), want.as_bytes(), "envelope of message {seq}");
                    out.items.push(Item::Msg(seq));
                }
            }
        });
        match more {
            Ok(true) => {}
            // Read to the end (the handler's publisher is gone once it returned).
            Ok(false) | Err(ReceiveError::Closed) => break,
            Err(e) => panic!("reading the stream: {e}"),
        }
    }
    out
}

/// Checks that the items cover `1 ..= n` exactly once, in order; returns the lost ranges.
pub fn check_tiling(items: &[Item], n: u64) -> Vec<(u64, u64)> {
    let mut next = 1;
    let mut lost = Vec::new();
    for item in items {
        match *item {
            Item::Msg(s) => {
                assert_eq!(s, next, "message out of order or repeated");
                next += 1;
            }
            Item::Lost(first, count) => {
                assert_eq!(first, next, "gap notice out of place");
                assert!(count > 0);
                next += count;
                lost.push((first, count));
            }
        }
    }
    assert_eq!(next, n + 1, "the stream does not cover the session");
    lost
}

/// Moves the calling thread into network namespace `name`.
pub fn enter_netns(name: &str) {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: `setns` with a valid namespace file descriptor (open for the call) and
    // CLONE_NEWNET changes only this thread's network namespace; no memory is involved.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}
