//! Proves the book builder allocates nothing per message: a counting global allocator (its own
//! test binary, so no other test shares it) counts the allocations made by the measuring
//! thread while the whole AAPL sample (10,000 real ITCH messages) is decoded and applied to a
//! freshly made builder. No warm-up pass: all storage comes from the configuration, so the
//! very first message after construction must not allocate either.

use mdbus_codecs::nasdaq::itch::Stream;
use mdbus_feed_handlers::book::{BookBuilder, BookConfig, BookUpdate, OrderEvent, Outcome};

/// Runs `f` and returns how many allocations this thread made meanwhile.
fn allocations_during(f: impl FnOnce()) -> u64 {
    allocation_counter::measure(f).count_total
}

const AAPL: &[u8] = include_bytes!("../../codecs/testdata/itch/aapl-2020-01-30-10k.itch");

/// Decodes and applies every message; returns (events applied, updates published, a checksum
/// of the updates so nothing is optimized away).
fn replay(b: &mut BookBuilder) -> (u64, u64, u64) {
    let (mut events, mut updates, mut sum) = (0u64, 0u64, 0u64);
    for (_, msg) in Stream::new(AAPL) {
        let Ok(msg) = msg else { continue };
        if let Some(ev) = OrderEvent::from_itch(&msg) {
            events += 1;
            let o = b.apply(&ev, &mut |u| {
                updates += 1;
                sum = sum.wrapping_add(match u {
                    BookUpdate::Level { price, shares, .. } => u64::from(price) ^ shares,
                    BookUpdate::Bbo(x) => x.bid_size ^ x.ask_size,
                });
            });
            sum = sum.wrapping_add(o as u64);
        }
    }
    (events, updates, sum)
}

#[test]
fn whole_file_after_construction_allocates_nothing() {
    // Sized by configuration for the sample: 216 orders and 83 bid / 66 ask levels at most.
    let mut b = BookBuilder::new(BookConfig {
        max_orders: 4096,
        max_instruments: 64,
        levels_per_side_hint: 128,
    })
    .expect("config");
    let mut result = (0, 0, 0);
    let n = allocations_during(|| result = replay(&mut b));
    assert_eq!(n, 0, "allocations while applying the AAPL sample");
    let (events, updates, _) = result;
    assert_eq!(events, 4758 + 4083 + 849 + 240 + 7 + 6 + 2);
    assert!(updates > events, "{updates} updates for {events} events");
    assert_eq!(b.resting_orders(13), 215);
    assert_eq!(b.counters().level_growths, 0);
}

#[test]
fn refusing_orders_allocates_nothing() {
    // A table far too small: every refusal, unknown reference and counter path runs.
    let mut b = BookBuilder::new(BookConfig {
        max_orders: 16,
        max_instruments: 1,
        levels_per_side_hint: 128,
    })
    .expect("config");
    let n = allocations_during(|| {
        replay(&mut b);
    });
    assert_eq!(n, 0);
    assert!(b.counters().capacity_exhausted > 0);
    assert!(b.counters().unknown_refs > 0);
    // The builder stays usable after a reset, still without allocating.
    b.reset();
    let mut unknown = Outcome::Applied;
    let n = allocations_during(|| {
        unknown = b.apply(
            &OrderEvent::Delete {
                locate: 13,
                order_ref: 1,
            },
            &mut |_| {},
        );
    });
    assert_eq!((n, unknown), (0, Outcome::UnknownRef));
}

#[test]
fn the_counter_sees_allocations() {
    // The harness can fail: an allocation inside the measured closure is counted.
    let n = allocations_during(|| {
        std::hint::black_box(Vec::<u64>::with_capacity(8));
    });
    assert_eq!(n, 1);
}
