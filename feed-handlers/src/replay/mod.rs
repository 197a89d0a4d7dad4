//! Replay of captured sessions through the same path as live data.
//!
//! A [`Replayer`] reads one source and publishes it on one bus stream:
//!
//! * a **length-prefixed ITCH file** (Nasdaq's format): each message goes through the
//!   [`FeedPipeline`] (decode -> normalize -> publish) as source message `n`, its 1-based
//!   position in the file;
//! * a **pcap or pcapng of MoldUDP64 datagrams**: each datagram (optionally only those sent to
//!   one multicast group and/or port) goes through the MoldUDP64 [`Sequencer`] (no
//!   retransmission server: a sequence jump is declared lost at once) and then the
//!   [`FeedPipeline`]. Jumps in the sequence numbers are **gaps**: the pipeline publishes a
//!   `GapNotice` in place and the report counts them; nothing stops. Messages before the
//!   first packet of a capture that starts mid-session are a late join, reported apart.
//!   A **sanitized** capture (every packet numbered 0, its session and sequence numbers
//!   zeroed: no packet has sequence number 0) is replayed in capture order, its messages
//!   numbered from 1, and [`ReplayReport::unsequenced`] says why; packets numbered 0 in a
//!   capture that has real sequence numbers are counted and not replayed;
//! * a **pcap or pcapng of IEX-TP segments** (TOPS, DEEP, DEEP+): each datagram goes through
//!   the IEX-TP [`Tracker`] and each message it delivers through a `FeedPipeline<Iex>`. Its
//!   gaps are published as `GapNotice`s; a sequence that restarts at 1 within the session is
//!   a restart (a warning and [`ReplayReport::restarts`]), not a gap; a segment cut short
//!   (the capture's last record, handed out by [`CaptureReader::cut_datagram`]) has its
//!   whole messages replayed, the rest published as a gap and the cut reported with its
//!   offset. Which protocol a pcap carries is judged by its first [`DETECT_DATAGRAMS`]
//!   datagrams ([`detect`]) unless [`ReplayOptions::protocol`] says; a capture of neither is
//!   refused ([`ReplayError::NotDetected`]), saying what it holds. A capture read with
//!   [`Replayer::from_reader`] is not judged: it is MoldUDP64 unless the option says;
//! * an **mdbus recording** ([`crate::record`], told by its magic): its records are
//!   republished byte for byte (envelopes keep their headers), with a `GapNotice` where the
//!   recorder lost records.
//!
//! Captures are decoded, filtered and normalized through the [`Venue`] seam (Nasdaq ITCH 5.0
//! over MoldUDP64, IEX over IEX-TP). An IEX capture's `--book-summary` is an [`IexSummary`]
//! ([`ReplayReport::summary_json`] prints either kind). A recording's envelopes are filtered by their `instrument`; those
//! recorded before envelopes named a venue (venue `Unknown`: Nasdaq ITCH) by their stock
//! locate.
//!
//! Every envelope of an ITCH source carries the `Replayed` flag, its source sequence number,
//! its exchange timestamp and a receive timestamp: by default the moment the replayer decoded
//! it ([`Stamp::Now`], a TSC reading anchored to the Unix epoch, see [`StampClock`]), or the
//! capture's own timestamp ([`Stamp::Source`]). At [`Speed::Max`] one clock reading stamps
//! [`STAMP_EVERY`] messages in a row, as a live feed handler stamps every message of a
//! datagram with its arrival: a stamp is then at most that many messages early, never late.
//! The stream ends with an `EndOfSession` event (the source's, or one the replayer adds when
//! the file ends), and the publisher then closes the stream.
//!
//! Options: the [`Speed`] (as fast as possible, a multiple of the recorded pace, or a fixed
//! rate), a window of exchange time ([`ReplayOptions::from`], [`ReplayOptions::to`]; the day's
//! stock directory messages are always replayed so subscribers can name instruments), a set of
//! symbols (resolved to instrument ids by the venue's directory messages, for Nasdaq stock
//! directory messages and their stock locates; market-wide messages, instrument 0, always
//! pass), and an end-of-replay [`BookSummary`] computed from exactly the
//! messages published.
//!
//! With [`Replayer::with_book_service`] (Nasdaq ITCH sources) the replay's thread also builds
//! the books: each message, once published, is handed decoded to a
//! [`BookService`], which publishes on its streams what it
//! would publish reading the replay's stream (gap notices and the end of the session
//! included), and [`Replayer::run_with_book_service`] hands it back at the end.
//!
//! Bad input never panics: a message that does not decode is published as a lost one-message
//! gap and counted; a file that ends inside a record is reported with the record's offset
//! ([`ReplayReport::truncated`]) after everything before it was published. Whatever is not
//! published is counted in the report: duplicates, packets after the end of the session, of
//! other sessions, numbered 0, damaged or numbered past the largest sequence number, and
//! capture records the reader skipped. Sequence arithmetic saturates, never wraps.
//!
//! With [`Replayer::publish_counters`] the report's counters ([`ReplayReport::NAMES`]) are in
//! the bus root while the replay runs (role [`COUNTERS_ROLE`], for `mdbus stat`): published
//! at most every millisecond, the clock looked at only every [`COUNTERS_CHECK_EVERY`] records
//! at full speed (every record when paced: the pacer reads the clock for each anyway), and
//! once more, whole, at the end.

mod detect;
mod pace;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use mdbus_bus::schema::{self as fb, Encoder, EnvelopeFlags, HeaderFields};
use mdbus_bus::{Bus, BusError, PublishError, Publisher, StreamConfig};
use mdbus_codecs::capture::{
    self, CaptureError, CaptureFormat, CaptureReader, CaptureStats, Record,
};
use mdbus_codecs::iex::tp::{Notice, Rejected, Segment, Tracker};
use mdbus_codecs::moldudp64::{END_OF_SESSION_COUNT, HEARTBEAT_COUNT, Packet, Session};
use mdbus_codecs::nasdaq::itch::Message;
use mdbus_codecs::sequencer::{
    ConfigError, Deliver, Event as SeqEvent, LateJoin, Line, Sequencer, SequencerConfig,
};
use mdbus_shm::counters::{CounterError, CounterFile, MAX_DETAIL};
use serde::Serialize;

pub use detect::{
    DETECT_DATAGRAMS, NotDetected, ReplayProtocol, detect, iex_protocol, is_moldudp64,
};
pub use pace::{BadSpeed, BadTime, Pacer, Speed, StampClock, TimeOfDay};

use crate::book::{
    BookConfig, BookConfigError, BookEvent, BookSummary, EnvelopeBooks, GapPolicy, IexBooks,
    IexSummary, OrderEvent,
};
use crate::bookstream::BookService;
use crate::pipeline::{
    FeedPipeline, IDLE_WORK_EVERY, Idle, IdleWork, PipelineError, PipelineSetupError,
};
use crate::record::{RecordError, RecordReader, is_recording};
use crate::venue::{self, Iex, Nasdaq, Venue};

/// Most warnings kept in a report (the rest are counted).
const MAX_WARNINGS: usize = 20;
/// Records between two progress calls.
const PROGRESS_EVERY: u64 = 16_384;

/// Role of a replay's counters file (`<root>/<stream>.replay.stat`).
pub const COUNTERS_ROLE: &str = "replay";
/// Records between two looks at the clock for the counters, at full speed.
pub const COUNTERS_CHECK_EVERY: u32 = 1024;
/// Counters are published at most this often (ns).
const COUNTERS_EVERY_NS: u64 = 1_000_000;

/// Messages stamped with one clock reading at [`Speed::Max`] ([`Stamp::Now`]). A reading of
/// the TSC costs about as much as decoding a message (15 ns on a virtual host, where it was
/// 15 % of the feed handler's time at full speed); paced replays read the clock for every
/// message. The clock is read again after the pipeline paused (it waited for a subscriber, or
/// ran its idle work).
pub const STAMP_EVERY: u32 = 16;

/// Where the receive timestamp of replayed envelopes comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Stamp {
    /// When the replayer decoded the message (as a live feed handler stamps arrival; at
    /// [`Speed::Max`] one reading stamps [`STAMP_EVERY`] messages).
    #[default]
    Now,
    /// The capture's timestamp of the datagram (pcap, pcapng); ITCH files have none and get
    /// [`Stamp::Now`].
    Source,
}

/// What to replay and how.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayOptions {
    /// How fast.
    pub speed: Speed,
    /// Replay messages stamped at or after this exchange time only.
    pub from: Option<TimeOfDay>,
    /// Stop at the first message stamped after this exchange time.
    pub to: Option<TimeOfDay>,
    /// Replay only these symbols (empty: all).
    pub symbols: Vec<String>,
    /// pcap/pcapng: only datagrams sent to this IPv4 address (multicast group).
    pub group: Option<Ipv4Addr>,
    /// pcap/pcapng: only datagrams sent to this UDP port.
    pub port: Option<u16>,
    /// pcap/pcapng: the widest jump of MoldUDP64 sequence numbers taken at face value (a
    /// gap); a packet reaching further is held off until another packet near it corroborates
    /// it ([`SequencerConfig::max_gap`]). [`REPLAY_MAX_GAP`] by default.
    pub max_gap: u64,
    /// Receive timestamps.
    pub stamp: Stamp,
    /// Build books from the published messages and return a [`BookSummary`].
    pub book_summary: Option<BookConfig>,
    /// Paced replays: spin while early instead of yielding the core (for a replay thread
    /// alone on its core; see [`Pacer::spin_only`]).
    pub spin_pacing: bool,
    /// The protocol of a pcap or pcapng capture; `None` judges it by the first
    /// [`DETECT_DATAGRAMS`] datagrams (see [`detect`]).
    pub protocol: Option<ReplayProtocol>,
}

impl Default for ReplayOptions {
    /// Everything, at full speed, stamped now, no summary.
    fn default() -> Self {
        ReplayOptions {
            speed: Speed::Max,
            from: None,
            to: None,
            symbols: Vec::new(),
            group: None,
            port: None,
            max_gap: REPLAY_MAX_GAP,
            stamp: Stamp::Now,
            book_summary: None,
            spin_pacing: false,
            protocol: None,
        }
    }
}

/// The widest sequence jump a capture replay takes at face value by default: 10^9 messages,
/// more than a whole day of the busiest feed, so the jumps of a capture that kept only some
/// packets are gaps, while a forged sequence number far beyond (10^12, `u64::MAX`) is not.
pub const REPLAY_MAX_GAP: u64 = 1_000_000_000;

/// Books sized for replays of a file, a whole day's included: up to 10 M live orders (room
/// for 1 Mi made at once, the rest in steps as the session needs it, counted in
/// `order_table_growths`), 12,000 instruments, 64 levels reserved per side (about 95 MB at
/// first: see [`BookConfig::memory_bytes`] and [`BookConfig::max_memory_bytes`]).
pub fn replay_book_config() -> BookConfig {
    BookConfig {
        max_orders: 10_000_000,
        max_instruments: 12_000,
        levels_per_side_hint: 64,
    }
}

/// The ring a replay publishes into by default: broadcast (a replay never waits for
/// subscribers), 16 MiB, envelopes of at most 512 bytes.
pub fn replay_ring() -> StreamConfig {
    StreamConfig {
        capacity: 16 << 20,
        max_msg_len: 512,
        ..StreamConfig::default()
    }
}

/// Where a replay reads from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A file: ITCH, pcap, pcapng or an mdbus recording.
    Path(PathBuf),
    /// Bytes in memory (an ITCH file, pcap or pcapng), named `name` in reports and errors.
    Bytes {
        /// Name for messages.
        name: String,
        /// The bytes.
        bytes: &'static [u8],
    },
}

impl Source {
    /// The source's name as reported.
    pub fn name(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Bytes { name, .. } => name.clone(),
        }
    }
}

/// A replay that cannot start, or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture could not be opened or read.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The recording could not be opened or read.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The output stream could not be made.
    #[error(transparent)]
    Pipeline(#[from] PipelineSetupError),
    /// The output stream could not be made.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The summary's books could not be made.
    #[error(transparent)]
    Book(#[from] BookConfigError),
    /// The sequencer could not be made.
    #[error("sequencer: {0}")]
    Sequencer(#[from] ConfigError),
    /// An option is not usable.
    #[error("{0}")]
    Option(String),
    /// The capture holds no packet of a protocol the replay reads.
    #[error("{source_name}: {found}")]
    NotDetected {
        /// The capture.
        source_name: String,
        /// What it holds.
        found: NotDetected,
    },
    /// The counters file could not be created.
    #[error(transparent)]
    Counters(#[from] CounterError),
    /// The output stream refused a message for good (too large for its ring).
    #[error("stream {stream:?}: publishing source message {seq}: {error}")]
    Publish {
        /// The stream.
        stream: String,
        /// Source sequence number.
        seq: u64,
        /// What the ring said.
        error: PublishError,
    },
}

/// Where a file ended inside a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Truncation {
    /// File offset of the incomplete record.
    pub offset: u64,
    /// The full error message.
    pub detail: String,
}

/// What a replay did.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    /// The source, as named.
    pub source: String,
    /// `itch`, `pcap`, `pcapng` or `recording`.
    pub format: &'static str,
    /// The protocol replayed ([`ReplayProtocol`] name; `itch` for recordings too).
    pub protocol: &'static str,
    /// The output stream.
    pub stream: String,
    /// The speed, as given.
    pub speed: String,
    /// Records read from the file: ITCH messages, UDP datagrams or recorded records.
    pub records: u64,
    /// Source messages handed on by the reader or the sequencer, before filters.
    pub messages: u64,
    /// Messages published (after the window and symbol filters).
    pub published: u64,
    /// Messages dropped by the window and symbol filters.
    pub filtered: u64,
    /// Datagrams skipped by the group/port filter.
    pub datagrams_filtered: u64,
    /// Gaps: sequence jumps declared lost (published as gap notices).
    pub gaps: u64,
    /// Source messages in those gaps.
    pub gap_messages: u64,
    /// A capture that starts mid-session: the first sequence number replayed.
    pub late_join_first_seq: Option<u64>,
    /// Messages that did not decode (published as lost one-message gaps).
    pub decode_errors: u64,
    /// Recordings: envelopes that failed verification (skipped).
    pub invalid_envelopes: u64,
    /// MoldUDP64 packets of another session than the first (use `group`/`port` to choose);
    /// not replayed.
    pub foreign_session_packets: u64,
    /// Messages in those packets.
    pub foreign_session_messages: u64,
    /// MoldUDP64 packets too short, with a damaged message block (the messages from it on
    /// are published as a lost gap), or numbered past the largest sequence number (not
    /// replayed).
    pub malformed_packets: u64,
    /// MoldUDP64 messages received again (the other line's copy, a repeat, one of a range
    /// already declared lost); not replayed.
    pub duplicates: u64,
    /// MoldUDP64 messages in packets after the end of the session; not replayed.
    pub after_end_messages: u64,
    /// MoldUDP64 packets numbered 0, a sequence number no packet has (sequence numbers start
    /// at 1): the packets of a sanitized capture, whose session and sequence numbers were
    /// zeroed. Replayed in capture order when the capture holds nothing else
    /// ([`unsequenced`](Self::unsequenced)), otherwise not replayed.
    pub zero_sequence_packets: u64,
    /// Messages in those packets.
    pub zero_sequence_messages: u64,
    /// The replay was interrupted (a signal) before its source ended.
    pub interrupted: bool,
    /// Why the messages were replayed in capture order instead of by sequence number (with
    /// no gap or duplicate detection); `None` when they were sequenced.
    pub unsequenced: Option<String>,
    /// Capture order: packets with a real sequence number met after the capture was found
    /// to be sanitized; not replayed.
    pub sequenced_packets_skipped: u64,
    /// Messages in those packets.
    pub sequenced_messages_skipped: u64,
    /// MoldUDP64 packets reaching more than [`ReplayOptions::max_gap`] beyond the highest
    /// sequence number known, held off until corroborated.
    pub implausible_jumps: u64,
    /// Messages in those packets: not replayed (after a corroboration they are part of a
    /// gap).
    pub implausible_messages: u64,
    /// Implausible jumps another packet near them corroborated (then taken as gaps).
    pub jumps_corroborated: u64,
    /// End-of-session packets below the highest sequence number known, ignored.
    pub forged_end_of_session: u64,
    /// First packets of the capture replaced, before any of their messages was published,
    /// by a packet far from them (more than [`ReplayOptions::max_gap`]).
    pub anchors_replaced: u64,
    /// Messages of those packets: not replayed.
    pub replaced_anchor_messages: u64,
    /// Capture records the reader skipped: frames that are not IPv4 or UDP, IPv4 fragments,
    /// malformed frames and records, unsupported link types (see the warnings).
    pub skipped_frames: u64,
    /// Publish attempts a lossless subscriber held back (each retried).
    pub back_pressured: u64,
    /// The file ended inside a record.
    pub truncated: Option<Truncation>,
    /// Non-fatal problems met (the first few).
    pub warnings: Vec<String>,
    /// Warnings met beyond those kept.
    pub warnings_omitted: u64,
    /// Symbols asked for that no stock directory message named.
    pub unresolved_symbols: Vec<String>,
    /// Wall time of the replay, ns.
    pub elapsed_ns: u64,
    /// Paced replays: the latest a message was released behind its schedule, ns.
    pub max_behind_ns: u64,
    /// IEX-TP: times the sequence numbers restarted at 1 within the session (not gaps).
    pub restarts: u64,
    /// IEX-TP: segments cut short (the capture's last, or damaged ones); their whole
    /// messages were replayed, the rest is counted in `gap_messages`.
    pub cut_segments: u64,
    /// IEX-TP: segments that arrived after later ones and were not replayed (duplicates
    /// of what was delivered or lost).
    pub out_of_order: u64,
    /// IEX-TP: segments of another message protocol or channel than the one followed.
    pub foreign_protocol_packets: u64,
    /// The books built from the published messages, when asked for.
    #[serde(skip)]
    pub summary: Option<BookSummary>,
    /// The IEX books, when asked for on an IEX capture.
    #[serde(skip)]
    pub iex_summary: Option<IexSummary>,
}

impl ReplayReport {
    /// Names of the counters a replay publishes (role [`COUNTERS_ROLE`]), in the order of
    /// [`values`](Self::values): the report's fields of the same names (`late_join_first_seq`
    /// 0 for none; `unsequenced` and `truncated` 1 when set; `warnings` counts those kept and
    /// omitted).
    pub const NAMES: [&'static str; 37] = [
        "records",
        "messages",
        "published",
        "filtered",
        "datagrams_filtered",
        "gaps",
        "gap_messages",
        "late_join_first_seq",
        "decode_errors",
        "invalid_envelopes",
        "foreign_session_packets",
        "foreign_session_messages",
        "malformed_packets",
        "duplicates",
        "after_end_messages",
        "zero_sequence_packets",
        "zero_sequence_messages",
        "unsequenced",
        "sequenced_packets_skipped",
        "sequenced_messages_skipped",
        "implausible_jumps",
        "implausible_messages",
        "jumps_corroborated",
        "forged_end_of_session",
        "anchors_replaced",
        "replaced_anchor_messages",
        "skipped_frames",
        "back_pressured",
        "truncated",
        "warnings",
        "unresolved_symbols",
        "elapsed_ns",
        "max_behind_ns",
        "restarts",
        "cut_segments",
        "out_of_order",
        "foreign_protocol_packets",
    ];

    /// The counters in the order of [`NAMES`](Self::NAMES).
    pub fn values(&self) -> [u64; 37] {
        [
            self.records,
            self.messages,
            self.published,
            self.filtered,
            self.datagrams_filtered,
            self.gaps,
            self.gap_messages,
            self.late_join_first_seq.unwrap_or(0),
            self.decode_errors,
            self.invalid_envelopes,
            self.foreign_session_packets,
            self.foreign_session_messages,
            self.malformed_packets,
            self.duplicates,
            self.after_end_messages,
            self.zero_sequence_packets,
            self.zero_sequence_messages,
            u64::from(self.unsequenced.is_some()),
            self.sequenced_packets_skipped,
            self.sequenced_messages_skipped,
            self.implausible_jumps,
            self.implausible_messages,
            self.jumps_corroborated,
            self.forged_end_of_session,
            self.anchors_replaced,
            self.replaced_anchor_messages,
            self.skipped_frames,
            self.back_pressured,
            u64::from(self.truncated.is_some()),
            (self.warnings.len() as u64).saturating_add(self.warnings_omitted),
            self.unresolved_symbols.len() as u64,
            self.elapsed_ns,
            self.max_behind_ns,
            self.restarts,
            self.cut_segments,
            self.out_of_order,
            self.foreign_protocol_packets,
        ]
    }

    /// The `--book-summary` JSON: the IEX summary for an IEX capture, the order book
    /// summary otherwise; `None` when not asked for.
    pub fn summary_json(&self) -> Option<String> {
        match (&self.iex_summary, &self.summary) {
            (Some(s), _) => Some(s.to_json()),
            (None, Some(s)) => Some(s.to_json()),
            (None, None) => None,
        }
    }

    /// Messages published per second of wall time.
    pub fn rate(&self) -> f64 {
        if self.elapsed_ns == 0 {
            0.0
        } else {
            self.published as f64 * 1e9 / self.elapsed_ns as f64
        }
    }
}

/// Progress of a running replay, handed to the progress callback every few thousand records
/// and at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the source read so far.
    pub offset: u64,
    /// Messages published so far.
    pub published: u64,
}

/// Instrument ids below this are kept in the filter's bitmap; larger ones in a list.
const FILTER_BITMAP_IDS: u32 = 1 << 16;

/// Resolves symbols to instrument ids from directory messages.
#[derive(Debug)]
struct SymbolFilter {
    wanted: Vec<([u8; 8], String, bool)>,
    /// Allowed ids below [`FILTER_BITMAP_IDS`], one bit each.
    allowed: Box<[u64]>,
    /// Allowed ids from [`FILTER_BITMAP_IDS`] up (at most one per listing of a wanted
    /// symbol).
    allowed_large: Vec<u32>,
}

impl SymbolFilter {
    fn new(symbols: &[String]) -> Result<Option<SymbolFilter>, ReplayError> {
        if symbols.is_empty() {
            return Ok(None);
        }
        let mut wanted = Vec::new();
        for s in symbols {
            let t = s.trim().to_ascii_uppercase();
            if t.is_empty() || t.len() > 8 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ReplayError::Option(format!(
                    "bad symbol {s:?}: 1 to 8 printable ASCII characters"
                )));
            }
            let mut padded = *b"        ";
            padded[..t.len()].copy_from_slice(t.as_bytes());
            wanted.push((padded, t, false));
        }
        Ok(Some(SymbolFilter {
            wanted,
            allowed: vec![0u64; FILTER_BITMAP_IDS as usize / 64].into_boxed_slice(),
            allowed_large: Vec::new(),
        }))
    }

    /// A directory message listed `stock` as instrument `id`.
    #[inline]
    fn directory(&mut self, id: u32, stock: &[u8; 8]) {
        for w in &mut self.wanted {
            if &w.0 == stock {
                w.2 = true;
                if id < FILTER_BITMAP_IDS {
                    self.allowed[(id / 64) as usize] |= 1 << (id % 64);
                } else if !self.allowed_large.contains(&id) {
                    self.allowed_large.push(id);
                }
            }
        }
    }

    #[inline]
    fn allows(&self, id: u32) -> bool {
        if id < FILTER_BITMAP_IDS {
            id == 0 || self.allowed[(id / 64) as usize] & (1 << (id % 64)) != 0
        } else {
            self.allowed_large.contains(&id)
        }
    }

    fn unresolved(&self) -> Vec<String> {
        self.wanted
            .iter()
            .filter(|w| !w.2)
            .map(|w| w.1.clone())
            .collect()
    }
}

/// What the filters decided for one message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Publish,
    /// Publish, but outside the window (a stock directory message): not paced.
    PublishUnpaced,
    Skip,
    /// Past the end of the window: stop reading.
    Stop,
}

/// The filters, books and counters shared by every source kind.
#[derive(Debug)]
struct Core {
    options: ReplayOptions,
    symbols: Option<SymbolFilter>,
    pacer: Pacer,
    clock: StampClock,
    stamps: Stamps,
    book: Option<EnvelopeBooks>,
    /// The books of an IEX capture's `--book-summary`.
    iex_book: Option<IexBooks>,
    /// A book service fed on this thread ([`Replayer::with_book_service`]): every message,
    /// gap notice and end of session published, decoded.
    service: Option<Box<BookService>>,
    report: ReplayReport,
    stop: bool,
    ended: bool,
    /// Source sequence number after the last message handled.
    next_seq: u64,
    /// Where the counters are published, if they are.
    counters: Option<Counters>,
    /// With `--from`/`--to`: the earliest and latest exchange times of the source messages
    /// looked at, to say where the file's messages lie when none fell in the range.
    seen_ts: Option<(u64, u64)>,
    /// Source messages inside the time range.
    in_range: u64,
}

/// A replay's counters file and when it was last published to.
#[derive(Debug)]
struct Counters {
    file: CounterFile,
    /// Records between two looks at the clock.
    every: u32,
    /// Records left before the next look.
    left: u32,
    /// When the counters were last published (the stamp clock's Unix ns).
    last_ns: u64,
    /// When the replay started (the stamp clock's Unix ns), for `elapsed_ns`.
    started_ns: u64,
}

impl Core {
    /// Counts one record toward the next look at the clock for the counters: a branch when
    /// they are off, a decrement when on.
    #[inline(always)]
    fn tick(&mut self) {
        if let Some(c) = &mut self.counters {
            c.left = c.left.saturating_sub(1);
            if c.left == 0 {
                self.counters_due();
            }
        }
    }

    /// Publishes the counters if the last publish is [`COUNTERS_EVERY_NS`] old.
    #[cold]
    #[inline(never)]
    fn counters_due(&mut self) {
        let Some(c) = &mut self.counters else {
            return;
        };
        c.left = c.every;
        let now = self.clock.now_unix_ns();
        if now.saturating_sub(c.last_ns) >= COUNTERS_EVERY_NS {
            c.last_ns = now;
            self.report.elapsed_ns = now.saturating_sub(c.started_ns);
            self.report.max_behind_ns = self.pacer.max_behind_ns();
            c.file.publish(&self.report.values());
        }
    }

    fn warn(&mut self, w: String) {
        if self.report.warnings.len() < MAX_WARNINGS {
            self.report.warnings.push(w);
        } else {
            self.report.warnings_omitted += 1;
        }
    }

    /// Whether a filter is set (then [`verdict`](Self::verdict) needs the instrument).
    #[inline(always)]
    /// Stops the replay where it is, on an interrupt (a signal): what was published stays, the
    /// report says so.
    #[cold]
    fn interrupt(&mut self) {
        self.stop = true;
        if !self.report.interrupted {
            self.report.interrupted = true;
            self.warn(format!(
                "interrupted after {} messages: the replay stopped there",
                self.report.published
            ));
        }
    }

    /// With `--from`/`--to` and no source message inside the range: where the messages looked
    /// at lie (a replay stops at the first message after `--to`, so the latest time is the
    /// latest seen, not the file's last).
    fn range_warning(&self) -> Option<String> {
        let (from, to) = (self.options.from, self.options.to);
        if (from.is_none() && to.is_none()) || self.in_range > 0 {
            return None;
        }
        let range = |f: Option<TimeOfDay>, t: Option<TimeOfDay>| match (f, t) {
            (Some(f), Some(t)) => format!("--from {f} --to {t}"),
            (Some(f), None) => format!("--from {f}"),
            (None, Some(t)) => format!("--to {t}"),
            (None, None) => String::new(),
        };
        Some(match self.seen_ts {
            Some((first, last)) => format!(
                "no message in {}: the messages read run from {} to {} (exchange time)",
                range(from, to),
                TimeOfDay(first),
                TimeOfDay(last)
            ),
            None => format!(
                "no message in {}: the source holds no timed message",
                range(from, to)
            ),
        })
    }

    fn filters(&self) -> bool {
        self.symbols.is_some() || self.options.from.is_some() || self.options.to.is_some()
    }

    /// Window and symbol filters for a message about `instrument` (0: market-wide), listing
    /// `directory` if it is a directory message.
    #[inline(always)]
    fn verdict(
        &mut self,
        instrument: u32,
        exchange_ts: u64,
        directory: Option<&[u8; 8]>,
    ) -> Verdict {
        if !self.filters() {
            return Verdict::Publish;
        }
        self.filter(instrument, exchange_ts, directory)
    }

    /// [`verdict`](Self::verdict) when a filter is set.
    #[inline(never)]
    fn filter(
        &mut self,
        instrument: u32,
        exchange_ts: u64,
        directory: Option<&[u8; 8]>,
    ) -> Verdict {
        if let (Some(f), Some(stock)) = (self.symbols.as_mut(), directory) {
            f.directory(instrument, stock);
        }
        if self.symbols.as_ref().is_some_and(|f| !f.allows(instrument)) {
            return Verdict::Skip;
        }
        let before = self.options.from.is_some_and(|f| exchange_ts < f.0);
        let after = self.options.to.is_some_and(|t| exchange_ts > t.0);
        if self.options.from.is_some() || self.options.to.is_some() {
            self.seen_ts = Some(self.seen_ts.map_or((exchange_ts, exchange_ts), |(a, b)| {
                (a.min(exchange_ts), b.max(exchange_ts))
            }));
            self.in_range += u64::from(!(before || after));
        }
        match (directory.is_some(), before || after) {
            (_, false) => Verdict::Publish,
            (true, true) => Verdict::PublishUnpaced,
            (false, true) if after => Verdict::Stop,
            (false, true) => Verdict::Skip,
        }
    }

    /// The receive stamp of the next envelope; `pauses` is the pipeline's
    /// [`pauses`](FeedPipeline::pauses) now.
    #[inline]
    fn recv_ts(&mut self, capture_ts: Option<u64>, pauses: u64) -> u64 {
        match (self.options.stamp, capture_ts) {
            (Stamp::Source, Some(ts)) => ts,
            _ => self.stamps.next(&self.clock, pauses),
        }
    }
}

/// Receive stamps from the clock: a fresh reading every `every` stamps, and whenever the
/// pipeline paused since the last one (see [`STAMP_EVERY`]).
#[derive(Debug)]
struct Stamps {
    every: u32,
    /// Stamps left before the next reading.
    left: u32,
    last: u64,
    /// The pipeline's pause count when `last` was read.
    pauses: u64,
}

impl Stamps {
    fn new(speed: Speed) -> Stamps {
        let every = match speed {
            Speed::Max => STAMP_EVERY,
            _ => 1,
        };
        Stamps {
            every,
            left: 0,
            last: 0,
            pauses: 0,
        }
    }

    /// The next stamp; `pauses` is the pipeline's pause count now (a reading taken before a
    /// pause is not reused after it).
    #[inline(always)]
    fn next(&mut self, clock: &StampClock, pauses: u64) -> u64 {
        if self.left == 0 || pauses != self.pauses {
            self.last = clock.now_unix_ns();
            self.left = self.every;
            self.pauses = pauses;
        }
        self.left -= 1;
        self.last
    }
}

/// What a replay needs of a venue beyond the [`Venue`] seam: its published messages into
/// the end-of-replay books.
trait ReplayVenue: Venue {
    /// Counts a published `msg`, source message `seq` stamped `recv_ts_ns`, in the replay's
    /// books and applies it, when they are kept; hands it to the book service fed on this
    /// thread, if there is one.
    fn observe_book(
        core: &mut Core,
        venue: &mut Self,
        seq: u64,
        recv_ts_ns: u64,
        msg: &Self::Message<'_>,
    );
}

impl ReplayVenue for Nasdaq {
    #[inline]
    fn observe_book(
        core: &mut Core,
        venue: &mut Self,
        seq: u64,
        recv_ts_ns: u64,
        msg: &Message<'_>,
    ) {
        if let Some(books) = &mut core.book {
            books.observe_source(
                Nasdaq::type_byte(msg),
                OrderEvent::from_itch(msg).map(BookEvent::Order),
            );
        }
        if let Some(service) = &mut core.service {
            service.accept_itch(seq, recv_ts_ns, venue.flags(), msg);
        }
    }
}

impl ReplayVenue for Iex {
    #[inline]
    fn observe_book(core: &mut Core, venue: &mut Self, _: u64, _: u64, msg: &Self::Message<'_>) {
        if let Some(books) = &mut core.iex_book {
            let instrument = venue.instrument(msg);
            books.observe(msg, instrument);
        }
    }
}

/// The source replays of Nasdaq captures (ITCH files, MoldUDP64 in pcap) publish through.
type ItchOut = SourceOut<Nasdaq>;
/// The source replays of IEX captures (IEX-TP in pcap) publish through.
type IexOut = SourceOut<Iex>;

/// Publishes a venue's messages through the pipeline, retrying while a lossless subscriber
/// holds the stream back.
#[derive(Debug)]
struct SourceOut<V: ReplayVenue> {
    pipeline: FeedPipeline<V>,
    stream: String,
}

impl<V: ReplayVenue> SourceOut<V> {
    #[inline]
    fn message(
        &mut self,
        core: &mut Core,
        seq: u64,
        bytes: &[u8],
        capture_ts: Option<u64>,
    ) -> Result<(), ReplayError> {
        core.report.messages += 1;
        core.next_seq = seq.saturating_add(1);
        let msg = match self.pipeline.venue().decode(bytes) {
            Ok(m) => m,
            Err(_) => {
                // The pipeline publishes it as a lost one-message gap and counts it.
                core.report.decode_errors += 1;
                let recv = core.recv_ts(capture_ts, self.pipeline.pauses());
                self.retry(seq, |p| p.on_message(seq, bytes, recv))?;
                self.gap_to_service(core, seq, 1, recv);
                return Ok(());
            }
        };
        let exchange_ts = self.pipeline.venue_mut().exchange_ts_ns(&msg);
        let pace_ts = capture_ts.unwrap_or(exchange_ts);
        let verdict = if core.filters() {
            let instrument = self.pipeline.venue_mut().instrument(&msg);
            core.verdict(instrument, exchange_ts, V::listing(&msg).as_ref())
        } else {
            Verdict::Publish
        };
        match verdict {
            Verdict::Skip => {
                core.report.filtered += 1;
                return Ok(());
            }
            Verdict::Stop => {
                core.report.filtered += 1;
                core.stop = true;
                return Ok(());
            }
            Verdict::Publish => {
                let (idle, hand_off) = self.pipeline.wait_parts();
                let service = &mut core.service;
                core.pacer.wait_doing(pace_ts, idle, || {
                    // The book service's pending order messages go out before the wait.
                    if let Some(s) = service {
                        s.flush();
                        s.hand_off();
                    }
                    hand_off();
                });
                if core.pacer.interrupted() {
                    core.interrupt();
                    return Ok(());
                }
            }
            Verdict::PublishUnpaced => {}
        }
        let recv = core.recv_ts(capture_ts, self.pipeline.pauses());
        self.retry(seq, |p| p.on_decoded(seq, &msg, recv))?;
        core.report.published += 1;
        V::observe_book(core, self.pipeline.venue_mut(), seq, recv, &msg);
        Ok(())
    }

    fn gap(
        &mut self,
        core: &mut Core,
        first: u64,
        count: u64,
        capture_ts: Option<u64>,
    ) -> Result<(), ReplayError> {
        core.report.gaps += 1;
        core.report.gap_messages = core.report.gap_messages.saturating_add(count);
        let recv = core.recv_ts(capture_ts, self.pipeline.pauses());
        self.retry(first, |p| p.on_gap(first, count, false, recv))?;
        self.gap_to_service(core, first, count, recv);
        Ok(())
    }

    /// Hands the lost gap notice the pipeline just published (source messages `first ..
    /// first + count`, stamped `recv_ts_ns`) to the book service fed on this thread, if any.
    #[cold]
    fn gap_to_service(&self, core: &mut Core, first: u64, count: u64, recv_ts_ns: u64) {
        if let Some(service) = &mut core.service {
            let fields = fb::GapNoticeFields {
                first_missing_seq: first,
                count,
                recoverable: false,
                scope: fb::GapScope::Source,
            };
            service.handle_gap(&self.pipeline.bus_header(first, recv_ts_ns), &fields);
        }
    }

    fn end(&mut self, core: &mut Core, next_seq: u64) -> Result<(), ReplayError> {
        if core.ended {
            return Ok(());
        }
        core.ended = true;
        let recv = core.recv_ts(None, self.pipeline.pauses());
        self.retry(next_seq, |p| p.on_end_of_session(next_seq, recv))?;
        if let Some(service) = &mut core.service {
            service.handle_end_of_session(&self.pipeline.bus_header(next_seq, recv));
        }
        Ok(())
    }

    /// Runs one pipeline step. The pipeline retries back-pressured records itself, without a
    /// time limit for a replay (see [`Replayer::with_input`]), so a refusal here is for good.
    #[inline]
    fn retry(
        &mut self,
        seq: u64,
        f: impl FnOnce(&mut FeedPipeline<V>) -> Result<(), PipelineError<V::DecodeError>>,
    ) -> Result<(), ReplayError> {
        match f(&mut self.pipeline) {
            Ok(()) | Err(PipelineError::Decode { .. }) => Ok(()),
            Err(PipelineError::Publish { error, .. }) => Err(ReplayError::Publish {
                stream: self.stream.clone(),
                seq,
                error,
            }),
        }
    }
}

/// The sequencer's sink: messages and lost ranges in order, into the pipeline.
struct SeqSink<'a> {
    out: &'a mut ItchOut,
    core: &'a mut Core,
    capture_ts: u64,
    error: &'a mut Option<ReplayError>,
}

impl Deliver for SeqSink<'_> {
    #[inline]
    fn message(&mut self, seq: u64, msg: &[u8]) {
        if self.core.stop || self.error.is_some() {
            return;
        }
        if let Err(e) = self.out.message(self.core, seq, msg, Some(self.capture_ts)) {
            *self.error = Some(e);
        }
    }

    fn gap(&mut self, first: u64, count: u64) {
        if self.core.stop || self.error.is_some() {
            return;
        }
        if let Err(e) = self.out.gap(self.core, first, count, Some(self.capture_ts)) {
            *self.error = Some(e);
        }
    }
}

/// Republishes recorded records as they are.
#[derive(Debug)]
struct RawOut {
    publisher: Publisher,
    encoder: Encoder,
    /// Run while waiting and after every `IDLE_WORK_EVERY` records.
    idle: Idle,
    published: u64,
}

/// Publishes one record, retrying while a lossless subscriber holds the stream back.
fn publish_raw(
    publisher: &mut Publisher,
    idle: &mut Idle,
    core: &mut Core,
    msg_type: u32,
    bytes: &[u8],
    seq: u64,
) -> Result<(), ReplayError> {
    let mut spins = 0u32;
    loop {
        match publisher.publish(msg_type, bytes) {
            Ok(_) => return Ok(()),
            Err(PublishError::BackPressured) => {
                core.report.back_pressured += 1;
                spins += 1;
                if !idle.run() {
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
            Err(error) => {
                return Err(ReplayError::Publish {
                    stream: publisher.name().to_owned(),
                    seq,
                    error,
                });
            }
        }
    }
}

impl RawOut {
    fn publish(
        &mut self,
        core: &mut Core,
        msg_type: u32,
        bytes: &[u8],
        seq: u64,
    ) -> Result<(), ReplayError> {
        publish_raw(
            &mut self.publisher,
            &mut self.idle,
            core,
            msg_type,
            bytes,
            seq,
        )?;
        self.published += 1;
        if self.published.is_multiple_of(IDLE_WORK_EVERY) {
            self.idle.run();
        }
        Ok(())
    }

    /// Publishes a gap notice (`gap`) or the end of the session (`None`).
    fn bus_event(
        &mut self,
        core: &mut Core,
        header: &HeaderFields,
        gap: Option<fb::GapNoticeFields>,
    ) -> Result<(), ReplayError> {
        let RawOut {
            publisher,
            encoder,
            idle,
            ..
        } = self;
        let msg = match gap {
            Some(g) => encoder.gap_notice(header, &g),
            None => encoder.end_of_session(header, &fb::EndOfSessionFields),
        };
        publish_raw(
            publisher,
            idle,
            core,
            mdbus_bus::ENVELOPE_MSG_TYPE,
            &msg,
            header.seq,
        )
    }
}

enum Input {
    Capture(CaptureReader),
    Recording(RecordReader),
}

// One value per replay, made once and never moved on the hot path: no point boxing the
// pipeline (a pointer chase per message) to shrink it.
#[allow(clippy::large_enum_variant)]
enum Output {
    Itch(ItchOut),
    Iex(IexOut),
    Raw(Box<RawOut>),
}

/// A replay, opened and ready to run; see the [module docs](self).
///
/// [`open`](Replayer::open) reads the source's first bytes and creates the output stream, so
/// subscribers can join (lossless ones must) before [`run`](Replayer::run) publishes anything.
pub struct Replayer {
    input: Input,
    output: Output,
    core: Core,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("source", &self.core.report.source)
            .field("format", &self.core.report.format)
            .field("stream", &self.core.report.stream)
            .finish_non_exhaustive()
    }
}

impl Replayer {
    /// Stops the replay (cleanly: what was published stays, the stream is closed) once `flag`
    /// is set, within 50 ms even in a long paced wait; checked in waits and every few thousand
    /// records.
    pub fn stop_on(&mut self, flag: Arc<AtomicBool>) {
        self.core.pacer.set_interrupt(flag);
    }

    /// Opens `source` and creates stream `stream` on `bus` with `ring`.
    pub fn open(
        source: &Source,
        bus: &Bus,
        stream: &str,
        ring: &StreamConfig,
        options: ReplayOptions,
    ) -> Result<Replayer, ReplayError> {
        let input = match source {
            Source::Path(p) if is_recording(p)? => Input::Recording(RecordReader::open(p)?),
            Source::Path(p) => Input::Capture(capture::open_capture(p)?),
            Source::Bytes { name, bytes } => Input::Capture(CaptureReader::from_reader(
                name,
                std::io::Cursor::new(*bytes),
            )?),
        };
        let protocol = match (&input, options.protocol) {
            (Input::Capture(c), None) if c.format() != CaptureFormat::ItchLengthPrefixed => {
                detect_source(source)?
            }
            (_, p) => p.unwrap_or_default(),
        };
        Replayer::with_input(input, source.name(), protocol, bus, stream, ring, options)
    }

    fn with_input(
        input: Input,
        source_name: String,
        protocol: ReplayProtocol,
        bus: &Bus,
        stream: &str,
        ring: &StreamConfig,
        options: ReplayOptions,
    ) -> Result<Replayer, ReplayError> {
        let symbols = SymbolFilter::new(&options.symbols)?;
        if let (Some(f), Some(t)) = (options.from, options.to)
            && f > t
        {
            return Err(ReplayError::Option(format!(
                "the window is empty: --from {f} is after --to {t}"
            )));
        }
        let format = match &input {
            Input::Recording(_) => "recording",
            Input::Capture(c) => match c.format() {
                CaptureFormat::ItchLengthPrefixed => "itch",
                CaptureFormat::Pcap { .. } => "pcap",
                CaptureFormat::PcapNg => "pcapng",
            },
        };
        if matches!(input, Input::Capture(ref c) if c.format() == CaptureFormat::ItchLengthPrefixed)
            && (options.group.is_some() || options.port.is_some())
        {
            return Err(ReplayError::Option(
                "--group and --port select datagrams of a pcap or pcapng file; this is an ITCH file"
                    .into(),
            ));
        }
        let itch_file = matches!(input, Input::Capture(ref c) if c.format() == CaptureFormat::ItchLengthPrefixed);
        if protocol != ReplayProtocol::Itch && (itch_file || matches!(input, Input::Recording(_))) {
            return Err(ReplayError::Option(format!(
                "--protocol {protocol} reads a pcap or pcapng capture; this is {}",
                if itch_file {
                    "an ITCH file"
                } else {
                    "a recording"
                }
            )));
        }
        let output = match input {
            Input::Capture(_) if protocol != ReplayProtocol::Itch => {
                let iex = protocol.iex().map(Iex::for_protocol).unwrap_or_default();
                let mut pipeline = FeedPipeline::with_venue(iex, bus, stream, ring)?;
                pipeline.set_flags(EnvelopeFlags::Replayed);
                pipeline.set_back_pressure_timeout(None);
                Output::Iex(IexOut {
                    pipeline,
                    stream: stream.to_owned(),
                })
            }
            Input::Recording(_) => Output::Raw(Box::new(RawOut {
                publisher: bus.publisher(stream, ring)?,
                encoder: Encoder::new(),
                idle: Idle::default(),
                published: 0,
            })),
            Input::Capture(_) => {
                let mut pipeline = FeedPipeline::new(bus, stream, ring)?;
                pipeline.set_flags(EnvelopeFlags::Replayed);
                // A replay waits for its lossless subscribers as long as it takes (the ring
                // reaps subscribers that die): nothing is dropped.
                pipeline.set_back_pressure_timeout(None);
                Output::Itch(ItchOut {
                    pipeline,
                    stream: stream.to_owned(),
                })
            }
        };
        let (book, iex_book) = match (options.book_summary, protocol) {
            (Some(config), ReplayProtocol::Itch) => (
                Some(EnvelopeBooks::new(config, GapPolicy::CountLost)?),
                None,
            ),
            (Some(config), _) => (None, Some(IexBooks::new(config)?)),
            (None, _) => (None, None),
        };
        let clock = StampClock::new();
        let report = ReplayReport {
            source: source_name,
            format,
            protocol: protocol.name(),
            stream: stream.to_owned(),
            speed: options.speed.to_string(),
            records: 0,
            messages: 0,
            published: 0,
            interrupted: false,
            filtered: 0,
            datagrams_filtered: 0,
            gaps: 0,
            gap_messages: 0,
            late_join_first_seq: None,
            decode_errors: 0,
            invalid_envelopes: 0,
            foreign_session_packets: 0,
            foreign_session_messages: 0,
            malformed_packets: 0,
            duplicates: 0,
            after_end_messages: 0,
            zero_sequence_packets: 0,
            zero_sequence_messages: 0,
            unsequenced: None,
            sequenced_packets_skipped: 0,
            sequenced_messages_skipped: 0,
            implausible_jumps: 0,
            implausible_messages: 0,
            jumps_corroborated: 0,
            forged_end_of_session: 0,
            anchors_replaced: 0,
            replaced_anchor_messages: 0,
            skipped_frames: 0,
            back_pressured: 0,
            truncated: None,
            warnings: Vec::new(),
            warnings_omitted: 0,
            unresolved_symbols: Vec::new(),
            elapsed_ns: 0,
            max_behind_ns: 0,
            restarts: 0,
            cut_segments: 0,
            out_of_order: 0,
            foreign_protocol_packets: 0,
            summary: None,
            iex_summary: None,
        };
        Ok(Replayer {
            input,
            output,
            core: Core {
                pacer: pacer(&options, clock.clone()),
                clock,
                stamps: Stamps::new(options.speed),
                symbols,
                options,
                book,
                iex_book,
                service: None,
                report,
                stop: false,
                ended: false,
                next_seq: 1,
                counters: None,
                seen_ts: None,
                in_range: 0,
            },
        })
    }

    /// Opens a capture (ITCH, pcap or pcapng) read from any byte source, named `name` in
    /// reports and errors, and creates stream `stream` on `bus` with `ring`.
    pub fn from_reader(
        name: &str,
        reader: impl std::io::Read + Send + 'static,
        bus: &Bus,
        stream: &str,
        ring: &StreamConfig,
        options: ReplayOptions,
    ) -> Result<Replayer, ReplayError> {
        let reader = CaptureReader::from_reader(name, reader)?;
        Replayer::with_input(
            Input::Capture(reader),
            name.to_owned(),
            options.protocol.unwrap_or_default(),
            bus,
            stream,
            ring,
            options,
        )
    }

    /// Stamps receive timestamps (and paces) with `clock` instead of a clock of its own; hand
    /// a clone to the subscribers that measure latency against those stamps.
    pub fn with_clock(mut self, clock: StampClock) -> Replayer {
        self.core.pacer = pacer(&self.core.options, clock.clone());
        self.core.clock = clock;
        self
    }

    /// Gives the replay work to do while it waits (for a lossless subscriber, or for the
    /// next message's time at a paced speed) and between turns of
    /// [`IDLE_WORK_EVERY`] messages: another stage can then
    /// share the feed handler's thread, in turns. After the end of the session [`run`](Self::run)
    /// calls it until it returns `false`, before it closes the stream. See [`IdleWork`].
    pub fn with_idle_work(mut self, work: IdleWork) -> Replayer {
        match &mut self.output {
            Output::Itch(out) => out.pipeline.set_idle_work(Some(work)),
            Output::Iex(out) => out.pipeline.set_idle_work(Some(work)),
            Output::Raw(out) => out.idle = Idle(Some(work)),
        }
        self
    }

    /// Builds books on the replay's own thread and publishes what they change: each message
    /// the replay publishes, and each of its gap notices and its end of session, is handed to
    /// `service` decoded ([`BookService::accept_itch`]) once published, so that the service
    /// publishes on its streams what it would publish reading the replay's stream, with no
    /// thread of its own and no envelope read back. Order messages are applied a few order
    /// messages late, so that their cache misses overlap the work between; a paced replay
    /// applies the pending ones before it waits. Nasdaq ITCH sources only (an ITCH file,
    /// MoldUDP64 in pcap or pcapng): an IEX capture or a recording is refused.
    /// [`run_with_book_service`](Self::run_with_book_service) hands the service back.
    pub fn with_book_service(mut self, service: BookService) -> Result<Replayer, ReplayError> {
        let what = match self.output {
            Output::Itch(_) => None,
            Output::Iex(_) => Some("an IEX capture"),
            Output::Raw(_) => Some("an mdbus recording"),
        };
        if let Some(what) = what {
            return Err(ReplayError::Option(format!(
                "books are built on the replay's thread from Nasdaq ITCH messages only; {} is {what}",
                self.core.report.source
            )));
        }
        self.core.service = Some(Box::new(service));
        Ok(self)
    }

    /// `itch`, `pcap`, `pcapng` or `recording`.
    pub fn format(&self) -> &'static str {
        self.core.report.format
    }

    /// Publishes the replay's counters ([`ReplayReport::NAMES`]) under the bus root while it
    /// runs, for `mdbus stat`: role [`COUNTERS_ROLE`], stream the replay's output; the file
    /// is marked finished when [`run`](Self::run) returns the report (its final values).
    pub fn publish_counters(&mut self, bus: &Bus) -> Result<(), ReplayError> {
        let r = &self.core.report;
        let detail = format!("{} {} speed {}", r.format, r.source, r.speed);
        let file = CounterFile::create(
            bus.root(),
            &r.stream,
            COUNTERS_ROLE,
            clip(&detail, MAX_DETAIL),
            &ReplayReport::NAMES,
        )?;
        let every = match self.core.options.speed {
            Speed::Max => COUNTERS_CHECK_EVERY,
            _ => 1,
        };
        self.core.counters = Some(Counters {
            file,
            every,
            left: every,
            last_ns: 0,
            started_ns: 0,
        });
        Ok(())
    }

    /// Replays the whole source (or up to the window's end), then publishes the end of the
    /// session and closes the stream. `progress` is called every few thousand records.
    pub fn run(self, progress: &mut dyn FnMut(Progress)) -> Result<ReplayReport, ReplayError> {
        self.run_with_book_service(progress)
            .map(|(report, _)| report)
    }

    /// [`run`](Self::run), handing back the service given to
    /// [`with_book_service`](Self::with_book_service) (`None` without one), which has
    /// published the end of the session on its streams.
    pub fn run_with_book_service(
        self,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(ReplayReport, Option<BookService>), ReplayError> {
        let Replayer {
            input,
            output,
            mut core,
        } = self;
        let started = Instant::now();
        if let Some(c) = &mut core.counters {
            c.started_ns = core.clock.now_unix_ns();
            c.last_ns = c.started_ns;
        }
        match (input, output) {
            (Input::Capture(mut reader), Output::Itch(mut out)) => {
                if reader.format() == CaptureFormat::ItchLengthPrefixed {
                    run_itch(&mut reader, &mut out, &mut core, progress)?;
                } else {
                    run_pcap(&mut reader, &mut out, &mut core, progress)?;
                }
                let next = core.next_seq;
                out.end(&mut core, next)?;
                // Before the stream closes: the idle work may read what it carried.
                out.pipeline.finish_idle_work();
                core.report.back_pressured += out.pipeline.stats().back_pressured;
                note_capture_stats(&mut core, reader.stats());
                progress(Progress {
                    offset: reader.offset(),
                    published: core.report.published,
                });
            }
            (Input::Capture(mut reader), Output::Iex(mut out)) => {
                run_iex(&mut reader, &mut out, &mut core, progress)?;
                let next = core.next_seq;
                out.end(&mut core, next)?;
                out.pipeline.finish_idle_work();
                core.report.back_pressured += out.pipeline.stats().back_pressured;
                note_capture_stats(&mut core, reader.stats());
                progress(Progress {
                    offset: reader.offset(),
                    published: core.report.published,
                });
                let gaps = core.report.gaps;
                if let Some(books) = &mut core.iex_book {
                    let directory = out.pipeline.venue_mut().normalizer().directory();
                    core.report.iex_summary = Some(books.summary(directory, gaps));
                }
            }
            (Input::Recording(mut reader), Output::Raw(mut out)) => {
                run_recording(&mut reader, &mut out, &mut core, progress)?;
                if !core.ended {
                    let header = HeaderFields {
                        seq: core.next_seq,
                        recv_ts_ns: core.clock.now_unix_ns(),
                        ..HeaderFields::default()
                    };
                    out.bus_event(&mut core, &header, None)?;
                }
                out.idle.finish();
                progress(Progress {
                    offset: reader.offset(),
                    published: core.report.published,
                });
            }
            _ => {
                return Err(ReplayError::Option(
                    "internal: source and output disagree".into(),
                ));
            }
        }
        core.report.elapsed_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        core.report.max_behind_ns = core.pacer.max_behind_ns();
        core.report.unresolved_symbols = core
            .symbols
            .as_ref()
            .map(SymbolFilter::unresolved)
            .unwrap_or_default();
        if let Some(books) = &core.book {
            core.report.summary = Some(books.summary_with_gaps(core.report.gaps));
        }
        if let Some(w) = core.range_warning() {
            core.warn(w);
        }
        if let Some(c) = core.counters.take() {
            c.file.publish(&core.report.values());
            c.file.finish();
        }
        let service = core.service.take().map(|s| *s);
        Ok((core.report, service))
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn pacer(options: &ReplayOptions, clock: StampClock) -> Pacer {
    let p = Pacer::new(options.speed, clock);
    if options.spin_pacing {
        p.spin_only()
    } else {
        p
    }
}

fn note_capture_stats(core: &mut Core, s: CaptureStats) {
    let skipped = [
        (s.skipped_non_ipv4, "frames that are not IPv4"),
        (s.skipped_non_udp, "IPv4 packets that are not UDP"),
        (s.ipv4_fragments, "IPv4 fragments"),
        (s.malformed_frames, "malformed frames"),
        (
            s.unsupported_link_type,
            "frames of an unsupported link type",
        ),
    ];
    for (n, what) in skipped {
        if n > 0 {
            core.report.skipped_frames = core.report.skipped_frames.saturating_add(n);
            core.warn(format!("skipped {n} {what}"));
        }
    }
}

/// A capture error met while reading: truncation and damage are noted and reading goes on
/// where the reader can; an I/O error stops the replay.
fn capture_error(core: &mut Core, e: CaptureError) -> Result<(), ReplayError> {
    match e {
        CaptureError::Truncated { offset, .. } => {
            core.report.truncated = Some(Truncation {
                offset,
                detail: e.to_string(),
            });
            Ok(())
        }
        CaptureError::Malformed { .. } => {
            // The damaged record is skipped.
            core.report.skipped_frames += 1;
            core.warn(e.to_string());
            Ok(())
        }
        other => Err(other.into()),
    }
}

fn run_itch(
    reader: &mut CaptureReader,
    out: &mut ItchOut,
    core: &mut Core,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ReplayError> {
    let mut seq = 0u64;
    while let Some(rec) = reader.next_record() {
        match rec {
            Ok(Record::Itch(m)) => {
                seq += 1;
                core.report.records += 1;
                core.tick();
                out.message(core, seq, m.message, None)?;
                if core.stop {
                    break;
                }
                if seq.is_multiple_of(PROGRESS_EVERY) {
                    progress(Progress {
                        offset: m.offset,
                        published: core.report.published,
                    });
                    if core.pacer.interrupted() {
                        core.interrupt();
                        break;
                    }
                }
            }
            Ok(Record::Udp(_)) => {}
            Err(e) => capture_error(core, e)?,
        }
    }
    Ok(())
}

/// Packets numbered 0 held back at the start of a MoldUDP64 capture, while it is not known
/// whether the capture has real sequence numbers: at most this many packets ...
const HOLD_PACKETS: usize = 1024;
/// ... or bytes; past either the capture is taken as sanitized (see `Sequencing`).
const HOLD_BYTES: usize = 4 << 20;

/// How the packets of a MoldUDP64 capture are replayed.
///
/// A data packet numbered 0 cannot be sequenced: MoldUDP64 numbers messages from 1, and
/// sanitized public samples zero every session and sequence number. The capture decides:
/// packets numbered 0 are held back until a packet with a real sequence number shows up
/// (then the capture is sequenced and they are counted, not replayed: a stray or mixed-in
/// packet must not take the place of the real session) or the capture ends (or the hold is
/// full) with none (then it is sanitized and replayed in capture order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sequencing {
    /// Only packets numbered 0 so far, held back.
    Undecided,
    /// By sequence number, through the sequencer.
    Sequenced,
    /// In capture order, numbered from 1 (a sanitized capture).
    CaptureOrder,
}

/// Packets numbered 0 held back while the capture's [`Sequencing`] is undecided.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    /// Capture timestamp and place in `bytes` of each packet.
    packets: Vec<(u64, std::ops::Range<usize>)>,
}

/// The replay of a sanitized capture: packets in capture order, their messages numbered
/// from 1, the first session seen followed.
struct InCaptureOrder {
    session: Option<Session>,
    next: u64,
    ended: bool,
}

impl InCaptureOrder {
    /// Replays one packet (its header already checked) received at `ts`.
    fn packet(
        &mut self,
        out: &mut ItchOut,
        core: &mut Core,
        ts: u64,
        bytes: &[u8],
    ) -> Result<(), ReplayError> {
        let Ok(pkt) = Packet::parse(bytes) else {
            core.report.malformed_packets += 1;
            return Ok(());
        };
        let n = u64::from(pkt.messages_len());
        match self.session {
            None => self.session = Some(pkt.session()),
            Some(s) if s != pkt.session() => {
                core.report.foreign_session_packets += 1;
                core.report.foreign_session_messages += n;
                return Ok(());
            }
            Some(_) => {}
        }
        if self.ended {
            core.report.after_end_messages += n;
            return Ok(());
        }
        match pkt.message_count() {
            HEARTBEAT_COUNT => {}
            END_OF_SESSION_COUNT => {
                self.ended = true;
                core.next_seq = self.next;
                out.end(core, self.next)?;
            }
            count => {
                let mut read = 0u64;
                for item in pkt.messages() {
                    let Ok(msg) = item else {
                        core.report.malformed_packets += 1;
                        break;
                    };
                    out.message(core, self.next, msg, Some(ts))?;
                    self.next = self.next.saturating_add(1);
                    read += 1;
                    if core.stop {
                        return Ok(());
                    }
                }
                // The blocks from a damaged one on are lost: say so in place.
                let missing = u64::from(count).saturating_sub(read);
                if missing > 0 {
                    out.gap(core, self.next, missing, Some(ts))?;
                    self.next = self.next.saturating_add(missing);
                    core.next_seq = self.next;
                }
            }
        }
        Ok(())
    }
}

/// The state of a MoldUDP64 capture's replay besides the sequencer.
struct PcapState {
    mode: Sequencing,
    held: Held,
    unsequenced: InCaptureOrder,
    /// The capture was taken as sanitized because the hold filled up.
    hold_full: bool,
}

impl PcapState {
    /// A packet numbered 0, or any packet while the capture is not [`Sequencing::Sequenced`].
    /// Returns whether the packet goes to the sequencer.
    #[cold]
    #[inline(never)]
    fn classify(
        &mut self,
        out: &mut ItchOut,
        core: &mut Core,
        ts: u64,
        pkt: &Packet<'_>,
    ) -> Result<bool, ReplayError> {
        let n = u64::from(pkt.messages_len());
        if pkt.sequence_number() != 0 {
            return match self.mode {
                Sequencing::CaptureOrder => {
                    core.report.sequenced_packets_skipped += 1;
                    core.report.sequenced_messages_skipped += n;
                    Ok(false)
                }
                _ => {
                    // A real sequence number: the capture is sequenced, and the packets
                    // numbered 0 held so far (counted) are not replayed.
                    self.mode = Sequencing::Sequenced;
                    self.held = Held::default();
                    Ok(true)
                }
            };
        }
        core.report.zero_sequence_packets += 1;
        core.report.zero_sequence_messages += n;
        match self.mode {
            Sequencing::Sequenced => {}
            Sequencing::CaptureOrder => self.unsequenced.packet(out, core, ts, pkt.as_bytes())?,
            Sequencing::Undecided => {
                let bytes = pkt.as_bytes();
                let at = self.held.bytes.len();
                self.held.bytes.extend_from_slice(bytes);
                self.held.packets.push((ts, at..at + bytes.len()));
                if self.held.packets.len() >= HOLD_PACKETS || self.held.bytes.len() >= HOLD_BYTES {
                    self.hold_full = true;
                    self.replay_held(out, core)?;
                }
            }
        }
        Ok(false)
    }

    /// Takes the capture as sanitized and replays the packets held so far.
    fn replay_held(&mut self, out: &mut ItchOut, core: &mut Core) -> Result<(), ReplayError> {
        self.mode = Sequencing::CaptureOrder;
        let held = std::mem::take(&mut self.held);
        for (ts, range) in held.packets {
            if core.stop {
                break;
            }
            self.unsequenced.packet(out, core, ts, &held.bytes[range])?;
        }
        Ok(())
    }
}

fn run_pcap(
    reader: &mut CaptureReader,
    out: &mut ItchOut,
    core: &mut Core,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ReplayError> {
    let mut seqr = Sequencer::new(SequencerConfig {
        nak_delay: std::time::Duration::ZERO,
        max_outstanding_requests: 0,
        late_join: LateJoin::LiveEdge,
        max_gap: core.options.max_gap,
        ..SequencerConfig::default()
    })?;
    let (group, port) = (core.options.group, core.options.port);
    let name = reader.path().display().to_string();
    let mut error = None;
    let mut state = PcapState {
        mode: Sequencing::Undecided,
        held: Held::default(),
        unsequenced: InCaptureOrder {
            session: None,
            next: 1,
            ended: false,
        },
        hold_full: false,
    };
    // The sequencer's clock: capture timestamps, never going back.
    let mut now = 0u64;
    // The sequencer's clock at the packet before.
    let mut before = 0u64;
    // Messages of the packet the sequencer started at (tentative until confirmed).
    let mut anchor = 0u64;
    while let Some(rec) = reader.next_datagram() {
        let d = match rec {
            Ok(d) => d,
            Err(e) => {
                capture_error(core, e)?;
                continue;
            }
        };
        core.report.records += 1;
        core.tick();
        if group.is_some_and(|g| *d.dst.ip() != g) || port.is_some_and(|p| d.dst.port() != p) {
            core.report.datagrams_filtered += 1;
            continue;
        }
        let ts = d.ts_ns;
        let Ok(pkt) = Packet::parse(d.payload) else {
            core.report.malformed_packets += 1;
            continue;
        };
        let seq = pkt.sequence_number();
        if (seq == 0 || state.mode != Sequencing::Sequenced)
            && !state.classify(out, core, ts, &pkt)?
        {
            if core.stop {
                break;
            }
            continue;
        }
        let n = u64::from(pkt.messages_len());
        if seq.checked_add(n).is_none() {
            core.report.malformed_packets += 1;
            core.warn(format!(
                "{name}: packet at offset {}: {n} messages from sequence number {seq} run past the largest sequence number (not replayed)",
                d.offset
            ));
            continue;
        }
        if seqr.session().is_some_and(|s| s != pkt.session()) {
            core.report.foreign_session_packets += 1;
            core.report.foreign_session_messages += n;
            continue;
        }
        if seqr.is_ended() {
            core.report.after_end_messages += n;
            continue;
        }
        now = now.max(ts);
        let (implausible, replaced, first) = {
            let st = seqr.stats();
            (st.implausible_jumps, st.anchors_replaced, st.packets == 0)
        };
        if first {
            anchor = n;
        }
        seqr.handle_packet(
            now,
            Line::A,
            d.payload,
            SeqSink {
                out: &mut *out,
                core: &mut *core,
                capture_ts: ts,
                error: &mut error,
            },
        );
        // No retransmission server: a missing range is lost once the next packet has been
        // seen (the timers run one packet behind, so a capture's first packet stays
        // tentative until the second confirms or replaces it, as on a live feed). What this
        // releases is stamped with this packet's capture time, never before its own.
        seqr.handle_timeout(
            before,
            SeqSink {
                out: &mut *out,
                core: &mut *core,
                capture_ts: ts,
                error: &mut error,
            },
        );
        before = now;
        if let Some(e) = error.take() {
            return Err(e);
        }
        let st = seqr.stats();
        if st.implausible_jumps != implausible {
            core.report.implausible_messages += n;
        }
        if st.anchors_replaced != replaced {
            // The tentative first packet's messages went with it.
            core.report.replaced_anchor_messages += anchor;
            anchor = n;
        }
        sequencer_events(&mut seqr, out, core)?;
        if core.stop {
            break;
        }
        if core.report.records.is_multiple_of(PROGRESS_EVERY) {
            progress(Progress {
                offset: reader.offset(),
                published: core.report.published,
            });
            if core.pacer.interrupted() {
                core.interrupt();
                break;
            }
        }
    }
    if state.mode == Sequencing::Undecided && !state.held.packets.is_empty() {
        state.replay_held(out, core)?;
    }
    if state.mode == Sequencing::CaptureOrder {
        let r = &core.report;
        let which = if state.hold_full {
            format!("the first {HOLD_PACKETS} or more MoldUDP64 packets")
        } else {
            format!("all {} MoldUDP64 packets", r.zero_sequence_packets)
        };
        let why = format!(
            "{which} carry sequence number 0, which no packet has (sequence numbers start at 1): \
             a sanitized capture, its session and sequence numbers zeroed. Its messages were \
             replayed in capture order, numbered from 1, with no gap or duplicate detection"
        );
        let skipped = (r.sequenced_packets_skipped, r.sequenced_messages_skipped);
        core.report.unsequenced = Some(why);
        if skipped.0 > 0 {
            core.warn(format!(
                "{} packets ({} messages) with real sequence numbers follow the sanitized ones: not replayed (replay them apart, choosing their feed with --group/--port)",
                skipped.0, skipped.1
            ));
        }
        core.next_seq = state.unsequenced.next;
        return Ok(());
    }
    // The end of the capture: whatever is still missing is lost, whatever is held delivered.
    seqr.handle_timeout(
        u64::MAX,
        SeqSink {
            out: &mut *out,
            core: &mut *core,
            capture_ts: now,
            error: &mut error,
        },
    );
    if let Some(e) = error.take() {
        return Err(e);
    }
    sequencer_events(&mut seqr, out, core)?;
    let st = seqr.stats();
    core.report.duplicates = st.duplicates;
    core.report.malformed_packets += st.malformed;
    core.report.implausible_jumps = st.implausible_jumps;
    core.report.jumps_corroborated = st.jumps_corroborated;
    core.report.forged_end_of_session = st.forged_end_of_session;
    core.report.anchors_replaced = st.anchors_replaced;
    if st.implausible_jumps > st.jumps_corroborated {
        core.warn(format!(
            "{} MoldUDP64 packets ({} messages) jump more than {} messages beyond the highest sequence number seen and nothing corroborates them: not replayed (a forged packet? if the capture really jumps that far, raise --max-gap)",
            st.implausible_jumps - st.jumps_corroborated,
            core.report.implausible_messages,
            core.options.max_gap
        ));
    }
    if st.anchors_replaced > 0 {
        core.warn(format!(
            "the first packet was replaced {} times by a packet more than {} messages from it ({} messages not replayed): the capture starts with packets far apart (a forged one?)",
            st.anchors_replaced, core.options.max_gap, core.report.replaced_anchor_messages
        ));
    }
    if st.forged_end_of_session > 0 {
        core.warn(format!(
            "{} end-of-session packets below the highest sequence number seen were ignored",
            st.forged_end_of_session
        ));
    }
    let r = &core.report;
    let zero = (r.zero_sequence_packets, r.zero_sequence_messages);
    let foreign = (r.foreign_session_packets, r.foreign_session_messages);
    if zero.0 > 0 {
        core.warn(format!(
            "{} MoldUDP64 packets ({} messages) carry sequence number 0, which no packet has: not replayed (a sanitized capture mixed with this one? replay it apart, choosing its feed with --group/--port)",
            zero.0, zero.1
        ));
    }
    if foreign.0 > 0 {
        let session = seqr.session().map_or_else(String::new, |s| s.to_string());
        core.warn(format!(
            "{} datagrams ({} messages) belong to other MoldUDP64 sessions than {session}: not replayed (choose a feed with --group/--port)",
            foreign.0, foreign.1
        ));
    }
    if core.next_seq < seqr.next_seq() {
        core.next_seq = seqr.next_seq();
    }
    Ok(())
}

/// Judges the protocol of a pcap or pcapng `source` by its first datagrams, read with a
/// reader of its own (the replay's reader is left at the start).
fn detect_source(source: &Source) -> Result<ReplayProtocol, ReplayError> {
    let mut reader = match source {
        Source::Path(p) => capture::open_capture(p)?,
        Source::Bytes { name, bytes } => {
            CaptureReader::from_reader(name, std::io::Cursor::new(*bytes))?
        }
    };
    let mut seen: Vec<(std::net::SocketAddrV4, Vec<u8>)> = Vec::new();
    while seen.len() < DETECT_DATAGRAMS {
        match reader.next_datagram() {
            None => break,
            Some(Ok(d)) => seen.push((d.dst, d.payload.to_vec())),
            Some(Err(CaptureError::Truncated { .. } | CaptureError::Malformed { .. })) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
    detect(seen.iter().map(|(dst, p)| (*dst, p.as_slice()))).map_err(|found| {
        ReplayError::NotDetected {
            source_name: source.name(),
            found,
        }
    })
}

/// Replays a capture of IEX-TP segments: each datagram through the [`Tracker`], each message
/// it delivers through the pipeline (decode, normalize, publish). The tracker's gaps are
/// published as gap notices; a restart of the sequence at 1 within the session is reported
/// (a warning) and counted, not a gap; a cut segment's whole messages are replayed and the
/// cut reported with its offset.
fn run_iex(
    reader: &mut CaptureReader,
    out: &mut IexOut,
    core: &mut Core,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ReplayError> {
    let mut tracker = Tracker::new();
    let (group, port) = (core.options.group, core.options.port);
    let name = reader.path().display().to_string();
    loop {
        let (d, cut_record) = match reader.next_datagram() {
            None => break,
            Some(Ok(d)) => (d, false),
            Some(Err(e)) => {
                let truncated = matches!(e, CaptureError::Truncated { .. });
                capture_error(core, e)?;
                match reader.cut_datagram() {
                    Some(d) if truncated => (d, true),
                    _ => continue,
                }
            }
        };
        core.report.records += 1;
        core.tick();
        if group.is_some_and(|g| *d.dst.ip() != g) || port.is_some_and(|p| d.dst.port() != p) {
            core.report.datagrams_filtered += 1;
            continue;
        }
        let ts = d.ts_ns;
        let h = match tracker.handle(d.payload) {
            Ok(h) => h,
            Err(Rejected::Malformed { error, .. }) => {
                core.report.malformed_packets += 1;
                core.warn(format!(
                    "{name}: datagram at offset {}: {error} (not replayed)",
                    d.offset
                ));
                continue;
            }
            Err(Rejected::ForeignSession { .. }) => {
                core.report.foreign_session_packets += 1;
                core.report.foreign_session_messages = core
                    .report
                    .foreign_session_messages
                    .saturating_add(u64::from(iex_message_count(d.payload)));
                continue;
            }
            Err(Rejected::ForeignProtocol { .. }) => {
                core.report.foreign_protocol_packets += 1;
                continue;
            }
        };
        match h.notice {
            Some(Notice::Gap {
                first_missing,
                count,
            }) => out.gap(core, first_missing, count, Some(ts))?,
            Some(Notice::Restart {
                packet,
                stream_offset,
                expected,
            }) => core.warn(format!(
                "{name}: datagram at offset {} (packet {packet}, stream offset {stream_offset}): the sequence restarted at 1 where {expected} was expected (session {}; not a gap)",
                d.offset,
                h.segment.session_id()
            )),
            Some(Notice::Duplicate | Notice::OutOfOrder) | None => {}
        }
        for (seq, bytes) in h.messages() {
            out.message(core, seq, bytes, Some(ts))?;
            if core.stop {
                return Ok(());
            }
        }
        if let Some(inc) = h.incomplete {
            let lost = u64::from(inc.message_count.saturating_sub(inc.complete));
            let first = h
                .segment
                .first_seq()
                .saturating_add(u64::from(inc.complete));
            let what = if cut_record {
                "the capture cuts the segment"
            } else {
                "the segment is cut or damaged"
            };
            core.warn(format!(
                "{name}: datagram at offset {}: {what}: {} ({} of {} messages whole and replayed; {lost} lost)",
                d.offset, inc.error, inc.complete, inc.message_count
            ));
            if lost > 0 {
                out.gap(core, first, lost, Some(ts))?;
            }
        }
        if core.report.records.is_multiple_of(PROGRESS_EVERY) {
            progress(Progress {
                offset: reader.offset(),
                published: core.report.published,
            });
            if core.pacer.interrupted() {
                core.interrupt();
                break;
            }
        }
    }
    let st = tracker.stats();
    core.report.duplicates = st.duplicates;
    core.report.restarts = st.restarts;
    core.report.cut_segments = st.cut_segments;
    core.report.out_of_order = st.out_of_order;
    if st.foreign_session > 0 {
        let session = tracker.following().map_or(0, |f| f.0);
        core.warn(format!(
            "{} datagrams ({} messages) belong to other IEX-TP sessions than {session}: not replayed (choose a feed with --group/--port)",
            core.report.foreign_session_packets, core.report.foreign_session_messages
        ));
    }
    if st.foreign_protocol > 0 {
        let following = tracker.following().map(|f| f.1);
        core.warn(format!(
            "{} datagrams carry another IEX-TP message protocol than {following:?}: not replayed (choose a feed with --group/--port)",
            st.foreign_protocol
        ));
    }
    if let (Some(read_as), Some((_, sent))) = (out.pipeline.venue().protocol(), tracker.following())
        && ReplayProtocol::of_iex(read_as) != ReplayProtocol::of_iex(sent)
    {
        core.warn(format!(
            "the segments say they carry {sent:?}, read as {read_as:?} (--protocol): messages of types {read_as:?} does not send are counted undecodable"
        ));
    }
    if core.next_seq < tracker.next_seq() {
        core.next_seq = tracker.next_seq();
    }
    Ok(())
}

/// The message count an IEX-TP header declares, 0 when it has none.
fn iex_message_count(payload: &[u8]) -> u16 {
    Segment::parse(payload).map_or(0, |s| s.message_count())
}

/// Acts on the sequencer's events.
fn sequencer_events(
    seqr: &mut Sequencer,
    out: &mut ItchOut,
    core: &mut Core,
) -> Result<(), ReplayError> {
    while let Some(ev) = seqr.poll_event() {
        match ev {
            SeqEvent::LateJoin { first_seq } => core.report.late_join_first_seq = Some(first_seq),
            SeqEvent::EndOfSession { next_seq } => {
                core.next_seq = next_seq;
                out.end(core, next_seq)?;
            }
            SeqEvent::SessionStarted { .. } | SeqEvent::Gap { .. } | SeqEvent::Recovered { .. } => {
            }
        }
    }
    Ok(())
}

fn run_recording(
    reader: &mut RecordReader,
    out: &mut RawOut,
    core: &mut Core,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), ReplayError> {
    let mut last_bus_seq: Option<u64> = None;
    // Copy of the record being handled (the reader's buffer is borrowed by `rec`).
    let mut scratch: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let rec = match reader.next_record() {
            None => break,
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                if let RecordError::Truncated { offset, .. } = &e {
                    core.report.truncated = Some(Truncation {
                        offset: *offset,
                        detail: e.to_string(),
                    });
                    break;
                }
                return Err(e.into());
            }
        };
        core.report.records += 1;
        core.tick();
        let (bus_seq, msg_type, ts, offset) = (rec.seq, rec.msg_type, rec.ts_ns, rec.offset);
        scratch.clear();
        scratch.extend_from_slice(rec.payload);
        // A jump forward is a loss of the recorder; a repeat or a step back (the publisher
        // restarted and its sequence with it) is not.
        if let Some(prev) = last_bus_seq
            && let Some(lost) = bus_seq.checked_sub(prev).and_then(|d| d.checked_sub(1))
            && lost > 0
        {
            // The recorder lost records: say so on the stream.
            core.report.gaps += 1;
            core.report.gap_messages = core.report.gap_messages.saturating_add(lost);
            let header = HeaderFields {
                seq: core.next_seq,
                recv_ts_ns: core.clock.now_unix_ns(),
                ..HeaderFields::default()
            };
            let fields = fb::GapNoticeFields {
                first_missing_seq: core.next_seq,
                count: lost,
                recoverable: false,
                scope: fb::GapScope::Source,
            };
            out.bus_event(core, &header, Some(fields))?;
        }
        last_bus_seq = Some(bus_seq);
        if msg_type != mdbus_bus::ENVELOPE_MSG_TYPE {
            out.publish(core, msg_type, &scratch, core.next_seq)?;
            continue;
        }
        let Ok(env) = fb::read_verified(&scratch) else {
            core.report.invalid_envelopes += 1;
            let w = format!(
                "{}: record at offset {offset} is not a valid envelope (skipped)",
                reader.path().display(),
            );
            core.warn(w);
            continue;
        };
        let h = env.header();
        let event = env.event_type();
        let source_msg = venue::is_source_event(event);
        if source_msg {
            core.report.messages += 1;
            core.next_seq = h.seq().saturating_add(1);
        }
        let directory = env.event_as_stock_directory().map(|d| d.stock().0);
        let verdict = if source_msg {
            core.verdict(
                recorded_instrument(&env),
                h.exchange_ts_ns(),
                directory.as_ref(),
            )
        } else {
            Verdict::Publish
        };
        match verdict {
            Verdict::Skip => {
                core.report.filtered += 1;
                continue;
            }
            Verdict::Stop => {
                core.report.filtered += 1;
                break;
            }
            Verdict::Publish => {
                core.pacer
                    .wait_doing(ts, &mut out.idle, || out.publisher.hand_off());
                if core.pacer.interrupted() {
                    core.interrupt();
                    break;
                }
            }
            Verdict::PublishUnpaced => {}
        }
        let gap = env
            .event_as_gap_notice()
            .filter(|g| !g.recoverable())
            .map(|g| g.count());
        let end = event == fb::Event::EndOfSession;
        out.publish(core, msg_type, &scratch, core.next_seq)?;
        if let Some(n) = gap {
            core.report.gaps += 1;
            core.report.gap_messages = core.report.gap_messages.saturating_add(n);
        }
        if source_msg {
            core.report.published += 1;
        }
        if let Some(books) = &mut core.book {
            books.observe(&env);
        }
        if end {
            core.ended = true;
        }
        if core.report.records.is_multiple_of(PROGRESS_EVERY) {
            progress(Progress {
                offset: reader.offset(),
                published: core.report.published,
            });
            if core.pacer.interrupted() {
                core.interrupt();
                break;
            }
        }
    }
    Ok(())
}

/// The instrument a recorded envelope is about, as the symbol filter keys it: its
/// `instrument`, or for an envelope recorded before the schema named a venue (venue
/// `Unknown`, instrument 0), which can only be Nasdaq ITCH, its stock locate.
#[inline]
fn recorded_instrument(env: &fb::Envelope<'_>) -> u32 {
    crate::book::instrument_of(&fb::HeaderFields::of(env))
}

/// Whether `path` names a file a replay can read (a recording, ITCH, pcap or pcapng), judged
/// by its first bytes.
pub fn probe(path: &Path) -> Result<&'static str, ReplayError> {
    if is_recording(path)? {
        return Ok("recording");
    }
    Ok(match capture::open_capture(path)?.format() {
        CaptureFormat::ItchLengthPrefixed => "itch",
        CaptureFormat::Pcap { .. } => "pcap",
        CaptureFormat::PcapNg => "pcapng",
    })
}

#[cfg(test)]
mod tests;
