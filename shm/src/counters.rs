//! Live counters of a long-running role in a small memory-mapped file, readable by another
//! process (`mdbus stat`) while the role runs.
//!
//! A role (the network sender or receiver of a stream) keeps its counters in a plain struct
//! and, every millisecond or so and at exit, copies them into its [`CounterFile`]
//! (`<root>/<stream>.<role>.stat`) with [`CounterFile::publish`]: a handful of relaxed
//! atomic stores and a clock read, no allocation, no system call. Readers map the file
//! read-only ([`read_counters`], [`list_counters`]); they see the values, when they were last
//! published and how many times (to compute rates), and whether the writer is still there.
//!
//! ```
//! use mdbus_shm::counters::{CounterFile, read_counters};
//!
//! # let dir = tempfile::tempdir()?;
//! let file = CounterFile::create(dir.path(), "aapl.trades", "send", "group 239.1.1.1:5000",
//!     &["packets", "bytes"])?;
//! file.publish(&[10, 12_000]);
//! let snap = read_counters(file.path())?;
//! assert_eq!(snap.get("bytes"), Some(12_000));
//! assert!(snap.alive);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # File layout
//!
//! One `#[repr(C)]` block of [`LAYOUT_LEN`] bytes, in the host's byte order (the file never
//! leaves the host), 128-byte lines:
//!
//! ```text
//!  offset
//!     0 +---------------------------------------------------------------------------+
//!       | magic u64 "MDBSTAT\0" | version u32 | layout_len u32 | pid u32 | count u32 |
//!    24 | started_unix_ns u64   | role_len u32 | stream_len u32                       |
//!    40 | role [u8; 16]         | stream [u8; 64]                | pad [u8; 8]        |
//!   128 +--- liveness: written by publish / finish ------------------------------------+
//!       | state u64 (1 running, 2 finished) | seq u64 | updated_unix_ns u64 | pad    |
//!   256 +--- detail: written by set_detail ---------------------------------------------+
//!       | detail_seq u64 | detail_len u64 | detail [u64; 32] (256 bytes)  | pad         |
//!   640 +--- counter names: written once -----------------------------------------------+
//!       | names [[u8; 32]; 64]  (NUL-padded ASCII, `count` used)                       |
//!  2688 +--- values: written by publish ------------------------------------------------+
//!       | values [u64; 64]      (`count` used)                                         |
//!  3200 +---------------------------------------------------------------------------+
//! ```
//!
//! The identity fields and names are written before the file gets its name (it is built at
//! a temporary name and renamed), the magic last. `seq` and `detail_seq` are sequence locks:
//! odd while the writer is storing, even once done; a reader whose two reads of `seq` agree
//! and are even saw one publish whole. A reader retries (spinning, then yielding) for up to
//! a second while the writer lives, then takes what it read: every value is one atomic
//! `u64`, so at worst values of two adjacent publishes mix (for instance when the writer died
//! mid-publish). `seq / 2` counts publishes.
//!
//! Readers map the file read-only; it must not be truncated while mapped (the writer never
//! does; the file is the writer's user's, mode 0600).

use std::fs::File;
use std::io;
use std::mem::offset_of;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use crate::segment::root::TmpGuard;
use crate::{RootDir, SetupError, pid_alive, unix_ns};

/// File-name suffix of a counter file under the bus root.
pub const COUNTERS_SUFFIX: &str = ".stat";
/// Most counters a file holds.
pub const MAX_COUNTERS: usize = 64;
/// Longest counter name, in ASCII bytes.
pub const MAX_COUNTER_NAME: usize = 31;
/// Longest role name (`[A-Za-z0-9_-]`).
pub const MAX_ROLE: usize = 16;
/// Longest stream name (`[A-Za-z0-9._-]`, not starting with a dot).
pub const MAX_STREAM: usize = crate::MAX_STREAM_NAME;
/// Longest detail string, in bytes of UTF-8.
pub const MAX_DETAIL: usize = 256;
/// First 8 bytes of a counter file (in the host's byte order).
pub const MAGIC: u64 = u64::from_le_bytes(*b"MDBSTAT\0");
/// Layout version this code writes and reads.
pub const VERSION: u32 = 1;
/// Length of a counter file.
pub const LAYOUT_LEN: usize = 3200;

const STATE_RUNNING: u64 = 1;
const STATE_FINISHED: u64 = 2;
/// How long a reader waits for a live writer to finish a publish before it takes the values
/// as they are.
const READ_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// The whole file; see the [module docs](self) for the diagram.
#[repr(C, align(128))]
struct Layout {
    magic: AtomicU64,
    version: u32,
    layout_len: u32,
    pid: u32,
    count: u32,
    started_unix_ns: u64,
    role_len: u32,
    stream_len: u32,
    role: [u8; MAX_ROLE],
    stream: [u8; MAX_STREAM],
    _pad0: [u8; 8],
    state: AtomicU64,
    seq: AtomicU64,
    updated_unix_ns: AtomicU64,
    _pad1: [u8; 104],
    detail_seq: AtomicU64,
    detail_len: AtomicU64,
    detail: [AtomicU64; MAX_DETAIL / 8],
    _pad2: [u8; 112],
    names: [[u8; MAX_COUNTER_NAME + 1]; MAX_COUNTERS],
    values: [AtomicU64; MAX_COUNTERS],
}

const _: () = {
    assert!(size_of::<Layout>() == LAYOUT_LEN);
    assert!(align_of::<Layout>() == 128);
    assert!(offset_of!(Layout, version) == 8);
    assert!(offset_of!(Layout, pid) == 16);
    assert!(offset_of!(Layout, started_unix_ns) == 24);
    assert!(offset_of!(Layout, role) == 40);
    assert!(offset_of!(Layout, stream) == 56);
    assert!(offset_of!(Layout, state) == 128);
    assert!(offset_of!(Layout, seq) == 136);
    assert!(offset_of!(Layout, updated_unix_ns) == 144);
    assert!(offset_of!(Layout, detail_seq) == 256);
    assert!(offset_of!(Layout, detail) == 272);
    assert!(offset_of!(Layout, names) == 640);
    assert!(offset_of!(Layout, values) == 2688);
    assert!(offset_of!(Layout, values) % 128 == 0);
};

/// A counter file error; names the file (or the rejected name).
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    /// A system call on the file or directory failed.
    #[error("counter file {path}: {op}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`open`, `mmap`, `rename`, ...).
        op: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// A stream, role or counter name, or a detail string, that cannot go in a counter file.
    #[error("counter file: invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// `stream`, `role`, `counter name` or `detail`.
        what: &'static str,
        /// The rejected value.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// More names than [`MAX_COUNTERS`].
    #[error("counter file: {count} counters given, at most {MAX_COUNTERS} fit")]
    TooManyCounters {
        /// How many names were given.
        count: usize,
    },
    /// Another live process writes this file.
    #[error("counter file {path}: already written by live process {pid}")]
    InUse {
        /// The file.
        path: PathBuf,
        /// The writer's pid.
        pid: u32,
    },
    /// The file does not start with [`MAGIC`].
    #[error("{path} is not a counter file (magic {found:#018x}, expected {MAGIC:#018x})")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Its first 8 bytes (0 if shorter).
        found: u64,
    },
    /// The file has a layout version this code does not read.
    #[error("counter file {path}: layout version {found}, this build reads {VERSION}")]
    BadVersion {
        /// The file.
        path: PathBuf,
        /// The version it has.
        found: u32,
    },
    /// The file is shorter or longer than [`LAYOUT_LEN`].
    #[error("counter file {path}: {len} bytes long, expected {LAYOUT_LEN} (truncated or damaged)")]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// A header field is out of range.
    #[error("counter file {path}: damaged header: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Which field, and what it holds.
        what: String,
    },
    /// The root or the file may not be used (another user's, writable by others, a
    /// symbolic link, not a regular file), or the file's space could not be reserved (a full
    /// filesystem). The message names the path and what was found.
    #[error("counter file: {0}")]
    Setup(#[source] SetupError),
}

/// A setup error of the root or a file in it: system call failures keep their
/// [`CounterError::Io`] shape, the rest are [`CounterError::Setup`].
fn setup_err(e: SetupError) -> CounterError {
    match e {
        SetupError::Io { path, op, source } => CounterError::Io { path, op, source },
        other => CounterError::Setup(other),
    }
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> CounterError {
    let path = path.to_path_buf();
    move |source| CounterError::Io { path, op, source }
}

/// A shared mapping of a whole counter file. Invariant: `ptr` is the page-aligned start of a
/// live mapping of [`LAYOUT_LEN`] bytes holding a [`Layout`] (all bit patterns are valid for
/// it), writable only if made by [`Mapping::new`] with `writable`; it lives until drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<Layout>,
}

impl Mapping {
    /// Maps the first [`LAYOUT_LEN`] bytes of `file`, which must be at least that long.
    fn new(file: &File, writable: bool) -> io::Result<Mapping> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping chosen by the kernel (no address hint), of an open
        // descriptor; it aliases no Rust object.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LAYOUT_LEN,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<Layout>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr })
    }

    fn layout(&self) -> &Layout {
        // SAFETY: by the type invariant `ptr` points to `LAYOUT_LEN` mapped bytes, page
        // (so 128-byte) aligned, valid as a `Layout` for any content, alive as long as
        // `self`. Other processes change the memory only through the atomic fields; the
        // plain fields are written before the file is published under its name (or, in
        // `CounterFile::create`, through this same exclusive mapping before sharing it).
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this value owns; no reference into it
        // outlives `self` (`layout` borrows `self`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), LAYOUT_LEN) };
    }
}

fn check_stream(stream: &str) -> Result<(), CounterError> {
    crate::check_stream_name(stream).map_err(|reason| CounterError::InvalidName {
        what: "stream",
        name: stream.into(),
        reason,
    })
}

fn check_role(role: &str) -> Result<(), CounterError> {
    let ok = !role.is_empty()
        && role.len() <= MAX_ROLE
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        return Ok(());
    }
    Err(CounterError::InvalidName {
        what: "role",
        name: role.into(),
        reason: "use 1 to 16 characters of [A-Za-z0-9_-]",
    })
}

fn check_names(names: &[&str]) -> Result<(), CounterError> {
    if names.len() > MAX_COUNTERS {
        return Err(CounterError::TooManyCounters { count: names.len() });
    }
    for (i, name) in names.iter().enumerate() {
        let bad = |reason| CounterError::InvalidName {
            what: "counter name",
            name: (*name).into(),
            reason,
        };
        if name.is_empty() || name.len() > MAX_COUNTER_NAME {
            return Err(bad("use 1 to 31 bytes"));
        }
        if !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("use printable ASCII without spaces"));
        }
        if names[..i].contains(name) {
            return Err(bad("given twice"));
        }
    }
    Ok(())
}

/// The longest prefix of `s` that fits in [`MAX_DETAIL`] bytes, cut at a character boundary.
fn clip_detail(s: &str) -> &str {
    if s.len() <= MAX_DETAIL {
        return s;
    }
    let mut end = MAX_DETAIL;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The writer side of a counter file. `Send`, not `Sync`: one thread publishes.
///
/// Dropping it marks the file finished (the file stays until [`remove_finished`] or someone
/// else removes it).
pub struct CounterFile {
    path: PathBuf,
    map: Mapping,
    count: usize,
}

// SAFETY: the mapping is owned memory reached only through atomics after creation; moving the
// owner to another thread changes nothing for the other processes sharing it.
unsafe impl Send for CounterFile {}

impl std::fmt::Debug for CounterFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterFile")
            .field("path", &self.path)
            .field("counters", &self.count)
            .finish_non_exhaustive()
    }
}

impl CounterFile {
    /// Creates `<root>/<stream>.<role>.stat` (mode 0600; `root` is created, mode 0700, if
    /// missing), with the header (this process's pid, the start time, `role`, `stream`,
    /// `detail`) and the counter `names`; every value starts at 0. The file is built at a
    /// temporary name and renamed, so readers never see it half made. A file left at that
    /// name by a finished or dead writer is replaced; one whose writer lives is an
    /// [`CounterError::InUse`] error.
    ///
    /// `root` must be this user's and not writable by others, and a link or another user's
    /// file at the name is refused, never written through ([`CounterError::Setup`], see
    /// [`RootDir`]); the file's space is reserved before it is mapped, so a full filesystem
    /// is a [`CounterError::Setup`] error naming the file, not a SIGBUS.
    ///
    /// `stream`: 1 to 64 of `[A-Za-z0-9._-]`, not starting with a dot; `role`: 1 to 16 of
    /// `[A-Za-z0-9_-]`; `detail`: at most 256 bytes; `names`: at most 64, distinct, each 1
    /// to 31 bytes of printable ASCII without spaces.
    pub fn create(
        root: &Path,
        stream: &str,
        role: &str,
        detail: &str,
        names: &[&str],
    ) -> Result<CounterFile, CounterError> {
        check_stream(stream)?;
        check_role(role)?;
        check_names(names)?;
        if detail.len() > MAX_DETAIL {
            return Err(CounterError::InvalidName {
                what: "detail",
                name: detail.into(),
                reason: "use at most 256 bytes",
            });
        }
        let dir = RootDir::create(root).map_err(setup_err)?;
        let name = format!("{stream}.{role}{COUNTERS_SUFFIX}");
        let path = dir.join(&name);
        match read_in(&dir, &name) {
            Ok(old) if old.alive => {
                return Err(CounterError::InUse { path, pid: old.pid });
            }
            // Never write through a link, nor replace a file that is not ours.
            Err(e @ CounterError::Setup(_)) => return Err(e),
            _ => {}
        }

        let pid = std::process::id();
        static NONCE: AtomicU64 = AtomicU64::new(0);
        let tmp_name = format!(
            ".{stream}.{role}{COUNTERS_SUFFIX}.tmp.{pid}.{:x}.{}",
            unix_ns(),
            NONCE.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = dir.join(&tmp_name);
        let file = dir.create_file(&tmp_name, 0o600).map_err(setup_err)?;
        let guard = TmpGuard::new(&dir, &tmp_name);
        // Reserve the space now: on a full filesystem a sparse file would fail at the first
        // store into the mapping, with SIGBUS.
        RootDir::reserve(&file, &path, LAYOUT_LEN as u64).map_err(setup_err)?;
        let map = Mapping::new(&file, true).map_err(io_err(&tmp, "mmap"))?;

        let mut role_buf = [0u8; MAX_ROLE];
        role_buf[..role.len()].copy_from_slice(role.as_bytes());
        let mut stream_buf = [0u8; MAX_STREAM];
        stream_buf[..stream.len()].copy_from_slice(stream.as_bytes());
        let mut name_bufs = [[0u8; MAX_COUNTER_NAME + 1]; MAX_COUNTERS];
        for (buf, name) in name_bufs.iter_mut().zip(names) {
            buf[..name.len()].copy_from_slice(name.as_bytes());
        }
        let now = unix_ns();
        let layout = Layout {
            magic: AtomicU64::new(0),
            version: VERSION,
            layout_len: LAYOUT_LEN as u32,
            pid,
            count: names.len() as u32,
            started_unix_ns: now,
            role_len: role.len() as u32,
            stream_len: stream.len() as u32,
            role: role_buf,
            stream: stream_buf,
            _pad0: [0; 8],
            state: AtomicU64::new(STATE_RUNNING),
            seq: AtomicU64::new(0),
            updated_unix_ns: AtomicU64::new(now),
            _pad1: [0; 104],
            detail_seq: AtomicU64::new(0),
            detail_len: AtomicU64::new(0),
            detail: [const { AtomicU64::new(0) }; MAX_DETAIL / 8],
            _pad2: [0; 112],
            names: name_bufs,
            values: [const { AtomicU64::new(0) }; MAX_COUNTERS],
        };
        // SAFETY: `map` is a fresh writable mapping of `LAYOUT_LEN` bytes, page aligned, of a
        // file nobody else can know yet (created exclusively at a unique temporary name),
        // and no reference into it exists yet.
        unsafe { map.ptr.as_ptr().write(layout) };
        let this = CounterFile {
            path,
            map,
            count: names.len(),
        };
        this.set_detail(detail);
        // The magic last (pairs with the Acquire load in `read_file`).
        this.layout().magic.store(MAGIC, Ordering::Release);
        dir.rename(&tmp_name, &name, true)
            .map_err(io_err(&this.path, "rename"))?;
        std::mem::forget(guard);
        Ok(this)
    }

    fn layout(&self) -> &Layout {
        self.map.layout()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores `values` (in the order of the names given to [`create`](Self::create); extra
    /// values are ignored, missing ones keep their last value), counts the update and stamps
    /// the time. No allocation, no system call.
    #[inline]
    pub fn publish(&self, values: &[u64]) {
        let l = self.layout();
        // Single writer (`!Sync`): nobody else changes `seq`.
        let seq = l.seq.load(Ordering::Relaxed);
        l.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd `seq` before the value stores (pairs with the reader's Acquire
        // fence after it loads the values).
        fence(Ordering::Release);
        for (slot, &v) in l.values[..self.count].iter().zip(values) {
            slot.store(v, Ordering::Relaxed);
        }
        l.updated_unix_ns.store(unix_ns(), Ordering::Relaxed);
        // Pairs with the reader's Acquire load of `seq` before it reads the values.
        l.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Replaces the detail string (rare: for instance when the session changed); a detail
    /// longer than [`MAX_DETAIL`] bytes is cut at a character boundary.
    pub fn set_detail(&self, detail: &str) {
        let detail = clip_detail(detail).as_bytes();
        let l = self.layout();
        let seq = l.detail_seq.load(Ordering::Relaxed);
        l.detail_seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        // As in `publish`.
        fence(Ordering::Release);
        for (word, chunk) in l.detail.iter().zip(detail.chunks(8)) {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
        l.detail_len.store(detail.len() as u64, Ordering::Relaxed);
        l.detail_seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Marks the file finished: the writer is done (readers then report it not alive).
    /// Publish the last values first.
    pub fn finish(&self) {
        let l = self.layout();
        l.updated_unix_ns.store(unix_ns(), Ordering::Relaxed);
        l.state.store(STATE_FINISHED, Ordering::Release);
    }
}

impl Drop for CounterFile {
    /// Marks the file finished; does not remove it.
    fn drop(&mut self) {
        self.finish();
    }
}

/// What a counter file held when it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// The file.
    pub path: PathBuf,
    /// The stream the writer serves.
    pub stream: String,
    /// The writer's role (`send`, `recv`, ...).
    pub role: String,
    /// Free-form description (multicast group, session, ...).
    pub detail: String,
    /// The writer's process id.
    pub pid: u32,
    /// When the writer created the file (Unix time, ns).
    pub started_unix_ns: u64,
    /// When the writer last published (or created or finished the file; Unix time, ns).
    pub updated_unix_ns: u64,
    /// How many times the writer has published.
    pub updates: u64,
    /// The writer marked the file finished (it exited cleanly).
    pub finished: bool,
    /// Not finished, and the writer's process exists (`kill(pid, 0)`; a reused pid would
    /// read as alive).
    pub alive: bool,
    /// Counter names and values, in the writer's order.
    pub counters: Vec<(String, u64)>,
}

impl CounterSnapshot {
    /// The value of the counter named `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find_map(|(n, v)| (n == name).then_some(*v))
    }
}

/// Reads a counter file while its writer may be running. Its directory and the file must be
/// this user's and not writable by others, and a symbolic link is not followed
/// ([`CounterError::Setup`]).
pub fn read_counters(path: &Path) -> Result<CounterSnapshot, CounterError> {
    let name =
        path.file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| CounterError::InvalidName {
                what: "counter file path",
                name: path.display().to_string(),
                reason: "must end in a UTF-8 file name",
            })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = RootDir::open(dir).map_err(setup_err)?;
    read_in(&dir, name)
}

/// Reads the counter file `name` of the checked directory `dir`.
fn read_in(dir: &RootDir, name: &str) -> Result<CounterSnapshot, CounterError> {
    let path = dir.join(name);
    match dir.open_file(name, false).map_err(setup_err)? {
        Some(file) => read_file(&file, &path),
        None => Err(io_err(&path, "open")(io::Error::from(
            io::ErrorKind::NotFound,
        ))),
    }
}

fn read_file(file: &File, path: &Path) -> Result<CounterSnapshot, CounterError> {
    let len = file.metadata().map_err(io_err(path, "stat"))?.len();
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(path, "read")(e)),
        }
    }
    let found = if got >= 8 {
        u64::from_ne_bytes([
            head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
        ])
    } else {
        0
    };
    if got < 8 && head[..got] == MAGIC.to_ne_bytes()[..got] {
        // Empty, or a prefix of the magic: a truncated counter file.
        return Err(CounterError::BadLength {
            path: path.into(),
            len,
        });
    }
    if found != MAGIC {
        return Err(CounterError::BadMagic {
            path: path.into(),
            found,
        });
    }
    if got == head.len() {
        let version = u32::from_ne_bytes([head[8], head[9], head[10], head[11]]);
        if version != VERSION {
            return Err(CounterError::BadVersion {
                path: path.into(),
                found: version,
            });
        }
    }
    if len != LAYOUT_LEN as u64 {
        return Err(CounterError::BadLength {
            path: path.into(),
            len,
        });
    }
    let map = Mapping::new(file, false).map_err(io_err(path, "mmap"))?;
    snapshot(map.layout(), path)
}

fn snapshot(l: &Layout, path: &Path) -> Result<CounterSnapshot, CounterError> {
    let corrupt = |what: String| CounterError::Corrupt {
        path: path.into(),
        what,
    };
    // Pairs with the Release store of the magic in `CounterFile::create`.
    if l.magic.load(Ordering::Acquire) != MAGIC {
        return Err(CounterError::BadMagic {
            path: path.into(),
            found: l.magic.load(Ordering::Relaxed),
        });
    }
    if l.layout_len as usize != LAYOUT_LEN {
        return Err(corrupt(format!("layout length {}", l.layout_len)));
    }
    let count = l.count as usize;
    if count > MAX_COUNTERS {
        return Err(corrupt(format!("{count} counters")));
    }
    let text = |bytes: &[u8], len: u32, what: &str| -> Result<String, CounterError> {
        bytes
            .get(..len as usize)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned)
            .ok_or_else(|| corrupt(format!("{what} of length {len}")))
    };
    let role = text(&l.role, l.role_len, "role")?;
    let stream = text(&l.stream, l.stream_len, "stream name")?;
    let mut names = Vec::with_capacity(count);
    for (i, raw) in l.names[..count].iter().enumerate() {
        let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let name = &raw[..len];
        if name.is_empty() || !name.iter().all(u8::is_ascii_graphic) {
            return Err(corrupt(format!("counter name {i}")));
        }
        names.push(String::from_utf8_lossy(name).into_owned());
    }

    // The values, under the sequence lock.
    let mut values = vec![0u64; count];
    let mut wait = Wait::new(l.pid);
    let (updated, seq) = loop {
        // Pairs with the Release store of the even `seq` at the end of `publish`.
        let before = l.seq.load(Ordering::Acquire);
        for (v, slot) in values.iter_mut().zip(&l.values) {
            *v = slot.load(Ordering::Relaxed);
        }
        let updated = l.updated_unix_ns.load(Ordering::Relaxed);
        // Pairs with the Release fence in `publish`: a value store seen above orders the odd
        // `seq` before the load below.
        fence(Ordering::Acquire);
        let seq = l.seq.load(Ordering::Relaxed);
        if (before == seq && seq.is_multiple_of(2)) || !wait.again() {
            break (updated, seq);
        }
    };

    // The detail, likewise.
    let mut words = [0u64; MAX_DETAIL / 8];
    let mut wait = Wait::new(l.pid);
    let detail_len = loop {
        // Pairs with the Release store at the end of `set_detail`.
        let before = l.detail_seq.load(Ordering::Acquire);
        for (w, word) in words.iter_mut().zip(&l.detail) {
            *w = word.load(Ordering::Relaxed);
        }
        let detail_len = l.detail_len.load(Ordering::Relaxed);
        // Pairs with the Release fence in `set_detail`.
        fence(Ordering::Acquire);
        let after = l.detail_seq.load(Ordering::Relaxed);
        if (before == after && after.is_multiple_of(2)) || !wait.again() {
            break detail_len;
        }
    };
    let detail_bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let detail_len = usize::try_from(detail_len)
        .unwrap_or(MAX_DETAIL)
        .min(MAX_DETAIL);
    let detail = String::from_utf8_lossy(&detail_bytes[..detail_len]).into_owned();

    // Pairs with the Release store in `finish`.
    let finished = l.state.load(Ordering::Acquire) == STATE_FINISHED;
    let pid = l.pid;
    Ok(CounterSnapshot {
        path: path.into(),
        stream,
        role,
        detail,
        pid,
        started_unix_ns: l.started_unix_ns,
        updated_unix_ns: updated,
        updates: seq / 2,
        finished,
        alive: !finished && pid_alive(pid),
        counters: names.into_iter().zip(values).collect(),
    })
}

/// How a reader waits for a writer in the middle of a publish: spins a little, then yields
/// the core (the writer may be preempted), up to [`READ_PATIENCE`]; gives up at once when the
/// writer's process is gone (it may have died mid-publish).
struct Wait {
    pid: u32,
    tries: u32,
    deadline: Option<std::time::Instant>,
}

impl Wait {
    fn new(pid: u32) -> Wait {
        Wait {
            pid,
            tries: 0,
            deadline: None,
        }
    }

    /// Waits a little; `false`: stop trying and take what was read.
    fn again(&mut self) -> bool {
        self.tries += 1;
        if self.tries < 100 {
            std::hint::spin_loop();
            return true;
        }
        let now = std::time::Instant::now();
        let deadline = *self.deadline.get_or_insert(now + READ_PATIENCE);
        if now >= deadline || !pid_alive(self.pid) {
            return false;
        }
        std::thread::yield_now();
        true
    }
}

/// Whether `name` is a counter file's name (not a temporary one).
fn is_counter_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(COUNTERS_SUFFIX)
}

/// Reads every counter file (`*.stat`, not hidden) under `root`, sorted by stream then role.
/// Files that cannot be read (damaged, of another version, another user's, removed meanwhile)
/// do not stop the listing: their errors come back in the second vector; links are skipped.
/// A `root` that cannot be read, or that fails [`RootDir::open`]'s checks, is an error.
pub fn list_counters(
    root: &Path,
) -> Result<(Vec<CounterSnapshot>, Vec<CounterError>), CounterError> {
    let dir = RootDir::open(root).map_err(setup_err)?;
    let mut snaps = Vec::new();
    let mut errors = Vec::new();
    for name in dir.names().map_err(setup_err)? {
        if !is_counter_name(&name) || !dir.is_file(&name) {
            continue;
        }
        match read_in(&dir, &name) {
            Ok(s) => snaps.push(s),
            Err(CounterError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => errors.push(e),
        }
    }
    snaps.sort_by(|a, b| (&a.stream, &a.role, &a.path).cmp(&(&b.stream, &b.role, &b.path)));
    Ok((snaps, errors))
}

/// Removes the counter files under `root` whose writer finished or died, and temporary files
/// left by creators that died. Leaves files it cannot read, links, and files of live writers.
/// Returns the removed paths, sorted. A `root` that fails [`RootDir::open`]'s checks is an
/// error.
pub fn remove_finished(root: &Path) -> Result<Vec<PathBuf>, CounterError> {
    let dir = RootDir::open(root).map_err(setup_err)?;
    let mut removed = Vec::new();
    for name in dir.names().map_err(setup_err)? {
        if !dir.is_file(&name) {
            continue;
        }
        let path = dir.join(&name);
        let stale = if is_counter_name(&name) {
            let Ok(Some(file)) = dir.open_file(&name, false) else {
                continue;
            };
            match read_file(&file, &path) {
                // Only if the name still points to the file that was read (a new writer may
                // have replaced it meanwhile).
                Ok(snap) if !snap.alive => dir.holds(&name, &file).unwrap_or(false),
                _ => false,
            }
        } else {
            tmp_creator(&name).is_some_and(|pid| !pid_alive(pid))
        };
        if stale {
            match dir.remove(&name) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, "remove")(e)),
            }
        }
    }
    removed.sort();
    Ok(removed)
}

/// The pid in a temporary counter file's name (`.<stream>.<role>.stat.tmp.<pid>.<nonce>`).
fn tmp_creator(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    let (_, rest) = name.rsplit_once(".stat.tmp.")?;
    let (pid, _) = rest.split_once('.')?;
    pid.parse().ok()
}

// Files and mappings: outside what miri's isolation allows (the ring's protocol is what it checks).
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::unix::fs::PermissionsExt;

    const NAMES: &[&str] = &["packets", "bytes", "gaps", "naks"];

    fn create(root: &Path, stream: &str, role: &str) -> CounterFile {
        CounterFile::create(
            root,
            stream,
            role,
            "group 239.1.1.1:5000 session ABC0123456",
            NAMES,
        )
        .unwrap()
    }

    /// A pid that no process has: a child that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
        pid
    }

    fn set_pid(path: &Path, pid: u32) {
        let file = OpenOptions::new().write(true).open(path).unwrap();
        file.write_at(&pid.to_ne_bytes(), offset_of!(Layout, pid) as u64)
            .unwrap();
    }

    #[test]
    fn create_publish_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let before = unix_ns();
        let file = create(dir.path(), "aapl.trades", "send");
        assert_eq!(file.path(), dir.path().join("aapl.trades.send.stat"));
        let meta = std::fs::metadata(file.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), LAYOUT_LEN as u64);

        let snap = read_counters(file.path()).unwrap();
        assert_eq!(snap.stream, "aapl.trades");
        assert_eq!(snap.role, "send");
        assert_eq!(snap.detail, "group 239.1.1.1:5000 session ABC0123456");
        assert_eq!(snap.pid, std::process::id());
        assert!(snap.started_unix_ns >= before && snap.started_unix_ns <= unix_ns());
        assert_eq!(snap.updates, 0);
        assert!(snap.alive && !snap.finished);
        let zeros: Vec<(String, u64)> = NAMES.iter().map(|n| (n.to_string(), 0)).collect();
        assert_eq!(snap.counters, zeros);

        file.publish(&[1, 2, 3, u64::MAX]);
        let snap = read_counters(file.path()).unwrap();
        assert_eq!(snap.updates, 1);
        assert_eq!(snap.get("packets"), Some(1));
        assert_eq!(snap.get("naks"), Some(u64::MAX));
        assert_eq!(snap.get("nope"), None);
        assert!(snap.updated_unix_ns >= snap.started_unix_ns);
        // Nothing is left at a temporary name.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["aapl.trades.send.stat"]);
    }

    #[test]
    fn a_reader_follows_a_live_writer() {
        let dir = tempfile::tempdir().unwrap();
        let file = create(dir.path(), "s", "recv");
        for i in 1..=5u64 {
            file.publish(&[i, 10 * i]);
            let snap = read_counters(file.path()).unwrap();
            assert_eq!(snap.updates, i);
            assert_eq!(snap.get("packets"), Some(i));
            assert_eq!(snap.get("bytes"), Some(10 * i));
            assert_eq!(snap.get("gaps"), Some(0), "values not given keep theirs");
        }
        file.publish(&[9, 9, 9, 9, 9, 9]);
        assert_eq!(read_counters(file.path()).unwrap().get("naks"), Some(9));
        file.set_detail("session XYZ9876543");
        assert_eq!(
            read_counters(file.path()).unwrap().detail,
            "session XYZ9876543"
        );
        file.set_detail("");
        assert_eq!(read_counters(file.path()).unwrap().detail, "");
    }

    #[test]
    fn a_concurrent_reader_sees_whole_publishes() {
        let dir = tempfile::tempdir().unwrap();
        let file = create(dir.path(), "s", "send");
        let path = file.path().to_path_buf();
        const N: u64 = 20_000;
        let reader = std::thread::spawn(move || {
            let mut last = 0;
            let mut reads = 0;
            while last < N {
                let snap = read_counters(&path).unwrap();
                let v: Vec<u64> = snap.counters.iter().map(|c| c.1).collect();
                assert!(v.iter().all(|&x| x == v[0]), "torn publish: {v:?}");
                assert!(v[0] >= last, "went back from {last} to {}", v[0]);
                assert_eq!(snap.updates, v[0]);
                last = v[0];
                reads += 1;
            }
            reads
        });
        for i in 1..=N {
            file.publish(&[i; 4]);
            if i % 64 == 0 {
                std::thread::yield_now();
            }
        }
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn finish_and_drop_mark_the_file_finished() {
        let dir = tempfile::tempdir().unwrap();
        let file = create(dir.path(), "s", "send");
        let path = file.path().to_path_buf();
        file.publish(&[7]);
        file.finish();
        let snap = read_counters(&path).unwrap();
        assert!(snap.finished && !snap.alive);
        assert_eq!(snap.get("packets"), Some(7));
        drop(file);

        let file = create(dir.path(), "s", "recv");
        let path = file.path().to_path_buf();
        drop(file);
        let snap = read_counters(&path).unwrap();
        assert!(snap.finished && !snap.alive);
    }

    #[test]
    fn a_dead_writer_is_not_alive() {
        let dir = tempfile::tempdir().unwrap();
        let file = create(dir.path(), "s", "send");
        assert!(read_counters(file.path()).unwrap().alive);
        let pid = dead_pid();
        set_pid(file.path(), pid);
        let snap = read_counters(file.path()).unwrap();
        assert_eq!(snap.pid, pid);
        assert!(!snap.alive && !snap.finished);
    }

    #[test]
    fn a_live_writer_keeps_its_file_a_gone_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let first = create(dir.path(), "s", "send");
        first.publish(&[5]);
        let err = CounterFile::create(dir.path(), "s", "send", "", NAMES).unwrap_err();
        assert!(matches!(err, CounterError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("s.send.stat"), "{err}");
        drop(first);
        let second = create(dir.path(), "s", "send");
        let snap = read_counters(second.path()).unwrap();
        assert!(snap.alive);
        assert_eq!(snap.get("packets"), Some(0));
    }

    #[test]
    fn files_that_are_not_counter_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = create(dir.path(), "good", "send");
        let good = std::fs::read(file.path()).unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };

        let p = write("junk.stat", &[0xAB; LAYOUT_LEN]);
        let err = read_counters(&p).unwrap_err();
        assert!(matches!(err, CounterError::BadMagic { .. }), "{err}");
        assert!(err.to_string().contains("junk.stat"), "{err}");

        let p = write("short.stat", &good[..1000]);
        let err = read_counters(&p).unwrap_err();
        assert!(
            matches!(err, CounterError::BadLength { len: 1000, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("short.stat") && err.to_string().contains("truncated"));

        for len in [0, 5] {
            let p = write("tiny.stat", &good[..len]);
            let err = read_counters(&p).unwrap_err();
            assert!(
                matches!(err, CounterError::BadLength { .. }),
                "{len}: {err}"
            );
        }
        let p = write("text.stat", b"hi");
        assert!(matches!(
            read_counters(&p),
            Err(CounterError::BadMagic { found: 0, .. })
        ));

        let mut v2 = good.clone();
        v2[8..12].copy_from_slice(&2u32.to_ne_bytes());
        let p = write("v2.stat", &v2);
        let err = read_counters(&p).unwrap_err();
        assert!(
            matches!(err, CounterError::BadVersion { found: 2, .. }),
            "{err}"
        );

        let mut bad = good.clone();
        bad[offset_of!(Layout, count)..][..4].copy_from_slice(&65u32.to_ne_bytes());
        let p = write("count.stat", &bad);
        let err = read_counters(&p).unwrap_err();
        assert!(matches!(err, CounterError::Corrupt { .. }), "{err}");

        let mut bad = good.clone();
        bad[offset_of!(Layout, role_len)..][..4].copy_from_slice(&17u32.to_ne_bytes());
        let p = write("role.stat", &bad);
        assert!(matches!(
            read_counters(&p),
            Err(CounterError::Corrupt { .. })
        ));

        let err = read_counters(&dir.path().join("missing.stat")).unwrap_err();
        assert!(err.to_string().contains("missing.stat"), "{err}");
    }

    #[test]
    fn names_that_do_not_fit_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let many: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(matches!(
            CounterFile::create(root, "s", "send", "", &many),
            Err(CounterError::TooManyCounters { count: 65 })
        ));
        assert!(CounterFile::create(root, "s", "send", "", &many[..64]).is_ok());

        let long = "x".repeat(32);
        let cases: [(&str, &str, &str, &[&str], &str); 9] = [
            ("s", "r", "", &[long.as_str()], "counter name"),
            ("s", "r", "", &[""], "counter name"),
            ("s", "r", "", &["has space"], "counter name"),
            ("s", "r", "", &["a", "b", "a"], "counter name"),
            ("s", "waytoolongrolename", "", &["a"], "role"),
            ("s", "a.b", "", &["a"], "role"),
            (".hidden", "r", "", &["a"], "stream"),
            ("a/b", "r", "", &["a"], "stream"),
            ("s", "r", &"d".repeat(257), &["a"], "detail"),
        ];
        for (stream, role, detail, names, what) in cases {
            match CounterFile::create(root, stream, role, detail, names) {
                Err(CounterError::InvalidName { what: w, .. }) => assert_eq!(w, what),
                other => panic!("{stream:?} {role:?} {names:?}: {other:?}"),
            }
        }
        let ok = "y".repeat(31);
        let f = CounterFile::create(
            root,
            &"s".repeat(64),
            &"r".repeat(16),
            &"d".repeat(256),
            &[&ok],
        )
        .unwrap();
        let snap = read_counters(f.path()).unwrap();
        assert_eq!(snap.counters, [(ok, 0)]);
        assert_eq!(snap.detail.len(), 256);
    }

    #[test]
    fn a_long_detail_is_cut_at_a_character_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let file = create(dir.path(), "s", "send");
        let detail = "é".repeat(200); // 400 bytes
        file.set_detail(&detail);
        let got = read_counters(file.path()).unwrap().detail;
        assert_eq!(got, "é".repeat(128));
    }

    #[test]
    fn list_and_remove_finished() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let live = create(root, "b.stream", "send");
        let also_live = create(root, "a.stream", "recv");
        let finished = create(root, "a.stream", "send");
        drop(finished);
        let dead = create(root, "c", "recv");
        set_pid(dead.path(), dead_pid());
        std::fs::write(root.join("junk.stat"), b"not counters").unwrap();
        std::fs::write(root.join("s.ring"), b"not ours").unwrap();
        std::fs::create_dir(root.join("dir.stat")).unwrap();
        let dead_tmp = root.join(format!(".x.send.stat.tmp.{}.1.0", dead_pid()));
        std::fs::write(&dead_tmp, b"").unwrap();
        let live_tmp = root.join(format!(".y.send.stat.tmp.{}.1.0", std::process::id()));
        std::fs::write(&live_tmp, b"").unwrap();

        let (snaps, errors) = list_counters(root).unwrap();
        let order: Vec<(&str, &str, bool)> = snaps
            .iter()
            .map(|s| (s.stream.as_str(), s.role.as_str(), s.alive))
            .collect();
        assert_eq!(
            order,
            [
                ("a.stream", "recv", true),
                ("a.stream", "send", false),
                ("b.stream", "send", true),
                ("c", "recv", false),
            ]
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("junk.stat"), "{}", errors[0]);

        let removed = remove_finished(root).unwrap();
        assert_eq!(
            removed,
            [
                dead_tmp,
                root.join("a.stream.send.stat"),
                root.join("c.recv.stat"),
            ]
        );
        let (snaps, _) = list_counters(root).unwrap();
        assert_eq!(snaps.len(), 2);
        assert!(
            live_tmp.exists() && root.join("junk.stat").exists() && root.join("s.ring").exists()
        );
        assert!(remove_finished(root).unwrap().is_empty());
        drop((live, also_live, dead));
        assert_eq!(remove_finished(root).unwrap().len(), 2);
        assert!(matches!(
            list_counters(&root.join("missing")),
            Err(CounterError::Io { .. })
        ));
    }

    #[test]
    fn publish_does_not_allocate() {
        let dir = tempfile::tempdir().unwrap();
        let file = create(dir.path(), "s", "send");
        let mut values = [0u64; 4];
        let info = allocation_counter::measure(|| {
            for i in 0..1000 {
                values[0] = i;
                file.publish(&values);
            }
        });
        assert_eq!(info.count_total, 0);
        assert_eq!(read_counters(file.path()).unwrap().updates, 1000);
    }

    #[test]
    fn debug_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = create(dir.path(), "s", "send");
        assert!(format!("{file:?}").contains("s.send.stat"));
    }
}
