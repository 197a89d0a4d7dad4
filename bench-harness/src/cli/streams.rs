//! `mdbus streams`: the streams of a bus root, and removing those whose publisher is gone.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct StreamsArgs {
    /// Bus root directory [default: /dev/shm/mdbus-<user>/].
    #[arg(long)]
    root: Option<PathBuf>,
    /// Remove the segments of streams whose publisher is dead or has closed.
    #[arg(long)]
    clean: bool,
}

/// Runs `mdbus streams`.
pub fn run(args: &StreamsArgs) -> Result<ExitCode, Box<dyn Error>> {
    let bus = mdbus_bus::Bus::open(args.root.as_deref())?;
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
