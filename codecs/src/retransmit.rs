//! The MoldUDP64 retransmission side, sans-IO: a bounded store of recently sent messages that
//! answers re-requests ([`RequestPacket`]) with downstream packets, rate limited per host and
//! in total.
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
//!
//! # Rate limits
//!
//! A 20-byte request can ask for a reply a thousand times its size, and its source address
//! is not verified: the server must not become an amplifier. Each host (an IPv4 address, or
//! an IPv6 /64; the port does not matter) has a token bucket of
//! [`burst_messages`](RetransmitConfig::burst_messages) refilled at
//! [`rate_messages_per_sec`](RetransmitConfig::rate_messages_per_sec), so a host flooding
//! requests, from any number of ports, gets one host's rate back however much it sends; and
//! all hosts together draw from one more bucket, [`total_rate_multiple`] times as large, so
//! many hosts together get a bounded rate too. The table of hosts has
//! [`max_sources`](RetransmitConfig::max_sources) entries: a host is forgotten only once its
//! bucket is full again (forgetting it then changes nothing), and while every entry is in use
//! new hosts share one more bucket.
//!
//! [`total_rate_multiple`]: RetransmitConfig::total_rate_multiple

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

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
    /// Messages per second each host (an IPv4 address or an IPv6 /64, any port) may be
    /// sent; 0: no limit at all.
    pub rate_messages_per_sec: u64,
    /// Messages a host may be sent at once (the bucket size).
    pub burst_messages: u64,
    /// Hosts whose rate is tracked at once; while all are in use, new hosts share one bucket.
    pub max_sources: usize,
    /// All hosts together may be sent this many hosts' worth: `rate_messages_per_sec` times
    /// this per second, `burst_messages` times this at once. At least 1.
    pub total_rate_multiple: u64,
}

impl RetransmitConfig {
    /// Defaults for `session`: 1 Mi messages or 64 MiB, replies of at most 1,400-byte
    /// packets, 1,024 messages and 64 packets per request, 100,000 messages per second per
    /// host with bursts of 20,000, 256 hosts tracked, four hosts' worth in total.
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
            total_rate_multiple: 4,
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
    /// `max_reply_messages`, `max_reply_packets`, `max_sources` or `total_rate_multiple` is 0.
    #[error("reply limits, max_sources and total_rate_multiple must be at least 1")]
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
    /// The next sequence number would be `u64::MAX`: a packet carrying it would end past the
    /// end of the sequence space.
    #[error("the sequence space is exhausted (next sequence number {next})")]
    SequenceExhausted {
        /// The sequence number the message would have had.
        next: u64,
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
    /// The source's host, or all hosts together, used up their rate.
    #[error("re-request refused: rate limit reached")]
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
    /// Requests of hosts beyond `max_sources` that shared the overflow bucket.
    pub untracked_sources: u64,
    /// Requests that were malformed, empty, or for another session.
    pub bad_requests: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    off: u32,
    len: u16,
}

/// A token bucket; tokens are counted in message-nanoseconds so refills stay integral.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u64,
    last: u64,
}

impl Bucket {
    /// Tokens at `now`, refilled at `rate` per second up to `cap` (the clock never goes back).
    fn refill(&mut self, now: u64, rate: u64, cap: u64) {
        let elapsed = now.saturating_sub(self.last);
        self.tokens = self
            .tokens
            .saturating_add(elapsed.saturating_mul(rate))
            .min(cap);
        self.last = self.last.max(now);
    }

    /// Whether it would be full at `now`.
    fn full_at(&self, now: u64, rate: u64, cap: u64) -> bool {
        let elapsed = now.saturating_sub(self.last);
        self.tokens.saturating_add(elapsed.saturating_mul(rate)) >= cap
    }
}

/// One host's bucket.
#[derive(Clone, Copy, Debug)]
struct HostBucket {
    host: IpAddr,
    bucket: Bucket,
}

/// The host a source belongs to: its IPv4 address (mapped ones included), or its IPv6 /64.
fn host_of(source: SocketAddr) -> IpAddr {
    match source.ip().to_canonical() {
        IpAddr::V6(a) => {
            let s = a.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
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
    /// Tracked hosts, at most `max_sources`.
    buckets: Vec<HostBucket>,
    /// Shared by hosts beyond `max_sources`.
    overflow: Bucket,
    /// Shared by all hosts.
    total: Bucket,
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
        if cfg.max_reply_messages == 0
            || cfg.max_reply_packets == 0
            || cfg.max_sources == 0
            || cfg.total_rate_multiple == 0
        {
            return Err(RetransmitConfigError::Limits);
        }
        let full = |burst: u64| Bucket {
            tokens: burst.max(1).saturating_mul(NS),
            last: 0,
        };
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
            overflow: full(cfg.burst_messages),
            total: full(cfg.burst_messages.saturating_mul(cfg.total_rate_multiple)),
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
        // `push` keeps it at most `u64::MAX`.
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
    /// sequence number, which is below `u64::MAX`.
    pub fn push(&mut self, msg: &[u8]) -> Result<u64, PushError> {
        let next = self.next_seq();
        if next == u64::MAX {
            return Err(PushError::SequenceExhausted { next });
        }
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

    /// Takes up to `want` tokens at `now` from the bucket of `source`'s host and from the
    /// total; returns how many.
    fn take_tokens(&mut self, now: u64, source: SocketAddr, want: u64) -> u64 {
        let rate = self.cfg.rate_messages_per_sec;
        if rate == 0 {
            return want;
        }
        let cap = self.cfg.burst_messages.max(1).saturating_mul(NS);
        let k = self.cfg.total_rate_multiple;
        self.total
            .refill(now, rate.saturating_mul(k), cap.saturating_mul(k));
        let host = host_of(source);
        let bucket = match self.buckets.iter().position(|b| b.host == host) {
            Some(i) => &mut self.buckets[i].bucket,
            None => {
                let fresh = HostBucket {
                    host,
                    bucket: Bucket {
                        tokens: cap,
                        last: now,
                    },
                };
                if self.buckets.len() < self.cfg.max_sources {
                    self.buckets.push(fresh);
                    let last = self.buckets.len() - 1;
                    &mut self.buckets[last].bucket
                } else if let Some(i) = (0..self.buckets.len())
                    .filter(|&i| self.buckets[i].bucket.full_at(now, rate, cap))
                    .min_by_key(|&i| self.buckets[i].bucket.last)
                {
                    // A full bucket is what a new one would be: forgetting it changes nothing.
                    self.buckets[i] = fresh;
                    &mut self.buckets[i].bucket
                } else {
                    self.stats.untracked_sources += 1;
                    &mut self.overflow
                }
            }
        };
        bucket.refill(now, rate, cap);
        let got = (bucket.tokens / NS).min(self.total.tokens / NS).min(want);
        bucket.tokens -= got * NS;
        self.total.tokens -= got * NS;
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
    fn rate_limits_each_host() {
        let mut store = RetransmitStore::new(RetransmitConfig {
            rate_messages_per_sec: 1000, // one per millisecond
            burst_messages: 10,
            max_sources: 3,
            ..RetransmitConfig::new(S)
        })
        .unwrap();
        for s in 1..=100 {
            store.push(&msg(s)).unwrap();
        }
        let ms = 1_000_000;
        let host = |h: u8| SocketAddr::from(([10, 0, 0, h], 4000));
        let ask = |store: &mut RetransmitStore, now, source, count| {
            store.handle_request(now, source, &request(1, count), |_| {})
        };
        // The burst: 10 messages, then nothing until tokens come back, from any port.
        assert_eq!(ask(&mut store, 0, host(1), 30).unwrap().messages, 10);
        assert_eq!(
            ask(&mut store, 0, host(1), 30),
            Err(RequestError::RateLimited)
        );
        assert_eq!(ask(&mut store, 0, src(7), 30).unwrap().messages, 10);
        assert_eq!(
            ask(&mut store, 0, src(8), 30),
            Err(RequestError::RateLimited)
        );
        // Another host has its own bucket.
        assert_eq!(ask(&mut store, 0, host(2), 4).unwrap().messages, 4);
        // 3 ms later: 3 tokens.
        assert_eq!(ask(&mut store, 3 * ms, host(1), 30).unwrap().messages, 3);
        // The table is full and no bucket in it is full: a third host uses the shared one.
        assert_eq!(ask(&mut store, 3 * ms, host(3), 30).unwrap().messages, 10);
        assert_eq!(
            ask(&mut store, 3 * ms, host(4), 30),
            Err(RequestError::RateLimited)
        );
        assert_eq!(store.stats().untracked_sources, 2);
        // Once host 2's bucket is full again it may be forgotten for a new host.
        assert_eq!(ask(&mut store, 20 * ms, host(5), 30).unwrap().messages, 10);
        assert_eq!(store.stats().untracked_sources, 2);
        assert_eq!(store.stats().rate_limited, 3);
        // A long idle period refills only up to the burst.
        assert_eq!(
            ask(&mut store, 10_000 * ms, host(1), 30).unwrap().messages,
            10
        );
    }

    /// Reply and request bytes (UDP payloads) of a flood of requests for 1,024 messages.
    #[derive(Default)]
    struct Flood {
        requests: u64,
        request_bytes: u64,
        reply_bytes: u64,
        messages: u64,
    }

    fn flood_store() -> RetransmitStore {
        let mut store = RetransmitStore::new(RetransmitConfig::new(S)).unwrap();
        for s in 1..=100_000u64 {
            // 30-byte messages, about an ITCH add order.
            let mut m = format!("{s:>30}").into_bytes();
            m.truncate(30);
            store.push(&m).unwrap();
        }
        store
    }

    fn ask(store: &mut RetransmitStore, f: &mut Flood, now: u64, source: SocketAddr) {
        let req = request(1 + f.requests % 90_000, 1024);
        f.requests += 1;
        f.request_bytes += req.len() as u64;
        let mut bytes = 0;
        if let Ok(r) = store.handle_request(now, source, &req, |p| bytes += p.len() as u64) {
            f.messages += r.messages;
        }
        f.reply_bytes += bytes;
    }

    #[test]
    fn one_host_on_many_ports_gets_one_hosts_rate() {
        let mut store = flood_store();
        let mut f = Flood::default();
        // 4,000 source ports, one request each, within 10 ms.
        for port in 0..4_000u16 {
            let now = u64::from(port) * 2_500;
            ask(&mut store, &mut f, now, src(10_000 + port));
        }
        let ratio = f.reply_bytes as f64 / f.request_bytes as f64;
        assert!(
            ratio < 10.0,
            "{} bytes back for {}: {ratio:.0}x",
            f.reply_bytes,
            f.request_bytes
        );
        // At most one burst and 10 ms of one host's rate.
        assert!(f.messages <= 20_000 + 1_000, "{}", f.messages);
        // IPv6: one host is a /64, whatever its interface identifier; mapped IPv4 is IPv4.
        let mut store = flood_store();
        let mut f = Flood::default();
        for i in 0..4_000u16 {
            let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 7, i, i, 1, 2);
            ask(&mut store, &mut f, 0, SocketAddr::from((ip, i)));
        }
        assert_eq!(f.messages, 20_000);
        for port in 1..=20 {
            ask(&mut store, &mut f, 0, src(port));
        }
        assert_eq!(f.messages, 2 * 20_000);
        let mapped = std::net::Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped();
        assert_eq!(
            store.handle_request(0, SocketAddr::from((mapped, 9)), &request(1, 1), |_| {}),
            Err(RequestError::RateLimited),
            "an IPv4-mapped address is the IPv4 host"
        );
    }

    #[test]
    fn many_hosts_together_get_a_bounded_rate() {
        let mut store = flood_store();
        let c = *store.config();
        let mut f = Flood::default();
        // 20,000 hosts, three requests each, within 100 ms.
        let ms = 1_000_000;
        for i in 0..60_000u32 {
            let host = i % 20_000;
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + host);
            ask(
                &mut store,
                &mut f,
                u64::from(i) * 100 * ms / 60_000,
                SocketAddr::from((ip, 4000)),
            );
        }
        let k = c.total_rate_multiple;
        let bound = c.burst_messages * k + c.rate_messages_per_sec * k / 10;
        assert!(
            f.messages <= bound,
            "{} messages, bound {bound}",
            f.messages
        );
        assert!(store.buckets.len() <= c.max_sources);
    }

    #[test]
    fn a_host_cannot_reset_its_bucket_by_crowding_the_table() {
        let mut store = flood_store();
        let mut f = Flood::default();
        let victim = src(1);
        while f.messages < 20_000 {
            ask(&mut store, &mut f, 0, victim);
        }
        // Hundreds of other hosts take every slot of the table (the total limit is lifted
        // so that they are all served).
        store.cfg.total_rate_multiple = 1 << 20;
        for i in 0..1_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            ask(&mut store, &mut f, 0, SocketAddr::from((ip, 4000)));
        }
        assert!(store.buckets.len() <= store.cfg.max_sources);
        let mut sink = |_: &[u8]| {};
        assert_eq!(
            store.handle_request(0, victim, &request(1, 1024), &mut sink),
            Err(RequestError::RateLimited),
            "still empty: not forgotten and refilled"
        );
    }

    #[test]
    fn sequence_numbers_end_below_u64_max() {
        let mut store = RetransmitStore::new(cfg()).unwrap();
        store.restart(S, u64::MAX - 2);
        assert_eq!(store.push(&msg(1)), Ok(u64::MAX - 2));
        assert_eq!(store.push(&msg(2)), Ok(u64::MAX - 1));
        // Message u64::MAX would end a packet past u64::MAX.
        assert!(store.push(&msg(3)).is_err());
        assert_eq!(store.next_seq(), u64::MAX);
        let got = decode(&answer(&mut store, 0, u64::MAX - 3, u16::MAX));
        assert_eq!(
            (got[0].0, got[0].1),
            (u64::MAX - 2, 0),
            "not available below"
        );
        assert_eq!(got[1].0, u64::MAX - 2);
        assert_eq!(got[1].2, [msg(1), msg(2)]);
        let mut sink = |_: &[u8]| {};
        let r = store
            .handle_request(0, src(1), &request(u64::MAX - 1, 9), &mut sink)
            .unwrap();
        assert_eq!((r.messages, r.truncated), (1, 0));
        let r = store
            .handle_request(0, src(1), &request(u64::MAX, 9), &mut sink)
            .unwrap();
        assert_eq!((r.packets, r.messages), (0, 0));
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
