//! Benchmark scenarios: `mdbus bench <scenario>`.
//!
//! - `ring`: one-way latency of small messages between two pinned threads, through the
//!   physical floor (a cache-line ping-pong), the mdbus shared-memory ring, `rtrb` and
//!   `crossbeam-channel`, all measured by the same loops in the same run (ping-pong RTT/2 or a
//!   fixed-rate stream timed from each message's intended send time), then streaming throughput.
//! - `synth`: writes a synthetic full-day ITCH 5.0 file to replay (see [`synth`]).
//! - `all`: every scenario with its defaults (or `--quick`), one combined JSON report.
//! - `compare`: per-system ratios between two `--json` reports (or two `all` reports,
//!   scenario by scenario).
//!
//! Timing uses the TSC (`quanta`) where it is invariant, latencies go into HdrHistograms, and
//! every figure is reported beside the floor measured in the same run. See `BENCHMARKS.md`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::units::DurationArg;

pub mod all;
pub mod clock;
pub mod compare;
pub mod engine;
pub mod host;
pub mod plot;
pub mod replay;
pub mod report;
pub mod ring;
pub mod shm;
pub mod synth;
pub mod transport;
pub mod udp;

pub use compare::{Comparison, compare};
pub use report::{RingReport, SystemResult};
pub use ring::{RingArgs, System};

/// `mdbus bench`: run a benchmark scenario.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The scenario.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The benchmark scenarios.
#[derive(clap::Subcommand, Debug)]
pub enum Scenario {
    /// One-way latency and throughput of small messages between two pinned threads: the
    /// floor, mdbus-shm, rtrb, disruptor, iceoryx2 (with the `peers-iceoryx2` feature) and
    /// crossbeam-channel, interleaved in rounds; each message read whole and checked.
    Ring(RingArgs),
    /// End-to-end replay of the real AAPL session or an ITCH file (decode, normalize,
    /// publish, book, strategy): throughput and tick-to-strategy latency, beside itchy's
    /// parse-only rate and, where it is installed, itch-book.
    Replay(crate::bench::replay::ReplayBenchArgs),
    /// Write a synthetic full-day ITCH 5.0 session (Zipf activity over a directory of
    /// instruments, the real AAPL sample's message mix, consistent references, uncrossed
    /// books), deterministic for a seed.
    Synth(synth::SynthArgs),
    /// The network transport: one-way latency shm -> sender -> UDP multicast -> receiver ->
    /// shm beside a raw UDP ping-pong floor, throughput, and recovery latency under loss.
    Udp(udp::UdpArgs),
    /// Per-system ratios B/A (each percentile and throughput) of two `--json` reports; of two
    /// `bench all --json` reports, scenario by scenario.
    Compare(CompareArgs),
    /// Every scenario with its defaults (or `--quick`), one after the other: their tables, or
    /// one JSON object with each scenario's report under its name and the host facts once.
    All(all::AllArgs),
}

/// `mdbus bench compare A.json B.json`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// The baseline report.
    pub a: PathBuf,
    /// The report compared with it.
    pub b: PathBuf,
    /// Print the comparison as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// Takes the old spellings (`--stall-secs`, `bench udp --nak-delay-us`) into the current
    /// flags, warning about each.
    pub fn resolve(&mut self) {
        let (which, stall, old_stall) = match &mut self.scenario {
            Scenario::Ring(r) => ("ring", &mut r.stall_timeout, &mut r.stall_secs),
            Scenario::Udp(u) => {
                if let Some(us) = u.nak_delay_us.take() {
                    u.nak_delay = DurationArg(Duration::from_micros(us));
                    deprecated(
                        "udp",
                        "--nak-delay-us",
                        &format!("--nak-delay {}", u.nak_delay),
                    );
                }
                ("udp", &mut u.stall_timeout, &mut u.stall_secs)
            }
            _ => return,
        };
        if let Some(secs) = old_stall.take() {
            *stall = DurationArg(Duration::from_secs(secs));
            deprecated(which, "--stall-secs", &format!("--stall-timeout {stall}"));
        }
    }
}

/// Warns that `mdbus bench which`'s `old` flag is deprecated in favour of `new`.
fn deprecated(which: &str, old: &str, new: &str) {
    tracing::warn!("mdbus bench {which}: {old} is deprecated and will be removed: use {new}");
}

/// What can go wrong in a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A bad command-line value.
    #[error("{0}")]
    BadArg(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A report file given to `compare` is not a ring report.
    #[error("{path}: not a ring report: {reason}")]
    BadReport {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The ring under test could not be set up.
    #[error("mdbus-shm setup in {path}: {reason}")]
    ShmSetup {
        /// The segment or folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A channel failed while being measured (lost, reordered or short messages, closed).
    #[error("{system}: {reason}")]
    Transfer {
        /// The system under test.
        system: String,
        /// What happened.
        reason: String,
    },
    /// A channel made no progress for too long.
    #[error("no progress for {secs} s while {what}")]
    Stalled {
        /// What the thread was doing.
        what: &'static str,
        /// The limit.
        secs: u64,
    },
    /// This thread stopped because its partner failed (the partner's error is reported).
    #[error("stopped because the other thread failed")]
    Aborted,
    /// The chart could not be drawn.
    #[error("{path}: cannot draw the chart: {reason}")]
    Plot {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A bug in the harness.
    #[error("internal error: {0}")]
    Internal(String),
    /// A scenario of `bench all` failed.
    #[error("bench {scenario}: {error}")]
    InScenario {
        /// The scenario.
        scenario: String,
        /// Its error.
        error: Box<BenchError>,
    },
}

/// Runs a scenario, printing its result on stdout.
pub fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    run_to(args, &mut lock)
}

/// Runs a scenario, writing what would go to stdout into `out`.
pub fn run_to(args: &BenchArgs, out: &mut dyn Write) -> Result<(), BenchError> {
    match &args.scenario {
        Scenario::Ring(r) => ring::run(r, out),
        Scenario::Replay(r) => crate::bench::replay::run(r, out),
        Scenario::Udp(u) => udp::run(u, out),
        Scenario::Synth(s) => synth::run(s, out),
        Scenario::All(a) => all::run(a, out),
        Scenario::Compare(c) => {
            let cmp = compare::compare_any(&c.a, &c.b)?;
            let text = if c.json {
                let mut t = serde_json::to_string(&cmp)
                    .map_err(|e| BenchError::Internal(format!("cannot serialise: {e}")))?;
                t.push('\n');
                t
            } else {
                cmp.table()
            };
            out.write_all(text.as_bytes())
                .map_err(|source| BenchError::Io {
                    path: PathBuf::from("<stdout>"),
                    source,
                })
        }
    }
}
