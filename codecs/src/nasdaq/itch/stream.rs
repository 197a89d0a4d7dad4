//! Nasdaq's ITCH file format: each message preceded by its length as a 2-byte big-endian
//! integer.

use core::iter::FusedIterator;

use super::{DecodeError, EncodeError, Message, MessageFields, decode};

/// Splits the length-prefixed record that starts at `offset` in `buf`.
///
/// Returns the message bytes (without the prefix) and the offset of the next record, or
/// [`DecodeError::TruncatedRecord`] when the prefix or the message runs past the end of `buf`.
#[inline]
pub fn frame_at(buf: &[u8], offset: usize) -> Result<(&[u8], usize), DecodeError> {
    let rest = buf.get(offset..).unwrap_or_default();
    let Some(&[hi, lo]) = rest.first_chunk::<2>() else {
        return Err(DecodeError::TruncatedRecord {
            needed: 2,
            available: rest.len(),
        });
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    match rest.get(2..2 + len) {
        Some(msg) => Ok((msg, offset + 2 + len)),
        None => Err(DecodeError::TruncatedRecord {
            needed: 2 + len,
            available: rest.len(),
        }),
    }
}

/// Writes `msg` with its 2-byte big-endian length prefix at the start of `buf`; returns the
/// number of bytes written.
pub fn write_framed(msg: &MessageFields, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let len = msg.encoded_len();
    let Some(out) = buf.get_mut(..2 + len) else {
        return Err(EncodeError::BufferTooSmall {
            needed: 2 + len,
            available: buf.len(),
        });
    };
    // Every ITCH message is at most 50 bytes, so the length always fits the prefix.
    out[..2].copy_from_slice(&(len as u16).to_be_bytes());
    msg.encode(&mut out[2..])?;
    Ok(2 + len)
}

/// Iterator over a buffer in Nasdaq's length-prefixed ITCH format.
///
/// Yields `(offset, result)` where `offset` is the position of the record's length prefix. A
/// record that decodes badly (unknown type, wrong length) is yielded as an error and the walk
/// goes on with the next record; a record that runs past the end of the buffer is yielded as
/// [`DecodeError::TruncatedRecord`] and ends the walk. The records before it are all yielded.
#[derive(Clone, Debug)]
pub struct Stream<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Stream<'a> {
    /// Starts a walk at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            done: false,
        }
    }

    /// Offset of the next record to be read.
    pub fn offset(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Stream<'a> {
    type Item = (usize, Result<Message<'a>, DecodeError>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        let at = self.pos;
        match frame_at(self.buf, at) {
            Ok((msg, next)) => {
                self.pos = next;
                Some((at, decode(msg)))
            }
            Err(e) => {
                self.done = true;
                Some((at, Err(e)))
            }
        }
    }
}

impl FusedIterator for Stream<'_> {}
