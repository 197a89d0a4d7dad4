//! The normalized message schema: FlatBuffers `Envelope`s, their encoder and typed views.
//!
//! Every message on the bus is one `Envelope` (schema: `codecs/schema/mdbus.fbs`): a fixed
//! [`Header`] (source sequence number, exchange and receive timestamps, and the ITCH source's
//! stock locate and tracking number), the [`Venue`] and instrument id the message is about
//! (key instruments on these), and one event of the union [`Event`]. The generated types are
//! re-exported here.
//!
//! * **Write** with an [`Encoder`] (no allocation per message): one method per event kind
//!   taking a plain `*Fields` value, returning the finished [`Encoded`] bytes. Hot-path kinds
//!   are written into a prebuilt frame (a few stores), the others by a reused
//!   `FlatBufferBuilder`.
//! * **Read untrusted bytes** (anything from the network, a file, another user) with
//!   [`read_verified`]: the FlatBuffers verifier checks every offset first, so a malformed
//!   message is an [`InvalidMessage`], never undefined behaviour.
//! * **Read trusted bytes** with [`Encoded::envelope`] (safe: the bytes came from our encoder
//!   in this process) or, for bytes written by our encoder elsewhere and carried by a channel
//!   that cannot corrupt them (a local shared-memory ring), with the `unsafe` [`read_trusted`],
//!   which skips verification.
//! * **Read hot-path kinds in place** with a [`FrameReader`]: for a message in the layout the
//!   encoder writes order flow, trades and book updates in, it checks the structural bytes
//!   and hands out the header and body struct at fixed offsets, with no offsets followed
//!   ([`ReadBody`] serves both this view and an [`Envelope`] with one piece of code); any
//!   other message reads as `None`, for the accessors.
//!
//! Prices are fixed-point integers, never floats: Price(4) fields hold units of 1e-4
//! ([`PRICE4_SCALE`]), Price(8) fields units of 1e-8 ([`PRICE8_SCALE`]); each field's
//! documentation says which.
//!
//! ```
//! use mdbus_schema::{self as fb, Encoder, HeaderFields, OrderExecutedFields};
//!
//! let mut enc = Encoder::new();
//! let header = HeaderFields { seq: 1, exchange_ts_ns: 1_000, recv_ts_ns: 2_000, ..Default::default() };
//! let msg = enc.order_executed(&header, &OrderExecutedFields {
//!     order_reference_number: 9,
//!     executed_shares: 100,
//!     match_number: 77,
//! });
//! let bytes: Vec<u8> = msg.to_vec(); // as published
//!
//! let env = fb::read_verified(&bytes)?;
//! match env.event_type() {
//!     fb::Event::OrderExecuted => {
//!         let e = env.event_as_order_executed().expect("tag checked").body();
//!         assert_eq!((e.executed_shares(), e.match_number()), (100, 77));
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), fb::InvalidMessage>(())
//! ```

mod encode;
mod fields;
mod frame_read;

use core::fmt;

mod generated;

pub use crate::generated::*;
pub use encode::{Encoded, Encoder, EventSink, MAX_ENCODED_LEN, ToBytes, ToBytesWithBuilder};
pub use fields::*;
pub use frame_read::{FrameBody, FrameReader, FrameView, ReadBody};

/// Denominator of Price(4) fields: `raw / PRICE4_SCALE` is the price (3_201_400 is 320.14).
pub const PRICE4_SCALE: u64 = 10_000;

/// Denominator of Price(8) fields: `raw / PRICE8_SCALE` is the price.
pub const PRICE8_SCALE: u64 = 100_000_000;

/// Limits for verifying one message. A normalized message holds two tables at depth two and
/// is a few hundred bytes; these bounds leave room for evolution while capping the work a
/// hostile buffer can cause.
const VERIFIER_OPTIONS: flatbuffers::VerifierOptions = flatbuffers::VerifierOptions {
    max_depth: 16,
    max_tables: 1024,
    max_apparent_size: 1 << 20,
    ignore_missing_null_terminator: false,
};

/// A buffer that is not a valid normalized message (reported by [`read_verified`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidMessage {
    len: usize,
    detail: flatbuffers::InvalidFlatbuffer,
}

impl InvalidMessage {
    /// Length of the rejected buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the rejected buffer was empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What the verifier found, with the offending offsets.
    pub fn detail(&self) -> &flatbuffers::InvalidFlatbuffer {
        &self.detail
    }
}

impl fmt::Display for InvalidMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid normalized message ({} bytes): {}",
            self.len, self.detail
        )
    }
}

impl std::error::Error for InvalidMessage {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.detail)
    }
}

/// Reads a message from an untrusted source (network, file, another user's process): runs the
/// FlatBuffers verifier over every offset the typed view can follow, then returns the view.
///
/// Safe for any input: a malformed buffer gives an [`InvalidMessage`] naming the offending
/// offset, never a panic or out-of-bounds read. Events of a kind newer than this code (an
/// unknown union tag) verify and read as such: every `event_as_*` returns `None`.
/// Does not allocate unless the buffer is invalid.
#[inline]
pub fn read_verified(buf: &[u8]) -> Result<Envelope<'_>, InvalidMessage> {
    flatbuffers::root_with_opts::<Envelope<'_>>(&VERIFIER_OPTIONS, buf).map_err(|detail| {
        InvalidMessage {
            len: buf.len(),
            detail,
        }
    })
}

/// Reads a message without verification: for the hot path of a local subscriber reading what
/// a trusted producer's [`Encoder`] wrote into shared memory.
///
/// FlatBuffers' generated accessors read at offsets found in the buffer without bounds
/// checks, so unverified malformed bytes are undefined behaviour; that is why this function
/// is `unsafe` rather than a safe function that could be misused. Within one process prefer
/// [`Encoded::envelope`], which is safe.
///
/// # Safety
///
/// `buf` must start with a complete `Envelope` that either
/// * was built by an [`Encoder`] of this crate (of this or any later schema version: older
///   readers only follow offsets they know, and fields appended later are skipped), or
/// * has passed [`read_verified`] before;
///
/// and the bytes must not change while the returned view, or anything read through it, is
/// alive. A ring reader therefore calls this only on a record the producer can no longer
/// overwrite (committed and not yet reclaimed); a record that may be overrun while read must
/// be copied out first or read with [`read_verified`].
#[inline]
pub unsafe fn read_trusted(buf: &[u8]) -> Envelope<'_> {
    // SAFETY: the caller guarantees `buf` is a valid, unchanging `Envelope` (see `# Safety`),
    // which is exactly the contract of `root_as_envelope_unchecked`.
    unsafe { root_as_envelope_unchecked(buf) }
}

#[cfg(test)]
mod tests;
