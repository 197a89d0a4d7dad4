//! The segment layout: this module is the specification of the bytes in a segment file.
//!
//! A segment is one file (or, for in-process rings, one heap allocation with the same layout):
//! a header of `header_size` bytes (a multiple of 4096) followed by the data region of
//! `capacity` bytes (a power of two). All integers are little-endian (the crate refuses to
//! build on big-endian targets). See [`Header`] for the drawn layout and [`RECORD_HEADER_LEN`]
//! for the record framing.

use std::path::Path;

use crate::config::Mode;
use crate::error::SetupError;
use crate::sync::{AtomicU32, AtomicU64};

#[cfg(target_endian = "big")]
compile_error!("mdbus-shm lays out segments as little-endian words; big-endian is unsupported");

/// Magic number at offset 0 of every segment: the ASCII bytes `MDBUSRNG` read as a
/// little-endian `u64`. Written last, with `Release`, when a segment is created.
pub const MAGIC: u64 = u64::from_le_bytes(*b"MDBUSRNG");
/// Layout version of this build. Segments of any other version are refused
/// ([`SetupError::UnsupportedVersion`]). Version 2: record markers (`seq_marker`).
pub const LAYOUT_VERSION: u32 = 2;
/// Size of one header line. Every line that some party writes is on its own line of this size
/// (two 64-byte cache lines, so the adjacent-line prefetcher cannot couple them).
pub const LINE: usize = 128;
/// Size of the fixed part of the header (seven lines); consumer slots follow it.
pub const HEADER_FIXED_SIZE: usize = 7 * LINE;
/// Size of one consumer slot.
pub const SLOT_SIZE: usize = LINE;
/// The header (fixed part plus slots) is rounded up to this, so the data region starts on a
/// page boundary.
pub const DATA_ALIGN: usize = 4096;
/// Upper bound on [`RingConfig::max_consumers`](crate::RingConfig::max_consumers).
pub const MAX_CONSUMER_SLOTS: u32 = 1024;
/// Bytes of the record header: `len: u32`, `msg_type: u32`, `marker: u64` (the sequence number,
/// encoded by `seq_marker`).
pub const RECORD_HEADER_LEN: usize = 16;
/// Records start on multiples of this (so the payload is 8-byte aligned too).
pub const RECORD_ALIGN: usize = 8;
/// Bit 31 of a record's `len` word marks a padding record: the remaining bits give the number
/// of bytes from the padding record's start to the end of the data region. Padding is never
/// delivered; when it is 16 bytes or more its second word holds the marker of the record that
/// follows it (see `seq_marker`).
pub const PADDING_FLAG: u32 = 1 << 31;
/// Positions read from a segment are refused at or above this (2^62 bytes: 146 years at
/// 1 GB/s), so that position arithmetic never overflows whatever a segment holds.
pub(crate) const MAX_POSITION: u64 = 1 << 62;
/// Value of [`TailLine::latest`] before the first commit.
pub(crate) const NO_RECORD: u64 = u64::MAX;

/// [`ControlLine::state`]: a producer owns the segment and may publish.
pub(crate) const STATE_LIVE: u32 = 1;
/// [`ControlLine::state`]: the producer dropped its handle; no record will follow.
pub(crate) const STATE_CLOSED: u32 = 2;
/// [`ControlLine::state`]: a newer producer replaced this file; see `successor_epoch`.
pub(crate) const STATE_SUPERSEDED: u32 = 3;

/// Mode code in the header for [`Mode::Broadcast`].
pub(crate) const MODE_BROADCAST: u32 = 1;
/// Mode code in the header for [`Mode::Lossless`].
pub(crate) const MODE_LOSSLESS: u32 = 2;

/// Slot state (bits 0..8 of [`ConsumerSlot::ctl`]): free.
pub(crate) const SLOT_FREE: u64 = 0;
/// Slot state: owned by a joining consumer, position not yet valid (the producer ignores it).
pub(crate) const SLOT_CLAIMED: u64 = 1;
/// Slot state: the producer never overwrites bytes at or after `position`.
pub(crate) const SLOT_ACTIVE: u64 = 2;

// Byte offsets of the header fields. They are the file format; the `const` assertions below
// tie them to the Rust struct.
pub(crate) const OFF_MAGIC: usize = 0;
pub(crate) const OFF_VERSION: usize = 8;
pub(crate) const OFF_HEADER_SIZE: usize = 12;
pub(crate) const OFF_CAPACITY: usize = 16;
pub(crate) const OFF_MAX_MSG_LEN: usize = 24;
pub(crate) const OFF_MODE: usize = 28;
pub(crate) const OFF_MAX_CONSUMERS: usize = 32;
pub(crate) const OFF_PRODUCER_PID: usize = 36;
pub(crate) const OFF_EPOCH: usize = 40;
pub(crate) const OFF_CREATED_UNIX_NS: usize = 48;
pub(crate) const OFF_SEGMENT_LEN: usize = 56;
pub(crate) const OFF_STATE: usize = LINE;
pub(crate) const OFF_SUCCESSOR_EPOCH: usize = LINE + 8;
pub(crate) const OFF_REAPED: usize = LINE + 16;
pub(crate) const OFF_HEARTBEAT: usize = 2 * LINE;
pub(crate) const OFF_TAIL: usize = 3 * LINE;
pub(crate) const OFF_LATEST: usize = 3 * LINE + 8;
pub(crate) const OFF_INTENT: usize = 4 * LINE;
pub(crate) const OFF_HEAD: usize = 5 * LINE;
pub(crate) const OFF_WAKE_REQUEST: usize = 6 * LINE;
pub(crate) const OFF_FUTEX: usize = 6 * LINE + 4;

/// The segment header, at offset 0 of the mapping.
///
/// ```text
///  offset  line (128 B each)    field (offset in line)                    written by, when
///  0x000  +-------------------+---------------------------------------+---------------------------
///         | MetaLine          | 0  magic          u64  "MDBUSRNG"     | creator, LAST (Release)
///         |                   | 8  version        u32  | 12 header_size u32  creator, once
///         |                   | 16 capacity       u64  (power of two) | creator, once
///         |                   | 24 max_msg_len    u32  | 28 mode u32  | creator, once
///         |                   | 32 max_consumers  u32  | 36 pid  u32  | creator, once
///         |                   | 40 epoch          u64                 | creator, once
///         |                   | 48 created_unix_ns u64                | creator, once
///         |                   | 56 segment_len    u64 (= header_size + capacity)
///         |                   | 64..128 reserved, zero                |
///  0x080  | ControlLine       | 0  state u32 (1 live, 2 closed, 3 superseded) | 4 pad
///         |                   | 8  successor_epoch u64                | successor producer, once
///         |                   | 16 reaped_consumers u64               | producer, when reaping
///  0x100  | HeartbeatLine     | 0  heartbeat_ns u64 (CLOCK_MONOTONIC) | producer heartbeat()
///  0x180  | TailLine          | 0  tail u64    | 8 latest u64         | producer, every commit
///  0x200  | IntentLine        | 0  tail_intent u64                    | producer, every capacity/8 B
///  0x280  | HeadLine          | 0  head u64                           | producer, every capacity/8 B
///  0x300  | NotifyLine        | 0  wake_request u32 | 4 futex_word u32 | sleeping consumers / producer
///  0x380  +-------------------+---------------------------------------+---------------------------
///         | ConsumerSlot[0]   | 0  ctl u64 (state:8 | generation:24 | pid:32) | 8 position u64
///         | ...               |    one 128-byte line per slot, max_consumers slots
///         | ConsumerSlot[n-1] |                                       |
///         | zero fill to header_size (multiple of 4096)               |
///  header_size +--------------+---------------------------------------+
///         | data region: capacity bytes of records, index = position & (capacity - 1)
///         +-----------------------------------------------------------+
/// ```
///
/// Positions (`tail`, `tail_intent`, `head`, `latest`, slot `position`) are monotonically
/// increasing byte counters that never wrap in practice (2^64 bytes).
///
/// * `tail`: end of the last committed record. Readers read only below it (`Acquire`, pairs
///   with the `Release` of the commit).
/// * `latest`: start of the last committed record (`u64::MAX` before the first commit).
/// * `tail_intent`: the producer may have written (or be writing) any byte below it, so a byte
///   at position `p` is intact only while `tail_intent <= p + capacity`.
/// * `head`: start of the oldest record still intact (`>= tail_intent - capacity`).
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    pub(crate) meta: MetaLine,
    pub(crate) control: ControlLine,
    pub(crate) heartbeat: HeartbeatLine,
    pub(crate) tail: TailLine,
    pub(crate) intent: PosLine,
    pub(crate) head: PosLine,
    pub(crate) notify: NotifyLine,
}

/// Line 0: the immutable description of the segment.
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct MetaLine {
    pub(crate) magic: AtomicU64,
    pub(crate) version: u32,
    pub(crate) header_size: u32,
    pub(crate) capacity: u64,
    pub(crate) max_msg_len: u32,
    pub(crate) mode: u32,
    pub(crate) max_consumers: u32,
    pub(crate) producer_pid: u32,
    pub(crate) epoch: u64,
    pub(crate) created_unix_ns: u64,
    pub(crate) segment_len: u64,
    pub(crate) _reserved: [u8; 64],
}

/// Line 1: end-of-stream and replacement, rarely written.
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct ControlLine {
    pub(crate) state: AtomicU32,
    pub(crate) _pad0: u32,
    pub(crate) successor_epoch: AtomicU64,
    pub(crate) reaped_consumers: AtomicU64,
    pub(crate) _pad: [u8; 104],
}

/// Line 2: the producer's liveness stamp.
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct HeartbeatLine {
    pub(crate) heartbeat_ns: AtomicU64,
    pub(crate) _pad: [u8; 120],
}

/// Line 3: the commit line.
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct TailLine {
    pub(crate) tail: AtomicU64,
    pub(crate) latest: AtomicU64,
    pub(crate) _pad: [u8; 112],
}

/// Lines 4 and 5: `tail_intent` and `head`.
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct PosLine {
    pub(crate) value: AtomicU64,
    pub(crate) _pad: [u8; 120],
}

/// Line 6: blocking-wait support.
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct NotifyLine {
    pub(crate) wake_request: AtomicU32,
    pub(crate) futex_word: AtomicU32,
    pub(crate) _pad: [u8; 120],
}

/// One lossless-consumer slot, on its own line after the fixed header.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct ConsumerSlot {
    /// `state (bits 0..8) | generation (8..32) | pid (32..64)`; changed only by CAS.
    pub(crate) ctl: AtomicU64,
    /// Next position the consumer will read; the producer never overwrites it.
    pub(crate) position: AtomicU64,
    pub(crate) _pad: [u8; 112],
}

#[cfg(not(loom))]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<MetaLine>() == LINE);
    assert!(size_of::<ControlLine>() == LINE);
    assert!(size_of::<HeartbeatLine>() == LINE);
    assert!(size_of::<TailLine>() == LINE);
    assert!(size_of::<PosLine>() == LINE);
    assert!(size_of::<NotifyLine>() == LINE);
    assert!(size_of::<ConsumerSlot>() == SLOT_SIZE);
    assert!(align_of::<ConsumerSlot>() == LINE);
    assert!(size_of::<Header>() == HEADER_FIXED_SIZE);
    assert!(align_of::<Header>() == LINE);
    assert!(offset_of!(Header, meta) + offset_of!(MetaLine, magic) == OFF_MAGIC);
    assert!(offset_of!(MetaLine, version) == OFF_VERSION);
    assert!(offset_of!(MetaLine, header_size) == OFF_HEADER_SIZE);
    assert!(offset_of!(MetaLine, capacity) == OFF_CAPACITY);
    assert!(offset_of!(MetaLine, max_msg_len) == OFF_MAX_MSG_LEN);
    assert!(offset_of!(MetaLine, mode) == OFF_MODE);
    assert!(offset_of!(MetaLine, max_consumers) == OFF_MAX_CONSUMERS);
    assert!(offset_of!(MetaLine, producer_pid) == OFF_PRODUCER_PID);
    assert!(offset_of!(MetaLine, epoch) == OFF_EPOCH);
    assert!(offset_of!(MetaLine, created_unix_ns) == OFF_CREATED_UNIX_NS);
    assert!(offset_of!(MetaLine, segment_len) == OFF_SEGMENT_LEN);
    assert!(offset_of!(Header, control) + offset_of!(ControlLine, state) == OFF_STATE);
    assert!(
        offset_of!(Header, control) + offset_of!(ControlLine, successor_epoch)
            == OFF_SUCCESSOR_EPOCH
    );
    assert!(offset_of!(Header, control) + offset_of!(ControlLine, reaped_consumers) == OFF_REAPED);
    assert!(
        offset_of!(Header, heartbeat) + offset_of!(HeartbeatLine, heartbeat_ns) == OFF_HEARTBEAT
    );
    assert!(offset_of!(Header, tail) + offset_of!(TailLine, tail) == OFF_TAIL);
    assert!(offset_of!(Header, tail) + offset_of!(TailLine, latest) == OFF_LATEST);
    assert!(offset_of!(Header, intent) + offset_of!(PosLine, value) == OFF_INTENT);
    assert!(offset_of!(Header, head) + offset_of!(PosLine, value) == OFF_HEAD);
    assert!(offset_of!(Header, notify) + offset_of!(NotifyLine, wake_request) == OFF_WAKE_REQUEST);
    assert!(offset_of!(Header, notify) + offset_of!(NotifyLine, futex_word) == OFF_FUTEX);
    assert!(offset_of!(ConsumerSlot, ctl) == 0);
    assert!(offset_of!(ConsumerSlot, position) == 8);
    assert!(HEADER_FIXED_SIZE.is_multiple_of(LINE) && DATA_ALIGN.is_multiple_of(LINE));
    assert!(RECORD_HEADER_LEN.is_multiple_of(RECORD_ALIGN));
};

/// The immutable fields of a header, as written at creation and validated at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeaderInfo {
    pub(crate) header_size: u32,
    pub(crate) capacity: u64,
    pub(crate) max_msg_len: u32,
    pub(crate) mode: Mode,
    pub(crate) max_consumers: u32,
    pub(crate) producer_pid: u32,
    pub(crate) epoch: u64,
    pub(crate) created_unix_ns: u64,
    pub(crate) segment_len: u64,
}

/// The changing fields of a header, read for listings (a snapshot, no ordering guarantees).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeaderDynamic {
    pub(crate) state: u32,
    pub(crate) successor_epoch: u64,
    pub(crate) heartbeat_ns: u64,
    pub(crate) tail: u64,
}

impl Header {
    /// A header for a fresh segment, with `magic` still zero: the creator publishes the segment
    /// by storing [`MAGIC`] with `Release` after everything else is in place.
    pub(crate) fn new(info: &HeaderInfo, now_ns: u64) -> Header {
        Header {
            meta: MetaLine {
                magic: AtomicU64::new(0),
                version: LAYOUT_VERSION,
                header_size: info.header_size,
                capacity: info.capacity,
                max_msg_len: info.max_msg_len,
                mode: mode_code(info.mode),
                max_consumers: info.max_consumers,
                producer_pid: info.producer_pid,
                epoch: info.epoch,
                created_unix_ns: info.created_unix_ns,
                segment_len: info.segment_len,
                _reserved: [0; 64],
            },
            control: ControlLine {
                state: AtomicU32::new(STATE_LIVE),
                _pad0: 0,
                successor_epoch: AtomicU64::new(0),
                reaped_consumers: AtomicU64::new(0),
                _pad: [0; 104],
            },
            heartbeat: HeartbeatLine {
                heartbeat_ns: AtomicU64::new(now_ns),
                _pad: [0; 120],
            },
            tail: TailLine {
                tail: AtomicU64::new(0),
                latest: AtomicU64::new(NO_RECORD),
                _pad: [0; 112],
            },
            // Nothing is overwritten during the first lap.
            intent: PosLine {
                value: AtomicU64::new(info.capacity),
                _pad: [0; 120],
            },
            head: PosLine {
                value: AtomicU64::new(0),
                _pad: [0; 120],
            },
            notify: NotifyLine {
                wake_request: AtomicU32::new(0),
                futex_word: AtomicU32::new(0),
                _pad: [0; 120],
            },
        }
    }
}

impl ConsumerSlot {
    /// A free slot.
    pub(crate) fn new() -> ConsumerSlot {
        ConsumerSlot {
            ctl: AtomicU64::new(0),
            position: AtomicU64::new(0),
            _pad: [0; 112],
        }
    }
}

/// Bytes of the header for `max_consumers` slots: fixed lines plus slots, rounded up to
/// [`DATA_ALIGN`].
pub(crate) const fn header_size_for(max_consumers: u32) -> usize {
    let raw = HEADER_FIXED_SIZE + SLOT_SIZE * max_consumers as usize;
    raw.div_ceil(DATA_ALIGN) * DATA_ALIGN
}

/// Bytes one record occupies in the ring: header plus payload, rounded up to [`RECORD_ALIGN`].
#[inline]
pub(crate) const fn record_size(len: u32) -> u64 {
    (RECORD_HEADER_LEN as u64 + len as u64 + (RECORD_ALIGN as u64 - 1)) & !(RECORD_ALIGN as u64 - 1)
}

/// First word of a record: `len` in the low half, `msg_type` in the high half.
#[inline]
pub(crate) const fn record_word(len: u32, msg_type: u32) -> u64 {
    len as u64 | ((msg_type as u64) << 32)
}

/// Second word of a record (and of a padding record of 16 bytes or more): the visibility
/// marker, written last by `commit` with `Release`. `(seq + 1) << 1` (so zeroed memory never
/// matches), plus [`MARK_NEXT_UNCLEARED`] when the producer could not clear the next record's
/// marker word (it lay beyond the bytes it may write). A padding record carries the marker of
/// the record that follows it.
#[inline]
pub(crate) const fn seq_marker(seq: u64, next_uncleared: bool) -> u64 {
    ((seq + 1) << 1) | next_uncleared as u64
}

/// Low bit of a marker: the word 8 bytes past this record's end was not cleared, so a reader
/// there must not trust the marker it finds and goes through `tail` instead.
pub(crate) const MARK_NEXT_UNCLEARED: u64 = 1;

/// The sequence number a marker stands for (`None` for a zero word: never written).
#[inline]
pub(crate) const fn marker_seq(marker: u64) -> Option<u64> {
    (marker >> 1).checked_sub(1)
}

/// First word of a padding record of `pad` bytes.
#[inline]
pub(crate) const fn padding_word(pad: u64) -> u64 {
    record_word(PADDING_FLAG | pad as u32, 0)
}

pub(crate) const fn mode_code(mode: Mode) -> u32 {
    match mode {
        Mode::Broadcast => MODE_BROADCAST,
        Mode::Lossless => MODE_LOSSLESS,
    }
}

pub(crate) const fn slot_ctl(state: u64, generation: u64, pid: u32) -> u64 {
    (state & 0xff) | ((generation & 0xff_ffff) << 8) | ((pid as u64) << 32)
}
pub(crate) const fn slot_state(ctl: u64) -> u64 {
    ctl & 0xff
}
pub(crate) const fn slot_generation(ctl: u64) -> u64 {
    (ctl >> 8) & 0xff_ffff
}
pub(crate) const fn slot_pid(ctl: u64) -> u32 {
    (ctl >> 32) as u32
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

impl HeaderInfo {
    /// Validates the first [`HEADER_FIXED_SIZE`] bytes of a segment file of `file_len` bytes.
    /// Checks every field that later pointer arithmetic depends on; never trusts a size before
    /// checking it against the file length.
    pub(crate) fn parse(
        path: &Path,
        bytes: &[u8],
        file_len: u64,
    ) -> Result<HeaderInfo, SetupError> {
        let need = HEADER_FIXED_SIZE as u64;
        if file_len < need || (bytes.len() as u64) < need {
            return Err(SetupError::Truncated {
                path: path.to_path_buf(),
                len: file_len.min(bytes.len() as u64),
                expected: need,
            });
        }
        let magic = u64_at(bytes, OFF_MAGIC);
        if magic != MAGIC {
            return Err(SetupError::BadMagic {
                path: path.to_path_buf(),
                found: magic,
                expected: MAGIC,
            });
        }
        let version = u32_at(bytes, OFF_VERSION);
        if version != LAYOUT_VERSION {
            return Err(SetupError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        let bad = |field: &'static str, offset: usize, value: u64| SetupError::BadHeader {
            path: path.to_path_buf(),
            field,
            offset,
            value,
        };
        let max_consumers = u32_at(bytes, OFF_MAX_CONSUMERS);
        if max_consumers > MAX_CONSUMER_SLOTS {
            return Err(bad(
                "max_consumers",
                OFF_MAX_CONSUMERS,
                max_consumers.into(),
            ));
        }
        let header_size = u32_at(bytes, OFF_HEADER_SIZE);
        if header_size as usize != header_size_for(max_consumers) {
            return Err(bad("header_size", OFF_HEADER_SIZE, header_size.into()));
        }
        let capacity = u64_at(bytes, OFF_CAPACITY);
        if !capacity.is_power_of_two()
            || capacity < crate::config::MIN_CAPACITY as u64
            || capacity > crate::config::MAX_CAPACITY as u64
        {
            return Err(bad("capacity", OFF_CAPACITY, capacity));
        }
        let max_msg_len = u32_at(bytes, OFF_MAX_MSG_LEN);
        if max_msg_len >= PADDING_FLAG || record_size(max_msg_len) > capacity / 4 {
            return Err(bad("max_msg_len", OFF_MAX_MSG_LEN, max_msg_len.into()));
        }
        let mode = match u32_at(bytes, OFF_MODE) {
            MODE_BROADCAST => Mode::Broadcast,
            MODE_LOSSLESS => Mode::Lossless,
            other => return Err(bad("mode", OFF_MODE, other.into())),
        };
        let segment_len = u64_at(bytes, OFF_SEGMENT_LEN);
        if segment_len != header_size as u64 + capacity {
            return Err(bad("segment_len", OFF_SEGMENT_LEN, segment_len));
        }
        if file_len < segment_len {
            return Err(SetupError::Truncated {
                path: path.to_path_buf(),
                len: file_len,
                expected: segment_len,
            });
        }
        Ok(HeaderInfo {
            header_size,
            capacity,
            max_msg_len,
            mode,
            max_consumers,
            producer_pid: u32_at(bytes, OFF_PRODUCER_PID),
            epoch: u64_at(bytes, OFF_EPOCH),
            created_unix_ns: u64_at(bytes, OFF_CREATED_UNIX_NS),
            segment_len,
        })
    }
}

impl HeaderDynamic {
    /// Reads the changing fields out of a byte snapshot of the fixed header.
    pub(crate) fn parse(bytes: &[u8]) -> HeaderDynamic {
        HeaderDynamic {
            state: u32_at(bytes, OFF_STATE),
            successor_epoch: u64_at(bytes, OFF_SUCCESSOR_EPOCH),
            heartbeat_ns: u64_at(bytes, OFF_HEARTBEAT),
            tail: u64_at(bytes, OFF_TAIL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sizes_are_aligned() {
        assert_eq!(record_size(0), 16);
        assert_eq!(record_size(1), 24);
        assert_eq!(record_size(8), 24);
        assert_eq!(record_size(9), 32);
        assert_eq!(record_size(64), 80);
    }

    #[test]
    fn header_sizes_are_page_multiples() {
        assert_eq!(header_size_for(0), 4096);
        assert_eq!(header_size_for(16), 4096);
        assert_eq!(header_size_for(25), 4096);
        assert_eq!(header_size_for(26), 8192);
    }

    #[test]
    fn slot_ctl_round_trips() {
        let c = slot_ctl(SLOT_ACTIVE, 0x12_3456, 4_000_000_000);
        assert_eq!(slot_state(c), SLOT_ACTIVE);
        assert_eq!(slot_generation(c), 0x12_3456);
        assert_eq!(slot_pid(c), 4_000_000_000);
    }

    #[test]
    fn padding_word_is_flagged() {
        let w = padding_word(40);
        assert_eq!(w as u32 & PADDING_FLAG, PADDING_FLAG);
        assert_eq!(u64::from(w as u32 & !PADDING_FLAG), 40);
    }
}
