//! The sending side: a local stream out to a multicast group, with a retransmission server.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mdbus_codecs::moldudp64::{
    END_OF_SESSION_COUNT, HEADER_LEN, HEARTBEAT_COUNT, MAX_MESSAGE_COUNT, Session, encode_header,
};
use mdbus_codecs::retransmit::{RequestError, RetransmitStore};

use super::fault::{FaultConfig, FaultInjector};
use super::socket::{self, MAX_DATAGRAM, SendOptions};
use super::wire::{self, TYPE_LEN};
use super::{Idle, Mono, NOTICE_MAX, NetError, encode_gap_notice, nanos};
use mdbus_bus::schema::{Encoder, GapScope};
use mdbus_bus::{
    Bus, BusError, ENVELOPE_MSG_TYPE, Message, ProducerStatus, ReceiveError, Resync, StartAt,
    SubscribeOptions, Subscriber, Trust,
};
use mdbus_shm::counters::CounterFile;

/// Configuration of a [`Sender`].
#[derive(Clone, Debug, PartialEq)]
pub struct SenderConfig {
    /// The local stream to send.
    pub stream: String,
    /// Multicast group and port (a unicast address works too, for one receiver).
    pub group: SocketAddrV4,
    /// Line B: every packet is also sent to this group, for receivers that arbitrate
    /// between two lines.
    pub line_b: Option<SocketAddrV4>,
    /// Interface, TTL, loopback and buffer of the sending socket.
    pub send: SendOptions,
    /// Where the retransmission server listens (port 0: any free port; see
    /// [`Sender::request_addr`]).
    pub request_addr: SocketAddrV4,
    /// Largest datagram sent, MoldUDP64 header included (the path MTU less IP and UDP
    /// headers). Messages are batched up to it.
    pub max_datagram: usize,
    /// How long a partly filled packet may wait for more messages once the stream has been
    /// drained. Zero: send as soon as nothing more is waiting (no added latency; packets
    /// still fill up under load).
    pub flush_deadline: Duration,
    /// A heartbeat goes out after this long without a packet.
    pub heartbeat_interval: Duration,
    /// Messages the retransmission store holds.
    pub store_messages: usize,
    /// Message bytes the retransmission store holds.
    pub store_bytes: usize,
    /// Messages per second answered to each requesting host, whatever its source ports (0:
    /// no limit); all hosts together get a few times this.
    pub reply_rate: u64,
    /// Messages a host may be answered at once (the token bucket).
    pub reply_burst: u64,
    /// Most messages answered per request.
    pub max_reply_messages: u16,
    /// Where to start reading the stream.
    pub start: StartAt,
    /// Core to pin the sending thread to.
    pub core: Option<usize>,
    /// What to do when there is nothing to send.
    pub idle: Idle,
    /// Faults injected into the multicast packets (off by default). Line B gets its own
    /// injector with the same settings and the seed + 1, so the lines lose different packets.
    pub fault: FaultConfig,
    /// After the end of the session, keep answering re-requests for this long.
    pub linger: Duration,
    /// End (end of session, linger, return) when the stream's publisher closes it. When
    /// false, a publisher that comes back starts a new session.
    pub exit_when_closed: bool,
    /// Publish counters for `mdbus stat` under the bus root.
    pub counters: bool,
}

impl SenderConfig {
    /// Defaults for sending `stream` to `group`: the kernel's interface, TTL 1, loopback on,
    /// 1,400-byte datagrams, no flush deadline, heartbeats every 100 ms, a store of 1 Mi
    /// messages or 64 MiB, replies of at most 1,024 messages and 100,000 messages/s per
    /// host, the retransmission server on the group's port + 1, starting at the live edge,
    /// busy polling, a 1 s linger, exit when the stream closes, counters on.
    pub fn new(stream: &str, group: SocketAddrV4) -> Self {
        SenderConfig {
            stream: stream.to_owned(),
            group,
            line_b: None,
            send: SendOptions {
                interface: std::net::Ipv4Addr::UNSPECIFIED,
                ttl: 1,
                loopback: true,
                sndbuf: 4 << 20,
            },
            request_addr: SocketAddrV4::new(
                std::net::Ipv4Addr::UNSPECIFIED,
                group.port().wrapping_add(1),
            ),
            max_datagram: 1400,
            flush_deadline: Duration::ZERO,
            heartbeat_interval: Duration::from_millis(100),
            store_messages: 1 << 20,
            store_bytes: 64 << 20,
            reply_rate: 100_000,
            reply_burst: 20_000,
            max_reply_messages: 1024,
            start: StartAt::Next,
            core: None,
            idle: Idle::BusyPoll,
            fault: FaultConfig::default(),
            linger: Duration::from_secs(1),
            exit_when_closed: true,
            counters: true,
        }
    }
}

/// Counters of a [`Sender`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Sessions started (1 + publisher restarts followed).
    pub sessions: u64,
    /// Records read from the stream and sent.
    pub messages: u64,
    /// Data packets multicast.
    pub packets: u64,
    /// Bytes multicast (UDP payload), heartbeats included.
    pub bytes: u64,
    /// Heartbeats multicast.
    pub heartbeats: u64,
    /// End-of-session packets multicast.
    pub end_of_session: u64,
    /// Re-requests received.
    pub requests: u64,
    /// Packets sent in answer to re-requests.
    pub retransmit_packets: u64,
    /// Messages sent in answer to re-requests.
    pub retransmit_messages: u64,
    /// Requests (partly) for messages no longer held, answered "not available".
    pub not_available: u64,
    /// Requests refused because their host (or all hosts together) had used up the rate.
    pub rate_limited: u64,
    /// Requests that were malformed or for another session.
    pub bad_requests: u64,
    /// Records of the stream the sender could not read (its ring overran it); each run of
    /// them was sent on as a gap notice.
    pub stream_lost: u64,
    /// Records larger than a datagram can carry; each was sent on as a gap notice.
    pub oversize: u64,
    /// `send` calls that failed (the messages stay in the store for re-requests).
    pub send_errors: u64,
    /// Messages dropped by line A's fault injector (first transmission only).
    pub fault_dropped: u64,
    /// Sessions ended because the stream's publisher died without closing the stream (each
    /// with a gap notice, then the end of the session).
    pub publisher_died: u64,
    /// Requests from hosts beyond the rate limiter's table (they share one bucket).
    pub untracked_sources: u64,
}

impl SenderStats {
    /// Counter names, in the order of [`values`](Self::values).
    pub const NAMES: [&'static str; 18] = [
        "sessions",
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
        "stream_lost",
        "oversize",
        "send_errors",
        "fault_dropped",
        "publisher_died",
        "untracked_sources",
    ];

    /// The counters as one array, in the order of [`NAMES`](Self::NAMES).
    pub fn values(&self) -> [u64; 18] {
        [
            self.sessions,
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
            self.stream_lost,
            self.oversize,
            self.send_errors,
            self.fault_dropped,
            self.publisher_died,
            self.untracked_sources,
        ]
    }
}

/// Records read per loop turn before the loop looks at its sockets and timers.
const BATCH: usize = 256;

/// Counters are published at most this often (ns).
const COUNTERS_EVERY_NS: u64 = 1_000_000;

/// The retransmission server's socket is read at most this often while the stream is busy.
const SERVE_EVERY_NS: u64 = 20_000;

/// Held fault-injector packets are released after this long without traffic.
const FAULT_FLUSH_NS: u64 = 1_000_000;

/// While the stream is quiet, the publisher's liveness is checked at most this often (it
/// costs system calls).
const LIVENESS_EVERY_NS: u64 = 50_000_000;

/// One line: its socket and fault injector.
#[derive(Debug)]
struct Line {
    sock: UdpSocket,
    fault: Option<FaultInjector>,
}

impl Line {
    /// Sends `p` (through the injector, if any).
    #[inline]
    fn send(&mut self, p: &[u8], stats: &mut SenderStats) {
        let sock = &self.sock;
        let mut send = |p: &[u8]| match sock.send(p) {
            Ok(n) => stats.bytes += n as u64,
            Err(_) => stats.send_errors += 1,
        };
        match &mut self.fault {
            Some(f) => f.apply(p, &mut send),
            None => send(p),
        }
    }

    /// Releases the packets the injector holds back.
    fn flush_faults(&mut self, stats: &mut SenderStats) {
        let sock = &self.sock;
        if let Some(f) = &mut self.fault
            && f.held() > 0
        {
            f.flush(|p: &[u8]| match sock.send(p) {
                Ok(n) => stats.bytes += n as u64,
                Err(_) => stats.send_errors += 1,
            });
        }
    }
}

/// The multicast side: lines, packet being filled, store.
#[derive(Debug)]
struct Out {
    /// Line A, then line B if configured.
    lines: Vec<Line>,
    session: Session,
    pkt: Box<[u8]>,
    len: usize,
    count: u16,
    /// Sequence number of the first message in `pkt`.
    pkt_seq: u64,
    /// Sequence number the next message gets.
    next_seq: u64,
    /// When the first message of `pkt` was added (mono ns).
    opened_at: u64,
    last_send: u64,
    store: RetransmitStore,
    enc: Encoder,
    stats: SenderStats,
}

impl Out {
    /// Appends one record; sends the packet first when it would not fit. Returns the
    /// offset of the new block (to take it back if the record turns out to be overwritten).
    #[inline]
    fn append(&mut self, now: u64, msg_type: u32, payload: &[u8]) -> Option<usize> {
        let need = 2 + TYPE_LEN + payload.len();
        if HEADER_LEN + need > self.pkt.len() {
            return None;
        }
        if self.len + need > self.pkt.len() || self.count == MAX_MESSAGE_COUNT {
            self.flush(now);
        }
        if self.count == 0 {
            self.opened_at = now;
            self.pkt_seq = self.next_seq;
        }
        let at = self.len;
        // Fits: checked against the packet size above.
        self.pkt[at..at + 2].copy_from_slice(&((TYPE_LEN + payload.len()) as u16).to_be_bytes());
        wire::write_message(&mut self.pkt[at + 2..at + need], msg_type, payload);
        self.len += need;
        self.count += 1;
        self.next_seq += 1;
        Some(at)
    }

    /// Takes back the block appended at `at` (the last one).
    fn unappend(&mut self, at: usize) {
        self.len = at;
        self.count -= 1;
        self.next_seq -= 1;
    }

    /// Sends a gap notice in the stream's place: `count` records from `first` (the stream's
    /// sequence numbers) could not be sent.
    fn notice(&mut self, now: u64, first: u64, count: u64) {
        // Encoded into a copy so `append` can borrow `self` whole.
        let mut buf = [0u8; NOTICE_MAX];
        let n = encode_gap_notice(&mut self.enc, &mut buf, first, count, GapScope::Stream);
        let _ = self.append(now, ENVELOPE_MSG_TYPE, &buf[..n]);
    }

    /// Sends the packet being filled, if any: header, store, (faults), wire.
    fn flush(&mut self, now: u64) {
        if self.count == 0 {
            return;
        }
        // Cannot be refused: every block fits a packet of the store's `max_packet_len`.
        let _ = super::seal_packet(
            &mut self.pkt,
            self.len,
            self.session,
            self.pkt_seq,
            self.count,
            &mut self.store,
        );
        self.stats.packets += 1;
        self.stats.messages += u64::from(self.count);
        let len = self.len;
        self.send_raw(now, len);
        self.len = HEADER_LEN;
        self.count = 0;
    }

    /// Sends `pkt[..len]` on every line.
    fn send_raw(&mut self, now: u64, len: usize) {
        self.last_send = now;
        let Out {
            lines, pkt, stats, ..
        } = self;
        for line in lines.iter_mut() {
            line.send(&pkt[..len], stats);
        }
        if let Some(f) = &lines[0].fault {
            stats.fault_dropped = f.stats().dropped_messages;
        }
    }

    /// Sends a heartbeat or end-of-session packet (no messages).
    fn send_control(&mut self, now: u64, count: u16) {
        debug_assert_eq!(self.count, 0);
        let mut hdr = [0u8; HEADER_LEN];
        let _ = encode_header(&mut hdr, self.session, self.next_seq, count);
        self.pkt[..HEADER_LEN].copy_from_slice(&hdr);
        if count == HEARTBEAT_COUNT {
            self.stats.heartbeats += 1;
        } else {
            self.stats.end_of_session += 1;
        }
        self.send_raw(now, HEADER_LEN);
    }

    /// Releases packets the fault injectors hold back.
    fn flush_faults(&mut self) {
        let Out { lines, stats, .. } = self;
        for line in lines.iter_mut() {
            line.flush_faults(stats);
        }
    }
}

/// What the sender is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the stream to exist.
    Waiting,
    /// Sending a session.
    Live,
    /// The publisher closed the stream: the session ended, re-requests are still answered
    /// until the deadline (mono ns).
    Ended { until: u64 },
}

/// Multicasts a local stream and answers re-requests. See the [module docs](super).
///
/// Drive it with [`run`](Sender::run) on its own thread, or call
/// [`poll_once`](Sender::poll_once) from a loop that does other work too.
#[derive(Debug)]
pub struct Sender {
    cfg: SenderConfig,
    bus: Bus,
    sub: Option<Subscriber>,
    server: UdpSocket,
    tag: [u8; wire::TAG_LEN],
    epoch: u64,
    out: Out,
    clock: Mono,
    phase: Phase,
    req: [u8; 512],
    last_serve: u64,
    last_counters: u64,
    last_eos: u64,
    last_liveness: u64,
    counters: Option<CounterFile>,
    warnings: Vec<String>,
}

/// What one [`Sender::poll_once`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxProgress {
    /// Records read from the stream.
    pub records: usize,
    /// Re-requests answered.
    pub requests: usize,
    /// The session ended and the linger time is over: nothing more will happen.
    pub done: bool,
}

impl Sender {
    /// Sets up the sockets and the store, and opens the stream if it exists (otherwise the
    /// sender waits for it). Nothing is sent until it is polled.
    pub fn new(bus: &Bus, cfg: SenderConfig) -> Result<Sender, NetError> {
        bus.stream_path(&cfg.stream)?;
        if cfg.max_datagram < HEADER_LEN + 2 + TYPE_LEN || cfg.max_datagram > MAX_DATAGRAM {
            return Err(NetError::Config(format!(
                "max datagram {} must be {}..={MAX_DATAGRAM} bytes",
                cfg.max_datagram,
                HEADER_LEN + 2 + TYPE_LEN
            )));
        }
        let mut warnings = Vec::new();
        let mut lines = vec![Line {
            sock: socket::send_socket(cfg.group, &cfg.send, &mut warnings)?,
            fault: cfg
                .fault
                .is_active()
                .then(|| FaultInjector::new(cfg.fault.clone(), cfg.max_datagram)),
        }];
        if let Some(b) = cfg.line_b {
            let fault_b = FaultConfig {
                seed: cfg.fault.seed.wrapping_add(1),
                ..cfg.fault.clone()
            };
            lines.push(Line {
                sock: socket::send_socket(b, &cfg.send, &mut warnings)?,
                fault: cfg
                    .fault
                    .is_active()
                    .then(|| FaultInjector::new(fault_b, cfg.max_datagram)),
            });
        }
        let server = socket::server_socket(cfg.request_addr)?;
        let tag = wire::stream_tag(&cfg.stream);
        let epoch = wire::fresh_epoch_token();
        let session = wire::session_name(tag, epoch);
        let store = super::reply_store(
            session,
            cfg.max_datagram,
            cfg.store_messages,
            cfg.store_bytes,
            cfg.max_reply_messages,
            cfg.reply_rate,
            cfg.reply_burst,
        )
        .map_err(NetError::Config)?;
        let counters = if cfg.counters {
            Some(CounterFile::create(
                bus.root(),
                &cfg.stream,
                "send",
                &format!("group {} session {session}", cfg.group),
                &SenderStats::NAMES,
            )?)
        } else {
            None
        };
        let mut s = Sender {
            bus: bus.clone(),
            sub: None,
            server,
            tag,
            epoch,
            out: Out {
                lines,
                session,
                pkt: vec![0; cfg.max_datagram].into_boxed_slice(),
                len: HEADER_LEN,
                count: 0,
                pkt_seq: 1,
                next_seq: 1,
                opened_at: 0,
                last_send: 0,
                store,
                enc: Encoder::new(),
                stats: SenderStats::default(),
            },
            clock: Mono::new(),
            phase: Phase::Waiting,
            req: [0; 512],
            last_serve: 0,
            last_counters: 0,
            last_eos: 0,
            last_liveness: 0,
            counters,
            warnings,
            cfg,
        };
        s.try_open()?;
        Ok(s)
    }

    /// The session being sent.
    pub fn session(&self) -> Session {
        self.out.session
    }

    /// Where the retransmission server listens.
    pub fn request_addr(&self) -> io::Result<SocketAddr> {
        self.server.local_addr()
    }

    /// Setup warnings (for example a clamped socket buffer).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The counters so far.
    pub fn stats(&self) -> SenderStats {
        self.out.stats
    }

    /// The fault injector's counters, if one is configured.
    pub fn fault_stats(&self) -> Option<super::fault::FaultStats> {
        self.out.lines[0].fault.as_ref().map(FaultInjector::stats)
    }

    /// Line A's fault injector, if one is configured (benches read its log of dropped
    /// packets).
    pub fn fault(&self) -> Option<&FaultInjector> {
        self.out.lines[0].fault.as_ref()
    }

    /// Opens the stream if it exists now; starts the first session.
    fn try_open(&mut self) -> Result<bool, NetError> {
        let opts = SubscribeOptions {
            start: self.cfg.start,
            resync: Resync::Oldest,
            lossless: false,
            trust: Trust::VERIFY,
        };
        match self.bus.subscriber(&self.cfg.stream, &opts) {
            Ok(sub) => {
                self.sub = Some(sub);
                self.phase = Phase::Live;
                self.out.stats.sessions += 1;
                Ok(true)
            }
            Err(BusError::Segment {
                source: mdbus_shm::SetupError::Io { source, .. },
                ..
            }) if source.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts a new session (a new epoch token, sequence numbers from 1, an empty store).
    fn new_session(&mut self) {
        self.epoch = wire::epoch_token_now().max(self.epoch + 1);
        let session = wire::session_name(self.tag, self.epoch);
        self.out.session = session;
        self.out.next_seq = 1;
        self.out.pkt_seq = 1;
        self.out.store.restart(session, 1);
        self.out.stats.sessions += 1;
        if let Some(c) = &self.counters {
            c.set_detail(&format!("group {} session {session}", self.cfg.group));
        }
    }

    /// Flushes what is pending and sends the end of the session.
    fn end_session(&mut self, now: u64) {
        self.out.flush(now);
        self.out.send_control(now, END_OF_SESSION_COUNT);
        self.out.flush_faults();
        self.last_eos = now;
    }

    /// One turn of the loop: read and send what the stream holds (up to a batch), answer
    /// re-requests, send heartbeats and flush on time.
    pub fn poll_once(&mut self) -> Result<TxProgress, NetError> {
        let now = self.clock.now();
        let mut progress = TxProgress::default();
        match self.phase {
            Phase::Waiting => {
                if !self.try_open()? {
                    progress.requests = self.serve(now);
                    return Ok(progress);
                }
            }
            Phase::Ended { until } => {
                progress.requests = self.serve(now);
                if now.saturating_sub(self.last_eos) >= nanos(self.cfg.heartbeat_interval) {
                    // Repeated, so a receiver that lost it still learns the session ended.
                    self.out.send_control(now, END_OF_SESSION_COUNT);
                    self.last_eos = now;
                }
                if !self.cfg.exit_when_closed
                    && let Some(sub) = &mut self.sub
                    && sub.reopen().is_ok_and(|c| c.new != c.old)
                {
                    self.new_session();
                    self.phase = Phase::Live;
                }
                progress.done = self.cfg.exit_when_closed && now >= until;
                self.publish_counters(now, progress.done);
                return Ok(progress);
            }
            Phase::Live => {}
        }
        progress.records = self.read_stream(now)?;
        let flush_deadline = nanos(self.cfg.flush_deadline);
        if progress.records == 0 {
            if self.out.count > 0 && now.saturating_sub(self.out.opened_at) >= flush_deadline {
                self.out.flush(now);
            }
            if now.saturating_sub(self.last_serve) >= SERVE_EVERY_NS / 4 {
                progress.requests = self.serve(now);
            }
            if self.out.count == 0
                && now.saturating_sub(self.out.last_send) >= nanos(self.cfg.heartbeat_interval)
            {
                self.out.send_control(now, HEARTBEAT_COUNT);
            }
            if now.saturating_sub(self.out.last_send) >= FAULT_FLUSH_NS {
                self.out.flush_faults();
            }
            if now.saturating_sub(self.last_liveness) >= LIVENESS_EVERY_NS {
                self.last_liveness = now;
                self.check_publisher(now)?;
            }
            self.publish_counters(now, false);
        } else {
            if self.out.count > 0 && now.saturating_sub(self.out.opened_at) >= flush_deadline {
                // Under load the batch ends when the stream is drained or a packet fills;
                // the deadline bounds how long a partial packet waits.
                if progress.records < BATCH {
                    self.out.flush(now);
                }
            }
            if now.saturating_sub(self.last_serve) >= SERVE_EVERY_NS {
                progress.requests = self.serve(now);
            }
        }
        Ok(progress)
    }

    /// Reads up to a batch of records into packets. Handles overruns (a gap notice),
    /// oversize records (a gap notice), the end of the stream and a restarted publisher.
    fn read_stream(&mut self, now: u64) -> Result<usize, NetError> {
        let Some(sub) = self.sub.as_mut() else {
            return Ok(0);
        };
        let out = &mut self.out;
        let (mut closed, mut restarted) = (false, false);
        let mut n = 0;
        while n < BATCH {
            let mut appended = None;
            let mut oversize = None;
            let r = sub.poll(
                |m: Message<'_>| match out.append(now, m.msg_type(), m.payload()) {
                    Some(at) => appended = Some(at),
                    None => oversize = Some(m.seq()),
                },
            );
            match r {
                Ok(true) => {
                    n += 1;
                    if let Some(seq) = oversize {
                        out.stats.oversize += 1;
                        out.notice(now, seq, 1);
                    }
                }
                Ok(false) => break,
                Err(ReceiveError::Overrun {
                    first_lost_seq,
                    lost,
                }) => {
                    // The record handed to the callback (if any) is among the lost.
                    if let Some(at) = appended {
                        out.unappend(at);
                    }
                    out.stats.stream_lost += lost;
                    out.notice(now, first_lost_seq, lost);
                    n += 1;
                }
                Err(ReceiveError::Closed) => {
                    closed = true;
                    break;
                }
                Err(ReceiveError::NewEpoch { .. }) => {
                    restarted = true;
                    break;
                }
                Err(e) => {
                    return Err(NetError::Stream {
                        stream: self.cfg.stream.clone(),
                        what: e.to_string(),
                    });
                }
            }
        }
        if closed {
            self.end_session(now);
            self.phase = Phase::Ended {
                until: now.saturating_add(nanos(self.cfg.linger)),
            };
        } else if restarted {
            // The publisher restarted: end this session, follow the new one.
            self.end_session(now);
            if let Some(sub) = self.sub.as_mut() {
                sub.reopen()?;
            }
            self.new_session();
        }
        Ok(n)
    }

    /// Ends the session if the stream's publisher died without closing it (its process is
    /// gone; a stopped or merely quiet one is alive): sends what it committed, then a gap
    /// notice with [`GapScope::Stream`] from the next record's sequence number and a count of
    /// 0 (the publisher may have had a record under way; how many it never finished is
    /// unknown), then the end of the session, so receivers end theirs too.
    fn check_publisher(&mut self, now: u64) -> Result<(), NetError> {
        let dead = self.sub.as_ref().is_some_and(|sub| {
            matches!(
                sub.producer_status(Duration::MAX),
                ProducerStatus::Dead { .. }
            )
        });
        if !dead {
            return Ok(());
        }
        // What it committed before it died, to the last record.
        while self.phase == Phase::Live && self.read_stream(now)? > 0 {}
        if self.phase != Phase::Live {
            // It closed (or was replaced) after all.
            return Ok(());
        }
        let next = self.sub.as_ref().map_or(0, Subscriber::next_seq);
        self.out.notice(now, next, 0);
        self.out.stats.publisher_died += 1;
        self.end_session(now);
        self.phase = Phase::Ended {
            until: now.saturating_add(nanos(self.cfg.linger)),
        };
        Ok(())
    }

    /// Answers the re-requests waiting on the server socket; returns how many.
    fn serve(&mut self, now: u64) -> usize {
        self.last_serve = now;
        let mut handled = 0;
        // A bounded number per turn, so a request flood cannot starve the stream (a refused
        // one costs a table lookup, an answered one is bounded by the rate limit).
        while handled < 64 {
            let (n, from) = match self.server.recv_from(&mut self.req) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            };
            handled += 1;
            let Out { store, stats, .. } = &mut self.out;
            stats.requests += 1;
            let server = &self.server;
            let mut sent_packets = 0u64;
            let mut send_errors = 0u64;
            let r = store.handle_request(now, from, &self.req[..n], |p: &[u8]| {
                match server.send_to(p, from) {
                    Ok(_) => sent_packets += 1,
                    Err(_) => send_errors += 1,
                }
            });
            stats.send_errors += send_errors;
            stats.retransmit_packets += sent_packets;
            match r {
                Ok(reply) => {
                    stats.retransmit_messages += reply.messages;
                    if reply.not_available_below.is_some() {
                        stats.not_available += 1;
                    }
                }
                // Counted by the store (`rate_limited`).
                Err(RequestError::RateLimited) => {}
                Err(_) => stats.bad_requests += 1,
            }
            let st = store.stats();
            stats.rate_limited = st.rate_limited;
            stats.untracked_sources = st.untracked_sources;
        }
        handled
    }

    fn publish_counters(&mut self, now: u64, force: bool) {
        if let Some(c) = &self.counters
            && (force || now.saturating_sub(self.last_counters) >= COUNTERS_EVERY_NS)
        {
            self.last_counters = now;
            c.publish(&self.out.stats.values());
        }
    }

    /// Ends the session now (end of session, then re-requests answered for the linger time).
    pub fn shutdown(&mut self, stop_linger: &AtomicBool) -> SenderStats {
        let now = self.clock.now();
        if self.phase == Phase::Live {
            self.end_session(now);
        }
        let until = now.saturating_add(nanos(self.cfg.linger));
        let mut last_eos = now;
        loop {
            let now = self.clock.now();
            if now >= until || stop_linger.load(Ordering::Relaxed) {
                break;
            }
            if self.serve(now) == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            if now.saturating_sub(last_eos) >= nanos(self.cfg.heartbeat_interval) {
                self.out.send_control(now, END_OF_SESSION_COUNT);
                last_eos = now;
            }
        }
        self.phase = Phase::Ended { until };
        self.out.flush_faults();
        if let Some(c) = &self.counters {
            c.publish(&self.out.stats.values());
            c.finish();
        }
        self.out.stats
    }

    /// Runs the loop on this thread (pinned first, if configured) until `stop` is set or,
    /// with [`exit_when_closed`](SenderConfig::exit_when_closed), the stream closed and the
    /// linger time passed. On `stop` the session is ended cleanly and re-requests are
    /// answered for the linger time.
    pub fn run(mut self, stop: &AtomicBool) -> Result<SenderStats, NetError> {
        if let Some(core) = self.cfg.core {
            mdbus_tuning::pin_current_thread(core)?;
        }
        let idle = self.cfg.idle;
        while !stop.load(Ordering::Relaxed) {
            let p = self.poll_once()?;
            if p.done {
                if let Some(c) = &self.counters {
                    c.finish();
                }
                return Ok(self.out.stats);
            }
            if p.records == 0 && p.requests == 0 {
                idle.wait();
            }
        }
        let never = AtomicBool::new(false);
        Ok(self.shutdown(&never))
    }
}
