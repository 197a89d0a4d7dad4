//! The read side: join, poll (zero-copy, speculative in broadcast mode), validation, overrun
//! resync, lossless registration, waiting, liveness.

use std::fmt;
#[cfg(not(loom))]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::RingHandle;
use crate::config::{ConsumerOptions, Mode, Resync, StartAt, WaitStrategy};
use crate::error::{PollError, SetupError};
use crate::layout::{
    MARK_NEXT_UNCLEARED, NO_RECORD, PADDING_FLAG, RECORD_HEADER_LEN, SLOT_ACTIVE, SLOT_CLAIMED,
    SLOT_FREE, STATE_CLOSED, STATE_LIVE, STATE_SUPERSEDED, marker_seq, record_size, slot_ctl,
    slot_generation, slot_pid, slot_state,
};
use crate::segment::{Segment, os};
use crate::sync::{Ordering, fence, spin_loop, yield_now};

/// Longest single futex sleep of [`WaitStrategy::Blocking`]: the worst-case cost of a missed
/// wake.
const MAX_BLOCK_SLICE: Duration = Duration::from_millis(2);

/// One record handed to a poll callback, borrowed straight from the ring.
///
/// In broadcast mode (and for unregistered readers of lossless rings) the view is
/// *speculative*: the producer may overwrite the bytes while the callback runs. The poll
/// validates after the callback returns; if it then returns
/// [`PollError::Overrun`], whatever the callback derived from this record must be discarded.
/// Use [`Consumer::poll_copy`] to get only validated bytes.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    payload: &'a [u8],
    msg_type: u32,
    seq: u64,
}

impl<'a> Record<'a> {
    /// The payload (8-byte aligned, exactly the committed length).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The application's type tag. Every `u32` value is available (padding is marked in the
    /// length word, not by a reserved type).
    #[inline]
    pub fn msg_type(&self) -> u32 {
        self.msg_type
    }

    /// Per-stream sequence number: 0 for the first record of an epoch, +1 per record.
    #[inline]
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("seq", &self.seq)
            .field("msg_type", &self.msg_type)
            .field("len", &self.payload.len())
            .finish()
    }
}

/// Metadata of a record copied out by [`Consumer::poll_copy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// Sequence number.
    pub seq: u64,
    /// Type tag.
    pub msg_type: u32,
    /// Full payload length.
    pub len: usize,
    /// Bytes copied into the caller's buffer (`min(len, buf.len())`).
    pub copied: usize,
}

/// Counters of one consumer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Records delivered (validated).
    pub delivered: u64,
    /// Overruns reported.
    pub overruns: u64,
    /// Records lost to overruns, in total.
    pub lost: u64,
    /// Corrupt records reported.
    pub corrupt: u64,
}

/// Result of [`Consumer::reopen`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochChange {
    /// Epoch read before.
    pub old: u64,
    /// Epoch read now (equal to `old` if the segment was not replaced).
    pub new: u64,
}

/// What a consumer can tell about its producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerStatus {
    /// The producer process exists and stamped its heartbeat within the timeout.
    Alive {
        /// Producer pid.
        pid: u32,
    },
    /// The producer process is gone (`kill(pid, 0)` fails with `ESRCH`) or has not stamped its
    /// heartbeat within the timeout.
    Dead {
        /// Producer pid.
        pid: u32,
    },
    /// The producer dropped its handle: clean end of stream.
    Closed,
    /// The segment path now holds another segment (a restarted producer): call
    /// [`Consumer::reopen`].
    Replaced,
}

/// Makes consumers of one ring inside this process. `Clone + Send + Sync`.
#[derive(Clone, Debug)]
pub struct ConsumerFactory {
    seg: Arc<Segment>,
    path: Option<PathBuf>,
}

impl ConsumerFactory {
    pub(crate) fn new(seg: Arc<Segment>, path: Option<PathBuf>) -> ConsumerFactory {
        ConsumerFactory { seg, path }
    }

    /// A new consumer of this ring.
    pub fn consumer(&self, opts: &ConsumerOptions) -> Result<Consumer, SetupError> {
        Consumer::join(
            RingHandle::new(Arc::clone(&self.seg)),
            *opts,
            self.path.clone(),
        )
    }
}

/// Outcome of reading a record header at a position outside the hot path.
enum Locate {
    Found {
        pos: u64,
        seq: u64,
        size: u64,
    },
    /// The producer may have overwritten it: look again.
    Retry,
    Corrupt(u64),
}

/// A reader of a ring. `Send`, not `Sync`.
///
/// Reads are zero-copy ([`poll`](Consumer::poll) hands a [`Record`] borrowed from the ring to a
/// callback), never allocate, lock or make a system call per message, and only deliver records
/// whose marker (written last by the producer) or the committed `tail` shows them complete, so
/// a record cut short by a producer crash is never seen.
///
/// **Broadcast mode** (and unregistered readers of a lossless ring): the producer never waits,
/// so a consumer that falls behind by more than `capacity - capacity/8 - 2 * largest record`
/// bytes may be lapped. Every
/// read is validated after the fact; a lapped consumer gets [`PollError::Overrun`] with the
/// exact number of records lost (from sequence numbers) and continues per its [`Resync`]. The
/// callback's view is speculative (see [`Record`]); keep consumer lag well below the capacity.
///
/// **Lossless mode** (registered consumers): the producer never overwrites what this consumer
/// has not read; the consumer publishes its position after each poll (one `Release` store to
/// its own slot line). Dropping the consumer frees its slot. If the consumer's process dies,
/// the producer reaps the slot when it would otherwise block, so a dead consumer cannot stall
/// the stream (a pid reused by another process before that keeps the slot held until it dies).
pub struct Consumer {
    ring: RingHandle,
    /// Next position to read.
    cursor: u64,
    /// Seq of the next record to deliver.
    expected: u64,
    /// Last `tail` seen (reloaded on the slow path only, when the cursor catches up with it;
    /// the fast path may leave the cursor ahead of it).
    cached_tail: u64,
    /// The marker word at the cursor may be stale (after a join or resync, or after a record
    /// whose commit could not clear it): read the next record through `tail` instead.
    slow_next: bool,
    /// Validate reads against `tail_intent` (false only for registered lossless consumers).
    validate: bool,
    /// Registered slot index (`usize::MAX` if none) and the `ctl` word we own there.
    slot_index: usize,
    slot_ctl: u64,
    opts: ConsumerOptions,
    path: Option<PathBuf>,
    stats: ConsumerStats,
    #[cfg(loom)]
    scratch: Vec<u8>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("path", &self.path)
            .field("epoch", &self.ring.geo().epoch)
            .field("cursor", &self.cursor)
            .field("next_seq", &self.expected)
            .field("registered", &(self.slot_index != usize::MAX))
            .field("stats", &self.stats)
            .finish()
    }
}

impl Consumer {
    /// Opens the segment at `path` (validating its header completely before using it) and
    /// joins the ring per `opts`. The mapping is pre-faulted.
    ///
    /// Errors: [`SetupError::Io`] (missing file...), [`SetupError::Truncated`],
    /// [`SetupError::BadMagic`], [`SetupError::UnsupportedVersion`], [`SetupError::BadHeader`],
    /// [`SetupError::NoConsumerSlot`] (lossless ring with every slot held).
    #[cfg(not(loom))]
    pub fn open(path: &Path, opts: &ConsumerOptions) -> Result<Consumer, SetupError> {
        let seg = crate::segment::open_file(path)?;
        Consumer::join(RingHandle::new(seg), *opts, Some(path.to_path_buf()))
    }

    fn join(
        ring: RingHandle,
        opts: ConsumerOptions,
        path: Option<PathBuf>,
    ) -> Result<Consumer, SetupError> {
        let register = opts.lossless && ring.geo().mode == Mode::Lossless;
        let mut c = Consumer {
            ring,
            cursor: 0,
            expected: 0,
            cached_tail: 0,
            slow_next: true,
            validate: !register,
            slot_index: usize::MAX,
            slot_ctl: 0,
            opts,
            path,
            stats: ConsumerStats::default(),
            #[cfg(loom)]
            scratch: Vec::new(),
        };
        if register {
            c.register()?;
        } else {
            let (pos, seq) = c.locate_start(opts.start).map_err(|p| c.corrupt_setup(p))?;
            c.set_position(pos, seq);
        }
        Ok(c)
    }

    fn set_position(&mut self, pos: u64, seq: u64) {
        self.cursor = pos;
        self.expected = seq;
        // Forces a reload of `tail` on the next poll, through the slow path.
        self.cached_tail = pos;
        self.slow_next = true;
    }

    fn corrupt_setup(&self, pos: u64) -> SetupError {
        let path = self.ring.segment().display_path();
        let geo = self.ring.geo();
        SetupError::BadHeader {
            path,
            field: "record",
            offset: geo.header_size + (pos & geo.mask) as usize,
            value: pos,
        }
    }

    /// Takes a consumer slot (lossless rings) and positions it safely.
    fn register(&mut self) -> Result<(), SetupError> {
        let pid = std::process::id();
        let cap = self.ring.geo().capacity;
        for pass in 0..2 {
            for i in 0..self.ring.slots().len() {
                let slot = &self.ring.slots()[i];
                // Pairs with the Release CAS that freed the slot (`Consumer::drop`, or the
                // producer's reaping in `min_consumer_position`).
                let ctl = slot.ctl.load(Ordering::Acquire);
                let takeable =
                    slot_state(ctl) == SLOT_FREE || (pass == 1 && !os::pid_alive(slot_pid(ctl)));
                if !takeable {
                    continue;
                }
                let generation = slot_generation(ctl) + 1;
                let claimed = slot_ctl(SLOT_CLAIMED, generation, pid);
                if slot
                    .ctl
                    .compare_exchange(ctl, claimed, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                if slot_state(ctl) != SLOT_FREE {
                    // Took over a dead consumer's slot.
                    self.ring
                        .hdr()
                        .control
                        .reaped_consumers
                        .fetch_add(1, Ordering::Relaxed);
                }
                let (mut pos, mut seq) = match self.locate_start(self.opts.start) {
                    Ok(v) => v,
                    Err(p) => {
                        slot.ctl
                            .store(slot_ctl(SLOT_FREE, generation, 0), Ordering::Release);
                        return Err(self.corrupt_setup(p));
                    }
                };
                slot.position.store(pos, Ordering::Relaxed);
                let active = slot_ctl(SLOT_ACTIVE, generation, pid);
                // Pairs with the Acquire load of `ctl` in `Producer::min_consumer_position`: a
                // producer that sees ACTIVE sees the position.
                slot.ctl.store(active, Ordering::Release);
                loop {
                    // Store->load handshake with the producer (its intent store, fence(SeqCst),
                    // slot loads): either it sees our position from now on, or we see its
                    // intent here.
                    fence(Ordering::SeqCst);
                    // Pairs with the Release store of `tail_intent` in `Producer::make_room`.
                    let intent = self.ring.hdr().intent.value.load(Ordering::Acquire);
                    if intent <= pos.saturating_add(cap) {
                        break;
                    }
                    // The producer may already be writing over `pos`: move to what is retained.
                    match self.locate_oldest() {
                        Ok((p, s)) => {
                            pos = p;
                            seq = s;
                        }
                        Err(p) => {
                            slot.ctl
                                .store(slot_ctl(SLOT_FREE, generation, 0), Ordering::Release);
                            return Err(self.corrupt_setup(p));
                        }
                    }
                    slot.position.store(pos, Ordering::Release);
                }
                self.slot_index = i;
                self.slot_ctl = active;
                self.set_position(pos, seq);
                return Ok(());
            }
        }
        Err(SetupError::NoConsumerSlot {
            path: self.ring.segment().display_path(),
            max: self.ring.geo().max_consumers,
        })
    }

    fn locate_start(&self, start: StartAt) -> Result<(u64, u64), u64> {
        match start {
            StartAt::Oldest => self.locate_oldest(),
            StartAt::Newest => self.locate_newest().map(|(pos, seq, _)| (pos, seq)),
            StartAt::Next => self.locate_newest().map(|(pos, seq, size)| match size {
                0 => (pos, seq),
                _ => (pos + size, seq + 1),
            }),
        }
    }

    /// Whether bytes at `pos` and after were intact when read (the seqlock read check).
    #[inline]
    fn intact(&self, pos: u64) -> bool {
        // Pairs with the fence(SeqCst) that follows the intent store in
        // `Producer::make_room`: if any byte we read was written after an intent was announced,
        // this load sees that intent (or a later one).
        fence(Ordering::Acquire);
        let intent = self.ring.hdr().intent.value.load(Ordering::Acquire);
        intent <= pos.saturating_add(self.ring.geo().capacity)
    }

    /// Reads and validates the record (skipping one padding record) at `pos < tail`.
    fn read_at(&self, pos: u64, tail: u64) -> Locate {
        let geo = self.ring.geo();
        let data = self.ring.data();
        let mut rec = pos;
        let mut len = data.load(rec) as u32;
        let mut framing_ok = true;
        if len & PADDING_FLAG != 0 {
            let pad = u64::from(len & !PADDING_FLAG);
            framing_ok = pad == geo.capacity - (pos & geo.mask);
            rec = pos + pad;
            len = data.load(rec) as u32;
        }
        let seq = marker_seq(data.load(rec + 8));
        let size = record_size(len & !PADDING_FLAG);
        framing_ok = framing_ok
            && seq.is_some()
            && rec < tail
            && len & PADDING_FLAG == 0
            && len <= geo.max_msg_len
            && (rec & geo.mask) + size <= geo.capacity
            && rec + size <= tail;
        if !self.intact(pos) {
            return Locate::Retry;
        }
        if !framing_ok {
            return Locate::Corrupt(rec);
        }
        Locate::Found {
            pos: rec,
            seq: seq.unwrap_or(0),
            size,
        }
    }

    /// The oldest retained record: `(position, seq)`.
    fn locate_oldest(&self) -> Result<(u64, u64), u64> {
        loop {
            let hdr = self.ring.hdr();
            // Pairs with the Release store of `head` in `Producer::make_room`.
            let head = hdr.head.value.load(Ordering::Acquire);
            // Pairs with the Release store of `tail` in `Claim::commit`.
            let tail = hdr.tail.tail.load(Ordering::Acquire);
            if head >= tail {
                // Nothing retained (empty ring): join at the live edge.
                return self.locate_newest().map(|(pos, seq, size)| match size {
                    0 => (pos, seq),
                    _ => (pos + size, seq + 1),
                });
            }
            match self.read_at(head, tail) {
                Locate::Found { pos, seq, .. } => return Ok((pos, seq)),
                Locate::Retry => spin_loop(),
                Locate::Corrupt(p) => return Err(p),
            }
        }
    }

    /// The newest committed record: `(position, seq, size)`; `(0, 0, 0)` before the first
    /// commit.
    fn locate_newest(&self) -> Result<(u64, u64, u64), u64> {
        loop {
            let hdr = self.ring.hdr();
            // Pairs with the Release store of `latest` in `Claim::commit`.
            let latest = hdr.tail.latest.load(Ordering::Acquire);
            if latest == NO_RECORD {
                return Ok((0, 0, 0));
            }
            // Pairs with the Release store of `tail` in `Claim::commit` (which precedes the
            // `latest` store, so this tail covers the record).
            let tail = hdr.tail.tail.load(Ordering::Acquire);
            match self.read_at(latest, tail) {
                Locate::Found { pos, seq, size } => return Ok((pos, seq, size)),
                Locate::Retry => spin_loop(),
                Locate::Corrupt(p) => return Err(p),
            }
        }
    }

    /// Delivers at most one record to `f`.
    ///
    /// `Ok(true)`: one record delivered (and, in broadcast mode, validated after `f` returned).
    /// `Ok(false)`: nothing new. Errors: [`PollError::Overrun`] (lapped; if `f` ran, its record
    /// is among the lost and must be discarded), [`PollError::Closed`],
    /// [`PollError::NewEpoch`], [`PollError::Corrupt`].
    #[inline]
    pub fn poll<F: FnOnce(Record<'_>)>(&mut self, f: F) -> Result<bool, PollError> {
        let r = self.poll_inner(f);
        if self.slot_index != usize::MAX && !matches!(r, Ok(false)) {
            self.publish_position();
        }
        r
    }

    /// Delivers up to `max` records to `f`, stopping early when nothing is left. Returns how
    /// many were delivered. On an error the records delivered before it stay valid (the error
    /// concerns the last callback, as for [`poll`](Consumer::poll)); a registered consumer
    /// publishes its position once per batch.
    #[inline]
    pub fn poll_batch<F: FnMut(Record<'_>)>(
        &mut self,
        max: usize,
        mut f: F,
    ) -> Result<usize, PollError> {
        let mut n = 0;
        let mut result = Ok(());
        while n < max {
            match self.poll_inner(&mut f) {
                Ok(true) => n += 1,
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if self.slot_index != usize::MAX && (n > 0 || result.is_err()) {
            self.publish_position();
        }
        result.map(|()| n)
    }

    /// Shows the next record to `f` without consuming it: the next [`poll`](Consumer::poll)
    /// delivers the same record. `Ok(true)`: `f` saw a record; `Ok(false)`: nothing new.
    ///
    /// The checks are those of `poll`, errors included (an overrun found while peeking is
    /// reported, and the consumer resynchronised, exactly as `poll` would have). In broadcast
    /// mode the bytes `f` saw may have been overwritten while it ran (then the result is an
    /// [`PollError::Overrun`], as for `poll`): copy what you need and trust it only on `Ok`.
    /// Publishes nothing: the producer's view of this consumer does not change.
    #[inline]
    pub fn peek<F: FnOnce(Record<'_>)>(&mut self, f: F) -> Result<bool, PollError> {
        let (cursor, expected, slow_next) = (self.cursor, self.expected, self.slow_next);
        let delivered = self.stats.delivered;
        let r = self.poll_inner(f);
        if let Ok(true) = r {
            // Back to the record just shown (any padding before it is skipped again by the
            // next poll); the cached tail stays, it is only a lower bound.
            self.cursor = cursor;
            self.expected = expected;
            self.slow_next = slow_next;
            self.stats.delivered = delivered;
        }
        r
    }

    /// Copies the next record's payload into `buf` (up to its length) and returns its
    /// metadata; only validated bytes are ever returned as `Ok`.
    pub fn poll_copy(&mut self, buf: &mut [u8]) -> Result<Option<RecordInfo>, PollError> {
        let mut info = None;
        let got = self.poll(|r| {
            let n = r.payload().len().min(buf.len());
            buf[..n].copy_from_slice(&r.payload()[..n]);
            info = Some(RecordInfo {
                seq: r.seq(),
                msg_type: r.msg_type(),
                len: r.payload().len(),
                copied: n,
            });
        })?;
        Ok(if got { info } else { None })
    }

    #[inline]
    fn poll_inner<F: FnOnce(Record<'_>)>(&mut self, f: F) -> Result<bool, PollError> {
        let cap = self.ring.geo().capacity;
        let mask = self.ring.geo().mask;
        // Find the next record whose header is plausible; `continue` after a resync that lost
        // nothing (only padding was overwritten).
        let (pos, word, seq, size) = loop {
            let pos = self.cursor;
            // Fast path: the marker word of the record at the cursor (one cache line, no look
            // at `tail`). Not for the last 8 bytes of the region (room for a padding word
            // only), nor when the word there may be stale.
            if !self.slow_next && (pos & mask) + RECORD_HEADER_LEN as u64 <= cap {
                // Pairs with the Release stores of the marker in `Claim::commit`: the header's
                // first word and the payload, written before, are visible.
                let marker = self.ring.data().load_acquire(pos + 8);
                if marker_seq(marker) == Some(self.expected) {
                    let word = self.ring.data().load(pos);
                    let len = word as u32;
                    if len & PADDING_FLAG != 0 {
                        if u64::from(len & !PADDING_FLAG) == cap - (pos & mask) {
                            // The record after the padding was published before it.
                            self.cursor = pos + cap - (pos & mask);
                            continue;
                        }
                    } else {
                        let size = record_size(len);
                        if len <= self.ring.geo().max_msg_len && (pos & mask) + size <= cap {
                            // The header word must predate any overwrite (seqlock read side:
                            // the record is handed out only if its header was intact).
                            if self.validate && !self.intact(pos) {
                                match self.overrun() {
                                    Some(e) => return Err(e),
                                    None => continue,
                                }
                            }
                            self.slow_next = marker & MARK_NEXT_UNCLEARED != 0;
                            break (pos, word, self.expected, size);
                        }
                    }
                }
                // Not written yet (zero or an older marker), lapped (a newer one) or not a
                // header: the slow path below tells which.
            }
            if self.cursor >= self.cached_tail {
                // Pairs with the Release store of `tail` in `Claim::commit`.
                self.cached_tail = self.ring.hdr().tail.tail.load(Ordering::Acquire);
                if self.cursor >= self.cached_tail {
                    match self.idle() {
                        Some(r) => return r,
                        None => continue,
                    }
                }
            }
            // Lapped before reading: the bytes at the cursor are certainly overwritten.
            if self.cached_tail.wrapping_sub(self.cursor) > cap {
                match self.overrun() {
                    Some(e) => return Err(e),
                    None => continue,
                }
            }
            let word = self.ring.data().load(pos);
            let len = word as u32;
            if len & PADDING_FLAG != 0 {
                let pad = u64::from(len & !PADDING_FLAG);
                if self.validate && !self.intact(pos) {
                    match self.overrun() {
                        Some(e) => return Err(e),
                        None => continue,
                    }
                }
                if pad != cap - (pos & mask) || pos + pad >= self.cached_tail {
                    return Err(self.corrupt(pos));
                }
                self.cursor = pos + pad;
                continue;
            }
            let marker = self.ring.data().load(pos + 8);
            let size = record_size(len);
            if len > self.ring.geo().max_msg_len
                || (pos & mask) + size > cap
                || pos + size > self.cached_tail
                || marker_seq(marker) != Some(self.expected)
            {
                if self.validate && !self.intact(pos) {
                    match self.overrun() {
                        Some(e) => return Err(e),
                        None => continue,
                    }
                }
                return Err(self.corrupt(pos));
            }
            // As on the fast path: never hand out a record whose header may be overwritten.
            if self.validate && !self.intact(pos) {
                match self.overrun() {
                    Some(e) => return Err(e),
                    None => continue,
                }
            }
            self.slow_next = marker & MARK_NEXT_UNCLEARED != 0;
            break (pos, word, self.expected, size);
        };
        let len = word as u32;
        let msg_type = (word >> 32) as u32;
        #[cfg(not(loom))]
        {
            let off = pos & mask;
            // SAFETY: `off + 16 + len <= off + size <= capacity` was checked above. The bytes
            // were committed before the `tail` we acquired; in broadcast mode a lapping
            // producer may be rewriting them, which the `intact` check below detects.
            let payload = unsafe {
                self.ring
                    .data()
                    .bytes(off as usize + RECORD_HEADER_LEN, len as usize)
            };
            f(Record {
                payload,
                msg_type,
                seq,
            });
        }
        #[cfg(loom)]
        {
            self.ring.data().read_into(
                pos + RECORD_HEADER_LEN as u64,
                len as usize,
                &mut self.scratch,
            );
            f(Record {
                payload: &self.scratch,
                msg_type,
                seq,
            });
        }
        if self.validate && !self.intact(pos) {
            // The record's header was intact before the callback (checked above), so the
            // record itself was overwritten while it ran: the resync lands past it, `lost >= 1`.
            let first_lost_seq = self.expected;
            return Err(self.overrun().unwrap_or(PollError::Overrun {
                first_lost_seq,
                lost: 0,
            }));
        }
        self.cursor = pos + size;
        self.expected = seq + 1;
        self.stats.delivered += 1;
        Ok(true)
    }

    /// Nothing new at the tail: report end of stream or replacement, or `Ok(false)`.
    /// `None`: the tail moved meanwhile, poll again.
    #[inline]
    fn idle(&mut self) -> Option<Result<bool, PollError>> {
        let hdr = self.ring.hdr();
        // Pairs with the Release stores of `state` in `Producer::drop` and in the successor's
        // supersede step.
        let state = hdr.control.state.load(Ordering::Acquire);
        if state == STATE_LIVE {
            return Some(Ok(false));
        }
        // Everything committed before the state change is visible now: one last look (pairs
        // with the Release store of `tail` in `Claim::commit`).
        let tail = hdr.tail.tail.load(Ordering::Acquire);
        if tail > self.cursor {
            self.cached_tail = tail;
            return None;
        }
        Some(Err(match state {
            STATE_CLOSED => PollError::Closed,
            STATE_SUPERSEDED => PollError::NewEpoch {
                old: self.ring.geo().epoch,
                new: hdr.control.successor_epoch.load(Ordering::Relaxed),
            },
            _ => PollError::Corrupt {
                position: self.cursor,
            },
        }))
    }

    /// Lapped: resynchronise per `Resync` and count exactly what was lost. `None` if nothing
    /// was lost after all (the overwritten bytes were padding and the next record is intact):
    /// the consumer continues from there.
    #[cold]
    #[inline(never)]
    fn overrun(&mut self) -> Option<PollError> {
        let first_lost_seq = self.expected;
        let oldest = self.locate_oldest();
        let found = match (oldest, self.opts.resync) {
            (Ok((pos, seq)), _) if seq == first_lost_seq => {
                self.set_position(pos, seq);
                return None;
            }
            (Ok(found), Resync::Oldest) => Ok(found),
            (Err(p), Resync::Oldest) => Err(p),
            (_, Resync::Newest) => self.locate_newest().map(|(pos, seq, _)| (pos, seq)),
        };
        Some(match found {
            Ok((pos, seq)) => {
                let lost = seq.saturating_sub(first_lost_seq);
                self.set_position(pos, seq);
                self.stats.overruns += 1;
                self.stats.lost += lost;
                PollError::Overrun {
                    first_lost_seq,
                    lost,
                }
            }
            Err(p) => self.corrupt(p),
        })
    }

    /// Not a record although not overwritten: report it and jump to the newest record.
    #[cold]
    #[inline(never)]
    fn corrupt(&mut self, position: u64) -> PollError {
        self.stats.corrupt += 1;
        match self.locate_newest() {
            Ok((pos, seq, size)) if pos != position && size != 0 => self.set_position(pos, seq),
            Ok((pos, seq, size)) => {
                // The newest record is the bad one: skip past it.
                self.set_position(pos + size.max(8), seq + 1);
            }
            Err(_) => {
                // No usable record at all: wait at the tail (Acquire pairs with the Release
                // store of `tail` in `Claim::commit`).
                let tail = self.ring.hdr().tail.tail.load(Ordering::Acquire);
                self.set_position(tail, self.expected);
            }
        }
        PollError::Corrupt { position }
    }

    /// Publishes the registered consumer's position.
    #[inline]
    fn publish_position(&self) {
        if let Some(slot) = self.ring.slots().get(self.slot_index) {
            // Pairs with the Acquire load of the position in
            // `Producer::min_consumer_position`: our reads happen before the producer reuses
            // the bytes.
            slot.position.store(self.cursor, Ordering::Release);
        }
    }

    /// Whether something is readable (or an end-of-stream / replacement to report).
    #[inline]
    fn readable(&mut self) -> Result<bool, PollError> {
        if self.cursor < self.cached_tail {
            return Ok(true);
        }
        // Pairs with the Release store of `tail` in `Claim::commit`.
        self.cached_tail = self.ring.hdr().tail.tail.load(Ordering::Acquire);
        if self.cursor < self.cached_tail {
            return Ok(true);
        }
        match self.idle() {
            Some(r) => r,
            None => Ok(true),
        }
    }

    /// Waits until a record (or an error to report) is available, without consuming it.
    /// `Ok(true)`: poll now. `Ok(false)`: `timeout` elapsed. `Err(Closed | NewEpoch)`: as for
    /// poll. With `timeout: None` it waits until something arrives, so a dead producer means
    /// waiting forever: use a timeout and [`producer_status`](Consumer::producer_status).
    pub fn wait(
        &mut self,
        strategy: &WaitStrategy,
        timeout: Option<Duration>,
    ) -> Result<bool, PollError> {
        if self.readable()? {
            return Ok(true);
        }
        let start = Instant::now();
        let expired = |start: Instant| timeout.is_some_and(|t| start.elapsed() >= t);
        match *strategy {
            WaitStrategy::BusySpin => {
                let mut i = 0u32;
                loop {
                    spin_loop();
                    if self.readable()? {
                        return Ok(true);
                    }
                    i = i.wrapping_add(1);
                    if i.is_multiple_of(1024) && expired(start) {
                        return Ok(false);
                    }
                }
            }
            WaitStrategy::SpinThenYield { spins } => {
                let mut i = 0u32;
                loop {
                    if i < spins {
                        spin_loop();
                    } else {
                        yield_now();
                    }
                    if self.readable()? {
                        return Ok(true);
                    }
                    i = i.saturating_add(1);
                    if (i >= spins || i.is_multiple_of(1024)) && expired(start) {
                        return Ok(false);
                    }
                }
            }
            WaitStrategy::Blocking => loop {
                // Ask the producer for a wake, then read the futex word, then re-check: a
                // commit after the re-check bumps the word (so the sleep returns at once) or,
                // if it missed our request, the bounded sleep ends soon anyway.
                self.ring
                    .hdr()
                    .notify
                    .wake_request
                    .store(1, Ordering::SeqCst);
                let word = self.ring.hdr().notify.futex_word.load(Ordering::SeqCst);
                if self.readable()? {
                    return Ok(true);
                }
                let slice = match timeout {
                    Some(t) => match t.checked_sub(start.elapsed()) {
                        Some(left) if !left.is_zero() => left.min(MAX_BLOCK_SLICE),
                        _ => return Ok(false),
                    },
                    None => MAX_BLOCK_SLICE,
                };
                os::futex_wait(&self.ring.hdr().notify.futex_word, word, slice);
                if self.readable()? {
                    return Ok(true);
                }
                if expired(start) {
                    return Ok(false);
                }
            },
        }
    }

    /// What is known about the producer: [`ProducerStatus::Replaced`] if the path now holds
    /// another segment (or the successor marked this one), [`ProducerStatus::Closed`] after a
    /// clean drop, [`ProducerStatus::Dead`] if its pid is gone or its heartbeat is older than
    /// `timeout`, else [`ProducerStatus::Alive`]. Makes system calls (`stat`, `kill(pid, 0)`):
    /// call it from idle paths, not per message. Producers stamp the heartbeat when they call
    /// [`Producer::heartbeat`](crate::Producer::heartbeat) and every `capacity / 8` bytes
    /// published; pick a timeout well above the producer's heartbeat period.
    pub fn producer_status(&self, timeout: Duration) -> ProducerStatus {
        let hdr = self.ring.hdr();
        // Pairs with the Release stores of `state` (producer drop, successor supersede).
        let state = hdr.control.state.load(Ordering::Acquire);
        if state == STATE_SUPERSEDED {
            return ProducerStatus::Replaced;
        }
        if let Some(id) = self.ring.segment().file()
            && crate::segment::same_file(id) == Some(false)
        {
            return ProducerStatus::Replaced;
        }
        if state == STATE_CLOSED {
            return ProducerStatus::Closed;
        }
        let pid = self.ring.geo().producer_pid;
        if !os::pid_alive(pid) {
            return ProducerStatus::Dead { pid };
        }
        let beat = hdr.heartbeat.heartbeat_ns.load(Ordering::Relaxed);
        let age = os::monotonic_ns().saturating_sub(beat);
        if u128::from(age) > timeout.as_nanos() {
            ProducerStatus::Dead { pid }
        } else {
            ProducerStatus::Alive { pid }
        }
    }

    /// After the producer restarted ([`PollError::NewEpoch`] or
    /// [`ProducerStatus::Replaced`]): maps the segment now at the path and joins it with the
    /// original [`ConsumerOptions`]. If the path still holds the same segment, nothing changes
    /// (`old == new`). In-process rings cannot be replaced and always report `old == new`.
    #[cfg(not(loom))]
    pub fn reopen(&mut self) -> Result<EpochChange, SetupError> {
        let old = self.epoch();
        let Some(path) = self.path.clone() else {
            return Ok(EpochChange { old, new: old });
        };
        let on_disk = crate::segment::epoch_at(&path)?;
        if on_disk == old {
            return Ok(EpochChange { old, new: old });
        }
        *self = Consumer::open(&path, &self.opts)?;
        Ok(EpochChange {
            old,
            new: self.epoch(),
        })
    }

    /// Epoch of the segment this consumer reads.
    pub fn epoch(&self) -> u64 {
        self.ring.geo().epoch
    }

    /// Sequence number of the next record this consumer expects.
    pub fn next_seq(&self) -> u64 {
        self.expected
    }

    /// Bytes between this consumer and the producer's committed tail (records are at least
    /// 16 bytes, so `lag() / 16` bounds the records behind).
    pub fn lag(&self) -> u64 {
        // Pairs with the Release store of `tail` in `Claim::commit`.
        self.ring
            .hdr()
            .tail
            .tail
            .load(Ordering::Acquire)
            .saturating_sub(self.cursor)
    }

    /// Counters: delivered, overruns, lost, corrupt.
    pub fn stats(&self) -> ConsumerStats {
        self.stats
    }

    /// Largest payload the producer may publish (size buffers for `poll_copy` with it).
    pub fn max_msg_len(&self) -> u32 {
        self.ring.geo().max_msg_len
    }

    /// Data capacity of the ring, in bytes.
    pub fn capacity(&self) -> usize {
        self.ring.geo().capacity as usize
    }

    /// The ring's mode.
    pub fn mode(&self) -> Mode {
        self.ring.geo().mode
    }

    /// Whether this consumer holds a lossless slot.
    pub fn is_registered(&self) -> bool {
        self.slot_index != usize::MAX
    }

    /// The segment file (`None` for in-process rings).
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }
}

#[cfg(test)]
impl Consumer {
    /// Rewrites the pid in this consumer's slot (tests simulate a dead consumer process).
    pub(crate) fn test_set_slot_pid(&self, pid: u32) {
        let slot = &self.ring.slots()[self.slot_index];
        let ctl = slot.ctl.load(Ordering::Relaxed);
        slot.ctl.store(
            slot_ctl(slot_state(ctl), slot_generation(ctl), pid),
            Ordering::Release,
        );
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(slot) = self.ring.slots().get(self.slot_index) {
            let free = slot_ctl(SLOT_FREE, slot_generation(self.slot_ctl), 0);
            // Release: our reads happen before a producer that sees the slot free reuses the
            // bytes (pairs with its Acquire load of `ctl`).
            let _ = slot.ctl.compare_exchange(
                self.slot_ctl,
                free,
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
    }
}
