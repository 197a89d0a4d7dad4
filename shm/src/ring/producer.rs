//! The write side: claim, commit, overwrite bookkeeping, back-pressure, liveness.

use std::cell::Cell;
use std::fmt;
use std::ops::{Deref, DerefMut};
#[cfg(not(loom))]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use super::{ConsumerFactory, Data, LineCursor, RingHandle, is_lossless};
use crate::config::RingConfig;
use crate::error::ClaimError;
#[cfg(not(loom))]
use crate::error::SetupError;
use crate::layout::{
    RECORD_HEADER_LEN, SLOT_ACTIVE, SLOT_FREE, STATE_CLOSED, padding_word, record_size,
    record_word, seq_marker, slot_ctl, slot_generation, slot_pid, slot_state,
};
use crate::segment::{Segment, os};
use crate::sync::{Ordering, fence};

/// Heartbeat stamps closer together than this are skipped (keeps the heartbeat line quiet when
/// `heartbeat()` is called from a tight idle loop).
const HEARTBEAT_GRANULARITY_NS: u64 = 1_000_000;
/// While back-pressured, blocking consumers are checked for liveness at most this often.
const LIVENESS_CHECK_INTERVAL_NS: u64 = 1_000_000;
/// While back-pressured, the clock is read for that check on the first slot scan that finds a
/// consumer blocking the claim and then on every this-many-th (a producer that retries a claim
/// in a loop scans often, and a clock reading costs more than the scan).
const LIVENESS_SCAN_STRIDE: u32 = 32;
/// Number of head marks per lap: the ring is cut into this many equal spans
/// (`capacity / HEAD_MARKS` bytes, the mark granularity), and `tail_intent` only ever moves to
/// a span boundary in broadcast mode.
const HEAD_MARKS: usize = 32;
/// How far ahead of the record [`BatchClaim::fill`] or [`BatchClaim::payload_mut`] hands out
/// the producer asks for lines to write (bytes).
const PREFETCH_WRITE_AHEAD: u64 = 256;
/// [`Producer::hand_off`] hands off at most this many bytes before `tail` (the lines of a
/// longer burst's start were most likely read while it was written).
const HAND_OFF_MAX: u64 = 2048;

/// The single writer of a ring. `Send`, not `Sync`.
///
/// Publishing is `claim` -> write the payload in place -> `commit` (or drop the [`Claim`] to
/// abort), or [`publish`](Producer::publish) to copy a payload in; several records of one
/// length at once with [`claim_batch`](Producer::claim_batch). No allocation, lock or system
/// call happens per message; the only shared-memory writes of a commit are the record header
/// words (the marker last), the cleared marker word of the next record and the tail line.
///
/// Dropping the producer marks the segment cleanly closed (consumers get
/// [`PollError::Closed`](crate::PollError::Closed) once they have read everything) and keeps
/// the file; a later `create` at the same path replaces it.
pub struct Producer {
    ring: RingHandle,
    /// Next write position (end of the last committed record); only this producer writes it.
    tail: u64,
    /// Claims ending at or below this need no shared-memory check (rtrb-style cached bound:
    /// `min(tail_intent, slowest registered consumer + capacity)`).
    limit: u64,
    /// Last announced `tail_intent`.
    intent: u64,
    /// Lossless mode: the slowest registered consumer's position at the last slot scan (`None`:
    /// no active slot then). Positions only grow and a consumer joins at or above
    /// `tail_intent - capacity`, so the slots are scanned again only when this bound blocks a
    /// claim, plus once after every intent announcement (the join handshake's load side).
    slowest: Option<u64>,
    /// Local copy of `head`.
    head: u64,
    /// `head_marks[(b >> mark_shift) % HEAD_MARKS]`: the first record (or padding) start at or
    /// after the mark boundary `b` (a multiple of `1 << mark_shift`), for the boundaries of the
    /// last lap. Filled at commit, read when `head` moves, so no record headers are walked.
    head_marks: [u64; HEAD_MARKS],
    /// The next boundary no commit has reached yet (always `> tail`).
    next_mark: u64,
    /// log2 of the mark granularity `capacity / HEAD_MARKS`.
    mark_shift: u32,
    seq: u64,
    last_heartbeat: Cell<u64>,
    /// Where [`hand_off`](Producer::hand_off) stopped: the records before it were handed off.
    handed: u64,
    /// The end position from which `make_room` stamps the heartbeat again (every `step`).
    next_stamp: u64,
    next_liveness_check: u64,
    /// Slot scans that found a consumer blocking a claim (see [`LIVENESS_SCAN_STRIDE`]).
    blocked_scans: u32,
    reaped: u64,
    cfg: RingConfig,
    path: Option<PathBuf>,
    /// The segment file's lock, on its own unmapped descriptor; closing it on drop (or death)
    /// tells the next producer and `remove_stale` that this one is gone.
    #[cfg(not(loom))]
    _lock: Option<std::fs::File>,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("path", &self.path)
            .field("epoch", &self.ring.geo().epoch)
            .field("mode", &self.cfg.mode)
            .field("capacity", &self.cfg.capacity)
            .field("tail", &self.tail)
            .field("next_seq", &self.seq)
            .finish()
    }
}

impl Producer {
    /// Creates the segment file at `path` (parent directories are created with mode `0700`)
    /// and becomes its producer, with a fresh epoch.
    ///
    /// The file is built under a temporary name in the same directory, its header written
    /// completely (the magic last), then renamed over `path` atomically. If `path` holds the
    /// segment of a producer that is gone (dead or closed), it is replaced: consumers of the old
    /// file keep their mapping, see [`ProducerStatus::Replaced`](crate::ProducerStatus) and get
    /// [`PollError::NewEpoch`](crate::PollError::NewEpoch) once they have read it all.
    ///
    /// Errors: [`SetupError::InUse`] if a live producer owns `path`; [`SetupError::BadMagic`]
    /// and friends if `path` holds something that is not a valid segment (it is never
    /// clobbered); [`SetupError::BadConfig`]; [`SetupError::MlockFailed`]; [`SetupError::Io`].
    #[cfg(not(loom))]
    pub fn create(path: &Path, cfg: &RingConfig) -> Result<Producer, SetupError> {
        cfg.validate()?;
        let epoch = crate::segment::new_epoch();
        let (seg, lock) = crate::segment::create_file(path, cfg, epoch)?;
        let mut p = Producer::from_segment(seg, cfg.clone(), Some(path.to_path_buf()));
        p._lock = Some(lock);
        Ok(p)
    }

    pub(crate) fn from_segment(
        seg: Arc<Segment>,
        cfg: RingConfig,
        path: Option<PathBuf>,
    ) -> Producer {
        let ring = RingHandle::new(seg);
        let capacity = ring.geo().capacity;
        // `capacity >= MIN_CAPACITY >= 64`, so the granularity is at least 2 bytes and at most
        // `step / 4`.
        let mark_shift = capacity.trailing_zeros() - HEAD_MARKS.trailing_zeros();
        let now = ring.hdr().heartbeat.heartbeat_ns.load(Ordering::Relaxed);
        Producer {
            ring,
            tail: 0,
            limit: capacity,
            intent: capacity,
            slowest: None,
            head: 0,
            head_marks: [0; HEAD_MARKS],
            next_mark: 1 << mark_shift,
            mark_shift,
            seq: 0,
            last_heartbeat: Cell::new(now),
            handed: 0,
            next_stamp: 0,
            next_liveness_check: 0,
            blocked_scans: 0,
            reaped: 0,
            cfg,
            path,
            #[cfg(not(loom))]
            _lock: None,
        }
    }

    /// Reserves room for a record with a payload of exactly `len` bytes, in place in the ring.
    ///
    /// Write the payload through the returned [`Claim`] (its initial content is whatever the
    /// ring held there), then [`commit`](Claim::commit) it. Dropping the claim publishes
    /// nothing. Every `msg_type` value is available to the application.
    ///
    /// Errors: [`ClaimError::TooLarge`] if `len > max_msg_len`; in lossless mode
    /// [`ClaimError::BackPressured`] while the slowest registered consumer is a full ring
    /// behind (never blocks).
    #[inline]
    pub fn claim(&mut self, len: usize, msg_type: u32) -> Result<Claim<'_>, ClaimError> {
        let geo = *self.ring.geo();
        if len > geo.max_msg_len as usize {
            return Err(ClaimError::TooLarge {
                len,
                max: geo.max_msg_len,
            });
        }
        let size = record_size(len as u32);
        let off = self.tail & geo.mask;
        // A record never straddles the end of the region: pad to the end first.
        let pad = if off + size > geo.capacity {
            geo.capacity - off
        } else {
            0
        };
        let end = self.tail + pad + size;
        if end > self.limit && !self.make_room(end) {
            return Err(ClaimError::BackPressured);
        }
        #[cfg(not(loom))]
        let buf = {
            let payload_off = ((self.tail + pad) & geo.mask) as usize + RECORD_HEADER_LEN;
            // Miri only: write every payload word in full, plainly, before the caller does. The
            // ring reuses bytes as header words (atomic) on one lap and payload (plain) on the
            // next, which is sound (the accesses are ordered) but crashes miri's weak-memory
            // emulation when a plain write covers only part of an earlier atomic word.
            #[cfg(miri)]
            {
                let room = size as usize - RECORD_HEADER_LEN;
                // SAFETY: the payload room up to the record's end lies inside the claimed
                // record, exactly as for `bytes` below.
                unsafe { self.ring.data().bytes_mut(payload_off, room) }.fill(0);
            }
            // SAFETY: `off + pad` is either `off` (record fits before the end) or 0, so
            // `payload_off + len <= capacity`; the bytes lie at or beyond `tail`, which no
            // reader that is not lapped reads; `make_room` allowed writing up to `end`; the
            // `&mut self` borrow held by the claim makes it the only writer.
            let bytes = unsafe { self.ring.data().bytes_mut(payload_off, len) };
            bytes.as_mut_ptr()
        };
        Ok(Claim {
            #[cfg(not(loom))]
            buf,
            #[cfg(loom)]
            buf: vec![0; len],
            producer: self,
            pad,
            len: len as u32,
            msg_type,
        })
    }

    /// Copies `payload` into a new record and commits it; returns its sequence number.
    ///
    /// Errors: those of [`claim`](Self::claim).
    #[inline(always)]
    pub fn publish(&mut self, msg_type: u32, payload: &[u8]) -> Result<u64, ClaimError> {
        #[cfg(not(loom))]
        if let Some(slot) = self.fast_slot(payload.len()) {
            let data = *self.ring.data();
            // SAFETY: `fast_slot` checked the payload room: see `try_claim_in_place`.
            let dst = unsafe { data.bytes_mut(slot.payload_off, payload.len()) };
            copy_payload(dst, payload);
            return Ok(self.commit_fast(&data, &slot, payload.len() as u32, msg_type));
        }
        self.publish_slow(msg_type, payload)
    }

    /// Room for a record of exactly `len` payload bytes when claiming and committing it takes
    /// no more than straight-line code: the record fits before the end of the region (no
    /// padding), and it and the next record's marker word lie below `limit` (no room to
    /// announce, no consumer to look at). `None`, having written nothing, otherwise: then
    /// publish it another way ([`publish`](Self::publish), [`claim`](Self::claim)), which may
    /// wait or fail.
    ///
    /// For a message written straight into the ring: building it aside and copying it in
    /// reads its fields back in wider loads than they were stored in, which waits for the
    /// stores. The same writes, in the same order, as `claim`, the payload writes and
    /// `commit` make in that case.
    #[cfg(not(loom))]
    #[inline(always)]
    pub fn try_claim_in_place(&mut self, len: usize, msg_type: u32) -> Option<InPlace<'_>> {
        let slot = self.fast_slot(len)?;
        // SAFETY: `fast_slot` checked that `off + size <= capacity`, so the payload
        // `payload_off .. + len` lies inside the region; the bytes lie at or beyond `tail`,
        // which no reader that is not lapped reads; they end below `limit`, so writing them
        // is allowed; the `&mut self` borrow the result holds makes this the only writer.
        let payload = unsafe { self.ring.data().bytes_mut(slot.payload_off, len) };
        Some(InPlace {
            payload: payload.as_mut_ptr(),
            slot,
            len: len as u32,
            msg_type,
            producer: self,
        })
    }

    /// Where the next record of `len` payload bytes goes when it can be claimed and
    /// committed as straight-line code (see [`try_claim_in_place`](Self::try_claim_in_place));
    /// takes the line a few records on for writing. `None` otherwise.
    #[cfg(not(loom))]
    #[inline(always)]
    fn fast_slot(&self, len: usize) -> Option<FastSlot> {
        let geo = self.ring.geo();
        if len > geo.max_msg_len as usize {
            return None;
        }
        let size = record_size(len as u32);
        let rec = self.tail;
        let off = rec & geo.mask;
        let end = rec + size;
        if off + size > geo.capacity || end + RECORD_HEADER_LEN as u64 > self.limit {
            return None;
        }
        let data = self.ring.data();
        // Takes the line a few records on for writing now, so that its transfer overlaps
        // the work before that record; only below `limit`, where no reader is left.
        let ahead = end + PREFETCH_WRITE_AHEAD;
        if ahead < self.limit {
            data.prefetch_write(ahead);
        }
        let payload_off = off as usize + RECORD_HEADER_LEN;
        #[cfg(miri)]
        {
            let room = size as usize - RECORD_HEADER_LEN;
            // SAFETY: see `claim`; the payload room lies inside the record: `off + size <=
            // capacity`, checked above.
            unsafe { data.bytes_mut(payload_off, room) }.fill(0);
        }
        Some(FastSlot {
            rec,
            end,
            payload_off,
        })
    }

    /// Commits the record at `slot` (from [`fast_slot`](Self::fast_slot)), its payload
    /// written: the same writes, in the same order, as [`Claim::commit`] makes for a record
    /// without padding whose next marker word may be cleared.
    #[cfg(not(loom))]
    #[inline(always)]
    fn commit_fast(&mut self, data: &Data, slot: &FastSlot, len: u32, msg_type: u32) -> u64 {
        let seq = self.seq;
        let word = record_word(len, msg_type);
        write_header(data, slot.rec, slot.end, word, seq, true);
        self.advance(slot.rec, slot.end, seq);
        seq
    }

    /// [`publish`](Self::publish) when [`try_claim_in_place`](Self::try_claim_in_place) cannot: a
    /// record that pads to the end of the region, needs room announced or is refused.
    #[cold]
    #[inline(never)]
    fn publish_slow(&mut self, msg_type: u32, payload: &[u8]) -> Result<u64, ClaimError> {
        let mut claim = self.claim(payload.len(), msg_type)?;
        copy_payload(&mut claim, payload);
        Ok(claim.commit())
    }

    /// Reserves room for up to `max` records of exactly `len` payload bytes each, back to back
    /// in one run of the region, to be published together by one
    /// [`commit`](BatchClaim::commit) (one `tail` store for the batch).
    ///
    /// The batch holds at least one record, and fewer than `max` where the region ends (no
    /// padding inside a batch), where the bytes this producer may write now end (a lap step
    /// to announce, or a lossless consumer close behind) and beyond `capacity / 4` bytes (the
    /// largest record), so that a batch is never harder on readers than one large record.
    /// Write the payloads through [`BatchClaim::fill`] or [`BatchClaim::payload_mut`] (their
    /// initial content is whatever the ring held there); dropping the claim publishes nothing.
    ///
    /// Errors: those of [`claim`](Self::claim). `max == 0` claims an empty batch.
    pub fn claim_batch(
        &mut self,
        len: usize,
        msg_type: u32,
        max: usize,
    ) -> Result<BatchClaim<'_>, ClaimError> {
        let geo = *self.ring.geo();
        if len > geo.max_msg_len as usize {
            return Err(ClaimError::TooLarge {
                len,
                max: geo.max_msg_len,
            });
        }
        let size = record_size(len as u32);
        let off = self.tail & geo.mask;
        // No record fits before the end of the region: pad to the end first, as `claim` does.
        let pad = if off + size > geo.capacity {
            geo.capacity - off
        } else {
            0
        };
        let rec = self.tail + pad;
        // At least 1: `size <= capacity / 4` (checked by the configuration) and
        // `(rec & mask) + size <= capacity` by the padding above.
        let fits = ((geo.capacity - (rec & geo.mask)) / size).min((geo.capacity / 4) / size);
        let want = fits.min(max as u64);
        if want == 0 {
            return Ok(BatchClaim::new(self, 0, size, 0, len as u32, msg_type));
        }
        if rec + want * size > self.limit
            && !self.make_room(rec + want * size)
            && rec + size > self.limit
            && !self.make_room(rec + size)
        {
            return Err(ClaimError::BackPressured);
        }
        // `rec + size <= limit` here, so at least one record.
        let count = want.min((self.limit - rec) / size);
        #[cfg(miri)]
        for i in 0..count {
            let payload_off = ((rec + i * size) & geo.mask) as usize + RECORD_HEADER_LEN;
            let room = size as usize - RECORD_HEADER_LEN;
            // SAFETY: as in `claim`: the payload room of record `i` lies inside the batch,
            // which lies inside the region (`(rec & mask) + count * size <= capacity`).
            unsafe { self.ring.data().bytes_mut(payload_off, room) }.fill(0);
        }
        Ok(BatchClaim::new(
            self, pad, size, count, len as u32, msg_type,
        ))
    }

    /// After a record `rec..end` (sequence `seq`) is written: publishes `tail` and `latest`,
    /// moves the producer past it, wakes a waiting consumer and records the head marks it
    /// crossed.
    #[inline(always)]
    fn advance(&mut self, rec: u64, end: u64, seq: u64) {
        self.advance_batch(rec, end - rec, rec, end, seq);
    }

    /// After records of `stride` bytes, from `first` to `end` back to back, the last one at
    /// `last` with sequence `seq`, are written: as [`advance`](Self::advance), for all of them.
    #[inline(always)]
    fn advance_batch(&mut self, first: u64, stride: u64, last: u64, end: u64, seq: u64) {
        let hdr = self.ring.hdr();
        // Pairs with the Acquire loads of `tail` in `Consumer::poll_inner` (slow path),
        // `readable`, `idle`, `lag` and the locate functions: the payload and header writes
        // before are visible to a reader that sees this tail.
        hdr.tail.tail.store(end, Ordering::Release);
        // Pairs with the Acquire load of `latest` in `Consumer::locate_newest`.
        hdr.tail.latest.store(last, Ordering::Release);
        self.tail = end;
        self.seq = seq + 1;
        if hdr.notify.wake_request.load(Ordering::Relaxed) != 0 {
            self.wake();
        }
        if end >= self.next_mark {
            self.record_marks(first, stride, end);
        }
        let geo = self.ring.geo();
        if end + geo.step / 2 > self.intent
            && self.slowest.map_or(!is_lossless(geo), |m| {
                m.saturating_add(geo.capacity) > self.intent + geo.step
            })
        {
            self.announce_ahead();
        }
    }

    /// Announces the next `tail_intent` while half a step is left before the last one, after
    /// a commit rather than in the claim of the record that reaches it: the announcement (a
    /// fence, the head and intent lines, a look at the consumers, the heartbeat) then delays
    /// no record on its way to the readers. In lossless mode only while the slowest consumer
    /// last seen leaves room for a whole step: a producer held back by one (or that has seen
    /// none yet) looks at the consumers in its claims, where a dead one is found and reaped.
    #[cold]
    #[inline(never)]
    fn announce_ahead(&mut self) {
        // The claim end one byte past the intent: `make_room` moves the intent a step on
        // from there, or, with a lossless consumer too close behind, leaves it.
        let _ = self.make_room(self.intent + 1);
    }

    /// Makes sure bytes below `end` may be written: announces a new `tail_intent` (and
    /// `head`) when needed and, in lossless mode, respects the slowest registered consumer.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self, end: u64) -> bool {
        let geo = *self.ring.geo();
        let cap = geo.capacity;
        let lossless = is_lossless(&geo);
        if end > self.intent {
            if lossless {
                // The slots are read after the SeqCst fence below; their lines (each written
                // by its consumer since the last scan) come over while the stores drain.
                self.ring.prefetch_slots();
            }
            // A mark boundary in `(end + step - capacity / HEAD_MARKS, end + step]`, so the new
            // head is a mark lookup.
            let mut new_intent = end.saturating_add(geo.step) & !((1u64 << self.mark_shift) - 1);
            if lossless {
                if self.slowest.is_some_and(|m| end > m.saturating_add(cap)) {
                    self.slowest = self.min_consumer_position(end);
                }
                if let Some(min) = self.slowest {
                    new_intent = new_intent.min(min.saturating_add(cap));
                    if new_intent < end {
                        return false;
                    }
                }
            }
            self.head = self.head.max(self.head_from_marks(new_intent - cap));
            let hdr = self.ring.hdr();
            // Pairs with the Acquire load of `head` in `Consumer::locate_oldest`.
            hdr.head.value.store(self.head, Ordering::Release);
            // Pairs with the Acquire load of `tail_intent` in `Consumer::intact` and
            // `Consumer::register`.
            hdr.intent.value.store(new_intent, Ordering::Release);
            // Seqlock write side: every data write below comes after this fence, so a reader
            // that sees one of them (then `fence(Acquire)`) sees this intent. It is SeqCst for
            // the store->load handshake with registering consumers (their position store,
            // `fence(SeqCst)`, intent load; our intent store, this fence, slot loads).
            fence(Ordering::SeqCst);
            self.intent = new_intent;
            #[cfg(not(loom))]
            if end >= self.next_stamp {
                // Every `step` bytes, not on every announcement: a producer held back by a
                // lossless consumer announces on nearly every claim.
                self.next_stamp = end.saturating_add(geo.step);
                self.heartbeat();
            }
            if lossless {
                // After the fence: a consumer that registered against the previous intent is
                // seen here.
                self.slowest = self.min_consumer_position(end);
            }
        } else if lossless {
            // `end <= intent` but `end > limit`: the cached slowest position blocks the claim.
            self.slowest = self.min_consumer_position(end);
        }
        self.limit = match self.slowest {
            Some(min) if lossless => self.intent.min(min.saturating_add(cap)),
            _ => self.intent,
        };
        end <= self.limit
    }

    /// Smallest position over active consumer slots, or `None` if none is active. A slot that
    /// blocks a write up to `end` and whose process is gone is reaped (freed and counted).
    fn min_consumer_position(&mut self, end: u64) -> Option<u64> {
        let cap = self.ring.geo().capacity;
        let mut min: Option<u64> = None;
        let mut liveness_due: Option<bool> = None;
        let mut reaped = 0;
        for slot in self.ring.slots() {
            // Pairs with the Release store of ACTIVE in `Consumer::register`: a slot seen
            // active has its position in place.
            let ctl = slot.ctl.load(Ordering::Acquire);
            if slot_state(ctl) != SLOT_ACTIVE {
                continue;
            }
            // Pairs with the consumer's Release store after consuming: its reads of the bytes
            // below `pos` happen before we overwrite them.
            let pos = slot.position.load(Ordering::Acquire);
            if pos.saturating_add(cap) < end {
                let due = *liveness_due.get_or_insert_with(|| {
                    self.blocked_scans = self.blocked_scans.wrapping_add(1);
                    if self.blocked_scans % LIVENESS_SCAN_STRIDE != 1 {
                        return false;
                    }
                    let now = os::monotonic_ns();
                    let due = now >= self.next_liveness_check;
                    if due {
                        self.next_liveness_check = now + LIVENESS_CHECK_INTERVAL_NS;
                    }
                    due
                });
                if due && !os::pid_alive(slot_pid(ctl)) {
                    let free = slot_ctl(SLOT_FREE, slot_generation(ctl), 0);
                    // AcqRel: Acquire pairs with the Release store of ACTIVE in
                    // `Consumer::register`; Release pairs with the Acquire load of `ctl` by the
                    // next consumer that takes the slot.
                    if slot
                        .ctl
                        .compare_exchange(ctl, free, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        reaped += 1;
                        continue;
                    }
                }
            }
            min = Some(min.map_or(pos, |m| m.min(pos)));
        }
        if reaped > 0 {
            self.reaped += reaped;
            self.ring
                .hdr()
                .control
                .reaped_consumers
                .fetch_add(reaped, Ordering::Relaxed);
        }
        min
    }

    /// The first record start at or after `threshold` (`tail` if none), from the marks: exact
    /// when `threshold` is a mark boundary (always in broadcast mode); otherwise (a lossless
    /// intent bounded by a slow consumer) the first start at or after the next boundary, which
    /// may leave out up to `capacity / HEAD_MARKS` bytes of records that are still intact.
    fn head_from_marks(&self, threshold: u64) -> u64 {
        let g = 1u64 << self.mark_shift;
        let b = threshold.div_ceil(g) * g;
        if b > self.tail {
            return self.tail;
        }
        // Fresh: the entry for `b` was written by the commit that first reached `b` (`b <=
        // tail`), and would only be overwritten by one reaching `b + capacity`, beyond `tail`
        // since `threshold + capacity` is the intent about to be announced, which bounds every
        // committed end.
        self.head_marks[((b >> self.mark_shift) as usize) % HEAD_MARKS]
    }

    /// Records the mark boundaries up to `end` reached by the commit of records of `stride`
    /// bytes each, back to back from `rec` to `end` (after padding starting at the old tail):
    /// boundaries up to `rec` map to `rec`, the others to the first record start at or after
    /// them (`end` for the last ones: the start of the next record).
    #[cold]
    #[inline(never)]
    fn record_marks(&mut self, rec: u64, stride: u64, end: u64) {
        let g = 1u64 << self.mark_shift;
        while self.next_mark <= end {
            let b = self.next_mark;
            self.head_marks[((b >> self.mark_shift) as usize) % HEAD_MARKS] = if b <= rec {
                rec
            } else {
                // `<= end`: `end - rec` is a multiple of `stride`.
                rec + (b - rec).div_ceil(stride) * stride
            };
            self.next_mark = b + g;
        }
    }

    /// Stamps the producer's liveness (`CLOCK_MONOTONIC`, vDSO, no system call). Call it from
    /// idle loops; consumers judge liveness with
    /// [`Consumer::producer_status`](crate::Consumer::producer_status). Stamps less than 1 ms
    /// apart are skipped. The producer also stamps itself every `capacity / 8` bytes published.
    pub fn heartbeat(&self) {
        let now = os::monotonic_ns();
        if now.wrapping_sub(self.last_heartbeat.get()) >= HEARTBEAT_GRANULARITY_NS {
            self.last_heartbeat.set(now);
            self.ring
                .hdr()
                .heartbeat
                .heartbeat_ns
                .store(now, Ordering::Relaxed);
        }
    }

    /// Hands off the records committed since the last call: moves their cache lines out of
    /// this core's private caches into the cache the cores share (`cldemote`, on CPUs that
    /// have it; elsewhere this does nothing), so a reader's first look at them is served there
    /// instead of by a snoop into this core. It does not change what readers see, or when.
    ///
    /// Call it when a burst of publishes ends and the thread is about to wait for input: after
    /// the messages of a datagram, or of one tick of a paced replay. Not after every publish
    /// of a busy stream: the last line of each record is the first of the next, and sending
    /// it away only for the next commit to fetch it back costs more than the reader gains.
    /// At most the last 2 KiB before `tail` are handed off. No system call, no allocation.
    #[inline]
    pub fn hand_off(&mut self) {
        let data = *self.ring.data();
        self.hand_off_lines(|line| data.demote(line));
    }

    /// The lines [`hand_off`](Self::hand_off) hands off, in order: those holding bytes from
    /// where the last call stopped (or [`HAND_OFF_MAX`] before `tail`, if later) up to `tail`.
    #[inline]
    pub(super) fn hand_off_lines(&mut self, f: impl FnMut(u64)) {
        if self.handed >= self.tail {
            return;
        }
        let from = self.handed.max(self.tail.saturating_sub(HAND_OFF_MAX));
        LineCursor::at(from).ask_below(self.tail, f);
        self.handed = self.tail;
    }

    /// The epoch of this producer's segment (new on every producer start).
    pub fn epoch(&self) -> u64 {
        self.ring.geo().epoch
    }

    /// Sequence number the next committed record will get (records are numbered from 0 in
    /// each epoch, +1 per record; padding is not numbered).
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// The configuration this ring was created with.
    pub fn config(&self) -> &RingConfig {
        &self.cfg
    }

    /// The segment file, or `None` for in-process rings.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// Makes consumers of this ring in this process (sharing this mapping).
    pub fn consumer_factory(&self) -> ConsumerFactory {
        ConsumerFactory::new(Arc::clone(self.ring.segment()), self.path.clone())
    }

    /// Number of registered (lossless) consumers right now.
    pub fn active_consumers(&self) -> u32 {
        self.ring
            .slots()
            .iter()
            .filter(|s| slot_state(s.ctl.load(Ordering::Relaxed)) == SLOT_ACTIVE)
            .count() as u32
    }

    /// Number of dead consumers' slots this producer has reaped.
    pub fn reaped_consumers(&self) -> u64 {
        self.reaped
    }

    /// Wakes sleeping consumers; called when one asked for it.
    #[cold]
    #[inline(never)]
    fn wake(&self) {
        let n = &self.ring.hdr().notify;
        if n.wake_request.swap(0, Ordering::AcqRel) != 0 {
            n.futex_word.fetch_add(1, Ordering::Release);
            os::futex_wake_all(&n.futex_word);
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let hdr = self.ring.hdr();
        // Pairs with the Acquire load of `state` in the consumer's idle check: everything
        // committed before is visible to a consumer that sees CLOSED.
        hdr.control.state.store(STATE_CLOSED, Ordering::Release);
        hdr.notify.wake_request.store(0, Ordering::Relaxed);
        hdr.notify.futex_word.fetch_add(1, Ordering::Release);
        os::futex_wake_all(&hdr.notify.futex_word);
    }
}

/// `dst.copy_from_slice(src)` (equal lengths), inline for payloads up to 128 bytes (normalized
/// envelopes are 80-112): two possibly overlapping fixed-size copies instead of a `memmove` call.
#[inline(always)]
fn copy_payload(dst: &mut [u8], src: &[u8]) {
    #[inline(always)]
    fn ends<const K: usize>(dst: &mut [u8], src: &[u8]) {
        let n = src.len();
        let head: [u8; K] = src[..K].try_into().unwrap_or([0; K]);
        let tail: [u8; K] = src[n - K..].try_into().unwrap_or([0; K]);
        dst[..K].copy_from_slice(&head);
        dst[n - K..].copy_from_slice(&tail);
    }
    let n = src.len();
    debug_assert_eq!(dst.len(), n);
    if n > 128 || dst.len() != n {
        dst.copy_from_slice(src);
    } else if n >= 64 {
        ends::<64>(dst, src);
    } else if n >= 32 {
        ends::<32>(dst, src);
    } else if n >= 16 {
        ends::<16>(dst, src);
    } else if n >= 8 {
        ends::<8>(dst, src);
    } else if n >= 4 {
        ends::<4>(dst, src);
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// Writes the header of the record at `rec` (ending at `end`): clears the marker word of the
/// record that will follow when `cleared`, then writes the first word `word`, then the marker
/// of sequence `seq` (saying whether the next marker word was cleared).
#[inline(always)]
fn write_header(data: &Data, rec: u64, end: u64, word: u64, seq: u64, cleared: bool) {
    if cleared {
        data.store(end + 8, 0);
    }
    data.store(rec, word);
    // Pairs with the Acquire load of the marker in `Consumer::poll_inner`: the payload, the
    // first header word and the cleared word above are visible to a reader that sees this
    // marker.
    data.store_release(rec + 8, seq_marker(seq, !cleared));
}

/// A record claimed by [`Producer::try_claim_in_place`]: write its
/// [`payload`](InPlace::payload), then [`commit`](InPlace::commit) it; dropping it publishes
/// nothing.
#[cfg(not(loom))]
#[must_use = "a claimed record publishes nothing unless committed"]
pub struct InPlace<'a> {
    producer: &'a mut Producer,
    payload: *mut u8,
    slot: FastSlot,
    len: u32,
    msg_type: u32,
}

/// A record on the straight-line path: no padding, below `limit`.
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug)]
struct FastSlot {
    /// Position of the record.
    rec: u64,
    /// Position just past it.
    end: u64,
    /// Offset of its payload in the region.
    payload_off: usize,
}

#[cfg(not(loom))]
impl fmt::Debug for InPlace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InPlace")
            .field("len", &self.len)
            .field("msg_type", &self.msg_type)
            .field("seq", &self.producer.seq)
            .finish()
    }
}

#[cfg(not(loom))]
impl InPlace<'_> {
    /// The payload, `len` bytes in place in the ring (holding whatever the ring held there).
    #[inline(always)]
    pub fn payload(&mut self) -> &mut [u8] {
        // SAFETY: `try_claim_in_place` made `payload` from a slice of exactly `len` bytes of
        // the region that only this producer writes, and the `&mut Producer` held here keeps
        // it so (and the mapping alive) while the returned borrow of `self` lives.
        unsafe { std::slice::from_raw_parts_mut(self.payload, self.len as usize) }
    }

    /// Publishes the record and returns its sequence number: the header (its marker last,
    /// `Release`) with the next record's marker word cleared, then `tail` (`Release`).
    #[inline(always)]
    pub fn commit(self) -> u64 {
        // A copy: the payload went through raw pointers into the region, so a borrowed
        // `Data` would be reloaded after each store of the commit.
        let data = *self.producer.ring.data();
        self.producer
            .commit_fast(&data, &self.slot, self.len, self.msg_type)
    }
}

/// Room for one record, claimed in place: `DerefMut<Target = [u8]>` of exactly the claimed
/// length. [`commit`](Claim::commit) publishes it; dropping it (or [`abort`](Claim::abort))
/// publishes nothing.
#[must_use = "a claim publishes nothing unless committed"]
pub struct Claim<'a> {
    producer: &'a mut Producer,
    pad: u64,
    len: u32,
    msg_type: u32,
    #[cfg(not(loom))]
    buf: *mut u8,
    #[cfg(loom)]
    buf: Vec<u8>,
}

impl fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("len", &self.len)
            .field("msg_type", &self.msg_type)
            .field("seq", &self.producer.seq)
            .finish()
    }
}

impl Claim<'_> {
    /// Publishes the record and returns its sequence number. Clears the next record's marker
    /// word, writes the record header (its marker last, `Release`; then the padding header when
    /// the record wrapped), then stores `tail` with `Release`.
    #[inline]
    pub fn commit(self) -> u64 {
        let p = self.producer;
        // A copy: the stores below go through raw pointers into the region, so a borrowed
        // `Data` would be reloaded after each of them.
        let data = *p.ring.data();
        let start = p.tail;
        let rec = start + self.pad;
        #[cfg(loom)]
        data.write_from(rec + RECORD_HEADER_LEN as u64, &self.buf);
        let seq = p.seq;
        let end = rec + record_size(self.len);
        // Clear the marker word of the record that will follow (8 bytes past `end`) when it
        // lies within the bytes we may write, so a reader that reaches `end` through this
        // record's marker finds zero there until the next commit, never a stale word of an
        // earlier lap (which could be payload). Otherwise the marker says so and that reader
        // goes through `tail`.
        let cleared = end + RECORD_HEADER_LEN as u64 <= p.limit;
        let word = record_word(self.len, self.msg_type);
        write_header(&data, rec, end, word, seq, cleared);
        if self.pad != 0 {
            data.store(start, padding_word(self.pad));
            if self.pad >= RECORD_HEADER_LEN as u64 {
                // Pairs with the same Acquire load: a reader that sees the padding's marker
                // sees the record after it (marker included) too.
                data.store_release(start + 8, seq_marker(seq, false));
            }
        }
        p.advance(rec, end, seq);
        seq
    }

    /// Drops the claim: nothing becomes visible, the room is reused by the next claim.
    #[inline]
    pub fn abort(self) {}

    /// The sequence number this record will get if committed.
    pub fn seq(&self) -> u64 {
        self.producer.seq
    }
}

impl Deref for Claim<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        #[cfg(not(loom))]
        {
            // SAFETY: `buf` and `len` describe the claimed bytes inside the data region
            // (checked in `claim`), exclusively ours while the claim borrows the producer.
            unsafe { std::slice::from_raw_parts(self.buf, self.len as usize) }
        }
        #[cfg(loom)]
        {
            &self.buf
        }
    }
}

impl DerefMut for Claim<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        #[cfg(not(loom))]
        {
            // SAFETY: as in `deref`; `&mut self` makes this the only borrow.
            unsafe { std::slice::from_raw_parts_mut(self.buf, self.len as usize) }
        }
        #[cfg(loom)]
        {
            &mut self.buf
        }
    }
}

/// Room for several records of one length, claimed in place by [`Producer::claim_batch`]:
/// [`fill`](BatchClaim::fill) or [`payload_mut`](BatchClaim::payload_mut) give each record's
/// payload, [`commit`](BatchClaim::commit) publishes them all; dropping the claim (or
/// [`abort`](BatchClaim::abort)) publishes nothing.
#[must_use = "a claim publishes nothing unless committed"]
pub struct BatchClaim<'a> {
    producer: &'a mut Producer,
    pad: u64,
    /// Bytes of one record, header included.
    size: u64,
    count: u64,
    /// End of the batch's last record.
    end: u64,
    /// The lines still to take for writing (see `lines_ahead_of`).
    #[cfg(not(loom))]
    lines: LineCursor,
    len: u32,
    msg_type: u32,
    #[cfg(loom)]
    bufs: Vec<Vec<u8>>,
}

impl fmt::Debug for BatchClaim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchClaim")
            .field("records", &self.count)
            .field("len", &self.len)
            .field("msg_type", &self.msg_type)
            .field("first_seq", &self.producer.seq)
            .finish()
    }
}

impl<'a> BatchClaim<'a> {
    fn new(
        producer: &'a mut Producer,
        pad: u64,
        size: u64,
        count: u64,
        len: u32,
        msg_type: u32,
    ) -> BatchClaim<'a> {
        let first = producer.tail + pad;
        let end = first + count * size;
        BatchClaim {
            producer,
            pad,
            size,
            count,
            end,
            #[cfg(not(loom))]
            lines: LineCursor::at(first),
            len,
            msg_type,
            #[cfg(loom)]
            bufs: vec![vec![0; len as usize]; count as usize],
        }
    }

    /// The lines to take for writing when the caller is about to write the record at `rec`:
    /// the caller writes the records in turn, so the producer takes the lines up to
    /// [`PREFETCH_WRITE_AHEAD`] bytes on from the reader that read them last lap, each line once,
    /// inside the batch only (beyond it a reader may be at work).
    #[cfg(not(loom))]
    #[inline]
    fn lines_ahead_of(&mut self, rec: u64, ask: impl FnMut(u64)) {
        let upto = (rec + PREFETCH_WRITE_AHEAD).min(self.end);
        self.lines.ask_below(upto, ask);
    }

    /// Number of records claimed.
    #[inline]
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was claimed (`max == 0`).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The sequence number the first record will get if committed (the others follow it).
    pub fn first_seq(&self) -> u64 {
        self.producer.seq
    }

    /// The payload of record `i` (exactly the claimed length), `None` if `i >= len()`.
    #[inline]
    pub fn payload_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        if i as u64 >= self.count {
            return None;
        }
        #[cfg(not(loom))]
        {
            let rec = self.producer.tail + self.pad + i as u64 * self.size;
            let data = *self.producer.ring.data();
            self.lines_ahead_of(rec, |line| data.prefetch_write(line));
            let data = self.producer.ring.data();
            let off = (rec & self.producer.ring.geo().mask) as usize + RECORD_HEADER_LEN;
            // SAFETY: record `i < count` lies inside the batch, which `claim_batch` placed
            // inside the region (`(first & mask) + count * size <= capacity`), at or beyond
            // `tail` (no reader that is not lapped reads it) and below `limit` (writing it is
            // allowed); `&mut self` borrows the producer, so this is the only writer and the
            // only borrow of these bytes.
            Some(unsafe { data.bytes_mut(off, self.len as usize) })
        }
        #[cfg(loom)]
        {
            self.bufs.get_mut(i).map(Vec::as_mut_slice)
        }
    }

    /// Hands `f` each record's index and payload (exactly the claimed length), in order: what
    /// a loop over [`payload_mut`](Self::payload_mut) does, without looking each record up.
    #[inline]
    pub fn fill(&mut self, mut f: impl FnMut(usize, &mut [u8])) {
        #[cfg(not(loom))]
        {
            let data = *self.producer.ring.data();
            let first = self.producer.tail + self.pad;
            // The batch never crosses the end of the region: offsets grow with positions.
            let mut off = (first & self.producer.ring.geo().mask) as usize;
            let (end, size) = (self.end, self.size);
            // As `lines_ahead_of`, with the cursor in a register.
            let mut lines = self.lines;
            let mut rec = first;
            for i in 0..self.count as usize {
                lines.ask_below((rec + PREFETCH_WRITE_AHEAD).min(end), |line| {
                    data.prefetch_write(line)
                });
                rec += size;
                // SAFETY: as in `payload_mut`: record `i < count` lies inside the batch, which
                // lies inside the region, at or beyond `tail` and below `limit`; `&mut self`
                // makes this the only writer and the slice is dropped before the next one is
                // made.
                f(i, unsafe {
                    data.bytes_mut(off + RECORD_HEADER_LEN, self.len as usize)
                });
                off += size as usize;
            }
            self.lines = lines;
        }
        #[cfg(loom)]
        for (i, buf) in self.bufs.iter_mut().enumerate() {
            f(i, buf);
        }
    }

    /// Publishes every record of the batch and returns the first one's sequence number. Clears
    /// the marker word after the batch, writes the record headers from the last to the first
    /// (each marker `Release`, so a reader that sees the first record's marker sees the whole
    /// batch, and each record's marker word holds its own marker before the one before it is
    /// written), then the padding header when the batch wrapped, then stores `tail` once.
    #[inline]
    pub fn commit(self) -> u64 {
        let p = self.producer;
        let first_seq = p.seq;
        if self.count == 0 {
            return first_seq;
        }
        let data = *p.ring.data();
        let start = p.tail;
        let first = start + self.pad;
        let last = first + (self.count - 1) * self.size;
        let end = last + self.size;
        #[cfg(loom)]
        for (i, buf) in self.bufs.iter().enumerate() {
            data.write_from(first + i as u64 * self.size + RECORD_HEADER_LEN as u64, buf);
        }
        let last_seq = first_seq + self.count - 1;
        let word = record_word(self.len, self.msg_type);
        // As in `Claim::commit` for the last record: the word after it is cleared when we may
        // write there, else its marker says so.
        let cleared = end + RECORD_HEADER_LEN as u64 <= p.limit;
        write_header(&data, last, end, word, last_seq, cleared);
        let mut rec = last;
        let mut seq = last_seq;
        while rec > first {
            rec -= self.size;
            seq -= 1;
            data.store(rec, word);
            // Pairs with the Acquire load of the marker in `Consumer::poll_inner`, as in
            // `write_header`. The next record's marker word already holds that record's marker
            // (written just before): as good as cleared, so the marker says it may be trusted.
            data.store_release(rec + 8, seq_marker(seq, false));
        }
        if self.pad != 0 {
            data.store(start, padding_word(self.pad));
            if self.pad >= RECORD_HEADER_LEN as u64 {
                // Pairs with the Acquire load in `Consumer::poll_inner`: a reader that sees the
                // padding's marker sees the batch after it too.
                data.store_release(start + 8, seq_marker(first_seq, false));
            }
        }
        p.advance_batch(first, self.size, last, end, last_seq);
        first_seq
    }

    /// Drops the claim: nothing becomes visible, the room is reused by the next claim.
    #[inline]
    pub fn abort(self) {}
}

#[cfg(all(test, not(loom)))]
mod copy_tests {
    use super::copy_payload;

    #[test]
    fn copy_payload_matches_copy_from_slice_for_every_small_length() {
        for n in 0..=160usize {
            let src: Vec<u8> = (0..n)
                .map(|i| (i as u8).wrapping_mul(7).wrapping_add(1))
                .collect();
            let mut dst = vec![0xAAu8; n + 8];
            copy_payload(&mut dst[..n], &src);
            assert_eq!(&dst[..n], &src[..], "length {n}");
            assert!(dst[n..].iter().all(|&b| b == 0xAA), "wrote past length {n}");
        }
    }
}

#[cfg(all(test, not(loom)))]
mod fast_path_tests {
    use super::*;
    use crate::config::Mode;

    /// The data region, the producer's state and the shared tail words.
    fn state(p: &Producer) -> (Vec<u8>, [u64; 5], [u64; HEAD_MARKS], [u64; 2]) {
        let cap = p.ring.geo().capacity as usize;
        // SAFETY: `0 + capacity <= capacity`; the producer is borrowed, so nothing writes.
        let bytes = unsafe { p.ring.data().bytes(0, cap) }.to_vec();
        let hdr = p.ring.hdr();
        (
            bytes,
            [p.tail, p.seq, p.head, p.intent, p.limit],
            p.head_marks,
            [
                hdr.tail.tail.load(Ordering::Relaxed),
                hdr.tail.latest.load(Ordering::Relaxed),
            ],
        )
    }

    #[test]
    fn publish_writes_what_claim_copy_and_commit_write() {
        let cfg = small_ring(Mode::Broadcast);
        let (mut fast, _f1) = crate::ring::in_process(&cfg).unwrap();
        let (mut reference, _f2) = crate::ring::in_process(&cfg).unwrap();
        let (mut in_place, _f3) = crate::ring::in_process(&cfg).unwrap();
        let (mut fast_taken, mut slow_taken) = (0, 0);
        // Many laps of lengths around every copy size class and the 128-byte inline limit,
        // so that records pad at the end of the region and cross `limit`.
        let total = if cfg!(miri) { 300 } else { 5_000 };
        for i in 0..total {
            let len = (i * 37) % 300;
            let payload: Vec<u8> = (0..len).map(|b| (b as u8) ^ (i as u8)).collect();
            let end = fast.tail + record_size(len as u32);
            let fits = (fast.tail & fast.ring.geo().mask) + record_size(len as u32)
                <= fast.ring.geo().capacity;
            if fits && end + RECORD_HEADER_LEN as u64 <= fast.limit {
                fast_taken += 1;
            } else {
                slow_taken += 1;
            }
            let seq = fast.publish(9, &payload).unwrap();
            let mut claim = reference.claim(len, 9).unwrap();
            claim.copy_from_slice(&payload);
            assert_eq!(claim.commit(), seq);
            assert!(
                state(&fast) == state(&reference),
                "record {i}, length {len}"
            );
            // In place where the fast path applies, by claim otherwise: the same again.
            let in_place_seq = match in_place.try_claim_in_place(len, 9) {
                Some(mut record) => {
                    assert_eq!(record.payload().len(), len);
                    record.payload().copy_from_slice(&payload);
                    record.commit()
                }
                None => {
                    let mut claim = in_place.claim(len, 9).unwrap();
                    claim.copy_from_slice(&payload);
                    claim.commit()
                }
            };
            assert_eq!(in_place_seq, seq);
            assert!(
                state(&in_place) == state(&reference),
                "in place: record {i}, length {len}"
            );
        }
        assert!(
            fast_taken > total / 2 && slow_taken > 10,
            "{fast_taken} / {slow_taken}"
        );
    }

    /// A 4 KiB ring of `mode` for two consumers.
    fn small_ring(mode: Mode) -> RingConfig {
        RingConfig {
            capacity: 4096,
            max_msg_len: 1008,
            mode,
            max_consumers: 2,
            ..RingConfig::default()
        }
    }

    /// A consumer from the oldest record, lossless where the ring is.
    fn oldest_lossless(f: &crate::ConsumerFactory) -> crate::Consumer {
        f.consumer(&crate::ConsumerOptions {
            start: crate::StartAt::Oldest,
            resync: crate::Resync::Oldest,
            lossless: true,
        })
        .unwrap()
    }

    /// A commit that comes within half a step of the announced intent announces the next
    /// one, so no claim of a record that fits a step waits on an announcement: in broadcast
    /// mode from the start, in lossless mode once the producer has seen its consumer (a claim
    /// that reaches the first intent looks at it).
    #[test]
    fn commits_announce_the_next_intent_half_a_step_early() {
        for mode in [Mode::Broadcast, Mode::Lossless] {
            let (mut p, f) = crate::ring::in_process(&small_ring(mode)).unwrap();
            let mut c = oldest_lossless(&f);
            let step = p.ring.geo().step;
            let first_lap = match mode {
                Mode::Broadcast => 0,
                Mode::Lossless => 64,
            };
            let total = if cfg!(miri) { 150 } else { 400 };
            for i in 0..total {
                // 64-byte records: 64 to a lap.
                p.publish(1, &[i as u8; 48]).unwrap();
                if i >= first_lap {
                    assert!(
                        p.tail + step / 2 <= p.intent && p.intent <= p.limit,
                        "{mode:?}, record {i}: tail {}, intent {}, limit {}",
                        p.tail,
                        p.intent,
                        p.limit
                    );
                }
                while c.poll(|r| assert_eq!(r.payload(), [i as u8; 48])).unwrap() {}
            }
            // Past two laps, under miri too.
            assert!(p.tail > 2 * 4096, "{mode:?}: {}", p.tail);
        }
    }

    fn pattern(seq: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|b| (b as u8).wrapping_mul(3) ^ (seq as u8))
            .collect()
    }

    /// The data region with bit 0 of every word cleared and the marker word after `tail`
    /// zeroed: a batch may announce room at other times than single records do, which decides
    /// only whether the last commit cleared the next marker word (and says so in its marker).
    fn region_but_uncleared_bits(p: &Producer) -> Vec<u64> {
        let (bytes, ..) = state(p);
        let next_marker = ((p.tail + 8) & p.ring.geo().mask) as usize / 8;
        bytes
            .chunks(8)
            .enumerate()
            .map(|(i, w)| match i == next_marker {
                true => 0,
                false => u64::from_le_bytes(w.try_into().unwrap()) & !1,
            })
            .collect()
    }

    /// Batches of every size up to 7, of lengths around the copy classes, in both modes, with a
    /// reader keeping up, written through `payload_mut` and through `fill` in turn: the ring
    /// holds what single publishes of the same records hold (same records, padding, head marks,
    /// `tail` and `latest`), and the reader gets every record.
    #[test]
    fn batches_write_what_single_publishes_write() {
        for mode in [Mode::Broadcast, Mode::Lossless] {
            let cfg = small_ring(mode);
            let (mut batched, f) = crate::ring::in_process(&cfg).unwrap();
            let (mut single, _f2) = crate::ring::in_process(&cfg).unwrap();
            let mut reader = oldest_lossless(&f);
            let (mut short, mut padded) = (0, 0);
            let total = if cfg!(miri) { 150 } else { 3_000 };
            for i in 0..total {
                let len = (i * 37) % 300;
                let max = 1 + i % 7;
                let padding = (batched.tail & 4095) + record_size(len as u32) > 4096;
                let mut b = batched.claim_batch(len, 9, max).unwrap();
                let first = b.first_seq();
                assert!((1..=max).contains(&b.len()), "{} of {max}", b.len());
                short += usize::from(b.len() < max);
                padded += usize::from(padding);
                if i % 2 == 0 {
                    for k in 0..b.len() {
                        b.payload_mut(k)
                            .unwrap()
                            .copy_from_slice(&pattern(first + k as u64, len));
                    }
                } else {
                    // `fill` hands out the same payloads, in order, each exactly once.
                    let mut next = 0;
                    b.fill(|k, d| {
                        assert_eq!((k, d.len()), (next, len));
                        d.copy_from_slice(&pattern(first + k as u64, len));
                        next += 1;
                    });
                    assert_eq!(next, b.len());
                }
                assert!(b.payload_mut(b.len()).is_none());
                let n = b.len() as u64;
                assert_eq!(b.commit(), first);
                for k in 0..n {
                    assert_eq!(
                        single.publish(9, &pattern(first + k, len)).unwrap(),
                        first + k
                    );
                }
                assert_eq!(
                    region_but_uncleared_bits(&batched),
                    region_but_uncleared_bits(&single),
                    "batch {i}, length {len}, {mode:?}"
                );
                let (_, a, am, at) = state(&batched);
                let (_, b, bm, bt) = state(&single);
                assert_eq!((a[0], a[1], am, at), (b[0], b[1], bm, bt), "batch {i}");
                let mut next = first;
                let got = reader
                    .poll_batch(usize::MAX, |r| {
                        assert_eq!((r.seq(), r.payload()), (next, &pattern(next, len)[..]));
                        next += 1;
                    })
                    .unwrap();
                assert_eq!(got as u64, n, "batch {i}");
            }
            assert!(short > 10 && padded > 10, "{short} short, {padded} padded");
        }
    }

    /// As a batch is written record after record, the producer takes every line of the batch
    /// for writing, each once, in order, and none beyond it, whatever the record size (a fixed
    /// distance from each record would skip lines of records longer than a line).
    #[test]
    fn every_line_of_a_batch_is_taken_once() {
        let cfg = RingConfig {
            capacity: 4096,
            max_msg_len: 1008,
            mode: Mode::Broadcast,
            ..RingConfig::default()
        };
        for len in (0..=240).step_by(8) {
            let (mut p, _f) = crate::ring::in_process(&cfg).unwrap();
            // The batch starts in the middle of a line.
            p.publish(1, &[0; 20]).unwrap();
            let mut b = p.claim_batch(len, 1, 100).unwrap();
            let (first, end, size) = (b.producer.tail + b.pad, b.end, b.size);
            let mut asked = Vec::new();
            for i in 0..b.count {
                b.lines_ahead_of(first + i * size, |line| asked.push(line));
            }
            let want: Vec<u64> = (first & !63..end).step_by(64).collect();
            assert_eq!(asked, want, "record size {size}");
        }
    }

    /// A lossless batch never runs past a registered reader that does not read, a broadcast
    /// one laps it with an exact count, and a batch stays within `capacity / 4` bytes.
    #[test]
    fn batches_respect_readers_and_count_losses_exactly() {
        let opts = crate::ConsumerOptions {
            start: crate::StartAt::Oldest,
            resync: crate::Resync::Oldest,
            lossless: true,
        };
        for mode in [Mode::Lossless, Mode::Broadcast] {
            let cfg = RingConfig {
                capacity: 4096,
                max_msg_len: 64,
                mode,
                max_consumers: 1,
                ..RingConfig::default()
            };
            let (mut p, f) = crate::ring::in_process(&cfg).unwrap();
            let mut c = f.consumer(&opts).unwrap();
            assert!(matches!(
                p.claim_batch(65, 1, 4),
                Err(ClaimError::TooLarge { len: 65, max: 64 })
            ));
            assert!(p.claim_batch(64, 1, 0).unwrap().is_empty());
            let mut published = 0u64;
            for _ in 0..200 {
                match p.claim_batch(64, 1, 1000) {
                    Ok(b) => {
                        // 80-byte records: at most 1024 / 80 = 12 in a batch.
                        assert!((1..=12).contains(&b.len()), "{}", b.len());
                        published += b.len() as u64;
                        b.commit();
                    }
                    Err(ClaimError::BackPressured) => {
                        assert_eq!(mode, Mode::Lossless);
                        break;
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
            let (mut delivered, mut lost) = (0u64, 0u64);
            loop {
                match c.poll(|r| assert_eq!(r.seq(), delivered + lost)) {
                    Ok(true) => delivered += 1,
                    Ok(false) => break,
                    Err(crate::PollError::Overrun {
                        first_lost_seq,
                        lost: n,
                    }) => {
                        assert_eq!(first_lost_seq, delivered + lost);
                        lost += n;
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert_eq!(delivered + lost, published, "{mode:?}");
            if mode == Mode::Lossless {
                // Back-pressured with the ring full: 51 records of 80 bytes fit in 4096.
                assert_eq!((published, lost), (51, 0));
            } else {
                assert!(lost > 0 && delivered > 0, "{delivered} / {lost}");
            }
        }
    }
}
