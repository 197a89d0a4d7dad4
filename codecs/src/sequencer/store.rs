//! The bounded reorder store: copies of messages that arrived ahead of the next expected
//! sequence number, kept until the gap before them is filled or skipped.
//!
//! Two preallocated parts, sized once at construction:
//!
//! ```text
//!  slots (window of W messages, W a power of two; slot = seq & (W - 1))
//!  +------+------+------+------+-- ... --+
//!  | seq  | seq  | free | seq  |         |   seq, offset and length of a stored message
//!  +------+------+------+------+-- ... --+
//!
//!  bytes (ring in allocation order; a message never wraps, a tail too short is left unused)
//!  +-----------+---------------------------+------------------+---------+
//!  | newest .. | free                      | oldest ....      | unused  |
//!  +-----------+---------------------------+------------------+---------+
//!  0         wpos                         head                         cap
//! ```
//!
//! Messages are delivered in sequence order but were copied in arrival order, so space is
//! given back in allocation order: the bytes of a delivered message are reused once every
//! message copied before it has been delivered too. That is exact for the usual case (a gap
//! followed by later packets in order) and conservative otherwise: the store may report itself
//! full a little early, never overwrite a message it still holds.

use std::collections::VecDeque;

/// Marks an empty slot (no real sequence number reaches `u64::MAX`).
const EMPTY: u64 = u64::MAX;

#[derive(Clone, Copy, Debug)]
struct Slot {
    seq: u64,
    off: u32,
    len: u16,
}

const FREE: Slot = Slot {
    seq: EMPTY,
    off: 0,
    len: 0,
};

/// One copy, in allocation order.
#[derive(Clone, Copy, Debug)]
struct Alloc {
    seq: u64,
    off: u32,
}

#[derive(Debug)]
pub(super) struct ReorderStore {
    data: Box<[u8]>,
    slots: Box<[Slot]>,
    mask: u64,
    fifo: VecDeque<Alloc>,
    /// Next write offset.
    wpos: usize,
    /// The live region wraps: it is `[head, cap) + [0, wpos)`, free space `[wpos, head)`.
    wrapped: bool,
    /// Messages held and not yet delivered.
    held: usize,
    bytes_held: usize,
}

impl ReorderStore {
    /// A store of `capacity_bytes` bytes for messages at most `window` (rounded up to a power
    /// of two) ahead of the next expected one.
    pub(super) fn new(capacity_bytes: usize, window: usize) -> Self {
        let window = window.max(1).next_power_of_two();
        ReorderStore {
            data: vec![0; capacity_bytes].into_boxed_slice(),
            slots: vec![FREE; window].into_boxed_slice(),
            mask: window as u64 - 1,
            fifo: VecDeque::with_capacity(window),
            wpos: 0,
            wrapped: false,
            held: 0,
            bytes_held: 0,
        }
    }

    /// Messages held.
    pub(super) fn len(&self) -> usize {
        self.held
    }

    /// Bytes of the messages held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes_held
    }

    #[inline]
    fn slot(&self, seq: u64) -> &Slot {
        // The mask keeps the index below `slots.len()`.
        &self.slots[(seq & self.mask) as usize]
    }

    /// Whether `seq` is held.
    #[inline]
    pub(super) fn contains(&self, seq: u64) -> bool {
        self.held != 0 && self.slot(seq).seq == seq
    }

    /// The held copy of `seq`.
    #[inline]
    pub(super) fn get(&self, seq: u64) -> Option<&[u8]> {
        if self.held == 0 {
            return None;
        }
        let s = self.slot(seq);
        (s.seq == seq).then(|| {
            let off = s.off as usize;
            &self.data[off..off + usize::from(s.len)]
        })
    }

    /// Forgets `seq` (after delivering it). Its bytes are reused once every copy made before
    /// it is gone as well.
    #[inline]
    pub(super) fn remove(&mut self, seq: u64) {
        let i = (seq & self.mask) as usize;
        if self.slots[i].seq == seq {
            self.bytes_held -= usize::from(self.slots[i].len);
            self.slots[i] = FREE;
            self.held -= 1;
        }
    }

    /// Gives back the space of delivered copies at the head of the allocation order.
    fn reclaim(&mut self) {
        while let Some(&front) = self.fifo.front() {
            if self.slot(front.seq).seq == front.seq {
                break; // still held
            }
            self.fifo.pop_front();
            match self.fifo.front() {
                // The head moved from the high part of a wrapped region to its low part.
                Some(next) if next.off < front.off => self.wrapped = false,
                Some(_) => {}
                None => {
                    self.wpos = 0;
                    self.wrapped = false;
                }
            }
        }
    }

    /// Where `len` bytes fit, if they do.
    fn place(&self, len: usize) -> Option<usize> {
        let cap = self.data.len();
        let Some(head) = self.fifo.front() else {
            return (len <= cap).then_some(0);
        };
        let head = head.off as usize;
        if self.wrapped {
            (head - self.wpos >= len).then_some(self.wpos)
        } else if cap - self.wpos >= len {
            Some(self.wpos)
        } else {
            (len <= head).then_some(0)
        }
    }

    /// Copies message `seq`, which lies in `[expected, expected + window)` and is not held.
    /// Returns `false`, storing nothing, when the window or the bytes are exhausted.
    pub(super) fn insert(&mut self, expected: u64, seq: u64, msg: &[u8]) -> bool {
        if seq.wrapping_sub(expected) > self.mask || self.fifo.len() == self.fifo.capacity() {
            return false;
        }
        let i = (seq & self.mask) as usize;
        if self.slots[i].seq != EMPTY {
            return false;
        }
        self.reclaim();
        if self.fifo.len() == self.fifo.capacity() {
            return false;
        }
        let Some(off) = self.place(msg.len()) else {
            return false;
        };
        let (Ok(off32), Ok(len16)) = (u32::try_from(off), u16::try_from(msg.len())) else {
            return false;
        };
        if !self.fifo.is_empty() && off < self.wpos {
            // Placed at the start while the region was not empty: it now wraps.
            self.wrapped = true;
        }
        self.data[off..off + msg.len()].copy_from_slice(msg);
        self.wpos = off + msg.len();
        self.slots[i] = Slot {
            seq,
            off: off32,
            len: len16,
        };
        self.fifo.push_back(Alloc { seq, off: off32 });
        self.held += 1;
        self.bytes_held += msg.len();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_and_returns_copies() {
        let mut s = ReorderStore::new(64, 8);
        assert!(s.insert(1, 3, b"three"));
        assert!(s.insert(1, 2, b"two"));
        assert!(s.contains(3) && s.contains(2) && !s.contains(4));
        assert_eq!(s.get(2), Some(&b"two"[..]));
        assert_eq!(s.get(3), Some(&b"three"[..]));
        assert_eq!((s.len(), s.bytes()), (2, 8));
        s.remove(2);
        s.remove(3);
        assert_eq!((s.len(), s.bytes()), (0, 0));
        assert_eq!(s.get(3), None);
    }

    #[test]
    fn window_bounds_the_distance_ahead() {
        let mut s = ReorderStore::new(1024, 4);
        assert!(s.insert(10, 13, b"x"));
        assert!(!s.insert(10, 14, b"x"), "outside the window of 4");
        assert!(!s.insert(10, 13, b"y"), "already held");
    }

    #[test]
    fn bytes_are_reused_in_allocation_order_and_never_overwritten() {
        // 10 bytes: three 3-byte copies fit, a fourth does not.
        let mut s = ReorderStore::new(10, 16);
        assert!(s.insert(1, 2, b"aaa"));
        assert!(s.insert(1, 3, b"bbb"));
        assert!(s.insert(1, 4, b"ccc"));
        assert!(!s.insert(1, 5, b"ddd"));
        // Delivering 3 first frees nothing yet (2 was copied before it).
        s.remove(3);
        assert!(!s.insert(1, 5, b"ddd"));
        s.remove(2);
        // Head now at 4 (offset 6): 0..6 is free, the write wraps to 0.
        assert!(s.insert(4, 5, b"ddd"));
        assert!(s.insert(4, 6, b"eee"));
        assert!(!s.insert(4, 7, b"f"), "only [6, 6) is free");
        assert_eq!(s.get(4), Some(&b"ccc"[..]));
        assert_eq!(s.get(5), Some(&b"ddd"[..]));
        assert_eq!(s.get(6), Some(&b"eee"[..]));
        s.remove(4);
        // The head moved to the low part: the region no longer wraps.
        assert!(s.insert(5, 7, b"ffff"));
        assert_eq!(s.get(5), Some(&b"ddd"[..]));
        assert_eq!(s.get(7), Some(&b"ffff"[..]));
        for q in [5, 6, 7] {
            s.remove(q);
        }
        assert_eq!(s.len(), 0);
        assert!(
            s.insert(8, 9, &[7; 10]),
            "an empty store offers all its bytes"
        );
        assert!(!s.insert(8, 10, &[7; 11]), "larger than the store");
    }

    #[test]
    fn empty_messages_take_a_place_too() {
        let mut s = ReorderStore::new(4, 8);
        assert!(s.insert(1, 2, b"abcd"));
        assert!(s.insert(1, 3, b""));
        assert_eq!(s.get(3), Some(&b""[..]));
        s.remove(2);
        assert!(s.insert(1, 4, b"ab"));
        assert_eq!(s.get(4), Some(&b"ab"[..]));
        assert_eq!(s.get(3), Some(&b""[..]));
    }

    /// A model check: random inserts and removals never corrupt a held copy.
    #[test]
    fn random_use_keeps_every_copy_intact() {
        use std::collections::BTreeMap;
        let mut s = ReorderStore::new(97, 32);
        let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut expected = 1u64;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let r = rnd();
            if r % 3 == 0 {
                // Deliver the oldest held, as the sequencer does.
                if let Some((&q, _)) = model.iter().next() {
                    let want = model.remove(&q).unwrap();
                    assert_eq!(s.get(q), Some(&want[..]));
                    s.remove(q);
                    expected = q + 1;
                }
            } else {
                let seq = expected + 1 + (r >> 8) % 30;
                let len = ((r >> 20) % 20) as usize;
                let msg: Vec<u8> = (0..len)
                    .map(|i| (seq as u8).wrapping_add(i as u8))
                    .collect();
                let held = model.contains_key(&seq);
                let ok = s.insert(expected, seq, &msg);
                assert!(!(held && ok));
                if ok {
                    model.insert(seq, msg);
                }
            }
            assert_eq!(s.len(), model.len());
            for (&q, m) in &model {
                assert_eq!(s.get(q), Some(&m[..]), "copy of {q}");
            }
        }
    }
}
