//! Reading hot-path envelopes at the fixed offsets of the encoder's frames: [`FrameReader`]
//! (why equal structural bytes mean equal reads is in its documentation), its view
//! [`FrameView`], and [`ReadBody`], which serves that view and an `Envelope` alike.

use super::{Encoder, EnvelopeFlags, Event, HeaderFields, Venue};
use crate::generated as g;

use super::encode::{BODY_AT, FLAGS_AT, HEADER_AT, HEADER_LEN, INSTRUMENT_AT, TAG_AT, VENUE_AT};

/// Where the words compared by [`FrameReader::read`] start: up to the instrument, and from
/// the header's end to the body.
const PREFIX_AT: [usize; 3] = [0, 8, 16];
const BEFORE_BODY_AT: [usize; 2] = [HEADER_AT + HEADER_LEN, BODY_AT - 8];
/// The one structural byte between the instrument and the header: padding after the venue,
/// compared on its own. A word load over it would span the instrument, venue and flags, which
/// an encoder on the same thread has just stored in narrower pieces, and wait for them.
const PAD_AT: usize = VENUE_AT + 2;

// The words and the padding byte cover every structural byte up to the body: the instrument,
// venue, padding byte and flags fill the word before the header; the union tag (between the
// header and the body) is compared, which holds because it picked the frame compared with.
const _: () = {
    assert!(INSTRUMENT_AT == 24 && VENUE_AT == INSTRUMENT_AT + 4 && FLAGS_AT == PAD_AT + 1);
    assert!(FLAGS_AT + 1 == HEADER_AT && HEADER_AT == 32);
    assert!(TAG_AT >= HEADER_AT + HEADER_LEN && TAG_AT < BODY_AT);
    assert!(BODY_AT == HEADER_AT + HEADER_LEN + 16);
};

/// Where a hot-path kind differs from the others: its length and the structural words
/// between the header and its body.
#[derive(Clone, Copy, Debug, Default)]
struct Kind {
    /// Length of a message of this kind; 0 for a kind without a fast path.
    len: usize,
    /// The words at `BEFORE_BODY_AT`.
    before_body: [u64; 2],
}

/// Reads messages laid out as this crate's [`Encoder`] lays out hot-path kinds, without
/// following offsets.
///
/// A message whose structural bytes (root offset, vtables, union tag, table offsets) equal
/// those of its kind's frame has its header, flags and body where the frame has them:
/// FlatBuffers locates fields only through those bytes, so the generated accessors would
/// read the same places. [`read`](Self::read) checks them with a few masked word compares
/// and hands out the parts; anything else (a kind built by the builder, another encoder's
/// layout, a wrong length) is `None`, for the accessors. No `unsafe`: every read is a
/// bounds-checked slice read, whatever the input.
///
/// Built once (it encodes one message of each kind); reading allocates nothing.
///
/// ```
/// use mdbus_schema::{self as fb, Encoder, FrameReader, HeaderFields, OrderExecutedFields};
///
/// let reader = FrameReader::new();
/// let mut enc = Encoder::new();
/// let header = HeaderFields { seq: 3, ..Default::default() };
/// let fields = OrderExecutedFields { order_reference_number: 9, executed_shares: 100, match_number: 77 };
/// let msg = enc.order_executed(&header, &fields);
/// let view = reader.read(&msg).expect("a hot-path kind in the encoder's layout");
/// assert_eq!(view.header_fields(), header);
/// let body: fb::OrderExecutedBody = view.body().expect("the kind read");
/// assert_eq!(body.executed_shares(), 100);
/// assert!(view.body::<fb::OrderDeleteBody>().is_none());
/// ```
#[derive(Clone, Debug)]
pub struct FrameReader {
    /// The words at `PREFIX_AT`: the same in every frame.
    prefix: [u64; 3],
    /// The byte at `PAD_AT`: the same in every frame.
    pad: u8,
    /// Indexed by union tag; empty when the encoder's layout is not the one this reader knows
    /// (then every message takes the generic path).
    kinds: Box<[Kind]>,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

/// The little-endian word at `at` of `bytes` (`at + 8 <= N`: the check folds away).
#[inline(always)]
fn word<const N: usize>(bytes: &[u8; N], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

impl FrameReader {
    /// Learns the frame of every hot-path kind from a fresh [`Encoder`]. If a frame does not
    /// have the encoder's fixed layout (a FlatBuffers release that lays tables out
    /// differently), the reader reads nothing: correct, only slower.
    pub fn new() -> FrameReader {
        let encoder = Encoder::new();
        let mut kinds = vec![Kind::default(); usize::from(Event::ENUM_MAX) + 1];
        let mut prefix = None;
        for f in encoder.frames() {
            let Some(head) = f.bytes().first_chunk::<BODY_AT>() else {
                return FrameReader::disabled();
            };
            let this = (PREFIX_AT.map(|at| word(head, at)), head[PAD_AT]);
            let known = f.fixed && *prefix.get_or_insert(this) == this;
            if !known {
                return FrameReader::disabled();
            }
            kinds[usize::from(f.event.0)] = Kind {
                len: f.bytes().len(),
                before_body: BEFORE_BODY_AT.map(|at| word(head, at)),
            };
        }
        match prefix {
            Some((prefix, pad)) => FrameReader {
                prefix,
                pad,
                kinds: kinds.into_boxed_slice(),
            },
            None => FrameReader::disabled(),
        }
    }

    /// A reader that reads nothing (every message takes the generic path).
    fn disabled() -> FrameReader {
        FrameReader {
            prefix: [0; 3],
            pad: 0,
            kinds: Box::new([]),
        }
    }

    /// Whether messages of `event`'s kind can be read here (they are hot-path kinds and their
    /// frame's layout was understood).
    pub fn reads(&self, event: Event) -> bool {
        self.kinds
            .get(usize::from(event.0))
            .is_some_and(|k| k.len != 0)
    }

    /// The view of `bytes` if they are exactly one envelope in the frame layout of a hot-path
    /// kind; `None` otherwise (read it with the generic accessors then).
    #[inline]
    pub fn read<'a>(&self, bytes: &'a [u8]) -> Option<FrameView<'a>> {
        let head = bytes.first_chunk::<BODY_AT>()?;
        let tag = head[TAG_AT];
        let kind = self.kinds.get(usize::from(tag))?;
        if bytes.len() != kind.len {
            return None;
        }
        // Every structural byte equal to the frame's (the tag picked the frame).
        let mut diff = u64::from(head[PAD_AT] ^ self.pad);
        for (&at, &want) in PREFIX_AT.iter().zip(&self.prefix) {
            diff |= word(head, at) ^ want;
        }
        for (&at, &want) in BEFORE_BODY_AT.iter().zip(&kind.before_body) {
            diff |= word(head, at) ^ want;
        }
        if diff != 0 {
            return None;
        }
        let header = head[HEADER_AT..].first_chunk::<HEADER_LEN>()?;
        Some(FrameView {
            event: Event(tag),
            header,
            flags: head[FLAGS_AT],
            venue: u16::from_le_bytes([head[VENUE_AT], head[VENUE_AT + 1]]),
            instrument: u32::from_le_bytes([
                head[INSTRUMENT_AT],
                head[INSTRUMENT_AT + 1],
                head[INSTRUMENT_AT + 2],
                head[INSTRUMENT_AT + 3],
            ]),
            body: &bytes[BODY_AT..],
        })
    }

    /// [`read`](Self::read) for a typed view: the view of `env` if it is the root of a buffer
    /// that is exactly one envelope in the frame layout of a hot-path kind.
    #[inline]
    pub fn read_envelope<'a>(&self, env: &g::Envelope<'a>) -> Option<FrameView<'a>> {
        let view = self.read(env._tab.buf())?;
        // The prefix checked the root offset: `env` must be the table it names.
        (env._tab.loc() == (self.prefix[0] & 0xffff_ffff) as usize).then_some(view)
    }
}

/// A hot-path message read by [`FrameReader::read`]: its kind, header, flags, venue,
/// instrument and body struct, in place.
#[derive(Clone, Copy, Debug)]
pub struct FrameView<'a> {
    event: Event,
    header: &'a [u8; HEADER_LEN],
    flags: u8,
    venue: u16,
    instrument: u32,
    body: &'a [u8],
}

impl<'a> FrameView<'a> {
    /// The union tag: which kind of event this is.
    #[inline]
    pub fn event_type(&self) -> Event {
        self.event
    }

    /// The header struct, as [`Envelope::header`](g::Envelope::header) reads it.
    #[inline]
    pub fn header(&self) -> g::Header {
        g::Header(*self.header)
    }

    /// The delivery flags, as [`Envelope::flags`](g::Envelope::flags) reads them.
    #[inline]
    pub fn flags(&self) -> EnvelopeFlags {
        EnvelopeFlags::from_bits_retain(self.flags)
    }

    /// The market, as [`Envelope::venue`](g::Envelope::venue) reads it.
    #[inline]
    pub fn venue(&self) -> Venue {
        Venue(self.venue)
    }

    /// The instrument id within the venue's directory, as
    /// [`Envelope::instrument`](g::Envelope::instrument) reads it.
    #[inline]
    pub fn instrument(&self) -> u32 {
        self.instrument
    }

    /// The header, flags, venue and instrument as plain values.
    #[inline]
    pub fn header_fields(&self) -> HeaderFields {
        HeaderFields::from_parts(&self.header(), self.flags(), self.venue(), self.instrument)
    }

    /// The body struct if the message is of `B`'s kind, `None` for any other kind.
    #[inline]
    pub fn body<B: FrameBody>(&self) -> Option<B> {
        if self.event == B::EVENT {
            B::from_body_bytes(self.body)
        } else {
            None
        }
    }
}

/// The body struct of a hot-path kind (`AddOrderBody`, `OrderExecutedBody`, ...), readable
/// from a [`FrameView`] and from an [`Envelope`](g::Envelope) alike ([`ReadBody`]).
pub trait FrameBody: Copy + sealed::Sealed {
    /// The union tag of the kind whose body this is.
    const EVENT: Event;
    /// The body from its bytes (`None` if the length is not the struct's).
    fn from_body_bytes(bytes: &[u8]) -> Option<Self>;
    /// The body of `env`, `None` if it holds another kind.
    fn from_envelope(env: &g::Envelope<'_>) -> Option<Self>;
}

pub(super) mod sealed {
    pub trait Sealed {}
}

/// Reads body structs of hot-path kinds: from an [`Envelope`](g::Envelope) through the
/// generated accessors, or from a [`FrameView`] in place. Code generic over it serves both
/// paths with one body.
pub trait ReadBody {
    /// The union tag.
    fn event_type(&self) -> Event;
    /// The header, flags, venue and instrument.
    fn header_fields(&self) -> HeaderFields;
    /// The body struct if the message is of `B`'s kind.
    fn body<B: FrameBody>(&self) -> Option<B>;
}

impl ReadBody for FrameView<'_> {
    #[inline]
    fn event_type(&self) -> Event {
        self.event
    }
    #[inline]
    fn header_fields(&self) -> HeaderFields {
        FrameView::header_fields(self)
    }
    #[inline]
    fn body<B: FrameBody>(&self) -> Option<B> {
        FrameView::body(self)
    }
}

impl ReadBody for g::Envelope<'_> {
    #[inline]
    fn event_type(&self) -> Event {
        g::Envelope::event_type(self)
    }
    #[inline]
    fn header_fields(&self) -> HeaderFields {
        HeaderFields::of(self)
    }
    #[inline]
    fn body<B: FrameBody>(&self) -> Option<B> {
        B::from_envelope(self)
    }
}
