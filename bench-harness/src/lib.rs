//! The mdbus benchmark harness and command-line tool.
//!
//! `bench` holds the latency and throughput scenarios; the `mdbus` binary (`src/main.rs`)
//! wires them, with the other subcommands, into one command-line entry point.

pub mod bench;
pub mod bench_replay;
pub mod demo;
pub mod feed_cmd;
pub mod net_cmd;
pub mod pinning;
pub mod replay_cmd;
