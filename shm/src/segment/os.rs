//! Thin, safe wrappers over the system calls the crate needs: clocks, process liveness, futex,
//! file locks, `mmap`/`mlock`, `renameat2`. Every `unsafe` of the crate outside the ring
//! protocol lives in this module or its parent.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
#[cfg(not(loom))]
use std::ptr::NonNull;
use std::time::Duration;

use crate::sync::AtomicU32;

/// `CLOCK_MONOTONIC` in nanoseconds. The clock is system-wide, so stamps compare across
/// processes. Served by the vDSO: no system call.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

pub(crate) use crate::host::pid_alive;

/// The real user id of this process.
pub(crate) fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Sleeps while `*word == expected`, at most `timeout` (spurious wakes are fine: callers
/// re-check their condition). Uses a shared (not private) futex so it works across processes.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    #[cfg(any(miri, loom))]
    {
        let _ = (word, expected, timeout);
        crate::sync::yield_now();
    }
    #[cfg(not(any(miri, loom)))]
    {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `word` is a live, 4-byte aligned u32 for the duration of the call; the
        // timeout pointer is valid; FUTEX_WAIT only reads the word.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                &ts as *const libc::timespec,
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }
}

/// Wakes every thread sleeping in [`futex_wait`] on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    #[cfg(any(miri, loom))]
    {
        let _ = word;
    }
    #[cfg(not(any(miri, loom)))]
    {
        // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not access memory.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
        }
    }
}

/// Tries to take a `flock` without blocking. `Ok(false)` when someone else holds a conflicting
/// lock. The lock belongs to the open file description and is released by the kernel when the
/// last descriptor closes, including when the process dies.
pub(crate) fn try_flock(file: &File, exclusive: bool) -> io::Result<bool> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    loop {
        // SAFETY: the descriptor is open for the lifetime of `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

/// Releases a lock taken with [`try_flock`].
pub(crate) fn unlock(file: &File) {
    // SAFETY: the descriptor is open for the lifetime of `file`.
    unsafe {
        libc::flock(file.as_raw_fd(), libc::LOCK_UN);
    }
}

/// The effective user id of this process: the owner of the files it creates.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A single path component as a C string: no `/`, no NUL, not empty, not `.` or `..`.
fn component(name: &str) -> io::Result<std::ffi::CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens the entry `name` of the directory `dir` with `openat`, never following a symbolic
/// link (a link gives `ELOOP`). `flags` are added to `O_NOFOLLOW | O_CLOEXEC`; `mode` applies
/// with `O_CREAT`.
pub(crate) fn open_at(dir: &File, name: &str, flags: libc::c_int, mode: u32) -> io::Result<File> {
    use std::os::fd::FromRawFd;
    let cname = component(name)?;
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let fd = loop {
        // SAFETY: `dir` is an open descriptor and `cname` a NUL-terminated string, both alive
        // for the call.
        let rc =
            unsafe { libc::openat(dir.as_raw_fd(), cname.as_ptr(), flags, mode as libc::c_uint) };
        match cvt(rc) {
            Ok(fd) => break fd,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// What `fstatat(AT_SYMLINK_NOFOLLOW)` says of an entry of a directory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryStat {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    /// `st_mode`: file type and permission bits.
    pub(crate) mode: u32,
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: the entry itself, a link not followed.
pub(crate) fn stat_at(dir: &File, name: &str) -> io::Result<EntryStat> {
    let cname = component(name)?;
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `dir` is open, `cname` NUL-terminated, `st` a valid out-pointer.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            cname.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    #[allow(clippy::unnecessary_cast)]
    Ok(EntryStat {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        mode: st.st_mode as u32,
    })
}

/// `unlinkat(dir, name)`: removes the entry itself (a link, not its target).
pub(crate) fn unlink_at(dir: &File, name: &str) -> io::Result<()> {
    let cname = component(name)?;
    // SAFETY: `dir` is open and `cname` NUL-terminated.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), cname.as_ptr(), 0) }).map(drop)
}

/// `renameat2` within `dir`. With `noreplace`, fails with `EEXIST` if `to` exists;
/// filesystems without `RENAME_NOREPLACE` (`EINVAL`/`ENOSYS`) fall back to `linkat` +
/// `unlinkat`, which is atomic in the same way. Renaming never follows a link at `to`: it
/// replaces the link itself.
pub(crate) fn rename_at(dir: &File, from: &str, to: &str, noreplace: bool) -> io::Result<()> {
    let cfrom = component(from)?;
    let cto = component(to)?;
    let flags = if noreplace { libc::RENAME_NOREPLACE } else { 0 };
    // SAFETY: `dir` is open and both names are NUL-terminated strings alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            dir.as_raw_fd(),
            cfrom.as_ptr(),
            dir.as_raw_fd(),
            cto.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) if noreplace => {
            // SAFETY: as above; flags 0 never follows a link at `from`.
            cvt(unsafe {
                libc::linkat(
                    dir.as_raw_fd(),
                    cfrom.as_ptr(),
                    dir.as_raw_fd(),
                    cto.as_ptr(),
                    0,
                )
            })?;
            unlink_at(dir, from)
        }
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            // SAFETY: as above.
            cvt(unsafe {
                libc::renameat(
                    dir.as_raw_fd(),
                    cfrom.as_ptr(),
                    dir.as_raw_fd(),
                    cto.as_ptr(),
                )
            })
            .map(drop)
        }
        _ => Err(err),
    }
}

/// Reserves `len` bytes of storage for `file` from offset 0 (`posix_fallocate`), extending it
/// to `len` if shorter: a filesystem without the room fails here (`ENOSPC`) instead of at a
/// page fault of the mapping later (`SIGBUS`).
pub(crate) fn reserve(file: &File, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: the descriptor is open for the lifetime of `file`; no memory is passed.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// The huge page size if `file` lives on hugetlbfs (its mappings and length must be multiples
/// of it), else `None`.
pub(crate) fn hugetlbfs_page_size(file: &File) -> io::Result<Option<u64>> {
    const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open and `st` is a valid out-pointer.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    Ok((magic == HUGETLBFS_MAGIC).then_some(st.f_bsize as u64))
}

/// A shared, read-write mapping of a whole file. Unmapped on drop.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

#[cfg(not(loom))]
impl Mapping {
    /// Maps `len` bytes of `file` from offset 0, shared, read-write. `populate` pre-faults the
    /// page tables (`MAP_POPULATE`).
    pub(crate) fn new(file: &File, len: usize, populate: bool) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a fresh mapping at an address the kernel chooses; it aliases no Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(Mapping { ptr, len })
    }

    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Locks the whole mapping in RAM.
    pub(crate) fn mlock(&self) -> io::Result<()> {
        // SAFETY: the range is exactly our live mapping.
        let rc = unsafe { libc::mlock(self.ptr.as_ptr().cast(), self.len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(not(loom))]
impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own this mapping and nothing borrows it any more (the owners of the
        // `Segment` holding it are gone).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Locks `len` bytes at `ptr` (heap rings).
#[cfg(not(loom))]
pub(crate) fn mlock_range(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
    if cfg!(miri) {
        return Ok(());
    }
    // SAFETY: mlock only changes residency of pages covering a range the caller owns.
    let rc = unsafe { libc::mlock(ptr.as_ptr().cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
