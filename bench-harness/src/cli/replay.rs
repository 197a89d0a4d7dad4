//! `mdbus replay` and `mdbus record`: command-line glue over
//! [`mdbus_feed_handlers::replay`], [`mdbus_feed_handlers::bookstream`] and
//! [`mdbus_feed_handlers::record`].

use std::io::{IsTerminal, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mdbus_bus::{Bus, Mode, SubscribeOptions, WaitStrategy};
use mdbus_feed_handlers::bookstream::{BookService, BookServiceConfig, BookServiceStats};
use mdbus_feed_handlers::record::{
    RecordOptions, RecordStats, RecordWriter, StopReason, record_counters,
    record_stream_with_counters,
};
use mdbus_feed_handlers::replay::{
    REPLAY_MAX_GAP, ReplayOptions, ReplayProtocol, ReplayReport, Replayer, Source, Speed, Stamp,
    TimeOfDay, replay_book_config, replay_ring,
};

use super::common::{
    CmdError, CpuArgs, DurationArg, RingArgs, deprecated, feed_pinning, join_book_thread,
    log_pinning, parse_duration_or_secs, print_book_line, spawn_book_thread, stop_on_signals,
};

/// `mdbus replay`: play a captured session onto a bus stream.
///
/// While it runs its counters are in the bus root (role `replay`, stream `--feed`; with
/// `--book` also role `book`, same stream), for `mdbus stat`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The capture: a length-prefixed ITCH 5.0 file, a pcap or pcapng of MoldUDP64 datagrams,
    /// or a recording made by `mdbus record`.
    pub file: PathBuf,
    /// How fast: `max`, a multiple of the recorded pace (`1x`, `10x`, `0.5x`; exchange
    /// timestamps of ITCH files, capture timestamps of pcaps), or a fixed rate (`500000/s`).
    #[arg(long, default_value = "max")]
    pub speed: Speed,
    /// Replay messages stamped at or after this exchange time (HH:MM[:SS[.fraction]]).
    #[arg(long)]
    pub from: Option<TimeOfDay>,
    /// Stop at the first message stamped after this exchange time.
    #[arg(long)]
    pub to: Option<TimeOfDay>,
    /// Only these symbols (repeat, or separate with commas); resolved to stock locates by the
    /// file's stock directory messages.
    #[arg(long = "symbol", value_delimiter = ',')]
    pub symbols: Vec<String>,
    /// pcap/pcapng: only datagrams sent to this multicast group (IPv4).
    #[arg(long)]
    pub group: Option<Ipv4Addr>,
    /// pcap/pcapng: only datagrams sent to this UDP port.
    #[arg(long)]
    pub port: Option<u16>,
    /// pcap/pcapng: the widest jump of MoldUDP64 sequence numbers taken as a gap; a packet
    /// reaching further is held off until another packet near it corroborates it, and
    /// counted.
    #[arg(long, default_value_t = REPLAY_MAX_GAP, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_gap: u64,
    /// The stream to publish on; the book service adds `<feed>.book` and `<feed>.trades`.
    #[arg(long, default_value = "itch")]
    pub feed: String,
    /// Bus root directory [default: /dev/shm/mdbus-<user>/].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The feed stream's ring.
    #[command(flatten)]
    pub ring: RingArgs,
    /// Make the feed stream lossless: the replay waits for its slowest subscriber.
    #[arg(long)]
    pub lossless: bool,
    /// Also run the book service: BBO on `<feed>.book`, price levels on `<feed>.levels`, priced
    /// trades on `<feed>.trades` (makes the feed stream lossless).
    #[arg(long)]
    pub book: bool,
    /// Print the end-of-replay book summary as one JSON object on stdout.
    #[arg(long)]
    pub book_summary: bool,
    /// Stamp envelopes with the capture's timestamps (pcap, pcapng) instead of the replay
    /// time.
    #[arg(long)]
    pub capture_time: bool,
    /// Print the replay report as one JSON object on stdout (with the book summary under
    /// `book_summary` when asked for).
    #[arg(long)]
    pub json: bool,
    /// No progress bar (it is drawn only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// The protocol of a pcap or pcapng capture: `itch` (MoldUDP64), `iex-tops`, `iex-deep`
    /// or `iex-deep-plus` (IEX-TP) [default: judged by the first datagrams' content].
    #[arg(long)]
    pub protocol: Option<ReplayProtocol>,
    /// Cpus for the feed handler and, with --book, the book builder (one cpu: both share it).
    #[command(flatten)]
    pub cpus: CpuArgs,
}

impl ReplayArgs {
    /// Takes the old spellings into the current flags, warning about each.
    pub fn resolve(&mut self) {
        self.ring.resolve("replay");
        self.cpus.resolve("replay");
    }
}

/// `mdbus record`: record a bus stream to a file that `mdbus replay` plays back.
///
/// While it runs its counters are in the bus root (role `record`, stream `--stream`), for
/// `mdbus stat`.
#[derive(clap::Args, Debug, Clone)]
pub struct RecordArgs {
    /// The stream to record.
    #[arg(long)]
    pub stream: String,
    /// The file to write (replaced if it exists).
    pub file: PathBuf,
    /// Bus root directory [default: /dev/shm/mdbus-<user>/].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Stop after this many records.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this long: a duration (`30s`, `5m`; a bare number: seconds, the old form).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_or_secs)]
    pub duration: Option<Duration>,
    /// Keep recording after the stream's end-of-session event (until the stream closes, a
    /// limit, or Ctrl-C).
    #[arg(long)]
    pub keep_going: bool,
    /// How long to wait for the stream to appear (at most an hour).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub wait: DurationArg,
    /// Old spelling of --wait, in seconds.
    #[arg(long, hide = true, value_name = "SECS")]
    pub wait_secs: Option<f64>,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl RecordArgs {
    /// Takes the old spellings into the current flags, warning about each.
    pub fn resolve(&mut self) {
        if let Some(secs) = self.wait_secs.take() {
            let d = DurationArg(Duration::from_secs_f64(secs.clamp(0.0, 3600.0)));
            deprecated("record", "--wait-secs", &format!("--wait {d}"));
            self.wait = d;
        }
    }
}

/// Runs `mdbus replay`, writing its stdout to `out` and its report and warnings to stderr.
pub fn run_replay(args: &ReplayArgs, out: &mut dyn Write) -> Result<(), CmdError> {
    let bus = Bus::open(args.root.as_deref())?;
    let mut ring = replay_ring();
    ring.capacity = args.ring.ring_size;
    if args.lossless || args.book {
        ring.mode = Mode::Lossless;
    }
    let options = ReplayOptions {
        speed: args.speed,
        from: args.from,
        to: args.to,
        symbols: args.symbols.clone(),
        group: args.group,
        port: args.port,
        max_gap: args.max_gap,
        stamp: if args.capture_time {
            Stamp::Source
        } else {
            Stamp::Now
        },
        book_summary: args.book_summary.then(replay_book_config),
        spin_pacing: false,
        protocol: args.protocol,
    };
    let pinning = feed_pinning(&args.cpus.cpus, &args.cpus.layout, args.book)?;
    let source = Source::Path(args.file.clone());
    let mut replayer = Replayer::open(&source, &bus, &args.feed, &ring, options)?;
    replayer.publish_counters(&bus)?;
    // Ctrl-C (or SIGTERM) stops the replay where it is, with its report and a closed stream;
    // a second one exits at once.
    let interrupt = stop_on_signals()
        .map_err(|e| CmdError::Internal(format!("cannot catch SIGINT and SIGTERM: {e}")))?;
    replayer.stop_on(interrupt);

    // The book service subscribes before anything is published.
    let stop = AtomicBool::new(false);
    let book = if args.book {
        let config = BookServiceConfig {
            book: replay_book_config(),
            ..BookServiceConfig::default()
        };
        let mut svc = BookService::new(&bus, &args.feed, &config)?;
        svc.publish_counters(&bus)?;
        let input = bus.subscriber(&args.feed, &SubscribeOptions::default())?;
        Some((svc, input))
    } else {
        None
    };

    let size = std::fs::metadata(&args.file).map_or(0, |m| m.len());
    // A bar for anything that takes a while: a large file, or any paced replay.
    let long = size > (16 << 20) || args.speed != Speed::Max;
    let bar =
        (!args.no_progress && std::io::stderr().is_terminal() && long).then(|| progress_bar(size));
    // The feed handler and the book builder each run on a thread of their own, placed by
    // `pinning` (their layout roles applied when a layout is in use).
    let (result, book_stats) = std::thread::scope(|s| {
        let (pinning, stop, bar) = (&pinning, &stop, &bar);
        let service = spawn_book_thread(s, pinning, book, stop)?;
        let feed = std::thread::Builder::new()
            .name("mdbus-feed".into())
            .spawn_scoped(s, move || {
                pinning.enter(0);
                replayer.run(&mut |p| {
                    if let Some(b) = bar {
                        b.set_position(p.offset);
                        b.set_message(format!("{} messages", p.published));
                    }
                })
            });
        let result = match feed {
            Ok(h) => match h.join() {
                Ok(r) => r,
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(CmdError::Internal(
                        "the feed handler thread panicked".into(),
                    ));
                }
            },
            Err(e) => {
                // Without a feed the book service would wait for ever: stop it.
                stop.store(true, Ordering::Relaxed);
                if let Some(h) = service {
                    let _ = h.join();
                }
                return Err(CmdError::Internal(format!(
                    "cannot start the feed handler thread: {e}"
                )));
            }
        };
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        // The replayer closed the feed stream; the service ends when it has read everything.
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let book_stats = join_book_thread(service)?.map(|(stats, _)| stats);
        Ok::<_, CmdError>((result, book_stats))
    })?;
    log_pinning("", &pinning);
    let report = result?;
    print_report(&report, book_stats.as_ref(), &args.feed);
    if args.json {
        let mut v = serde_json::to_value(&report)
            .map_err(|e| CmdError::Internal(format!("cannot serialise the report: {e}")))?;
        if let (Some(s), Some(obj)) = (report.summary_json(), v.as_object_mut()) {
            let summary: serde_json::Value = serde_json::from_str(&s)
                .map_err(|e| CmdError::Internal(format!("summary: {e}")))?;
            obj.insert("book_summary".into(), summary);
        }
        if let (Some(b), Some(obj)) = (&book_stats, v.as_object_mut()) {
            obj.insert(
                "book_service".into(),
                serde_json::to_value(b).unwrap_or_default(),
            );
        }
        writeln!(out, "{v}")?;
    } else if let Some(s) = report.summary_json() {
        writeln!(out, "{s}")?;
    }
    Ok(())
}

fn progress_bar(size: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(size),
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} {msg} (eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// The human-readable report, on stderr (stdout carries JSON only).
fn print_report(r: &ReplayReport, book: Option<&BookServiceStats>, feed: &str) {
    let secs = r.elapsed_ns as f64 / 1e9;
    eprintln!(
        "replayed {} ({}, {}) onto stream {:?}: {} messages published in {:.3} s ({:.0} msgs/s, speed {})",
        r.source,
        r.format,
        r.protocol,
        r.stream,
        r.published,
        secs,
        r.rate(),
        r.speed
    );
    if r.filtered > 0 || r.datagrams_filtered > 0 {
        eprintln!(
            "  filtered: {} messages (window, symbols), {} datagrams (group, port)",
            r.filtered, r.datagrams_filtered
        );
    }
    if r.gaps > 0 || r.late_join_first_seq.is_some() {
        eprintln!(
            "  gaps: {} ({} messages missing){}",
            r.gaps,
            r.gap_messages,
            r.late_join_first_seq.map_or_else(String::new, |s| format!(
                "; the capture starts mid-session at sequence number {s}"
            ))
        );
    }
    if r.restarts > 0 || r.cut_segments > 0 {
        eprintln!(
            "  IEX-TP: the sequence restarted at 1 {} times within the session (not gaps); {} cut segments",
            r.restarts, r.cut_segments
        );
    }
    if let Some(why) = &r.unsequenced {
        tracing::warn!("sequencing off: {why}");
    }
    if r.decode_errors > 0 || r.invalid_envelopes > 0 || r.malformed_packets > 0 {
        eprintln!(
            "  bad input: {} undecodable messages, {} invalid envelopes, {} malformed packets",
            r.decode_errors, r.invalid_envelopes, r.malformed_packets
        );
    }
    if let Some(line) = not_replayed(r) {
        eprintln!("  not replayed: {line}");
    }
    if let Some(b) = book {
        print_book_line(b, feed);
    }
    for s in &r.unresolved_symbols {
        tracing::warn!("no stock directory message names {s:?}");
    }
    for w in &r.warnings {
        tracing::warn!("{w}");
    }
    if r.warnings_omitted > 0 {
        tracing::warn!("... and {} more warnings", r.warnings_omitted);
    }
    if let Some(t) = &r.truncated {
        tracing::warn!(
            "{} (everything before offset {} was replayed)",
            t.detail,
            t.offset
        );
    }
}

/// What a replay read and did not publish (besides the window and symbol filters), one
/// clause per reason; `None` when nothing.
fn not_replayed(r: &ReplayReport) -> Option<String> {
    let zero_dropped = if r.unsequenced.is_none() {
        r.zero_sequence_messages
    } else {
        0
    };
    let parts = [
        (r.duplicates, "duplicate messages"),
        (
            r.after_end_messages,
            "messages after the end of the session",
        ),
        (r.foreign_session_messages, "messages of other sessions"),
        (zero_dropped, "messages in packets numbered 0"),
        (
            r.implausible_messages,
            "messages in packets beyond --max-gap",
        ),
        (
            r.replaced_anchor_messages,
            "messages of a first packet replaced",
        ),
        (
            r.sequenced_messages_skipped,
            "sequenced messages in a sanitized capture",
        ),
        (r.skipped_frames, "capture records skipped"),
        (
            r.out_of_order,
            "messages arriving after their range was lost",
        ),
        (
            r.foreign_protocol_packets,
            "datagrams of another IEX-TP protocol",
        ),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    (!text.is_empty()).then(|| text.join(", "))
}

/// Runs `mdbus record`, writing its stdout to `out`.
pub fn run_record(args: &RecordArgs, out: &mut dyn Write) -> Result<(), CmdError> {
    let bus = Bus::open(args.root.as_deref())?;
    let max_duration = args.duration;
    let stop = stop_on_signals()
        .map_err(|e| CmdError::Internal(format!("cannot catch SIGINT and SIGTERM: {e}")))?;
    let deadline = Instant::now() + args.wait.0.min(Duration::from_secs(3600));
    let mut waited = false;
    let mut sub = loop {
        match bus.subscriber(&args.stream, &SubscribeOptions::default()) {
            Ok(s) => break s,
            // Only a stream that is not there yet is waited for.
            Err(e) if !stream_missing(&e) || Instant::now() >= deadline => return Err(e.into()),
            Err(_) if stop.load(Ordering::Relaxed) => {
                tracing::warn!(
                    "stopped before stream {:?} appeared: nothing recorded, {} not written",
                    args.stream,
                    args.file.display()
                );
                let none = RecordStats {
                    records: 0,
                    bytes: 0,
                    overruns: 0,
                    lost: 0,
                    stop: StopReason::Stopped,
                };
                return report_record(args, &none, out);
            }
            Err(_) => {
                if !waited {
                    waited = true;
                    tracing::info!("waiting for stream {:?} to appear", args.stream);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let mut writer = RecordWriter::create(&args.file, &args.stream)?;
    let counters = record_counters(bus.root(), &args.stream, &args.file)?;
    let options = RecordOptions {
        until_end_of_session: !args.keep_going,
        max_records: args.count,
        max_duration,
        wait: WaitStrategy::Blocking,
    };
    let stats = record_stream_with_counters(
        &mut sub,
        &mut writer,
        &args.file,
        &options,
        &stop,
        Some(&counters),
    )?;
    if let Err(e) = writer.flush() {
        return Err(writer.write_failed(&args.file, e).into());
    }
    report_record(args, &stats, out)
}

/// Whether `e` says the stream's segment does not exist (yet).
fn stream_missing(e: &mdbus_bus::BusError) -> bool {
    matches!(
        e,
        mdbus_bus::BusError::Segment {
            source: mdbus_shm::SetupError::Io { source, .. },
            ..
        } if source.kind() == std::io::ErrorKind::NotFound
    )
}

fn report_record(args: &RecordArgs, s: &RecordStats, out: &mut dyn Write) -> Result<(), CmdError> {
    if args.json {
        let v = serde_json::json!({
            "stream": args.stream,
            "file": args.file.display().to_string(),
            "records": s.records,
            "bytes": s.bytes,
            "overruns": s.overruns,
            "lost": s.lost,
            "stop": format!("{:?}", s.stop),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "recorded {} records ({} bytes) of stream {:?} to {} (stopped: {:?})",
            s.records,
            s.bytes,
            args.stream,
            args.file.display(),
            s.stop
        )?;
    }
    if s.lost > 0 {
        tracing::warn!(
            "the recorder was lapped {} times and lost {} records (a replay reports them as gaps)",
            s.overruns,
            s.lost
        );
    }
    Ok(())
}
