//! Real Nasdaq data: the first 10,000 AAPL messages of 2020-01-30 (ITCH 5.0, Nasdaq's file
//! format) rebuild the reference book exactly, and the `--book-summary` JSON carries it.

use std::path::{Path, PathBuf};

use mdbus_codecs::nasdaq::itch::Stream;
use mdbus_feed_handlers::book::{
    BookBuilder, BookConfig, BookSummary, BookUpdate, LevelEvent, OrderEvent, Outcome, Side,
    TypeCounts,
};

fn aapl_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/testdata/itch/aapl-2020-01-30-10k.itch")
}

const AAPL_LOCATE: u16 = 13;

const AAPL_COUNTS: [(&str, u64); 11] = [
    ("A", 4758),
    ("D", 4083),
    ("E", 849),
    ("P", 240),
    ("L", 52),
    ("U", 7),
    ("X", 6),
    ("F", 2),
    ("R", 1),
    ("H", 1),
    ("Y", 1),
];

struct Replay {
    builder: BookBuilder,
    counts: TypeCounts,
    messages: u64,
    updates: Vec<BookUpdate>,
}

fn replay(config: BookConfig) -> Replay {
    let bytes = std::fs::read(aapl_path()).expect("read the AAPL sample");
    let mut builder = BookBuilder::new(config).expect("config");
    let mut counts = TypeCounts::new();
    let mut messages = 0;
    let mut updates = Vec::new();
    for (offset, msg) in Stream::new(&bytes) {
        let msg = msg.unwrap_or_else(|e| panic!("offset {offset}: {e}"));
        messages += 1;
        counts.record(msg.msg_type());
        if let Some(ev) = OrderEvent::from_itch(&msg) {
            builder.apply(&ev, &mut |u| updates.push(u));
        }
    }
    Replay {
        builder,
        counts,
        messages,
        updates,
    }
}

fn small() -> BookConfig {
    BookConfig {
        max_orders: 4096,
        max_instruments: 64,
        levels_per_side_hint: 256,
    }
}

#[test]
fn aapl_book_matches_the_reference() {
    let r = replay(small());
    let b = &r.builder;
    let bbo = b.bbo(AAPL_LOCATE).expect("AAPL book");
    assert_eq!(bbo.bid_price, Some(3_201_400), "best bid 320.1400");
    assert_eq!(bbo.bid_size, 25);
    assert_eq!(bbo.ask_price, Some(3_203_000), "best ask 320.3000");
    assert_eq!(bbo.ask_size, 100);
    assert_eq!(b.resting_orders(AAPL_LOCATE), 215);
    let st = b.stats(AAPL_LOCATE).expect("stats");
    assert_eq!(st.executed_shares, 81_556);
    assert_eq!(st.prints, 1_089);

    // A clean day: nothing unknown, nothing refused, nothing inconsistent.
    let c = b.counters();
    assert_eq!(c.unknown_refs, 0);
    assert_eq!(c.duplicate_adds, 0);
    assert_eq!(c.capacity_exhausted + c.instruments_exhausted, 0);
    assert_eq!(
        c.inconsistencies + c.invalid + c.empty_orders + c.level_growths,
        0
    );
    assert_eq!(b.locates().collect::<Vec<_>>(), [AAPL_LOCATE]);
    assert_eq!(b.live_orders(), 215);

    // The depth agrees with the top and with the resting orders.
    let bids: Vec<_> = b.levels(AAPL_LOCATE, Side::Bid).collect();
    let asks: Vec<_> = b.levels(AAPL_LOCATE, Side::Ask).collect();
    assert_eq!((bids[0].price, bids[0].shares), (3_201_400, 25));
    assert_eq!((asks[0].price, asks[0].shares), (3_203_000, 100));
    assert!(bids.windows(2).all(|w| w[0].price > w[1].price));
    assert!(asks.windows(2).all(|w| w[0].price < w[1].price));
    let orders: u64 = bids.iter().chain(&asks).map(|l| u64::from(l.orders)).sum();
    assert_eq!(orders, 215);

    // The last top published is the final top.
    let last_bbo = r.updates.iter().rev().find_map(|u| match u {
        BookUpdate::Bbo(x) => Some(*x),
        BookUpdate::Level { .. } => None,
    });
    assert_eq!(last_bbo, Some(bbo));
}

#[test]
fn aapl_levels_rebuild_the_book_of_its_orders() {
    // The level updates of the order book, fed to a book of levels (as a venue that
    // publishes levels would send them), flushed where the order book published a top.
    let r = replay(small());
    let mut levels = BookBuilder::new(small()).expect("config");
    let (mut l3_tops, mut l2_tops) = (Vec::new(), Vec::new());
    let mut top = |u: BookUpdate| {
        if let BookUpdate::Bbo(x) = u {
            l2_tops.push(x);
        }
    };
    for u in &r.updates {
        match *u {
            BookUpdate::Level {
                locate,
                side,
                price,
                shares,
                orders,
                ..
            } => {
                let ev = LevelEvent {
                    locate,
                    side,
                    price,
                    shares,
                    orders,
                };
                assert_eq!(levels.set_level(&ev, &mut top), Outcome::Applied, "{u:?}");
            }
            BookUpdate::Bbo(x) => {
                l3_tops.push(x);
                levels.flush_levels(&mut top);
            }
        }
    }
    levels.flush_levels(&mut top);
    assert_eq!(l2_tops.len(), l3_tops.len());
    assert!(l2_tops == l3_tops, "the same tops in the same order");
    for side in [Side::Bid, Side::Ask] {
        let want: Vec<_> = r.builder.levels(AAPL_LOCATE, side).collect();
        let got: Vec<_> = levels.levels(AAPL_LOCATE, side).collect();
        assert_eq!(got, want, "{side:?} depth");
    }
    let c = levels.counters();
    assert_eq!(
        (
            c.mixed,
            c.unknown_levels,
            c.batch_overflows,
            c.inconsistencies
        ),
        (0, 0, 0, 0)
    );
    // A book of levels holds no orders, and says so in its summary.
    let s = levels.summary(&TypeCounts::new(), 0, 0);
    let e = s.book(AAPL_LOCATE).expect("AAPL levels");
    assert_eq!(
        (
            e.best_bid,
            e.bid_size,
            e.best_ask,
            e.ask_size,
            e.resting_orders
        ),
        (Some(3_201_400), 25, Some(3_203_000), 100, 0)
    );
}

#[test]
fn aapl_summary_json() {
    let r = replay(small());
    let summary: BookSummary = r.builder.summary(&r.counts, r.messages, 0);
    let json = summary.to_json();
    let v: serde_json::Value = serde_json::from_str(&json).expect("summary is valid JSON");
    assert_eq!(v["messages"], 10_000);
    assert_eq!(v["gaps"], 0);
    assert_eq!(v["unknown_refs"], 0);
    let counts = v["counts"].as_object().expect("counts object");
    assert_eq!(counts.len(), AAPL_COUNTS.len(), "{json}");
    for (t, n) in AAPL_COUNTS {
        assert_eq!(counts[t], n, "count of {t}");
    }
    let books = v["books"].as_object().expect("books object");
    assert_eq!(books.keys().collect::<Vec<_>>(), ["13"]);
    let aapl = &books["13"];
    assert_eq!(aapl["best_bid"], 3_201_400);
    assert_eq!(aapl["bid_size"], 25);
    assert_eq!(aapl["best_ask"], 3_203_000);
    assert_eq!(aapl["ask_size"], 100);
    assert_eq!(aapl["resting_orders"], 215);
    assert_eq!(aapl["executed_shares"], 81_556);
    assert_eq!(aapl["prints"], 1_089);
    assert_eq!(aapl["unknown_refs"], 0);
    assert!(aapl["best_bid"].is_u64(), "prices are integers");
}

#[test]
fn tight_tables_count_instead_of_failing() {
    // Far too little room: the replay still runs to the end and says what it refused.
    let r = replay(BookConfig {
        max_orders: 50,
        max_instruments: 1,
        levels_per_side_hint: 2,
    });
    let c = r.builder.counters();
    assert!(c.capacity_exhausted > 0);
    assert!(
        c.unknown_refs > 0,
        "events for refused orders are unknown references"
    );
    assert!(c.level_growths > 0);
    assert_eq!(c.inconsistencies, 0);
    assert!(r.builder.live_orders() <= 50);
    // Prints do not depend on the order table.
    let st = r.builder.stats(AAPL_LOCATE).expect("stats");
    assert_eq!((st.executed_shares, st.prints), (81_556, 1_089));
}
