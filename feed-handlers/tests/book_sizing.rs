//! How the books a replay builds are sized: a whole day's live orders fit, while memory is
//! taken for the orders a session keeps live rather than for the maximum.

use mdbus_feed_handlers::book::{BookBuilder, BookConfig};
use mdbus_feed_handlers::replay::replay_book_config;

#[test]
fn replay_books_hold_a_full_day_without_preallocating_it() {
    let config = replay_book_config();
    // A full day peaks at millions of live orders: no flag should be needed to replay one.
    assert!(config.max_orders >= BookConfig::nasdaq_day().max_orders);
    let b = BookBuilder::new(config).expect("config");
    assert!(b.memory_bytes() < 120_000_000, "{}", b.memory_bytes());
    assert_eq!(b.memory_bytes(), config.memory_bytes());
    assert!(config.max_memory_bytes() > 4 * config.memory_bytes());
}
