//! `mdbus feed`: command-line glue over the live ITCH 5.0 over MoldUDP64 feed handler
//! ([`mdbus_feed_handlers::live`]) and, with `--book`, the book service
//! ([`mdbus_feed_handlers::bookstream`]).
//!
//! Besides the lines and the retransmission server, flags tune how gaps are recovered: one for
//! each field of [`SequencerConfig`], with the library's defaults.
//!
//! * `--session <NAME>` (learned from the first packet): the MoldUDP64 session to follow, 1
//!   to 10 printable ASCII characters, padded with spaces to the protocol's 10 bytes; packets
//!   of any other session are counted and ignored.
//! * `--nak-delay <DURATION>` (`1ms`): how long a missing message may be merely reordered
//!   before it is re-requested.
//! * `--request-timeout <DURATION>` (`10ms`): the wait for an answer before asking again.
//! * `--max-retries <N>` (`4`): re-sends of a request before its messages are declared lost.
//! * `--backoff-factor <N>` (`2`) and `--backoff-max <DURATION>` (`200ms`): the wait for an
//!   answer is multiplied by the factor after each attempt (1: the same wait every time), up
//!   to the cap (the `backoff` field: `factor` and `max`).
//! * `--max-outstanding-requests <N>` (`8`): re-requests in flight at once (0: gaps are
//!   declared lost after the NAK delay).
//! * `--max-request-messages <N>` (`1024`): most messages asked for by one request.
//! * `--coalesce-within <N>` (`16`): missing ranges this close are asked for in one request.
//! * `--reorder-bytes <SIZE>` (`16777216`, 16 MiB) and `--reorder-messages <N>` (`65536`):
//!   the store of messages that arrive ahead of a gap, in bytes and in how far ahead of the
//!   next expected message it reaches (`reorder_capacity_bytes` and
//!   `reorder_capacity_messages`: at most 4294967295 bytes and 2^30 messages, as the
//!   sequencer accepts; 0 is refused, as no gap could then be recovered).
//! * `--max-gaps <N>` (`4096`): separate missing ranges tracked at once (2 to 1,048,576).
//! * `--late-join <live-edge|from-sequence:SEQ>` (`live-edge`): where to start in a running
//!   session.
//! * `--max-gap <N>` (`1000000`): the largest forward jump of sequence numbers taken at face
//!   value; a packet reaching further is counted and not acted on until corroborated.
//!
//! The NAK delay, the late join, the max gap and `--jump-confirm` are `mdbus recv`'s too
//! ([`SessionArgs`]).
//!
//! Three more say how the feed runs: `--ring-size <SIZE>` sizes the feed stream's ring (a
//! power of two; 16 MiB by default, as for a replay), `--idle <spin|yield|sleep:DURATION>`
//! what the feed thread does between datagrams (`spin` by default) and
//! `--heartbeat-events <DURATION>` publishes a heartbeat event on the streams at that interval
//! while the feed is quiet (off by default: only the liveness stamp). `--fault <SPEC>` injects
//! seeded faults into the packets received on the lines, as `mdbus recv --fault` does (for
//! tests and benchmarks). The feed's counters are in the bus root under role `feed`
//! (`mdbus stat`). Durations are a number and a unit (`500us`, `2ms`, `1s`), sizes bytes or a
//! number and a unit (`16MiB`). A bad value is refused before anything is set up, with a
//! message naming the flag and the value (exit status 2). `--config FILE` reads the flags
//! from a TOML file ([`super::config`]).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use clap::builder::RangedU64ValueParser;
use mdbus_bus::{Bus, Mode, SubscribeOptions};
use mdbus_codecs::moldudp64::Session;
use mdbus_codecs::sequencer::{Backoff, SequencerConfig};
use mdbus_feed_handlers::bookstream::{BookService, BookServiceConfig, BookServiceStats};
use mdbus_feed_handlers::live::{Idle, LineConfig, LiveError, LiveFeed, LiveFeedConfig, LiveStats};
use mdbus_feed_handlers::net::fault::FaultConfig;
use mdbus_feed_handlers::pipeline::{FeedPipeline, PipelineStats};
use mdbus_feed_handlers::replay::{ReplayProtocol, replay_ring};

use super::common::{
    CmdError, CpuArgs, DurationArg, RingArgs, SessionArgs, Unicast, feed_pinning, join_book_thread,
    log_pinning, parse_fault, parse_group, parse_idle, parse_positive_duration, parse_server,
    parse_size_usize, print_book_line, spawn_book_thread, stop_on_signals,
};

/// `mdbus feed`: receive a live ITCH 5.0 feed (MoldUDP64 over UDP) onto a bus stream.
///
/// While it runs its counters are in the bus root (role `feed`, stream `--feed`; with
/// `--book` also role `book`, same stream), for `mdbus stat`.
#[derive(clap::Args, Debug, Clone)]
pub struct FeedArgs {
    /// Line A: multicast group and port (`233.54.12.111:26477`; port 0 refused), or a
    /// unicast address to bind (port 0: any free port).
    #[arg(long, value_name = "G:P", value_parser = parse_feed_group)]
    pub group: SocketAddrV4,
    /// Source of line A for a source-specific join [default: any source].
    #[arg(long, value_name = "S")]
    pub source: Option<Ipv4Addr>,
    /// Address of the local interface to join on and send re-requests from [default: the
    /// kernel's choice].
    #[arg(long, value_name = "I", default_value_t = Ipv4Addr::UNSPECIFIED)]
    pub interface: Ipv4Addr,
    /// Line B: group and port of the redundant copy of the feed (as --group).
    #[arg(long, value_name = "G:P", value_parser = parse_feed_group)]
    pub line_b: Option<SocketAddrV4>,
    /// Source of line B for a source-specific join [default: any source].
    #[arg(long, value_name = "S", requires = "line_b")]
    pub line_b_source: Option<Ipv4Addr>,
    /// The retransmission server that answers re-requests [default: none; missing messages
    /// are declared lost].
    #[arg(long, value_name = "H:P", value_parser = parse_server)]
    pub request_server: Option<SocketAddrV4>,
    /// `SO_RCVBUF` of each line socket, a size (0: the system default); a warning is
    /// printed when the kernel grants less.
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = parse_size_usize)]
    pub rcvbuf: usize,
    /// The stream to publish on; the book service adds `<feed>.book`, `<feed>.levels` and
    /// `<feed>.trades`.
    #[arg(long, default_value = "itch")]
    pub feed: String,
    /// Bus root directory [default: /dev/shm/mdbus-<user>/].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Also run the book service: BBO on `<feed>.book`, price levels on `<feed>.levels`,
    /// priced trades on `<feed>.trades` (makes the feed stream lossless).
    #[arg(long)]
    pub book: bool,
    /// Print the book summary at the end as one JSON object on stdout, as
    /// `mdbus replay --book-summary` does (runs the book service, as --book).
    #[arg(long)]
    pub book_summary: bool,
    /// Print the feed handler's counters at the end as one JSON object on stdout (with the
    /// book service's under `book_service` when it ran).
    #[arg(long)]
    pub summary: bool,
    /// The MoldUDP64 session to follow: 1 to 10 printable ASCII characters (padded with
    /// spaces to 10, as the protocol does); packets of any other session are counted and
    /// ignored [default: learned from the first packet].
    #[arg(long, value_name = "NAME", value_parser = Session::parse)]
    pub session: Option<Session>,
    /// The NAK delay, where to join, and how implausible jumps are held.
    #[command(flatten)]
    pub session_args: SessionArgs,
    /// How long to wait for the answer to a re-request before asking again (more than 0;
    /// the wait then grows as --backoff-factor and --backoff-max say): a whole number and a
    /// unit, `ns`, `us`, `ms` or `s`.
    #[arg(
        long,
        value_name = "DURATION",
        default_value_t = DurationArg(SequencerConfig::default().request_timeout),
        value_parser = parse_positive_duration
    )]
    pub request_timeout: DurationArg,
    /// Re-sends of a re-request after the first before its messages are declared lost (0: ask
    /// once).
    #[arg(long, value_name = "N", default_value_t = SequencerConfig::default().max_retries)]
    pub max_retries: u32,
    /// After each unanswered attempt the wait for an answer is multiplied by this (at least 1;
    /// 1: the same wait before every retry).
    #[arg(
        long,
        value_name = "N",
        default_value_t = SequencerConfig::default().backoff.factor,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub backoff_factor: u32,
    /// The longest wait for an answer, however many attempts (a cap below --request-timeout
    /// leaves the wait at --request-timeout): a whole number and a unit, `ns`, `us`, `ms` or
    /// `s`.
    #[arg(
        long,
        value_name = "DURATION",
        default_value_t = DurationArg(SequencerConfig::default().backoff.max)
    )]
    pub backoff_max: DurationArg,
    /// Re-requests in flight at once (0: no re-requests; missing messages are declared lost
    /// after the NAK delay). Without --request-server nothing is re-requested anyway.
    #[arg(
        long,
        value_name = "N",
        default_value_t = SequencerConfig::default().max_outstanding_requests,
        value_parser = RangedU64ValueParser::<usize>::new().range(0..=MAX_OUTSTANDING)
    )]
    pub max_outstanding_requests: usize,
    /// Most messages asked for by one re-request (MoldUDP64 counts are 16-bit); larger gaps
    /// are split into several requests.
    #[arg(
        long,
        value_name = "N",
        default_value_t = SequencerConfig::default().max_request_messages,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub max_request_messages: u16,
    /// Two missing ranges separated by at most this many received messages are asked for in
    /// one re-request (the messages in between come back as duplicates; 0: never merge).
    #[arg(
        long,
        value_name = "N",
        default_value_t = SequencerConfig::default().coalesce_within
    )]
    pub coalesce_within: u16,
    /// Size of the reorder store, which holds messages that arrive ahead of a gap until it
    /// is filled (1..=4294967295 bytes, e.g. `16MiB`; allocated at start). When it is full,
    /// the oldest gap is given up.
    #[arg(
        long,
        value_name = "SIZE",
        default_value_t = SequencerConfig::default().reorder_capacity_bytes,
        value_parser = parse_reorder_bytes
    )]
    pub reorder_bytes: usize,
    /// How far ahead of the next expected message the reorder store reaches, in messages
    /// (1 to 1073741824, rounded up to a power of two; 32 bytes each, allocated at start).
    #[arg(
        long,
        value_name = "N",
        default_value_t = SequencerConfig::default().reorder_capacity_messages,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_REORDER_MESSAGES)
    )]
    pub reorder_messages: usize,
    /// Separate missing ranges tracked at once (2 to 1048576); when there are more, the
    /// oldest is given up.
    #[arg(
        long,
        value_name = "N",
        default_value_t = SequencerConfig::default().max_gaps,
        value_parser = RangedU64ValueParser::<usize>::new().range(2..=MAX_GAPS)
    )]
    pub max_gaps: usize,
    /// The feed stream's ring.
    #[command(flatten)]
    pub ring: RingArgs,
    /// What the feed thread does between datagrams: `spin` (busy-poll a whole core, the
    /// lowest latency), `yield` (give the core to other threads, then poll again) or
    /// `sleep:DURATION` (sleep that long, e.g. `sleep:50us`; adds up to that much latency; a
    /// bare number is microseconds, as in `mdbus recv --idle`).
    #[arg(long, value_name = "HOW", default_value = "spin", value_parser = parse_idle)]
    pub idle: Idle,
    /// Publish a heartbeat event on the feed's streams at this interval while the feed is
    /// quiet (more than 0): a whole number and a unit, `ns`, `us`, `ms` or `s` [default: none;
    /// only the liveness stamp, which is always kept].
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub heartbeat_events: Option<DurationArg>,
    /// Inject faults into the packets received on the lines, e.g.
    /// `drop=0.01,dup=0.01,reorder=0.02,seed=7` or `drop-seq=100-120` (for tests and
    /// benchmarks) [default: none].
    #[arg(long, value_name = "SPEC", value_parser = parse_fault)]
    pub fault: Option<FaultConfig>,
    /// Cpus for the feed handler and, with --book, the book builder (one cpu: both share it).
    #[command(flatten)]
    pub cpus: CpuArgs,
    /// The feed: `itch` (ITCH 5.0 over MoldUDP64), or `iex-tops`, `iex-deep`,
    /// `iex-deep-plus` (IEX over IEX-TP: no re-requests, line B is the recovery; runs until
    /// a signal, as IEX-TP has no end of session; --book runs the book service on its
    /// stream as for ITCH, --book-summary prints IEX's summary form).
    #[arg(long, default_value = "itch")]
    pub protocol: ReplayProtocol,
    /// Read flags from this TOML file (keys: the long flag names); flags given here win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl FeedArgs {
    /// Takes the old spellings into the current flags, warning about each.
    pub fn resolve(&mut self) {
        self.ring.resolve("feed");
        self.cpus.resolve("feed");
    }
}

impl From<LiveError> for CmdError {
    fn from(e: LiveError) -> Self {
        CmdError::BadArg(format!("live feed: {e}"))
    }
}

/// The live configuration of `args`.
fn live_config(args: &FeedArgs) -> LiveFeedConfig {
    LiveFeedConfig {
        source: args.source,
        interface: args.interface,
        line_b: args.line_b.map(|group| LineConfig {
            group,
            source: args.line_b_source,
        }),
        rcvbuf: args.rcvbuf,
        request_server: args.request_server,
        // Placed by `Pinning` on the feed thread instead.
        core: None,
        // Every field named: a new one is a compile error here until it has a flag.
        sequencer: SequencerConfig {
            session: args.session,
            nak_delay: args.session_args.nak_delay.0,
            request_timeout: args.request_timeout.0,
            max_retries: args.max_retries,
            backoff: Backoff {
                factor: args.backoff_factor,
                max: args.backoff_max.0,
            },
            max_outstanding_requests: args.max_outstanding_requests,
            max_request_messages: args.max_request_messages,
            coalesce_within: args.coalesce_within,
            reorder_capacity_bytes: args.reorder_bytes,
            reorder_capacity_messages: args.reorder_messages,
            max_gaps: args.max_gaps,
            late_join: args.session_args.late_join,
            max_gap: args.session_args.max_gap,
            jump_confirm: args.session_args.jump_confirm.0,
        },
        idle: args.idle,
        heartbeat_events: args.heartbeat_events.map(|d| d.0),
        fault: args.fault.clone().unwrap_or_default(),
        ..LiveFeedConfig::new(args.group)
    }
}

/// `--group` and `--line-b` of a feed: a multicast group, or a unicast address to bind.
fn parse_feed_group(s: &str) -> Result<SocketAddrV4, String> {
    parse_group(s, Unicast::Bind)
}

/// `--reorder-bytes`: a size of 1 to 4294967295 bytes (the sequencer's offsets are 32-bit).
fn parse_reorder_bytes(s: &str) -> Result<usize, String> {
    match parse_size_usize(s)? {
        n @ 1..=MAX_REORDER_BYTES_USIZE => Ok(n),
        n => Err(format!("{n} bytes is not in 1..={MAX_REORDER_BYTES}")),
    }
}

/// [`MAX_REORDER_BYTES`] as a `usize`.
const MAX_REORDER_BYTES_USIZE: usize = u32::MAX as usize;

/// Most re-requests in flight `--max-outstanding-requests` accepts (the sequencer sizes its
/// table of them once, at start).
const MAX_OUTSTANDING: u64 = 65_535;

/// Largest reorder store `--reorder-bytes` accepts: the sequencer's (offsets are 32-bit).
const MAX_REORDER_BYTES: u64 = u32::MAX as u64;

/// Longest reorder window `--reorder-messages` accepts: the sequencer's.
const MAX_REORDER_MESSAGES: u64 = 1 << 30;

/// Most missing ranges `--max-gaps` accepts (the sequencer sizes its tables of them once, at
/// start; it sets no bound of its own).
const MAX_GAPS: u64 = 1 << 20;

/// Runs `mdbus feed` until the end of the session or SIGINT/SIGTERM, writing its JSON to
/// `out` and its report and warnings to stderr (setup warnings, such as a clamped receive
/// buffer, are printed by [`LiveFeed::bind`]).
pub fn run_feed(args: &FeedArgs, out: &mut dyn Write) -> Result<(), CmdError> {
    if let Some(protocol) = args.protocol.iex() {
        return run_feed_iex(args, protocol, out);
    }
    let with_book = args.book || args.book_summary;
    let pinning = feed_pinning(&args.cpus.cpus, &args.cpus.layout, with_book)?;

    let stop = stop_on_signals()
        .map_err(|e| CmdError::Internal(format!("cannot catch SIGINT and SIGTERM: {e}")))?;

    let bus = Bus::open(args.root.as_deref())?;
    let mut ring = replay_ring();
    ring.capacity = args.ring.ring_size;
    if with_book {
        ring.mode = Mode::Lossless;
    }
    let mut pipeline = FeedPipeline::new(&bus, &args.feed, &ring)
        .map_err(|e| CmdError::BadArg(format!("stream {:?}: {e}", args.feed)))?;
    // The book service subscribes before anything is published.
    let book = if with_book {
        let mut svc = BookService::new(&bus, &args.feed, &BookServiceConfig::default())?;
        // Live: the whole day's order table now, never a growth mid-session.
        svc.preallocate()?;
        svc.publish_counters(&bus)?;
        let input = bus.subscriber(&args.feed, &SubscribeOptions::default())?;
        Some((svc, input))
    } else {
        None
    };
    let mut feed = LiveFeed::bind(live_config(args))?;
    feed.publish_counters(&bus, &args.feed)?;
    let line_a = feed
        .line_a_addr()
        .map_err(|e| CmdError::Internal(format!("the address of line A: {e}")))?;
    match args.line_b {
        Some(b) => tracing::info!("mdbus feed: listening on {line_a} (line A) and {b} (line B)"),
        None => tracing::info!("mdbus feed: listening on {line_a}"),
    }

    // The feed handler and the book builder each run on a thread of their own, placed by
    // `pinning` (their layout roles applied when a layout is in use).
    let (result, book_out) = std::thread::scope(|s| {
        let (pinning, stop) = (&pinning, &*stop);
        let service = spawn_book_thread(s, pinning, book, stop)?;
        let handler = std::thread::Builder::new()
            .name("mdbus-feed".into())
            .spawn_scoped(s, move || {
                pinning.enter(0);
                let r = feed.run(&mut pipeline, stop);
                // Closing the stream lets the book service finish once it has read it all.
                drop(pipeline);
                r
            });
        let result = match handler {
            Ok(h) => h
                .join()
                .map_err(|_| CmdError::Internal("the feed handler thread panicked".into())),
            Err(e) => Err(CmdError::Internal(format!(
                "cannot start the feed handler thread: {e}"
            ))),
        };
        if !matches!(result, Ok(Ok(ref st)) if st.ended) {
            // Stopped by a signal or failed: the service stops once the stream is drained.
            stop.store(true, Ordering::Relaxed);
        }
        let book_out = join_book_thread(service);
        Ok::<_, CmdError>((result, book_out))
    })?;
    log_pinning("", &pinning);
    let stats = result??;
    let book_out = book_out?.map(|(stats, svc)| (stats, svc.summary()));
    print_report(&stats, book_out.as_ref().map(|(b, _)| b), &args.feed);
    if args.summary {
        let mut v = stats_json(&stats);
        if let (Some((b, _)), Some(obj)) = (&book_out, v.as_object_mut()) {
            obj.insert(
                "book_service".into(),
                serde_json::to_value(b).unwrap_or_default(),
            );
        }
        writeln!(out, "{v}")?;
    }
    if let (true, Some((_, summary))) = (args.book_summary, &book_out) {
        writeln!(out, "{}", summary.to_json())?;
    }
    Ok(())
}

/// The counters of a live feed as one JSON object.
pub fn stats_json(s: &LiveStats) -> serde_json::Value {
    let q = &s.sequencer;
    let p = &s.pipeline;
    serde_json::json!({
        "session": s.session.map(|x| x.to_string()),
        "ended": s.ended,
        "packets_a": s.packets_a,
        "packets_b": s.packets_b,
        "packets_recovery": s.packets_recovery,
        "requests_sent": s.requests_sent,
        "request_errors": s.request_errors,
        "recv_errors": s.recv_errors,
        "fault_dropped": s.fault_dropped,
        "rcvbuf": s.rcvbuf,
        "warnings": s.warnings,
        "sequencer": {
            "packets": q.packets,
            "messages": q.messages,
            "duplicates": q.duplicates,
            "out_of_order": q.out_of_order,
            "gaps_detected": q.gaps_detected,
            "requests_sent": q.requests_sent,
            "recovered": q.recovered,
            "unrecoverable": q.unrecoverable,
            "foreign_session": q.foreign_session,
            "malformed": q.malformed,
            "late_join": q.late_join,
            "heartbeats": q.heartbeats,
            "not_available": q.not_available,
            "overflows": q.overflows,
            "implausible_jumps": q.implausible_jumps,
            "jumps_corroborated": q.jumps_corroborated,
            "forged_end_of_session": q.forged_end_of_session,
            "anchors_replaced": q.anchors_replaced,
            "zero_sequence": q.zero_sequence,
        },
        "pipeline": {
            "messages": p.messages,
            "published": p.published,
            "decode_errors": p.decode_errors,
            "publish_errors": p.publish_errors,
            "back_pressured": p.back_pressured,
            "gap_notices": p.gap_notices,
            "lost": p.lost,
            "unrouted": p.unrouted,
            "stalls": p.stalls,
            "dropped": p.dropped,
            "drop_notices": p.drop_notices,
            "notices_unpublished": p.notices_unpublished,
        },
    })
}

/// The human-readable report, on stderr (stdout carries JSON only).
fn print_report(s: &LiveStats, book: Option<&BookServiceStats>, feed: &str) {
    let q = &s.sequencer;
    eprintln!(
        "mdbus feed: {} messages published onto stream {feed:?} ({}; session {})",
        s.pipeline.messages,
        if s.ended { "end of session" } else { "stopped" },
        s.session
            .map_or_else(|| "not seen".to_owned(), |x| x.to_string()),
    );
    eprintln!(
        "  packets: {} line A, {} line B, {} recovery; gaps {} detected, {} messages recovered, {} lost; {} re-requests",
        s.packets_a,
        s.packets_b,
        s.packets_recovery,
        q.gaps_detected,
        q.recovered,
        q.unrecoverable,
        s.requests_sent
    );
    if s.fault_dropped > 0 {
        eprintln!("  fault injector: {} packets dropped", s.fault_dropped);
    }
    if q.implausible_jumps > 0 || q.forged_end_of_session > 0 || q.zero_sequence > 0 {
        eprintln!(
            "  implausible input ignored: {} jumps beyond --max-gap ({} later corroborated), {} \
             ends of session below what was known, {} packets numbered 0, {} live-edge anchors \
             replaced",
            q.implausible_jumps,
            q.jumps_corroborated,
            q.forged_end_of_session,
            q.zero_sequence,
            q.anchors_replaced
        );
    }
    if s.pipeline.decode_errors > 0 || s.pipeline.publish_errors > 0 || q.malformed > 0 {
        eprintln!(
            "  bad input: {} undecodable messages, {} malformed packets, {} records not published",
            s.pipeline.decode_errors, q.malformed, s.pipeline.publish_errors
        );
    }
    if let Some(line) = stall_line(&s.pipeline) {
        eprintln!("{line}");
    }
    if let Some(b) = book {
        print_book_line(b, feed);
    }
}

/// The report's line on a lossless subscriber that held the feed back, if one did.
fn stall_line(p: &PipelineStats) -> Option<String> {
    (p.stalls > 0 || p.dropped > 0).then(|| {
        format!(
            "  lossless subscriber stalled: {} times; {} records given up, {} source messages \
             lost in all; {} gap notices published for them, {} not published",
            p.stalls, p.dropped, p.lost, p.drop_notices, p.notices_unpublished
        )
    })
}

/// `mdbus feed --protocol iex-*`: the live IEX feed handler until SIGINT/SIGTERM, its
/// books (with --book or --book-summary) kept on the feed thread as `mdbus replay` keeps them.
fn run_feed_iex(
    args: &FeedArgs,
    protocol: mdbus_codecs::iex::tp::Protocol,
    out: &mut dyn Write,
) -> Result<(), CmdError> {
    use mdbus_feed_handlers::book::IexBooks;
    use mdbus_feed_handlers::replay::replay_book_config;
    use mdbus_feed_handlers::venue::{Framing, Iex};

    if let Some(server) = args.request_server {
        return Err(CmdError::BadArg(format!(
            "--request-server {server}: an IEX-TP feed sends no re-requests (line B is its \
             recovery)"
        )));
    }
    let pinning = feed_pinning(&args.cpus.cpus, &args.cpus.layout, args.book)?;
    let stop = stop_on_signals()
        .map_err(|e| CmdError::Internal(format!("cannot catch SIGINT and SIGTERM: {e}")))?;
    let bus = Bus::open(args.root.as_deref())?;
    let mut ring = replay_ring();
    ring.capacity = args.ring.ring_size;
    if args.book {
        ring.mode = Mode::Lossless;
    }
    let mut pipeline =
        FeedPipeline::with_venue(Iex::for_protocol(protocol), &bus, &args.feed, &ring)
            .map_err(|e| CmdError::BadArg(format!("stream {:?}: {e}", args.feed)))?;
    // --book: the book service on the feed's stream, as for ITCH (it reads IEX envelopes);
    // --book-summary: the books in IEX's summary form, kept on the feed thread.
    let book = if args.book {
        let mut svc = BookService::new(&bus, &args.feed, &BookServiceConfig::default())?;
        // Live: the whole day's order table now, never a growth mid-session.
        svc.preallocate()?;
        svc.publish_counters(&bus)?;
        let input = bus.subscriber(&args.feed, &SubscribeOptions::default())?;
        Some((svc, input))
    } else {
        None
    };
    let mut books = match args.book_summary {
        true => Some(
            IexBooks::new(replay_book_config())
                .map_err(|e| CmdError::Internal(format!("the IEX books: {e}")))?,
        ),
        false => None,
    };
    let mut config = live_config(args);
    config.framing = Framing::IexTp;
    config.iex_protocol = Some(protocol);
    let mut feed = LiveFeed::bind(config)?;
    feed.publish_counters(&bus, &args.feed)?;
    let line_a = feed
        .line_a_addr()
        .map_err(|e| CmdError::Internal(format!("the address of line A: {e}")))?;
    let line_b = args
        .line_b
        .map(|b| format!(" and {b} (line B)"))
        .unwrap_or_default();
    tracing::info!("mdbus feed: IEX-TP {protocol:?}, listening on {line_a} (line A){line_b}");
    let (result, book_out) = std::thread::scope(|s| {
        let (pinning, stop, pipeline, books) = (&pinning, &*stop, &mut pipeline, &mut books);
        let service = spawn_book_thread(s, pinning, book, stop)?;
        let handler = std::thread::Builder::new()
            .name("mdbus-feed".into())
            .spawn_scoped(s, move || {
                pinning.enter(0);
                match books {
                    Some(b) => feed.run_with_books(pipeline, b, stop),
                    None => feed.run(pipeline, stop),
                }
            });
        let result = match handler {
            Ok(h) => h
                .join()
                .map_err(|_| CmdError::Internal("the feed handler thread panicked".into())),
            Err(e) => Err(CmdError::Internal(format!(
                "cannot start the feed handler thread: {e}"
            ))),
        };
        // IEX-TP has no end of session: the feed stopped on a signal or failed, and the
        // service stops once it has drained the stream.
        stop.store(true, Ordering::Relaxed);
        let book_out = join_book_thread(service);
        Ok::<_, CmdError>((result, book_out))
    })?;
    log_pinning("", &pinning);
    let stats = result??;
    let book_out = book_out?;
    print_report(&stats, book_out.as_ref().map(|(b, _)| b), &args.feed);
    let x = &stats.iex;
    eprintln!(
        "  IEX-TP: {} restarts of the sequence at 1, {} cut and {} damaged segments, {} \
         segments of another protocol, {} stale messages",
        x.restarts, x.cut_segments, x.damaged_segments, x.foreign_protocol, x.stale_messages
    );
    if args.summary {
        let mut v = stats_json(&stats);
        if let (Some((b, _)), Some(obj)) = (&book_out, v.as_object_mut()) {
            obj.insert(
                "book_service".into(),
                serde_json::to_value(b).unwrap_or_default(),
            );
        }
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "iex".into(),
                serde_json::json!({
                    "protocol": format!("{protocol:?}"),
                    "restarts": x.restarts,
                    "cut_segments": x.cut_segments,
                    "damaged_segments": x.damaged_segments,
                    "foreign_protocol": x.foreign_protocol,
                    "stale_messages": x.stale_messages,
                    "gaps": stats.gaps,
                }),
            );
        }
        writeln!(out, "{v}")?;
    }
    if let (true, Some(books)) = (args.book_summary, &mut books) {
        let directory = pipeline.venue_mut().normalizer().directory();
        writeln!(out, "{}", books.summary(directory, stats.gaps).to_json())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::common::{parse_late_join, parse_ring_size};
    use super::*;
    use clap::Parser;
    use mdbus_codecs::sequencer::LateJoin;
    use std::time::Duration;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        feed: FeedArgs,
    }

    fn parse(args: &[&str]) -> Result<FeedArgs, clap::Error> {
        Cli::try_parse_from(["feed", "--group", "127.0.0.1:0"].iter().chain(args)).map(|c| c.feed)
    }

    #[test]
    fn stalls_and_what_they_cost_are_in_the_summary() {
        let mut s = LiveStats::default();
        assert_eq!(stall_line(&s.pipeline), None);
        s.pipeline = PipelineStats {
            stalls: 2,
            dropped: 41,
            lost: 40,
            drop_notices: 1,
            notices_unpublished: 1,
            ..PipelineStats::default()
        };
        let j = stats_json(&s);
        let p = &j["pipeline"];
        assert_eq!(
            (
                &p["stalls"],
                &p["dropped"],
                &p["lost"],
                &p["drop_notices"],
                &p["notices_unpublished"]
            ),
            (&2.into(), &41.into(), &40.into(), &1.into(), &1.into()),
            "{j}"
        );
        let line = stall_line(&s.pipeline).unwrap();
        assert!(
            line.contains("stalled: 2 times; 41 records given up, 40 source messages lost"),
            "{line}"
        );
    }

    #[test]
    fn other_flag_values_parse() {
        assert_eq!(parse_late_join("live-edge"), Ok(LateJoin::LiveEdge));
        assert_eq!(
            parse_late_join("from-sequence:1"),
            Ok(LateJoin::FromSequence(1))
        );
        assert!(parse_late_join("from-sequence:0").is_err());
        assert!(parse_late_join("from-sequence:x").is_err());
        assert!(parse_late_join("start").is_err());
        assert_eq!(parse_ring_size("4096"), Ok(4096));
        assert_eq!(parse_ring_size("16777216"), Ok(16 << 20));
        assert_eq!(parse_ring_size("16MiB"), Ok(16 << 20));
        for bad in ["0", "2048", "3000000", "3MiB", "-4096", "16 parsecs"] {
            assert!(parse_ring_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_idle("spin"), Ok(Idle::BusyPoll));
        assert_eq!(parse_idle("yield"), Ok(Idle::Yield));
        assert_eq!(
            parse_idle("sleep:50us"),
            Ok(Idle::Sleep(Duration::from_micros(50)))
        );
        assert_eq!(
            parse_idle("sleep:250"),
            Ok(Idle::Sleep(Duration::from_micros(250)))
        );
        for bad in ["nap", "sleep:", "sleep:5 parsecs", "sleep"] {
            assert!(parse_idle(bad).is_err(), "{bad}");
        }
        assert!(parse_positive_duration("0ms").is_err());
        assert_eq!(
            parse_positive_duration("5ms"),
            Ok(DurationArg(Duration::from_millis(5)))
        );
    }

    #[test]
    fn session_names_are_padded_with_spaces() {
        assert_eq!(Session::parse("20200130AA"), Ok(Session(*b"20200130AA")));
        assert_eq!(Session::parse("ABC"), Ok(Session(*b"ABC       ")));
        assert_eq!(Session::parse("A"), Ok(Session(*b"A         ")));
        assert_eq!(Session::parse("a b~!"), Ok(Session(*b"a b~!     ")));
        for (bad, why) in [
            ("", "not blank"),
            ("   ", "not blank"),
            ("20200130AAX", "11 characters"),
            ("SÉANCE", "'É' is not a printable ASCII character"),
            ("A\tB", "'\\t' is not a printable ASCII character"),
        ] {
            let e = Session::parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn defaults_are_the_libraries() {
        let args = parse(&[]).expect("defaults parse");
        let config = live_config(&args);
        assert_eq!(config.sequencer, SequencerConfig::default());
        assert_eq!(config.idle, LiveFeedConfig::new(args.group).idle);
        assert_eq!(config.heartbeat_events, None);
        // The whole live configuration, not only the sequencer's part.
        assert_eq!(config, LiveFeedConfig::new(args.group));
        assert_eq!(args.ring.ring_size, replay_ring().capacity);
    }

    #[test]
    fn fault_reaches_the_live_configuration() {
        let args = parse(&["--fault", "drop-seq=5-9,seed=3"]).expect("a fault spec parses");
        let want: FaultConfig = "drop-seq=5-9,seed=3".parse().expect("spec");
        assert_eq!(live_config(&args).fault, want);
        let err = parse(&["--fault", "drop=2"]).expect_err("a rate above 1");
        assert!(err.to_string().contains("--fault"), "{err}");
    }

    #[test]
    fn cli_bounds_are_the_sequencers() {
        use mdbus_codecs::sequencer::{ConfigError, Sequencer};
        // Just past each bound the CLI sets, the sequencer refuses too (it checks before it
        // allocates anything).
        let small = SequencerConfig {
            reorder_capacity_bytes: 1,
            reorder_capacity_messages: 1,
            max_gaps: 2,
            backoff: Backoff {
                factor: 1,
                max: Duration::ZERO,
            },
            ..SequencerConfig::default()
        };
        assert!(Sequencer::new(small).is_ok(), "the CLI's lower bounds");
        for (config, why) in [
            (
                SequencerConfig {
                    reorder_capacity_bytes: MAX_REORDER_BYTES as usize + 1,
                    ..small
                },
                "reorder store too large",
            ),
            (
                SequencerConfig {
                    reorder_capacity_messages: MAX_REORDER_MESSAGES as usize + 1,
                    ..small
                },
                "reorder store too large",
            ),
            (
                SequencerConfig {
                    max_gaps: 1,
                    ..small
                },
                "max_gaps",
            ),
            (
                SequencerConfig {
                    backoff: Backoff {
                        factor: 0,
                        max: Duration::ZERO,
                    },
                    ..small
                },
                "backoff factor",
            ),
        ] {
            let e: ConfigError = Sequencer::new(config).expect_err(why);
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn flags_reach_the_configuration() {
        let args = parse(&[
            "--nak-delay",
            "500us",
            "--request-timeout",
            "2ms",
            "--max-retries",
            "0",
            "--max-outstanding-requests",
            "3",
            "--max-request-messages",
            "64",
            "--coalesce-within",
            "0",
            "--late-join",
            "from-sequence:7",
            "--ring-size",
            "64KiB",
            "--idle",
            "yield",
            "--session",
            "ABC",
            "--backoff-factor",
            "1",
            "--backoff-max",
            "50ms",
            "--reorder-bytes",
            "1MiB",
            "--reorder-messages",
            "1000",
            "--max-gaps",
            "2",
            "--heartbeat-events",
            "250us",
            "--max-gap",
            "5000",
            "--jump-confirm",
            "3s",
        ])
        .expect("flags parse");
        let config = live_config(&args);
        assert_eq!(
            config.sequencer,
            SequencerConfig {
                nak_delay: Duration::from_micros(500),
                request_timeout: Duration::from_millis(2),
                max_retries: 0,
                max_outstanding_requests: 3,
                max_request_messages: 64,
                coalesce_within: 0,
                late_join: LateJoin::FromSequence(7),
                session: Some(Session(*b"ABC       ")),
                backoff: Backoff {
                    factor: 1,
                    max: Duration::from_millis(50),
                },
                reorder_capacity_bytes: 1 << 20,
                reorder_capacity_messages: 1000,
                max_gaps: 2,
                max_gap: 5000,
                jump_confirm: Duration::from_secs(3),
            }
        );
        assert_eq!(config.idle, Idle::Yield);
        assert_eq!(config.heartbeat_events, Some(Duration::from_micros(250)));
        let upper = parse(&[
            "--reorder-bytes",
            "4294967295",
            "--reorder-messages",
            "1073741824",
            "--max-gaps",
            "1048576",
            "--backoff-factor",
            "4294967295",
        ])
        .expect("the largest values parse");
        let config = live_config(&upper).sequencer;
        assert_eq!(config.reorder_capacity_bytes, u32::MAX as usize);
        assert_eq!(config.reorder_capacity_messages, 1 << 30);
        assert_eq!(config.max_gaps, 1 << 20);
        assert_eq!(config.backoff.factor, u32::MAX);
        assert_eq!(args.ring.ring_size, 65536);
    }

    #[test]
    fn bad_flag_values_are_refused_naming_the_flag() {
        for (flag, value) in [
            ("--nak-delay", "5"),
            ("--request-timeout", "0s"),
            ("--max-retries", "-1"),
            ("--max-outstanding-requests", "65536"),
            ("--max-request-messages", "0"),
            ("--max-request-messages", "65536"),
            ("--coalesce-within", "x"),
            ("--late-join", "soon"),
            ("--ring-size", "1000"),
            ("--ring-size", "3MiB"),
            ("--ring-bytes", "1000"),
            ("--request-server", "10.0.0.1:0"),
            ("--idle", "nap"),
            ("--session", "20200130AAX"),
            ("--session", ""),
            ("--session", "SÉANCE"),
            ("--backoff-factor", "0"),
            ("--backoff-factor", "x2"),
            ("--backoff-max", "200"),
            ("--reorder-bytes", "0"),
            ("--reorder-bytes", "4294967296"),
            ("--reorder-bytes", "16 parsecs"),
            ("--reorder-messages", "0"),
            ("--reorder-messages", "1073741825"),
            ("--max-gaps", "1"),
            ("--max-gaps", "1048577"),
            ("--heartbeat-events", "0ms"),
            ("--heartbeat-events", "1"),
            ("--max-gap", "0"),
            ("--max-gap", "x"),
        ] {
            let arg = format!("{flag}={value}");
            let e = parse(&[&arg]).expect_err(&arg).to_string();
            assert!(e.contains(flag), "{flag} {value}: {e}");
            assert!(e.contains(value), "{flag} {value}: {e}");
        }
    }
}
