//! The one-way channels the ring scenario measures, behind one small interface so that every
//! system is driven by exactly the same loops.
//!
//! A message is `msg_bytes` long (a const generic `N` here); its first 16 bytes carry the
//! sequence number and a timestamp (little-endian `u64`s), the rest is filler that is copied
//! like a real payload. The floor is the exception: it carries one `u64` word in a cache line.
//!
//! Nothing here allocates, locks or makes a system call per message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

/// What one message carries that the harness looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Msg {
    /// Sequence number, 0-based per run.
    pub seq: u64,
    /// A raw clock reading: the send time (ping-pong) or the intended send time (fixed rate).
    pub stamp: u64,
}

/// Bytes of a message the harness reads and writes (the rest is filler).
pub const HEADER_BYTES: usize = 16;

/// A failure of a channel operation; small and `Copy` so the hot loops stay cheap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XferError {
    /// Records were lost (a broadcast consumer was lapped).
    Overrun {
        /// Records skipped.
        lost: u64,
    },
    /// The other side went away or closed the stream.
    Closed,
    /// The segment was replaced by a new producer.
    NewEpoch,
    /// A message was too large for the channel.
    TooLarge,
    /// The channel reported a corrupt record.
    Corrupt,
    /// A delivered payload was shorter than the harness header.
    ShortPayload {
        /// Its length.
        len: usize,
    },
}

impl std::fmt::Display for XferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XferError::Overrun { lost } => write!(f, "consumer overrun, {lost} records lost"),
            XferError::Closed => f.write_str("channel closed by the other side"),
            XferError::NewEpoch => f.write_str("segment replaced by a new producer"),
            XferError::TooLarge => f.write_str("message too large for the channel"),
            XferError::Corrupt => f.write_str("the channel reported a corrupt record"),
            XferError::ShortPayload { len } => write!(
                f,
                "payload of {len} bytes is shorter than the {HEADER_BYTES}-byte harness header"
            ),
        }
    }
}

/// The sending half of a one-way channel.
pub trait MsgTx: Send {
    /// Sends `m`; `Ok(false)` if the channel is full right now (try again).
    fn try_send(&mut self, m: Msg) -> Result<bool, XferError>;
}

/// The receiving half of a one-way channel.
pub trait MsgRx: Send {
    /// Takes the next message, if any.
    fn try_recv(&mut self) -> Result<Option<Msg>, XferError>;
    /// Takes up to `max` messages in one go, handing each to `f`; returns how many.
    fn recv_batch<F: FnMut(Msg)>(&mut self, max: usize, f: F) -> Result<usize, XferError>;
    /// Whether delivered messages carry their real sequence number (the floor may not).
    fn carries_seq(&self) -> bool {
        true
    }
}

/// Writes `m` into the first [`HEADER_BYTES`] of `buf` (which is at least that long).
#[inline(always)]
pub fn encode(buf: &mut [u8], m: Msg) {
    buf[0..8].copy_from_slice(&m.seq.to_le_bytes());
    buf[8..16].copy_from_slice(&m.stamp.to_le_bytes());
}

/// Reads the harness header of a payload.
#[inline(always)]
pub fn decode(p: &[u8]) -> Result<Msg, XferError> {
    match (p.get(0..8), p.get(8..16)) {
        (Some(a), Some(b)) => {
            let mut s = [0u8; 8];
            let mut t = [0u8; 8];
            s.copy_from_slice(a);
            t.copy_from_slice(b);
            Ok(Msg {
                seq: u64::from_le_bytes(s),
                stamp: u64::from_le_bytes(t),
            })
        }
        _ => Err(XferError::ShortPayload { len: p.len() }),
    }
}

/// A message buffer with a recognisable filler pattern after the header.
pub fn filled<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    b
}

// ---------------------------------------------------------------------------------------------
// floor: one cache line each way

/// Which field of a [`Msg`] the floor's single word carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloorWord {
    /// `seq + 1` (ping-pong: one message in flight, the echo is the acknowledgement).
    Seq,
    /// The timestamp (fixed rate: the receiver acknowledges each word on a second line).
    Stamp,
}

type Cell = Arc<CachePadded<AtomicU64>>;

/// Sending half of the floor: stores a word into a cache line of its own.
#[derive(Debug)]
pub struct FloorTx {
    cell: Cell,
    ack: Option<Cell>,
    word: FloorWord,
    last: u64,
}

/// Receiving half of the floor: watches the line for a new word.
#[derive(Debug)]
pub struct FloorRx {
    cell: Cell,
    ack: Option<Cell>,
    word: FloorWord,
    last: u64,
}

/// A floor channel. With `acked`, the receiver writes every word it saw back on a second line
/// and the sender waits for it before the next store (no message is ever overwritten unseen).
pub fn floor(word: FloorWord, acked: bool) -> (FloorTx, FloorRx) {
    let cell: Cell = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let ack: Option<Cell> = acked.then(|| Arc::new(CachePadded::new(AtomicU64::new(0))));
    (
        FloorTx {
            cell: cell.clone(),
            ack: ack.clone(),
            word,
            last: 0,
        },
        FloorRx {
            cell,
            ack,
            word,
            last: 0,
        },
    )
}

impl MsgTx for FloorTx {
    #[inline]
    fn try_send(&mut self, m: Msg) -> Result<bool, XferError> {
        if let Some(ack) = &self.ack {
            // Acquire pairs with the receiver's Release store of the acknowledgement.
            if ack.load(Ordering::Acquire) != self.last {
                return Ok(false);
            }
        }
        let v = match self.word {
            FloorWord::Seq => m.seq.wrapping_add(1),
            // A word must differ from the previous one and from the initial 0.
            FloorWord::Stamp => m.stamp.max(self.last.wrapping_add(1)),
        };
        // Release pairs with the receiver's Acquire load of the cell.
        self.cell.store(v, Ordering::Release);
        self.last = v;
        Ok(true)
    }
}

impl MsgRx for FloorRx {
    #[inline]
    fn try_recv(&mut self) -> Result<Option<Msg>, XferError> {
        // Acquire pairs with the sender's Release store.
        let v = self.cell.load(Ordering::Acquire);
        if v == self.last {
            return Ok(None);
        }
        self.last = v;
        if let Some(ack) = &self.ack {
            // Release pairs with the sender's Acquire load before its next store.
            ack.store(v, Ordering::Release);
        }
        Ok(Some(match self.word {
            FloorWord::Seq => Msg {
                seq: v.wrapping_sub(1),
                stamp: 0,
            },
            FloorWord::Stamp => Msg { seq: 0, stamp: v },
        }))
    }

    fn recv_batch<F: FnMut(Msg)>(&mut self, _max: usize, mut f: F) -> Result<usize, XferError> {
        Ok(match self.try_recv()? {
            Some(m) => {
                f(m);
                1
            }
            None => 0,
        })
    }

    fn carries_seq(&self) -> bool {
        self.word == FloorWord::Seq
    }
}

// ---------------------------------------------------------------------------------------------
// rtrb: a wait-free SPSC ring of `[u8; N]` elements

/// Sending half over `rtrb`.
#[derive(Debug)]
pub struct RtrbTx<const N: usize> {
    p: rtrb::Producer<[u8; N]>,
    buf: [u8; N],
}

/// Receiving half over `rtrb`.
#[derive(Debug)]
pub struct RtrbRx<const N: usize> {
    c: rtrb::Consumer<[u8; N]>,
}

/// An `rtrb` channel of `slots` messages.
pub fn rtrb_channel<const N: usize>(slots: usize) -> (RtrbTx<N>, RtrbRx<N>) {
    let (p, c) = rtrb::RingBuffer::new(slots);
    (RtrbTx { p, buf: filled() }, RtrbRx { c })
}

impl<const N: usize> MsgTx for RtrbTx<N> {
    #[inline]
    fn try_send(&mut self, m: Msg) -> Result<bool, XferError> {
        encode(&mut self.buf, m);
        Ok(self.p.push(self.buf).is_ok())
    }
}

impl<const N: usize> MsgRx for RtrbRx<N> {
    #[inline]
    fn try_recv(&mut self) -> Result<Option<Msg>, XferError> {
        match self.c.pop() {
            Ok(b) => decode(&b).map(Some),
            Err(_) => Ok(None),
        }
    }

    #[inline]
    fn recv_batch<F: FnMut(Msg)>(&mut self, max: usize, mut f: F) -> Result<usize, XferError> {
        let n = self.c.slots().min(max);
        if n == 0 {
            return Ok(0);
        }
        let chunk = self.c.read_chunk(n).map_err(|_| XferError::Closed)?;
        let (a, b) = chunk.as_slices();
        for m in a.iter().chain(b) {
            f(decode(m)?);
        }
        chunk.commit_all();
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// crossbeam-channel: a bounded MPMC channel of `[u8; N]`

/// Sending half over a bounded `crossbeam-channel`.
#[derive(Debug)]
pub struct CrossbeamTx<const N: usize> {
    s: crossbeam_channel::Sender<[u8; N]>,
    buf: [u8; N],
}

/// Receiving half over a bounded `crossbeam-channel`.
#[derive(Debug)]
pub struct CrossbeamRx<const N: usize> {
    r: crossbeam_channel::Receiver<[u8; N]>,
}

/// A bounded `crossbeam-channel` of `slots` messages.
pub fn crossbeam_channel<const N: usize>(slots: usize) -> (CrossbeamTx<N>, CrossbeamRx<N>) {
    let (s, r) = crossbeam_channel::bounded(slots);
    (CrossbeamTx { s, buf: filled() }, CrossbeamRx { r })
}

impl<const N: usize> MsgTx for CrossbeamTx<N> {
    #[inline]
    fn try_send(&mut self, m: Msg) -> Result<bool, XferError> {
        encode(&mut self.buf, m);
        match self.s.try_send(self.buf) {
            Ok(()) => Ok(true),
            Err(crossbeam_channel::TrySendError::Full(_)) => Ok(false),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(XferError::Closed),
        }
    }
}

impl<const N: usize> MsgRx for CrossbeamRx<N> {
    #[inline]
    fn try_recv(&mut self) -> Result<Option<Msg>, XferError> {
        match self.r.try_recv() {
            Ok(b) => decode(&b).map(Some),
            Err(crossbeam_channel::TryRecvError::Empty) => Ok(None),
            Err(crossbeam_channel::TryRecvError::Disconnected) => Err(XferError::Closed),
        }
    }

    #[inline]
    fn recv_batch<F: FnMut(Msg)>(&mut self, max: usize, mut f: F) -> Result<usize, XferError> {
        let mut n = 0;
        while n < max {
            match self.r.try_recv() {
                Ok(b) => {
                    f(decode(&b)?);
                    n += 1;
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    return Err(XferError::Closed);
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: MsgTx, R: MsgRx>(mut tx: T, mut rx: R, cap: usize) {
        assert_eq!(rx.try_recv().unwrap(), None);
        for i in 0..cap as u64 {
            assert!(
                tx.try_send(Msg {
                    seq: i,
                    stamp: 100 + i
                })
                .unwrap()
            );
        }
        assert!(!tx.try_send(Msg { seq: 99, stamp: 0 }).unwrap(), "full");
        let m = rx.try_recv().unwrap().unwrap();
        assert_eq!(m, Msg { seq: 0, stamp: 100 });
        let mut got = Vec::new();
        let n = rx.recv_batch(64, |m| got.push(m)).unwrap();
        assert_eq!(n, cap - 1);
        assert_eq!(got.last().unwrap().seq, cap as u64 - 1);
        assert_eq!(rx.recv_batch(64, |_| ()).unwrap(), 0);
    }

    #[test]
    fn rtrb_and_crossbeam_carry_header_and_backpressure() {
        let (t, r) = rtrb_channel::<64>(8);
        roundtrip(t, r, 8);
        let (t, r) = crossbeam_channel::<16>(4);
        roundtrip(t, r, 4);
    }

    #[test]
    fn floor_carries_one_word() {
        let (mut t, mut r) = floor(FloorWord::Seq, false);
        assert_eq!(r.try_recv().unwrap(), None);
        assert!(t.try_send(Msg { seq: 0, stamp: 5 }).unwrap());
        assert_eq!(r.try_recv().unwrap(), Some(Msg { seq: 0, stamp: 0 }));
        assert_eq!(r.try_recv().unwrap(), None);

        let (mut t, mut r) = floor(FloorWord::Stamp, true);
        assert!(t.try_send(Msg { seq: 0, stamp: 7 }).unwrap());
        assert!(
            !t.try_send(Msg { seq: 1, stamp: 9 }).unwrap(),
            "unacknowledged"
        );
        assert_eq!(r.try_recv().unwrap(), Some(Msg { seq: 0, stamp: 7 }));
        assert!(t.try_send(Msg { seq: 1, stamp: 9 }).unwrap());
        assert!(!r.carries_seq());
    }

    #[test]
    fn short_payload_is_an_error() {
        assert_eq!(decode(&[0u8; 10]), Err(XferError::ShortPayload { len: 10 }));
        let mut b = [0u8; 16];
        encode(&mut b, Msg { seq: 3, stamp: 4 });
        assert_eq!(decode(&b), Ok(Msg { seq: 3, stamp: 4 }));
    }
}
