//! The `mdbus` command line: one file per verb, the shared pieces in [`common`].
//!
//! | verb | file |
//! |---|---|
//! | `replay`, `record` | [`replay`] |
//! | `feed` | [`feed`] |
//! | `send` | [`send`] |
//! | `recv` | [`recv`] |
//! | `stat` | [`stat`] |
//! | `demo` | [`demo`] |
//! | `exchange` | [`exchange`] |
//! | `tune check`, `tune plan` | [`tune`] |
//! | `streams` | [`streams`] |
//! | `consolidate` | [`consolidate`] |
//! | `bench ...` | `mdbus_bench_harness::bench` |
//! | `config example` | [`config`] |
//! | `completions`, `manpage` | here: clap writes them from the same definitions |
//!
//! Diagnostics (notices, warnings) are `tracing` events on stderr, with a timestamp and a
//! level: `info` and above by default, `-v` adds `debug` (`-vv` `trace`), `-q` leaves errors
//! only (`-qq` nothing); without either, `MDBUS_LOG` (else `RUST_LOG`) is an env-filter
//! directive such as `warn` or `debug`. Reports that users or scripts read (JSON, tables,
//! end-of-run summaries) are printed as they were, not through the logger.

use std::error::Error;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod common;
mod config;
mod consolidate;
mod demo;
mod exchange;
mod feed;
mod metrics;
mod recv;
mod replay;
mod send;
mod stat;
mod streams;
mod tune;

/// mdbus: a low-latency market-data bus over shared-memory rings.
///
/// Feed handlers decode Nasdaq TotalView-ITCH 5.0 and publish normalized FlatBuffers
/// messages into shared-memory rings; strategies read them zero-copy.
#[derive(Parser, Debug)]
#[command(
    name = "mdbus",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("MDBUS_GIT_REV"), ")"),
    propagate_version = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More diagnostics on stderr: -v debug, -vv trace.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, display_order = 900)]
    verbose: u8,
    /// Fewer diagnostics on stderr: -q errors only (no warnings), -qq none.
    #[arg(
        short,
        long,
        global = true,
        action = clap::ArgAction::Count,
        conflicts_with = "verbose",
        display_order = 900
    )]
    quiet: u8,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a latency or throughput benchmark, e.g. `mdbus bench ring --json`.
    Bench(mdbus_bench_harness::bench::BenchArgs),
    /// Check how well this host is tuned for low latency, or plan its core layout.
    #[command(subcommand)]
    Tune(tune::TuneCommand),
    /// List the streams of a bus root, or remove those whose publisher is gone.
    Streams(streams::StreamsArgs),
    /// Replay a captured session (ITCH file, pcap/pcapng of MoldUDP64, or a recording) onto a
    /// bus stream, e.g. `mdbus replay --book-summary codecs/testdata/itch/aapl-2020-01-30-10k.itch`.
    Replay(replay::ReplayArgs),
    /// Receive a live ITCH 5.0 feed (MoldUDP64 over UDP, lines A and B, gap recovery) onto a
    /// bus stream, e.g. `mdbus feed --group 233.54.12.111:26477 --request-server
    /// 206.200.43.80:18000 --book`.
    Feed(feed::FeedArgs),
    /// Record a bus stream to a file that `mdbus replay` plays back.
    Record(replay::RecordArgs),
    /// Run a real Nasdaq session through feed handler, book builder and strategy, each on its
    /// own core, and show what happened and the tick-to-strategy latency.
    Demo(demo::DemoArgs),
    /// Multicast a local stream to other hosts (MoldUDP64 over UDP) and answer their
    /// re-requests, e.g. `mdbus send --stream nasdaq.itch --group 239.255.0.1:31000`.
    Send(send::SendArgs),
    /// Receive a stream sent by `mdbus send` into a local stream, recovering lost packets,
    /// e.g. `mdbus recv --stream nasdaq.itch --group 239.255.0.1:31000 --summary`.
    Recv(recv::RecvArgs),
    /// Show the live counters of every role (feed, replay, book, record, send, recv, exchange)
    /// under a bus root, e.g. `mdbus stat --watch 1`.
    Stat(stat::StatArgs),
    /// Play a capture as a live Nasdaq-style feed (MoldUDP64 of ITCH 5.0 on a multicast
    /// group, heartbeats, end of session, a re-request server), e.g. `mdbus exchange
    /// codecs/testdata/itch/aapl-2020-01-30-10k.itch --group 239.255.0.2:26400 --speed 20000/s`.
    Exchange(exchange::ExchangeArgs),
    /// Merge several venues' book streams into one consolidated top of book per symbol, e.g.
    /// `mdbus consolidate --input nasdaq.book --input iex.book --output cbbo`.
    Consolidate(consolidate::ConsolidateArgs),
    /// Configuration files of feed, send, recv and exchange (`--config FILE`).
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print the shell completion script for SHELL, e.g.
    /// `mdbus completions bash > /etc/bash_completion.d/mdbus`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `mdbus manpage | man -l -`.
    Manpage,
}

/// Parses the command line and runs the verb.
pub fn main() -> ExitCode {
    restore_sigpipe();
    let cmd = Cli::command();
    let merged = match config::merge(&cmd, std::env::args_os().collect()) {
        Ok(m) => m,
        Err(e) => {
            eprint!("{}", error_report(&e));
            return ExitCode::from(2);
        }
    };
    let mut cli = match cmd
        .try_get_matches_from(&merged.args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            if let Some(note) = merged.blame(&e) {
                eprintln!("{note}");
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    init_logging(cli.verbose, cli.quiet);
    if let Some(file) = &merged.file {
        tracing::debug!(
            "configuration {}: {:?} applied, {:?} given on the command line instead",
            file.display(),
            merged.applied,
            merged.overridden
        );
    }
    match &mut cli.command {
        Command::Replay(a) => a.resolve(),
        Command::Feed(a) => a.resolve(),
        Command::Record(a) => a.resolve(),
        Command::Send(a) => a.resolve(),
        Command::Recv(a) => a.resolve(),
        Command::Stat(a) => a.resolve(),
        Command::Bench(a) => a.resolve(),
        _ => {}
    }
    warn_aliases(&merged.args);
    tracing::debug!("the command line as parsed: {:?}", cli.command);
    let result = match &cli.command {
        Command::Bench(args) => mdbus_bench_harness::bench::run(args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Box::new(e) as Box<dyn Error>),
        Command::Tune(command) => tune::run(command),
        Command::Streams(args) => streams::run(args),
        Command::Replay(args) => replay::run_replay(args, &mut std::io::stdout().lock())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Box::new(e) as Box<dyn Error>),
        Command::Feed(args) => feed::run_feed(args, &mut std::io::stdout().lock())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Box::new(e) as Box<dyn Error>),
        Command::Record(args) => replay::run_record(args, &mut std::io::stdout().lock())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Box::new(e) as Box<dyn Error>),
        Command::Demo(args) => demo::run(args, &mut std::io::stdout().lock())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Box::new(e) as Box<dyn Error>),
        Command::Send(args) => send::run_send(args, &mut std::io::stdout().lock())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Box::new(e) as Box<dyn Error>),
        Command::Recv(args) => recv::run_recv(args, &mut std::io::stdout().lock())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Box::new(e) as Box<dyn Error>),
        Command::Stat(args) => stat::run_stat(args, &mut std::io::stdout().lock())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Box::new(e) as Box<dyn Error>),
        Command::Exchange(args) => exchange::run_exchange(args, &mut std::io::stdout().lock())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Box::new(e) as Box<dyn Error>),
        Command::Consolidate(args) => consolidate::run(args),
        Command::Config(config::ConfigCommand::Example { role }) => {
            use std::io::Write;
            let text = config::example(&Cli::command(), role);
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| Box::new(e) as Box<dyn Error>)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "mdbus", &mut std::io::stdout().lock());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout().lock())
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| Box::new(e) as Box<dyn Error>)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprint!("{}", error_report(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Old spellings that clap reads as aliases of the current flag (the same values): verb, old
/// flag, current flag. The others are hidden flags of their own, taken over by each verb's
/// `resolve`, which warns.
const ALIASES: [(&str, &str, &str); 2] = [
    ("bench", "--cores", "--cpus"),
    ("bench", "--capacity", "--ring-size"),
];

/// Warns about each old spelling of [`ALIASES`] on the command line.
fn warn_aliases(args: &[std::ffi::OsString]) {
    let words: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .take_while(|a| a != "--")
        .collect();
    let Some(verb) = words.iter().find(|w| !w.starts_with('-')) else {
        return;
    };
    for (v, old, new) in ALIASES {
        let used = words
            .iter()
            .any(|w| w == old || w.strip_prefix(old).is_some_and(|r| r.starts_with('=')));
        if v == verb && used {
            common::deprecated(verb, old, new);
        }
    }
}

/// Sends `tracing` events to stderr, with a timestamp and a level, filtered by `-v`/`-q` or,
/// without them, `MDBUS_LOG` or `RUST_LOG` (default `info`).
fn init_logging(verbose: u8, quiet: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match i16::from(verbose) - i16::from(quiet) {
        ..=-2 => "off",
        -1 => "error",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let from_env = ["MDBUS_LOG", "RUST_LOG"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()));
    let (filter, bad) = match from_env {
        Some(directive) if verbose == 0 && quiet == 0 => match EnvFilter::try_new(&directive) {
            Ok(f) => (f, None),
            Err(e) => (EnvFilter::new(level), Some(format!("{directive:?}: {e}"))),
        },
        _ => (EnvFilter::new(level), None),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    if let Some(bad) = bad {
        tracing::warn!("MDBUS_LOG/RUST_LOG ignored: {bad}");
    }
}

/// Rust ignores SIGPIPE, so `mdbus ... | head` would fail on a closed pipe with a panic; a
/// command-line tool should end quietly instead, as the default action does.
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE and no Rust code relies on SIGPIPE being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The error and its chain of causes, a line each; a cause whose text the line before already
/// ends with (an error that prints its source in its own message) is not repeated.
fn error_report(e: &dyn Error) -> String {
    let mut out = format!("mdbus: error: {e}\n");
    let mut shown = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !shown.ends_with(&text) {
            out.push_str(&format!("  caused by: {text}\n"));
        }
        shown = text;
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_report;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Repeats {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the recording stopped")]
    struct Wraps(#[source] Repeats);

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = || std::io::Error::other("No space left on device");
        let e = Repeats {
            path: "/dev/full",
            source: io(),
        };
        assert_eq!(
            error_report(&e),
            "mdbus: error: /dev/full: No space left on device\n"
        );
        let e = Wraps(Repeats {
            path: "/dev/full",
            source: io(),
        });
        assert_eq!(
            error_report(&e),
            "mdbus: error: the recording stopped\n  caused by: /dev/full: No space left on device\n"
        );
    }
}
