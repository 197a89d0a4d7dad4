//! `mdbus stat`: the live counters of every role (feed, replay, book, record, send, recv,
//! exchange) running under a bus root.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mdbus_bus::Bus;
use mdbus_shm::counters::{self, CounterSnapshot};
use mdbus_shm::unix_ns;

use super::common::{
    DurationArg, NetCmdError, deprecated, parse_duration_or_secs, stop_on_signals,
};

/// `mdbus stat`: the counters every long-running role publishes under the bus root.
///
/// One block per role (sorted by stream, then role): a line
/// `ROLE STREAM (pid PID, STATE, up UPTIME) DETAIL`, where STATE is `running`, `finished`
/// (it ended cleanly) or `dead` (its process is gone without finishing) and UPTIME runs from
/// the role's start to now (to its last update when it is not running), then one line per
/// counter: its name, its value and, from the second sample of `--watch` on, its rate per
/// second since the previous sample. Finished roles are left out unless `--all`.
///
/// `--serve ADDR` serves the same counters to Prometheus instead (see `cli/metrics.rs`).
///
/// `--json` prints one object per role and sample, one per line: `stream`, `role`, `detail`,
/// `pid`, `state`, `alive`, `finished`, `started_unix_ns`, `updated_unix_ns`, `uptime_s`,
/// `counters` (name to value) and, from the second sample of `--watch` on, `rates` (name to
/// per second).
#[derive(clap::Args, Debug, Clone)]
pub struct StatArgs {
    /// Only this stream.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// Old form of --stream: the stream's name as a positional argument.
    #[arg(value_name = "STREAM", hide = true, conflicts_with = "stream")]
    pub stream_positional: Option<String>,
    /// Print again at this interval, with rates: a duration (`1s`, `500ms`; a bare number:
    /// seconds), at most a day.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_or_secs)]
    pub watch: Option<Duration>,
    /// One JSON object per role and sample, one per line.
    #[arg(long)]
    pub json: bool,
    /// Also show the roles that finished.
    #[arg(long)]
    pub all: bool,
    /// Remove the counter files of roles that finished or died.
    #[arg(long)]
    pub clean: bool,
    /// Serve the counters of every running role on `http://ADDR/metrics` in the Prometheus
    /// text format until SIGINT/SIGTERM, instead of printing them (port 0: any free port; the
    /// address is printed on stderr).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["watch", "json", "all", "clean", "stream", "stream_positional"])]
    pub serve: Option<SocketAddr>,
    /// Bus root directory [default: /dev/shm/mdbus-<user>/].
    #[arg(long)]
    pub root: Option<PathBuf>,
}

/// `running`, `finished` or `dead`.
fn state(s: &CounterSnapshot) -> &'static str {
    if s.alive {
        "running"
    } else if s.finished {
        "finished"
    } else {
        "dead"
    }
}

/// Seconds from the role's start to `now` while it runs, else to its last update.
fn uptime_s(s: &CounterSnapshot, now: u64) -> f64 {
    let end = if s.alive { now } else { s.updated_unix_ns };
    end.saturating_sub(s.started_unix_ns) as f64 / 1e9
}

/// `12.3s`, `4m05s` or `2h03m04s`.
fn human_duration(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let whole = secs as u64;
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    if h == 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{h}h{m:02}m{s:02}s")
    }
}

/// Per-second rates of `s`'s counters since `prev` (the same writer's previous sample), if
/// time passed between them.
fn rates(s: &CounterSnapshot, prev: Option<&CounterSnapshot>) -> Option<Vec<(String, f64)>> {
    let prev = prev?;
    let dt = s.updated_unix_ns.saturating_sub(prev.updated_unix_ns) as f64 / 1e9;
    if dt <= 0.0 {
        return None;
    }
    Some(
        s.counters
            .iter()
            .map(|(name, v)| {
                let old = prev.get(name).unwrap_or(0);
                (name.clone(), v.saturating_sub(old) as f64 / dt)
            })
            .collect(),
    )
}

impl StatArgs {
    /// Takes the old spellings into the current flags, warning about each.
    pub fn resolve(&mut self) {
        if let Some(s) = self.stream_positional.take() {
            deprecated(
                "stat",
                "the stream as a positional argument",
                &format!("--stream {s}"),
            );
            self.stream = Some(s);
        }
    }
}

/// Runs `mdbus stat`.
pub fn run_stat(args: &StatArgs, out: &mut dyn Write) -> Result<(), NetCmdError> {
    if let Some(w) = args.watch
        && w > Duration::from_secs(86_400)
    {
        return Err(NetCmdError::BadArg(format!(
            "--watch {}: at most a day (86400s)",
            DurationArg(w)
        )));
    }
    let bus = Bus::open(args.root.as_deref())?;
    if let Some(addr) = args.serve {
        let stop = stop_on_signals()?;
        return super::metrics::serve(addr, bus.root(), &stop).map_err(NetCmdError::BadArg);
    }
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
    // On a terminal each sample of --watch replaces the one before (one screen); elsewhere
    // samples follow each other. Either way each starts with its time.
    let redraw = args.watch.is_some() && !args.json && std::io::stdout().is_terminal();
    loop {
        if args.watch.is_some() && !args.json {
            if redraw {
                write!(out, "\x1b[H\x1b[2J")?;
            }
            writeln!(
                out,
                "mdbus stat {}  {} UTC  (every {}; Ctrl-C ends)",
                bus.root().display(),
                utc_time_of_day(unix_ns()),
                DurationArg(args.watch.unwrap_or_default())
            )?;
        }
        let (mut snaps, errors) = counters::list_counters(bus.root())?;
        for e in errors {
            tracing::warn!("mdbus stat: {e}");
        }
        if let Some(s) = &args.stream {
            snaps.retain(|c| &c.stream == s);
        }
        let before = snaps.len();
        if !args.all {
            snaps.retain(|c| !c.finished);
        }
        let hidden = before - snaps.len();
        let now = unix_ns();
        for s in &snaps {
            let prev = previous
                .iter()
                .find(|p| p.path == s.path && p.started_unix_ns == s.started_unix_ns);
            let rates = rates(s, prev);
            if args.json {
                let mut obj = serde_json::json!({
                    "stream": s.stream,
                    "role": s.role,
                    "detail": s.detail,
                    "pid": s.pid,
                    "state": state(s),
                    "alive": s.alive,
                    "finished": s.finished,
                    "started_unix_ns": s.started_unix_ns,
                    "updated_unix_ns": s.updated_unix_ns,
                    "uptime_s": uptime_s(s, now),
                    "counters": s.counters.iter().map(|(n, v)| (n.clone(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
                });
                if let (Some(r), Some(o)) = (&rates, obj.as_object_mut()) {
                    let r: serde_json::Map<_, _> = r
                        .iter()
                        .map(|(n, v)| (n.clone(), serde_json::Value::from(*v)))
                        .collect();
                    o.insert("rates".into(), r.into());
                }
                writeln!(out, "{obj}")?;
                continue;
            }
            writeln!(
                out,
                "{} {} (pid {}, {}, up {}) {}",
                s.role,
                s.stream,
                s.pid,
                state(s),
                human_duration(uptime_s(s, now)),
                s.detail
            )?;
            for (i, (name, v)) in s.counters.iter().enumerate() {
                match rates.as_ref().and_then(|r| r.get(i)) {
                    Some((_, rate)) => writeln!(out, "  {name:<31} {v:>16}  {rate:>12.0}/s")?,
                    None => writeln!(out, "  {name:<31} {v:>16}")?,
                }
            }
        }
        if !args.json && snaps.is_empty() {
            let what = if args.all { "roles" } else { "running roles" };
            write!(out, "no {what} under {}", bus.root().display())?;
            if let Some(s) = &args.stream {
                write!(out, " for stream {s:?}")?;
            }
            if hidden > 0 {
                write!(out, " ({hidden} finished: --all shows them)")?;
            }
            writeln!(out)?;
        }
        out.flush()?;
        let Some(every) = args.watch else {
            return Ok(());
        };
        previous = snaps;
        // In slices, so a signal ends the watch promptly.
        let until = std::time::Instant::now() + every.max(Duration::from_millis(100));
        while std::time::Instant::now() < until {
            if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !args.json && !redraw {
            writeln!(out)?;
        }
    }
}

/// `HH:MM:SS.mmm` of a Unix time in ns, in UTC.
fn utc_time_of_day(unix_ns: u64) -> String {
    let ms = (unix_ns / 1_000_000) % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day_in_utc() {
        assert_eq!(utc_time_of_day(0), "00:00:00.000");
        // 2026-12-06 09:45:01.250 UTC.
        assert_eq!(utc_time_of_day(1_796_550_301_250_000_000), "09:45:01.250");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human_duration(0.0), "0.0s");
        assert_eq!(human_duration(12.34), "12.3s");
        assert_eq!(human_duration(245.0), "4m05s");
        assert_eq!(human_duration(7384.0), "2h03m04s");
    }
}
