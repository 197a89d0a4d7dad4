//! IEX Transport Protocol (IEX-TP) v1: the segment framing of IEX's feeds, and a sans-IO
//! [`Tracker`] that sequences segments (gaps, duplicates, restarts, cut segments).
//!
//! Every UDP datagram is one segment: a 40-byte header, then `message_count` message blocks,
//! each a 2-byte little-endian length followed by that many message bytes.
//!
//! ```text
//!  offset  width  field (all integers little-endian)
//!       0      1  Version (1)
//!       1      1  Reserved
//!       2      2  Message Protocol ID (0x8002 TOPS 1.5, 0x8003 TOPS 1.6, 0x8004 DEEP,
//!                 0x8005 DEEP+)
//!       4      4  Channel ID
//!       8      4  Session ID
//!      12      2  Payload Length (bytes after the header)
//!      14      2  Message Count (0: a heartbeat)
//!      16      8  Stream Offset (bytes of payload sent before this segment)
//!      24      8  First Message Sequence Number (of a heartbeat: the next one)
//!      32      8  Send Time (ns since the Unix epoch)
//!      40      …  message blocks: Message Length (2), Message Data (Message Length bytes)
//! ```
//!
//! ```
//! use mdbus_codecs::iex::tp::{Protocol, Segment};
//!
//! let mut seg = [0u8; 40 + 3];
//! seg[0] = 1; // version
//! seg[2..4].copy_from_slice(&Protocol::DEEP.0.to_le_bytes());
//! seg[12..14].copy_from_slice(&3u16.to_le_bytes()); // payload length
//! seg[14..16].copy_from_slice(&1u16.to_le_bytes()); // message count
//! seg[24..32].copy_from_slice(&7u64.to_le_bytes()); // first sequence number
//! seg[40..43].copy_from_slice(&[1, 0, b'S']); // one 1-byte message
//! let s = Segment::parse(&seg)?;
//! assert_eq!((s.protocol(), s.first_seq(), s.message_count()), (Protocol::DEEP, 7, 1));
//! assert_eq!(s.messages().next(), Some(Ok(&b"S"[..])));
//! # Ok::<(), mdbus_codecs::iex::tp::TpError>(())
//! ```

use core::fmt;
use core::iter::FusedIterator;

/// Length of the IEX-TP segment header.
pub const HEADER_LEN: usize = 40;

/// The IEX-TP version this module reads.
pub const VERSION: u8 = 1;

/// An IEX-TP Message Protocol ID: which feed the segment's messages belong to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Protocol(pub u16);

impl Protocol {
    /// TOPS 1.5 (top of book, trades), the predecessor of 1.6: the same message layouts.
    pub const TOPS_1_5: Protocol = Protocol(0x8002);
    /// TOPS 1.6 (top of book, trades, status, auctions).
    pub const TOPS: Protocol = Protocol(0x8003);
    /// DEEP 1.0 (aggregated price levels, trades, status).
    pub const DEEP: Protocol = Protocol(0x8004);
    /// DEEP+ 1.0 (order by order, trades, status).
    pub const DEEP_PLUS: Protocol = Protocol(0x8005);

    /// The feed's name (`TOPS`, `DEEP`, `DEEP+`), `None` for an id this module does not know.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Protocol::TOPS_1_5 => Some("TOPS 1.5"),
            Protocol::TOPS => Some("TOPS"),
            Protocol::DEEP => Some("DEEP"),
            Protocol::DEEP_PLUS => Some("DEEP+"),
            _ => None,
        }
    }
}

impl fmt::Debug for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "Protocol({:#06x})", self.0),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Why bytes are not a (whole) IEX-TP segment. Small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TpError {
    /// The datagram is shorter than the 40-byte header.
    #[error("IEX-TP segment of {len} bytes is shorter than the 40-byte header")]
    ShortHeader {
        /// Length of the datagram.
        len: usize,
    },
    /// The version byte is not 1.
    #[error("IEX-TP version {version} is not supported (only version 1)")]
    Version {
        /// The version byte.
        version: u8,
    },
    /// More payload bytes than the header's Payload Length.
    #[error("IEX-TP segment carries {available} payload bytes, its header declares {declared}")]
    PayloadTooLong {
        /// Payload Length of the header.
        declared: u16,
        /// Bytes after the header.
        available: usize,
    },
    /// Fewer payload bytes than the header's Payload Length: the segment was cut (typically
    /// the last packet of a capture).
    #[error(
        "IEX-TP segment cut: {available} of {declared} payload bytes, block {index} at offset {offset} incomplete"
    )]
    Cut {
        /// Payload Length of the header.
        declared: u16,
        /// Bytes after the header.
        available: usize,
        /// Index of the first incomplete block (= complete messages before it).
        index: u16,
        /// Offset of that block in the datagram.
        offset: usize,
    },
    /// A message block's length field or bytes run past the declared payload.
    #[error(
        "IEX-TP message block {index} at offset {offset}: {len} bytes declared, {available} left"
    )]
    TruncatedBlock {
        /// Index of the block (0-based).
        index: u16,
        /// Offset of the block in the datagram.
        offset: usize,
        /// Length the block declares (0 when its length field itself is cut).
        len: u16,
        /// Bytes left after the length field.
        available: usize,
    },
    /// A message block of length 0 (every IEX message has at least its type byte).
    #[error("IEX-TP message block {index} at offset {offset} is empty")]
    EmptyBlock {
        /// Index of the block.
        index: u16,
        /// Offset of the block in the datagram.
        offset: usize,
    },
    /// The segment's sequence numbers run past the largest one (`u64::MAX - 1` is the last
    /// usable, so that the next expected one exists).
    #[error(
        "IEX-TP segment's {count} messages from sequence number {first_seq} overflow the sequence space"
    )]
    SequenceOverflow {
        /// First Message Sequence Number.
        first_seq: u64,
        /// Message Count.
        count: u16,
    },
    /// Bytes are left after the last of the `message_count` blocks.
    #[error("IEX-TP segment has {len} bytes at offset {offset} after its last block")]
    TrailingBytes {
        /// Offset of the first trailing byte.
        offset: usize,
        /// Number of trailing bytes.
        len: usize,
    },
}

/// A parsed IEX-TP segment borrowing the datagram.
///
/// [`Segment::parse`] checks the header (length, version, payload not longer than declared);
/// [`Segment::messages`] checks the blocks as it walks them, so the blocks before a damaged
/// or cut one are still delivered.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Segment<'a> {
    hdr: &'a [u8; HEADER_LEN],
    buf: &'a [u8],
}

#[inline]
fn le16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

#[inline]
fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

#[inline]
fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl<'a> Segment<'a> {
    /// Parses the header of a segment. A payload shorter than declared is accepted (see
    /// [`is_cut`](Self::is_cut)); one longer is an error.
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, TpError> {
        let hdr = buf
            .first_chunk::<HEADER_LEN>()
            .ok_or(TpError::ShortHeader { len: buf.len() })?;
        if hdr[0] != VERSION {
            return Err(TpError::Version { version: hdr[0] });
        }
        let s = Segment { hdr, buf };
        let available = buf.len() - HEADER_LEN;
        if available > usize::from(s.payload_length()) {
            return Err(TpError::PayloadTooLong {
                declared: s.payload_length(),
                available,
            });
        }
        Ok(s)
    }

    /// Version (1).
    #[inline]
    pub fn version(&self) -> u8 {
        self.hdr[0]
    }

    /// The reserved byte, as sent.
    #[inline]
    pub fn reserved(&self) -> u8 {
        self.hdr[1]
    }

    /// Message Protocol ID.
    #[inline]
    pub fn protocol(&self) -> Protocol {
        Protocol(le16(self.hdr, 2))
    }

    /// Channel ID.
    #[inline]
    pub fn channel_id(&self) -> u32 {
        le32(self.hdr, 4)
    }

    /// Session ID (changes when IEX starts a new session, typically daily).
    #[inline]
    pub fn session_id(&self) -> u32 {
        le32(self.hdr, 8)
    }

    /// Payload Length: bytes of message blocks after the header, as declared.
    #[inline]
    pub fn payload_length(&self) -> u16 {
        le16(self.hdr, 12)
    }

    /// Message Count (0: a heartbeat).
    #[inline]
    pub fn message_count(&self) -> u16 {
        le16(self.hdr, 14)
    }

    /// Stream Offset: payload bytes sent in the session's stream before this segment.
    #[inline]
    pub fn stream_offset(&self) -> u64 {
        le64(self.hdr, 16)
    }

    /// First Message Sequence Number (of a heartbeat: the next message's).
    #[inline]
    pub fn first_seq(&self) -> u64 {
        le64(self.hdr, 24)
    }

    /// Send Time, ns since the Unix epoch.
    #[inline]
    pub fn send_time(&self) -> u64 {
        le64(self.hdr, 32)
    }

    /// Whether the segment carries no message.
    #[inline]
    pub fn is_heartbeat(&self) -> bool {
        self.message_count() == 0
    }

    /// Whether fewer payload bytes arrived than the header declares.
    #[inline]
    pub fn is_cut(&self) -> bool {
        self.buf.len() - HEADER_LEN < usize::from(self.payload_length())
    }

    /// The sequence number after the segment's last message; `None` past `u64::MAX`.
    #[inline]
    pub fn next_seq(&self) -> Option<u64> {
        self.first_seq()
            .checked_add(u64::from(self.message_count()))
    }

    /// The whole datagram.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Iterates over the message blocks: each message's bytes (without the length). A block
    /// that does not fit ends the walk with an error naming its index and offset
    /// ([`TpError::Cut`] when the segment was cut); bytes after the last block are
    /// [`TpError::TrailingBytes`].
    #[inline]
    pub fn messages(&self) -> Messages<'a> {
        Messages {
            buf: self.buf,
            declared: self.payload_length(),
            pos: HEADER_LEN,
            index: 0,
            count: self.message_count(),
            done: false,
        }
    }

    /// Walks the blocks once: the number of complete messages and, if the segment is not
    /// whole, why.
    pub fn check(&self) -> (u16, Option<TpError>) {
        let mut it = self.messages();
        let mut n = 0u16;
        for m in it.by_ref() {
            match m {
                Ok(_) => n = n.saturating_add(1),
                Err(e) => return (n, Some(e)),
            }
        }
        (n, None)
    }
}

impl fmt::Debug for Segment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("protocol", &self.protocol())
            .field("channel_id", &self.channel_id())
            .field("session_id", &self.session_id())
            .field("payload_length", &self.payload_length())
            .field("message_count", &self.message_count())
            .field("stream_offset", &self.stream_offset())
            .field("first_seq", &self.first_seq())
            .field("send_time", &self.send_time())
            .field("len", &self.buf.len())
            .finish()
    }
}

/// Iterator over the message blocks of a [`Segment`].
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    buf: &'a [u8],
    declared: u16,
    pos: usize,
    index: u16,
    count: u16,
    done: bool,
}

impl Messages<'_> {
    /// Offset in the datagram of the next block.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Index of the next block.
    pub fn index(&self) -> u16 {
        self.index
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<&'a [u8], TpError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (index, offset) = (self.index, self.pos);
        let rest = self.buf.get(offset..).unwrap_or_default();
        // Bytes of the declared payload left from here (the datagram may hold fewer: cut).
        let declared_end = HEADER_LEN + usize::from(self.declared);
        let declared_rest = declared_end.saturating_sub(offset);
        let cut = |s: &Self| TpError::Cut {
            declared: s.declared,
            available: s.buf.len() - HEADER_LEN,
            index,
            offset,
        };
        if index == self.count {
            self.done = true;
            return (declared_rest != 0)
                .then(|| {
                    if rest.len() < declared_rest {
                        cut(self)
                    } else {
                        TpError::TrailingBytes {
                            offset,
                            len: declared_rest,
                        }
                    }
                })
                .map(Err);
        }
        let len = match rest.first_chunk::<2>() {
            Some(&l) if declared_rest >= 2 => u16::from_le_bytes(l),
            _ => {
                self.done = true;
                return Some(Err(if declared_rest >= 2 {
                    cut(self)
                } else {
                    TpError::TruncatedBlock {
                        index,
                        offset,
                        len: 0,
                        available: declared_rest,
                    }
                }));
            }
        };
        let end = 2 + usize::from(len);
        if len == 0 {
            self.done = true;
            return Some(Err(TpError::EmptyBlock { index, offset }));
        }
        if end > declared_rest {
            self.done = true;
            return Some(Err(TpError::TruncatedBlock {
                index,
                offset,
                len,
                available: declared_rest - 2,
            }));
        }
        match rest.get(2..end) {
            Some(msg) => {
                self.pos = offset + end;
                self.index += 1;
                Some(Ok(msg))
            }
            None => {
                self.done = true;
                Some(Err(cut(self)))
            }
        }
    }
}

impl FusedIterator for Messages<'_> {}

/// Counters of a [`Tracker`]: the MoldUDP64 sequencer's where they apply, plus restarts and
/// cut segments. Messages are counted one by one unless named.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Datagrams handled.
    pub packets: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Segments with no message.
    pub heartbeats: u64,
    /// Jumps forward in the sequence (each a missing range).
    pub gaps_detected: u64,
    /// Messages in those ranges, and messages of cut or damaged segments not delivered.
    pub missing_messages: u64,
    /// Messages received again (below the next expected sequence number).
    pub duplicates: u64,
    /// Messages that arrived after the range they belong to was declared missing (not
    /// delivered: the stream had moved on).
    pub out_of_order: u64,
    /// Datagrams that are not IEX-TP v1 segments, or whose blocks are damaged.
    pub malformed: u64,
    /// Times the first-message sequence number restarted at 1 within the session.
    pub restarts: u64,
    /// Segments whose payload was shorter than declared.
    pub cut_segments: u64,
    /// Segments of another session id than the one followed.
    pub foreign_session: u64,
    /// Segments of another message protocol than the one followed.
    pub foreign_protocol: u64,
}

/// What a [`Tracker`] noticed about a segment, besides delivering it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Messages are missing before this segment.
    Gap {
        /// First missing sequence number.
        first_missing: u64,
        /// Number of missing messages.
        count: u64,
    },
    /// The sequence restarted at 1 within the session: the tracker's state was reset and
    /// delivery goes on from 1.
    Restart {
        /// Index of the datagram (0-based, as handed to the tracker).
        packet: u64,
        /// Stream Offset of the restarting segment.
        stream_offset: u64,
        /// The sequence number expected before the restart.
        expected: u64,
    },
    /// Every message of the segment was received before (none delivered).
    Duplicate,
    /// Every message belongs to a range declared missing (none delivered).
    OutOfOrder,
}

/// Why a segment delivered fewer messages than it counts: cut short, or a damaged block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incomplete {
    /// Index of the datagram (0-based).
    pub packet: u64,
    /// Complete messages in it (delivered, unless already received).
    pub complete: u16,
    /// Messages its header counts.
    pub message_count: u16,
    /// What ended the walk ([`TpError::Cut`] names the payload bytes and the offset).
    pub error: TpError,
}

/// Why a datagram was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Not an IEX-TP v1 segment.
    #[error("packet {packet}: {error}")]
    Malformed {
        /// Index of the datagram (0-based).
        packet: u64,
        /// Why.
        error: TpError,
    },
    /// A segment of another session than the one followed.
    #[error("packet {packet}: session {got}, following session {following}")]
    ForeignSession {
        /// Index of the datagram.
        packet: u64,
        /// The session followed.
        following: u32,
        /// The segment's.
        got: u32,
    },
    /// A segment of another message protocol than the one followed.
    #[error("packet {packet}: protocol {got}, following {following}")]
    ForeignProtocol {
        /// Index of the datagram.
        packet: u64,
        /// The protocol followed.
        following: Protocol,
        /// The segment's.
        got: Protocol,
    },
}

/// A segment the tracker took: which of its messages to deliver, and what it noticed.
#[derive(Clone, Copy, Debug)]
pub struct Handled<'a> {
    /// The segment.
    pub segment: Segment<'a>,
    /// Gap, restart, duplicate or out-of-order segment, if any.
    pub notice: Option<Notice>,
    /// Set when the segment is cut or damaged.
    pub incomplete: Option<Incomplete>,
    /// Leading messages not delivered (already received).
    pub skip: u16,
    /// Messages delivered after those.
    pub deliver: u16,
}

impl<'a> Handled<'a> {
    /// The messages to deliver, with their sequence numbers, in order.
    #[inline]
    pub fn messages(&self) -> impl Iterator<Item = (u64, &'a [u8])> + use<'a> {
        let first = self.segment.first_seq();
        let skip = usize::from(self.skip);
        self.segment
            .messages()
            .map_while(Result::ok)
            .enumerate()
            .skip(skip)
            .take(usize::from(self.deliver))
            .map(move |(i, m)| (first.saturating_add(i as u64), m))
    }
}

/// Sequences the segments of one IEX-TP stream (one session id, one protocol), sans IO.
///
/// It follows the session and protocol of the first segment it takes. A segment whose first
/// sequence number is the one expected is delivered whole; one beyond it reveals a gap
/// (counted, reported, delivered); one below it is a duplicate (its new tail, if any, is
/// delivered). There is no reorder store: IEX-TP has no re-request channel here, so a gap is
/// declared at once.
///
/// **Restarts.** IEX restarts the sequence at 1 within a session id (its DEEP sample does so
/// eleven times). A segment (heartbeat or data) whose first sequence number is 1 while a
/// later one is expected is a restart — counted, reported with the packet index and stream
/// offset, the state reset — unless the segment before it also started at 1 with the same
/// message count, in which case it is a repeat of that segment (a duplicate). The rule cannot
/// tell a restart from a duplicate of a session's first segment arriving after later ones;
/// the first reading is the useful one for captures and live feeds alike.
///
/// **Cut segments.** A payload shorter than its Payload Length (a capture's snap length or a
/// truncated write) is reported as [`Incomplete`] with the count of complete messages, which
/// are delivered; the messages cut off count as missing and the stream moves past them.
///
/// ```
/// use mdbus_codecs::iex::tp::{Notice, Tracker};
/// # fn seg(first: u64, count: u16) -> Vec<u8> {
/// #     let mut s = vec![0u8; 40];
/// #     s[0] = 1;
/// #     s[2..4].copy_from_slice(&0x8004u16.to_le_bytes());
/// #     s[14..16].copy_from_slice(&count.to_le_bytes());
/// #     s[24..32].copy_from_slice(&first.to_le_bytes());
/// #     for _ in 0..count { s.extend_from_slice(&[1, 0, b'S']); }
/// #     let len = (s.len() - 40) as u16;
/// #     s[12..14].copy_from_slice(&len.to_le_bytes());
/// #     s
/// # }
/// let mut t = Tracker::new();
/// assert_eq!(t.handle(&seg(1, 2))?.deliver, 2);
/// assert_eq!(t.handle(&seg(5, 1))?.notice, Some(Notice::Gap { first_missing: 3, count: 2 }));
/// assert!(matches!(t.handle(&seg(1, 1))?.notice, Some(Notice::Restart { packet: 2, .. })));
/// assert_eq!((t.stats().restarts, t.stats().messages, t.next_seq()), (1, 4, 2));
/// # Ok::<(), mdbus_codecs::iex::tp::Rejected>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    /// Session and protocol followed (set by the first segment taken).
    follow: Option<(u32, Protocol)>,
    /// Whether a segment was taken (`next` is meaningful).
    started: bool,
    /// Next expected sequence number.
    next: u64,
    /// First sequence number and message count of the previous segment taken.
    last: (u64, u16),
    /// The most recent missing range, `[start, end)`.
    last_gap: (u64, u64),
    stats: TrackerStats,
}

impl Tracker {
    /// A tracker that follows the first segment it is given.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters so far.
    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    /// The next sequence number expected (0 before the first segment).
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The session id and protocol followed, once a segment was taken.
    pub fn following(&self) -> Option<(u32, Protocol)> {
        self.follow
    }

    /// Handles one datagram. Never panics; every outcome is counted.
    pub fn handle<'a>(&mut self, datagram: &'a [u8]) -> Result<Handled<'a>, Rejected> {
        let packet = self.stats.packets;
        self.stats.packets += 1;
        let segment = Segment::parse(datagram).map_err(|error| {
            self.stats.malformed += 1;
            Rejected::Malformed { packet, error }
        })?;
        let Some(seg_next) = segment.next_seq() else {
            self.stats.malformed += 1;
            let error = TpError::SequenceOverflow {
                first_seq: segment.first_seq(),
                count: segment.message_count(),
            };
            return Err(Rejected::Malformed { packet, error });
        };
        let (session, protocol) = (segment.session_id(), segment.protocol());
        match self.follow {
            None => self.follow = Some((session, protocol)),
            Some((s, _)) if s != session => {
                self.stats.foreign_session += 1;
                return Err(Rejected::ForeignSession {
                    packet,
                    following: s,
                    got: session,
                });
            }
            Some((_, p)) if p != protocol => {
                self.stats.foreign_protocol += 1;
                return Err(Rejected::ForeignProtocol {
                    packet,
                    following: p,
                    got: protocol,
                });
            }
            Some(_) => {}
        }
        let count = segment.message_count();
        let first = segment.first_seq();
        let (complete, error) = segment.check();
        let incomplete = error.map(|error| {
            if matches!(error, TpError::Cut { .. }) {
                self.stats.cut_segments += 1;
            } else {
                self.stats.malformed += 1;
            }
            Incomplete {
                packet,
                complete,
                message_count: count,
                error,
            }
        });
        if count == 0 {
            self.stats.heartbeats += 1;
        }
        let mut notice = None;
        if !self.started {
            self.started = true;
            self.next = first;
        } else if first == 1 && self.next > 1 && self.last != (1, count) {
            self.stats.restarts += 1;
            notice = Some(Notice::Restart {
                packet,
                stream_offset: segment.stream_offset(),
                expected: self.next,
            });
            self.next = 1;
            self.last_gap = (0, 0);
        }
        self.last = (first, count);
        let (mut skip, mut deliver) = (0u16, complete);
        if first > self.next {
            let missing = first - self.next;
            self.stats.gaps_detected += 1;
            self.stats.missing_messages = self.stats.missing_messages.saturating_add(missing);
            notice = Some(Notice::Gap {
                first_missing: self.next,
                count: missing,
            });
            self.last_gap = (self.next, first);
        } else if first < self.next {
            // Messages below `next` were delivered or declared missing.
            let behind = (self.next - first).min(u64::from(complete));
            // `behind <= complete`, a u16.
            skip = u16::try_from(behind).unwrap_or(complete);
            deliver = complete - skip;
            let behind = u64::from(skip);
            let (gs, ge) = self.last_gap;
            if first >= gs && first.saturating_add(behind) <= ge {
                self.stats.out_of_order += behind;
                self.stats.missing_messages = self.stats.missing_messages.saturating_sub(behind);
                if deliver == 0 && behind > 0 {
                    notice = Some(Notice::OutOfOrder);
                }
            } else {
                self.stats.duplicates += behind;
                if deliver == 0 && behind > 0 {
                    notice = Some(Notice::Duplicate);
                }
            }
        }
        if incomplete.is_some() {
            let lost = u64::from(count - complete);
            self.stats.missing_messages = self.stats.missing_messages.saturating_add(lost);
        }
        self.stats.messages += u64::from(deliver);
        // A cut segment's lost messages were counted missing above: the stream moves past
        // all `count` of them.
        self.next = self.next.max(seg_next);
        Ok(Handled {
            segment,
            notice,
            incomplete,
            skip,
            deliver,
        })
    }
}

#[cfg(test)]
mod tests;
