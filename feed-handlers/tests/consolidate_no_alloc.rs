//! Proves the consolidator allocates nothing per message: with a counting allocator (its own
//! test binary), a consolidate service set up over two book streams reads both to their end
//! (directories naming 500 symbols per venue, 20,000 `Bbo`s, a lost gap, the two ends of
//! session, and one symbol over the table's bound) and publishes every consolidated event,
//! without one allocation after its construction.

use std::sync::atomic::AtomicBool;

use mdbus_bus::schema::{self as fb, Encoder, HeaderFields};
use mdbus_bus::{Bus, WaitStrategy};
use mdbus_feed_handlers::bookstream::output_ring;
use mdbus_feed_handlers::consolidate::{ConsolidateConfig, ConsolidateService, Polled};

fn symbol(i: u32) -> [u8; 8] {
    let mut s = *b"S       ";
    s[1..6].copy_from_slice(format!("{i:05}").as_bytes());
    s
}

#[test]
fn consolidating_two_book_streams_allocates_nothing_after_setup() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let mut a = bus.publisher("a.book", &output_ring()).unwrap();
    let mut b = bus.publisher("b.book", &output_ring()).unwrap();
    let config = ConsolidateConfig {
        max_symbols: 500,
        ..ConsolidateConfig::default()
    };
    let mut svc = ConsolidateService::new(&bus, &["a.book", "b.book"], "cbbo", &config).unwrap();
    let mut enc = Encoder::new();
    for (venue, p) in [(fb::Venue::Nasdaq, &mut a), (fb::Venue::Iex, &mut b)] {
        let h = |instrument: u32, seq: u64| HeaderFields {
            seq,
            venue,
            instrument,
            stock_locate: if venue == fb::Venue::Nasdaq {
                instrument as u16
            } else {
                0
            },
            ..HeaderFields::default()
        };
        // 501 symbols: the last is over the table's bound.
        for i in 1..=501u32 {
            let msg = match venue {
                fb::Venue::Nasdaq => enc.stock_directory(
                    &h(i, 1),
                    &fb::StockDirectoryFields {
                        stock: symbol(i),
                        ..Default::default()
                    },
                ),
                _ => enc.iex_security_directory(
                    &h(i, 1),
                    &fb::IexSecurityDirectoryFields {
                        symbol: symbol(i),
                        ..Default::default()
                    },
                ),
            };
            p.publish_envelope(&msg).unwrap();
        }
        for k in 0..10_000u64 {
            let i = (k % 501) as u32 + 1;
            let px = 1_000_000 + (k % 17) as i64 * 100;
            let bbo = fb::BboFields {
                bid_price: px,
                bid_size: 100 + k % 7,
                bid_orders: 1,
                ask_price: px + 300,
                ask_size: 200,
                ask_orders: 1,
            };
            p.publish_envelope(&enc.bbo(&h(i, k + 2), &bbo)).unwrap();
            if k == 5_000 {
                let gap = fb::GapNoticeFields {
                    first_missing_seq: k,
                    count: 3,
                    recoverable: false,
                    scope: fb::GapScope::Source,
                };
                p.publish_envelope(&enc.gap_notice(&h(0, k + 2), &gap))
                    .unwrap();
            }
        }
        p.publish_envelope(&enc.end_of_session(&h(0, 20_000), &fb::EndOfSessionFields))
            .unwrap();
    }
    let mut turns = 0u64;
    let mut result = Ok(Polled::Idle);
    let n = allocation_counter::measure(|| {
        loop {
            result = svc.poll(64);
            turns += 1;
            if !matches!(result, Ok(Polled::Worked(_))) || turns > 1_000_000 {
                break;
            }
        }
    })
    .count_total;
    assert!(matches!(result, Ok(Polled::Finished)), "{result:?}");
    assert_eq!(n, 0, "allocations while consolidating");
    let stats = svc.stats();
    assert_eq!(stats.bbos, 20_000);
    assert_eq!(stats.directories, 1_002);
    // The 501st symbol: its two directories and its 2 x 19 Bbos.
    assert_eq!(stats.symbols_full, 2 + 2 * 19);
    assert_eq!(stats.gaps, 2);
    assert!(stats.stale > 0 && stats.ended);
    assert_eq!(svc.consolidator().symbols(), 500);
    // Run on a finished service returns at once.
    let stop = AtomicBool::new(false);
    assert!(svc.run(WaitStrategy::BusySpin, &stop).unwrap().ended);
}
