//! The one receive loop of every sequenced feed: sockets around the sans-IO
//! [`Sequencer`], generic over a [`FeedSink`] that takes what it delivers.
//!
//! A [`Driver`] owns line A, line B (optional, the redundant copy; arbitration is the
//! sequencer's) and the unicast socket that sends re-requests to the retransmission server
//! and receives its answers, all nonblocking. Each turn it reads what is waiting, passes line
//! packets through the seeded [`fault`](super::fault) injector (off unless configured), checks
//! each datagram's header ([`Packet::parse`]) and session, and hands it to the sequencer,
//! which hands in-order messages and unrecoverable gaps (in place) to the sink. It then sends
//! due re-requests, turns sequencer events into sink calls, publishes its counters to the bus
//! root every millisecond, and waits as configured ([`Idle`]) when nothing arrived.
//!
//! `mdbus recv` ([`Receiver`](super::Receiver): envelopes republished into a local ring) and
//! `mdbus feed` ([`LiveFeed`](crate::live::LiveFeed): decode, normalize, publish) are two
//! sinks of it.
//!
//! Framings ([`DriverConfig::framing`]): MoldUDP64 packets go to the sequencer as they
//! arrive; IEX-TP segments are checked and placed in one sequence over the session's
//! restarts by [`IexFraming`] first, then go to the same sequencer
//! (A/B arbitration, the NAK delay before a gap is declared lost), and what it delivers is
//! mapped back to IEX sequence numbers. IEX-TP's Gap Fill Requests are not sent: its
//! recovery is line B. The framing is chosen once per packet (one predictable branch).
//!
//! Sessions ([`Sessions`]): a feed follows the session its sequencer is configured with, or
//! the first one seen; a bus stream carried by [`Sender`](super::Sender)s names its sessions
//! after the stream and the sender's start ([`wire`]), and the driver follows
//! one at a time: another is followed only when the current one ended (and the other is
//! newer) or went silent, or at once for a newer one when configured so.
//!
//! Per packet the loop makes the `recv` call and one monotonic clock read (vDSO, no system
//! call), plus a wall clock read for sinks that stamp what they deliver; per message nothing
//! but the sink's work. It allocates nothing after setup.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mdbus_codecs::iex::tp::Protocol;
use mdbus_codecs::moldudp64::{HEADER_LEN, Packet, RequestPacket, Session};
use mdbus_codecs::sequencer::{
    Deliver, Event, LateJoin, Line, Sequencer, SequencerConfig, SequencerStats,
};
use mdbus_shm::counters::{CounterFile, MAX_COUNTERS};
use mdbus_shm::unix_ns;

use super::fault::{FaultConfig, FaultInjector};
use super::iex::{EpochMap, IexFraming, IexStats, Refused};
use super::socket::{self, MAX_DATAGRAM};
use super::{Idle, Mono, NetError, nanos, wire};
use crate::venue::Framing;

/// A second line: the same packets on another group, for A/B arbitration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineConfig {
    /// Multicast group and port (or a unicast address to bind).
    pub group: SocketAddrV4,
    /// Source for a source-specific join; `None`: any source.
    pub source: Option<Ipv4Addr>,
}

/// Where re-requests go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestServer {
    /// Nowhere: missing messages are declared lost once the NAK delay has passed.
    None,
    /// This address.
    Addr(SocketAddrV4),
    /// This port on the host the session's packets come from.
    SourcePort(u16),
}

/// Which sessions a driver follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sessions {
    /// One session for the driver's life: the sequencer's configured one, or the first seen
    /// (others are counted by the sequencer as foreign). Late join as configured.
    Any,
    /// The sessions of one bus stream, named by its senders ([`wire::session_name`]): one
    /// at a time, each with a sequencer of its own. Others are counted (`foreign_session`
    /// for another stream, `other_session`/`stale_session` for the stream's other sessions)
    /// and ignored until the followed one ended or went silent.
    Stream {
        /// The stream's session tag ([`wire::stream_tag`]).
        tag: [u8; wire::TAG_LEN],
        /// The epoch token of the driver's start: a session whose token is newer began
        /// while the driver was listening, so it is followed from its first message.
        started: u64,
        /// How long the followed session must be silent before another is followed.
        session_timeout: Duration,
        /// Follow a newer session as soon as one of its packets arrives.
        follow_newer: bool,
    },
}

/// Configuration of a [`Driver`].
#[derive(Clone, Debug, PartialEq)]
pub struct DriverConfig {
    /// Line A: multicast group and port (or a unicast address to bind; port 0: any).
    pub group: SocketAddrV4,
    /// Source of line A for a source-specific join; `None`: any-source join.
    pub source: Option<Ipv4Addr>,
    /// Interface to join on and send re-requests from (`0.0.0.0`: the kernel's choice).
    pub interface: Ipv4Addr,
    /// Line B, for A/B arbitration.
    pub line_b: Option<LineConfig>,
    /// Accept line packets from this host only (others are counted and ignored).
    pub accept_from: Option<Ipv4Addr>,
    /// Where re-requests go.
    pub request_server: RequestServer,
    /// Gap detection and recovery.
    pub sequencer: SequencerConfig,
    /// Which sessions are followed.
    pub sessions: Sessions,
    /// `SO_RCVBUF` of each line socket (0: the system default).
    pub rcvbuf: usize,
    /// Core to pin the loop's thread to.
    pub core: Option<usize>,
    /// What to do when nothing arrived.
    pub idle: Idle,
    /// Faults injected into the packets received on the lines (off by default).
    pub fault: FaultConfig,
    /// Return from [`run`](Driver::run) at the end of the (first) session.
    pub exit_at_end_of_session: bool,
    /// Call [`FeedSink::heartbeat`] at this interval while the feed is quiet.
    pub heartbeat_events: Option<Duration>,
    /// How the lines' datagrams are framed. IEX-TP needs [`Sessions::Any`] and no
    /// re-request server (it follows the first session id seen; others are
    /// `foreign_session`).
    pub framing: Framing,
    /// IEX-TP: the message protocol to follow (others are counted as foreign); `None`: the
    /// first seen.
    pub iex_protocol: Option<Protocol>,
}

impl DriverConfig {
    /// Line A at `group`: any-source join on the default interface, an 8 MiB receive
    /// buffer, no line B, no recovery, any session, no pinning, busy polling, no faults, the
    /// default sequencer, exit at the end of the session, no heartbeat events, MoldUDP64.
    pub fn new(group: SocketAddrV4) -> Self {
        DriverConfig {
            group,
            source: None,
            interface: Ipv4Addr::UNSPECIFIED,
            line_b: None,
            accept_from: None,
            request_server: RequestServer::None,
            sequencer: SequencerConfig::default(),
            sessions: Sessions::Any,
            rcvbuf: 8 << 20,
            core: None,
            idle: Idle::BusyPoll,
            fault: FaultConfig::default(),
            exit_at_end_of_session: true,
            heartbeat_events: None,
            framing: Framing::MoldUdp64,
            iex_protocol: None,
        }
    }
}

/// What a driver counted, summed over the sessions it followed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Datagrams received (lines and recovery).
    pub packets: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Datagrams received on line A.
    pub packets_a: u64,
    /// Datagrams received on line B.
    pub packets_b: u64,
    /// Datagrams received from the retransmission server.
    pub packets_recovery: u64,
    /// Re-requests sent.
    pub requests: u64,
    /// Re-requests that could not be sent (or that the server's host refused).
    pub request_errors: u64,
    /// `recv` errors other than "nothing waiting".
    pub recv_errors: u64,
    /// Datagrams shorter than a packet header (IEX-TP: not a segment).
    pub malformed: u64,
    /// Packets of another stream or not from this transport ([`Sessions::Stream`]).
    pub foreign_session: u64,
    /// Packets from a host other than the accepted one.
    pub foreign_source: u64,
    /// Packets of an older session (or answers for a session not followed).
    pub stale_session: u64,
    /// Packets of a newer session ignored because the followed one is live.
    pub other_session: u64,
    /// Sessions followed.
    pub sessions: u64,
    /// Sessions ended cleanly (end of session seen).
    pub sessions_ended: u64,
    /// Messages still missing when a session was replaced by another (reported to the sink
    /// as a gap).
    pub abandoned: u64,
    /// Datagrams dropped by the fault injector.
    pub fault_dropped: u64,
    /// The sequencers' counters.
    pub sequencer: SequencerStats,
    /// IEX-TP framing counters (restarts, cut segments, ...); zero for MoldUDP64.
    pub iex: IexStats,
}

/// What receives a driver's output. Every call is on the driver's thread; the per-message
/// ones ([`message`](Self::message), [`gap`](Self::gap)) must not allocate, lock or make
/// system calls.
pub trait FeedSink {
    /// Whether [`message`](Self::message) and [`gap`](Self::gap) need the receive time
    /// (a wall clock read per packet); `false` passes 0.
    const RECV_TS: bool;

    /// Message `seq` of the followed session, in order, received at `recv_ts_ns` (Unix ns:
    /// the arrival of the datagram that released it).
    fn message(&mut self, seq: u64, msg: &[u8], recv_ts_ns: u64);

    /// Messages `first .. first + count` are lost for good; called at their place in the
    /// message order (also for what a replaced session still missed).
    fn gap(&mut self, first: u64, count: u64, recv_ts_ns: u64);

    /// Messages `first .. first + count` were still missing when their session was replaced
    /// by another (the new session is not started yet).
    fn abandoned(&mut self, first: u64, count: u64, recv_ts_ns: u64) {
        self.gap(first, count, recv_ts_ns);
    }

    /// Messages `first .. first + count` are missing and being re-requested.
    fn gap_requested(&mut self, first: u64, count: u64, recv_ts_ns: u64) {
        let _ = (first, count, recv_ts_ns);
    }

    /// A session starts being followed (its first packet is about to be handled);
    /// `live_edge`: it was joined at the live edge, so what came before its first delivery
    /// was not received.
    fn session_started(&mut self, live_edge: bool) -> Result<(), NetError> {
        let _ = live_edge;
        Ok(())
    }

    /// The followed session ended at `next_seq`, everything before it delivered or reported.
    fn end_of_session(&mut self, next_seq: u64, now: u64, recv_ts_ns: u64);

    /// After [`end_of_session`](Self::end_of_session), each turn until it returns `true`:
    /// whether the sink is done with the session (for example its output closed).
    fn close(&mut self, now: u64) -> bool {
        let _ = now;
        true
    }

    /// The feed has been quiet for the configured heartbeat interval; `next_seq` is the next
    /// message expected.
    fn heartbeat(&mut self, next_seq: u64, recv_ts_ns: u64) {
        let _ = (next_seq, recv_ts_ns);
    }

    /// A turn in which nothing arrived (`now`: the driver's monotonic ns).
    fn idle(&mut self, now: u64) {
        let _ = now;
    }

    /// The loop is ending: last chance to publish what is pending.
    fn finish(&mut self, recv_ts_ns: u64) {
        let _ = recv_ts_ns;
    }

    /// Writes the counter values (in the order of the names the counters file was created
    /// with) into `out`; returns how many it wrote.
    fn counters(&self, driver: &DriverStats, out: &mut [u64]) -> usize;
}

/// What one [`Driver::poll_once`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxProgress {
    /// Datagrams received.
    pub packets: usize,
    /// The session ended (end of session seen, everything before it delivered or reported,
    /// and the sink done with it).
    pub ended: bool,
}

/// Counters are published at most this often (ns).
const COUNTERS_EVERY_NS: u64 = 1_000_000;

/// The re-request socket is read at most this often (ns): an empty `recv` costs about as
/// much as the rest of a turn, and answers can wait a few microseconds (the NAK delay before
/// them is a millisecond).
const RECOVERY_POLL_NS: u64 = 20_000;

/// Held fault-injector packets are released after this long without traffic (ns).
const FAULT_FLUSH_NS: u64 = 1_000_000;

/// IEX-TP: most extra datagrams of a lagging line read in one turn.
const CATCH_UP: usize = 64;

/// The session being followed.
#[derive(Debug)]
struct Current {
    epoch: u64,
    seq: Sequencer,
    /// Where re-requests for this session go.
    server: Option<SocketAddr>,
    ended: bool,
    /// When the last line packet of the session arrived (mono ns).
    last_seen: u64,
    /// Whether a line packet of the session was seen (the sink was told of it).
    started: bool,
    /// Joined at the live edge.
    live_edge: bool,
}

/// The state a packet is handled in: everything of the driver but its sockets, buffer and
/// fault injector, so that a packet borrowed from those can be handled.
#[derive(Debug)]
struct State {
    cfg: DriverConfig,
    cur: Option<Current>,
    stats: DriverStats,
    /// The previous sessions' sequencer counters, summed.
    done: SequencerStats,
    /// An ended session the sink is not done with yet.
    closing: bool,
    /// The IEX-TP framing, when the lines carry it.
    iex: Option<IexFraming>,
}

/// The receive loop; see the [module docs](self).
#[derive(Debug)]
pub struct Driver {
    state: State,
    line_a: UdpSocket,
    line_b: Option<UdpSocket>,
    recovery: Option<UdpSocket>,
    fault: Option<FaultInjector>,
    buf: Box<[u8]>,
    request: [u8; HEADER_LEN],
    clock: Mono,
    last_packet: u64,
    last_activity: u64,
    last_counters: u64,
    last_recovery_poll: u64,
    counters: Option<CounterFile>,
    rcvbuf: usize,
    warnings: Vec<String>,
}

impl Driver {
    /// Checks the configuration, binds and joins the sockets; nothing is received until it
    /// is polled. `counters`, if given, is published to (by [`FeedSink::counters`]).
    pub fn new(cfg: DriverConfig, counters: Option<CounterFile>) -> Result<Driver, NetError> {
        // Checks the sequencer configuration now rather than at the first packet.
        Sequencer::new(cfg.sequencer).map_err(|e| NetError::Config(format!("sequencer: {e}")))?;
        let iex = match cfg.framing {
            Framing::IexTp if cfg.request_server != RequestServer::None => {
                return Err(NetError::Config(
                    "IEX-TP: re-requests are not supported (line B is its recovery)".into(),
                ));
            }
            Framing::IexTp if cfg.sessions != Sessions::Any => {
                return Err(NetError::Config(
                    "IEX-TP: a feed follows one session id (Sessions::Any)".into(),
                ));
            }
            Framing::IexTp => Some(IexFraming::new(cfg.iex_protocol, MAX_DATAGRAM)),
            _ => None,
        };
        let mut warnings = Vec::new();
        let a = socket::recv_socket(
            cfg.group,
            cfg.source,
            cfg.interface,
            cfg.rcvbuf,
            &mut warnings,
        )?;
        let line_b = match cfg.line_b {
            Some(b) => Some(
                socket::recv_socket(b.group, b.source, cfg.interface, cfg.rcvbuf, &mut warnings)?
                    .socket,
            ),
            None => None,
        };
        let recovery = match cfg.request_server {
            RequestServer::None => None,
            RequestServer::Addr(a) => Some(socket::request_socket(cfg.interface, Some(a))?),
            RequestServer::SourcePort(_) => Some(socket::request_socket(cfg.interface, None)?),
        };
        let fault = cfg
            .fault
            .is_active()
            .then(|| FaultInjector::new(cfg.fault.clone(), MAX_DATAGRAM).with_framing(cfg.framing));
        // The one session of a feed has its sequencer (and its tables) before the first
        // packet; a stream's sessions get theirs as they come.
        let cur = match cfg.sessions {
            Sessions::Any => Some(Current {
                epoch: 0,
                seq: session_sequencer(&cfg, cfg.sequencer.session, cfg.sequencer.late_join)?,
                server: match cfg.request_server {
                    RequestServer::Addr(a) => Some(SocketAddr::V4(a)),
                    _ => None,
                },
                ended: false,
                last_seen: 0,
                started: false,
                live_edge: cfg.sequencer.late_join == LateJoin::LiveEdge,
            }),
            Sessions::Stream { .. } => None,
        };
        Ok(Driver {
            state: State {
                cfg,
                cur,
                stats: DriverStats::default(),
                done: SequencerStats::default(),
                closing: false,
                iex,
            },
            line_a: a.socket,
            rcvbuf: a.rcvbuf,
            line_b,
            recovery,
            fault,
            buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            request: [0; HEADER_LEN],
            clock: Mono::new(),
            last_packet: 0,
            last_activity: 0,
            last_counters: 0,
            last_recovery_poll: 0,
            counters,
            warnings,
        })
    }

    /// Publishes to `counters` from now on (by [`FeedSink::counters`]).
    pub fn set_counters(&mut self, counters: Option<CounterFile>) {
        self.counters = counters;
    }

    /// The configuration.
    pub fn config(&self) -> &DriverConfig {
        &self.state.cfg
    }

    /// Local address of line A's socket (where a unicast sender sends).
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

    /// Setup warnings (for example a clamped receive buffer).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Takes the setup warnings.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Usable `SO_RCVBUF` of line A.
    pub fn rcvbuf(&self) -> usize {
        self.rcvbuf
    }

    /// The session being followed, once one was seen.
    pub fn session(&self) -> Option<Session> {
        self.state.cur.as_ref()?.seq.session()
    }

    /// The monotonic clock the driver's `now` values come from (ns).
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The counters so far, summed over sessions.
    pub fn stats(&self) -> DriverStats {
        let mut s = self.state.stats;
        s.sequencer = self.state.done;
        if let Some(c) = &self.state.cur {
            add_sequencer(&mut s.sequencer, &c.seq.stats());
        }
        if let Some(f) = &self.fault {
            s.fault_dropped = f.stats().dropped;
        }
        if let Some(x) = &self.state.iex {
            s.iex = x.stats();
        }
        s
    }

    /// One turn: receive what is waiting on each socket, handle timers and re-requests,
    /// deliver in order to `sink`.
    pub fn poll_once<S: FeedSink>(&mut self, sink: &mut S) -> Result<RxProgress, NetError> {
        let mut progress = RxProgress::default();
        let turn = self.clock.now();
        let poll_recovery = turn.saturating_sub(self.last_recovery_poll) >= RECOVERY_POLL_NS;
        if poll_recovery {
            self.last_recovery_poll = turn;
        }
        // Lines A and B's datagrams since the turn began (they have more waiting, maybe).
        let mut got = [false; 2];
        for line in [Line::A, Line::B, Line::Recovery] {
            if self.recv_one(line, poll_recovery, sink)? {
                progress.packets += 1;
                match line {
                    Line::A => got[0] = true,
                    Line::B => got[1] = true,
                    Line::Recovery => {}
                }
            }
        }
        if self.state.iex.is_some() {
            progress.packets += self.catch_up(got, sink)?;
        }
        let now = self.clock.now();
        self.timers(now, sink);
        progress.ended = self.events(now, sink);
        if progress.packets == 0 {
            self.quiet(now, sink)?;
        }
        // Also under a stream of packets: the counters never freeze while the loop runs.
        self.publish_counters(now, false, sink);
        Ok(progress)
    }

    /// Receives one datagram of `line` (the recovery socket only when `poll_recovery`) and
    /// handles it; returns whether one arrived.
    #[inline]
    fn recv_one<S: FeedSink>(
        &mut self,
        line: Line,
        poll_recovery: bool,
        sink: &mut S,
    ) -> Result<bool, NetError> {
        let sock = match line {
            Line::A => Some(&self.line_a),
            Line::B => self.line_b.as_ref(),
            Line::Recovery if poll_recovery => self.recovery.as_ref(),
            Line::Recovery => None,
        };
        let Some(sock) = sock else { return Ok(false) };
        match sock.recv_from(&mut self.buf) {
            Ok((n, from)) => {
                let now = self.clock.now();
                self.last_packet = now;
                self.last_activity = now;
                let st = &mut self.state.stats;
                st.packets += 1;
                st.bytes += n as u64;
                match line {
                    Line::A => st.packets_a += 1,
                    Line::B => st.packets_b += 1,
                    Line::Recovery => st.packets_recovery += 1,
                }
                let SocketAddr::V4(from) = from else {
                    st.foreign_source += 1;
                    return Ok(true);
                };
                let ts = if S::RECV_TS { unix_ns() } else { 0 };
                let bytes = &self.buf[..n];
                match &mut self.fault {
                    Some(f) if line != Line::Recovery => {
                        let mut result = Ok(());
                        let state = &mut self.state;
                        f.apply(bytes, |p: &[u8]| {
                            if result.is_ok() {
                                result = state.packet(now, ts, line, from, p, sink);
                            }
                        });
                        result?;
                    }
                    _ => self.state.packet(now, ts, line, from, bytes, sink)?,
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            // ICMP "port unreachable" from the server, reported on a later call.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                self.state.stats.request_errors += 1;
                Ok(false)
            }
            Err(_) => {
                self.state.stats.recv_errors += 1;
                Ok(false)
            }
        }
    }

    /// IEX-TP: while one line's latest segment is behind the other's and it has datagrams
    /// waiting, reads more of it (at most [`CATCH_UP`] this turn). A loop that fell behind
    /// both lines otherwise drains them one datagram each per turn, and the line that lost
    /// packets runs ahead of the other by what it lost: its gaps would pass the NAK delay
    /// before the other line's copies, still queued, are read. Returns the datagrams read.
    fn catch_up<S: FeedSink>(&mut self, got: [bool; 2], sink: &mut S) -> Result<usize, NetError> {
        let mut n = 0;
        while n < CATCH_UP {
            let Some(x) = &self.state.iex else { break };
            let line = match x.lagging() {
                Some(Line::A) if got[0] => Line::A,
                Some(Line::B) if got[1] => Line::B,
                _ => break,
            };
            if !self.recv_one(line, false, sink)? {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// A turn in which nothing arrived: held fault-injector packets, heartbeat events, the
    /// sink's idle work.
    #[cold]
    fn quiet<S: FeedSink>(&mut self, now: u64, sink: &mut S) -> Result<(), NetError> {
        if let Some(f) = &mut self.fault
            && f.held() > 0
            && now.saturating_sub(self.last_packet) >= FAULT_FLUSH_NS
        {
            let ts = if S::RECV_TS { unix_ns() } else { 0 };
            let state = &mut self.state;
            let mut result = Ok(());
            let unknown = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
            f.flush(|p: &[u8]| {
                if result.is_ok() {
                    result = state.packet(now, ts, Line::A, unknown, p, sink);
                }
            });
            result?;
        }
        if let Some(every) = self.state.cfg.heartbeat_events
            && now.saturating_sub(self.last_activity) >= nanos(every)
        {
            self.last_activity = now;
            let mut next = self.state.cur.as_ref().map_or(0, |c| c.seq.next_seq());
            if let Some(x) = &self.state.iex {
                next = x.map().seq_of(next);
            }
            sink.heartbeat(next, unix_ns());
        }
        sink.idle(now);
        Ok(())
    }

    /// Sequencer timers and due re-requests.
    fn timers<S: FeedSink>(&mut self, now: u64, sink: &mut S) {
        let Some(cur) = self.state.cur.as_mut() else {
            return;
        };
        if cur.seq.next_deadline().is_none_or(|d| d > now) {
            return;
        }
        let ts = if S::RECV_TS { unix_ns() } else { 0 };
        match &self.state.iex {
            None => cur.seq.handle_timeout(now, Adapter { sink, ts }),
            Some(x) => {
                let map = x.map();
                cur.seq.handle_timeout(now, IexAdapter { sink, ts, map });
            }
        }
        while let Some(r) = cur.seq.poll_request(now) {
            let sent = match (&self.recovery, self.state.cfg.request_server, cur.server) {
                (Some(s), RequestServer::Addr(_), _) => {
                    send_request(s, &r, &mut self.request, None)
                }
                (Some(s), RequestServer::SourcePort(_), Some(to)) => {
                    send_request(s, &r, &mut self.request, Some(to))
                }
                _ => false,
            };
            if sent {
                self.state.stats.requests += 1;
            } else {
                self.state.stats.request_errors += 1;
            }
        }
    }

    /// Hands the sequencer's events to the sink; returns whether the session ended (and the
    /// sink is done with it) now.
    fn events<S: FeedSink>(&mut self, now: u64, sink: &mut S) -> bool {
        let State {
            cur,
            stats,
            closing,
            ..
        } = &mut self.state;
        let Some(cur) = cur.as_mut() else {
            return false;
        };
        while let Some(e) = cur.seq.poll_event() {
            match e {
                Event::Gap {
                    first,
                    count,
                    recoverable: true,
                } => sink.gap_requested(first, count, unix_ns()),
                Event::EndOfSession { next_seq } if !cur.ended => {
                    cur.ended = true;
                    stats.sessions_ended += 1;
                    *closing = true;
                    sink.end_of_session(next_seq, now, unix_ns());
                }
                // Lost gaps were handed to the sink in place; the rest is counted.
                Event::Gap { .. }
                | Event::EndOfSession { .. }
                | Event::SessionStarted { .. }
                | Event::LateJoin { .. }
                | Event::Recovered { .. } => {}
            }
        }
        if *closing && sink.close(now) {
            *closing = false;
            return true;
        }
        false
    }

    fn publish_counters<S: FeedSink>(&mut self, now: u64, force: bool, sink: &S) {
        if self.counters.is_some()
            && (force || now.saturating_sub(self.last_counters) >= COUNTERS_EVERY_NS)
        {
            self.last_counters = now;
            let mut values = [0u64; MAX_COUNTERS];
            let n = sink.counters(&self.stats(), &mut values);
            if let Some(c) = &self.counters {
                c.publish(&values[..n.min(MAX_COUNTERS)]);
            }
        }
    }

    /// Runs the loop on this thread (pinned first, if configured) until `stop` is set or,
    /// with [`exit_at_end_of_session`](DriverConfig::exit_at_end_of_session), the session
    /// ended; then lets the sink [`finish`](FeedSink::finish) and publishes the final
    /// counters (the counters file is marked finished by [`finish`](Self::finish)).
    pub fn run<S: FeedSink>(&mut self, sink: &mut S, stop: &AtomicBool) -> Result<(), NetError> {
        if let Some(core) = self.state.cfg.core {
            mdbus_tuning::pin_current_thread(core)?;
        }
        let idle = self.state.cfg.idle;
        while !stop.load(Ordering::Relaxed) {
            let p = self.poll_once(sink)?;
            if p.ended && self.state.cfg.exit_at_end_of_session {
                break;
            }
            if p.packets == 0 {
                idle.wait();
            }
        }
        sink.finish(unix_ns());
        let now = self.clock.now();
        self.publish_counters(now, true, sink);
        Ok(())
    }

    /// Publishes the final counters and marks the counters file finished.
    pub fn finish<S: FeedSink>(&mut self, sink: &S) {
        let now = self.clock.now();
        self.publish_counters(now, true, sink);
        if let Some(c) = &self.counters {
            c.finish();
        }
    }
}

impl State {
    /// A datagram of a line (or the recovery socket), by the configured framing.
    #[inline]
    fn packet<S: FeedSink>(
        &mut self,
        now: u64,
        ts: u64,
        line: Line,
        from: SocketAddrV4,
        bytes: &[u8],
        sink: &mut S,
    ) -> Result<(), NetError> {
        if self.iex.is_none() {
            self.on_packet(now, ts, line, from, bytes, sink)
        } else {
            self.on_iex_packet(now, ts, line, from, bytes, sink)
        }
    }

    /// An IEX-TP segment: source and segment checks, the translation into the session's one
    /// sequence, then the sequencer (and, for a cut segment, the end of its declared
    /// messages, so that those cut off are missing).
    fn on_iex_packet<S: FeedSink>(
        &mut self,
        now: u64,
        ts: u64,
        line: Line,
        from: SocketAddrV4,
        bytes: &[u8],
        sink: &mut S,
    ) -> Result<(), NetError> {
        if let Some(accept) = self.cfg.accept_from
            && *from.ip() != accept
            && !from.ip().is_unspecified()
        {
            self.stats.foreign_source += 1;
            return Ok(());
        }
        let (Some(cur), Some(iex)) = (self.cur.as_mut(), self.iex.as_mut()) else {
            return Ok(());
        };
        let t = match iex.translate(bytes, cur.seq.highest_seen()) {
            Ok(t) => t,
            Err(Refused::Malformed(_)) => {
                self.stats.malformed += 1;
                return Ok(());
            }
            Err(Refused::ForeignSession) => {
                self.stats.foreign_session += 1;
                return Ok(());
            }
            Err(Refused::ForeignProtocol | Refused::Stale) => return Ok(()),
        };
        if !cur.started {
            cur.started = true;
            self.stats.sessions += 1;
            sink.session_started(cur.live_edge)?;
        }
        cur.last_seen = now;
        iex.note_line(line, t.end);
        let map = iex.map();
        cur.seq
            .handle_packet(now, line, iex.packet(&t), IexAdapter { sink, ts, map });
        if let Some(next) = t.tail {
            cur.seq
                .handle_packet(now, line, iex.heartbeat(next), IexAdapter { sink, ts, map });
        }
        Ok(())
    }

    /// Header and session checks, then the sequencer.
    fn on_packet<S: FeedSink>(
        &mut self,
        now: u64,
        ts: u64,
        line: Line,
        from: SocketAddrV4,
        bytes: &[u8],
        sink: &mut S,
    ) -> Result<(), NetError> {
        let Ok(pkt) = Packet::parse(bytes) else {
            self.stats.malformed += 1;
            return Ok(());
        };
        if line != Line::Recovery
            && let Some(accept) = self.cfg.accept_from
            && *from.ip() != accept
            && !from.ip().is_unspecified()
        {
            self.stats.foreign_source += 1;
            return Ok(());
        }
        let session = pkt.session();
        let (epoch, timeout, follow_newer) = match self.cfg.sessions {
            Sessions::Any => (0, u64::MAX, false),
            Sessions::Stream {
                tag,
                session_timeout,
                follow_newer,
                ..
            } => match wire::parse_session(session) {
                Some((t, epoch)) if t == tag => (epoch, nanos(session_timeout), follow_newer),
                _ => {
                    self.stats.foreign_session += 1;
                    return Ok(());
                }
            },
        };
        match self.cur.as_ref().map(|c| (c.epoch, c.ended, c.last_seen)) {
            Some((e, ..)) if epoch == e => {}
            _ if line == Line::Recovery => {
                // An answer for a session this driver does not follow.
                self.stats.stale_session += 1;
                return Ok(());
            }
            None => self.start_session(now, ts, session, epoch, from, sink)?,
            Some((e, ended, last_seen)) => {
                // Another session of the stream. Followed only when the current one ended
                // (and this one is newer), or went silent, or on the operator's say-so for a
                // newer one: a forged packet must not take the driver off a live session.
                let newer = epoch > e;
                let silent = now.saturating_sub(last_seen) >= timeout;
                if (newer && (ended || follow_newer)) || (silent && !ended) {
                    self.start_session(now, ts, session, epoch, from, sink)?;
                } else {
                    if newer {
                        self.stats.other_session += 1;
                    } else {
                        self.stats.stale_session += 1;
                    }
                    return Ok(());
                }
            }
        }
        let Some(cur) = self.cur.as_mut() else {
            return Ok(());
        };
        if !cur.started && line != Line::Recovery {
            cur.started = true;
            self.stats.sessions += 1;
            sink.session_started(cur.live_edge)?;
        }
        if line != Line::Recovery {
            cur.last_seen = now;
            if cur.server.is_none()
                && let RequestServer::SourcePort(port) = self.cfg.request_server
                && !from.ip().is_unspecified()
            {
                cur.server = Some(SocketAddr::V4(SocketAddrV4::new(*from.ip(), port)));
            }
        }
        if line == Line::Recovery && cur.server.is_some_and(|s| s != SocketAddr::V4(from)) {
            self.stats.foreign_source += 1;
            return Ok(());
        }
        cur.seq
            .handle_packet(now, line, bytes, Adapter { sink, ts });
        Ok(())
    }

    /// Follows a new session: hands the sink what the old one still missed, starts a new
    /// sequencer (the sink hears of the session at its first line packet, next).
    fn start_session<S: FeedSink>(
        &mut self,
        now: u64,
        ts: u64,
        session: Session,
        epoch: u64,
        from: SocketAddrV4,
        sink: &mut S,
    ) -> Result<(), NetError> {
        if let Some(old) = self.cur.take() {
            add_sequencer(&mut self.done, &old.seq.stats());
            if !old.ended {
                let next = old.seq.next_seq();
                let highest = old.seq.highest_seen();
                if highest > next {
                    let count = highest - next;
                    self.stats.abandoned += count;
                    sink.abandoned(next, count, ts);
                }
            }
        }
        self.closing = false;
        let configured = self.cfg.sequencer.late_join;
        let (late_join, named) = match self.cfg.sessions {
            Sessions::Any => (configured, self.cfg.sequencer.session),
            Sessions::Stream { started, .. } => {
                // A session that began while this driver was listening (a newer session of
                // the stream, or one whose epoch, its start time, is newer than the
                // driver's) is followed from its first message: a lost first datagram is a
                // gap to recover, not a late join. Only a session already running at start
                // is joined at the live edge.
                let began_here = self.stats.sessions > 0 || epoch > started;
                let late_join = match configured {
                    LateJoin::LiveEdge if !began_here => LateJoin::LiveEdge,
                    LateJoin::FromSequence(n) => LateJoin::FromSequence(n),
                    LateJoin::LiveEdge => LateJoin::FromSequence(1),
                };
                (late_join, Some(session))
            }
        };
        let seq = session_sequencer(&self.cfg, named, late_join)?;
        let server = match self.cfg.request_server {
            RequestServer::Addr(a) => Some(SocketAddr::V4(a)),
            RequestServer::SourcePort(p) if !from.ip().is_unspecified() => {
                Some(SocketAddr::V4(SocketAddrV4::new(*from.ip(), p)))
            }
            _ => None,
        };
        self.cur = Some(Current {
            epoch,
            seq,
            server,
            ended: false,
            last_seen: now,
            started: false,
            live_edge: late_join == LateJoin::LiveEdge,
        });
        Ok(())
    }
}

/// A sequencer for one session: `named` (or the first seen), starting per `late_join`; no
/// re-requests without a server.
fn session_sequencer(
    cfg: &DriverConfig,
    named: Option<Session>,
    late_join: LateJoin,
) -> Result<Sequencer, NetError> {
    Sequencer::new(SequencerConfig {
        session: named,
        late_join,
        max_outstanding_requests: if cfg.request_server == RequestServer::None {
            0
        } else {
            cfg.sequencer.max_outstanding_requests
        },
        ..cfg.sequencer
    })
    .map_err(|e| NetError::Config(format!("sequencer: {e}")))
}

/// Hands the sequencer's output to a sink with the packet's receive time.
struct Adapter<'a, S> {
    sink: &'a mut S,
    ts: u64,
}

impl<S: FeedSink> Deliver for Adapter<'_, S> {
    #[inline]
    fn message(&mut self, seq: u64, msg: &[u8]) {
        self.sink.message(seq, msg, self.ts);
    }

    fn gap(&mut self, first: u64, count: u64) {
        self.sink.gap(first, count, self.ts);
    }
}

/// Hands the sequencer's output to a sink in IEX sequence numbers (see
/// [`IexFraming`]).
struct IexAdapter<'a, S> {
    sink: &'a mut S,
    ts: u64,
    map: EpochMap,
}

impl<S: FeedSink> Deliver for IexAdapter<'_, S> {
    #[inline]
    fn message(&mut self, seq: u64, msg: &[u8]) {
        self.sink.message(self.map.seq_of(seq), msg, self.ts);
    }

    fn gap(&mut self, first: u64, count: u64) {
        let (sink, ts) = (&mut *self.sink, self.ts);
        self.map.split(first, count, |f, n| sink.gap(f, n, ts));
    }
}

fn send_request(
    sock: &UdpSocket,
    r: &RequestPacket,
    buf: &mut [u8; HEADER_LEN],
    to: Option<SocketAddr>,
) -> bool {
    if r.encode(buf).is_err() {
        return false;
    }
    match to {
        Some(to) => sock.send_to(buf, to).is_ok(),
        None => sock.send(buf).is_ok(),
    }
}

/// Adds one session's sequencer counters to `sum`.
pub(crate) fn add_sequencer(sum: &mut SequencerStats, s: &SequencerStats) {
    sum.packets += s.packets;
    sum.messages += s.messages;
    sum.duplicates += s.duplicates;
    sum.out_of_order += s.out_of_order;
    sum.gaps_detected += s.gaps_detected;
    sum.requests_sent += s.requests_sent;
    sum.recovered += s.recovered;
    sum.unrecoverable += s.unrecoverable;
    sum.foreign_session += s.foreign_session;
    sum.malformed += s.malformed;
    sum.late_join += s.late_join;
    sum.heartbeats += s.heartbeats;
    sum.not_available += s.not_available;
    sum.overflows += s.overflows;
    sum.implausible_jumps += s.implausible_jumps;
    sum.jumps_corroborated += s.jumps_corroborated;
    sum.forged_end_of_session += s.forged_end_of_session;
    sum.anchors_replaced += s.anchors_replaced;
    sum.zero_sequence += s.zero_sequence;
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdbus_codecs::moldudp64::{PacketBuilder, encode_end_of_session};

    /// Records what the driver hands it.
    #[derive(Default)]
    struct Record {
        messages: Vec<(u64, Vec<u8>)>,
        gaps: Vec<(u64, u64)>,
        started: u32,
        ended: Option<u64>,
    }

    impl FeedSink for Record {
        const RECV_TS: bool = true;

        fn message(&mut self, seq: u64, msg: &[u8], recv_ts_ns: u64) {
            assert!(recv_ts_ns > 0, "stamped");
            self.messages.push((seq, msg.to_vec()));
        }

        fn gap(&mut self, first: u64, count: u64, _: u64) {
            self.gaps.push((first, count));
        }

        fn session_started(&mut self, _: bool) -> Result<(), NetError> {
            self.started += 1;
            Ok(())
        }

        fn end_of_session(&mut self, next_seq: u64, _: u64, _: u64) {
            self.ended = Some(next_seq);
        }

        fn counters(&self, d: &DriverStats, out: &mut [u64]) -> usize {
            out[0] = d.packets;
            1
        }
    }

    fn packet(session: Session, seq: u64, msgs: &[&[u8]]) -> Vec<u8> {
        let mut buf = vec![0u8; 1400];
        let mut b = PacketBuilder::new(&mut buf, session, seq).unwrap();
        for m in msgs {
            b.push(m).unwrap();
        }
        let n = b.finish();
        buf.truncate(n);
        buf
    }

    /// Polls until the session ended (or a bound of turns passed).
    fn drive(d: &mut Driver, sink: &mut Record) {
        for _ in 0..1_000_000 {
            if d.poll_once(sink).unwrap().ended {
                return;
            }
            std::thread::yield_now();
        }
        panic!("the session did not end");
    }

    fn loopback(sessions: Sessions) -> (Driver, UdpSocket) {
        let cfg = DriverConfig {
            interface: Ipv4Addr::LOCALHOST,
            rcvbuf: 0,
            sessions,
            sequencer: SequencerConfig {
                late_join: LateJoin::FromSequence(1),
                nak_delay: Duration::from_millis(1),
                ..SequencerConfig::default()
            },
            ..DriverConfig::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        };
        let d = Driver::new(cfg, None).unwrap();
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        tx.connect(d.line_a_addr().unwrap()).unwrap();
        (d, tx)
    }

    #[test]
    fn a_feed_is_delivered_in_order_and_bad_datagrams_are_counted() {
        let (mut d, tx) = loopback(Sessions::Any);
        let s = Session(*b"SESSION001");
        tx.send(&packet(s, 1, &[b"one", b"two"])).unwrap();
        tx.send(b"short").unwrap();
        // Message 3 is lost (no server: declared lost after the NAK delay), 4 arrives.
        tx.send(&packet(s, 4, &[b"four"])).unwrap();
        let mut eos = [0u8; HEADER_LEN];
        encode_end_of_session(&mut eos, s, 5).unwrap();
        tx.send(&eos).unwrap();
        let mut sink = Record::default();
        drive(&mut d, &mut sink);
        let seqs: Vec<u64> = sink.messages.iter().map(|m| m.0).collect();
        assert_eq!(seqs, [1, 2, 4]);
        assert_eq!(sink.messages[2].1, b"four");
        assert_eq!(sink.gaps, [(3, 1)]);
        assert_eq!((sink.started, sink.ended), (1, Some(5)));
        let st = d.stats();
        assert_eq!((st.packets, st.packets_a, st.malformed), (4, 4, 1));
        assert_eq!((st.sessions, st.sessions_ended), (1, 1));
        assert_eq!(st.sequencer.unrecoverable, 1);
        assert_eq!(d.session(), Some(s));
    }

    #[test]
    fn a_stream_driver_follows_its_own_sessions_only() {
        let tag = wire::stream_tag("t17.driver");
        let (mut d, tx) = loopback(Sessions::Stream {
            tag,
            started: 0,
            session_timeout: Duration::from_secs(60),
            follow_newer: false,
        });
        let ours = wire::session_name(tag, 5);
        let other_stream = wire::session_name(wire::stream_tag("another"), 5);
        tx.send(&packet(other_stream, 1, &[b"not ours"])).unwrap();
        tx.send(&packet(Session(*b"NOTABUSTAG"), 1, &[b"nor this"]))
            .unwrap();
        tx.send(&packet(ours, 1, &[b"ours"])).unwrap();
        // A newer session of the stream while ours is live: counted, not followed.
        tx.send(&packet(wire::session_name(tag, 6), 1, &[b"later"]))
            .unwrap();
        let mut eos = [0u8; HEADER_LEN];
        encode_end_of_session(&mut eos, ours, 2).unwrap();
        tx.send(&eos).unwrap();
        let mut sink = Record::default();
        drive(&mut d, &mut sink);
        assert_eq!(sink.messages, [(1, b"ours".to_vec())]);
        let st = d.stats();
        assert_eq!((st.foreign_session, st.other_session), (2, 1));
        assert_eq!((st.sessions, st.sessions_ended), (1, 1));
        assert_eq!(d.session(), Some(ours));
    }
    /// An IEX-TP segment: `msgs` from `first`, at stream offset `offset`, sent at `sent`.
    fn seg(
        session: u32,
        protocol: u16,
        first: u64,
        offset: u64,
        sent: u64,
        msgs: &[&[u8]],
    ) -> Vec<u8> {
        let mut body = Vec::new();
        for m in msgs {
            body.extend_from_slice(&u16::try_from(m.len()).unwrap().to_le_bytes());
            body.extend_from_slice(m);
        }
        let mut p = vec![1u8, 0];
        p.extend_from_slice(&protocol.to_le_bytes());
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(&session.to_le_bytes());
        p.extend_from_slice(&u16::try_from(body.len()).unwrap().to_le_bytes());
        p.extend_from_slice(&u16::try_from(msgs.len()).unwrap().to_le_bytes());
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(&first.to_le_bytes());
        p.extend_from_slice(&sent.to_le_bytes());
        p.extend_from_slice(&body);
        p
    }

    const DEEP: u16 = 0x8004;
    const SEC: u64 = 1_000_000_000;

    /// A DEEP segment of session 7.
    fn deep(first: u64, offset: u64, sent: u64, msgs: &[&[u8]]) -> Vec<u8> {
        seg(7, DEEP, first, offset, sent, msgs)
    }

    /// An IEX-TP driver on loopback with lines A and B (B's sender second).
    fn iex_loopback(nak_ms: u64) -> (Driver, UdpSocket, UdpSocket) {
        let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let cfg = DriverConfig {
            interface: Ipv4Addr::LOCALHOST,
            rcvbuf: 0,
            line_b: Some(LineConfig {
                group: any,
                source: None,
            }),
            framing: Framing::IexTp,
            iex_protocol: Some(Protocol::DEEP),
            sequencer: SequencerConfig {
                late_join: LateJoin::FromSequence(1),
                nak_delay: Duration::from_millis(nak_ms),
                ..SequencerConfig::default()
            },
            ..DriverConfig::new(any)
        };
        let d = Driver::new(cfg, None).unwrap();
        let a = UdpSocket::bind(any).unwrap();
        a.connect(d.line_a_addr().unwrap()).unwrap();
        let b = UdpSocket::bind(any).unwrap();
        b.connect(d.line_b_addr().unwrap().unwrap()).unwrap();
        (d, a, b)
    }

    /// Polls until `done` holds of the sink (bounded, so that a failure cannot hang).
    fn drive_until(d: &mut Driver, sink: &mut Record, done: impl Fn(&Record) -> bool) {
        let bound = std::time::Instant::now() + Duration::from_secs(10);
        while !done(sink) {
            assert!(
                std::time::Instant::now() < bound,
                "not reached: {:?} {:?}",
                sink.messages,
                sink.gaps
            );
            d.poll_once(sink).unwrap();
            std::thread::yield_now();
        }
        // What the same turn still brings.
        for _ in 0..100 {
            d.poll_once(sink).unwrap();
        }
    }

    fn seqs(r: &Record) -> Vec<u64> {
        r.messages.iter().map(|m| m.0).collect()
    }

    #[test]
    fn iex_a_gap_on_line_a_is_filled_by_line_b_message_by_message() {
        let (mut d, a, b) = iex_loopback(500);
        a.send(&deep(1, 0, 10, &[b"S1", b"S2"])).unwrap();
        a.send(&deep(5, 12, 20, &[b"S5"])).unwrap();
        // Line B groups the messages into other segments.
        b.send(&deep(1, 0, 10, &[b"S1"])).unwrap();
        b.send(&deep(2, 4, 10, &[b"S2", b"S3", b"S4"])).unwrap();
        let mut sink = Record::default();
        drive_until(&mut d, &mut sink, |r| r.messages.len() == 5);
        assert_eq!(seqs(&sink), [1, 2, 3, 4, 5]);
        assert_eq!(sink.messages[2].1, b"S3");
        assert!(sink.gaps.is_empty());
        let st = d.stats();
        assert_eq!((st.packets_a, st.packets_b), (2, 2));
        assert_eq!(st.sequencer.duplicates, 2, "line B's copies of 1 and 2");
        assert_eq!(st.sequencer.unrecoverable, 0);
        assert_eq!(d.session(), Some(IexFraming::session_name(7)));
        assert_eq!(sink.started, 1);
    }

    #[test]
    fn iex_a_gap_no_line_fills_is_declared_lost_in_place() {
        let (mut d, a, _b) = iex_loopback(1);
        a.send(&deep(1, 0, 10, &[b"S1"])).unwrap();
        a.send(&deep(4, 9, 20, &[b"S4"])).unwrap();
        let mut sink = Record::default();
        drive_until(&mut d, &mut sink, |r| r.messages.len() == 2);
        assert_eq!(seqs(&sink), [1, 4]);
        assert_eq!(sink.gaps, [(2, 2)]);
        let st = d.stats();
        assert_eq!(
            (st.sequencer.gaps_detected, st.sequencer.unrecoverable),
            (1, 2)
        );
    }

    #[test]
    fn iex_a_restart_at_1_is_counted_not_a_gap_nor_duplicates() {
        let (mut d, a, b) = iex_loopback(500);
        a.send(&deep(1, 0, SEC, &[b"S1", b"S2", b"S3"])).unwrap();
        // A heartbeat at the end of the run, then the sequence restarts at 1.
        a.send(&deep(4, 9, 2 * SEC, &[])).unwrap();
        a.send(&deep(1, 0, 5 * SEC, &[b"R1", b"R2"])).unwrap();
        a.send(&deep(3, 6, 5 * SEC + 1, &[b"R3"])).unwrap();
        // Line B's copy of the restarting segment is a duplicate, not another restart.
        b.send(&deep(1, 0, 5 * SEC, &[b"R1", b"R2"])).unwrap();
        let mut sink = Record::default();
        drive_until(&mut d, &mut sink, |r| r.messages.len() == 6);
        assert_eq!(seqs(&sink), [1, 2, 3, 1, 2, 3]);
        assert_eq!(sink.messages[3].1, b"R1");
        assert!(sink.gaps.is_empty(), "{:?}", sink.gaps);
        let st = d.stats();
        assert_eq!(st.iex.restarts, 1);
        assert_eq!(st.sequencer.duplicates, 2);
        assert_eq!(st.sequencer.unrecoverable, 0);
    }

    #[test]
    fn iex_heartbeats_before_the_first_message_are_no_restarts() {
        let (mut d, a, _b) = iex_loopback(500);
        for t in 0..3 {
            a.send(&deep(1, 0, t * 2 * SEC, &[])).unwrap();
        }
        a.send(&deep(1, 0, 7 * SEC, &[b"S1", b"S2"])).unwrap();
        let mut sink = Record::default();
        drive_until(&mut d, &mut sink, |r| r.messages.len() == 2);
        assert_eq!(seqs(&sink), [1, 2]);
        let st = d.stats();
        assert_eq!((st.iex.restarts, st.sequencer.heartbeats), (0, 3));
    }

    #[test]
    fn iex_line_b_s_copy_of_a_first_data_segment_after_heartbeats_is_no_restart() {
        let (mut d, a, b) = iex_loopback(500);
        // The run opens with heartbeats at sequence 1, its first data segment seconds later.
        a.send(&deep(1, 0, SEC, &[])).unwrap();
        a.send(&deep(1, 0, 9 * SEC, &[b"S1", b"S2"])).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let mut sink = Record::default();
        drive_until(&mut d, &mut sink, |r| r.messages.len() == 2);
        b.send(&deep(1, 0, SEC, &[])).unwrap();
        b.send(&deep(1, 0, 9 * SEC, &[b"S1", b"S2"])).unwrap();
        a.send(&deep(3, 6, 9 * SEC + 1, &[b"S3"])).unwrap();
        drive_until(&mut d, &mut sink, |r| r.messages.len() == 3);
        assert_eq!(seqs(&sink), [1, 2, 3]);
        let st = d.stats();
        assert_eq!((st.iex.restarts, st.sequencer.duplicates), (0, 2));
    }

    #[test]
    fn iex_a_loop_behind_both_lines_reads_the_lagging_line_before_declaring_a_loss() {
        // Everything is queued before the first turn, line A missing every fifth segment;
        // a gap is declared lost at the end of the turn it was found in.
        let (mut d, a, b) = iex_loopback(0);
        let msgs: Vec<Vec<u8>> = (1..=200u64).map(|i| i.to_le_bytes().to_vec()).collect();
        let segs: Vec<Vec<u8>> = (0..200u64)
            .map(|i| deep(i + 1, i * 10, 10 + i, &[&msgs[i as usize]]))
            .collect();
        for (i, s) in segs.iter().enumerate() {
            if i % 5 != 4 {
                a.send(s).unwrap();
            }
        }
        for s in &segs {
            b.send(s).unwrap();
        }
        let mut sink = Record::default();
        drive_until(&mut d, &mut sink, |r| {
            r.messages.len() + r.gaps.len() >= 200
        });
        assert!(sink.gaps.is_empty(), "{:?}", sink.gaps);
        assert_eq!(seqs(&sink), (1..=200).collect::<Vec<_>>());
    }

    #[test]
    fn iex_line_b_fills_the_run_before_a_restart_after_line_a_restarted() {
        let (mut d, a, b) = iex_loopback(500);
        a.send(&deep(1, 0, SEC, &[b"S1"])).unwrap();
        a.send(&deep(3, 6, SEC + 2, &[b"S3"])).unwrap();
        a.send(&deep(1, 0, 5 * SEC, &[b"R1"])).unwrap();
        // Line B lags: its copy of message 2 of the first run comes after A's restart.
        std::thread::sleep(Duration::from_millis(5));
        let mut sink = Record::default();
        for _ in 0..100 {
            d.poll_once(&mut sink).unwrap();
        }
        assert_eq!(seqs(&sink), [1], "held until the run before is whole");
        b.send(&deep(2, 3, SEC + 1, &[b"S2"])).unwrap();
        drive_until(&mut d, &mut sink, |r| r.messages.len() == 4);
        assert_eq!(seqs(&sink), [1, 2, 3, 1]);
        assert_eq!(sink.messages[1].1, b"S2");
        assert!(sink.gaps.is_empty(), "{:?}", sink.gaps);
        assert_eq!(d.stats().iex.restarts, 1);
    }

    #[test]
    fn iex_foreign_sessions_protocols_and_bad_datagrams_are_counted_never_delivered() {
        let (mut d, a, _b) = iex_loopback(1);
        a.send(&deep(1, 0, 10, &[b"S1"])).unwrap();
        a.send(&seg(8, DEEP, 2, 3, 11, &[b"other session"]))
            .unwrap();
        a.send(&seg(7, 0x8003, 2, 3, 11, &[b"TOPS"])).unwrap();
        a.send(b"short").unwrap();
        let mut bad_version = deep(2, 3, 11, &[b"V"]);
        bad_version[0] = 2;
        a.send(&bad_version).unwrap();
        // A damaged block: declares 9 bytes where 1 is left.
        let mut damaged = deep(2, 3, 12, &[b"S2", b"S3"]);
        let at = damaged.len() - 3;
        damaged[at..at + 2].copy_from_slice(&9u16.to_le_bytes());
        a.send(&damaged).unwrap();
        // A cut segment: the last block is missing its bytes.
        let mut cut = deep(4, 9, 13, &[b"S4", b"S5", b"S6"]);
        cut.truncate(cut.len() - 4);
        a.send(&cut).unwrap();
        a.send(&deep(7, 18, 14, &[b"S7"])).unwrap();
        let mut sink = Record::default();
        drive_until(&mut d, &mut sink, |r| {
            r.messages.len() == 5 && r.gaps.len() == 2
        });
        assert_eq!(seqs(&sink), [1, 2, 4, 5, 7]);
        assert_eq!(sink.gaps, [(3, 1), (6, 1)]);
        let st = d.stats();
        assert_eq!((st.foreign_session, st.iex.foreign_protocol), (1, 1));
        assert_eq!(st.malformed, 2);
        assert_eq!((st.iex.cut_segments, st.iex.damaged_segments), (1, 1));
        assert_eq!(st.sequencer.unrecoverable, 2);
    }

    #[test]
    fn iex_framing_refuses_re_requests_and_stream_sessions() {
        let any = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let cfg = DriverConfig {
            framing: Framing::IexTp,
            request_server: RequestServer::Addr(any),
            ..DriverConfig::new(any)
        };
        assert!(matches!(Driver::new(cfg, None), Err(NetError::Config(_))));
    }
}
