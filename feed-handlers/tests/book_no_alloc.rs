//! Proves the book builder allocates nothing per message: a counting global allocator (its own
//! test binary, so no other test shares it) counts the allocations made by the measuring
//! thread while the whole AAPL sample (10,000 real ITCH messages) is decoded and applied to a
//! freshly made builder. No warm-up pass: all storage comes from the configuration, so the
//! very first message after construction must not allocate either.

use mdbus_bus::ENVELOPE_MSG_TYPE;
use mdbus_bus::schema::{self as fb, Encoder, HeaderFields};
use mdbus_codecs::nasdaq::itch::Stream;
use mdbus_feed_handlers::book::{
    BookBuilder, BookConfig, BookUpdate, EnvelopeBooks, GapPolicy, LevelEvent, MAX_STAGED_LEVELS,
    OrderEvent, Outcome, Side,
};

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

/// A level of `locate` at `price`: its shares and orders vary with `i` (0 deletes).
fn level(locate: u16, side: Side, price: u32, i: u64) -> LevelEvent {
    LevelEvent {
        locate,
        side,
        price,
        shares: i % 5 * 100,
        orders: (i % 3) as u32,
    }
}

#[test]
fn price_levels_allocate_nothing() {
    let mut b = BookBuilder::new(BookConfig {
        max_orders: 1,
        max_instruments: 8,
        levels_per_side_hint: 64,
    })
    .expect("config");
    let (mut updates, mut outcomes) = (0u64, 0u64);
    let n = allocations_during(|| {
        let mut out = |_: BookUpdate| updates += 1;
        for i in 0..20_000u64 {
            let locate = (i % 10) as u16; // more instruments than books: some are refused
            let side = if i % 2 == 0 { Side::Bid } else { Side::Ask };
            let price = 1_000 + (i % 37) as u32 + if side == Side::Ask { 100 } else { 0 };
            let ev = level(locate, side, price, i);
            // Events of up to seven levels, flushed once; every sixth applied at once.
            let o = if i % 6 == 0 {
                b.apply_level(&ev, &mut out)
            } else {
                b.set_level(&ev, &mut out)
            };
            outcomes += o as u64;
            if i % 7 == 0 {
                b.flush_levels(&mut out);
            }
        }
        // More levels than the staging room holds: published early, counted.
        for p in 0..=MAX_STAGED_LEVELS as u32 {
            let ev = LevelEvent {
                shares: u64::from(p) + 1,
                ..level(1, Side::Bid, 10_000 + p % 60, 1)
            };
            b.set_level(&ev, &mut out);
        }
        b.flush_levels(&mut out);
        // Mixing shapes on one instrument is refused without allocating.
        let add = OrderEvent::Add {
            locate: 1,
            order_ref: 1,
            side: Side::Bid,
            price: 1,
            shares: 1,
        };
        outcomes += b.apply(&add, &mut out) as u64;
    });
    assert_eq!(n, 0, "allocations while applying price levels");
    assert!(updates > 10_000, "{updates} updates");
    let c = b.counters();
    assert!(
        c.unknown_levels > 0 && c.instruments_exhausted > 0 && c.mixed == 1,
        "{c:?}"
    );
    assert_eq!((c.batch_overflows, c.level_growths), (1, 0));
    std::hint::black_box(outcomes);
}

#[test]
fn envelope_books_allocate_nothing() {
    // Envelopes of every kind the summaries read, encoded beforehand.
    let mut enc = Encoder::new();
    let h = |locate| HeaderFields {
        seq: 1,
        stock_locate: locate,
        ..HeaderFields::default()
    };
    let records: Vec<Vec<u8>> = vec![
        enc.encode(
            &h(13),
            &fb::AddOrderFields {
                order_reference_number: 1,
                buy_sell_indicator: fb::Side::Buy,
                shares: 100,
                stock: *b"AAPL    ",
                price: 3_201_400,
            },
        )
        .to_vec(),
        enc.encode(
            &h(13),
            &fb::OrderDeleteFields {
                order_reference_number: 1,
            },
        )
        .to_vec(),
        enc.encode(
            &h(14),
            &fb::PriceLevelUpdateFields {
                side: fb::Side::Sell,
                price: 500,
                size: 300,
                order_count: 2,
                action: fb::BookAction::New,
            },
        )
        .to_vec(),
        enc.encode(
            &h(0),
            &fb::GapNoticeFields {
                first_missing_seq: 1,
                count: 1,
                recoverable: false,
                scope: fb::GapScope::Source,
            },
        )
        .to_vec(),
        b"not an envelope".to_vec(),
    ];
    for policy in [GapPolicy::CountLost, GapPolicy::CountAllResetOnLoss] {
        let config = BookConfig {
            max_orders: 16,
            max_instruments: 4,
            levels_per_side_hint: 4,
        };
        let mut books = EnvelopeBooks::new(config, policy).expect("config");
        let n = allocations_during(|| {
            for _ in 0..1_000 {
                for r in &records {
                    books.observe_record(ENVELOPE_MSG_TYPE, r);
                }
            }
        });
        assert_eq!(n, 0, "allocations while observing envelopes ({policy:?})");
        assert_eq!((books.messages(), books.invalid()), (2_000, 1_000));
    }
}

#[test]
fn the_counter_sees_allocations() {
    // The harness can fail: an allocation inside the measured closure is counted.
    let n = allocations_during(|| {
        std::hint::black_box(Vec::<u64>::with_capacity(8));
    });
    assert_eq!(n, 1);
}
