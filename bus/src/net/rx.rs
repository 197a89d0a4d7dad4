//! The receiving side: a multicast group in, gap recovery, a local stream out.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mdbus_codecs::moldudp64::{HEADER_LEN, RequestPacket, Session};
use mdbus_codecs::sequencer::{
    Deliver, Event, LateJoin, Line, Sequencer, SequencerConfig, SequencerStats,
};

use super::counters::CounterFile;
use super::fault::{FaultConfig, FaultInjector};
use super::socket::{self, MAX_DATAGRAM};
use super::wire;
use super::{Idle, Mono, NOTICE_MAX, NetError, encode_gap_notice};
use crate::schema::{Encoder, GapScope};
use crate::{Bus, ENVELOPE_MSG_TYPE, PublishError, Publisher, StreamConfig};

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

/// Configuration of a [`Receiver`].
#[derive(Clone, Debug, PartialEq)]
pub struct ReceiverConfig {
    /// The stream being sent (its name selects the session tag to follow).
    pub stream: String,
    /// The local stream to publish into.
    pub local_stream: String,
    /// Configuration of the local stream's ring.
    pub ring: StreamConfig,
    /// Line A: multicast group and port (or a unicast address to bind; port 0: any).
    pub group: SocketAddrV4,
    /// Source of line A for a source-specific join; `None`: any-source join.
    pub source: Option<Ipv4Addr>,
    /// Interface to join on and send re-requests from (`0.0.0.0`: the kernel's choice).
    pub interface: Ipv4Addr,
    /// Line B, for A/B arbitration.
    pub line_b: Option<LineConfig>,
    /// Accept line packets from this host only (others are counted and ignored); useful
    /// with any-source joins.
    pub accept_from: Option<Ipv4Addr>,
    /// Where re-requests go.
    pub request_server: RequestServer,
    /// Gap detection and recovery (the session is set per session; `late_join` says where a
    /// receiver joining a running session starts).
    pub sequencer: SequencerConfig,
    /// `SO_RCVBUF` of each line socket (0: the system default).
    pub rcvbuf: usize,
    /// Core to pin the receiving thread to.
    pub core: Option<usize>,
    /// What to do when nothing arrived.
    pub idle: Idle,
    /// Faults injected into the packets received on the lines (off by default).
    pub fault: FaultConfig,
    /// Return from [`run`](Receiver::run) at the end of the first session.
    pub exit_at_end_of_session: bool,
    /// Publish counters for `mdbus stat` under the bus root.
    pub counters: bool,
    /// How long a publish into a full lossless local ring is retried before the message is
    /// counted as lost locally.
    pub stall_timeout: Duration,
}

impl ReceiverConfig {
    /// Defaults for receiving `stream` from `group` into a local stream of the same name:
    /// any-source join on the default interface, an 8 MiB receive buffer, re-requests to the
    /// sender's host on the group's port + 1, the default sequencer (live-edge join), busy
    /// polling, no exit at the end of a session, counters on.
    pub fn new(stream: &str, group: SocketAddrV4) -> Self {
        ReceiverConfig {
            stream: stream.to_owned(),
            local_stream: stream.to_owned(),
            ring: StreamConfig::default(),
            group,
            source: None,
            interface: Ipv4Addr::UNSPECIFIED,
            line_b: None,
            accept_from: None,
            request_server: RequestServer::SourcePort(group.port().wrapping_add(1)),
            sequencer: SequencerConfig::default(),
            rcvbuf: 8 << 20,
            core: None,
            idle: Idle::BusyPoll,
            fault: FaultConfig::default(),
            exit_at_end_of_session: false,
            counters: true,
            stall_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of a [`Receiver`], summed over its sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Datagrams received (lines and recovery).
    pub packets: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Datagrams received on line B.
    pub packets_b: u64,
    /// Datagrams received from the retransmission server.
    pub packets_recovery: u64,
    /// Messages delivered in order (published locally).
    pub messages: u64,
    /// Records published on the local stream (messages and gap notices).
    pub published: u64,
    /// Gaps detected (missing ranges re-requested or given up).
    pub gaps: u64,
    /// Re-requests sent.
    pub requests: u64,
    /// Messages recovered by re-requests.
    pub recovered: u64,
    /// Messages given up (each in a gap notice on the local stream).
    pub unrecoverable: u64,
    /// Messages received more than once (the other line, a repeated answer).
    pub duplicates: u64,
    /// Messages that arrived ahead of a gap and waited for it.
    pub out_of_order: u64,
    /// Sessions joined after their start.
    pub late_joins: u64,
    /// Messages of a session before the point this receiver joined it.
    pub late_join_messages: u64,
    /// Packets of another stream or not from this transport.
    pub foreign_session: u64,
    /// Packets from a host other than the accepted one.
    pub foreign_source: u64,
    /// Packets of an older session of the stream (after a newer one was seen).
    pub stale_session: u64,
    /// Datagrams too short or damaged.
    pub malformed: u64,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Sessions followed.
    pub sessions: u64,
    /// Sessions ended cleanly (end of session seen).
    pub sessions_ended: u64,
    /// Messages still missing when a session was replaced by a newer one (reported in a gap
    /// notice).
    pub abandoned: u64,
    /// Publishes retried because the lossless local ring was full.
    pub backpressure_waits: u64,
    /// Messages that could not be published locally (the ring stayed full past the stall
    /// timeout, or the message is larger than the local ring takes).
    pub local_lost: u64,
    /// `recv` errors other than "nothing waiting".
    pub recv_errors: u64,
    /// Re-requests that could not be sent.
    pub request_errors: u64,
    /// Datagrams dropped by the fault injector.
    pub fault_dropped: u64,
}

impl ReceiverStats {
    /// Counter names, in the order of [`values`](Self::values).
    pub const NAMES: [&'static str; 27] = [
        "packets",
        "bytes",
        "packets_b",
        "packets_recovery",
        "messages",
        "published",
        "gaps",
        "requests",
        "recovered",
        "unrecoverable",
        "duplicates",
        "out_of_order",
        "late_joins",
        "late_join_messages",
        "foreign_session",
        "foreign_source",
        "stale_session",
        "malformed",
        "heartbeats",
        "sessions",
        "sessions_ended",
        "abandoned",
        "backpressure_waits",
        "local_lost",
        "recv_errors",
        "request_errors",
        "fault_dropped",
    ];

    /// The counters as one array, in the order of [`NAMES`](Self::NAMES).
    pub fn values(&self) -> [u64; 27] {
        [
            self.packets,
            self.bytes,
            self.packets_b,
            self.packets_recovery,
            self.messages,
            self.published,
            self.gaps,
            self.requests,
            self.recovered,
            self.unrecoverable,
            self.duplicates,
            self.out_of_order,
            self.late_joins,
            self.late_join_messages,
            self.foreign_session,
            self.foreign_source,
            self.stale_session,
            self.malformed,
            self.heartbeats,
            self.sessions,
            self.sessions_ended,
            self.abandoned,
            self.backpressure_waits,
            self.local_lost,
            self.recv_errors,
            self.request_errors,
            self.fault_dropped,
        ]
    }

    /// Adds the sequencer's counters of one session.
    fn add_sequencer(&mut self, s: &SequencerStats) {
        self.gaps += s.gaps_detected;
        self.recovered += s.recovered;
        self.unrecoverable += s.unrecoverable;
        self.duplicates += s.duplicates;
        self.out_of_order += s.out_of_order;
        self.malformed += s.malformed;
        self.heartbeats += s.heartbeats;
        self.foreign_session += s.foreign_session;
    }
}

/// Counters are published at most this often (ns).
const COUNTERS_EVERY_NS: u64 = 1_000_000;

/// The re-request socket is read at most this often (ns).
const RECOVERY_POLL_NS: u64 = 20_000;

/// Held fault-injector packets are released after this long without traffic.
const FAULT_FLUSH_NS: u64 = 1_000_000;

/// The session being followed.
#[derive(Debug)]
struct Current {
    session: Session,
    epoch: u64,
    seq: Sequencer,
    /// Whether a line packet of the session was seen (the late-join check is done).
    started: bool,
    /// Where re-requests for this session go.
    server: Option<SocketAddr>,
    ended: bool,
    /// Joined at the live edge (a running session): the messages before the first packet
    /// seen are reported, not requested.
    live_edge: bool,
}

/// The local side: the publisher and what it reports to.
#[derive(Debug)]
struct Local {
    bus: Bus,
    name: String,
    ring: StreamConfig,
    publisher: Option<Publisher>,
    enc: Encoder,
    stats: ReceiverStats,
    stall_ns: u64,
    clock: Mono,
    /// The previous sessions' sequencer counters, summed.
    done: ReceiverStats,
}

impl Local {
    /// Publishes one record; retries while a lossless ring is full (up to the stall
    /// timeout). Returns whether it was published.
    fn publish(
        &mut self,
        msg_type: u32,
        payload: &[u8],
        observe: &mut dyn FnMut(u32, &[u8]),
    ) -> bool {
        let Some(p) = self.publisher.as_mut() else {
            self.stats.local_lost += 1;
            return false;
        };
        let mut since = 0u64;
        loop {
            match p.publish(msg_type, payload) {
                Ok(_) => {
                    self.stats.published += 1;
                    observe(msg_type, payload);
                    return true;
                }
                Err(PublishError::BackPressured) => {
                    self.stats.backpressure_waits += 1;
                    let now = self.clock.now();
                    if since == 0 {
                        since = now;
                    } else if now - since >= self.stall_ns {
                        self.stats.local_lost += 1;
                        return false;
                    }
                    std::thread::yield_now();
                }
                Err(PublishError::TooLarge { .. }) => {
                    self.stats.local_lost += 1;
                    return false;
                }
            }
        }
    }

    /// Publishes a gap notice for messages `first .. first + count` of the session.
    fn gap(&mut self, first: u64, count: u64, observe: &mut dyn FnMut(u32, &[u8])) {
        let mut buf = [0u8; NOTICE_MAX];
        let n = encode_gap_notice(&mut self.enc, &mut buf, first, count, GapScope::Transport);
        self.publish(ENVELOPE_MSG_TYPE, &buf[..n], observe);
    }

    /// A new local stream (a new epoch) for a new session, unless the current one has not
    /// been used yet.
    fn fresh_publisher(&mut self) -> Result<(), NetError> {
        let used = self.publisher.as_ref().is_none_or(|p| p.next_seq() > 0);
        if used {
            // Close the old stream first: a live publisher holds the segment.
            self.publisher = None;
            self.publisher = Some(self.bus.publisher(&self.name, &self.ring)?);
        }
        Ok(())
    }
}

/// Hands the sequencer's output to the local stream.
struct Sink<'a> {
    local: &'a mut Local,
    observe: &'a mut dyn FnMut(u32, &[u8]),
}

impl Deliver for Sink<'_> {
    #[inline]
    fn message(&mut self, seq: u64, msg: &[u8]) {
        self.local.stats.messages += 1;
        match wire::read_message(msg) {
            Some((t, payload)) => {
                self.local.publish(t, payload, self.observe);
            }
            None => {
                // Not a bus record: reported in its place, like a lost one.
                self.local.stats.malformed += 1;
                self.local.gap(seq, 1, self.observe);
            }
        }
    }

    fn gap(&mut self, first: u64, count: u64) {
        self.local.gap(first, count, self.observe);
    }
}

/// Receives a stream from a multicast group into a local stream. See the
/// [module docs](super).
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    line_a: UdpSocket,
    line_b: Option<UdpSocket>,
    recovery: Option<UdpSocket>,
    tag: [u8; wire::TAG_LEN],
    cur: Option<Current>,
    local: Local,
    fault: Option<FaultInjector>,
    buf: Box<[u8]>,
    request: [u8; HEADER_LEN],
    last_packet: u64,
    last_counters: u64,
    last_recovery_poll: u64,
    /// The epoch token of this receiver's start: a session whose token is newer began
    /// while the receiver was listening, so it is followed from its first message.
    started: u64,
    counters: Option<CounterFile>,
    warnings: Vec<String>,
    rcvbuf: usize,
}

/// What one [`Receiver::poll_once`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxProgress {
    /// Datagrams received.
    pub packets: usize,
    /// The session ended (end of session seen, everything before it delivered or reported).
    pub ended: bool,
}

impl Receiver {
    /// Binds and joins the sockets and creates the local stream; nothing is received until
    /// it is polled.
    pub fn new(bus: &Bus, cfg: ReceiverConfig) -> Result<Receiver, NetError> {
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
        // Checks the sequencer configuration now rather than at the first packet.
        Sequencer::new(cfg.sequencer).map_err(|e| NetError::Config(format!("sequencer: {e}")))?;
        let publisher = bus.publisher(&cfg.local_stream, &cfg.ring)?;
        let counters = if cfg.counters {
            Some(CounterFile::create(
                bus.root(),
                &cfg.local_stream,
                "recv",
                &format!("group {} stream {}", cfg.group, cfg.stream),
                &ReceiverStats::NAMES,
            )?)
        } else {
            None
        };
        let fault = cfg
            .fault
            .is_active()
            .then(|| FaultInjector::new(cfg.fault.clone(), MAX_DATAGRAM));
        Ok(Receiver {
            line_a: a.socket,
            rcvbuf: a.rcvbuf,
            line_b,
            recovery,
            tag: wire::stream_tag(&cfg.stream),
            cur: None,
            local: Local {
                bus: bus.clone(),
                name: cfg.local_stream.clone(),
                ring: cfg.ring.clone(),
                publisher: Some(publisher),
                enc: Encoder::new(),
                stats: ReceiverStats::default(),
                stall_ns: super::nanos(cfg.stall_timeout),
                clock: Mono::new(),
                done: ReceiverStats::default(),
            },
            fault,
            buf: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            request: [0; HEADER_LEN],
            last_packet: 0,
            last_counters: 0,
            last_recovery_poll: 0,
            started: wire::epoch_token_now(),
            counters,
            warnings,
            cfg,
        })
    }

    /// Local address of line A's socket (where a unicast sender sends).
    pub fn line_a_addr(&self) -> io::Result<SocketAddr> {
        self.line_a.local_addr()
    }

    /// Setup warnings (for example a clamped receive buffer).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Usable `SO_RCVBUF` of line A.
    pub fn rcvbuf(&self) -> usize {
        self.rcvbuf
    }

    /// The session being followed, once one was seen.
    pub fn session(&self) -> Option<Session> {
        self.cur.as_ref().map(|c| c.session)
    }

    /// The counters so far, summed over sessions.
    pub fn stats(&self) -> ReceiverStats {
        let mut s = self.local.stats;
        let d = &self.local.done;
        s.gaps += d.gaps;
        s.recovered += d.recovered;
        s.unrecoverable += d.unrecoverable;
        s.duplicates += d.duplicates;
        s.out_of_order += d.out_of_order;
        s.malformed += d.malformed;
        s.heartbeats += d.heartbeats;
        s.foreign_session += d.foreign_session;
        if let Some(c) = &self.cur {
            s.add_sequencer(&c.seq.stats());
        }
        if let Some(f) = &self.fault {
            s.fault_dropped = f.stats().dropped;
        }
        s
    }

    /// One turn: receive what is waiting on each socket, handle timers and re-requests,
    /// publish in order. `observe` sees every record published on the local stream.
    pub fn poll_once(
        &mut self,
        observe: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<RxProgress, NetError> {
        let mut progress = RxProgress::default();
        // The answer socket is read at most every RECOVERY_POLL_NS: an empty `recv` costs
        // about as much as the rest of the turn, and answers can wait a few microseconds
        // (the NAK delay before them is a millisecond).
        let turn = self.local.clock.now();
        let poll_recovery = turn.saturating_sub(self.last_recovery_poll) >= RECOVERY_POLL_NS;
        if poll_recovery {
            self.last_recovery_poll = turn;
        }
        for line in [Line::A, Line::B, Line::Recovery] {
            let sock = match line {
                Line::A => Some(&self.line_a),
                Line::B => self.line_b.as_ref(),
                Line::Recovery if poll_recovery => self.recovery.as_ref(),
                Line::Recovery => None,
            };
            let Some(sock) = sock else { continue };
            match sock.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    progress.packets += 1;
                    let now = self.local.clock.now();
                    self.last_packet = now;
                    self.local.stats.packets += 1;
                    self.local.stats.bytes += n as u64;
                    let from = match from {
                        SocketAddr::V4(a) => a,
                        SocketAddr::V6(_) => {
                            self.local.stats.foreign_source += 1;
                            continue;
                        }
                    };
                    match line {
                        Line::B => self.local.stats.packets_b += 1,
                        Line::Recovery => self.local.stats.packets_recovery += 1,
                        Line::A => {}
                    }
                    let (fault, buf, mut ctx) = self.packet_parts(&mut *observe);
                    match fault {
                        Some(f) if line != Line::Recovery => {
                            let mut result = Ok(());
                            f.apply(&buf[..n], |p: &[u8]| {
                                if result.is_ok() {
                                    result = ctx.on_packet(now, line, from, p);
                                }
                            });
                            result?;
                        }
                        _ => ctx.on_packet(now, line, from, &buf[..n])?,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP "port unreachable" from the server, reported on a later call.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    self.local.stats.request_errors += 1
                }
                Err(_) => self.local.stats.recv_errors += 1,
            }
        }
        let now = self.local.clock.now();
        self.timers(now, observe);
        progress.ended = self.events(observe);
        if progress.packets == 0 {
            if let Some(f) = &mut self.fault
                && f.held() > 0
                && now.saturating_sub(self.last_packet) >= FAULT_FLUSH_NS
            {
                let (fault, _, mut ctx) = self.packet_parts(&mut *observe);
                let mut result = Ok(());
                if let Some(f) = fault {
                    f.flush(|p: &[u8]| {
                        if result.is_ok() {
                            result = ctx.on_packet(
                                now,
                                Line::A,
                                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                                p,
                            );
                        }
                    });
                }
                result?;
            }
            if let Some(p) = &self.local.publisher {
                p.heartbeat();
            }
            self.publish_counters(now, false);
        }
        Ok(progress)
    }

    /// The fault injector, the receive buffer and the context a packet is handled in:
    /// disjoint borrows of the receiver, so a packet read into `buf` (or released by the
    /// injector) can be handled while they are held.
    fn packet_parts<'a>(
        &'a mut self,
        observe: &'a mut dyn FnMut(u32, &[u8]),
    ) -> (&'a mut Option<FaultInjector>, &'a [u8], PacketCtx<'a>) {
        let Receiver {
            fault,
            buf,
            cur,
            local,
            cfg,
            tag,
            started,
            ..
        } = self;
        let ctx = PacketCtx {
            cfg,
            tag: *tag,
            started: *started,
            cur,
            local,
            observe,
        };
        (fault, buf, ctx)
    }

    /// Sequencer timers and due re-requests.
    fn timers(&mut self, now: u64, observe: &mut dyn FnMut(u32, &[u8])) {
        let Some(cur) = self.cur.as_mut() else {
            return;
        };
        if cur.seq.next_deadline().is_none_or(|d| d > now) {
            return;
        }
        cur.seq.handle_timeout(
            now,
            Sink {
                local: &mut self.local,
                observe,
            },
        );
        while let Some(r) = cur.seq.poll_request(now) {
            let sent = match (&self.recovery, self.cfg.request_server, cur.server) {
                (Some(s), RequestServer::Addr(_), _) => {
                    send_request(s, &r, &mut self.request, None)
                }
                (Some(s), RequestServer::SourcePort(_), Some(to)) => {
                    send_request(s, &r, &mut self.request, Some(to))
                }
                _ => false,
            };
            if sent {
                self.local.stats.requests += 1;
            } else {
                self.local.stats.request_errors += 1;
            }
        }
    }

    /// Handles the sequencer's events; returns whether the session ended.
    fn events(&mut self, observe: &mut dyn FnMut(u32, &[u8])) -> bool {
        let _ = observe;
        let Some(cur) = self.cur.as_mut() else {
            return false;
        };
        let mut ended = false;
        while let Some(e) = cur.seq.poll_event() {
            if let Event::EndOfSession { .. } = e
                && !cur.ended
            {
                cur.ended = true;
                ended = true;
                self.local.stats.sessions_ended += 1;
                // The local stream ends as the sender's did: subscribers see it closed.
                self.local.publisher = None;
            }
        }
        ended
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

    /// Runs the loop on this thread (pinned first, if configured) until `stop` is set or,
    /// with [`exit_at_end_of_session`](ReceiverConfig::exit_at_end_of_session), the
    /// session ended. `observe` sees every record published on the local stream.
    pub fn run_with(
        mut self,
        stop: &AtomicBool,
        observe: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<ReceiverStats, NetError> {
        if let Some(core) = self.cfg.core {
            mdbus_tuning::pin_current_thread(core)?;
        }
        let idle = self.cfg.idle;
        while !stop.load(Ordering::Relaxed) {
            let p = self.poll_once(observe)?;
            if p.ended && self.cfg.exit_at_end_of_session {
                break;
            }
            if p.packets == 0 {
                idle.wait();
            }
        }
        Ok(self.finish())
    }

    /// [`run_with`](Self::run_with) without an observer.
    pub fn run(self, stop: &AtomicBool) -> Result<ReceiverStats, NetError> {
        self.run_with(stop, &mut |_, _| {})
    }

    /// Final counters; marks the counters file finished. The local stream stays open until
    /// the receiver is dropped.
    pub fn finish(&mut self) -> ReceiverStats {
        let s = self.stats();
        if let Some(c) = &self.counters {
            c.publish(&s.values());
            c.finish();
        }
        s
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

/// What handling one datagram needs, borrowed from the receiver.
struct PacketCtx<'a> {
    cfg: &'a ReceiverConfig,
    tag: [u8; wire::TAG_LEN],
    started: u64,
    cur: &'a mut Option<Current>,
    local: &'a mut Local,
    observe: &'a mut dyn FnMut(u32, &[u8]),
}

impl PacketCtx<'_> {
    /// Session checks, then the sequencer.
    fn on_packet(
        &mut self,
        now: u64,
        line: Line,
        from: SocketAddrV4,
        bytes: &[u8],
    ) -> Result<(), NetError> {
        if bytes.len() < HEADER_LEN {
            self.local.stats.malformed += 1;
            return Ok(());
        }
        if line != Line::Recovery
            && let Some(accept) = self.cfg.accept_from
            && *from.ip() != accept
            && !from.ip().is_unspecified()
        {
            self.local.stats.foreign_source += 1;
            return Ok(());
        }
        let mut name = [0u8; 10];
        name.copy_from_slice(&bytes[..10]);
        let session = Session(name);
        let epoch = match wire::parse_session(session) {
            Some((tag, epoch)) if tag == self.tag => epoch,
            _ => {
                self.local.stats.foreign_session += 1;
                return Ok(());
            }
        };
        match self.cur.as_ref().map(|c| c.epoch) {
            Some(e) if epoch < e => {
                self.local.stats.stale_session += 1;
                return Ok(());
            }
            Some(e) if epoch == e => {}
            _ if line == Line::Recovery => {
                // An answer for a session this receiver does not follow (yet).
                self.local.stats.stale_session += 1;
                return Ok(());
            }
            _ => self.start_session(session, epoch, from)?,
        }
        let Some(cur) = self.cur.as_mut() else {
            return Ok(());
        };
        if !cur.started && line != Line::Recovery {
            cur.started = true;
            if cur.server.is_none()
                && let RequestServer::SourcePort(port) = self.cfg.request_server
            {
                cur.server = Some(SocketAddr::V4(SocketAddrV4::new(*from.ip(), port)));
            }
            let seq = u64::from_be_bytes(bytes[10..18].try_into().unwrap_or_default());
            if cur.live_edge && seq > 1 {
                // Joined a running session: say so in the stream, at its start.
                self.local.stats.late_joins += 1;
                self.local.stats.late_join_messages += seq - 1;
                self.local.gap(1, seq - 1, self.observe);
            }
        }
        if line == Line::Recovery && cur.server.is_some_and(|s| s != SocketAddr::V4(from)) {
            self.local.stats.foreign_source += 1;
            return Ok(());
        }
        cur.seq.handle_packet(
            now,
            line,
            bytes,
            Sink {
                local: self.local,
                observe: self.observe,
            },
        );
        Ok(())
    }

    /// Follows a new (newer) session: reports what the old one still missed, starts a new
    /// local stream, a new sequencer.
    fn start_session(
        &mut self,
        session: Session,
        epoch: u64,
        from: SocketAddrV4,
    ) -> Result<(), NetError> {
        if let Some(old) = self.cur.take() {
            let st = old.seq.stats();
            self.local.done.add_sequencer(&st);
            if !old.ended {
                let next = old.seq.next_seq();
                let highest = old.seq.highest_seen();
                if highest > next {
                    let count = highest - next;
                    self.local.stats.abandoned += count;
                    self.local.gap(next, count, self.observe);
                }
            }
        }
        // A session that began while this receiver was listening (a newer session of the
        // stream, or one whose epoch, its start time, is newer than the receiver's) is
        // followed from its first message: a lost first datagram is a gap to recover, not a
        // late join. Only a session already running at start is joined at the live edge.
        let began_here = self.local.stats.sessions > 0 || epoch > self.started;
        let live_edge = self.cfg.sequencer.late_join == LateJoin::LiveEdge && !began_here;
        let late_join = if live_edge {
            LateJoin::LiveEdge
        } else if let LateJoin::FromSequence(n) = self.cfg.sequencer.late_join {
            LateJoin::FromSequence(n)
        } else {
            LateJoin::FromSequence(1)
        };
        self.local.fresh_publisher()?;
        let seq = Sequencer::new(SequencerConfig {
            session: Some(session),
            late_join,
            max_outstanding_requests: if self.cfg.request_server == RequestServer::None {
                0
            } else {
                self.cfg.sequencer.max_outstanding_requests
            },
            ..self.cfg.sequencer
        })
        .map_err(|e| NetError::Config(format!("sequencer: {e}")))?;
        let server = match self.cfg.request_server {
            RequestServer::Addr(a) => Some(SocketAddr::V4(a)),
            RequestServer::SourcePort(p) if !from.ip().is_unspecified() => {
                Some(SocketAddr::V4(SocketAddrV4::new(*from.ip(), p)))
            }
            _ => None,
        };
        self.local.stats.sessions += 1;
        *self.cur = Some(Current {
            session,
            epoch,
            seq,
            started: false,
            server,
            ended: false,
            live_edge,
        });
        Ok(())
    }
}
