//! `mdbus send`, `mdbus recv` and `mdbus stat`: carry a bus stream between hosts over UDP
//! multicast, and watch the transport's counters while it runs.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mdbus_bus::{Bus, Mode, StartAt, StreamConfig};
use mdbus_codecs::sequencer::{LateJoin, SequencerConfig};
use mdbus_feed_handlers::book::{EnvelopeBooks, GapPolicy};
use mdbus_feed_handlers::net::fault::FaultConfig;
use mdbus_feed_handlers::net::{
    Idle, LineConfig, NetError, Receiver, ReceiverConfig, ReceiverStats, RequestServer, Sender,
    SenderConfig, SenderStats,
};
use mdbus_feed_handlers::replay::replay_book_config;
use mdbus_shm::counters::{self, CounterSnapshot};

use super::feed::parse_idle;
use mdbus_bench_harness::pinning::{LayoutArg, Pinning, PinningError, ThreadRole};

/// A failed `send`, `recv` or `stat`.
#[derive(Debug, thiserror::Error)]
pub enum NetCmdError {
    /// The transport failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The bus root could not be opened.
    #[error(transparent)]
    Bus(#[from] mdbus_bus::BusError),
    /// Counters could not be read.
    #[error(transparent)]
    Counters(#[from] counters::CounterError),
    /// A bad argument.
    #[error("{0}")]
    BadArg(String),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    /// The book builder could not be set up.
    #[error("book builder: {0}")]
    Book(String),
    /// The core layout cannot be used.
    #[error(transparent)]
    Pinning(#[from] PinningError),
}

/// Pins the calling thread (the transport loop) by `--core` or the layout's `role`; prints
/// where it runs and what could not be applied.
fn pin_loop(
    who: &str,
    layout: &LayoutArg,
    core: Option<usize>,
    role: &'static [&'static str],
) -> Result<(), NetCmdError> {
    let threads = [ThreadRole {
        thread: role[0],
        roles: role,
    }];
    let pinning = Pinning::choose(layout, &threads, core.map(|c| vec![c]), || Ok(None))?;
    pinning.enter(0);
    if let Some(line) = pinning.describe() {
        eprintln!("mdbus {who}: {line}");
    }
    for w in pinning.warnings() {
        eprintln!("mdbus {who}: warning: {w}");
    }
    Ok(())
}

fn parse_start(s: &str) -> Result<StartAt, String> {
    match s {
        "oldest" => Ok(StartAt::Oldest),
        "newest" => Ok(StartAt::Newest),
        "next" | "live" => Ok(StartAt::Next),
        _ => Err(format!("{s:?}: expected oldest, newest or next")),
    }
}

fn parse_fault(s: &str) -> Result<FaultConfig, String> {
    s.parse::<FaultConfig>().map_err(|e| e.to_string())
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

/// `mdbus recv`: receive a stream into a local stream.
#[derive(clap::Args, Debug, Clone)]
pub struct RecvArgs {
    /// The stream being sent (its name selects the session to follow).
    pub stream: String,
    /// Multicast group and port (line A).
    #[arg(long, default_value = "239.255.0.1:31000")]
    pub group: SocketAddrV4,
    /// Join line A source-specific, from this sender.
    #[arg(long)]
    pub source: Option<Ipv4Addr>,
    /// Accept packets from this host only (others are counted and ignored).
    #[arg(long)]
    pub accept_from: Option<Ipv4Addr>,
    /// Interface address to join on and send re-requests from.
    #[arg(long, default_value = "0.0.0.0")]
    pub interface: Ipv4Addr,
    /// Line B group and port, for A/B arbitration.
    #[arg(long)]
    pub line_b: Option<SocketAddrV4>,
    /// Source of line B for a source-specific join.
    #[arg(long)]
    pub line_b_source: Option<Ipv4Addr>,
    /// The retransmission server [default: the sender's host, the group's port + 1].
    #[arg(long)]
    pub request: Option<SocketAddrV4>,
    /// Do not re-request: missing messages are reported lost after the NAK delay.
    #[arg(long)]
    pub no_recovery: bool,
    /// Microseconds a missing message may be merely reordered before it is re-requested.
    #[arg(long, default_value_t = 1000)]
    pub nak_delay_us: u64,
    /// Where to join a running session: `live` (the live edge, reported as a late join) or
    /// `start` (re-request everything the sender still holds).
    #[arg(long, default_value = "live")]
    pub join: String,
    /// Name of the local stream [default: the stream's name].
    #[arg(long)]
    pub local: Option<String>,
    /// Megabytes of the local ring.
    #[arg(long, default_value_t = 16)]
    pub ring_mb: usize,
    /// Make the local stream lossless (the receiver waits for local subscribers, up to
    /// --stall-ms at a time; what it then drops is reported by a gap notice on the stream).
    #[arg(long)]
    pub lossless: bool,
    /// Milliseconds a full lossless local ring is waited for, once per stall; then messages
    /// are dropped without waiting (and reported in one gap notice) until it has room again.
    #[arg(long, default_value_t = 100)]
    pub stall_ms: u64,
    /// Milliseconds the followed session must be silent before a packet of another session
    /// of the stream is followed (a forged packet cannot take the receiver off a live one).
    #[arg(long, default_value_t = 2000)]
    pub session_timeout_ms: u64,
    /// Largest forward jump of sequence numbers taken at face value, in messages: a packet
    /// reaching further ahead is counted and not acted on until corroborated.
    #[arg(long, default_value_t = SequencerConfig::default().max_gap, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_gap: u64,
    /// Milliseconds nothing may continue the current sequence before packets going on from
    /// a jump beyond --max-gap corroborate it (longer than the sender's heartbeat interval).
    #[arg(long, default_value_t = 2000)]
    pub jump_confirm_ms: u64,
    /// Follow a newer session of the stream as soon as it appears, even while the followed
    /// one is live (a sender restarted on purpose; trusts anyone who can send to the group).
    #[arg(long)]
    pub follow_newer: bool,
    /// `SO_RCVBUF` in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub rcvbuf: usize,
    /// Core to pin the receiver to (wins over the layout's `receiver` role).
    #[arg(long)]
    pub core: Option<usize>,
    #[command(flatten)]
    pub layout: LayoutArg,
    /// Idle strategy: spin, yield or sleep:DURATION (e.g. `sleep:50us`; a bare number:
    /// microseconds).
    #[arg(long, value_name = "HOW", default_value = "spin", value_parser = parse_idle)]
    pub idle: Idle,
    /// Inject faults into the packets received on the lines.
    #[arg(long, value_parser = parse_fault)]
    pub fault: Option<FaultConfig>,
    /// Exit at the end of the first session.
    #[arg(long)]
    pub exit_at_end: bool,
    /// Print a JSON summary of the counters on exit.
    #[arg(long)]
    pub summary: bool,
    /// Build books from what was delivered and print, at the end of the session, the same
    /// JSON as `mdbus replay --book-summary`.
    #[arg(long)]
    pub book_summary: bool,
    /// Bus root directory [default: /dev/shm/mdbus-<user>/].
    #[arg(long)]
    pub root: Option<PathBuf>,
}

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

/// Sets `stop` on SIGINT and SIGTERM; a second one exits at once (status 130), without
/// the clean end (a sender's linger).
fn stop_on_signals() -> Result<Arc<AtomicBool>, NetCmdError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

fn counters_json(names: &[&str], values: &[u64]) -> serde_json::Map<String, serde_json::Value> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| ((*n).to_owned(), serde_json::Value::from(*v)))
        .collect()
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

/// Runs `mdbus recv` until a signal or (with `--exit-at-end`) the end of the session.
pub fn run_recv(args: &RecvArgs, out: &mut dyn Write) -> Result<(), NetCmdError> {
    let bus = Bus::open(args.root.as_deref())?;
    let mut cfg = ReceiverConfig::new(&args.stream, args.group);
    if let Some(l) = &args.local {
        cfg.local_stream = l.clone();
    }
    cfg.ring = StreamConfig {
        capacity: (args.ring_mb << 20).next_power_of_two(),
        mode: if args.lossless {
            Mode::Lossless
        } else {
            Mode::Broadcast
        },
        ..StreamConfig::default()
    };
    cfg.source = args.source;
    cfg.accept_from = args.accept_from;
    cfg.interface = args.interface;
    cfg.line_b = args.line_b.map(|group| LineConfig {
        group,
        source: args.line_b_source,
    });
    cfg.request_server = match (args.no_recovery, args.request) {
        (true, _) => RequestServer::None,
        (false, Some(a)) => RequestServer::Addr(a),
        (false, None) => RequestServer::SourcePort(args.group.port().wrapping_add(1)),
    };
    cfg.sequencer.nak_delay = Duration::from_micros(args.nak_delay_us);
    cfg.sequencer.max_gap = args.max_gap;
    cfg.sequencer.jump_confirm = Duration::from_millis(args.jump_confirm_ms);
    cfg.sequencer.late_join = match args.join.as_str() {
        "live" => LateJoin::LiveEdge,
        "start" => LateJoin::FromSequence(1),
        other => {
            return Err(NetCmdError::BadArg(format!(
                "--join {other:?}: expected live or start"
            )));
        }
    };
    cfg.rcvbuf = args.rcvbuf;
    cfg.idle = args.idle;
    cfg.fault = args.fault.clone().unwrap_or_default();
    cfg.exit_at_end_of_session = args.exit_at_end;
    cfg.stall_timeout = Duration::from_millis(args.stall_ms);
    cfg.session_timeout = Duration::from_millis(args.session_timeout_ms);
    cfg.follow_newer = args.follow_newer;
    let local = cfg.local_stream.clone();
    let receiver = Receiver::new(&bus, cfg)?;
    for w in receiver.warnings() {
        eprintln!("mdbus recv: warning: {w}");
    }
    eprintln!(
        "mdbus recv: {} stream {:?} -> local stream {local:?} under {}",
        args.group,
        args.stream,
        bus.root().display()
    );
    let mut books = if args.book_summary {
        // Lost messages leave the books unknown: they start again, as a strategy would.
        Some(
            EnvelopeBooks::new(replay_book_config(), GapPolicy::CountAllResetOnLoss)
                .map_err(|e| NetCmdError::Book(e.to_string()))?,
        )
    } else {
        None
    };
    pin_loop("recv", &args.layout, args.core, &["receiver"])?;
    let stop = stop_on_signals()?;
    let stats = match &mut books {
        Some(b) => receiver.run_with(&stop, &mut |t, p| b.observe_record(t, p))?,
        None => receiver.run(&stop)?,
    };
    report_recv(&stats);
    if args.summary {
        let mut obj = serde_json::Map::new();
        obj.insert("role".into(), "recv".into());
        obj.insert("stream".into(), args.stream.clone().into());
        obj.insert("local_stream".into(), local.into());
        obj.insert("group".into(), args.group.to_string().into());
        obj.insert("lost".into(), stats.lost().into());
        obj.insert(
            "counters".into(),
            counters_json(&ReceiverStats::NAMES, &stats.values()).into(),
        );
        writeln!(out, "{}", serde_json::Value::Object(obj))?;
    }
    if let Some(b) = &books {
        if b.invalid() > 0 {
            eprintln!("mdbus recv: {} envelopes failed verification", b.invalid());
        }
        let summary = b.summary();
        writeln!(out, "{}", summary.to_json())?;
    }
    Ok(())
}

fn report_recv(s: &ReceiverStats) {
    eprintln!(
        "mdbus recv: {} messages delivered, {} gaps ({} recovered), {} lost ({} by the \
         transport, {} dropped locally), {} duplicates, {} late-join messages, {} sessions, {} \
         foreign-session and {} malformed packets",
        s.messages,
        s.gaps,
        s.recovered,
        s.lost(),
        s.unrecoverable,
        s.local_lost,
        s.duplicates,
        s.late_join_messages,
        s.sessions,
        s.foreign_session,
        s.malformed
    );
    if s.implausible_jumps > 0 || s.forged_end_of_session > 0 || s.zero_sequence > 0 {
        eprintln!(
            "mdbus recv: implausible input ignored: {} jumps beyond --max-gap ({} later \
             corroborated), {} ends of session below what was known, {} packets numbered 0, {} \
             live-edge anchors replaced",
            s.implausible_jumps,
            s.jumps_corroborated,
            s.forged_end_of_session,
            s.zero_sequence,
            s.anchors_replaced
        );
    }
    if s.other_session > 0 || s.stale_session > 0 {
        eprintln!(
            "mdbus recv: {} packets of a newer session and {} of an older one ignored while \
             following a live session",
            s.other_session, s.stale_session
        );
    }
    if s.local_lost > 0 {
        eprintln!(
            "mdbus recv: {} messages dropped on the full local ring, reported in {} gap notices \
             ({} notices could not be published)",
            s.local_lost, s.local_gap_notices, s.notices_unpublished
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_start_flags_parse() {
        assert_eq!(parse_idle("spin"), Ok(Idle::BusyPoll));
        assert_eq!(parse_idle("yield"), Ok(Idle::Yield));
        assert_eq!(
            parse_idle("sleep:250"),
            Ok(Idle::Sleep(Duration::from_micros(250)))
        );
        assert_eq!(
            parse_idle("sleep:2ms"),
            Ok(Idle::Sleep(Duration::from_millis(2)))
        );
        assert!(parse_idle("nap").is_err());
        assert!(parse_idle("sleep:x").is_err());
        assert_eq!(parse_start("oldest"), Ok(StartAt::Oldest));
        assert_eq!(parse_start("live"), Ok(StartAt::Next));
        assert!(parse_start("soon").is_err());
    }
}
