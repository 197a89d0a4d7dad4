//! `mdbus send`: multicast a local stream to other hosts and answer their re-requests.

//! `mdbus send`, `mdbus recv` and `mdbus stat`: carry a bus stream between hosts over UDP
//! multicast, and watch the transport's counters while it runs.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use mdbus_bus::{Bus, StartAt};
use mdbus_feed_handlers::net::fault::FaultConfig;
use mdbus_feed_handlers::net::{Idle, Sender, SenderConfig, SenderStats};

use super::common::{
    NetCmdError, counters_json, parse_fault, parse_idle, pin_loop, stop_on_signals,
};
use mdbus_bench_harness::pinning::LayoutArg;

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
    pub stream: String,
    /// Multicast group and port.
    #[arg(long, default_value = "239.255.0.1:31000")]
    pub group: SocketAddrV4,
    /// Also send every packet to this group (line B), for receivers arbitrating two lines.
    #[arg(long)]
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
    #[arg(long, default_value_t = 1400)]
    pub mtu: usize,
    /// Microseconds a partly filled packet may wait once the stream is drained.
    #[arg(long, default_value_t = 0)]
    pub flush_us: u64,
    /// Milliseconds between heartbeats while idle.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Messages held for re-requests.
    #[arg(long, default_value_t = 1 << 20)]
    pub store_messages: usize,
    /// Megabytes held for re-requests.
    #[arg(long, default_value_t = 64)]
    pub store_mb: usize,
    /// Messages per second answered to each requesting host (0: no limit).
    #[arg(long, default_value_t = 100_000)]
    pub reply_rate: u64,
    /// Where to start in the stream: oldest, newest or next (the live edge).
    #[arg(long, default_value = "next", value_parser = parse_start)]
    pub start: StartAt,
    /// Core to pin the sender to (wins over the layout's `sender` role).
    #[arg(long)]
    pub core: Option<usize>,
    #[command(flatten)]
    pub layout: LayoutArg,
    /// Idle strategy: spin, yield or sleep:DURATION (e.g. `sleep:50us`; a bare number:
    /// microseconds).
    #[arg(long, value_name = "HOW", default_value = "spin", value_parser = parse_idle)]
    pub idle: Idle,
    /// Inject faults into the multicast packets, e.g. `drop=0.01,dup=0.01,reorder=0.02,seed=7`
    /// or `drop-seq=100-120` (for tests).
    #[arg(long, value_parser = parse_fault)]
    pub fault: Option<FaultConfig>,
    /// Milliseconds re-requests are still answered after the end of the session.
    #[arg(long, default_value_t = 1000)]
    pub linger_ms: u64,
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
}

/// Runs `mdbus send` until the stream closes (and the linger time passed) or a signal.
pub fn run_send(args: &SendArgs, out: &mut dyn Write) -> Result<(), NetCmdError> {
    let bus = Bus::open(args.root.as_deref())?;
    let mut cfg = SenderConfig::new(&args.stream, args.group);
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
    cfg.flush_deadline = Duration::from_micros(args.flush_us);
    cfg.heartbeat_interval = Duration::from_millis(args.heartbeat_ms.max(1));
    cfg.store_messages = args.store_messages;
    cfg.store_bytes = args.store_mb << 20;
    cfg.reply_rate = args.reply_rate;
    cfg.start = args.start;
    cfg.idle = args.idle;
    cfg.fault = args.fault.clone().unwrap_or_default();
    cfg.linger = Duration::from_millis(args.linger_ms);
    cfg.exit_when_closed = !args.follow;
    let closed = bus
        .streams()?
        .into_iter()
        .find(|s| s.name == args.stream)
        .is_some_and(|s| s.segment.closed);
    if closed {
        // A stream an earlier run closed: say what will be sent rather than end in silence.
        if args.start == StartAt::Oldest {
            eprintln!(
                "mdbus send: stream {:?} was closed by its publisher before this sender started: \
                 sending what it retains, then ending the session",
                args.stream
            );
        } else if !args.follow {
            return Err(NetCmdError::BadArg(format!(
                "stream {:?} was closed by its publisher before this sender started: nothing \
                 new will come (--start oldest sends what it retains; --follow waits for a new \
                 publisher)",
                args.stream
            )));
        }
    }
    let sender = Sender::new(&bus, cfg)?;
    for w in sender.warnings() {
        eprintln!("mdbus send: warning: {w}");
    }
    let session = sender.session();
    eprintln!(
        "mdbus send: stream {:?} -> {} session {session}, re-requests on {}",
        args.stream,
        args.group,
        sender
            .request_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    );
    pin_loop("send", &args.layout, args.core, &["sender"])?;
    let stop = stop_on_signals()?;
    let stats = sender.run(&stop)?;
    eprintln!(
        "mdbus send: {} messages in {} packets, {} re-requests answered ({} messages), {} lost \
         from the stream",
        stats.messages, stats.packets, stats.requests, stats.retransmit_messages, stats.stream_lost
    );
    if stats.publisher_died > 0 {
        eprintln!(
            "mdbus send: the stream's publisher died without closing it: the session was ended \
             with a gap notice"
        );
    }
    if args.summary {
        let mut obj = serde_json::Map::new();
        obj.insert("role".into(), "send".into());
        obj.insert("stream".into(), args.stream.clone().into());
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
