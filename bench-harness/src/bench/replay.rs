//! `mdbus bench replay`: the whole pipeline on real data, beside parse-only baselines.
//!
//! The bundled AAPL session (10,000 ITCH messages) is played repeatedly, each pass with its
//! order reference numbers shifted by `pass << 40` and the source sequence numbers running on,
//! and closed by Order Delete messages for the 215 orders the session leaves resting: the
//! books stay consistent (a pass only touches its own orders) and start every pass empty.
//!
//! `--input FILE` replaces it with a Nasdaq ITCH 5.0 file (2-byte length-prefixed), read once
//! into one buffer and played once per round by every row (the latency runs play its first
//! `--latency-messages` messages; the ring ceiling cycles the envelopes of its first 100,000).
//! With a file, the `itch-book` row is added when `--python` (default `python3`) can import
//! the `itch-book` package: `scripts/itch_book_replay.py`, run as a subprocess in each round,
//! replays the file through the package's C++ core (parse and book apply for every symbol,
//! one thread, no table) and times that call alone; the notes give our rows' throughput over
//! its. Without the package the row is absent and a note says why.
//!
//! Systems, all over the same bytes in the same run:
//! * `itchy-parse`: the `itchy` crate parsing the bytes into its messages (parse only);
//! * `mdbus-decode`: mdbus's zero-copy ITCH decoder over the bytes (parse only);
//! * `ring-ceiling`: the session's normalized envelopes, encoded beforehand, carried through
//!   the feed stream's ring from the feed handler's cpu to the book builder's with no work on
//!   either side: the most any two-thread pipeline can carry between those cpus;
//! * `mdbus-feed`: the feed handler alone: capture reader, decode, normalize, publish into a
//!   ring nobody reads (one thread);
//! * `mdbus-feed+book`: a feed handler that keeps the books on its own thread, as
//!   `Replayer::with_book_service` runs it: decode, normalize (the envelope the feed
//!   would publish), and the book service fed the decoded message
//!   ([`BookService::accept_itch`]: order messages applied
//!   [`APPLY_BEHIND`](mdbus_feed_handlers::bookstream::APPLY_BEHIND) order messages late), its
//!   BBO, level and trade envelopes published into rings nobody reads: the pipeline's work
//!   without its hand-offs between threads;
//! * `mdbus-decode+book`: the book built on the decoding thread from decoded fields: decode,
//!   [`OrderEvent::from_itch`], [`BookBuilder::apply`], one thread, no envelopes (its updates
//!   folded into a checksum): what an application that wants books in its own process, and
//!   nothing on the bus, can have;
//! * `mdbus-pipeline`: file bytes to strategy callback: feed handler -> ring -> book builder ->
//!   two rings -> the example strategy, three pinned threads. Its throughput is messages over
//!   the time from the first byte read to the last callback; its latency percentiles come from
//!   a second, paced run (`--rate`), each sample from the TSC stamp taken when a message was
//!   decoded to the strategy's callback for the BBO update or trade it caused.
//! * `mdbus-pipeline-shared`: the same, with the book builder and the strategy on one thread
//!   in turns (`demo --threading shared`): two threads, which is what a two-cpu host should
//!   run (three busy-polling threads on two cpus hand one of them back and forth through the
//!   scheduler).
//! * `mdbus-pipeline-on-feed`: the same, with the strategy on the feed handler's thread, run
//!   in the feed handler's waits (`demo --threading strategy-on-feed`): the other two-thread
//!   arrangement, in which the book builder, the heaviest stage, has a cpu to itself.
//! * `mdbus-pipeline-book-on-feed`: the books built on the feed handler's thread from the
//!   messages it decodes, by the book service's code publishing the same BBO, level and trade
//!   envelopes, and the strategy on a thread of its own (`demo --threading book-on-feed`):
//!   two threads, with no envelope read back between the feed handler and the books.
//! * `itch-book` (with `--input`): the `itch-book` package's C++ core over the file, as above.
//!
//! Throughput runs go in interleaved rounds (`--rounds`, 3 by default): each round runs every
//! system once, starting one system further along than the round before, and each row
//! reports the median over the rounds (the range is in the notes). The latency runs follow,
//! once per pipeline. For each pipeline a note says how often, per thousand messages over the
//! throughput rounds, the feed handler found the book service's input ring full, and the book
//! service found its outputs full or its input empty: the thread that waits is not the
//! bottleneck. (A thread retries a refused publish after a short spin, so those counts rise
//! with the time waited; compare them between threads and runs, not as times. The on-feed
//! arrangement runs the strategy in the feed handler's waits, so it counts fewer. An empty
//! input is counted once per turn that finds it so, and the turn then waits for more.) With
//! the books on the feed handler's thread, the note says how often the feed handler found the
//! strategy's inputs (the book service's outputs) full and the strategy found them empty.
//!
//! The report is the ring scenario's JSON document (`scenario: "replay"`), plus
//! `peak_rss_bytes` (VmHWM from `/proc/self/status`).

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use mdbus_bus::StreamConfig;
use mdbus_codecs::fb::Encoded;
use mdbus_codecs::nasdaq::itch::{self, Stream};
use mdbus_codecs::nasdaq::normalize::Normalizer;
use mdbus_feed_handlers::book::{BookBuilder, BookConfig, BookUpdate, OrderEvent};
use mdbus_feed_handlers::bookstream::{BookService, BookServiceConfig, Share, output_ring};
use mdbus_feed_handlers::replay::{ReplayOptions, Replayer, Speed, replay_ring};

use crate::bench::report::{RingParams, RingReport, SystemResult};
use crate::bench::{BenchError, host};
use crate::pinning::LayoutArg;
use crate::pinning::Pinning;
use crate::stages::{
    BUNDLED_SESSION, FeedShare, Input, PipelineRun, StageError, StrategyOutputs, Threading,
    run_pipeline, share_a_cpu, stage_pinning, thread_cpus,
};

/// Messages in one pass of the bundled session.
const PASS_MESSAGES: u64 = 10_000;
/// Order references of pass `k` are shifted by `k << REF_SHIFT`.
const REF_SHIFT: u32 = 40;

/// `--quick`: messages in the throughput runs, in the latency run, and its rate.
pub const QUICK: (u64, u64, u64) = (20_000, 10_000, 200_000);

/// `mdbus bench replay`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ReplayBenchArgs {
    /// A short smoke run: 20000 messages, 10000 in the latency run at 200000 msgs/s (flags
    /// given explicitly still apply).
    #[arg(long)]
    pub quick: bool,
    /// Messages in the throughput runs (rounded up to whole passes of 10,000; not with
    /// --input) [default: 10000000].
    #[arg(long)]
    pub messages: Option<u64>,
    /// Messages per second in the latency run (0: as fast as possible) [default: 1000000].
    #[arg(long)]
    pub rate: Option<u64>,
    /// Messages in the latency run (rounded up to whole passes) [default: 1000000].
    #[arg(long)]
    pub latency_messages: Option<u64>,
    /// Interleaved rounds of the throughput runs: each round runs every system once, starting
    /// one system further along than the round before; each row reports the median. On a
    /// shared or virtual host, whose speed drifts from one second to the next, the drift then
    /// falls on every system alike [default: 3; with --quick, 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: Option<u32>,
    /// Measure only these rows (comma-separated names as the table prints them, for example
    /// `itchy-parse,mdbus-pipeline-on-feed`) [default: every row].
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub systems: Vec<String>,
    /// The feed handler's share of the instruments in the `mdbus-pipeline-split-books` row,
    /// in 64ths (see `mdbus demo --feed-share`) [default: 40, as in the demo].
    #[arg(long)]
    pub feed_share: Option<u32>,
    /// Cpus for the feed handler, book builder and strategy (see `mdbus demo --cpus`; wins
    /// over --layout).
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// The core layout (`--layout FILE` or `$MDBUS_LAYOUT`): the first core of its
    /// `feed_handler`, `book_builder` and `strategy` roles.
    #[command(flatten)]
    pub layout: LayoutArg,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write the pipeline's tick-to-strategy distribution (`mdbus-pipeline.hgrm`) here.
    #[arg(long, value_name = "DIR")]
    pub hgrm: Option<PathBuf>,
    /// Write its latency-by-percentile chart (SVG) here.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Replay this Nasdaq ITCH 5.0 file (2-byte length-prefixed messages) instead of the
    /// bundled session: every row plays it once per round (--messages does not apply); the
    /// latency runs play its first --latency-messages messages. Adds the `itch-book` row
    /// when that Python package is importable (`pip install itch-book`).
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// The Python interpreter that runs the `itch-book` row (with --input).
    #[arg(long, value_name = "PATH", default_value = "python3")]
    pub python: PathBuf,
}

impl ReplayBenchArgs {
    /// Throughput rounds after `--quick` and the default.
    fn rounds(&self) -> u32 {
        self.rounds.unwrap_or(if self.quick { 1 } else { 3 })
    }

    /// (throughput messages, latency messages, rate) after `--quick` and the defaults.
    fn sizes(&self) -> (u64, u64, u64) {
        let (m, l, r) = if self.quick {
            QUICK
        } else {
            (10_000_000, 1_000_000, 1_000_000)
        };
        (
            self.messages.unwrap_or(m),
            self.latency_messages.unwrap_or(l),
            self.rate.unwrap_or(r),
        )
    }
}

/// The session's ITCH bytes, pass after pass, order references rewritten.
///
/// Each pass ends with an Order Delete for every order the session leaves resting, so every
/// pass starts from empty books and the live orders stay those of one session.
#[derive(Debug)]
pub struct RepeatedSession {
    /// One pass: the session and the closing deletes.
    base: Vec<u8>,
    /// Offsets (into `base`) of every order reference field.
    refs: Vec<usize>,
    /// Messages in one pass.
    messages: u64,
    passes: u64,
    pass: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl RepeatedSession {
    /// `passes` passes of the length-prefixed ITCH bytes `session`.
    pub fn new(session: &[u8], passes: u64) -> RepeatedSession {
        let mut base = session.to_vec();
        // Live orders at the end of the session: reference -> (locate, shares).
        let mut live: std::collections::BTreeMap<u64, (u16, u32)> = Default::default();
        let mut last_ts = 0;
        let mut messages = 0u64;
        for (_, msg) in Stream::new(session) {
            let Ok(msg) = msg else { continue };
            messages += 1;
            last_ts = msg.timestamp();
            let mut reduce = |r: u64, n: Option<u32>| {
                if let Some((_, shares)) = live.get_mut(&r) {
                    match n {
                        Some(n) if n < *shares => *shares -= n,
                        _ => {
                            live.remove(&r);
                        }
                    }
                }
            };
            match msg {
                itch::Message::AddOrder(m) => {
                    live.insert(m.order_reference_number(), (m.stock_locate(), m.shares()));
                }
                itch::Message::AddOrderMpid(m) => {
                    live.insert(m.order_reference_number(), (m.stock_locate(), m.shares()));
                }
                itch::Message::OrderExecuted(m) => {
                    reduce(m.order_reference_number(), Some(m.executed_shares()))
                }
                itch::Message::OrderExecutedWithPrice(m) => {
                    reduce(m.order_reference_number(), Some(m.executed_shares()))
                }
                itch::Message::OrderCancel(m) => {
                    reduce(m.order_reference_number(), Some(m.cancelled_shares()))
                }
                itch::Message::OrderDelete(m) => reduce(m.order_reference_number(), None),
                itch::Message::OrderReplace(m) => {
                    let old = live.remove(&m.original_order_reference_number());
                    if let Some((locate, _)) = old {
                        live.insert(m.new_order_reference_number(), (locate, m.shares()));
                    }
                }
                _ => {}
            }
        }
        let mut frame = [0u8; 64];
        for (&order_reference_number, &(stock_locate, _)) in &live {
            let delete = itch::MessageFields::OrderDelete(itch::OrderDeleteFields {
                stock_locate,
                tracking_number: 0,
                timestamp: last_ts,
                order_reference_number,
            });
            if let Ok(n) = itch::write_framed(&delete, &mut frame) {
                base.extend_from_slice(&frame[..n]);
                messages += 1;
            }
        }
        let mut refs = Vec::new();
        for (offset, msg) in Stream::new(&base) {
            let Ok(msg) = msg else { continue };
            let at = offset + 2 + itch::HEADER_LEN;
            match msg.msg_type() {
                b'A' | b'F' | b'E' | b'C' | b'X' | b'D' | b'P' => refs.push(at),
                b'U' => refs.extend([at, at + 8]),
                _ => {}
            }
        }
        RepeatedSession {
            buf: Vec::with_capacity(base.len()),
            base,
            refs,
            messages,
            passes,
            pass: 0,
            pos: 0,
        }
    }

    /// Messages in one pass (the session and its closing deletes).
    pub fn pass_messages(&self) -> u64 {
        self.messages
    }

    /// Messages in all the passes.
    pub fn total_messages(&self) -> u64 {
        self.messages * self.passes
    }

    /// The next pass's bytes, `None` after the last (for readers that take slices).
    pub fn next_pass_bytes(&mut self) -> Option<&[u8]> {
        self.next_pass().then_some(self.buf.as_slice())
    }

    fn next_pass(&mut self) -> bool {
        if self.pass == self.passes {
            return false;
        }
        self.buf.clear();
        self.buf.extend_from_slice(&self.base);
        let shift = self.pass << REF_SHIFT;
        for &at in &self.refs {
            let field = &mut self.buf[at..at + 8];
            let v = u64::from_be_bytes(field.try_into().unwrap_or_default());
            field.copy_from_slice(&v.wrapping_add(shift).to_be_bytes());
        }
        self.pass += 1;
        self.pos = 0;
        true
    }
}

impl Read for RepeatedSession {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() && !self.next_pass() {
            return Ok(0);
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Envelopes the ring ceiling carries, cycled, for `--input` (the file's first messages).
const CEILING_SAMPLE: usize = 100_000;

/// The `itch-book` row's driver (run as `python -c DRIVER FILE`).
const ITCH_BOOK_DRIVER: &str = include_str!("../../scripts/itch_book_replay.py");

/// `--input`: the file's bytes, read once, and what one pass over them found.
#[derive(Debug)]
struct InputFile {
    path: PathBuf,
    /// The whole file (shared with the readers of the feed handler rows, no copy).
    bytes: Arc<Vec<u8>>,
    /// Messages decoded.
    messages: u64,
    /// Frames whose message did not decode (unknown type or bad length).
    undecoded: u64,
    /// Distinct stock locates.
    locates: usize,
    /// Add Order and Order Replace messages: a bound on the orders live at once.
    adds: u64,
}

impl InputFile {
    /// Reads and scans `path`; a file with a broken frame, or none, is refused.
    fn read(path: &std::path::Path) -> Result<InputFile, BenchError> {
        let bytes = std::fs::read(path).map_err(|source| BenchError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut seen = vec![false; 1 << 16];
        let (mut messages, mut undecoded, mut locates, mut adds) = (0u64, 0u64, 0usize, 0u64);
        for (at, m) in Stream::new(&bytes) {
            match m {
                Ok(m) => {
                    messages += 1;
                    let locate = usize::from(m.stock_locate());
                    if !seen[locate] {
                        seen[locate] = true;
                        locates += 1;
                    }
                    if matches!(m.msg_type(), b'A' | b'F' | b'U') {
                        adds += 1;
                    }
                }
                Err(_) if itch::frame_at(&bytes, at).is_ok() => {
                    undecoded += 1;
                }
                Err(e) => {
                    return Err(BenchError::BadArg(format!(
                        "--input {}: not length-prefixed ITCH 5.0 at byte {at} (after {messages} messages): {e}",
                        path.display()
                    )));
                }
            }
        }
        if messages == 0 {
            return Err(BenchError::BadArg(format!(
                "--input {}: no ITCH 5.0 message in it",
                path.display()
            )));
        }
        Ok(InputFile {
            path: path.to_path_buf(),
            bytes: Arc::new(bytes),
            messages,
            undecoded,
            locates,
            adds,
        })
    }

    /// The bytes of the first `messages` frames (the whole file when it has fewer).
    fn prefix(&self, messages: u64) -> &[u8] {
        let n = usize::try_from(messages).unwrap_or(usize::MAX);
        let end = Stream::new(&self.bytes)
            .nth(n)
            .map_or(self.bytes.len(), |(at, _)| at);
        &self.bytes[..end]
    }
}

/// A reader over the first `end` bytes of a shared buffer.
struct SharedBytes {
    bytes: Arc<Vec<u8>>,
    pos: usize,
    end: usize,
}

impl Read for SharedBytes {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.bytes.get(self.pos..self.end).unwrap_or_default();
        let n = out.len().min(rest.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// What every row replays: the bundled session repeated, or `--input` played once.
enum Workload {
    /// `passes` passes of the bundled session.
    Bundled { passes: u64 },
    /// The file, once.
    File(InputFile),
}

impl Workload {
    /// Messages in one throughput run.
    fn total(&self) -> u64 {
        match self {
            Workload::Bundled { passes } => {
                RepeatedSession::new(BUNDLED_SESSION, *passes).total_messages()
            }
            Workload::File(f) => f.messages,
        }
    }

    /// A reader of a throughput run's bytes, with its name.
    fn reader(&self) -> (String, Box<dyn Read + Send>) {
        match self {
            Workload::Bundled { passes } => (
                "aapl (repeated)".into(),
                Box::new(RepeatedSession::new(BUNDLED_SESSION, *passes)),
            ),
            Workload::File(f) => (
                f.path.display().to_string(),
                Box::new(SharedBytes {
                    bytes: Arc::clone(&f.bytes),
                    pos: 0,
                    end: f.bytes.len(),
                }),
            ),
        }
    }

    /// A reader of a latency run's `messages` (whole passes of the session, or the file's
    /// first messages), with its name.
    fn latency_reader(&self, messages: u64) -> (String, Box<dyn Read + Send>) {
        match self {
            Workload::Bundled { .. } => Workload::Bundled {
                passes: passes(messages),
            }
            .reader(),
            Workload::File(f) => (
                f.path.display().to_string(),
                Box::new(SharedBytes {
                    bytes: Arc::clone(&f.bytes),
                    pos: 0,
                    end: f.prefix(messages).len(),
                }),
            ),
        }
    }

    /// Book capacity for the workload: for a file, room for as many orders as it adds (its
    /// builder makes room for the first 1 Mi and grows in steps to what the session keeps
    /// live, so the bound costs nothing until reached).
    fn books(&self) -> BookConfig {
        match self {
            Workload::Bundled { .. } => books(),
            Workload::File(f) => {
                let day = BookConfig::nasdaq_day();
                BookConfig {
                    max_orders: usize::try_from(f.adds)
                        .unwrap_or(usize::MAX)
                        .clamp(1 << 16, day.max_orders),
                    max_instruments: f.locates.clamp(16, 1 << 16),
                    // Half a full day's reserve: the rare deeper side grows (counted), and the
                    // memory goes to a sparse order table instead.
                    levels_per_side_hint: if f.locates > 16 {
                        day.levels_per_side_hint / 2
                    } else {
                        books().levels_per_side_hint
                    },
                }
            }
        }
    }

    /// Mean bytes per message (framing included).
    fn msg_bytes(&self) -> usize {
        match self {
            Workload::Bundled { .. } => BUNDLED_SESSION.len() / PASS_MESSAGES as usize,
            Workload::File(f) => f.bytes.len() / usize::try_from(f.messages.max(1)).unwrap_or(1),
        }
    }
}

fn passes(messages: u64) -> u64 {
    messages.div_ceil(PASS_MESSAGES).max(1)
}

/// Books for the repeated session: each pass starts from empty books, so the live orders
/// are those of one session (a few hundred). 32 Ki orders make a 2 MiB order table: at
/// twice that, the table alone outgrows a 2 MiB L2 and the one-thread feed+book row loses
/// a third of its rate on such a host, while the decode+book row, which touches nothing but
/// the books, does not move.
fn books() -> BookConfig {
    BookConfig {
        max_orders: 1 << 15,
        max_instruments: 16,
        levels_per_side_hint: 256,
    }
}

fn rate_result(
    name: &str,
    msg_bytes: usize,
    msgs_per_sec: f64,
) -> Result<SystemResult, BenchError> {
    let empty = hdrhistogram::Histogram::<u64>::new(3)
        .map_err(|e| BenchError::Internal(format!("histogram: {e}")))?;
    let mut r = SystemResult::from_histogram(name, msg_bytes, &empty);
    r.msgs_per_sec = Some(msgs_per_sec);
    Ok(r)
}

/// The row of the `itch-book` package's C++ core (with `--input`).
const ITCH_BOOK: &str = "itch-book";

/// Every row `bench replay` can measure, in table order.
fn all_systems() -> Vec<(&'static str, Rate)> {
    [
        ("itchy-parse", Rate::Itchy),
        ("mdbus-decode", Rate::Decode),
        ("ring-ceiling", Rate::Ceiling),
        ("mdbus-feed", Rate::Feed),
        ("mdbus-feed+book", Rate::FeedBook),
        ("mdbus-decode+book", Rate::DecodeBook),
        (ITCH_BOOK, Rate::ItchBook),
    ]
    .into_iter()
    .chain(PIPELINES.iter().map(|&(name, t)| (name, Rate::Pipeline(t))))
    .collect()
}

/// The rows `--systems` names (every row when it names none), in table order; an unknown
/// name is refused with the list of known ones.
fn chosen_systems(names: &[String]) -> Result<Vec<(&'static str, Rate)>, BenchError> {
    let all = all_systems();
    if let Some(bad) = names.iter().find(|n| !all.iter().any(|(a, _)| a == n)) {
        let known: Vec<&str> = all.iter().map(|(a, _)| *a).collect();
        return Err(BenchError::BadArg(format!(
            "--systems: unknown row {bad:?} (known: {})",
            known.join(", ")
        )));
    }
    Ok(all
        .into_iter()
        .filter(|(a, _)| names.is_empty() || names.iter().any(|n| n == a))
        .collect())
}

/// The median of `v` (the mean of the two middle values of an even count); 0 when empty.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A system whose throughput `bench replay` measures.
#[derive(Clone, Copy, Debug)]
enum Rate {
    /// The `itchy` crate parsing the bytes.
    Itchy,
    /// mdbus's ITCH decoder over the bytes.
    Decode,
    /// [`ring_ceiling`].
    Ceiling,
    /// The feed handler alone.
    Feed,
    /// Decode, normalize and the book service on one thread.
    FeedBook,
    /// Decode and the book builder on one thread, from decoded fields.
    DecodeBook,
    /// The `itch-book` package's C++ core: parse and book apply, one thread, in a Python
    /// subprocess.
    ItchBook,
    /// A whole pipeline.
    Pipeline(Threading),
}

/// What every throughput run reads.
struct RateCtx<'a> {
    pinning: &'a Pinning,
    /// One pass of the session, or the file (parse-only systems parse it `passes` times).
    one_pass: &'a [u8],
    /// The same pass (the file's first messages) as normalized envelopes: the ring ceiling
    /// carries them, cycled, `total` times.
    envelopes: &'a [Vec<u8>],
    passes: u64,
    workload: &'a Workload,
    /// The interpreter of the `itch-book` row.
    python: &'a std::path::Path,
    /// The `itch-book` row's last run.
    itch_book: std::cell::RefCell<Option<ItchBookRun>>,
    /// The `mdbus-feed+book` row's largest footprint over the rounds.
    feed_book: std::cell::Cell<FeedBookMemory>,
    /// The feed handler's share of the split books.
    feed_share: FeedShare,
}

/// What the `mdbus-feed+book` row's own work holds in memory: the like-for-like figure for
/// the `itch-book` process's peak RSS (which holds the file mapped, its books and a Python
/// interpreter), where the bench process's peak also holds every other row's buffers.
#[derive(Clone, Copy, Debug, Default)]
struct FeedBookMemory {
    /// Resident bytes gained from before its book service was made to the peak of its run
    /// (the books as far as the session filled them, the order table's growth, and the output
    /// rings); to the end of its run where the peak could not be reset (`peak` false).
    rss_growth: u64,
    /// Whether `rss_growth` is the peak.
    peak: bool,
    /// Bytes its book builder holds at the end ([`BookBuilder::memory_bytes`]).
    ///
    /// [`BookBuilder::memory_bytes`]: mdbus_feed_handlers::book::BookBuilder::memory_bytes
    books: u64,
    /// Times its order table grew during the run.
    growths: u64,
    /// The longest a growth held up its thread, in nanoseconds.
    growth_max_ns: u64,
}

/// How often a pipeline's threads waited in a throughput run: found the next thread's ring
/// full (attempts refused, each retried), or the book service found its input empty. The
/// thread that waits is not the bottleneck; the one it waits for may be.
#[derive(Clone, Copy, Debug, Default)]
struct Waits {
    /// The feed handler, on the book service's input.
    feed: u64,
    /// The book service, on its outputs (read by the strategy).
    book: u64,
    /// The book service's turns that found its input empty (it ran dry: it was waiting).
    book_dry: u64,
    /// The strategy's turns on a thread of its own that found its inputs empty.
    strategy_dry: u64,
    /// Messages of the runs counted.
    messages: u64,
}

impl RateCtx<'_> {
    /// Runs `system` once over `passes` passes of the session: (messages, seconds, and for a
    /// pipeline its waits).
    fn run_once(&self, name: &str, system: Rate) -> Result<(u64, f64, Waits), BenchError> {
        let n = self.passes;
        let one_pass = self.one_pass;
        let internal_err = |e: &dyn std::fmt::Display| BenchError::Internal(e.to_string());
        let (messages, secs) = match system {
            Rate::Itchy => {
                let t = Instant::now();
                let mut parsed = 0u64;
                for _ in 0..n {
                    for m in itchy::MessageStream::from_reader(black_box(one_pass)).flatten() {
                        black_box(m);
                        parsed += 1;
                    }
                }
                Ok((parsed, t.elapsed().as_secs_f64()))
            }
            Rate::Decode => {
                let t = Instant::now();
                let mut decoded = 0u64;
                for _ in 0..n {
                    for (_, m) in Stream::new(black_box(one_pass)) {
                        if let Ok(m) = m {
                            black_box(m);
                            decoded += 1;
                        }
                    }
                }
                Ok((decoded, t.elapsed().as_secs_f64()))
            }
            Rate::Ceiling => ring_ceiling(self.pinning, self.envelopes, self.workload.total()),
            Rate::Feed => {
                // The feed handler alone, into a ring nobody reads.
                let dir = temp_dir()?;
                let bus = mdbus_bus::Bus::with_root(dir.path()).map_err(|e| internal_err(&e))?;
                let (input, reader) = self.workload.reader();
                let replayer = Replayer::from_reader(
                    &input,
                    reader,
                    &bus,
                    "feed-only",
                    &replay_ring(),
                    ReplayOptions::default(),
                )
                .map_err(|e| internal_err(&e))?;
                let report = replayer.run(&mut |_| {}).map_err(|e| internal_err(&e))?;
                Ok((report.published, report.elapsed_ns as f64 / 1e9))
            }
            Rate::FeedBook => {
                // Decode, normalize and the book service in one thread: the pipeline's work
                // without its hand-offs (the book service publishes into rings nobody reads).
                // The service takes the decoded message, as a feed handler with the books
                // on its thread hands it over: the envelope is encoded, not read back.
                let dir = temp_dir()?;
                let bus = mdbus_bus::Bus::with_root(dir.path()).map_err(|e| internal_err(&e))?;
                let rss_before = rss_bytes();
                // From here the process's peak is the row's: its book service's storage,
                // the order table's growth included.
                let peak_reset = reset_peak_rss();
                let config = BookServiceConfig {
                    book: self.workload.books(),
                    output: StreamConfig {
                        prefault: true,
                        ..output_ring()
                    },
                    publish_levels: true,
                    share: Share::ALL,
                };
                let mut svc =
                    BookService::new(&bus, "solo", &config).map_err(|e| internal_err(&e))?;
                let mut norm = Normalizer::new();
                let mut seq = 0u64;
                let flags = norm.flags();
                let mut pass = |bytes: &[u8]| {
                    for (_, m) in Stream::new(bytes) {
                        let Ok(m) = m else { continue };
                        seq += 1;
                        black_box(norm.normalize(&m, seq, 0).as_bytes().len());
                        svc.accept_itch(seq, 0, flags, &m);
                    }
                    svc.flush();
                };
                let t;
                match self.workload {
                    Workload::Bundled { .. } => {
                        let mut session = RepeatedSession::new(BUNDLED_SESSION, n);
                        t = Instant::now();
                        while let Some(bytes) = session.next_pass_bytes() {
                            pass(bytes);
                        }
                    }
                    Workload::File(f) => {
                        t = Instant::now();
                        pass(&f.bytes);
                    }
                }
                let secs = t.elapsed().as_secs_f64();
                let after = if peak_reset {
                    peak_rss_bytes()
                } else {
                    rss_bytes()
                };
                let grown = after
                    .zip(rss_before)
                    .map_or(0, |(after, before)| after.saturating_sub(before));
                let last = self.feed_book.get();
                self.feed_book.set(FeedBookMemory {
                    rss_growth: last.rss_growth.max(grown),
                    peak: last.peak || peak_reset,
                    books: last.books.max(svc.builder().memory_bytes() as u64),
                    growths: last
                        .growths
                        .max(svc.builder().counters().order_table_growths),
                    growth_max_ns: last
                        .growth_max_ns
                        .max(svc.builder().counters().order_table_growth_max_ns),
                });
                Ok((seq, secs))
            }
            Rate::DecodeBook => {
                let mut book =
                    BookBuilder::new(self.workload.books()).map_err(|e| internal_err(&e))?;
                let mut acc = 0u64;
                let mut sink = |u: BookUpdate| {
                    acc = acc.wrapping_add(match u {
                        BookUpdate::Level { price, shares, .. } => u64::from(price) ^ shares,
                        BookUpdate::Bbo(b) => b.bid_size ^ b.ask_size,
                    });
                };
                let mut decoded = 0u64;
                let mut pass = |bytes: &[u8]| {
                    for (_, m) in Stream::new(black_box(bytes)) {
                        let Ok(m) = m else { continue };
                        decoded += 1;
                        if let Some(ev) = OrderEvent::from_itch(&m) {
                            book.apply(&ev, &mut sink);
                        }
                    }
                };
                let t;
                match self.workload {
                    Workload::Bundled { .. } => {
                        let mut session = RepeatedSession::new(BUNDLED_SESSION, n);
                        t = Instant::now();
                        while let Some(bytes) = session.next_pass_bytes() {
                            pass(bytes);
                        }
                    }
                    Workload::File(f) => {
                        t = Instant::now();
                        pass(&f.bytes);
                    }
                }
                let secs = t.elapsed().as_secs_f64();
                black_box(acc);
                Ok((decoded, secs))
            }
            Rate::ItchBook => {
                let Workload::File(f) = self.workload else {
                    return Err(BenchError::BadArg(format!(
                        "{ITCH_BOOK} needs --input FILE"
                    )));
                };
                let run = itch_book_replay(self.python, &f.path)?;
                let result = (run.messages, run.ns as f64 / 1e9);
                let mut last = self.itch_book.borrow_mut();
                let peak = last.as_ref().map_or(0, |l| l.peak_rss_bytes);
                *last = Some(ItchBookRun {
                    peak_rss_bytes: run.peak_rss_bytes.max(peak),
                    ..run
                });
                Ok(result)
            }
            Rate::Pipeline(threading) => {
                let threading = (threading, self.feed_share);
                return pipeline_throughput(self.pinning, threading, name, self.workload);
            }
        }?;
        Ok((messages, secs, Waits::default()))
    }
}

/// Decodes and normalizes what is left of `session` on this thread (sequence numbers from 1,
/// no receive stamp), handing each envelope to `f`; returns the messages.
pub fn each_normalized(session: &mut RepeatedSession, mut f: impl FnMut(&Encoded<'_>)) -> u64 {
    let mut norm = Normalizer::new();
    let mut seq = 0u64;
    while let Some(bytes) = session.next_pass_bytes() {
        seq = normalize_into(&mut norm, seq, bytes, &mut f);
    }
    seq
}

/// Decodes and normalizes `bytes` (sequence numbers from `seq + 1`, no receive stamp),
/// handing each envelope to `f`; returns the last sequence number.
fn normalize_into(
    norm: &mut Normalizer,
    mut seq: u64,
    bytes: &[u8],
    mut f: impl FnMut(&Encoded<'_>),
) -> u64 {
    for (_, m) in Stream::new(bytes) {
        let Ok(m) = m else { continue };
        seq += 1;
        f(&norm.normalize(&m, seq, 0));
    }
    seq
}

/// One replay by the `itch-book` driver, as it printed it.
#[derive(serde::Deserialize, Debug)]
struct ItchBookRun {
    /// Messages its core decoded.
    messages: u64,
    /// The replay call, ns.
    ns: u64,
    /// The driver process's peak RSS (its `VmHWM`), bytes.
    peak_rss_bytes: u64,
    /// Its counters (`Session.stats()`): unresolved references and the like.
    #[serde(default)]
    stats: serde_json::Map<String, serde_json::Value>,
}

/// Runs the `itch-book` driver under `python` with `args`: its stdout, or why it failed.
fn itch_book_driver(python: &std::path::Path, args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(ITCH_BOOK_DRIVER)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(format!(
            "{} exited with {}: {}",
            python.display(),
            out.status,
            last.unwrap_or("no message")
        ));
    }
    String::from_utf8(out.stdout).map_err(|_| "its output is not UTF-8".into())
}

/// The `itch-book` package's version when `python` can import it, else why not.
fn itch_book_probe(python: &std::path::Path) -> Result<String, String> {
    let out = itch_book_driver(python, &["--probe".as_ref()])?;
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).map_err(|e| format!("unexpected probe output: {e}"))?;
    Ok(v["version"].as_str().unwrap_or("?").to_owned())
}

/// One timed replay of `file` by the `itch-book` package's core, in a subprocess.
fn itch_book_replay(
    python: &std::path::Path,
    file: &std::path::Path,
) -> Result<ItchBookRun, BenchError> {
    let fail = |reason: String| BenchError::Transfer {
        system: ITCH_BOOK.into(),
        reason,
    };
    let out = itch_book_driver(python, &[file.as_os_str()]).map_err(fail)?;
    let run: ItchBookRun = serde_json::from_str(out.trim())
        .map_err(|e| fail(format!("unexpected driver output ({e}): {}", out.trim())))?;
    if run.messages == 0 {
        return Err(fail(format!("no message replayed: {:?}", run.stats)));
    }
    Ok(run)
}

/// A temporary bus root in shared memory.
fn temp_dir() -> Result<tempfile::TempDir, BenchError> {
    crate::stages::temp_root().map_err(|source| BenchError::Io {
        path: PathBuf::from("<temp dir>"),
        source,
    })
}

fn internal(e: StageError) -> BenchError {
    BenchError::Internal(e.to_string())
}

/// Sets this process's peak resident set size (`VmHWM`) to its current one, so that
/// [`peak_rss_bytes`] then reads the peak from now on; false where that cannot be done
/// (not Linux, or a kernel before 4.0).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size of this process, bytes (`VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident set size of this process now, bytes (`VmRSS`).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Each pipeline's tick-to-strategy histogram, by system name.
pub type PipelineLatencies = Vec<(&'static str, hdrhistogram::Histogram<u64>)>;

/// Runs the scenario and returns the report (with `peak_rss_bytes` beside it) and the
/// pipeline's tick-to-strategy histogram.
pub fn measure(
    args: &ReplayBenchArgs,
) -> Result<(RingReport, Option<u64>, PipelineLatencies), BenchError> {
    let pinning = stage_pinning(&args.layout, &args.cpus).map_err(|e| match e {
        StageError::BadArg(m) => BenchError::BadArg(m),
        e => internal(e),
    })?;
    let (messages, latency_messages, rate) = args.sizes();
    if args.input.is_some() && args.messages.is_some() {
        return Err(BenchError::BadArg(
            "--messages does not apply with --input: every row plays the file once per round"
                .into(),
        ));
    }
    let mut results = Vec::new();
    let mut notes = Vec::new();
    let mut one_pass = Vec::new();
    let (workload, n) = match &args.input {
        None => {
            let n = passes(messages);
            let total = RepeatedSession::new(BUNDLED_SESSION, n).total_messages();
            notes.push(format!(
                "the bundled AAPL session played {n} times ({total} messages), order references shifted by pass << {REF_SHIFT}, each pass closed by deletes of its resting orders"
            ));
            RepeatedSession::new(BUNDLED_SESSION, 1)
                .read_to_end(&mut one_pass)
                .map_err(|e| BenchError::Internal(format!("session bytes: {e}")))?;
            (Workload::Bundled { passes: n }, n)
        }
        Some(path) => {
            let f = InputFile::read(path)?;
            notes.push(format!(
                "{}: {} messages ({} bytes, {} stock locates), played once per round by every row",
                path.display(),
                f.messages,
                f.bytes.len(),
                f.locates
            ));
            if f.undecoded > 0 {
                notes.push(format!(
                    "{}: {} frames not decoded (unknown type or length), skipped by the mdbus rows",
                    path.display(),
                    f.undecoded
                ));
            }
            (Workload::File(f), 1)
        }
    };
    let total = workload.total();
    let pass: &[u8] = match &workload {
        Workload::Bundled { .. } => &one_pass,
        Workload::File(f) => &f.bytes,
    };
    let mut norm = Normalizer::new();
    let envelopes: Vec<Vec<u8>> = Stream::new(pass)
        .filter_map(|(_, m)| m.ok())
        .take(CEILING_SAMPLE)
        .enumerate()
        .map(|(i, m)| norm.normalize(&m, i as u64 + 1, 0).to_vec())
        .collect();
    let mean_envelope =
        envelopes.iter().map(Vec::len).sum::<usize>() as f64 / envelopes.len().max(1) as f64;

    // Rows: the itch-book row only over a file, and only when its package is importable.
    let python: &std::path::Path = if args.python.as_os_str().is_empty() {
        "python3".as_ref()
    } else {
        &args.python
    };
    let feed_share = match args.feed_share {
        Some(n) => FeedShare::new(n).map_err(|e| BenchError::BadArg(e.to_string()))?,
        None => FeedShare::DEFAULT,
    };
    let mut systems = chosen_systems(&args.systems)?;
    let itch_book_named = args.systems.iter().any(|s| s == ITCH_BOOK);
    if args.input.is_none() {
        if itch_book_named {
            return Err(BenchError::BadArg(format!(
                "--systems: {ITCH_BOOK} needs --input FILE"
            )));
        }
        systems.retain(|(_, s)| !matches!(s, Rate::ItchBook));
    } else if systems.iter().any(|(_, s)| matches!(s, Rate::ItchBook)) {
        match itch_book_probe(python) {
            Ok(version) => notes.push(format!(
                "{ITCH_BOOK}: the itch-book {version} package's C++ core (its Python Session API, run by {}), parse and book apply for every symbol, no table, one thread; one replay of the file per round in a subprocess, timed around the replay call after an untimed warm-up",
                python.display()
            )),
            Err(why) => {
                notes.push(format!(
                    "{ITCH_BOOK}: row absent: `{} -c 'import itch_book'` failed ({why}); `pip install itch-book` to add it",
                    python.display()
                ));
                systems.retain(|(_, s)| !matches!(s, Rate::ItchBook));
            }
        }
    }
    let ctx = RateCtx {
        pinning: &pinning,
        one_pass: pass,
        envelopes: &envelopes,
        passes: n,
        workload: &workload,
        python,
        itch_book: Default::default(),
        feed_book: Default::default(),
        feed_share,
    };

    // Throughput: every system once per round, the rounds interleaved.
    let rounds = args.rounds();
    let mut samples = vec![Vec::with_capacity(rounds as usize); systems.len()];
    let mut waits = vec![Waits::default(); systems.len()];
    for r in 0..rounds as usize {
        for j in 0..systems.len() {
            let i = (r + j) % systems.len();
            let (name, system) = systems[i];
            let (messages, secs, w) = ctx.run_once(name, system)?;
            samples[i].push(messages as f64 / secs.max(1e-9));
            waits[i].feed += w.feed;
            waits[i].book += w.book;
            waits[i].book_dry += w.book_dry;
            waits[i].strategy_dry += w.strategy_dry;
            waits[i].messages += w.messages;
        }
    }
    let medians: Vec<f64> = samples.iter().map(|v| median(v)).collect();
    if rounds > 1 {
        let spread: Vec<String> = systems
            .iter()
            .zip(&samples)
            .map(|((name, _), v)| {
                let (lo, hi) = v
                    .iter()
                    .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
                format!("{name} {:.2}-{:.2} M", lo / 1e6, hi / 1e6)
            })
            .collect();
        notes.push(format!(
            "throughput: the median of {rounds} interleaved rounds; range over the rounds: {}",
            spread.join(", ")
        ));
    }
    if let Workload::File(_) = &workload {
        notes.push(format!(
            "ring-ceiling: the envelopes of the file's first {} messages (mean {mean_envelope:.0} bytes), cycled to {total}, published on cpu {} and read on cpu {}, nothing else done",
            envelopes.len(),
            pinning.cpu(0),
            pinning.cpu(1)
        ));
    } else {
        notes.push(format!(
            "ring-ceiling: the session's envelopes (mean {mean_envelope:.0} bytes) published on cpu {} and read on cpu {}, nothing else done",
            pinning.cpu(0),
            pinning.cpu(1)
        ));
    }
    for (i, (name, system)) in systems.iter().enumerate() {
        if !matches!(system, Rate::Pipeline(_)) {
            results.push(rate_result(name, workload.msg_bytes(), medians[i])?);
        }
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let fb = ctx.feed_book.get();
    if fb.books > 0
        && let Workload::File(f) = &workload
    {
        let file = f.bytes.len() as u64;
        notes.push(format!(
            "mdbus-feed+book: its own {} {:.1} MiB: the file {:.1} MiB (held in memory, as itch-book maps it) + {:.1} MiB of resident memory gained {} its book service was made and ran (its books hold {:.1} MiB at the end; the order table grew {} times{})",
            if fb.peak { "peak footprint" } else { "footprint" },
            mib(file + fb.rss_growth),
            mib(file),
            mib(fb.rss_growth),
            if fb.peak { "at most while" } else { "while" },
            mib(fb.books),
            fb.growths,
            if fb.growths > 0 {
                format!(
                    ", each holding up the thread at most {:.1} ms",
                    fb.growth_max_ns as f64 / 1e6
                )
            } else {
                String::new()
            }
        ));
    }
    if let Some(run) = ctx.itch_book.borrow().as_ref() {
        let stat = |k: &str| ctx_stat(&run.stats, k);
        notes.push(format!(
            "{ITCH_BOOK}: {} messages, {} unresolved references, {} live orders at the end; its process's peak RSS {:.1} MiB (the file mapped)",
            run.messages,
            stat("missing_ref"),
            stat("live_orders"),
            run.peak_rss_bytes as f64 / (1 << 20) as f64
        ));
        if run.messages != total {
            notes.push(format!(
                "{ITCH_BOOK}: counts {} messages where the mdbus rows decode {total}",
                run.messages
            ));
        }
    }

    // Latency: each pipeline once more, paced.
    let mut latencies = Vec::new();
    let mut pinned = true;
    let mut best = 0f64;
    for (i, (name, system)) in systems.iter().enumerate() {
        let Rate::Pipeline(threading) = *system else {
            continue;
        };
        let (mut result, paced) = pipeline_latency(
            &pinning,
            (threading, feed_share),
            name,
            &workload,
            latency_messages,
            rate,
        )?;
        result.msgs_per_sec = Some(medians[i]);
        if paced.feed.max_behind_ns > 1_000_000 {
            notes.push(format!(
                "{name}: the paced feed fell up to {:.1} ms behind its schedule (latency measured from the decode stamp)",
                paced.feed.max_behind_ns as f64 / 1e6
            ));
        }
        let w = waits[i];
        let per_k = |n: u64| n as f64 * 1e3 / w.messages.max(1) as f64;
        if threading == Threading::BookOnFeed {
            // The feed handler publishes the book service's outputs itself.
            notes.push(format!(
                "{name}: in the throughput runs the feed handler found the strategy's inputs (the book service's outputs, published on its thread) full {:.2} times per thousand messages, and the strategy found them empty {:.2} times (a thread that waits is not the bottleneck)",
                per_k(w.feed + w.book),
                per_k(w.strategy_dry)
            ));
        } else if threading == Threading::SplitBooks {
            notes.push(format!(
                "{name}: in the throughput runs the feed handler found its ring full {:.2} times per thousand messages, the two shares' book services found their outputs full {:.2} times, and the second share found its input empty {:.2} times (a thread that waits is not the bottleneck)",
                per_k(w.feed),
                per_k(w.book),
                per_k(w.book_dry)
            ));
        } else {
            notes.push(format!(
                "{name}: in the throughput runs the feed handler found the book service's input full {:.2} times per thousand messages, the book service found its outputs full {:.2} times and its input empty {:.2} times (a thread that waits is not the bottleneck)",
                per_k(w.feed),
                per_k(w.book),
                per_k(w.book_dry)
            ));
        }
        let cpus = thread_cpus(&pinning, threading);
        if share_a_cpu(&cpus) {
            notes.push(format!(
                "{name}: threads share cpus ({}): waits spin, then yield",
                thread_cpus_text((threading, feed_share), &cpus)
            ));
        } else {
            notes.push(format!(
                "{name}: {}",
                thread_cpus_text((threading, feed_share), &cpus)
            ));
        }
        pinned &= paced.pinned;
        best = best.max(medians[i]);
        latencies.push((*name, paced.latency));
        results.push(result);
    }
    let (feed_cpu, book_cpu, strategy_cpu) = (pinning.cpu(0), pinning.cpu(1), pinning.cpu(2));
    notes.extend(pinning.describe());
    notes.extend(pinning.warnings());
    if !pinned {
        notes.push("not every thread could be pinned".into());
    }
    // The ratios, when the run measured both sides.
    let median_of = |wanted: fn(&Rate) -> bool| {
        systems
            .iter()
            .position(|(_, s)| wanted(s))
            .map(|i| medians[i])
    };
    let baselines = [
        ("itchy parse-only", median_of(|s| matches!(s, Rate::Itchy))),
        ("ring ceiling", median_of(|s| matches!(s, Rate::Ceiling))),
    ];
    for (what, base) in baselines {
        if let Some(base) = base
            && best > 0.0
        {
            notes.push(format!(
                "best pipeline / {what} throughput: {:.2}",
                best / base.max(1.0)
            ));
        }
    }
    if let Some(theirs) = median_of(|s| matches!(s, Rate::ItchBook)) {
        let ours = [
            ("mdbus-decode", median_of(|s| matches!(s, Rate::Decode))),
            (
                "mdbus-feed+book",
                median_of(|s| matches!(s, Rate::FeedBook)),
            ),
            (
                "mdbus-decode+book",
                median_of(|s| matches!(s, Rate::DecodeBook)),
            ),
            ("best pipeline", (best > 0.0).then_some(best)),
        ];
        for (what, rate) in ours {
            if let Some(rate) = rate {
                notes.push(format!(
                    "{what} / {ITCH_BOOK} throughput: {:.2}",
                    rate / theirs.max(1.0)
                ));
            }
        }
    }
    let rss = peak_rss_bytes();
    if let Some(b) = rss {
        notes.push(format!(
            "peak RSS {:.1} MiB (VmHWM)",
            b as f64 / (1 << 20) as f64
        ));
    }
    let clock = if host::tsc_invariant() {
        "tsc"
    } else {
        "monotonic"
    };
    let report = RingReport {
        scenario: "replay".into(),
        results,
        host: host::collect(&[feed_cpu, book_cpu, strategy_cpu], pinned, clock),
        layout: pinning.layout_use(),
        params: RingParams {
            mode: "pipeline".into(),
            msg_bytes: workload.msg_bytes(),
            count: latencies.first().map_or(0, |(_, h)| h.len()),
            warmup: 0,
            rounds,
            rate: (rate > 0).then_some(rate),
            throughput_count: total,
            batch: 1,
            capacity_bytes: 16 << 20,
            slots: 0,
            shm_mode: "lossless".into(),
            systems: systems.iter().map(|(name, _)| (*name).into()).collect(),
        },
        notes,
    };
    Ok((report, rss, latencies))
}

/// A counter of the `itch-book` run's stats, as text ("?" when absent).
fn ctx_stat(stats: &serde_json::Map<String, serde_json::Value>, key: &str) -> String {
    stats
        .get(key)
        .map_or_else(|| "?".into(), serde_json::Value::to_string)
}

/// The stream's own ceiling on the pipeline's first hop: the session's normalized envelopes,
/// encoded beforehand, published on the feed handler's cpu and read (typed, trusted: each
/// envelope's header and event type) on the book builder's, with no other work on either
/// side; the feed stream's ring (16 MiB, lossless), batches of 64 as the book service reads.
/// A consumer that has caught up waits [`CEILING_BACKOFF`] before it reads on, so that it reads
/// what the producer wrote meanwhile in batches: one that reads on at once pulls each line
/// over while the producer is still writing it, and the hop then carries a line transfer's
/// worth a message (about 4 M msgs/s on a 2-vCPU VM, against 77-86 M with the wait).
/// No pipeline can carry the stream faster between these two cpus: when the pipeline rows
/// come close to it, the cost is moving the bytes from one core's cache to the other's, not
/// the work of the stages. Returns (envelopes carried, seconds).
fn ring_ceiling(
    pinning: &Pinning,
    envelopes: &[Vec<u8>],
    total: u64,
) -> Result<(u64, f64), BenchError> {
    use mdbus_bus::{PublishError, SubscribeOptions, Trust, WaitStrategy};
    use std::sync::Barrier;
    use std::time::Duration;

    let root = temp_dir()?;
    let bus =
        mdbus_bus::Bus::with_root(root.path()).map_err(|e| BenchError::Internal(e.to_string()))?;
    let ring = crate::stages::feed_ring();
    let bus_err = |e: mdbus_bus::BusError| BenchError::Internal(e.to_string());
    let publisher = bus.publisher("ceiling", &ring).map_err(bus_err)?;
    // SAFETY: the stream is written only by `publisher` below, with envelopes built by the
    // normalizer's `schema::Encoder`.
    let trust = unsafe { Trust::publisher() };
    let options = SubscribeOptions {
        trust,
        ..SubscribeOptions::default()
    };
    let subscriber = bus.subscriber("ceiling", &options).map_err(bus_err)?;
    let shared_cpu = pinning.cpu(0) == pinning.cpu(1);
    let barrier = &Barrier::new(2);
    let (started, ended) = std::thread::scope(|s| {
        // Each thread owns its end: a producer that fails drops its publisher, which closes
        // the stream and ends the consumer's wait.
        let producer = s.spawn(move || {
            let mut publisher = publisher;
            pinning.enter(0);
            barrier.wait();
            let t0 = Instant::now();
            if !envelopes.is_empty() {
                for e in envelopes
                    .iter()
                    .cycle()
                    .take(usize::try_from(total).unwrap_or(usize::MAX))
                {
                    let mut spins = 0u32;
                    loop {
                        match publisher.publish_envelope(e) {
                            Ok(_) => break,
                            Err(PublishError::BackPressured) => {
                                spins += 1;
                                if shared_cpu || spins > 1 << 20 {
                                    std::thread::yield_now();
                                } else {
                                    std::hint::spin_loop();
                                }
                            }
                            Err(e) => return Err(BenchError::Internal(e.to_string())),
                        }
                    }
                }
            }
            Ok(t0)
        });
        let consumer = s.spawn(move || {
            let mut subscriber = subscriber;
            pinning.enter(1);
            // Leaves the producer to get a batch ahead (about 150 envelopes at its rate) after
            // finding nothing new.
            let wait = if shared_cpu {
                WaitStrategy::SpinThenYield { spins: 10 }
            } else {
                WaitStrategy::Batching {
                    pause: WaitStrategy::BATCH_PAUSE,
                }
            };
            barrier.wait();
            let (mut n, mut acc) = (0u64, 0u64);
            while n < total {
                // Counted in the callback: a batch that reaches the closed end of the stream
                // returns `Closed` after delivering what it read.
                let polled = subscriber.poll_event_batch(64, |ev| {
                    let env = ev.envelope();
                    acc ^= env.header().seq() ^ u64::from(env.event_type().0);
                    n += 1;
                });
                match polled {
                    Ok(0) => {
                        let _ = subscriber.wait(&wait, Some(Duration::from_secs(10)));
                    }
                    Ok(_) => {}
                    Err(e) if n < total => {
                        return Err(BenchError::Internal(format!(
                            "ring ceiling: {e} after {n} of {total} envelopes"
                        )));
                    }
                    Err(_) => {}
                }
            }
            black_box(acc);
            Ok(Instant::now())
        });
        let join = |r: std::thread::Result<Result<Instant, BenchError>>| {
            r.map_err(|_| BenchError::Internal("a ring ceiling thread panicked".into()))?
        };
        Ok::<_, BenchError>((join(producer.join())?, join(consumer.join())?))
    })?;
    Ok((total, ended.duration_since(started).as_secs_f64()))
}

/// The pipelines measured: each stage on its own thread, then the book builder and the
/// strategy sharing one, then the strategy sharing the feed handler's, then the books built
/// on the feed handler's, then the books split between the two threads.
const PIPELINES: [(&str, Threading); 5] = [
    ("mdbus-pipeline", Threading::Dedicated),
    ("mdbus-pipeline-shared", Threading::Shared),
    ("mdbus-pipeline-on-feed", Threading::StrategyOnFeed),
    ("mdbus-pipeline-book-on-feed", Threading::BookOnFeed),
    ("mdbus-pipeline-split-books", Threading::SplitBooks),
];

fn thread_cpus_text((threading, feed_share): (Threading, FeedShare), cpus: &[usize]) -> String {
    match (threading, cpus) {
        (Threading::Dedicated, [f, b, s]) => format!("feed {f}, book {b}, strategy {s}"),
        (Threading::StrategyOnFeed, [f, b, ..]) => {
            format!("feed and strategy on one thread on {f}, book {b}")
        }
        (Threading::BookOnFeed, [f, st, ..]) => {
            format!("feed and book on one thread on {f}, strategy {st}")
        }
        (Threading::SplitBooks, [f, b, ..]) => format!(
            "feed and the books of {}/64 of the instruments on one thread on {f}, the other books and strategy on one thread on {b}",
            feed_share.get()
        ),
        (_, [f, b, ..]) => format!("feed {f}, book and strategy on one thread on {b}"),
        _ => format!("{cpus:?}"),
    }
}

/// One pipeline's throughput run: `passes` of the session as fast as it goes, checked
/// (every message reached the book builder, books consistent).
fn pipeline_throughput(
    pinning: &Pinning,
    threading: (Threading, FeedShare),
    name: &str,
    workload: &Workload,
) -> Result<(u64, f64, Waits), BenchError> {
    let total = workload.total();
    let (input, reader) = workload.reader();
    let run = run_pipeline(
        Input::Reader(input, reader),
        Speed::Max,
        workload.books(),
        pinning,
        threading,
        // The latency run measures latency; this one, like itch-book's, measures nothing
        // per message.
        StrategyOutputs {
            show: 0,
            latency: false,
        },
    )
    .map_err(internal)?;
    let bundled = matches!(workload, Workload::Bundled { .. });
    // Frames a file holds that do not decode may not be published; what is, must arrive.
    if (bundled && run.feed.published != total) || run.book.messages != run.feed.published {
        return Err(BenchError::Transfer {
            system: name.into(),
            reason: format!(
                "{total} messages sent, {} published, {} reached the book builder",
                run.feed.published, run.book.messages
            ),
        });
    }
    let counters = run.summary.counters;
    // A file is what it is (it may start mid-session); the repeated session must be clean.
    if bundled && (counters.unknown_refs != 0 || counters.duplicate_adds != 0) {
        return Err(BenchError::Transfer {
            system: name.into(),
            reason: format!(
                "books inconsistent: {} unknown references, {} duplicate adds",
                counters.unknown_refs, counters.duplicate_adds
            ),
        });
    }
    let waits = Waits {
        feed: run.feed.back_pressured,
        book: run.book.back_pressured,
        book_dry: run.book.idle_polls,
        strategy_dry: run.strategy_idle,
        messages: run.feed.published,
    };
    Ok((run.feed.published, run.elapsed_ns as f64 / 1e9, waits))
}

/// One pipeline's latency run: `latency_messages` at `rate` msgs/s. Returns the system's row
/// (without its throughput) and the run.
fn pipeline_latency(
    pinning: &Pinning,
    threading: (Threading, FeedShare),
    name: &str,
    workload: &Workload,
    latency_messages: u64,
    rate: u64,
) -> Result<(SystemResult, PipelineRun), BenchError> {
    let speed = if rate == 0 {
        Speed::Max
    } else {
        Speed::Rate(rate)
    };
    let (input, reader) = workload.latency_reader(latency_messages);
    let paced = run_pipeline(
        Input::Reader(input, reader),
        speed,
        workload.books(),
        pinning,
        threading,
        StrategyOutputs {
            show: 0,
            latency: true,
        },
    )
    .map_err(internal)?;
    let result = SystemResult::from_histogram(name, workload.msg_bytes(), &paced.latency);
    Ok((result, paced))
}

/// Runs `mdbus bench replay`, writing the table or the JSON document to `out`.
pub fn run(args: &ReplayBenchArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    let (report, rss, latency) = measure(args)?;
    let io = |source| BenchError::Io {
        path: PathBuf::from("<stdout>"),
        source,
    };
    let file_err = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| BenchError::Io { path, source }
    };
    let mut written = Vec::new();
    if let Some(dir) = &args.hgrm {
        std::fs::create_dir_all(dir).map_err(file_err(dir))?;
        for (name, h) in &latency {
            let path = dir.join(format!("{name}.hgrm"));
            std::fs::write(&path, crate::bench::report::hgrm(h)).map_err(file_err(&path))?;
            written.push(path);
        }
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "tick-to-strategy latency, replay paced at {} msgs/s, {}",
            report
                .params
                .rate
                .map_or_else(|| "max".into(), |r| r.to_string()),
            report.host.cpu_model
        );
        let series: Vec<(&str, &hdrhistogram::Histogram<u64>)> =
            latency.iter().map(|(n, h)| (*n, h)).collect();
        crate::bench::plot::write_svg(path, &title, &series)?;
        written.push(path.clone());
    }
    for p in &written {
        tracing::info!("wrote {}", p.display());
    }
    if args.json {
        let mut v = serde_json::to_value(&report)
            .map_err(|e| BenchError::Internal(format!("cannot serialise: {e}")))?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("peak_rss_bytes".into(), serde_json::json!(rss));
        }
        writeln!(out, "{v}").map_err(io)?;
    } else {
        out.write_all(table(&report, rss).as_bytes()).map_err(io)?;
    }
    Ok(())
}

fn rate(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |r| format!("{:.2} M", r / 1e6))
}

fn ns(x: u64) -> String {
    if x >= 1_000_000 {
        format!("{:.2} ms", x as f64 / 1e6)
    } else if x >= 1_000 {
        format!("{:.1} us", x as f64 / 1e3)
    } else {
        format!("{x} ns")
    }
}

/// The readable report.
pub fn table(r: &RingReport, rss: Option<u64>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let p = &r.params;
    let _ = writeln!(
        s,
        "replay: {} messages, file bytes -> strategy callback; latency from the decode stamp to the callback, paced at {} msgs/s",
        p.throughput_count,
        p.rate.map_or_else(|| "max".into(), |x| x.to_string())
    );
    let h = &r.host;
    let _ = writeln!(
        s,
        "host: {} | {} cpus | cpus used {:?} | clock {}",
        h.cpu_model, h.cpus_available, h.cores_used, h.clock
    );
    let _ = writeln!(
        s,
        "{:<16} {:>10} {:>9} {:>10} {:>10} {:>10} {:>10}",
        "system", "msgs/s", "samples", "p50", "p99", "p99.9", "max"
    );
    for x in &r.results {
        let lat = |v: u64| if x.count == 0 { "-".into() } else { ns(v) };
        let _ = writeln!(
            s,
            "{:<16} {:>10} {:>9} {:>10} {:>10} {:>10} {:>10}",
            x.name,
            rate(x.msgs_per_sec),
            x.count,
            lat(x.p50_ns),
            lat(x.p99_ns),
            lat(x.p999_ns),
            lat(x.max_ns)
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    if rss.is_none() {
        let _ = writeln!(s, "note: peak RSS unavailable (no /proc/self/status)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdbus_feed_handlers::book::{BookBuilder, OrderEvent};

    #[test]
    fn repeated_passes_keep_the_books_consistent() {
        let session = RepeatedSession::new(BUNDLED_SESSION, 3);
        // The session leaves 215 orders resting: each pass deletes them at its end.
        assert_eq!(session.pass_messages(), 10_000 + 215);
        let total = session.total_messages();
        let mut bytes = Vec::new();
        let mut session = session;
        session.read_to_end(&mut bytes).unwrap();
        let mut b = BookBuilder::new(books()).unwrap();
        let mut n = 0;
        let mut most_live = 0;
        for (_, m) in Stream::new(&bytes) {
            let m = m.unwrap();
            n += 1;
            if let Some(ev) = OrderEvent::from_itch(&m) {
                b.apply(&ev, &mut |_| {});
            }
            most_live = most_live.max(b.live_orders());
        }
        assert_eq!(n, total);
        let c = b.counters();
        assert_eq!((c.unknown_refs, c.duplicate_adds), (0, 0));
        assert_eq!(b.resting_orders(13), 0);
        assert_eq!(b.stats(13).unwrap().prints, 3 * 1_089);
        assert!(most_live < books().max_orders);
    }

    #[test]
    fn input_file_prefixes_end_on_frame_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aapl.itch");
        std::fs::write(&path, BUNDLED_SESSION).unwrap();
        let f = InputFile::read(&path).unwrap();
        assert_eq!((f.messages, f.undecoded, f.locates), (10_000, 0, 1));
        assert_eq!(Stream::new(f.prefix(3)).count(), 3);
        assert_eq!(f.prefix(0), b"");
        assert_eq!(f.prefix(10_000), BUNDLED_SESSION);
        assert_eq!(f.prefix(u64::MAX), BUNDLED_SESSION);
        // The latency reader stops at the prefix, the throughput reader at the end.
        let w = Workload::File(f);
        let mut bytes = Vec::new();
        w.latency_reader(3).1.read_to_end(&mut bytes).unwrap();
        assert_eq!(Stream::new(&bytes).count(), 3);
        bytes.clear();
        w.reader().1.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, BUNDLED_SESSION);
        assert_eq!(w.total(), 10_000);
        assert!(w.books().max_orders >= 4_760, "{:?}", w.books());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn rounds_report_the_median_and_the_range() {
        let args = ReplayBenchArgs {
            quick: true,
            json: true,
            rounds: Some(2),
            latency_messages: Some(10_000),
            ..ReplayBenchArgs::default()
        };
        let mut out = Vec::new();
        run(&args, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["params"]["rounds"], 2);
        let notes = notes_of(&v);
        let spread = notes
            .iter()
            .find(|n| n.starts_with("throughput: the median of 2 interleaved rounds"))
            .expect("the rounds' note");
        for system in ["itchy-parse", "ring-ceiling", "mdbus-pipeline-shared"] {
            assert!(spread.contains(system), "{spread}");
        }
    }

    /// The notes of a JSON report.
    fn notes_of(v: &serde_json::Value) -> Vec<&str> {
        v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect()
    }

    /// The `name` of every row of a JSON report.
    fn row_names(v: &serde_json::Value) -> Vec<&str> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn systems_picks_rows_in_table_order_and_refuses_unknown_names() {
        let args = ReplayBenchArgs {
            quick: true,
            json: true,
            systems: vec!["mdbus-pipeline-on-feed".into(), "itchy-parse".into()],
            ..ReplayBenchArgs::default()
        };
        let mut out = Vec::new();
        run(&args, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let names = row_names(&v);
        assert_eq!(names, ["itchy-parse", "mdbus-pipeline-on-feed"]);
        assert_eq!(v["params"]["systems"], serde_json::json!(names));
        let notes = v["notes"].to_string();
        assert!(notes.contains("itchy parse-only throughput"), "{notes}");
        assert!(!notes.contains("ring ceiling throughput"), "{notes}");

        let bad = ReplayBenchArgs {
            systems: vec!["mdbus-pipeline-offeed".into()],
            ..args
        };
        let Err(BenchError::BadArg(m)) = measure(&bad) else {
            panic!("an unknown row is refused");
        };
        assert!(
            m.contains("\"mdbus-pipeline-offeed\"") && m.contains("mdbus-pipeline-on-feed"),
            "{m}"
        );
    }

    #[test]
    fn tiny_run_reports_every_system() {
        let args = ReplayBenchArgs {
            quick: true,
            json: true,
            ..ReplayBenchArgs::default()
        };
        let mut out = Vec::new();
        run(&args, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["scenario"], "replay");
        let names = row_names(&v);
        assert_eq!(
            names,
            [
                "itchy-parse",
                "mdbus-decode",
                "ring-ceiling",
                "mdbus-feed",
                "mdbus-feed+book",
                "mdbus-decode+book",
                "mdbus-pipeline",
                "mdbus-pipeline-shared",
                "mdbus-pipeline-on-feed",
                "mdbus-pipeline-book-on-feed",
                "mdbus-pipeline-split-books"
            ]
        );
        for r in &v["results"].as_array().unwrap()[..6] {
            assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        }
        for p in &v["results"].as_array().unwrap()[6..] {
            assert!(p["count"].as_u64().unwrap() > 0, "{p}");
            assert!(p["msgs_per_sec"].as_f64().unwrap() > 0.0, "{p}");
            assert!(p["p50_ns"].as_u64().unwrap() <= p["max_ns"].as_u64().unwrap());
        }
        assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0);
        let notes = notes_of(&v);
        assert!(!notes.iter().any(|n| n.contains("inconsistent")));
        // Every pipeline says which thread waited for which.
        for name in &names[6..] {
            let waits = format!("{name}: in the throughput runs the feed handler found");
            assert_eq!(
                notes.iter().filter(|n| n.starts_with(&waits)).count(),
                1,
                "{notes:?}"
            );
        }
    }
}
