//! Setup and shutdown of the live handler: clamped receive buffers are reported, setup errors
//! name the address, and the loop stops on request when the feed is silent.

mod live_common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use live_common::{join_bounded, stream_config};
use mdbus_bus::Bus;
use mdbus_feed_handlers::live::{self, Idle, LiveError, LiveFeed, LiveFeedConfig};
use mdbus_feed_handlers::pipeline::FeedPipeline;

fn loopback() -> LiveFeedConfig {
    LiveFeedConfig {
        interface: Ipv4Addr::LOCALHOST,
        ..LiveFeedConfig::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
    }
}

#[test]
fn a_clamped_receive_buffer_is_reported() {
    let path = "/proc/sys/net/core/rmem_max";
    let rmem_max: usize = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let want = rmem_max * 2 + 4096;
    let feed = LiveFeed::bind(LiveFeedConfig {
        rcvbuf: want,
        ..loopback()
    })
    .unwrap();
    assert_eq!(feed.warnings().len(), 1, "{:?}", feed.warnings());
    let w = &feed.warnings()[0];
    assert!(
        w.contains(&format!("{want} bytes asked")) && w.contains("rmem_max"),
        "{w}"
    );
    // A size within the limit is granted quietly.
    let feed = LiveFeed::bind(LiveFeedConfig {
        rcvbuf: 64 << 10,
        ..loopback()
    })
    .unwrap();
    assert_eq!(feed.warnings(), [] as [String; 0]);
}

#[test]
fn setup_errors_name_the_address() {
    // TEST-NET-1: not an address of this host.
    let foreign = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 0);
    let err = LiveFeed::bind(LiveFeedConfig::new(foreign)).unwrap_err();
    assert!(matches!(err, LiveError::Socket { .. }), "{err:?}");
    assert!(err.to_string().contains("binding 192.0.2.1:0"), "{err}");
    // Pinning to a core that does not exist fails before anything runs.
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let mut pipeline = FeedPipeline::new(&bus, "s", &stream_config()).unwrap();
    let stop = AtomicBool::new(false);
    let err = live::run(
        LiveFeedConfig {
            core: Some(100_000),
            ..loopback()
        },
        &mut pipeline,
        &stop,
    )
    .unwrap_err();
    assert!(matches!(err, LiveError::Pin(_)), "{err:?}");
}

#[test]
fn a_silent_feed_stops_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let pipeline = FeedPipeline::new(&bus, "s", &stream_config()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = live::spawn(
        LiveFeedConfig {
            idle: Idle::Sleep(Duration::from_micros(200)),
            ..loopback()
        },
        pipeline,
        stop.clone(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(!handle.is_finished(), "the loop waits for packets");
    stop.store(true, Ordering::Relaxed);
    let stats = join_bounded(handle, &stop, "live handler").unwrap();
    assert!(!stats.ended);
    assert_eq!(stats.sequencer.packets, 0);
    assert_eq!(stats.session, None);
}
