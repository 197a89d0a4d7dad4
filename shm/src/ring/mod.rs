//! The ring protocol: one code path over a header, a slot array and a data region, whatever
//! backs them (file mapping, heap, or loom model values).
//!
//! This module and the segment module hold all of the crate's `unsafe`.

mod consumer;
#[cfg(all(test, not(loom)))]
mod hostile_tests;
mod producer;
#[cfg(all(test, not(loom)))]
mod tests;

use std::ptr::NonNull;
use std::sync::Arc;

pub use consumer::{
    Consumer, ConsumerFactory, ConsumerStats, EpochChange, ProducerStatus, Record, RecordInfo,
};
#[cfg(not(loom))]
pub use producer::InPlace;
pub use producer::{BatchClaim, Claim, Producer};

use crate::config::{Geometry, Mode, RingConfig};
use crate::error::SetupError;
use crate::layout::{ConsumerSlot, Header, MAX_POSITION};
use crate::segment::Segment;
use crate::sync::{AtomicU64, Ordering};

/// The data region, addressed by ring position. Every 8-byte word access masks the position
/// with `(capacity - 1) & !7`, so it is in bounds and aligned whatever the position (positions
/// read from shared memory are not trusted).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Data {
    #[cfg(not(loom))]
    base: NonNull<u8>,
    #[cfg(loom)]
    words: NonNull<AtomicU64>,
    wmask: u64,
    capacity: usize,
    /// Whether the CPU has `prefetchw` (see [`Data::prefetch_write`]).
    #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
    prefetchw: bool,
    /// Whether the CPU has `cldemote` (see [`Data::demote`]).
    #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
    cldemote: bool,
}

impl Data {
    /// The 8-byte word at `pos` (masked into the region).
    #[inline]
    fn word(&self, pos: u64) -> &AtomicU64 {
        let off = (pos & self.wmask) as usize;
        #[cfg(not(loom))]
        {
            // SAFETY: `off < capacity` by the mask: the result stays inside the data region.
            let p = unsafe { self.base.as_ptr().add(off) };
            // SAFETY: `off % 8 == 0` by the mask and the region is 4096-aligned, so `p` is an
            // aligned u64 inside the data region, which stays mapped while the owning
            // `RingHandle` (holding the `Arc<Segment>`) lives; the returned borrow is tied to
            // `&self`, hence to that handle. Record header words are only ever accessed
            // atomically.
            unsafe { AtomicU64::from_ptr(p.cast::<u64>()) }
        }
        #[cfg(loom)]
        {
            // SAFETY: `off / 8 < capacity / 8`, the length of the word array.
            let p = unsafe { self.words.add(off / 8) };
            // SAFETY: an initialised element of the word array, which lives as long as the
            // owning `RingHandle`.
            unsafe { p.as_ref() }
        }
    }

    /// Relaxed load of the word at `pos`. Ordering comes from the positions and fences around.
    #[inline]
    pub(crate) fn load(&self, pos: u64) -> u64 {
        self.word(pos).load(Ordering::Relaxed)
    }

    /// Acquire load of the word at `pos` (a record's marker).
    #[inline]
    pub(crate) fn load_acquire(&self, pos: u64) -> u64 {
        self.word(pos).load(Ordering::Acquire)
    }

    /// Release store of the word at `pos` (a record's marker).
    #[inline]
    pub(crate) fn store_release(&self, pos: u64, value: u64) {
        self.word(pos).store(value, Ordering::Release)
    }

    /// Relaxed store of the word at `pos`.
    #[inline]
    pub(crate) fn store(&self, pos: u64, value: u64) {
        self.word(pos).store(value, Ordering::Relaxed)
    }

    /// Asks the cache for the line holding position `pos` (masked into the region): a hint
    /// that reads nothing and cannot fault, so a reader walking records (each position known
    /// only from the length before it) has the lines ahead on their way.
    #[inline]
    pub(crate) fn prefetch(&self, pos: u64) {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        prefetch_ptr(self.base.as_ptr().wrapping_add((pos & self.wmask) as usize));
        #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
        let _ = pos;
    }

    /// Asks the cache for the line holding position `pos` (masked into the region) with the
    /// intent to write it (`prefetchw`, where the CPU has it): the producer takes the line
    /// from the reader that last read it before its stores get there, so they do not wait for
    /// it one line after the other. A hint that reads and writes nothing and cannot fault.
    #[inline]
    pub(crate) fn prefetch_write(&self, pos: u64) {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        if self.prefetchw {
            let p = self.base.as_ptr().wrapping_add((pos & self.wmask) as usize);
            // SAFETY: the CPU has `prefetchw` (CPUID, checked when the handle was made). A
            // prefetch is a hint: it neither reads nor writes memory as far as the program can
            // tell and never faults, whatever the address (here one inside the region); it
            // changes no register, no flag and not the stack.
            unsafe {
                std::arch::asm!(
                    "prefetchw byte ptr [{0}]",
                    in(reg) p,
                    options(nostack, preserves_flags, readonly)
                )
            };
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
        let _ = pos;
    }

    /// Moves the line holding position `pos` (masked into the region) from this core's
    /// private caches towards the cache the cores share (`cldemote`, where the CPU has it), so
    /// the next reader's miss on it is served there rather than by a snoop into this core. A
    /// hint that reads and writes nothing and cannot fault.
    #[inline]
    pub(crate) fn demote(&self, pos: u64) {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        if self.cldemote {
            let p = self.base.as_ptr().wrapping_add((pos & self.wmask) as usize);
            // SAFETY: the CPU has `cldemote` (CPUID, checked when the handle was made). It is
            // a hint: it neither reads nor writes memory as far as the program can tell and
            // never faults, whatever the address (here one inside the region); it changes no
            // register, no flag and not the stack.
            unsafe {
                std::arch::asm!(
                    "cldemote byte ptr [{0}]",
                    in(reg) p,
                    options(nostack, preserves_flags, readonly)
                )
            };
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
        let _ = pos;
    }

    /// The payload bytes `[off, off + len)` of the region, for reading.
    ///
    /// # Safety
    /// `off + len <= capacity`. The bytes are shared with the producer: in broadcast mode a
    /// lapping producer may be writing them concurrently, so the caller must validate the read
    /// afterwards and treat the content as possibly torn (any byte pattern is a valid `u8`).
    #[cfg(not(loom))]
    #[inline]
    pub(crate) unsafe fn bytes(&self, off: usize, len: usize) -> &[u8] {
        debug_assert!(off + len <= self.capacity);
        // SAFETY: `off <= capacity` by the caller's contract: inside (or one past) the region.
        let p = unsafe { self.base.as_ptr().add(off) };
        // SAFETY: `len` bytes from `p` are in bounds by the caller's contract; the mapping
        // outlives `&self`; racing writes are the caller's to validate (see above).
        unsafe { std::slice::from_raw_parts(p, len) }
    }

    /// The payload bytes `[off, off + len)` of the region, for writing.
    ///
    /// # Safety
    /// `off + len <= capacity`, the bytes lie beyond the committed tail (so no reader that is
    /// not lapped looks at them) and the caller is the single producer with no other live
    /// borrow of them.
    #[cfg(not(loom))]
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn bytes_mut(&self, off: usize, len: usize) -> &mut [u8] {
        debug_assert!(off + len <= self.capacity);
        // SAFETY: `off <= capacity` by the caller's contract: inside (or one past) the region.
        let p = unsafe { self.base.as_ptr().add(off) };
        // SAFETY: in bounds and exclusively the producer's by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(p, len) }
    }

    /// Copies `len` payload bytes starting at position `pos` (8-aligned, not crossing the end
    /// of the region) into `out`, word by word (loom models each word as an atomic).
    #[cfg(loom)]
    pub(crate) fn read_into(&self, pos: u64, len: usize, out: &mut Vec<u8>) {
        out.clear();
        let mut p = pos;
        while out.len() < len {
            let w = self.load(p).to_le_bytes();
            let n = (len - out.len()).min(8);
            out.extend_from_slice(&w[..n]);
            p += 8;
        }
    }

    /// Writes `bytes` at position `pos` (8-aligned, not crossing the end), word by word.
    #[cfg(loom)]
    pub(crate) fn write_from(&self, pos: u64, bytes: &[u8]) {
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.store(pos + 8 * i as u64, u64::from_le_bytes(w));
        }
    }
}

/// Bytes of a cache line (the unit a prefetch brings in).
pub(crate) const CACHE_LINE: u64 = 64;

/// The cache lines ahead of a party walking records one after the other, to be asked for each
/// once, in order. Asking for the line a fixed distance from each record instead would skip a
/// line in every few when records are longer than a line (every fifth line of 80-byte records,
/// those of 64-byte payloads) and ask for others twice when they are shorter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LineCursor {
    /// The next line to ask for (a multiple of [`CACHE_LINE`]).
    next: u64,
}

impl LineCursor {
    /// Starting with the line that holds `pos`.
    #[inline]
    pub(crate) fn at(pos: u64) -> LineCursor {
        LineCursor {
            next: pos & !(CACHE_LINE - 1),
        }
    }

    /// Starting with the line after the one that holds `pos` (read anyway).
    #[inline]
    pub(crate) fn after(pos: u64) -> LineCursor {
        LineCursor {
            next: (pos | (CACHE_LINE - 1)).saturating_add(1),
        }
    }

    /// Hands `ask` each line below `upto` not handed out yet, in order. `upto` is at most
    /// `2 * MAX_POSITION` (callers pass a position below [`MAX_POSITION`] plus a short
    /// distance), so the sums cannot overflow.
    #[inline]
    pub(crate) fn ask_below(&mut self, upto: u64, mut ask: impl FnMut(u64)) {
        debug_assert!(upto <= 2 * MAX_POSITION);
        while self.next < upto {
            ask(self.next);
            self.next += CACHE_LINE;
        }
    }
}

/// Whether the CPU has `prefetchw` (CPUID leaf `0x8000_0001`, ECX bit 8).
#[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
fn has_prefetchw() -> bool {
    use std::arch::x86_64::__cpuid;
    __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0
}

/// Consumer slots [`RingHandle::prefetch_slots`] asks for.
#[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
const PREFETCH_SLOTS: usize = 4;

/// Asks the cache for the line holding `p`: a hint that reads nothing as far as the program can
/// tell and cannot fault, whatever the address.
#[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
#[inline]
fn prefetch_ptr(p: *const u8) {
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 target has (baseline). A prefetch
    // is a hint: it neither reads nor writes memory as far as the program can tell and never
    // faults, whatever the address.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast()) };
}

/// Whether the CPU has `cldemote` (CPUID leaf 7, sub-leaf 0, ECX bit 25).
#[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
fn has_cldemote() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    __cpuid(0).eax >= 7 && __cpuid_count(7, 0).ecx & (1 << 25) != 0
}

/// A ring as seen by one party: cached pointers into a segment plus the `Arc` that keeps the
/// segment alive. The fields are private to this module, so every pointer deref below is
/// backed by the `Arc` held beside it.
#[derive(Debug)]
pub(crate) struct RingHandle {
    hdr: NonNull<Header>,
    slots: NonNull<ConsumerSlot>,
    data: Data,
    geo: Geometry,
    seg: Arc<Segment>,
}

// SAFETY: the pointers target the segment owned through `seg` (`Segment: Send + Sync`); all
// shared mutation goes through atomics or through the single-producer protocol, so moving a
// handle to another thread is sound. Handles are not `Sync` (raw pointers), and the producer and
// consumer types built on them are `Send` but not `Sync`.
unsafe impl Send for RingHandle {}

impl RingHandle {
    /// Asks the cache for the lines of the first [`PREFETCH_SLOTS`] consumer slots (those
    /// consumers take first), ahead of a scan that comes after a fence.
    #[inline]
    pub(crate) fn prefetch_slots(&self) {
        #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
        for slot in self.slots().iter().take(PREFETCH_SLOTS) {
            prefetch_ptr(std::ptr::from_ref(slot).cast());
        }
    }

    pub(crate) fn new(seg: Arc<Segment>) -> RingHandle {
        let geo = *seg.geometry();
        let hdr = NonNull::from(seg.header());
        let slots = seg.slots();
        // A dangling-but-aligned pointer is fine for zero slots: `slots()` makes an empty slice.
        let slots_ptr = NonNull::new(slots.as_ptr().cast_mut()).unwrap_or(NonNull::dangling());
        #[cfg(not(loom))]
        let data = Data {
            base: seg.data_ptr(),
            wmask: (geo.capacity - 1) & !7,
            capacity: geo.capacity as usize,
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            prefetchw: has_prefetchw(),
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            cldemote: has_cldemote(),
        };
        #[cfg(loom)]
        let data = Data {
            words: NonNull::new(seg.data_words().as_ptr().cast_mut())
                .unwrap_or(NonNull::dangling()),
            wmask: (geo.capacity - 1) & !7,
            capacity: geo.capacity as usize,
        };
        RingHandle {
            hdr,
            slots: slots_ptr,
            data,
            geo,
            seg,
        }
    }

    #[inline]
    pub(crate) fn hdr(&self) -> &Header {
        // SAFETY: points into the segment kept alive by `self.seg`; the header is initialised
        // (segment invariant) and only mutated through atomics.
        unsafe { self.hdr.as_ref() }
    }

    #[inline]
    pub(crate) fn slots(&self) -> &[ConsumerSlot] {
        // SAFETY: `max_consumers` initialised slots live in the segment kept alive by
        // `self.seg` (segment invariant); they are only mutated through atomics.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr(), self.geo.max_consumers as usize) }
    }

    #[inline]
    pub(crate) fn data(&self) -> &Data {
        &self.data
    }

    #[inline]
    pub(crate) fn geo(&self) -> &Geometry {
        &self.geo
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }
}

/// Creates an in-process ring (heap memory with the segment layout): a producer and a factory
/// for its consumers. The same protocol code as file-backed rings; used by tests, under miri and
/// loom, and for streams that never leave the process.
pub fn in_process(cfg: &RingConfig) -> Result<(Producer, ConsumerFactory), SetupError> {
    cfg.validate()?;
    let epoch = crate::segment::new_epoch();
    let seg = Segment::heap(cfg, epoch)?;
    let producer = Producer::from_segment(seg, cfg.clone(), None);
    let factory = producer.consumer_factory();
    Ok((producer, factory))
}

pub(crate) fn is_lossless(geo: &Geometry) -> bool {
    geo.mode == Mode::Lossless
}
