//! A live Nasdaq-style exchange on one machine: plays a capture as a MoldUDP64 session of
//! ITCH 5.0 on a multicast group, with heartbeats, the end of the session and a
//! retransmission server, so a live feed handler (`mdbus feed`) can be run and tested
//! against it.
//!
//! ```text
//!  capture -> Source -> pacing (Speed) -> Playout: batch, number, store -> line A (+ B)
//!                                           ^                               (fault injector)
//!             re-requests (unicast) --------+--> answers from the store, rate limited
//! ```
//!
//! * **Input**: any capture `mdbus replay` reads except a recording (which holds bus records,
//!   not ITCH): a length-prefixed ITCH file, paced by each message's exchange timestamp, or a
//!   pcap/pcapng of MoldUDP64, whose messages are taken in sequence order (line B copies and
//!   retransmissions in the capture dropped as duplicates, holes counted as missing) and
//!   paced by the capture timestamps.
//! * **Session**: named by [`ExchangeConfig::session`] (by default derived from the file
//!   name, see [`session_from_file`]); its messages are numbered from 1 whatever the
//!   capture's own numbers were, so every format plays the same way and a capture with
//!   holes plays as a whole session of the messages it has.
//! * **Batching** ([`Playout::joins`]): a message joins the open packet when it fits (the
//!   datagram budget, [`ExchangeConfig::max_datagram`], 1,400 bytes by default) and either
//!   carries the exchange timestamp of the packet's first message or is due within the
//!   [`flush_window`](ExchangeConfig::flush_window) of it. Otherwise the packet goes out
//!   first; an open packet also goes out once the flush window after its first message has
//!   passed. At `max` speed every message is due at once, so packets fill up to the budget.
//! * **Heartbeats** after [`heartbeat_interval`](ExchangeConfig::heartbeat_interval)
//!   without a packet; at the end, an **end-of-session** packet repeated
//!   [`end_of_session_repeats`](ExchangeConfig::end_of_session_repeats) times 100 ms apart,
//!   then once per heartbeat interval while the server **lingers** for
//!   [`linger`](ExchangeConfig::linger), answering re-requests.
//! * **Re-requests** are answered from a [`RetransmitStore`](mdbus_codecs::retransmit)
//!   rate limited per host, as the bus's own sender ([`crate::net::Sender`]) answers them.
//! * **Line B** ([`ExchangeConfig::line_b`]) carries the same packets on a second group; the
//!   seeded [`fault`](crate::net::fault) injector ([`ExchangeConfig::fault`]) drops,
//!   duplicates and reorders packets of line A (line B gets the seed + 1).
//!
//! **IEX captures.** A pcap or pcapng of IEX-TP segments (TOPS, DEEP, DEEP+; told by its
//! first datagrams' content as `mdbus replay` tells it, or by [`ExchangeConfig::protocol`])
//! is played as a live IEX feed: each captured segment of the protocol re-sent with its
//! original payload (its heartbeats included, a cut last segment as cut), paced by the capture
//! timestamps (`--speed` rates count segments), on line A and line B through the same fault
//! injectors. IEX-TP's Gap Fill Request service is not played: there is no end of session
//! and no linger; a feed recovers from line B.
//!
//! Nothing is lost silently: what the source skips, messages too long for a datagram, send
//! failures and the injector's drops are counted in [`ExchangeStats`], published for
//! `mdbus stat` under role `exchange`. The loop allocates nothing per packet.

mod playout;
mod source;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mdbus_codecs::capture::CaptureError;
use mdbus_codecs::moldudp64::Session;
use mdbus_shm::counters::{CounterError, CounterFile};

pub use playout::{Playout, PlayoutConfig};
pub use source::{Source, SourceStats};

use crate::net::fault::{FaultConfig, FaultInjector};
use crate::net::socket::{self, SendOptions, SocketError};
use crate::replay::{DETECT_DATAGRAMS, ReplayProtocol, Speed, detect};

/// Role name of the exchange's counters file.
pub const COUNTERS_ROLE: &str = "exchange";

/// The exchange could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The capture could not be opened.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// A socket could not be set up.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The counters file could not be created.
    #[error(transparent)]
    Counters(#[from] CounterError),
    /// A configuration value cannot work.
    #[error("{0}")]
    Config(String),
}

/// Configuration of an [`Exchange`].
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeConfig {
    /// Multicast group and port of line A (a unicast address works too, for one receiver).
    pub group: SocketAddrV4,
    /// Line B: the same packets on this group too.
    pub line_b: Option<SocketAddrV4>,
    /// Interface, TTL, loopback and buffer of the sending sockets.
    pub send: SendOptions,
    /// Where the retransmission server listens (port 0: any free port).
    pub request_addr: SocketAddrV4,
    /// The session name [default: derived from the file, see [`session_from_file`]].
    pub session: Option<Session>,
    /// How fast the capture is played.
    pub speed: Speed,
    /// Largest datagram, MoldUDP64 header included (the path MTU less IP and UDP headers).
    pub max_datagram: usize,
    /// Messages due within this long of a packet's first message join it.
    pub flush_window: Duration,
    /// A heartbeat goes out after this long without a packet.
    pub heartbeat_interval: Duration,
    /// End-of-session packets sent 100 ms apart at the end (at least 1).
    pub end_of_session_repeats: u32,
    /// After the end of the session, keep answering re-requests for this long.
    pub linger: Duration,
    /// Messages the retransmission store holds.
    pub store_messages: usize,
    /// Message bytes the retransmission store holds.
    pub store_bytes: usize,
    /// Messages per second answered to each requesting host (0: no limit).
    pub reply_rate: u64,
    /// Messages a host may be answered at once.
    pub reply_burst: u64,
    /// Most messages answered per request.
    pub max_reply_messages: u16,
    /// Faults injected into line A's packets (line B: the same with the seed + 1).
    pub fault: FaultConfig,
    /// Publish counters for `mdbus stat` under this bus root, as this stream name
    /// [default name: the session's, see [`counters_name`]].
    pub counters: Option<(PathBuf, Option<String>)>,
    /// What the capture holds [default: a pcap's first datagrams tell, as for `mdbus
    /// replay`]: `Itch` plays ITCH as MoldUDP64, an IEX protocol plays its IEX-TP segments.
    pub protocol: Option<ReplayProtocol>,
}

impl ExchangeConfig {
    /// Defaults for `group`: the kernel's interface, TTL 1, loopback on, the server on the
    /// group's port + 1, at `max` speed, 1,400-byte datagrams, a 200 µs flush window,
    /// heartbeats every second, 3 end-of-session packets, a 5 s linger, a store of 1 Mi
    /// messages or 64 MiB, 100,000 messages/s per host (bursts of 20,000), no faults, no
    /// counters.
    pub fn new(group: SocketAddrV4) -> ExchangeConfig {
        ExchangeConfig {
            group,
            line_b: None,
            send: SendOptions {
                interface: Ipv4Addr::UNSPECIFIED,
                ttl: 1,
                loopback: true,
                sndbuf: 4 << 20,
            },
            request_addr: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, group.port().saturating_add(1)),
            session: None,
            speed: Speed::Max,
            max_datagram: 1400,
            flush_window: Duration::from_micros(200),
            heartbeat_interval: Duration::from_secs(1),
            end_of_session_repeats: 3,
            linger: Duration::from_secs(5),
            store_messages: 1 << 20,
            store_bytes: 64 << 20,
            reply_rate: 100_000,
            reply_burst: 20_000,
            max_reply_messages: 1024,
            fault: FaultConfig::default(),
            counters: None,
            protocol: None,
        }
    }
}

/// Counters of an [`Exchange`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeStats {
    /// Messages sent (first transmission), each with its sequence number (IEX: the
    /// messages the segments sent declare).
    pub messages: u64,
    /// Data packets sent on line A (line B sends the same; IEX: segments with messages).
    pub packets: u64,
    /// Bytes sent on the lines (UDP payload), heartbeats included.
    pub bytes: u64,
    /// Heartbeats sent (IEX: the capture's segments without messages).
    pub heartbeats: u64,
    /// End-of-session packets sent.
    pub end_of_session: u64,
    /// Re-requests received.
    pub requests: u64,
    /// Packets sent in answer to re-requests.
    pub retransmit_packets: u64,
    /// Messages sent in answer to re-requests.
    pub retransmit_messages: u64,
    /// Requests (partly) for messages no longer held, answered "not available".
    pub not_available: u64,
    /// Requests refused because their host (or all hosts together) used up the rate.
    pub rate_limited: u64,
    /// Requests that were malformed, empty or for another session.
    pub bad_requests: u64,
    /// Requests from hosts beyond the rate limiter's table (they share one bucket).
    pub untracked_sources: u64,
    /// `send` calls that failed (the messages stay in the store for re-requests).
    pub send_errors: u64,
    /// Packets line A's fault injector dropped (heartbeats included).
    pub fault_dropped_packets: u64,
    /// Messages in the packets line A's fault injector dropped.
    pub fault_dropped: u64,
    /// Packets line A's fault injector sent twice.
    pub fault_duplicated: u64,
    /// Packets line A's fault injector held back (reordered).
    pub fault_reordered: u64,
    /// Messages of the capture too long for a datagram: not sent, not numbered.
    pub oversize: u64,
    /// Messages the retransmission store refused (never expected).
    pub store_errors: u64,
    /// Capture datagrams skipped: not MoldUDP64, damaged, or of another session.
    pub capture_skipped: u64,
    /// Capture messages seen twice (line B copies, retransmissions), played once.
    pub capture_duplicates: u64,
    /// Messages a pcap's sequence numbers say are missing from the capture.
    pub capture_missing: u64,
    /// Capture records that could not be read (a truncated or damaged file).
    pub capture_errors: u64,
}

impl ExchangeStats {
    /// Counter names, in the order of [`values`](Self::values).
    pub const NAMES: [&'static str; 23] = [
        "messages",
        "packets",
        "bytes",
        "heartbeats",
        "end_of_session",
        "requests",
        "retransmit_packets",
        "retransmit_messages",
        "not_available",
        "rate_limited",
        "bad_requests",
        "untracked_sources",
        "send_errors",
        "fault_dropped_packets",
        "fault_dropped",
        "fault_duplicated",
        "fault_reordered",
        "oversize",
        "store_errors",
        "capture_skipped",
        "capture_duplicates",
        "capture_missing",
        "capture_errors",
    ];

    /// The counters as one array, in the order of [`NAMES`](Self::NAMES).
    pub fn values(&self) -> [u64; 23] {
        [
            self.messages,
            self.packets,
            self.bytes,
            self.heartbeats,
            self.end_of_session,
            self.requests,
            self.retransmit_packets,
            self.retransmit_messages,
            self.not_available,
            self.rate_limited,
            self.bad_requests,
            self.untracked_sources,
            self.send_errors,
            self.fault_dropped_packets,
            self.fault_dropped,
            self.fault_duplicated,
            self.fault_reordered,
            self.oversize,
            self.store_errors,
            self.capture_skipped,
            self.capture_duplicates,
            self.capture_missing,
            self.capture_errors,
        ]
    }
}

/// The default session name of a capture: the first 10 letters and digits of its file name,
/// upper-cased, padded with spaces (`aapl-2020-01-30-10k.itch` plays as `AAPL202001`);
/// `EXCHANGE` when the name has none.
pub fn session_from_file(path: &Path) -> Session {
    let mut name = Session([b' '; 10]);
    let stem = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let chars = stem
        .as_deref()
        .unwrap_or("")
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_uppercase());
    let mut n = 0;
    for (slot, b) in name.0.iter_mut().zip(chars) {
        *slot = b;
        n += 1;
    }
    if n == 0 {
        name.0[..8].copy_from_slice(b"EXCHANGE");
    }
    name
}

/// The stream name the counters of a session are published under by default: the session
/// name without its padding, each character a stream name cannot hold made `_`.
pub fn counters_name(session: Session) -> String {
    let name: String = session
        .0
        .iter()
        .map(|&b| b as char)
        .collect::<String>()
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match name.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None => name,
    }
}

/// When each message is due, ns after the first: the rule of
/// [`Pacer`](crate::replay::Pacer), asked without waiting, so the loop can serve re-requests
/// and send heartbeats while the next message is not due.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    speed: Speed,
    first_ts: Option<u64>,
    released: u64,
}

impl Schedule {
    fn new(speed: Speed) -> Schedule {
        Schedule {
            speed,
            first_ts: None,
            released: 0,
        }
    }

    /// The due time of the next message, stamped `ts` (any epoch; earlier than the first
    /// message: due at once).
    #[inline]
    fn due(&mut self, ts: u64) -> u64 {
        let n = self.released;
        self.released = self.released.saturating_add(1);
        match self.speed {
            Speed::Max => 0,
            Speed::Factor(f) => {
                let t0 = *self.first_ts.get_or_insert(ts);
                (ts.saturating_sub(t0) as f64 / f) as u64
            }
            Speed::Rate(r) => u64::try_from(u128::from(n) * 1_000_000_000 / u128::from(r.max(1)))
                .unwrap_or(u64::MAX),
        }
    }
}

/// One line: its socket and fault injector.
#[derive(Debug)]
struct Line {
    sock: UdpSocket,
    fault: Option<FaultInjector>,
}

/// Sends `p` on every line, through the injectors; counts bytes and failures.
fn send_lines(lines: &mut [Line], stats: &mut ExchangeStats, p: &[u8]) {
    for line in lines.iter_mut() {
        let sock = &line.sock;
        let mut send = |p: &[u8]| match sock.send(p) {
            Ok(n) => stats.bytes += n as u64,
            Err(_) => stats.send_errors += 1,
        };
        match &mut line.fault {
            Some(f) => f.apply(p, &mut send),
            None => send(p),
        }
    }
}

/// Releases what the injectors hold back.
fn flush_faults(lines: &mut [Line], stats: &mut ExchangeStats) {
    for line in lines.iter_mut() {
        let sock = &line.sock;
        if let Some(f) = &mut line.fault
            && f.held() > 0
        {
            f.flush(|p: &[u8]| match sock.send(p) {
                Ok(n) => stats.bytes += n as u64,
                Err(_) => stats.send_errors += 1,
            });
        }
    }
}

/// Messages offered per loop turn before the loop looks at its socket and timers.
const BATCH: usize = 256;
/// Re-requests read per loop turn, so a flood cannot starve the feed.
const REQUESTS_PER_TURN: usize = 64;
/// While messages flow, the re-request socket is read at most this often (ns).
const SERVE_EVERY_NS: u64 = 20_000;
/// Counters are published at most this often (ns).
const COUNTERS_EVERY_NS: u64 = 10_000_000;
/// Held fault-injector packets are released after this long without traffic (ns).
const FAULT_FLUSH_NS: u64 = 1_000_000;
/// Spacing of the end-of-session packets at the end (ns).
const EOS_SPACING_NS: u64 = 100_000_000;
/// The longest sleep while waiting (ns): re-requests are answered at least this often.
const MAX_SLEEP_NS: u64 = 1_000_000;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The IEX-TP protocol of a pcap or pcapng's segments, told by its first datagrams; `None`
/// for anything else (the ITCH source then reads it, or says what is wrong with it).
fn detect_iex(path: &Path) -> Option<mdbus_codecs::iex::tp::Protocol> {
    let mut reader = mdbus_codecs::capture::open_capture(path).ok()?;
    if reader.format() == mdbus_codecs::capture::CaptureFormat::ItchLengthPrefixed {
        return None;
    }
    let mut first = Vec::new();
    while first.len() < DETECT_DATAGRAMS {
        match reader.next_datagram() {
            Some(Ok(d)) => first.push((d.dst, d.payload.to_vec())),
            Some(Err(_)) | None => break,
        }
    }
    detect(first.iter().map(|(dst, p)| (*dst, p.as_slice())))
        .ok()?
        .iex()
}

/// Plays a capture as a live MoldUDP64 session; see the [module docs](self).
#[derive(Debug)]
pub struct Exchange {
    cfg: ExchangeConfig,
    path: PathBuf,
    source: Source,
    playout: Playout,
    schedule: Schedule,
    lines: Vec<Line>,
    server: UdpSocket,
    req: [u8; 512],
    /// The next message, read but not yet due: its bytes, length, timestamp and due time.
    pending_buf: Box<[u8]>,
    pending: Option<(usize, u64, u64)>,
    /// Oversize messages skipped by the source copy (longer than `pending_buf`).
    source_oversize: u64,
    counters: Option<CounterFile>,
    warnings: Vec<String>,
    /// Driver-side counters (bytes, send errors); merged with the playout's.
    io: ExchangeStats,
    started: Instant,
    last_send: u64,
    last_serve: u64,
    last_counters: u64,
}

impl Exchange {
    /// Opens the capture, sets up the lines, the retransmission server and the counters.
    /// Nothing is sent until [`run`](Self::run).
    pub fn new(path: &Path, cfg: ExchangeConfig) -> Result<Exchange, ExchangeError> {
        if cfg.speed == Speed::Rate(0) {
            return Err(ExchangeError::Config("a rate of 0 messages/s".into()));
        }
        let iex = match cfg.protocol {
            Some(p) => p.iex(),
            None => detect_iex(path),
        };
        let source = Source::open(path, iex)?;
        // IEX segments go out as captured, whatever their size; `max_datagram` sizes the
        // MoldUDP64 packets the exchange builds.
        let datagram = match iex {
            Some(_) => socket::MAX_DATAGRAM,
            None => cfg.max_datagram,
        };
        let session = cfg.session.unwrap_or_else(|| session_from_file(path));
        let playout = Playout::new(&PlayoutConfig {
            session,
            max_datagram: cfg.max_datagram,
            flush_window_ns: nanos(cfg.flush_window),
            store_messages: cfg.store_messages,
            store_bytes: cfg.store_bytes,
            reply_rate: cfg.reply_rate,
            reply_burst: cfg.reply_burst,
            max_reply_messages: cfg.max_reply_messages,
        })?;
        let mut warnings = Vec::new();
        let injector = |seed_add: u64| {
            cfg.fault.is_active().then(|| {
                let f = FaultConfig {
                    seed: cfg.fault.seed.wrapping_add(seed_add),
                    ..cfg.fault.clone()
                };
                let framing = match iex {
                    Some(_) => crate::venue::Framing::IexTp,
                    None => crate::venue::Framing::MoldUdp64,
                };
                FaultInjector::new(f, datagram).with_framing(framing)
            })
        };
        let mut lines = vec![Line {
            sock: socket::send_socket(cfg.group, &cfg.send, &mut warnings)?,
            fault: injector(0),
        }];
        if let Some(b) = cfg.line_b {
            lines.push(Line {
                sock: socket::send_socket(b, &cfg.send, &mut warnings)?,
                fault: injector(1),
            });
        }
        let server = socket::server_socket(cfg.request_addr)?;
        let counters = match &cfg.counters {
            Some((root, name)) => {
                let name = name.clone().unwrap_or_else(|| counters_name(session));
                Some(CounterFile::create(
                    root,
                    &name,
                    COUNTERS_ROLE,
                    &format!("group {} session {session}", cfg.group),
                    &ExchangeStats::NAMES,
                )?)
            }
            None => None,
        };
        Ok(Exchange {
            schedule: Schedule::new(cfg.speed),
            path: path.to_owned(),
            source,
            playout,
            lines,
            server,
            req: [0; 512],
            pending_buf: vec![0u8; datagram].into_boxed_slice(),
            pending: None,
            source_oversize: 0,
            counters,
            warnings,
            io: ExchangeStats::default(),
            started: Instant::now(),
            last_send: 0,
            last_serve: 0,
            last_counters: 0,
            cfg,
        })
    }

    /// The IEX-TP protocol played, for an IEX capture (`None`: ITCH as MoldUDP64).
    pub fn iex(&self) -> Option<mdbus_codecs::iex::tp::Protocol> {
        self.source.iex()
    }

    /// The session played.
    pub fn session(&self) -> Session {
        self.playout.session()
    }

    /// Where the retransmission server listens.
    pub fn request_addr(&self) -> std::io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// The capture played.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Setup warnings (a clamped socket buffer), and after [`run`](Self::run) what the
    /// capture reader reported.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The counters so far.
    pub fn stats(&self) -> ExchangeStats {
        let mut s = *self.playout.stats();
        if self.source.iex().is_some() {
            s.messages = self.io.messages;
            s.packets = self.io.packets;
            s.heartbeats = self.io.heartbeats;
        }
        let src = self.source.stats();
        s.bytes = self.io.bytes;
        s.send_errors = self.io.send_errors;
        s.oversize += self.source_oversize;
        s.capture_skipped = src.skipped_datagrams + src.other_session;
        s.capture_duplicates = src.duplicates;
        s.capture_missing = src.missing;
        s.capture_errors = src.capture_errors;
        if let Some(f) = &self.lines[0].fault {
            let fs = f.stats();
            s.fault_dropped_packets = fs.dropped;
            s.fault_dropped = fs.dropped_messages;
            s.fault_duplicated = fs.duplicated;
            s.fault_reordered = fs.reordered;
        }
        s
    }

    #[inline]
    fn now(&self) -> u64 {
        nanos(self.started.elapsed())
    }

    /// Reads the next message of the capture into `pending`; `false` at the end.
    fn fill_pending(&mut self) -> bool {
        loop {
            let Some((ts, len)) = self.source.next_into(&mut self.pending_buf) else {
                return false;
            };
            if len > self.pending_buf.len() {
                // Longer than any datagram: counted, not sent.
                self.source_oversize += 1;
                continue;
            }
            let due = self.schedule.due(ts);
            self.pending = Some((len, ts, due));
            return true;
        }
    }

    /// Answers the re-requests waiting on the server socket; returns how many.
    fn serve(&mut self, now: u64) -> usize {
        let mut handled = 0;
        while handled < REQUESTS_PER_TURN {
            let (n, from) = match self.server.recv_from(&mut self.req) {
                Ok(x) => x,
                Err(_) => break,
            };
            handled += 1;
            let server = &self.server;
            let io = &mut self.io;
            let _ = self
                .playout
                .handle_request(now, from, &self.req[..n], &mut |p: &[u8]| {
                    if server.send_to(p, from).is_err() {
                        io.send_errors += 1;
                    }
                });
        }
        handled
    }

    fn publish_counters(&mut self, now: u64, force: bool) {
        if self.counters.is_some()
            && (force || now.saturating_sub(self.last_counters) >= COUNTERS_EVERY_NS)
        {
            self.last_counters = now;
            let values = self.stats().values();
            if let Some(c) = &self.counters {
                c.publish(&values);
            }
        }
    }

    /// Sends what the playout hands out on the lines.
    fn with_lines<R>(&mut self, f: impl FnOnce(&mut Playout, &mut dyn FnMut(&[u8])) -> R) -> R {
        let Exchange {
            playout, lines, io, ..
        } = self;
        f(playout, &mut |p: &[u8]| send_lines(lines, io, p))
    }

    /// Plays the capture to its end (or until `stop` is set), ends the session and answers
    /// re-requests for the linger time; returns the counters. A second `stop` cannot cut the
    /// linger short (the command line exits on a second signal).
    pub fn run(&mut self, stop: &AtomicBool) -> ExchangeStats {
        if self.source.iex().is_some() {
            return self.run_iex(stop);
        }
        let heartbeat = nanos(self.cfg.heartbeat_interval);
        let mut eof = false;
        self.started = Instant::now();
        while !eof && !stop.load(Ordering::Relaxed) {
            let now = self.now();
            let mut offered = 0;
            while offered < BATCH {
                if self.pending.is_none() && !self.fill_pending() {
                    eof = true;
                    break;
                }
                let Some((len, ts, due)) = self.pending else {
                    break;
                };
                if due > now {
                    break;
                }
                self.pending = None;
                let Exchange {
                    playout,
                    lines,
                    io,
                    pending_buf,
                    ..
                } = self;
                let mut send = |p: &[u8]| send_lines(lines, io, p);
                playout.offer(ts, due, &pending_buf[..len], &mut send);
                offered += 1;
            }
            // The open packet goes out when the next message will not join it, or its
            // window has passed.
            let flush = match (self.playout.flush_deadline(), self.pending) {
                (None, _) => false,
                (Some(deadline), Some((len, ts, due))) => {
                    now >= deadline || !self.playout.joins(len, ts, due)
                }
                // Read to the end (a full batch leaves the next message unread).
                (Some(_), None) => eof,
            };
            let packets = self.playout.stats().packets;
            if flush {
                self.with_lines(|p, send| p.flush(&mut |b| send(b)));
            }
            if self.playout.stats().packets != packets || offered > 0 {
                self.last_send = now;
            }
            // Not per message: at most every SERVE_EVERY_NS while messages flow.
            let served = if offered == 0 || now.saturating_sub(self.last_serve) >= SERVE_EVERY_NS {
                self.last_serve = now;
                self.serve(now)
            } else {
                0
            };
            if self.playout.open_count() == 0 && now.saturating_sub(self.last_send) >= heartbeat {
                self.with_lines(|p, send| p.heartbeat(&mut |b| send(b)));
                self.last_send = now;
            }
            if now.saturating_sub(self.last_send) >= FAULT_FLUSH_NS {
                let Exchange { lines, io, .. } = self;
                flush_faults(lines, io);
            }
            self.publish_counters(now, false);
            if offered == 0 && served == 0 && !eof {
                // Nothing due: sleep until the next thing is (a message, the open packet's
                // deadline, a heartbeat), at most a millisecond so re-requests are served.
                let next = [
                    self.pending.map(|(_, _, due)| due),
                    self.playout.flush_deadline(),
                    Some(self.last_send.saturating_add(heartbeat)),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now);
                let wait = next.saturating_sub(self.now()).min(MAX_SLEEP_NS);
                if wait > 100_000 {
                    std::thread::sleep(Duration::from_nanos(wait - 50_000));
                } else {
                    std::thread::yield_now();
                }
            }
        }
        self.finish()
    }

    /// Plays an IEX capture's segments as captured, paced, until its end or `stop`.
    fn run_iex(&mut self, stop: &AtomicBool) -> ExchangeStats {
        self.started = Instant::now();
        // The segment read but not yet due: its length and due time.
        let mut pending: Option<(usize, u64)> = None;
        while !stop.load(Ordering::Relaxed) {
            if pending.is_none() {
                let Some((ts, len)) = self.source.next_segment_into(&mut self.pending_buf) else {
                    break;
                };
                if len > self.pending_buf.len() {
                    // Longer than --mtu allows: counted, not sent.
                    self.source_oversize += 1;
                    continue;
                }
                pending = Some((len, self.schedule.due(ts)));
            }
            let Some((len, due)) = pending else { break };
            let now = self.now();
            if due > now {
                if now.saturating_sub(self.last_send) >= FAULT_FLUSH_NS {
                    let Exchange { lines, io, .. } = self;
                    flush_faults(lines, io);
                }
                self.publish_counters(now, false);
                let wait = (due - now).min(MAX_SLEEP_NS);
                if wait > 100_000 {
                    std::thread::sleep(Duration::from_nanos(wait - 50_000));
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            pending = None;
            let seg = &self.pending_buf[..len];
            let count = mdbus_codecs::iex::tp::Segment::parse(seg).map_or(0, |s| s.message_count());
            if count == 0 {
                self.io.heartbeats += 1;
            } else {
                self.io.packets += 1;
                self.io.messages += u64::from(count);
            }
            let Exchange {
                lines,
                io,
                pending_buf,
                ..
            } = self;
            send_lines(lines, io, &pending_buf[..len]);
            self.last_send = now;
            self.publish_counters(now, false);
        }
        if let Some(e) = self.source.first_error() {
            self.warnings.push(e.to_string());
        }
        let Exchange { lines, io, .. } = self;
        flush_faults(lines, io);
        let now = self.now();
        self.publish_counters(now, true);
        if let Some(c) = &self.counters {
            c.finish();
        }
        self.stats()
    }

    /// Ends the session: the last packet, the end-of-session packets, then re-requests
    /// answered for the linger time.
    fn finish(&mut self) -> ExchangeStats {
        if let Some(e) = self.source.first_error() {
            let more = self.source.stats().capture_errors.saturating_sub(1);
            self.warnings.push(if more > 0 {
                format!("{e} (and {more} more read errors)")
            } else {
                e.to_string()
            });
        }
        let start = self.now();
        self.with_lines(|p, send| p.end_of_session(&mut |b| send(b)));
        {
            let Exchange { lines, io, .. } = self;
            flush_faults(lines, io);
        }
        let mut sent_eos = 1u32;
        let mut last_eos = start;
        let until = start.saturating_add(nanos(self.cfg.linger));
        let heartbeat = nanos(self.cfg.heartbeat_interval);
        loop {
            let now = self.now();
            let repeats = self.cfg.end_of_session_repeats.max(1);
            let spacing = if sent_eos < repeats {
                EOS_SPACING_NS
            } else {
                heartbeat
            };
            if now.saturating_sub(last_eos) >= spacing && (sent_eos < repeats || now < until) {
                self.with_lines(|p, send| p.end_of_session(&mut |b| send(b)));
                let Exchange { lines, io, .. } = self;
                flush_faults(lines, io);
                sent_eos += 1;
                last_eos = now;
            }
            if now >= until && sent_eos >= repeats {
                break;
            }
            if self.serve(now) == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            self.publish_counters(now, false);
        }
        let now = self.now();
        self.publish_counters(now, true);
        if let Some(c) = &self.counters {
            c.finish();
        }
        self.stats()
    }
}
