//! `mdbus consolidate`: merge the book streams of several venues into one consolidated top of
//! book per symbol ([`mdbus_feed_handlers::consolidate`]).

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use mdbus_bus::{Bus, StartAt, StreamConfig, WaitStrategy};
use mdbus_feed_handlers::consolidate::{
    COUNTERS_ROLE, ConsolidateConfig, ConsolidateService, ConsolidateStats, MAX_INPUTS,
};

use super::common::stop_on_signals;

/// `mdbus consolidate`: the best bid and ask of each symbol across venues.
///
/// Reads each `--input` book stream (`<feed>.book`, as `mdbus replay --book` or `mdbus feed
/// --book` publish it: `Bbo`, directory events, gap notices, end of session), joins the
/// venues' instruments on their symbols, and after each input `Bbo` publishes one
/// `ConsolidatedBbo` on `--output`: the best bid and ask with the venue and size of each, the
/// locked/crossed flags, and every venue's top (a venue whose stream had a lost gap or ended
/// is marked stale and left out). Ends when every input's session has ended (then publishes
/// `EndOfSession`), or on Ctrl-C. While it runs its counters are in the bus root (role
/// `consolidate`, stream `--output`), for `mdbus stat`.
#[derive(clap::Args, Debug, Clone)]
pub struct ConsolidateArgs {
    /// A book stream to merge, e.g. `nasdaq.book`; give 1 to 8, in priority order (at equal
    /// price and size the earlier input's venue is named).
    #[arg(long = "input", required = true)]
    pub inputs: Vec<String>,
    /// The stream to publish the consolidated events on.
    #[arg(long)]
    pub output: String,
    /// Bus root directory [default: /dev/shm/mdbus-<user>/].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Symbols held at once (all venues together); more are counted (`symbols_full`).
    #[arg(long, default_value_t = 16_384)]
    pub max_symbols: usize,
    /// Where to join the inputs: `oldest` (everything they still hold) or `next` (what is
    /// published from now on).
    #[arg(long, default_value = "oldest")]
    pub start: String,
    /// Megabytes of the output ring (lossless: a slow subscriber holds the consolidator back).
    #[arg(long, default_value_t = 4)]
    pub ring_mb: usize,
    /// Print the final counters as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// A failed `mdbus consolidate`.
#[derive(Debug, thiserror::Error)]
pub enum ConsolidateCmdError {
    /// The consolidator failed.
    #[error(transparent)]
    Consolidate(#[from] mdbus_feed_handlers::consolidate::ConsolidateError),
    /// The bus root could not be opened.
    #[error(transparent)]
    Bus(#[from] mdbus_bus::BusError),
    /// A bad argument.
    #[error("{0}")]
    BadArg(String),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs `mdbus consolidate` (for [`super::main`]).
pub fn run(args: &ConsolidateArgs) -> Result<ExitCode, Box<dyn Error>> {
    run_consolidate(args, &mut std::io::stdout().lock())
        .map(|()| ExitCode::SUCCESS)
        .map_err(|e| Box::new(e) as Box<dyn Error>)
}

/// Runs `mdbus consolidate`, writing the report to `out`.
pub fn run_consolidate(
    args: &ConsolidateArgs,
    out: &mut dyn Write,
) -> Result<(), ConsolidateCmdError> {
    if args.inputs.len() > MAX_INPUTS {
        return Err(ConsolidateCmdError::BadArg(format!(
            "--input given {} times: at most {MAX_INPUTS} streams can be merged",
            args.inputs.len()
        )));
    }
    let start = match args.start.as_str() {
        "oldest" => StartAt::Oldest,
        "next" => StartAt::Next,
        other => {
            return Err(ConsolidateCmdError::BadArg(format!(
                "--start {other:?}: oldest or next"
            )));
        }
    };
    let capacity = args
        .ring_mb
        .checked_mul(1 << 20)
        .filter(|c| c.is_power_of_two())
        .ok_or_else(|| {
            ConsolidateCmdError::BadArg(format!(
                "--ring-mb {}: a power of two (1, 2, 4, ...) of megabytes",
                args.ring_mb
            ))
        })?;
    let config = ConsolidateConfig {
        max_symbols: args.max_symbols,
        output: StreamConfig {
            capacity,
            ..mdbus_feed_handlers::bookstream::output_ring()
        },
        start,
    };
    let bus = Bus::open(args.root.as_deref())?;
    let inputs: Vec<&str> = args.inputs.iter().map(String::as_str).collect();
    let mut svc = ConsolidateService::new(&bus, &inputs, &args.output, &config)?;
    svc.publish_counters(&bus)?;
    let stop = stop_on_signals()?;
    let stats = svc.run(WaitStrategy::SpinThenYield { spins: 1000 }, &stop)?;
    print_report(&stats, &inputs, &args.output, svc.consolidator().symbols());
    if args.json {
        let mut obj = serde_json::Map::new();
        obj.insert("role".into(), COUNTERS_ROLE.into());
        obj.insert("output".into(), args.output.clone().into());
        obj.insert("inputs".into(), inputs.clone().into());
        obj.insert(
            "symbols".into(),
            (svc.consolidator().symbols() as u64).into(),
        );
        for (name, value) in ConsolidateStats::NAMES.iter().zip(stats.values()) {
            obj.insert((*name).to_owned(), value.into());
        }
        writeln!(out, "{}", serde_json::Value::Object(obj))?;
    }
    Ok(())
}

/// The human report (stderr): what was merged, and anything that was not.
fn print_report(s: &ConsolidateStats, inputs: &[&str], output: &str, symbols: usize) {
    eprintln!(
        "consolidate: {} -> {output:?}: {} BBO in, {} consolidated out, {symbols} symbols{}",
        inputs.join(" + "),
        s.bbos,
        s.published,
        if s.ended {
            ""
        } else {
            " (stopped before every input ended)"
        },
    );
    eprintln!(
        "  {} locked, {} crossed, {} venue tops made stale ({} lost gaps, {} overruns, {} inputs ended)",
        s.locked, s.crossed, s.stale, s.gaps, s.overruns, s.inputs_ended
    );
    if s.unnamed + s.symbols_full + s.bad_instruments > 0 {
        eprintln!(
            "  not merged: {} BBO of instruments no directory named, {} over --max-symbols, {} bad instrument ids",
            s.unnamed, s.symbols_full, s.bad_instruments
        );
    }
}
