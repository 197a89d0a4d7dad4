//! The receiving side: a multicast group in, gap recovery, a local stream out.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mdbus_codecs::moldudp64::{HEADER_LEN, RequestPacket, Session};
use mdbus_codecs::sequencer::{
    Deliver, Event, LateJoin, Line, Sequencer, SequencerConfig, SequencerStats,
};

use super::fault::{FaultConfig, FaultInjector};
use super::socket::{self, MAX_DATAGRAM};
use super::wire;
use super::{Idle, Mono, NOTICE_MAX, NetError, encode_gap_notice};
use mdbus_bus::schema::{Encoder, GapScope};
use mdbus_bus::{Bus, ENVELOPE_MSG_TYPE, PublishError, Publisher, StreamConfig};
use mdbus_shm::counters::CounterFile;

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
    /// How long a full lossless local ring is waited for, once per stall: when it is still
    /// full after this, what arrives is dropped at once (no more waiting) until it has room
    /// again, and the dropped messages are reported by one gap notice published before the
    /// next record. Every wait blocks the receive loop, so keep it short.
    pub stall_timeout: Duration,
    /// How long the end of a session waits for room in a full lossless local ring for the
    /// gap notice of the messages dropped there, before the local stream is closed without
    /// it (the loop keeps running meanwhile).
    pub end_wait: Duration,
    /// A packet of another session of the stream is followed only when the current session
    /// ended (and the other one is newer) or has been silent this long (then older ones too:
    /// a forged session followed first gives way to the real one); until then such packets
    /// are counted (`other_session`, `stale_session`) and ignored, so a forged packet cannot
    /// take the receiver away from a live session. Keep it several heartbeat intervals long.
    pub session_timeout: Duration,
    /// Follow a newer session of the stream as soon as one of its packets arrives (a sender
    /// restarted on purpose), even while the current one is live.
    pub follow_newer: bool,
}

impl ReceiverConfig {
    /// Defaults for receiving `stream` from `group` into a local stream of the same name:
    /// any-source join on the default interface, an 8 MiB receive buffer, re-requests to the
    /// sender's host on the group's port + 1, the default sequencer (live-edge join), busy
    /// polling, no exit at the end of a session, counters on; a full lossless local ring is
    /// waited for 100 ms per stall (and 10 s for the last gap notice at the end); another
    /// session is followed after 2 s of silence of the current one.
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
            stall_timeout: Duration::from_millis(100),
            end_wait: Duration::from_secs(10),
            session_timeout: Duration::from_secs(2),
            follow_newer: false,
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
    /// Messages that could not be published locally (the lossless ring stayed full past the
    /// stall timeout, or the message is larger than the local ring takes); each run of them
    /// is reported by a gap notice on the local stream.
    pub local_lost: u64,
    /// `recv` errors other than "nothing waiting".
    pub recv_errors: u64,
    /// Re-requests that could not be sent.
    pub request_errors: u64,
    /// Datagrams dropped by the fault injector.
    pub fault_dropped: u64,
    /// Packets of another session of the stream ignored because the followed one is live
    /// (see [`ReceiverConfig::session_timeout`]).
    pub other_session: u64,
    /// Gap notices published for messages dropped locally (`local_lost`).
    pub local_gap_notices: u64,
    /// Gap notices for messages dropped locally that could not be published before the local
    /// stream closed (the ring stayed full): their messages are only in `local_lost`.
    pub notices_unpublished: u64,
    /// Packets reaching implausibly far (more than the sequencer's `max_gap`) beyond the
    /// highest sequence number known, held off until corroborated.
    pub implausible_jumps: u64,
    /// Such jumps that later packets corroborated (then acted on like any gap).
    pub jumps_corroborated: u64,
    /// End-of-session packets below what was already known, ignored.
    pub forged_end_of_session: u64,
    /// First packets of a live-edge join replaced by a packet far from them before anything
    /// was delivered.
    pub anchors_replaced: u64,
    /// Packets with sequence number 0 (no MoldUDP64 packet carries it), ignored.
    pub zero_sequence: u64,
}

impl ReceiverStats {
    /// Counter names, in the order of [`values`](Self::values).
    pub const NAMES: [&'static str; 35] = [
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
        "other_session",
        "local_gap_notices",
        "notices_unpublished",
        "implausible_jumps",
        "jumps_corroborated",
        "forged_end_of_session",
        "anchors_replaced",
        "zero_sequence",
    ];

    /// The counters as one array, in the order of [`NAMES`](Self::NAMES).
    pub fn values(&self) -> [u64; 35] {
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
            self.other_session,
            self.local_gap_notices,
            self.notices_unpublished,
            self.implausible_jumps,
            self.jumps_corroborated,
            self.forged_end_of_session,
            self.anchors_replaced,
            self.zero_sequence,
        ]
    }

    /// Messages lost for good: given up by the transport, or dropped locally.
    pub fn lost(&self) -> u64 {
        self.unrecoverable.saturating_add(self.local_lost)
    }

    /// Adds the sequencer's counters of one session.
    fn add_sequencer(&mut self, s: &SequencerStats) {
        self.add_sequencer_part(&ReceiverStats::sequencer_part(s));
    }

    /// The sequencer's counters of one session under the receiver's names; the others zero.
    fn sequencer_part(s: &SequencerStats) -> ReceiverStats {
        ReceiverStats {
            gaps: s.gaps_detected,
            recovered: s.recovered,
            unrecoverable: s.unrecoverable,
            duplicates: s.duplicates,
            out_of_order: s.out_of_order,
            malformed: s.malformed,
            heartbeats: s.heartbeats,
            foreign_session: s.foreign_session,
            implausible_jumps: s.implausible_jumps,
            jumps_corroborated: s.jumps_corroborated,
            forged_end_of_session: s.forged_end_of_session,
            anchors_replaced: s.anchors_replaced,
            zero_sequence: s.zero_sequence,
            ..ReceiverStats::default()
        }
    }

    /// Adds the sequencer's counters of `d` (of earlier sessions, as summed by
    /// [`add_sequencer`](Self::add_sequencer)).
    fn add_sequencer_part(&mut self, d: &ReceiverStats) {
        self.gaps += d.gaps;
        self.recovered += d.recovered;
        self.unrecoverable += d.unrecoverable;
        self.duplicates += d.duplicates;
        self.out_of_order += d.out_of_order;
        self.malformed += d.malformed;
        self.heartbeats += d.heartbeats;
        self.foreign_session += d.foreign_session;
        self.implausible_jumps += d.implausible_jumps;
        self.jumps_corroborated += d.jumps_corroborated;
        self.forged_end_of_session += d.forged_end_of_session;
        self.anchors_replaced += d.anchors_replaced;
        self.zero_sequence += d.zero_sequence;
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
    /// Joined at the live edge (a running session): the messages before the first one
    /// delivered are reported, not requested.
    live_edge: bool,
    /// When the last line packet of the session arrived (mono ns).
    last_seen: u64,
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
    /// Transport sequence numbers `(first, count)` dropped locally whose gap notice is not
    /// published yet: it goes out before any other record.
    pending: Option<(u64, u64)>,
    /// The lossless ring refused a record and its wait was spent: records are dropped at
    /// once until one is taken again.
    stalled: bool,
    /// Whether the next record published is the session's first delivery (a live-edge join
    /// reports what came before it).
    first_delivery: bool,
    /// The session ended at this time (mono ns); the local stream closes once the pending
    /// gap notice is out.
    closing_since: Option<u64>,
}

impl Local {
    /// Publishes the record for transport sequence numbers `seq .. seq + span` (a message,
    /// or a gap notice of `span`). A record the local ring does not take is dropped: its
    /// numbers join the pending local gap notice, which is published first, before any later
    /// record. Returns whether it was published.
    fn publish(
        &mut self,
        seq: u64,
        span: u64,
        msg_type: u32,
        payload: &[u8],
        observe: &mut dyn FnMut(u32, &[u8]),
    ) -> bool {
        if self.pending.is_some() && !self.flush_pending(observe) {
            self.drop_range(seq, span);
            return false;
        }
        if self.put(msg_type, payload, observe) {
            return true;
        }
        self.drop_range(seq, span);
        false
    }

    /// Publishes one record: retried while a lossless ring is full, for up to the stall
    /// timeout once per stall, then (stalled) one try only until a record is taken again.
    fn put(&mut self, msg_type: u32, payload: &[u8], observe: &mut dyn FnMut(u32, &[u8])) -> bool {
        let Some(p) = self.publisher.as_mut() else {
            return false;
        };
        let mut since = 0u64;
        loop {
            match p.publish(msg_type, payload) {
                Ok(_) => {
                    self.stalled = false;
                    self.stats.published += 1;
                    observe(msg_type, payload);
                    return true;
                }
                Err(PublishError::BackPressured) => {
                    self.stats.backpressure_waits += 1;
                    if self.stalled {
                        return false;
                    }
                    let now = self.clock.now();
                    if since == 0 {
                        since = now;
                    } else if now.saturating_sub(since) >= self.stall_ns {
                        self.stalled = true;
                        return false;
                    }
                    std::thread::yield_now();
                }
                Err(PublishError::TooLarge { .. }) => return false,
            }
        }
    }

    /// Adds `seq .. seq + span` to the pending local gap notice.
    #[cold]
    fn drop_range(&mut self, seq: u64, span: u64) {
        let end = seq.saturating_add(span);
        self.pending = Some(match self.pending {
            None => (seq, span),
            // Records are published in sequence order, so the ranges follow each other.
            Some((first, count)) => {
                let first = first.min(seq);
                let end = end.max(first.saturating_add(count));
                (first, end - first)
            }
        });
    }

    /// Publishes the pending local gap notice if the ring takes it; whether none is left.
    #[cold]
    fn flush_pending(&mut self, observe: &mut dyn FnMut(u32, &[u8])) -> bool {
        let Some((first, count)) = self.pending else {
            return true;
        };
        let mut buf = [0u8; NOTICE_MAX];
        let n = encode_gap_notice(&mut self.enc, &mut buf, first, count, GapScope::Transport);
        if !self.put(ENVELOPE_MSG_TYPE, &buf[..n], observe) {
            return false;
        }
        self.pending = None;
        self.stats.local_gap_notices += 1;
        true
    }

    /// Gives up the pending local gap notice (the local stream is being closed).
    fn abandon_pending(&mut self) {
        if self.pending.take().is_some() {
            self.stats.notices_unpublished += 1;
        }
    }

    /// Publishes message `seq`; counts it as lost locally if it was dropped.
    #[inline]
    fn message(
        &mut self,
        seq: u64,
        msg_type: u32,
        payload: &[u8],
        observe: &mut dyn FnMut(u32, &[u8]),
    ) {
        if !self.publish(seq, 1, msg_type, payload, observe) {
            self.stats.local_lost += 1;
        }
    }

    /// Publishes a gap notice for messages `first .. first + count` of the session.
    fn gap(&mut self, first: u64, count: u64, observe: &mut dyn FnMut(u32, &[u8])) {
        let mut buf = [0u8; NOTICE_MAX];
        let n = encode_gap_notice(&mut self.enc, &mut buf, first, count, GapScope::Transport);
        self.publish(first, count, ENVELOPE_MSG_TYPE, &buf[..n], observe);
    }

    /// A new local stream (a new epoch) for a new session, unless the current one has not
    /// been used yet. A local gap notice still pending is tried once more, then given up.
    fn fresh_publisher(&mut self, observe: &mut dyn FnMut(u32, &[u8])) -> Result<(), NetError> {
        if !self.flush_pending(observe) {
            self.abandon_pending();
        }
        self.stalled = false;
        self.closing_since = None;
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
    /// Whether the session was joined at the live edge.
    live_edge: bool,
}

impl Sink<'_> {
    /// Before the session's first delivery, at `seq`: a live-edge join says in the stream
    /// what came before it. The sequencer decides where it starts (a forged far-ahead first
    /// packet is its to judge), so the notice follows what it delivers, not the first packet.
    #[cold]
    fn first_delivery(&mut self, seq: u64) {
        self.local.first_delivery = false;
        if self.live_edge && seq > 1 {
            self.local.stats.late_joins += 1;
            self.local.stats.late_join_messages += seq - 1;
            self.local.gap(1, seq - 1, self.observe);
        }
    }
}

impl Deliver for Sink<'_> {
    #[inline]
    fn message(&mut self, seq: u64, msg: &[u8]) {
        if self.local.first_delivery {
            self.first_delivery(seq);
        }
        self.local.stats.messages += 1;
        match wire::read_message(msg) {
            Some((t, payload)) => self.local.message(seq, t, payload, self.observe),
            None => {
                // Not a bus record: reported in its place, like a lost one.
                self.local.stats.malformed += 1;
                self.local.gap(seq, 1, self.observe);
            }
        }
    }

    fn gap(&mut self, first: u64, count: u64) {
        if self.local.first_delivery {
            self.first_delivery(first);
        }
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
                pending: None,
                stalled: false,
                first_delivery: true,
                closing_since: None,
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
        s.add_sequencer_part(&self.local.done);
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
        progress.ended = self.events(now, observe);
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
            if self.local.pending.is_some() {
                // Room again (a subscriber caught up): the notice goes out now, not only
                // in front of the next message.
                self.local.flush_pending(observe);
            }
            if let Some(p) = &self.local.publisher {
                p.heartbeat();
            }
        }
        // Also under a stream of packets: the counters never freeze while the loop runs.
        self.publish_counters(now, false);
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
            session_timeout_ns: super::nanos(cfg.session_timeout),
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
                live_edge: cur.live_edge,
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

    /// Handles the sequencer's events; returns whether the session ended (its local stream
    /// closed).
    fn events(&mut self, now: u64, observe: &mut dyn FnMut(u32, &[u8])) -> bool {
        let Some(cur) = self.cur.as_mut() else {
            return false;
        };
        while let Some(e) = cur.seq.poll_event() {
            if let Event::EndOfSession { next_seq } = e
                && !cur.ended
            {
                cur.ended = true;
                self.local.stats.sessions_ended += 1;
                if self.local.first_delivery {
                    // Nothing delivered: a live-edge join still says what it did not get.
                    Sink {
                        local: &mut self.local,
                        observe,
                        live_edge: cur.live_edge,
                    }
                    .first_delivery(next_seq);
                }
                self.local.closing_since = Some(now);
            }
        }
        self.close_if_ready(now, observe)
    }

    /// After the end of the session: closes the local stream (subscribers see it closed, as
    /// the sender's was) once a pending local gap notice is published, or the end wait is
    /// over. Returns whether it closed it now.
    fn close_if_ready(&mut self, now: u64, observe: &mut dyn FnMut(u32, &[u8])) -> bool {
        let Some(since) = self.local.closing_since else {
            return false;
        };
        if !self.local.flush_pending(observe) {
            if now.saturating_sub(since) < super::nanos(self.cfg.end_wait) {
                return false;
            }
            self.local.abandon_pending();
        }
        self.local.closing_since = None;
        self.local.publisher = None;
        true
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
        // A last try for a pending local gap notice (one try: the ring may stay full).
        self.local.stalled = true;
        self.local.flush_pending(observe);
        Ok(self.finish())
    }

    /// [`run_with`](Self::run_with) without an observer.
    pub fn run(self, stop: &AtomicBool) -> Result<ReceiverStats, NetError> {
        self.run_with(stop, &mut |_, _| {})
    }

    /// Final counters; marks the counters file finished. The local stream stays open until
    /// the receiver is dropped.
    pub fn finish(&mut self) -> ReceiverStats {
        self.local.abandon_pending();
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
    session_timeout_ns: u64,
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
        match self.cur.as_ref().map(|c| (c.epoch, c.ended, c.last_seen)) {
            Some((e, ..)) if epoch == e => {}
            _ if line == Line::Recovery => {
                // An answer for a session this receiver does not follow.
                self.local.stats.stale_session += 1;
                return Ok(());
            }
            None => self.start_session(now, session, epoch, from)?,
            Some((e, ended, last_seen)) => {
                // Another session of the stream. Followed only when the current one ended
                // (and this one is newer), or went silent, or on the operator's say-so for a
                // newer one: a forged packet must not take the receiver off a live session.
                let newer = epoch > e;
                let silent = now.saturating_sub(last_seen) >= self.session_timeout_ns;
                if (newer && (ended || self.cfg.follow_newer)) || (silent && !ended) {
                    self.start_session(now, session, epoch, from)?;
                } else {
                    if newer {
                        self.local.stats.other_session += 1;
                    } else {
                        self.local.stats.stale_session += 1;
                    }
                    return Ok(());
                }
            }
        }
        let Some(cur) = self.cur.as_mut() else {
            return Ok(());
        };
        if line != Line::Recovery {
            cur.last_seen = now;
        }
        if !cur.started && line != Line::Recovery {
            cur.started = true;
            if cur.server.is_none()
                && let RequestServer::SourcePort(port) = self.cfg.request_server
            {
                cur.server = Some(SocketAddr::V4(SocketAddrV4::new(*from.ip(), port)));
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
                live_edge: cur.live_edge,
            },
        );
        Ok(())
    }

    /// Follows a new (newer) session: reports what the old one still missed, starts a new
    /// local stream, a new sequencer.
    fn start_session(
        &mut self,
        now: u64,
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
        self.local.fresh_publisher(self.observe)?;
        self.local.first_delivery = true;
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
            last_seen: now,
        });
        Ok(())
    }
}
