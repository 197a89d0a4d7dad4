//! The live ITCH 5.0 over MoldUDP64 feed handler: sockets around the sans-IO
//! [`Sequencer`], driving a [`FeedPipeline`].
//!
//! One thread, optionally pinned to a core, busy-polls nonblocking sockets: line A, line B
//! (optional, the redundant copy; arbitration is the sequencer's) and the unicast socket that
//! sends re-requests to the retransmission server and receives its answers. Each datagram
//! goes to the sequencer, which hands in-order messages to the pipeline (decode, normalize,
//! publish); the loop then sends due re-requests, handles timers, and turns sequencer events
//! into bus events:
//!
//! * a gap being re-requested -> gap notice `recoverable: true`;
//! * a gap given up -> gap notice `recoverable: false`, published in place (before the
//!   messages after it);
//! * end of session -> end-of-session event; the loop returns (unless told otherwise).
//!
//! A lossless subscriber that stops reading costs the loop one back-pressure timeout per
//! stall, not one per message: the pipeline gives records up while the stall lasts and
//! announces them with a gap notice (see [`FeedPipeline`]); one still pending when the loop
//! ends is tried once more, else counted.
//!
//! Per packet the loop makes the `recv` call and two clock reads (vDSO, no system call); per
//! message nothing but the pipeline's work. It allocates nothing after setup.
//!
//! Each envelope's receive timestamp is the wall-clock time the datagram that released it
//! arrived: its own packet for a message in order, the packet that filled the gap for one
//! held in the reorder store.
//!
//! ```no_run
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use std::sync::atomic::AtomicBool;
//! use mdbus_bus::{Bus, StreamConfig};
//! use mdbus_feed_handlers::live::{self, LiveFeedConfig};
//! use mdbus_feed_handlers::pipeline::FeedPipeline;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::new()?;
//! let mut pipeline = FeedPipeline::new(&bus, "nasdaq.itch", &StreamConfig::default())?;
//! let config = LiveFeedConfig {
//!     source: Some(Ipv4Addr::new(206, 200, 43, 72)), // source-specific join
//!     interface: Ipv4Addr::new(10, 0, 0, 5),
//!     request_server: Some(SocketAddrV4::new(Ipv4Addr::new(206, 200, 43, 80), 18000)),
//!     core: Some(3),
//!     ..LiveFeedConfig::new(SocketAddrV4::new(Ipv4Addr::new(233, 54, 12, 111), 26477))
//! };
//! let stop = AtomicBool::new(false);
//! let stats = live::run(config, &mut pipeline, &stop)?;
//! println!("{stats:?}");
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::net::socket::{self, MAX_DATAGRAM, SocketError};
use mdbus_codecs::moldudp64::{HEADER_LEN, Session};
use mdbus_codecs::sequencer::{
    ConfigError, Deliver, Event, Line, Sequencer, SequencerConfig, SequencerStats,
};

use crate::pipeline::{FeedPipeline, PipelineStats};

/// The second feed line: the same packets on another group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineConfig {
    /// Multicast group and port (or a unicast address to bind, for tests and unicast feeds).
    pub group: SocketAddrV4,
    /// Source for a source-specific join; `None`: any source.
    pub source: Option<Ipv4Addr>,
}

pub use crate::net::Idle;

/// Configuration of a live feed handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveFeedConfig {
    /// Line A: multicast group and port, or a unicast address to bind (port 0: any free port).
    pub group: SocketAddrV4,
    /// Source of line A for a source-specific join (`IP_ADD_SOURCE_MEMBERSHIP`); `None`:
    /// any-source join.
    pub source: Option<Ipv4Addr>,
    /// Address of the local interface to join on and send re-requests from
    /// (`0.0.0.0`: the kernel's choice).
    pub interface: Ipv4Addr,
    /// Line B, if the feed has one.
    pub line_b: Option<LineConfig>,
    /// `SO_RCVBUF` of each line socket, in bytes (0: the system default). A warning is
    /// printed and recorded when the kernel grants less.
    pub rcvbuf: usize,
    /// The retransmission server. `None`: no recovery; missing messages are declared lost
    /// after the NAK delay.
    pub request_server: Option<SocketAddrV4>,
    /// Core to pin the feed thread to.
    pub core: Option<usize>,
    /// Gap detection and recovery settings.
    pub sequencer: SequencerConfig,
    /// What to do between datagrams.
    pub idle: Idle,
    /// Return from the loop at the end of the session.
    pub stop_at_end_of_session: bool,
    /// Publish a heartbeat event on the streams at this interval while the feed is quiet
    /// (`None`: only the liveness stamp, which is always kept).
    pub heartbeat_events: Option<Duration>,
}

impl LiveFeedConfig {
    /// A configuration for line A at `group`: any-source join on the default interface, an
    /// 8 MiB receive buffer, no line B, no recovery, no pinning, busy polling, the default
    /// sequencer, stop at end of session.
    pub fn new(group: SocketAddrV4) -> Self {
        LiveFeedConfig {
            group,
            source: None,
            interface: Ipv4Addr::UNSPECIFIED,
            line_b: None,
            rcvbuf: 8 << 20,
            request_server: None,
            core: None,
            sequencer: SequencerConfig::default(),
            idle: Idle::BusyPoll,
            stop_at_end_of_session: true,
            heartbeat_events: None,
        }
    }
}

/// A live feed that could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// A socket operation failed.
    #[error("{what} {addr}: {source}")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// The address involved.
        addr: SocketAddrV4,
        /// The system's error.
        source: io::Error,
    },
    /// The sequencer configuration cannot work.
    #[error("sequencer configuration: {0}")]
    Sequencer(#[from] ConfigError),
    /// The feed thread could not be pinned.
    #[error(transparent)]
    Pin(#[from] mdbus_tuning::TuneError),
    /// The feed thread could not be started.
    #[error("starting the feed thread: {0}")]
    Spawn(io::Error),
}

impl From<SocketError> for LiveError {
    fn from(e: SocketError) -> Self {
        LiveError::Socket {
            what: e.what,
            addr: e.addr,
            source: e.source,
        }
    }
}

/// Counters of a live feed, returned when its loop ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// The sequencer's counters.
    pub sequencer: SequencerStats,
    /// The pipeline's counters.
    pub pipeline: PipelineStats,
    /// Datagrams received on line A.
    pub packets_a: u64,
    /// Datagrams received on line B.
    pub packets_b: u64,
    /// Datagrams received from the retransmission server.
    pub packets_recovery: u64,
    /// Re-requests sent.
    pub requests_sent: u64,
    /// Re-requests the socket refused (counted, the sequencer retries them).
    pub request_errors: u64,
    /// `recv` errors other than "nothing waiting".
    pub recv_errors: u64,
    /// Usable `SO_RCVBUF` of line A, as granted by the kernel.
    pub rcvbuf: usize,
    /// The session followed, once seen.
    pub session: Option<Session>,
    /// Whether the end of the session was reached.
    pub ended: bool,
    /// Setup warnings (for example a clamped receive buffer).
    pub warnings: Vec<String>,
}

/// A live feed with its sockets bound and joined, ready to [`run`](LiveFeed::run).
#[derive(Debug)]
pub struct LiveFeed {
    config: LiveFeedConfig,
    line_a: UdpSocket,
    line_b: Option<UdpSocket>,
    recovery: Option<UdpSocket>,
    sequencer: Sequencer,
    rcvbuf: usize,
    warnings: Vec<String>,
}

/// Interval of the streams' liveness stamp while the feed is quiet.
const STAMP_EVERY_NS: u64 = 1_000_000;

impl LiveFeed {
    /// Creates, binds and joins the sockets; nothing is received until [`run`](Self::run).
    pub fn bind(config: LiveFeedConfig) -> Result<Self, LiveError> {
        let mut seq_config = config.sequencer;
        if config.request_server.is_none() {
            seq_config.max_outstanding_requests = 0;
        }
        let sequencer = Sequencer::new(seq_config)?;
        let mut warnings = Vec::new();
        let a = socket::recv_socket(
            config.group,
            config.source,
            config.interface,
            config.rcvbuf,
            &mut warnings,
        )?;
        let line_b = match config.line_b {
            Some(b) => Some(
                socket::recv_socket(
                    b.group,
                    b.source,
                    config.interface,
                    config.rcvbuf,
                    &mut warnings,
                )?
                .socket,
            ),
            None => None,
        };
        let recovery = match config.request_server {
            Some(server) => Some(socket::request_socket(config.interface, Some(server))?),
            None => None,
        };
        for w in &warnings {
            eprintln!("mdbus live feed: warning: {w}");
        }
        Ok(LiveFeed {
            line_a: a.socket,
            rcvbuf: a.rcvbuf,
            line_b,
            recovery,
            sequencer,
            warnings,
            config,
        })
    }

    /// Local address of line A's socket (where a unicast test feed sends).
    pub fn line_a_addr(&self) -> io::Result<SocketAddr> {
        self.line_a.local_addr()
    }

    /// Local address of line B's socket.
    pub fn line_b_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.line_b.as_ref().map(UdpSocket::local_addr)
    }

    /// Local address re-requests are sent from.
    pub fn request_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.recovery.as_ref().map(UdpSocket::local_addr)
    }

    /// Setup warnings so far.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Runs the receive loop on this thread until `stop` is set or (by default) the session
    /// ends; pins the thread first if a core is configured.
    pub fn run(
        mut self,
        pipeline: &mut FeedPipeline,
        stop: &AtomicBool,
    ) -> Result<LiveStats, LiveError> {
        if let Some(core) = self.config.core {
            mdbus_tuning::pin_current_thread(core)?;
        }
        let mut stats = LiveStats {
            rcvbuf: self.rcvbuf,
            warnings: std::mem::take(&mut self.warnings),
            ..LiveStats::default()
        };
        let mut buf = vec![0u8; MAX_DATAGRAM].into_boxed_slice();
        let mut request = [0u8; HEADER_LEN];
        let epoch = Instant::now();
        let mono = || u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut last_activity = 0u64;
        let mut last_stamp = 0u64;
        let heartbeat_every = self
            .config
            .heartbeat_events
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let sockets = [
            (Some(&self.line_a), Line::A),
            (self.line_b.as_ref(), Line::B),
            (self.recovery.as_ref(), Line::Recovery),
        ];
        let seq = &mut self.sequencer;
        while !stop.load(Ordering::Relaxed) {
            let mut received = false;
            for (socket, line) in sockets {
                let Some(socket) = socket else { continue };
                match socket.recv(&mut buf) {
                    Ok(n) => {
                        received = true;
                        match line {
                            Line::A => stats.packets_a += 1,
                            Line::B => stats.packets_b += 1,
                            Line::Recovery => stats.packets_recovery += 1,
                        }
                        let now = mono();
                        last_activity = now;
                        let sink = Sink {
                            pipeline: &mut *pipeline,
                            recv_ts_ns: wall_ns(),
                        };
                        seq.handle_packet(now, line, &buf[..n], sink);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // ICMP "port unreachable" from the server, reported on the next call.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        stats.request_errors += 1
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => stats.recv_errors += 1,
                }
            }
            let now = mono();
            // Timers and re-requests only when one is due (the sequencer says when).
            if seq.next_deadline().is_some_and(|d| d <= now) {
                let sink = Sink {
                    pipeline: &mut *pipeline,
                    recv_ts_ns: wall_ns(),
                };
                seq.handle_timeout(now, sink);
                while let Some(r) = seq.poll_request(now) {
                    let Some(recovery) = &self.recovery else {
                        break;
                    };
                    // A 20-byte buffer always holds a request.
                    if r.encode(&mut request).is_ok() && recovery.send(&request).is_ok() {
                        stats.requests_sent += 1;
                    } else {
                        stats.request_errors += 1;
                    }
                }
            }
            while let Some(event) = seq.poll_event() {
                match event {
                    Event::Gap {
                        first,
                        count,
                        recoverable: true,
                    } => {
                        // Counted by the pipeline if refused.
                        let _ = pipeline.on_gap(first, count, true, wall_ns());
                    }
                    Event::EndOfSession { next_seq } => {
                        let _ = pipeline.on_end_of_session(next_seq, wall_ns());
                        stats.ended = true;
                    }
                    // Lost gaps were published in place by the sink; the rest is counted.
                    Event::Gap { .. }
                    | Event::SessionStarted { .. }
                    | Event::LateJoin { .. }
                    | Event::Recovered { .. } => {}
                }
            }
            if stats.ended && self.config.stop_at_end_of_session {
                break;
            }
            if !received {
                if now.saturating_sub(last_stamp) >= STAMP_EVERY_NS {
                    last_stamp = now;
                    pipeline.heartbeat();
                }
                if let Some(every) = heartbeat_every
                    && now.saturating_sub(last_activity) >= every
                {
                    last_activity = now;
                    let _ = pipeline.on_heartbeat(seq.next_seq(), wall_ns());
                }
                self.config.idle.wait();
            }
        }
        // Records given up on a stalled lossless stream are announced now, if they can be.
        pipeline.finish_drop_notices(wall_ns());
        stats.sequencer = seq.stats();
        stats.pipeline = pipeline.stats();
        stats.session = seq.session();
        Ok(stats)
    }

    /// Runs the loop on a new thread named `mdbus-live`, which owns the pipeline.
    pub fn spawn(
        self,
        mut pipeline: FeedPipeline,
        stop: Arc<AtomicBool>,
    ) -> Result<JoinHandle<Result<LiveStats, LiveError>>, LiveError> {
        std::thread::Builder::new()
            .name("mdbus-live".into())
            .spawn(move || self.run(&mut pipeline, &stop))
            .map_err(LiveError::Spawn)
    }
}

/// Binds the sockets and runs the loop on this thread (see [`LiveFeed::run`]).
pub fn run(
    config: LiveFeedConfig,
    pipeline: &mut FeedPipeline,
    stop: &AtomicBool,
) -> Result<LiveStats, LiveError> {
    LiveFeed::bind(config)?.run(pipeline, stop)
}

/// Binds the sockets here (so setup errors come back at once), then runs the loop on a new
/// thread (see [`LiveFeed::spawn`]).
pub fn spawn(
    config: LiveFeedConfig,
    pipeline: FeedPipeline,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<Result<LiveStats, LiveError>>, LiveError> {
    LiveFeed::bind(config)?.spawn(pipeline, stop)
}

/// Receive timestamp: nanoseconds since the Unix epoch (a vDSO clock read).
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Hands the sequencer's output to the pipeline; refusals are counted by the pipeline.
struct Sink<'a> {
    pipeline: &'a mut FeedPipeline,
    recv_ts_ns: u64,
}

impl Deliver for Sink<'_> {
    #[inline]
    fn message(&mut self, seq: u64, msg: &[u8]) {
        let _ = self.pipeline.on_message(seq, msg, self.recv_ts_ns);
    }

    fn gap(&mut self, first: u64, count: u64) {
        let _ = self.pipeline.on_gap(first, count, false, self.recv_ts_ns);
    }
}
