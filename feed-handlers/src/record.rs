//! Recordings of bus streams: a small file format, its writer and reader, and the recorder
//! loop behind `mdbus record`. `mdbus replay` recognises a recording by its magic and
//! republishes its envelopes.
//!
//! # Format (version 1, all integers little-endian)
//!
//! ```text
//!  file header (header_len bytes, a multiple of 8)
//!  0         8         10           12         16                 24         26
//!  +---------+---------+------------+----------+------------------+----------+-----------+---------+
//!  | magic   | version | header_len | reserved | started_unix_ns  | name_len | name      | padding |
//!  | MDBUSREC| u16 = 1 | u16        | u32 = 0  | u64              | u16      | name_len  | zeroes  |
//!  +---------+---------+------------+----------+------------------+----------+-----------+---------+
//!
//!  then records, back to back, until the end of the file
//!  0        4          8          16         24
//!  +--------+----------+----------+----------+----------------+
//!  | len    | msg_type | seq      | ts_ns    | payload        |
//!  | u32    | u32      | u64      | u64      | len bytes      |
//!  +--------+----------+----------+----------+----------------+
//! ```
//!
//! `seq` is the record's sequence number on the bus stream (consecutive; a jump is a loss the
//! recorder suffered), `msg_type` its type tag ([`mdbus_bus::ENVELOPE_MSG_TYPE`] for normalized
//! envelopes), `ts_ns` when the recorder read it (ns since the Unix epoch): replaying at
//! recorded pace follows it. A reader skips header bytes past the fields it knows
//! (`header_len`), so later versions can append header fields.
//!
//! Payloads are stored byte for byte, so a recording keeps the schema version it was written
//! with: envelopes recorded before the schema named a venue read as venue `Unknown`,
//! instrument 0, and the replay keys them on their stock locate (see
//! `codecs/schema/EVOLUTION.md`).
//!
//! A file that ends inside a record (the recorder was killed) is reported as
//! [`RecordError::Truncated`] with the record's offset, after every complete record before it.
//!
//! [`record_stream_with_counters`] keeps the recorder's counters ([`RecordStats::NAMES`]) in
//! a counters file ([`record_counters`]: role [`COUNTERS_ROLE`], stream the recorded one)
//! for `mdbus stat`, at most every millisecond, judged by the timestamp each record gets
//! anyway (no extra clock read), on idle turns, and once more at the end.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mdbus_bus::{ENVELOPE_MSG_TYPE, ProducerStatus, ReceiveError, Subscriber, WaitStrategy};
use mdbus_shm::counters::{CounterError, CounterFile, MAX_DETAIL};
use mdbus_shm::unix_ns;

/// The first eight bytes of every recording.
pub const MAGIC: [u8; 8] = *b"MDBUSREC";
/// The format version this code writes (and the highest it reads).
pub const VERSION: u16 = 1;
/// Length of a record's header (before the payload).
pub const RECORD_HEADER_LEN: usize = 24;
/// Largest payload accepted when reading; a larger length field means a damaged file.
pub const MAX_RECORD_PAYLOAD: u32 = 16 << 20;
/// Fixed part of the file header (before the stream name).
const FIXED_HEADER_LEN: usize = 26;
/// Longest stream name stored.
const MAX_NAME: usize = 1024;
/// Role of a recorder's counters file (`<root>/<stream>.record.stat`).
pub const COUNTERS_ROLE: &str = "record";
/// Counters are published at most this often (ns).
const COUNTERS_EVERY_NS: u64 = 1_000_000;

/// What a recording's file header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingHeader {
    /// Format version.
    pub version: u16,
    /// Name of the recorded stream.
    pub stream: String,
    /// When recording started, ns since the Unix epoch.
    pub started_unix_ns: u64,
    /// Length of the file header; the first record starts here.
    pub header_len: u16,
}

/// Why a recording could not be written or read. Names the file and, where it applies, the
/// offset.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The counters file could not be created.
    #[error(transparent)]
    Counters(#[from] CounterError),
    /// Opening, reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with [`MAGIC`].
    #[error("{}: not an mdbus recording (no MDBUSREC magic)", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a newer, unknown format version.
    #[error("{}: recording format version {version} is newer than this reader ({VERSION})", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u16,
    },
    /// The file header or a record header is damaged.
    #[error("{}: malformed recording at offset {offset}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Offset of the header or record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The file ends inside a record; every record before it was delivered.
    #[error("{}: truncated record at offset {offset}: needs {needed} bytes, {available} left", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Offset of the record.
        offset: u64,
        /// Bytes the record needs.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// Writing the recording failed (a full disk, say). The file keeps what reached it:
    /// [`RecordReader`] (and `mdbus replay`) reads every complete record and reports where
    /// the file ends.
    #[error(
        "{}: the recording stopped: {records} complete records ({bytes} bytes) reached the file, {unwritten} more records read from the stream did not; the file stays readable (`mdbus replay` plays it and reports where it ends): {source}",
        path.display()
    )]
    WriteFailed {
        /// The file.
        path: PathBuf,
        /// Complete records in the file.
        records: u64,
        /// Bytes in the file (file header included; the last record may be cut short).
        bytes: u64,
        /// Records read from the stream that did not reach the file whole.
        unwritten: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The recorded stream could not be read on; what was read before is in the file.
    #[error(
        "stream {stream:?}: the recording stopped with {records} records ({bytes} bytes) in the file: {source}"
    )]
    Stream {
        /// The stream.
        stream: String,
        /// Complete records in the file.
        records: u64,
        /// Bytes in the file.
        bytes: u64,
        /// What the ring said.
        source: ReceiveError,
    },
}

/// Whether the file at `path` starts with the recording magic.
pub fn is_recording(path: impl AsRef<Path>) -> Result<bool, RecordError> {
    let path = path.as_ref();
    let io_err = |source| RecordError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = File::open(path).map_err(io_err)?;
    let mut head = [0u8; 8];
    let n = read_full(&mut f, &mut head).map_err(io_err)?;
    Ok(n == 8 && head == MAGIC)
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Bytes a [`RecordWriter`] gathers before it writes them out.
const WRITE_BUFFER: usize = 1 << 20;

/// Writes a recording: the file header at creation, then one record per
/// [`write`](Self::write), buffered (no system call per record).
///
/// It knows exactly what reached the underlying writer: when a write fails (a full disk),
/// [`flushed_records`](Self::flushed_records) counts the complete records before the failure
/// and [`flushed_bytes`](Self::flushed_bytes) every byte taken, a record cut short included.
pub struct RecordWriter<W: Write> {
    out: W,
    /// Bytes not yet written out; `buf[0]` is at file offset `flushed_bytes`.
    buf: Vec<u8>,
    /// File offsets of the ends of the records (partly) in `buf`, oldest first; sized so it
    /// never grows (a buffer's worth of the smallest records, and one more).
    ends: VecDeque<u64>,
    records: u64,
    bytes: u64,
    flushed_records: u64,
    flushed_bytes: u64,
}

impl<W: Write> std::fmt::Debug for RecordWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordWriter")
            .field("buffered", &self.buf.len())
            .field("records", &self.records)
            .field("bytes", &self.bytes)
            .field("flushed_records", &self.flushed_records)
            .field("flushed_bytes", &self.flushed_bytes)
            .finish_non_exhaustive()
    }
}

impl RecordWriter<File> {
    /// Creates (or truncates) the file at `path` and writes the header.
    pub fn create(path: impl AsRef<Path>, stream: &str) -> Result<Self, RecordError> {
        let path = path.as_ref();
        let io_err = |source| RecordError::Io {
            path: path.to_owned(),
            source,
        };
        let f = File::create(path).map_err(io_err)?;
        RecordWriter::new(f, stream, unix_ns()).map_err(io_err)
    }
}

impl<W: Write> RecordWriter<W> {
    /// Starts a recording of `stream` into `out`, writing the file header.
    pub fn new(out: W, stream: &str, started_unix_ns: u64) -> io::Result<Self> {
        let name = stream.as_bytes();
        if name.len() > MAX_NAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("stream name of {} bytes (at most {MAX_NAME})", name.len()),
            ));
        }
        let header_len = (FIXED_HEADER_LEN + name.len()).next_multiple_of(8);
        let mut buf = Vec::with_capacity(WRITE_BUFFER);
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&(header_len as u16).to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&started_unix_ns.to_le_bytes());
        buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
        buf.extend_from_slice(name);
        buf.resize(header_len, 0);
        Ok(RecordWriter {
            out,
            buf,
            ends: VecDeque::with_capacity(WRITE_BUFFER / RECORD_HEADER_LEN + 1),
            records: 0,
            bytes: header_len as u64,
            flushed_records: 0,
            flushed_bytes: 0,
        })
    }

    /// Appends one record.
    #[inline]
    pub fn write(&mut self, seq: u64, msg_type: u32, ts_ns: u64, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_RECORD_PAYLOAD)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("record of {} bytes is too large", payload.len()),
                )
            })?;
        let n = RECORD_HEADER_LEN + payload.len();
        if self.buf.len() + n > WRITE_BUFFER && !self.buf.is_empty() {
            self.write_buffered()?;
        }
        let mut h = [0u8; RECORD_HEADER_LEN];
        h[0..4].copy_from_slice(&len.to_le_bytes());
        h[4..8].copy_from_slice(&msg_type.to_le_bytes());
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..24].copy_from_slice(&ts_ns.to_le_bytes());
        // (A record larger than the buffer grows it, once.)
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(payload);
        self.records += 1;
        self.bytes += n as u64;
        self.ends.push_back(self.bytes);
        Ok(())
    }

    /// Writes the buffered bytes out, noting how far the underlying writer got.
    fn write_buffered(&mut self) -> io::Result<()> {
        let mut done = 0;
        let result = loop {
            if done == self.buf.len() {
                break Ok(());
            }
            match self.out.write(&self.buf[done..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.buf.drain(..done);
        self.flushed_bytes += done as u64;
        while self
            .ends
            .front()
            .is_some_and(|&end| end <= self.flushed_bytes)
        {
            self.ends.pop_front();
            self.flushed_records += 1;
        }
        result
    }

    /// Records handed to [`write`](Self::write).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes handed to the writer (file header included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Complete records that reached the underlying writer.
    pub fn flushed_records(&self) -> u64 {
        self.flushed_records
    }

    /// Bytes that reached the underlying writer (file header included; the last record may
    /// be cut short when a write failed).
    pub fn flushed_bytes(&self) -> u64 {
        self.flushed_bytes
    }

    /// Writes the buffered records out and flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_buffered()?;
        self.out.flush()
    }

    /// The error for a failed write or flush of the recording at `path`: what reached the
    /// file, and what did not.
    pub fn write_failed(&self, path: &Path, source: io::Error) -> RecordError {
        RecordError::WriteFailed {
            path: path.to_owned(),
            records: self.flushed_records,
            bytes: self.flushed_bytes,
            unwritten: self.records - self.flushed_records,
            source,
        }
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.out)
    }
}

/// One record read back, borrowing the reader's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded<'a> {
    /// File offset of the record.
    pub offset: u64,
    /// Bus stream sequence number.
    pub seq: u64,
    /// Type tag.
    pub msg_type: u32,
    /// When it was recorded, ns since the Unix epoch.
    pub ts_ns: u64,
    /// The message bytes.
    pub payload: &'a [u8],
}

impl Recorded<'_> {
    /// Whether the record is a normalized envelope.
    pub fn is_envelope(&self) -> bool {
        self.msg_type == ENVELOPE_MSG_TYPE
    }
}

/// Streaming reader of a recording (one buffer, reused; no allocation per record).
pub struct RecordReader {
    path: PathBuf,
    src: BufReader<Box<dyn Read + Send>>,
    header: RecordingHeader,
    offset: u64,
    buf: Vec<u8>,
    done: bool,
}

impl std::fmt::Debug for RecordReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordReader")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl RecordReader {
    /// Opens a recording and reads its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RecordError> {
        let path = path.as_ref();
        let f = File::open(path).map_err(|source| RecordError::Io {
            path: path.to_owned(),
            source,
        })?;
        RecordReader::from_reader(path, f)
    }

    /// Reads a recording from any byte source (`path` names it in errors).
    pub fn from_reader(
        path: impl Into<PathBuf>,
        reader: impl Read + Send + 'static,
    ) -> Result<Self, RecordError> {
        let path = path.into();
        let mut src = BufReader::with_capacity(1 << 20, Box::new(reader) as Box<dyn Read + Send>);
        let io_err = |source| RecordError::Io {
            path: path.clone(),
            source,
        };
        let mut fixed = [0u8; FIXED_HEADER_LEN];
        let n = read_full(&mut src, &mut fixed).map_err(io_err)?;
        if n < 8 || fixed[..8] != MAGIC {
            return Err(RecordError::BadMagic { path });
        }
        if n < FIXED_HEADER_LEN {
            return Err(RecordError::Truncated {
                path,
                offset: 0,
                needed: FIXED_HEADER_LEN as u64,
                available: n as u64,
            });
        }
        let u16_at = |i: usize| u16::from_le_bytes([fixed[i], fixed[i + 1]]);
        let version = u16_at(8);
        let header_len = u16_at(10);
        let started_unix_ns = u64::from_le_bytes(fixed[16..24].try_into().unwrap_or_default());
        let name_len = usize::from(u16_at(24));
        if version == 0 || version > VERSION {
            return Err(RecordError::UnsupportedVersion { path, version });
        }
        if usize::from(header_len) < FIXED_HEADER_LEN + name_len {
            return Err(RecordError::Malformed {
                path,
                offset: 0,
                reason: format!(
                    "header length {header_len} cannot hold a stream name of {name_len} bytes"
                ),
            });
        }
        let mut rest = vec![0u8; usize::from(header_len) - FIXED_HEADER_LEN];
        let n = read_full(&mut src, &mut rest).map_err(io_err)?;
        if n < rest.len() {
            return Err(RecordError::Truncated {
                path,
                offset: 0,
                needed: u64::from(header_len),
                available: (FIXED_HEADER_LEN + n) as u64,
            });
        }
        let stream = String::from_utf8_lossy(&rest[..name_len]).into_owned();
        Ok(RecordReader {
            path,
            src,
            header: RecordingHeader {
                version,
                stream,
                started_unix_ns,
                header_len,
            },
            offset: u64::from(header_len),
            buf: Vec::with_capacity(4096),
            done: false,
        })
    }

    /// The file header.
    pub fn header(&self) -> &RecordingHeader {
        &self.header
    }

    /// The file's name as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record, `None` at the end of the file. After an error (a truncated or damaged
    /// record, an I/O error) the next call returns `None`.
    pub fn next_record(&mut self) -> Option<Result<Recorded<'_>, RecordError>> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(h)) => Some(Ok(Recorded {
                offset: h.offset,
                seq: h.seq,
                msg_type: h.msg_type,
                ts_ns: h.ts_ns,
                payload: &self.buf,
            })),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn step(&mut self) -> Result<Option<RecordHead>, RecordError> {
        let offset = self.offset;
        let io_err = |source| RecordError::Io {
            path: self.path.clone(),
            source,
        };
        let mut h = [0u8; RECORD_HEADER_LEN];
        let n = read_full(&mut self.src, &mut h).map_err(io_err)?;
        if n == 0 {
            return Ok(None);
        }
        if n < RECORD_HEADER_LEN {
            return Err(RecordError::Truncated {
                path: self.path.clone(),
                offset,
                needed: RECORD_HEADER_LEN as u64,
                available: n as u64,
            });
        }
        let word = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let msg_type = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if len > MAX_RECORD_PAYLOAD {
            return Err(RecordError::Malformed {
                path: self.path.clone(),
                offset,
                reason: format!("record length {len} exceeds {MAX_RECORD_PAYLOAD}"),
            });
        }
        let len = len as usize;
        self.buf.resize(len, 0);
        let n = read_full(&mut self.src, &mut self.buf).map_err(|source| RecordError::Io {
            path: self.path.clone(),
            source,
        })?;
        if n < len {
            return Err(RecordError::Truncated {
                path: self.path.clone(),
                offset,
                needed: (RECORD_HEADER_LEN + len) as u64,
                available: (RECORD_HEADER_LEN + n) as u64,
            });
        }
        self.offset += (RECORD_HEADER_LEN + len) as u64;
        Ok(Some(RecordHead {
            offset,
            seq: word(8),
            msg_type,
            ts_ns: word(16),
        }))
    }
}

struct RecordHead {
    offset: u64,
    seq: u64,
    msg_type: u32,
    ts_ns: u64,
}

/// When [`record_stream`] stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordOptions {
    /// Stop after the stream's `EndOfSession` envelope (recorded).
    pub until_end_of_session: bool,
    /// Stop after this many records.
    pub max_records: Option<u64>,
    /// Stop after this long.
    pub max_duration: Option<Duration>,
    /// How the recorder waits for data.
    pub wait: WaitStrategy,
}

impl Default for RecordOptions {
    /// Until the end of the session or the stream's close, however long; blocking waits.
    fn default() -> Self {
        RecordOptions {
            until_end_of_session: true,
            max_records: None,
            max_duration: None,
            wait: WaitStrategy::Blocking,
        }
    }
}

/// Why [`record_stream`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum StopReason {
    /// The stream's `EndOfSession` envelope was recorded.
    EndOfSession,
    /// The publisher closed the stream and everything was recorded.
    Closed,
    /// The publisher died (its process is gone or its heartbeat stopped).
    PublisherDead,
    /// `max_records` were recorded.
    Count,
    /// `max_duration` passed.
    Duration,
    /// The caller's stop flag was set.
    Stopped,
}

/// What [`record_stream`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RecordStats {
    /// Records in the file.
    pub records: u64,
    /// Bytes in the file, file header included.
    pub bytes: u64,
    /// Times the recorder was lapped by the publisher (broadcast streams).
    pub overruns: u64,
    /// Records lost to those overruns (the replay sees them as a sequence gap).
    pub lost: u64,
    /// Why recording stopped.
    pub stop: StopReason,
}

impl RecordStats {
    /// Names of the counters a recorder publishes (role [`COUNTERS_ROLE`]), in the order of
    /// [`values`](Self::values): the fields of the same names. While it runs, `records` and
    /// `bytes` count what was handed to the writer; at the end, what reached the file.
    pub const NAMES: [&'static str; 4] = ["records", "bytes", "overruns", "lost"];

    /// The counters in the order of [`NAMES`](Self::NAMES).
    pub fn values(&self) -> [u64; 4] {
        [self.records, self.bytes, self.overruns, self.lost]
    }
}

/// Creates the counters file of a recorder of `stream` into `file` under the bus root `root`
/// (role [`COUNTERS_ROLE`]), for [`record_stream_with_counters`]. Several recorders may
/// record one stream: while another live one holds `<stream>.record.stat`, this one's role
/// is `record-<pid>`.
pub fn record_counters(root: &Path, stream: &str, file: &Path) -> Result<CounterFile, RecordError> {
    let mut detail = format!("to {}", file.display());
    if detail.len() > MAX_DETAIL {
        // Keep the end of the path: the file name.
        let mut start = detail.len() - (MAX_DETAIL - 3);
        while !detail.is_char_boundary(start) {
            start += 1;
        }
        detail = format!("...{}", &detail[start..]);
    }
    match CounterFile::create(root, stream, COUNTERS_ROLE, &detail, &RecordStats::NAMES) {
        Err(CounterError::InUse { .. }) => {
            let role = format!("{COUNTERS_ROLE}-{}", std::process::id());
            Ok(CounterFile::create(
                root,
                stream,
                &role,
                &detail,
                &RecordStats::NAMES,
            )?)
        }
        other => Ok(other?),
    }
}

/// Records `sub` into `writer` until a stop condition of `options` or `stop` is met, then
/// flushes. Each record is copied out of the ring and checked against an overrun before it is
/// written, so a record the publisher overwrote mid-read is never recorded.
///
/// `stop` is looked at before every record (a busy or overrunning stream does not keep the
/// recorder from stopping) and at least every 50 ms while the stream is idle. An error of
/// the stream (a corrupt segment, say) ends the recording with [`RecordError::Stream`], after
/// what was read has been flushed to the file.
pub fn record_stream<W: Write>(
    sub: &mut Subscriber,
    writer: &mut RecordWriter<W>,
    path: &Path,
    options: &RecordOptions,
    stop: &AtomicBool,
) -> Result<RecordStats, RecordError> {
    record_stream_with_counters(sub, writer, path, options, stop, None)
}

/// [`record_stream`], publishing the recorder's counters ([`RecordStats::NAMES`]) to
/// `counters` (made by [`record_counters`]) while it runs: at most every millisecond, judged
/// by each record's timestamp and on idle turns; the returned counters at the end, when the
/// file is also marked finished (after an error: the counters of what reached the file).
pub fn record_stream_with_counters<W: Write>(
    sub: &mut Subscriber,
    writer: &mut RecordWriter<W>,
    path: &Path,
    options: &RecordOptions,
    stop: &AtomicBool,
    counters: Option<&CounterFile>,
) -> Result<RecordStats, RecordError> {
    let started = Instant::now();
    // When the counters were last published (Unix ns; any step of the wall clock, back or
    // forward, publishes).
    let mut published_ns = unix_ns();
    let live =
        |w: &RecordWriter<W>, overruns: u64, lost: u64| [w.records(), w.bytes(), overruns, lost];
    let wait = options.wait;
    let mut scratch: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut overruns = 0u64;
    let mut lost = 0u64;
    let reason = loop {
        if stop.load(Ordering::Relaxed) {
            break StopReason::Stopped;
        }
        if options
            .max_records
            .is_some_and(|max| writer.records() >= max)
        {
            break StopReason::Count;
        }
        let mut head = (0u64, 0u32);
        let polled = sub.poll(|m| {
            scratch.clear();
            scratch.extend_from_slice(m.payload());
            head = (m.seq(), m.msg_type());
        });
        let error = match polled {
            Ok(true) => {
                let (seq, msg_type) = head;
                let ts = unix_ns();
                if let Err(e) = writer.write(seq, msg_type, ts, &scratch) {
                    let error = writer.write_failed(path, e);
                    publish_flushed(counters, writer, overruns, lost);
                    return Err(error);
                }
                if let Some(c) = counters
                    && ts.abs_diff(published_ns) >= COUNTERS_EVERY_NS
                {
                    published_ns = ts;
                    c.publish(&live(writer, overruns, lost));
                }
                if options.until_end_of_session
                    && msg_type == ENVELOPE_MSG_TYPE
                    && mdbus_bus::schema::read_verified(&scratch)
                        .is_ok_and(|e| e.event_type() == mdbus_bus::schema::Event::EndOfSession)
                {
                    break StopReason::EndOfSession;
                }
                continue;
            }
            Ok(false) => {
                if let Some(c) = counters {
                    let now = unix_ns();
                    if now.abs_diff(published_ns) >= COUNTERS_EVERY_NS {
                        published_ns = now;
                        c.publish(&live(writer, overruns, lost));
                    }
                }
                if options.max_duration.is_some_and(|d| started.elapsed() >= d) {
                    break StopReason::Duration;
                }
                if let ProducerStatus::Dead { .. } = sub.producer_status(Duration::from_secs(5)) {
                    break StopReason::PublisherDead;
                }
                match sub.wait(&wait, Some(Duration::from_millis(50))) {
                    Ok(_) => continue,
                    // The next poll says so again and is handled there.
                    Err(
                        ReceiveError::Closed
                        | ReceiveError::NewEpoch { .. }
                        | ReceiveError::Overrun { .. },
                    ) => continue,
                    Err(e) => e,
                }
            }
            Err(ReceiveError::Overrun { lost: n, .. }) => {
                overruns += 1;
                lost = lost.saturating_add(n);
                continue;
            }
            Err(ReceiveError::Closed) => break StopReason::Closed,
            Err(ReceiveError::NewEpoch { .. }) => {
                if let Err(e) = sub.reopen() {
                    let _ = writer.flush();
                    publish_flushed(counters, writer, overruns, lost);
                    return Err(RecordError::Malformed {
                        path: path.to_owned(),
                        offset: writer.flushed_bytes(),
                        reason: format!("cannot follow the restarted publisher: {e}"),
                    });
                }
                continue;
            }
            Err(e) => e,
        };
        // The stream cannot be read on: keep what was read, then say why.
        let flushed = writer.flush();
        publish_flushed(counters, writer, overruns, lost);
        flushed.map_err(|e| writer.write_failed(path, e))?;
        return Err(RecordError::Stream {
            stream: sub.name().to_owned(),
            records: writer.flushed_records(),
            bytes: writer.flushed_bytes(),
            source: error,
        });
    };
    if let Err(e) = writer.flush() {
        publish_flushed(counters, writer, overruns, lost);
        return Err(writer.write_failed(path, e));
    }
    let stats = RecordStats {
        records: writer.flushed_records(),
        bytes: writer.flushed_bytes(),
        overruns,
        lost,
        stop: reason,
    };
    if let Some(c) = counters {
        c.publish(&stats.values());
        c.finish();
    }
    Ok(stats)
}

/// Publishes the counters of what reached the file (after an error).
fn publish_flushed<W: Write>(
    counters: Option<&CounterFile>,
    writer: &RecordWriter<W>,
    overruns: u64,
    lost: u64,
) {
    if let Some(c) = counters {
        c.publish(&[
            writer.flushed_records(),
            writer.flushed_bytes(),
            overruns,
            lost,
        ]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = RecordWriter::new(Vec::new(), "feed.x", 42).unwrap();
        for i in 0..5u64 {
            let payload = vec![i as u8; i as usize * 3];
            w.write(100 + i, 1, 1_000 + i, &payload).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let mut r = RecordReader::from_reader("mem", io::Cursor::new(bytes)).unwrap();
        assert_eq!(r.header().stream, "feed.x");
        assert_eq!(r.header().started_unix_ns, 42);
        assert_eq!(r.header().header_len % 8, 0);
        let mut seen = Vec::new();
        while let Some(rec) = r.next_record() {
            let rec = rec.unwrap();
            seen.push((rec.seq, rec.ts_ns, rec.payload.to_vec()));
        }
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[4], (104, 1_004, vec![4u8; 12]));
    }

    #[test]
    fn truncated_tail_names_its_offset_and_keeps_what_came_before() {
        let bytes = sample();
        for cut in 1..30 {
            let short = bytes[..bytes.len() - cut].to_vec();
            let mut r = RecordReader::from_reader("cut.rec", io::Cursor::new(short)).unwrap();
            let mut good = 0;
            let mut err = None;
            while let Some(rec) = r.next_record() {
                match rec {
                    Ok(_) => good += 1,
                    Err(e) => err = Some(e),
                }
            }
            // The last record (seq 104) is 24 + 12 = 36 bytes long.
            assert_eq!(good, 4, "cut {cut}");
            match err {
                Some(RecordError::Truncated {
                    offset,
                    needed,
                    available,
                    ..
                }) => {
                    assert_eq!(offset as usize, bytes.len() - 36, "cut {cut}");
                    assert_eq!(available as usize, 36 - cut);
                    assert!(needed > available);
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }

    /// Takes at most 7 bytes per write and `room` in all, then says the disk is full.
    struct Cramped {
        kept: Vec<u8>,
        room: usize,
    }

    impl Write for Cramped {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(7).min(self.room - self.kept.len());
            if n == 0 && !buf.is_empty() {
                return Err(io::ErrorKind::StorageFull.into());
            }
            self.kept.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_counts_exactly_what_reached_the_writer() {
        let whole = sample();
        for room in 0..whole.len() {
            let mut w = RecordWriter::new(
                Cramped {
                    kept: Vec::new(),
                    room,
                },
                "feed.x",
                42,
            )
            .unwrap();
            let mut result = Ok(());
            for i in 0..5u64 {
                let payload = vec![i as u8; i as usize * 3];
                result = result.and_then(|()| w.write(100 + i, 1, 1_000 + i, &payload));
            }
            let e = result.and_then(|()| w.flush()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::StorageFull);
            let kept = w.out.kept.clone();
            assert_eq!(kept, whole[..room], "room {room}");
            assert_eq!(w.flushed_bytes(), room as u64);
            // The complete records in what was kept, read back.
            let mut complete = 0;
            if let Ok(mut r) = RecordReader::from_reader("x", io::Cursor::new(kept)) {
                while let Some(Ok(_)) = r.next_record() {
                    complete += 1;
                }
            }
            assert_eq!(w.flushed_records(), complete as u64, "room {room}");
            let e = w.write_failed(Path::new("x"), e);
            assert!(
                e.to_string().contains(&format!(
                    "{complete} complete records ({room} bytes) reached the file, {} more",
                    5 - complete
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let e = RecordReader::from_reader("x", io::Cursor::new(b"hello world".to_vec()));
        assert!(matches!(e, Err(RecordError::BadMagic { .. })));
        let mut bytes = sample();
        bytes[8] = 9; // version 9
        let e = RecordReader::from_reader("x", io::Cursor::new(bytes)).unwrap_err();
        assert!(e.to_string().contains("version 9"), "{e}");
        let mut bytes = sample();
        let first = usize::from(u16::from_le_bytes([bytes[10], bytes[11]]));
        bytes[first + 3] = 0x7f; // a huge length
        let mut r = RecordReader::from_reader("x", io::Cursor::new(bytes)).unwrap();
        let e = r.next_record().unwrap().unwrap_err();
        assert!(
            matches!(e, RecordError::Malformed { offset, .. } if offset as usize == first),
            "{e}"
        );
        assert!(r.next_record().is_none());
    }
}
