//! The order book as a bus service: reads a feed's normalized stream, keeps every instrument's
//! book with a [`BookBuilder`], and publishes what changed.
//!
//! ```text
//!   <feed>          normalized envelopes (AddOrder, OrderExecuted, ..., PriceLevelUpdate,
//!      |            IEX's Iex* events, GapNotice)
//!      |
//!  BookService ---> <feed>.book    Bbo, StockDirectory / IexSecurityDirectory, GapNotice,
//!              |                   EndOfSession
//!              |--> <feed>.levels  PriceLevelUpdate, the directory, GapNotice, EndOfSession
//!              |                   (only with `publish_levels`)
//!              \--> <feed>.trades  Trade (E, C, P with the price resolved; IEX T and L),
//!                                  CrossTrade, BrokenTrade, GapNotice, EndOfSession
//! ```
//!
//! * **Headers.** Every published event carries the header of the source message it came
//!   from: source sequence number, exchange timestamp, *receive timestamp*, stock locate,
//!   tracking number and delivery flags. A strategy therefore measures tick-to-strategy
//!   latency end to end by comparing its own clock with `recv_ts_ns`.
//! * **Book stream.** After each source message that changed the top of a book: one `Bbo`
//!   (with the order counts at the best levels). A strategy that only wants the top reads no
//!   depth. Stock directory (`R`) messages are forwarded so that subscribers can name
//!   instruments.
//! * **Levels stream.** Depth, on a stream of its own so that top-of-book readers never skip
//!   it: after each source message that changed a book, one `PriceLevelUpdate` per level
//!   touched (published before that message's `Bbo` on the book stream). It also carries the
//!   stock directory, the gap notices and the end of session, so that a depth reader names
//!   instruments, knows about loss and sees the end without reading the book stream. It
//!   exists only when [`BookServiceConfig::publish_levels`] is set. Like the other outputs it
//!   uses the [`BookServiceConfig::output`] ring: on a lossless ring only subscribers that
//!   ask for a lossless slot hold the service back, so nobody has to read it.
//! * **Price levels in.** A venue that publishes price levels instead of orders sends
//!   `PriceLevelUpdate` events: each sets one level of the instrument's book of levels (see
//!   [`crate::book`]) and is published at once, as an order message is (level update, then
//!   the `Bbo` if the top changed). An instrument takes orders or levels, not both: the other
//!   kind is counted by the builder (`mixed`), not applied.
//! * **IEX in.** IEX's envelopes (`Iex*`) build books the same way ([`EnvelopeBooks::apply_iex`]):
//!   DEEP price level updates are staged and published (levels, then the `Bbo`) only at the
//!   update whose Event Flags say "event processing complete", so a strategy never sees half
//!   an event; DEEP+ orders are L3 events (a Clear Book deletes the symbol's orders); a TOPS
//!   quote update is published as the instrument's `Bbo` (order counts 0). Trade reports and
//!   DEEP+ order executions are published on the trade stream as `Trade` (`match_number` the
//!   IEX trade id, `buy_sell_indicator` the resting order's side when known, else `Unknown`),
//!   trade breaks as `BrokenTrade`. **Naming:** an IEX Security Directory is forwarded on the
//!   book and levels streams as it is; since IEX messages carry their symbol and a feed joined
//!   mid-day may never send the directory, the first message about an instrument not named yet
//!   is preceded there by an `IexSecurityDirectory` made from that symbol (timestamp, flags,
//!   round lot, price and tier 0: only the symbol is known). Every instrument a subscriber
//!   sees a `Bbo` of has been named first. At the end of the session, levels of an event
//!   that never completed are published before the `EndOfSession` (nothing can complete it).
//! * **Trade stream.** Prints with their price resolved, as the schema's `Trade` (non-cross)
//!   event: `E` takes the resting order's display price and side; `C` its execution price and
//!   the resting order's side (non-printable `C` executions are counted, not published: they
//!   do not count toward volume); `P` its own price and side. `order_reference_number` is the
//!   resting order (0 when the source had none), `match_number` the exchange's. The
//!   `buy_sell_indicator` is the side of the *resting* order, as in ITCH: a resting buy
//!   filled means the aggressor sold. An `E` naming an order the book does not hold has no
//!   price to give: it is counted ([`BookServiceStats::unpriced_prints`]), not published.
//!   Crosses (`Q`) and broken trades (`B`) are forwarded as they are.
//! * **Loss.** A `GapNotice` on the input is forwarded to every output (the book may be wrong
//!   from there on; the notice says which instrument, 0 for all). Records lost on the input
//!   ring itself (the service was lapped) become a `GapNotice` with `recoverable: false` and
//!   locate 0. `EndOfSession` is forwarded to every output, and ends [`BookService::run`].
//! * **Decoded input.** A feed handler that keeps the books on its own thread hands the
//!   service each decoded ITCH message instead of its envelope ([`BookService::accept_itch`],
//!   with [`BookService::handle_gap`] and [`BookService::handle_end_of_session`] for the
//!   notices it publishes, and [`BookService::flush`] when its input pauses): the outputs are
//!   the envelopes the service would publish reading the feed's stream, byte for byte (the
//!   header is the one the normalizer stamps), through the same builder, update sink and
//!   publishers, without reading the envelope back. A replay does so with
//!   [`Replayer::with_book_service`](crate::replay::Replayer::with_book_service).
//!
//! * **Shares.** With a [`Share`] of a split ([`BookServiceConfig::share`]), a service keeps
//!   the books of the instruments whose id modulo 64 falls in its share, skips the rest
//!   (counted, [`BookServiceStats::other_share`]) and publishes on `<feed>.<i>of<n>.book`,
//!   `.levels` and `.trades`; market-wide gap notices and the end of the session go out on
//!   every share's outputs. Two shares put a feed's book work on two cpus; a reader of both
//!   gets each instrument's events in source order, and the two shares' events in source
//!   order as far as both services have published.
//!
//! Nothing here allocates per message: the builder's storage and the encoder are made once,
//! in [`BookService::new`]; updates are published as the builder makes them.
//!
//! With [`BookService::publish_counters`], [`run`](BookService::run) keeps the service's
//! counters ([`BookServiceStats::NAMES`]) in the bus root (role [`COUNTERS_ROLE`], stream the
//! input feed, for `mdbus stat`): published at most every millisecond, the clock looked at
//! every [`COUNTERS_CHECK_EVERY`] input records and on idle turns, and once more at the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mdbus_bus::schema::{self as fb, Encoder, Envelope, FrameReader, HeaderFields};
use mdbus_bus::{
    Bus, BusError, Mode, PublishError, Publisher, ReceiveError, StreamConfig, Subscriber,
    WaitStrategy,
};

use mdbus_codecs::nasdaq::itch::Message;
use mdbus_codecs::nasdaq::normalize;
use mdbus_shm::counters::{CounterError, CounterFile};

use crate::book::{
    BookBuilder, BookConfig, BookConfigError, BookEvent, BookSummary, BookUpdate, EnvelopeBooks,
    GapPolicy, IexInput, InputRead, LevelAction, OrderEvent, Outcome, Side, TypeCounts, UpdateSink,
    book_event_from_envelope, iex_input_of_envelope, iex_symbol, instrument_of, is_iex_event,
    read_input, read_input_generic, read_trade,
};

pub use crate::book::{header_of, order_event_from_envelope};

/// Suffix of the book stream of a feed: `<feed>.book`.
pub const BOOK_SUFFIX: &str = ".book";
/// Suffix of the trade stream of a feed: `<feed>.trades`.
pub const TRADES_SUFFIX: &str = ".trades";
/// Suffix of the depth (price level) stream of a feed: `<feed>.levels`.
pub const LEVELS_SUFFIX: &str = ".levels";

/// Role of a book service's counters file (`<root>/<feed>.book.stat`).
pub const COUNTERS_ROLE: &str = "book";
/// Input records between two looks at the clock for the counters (besides idle turns).
pub const COUNTERS_CHECK_EVERY: usize = 1024;
/// Counters are published at most this often.
const COUNTERS_EVERY: Duration = Duration::from_millis(1);

/// The name of the book stream of `feed`.
pub fn book_stream_name(feed: &str) -> String {
    format!("{feed}{BOOK_SUFFIX}")
}

/// The name of the trade stream of `feed`.
pub fn trades_stream_name(feed: &str) -> String {
    format!("{feed}{TRADES_SUFFIX}")
}

/// The name of the depth (price level) stream of `feed`.
pub fn levels_stream_name(feed: &str) -> String {
    format!("{feed}{LEVELS_SUFFIX}")
}

/// Which instruments a [`BookService`] keeps books of: all of them ([`Share::ALL`]), or one
/// share of a split ([`Share::split`]). An instrument belongs by its id modulo 64: a share is
/// a set of those 64 residues, and the shares of a split partition them. Two services with
/// the two shares of a split build a feed's books on two cpus, each reading the whole feed
/// and skipping the other's instruments; each publishes on streams of its own,
/// `<feed>.<index>of<count>.book` and so on ([`Share::outputs`]). Market-wide messages
/// (instrument 0: the system events) are counted by the share that holds residue 0; gap
/// notices for all instruments and the end of the session are forwarded by every share,
/// each on its own outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Share {
    /// Which share of the split.
    index: u8,
    /// Shares in the split.
    count: u8,
    /// Bit `r` set: the instruments whose id is `r` modulo 64 are this share's.
    residues: u64,
}

impl Default for Share {
    fn default() -> Self {
        Share::ALL
    }
}

impl Share {
    /// Every instrument: the one service of a feed, publishing on `<feed>.book` and so on.
    pub const ALL: Share = Share {
        index: 0,
        count: 1,
        residues: u64::MAX,
    };
    /// The residues an instrument id is taken modulo: the finest a split can be.
    pub const RESIDUES: u32 = 64;

    /// Splits the instruments into shares of `parts[i]` residues of 64 each (the parts sum
    /// to 64; a share of 32 holds about half the instruments): share 0 takes residues `0..`
    /// `parts[0]`, share 1 the next `parts[1]`, and so on.
    pub fn split(parts: &[u32]) -> Result<Vec<Share>, String> {
        if parts.is_empty() || parts.len() > Share::RESIDUES as usize {
            return Err(format!(
                "book shares: {} shares; 1 to {} can be made",
                parts.len(),
                Share::RESIDUES
            ));
        }
        if parts.contains(&0) || parts.iter().sum::<u32>() != Share::RESIDUES {
            return Err(format!(
                "book shares: parts {parts:?} of the {} residues must be at least 1 each and sum to {}",
                Share::RESIDUES,
                Share::RESIDUES
            ));
        }
        let mut first = 0;
        Ok(parts
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let residues = (u64::MAX >> (Share::RESIDUES - n)) << first;
                first += n;
                Share {
                    index: i as u8,
                    count: parts.len() as u8,
                    residues,
                }
            })
            .collect())
    }

    /// This share's index in its split.
    pub fn index(self) -> usize {
        usize::from(self.index)
    }

    /// Shares in the split.
    pub fn count(self) -> usize {
        usize::from(self.count)
    }

    /// Residues (of 64) this share holds.
    pub fn residues(self) -> u32 {
        self.residues.count_ones()
    }

    /// Whether this share keeps the books (and counts the messages) of `instrument`; 0, the
    /// market-wide id, belongs to the share with residue 0.
    #[inline(always)]
    pub fn keeps(self, instrument: u32) -> bool {
        (self.residues >> (instrument % Share::RESIDUES)) & 1 != 0
    }

    /// Whether a notice about `instrument` (a gap notice, the end of the session) goes out on
    /// this share's outputs: one about every instrument (0) on every share's, one about an
    /// instrument on its own share's.
    #[inline]
    pub fn hears(self, instrument: u32) -> bool {
        instrument == 0 || self.keeps(instrument)
    }

    /// The base name of this share's output streams for `feed`: `feed` itself for
    /// [`ALL`](Self::ALL), `<feed>.<index>of<count>` otherwise (`book_stream_name` and the
    /// others add their suffixes to it).
    pub fn outputs(self, feed: &str) -> String {
        if self.count == 1 {
            feed.to_owned()
        } else {
            format!("{feed}.{}of{}", self.index, self.count)
        }
    }
}

/// What [`BookService::read_then`] hands an envelope's read to: `handle`'s or `accept`'s rest.
type ReadThen = fn(&mut BookService, InputRead, &Envelope<'_>) -> Handled;

/// An input order message, read out of its envelope: everything applying it and publishing
/// what it changed needs, as plain values that outlive the envelope's view.
#[derive(Clone, Copy, Debug)]
struct OrderInput {
    header: HeaderFields,
    ev: OrderEvent,
    /// The match number of an execution, the one print field only the envelope knows.
    match_number: u64,
}

/// How many order messages [`BookService::accept`] reads ahead of the one it applies: the
/// order table slots and the book each names are asked for when it is read, this many order
/// messages before they are needed. With references spread over a whole market most slots
/// are cold, and one miss costs about what handling a few messages does.
pub const APPLY_BEHIND: usize = 8;

/// How many order messages before it is applied a message's price levels are asked for. They
/// hang off its book, which must have arrived by then (asked for `APPLY_BEHIND` messages
/// before).
const LEVELS_AHEAD: usize = 4;

/// The order messages read and not yet applied, in a ring of [`APPLY_BEHIND`] slots: the
/// slot a message is read into is the one the message read `APPLY_BEHIND` before it leaves.
///
/// A message is written into its slot where it is read ([`fill`](Self::fill)), and the
/// oldest is copied out of its slot once, as a plain `OrderInput`: moved about as an
/// `Option`, or built apart and copied in at once, their narrow fields were read back in
/// wide loads before the stores had landed, which stalled every message until they did.
#[derive(Debug)]
struct Pending {
    slots: [OrderInput; APPLY_BEHIND],
    /// Which slots hold a message not applied yet.
    full: [bool; APPLY_BEHIND],
    /// The slot the next message goes into (which holds the oldest).
    at: usize,
}

impl Default for Pending {
    fn default() -> Self {
        let empty = OrderInput {
            header: HeaderFields::default(),
            ev: OrderEvent::Delete {
                locate: 0,
                order_ref: 0,
            },
            match_number: 0,
        };
        Self {
            slots: [empty; APPLY_BEHIND],
            full: [false; APPLY_BEHIND],
            at: 0,
        }
    }
}

impl Pending {
    /// Takes the slot the next message goes into: the one that holds the message read
    /// `APPLY_BEHIND` messages before, if any ([`held`](Self::held)), which must be taken
    /// out before [`fill`](Self::fill) writes over it.
    #[inline(always)]
    fn advance(&mut self) -> usize {
        let at = self.at;
        self.at = (at + 1) % APPLY_BEHIND;
        at
    }

    /// The message slot `at` holds, if any.
    #[inline(always)]
    fn held(&self, at: usize) -> Option<&OrderInput> {
        self.full[at].then(|| &self.slots[at])
    }

    /// Writes a message into slot `at` with `write`.
    #[inline(always)]
    fn fill(&mut self, at: usize, write: impl FnOnce(&mut OrderInput)) {
        write(&mut self.slots[at]);
        self.full[at] = true;
    }

    /// The message held in the slot [`advance`](Self::advance) returns `LEVELS_AHEAD` calls
    /// from now, if any.
    #[inline(always)]
    fn soon(&self) -> Option<&OrderInput> {
        self.held((self.at + LEVELS_AHEAD - 1) % APPLY_BEHIND)
    }

    /// Takes the oldest message out; `None` when none is left.
    #[inline]
    fn pop(&mut self) -> Option<OrderInput> {
        for _ in 0..APPLY_BEHIND {
            let at = self.advance();
            if std::mem::take(&mut self.full[at]) {
                return Some(self.slots[at]);
            }
        }
        None
    }
}

/// Configuration of a [`BookService`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookServiceConfig {
    /// Storage of the book builder.
    pub book: BookConfig,
    /// Ring of the `<feed>.book`, `<feed>.levels` and `<feed>.trades` streams.
    pub output: StreamConfig,
    /// Create the `<feed>.levels` stream and publish `PriceLevelUpdate` events on it (set
    /// false when nobody wants depth: the service then encodes none).
    pub publish_levels: bool,
    /// The instruments kept ([`Share::ALL`] by default).
    pub share: Share,
}

impl Default for BookServiceConfig {
    /// A full Nasdaq day ([`BookConfig::nasdaq_day`]), lossless 4 MiB output rings of 512-byte
    /// messages, levels published (on `<feed>.levels`).
    fn default() -> Self {
        BookServiceConfig {
            book: BookConfig::nasdaq_day(),
            output: output_ring(),
            publish_levels: true,
            share: Share::ALL,
        }
    }
}

/// The default ring of the book, levels and trade streams: lossless (a slow strategy holds the
/// book service back rather than losing updates), 4 MiB, envelopes of at most 512 bytes.
pub fn output_ring() -> StreamConfig {
    StreamConfig {
        capacity: 4 << 20,
        max_msg_len: 512,
        mode: Mode::Lossless,
        ..StreamConfig::default()
    }
}

/// Why a [`BookService`] could not be set up or stopped.
#[derive(Debug, thiserror::Error)]
pub enum BookServiceError {
    /// The book storage could not be made.
    #[error(transparent)]
    Book(#[from] BookConfigError),
    /// A stream could not be opened.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// An output stream refused a message that can never fit (its `max_msg_len` is too small).
    #[error("stream {stream:?}: {source}")]
    Publish {
        /// The output stream.
        stream: String,
        /// What the ring said.
        source: PublishError,
    },
    /// The counters file could not be created.
    #[error(transparent)]
    Counters(#[from] CounterError),
    /// The input stream reported a corrupt record; the service stopped.
    #[error("stream {stream:?}: {source}")]
    Input {
        /// The input stream.
        stream: String,
        /// What the ring said.
        source: ReceiveError,
    },
}

/// Counters of a [`BookService`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BookServiceStats {
    /// Envelopes read from the input stream.
    pub received: u64,
    /// Of those, ITCH-derived messages (the `messages` of the summary).
    pub messages: u64,
    /// Book events applied (adds, executions, cancels, deletes, replaces, trades).
    pub book_events: u64,
    /// `PriceLevelUpdate` events published.
    pub levels_published: u64,
    /// `Bbo` events published.
    pub bbos_published: u64,
    /// `Trade` events published.
    pub trades_published: u64,
    /// Crosses and broken trades forwarded.
    pub crosses_forwarded: u64,
    /// Executions that print but could not be priced (the resting order is unknown).
    pub unpriced_prints: u64,
    /// Non-printable `C` executions (applied to the book, not published as trades).
    pub non_printable: u64,
    /// Unrecoverable gap notices met on the input.
    pub gaps: u64,
    /// Times the service was lapped on the input ring.
    pub overruns: u64,
    /// Input records lost to those overruns.
    pub lost: u64,
    /// Publish attempts refused because a lossless subscriber was a full ring behind (each
    /// was retried until it went through).
    pub back_pressured: u64,
    /// Turns of [`BookService::poll`] that found the input empty: how often the service ran
    /// dry, waiting for its input (a service that keeps up counts many).
    pub idle_polls: u64,
    /// Input messages about instruments of another [`Share`] (skipped).
    pub other_share: u64,
    /// The input's `EndOfSession` was seen.
    pub ended: bool,
}

impl BookServiceStats {
    /// Names of the counters a book service publishes (role [`COUNTERS_ROLE`]), in the order
    /// of [`values`](Self::values): the fields of the same names (`ended` 1 when set).
    pub const NAMES: [&'static str; 16] = [
        "received",
        "messages",
        "book_events",
        "levels_published",
        "bbos_published",
        "trades_published",
        "crosses_forwarded",
        "unpriced_prints",
        "non_printable",
        "gaps",
        "overruns",
        "lost",
        "back_pressured",
        "idle_polls",
        "other_share",
        "ended",
    ];

    /// The counters of services that split a feed's books ([`Share`]s), as one: every
    /// share reads every input record and meets every market-wide gap notice, so `received`
    /// and `gaps` are the largest share's; the rest add up (overruns and their losses are
    /// each share's own); `ended` when every share ended.
    pub fn of_shares(shares: &[BookServiceStats]) -> BookServiceStats {
        let mut all = BookServiceStats {
            ended: !shares.is_empty(),
            ..BookServiceStats::default()
        };
        for s in shares {
            // Destructured, so that a new counter cannot be left out.
            let BookServiceStats {
                received,
                messages,
                book_events,
                levels_published,
                bbos_published,
                trades_published,
                crosses_forwarded,
                unpriced_prints,
                non_printable,
                gaps,
                overruns,
                lost,
                back_pressured,
                idle_polls,
                other_share,
                ended,
            } = *s;
            all.received = all.received.max(received);
            all.gaps = all.gaps.max(gaps);
            all.overruns += overruns;
            all.lost += lost;
            all.messages += messages;
            all.book_events += book_events;
            all.levels_published += levels_published;
            all.bbos_published += bbos_published;
            all.trades_published += trades_published;
            all.crosses_forwarded += crosses_forwarded;
            all.unpriced_prints += unpriced_prints;
            all.non_printable += non_printable;
            all.back_pressured += back_pressured;
            all.idle_polls += idle_polls;
            all.other_share += other_share;
            all.ended &= ended;
        }
        all
    }

    /// The counters in the order of [`NAMES`](Self::NAMES).
    pub fn values(&self) -> [u64; 16] {
        [
            self.received,
            self.messages,
            self.book_events,
            self.levels_published,
            self.bbos_published,
            self.trades_published,
            self.crosses_forwarded,
            self.unpriced_prints,
            self.non_printable,
            self.gaps,
            self.overruns,
            self.lost,
            self.back_pressured,
            self.idle_polls,
            self.other_share,
            u64::from(self.ended),
        ]
    }
}

/// What [`BookService::handle`] made of one input envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Keep going.
    Continue,
    /// The input's session ended (forwarded to every output).
    EndOfSession,
}

/// How to publish: the output streams.
#[derive(Debug)]
struct Outputs {
    book: Publisher,
    trades: Publisher,
    /// `None` unless levels are published.
    levels: Option<Publisher>,
    back_pressured: u64,
    /// Set when an output refuses a message for good (too large).
    failed: Option<(String, PublishError)>,
}

#[derive(Clone, Copy)]
enum To {
    Book,
    Trades,
    /// The levels stream; nothing is published when it does not exist.
    Levels,
}

impl Outputs {
    /// Every output stream's publisher: book, trades and, when published, levels.
    fn publishers(&mut self) -> impl Iterator<Item = &mut Publisher> {
        [&mut self.book, &mut self.trades]
            .into_iter()
            .chain(self.levels.as_mut())
    }

    /// Publishes `bytes` on every output (the levels stream when it exists).
    fn publish_everywhere(&mut self, bytes: &[u8]) {
        for to in [To::Book, To::Trades, To::Levels] {
            self.publish(to, bytes);
        }
    }

    /// Publishes `bytes`, retrying (spin, then yield) while a lossless subscriber holds the
    /// stream back. The first try is inlined; the retries are out of line.
    #[inline(always)]
    fn publish(&mut self, to: To, bytes: &[u8]) {
        let Some(p) = pick(&mut self.book, &mut self.trades, &mut self.levels, to) else {
            return;
        };
        if let Err(e) = p.publish_envelope(bytes) {
            self.publish_again(to, bytes, e);
        }
    }

    /// Encodes `event` with `header` and publishes it as [`publish`](Self::publish) does; the
    /// first try writes a hot-path kind straight into the ring
    /// ([`Publisher::publish_event`]). Retries publish the encoder's copy.
    #[inline(always)]
    fn publish_event<E: fb::EventFields>(
        &mut self,
        to: To,
        encoder: &mut Encoder,
        header: &HeaderFields,
        event: &E,
    ) {
        let Some(p) = pick(&mut self.book, &mut self.trades, &mut self.levels, to) else {
            return;
        };
        if let Err(e) = p.publish_event(encoder, header, event) {
            self.publish_again(to, &encoder.encode(header, event), e);
        }
    }

    /// [`publish`](Self::publish) after a first try failed with `first`.
    #[cold]
    #[inline(never)]
    fn publish_again(&mut self, to: To, bytes: &[u8], first: PublishError) {
        let Some(p) = pick(&mut self.book, &mut self.trades, &mut self.levels, to) else {
            return;
        };
        let mut result = Err(first);
        let mut spins = 0u32;
        loop {
            match result {
                Ok(_) => return,
                Err(PublishError::BackPressured) => {
                    self.back_pressured += 1;
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                Err(e) => {
                    if self.failed.is_none() {
                        self.failed = Some((p.name().to_owned(), e));
                    }
                    return;
                }
            }
            result = p.publish_envelope(bytes);
        }
    }
}

/// The publisher of output `to` (`None`: the levels stream, which does not exist).
#[inline(always)]
fn pick<'a>(
    book: &'a mut Publisher,
    trades: &'a mut Publisher,
    levels: &'a mut Option<Publisher>,
    to: To,
) -> Option<&'a mut Publisher> {
    match to {
        To::Book => Some(book),
        To::Trades => Some(trades),
        To::Levels => levels.as_mut(),
    }
}

/// The book service's [`UpdateSink`]: encodes each update, stamped with the input's header,
/// and publishes it on its output (level updates only when the levels stream exists). Always
/// inlined into the builder, where a closure was called out of line.
///
/// An update names its own instrument: one flush of staged levels (IEX) may publish the
/// books of instruments other than the input's, so the header's instrument is replaced by
/// the update's where they differ.
struct Publish<'a> {
    encoder: &'a mut Encoder,
    out: &'a mut Outputs,
    stats: &'a mut BookServiceStats,
    header: &'a HeaderFields,
}

impl UpdateSink for Publish<'_> {
    #[inline(always)]
    fn update(&mut self, u: BookUpdate) {
        let Publish {
            encoder,
            out,
            stats,
            header,
        } = self;
        let locate = match u {
            BookUpdate::Level { locate, .. } => locate,
            BookUpdate::Bbo(b) => b.locate,
        };
        let other;
        let header = if instrument_of(header) == u32::from(locate) {
            *header
        } else {
            other = for_instrument(header, locate);
            &other
        };
        match u {
            BookUpdate::Level {
                side,
                price,
                shares,
                orders,
                action,
                ..
            } => {
                if out.levels.is_none() {
                    return;
                }
                let fields = fb::PriceLevelUpdateFields {
                    side: fb_side(side),
                    price: i64::from(price),
                    size: shares,
                    order_count: orders,
                    action: match action {
                        LevelAction::New => fb::BookAction::New,
                        LevelAction::Change => fb::BookAction::Change,
                        LevelAction::Delete => fb::BookAction::Delete,
                    },
                };
                out.publish_event(To::Levels, encoder, header, &fields);
                stats.levels_published += 1;
            }
            BookUpdate::Bbo(bbo) => {
                let fields = fb::BboFields {
                    bid_price: bbo.bid_price.map_or(0, i64::from),
                    bid_size: bbo.bid_size,
                    bid_orders: bbo.bid_orders,
                    ask_price: bbo.ask_price.map_or(0, i64::from),
                    ask_size: bbo.ask_size,
                    ask_orders: bbo.ask_orders,
                };
                out.publish_event(To::Book, encoder, header, &fields);
                stats.bbos_published += 1;
            }
        }
    }
}

/// The book builder as a bus service; see the [module docs](self).
#[derive(Debug)]
pub struct BookService {
    /// The books, with the message counts and gaps of the summary.
    books: EnvelopeBooks,
    encoder: Encoder,
    /// Reads hot-path input envelopes in place (order messages), without following offsets.
    frames: FrameReader,
    out: Outputs,
    /// Symbol of every locate, from stock directory messages (spaces until seen).
    symbols: Box<[[u8; 8]]>,
    /// Counters; `messages` and `gaps` live in `books`.
    stats: BookServiceStats,
    input_name: String,
    /// Source sequence number of the last input message, for overrun gap notices.
    last_seq: u64,
    /// Order messages [`accept`](Self::accept)ed and not applied yet, their memory being
    /// fetched meanwhile; empty after [`flush`](Self::flush).
    pending: Pending,
    /// Where [`run`](Self::run) publishes the counters, and when it last did.
    counters: Option<(CounterFile, Instant)>,
    /// The instruments kept.
    share: Share,
}

impl BookService {
    /// Creates the book storage and the publishers of `<feed>.book`, `<feed>.trades` and (with
    /// [`publish_levels`](BookServiceConfig::publish_levels)) `<feed>.levels` on `bus` (with
    /// a [`Share`] of the instruments, `<feed>.<index>of<of>.book` and so on).
    /// Subscribe to the input (`feed`) yourself and hand it to [`run`](Self::run) or
    /// feed envelopes to [`handle`](Self::handle).
    pub fn new(
        bus: &Bus,
        feed: &str,
        config: &BookServiceConfig,
    ) -> Result<BookService, BookServiceError> {
        let books = EnvelopeBooks::new(config.book, GapPolicy::CountLost)?;
        let base = config.share.outputs(feed);
        let book = bus.publisher(&book_stream_name(&base), &config.output)?;
        let trades = bus.publisher(&trades_stream_name(&base), &config.output)?;
        let levels = if config.publish_levels {
            Some(bus.publisher(&levels_stream_name(&base), &config.output)?)
        } else {
            None
        };
        Ok(BookService {
            books,
            encoder: warm_encoder(),
            frames: FrameReader::new(),
            out: Outputs {
                book,
                trades,
                levels,
                back_pressured: 0,
                failed: None,
            },
            symbols: vec![*b"        "; 1 << 16].into_boxed_slice(),
            stats: BookServiceStats::default(),
            input_name: feed.to_owned(),
            last_seq: 0,
            pending: Pending::default(),
            counters: None,
            share: config.share,
        })
    }

    /// Publishes the service's counters ([`BookServiceStats::NAMES`]) under the bus root
    /// while [`run`](Self::run) runs, for `mdbus stat`: role [`COUNTERS_ROLE`], stream the
    /// input feed. `run` marks the file finished when it returns the final counters.
    pub fn publish_counters(&mut self, bus: &Bus) -> Result<(), BookServiceError> {
        let detail = format!(
            "{} -> {}, {}{}",
            self.input_name,
            self.out.book.name(),
            self.out.trades.name(),
            self.out
                .levels
                .as_ref()
                .map_or_else(String::new, |l| format!(", {}", l.name()))
        );
        let detail = if detail.len() > mdbus_shm::counters::MAX_DETAIL {
            self.input_name.clone()
        } else {
            detail
        };
        let file = CounterFile::create(
            bus.root(),
            &self.share.outputs(&self.input_name),
            COUNTERS_ROLE,
            &detail,
            &BookServiceStats::NAMES,
        )?;
        self.counters = Some((file, Instant::now()));
        Ok(())
    }

    /// Publishes the counters if they are on and the last publish is [`COUNTERS_EVERY`] old
    /// (or `force`).
    #[cold]
    #[inline(never)]
    fn publish_counters_due(&mut self, force: bool) {
        let stats = self.stats();
        if let Some((file, last)) = &mut self.counters {
            let now = Instant::now();
            if force || now.saturating_duration_since(*last) >= COUNTERS_EVERY {
                *last = now;
                file.publish(&stats.values());
            }
        }
    }

    /// The book builder (query books, counters).
    pub fn builder(&self) -> &BookBuilder {
        self.books.builder()
    }

    /// Makes the order table whole now, before the session: room for the configuration's
    /// `max_orders`, so that no growth (an allocation and a rehash) ever lands on the hot path.
    /// What a live service wants; a replay may leave the table to grow in counted steps.
    pub fn preallocate(&mut self) -> Result<(), BookServiceError> {
        let max = self.books.builder().config().max_orders;
        Ok(self.books.builder_mut().reserve_orders(max)?)
    }

    /// The counters so far.
    pub fn stats(&self) -> BookServiceStats {
        BookServiceStats {
            back_pressured: self.out.back_pressured,
            messages: self.books.messages(),
            gaps: self.books.gaps(),
            ..self.stats
        }
    }

    /// Messages seen per ITCH type letter.
    pub fn counts(&self) -> &TypeCounts {
        self.books.counts()
    }

    /// The symbol of `locate` from the stock directory (space-padded), if one was seen.
    pub fn symbol(&self, locate: u16) -> Option<[u8; 8]> {
        let s = self.symbols[usize::from(locate)];
        (s != *b"        ").then_some(s)
    }

    /// The `--book-summary` object of everything handled so far.
    pub fn summary(&self) -> BookSummary {
        self.books.summary()
    }

    /// Applies one input envelope and publishes what it changed.
    #[inline]
    pub fn handle(&mut self, env: &Envelope<'_>) -> Handled {
        self.read_then(env, Self::handle_read)
    }

    /// [`handle`](Self::handle) of what was read of `env`.
    #[inline(always)]
    fn handle_read(&mut self, (header, event, order): InputRead, env: &Envelope<'_>) -> Handled {
        if !self.counted(&header, event) {
            return self.other_share(&header, event, env);
        }
        match order {
            Some((ev, match_number)) => {
                self.apply(&OrderInput {
                    header,
                    ev,
                    match_number,
                });
                Handled::Continue
            }
            None => self.handle_other(&header, event, env),
        }
    }

    /// Applies one decoded ITCH message, source message `seq` received at `recv_ts_ns`, and
    /// publishes what it changed: what [`accept`](Self::accept) publishes for the message's
    /// normalized envelope stamped with `flags`, byte for byte, without that envelope being
    /// read back. For a feed handler that builds the books on its own thread (see the
    /// [module docs](self)); gap notices and the end of the session come through
    /// [`handle_gap`](Self::handle_gap) and [`handle_end_of_session`](Self::handle_end_of_session).
    ///
    /// As with [`accept`](Self::accept), order messages are applied [`APPLY_BEHIND`] order
    /// messages late: what one will touch is asked for now and it is applied once that many
    /// more have come, so that its cache misses overlap the work on the messages between.
    /// Any other message, a gap notice, the end of the session and [`flush`](Self::flush)
    /// first apply every pending one, so everything is published in input order; a caller
    /// flushes when its input pauses (nothing pending is published until then).
    #[inline]
    pub fn accept_itch(
        &mut self,
        seq: u64,
        recv_ts_ns: u64,
        flags: fb::EnvelopeFlags,
        msg: &Message<'_>,
    ) {
        let locate = msg.stock_locate();
        // The header the normalizer stamps on the message's envelope.
        let header = || HeaderFields {
            seq,
            exchange_ts_ns: msg.timestamp(),
            recv_ts_ns,
            stock_locate: locate,
            tracking_number: msg.tracking_number(),
            flags,
            venue: fb::Venue::Nasdaq,
            instrument: u32::from(locate),
        };
        self.stats.received += 1;
        self.last_seq = seq;
        if !self.share.keeps(u32::from(locate)) {
            self.stats.other_share += 1;
            return;
        }
        self.books.count_source(msg.msg_type());
        match itch_order(msg) {
            // Written field by field into its pending slot (see `Pending`).
            Some((ev, match_number)) => self.defer(&ev, |slot| {
                slot.header = header();
                slot.ev = ev;
                slot.match_number = match_number;
            }),
            None => {
                self.flush();
                self.handle_itch_other(&header(), msg);
            }
        }
    }

    /// A gap notice the feed handler published on its stream, with the header and fields it
    /// stamped: counted in the books and forwarded on every output, as [`handle`](Self::handle)
    /// does with its envelope.
    pub fn handle_gap(&mut self, header: &HeaderFields, fields: &fb::GapNoticeFields) {
        // After the order messages before it.
        self.flush();
        self.stats.received += 1;
        self.last_seq = header.seq;
        if !self.share.hears(instrument_of(header)) {
            self.stats.other_share += 1;
            return;
        }
        self.gap_notice(header, fields);
    }

    /// The end of the session the feed handler published on its stream, with the header it
    /// stamped: forwarded on every output, as [`handle`](Self::handle) does with its envelope.
    pub fn handle_end_of_session(&mut self, header: &HeaderFields) {
        self.flush();
        self.stats.received += 1;
        self.last_seq = header.seq;
        self.end_of_session(header);
    }

    /// [`accept_itch`](Self::accept_itch) for a message that is not an order message:
    /// forwards what the outputs carry and applies `P` trades, as
    /// [`handle_other`](Self::handle_other) does for the envelopes of those messages, with
    /// the fields the normalizer would put in them. Out of line, as that one is.
    #[inline(never)]
    fn handle_itch_other(&mut self, header: &HeaderFields, msg: &Message<'_>) {
        match msg {
            Message::Trade(m) => {
                let ev = OrderEvent::Trade {
                    locate: header.stock_locate,
                    shares: m.shares(),
                    price: m.price().0,
                };
                let print = normalize::trade_fields(m);
                self.hidden_print(header, &ev, &print);
            }
            Message::StockDirectory(m) => {
                self.directory(header, &normalize::stock_directory_fields(m));
            }
            Message::CrossTrade(m) => self.cross(header, &normalize::cross_trade_fields(m)),
            Message::BrokenTrade(m) => self.broken(header, &normalize::broken_trade_fields(m)),
            _ => {}
        }
    }

    /// [`handle`](Self::handle), applying order messages [`APPLY_BEHIND`] order messages
    /// late: what an order message will touch (its order table slots, its book, then its
    /// price levels) is asked for when it is read, and it is applied when that many more
    /// have come, so that the memory accesses overlap the work on the messages between. Any
    /// other message, and [`flush`](Self::flush), first applies every pending one: everything
    /// is applied and published in input order. [`poll`](Self::poll) accepts its input and
    /// flushes at the end of each turn; a caller that feeds envelopes itself flushes when its
    /// input pauses (nothing pending is published until then).
    #[inline]
    pub fn accept(&mut self, env: &Envelope<'_>) -> Handled {
        self.read_then(env, Self::accept_read)
    }

    /// Reads `env` ([`read_input`]: hot-path envelopes in the encoder's frame layout in place
    /// with the [`FrameReader`], anything else through the accessors, out of line) and hands
    /// what it read to `then`. Each read goes on into `then` in its own path: when the two
    /// reads' results met in one place on the stack, copying them out read narrow stores
    /// back wide (a failed store forward per record).
    #[inline(always)]
    fn read_then(&mut self, env: &Envelope<'_>, then: ReadThen) -> Handled {
        match self.frames.read_envelope(env) {
            Some(view) => {
                let read = read_input(&view);
                then(self, read, env)
            }
            None => self.read_generic_then(env, then),
        }
    }

    /// [`read_then`](Self::read_then) of an envelope the frame reader does not read.
    #[inline(never)]
    fn read_generic_then(&mut self, env: &Envelope<'_>, then: ReadThen) -> Handled {
        let read = read_input_generic(env);
        then(self, read, env)
    }

    /// [`accept`](Self::accept) of what was read of `env`.
    #[inline(always)]
    fn accept_read(&mut self, (header, event, order): InputRead, env: &Envelope<'_>) -> Handled {
        if !self.counted(&header, event) {
            return self.other_share(&header, event, env);
        }
        match order {
            Some((ev, match_number)) => {
                self.defer(&ev, |slot| {
                    slot.header = header;
                    slot.ev = ev;
                    slot.match_number = match_number;
                });
                Handled::Continue
            }
            None => {
                self.flush();
                self.handle_other(&header, event, env)
            }
        }
    }

    /// Asks for what order event `ev` will touch and holds its message back (`write` writes
    /// it into its pending slot); applies the order message held [`APPLY_BEHIND`] order
    /// messages ago, if any.
    #[inline(always)]
    fn defer(&mut self, ev: &OrderEvent, write: impl FnOnce(&mut OrderInput)) {
        let builder = self.books.builder();
        builder.prefetch(ev);
        if let Some(soon) = self.pending.soon() {
            builder.prefetch_levels(&soon.ev);
        }
        let at = self.pending.advance();
        if let Some(&oldest) = self.pending.held(at) {
            self.apply(&oldest);
        }
        self.pending.fill(at, write);
    }

    /// Applies the order messages [`accept`](Self::accept) left pending, oldest first, and
    /// publishes what they changed. Once per turn and before rare messages: out of line, so
    /// that `apply` is inlined only where it runs per message.
    #[inline(never)]
    pub fn flush(&mut self) {
        while let Some(oldest) = self.pending.pop() {
            self.apply(&oldest);
        }
    }

    /// Counts one input envelope of header `header` and kind `event` ([`read_then`](Self::read_then)
    /// read it). `false` for a message this service's [`Share`] leaves to another.
    #[inline(always)]
    fn counted(&mut self, header: &HeaderFields, event: fb::Event) -> bool {
        self.stats.received += 1;
        self.last_seq = header.seq;
        if !self.share.keeps(instrument_of(header)) {
            return false;
        }
        self.books.count(header.venue, event);
        true
    }

    /// A message about an instrument this service's [`Share`] does not keep: skipped, unless
    /// it is a market-wide notice every output carries (a gap notice for all instruments, the
    /// end of the session), which is forwarded uncounted (share 0 counts it).
    #[inline(never)]
    fn other_share(
        &mut self,
        header: &HeaderFields,
        event: fb::Event,
        env: &Envelope<'_>,
    ) -> Handled {
        let notice = matches!(event, fb::Event::GapNotice | fb::Event::EndOfSession);
        if notice && self.share.hears(instrument_of(header)) {
            // As for any message that is not an order message: the pending ones go first.
            self.flush();
            return self.handle_other(header, event, env);
        }
        self.stats.other_share += 1;
        Handled::Continue
    }

    /// Handles an input envelope that is not an order message: forwards what the outputs
    /// carry, and applies `P` trades (prints on no displayed order). Rare (trades a few in a
    /// hundred records, the rest a few in a thousand) and kept out of line, so that the order
    /// path of `handle` and `poll` stays small where they are inlined; the order message
    /// `poll` holds back is applied first, so everything stays in input order.
    #[inline(never)]
    fn handle_other(
        &mut self,
        header: &HeaderFields,
        event: fb::Event,
        env: &Envelope<'_>,
    ) -> Handled {
        let header = *header;
        match event {
            fb::Event::Trade => {
                if let Some((ev, print)) = read_trade(env, instrument_of(&header)) {
                    self.hidden_print(&header, &ev, &print);
                }
            }
            fb::Event::PriceLevelUpdate => {
                if let Some(ev) = book_event_from_envelope(env) {
                    self.stats.book_events += 1;
                    let mut sink = Publish {
                        encoder: &mut self.encoder,
                        out: &mut self.out,
                        stats: &mut self.stats,
                        header: &header,
                    };
                    let b = self.books.builder_mut();
                    let _: Outcome = match ev {
                        BookEvent::Level(ev) => b.apply_level(&ev, &mut sink),
                        // A level the builder cannot hold: counted as invalid.
                        BookEvent::Order(ev) => b.apply(&ev, &mut sink),
                    };
                }
            }
            fb::Event::StockDirectory => {
                if let Some(d) = env.event_as_stock_directory() {
                    let fields = fb::StockDirectoryFields {
                        stock: d.stock().0,
                        market_category: d.market_category(),
                        financial_status_indicator: d.financial_status_indicator(),
                        round_lot_size: d.round_lot_size(),
                        round_lots_only: d.round_lots_only(),
                        issue_classification: d.issue_classification(),
                        issue_sub_type: d.issue_sub_type().0,
                        authenticity: d.authenticity(),
                        short_sale_threshold_indicator: d.short_sale_threshold_indicator(),
                        ipo_flag: d.ipo_flag(),
                        luld_reference_price_tier: d.luld_reference_price_tier(),
                        etp_flag: d.etp_flag(),
                        etp_leverage_factor: d.etp_leverage_factor(),
                        inverse_indicator: d.inverse_indicator(),
                    };
                    self.directory(&header, &fields);
                }
            }
            fb::Event::CrossTrade => {
                if let Some(c) = env.event_as_cross_trade() {
                    let b = c.body();
                    let fields = fb::CrossTradeFields {
                        shares: b.shares(),
                        stock: b.stock().0,
                        cross_price: b.cross_price(),
                        match_number: b.match_number(),
                        cross_type: b.cross_type(),
                    };
                    self.cross(&header, &fields);
                }
            }
            fb::Event::BrokenTrade => {
                if let Some(b) = env.event_as_broken_trade() {
                    let fields = fb::BrokenTradeFields {
                        match_number: b.body().match_number(),
                    };
                    self.broken(&header, &fields);
                }
            }
            fb::Event::GapNotice => {
                if let Some(g) = env.event_as_gap_notice() {
                    let fields = fb::GapNoticeFields {
                        first_missing_seq: g.first_missing_seq(),
                        count: g.count(),
                        recoverable: g.recoverable(),
                        scope: g.scope(),
                    };
                    self.gap_notice(&header, &fields);
                }
            }
            fb::Event::EndOfSession => {
                self.end_of_session(&header);
                return Handled::EndOfSession;
            }
            _ if is_iex_event(event) => self.handle_iex(&header, event, env),
            _ => {}
        }
        Handled::Continue
    }

    /// Applies a `P` trade (a print on no displayed order: the book's print statistics, no
    /// update) and publishes its print as it came.
    fn hidden_print(&mut self, header: &HeaderFields, ev: &OrderEvent, print: &fb::TradeFields) {
        self.stats.book_events += 1;
        let _: Outcome = self.books.builder_mut().apply(ev, &mut |_| {});
        let msg = self.encoder.trade(header, print);
        self.out.publish(To::Trades, &msg);
        self.stats.trades_published += 1;
    }

    /// Learns the symbol of a stock directory message and forwards it on the book and levels
    /// streams.
    fn directory(&mut self, header: &HeaderFields, fields: &fb::StockDirectoryFields) {
        self.symbols[usize::from(header.stock_locate)] = fields.stock;
        let msg = self.encoder.stock_directory(header, fields);
        self.out.publish(To::Book, &msg);
        self.out.publish(To::Levels, &msg);
    }

    /// Forwards a cross trade on the trade stream.
    fn cross(&mut self, header: &HeaderFields, fields: &fb::CrossTradeFields) {
        let msg = self.encoder.cross_trade(header, fields);
        self.out.publish(To::Trades, &msg);
        self.stats.crosses_forwarded += 1;
    }

    /// Forwards a broken trade on the trade stream.
    fn broken(&mut self, header: &HeaderFields, fields: &fb::BrokenTradeFields) {
        let msg = self.encoder.broken_trade(header, fields);
        self.out.publish(To::Trades, &msg);
        self.stats.crosses_forwarded += 1;
    }

    /// Counts an input gap notice in the books and forwards it on every output.
    fn gap_notice(&mut self, header: &HeaderFields, fields: &fb::GapNoticeFields) {
        self.books.gap(fields.recoverable);
        self.forward_gap(header, fields);
    }

    /// Publishes the levels still staged (an IEX event that never completed: nothing will
    /// complete it now), then the end of the session on every output.
    fn end_of_session(&mut self, header: &HeaderFields) {
        if self.books.builder().staged_levels() > 0 {
            let mut sink = Publish {
                encoder: &mut self.encoder,
                out: &mut self.out,
                stats: &mut self.stats,
                header,
            };
            self.books.builder_mut().flush_levels(&mut sink);
        }
        let msg = self.encoder.end_of_session(header, &fb::EndOfSessionFields);
        self.out.publish_everywhere(&msg);
        self.stats.ended = true;
    }

    /// Handles an IEX envelope: names its instrument on the book and levels streams (see the
    /// [module docs](self)), applies its book event publishing what changed, publishes its
    /// print or its quote.
    #[inline(never)]
    fn handle_iex(&mut self, header: &HeaderFields, event: fb::Event, env: &Envelope<'_>) {
        let instrument = instrument_of(header);
        let key = crate::book::book_key(instrument).map(usize::from);
        if let (Some(k), Some(symbol)) = (key, iex_symbol(env)) {
            self.name_iex(header, k, symbol, env);
        }
        if event == fb::Event::IexTradeBreak {
            if let Some(b) = env.event_as_iex_trade_break() {
                let fields = fb::BrokenTradeFields {
                    match_number: b.trade_id(),
                };
                let msg = self.encoder.broken_trade(header, &fields);
                self.out.publish(To::Trades, &msg);
                self.stats.crosses_forwarded += 1;
            }
            return;
        }
        let Some(input) = iex_input_of_envelope(env) else {
            return;
        };
        self.stats.book_events += 1;
        // The resting order of an execution, looked up before the execution may remove it.
        let resting = match input {
            IexInput::Executed {
                ev:
                    OrderEvent::Execute {
                        locate, order_ref, ..
                    },
                ..
            } => self
                .books
                .builder()
                .order(order_ref)
                .filter(|o| o.locate == locate)
                .map(|o| o.side),
            _ => None,
        };
        let mut sink = Publish {
            encoder: &mut self.encoder,
            out: &mut self.out,
            stats: &mut self.stats,
            header,
        };
        let _: Outcome = self.books.apply_iex(instrument, &input, &mut sink);
        match input {
            IexInput::Quote((bid, ask)) => {
                let fields = fb::BboFields {
                    bid_price: bid.map_or(0, |b| b.0),
                    bid_size: bid.map_or(0, |b| b.1),
                    bid_orders: 0,
                    ask_price: ask.map_or(0, |a| a.0),
                    ask_size: ask.map_or(0, |a| a.1),
                    ask_orders: 0,
                };
                let msg = self.encoder.bbo(header, &fields);
                self.out.publish(To::Book, &msg);
                self.stats.bbos_published += 1;
            }
            IexInput::Executed { print, .. } | IexInput::Trade { print, .. } => {
                let (Some(k), Ok(price)) = (key, u32::try_from(print.price)) else {
                    // Not a price the schema's trade can carry (counted invalid by the builder).
                    self.stats.unpriced_prints += 1;
                    return;
                };
                let order_reference_number = match input {
                    IexInput::Executed {
                        ev: OrderEvent::Execute { order_ref, .. },
                        ..
                    } => order_ref,
                    _ => 0,
                };
                let fields = fb::TradeFields {
                    order_reference_number,
                    buy_sell_indicator: resting.map_or(fb::Side::Unknown, fb_side),
                    shares: print.shares,
                    stock: self.symbols[k],
                    price,
                    match_number: print.trade_id,
                };
                let msg = self.encoder.trade(header, &fields);
                self.out.publish(To::Trades, &msg);
                self.stats.trades_published += 1;
            }
            _ => {}
        }
    }

    /// Names IEX instrument `key` as `symbol` on the book and levels streams: forwards a
    /// security directory; before any other message about an instrument not named yet,
    /// publishes a directory event made from the symbol the message carries.
    fn name_iex(&mut self, header: &HeaderFields, key: usize, symbol: [u8; 8], env: &Envelope<'_>) {
        let fields = match env.event_as_iex_security_directory() {
            Some(d) => fb::IexSecurityDirectoryFields {
                timestamp: d.timestamp(),
                symbol,
                flags: d.flags(),
                round_lot_size: d.round_lot_size(),
                adjusted_poc_price: d.adjusted_poc_price(),
                luld_tier: d.luld_tier(),
            },
            None if self.symbols[key] == symbol => return,
            None => fb::IexSecurityDirectoryFields {
                symbol,
                ..fb::IexSecurityDirectoryFields::default()
            },
        };
        self.symbols[key] = symbol;
        let msg = self.encoder.iex_security_directory(header, &fields);
        self.out.publish(To::Book, &msg);
        self.out.publish(To::Levels, &msg);
    }

    fn forward_gap(&mut self, header: &HeaderFields, fields: &fb::GapNoticeFields) {
        let msg = self.encoder.gap_notice(header, fields);
        self.out.publish_everywhere(&msg);
    }

    /// Records that `lost` input records never reached the service (it was lapped): the books
    /// may be wrong, and every output gets an unrecoverable gap notice for every instrument.
    pub fn input_lost(&mut self, lost: u64) {
        self.stats.overruns += 1;
        self.stats.lost += lost;
        self.books.gap(false);
        let header = HeaderFields {
            seq: self.last_seq,
            ..HeaderFields::default()
        };
        let fields = fb::GapNoticeFields {
            first_missing_seq: self.last_seq + 1,
            count: lost,
            recoverable: false,
            scope: fb::GapScope::Source,
        };
        self.forward_gap(&header, &fields);
    }

    /// Applies one book event: publishes the levels and BBO it changed, then the trade print.
    /// Always inlined into the per-message paths (`handle`, `accept`): left to itself the
    /// compiler calls it, and the call and the order input passed through memory cost about
    /// a tenth of the service's instructions.
    #[inline(always)]
    fn apply(&mut self, input: &OrderInput) {
        let (header, ev) = (&input.header, &input.ev);
        self.stats.book_events += 1;
        // The resting order an execution names, looked up before the execution may remove it.
        let resting = match *ev {
            OrderEvent::Execute {
                locate, order_ref, ..
            }
            | OrderEvent::ExecuteWithPrice {
                locate, order_ref, ..
            } => self
                .books
                .builder()
                .order(order_ref)
                .filter(|o| o.locate == locate)
                .map(|o| (o.price, o.side)),
            _ => None,
        };
        // Each update is published as the builder makes it.
        let mut sink = Publish {
            encoder: &mut self.encoder,
            out: &mut self.out,
            stats: &mut self.stats,
            header,
        };
        let _: Outcome = self.books.builder_mut().apply(ev, &mut sink);
        if matches!(
            ev,
            OrderEvent::Execute { .. } | OrderEvent::ExecuteWithPrice { .. }
        ) {
            self.publish_trade(input, resting);
        }
    }

    /// Publishes the print of an execution (`E` on a known order, printable `C`). Out of
    /// line: executions are a few in a hundred messages.
    #[inline(never)]
    fn publish_trade(&mut self, input: &OrderInput, resting: Option<(u32, Side)>) {
        let locate = input.ev.locate();
        let fields = match input.ev {
            OrderEvent::Execute {
                order_ref, shares, ..
            } => {
                let Some((price, side)) = resting else {
                    self.stats.unpriced_prints += 1;
                    return;
                };
                fb::TradeFields {
                    order_reference_number: order_ref,
                    buy_sell_indicator: fb_side(side),
                    shares,
                    stock: self.symbols[usize::from(locate)],
                    price,
                    match_number: input.match_number,
                }
            }
            OrderEvent::ExecuteWithPrice {
                order_ref,
                shares,
                price,
                printable,
                ..
            } => {
                if !printable {
                    self.stats.non_printable += 1;
                    return;
                }
                fb::TradeFields {
                    order_reference_number: order_ref,
                    buy_sell_indicator: resting.map_or(fb::Side::Unknown, |(_, s)| fb_side(s)),
                    shares,
                    stock: self.symbols[usize::from(locate)],
                    price,
                    match_number: input.match_number,
                }
            }
            _ => return,
        };
        self.out
            .publish_event(To::Trades, &mut self.encoder, &input.header, &fields);
        self.stats.trades_published += 1;
    }

    /// One turn of work: handles up to `max` input envelopes from `input` (one batched read,
    /// so the input's position is published once per turn) and publishes what they changed.
    ///
    /// For running the service beside other stages on one thread (see [`Polled`]); [`run`]
    /// is a loop of these turns with a wait when nothing came. An input overrun becomes gap
    /// notices ([`input_lost`](Self::input_lost)) and a restarted publisher (new epoch) is
    /// followed, as in `run`.
    ///
    /// Records are [`accept`](Self::accept)ed: order messages are applied up to
    /// [`APPLY_BEHIND`] order messages late within the turn, so that their cache misses (with
    /// references spread over a whole market, most of the cost of an add) overlap the work
    /// on the messages between. The pending ones are applied before `poll` returns: a turn
    /// publishes everything its records changed, in input order, as [`handle`] would.
    ///
    /// A turn publishes at most [`MAX_OUTPUTS_PER_INPUT`] envelopes per input record. When the
    /// service shares its thread with the subscribers of its lossless outputs, keep
    /// `max * MAX_OUTPUTS_PER_INPUT` envelopes within the outputs' rings (and drain them between
    /// turns): a full output ring waits for its subscribers, which cannot run meanwhile.
    ///
    /// [`run`]: Self::run
    /// [`handle`]: Self::handle
    #[inline]
    pub fn poll(&mut self, input: &mut Subscriber, max: usize) -> Result<Polled, BookServiceError> {
        let mut ended = false;
        let polled = input.poll_event_batch(max, |ev| {
            // Anything the batch holds after an end of session is handled too (nothing read is
            // dropped); the turn then reports the end.
            if self.accept(&ev.envelope()) == Handled::EndOfSession {
                ended = true;
            }
        });
        // The batch's last order message; before any gap notice of an overrun.
        self.flush();
        let handled = match polled {
            Ok(n) => n,
            Err(ReceiveError::Overrun { lost, .. }) => {
                self.input_lost(lost);
                1
            }
            Err(ReceiveError::Closed) => return Ok(Polled::Finished),
            Err(ReceiveError::NewEpoch { .. }) => {
                input.reopen()?;
                1
            }
            Err(source) => {
                return Err(BookServiceError::Input {
                    stream: self.input_name.clone(),
                    source,
                });
            }
        };
        self.take_output_error()?;
        Ok(if ended {
            Polled::Finished
        } else if handled == 0 {
            self.stats.idle_polls += 1;
            Polled::Idle
        } else {
            Polled::Worked(handled)
        })
    }

    /// The first message an output refused for good (larger than its `max_msg_len`) since the
    /// last call, as [`poll`](Self::poll) reports it: for callers of [`handle`](Self::handle)
    /// and [`accept_itch`](Self::accept_itch), which go on publishing the rest.
    pub fn take_output_error(&mut self) -> Result<(), BookServiceError> {
        match self.out.failed.take() {
            Some((stream, source)) => Err(BookServiceError::Publish { stream, source }),
            None => Ok(()),
        }
    }

    /// Hands off what the outputs published since the last call (see
    /// [`Publisher::hand_off`]): call it when the input has nothing more for now.
    pub fn hand_off(&mut self) {
        self.out.publishers().for_each(Publisher::hand_off);
    }

    /// Tells the outputs' subscribers that the service is alive while it has nothing to do
    /// (a cheap store; call it from an idle loop).
    pub fn heartbeat(&mut self) {
        self.out.publishers().for_each(|p| p.heartbeat());
    }

    /// Reads `input` until its session ends (`EndOfSession`), its publisher closes the stream,
    /// or `stop` is set, waiting with `wait` when there is nothing to read. Returns the
    /// counters; with [`publish_counters`](Self::publish_counters) they are also published
    /// while it runs and, final, when it returns (the file then marked finished).
    pub fn run(
        &mut self,
        input: &mut Subscriber,
        wait: WaitStrategy,
        stop: &AtomicBool,
    ) -> Result<BookServiceStats, BookServiceError> {
        let counting = self.counters.is_some();
        // Input records since the last look at the clock.
        let mut since = 0usize;
        loop {
            match self.poll(input, RUN_BATCH)? {
                Polled::Worked(n) => {
                    if counting {
                        since = since.saturating_add(n);
                        if since >= COUNTERS_CHECK_EVERY {
                            since = 0;
                            self.publish_counters_due(false);
                        }
                    }
                }
                Polled::Finished => break,
                Polled::Idle => {
                    if counting {
                        self.publish_counters_due(false);
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    self.hand_off();
                    self.heartbeat();
                    // A bounded wait, so that `stop` is seen.
                    let _ = input.wait(&wait, Some(Duration::from_millis(10)));
                }
            }
        }
        if counting {
            self.publish_counters_due(true);
            if let Some((file, _)) = &self.counters {
                file.finish();
            }
        }
        Ok(self.stats())
    }
}

/// Input envelopes [`BookService::run`] handles per turn.
const RUN_BATCH: usize = 64;

/// A bound on the envelopes [`BookService`] publishes for one input record of ITCH's shape
/// (orders, `PriceLevelUpdate`s), over all its outputs together (and so on any one of them):
/// today at most three (a replace touching two price levels and the BBO; an execution's level,
/// BBO and trade; an end of session or a gap notice on each of the book, levels and trade
/// streams), with one to spare. IEX input can publish more for one record: the update that
/// completes a DEEP event publishes every level the event staged and the top of each book it
/// touched, a Clear Book every level of the book, and the first message about an instrument
/// names it first; size output rings for IEX's events when the service shares its thread with
/// its subscribers.
pub const MAX_OUTPUTS_PER_INPUT: usize = 4;

/// What one [`BookService::poll`] turn did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polled {
    /// Handled this many input records (or reported an input overrun, or followed a new
    /// epoch: counted as 1).
    Worked(usize),
    /// Nothing to read.
    Idle,
    /// The input's session ended (`EndOfSession`, forwarded to every output) or its publisher
    /// closed the stream: nothing more will come.
    Finished,
}

/// An encoder whose builder path (reference and session events) has already encoded each kind
/// the service forwards, with every field set, so that none of them allocates later.
fn warm_encoder() -> Encoder {
    let mut e = Encoder::new();
    let h = HeaderFields {
        seq: 1,
        exchange_ts_ns: 1,
        recv_ts_ns: 1,
        stock_locate: 1,
        tracking_number: 1,
        flags: fb::EnvelopeFlags::Replayed,
        venue: fb::Venue::Nasdaq,
        instrument: 1,
    };
    let _ = e.stock_directory(
        &h,
        &fb::StockDirectoryFields {
            stock: *b"WARMUP  ",
            market_category: 1,
            financial_status_indicator: 1,
            round_lot_size: 1,
            round_lots_only: 1,
            issue_classification: 1,
            issue_sub_type: *b"ZZ",
            authenticity: 1,
            short_sale_threshold_indicator: 1,
            ipo_flag: 1,
            luld_reference_price_tier: 1,
            etp_flag: 1,
            etp_leverage_factor: 1,
            inverse_indicator: 1,
        },
    );
    let _ = e.gap_notice(
        &h,
        &fb::GapNoticeFields {
            first_missing_seq: 1,
            count: 1,
            recoverable: true,
            scope: fb::GapScope::Source,
        },
    );
    let _ = e.end_of_session(&h, &fb::EndOfSessionFields);
    let _ = e.iex_security_directory(
        &h,
        &fb::IexSecurityDirectoryFields {
            timestamp: 1,
            symbol: *b"WARMUP  ",
            flags: 1,
            round_lot_size: 1,
            adjusted_poc_price: 1,
            luld_tier: 1,
        },
    );
    e
}

/// The book event of a decoded ITCH order message (`A`, `F`, `E`, `C`, `X`, `D`, `U`) and the
/// match number of an execution (0 otherwise): what [`read_input`] reads from its envelope.
/// `None` for any other message (`P` trades are prints on no order: `handle_itch_other`).
#[inline(always)]
fn itch_order(msg: &Message<'_>) -> Option<(OrderEvent, u64)> {
    let match_number = match msg {
        Message::AddOrder(_)
        | Message::AddOrderMpid(_)
        | Message::OrderCancel(_)
        | Message::OrderDelete(_)
        | Message::OrderReplace(_) => 0,
        Message::OrderExecuted(m) => m.match_number(),
        Message::OrderExecutedWithPrice(m) => m.match_number(),
        _ => return None,
    };
    OrderEvent::from_itch(msg).map(|ev| (ev, match_number))
}

/// `header` about instrument `locate` instead (the ITCH source's stock locate too, for the
/// venues that key on it).
#[cold]
#[inline(never)]
fn for_instrument(header: &HeaderFields, locate: u16) -> HeaderFields {
    let mut h = *header;
    h.instrument = u32::from(locate);
    if matches!(h.venue, fb::Venue::Unknown | fb::Venue::Nasdaq) {
        h.stock_locate = locate;
    }
    h
}

#[inline]
fn fb_side(side: Side) -> fb::Side {
    match side {
        Side::Bid => fb::Side::Buy,
        Side::Ask => fb::Side::Sell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdbus_bus::SubscribeOptions;
    use mdbus_codecs::nasdaq::itch;
    use mdbus_codecs::nasdaq::normalize::Normalizer;

    use crate::test_fixtures::stock_directory;

    /// [`small`] with output rings of `capacity` bytes.
    #[test]
    fn preallocate_makes_the_order_table_whole_before_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let mut config = BookServiceConfig::default();
        config.book.max_orders = crate::book::PREALLOCATED_ORDERS * 2;
        let _feed = bus.publisher("pre", &StreamConfig::default()).unwrap();
        let mut svc = BookService::new(&bus, "pre", &config).unwrap();
        assert!(svc.builder().order_capacity() < config.book.max_orders);
        svc.preallocate().unwrap();
        assert!(svc.builder().order_capacity() >= config.book.max_orders);
    }

    fn small_with_output(capacity: usize) -> BookServiceConfig {
        BookServiceConfig {
            output: StreamConfig {
                capacity,
                ..output_ring()
            },
            ..small()
        }
    }

    fn small() -> BookServiceConfig {
        BookServiceConfig {
            book: BookConfig {
                max_orders: 1024,
                max_instruments: 16,
                levels_per_side_hint: 16,
            },
            output: output_ring(),
            publish_levels: true,
            ..BookServiceConfig::default()
        }
    }

    fn add(locate: u16, order_ref: u64, side: u8, price: u32, shares: u32) -> itch::MessageFields {
        itch::MessageFields::AddOrder(itch::AddOrderFields {
            stock_locate: locate,
            tracking_number: 0,
            timestamp: 1,
            order_reference_number: order_ref,
            buy_sell_indicator: side,
            shares,
            stock: *b"AAPL    ",
            price: itch::Price4(price),
        })
    }

    /// Normalizes `msgs` (seq from 1, recv_ts 1000 + seq) and hands each to the service.
    fn feed(svc: &mut BookService, msgs: &[itch::MessageFields]) {
        let mut norm = Normalizer::new();
        let mut buf = [0u8; 64];
        for (i, m) in msgs.iter().enumerate() {
            let n = m.encode(&mut buf).unwrap();
            let msg = itch::decode(&buf[..n]).unwrap();
            let seq = i as u64 + 1;
            let enc = norm.normalize(&msg, seq, 1000 + seq);
            svc.handle(&enc.envelope());
        }
    }

    fn drain(sub: &mut Subscriber) -> Vec<(fb::Event, HeaderFields, Vec<u8>)> {
        let mut out = Vec::new();
        while sub
            .poll_event(|e| {
                let env = e.envelope();
                out.push((env.event_type(), header_of(&env), env._tab.buf().to_vec()))
            })
            .unwrap()
        {}
        out
    }

    /// A book service on feed `t` under `root` (the `small` config) and a subscriber on each
    /// of its outputs.
    struct Service {
        _bus: Bus,
        svc: BookService,
        book: Subscriber,
        levels: Subscriber,
        trades: Subscriber,
    }

    fn service(root: &std::path::Path) -> Service {
        let bus = Bus::with_root(root).unwrap();
        let svc = BookService::new(&bus, "t", &small()).unwrap();
        let opts = SubscribeOptions::default();
        Service {
            svc,
            book: bus.subscriber("t.book", &opts).unwrap(),
            levels: bus.subscriber("t.levels", &opts).unwrap(),
            trades: bus.subscriber("t.trades", &opts).unwrap(),
            _bus: bus,
        }
    }

    /// The envelope of an IEX event about instrument `instrument`.
    fn iex_env<E: fb::EventFields>(seq: u64, instrument: u32, fields: &E) -> Vec<u8> {
        let h = HeaderFields {
            seq,
            venue: fb::Venue::Iex,
            instrument,
            ..HeaderFields::default()
        };
        Encoder::new().encode(&h, fields).to_vec()
    }

    fn iex_level(buy: bool, complete: bool, size: u32, price: i64) -> Vec<u8> {
        let (symbol, event_flags) = (*b"ZIEXT   ", u8::from(complete));
        if buy {
            let f = fb::IexPriceLevelUpdateBuyFields {
                symbol,
                event_flags,
                size,
                price,
                ..Default::default()
            };
            iex_env(1, 2, &f)
        } else {
            let f = fb::IexPriceLevelUpdateSellFields {
                symbol,
                event_flags,
                size,
                price,
                ..Default::default()
            };
            iex_env(1, 2, &f)
        }
    }

    #[test]
    fn iex_levels_are_published_only_when_the_event_is_complete_and_instruments_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let Service {
            mut svc,
            mut book,
            mut levels,
            mut trades,
            ..
        } = service(dir.path());
        let handle = |svc: &mut BookService, bytes: &[u8]| {
            svc.handle(&fb::read_verified(bytes).unwrap());
        };
        handle(&mut svc, &iex_level(true, false, 100, 250_000));
        handle(&mut svc, &iex_level(false, false, 300, 251_000));
        // Half an event: the instrument is named, nothing of its book is published.
        let named = drain(&mut book);
        assert_eq!(
            named.iter().map(|e| e.0).collect::<Vec<_>>(),
            [fb::Event::IexSecurityDirectory]
        );
        let d = fb::read_verified(&named[0].2).unwrap();
        let d = d.event_as_iex_security_directory().unwrap();
        assert_eq!((d.symbol().0, named[0].1.instrument), (*b"ZIEXT   ", 2));
        assert_eq!(drain(&mut levels).len(), 1, "the directory only");
        handle(&mut svc, &iex_level(true, true, 200, 250_100));
        let out = drain(&mut book);
        assert_eq!(
            out.len(),
            1,
            "one Bbo for the whole event, no second directory"
        );
        let bbo = fb::read_verified(&out[0].2).unwrap();
        let b = bbo.event_as_bbo().unwrap().body();
        assert_eq!(
            (b.bid_price(), b.bid_size(), b.ask_price(), b.ask_size()),
            (250_100, 200, 251_000, 300)
        );
        assert_eq!((bbo.venue(), bbo.instrument()), (fb::Venue::Iex, 2));
        assert_eq!(drain(&mut levels).len(), 3);
        // A TOPS quote is the top of book; a trade report prints with the symbol.
        let q = fb::IexQuoteUpdateFields {
            symbol: *b"ZIEXT   ",
            bid_size: 10,
            bid_price: 99_000,
            ..Default::default()
        };
        handle(&mut svc, &iex_env(2, 2, &q));
        let out = drain(&mut book);
        let b = fb::read_verified(&out[0].2).unwrap();
        let b = b.event_as_bbo().unwrap().body();
        assert_eq!((b.bid_price(), b.bid_size(), b.ask_size()), (99_000, 10, 0));
        let t = fb::IexTradeReportFields {
            symbol: *b"ZIEXT   ",
            size: 40,
            price: 250_000,
            trade_id: 77,
            ..Default::default()
        };
        handle(&mut svc, &iex_env(3, 2, &t));
        let out = drain(&mut trades);
        let t = fb::read_verified(&out[0].2).unwrap();
        let t = t.event_as_trade().unwrap().body();
        assert_eq!(
            (t.shares(), t.price(), t.match_number(), t.stock().0),
            (40, 250_000, 77, *b"ZIEXT   ")
        );
        assert_eq!(svc.stats().messages, 5);
    }

    #[test]
    fn levels_held_at_the_end_of_the_session_are_published_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let Service {
            mut svc, mut book, ..
        } = service(dir.path());
        svc.handle(&fb::read_verified(&iex_level(true, false, 100, 250_000)).unwrap());
        let end = Encoder::new()
            .end_of_session(&HeaderFields::default(), &fb::EndOfSessionFields)
            .to_vec();
        svc.handle(&fb::read_verified(&end).unwrap());
        let kinds: Vec<_> = drain(&mut book).iter().map(|e| e.0).collect();
        assert_eq!(
            kinds,
            [
                fb::Event::IexSecurityDirectory,
                fb::Event::Bbo,
                fb::Event::EndOfSession
            ]
        );
    }

    #[test]
    fn trades_get_the_resting_price_and_books_publish_levels_and_bbo() {
        let dir = tempfile::tempdir().unwrap();
        let Service {
            mut svc,
            mut book,
            mut levels,
            mut trades,
            ..
        } = service(dir.path());
        let exec = itch::MessageFields::OrderExecuted(itch::OrderExecutedFields {
            stock_locate: 13,
            tracking_number: 0,
            timestamp: 2,
            order_reference_number: 7,
            executed_shares: 40,
            match_number: 99,
        });
        let exec_unknown = itch::MessageFields::OrderExecuted(itch::OrderExecutedFields {
            stock_locate: 13,
            tracking_number: 0,
            timestamp: 3,
            order_reference_number: 12345,
            executed_shares: 1,
            match_number: 100,
        });
        feed(
            &mut svc,
            &[
                add(13, 7, b'B', 3_201_400, 100),
                add(13, 8, b'S', 3_203_000, 50),
                exec,
                exec_unknown,
            ],
        );
        let got = drain(&mut book);
        let kinds: Vec<_> = got.iter().map(|g| g.0).collect();
        assert_eq!(kinds, [fb::Event::Bbo; 3], "no depth on the book stream");
        let depth = drain(&mut levels);
        let kinds: Vec<_> = depth.iter().map(|g| g.0).collect();
        assert_eq!(kinds, [fb::Event::PriceLevelUpdate; 3]);
        // The execution's level update: message 3's header, the bid level down to 60 shares.
        let (_, h, bytes) = &depth[2];
        assert_eq!((h.seq, h.recv_ts_ns, h.stock_locate), (3, 1003, 13));
        let env = fb::read_verified(bytes).unwrap();
        let l = env.event_as_price_level_update().unwrap().body();
        assert_eq!(
            (l.side(), l.price(), l.size(), l.order_count(), l.action()),
            (fb::Side::Buy, 3_201_400, 60, 1, fb::BookAction::Change)
        );
        assert_eq!(svc.stats().levels_published, 3);
        assert_eq!(svc.stats().bbos_published, 3);
        // The last BBO came from message 3 and carries its header.
        let (_, h, bytes) = &got[2];
        assert_eq!((h.seq, h.recv_ts_ns, h.stock_locate), (3, 1003, 13));
        let env = fb::read_verified(bytes).unwrap();
        let b = env.event_as_bbo().unwrap().body();
        assert_eq!(
            (b.bid_price(), b.bid_size(), b.bid_orders()),
            (3_201_400, 60, 1)
        );
        assert_eq!(
            (b.ask_price(), b.ask_size(), b.ask_orders()),
            (3_203_000, 50, 1)
        );

        let t = drain(&mut trades);
        assert_eq!(t.len(), 1, "the unknown order's execution has no price");
        let env = fb::read_verified(&t[0].2).unwrap();
        let tb = env.event_as_trade().unwrap().body();
        assert_eq!(
            (
                tb.price(),
                tb.shares(),
                tb.match_number(),
                tb.buy_sell_indicator()
            ),
            (3_201_400, 40, 99, fb::Side::Buy)
        );
        assert_eq!(&tb.stock().0, b"        ", "no stock directory seen");
        assert_eq!(svc.stats().unpriced_prints, 1);
        assert_eq!(svc.stats().trades_published, 1);
        let s = svc.summary();
        assert_eq!(s.messages, 4);
        assert_eq!(s.book(13).unwrap().prints, 2);
    }

    #[test]
    fn a_split_partitions_the_64_residues() {
        let [a, b] = <[Share; 2]>::try_from(Share::split(&[40, 24]).unwrap()).unwrap();
        assert_eq!((a.index(), a.count(), a.residues()), (0, 2, 40));
        assert_eq!((b.index(), b.count(), b.residues()), (1, 2, 24));
        for id in [0u32, 1, 39, 40, 63, 64, 103, 104, 65_535, 1 << 20] {
            assert!(a.keeps(id) != b.keeps(id), "{id}");
            assert!(Share::ALL.keeps(id));
        }
        assert!(a.keeps(0) && a.keeps(39) && b.keeps(40) && a.keeps(64) && b.keeps(104));
        assert_eq!(a.outputs("f"), "f.0of2");
        assert_eq!(Share::ALL.outputs("f"), "f");
        assert_eq!(Share::split(&[64]).unwrap(), [Share::ALL]);
        for bad in [&[][..], &[32, 31], &[64, 0], &[33, 32]] {
            assert!(Share::split(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Share::split(&[1; 64]).unwrap().len(), 64);
    }

    #[test]
    fn shares_keep_their_instruments_and_all_hear_market_wide_notices() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let mut services: Vec<BookService> = Share::split(&[40, 24])
            .unwrap()
            .into_iter()
            .map(|share| {
                let config = BookServiceConfig { share, ..small() };
                BookService::new(&bus, "t", &config).unwrap()
            })
            .collect();
        let mut whole = BookService::new(&bus, "w", &small()).unwrap();
        let opts = SubscribeOptions::default();
        let mut books: Vec<Subscriber> = ["t.0of2.book", "t.1of2.book"]
            .iter()
            .map(|n| bus.subscriber(n, &opts).unwrap())
            .collect();
        // Locate 3 is the first share's, 50 and 45 the second's.
        let msgs = [
            add(3, 1, b'B', 1_000_000, 100),
            add(50, 2, b'S', 2_000_000, 200),
            add(45, 3, b'B', 3_000_000, 300),
        ];
        for svc in services.iter_mut().chain([&mut whole]) {
            feed(svc, &msgs);
            let mut enc = Encoder::new();
            let gap = |locate: u16, seq: u64| HeaderFields {
                seq,
                stock_locate: locate,
                venue: fb::Venue::Nasdaq,
                instrument: u32::from(locate),
                ..HeaderFields::default()
            };
            let fields = fb::GapNoticeFields {
                first_missing_seq: 4,
                count: 2,
                recoverable: false,
                scope: fb::GapScope::default(),
            };
            // A gap for every instrument, one for locate 50 alone, then the end.
            svc.handle(&enc.encode(&gap(0, 6), &fields).envelope());
            svc.handle(&enc.encode(&gap(50, 7), &fields).envelope());
            let end = enc.end_of_session(&gap(0, 8), &fb::EndOfSessionFields);
            assert_eq!(svc.handle(&end.envelope()), Handled::EndOfSession);
        }
        let seen: Vec<Vec<(fb::Event, u16)>> = books
            .iter_mut()
            .map(|b| {
                drain(b)
                    .into_iter()
                    .map(|(e, h, _)| (e, h.stock_locate))
                    .collect()
            })
            .collect();
        assert_eq!(
            seen[0],
            [
                (fb::Event::Bbo, 3),
                (fb::Event::GapNotice, 0),
                (fb::Event::EndOfSession, 0)
            ]
        );
        assert_eq!(
            seen[1],
            [
                (fb::Event::Bbo, 50),
                (fb::Event::Bbo, 45),
                (fb::Event::GapNotice, 0),
                (fb::Event::GapNotice, 50),
                (fb::Event::EndOfSession, 0)
            ]
        );
        let stats: Vec<BookServiceStats> = services.iter().map(|s| s.stats()).collect();
        // Each read all six records and skipped the other's: two adds and the gap for 50, or
        // one add.
        assert_eq!((stats[0].received, stats[0].other_share), (6, 3));
        assert_eq!((stats[1].received, stats[1].other_share), (6, 1));
        assert!(stats.iter().all(|s| s.ended));
        // Joined, the shares are the whole.
        let joined = BookSummary::of_shares(services.iter().map(|s| s.summary()));
        assert_eq!(joined, whole.summary());
        let all = BookServiceStats::of_shares(&stats);
        let w = whole.stats();
        assert_eq!(
            (
                all.received,
                all.messages,
                all.bbos_published,
                all.gaps,
                all.ended
            ),
            (w.received, w.messages, w.bbos_published, w.gaps, w.ended)
        );
    }

    #[test]
    fn execution_with_price_and_hidden_trades_and_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let Service {
            mut svc,
            mut book,
            mut levels,
            mut trades,
            ..
        } = service(dir.path());
        let c = |printable, m| {
            itch::MessageFields::OrderExecutedWithPrice(itch::OrderExecutedWithPriceFields {
                stock_locate: 13,
                tracking_number: 0,
                timestamp: 2,
                order_reference_number: 7,
                executed_shares: 10,
                match_number: m,
                printable,
                execution_price: itch::Price4(3_200_000),
            })
        };
        let p = itch::MessageFields::Trade(itch::TradeFields {
            stock_locate: 13,
            tracking_number: 0,
            timestamp: 3,
            order_reference_number: 0,
            buy_sell_indicator: b'S',
            shares: 300,
            stock: *b"AAPL    ",
            price: itch::Price4(3_202_000),
            match_number: 5,
        });
        feed(
            &mut svc,
            &[add(13, 7, b'S', 3_203_000, 100), c(b'Y', 1), c(b'N', 2), p],
        );
        let t = drain(&mut trades);
        let prices: Vec<_> = t
            .iter()
            .map(|(_, _, b)| {
                let env = fb::read_verified(b).unwrap();
                let tb = env.event_as_trade().unwrap().body();
                (tb.price(), tb.shares(), tb.buy_sell_indicator())
            })
            .collect();
        assert_eq!(
            prices,
            [
                (3_200_000, 10, fb::Side::Sell),
                (3_202_000, 300, fb::Side::Sell)
            ]
        );
        assert_eq!(svc.stats().non_printable, 1);
        // The book lost 20 shares to the two executions.
        assert_eq!(svc.builder().bbo(13).unwrap().ask_size, 80);

        drain(&mut levels);
        svc.input_lost(3);
        // Every output hears of the loss.
        for sub in [&mut book, &mut levels, &mut trades] {
            let g = drain(sub);
            let (kind, _, bytes) = g.last().unwrap();
            assert_eq!(*kind, fb::Event::GapNotice);
            let env = fb::read_verified(bytes).unwrap();
            let gn = env.event_as_gap_notice().unwrap();
            assert_eq!(
                (gn.first_missing_seq(), gn.count(), gn.recoverable()),
                (5, 3, false)
            );
        }
        assert_eq!(svc.summary().gaps, 1);
    }

    #[test]
    fn the_levels_stream_names_instruments_and_ends_with_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let Service {
            mut svc,
            mut book,
            mut levels,
            mut trades,
            ..
        } = service(dir.path());
        feed(
            &mut svc,
            &[
                stock_directory(13, *b"AAPL    ", 1),
                add(13, 7, b'B', 3_201_400, 100),
                add(13, 8, b'B', 3_201_300, 100),
            ],
        );
        let mut enc = Encoder::new();
        let h = |seq| HeaderFields {
            seq,
            recv_ts_ns: 1000 + seq,
            ..HeaderFields::default()
        };
        let gap = fb::GapNoticeFields {
            first_missing_seq: 4,
            count: 2,
            recoverable: true,
            scope: fb::GapScope::Source,
        };
        svc.handle(&enc.gap_notice(&h(6), &gap).envelope());
        let eos = enc.end_of_session(&h(7), &fb::EndOfSessionFields);
        assert_eq!(svc.handle(&eos.envelope()), Handled::EndOfSession);
        let kinds = |sub: &mut Subscriber| drain(sub).iter().map(|g| g.0).collect::<Vec<_>>();
        use fb::Event as E;
        assert_eq!(
            kinds(&mut book),
            [E::StockDirectory, E::Bbo, E::GapNotice, E::EndOfSession],
            "the second add is below the top: no BBO"
        );
        assert_eq!(
            kinds(&mut levels),
            [
                E::StockDirectory,
                E::PriceLevelUpdate,
                E::PriceLevelUpdate,
                E::GapNotice,
                E::EndOfSession
            ]
        );
        assert_eq!(kinds(&mut trades), [E::GapNotice, E::EndOfSession]);
        assert_eq!(svc.symbol(13), Some(*b"AAPL    "));
    }

    #[test]
    fn price_levels_in_build_a_book_of_levels_published_like_orders() {
        let dir = tempfile::tempdir().unwrap();
        let Service {
            mut svc,
            mut book,
            mut levels,
            ..
        } = service(dir.path());
        let mut enc = Encoder::new();
        let h = |seq| HeaderFields {
            seq,
            recv_ts_ns: 1000 + seq,
            stock_locate: 21,
            ..HeaderFields::default()
        };
        let level = |side, price, size, action| fb::PriceLevelUpdateFields {
            side,
            price,
            size,
            order_count: 0,
            action,
        };
        let (new, change, delete) = (
            fb::BookAction::New,
            fb::BookAction::Change,
            fb::BookAction::Delete,
        );
        let (buy, sell) = (fb::Side::Buy, fb::Side::Sell);
        let input = [
            level(buy, 1_000_000, 300, new),
            level(sell, 1_000_500, 50, new),
            level(buy, 999_900, 10, new),
            level(buy, 1_000_000, 0, delete),
            level(sell, -1, 5, change),
        ];
        for (i, f) in input.iter().enumerate() {
            let env = enc.encode(&h(i as u64 + 1), f);
            assert_eq!(svc.handle(&env.envelope()), Handled::Continue);
        }
        let tops: Vec<_> = drain(&mut book)
            .iter()
            .map(|(e, h, b)| {
                assert_eq!(*e, fb::Event::Bbo);
                let env = fb::read_verified(b).unwrap();
                let x = env.event_as_bbo().unwrap().body();
                (
                    h.seq,
                    x.bid_price(),
                    x.bid_size(),
                    x.ask_price(),
                    x.ask_size(),
                )
            })
            .collect();
        assert_eq!(
            tops,
            [
                (1, 1_000_000, 300, 0, 0),
                (2, 1_000_000, 300, 1_000_500, 50),
                (4, 999_900, 10, 1_000_500, 50),
            ],
            "a top after each level that changed it, stamped with that level's header"
        );
        let published: Vec<_> = drain(&mut levels)
            .iter()
            .map(|(_, h, b)| {
                let env = fb::read_verified(b).unwrap();
                let x = *env.event_as_price_level_update().unwrap().body();
                (h.seq, x.side(), x.price(), x.size(), x.action())
            })
            .collect();
        assert_eq!(
            published,
            [
                (1, buy, 1_000_000, 300, new),
                (2, sell, 1_000_500, 50, new),
                (3, buy, 999_900, 10, new),
                (4, buy, 1_000_000, 0, delete),
            ]
        );
        // An order for the instrument is refused and counted, as is the unpriceable level.
        feed(&mut svc, &[add(21, 7, b'B', 1_000_100, 100)]);
        assert_eq!(drain(&mut book).len(), 0);
        let c = svc.builder().counters();
        assert_eq!((c.mixed, c.invalid), (1, 1));
        assert_eq!(svc.stats().book_events, 6);
        assert_eq!(svc.stats().messages, 1, "only the add is a source message");
    }

    #[test]
    fn without_levels_there_is_no_levels_stream_and_no_depth() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let config = BookServiceConfig {
            publish_levels: false,
            ..small()
        };
        let mut svc = BookService::new(&bus, "t", &config).unwrap();
        let opts = SubscribeOptions::default();
        let mut book = bus.subscriber("t.book", &opts).unwrap();
        feed(
            &mut svc,
            &[
                stock_directory(13, *b"AAPL    ", 1),
                add(13, 7, b'B', 3_201_400, 100),
            ],
        );
        svc.input_lost(1);
        let kinds: Vec<_> = drain(&mut book).iter().map(|g| g.0).collect();
        assert_eq!(
            kinds,
            [
                fb::Event::StockDirectory,
                fb::Event::Bbo,
                fb::Event::GapNotice
            ]
        );
        assert_eq!(svc.stats().levels_published, 0);
        assert!(bus.subscriber("t.levels", &opts).is_err());
    }

    /// The bundled AAPL session's envelopes (order references of every kind, executions,
    /// replaces, trades), with an input gap notice in the middle and an end of session.
    fn session_envelopes() -> Vec<Vec<u8>> {
        const AAPL: &[u8] = include_bytes!("../../codecs/testdata/itch/aapl-2020-01-30-10k.itch");
        let mut norm = Normalizer::new();
        let mut out: Vec<Vec<u8>> = itch::Stream::new(AAPL)
            .enumerate()
            .map(|(i, (_, m))| norm.normalize(&m.unwrap(), i as u64 + 1, 0).to_vec())
            .collect();
        let n = out.len() as u64;
        let mut enc = Encoder::new();
        let h = |seq| HeaderFields {
            seq,
            ..HeaderFields::default()
        };
        let gap = fb::GapNoticeFields {
            first_missing_seq: 5001,
            count: 1,
            recoverable: false,
            scope: fb::GapScope::Source,
        };
        out.insert(5000, enc.gap_notice(&h(5000), &gap).to_vec());
        out.push(
            enc.end_of_session(&h(n + 1), &fb::EndOfSessionFields)
                .to_vec(),
        );
        out
    }

    /// Appends what each of `subs` holds to `out`; the lengths of `out`.
    fn collect(subs: &mut [Subscriber; 3], out: &mut [Vec<Vec<u8>>; 3]) -> [usize; 3] {
        for (s, o) in subs.iter_mut().zip(out.iter_mut()) {
            o.extend(drain(s).into_iter().map(|(_, _, b)| b));
        }
        out.each_ref().map(Vec::len)
    }

    #[test]
    fn poll_turns_publish_exactly_what_handle_publishes() {
        let envelopes = session_envelopes();
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let opts = SubscribeOptions::default();
        let subscribe = |feed: &str| {
            [
                book_stream_name(feed),
                levels_stream_name(feed),
                trades_stream_name(feed),
            ]
            .map(|name| bus.subscriber(&name, &opts).unwrap())
        };
        let config = small_with_output(16 << 20);

        // One envelope at a time.
        let mut one = BookService::new(&bus, "one", &config).unwrap();
        let mut one_subs = subscribe("one");
        let views: Vec<_> = envelopes
            .iter()
            .map(|e| fb::read_verified(e).unwrap())
            .collect();
        let mut want: [Vec<Vec<u8>>; 3] = Default::default();
        // How many envelopes each output held after each input record.
        let mut after = Vec::new();
        for env in &views {
            let handled = one.handle(env);
            after.push(collect(&mut one_subs, &mut want));
            assert_eq!(handled == Handled::EndOfSession, after.len() == views.len());
        }
        assert!(
            want.iter().all(|o| o.len() > 1_000),
            "every output has a lot to compare"
        );

        // The same envelopes through an input stream, in turns of 1, 7 and 64 records.
        for (i, turn) in [1usize, 7, 64].into_iter().enumerate() {
            let feed = format!("polled{i}");
            let input_config = StreamConfig {
                capacity: 16 << 20,
                ..output_ring()
            };
            let mut publisher = bus.publisher(&feed, &input_config).unwrap();
            let mut input = bus.subscriber(&feed, &opts).unwrap();
            let mut svc = BookService::new(&bus, &feed, &config).unwrap();
            let mut subs = subscribe(&feed);
            for e in &envelopes {
                publisher.publish_envelope(e).unwrap();
            }
            let mut got: [Vec<Vec<u8>>; 3] = Default::default();
            let mut read = 0;
            loop {
                match svc.poll(&mut input, turn).unwrap() {
                    Polled::Worked(n) => {
                        assert!(n <= turn);
                        read += n;
                        // Nothing a turn read is left unpublished when it returns.
                        assert_eq!(
                            collect(&mut subs, &mut got),
                            after[read - 1],
                            "turns of {turn}, after {read} records"
                        );
                    }
                    Polled::Finished => break,
                    Polled::Idle => panic!("the input ended without its end of session"),
                }
            }
            collect(&mut subs, &mut got);
            assert_eq!(svc.stats(), one.stats(), "turns of {turn}");
            assert_eq!(svc.summary(), one.summary(), "turns of {turn}");
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.len(), w.len(), "turns of {turn}, output {k}");
                // Headers are the sources', so the bytes are identical, in the same order.
                assert!(g == w, "turns of {turn}, output {k}");
            }
        }

        // Accepted by a caller that feeds envelopes itself: order messages lag behind until
        // a message of another kind or a flush, then everything is out, in order.
        let mut svc = BookService::new(&bus, "accepted", &config).unwrap();
        let mut subs = subscribe("accepted");
        let mut got: [Vec<Vec<u8>>; 3] = Default::default();
        let mut lagged = 0;
        for (i, env) in views.iter().enumerate() {
            svc.accept(env);
            let now = collect(&mut subs, &mut got);
            assert!(now.iter().zip(&after[i]).all(|(n, a)| n <= a), "record {i}");
            lagged += usize::from(now != after[i]);
        }
        svc.flush();
        collect(&mut subs, &mut got);
        assert!(
            lagged > 100,
            "order messages were applied late ({lagged} records)"
        );
        assert_eq!(svc.stats(), one.stats());
        assert_eq!(svc.summary(), one.summary());
        assert!(
            got == want,
            "accept and flush publish what handle publishes"
        );
    }

    #[test]
    fn pending_order_messages_leave_oldest_first() {
        let input = |seq: u64| OrderInput {
            header: HeaderFields {
                seq,
                ..HeaderFields::default()
            },
            ev: OrderEvent::Delete {
                locate: 1,
                order_ref: seq,
            },
            match_number: 0,
        };
        let (behind, ahead) = (APPLY_BEHIND as u64, LEVELS_AHEAD as u64);
        let mut p = Pending::default();
        let mut out = Vec::new();
        for seq in 1..=40u64 {
            // The message `soon` names is the one the LEVELS_AHEAD-th push from now returns
            // (this push being the first), pushed APPLY_BEHIND pushes before that one.
            let soon = p.soon().map(|i| i.header.seq);
            let expected = (seq + ahead - 1).checked_sub(behind).filter(|&s| s >= 1);
            assert_eq!(soon, expected, "before pushing {seq}");
            let at = p.advance();
            if let Some(left) = p.held(at) {
                assert_eq!(left.header.seq, seq - behind);
                out.push(left.header.seq);
            }
            p.fill(at, |s| *s = input(seq));
        }
        // A flush: everything pending leaves, oldest first; then the window starts over.
        while let Some(left) = p.pop() {
            out.push(left.header.seq);
        }
        assert!(p.soon().is_none());
        for seq in 41..=45u64 {
            let at = p.advance();
            assert!(p.held(at).is_none());
            p.fill(at, |s| *s = input(seq));
        }
        while let Some(left) = p.pop() {
            out.push(left.header.seq);
        }
        assert_eq!(out, (1..=45).collect::<Vec<_>>());
    }

    #[test]
    fn decoded_messages_publish_exactly_what_their_envelopes_publish() {
        const AAPL: &[u8] = include_bytes!("../../codecs/testdata/itch/aapl-2020-01-30-10k.itch");
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let opts = SubscribeOptions::default();
        let subscribe = |feed: &str| {
            [
                book_stream_name(feed),
                levels_stream_name(feed),
                trades_stream_name(feed),
            ]
            .map(|name| bus.subscriber(&name, &opts).unwrap())
        };
        let config = small_with_output(16 << 20);
        let mut from_envelopes = BookService::new(&bus, "env", &config).unwrap();
        let mut env_subs = subscribe("env");
        let mut from_decoded = BookService::new(&bus, "dec", &config).unwrap();
        let mut dec_subs = subscribe("dec");

        let flags = fb::EnvelopeFlags::Replayed;
        let mut norm = Normalizer::new();
        norm.set_flags(flags);
        let mut enc = Encoder::new();
        // A lost message in the middle, and the end of the session, as a pipeline stamps them.
        let gap_header = HeaderFields {
            seq: 5_001,
            exchange_ts_ns: 7,
            recv_ts_ns: 9,
            flags,
            venue: fb::Venue::Nasdaq,
            ..HeaderFields::default()
        };
        let gap = fb::GapNoticeFields {
            first_missing_seq: 5_001,
            count: 1,
            recoverable: false,
            scope: fb::GapScope::Source,
        };
        let end_header = HeaderFields {
            seq: 10_002,
            ..gap_header
        };
        for (i, (_, m)) in itch::Stream::new(AAPL).enumerate() {
            let m = m.unwrap();
            let seq = i as u64 + 1 + u64::from(i >= 5_000);
            if seq == 5_002 {
                from_envelopes.handle(&enc.gap_notice(&gap_header, &gap).envelope());
                from_decoded.handle_gap(&gap_header, &gap);
            }
            from_envelopes.handle(&norm.normalize(&m, seq, 1_000 + seq).envelope());
            from_decoded.accept_itch(seq, 1_000 + seq, flags, &m);
        }
        let end = enc.end_of_session(&end_header, &fb::EndOfSessionFields);
        assert_eq!(
            from_envelopes.handle(&end.envelope()),
            Handled::EndOfSession
        );
        from_decoded.handle_end_of_session(&end_header);

        let mut want: [Vec<Vec<u8>>; 3] = Default::default();
        let mut got: [Vec<Vec<u8>>; 3] = Default::default();
        collect(&mut env_subs, &mut want);
        collect(&mut dec_subs, &mut got);
        assert!(
            want.iter().all(|o| o.len() > 1_000),
            "every output has a lot to compare"
        );
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.len(), w.len(), "output {k}");
            // Same fields, same headers: the same bytes, in the same order.
            assert!(g == w, "output {k}");
        }
        assert_eq!(from_decoded.stats(), from_envelopes.stats());
        assert!(from_decoded.stats().ended);
        assert_eq!(from_decoded.summary(), from_envelopes.summary());
        assert_eq!(from_decoded.counts(), from_envelopes.counts());
        assert_eq!(from_decoded.symbol(13), Some(*b"AAPL    "));
    }

    #[test]
    fn turns_that_find_the_input_empty_are_counted() {
        let envelopes = session_envelopes();
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let mut publisher = bus.publisher("idle", &output_ring()).unwrap();
        let mut input = bus
            .subscriber("idle", &SubscribeOptions::default())
            .unwrap();
        let mut svc = BookService::new(&bus, "idle", &small_with_output(1 << 20)).unwrap();
        assert_eq!(svc.poll(&mut input, 64).unwrap(), Polled::Idle);
        assert_eq!(svc.stats().idle_polls, 1);
        for e in &envelopes[..3] {
            publisher.publish_envelope(e).unwrap();
        }
        assert_eq!(svc.poll(&mut input, 64).unwrap(), Polled::Worked(3));
        assert_eq!(svc.stats().idle_polls, 1, "a turn that read something");
        assert_eq!(svc.poll(&mut input, 64).unwrap(), Polled::Idle);
        assert_eq!(svc.stats().idle_polls, 2);
        assert_eq!(svc.stats().received, 3);
    }

    #[test]
    fn the_generic_read_path_publishes_what_the_frame_reader_path_publishes() {
        // The same session twice: as encoded (order messages read in place by the frame
        // reader), and with one byte appended to every envelope, which the accessors read the
        // same but the frame reader refuses (the length is not a frame's).
        let envelopes = session_envelopes();
        let padded: Vec<Vec<u8>> = envelopes
            .iter()
            .map(|e| {
                let mut p = e.clone();
                p.push(0);
                p
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let config = small_with_output(16 << 20);
        let mut runs = Vec::new();
        for (feed, input) in [("framed", &envelopes), ("generic", &padded)] {
            let reader = FrameReader::new();
            let framed = input.iter().filter(|e| reader.read(e).is_some()).count();
            let mut svc = BookService::new(&bus, feed, &config).unwrap();
            let mut subs = [
                book_stream_name(feed),
                levels_stream_name(feed),
                trades_stream_name(feed),
            ]
            .map(|name| bus.subscriber(&name, &SubscribeOptions::default()).unwrap());
            let mut out: [Vec<Vec<u8>>; 3] = Default::default();
            for e in input {
                svc.handle(&fb::read_verified(e).unwrap());
                collect(&mut subs, &mut out);
            }
            runs.push((framed, svc.stats(), svc.summary(), out));
        }
        let (framed, generic) = (&runs[0], &runs[1]);
        assert!(framed.0 > 9_000, "most of the session is order flow");
        assert_eq!(generic.0, 0, "padded envelopes take the generic path");
        assert_eq!(framed.1, generic.1);
        assert_eq!(framed.2, generic.2);
        assert!(framed.3 == generic.3, "identical outputs");
    }

    #[test]
    fn full_output_rings_hold_the_service_back_and_lose_nothing() {
        let envelopes = session_envelopes();
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let subscribe = |feed: &str| {
            [
                book_stream_name(feed),
                levels_stream_name(feed),
                trades_stream_name(feed),
            ]
            .map(|name| bus.subscriber(&name, &SubscribeOptions::default()).unwrap())
        };
        // What the outputs hold with rings large enough for the whole session.
        let roomy = small_with_output(16 << 20);
        let mut reference = BookService::new(&bus, "roomy", &roomy).unwrap();
        let mut subs = subscribe("roomy");
        let mut want: [Vec<Vec<u8>>; 3] = Default::default();
        for e in &envelopes {
            reference.handle(&fb::read_verified(e).unwrap());
            collect(&mut subs, &mut want);
        }

        // Rings of 8 KiB (about 80 envelopes), drained by another thread as it likes: the
        // service waits for room again and again, and every envelope arrives, in order.
        let tiny = small_with_output(8 << 10);
        let mut svc = BookService::new(&bus, "tiny", &tiny).unwrap();
        let mut subs = subscribe("tiny");
        let mut got: [Vec<Vec<u8>>; 3] = Default::default();
        let handled = std::sync::atomic::AtomicUsize::new(0);
        let stats = std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                for e in &envelopes {
                    svc.handle(&fb::read_verified(e).unwrap());
                    handled.fetch_add(1, Ordering::Relaxed);
                }
                svc.stats()
            });
            // Drain only once the service has stopped moving (it waits for room), so that it
            // meets full rings again and again.
            let mut last = usize::MAX;
            while !worker.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
                let now = handled.load(Ordering::Relaxed);
                if now == last {
                    collect(&mut subs, &mut got);
                }
                last = now;
            }
            worker.join().unwrap()
        });
        collect(&mut subs, &mut got);
        assert!(stats.back_pressured > 0, "{stats:?}");
        assert_eq!(
            BookServiceStats {
                back_pressured: 0,
                idle_polls: 0,
                ..stats
            },
            reference.stats()
        );
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.len(), w.len(), "output {k}");
            assert!(g == w, "output {k}");
        }
    }

    #[test]
    fn type_letters_cover_every_itch_kind() {
        let letters: Vec<u8> = (0..=u8::MAX)
            .filter_map(|t| {
                <crate::venue::Nasdaq as crate::venue::Venue>::type_of_event(fb::Event(t))
            })
            .collect();
        let mut sorted = letters.clone();
        sorted.sort_unstable();
        let mut expected = itch::MESSAGE_TYPES.to_vec();
        expected.sort_unstable();
        assert_eq!(sorted, expected);
    }

    #[test]
    fn counter_names_fit_a_counters_file_and_match_the_values() {
        assert_eq!(
            BookServiceStats::NAMES.len(),
            BookServiceStats::default().values().len()
        );
        let dir = tempfile::tempdir().unwrap();
        // `create` checks every name (printable ASCII, no spaces, at most 31 bytes, distinct).
        CounterFile::create(dir.path(), "t", COUNTERS_ROLE, "", &BookServiceStats::NAMES).unwrap();
    }

    #[test]
    fn run_publishes_its_counters_and_finishes_them() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(dir.path()).unwrap();
        let mut publisher = bus.publisher("t", &output_ring()).unwrap();
        let mut input = bus.subscriber("t", &SubscribeOptions::default()).unwrap();
        let mut svc = BookService::new(&bus, "t", &small()).unwrap();
        svc.publish_counters(&bus).unwrap();
        let path = dir.path().join("t.book.stat");
        let running = mdbus_shm::counters::read_counters(&path).unwrap();
        assert!(running.alive && !running.finished);
        assert_eq!(
            (running.role.as_str(), running.stream.as_str()),
            ("book", "t")
        );
        let mut norm = Normalizer::new();
        let mut buf = [0u8; 64];
        for i in 0..3000u64 {
            let n = add(1, i + 1, b'B', 1_000_000 + i as u32, 100)
                .encode(&mut buf)
                .unwrap();
            let msg = itch::decode(&buf[..n]).unwrap();
            publisher
                .publish_envelope(&norm.normalize(&msg, i + 1, 1000 + i))
                .unwrap();
        }
        // Closing the input ends the run once everything was read.
        drop(publisher);
        let stats = svc
            .run(&mut input, WaitStrategy::BusySpin, &AtomicBool::new(false))
            .unwrap();
        assert_eq!(stats.received, 3000);
        let snap = mdbus_shm::counters::read_counters(&path).unwrap();
        assert!(snap.finished && !snap.alive);
        let expected: Vec<(String, u64)> = BookServiceStats::NAMES
            .iter()
            .map(|n| (*n).to_owned())
            .zip(stats.values())
            .collect();
        assert_eq!(snap.counters, expected);
    }
}
