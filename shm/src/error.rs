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
    /// The producer lapped this consumer (broadcast rings, unregistered readers of lossless
    /// rings, and registered ones whose slot was taken from them). `lost` is the exact number of records skipped, `first_lost_seq` the seq of the
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
    /// A shared word breaks the ring's invariants although the producer did not overwrite it:
    /// something other than the producer wrote into the segment. `word` names it, `value` is
    /// what was read and `bound` the limit it broke (see [`RingWord`]). After a bad record
    /// the consumer has resynchronised to the newest record if it could find one; after a bad
    /// header word it stays where it was (nothing is skipped), and the next poll looks again.
    #[error(
        "corrupt ring at position {position}: {word} is {value}, {} {bound}",
        relation(*.word, *.value, *.bound)
    )]
    Corrupt {
        /// Ring position (byte counter) of the bad record, or the consumer's position when a
        /// header word is bad.
        position: u64,
        /// The word that is bad.
        word: RingWord,
        /// The value read.
        value: u64,
        /// The bound it broke.
        bound: u64,
    },
}

/// The shared word a [`PollError::Corrupt`] names, with the invariant it broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RingWord {
    /// `tail`: at most the `tail_intent` read after it (the producer writes only below its
    /// announced intent), or, for a consumer holding its lossless slot, at most its position
    /// plus the capacity.
    Tail,
    /// `latest`: below the `tail` read after it.
    Latest,
    /// `tail_intent`: at most the `tail` read after it plus the capacity.
    TailIntent,
    /// `head`: at most the `tail` read after it, and at least the `tail_intent` read before
    /// it minus the capacity (`bound` is the one it broke).
    Head,
    /// `state`: one of 1 (live), 2 (closed), 3 (superseded).
    State,
    /// A record's length word: at most the segment's `max_msg_len`, and the record must end
    /// before the end of the region and at or below `tail` (`bound`: the largest valid length).
    RecordLen,
    /// A record's marker: the sequence number the consumer expects (`value`: the sequence
    /// number found, `u64::MAX` for none).
    RecordMarker,
    /// A padding record's length: exactly the bytes left to the end of the region (never a
    /// whole region), ending below `tail`; `bound` is the value it should have had or, when
    /// it reaches `tail`, the largest that stays below.
    Padding,
}

impl RingWord {
    /// The word's name in the segment layout.
    pub fn name(self) -> &'static str {
        match self {
            RingWord::Tail => "tail",
            RingWord::Latest => "latest",
            RingWord::TailIntent => "tail_intent",
            RingWord::Head => "head",
            RingWord::State => "state",
            RingWord::RecordLen => "record length",
            RingWord::RecordMarker => "record marker",
            RingWord::Padding => "padding length",
        }
    }
}

/// How a [`PollError::Corrupt`]'s value relates to its bound, for the message.
fn relation(word: RingWord, value: u64, bound: u64) -> &'static str {
    match word {
        RingWord::State => "the largest state is",
        RingWord::RecordMarker => "expected",
        _ if value > bound => "above its bound",
        _ => "below its bound",
    }
}

impl std::fmt::Display for RingWord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
