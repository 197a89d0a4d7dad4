//! Reading and writing the fixed-width big-endian fields of ITCH 5.0 messages.

use core::fmt;

use super::{Price4, Price8};

/// A field type that appears in an ITCH message body: its width on the wire and how it is read
/// and written. Offsets are checked against the message length at compile time by the message
/// table, so the reads and writes below never go out of bounds.
pub(crate) trait Field: Copy {
    /// Width on the wire in bytes.
    const SIZE: usize;
    /// Reads the field at `off` (big-endian).
    fn read(b: &[u8], off: usize) -> Self;
    /// Writes the field at `off` (big-endian).
    fn write(self, b: &mut [u8], off: usize);
    /// Debug form used by the message `Debug` impls (alpha fields print as text).
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

#[inline(always)]
fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            #[inline(always)]
            fn read(b: &[u8], off: usize) -> Self {
                <$t>::from_be_bytes(arr(b, off))
            }
            #[inline(always)]
            fn write(self, b: &mut [u8], off: usize) {
                b[off..off + Self::SIZE].copy_from_slice(&self.to_be_bytes());
            }
            fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    )*};
}
int_field!(u16, u32, u64);

impl Field for u8 {
    const SIZE: usize = 1;
    #[inline(always)]
    fn read(b: &[u8], off: usize) -> Self {
        b[off]
    }
    #[inline(always)]
    fn write(self, b: &mut [u8], off: usize) {
        b[off] = self;
    }
    /// One-byte codes are printable characters in the spec: show them as `b'X'`.
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b'{}'", self.escape_ascii())
    }
}

impl<const N: usize> Field for [u8; N] {
    const SIZE: usize = N;
    #[inline(always)]
    fn read(b: &[u8], off: usize) -> Self {
        arr(b, off)
    }
    #[inline(always)]
    fn write(self, b: &mut [u8], off: usize) {
        b[off..off + N].copy_from_slice(&self);
    }
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.escape_ascii())
    }
}

impl Field for Price4 {
    const SIZE: usize = 4;
    #[inline(always)]
    fn read(b: &[u8], off: usize) -> Self {
        Price4(u32::read(b, off))
    }
    #[inline(always)]
    fn write(self, b: &mut [u8], off: usize) {
        self.0.write(b, off);
    }
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Field for Price8 {
    const SIZE: usize = 8;
    #[inline(always)]
    fn read(b: &[u8], off: usize) -> Self {
        Price8(u64::read(b, off))
    }
    #[inline(always)]
    fn write(self, b: &mut [u8], off: usize) {
        self.0.write(b, off);
    }
    fn debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Adapter so a [`Field`] can be handed to `DebugStruct::field`.
pub(crate) struct DebugField<'a, T: Field>(pub(crate) &'a T);

impl<T: Field> fmt::Debug for DebugField<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.debug(f)
    }
}

/// Reads the 6-byte big-endian timestamp at bytes 5..11 of a message.
#[inline(always)]
pub(crate) fn read_timestamp(b: &[u8]) -> u64 {
    let t: [u8; 6] = arr(b, 5);
    u64::from_be_bytes([0, 0, t[0], t[1], t[2], t[3], t[4], t[5]])
}

/// Writes the low 48 bits of `ts` at bytes 5..11 of a message.
#[inline(always)]
pub(crate) fn write_timestamp(b: &mut [u8], ts: u64) {
    b[5..11].copy_from_slice(&ts.to_be_bytes()[2..]);
}
