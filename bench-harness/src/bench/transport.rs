//! The one-way channels the ring scenario measures, behind one small interface so that every
//! system is driven by exactly the same loops.
//!
//! A message is `msg_bytes` long (a const generic `N` here); its first 16 bytes carry the
//! sequence number and a timestamp (little-endian `u64`s), the rest is filler that is copied
//! like a real payload. Every receiver reads the whole message back and checks the filler, as a
//! consumer decoding its message reads all of it: a queue whose reader looked at the first 16
//! bytes only would never move the lines behind them between the cores. The floor is the
//! exception: it carries one `u64` word in a cache line.
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

/// The longest message whose filler [`decode`] can check.
pub const MAX_CHECKED_BYTES: usize = 4096;

/// Byte `i` of the filler pattern of [`filled`].
const fn filler_byte(i: usize) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(7)
}

/// `BODY_XOR[w]`: the XOR of the filler's little-endian words from the end of the header up to
/// word `w` (exclusive), what [`decode`] folds a message of `8 * w` bytes to.
const BODY_XOR: [u64; MAX_CHECKED_BYTES / 8 + 1] = {
    let mut t = [0u64; MAX_CHECKED_BYTES / 8 + 1];
    let mut w = HEADER_BYTES / 8;
    while w < MAX_CHECKED_BYTES / 8 {
        let mut word = 0u64;
        let mut b = 0;
        while b < 8 {
            word |= (filler_byte(8 * w + b) as u64) << (8 * b);
            b += 1;
        }
        t[w + 1] = t[w] ^ word;
        w += 1;
    }
    t
};

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
    /// A peer library reported an error on its data path.
    Peer {
        /// What failed.
        what: &'static str,
    },
    /// A delivered payload was shorter than the harness header.
    ShortPayload {
        /// Its length.
        len: usize,
    },
    /// A delivered payload's filler was not what was sent (or it was longer than
    /// [`MAX_CHECKED_BYTES`]).
    AlteredBody {
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
            XferError::Peer { what } => write!(f, "the channel's library reported: {what}"),
            XferError::ShortPayload { len } => write!(
                f,
                "payload of {len} bytes is shorter than the {HEADER_BYTES}-byte harness header"
            ),
            XferError::AlteredBody { len } => write!(
                f,
                "payload of {len} bytes arrived with its filler altered (or is over {MAX_CHECKED_BYTES} bytes)"
            ),
        }
    }
}

/// The sending half of a one-way channel. (Not `Send` as such: halves that may not move
/// between threads are made on the thread that uses them.)
pub trait MsgTx {
    /// Sends `m`; `Ok(false)` if the channel is full right now (try again).
    fn try_send(&mut self, m: Msg) -> Result<bool, XferError>;

    /// Sends up to `max` messages numbered from `first` (stamp 0) in one go, through the
    /// channel's batched form where it has one (written in place, published once); returns
    /// how many it took (0: full right now). Without a batched form: `try_send` in a loop.
    fn send_batch(&mut self, first: u64, max: usize) -> Result<usize, XferError> {
        let mut n = 0;
        while n < max {
            let m = Msg {
                seq: first + n as u64,
                stamp: 0,
            };
            if !self.try_send(m)? {
                break;
            }
            n += 1;
        }
        Ok(n)
    }
}

/// The receiving half of a one-way channel.
pub trait MsgRx {
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

/// Reads the harness header of a payload, and reads the rest to check that it is the filler
/// of [`filled`] (an XOR fold of its words against a precomputed value, and a byte compare of a
/// tail shorter than a word).
#[inline(always)]
pub fn decode(p: &[u8]) -> Result<Msg, XferError> {
    let (Some(head), Some(body)) = (p.get(..HEADER_BYTES), p.get(HEADER_BYTES..)) else {
        return Err(XferError::ShortPayload { len: p.len() });
    };
    let words = p.len() / 8;
    let Some(&want) = BODY_XOR.get(words) else {
        return Err(XferError::AlteredBody { len: p.len() });
    };
    let mut chunks = body.chunks_exact(8);
    let mut got = 0u64;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        got ^= u64::from_le_bytes(w);
    }
    let tail_ok = chunks
        .remainder()
        .iter()
        .enumerate()
        .all(|(i, &b)| b == filler_byte(8 * words + i));
    if got != want || !tail_ok {
        return Err(XferError::AlteredBody { len: p.len() });
    }
    let mut s = [0u8; 8];
    let mut t = [0u8; 8];
    s.copy_from_slice(&head[0..8]);
    t.copy_from_slice(&head[8..16]);
    Ok(Msg {
        seq: u64::from_le_bytes(s),
        stamp: u64::from_le_bytes(t),
    })
}

/// A message buffer with a recognisable filler pattern after the header.
pub fn filled<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    for (i, x) in b.iter_mut().enumerate() {
        *x = filler_byte(i);
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

    /// `write_chunk_uninit` + `fill_from_iter`: the slots written in place, one commit.
    #[inline]
    fn send_batch(&mut self, first: u64, max: usize) -> Result<usize, XferError> {
        let n = self.p.slots().min(max);
        if n == 0 {
            return Ok(0);
        }
        let chunk = self
            .p
            .write_chunk_uninit(n)
            .map_err(|_| XferError::Closed)?;
        let buf = self.buf;
        Ok(chunk.fill_from_iter((first..first + n as u64).map(|seq| {
            let mut b = buf;
            encode(&mut b, Msg { seq, stamp: 0 });
            b
        })))
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
// disruptor: a single-producer Disruptor of `[u8; N]` events, read by an event poller

/// Sending half over a single-producer `disruptor`.
pub struct DisruptorTx<const N: usize> {
    p: disruptor::SingleProducer<[u8; N], disruptor::SingleConsumerBarrier>,
    buf: [u8; N],
}

/// Receiving half over a `disruptor` event poller (busy-spun by the harness's loops).
pub struct DisruptorRx<const N: usize> {
    c: disruptor::EventPoller<[u8; N], disruptor::SingleProducerBarrier>,
}

impl<const N: usize> std::fmt::Debug for DisruptorTx<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DisruptorTx")
    }
}

impl<const N: usize> std::fmt::Debug for DisruptorRx<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DisruptorRx")
    }
}

/// A single-producer `disruptor` of `slots` events (a power of two) with one event poller and
/// no managed threads: both ends are driven by the harness's loops, like the other systems.
pub fn disruptor_channel<const N: usize>(slots: usize) -> (DisruptorTx<N>, DisruptorRx<N>) {
    let (c, builder) = disruptor::build_single_producer(slots, || [0u8; N], disruptor::BusySpin)
        .new_event_poller();
    (
        DisruptorTx {
            p: builder.build(),
            buf: filled(),
        },
        DisruptorRx { c },
    )
}

impl<const N: usize> MsgTx for DisruptorTx<N> {
    #[inline]
    fn try_send(&mut self, m: Msg) -> Result<bool, XferError> {
        use disruptor::Producer;
        let buf = &self.buf;
        Ok(self
            .p
            .try_publish(|e| {
                *e = *buf;
                encode(e, m);
            })
            .is_ok())
    }

    /// `try_batch_publish`: the events written in place, one publication of the last sequence.
    #[inline]
    fn send_batch(&mut self, first: u64, max: usize) -> Result<usize, XferError> {
        use disruptor::Producer;
        let mut n = max;
        while n > 0 {
            let buf = &self.buf;
            let published = self.p.try_batch_publish(n, |events| {
                for (seq, e) in (first..).zip(events) {
                    *e = *buf;
                    encode(e, Msg { seq, stamp: 0 });
                }
            });
            match published {
                Ok(_) => return Ok(n),
                // Fewer free slots than asked: as many as there are.
                Err(disruptor::MissingFreeSlots(missing)) => {
                    n = n.saturating_sub(usize::try_from(missing).unwrap_or(usize::MAX));
                }
            }
        }
        Ok(0)
    }
}

impl<const N: usize> MsgRx for DisruptorRx<N> {
    #[inline]
    fn try_recv(&mut self) -> Result<Option<Msg>, XferError> {
        match self.c.take(1) {
            Ok(mut events) => match (&mut events).next() {
                Some(e) => decode(e).map(Some),
                None => Ok(None),
            },
            Err(disruptor::Polling::NoEvents) => Ok(None),
            Err(disruptor::Polling::Shutdown) => Err(XferError::Closed),
        }
    }

    #[inline]
    fn recv_batch<F: FnMut(Msg)>(&mut self, max: usize, mut f: F) -> Result<usize, XferError> {
        match self.c.take(max as u64) {
            Ok(mut events) => {
                let mut n = 0;
                for e in &mut events {
                    f(decode(e)?);
                    n += 1;
                }
                Ok(n)
            }
            Err(disruptor::Polling::NoEvents) => Ok(0),
            Err(disruptor::Polling::Shutdown) => Err(XferError::Closed),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// iceoryx2: publish-subscribe over its IPC service (feature `peers-iceoryx2`)

/// `iceoryx2` publish-subscribe over its IPC service (`ipc::Service`), set up as its own
/// publish-subscribe benchmark sets it up: `[u8]` slices of the message size, loaned,
/// written and sent; one publisher and one subscriber per direction, no history, a subscriber
/// buffer of one sample with safe overflow. That setup keeps only one message in flight, so
/// iceoryx2 is measured by ping-pong only. Its ports may not move between threads, so each half
/// is made on the thread that uses it (the engine's `ping_pong_made`), each with its own node,
/// opening the service by name.
#[cfg(feature = "peers-iceoryx2")]
pub mod ice {
    use iceoryx2::port::publisher::Publisher;
    use iceoryx2::port::subscriber::Subscriber;
    use iceoryx2::prelude::*;
    use iceoryx2::service::port_factory::publish_subscribe::PortFactory;

    use super::{Msg, MsgRx, MsgTx, XferError, decode, encode, filled};
    use crate::bench::BenchError;

    type Ipc = ipc::Service;

    /// Sending half: a publisher of `N`-byte slices.
    pub struct IceTx<const N: usize> {
        p: Publisher<Ipc, [u8], ()>,
        buf: [u8; N],
        _service: Slices,
        _node: Node<Ipc>,
    }

    /// Receiving half: a subscriber.
    pub struct IceRx {
        s: Subscriber<Ipc, [u8], ()>,
        _service: Slices,
        _node: Node<Ipc>,
    }

    impl<const N: usize> std::fmt::Debug for IceTx<N> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("IceTx")
        }
    }

    impl std::fmt::Debug for IceRx {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("IceRx")
        }
    }

    fn setup_err(name: &str, e: impl std::fmt::Debug) -> BenchError {
        BenchError::Transfer {
            system: "iceoryx2".into(),
            reason: format!("setting up service {name}: {e:?}"),
        }
    }

    /// A service of `[u8]` slices over the IPC service.
    type Slices = PortFactory<Ipc, [u8], ()>;

    /// A node of this thread and the service `name`, created or opened with its benchmark's
    /// settings: no history, a subscriber buffer of one sample, safe overflow.
    fn open(name: &str) -> Result<(Node<Ipc>, Slices), BenchError> {
        set_log_level(LogLevel::Error);
        let node = NodeBuilder::new()
            .create::<Ipc>()
            .map_err(|e| setup_err(name, e))?;
        let service_name: ServiceName = name.try_into().map_err(|e| setup_err(name, e))?;
        let service = node
            .service_builder(&service_name)
            .publish_subscribe::<[u8]>()
            .max_publishers(1)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(1)
            .enable_safe_overflow(true)
            .open_or_create()
            .map_err(|e| setup_err(name, e))?;
        Ok((node, service))
    }

    /// The publishing half of service `name`.
    pub fn tx<const N: usize>(name: &str) -> Result<IceTx<N>, BenchError> {
        let (node, service) = open(name)?;
        let p = service
            .publisher_builder()
            .initial_max_slice_len(N)
            .create()
            .map_err(|e| setup_err(name, e))?;
        Ok(IceTx {
            p,
            buf: filled(),
            _service: service,
            _node: node,
        })
    }

    /// The subscribing half of service `name`.
    pub fn rx(name: &str) -> Result<IceRx, BenchError> {
        let (node, service) = open(name)?;
        let s = service
            .subscriber_builder()
            .create()
            .map_err(|e| setup_err(name, e))?;
        Ok(IceRx {
            s,
            _service: service,
            _node: node,
        })
    }

    impl<const N: usize> MsgTx for IceTx<N> {
        #[inline]
        fn try_send(&mut self, m: Msg) -> Result<bool, XferError> {
            encode(&mut self.buf, m);
            let sample = match self.p.loan_slice_uninit(N) {
                Ok(s) => s,
                // Every sample is still held downstream: full for now.
                Err(_) => return Ok(false),
            };
            sample
                .write_from_slice(&self.buf)
                .send()
                .map_err(|_| XferError::Peer {
                    what: "send failed",
                })?;
            Ok(true)
        }
    }

    impl MsgRx for IceRx {
        #[inline]
        fn try_recv(&mut self) -> Result<Option<Msg>, XferError> {
            match self.s.receive() {
                Ok(Some(sample)) => decode(sample.payload()).map(Some),
                Ok(None) => Ok(None),
                Err(_) => Err(XferError::Peer {
                    what: "receive failed",
                }),
            }
        }

        #[inline]
        fn recv_batch<F: FnMut(Msg)>(&mut self, max: usize, mut f: F) -> Result<usize, XferError> {
            let mut n = 0;
            while n < max {
                match self.try_recv()? {
                    Some(m) => {
                        f(m);
                        n += 1;
                    }
                    None => break,
                }
            }
            Ok(n)
        }
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
    fn rtrb_disruptor_and_crossbeam_carry_header_and_backpressure() {
        let (t, r) = rtrb_channel::<64>(8);
        roundtrip(t, r, 8);
        let (t, r) = disruptor_channel::<64>(8);
        roundtrip(t, r, 8);
        let (t, r) = crossbeam_channel::<16>(4);
        roundtrip(t, r, 4);
    }

    /// `send_batch` takes what fits, numbered on from `first`, and nothing when full.
    fn batches<T: MsgTx, R: MsgRx>(mut tx: T, mut rx: R, cap: usize) {
        assert_eq!(tx.send_batch(0, 3).unwrap(), 3);
        assert_eq!(tx.send_batch(3, 2 * cap).unwrap(), cap - 3);
        assert_eq!(tx.send_batch(cap as u64, 4).unwrap(), 0, "full");
        let mut got = Vec::new();
        assert_eq!(rx.recv_batch(2 * cap, |m| got.push(m.seq)).unwrap(), cap);
        assert_eq!(got, (0..cap as u64).collect::<Vec<_>>());
        assert_eq!(tx.send_batch(cap as u64, 2).unwrap(), 2);
        assert_eq!(rx.try_recv().unwrap().map(|m| m.seq), Some(cap as u64));
    }

    #[test]
    fn batched_sends_number_messages_in_order() {
        let (t, r) = rtrb_channel::<64>(8);
        batches(t, r, 8);
        let (t, r) = disruptor_channel::<64>(8);
        batches(t, r, 8);
        let (t, r) = crossbeam_channel::<32>(8);
        batches(t, r, 8);
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

    #[test]
    fn decode_reads_and_checks_every_byte_of_the_filler() {
        let m = Msg { seq: 5, stamp: 6 };
        for len in [16, 17, 23, 24, 64, 100, 1024, 4096] {
            let mut b = filled::<4096>();
            encode(&mut b, m);
            assert_eq!(decode(&b[..len]), Ok(m), "{len} bytes as sent");
            for at in HEADER_BYTES..len {
                let mut bad = b;
                bad[at] ^= 0x40;
                assert_eq!(
                    decode(&bad[..len]),
                    Err(XferError::AlteredBody { len }),
                    "{len} bytes, byte {at} altered"
                );
            }
        }
        let mut big = vec![0u8; MAX_CHECKED_BYTES + 8];
        big[..MAX_CHECKED_BYTES].copy_from_slice(&filled::<MAX_CHECKED_BYTES>());
        assert_eq!(decode(&big), Err(XferError::AlteredBody { len: big.len() }));
    }
}
