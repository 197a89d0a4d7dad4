//! The read side: join, poll (zero-copy, speculative in broadcast mode), validation, overrun
//! resync, lossless registration, waiting, liveness.

use std::fmt;
#[cfg(not(loom))]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{LineCursor, RingHandle};
use crate::config::{ConsumerOptions, Mode, Resync, StartAt, WaitStrategy};
use crate::error::{PollError, RingWord, SetupError};
use crate::layout::{
    MARK_NEXT_UNCLEARED, MAX_POSITION, NO_RECORD, OFF_HEAD, OFF_INTENT, OFF_LATEST, OFF_STATE,
    OFF_TAIL, PADDING_FLAG, RECORD_HEADER_LEN, SLOT_ACTIVE, SLOT_CLAIMED, SLOT_FREE, STATE_CLOSED,
    STATE_LIVE, STATE_SUPERSEDED, marker_seq, record_size, slot_ctl, slot_generation, slot_pid,
    slot_state,
};
use crate::segment::{Segment, os};
use crate::sync::{Ordering, fence, spin_loop, yield_now};

/// Longest single futex sleep of [`WaitStrategy::Blocking`]: the worst-case cost of a missed
/// wake.
const MAX_BLOCK_SLICE: Duration = Duration::from_millis(2);
/// Most attempts of a loop that looks again because the producer moved meanwhile (locating
/// the oldest or newest record, the join handshake). An honest producer needs a new lap step
/// announced during every attempt to exhaust them; then (or when someone else keeps rewriting
/// the words) the loop gives up with an error instead of spinning on.
const MAX_RETRIES: u32 = 4096;
/// How far ahead of its cursor `poll_batch` asks for the next lines (bytes), among those
/// committed: about as many records as a reader gets through while one line comes over from
/// the producer's core (sixteen lines; four, the earlier distance, left the reader waiting on
/// each line and halved batched throughput).
const PREFETCH_AHEAD: u64 = 1024;
/// Most passes of one poll over the record at its cursor (a padding record skipped, a
/// resynchronisation that lost nothing, a tail that moved after the close): then the poll
/// returns `Ok(false)` and the caller polls again, so a poll always returns.
const MAX_POLL_STEPS: u32 = 16;

/// One record handed to a poll callback, borrowed straight from the ring.
///
/// In broadcast mode (and for unregistered readers of lossless rings, and a registered one
/// whose slot was taken from it) the view is *speculative*: the producer may overwrite the
/// bytes while the callback runs. The poll validates after the callback returns; if it then
/// returns [`PollError::Overrun`], whatever the callback derived from this record must be
/// discarded. [`is_stable`](Record::is_stable) tells which kind a record is. Use
/// [`Consumer::poll_copy`] to get only validated bytes.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    payload: &'a [u8],
    msg_type: u32,
    seq: u64,
    stable: bool,
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

    /// Whether the producer leaves these bytes alone until this consumer moves past them:
    /// true when the consumer held its lossless slot as the callback started (checked just
    /// before it), false for a speculative view. A correct producer frees the slot of a
    /// registered consumer only when the slot's pid no longer exists, and the process running
    /// the callback does; so the bytes of a stable record do not change while the callback
    /// runs, provided producer and consumer share a pid namespace and the consumer is used in
    /// the process that registered it. A slot freed anyway is detected after the callback and
    /// reported as [`PollError::Overrun`].
    #[inline]
    pub fn is_stable(&self) -> bool {
        self.stable
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
    /// Corrupt records (or header words) reported.
    pub corrupt: u64,
    /// Times this consumer found its lossless slot taken from it (the producer judged its
    /// pid dead and freed the slot): it reads on as an unregistered, validating reader.
    pub slot_lost: u64,
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
    /// The producer may have overwritten it (`intent` was announced meanwhile): look again.
    Retry {
        intent: u64,
    },
    Corrupt(Fault),
}

/// A shared word that breaks the ring's invariants (the fields of [`PollError::Corrupt`]).
#[derive(Clone, Copy, Debug)]
struct Fault {
    position: u64,
    word: RingWord,
    value: u64,
    bound: u64,
}

/// `head` and `tail`, read with `tail_intent` in an order that makes their invariants
/// checkable (see [`Consumer::snapshot`]).
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    head: u64,
    tail: u64,
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
/// A consumer checks that it still holds its slot before and after each callback; one whose
/// slot was taken anyway (its pid looked dead to the producer: another pid namespace, a forked
/// child) reads on as an unregistered reader, with validated reads and
/// [`PollError::Overrun`] for what was overwritten ([`ConsumerStats::slot_lost`],
/// [`is_registered`](Consumer::is_registered) turns false).
///
/// Every word read from the segment is checked against the ring's invariants before it is
/// relied on; a broken one is [`PollError::Corrupt`] naming it, and every poll returns.
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
            let (pos, seq) = c.locate_start(opts.start).map_err(|f| c.fault_setup(f))?;
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

    /// A fault found while joining, as a setup error naming the word and its offset in the
    /// segment.
    fn fault_setup(&self, f: Fault) -> SetupError {
        let path = self.ring.segment().display_path();
        let geo = self.ring.geo();
        let record = geo.header_size + (f.position & geo.mask) as usize;
        let (field, offset) = match f.word {
            RingWord::Tail => ("tail", OFF_TAIL),
            RingWord::Latest => ("latest", OFF_LATEST),
            RingWord::TailIntent => ("tail_intent", OFF_INTENT),
            RingWord::Head => ("head", OFF_HEAD),
            RingWord::State => ("state", OFF_STATE),
            RingWord::RecordLen | RingWord::Padding => ("record length", record),
            RingWord::RecordMarker => ("record marker", record + 8),
        };
        SetupError::BadHeader {
            path,
            field,
            offset,
            value: f.value,
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
                    Err(f) => {
                        slot.ctl
                            .store(slot_ctl(SLOT_FREE, generation, 0), Ordering::Release);
                        return Err(self.fault_setup(f));
                    }
                };
                slot.position.store(pos, Ordering::Relaxed);
                let active = slot_ctl(SLOT_ACTIVE, generation, pid);
                // Pairs with the Acquire load of `ctl` in `Producer::min_consumer_position`: a
                // producer that sees ACTIVE sees the position.
                slot.ctl.store(active, Ordering::Release);
                let mut tries = 0;
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
                    // The producer may already be writing over `pos`: move to what is retained
                    // (a bounded number of times: the intent keeps moving only if the producer
                    // laps us on every attempt, or someone else writes it).
                    tries += 1;
                    let found = if tries > MAX_RETRIES {
                        Err(Fault {
                            position: pos,
                            word: RingWord::TailIntent,
                            value: intent,
                            bound: pos.saturating_add(cap),
                        })
                    } else {
                        self.locate_oldest()
                    };
                    match found {
                        Ok((p, s)) => {
                            pos = p;
                            seq = s;
                        }
                        Err(f) => {
                            slot.ctl
                                .store(slot_ctl(SLOT_FREE, generation, 0), Ordering::Release);
                            return Err(self.fault_setup(f));
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

    fn locate_start(&self, start: StartAt) -> Result<(u64, u64), Fault> {
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
        intact_under(self.intent_after_reads(), pos, self.ring.geo().capacity)
    }

    /// `tail_intent`, loaded after the reads before it (the seqlock read side).
    #[inline]
    fn intent_after_reads(&self) -> u64 {
        // Pairs with the fence(SeqCst) that follows the intent store in
        // `Producer::make_room`: if any byte we read was written after an intent was announced,
        // this load sees that intent (or a later one).
        fence(Ordering::Acquire);
        self.ring.hdr().intent.value.load(Ordering::Acquire)
    }

    /// Whether the bytes at `pos` and after that this consumer read were left alone by the
    /// producer. A validating reader checks `tail_intent`; a registered one checks that it
    /// still holds its slot, which covers the same writes: the producer frees (reaps) a slot
    /// before it announces an intent past that slot's position, and announces an intent before
    /// writing below it, so a read that saw any such write is followed by a `ctl` load that
    /// sees the slot freed. A registered consumer that lost its slot becomes a validating one
    /// here and checks `tail_intent` after all.
    #[inline]
    fn unchanged(&mut self, pos: u64) -> bool {
        if self.validate {
            self.intact(pos)
        } else {
            self.slot_held() || self.slot_lost(pos)
        }
    }

    /// Whether this registered consumer's slot still holds the `ctl` word it wrote.
    #[inline]
    fn slot_held(&self) -> bool {
        // Pairs with the fence(SeqCst) in `Producer::make_room`, which follows the CAS that
        // freed a slot (in `min_consumer_position`) and precedes any write to the bytes that
        // slot protected: a read of such a write, then this fence, makes the CAS visible.
        fence(Ordering::Acquire);
        self.ring
            .slots()
            .get(self.slot_index)
            .is_some_and(|slot| slot.ctl.load(Ordering::Relaxed) == self.slot_ctl)
    }

    /// The slot was taken from this consumer (the producer judged its pid dead, or someone
    /// else wrote the slot): from now on it reads as an unregistered, validating reader, and
    /// publishes no position (the slot may be someone else's). Whether the bytes at `pos`
    /// were intact.
    #[cold]
    #[inline(never)]
    fn slot_lost(&mut self, pos: u64) -> bool {
        self.slot_index = usize::MAX;
        self.validate = true;
        self.stats.slot_lost += 1;
        self.intact(pos)
    }

    /// Reads `tail_intent`, `head`, `tail` and `tail_intent` again, in this order, and checks
    /// what each pair read in that order guarantees: `head >= intent - capacity` (the producer
    /// stores `head` before the intent it goes with), `head <= tail` (it stores `head` only
    /// after the tail it points below), `intent <= tail + capacity` (an intent is announced
    /// for the next claim, which starts at the tail), `tail <= intent` read after it (the
    /// producer commits only below an announced intent), and `tail < MAX_POSITION`.
    fn snapshot(&self) -> Result<Snapshot, Fault> {
        let hdr = self.ring.hdr();
        let cap = self.ring.geo().capacity;
        // Pairs with the Release store of `tail_intent` in `Producer::make_room` (made after
        // the `head` store below).
        let intent = hdr.intent.value.load(Ordering::Acquire);
        // Pairs with the Release store of `head` in `Producer::make_room` (made after the
        // commit of every record below it).
        let head = hdr.head.value.load(Ordering::Acquire);
        // Pairs with the Release store of `tail` in `Claim::commit` (made after the intent
        // that allowed the record was announced).
        let tail = hdr.tail.tail.load(Ordering::Acquire);
        // Pairs with the same Release store of `tail_intent`.
        let intent_after = hdr.intent.value.load(Ordering::Acquire);
        let fault = |word, value, bound| Fault {
            position: self.cursor,
            word,
            value,
            bound,
        };
        let tail_bound = intent_after.min(MAX_POSITION - 1);
        if tail > tail_bound {
            return Err(fault(RingWord::Tail, tail, tail_bound));
        }
        if intent > tail + cap {
            return Err(fault(RingWord::TailIntent, intent, tail + cap));
        }
        if head > tail {
            return Err(fault(RingWord::Head, head, tail));
        }
        if head < intent.saturating_sub(cap) {
            return Err(fault(RingWord::Head, head, intent - cap));
        }
        Ok(Snapshot { head, tail })
    }

    /// Reads and validates the record (skipping one padding record) at `pos < tail`, both
    /// validated by [`snapshot`](Self::snapshot).
    fn read_at(&self, pos: u64, tail: u64) -> Locate {
        let geo = self.ring.geo();
        let data = self.ring.data();
        let mut rec = pos;
        let mut len = data.load(rec) as u32;
        let mut fault = None;
        let bad = |position, word, value, bound| {
            Some(Fault {
                position,
                word,
                value,
                bound,
            })
        };
        if len & PADDING_FLAG != 0 {
            let pad = u64::from(len & !PADDING_FLAG);
            let want = geo.capacity - (pos & geo.mask);
            if pad != want || want == geo.capacity {
                fault = bad(pos, RingWord::Padding, pad, want);
            }
            rec = pos + want;
            len = data.load(rec) as u32;
        }
        let marker = data.load(rec + 8);
        let seq = marker_seq(marker);
        let size = record_size(len & !PADDING_FLAG);
        if fault.is_none() {
            fault = if rec >= tail {
                // Only after a padding record (`pos < tail`): it ends at or beyond the tail.
                bad(pos, RingWord::Padding, rec - pos, tail - pos - 1)
            } else if len & PADDING_FLAG != 0
                || len > geo.max_msg_len
                || (rec & geo.mask) + size > geo.capacity
                || rec + size > tail
            {
                let room = (geo.capacity - (rec & geo.mask)).min(tail - rec);
                let max = room.saturating_sub(RECORD_HEADER_LEN as u64);
                let bound = max.min(geo.max_msg_len.into());
                bad(rec, RingWord::RecordLen, len.into(), bound)
            } else if seq.is_none() {
                bad(rec, RingWord::RecordMarker, u64::MAX, self.expected)
            } else {
                None
            };
        }
        let intent = self.intent_after_reads();
        if !intact_under(intent, pos, geo.capacity) {
            return Locate::Retry { intent };
        }
        match fault {
            Some(f) => Locate::Corrupt(f),
            None => Locate::Found {
                pos: rec,
                seq: seq.unwrap_or(0),
                size,
            },
        }
    }

    /// The oldest retained record: `(position, seq)`.
    fn locate_oldest(&self) -> Result<(u64, u64), Fault> {
        let mut last = (0, 0);
        for _ in 0..MAX_RETRIES {
            let s = self.snapshot()?;
            if s.head == s.tail {
                // Nothing retained (empty ring): join at the live edge.
                return self.locate_newest().map(|(pos, seq, size)| match size {
                    0 => (pos, seq),
                    _ => (pos + size, seq + 1),
                });
            }
            match self.read_at(s.head, s.tail) {
                Locate::Found { pos, seq, .. } => return Ok((pos, seq)),
                Locate::Retry { intent } => last = (s.head, intent),
                Locate::Corrupt(f) => return Err(f),
            }
            spin_loop();
        }
        // The record at `head` was overwritten on every attempt.
        Err(self.overwritten_every_time(RingWord::Head, last))
    }

    /// The newest committed record: `(position, seq, size)`; `(0, 0, 0)` before the first
    /// commit.
    fn locate_newest(&self) -> Result<(u64, u64, u64), Fault> {
        let hdr = self.ring.hdr();
        let mut last = (0, 0);
        for _ in 0..MAX_RETRIES {
            // Pairs with the Release store of `latest` in `Claim::commit`.
            let latest = hdr.tail.latest.load(Ordering::Acquire);
            if latest == NO_RECORD {
                return Ok((0, 0, 0));
            }
            // Its `tail` is read after `latest`, so it covers the record (`tail` is stored
            // before `latest`).
            let s = self.snapshot()?;
            if latest >= s.tail.saturating_sub(RECORD_HEADER_LEN as u64 - 1) {
                return Err(Fault {
                    position: self.cursor,
                    word: RingWord::Latest,
                    value: latest,
                    bound: s.tail.saturating_sub(RECORD_HEADER_LEN as u64),
                });
            }
            match self.read_at(latest, s.tail) {
                Locate::Found { pos, seq, size } => return Ok((pos, seq, size)),
                Locate::Retry { intent } => last = (latest, intent),
                Locate::Corrupt(f) => return Err(f),
            }
            spin_loop();
        }
        // The record at `latest` was overwritten on every attempt.
        Err(self.overwritten_every_time(RingWord::Latest, last))
    }

    /// The fault of a locate that found the record `word` points at overwritten on every
    /// attempt; `last`: the position read and the tail intent that lapped it, last time.
    #[cold]
    fn overwritten_every_time(&self, word: RingWord, last: (u64, u64)) -> Fault {
        let cap = self.ring.geo().capacity;
        Fault {
            position: self.cursor,
            word,
            value: last.0,
            bound: last.1.saturating_sub(cap),
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

    /// Delivers up to `max` records to `f`, stopping early when nothing is left, or after a
    /// record delivered by a consumer that found its lossless slot taken from it (so a batch
    /// holds at most one record that is not [stable](Record::is_stable), its last). Returns
    /// how many were delivered. On an error the records delivered before it stay valid (the
    /// error concerns the last callback, as for [`poll`](Consumer::poll)); a registered
    /// consumer publishes its position once per batch.
    #[inline]
    pub fn poll_batch<F: FnMut(Record<'_>)>(
        &mut self,
        max: usize,
        mut f: F,
    ) -> Result<usize, PollError> {
        let mut n = 0;
        let mut result = Ok(());
        let validate = self.validate;
        while n < max && self.validate == validate {
            match self.poll_run(max - n, &mut f) {
                Ok(0) => {}
                Ok(k) => {
                    n += k;
                    continue;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            if self.cursor >= self.cached_tail {
                // Caught up (`poll_run` has just read `tail`): the end of the stream, or
                // nothing new, without a look at the record's line.
                match self.idle() {
                    Some(Ok(_)) => break,
                    Some(Err(e)) => {
                        result = Err(e);
                        break;
                    }
                    None => continue,
                }
            }
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

    /// Delivers up to `max` records the way the fast path of [`poll_inner`](Self::poll_inner)
    /// does (the same loads, checks and order, without its loop over padding and slow paths),
    /// one after the other; stops at the first record that needs more (padding, nothing new, a
    /// marker word that may be stale, a header that fails a check, a lap, a slot that is no
    /// longer ours) before handing it out, and after a record delivered by a consumer that lost
    /// its slot meanwhile. `Ok(n)`: `n` delivered; the error is `poll_inner`'s for a record
    /// overwritten under its callback.
    #[inline]
    fn poll_run<F: FnMut(Record<'_>)>(
        &mut self,
        max: usize,
        f: &mut F,
    ) -> Result<usize, PollError> {
        let geo = *self.ring.geo();
        let data = *self.ring.data();
        // A registered consumer's slot, looked up once; `None` for a validating reader.
        let slot = if self.validate {
            None
        } else {
            self.ring.slots().get(self.slot_index)
        };
        let ctl = self.slot_ctl;
        // `slot_held`, on the slot looked up above.
        let held = |s: &crate::layout::ConsumerSlot| {
            // As in `slot_held`: pairs with the fence(SeqCst) in `Producer::make_room`.
            fence(Ordering::Acquire);
            s.ctl.load(Ordering::Relaxed) == ctl
        };
        // The consumer's state in registers while the loop runs; written back after it.
        let (mut cursor, mut expected, mut slow_next) =
            (self.cursor, self.expected, self.slow_next);
        let mut n = 0;
        // Every line up to `PREFETCH_AHEAD` bytes past the record being read, each once.
        let mut pf = LineCursor::after(cursor);
        // The record whose check after its callback failed (position, size).
        let mut after = None;
        // Lines are asked for only below `tail`: those at and past it are the producer's to
        // write, and a reader that asks for them takes them from it while it writes. (The
        // marker at the cursor is read whatever `tail` says, so a new record is seen as soon
        // as its marker is.)
        let mut tail = self.cached_tail;
        while n < max {
            let pos = cursor;
            if pos >= tail {
                // Pairs with the Release store of `tail` in the commits.
                tail = self.ring.hdr().tail.tail.load(Ordering::Acquire);
            }
            let off = pos & geo.mask;
            if slow_next || off + RECORD_HEADER_LEN as u64 > geo.capacity {
                break;
            }
            // Pairs with the Release stores of the marker in `Claim::commit` and
            // `BatchClaim::commit`: the header's first word and the payload are visible.
            let marker = data.load_acquire(pos + 8);
            // No honest position gets to `MAX_POSITION`: none past it is asked for.
            if pos < MAX_POSITION {
                pf.ask_below((pos + PREFETCH_AHEAD).min(tail), |line| data.prefetch(line));
            }
            if marker_seq(marker) != Some(expected) {
                break;
            }
            let word = data.load(pos);
            let len = word as u32;
            let size = record_size(len);
            // `max_msg_len < PADDING_FLAG` (checked at creation and open): padding fails the
            // first check too.
            if len > geo.max_msg_len || off + size > geo.capacity {
                break;
            }
            // As in `poll_inner`: the header must predate any overwrite (for a registered
            // consumer: the slot is still ours). If not, `poll_inner` reads the record again
            // and reports what happened.
            let unchanged = match slot {
                Some(s) => held(s),
                None => self.intact(pos),
            };
            if !unchanged {
                break;
            }
            slow_next = marker & MARK_NEXT_UNCLEARED != 0;
            // Checked just above: a registered consumer still held its slot.
            let stable = slot.is_some();
            #[cfg(not(loom))]
            {
                // SAFETY: as in `poll_inner`: `off + 16 + len <= off + size <= capacity` was
                // checked above, so the slice lies inside the data region, which the ring
                // handle keeps mapped; the bytes were committed before the marker we acquired;
                // if `stable` the producer leaves them alone until our position passes them,
                // otherwise the check below detects a rewrite.
                let payload = unsafe { data.bytes(off as usize + RECORD_HEADER_LEN, len as usize) };
                f(Record {
                    payload,
                    msg_type: (word >> 32) as u32,
                    seq: expected,
                    stable,
                });
            }
            #[cfg(loom)]
            {
                data.read_into(
                    pos + RECORD_HEADER_LEN as u64,
                    len as usize,
                    &mut self.scratch,
                );
                f(Record {
                    payload: &self.scratch,
                    msg_type: (word >> 32) as u32,
                    seq: expected,
                    stable,
                });
            }
            // As in `poll_inner`. A failed check is settled below, by `unchanged`.
            let unchanged = match slot {
                Some(s) => held(s),
                None => self.intact(pos),
            };
            if !unchanged {
                after = Some((pos, size));
                break;
            }
            cursor = pos + size;
            expected += 1;
            n += 1;
        }
        self.cursor = cursor;
        self.expected = expected;
        self.slow_next = slow_next;
        self.cached_tail = tail;
        self.stats.delivered += n as u64;
        if let Some((pos, size)) = after {
            // A slot found taken goes through `unchanged`, which turns this consumer into a
            // validating one and checks `tail_intent`; a record overwritten is an overrun.
            if !self.unchanged(pos) {
                let first_lost_seq = self.expected;
                return Err(self.overrun().unwrap_or(PollError::Overrun {
                    first_lost_seq,
                    lost: 0,
                }));
            }
            self.cursor = pos + size;
            self.expected += 1;
            self.stats.delivered += 1;
            n += 1;
        }
        Ok(n)
    }

    #[inline]
    fn poll_inner<F: FnOnce(Record<'_>)>(&mut self, f: F) -> Result<bool, PollError> {
        let cap = self.ring.geo().capacity;
        let mask = self.ring.geo().mask;
        // Find the next record whose header is plausible; `continue` after skipping padding or
        // a resync that lost nothing (only padding was overwritten), a bounded number of times.
        let mut steps = 0;
        let (pos, word, seq, size) = loop {
            if steps == MAX_POLL_STEPS {
                return Ok(false);
            }
            steps += 1;
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
                        let off = pos & mask;
                        if off != 0 && u64::from(len & !PADDING_FLAG) == cap - off {
                            // The record after the padding was committed with it (and before
                            // `tail` moved past both): followed only below `tail`, so a forged
                            // padding cannot make the cursor skip what was not written.
                            // Pairs with the Release store of `tail` in `Claim::commit`.
                            let tail = self.ring.hdr().tail.tail.load(Ordering::Acquire);
                            if pos + cap - off < tail {
                                self.cursor = pos + cap - off;
                                continue;
                            }
                        }
                    } else {
                        let size = record_size(len);
                        if len <= self.ring.geo().max_msg_len && (pos & mask) + size <= cap {
                            // The header word must predate any overwrite (seqlock read side:
                            // the record is handed out only if its header was intact; for a
                            // registered consumer, only while it holds its slot).
                            if !self.unchanged(pos) {
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
            // Lapped before reading: the bytes at the cursor are certainly overwritten (or
            // `tail` is corrupt: `overrun` checks it first).
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
                if !self.unchanged(pos) {
                    match self.overrun() {
                        Some(e) => return Err(e),
                        None => continue,
                    }
                }
                let want = cap - (pos & mask);
                if pad != want || want == cap {
                    return Err(self.corrupt(pos, RingWord::Padding, pad, want));
                }
                if pos + pad >= self.cached_tail {
                    let bound = self.cached_tail - pos - 1;
                    return Err(self.corrupt(pos, RingWord::Padding, pad, bound));
                }
                self.cursor = pos + pad;
                continue;
            }
            let marker = self.ring.data().load(pos + 8);
            let size = record_size(len);
            let found = marker_seq(marker);
            if len > self.ring.geo().max_msg_len
                || (pos & mask) + size > cap
                || pos + size > self.cached_tail
                || found != Some(self.expected)
            {
                if !self.unchanged(pos) {
                    match self.overrun() {
                        Some(e) => return Err(e),
                        None => continue,
                    }
                }
                return Err(if found != Some(self.expected) {
                    let value = found.unwrap_or(u64::MAX);
                    self.corrupt(pos, RingWord::RecordMarker, value, self.expected)
                } else {
                    let room = (cap - (pos & mask)).min(self.cached_tail - pos);
                    let max = room.saturating_sub(RECORD_HEADER_LEN as u64);
                    let bound = max.min(self.ring.geo().max_msg_len.into());
                    self.corrupt(pos, RingWord::RecordLen, len.into(), bound)
                });
            }
            // As on the fast path: never hand out a record whose header may be overwritten.
            if !self.unchanged(pos) {
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
        // Checked just above: a registered consumer still held its slot.
        let stable = !self.validate;
        #[cfg(not(loom))]
        {
            let off = pos & mask;
            // SAFETY: `off + 16 + len <= off + size <= capacity` was checked above, so the
            // slice lies inside the data region, which the ring handle keeps mapped. The bytes
            // were committed before the marker or `tail` we acquired. If `stable`, the
            // producer leaves them alone until our position passes them (see
            // `Record::is_stable`); otherwise it may be rewriting them while `f` runs (any
            // byte pattern is a valid `u8`), which the `unchanged` check below detects, and
            // the record is then reported lost.
            let payload = unsafe {
                self.ring
                    .data()
                    .bytes(off as usize + RECORD_HEADER_LEN, len as usize)
            };
            f(Record {
                payload,
                msg_type,
                seq,
                stable,
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
                stable,
            });
        }
        if !self.unchanged(pos) {
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
            _ => self.header_fault(Fault {
                position: self.cursor,
                word: RingWord::State,
                value: state.into(),
                bound: STATE_SUPERSEDED.into(),
            }),
        }))
    }

    /// Lapped: resynchronise per `Resync` and count exactly what was lost. `None` if nothing
    /// was lost after all (the overwritten bytes were padding and the next record is intact):
    /// the consumer continues from there. Checks the header words first: a lap that a corrupt
    /// `tail` (or intent) makes up is reported as such, and the cursor stays.
    #[cold]
    #[inline(never)]
    fn overrun(&mut self) -> Option<PollError> {
        let snapshot = match self.snapshot() {
            Ok(s) => s,
            Err(f) => return Some(self.header_fault(f)),
        };
        if self.slot_index != usize::MAX {
            if self.slot_held() {
                // The producer never commits more than a ring ahead of a slot it respects.
                let bound = self.cursor.saturating_add(self.ring.geo().capacity);
                return Some(self.header_fault(Fault {
                    position: self.cursor,
                    word: RingWord::Tail,
                    value: snapshot.tail,
                    bound,
                }));
            }
            self.slot_lost(self.cursor);
        }
        let first_lost_seq = self.expected;
        let oldest = self.locate_oldest();
        let found = match (oldest, self.opts.resync) {
            (Ok((pos, seq)), _) if seq == first_lost_seq => {
                self.set_position(pos, seq);
                return None;
            }
            (Ok(found), Resync::Oldest) => Ok(found),
            (Err(f), Resync::Oldest) => Err(f),
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
            Err(f) => self.header_fault(f),
        })
    }

    /// A header word (or the record a header word points at) breaks an invariant: report it
    /// and stay where we are (nothing is skipped; `tail` is read again on the next poll).
    #[cold]
    #[inline(never)]
    fn header_fault(&mut self, f: Fault) -> PollError {
        self.stats.corrupt += 1;
        self.cached_tail = self.cursor;
        PollError::Corrupt {
            position: f.position,
            word: f.word,
            value: f.value,
            bound: f.bound,
        }
    }

    /// Not a record although not overwritten: report it (or the header word that led here)
    /// and jump to the newest record.
    #[cold]
    #[inline(never)]
    fn corrupt(&mut self, position: u64, word: RingWord, value: u64, bound: u64) -> PollError {
        if let Err(f) = self.snapshot() {
            return self.header_fault(f);
        }
        self.stats.corrupt += 1;
        match self.locate_newest() {
            Ok((pos, seq, size)) if pos != position && size != 0 => self.set_position(pos, seq),
            Ok((pos, seq, size)) => {
                // The newest record is the bad one: skip past it.
                self.set_position(pos + size.max(8), seq + 1);
            }
            Err(_) => {
                // No usable record at all: wait at the tail, if it can be trusted.
                if let Ok(s) = self.snapshot() {
                    self.set_position(s.tail, self.expected);
                }
            }
        }
        PollError::Corrupt {
            position,
            word,
            value,
            bound,
        }
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
        let start = Instant::now();
        let expired = |start: Instant| timeout.is_some_and(|t| start.elapsed() >= t);
        // `Batching` pauses before its first check.
        if !matches!(strategy, WaitStrategy::Batching { .. }) && self.readable()? {
            return Ok(true);
        }
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
            WaitStrategy::Batching { pause } => loop {
                let paused = Instant::now();
                while paused.elapsed() < pause {
                    spin_loop();
                }
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

    /// Whether this consumer holds a lossless slot (false from the poll that found it taken).
    pub fn is_registered(&self) -> bool {
        self.slot_index != usize::MAX
    }

    /// The segment file (`None` for in-process rings).
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }
}

/// Whether bytes at `pos` and after are intact while `tail_intent` is `intent`.
#[inline]
fn intact_under(intent: u64, pos: u64, capacity: u64) -> bool {
    intent <= pos.saturating_add(capacity)
}

#[cfg(test)]
impl Consumer {
    /// Rewrites the pid in this consumer's slot (tests simulate a dead consumer process).
    pub(crate) fn test_set_slot_pid(&self, pid: u32) {
        set_slot_pid(&self.ring.slots()[self.slot_index], pid);
    }

    /// The shared header (tests corrupt its words).
    pub(crate) fn test_header(&self) -> &crate::layout::Header {
        self.ring.hdr()
    }

    /// Overwrites the data word at `pos` (tests forge records).
    pub(crate) fn test_store_data(&self, pos: u64, value: u64) {
        self.ring.data().store(pos, value);
    }
}

#[cfg(any(test, loom))]
impl ConsumerFactory {
    /// Rewrites the pid in slot `index` (tests, and the loom model, simulate a consumer
    /// process that died while its consumer was borrowed).
    #[doc(hidden)]
    pub fn test_set_slot_pid(&self, index: usize, pid: u32) {
        set_slot_pid(&self.seg.slots()[index], pid);
    }
}

#[cfg(any(test, loom))]
fn set_slot_pid(slot: &crate::layout::ConsumerSlot, pid: u32) {
    let ctl = slot.ctl.load(Ordering::Relaxed);
    slot.ctl.store(
        slot_ctl(slot_state(ctl), slot_generation(ctl), pid),
        Ordering::Release,
    );
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

#[cfg(all(test, not(loom)))]
mod prefetch_tests {
    use super::PREFETCH_AHEAD;
    use crate::layout::{MAX_POSITION, record_size};
    use crate::ring::{CACHE_LINE, LineCursor};

    /// A reader walking records of any one length asks for every line from the one after its
    /// start up to `PREFETCH_AHEAD` bytes past the last record it reads, each once, in order,
    /// whatever the record size and start (a fixed distance from each record would skip a
    /// line in every few when records are longer than a line, and ask for others twice).
    #[test]
    fn every_line_ahead_is_asked_for_once() {
        // Fewer starts under miri (an interpreter): the sizes are what matters.
        let step = if cfg!(miri) { 56 } else { 8 };
        for len in (0..=240).step_by(8) {
            let size = record_size(len);
            for start in (0..256).step_by(step) {
                let mut pf = LineCursor::after(start);
                let mut asked = Vec::new();
                let mut pos = start;
                for _ in 0..50 {
                    pf.ask_below(pos + PREFETCH_AHEAD, |line| asked.push(line));
                    pos += size;
                }
                let last = pos - size;
                let first = start / CACHE_LINE * CACHE_LINE + CACHE_LINE;
                let want: Vec<u64> = (first..last + PREFETCH_AHEAD)
                    .step_by(CACHE_LINE as usize)
                    .collect();
                assert_eq!(asked, want, "record size {size}, start {start}");
            }
        }
    }

    /// A cursor made at the far end of the positions (no honest ring gets there) asks for
    /// nothing and never overflows.
    #[test]
    fn cursors_at_the_end_of_the_positions_ask_for_nothing() {
        for start in [u64::MAX - 64, u64::MAX] {
            LineCursor::after(start).ask_below(2 * MAX_POSITION, |line| panic!("asked {line}"));
        }
    }
}
