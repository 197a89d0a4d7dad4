//! `mdbus demo`: a real Nasdaq session through the whole pipeline, in one command.
//!
//! ```text
//!  bundled AAPL ITCH file --> feed handler --shm "demo.itch"--> book builder --shm "demo.itch.book",
//!  (or --file)                (replay, paced)                   (BookService)  "demo.itch.trades"--> strategy
//! ```
//!
//! Three threads, each pinned to a cpu (with two cpus the book builder and the strategy share
//! one, and every wait spins briefly and then yields the cpu), connected by
//! lossless shared-memory streams under a temporary bus root that is removed at the end. The
//! strategy is the example strategy's logic (`bus/examples/strategy/signals.rs`). Each
//! message is stamped with the TSC when the feed handler decodes it; the strategy stamps its
//! callback with the same clock, and the difference goes into an HdrHistogram: the
//! tick-to-strategy latency, through two rings and the book builder.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use hdrhistogram::Histogram;
use mdbus_bus::merge::SourceMerge;
use mdbus_bus::{
    Bus, Mode, ReceiveError, StreamConfig, SubscribeOptions, Subscriber, Trust, WaitStrategy,
};
use mdbus_feed_handlers::book::{BookConfig, BookSummary, BookSummaryEntry};
use mdbus_feed_handlers::bookstream::{
    BookService, BookServiceConfig, BookServiceStats, Polled, book_stream_name, output_ring,
    trades_stream_name,
};
use mdbus_feed_handlers::replay::{
    ReplayOptions, ReplayReport, Replayer, Source, Speed, StampClock,
};
use serde::Serialize;

use crate::pinning::{LayoutArg, Pinning, ThreadRole};

#[allow(dead_code)]
#[path = "../../bus/examples/strategy/signals.rs"]
mod signals;

/// The bundled session: the first 10,000 messages of AAPL (stock locate 13) on Nasdaq
/// TotalView-ITCH 5.0, 2020-01-30 (see `codecs/testdata/README.md`).
pub const BUNDLED_SESSION: &[u8] =
    include_bytes!("../../codecs/testdata/itch/aapl-2020-01-30-10k.itch");

const BUNDLED_NAME: &str = "AAPL, Nasdaq TotalView-ITCH 5.0, 2020-01-30, first 10,000 messages";

/// The feed stream's name; the book service adds `.book` and `.trades`.
const FEED: &str = "demo.itch";

/// The reference reading of the bundled session: (locate, bid, bid size, ask, ask size,
/// resting orders, executed shares, prints).
const REFERENCE: (u16, u32, u64, u32, u64, u64, u64, u64) =
    (13, 3_201_400, 25, 3_203_000, 100, 215, 81_556, 1_089);

/// `mdbus demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Messages per second the feed handler releases (0: as fast as it can). A fixed rate
    /// spreads the 10,000 messages out, so the latency distribution is not that of a burst.
    #[arg(long, default_value_t = 1_000_000)]
    pub rate: u64,
    /// Replay this file (ITCH, pcap or pcapng) instead of the bundled AAPL session.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Cpus for the feed handler, book builder and strategy, comma separated; with two, the
    /// strategy runs on the feed handler's thread (or, with `--threading dedicated` or
    /// `shared`, shares the book builder's cpu); with `--threading strategy-on-feed` it takes
    /// the feed handler's whatever is given (wins over --layout) [default: with a layout, the
    /// first core of its `feed_handler`, `book_builder` and `strategy` roles; else the first
    /// cpus this process may use].
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// The core layout (`--layout FILE` or `$MDBUS_LAYOUT`).
    #[command(flatten)]
    pub layout: LayoutArg,
    /// `dedicated`: the book builder and the strategy each on their own thread; `shared`: both
    /// on one thread, in turns, on the book builder's cpu; `strategy-on-feed`: the strategy on
    /// the feed handler's thread, in its waits, and the book builder alone on its cpu (the
    /// two-thread arrangements are for two-cpu hosts; strategy-on-feed carries the most)
    /// [default: dedicated when the three stages have three cpus, else strategy-on-feed].
    #[arg(long, value_enum)]
    pub threading: Option<Threading>,
    /// Signal lines shown.
    #[arg(long, default_value_t = 6)]
    pub show_signals: usize,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
}

/// What can go wrong in the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
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

/// Where each stage ran.
#[derive(Clone, Debug, Serialize)]
pub struct Placement {
    /// Cpu of the feed handler thread.
    pub feed_cpu: usize,
    /// Cpu of the book builder thread.
    pub book_cpu: usize,
    /// Cpu of the strategy thread.
    pub strategy_cpu: usize,
    /// Whether every thread was pinned.
    pub pinned: bool,
    /// Whether the book builder and the strategy ran on their own threads or on one.
    pub threading: Threading,
    /// Whether `threading` was chosen from the cpus (no `--threading` given).
    pub threading_chosen: bool,
    /// Whether two threads shared a cpu (waits then spin, then yield).
    pub shared: bool,
    /// The core layout the stages took their cpus and settings from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<crate::pinning::LayoutUse>,
    /// What a stage could not apply from its layout role (SCHED_FIFO refused, memlock limit).
    pub warnings: Vec<String>,
}

/// The tick-to-strategy latency distribution, ns.
#[derive(Clone, Debug, Serialize)]
pub struct LatencySummary {
    /// Events measured (BBO updates and trades reaching the strategy).
    pub samples: u64,
    /// Smallest.
    pub min_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: f64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> LatencySummary {
        let q = |x: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(x)
            }
        };
        LatencySummary {
            samples: h.len(),
            min_ns: if h.is_empty() { 0 } else { h.min() },
            p50_ns: q(0.5),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            max_ns: if h.is_empty() { 0 } else { h.max() },
            mean_ns: if h.is_empty() { 0.0 } else { h.mean() },
        }
    }
}

/// One signal the strategy emitted.
#[derive(Clone, Debug, Serialize)]
pub struct SignalLine {
    /// Exchange time, `HH:MM:SS.mmm`.
    pub time: String,
    /// Symbol.
    pub symbol: String,
    /// `LONG`, `SHORT` or `FLAT`.
    pub stance: &'static str,
    /// Microprice.
    pub microprice: f64,
    /// Mid.
    pub mid: f64,
    /// Trade flow, signed shares.
    pub flow: f64,
}

/// What the strategy thread saw.
#[derive(Clone, Debug, Serialize)]
pub struct StrategySummary {
    /// BBO updates read.
    pub bbo_updates: u64,
    /// Trades read.
    pub trades: u64,
    /// Signals emitted.
    pub signals: u64,
    /// Unrecoverable gaps met.
    pub gaps: u64,
    /// The first signals.
    pub first_signals: Vec<SignalLine>,
    /// Final microprice of the instrument shown, if two-sided.
    pub microprice: Option<f64>,
    /// Final trade flow of the instrument shown.
    pub flow: f64,
}

/// The whole demo's result (`--json`).
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// What was replayed.
    pub source: String,
    /// Target rate, msgs/s (0: as fast as possible).
    pub rate: u64,
    /// Where the stages ran.
    pub placement: Placement,
    /// The feed handler's replay report.
    pub feed: ReplayReport,
    /// The book builder's counters.
    pub book: BookServiceStats,
    /// The strategy's view.
    pub strategy: StrategySummary,
    /// The most active instrument's final book: locate, symbol and its summary entry.
    pub final_book: Option<(u16, String, BookSummaryEntry)>,
    /// Bundled session only: whether the final book equals the reference reading.
    pub matches_reference: Option<bool>,
    /// Tick-to-strategy latency.
    pub latency: LatencySummary,
    /// The floor measured in the same run: a raw cache-line ping-pong (one-way = RTT/2)
    /// between the feed handler's cpu and the strategy's, the least any hand-off between
    /// those two cpus can cost. `None` when both stages run on one cpu.
    pub floor: Option<LatencySummary>,
    /// The clock that stamped the messages (`tsc` or `monotonic`).
    pub clock: String,
}

/// Runs the demo and writes its report to `out`.
pub fn run(args: &DemoArgs, out: &mut dyn Write) -> Result<(), DemoError> {
    let report = execute(args)?;
    if args.json {
        let text = serde_json::to_string(&report)
            .map_err(|e| DemoError::Internal(format!("cannot serialise: {e}")))?;
        writeln!(out, "{text}")?;
    } else {
        out.write_all(render(&report, args.show_signals).as_bytes())?;
    }
    Ok(())
}

/// Cpu plan for the requested cpus (the first this process may use when none): feed, book,
/// strategy. With two cpus the feed handler keeps one and the
/// two consumers share the other: the book builder runs until its input is drained or its
/// outputs are full, then the strategy drains them, so the pair switches rarely (sharing the
/// feed handler's cpu instead makes the paced feed and the strategy trade the cpu every few
/// messages).
pub(crate) fn plan_cpus(requested: &[usize]) -> Result<[usize; 3], DemoError> {
    let cpus = if requested.is_empty() {
        let avail = mdbus_tuning::current_affinity()
            .map_err(|e| DemoError::Internal(format!("cannot read the cpu affinity: {e}")))?;
        avail.into_iter().take(3).collect::<Vec<_>>()
    } else {
        requested.to_vec()
    };
    match cpus.as_slice() {
        [] => Err(DemoError::BadArg("no cpu to run on".into())),
        [a] => Ok([*a; 3]),
        [a, b] => Ok([*a, *b, *b]),
        [a, b, c, ..] => Ok([*a, *b, *c]),
    }
}

/// The pipeline's three threads and the layout roles they take their cpus from.
pub(crate) const STAGES: [ThreadRole; 3] = [
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
pub(crate) fn stage_pinning(layout: &LayoutArg, cpus: &[usize]) -> Result<Pinning, DemoError> {
    let bad = |e: crate::pinning::PinningError| DemoError::BadArg(e.to_string());
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
pub(crate) fn temp_root() -> std::io::Result<tempfile::TempDir> {
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

/// Runs the three stages and gathers what they report.
pub fn execute(args: &DemoArgs) -> Result<DemoReport, DemoError> {
    let pinning = stage_pinning(&args.layout, &args.cpus)?;
    let threading = args
        .threading
        .unwrap_or_else(|| default_threading(&pinning));
    let shared = share_a_cpu(&thread_cpus(&pinning, threading));
    let (feed_cpu, book_cpu) = (pinning.cpu(0), pinning.cpu(1));
    let strategy_cpu = pinning.cpu(threading.strategy_stage());
    let input = match &args.file {
        Some(p) => Input::Source(Source::Path(p.clone())),
        None => Input::Source(Source::Bytes {
            name: BUNDLED_NAME.into(),
            bytes: BUNDLED_SESSION,
        }),
    };
    let speed = if args.rate == 0 {
        Speed::Max
    } else {
        Speed::Rate(args.rate)
    };
    let book = BookConfig {
        max_orders: 1 << 20,
        max_instruments: 12_000,
        levels_per_side_hint: 64,
    };
    let run = run_pipeline(input, speed, book, &pinning, threading, args.show_signals)?;
    let PipelineRun {
        feed,
        book: book_stats,
        summary,
        symbols,
        strategy: strategy_state,
        first_signals,
        latency: histogram,
        pinned,
        ..
    } = run;
    let final_book = most_active(&summary).map(|(locate, entry)| {
        let symbol = symbols
            .iter()
            .find(|(l, _)| *l == locate)
            .map_or_else(String::new, |(_, s)| s.clone());
        (locate, symbol, entry)
    });
    let strategy = summarize(
        &strategy_state,
        &first_signals,
        final_book.as_ref().map(|b| b.0),
    );
    let matches_reference = args.file.is_none().then(|| {
        final_book.as_ref().is_some_and(|(l, _, e)| {
            let r = REFERENCE;
            (*l, e.best_bid, e.bid_size, e.best_ask, e.ask_size)
                == (r.0, Some(r.1), r.2, Some(r.3), r.4)
                && (e.resting_orders, e.executed_shares, e.prints) == (r.5, r.6, r.7)
        })
    });
    Ok(DemoReport {
        source: match &args.file {
            Some(p) => p.display().to_string(),
            None => BUNDLED_NAME.into(),
        },
        rate: args.rate,
        placement: Placement {
            feed_cpu,
            book_cpu,
            strategy_cpu,
            pinned,
            threading,
            threading_chosen: args.threading.is_none(),
            shared,
            layout: pinning.layout_use(),
            warnings: pinning.warnings(),
        },
        feed,
        book: book_stats,
        strategy,
        final_book,
        matches_reference,
        latency: LatencySummary::of(&histogram),
        floor: measure_floor(&pinning, threading, pinned)?,
        clock: if quanta_is_tsc() { "tsc" } else { "monotonic" }.into(),
    })
}

/// The ring of the pipeline's feed stream: 16 MiB, lossless, prefaulted (no page fault on
/// the hot path).
pub(crate) fn feed_ring() -> StreamConfig {
    StreamConfig {
        capacity: 16 << 20,
        max_msg_len: 512,
        mode: Mode::Lossless,
        prefault: true,
        ..StreamConfig::default()
    }
}

/// Where the feed handler reads from.
pub(crate) enum Input {
    /// A file or bundled bytes.
    Source(Source),
    /// Any byte source (an ITCH file, pcap or pcapng), with its name.
    Reader(String, Box<dyn std::io::Read + Send>),
}

/// What one run of the three-stage pipeline produced.
pub(crate) struct PipelineRun {
    /// The feed handler's report.
    pub feed: ReplayReport,
    /// The book service's counters.
    pub book: BookServiceStats,
    /// The books at the end.
    pub summary: BookSummary,
    /// Symbols of the locates in `summary`.
    pub symbols: Vec<(u16, String)>,
    /// The strategy's final state.
    pub strategy: signals::Strategy,
    /// Its first signals.
    pub first_signals: Vec<signals::Signal>,
    /// Tick-to-strategy latency of every BBO update and trade, ns.
    pub latency: Histogram<u64>,
    /// From the feed handler's first read to the strategy's last callback, ns.
    pub elapsed_ns: u64,
    /// Whether every thread was pinned.
    pub pinned: bool,
}

/// Runs feed handler -> book builder -> strategy, each on its thread placed by `pinning`
/// ([`STAGES`]; `shared`: two of them share a cpu), over lossless rings under a temporary bus
/// root.
pub(crate) fn run_pipeline(
    input: Input,
    speed: Speed,
    book: BookConfig,
    pinning: &Pinning,
    threading: Threading,
    show: usize,
) -> Result<PipelineRun, DemoError> {
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
    };
    let mut service = BookService::new(&bus, FEED, &book_config)?;
    // SAFETY: every stream of this bus root is written by this process's feed pipeline and
    // book service, which publish nothing but envelopes built by `schema::Encoder`.
    let trust = unsafe { Trust::publisher() };
    let options = SubscribeOptions {
        trust,
        ..SubscribeOptions::default()
    };
    // Every subscriber joins before anything is published (lossless slots).
    let mut book_input = bus.subscriber(FEED, &options)?;
    let book_sub = bus.subscriber(&book_stream_name(FEED), &options)?;
    let trades_sub = bus.subscriber(&trades_stream_name(FEED), &options)?;

    // On a shared cpu, spinning only delays the thread that would produce the data.
    let wait = if share_a_cpu(&cpus) {
        WaitStrategy::SpinThenYield { spins: 10 }
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
            DemoError::Internal(format!("cannot start a thread: {e}"))
        };
        let threads = threading.threads();
        let book_results = |service: &BookService, stats: BookServiceStats, pinned: bool| {
            let summary = service.summary();
            let symbols: Vec<(u16, String)> = summary
                .books
                .iter()
                .map(|(l, _)| (*l, symbol_text(service.symbol(*l))))
                .collect();
            (stats, summary, symbols, pinned)
        };
        // The strategy's inputs, for whichever thread runs it.
        let mut strategy_inputs = Some((book_sub, trades_sub));
        let spawn_book = |service: BookService, mut book_input: Subscriber| {
            let stop = &stop;
            std::thread::Builder::new()
                .name("mdbus-book".into())
                .spawn_scoped(s, move || {
                    let mut service = service;
                    let pinned = pinning.enter(1);
                    ready.arrive_and_wait(threads);
                    let stats = service.run(&mut book_input, wait, stop)?;
                    Ok::<_, DemoError>(book_results(&service, stats, pinned))
                })
                .map_err(spawn_err)
        };
        let consumers = match threading {
            Threading::Dedicated => {
                let (book_sub, trades_sub) = strategy_inputs.take().expect("inputs");
                let strategy_clock = clock.clone();
                let strategy = std::thread::Builder::new()
                    .name("mdbus-strategy".into())
                    .spawn_scoped(s, move || {
                        let pinned = pinning.enter(2);
                        // Made before the gate: its tables are allocated before the feed
                        // starts, not while the first messages wait.
                        let stage =
                            StrategyStage::new(book_sub, trades_sub, strategy_clock.clone(), show);
                        ready.arrive_and_wait(threads);
                        let r = stage.and_then(|stage| run_strategy(stage, wait));
                        r.map(|r| (r, strategy_clock.raw(), pinned))
                    })
                    .map_err(spawn_err)?;
                Either::Two(spawn_book(service, book_input)?, strategy)
            }
            Threading::Shared => {
                let (book_sub, trades_sub) = strategy_inputs.take().expect("inputs");
                let strategy_clock = clock.clone();
                let both = std::thread::Builder::new()
                    .name("mdbus-book+strat".into())
                    .spawn_scoped(s, move || {
                        let pinned = pinning.enter(1);
                        let stage =
                            StrategyStage::new(book_sub, trades_sub, strategy_clock.clone(), show);
                        ready.arrive_and_wait(threads);
                        let mut stage = stage?;
                        run_book_and_strategy(&mut service, &mut book_input, &mut stage, wait)?;
                        let end = strategy_clock.raw();
                        let book = book_results(&service, service.stats(), pinned);
                        Ok::<_, DemoError>((book, (stage.into_result(), end, pinned)))
                    })
                    .map_err(spawn_err)?;
                Either::One(both)
            }
            Threading::StrategyOnFeed => Either::Book(spawn_book(service, book_input)?),
        };
        let feed_clock = clock.clone();
        let feed_name = if strategy_inputs.is_some() {
            "mdbus-feed+strat"
        } else {
            "mdbus-feed"
        };
        let feed = std::thread::Builder::new()
            .name(feed_name.into())
            .spawn_scoped(s, move || {
                let pinned = pinning.enter(0);
                let Some((book_sub, trades_sub)) = strategy_inputs else {
                    ready.arrive_and_wait(threads);
                    let start = feed_clock.raw();
                    let report = replayer.run(&mut |_| {})?;
                    return Ok((report, start, pinned, None));
                };
                // The strategy on this thread, in the feed handler's waits.
                let stage = StrategyStage::new(book_sub, trades_sub, feed_clock.clone(), show);
                ready.arrive_and_wait(threads);
                let start = feed_clock.raw();
                let (report, stage) = replay_with_strategy(replayer, stage?)?;
                // The replay ran the stage until its inputs ended: this returns at once.
                let result = run_strategy(stage, wait)?;
                let strategy = (result, feed_clock.raw(), pinned);
                Ok::<_, DemoError>((report, start, pinned, Some(strategy)))
            })
            .map_err(spawn_err)?;
        let join = |what: &str| DemoError::Internal(format!("the {what} thread panicked"));
        let feed = feed.join().map_err(|_| join("feed handler"));
        let consumers = match consumers {
            Either::Two(book, strategy) => {
                let book = book.join().map_err(|_| join("book builder"));
                let strategy = strategy.join().map_err(|_| join("strategy"));
                book.and_then(|b| Ok((b?, Some(strategy??))))
            }
            Either::One(both) => both
                .join()
                .map_err(|_| join("book builder and strategy"))
                .and_then(|r| r.map(|(b, s)| (b, Some(s)))),
            Either::Book(book) => book
                .join()
                .map_err(|_| join("book builder"))
                .and_then(|r| r.map(|b| (b, None))),
        };
        Ok::<_, DemoError>((feed, consumers))
    })?;
    let (feed, start, feed_pinned, on_feed) = feed??;
    let ((book_stats, summary, symbols, book_pinned), strategy) = consumers?;
    let (strategy, end, strategy_pinned) = strategy
        .or(on_feed)
        .ok_or_else(|| DemoError::Internal("no thread ran the strategy".into()))?;
    let (strategy, first_signals, latency) = strategy;
    drop(bus);
    root.close()?;
    Ok(PipelineRun {
        feed,
        book: book_stats,
        summary,
        symbols,
        strategy,
        first_signals,
        latency,
        elapsed_ns: clock.delta_ns(start, end),
        pinned: feed_pinned && book_pinned && strategy_pinned,
    })
}

/// The arrangement when none is asked for: each stage on its own thread when the three have
/// three cpus; with fewer, the strategy on the feed handler's thread, so that no two
/// busy-polling threads hand one cpu back and forth through the scheduler (that costs
/// milliseconds in the latency tail).
fn default_threading(pinning: &Pinning) -> Threading {
    if share_a_cpu(&thread_cpus(pinning, Threading::Dedicated)) {
        Threading::StrategyOnFeed
    } else {
        Threading::Dedicated
    }
}

/// The cpu of each thread `threading` runs: feed handler, book builder, strategy (two
/// threads when the strategy shares one).
pub(crate) fn thread_cpus(pinning: &Pinning, threading: Threading) -> Vec<usize> {
    (0..threading.threads()).map(|i| pinning.cpu(i)).collect()
}

/// Whether two of these threads' cpus are one.
pub(crate) fn share_a_cpu(cpus: &[usize]) -> bool {
    cpus.iter()
        .enumerate()
        .any(|(i, a)| cpus[i + 1..].contains(a))
}

/// The consumers' threads: the book builder's and the strategy's, one running both, or the
/// book builder's alone (the strategy runs on the feed handler's).
enum Either<B, S, O> {
    Two(B, S),
    One(O),
    Book(B),
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
}

impl Threading {
    /// The stage of [`STAGES`] whose cpu (and layout role) the strategy's thread takes: its
    /// own, or that of the stage whose thread it shares.
    pub(crate) fn strategy_stage(self) -> usize {
        match self {
            Threading::Dedicated => 2,
            Threading::Shared => 1,
            Threading::StrategyOnFeed => 0,
        }
    }

    /// The stage whose cpu the floor is measured against, from the feed handler's: the
    /// strategy's, or the book builder's when the strategy runs on the feed handler's thread.
    pub(crate) fn floor_stage(self) -> usize {
        match self {
            Threading::StrategyOnFeed => 1,
            t => t.strategy_stage(),
        }
    }

    /// Threads run: one per stage of [`STAGES`] up to the last one with a thread of its own.
    pub(crate) fn threads(self) -> usize {
        match self {
            Threading::Dedicated => 3,
            Threading::Shared | Threading::StrategyOnFeed => 2,
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

/// Samples of the floor: enough for a stable p99.9, a fraction of a second on any host.
const FLOOR_SAMPLES: u64 = 200_000;

/// The cache-line ping-pong floor between the feed handler's cpu and the strategy's (with
/// `strategy-on-feed`, the book builder's: a message goes there and back), with the bench
/// harness's own floor (`mdbus bench ring` reports the same system), its two threads placed
/// like those two stages. `None` when the two stages share a cpu: a hand-off there is a
/// context switch, not a cache-line transfer.
fn measure_floor(
    pinning: &Pinning,
    threading: Threading,
    pin: bool,
) -> Result<Option<LatencySummary>, DemoError> {
    let strategy_stage = threading.floor_stage();
    let (feed_cpu, strategy_cpu) = (pinning.cpu(0), pinning.cpu(strategy_stage));
    use crate::bench::clock::BenchClock;
    use crate::bench::engine::{Ctx, new_histogram, ping_pong};
    use crate::bench::transport::{FloorWord, floor};
    if feed_cpu == strategy_cpu {
        return Ok(None);
    }
    let internal = |e: crate::bench::BenchError| DemoError::Internal(format!("floor: {e}"));
    let clock = BenchClock::new(quanta_is_tsc());
    let ctx = Ctx {
        clock: &clock,
        cores: [feed_cpu, strategy_cpu],
        pin,
        roles: pinning
            .has_layout()
            .then_some((pinning, [0, strategy_stage])),
        yield_spin: false,
        stall: Duration::from_secs(10),
    };
    let mut hist = new_histogram().map_err(internal)?;
    ping_pong(
        &ctx,
        "floor",
        floor(FloorWord::Seq, false),
        floor(FloorWord::Seq, false),
        FLOOR_SAMPLES / 10,
        FLOOR_SAMPLES,
        &mut hist,
    )
    .map_err(internal)?;
    Ok(Some(LatencySummary::of(&hist)))
}

fn quanta_is_tsc() -> bool {
    crate::bench::host::tsc_invariant()
}

fn symbol_text(s: Option<[u8; 8]>) -> String {
    s.map(|s| String::from_utf8_lossy(&s).trim_end().to_owned())
        .unwrap_or_default()
}

/// The instrument with the most prints (then the most resting orders).
fn most_active(summary: &BookSummary) -> Option<(u16, BookSummaryEntry)> {
    summary
        .books
        .iter()
        .max_by_key(|(l, e)| (e.prints, e.resting_orders, std::cmp::Reverse(*l)))
        .map(|(l, e)| (*l, *e))
}

/// What the strategy thread hands back: its state, the first signals, the latency histogram.
type StrategyResult = (signals::Strategy, Vec<signals::Signal>, Histogram<u64>);

/// The strategy's summary, with the final view of `locate`.
fn summarize(
    strategy: &signals::Strategy,
    first: &[signals::Signal],
    locate: Option<u16>,
) -> StrategySummary {
    let st = strategy.stats();
    StrategySummary {
        bbo_updates: st.bbo_updates,
        trades: st.trades,
        signals: st.signals,
        gaps: st.gaps,
        first_signals: first
            .iter()
            .map(|s| SignalLine {
                time: signals::time_of_day(s.exchange_ts_ns).to_string(),
                symbol: strategy.symbol(s.locate).to_owned(),
                stance: s.stance.as_str(),
                microprice: s.microprice,
                mid: s.mid,
                flow: s.flow,
            })
            .collect(),
        microprice: locate.and_then(|l| strategy.quote(l).microprice()),
        flow: locate.map_or(0.0, |l| strategy.flow(l)),
    }
}

/// The strategy stage: reads BBO and trade events zero-copy, in source order, runs the example
/// strategy's logic, and records each event's tick-to-strategy latency.
struct StrategyStage {
    strategy: signals::Strategy,
    hist: Histogram<u64>,
    first: Vec<signals::Signal>,
    show: usize,
    clock: StampClock,
    /// Book (0) and trades (1), merged in source order: a trade after the quote change its
    /// execution caused, before the next message's quote.
    input: SourceMerge<2>,
}

impl StrategyStage {
    fn new(
        book: Subscriber,
        trades: Subscriber,
        clock: StampClock,
        show: usize,
    ) -> Result<Self, DemoError> {
        Ok(StrategyStage {
            strategy: signals::Strategy::new(signals::Params::default()),
            hist: Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
                .map_err(|e| DemoError::Internal(format!("histogram: {e}")))?,
            first: Vec::with_capacity(show),
            show,
            clock,
            input: SourceMerge::new([book, trades]),
        })
    }

    /// Both inputs ended.
    fn finished(&self) -> bool {
        self.input.all_ended()
    }

    /// One turn: up to `max` events. Returns how many records were consumed.
    fn poll(&mut self, max: usize) -> Result<usize, DemoError> {
        let mut n = 0;
        while n < max && !self.finished() {
            let (strategy, hist, first) = (&mut self.strategy, &mut self.hist, &mut self.first);
            let (clock, show) = (&self.clock, self.show);
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
                    let signal = if k == 0 {
                        strategy.on_book_event(&env)
                    } else {
                        strategy.on_trade_event(&env)
                    };
                    if matches!(
                        kind,
                        mdbus_bus::schema::Event::Bbo | mdbus_bus::schema::Event::Trade
                    ) {
                        let now = clock.unix_ns_of(clock.raw());
                        let latency = now.saturating_sub(env.header().recv_ts_ns());
                        hist.saturating_record(latency.max(1));
                    }
                    if let Some(s) = signal
                        && first.len() < show
                    {
                        first.push(s);
                    }
                })
                .map_err(|e| DemoError::Strategy {
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
        (self.strategy, self.first, self.hist)
    }
}

/// The strategy thread: the strategy stage alone, waiting with `wait` when both inputs are
/// empty.
fn run_strategy(mut stage: StrategyStage, wait: WaitStrategy) -> Result<StrategyResult, DemoError> {
    while !stage.finished() {
        if stage.poll(STRATEGY_TURN)? == 0 && !stage.finished() {
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
    error: Option<DemoError>,
}

/// Runs `replayer` with the strategy stage as its idle work ([`Threading::StrategyOnFeed`]):
/// a turn of the strategy whenever the feed handler waits and after every
/// [`IDLE_WORK_EVERY`](mdbus_feed_handlers::pipeline::IDLE_WORK_EVERY) messages, and after
/// the end of the session until the stage's inputs end. Returns the replay's report and the
/// stage.
fn replay_with_strategy(
    replayer: Replayer,
    stage: StrategyStage,
) -> Result<(ReplayReport, StrategyStage), DemoError> {
    // The idle work must be `Send + 'static`: it shares the stage with this function, which
    // takes it back once the replay (and the work with it) is gone. Uncontended: one lock per
    // turn of up to `STRATEGY_TURN` events.
    use std::sync::{Arc, Mutex, PoisonError};
    let shared = Arc::new(Mutex::new(OnFeed { stage, error: None }));
    let work = {
        let shared = Arc::clone(&shared);
        Box::new(move || {
            let mut on = shared.lock().unwrap_or_else(PoisonError::into_inner);
            if on.error.is_some() || on.stage.finished() {
                return false;
            }
            if let Err(e) = on.stage.poll(STRATEGY_TURN) {
                on.error = Some(e);
                return false;
            }
            true
        })
    };
    let report = replayer.with_idle_work(work).run(&mut |_| {});
    // `run` consumed the replayer, and the idle work with it.
    let on = Arc::into_inner(shared)
        .ok_or_else(|| DemoError::Internal("the replay kept its idle work".into()))?
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
fn run_book_and_strategy(
    service: &mut BookService,
    input: &mut Subscriber,
    stage: &mut StrategyStage,
    wait: WaitStrategy,
) -> Result<(), DemoError> {
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

/// Groups digits by thousands: 81556 -> "81,556".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in ns as `850 ns`, `12.3 us` or `4.56 ms`.
fn duration(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} us", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

fn price(p: Option<u32>) -> String {
    p.map_or_else(
        || "-".into(),
        |p| format!("{}.{:04}", p / 10_000, p % 10_000),
    )
}

/// The text report: one screen.
pub fn render(r: &DemoReport, show: usize) -> String {
    let mut s = String::new();
    let p = &r.placement;
    let f = &r.feed;
    let b = &r.book;
    let st = &r.strategy;
    let pace = if r.rate == 0 {
        "as fast as possible".to_owned()
    } else {
        format!("paced at {} msgs/s", thousands(r.rate))
    };
    let _ = writeln!(s, "mdbus demo: {}", r.source);
    let _ = writeln!(
        s,
        "  feed handler [cpu {}] --shm {FEED}--> book builder [cpu {}] --shm {FEED}.book/.trades--> strategy [cpu {}]",
        p.feed_cpu, p.book_cpu, p.strategy_cpu
    );
    if let Some(l) = &p.layout {
        let _ = writeln!(s, "  (cpus and thread settings from layout {})", l.file);
    }
    for w in &p.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    if p.threading == Threading::Shared {
        let _ = writeln!(
            s,
            "  (book builder and strategy share one thread, in turns: --threading shared)"
        );
    } else if p.threading == Threading::StrategyOnFeed && p.threading_chosen {
        let _ = writeln!(
            s,
            "  (fewer than three cpus: the strategy runs on the feed handler's thread, in its waits; `--threading dedicated` gives it a thread of its own)"
        );
    } else if p.threading == Threading::StrategyOnFeed {
        let _ = writeln!(
            s,
            "  (the strategy runs on the feed handler's thread, in its waits: --threading strategy-on-feed)"
        );
    } else if p.book_cpu == p.strategy_cpu {
        let _ = writeln!(
            s,
            "  (book builder and strategy threads share cpu {}; `--threading shared` or `strategy-on-feed` runs them without the scheduler between them)",
            p.book_cpu
        );
    }
    if p.shared || !p.pinned {
        let _ = writeln!(
            s,
            "  ({}{})",
            if p.shared {
                "threads share a cpu: waits spin, then yield"
            } else {
                ""
            },
            if p.pinned {
                ""
            } else if p.shared {
                "; not every thread could be pinned"
            } else {
                "not every thread could be pinned"
            }
        );
    }
    let _ = writeln!(s);
    let secs = f.elapsed_ns as f64 / 1e9;
    let _ = writeln!(
        s,
        "feed handler  {} messages decoded, normalized and published in {} ({:.2} M msgs/s, {pace}), {} gaps",
        thousands(f.published),
        duration(f.elapsed_ns),
        if secs > 0.0 {
            f.published as f64 / secs / 1e6
        } else {
            0.0
        },
        f.gaps
    );
    let _ = writeln!(
        s,
        "book builder  {} messages -> {} BBO changes, {} price-level updates, {} priced trades",
        thousands(b.messages),
        thousands(b.bbos_published),
        thousands(b.levels_published),
        thousands(b.trades_published)
    );
    let _ = writeln!(
        s,
        "strategy      {} BBO updates and {} trades read, {} signals",
        thousands(st.bbo_updates),
        thousands(st.trades),
        thousands(st.signals)
    );
    let _ = writeln!(s);
    match &r.final_book {
        Some((locate, symbol, e)) => {
            let name = if symbol.is_empty() {
                format!("locate {locate}")
            } else {
                format!("{symbol} (locate {locate})")
            };
            let _ = writeln!(s, "final book, {name}");
            let _ = writeln!(
                s,
                "  bid {} x {}   ask {} x {}   {} resting orders   {} shares executed in {} prints",
                price(e.best_bid),
                thousands(e.bid_size),
                price(e.best_ask),
                thousands(e.ask_size),
                thousands(e.resting_orders),
                thousands(e.executed_shares),
                thousands(e.prints)
            );
            let _ = writeln!(
                s,
                "  strategy view: microprice {}, trade flow {:+.0} shares{}",
                st.microprice
                    .map_or_else(|| "-".into(), |m| format!("{m:.4}")),
                st.flow,
                match r.matches_reference {
                    Some(true) => "; book matches the reference reading of this session",
                    Some(false) => "; BOOK DIFFERS FROM THE REFERENCE READING",
                    None => "",
                }
            );
        }
        None => {
            let _ = writeln!(s, "final book: no instrument had orders or prints");
        }
    }
    if st.first_signals.is_empty() {
        let _ = writeln!(s, "signals: none");
    } else {
        let _ = writeln!(
            s,
            "signals (first {} of {}; microprice vs mid and trade flow agree):",
            st.first_signals.len().min(show),
            thousands(st.signals)
        );
        for l in st.first_signals.iter().take(show) {
            let _ = writeln!(
                s,
                "  {} {:<6} {:<5} micro {:.4}  mid {:.4}  flow {:+.0}",
                l.time, l.symbol, l.stance, l.microprice, l.mid, l.flow
            );
        }
    }
    let _ = writeln!(s);
    let l = &r.latency;
    let _ = writeln!(
        s,
        "tick-to-strategy latency: ITCH message decoded -> strategy callback, through both rings and the book",
    );
    let _ = writeln!(
        s,
        "  ({} samples, {} clock)   p50 {}   p99 {}   p99.9 {}   max {}",
        thousands(l.samples),
        r.clock,
        duration(l.p50_ns),
        duration(l.p99_ns),
        duration(l.p999_ns),
        duration(l.max_ns)
    );
    if let Some(fl) = &r.floor {
        let p = &r.placement;
        let (far, twice) = if p.threading == Threading::StrategyOnFeed {
            (p.book_cpu, " (each message crosses it there and back)")
        } else {
            (p.strategy_cpu, "")
        };
        let _ = writeln!(
            s,
            "  floor, cache-line ping-pong cpu {} <-> cpu {far} in this run{twice}: p50 {}   p99 {}   p99.9 {}   max {}",
            p.feed_cpu,
            duration(fl.p50_ns),
            duration(fl.p99_ns),
            duration(fl.p999_ns),
            duration(fl.max_ns)
        );
    }
    for w in &f.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    if let Some(t) = &f.truncated {
        let _ = writeln!(s, "warning: {}", t.detail);
    }
    s
}

use std::fmt::Write as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(81_556), "81,556");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(duration(850), "850 ns");
        assert_eq!(duration(12_345), "12.3 us");
        assert_eq!(duration(4_560_000), "4.56 ms");
        assert_eq!(price(Some(3_201_400)), "320.1400");
        assert_eq!(price(None), "-");
    }

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

    #[test]
    fn the_bundled_session_is_the_test_file() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../codecs/testdata/itch/aapl-2020-01-30-10k.itch"
        );
        assert_eq!(std::fs::read(path).unwrap(), BUNDLED_SESSION);
    }
}
