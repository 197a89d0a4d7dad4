//! `mdbus streams`: the streams of a bus root with their publisher and subscribers, and removing
//! those whose publisher is gone.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use mdbus_bus::{Mode, StreamInfo};

/// `mdbus streams`: one line per stream (its publisher's pid, mode, bytes committed, state),
/// then, for a lossless stream, one line per registered subscriber: its slot, pid, whether its
/// process lives, its position and how many committed bytes it has not read (lag). Broadcast
/// subscribers do not register with the stream, so they are not listed.
#[derive(clap::Args, Debug)]
pub struct StreamsArgs {
    /// Bus root directory [default: /dev/shm/mdbus-<user>/].
    #[arg(long)]
    root: Option<PathBuf>,
    /// Remove the segments of streams whose publisher is dead or has closed.
    #[arg(long)]
    clean: bool,
    /// One JSON object per stream, one per line.
    #[arg(long, conflicts_with = "clean")]
    json: bool,
}

/// `live`, `closed` or `dead`.
fn state(s: &StreamInfo) -> &'static str {
    if s.segment.closed {
        "closed"
    } else if s.segment.alive {
        "live"
    } else {
        "dead"
    }
}

fn mode(m: Mode) -> &'static str {
    match m {
        Mode::Lossless => "lossless",
        Mode::Broadcast => "broadcast",
    }
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
    if args.json {
        for s in &streams {
            let seg = &s.segment;
            let subscribers: Vec<_> = seg
                .subscribers
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "slot": c.slot, "pid": c.pid, "alive": c.alive,
                        "position": c.position, "lag": c.lag,
                    })
                })
                .collect();
            let obj = serde_json::json!({
                "stream": s.name,
                "pid": seg.pid,
                "state": state(s),
                "mode": mode(seg.mode),
                "capacity": seg.capacity,
                "committed": seg.tail,
                "epoch": format!("{:#x}", seg.epoch),
                "subscribers": subscribers,
            });
            println!("{obj}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if streams.is_empty() {
        println!("no streams under {}", bus.root().display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32} {:>8} {:>10} {:>14} {:>18}  state",
        "stream", "pid", "mode", "committed", "epoch"
    );
    for s in &streams {
        let seg = &s.segment;
        let state = match state(s) {
            "dead" => "dead (remove with --clean)",
            other => other,
        };
        println!(
            "{:<32} {:>8} {:>10} {:>14} {:>#18x}  {state}",
            s.name,
            seg.pid,
            mode(seg.mode),
            seg.tail,
            seg.epoch
        );
        for c in &seg.subscribers {
            println!(
                "  subscriber slot {:<3} pid {:>8} {:<5} position {:>14}  lag {} bytes",
                c.slot,
                c.pid,
                if c.alive { "live" } else { "dead" },
                c.position,
                c.lag
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
