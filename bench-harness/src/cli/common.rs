//! What the verbs share: their error types, signal handling, where a feed handler and its
//! book builder run, the book builder's thread, and the flags several verbs take.
//!
//! One concept has one flag, one value syntax and one check on every verb:
//!
//! * durations ([`DurationArg`], shared with `mdbus bench` from
//!   [`mdbus_bench_harness::units`]): a number and a unit (`250us`, `1ms`, `2s`, `1m 30s`);
//! * sizes ([`parse_size_usize`]): a whole number of bytes or of `KiB`, `MiB`, `GiB`, `TiB`
//!   (or `kB`, `MB`, `GB`); a ring's size ([`RingArgs`]) must also be a power of two, refused
//!   otherwise, never rounded;
//! * multicast groups ([`parse_group`]): `ADDR:PORT`, a multicast address and a port other
//!   than 0 (a unicast address only where a verb documents a unicast mode);
//! * cpus (`--cpus LIST`), the stream (`--stream NAME`), the retransmission server
//!   (`--request-server HOST:PORT`), the NAK delay (`--nak-delay`) and where to join a
//!   running session (`--late-join`).
//!
//! The spellings they replace are still read, hidden from `--help`, with a deprecation
//! warning ([`deprecated`]); integer `-us`/`-ms`/`-mb`/`-secs` flags keep their old unit.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use mdbus_bench_harness::pinning::{LayoutArg, Pinning, PinningError, ThreadRole};
use mdbus_codecs::sequencer::{LateJoin, SequencerConfig};
use mdbus_feed_handlers::net::{Idle, NetError};
use mdbus_shm::counters;

use mdbus_bus::{Subscriber, WaitStrategy};
use mdbus_feed_handlers::bookstream::{
    BookService, BookServiceError, BookServiceStats, book_stream_name, levels_stream_name,
    trades_stream_name,
};
use mdbus_feed_handlers::net::fault::FaultConfig;
use mdbus_feed_handlers::record::RecordError;
use mdbus_feed_handlers::replay::ReplayError;
use mdbus_shm::{MAX_CAPACITY, MIN_CAPACITY};

pub(crate) use mdbus_bench_harness::units::{
    DurationArg, DurationError, format_size, parse_size_usize,
};

/// The threads of `mdbus replay` and `mdbus feed` (the book builder only with `--book`) and the layout roles
/// they take their cpus from.
pub const REPLAY_THREADS: [ThreadRole; 2] = [
    ThreadRole {
        thread: "feed handler",
        roles: &["feed_handler"],
    },
    ThreadRole {
        thread: "book builder",
        roles: &["book_builder"],
    },
];

/// What can go wrong in `mdbus replay` or `mdbus record`.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The replay failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// Recording failed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A bus stream could not be opened.
    #[error(transparent)]
    Bus(#[from] mdbus_bus::BusError),
    /// The book service failed.
    #[error(transparent)]
    Book(#[from] mdbus_feed_handlers::bookstream::BookServiceError),
    /// A bad argument.
    #[error("{0}")]
    BadArg(String),
    /// Writing the output failed.
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    /// A thread panicked (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The report line of a book service publishing for `feed` (stderr).
pub(crate) fn print_book_line(b: &BookServiceStats, feed: &str) {
    eprintln!(
        "  book service: {} BBO on {:?}, {} level updates on {:?}, {} trades on {:?}",
        b.bbos_published,
        book_stream_name(feed),
        b.levels_published,
        levels_stream_name(feed),
        b.trades_published,
        trades_stream_name(feed)
    );
}

/// The book builder's thread: the service and what `run` made of its input.
pub(crate) type BookThread<'scope> = std::thread::ScopedJoinHandle<
    'scope,
    Result<(BookServiceStats, BookService), BookServiceError>,
>;

/// Starts the book service of `book` (if any) on a thread of `s` named `mdbus-book`, placed
/// by stage 1 of `pinning`, running until its input ends or `stop` is set. Used by
/// `mdbus replay --book` and `mdbus feed --book`.
pub(crate) fn spawn_book_thread<'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    pinning: &'scope Pinning,
    book: Option<(BookService, Subscriber)>,
    stop: &'scope AtomicBool,
) -> Result<Option<BookThread<'scope>>, CmdError> {
    let Some((mut svc, mut input)) = book else {
        return Ok(None);
    };
    std::thread::Builder::new()
        .name("mdbus-book".into())
        .spawn_scoped(s, move || {
            pinning.enter(1);
            let stats = svc.run(
                &mut input,
                WaitStrategy::SpinThenYield { spins: 1000 },
                stop,
            )?;
            Ok((stats, svc))
        })
        .map(Some)
        .map_err(|e| CmdError::Internal(format!("cannot start the book thread: {e}")))
}

/// Waits for the book thread of [`spawn_book_thread`], if one was started.
pub(crate) fn join_book_thread(
    handle: Option<BookThread<'_>>,
) -> Result<Option<(BookServiceStats, BookService)>, CmdError> {
    let Some(handle) = handle else {
        return Ok(None);
    };
    let r = handle
        .join()
        .map_err(|_| CmdError::Internal("the book thread panicked".into()))?;
    Ok(Some(r?))
}

/// Where a feed handler thread (and, `with_book`, a book builder thread) runs: `--cpus`
/// (one cpu for both threads means they share it), else the layout's `feed_handler` and
/// `book_builder` roles, else unpinned. Used by `mdbus replay` and `mdbus feed`.
pub(crate) fn feed_pinning(
    cpus: &[usize],
    layout: &LayoutArg,
    with_book: bool,
) -> Result<Pinning, CmdError> {
    let threads = if with_book {
        &REPLAY_THREADS[..]
    } else {
        &REPLAY_THREADS[..1]
    };
    if cpus.len() > threads.len() {
        return Err(CmdError::BadArg(format!(
            "--cpus: {} cpus for {} thread(s) (the feed handler{})",
            cpus.len(),
            threads.len(),
            if with_book {
                " and the book builder"
            } else {
                ""
            }
        )));
    }
    let explicit = (!cpus.is_empty()).then(|| {
        // One cpu with a book builder: both threads share it.
        let mut cpus = cpus.to_vec();
        while cpus.len() < threads.len() {
            cpus.push(cpus[cpus.len() - 1]);
        }
        cpus
    });
    Pinning::choose(layout, threads, explicit, || Ok(None))
        .map_err(|e| CmdError::BadArg(e.to_string()))
}

/// `--idle`: `spin`, `yield` or `sleep:DURATION` (a bare number: microseconds).
pub(crate) fn parse_idle(s: &str) -> Result<Idle, String> {
    match s {
        "spin" => Ok(Idle::BusyPoll),
        "yield" => Ok(Idle::Yield),
        _ => match s.strip_prefix("sleep:") {
            Some(us) if !us.is_empty() && us.bytes().all(|b| b.is_ascii_digit()) => us
                .parse::<u64>()
                .map(|us| Idle::Sleep(Duration::from_micros(us)))
                .map_err(|e| format!("sleep:MICROSECONDS: {e}")),
            Some(d) => d
                .parse::<DurationArg>()
                .map(|d| Idle::Sleep(d.0))
                .map_err(|e| format!("sleep:DURATION: {e}")),
            None => Err("expected spin, yield or sleep:DURATION".to_owned()),
        },
    }
}

/// A flag the first SIGINT or SIGTERM sets, so a role ends cleanly (a sender lingers, a
/// recorder flushes, a feed prints its report); a second signal ends the process at once with
/// status 130, so a role that does not stop can still be ended.
pub(crate) fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// `--fault SPEC` of `feed`, `recv`, `send` and `exchange` (see [`FaultConfig`]).
pub(crate) fn parse_fault(s: &str) -> Result<FaultConfig, String> {
    s.parse::<FaultConfig>().map_err(|e| e.to_string())
}

/// A role's counters as a JSON object, for `--summary`.
pub(crate) fn counters_json(
    names: &[&str],
    values: &[u64],
) -> serde_json::Map<String, serde_json::Value> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| ((*n).to_owned(), serde_json::Value::from(*v)))
        .collect()
}

/// Pins the calling thread (a transport loop) by `--cpus` (one cpu) or the layout's `role`;
/// logs where it runs and what could not be applied.
pub(crate) fn pin_loop(
    who: &str,
    cpus: &CpuArgs,
    role: &'static [&'static str],
) -> Result<(), NetCmdError> {
    if cpus.cpus.len() > 1 {
        return Err(NetCmdError::BadArg(format!(
            "--cpus: {} cpus for 1 thread (the {})",
            cpus.cpus.len(),
            role[0]
        )));
    }
    let threads = [ThreadRole {
        thread: role[0],
        roles: role,
    }];
    let explicit = (!cpus.cpus.is_empty()).then(|| cpus.cpus.clone());
    let pinning = Pinning::choose(&cpus.layout, &threads, explicit, || Ok(None))?;
    pinning.enter(0);
    log_pinning(&format!("mdbus {who}: "), &pinning);
    Ok(())
}

/// Logs where `pinning` placed the threads (info) and what it could not apply (warnings).
pub(crate) fn log_pinning(prefix: &str, pinning: &Pinning) {
    if let Some(line) = pinning.describe() {
        tracing::info!("{prefix}{line}");
    }
    for w in pinning.warnings() {
        tracing::warn!("{prefix}{w}");
    }
}

/// A failed `send`, `recv`, `stat` or `exchange`.
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

/// A [`DurationArg`] of more than 0.
pub(crate) fn parse_positive_duration(s: &str) -> Result<DurationArg, String> {
    let d: DurationArg = s.parse().map_err(|e: DurationError| e.to_string())?;
    if d.0.is_zero() {
        return Err("must be more than 0".to_owned());
    }
    Ok(d)
}

/// `--watch` and `record --duration`: a [`DurationArg`], or (their old form) a number of
/// seconds, fractions allowed; more than 0.
pub(crate) fn parse_duration_or_secs(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        t.parse::<f64>()
            .ok()
            .and_then(|x| Duration::try_from_secs_f64(x).ok())
            .ok_or_else(|| format!("{t:?}: not a number of seconds"))?
    } else {
        s.parse::<DurationArg>().map_err(|e| e.to_string())?.0
    };
    if d.is_zero() {
        return Err("must be more than 0".to_owned());
    }
    if d.as_nanos() > u128::from(u64::MAX) {
        return Err("too large".to_owned());
    }
    Ok(d)
}

/// `--ring-size`: a [`parse_size_usize`] that a ring accepts, a power of two from 4KiB to 1TiB.
pub(crate) fn parse_ring_size(s: &str) -> Result<usize, String> {
    ring_size_ok(parse_size_usize(s)?)
}

/// The old `--ring-mb N` (mebibytes), held to the same rule as `--ring-size`.
fn parse_ring_mb(s: &str) -> Result<usize, String> {
    let mb: usize = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?}: a whole number of MiB is expected: {e}"))?;
    let bytes = mb
        .checked_mul(1 << 20)
        .ok_or_else(|| format!("{mb} MiB: too large"))?;
    ring_size_ok(bytes)
}

/// Whether `n` bytes is a ring size (a power of two in [`MIN_CAPACITY`]..=[`MAX_CAPACITY`]),
/// with the sizes on either side when it is not.
fn ring_size_ok(n: usize) -> Result<usize, String> {
    if n.is_power_of_two() && (MIN_CAPACITY..=MAX_CAPACITY).contains(&n) {
        return Ok(n);
    }
    let range = format!(
        "a power of two from {} to {}",
        format_size(MIN_CAPACITY as u64),
        format_size(MAX_CAPACITY as u64)
    );
    if (MIN_CAPACITY..=MAX_CAPACITY).contains(&n) {
        let below = 1usize << n.ilog2();
        Err(format!(
            "{n} bytes is not a power of two (the ring's size must be {range}; e.g. {} or {})",
            format_size(below as u64),
            format_size((below << 1) as u64)
        ))
    } else {
        Err(format!(
            "{n} bytes is out of range: the ring's size must be {range}"
        ))
    }
}

/// The size of a stream's ring: `--ring-size`, or the old `--ring-mb` (MiB) or
/// `--ring-bytes` (bytes), both held to the same rule.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct RingArgs {
    /// Size of the stream's ring: bytes, or a number and a unit (`64KiB`, `16MiB`, `1GiB`); a
    /// power of two from 4KiB to 1TiB (anything else is refused, not rounded).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_ring_size)]
    pub ring_size: usize,
    /// Old spelling of --ring-size, in MiB.
    #[arg(long, hide = true, value_name = "MIB", value_parser = parse_ring_mb)]
    pub ring_mb: Option<usize>,
    /// Old spelling of --ring-size, in bytes.
    #[arg(long, hide = true, value_name = "BYTES", value_parser = parse_ring_size)]
    pub ring_bytes: Option<usize>,
}

impl RingArgs {
    /// The ring's size in bytes, an old spelling warned about.
    pub(crate) fn resolve(&mut self, verb: &str) {
        if let Some(n) = self.ring_mb.take() {
            deprecated(
                verb,
                "--ring-mb N",
                &format!("--ring-size {}", format_size(n as u64)),
            );
            self.ring_size = n;
        }
        if let Some(n) = self.ring_bytes.take() {
            deprecated(
                verb,
                "--ring-bytes",
                &format!("--ring-size {}", format_size(n as u64)),
            );
            self.ring_size = n;
        }
    }
}

/// Where a verb's threads run: `--cpus` (wins) or the core layout, and the old `--core`.
#[derive(clap::Args, Debug, Clone)]
pub struct CpuArgs {
    /// Cpus for the verb's threads, comma separated, e.g. `2` or `2,3` (wins over --layout)
    /// [default: with a layout, the first core of each thread's role; else unpinned].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub cpus: Vec<usize>,
    /// Old spelling of --cpus for one thread.
    #[arg(long, hide = true, value_name = "CPU")]
    pub core: Option<usize>,
    /// The core layout (`--layout FILE` or `$MDBUS_LAYOUT`).
    #[command(flatten)]
    pub layout: LayoutArg,
}

impl CpuArgs {
    /// Takes the old `--core` into `--cpus`, with a deprecation warning.
    pub(crate) fn resolve(&mut self, verb: &str) {
        if let Some(c) = self.core.take() {
            deprecated(verb, "--core", &format!("--cpus {c}"));
            self.cpus = vec![c];
        }
    }
}

/// Whether a group may be a unicast address, and what its port 0 means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unicast {
    /// Multicast only (`send`, `recv`).
    Refused,
    /// A unicast destination, for one receiver (`exchange`); port 0 refused.
    Destination,
    /// A unicast address to bind (`feed`), port 0 meaning any free port.
    Bind,
}

/// `--group ADDR:PORT` (and `--line-b`): a multicast group and a port other than 0, or, as
/// `unicast` allows, a unicast address.
pub(crate) fn parse_group(s: &str, unicast: Unicast) -> Result<SocketAddrV4, String> {
    let a: SocketAddrV4 = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?}: expected ADDR:PORT, e.g. 239.255.0.1:31000 ({e})"))?;
    let multicast = a.ip().is_multicast();
    if !multicast && unicast == Unicast::Refused {
        return Err(format!(
            "{a}: not a multicast address (224.0.0.0 to 239.255.255.255; e.g. 239.255.0.1:{})",
            a.port().max(1)
        ));
    }
    if a.port() == 0 && (multicast || unicast != Unicast::Bind) {
        return Err(format!("{a}: port 0: a port is needed"));
    }
    Ok(a)
}

/// [`parse_group`], multicast only.
pub(crate) fn parse_multicast_group(s: &str) -> Result<SocketAddrV4, String> {
    parse_group(s, Unicast::Refused)
}

/// Prints that `old` (of `mdbus verb`) is deprecated in favour of `new`; the old spelling
/// still works for this release.
pub(crate) fn deprecated(verb: &str, old: &str, new: &str) {
    tracing::warn!("mdbus {verb}: {old} is deprecated and will be removed: use {new}");
}

/// The stream a verb works on: `--stream NAME`, or (the old form of `send`, `recv` and
/// `stat`) a positional name.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct StreamArg {
    /// The stream's name.
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "stream_positional"
    )]
    pub stream: Option<String>,
    /// Old form of --stream: the stream's name as the first positional argument.
    #[arg(value_name = "STREAM", hide = true, conflicts_with = "stream")]
    pub stream_positional: Option<String>,
}

impl StreamArg {
    /// Takes a positional stream name into `--stream`, with a deprecation warning.
    pub(crate) fn resolve(&mut self, verb: &str) {
        if let Some(s) = self.stream_positional.take() {
            deprecated(
                verb,
                "the stream as a positional argument",
                &format!("--stream {s}"),
            );
            self.stream = Some(s);
        }
    }

    /// The stream's name (empty before [`StreamArg::resolve`] when none was given).
    pub(crate) fn name(&self) -> &str {
        self.stream.as_deref().unwrap_or_default()
    }
}

/// `--request-server HOST:PORT`: an address with a port other than 0.
pub(crate) fn parse_server(s: &str) -> Result<SocketAddrV4, String> {
    let a: SocketAddrV4 = s
        .trim()
        .parse()
        .map_err(|e| format!("{s:?}: expected HOST:PORT, e.g. 10.0.0.2:18000 ({e})"))?;
    if a.port() == 0 {
        return Err(format!("{a}: port 0: a port is needed"));
    }
    Ok(a)
}

/// How a network receiver (`feed`, `recv`) follows a MoldUDP64 session: the NAK delay, where
/// it joins, and how it holds implausible jumps.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct SessionArgs {
    /// How long a missing message may be merely reordered before it is re-requested (or,
    /// without a retransmission server, declared lost), e.g. `1ms`, `250us`.
    #[arg(
        long,
        value_name = "DURATION",
        default_value_t = DurationArg(SequencerConfig::default().nak_delay)
    )]
    pub nak_delay: DurationArg,
    /// Where to start when joining a running session: `live-edge` (at the first packet seen;
    /// earlier messages are not requested) or `from-sequence:SEQ` (re-request everything
    /// from sequence number SEQ on; 1: the whole session).
    #[arg(
        long,
        value_name = "WHERE",
        default_value = "live-edge",
        value_parser = parse_late_join
    )]
    pub late_join: LateJoin,
    /// Largest forward jump of sequence numbers taken at face value, in messages (at least
    /// 1): a packet (data, heartbeat or end of session) reaching further beyond the highest
    /// sequence number known is counted and not acted on until corroborated.
    #[arg(
        long,
        value_name = "N",
        default_value_t = SequencerConfig::default().max_gap,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_gap: u64,
    /// How long nothing may continue the current sequence before packets going on from a
    /// jump beyond --max-gap corroborate it (longer than the sender's heartbeat interval).
    #[arg(
        long,
        value_name = "DURATION",
        default_value_t = DurationArg(SequencerConfig::default().jump_confirm)
    )]
    pub jump_confirm: DurationArg,
}

/// `--late-join`: `live-edge` or `from-sequence:SEQ` (SEQ at least 1).
pub(crate) fn parse_late_join(s: &str) -> Result<LateJoin, String> {
    if s == "live-edge" {
        return Ok(LateJoin::LiveEdge);
    }
    let Some(seq) = s.strip_prefix("from-sequence:") else {
        return Err("expected live-edge or from-sequence:SEQ".to_owned());
    };
    match seq.parse::<u64>() {
        Ok(0) => {
            Err("sequence numbers start at 1 (from-sequence:1 is the whole session)".to_owned())
        }
        Ok(n) => Ok(LateJoin::FromSequence(n)),
        Err(e) => Err(format!("sequence number {seq:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_powers_of_two_never_rounded() {
        assert_eq!(parse_ring_size("4KiB"), Ok(4096));
        assert_eq!(parse_ring_size("1TiB"), Ok(1 << 40));
        let e = parse_ring_size("3MiB").expect_err("3 MiB");
        assert!(
            e.contains("not a power of two") && e.contains("2MiB or 4MiB"),
            "{e}"
        );
        assert!(
            parse_ring_size("2KiB")
                .expect_err("2 KiB")
                .contains("out of range")
        );
        assert!(
            parse_ring_size("2TiB")
                .expect_err("2 TiB")
                .contains("out of range")
        );
        assert_eq!(parse_ring_mb("16"), Ok(16 << 20));
        assert!(parse_ring_mb("3").is_err());
        assert!(parse_ring_mb("18446744073709551615").is_err());
    }

    #[test]
    fn groups_are_multicast_with_a_port_unless_a_unicast_mode_says_otherwise() {
        let ok = |s: &str, u| parse_group(s, u).expect(s);
        assert_eq!(ok("239.255.0.1:31000", Unicast::Refused).port(), 31000);
        assert!(parse_group("10.0.0.1:31000", Unicast::Refused).is_err());
        assert!(parse_group("239.255.0.1:0", Unicast::Refused).is_err());
        assert_eq!(ok("10.0.0.1:31000", Unicast::Destination).port(), 31000);
        assert!(parse_group("10.0.0.1:0", Unicast::Destination).is_err());
        assert_eq!(ok("127.0.0.1:0", Unicast::Bind).port(), 0);
        assert!(parse_group("239.255.0.1:0", Unicast::Bind).is_err());
        assert!(parse_group("not-an-address", Unicast::Bind).is_err());
    }

    #[test]
    fn old_duration_forms_of_watch_and_duration_are_seconds() {
        assert_eq!(parse_duration_or_secs("2"), Ok(Duration::from_secs(2)));
        assert_eq!(
            parse_duration_or_secs("0.5"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration_or_secs("250ms"),
            Ok(Duration::from_millis(250))
        );
        for bad in [
            "0",
            "0s",
            "1e300",
            "inf",
            "NaN",
            "-1",
            ".",
            "1.2.3",
            "99999999999",
        ] {
            assert!(parse_duration_or_secs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn idle_flags_parse() {
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
    }
}
