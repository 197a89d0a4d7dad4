//! A consolidated top of book: the best bid and ask of each symbol across venues.
//!
//! ```text
//!   <nasdaq>.book   Bbo, StockDirectory, GapNotice, EndOfSession  --\
//!   <iex>.book      Bbo, IexSecurityDirectory, GapNotice, ...     ---+--> Consolidator --> <output>
//!   ...             (up to MAX_INPUTS book streams)               --/     ConsolidatedBbo, EndOfSession
//! ```
//!
//! * **Symbol join.** Each input's directory events (`StockDirectory`, `IexSecurityDirectory`,
//!   as the book service forwards them) name its instruments; instruments of every input with
//!   the same symbol (8 bytes, space-padded) are one consolidated symbol. A `Bbo` of an
//!   instrument its input's directory did not name is counted (`unnamed`), not published.
//! * **Merge.** After each input `Bbo`, one `ConsolidatedBbo` for its symbol: the best bid
//!   (highest price) and best ask (lowest) over the venues with a live top, each with its venue
//!   and that venue's size (at equal prices the larger size, then the earlier input, wins), and
//!   the top of every venue that has quoted the symbol. A locked (bid = ask) or crossed (bid >
//!   ask) market is published as it is, flagged (`Locked`, `Crossed`), and counted.
//! * **Stale venues.** An unrecoverable gap notice on an input (for one instrument, or for all
//!   of the venue's when it names none), an overrun of the consolidator on that input, or the
//!   end of the input's session make that venue's tops unknown: each symbol it quoted is
//!   published again at once with that venue left out of the best bid and ask, its top kept
//!   in the list with the `Stale` flag and prices 0, and the event flagged `StaleVenue`. The
//!   venue's next `Bbo` for the instrument makes it live again.
//! * **Bounded.** Symbols live in a table preallocated for
//!   [`ConsolidateConfig::max_symbols`]; a symbol beyond it is counted (`symbols_full`), not
//!   added. After setup nothing allocates per message: the per-input instrument maps are
//!   preallocated (instrument ids up to 65,535; a larger id is counted, `bad_instruments`),
//!   the symbol index is a hash map of reserved capacity, the encoder is warmed.
//!
//! [`Consolidator`] is the sans-IO core (envelopes in, consolidated events out);
//! [`ConsolidateService`] runs it between the bus's streams, with counters under role
//! [`COUNTERS_ROLE`] for `mdbus stat`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mdbus_bus::schema::{self as fb, Encoder, Envelope, HeaderFields};
use mdbus_bus::{
    Bus, BusError, PublishError, Publisher, ReceiveError, StartAt, StreamConfig, SubscribeOptions,
    Subscriber, WaitStrategy,
};
use mdbus_shm::counters::{CounterError, CounterFile};

use crate::book::{book_key, instrument_of};

/// Most inputs one consolidator reads (the schema's bound on the venues of one event).
pub const MAX_INPUTS: usize = fb::MAX_CONSOLIDATED_VENUES;

/// Role of a consolidator's counters file (`<root>/<output>.consolidate.stat`).
pub const COUNTERS_ROLE: &str = "consolidate";

/// Counters are published at most this often.
const COUNTERS_EVERY: Duration = Duration::from_millis(1);

/// Instrument ids an input's map holds (ids are book keys: `u16`).
const INSTRUMENTS: usize = 1 << 16;

/// In an input's instrument map: not named by its directory.
const UNNAMED: u32 = 0;
/// In an input's instrument map: named, but the symbol table was full.
const NO_ROOM: u32 = u32::MAX;

/// Sizes of a [`Consolidator`] and the ring of a [`ConsolidateService`]'s output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsolidateConfig {
    /// Symbols held at once (all venues together); one more is counted, not added.
    pub max_symbols: usize,
    /// Ring of the output stream.
    pub output: StreamConfig,
    /// Where each input is joined (`Oldest`: everything the book streams still hold).
    pub start: StartAt,
}

impl Default for ConsolidateConfig {
    /// 16,384 symbols, the book service's output ring (lossless, 4 MiB, 512-byte messages),
    /// inputs read from the oldest record they hold.
    fn default() -> Self {
        ConsolidateConfig {
            max_symbols: 16_384,
            output: crate::bookstream::output_ring(),
            start: StartAt::Oldest,
        }
    }
}

/// Why a consolidator could not be set up or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsolidateError {
    /// No input, or more than [`MAX_INPUTS`].
    #[error("consolidate: {0} inputs given, 1 to {MAX_INPUTS} can be merged")]
    Inputs(usize),
    /// `max_symbols` is 0 or above what the table can number.
    #[error("consolidate: max_symbols must be 1 to {max}, got {got}", max = u32::MAX - 1)]
    Symbols {
        /// What was asked for.
        got: usize,
    },
    /// A stream could not be opened.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The output refused a message that can never fit (its `max_msg_len` is too small).
    #[error("stream {stream:?}: {source}")]
    Publish {
        /// The output stream.
        stream: String,
        /// What the ring said.
        source: PublishError,
    },
    /// An input reported a corrupt record; the consolidator stopped.
    #[error("stream {stream:?}: {source}")]
    Input {
        /// The input stream.
        stream: String,
        /// What the ring said.
        source: ReceiveError,
    },
    /// The counters file could not be created.
    #[error(transparent)]
    Counters(#[from] CounterError),
}

/// Counters of a consolidator (role [`COUNTERS_ROLE`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConsolidateStats {
    /// Envelopes read from the inputs.
    pub received: u64,
    /// Of those, `Bbo`s.
    pub bbos: u64,
    /// Directory events (instruments named).
    pub directories: u64,
    /// Consolidated events published.
    pub published: u64,
    /// `Bbo`s of an instrument its input's directory did not name (not published).
    pub unnamed: u64,
    /// Symbols (and their `Bbo`s) left out because the symbol table was full.
    pub symbols_full: u64,
    /// Events naming an instrument id above 65,535 (not applied).
    pub bad_instruments: u64,
    /// Unrecoverable gap notices met on the inputs.
    pub gaps: u64,
    /// Venue tops made stale (by a gap, an overrun or an end of session).
    pub stale: u64,
    /// Consolidated events published locked (best bid = best ask).
    pub locked: u64,
    /// Consolidated events published crossed (best bid > best ask).
    pub crossed: u64,
    /// Inputs whose session ended (or whose publisher closed).
    pub inputs_ended: u64,
    /// Times the consolidator was lapped on an input.
    pub overruns: u64,
    /// Input records lost to those overruns.
    pub lost: u64,
    /// Publish attempts refused because a lossless subscriber was a full ring behind (each
    /// retried until it went through).
    pub back_pressured: u64,
    /// Turns that found every input empty.
    pub idle_polls: u64,
    /// Every input ended (the output's `EndOfSession` was published).
    pub ended: bool,
}

impl ConsolidateStats {
    /// Names of the counters, in the order of [`values`](Self::values).
    pub const NAMES: [&'static str; 17] = [
        "received",
        "bbos",
        "directories",
        "published",
        "unnamed",
        "symbols_full",
        "bad_instruments",
        "gaps",
        "stale",
        "locked",
        "crossed",
        "inputs_ended",
        "overruns",
        "lost",
        "back_pressured",
        "idle_polls",
        "ended",
    ];

    /// The counters in the order of [`NAMES`](Self::NAMES) (`ended` 1 when set).
    pub fn values(&self) -> [u64; 17] {
        [
            self.received,
            self.bbos,
            self.directories,
            self.published,
            self.unnamed,
            self.symbols_full,
            self.bad_instruments,
            self.gaps,
            self.stale,
            self.locked,
            self.crossed,
            self.inputs_ended,
            self.overruns,
            self.lost,
            self.back_pressured,
            self.idle_polls,
            u64::from(self.ended),
        ]
    }
}

/// What a venue's top of a symbol is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// The venue never quoted the symbol.
    #[default]
    Never,
    /// Its last `Bbo`.
    Live,
    /// Unknown since a gap, an overrun or the end of its session.
    Stale,
}

/// One venue's top of one symbol.
#[derive(Clone, Copy, Debug, Default)]
struct Top {
    bid_price: i64,
    bid_size: u64,
    ask_price: i64,
    ask_size: u64,
    instrument: u32,
    venue: fb::Venue,
    state: State,
}

/// One consolidated symbol: its name and each input's top.
#[derive(Clone, Copy, Debug)]
struct Entry {
    symbol: [u8; 8],
    tops: [Top; MAX_INPUTS],
}

/// The sans-IO consolidator: feed it each input's envelopes with [`handle`](Self::handle);
/// it calls `out` with every consolidated event to publish. See the [module docs](self).
#[derive(Debug)]
pub struct Consolidator {
    inputs: usize,
    /// Per input, by instrument id: the symbol's index + 1, [`UNNAMED`] or [`NO_ROOM`].
    names: Vec<Box<[u32]>>,
    /// Symbol -> index into `entries`; capacity reserved for `max_symbols`.
    index: HashMap<[u8; 8], u32>,
    entries: Vec<Entry>,
    max_symbols: usize,
    stats: ConsolidateStats,
}

/// Where a [`Consolidator`] sends what it publishes: the header (the input event's, with
/// venue `Consolidated` and the symbol's number as instrument) and the event.
pub trait ConsolidatedSink {
    /// Receives one consolidated event.
    fn publish(&mut self, header: &HeaderFields, event: &fb::ConsolidatedBboFields);
}

impl<F: FnMut(&HeaderFields, &fb::ConsolidatedBboFields)> ConsolidatedSink for F {
    fn publish(&mut self, header: &HeaderFields, event: &fb::ConsolidatedBboFields) {
        self(header, event)
    }
}

/// What [`Consolidator::handle`] made of one input envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Keep reading the input.
    Continue,
    /// The input's session ended: its tops are stale, nothing more comes from it.
    EndOfSession,
}

impl Consolidator {
    /// A consolidator of `inputs` book streams (1 to [`MAX_INPUTS`]) holding up to
    /// `max_symbols` symbols; all its storage is allocated here.
    pub fn new(inputs: usize, max_symbols: usize) -> Result<Self, ConsolidateError> {
        if !(1..=MAX_INPUTS).contains(&inputs) {
            return Err(ConsolidateError::Inputs(inputs));
        }
        if max_symbols == 0 || max_symbols >= NO_ROOM as usize {
            return Err(ConsolidateError::Symbols { got: max_symbols });
        }
        Ok(Consolidator {
            inputs,
            names: (0..inputs)
                .map(|_| vec![UNNAMED; INSTRUMENTS].into_boxed_slice())
                .collect(),
            index: HashMap::with_capacity(max_symbols),
            entries: Vec::with_capacity(max_symbols),
            max_symbols,
            stats: ConsolidateStats::default(),
        })
    }

    /// The counters so far (those of the core: the service adds its own).
    pub fn stats(&self) -> ConsolidateStats {
        self.stats
    }

    /// Symbols known.
    pub fn symbols(&self) -> usize {
        self.entries.len()
    }

    /// The consolidated top of `symbol` (space-padded) as it stands, if the symbol is known.
    pub fn current(&self, symbol: &[u8; 8]) -> Option<fb::ConsolidatedBboFields> {
        let i = *self.index.get(symbol)?;
        self.entries.get(i as usize).map(merge)
    }

    /// Handles one envelope of input `input` (`0..inputs`; another is ignored): learns
    /// directory events, merges a `Bbo`, makes tops stale on an unrecoverable gap notice or
    /// the end of the session, publishing each changed symbol's consolidated event to `out`.
    pub fn handle(
        &mut self,
        input: usize,
        env: &Envelope<'_>,
        out: &mut impl ConsolidatedSink,
    ) -> Handled {
        if input >= self.inputs {
            return Handled::Continue;
        }
        self.stats.received += 1;
        let header = fb::HeaderFields::of(env);
        let instrument = instrument_of(&header);
        match env.event_type() {
            fb::Event::Bbo => {
                if let Some(b) = env.event_as_bbo() {
                    let b = b.body();
                    self.bbo(input, &header, instrument, b, out);
                }
            }
            fb::Event::StockDirectory => {
                if let Some(d) = env.event_as_stock_directory() {
                    self.name(input, instrument, d.stock().0);
                }
            }
            fb::Event::IexSecurityDirectory => {
                if let Some(d) = env.event_as_iex_security_directory() {
                    self.name(input, instrument, d.symbol().0);
                }
            }
            fb::Event::GapNotice => {
                if let Some(g) = env.event_as_gap_notice()
                    && !g.recoverable()
                {
                    self.stats.gaps += 1;
                    let only = (instrument != 0).then_some(instrument);
                    self.stale(input, only, &header, out);
                }
            }
            fb::Event::EndOfSession => {
                self.input_ended(input, &header, out);
                return Handled::EndOfSession;
            }
            _ => {}
        }
        Handled::Continue
    }

    /// Input `input` ended (its session, or its publisher closed the stream): its tops are
    /// stale from now on.
    pub fn input_ended(
        &mut self,
        input: usize,
        header: &HeaderFields,
        out: &mut impl ConsolidatedSink,
    ) {
        if input < self.inputs {
            self.stats.inputs_ended += 1;
            self.stale(input, None, header, out);
        }
    }

    /// `lost` records of input `input` never reached the consolidator (it was lapped): its
    /// tops are stale until its next `Bbo`s.
    pub fn input_lost(&mut self, input: usize, lost: u64, out: &mut impl ConsolidatedSink) {
        if input < self.inputs {
            self.stats.overruns += 1;
            self.stats.lost = self.stats.lost.saturating_add(lost);
            self.stale(input, None, &HeaderFields::default(), out);
        }
    }

    /// Names `instrument` of `input` as `symbol`, adding the symbol when it is new.
    fn name(&mut self, input: usize, instrument: u32, symbol: [u8; 8]) {
        let Some(key) = book_key(instrument).map(usize::from) else {
            self.stats.bad_instruments += 1;
            return;
        };
        self.stats.directories += 1;
        let slot = match self.index.get(&symbol) {
            Some(&i) => i + 1,
            None if self.entries.len() < self.max_symbols => {
                let i = self.entries.len() as u32;
                self.entries.push(Entry {
                    symbol,
                    tops: [Top::default(); MAX_INPUTS],
                });
                self.index.insert(symbol, i);
                i + 1
            }
            None => {
                self.stats.symbols_full += 1;
                NO_ROOM
            }
        };
        self.names[input][key] = slot;
    }

    /// Merges a `Bbo` of `instrument` on `input` and publishes its symbol.
    fn bbo(
        &mut self,
        input: usize,
        header: &HeaderFields,
        instrument: u32,
        b: &fb::BboBody,
        out: &mut impl ConsolidatedSink,
    ) {
        self.stats.bbos += 1;
        let Some(key) = book_key(instrument).map(usize::from) else {
            self.stats.bad_instruments += 1;
            return;
        };
        let i = match self.names[input][key] {
            UNNAMED => {
                self.stats.unnamed += 1;
                return;
            }
            NO_ROOM => {
                self.stats.symbols_full += 1;
                return;
            }
            slot => (slot - 1) as usize,
        };
        let Some(entry) = self.entries.get_mut(i) else {
            return;
        };
        entry.tops[input] = Top {
            bid_price: b.bid_price(),
            bid_size: b.bid_size(),
            ask_price: b.ask_price(),
            ask_size: b.ask_size(),
            instrument,
            venue: header.venue,
            state: State::Live,
        };
        self.publish(i, header, out);
    }

    /// Makes the live tops of `input` stale (of `only` that instrument, or all) and publishes
    /// each symbol changed.
    fn stale(
        &mut self,
        input: usize,
        only: Option<u32>,
        header: &HeaderFields,
        out: &mut impl ConsolidatedSink,
    ) {
        if let Some(instrument) = only {
            let Some(key) = book_key(instrument).map(usize::from) else {
                self.stats.bad_instruments += 1;
                return;
            };
            let slot = self.names[input][key];
            if slot != UNNAMED && slot != NO_ROOM {
                self.stale_one(input, (slot - 1) as usize, header, out);
            }
            return;
        }
        for i in 0..self.entries.len() {
            self.stale_one(input, i, header, out);
        }
    }

    fn stale_one(
        &mut self,
        input: usize,
        i: usize,
        header: &HeaderFields,
        out: &mut impl ConsolidatedSink,
    ) {
        let Some(top) = self.entries.get_mut(i).map(|e| &mut e.tops[input]) else {
            return;
        };
        if top.state != State::Live {
            return;
        }
        *top = Top {
            instrument: top.instrument,
            venue: top.venue,
            state: State::Stale,
            ..Top::default()
        };
        self.stats.stale += 1;
        self.publish(i, header, out);
    }

    /// Publishes entry `i`'s consolidated event, stamped with `header`.
    fn publish(&mut self, i: usize, header: &HeaderFields, out: &mut impl ConsolidatedSink) {
        let Some(entry) = self.entries.get(i) else {
            return;
        };
        let event = merge(entry);
        if event.flags.contains(fb::ConsolidatedFlags::Locked) {
            self.stats.locked += 1;
        }
        if event.flags.contains(fb::ConsolidatedFlags::Crossed) {
            self.stats.crossed += 1;
        }
        self.stats.published += 1;
        let header = HeaderFields {
            stock_locate: 0,
            tracking_number: 0,
            venue: fb::Venue::Consolidated,
            // Below max_symbols < u32::MAX: no wrap.
            instrument: i as u32 + 1,
            ..*header
        };
        out.publish(&header, &event);
    }
}

/// Whether a side of a top is quoted (an empty side has price and size 0).
fn quoted(price: i64, size: u64) -> bool {
    price != 0 || size != 0
}

/// The consolidated event of one symbol: best bid and ask over the live tops (at equal prices
/// the larger size, then the earlier input), flags, and every venue's top.
fn merge(entry: &Entry) -> fb::ConsolidatedBboFields {
    let mut f = fb::ConsolidatedBboFields {
        symbol: entry.symbol,
        ..fb::ConsolidatedBboFields::default()
    };
    let mut bid: Option<(i64, u64, fb::Venue)> = None;
    let mut ask: Option<(i64, u64, fb::Venue)> = None;
    for (input, top) in entry.tops.iter().enumerate() {
        match top.state {
            State::Never => continue,
            State::Stale => f.flags |= fb::ConsolidatedFlags::StaleVenue,
            State::Live => {
                if quoted(top.bid_price, top.bid_size)
                    && bid.is_none_or(|(p, s, _)| (top.bid_price, top.bid_size) > (p, s))
                {
                    bid = Some((top.bid_price, top.bid_size, top.venue));
                }
                if quoted(top.ask_price, top.ask_size)
                    && ask.is_none_or(|(p, s, _)| {
                        top.ask_price < p || (top.ask_price == p && top.ask_size > s)
                    })
                {
                    ask = Some((top.ask_price, top.ask_size, top.venue));
                }
            }
        }
        let n = usize::from(f.venue_count);
        if let Some(slot) = f.venues.get_mut(n) {
            *slot = fb::VenueTopFields {
                bid_price: top.bid_price,
                bid_size: top.bid_size,
                ask_price: top.ask_price,
                ask_size: top.ask_size,
                instrument: top.instrument,
                venue: top.venue,
                // Below MAX_INPUTS (8).
                input: input as u8,
                flags: if top.state == State::Stale {
                    fb::VenueTopFlags::Stale
                } else {
                    fb::VenueTopFlags::empty()
                },
            };
            f.venue_count += 1;
        }
    }
    if let Some((p, s, v)) = bid {
        (f.bid_price, f.bid_size, f.bid_venue) = (p, s, v);
    }
    if let Some((p, s, v)) = ask {
        (f.ask_price, f.ask_size, f.ask_venue) = (p, s, v);
    }
    if let (Some((b, ..)), Some((a, ..))) = (bid, ask) {
        if b == a {
            f.flags |= fb::ConsolidatedFlags::Locked;
        } else if b > a {
            f.flags |= fb::ConsolidatedFlags::Crossed;
        }
    }
    f
}

/// The output of a [`ConsolidateService`]: its publisher and encoder.
#[derive(Debug)]
struct Output {
    publisher: Publisher,
    encoder: Encoder,
    back_pressured: u64,
    /// Set when the output refuses a message for good (too large).
    failed: Option<PublishError>,
}

impl Output {
    /// Publishes `bytes`, retrying (spin, then yield) while a lossless subscriber holds the
    /// stream back.
    fn send(publisher: &mut Publisher, bytes: &[u8], back: &mut u64) -> Result<(), PublishError> {
        let mut spins = 0u32;
        loop {
            match publisher.publish_envelope(bytes) {
                Ok(_) => return Ok(()),
                Err(PublishError::BackPressured) => {
                    *back += 1;
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl ConsolidatedSink for Output {
    fn publish(&mut self, header: &HeaderFields, event: &fb::ConsolidatedBboFields) {
        let msg = self.encoder.consolidated_bbo(header, event);
        if let Err(e) = Output::send(&mut self.publisher, &msg, &mut self.back_pressured) {
            self.failed.get_or_insert(e);
        }
    }
}

/// What one [`ConsolidateService::poll`] turn did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polled {
    /// Handled this many input records (an overrun or a new epoch counted as 1).
    Worked(usize),
    /// Nothing to read on any input.
    Idle,
    /// Every input ended; the output's `EndOfSession` is published.
    Finished,
}

/// Input envelopes [`ConsolidateService::poll`] reads per input and turn in [`run`].
///
/// [`run`]: ConsolidateService::run
const RUN_BATCH: usize = 64;

/// A [`Consolidator`] between the bus's streams: reads each input book stream, publishes the
/// consolidated events on the output stream. See the [module docs](self).
#[derive(Debug)]
pub struct ConsolidateService {
    core: Consolidator,
    inputs: Vec<Subscriber>,
    ended: Vec<bool>,
    out: Output,
    /// Header of the last input event, for the output's end of session.
    last: HeaderFields,
    idle_polls: u64,
    finished: bool,
    counters: Option<(CounterFile, Instant)>,
}

impl ConsolidateService {
    /// Subscribes to every stream of `inputs` (book streams, `<feed>.book`) and creates the
    /// `output` stream on `bus`.
    pub fn new(
        bus: &Bus,
        inputs: &[&str],
        output: &str,
        config: &ConsolidateConfig,
    ) -> Result<ConsolidateService, ConsolidateError> {
        let core = Consolidator::new(inputs.len(), config.max_symbols)?;
        let options = SubscribeOptions {
            start: config.start,
            lossless: true,
            ..SubscribeOptions::default()
        };
        let subs = inputs
            .iter()
            .map(|name| bus.subscriber(name, &options))
            .collect::<Result<Vec<_>, _>>()?;
        let publisher = bus.publisher(output, &config.output)?;
        Ok(ConsolidateService {
            core,
            ended: vec![false; subs.len()],
            inputs: subs,
            out: Output {
                publisher,
                encoder: warm_encoder(),
                back_pressured: 0,
                failed: None,
            },
            last: HeaderFields::default(),
            idle_polls: 0,
            finished: false,
            counters: None,
        })
    }

    /// The core (symbols, current tops).
    pub fn consolidator(&self) -> &Consolidator {
        &self.core
    }

    /// The counters so far.
    pub fn stats(&self) -> ConsolidateStats {
        ConsolidateStats {
            back_pressured: self.out.back_pressured,
            idle_polls: self.idle_polls,
            ended: self.finished,
            ..self.core.stats()
        }
    }

    /// Publishes the counters ([`ConsolidateStats::NAMES`]) under the bus root while
    /// [`run`](Self::run) runs, for `mdbus stat`: role [`COUNTERS_ROLE`], stream the output.
    pub fn publish_counters(&mut self, bus: &Bus) -> Result<(), ConsolidateError> {
        let names: Vec<&str> = self.inputs.iter().map(Subscriber::name).collect();
        let detail = format!("{} -> {}", names.join(" + "), self.out.publisher.name());
        let detail = if detail.len() > mdbus_shm::counters::MAX_DETAIL {
            self.out.publisher.name().to_owned()
        } else {
            detail
        };
        let file = CounterFile::create(
            bus.root(),
            self.out.publisher.name(),
            COUNTERS_ROLE,
            &detail,
            &ConsolidateStats::NAMES,
        )?;
        self.counters = Some((file, Instant::now()));
        Ok(())
    }

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

    /// One turn: reads up to `max` envelopes of each input that has not ended and publishes
    /// what they changed. When the last input ends, publishes `EndOfSession` on the output.
    pub fn poll(&mut self, max: usize) -> Result<Polled, ConsolidateError> {
        if self.finished {
            return Ok(Polled::Finished);
        }
        let mut worked = 0usize;
        for i in 0..self.inputs.len() {
            if self.ended[i] {
                continue;
            }
            let ConsolidateService {
                core,
                inputs,
                ended,
                out,
                last,
                ..
            } = self;
            let sub = &mut inputs[i];
            let polled = sub.poll_event_batch(max, |ev| {
                let env = ev.envelope();
                *last = fb::HeaderFields::of(&env);
                // An end of session ends the input; anything after it in the batch is read
                // and ignored (a new session of that stream needs a new consolidator).
                if !ended[i] && core.handle(i, &env, out) == Handled::EndOfSession {
                    ended[i] = true;
                }
            });
            match polled {
                Ok(n) => worked = worked.saturating_add(n),
                Err(ReceiveError::Overrun { lost, .. }) => {
                    core.input_lost(i, lost, out);
                    worked = worked.saturating_add(1);
                }
                Err(ReceiveError::Closed) => {
                    if !ended[i] {
                        ended[i] = true;
                        let header = *last;
                        core.input_ended(i, &header, out);
                    }
                }
                Err(ReceiveError::NewEpoch { .. }) => {
                    sub.reopen()?;
                    worked = worked.saturating_add(1);
                }
                Err(source) => {
                    return Err(ConsolidateError::Input {
                        stream: sub.name().to_owned(),
                        source,
                    });
                }
            }
            if let Some(source) = out.failed.take() {
                return Err(ConsolidateError::Publish {
                    stream: out.publisher.name().to_owned(),
                    source,
                });
            }
        }
        if self.ended.iter().all(|e| *e) {
            let msg = self
                .out
                .encoder
                .end_of_session(&self.last, &fb::EndOfSessionFields);
            let sent = Output::send(&mut self.out.publisher, &msg, &mut self.out.back_pressured);
            sent.map_err(|source| ConsolidateError::Publish {
                stream: self.out.publisher.name().to_owned(),
                source,
            })?;
            self.finished = true;
            return Ok(Polled::Finished);
        }
        Ok(if worked == 0 {
            self.idle_polls += 1;
            Polled::Idle
        } else {
            Polled::Worked(worked)
        })
    }

    /// Reads the inputs until every one has ended or `stop` is set. When nothing came, waits
    /// as `wait` says without favouring one input: `BusySpin` spins and `SpinThenYield`
    /// yields the core between turns over every input; `Blocking` sleeps on the first input
    /// not ended for at most 1 ms (another input's news waits that long). Returns the
    /// counters; with [`publish_counters`](Self::publish_counters) they are published while
    /// it runs and, final, when it returns (the file then marked finished).
    pub fn run(
        &mut self,
        wait: WaitStrategy,
        stop: &AtomicBool,
    ) -> Result<ConsolidateStats, ConsolidateError> {
        loop {
            match self.poll(RUN_BATCH)? {
                Polled::Worked(_) => self.publish_counters_due(false),
                Polled::Finished => break,
                Polled::Idle => {
                    self.publish_counters_due(false);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    self.out.publisher.hand_off();
                    self.out.publisher.heartbeat();
                    match wait {
                        WaitStrategy::BusySpin => std::hint::spin_loop(),
                        WaitStrategy::Blocking | WaitStrategy::Batching { .. } => {
                            if let Some(i) = self.ended.iter().position(|e| !*e) {
                                let _ = self.inputs[i].wait(&wait, Some(Duration::from_millis(1)));
                            }
                        }
                        _ => std::thread::yield_now(),
                    }
                }
            }
        }
        self.publish_counters_due(true);
        if let Some((file, _)) = &self.counters {
            file.finish();
        }
        Ok(self.stats())
    }
}

/// An encoder that has already built a consolidated event with every venue, so that none
/// allocates later.
fn warm_encoder() -> Encoder {
    let mut e = Encoder::new();
    let full = fb::ConsolidatedBboFields {
        symbol: *b"WARMUP  ",
        bid_price: 1,
        bid_size: 1,
        bid_venue: fb::Venue::Nasdaq,
        ask_price: 1,
        ask_size: 1,
        ask_venue: fb::Venue::Nasdaq,
        flags: fb::ConsolidatedFlags::all(),
        venue_count: MAX_INPUTS as u8,
        venues: [fb::VenueTopFields {
            bid_price: 1,
            bid_size: 1,
            ask_price: 1,
            ask_size: 1,
            instrument: 1,
            venue: fb::Venue::Nasdaq,
            input: 1,
            flags: fb::VenueTopFlags::Stale,
        }; MAX_INPUTS],
    };
    let _ = e.consolidated_bbo(&HeaderFields::default(), &full);
    let _ = e.end_of_session(&HeaderFields::default(), &fb::EndOfSessionFields);
    e
}

#[cfg(test)]
mod tests;
