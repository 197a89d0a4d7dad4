//! Capture-file readers: Nasdaq's length-prefixed ITCH files, classic pcap (microsecond and
//! nanosecond, either byte order) and pcapng, behind one entry point, [`open_capture`], that
//! tells the format from the first bytes.
//!
//! The pcap and pcapng containers are parsed by the `pcap-file` crate; the Ethernet (with
//! 802.1Q / QinQ tags), Linux cooked and raw-IP link layers, IPv4 and UDP are parsed here by
//! hand. The reader streams: it holds one buffer (grown only for a record larger than it) and
//! hands out records that borrow it, so reading a large file neither loads it whole nor
//! allocates per packet.
//!
//! What cannot be delivered is counted, never dropped silently: frames that are not IPv4, not
//! UDP, IPv4 fragments, cut-short or malformed frames and unsupported link types are skipped
//! and counted in [`CaptureStats`]. A final record cut short is reported as
//! [`CaptureError::Truncated`] naming the file and offset, after every record before it.
//! UDP and IPv4 checksums are not verified (capture files often hold offloaded checksums).
//!
//! ```no_run
//! use mdbus_codecs::capture::{Record, open_capture};
//!
//! let mut reader = open_capture("session.pcap")?;
//! while let Some(record) = reader.next_record() {
//!     match record? {
//!         Record::Udp(d) => println!("{} {} -> {}: {} bytes", d.ts_ns, d.src, d.dst, d.payload.len()),
//!         Record::Itch(m) => println!("ITCH message at {}: {} bytes", m.offset, m.message.len()),
//!     }
//! }
//! println!("{:?}", reader.stats());
//! # Ok::<(), mdbus_codecs::capture::CaptureError>(())
//! ```

mod net;

use std::fs::File;
use std::io::{self, Read, Seek};
use std::net::SocketAddrV4;
use std::ops::Range;
use std::path::{Path, PathBuf};

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, Endianness, TsResolution};

pub use net::LinkType;
use net::{Skip, parse_cut_frame, parse_frame};

/// The largest record accepted (a pcap record or pcapng block); a larger length field is taken
/// as a damaged file.
pub const MAX_RECORD_LEN: usize = 64 << 20;

const INITIAL_BUFFER: usize = 256 << 10;
const PCAP_HEADER_LEN: usize = 24;
const PCAP_RECORD_HEADER_LEN: usize = 16;
const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_EPB: usize = 28;
const PCAPNG_SPB: usize = 12;

/// The container format of a capture file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaptureFormat {
    /// Nasdaq's ITCH file format: each message preceded by a 2-byte big-endian length.
    ItchLengthPrefixed,
    /// Classic pcap.
    Pcap {
        /// Nanosecond timestamps (magic `a1b23c4d`) rather than microseconds.
        nanosecond: bool,
        /// Written big-endian.
        big_endian: bool,
    },
    /// pcapng.
    PcapNg,
}

/// One UDP datagram from a pcap or pcapng file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// The UDP payload.
    pub payload: &'a [u8],
    /// File offset of the record (pcap record header or pcapng block) it came from.
    pub offset: u64,
}

/// One message from a length-prefixed ITCH file (not decoded: see [`crate::nasdaq::itch::decode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItchRecord<'a> {
    /// File offset of the record's length prefix.
    pub offset: u64,
    /// The message bytes, without the length prefix.
    pub message: &'a [u8],
}

/// One record of a capture, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A UDP datagram (pcap, pcapng).
    Udp(UdpDatagram<'a>),
    /// An ITCH message (length-prefixed ITCH file).
    Itch(ItchRecord<'a>),
}

/// What the reader has seen and skipped so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Packet records read (pcap records, pcapng enhanced and simple packet blocks).
    pub packets: u64,
    /// UDP datagrams delivered.
    pub udp_datagrams: u64,
    /// ITCH messages delivered (length-prefixed ITCH files).
    pub itch_messages: u64,
    /// Frames skipped because they are not IPv4 (IPv6, ARP, ...).
    pub skipped_non_ipv4: u64,
    /// IPv4 packets skipped because they are not UDP.
    pub skipped_non_udp: u64,
    /// IPv4 fragments skipped (reassembly is not supported).
    pub ipv4_fragments: u64,
    /// Frames skipped because a header is damaged or cut short by the snap length.
    pub malformed_frames: u64,
    /// Frames skipped because their link type is not Ethernet, Linux cooked or raw IP.
    pub unsupported_link_type: u64,
    /// pcapng blocks that carry no packet (interface statistics, name resolution, ...).
    pub other_blocks: u64,
}

/// A capture file could not be read. Names the file and, where it applies, the offset.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Opening or reading the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The first bytes match no supported format (or there are none: an empty file).
    #[error("{}: {}", path.display(), unknown_format(first_bytes))]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// Up to the first four bytes.
        first_bytes: Vec<u8>,
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
    /// A record or header is damaged.
    #[error("{}: malformed record at offset {offset}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Offset of the record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// What [`CaptureError::UnknownFormat`] says of a file's first bytes.
fn unknown_format(first_bytes: &[u8]) -> String {
    if first_bytes.is_empty() {
        "empty file: no capture to read".to_owned()
    } else {
        format!("not a pcap, pcapng or length-prefixed ITCH file (first bytes {first_bytes:02x?})")
    }
}

enum Kind {
    Itch,
    Pcap {
        parser: PcapParser,
        link: LinkType,
        nanosecond: bool,
        big_endian: bool,
    },
    PcapNg {
        parser: Box<PcapNgParser>,
    },
}

/// What one step of the reader produced: owned descriptions, so the borrow of the buffer is
/// taken only when the record is handed out.
enum Step {
    End,
    Skip,
    Udp {
        ts_ns: u64,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: Range<usize>,
        offset: u64,
    },
    Itch {
        message: Range<usize>,
        offset: u64,
    },
}

/// An error and whether reading can go on after it.
struct Failure {
    error: CaptureError,
    fatal: bool,
}

/// Streaming reader over a capture file; see the [module docs](self).
pub struct CaptureReader {
    path: PathBuf,
    src: Box<dyn Read + Send>,
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    done: bool,
    kind: Kind,
    format: CaptureFormat,
    stats: CaptureStats,
}

impl std::fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("offset", &self.offset())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Opens a capture file, telling its format from its first bytes; a gzipped file (`.gz`) is
/// decompressed as it is read.
pub fn open_capture(path: impl AsRef<Path>) -> Result<CaptureReader, CaptureError> {
    let path = path.as_ref();
    let io = |source| CaptureError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut magic = [0u8; 2];
    let gzipped = matches!(file.read_exact(&mut magic), Ok(()) if magic == GZIP_MAGIC);
    file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
    if gzipped {
        let gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
        return CaptureReader::from_reader(path, gz);
    }
    CaptureReader::from_reader(path, file)
}

/// The first two bytes of a gzip file: a gzipped capture is read through a decompressor, and
/// the offsets it reports are offsets in the decompressed capture.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

fn read_u32(b: &[u8], big_endian: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big_endian {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

/// Converts a pcapng timestamp in interface units to nanoseconds (`if_tsresol`: bit 7 clear,
/// units of 10^-n s; set, units of 2^-n s).
fn pcapng_ts_ns(raw: u64, tsresol: u8, tsoffset_s: u64) -> u64 {
    let ns = if tsresol & 0x80 == 0 {
        let exp = u32::from(tsresol);
        if exp <= 9 {
            raw.saturating_mul(10u64.pow(9 - exp))
        } else {
            10u64.checked_pow(exp - 9).map_or(0, |d| raw / d)
        }
    } else {
        let exp = u32::from(tsresol & 0x7f);
        u64::try_from((u128::from(raw) * 1_000_000_000) >> exp).unwrap_or(u64::MAX)
    };
    ns.saturating_add(tsoffset_s.saturating_mul(1_000_000_000))
}

fn link_type(d: DataLink) -> LinkType {
    match d {
        DataLink::ETHERNET => LinkType::Ethernet,
        DataLink::RAW | DataLink::IPV4 => LinkType::RawIp,
        DataLink::LINUX_SLL => LinkType::LinuxSll,
        _ => LinkType::Other,
    }
}

impl CaptureReader {
    /// Reads a capture from any byte source (`path` names it in errors). The format is told
    /// from the first bytes.
    pub fn from_reader(
        path: impl Into<PathBuf>,
        reader: impl Read + Send + 'static,
    ) -> Result<Self, CaptureError> {
        let mut r = Self {
            path: path.into(),
            src: Box::new(reader),
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            base: 0,
            eof: false,
            done: false,
            kind: Kind::Itch,
            format: CaptureFormat::ItchLengthPrefixed,
            stats: CaptureStats::default(),
        };
        r.ensure(4)?;
        let head = &r.buf[..r.end.min(4)];
        let magic = (head.len() == 4).then(|| [head[0], head[1], head[2], head[3]]);
        match magic {
            Some(
                [0xd4, 0xc3, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0xc3, 0xd4]
                | [0x4d, 0x3c, 0xb2, 0xa1]
                | [0xa1, 0xb2, 0x3c, 0x4d],
            ) => r.open_pcap()?,
            Some([0x0a, 0x0d, 0x0d, 0x0a]) => r.open_pcapng()?,
            _ if head.len() >= 3
                && crate::nasdaq::itch::message_len(head[2])
                    == Some(usize::from(u16::from_be_bytes([head[0], head[1]]))) => {}
            _ => {
                return Err(CaptureError::UnknownFormat {
                    path: r.path,
                    first_bytes: head.to_vec(),
                });
            }
        }
        Ok(r)
    }

    fn open_pcap(&mut self) -> Result<(), CaptureError> {
        if !self.ensure(PCAP_HEADER_LEN)? {
            return Err(self.truncated(PCAP_HEADER_LEN));
        }
        let (_, parser) = PcapParser::new(&self.buf[..PCAP_HEADER_LEN])
            .map_err(|e| self.malformed(format!("pcap header: {e}")))?;
        let h = parser.header();
        let nanosecond = h.ts_resolution == TsResolution::NanoSecond;
        let big_endian = h.endianness == Endianness::Big;
        self.format = CaptureFormat::Pcap {
            nanosecond,
            big_endian,
        };
        self.kind = Kind::Pcap {
            parser,
            link: link_type(h.datalink),
            nanosecond,
            big_endian,
        };
        self.start = PCAP_HEADER_LEN;
        Ok(())
    }

    fn open_pcapng(&mut self) -> Result<(), CaptureError> {
        let len = self.peek_pcapng_len()?;
        let (_, parser) = PcapNgParser::new(&self.buf[self.start..self.start + len])
            .map_err(|e| self.malformed(format!("pcapng section header: {e}")))?;
        self.format = CaptureFormat::PcapNg;
        self.kind = Kind::PcapNg {
            parser: Box::new(parser),
        };
        self.start += len;
        Ok(())
    }

    /// The file's name as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container format.
    pub fn format(&self) -> CaptureFormat {
        self.format
    }

    /// Counters of what was read and skipped so far.
    pub fn stats(&self) -> CaptureStats {
        self.stats
    }

    /// File offset of the next record.
    pub fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    /// The next record in file order, `None` at the end of the file.
    ///
    /// An error is returned once and reading goes on after it where it can (a damaged pcapng
    /// block is skipped); after a truncated record, an I/O error or a damaged length field,
    /// the next call returns `None`.
    #[inline]
    pub fn next_record(&mut self) -> Option<Result<Record<'_>, CaptureError>> {
        // Fast path: an ITCH record already whole in the buffer (all but one in a buffer's
        // worth), handed out without the general framing below.
        if let Some((message, offset)) = self.buffered_itch() {
            return Some(Ok(Record::Itch(ItchRecord {
                offset,
                message: &self.buf[message],
            })));
        }
        self.next_record_slow()
    }

    /// The next length-prefixed ITCH record when it lies whole in the buffer (its range and
    /// file offset), consumed; `None` (nothing consumed) in every other case, which the
    /// general path then handles: another format, the end of the buffered bytes, the file's
    /// end or an error.
    #[inline(always)]
    fn buffered_itch(&mut self) -> Option<(Range<usize>, u64)> {
        if !matches!(self.kind, Kind::Itch) || self.done {
            return None;
        }
        let unread = self.buf.get(self.start..self.end)?;
        let &[hi, lo] = unread.first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if unread.len() < 2 + len {
            return None;
        }
        let at = self.start;
        let offset = self.offset();
        self.start += 2 + len;
        self.stats.itch_messages += 1;
        Some((at + 2..at + 2 + len, offset))
    }

    fn next_record_slow(&mut self) -> Option<Result<Record<'_>, CaptureError>> {
        loop {
            if self.done {
                return None;
            }
            match self.step() {
                Ok(Step::Skip) => continue,
                Ok(Step::End) => {
                    self.done = true;
                    return None;
                }
                Ok(Step::Udp {
                    ts_ns,
                    src,
                    dst,
                    payload,
                    offset,
                }) => {
                    let payload = &self.buf[payload];
                    return Some(Ok(Record::Udp(UdpDatagram {
                        ts_ns,
                        src,
                        dst,
                        payload,
                        offset,
                    })));
                }
                Ok(Step::Itch { message, offset }) => {
                    return Some(Ok(Record::Itch(ItchRecord {
                        offset,
                        message: &self.buf[message],
                    })));
                }
                Err(Failure { error, fatal }) => {
                    self.done |= fatal;
                    return Some(Err(error));
                }
            }
        }
    }

    /// The next UDP datagram, skipping ITCH records (there are none in pcap and pcapng).
    pub fn next_datagram(&mut self) -> Option<Result<UdpDatagram<'_>, CaptureError>> {
        loop {
            if self.done {
                return None;
            }
            match self.step() {
                Ok(Step::Skip | Step::Itch { .. }) => continue,
                Ok(Step::End) => {
                    self.done = true;
                    return None;
                }
                Ok(Step::Udp {
                    ts_ns,
                    src,
                    dst,
                    payload,
                    offset,
                }) => {
                    let payload = &self.buf[payload];
                    return Some(Ok(UdpDatagram {
                        ts_ns,
                        src,
                        dst,
                        payload,
                        offset,
                    }));
                }
                Err(Failure { error, fatal }) => {
                    self.done |= fatal;
                    return Some(Err(error));
                }
            }
        }
    }

    /// The part of a cut final pcap record's UDP payload that the file holds, once the
    /// reader has stopped at it with [`CaptureError::Truncated`]: a capture whose writer
    /// stopped mid-packet still holds that packet's first bytes (whole messages, for a
    /// protocol that frames them). `None` for any other end, for pcapng, and when the
    /// bytes held do not reach the UDP payload of an unfragmented IPv4/UDP frame.
    pub fn cut_datagram(&self) -> Option<UdpDatagram<'_>> {
        let Kind::Pcap {
            link,
            nanosecond,
            big_endian,
            ..
        } = self.kind
        else {
            return None;
        };
        if !(self.done && self.eof) {
            return None;
        }
        let rest = self.buf.get(self.start..self.end)?;
        let (hdr, frame) = rest.split_first_chunk::<PCAP_RECORD_HEADER_LEN>()?;
        let incl = read_u32(&hdr[8..12], big_endian) as usize;
        if incl <= frame.len() || incl > MAX_RECORD_LEN {
            // Not a record the file cut.
            return None;
        }
        let udp = parse_cut_frame(link, frame)?;
        let frac = u64::from(read_u32(&hdr[4..8], big_endian)) * if nanosecond { 1 } else { 1_000 };
        let ts_ns = u64::from(read_u32(&hdr[0..4], big_endian))
            .saturating_mul(1_000_000_000)
            .saturating_add(frac);
        Some(UdpDatagram {
            ts_ns,
            src: udp.src,
            dst: udp.dst,
            payload: frame.get(udp.payload)?,
            offset: self.offset(),
        })
    }

    fn truncated(&self, needed: usize) -> CaptureError {
        CaptureError::Truncated {
            path: self.path.clone(),
            offset: self.offset(),
            needed: needed as u64,
            available: (self.end - self.start) as u64,
        }
    }

    fn malformed(&self, reason: String) -> CaptureError {
        CaptureError::Malformed {
            path: self.path.clone(),
            offset: self.offset(),
            reason,
        }
    }

    /// Makes sure `buf[start..]` holds at least `n` bytes; `false` when the file ends first.
    /// The buffer grows only as data arrives, so a damaged length field cannot make it
    /// allocate more than the file holds.
    fn ensure(&mut self, n: usize) -> Result<bool, CaptureError> {
        while self.end - self.start < n {
            if self.eof {
                return Ok(false);
            }
            if self.end == self.buf.len() {
                if self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.base += self.start as u64;
                    self.end -= self.start;
                    self.start = 0;
                } else {
                    let grown = (self.buf.len() * 2).min(n).max(self.buf.len() + 1);
                    self.buf.resize(grown, 0);
                }
            }
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CaptureError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(true)
    }

    /// Ensures a whole record of `n` bytes is buffered, or reports the file's end inside it.
    fn need(&mut self, n: usize) -> Result<(), Failure> {
        match self.ensure(n) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failure {
                error: self.truncated(n),
                fatal: true,
            }),
            Err(error) => Err(Failure { error, fatal: true }),
        }
    }

    /// `true` at a clean end of file (no bytes left); errors only on I/O failure.
    fn at_end(&mut self) -> Result<bool, Failure> {
        match self.ensure(1) {
            Ok(more) => Ok(!more),
            Err(error) => Err(Failure { error, fatal: true }),
        }
    }

    /// Length of the pcapng block at `start`, fully buffered.
    fn peek_pcapng_len(&mut self) -> Result<usize, CaptureError> {
        if !self.ensure(12)? {
            return Err(self.truncated(12));
        }
        let b = &self.buf[self.start..self.start + 12];
        let big_endian = if read_u32(b, true) == PCAPNG_SHB {
            match [b[8], b[9], b[10], b[11]] {
                [0x1a, 0x2b, 0x3c, 0x4d] => true,
                [0x4d, 0x3c, 0x2b, 0x1a] => false,
                _ => {
                    return Err(
                        self.malformed("pcapng section header: bad byte-order magic".into())
                    );
                }
            }
        } else {
            match &self.kind {
                Kind::PcapNg { parser } => parser.section().endianness == Endianness::Big,
                _ => true,
            }
        };
        let len = read_u32(&b[4..8], big_endian) as usize;
        if len < 12 || !len.is_multiple_of(4) || len > MAX_RECORD_LEN {
            return Err(self.malformed(format!("pcapng block length {len}")));
        }
        if !self.ensure(len)? {
            return Err(self.truncated(len));
        }
        Ok(len)
    }

    fn step(&mut self) -> Result<Step, Failure> {
        if self.at_end()? {
            return Ok(Step::End);
        }
        let offset = self.offset();
        // Framing: find the record's length and buffer it whole. `need` may move the unread
        // bytes to the front of the buffer, so `self.start` is read again after it.
        let len = match self.kind {
            Kind::Itch => {
                self.need(2)?;
                let at = self.start;
                let len = usize::from(u16::from_be_bytes([self.buf[at], self.buf[at + 1]]));
                self.need(2 + len)?;
                let at = self.start;
                self.start += 2 + len;
                self.stats.itch_messages += 1;
                return Ok(Step::Itch {
                    message: at + 2..at + 2 + len,
                    offset,
                });
            }
            Kind::Pcap { big_endian, .. } => {
                self.need(PCAP_RECORD_HEADER_LEN)?;
                let at = self.start;
                let incl = read_u32(&self.buf[at + 8..at + 12], big_endian) as usize;
                if incl > MAX_RECORD_LEN {
                    let error = self.malformed(format!("pcap record length {incl}"));
                    return Err(Failure { error, fatal: true });
                }
                self.need(PCAP_RECORD_HEADER_LEN + incl)?;
                PCAP_RECORD_HEADER_LEN + incl
            }
            Kind::PcapNg { .. } => self
                .peek_pcapng_len()
                .map_err(|error| Failure { error, fatal: true })?,
        };
        let at = self.start;
        self.start += len;
        let record = &self.buf[at..at + len];
        let bad = |what: &str, e: &dyn std::fmt::Display| Failure {
            error: CaptureError::Malformed {
                path: self.path.clone(),
                offset,
                reason: format!("{what}: {e}"),
            },
            fatal: false,
        };
        // Parsing: the container's own fields, by pcap-file.
        let (link, frame, ts_ns) = match &mut self.kind {
            Kind::Itch => return Ok(Step::Skip), // handled above
            Kind::Pcap {
                parser,
                link,
                nanosecond,
                ..
            } => {
                let raw = match parser.next_raw_packet(record) {
                    Ok((_, raw)) => raw,
                    Err(e) => return Err(bad("pcap record", &e)),
                };
                let frac = u64::from(raw.ts_frac) * if *nanosecond { 1 } else { 1_000 };
                let ts_ns = u64::from(raw.ts_sec) * 1_000_000_000 + frac;
                let data = at + PCAP_RECORD_HEADER_LEN;
                (*link, data..data + raw.data.len(), ts_ns)
            }
            Kind::PcapNg { parser } => {
                let block = match parser.next_block(record) {
                    Ok((_, block)) => block,
                    Err(e) => return Err(bad("pcapng block", &e)),
                };
                match block {
                    Block::EnhancedPacket(epb) => {
                        let Some(idb) = parser.packet_interface(&epb) else {
                            return Err(bad("pcapng packet", &"names an unknown interface"));
                        };
                        let (mut tsresol, mut tsoffset) = (6, 0);
                        for opt in &idb.options {
                            match opt {
                                InterfaceDescriptionOption::IfTsResol(r) => tsresol = *r,
                                InterfaceDescriptionOption::IfTsOffset(o) => tsoffset = *o,
                                _ => {}
                            }
                        }
                        // pcap-file hands the raw timestamp units over as nanoseconds.
                        let raw = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                        let ts = pcapng_ts_ns(raw, tsresol, tsoffset);
                        let data = at + PCAPNG_EPB;
                        (link_type(idb.linktype), data..data + epb.data.len(), ts)
                    }
                    Block::SimplePacket(spb) => {
                        let link = parser
                            .interfaces()
                            .first()
                            .map_or(LinkType::Other, |i| link_type(i.linktype));
                        let data = at + PCAPNG_SPB;
                        (link, data..data + spb.data.len(), 0)
                    }
                    Block::SectionHeader(_) | Block::InterfaceDescription(_) => {
                        return Ok(Step::Skip);
                    }
                    _ => {
                        self.stats.other_blocks += 1;
                        return Ok(Step::Skip);
                    }
                }
            }
        };
        self.stats.packets += 1;
        Ok(self.deliver(link, frame, ts_ns, offset))
    }

    fn deliver(&mut self, link: LinkType, frame: Range<usize>, ts_ns: u64, offset: u64) -> Step {
        let Some(bytes) = self.buf.get(frame.clone()) else {
            self.stats.malformed_frames += 1;
            return Step::Skip;
        };
        match parse_frame(link, bytes) {
            Ok(udp) => {
                self.stats.udp_datagrams += 1;
                let payload = frame.start + udp.payload.start..frame.start + udp.payload.end;
                Step::Udp {
                    ts_ns,
                    src: udp.src,
                    dst: udp.dst,
                    payload,
                    offset,
                }
            }
            Err(skip) => {
                let s = &mut self.stats;
                *match skip {
                    Skip::NonIpv4 => &mut s.skipped_non_ipv4,
                    Skip::NonUdp => &mut s.skipped_non_udp,
                    Skip::Fragment => &mut s.ipv4_fragments,
                    Skip::Malformed => &mut s.malformed_frames,
                    Skip::UnsupportedLinkType => &mut s.unsupported_link_type,
                } += 1;
                Step::Skip
            }
        }
    }
}

#[cfg(test)]
mod tests;
