//! `mdbus feed`: command-line glue over the live ITCH 5.0 over MoldUDP64 feed handler
//! ([`mdbus_feed_handlers::live`]) and, with `--book`, the book service
//! ([`mdbus_feed_handlers::bookstream`]).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mdbus_bus::{Bus, Mode, SubscribeOptions};
use mdbus_feed_handlers::bookstream::{BookService, BookServiceConfig, BookServiceStats};
use mdbus_feed_handlers::live::{LineConfig, LiveError, LiveFeed, LiveFeedConfig, LiveStats};
use mdbus_feed_handlers::pipeline::FeedPipeline;
use mdbus_feed_handlers::replay::replay_ring;

use crate::pinning::LayoutArg;
use crate::replay_cmd::{
    CmdError, feed_pinning, join_book_thread, print_book_line, spawn_book_thread,
};

/// `mdbus feed`: receive a live ITCH 5.0 feed (MoldUDP64 over UDP) onto a bus stream.
#[derive(clap::Args, Debug, Clone)]
pub struct FeedArgs {
    /// Line A: multicast group and port (`233.54.12.111:26477`), or a unicast address to
    /// bind (port 0: any free port).
    #[arg(long, value_name = "G:P")]
    pub group: SocketAddrV4,
    /// Source of line A for a source-specific join [default: any source].
    #[arg(long, value_name = "S")]
    pub source: Option<Ipv4Addr>,
    /// Address of the local interface to join on and send re-requests from [default: the
    /// kernel's choice].
    #[arg(long, value_name = "I", default_value_t = Ipv4Addr::UNSPECIFIED)]
    pub interface: Ipv4Addr,
    /// Line B: group and port of the redundant copy of the feed.
    #[arg(long, value_name = "G:P")]
    pub line_b: Option<SocketAddrV4>,
    /// Source of line B for a source-specific join [default: any source].
    #[arg(long, value_name = "S", requires = "line_b")]
    pub line_b_source: Option<Ipv4Addr>,
    /// The retransmission server that answers re-requests [default: none; missing messages
    /// are declared lost].
    #[arg(long, value_name = "H:P")]
    pub request_server: Option<SocketAddrV4>,
    /// `SO_RCVBUF` of each line socket, in bytes (0: the system default); a warning is
    /// printed when the kernel grants less.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
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
    /// Print the feed handler's counters at the end as one JSON object on stdout.
    #[arg(long)]
    pub summary: bool,
    /// Cpus for the feed handler and, with --book, the book builder, e.g. `2,3` (wins over
    /// --layout) [default: with a layout, the first core of its `feed_handler` and
    /// `book_builder` roles; else unpinned].
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// The core layout (`--layout FILE` or `$MDBUS_LAYOUT`).
    #[command(flatten)]
    pub layout: LayoutArg,
}

impl From<LiveError> for CmdError {
    fn from(e: LiveError) -> Self {
        CmdError::BadArg(format!("live feed: {e}"))
    }
}

fn open_bus(root: Option<&Path>) -> Result<Bus, CmdError> {
    Ok(match root {
        Some(r) => Bus::with_root(r)?,
        None => Bus::new()?,
    })
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
        ..LiveFeedConfig::new(args.group)
    }
}

/// Runs `mdbus feed` until the end of the session or SIGINT/SIGTERM, writing its JSON to
/// `out` and its report and warnings to stderr (setup warnings, such as a clamped receive
/// buffer, are printed by [`LiveFeed::bind`]).
pub fn run_feed(args: &FeedArgs, out: &mut dyn Write) -> Result<(), CmdError> {
    let with_book = args.book || args.book_summary;
    let pinning = feed_pinning(&args.cpus, &args.layout, with_book)?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| {
            CmdError::Internal(format!("cannot install the handler of signal {sig}: {e}"))
        })?;
    }

    let bus = open_bus(args.root.as_deref())?;
    let mut ring = replay_ring();
    if with_book {
        ring.mode = Mode::Lossless;
    }
    let mut pipeline = FeedPipeline::new(&bus, &args.feed, &ring)
        .map_err(|e| CmdError::BadArg(format!("stream {:?}: {e}", args.feed)))?;
    // The book service subscribes before anything is published.
    let book = if with_book {
        let svc = BookService::new(&bus, &args.feed, &BookServiceConfig::default())?;
        let input = bus.subscriber(&args.feed, &SubscribeOptions::default())?;
        Some((svc, input))
    } else {
        None
    };
    let feed = LiveFeed::bind(live_config(args))?;
    let line_a = feed
        .line_a_addr()
        .map_err(|e| CmdError::Internal(format!("the address of line A: {e}")))?;
    match args.line_b {
        Some(b) => eprintln!("mdbus feed: listening on {line_a} (line A) and {b} (line B)"),
        None => eprintln!("mdbus feed: listening on {line_a}"),
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
    if let Some(line) = pinning.describe() {
        eprintln!("{line}");
    }
    for w in pinning.warnings() {
        eprintln!("warning: {w}");
    }
    let stats = result??;
    let book_out = book_out?.map(|(stats, svc)| (stats, svc.summary()));
    print_report(&stats, book_out.as_ref().map(|(b, _)| b), &args.feed);
    if args.summary {
        writeln!(out, "{}", stats_json(&stats))?;
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
    if s.pipeline.decode_errors > 0 || s.pipeline.publish_errors > 0 || q.malformed > 0 {
        eprintln!(
            "  bad input: {} undecodable messages, {} malformed packets, {} records not published",
            s.pipeline.decode_errors, q.malformed, s.pipeline.publish_errors
        );
    }
    if let Some(b) = book {
        print_book_line(b, feed);
    }
}
