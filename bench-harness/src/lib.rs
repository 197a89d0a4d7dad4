//! The mdbus benchmark harness: latency and throughput scenarios, each beside its floor and the
//! peers measured in the same run.
//!
//! - [`bench`](mod@bench): the scenarios behind `mdbus bench` (ring, udp, replay, synth, all, compare),
//!   their reports and plots.
//! - [`stages`]: the three-stage pipeline (feed handler, book service, strategy, each pinned)
//!   that `mdbus demo` shows and `mdbus bench replay` measures.
//! - [`pinning`]: where each thread of a role runs (`--cpus`, `--layout`).
//! - [`units`]: durations and sizes as the command line writes them.
//!
//! The `mdbus` command-line tool is this crate's binary: `src/cli/`, one file per verb.

pub mod bench;
pub mod pinning;
pub mod stages;
pub mod units;
