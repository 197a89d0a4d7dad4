//! Seeded fault injection for the network transport, sans-IO.
//!
//! A [`FaultInjector`] sits between a role and its socket: the sender passes each outgoing
//! MoldUDP64 datagram through it, the receiver each incoming one. It drops, duplicates,
//! holds back (reorders), truncates datagrams and adds garbage datagrams, at configured rates,
//! from a seeded generator: the same seed and the same input give the same output, so a lossy
//! run can be replayed exactly. [`FaultConfig::drop_seqs`] drops exact sequence ranges, for
//! tests and benchmarks that need a known gap. Everything it does is counted
//! ([`FaultStats`]), and the dropped data packets are logged ([`FaultInjector::dropped_log`]),
//! so nothing it loses goes unaccounted.
//!
//! The injector is off unless configured: [`FaultConfig::default()`] (the spec `"off"`) is
//! inactive, and the roles skip the injector altogether then.
//!
//! ```
//! use mdbus_feed_handlers::net::fault::{FaultConfig, FaultInjector};
//! use mdbus_codecs::moldudp64::{PacketBuilder, Session};
//!
//! let config: FaultConfig = "drop-seq=2,seed=7".parse()?;
//! let mut injector = FaultInjector::new(config, 1500);
//! let mut sent = Vec::new();
//! for seq in 1..=3 {
//!     let mut buf = [0u8; 64];
//!     let mut b = PacketBuilder::new(&mut buf, Session(*b"ABC0000001"), seq)?;
//!     b.push(b"hello")?;
//!     let len = b.finish();
//!     injector.apply(&buf[..len], |wire| sent.push(wire.to_vec()));
//! }
//! assert_eq!(sent.len(), 2);
//! assert_eq!(injector.dropped_log(), &[(2, 1)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each kind of fault draws from its own stream of the seeded generator, once per packet
//! whether or not the fault is configured: which packets are dropped depends only on the seed,
//! the drop rate and the packets' order, not on the other rates.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use mdbus_codecs::iex::tp::Segment;
use mdbus_codecs::moldudp64::Packet;
use rand::distr::{Bernoulli, Distribution};
use rand::{Rng, RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::venue::Framing;

/// Packets a reordered packet is held for when a spec sets a reorder rate without a delay.
pub const DEFAULT_REORDER_DELAY: u32 = 3;

/// Most packets an injector holds back at once; when full, the oldest is released early.
pub const MAX_HELD: usize = 64;

/// Entries of [`FaultInjector::dropped_log`]; drops beyond it are counted only.
pub const DROPPED_LOG_CAPACITY: usize = 1 << 20;

/// Longest garbage datagram an injector emits.
pub const MAX_GARBAGE_LEN: usize = 64;

/// What to inject. Probabilities are per packet, in `[0, 1]`, each decided independently (a
/// rate outside that range in a hand-built config is clamped, NaN counting as 0).
///
/// Parsed from and displayed as a spec such as
/// `drop=0.01,dup=0.005,reorder=0.02,delay=3,truncate=0.001,garbage=0.001,seed=42,drop-seq=100-120,drop-seq=500`
/// (`""` or `"off"`: the default, inactive).
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Seed of the generator: the same seed and input give the same output.
    pub seed: u64,
    /// Probability of dropping a packet.
    pub drop: f64,
    /// Probability of sending a packet twice.
    pub duplicate: f64,
    /// Probability of holding a packet back and releasing it after `reorder_delay` later
    /// packets.
    pub reorder: f64,
    /// How many later packets (calls to [`FaultInjector::apply`]) a reordered packet waits
    /// for; 0 counts as 1. Default [`DEFAULT_REORDER_DELAY`].
    pub reorder_delay: u32,
    /// Probability of cutting a packet short, at a random length of at least 1 byte.
    pub truncate: f64,
    /// Probability of also emitting a datagram of 1 to [`MAX_GARBAGE_LEN`] random bytes.
    pub garbage: f64,
    /// Exact loss: a data packet carrying a sequence number in one of these ranges is dropped
    /// the first time it passes (when it carries a sequence number above all those seen
    /// before in its session); retransmissions of it pass.
    pub drop_seqs: Vec<RangeInclusive<u64>>,
}

impl Default for FaultConfig {
    /// Inactive: every rate 0, no exact loss, seed 0, delay [`DEFAULT_REORDER_DELAY`].
    fn default() -> Self {
        FaultConfig {
            seed: 0,
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: DEFAULT_REORDER_DELAY,
            truncate: 0.0,
            garbage: 0.0,
            drop_seqs: Vec::new(),
        }
    }
}

impl FaultConfig {
    /// Whether this configuration injects any fault.
    pub fn is_active(&self) -> bool {
        self.drop > 0.0
            || self.duplicate > 0.0
            || self.reorder > 0.0
            || self.truncate > 0.0
            || self.garbage > 0.0
            || !self.drop_seqs.is_empty()
    }
}

/// The keys a fault spec accepts, for error messages.
const KEYS: &str = "drop, dup, reorder, delay, truncate, garbage, seed, drop-seq";

/// A fault spec that does not parse; names the offending item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultSpecError {
    /// An item is not `key=value`.
    #[error("fault spec item {item:?}: expected key=value with a key among {KEYS}, or \"off\"")]
    NotKeyValue {
        /// The item.
        item: String,
    },
    /// An unknown key.
    #[error("fault spec item {item:?}: unknown key {key:?} (keys: {KEYS})")]
    UnknownKey {
        /// The item.
        item: String,
        /// The key.
        key: String,
    },
    /// A key other than `drop-seq` given twice.
    #[error("fault spec item {item:?}: {key} is given more than once")]
    Repeated {
        /// The item.
        item: String,
        /// The key.
        key: &'static str,
    },
    /// A value that does not parse or is out of range.
    #[error("fault spec item {item:?}: {reason}")]
    BadValue {
        /// The item.
        item: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl FromStr for FaultConfig {
    type Err = FaultSpecError;

    fn from_str(spec: &str) -> Result<Self, FaultSpecError> {
        let mut config = FaultConfig::default();
        let spec = spec.trim();
        if spec.is_empty() || spec.eq_ignore_ascii_case("off") {
            return Ok(config);
        }
        // One bit per key that may be given once.
        let mut given = 0u32;
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(FaultSpecError::NotKeyValue { item: item.into() });
            };
            let value = value.trim();
            let (bit, key): (u32, &'static str) = match key.trim() {
                "drop-seq" => {
                    config.drop_seqs.push(parse_range(item, value)?);
                    continue;
                }
                "drop" => (0, "drop"),
                "dup" | "duplicate" => (1, "dup"),
                "reorder" => (2, "reorder"),
                "delay" => (3, "delay"),
                "truncate" => (4, "truncate"),
                "garbage" => (5, "garbage"),
                "seed" => (6, "seed"),
                other => {
                    return Err(FaultSpecError::UnknownKey {
                        item: item.into(),
                        key: other.into(),
                    });
                }
            };
            if given & (1 << bit) != 0 {
                return Err(FaultSpecError::Repeated {
                    item: item.into(),
                    key,
                });
            }
            given |= 1 << bit;
            match key {
                "drop" => config.drop = parse_probability(item, value)?,
                "dup" => config.duplicate = parse_probability(item, value)?,
                "reorder" => config.reorder = parse_probability(item, value)?,
                "truncate" => config.truncate = parse_probability(item, value)?,
                "garbage" => config.garbage = parse_probability(item, value)?,
                "delay" => {
                    config.reorder_delay = value.parse().map_err(|_| {
                        bad_value(
                            item,
                            "the delay must be a whole number of packets (0 to 4294967295)",
                        )
                    })?;
                }
                _ => {
                    config.seed = value.parse().map_err(|_| {
                        bad_value(item, "the seed must be a whole number (0 to 2^64-1)")
                    })?;
                }
            }
        }
        Ok(config)
    }
}

fn bad_value(item: &str, reason: &'static str) -> FaultSpecError {
    FaultSpecError::BadValue {
        item: item.into(),
        reason,
    }
}

fn parse_probability(item: &str, value: &str) -> Result<f64, FaultSpecError> {
    match value.parse::<f64>() {
        // `+ 0.0` turns -0 into 0.
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p + 0.0),
        _ => Err(bad_value(
            item,
            "a probability must be a number from 0 to 1",
        )),
    }
}

fn parse_range(item: &str, value: &str) -> Result<RangeInclusive<u64>, FaultSpecError> {
    const WHY: &str = "a sequence range must be N or FIRST-LAST with FIRST <= LAST";
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad_value(item, WHY));
    let (first, last) = match value.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(value)?;
            (n, n)
        }
    };
    if first > last {
        return Err(bad_value(item, WHY));
    }
    Ok(first..=last)
}

impl fmt::Display for FaultConfig {
    /// The spec that parses back to this configuration (`off` when it equals the default).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut item = |f: &mut fmt::Formatter<'_>, args: fmt::Arguments<'_>| {
            let r = write!(f, "{sep}{args}");
            sep = ",";
            r
        };
        let rates = [
            ("drop", self.drop),
            ("dup", self.duplicate),
            ("reorder", self.reorder),
            ("truncate", self.truncate),
            ("garbage", self.garbage),
        ];
        for (key, p) in rates {
            if p != 0.0 {
                item(f, format_args!("{key}={p}"))?;
            }
        }
        if self.reorder_delay != DEFAULT_REORDER_DELAY {
            item(f, format_args!("delay={}", self.reorder_delay))?;
        }
        if self.seed != 0 {
            item(f, format_args!("seed={}", self.seed))?;
        }
        for r in &self.drop_seqs {
            if r.start() == r.end() {
                item(f, format_args!("drop-seq={}", r.start()))?;
            } else {
                item(f, format_args!("drop-seq={}-{}", r.start(), r.end()))?;
            }
        }
        if sep.is_empty() {
            f.write_str("off")?;
        }
        Ok(())
    }
}

/// What an injector has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Datagrams passed to [`FaultInjector::apply`] (including those that are not MoldUDP64).
    pub packets: u64,
    /// Packets dropped (at random or by [`FaultConfig::drop_seqs`]), heartbeats included.
    pub dropped: u64,
    /// Data messages in the dropped packets.
    pub dropped_messages: u64,
    /// Packets sent twice.
    pub duplicated: u64,
    /// Packets held back and released later.
    pub reordered: u64,
    /// Packets cut short.
    pub truncated: u64,
    /// Garbage datagrams emitted.
    pub garbage: u64,
}

/// A rate outside `[0, 1]` (possible only in a hand-built config) is clamped; NaN counts
/// as 0.
fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

/// One independent random stream per kind of fault.
#[derive(Debug)]
struct Stream {
    rng: Pcg64Mcg,
    p: Bernoulli,
}

impl Stream {
    fn new(seed: u64, kind: u64, p: f64) -> Stream {
        // Seeds that differ in one bit give unrelated streams (`seed_from_u64` mixes them).
        let seed = seed ^ kind.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Stream {
            rng: Pcg64Mcg::seed_from_u64(seed),
            p: Bernoulli::new(clamp_probability(p)).expect("a probability in [0, 1] is valid"),
        }
    }

    #[inline]
    fn hit(&mut self) -> bool {
        self.p.sample(&mut self.rng)
    }
}

/// What the injector reads of a datagram: its session, first sequence number and message
/// count (0 for a heartbeat or end of session).
#[derive(Clone, Copy)]
struct Header {
    session: [u8; 10],
    seq: u64,
    count: u16,
}

impl Header {
    /// The header of a datagram of `framing`; `None` for one that is not of it.
    #[inline]
    fn of(framing: Framing, packet: &[u8]) -> Option<Header> {
        match framing {
            Framing::IexTp => {
                let s = Segment::parse(packet).ok()?;
                let mut session = [0u8; 10];
                session[..4].copy_from_slice(&s.session_id().to_le_bytes());
                session[4..6].copy_from_slice(&s.protocol().0.to_le_bytes());
                Some(Header {
                    session,
                    seq: s.first_seq(),
                    count: s.message_count(),
                })
            }
            _ => {
                let p = Packet::parse(packet).ok()?;
                Some(Header {
                    session: p.session().0,
                    seq: p.sequence_number(),
                    count: p.messages_len(),
                })
            }
        }
    }
}

/// Seeded fault injector for MoldUDP64 datagrams (or IEX-TP segments, see
/// [`with_framing`](Self::with_framing)); see the [module docs](self).
///
/// Datagrams that are not MoldUDP64 (shorter than the 20-byte header) pass through untouched.
/// Heartbeats and end-of-session packets are dropped, duplicated, reordered, truncated and
/// followed by garbage like data packets, but [`FaultConfig::drop_seqs`] matches data
/// packets only.
pub struct FaultInjector {
    config: FaultConfig,
    max_datagram: usize,
    drop: Stream,
    duplicate: Stream,
    reorder: Stream,
    truncate: Stream,
    garbage: Stream,
    /// Ticks a held packet waits (at least 1).
    delay: u64,
    /// Calls to `apply` so far.
    tick: u64,
    /// Held packets: a ring of `held_len.len()` slots of `max_datagram` bytes each.
    held_bytes: Box<[u8]>,
    held_len: Box<[usize]>,
    held_due: Box<[u64]>,
    held_head: usize,
    held_count: usize,
    garbage_buf: [u8; MAX_GARBAGE_LEN],
    /// Exact loss: the session of the last data packet and one past the highest sequence
    /// number it has carried.
    seq_session: [u8; 10],
    seq_seen_until: u64,
    stats: FaultStats,
    dropped_log: Vec<(u64, u16)>,
    /// How the datagrams are framed (where their sequence numbers are).
    framing: Framing,
}

impl fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultInjector")
            .field("config", &self.config.to_string())
            .field("max_datagram", &self.max_datagram)
            .field("held", &self.held_count)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl FaultInjector {
    /// An injector for datagrams of up to `max_datagram` bytes (longer ones are never held
    /// back). Allocates everything it will need: [`MAX_HELD`] slots at most (as many as the
    /// reorder delay needs, none without reordering), and the dropped-packet log when the
    /// configuration can drop.
    pub fn new(config: FaultConfig, max_datagram: usize) -> Self {
        let delay = u64::from(config.reorder_delay.max(1));
        let slots = if config.reorder > 0.0 {
            // A packet held at tick t waits while the `delay` packets held before it drain.
            (delay as usize).saturating_add(1).min(MAX_HELD)
        } else {
            0
        };
        let can_drop = config.drop > 0.0 || !config.drop_seqs.is_empty();
        let seed = config.seed;
        FaultInjector {
            drop: Stream::new(seed, 1, config.drop),
            duplicate: Stream::new(seed, 2, config.duplicate),
            reorder: Stream::new(seed, 3, config.reorder),
            truncate: Stream::new(seed, 4, config.truncate),
            garbage: Stream::new(seed, 5, config.garbage),
            config,
            max_datagram,
            delay,
            tick: 0,
            held_bytes: vec![0u8; slots * max_datagram].into_boxed_slice(),
            held_len: vec![0usize; slots].into_boxed_slice(),
            held_due: vec![0u64; slots].into_boxed_slice(),
            held_head: 0,
            held_count: 0,
            garbage_buf: [0; MAX_GARBAGE_LEN],
            seq_session: [0; 10],
            seq_seen_until: 0,
            stats: FaultStats::default(),
            dropped_log: Vec::with_capacity(if can_drop { DROPPED_LOG_CAPACITY } else { 0 }),
            framing: Framing::MoldUdp64,
        }
    }

    /// The injector for datagrams of `framing` (MoldUDP64 by default): IEX-TP segments are
    /// dropped by their own sequence numbers ([`FaultConfig::drop_seqs`]) and their
    /// messages counted.
    pub fn with_framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// Passes `packet` through: calls `out` zero or more times with what goes on the wire now
    /// (the packet or a prefix of it, a duplicate, a garbage datagram, then earlier held
    /// packets whose delay is over). Does not allocate.
    pub fn apply(&mut self, packet: &[u8], mut out: impl FnMut(&[u8])) {
        self.stats.packets += 1;
        self.tick += 1;
        match Header::of(self.framing, packet) {
            Some(h) => self.inject(h, packet, &mut out),
            None => out(packet),
        }
        while self.held_count > 0 && self.held_due[self.held_head] <= self.tick {
            self.release_oldest(&mut out);
        }
    }

    fn inject(&mut self, p: Header, packet: &[u8], out: &mut impl FnMut(&[u8])) {
        // Every stream draws once per packet (see the module docs).
        let drop = self.drop.hit();
        let duplicate = self.duplicate.hit();
        let reorder = self.reorder.hit();
        let truncate = self.truncate.hit();
        let garbage = self.garbage.hit();
        let exact = self.exact_drop(p);
        if drop || exact {
            self.stats.dropped += 1;
            let messages = p.count;
            self.stats.dropped_messages += u64::from(messages);
            if messages > 0 && self.dropped_log.len() < self.dropped_log.capacity() {
                self.dropped_log.push((p.seq, messages));
            }
        } else {
            let bytes = if truncate && packet.len() > 1 {
                self.stats.truncated += 1;
                &packet[..self.truncate.rng.random_range(1..packet.len())]
            } else {
                packet
            };
            if duplicate {
                self.stats.duplicated += 1;
                out(bytes);
            }
            if reorder && self.hold(bytes, out) {
                self.stats.reordered += 1;
            } else {
                out(bytes);
            }
        }
        if garbage {
            self.stats.garbage += 1;
            let len = self.garbage.rng.random_range(1..=MAX_GARBAGE_LEN);
            let buf = &mut self.garbage_buf[..len];
            self.garbage.rng.fill_bytes(buf);
            out(buf);
        }
    }

    /// Whether `drop_seqs` drops this packet; tracks the highest sequence number seen.
    fn exact_drop(&mut self, p: Header) -> bool {
        let count = p.count;
        if self.config.drop_seqs.is_empty() || count == 0 {
            return false;
        }
        let session = p.session;
        if session != self.seq_session {
            self.seq_session = session;
            self.seq_seen_until = 0;
        }
        let first = p.seq;
        let last = first.saturating_add(u64::from(count) - 1);
        let new_from = first.max(self.seq_seen_until);
        self.seq_seen_until = self.seq_seen_until.max(last.saturating_add(1));
        new_from <= last
            && self
                .config
                .drop_seqs
                .iter()
                .any(|r| *r.start() <= last && new_from <= *r.end())
    }

    /// Holds a copy of `bytes` until `delay` more packets have passed; `false` when it cannot
    /// be held (too long, or reordering not configured).
    fn hold(&mut self, bytes: &[u8], out: &mut impl FnMut(&[u8])) -> bool {
        let slots = self.held_len.len();
        if slots == 0 || bytes.len() > self.max_datagram {
            return false;
        }
        if self.held_count == slots {
            self.release_oldest(out);
        }
        let slot = (self.held_head + self.held_count) % slots;
        let start = slot * self.max_datagram;
        self.held_bytes[start..start + bytes.len()].copy_from_slice(bytes);
        self.held_len[slot] = bytes.len();
        self.held_due[slot] = self.tick + self.delay;
        self.held_count += 1;
        true
    }

    fn release_oldest(&mut self, out: &mut impl FnMut(&[u8])) {
        let slot = self.held_head;
        let start = slot * self.max_datagram;
        out(&self.held_bytes[start..start + self.held_len[slot]]);
        self.held_head = (slot + 1) % self.held_len.len();
        self.held_count -= 1;
    }

    /// Releases every held packet, oldest first (call it when idle for a while and at
    /// shutdown, so nothing is held forever).
    pub fn flush(&mut self, mut out: impl FnMut(&[u8])) {
        while self.held_count > 0 {
            self.release_oldest(&mut out);
        }
    }

    /// Packets held back now.
    pub fn held(&self) -> usize {
        self.held_count
    }

    /// The counters so far.
    pub fn stats(&self) -> FaultStats {
        self.stats
    }

    /// `(first sequence number, message count)` of each dropped data packet, in drop order;
    /// the first [`DROPPED_LOG_CAPACITY`] drops only (the rest are counted in
    /// [`FaultStats::dropped`]).
    pub fn dropped_log(&self) -> &[(u64, u16)] {
        &self.dropped_log
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdbus_codecs::moldudp64::{PacketBuilder, Session, encode_heartbeat};

    const SESSION: Session = Session(*b"ABC0000001");

    /// A data packet of `count` messages from `seq` on; each message holds its sequence
    /// number, so every packet of a session is distinct.
    fn data(seq: u64, count: u16) -> Vec<u8> {
        let mut buf = vec![0u8; 1400];
        let mut b = PacketBuilder::new(&mut buf, SESSION, seq).unwrap();
        for i in 0..u64::from(count) {
            b.push(&(seq + i).to_be_bytes()).unwrap();
        }
        let len = b.finish();
        buf.truncate(len);
        buf
    }

    fn heartbeat(next: u64) -> Vec<u8> {
        let mut buf = vec![0u8; 20];
        encode_heartbeat(&mut buf, SESSION, next).unwrap();
        buf
    }

    /// `n` packets of 3 messages each: sequence numbers 1, 4, 7, ...
    fn stream(n: u64) -> Vec<Vec<u8>> {
        (0..n).map(|i| data(1 + 3 * i, 3)).collect()
    }

    /// Everything the injector puts on the wire for `packets`, flushed at the end.
    fn run(inj: &mut FaultInjector, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut wire = Vec::new();
        for p in packets {
            inj.apply(p, |b| wire.push(b.to_vec()));
        }
        inj.flush(|b| wire.push(b.to_vec()));
        wire
    }

    fn injector(spec: &str) -> FaultInjector {
        FaultInjector::new(spec.parse().unwrap(), 1500)
    }

    #[test]
    fn spec_parses_every_key() {
        let c: FaultConfig = " drop=0.01, dup=0.005,reorder=0.02,delay=5,truncate=0.001,garbage=1,\
                              seed=42,drop-seq=100-120,drop-seq=500"
            .parse()
            .unwrap();
        assert_eq!(
            c,
            FaultConfig {
                seed: 42,
                drop: 0.01,
                duplicate: 0.005,
                reorder: 0.02,
                reorder_delay: 5,
                truncate: 0.001,
                garbage: 1.0,
                drop_seqs: vec![100..=120, 500..=500],
            }
        );
        assert!(c.is_active());
        let c: FaultConfig = "reorder=0.5".parse().unwrap();
        assert_eq!(c.reorder_delay, DEFAULT_REORDER_DELAY);
        assert!("drop-seq=7".parse::<FaultConfig>().unwrap().is_active());
    }

    #[test]
    fn empty_and_off_are_the_inactive_default() {
        for spec in ["", "off", " OFF ", "seed=9"] {
            let c: FaultConfig = spec.parse().unwrap();
            assert!(!c.is_active(), "{spec:?}");
        }
        assert_eq!(
            "off".parse::<FaultConfig>().unwrap(),
            FaultConfig::default()
        );
        assert_eq!(FaultConfig::default().to_string(), "off");
    }

    #[test]
    fn spec_round_trips_through_display() {
        let configs = [
            FaultConfig::default(),
            FaultConfig {
                seed: u64::MAX,
                drop: 0.1 + 0.2,
                duplicate: 1e-9,
                reorder: 1.0,
                reorder_delay: 0,
                truncate: 0.25,
                garbage: 1.0 / 3.0,
                drop_seqs: vec![5..=5, 1..=u64::MAX, 100..=120],
            },
            FaultConfig {
                reorder_delay: 7,
                ..FaultConfig::default()
            },
            "drop=0.01,dup=0.005,reorder=0.02,delay=3,truncate=0.001,garbage=0.001,seed=42,\
             drop-seq=100-120,drop-seq=500"
                .parse()
                .unwrap(),
        ];
        for c in configs {
            let spec = c.to_string();
            assert_eq!(spec.parse::<FaultConfig>().unwrap(), c, "{spec}");
        }
        let c: FaultConfig = "drop=0.5,drop-seq=3-4".parse().unwrap();
        assert_eq!(c.to_string(), "drop=0.5,drop-seq=3-4");
    }

    #[test]
    fn bad_specs_name_the_item() {
        let cases = [
            ("drop=1.5", "drop=1.5"),
            ("drop=-0.1", "drop=-0.1"),
            ("dup=NaN", "dup=NaN"),
            ("reorder=inf", "reorder=inf"),
            ("truncate=", "truncate="),
            ("drop=0.1,loss=0.2", "loss=0.2"),
            ("drop=0.1,off", "off"),
            ("drop=0.1,drop=0.2", "drop=0.2"),
            ("delay=-1", "delay=-1"),
            ("seed=abc", "seed=abc"),
            ("drop-seq=120-100", "drop-seq=120-100"),
            ("drop-seq=1-2-3", "drop-seq=1-2-3"),
            ("drop-seq=x", "drop-seq=x"),
        ];
        for (spec, item) in cases {
            let err = spec.parse::<FaultConfig>().unwrap_err();
            assert!(
                err.to_string().contains(&format!("{item:?}")),
                "{spec}: {err}"
            );
        }
        assert!(matches!(
            "loss=1".parse::<FaultConfig>(),
            Err(FaultSpecError::UnknownKey { key, .. }) if key == "loss"
        ));
        assert!(matches!(
            "seed=1,seed=2".parse::<FaultConfig>(),
            Err(FaultSpecError::Repeated { key: "seed", .. })
        ));
    }

    #[test]
    fn inactive_injector_passes_everything_unchanged() {
        let packets = stream(100);
        let mut inj = FaultInjector::new(FaultConfig::default(), 1500);
        assert_eq!(run(&mut inj, &packets), packets);
        assert_eq!(
            inj.stats(),
            FaultStats {
                packets: 100,
                ..FaultStats::default()
            }
        );
    }

    /// An IEX-TP segment of `count` one-byte messages from `first`.
    fn iex_segment(first: u64, count: u16) -> Vec<u8> {
        let mut s = vec![0u8; 40];
        s[0] = 1;
        s[2..4].copy_from_slice(&0x8004u16.to_le_bytes());
        s[8..12].copy_from_slice(&7u32.to_le_bytes());
        s[12..14].copy_from_slice(&(count * 3).to_le_bytes());
        s[14..16].copy_from_slice(&count.to_le_bytes());
        s[24..32].copy_from_slice(&first.to_le_bytes());
        for _ in 0..count {
            s.extend_from_slice(&[1, 0, b'S']);
        }
        s
    }

    #[test]
    fn iex_segments_are_dropped_by_their_own_sequence_numbers_and_counted_in_messages() {
        let config: FaultConfig = "drop-seq=7-8,seed=3".parse().unwrap();
        let mut f = FaultInjector::new(config, 1500).with_framing(Framing::IexTp);
        let mut sent = Vec::new();
        let mut first = 1;
        for count in [3u16, 3, 0, 2, 4] {
            f.apply(&iex_segment(first, count), |p| sent.push(p.to_vec()));
            first += u64::from(count);
        }
        // Segment 7..=8 is dropped, the rest pass (the heartbeat too).
        assert_eq!(sent.len(), 4);
        assert_eq!(f.dropped_log(), &[(7, 2)]);
        let st = f.stats();
        assert_eq!((st.dropped, st.dropped_messages), (1, 2));
    }

    #[test]
    fn drop_seqs_drop_exactly_the_packets_carrying_those_numbers_once() {
        let packets = stream(300); // sequence numbers 1..=900
        let mut inj = injector("drop-seq=100-120,drop-seq=500,seed=3");
        let wire = run(&mut inj, &packets);
        // 100-120 lies in the packets starting at 100 (100-102) .. 118 (118-120); 500 in 499.
        let expected: Vec<(u64, u16)> =
            (0..7).map(|i| (100 + 3 * i, 3)).chain([(499, 3)]).collect();
        assert_eq!(inj.dropped_log(), expected.as_slice());
        let kept: Vec<Vec<u8>> = packets
            .iter()
            .filter(|p| {
                !expected
                    .iter()
                    .any(|&(s, _)| Packet::parse(p).unwrap().sequence_number() == s)
            })
            .cloned()
            .collect();
        assert_eq!(wire, kept);
        let st = inj.stats();
        assert_eq!((st.dropped, st.dropped_messages), (8, 24));
        // A retransmission of a dropped packet passes, and so does a heartbeat in the range.
        let mut wire = Vec::new();
        inj.apply(&data(100, 3), |b| wire.push(b.to_vec()));
        inj.apply(&heartbeat(110), |b| wire.push(b.to_vec()));
        assert_eq!(wire, [data(100, 3), heartbeat(110)]);
        // A new session starts over.
        let mut other = data(100, 1);
        other[..10].copy_from_slice(b"ABC0000002");
        let mut wire = Vec::new();
        inj.apply(&other, |b| wire.push(b.to_vec()));
        assert!(wire.is_empty());
        assert_eq!(inj.stats().dropped, 9);
    }

    #[test]
    fn same_seed_same_faults_other_seed_other_faults() {
        let packets = stream(2000);
        let spec = "drop=0.05,dup=0.05,reorder=0.05,delay=4,truncate=0.05,garbage=0.05";
        let a = run(&mut injector(&format!("{spec},seed=1")), &packets);
        let b = run(&mut injector(&format!("{spec},seed=1")), &packets);
        let c = run(&mut injector(&format!("{spec},seed=2")), &packets);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn which_packets_drop_does_not_depend_on_the_other_rates() {
        let packets = stream(5000);
        let mut only_drop = injector("drop=0.1,seed=5");
        let mut all = injector("drop=0.1,dup=0.3,reorder=0.2,truncate=0.1,garbage=0.2,seed=5");
        run(&mut only_drop, &packets);
        run(&mut all, &packets);
        assert!(only_drop.stats().dropped > 0);
        assert_eq!(only_drop.dropped_log(), all.dropped_log());
    }

    #[test]
    fn observed_rates_match_the_configured_ones() {
        const N: u64 = 100_000;
        let packet = data(1, 2);
        let mut inj =
            injector("drop=0.05,dup=0.03,reorder=0.02,delay=2,truncate=0.01,garbage=0.04,seed=11");
        let mut outputs = 0u64;
        for _ in 0..N {
            inj.apply(&packet, |_| outputs += 1);
        }
        inj.flush(|_| outputs += 1);
        let st = inj.stats();
        let kept = N - st.dropped;
        // Each bound is more than 6 standard deviations wide.
        let near = |got: u64, expected: f64| {
            let sd = expected.sqrt();
            (got as f64 - expected).abs() < 6.0 * sd + 1.0
        };
        assert!(near(st.dropped, N as f64 * 0.05), "{st:?}");
        assert!(near(st.garbage, N as f64 * 0.04), "{st:?}");
        assert!(near(st.duplicated, kept as f64 * 0.03), "{st:?}");
        assert!(near(st.reordered, kept as f64 * 0.02), "{st:?}");
        assert!(near(st.truncated, kept as f64 * 0.01), "{st:?}");
        assert_eq!(st.dropped_messages, 2 * st.dropped);
        assert_eq!(outputs, N - st.dropped + st.duplicated + st.garbage);
    }

    #[test]
    fn a_reordered_packet_is_released_after_delay_later_packets() {
        let mut inj = injector("reorder=1,delay=3");
        let mut wire: Vec<Vec<u8>> = Vec::new();
        inj.apply(&data(1, 1), |b| wire.push(b.to_vec()));
        assert!(wire.is_empty());
        assert_eq!(inj.held(), 1);
        // Datagrams that are not MoldUDP64 pass untouched, and count as later packets.
        for junk in [&b"x"[..], b"yy", b"zzz"] {
            inj.apply(junk, |b| wire.push(b.to_vec()));
        }
        assert_eq!(
            wire,
            [b"x".to_vec(), b"yy".to_vec(), b"zzz".to_vec(), data(1, 1)]
        );
        assert_eq!(inj.held(), 0);
        assert_eq!(inj.stats().reordered, 1);
    }

    #[test]
    fn reordering_releases_every_packet_exactly_once() {
        let packets = stream(5000);
        let mut inj = injector("reorder=0.3,delay=3,seed=9");
        let wire = run(&mut inj, &packets);
        assert_eq!(inj.held(), 0);
        assert_ne!(wire, packets);
        let mut sorted = wire.clone();
        sorted.sort_by_key(|p| Packet::parse(p).unwrap().sequence_number());
        assert_eq!(sorted, packets);
        let st = inj.stats();
        assert!(st.reordered > 1000, "{st:?}");
        // A packet goes out at most `delay` places late, and never early by more than the
        // packets held back around it.
        for (pos, p) in wire.iter().enumerate() {
            let index = (Packet::parse(p).unwrap().sequence_number() - 1) / 3;
            assert!(pos as u64 <= index + 3, "packet {index} at {pos}");
        }
    }

    #[test]
    fn a_full_hold_releases_the_oldest_early() {
        let packets = stream(1000);
        let mut inj = injector("reorder=1,delay=1000");
        let mut wire = Vec::new();
        for p in &packets {
            inj.apply(p, |b| wire.push(b.to_vec()));
            assert!(inj.held() <= MAX_HELD);
        }
        assert_eq!(inj.held(), MAX_HELD);
        inj.flush(|b| wire.push(b.to_vec()));
        assert_eq!(wire, packets);
    }

    #[test]
    fn flush_releases_everything_held_oldest_first() {
        let mut inj = injector("reorder=1,delay=10");
        let packets = stream(5);
        let mut wire = Vec::new();
        for p in &packets {
            inj.apply(p, |b| wire.push(b.to_vec()));
        }
        assert!(wire.is_empty());
        assert_eq!(inj.held(), 5);
        inj.flush(|b| wire.push(b.to_vec()));
        assert_eq!(wire, packets);
        assert_eq!(inj.held(), 0);
        inj.flush(|_| panic!("nothing left"));
    }

    #[test]
    fn packets_too_long_to_hold_go_out_at_once() {
        let mut inj = FaultInjector::new("reorder=1".parse().unwrap(), 16);
        let mut wire = Vec::new();
        inj.apply(&data(1, 1), |b| wire.push(b.to_vec()));
        assert_eq!(wire, [data(1, 1)]);
        assert_eq!(inj.stats().reordered, 0);
    }

    #[test]
    fn truncation_cuts_packets_short() {
        let packets = stream(2000);
        let mut inj = injector("truncate=1,seed=4");
        let wire = run(&mut inj, &packets);
        assert_eq!(wire.len(), packets.len());
        let mut lengths = std::collections::BTreeSet::new();
        for (cut, p) in wire.iter().zip(&packets) {
            assert!(!cut.is_empty() && cut.len() < p.len());
            assert_eq!(cut[..], p[..cut.len()]);
            lengths.insert(cut.len());
        }
        assert!(lengths.len() > 20, "cut lengths vary: {lengths:?}");
        assert_eq!(inj.stats().truncated, 2000);
    }

    #[test]
    fn garbage_follows_the_packet() {
        let packets = stream(2000);
        let mut inj = injector("garbage=1,seed=8");
        let wire = run(&mut inj, &packets);
        assert_eq!(wire.len(), 4000);
        let mut lengths = std::collections::BTreeSet::new();
        for (pair, p) in wire.chunks(2).zip(&packets) {
            assert_eq!(&pair[0], p);
            assert!((1..=MAX_GARBAGE_LEN).contains(&pair[1].len()));
            lengths.insert(pair[1].len());
        }
        assert_eq!(
            lengths.len(),
            MAX_GARBAGE_LEN,
            "every length from 1 to 64 occurs"
        );
        assert_eq!(inj.stats().garbage, 2000);
    }

    #[test]
    fn heartbeats_are_faulted_like_data_but_not_logged() {
        let mut inj = injector("drop=1");
        inj.apply(&heartbeat(5), |_| panic!("dropped"));
        let mut eos = heartbeat(5);
        eos[18..20].copy_from_slice(&[0xFF, 0xFF]);
        inj.apply(&eos, |_| panic!("dropped"));
        assert_eq!(inj.stats().dropped, 2);
        assert_eq!(inj.stats().dropped_messages, 0);
        assert!(inj.dropped_log().is_empty());
        let mut inj = injector("dup=1");
        let mut wire = Vec::new();
        inj.apply(&heartbeat(5), |b| wire.push(b.to_vec()));
        assert_eq!(wire, [heartbeat(5), heartbeat(5)]);
    }

    #[test]
    fn datagrams_that_are_not_moldudp64_pass_untouched() {
        let mut inj = injector("drop=1,dup=1,reorder=1,truncate=1,garbage=1");
        let junk = [7u8; 19];
        let mut wire = Vec::new();
        inj.apply(&junk, |b| wire.push(b.to_vec()));
        assert_eq!(wire, [junk.to_vec()]);
        assert_eq!(
            inj.stats(),
            FaultStats {
                packets: 1,
                ..FaultStats::default()
            }
        );
    }

    #[test]
    fn nothing_is_lost_but_what_is_counted_dropped() {
        let packets = stream(20_000);
        let mut inj = injector("drop=0.05,dup=0.05,reorder=0.1,delay=5,seed=77,drop-seq=3000-3100");
        let wire = run(&mut inj, &packets);
        let st = inj.stats();
        let mut seen = std::collections::HashMap::<u64, u32>::new();
        for p in &wire {
            let seq = Packet::parse(p).unwrap().sequence_number();
            assert_eq!(p, &data(seq, 3), "delivered intact");
            *seen.entry(seq).or_default() += 1;
        }
        let dropped: std::collections::HashSet<u64> = inj
            .dropped_log()
            .iter()
            .map(|&(s, n)| {
                assert_eq!(n, 3);
                s
            })
            .collect();
        assert_eq!(dropped.len() as u64, st.dropped);
        assert!((3000..=3100).all(|s| s % 3 != 1 || dropped.contains(&s)));
        let mut twice = 0;
        for p in &packets {
            let seq = Packet::parse(p).unwrap().sequence_number();
            match (dropped.contains(&seq), seen.get(&seq).copied().unwrap_or(0)) {
                (true, 0) | (false, 1) => {}
                (false, 2) => twice += 1,
                other => panic!("packet {seq}: (dropped, copies) = {other:?}"),
            }
        }
        assert_eq!(twice, st.duplicated);
        assert_eq!(wire.len() as u64, st.packets - st.dropped + st.duplicated);
        assert_eq!(st.dropped_messages, 3 * st.dropped);
    }

    #[test]
    fn all_faults_at_once_account_for_every_datagram() {
        let packets = stream(20_000);
        let mut inj =
            injector("drop=0.05,dup=0.05,reorder=0.1,delay=2,truncate=0.05,garbage=0.05,seed=123");
        let wire = run(&mut inj, &packets);
        let st = inj.stats();
        assert_eq!(
            wire.len() as u64,
            st.packets - st.dropped + st.duplicated + st.garbage
        );
        // Every output that carries a whole header is (a prefix of) the packet it names, at
        // most twice; the others are garbage or cut below the header.
        let mut copies = std::collections::HashMap::<u64, u64>::new();
        let mut unnamed = 0u64;
        for p in &wire {
            let named = Packet::parse(p)
                .ok()
                .map(|h| h.sequence_number())
                .filter(|&s| {
                    let original = data(s, 3);
                    s % 3 == 1
                        && s < 60_000
                        && p.len() <= original.len()
                        && original[..p.len()] == p[..]
                });
            match named {
                Some(s) => *copies.entry(s).or_default() += 1,
                None => unnamed += 1,
            }
        }
        assert!(copies.values().all(|&n| n <= 2));
        assert!(unnamed <= st.garbage + st.truncated);
        assert!(unnamed >= st.garbage);
        for &(s, _) in inj.dropped_log() {
            assert!(!copies.contains_key(&s));
        }
    }

    #[test]
    fn apply_and_flush_do_not_allocate() {
        let packets = stream(10_000);
        let mut inj = injector(
            "drop=0.05,dup=0.05,reorder=0.1,delay=8,truncate=0.05,garbage=0.05,seed=1,drop-seq=10-500",
        );
        let mut bytes = 0usize;
        let info = allocation_counter::measure(|| {
            for p in &packets {
                inj.apply(p, |b| bytes += b.len());
            }
            inj.flush(|b| bytes += b.len());
        });
        assert_eq!(info.count_total, 0);
        assert!(bytes > 0 && inj.stats().dropped > 0 && inj.stats().reordered > 0);
        // The counter does see allocations on this thread.
        let info = allocation_counter::measure(|| drop(std::hint::black_box(vec![1u8; 10])));
        assert_eq!(info.count_total, 1);
    }

    #[test]
    fn hand_built_rates_out_of_range_are_clamped() {
        let packets = stream(100);
        let config = FaultConfig {
            drop: 2.0,
            duplicate: f64::NAN,
            ..FaultConfig::default()
        };
        let mut inj = FaultInjector::new(config, 1500);
        assert!(run(&mut inj, &packets).is_empty());
        assert_eq!((inj.stats().dropped, inj.stats().duplicated), (100, 0));
    }

    #[test]
    fn debug_shows_the_spec_and_counters() {
        let inj = injector("drop=0.5,seed=2");
        let s = format!("{inj:?}");
        assert!(
            s.contains("drop=0.5,seed=2") && s.contains("held: 0"),
            "{s}"
        );
    }
}
