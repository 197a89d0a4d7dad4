//! `mdbus`: the one command-line entry point of the market-data bus.
//!
//! Run it from the repository root with `cargo run --release --bin mdbus -- <subcommand>`.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mdbus: a low-latency market-data bus over shared-memory rings.
///
/// Feed handlers decode Nasdaq TotalView-ITCH 5.0 and publish normalized FlatBuffers
/// messages into shared-memory rings; strategies read them zero-copy.
#[derive(Parser, Debug)]
#[command(
    name = "mdbus",
    version,
    propagate_version = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a latency or throughput benchmark, e.g. `mdbus bench ring --json`.
    Bench(mdbus_bench_harness::bench::BenchArgs),
    /// Check how well this host is tuned for low latency, or plan its core layout.
    #[command(subcommand)]
    Tune(TuneCommand),
    /// List the streams of a bus root, or remove those whose publisher is gone.
    Streams(StreamsArgs),
    /// Replay a captured session (ITCH file, pcap/pcapng of MoldUDP64, or a recording) onto a
    /// bus stream, e.g. `mdbus replay --book-summary codecs/testdata/itch/aapl-2020-01-30-10k.itch`.
    Replay(mdbus_bench_harness::replay_cmd::ReplayArgs),
    /// Receive a live ITCH 5.0 feed (MoldUDP64 over UDP, lines A and B, gap recovery) onto a
    /// bus stream, e.g. `mdbus feed --group 233.54.12.111:26477 --request-server
    /// 206.200.43.80:18000 --book`.
    Feed(mdbus_bench_harness::feed_cmd::FeedArgs),
    /// Record a bus stream to a file that `mdbus replay` plays back.
    Record(mdbus_bench_harness::replay_cmd::RecordArgs),
    /// Run a real Nasdaq session through feed handler, book builder and strategy, each on its
    /// own core, and show what happened and the tick-to-strategy latency.
    Demo(mdbus_bench_harness::demo::DemoArgs),
    /// Multicast a local stream to other hosts (MoldUDP64 over UDP) and answer their
    /// re-requests, e.g. `mdbus send nasdaq.itch --group 239.255.0.1:31000`.
    Send(mdbus_bench_harness::net_cmd::SendArgs),
    /// Receive a stream sent by `mdbus send` into a local stream, recovering lost packets,
    /// e.g. `mdbus recv nasdaq.itch --group 239.255.0.1:31000 --summary`.
    Recv(mdbus_bench_harness::net_cmd::RecvArgs),
    /// Show the live counters of the senders and receivers on this host.
    Stat(mdbus_bench_harness::net_cmd::StatArgs),
}

#[derive(Subcommand, Debug)]
enum TuneCommand {
    /// Inspect the host (reads /proc and /sys only, changes nothing): each check passes,
    /// warns or fails, with the fix. Exits with status 2 when a check fails.
    Check {
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Read /proc and /sys under this directory instead of / (for a saved host tree).
        #[arg(long, default_value = "/")]
        sysroot: PathBuf,
    },
    /// Propose a core layout for a set of roles on this host, with the kernel command line
    /// and sysctls that would isolate them.
    Plan {
        /// Roles, comma separated, each `kind`, `kind:count` or `name=kind[:count]`; kinds:
        /// feed_handler, receiver, book_builder, sender, strategy, background.
        #[arg(long, default_value = "feed_handler,book_builder,strategy")]
        roles: String,
        /// Put the latency-critical roles on this NUMA node (e.g. the NIC's).
        #[arg(long)]
        node: Option<usize>,
        /// Write the layout (TOML) to this file, for the feed handler, bus and bench to read.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the layout as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
struct StreamsArgs {
    /// Bus root directory [default: /dev/shm/mdbus-<user>/].
    #[arg(long)]
    root: Option<PathBuf>,
    /// Remove the segments of streams whose publisher is dead or has closed.
    #[arg(long)]
    clean: bool,
}

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Bench(args) => mdbus_bench_harness::bench::run(args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Box::new(e) as Box<dyn Error>),
        Command::Tune(command) => tune(command),
        Command::Streams(args) => streams(args),
        Command::Replay(args) => {
            mdbus_bench_harness::replay_cmd::run_replay(args, &mut std::io::stdout().lock())
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| Box::new(e) as Box<dyn Error>)
        }
        Command::Feed(args) => {
            mdbus_bench_harness::feed_cmd::run_feed(args, &mut std::io::stdout().lock())
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| Box::new(e) as Box<dyn Error>)
        }
        Command::Record(args) => {
            mdbus_bench_harness::replay_cmd::run_record(args, &mut std::io::stdout().lock())
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| Box::new(e) as Box<dyn Error>)
        }
        Command::Demo(args) => mdbus_bench_harness::demo::run(args, &mut std::io::stdout().lock())
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Box::new(e) as Box<dyn Error>),
        Command::Send(args) => {
            mdbus_bench_harness::net_cmd::run_send(args, &mut std::io::stdout().lock())
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| Box::new(e) as Box<dyn Error>)
        }
        Command::Recv(args) => {
            mdbus_bench_harness::net_cmd::run_recv(args, &mut std::io::stdout().lock())
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| Box::new(e) as Box<dyn Error>)
        }
        Command::Stat(args) => {
            mdbus_bench_harness::net_cmd::run_stat(args, &mut std::io::stdout().lock())
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

fn tune(command: &TuneCommand) -> Result<ExitCode, Box<dyn Error>> {
    use mdbus_tuning as tuning;
    match command {
        TuneCommand::Check { json, sysroot } => {
            // A saved host tree may carry its non-file facts (limits, uid) in facts.toml.
            let facts = sysroot.join("facts.toml");
            let sys = if sysroot == std::path::Path::new("/") {
                tuning::SysRoot::host()
            } else if facts.exists() {
                tuning::SysRoot::new(sysroot, tuning::StaticFacts::load(&facts)?)
            } else {
                tuning::SysRoot::new(sysroot, tuning::LiveHost)
            };
            let report = tuning::run_checks(&sys);
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            Ok(if report.worst() == tuning::Status::Fail {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        TuneCommand::Plan {
            roles,
            node,
            out,
            json,
        } => {
            let sys = tuning::SysRoot::host();
            let topology = tuning::Topology::read(&sys)?;
            let roles = tuning::parse_roles(roles)?;
            let options = tuning::PlanOptions { prefer_node: *node };
            let layout = tuning::plan_with(&topology, &roles, &options)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&layout)?);
            } else {
                print!("{layout}");
            }
            if let Some(path) = out {
                layout.save(path)?;
                eprintln!("layout written to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn streams(args: &StreamsArgs) -> Result<ExitCode, Box<dyn Error>> {
    let bus = match &args.root {
        Some(root) => mdbus_bus::Bus::with_root(root)?,
        None => mdbus_bus::Bus::new()?,
    };
    if args.clean {
        let removed = bus.remove_stale()?;
        for path in &removed {
            println!("removed {}", path.display());
        }
        println!("{} stale segment(s) removed", removed.len());
        return Ok(ExitCode::SUCCESS);
    }
    let streams = bus.streams()?;
    if streams.is_empty() {
        println!("no streams under {}", bus.root().display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32} {:>8} {:>10} {:>12} {:>18}  state",
        "stream", "pid", "mode", "bytes", "epoch"
    );
    for s in streams {
        let seg = &s.segment;
        let state = if seg.closed {
            "closed"
        } else if seg.alive {
            "live"
        } else {
            "dead (remove with --clean)"
        };
        println!(
            "{:<32} {:>8} {:>10} {:>12} {:>#18x}  {state}",
            s.name,
            seg.pid,
            format!("{:?}", seg.mode),
            seg.size,
            seg.epoch
        );
    }
    Ok(ExitCode::SUCCESS)
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
