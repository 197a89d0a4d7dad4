use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use mdbus_codecs::nasdaq::itch::{self, MessageFields, Price4};
use proptest::prelude::*;

use super::*;

const L: u16 = 7;

fn builder(max_orders: usize) -> BookBuilder {
    BookBuilder::new(BookConfig {
        max_orders,
        max_instruments: 4,
        levels_per_side_hint: 8,
    })
    .expect("small config")
}

fn add(order_ref: u64, side: Side, price: u32, shares: u32) -> OrderEvent {
    OrderEvent::Add {
        locate: L,
        order_ref,
        side,
        price,
        shares,
    }
}

/// Applies `ev`, returning the outcome and the updates it published.
fn run(b: &mut BookBuilder, ev: OrderEvent) -> (Outcome, Vec<BookUpdate>) {
    let mut v = Vec::new();
    let o = b.apply(&ev, &mut |u| v.push(u));
    (o, v)
}

fn level(side: Side, price: u32, shares: u64, orders: u32, action: LevelAction) -> BookUpdate {
    BookUpdate::Level {
        locate: L,
        side,
        price,
        shares,
        orders,
        action,
    }
}

/// A BBO update; each side `(price, shares, orders)`.
fn bbo(bid: Option<(u32, u64, u32)>, ask: Option<(u32, u64, u32)>) -> BookUpdate {
    BookUpdate::Bbo(Bbo {
        locate: L,
        bid_price: bid.map(|x| x.0),
        bid_size: bid.map_or(0, |x| x.1),
        bid_orders: bid.map_or(0, |x| x.2),
        ask_price: ask.map(|x| x.0),
        ask_size: ask.map_or(0, |x| x.1),
        ask_orders: ask.map_or(0, |x| x.2),
    })
}

#[test]
fn add_publishes_levels_and_top() {
    let mut b = builder(16);
    let (o, u) = run(&mut b, add(1, Side::Bid, 100, 10));
    assert_eq!(o, Outcome::Applied);
    assert_eq!(
        u,
        [
            level(Side::Bid, 100, 10, 1, LevelAction::New),
            bbo(Some((100, 10, 1)), None)
        ]
    );
    // Same price: the level and the top size change.
    let (_, u) = run(&mut b, add(2, Side::Bid, 100, 5));
    assert_eq!(
        u,
        [
            level(Side::Bid, 100, 15, 2, LevelAction::Change),
            bbo(Some((100, 15, 2)), None)
        ]
    );
    // A worse bid: a new level, the top stays.
    let (_, u) = run(&mut b, add(3, Side::Bid, 99, 7));
    assert_eq!(u, [level(Side::Bid, 99, 7, 1, LevelAction::New)]);
    let (_, u) = run(&mut b, add(4, Side::Ask, 101, 3));
    assert_eq!(
        u,
        [
            level(Side::Ask, 101, 3, 1, LevelAction::New),
            bbo(Some((100, 15, 2)), Some((101, 3, 1)))
        ]
    );
    assert_eq!(b.resting_orders(L), 4);
    let bids: Vec<Level> = b.levels(L, Side::Bid).collect();
    assert_eq!(
        bids,
        [
            Level {
                price: 100,
                orders: 2,
                shares: 15
            },
            Level {
                price: 99,
                orders: 1,
                shares: 7
            }
        ]
    );
    assert_eq!(
        b.order(3),
        Some(&Order {
            order_ref: 3,
            price: 99,
            shares: 7,
            locate: L,
            side: Side::Bid
        })
    );
    assert_eq!(b.counters().crossed + b.counters().locked, 0);
}

#[test]
fn partial_and_full_executions() {
    let mut b = builder(16);
    run(&mut b, add(1, Side::Ask, 200, 100));
    run(&mut b, add(2, Side::Ask, 200, 50));
    let (o, u) = run(
        &mut b,
        OrderEvent::Execute {
            locate: L,
            order_ref: 1,
            shares: 30,
        },
    );
    assert_eq!(o, Outcome::Applied);
    assert_eq!(
        u,
        [
            level(Side::Ask, 200, 120, 2, LevelAction::Change),
            bbo(None, Some((200, 120, 2)))
        ]
    );
    assert_eq!(b.order(1).map(|o| o.shares), Some(70));
    // The rest of order 1 at another price (C): the order leaves, the level stays.
    let (_, u) = run(
        &mut b,
        OrderEvent::ExecuteWithPrice {
            locate: L,
            order_ref: 1,
            shares: 70,
            price: 199,
            printable: false,
        },
    );
    assert_eq!(
        u,
        [
            level(Side::Ask, 200, 50, 1, LevelAction::Change),
            bbo(None, Some((200, 50, 1)))
        ]
    );
    assert!(b.order(1).is_none());
    assert_eq!(b.resting_orders(L), 1);
    let (_, u) = run(
        &mut b,
        OrderEvent::Execute {
            locate: L,
            order_ref: 2,
            shares: 50,
        },
    );
    assert_eq!(
        u,
        [
            level(Side::Ask, 200, 0, 0, LevelAction::Delete),
            bbo(None, None)
        ]
    );
    assert_eq!(b.resting_orders(L), 0);
    let st = b.stats(L).expect("book");
    assert_eq!((st.executed_shares, st.prints), (150, 3));
    assert_eq!(b.counters().overfills, 0);
}

#[test]
fn cancel_and_overfill() {
    let mut b = builder(16);
    run(&mut b, add(1, Side::Bid, 100, 10));
    let (_, u) = run(
        &mut b,
        OrderEvent::Cancel {
            locate: L,
            order_ref: 1,
            shares: 4,
        },
    );
    assert_eq!(
        u,
        [
            level(Side::Bid, 100, 6, 1, LevelAction::Change),
            bbo(Some((100, 6, 1)), None)
        ]
    );
    // Cancelling more than is left removes the order and is counted.
    let (o, u) = run(
        &mut b,
        OrderEvent::Cancel {
            locate: L,
            order_ref: 1,
            shares: 9,
        },
    );
    assert_eq!(o, Outcome::Applied);
    assert_eq!(
        u,
        [
            level(Side::Bid, 100, 0, 0, LevelAction::Delete),
            bbo(None, None)
        ]
    );
    assert_eq!(b.counters().overfills, 1);
    assert_eq!(b.live_orders(), 0);
    // A cancel does not print.
    assert_eq!(b.stats(L).map(|s| s.prints), Some(0));
}

#[test]
fn delete_and_unknown_refs() {
    let mut b = builder(16);
    run(&mut b, add(1, Side::Bid, 100, 10));
    run(&mut b, add(2, Side::Bid, 100, 20));
    let (_, u) = run(
        &mut b,
        OrderEvent::Delete {
            locate: L,
            order_ref: 1,
        },
    );
    assert_eq!(
        u,
        [
            level(Side::Bid, 100, 20, 1, LevelAction::Change),
            bbo(Some((100, 20, 1)), None)
        ]
    );
    for ev in [
        OrderEvent::Delete {
            locate: L,
            order_ref: 1,
        },
        OrderEvent::Cancel {
            locate: L,
            order_ref: 99,
            shares: 1,
        },
        OrderEvent::Execute {
            locate: L,
            order_ref: 99,
            shares: 5,
        },
        OrderEvent::ExecuteWithPrice {
            locate: L,
            order_ref: 99,
            shares: 6,
            price: 1,
            printable: true,
        },
        OrderEvent::Replace {
            locate: L,
            old_ref: 99,
            new_ref: 100,
            shares: 1,
            price: 1,
        },
        // Order 2 is live, but on locate 7, not 8.
        OrderEvent::Delete {
            locate: 8,
            order_ref: 2,
        },
    ] {
        let (o, u) = run(&mut b, ev);
        assert_eq!(o, Outcome::UnknownRef, "{ev:?}");
        assert!(u.is_empty(), "{ev:?}");
    }
    assert_eq!(b.counters().unknown_refs, 6);
    let st = b.stats(L).expect("book");
    assert_eq!(st.unknown_refs, 5);
    // Unknown executions still print.
    assert_eq!((st.executed_shares, st.prints), (11, 2));
    assert_eq!(b.stats(8).map(|s| s.unknown_refs), Some(1));
    assert_eq!(b.resting_orders(L), 1);
    assert_eq!(b.order(2).map(|o| o.shares), Some(20));
}

#[test]
fn replace_across_levels() {
    let mut b = builder(16);
    run(&mut b, add(1, Side::Bid, 100, 10));
    run(&mut b, add(2, Side::Bid, 99, 5));
    // Up to a new best price: the old level goes, a new one appears, the top moves.
    let (o, u) = run(
        &mut b,
        OrderEvent::Replace {
            locate: L,
            old_ref: 1,
            new_ref: 11,
            shares: 30,
            price: 101,
        },
    );
    assert_eq!(o, Outcome::Applied);
    assert_eq!(
        u,
        [
            level(Side::Bid, 100, 0, 0, LevelAction::Delete),
            level(Side::Bid, 101, 30, 1, LevelAction::New),
            bbo(Some((101, 30, 1)), None)
        ]
    );
    assert!(b.order(1).is_none());
    assert_eq!(
        b.order(11),
        Some(&Order {
            order_ref: 11,
            price: 101,
            shares: 30,
            locate: L,
            side: Side::Bid
        })
    );
    // Down onto an existing level.
    let (_, u) = run(
        &mut b,
        OrderEvent::Replace {
            locate: L,
            old_ref: 11,
            new_ref: 12,
            shares: 1,
            price: 99,
        },
    );
    assert_eq!(
        u,
        [
            level(Side::Bid, 101, 0, 0, LevelAction::Delete),
            level(Side::Bid, 99, 6, 2, LevelAction::Change),
            bbo(Some((99, 6, 2)), None)
        ]
    );
    // Same price, new size: one level change.
    let (_, u) = run(
        &mut b,
        OrderEvent::Replace {
            locate: L,
            old_ref: 12,
            new_ref: 13,
            shares: 4,
            price: 99,
        },
    );
    assert_eq!(
        u,
        [
            level(Side::Bid, 99, 9, 2, LevelAction::Change),
            bbo(Some((99, 9, 2)), None)
        ]
    );
    assert_eq!(b.resting_orders(L), 2);
    // Onto a live reference: the old order goes, nothing is added, counted.
    let (o, u) = run(
        &mut b,
        OrderEvent::Replace {
            locate: L,
            old_ref: 13,
            new_ref: 2,
            shares: 4,
            price: 50,
        },
    );
    assert_eq!(o, Outcome::DuplicateAdd);
    assert_eq!(
        u,
        [
            level(Side::Bid, 99, 5, 1, LevelAction::Change),
            bbo(Some((99, 5, 1)), None)
        ]
    );
    assert_eq!(b.counters().duplicate_adds, 1);
    assert_eq!(b.resting_orders(L), 1);
    // To 0 shares: the order just leaves.
    let (o, _) = run(
        &mut b,
        OrderEvent::Replace {
            locate: L,
            old_ref: 2,
            new_ref: 3,
            shares: 0,
            price: 99,
        },
    );
    assert_eq!(o, Outcome::EmptyOrder);
    assert_eq!((b.resting_orders(L), b.live_orders()), (0, 0));
    assert_eq!(b.levels(L, Side::Bid).count(), 0);
}

#[test]
fn trades_print_without_book_change() {
    let mut b = builder(16);
    let (o, u) = run(
        &mut b,
        OrderEvent::Trade {
            locate: L,
            shares: 300,
            price: 5,
        },
    );
    assert_eq!(o, Outcome::Applied);
    assert!(u.is_empty());
    let st = b.stats(L).expect("book");
    assert_eq!(
        (st.executed_shares, st.prints, st.resting_orders),
        (300, 1, 0)
    );
}

#[test]
fn duplicate_and_empty_adds_are_counted() {
    let mut b = builder(16);
    run(&mut b, add(1, Side::Bid, 100, 10));
    let (o, u) = run(&mut b, add(1, Side::Ask, 200, 10));
    assert_eq!((o, u.len()), (Outcome::DuplicateAdd, 0));
    let (o, u) = run(&mut b, add(2, Side::Ask, 200, 0));
    assert_eq!((o, u.len()), (Outcome::EmptyOrder, 0));
    let (o, _) = run(
        &mut b,
        OrderEvent::Invalid {
            locate: L,
            order_ref: 3,
            reason: InvalidReason::BadSide(b'Z'),
        },
    );
    assert_eq!(o, Outcome::Invalid);
    let c = b.counters();
    assert_eq!((c.duplicate_adds, c.empty_orders, c.invalid), (1, 1, 1));
    assert_eq!(b.order(1).map(|o| o.side), Some(Side::Bid));
}

#[test]
fn crossed_and_locked_are_counted() {
    let mut b = builder(16);
    run(&mut b, add(1, Side::Bid, 100, 1));
    run(&mut b, add(2, Side::Ask, 100, 1)); // locked
    run(&mut b, add(3, Side::Ask, 99, 1)); // crossed
    run(&mut b, add(4, Side::Bid, 50, 1)); // still crossed
    run(
        &mut b,
        OrderEvent::Delete {
            locate: L,
            order_ref: 3,
        },
    ); // locked again
    run(
        &mut b,
        OrderEvent::Delete {
            locate: L,
            order_ref: 2,
        },
    ); // one-sided
    let c = b.counters();
    assert_eq!((c.crossed, c.locked), (2, 2));
    let st = b.stats(L).expect("book");
    assert_eq!((st.crossed, st.locked), (2, 2));
}

#[test]
fn capacity_exhausted_is_counted_not_fatal() {
    let mut b = builder(2);
    assert_eq!(run(&mut b, add(1, Side::Bid, 100, 1)).0, Outcome::Applied);
    assert_eq!(run(&mut b, add(2, Side::Bid, 100, 1)).0, Outcome::Applied);
    let (o, u) = run(&mut b, add(3, Side::Bid, 100, 1));
    assert_eq!((o, u.len()), (Outcome::CapacityExhausted, 0));
    assert_eq!(b.counters().capacity_exhausted, 1);
    // Its later events are unknown references.
    let (o, _) = run(
        &mut b,
        OrderEvent::Delete {
            locate: L,
            order_ref: 3,
        },
    );
    assert_eq!(o, Outcome::UnknownRef);
    // Room again after a delete.
    run(
        &mut b,
        OrderEvent::Delete {
            locate: L,
            order_ref: 1,
        },
    );
    assert_eq!(run(&mut b, add(3, Side::Bid, 100, 1)).0, Outcome::Applied);
    assert_eq!(b.resting_orders(L), 2);
}

#[test]
fn instruments_exhausted_is_counted_not_fatal() {
    let mut b = BookBuilder::new(BookConfig {
        max_orders: 8,
        max_instruments: 1,
        levels_per_side_hint: 2,
    })
    .expect("config");
    let ev = |locate, order_ref| OrderEvent::Add {
        locate,
        order_ref,
        side: Side::Ask,
        price: 1,
        shares: 1,
    };
    assert_eq!(b.apply(&ev(1, 1), &mut |_| {}), Outcome::Applied);
    assert_eq!(
        b.apply(&ev(2, 2), &mut |_| {}),
        Outcome::InstrumentsExhausted
    );
    assert_eq!(b.counters().instruments_exhausted, 1);
    assert!(b.bbo(2).is_none());
    assert_eq!(b.locates().collect::<Vec<_>>(), [1]);
}

#[test]
fn growth_past_the_level_hint_is_counted() {
    let mut b = builder(64);
    for r in 0..20u64 {
        run(&mut b, add(r + 1, Side::Ask, 1000 + r as u32, 1));
    }
    assert!(b.counters().level_growths >= 1);
    assert_eq!(b.levels(L, Side::Ask).count(), 20);
    assert_eq!(b.bbo(L).and_then(|x| x.ask_price), Some(1000));
}

#[test]
fn reset_forgets_everything() {
    let mut b = builder(8);
    run(&mut b, add(1, Side::Ask, 1, 1));
    b.reset();
    assert_eq!(b.live_orders(), 0);
    assert!(b.bbo(L).is_none());
    assert_eq!(b.counters(), &BookCounters::default());
    assert_eq!(run(&mut b, add(1, Side::Ask, 1, 1)).0, Outcome::Applied);
}

#[test]
fn config_errors() {
    let c = |max_orders, max_instruments| BookConfig {
        max_orders,
        max_instruments,
        levels_per_side_hint: 1,
    };
    assert_eq!(
        BookBuilder::new(c(0, 1)).err(),
        Some(BookConfigError::NoOrders)
    );
    assert_eq!(
        BookBuilder::new(c(1, 0)).err(),
        Some(BookConfigError::Instruments(0))
    );
    assert_eq!(
        BookBuilder::new(c(1, LOCATES + 1)).err(),
        Some(BookConfigError::Instruments(LOCATES + 1))
    );
    assert!(BookBuilder::new(c(1, LOCATES)).is_ok());
    // A configuration no machine can hold is an error, not an abort.
    assert!(matches!(
        BookBuilder::new(c(usize::MAX / 64, 1)).err(),
        Some(BookConfigError::OutOfMemory { .. })
    ));
    assert!(matches!(
        BookBuilder::new(c(usize::MAX, 1)).err(),
        Some(BookConfigError::OutOfMemory { bytes: usize::MAX })
    ));
    // A maximum that fits no address space is refused when the builder is made, saying so,
    // not at the table's first growth.
    let err = BookBuilder::new(c(1 << 44, 1)).err();
    assert!(
        matches!(err, Some(BookConfigError::AddressSpace { bytes }) if bytes > 1 << 48),
        "{err:?}"
    );
    assert!(
        err.expect("refused")
            .to_string()
            .contains("address space for max_orders")
    );
    let day = BookConfig::nasdaq_day();
    assert!(day.max_memory_bytes() > 640_000_000 && day.max_memory_bytes() < 740_000_000);
    // Made for 1 Mi orders; the rest of the table comes in steps.
    assert!(day.memory_bytes() > 100_000_000 && day.memory_bytes() < 140_000_000);
}

#[test]
fn a_full_day_maximum_is_reached_in_steps() {
    let config = BookConfig {
        max_orders: 10_000_000,
        max_instruments: 4,
        levels_per_side_hint: 8,
    };
    let mut b = BookBuilder::new(config).expect("config");
    // Memory for 1 Mi orders now, not for all 10 million.
    assert!(b.memory_bytes() < config.max_memory_bytes() / 4);
    assert_eq!(b.order_capacity(), PREALLOCATED_ORDERS);
    // One order more than the first table holds: it grows by half once, every order stays.
    let n = PREALLOCATED_ORDERS as u64 + 1;
    let mut sink = |_: BookUpdate| {};
    for r in 1..=n {
        if r == n {
            // Full: the next step, made on a housekeeping thread, is taken once it is made.
            b.orders.wait_prepared();
        }
        let ev = add(r * 3, Side::Bid, 100 + (r % 64) as u32, 1);
        assert_eq!(b.apply(&ev, &mut sink), Outcome::Applied);
    }
    assert_eq!(b.counters().order_table_growths, 1);
    // How long it held up this thread, for an operator to see: a rehash of a million orders
    // takes some time on any machine.
    assert!(b.counters().order_table_growth_max_ns > 0);
    assert_eq!(b.order_capacity(), PREALLOCATED_ORDERS * 3 / 2);
    assert_eq!(b.live_orders(), n as usize);
    assert_eq!(b.resting_orders(L), n as usize);
    for r in (1..=n).step_by(4_099).chain([n]) {
        assert_eq!(b.order(r * 3).map(|o| o.price), Some(100 + (r % 64) as u32));
        assert!(b.order(r * 3 + 1).is_none());
    }
    // A duplicate is still refused, and a delete still finds its order, after the move.
    assert_eq!(
        run(&mut b, add(3, Side::Bid, 1, 1)).0,
        Outcome::DuplicateAdd
    );
    let del = OrderEvent::Delete {
        locate: L,
        order_ref: n * 3,
    };
    assert_eq!(run(&mut b, del).0, Outcome::Applied);
    assert_eq!(b.live_orders(), n as usize - 1);
    // The rest of the way at once, off the hot path.
    b.reserve_orders(usize::MAX).expect("memory");
    assert_eq!(b.order_capacity(), 10_000_000);
    assert_eq!(b.counters().order_table_growths, 2);
    assert!(b.order(3).is_some());
    assert_eq!(b.counters().inconsistencies, 0);
}

#[test]
fn from_itch_maps_each_book_message() {
    let enc = |f: MessageFields| {
        let mut buf = [0u8; 64];
        let n = f.encode(&mut buf).expect("encode");
        buf[..n].to_vec()
    };
    let cases: Vec<(MessageFields, Option<OrderEvent>)> = vec![
        (
            itch::AddOrderFields {
                stock_locate: 5,
                order_reference_number: 9,
                buy_sell_indicator: b'S',
                shares: 100,
                price: Price4(1234),
                ..Default::default()
            }
            .into(),
            Some(OrderEvent::Add {
                locate: 5,
                order_ref: 9,
                side: Side::Ask,
                price: 1234,
                shares: 100,
            }),
        ),
        (
            itch::AddOrderMpidFields {
                stock_locate: 5,
                order_reference_number: 9,
                buy_sell_indicator: b'B',
                shares: 1,
                price: Price4(2),
                ..Default::default()
            }
            .into(),
            Some(OrderEvent::Add {
                locate: 5,
                order_ref: 9,
                side: Side::Bid,
                price: 2,
                shares: 1,
            }),
        ),
        (
            itch::AddOrderFields {
                stock_locate: 5,
                order_reference_number: 9,
                buy_sell_indicator: b'?',
                ..Default::default()
            }
            .into(),
            Some(OrderEvent::Invalid {
                locate: 5,
                order_ref: 9,
                reason: InvalidReason::BadSide(b'?'),
            }),
        ),
        (
            itch::OrderExecutedFields {
                stock_locate: 5,
                order_reference_number: 9,
                executed_shares: 3,
                ..Default::default()
            }
            .into(),
            Some(OrderEvent::Execute {
                locate: 5,
                order_ref: 9,
                shares: 3,
            }),
        ),
        (
            itch::OrderExecutedWithPriceFields {
                stock_locate: 5,
                order_reference_number: 9,
                executed_shares: 3,
                printable: b'Y',
                execution_price: Price4(77),
                ..Default::default()
            }
            .into(),
            Some(OrderEvent::ExecuteWithPrice {
                locate: 5,
                order_ref: 9,
                shares: 3,
                price: 77,
                printable: true,
            }),
        ),
        (
            itch::OrderCancelFields {
                stock_locate: 5,
                order_reference_number: 9,
                cancelled_shares: 4,
                ..Default::default()
            }
            .into(),
            Some(OrderEvent::Cancel {
                locate: 5,
                order_ref: 9,
                shares: 4,
            }),
        ),
        (
            itch::OrderDeleteFields {
                stock_locate: 5,
                order_reference_number: 9,
                ..Default::default()
            }
            .into(),
            Some(OrderEvent::Delete {
                locate: 5,
                order_ref: 9,
            }),
        ),
        (
            itch::OrderReplaceFields {
                stock_locate: 5,
                original_order_reference_number: 9,
                new_order_reference_number: 10,
                shares: 6,
                price: Price4(8),
                ..Default::default()
            }
            .into(),
            Some(OrderEvent::Replace {
                locate: 5,
                old_ref: 9,
                new_ref: 10,
                shares: 6,
                price: 8,
            }),
        ),
        (
            itch::TradeFields {
                stock_locate: 5,
                shares: 6,
                price: Price4(8),
                buy_sell_indicator: b'B',
                ..Default::default()
            }
            .into(),
            Some(OrderEvent::Trade {
                locate: 5,
                shares: 6,
                price: 8,
            }),
        ),
        (
            itch::CrossTradeFields {
                stock_locate: 5,
                shares: 6,
                ..Default::default()
            }
            .into(),
            None,
        ),
        (
            itch::SystemEventFields {
                event_code: b'O',
                ..Default::default()
            }
            .into(),
            None,
        ),
    ];
    for (fields, want) in cases {
        let bytes = enc(fields);
        let msg = itch::decode(&bytes).expect("decode");
        let got = OrderEvent::from_itch(&msg);
        assert_eq!(got, want, "{fields:?}");
        if let Some(ev) = got {
            assert_eq!(ev.locate(), 5);
        }
    }
}

#[test]
fn summary_json_shape() {
    let mut b = BookBuilder::new(BookConfig {
        max_orders: 8,
        max_instruments: 8,
        levels_per_side_hint: 2,
    })
    .expect("config");
    let evs = [
        OrderEvent::Add {
            locate: 10,
            order_ref: 1,
            side: Side::Bid,
            price: 3_201_400,
            shares: 25,
        },
        OrderEvent::Trade {
            locate: 9,
            shares: 5,
            price: 1,
        },
        // A locate with only an unknown reference is left out of `books`.
        OrderEvent::Delete {
            locate: 3,
            order_ref: 42,
        },
    ];
    let mut counts = TypeCounts::new();
    for (ev, t) in evs.iter().zip([b'A', b'P', b'D']) {
        counts.record(t);
        b.apply(ev, &mut |_| {});
    }
    counts.record(0x01);
    let json = b.summary(&counts, 4, 2).to_json();
    let books_at = json.find("\"books\"").expect("books");
    // Locates in numeric order (9 before 10), prices as integers, null for an empty side.
    assert!(
        json[books_at..].starts_with(
            "\"books\":{\"9\":{\"best_bid\":null,\"bid_size\":0,\"best_ask\":null,\"ask_size\":0,\
             \"resting_orders\":0,\"executed_shares\":5,\"prints\":1,\"unknown_refs\":0},\
             \"10\":{\"best_bid\":3201400,\"bid_size\":25,\"best_ask\":null,\"ask_size\":0,\
             \"resting_orders\":1,\"executed_shares\":0,\"prints\":0,\"unknown_refs\":0}}"
        ),
        "{json}"
    );
    assert!(
        json.starts_with(
            "{\"messages\":4,\"counts\":{\"0x01\":1,\"A\":1,\"D\":1,\"P\":1},\"gaps\":2,\"unknown_refs\":1,"
        ),
        "{json}"
    );
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v["counters"]["unknown_refs"], 1);
    assert_eq!(
        b.summary(&counts, 4, 2).book(10).map(|e| e.bid_size),
        Some(25)
    );
}

// ---------------------------------------------------------------------------------------------
// Property test against a naive reference model.

/// The obvious book: a map of live orders; levels and tops recomputed from it on demand.
#[derive(Default)]
struct Model {
    max_orders: usize,
    orders: BTreeMap<u64, Order>,
    stats: BTreeMap<u16, BookStats>,
    c: BookCounters,
}

impl Model {
    fn levels(&self, locate: u16, side: Side) -> Vec<Level> {
        let mut m: BTreeMap<u32, Level> = BTreeMap::new();
        for o in self
            .orders
            .values()
            .filter(|o| o.locate == locate && o.side == side)
        {
            let l = m.entry(o.price).or_insert(Level {
                price: o.price,
                orders: 0,
                shares: 0,
            });
            l.orders += 1;
            l.shares += u64::from(o.shares);
        }
        let v: Vec<Level> = m.into_values().collect();
        match side {
            Side::Bid => v.into_iter().rev().collect(),
            Side::Ask => v,
        }
    }

    fn top(&self, locate: u16) -> Bbo {
        let b = self.levels(locate, Side::Bid).first().copied();
        let a = self.levels(locate, Side::Ask).first().copied();
        Bbo {
            locate,
            bid_price: b.map(|l| l.price),
            bid_size: b.map_or(0, |l| l.shares),
            bid_orders: b.map_or(0, |l| l.orders),
            ask_price: a.map(|l| l.price),
            ask_size: a.map_or(0, |l| l.shares),
            ask_orders: a.map_or(0, |l| l.orders),
        }
    }

    fn changed(&mut self, locate: u16) {
        let t = self.top(locate);
        let st = self.stats.entry(locate).or_default();
        if let (Some(b), Some(a)) = (t.bid_price, t.ask_price) {
            if b > a {
                st.crossed += 1;
                self.c.crossed += 1;
            } else if b == a {
                st.locked += 1;
                self.c.locked += 1;
            }
        }
    }

    fn unknown(&mut self, locate: u16) {
        self.c.unknown_refs += 1;
        self.stats.entry(locate).or_default().unknown_refs += 1;
    }

    fn live_on(&self, locate: u16, r: u64) -> bool {
        self.orders.get(&r).is_some_and(|o| o.locate == locate)
    }

    fn take(&mut self, locate: u16, r: u64, shares: Option<u32>) {
        if !self.live_on(locate, r) {
            return self.unknown(locate);
        }
        let o = self.orders.get_mut(&r).expect("live");
        let s = shares.unwrap_or(o.shares);
        if s > o.shares {
            self.c.overfills += 1;
        }
        if s >= o.shares {
            self.orders.remove(&r);
        } else if s > 0 {
            o.shares -= s;
        } else {
            return;
        }
        self.changed(locate);
    }

    fn apply(&mut self, ev: &OrderEvent) {
        self.c.events += 1;
        match *ev {
            OrderEvent::Add {
                locate,
                order_ref,
                side,
                price,
                shares,
            } => {
                self.stats.entry(locate).or_default();
                if shares == 0 {
                    self.c.empty_orders += 1;
                } else if self.orders.contains_key(&order_ref) {
                    self.c.duplicate_adds += 1;
                } else if self.orders.len() == self.max_orders {
                    self.c.capacity_exhausted += 1;
                } else {
                    self.orders.insert(
                        order_ref,
                        Order {
                            order_ref,
                            price,
                            shares,
                            locate,
                            side,
                        },
                    );
                    self.changed(locate);
                }
            }
            OrderEvent::Execute {
                locate,
                order_ref,
                shares,
            }
            | OrderEvent::ExecuteWithPrice {
                locate,
                order_ref,
                shares,
                ..
            } => {
                let st = self.stats.entry(locate).or_default();
                st.executed_shares += u64::from(shares);
                st.prints += 1;
                self.take(locate, order_ref, Some(shares));
            }
            OrderEvent::Cancel {
                locate,
                order_ref,
                shares,
            } => self.take(locate, order_ref, Some(shares)),
            OrderEvent::Delete { locate, order_ref } => self.take(locate, order_ref, None),
            OrderEvent::Replace {
                locate,
                old_ref,
                new_ref,
                shares,
                price,
            } => {
                if !self.live_on(locate, old_ref) {
                    return self.unknown(locate);
                }
                let old = self.orders.remove(&old_ref).expect("live");
                match self.orders.entry(new_ref) {
                    Entry::Occupied(_) => self.c.duplicate_adds += 1,
                    Entry::Vacant(_) if shares == 0 => self.c.empty_orders += 1,
                    Entry::Vacant(v) => {
                        v.insert(Order {
                            order_ref: new_ref,
                            price,
                            shares,
                            ..old
                        });
                    }
                }
                self.changed(locate);
            }
            OrderEvent::Trade { locate, shares, .. } => {
                let st = self.stats.entry(locate).or_default();
                st.executed_shares += u64::from(shares);
                st.prints += 1;
            }
            OrderEvent::Invalid { .. } => self.c.invalid += 1,
        }
    }
}

/// The book a subscriber rebuilds from the published updates alone.
#[derive(Default)]
struct Mirror {
    levels: BTreeMap<(u16, Side, u32), (u64, u32)>,
    bbo: BTreeMap<u16, Bbo>,
}

impl Mirror {
    fn apply(&mut self, u: BookUpdate) {
        match u {
            BookUpdate::Level {
                locate,
                side,
                price,
                shares,
                orders,
                action,
            } => {
                let k = (locate, side, price);
                match action {
                    LevelAction::New => {
                        assert!(orders > 0 && shares > 0, "{u:?}");
                        assert!(self.levels.insert(k, (shares, orders)).is_none(), "{u:?}");
                    }
                    LevelAction::Change => {
                        assert!(orders > 0, "{u:?}");
                        let old = self.levels.insert(k, (shares, orders));
                        assert!(old.is_some_and(|o| o != (shares, orders)), "{u:?}");
                    }
                    LevelAction::Delete => {
                        assert_eq!((shares, orders), (0, 0));
                        assert!(self.levels.remove(&k).is_some(), "{u:?}");
                    }
                }
            }
            BookUpdate::Bbo(b) => {
                let before = self.bbo.insert(b.locate, b).unwrap_or(empty_bbo(b.locate));
                assert_ne!(before, b, "a Bbo update only when the top changes");
            }
        }
    }

    fn levels(&self, locate: u16, side: Side) -> Vec<Level> {
        let v: Vec<Level> = self
            .levels
            .iter()
            .filter(|(k, _)| k.0 == locate && k.1 == side)
            .map(|(k, v)| Level {
                price: k.2,
                shares: v.0,
                orders: v.1,
            })
            .collect();
        match side {
            Side::Bid => v.into_iter().rev().collect(),
            Side::Ask => v,
        }
    }
}

fn empty_bbo(locate: u16) -> Bbo {
    Bbo {
        locate,
        bid_price: None,
        bid_size: 0,
        bid_orders: 0,
        ask_price: None,
        ask_size: 0,
        ask_orders: 0,
    }
}

const LOCATES_UNDER_TEST: [u16; 3] = [1, 2, 3];

fn event() -> impl Strategy<Value = OrderEvent> {
    let locate = prop::sample::select(&LOCATES_UNDER_TEST[..]);
    let r = 1u64..40;
    let price = 95u32..106;
    let shares = prop_oneof![1 => Just(0u32), 9 => 1u32..60];
    let side = prop_oneof![Just(Side::Bid), Just(Side::Ask)];
    prop_oneof![
        6 => (locate.clone(), r.clone(), side, price.clone(), shares.clone()).prop_map(
            |(locate, order_ref, side, price, shares)| OrderEvent::Add { locate, order_ref, side, price, shares }
        ),
        2 => (locate.clone(), r.clone(), shares.clone())
            .prop_map(|(locate, order_ref, shares)| OrderEvent::Execute { locate, order_ref, shares }),
        1 => (locate.clone(), r.clone(), shares.clone(), price.clone(), any::<bool>()).prop_map(
            |(locate, order_ref, shares, price, printable)| OrderEvent::ExecuteWithPrice { locate, order_ref, shares, price, printable }
        ),
        2 => (locate.clone(), r.clone(), shares.clone())
            .prop_map(|(locate, order_ref, shares)| OrderEvent::Cancel { locate, order_ref, shares }),
        3 => (locate.clone(), r.clone())
            .prop_map(|(locate, order_ref)| OrderEvent::Delete { locate, order_ref }),
        2 => (locate.clone(), r.clone(), r, shares.clone(), price.clone()).prop_map(
            |(locate, old_ref, new_ref, shares, price)| OrderEvent::Replace { locate, old_ref, new_ref, shares, price }
        ),
        1 => (locate, shares, price)
            .prop_map(|(locate, shares, price)| OrderEvent::Trade { locate, shares, price }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn builder_matches_reference_model(
        max_orders in 4usize..48,
        hint in 1usize..16,
        events in prop::collection::vec(event(), 1..300),
    ) {
        let mut b = BookBuilder::new(BookConfig {
            max_orders,
            max_instruments: LOCATES_UNDER_TEST.len(),
            levels_per_side_hint: hint,
        }).expect("config");
        let mut model = Model { max_orders, ..Model::default() };
        let mut mirror = Mirror::default();
        for ev in &events {
            // The hint the book service gives before applying an event changes nothing.
            b.prefetch(ev);
            let mut n = 0;
            b.apply(ev, &mut |u| {
                n += 1;
                mirror.apply(u);
            });
            prop_assert!(n <= MAX_UPDATES_PER_EVENT);
            model.apply(ev);
            for &l in &LOCATES_UNDER_TEST {
                for side in [Side::Bid, Side::Ask] {
                    let want = model.levels(l, side);
                    prop_assert_eq!(&b.levels(l, side).collect::<Vec<_>>(), &want, "{:?}", ev);
                    prop_assert_eq!(&mirror.levels(l, side), &want, "{:?}", ev);
                }
                let top = model.top(l);
                prop_assert_eq!(b.bbo(l).unwrap_or(empty_bbo(l)), top);
                prop_assert_eq!(mirror.bbo.get(&l).copied().unwrap_or(empty_bbo(l)), top);
                let mut st = model.stats.get(&l).copied().unwrap_or_default();
                st.resting_orders = model.orders.values().filter(|o| o.locate == l).count() as u64;
                prop_assert_eq!(b.stats(l).unwrap_or_default(), st);
            }
            // Growth past the hint is the one counter the model does not predict; with room
            // for every price (95..106) there is none.
            let mut c = *b.counters();
            if hint >= 11 {
                prop_assert_eq!(c.level_growths, 0);
            }
            c.level_growths = 0;
            prop_assert_eq!(c, model.c);
            prop_assert_eq!(b.live_orders(), model.orders.len());
        }
        for o in model.orders.values() {
            prop_assert_eq!(b.order(o.order_ref), Some(o));
        }
    }
}
