//! `mdbus exchange`: a live Nasdaq-style exchange on one machine
//! ([`mdbus_feed_handlers::exchange`]): plays a capture as MoldUDP64 packets of ITCH 5.0 on a
//! multicast group and answers re-requests, so `mdbus feed` can be run against it.

use super::common::{DurationArg, Unicast, parse_fault, parse_group, parse_positive_duration};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use mdbus_codecs::moldudp64::Session;
use mdbus_feed_handlers::exchange::{
    COUNTERS_ROLE, Exchange, ExchangeConfig, ExchangeError, ExchangeStats, counters_name,
};
use mdbus_feed_handlers::net::fault::FaultConfig;
use mdbus_feed_handlers::replay::{ReplayProtocol, Speed};

/// A failed `mdbus exchange`.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeCmdError {
    /// The exchange could not be set up.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
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

// The defaults of the MoldUDP64 play's flags, which an IEX play (its segments re-sent as
// captured, no re-request server) refuses to be given otherwise.
const MTU: usize = 1400;
const FLUSH_WINDOW: &str = "200us";
const HEARTBEAT: &str = "1s";
const LINGER: &str = "5s";
const REPLY_RATE: u64 = 100_000;

/// `mdbus exchange`: play a capture as a live MoldUDP64 feed with a retransmission server.
#[derive(clap::Args, Debug, Clone)]
pub struct ExchangeArgs {
    /// The capture: a length-prefixed ITCH 5.0 file, or a pcap/pcapng of MoldUDP64 or of
    /// IEX-TP (played as its segments, re-sent as captured).
    pub file: PathBuf,
    /// What a pcap/pcapng holds: `itch` (MoldUDP64), `iex-tops`, `iex-deep` or
    /// `iex-deep-plus` (IEX-TP) [default: judged by the first datagrams' content].
    #[arg(long)]
    pub protocol: Option<ReplayProtocol>,
    /// Line A: multicast group and port (a unicast address works too, for one receiver;
    /// port 0 refused).
    #[arg(long, value_name = "G:P", value_parser = parse_exchange_group)]
    pub group: SocketAddrV4,
    /// Line B: the same packets on this group and port too (as --group).
    #[arg(long, value_name = "G:P", value_parser = parse_exchange_group)]
    pub line_b: Option<SocketAddrV4>,
    /// Interface address to send from and serve re-requests on [default: the kernel's
    /// route for the group; re-requests on every address].
    #[arg(long, value_name = "ADDR", default_value_t = Ipv4Addr::UNSPECIFIED)]
    pub interface: Ipv4Addr,
    /// Multicast TTL (1: this subnet).
    #[arg(long, default_value_t = 1)]
    pub ttl: u32,
    /// Do not deliver to receivers on this host (`IP_MULTICAST_LOOP` off).
    #[arg(long)]
    pub no_loop: bool,
    /// Port of the re-request server [default: the group's port + 1; 0: any free port].
    #[arg(long, value_name = "P")]
    pub request_port: Option<u16>,
    /// How fast: `max`, a multiple of the recorded pace (`1x`, `10x`; exchange timestamps of
    /// ITCH files, capture timestamps of pcaps), or a fixed rate (`20000/s`).
    #[arg(long, default_value = "max")]
    pub speed: Speed,
    /// The MoldUDP64 session name, 1 to 10 printable ASCII characters [default: the first
    /// 10 letters and digits of the file name, upper-cased].
    #[arg(long, value_name = "NAME", value_parser = Session::parse)]
    pub session: Option<Session>,
    /// Stream name the counters are published under for `mdbus stat` [default: the
    /// session's].
    #[arg(long)]
    pub name: Option<String>,
    /// Largest datagram, MoldUDP64 header included: the payload budget of a packet.
    #[arg(long, value_name = "BYTES", default_value_t = MTU)]
    pub mtu: usize,
    /// Messages due within this long of a packet's first message share its packet.
    #[arg(long, value_name = "DURATION", default_value = FLUSH_WINDOW)]
    pub flush_window: DurationArg,
    /// A heartbeat after this long without a packet.
    #[arg(long, value_name = "DURATION", default_value = HEARTBEAT, value_parser = parse_positive_duration)]
    pub heartbeat: DurationArg,
    /// How long re-requests are still answered after the end of the session.
    #[arg(long, value_name = "DURATION", default_value = LINGER)]
    pub linger: DurationArg,
    /// Messages per second answered to each requesting host (0: no limit).
    #[arg(long, default_value_t = REPLY_RATE)]
    pub reply_rate: u64,
    /// Inject faults into line A's packets, with the syntax of `mdbus recv --fault`, e.g.
    /// `drop=0.05,seed=7` or `drop=0.01,dup=0.01,reorder=0.02,seed=7` (line B: seed + 1).
    #[arg(long, value_parser = parse_fault)]
    pub fault: Option<FaultConfig>,
    /// Print the counters as JSON on stdout at the end.
    #[arg(long)]
    pub summary: bool,
    /// Bus root directory the counters are published under [default:
    /// /dev/shm/mdbus-<user>/].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Read flags from this TOML file (keys: the long flag names); flags given here win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `--group` and `--line-b` of the exchange: a multicast group, or a unicast receiver.
fn parse_exchange_group(s: &str) -> Result<SocketAddrV4, String> {
    parse_group(s, Unicast::Destination)
}

/// The end-of-run summary as one JSON object, shaped as `mdbus send --summary`'s.
fn summary_json(ex: &Exchange, args: &ExchangeArgs, s: &ExchangeStats) -> serde_json::Value {
    let mut counters = serde_json::Map::new();
    for (name, value) in ExchangeStats::NAMES.iter().zip(s.values()) {
        counters.insert((*name).into(), value.into());
    }
    let mut v = serde_json::Map::new();
    v.insert("role".into(), COUNTERS_ROLE.into());
    let stream = args
        .name
        .clone()
        .unwrap_or_else(|| counters_name(ex.session()));
    v.insert("stream".into(), stream.into());
    v.insert("group".into(), args.group.to_string().into());
    if let Some(b) = args.line_b {
        v.insert("line_b".into(), b.to_string().into());
    }
    match ex.iex() {
        Some(p) => v.insert("protocol".into(), format!("{p:?}").into()),
        None => v.insert("session".into(), ex.session().to_string().trim_end().into()),
    };
    v.insert("file".into(), ex.path().display().to_string().into());
    v.insert("counters".into(), counters.into());
    v.insert("warnings".into(), ex.warnings().to_vec().into());
    serde_json::Value::Object(v)
}

/// Runs `mdbus exchange` to the end of the capture and the linger time, or a signal (the
/// session is ended cleanly then too; a second signal exits at once).
pub fn run_exchange(args: &ExchangeArgs, out: &mut dyn Write) -> Result<(), ExchangeCmdError> {
    let request_port = match args.request_port {
        Some(p) => p,
        None => args.group.port().checked_add(1).ok_or_else(|| {
            ExchangeCmdError::BadArg(format!(
                "--group {}: no port above it for the re-request server; give --request-port",
                args.group
            ))
        })?,
    };
    let bus = mdbus_bus::Bus::open(args.root.as_deref())?;
    let mut cfg = ExchangeConfig::new(args.group);
    cfg.line_b = args.line_b;
    cfg.send.interface = args.interface;
    cfg.send.ttl = args.ttl;
    cfg.send.loopback = !args.no_loop;
    cfg.request_addr = SocketAddrV4::new(args.interface, request_port);
    cfg.session = args.session;
    cfg.speed = args.speed;
    cfg.max_datagram = args.mtu;
    cfg.flush_window = args.flush_window.0;
    cfg.heartbeat_interval = args.heartbeat.0;
    cfg.linger = args.linger.0;
    cfg.reply_rate = args.reply_rate;
    cfg.fault = args.fault.clone().unwrap_or_default();
    cfg.counters = Some((bus.root().to_owned(), args.name.clone()));
    cfg.protocol = args.protocol;
    let mut ex = Exchange::new(&args.file, cfg)?;
    if let Some(p) = ex.iex() {
        let unlike = |d: &DurationArg, default: &str| default.parse().ok() != Some(*d);
        let given: Vec<&str> = [
            ("--session", args.session.is_some()),
            ("--request-port", args.request_port.is_some()),
            ("--mtu", args.mtu != MTU),
            ("--flush-window", unlike(&args.flush_window, FLUSH_WINDOW)),
            ("--heartbeat", unlike(&args.heartbeat, HEARTBEAT)),
            ("--linger", unlike(&args.linger, LINGER)),
            ("--reply-rate", args.reply_rate != REPLY_RATE),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        if !given.is_empty() {
            return Err(ExchangeCmdError::BadArg(format!(
                "{}: an IEX-TP {p:?} capture plays its segments as captured, with no \
                 re-request server: {} do not apply",
                args.file.display(),
                given.join(", ")
            )));
        }
    }
    let setup_warnings = ex.warnings().len();
    for w in ex.warnings() {
        tracing::warn!("mdbus exchange: {w}");
    }
    let request = ex.request_addr()?;
    let line_b = args
        .line_b
        .map(|b| format!(" and {b} (line B)"))
        .unwrap_or_default();
    let fault = args
        .fault
        .as_ref()
        .filter(|f| f.is_active())
        .map(|f| format!(", faults {f} on line A"))
        .unwrap_or_default();
    match ex.iex() {
        Some(p) => tracing::info!(
            "mdbus exchange: playing {} as IEX-TP {p:?} segments on {}{line_b}, speed {}{fault}",
            args.file.display(),
            args.group,
            args.speed,
        ),
        None => tracing::info!(
            "mdbus exchange: playing {} as session {} on {}{line_b}, re-requests on {request}, \
             speed {}{fault}",
            args.file.display(),
            ex.session(),
            args.group,
            args.speed,
        ),
    }
    let stop = super::common::stop_on_signals()?;
    let s = ex.run(&stop);
    for w in &ex.warnings()[setup_warnings..] {
        tracing::warn!("mdbus exchange: {w}");
    }
    eprintln!(
        "mdbus exchange: {} messages in {} packets, {} heartbeats, {} end of session; {} \
         re-requests answered ({} messages resent, {} rate limited, {} bad); {} packets \
         ({} messages) dropped by the fault injector; {} send errors",
        s.messages,
        s.packets,
        s.heartbeats,
        s.end_of_session,
        s.requests,
        s.retransmit_messages,
        s.rate_limited,
        s.bad_requests,
        s.fault_dropped_packets,
        s.fault_dropped,
        s.send_errors,
    );
    let skipped = s.oversize + s.capture_skipped + s.capture_missing + s.capture_errors;
    if skipped > 0 {
        eprintln!(
            "mdbus exchange: not played: {} messages too long for a datagram, {} capture \
             datagrams skipped, {} messages missing from the capture, {} capture read errors",
            s.oversize, s.capture_skipped, s.capture_missing, s.capture_errors
        );
    }
    if args.summary {
        writeln!(out, "{}", summary_json(&ex, args, &s))?;
    }
    Ok(())
}
