//! `mdbus send`: multicast a local stream to other hosts and answer their re-requests.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use mdbus_bus::{Bus, StartAt};
use mdbus_feed_handlers::net::fault::FaultConfig;
use mdbus_feed_handlers::net::{Idle, Sender, SenderConfig, SenderStats};

use super::common::{
    CpuArgs, DurationArg, NetCmdError, StreamArg, counters_json, deprecated, format_size,
    parse_fault, parse_idle, parse_multicast_group, parse_positive_duration, parse_size_usize,
    pin_loop, stop_on_signals,
};

fn parse_start(s: &str) -> Result<StartAt, String> {
    match s {
        "oldest" => Ok(StartAt::Oldest),
        "newest" => Ok(StartAt::Newest),
        "next" | "live" => Ok(StartAt::Next),
        _ => Err(format!("{s:?}: expected oldest, newest or next")),
    }
}

/// `mdbus send`: multicast a local stream, answer re-requests.
#[derive(clap::Args, Debug, Clone)]
pub struct SendArgs {
    /// The local stream to send.
    #[command(flatten)]
    pub stream: StreamArg,
    /// Multicast group and port (a multicast address; port 0 refused).
    #[arg(long, value_name = "G:P", default_value = "239.255.0.1:31000", value_parser = parse_multicast_group)]
    pub group: SocketAddrV4,
    /// Also send every packet to this group (line B), for receivers arbitrating two lines.
    #[arg(long, value_name = "G:P", value_parser = parse_multicast_group)]
    pub line_b: Option<SocketAddrV4>,
    /// Interface address to send from (and to serve re-requests on); 0.0.0.0: the route's.
    #[arg(long, default_value = "0.0.0.0")]
    pub interface: Ipv4Addr,
    /// Multicast TTL (1: this subnet).
    #[arg(long, default_value_t = 1)]
    pub ttl: u32,
    /// Do not deliver to receivers on this host (`IP_MULTICAST_LOOP` off).
    #[arg(long)]
    pub no_loop: bool,
    /// Port of the retransmission server [default: the group's port + 1; 0: any free port].
    #[arg(long)]
    pub request_port: Option<u16>,
    /// Largest datagram, MoldUDP64 header included (the path MTU less IP and UDP headers).
    #[arg(long, value_name = "BYTES", default_value_t = 1400)]
    pub mtu: usize,
    /// How long a partly filled packet may wait once the stream is drained (0s: sent at
    /// once).
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub flush_window: DurationArg,
    /// Old spelling of --flush-window, in microseconds.
    #[arg(long, hide = true, value_name = "US")]
    pub flush_us: Option<u64>,
    /// A heartbeat after this long without a packet.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_positive_duration)]
    pub heartbeat: DurationArg,
    /// Old spelling of --heartbeat, in milliseconds.
    #[arg(long, hide = true, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// Messages held for re-requests.
    #[arg(long, value_name = "N", default_value_t = 1 << 20)]
    pub store_messages: usize,
    /// Bytes held for re-requests, a size (`64MiB`).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size_usize)]
    pub store_size: usize,
    /// Old spelling of --store-size, in MiB.
    #[arg(long, hide = true, value_name = "MIB")]
    pub store_mb: Option<usize>,
    /// Messages per second answered to each requesting host (0: no limit).
    #[arg(long, default_value_t = 100_000)]
    pub reply_rate: u64,
    /// Where to start in the stream: oldest, newest or next (the live edge).
    #[arg(long, default_value = "next", value_parser = parse_start)]
    pub start: StartAt,
    /// The cpu of the sender (one; wins over the layout's `sender` role).
    #[command(flatten)]
    pub cpus: CpuArgs,
    /// Idle strategy: spin, yield or sleep:DURATION (e.g. `sleep:50us`; a bare number:
    /// microseconds).
    #[arg(long, value_name = "HOW", default_value = "spin", value_parser = parse_idle)]
    pub idle: Idle,
    /// Inject faults into the multicast packets, e.g. `drop=0.01,dup=0.01,reorder=0.02,seed=7`
    /// or `drop-seq=100-120` (for tests).
    #[arg(long, value_parser = parse_fault)]
    pub fault: Option<FaultConfig>,
    /// How long re-requests are still answered after the end of the session.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub linger: DurationArg,
    /// Old spelling of --linger, in milliseconds.
    #[arg(long, hide = true, value_name = "MS")]
    pub linger_ms: Option<u64>,
    /// Keep running when the stream's publisher closes it; a new publisher starts a new
    /// session.
    #[arg(long)]
    pub follow: bool,
    /// Print the counters as JSON on exit.
    #[arg(long)]
    pub summary: bool,
    /// Bus root directory [default: /dev/shm/mdbus-<user>/].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Read flags from this TOML file (keys: the long flag names); flags given here win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl SendArgs {
    /// Takes the old spellings into the current flags, warning about each.
    pub fn resolve(&mut self) {
        self.stream.resolve("send");
        self.cpus.resolve("send");
        if let Some(us) = self.flush_us.take() {
            let d = DurationArg(Duration::from_micros(us));
            deprecated("send", "--flush-us", &format!("--flush-window {d}"));
            self.flush_window = d;
        }
        if let Some(ms) = self.heartbeat_ms.take() {
            // The old flag read 0 as 1ms.
            let d = DurationArg(Duration::from_millis(ms.max(1)));
            deprecated("send", "--heartbeat-ms", &format!("--heartbeat {d}"));
            self.heartbeat = d;
        }
        if let Some(mb) = self.store_mb.take() {
            let bytes = mb.saturating_mul(1 << 20);
            deprecated(
                "send",
                "--store-mb",
                &format!("--store-size {}", format_size(bytes as u64)),
            );
            self.store_size = bytes;
        }
        if let Some(ms) = self.linger_ms.take() {
            let d = DurationArg(Duration::from_millis(ms));
            deprecated("send", "--linger-ms", &format!("--linger {d}"));
            self.linger = d;
        }
    }
}

/// Runs `mdbus send` until the stream closes (and the linger time passed) or a signal.
pub fn run_send(args: &SendArgs, out: &mut dyn Write) -> Result<(), NetCmdError> {
    let bus = Bus::open(args.root.as_deref())?;
    let stream = args.stream.name();
    let mut cfg = SenderConfig::new(stream, args.group);
    cfg.line_b = args.line_b;
    cfg.send.interface = args.interface;
    cfg.send.ttl = args.ttl;
    cfg.send.loopback = !args.no_loop;
    cfg.request_addr = SocketAddrV4::new(
        args.interface,
        args.request_port
            .unwrap_or_else(|| args.group.port().wrapping_add(1)),
    );
    cfg.max_datagram = args.mtu;
    cfg.flush_deadline = args.flush_window.0;
    cfg.heartbeat_interval = args.heartbeat.0;
    cfg.store_messages = args.store_messages;
    cfg.store_bytes = args.store_size;
    cfg.reply_rate = args.reply_rate;
    cfg.start = args.start;
    cfg.idle = args.idle;
    cfg.fault = args.fault.clone().unwrap_or_default();
    cfg.linger = args.linger.0;
    cfg.exit_when_closed = !args.follow;
    let closed = bus
        .streams()?
        .into_iter()
        .find(|s| s.name == stream)
        .is_some_and(|s| s.segment.closed);
    if closed {
        // A stream an earlier run closed: say what will be sent rather than end in silence.
        if args.start == StartAt::Oldest {
            tracing::info!(
                "mdbus send: stream {stream:?} was closed by its publisher before this sender \
                 started: sending what it retains, then ending the session"
            );
        } else if !args.follow {
            return Err(NetCmdError::BadArg(format!(
                "stream {stream:?} was closed by its publisher before this sender started: \
                 nothing new will come (--start oldest sends what it retains; --follow waits for \
                 a new publisher)"
            )));
        }
    }
    let sender = Sender::new(&bus, cfg)?;
    for w in sender.warnings() {
        tracing::warn!("mdbus send: {w}");
    }
    let session = sender.session();
    tracing::info!(
        "mdbus send: stream {stream:?} -> {} session {session}, re-requests on {}",
        args.group,
        sender
            .request_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    );
    pin_loop("send", &args.cpus, &["sender"])?;
    let stop = stop_on_signals()?;
    let stats = sender.run(&stop)?;
    eprintln!(
        "mdbus send: {} messages in {} packets, {} re-requests answered ({} messages), {} lost \
         from the stream",
        stats.messages, stats.packets, stats.requests, stats.retransmit_messages, stats.stream_lost
    );
    if stats.publisher_died > 0 {
        tracing::warn!(
            "mdbus send: the stream's publisher died without closing it: the session was ended \
             with a gap notice"
        );
    }
    if args.summary {
        let mut obj = serde_json::Map::new();
        obj.insert("role".into(), "send".into());
        obj.insert("stream".into(), stream.into());
        obj.insert("group".into(), args.group.to_string().into());
        obj.insert("session".into(), session.to_string().into());
        obj.insert(
            "counters".into(),
            counters_json(&SenderStats::NAMES, &stats.values()).into(),
        );
        writeln!(out, "{}", serde_json::Value::Object(obj))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_flags_parse() {
        assert_eq!(parse_start("oldest"), Ok(StartAt::Oldest));
        assert_eq!(parse_start("live"), Ok(StartAt::Next));
        assert!(parse_start("soon").is_err());
    }
}
