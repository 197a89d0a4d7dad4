//! What every part of the bus reads of the host in one way: the wall clock, whether a process
//! lives, and what a stream may be called.

use std::io;

/// Nanoseconds since the Unix epoch (a vDSO read, no system call); 0 before 1970 or under
/// miri, whose isolation hides the wall clock.
#[inline]
pub fn unix_ns() -> u64 {
    if cfg!(miri) {
        return 0;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Whether a process with this pid exists (`kill(pid, 0)` is not `ESRCH`). A process owned by
/// another user (`EPERM`) counts as alive; so does a zombie until its parent reaps it. A
/// system call: not for a per-message path.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    if cfg!(any(miri, loom)) {
        return true;
    }
    // SAFETY: signal 0 only checks for existence and permission; it delivers nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The longest stream name.
pub const MAX_STREAM_NAME: usize = 64;

/// Checks a stream name: 1 to [`MAX_STREAM_NAME`] characters of `[A-Za-z0-9._-]`, not
/// starting with `.` (so it is one file name under a bus root, never `.`, `..` or hidden).
/// The error says what a valid name is.
pub fn check_stream_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() <= MAX_STREAM_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("use 1 to 64 characters of [A-Za-z0-9._-], not starting with '.'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        for good in ["itch", "nasdaq.itch.book", "a-b_c.9", &"x".repeat(64)] {
            assert_eq!(check_stream_name(good), Ok(()), "{good:?}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(check_stream_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn this_process_lives_and_pid_0_does_not() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
    }
}
