//! Publishes a stream of timestamped ticks; run `subscriber` in another terminal to read it.
//!
//! ```text
//! cargo run --release -p mdbus-bus --example publisher -- [STREAM] [COUNT] [RATE_PER_SEC]
//! cargo run --release -p mdbus-bus --example subscriber -- [STREAM]
//! ```
//!
//! Each message is 32 bytes: a counter, the publisher's clock (ns), and a checksum the
//! subscriber verifies, so a torn or corrupted read would be caught.

use std::time::{Duration, Instant};

use mdbus_bus::{Bus, PublishError, StreamConfig};

/// The message type tag both examples agree on.
const TICK: u32 = 1;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let stream = args.next().unwrap_or_else(|| "example.ticks".to_owned());
    let count: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let rate: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);

    let bus = Bus::new()?;
    let mut publisher = bus.publisher(&stream, &StreamConfig::default())?;
    println!(
        "publishing {count} ticks on {stream:?} at {rate}/s (epoch {:#x}, segment under {})",
        publisher.epoch(),
        bus.root().display()
    );

    let start = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut next = start;
    for i in 0..count {
        while Instant::now() < next {
            std::hint::spin_loop();
        }
        next += interval;
        let now_ns = start.elapsed().as_nanos() as u64;
        match publisher.claim(32, TICK) {
            Ok(mut claim) => {
                claim[0..8].copy_from_slice(&i.to_le_bytes());
                claim[8..16].copy_from_slice(&now_ns.to_le_bytes());
                claim[16..24].copy_from_slice(&(i ^ now_ns).to_le_bytes());
                claim[24..32].copy_from_slice(&0xfeed_u64.to_le_bytes());
                claim.commit();
            }
            // A lossless stream whose subscriber lags: skip this tick and say so at the end.
            Err(PublishError::BackPressured) => {}
            Err(e) => return Err(format!("publish failed: {e:?}").into()),
        }
        // The tick is out and the loop is about to wait for the next: hand its lines to the
        // shared cache, where the subscriber's first look finds them.
        publisher.hand_off();
        if i % 4096 == 0 {
            publisher.heartbeat();
        }
    }
    let stats = publisher.stats();
    println!(
        "done in {:.2?}: {} published, {} back-pressured",
        start.elapsed(),
        stats.published,
        stats.back_pressured
    );
    Ok(())
}
