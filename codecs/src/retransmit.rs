//! The MoldUDP64 retransmission side, sans-IO: a bounded store of recently sent messages that
//! answers re-requests ([`RequestPacket`]) with downstream packets, rate limited per source.
//!
//! No sockets and no clock: the caller passes each request's bytes, its source and `now`, and
//! sends the packets handed to its callback. Every buffer is allocated at construction; a
//! request is answered without allocating.
//!
//! ```
//! use mdbus_codecs::moldudp64::{Packet, RequestPacket, Session};
//! use mdbus_codecs::retransmit::{RetransmitConfig, RetransmitStore};
//!
//! let session = Session(*b"000010059B");
//! let mut store = RetransmitStore::new(RetransmitConfig::new(session))?;
//! for m in [&b"one"[..], b"two", b"three"] {
//!     store.push(m)?; // sequence numbers 1, 2, 3
//! }
//! let mut request = [0u8; 20];
//! RequestPacket { session, sequence_number: 2, message_count: 2 }.encode(&mut request)?;
//! let source = "127.0.0.1:4000".parse()?;
//! let mut answers = Vec::new();
//! let reply = store.handle_request(0, source, &request, |pkt| answers.push(pkt.to_vec()))?;
//! assert_eq!((reply.packets, reply.messages), (1, 2));
//! let p = Packet::parse(&answers[0])?;
//! assert_eq!(p.sequence_number(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # "Not available"
//!
//! MoldUDP64 does not say how a server answers a request for messages it no longer has; many
//! simply stay silent, and the client retries until it gives up. This server answers at once
//! instead: when the request starts below the oldest message held, the first packet of the
//! reply is heartbeat-shaped (message count 0) and carries the first sequence number still
//! available; the messages from there on (within the request) follow as usual. A
//! [`Sequencer`](crate::sequencer::Sequencer) reading it on
//! [`Line::Recovery`](crate::sequencer::Line::Recovery) turns the messages below that number
//! into an unrecoverable gap immediately. A request for messages not sent yet gets no answer
//! (they are still on their way).

use std::net::SocketAddr;

use crate::moldudp64::{
    HEADER_LEN, MoldError, PacketBuilder, RequestPacket, Session, encode_heartbeat,
};

/// Configuration of a [`RetransmitStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitConfig {
    /// The session whose messages are stored; requests for another are refused.
    pub session: Session,
    /// Sequence number of the first message pushed.
    pub first_seq: u64,
    /// Most messages held (the oldest are evicted first).
    pub capacity_messages: usize,
    /// Most message bytes held.
    pub capacity_bytes: usize,
    /// Largest reply datagram, header included (the path MTU less IP and UDP headers).
    pub max_packet_len: usize,
    /// Most messages sent in answer to one request.
    pub max_reply_messages: u16,
    /// Most packets sent in answer to one request.
    pub max_reply_packets: u16,
    /// Messages per second each source may be sent; 0: no limit.
    pub rate_messages_per_sec: u64,
    /// Messages a source may be sent at once (the bucket size).
    pub burst_messages: u64,
    /// Sources whose rate is tracked; beyond that the least recently seen is forgotten.
    pub max_sources: usize,
}

impl RetransmitConfig {
    /// Defaults for `session`: 1 Mi messages or 64 MiB, replies of at most 1,400-byte
    /// packets, 1,024 messages and 64 packets per request, 100,000 messages per second per
    /// source with bursts of 20,000, 256 sources.
    pub fn new(session: Session) -> Self {
        RetransmitConfig {
            session,
            first_seq: 1,
            capacity_messages: 1 << 20,
            capacity_bytes: 64 << 20,
            max_packet_len: 1400,
            max_reply_messages: 1024,
            max_reply_packets: 64,
            rate_messages_per_sec: 100_000,
            burst_messages: 20_000,
            max_sources: 256,
        }
    }
}

/// A [`RetransmitConfig`] that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RetransmitConfigError {
    /// A capacity is 0, or the bytes exceed 4 GiB.
    #[error("retransmission store capacity must be 1.. messages and 1..=4 GiB")]
    Capacity,
    /// `max_packet_len` cannot hold the header and one 2-byte block length.
    #[error("max_packet_len {0} is below the minimum of 22 bytes")]
    PacketLen(usize),
    /// `max_reply_messages`, `max_reply_packets` or `max_sources` is 0.
    #[error("reply limits and max_sources must be at least 1")]
    Limits,
}

/// A message the store cannot take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The message is larger than the whole byte capacity.
    #[error("message of {len} bytes exceeds the store of {capacity} bytes")]
    TooLarge {
        /// Length of the message.
        len: usize,
        /// The store's byte capacity.
        capacity: usize,
    },
    /// The message cannot fit in one reply packet, so it could never be resent.
    #[error("message of {len} bytes cannot fit in a reply packet of {max_packet_len} bytes")]
    LongerThanPacket {
        /// Length of the message.
        len: usize,
        /// The configured packet limit.
        max_packet_len: usize,
    },
}

/// Why a request got no answer. Small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not a 20-byte request.
    #[error("malformed re-request: {0}")]
    Malformed(MoldError),
    /// A request for another session.
    #[error("re-request for session {0}, not ours")]
    WrongSession(Session),
    /// A request for 0 messages.
    #[error("re-request for 0 messages")]
    Empty,
    /// The source has used up its rate.
    #[error("re-request refused: rate limit of the source reached")]
    RateLimited,
}

/// What was sent in answer to one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// Packets handed to the callback, the "not available" packet included.
    pub packets: u16,
    /// Messages resent.
    pub messages: u64,
    /// Set when the request reached below the oldest message held: the first sequence number
    /// still available, as announced in the "not available" packet.
    pub not_available_below: Option<u64>,
    /// Messages asked for but not sent: not yet sent by the feed, or beyond the reply limits
    /// or the source's rate (the client asks again for those).
    pub truncated: u64,
}

/// Counters of a [`RetransmitStore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetransmitStats {
    /// Messages pushed.
    pub pushed: u64,
    /// Messages evicted to make room.
    pub evicted: u64,
    /// Requests handled, refused ones included.
    pub requests: u64,
    /// Packets sent in answers.
    pub packets_sent: u64,
    /// Messages resent.
    pub messages_sent: u64,
    /// "Not available" answers.
    pub not_available: u64,
    /// Requests refused by the rate limit.
    pub rate_limited: u64,
    /// Requests that were malformed, empty, or for another session.
    pub bad_requests: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    off: u32,
    len: u16,
}

/// Per-source token bucket; tokens are counted in message-nanoseconds so refills stay
/// integral.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    source: SocketAddr,
    tokens: u64,
    last: u64,
}

const NS: u64 = 1_000_000_000;

/// A bounded store of recently sent messages that answers MoldUDP64 re-requests. See the
/// [module docs](self).
#[derive(Debug)]
pub struct RetransmitStore {
    cfg: RetransmitConfig,
    data: Box<[u8]>,
    /// Ring of entries, the oldest at `head`.
    entries: Box<[Entry]>,
    head: usize,
    count: usize,
    /// Sequence number of the oldest message held.
    first: u64,
    /// Next write offset in `data`.
    wpos: usize,
    /// The bytes wrap: held data is `[oldest, cap) + [0, wpos)`.
    wrapped: bool,
    bytes: usize,
    packet: Box<[u8]>,
    buckets: Vec<Bucket>,
    stats: RetransmitStats,
}

impl RetransmitStore {
    /// A store with every buffer allocated now.
    pub fn new(cfg: RetransmitConfig) -> Result<Self, RetransmitConfigError> {
        if cfg.capacity_messages == 0 || cfg.capacity_bytes == 0 || cfg.capacity_bytes > 1 << 32 {
            return Err(RetransmitConfigError::Capacity);
        }
        if cfg.max_packet_len < HEADER_LEN + 2 {
            return Err(RetransmitConfigError::PacketLen(cfg.max_packet_len));
        }
        if cfg.max_reply_messages == 0 || cfg.max_reply_packets == 0 || cfg.max_sources == 0 {
            return Err(RetransmitConfigError::Limits);
        }
        Ok(RetransmitStore {
            data: vec![0; cfg.capacity_bytes].into_boxed_slice(),
            entries: vec![Entry { off: 0, len: 0 }; cfg.capacity_messages].into_boxed_slice(),
            head: 0,
            count: 0,
            first: cfg.first_seq,
            wpos: 0,
            wrapped: false,
            bytes: 0,
            packet: vec![0; cfg.max_packet_len].into_boxed_slice(),
            buckets: Vec::with_capacity(cfg.max_sources),
            stats: RetransmitStats::default(),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RetransmitConfig {
        &self.cfg
    }

    /// Sequence number the next pushed message gets.
    pub fn next_seq(&self) -> u64 {
        self.first + self.count as u64
    }

    /// The oldest sequence number still held (equals [`next_seq`](Self::next_seq) when empty).
    pub fn first_available(&self) -> u64 {
        self.first
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The counters so far.
    pub fn stats(&self) -> RetransmitStats {
        self.stats
    }

    /// Forgets every message held and continues with `session`, whose first message will be
    /// `first_seq`; the per-source rate limits are kept. Allocates nothing: a sender that
    /// starts a new session (or skips sequence numbers) reuses its store.
    pub fn restart(&mut self, session: Session, first_seq: u64) {
        self.cfg.session = session;
        self.cfg.first_seq = first_seq;
        self.head = 0;
        self.count = 0;
        self.first = first_seq;
        self.wpos = 0;
        self.wrapped = false;
        self.bytes = 0;
    }

    /// The message `seq`, if still held.
    pub fn get(&self, seq: u64) -> Option<&[u8]> {
        let k = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        if k >= self.count {
            return None;
        }
        let e = self.entries[(self.head + k) % self.entries.len()];
        let off = e.off as usize;
        Some(&self.data[off..off + usize::from(e.len)])
    }

    fn evict_oldest(&mut self) {
        let e = self.entries[self.head];
        self.head = (self.head + 1) % self.entries.len();
        self.count -= 1;
        self.first += 1;
        self.bytes -= usize::from(e.len);
        self.stats.evicted += 1;
        if self.count == 0 {
            self.wpos = 0;
            self.wrapped = false;
        } else if self.entries[self.head].off < e.off {
            // The oldest is now in the low part: the held bytes no longer wrap.
            self.wrapped = false;
        }
    }

    /// Where `len` bytes fit without evicting, if they do.
    fn place(&self, len: usize) -> Option<usize> {
        let cap = self.data.len();
        if self.count == 0 {
            return (len <= cap).then_some(0);
        }
        let oldest = self.entries[self.head].off as usize;
        if self.wrapped {
            (oldest - self.wpos >= len).then_some(self.wpos)
        } else if cap - self.wpos >= len {
            Some(self.wpos)
        } else {
            (len <= oldest).then_some(0)
        }
    }

    /// Stores the next message sent on the feed (evicting the oldest as needed); returns its
    /// sequence number.
    pub fn push(&mut self, msg: &[u8]) -> Result<u64, PushError> {
        if msg.len() > self.data.len() {
            return Err(PushError::TooLarge {
                len: msg.len(),
                capacity: self.data.len(),
            });
        }
        if msg.len() + 2 + HEADER_LEN > self.cfg.max_packet_len {
            return Err(PushError::LongerThanPacket {
                len: msg.len(),
                max_packet_len: self.cfg.max_packet_len,
            });
        }
        if self.count == self.entries.len() {
            self.evict_oldest();
        }
        let off = loop {
            match self.place(msg.len()) {
                Some(off) => break off,
                None => self.evict_oldest(),
            }
        };
        if self.count != 0 && off < self.wpos {
            self.wrapped = true;
        }
        self.data[off..off + msg.len()].copy_from_slice(msg);
        self.wpos = off + msg.len();
        let slot = (self.head + self.count) % self.entries.len();
        // Fits: `capacity_bytes <= 4 GiB` and a message fits in a packet (`< 64 KiB`).
        self.entries[slot] = Entry {
            off: off as u32,
            len: msg.len() as u16,
        };
        let seq = self.next_seq();
        self.count += 1;
        self.bytes += msg.len();
        self.stats.pushed += 1;
        Ok(seq)
    }

    /// Takes up to `want` tokens from `source`'s bucket at `now`; returns how many.
    fn take_tokens(&mut self, now: u64, source: SocketAddr, want: u64) -> u64 {
        let rate = self.cfg.rate_messages_per_sec;
        if rate == 0 {
            return want;
        }
        let cap = self.cfg.burst_messages.max(1).saturating_mul(NS);
        let i = match self.buckets.iter().position(|b| b.source == source) {
            Some(i) => i,
            None => {
                if self.buckets.len() == self.cfg.max_sources {
                    // Forget the least recently seen source.
                    let lru = (0..self.buckets.len())
                        .min_by_key(|&i| self.buckets[i].last)
                        .unwrap_or(0);
                    self.buckets.swap_remove(lru);
                }
                self.buckets.push(Bucket {
                    source,
                    tokens: cap,
                    last: now,
                });
                self.buckets.len() - 1
            }
        };
        let b = &mut self.buckets[i];
        let elapsed = now.saturating_sub(b.last);
        b.tokens = b
            .tokens
            .saturating_add(elapsed.saturating_mul(rate))
            .min(cap);
        b.last = b.last.max(now);
        let got = (b.tokens / NS).min(want);
        b.tokens -= got * NS;
        got
    }

    /// Answers one re-request from `source` received at `now` (nanoseconds, any monotonic
    /// clock): hands each reply packet to `send`, in order. See the [module docs](self) for
    /// the "not available" answer.
    pub fn handle_request(
        &mut self,
        now: u64,
        source: SocketAddr,
        request: &[u8],
        mut send: impl FnMut(&[u8]),
    ) -> Result<Reply, RequestError> {
        self.stats.requests += 1;
        let req = match RequestPacket::decode(request) {
            Ok(r) => r,
            Err(e) => {
                self.stats.bad_requests += 1;
                return Err(RequestError::Malformed(e));
            }
        };
        if req.session != self.cfg.session {
            self.stats.bad_requests += 1;
            return Err(RequestError::WrongSession(req.session));
        }
        if req.message_count == 0 {
            self.stats.bad_requests += 1;
            return Err(RequestError::Empty);
        }
        let asked_end = req
            .sequence_number
            .saturating_add(u64::from(req.message_count));
        // Messages this answer could carry, before the rate limit.
        let from = req.sequence_number.max(self.first);
        let upto = asked_end
            .min(self.next_seq())
            .min(from.saturating_add(u64::from(self.cfg.max_reply_messages)));
        let serve = upto.saturating_sub(from);
        let below = req.sequence_number < self.first;
        if serve == 0 && !below {
            // Nothing sent yet in that range: no answer, and no token spent.
            return Ok(Reply {
                truncated: asked_end - from,
                ..Reply::default()
            });
        }
        // A "not available" answer costs one token, like any answer.
        let granted = self.take_tokens(now, source, serve.max(1));
        if granted == 0 {
            self.stats.rate_limited += 1;
            return Err(RequestError::RateLimited);
        }
        let mut reply = Reply::default();
        if below {
            let session = self.cfg.session;
            let first = self.first;
            // The packet buffer holds at least a header (checked at construction).
            if let Ok(n) = encode_heartbeat(&mut self.packet, session, first) {
                send(&self.packet[..n]);
                reply.packets += 1;
                reply.not_available_below = Some(first);
                self.stats.not_available += 1;
            }
        }
        let end = from + serve.min(granted);
        let mut seq = from;
        while seq < end && reply.packets < self.cfg.max_reply_packets {
            let n = self.build_packet(seq, end);
            send(&self.packet[..n.len]);
            reply.packets += 1;
            reply.messages += n.messages;
            seq += n.messages;
        }
        reply.truncated =
            asked_end.saturating_sub(req.sequence_number.max(self.first)) - reply.messages;
        self.stats.packets_sent += u64::from(reply.packets);
        self.stats.messages_sent += reply.messages;
        Ok(reply)
    }

    /// Builds one packet of messages `seq..` (at least one, at most up to `end`) into the
    /// packet buffer.
    fn build_packet(&mut self, seq: u64, end: u64) -> Built {
        let RetransmitStore {
            cfg,
            data,
            entries,
            head,
            first,
            packet,
            ..
        } = self;
        let mut messages = 0;
        let len = {
            let Ok(mut b) = PacketBuilder::new(packet, cfg.session, seq) else {
                return Built {
                    len: 0,
                    messages: 0,
                };
            };
            let mut s = seq;
            while s < end {
                let e = entries[(*head + (s - *first) as usize) % entries.len()];
                let off = e.off as usize;
                if b.push(&data[off..off + usize::from(e.len)]).is_err() {
                    break; // the packet is full; `push` checked every message fits an empty one
                }
                messages += 1;
                s += 1;
            }
            b.finish()
        };
        Built { len, messages }
    }
}

struct Built {
    len: usize,
    messages: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moldudp64::Packet;

    const S: Session = Session(*b"SESSION001");

    fn src(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn request(seq: u64, count: u16) -> [u8; 20] {
        let mut b = [0u8; 20];
        RequestPacket {
            session: S,
            sequence_number: seq,
            message_count: count,
        }
        .encode(&mut b)
        .unwrap();
        b
    }

    fn answer(store: &mut RetransmitStore, now: u64, seq: u64, count: u16) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        store
            .handle_request(now, src(1), &request(seq, count), |p| out.push(p.to_vec()))
            .unwrap();
        out
    }

    /// (sequence number, message count, messages) of each packet.
    fn decode(pkts: &[Vec<u8>]) -> Vec<(u64, u16, Vec<Vec<u8>>)> {
        pkts.iter()
            .map(|p| {
                let p = Packet::parse(p).unwrap();
                let msgs = p.messages().map(|m| m.unwrap().to_vec()).collect();
                (p.sequence_number(), p.message_count(), msgs)
            })
            .collect()
    }

    fn msg(seq: u64) -> Vec<u8> {
        format!("message {seq}").into_bytes()
    }

    fn cfg() -> RetransmitConfig {
        RetransmitConfig {
            rate_messages_per_sec: 0,
            ..RetransmitConfig::new(S)
        }
    }

    #[test]
    fn restart_forgets_the_old_session() {
        let mut store = RetransmitStore::new(cfg()).unwrap();
        for s in 1..=5 {
            store.push(&msg(s)).unwrap();
        }
        let next = Session(*b"SESSION002");
        store.restart(next, 100);
        assert!(store.is_empty());
        assert_eq!((store.first_available(), store.next_seq()), (100, 100));
        assert_eq!(store.get(3), None);
        // Requests of the old session are refused, the new one is served from 100 on.
        let mut sink = |_: &[u8]| {};
        assert_eq!(
            store.handle_request(0, src(1), &request(1, 1), &mut sink),
            Err(RequestError::WrongSession(S))
        );
        assert_eq!(store.push(&msg(100)).unwrap(), 100);
        assert_eq!(store.get(100), Some(&msg(100)[..]));
        let mut req = [0u8; 20];
        RequestPacket {
            session: next,
            sequence_number: 100,
            message_count: 1,
        }
        .encode(&mut req)
        .unwrap();
        let mut out = Vec::new();
        let reply = store
            .handle_request(0, src(1), &req, |p| out.push(p.to_vec()))
            .unwrap();
        assert_eq!((reply.packets, reply.messages), (1, 1));
        assert_eq!(decode(&out)[0].2, vec![msg(100)]);
    }

    #[test]
    fn answers_from_the_store_in_packets() {
        let mut store = RetransmitStore::new(RetransmitConfig {
            max_packet_len: 20 + 3 * 12,
            ..cfg()
        })
        .unwrap();
        for s in 1..=20 {
            assert_eq!(store.push(&msg(s)).unwrap(), s);
        }
        // "message N" is 9 or 10 bytes: three blocks of at most 12 bytes per packet.
        let got = decode(&answer(&mut store, 0, 5, 7));
        assert_eq!(
            got.iter().map(|g| (g.0, g.1)).collect::<Vec<_>>(),
            [(5, 3), (8, 3), (11, 1)]
        );
        let all: Vec<Vec<u8>> = got.into_iter().flat_map(|g| g.2).collect();
        assert_eq!(all, (5..12).map(msg).collect::<Vec<_>>());
        assert_eq!(store.stats().messages_sent, 7);
    }

    #[test]
    fn reply_limits_and_future_messages() {
        let mut store = RetransmitStore::new(RetransmitConfig {
            max_reply_messages: 4,
            ..cfg()
        })
        .unwrap();
        for s in 1..=10 {
            store.push(&msg(s)).unwrap();
        }
        let mut n = 0;
        let r = store
            .handle_request(0, src(1), &request(2, 100), |_| n += 1)
            .unwrap();
        assert_eq!((r.packets, r.messages, r.truncated), (1, 4, 96));
        // Not sent yet: no answer at all.
        let r = store
            .handle_request(0, src(1), &request(11, 5), |_| panic!("nothing to send"))
            .unwrap();
        assert_eq!(
            r,
            Reply {
                truncated: 5,
                ..Reply::default()
            }
        );
        // Packets per request.
        let mut store = RetransmitStore::new(RetransmitConfig {
            max_reply_packets: 2,
            max_packet_len: 20 + 12,
            ..cfg()
        })
        .unwrap();
        for s in 1..=10 {
            store.push(&msg(s)).unwrap();
        }
        let got = decode(&answer(&mut store, 0, 1, 10));
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn evicts_by_count_and_bytes_and_says_not_available() {
        let mut store = RetransmitStore::new(RetransmitConfig {
            capacity_messages: 5,
            ..cfg()
        })
        .unwrap();
        for s in 1..=12 {
            store.push(&msg(s)).unwrap();
        }
        assert_eq!((store.first_available(), store.next_seq()), (8, 13));
        assert_eq!(store.get(7), None);
        assert_eq!(store.get(8), Some(&msg(8)[..]));
        let got = decode(&answer(&mut store, 0, 3, 7));
        // "Not available below 8", then 8 and 9.
        assert_eq!(got[0].0, 8);
        assert_eq!(got[0].1, 0, "heartbeat-shaped");
        assert_eq!(got[1].0, 8);
        assert_eq!(got[1].2, [msg(8), msg(9)]);
        // Entirely below: the notice alone.
        let got = decode(&answer(&mut store, 0, 1, 3));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1), (8, 0));
        assert_eq!(store.stats().not_available, 2);

        // Byte capacity: 25 bytes hold two 10-byte messages.
        let mut store = RetransmitStore::new(RetransmitConfig {
            capacity_bytes: 25,
            ..cfg()
        })
        .unwrap();
        for s in 10..=30 {
            store.push(&msg(s)).unwrap();
            assert!(store.len() <= 2);
            for q in store.first_available()..store.next_seq() {
                assert_eq!(store.get(q), Some(&msg(q + 9)[..]), "{q}");
            }
        }
        assert_eq!(
            store.push(&[0; 26]),
            Err(PushError::TooLarge {
                len: 26,
                capacity: 25
            })
        );
    }

    #[test]
    fn refuses_bad_requests() {
        let mut store = RetransmitStore::new(cfg()).unwrap();
        store.push(b"x").unwrap();
        let none = |_: &[u8]| panic!("no answer expected");
        assert!(matches!(
            store.handle_request(0, src(1), &[0; 19], none),
            Err(RequestError::Malformed(_))
        ));
        let mut other = request(1, 1);
        other[..10].copy_from_slice(b"OTHERSESSN");
        assert_eq!(
            store.handle_request(0, src(1), &other, none),
            Err(RequestError::WrongSession(Session(*b"OTHERSESSN")))
        );
        assert_eq!(
            store.handle_request(0, src(1), &request(1, 0), none),
            Err(RequestError::Empty)
        );
        assert_eq!(store.stats().bad_requests, 3);
    }

    #[test]
    fn rate_limits_each_source() {
        let mut store = RetransmitStore::new(RetransmitConfig {
            rate_messages_per_sec: 1000, // one per millisecond
            burst_messages: 10,
            max_sources: 2,
            ..RetransmitConfig::new(S)
        })
        .unwrap();
        for s in 1..=100 {
            store.push(&msg(s)).unwrap();
        }
        let ms = 1_000_000;
        let ask = |store: &mut RetransmitStore, now, port, count| {
            store.handle_request(now, src(port), &request(1, count), |_| {})
        };
        // The burst: 10 messages, then nothing until tokens come back.
        assert_eq!(ask(&mut store, 0, 1, 30).unwrap().messages, 10);
        assert_eq!(ask(&mut store, 0, 1, 30), Err(RequestError::RateLimited));
        // Another source has its own bucket.
        assert_eq!(ask(&mut store, 0, 2, 4).unwrap().messages, 4);
        // 3 ms later: 3 tokens.
        assert_eq!(ask(&mut store, 3 * ms, 1, 30).unwrap().messages, 3);
        // A third source evicts the least recently seen (source 2); it comes back full.
        assert_eq!(ask(&mut store, 3 * ms, 3, 1).unwrap().messages, 1);
        assert_eq!(ask(&mut store, 3 * ms, 2, 30).unwrap().messages, 10);
        assert_eq!(store.stats().rate_limited, 1);
        // A long idle period refills only up to the burst.
        assert_eq!(ask(&mut store, 10_000 * ms, 1, 30).unwrap().messages, 10);
    }

    #[test]
    fn config_is_checked() {
        let bad = [
            RetransmitConfig {
                capacity_messages: 0,
                ..cfg()
            },
            RetransmitConfig {
                max_packet_len: 21,
                ..cfg()
            },
            RetransmitConfig {
                max_reply_packets: 0,
                ..cfg()
            },
        ];
        for c in bad {
            assert!(RetransmitStore::new(c).is_err(), "{c:?}");
        }
        let mut store = RetransmitStore::new(RetransmitConfig {
            max_packet_len: 30,
            ..cfg()
        })
        .unwrap();
        assert!(matches!(
            store.push(&[0; 9]),
            Err(PushError::LongerThanPacket { .. })
        ));
        assert_eq!(store.push(&[0; 8]), Ok(1));
    }
}
