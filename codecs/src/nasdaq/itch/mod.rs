//! Nasdaq TotalView-ITCH 5.0: zero-copy decoder, encoder, and the length-prefixed file format.
//!
//! * [`decode`] turns the bytes of exactly one message (no length prefix) into a [`Message`],
//!   an enum of thin views (`AddOrder<'a>`, `OrderExecuted<'a>`, ...) over the borrowed bytes.
//!   The length is checked once against the fixed length of the type; each accessor then reads
//!   its big-endian field straight from the buffer. Decoding never allocates and never panics.
//! * Every view has an owned twin (`AddOrderFields`, ...; [`MessageFields`] over all of them)
//!   with public fields and an `encode` method, for building messages in tests, simulators and
//!   the bus's own publishers.
//! * [`Stream`] walks Nasdaq's file format (each message preceded by a 2-byte big-endian
//!   length), yielding `(offset, Result<Message, DecodeError>)`.
//!
//! Field names follow the specification in snake_case. Alpha fields (`stock`, `mpid`, ...) are
//! returned as fixed-size byte arrays, left-justified and space-padded as on the wire; use
//! [`trim_alpha`] to drop the padding.
//!
//! ```
//! use mdbus_codecs::nasdaq::itch::{self, AddOrderFields, Message, Price4};
//!
//! let fields = AddOrderFields {
//!     stock_locate: 13,
//!     tracking_number: 0,
//!     timestamp: 34_200_000_000_000, // 09:30:00
//!     order_reference_number: 42,
//!     buy_sell_indicator: b'B',
//!     shares: 100,
//!     stock: *b"AAPL    ",
//!     price: Price4(3_201_400),
//! };
//! let bytes = fields.to_bytes()?;
//! match itch::decode(&bytes)? {
//!     Message::AddOrder(m) => {
//!         assert_eq!(m.order_reference_number(), 42);
//!         assert_eq!(m.price().to_string(), "320.1400");
//!         assert_eq!(itch::trim_alpha(&m.stock()), b"AAPL");
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod field;
mod messages;
mod stream;

use core::fmt;

pub use messages::*;
pub use stream::{Stream, frame_at, write_framed};

/// Largest timestamp that fits the 6-byte wire field (nanoseconds).
pub const MAX_TIMESTAMP: u64 = (1 << 48) - 1;

/// Length of the header common to all messages: type, stock locate, tracking number, timestamp.
pub const HEADER_LEN: usize = 11;

/// Why a buffer could not be decoded as an ITCH message. Small and `Copy`: no allocation on the
/// decode path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    /// The buffer holds no bytes at all.
    #[error("empty ITCH message")]
    Empty,
    /// The first byte is not an ITCH 5.0 message type.
    #[error("unknown ITCH message type 0x{msg_type:02x} ({len} bytes)")]
    UnknownType {
        /// The type byte found.
        msg_type: u8,
        /// Length of the buffer.
        len: usize,
    },
    /// The buffer is shorter than the fixed length of its type.
    #[error("truncated ITCH message type 0x{msg_type:02x}: {len} bytes, expected {expected}")]
    Truncated {
        /// The type byte.
        msg_type: u8,
        /// Length of the buffer.
        len: usize,
        /// Fixed length of the type.
        expected: usize,
    },
    /// The buffer is longer than the fixed length of its type.
    #[error("ITCH message type 0x{msg_type:02x} has {len} bytes, expected {expected}")]
    BadLength {
        /// The type byte.
        msg_type: u8,
        /// Length of the buffer.
        len: usize,
        /// Fixed length of the type.
        expected: usize,
    },
    /// A typed `from_bytes` was handed a message of another type.
    #[error("expected ITCH message type 0x{expected:02x}, found 0x{found:02x}")]
    UnexpectedType {
        /// The type byte wanted.
        expected: u8,
        /// The type byte found.
        found: u8,
    },
    /// A length-prefixed record runs past the end of the input (reported by [`Stream`]; the
    /// offset is carried beside the error).
    #[error("truncated length-prefixed record: needs {needed} bytes, {available} left")]
    TruncatedRecord {
        /// Bytes the record needs from its offset (2 for the prefix alone when fewer remain).
        needed: usize,
        /// Bytes left in the input from the record's offset.
        available: usize,
    },
}

impl DecodeError {
    #[inline]
    fn length(msg_type: u8, len: usize, expected: usize) -> Self {
        if len < expected {
            DecodeError::Truncated {
                msg_type,
                len,
                expected,
            }
        } else {
            DecodeError::BadLength {
                msg_type,
                len,
                expected,
            }
        }
    }
}

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum EncodeError {
    /// The output buffer is too small.
    #[error("buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The timestamp does not fit the 6-byte field (see [`MAX_TIMESTAMP`]).
    #[error("timestamp {timestamp} does not fit in 48 bits")]
    TimestampOutOfRange {
        /// The timestamp given.
        timestamp: u64,
    },
}

/// ITCH `Price(4)`: an unsigned 32-bit integer with **4 implied decimal places**
/// (`3_201_400` is 320.1400). Displays as a decimal with four places.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Price4(pub u32);

impl Price4 {
    /// Raw units per 1.0 (10^4).
    pub const SCALE: u32 = 10_000;

    /// The raw wire integer.
    #[inline]
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// The price as a float (for display and analytics, never for book keys).
    #[inline]
    pub fn to_f64(self) -> f64 {
        f64::from(self.0) / f64::from(Self::SCALE)
    }
}

impl fmt::Display for Price4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:04}", self.0 / Self::SCALE, self.0 % Self::SCALE)
    }
}

impl fmt::Debug for Price4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Price4({self})")
    }
}

/// ITCH `Price(8)`: an unsigned 64-bit integer with **8 implied decimal places**
/// (`320_14_000_000` is 320.14000000); used by the MWCB decline levels. Displays as a decimal
/// with eight places.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Price8(pub u64);

impl Price8 {
    /// Raw units per 1.0 (10^8).
    pub const SCALE: u64 = 100_000_000;

    /// The raw wire integer.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The price as a float (for display and analytics, never for book keys).
    #[inline]
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE as f64
    }
}

impl fmt::Display for Price8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:08}", self.0 / Self::SCALE, self.0 % Self::SCALE)
    }
}

impl fmt::Debug for Price8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Price8({self})")
    }
}

/// The exchange timestamp (ns since midnight) in the common header of the raw message `msg`,
/// without decoding the rest; `None` when `msg` is shorter than the header.
#[inline]
pub fn timestamp_of(msg: &[u8]) -> Option<u64> {
    (msg.len() >= HEADER_LEN).then(|| field::read_timestamp(msg))
}

/// Drops the trailing space padding of an alpha field (`b"AAPL    "` -> `b"AAPL"`).
#[inline]
pub fn trim_alpha(field: &[u8]) -> &[u8] {
    let end = field.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    &field[..end]
}

#[cfg(test)]
mod tests;
