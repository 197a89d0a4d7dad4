//! The receiving side: a multicast group in, gap recovery, a local stream out: the
//! [`Driver`] with a sink that republishes the envelopes into a local ring.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use mdbus_codecs::moldudp64::Session;
use mdbus_codecs::sequencer::SequencerConfig;

use super::driver::{Driver, DriverConfig, DriverStats, FeedSink, Sessions};
use super::fault::FaultConfig;
use super::wire;
use super::{Idle, Mono, NOTICE_MAX, NetError, encode_gap_notice};
use crate::venue::Framing;
use mdbus_bus::schema::{Encoder, GapScope};
use mdbus_bus::{Bus, ENVELOPE_MSG_TYPE, PublishError, Publisher, StreamConfig};
use mdbus_shm::counters::CounterFile;

use super::driver::{LineConfig, RequestServer, RxProgress};

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

    /// The counters of a receiver: the driver's and the local side's.
    fn compose(d: &DriverStats, local: &ReceiverStats) -> ReceiverStats {
        let s = &d.sequencer;
        ReceiverStats {
            packets: d.packets,
            bytes: d.bytes,
            packets_b: d.packets_b,
            packets_recovery: d.packets_recovery,
            gaps: s.gaps_detected,
            requests: d.requests,
            recovered: s.recovered,
            unrecoverable: s.unrecoverable,
            duplicates: s.duplicates,
            out_of_order: s.out_of_order,
            foreign_session: d.foreign_session.saturating_add(s.foreign_session),
            foreign_source: d.foreign_source,
            stale_session: d.stale_session,
            malformed: d
                .malformed
                .saturating_add(s.malformed)
                .saturating_add(local.malformed),
            heartbeats: s.heartbeats,
            sessions: d.sessions,
            sessions_ended: d.sessions_ended,
            abandoned: d.abandoned,
            recv_errors: d.recv_errors,
            request_errors: d.request_errors,
            fault_dropped: d.fault_dropped,
            other_session: d.other_session,
            implausible_jumps: s.implausible_jumps,
            jumps_corroborated: s.jumps_corroborated,
            forged_end_of_session: s.forged_end_of_session,
            anchors_replaced: s.anchors_replaced,
            zero_sequence: s.zero_sequence,
            // The local side's own.
            messages: local.messages,
            published: local.published,
            late_joins: local.late_joins,
            late_join_messages: local.late_join_messages,
            backpressure_waits: local.backpressure_waits,
            local_lost: local.local_lost,
            local_gap_notices: local.local_gap_notices,
            notices_unpublished: local.notices_unpublished,
        }
    }
}

/// The local side: the publisher and what it reports to.
#[derive(Debug)]
struct Local {
    bus: Bus,
    name: String,
    ring: StreamConfig,
    publisher: Option<Publisher>,
    enc: Encoder,
    /// The local side's counters (the driver keeps the others).
    stats: ReceiverStats,
    stall_ns: u64,
    clock: Mono,
    /// Transport sequence numbers `(first, count)` dropped locally whose gap notice is not
    /// published yet: it goes out before any other record.
    pending: Option<(u64, u64)>,
    /// The lossless ring refused a record and its wait was spent: records are dropped at
    /// once until one is taken again.
    stalled: bool,
    /// Whether the session was joined at the live edge.
    live_edge: bool,
    /// Whether the next record published is the session's first delivery (a live-edge join
    /// reports what came before it).
    first_delivery: bool,
    /// The session ended at this time (mono ns); the local stream closes once the pending
    /// gap notice is out.
    closing_since: Option<u64>,
    end_wait_ns: u64,
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

/// The receiver's sink: the local side and the observer of what it publishes.
struct RecvSink<'a> {
    local: &'a mut Local,
    observe: &'a mut dyn FnMut(u32, &[u8]),
}

impl RecvSink<'_> {
    /// Before the session's first delivery, at `seq`: a live-edge join says in the stream
    /// what came before it. The sequencer decides where it starts (a forged far-ahead first
    /// packet is its to judge), so the notice follows what it delivers, not the first packet.
    #[cold]
    fn first_delivery(&mut self, seq: u64) {
        self.local.first_delivery = false;
        if self.local.live_edge && seq > 1 {
            self.local.stats.late_joins += 1;
            self.local.stats.late_join_messages += seq - 1;
            self.local.gap(1, seq - 1, self.observe);
        }
    }
}

impl FeedSink for RecvSink<'_> {
    // Envelopes carry their own timestamps; gap notices read the clock when made.
    const RECV_TS: bool = false;

    #[inline]
    fn message(&mut self, seq: u64, msg: &[u8], _: u64) {
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

    fn gap(&mut self, first: u64, count: u64, _: u64) {
        if self.local.first_delivery {
            self.first_delivery(first);
        }
        self.local.gap(first, count, self.observe);
    }

    fn abandoned(&mut self, first: u64, count: u64, _: u64) {
        self.local.gap(first, count, self.observe);
    }

    fn session_started(&mut self, live_edge: bool) -> Result<(), NetError> {
        self.local.fresh_publisher(self.observe)?;
        self.local.first_delivery = true;
        self.local.live_edge = live_edge;
        Ok(())
    }

    fn end_of_session(&mut self, next_seq: u64, now: u64, _: u64) {
        if self.local.first_delivery {
            // Nothing delivered: a live-edge join still says what it did not get.
            self.first_delivery(next_seq);
        }
        self.local.closing_since = Some(now);
    }

    /// Closes the local stream (subscribers see it closed, as the sender's was) once a
    /// pending local gap notice is published, or the end wait is over.
    fn close(&mut self, now: u64) -> bool {
        let Some(since) = self.local.closing_since else {
            return true;
        };
        if !self.local.flush_pending(self.observe) {
            if now.saturating_sub(since) < self.local.end_wait_ns {
                return false;
            }
            self.local.abandon_pending();
        }
        self.local.closing_since = None;
        self.local.publisher = None;
        true
    }

    fn idle(&mut self, _: u64) {
        if self.local.pending.is_some() {
            // Room again (a subscriber caught up): the notice goes out now, not only in
            // front of the next message.
            self.local.flush_pending(self.observe);
        }
        if let Some(p) = &mut self.local.publisher {
            p.hand_off();
            p.heartbeat();
        }
    }

    fn finish(&mut self, _: u64) {
        // A last try for a pending local gap notice (one try: the ring may stay full).
        self.local.stalled = true;
        self.local.flush_pending(self.observe);
    }

    fn counters(&self, driver: &DriverStats, out: &mut [u64]) -> usize {
        let values = ReceiverStats::compose(driver, &self.local.stats).values();
        let n = values.len().min(out.len());
        out[..n].copy_from_slice(&values[..n]);
        n
    }
}

/// Receives a stream from a multicast group into a local stream. See the
/// [module docs](super).
#[derive(Debug)]
pub struct Receiver {
    driver: Driver,
    local: Local,
}

impl Receiver {
    /// Binds and joins the sockets and creates the local stream; nothing is received until
    /// it is polled.
    pub fn new(bus: &Bus, cfg: ReceiverConfig) -> Result<Receiver, NetError> {
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
        let local = Local {
            bus: bus.clone(),
            name: cfg.local_stream.clone(),
            ring: cfg.ring.clone(),
            publisher: Some(publisher),
            enc: Encoder::new(),
            stats: ReceiverStats::default(),
            stall_ns: super::nanos(cfg.stall_timeout),
            clock: Mono::new(),
            pending: None,
            stalled: false,
            live_edge: false,
            first_delivery: true,
            closing_since: None,
            end_wait_ns: super::nanos(cfg.end_wait),
        };
        let driver = Driver::new(
            DriverConfig {
                group: cfg.group,
                source: cfg.source,
                interface: cfg.interface,
                line_b: cfg.line_b,
                accept_from: cfg.accept_from,
                request_server: cfg.request_server,
                sequencer: cfg.sequencer,
                sessions: Sessions::Stream {
                    tag: wire::stream_tag(&cfg.stream),
                    started: wire::epoch_token_now(),
                    session_timeout: cfg.session_timeout,
                    follow_newer: cfg.follow_newer,
                },
                rcvbuf: cfg.rcvbuf,
                core: cfg.core,
                idle: cfg.idle,
                fault: cfg.fault,
                exit_at_end_of_session: cfg.exit_at_end_of_session,
                heartbeat_events: None,
                framing: Framing::MoldUdp64,
                iex_protocol: None,
            },
            counters,
        )?;
        Ok(Receiver { driver, local })
    }

    /// Local address of line A's socket (where a unicast sender sends).
    pub fn line_a_addr(&self) -> io::Result<SocketAddr> {
        self.driver.line_a_addr()
    }

    /// Setup warnings (for example a clamped receive buffer).
    pub fn warnings(&self) -> &[String] {
        self.driver.warnings()
    }

    /// Usable `SO_RCVBUF` of line A.
    pub fn rcvbuf(&self) -> usize {
        self.driver.rcvbuf()
    }

    /// The session being followed, once one was seen.
    pub fn session(&self) -> Option<Session> {
        self.driver.session()
    }

    /// The counters so far, summed over sessions.
    pub fn stats(&self) -> ReceiverStats {
        ReceiverStats::compose(&self.driver.stats(), &self.local.stats)
    }

    /// One turn: receive what is waiting on each socket, handle timers and re-requests,
    /// publish in order. `observe` sees every record published on the local stream.
    pub fn poll_once(
        &mut self,
        observe: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<RxProgress, NetError> {
        let mut sink = RecvSink {
            local: &mut self.local,
            observe,
        };
        self.driver.poll_once(&mut sink)
    }

    /// Runs the loop on this thread (pinned first, if configured) until `stop` is set or,
    /// with [`exit_at_end_of_session`](ReceiverConfig::exit_at_end_of_session), the
    /// session ended. `observe` sees every record published on the local stream.
    pub fn run_with(
        mut self,
        stop: &AtomicBool,
        observe: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<ReceiverStats, NetError> {
        let mut sink = RecvSink {
            local: &mut self.local,
            observe,
        };
        self.driver.run(&mut sink, stop)?;
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
        let sink = RecvSink {
            local: &mut self.local,
            observe: &mut |_, _| {},
        };
        self.driver.finish(&sink);
        self.stats()
    }
}
