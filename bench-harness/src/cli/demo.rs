//! `mdbus demo`: a real Nasdaq session through the whole pipeline
//! ([`stages`](mdbus_bench_harness::stages)), in one command, rendered for a person (or as
//! JSON), beside the cache-line floor between the same cpus.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;

use mdbus_bench_harness::pinning::{LayoutArg, Pinning};
use mdbus_bench_harness::stages::{
    BUNDLED_NAME, BUNDLED_SESSION, FEED, FeedShare, Input, PipelineRun, StageError,
    StrategyOutputs, Threading, default_threading, run_pipeline, share_a_cpu, signals,
    stage_pinning, thread_cpus,
};
use mdbus_feed_handlers::book::{BookConfig, BookSummary, BookSummaryEntry};
use mdbus_feed_handlers::bookstream::BookServiceStats;
use mdbus_feed_handlers::replay::{ReplayReport, Source, Speed};
use serde::Serialize;

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
    /// the feed handler's whatever is given, with `book-on-feed` the book builder's (the books
    /// then built on the feed handler's) (wins over --layout) [default: with a layout, the
    /// first core of its `feed_handler`, `book_builder` and `strategy` roles; else where
    /// `mdbus tune plan` places those roles among the cpus this process may use].
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// The core layout (`--layout FILE` or `$MDBUS_LAYOUT`).
    #[command(flatten)]
    pub layout: LayoutArg,
    /// `dedicated`: the book builder and the strategy each on their own thread; `shared`: both
    /// on one thread, in turns, on the book builder's cpu; `strategy-on-feed`: the strategy on
    /// the feed handler's thread, in its waits, and the book builder alone on its cpu;
    /// `book-on-feed`: the books built on the feed handler's thread from the messages it
    /// decodes (no envelope read back), and the strategy alone on the book builder's cpu;
    /// `split-books`: the books split by instrument, half built on the feed handler's thread
    /// as with `book-on-feed`, half by a book service on the book builder's cpu that runs the
    /// strategy in turns (the last two Nasdaq ITCH only; the two-thread arrangements are for
    /// two-cpu hosts)
    /// [default: dedicated when the three stages have three cpus, else strategy-on-feed].
    #[arg(long, value_enum)]
    pub threading: Option<Threading>,
    /// With `--threading split-books`: the feed handler's share of the instruments, in 64ths
    /// (those whose stock locate modulo 64 is below it; the other thread takes the rest).
    #[arg(long, default_value_t = FeedShare::DEFAULT.get())]
    pub feed_share: u32,
    /// Signal lines shown.
    #[arg(long, default_value_t = 6)]
    pub show_signals: usize,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
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
    /// With `split-books`, the feed handler's share of the instruments in 64ths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed_share: Option<u32>,
    /// Whether two threads shared a cpu (waits then spin, then yield).
    pub shared: bool,
    /// The core layout the stages took their cpus and settings from, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<mdbus_bench_harness::pinning::LayoutUse>,
    /// Whether the cpus are where `mdbus tune plan` places the three roles on this host (no
    /// `--cpus`, no layout).
    pub planned: bool,
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
pub fn run(args: &DemoArgs, out: &mut dyn Write) -> Result<(), StageError> {
    let report = execute(args)?;
    if args.json {
        let text = serde_json::to_string(&report)
            .map_err(|e| StageError::Internal(format!("cannot serialise: {e}")))?;
        writeln!(out, "{text}")?;
    } else {
        out.write_all(render(&report, args.show_signals).as_bytes())?;
    }
    Ok(())
}

/// Runs the three stages and gathers what they report.
pub fn execute(args: &DemoArgs) -> Result<DemoReport, StageError> {
    let planned = (args.cpus.is_empty() && args.layout.path().is_none())
        .then(planned_cpus)
        .flatten();
    let pinning = stage_pinning(&args.layout, planned.as_deref().unwrap_or(&args.cpus))?;
    // Read before the stages start, so the demo's own threads are not counted.
    let busy = host_load().and_then(|(load, cpus)| load_warning(load, cpus));
    let threading = args
        .threading
        .unwrap_or_else(|| default_threading(&pinning));
    let shared = share_a_cpu(&thread_cpus(&pinning, threading));
    let feed_cpu = pinning.cpu(0);
    // With book-on-feed the books are built on the feed handler's thread.
    let book_cpu = if threading == Threading::BookOnFeed {
        feed_cpu
    } else {
        pinning.cpu(1)
    };
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
    let feed_share = FeedShare::new(args.feed_share)?;
    let run = run_pipeline(
        input,
        speed,
        book,
        &pinning,
        (threading, feed_share),
        StrategyOutputs {
            show: args.show_signals,
            latency: true,
        },
    )?;
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
            feed_share: (threading == Threading::SplitBooks).then_some(feed_share.get()),
            shared,
            layout: pinning.layout_use(),
            planned: planned.is_some(),
            warnings: pinning.warnings().into_iter().chain(busy).collect(),
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
) -> Result<Option<LatencySummary>, StageError> {
    let strategy_stage = threading.floor_stage();
    let (feed_cpu, strategy_cpu) = (pinning.cpu(0), pinning.cpu(strategy_stage));
    use mdbus_bench_harness::bench::clock::BenchClock;
    use mdbus_bench_harness::bench::engine::{Ctx, new_histogram, ping_pong};
    use mdbus_bench_harness::bench::transport::{FloorWord, floor};
    if feed_cpu == strategy_cpu {
        return Ok(None);
    }
    let internal =
        |e: mdbus_bench_harness::bench::BenchError| StageError::Internal(format!("floor: {e}"));
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
    mdbus_bench_harness::bench::host::tsc_invariant()
}

/// The instrument with the most prints (then the most resting orders).
fn most_active(summary: &BookSummary) -> Option<(u16, BookSummaryEntry)> {
    summary
        .books
        .iter()
        .max_by_key(|(l, e)| (e.prints, e.resting_orders, std::cmp::Reverse(*l)))
        .map(|(l, e)| (*l, *e))
}

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

/// The one-minute load average and the number of online cpus, from `/proc` (`None` where it
/// cannot be read).
fn host_load() -> Option<(f64, usize)> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let load = text.split_whitespace().next()?.parse().ok()?;
    let cpus = std::thread::available_parallelism().ok()?.get();
    Some((load, cpus))
}

/// A warning when other work keeps the host busy (a load average of at least one cpu's worth,
/// and at least a quarter of the cpus): the latency tail then measures that work too.
fn load_warning(load: f64, cpus: usize) -> Option<String> {
    let cpus_f = cpus as f64;
    (load >= 1.0 && load >= cpus_f / 4.0).then(|| {
        format!(
            "the host is busy (load average {load:.1} over the last minute on {cpus} cpus): other \
             work shares the cpus, so the latency figures below include it; run on an idle host \
             or isolate the cpus (TUNING.md)"
        )
    })
}

/// The cpus of the feed handler, book builder and strategy as `mdbus tune plan` places those
/// roles on this host, among the cpus this process may use; `None` when the host's topology or
/// affinity cannot be read (the stages then take the first cpus this process may use).
fn planned_cpus() -> Option<Vec<usize>> {
    use mdbus_tuning as tuning;
    let topology = tuning::Topology::read(&tuning::SysRoot::host()).ok()?;
    let topology = topology.restricted_to(&tuning::current_affinity().ok()?);
    let roles = tuning::parse_roles("feed_handler,book_builder,strategy").ok()?;
    let layout = tuning::plan(&topology, &roles).ok()?;
    ["feed_handler", "book_builder", "strategy"]
        .iter()
        .map(|role| layout.core_for(role, 0))
        .collect()
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
    } else if p.planned {
        let _ = writeln!(
            s,
            "  (cpus where `mdbus tune plan` places feed_handler, book_builder and strategy on this host)"
        );
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
    } else if p.threading == Threading::BookOnFeed {
        let _ = writeln!(
            s,
            "  (the books are built on the feed handler's thread, from the messages it decodes: --threading book-on-feed)"
        );
    } else if p.threading == Threading::SplitBooks {
        let _ = writeln!(
            s,
            "  (the books are split by instrument: {}/64 built on the feed handler's thread, the rest on the strategy's, in turns: --threading split-books)",
            p.feed_share.unwrap_or_default()
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
    let path = if r.placement.threading == Threading::BookOnFeed {
        "the book on the feed handler's thread, then its rings"
    } else if r.placement.threading == Threading::SplitBooks {
        "the feed ring and the book of either thread (by instrument), then its rings"
    } else {
        "both rings and the book"
    };
    let _ = writeln!(
        s,
        "tick-to-strategy latency: ITCH message decoded -> strategy callback, through {path}",
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
    fn a_busy_host_is_warned_about() {
        assert_eq!(load_warning(0.2, 2), None);
        assert_eq!(load_warning(0.9, 2), None);
        assert_eq!(load_warning(1.5, 16), None, "a quarter of 16 cpus is 4");
        let w = load_warning(7.4, 2).expect("busy");
        assert!(
            w.contains("load average 7.4") && w.contains("2 cpus"),
            "{w}"
        );
        assert!(load_warning(4.0, 16).is_some());
    }

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
}
