//! Order book builder: L3 orders -> price levels -> best bid and offer, or L2 price levels ->
//! best bid and offer, for every instrument of a feed, in storage sized once by configuration.
//!
//! Feed it [`OrderEvent`]s (from ITCH with [`OrderEvent::from_itch`], or from any other
//! source), one at a time, with [`BookBuilder::apply`]; it calls back with a
//! [`BookUpdate::Level`] for each price level that changed and a [`BookUpdate::Bbo`] when the
//! top of an instrument's book changed. A venue that publishes price levels instead of orders
//! feeds [`LevelEvent`]s to [`BookBuilder::set_level`] and publishes with
//! [`BookBuilder::flush_levels`] (or both at once with [`BookBuilder::apply_level`]); the
//! updates come out through the same [`UpdateSink`]. Query the books with
//! [`BookBuilder::bbo`], [`BookBuilder::levels`], [`BookBuilder::resting_orders`] and
//! [`BookBuilder::order`]; sum a replay up with [`BookBuilder::summary`]. Reading normalized
//! envelopes into a builder, with the counts a summary prints, is [`EnvelopeBooks`].
//!
//! # Semantics
//! * `Add` rests a new order; an `Add` whose reference is already live is counted
//!   (`duplicate_adds`) and ignored. An order (or replacement) of 0 shares never rests
//!   (`empty_orders`).
//! * `Execute`, `ExecuteWithPrice` and `Cancel` take shares off the order; an order reduced to 0
//!   shares leaves the book. Taking more shares than the order has removes it and is counted
//!   (`overfills`). `Delete` removes the order.
//! * `Replace` removes the old order and rests a new one on the same instrument and side, at the
//!   new reference, price and shares. If the new reference is already live, the old order is
//!   still removed, nothing is added, and `duplicate_adds` counts it.
//! * An `Execute`, `ExecuteWithPrice`, `Cancel`, `Delete` or `Replace` naming an order that is
//!   not live, or that is live on another instrument than the event names, is an unknown
//!   reference: counted (per instrument and in total), no book changes.
//! * `Execute`, `ExecuteWithPrice` (printable or not) and `Trade` are prints: each adds its
//!   shares to the instrument's `executed_shares` and one to its `prints`, whether or not the
//!   order it names is known.
//! * After every event that changed a book, a book whose best bid is above its best ask is
//!   counted as `crossed`, one whose best bid equals its best ask as `locked`; both are data,
//!   not errors.
//!
//! # Price levels (L2)
//! * [`set_level`](BookBuilder::set_level) sets the aggregate shares (and order count, 0 when
//!   the venue does not say) of one level; 0 shares deletes it. Deleting a level that is not
//!   there is counted (`unknown_levels`). The venue is authoritative: a crossed or locked book
//!   is kept as given (and counted, as above).
//! * The book changes at once, but its updates are held until
//!   [`flush_levels`](BookBuilder::flush_levels): first every level update staged, in order,
//!   then one `Bbo` per book whose top changed. A venue that marks the end of an atomic event
//!   sets all of that event's levels and flushes once, so that no reader sees a half-applied
//!   event. More than [`MAX_STAGED_LEVELS`] staged updates are published early, before the
//!   next one is staged (counted in `batch_overflows`); the tops still wait for the flush.
//! * A book is either L3 or L2, fixed by the first add or level set on it. A level set on an
//!   order book, or an add (or execute, cancel, delete, replace) on a level book, is counted
//!   (`mixed`) and changes no book. Trades print on either.
//!
//! # Memory
//! Everything is allocated and written when the builder is made ([`BookBuilder::new`]); no
//! event allocates afterwards, with two documented exceptions, each counted and neither per
//! message:
//! * the order table is made for at most [`PREALLOCATED_ORDERS`] (1 Mi) orders; a larger
//!   `max_orders` is reached in steps, the table growing by half, in place, when full (the
//!   step's memory committed on a housekeeping thread while the table goes on, and a rehash
//!   of the live orders each time, counted in `order_table_growths`), so that memory
//!   follows the orders a session keeps live rather than the maximum configured. Call
//!   [`BookBuilder::reserve_orders`] to take those steps at once, off the hot path;
//! * a side of a book that outgrows `levels_per_side_hint` levels grows its `Vec` (counted in
//!   `level_growths`), because dropping price levels would make the book wrong.
//!
//! | part | bytes |
//! |---|---|
//! | order table | 24 per slot, `orders * 8/3 + 1` slots rounded up to 64 for the `orders` it holds now: 64 per order |
//! | locate index | 65,536 x 4 = 256 KiB |
//! | per instrument | `size_of::<Book>()` (128, two whole cache lines) + its rare counters (24) + 2 x `levels_per_side_hint` x 16 + 4 (its place in the list of books to flush) |
//! | staged level updates | [`MAX_STAGED_LEVELS`] x `size_of::<BookUpdate>()` (48): 48 KiB |
//!
//! So 1 Mi orders cost 67 MB, and 10,000,000 (reserved in full) 640 MB; 8,000 instruments with
//! 128 levels a side cost 8,000 x (152 + 4,096 + 4) = 34 MB; [`BookConfig::nasdaq_day`] (10 M
//! orders, 12,000 instruments, 128 levels) starts at about 118 MB and reaches about 691 MB
//! with room for all its orders ([`BookConfig::memory_bytes`] and [`BookConfig::max_memory_bytes`]
//! compute both for any configuration).
//!
//! ```
//! use mdbus_feed_handlers::book::{BookBuilder, BookConfig, BookUpdate, OrderEvent, Side};
//!
//! let mut b = BookBuilder::new(BookConfig { max_orders: 1024, max_instruments: 16, levels_per_side_hint: 32 })?;
//! let mut updates = Vec::new();
//! b.apply(&OrderEvent::Add { locate: 13, order_ref: 1, side: Side::Bid, price: 3_201_400, shares: 100 },
//!         &mut |u| updates.push(u));
//! b.apply(&OrderEvent::Execute { locate: 13, order_ref: 1, shares: 75 }, &mut |u| updates.push(u));
//! let bbo = b.bbo(13).expect("book for locate 13");
//! assert_eq!((bbo.bid_price, bbo.bid_size, bbo.ask_price), (Some(3_201_400), 25, None));
//! assert!(matches!(updates.last(), Some(BookUpdate::Bbo(_))));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod event;
mod from_events;
mod iex;
mod levels;
mod orders;
mod slots;
mod summary;

#[cfg(test)]
mod level_tests;
#[cfg(test)]
mod tests;

pub use event::{BookEvent, InvalidReason, LevelEvent, OrderEvent, Side};
pub use from_events::{
    EnvelopeBooks, GapPolicy, IexInput, IexPrint, IexQuote, book_event_from_envelope, header_of,
    iex_input_of_envelope, iex_symbol, instrument_of, is_iex_event, order_event_from_envelope,
};
pub(crate) use from_events::{InputRead, book_key, read_input, read_input_generic, read_trade};
pub use iex::{IexBookEntry, IexBookEvent, IexBooks, IexSummary, iex_print};
pub use levels::{LEVEL_BYTES, Level};
pub use orders::{ORDER_SLOT_BYTES, Order, PREALLOCATED_ORDERS};
pub use summary::{BookSummary, BookSummaryEntry, TypeCounts};

use levels::{Ladder, Set, Touched};
use orders::{Insert, OrderTable, prefetch_line};
use serde::Serialize;
use slots::NoRoom;

/// Number of distinct stock locates (a `u16`).
pub const LOCATES: usize = 1 << 16;

/// Where [`BookBuilder::apply`] sends the updates an event makes, in order. Every
/// `FnMut(BookUpdate)` closure is one. A type of your own can be one too, when its method must
/// be inlined into the builder: the compiler may call a closure out of line.
pub trait UpdateSink {
    /// Receives the next update.
    fn update(&mut self, u: BookUpdate);
}

impl<F: FnMut(BookUpdate)> UpdateSink for F {
    #[inline(always)]
    fn update(&mut self, u: BookUpdate) {
        self(u)
    }
}

/// Most updates one event publishes: a replace to another price changes two levels, then the
/// top (an add or a reduction publishes at most a level and the top).
pub const MAX_UPDATES_PER_EVENT: usize = 3;

/// Level updates [`BookBuilder::set_level`] holds until [`BookBuilder::flush_levels`]; one more
/// publishes those held first (counted in `batch_overflows`).
pub const MAX_STAGED_LEVELS: usize = 1024;

/// Sizes of the builder's preallocated storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookConfig {
    /// Live orders held at once, across all instruments; one more is refused and counted
    /// (`capacity_exhausted`). Room for up to [`PREALLOCATED_ORDERS`] of them is made at
    /// construction, the rest in steps when needed (see the module docs).
    pub max_orders: usize,
    /// Instruments (distinct locates) with a book, 1 to 65,536; books are handed out to
    /// locates in order of first appearance, and an event for a locate beyond them is counted
    /// (`instruments_exhausted`).
    pub max_instruments: usize,
    /// Price levels reserved per side of each book; a side may outgrow it (counted in
    /// `level_growths`, one allocation each time).
    pub levels_per_side_hint: usize,
}

impl BookConfig {
    /// A full Nasdaq TotalView day: about 8,000 instruments (room for 12,000) and several
    /// million live orders at peak (room for 10 million), 128 levels reserved per side.
    pub const fn nasdaq_day() -> Self {
        Self {
            max_orders: 10_000_000,
            max_instruments: 12_000,
            levels_per_side_hint: 128,
        }
    }

    /// Bytes the builder preallocates for this configuration (its order table for at most
    /// [`PREALLOCATED_ORDERS`] orders).
    pub const fn memory_bytes(&self) -> usize {
        let preallocated = if self.max_orders < PREALLOCATED_ORDERS {
            self.max_orders
        } else {
            PREALLOCATED_ORDERS
        };
        self.bytes_with_orders(preallocated)
    }

    /// Bytes the builder holds once its order table has room for all `max_orders` (before any
    /// growth of the level ladders).
    pub const fn max_memory_bytes(&self) -> usize {
        self.bytes_with_orders(self.max_orders)
    }

    const fn bytes_with_orders(&self, orders: usize) -> usize {
        let orders = OrderTable::bytes_for(orders);
        let per_book = self
            .levels_per_side_hint
            .saturating_mul(2 * LEVEL_BYTES)
            .saturating_add(BOOK_BYTES);
        let per_book = per_book.saturating_add(size_of::<u32>());
        orders
            .saturating_add(LOCATES * size_of::<u32>())
            .saturating_add(self.max_instruments.saturating_mul(per_book))
            .saturating_add(MAX_STAGED_LEVELS * size_of::<BookUpdate>())
    }
}

impl Default for BookConfig {
    fn default() -> Self {
        Self::nasdaq_day()
    }
}

/// Why a [`BookBuilder`] could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BookConfigError {
    /// `max_orders` is 0.
    #[error("book config: max_orders must be at least 1")]
    NoOrders,
    /// `max_instruments` is 0 or above 65,536.
    #[error("book config: max_instruments must be 1 to 65536, got {0}")]
    Instruments(usize),
    /// The storage could not be allocated.
    #[error("book config: cannot allocate {bytes} bytes of book storage")]
    OutOfMemory {
        /// Bytes the configuration needs ([`BookConfig::memory_bytes`]).
        bytes: usize,
    },
    /// The address space for the order table's largest size (for `max_orders`) could not be
    /// reserved; it costs no memory until used, but counts toward a limit on virtual memory.
    #[error(
        "book config: cannot reserve {bytes} bytes of address space for max_orders (lower \
         max_orders, or raise the process's virtual memory limit, ulimit -v)"
    )]
    AddressSpace {
        /// Bytes of address space asked for.
        bytes: usize,
    },
}

/// What happened to a level in a [`BookUpdate::Level`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LevelAction {
    /// The price level appeared.
    New,
    /// Its shares or order count changed.
    Change,
    /// It is gone (shares and orders are 0).
    Delete,
}

/// Best bid and offer of one instrument. A missing side has no price and size 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bbo {
    /// Instrument.
    pub locate: u16,
    /// Best bid price (1e-4).
    pub bid_price: Option<u32>,
    /// Shares at the best bid.
    pub bid_size: u64,
    /// Orders at the best bid.
    pub bid_orders: u32,
    /// Best ask price (1e-4).
    pub ask_price: Option<u32>,
    /// Shares at the best ask.
    pub ask_size: u64,
    /// Orders at the best ask.
    pub ask_orders: u32,
}

/// What the builder publishes after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BookUpdate {
    /// A price level changed (its state after the event).
    Level {
        /// Instrument.
        locate: u16,
        /// Side.
        side: Side,
        /// Price (1e-4).
        price: u32,
        /// Shares now at the level (0 for [`LevelAction::Delete`]).
        shares: u64,
        /// Orders now at the level (0 for [`LevelAction::Delete`]).
        orders: u32,
        /// What happened.
        action: LevelAction,
    },
    /// The top of the book changed; sent after the event's level updates.
    Bbo(Bbo),
}

/// What [`BookBuilder::apply`] made of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Applied (for a `Trade`: recorded as a print).
    Applied,
    /// The named order is not live on that instrument; only print statistics changed.
    UnknownRef,
    /// An `Add` (or the new side of a `Replace`) named a live reference.
    DuplicateAdd,
    /// The order table is full; the order was not added.
    CapacityExhausted,
    /// No book left for a new instrument; the event was dropped.
    InstrumentsExhausted,
    /// An order of 0 shares: nothing rests.
    EmptyOrder,
    /// An [`OrderEvent::Invalid`]: counted, nothing changed.
    Invalid,
    /// An order event for a book of price levels, or a level for a book of orders: counted,
    /// nothing changed.
    Mixed,
    /// A price level deleted that the book does not hold: counted, nothing changed.
    UnknownLevel,
}

/// Totals over all instruments; every anomaly the builder meets is counted here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct BookCounters {
    /// Events applied.
    pub events: u64,
    /// Events naming an order that is not live (on the instrument named).
    pub unknown_refs: u64,
    /// Adds (or replacements) whose reference was already live.
    pub duplicate_adds: u64,
    /// Orders refused because `max_orders` orders were live.
    pub capacity_exhausted: u64,
    /// Events dropped because every book was taken by other instruments.
    pub instruments_exhausted: u64,
    /// Events after which a book was crossed (best bid above best ask).
    pub crossed: u64,
    /// Events after which a book was locked (best bid equal to best ask).
    pub locked: u64,
    /// Executions or cancels of more shares than the order had (the order was removed).
    pub overfills: u64,
    /// Adds or replacements of 0 shares.
    pub empty_orders: u64,
    /// [`OrderEvent::Invalid`] events.
    pub invalid: u64,
    /// Times a side outgrew `levels_per_side_hint` and allocated.
    pub level_growths: u64,
    /// Times the order table grew (by half) to hold more live orders, above
    /// [`PREALLOCATED_ORDERS`]: a rehash each. Serialized only when not 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub order_table_growths: u64,
    /// The longest one of those growths held up the thread applying events (the rehash of
    /// the live orders, and any wait for the step's memory), in nanoseconds; the largest
    /// over added counters. Serialized only when not 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub order_table_growth_max_ns: u64,
    /// Order table and ladders disagreed (never expected; a bug if not 0).
    pub inconsistencies: u64,
    /// Events for a book of the other shape (an order event on a level book, a level on an
    /// order book). Serialized only when not 0, like the two below, so that order-only
    /// summaries keep their form.
    #[serde(skip_serializing_if = "is_zero")]
    pub mixed: u64,
    /// Price levels deleted that the book did not hold.
    #[serde(skip_serializing_if = "is_zero")]
    pub unknown_levels: u64,
    /// Times staged level updates were published before their flush (more than
    /// [`MAX_STAGED_LEVELS`] staged).
    #[serde(skip_serializing_if = "is_zero")]
    pub batch_overflows: u64,
}

impl std::ops::AddAssign<&BookCounters> for BookCounters {
    /// Adds the counters of other books (another share of a feed's instruments).
    fn add_assign(&mut self, o: &BookCounters) {
        // Destructured, so that a new counter cannot be left out.
        let BookCounters {
            events,
            unknown_refs,
            duplicate_adds,
            capacity_exhausted,
            instruments_exhausted,
            crossed,
            locked,
            overfills,
            empty_orders,
            invalid,
            level_growths,
            order_table_growths,
            order_table_growth_max_ns,
            inconsistencies,
            mixed,
            unknown_levels,
            batch_overflows,
        } = *o;
        self.events += events;
        self.unknown_refs += unknown_refs;
        self.duplicate_adds += duplicate_adds;
        self.capacity_exhausted += capacity_exhausted;
        self.instruments_exhausted += instruments_exhausted;
        self.crossed += crossed;
        self.locked += locked;
        self.overfills += overfills;
        self.empty_orders += empty_orders;
        self.invalid += invalid;
        self.level_growths += level_growths;
        self.order_table_growths += order_table_growths;
        self.order_table_growth_max_ns = self
            .order_table_growth_max_ns
            .max(order_table_growth_max_ns);
        self.inconsistencies += inconsistencies;
        self.mixed += mixed;
        self.unknown_levels += unknown_levels;
        self.batch_overflows += batch_overflows;
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Statistics of one instrument's book.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BookStats {
    /// Orders resting now.
    pub resting_orders: u64,
    /// Shares of every execution and trade print.
    pub executed_shares: u64,
    /// Execution and trade messages.
    pub prints: u64,
    /// Events naming an order not live on this instrument.
    pub unknown_refs: u64,
    /// Events after which the book was crossed.
    pub crossed: u64,
    /// Events after which the book was locked.
    pub locked: u64,
}

/// One instrument's book: what an event reads or writes, in two whole cache lines (the pair
/// the adjacent-line prefetcher brings together). The counters only rare events touch are
/// kept apart, in [`RareStats`].
#[derive(Debug)]
#[repr(align(128))]
struct Book {
    bids: Ladder,
    asks: Ladder,
    /// The top last published.
    top: Top,
    /// Orders resting now.
    resting_orders: u64,
    /// Shares of every execution and trade print.
    executed_shares: u64,
    /// Execution and trade messages.
    prints: u64,
    /// The locate the book was handed out to.
    locate: u16,
    /// Orders or levels, fixed by the first event that rests something.
    kind: Kind,
    /// Listed in [`BookBuilder::dirty`]: a level changed since the last flush.
    dirty: bool,
}
const _: () = assert!(size_of::<Book>() == 128);

/// Bytes of one book and its rare counters, before its levels.
const BOOK_BYTES: usize = size_of::<Book>() + size_of::<RareStats>();

/// The counters of one book that only rare events touch (an unknown reference, a crossed or
/// locked book), beside the books so that they do not take room in the books' cache lines.
#[derive(Clone, Copy, Debug, Default)]
struct RareStats {
    unknown_refs: u64,
    crossed: u64,
    locked: u64,
}

/// What a book is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Nothing rested yet.
    Unset,
    /// Orders (L3).
    Orders,
    /// Price levels (L2).
    Levels,
}

/// The best level of each side; `NO_LEVEL` (no orders) for an empty side. Plain levels, not
/// `Option`s: comparing two tops is four word compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Top {
    bid: Level,
    ask: Level,
}

/// The best level of an empty side (a real level has shares).
const NO_LEVEL: Level = Level {
    price: 0,
    orders: 0,
    shares: 0,
};

impl Default for Top {
    fn default() -> Self {
        Top {
            bid: NO_LEVEL,
            ask: NO_LEVEL,
        }
    }
}

/// The price of `l`, `None` for `NO_LEVEL`. A real level has shares (an order of 0 shares
/// never rests, an order left with none leaves), but may not know its orders (a level book's
/// venue need not say).
#[inline]
fn price_of(l: Level) -> Option<u32> {
    (l.shares != 0).then_some(l.price)
}

impl Book {
    fn new(levels: usize) -> Option<Self> {
        Some(Self {
            bids: Ladder::new(Side::Bid, levels)?,
            asks: Ladder::new(Side::Ask, levels)?,
            top: Top::default(),
            resting_orders: 0,
            executed_shares: 0,
            prints: 0,
            locate: 0,
            kind: Kind::Unset,
            dirty: false,
        })
    }

    #[inline]
    fn ladder(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Bid => &mut self.bids,
            Side::Ask => &mut self.asks,
        }
    }

    #[inline]
    fn current_top(&self) -> Top {
        Top {
            bid: self.bids.best().copied().unwrap_or(NO_LEVEL),
            ask: self.asks.best().copied().unwrap_or(NO_LEVEL),
        }
    }

    fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.resting_orders = 0;
        self.executed_shares = 0;
        self.prints = 0;
        self.top = Top::default();
        self.kind = Kind::Unset;
        self.dirty = false;
    }
}

const NO_BOOK: u32 = u32::MAX;

/// Order books of every instrument of a feed, in storage preallocated from a [`BookConfig`].
#[derive(Debug)]
pub struct BookBuilder {
    config: BookConfig,
    orders: OrderTable,
    /// Book index of each locate, or `NO_BOOK`.
    index: Box<[u32]>,
    /// Every book, made up front; the first `used` are assigned.
    books: Box<[Book]>,
    /// The rare counters of each book, by the same index.
    rare: Box<[RareStats]>,
    used: usize,
    counters: BookCounters,
    /// Level updates held until [`flush_levels`](Self::flush_levels), capacity
    /// [`MAX_STAGED_LEVELS`].
    staged: Vec<BookUpdate>,
    /// Books whose levels changed since the last flush, capacity `max_instruments`.
    dirty: Vec<u32>,
}

impl BookBuilder {
    /// Allocates and writes all storage for `config` now.
    pub fn new(config: BookConfig) -> Result<Self, BookConfigError> {
        if config.max_orders == 0 {
            return Err(BookConfigError::NoOrders);
        }
        if config.max_instruments == 0 || config.max_instruments > LOCATES {
            return Err(BookConfigError::Instruments(config.max_instruments));
        }
        // A maximum beyond any address space is refused now, not at its first growth.
        let whole = config.max_memory_bytes();
        if whole > isize::MAX as usize {
            return Err(BookConfigError::OutOfMemory { bytes: whole });
        }
        let oom = BookConfigError::OutOfMemory {
            bytes: config.memory_bytes(),
        };
        let orders = OrderTable::new(config.max_orders).map_err(|e| match e {
            NoRoom::AddressSpace => BookConfigError::AddressSpace {
                bytes: OrderTable::reserved_bytes(config.max_orders),
            },
            NoRoom::Memory => oom,
        })?;
        let mut books = Vec::new();
        books
            .try_reserve_exact(config.max_instruments)
            .map_err(|_| oom)?;
        for _ in 0..config.max_instruments {
            books.push(Book::new(config.levels_per_side_hint).ok_or(oom)?);
        }
        let mut staged = Vec::new();
        staged
            .try_reserve_exact(MAX_STAGED_LEVELS)
            .map_err(|_| oom)?;
        let mut dirty = Vec::new();
        dirty
            .try_reserve_exact(config.max_instruments)
            .map_err(|_| oom)?;
        Ok(Self {
            config,
            orders,
            index: vec![NO_BOOK; LOCATES].into_boxed_slice(),
            books: books.into_boxed_slice(),
            rare: vec![RareStats::default(); config.max_instruments].into_boxed_slice(),
            used: 0,
            counters: BookCounters::default(),
            staged,
            dirty,
        })
    }

    /// The configuration the builder was made with.
    pub fn config(&self) -> &BookConfig {
        &self.config
    }

    /// Bytes of storage held now (the preallocation plus any growth of the level ladders).
    pub fn memory_bytes(&self) -> usize {
        self.orders.bytes()
            + self.index.len() * size_of::<u32>()
            + self
                .books
                .iter()
                .map(|b| BOOK_BYTES + (b.bids.capacity() + b.asks.capacity()) * LEVEL_BYTES)
                .sum::<usize>()
            + self.staged.capacity() * size_of::<BookUpdate>()
            + self.dirty.capacity() * size_of::<u32>()
    }

    /// Counters over all instruments.
    pub fn counters(&self) -> &BookCounters {
        &self.counters
    }

    /// Live orders over all instruments.
    pub fn live_orders(&self) -> usize {
        self.orders.len()
    }

    /// Live orders the order table has room for now, before its next growth.
    pub fn order_capacity(&self) -> usize {
        self.orders.capacity()
    }

    /// Grows the order table now, off the hot path, to hold `orders` live orders (at most
    /// `max_orders`) without a growth while events are applied; with `max_orders` it makes
    /// the builder's storage whole. Counted in `order_table_growths` when it grew.
    pub fn reserve_orders(&mut self, orders: usize) -> Result<(), BookConfigError> {
        let before = self.orders.capacity();
        if !self.orders.reserve(orders) {
            return Err(BookConfigError::OutOfMemory {
                bytes: self.config.max_memory_bytes(),
            });
        }
        if self.orders.capacity() != before {
            self.count_growth();
        }
        Ok(())
    }

    /// Counts an order table growth and how long it took.
    #[cold]
    fn count_growth(&mut self) {
        let c = &mut self.counters;
        c.order_table_growths += 1;
        c.order_table_growth_max_ns = c
            .order_table_growth_max_ns
            .max(self.orders.last_growth_ns());
    }

    /// Deletes every order resting on `locate` (a venue's "clear book" for one instrument),
    /// publishing each level change and the new top as [`apply`](Self::apply) does; returns
    /// how many orders went. Walks the whole order table and allocates: for rare events only.
    pub fn clear_orders(&mut self, locate: u16, out: &mut impl UpdateSink) -> usize {
        let refs = self.orders.refs_on(locate);
        for &order_ref in &refs {
            self.apply(&OrderEvent::Delete { locate, order_ref }, out);
        }
        refs.len()
    }

    /// Forgets every order and book (a new session), keeping the storage.
    pub fn reset(&mut self) {
        self.orders.clear();
        for b in &mut self.books[..self.used] {
            b.clear();
        }
        self.rare[..self.used].fill(RareStats::default());
        self.index.fill(NO_BOOK);
        self.used = 0;
        self.counters = BookCounters::default();
        self.staged.clear();
        self.dirty.clear();
    }

    #[inline]
    fn book(&self, locate: u16) -> Option<&Book> {
        self.index_of(locate).map(|i| &self.books[i])
    }

    /// Index of `locate`'s book in `books` (and `rare`); `None` if no event has named it
    /// ([`book_index`](Self::book_index) hands one out).
    fn index_of(&self, locate: u16) -> Option<usize> {
        match self.index[usize::from(locate)] {
            NO_BOOK => None,
            i => Some(i as usize),
        }
    }

    /// Best bid and offer of `locate`; `None` if no event has named it.
    pub fn bbo(&self, locate: u16) -> Option<Bbo> {
        let top = self.book(locate)?.current_top();
        Some(bbo_of(locate, top))
    }

    /// Price levels of one side of `locate`, best first (empty if no event has named it).
    pub fn levels(&self, locate: u16, side: Side) -> impl Iterator<Item = Level> + '_ {
        self.book(locate)
            .map(|b| match side {
                Side::Bid => &b.bids,
                Side::Ask => &b.asks,
            })
            .into_iter()
            .flat_map(Ladder::iter)
    }

    /// Number of price levels on one side of `locate`.
    pub fn depth(&self, locate: u16, side: Side) -> usize {
        self.book(locate).map_or(0, |b| match side {
            Side::Bid => b.bids.len(),
            Side::Ask => b.asks.len(),
        })
    }

    /// Orders resting on `locate`'s book.
    pub fn resting_orders(&self, locate: u16) -> usize {
        self.book(locate).map_or(0, |b| b.resting_orders as usize)
    }

    /// Statistics of `locate`'s book; `None` if no event has named it.
    pub fn stats(&self, locate: u16) -> Option<BookStats> {
        let i = self.index_of(locate)?;
        let (book, rare) = (&self.books[i], self.rare[i]);
        Some(BookStats {
            resting_orders: book.resting_orders,
            executed_shares: book.executed_shares,
            prints: book.prints,
            unknown_refs: rare.unknown_refs,
            crossed: rare.crossed,
            locked: rare.locked,
        })
    }

    /// The live order `order_ref`.
    pub fn order(&self, order_ref: u64) -> Option<&Order> {
        self.orders.get(order_ref)
    }

    /// Starts loading the order table slots `ev` will touch (the order it names; both orders
    /// of a replace) and its instrument's book into the cache, and returns at once. Applying
    /// `ev` a little later then finds them there instead of waiting for memory: with
    /// references spread over a whole market and thousands of books, those waits are most of
    /// the cost of an event. Only a hint (x86_64 prefetch; nothing on other targets): it
    /// changes no state, and `ev` need not be applied after all.
    #[inline]
    pub fn prefetch(&self, ev: &OrderEvent) {
        if let Some(&b) = self.index.get(usize::from(ev.locate()))
            && let Some(book) = self.books.get(b as usize)
        {
            // Every cache line the book spans (it need not start on one).
            let p: *const u8 = (book as *const Book).cast();
            for at in (0..size_of::<Book>()).step_by(64) {
                prefetch_line(p.wrapping_add(at));
            }
            prefetch_line(p.wrapping_add(size_of::<Book>() - 1));
        }
        match *ev {
            OrderEvent::Add { order_ref, .. }
            | OrderEvent::Execute { order_ref, .. }
            | OrderEvent::ExecuteWithPrice { order_ref, .. }
            | OrderEvent::Cancel { order_ref, .. }
            | OrderEvent::Delete { order_ref, .. } => self.orders.prefetch(order_ref),
            OrderEvent::Replace {
                old_ref, new_ref, ..
            } => {
                self.orders.prefetch(old_ref);
                self.orders.prefetch(new_ref);
            }
            OrderEvent::Trade { .. } | OrderEvent::Invalid { .. } => {}
        }
    }

    /// Starts loading the top levels of both sides of `ev`'s book into the cache; returns at
    /// once. The ladders hang off the book, so this reads the book: call it after
    /// [`prefetch`](Self::prefetch) for the same event has had time to bring the book in.
    #[inline]
    pub fn prefetch_levels(&self, ev: &OrderEvent) {
        if let Some(&b) = self.index.get(usize::from(ev.locate()))
            && let Some(book) = self.books.get(b as usize)
        {
            book.bids.prefetch_top();
            book.asks.prefetch_top();
        }
    }

    /// Locates that have a book, ascending.
    pub fn locates(&self) -> impl Iterator<Item = u16> + '_ {
        self.index
            .iter()
            .enumerate()
            .filter(|(_, i)| **i != NO_BOOK)
            .map(|(l, _)| l as u16)
    }

    /// Applies one event, calling `out` with each level it changed and then, if the top of the
    /// book changed, the new best bid and offer. Never allocates (see the module docs for the
    /// one counted exception), never panics on any event sequence.
    #[inline]
    pub fn apply(&mut self, ev: &OrderEvent, out: &mut impl UpdateSink) -> Outcome {
        self.counters.events += 1;
        match *ev {
            OrderEvent::Add {
                locate,
                order_ref,
                side,
                price,
                shares,
            } => self.add(locate, order_ref, side, price, shares, out),
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
                let Some(b) = self.book_index(locate) else {
                    return Outcome::InstrumentsExhausted;
                };
                let book = &mut self.books[b];
                book.executed_shares += u64::from(shares);
                book.prints += 1;
                self.reduce(locate, order_ref, Some(shares), out)
            }
            OrderEvent::Cancel {
                locate,
                order_ref,
                shares,
            } => self.reduce(locate, order_ref, Some(shares), out),
            OrderEvent::Delete { locate, order_ref } => self.reduce(locate, order_ref, None, out),
            OrderEvent::Replace {
                locate,
                old_ref,
                new_ref,
                shares,
                price,
            } => self.replace(locate, old_ref, new_ref, shares, price, out),
            OrderEvent::Trade { locate, shares, .. } => {
                let Some(b) = self.book_index(locate) else {
                    return Outcome::InstrumentsExhausted;
                };
                let book = &mut self.books[b];
                book.executed_shares += u64::from(shares);
                book.prints += 1;
                Outcome::Applied
            }
            OrderEvent::Invalid { .. } => {
                self.counters.invalid += 1;
                Outcome::Invalid
            }
        }
    }

    /// The book of `locate`, handed out now if it has none; `None` (counted) when all books
    /// are taken.
    #[inline]
    fn book_index(&mut self, locate: u16) -> Option<usize> {
        let slot = &mut self.index[usize::from(locate)];
        if *slot != NO_BOOK {
            return Some(*slot as usize);
        }
        if self.used == self.books.len() {
            self.counters.instruments_exhausted += 1;
            return None;
        }
        *slot = self.used as u32;
        self.books[self.used].locate = locate;
        self.used += 1;
        Some(self.used - 1)
    }

    fn add(
        &mut self,
        locate: u16,
        order_ref: u64,
        side: Side,
        price: u32,
        shares: u32,
        out: &mut impl UpdateSink,
    ) -> Outcome {
        let Some(b) = self.book_index(locate) else {
            return Outcome::InstrumentsExhausted;
        };
        let kind = &mut self.books[b].kind;
        if *kind != Kind::Orders {
            if *kind == Kind::Levels {
                self.counters.mixed += 1;
                return Outcome::Mixed;
            }
            *kind = Kind::Orders;
        }
        if shares == 0 {
            self.counters.empty_orders += 1;
            return Outcome::EmptyOrder;
        }
        let order = Order {
            order_ref,
            price,
            shares,
            locate,
            side,
        };
        match self.orders.insert(order) {
            Insert::Inserted => {}
            Insert::Grew => self.count_growth(),
            Insert::Duplicate => {
                self.counters.duplicate_adds += 1;
                return Outcome::DuplicateAdd;
            }
            Insert::Full => {
                self.counters.capacity_exhausted += 1;
                return Outcome::CapacityExhausted;
            }
        }
        let book = &mut self.books[b];
        let (t, grew) = book.ladder(side).add(price, shares);
        self.counters.level_growths += u64::from(grew);
        book.resting_orders += 1;
        emit_level(locate, side, t, out);
        self.after_change(b, locate, out);
        Outcome::Applied
    }

    /// Execute, cancel (`shares` given) or delete (`None`) an order.
    #[inline(always)]
    fn reduce(
        &mut self,
        locate: u16,
        order_ref: u64,
        shares: Option<u32>,
        out: &mut impl UpdateSink,
    ) -> Outcome {
        let Some(slot) = self.live_on(locate, order_ref) else {
            return self.unknown(locate);
        };
        let o = self.orders.at_mut(slot);
        let (side, price, had) = (o.side, o.price, o.shares);
        let taken = shares.map_or(had, |s| s.min(had));
        if shares.is_some_and(|s| s > had) {
            self.counters.overfills += 1;
        }
        // The order leaves the book once it has no shares left.
        let gone = taken == had;
        if gone {
            self.orders.remove_at(slot);
        } else {
            o.shares -= taken;
        }
        let b = self.index[usize::from(locate)] as usize;
        let book = &mut self.books[b];
        if gone {
            book.resting_orders -= 1;
        }
        if taken == 0 && !gone {
            return Outcome::Applied;
        }
        match book.ladder(side).reduce(price, taken, u32::from(gone)) {
            Some(t) => emit_level(locate, side, t, out),
            None => self.counters.inconsistencies += 1,
        }
        self.after_change(b, locate, out);
        Outcome::Applied
    }

    fn replace(
        &mut self,
        locate: u16,
        old_ref: u64,
        new_ref: u64,
        shares: u32,
        price: u32,
        out: &mut impl UpdateSink,
    ) -> Outcome {
        let Some(slot) = self.live_on(locate, old_ref) else {
            return self.unknown(locate);
        };
        let old = *self.orders.at(slot);
        let duplicate = new_ref != old_ref && self.orders.find(new_ref).is_some();
        self.orders.remove_at(slot);
        let b = self.index[usize::from(locate)] as usize;
        let side = old.side;
        let outcome = if duplicate {
            self.counters.duplicate_adds += 1;
            Outcome::DuplicateAdd
        } else if shares == 0 {
            self.counters.empty_orders += 1;
            Outcome::EmptyOrder
        } else {
            // Cannot fail: a slot was just freed and `new_ref` is not live.
            let ins = self.orders.insert(Order {
                order_ref: new_ref,
                price,
                shares,
                locate,
                side,
            });
            debug_assert!(matches!(ins, Insert::Inserted | Insert::Grew));
            Outcome::Applied
        };
        let book = &mut self.books[b];
        let ladder = book.ladder(side);
        if outcome == Outcome::Applied && price == old.price {
            match ladder.resize(price, old.shares, shares) {
                Some(t) if shares != old.shares => emit_level(locate, side, t, out),
                Some(_) => {}
                None => self.counters.inconsistencies += 1,
            }
        } else {
            match ladder.reduce(old.price, old.shares, 1) {
                Some(t) => emit_level(locate, side, t, out),
                None => self.counters.inconsistencies += 1,
            }
            if outcome == Outcome::Applied {
                let (t, grew) = book.ladder(side).add(price, shares);
                self.counters.level_growths += u64::from(grew);
                emit_level(locate, side, t, out);
            } else {
                book.resting_orders -= 1;
            }
        }
        self.after_change(b, locate, out);
        outcome
    }

    /// Slot of `order_ref` if it is live on `locate`.
    #[inline]
    fn live_on(&self, locate: u16, order_ref: u64) -> Option<usize> {
        self.orders
            .find(order_ref)
            .filter(|&i| self.orders.at(i).locate == locate)
    }

    /// An event naming an order not live on `locate`: an unknown reference, or an order
    /// event for a level book (no order ever rests there).
    #[inline]
    fn unknown(&mut self, locate: u16) -> Outcome {
        match self.book_index(locate) {
            Some(b) if self.books[b].kind == Kind::Levels => {
                self.counters.mixed += 1;
                Outcome::Mixed
            }
            Some(b) => {
                self.counters.unknown_refs += 1;
                self.rare[b].unknown_refs += 1;
                Outcome::UnknownRef
            }
            None => {
                self.counters.unknown_refs += 1;
                Outcome::InstrumentsExhausted
            }
        }
    }

    /// Sets one price level of a level (L2) book and holds its update until
    /// [`flush_levels`](Self::flush_levels) (see the module docs). `out` receives updates
    /// only when more than [`MAX_STAGED_LEVELS`] are held. Never allocates beyond the counted
    /// growth of a side, never panics.
    #[inline]
    pub fn set_level(&mut self, ev: &LevelEvent, out: &mut impl UpdateSink) -> Outcome {
        self.counters.events += 1;
        let LevelEvent {
            locate,
            side,
            price,
            shares,
            orders,
        } = *ev;
        let Some(b) = self.book_index(locate) else {
            return Outcome::InstrumentsExhausted;
        };
        let book = &mut self.books[b];
        match book.kind {
            Kind::Levels => {}
            Kind::Unset => book.kind = Kind::Levels,
            Kind::Orders => {
                self.counters.mixed += 1;
                return Outcome::Mixed;
            }
        }
        let t = match book.ladder(side).set(price, shares, orders) {
            Set::Touched(t, grew) => {
                self.counters.level_growths += u64::from(grew);
                t
            }
            Set::Same => return Outcome::Applied,
            Set::Absent => {
                self.counters.unknown_levels += 1;
                return Outcome::UnknownLevel;
            }
        };
        if !book.dirty {
            book.dirty = true;
            // Cannot outgrow its capacity: each book is listed at most once.
            self.dirty.push(b as u32);
        }
        if self.staged.len() == self.staged.capacity() {
            self.counters.batch_overflows += 1;
            for u in self.staged.drain(..) {
                out.update(u);
            }
        }
        self.staged.push(level_update(locate, side, t));
        Outcome::Applied
    }

    /// Publishes what [`set_level`](Self::set_level) held: every level update in order, then
    /// the top of each book it changed (and counts crossed and locked books, as
    /// [`apply`](Self::apply) does).
    pub fn flush_levels(&mut self, out: &mut impl UpdateSink) {
        for u in self.staged.drain(..) {
            out.update(u);
        }
        for i in 0..self.dirty.len() {
            let b = self.dirty[i] as usize;
            let book = &mut self.books[b];
            book.dirty = false;
            let locate = book.locate;
            self.after_change(b, locate, out);
        }
        self.dirty.clear();
    }

    /// [`set_level`](Self::set_level) and [`flush_levels`](Self::flush_levels) at once: for
    /// a venue whose every level update is complete in itself.
    #[inline]
    pub fn apply_level(&mut self, ev: &LevelEvent, out: &mut impl UpdateSink) -> Outcome {
        let o = self.set_level(ev, out);
        self.flush_levels(out);
        o
    }

    /// Level updates held for the next [`flush_levels`](Self::flush_levels).
    pub fn staged_levels(&self) -> usize {
        self.staged.len()
    }

    /// Counts a crossed or locked top and publishes the top if it changed.
    #[inline(always)]
    fn after_change(&mut self, b: usize, locate: u16, out: &mut impl UpdateSink) {
        let book = &mut self.books[b];
        let top = book.current_top();
        if let (Some(bid), Some(ask)) = (price_of(top.bid), price_of(top.ask)) {
            if bid > ask {
                self.rare[b].crossed += 1;
                self.counters.crossed += 1;
            } else if bid == ask {
                self.rare[b].locked += 1;
                self.counters.locked += 1;
            }
        }
        if top != book.top {
            book.top = top;
            out.update(BookUpdate::Bbo(bbo_of(locate, top)));
        }
    }
}

#[inline]
fn bbo_of(locate: u16, top: Top) -> Bbo {
    Bbo {
        locate,
        bid_price: price_of(top.bid),
        bid_size: top.bid.shares,
        bid_orders: top.bid.orders,
        ask_price: price_of(top.ask),
        ask_size: top.ask.shares,
        ask_orders: top.ask.orders,
    }
}

#[inline]
fn emit_level(locate: u16, side: Side, t: Touched, out: &mut impl UpdateSink) {
    out.update(level_update(locate, side, t));
}

#[inline]
fn level_update(locate: u16, side: Side, t: Touched) -> BookUpdate {
    let (shares, orders, action) = if t.removed {
        (0, 0, LevelAction::Delete)
    } else if t.created {
        (t.level.shares, t.level.orders, LevelAction::New)
    } else {
        (t.level.shares, t.level.orders, LevelAction::Change)
    };
    BookUpdate::Level {
        locate,
        side,
        price: t.level.price,
        shares,
        orders,
        action,
    }
}
