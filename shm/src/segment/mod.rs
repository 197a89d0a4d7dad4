//! Segment backing: the memory that holds a header and a data region.
//!
//! Three backings, one layout: a memory-mapped file (the normal case: producer and consumers in
//! different processes), a heap allocation (in-process rings, and the only backing under miri),
//! and, under `--cfg loom`, ordinary Rust values (loom atomics cannot live in raw memory). The
//! ring protocol sees only a [`Header`], the slot array and the data region, so it is one code
//! path over all of them.
//!
//! This module and the ring module hold all of the crate's `unsafe`.

pub(crate) mod os;
#[cfg(not(loom))]
pub(crate) mod root;

use std::path::PathBuf;
#[cfg(not(loom))]
use std::ptr::NonNull;
use std::sync::Arc;

use crate::config::{Geometry, RingConfig};
use crate::error::SetupError;
use crate::layout::{ConsumerSlot, Header, HeaderInfo};
#[cfg(not(loom))]
use crate::layout::{HEADER_FIXED_SIZE, MAGIC};
use crate::sync::Ordering;
use crate::unix_ns;

pub(crate) use os::current_uid;

/// Pseudo-path used in errors about in-process rings.
pub(crate) const IN_PROCESS: &str = "<in-process>";

/// What the mapping of a file-backed segment is, for liveness and replacement checks.
#[derive(Debug)]
pub(crate) struct FileIdentity {
    pub(crate) path: PathBuf,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

/// Memory holding one segment. Invariant (all backings): `header()` is an initialised
/// [`Header`] whose immutable fields match `geometry()`, `slots()` has
/// `geometry().max_consumers` initialised slots, and the data region has
/// `geometry().capacity` bytes, 4096-byte aligned; all stay valid until the `Segment` drops.
#[derive(Debug)]
pub(crate) struct Segment {
    geo: Geometry,
    #[cfg(not(loom))]
    base: NonNull<u8>,
    #[cfg(not(loom))]
    backing: Backing,
    #[cfg(loom)]
    header: Box<Header>,
    #[cfg(loom)]
    slots: Box<[ConsumerSlot]>,
    #[cfg(loom)]
    words: Box<[crate::sync::AtomicU64]>,
}

#[cfg(not(loom))]
#[derive(Debug)]
enum Backing {
    Heap {
        layout: std::alloc::Layout,
        locked: bool,
    },
    File {
        _map: os::Mapping,
        _file: std::fs::File,
        id: FileIdentity,
    },
}

// SAFETY: a `Segment` is plain memory plus owned handles. Everything that threads mutate
// through it is atomic (header words) or handed out under the ring's single-producer
// protocol; the raw base pointer is only a location.
unsafe impl Send for Segment {}
// SAFETY: see `Send`: shared references only reach atomics and immutable header fields.
unsafe impl Sync for Segment {}

impl Segment {
    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// The header.
    #[cfg(not(loom))]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: by the type invariant `base` points to an initialised, 128-byte aligned
        // header that lives as long as `self`; it is only mutated through atomics.
        unsafe { self.base.cast::<Header>().as_ref() }
    }

    /// The header.
    #[cfg(loom)]
    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// The consumer slots.
    #[cfg(not(loom))]
    pub(crate) fn slots(&self) -> &[ConsumerSlot] {
        // SAFETY: the fixed header lies inside the allocation (type invariant).
        let first = unsafe { self.base.as_ptr().add(HEADER_FIXED_SIZE) };
        // SAFETY: by the type invariant `max_consumers` initialised slots follow the fixed
        // header, inside the allocation, 128-byte aligned; mutated only through atomics.
        unsafe {
            std::slice::from_raw_parts(
                first.cast::<ConsumerSlot>(),
                self.geo.max_consumers as usize,
            )
        }
    }

    /// The consumer slots.
    #[cfg(loom)]
    pub(crate) fn slots(&self) -> &[ConsumerSlot] {
        &self.slots
    }

    /// Start of the data region (`capacity` bytes, 4096-byte aligned).
    #[cfg(not(loom))]
    pub(crate) fn data_ptr(&self) -> NonNull<u8> {
        // SAFETY: `header_size < segment_len`, inside the allocation, so the result is
        // in bounds and non-null.
        unsafe { self.base.add(self.geo.header_size) }
    }

    /// The data region as words (loom models every 8-byte word as an atomic).
    #[cfg(loom)]
    pub(crate) fn data_words(&self) -> &[crate::sync::AtomicU64] {
        &self.words
    }

    /// Identity of the backing file (`None` for in-process rings).
    pub(crate) fn file(&self) -> Option<&FileIdentity> {
        #[cfg(not(loom))]
        if let Backing::File { id, .. } = &self.backing {
            return Some(id);
        }
        None
    }

    /// Path for error messages.
    pub(crate) fn display_path(&self) -> PathBuf {
        self.file()
            .map_or_else(|| PathBuf::from(IN_PROCESS), |f| f.path.clone())
    }

    /// A heap segment with the same layout as a file.
    pub(crate) fn heap(cfg: &RingConfig, epoch: u64) -> Result<Arc<Segment>, SetupError> {
        let info = fresh_info(cfg, epoch);
        let geo = Geometry::from_config(cfg, epoch, info.producer_pid);
        Self::heap_with(geo, &info, cfg.mlock)
    }

    #[cfg(not(loom))]
    fn heap_with(
        geo: Geometry,
        info: &HeaderInfo,
        mlock: bool,
    ) -> Result<Arc<Segment>, SetupError> {
        let len = geo.segment_len();
        let layout = std::alloc::Layout::from_size_align(len, crate::layout::DATA_ALIGN)
            .map_err(|e| SetupError::BadConfig(format!("segment of {len} bytes: {e}")))?;
        // SAFETY: `layout` has a non-zero size (at least one header page plus the data).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(base) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        // SAFETY: `base` is a fresh, exclusively owned, page-aligned allocation of `len` bytes,
        // large enough for the header and `max_consumers` slots.
        unsafe { init_header(base, info, geo.max_consumers) };
        let mut seg = Segment {
            geo,
            base,
            backing: Backing::Heap {
                layout,
                locked: false,
            },
        };
        if mlock {
            os::mlock_range(base, len).map_err(|source| SetupError::MlockFailed {
                path: PathBuf::from(IN_PROCESS),
                len,
                source,
            })?;
            seg.backing = Backing::Heap {
                layout,
                locked: true,
            };
        }
        // Publish: the magic last, with Release (pairs with the Acquire in `validate_mapped`).
        seg.header().meta.magic.store(MAGIC, Ordering::Release);
        Ok(Arc::new(seg))
    }

    #[cfg(loom)]
    fn heap_with(
        geo: Geometry,
        info: &HeaderInfo,
        _mlock: bool,
    ) -> Result<Arc<Segment>, SetupError> {
        let now = os::monotonic_ns();
        let header = Box::new(Header::new(info, now));
        let slots = (0..geo.max_consumers)
            .map(|_| ConsumerSlot::new())
            .collect();
        let words = (0..geo.capacity / 8)
            .map(|_| crate::sync::AtomicU64::new(0))
            .collect();
        header
            .meta
            .magic
            .store(crate::layout::MAGIC, Ordering::Release);
        Ok(Arc::new(Segment {
            geo,
            header,
            slots,
            words,
        }))
    }
}

#[cfg(not(loom))]
impl Drop for Segment {
    fn drop(&mut self) {
        if let Backing::Heap { layout, locked } = &self.backing {
            if *locked && !cfg!(miri) {
                // SAFETY: unlocking our own allocation's pages.
                unsafe { libc::munlock(self.base.as_ptr().cast(), layout.size()) };
            }
            // SAFETY: `base` came from `alloc_zeroed(layout)` and nothing borrows it any more
            // (every borrower holds the `Arc<Segment>` that is being dropped).
            unsafe { std::alloc::dealloc(self.base.as_ptr(), *layout) };
        }
        // File backings unmap in `Mapping::drop` and release the flock when the file closes.
    }
}

/// The immutable header fields of a new segment made by this process.
fn fresh_info(cfg: &RingConfig, epoch: u64) -> HeaderInfo {
    let header_size = crate::layout::header_size_for(cfg.max_consumers);
    HeaderInfo {
        header_size: header_size as u32,
        capacity: cfg.capacity as u64,
        max_msg_len: cfg.max_msg_len,
        mode: cfg.mode,
        max_consumers: cfg.max_consumers,
        producer_pid: std::process::id(),
        epoch,
        created_unix_ns: unix_ns(),
        segment_len: (header_size + cfg.capacity) as u64,
    }
}

/// A fresh epoch: never zero, different on every producer start (clock, pid and the random keys
/// of std's hasher).
pub(crate) fn new_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_ns());
    h.write_u64(os::monotonic_ns());
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// Writes a complete header (magic still zero) and free slots.
///
/// # Safety
/// `base` must point to at least `header_size_for(max_consumers)` writable bytes, aligned to
/// 128, that no other thread or process accesses yet.
#[cfg(not(loom))]
unsafe fn init_header(base: NonNull<u8>, info: &HeaderInfo, max_consumers: u32) {
    // SAFETY: the caller guarantees exclusive, aligned, large-enough memory.
    unsafe {
        base.cast::<Header>()
            .write(Header::new(info, os::monotonic_ns()))
    };
    for i in 0..max_consumers as usize {
        // SAFETY: slot `i` lies inside the header area the caller provides (header_size_for
        // counts every slot).
        let slot = unsafe { base.add(HEADER_FIXED_SIZE + i * crate::layout::SLOT_SIZE) };
        // SAFETY: writable, exclusively ours (caller's contract), aligned to 128 because
        // HEADER_FIXED_SIZE and SLOT_SIZE are multiples of 128.
        unsafe { slot.cast::<ConsumerSlot>().write(ConsumerSlot::new()) };
    }
}

#[cfg(not(loom))]
pub(crate) use file::{
    create_file, epoch_at, lock_if_unowned, open_file, read_header_snapshot, segment_alive,
};

/// The file backing.
#[cfg(not(loom))]
mod file {
    use std::fs::File;
    use std::io;
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::path::Path;
    use std::sync::Arc;

    use super::root::{RootDir, TmpGuard};
    use super::{Backing, FileIdentity, Segment, fresh_info, init_header, os};
    use crate::config::{Geometry, RingConfig};
    use crate::error::SetupError;
    use crate::layout::{
        HEADER_FIXED_SIZE, HeaderDynamic, HeaderInfo, MAGIC, STATE_LIVE, STATE_SUPERSEDED,
    };
    use crate::sync::Ordering;

    /// How many times `create_file` retries when it races another creator or a transient
    /// lock holder (a listing probing the old file).
    const CREATE_ATTEMPTS: u32 = 200;

    fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> SetupError {
        let path = path.to_path_buf();
        move |source| SetupError::Io { path, op, source }
    }

    /// The header of a file, read with `pread` (no mapping), validated.
    #[derive(Debug)]
    pub(crate) struct HeaderSnapshot {
        pub(crate) info: HeaderInfo,
        pub(crate) dynamic: HeaderDynamic,
        pub(crate) file_len: u64,
    }

    impl HeaderSnapshot {
        /// How many bytes of the file to map: what the header declares, rounded up to the
        /// file's page size (hugetlbfs files are whole huge pages), never past the end of
        /// the file. Bytes beyond are not part of the segment and are never mapped: a file
        /// made longer than its header says (a sparse tail, say) is read as a valid segment
        /// of the declared size.
        pub(crate) fn map_len(&self, file: &File, path: &Path) -> Result<usize, SetupError> {
            let page = os::hugetlbfs_page_size(file)
                .map_err(io_err(path, "fstatfs"))?
                .unwrap_or(4096);
            let len = self
                .info
                .segment_len
                .checked_next_multiple_of(page)
                .unwrap_or(self.info.segment_len)
                .min(self.file_len);
            usize::try_from(len).map_err(|_| SetupError::BadHeader {
                path: path.to_path_buf(),
                field: "segment_len",
                offset: crate::layout::OFF_SEGMENT_LEN,
                value: self.info.segment_len,
            })
        }
    }

    /// Reads and validates the header of an open segment file.
    pub(crate) fn read_header_snapshot(
        file: &File,
        path: &Path,
    ) -> Result<HeaderSnapshot, SetupError> {
        let file_len = file.metadata().map_err(io_err(path, "stat"))?.len();
        let mut buf = [0u8; HEADER_FIXED_SIZE];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(path, "read")(e)),
            }
        }
        let info = HeaderInfo::parse(path, &buf[..got], file_len)?;
        Ok(HeaderSnapshot {
            info,
            dynamic: HeaderDynamic::parse(&buf),
            file_len,
        })
    }

    /// Whether a live producer holds the segment's lock (a probe with a shared lock).
    pub(crate) fn segment_alive(file: &File, path: &Path) -> Result<bool, SetupError> {
        let free = os::try_flock(file, false).map_err(io_err(path, "flock"))?;
        if free {
            os::unlock(file);
        }
        Ok(!free)
    }

    /// Takes the segment's lock if no producer holds it, and checks that `name` in `root`
    /// still names this file. `true`: nobody owns the segment and the lock is ours until
    /// `file` closes.
    pub(crate) fn lock_if_unowned(
        file: &File,
        root: &RootDir,
        name: &str,
    ) -> Result<bool, SetupError> {
        let path = root.join(name);
        if !os::try_flock(file, true).map_err(io_err(&path, "flock"))? {
            return Ok(false);
        }
        root.holds(name, file).map_err(io_err(&path, "stat"))
    }

    fn identity(file: &File, path: &Path) -> Result<FileIdentity, SetupError> {
        let m = file.metadata().map_err(io_err(path, "stat"))?;
        Ok(FileIdentity {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// Splits a segment path into its directory (`.` if none) and a UTF-8 file name that
    /// does not start with a dot (those are the temporary files' names).
    fn split(path: &Path) -> Result<(&Path, &str), SetupError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.starts_with('.'))
            .ok_or_else(|| {
                SetupError::BadConfig(format!(
                    "segment path {} must end in a UTF-8 file name not starting with '.'",
                    path.display()
                ))
            })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Ok((dir, name))
    }

    /// Opens the segment file at `path` (read-write if `write`) in its checked root, without
    /// following links. A missing file is an [`SetupError::Io`] of `NotFound`.
    fn open_checked(path: &Path, write: bool) -> Result<(RootDir, File), SetupError> {
        let (dir, name) = split(path)?;
        let root = RootDir::open(dir)?;
        match root.open_file(name, write)? {
            Some(f) => Ok((root, f)),
            None => Err(io_err(path, "open")(io::Error::from(
                io::ErrorKind::NotFound,
            ))),
        }
    }

    enum Existing {
        None,
        /// A valid segment whose producer is gone; we hold its lock.
        Replaceable(File, HeaderSnapshot),
        /// Someone holds the lock.
        Locked {
            pid: u32,
            transient: bool,
        },
        /// The path changed under us; look again.
        Changed,
    }

    fn existing(root: &RootDir, name: &str, path: &Path) -> Result<Existing, SetupError> {
        let Some(file) = root.open_file(name, true)? else {
            return Ok(Existing::None);
        };
        if !os::try_flock(&file, true).map_err(io_err(path, "flock"))? {
            let snap = read_header_snapshot(&file, path)?;
            let pid = snap.info.producer_pid;
            // A closed or dead producer's file locked by someone: a listing probing it, or a
            // creator about to replace it. Worth retrying.
            let transient = snap.dynamic.state != STATE_LIVE || !os::pid_alive(pid);
            return Ok(Existing::Locked { pid, transient });
        }
        if !root.holds(name, &file).map_err(io_err(path, "stat"))? {
            return Ok(Existing::Changed);
        }
        // Never clobber a file that is not a valid segment.
        let snap = read_header_snapshot(&file, path)?;
        Ok(Existing::Replaceable(file, snap))
    }

    /// Creates the segment file at `path` for a new producer (see `Producer::create`).
    /// Returns the segment and the producer's lock: a separate open file description holding
    /// `flock(LOCK_EX)`, never mapped, so that closing it (producer drop or death) releases
    /// the lock even while in-process consumers still map the segment.
    ///
    /// The directory is created (mode 0700) if missing and must pass [`RootDir::open`]'s
    /// checks; everything in it is reached relative to it, without following links.
    pub(crate) fn create_file(
        path: &Path,
        cfg: &RingConfig,
        epoch: u64,
    ) -> Result<(Arc<Segment>, File), SetupError> {
        let (dir, name) = split(path)?;
        let root = RootDir::create(dir)?;

        let mut last_pid = 0;
        for attempt in 0..CREATE_ATTEMPTS {
            let old = match existing(&root, name, path)? {
                Existing::None => None,
                Existing::Replaceable(f, snap) => Some((f, snap)),
                Existing::Changed => continue,
                Existing::Locked { pid, transient } => {
                    last_pid = pid;
                    if transient && attempt + 1 < CREATE_ATTEMPTS {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        continue;
                    }
                    return Err(SetupError::InUse {
                        path: path.to_path_buf(),
                        pid,
                    });
                }
            };
            let tmp = format!(
                ".{name}.tmp.{}.{:016x}",
                std::process::id(),
                super::new_epoch()
            );
            let guard = TmpGuard::new(&root, &tmp);
            let (mut seg, lock) = build(&root, &tmp, path, cfg, epoch)?;
            match root.rename(&tmp, name, old.is_some()) {
                Ok(()) => {}
                Err(e) if old.is_none() && e.kind() == io::ErrorKind::AlreadyExists => {
                    drop((seg, lock));
                    drop(guard);
                    // Another creator won the race, or something else appeared there (a
                    // link, say): look again.
                    continue;
                }
                Err(e) => return Err(io_err(path, "rename")(e)),
            }
            std::mem::forget(guard);
            if let Some((old_file, snap)) = old {
                supersede(&old_file, &snap, epoch);
            }
            if let Backing::File { id, .. } = &mut seg.backing {
                // rename keeps the inode: only the name changes.
                id.path = path.to_path_buf();
            }
            return Ok((Arc::new(seg), lock));
        }
        Err(SetupError::InUse {
            path: path.to_path_buf(),
            pid: last_pid,
        })
    }

    /// Creates, reserves, maps and initialises a segment file at the temporary name `tmp` in
    /// `root` (to become `path`), and takes its lock on a second, unmapped descriptor (held
    /// for the producer's lifetime).
    fn build(
        root: &RootDir,
        tmp: &str,
        path: &Path,
        cfg: &RingConfig,
        epoch: u64,
    ) -> Result<(Segment, File), SetupError> {
        let tmp_path = root.join(tmp);
        let file = root.create_file(tmp, cfg.file_mode)?;
        let lock = root
            .open_file(tmp, false)?
            .ok_or_else(|| io_err(&tmp_path, "open")(io::Error::from(io::ErrorKind::NotFound)))?;
        if !os::try_flock(&lock, true).map_err(io_err(&tmp_path, "flock"))? {
            return Err(io_err(&tmp_path, "flock")(io::Error::from(
                io::ErrorKind::WouldBlock,
            )));
        }
        let info = fresh_info(cfg, epoch);
        let geo = Geometry::from_config(cfg, epoch, info.producer_pid);
        let page = os::hugetlbfs_page_size(&file)
            .map_err(io_err(&tmp_path, "fstatfs"))?
            .unwrap_or(4096);
        let len = (info.segment_len).div_ceil(page) * page;
        // Reserve the space now: on a full filesystem a sparse file (`set_len`) would fail
        // later, with SIGBUS at a page fault in the producer's hot path.
        RootDir::reserve(&file, path, len)?;
        let map = os::Mapping::new(&file, len as usize, cfg.prefault)
            .map_err(io_err(&tmp_path, "mmap"))?;
        let base = map.ptr();
        // SAFETY: a fresh mapping of a file only we know about, page aligned, `len` bytes.
        unsafe { init_header(base, &info, geo.max_consumers) };
        if cfg.prefault {
            prefault_write(&map, geo.header_size);
        }
        if cfg.mlock {
            map.mlock().map_err(|source| SetupError::MlockFailed {
                path: tmp_path.clone(),
                len: map.len(),
                source,
            })?;
        }
        let id = identity(&file, &tmp_path)?;
        let seg = Segment {
            geo,
            base,
            backing: Backing::File {
                _map: map,
                _file: file,
                id,
            },
        };
        // Publish: the magic last, with Release (pairs with the Acquire in `validate_mapped`).
        seg.header().meta.magic.store(MAGIC, Ordering::Release);
        Ok((seg, lock))
    }

    /// Writes one zero byte per page of the (still zero, unpublished) data region, so its
    /// pages are allocated now rather than on the first lap.
    fn prefault_write(map: &os::Mapping, from: usize) {
        let mut off = from;
        while off < map.len() {
            // SAFETY: `off < len`: inside our mapping.
            let p = unsafe { map.ptr().as_ptr().add(off) };
            // SAFETY: the data region of an unpublished segment is accessed by nobody else,
            // and it is already zero.
            unsafe { p.write_volatile(0) };
            off += 4096;
        }
    }

    /// Marks a replaced segment so that its consumers learn the new epoch without a system
    /// call, and wakes its blocked consumers.
    fn supersede(old: &File, snap: &HeaderSnapshot, epoch: u64) {
        let Ok(len) = snap.map_len(old, Path::new("")) else {
            return;
        };
        let Ok(map) = os::Mapping::new(old, len, false) else {
            return;
        };
        // SAFETY: the file was validated (magic, version, sizes) and the mapping covers the
        // declared segment, so a complete header lies at its start; header words are atomics.
        let header = unsafe { map.ptr().cast::<crate::layout::Header>().as_ref() };
        header
            .control
            .successor_epoch
            .store(epoch, Ordering::Relaxed);
        // Pairs with the Acquire load of `state` in the consumer's idle check.
        header
            .control
            .state
            .store(STATE_SUPERSEDED, Ordering::Release);
        header.notify.futex_word.fetch_add(1, Ordering::Release);
        os::futex_wake_all(&header.notify.futex_word);
    }

    /// Opens and maps an existing segment for a consumer: its directory and the file must
    /// pass [`RootDir`]'s checks; only the length the header declares is mapped.
    pub(crate) fn open_file(path: &Path) -> Result<Arc<Segment>, SetupError> {
        let (_root, file) = open_checked(path, true)?;
        let snap = read_header_snapshot(&file, path)?;
        let len = snap.map_len(&file, path)?;
        let info = snap.info;
        let map = os::Mapping::new(&file, len, true).map_err(io_err(path, "mmap"))?;
        let id = identity(&file, path)?;
        let geo = Geometry::new(
            info.capacity,
            info.max_msg_len,
            info.mode,
            info.max_consumers,
            info.epoch,
            info.producer_pid,
        );
        let base = map.ptr();
        let seg = Segment {
            geo,
            base,
            backing: Backing::File {
                _map: map,
                _file: file,
                id,
            },
        };
        validate_mapped(&seg, path)?;
        Ok(Arc::new(seg))
    }

    /// Reads the epoch of the segment at `path` (for `reopen`), with the same checks as
    /// [`open_file`].
    pub(crate) fn epoch_at(path: &Path) -> Result<u64, SetupError> {
        let (_root, file) = open_checked(path, false)?;
        Ok(read_header_snapshot(&file, path)?.info.epoch)
    }

    /// Re-checks through the mapping what `pread` validated (the file could have been
    /// replaced in place between the two). The Acquire load of the magic pairs with the Release
    /// store that published the segment.
    fn validate_mapped(seg: &Segment, path: &Path) -> Result<(), SetupError> {
        let h = seg.header();
        let magic = h.meta.magic.load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(SetupError::BadMagic {
                path: path.to_path_buf(),
                found: magic,
                expected: MAGIC,
            });
        }
        let g = seg.geometry();
        if h.meta.capacity != g.capacity
            || h.meta.max_consumers != g.max_consumers
            || h.meta.max_msg_len != g.max_msg_len
            || h.meta.epoch != g.epoch
        {
            return Err(SetupError::BadHeader {
                path: path.to_path_buf(),
                field: "epoch",
                offset: crate::layout::OFF_EPOCH,
                value: h.meta.epoch,
            });
        }
        Ok(())
    }
}

/// Whether `path` currently names the file mapped by `seg` (`None` if the path is gone).
pub(crate) fn same_file(id: &FileIdentity) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(&id.path)
        .ok()
        .map(|m| m.dev() == id.dev && m.ino() == id.ino)
}
