//! The live handler on real multicast between two network namespaces joined by a veth pair:
//! an "exchange" namespace sends the AAPL session on two groups (line A joined
//! source-specific, line B any-source), each line dropping its own packets plus a common
//! burst, and answers re-requests by unicast; the "feed" namespace runs the handler.
//!
//! Needs root (namespaces, veth). It fails, never skips, when they cannot be set up.

mod live_common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use live_common::*;
use mdbus_bus::Bus;
use mdbus_codecs::moldudp64::{PacketBuilder, Session};
use mdbus_codecs::sequencer::{Backoff, LateJoin, SequencerConfig};
use mdbus_feed_handlers::live::{Idle, LineConfig, LiveFeed, LiveFeedConfig};
use mdbus_feed_handlers::pipeline::FeedPipeline;

const EXCHANGE_IP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
const FEED_IP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);
/// A second sender in the exchange namespace, which the source-specific join must filter.
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 3);
const GROUP_A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 231, 0, 1), 26477);
const GROUP_B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 231, 0, 2), 26478);
const SERVER: SocketAddrV4 = SocketAddrV4::new(EXCHANGE_IP, 18000);

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {} -- this test needs root and network namespaces",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Two namespaces joined by a veth pair; deleted on drop (which removes the veth too).
struct Namespaces {
    exchange: String,
    feed: String,
}

impl Namespaces {
    fn new() -> Self {
        let pid = std::process::id();
        let ns = Namespaces {
            exchange: format!("mdbus-x{pid}"),
            feed: format!("mdbus-f{pid}"),
        };
        let (vx, vf) = (format!("mdx{pid}"), format!("mdf{pid}"));
        ip(&["netns", "add", &ns.exchange]);
        ip(&["netns", "add", &ns.feed]);
        ip(&[
            "link",
            "add",
            &vx,
            "netns",
            &ns.exchange,
            "type",
            "veth",
            "peer",
            "name",
            &vf,
            "netns",
            &ns.feed,
        ]);
        for (n, dev, addrs) in [
            (&ns.exchange, &vx, &[EXCHANGE_IP, OTHER_IP][..]),
            (&ns.feed, &vf, &[FEED_IP][..]),
        ] {
            for a in addrs {
                ip(&["-n", n, "addr", "add", &format!("{a}/24"), "dev", dev]);
            }
            ip(&["-n", n, "link", "set", "lo", "up"]);
            ip(&["-n", n, "link", "set", dev, "up"]);
            ip(&["-n", n, "route", "add", "224.0.0.0/4", "dev", dev]);
        }
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in [&self.exchange, &self.feed] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Packets of another session sent from `OTHER_IP` to `group`: `count` of them.
fn send_foreign(ns: &str, group: SocketAddrV4, count: usize) {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter_netns(&ns);
        let sock = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        sock.set_multicast_if_v4(&OTHER_IP).unwrap();
        sock.bind(&SocketAddr::from((OTHER_IP, 0)).into()).unwrap();
        let sock: UdpSocket = sock.into();
        let mut buf = [0u8; 64];
        let mut b = PacketBuilder::new(&mut buf, Session(*b"FOREIGN001"), 1).unwrap();
        b.push(b"junk").unwrap();
        let n = b.finish();
        for _ in 0..count {
            sock.send_to(&buf[..n], group).unwrap();
        }
    })
    .join()
    .expect("foreign sender");
}

#[test]
fn multicast_lines_a_and_b_with_ssm_and_recovery_across_namespaces() {
    let ns = Namespaces::new();
    let messages = Arc::new(aapl());
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let pipeline = FeedPipeline::new(&bus, "aapl", &stream_config()).unwrap();
    let mut sub = subscriber(&bus, "aapl");

    // The handler: bound and joined in the feed namespace, before anything is sent.
    let config = LiveFeedConfig {
        source: Some(EXCHANGE_IP),
        interface: FEED_IP,
        line_b: Some(LineConfig {
            group: GROUP_B,
            source: None,
        }),
        request_server: Some(SERVER),
        rcvbuf: 4 << 20,
        idle: Idle::Yield,
        sequencer: SequencerConfig {
            session: Some(SESSION),
            late_join: LateJoin::FromSequence(1),
            // Patient (seconds), so a loaded test machine does not turn delay into loss.
            max_retries: 8,
            backoff: Backoff {
                factor: 2,
                max: Duration::from_millis(500),
            },
            ..SequencerConfig::default()
        },
        ..LiveFeedConfig::new(GROUP_A)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let handler = {
        let (feed_ns, stop) = (ns.feed.clone(), stop.clone());
        std::thread::spawn(move || {
            enter_netns(&feed_ns);
            let mut pipeline = pipeline;
            let feed = LiveFeed::bind(config);
            let feed = match feed {
                Ok(f) => {
                    bound_tx.send(Ok(())).unwrap();
                    f
                }
                Err(e) => {
                    bound_tx.send(Err(e.to_string())).unwrap();
                    return None;
                }
            };
            Some(feed.run(&mut pipeline, &stop))
        })
    };
    bound_rx
        .recv_timeout(LIMIT)
        .expect("the handler reports its setup")
        .expect("sockets bound and groups joined");

    // Junk from another source: filtered by the source-specific join of line A, received
    // (and counted as another session) on line B.
    send_foreign(&ns.exchange, GROUP_A, 5);
    send_foreign(&ns.exchange, GROUP_B, 3);

    let done = Arc::new(AtomicBool::new(false));
    let store = store(1 << 20);
    let server = spawn_server(
        Some(ns.exchange.clone()),
        || UdpSocket::bind(SERVER).expect("server bind"),
        store.clone(),
        done.clone(),
    );
    let burst = 50..=60;
    let exchange = spawn_exchange(
        Some(ns.exchange.clone()),
        EXCHANGE_IP,
        Some(EXCHANGE_IP),
        messages.clone(),
        vec![
            Line {
                dest: GROUP_A.into(),
                drop: Box::new({
                    let burst = burst.clone();
                    move |i| i % 5 == 4 || burst.contains(&i)
                }),
            },
            Line {
                dest: GROUP_B.into(),
                drop: Box::new(move |i| i % 3 == 2 || burst.contains(&i)),
            },
        ],
        store,
        done.clone(),
    );
    let stats = join_bounded(handler, &stop, "live handler");
    done.store(true, Ordering::Relaxed);
    let played = join_bounded(exchange, &done, "exchange");
    let answered = join_bounded(server, &done, "server");
    let stats = stats.expect("handler set up").expect("handler ran");
    drop(ns);

    let collected = collect(&mut sub, &messages);
    assert_eq!(check_tiling(&collected.items, 10_000), [], "{stats:?}");
    assert_eq!(collected.end, Some(10_001));
    let s = &stats.sequencer;
    assert!(stats.packets_a > 0 && stats.packets_b > 0, "{stats:?}");
    assert!(s.duplicates > 0, "A/B arbitration saw both copies");
    assert_eq!(
        s.foreign_session, 3,
        "line B only: the SSM join filtered line A's junk"
    );
    assert!(s.recovered > 0 && stats.requests_sent > 0 && answered > 0);
    assert_eq!(s.unrecoverable, 0);
    assert_eq!(s.messages, 10_000);
    // Both lines lost the burst, so at least that came back by re-request.
    let burst_msgs: u64 = played.packets[50..=60].iter().map(|p| p.1).sum();
    assert!(s.recovered >= burst_msgs, "{stats:?}");
    eprintln!("{stats:?}");
}
