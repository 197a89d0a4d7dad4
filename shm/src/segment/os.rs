//! Thin, safe wrappers over the system calls the crate needs: clocks, process liveness, futex,
//! file locks, `mmap`/`mlock`, `renameat2`. Every `unsafe` of the crate outside the ring
//! protocol lives in this module or its parent.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
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

/// Whether a process with this pid exists (`kill(pid, 0)` is not `ESRCH`). A process owned by
/// another user (`EPERM`) counts as alive. A zombie counts as alive until its parent reaps it.
pub(crate) fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    if cfg!(any(miri, loom)) {
        return true;
    }
    // SAFETY: signal 0 only checks for existence and permission; it delivers nothing.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

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

/// `renameat2(RENAME_NOREPLACE)`: fails with `EEXIST` if `to` exists. Filesystems without
/// support (`EINVAL`/`ENOSYS`) fall back to `link` + `unlink`, which is atomic in the same way.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cfrom = CString::new(from.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let cto = CString::new(to.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            cfrom.as_ptr(),
            libc::AT_FDCWD,
            cto.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        _ => Err(err),
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
