//! The allocation-free encoder of normalized messages.

use core::fmt;
use core::ops::{Deref, DerefMut};

use flatbuffers::{Allocator, DefaultAllocator, FlatBufferBuilder};

use super::fields::*;
use crate::generated as g;

/// Upper bound of the encoded length of any event of the schema, in bytes.
///
/// Every event is fixed-size (no strings, no vectors), so this bound holds for all values;
/// `tests` encode each kind with every field set and check it. Size a caller buffer for
/// [`BufferEncoder::new`] or a ring slot with it.
pub const MAX_ENCODED_LEN: usize = 256;

/// Bytes of one finished normalized message, built by an [`Encoder`] of this crate.
///
/// Only the encoder creates it, and it pairs every union tag with a table of the matching
/// type, so the bytes are a valid `Envelope` by construction and [`Encoded::envelope`] reads
/// them without verification, safely. Derefs to `[u8]` for publishing.
#[derive(Clone, Copy)]
pub struct Encoded<'a> {
    bytes: &'a [u8],
}

impl<'a> Encoded<'a> {
    /// The encoded bytes (what is published; read back elsewhere with
    /// [`read_verified`](super::read_verified) or [`read_trusted`](super::read_trusted)).
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Typed view of the message, without verification.
    #[inline]
    pub fn envelope(&self) -> g::Envelope<'a> {
        // SAFETY: `Encoded` is only created by `Encoder::encode`, from the finished buffer of a
        // builder that wrote exactly one `Envelope` with its required header, a union tag and a
        // table of that tag's type (the sealed `EventFields` impls of this crate), all with
        // the generated code of the schema this reader was generated from. Such bytes are a
        // valid `Envelope`, and the shared borrow keeps them unchanged while the view lives.
        unsafe { g::root_as_envelope_unchecked(self.bytes) }
    }
}

impl Deref for Encoded<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl AsRef<[u8]> for Encoded<'_> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.bytes
    }
}

impl fmt::Debug for Encoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoded")
            .field("len", &self.bytes.len())
            .field("envelope", &self.envelope())
            .finish()
    }
}

/// A [`flatbuffers::Allocator`] over a caller's buffer: the encoder builds each message
/// straight into it (at its end, FlatBuffers builds back to front). It never grows; the
/// encoder checks at construction that it holds [`MAX_ENCODED_LEN`] bytes.
#[derive(Debug)]
pub struct SliceAllocator<'buf> {
    buf: &'buf mut [u8],
}

impl Deref for SliceAllocator<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.buf
    }
}

impl DerefMut for SliceAllocator<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf
    }
}

/// The caller's buffer is full: a message did not fit (cannot happen for buffers of at least
/// [`MAX_ENCODED_LEN`] bytes, which [`BufferEncoder::new`] demands).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("caller buffer of {len} bytes is too small for a normalized message")]
pub struct BufferTooSmall {
    /// Length of the buffer offered.
    pub len: usize,
}

// SAFETY: `len` returns the length of the slice `Deref` exposes, and `grow_downwards` never
// changes the buffer: it reports failure, which the trait allows (the builder then stops).
unsafe impl Allocator for SliceAllocator<'_> {
    type Error = BufferTooSmall;

    fn grow_downwards(&mut self) -> Result<(), Self::Error> {
        Err(BufferTooSmall {
            len: self.buf.len(),
        })
    }

    fn len(&self) -> usize {
        self.buf.len()
    }
}

/// The builder both encoders share.
struct Core<'b, A: Allocator + 'b> {
    fbb: FlatBufferBuilder<'b, A>,
}

impl<'b, A: Allocator + 'b> Core<'b, A> {
    #[inline]
    fn encode<E: EventFields>(&mut self, header: &HeaderFields, event: &E) -> Encoded<'_> {
        let fbb = &mut self.fbb;
        // Clears only the bytes the previous message used; keeps every buffer's capacity.
        fbb.reset();
        let value = event.build(fbb);
        let h = header.to_struct();
        let root = g::Envelope::create(
            fbb,
            &g::EnvelopeArgs {
                header: Some(&h),
                event_type: E::EVENT,
                event: Some(value),
                flags: header.flags,
            },
        );
        fbb.finish_minimal(root);
        Encoded {
            bytes: fbb.finished_data(),
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// What [`Encoder`] and [`BufferEncoder`] have in common, for code generic over where the
/// message is built (e.g. [`Normalizer`](crate::normalize::Normalizer)). Sealed: only this
/// crate's encoders produce [`Encoded`] messages.
pub trait EncodeEvent: sealed::Sealed {
    /// Encodes one event of any kind with its header.
    fn encode_event<E: EventFields>(&mut self, header: &HeaderFields, event: &E) -> Encoded<'_>;
}

impl sealed::Sealed for Encoder {}
impl EncodeEvent for Encoder {
    #[inline]
    fn encode_event<E: EventFields>(&mut self, header: &HeaderFields, event: &E) -> Encoded<'_> {
        self.core.encode(header, event)
    }
}

impl sealed::Sealed for BufferEncoder<'_> {}
impl EncodeEvent for BufferEncoder<'_> {
    #[inline]
    fn encode_event<E: EventFields>(&mut self, header: &HeaderFields, event: &E) -> Encoded<'_> {
        self.core.encode(header, event)
    }
}

/// The per-kind methods of both encoders.
macro_rules! encode_methods {
    ($( $(#[$doc:meta])* $method:ident($fields:ty); )*) => {
        /// Encodes one event of any kind with its header; the per-kind methods call this.
        #[inline]
        pub fn encode<E: EventFields>(&mut self, header: &HeaderFields, event: &E) -> Encoded<'_> {
            self.core.encode(header, event)
        }

        $(
            $(#[$doc])*
            #[inline]
            pub fn $method(&mut self, header: &HeaderFields, fields: &$fields) -> Encoded<'_> {
                self.core.encode(header, fields)
            }
        )*
    };
}

macro_rules! all_encode_methods {
    () => {
        encode_methods! {
            /// Encodes an ITCH `S` System Event.
            system_event(SystemEventFields);
            /// Encodes an ITCH `R` Stock Directory.
            stock_directory(StockDirectoryFields);
            /// Encodes an ITCH `H` Stock Trading Action.
            stock_trading_action(StockTradingActionFields);
            /// Encodes an ITCH `Y` Reg SHO restriction.
            reg_sho_restriction(RegShoRestrictionFields);
            /// Encodes an ITCH `L` Market Participant Position.
            market_participant_position(MarketParticipantPositionFields);
            /// Encodes an ITCH `V` MWCB Decline Level.
            mwcb_decline_level(MwcbDeclineLevelFields);
            /// Encodes an ITCH `W` MWCB Status.
            mwcb_status(MwcbStatusFields);
            /// Encodes an ITCH `K` IPO Quoting Period Update.
            ipo_quoting_period_update(IpoQuotingPeriodUpdateFields);
            /// Encodes an ITCH `J` LULD Auction Collar.
            luld_auction_collar(LuldAuctionCollarFields);
            /// Encodes an ITCH `h` Operational Halt.
            operational_halt(OperationalHaltFields);
            /// Encodes an ITCH `A` Add Order.
            add_order(AddOrderFields);
            /// Encodes an ITCH `F` Add Order with MPID attribution.
            add_order_mpid(AddOrderMpidFields);
            /// Encodes an ITCH `E` Order Executed.
            order_executed(OrderExecutedFields);
            /// Encodes an ITCH `C` Order Executed With Price.
            order_executed_with_price(OrderExecutedWithPriceFields);
            /// Encodes an ITCH `X` Order Cancel.
            order_cancel(OrderCancelFields);
            /// Encodes an ITCH `D` Order Delete.
            order_delete(OrderDeleteFields);
            /// Encodes an ITCH `U` Order Replace.
            order_replace(OrderReplaceFields);
            /// Encodes an ITCH `P` Trade.
            trade(TradeFields);
            /// Encodes an ITCH `Q` Cross Trade.
            cross_trade(CrossTradeFields);
            /// Encodes an ITCH `B` Broken Trade.
            broken_trade(BrokenTradeFields);
            /// Encodes an ITCH `I` Net Order Imbalance Indicator.
            net_order_imbalance_indicator(NetOrderImbalanceIndicatorFields);
            /// Encodes an ITCH `N` Retail Price Improvement Indicator.
            retail_price_improvement_indicator(RetailPriceImprovementIndicatorFields);
            /// Encodes an ITCH `O` Direct Listing with Capital Raise price discovery.
            direct_listing_price_discovery(DirectListingPriceDiscoveryFields);
            /// Encodes a heartbeat.
            heartbeat(HeartbeatFields);
            /// Encodes a gap notice.
            gap_notice(GapNoticeFields);
            /// Encodes a best bid and offer.
            bbo(BboFields);
            /// Encodes a price-level change.
            price_level_update(PriceLevelUpdateFields);
            /// Encodes an end of session.
            end_of_session(EndOfSessionFields);
        }
    };
}

/// Encodes normalized events into FlatBuffers `Envelope`s, reusing one builder and its own
/// buffer: after the first message (warm-up) encoding allocates nothing.
///
/// Each method returns the finished message, borrowed from the encoder until the next call.
/// [`BufferEncoder`] does the same into a caller's buffer.
///
/// ```
/// use mdbus_codecs::fb::{self, AddOrderFields, Encoder, HeaderFields, Side};
///
/// let mut enc = Encoder::new();
/// let header = HeaderFields { seq: 7, exchange_ts_ns: 34_200_000_000_000, ..Default::default() };
/// let msg = enc.add_order(&header, &AddOrderFields {
///     order_reference_number: 42,
///     buy_sell_indicator: Side::Buy,
///     shares: 100,
///     stock: *b"AAPL    ",
///     price: 3_201_400, // 320.1400, Price(4)
/// });
/// let env = fb::read_verified(&msg)?;
/// assert_eq!(env.header().seq(), 7);
/// assert_eq!(env.event_as_add_order().map(|a| a.body().price()), Some(3_201_400));
/// # Ok::<(), fb::InvalidMessage>(())
/// ```
pub struct Encoder {
    core: Core<'static, DefaultAllocator>,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An encoder owning a buffer of [`MAX_ENCODED_LEN`] bytes (allocated once, here).
    pub fn new() -> Self {
        Encoder {
            core: Core {
                fbb: FlatBufferBuilder::with_capacity(MAX_ENCODED_LEN),
            },
        }
    }

    all_encode_methods!();
}

/// An [`Encoder`] that builds every message straight into a caller's buffer (through
/// [`SliceAllocator`]) instead of its own: the finished message is the tail of that buffer.
pub struct BufferEncoder<'buf> {
    core: Core<'buf, SliceAllocator<'buf>>,
}

impl fmt::Debug for BufferEncoder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferEncoder").finish_non_exhaustive()
    }
}

impl<'buf> BufferEncoder<'buf> {
    /// An encoder that builds into `buf`, which it zeroes here (the builder relies on zeroed
    /// space). Each message occupies the end of `buf`.
    ///
    /// Fails if `buf` is shorter than [`MAX_ENCODED_LEN`], so that no message can outgrow it.
    pub fn new(buf: &'buf mut [u8]) -> Result<Self, BufferTooSmall> {
        if buf.len() < MAX_ENCODED_LEN {
            return Err(BufferTooSmall { len: buf.len() });
        }
        buf.fill(0);
        Ok(BufferEncoder {
            core: Core {
                fbb: FlatBufferBuilder::new_in(SliceAllocator { buf }),
            },
        })
    }

    all_encode_methods!();
}
