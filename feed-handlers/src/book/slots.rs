//! The order table's memory: address space reserved once for the table's largest size, and
//! made usable from its start as the table grows, so that a growth extends the slots where
//! they are. A growth into a second allocation held both sets of slots while it moved the
//! orders: on a full day's replay that moment set the process's peak memory.
//!
//! * The reservation is `PROT_NONE`: it costs address space, not memory, and is not charged
//!   to the host's commit limit until a step makes it writable.
//! * A step is committed (made writable, then populated, so that the hot thread takes no
//!   page fault on it) on a housekeeping thread while the table keeps working below it, then
//!   taken by [`Slots::grow`] on the hot thread: the join is the only synchronisation, and
//!   committing changes no byte the table reads.
//! * Fresh anonymous memory reads as zeroes, and an all-zero [`Order`] is the empty slot.
//! * On Linux the reservation is asked for transparent huge pages: with a million live
//!   orders nearly every lookup lands on another 4 KiB page.
//! * In a process that locked its future memory (`mlockall(MCL_FUTURE)`), the whole
//!   reservation counts toward `RLIMIT_MEMLOCK`, and each step is locked as it is committed.

use super::orders::Order;
use std::ptr::NonNull;

/// Why slots could not be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoRoom {
    /// The address space for the largest size could not be reserved.
    AddressSpace,
    /// The memory for the first size could not be committed.
    Memory,
}

/// Huge page: commits of at least this much are made in whole huge pages, from an aligned start.
const HUGE: usize = 2 << 20;

/// The thread committing the next step (to `end` bytes): true when it did.
type Committing = std::thread::JoinHandle<bool>;

/// `len` zero-initialised [`Order`] slots at a fixed address, growable in place up to the
/// reservation.
pub(super) struct Slots {
    /// First slot: the start of the reservation.
    base: NonNull<Order>,
    /// Slots in use: `base[..len]` are committed and initialised.
    len: usize,
    /// Bytes from `base` that are writable and populated, at least `len` slots' worth.
    committed: usize,
    /// Bytes from `base` reserved.
    reserved: usize,
    /// The mapping as `mmap` returned it, to unmap.
    map: (usize, usize),
    /// System page size.
    page: usize,
    /// The next step being committed: its end (bytes from `base`), and the thread.
    next: Option<(usize, Committing)>,
}

// SAFETY: `Slots` owns its mapping outright (no other handle to it exists), as a `Box<[Order]>`
// owns its allocation, and `Order` is `Send`; the committing thread only changes the
// protection and backing of bytes past `len`, which no reference covers (see `spawn_commit`).
unsafe impl Send for Slots {}
// SAFETY: `&Slots` only gives `&[Order]` over committed, initialised slots; `Order` is `Sync`.
unsafe impl Sync for Slots {}

impl Slots {
    /// `len` empty slots, committed now, in a reservation for `max_len`.
    pub(super) fn new(len: usize, max_len: usize) -> Result<Self, NoRoom> {
        let max_len = max_len.max(len);
        let size = size_of::<Order>();
        // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096);
        let reserved = max_len.checked_mul(size).ok_or(NoRoom::AddressSpace)?;
        let align = if reserved >= HUGE { HUGE } else { page };
        let map_len = reserved
            .checked_next_multiple_of(page)
            .and_then(|r| r.checked_add(align))
            .ok_or(NoRoom::AddressSpace)?;
        // SAFETY: a fresh private anonymous mapping at an address of the kernel's choice: it
        // cannot overlap memory Rust knows about. PROT_NONE: nothing is readable until
        // committed. The result is checked for MAP_FAILED before use.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(NoRoom::AddressSpace);
        }
        let start = (map as usize).next_multiple_of(align);
        // A successful mmap never returns address 0 for a non-fixed mapping.
        let base = NonNull::new(start as *mut Order).ok_or(NoRoom::AddressSpace)?;
        advise_huge_pages(start, reserved);
        let mut slots = Self {
            base,
            len: 0,
            committed: 0,
            reserved,
            map: (map as usize, map_len),
            page,
            next: None,
        };
        if slots.grow(len) {
            Ok(slots)
        } else {
            Err(NoRoom::Memory)
        }
    }

    /// Slots in use.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of memory held: those committed, and those of a step being committed.
    pub(super) fn bytes(&self) -> usize {
        self.next.as_ref().map_or(self.committed, |(end, _)| *end)
    }

    /// Slots the reservation holds.
    fn max_len(&self) -> usize {
        self.reserved / size_of::<Order>()
    }

    /// The address `offset` bytes from `base`.
    fn address(&self, offset: usize) -> usize {
        self.base.as_ptr() as usize + offset
    }

    /// Bytes from `base` to commit for `len` slots: [`committed_bytes`] in whole pages, never
    /// past the reservation.
    fn commit_end(&self, len: usize) -> usize {
        committed_bytes(len)
            .next_multiple_of(self.page)
            .min(self.reserved.next_multiple_of(self.page))
    }

    /// Starts committing the memory for `len` slots on a housekeeping thread (`name`), for a
    /// later [`grow`](Self::grow); false when no thread could be had (`grow` then commits
    /// itself) or one is already at work.
    pub(super) fn prepare(&mut self, len: usize, name: &str) -> bool {
        self.spawn_commit(len, name, || {})
    }

    /// [`prepare`](Self::prepare), the thread running `first` before it commits (tests hold
    /// it back with this).
    pub(super) fn spawn_commit(
        &mut self,
        len: usize,
        name: &str,
        first: impl FnOnce() + Send + 'static,
    ) -> bool {
        if self.next.is_some() || len > self.max_len() {
            return false;
        }
        let (from, end) = (self.committed, self.commit_end(len));
        if end <= from {
            return false;
        }
        let (start, bytes, page) = (self.address(from), end - from, self.page);
        // The thread commits `start..start + bytes`: inside the reservation (`end` is capped by
        // it), past every committed byte, so past the slots in use and any reference to them.
        // It cannot outlive the mapping: `grow` and `drop` join it before anything else
        // touches these bytes or unmaps them.
        let thread = mdbus_tuning::spawn_housekeeping(name, move || {
            first();
            commit(start, bytes, page)
        });
        match thread {
            Ok(thread) => {
                self.next = Some((end, thread));
                true
            }
            Err(_) => false,
        }
    }

    /// Whether a step is being committed and not done yet.
    pub(super) fn committing(&self) -> bool {
        self.next.as_ref().is_some_and(|(_, t)| !t.is_finished())
    }

    /// Whether a step is being committed or done and not taken yet.
    #[cfg(test)]
    pub(super) fn prepared(&self) -> bool {
        self.next.is_some()
    }

    /// Extends the slots in use to `len` (never shrinks), new slots empty: takes the step
    /// being committed (waiting for it), commits what it lacks here. False, and nothing
    /// changed, when the memory cannot be had or `len` exceeds the reservation.
    pub(super) fn grow(&mut self, len: usize) -> bool {
        if let Some((end, thread)) = self.next.take()
            && thread.join().unwrap_or(false)
        {
            self.committed = self.committed.max(end);
        }
        if len <= self.len {
            return true;
        }
        if len > self.max_len() {
            return false;
        }
        let end = self.commit_end(len);
        if end > self.committed {
            if !commit(
                self.address(self.committed),
                end - self.committed,
                self.page,
            ) {
                return false;
            }
            self.committed = end;
        }
        self.len = len;
        true
    }
}

impl std::ops::Deref for Slots {
    type Target = [Order];

    #[inline]
    fn deref(&self) -> &[Order] {
        // SAFETY: `base[..len]` is committed (readable and writable) and lies inside the
        // mapping, which lives as long as `self`; every byte of it is an initialised `Order`:
        // zeroes when committed (an all-zero `Order` is valid: `Side::Bid` is 0), and after
        // that only written through `&mut [Order]`. `base` is aligned for `Order` (a page
        // boundary).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Slots {
    #[inline]
    fn deref_mut(&mut self) -> &mut [Order] {
        // SAFETY: as for `deref`; `&mut self` makes the slice the only reference to it (the
        // committing thread never touches committed bytes).
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.len) }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // The committing thread works inside the mapping: it must be done before the mapping
        // goes (its address range could be handed out again).
        if let Some((_, thread)) = self.next.take() {
            let _ = thread.join();
        }
        let (map, map_len) = self.map;
        // SAFETY: `map..map + map_len` is the mapping `new` made, unmapped once, here; no
        // reference into it outlives `self`, and no thread works in it any more.
        unsafe { libc::munmap(map as *mut libc::c_void, map_len) };
    }
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("len", &self.len)
            .field("committed", &self.committed)
            .field("reserved", &self.reserved)
            .field("preparing", &self.next.as_ref().map(|(end, _)| end))
            .finish()
    }
}

/// Bytes committed for `len` slots (on a host with 4 KiB pages): whole 4 KiB pages, whole
/// huge pages once that much.
pub(super) const fn committed_bytes(len: usize) -> usize {
    let bytes = len.saturating_mul(size_of::<Order>());
    let unit = if bytes >= HUGE { HUGE } else { 4096 };
    match bytes.checked_next_multiple_of(unit) {
        Some(b) => b,
        None => bytes,
    }
}

/// Makes `start..start + bytes` (aligned to pages of `page` bytes, inside a reservation of
/// [`Slots`], past every committed byte) writable and backs it with memory now; false when
/// the host refuses.
fn commit(start: usize, bytes: usize, page: usize) -> bool {
    if bytes == 0 {
        return true;
    }
    let p = start as *mut libc::c_void;
    // SAFETY: the range is page-aligned and inside a live mapping of ours (the callers'
    // contract), and no Rust reference covers it: until now it was PROT_NONE. Making it
    // readable and writable changes no byte (fresh anonymous memory is zero).
    if unsafe { libc::mprotect(p, bytes, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
        return false;
    }
    populate(start, bytes, page)
}

/// Backs `start..start + bytes` (writable, aligned to pages of `page` bytes, referenced by no
/// one) with memory now, so that first writes do not fault; false when the memory cannot be
/// had.
fn populate(start: usize, bytes: usize, page: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: MADV_POPULATE_WRITE only faults the range's pages in as if written, without
        // changing their contents (zero); on failure it returns -1 and changes nothing.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, bytes, libc::MADV_POPULATE_WRITE) };
        if rc == 0 {
            return true;
        }
        // Older kernels (before 5.14) do not know the advice: touch the pages instead.
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return false;
        }
    }
    for offset in (0..bytes).step_by(page) {
        // SAFETY: `start + offset` lies inside the writable range no one else references (the
        // caller's contract); writing the zero it already holds changes nothing but
        // residency. A host out of memory kills the process here (no error to return) on
        // these old kernels only.
        unsafe { std::ptr::write_volatile((start + offset) as *mut u8, 0) };
    }
    true
}

/// Asks Linux to back `start..start + bytes` with transparent huge pages where it can; only
/// advice: a refusal (no THP in this kernel, `never` in its settings) changes nothing but
/// speed, and is ignored.
fn advise_huge_pages(start: usize, bytes: usize) {
    #[cfg(target_os = "linux")]
    if bytes >= HUGE {
        // SAFETY: the range is a fresh PROT_NONE reservation of ours (`start` aligned to a
        // huge page); MADV_HUGEPAGE only changes how the kernel backs it, never contents or
        // mapping. On error it returns -1 and does nothing.
        let _ = unsafe { libc::madvise(start as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_grow_in_place_and_read_empty() {
        let big = 3 * HUGE / size_of::<Order>();
        let mut s = Slots::new(1_000, big).expect("reserve");
        assert_eq!(s.len(), 1_000);
        assert!(s.iter().all(|o| o.shares == 0 && o.order_ref == 0));
        s[999].shares = 7;
        let at = s.as_ptr();
        assert!(s.prepare(big / 2, "mdbus-test-slots"));
        assert!(s.prepared());
        assert!(s.grow(big / 2));
        assert_eq!((s.as_ptr(), s.len(), s[999].shares), (at, big / 2, 7));
        assert!(s[1_000..].iter().all(|o| o.shares == 0));
        // Committed here when nothing was prepared; past the reservation refused.
        assert!(s.grow(big));
        s[big - 1].shares = 1;
        assert!(!s.grow(big + 1));
        assert_eq!(s.len(), big);
    }

    #[test]
    fn a_reservation_beyond_the_address_space_is_refused() {
        let no_room = Err(NoRoom::AddressSpace);
        assert_eq!(
            Slots::new(1, usize::MAX / size_of::<Order>()).map(|_| ()),
            no_room
        );
        assert_eq!(Slots::new(1, usize::MAX).map(|_| ()), no_room);
        // Beyond any machine's address space (2^52 bytes), though a valid size.
        assert_eq!(Slots::new(1, 1 << 48).map(|_| ()), no_room);
    }

    #[test]
    fn dropping_slots_waits_for_the_step_being_committed() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let mut s = Slots::new(10, 1 << 20).expect("reserve");
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let released = std::sync::Arc::new(AtomicBool::new(false));
        let seen = released.clone();
        assert!(s.spawn_commit(1 << 19, "mdbus-test-slots", move || {
            let _ = wait.recv();
            seen.store(true, Ordering::SeqCst);
        }));
        assert!(s.committing());
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let _ = go.send(());
        });
        // The mapping may only go once the thread working in it is done.
        drop(s);
        assert!(released.load(Ordering::SeqCst));
    }
}
