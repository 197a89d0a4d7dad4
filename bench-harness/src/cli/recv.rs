//! `mdbus recv`: receive a stream sent by `mdbus send` into a local stream, recovering
//! what was lost.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use mdbus_bus::{Bus, Mode, StreamConfig};
use mdbus_codecs::sequencer::LateJoin;
use mdbus_feed_handlers::book::{EnvelopeBooks, GapPolicy};
use mdbus_feed_handlers::net::fault::FaultConfig;
use mdbus_feed_handlers::net::{
    Idle, LineConfig, Receiver, ReceiverConfig, ReceiverStats, RequestServer,
};
use mdbus_feed_handlers::replay::replay_book_config;

use super::common::{
    CpuArgs, DurationArg, NetCmdError, RingArgs, SessionArgs, StreamArg, counters_json, deprecated,
    parse_fault, parse_idle, parse_multicast_group, parse_server, parse_size_usize, pin_loop,
    stop_on_signals,
};

/// `mdbus recv`: receive a stream into a local stream.
#[derive(clap::Args, Debug, Clone)]
pub struct RecvArgs {
    /// The stream being sent (its name selects the session to follow).
    #[command(flatten)]
    pub stream: StreamArg,
    /// Multicast group and port (line A; a multicast address, port 0 refused).
    #[arg(long, value_name = "G:P", default_value = "239.255.0.1:31000", value_parser = parse_multicast_group)]
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
    /// Line B group and port, for A/B arbitration (as --group).
    #[arg(long, value_name = "G:P", value_parser = parse_multicast_group)]
    pub line_b: Option<SocketAddrV4>,
    /// Source of line B for a source-specific join.
    #[arg(long)]
    pub line_b_source: Option<Ipv4Addr>,
    /// The retransmission server [default: the sender's host, the group's port + 1].
    #[arg(long, value_name = "H:P", value_parser = parse_server)]
    pub request_server: Option<SocketAddrV4>,
    /// Old spelling of --request-server.
    #[arg(long, hide = true, value_name = "H:P", value_parser = parse_server)]
    pub request: Option<SocketAddrV4>,
    /// Do not re-request: missing messages are reported lost after the NAK delay.
    #[arg(long)]
    pub no_recovery: bool,
    /// The NAK delay, where to join, and how implausible jumps are held.
    #[command(flatten)]
    pub session_args: SessionArgs,
    /// Old spelling of --nak-delay, in microseconds.
    #[arg(long, hide = true, value_name = "US")]
    pub nak_delay_us: Option<u64>,
    /// Old spelling of --late-join: `live` (live-edge) or `start` (from-sequence:1).
    #[arg(long, hide = true, value_name = "WHERE", value_parser = ["live", "start"])]
    pub join: Option<String>,
    /// Name of the local stream [default: the stream's name].
    #[arg(long)]
    pub local: Option<String>,
    /// The local stream's ring.
    #[command(flatten)]
    pub ring: RingArgs,
    /// Make the local stream lossless (the receiver waits for local subscribers, up to
    /// --stall-timeout at a time; what it then drops is reported by a gap notice on the
    /// stream).
    #[arg(long)]
    pub lossless: bool,
    /// How long a full lossless local ring is waited for, once per stall; then messages are
    /// dropped without waiting (and reported in one gap notice) until it has room again.
    #[arg(long, value_name = "DURATION", default_value = "100ms")]
    pub stall_timeout: DurationArg,
    /// Old spelling of --stall-timeout, in milliseconds.
    #[arg(long, hide = true, value_name = "MS")]
    pub stall_ms: Option<u64>,
    /// How long the followed session must be silent before a packet of another session of
    /// the stream is followed (a forged packet cannot take the receiver off a live one).
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub session_timeout: DurationArg,
    /// Old spelling of --session-timeout, in milliseconds.
    #[arg(long, hide = true, value_name = "MS")]
    pub session_timeout_ms: Option<u64>,
    /// Old spelling of --jump-confirm, in milliseconds.
    #[arg(long, hide = true, value_name = "MS")]
    pub jump_confirm_ms: Option<u64>,
    /// Follow a newer session of the stream as soon as it appears, even while the followed
    /// one is live (a sender restarted on purpose; trusts anyone who can send to the group).
    #[arg(long)]
    pub follow_newer: bool,
    /// `SO_RCVBUF`, a size (`8MiB`).
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = parse_size_usize)]
    pub rcvbuf: usize,
    /// The cpu of the receiver (one; wins over the layout's `receiver` role).
    #[command(flatten)]
    pub cpus: CpuArgs,
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
    /// Print a JSON summary of the counters at the end of each session (and on exit, for a
    /// session that has not ended).
    #[arg(long)]
    pub summary: bool,
    /// Build books from what was delivered and print, at the end of each session, the same
    /// JSON as `mdbus replay --book-summary` (the books start again with the next session).
    #[arg(long)]
    pub book_summary: bool,
    /// Bus root directory [default: /dev/shm/mdbus-<user>/].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Read flags from this TOML file (keys: the long flag names); flags given here win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl RecvArgs {
    /// Takes the old spellings into the current flags, warning about each.
    pub fn resolve(&mut self) {
        self.stream.resolve("recv");
        self.cpus.resolve("recv");
        self.ring.resolve("recv");
        if let Some(a) = self.request.take() {
            deprecated("recv", "--request", &format!("--request-server {a}"));
            self.request_server = Some(a);
        }
        let ms = |ms: u64| DurationArg(Duration::from_millis(ms));
        if let Some(us) = self.nak_delay_us.take() {
            let d = DurationArg(Duration::from_micros(us));
            deprecated("recv", "--nak-delay-us", &format!("--nak-delay {d}"));
            self.session_args.nak_delay = d;
        }
        if let Some(j) = self.join.take() {
            let (new, late_join) = if j == "start" {
                ("from-sequence:1", LateJoin::FromSequence(1))
            } else {
                ("live-edge", LateJoin::LiveEdge)
            };
            deprecated(
                "recv",
                &format!("--join {j}"),
                &format!("--late-join {new}"),
            );
            self.session_args.late_join = late_join;
        }
        if let Some(n) = self.stall_ms.take() {
            deprecated("recv", "--stall-ms", &format!("--stall-timeout {}", ms(n)));
            self.stall_timeout = ms(n);
        }
        if let Some(n) = self.session_timeout_ms.take() {
            deprecated(
                "recv",
                "--session-timeout-ms",
                &format!("--session-timeout {}", ms(n)),
            );
            self.session_timeout = ms(n);
        }
        if let Some(n) = self.jump_confirm_ms.take() {
            deprecated(
                "recv",
                "--jump-confirm-ms",
                &format!("--jump-confirm {}", ms(n)),
            );
            self.session_args.jump_confirm = ms(n);
        }
    }
}

/// Runs `mdbus recv` until a signal or (with `--exit-at-end`) the end of the session.
pub fn run_recv(args: &RecvArgs, out: &mut dyn Write) -> Result<(), NetCmdError> {
    let bus = Bus::open(args.root.as_deref())?;
    let mut cfg = ReceiverConfig::new(args.stream.name(), args.group);
    if let Some(l) = &args.local {
        cfg.local_stream = l.clone();
    }
    cfg.ring = StreamConfig {
        capacity: args.ring.ring_size,
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
    cfg.request_server = match (args.no_recovery, args.request_server) {
        (true, _) => RequestServer::None,
        (false, Some(a)) => RequestServer::Addr(a),
        (false, None) => RequestServer::SourcePort(args.group.port().wrapping_add(1)),
    };
    cfg.sequencer.nak_delay = args.session_args.nak_delay.0;
    cfg.sequencer.max_gap = args.session_args.max_gap;
    cfg.sequencer.jump_confirm = args.session_args.jump_confirm.0;
    cfg.sequencer.late_join = args.session_args.late_join;
    cfg.rcvbuf = args.rcvbuf;
    cfg.idle = args.idle;
    cfg.fault = args.fault.clone().unwrap_or_default();
    cfg.exit_at_end_of_session = args.exit_at_end;
    cfg.stall_timeout = args.stall_timeout.0;
    cfg.session_timeout = args.session_timeout.0;
    cfg.follow_newer = args.follow_newer;
    let local = cfg.local_stream.clone();
    let receiver = Receiver::new(&bus, cfg)?;
    for w in receiver.warnings() {
        tracing::warn!("mdbus recv: {w}");
    }
    tracing::info!(
        "mdbus recv: {} stream {:?} -> local stream {local:?} under {}",
        args.group,
        args.stream.name(),
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
    pin_loop("recv", &args.cpus, &["receiver"])?;
    let stop = stop_on_signals()?;
    // The summaries are printed at the end of each session while the receiver goes on to the
    // next one (the counters as last published, within a millisecond), and at exit for a
    // session that did not end; with --exit-at-end, once, at exit, with the final counters.
    let counters_path = bus.root().join(format!("{local}.recv.stat"));
    let mut printed_through_end = false;
    let print_session = |books: &mut Option<EnvelopeBooks>,
                         counters: Option<serde_json::Map<String, serde_json::Value>>,
                         out: &mut dyn Write|
     -> std::io::Result<()> {
        if let Some(c) = counters {
            let mut obj = serde_json::Map::new();
            obj.insert("role".into(), "recv".into());
            obj.insert("stream".into(), args.stream.name().into());
            obj.insert("local_stream".into(), local.clone().into());
            obj.insert("group".into(), args.group.to_string().into());
            obj.extend(c);
            writeln!(out, "{}", serde_json::Value::Object(obj))?;
        }
        if let Some(b) = books {
            if b.invalid() > 0 {
                tracing::warn!("mdbus recv: {} envelopes failed verification", b.invalid());
            }
            writeln!(out, "{}", b.summary_json())?;
        }
        out.flush()
    };
    let stats = if books.is_some() || args.summary {
        let mut failed: Option<std::io::Error> = None;
        let stats = receiver.run_with(&stop, &mut |t, p| {
            // Each record is verified once: by the books when they are built, else here.
            let event = match &mut books {
                Some(b) => b.observe_record(t, p),
                None => (t == mdbus_bus::ENVELOPE_MSG_TYPE)
                    .then(|| mdbus_bus::schema::read_verified(p).ok())
                    .flatten()
                    .map(|e| e.event_type()),
            };
            let ended = event == Some(mdbus_bus::schema::Event::EndOfSession);
            printed_through_end = ended && !args.exit_at_end;
            if printed_through_end {
                // The counters as the receiver last published them (every millisecond).
                let counters = args.summary.then(|| session_counters(&counters_path));
                if let Err(e) = print_session(&mut books, counters, out) {
                    failed.get_or_insert(e);
                }
                if let Some(b) = &mut books {
                    b.reset();
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        stats
    } else {
        receiver.run(&stop)?
    };
    report_recv(&stats);
    if !printed_through_end {
        let counters = args.summary.then(|| {
            let mut c = serde_json::Map::new();
            c.insert("lost".into(), stats.lost().into());
            c.insert(
                "counters".into(),
                counters_json(&ReceiverStats::NAMES, &stats.values()).into(),
            );
            c
        });
        print_session(&mut books, counters, out)?;
    }
    Ok(())
}

/// `lost` and `counters` as the receiver's counters file holds them (an empty object when it
/// cannot be read).
fn session_counters(path: &std::path::Path) -> serde_json::Map<String, serde_json::Value> {
    let mut c = serde_json::Map::new();
    if let Ok(snap) = mdbus_shm::counters::read_counters(path) {
        let lost = snap.get("unrecoverable").unwrap_or(0) + snap.get("local_lost").unwrap_or(0);
        c.insert("lost".into(), lost.into());
        let values: serde_json::Map<_, _> = snap
            .counters
            .iter()
            .map(|(n, v)| (n.clone(), serde_json::Value::from(*v)))
            .collect();
        c.insert("counters".into(), values.into());
    }
    c
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
