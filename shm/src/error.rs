//! Error values. Hot-path errors are small `Copy` enums; setup errors carry the path and the
//! cause.

use std::io;
use std::path::PathBuf;

/// Why a claim failed. Neither case has written anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Lossless ring: the slowest registered consumer is a full ring behind. Retry later
    /// (the producer never blocks).
    #[error("ring is full: the slowest consumer is a full ring behind")]
    BackPressured,
    /// The payload is larger than the segment's `max_msg_len`.
    #[error("payload of {len} bytes exceeds the ring's maximum of {max}")]
    TooLarge {
        /// Requested payload length.
        len: usize,
        /// The segment's `max_msg_len`.
        max: u32,
    },
}

/// What a poll reports besides records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// The producer lapped this consumer (broadcast rings, and unregistered readers of lossless
    /// rings). `lost` is the exact number of records skipped, `first_lost_seq` the seq of the
    /// first of them. If the last callback ran during this poll, the record it saw is among the
    /// lost ones and must be discarded. The consumer has already resynchronised per its
    /// [`Resync`](crate::Resync) choice; the next poll continues.
    #[error("overrun: {lost} records lost from seq {first_lost_seq}")]
    Overrun {
        /// Sequence number of the first lost record.
        first_lost_seq: u64,
        /// Number of records lost.
        lost: u64,
    },
    /// The producer restarted (segment replaced, new epoch) and every record of the old epoch
    /// has been read: call [`Consumer::reopen`](crate::Consumer::reopen).
    #[error("the producer restarted: epoch {old:#x} replaced by {new:#x}")]
    NewEpoch {
        /// Epoch of the segment this consumer reads.
        old: u64,
        /// Epoch of the segment that replaced it.
        new: u64,
    },
    /// The producer closed the stream cleanly and everything was read.
    #[error("the stream is closed and fully read")]
    Closed,
    /// The bytes at `position` are not a valid record although the producer did not overwrite
    /// them: something other than the producer wrote into the segment. The consumer has
    /// resynchronised to the newest record if it could find one.
    #[error("corrupt record at position {position}")]
    Corrupt {
        /// Ring position (byte counter) of the bad record.
        position: u64,
    },
}

/// Setup errors: creating, opening, validating, mapping segments.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A system call on the segment (or its directory) failed.
    #[error("{path}: {op} failed: {source}", path = .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`open`, `mmap`, `rename`, ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with the segment magic: not an mdbus segment.
    #[error("{path}: not an mdbus segment (magic {found:#018x}, expected {expected:#018x})", path = .path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first 8 bytes, as a little-endian u64.
        found: u64,
        /// [`MAGIC`](crate::layout::MAGIC).
        expected: u64,
    },
    /// The segment was written with another layout version.
    #[error("{path}: segment layout version {found}, this build reads version {expected}", path = .path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// [`LAYOUT_VERSION`](crate::layout::LAYOUT_VERSION).
        expected: u32,
    },
    /// The file is shorter than its header says (or than a header).
    #[error("{path}: file is {len} bytes, the segment needs {expected}", path = .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Actual length.
        len: u64,
        /// Required length.
        expected: u64,
    },
    /// A header field has an impossible value.
    #[error("{path}: header field `{field}` at offset {offset} has invalid value {value}", path = .path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// Field name.
        field: &'static str,
        /// Byte offset of the field in the file.
        offset: usize,
        /// The value found.
        value: u64,
    },
    /// The [`RingConfig`](crate::RingConfig) is invalid; the message names the field.
    #[error("invalid ring configuration: {0}")]
    BadConfig(String),
    /// A live producer owns the segment at this path.
    #[error("{path}: a live producer (pid {pid}) owns this segment", path = .path.display())]
    InUse {
        /// The segment path.
        path: PathBuf,
        /// Pid recorded in its header.
        pid: u32,
    },
    /// `mlock` was requested but refused.
    #[error("{path}: mlock of {len} bytes failed: {source} (raise RLIMIT_MEMLOCK or grant CAP_IPC_LOCK)", path = .path.display())]
    MlockFailed {
        /// The segment path (`<in-process>` for heap rings).
        path: PathBuf,
        /// Bytes that were to be locked.
        len: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Every consumer slot of the lossless ring is held by a live consumer.
    #[error("{path}: all {max} consumer slots are in use", path = .path.display())]
    NoConsumerSlot {
        /// The segment path (`<in-process>` for heap rings).
        path: PathBuf,
        /// Number of slots.
        max: u32,
    },
    /// A bus root (a directory) or a file in it belongs to another user or can be written by
    /// group or others: whoever can write it could plant or alter what subscribers read.
    #[error("{path}: refusing this {what}: owned by uid {owner}, mode {mode:04o}; {fix}",
        path = .path.display(), fix = untrusted_fix(.what, *.owner, *.uid))]
    Untrusted {
        /// The directory or file.
        path: PathBuf,
        /// `directory` (a bus root) or `file` (a segment or counter file).
        what: &'static str,
        /// Its owner's uid.
        owner: u32,
        /// Its permission bits.
        mode: u32,
        /// The effective uid of this process, the only owner accepted.
        uid: u32,
    },
    /// A symbolic link where a segment (or counter file) should be: links in a bus root are
    /// never followed.
    #[error("{path} is a symbolic link, not a segment; remove it", path = .path.display())]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// Something other than a regular file where a segment should be.
    #[error("{path} is a {kind}, not a segment file; remove it", path = .path.display())]
    NotAFile {
        /// The entry.
        path: PathBuf,
        /// What it is (`directory`, `FIFO`, ...).
        kind: &'static str,
    },
    /// The filesystem could not reserve the file's space when it was created (full, or too
    /// small). Nothing was left at the path.
    #[error("{path}: cannot reserve the {needed} bytes it needs: {source} (free space on that filesystem, enlarge it, or use a smaller ring capacity)", path = .path.display())]
    NoSpace {
        /// The file that was being created (a segment, or a counter file).
        path: PathBuf,
        /// Bytes it needs.
        needed: u64,
        /// The OS error (`ENOSPC`...).
        #[source]
        source: io::Error,
    },
}

/// How to fix what [`SetupError::Untrusted`] found.
fn untrusted_fix(what: &str, owner: u32, uid: u32) -> String {
    if owner != uid {
        format!(
            "only those of uid {uid} (this process) are used: remove it (as uid {owner} or \
             root) and let mdbus create it again"
        )
    } else {
        let private = if what == "directory" { "700" } else { "600" };
        format!("group or others can write to it: chmod {private} it (or remove it)")
    }
}
