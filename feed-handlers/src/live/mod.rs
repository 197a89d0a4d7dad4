//! The live feed handler: the transport's receive [`Driver`]
//! with a sink that drives a [`FeedPipeline`] of any [`Venue`]: Nasdaq ITCH 5.0 over
//! MoldUDP64, or IEX TOPS, DEEP and DEEP+ over IEX-TP ([`LiveFeedConfig::framing`] names the
//! framing, which must be the venue's).
//!
//! One thread, optionally pinned to a core, busy-polls nonblocking sockets: line A, line B
//! (optional, the redundant copy; arbitration is the sequencer's) and the unicast socket that
//! sends re-requests to the retransmission server and receives its answers. Each datagram
//! (through the seeded fault injector, if one is configured) goes to the sequencer, which
//! hands in-order messages to the pipeline (decode, normalize, publish); the driver then
//! sends due re-requests, handles timers, and turns sequencer events into bus events:
//!
//! * a gap being re-requested -> gap notice `recoverable: true`;
//! * a gap given up -> gap notice `recoverable: false`, published in place (before the
//!   messages after it);
//! * end of session -> end-of-session event; the loop returns (unless told otherwise).
//!
//! IEX-TP has no end of session and no re-request service used here: an IEX feed runs until
//! stopped, line B is its recovery, and a restart of its sequence numbers at 1 within the
//! session is counted ([`LiveStats::iex`]), not a gap (see [`crate::net::iex`]). Books kept
//! on the feed thread, message by message ([`FeedBooks`]: IEX's [`IexBooks`], as a replay
//! keeps them), are passed to [`LiveFeed::run_with_books`].
//!
//! A lossless subscriber that stops reading costs the loop one back-pressure timeout per
//! stall, not one per message: the pipeline gives records up while the stall lasts and
//! announces them with a gap notice (see [`FeedPipeline`]); one still pending when the loop
//! ends is tried once more, else counted.
//!
//! Per packet the loop makes the `recv` call and two clock reads (vDSO, no system call); per
//! message nothing but the pipeline's work. It allocates nothing after setup. With
//! [`LiveFeed::publish_counters`] its counters ([`COUNTER_NAMES`]) are in the bus root under
//! role `feed`, for `mdbus stat`.
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
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

use mdbus_bus::Bus;
use mdbus_codecs::iex::tp::Protocol;
use mdbus_codecs::moldudp64::Session;
use mdbus_codecs::sequencer::{ConfigError, Sequencer, SequencerConfig, SequencerStats};
use mdbus_shm::counters::{CounterError, CounterFile};

use crate::book::IexBooks;
use crate::net::NetError;
use crate::net::driver::{Driver, DriverConfig, DriverStats, FeedSink, RequestServer, Sessions};
use crate::net::fault::FaultConfig;
use crate::net::iex::IexStats;
use crate::net::socket::SocketError;
use crate::pipeline::{FeedPipeline, PipelineStats};
use crate::venue::{Framing, Iex, Venue};

pub use crate::net::Idle;
pub use crate::net::LineConfig;

/// Configuration of a live feed handler.
#[derive(Clone, Debug, PartialEq)]
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
    /// Faults injected into the packets received on the lines (off by default), for tests
    /// and benchmarks.
    pub fault: FaultConfig,
    /// How the lines' datagrams are framed: the venue's [`Venue::FRAMING`]. IEX-TP takes no
    /// `request_server`.
    pub framing: Framing,
    /// IEX-TP: the message protocol to follow (segments of others are counted as foreign);
    /// `None`: the first seen.
    pub iex_protocol: Option<Protocol>,
}

impl LiveFeedConfig {
    /// A configuration for line A at `group`: any-source join on the default interface, an
    /// 8 MiB receive buffer, no line B, no recovery, no pinning, busy polling, the default
    /// sequencer, stop at end of session, no faults, MoldUDP64.
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
            fault: FaultConfig::default(),
            framing: Framing::MoldUdp64,
            iex_protocol: None,
        }
    }

    /// The driver's configuration.
    fn driver(&self) -> DriverConfig {
        DriverConfig {
            group: self.group,
            source: self.source,
            interface: self.interface,
            line_b: self.line_b,
            accept_from: None,
            request_server: self
                .request_server
                .map_or(RequestServer::None, RequestServer::Addr),
            sequencer: self.sequencer,
            sessions: Sessions::Any,
            rcvbuf: self.rcvbuf,
            core: self.core,
            idle: self.idle,
            fault: self.fault.clone(),
            exit_at_end_of_session: self.stop_at_end_of_session,
            heartbeat_events: self.heartbeat_events,
            framing: self.framing,
            iex_protocol: self.iex_protocol,
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
    /// The counters file could not be created.
    #[error(transparent)]
    Counters(#[from] CounterError),
    /// The receive loop could not go on.
    #[error(transparent)]
    Net(NetError),
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

impl From<NetError> for LiveError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Socket(e) => e.into(),
            NetError::Pin(e) => LiveError::Pin(e),
            NetError::Counters(e) => LiveError::Counters(e),
            e => LiveError::Net(e),
        }
    }
}

/// Counters of a live feed, returned when its loop ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// The sequencer's counters (datagrams shorter than a header, or not IEX-TP segments,
    /// among `malformed`; segments of another IEX-TP session among `foreign_session`).
    pub sequencer: SequencerStats,
    /// IEX-TP: restarts, cut and damaged segments, foreign protocol, stale messages.
    pub iex: IexStats,
    /// Ranges of messages declared lost (gap notices published for the source).
    pub gaps: u64,
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
    /// Datagrams dropped by the fault injector.
    pub fault_dropped: u64,
    /// Usable `SO_RCVBUF` of line A, as granted by the kernel.
    pub rcvbuf: usize,
    /// The session followed, once seen.
    pub session: Option<Session>,
    /// Whether the end of the session was reached.
    pub ended: bool,
    /// Setup warnings (for example a clamped receive buffer).
    pub warnings: Vec<String>,
}

/// Names of the counters a live feed publishes (role `feed`), in the order of their values.
pub const COUNTER_NAMES: [&str; 44] = [
    "packets_a",
    "packets_b",
    "packets_recovery",
    "requests_sent",
    "request_errors",
    "recv_errors",
    "fault_dropped",
    "ended",
    "sequencer.packets",
    "sequencer.messages",
    "sequencer.duplicates",
    "sequencer.out_of_order",
    "sequencer.gaps_detected",
    "sequencer.requests_sent",
    "sequencer.recovered",
    "sequencer.unrecoverable",
    "sequencer.foreign_session",
    "sequencer.malformed",
    "sequencer.late_join",
    "sequencer.heartbeats",
    "sequencer.not_available",
    "sequencer.overflows",
    "sequencer.implausible_jumps",
    "sequencer.jumps_corroborated",
    "sequencer.forged_end_of_session",
    "sequencer.anchors_replaced",
    "sequencer.zero_sequence",
    "pipeline.messages",
    "pipeline.published",
    "pipeline.decode_errors",
    "pipeline.publish_errors",
    "pipeline.back_pressured",
    "pipeline.gap_notices",
    "pipeline.lost",
    "pipeline.unrouted",
    "pipeline.stalls",
    "pipeline.dropped",
    "pipeline.drop_notices",
    "pipeline.notices_unpublished",
    "iex.restarts",
    "iex.cut_segments",
    "iex.damaged_segments",
    "iex.foreign_protocol",
    "iex.stale_messages",
];

impl LiveStats {
    /// The driver's and the pipeline's counters as a live feed's.
    fn compose(d: &DriverStats, pipeline: PipelineStats) -> LiveStats {
        let mut sequencer = d.sequencer;
        // The driver reads each header before the sequencer does.
        sequencer.malformed = sequencer.malformed.saturating_add(d.malformed);
        sequencer.foreign_session = sequencer.foreign_session.saturating_add(d.foreign_session);
        LiveStats {
            sequencer,
            iex: d.iex,
            pipeline,
            packets_a: d.packets_a,
            packets_b: d.packets_b,
            packets_recovery: d.packets_recovery,
            requests_sent: d.requests,
            request_errors: d.request_errors,
            recv_errors: d.recv_errors,
            fault_dropped: d.fault_dropped,
            ended: d.sessions_ended > 0,
            ..LiveStats::default()
        }
    }

    /// The counters in the order of [`COUNTER_NAMES`].
    pub fn values(&self) -> [u64; 44] {
        let q = &self.sequencer;
        let p = &self.pipeline;
        [
            self.packets_a,
            self.packets_b,
            self.packets_recovery,
            self.requests_sent,
            self.request_errors,
            self.recv_errors,
            self.fault_dropped,
            u64::from(self.ended),
            q.packets,
            q.messages,
            q.duplicates,
            q.out_of_order,
            q.gaps_detected,
            q.requests_sent,
            q.recovered,
            q.unrecoverable,
            q.foreign_session,
            q.malformed,
            q.late_join,
            q.heartbeats,
            q.not_available,
            q.overflows,
            q.implausible_jumps,
            q.jumps_corroborated,
            q.forged_end_of_session,
            q.anchors_replaced,
            q.zero_sequence,
            p.messages,
            p.published,
            p.decode_errors,
            p.publish_errors,
            p.back_pressured,
            p.gap_notices,
            p.lost,
            p.unrouted,
            p.stalls,
            p.dropped,
            p.drop_notices,
            p.notices_unpublished,
            self.iex.restarts,
            self.iex.cut_segments,
            self.iex.damaged_segments,
            self.iex.foreign_protocol,
            self.iex.stale_messages,
        ]
    }
}

/// A live feed with its sockets bound and joined, ready to [`run`](LiveFeed::run).
#[derive(Debug)]
pub struct LiveFeed {
    driver: Driver,
}

/// Interval of the streams' liveness stamp while the feed is quiet.
const STAMP_EVERY_NS: u64 = 1_000_000;

impl LiveFeed {
    /// Creates, binds and joins the sockets; nothing is received until [`run`](Self::run).
    pub fn bind(config: LiveFeedConfig) -> Result<Self, LiveError> {
        // Checked here so that a bad configuration is named as such.
        Sequencer::new(config.sequencer)?;
        let driver = Driver::new(config.driver(), None)?;
        for w in driver.warnings() {
            tracing::warn!("mdbus live feed: {w}");
        }
        Ok(LiveFeed { driver })
    }

    /// Publishes the feed's counters ([`COUNTER_NAMES`]) under the bus root, for
    /// `mdbus stat`: role `feed`, stream `stream` (the feed's output).
    pub fn publish_counters(&mut self, bus: &Bus, stream: &str) -> Result<(), LiveError> {
        let c = self.driver.config();
        let detail = match c.line_b {
            Some(b) => format!("group {} line B {}", c.group, b.group),
            None => format!("group {}", c.group),
        };
        let file = CounterFile::create(bus.root(), stream, "feed", &detail, &COUNTER_NAMES)?;
        self.driver.set_counters(Some(file));
        Ok(())
    }

    /// Local address of line A's socket (where a unicast test feed sends).
    pub fn line_a_addr(&self) -> io::Result<SocketAddr> {
        self.driver.line_a_addr()
    }

    /// Local address of line B's socket.
    pub fn line_b_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.driver.line_b_addr()
    }

    /// Local address re-requests are sent from.
    pub fn request_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.driver.request_addr()
    }

    /// Setup warnings so far.
    pub fn warnings(&self) -> &[String] {
        self.driver.warnings()
    }

    /// Runs the receive loop on this thread until `stop` is set or (by default) the session
    /// ends; pins the thread first if a core is configured. The venue's framing must be the
    /// configured one.
    pub fn run<V: Venue>(
        self,
        pipeline: &mut FeedPipeline<V>,
        stop: &AtomicBool,
    ) -> Result<LiveStats, LiveError> {
        self.run_with_books(pipeline, &mut (), stop)
    }

    /// [`run`](Self::run), applying each message to `books` on the feed thread too.
    pub fn run_with_books<V: Venue, B: FeedBooks<V>>(
        mut self,
        pipeline: &mut FeedPipeline<V>,
        books: &mut B,
        stop: &AtomicBool,
    ) -> Result<LiveStats, LiveError> {
        let framing = self.driver.config().framing;
        if framing != V::FRAMING {
            return Err(LiveError::Net(NetError::Config(format!(
                "the feed is configured for {framing:?}, {} arrives in {:?}",
                V::NAME,
                V::FRAMING
            ))));
        }
        let warnings = self.driver.take_warnings();
        let mut sink = PipelineSink {
            pipeline,
            books,
            last_stamp: 0,
            gaps: 0,
        };
        self.driver.run(&mut sink, stop)?;
        self.driver.finish(&sink);
        let mut stats = LiveStats::compose(&self.driver.stats(), sink.pipeline.stats());
        stats.gaps = sink.gaps;
        stats.rcvbuf = self.driver.rcvbuf();
        stats.session = self.driver.session();
        stats.warnings = warnings;
        Ok(stats)
    }

    /// Runs the loop on a new thread named `mdbus-live`, which owns the pipeline.
    pub fn spawn<V: Venue>(
        self,
        mut pipeline: FeedPipeline<V>,
        stop: Arc<AtomicBool>,
    ) -> Result<JoinHandle<Result<LiveStats, LiveError>>, LiveError> {
        std::thread::Builder::new()
            .name("mdbus-live".into())
            .spawn(move || self.run(&mut pipeline, &stop))
            .map_err(LiveError::Spawn)
    }
}

/// Binds the sockets and runs the loop on this thread (see [`LiveFeed::run`]).
pub fn run<V: Venue>(
    config: LiveFeedConfig,
    pipeline: &mut FeedPipeline<V>,
    stop: &AtomicBool,
) -> Result<LiveStats, LiveError> {
    LiveFeed::bind(config)?.run(pipeline, stop)
}

/// Binds the sockets here (so setup errors come back at once), then runs the loop on a new
/// thread (see [`LiveFeed::spawn`]).
pub fn spawn<V: Venue>(
    config: LiveFeedConfig,
    pipeline: FeedPipeline<V>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<Result<LiveStats, LiveError>>, LiveError> {
    LiveFeed::bind(config)?.spawn(pipeline, stop)
}

/// Books a live feed keeps on its own thread, message by message (a venue whose books are
/// built from the published stream, as Nasdaq's by the book service, keeps none: `()`).
pub trait FeedBooks<V: Venue> {
    /// Whether [`observe`](Self::observe) does anything (`false`: messages are not decoded
    /// for it).
    const KEEPS: bool;

    /// Applies one decoded message.
    fn observe(&mut self, venue: &mut V, msg: &V::Message<'_>);
}

impl<V: Venue> FeedBooks<V> for () {
    const KEEPS: bool = false;

    #[inline]
    fn observe(&mut self, _: &mut V, _: &V::Message<'_>) {}
}

/// IEX books as a replay keeps them (its `--book-summary`).
impl FeedBooks<Iex> for IexBooks {
    const KEEPS: bool = true;

    #[inline]
    fn observe(&mut self, venue: &mut Iex, msg: &<Iex as Venue>::Message<'_>) {
        let instrument = venue.instrument(msg);
        IexBooks::observe(self, msg, instrument);
    }
}

/// The feed's sink: the decode -> normalize -> publish pipeline, and the books kept on the
/// feed thread. Refusals are counted by the pipeline.
struct PipelineSink<'a, V: Venue, B> {
    pipeline: &'a mut FeedPipeline<V>,
    books: &'a mut B,
    /// When the streams' liveness stamp was last renewed (driver ns).
    last_stamp: u64,
    /// Ranges declared lost.
    gaps: u64,
}

impl<V: Venue, B: FeedBooks<V>> FeedSink for PipelineSink<'_, V, B> {
    const RECV_TS: bool = true;

    #[inline]
    fn message(&mut self, seq: u64, msg: &[u8], recv_ts_ns: u64) {
        if B::KEEPS
            && let Ok(decoded) = self.pipeline.venue().decode(msg)
        {
            self.books.observe(self.pipeline.venue_mut(), &decoded);
            let _ = self.pipeline.on_decoded(seq, &decoded, recv_ts_ns);
        } else {
            // Decodes (or counts the message undecodable, with a gap notice).
            let _ = self.pipeline.on_message(seq, msg, recv_ts_ns);
        }
    }

    fn gap(&mut self, first: u64, count: u64, recv_ts_ns: u64) {
        self.gaps += 1;
        let _ = self.pipeline.on_gap(first, count, false, recv_ts_ns);
    }

    fn gap_requested(&mut self, first: u64, count: u64, recv_ts_ns: u64) {
        let _ = self.pipeline.on_gap(first, count, true, recv_ts_ns);
    }

    fn end_of_session(&mut self, next_seq: u64, _: u64, recv_ts_ns: u64) {
        let _ = self.pipeline.on_end_of_session(next_seq, recv_ts_ns);
    }

    fn heartbeat(&mut self, next_seq: u64, recv_ts_ns: u64) {
        let _ = self.pipeline.on_heartbeat(next_seq, recv_ts_ns);
    }

    fn idle(&mut self, now: u64) {
        // The datagrams received so far are published: their records go to the shared cache
        // before the wait for the next (nothing to do when idle turns follow each other).
        self.pipeline.hand_off();
        if now.saturating_sub(self.last_stamp) >= STAMP_EVERY_NS {
            self.last_stamp = now;
            self.pipeline.heartbeat();
        }
    }

    fn finish(&mut self, recv_ts_ns: u64) {
        // Records given up on a stalled lossless stream are announced now, if they can be.
        self.pipeline.finish_drop_notices(recv_ts_ns);
    }

    fn counters(&self, driver: &DriverStats, out: &mut [u64]) -> usize {
        let values = LiveStats::compose(driver, self.pipeline.stats()).values();
        let n = values.len().min(out.len());
        out[..n].copy_from_slice(&values[..n]);
        n
    }
}
