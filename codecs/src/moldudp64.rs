//! MoldUDP64: Nasdaq's framing of sequenced messages in UDP datagrams. Sans-IO: bytes in,
//! values out, no sockets.
//!
//! A downstream packet is a 20-byte header followed by message blocks:
//!
//! ```text
//!  0            10                 18              20
//!  +------------+------------------+---------------+------------------------------+
//!  | session    | sequence number  | message count | message blocks ...           |
//!  | 10 x ASCII | u64 big-endian   | u16 BE        | (u16 BE length, bytes) x N   |
//!  +------------+------------------+---------------+------------------------------+
//! ```
//!
//! The sequence number is that of the first message in the packet. A count of 0 is a
//! heartbeat (the sequence number is then the next one expected), and 0xFFFF marks the end of
//! the session. A re-request sent upstream is the 20-byte header alone: session, first
//! sequence number wanted, and how many messages.
//!
//! ```
//! use mdbus_codecs::moldudp64::{Packet, PacketBuilder, Session};
//!
//! let mut buf = [0u8; 1400];
//! let mut b = PacketBuilder::new(&mut buf, Session(*b"000010059B"), 42)?;
//! b.push(b"first message")?;
//! b.push(b"second")?;
//! let len = b.finish();
//!
//! let p = Packet::parse(&buf[..len])?;
//! assert_eq!(p.sequence_number(), 42);
//! let msgs: Vec<&[u8]> = p.messages().collect::<Result<_, _>>()?;
//! assert_eq!(msgs, [&b"first message"[..], &b"second"[..]]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;
use core::iter::FusedIterator;

/// Length of the packet header (and of a re-request packet).
pub const HEADER_LEN: usize = 20;
/// Message count of a heartbeat packet.
pub const HEARTBEAT_COUNT: u16 = 0;
/// Message count of an end-of-session packet.
pub const END_OF_SESSION_COUNT: u16 = 0xFFFF;
/// The largest message count a data packet may carry (0xFFFF is reserved).
pub const MAX_MESSAGE_COUNT: u16 = 0xFFFE;

/// A MoldUDP64 session name: 10 ASCII bytes (for example `000010059B`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Session(pub [u8; 10]);

impl Session {
    /// A session name from text: 1 to 10 printable ASCII characters (space included), not
    /// all spaces, padded with spaces to the protocol's 10 bytes. The error says why not.
    pub fn parse(s: &str) -> Result<Session, String> {
        let mut name = Session([b' '; 10]);
        let max = name.0.len();
        if let Some(c) = s.chars().find(|c| !matches!(c, ' '..='~')) {
            return Err(format!(
                "{c:?} is not a printable ASCII character (a session name is 1 to {max} of them)"
            ));
        }
        if s.len() > max {
            return Err(format!(
                "{} characters: a session name is at most {max}",
                s.len()
            ));
        }
        if s.trim().is_empty() {
            return Err(format!(
                "a session name is 1 to {max} printable ASCII characters, not blank"
            ));
        }
        name.0[..s.len()].copy_from_slice(s.as_bytes());
        Ok(name)
    }

    /// The session name as text, when it is ASCII (it should always be).
    pub fn as_str(&self) -> Option<&str> {
        if self.0.is_ascii() {
            core::str::from_utf8(&self.0).ok()
        } else {
            None
        }
    }
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.escape_ascii())
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Session(\"{}\")", self.0.escape_ascii())
    }
}

/// Why a MoldUDP64 packet could not be parsed or built. Small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum MoldError {
    /// The datagram is shorter than the 20-byte header.
    #[error("MoldUDP64 packet of {len} bytes is shorter than the 20-byte header")]
    ShortHeader {
        /// Length of the datagram.
        len: usize,
    },
    /// A message block's 2-byte length runs past the end of the datagram.
    #[error("MoldUDP64 message block {index} at offset {offset}: length field truncated")]
    TruncatedBlockLength {
        /// Index of the block in the packet (0-based).
        index: u16,
        /// Offset of the block in the datagram.
        offset: usize,
    },
    /// A message block's bytes run past the end of the datagram.
    #[error(
        "MoldUDP64 message block {index} at offset {offset}: {len} bytes declared, {available} left"
    )]
    TruncatedBlock {
        /// Index of the block in the packet (0-based).
        index: u16,
        /// Offset of the block in the datagram.
        offset: usize,
        /// Length declared by the block.
        len: u16,
        /// Bytes left after the length field.
        available: usize,
    },
    /// Bytes are left after the last of the `message_count` blocks.
    #[error("MoldUDP64 packet has {len} trailing bytes at offset {offset} after its last block")]
    TrailingBytes {
        /// Offset of the first trailing byte.
        offset: usize,
        /// Number of trailing bytes.
        len: usize,
    },
    /// The output buffer cannot hold the header.
    #[error("buffer of {available} bytes cannot hold a {needed}-byte MoldUDP64 header")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The message does not fit in the space left in the packet (the caller sends this packet
    /// and starts a new one).
    #[error("message of {len} bytes does not fit: {remaining} bytes left in the packet")]
    PacketFull {
        /// Length of the message.
        len: usize,
        /// Bytes left in the packet, block length field included.
        remaining: usize,
    },
    /// A message longer than a block length can express (65,535 bytes).
    #[error("message of {len} bytes is too long for a MoldUDP64 block")]
    MessageTooLong {
        /// Length of the message.
        len: usize,
    },
    /// The packet already holds [`MAX_MESSAGE_COUNT`] messages.
    #[error("MoldUDP64 packet already holds the maximum of 65,534 messages")]
    TooManyMessages,
}

#[inline]
fn header(buf: &[u8]) -> Result<&[u8; HEADER_LEN], MoldError> {
    buf.first_chunk::<HEADER_LEN>()
        .ok_or(MoldError::ShortHeader { len: buf.len() })
}

#[inline]
fn put_header(out: &mut [u8], session: Session, sequence_number: u64, count: u16) {
    out[..10].copy_from_slice(&session.0);
    out[10..18].copy_from_slice(&sequence_number.to_be_bytes());
    out[18..20].copy_from_slice(&count.to_be_bytes());
}

/// A parsed downstream packet borrowing the datagram.
///
/// [`Packet::parse`] checks the header only; the message blocks are checked as
/// [`Packet::messages`] walks them, so the blocks before a damaged one are still delivered.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Packet<'a> {
    hdr: &'a [u8; HEADER_LEN],
    buf: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parses the header of a downstream packet.
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, MoldError> {
        Ok(Self {
            hdr: header(buf)?,
            buf,
        })
    }

    #[inline]
    fn hdr(&self) -> &'a [u8; HEADER_LEN] {
        self.hdr
    }

    /// The session name.
    #[inline]
    pub fn session(&self) -> Session {
        let h = self.hdr();
        Session([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]])
    }

    /// Sequence number of the first message in the packet (for a heartbeat or end of
    /// session: the next sequence number expected).
    #[inline]
    pub fn sequence_number(&self) -> u64 {
        let h = self.hdr();
        u64::from_be_bytes([h[10], h[11], h[12], h[13], h[14], h[15], h[16], h[17]])
    }

    /// The raw message count field.
    #[inline]
    pub fn message_count(&self) -> u16 {
        let h = self.hdr();
        u16::from_be_bytes([h[18], h[19]])
    }

    /// `true` for a heartbeat (count 0).
    #[inline]
    pub fn is_heartbeat(&self) -> bool {
        self.message_count() == HEARTBEAT_COUNT
    }

    /// `true` for an end-of-session packet (count 0xFFFF).
    #[inline]
    pub fn is_end_of_session(&self) -> bool {
        self.message_count() == END_OF_SESSION_COUNT
    }

    /// Number of messages the packet carries (0 for heartbeats and end of session).
    #[inline]
    pub fn messages_len(&self) -> u16 {
        match self.message_count() {
            END_OF_SESSION_COUNT => 0,
            n => n,
        }
    }

    /// Sequence number one past the last message of the packet.
    #[inline]
    pub fn next_sequence_number(&self) -> u64 {
        self.sequence_number()
            .wrapping_add(u64::from(self.messages_len()))
    }

    /// The whole datagram.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Iterates over the message blocks. Yields each message's bytes (without the block
    /// length); a truncated block is yielded as an error naming its index and offset and ends
    /// the walk; bytes left after the last block are yielded as [`MoldError::TrailingBytes`].
    #[inline]
    pub fn messages(&self) -> Messages<'a> {
        Messages {
            buf: self.buf,
            pos: HEADER_LEN,
            index: 0,
            count: self.messages_len(),
            done: false,
        }
    }
}

impl fmt::Debug for Packet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packet")
            .field("session", &self.session())
            .field("sequence_number", &self.sequence_number())
            .field("message_count", &self.message_count())
            .field("len", &self.buf.len())
            .finish()
    }
}

/// Iterator over the message blocks of a [`Packet`].
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    buf: &'a [u8],
    pos: usize,
    index: u16,
    count: u16,
    done: bool,
}

impl<'a> Messages<'a> {
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
    type Item = Result<&'a [u8], MoldError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (index, offset) = (self.index, self.pos);
        let rest = self.buf.get(offset..).unwrap_or_default();
        if index == self.count {
            self.done = true;
            return (!rest.is_empty()).then_some(Err(MoldError::TrailingBytes {
                offset,
                len: rest.len(),
            }));
        }
        let Some(&[hi, lo]) = rest.first_chunk::<2>() else {
            self.done = true;
            return Some(Err(MoldError::TruncatedBlockLength { index, offset }));
        };
        let len = u16::from_be_bytes([hi, lo]);
        match rest.get(2..2 + usize::from(len)) {
            Some(msg) => {
                self.pos = offset + 2 + usize::from(len);
                self.index += 1;
                Some(Ok(msg))
            }
            None => {
                self.done = true;
                Some(Err(MoldError::TruncatedBlock {
                    index,
                    offset,
                    len,
                    available: rest.len() - 2,
                }))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            (0, Some(usize::from(self.count - self.index) + 1))
        }
    }
}

impl FusedIterator for Messages<'_> {}

/// Builds one downstream packet in a caller's buffer, without allocating. The buffer's length
/// is the packet's size limit (pass a slice of the path MTU less the IP and UDP headers).
#[derive(Debug)]
pub struct PacketBuilder<'b> {
    buf: &'b mut [u8],
    len: usize,
    count: u16,
}

impl<'b> PacketBuilder<'b> {
    /// Starts a packet whose first message has `sequence_number`.
    pub fn new(
        buf: &'b mut [u8],
        session: Session,
        sequence_number: u64,
    ) -> Result<Self, MoldError> {
        if buf.len() < HEADER_LEN {
            return Err(MoldError::BufferTooSmall {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        put_header(buf, session, sequence_number, 0);
        Ok(Self {
            buf,
            len: HEADER_LEN,
            count: 0,
        })
    }

    /// Appends one message block; on error the packet is unchanged.
    pub fn push(&mut self, msg: &[u8]) -> Result<(), MoldError> {
        self.push_with(msg.len(), |out| out.copy_from_slice(msg))
    }

    /// Appends one message block of `len` bytes written in place by `write`, which receives
    /// exactly `len` bytes (for encoding a message straight into the packet). On error the
    /// packet is unchanged and `write` is not called.
    pub fn push_with(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut [u8]),
    ) -> Result<(), MoldError> {
        let Ok(len16) = u16::try_from(len) else {
            return Err(MoldError::MessageTooLong { len });
        };
        if self.count == MAX_MESSAGE_COUNT {
            return Err(MoldError::TooManyMessages);
        }
        let remaining = self.remaining();
        let Some(block) = self.buf.get_mut(self.len..self.len + 2 + len) else {
            return Err(MoldError::PacketFull { len, remaining });
        };
        block[..2].copy_from_slice(&len16.to_be_bytes());
        write(&mut block[2..]);
        self.len += 2 + len;
        self.count += 1;
        self.buf[18..20].copy_from_slice(&self.count.to_be_bytes());
        Ok(())
    }

    /// Bytes left in the buffer (a message needs its length plus 2).
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Messages pushed so far.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Bytes of the packet so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when no message has been pushed (the packet is then a heartbeat).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Ends the packet; returns its length (the packet is `buf[..len]`).
    pub fn finish(self) -> usize {
        self.len
    }
}

/// Writes a heartbeat packet (count 0; `next_sequence_number` is the next message expected).
pub fn encode_heartbeat(
    buf: &mut [u8],
    session: Session,
    next_sequence_number: u64,
) -> Result<usize, MoldError> {
    encode_header(buf, session, next_sequence_number, HEARTBEAT_COUNT)
}

/// Writes an end-of-session packet (count 0xFFFF).
pub fn encode_end_of_session(
    buf: &mut [u8],
    session: Session,
    next_sequence_number: u64,
) -> Result<usize, MoldError> {
    encode_header(buf, session, next_sequence_number, END_OF_SESSION_COUNT)
}

/// Writes a downstream packet header: `count` message blocks follow (or 0: heartbeat,
/// 0xFFFF: end of session). For writers that append blocks themselves.
pub fn encode_header(
    buf: &mut [u8],
    session: Session,
    seq: u64,
    count: u16,
) -> Result<usize, MoldError> {
    let Some(out) = buf.get_mut(..HEADER_LEN) else {
        return Err(MoldError::BufferTooSmall {
            needed: HEADER_LEN,
            available: buf.len(),
        });
    };
    put_header(out, session, seq, count);
    Ok(HEADER_LEN)
}

/// A re-request packet, sent upstream to the retransmission server: resend `message_count`
/// messages of `session` from `sequence_number` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestPacket {
    /// Session the messages belong to.
    pub session: Session,
    /// First sequence number wanted.
    pub sequence_number: u64,
    /// Number of messages wanted.
    pub message_count: u16,
}

impl RequestPacket {
    /// Parses a re-request. It is exactly 20 bytes; longer input is reported as trailing bytes.
    pub fn decode(buf: &[u8]) -> Result<Self, MoldError> {
        let h = header(buf)?;
        if buf.len() > HEADER_LEN {
            return Err(MoldError::TrailingBytes {
                offset: HEADER_LEN,
                len: buf.len() - HEADER_LEN,
            });
        }
        let p = Packet { hdr: h, buf: h };
        Ok(Self {
            session: p.session(),
            sequence_number: p.sequence_number(),
            message_count: p.message_count(),
        })
    }

    /// Writes the re-request; returns its length (20).
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, MoldError> {
        encode_header(buf, self.session, self.sequence_number, self.message_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Session = Session(*b"000010059B");

    #[test]
    fn build_and_parse() {
        let mut buf = [0u8; 64];
        let mut b = PacketBuilder::new(&mut buf, S, 7).unwrap();
        assert!(b.is_empty());
        b.push(b"abc").unwrap();
        b.push_with(2, |o| o.copy_from_slice(b"xy")).unwrap();
        b.push(b"").unwrap();
        assert_eq!(b.count(), 3);
        assert_eq!(b.len(), 20 + 5 + 4 + 2);
        let n = b.finish();
        let p = Packet::parse(&buf[..n]).unwrap();
        assert_eq!(p.session(), S);
        assert_eq!(p.session().as_str(), Some("000010059B"));
        assert_eq!(p.sequence_number(), 7);
        assert_eq!(p.message_count(), 3);
        assert_eq!(p.next_sequence_number(), 10);
        assert!(!p.is_heartbeat() && !p.is_end_of_session());
        let v: Vec<_> = p.messages().collect();
        assert_eq!(v, [Ok(&b"abc"[..]), Ok(&b"xy"[..]), Ok(&b""[..])]);
    }

    #[test]
    fn builder_respects_mtu() {
        let mut buf = [0u8; 30];
        let mut b = PacketBuilder::new(&mut buf, S, 1).unwrap();
        b.push(b"12345678").unwrap(); // 20 + 10 = 30
        assert_eq!(b.remaining(), 0);
        assert_eq!(
            b.push(b"x"),
            Err(MoldError::PacketFull {
                len: 1,
                remaining: 0
            })
        );
        let mut called = false;
        assert!(b.push_with(1, |_| called = true).is_err());
        assert!(!called);
        assert_eq!(b.count(), 1);
        assert_eq!(
            PacketBuilder::new(&mut [0u8; 19], S, 1).err(),
            Some(MoldError::BufferTooSmall {
                needed: 20,
                available: 19
            })
        );
        let mut big = vec![0u8; 70_000];
        let mut b = PacketBuilder::new(&mut big, S, 1).unwrap();
        assert_eq!(
            b.push(&[0u8; 65_536]),
            Err(MoldError::MessageTooLong { len: 65_536 })
        );
    }

    #[test]
    fn builder_stops_at_max_count() {
        let mut buf = vec![0u8; HEADER_LEN + 2 * usize::from(MAX_MESSAGE_COUNT) + 10];
        let mut b = PacketBuilder::new(&mut buf, S, 1).unwrap();
        for _ in 0..MAX_MESSAGE_COUNT {
            b.push(b"").unwrap();
        }
        assert_eq!(b.push(b""), Err(MoldError::TooManyMessages));
        let n = b.finish();
        let p = Packet::parse(&buf[..n]).unwrap();
        assert_eq!(
            p.messages().filter(Result::is_ok).count(),
            usize::from(MAX_MESSAGE_COUNT)
        );
    }

    #[test]
    fn heartbeat_and_end_of_session() {
        let mut buf = [0u8; 20];
        encode_heartbeat(&mut buf, S, 99).unwrap();
        let p = Packet::parse(&buf).unwrap();
        assert!(p.is_heartbeat());
        assert_eq!(p.sequence_number(), 99);
        assert_eq!(p.messages().count(), 0);
        encode_end_of_session(&mut buf, S, 99).unwrap();
        let p = Packet::parse(&buf).unwrap();
        assert!(p.is_end_of_session());
        assert_eq!(p.messages_len(), 0);
        assert_eq!(p.next_sequence_number(), 99);
        assert_eq!(p.messages().count(), 0);
    }

    #[test]
    fn errors_name_block_and_offset() {
        assert_eq!(
            Packet::parse(&[0; 19]),
            Err(MoldError::ShortHeader { len: 19 })
        );
        let mut buf = [0u8; 64];
        let mut b = PacketBuilder::new(&mut buf, S, 1).unwrap();
        b.push(b"abc").unwrap();
        b.push(b"defgh").unwrap();
        let n = b.finish();
        // Cut the second block short.
        let p = Packet::parse(&buf[..n - 1]).unwrap();
        let v: Vec<_> = p.messages().collect();
        assert_eq!(
            v,
            [
                Ok(&b"abc"[..]),
                Err(MoldError::TruncatedBlock {
                    index: 1,
                    offset: 25,
                    len: 5,
                    available: 4
                })
            ]
        );
        // Cut inside the second block's length field.
        let p = Packet::parse(&buf[..26]).unwrap();
        let v: Vec<_> = p.messages().collect();
        assert_eq!(
            v[1],
            Err(MoldError::TruncatedBlockLength {
                index: 1,
                offset: 25
            })
        );
        // Trailing bytes.
        let mut long = buf[..n].to_vec();
        long.extend_from_slice(b"zz");
        let p = Packet::parse(&long).unwrap();
        let v: Vec<_> = p.messages().collect();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2], Err(MoldError::TrailingBytes { offset: n, len: 2 }));
        assert_eq!(
            v[2].unwrap_err().to_string(),
            format!("MoldUDP64 packet has 2 trailing bytes at offset {n} after its last block")
        );
    }

    #[test]
    fn request_round_trip() {
        let r = RequestPacket {
            session: S,
            sequence_number: 1 << 40,
            message_count: 12,
        };
        let mut buf = [0u8; 20];
        assert_eq!(r.encode(&mut buf), Ok(20));
        assert_eq!(&buf[..10], b"000010059B");
        assert_eq!(RequestPacket::decode(&buf), Ok(r));
        assert_eq!(
            RequestPacket::decode(&buf[..5]),
            Err(MoldError::ShortHeader { len: 5 })
        );
        let mut long = buf.to_vec();
        long.push(0);
        assert!(RequestPacket::decode(&long).is_err());
        assert!(r.encode(&mut [0u8; 10]).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(p) = Packet::parse(&bytes) {
                let _ = (p.session(), p.sequence_number(), p.next_sequence_number(), format!("{p:?}"));
                let n = p.messages().take(70_000).count();
                prop_assert!(n <= usize::from(p.messages_len()) + 1);
            }
            let _ = RequestPacket::decode(&bytes);
        }

        #[test]
        fn build_parse_round_trip(
            seq in any::<u64>(),
            msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..60), 0..20),
        ) {
            let mut buf = [0u8; 1500];
            let mut b = PacketBuilder::new(&mut buf, S, seq).unwrap();
            for m in &msgs {
                b.push(m).unwrap();
            }
            let n = b.finish();
            let p = Packet::parse(&buf[..n]).unwrap();
            prop_assert_eq!(p.sequence_number(), seq);
            let got: Vec<&[u8]> = p.messages().collect::<Result<_, _>>().unwrap();
            let want: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(got, want);
        }
    }
}
