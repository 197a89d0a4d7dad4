//! Books of price levels (L2): [`BookBuilder::set_level`], [`BookBuilder::flush_levels`] and
//! [`BookBuilder::apply_level`].

use super::*;

const L: u16 = 7;

fn builder() -> BookBuilder {
    BookBuilder::new(BookConfig {
        max_orders: 16,
        max_instruments: 4,
        levels_per_side_hint: 4,
    })
    .expect("small config")
}

fn lv(locate: u16, side: Side, price: u32, shares: u64, orders: u32) -> LevelEvent {
    LevelEvent {
        locate,
        side,
        price,
        shares,
        orders,
    }
}

/// Applies one level and flushes; the outcome and the updates published.
fn run(b: &mut BookBuilder, ev: LevelEvent) -> (Outcome, Vec<BookUpdate>) {
    let mut v = Vec::new();
    let o = b.apply_level(&ev, &mut |u| v.push(u));
    (o, v)
}

fn level(
    locate: u16,
    side: Side,
    price: u32,
    shares: u64,
    orders: u32,
    action: LevelAction,
) -> BookUpdate {
    BookUpdate::Level {
        locate,
        side,
        price,
        shares,
        orders,
        action,
    }
}

/// A BBO update of `locate`; each side `(price, shares, orders)`.
fn bbo(locate: u16, bid: Option<(u32, u64, u32)>, ask: Option<(u32, u64, u32)>) -> BookUpdate {
    BookUpdate::Bbo(Bbo {
        locate,
        bid_price: bid.map(|x| x.0),
        bid_size: bid.map_or(0, |x| x.1),
        bid_orders: bid.map_or(0, |x| x.2),
        ask_price: ask.map(|x| x.0),
        ask_size: ask.map_or(0, |x| x.1),
        ask_orders: ask.map_or(0, |x| x.2),
    })
}

#[test]
fn levels_are_added_modified_and_deleted() {
    use LevelAction::*;
    let mut b = builder();
    // A level with an order count, then one whose venue gives none (0).
    let (o, u) = run(&mut b, lv(L, Side::Bid, 100, 300, 2));
    assert_eq!(o, Outcome::Applied);
    assert_eq!(
        u,
        [
            level(L, Side::Bid, 100, 300, 2, New),
            bbo(L, Some((100, 300, 2)), None)
        ]
    );
    let (_, u) = run(&mut b, lv(L, Side::Ask, 110, 50, 0));
    assert_eq!(
        u,
        [
            level(L, Side::Ask, 110, 50, 0, New),
            bbo(L, Some((100, 300, 2)), Some((110, 50, 0)))
        ]
    );
    // A worse bid: a level update, the top is unchanged.
    let (_, u) = run(&mut b, lv(L, Side::Bid, 99, 10, 1));
    assert_eq!(u, [level(L, Side::Bid, 99, 10, 1, New)]);
    // Modify the best bid: absolute size, not a delta.
    let (_, u) = run(&mut b, lv(L, Side::Bid, 100, 120, 1));
    assert_eq!(
        u,
        [
            level(L, Side::Bid, 100, 120, 1, Change),
            bbo(L, Some((100, 120, 1)), Some((110, 50, 0)))
        ]
    );
    // The same state again changes nothing and publishes nothing.
    assert_eq!(
        run(&mut b, lv(L, Side::Bid, 100, 120, 1)),
        (Outcome::Applied, vec![])
    );
    // Size 0 deletes; the next level becomes the top.
    let (_, u) = run(&mut b, lv(L, Side::Bid, 100, 0, 0));
    assert_eq!(
        u,
        [
            level(L, Side::Bid, 100, 0, 0, Delete),
            bbo(L, Some((99, 10, 1)), Some((110, 50, 0)))
        ]
    );
    let (_, u) = run(&mut b, lv(L, Side::Ask, 110, 0, 0));
    assert_eq!(
        u,
        [
            level(L, Side::Ask, 110, 0, 0, Delete),
            bbo(L, Some((99, 10, 1)), None)
        ]
    );
    let bids: Vec<Level> = b.levels(L, Side::Bid).collect();
    assert_eq!(
        bids,
        [Level {
            price: 99,
            orders: 1,
            shares: 10
        }]
    );
    assert_eq!(
        (b.depth(L, Side::Ask), b.resting_orders(L), b.live_orders()),
        (0, 0, 0)
    );
    assert_eq!(b.counters().events, 7);
}

#[test]
fn deleting_a_level_the_book_does_not_hold_is_counted() {
    let mut b = builder();
    assert_eq!(
        run(&mut b, lv(L, Side::Ask, 5, 0, 0)),
        (Outcome::UnknownLevel, vec![])
    );
    run(&mut b, lv(L, Side::Ask, 6, 1, 0));
    assert_eq!(
        run(&mut b, lv(L, Side::Ask, 5, 0, 0)),
        (Outcome::UnknownLevel, vec![])
    );
    assert_eq!(b.counters().unknown_levels, 2);
    assert_eq!(b.depth(L, Side::Ask), 1);
}

#[test]
fn crossed_and_locked_level_books_are_kept_as_given() {
    let mut b = builder();
    run(&mut b, lv(L, Side::Ask, 100, 5, 1));
    // The venue is authoritative: a bid through the ask rests and is published.
    let (o, u) = run(&mut b, lv(L, Side::Bid, 101, 7, 1));
    assert_eq!(o, Outcome::Applied);
    assert_eq!(
        u.last(),
        Some(&bbo(L, Some((101, 7, 1)), Some((100, 5, 1))))
    );
    assert_eq!((b.counters().crossed, b.counters().locked), (1, 0));
    run(&mut b, lv(L, Side::Bid, 101, 0, 0));
    let (_, u) = run(&mut b, lv(L, Side::Bid, 100, 3, 1));
    assert_eq!(
        u.last(),
        Some(&bbo(L, Some((100, 3, 1)), Some((100, 5, 1))))
    );
    assert_eq!((b.counters().crossed, b.counters().locked), (1, 1));
    assert_eq!(b.stats(L).map(|s| (s.crossed, s.locked)), Some((1, 1)));
}

#[test]
fn a_batch_publishes_its_levels_then_each_changed_top_once_at_the_flush() {
    use LevelAction::*;
    let mut b = builder();
    run(&mut b, lv(3, Side::Bid, 50, 1, 1));
    let mut got = Vec::new();
    // One venue event: three levels of L and one of locate 3.
    for ev in [
        lv(L, Side::Bid, 100, 10, 1),
        lv(3, Side::Bid, 50, 2, 1),
        lv(L, Side::Ask, 105, 20, 2),
        lv(L, Side::Bid, 101, 30, 3),
    ] {
        assert_eq!(b.set_level(&ev, &mut |u| got.push(u)), Outcome::Applied);
    }
    assert_eq!(got, [], "nothing is published before the flush");
    assert_eq!(b.staged_levels(), 4);
    // The books themselves are up to date.
    assert_eq!(b.bbo(L).and_then(|x| x.bid_price), Some(101));
    b.flush_levels(&mut |u| got.push(u));
    assert_eq!(
        got,
        [
            level(L, Side::Bid, 100, 10, 1, New),
            level(3, Side::Bid, 50, 2, 1, Change),
            level(L, Side::Ask, 105, 20, 2, New),
            level(L, Side::Bid, 101, 30, 3, New),
            bbo(L, Some((101, 30, 3)), Some((105, 20, 2))),
            bbo(3, Some((50, 2, 1)), None),
        ]
    );
    assert_eq!(b.staged_levels(), 0);
    // A second flush has nothing to say.
    got.clear();
    b.flush_levels(&mut |u| got.push(u));
    assert_eq!(got, []);
    // A batch that leaves the top as it was publishes its levels and no top.
    b.set_level(&lv(L, Side::Ask, 106, 1, 1), &mut |u| got.push(u));
    b.set_level(&lv(L, Side::Ask, 106, 0, 0), &mut |u| got.push(u));
    b.flush_levels(&mut |u| got.push(u));
    assert_eq!(
        got,
        [
            level(L, Side::Ask, 106, 1, 1, New),
            level(L, Side::Ask, 106, 0, 0, Delete),
        ]
    );
}

#[test]
fn a_batch_larger_than_the_staging_room_publishes_early_and_is_counted() {
    let mut b = BookBuilder::new(BookConfig {
        max_orders: 1,
        max_instruments: 1,
        levels_per_side_hint: MAX_STAGED_LEVELS + 1,
    })
    .expect("config");
    let mut got = Vec::new();
    for p in 0..=MAX_STAGED_LEVELS as u32 {
        b.set_level(&lv(L, Side::Bid, p + 1, 1, 1), &mut |u| got.push(u));
    }
    assert_eq!(
        got.len(),
        MAX_STAGED_LEVELS,
        "the full staging room went out"
    );
    assert!(got.iter().all(|u| matches!(u, BookUpdate::Level { .. })));
    assert_eq!(b.counters().batch_overflows, 1);
    b.flush_levels(&mut |u| got.push(u));
    assert_eq!(
        got.len(),
        MAX_STAGED_LEVELS + 2,
        "the last level, then the top"
    );
    let top = MAX_STAGED_LEVELS as u32 + 1;
    assert_eq!(got.last(), Some(&bbo(L, Some((top, 1, 1)), None)));
    assert_eq!(b.counters().level_growths, 0);
}

#[test]
fn an_instrument_is_built_from_orders_or_levels_not_both() {
    let mut b = builder();
    let add = |locate, order_ref| OrderEvent::Add {
        locate,
        order_ref,
        side: Side::Bid,
        price: 100,
        shares: 10,
    };
    // An order book refuses levels.
    assert_eq!(b.apply(&add(1, 1), &mut |_| {}), Outcome::Applied);
    assert_eq!(
        run(&mut b, lv(1, Side::Ask, 120, 5, 1)),
        (Outcome::Mixed, vec![])
    );
    // A level book refuses orders, and an order event naming no order there is mixing,
    // not an unknown reference.
    run(&mut b, lv(2, Side::Ask, 120, 5, 1));
    let mut got = Vec::new();
    assert_eq!(b.apply(&add(2, 2), &mut |u| got.push(u)), Outcome::Mixed);
    let delete = OrderEvent::Delete {
        locate: 2,
        order_ref: 1,
    };
    assert_eq!(b.apply(&delete, &mut |u| got.push(u)), Outcome::Mixed);
    assert_eq!(got, []);
    // Prints are neither: a trade counts on a level book.
    let trade = OrderEvent::Trade {
        locate: 2,
        shares: 7,
        price: 120,
    };
    assert_eq!(b.apply(&trade, &mut |_| {}), Outcome::Applied);
    let c = b.counters();
    assert_eq!((c.mixed, c.unknown_refs), (3, 0));
    assert_eq!(b.bbo(1).and_then(|x| x.ask_price), None);
    assert_eq!(
        b.bbo(2).map(|x| (x.ask_price, x.bid_price)),
        Some((Some(120), None))
    );
    assert_eq!(
        b.stats(2).map(|s| (s.prints, s.executed_shares)),
        Some((1, 7))
    );
    assert_eq!((b.live_orders(), b.resting_orders(2)), (1, 0));
    // A reset forgets what each book was built from.
    b.reset();
    assert_eq!(b.apply(&add(2, 3), &mut |_| {}), Outcome::Applied);
    assert_eq!(run(&mut b, lv(1, Side::Ask, 120, 5, 1)).0, Outcome::Applied);
}

#[test]
fn unknown_instruments_and_exhausted_capacity_are_counted() {
    let mut b = BookBuilder::new(BookConfig {
        max_orders: 1,
        max_instruments: 1,
        levels_per_side_hint: 2,
    })
    .expect("config");
    assert_eq!(b.bbo(9), None, "no event named it");
    assert_eq!(b.levels(9, Side::Bid).count(), 0);
    run(&mut b, lv(9, Side::Bid, 10, 1, 0));
    // No book left for a second instrument.
    assert_eq!(
        run(&mut b, lv(8, Side::Bid, 10, 1, 0)),
        (Outcome::InstrumentsExhausted, vec![])
    );
    assert_eq!(b.counters().instruments_exhausted, 1);
    assert_eq!(b.bbo(8), None);
    // A side past its reserved levels grows, counted (dropping levels would be wrong).
    for p in 11..14 {
        run(&mut b, lv(9, Side::Bid, p, 1, 0));
    }
    assert_eq!(b.counters().level_growths, 1);
    assert_eq!(b.depth(9, Side::Bid), 4);
}

#[test]
fn summaries_hold_level_books_and_name_new_counters_only_when_set() {
    let mut b = builder();
    run(&mut b, lv(L, Side::Bid, 100, 300, 0));
    run(&mut b, lv(L, Side::Ask, 101, 0, 0));
    let s = b.summary(&TypeCounts::new(), 2, 0);
    let e = s.book(L).expect("a level book with a side is summed up");
    assert_eq!(
        (e.best_bid, e.bid_size, e.best_ask, e.resting_orders),
        (Some(100), 300, None, 0)
    );
    let json = s.to_json();
    assert!(json.contains(r#""unknown_levels":1"#), "{json}");
    assert!(
        !json.contains("mixed") && !json.contains("batch_overflows"),
        "{json}"
    );
    // A book emptied again is left out, as an order book without orders or prints is.
    run(&mut b, lv(L, Side::Bid, 100, 0, 0));
    assert_eq!(b.summary(&TypeCounts::new(), 3, 0).book(L), None);
}
