//! IEX-TP as the driver's second framing: each segment is checked, placed in the session's
//! sequence, and handed to the same [`Sequencer`](mdbus_codecs::sequencer::Sequencer) that
//! MoldUDP64 feeds use, so lines A and B are arbitrated message by message, a gap is held
//! for the NAK delay (the other line may fill it) and then declared lost in place.
//!
//! **One sequence over restarts.** IEX restarts its sequence numbers at 1 within a session
//! (segment sequence 1, stream offset 0). The sequencer sees one *virtual* sequence for the
//! whole session: each run of sequence numbers (an epoch) gets a base, the end of the run
//! before it, and message `s` of an epoch is virtual `base + s`. A restart is therefore no
//! gap and no duplicate, the messages line B still carries for the run before it fill that
//! run's gaps in order, and what is delivered is mapped back to the IEX sequence number.
//! A segment belongs to the newest epoch unless its Send Time is older than that epoch's
//! first segment (a late copy from the other line), in which case it belongs to the epoch
//! before; older ones than that are counted as stale.
//!
//! **Restart rule.** A segment of sequence 1 at stream offset 0 starts a new epoch when the
//! current one got past its message 1 and the segment's Send Time is more than
//! [`RESTART_GUARD_NS`] after the latest such segment of the current epoch: an epoch opens
//! with heartbeats (sequence 1, offset 0) and then its first data segment (sequence 1, offset
//! 0 too), and neither those nor the other line's copies of them are restarts. A restart whose first
//! segment is lost on both lines is not seen: the new run's segments then count as
//! duplicates of the old run (IEX-TP carries nothing else that marks a restart).
//!
//! **Recovery.** IEX-TP defines Gap Fill Requests (unicast, answered with ordinary segments);
//! this driver does not send them: A/B arbitration is the recovery, and what neither line
//! delivered within the NAK delay is reported lost (a gap notice downstream).
//!
//! Translation writes the segment's complete message blocks into a MoldUDP64 packet in a
//! buffer allocated once (a copy of the datagram; no allocation, no system call). A cut or
//! damaged segment passes its complete messages, then a heartbeat announcing the end of
//! its declared count, so the messages cut off are missing (and filled by the other line,
//! or declared lost) rather than silently skipped.

use mdbus_codecs::iex::tp::{Protocol, Segment, TpError};
use mdbus_codecs::moldudp64::{HEADER_LEN as MOLD_HEADER_LEN, Session};
use mdbus_codecs::sequencer::Line;

/// A segment of sequence 1 at stream offset 0 starts a new run of sequence numbers only
/// when its Send Time is this much later than the current run's latest such segment (ns):
/// the other line's copy of one is not a restart.
pub const RESTART_GUARD_NS: u64 = 1_000_000_000;

/// Bases of this many most recent epochs are kept to map virtual sequence numbers back.
const EPOCHS: usize = 8;

/// Counters of the IEX-TP framing (the sequencer's count the rest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IexStats {
    /// Times the sequence restarted at 1 within the session (not gaps, not duplicates).
    pub restarts: u64,
    /// Segments whose payload was shorter than declared (their whole messages delivered).
    pub cut_segments: u64,
    /// Segments with a damaged message block (the blocks before it delivered).
    pub damaged_segments: u64,
    /// Segments of another message protocol than the one followed.
    pub foreign_protocol: u64,
    /// Messages of a run of sequence numbers older than the two newest, or beyond the end
    /// the next run was placed at: not delivered.
    pub stale_messages: u64,
}

/// Why a datagram was not passed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not an IEX-TP v1 segment (or its sequence numbers overflow).
    Malformed(TpError),
    /// Another session id than the one followed.
    ForeignSession,
    /// Another message protocol than the one followed.
    ForeignProtocol,
    /// Every message belongs to a run of sequence numbers no longer followed.
    Stale,
}

/// What a segment became: the MoldUDP64 packet in [`IexFraming::packet`], and for a cut or
/// damaged segment the virtual sequence number its declared messages end at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translated {
    /// Length of the packet.
    pub len: usize,
    /// One past the segment's last declared message, when messages were cut off.
    pub tail: Option<u64>,
    /// One past the segment's last declared message (its first, for a heartbeat).
    pub end: u64,
}

/// One run of sequence numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Epoch {
    /// Send Time of its first segment seen.
    start: u64,
    /// Send Time of its latest segment of sequence 1 at stream offset 0.
    opened: u64,
    /// Virtual sequence number of its message 0 (message `s` is `base + s`).
    base: u64,
}

/// Maps virtual sequence numbers back to IEX ones. Small and `Copy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpochMap {
    /// Bases of the most recent epochs, newest last (`len` of them).
    bases: [u64; EPOCHS],
    len: usize,
}

impl EpochMap {
    fn push(&mut self, base: u64) {
        if self.len == EPOCHS {
            self.bases.copy_within(1.., 0);
            self.len -= 1;
        }
        self.bases[self.len] = base;
        self.len += 1;
    }

    /// The base of the epoch virtual `v` belongs to, and where that epoch ends (exclusive;
    /// `u64::MAX` for the newest).
    #[inline]
    fn epoch_of(&self, v: u64) -> (u64, u64) {
        let mut end = u64::MAX;
        for &base in self.bases[..self.len].iter().rev() {
            if v > base {
                return (base, end);
            }
            end = base.saturating_add(1);
        }
        (0, end)
    }

    /// The IEX sequence number of virtual `v`.
    #[inline]
    pub fn seq_of(&self, v: u64) -> u64 {
        v - self.epoch_of(v).0
    }

    /// Splits the virtual range `first .. first + count` at epoch boundaries and calls `f`
    /// with each part in IEX sequence numbers.
    pub fn split(&self, first: u64, count: u64, mut f: impl FnMut(u64, u64)) {
        let (mut v, mut left) = (first, count);
        while left > 0 {
            let (base, end) = self.epoch_of(v);
            let n = left.min(end.saturating_sub(v)).max(1);
            f(v - base, n);
            v = v.saturating_add(n);
            left -= n;
        }
    }
}

/// The IEX-TP side of a driver: session and protocol followed, epochs, the packet buffer.
#[derive(Debug)]
pub struct IexFraming {
    /// Protocol to follow (`None`: the first seen).
    protocol: Option<Protocol>,
    /// Session id followed, once seen.
    session_id: Option<u32>,
    /// The newest epoch and the one before it.
    cur: Option<Epoch>,
    prev: Option<Epoch>,
    map: EpochMap,
    buf: Box<[u8]>,
    stats: IexStats,
    /// Where the latest segment of lines A and B ended (virtual).
    line_end: [u64; 2],
}

impl IexFraming {
    /// A framing following `protocol` (or the first seen), translating datagrams of up to
    /// `max_datagram` bytes.
    pub fn new(protocol: Option<Protocol>, max_datagram: usize) -> Self {
        IexFraming {
            protocol,
            session_id: None,
            cur: None,
            prev: None,
            map: EpochMap::default(),
            buf: vec![0; max_datagram.max(MOLD_HEADER_LEN)].into_boxed_slice(),
            stats: IexStats::default(),
            line_end: [0; 2],
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> IexStats {
        self.stats
    }

    /// The map from virtual sequence numbers back to IEX ones.
    #[inline]
    pub fn map(&self) -> EpochMap {
        self.map
    }

    /// The session id and protocol followed, once seen.
    pub fn following(&self) -> Option<(u32, Protocol)> {
        Some((self.session_id?, self.protocol?))
    }

    /// The session followed, as the sequencer names it: the IEX session id in ten decimal
    /// digits.
    pub fn session_name(id: u32) -> Session {
        let mut s = [b'0'; 10];
        let mut n = id;
        for b in s.iter_mut().rev() {
            *b = b'0' + (n % 10) as u8;
            n /= 10;
        }
        Session(s)
    }

    /// Notes where the latest segment of `line` ended ([`Translated::end`]).
    #[inline]
    pub fn note_line(&mut self, line: Line, end: u64) {
        match line {
            Line::A => self.line_end[0] = end,
            Line::B => self.line_end[1] = end,
            Line::Recovery => {}
        }
    }

    /// The line whose latest segment is behind the other's, if one is.
    #[inline]
    pub fn lagging(&self) -> Option<Line> {
        let [a, b] = self.line_end;
        match a.cmp(&b) {
            std::cmp::Ordering::Less => Some(Line::A),
            std::cmp::Ordering::Greater => Some(Line::B),
            std::cmp::Ordering::Equal => None,
        }
    }

    /// The packet [`translate`](Self::translate) wrote.
    #[inline]
    pub fn packet(&self, t: &Translated) -> &[u8] {
        &self.buf[..t.len]
    }

    /// Writes a heartbeat announcing virtual `next` into the buffer (after a cut segment's
    /// packet was handled).
    pub fn heartbeat(&mut self, next: u64) -> &[u8] {
        let session = self
            .session_id
            .map_or(Session([b'0'; 10]), Self::session_name);
        write_header(&mut self.buf, session, next, 0);
        &self.buf[..MOLD_HEADER_LEN]
    }

    /// Checks a segment and writes it as a MoldUDP64 packet of virtual sequence numbers.
    /// `known_end`: one past the highest virtual sequence number the sequencer knows of (where
    /// a restart places the new epoch). Never panics.
    pub fn translate(&mut self, datagram: &[u8], known_end: u64) -> Result<Translated, Refused> {
        let seg = Segment::parse(datagram).map_err(Refused::Malformed)?;
        let count = seg.message_count();
        let first = seg.first_seq();
        if seg.next_seq().is_none() {
            return Err(Refused::Malformed(TpError::SequenceOverflow {
                first_seq: first,
                count,
            }));
        }
        match self.session_id {
            Some(s) if s != seg.session_id() => return Err(Refused::ForeignSession),
            _ => {}
        }
        match self.protocol {
            Some(p) if p != seg.protocol() => {
                self.stats.foreign_protocol += 1;
                return Err(Refused::ForeignProtocol);
            }
            _ => {}
        }
        self.session_id = Some(seg.session_id());
        self.protocol = Some(seg.protocol());
        let sent = seg.send_time();
        // The epoch the segment belongs to, and where its messages must end (the next
        // epoch's base, for the one before the newest).
        let (epoch, limit) = match self.cur {
            None => {
                let e = Epoch {
                    start: sent,
                    opened: sent,
                    base: 0,
                };
                self.cur = Some(e);
                self.map.push(0);
                (e, u64::MAX)
            }
            Some(cur)
                if first == 1
                    && seg.stream_offset() == 0
                    && known_end > cur.base.saturating_add(1)
                    && sent > cur.opened.saturating_add(RESTART_GUARD_NS) =>
            {
                // The new run starts after everything known of the old one.
                let e = Epoch {
                    start: sent,
                    opened: sent,
                    base: known_end.saturating_sub(1).max(cur.base),
                };
                self.stats.restarts += 1;
                self.prev = Some(cur);
                self.cur = Some(e);
                self.map.push(e.base);
                (e, u64::MAX)
            }
            Some(mut cur) if sent >= cur.start => {
                if first == 1 && seg.stream_offset() == 0 && sent > cur.opened {
                    cur.opened = sent;
                    self.cur = Some(cur);
                }
                (cur, u64::MAX)
            }
            Some(cur) => match self.prev {
                Some(prev) if sent >= prev.start => (prev, cur.base.saturating_add(1)),
                // Older than anything followed, or before the first segment seen: the
                // sequencer tells a duplicate from a late message.
                Some(_) => {
                    self.stats.stale_messages += u64::from(count);
                    return Err(Refused::Stale);
                }
                None => (cur, u64::MAX),
            },
        };
        let Some(vfirst) = epoch.base.checked_add(first).filter(|v| *v < u64::MAX - 1) else {
            return Err(Refused::Malformed(TpError::SequenceOverflow {
                first_seq: first,
                count,
            }));
        };
        let session = Self::session_name(seg.session_id());
        if count == 0 {
            if vfirst > limit {
                return Err(Refused::Stale);
            }
            write_header(&mut self.buf, session, vfirst, 0);
            return Ok(Translated {
                len: MOLD_HEADER_LEN,
                tail: None,
                end: vfirst,
            });
        }
        // Messages that fit before `limit`.
        let room = limit.saturating_sub(vfirst);
        let mut pos = MOLD_HEADER_LEN;
        let mut n = 0u16;
        let mut error = None;
        for m in seg.messages() {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            };
            if u64::from(n) >= room {
                self.stats.stale_messages += 1;
                continue;
            }
            let end = pos + 2 + m.len();
            let Some(out) = self.buf.get_mut(pos..end) else {
                break;
            };
            // A block is at most the datagram's length: it fits in a u16.
            let len = u16::try_from(m.len()).unwrap_or(u16::MAX);
            out[..2].copy_from_slice(&len.to_be_bytes());
            out[2..].copy_from_slice(m);
            pos = end;
            n += 1;
        }
        if n == 0 && u64::from(count) > room {
            return Err(Refused::Stale);
        }
        let tail = match error {
            Some(e) => {
                if matches!(e, TpError::Cut { .. }) {
                    self.stats.cut_segments += 1;
                } else {
                    self.stats.damaged_segments += 1;
                }
                Some(vfirst.saturating_add(u64::from(count)).min(limit))
            }
            None => None,
        };
        write_header(&mut self.buf, session, vfirst, n);
        Ok(Translated {
            len: pos,
            tail,
            end: vfirst.saturating_add(u64::from(count)).min(limit),
        })
    }
}

fn write_header(buf: &mut [u8], session: Session, seq: u64, count: u16) {
    buf[..10].copy_from_slice(&session.0);
    buf[10..18].copy_from_slice(&seq.to_be_bytes());
    buf[18..20].copy_from_slice(&count.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_ranges_split_at_restarts_and_map_back() {
        let mut m = EpochMap::default();
        m.push(0);
        m.push(10);
        assert_eq!((m.seq_of(3), m.seq_of(10), m.seq_of(11)), (3, 10, 1));
        let mut parts = Vec::new();
        m.split(9, 4, |f, n| parts.push((f, n)));
        assert_eq!(parts, [(9, 2), (1, 2)]);
        for base in 1..=20 {
            m.push(base * 100);
        }
        assert_eq!(m.len, EPOCHS);
        assert_eq!(m.seq_of(2_005), 5);
    }

    #[test]
    fn session_names_are_ten_digits() {
        assert_eq!(IexFraming::session_name(7).0, *b"0000000007");
        assert_eq!(IexFraming::session_name(u32::MAX).0, *b"4294967295");
    }

    #[test]
    fn arbitrary_datagrams_are_refused_or_translated_never_a_panic() {
        let mut f = IexFraming::new(None, 2048);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000u64 {
            let len = (next() % 120) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if d.len() >= 40 && i % 2 == 0 {
                // Mostly a plausible header, so the block walk and epochs are reached.
                d[0] = 1;
                d[2..4].copy_from_slice(&0x8004u16.to_le_bytes());
                d[8..12].copy_from_slice(&7u32.to_le_bytes());
                let first = [1, 2, u64::MAX, u64::MAX - 1, next() % 50][(next() % 5) as usize];
                d[24..32].copy_from_slice(&first.to_le_bytes());
                d[16..24].copy_from_slice(&(next() % 2).to_le_bytes());
            }
            if let Ok(t) = f.translate(&d, next() % 1000) {
                let p = f.packet(&t);
                assert!(p.len() >= MOLD_HEADER_LEN && p.len() <= d.len().max(MOLD_HEADER_LEN));
                if let Some(tail) = t.tail {
                    let _ = f.heartbeat(tail);
                }
            }
        }
    }
}
