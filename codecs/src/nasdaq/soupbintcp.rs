//! SoupBinTCP 4.0 framing (Nasdaq's TCP session protocol), sans-IO: decode packets from the
//! front of a byte buffer, encode packets into one. No sockets.
//!
//! Every packet is a 2-byte big-endian length (counting the type byte and the payload), a type
//! byte, and the payload:
//!
//! | type | direction | payload |
//! |---|---|---|
//! | `+` Debug | both | free text |
//! | `A` Login Accepted | server | session (10 alpha), sequence number (20 numeric ASCII) |
//! | `J` Login Rejected | server | reject reason code (1): `A` not authorized, `S` session not available |
//! | `S` Sequenced Data | server | one message |
//! | `H` Server Heartbeat | server | none |
//! | `Z` End of Session | server | none |
//! | `L` Login Request | client | username (6 alpha), password (10 alpha), requested session (10 alpha), requested sequence number (20 numeric) |
//! | `U` Unsequenced Data | client | one message |
//! | `R` Client Heartbeat | client | none |
//! | `O` Logout Request | client | none |
//!
//! Alpha fields are left-justified and space-padded; numeric fields are ASCII digits,
//! right-justified and space-padded on the left.
//!
//! ```
//! use mdbus_codecs::nasdaq::soupbintcp::{Decoded, Packet, decode};
//!
//! let mut buf = [0u8; 64];
//! let n = Packet::SequencedData(b"hello").encode(&mut buf)?;
//! assert_eq!(decode(&buf[..2])?, Decoded::Incomplete { needed: n });
//! assert_eq!(decode(&buf[..n])?, Decoded::Packet { packet: Packet::SequencedData(b"hello"), len: n });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::moldudp64::Session;

/// Reject reason: not authorized (bad username or password).
pub const REJECT_NOT_AUTHORIZED: u8 = b'A';
/// Reject reason: the requested session is not available.
pub const REJECT_SESSION_NOT_AVAILABLE: u8 = b'S';

/// Width of the numeric sequence number fields.
const NUM_LEN: usize = 20;

/// One SoupBinTCP packet, borrowing the payloads of the data and debug packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Packet<'a> {
    /// `+` free-form debug text.
    Debug(&'a [u8]),
    /// `A` the server accepted the login.
    LoginAccepted {
        /// The session the client is now in.
        session: Session,
        /// Sequence number of the next sequenced message the server will send.
        sequence_number: u64,
    },
    /// `J` the server rejected the login.
    LoginRejected {
        /// [`REJECT_NOT_AUTHORIZED`] or [`REJECT_SESSION_NOT_AVAILABLE`].
        reject_reason_code: u8,
    },
    /// `S` one sequenced message from the server.
    SequencedData(&'a [u8]),
    /// `H` server heartbeat.
    ServerHeartbeat,
    /// `Z` the server ends the session.
    EndOfSession,
    /// `L` the client logs in.
    LoginRequest {
        /// Username, 6 alpha.
        username: [u8; 6],
        /// Password, 10 alpha.
        password: [u8; 10],
        /// Session wanted (all spaces: the current session).
        requested_session: Session,
        /// Next sequence number wanted (0: start from the most recent).
        requested_sequence_number: u64,
    },
    /// `U` one unsequenced message from the client.
    UnsequencedData(&'a [u8]),
    /// `R` client heartbeat.
    ClientHeartbeat,
    /// `O` the client logs out.
    LogoutRequest,
}

/// Result of [`decode`] on the front of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decoded<'a> {
    /// A whole packet was at the front of the buffer; `len` bytes (length field included) were
    /// consumed.
    Packet {
        /// The packet.
        packet: Packet<'a>,
        /// Bytes consumed.
        len: usize,
    },
    /// The buffer holds only the start of a packet: read more until it holds `needed` bytes.
    Incomplete {
        /// Bytes needed in all (2 when even the length field is incomplete).
        needed: usize,
    },
}

/// Why a SoupBinTCP packet could not be decoded or encoded. Small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SoupError {
    /// The length field is 0: there is not even a type byte.
    #[error("SoupBinTCP packet with length 0")]
    ZeroLength,
    /// Unknown packet type byte.
    #[error("unknown SoupBinTCP packet type 0x{packet_type:02x}")]
    UnknownType {
        /// The type byte.
        packet_type: u8,
    },
    /// A fixed-size packet with the wrong payload length.
    #[error(
        "SoupBinTCP packet type 0x{packet_type:02x} has a {len}-byte payload, expected {expected}"
    )]
    BadLength {
        /// The type byte.
        packet_type: u8,
        /// Payload length found.
        len: usize,
        /// Payload length of the type.
        expected: usize,
    },
    /// A numeric field holds something other than space-padded ASCII digits fitting in a u64.
    #[error("SoupBinTCP packet type 0x{packet_type:02x}: bad numeric sequence number field")]
    BadNumeric {
        /// The type byte.
        packet_type: u8,
    },
    /// The output buffer is too small.
    #[error("buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A payload too long for the 2-byte length field.
    #[error("SoupBinTCP payload of {len} bytes is too long")]
    PayloadTooLong {
        /// Payload length.
        len: usize,
    },
}

/// Left-justifies `text` in an `N`-byte alpha field padded with spaces; `None` when too long.
pub fn pad_alpha<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    let mut out = [b' '; N];
    out.get_mut(..text.len())?.copy_from_slice(text);
    Some(out)
}

fn parse_numeric(field: &[u8], packet_type: u8) -> Result<u64, SoupError> {
    let err = SoupError::BadNumeric { packet_type };
    let digits = field.trim_ascii();
    digits.iter().try_fold(0u64, |acc, &d| {
        if !d.is_ascii_digit() {
            return Err(err);
        }
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or(err)
    })
}

fn write_numeric(out: &mut [u8], mut v: u64) {
    out.fill(b' ');
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
}

fn session_of(b: &[u8]) -> Session {
    let mut s = [b' '; 10];
    s.copy_from_slice(&b[..10]);
    Session(s)
}

/// Decodes the packet at the front of `buf`. Never panics; never reads past the packet.
pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, SoupError> {
    let Some(&[hi, lo]) = buf.first_chunk::<2>() else {
        return Ok(Decoded::Incomplete { needed: 2 });
    };
    let body_len = usize::from(u16::from_be_bytes([hi, lo]));
    if body_len == 0 {
        return Err(SoupError::ZeroLength);
    }
    let total = 2 + body_len;
    let Some(body) = buf.get(2..total) else {
        return Ok(Decoded::Incomplete { needed: total });
    };
    let (t, payload) = (body[0], &body[1..]);
    let fixed = |expected: usize| {
        if payload.len() == expected {
            Ok(())
        } else {
            Err(SoupError::BadLength {
                packet_type: t,
                len: payload.len(),
                expected,
            })
        }
    };
    let packet = match t {
        b'+' => Packet::Debug(payload),
        b'S' => Packet::SequencedData(payload),
        b'U' => Packet::UnsequencedData(payload),
        b'A' => {
            fixed(10 + NUM_LEN)?;
            Packet::LoginAccepted {
                session: session_of(payload),
                sequence_number: parse_numeric(&payload[10..], t)?,
            }
        }
        b'J' => {
            fixed(1)?;
            Packet::LoginRejected {
                reject_reason_code: payload[0],
            }
        }
        b'L' => {
            fixed(6 + 10 + 10 + NUM_LEN)?;
            let mut username = [0u8; 6];
            username.copy_from_slice(&payload[..6]);
            let mut password = [0u8; 10];
            password.copy_from_slice(&payload[6..16]);
            Packet::LoginRequest {
                username,
                password,
                requested_session: session_of(&payload[16..]),
                requested_sequence_number: parse_numeric(&payload[26..], t)?,
            }
        }
        b'H' | b'Z' | b'R' | b'O' => {
            fixed(0)?;
            match t {
                b'H' => Packet::ServerHeartbeat,
                b'Z' => Packet::EndOfSession,
                b'R' => Packet::ClientHeartbeat,
                _ => Packet::LogoutRequest,
            }
        }
        _ => return Err(SoupError::UnknownType { packet_type: t }),
    };
    Ok(Decoded::Packet { packet, len: total })
}

impl Packet<'_> {
    /// The packet type byte.
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Debug(_) => b'+',
            Packet::LoginAccepted { .. } => b'A',
            Packet::LoginRejected { .. } => b'J',
            Packet::SequencedData(_) => b'S',
            Packet::ServerHeartbeat => b'H',
            Packet::EndOfSession => b'Z',
            Packet::LoginRequest { .. } => b'L',
            Packet::UnsequencedData(_) => b'U',
            Packet::ClientHeartbeat => b'R',
            Packet::LogoutRequest => b'O',
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Packet::Debug(p) | Packet::SequencedData(p) | Packet::UnsequencedData(p) => p.len(),
            Packet::LoginAccepted { .. } => 10 + NUM_LEN,
            Packet::LoginRejected { .. } => 1,
            Packet::LoginRequest { .. } => 6 + 10 + 10 + NUM_LEN,
            _ => 0,
        }
    }

    /// Bytes the encoded packet takes, length field included.
    pub fn encoded_len(&self) -> usize {
        3 + self.payload_len()
    }

    /// Writes the packet at the start of `buf`; returns the bytes written.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, SoupError> {
        let payload_len = self.payload_len();
        let Ok(body_len) = u16::try_from(1 + payload_len) else {
            return Err(SoupError::PayloadTooLong { len: payload_len });
        };
        let total = 3 + payload_len;
        let Some(out) = buf.get_mut(..total) else {
            return Err(SoupError::BufferTooSmall {
                needed: total,
                available: buf.len(),
            });
        };
        out[..2].copy_from_slice(&body_len.to_be_bytes());
        out[2] = self.packet_type();
        let p = &mut out[3..];
        match *self {
            Packet::Debug(d) | Packet::SequencedData(d) | Packet::UnsequencedData(d) => {
                p.copy_from_slice(d)
            }
            Packet::LoginAccepted {
                session,
                sequence_number,
            } => {
                p[..10].copy_from_slice(&session.0);
                write_numeric(&mut p[10..], sequence_number);
            }
            Packet::LoginRejected { reject_reason_code } => p[0] = reject_reason_code,
            Packet::LoginRequest {
                username,
                password,
                requested_session,
                requested_sequence_number,
            } => {
                p[..6].copy_from_slice(&username);
                p[6..16].copy_from_slice(&password);
                p[16..26].copy_from_slice(&requested_session.0);
                write_numeric(&mut p[26..], requested_sequence_number);
            }
            Packet::ServerHeartbeat
            | Packet::EndOfSession
            | Packet::ClientHeartbeat
            | Packet::LogoutRequest => {}
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_packets() -> Vec<Packet<'static>> {
        vec![
            Packet::Debug(b"hello"),
            Packet::LoginAccepted {
                session: Session(*b"000010059B"),
                sequence_number: 123_456,
            },
            Packet::LoginRejected {
                reject_reason_code: REJECT_SESSION_NOT_AVAILABLE,
            },
            Packet::SequencedData(b"\x00\x01itch"),
            Packet::ServerHeartbeat,
            Packet::EndOfSession,
            Packet::LoginRequest {
                username: pad_alpha(b"user").unwrap(),
                password: pad_alpha(b"secret").unwrap(),
                requested_session: Session([b' '; 10]),
                requested_sequence_number: u64::MAX,
            },
            Packet::UnsequencedData(b""),
            Packet::ClientHeartbeat,
            Packet::LogoutRequest,
        ]
    }

    #[test]
    fn round_trip_every_type_in_one_stream() {
        let mut stream = vec![0u8; 1024];
        let mut n = 0;
        for p in all_packets() {
            n += p.encode(&mut stream[n..]).unwrap();
        }
        let mut pos = 0;
        let mut got = Vec::new();
        while pos < n {
            match decode(&stream[pos..n]).unwrap() {
                Decoded::Packet { packet, len } => {
                    got.push(packet);
                    pos += len;
                }
                Decoded::Incomplete { needed } => panic!("incomplete at {pos}: {needed}"),
            }
        }
        assert_eq!(got, all_packets());
    }

    #[test]
    fn wire_layout() {
        let mut buf = [0u8; 64];
        let p = Packet::LoginAccepted {
            session: Session(*b"000010059B"),
            sequence_number: 42,
        };
        let n = p.encode(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"\x00\x1fA000010059B                  42");
        let n = Packet::ServerHeartbeat.encode(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"\x00\x01H");
        // Left-justified numbers are accepted too.
        let left = b"\x00\x1fA000010059B42                  ";
        assert_eq!(
            decode(left).unwrap(),
            Decoded::Packet { packet: p, len: 33 }
        );
    }

    #[test]
    fn incomplete_and_errors() {
        let mut buf = [0u8; 64];
        let n = Packet::SequencedData(b"abc").encode(&mut buf).unwrap();
        assert_eq!(decode(&[]).unwrap(), Decoded::Incomplete { needed: 2 });
        assert_eq!(
            decode(&buf[..1]).unwrap(),
            Decoded::Incomplete { needed: 2 }
        );
        for k in 2..n {
            assert_eq!(
                decode(&buf[..k]).unwrap(),
                Decoded::Incomplete { needed: n }
            );
        }
        assert_eq!(decode(b"\x00\x00"), Err(SoupError::ZeroLength));
        assert_eq!(
            decode(b"\x00\x01Q"),
            Err(SoupError::UnknownType { packet_type: b'Q' })
        );
        assert_eq!(
            decode(b"\x00\x02HX"),
            Err(SoupError::BadLength {
                packet_type: b'H',
                len: 1,
                expected: 0
            })
        );
        assert_eq!(
            decode(b"\x00\x1fA000010059B                 x42"),
            Err(SoupError::BadNumeric { packet_type: b'A' })
        );
        assert_eq!(
            decode(b"\x00\x1fA000010059B99999999999999999999"),
            Err(SoupError::BadNumeric { packet_type: b'A' })
        );
        assert_eq!(
            Packet::SequencedData(b"abc").encode(&mut buf[..5]),
            Err(SoupError::BufferTooSmall {
                needed: 6,
                available: 5
            })
        );
        let big = vec![0u8; 65_535];
        assert_eq!(
            Packet::SequencedData(&big).encode(&mut vec![0; 70_000]),
            Err(SoupError::PayloadTooLong { len: 65_535 })
        );
        assert_eq!(pad_alpha::<4>(b"toolong"), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(Decoded::Packet { packet, len }) = decode(&bytes) {
                prop_assert!(len <= bytes.len());
                let mut out = vec![0u8; len];
                // Whatever decodes re-encodes to the same length.
                prop_assert_eq!(packet.encode(&mut out), Ok(len));
            }
        }

        #[test]
        fn numeric_round_trip(v in any::<u64>()) {
            let mut f = [0u8; 20];
            write_numeric(&mut f, v);
            prop_assert_eq!(parse_numeric(&f, b'A'), Ok(v));
        }
    }
}
