//! Proves the encode, normalize and read paths allocate nothing once warm: a counting global allocator
//! (its own test binary, so no other test shares it) counts the allocations made by the
//! measuring thread while 100,000 messages are encoded and read back.

use mdbus_codecs::fb::{self, Encoded, Encoder, EnvelopeFlags, HeaderFields};
use mdbus_codecs::nasdaq::itch;
use mdbus_codecs::nasdaq::normalize::Normalizer;

/// Runs `f` and returns how many allocations this thread made meanwhile.
fn allocations_during(f: impl FnOnce()) -> u64 {
    allocation_counter::measure(f).count_total
}

const MESSAGES: u64 = 100_000;

/// Encodes message `i` (cycling through several kinds, hot and cold) and folds a few bytes of
/// what it read back into `acc`, so nothing is optimized away.
fn encode_one(i: u64, encode: &mut dyn FnMut(u64, &HeaderFields) -> usize) -> usize {
    let h = HeaderFields {
        seq: i,
        exchange_ts_ns: i * 3,
        recv_ts_ns: i * 5,
        stock_locate: (i % 7) as u16,
        tracking_number: 0,
        flags: if i.is_multiple_of(11) {
            EnvelopeFlags::Replayed
        } else {
            EnvelopeFlags::empty()
        },
        venue: mdbus_codecs::fb::Venue::Nasdaq,
        instrument: (i % 7) as u32,
    };
    encode(i, &h)
}

fn check(msg: Encoded<'_>, i: u64) -> usize {
    let env = fb::read_verified(msg.as_bytes()).expect("valid");
    assert_eq!(env.header().seq(), i);
    msg.len()
}

macro_rules! encode_kinds {
    ($enc:expr, $i:expr, $h:expr) => {{
        let (i, h) = ($i, $h);
        let msg = match i % 6 {
            0 => $enc.add_order(
                h,
                &fb::AddOrderFields {
                    order_reference_number: i,
                    buy_sell_indicator: fb::Side::Buy,
                    shares: 100,
                    stock: *b"AAPL    ",
                    price: 3_201_400,
                },
            ),
            1 => $enc.order_executed(
                h,
                &fb::OrderExecutedFields {
                    order_reference_number: i,
                    executed_shares: 1,
                    match_number: i,
                },
            ),
            2 => $enc.order_delete(
                h,
                &fb::OrderDeleteFields {
                    order_reference_number: i,
                },
            ),
            3 => $enc.stock_directory(
                h,
                &fb::StockDirectoryFields {
                    stock: *b"AAPL    ",
                    round_lot_size: 100,
                    ..Default::default()
                },
            ),
            4 => $enc.gap_notice(
                h,
                &fb::GapNoticeFields {
                    first_missing_seq: i,
                    count: 2,
                    recoverable: true,
                    scope: fb::GapScope::Source,
                },
            ),
            _ => $enc.price_level_update(
                h,
                &fb::PriceLevelUpdateFields {
                    side: fb::Side::Sell,
                    price: 3_203_000,
                    size: 100,
                    order_count: 1,
                    action: fb::BookAction::Change,
                },
            ),
        };
        check(msg, i)
    }};
}

#[test]
fn encoding_and_verified_reading_allocate_nothing_after_warm_up() {
    let mut enc = Encoder::new();
    let mut total = 0usize;
    let mut run = |from: u64, to: u64, total: &mut usize| {
        for i in from..to {
            *total += encode_one(i, &mut |i, h| encode_kinds!(enc, i, h));
        }
    };
    run(0, 100, &mut total); // warm-up: the builder's bookkeeping vectors reach their size
    let n = allocations_during(|| run(100, 100 + MESSAGES, &mut total));
    assert_eq!(n, 0, "{n} allocations while encoding {MESSAGES} messages");
    assert!(total > 0);
}

/// The builder path for every kind (hot-path kinds included).
struct ViaBuilder<'e>(&'e mut Encoder);

macro_rules! via_builder {
    ($($method:ident($fields:ty);)*) => {
        impl ViaBuilder<'_> {
            $(
                fn $method(&mut self, h: &HeaderFields, f: &$fields) -> Encoded<'_> {
                    self.0.encode_with_builder(h, f)
                }
            )*
        }
    };
}
via_builder! {
    add_order(fb::AddOrderFields);
    order_executed(fb::OrderExecutedFields);
    order_delete(fb::OrderDeleteFields);
    stock_directory(fb::StockDirectoryFields);
    gap_notice(fb::GapNoticeFields);
    price_level_update(fb::PriceLevelUpdateFields);
}

#[test]
fn encoding_through_the_builder_allocates_nothing_after_warm_up() {
    let mut inner = Encoder::new();
    let mut enc = ViaBuilder(&mut inner);
    let mut total = 0usize;
    let mut run = |from: u64, to: u64, total: &mut usize| {
        for i in from..to {
            *total += encode_one(i, &mut |i, h| encode_kinds!(enc, i, h));
        }
    };
    run(0, 100, &mut total);
    let n = allocations_during(|| run(100, 100 + MESSAGES, &mut total));
    assert_eq!(n, 0, "{n} allocations while encoding {MESSAGES} messages");
    assert!(total > 0);
}

#[test]
fn normalizing_the_real_session_allocates_nothing_after_warm_up() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/itch/aapl-2020-01-30-10k.itch"
    );
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut norm = Normalizer::new();
    let mut total = 0usize;
    let mut pass = |seq0: u64, total: &mut usize| {
        for (i, (offset, decoded)) in itch::Stream::new(&bytes).enumerate() {
            let msg = decoded.unwrap_or_else(|e| panic!("{path} offset {offset}: {e}"));
            *total += check(norm.normalize(&msg, seq0 + i as u64, 7), seq0 + i as u64);
        }
    };
    pass(0, &mut total); // warm-up
    // 10 passes over the 10,000 messages: 100,000 normalized and verified messages.
    let n = allocations_during(|| {
        for p in 1..=10 {
            pass(p * 1_000_000, &mut total);
        }
    });
    assert_eq!(n, 0, "{n} allocations while normalizing 100,000 messages");
    assert!(total > 0);
}

#[test]
fn the_counter_sees_allocations() {
    // The proof above means something only if the counter counts.
    let n = allocations_during(|| {
        let v: Vec<u64> = (0..10).collect();
        std::hint::black_box(v);
    });
    assert!(n >= 1);
    // And a cold encoder does allocate (its bookkeeping) on first use.
    let n = allocations_during(|| {
        let mut enc = Encoder::new();
        std::hint::black_box(
            enc.heartbeat(&HeaderFields::default(), &fb::HeartbeatFields)
                .len(),
        );
    });
    assert!(n >= 1);
}
