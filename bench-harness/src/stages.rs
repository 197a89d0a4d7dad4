//! The three-stage pipeline `mdbus demo` and `mdbus bench replay` run: a real session through
//! feed handler, book service and strategy, each a thread pinned to a cpu.
//!
//! ```text
//!  ITCH file/bytes --> feed handler --shm "demo.itch"--> book builder --shm "demo.itch.book",
//!                      (replay, paced)                   (BookService)  "demo.itch.trades"--> strategy
//! ```
//!
//! The stages are connected by lossless shared-memory streams under a temporary bus root that
//! is removed at the end. With two cpus, two stages share one ([`Threading`]); with
//! [`Threading::BookOnFeed`] the feed handler builds the books itself, from the messages it
//! decodes, and publishes the book service's outputs on the same streams. The strategy is
//! the example strategy's logic (`bus/examples/strategy/signals.rs`). Each message is stamped
//! with the TSC when the feed handler decodes it; the strategy stamps its callback with the
//! same clock, and the difference goes into an HdrHistogram: the tick-to-strategy latency,
//! through two rings and the book builder.

use serde::Serialize;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use hdrhistogram::Histogram;
use mdbus_bus::merge::SourceMerge;
use mdbus_bus::{
    Bus, Mode, ReceiveError, StreamConfig, SubscribeOptions, Subscriber, Trust, WaitStrategy,
};
use mdbus_feed_handlers::book::{BookConfig, BookSummary};
use mdbus_feed_handlers::bookstream::{
    BookService, BookServiceConfig, BookServiceStats, Polled, Share, book_stream_name, output_ring,
    trades_stream_name,
};
use mdbus_feed_handlers::replay::{
    ReplayOptions, ReplayReport, Replayer, Source, Speed, StampClock,
};

use crate::pinning::{LayoutArg, Pinning, ThreadRole};

/// The example strategy's logic, shared with `bus/examples/strategy.rs`.
#[allow(dead_code, missing_debug_implementations)]
#[path = "../../bus/examples/strategy/signals.rs"]
pub mod signals;

/// The bundled session: the first 10,000 messages of AAPL (stock locate 13) on Nasdaq
/// TotalView-ITCH 5.0, 2020-01-30 (see `codecs/testdata/README.md`).
pub const BUNDLED_SESSION: &[u8] =
    include_bytes!("../../codecs/testdata/itch/aapl-2020-01-30-10k.itch");

/// A description of the bundled session.
pub const BUNDLED_NAME: &str = "AAPL, Nasdaq TotalView-ITCH 5.0, 2020-01-30, first 10,000 messages";

/// The feed stream's name; the book service adds `.book` and `.trades`.
pub const FEED: &str = "demo.itch";
/// What can go wrong in the demo.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The replay failed.
    #[error(transparent)]
    Replay(#[from] mdbus_feed_handlers::replay::ReplayError),
    /// The book service failed.
    #[error(transparent)]
    Book(#[from] mdbus_feed_handlers::bookstream::BookServiceError),
    /// A stream could not be opened.
    #[error(transparent)]
    Bus(#[from] mdbus_bus::BusError),
    /// A stream failed while the strategy read it.
    #[error("strategy reading {stream:?}: {source}")]
    Strategy {
        /// The stream.
        stream: String,
        /// What the ring said.
        source: ReceiveError,
    },
    /// The temporary bus root could not be made, or the output written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A bad argument.
    #[error("{0}")]
    BadArg(String),
    /// A thread panicked or could not start (a bug or an exhausted host).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Cpu plan for the requested cpus (the first this process may use when none): feed, book,
/// strategy. With two cpus the feed handler keeps one and the
/// two consumers share the other: the book builder runs until its input is drained or its
/// outputs are full, then the strategy drains them, so the pair switches rarely (sharing the
/// feed handler's cpu instead makes the paced feed and the strategy trade the cpu every few
/// messages).
pub fn plan_cpus(requested: &[usize]) -> Result<[usize; 3], StageError> {
    let cpus = if requested.is_empty() {
        let avail = mdbus_tuning::current_affinity()
            .map_err(|e| StageError::Internal(format!("cannot read the cpu affinity: {e}")))?;
        avail.into_iter().take(3).collect::<Vec<_>>()
    } else {
        requested.to_vec()
    };
    match cpus.as_slice() {
        [] => Err(StageError::BadArg("no cpu to run on".into())),
        [a] => Ok([*a; 3]),
        [a, b] => Ok([*a, *b, *b]),
        [a, b, c, ..] => Ok([*a, *b, *c]),
    }
}

/// The pipeline's three threads and the layout roles they take their cpus from.
pub const STAGES: [ThreadRole; 3] = [
    ThreadRole {
        thread: "feed handler",
        roles: &["feed_handler"],
    },
    ThreadRole {
        thread: "book builder",
        roles: &["book_builder"],
    },
    ThreadRole {
        thread: "strategy",
        roles: &["strategy"],
    },
];

/// Where the pipeline's stages run: `cpus` (a `--cpus` flag, see [`plan_cpus`]) win, then the
/// layout of `layout`, then the first cpus this process may use. Returns the placement of
/// [`STAGES`].
pub fn stage_pinning(layout: &LayoutArg, cpus: &[usize]) -> Result<Pinning, StageError> {
    let bad = |e: crate::pinning::PinningError| StageError::BadArg(e.to_string());
    let explicit = if cpus.is_empty() {
        None
    } else {
        Some(plan_cpus(cpus)?.to_vec())
    };
    let pinning = if explicit.is_none() && layout.path().is_none() {
        Pinning::pinned(&STAGES, &plan_cpus(&[])?)
    } else {
        Pinning::choose(layout, &STAGES, explicit, || Ok(None)).map_err(bad)?
    };
    Ok(pinning)
}

/// A temporary bus root, in shared memory when `/dev/shm` exists (a root on a disk file
/// system puts every ring under page-cache writeback: write faults after each flush).
pub fn temp_root() -> std::io::Result<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    let b = {
        let mut b = tempfile::Builder::new();
        b.prefix("mdbus-demo-");
        b
    };
    if shm.is_dir()
        && let Ok(d) = b.tempdir_in(shm)
    {
        return Ok(d);
    }
    b.tempdir()
}

/// The ring of the pipeline's feed stream: 16 MiB, lossless, prefaulted (no page fault on
/// the hot path).
pub fn feed_ring() -> StreamConfig {
    StreamConfig {
        capacity: 16 << 20,
        max_msg_len: 512,
        mode: Mode::Lossless,
        prefault: true,
        ..StreamConfig::default()
    }
}

/// Where the feed handler reads from.
pub enum Input {
    /// A file or bundled bytes.
    Source(Source),
    /// Any byte source (an ITCH file, pcap or pcapng), with its name.
    Reader(String, Box<dyn std::io::Read + Send>),
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Source(s) => f.debug_tuple("Source").field(s).finish(),
            Input::Reader(name, _) => f.debug_tuple("Reader").field(name).finish_non_exhaustive(),
        }
    }
}

/// What one run of the three-stage pipeline produced.
pub struct PipelineRun {
    /// The feed handler's report.
    pub feed: ReplayReport,
    /// The book service's counters (the feed handler's, with [`Threading::BookOnFeed`]).
    pub book: BookServiceStats,
    /// The books at the end.
    pub summary: BookSummary,
    /// Symbols of the locates in `summary`.
    pub symbols: Vec<(u16, String)>,
    /// The strategy's final state.
    pub strategy: signals::Strategy,
    /// Its first signals.
    pub first_signals: Vec<signals::Signal>,
    /// Turns of the strategy's own thread that found both its inputs empty (it then waited);
    /// 0 when the strategy shares a thread.
    pub strategy_idle: u64,
    /// Tick-to-strategy latency of every BBO update and trade, ns (empty unless
    /// [`StrategyOutputs::latency`]).
    pub latency: Histogram<u64>,
    /// From the feed handler's first read to the strategy's last callback, ns.
    pub elapsed_ns: u64,
    /// Whether every thread was pinned.
    pub pinned: bool,
}

impl std::fmt::Debug for PipelineRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineRun")
            .field("feed", &self.feed)
            .field("book", &self.book)
            .field("elapsed_ns", &self.elapsed_ns)
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

/// What the strategy stage keeps of its run besides its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrategyOutputs {
    /// How many of the first signals to keep (to show).
    pub show: usize,
    /// Whether each BBO and trade's tick-to-strategy latency goes into the run's histogram:
    /// a clock read and a histogram entry per event, which a throughput run leaves out.
    pub latency: bool,
}

/// Runs feed handler -> book builder -> strategy, each on its thread placed by `pinning`
/// ([`STAGES`]; `shared`: two of them share a cpu), over lossless rings under a temporary bus
/// root. `feed_share` matters to [`Threading::SplitBooks`] alone.
pub fn run_pipeline(
    input: Input,
    speed: Speed,
    book: BookConfig,
    pinning: &Pinning,
    (threading, feed_share): (Threading, FeedShare),
    strategy_out: StrategyOutputs,
) -> Result<PipelineRun, StageError> {
    let root = temp_root()?;
    let bus = Bus::with_root(root.path())?;
    let clock = StampClock::new();
    let cpus = thread_cpus(pinning, threading);
    let options = ReplayOptions {
        speed,
        // The feed handler has a cpu to itself unless there is only one.
        spin_pacing: cpus[1..].iter().all(|c| *c != cpus[0]),
        ..ReplayOptions::default()
    };
    let feed_ring = feed_ring();
    let replayer = match input {
        Input::Source(source) => Replayer::open(&source, &bus, FEED, &feed_ring, options)?,
        Input::Reader(name, reader) => {
            Replayer::from_reader(&name, reader, &bus, FEED, &feed_ring, options)?
        }
    }
    .with_clock(clock.clone());
    let book_config = BookServiceConfig {
        book,
        output: StreamConfig {
            prefault: true,
            ..output_ring()
        },
        publish_levels: true,
        share: Share::ALL,
    };
    let shares = threading.shares(feed_share)?;
    let mut services = Vec::with_capacity(shares.len());
    for &share in &shares {
        let config = BookServiceConfig {
            share,
            ..book_config.clone()
        };
        services.push(BookService::new(&bus, FEED, &config)?);
    }
    let mut services = services.into_iter();
    // SAFETY: every stream of this bus root is written by this process's feed pipeline and
    // book service, which publish nothing but envelopes built by `schema::Encoder`.
    let trust = unsafe { Trust::publisher() };
    let options = SubscribeOptions {
        trust,
        ..SubscribeOptions::default()
    };
    // Every subscriber joins before anything is published (lossless slots). A book service
    // reads the feed stream on a thread of its own, or is fed on the feed handler's (then,
    // unless the books are split, nothing subscribes to the feed stream, which holds nobody
    // back).
    let (replayer, mut book_parts) = if threading.books_on_feed() {
        let on_feed = services.next().expect("one service per share");
        let replayer = replayer
            .with_book_service(on_feed)
            .map_err(|e| StageError::BadArg(format!("--threading {}: {e}", threading.name())))?;
        let rest = match services.next() {
            Some(service) => Some((service, bus.subscriber(FEED, &options)?)),
            None => None,
        };
        (replayer, rest)
    } else {
        let book_input = bus.subscriber(FEED, &options)?;
        let service = services.next().expect("one service per share");
        (replayer, Some((service, book_input)))
    };
    // The strategy's inputs: each share's book and trade streams.
    let mut outputs = Vec::with_capacity(2 * shares.len());
    for share in &shares {
        let base = share.outputs(FEED);
        outputs.push(bus.subscriber(&book_stream_name(&base), &options)?);
        outputs.push(bus.subscriber(&trades_stream_name(&base), &options)?);
    }
    let inputs = StrategyInputs::new(outputs)?;

    // On a shared cpu, spinning only delays the thread that would produce the data. As fast
    // as it goes, consumers that catch up wait a little before they look again, so they read
    // in batches rather than pull each record across as it is written.
    let batching = speed == Speed::Max;
    let wait = if share_a_cpu(&cpus) {
        WaitStrategy::SpinThenYield { spins: 10 }
    } else if batching {
        WaitStrategy::Batching {
            pause: WaitStrategy::BATCH_PAUSE,
        }
    } else {
        WaitStrategy::BusySpin
    };
    let stop = AtomicBool::new(false);
    // Each stage pins itself and then waits for the others: the feed handler starts only when
    // both consumers are running, so no latency sample includes a thread's start-up.
    let ready = StartGate::default();
    let ready = &ready;
    let (feed, consumers) = std::thread::scope(|s| {
        let spawn_err = |e: std::io::Error| {
            // Release the stages already waiting: without a feed they find their inputs
            // closed and end.
            ready.open();
            StageError::Internal(format!("cannot start a thread: {e}"))
        };
        let threads = threading.threads();
        // The strategy's inputs, for whichever thread runs it.
        let mut strategy_inputs = Some(inputs);
        let spawn_strategy = |stage: usize, inputs: [Subscriber; 2]| {
            let strategy_clock = clock.clone();
            std::thread::Builder::new()
                .name("mdbus-strategy".into())
                .spawn_scoped(s, move || {
                    let pinned = pinning.enter(stage);
                    // Made before the gate: its tables are allocated before the feed
                    // starts, not while the first messages wait.
                    let stage = StrategyStage::new(inputs, strategy_clock.clone(), strategy_out);
                    ready.arrive_and_wait(threads);
                    let r = stage.and_then(|stage| run_strategy(stage, wait));
                    r.map(|r| (r, strategy_clock.raw(), pinned))
                })
                .map_err(spawn_err)
        };
        let spawn_book = |service: BookService, mut book_input: Subscriber| {
            let stop = &stop;
            std::thread::Builder::new()
                .name("mdbus-book".into())
                .spawn_scoped(s, move || {
                    let mut service = service;
                    let pinned = pinning.enter(1);
                    ready.arrive_and_wait(threads);
                    let stats = service.run(&mut book_input, wait, stop)?;
                    Ok::<_, StageError>(book_results(&service, stats, pinned))
                })
                .map_err(spawn_err)
        };
        let consumers = match threading {
            Threading::Dedicated => {
                let inputs = strategy_inputs.take().expect("inputs").pair()?;
                let (service, book_input) = book_parts.take().expect("a book service");
                let strategy = spawn_strategy(2, inputs)?;
                Either::Two(spawn_book(service, book_input)?, strategy)
            }
            Threading::BookOnFeed => {
                // The strategy on the cpu the book builder's thread would have.
                let inputs = strategy_inputs.take().expect("inputs").pair()?;
                Either::Strategy(spawn_strategy(1, inputs)?)
            }
            Threading::Shared | Threading::SplitBooks => {
                let inputs = strategy_inputs.take().expect("inputs");
                let (mut service, mut book_input) = book_parts.take().expect("a book service");
                let strategy_clock = clock.clone();
                let both = std::thread::Builder::new()
                    .name("mdbus-book+strat".into())
                    .spawn_scoped(s, move || {
                        let pinned = pinning.enter(1);
                        let turns = BookAndStrategy {
                            input: &mut book_input,
                            clock: &strategy_clock,
                            outputs: strategy_out,
                            wait,
                            ready: (ready, threads),
                        };
                        let strategy = match inputs {
                            StrategyInputs::One(i) => turns.run(&mut service, i),
                            StrategyInputs::Split(i) => turns.run(&mut service, i),
                        }?;
                        let end = strategy_clock.raw();
                        let book = book_results(&service, service.stats(), pinned);
                        Ok::<_, StageError>((book, (strategy, end, pinned)))
                    })
                    .map_err(spawn_err)?;
                Either::One(both)
            }
            Threading::StrategyOnFeed => {
                let (service, book_input) = book_parts.take().expect("a book service");
                Either::Book(spawn_book(service, book_input)?)
            }
        };
        let feed_clock = clock.clone();
        let feed_name = if strategy_inputs.is_some() {
            "mdbus-feed+strat"
        } else if threading.books_on_feed() {
            "mdbus-feed+book"
        } else {
            "mdbus-feed"
        };
        let feed = std::thread::Builder::new()
            .name(feed_name.into())
            .spawn_scoped(s, move || {
                let pinned = pinning.enter(0);
                let Some(inputs) = strategy_inputs else {
                    ready.arrive_and_wait(threads);
                    let start = feed_clock.raw();
                    let (report, service) = replayer.run_with_book_service(&mut |_| {})?;
                    // With the books (or a share of them) on the feed, those this thread built.
                    let book = match service {
                        Some(mut svc) => {
                            svc.take_output_error()?;
                            Some(book_results(&svc, svc.stats(), pinned))
                        }
                        None => None,
                    };
                    return Ok((report, start, pinned, None, book));
                };
                // The strategy on this thread, in the feed handler's waits.
                let stage = StrategyStage::new(inputs.pair()?, feed_clock.clone(), strategy_out);
                ready.arrive_and_wait(threads);
                let start = feed_clock.raw();
                let pause = batching.then_some(WaitStrategy::BATCH_PAUSE);
                let (report, stage) = replay_with_strategy(replayer, stage?, pause)?;
                // The replay ran the stage until its inputs ended: this returns at once.
                let result = run_strategy(stage, wait)?;
                let strategy = (result, feed_clock.raw(), pinned);
                Ok::<_, StageError>((report, start, pinned, Some(strategy), None))
            })
            .map_err(spawn_err)?;
        let join = |what: &str| StageError::Internal(format!("the {what} thread panicked"));
        let feed = feed.join().map_err(|_| join("feed handler"));
        let consumers = match consumers {
            Either::Two(book, strategy) => {
                let book = book.join().map_err(|_| join("book builder"));
                let strategy = strategy.join().map_err(|_| join("strategy"));
                book.and_then(|b| Ok((Some(b?), Some(strategy??))))
            }
            Either::One(both) => both
                .join()
                .map_err(|_| join("book builder and strategy"))
                .and_then(|r| r.map(|(b, s)| (Some(b), Some(s)))),
            Either::Book(book) => book
                .join()
                .map_err(|_| join("book builder"))
                .and_then(|r| r.map(|b| (Some(b), None))),
            Either::Strategy(strategy) => strategy
                .join()
                .map_err(|_| join("strategy"))
                .and_then(|r| r.map(|s| (None, Some(s)))),
        };
        Ok::<_, StageError>((feed, consumers))
    })?;
    let (feed, start, feed_pinned, on_feed, books_on_feed) = feed??;
    let (book, strategy) = consumers?;
    let (book_stats, summary, symbols, book_pinned) =
        join_shares(books_on_feed.into_iter().chain(book).collect())?;
    let (strategy, end, strategy_pinned) = strategy
        .or(on_feed)
        .ok_or_else(|| StageError::Internal("no thread ran the strategy".into()))?;
    let (strategy, first_signals, latency, strategy_idle) = strategy;
    drop(bus);
    root.close()?;
    Ok(PipelineRun {
        feed,
        book: book_stats,
        summary,
        symbols,
        strategy,
        first_signals,
        strategy_idle,
        latency,
        elapsed_ns: clock.delta_ns(start, end),
        pinned: feed_pinned && book_pinned && strategy_pinned,
    })
}

/// The arrangement when none is asked for: each stage on its own thread when the three have
/// three cpus; with fewer, the strategy on the feed handler's thread, so that no two
/// busy-polling threads hand one cpu back and forth through the scheduler (that costs
/// milliseconds in the latency tail).
pub fn default_threading(pinning: &Pinning) -> Threading {
    if share_a_cpu(&thread_cpus(pinning, Threading::Dedicated)) {
        Threading::StrategyOnFeed
    } else {
        Threading::Dedicated
    }
}

/// The cpu of each thread `threading` runs: feed handler, book builder, strategy (two
/// threads when the strategy shares one).
pub fn thread_cpus(pinning: &Pinning, threading: Threading) -> Vec<usize> {
    (0..threading.threads()).map(|i| pinning.cpu(i)).collect()
}

/// Whether two of these threads' cpus are one.
pub fn share_a_cpu(cpus: &[usize]) -> bool {
    cpus.iter()
        .enumerate()
        .any(|(i, a)| cpus[i + 1..].contains(a))
}

/// The consumers' threads: the book builder's and the strategy's, one running both, the
/// book builder's alone (the strategy runs on the feed handler's), or the strategy's alone
/// (the books are built on the feed handler's).
enum Either<B, S, O> {
    Two(B, S),
    One(O),
    Book(B),
    Strategy(S),
}

/// With [`Threading::SplitBooks`], the feed handler's share of the instruments in 64ths: the
/// instruments whose id modulo 64 is below it (the other thread takes the rest). The default,
/// 40 (five eighths), measured fastest on a two-cpu host on a synthetic day (BENCHMARKS.md):
/// the feed handler's own work costs its thread less than reading the feed back and running
/// the strategy cost the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FeedShare(u32);

impl FeedShare {
    /// Five eighths of the instruments to the feed handler's thread.
    pub const DEFAULT: FeedShare = FeedShare(40);

    /// `n` 64ths, 1 to 63.
    pub fn new(n: u32) -> Result<FeedShare, StageError> {
        if (1..Share::RESIDUES).contains(&n) {
            Ok(FeedShare(n))
        } else {
            Err(StageError::BadArg(format!(
                "--feed-share {n}: the feed handler's share is 1 to {} 64ths (each thread keeps some books)",
                Share::RESIDUES - 1
            )))
        }
    }

    /// The share in 64ths.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for FeedShare {
    fn default() -> Self {
        FeedShare::DEFAULT
    }
}

/// How the book builder and the strategy get their cpu time.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Threading {
    /// Each stage on its own thread, pinned to its own cpu (three threads).
    #[default]
    Dedicated,
    /// The book builder and the strategy on one thread, in turns, pinned to the book
    /// builder's cpu (two threads): what a host with two cpus should run, since two
    /// busy-polling threads on one cpu hand it to each other through the scheduler.
    Shared,
    /// The strategy on the feed handler's thread, run whenever the feed handler waits (for
    /// room in its ring, or for the next message's time) and after every few hundred messages;
    /// the book builder on a thread and cpu of its own (two threads). The other two-cpu
    /// arrangement: the book builder, the heaviest stage, gets a cpu to itself, and the two
    /// light stages share the other.
    StrategyOnFeed,
    /// The books built on the feed handler's thread, from the fields of each message it
    /// decodes (after publishing the message on the feed stream, as always), by the book
    /// service's code, which publishes the same BBO, level and trade envelopes on the same
    /// streams; the strategy on a thread of its own, on the book builder's cpu (two threads).
    /// No envelope is read back between the feed handler and the books. Nasdaq ITCH sources
    /// only.
    BookOnFeed,
    /// The books split in two by instrument ([`Share`]s), one share on each cpu: the feed
    /// handler's share (see [`FeedShare`]) built on its thread as with `book-on-feed`, the
    /// rest by a book service reading the feed stream (and skipping the feed handler's
    /// instruments) on a thread that also runs the strategy in turns, as with `shared` (two
    /// threads). The strategy merges both shares' book and trade streams. Nasdaq ITCH sources
    /// only.
    SplitBooks,
}

impl Threading {
    /// The stage of [`STAGES`] whose cpu (and layout role) the strategy's thread takes: its
    /// own, or that of the stage whose thread it shares.
    pub fn strategy_stage(self) -> usize {
        match self {
            Threading::Dedicated => 2,
            Threading::Shared | Threading::BookOnFeed | Threading::SplitBooks => 1,
            Threading::StrategyOnFeed => 0,
        }
    }

    /// The stage whose cpu the floor is measured against, from the feed handler's: the
    /// strategy's, or the book builder's when the strategy runs on the feed handler's thread.
    pub fn floor_stage(self) -> usize {
        match self {
            Threading::StrategyOnFeed => 1,
            t => t.strategy_stage(),
        }
    }

    /// The name `--threading` takes.
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_owned())
    }

    /// Whether the feed handler's thread builds books (all of them, or a share).
    pub fn books_on_feed(self) -> bool {
        matches!(self, Threading::BookOnFeed | Threading::SplitBooks)
    }

    /// The shares of the instruments the books are split into, the feed handler's first
    /// when it builds books.
    fn shares(self, feed_share: FeedShare) -> Result<Vec<Share>, StageError> {
        match self {
            Threading::SplitBooks => {
                let f = feed_share.0;
                Share::split(&[f, Share::RESIDUES - f]).map_err(StageError::BadArg)
            }
            _ => Ok(vec![Share::ALL]),
        }
    }

    /// Threads run: one per stage of [`STAGES`] up to the last one with a thread of its own.
    pub fn threads(self) -> usize {
        match self {
            Threading::Dedicated => 3,
            Threading::Shared
            | Threading::StrategyOnFeed
            | Threading::BookOnFeed
            | Threading::SplitBooks => 2,
        }
    }
}

/// Holds each stage until all have arrived (or the gate is opened because one could not
/// start), so that the feed handler publishes only once its consumers are running.
#[derive(Default)]
struct StartGate {
    arrived: std::sync::atomic::AtomicUsize,
    opened: AtomicBool,
}

impl StartGate {
    fn arrive_and_wait(&self, stages: usize) {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        self.arrived.fetch_add(1, AcqRel);
        while self.arrived.load(Acquire) < stages && !self.opened.load(Acquire) {
            std::thread::yield_now();
        }
    }

    fn open(&self) {
        self.opened
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// What a thread that built books hands back: the service's counters, its books, the
/// symbols of their locates, and whether the thread was pinned.
type BookResults = (BookServiceStats, BookSummary, Vec<(u16, String)>, bool);

fn book_results(service: &BookService, stats: BookServiceStats, pinned: bool) -> BookResults {
    let summary = service.summary();
    let symbols = summary
        .books
        .iter()
        .map(|(l, _)| (*l, symbol_text(service.symbol(*l))))
        .collect();
    (stats, summary, symbols, pinned)
}

/// The books of every thread that built some (each a [`Share`] of the instruments), as one.
fn join_shares(mut parts: Vec<BookResults>) -> Result<BookResults, StageError> {
    if parts.len() <= 1 {
        return parts
            .pop()
            .ok_or_else(|| StageError::Internal("no thread built the books".into()));
    }
    let stats: Vec<BookServiceStats> = parts.iter().map(|p| p.0).collect();
    let pinned = parts.iter().all(|p| p.3);
    let mut symbols: Vec<(u16, String)> = parts.iter_mut().flat_map(|p| p.2.drain(..)).collect();
    symbols.sort_unstable();
    let summary = BookSummary::of_shares(parts.into_iter().map(|p| p.1));
    Ok((
        BookServiceStats::of_shares(&stats),
        summary,
        symbols,
        pinned,
    ))
}

/// The strategy's inputs: the book and trade streams of the books, or of each of their two
/// shares ([`Threading::SplitBooks`]).
/// Made once per run and moved into one thread: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum StrategyInputs {
    One([Subscriber; 2]),
    Split([Subscriber; 4]),
}

impl StrategyInputs {
    /// Book and trade streams in pairs, one pair per share.
    fn new(streams: Vec<Subscriber>) -> Result<Self, StageError> {
        let n = streams.len();
        let bad = |_| StageError::Internal(format!("{n} strategy inputs"));
        if n == 2 {
            Ok(StrategyInputs::One(streams.try_into().map_err(bad)?))
        } else {
            Ok(StrategyInputs::Split(streams.try_into().map_err(bad)?))
        }
    }

    /// The one pair (books not split).
    fn pair(self) -> Result<[Subscriber; 2], StageError> {
        match self {
            StrategyInputs::One(i) => Ok(i),
            StrategyInputs::Split(_) => Err(StageError::Internal(
                "a strategy thread of one pair of inputs was given split books".into(),
            )),
        }
    }
}

/// A thread that runs a book service and the strategy in turns ([`run_book_and_strategy`]):
/// all it needs besides the service and the strategy's inputs.
struct BookAndStrategy<'a> {
    /// The book service's input.
    input: &'a mut Subscriber,
    clock: &'a StampClock,
    outputs: StrategyOutputs,
    wait: WaitStrategy,
    /// The start gate and the number of threads it waits for.
    ready: (&'a StartGate, usize),
}

impl BookAndStrategy<'_> {
    /// Makes the strategy stage on `inputs`, waits at the gate, and runs the turns until the
    /// strategy's inputs end.
    fn run<const N: usize>(
        self,
        service: &mut BookService,
        inputs: [Subscriber; N],
    ) -> Result<StrategyResult, StageError> {
        let stage = StrategyStage::new(inputs, self.clock.clone(), self.outputs);
        self.ready.0.arrive_and_wait(self.ready.1);
        let mut stage = stage?;
        run_book_and_strategy(service, self.input, &mut stage, self.wait)?;
        Ok(stage.into_result())
    }
}

fn symbol_text(s: Option<[u8; 8]>) -> String {
    s.map(|s| String::from_utf8_lossy(&s).trim_end().to_owned())
        .unwrap_or_default()
}

/// What the strategy thread hands back: its state, the first signals, the latency histogram,
/// and the turns of its own thread that found its inputs empty.
type StrategyResult = (signals::Strategy, Vec<signals::Signal>, Histogram<u64>, u64);

/// The strategy stage: reads BBO and trade events zero-copy, in source order, runs the example
/// strategy's logic, and records each event's tick-to-strategy latency. Its `N` inputs are
/// book and trade streams in pairs: one pair, or one per [`Share`] of the books.
struct StrategyStage<const N: usize = 2> {
    strategy: signals::Strategy,
    hist: Histogram<u64>,
    first: Vec<signals::Signal>,
    outputs: StrategyOutputs,
    clock: StampClock,
    /// Book (even) and trade (odd) streams, merged in source order: a trade after the quote
    /// change its execution caused, before the next message's quote.
    input: SourceMerge<N>,
    /// Turns of [`run_strategy`] that found both inputs empty.
    idle: u64,
}

impl<const N: usize> StrategyStage<N> {
    fn new(
        inputs: [Subscriber; N],
        clock: StampClock,
        outputs: StrategyOutputs,
    ) -> Result<Self, StageError> {
        Ok(StrategyStage {
            strategy: signals::Strategy::new(signals::Params::default()),
            hist: Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
                .map_err(|e| StageError::Internal(format!("histogram: {e}")))?,
            first: Vec::with_capacity(outputs.show),
            outputs,
            clock,
            input: SourceMerge::new(inputs),
            idle: 0,
        })
    }

    /// Both inputs ended.
    fn finished(&self) -> bool {
        self.input.all_ended()
    }

    /// One turn: up to `max` events. Returns how many records were consumed.
    fn poll(&mut self, max: usize) -> Result<usize, StageError> {
        let mut n = 0;
        while n < max && !self.finished() {
            let (strategy, hist, first) = (&mut self.strategy, &mut self.hist, &mut self.first);
            let (clock, StrategyOutputs { show, latency }) = (&self.clock, self.outputs);
            let mut ended = None;
            let got = self
                .input
                .poll(|k, e| {
                    let env = e.envelope();
                    let kind = env.event_type();
                    if kind == mdbus_bus::schema::Event::EndOfSession {
                        ended = Some(k);
                        return;
                    }
                    let signal = if k % 2 == 0 {
                        strategy.on_book_event(&env)
                    } else {
                        strategy.on_trade_event(&env)
                    };
                    if latency
                        && matches!(
                            kind,
                            mdbus_bus::schema::Event::Bbo | mdbus_bus::schema::Event::Trade
                        )
                    {
                        let now = clock.unix_ns_of(clock.raw());
                        let tick_to_strategy = now.saturating_sub(env.header().recv_ts_ns());
                        hist.saturating_record(tick_to_strategy.max(1));
                    }
                    if let Some(s) = signal
                        && first.len() < show
                    {
                        first.push(s);
                    }
                })
                .map_err(|e| StageError::Strategy {
                    stream: e.stream,
                    source: e.source,
                })?;
            if let Some(k) = ended {
                self.input.end(k);
            }
            if !got {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Waits (for at most `timeout`) until an input that has not ended has something.
    fn wait(&mut self, wait: &WaitStrategy, timeout: Duration) {
        self.input.wait(wait, timeout);
    }

    fn into_result(self) -> StrategyResult {
        (self.strategy, self.first, self.hist, self.idle)
    }
}

/// The strategy thread: the strategy stage alone, waiting with `wait` when both inputs are
/// empty.
fn run_strategy<const N: usize>(
    mut stage: StrategyStage<N>,
    wait: WaitStrategy,
) -> Result<StrategyResult, StageError> {
    while !stage.finished() {
        if stage.poll(STRATEGY_TURN)? == 0 && !stage.finished() {
            stage.idle += 1;
            // Short: the wait watches one of the two inputs.
            stage.wait(&wait, Duration::from_micros(20));
        }
    }
    Ok(stage.into_result())
}

/// The strategy stage as the feed handler's idle work, with the first error it met (the
/// feed handler's thread reports it once the replay is over).
struct OnFeed {
    stage: StrategyStage,
    error: Option<StageError>,
}

/// Runs `replayer` with the strategy stage as its idle work ([`Threading::StrategyOnFeed`]):
/// a turn of the strategy whenever the feed handler waits and after every
/// [`IDLE_WORK_EVERY`](mdbus_feed_handlers::pipeline::IDLE_WORK_EVERY) messages, and after
/// the end of the session until the stage's inputs end; with `pause`, a turn that finds
/// nothing is followed by none until `pause` has passed (see [`WaitStrategy::Batching`]). Returns the
/// replay's report and the stage.
fn replay_with_strategy(
    replayer: Replayer,
    stage: StrategyStage,
    pause: Option<Duration>,
) -> Result<(ReplayReport, StrategyStage), StageError> {
    // The idle work must be `Send + 'static`: it shares the stage with this function, which
    // takes it back once the replay (and the work with it) is gone. Uncontended: one lock per
    // turn of up to `STRATEGY_TURN` events.
    use std::sync::{Arc, Mutex, PoisonError};
    let shared = Arc::new(Mutex::new(OnFeed { stage, error: None }));
    let work = {
        let shared = Arc::clone(&shared);
        // When the last turn found nothing.
        let mut quiet: Option<std::time::Instant> = None;
        Box::new(move || {
            if let (Some(p), Some(q)) = (pause, quiet)
                && q.elapsed() < p
            {
                return true;
            }
            let mut on = shared.lock().unwrap_or_else(PoisonError::into_inner);
            if on.error.is_some() || on.stage.finished() {
                return false;
            }
            match on.stage.poll(STRATEGY_TURN) {
                Ok(0) => quiet = pause.map(|_| std::time::Instant::now()),
                Ok(_) => quiet = None,
                Err(e) => {
                    on.error = Some(e);
                    return false;
                }
            }
            true
        })
    };
    let report = replayer.with_idle_work(work).run(&mut |_| {});
    // `run` consumed the replayer, and the idle work with it.
    let on = Arc::into_inner(shared)
        .ok_or_else(|| StageError::Internal("the replay kept its idle work".into()))?
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = on.error {
        return Err(e);
    }
    Ok((report?, on.stage))
}

/// Events the strategy stage reads per turn.
const STRATEGY_TURN: usize = 256;

/// Input records the book service handles per turn when it shares its thread with the
/// strategy: each turn's output (at most `MAX_OUTPUTS_PER_INPUT` envelopes of at most 512
/// bytes per record, 256 KiB) fits the output rings many times over, so the book service
/// never waits on a full output while the strategy, on the same thread, cannot drain it.
const SHARED_BOOK_TURN: usize = 128;

/// The book builder and the strategy on one thread, in turns: a turn of the book service,
/// then the strategy drains everything that turn published. Ends when the strategy's inputs
/// end (the book service forwards the feed's end of session) or, if the book service stops
/// first without forwarding one, when its outputs close.
fn run_book_and_strategy<const N: usize>(
    service: &mut BookService,
    input: &mut Subscriber,
    stage: &mut StrategyStage<N>,
    wait: WaitStrategy,
) -> Result<(), StageError> {
    let mut book_done = false;
    while !stage.finished() {
        let mut worked = false;
        if !book_done {
            match service.poll(input, SHARED_BOOK_TURN)? {
                Polled::Worked(_) => worked = true,
                Polled::Idle => {}
                Polled::Finished => {
                    book_done = true;
                    worked = true;
                }
            }
        }
        // Drain: the next book turn starts with empty outputs.
        loop {
            let n = stage.poll(STRATEGY_TURN)?;
            if n == 0 {
                break;
            }
            worked = true;
        }
        if !worked {
            if book_done {
                // Outputs that never got an end of session: nothing more will come.
                break;
            }
            service.heartbeat();
            let _ = input.wait(&wait, Some(Duration::from_millis(1)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_plans() {
        assert_eq!(plan_cpus(&[3]).unwrap(), [3, 3, 3]);
        assert!(share_a_cpu(&plan_cpus(&[3]).unwrap()));
        assert_eq!(plan_cpus(&[0, 1]).unwrap(), [0, 1, 1]);
        assert!(share_a_cpu(&plan_cpus(&[0, 1]).unwrap()));
        assert_eq!(plan_cpus(&[0, 1, 2]).unwrap(), [0, 1, 2]);
        assert!(!share_a_cpu(&plan_cpus(&[0, 1, 2]).unwrap()));
        assert!(plan_cpus(&[]).is_ok(), "the affinity mask is never empty");
    }

    /// Runs the bundled session through `threading`, as fast as it goes, unpinned.
    fn bundled(threading: Threading) -> PipelineRun {
        bundled_with(threading, true)
    }

    fn bundled_with(threading: Threading, latency: bool) -> PipelineRun {
        let input = Input::Source(Source::Bytes {
            name: BUNDLED_NAME.into(),
            bytes: BUNDLED_SESSION,
        });
        let book = BookConfig {
            max_orders: 1 << 16,
            max_instruments: 64,
            levels_per_side_hint: 64,
        };
        let pinning = Pinning::unpinned(&STAGES);
        let threading = (threading, FeedShare::DEFAULT);
        let outputs = StrategyOutputs {
            show: 1_000,
            latency,
        };
        run_pipeline(input, Speed::Max, book, &pinning, threading, outputs).unwrap()
    }

    /// A run that records no latency gives the strategy the same events, in the same order
    /// (the same signals), and an empty histogram; one that does records every BBO and trade.
    #[test]
    fn a_run_without_latency_sees_the_same_events_and_records_none() {
        let with = bundled_with(Threading::Shared, true);
        let without = bundled_with(Threading::Shared, false);
        assert_eq!(without.latency.len(), 0);
        assert!(with.latency.len() > 1_000, "{}", with.latency.len());
        // The same signals, but for their receive stamps (wall-clock times of each run).
        let key = |run: &PipelineRun| {
            run.first_signals
                .iter()
                .map(|s| (s.locate, s.exchange_ts_ns, format!("{:?}", s.stance)))
                .collect::<Vec<_>>()
        };
        assert!(key(&with).len() > 10);
        assert_eq!(key(&without), key(&with));
        assert_eq!(without.strategy.stats(), with.strategy.stats());
    }

    #[test]
    fn books_on_the_feed_thread_give_what_the_book_thread_gives() {
        let dedicated = bundled(Threading::Dedicated);
        let on_feed = bundled(Threading::BookOnFeed);
        assert_eq!(on_feed.feed.published, 10_000);
        // The same books, symbols and book service counters (every envelope published).
        assert_eq!(on_feed.summary, dedicated.summary);
        assert_eq!(on_feed.symbols, dedicated.symbols);
        assert_eq!(on_feed.summary.book(13).map(|e| e.prints), Some(1_089));
        let (a, b) = (on_feed.book, dedicated.book);
        assert_eq!(
            (
                a.messages,
                a.book_events,
                a.bbos_published,
                a.levels_published
            ),
            (
                b.messages,
                b.book_events,
                b.bbos_published,
                b.levels_published
            )
        );
        assert_eq!(
            (
                a.trades_published,
                a.crosses_forwarded,
                a.unpriced_prints,
                a.ended
            ),
            (
                b.trades_published,
                b.crosses_forwarded,
                b.unpriced_prints,
                b.ended
            )
        );
        assert!(a.ended && a.bbos_published > 0 && a.trades_published == 1_089);
        // No thread read the feed stream back for the books.
        assert_eq!(a.idle_polls, 0);
        // The strategy read the same events and gave the same signals, in the same order.
        assert_eq!(on_feed.strategy.stats(), dedicated.strategy.stats());
        // (Each carries its receive stamp, which is the run's own.)
        let unstamped = |r: &PipelineRun| -> Vec<signals::Signal> {
            let unstamp = |s: &signals::Signal| signals::Signal {
                recv_ts_ns: 0,
                ..*s
            };
            r.first_signals.iter().map(unstamp).collect()
        };
        assert_eq!(unstamped(&on_feed), unstamped(&dedicated));
        assert!(!on_feed.first_signals.is_empty());
        let st = on_feed.strategy.stats();
        assert_eq!(st.bbo_updates, a.bbos_published);
        assert_eq!(on_feed.latency.len(), a.bbos_published + a.trades_published);
    }

    /// A synthetic session of 40 instruments, so that both shares of split books hold some.
    fn synthetic(threading: Threading, feed_share: u32) -> PipelineRun {
        use crate::bench::synth::{SynthParams, generate};
        let params = SynthParams {
            messages: 60_000,
            instruments: 40,
            seed: 7,
        };
        let mut bytes = Vec::new();
        generate(&mut bytes, &params).unwrap();
        let bytes: &'static [u8] = Vec::leak(bytes);
        let input = Input::Source(Source::Bytes {
            name: "synthetic".into(),
            bytes,
        });
        let book = BookConfig {
            max_orders: 1 << 16,
            max_instruments: 64,
            levels_per_side_hint: 64,
        };
        let pinning = Pinning::unpinned(&STAGES);
        let threading = (threading, FeedShare::new(feed_share).unwrap());
        // Every signal kept (a few thousand).
        let outputs = StrategyOutputs {
            show: 100_000,
            latency: true,
        };
        run_pipeline(input, Speed::Max, book, &pinning, threading, outputs).unwrap()
    }

    #[test]
    fn split_books_give_what_one_book_thread_gives() {
        let one = synthetic(Threading::Dedicated, 40);
        let signals = one.strategy.stats().signals;
        assert!(signals > 100 && signals < 100_000, "{signals}");
        for feed_share in [24, 13] {
            let split = synthetic(Threading::SplitBooks, feed_share);
            assert_eq!(split.feed.published, one.feed.published);
            // The same books, symbols, counts and counters, joined from the two shares.
            assert_eq!(split.summary, one.summary);
            assert_eq!(split.symbols, one.symbols);
            assert_eq!(split.summary.books.len(), 40);
            let (a, b) = (split.book, one.book);
            assert_eq!(
                (a.received, a.messages, a.book_events, a.gaps, a.ended),
                (b.received, b.messages, b.book_events, b.gaps, b.ended)
            );
            assert_eq!(
                (a.bbos_published, a.levels_published, a.trades_published),
                (b.bbos_published, b.levels_published, b.trades_published)
            );
            assert!(a.bbos_published > 0 && a.trades_published > 0 && a.ended);
            // Each share skipped the other's instruments (locates 1 to 40; the feed
            // handler's share holds those below `feed_share`, and 0).
            assert!(a.other_share > 0 && b.other_share == 0);
            // The strategy merged four streams: the same events, and per instrument the
            // same signals in the same order (two threads publish: across the shares the
            // merge keeps source order only as far as both have published).
            assert_eq!(split.strategy.stats(), one.strategy.stats());
            let by_instrument = |r: &PipelineRun| {
                let mut m = std::collections::BTreeMap::<u16, Vec<signals::Signal>>::new();
                for s in &r.first_signals {
                    m.entry(s.locate).or_default().push(signals::Signal {
                        recv_ts_ns: 0,
                        ..*s
                    });
                }
                m
            };
            assert_eq!(split.first_signals.len() as u64, signals);
            let split_signals = by_instrument(&split);
            assert!(split_signals.keys().any(|l| u32::from(*l) < feed_share));
            assert!(split_signals.keys().any(|l| u32::from(*l) >= feed_share));
            assert_eq!(split_signals, by_instrument(&one));
            assert_eq!(split.latency.len(), a.bbos_published + a.trades_published);
        }
    }

    #[test]
    fn a_feed_share_leaves_each_thread_some_books() {
        for n in [0, 64, 100] {
            let e = FeedShare::new(n).unwrap_err().to_string();
            assert!(e.contains("--feed-share") && e.contains("1 to 63"), "{e}");
        }
        assert_eq!(FeedShare::new(63).unwrap().get(), 63);
    }

    #[test]
    fn books_on_the_feed_thread_refuse_an_iex_capture() {
        let iex = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../codecs/testdata/iex/deepplus-all-message-types.pcap"
        );
        let pinning = Pinning::unpinned(&STAGES);
        let book = BookConfig {
            max_orders: 1024,
            max_instruments: 16,
            levels_per_side_hint: 16,
        };
        for (threading, name) in [
            (Threading::BookOnFeed, "book-on-feed"),
            (Threading::SplitBooks, "split-books"),
        ] {
            let e = run_pipeline(
                Input::Source(Source::Path(iex.into())),
                Speed::Max,
                book,
                &pinning,
                (threading, FeedShare::DEFAULT),
                StrategyOutputs {
                    show: 0,
                    latency: true,
                },
            )
            .unwrap_err();
            let m = e.to_string();
            assert!(
                m.contains(name) && m.contains("Nasdaq ITCH messages only"),
                "{m}"
            );
            assert!(m.contains("an IEX capture"), "{m}");
        }
    }

    #[test]
    fn the_bundled_session_is_the_test_file() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../codecs/testdata/itch/aapl-2020-01-30-10k.itch"
        );
        assert_eq!(std::fs::read(path).unwrap(), BUNDLED_SESSION);
    }
}
