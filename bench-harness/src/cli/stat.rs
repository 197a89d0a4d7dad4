//! `mdbus stat`: the live counters of the roles running under a bus root.

//! `mdbus send`, `mdbus recv` and `mdbus stat`: carry a bus stream between hosts over UDP
//! multicast, and watch the transport's counters while it runs.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mdbus_bus::Bus;
use mdbus_shm::counters::{self, CounterSnapshot};

use super::common::{NetCmdError, stop_on_signals};

/// `mdbus stat`: the transport counters of the senders and receivers of a bus root.
#[derive(clap::Args, Debug, Clone)]
pub struct StatArgs {
    /// Only this stream.
    pub stream: Option<String>,
    /// Print again every this many seconds, with rates.
    #[arg(long)]
    pub watch: Option<f64>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Remove the counter files of roles that finished or died.
    #[arg(long)]
    pub clean: bool,
    /// Bus root directory [default: /dev/shm/mdbus-<user>/].
    #[arg(long)]
    pub root: Option<PathBuf>,
}

/// Runs `mdbus stat`.
pub fn run_stat(args: &StatArgs, out: &mut dyn Write) -> Result<(), NetCmdError> {
    let bus = Bus::open(args.root.as_deref())?;
    if args.clean {
        for p in counters::remove_finished(bus.root())? {
            writeln!(out, "removed {}", p.display())?;
        }
        return Ok(());
    }
    let stop = if args.watch.is_some() {
        Some(stop_on_signals()?)
    } else {
        None
    };
    let mut previous: Vec<CounterSnapshot> = Vec::new();
    loop {
        let (mut snaps, errors) = counters::list_counters(bus.root())?;
        for e in errors {
            eprintln!("mdbus stat: warning: {e}");
        }
        if let Some(s) = &args.stream {
            snaps.retain(|c| &c.stream == s);
        }
        if args.json {
            for s in &snaps {
                let obj = serde_json::json!({
                    "stream": s.stream,
                    "role": s.role,
                    "detail": s.detail,
                    "pid": s.pid,
                    "alive": s.alive,
                    "finished": s.finished,
                    "updated_unix_ns": s.updated_unix_ns,
                    "counters": s.counters.iter().map(|(n, v)| (n.clone(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
                });
                writeln!(out, "{obj}")?;
            }
        } else {
            if snaps.is_empty() {
                writeln!(
                    out,
                    "no senders or receivers under {}",
                    bus.root().display()
                )?;
            }
            for s in &snaps {
                let state = if s.alive {
                    "running"
                } else if s.finished {
                    "finished"
                } else {
                    "dead"
                };
                writeln!(
                    out,
                    "{} {} (pid {}, {state}) {}",
                    s.role, s.stream, s.pid, s.detail
                )?;
                let prev = previous
                    .iter()
                    .find(|p| p.path == s.path && p.started_unix_ns == s.started_unix_ns);
                let dt = prev
                    .map(|p| (s.updated_unix_ns.saturating_sub(p.updated_unix_ns)) as f64 / 1e9);
                for (name, v) in &s.counters {
                    match (prev.and_then(|p| p.get(name)), dt) {
                        (Some(old), Some(dt)) if dt > 0.0 => writeln!(
                            out,
                            "  {name:<20} {v:>16}  {:>12.0}/s",
                            v.saturating_sub(old) as f64 / dt
                        )?,
                        _ => writeln!(out, "  {name:<20} {v:>16}")?,
                    }
                }
            }
        }
        out.flush()?;
        let Some(every) = args.watch else {
            return Ok(());
        };
        previous = snaps;
        // In slices, so a signal ends the watch promptly.
        let until = std::time::Instant::now() + Duration::from_secs_f64(every.max(0.1));
        while std::time::Instant::now() < until {
            if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !args.json {
            writeln!(out)?;
        }
    }
}
