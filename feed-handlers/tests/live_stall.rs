//! The live handler over real UDP sockets on loopback, publishing into a lossless stream whose
//! only subscriber has stopped reading: the handler must still follow the whole session to
//! its end, giving up what the full ring refuses and reporting it.

mod live_common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use live_common::*;
use mdbus_bus::{Bus, Mode, StreamConfig, SubscribeOptions};
use mdbus_codecs::sequencer::{LateJoin, SequencerConfig};
use mdbus_feed_handlers::live::{Idle, LiveFeed, LiveFeedConfig};
use mdbus_feed_handlers::pipeline::FeedPipeline;

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[test]
fn a_stopped_lossless_subscriber_does_not_hold_the_feed_back() {
    let messages = Arc::new(aapl());
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    // A ring that holds a few hundred of the 10,000 messages.
    let ring = StreamConfig {
        capacity: 64 << 10,
        max_msg_len: 1024,
        mode: Mode::Lossless,
        ..StreamConfig::default()
    };
    // The default back-pressure timeout (100 ms): waited for once per record, the session
    // would take more than 15 minutes.
    let pipeline = FeedPipeline::new(&bus, "aapl", &ring).unwrap();
    // Lossless, and reads nothing until the handler is done.
    let mut sub = bus
        .subscriber("aapl", &SubscribeOptions::default())
        .unwrap();

    let config = LiveFeedConfig {
        interface: LOCALHOST,
        rcvbuf: 4 << 20,
        idle: Idle::Yield,
        sequencer: SequencerConfig {
            session: Some(SESSION),
            late_join: LateJoin::FromSequence(1),
            ..SequencerConfig::default()
        },
        ..LiveFeedConfig::new(SocketAddrV4::new(LOCALHOST, 0))
    };
    let feed = LiveFeed::bind(config).unwrap();
    let dest = feed.line_a_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handler = feed.spawn(pipeline, stop.clone()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let exchange = spawn_exchange(
        None,
        LOCALHOST,
        None,
        messages.clone(),
        vec![Line {
            dest,
            drop: Box::new(|_| false),
        }],
        store(16),
        done.clone(),
    );
    let stats = join_bounded(handler, &stop, "live handler").expect("the handler ran");
    done.store(true, Ordering::Relaxed);
    join_bounded(exchange, &done, "exchange");

    let p = &stats.pipeline;
    assert!(stats.ended, "{stats:?}");
    assert_eq!(stats.sequencer.unrecoverable, 0, "{stats:?}");
    assert_eq!(p.messages, 10_000, "{stats:?}");
    // One stall while the session runs; the end-of-session event and the drop notice at the
    // close each wait once more, then are given up too.
    assert_eq!(p.stalls, 3, "{p:?}");
    // Every message the ring did not take is counted as dropped and lost; so is the end of
    // session (a record, not a message); the drop notice could not go out and says so.
    assert!(p.published > 0 && p.published < 10_000, "{p:?}");
    assert_eq!(p.dropped, 10_001 - p.published, "{p:?}");
    assert_eq!(p.lost, 10_000 - p.published, "{p:?}");
    assert_eq!(p.publish_errors, p.dropped, "{p:?}");
    assert_eq!((p.drop_notices, p.notices_unpublished), (0, 1), "{p:?}");

    // What the ring took is intact and in order.
    let got = collect(&mut sub, &messages);
    let want: Vec<Item> = (1..=p.published).map(Item::Msg).collect();
    assert_eq!(got.items, want);
    assert_eq!(got.end, None);
}
