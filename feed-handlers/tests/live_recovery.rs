//! The live handler over real UDP sockets on loopback: a test exchange plays the real AAPL
//! session as MoldUDP64 packets, dropping some on purpose, and answers re-requests from a
//! retransmission store; the handler publishes into a bus stream that a subscriber checks.

mod live_common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use live_common::*;
use mdbus_bus::Bus;
use mdbus_codecs::sequencer::{Backoff, LateJoin, SequencerConfig};
use mdbus_feed_handlers::live::{Idle, LiveFeed, LiveFeedConfig, LiveStats};
use mdbus_feed_handlers::net::fault::FaultConfig;
use mdbus_feed_handlers::pipeline::FeedPipeline;
use mdbus_shm::counters::{CounterSnapshot, list_counters};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

struct Run {
    stats: LiveStats,
    played: Played,
    collected: Collected,
    answered: u64,
    /// The counter files in the bus root after the run.
    counters: Vec<CounterSnapshot>,
}

/// Runs the whole session through a handler on loopback, line A dropping per `drop`, the
/// server holding `store_capacity` messages.
fn run(drop: impl Fn(usize) -> bool + Send + 'static, store_capacity: usize) -> Run {
    run_with(drop, store_capacity, FaultConfig::default(), false)
}

/// [`run`], with `fault` injected by the handler and, if `counters`, its counters published.
fn run_with(
    drop: impl Fn(usize) -> bool + Send + 'static,
    store_capacity: usize,
    fault: FaultConfig,
    counters: bool,
) -> Run {
    let messages = Arc::new(aapl());
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let pipeline = FeedPipeline::new(&bus, "aapl", &stream_config()).unwrap();
    let mut sub = subscriber(&bus, "aapl");

    let server_sock = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let std::net::SocketAddr::V4(server_addr) = server_sock.local_addr().unwrap() else {
        unreachable!("bound to an IPv4 address")
    };
    let config = LiveFeedConfig {
        interface: LOCALHOST,
        request_server: Some(server_addr),
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
        fault,
        ..LiveFeedConfig::new(SocketAddrV4::new(LOCALHOST, 0))
    };
    let mut feed = LiveFeed::bind(config).unwrap();
    if counters {
        feed.publish_counters(&bus, "aapl").unwrap();
    }
    let dest = feed.line_a_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handler = feed.spawn(pipeline, stop.clone()).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let store = store(store_capacity);
    let server = spawn_server(None, move || server_sock, store.clone(), done.clone());
    let exchange = spawn_exchange(
        None,
        LOCALHOST,
        None,
        messages.clone(),
        vec![Line {
            dest,
            drop: Box::new(drop),
        }],
        store,
        done.clone(),
    );
    let stats = join_bounded(handler, &stop, "live handler");
    done.store(true, Ordering::Relaxed);
    let played = join_bounded(exchange, &done, "exchange");
    let answered = join_bounded(server, &done, "server");
    let stats = stats.expect("the handler ran");
    let collected = collect(&mut sub, &messages);
    let (counters, errors) = list_counters(dir.path()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    Run {
        stats,
        played,
        collected,
        answered,
        counters,
    }
}

#[test]
fn every_dropped_message_is_recovered_and_published_in_order() {
    // Every 7th packet, and a burst of 11 in a row.
    let r = run(|i| i % 7 == 6 || (100..=110).contains(&i), 1 << 20);
    let lost = check_tiling(&r.collected.items, 10_000);
    assert_eq!(lost, [], "nothing may be lost: {:?}", r.stats);
    assert_eq!(r.collected.end, Some(10_001));
    let dropped = r.played.dropped[0];
    assert!(dropped > 1000, "the exchange dropped only {dropped}");
    let s = &r.stats;
    assert!(s.ended);
    assert_eq!(s.session, Some(SESSION));
    assert!(
        s.sequencer.recovered >= dropped,
        "recovered {} of {dropped}",
        s.sequencer.recovered
    );
    assert_eq!(s.sequencer.unrecoverable, 0);
    assert_eq!(s.sequencer.messages, 10_000);
    assert!(s.requests_sent > 0 && s.packets_recovery > 0 && r.answered > 0);
    assert!(
        !r.collected.recovering.is_empty(),
        "recoverable gaps announced"
    );
    assert_eq!(s.pipeline.messages, 10_000);
    assert_eq!(s.pipeline.decode_errors + s.pipeline.publish_errors, 0);
    assert_eq!(s.pipeline.lost, 0);
    eprintln!("{s:?}");
}

#[test]
fn loss_beyond_the_store_is_published_as_an_exact_gap() {
    // The server keeps only the last 5 messages (fewer than a packet holds), so a packet
    // lost is gone for good by the time the next one reveals the loss.
    let burst = 100..=104;
    let r = run(move |i| burst.contains(&i), 5);
    let lost = check_tiling(&r.collected.items, 10_000);
    let (first, _) = r.played.packets[100];
    let count: u64 = r.played.packets[100..=104].iter().map(|p| p.1).sum();
    assert_eq!(r.played.dropped[0], count);
    assert_eq!(
        lost,
        [(first, count)],
        "exactly the dropped messages, in place"
    );
    assert_eq!(r.collected.end, Some(10_001));
    let s = &r.stats;
    assert!(s.ended);
    assert_eq!(s.sequencer.unrecoverable, count);
    assert!(s.sequencer.not_available >= 1, "the server said so: {s:?}");
    assert_eq!(s.sequencer.messages, 10_000 - count);
    assert_eq!(s.pipeline.lost, count);
    eprintln!("{s:?}");
}

#[test]
fn the_handler_publishes_its_counters_for_mdbus_stat() {
    let r = run_with(|i| i % 50 == 49, 1 << 20, FaultConfig::default(), true);
    assert_eq!(check_tiling(&r.collected.items, 10_000), []);
    let feed: Vec<_> = r.counters.iter().filter(|c| c.role == "feed").collect();
    assert_eq!(feed.len(), 1, "one feed counter file: {:?}", r.counters);
    let c = feed[0];
    assert_eq!(c.stream, "aapl");
    assert!(c.finished, "marked finished at the end: {c:?}");
    assert!(c.updates > 0);
    let s = &r.stats;
    // The final counters are the ones returned.
    assert_eq!(c.get("pipeline.messages"), Some(10_000));
    assert_eq!(c.get("sequencer.messages"), Some(10_000));
    assert_eq!(c.get("packets_a"), Some(s.packets_a));
    assert_eq!(c.get("packets_recovery"), Some(s.packets_recovery));
    assert_eq!(c.get("requests_sent"), Some(s.requests_sent));
    assert_eq!(c.get("sequencer.recovered"), Some(s.sequencer.recovered));
    assert!(s.sequencer.recovered > 0, "{s:?}");
    assert_eq!(c.get("sequencer.unrecoverable"), Some(0));
    assert_eq!(c.get("ended"), Some(1));
    // Without publish_counters, nothing is written.
    let quiet = run(|_| false, 1 << 20);
    assert_eq!(quiet.counters, []);
}

#[test]
fn a_seeded_drop_at_the_handler_is_recovered_by_re_request() {
    // The exchange drops nothing: all loss is the handler's own injector's, exact and seeded.
    let fault: FaultConfig = "drop-seq=500-520,drop-seq=4000,drop=0.02,seed=17"
        .parse()
        .unwrap();
    let r = run_with(|_| false, 1 << 20, fault, true);
    assert_eq!(r.played.dropped[0], 0);
    let lost = check_tiling(&r.collected.items, 10_000);
    assert_eq!(lost, [], "nothing may be lost: {:?}", r.stats);
    assert_eq!(r.collected.end, Some(10_001));
    let s = &r.stats;
    assert!(s.ended);
    assert!(s.fault_dropped > 2, "the injector dropped packets: {s:?}");
    // At least the 21 messages of drop-seq 500-520 and message 4000.
    assert!(s.sequencer.recovered >= 22, "{s:?}");
    assert!(s.requests_sent > 0 && s.packets_recovery > 0 && r.answered > 0);
    assert_eq!(s.sequencer.unrecoverable, 0);
    assert_eq!(s.pipeline.messages, 10_000);
    let c = r
        .counters
        .iter()
        .find(|c| c.role == "feed")
        .expect("feed counters");
    assert_eq!(c.get("fault_dropped"), Some(s.fault_dropped));
}
