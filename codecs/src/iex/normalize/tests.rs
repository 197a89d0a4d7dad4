use super::*;
use crate::iex::message::decode;

const TS: i64 = 1_493_132_590_123_456_789; // 2017-04-25 15:03:10.123456789 UTC

/// A message laid out by the specification: type, the type-specific byte, Timestamp, Symbol
/// at 10, then `rest` from offset 18.
fn msg(t: u8, b1: u8, sym: &[u8; 8], rest: &[u8]) -> Vec<u8> {
    let mut m = vec![t, b1];
    m.extend_from_slice(&TS.to_le_bytes());
    if t != b'S' {
        m.extend_from_slice(sym);
    }
    m.extend_from_slice(rest);
    m
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn eastern_time_of_day_follows_daylight_saving_time() {
    const H: u64 = 3_600_000_000_000;
    // 2017-04-25 15:03:10.123456789 UTC is 11:03:10.123456789 EDT.
    assert_eq!(
        eastern_time_of_day_ns(TS),
        11 * H + 3 * 60_000_000_000 + 10_123_456_789
    );
    // 2017-01-10 15:00 UTC is 10:00 EST.
    assert_eq!(eastern_time_of_day_ns(1_484_060_400_000_000_000), 10 * H);
    // DST starts 2017-03-12 07:00 UTC (02:00 EST becomes 03:00 EDT).
    let start: i64 = 1_489_302_000;
    assert_eq!(eastern_offset_s(start - 1), -5 * 3600);
    assert_eq!(eastern_offset_s(start), -4 * 3600);
    assert_eq!(eastern_time_of_day_ns(start * 1_000_000_000), 3 * H);
    // DST ends 2017-11-05 06:00 UTC (02:00 EDT becomes 01:00 EST).
    let end: i64 = 1_509_861_600;
    assert_eq!(eastern_offset_s(end - 1), -4 * 3600);
    assert_eq!(eastern_offset_s(end), -5 * 3600);
    assert_eq!(eastern_time_of_day_ns(end * 1_000_000_000), H);
    // 2024 (a leap year): DST from March 10 07:00 UTC.
    assert_eq!(eastern_offset_s(1_710_054_000 - 1), -5 * 3600);
    assert_eq!(eastern_offset_s(1_710_054_000), -4 * 3600);
    // Before the epoch: 1969-12-31 19:00 EST is the epoch.
    assert_eq!(eastern_time_of_day_ns(0), 19 * H);
    assert_eq!(eastern_time_of_day_ns(-1), 19 * H - 1);
    for t in [i64::MIN, i64::MIN + 1, i64::MAX, -86_400_000_000_000] {
        assert!(eastern_time_of_day_ns(t) < 24 * H, "{t}");
    }
}

#[test]
fn every_message_type_is_normalized_field_for_field() {
    let a = *b"AAPL    ";
    let z = *b"ZIEXT   ";
    let px = |p: i64| p.to_le_bytes();
    let msgs: Vec<Vec<u8>> = vec![
        msg(b'S', b'O', &a, &[]),
        msg(
            b'D',
            0x80,
            &a,
            &cat(&[&100u32.to_le_bytes(), &px(1_700_000), &[1]]),
        ),
        msg(b'H', b'H', &z, b"T1  "),
        msg(b'I', b'A', &a, &[]),
        msg(b'O', b'O', &a, &[]),
        msg(b'P', 1, &a, b"A"),
        msg(b'E', b'O', &a, &[]),
        msg(
            b'Q',
            0x40,
            &a,
            &cat(&[
                &300u32.to_le_bytes(),
                &px(995_000),
                &px(1_005_000),
                &400u32.to_le_bytes(),
            ]),
        ),
        msg(b'8', 1, &a, &cat(&[&700u32.to_le_bytes(), &px(995_000)])),
        msg(b'5', 0, &a, &cat(&[&0u32.to_le_bytes(), &px(-1)])),
        msg(
            b'T',
            0xA0,
            &a,
            &cat(&[&125u32.to_le_bytes(), &px(1_000_000), &9u64.to_le_bytes()]),
        ),
        msg(
            b'B',
            0x08,
            &a,
            &cat(&[&125u32.to_le_bytes(), &px(1_000_000), &9u64.to_le_bytes()]),
        ),
        msg(b'X', b'M', &a, &px(1_010_000)),
        msg(
            b'A',
            b'C',
            &a,
            &cat(&[
                &1_000u32.to_le_bytes(),
                &px(1),
                &px(2),
                &2_000u32.to_le_bytes(),
                b"S",
                &[3],
                &1_493_150_400u32.to_le_bytes(),
                &px(4),
                &px(5),
                &px(6),
                &px(7),
            ]),
        ),
        msg(
            b'a',
            b'5',
            &a,
            &cat(&[
                &u64::MAX.to_le_bytes(),
                &50u32.to_le_bytes(),
                &px(1_020_000),
            ]),
        ),
        msg(
            b'M',
            1,
            &a,
            &cat(&[&77u64.to_le_bytes(), &60u32.to_le_bytes(), &px(1_030_000)]),
        ),
        msg(b'R', 9, &a, &77u64.to_le_bytes()),
        msg(
            b'L',
            0x40,
            &a,
            &cat(&[
                &77u64.to_le_bytes(),
                &10u32.to_le_bytes(),
                &px(1_030_000),
                &11u64.to_le_bytes(),
            ]),
        ),
        msg(b'C', 2, &a, &[]),
    ];
    let mut norm = Normalizer::new();
    norm.set_flags(EnvelopeFlags::Replayed);
    let mut types = Vec::new();
    for (i, bytes) in msgs.iter().enumerate() {
        let m = decode(bytes).unwrap_or_else(|e| panic!("{i}: {e}"));
        let seq = 100 + i as u64;
        let env = norm.normalize(&m, seq, 55).envelope();
        let hdr = env.header();
        assert_eq!((hdr.seq(), hdr.recv_ts_ns()), (seq, 55));
        assert_eq!(hdr.exchange_ts_ns(), eastern_time_of_day_ns(TS));
        assert_eq!((hdr.stock_locate(), hdr.tracking_number()), (0, 0));
        assert_eq!(env.venue(), Venue::Iex);
        assert_eq!(env.flags(), EnvelopeFlags::Replayed);
        // AAPL is seen first (the System Event has no symbol), ZIEXT second.
        let want = match m.symbol() {
            None => 0,
            Some(s) if s == z => 2,
            Some(_) => 1,
        };
        assert_eq!(env.instrument(), want, "{m:?}");
        assert_eq!(type_of_event(env.event_type()), Some(bytes[0]), "{m:?}");
        types.push(bytes[0]);
        let e = env;
        match bytes[0] {
            b'S' => {
                let x = e.event_as_iex_system_event().expect("S");
                assert_eq!((x.timestamp(), x.system_event()), (TS, b'O'));
            }
            b'D' => {
                let x = e.event_as_iex_security_directory().expect("D");
                assert_eq!((x.timestamp(), x.symbol().0, x.flags()), (TS, a, 0x80));
                assert_eq!(
                    (x.round_lot_size(), x.adjusted_poc_price(), x.luld_tier()),
                    (100, 1_700_000, 1)
                );
            }
            b'H' => {
                let x = e.event_as_iex_trading_status().expect("H");
                assert_eq!(
                    (x.timestamp(), x.symbol().0, x.trading_status()),
                    (TS, z, b'H')
                );
                assert_eq!(x.reason().0, *b"T1  ");
            }
            b'I' => {
                let x = e.event_as_iex_retail_liquidity_indicator().expect("I");
                assert_eq!(
                    (x.timestamp(), x.symbol().0, x.retail_liquidity_indicator()),
                    (TS, a, b'A')
                );
            }
            b'O' => {
                let x = e.event_as_iex_operational_halt_status().expect("O");
                assert_eq!(
                    (x.timestamp(), x.symbol().0, x.operational_halt_status()),
                    (TS, a, b'O')
                );
            }
            b'P' => {
                let x = e.event_as_iex_short_sale_price_test_status().expect("P");
                assert_eq!((x.timestamp(), x.symbol().0), (TS, a));
                assert_eq!((x.short_sale_price_test_status(), x.detail()), (1, b'A'));
            }
            b'E' => {
                let x = e.event_as_iex_security_event().expect("E");
                assert_eq!(
                    (x.timestamp(), x.symbol().0, x.security_event()),
                    (TS, a, b'O')
                );
            }
            b'Q' => {
                let x = e.event_as_iex_quote_update().expect("Q");
                assert_eq!((x.timestamp(), x.symbol().0, x.flags()), (TS, a, 0x40));
                assert_eq!(
                    (x.bid_size(), x.bid_price(), x.ask_price(), x.ask_size()),
                    (300, 995_000, 1_005_000, 400)
                );
            }
            b'8' => {
                let x = e.event_as_iex_price_level_update_buy().expect("8");
                assert_eq!((x.timestamp(), x.symbol().0, x.event_flags()), (TS, a, 1));
                assert_eq!((x.size(), x.price()), (700, 995_000));
            }
            b'5' => {
                let x = e.event_as_iex_price_level_update_sell().expect("5");
                assert_eq!((x.timestamp(), x.symbol().0, x.event_flags()), (TS, a, 0));
                assert_eq!((x.size(), x.price()), (0, -1));
            }
            b'T' => {
                let x = e.event_as_iex_trade_report().expect("T");
                assert_eq!(
                    (x.timestamp(), x.symbol().0, x.sale_condition_flags()),
                    (TS, a, 0xA0)
                );
                assert_eq!((x.size(), x.price(), x.trade_id()), (125, 1_000_000, 9));
            }
            b'B' => {
                let x = e.event_as_iex_trade_break().expect("B");
                assert_eq!(
                    (x.timestamp(), x.symbol().0, x.sale_condition_flags()),
                    (TS, a, 0x08)
                );
                assert_eq!((x.size(), x.price(), x.trade_id()), (125, 1_000_000, 9));
            }
            b'X' => {
                let x = e.event_as_iex_official_price().expect("X");
                assert_eq!(
                    (
                        x.timestamp(),
                        x.symbol().0,
                        x.price_type(),
                        x.official_price()
                    ),
                    (TS, a, b'M', 1_010_000)
                );
            }
            b'A' => {
                let x = e.event_as_iex_auction_information().expect("A");
                assert_eq!(
                    (x.timestamp(), x.symbol().0, x.auction_type()),
                    (TS, a, b'C')
                );
                assert_eq!(
                    (
                        x.paired_shares(),
                        x.reference_price(),
                        x.indicative_clearing_price()
                    ),
                    (1_000, 1, 2)
                );
                assert_eq!(
                    (
                        x.imbalance_shares(),
                        x.imbalance_side(),
                        x.extension_number()
                    ),
                    (2_000, b'S', 3)
                );
                assert_eq!(x.scheduled_auction_time(), 1_493_150_400);
                assert_eq!(
                    (x.auction_book_clearing_price(), x.collar_reference_price()),
                    (4, 5)
                );
                assert_eq!((x.lower_auction_collar(), x.upper_auction_collar()), (6, 7));
            }
            b'a' => {
                let x = e.event_as_iex_add_order().expect("a");
                assert_eq!((x.timestamp(), x.symbol().0, x.side()), (TS, a, Side::Sell));
                assert_eq!(
                    (x.order_id(), x.size(), x.price()),
                    (u64::MAX, 50, 1_020_000)
                );
            }
            b'M' => {
                let x = e.event_as_iex_order_modify().expect("M");
                assert_eq!((x.timestamp(), x.symbol().0, x.modify_flags()), (TS, a, 1));
                assert_eq!((x.order_id(), x.size(), x.price()), (77, 60, 1_030_000));
            }
            b'R' => {
                let x = e.event_as_iex_order_delete().expect("R");
                assert_eq!(
                    (x.timestamp(), x.symbol().0, x.reserved(), x.order_id()),
                    (TS, a, 9, 77)
                );
            }
            b'L' => {
                let x = e.event_as_iex_order_executed().expect("L");
                assert_eq!(
                    (x.timestamp(), x.symbol().0, x.sale_condition_flags()),
                    (TS, a, 0x40)
                );
                assert_eq!(
                    (x.order_id(), x.size(), x.price(), x.trade_id()),
                    (77, 10, 1_030_000, 11)
                );
            }
            b'C' => {
                let x = e.event_as_iex_clear_book().expect("C");
                assert_eq!((x.timestamp(), x.symbol().0, x.reserved()), (TS, a, 2));
            }
            t => panic!("no check for {t}"),
        }
    }
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), 19, "every message type once");
    assert_eq!(norm.directory().symbol_of(2), Some(z));
    assert_eq!(norm.refused(), 0);
}

#[test]
fn sides_keep_unknown_bytes() {
    assert_eq!(side_of(b'8'), Side::Buy);
    assert_eq!(side_of(b'5'), Side::Sell);
    assert_eq!(side_of(b'X'), Side(b'X'));
}

#[test]
fn a_full_directory_publishes_instrument_zero_and_counts_it() {
    let mut norm = Normalizer::with_directory(Directory::with_capacity(1));
    let a = msg(b'E', b'O', b"AAPL    ", &[]);
    let b = msg(b'E', b'O', b"MSFT    ", &[]);
    let ids: Vec<u32> = [&a, &b, &a, &b]
        .iter()
        .map(|m| {
            norm.normalize(&decode(m).expect("E"), 1, 0)
                .envelope()
                .instrument()
        })
        .collect();
    assert_eq!(ids, [1, 0, 1, 0]);
    assert_eq!(norm.refused(), 2);
}

#[test]
fn only_iex_kinds_have_an_iex_type() {
    for tag in 0..=u8::MAX {
        let e = fb::Event(tag);
        let named = e.variant_name().is_some_and(|n| n.starts_with("Iex"));
        assert_eq!(type_of_event(e).is_some(), named, "{e:?}");
    }
}

mod eastern_clock {
    use super::super::{EasternClock, eastern_time_of_day_ns};
    use proptest::prelude::*;

    const S: i64 = 1_000_000_000;
    /// The clock changes of 2017 (UTC seconds) and a trading day's open.
    const AROUND: [i64; 3] = [1_489_302_000, 1_509_861_600, 1_493_127_000];

    fn same_as_the_calendar(clock: &mut EasternClock, t: i64) {
        assert_eq!(clock.time_of_day_ns(t), eastern_time_of_day_ns(t), "at {t}");
    }

    #[test]
    fn a_day_s_edges_clock_changes_and_the_extremes_read_as_the_calendar_does() {
        let mut clock = EasternClock::new();
        for at in AROUND {
            for d in [
                -86_400, -3_601, -3_600, -1, 0, 1, 3_599, 3_600, 86_399, 86_400,
            ] {
                for ns in [-1, 0, 1] {
                    same_as_the_calendar(&mut clock, (at + d) * S + ns);
                }
            }
        }
        // Midnight EDT on 2017-04-25, its last nanosecond before, and back again.
        let midnight = 1_493_092_800 * S;
        for t in [midnight - 1, midnight, midnight - 1, midnight + 1] {
            same_as_the_calendar(&mut clock, t);
        }
        for t in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1, 0, -1] {
            same_as_the_calendar(&mut clock, t);
            same_as_the_calendar(&mut clock, t);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// A session's timestamps: runs moving forward in small steps from anywhere, and
        /// jumps across clock changes.
        #[test]
        fn every_timestamp_reads_as_the_calendar_does(
            starts in prop::collection::vec(
                prop_oneof![
                    any::<i64>(),
                    (0usize..AROUND.len(), -200_000i64..200_000)
                        .prop_map(|(i, d)| (AROUND[i] + d) * S),
                ],
                1..8,
            ),
            steps in prop::collection::vec(0i64..20 * 60 * S, 1..64),
        ) {
            let mut clock = EasternClock::new();
            for start in starts {
                let mut t = start;
                for step in &steps {
                    same_as_the_calendar(&mut clock, t);
                    t = t.saturating_add(*step);
                }
            }
        }
    }
}
