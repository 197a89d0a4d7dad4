//! What an exchange plays: ITCH messages out of a capture, in order, each with the timestamp
//! its pacing follows; or the IEX-TP segments of a pcap, whole, as captured.

use std::path::Path;

use mdbus_codecs::capture::{self, CaptureError, CaptureReader, Record};
use mdbus_codecs::iex::tp::Protocol;
use mdbus_codecs::moldudp64::{Packet, Session};
use mdbus_codecs::nasdaq::itch;

use super::ExchangeError;
use crate::record::is_recording;
use crate::replay::iex_protocol;

/// What the source skipped or found missing; counted, never dropped silently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Datagrams of a pcap that are not MoldUDP64 data (too short to parse), or whose
    /// message blocks are damaged (the blocks before the damage are played); of an IEX
    /// capture, datagrams that are not IEX-TP segments of the protocol played.
    pub skipped_datagrams: u64,
    /// Datagrams of another MoldUDP64 session than the first one seen.
    pub other_session: u64,
    /// Messages of a pcap seen before (line B, or a retransmission in the capture).
    pub duplicates: u64,
    /// Messages a pcap's sequence numbers say are missing from the capture; the session
    /// played numbers the messages it has from 1 without holes.
    pub missing: u64,
    /// Records the capture reader could not read (a truncated or damaged file).
    pub capture_errors: u64,
}

/// Where the messages come from.
enum Kind {
    /// A length-prefixed ITCH file: one message per record, paced by its exchange timestamp.
    Itch,
    /// A pcap or pcapng of MoldUDP64: the messages of each datagram in sequence order, paced
    /// by the datagram's capture timestamp.
    Mold {
        /// The datagram being read (a copy: the reader's buffer moves on).
        datagram: Box<[u8]>,
        len: usize,
        /// Capture timestamp of the datagram.
        ts: u64,
        /// Offset of the next message block in `datagram`, and blocks left.
        at: usize,
        left: u16,
        /// The session followed and the next sequence number expected (`None` before the
        /// first data packet).
        session: Option<Session>,
        expected: u64,
    },
    /// A pcap or pcapng of IEX-TP segments of one message protocol: each datagram whole.
    Iex(Protocol),
}

/// Reads the messages of a capture in the order a live feed sends them; see the
/// [module docs](super). Holds one datagram buffer; reads without allocating.
pub struct Source {
    reader: CaptureReader,
    kind: Kind,
    /// Timestamp of the last message (a message without one is paced with the one before).
    last_ts: u64,
    stats: SourceStats,
    /// The first error the capture reader reported (later ones are counted).
    first_error: Option<CaptureError>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("reader", &self.reader)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// Opens `path`: a length-prefixed ITCH file or a pcap/pcapng of MoldUDP64 (`iex`:
    /// `None`), or a pcap/pcapng of IEX-TP segments of protocol `iex`. An mdbus recording
    /// holds bus records, not market data, and is refused.
    pub fn open(path: &Path, iex: Option<Protocol>) -> Result<Source, ExchangeError> {
        if is_recording(path).unwrap_or(false) {
            return Err(ExchangeError::Config(format!(
                "{}: an mdbus recording holds bus records, not ITCH messages: play it with \
                 `mdbus replay`, or give the exchange an ITCH file or a pcap",
                path.display()
            )));
        }
        let reader = capture::open_capture(path)?;
        let kind = match (reader.format(), iex) {
            (capture::CaptureFormat::ItchLengthPrefixed, Some(p)) => {
                return Err(ExchangeError::Config(format!(
                    "{}: a length-prefixed ITCH file holds no IEX-TP segments ({p:?} asked for)",
                    path.display()
                )));
            }
            (capture::CaptureFormat::ItchLengthPrefixed, None) => Kind::Itch,
            (_, Some(p)) => Kind::Iex(p),
            _ => Kind::Mold {
                datagram: vec![0u8; capture_datagram_max()].into_boxed_slice(),
                len: 0,
                ts: 0,
                at: 0,
                left: 0,
                session: None,
                expected: 0,
            },
        };
        Ok(Source {
            reader,
            kind,
            last_ts: 0,
            stats: SourceStats::default(),
            first_error: None,
        })
    }

    /// What was skipped so far.
    pub fn stats(&self) -> SourceStats {
        self.stats
    }

    /// The first error the capture reader reported, if any.
    pub fn first_error(&self) -> Option<&CaptureError> {
        self.first_error.as_ref()
    }

    /// The capture's container format, for messages.
    pub fn format(&self) -> capture::CaptureFormat {
        self.reader.format()
    }

    fn note_error(&mut self, e: CaptureError) {
        self.stats.capture_errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    /// The IEX-TP protocol of the segments played, for an IEX capture.
    pub fn iex(&self) -> Option<Protocol> {
        match self.kind {
            Kind::Iex(p) => Some(p),
            _ => None,
        }
    }

    /// Copies the next IEX-TP segment of the played protocol into `out` as captured (a
    /// capture's cut last segment as far as the file holds it); returns its capture
    /// timestamp and length (a segment longer than `out`: the length, nothing copied), or
    /// `None` at the end. Other datagrams are counted as skipped.
    pub fn next_segment_into(&mut self, out: &mut [u8]) -> Option<(u64, usize)> {
        let Kind::Iex(protocol) = self.kind else {
            return None;
        };
        let copy = |payload: &[u8], out: &mut [u8]| {
            if let Some(dst) = out.get_mut(..payload.len()) {
                dst.copy_from_slice(payload);
            }
            payload.len()
        };
        loop {
            match self.reader.next_record() {
                None => return None,
                Some(Ok(Record::Udp(d))) => {
                    if iex_protocol(d.payload) != Some(protocol) {
                        self.stats.skipped_datagrams += 1;
                        continue;
                    }
                    return Some((d.ts_ns, copy(d.payload, out)));
                }
                Some(Ok(Record::Itch(_))) => self.stats.skipped_datagrams += 1,
                Some(Err(e)) => {
                    let truncated = matches!(e, CaptureError::Truncated { .. });
                    self.note_error(e);
                    if truncated
                        && let Some(d) = self.reader.cut_datagram()
                        && iex_protocol(d.payload) == Some(protocol)
                    {
                        return Some((d.ts_ns, copy(d.payload, out)));
                    }
                }
            }
        }
    }

    /// Copies the next message into `out`; returns its pacing timestamp and length, or
    /// `None` at the end of the capture. A message longer than `out` is not copied: its
    /// length is returned with 0 bytes written (the caller counts it as oversize).
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<(u64, usize)> {
        loop {
            if let Kind::Mold { .. } = self.kind
                && let Some(m) = self.next_block(out)
            {
                return Some(m);
            }
            match self.reader.next_record() {
                None => return None,
                Some(Err(e)) => self.note_error(e),
                Some(Ok(Record::Itch(r))) => {
                    let ts = itch::timestamp_of(r.message).unwrap_or(self.last_ts);
                    self.last_ts = ts;
                    let len = r.message.len();
                    if let Some(dst) = out.get_mut(..len) {
                        dst.copy_from_slice(r.message);
                    }
                    return Some((ts, len));
                }
                Some(Ok(Record::Udp(d))) => {
                    let Kind::Mold {
                        datagram,
                        len,
                        ts,
                        at,
                        left,
                        session,
                        expected,
                    } = &mut self.kind
                    else {
                        continue;
                    };
                    let Ok(p) = Packet::parse(d.payload) else {
                        self.stats.skipped_datagrams += 1;
                        continue;
                    };
                    let count = p.messages_len();
                    if count == 0 {
                        // A heartbeat or the end of the session: nothing to play.
                        continue;
                    }
                    let first = p.sequence_number();
                    let ours = *session.get_or_insert(p.session());
                    if ours != p.session() {
                        self.stats.other_session += 1;
                        continue;
                    }
                    // A sanitized capture numbers every packet 0: played in capture order.
                    let mut skip = 0u16;
                    if first != 0 {
                        if *expected == 0 {
                            *expected = first;
                        }
                        let next = first.saturating_add(u64::from(count));
                        if next <= *expected {
                            self.stats.duplicates += u64::from(count);
                            continue;
                        }
                        if first < *expected {
                            // Partly seen: play the new tail only.
                            let seen = *expected - first;
                            skip = u16::try_from(seen).unwrap_or(count);
                            self.stats.duplicates += seen;
                        } else if first > *expected {
                            self.stats.missing += first - *expected;
                        }
                        *expected = next;
                    }
                    let n = d.payload.len().min(datagram.len());
                    datagram[..n].copy_from_slice(&d.payload[..n]);
                    *len = n;
                    *ts = d.ts_ns;
                    *at = mdbus_codecs::moldudp64::HEADER_LEN;
                    *left = count;
                    for _ in 0..skip {
                        if !skip_block(datagram, *len, at) {
                            *left = 0;
                            break;
                        }
                        *left -= 1;
                    }
                }
            }
        }
    }

    /// The next block of the datagram being read, copied into `out`.
    fn next_block(&mut self, out: &mut [u8]) -> Option<(u64, usize)> {
        let Kind::Mold {
            datagram,
            len,
            ts,
            at,
            left,
            ..
        } = &mut self.kind
        else {
            return None;
        };
        if *left == 0 {
            return None;
        }
        let buf = &datagram[..*len];
        let block = buf
            .get(*at..*at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .and_then(|l| buf.get(*at + 2..*at + 2 + l));
        let Some(msg) = block else {
            // A damaged block: the rest of the datagram cannot be framed.
            *left = 0;
            self.stats.skipped_datagrams += 1;
            return None;
        };
        *at += 2 + msg.len();
        *left -= 1;
        let l = msg.len();
        if let Some(dst) = out.get_mut(..l) {
            dst.copy_from_slice(msg);
        }
        self.last_ts = *ts;
        Some((*ts, l))
    }
}

/// Moves `at` past one message block of `datagram[..len]`; `false` when it is damaged.
fn skip_block(datagram: &[u8], len: usize, at: &mut usize) -> bool {
    let buf = &datagram[..len];
    match buf.get(*at..*at + 2) {
        Some(b) => {
            let l = usize::from(u16::from_be_bytes([b[0], b[1]]));
            if *at + 2 + l > len {
                return false;
            }
            *at += 2 + l;
            true
        }
        None => false,
    }
}

/// Largest UDP payload a capture can hold.
fn capture_datagram_max() -> usize {
    crate::net::socket::MAX_DATAGRAM
}
