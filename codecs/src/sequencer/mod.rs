//! Gap detection and recovery for MoldUDP64 feeds, sans-IO: packets and `now` in, messages,
//! re-requests and events out. No sockets, no clock reads, and no allocation per packet once
//! constructed (every table is sized by [`SequencerConfig`]).
//!
//! A [`Sequencer`] is driven by a socket loop (or a test) in the shape of `quinn-proto`:
//!
//! * [`handle_packet`](Sequencer::handle_packet) with each datagram received on line A, line
//!   B or from the retransmission server. Messages are handed to a [`Deliver`] sink exactly
//!   once, in sequence order: in-order ones straight from the datagram (zero copy), ones that
//!   arrived early from a bounded reorder store once the gap before them is filled.
//! * [`poll_request`](Sequencer::poll_request) for re-requests to send to the retransmission
//!   server, [`poll_event`](Sequencer::poll_event) for what happened
//!   ([`Event`]), [`next_deadline`](Sequencer::next_deadline) for the socket timeout and
//!   [`handle_timeout`](Sequencer::handle_timeout) when it expires.
//!
//! ```
//! use mdbus_codecs::moldudp64::{PacketBuilder, Session};
//! use mdbus_codecs::sequencer::{Line, Sequencer, SequencerConfig};
//!
//! let session = Session(*b"000010059B");
//! let packet = |seq: u64, msgs: &[&[u8]]| {
//!     let mut buf = vec![0u8; 1400];
//!     let mut b = PacketBuilder::new(&mut buf, session, seq).unwrap();
//!     for m in msgs {
//!         b.push(m).unwrap();
//!     }
//!     let n = b.finish();
//!     buf.truncate(n);
//!     buf
//! };
//! let mut seq = Sequencer::new(SequencerConfig::default())?;
//! let mut got = Vec::new();
//! let ms = 1_000_000;
//! seq.handle_packet(0, Line::A, &packet(1, &[b"one"]), |s, m: &[u8]| got.push((s, m.to_vec())));
//! // Message 2 is lost on line A; 3 arrives and is held back.
//! seq.handle_packet(ms, Line::A, &packet(3, &[b"three"]), |s, m: &[u8]| got.push((s, m.to_vec())));
//! assert_eq!(got.len(), 1);
//! // After the NAK delay the sequencer asks for message 2 ...
//! let request = seq.poll_request(10 * ms).expect("a re-request");
//! assert_eq!((request.sequence_number, request.message_count), (2, 1));
//! // ... which the server sends back.
//! seq.handle_packet(11 * ms, Line::Recovery, &packet(2, &[b"two"]), |s, m: &[u8]| got.push((s, m.to_vec())));
//! assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3]);
//! # Ok::<(), mdbus_codecs::sequencer::ConfigError>(())
//! ```
//!
//! # Decisions
//!
//! * **Arbitration.** Lines A and B carry the same packets; the first copy of a message wins,
//!   later ones are counted as duplicates.
//! * **Damaged packets.** A datagram shorter than the header is dropped and counted as
//!   malformed. When a message block is truncated, the blocks before it are delivered (each is
//!   delimited by its own length and its sequence number follows from its position, so they
//!   are sound); the damaged block and everything after it count as not received and are
//!   recovered like any lost message. The count field of a damaged packet is not trusted to
//!   announce messages beyond the ones read.
//! * **Heartbeats** (count 0) carry the next sequence number: one ahead of what was seen
//!   reveals a gap at the tail, which is recovered like any other.
//! * **End of session** (count 0xFFFF) ends the session once every message before it has been
//!   delivered or declared lost; [`Event::EndOfSession`] follows, and later packets are
//!   counted as duplicates. One below the highest sequence number known (messages beyond it
//!   were seen) is not this session's end: it is ignored and counted.
//! * **Implausible jumps.** Sequence numbers are untrusted input and never wrap. A packet
//!   whose messages would pass `u64::MAX` is malformed. A packet reaching more than
//!   [`max_gap`](SequencerConfig::max_gap) beyond the highest sequence number known (data, or
//!   a heartbeat or end of session announcing such a next sequence number) is counted and not
//!   acted on (no gap, no request, no loss) until it is corroborated: the current sequence
//!   has been silent for [`jump_confirm`](SequencerConfig::jump_confirm) (nothing on line A
//!   or B within `max_gap` of it) and a different packet within `max_gap` of one that came
//!   after that silence began arrives, as the next packets of a feed that really jumped do.
//!   Forged datagrams, however many and however consistent with each other, change nothing
//!   while the real feed sends or heartbeats. After
//!   corroboration the messages jumped over are missing like any others (the suspect packet's
//!   own included: it was not kept).
//! * **Sequence number 0** is carried by no MoldUDP64 packet (sanitized captures zero it):
//!   such packets are counted and neither delivered nor sequenced.
//! * **"Not available".** The retransmission server of this crate
//!   ([`retransmit`](crate::retransmit)) answers a request for messages it no longer holds
//!   with a heartbeat-shaped packet (count 0) whose sequence number is the first one it still
//!   has. On [`Line::Recovery`] such a packet therefore means "everything below this is gone":
//!   the missing messages below it become an unrecoverable gap at once, instead of being
//!   re-requested until the retries run out. (On lines A and B a count-0 packet stays a
//!   heartbeat.)
//! * **Unrecoverable gaps.** When retries are exhausted, the server said "not available", or
//!   the bounded tables are full (reorder store bytes or window, or the table of missing
//!   ranges), the oldest missing range is given up: the sink's [`Deliver::gap`] is called at
//!   the exact place in the message order, an [`Event::Gap`] with `recoverable: false` is
//!   queued, and delivery continues after it. A message of a range already given up is a
//!   duplicate if it arrives later.
//! * **Early warning.** When a missing range is first re-requested (the NAK delay passed, so
//!   it is loss rather than reordering) an [`Event::Gap`] with `recoverable: true` is queued.
//! * **Late join.** [`LateJoin::LiveEdge`] starts at the first packet seen and reports the
//!   messages before it with [`Event::LateJoin`] (they are never requested). That first
//!   packet is tentative: its messages are held (copied into the reorder store) until a
//!   different packet within `max_gap` of it arrives or the NAK delay passes (a heartbeat,
//!   which brings nothing to deliver, waits for a data packet however long); a packet far
//!   from it before then replaces it, so a forged first packet cannot make the real session
//!   below it all duplicates;
//!   [`LateJoin::FromSequence`] recovers everything from the given sequence number on.

mod store;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

use crate::moldudp64::{END_OF_SESSION_COUNT, HEARTBEAT_COUNT, Packet, RequestPacket, Session};
use store::ReorderStore;

/// Where a packet came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Line {
    /// The primary multicast line.
    A,
    /// The redundant multicast line carrying the same packets.
    B,
    /// An answer of the retransmission server to a re-request.
    Recovery,
}

/// Where a sequencer joining a running session starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LateJoin {
    /// At the first packet seen: earlier messages are not requested.
    LiveEdge,
    /// At this sequence number (0 is taken as 1, the first of a session): earlier messages are
    /// ignored, later missing ones recovered.
    FromSequence(u64),
}

/// How the wait before each retry of a re-request grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backoff {
    /// The wait is multiplied by this after each attempt (1: constant).
    pub factor: u32,
    /// The wait never exceeds this.
    pub max: Duration,
}

impl Backoff {
    /// The same wait before every retry.
    pub const fn constant() -> Self {
        Backoff {
            factor: 1,
            max: Duration::MAX,
        }
    }
}

/// Configuration of a [`Sequencer`]; every table is sized from it once, at construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequencerConfig {
    /// The session to follow; `None` learns it from the first packet. Packets of any other
    /// session are counted and ignored.
    pub session: Option<Session>,
    /// How long a missing message may be merely reordered before it is re-requested.
    pub nak_delay: Duration,
    /// How long to wait for the answer to a re-request before asking again.
    pub request_timeout: Duration,
    /// Re-sends of a request after the first before its messages are given up.
    pub max_retries: u32,
    /// Growth of the wait between attempts.
    pub backoff: Backoff,
    /// Requests in flight at once. 0: no retransmission server; missing messages are given up
    /// as soon as the NAK delay has passed.
    pub max_outstanding_requests: usize,
    /// Most messages asked for by one request (MoldUDP64 counts are `u16`); larger gaps are
    /// split. At least 1.
    pub max_request_messages: u16,
    /// Two missing ranges separated by at most this many received messages are asked for in
    /// one request (the few messages in between come back as duplicates).
    pub coalesce_within: u16,
    /// Bytes of the reorder store that holds messages arriving ahead of a gap.
    pub reorder_capacity_bytes: usize,
    /// How far ahead of the next expected message the reorder store reaches, in messages
    /// (rounded up to a power of two).
    pub reorder_capacity_messages: usize,
    /// Separate missing ranges tracked at once (at least 2).
    pub max_gaps: usize,
    /// Where to start when joining a running session.
    pub late_join: LateJoin,
    /// How far beyond the highest sequence number known a packet may reach, in messages,
    /// before it is implausible: such a packet (data, heartbeat or end of session) is counted
    /// and not acted on until another packet near it corroborates it. At least 1.
    pub max_gap: u64,
    /// How long nothing may continue the current sequence (no packet on line A or B within
    /// `max_gap` of it) before packets continuing from a jump beyond `max_gap` corroborate
    /// it. Longer than the feed's heartbeat interval, so that a live feed is never taken off
    /// its sequence by forged packets, however consistent with each other.
    pub jump_confirm: Duration,
}

impl Default for SequencerConfig {
    /// Learns the session, joins at the live edge; NAK delay 1 ms; requests of up to 1,024
    /// messages, 8 in flight, timeout 10 ms doubling to at most 200 ms, 4 retries; a reorder
    /// store of 16 MiB reaching 64Ki messages ahead; 4,096 missing ranges; jumps of at most
    /// 1,000,000 messages taken at face value, longer ones once the current sequence has been
    /// silent for 2 s.
    fn default() -> Self {
        SequencerConfig {
            session: None,
            nak_delay: Duration::from_millis(1),
            request_timeout: Duration::from_millis(10),
            max_retries: 4,
            backoff: Backoff {
                factor: 2,
                max: Duration::from_millis(200),
            },
            max_outstanding_requests: 8,
            max_request_messages: 1024,
            coalesce_within: 16,
            reorder_capacity_bytes: 16 << 20,
            reorder_capacity_messages: 1 << 16,
            max_gaps: 4096,
            late_join: LateJoin::LiveEdge,
            max_gap: 1_000_000,
            jump_confirm: Duration::from_secs(2),
        }
    }
}

/// A [`SequencerConfig`] that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `max_request_messages` is 0.
    #[error("max_request_messages must be at least 1")]
    ZeroRequestMessages,
    /// `max_gaps` is below 2.
    #[error("max_gaps must be at least 2, got {0}")]
    TooFewGaps(usize),
    /// The reorder store is larger than 4 GiB or its window larger than 2^30 messages.
    #[error("reorder store too large: {bytes} bytes, {messages} messages")]
    StoreTooLarge {
        /// `reorder_capacity_bytes`.
        bytes: usize,
        /// `reorder_capacity_messages`.
        messages: usize,
    },
    /// `backoff.factor` is 0.
    #[error("backoff factor must be at least 1")]
    ZeroBackoff,
    /// `max_gap` is 0.
    #[error("max_gap must be at least 1")]
    ZeroMaxGap,
}

/// Something the caller should know, from [`Sequencer::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The first packet of the session was seen.
    SessionStarted {
        /// The session.
        session: Session,
    },
    /// The sequencer joined a running session: messages before `first_seq` are not delivered.
    LateJoin {
        /// First sequence number delivered.
        first_seq: u64,
    },
    /// Messages `first .. first + count` are missing. `recoverable: true`: they are being
    /// re-requested (reported once, when first requested). `recoverable: false`: they are
    /// lost and were skipped; [`Deliver::gap`] was called at their place in the order.
    Gap {
        /// First missing sequence number.
        first: u64,
        /// Number of consecutive missing messages.
        count: u64,
        /// Whether they may still be delivered.
        recoverable: bool,
    },
    /// Re-requested messages arrived.
    Recovered {
        /// First recovered sequence number.
        first: u64,
        /// Number of consecutive recovered messages.
        count: u64,
        /// Time from the detection of the gap to their arrival.
        latency_ns: u64,
    },
    /// The end-of-session packet was seen and every message before it delivered or declared
    /// lost.
    EndOfSession {
        /// Sequence number of the end-of-session packet (one past the last message).
        next_seq: u64,
    },
}

/// Counters of a [`Sequencer`]; messages are counted one by one, not by packet, unless named.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SequencerStats {
    /// Datagrams handled.
    pub packets: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Messages received again (the other line, a repeated retransmission, a range already
    /// skipped, before the start of a [`LateJoin::FromSequence`] or after the end).
    pub duplicates: u64,
    /// Messages that arrived ahead of a gap and went through the reorder store.
    pub out_of_order: u64,
    /// Missing ranges detected (including ones later filled by mere reordering).
    pub gaps_detected: u64,
    /// Re-requests handed out by [`Sequencer::poll_request`], retries included.
    pub requests_sent: u64,
    /// Messages that arrived after being re-requested.
    pub recovered: u64,
    /// Messages declared lost.
    pub unrecoverable: u64,
    /// Packets of another session.
    pub foreign_session: u64,
    /// Packets shorter than a header, or with a damaged message block.
    pub malformed: u64,
    /// Messages before the join point of [`LateJoin::LiveEdge`].
    pub late_join: u64,
    /// Heartbeat packets (count 0) on lines A and B.
    pub heartbeats: u64,
    /// "Not available" answers of the retransmission server.
    pub not_available: u64,
    /// Times a full table (reorder store, window, missing ranges) forced a gap to be skipped.
    pub overflows: u64,
    /// Packets reaching more than `max_gap` beyond the highest sequence number known (data,
    /// or a heartbeat or end of session announcing such a next sequence number), held off
    /// until corroborated.
    pub implausible_jumps: u64,
    /// Jumps beyond `max_gap` that a second, different packet near them corroborated; the
    /// messages jumped over are then missing like any others.
    pub jumps_corroborated: u64,
    /// End-of-session packets below the highest sequence number known, ignored.
    pub forged_end_of_session: u64,
    /// First packets of a [`LateJoin::LiveEdge`] join replaced, before any message was
    /// delivered, by a packet far from them (more than `max_gap`).
    pub anchors_replaced: u64,
    /// Packets with sequence number 0, which no MoldUDP64 packet carries (sanitized captures
    /// zero it): not delivered, not sequenced.
    pub zero_sequence: u64,
}

/// Where a [`Sequencer`] hands messages, in order.
///
/// Any `FnMut(u64, &[u8])` closure is a sink that ignores unrecoverable gaps in the message
/// order (they are still reported by [`Event::Gap`]); implement the trait on a type of your
/// own to receive them in place.
pub trait Deliver {
    /// Message `seq`, borrowed from the datagram or the reorder store.
    fn message(&mut self, seq: u64, msg: &[u8]);

    /// Messages `first .. first + count` are lost; the next message delivered is
    /// `first + count` or later. Called exactly where they would have been.
    fn gap(&mut self, first: u64, count: u64) {
        let _ = (first, count);
    }
}

impl<F: FnMut(u64, &[u8])> Deliver for F {
    #[inline]
    fn message(&mut self, seq: u64, msg: &[u8]) {
        self(seq, msg)
    }
}

/// A missing range `[first, end)` of sequence numbers.
#[derive(Clone, Copy, Debug)]
struct Hole {
    first: u64,
    end: u64,
    /// When it was detected (`now` of the packet that revealed it).
    detected_at: u64,
    /// It has been re-requested at least once.
    requested: bool,
    /// A request in flight covers it (whole).
    inflight: bool,
    /// Given up; skipped once delivery reaches it.
    abandoned: bool,
}

impl Hole {
    fn new(first: u64, end: u64, now: u64) -> Self {
        Hole {
            first,
            end,
            detected_at: now,
            requested: false,
            inflight: false,
            abandoned: false,
        }
    }
}

/// A re-request in flight, covering whole holes `[first, end)`.
#[derive(Clone, Copy, Debug)]
struct Inflight {
    first: u64,
    end: u64,
    /// Times sent.
    attempts: u32,
    deadline: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No packet of the session seen yet.
    Waiting,
    Running,
    Ended,
}

/// The packet a [`LateJoin::LiveEdge`] join started at, while nothing corroborates it.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    /// Its sequence number, and one past its last message (equal for a heartbeat).
    first: u64,
    end: u64,
    /// When it arrived.
    at: u64,
}

/// Packets beyond `max_gap` remembered at once, waiting for corroboration.
const SUSPECTS: usize = 4;

/// A packet that reached beyond `max_gap`: `[first, end)` as for [`Anchor`].
#[derive(Clone, Copy, Debug, Default)]
struct Suspect {
    first: u64,
    end: u64,
    /// When it arrived.
    at: u64,
}

/// Consecutive recovered messages seen while handling one packet, reported as one event.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    first: u64,
    count: u64,
    latency: u64,
}

/// The MoldUDP64 gap-detection and recovery state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Sequencer {
    nak_delay: u64,
    request_timeout: u64,
    max_retries: u32,
    backoff_factor: u64,
    backoff_max: u64,
    max_outstanding: usize,
    max_request: u64,
    coalesce_within: u64,
    max_gaps: usize,
    late_join: LateJoin,
    max_gap: u64,
    jump_confirm: u64,

    session: Option<Session>,
    state: State,
    /// Next sequence number to deliver.
    expected: u64,
    /// One past the highest sequence number known to exist.
    highest: u64,
    end_seq: Option<u64>,
    /// Invariant: every sequence number in `[expected, highest)` is either in `store` or in
    /// exactly one hole; holes are sorted and disjoint, and the first starts at `expected`
    /// whenever `expected < highest`. No message is numbered `u64::MAX` (a packet whose
    /// messages would pass it is malformed), so `s + 1` of a message and the differences of
    /// these bounds never overflow.
    holes: VecDeque<Hole>,
    inflight: Vec<Inflight>,
    store: ReorderStore,
    events: VecDeque<Event>,
    stats: SequencerStats,
    /// Set while a live-edge join is tentative: its messages are held in `store`, none
    /// delivered, and a packet far from it replaces it.
    anchor: Option<Anchor>,
    /// When the last packet on line A or B within `max_gap` of `highest` arrived: the current
    /// sequence was alive then.
    line_at: u64,
    /// Recent packets beyond `max_gap`, the oldest overwritten first.
    suspects: [Suspect; SUSPECTS],
    suspects_len: usize,
    suspects_next: usize,
}

/// Nanoseconds of a duration, saturating.
fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Sequencer {
    /// A sequencer with every table allocated now.
    pub fn new(config: SequencerConfig) -> Result<Self, ConfigError> {
        if config.max_request_messages == 0 {
            return Err(ConfigError::ZeroRequestMessages);
        }
        if config.max_gaps < 2 {
            return Err(ConfigError::TooFewGaps(config.max_gaps));
        }
        if config.backoff.factor == 0 {
            return Err(ConfigError::ZeroBackoff);
        }
        if config.max_gap == 0 {
            return Err(ConfigError::ZeroMaxGap);
        }
        if config.reorder_capacity_bytes > u32::MAX as usize
            || config.reorder_capacity_messages > 1 << 30
        {
            return Err(ConfigError::StoreTooLarge {
                bytes: config.reorder_capacity_bytes,
                messages: config.reorder_capacity_messages,
            });
        }
        Ok(Sequencer {
            nak_delay: ns(config.nak_delay),
            request_timeout: ns(config.request_timeout),
            max_retries: config.max_retries,
            backoff_factor: u64::from(config.backoff.factor),
            backoff_max: ns(config.backoff.max),
            max_outstanding: config.max_outstanding_requests,
            max_request: u64::from(config.max_request_messages),
            coalesce_within: u64::from(config.coalesce_within),
            max_gaps: config.max_gaps,
            late_join: config.late_join,
            max_gap: config.max_gap,
            jump_confirm: ns(config.jump_confirm),
            session: config.session,
            state: State::Waiting,
            expected: 0,
            highest: 0,
            end_seq: None,
            holes: VecDeque::with_capacity(config.max_gaps),
            inflight: Vec::with_capacity(config.max_outstanding_requests),
            store: ReorderStore::new(
                config.reorder_capacity_bytes,
                config.reorder_capacity_messages,
            ),
            // Events are drained by the caller after each call; this covers any burst.
            events: VecDeque::with_capacity(config.max_gaps + 64),
            stats: SequencerStats::default(),
            anchor: None,
            line_at: 0,
            suspects: [Suspect::default(); SUSPECTS],
            suspects_len: 0,
            suspects_next: 0,
        })
    }

    /// The session followed (configured or learned), once known.
    pub fn session(&self) -> Option<Session> {
        self.session
    }

    /// Sequence number of the next message to deliver (0 before the first packet).
    pub fn next_seq(&self) -> u64 {
        self.expected
    }

    /// One past the highest sequence number known to exist.
    pub fn highest_seen(&self) -> u64 {
        self.highest
    }

    /// Messages missing now (being recovered or about to be declared lost).
    pub fn missing(&self) -> u64 {
        // Holes are disjoint ranges of `u64`: their sizes add up to less than `u64::MAX`.
        self.holes.iter().map(|h| h.end - h.first).sum()
    }

    /// Messages held in the reorder store, and their bytes.
    pub fn reorder_held(&self) -> (usize, usize) {
        (self.store.len(), self.store.bytes())
    }

    /// Whether the session has ended ([`Event::EndOfSession`] was queued).
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// The counters so far.
    pub fn stats(&self) -> SequencerStats {
        self.stats
    }

    /// The next event, if any. Poll until `None` after each call that handles input.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Handles one datagram received at `now` (nanoseconds on any monotonic clock) from
    /// `line`; hands the messages that are now in order to `deliver`.
    pub fn handle_packet(&mut self, now: u64, line: Line, bytes: &[u8], mut deliver: impl Deliver) {
        self.stats.packets += 1;
        let Ok(pkt) = Packet::parse(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        match self.session {
            Some(s) if s != pkt.session() => {
                self.stats.foreign_session += 1;
                return;
            }
            _ => {}
        }
        let seq = pkt.sequence_number();
        let count = pkt.message_count();
        if seq == 0 {
            self.stats.zero_sequence += 1;
            return;
        }
        let end = match count {
            HEARTBEAT_COUNT | END_OF_SESSION_COUNT => seq,
            n => match seq.checked_add(u64::from(n)) {
                Some(end) => end,
                None => {
                    // Its last message would pass u64::MAX.
                    self.stats.malformed += 1;
                    return;
                }
            },
        };
        let d = &mut deliver;
        match self.state {
            State::Waiting if line == Line::Recovery => {
                // An answer to nobody's request; the feed itself decides where we start.
                self.stats.duplicates += u64::from(pkt.messages_len());
                return;
            }
            State::Waiting => self.start(now, pkt.session(), seq, end),
            State::Ended => {
                self.stats.duplicates += u64::from(pkt.messages_len());
                return;
            }
            State::Running if self.anchor.is_some() => {
                if line == Line::Recovery {
                    // Nothing was requested yet: as before the start.
                    self.stats.duplicates += u64::from(pkt.messages_len());
                    return;
                }
                self.check_anchor(now, seq, end, d);
            }
            State::Running => {}
        }
        if line != Line::Recovery && seq <= self.highest.saturating_add(self.max_gap) {
            self.line_at = now;
        }
        match count {
            // "Not available" says nothing beyond what is known to exist.
            HEARTBEAT_COUNT if line == Line::Recovery => {
                self.not_available_below(seq.min(self.highest), d)
            }
            HEARTBEAT_COUNT => {
                self.stats.heartbeats += 1;
                if self.plausible(now, seq, end) {
                    self.note_highest(now, seq, d);
                }
            }
            END_OF_SESSION_COUNT => {
                if seq < self.highest {
                    // Messages beyond it exist: not the end of this session.
                    self.stats.forged_end_of_session += 1;
                } else if self.plausible(now, seq, end) {
                    self.note_highest(now, seq, d);
                    self.end_seq = Some(seq);
                }
            }
            count => self.data(now, &pkt, count, end, d),
        }
        self.check_end();
    }

    fn start(&mut self, now: u64, session: Session, seq: u64, end: u64) {
        self.session = Some(session);
        self.state = State::Running;
        self.line_at = now;
        self.events.push_back(Event::SessionStarted { session });
        let first = match self.late_join {
            LateJoin::LiveEdge => {
                // Tentative until corroborated (see `check_anchor`).
                self.anchor = Some(Anchor {
                    first: seq,
                    end,
                    at: now,
                });
                seq
            }
            LateJoin::FromSequence(n) => {
                // Sequence numbers start at 1.
                let n = n.max(1);
                if n > 1 {
                    self.events.push_back(Event::LateJoin { first_seq: n });
                }
                n
            }
        };
        self.expected = first;
        self.highest = first;
    }

    /// A packet `[seq, end)` while the live-edge anchor is tentative: a different packet near
    /// the anchor confirms it, one far from it (more than `max_gap`) replaces it.
    #[cold]
    fn check_anchor<D: Deliver>(&mut self, now: u64, seq: u64, end: u64, d: &mut D) {
        let Some(a) = self.anchor else {
            return;
        };
        if (seq, end) == (a.first, a.end) {
            return; // a copy (the other line) proves nothing
        }
        if seq >= a.first.saturating_sub(self.max_gap) && seq <= a.end.saturating_add(self.max_gap)
        {
            self.confirm_anchor(d);
            return;
        }
        // Nothing was delivered yet: forget what the anchor brought and start here.
        self.stats.anchors_replaced += 1;
        for q in self.expected..self.highest {
            self.store.remove(q);
        }
        self.end_seq = None;
        self.expected = seq;
        self.highest = seq;
        self.anchor = Some(Anchor {
            first: seq,
            end,
            at: now,
        });
    }

    /// When a tentative anchor stands for lack of contradiction: the NAK delay after it, if
    /// it holds messages or ends the session. A heartbeat (nothing to deliver) waits for a
    /// data packet to confirm or replace it, however long.
    fn anchor_deadline(&self) -> Option<u64> {
        let a = self.anchor?;
        (self.highest > self.expected || self.end_seq.is_some())
            .then(|| a.at.saturating_add(self.nak_delay))
    }

    /// The live-edge anchor stands: report the join and deliver what it brought.
    fn confirm_anchor<D: Deliver>(&mut self, d: &mut D) {
        let Some(a) = self.anchor.take() else {
            return;
        };
        self.stats.late_join = a.first.saturating_sub(1);
        if a.first > 1 {
            self.events
                .push_back(Event::LateJoin { first_seq: a.first });
        }
        self.drain(d);
    }

    /// Whether a packet `[seq, end)` arriving at `now` may be acted on: it reaches at most
    /// `max_gap` beyond the highest sequence number known, or it is corroborated. An
    /// implausible one is remembered and counted.
    #[inline]
    fn plausible(&mut self, now: u64, seq: u64, end: u64) -> bool {
        if seq <= self.highest.saturating_add(self.max_gap) {
            return true;
        }
        self.corroborated(now, seq, end)
    }

    /// Whether the packet `[seq, end)` corroborates a jump: the current sequence has been
    /// silent for `jump_confirm`, and a different packet within `max_gap` of this one came
    /// after the current sequence's last packet (a copy of the same packet proves nothing).
    /// A feed that really jumped goes on from the jump and nowhere else; forged packets,
    /// however consistent, do not silence the real feed. If not, the packet becomes a
    /// suspect itself.
    #[cold]
    fn corroborated(&mut self, now: u64, seq: u64, end: u64) -> bool {
        let g = self.max_gap;
        let silent = now.saturating_sub(self.line_at) >= self.jump_confirm;
        let line_at = self.line_at;
        let near = silent
            && self.suspects[..self.suspects_len].iter().any(|p| {
                p.at >= line_at
                    && (p.first, p.end) != (seq, end)
                    && seq >= p.first.saturating_sub(g)
                    && seq <= p.end.saturating_add(g)
            });
        if near {
            self.stats.jumps_corroborated += 1;
            self.suspects_len = 0;
            self.suspects_next = 0;
            return true;
        }
        self.stats.implausible_jumps += 1;
        self.suspects[self.suspects_next] = Suspect {
            first: seq,
            end,
            at: now,
        };
        self.suspects_next = (self.suspects_next + 1) % SUSPECTS;
        self.suspects_len = (self.suspects_len + 1).min(SUSPECTS);
        false
    }

    fn data<D: Deliver>(&mut self, now: u64, pkt: &Packet<'_>, count: u16, end: u64, d: &mut D) {
        let seq0 = pkt.sequence_number();
        if end <= self.expected {
            // The other line's copy, or a retransmission already delivered: skip the walk.
            self.stats.duplicates += u64::from(count);
            return;
        }
        if !self.plausible(now, seq0, end) {
            return;
        }
        let mut run = Run::default();
        let mut held = self.anchor.is_some();
        // Sequence numbers `seq0 .. end`: no overflow.
        for (s, item) in (seq0..end).zip(pkt.messages()) {
            let Ok(msg) = item else {
                self.stats.malformed += 1;
                break;
            };
            if held {
                held = self.hold(s, msg, d);
                if held {
                    continue;
                }
            }
            self.message(now, s, msg, d, &mut run);
        }
        self.flush_run(&mut run);
    }

    /// A message of the tentative anchor: held in the store, not delivered (a copy of one
    /// held is a duplicate). Returns `false` when the store cannot hold it: the anchor is
    /// then taken as it is, and `s` is for [`message`](Self::message).
    #[cold]
    fn hold<D: Deliver>(&mut self, s: u64, msg: &[u8], d: &mut D) -> bool {
        if s < self.highest {
            self.stats.duplicates += 1;
            return true;
        }
        if s == self.highest && self.store.insert(self.expected, s, msg) {
            self.highest = s + 1;
            return true;
        }
        self.confirm_anchor(d);
        false
    }

    #[inline]
    fn message<D: Deliver>(&mut self, now: u64, s: u64, msg: &[u8], d: &mut D, run: &mut Run) {
        if s == self.expected && self.expected == self.highest {
            // The steady state: nothing missing, nothing held.
            d.message(s, msg);
            self.expected += 1;
            self.highest += 1;
            self.stats.messages += 1;
            return;
        }
        if s < self.expected || (s < self.highest && self.store.contains(s)) {
            self.stats.duplicates += 1;
            return;
        }
        if s >= self.highest {
            if s > self.highest {
                let h = self.highest;
                self.add_hole(now, h, s, d);
            }
            self.highest = s + 1;
        } else if !self.fill(now, s, d, run) {
            return;
        }
        if s == self.expected {
            self.deliver_in_order(s, msg, d);
        } else {
            self.store_ahead(s, msg, d);
        }
    }

    /// Delivers `s == expected` from the datagram, then whatever the store holds after it.
    #[inline]
    fn deliver_in_order<D: Deliver>(&mut self, s: u64, msg: &[u8], d: &mut D) {
        d.message(s, msg);
        self.expected = s + 1;
        self.stats.messages += 1;
        self.drain(d);
    }

    /// Holds message `s` (ahead of `expected`, already accounted for in the holes) until the
    /// gap before it is resolved; makes room by skipping the oldest gap when the store is full.
    fn store_ahead<D: Deliver>(&mut self, s: u64, msg: &[u8], d: &mut D) {
        loop {
            if s == self.expected {
                self.deliver_in_order(s, msg, d);
                return;
            }
            if self.store.insert(self.expected, s, msg) {
                self.stats.out_of_order += 1;
                return;
            }
            self.stats.overflows += 1;
            self.skip_front(d);
            self.drain(d);
        }
    }

    /// Records the missing range `[first, end)` beyond every known one.
    fn add_hole<D: Deliver>(&mut self, now: u64, first: u64, end: u64, d: &mut D) {
        if let Some(last) = self.holes.back_mut()
            && last.end == first
            && !last.requested
            && !last.inflight
            && !last.abandoned
        {
            // The same loss continuing (a tail gap growing): one range.
            last.end = end;
            return;
        }
        while self.holes.len() >= self.max_gaps {
            self.stats.overflows += 1;
            self.skip_front(d);
            self.drain(d);
        }
        self.stats.gaps_detected += 1;
        self.holes.push_back(Hole::new(first, end, now));
    }

    /// A heartbeat or end of session: `next` is one past the last message sent.
    fn note_highest<D: Deliver>(&mut self, now: u64, next: u64, d: &mut D) {
        if next > self.highest {
            let h = self.highest;
            self.add_hole(now, h, next, d);
            self.highest = next;
        }
    }

    /// Removes `s` from the hole holding it. Returns `false` (the message is dropped and stays
    /// missing) only when a split is needed and the table of holes is full with `s` in the
    /// oldest hole, which cannot be skipped without skipping `s` itself.
    fn fill<D: Deliver>(&mut self, now: u64, s: u64, d: &mut D, run: &mut Run) -> bool {
        let i = self.holes.partition_point(|h| h.end <= s);
        let Some(&h) = self.holes.get(i) else {
            debug_assert!(false, "{s} is neither held nor missing");
            self.stats.duplicates += 1;
            return false;
        };
        debug_assert!(h.first <= s && s < h.end, "{s} not in {h:?}");
        let i = if h.first < s && s + 1 < h.end && self.holes.len() >= self.max_gaps {
            // A split needs a slot: skip older holes, never the one holding `s`.
            let mut i = i;
            while self.holes.len() >= self.max_gaps {
                if i == 0 {
                    self.stats.overflows += 1;
                    return false;
                }
                self.stats.overflows += 1;
                self.skip_front(d);
                self.drain(d);
                if s < self.expected {
                    // Delivery went on through the given-up range holding `s`.
                    self.stats.duplicates += 1;
                    return false;
                }
                i = self.holes.partition_point(|h| h.end <= s);
            }
            i
        } else {
            i
        };
        let h = self.holes[i];
        if h.requested {
            self.stats.recovered += 1;
            let latency = now.saturating_sub(h.detected_at);
            if run.count > 0 && run.first + run.count == s && run.latency == latency {
                run.count += 1;
            } else {
                self.flush_run(run);
                *run = Run {
                    first: s,
                    count: 1,
                    latency,
                };
            }
        }
        match (h.first == s, h.end == s + 1) {
            (true, true) => {
                self.holes.remove(i);
            }
            (true, false) => self.holes[i].first = s + 1,
            (false, true) => self.holes[i].end = s,
            (false, false) => {
                self.holes[i].end = s;
                self.holes.insert(i + 1, Hole { first: s + 1, ..h });
            }
        }
        true
    }

    fn flush_run(&mut self, run: &mut Run) {
        if run.count > 0 {
            self.events.push_back(Event::Recovered {
                first: run.first,
                count: run.count,
                latency_ns: run.latency,
            });
            run.count = 0;
        }
    }

    /// Gives up the oldest hole (it starts at `expected`), merged with abandoned holes right
    /// after it, and moves delivery past it.
    fn skip_front<D: Deliver>(&mut self, d: &mut D) {
        let Some(h) = self.holes.pop_front() else {
            return;
        };
        debug_assert_eq!(h.first, self.expected);
        let mut end = h.end;
        while let Some(next) = self.holes.front() {
            if next.first != end || !next.abandoned {
                break;
            }
            end = next.end;
            self.holes.pop_front();
        }
        let count = end - h.first;
        d.gap(h.first, count);
        self.events.push_back(Event::Gap {
            first: h.first,
            count,
            recoverable: false,
        });
        self.stats.unrecoverable += count;
        self.expected = end;
    }

    /// Delivers held messages from `expected` on and skips abandoned holes reached.
    fn drain<D: Deliver>(&mut self, d: &mut D) {
        loop {
            while let Some(msg) = self.store.get(self.expected) {
                d.message(self.expected, msg);
                self.store.remove(self.expected);
                self.expected += 1;
                self.stats.messages += 1;
            }
            match self.holes.front() {
                Some(h) if h.first == self.expected && h.abandoned => self.skip_front(d),
                _ => break,
            }
        }
    }

    /// The server no longer has messages below `first_available`.
    fn not_available_below<D: Deliver>(&mut self, first_available: u64, d: &mut D) {
        self.stats.not_available += 1;
        let mut i = 0;
        while i < self.holes.len() && self.holes[i].first < first_available {
            let h = self.holes[i];
            if h.end > first_available && self.holes.len() < self.max_gaps {
                // Split: the part still available stays as it is.
                self.holes[i].end = first_available;
                self.holes.insert(
                    i + 1,
                    Hole {
                        first: first_available,
                        ..h
                    },
                );
            }
            // (With no slot to split, the whole hole goes: conservative, and bounded.)
            self.holes[i].abandoned = true;
            self.holes[i].inflight = false;
            i += 1;
        }
        self.drain(d);
    }

    fn check_end(&mut self) {
        if self.state == State::Running
            && self.anchor.is_none()
            && let Some(end) = self.end_seq
            && self.expected >= end
        {
            self.state = State::Ended;
            self.holes.clear();
            self.inflight.clear();
            self.events.push_back(Event::EndOfSession { next_seq: end });
        }
    }

    /// How long the `attempt`-th send of a request waits for its answer.
    fn timeout(&self, attempt: u32) -> u64 {
        let mut t = self.request_timeout;
        for _ in 1..attempt {
            t = t.saturating_mul(self.backoff_factor);
            if t >= self.backoff_max {
                break;
            }
        }
        t.min(self.backoff_max.max(self.request_timeout))
    }

    /// Drops requests whose holes are all filled or given up, and shrinks the others to what
    /// is still missing.
    fn retire_completed(&mut self) {
        let holes = &self.holes;
        self.inflight.retain_mut(|r| {
            let start = holes.partition_point(|h| h.end <= r.first);
            let mut first = None;
            let mut end = r.first;
            for h in holes.range(start..) {
                if h.first >= r.end {
                    break;
                }
                if h.inflight {
                    first.get_or_insert(h.first);
                    end = h.end;
                }
            }
            match first {
                Some(first) => {
                    r.first = first;
                    r.end = end;
                    true
                }
                None => false,
            }
        });
    }

    /// The next re-request to send, if one is due at `now`: a retry of a request that timed
    /// out, or a new request for missing messages older than the NAK delay (coalescing
    /// neighbours, at most `max_request_messages`, at most `max_outstanding_requests` in
    /// flight). Call until `None`.
    pub fn poll_request(&mut self, now: u64) -> Option<RequestPacket> {
        let session = self.session?;
        if self.state != State::Running || self.max_outstanding == 0 {
            return None;
        }
        self.retire_completed();
        let max_sends = self.max_retries.saturating_add(1);
        if let Some(i) = self
            .inflight
            .iter()
            .position(|r| r.deadline <= now && r.attempts < max_sends)
        {
            let attempts = self.inflight[i].attempts + 1;
            let deadline = now.saturating_add(self.timeout(attempts));
            let r = &mut self.inflight[i];
            r.attempts = attempts;
            r.deadline = deadline;
            self.stats.requests_sent += 1;
            return Some(RequestPacket {
                session,
                sequence_number: r.first,
                message_count: (r.end - r.first) as u16,
            });
        }
        if self.inflight.len() >= self.max_outstanding {
            return None;
        }
        let due = |h: &Hole| {
            !h.inflight && !h.abandoned && h.detected_at.saturating_add(self.nak_delay) <= now
        };
        let i = self.holes.iter().position(due)?;
        let first = self.holes[i].first;
        // Below: `first + max_request < end`, so neither sum overflows.
        if self.holes[i].end - first > self.max_request {
            if self.holes.len() >= self.max_gaps {
                // No slot to split: wait until room is made (see `handle_timeout`).
                return None;
            }
            let h = self.holes[i];
            self.holes[i].end = first + self.max_request;
            self.holes.insert(
                i + 1,
                Hole {
                    first: first + self.max_request,
                    ..h
                },
            );
        }
        let mut end;
        let mut j = i;
        loop {
            let h = &mut self.holes[j];
            h.inflight = true;
            if !h.requested {
                h.requested = true;
                self.events.push_back(Event::Gap {
                    first: h.first,
                    count: h.end - h.first,
                    recoverable: true,
                });
            }
            end = h.end;
            j += 1;
            match self.holes.get(j) {
                Some(n)
                    if n.first - end <= self.coalesce_within
                        && n.end - first <= self.max_request
                        && due(n) => {}
                _ => break,
            }
        }
        let deadline = now.saturating_add(self.timeout(1));
        self.inflight.push(Inflight {
            first,
            end,
            attempts: 1,
            deadline,
        });
        self.stats.requests_sent += 1;
        Some(RequestPacket {
            session,
            sequence_number: first,
            message_count: (end - first) as u16,
        })
    }

    /// Handles timers due at `now`: requests out of retries give up their messages (and with
    /// no retransmission server, missing messages older than the NAK delay are given up);
    /// delivery then continues past them into `deliver`.
    pub fn handle_timeout(&mut self, now: u64, mut deliver: impl Deliver) {
        if self.state != State::Running {
            return;
        }
        let d = &mut deliver;
        if let Some(at) = self.anchor_deadline() {
            if at > now {
                return; // nothing else is pending while the anchor is tentative
            }
            // Nothing contradicted the first packet in time: it stands.
            self.confirm_anchor(d);
        }
        self.retire_completed();
        let max_sends = self.max_retries.saturating_add(1);
        let mut k = 0;
        while k < self.inflight.len() {
            let r = self.inflight[k];
            if r.deadline <= now && r.attempts >= max_sends {
                let start = self.holes.partition_point(|h| h.end <= r.first);
                for h in self.holes.range_mut(start..) {
                    if h.first >= r.end {
                        break;
                    }
                    if h.inflight {
                        h.inflight = false;
                        h.abandoned = true;
                    }
                }
                self.inflight.swap_remove(k);
            } else {
                k += 1;
            }
        }
        if self.max_outstanding == 0 {
            for h in self.holes.iter_mut() {
                if h.detected_at.saturating_add(self.nak_delay) <= now {
                    h.abandoned = true;
                }
            }
        }
        if self.holes.len() >= self.max_gaps
            && self.inflight.len() < self.max_outstanding
            && self
                .holes
                .iter()
                .find(|h| !h.inflight && !h.abandoned)
                .is_some_and(|h| {
                    h.end - h.first > self.max_request
                        && h.detected_at.saturating_add(self.nak_delay) <= now
                })
        {
            // The next request needs a split and the table is full: make room.
            self.stats.overflows += 1;
            self.skip_front(d);
        }
        self.drain(d);
        self.check_end();
    }

    /// When [`handle_timeout`](Self::handle_timeout) or [`poll_request`](Self::poll_request)
    /// next has work (nanoseconds, the clock of `now`); `None` when nothing is pending.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.state != State::Running {
            return None;
        }
        let mut next: Option<u64> = None;
        let mut at = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.anchor_deadline() {
            at(t);
        }
        for r in &self.inflight {
            at(r.deadline);
        }
        if (self.inflight.len() < self.max_outstanding || self.max_outstanding == 0)
            && let Some(h) = self.holes.iter().find(|h| !h.inflight && !h.abandoned)
        {
            at(h.detected_at.saturating_add(self.nak_delay));
        }
        next
    }
}
