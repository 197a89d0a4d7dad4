//! The allocation-free encoder of normalized messages.

use core::fmt;
use core::ops::Deref;

use flatbuffers::FlatBufferBuilder;

use super::fields::*;
use crate::generated as g;

/// Upper bound of the encoded length of any event of the schema, in bytes.
///
/// Every event is of bounded size (no strings; the one vector, a consolidated BBO's venues,
/// holds at most [`MAX_CONSOLIDATED_VENUES`](super::MAX_CONSOLIDATED_VENUES) entries), so this
/// bound holds for all values; the unit tests encode each kind with every field set and check
/// it. Size ring slots with it.
pub const MAX_ENCODED_LEN: usize = 512;

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
        // SAFETY: `Encoded` is only created by `Encoder`, from bytes that are a valid `Envelope`
        // of this crate's schema:
        // * the builder path: a `FlatBufferBuilder` wrote one `Envelope` with its required
        //   header and a union tag paired with a table of that tag's type (the sealed
        //   `EventFields` impls of this crate, which call the generated builders);
        // * the frame path: bytes the builder wrote the same way, verified once at `Encoder`
        //   construction, in which only the header struct, the flags byte, the venue, the
        //   instrument and the body struct are overwritten, in place, at constant ranges
        //   which that verified frame was checked to hold them at (`Frame::fixed`; other
        //   frames are not used). Every field in those ranges is an integer, a byte array or
        //   an open enum (a `u8` or `u16` newtype), so any bytes written there are valid
        //   values; no offset, vtable or tag changes.
        // The shared borrow keeps the bytes unchanged while the view lives.
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

/// Length of the `Header` struct.
pub(super) const HEADER_LEN: usize = core::mem::size_of::<g::Header>();

// The frame layout of every hot-path kind, as the FlatBuffers builder writes it with every
// field stored (checked for each frame when an encoder is made):
//
//   0..4    root offset                      structural
//   4..20   the envelope's vtable            structural
//   20..24  the envelope table's vtable offset
//   24..28  instrument                       variable
//   28..30  venue                            variable
//   30      padding                          structural
//   31      flags                            variable
//   32..64  header struct                    variable
//   64..68  offset of the event table        structural
//   68      padding
//   69      union tag                        picks the kind
//   70..80  padding, the event table's vtable (its size differs by kind), its vtable offset
//   80..    body struct, to the end          variable
pub(super) const INSTRUMENT_AT: usize = 24;
pub(super) const VENUE_AT: usize = 28;
pub(super) const FLAGS_AT: usize = 31;
pub(super) const HEADER_AT: usize = 32;
pub(super) const TAG_AT: usize = HEADER_AT + HEADER_LEN + 5;
pub(super) const BODY_AT: usize = HEADER_AT + HEADER_LEN + 16;

/// Number of hot-path kinds (those with a struct body, encoded through frames).
const HOT_KINDS: usize = 12;

/// A finished message of one hot-path kind, built once by the FlatBuffers builder with every
/// field stored (`force_defaults`), and where its variable parts lie: encoding a message of
/// that kind overwrites the header struct, the flags byte, the venue, the instrument and the
/// body struct in place.
#[derive(Clone)]
pub(super) struct Frame {
    buf: [u8; MAX_ENCODED_LEN],
    len: usize,
    /// The frame has the layout above (its parts at `TAG_AT`, `FLAGS_AT`, `VENUE_AT`,
    /// `HEADER_AT`, `INSTRUMENT_AT` and `BODY_AT`, the body `E::BODY_LEN` long and last). Only such frames are used: their
    /// parts are written at constant offsets. A FlatBuffers release that lays tables out
    /// otherwise sends every message to the builder: correct, only slower.
    pub(super) fixed: bool,
    /// The kind (what [`FrameReader`](super::FrameReader) learns besides the frame's bytes).
    pub(super) event: g::Event,
}

impl Frame {
    /// The bytes of the message the frame holds.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Where a producer of normalized events (a venue's normalizer) sends each one, with the
/// [`Encoder`] to encode it with: the sink decides what becomes of it. [`Encoder::encode`]'s
/// bytes for one caller; a bus publisher writes it straight into its ring.
pub trait EventSink {
    /// What taking one event comes to (its encoded bytes, a sequence number or an error).
    type Out<'e>;

    /// Takes `event`, stamped with `header`, encoding it with `encoder`.
    fn put<'e, E: EventFields>(
        &mut self,
        encoder: &'e mut Encoder,
        header: &HeaderFields,
        event: &E,
    ) -> Self::Out<'e>;
}

/// The [`EventSink`] that returns each event's encoding ([`Encoder::encode`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct ToBytes;

impl EventSink for ToBytes {
    type Out<'e> = Encoded<'e>;

    #[inline(always)]
    fn put<'e, E: EventFields>(
        &mut self,
        encoder: &'e mut Encoder,
        header: &HeaderFields,
        event: &E,
    ) -> Encoded<'e> {
        encoder.encode(header, event)
    }
}

/// The [`EventSink`] that returns each event's encoding by the FlatBuffers builder, hot-path
/// kinds included ([`Encoder::encode_with_builder`]): the baseline frames are measured
/// against.
#[derive(Clone, Copy, Debug, Default)]
pub struct ToBytesWithBuilder;

impl EventSink for ToBytesWithBuilder {
    type Out<'e> = Encoded<'e>;

    #[inline(always)]
    fn put<'e, E: EventFields>(
        &mut self,
        encoder: &'e mut Encoder,
        header: &HeaderFields,
        event: &E,
    ) -> Encoded<'e> {
        encoder.encode_with_builder(header, event)
    }
}

/// Writes the variable parts of a hot-path message of kind `E` (header struct, flags, venue,
/// instrument, body) into `buf`, a copy of its fixed frame, `BODY_AT + E::BODY_LEN` bytes
/// long. Every offset is a constant: once the length is known no bounds check is left.
#[inline(always)]
fn write_variable_parts<E: EventFields>(buf: &mut [u8], header: &HeaderFields, event: &E) {
    let buf = &mut buf[..BODY_AT + E::BODY_LEN];
    buf[HEADER_AT..HEADER_AT + HEADER_LEN].copy_from_slice(&header.to_struct().0);
    buf[FLAGS_AT] = header.flags.bits();
    buf[VENUE_AT..VENUE_AT + 2].copy_from_slice(&header.venue.0.to_le_bytes());
    buf[INSTRUMENT_AT..INSTRUMENT_AT + 4].copy_from_slice(&header.instrument.to_le_bytes());
    event.write_body(&mut buf[BODY_AT..]);
}

/// The FlatBuffers builder, reused from message to message.
struct Core {
    fbb: FlatBufferBuilder<'static>,
}

impl Core {
    #[inline]
    fn encode<E: EventFields>(&mut self, header: &HeaderFields, event: &E) -> &[u8] {
        let fbb = &mut self.fbb;
        // Clears only the bytes the previous message used; keeps every buffer's capacity.
        fbb.reset();
        let value = event.build(fbb);
        // The envelope's fields in this order, not `Envelope::create`'s (which sorts them by
        // size): the builder packs the instrument, venue and flags into the word before the
        // header, and a hot-path message is 8 bytes shorter (the frame layout below).
        let mut env = g::EnvelopeBuilder::new(fbb);
        env.add_event_type(E::EVENT);
        env.add_event(value);
        env.add_header(&header.to_struct());
        env.add_flags(header.flags);
        env.add_venue(header.venue);
        env.add_instrument(header.instrument);
        let root = env.finish();
        fbb.finish_minimal(root);
        fbb.finished_data()
    }

    /// The builder's encoding with every scalar stored, even at its default.
    fn encode_all_fields<E: EventFields>(&mut self, header: &HeaderFields, event: &E) -> &[u8] {
        self.fbb.force_defaults(true);
        self.encode(header, event);
        self.fbb.force_defaults(false);
        self.fbb.finished_data()
    }

    /// Builds the frame of hot-path kind `E`, which must be the `frames.len()`-th.
    fn push_frame<E: EventFields + Default>(&mut self, frames: &mut Vec<Frame>) {
        assert_eq!(E::FRAME, Some(frames.len()), "{:?}: frame index", E::EVENT);
        let bytes = self.encode_all_fields(&HeaderFields::default(), &E::default());
        let env = super::read_verified(bytes).expect("the builder writes valid envelopes");
        let base = bytes.as_ptr().addr();
        let header_at = core::ptr::from_ref(env.header()).addr() - base;
        let flags_slot = env._tab.vtable().get(g::Envelope::VT_FLAGS);
        assert_ne!(flags_slot, 0, "flags are stored when defaults are forced");
        let flags_at = env._tab.loc() + usize::from(flags_slot);
        let tag_slot = env._tab.vtable().get(g::Envelope::VT_EVENT_TYPE);
        assert_ne!(
            tag_slot, 0,
            "the union tag is stored when defaults are forced"
        );
        let tag_at = env._tab.loc() + usize::from(tag_slot);
        let venue_slot = env._tab.vtable().get(g::Envelope::VT_VENUE);
        let instrument_slot = env._tab.vtable().get(g::Envelope::VT_INSTRUMENT);
        assert!(
            venue_slot != 0 && instrument_slot != 0,
            "venue and instrument are stored when defaults are forced"
        );
        let venue_at = env._tab.loc() + usize::from(venue_slot);
        let instrument_at = env._tab.loc() + usize::from(instrument_slot);
        let body = E::locate_body(env).expect("a hot-path kind has a body");
        let body_at = body.as_ptr().addr() - base;
        let len = bytes.len();
        assert!(
            len <= MAX_ENCODED_LEN
                && header_at + HEADER_LEN <= len
                && flags_at < len
                && venue_at + 2 <= len
                && instrument_at + 4 <= len
                && tag_at < len
                && bytes[tag_at] == E::EVENT.0
                && body_at + body.len() <= len,
            "{:?}: frame layout out of bounds",
            E::EVENT
        );
        let fixed = tag_at == TAG_AT
            && flags_at == FLAGS_AT
            && venue_at == VENUE_AT
            && header_at == HEADER_AT
            && instrument_at == INSTRUMENT_AT
            && body_at == BODY_AT
            && body.len() == E::BODY_LEN
            && body_at + body.len() == len;
        let mut frame = Frame {
            buf: [0; MAX_ENCODED_LEN],
            len,
            fixed,
            event: E::EVENT,
        };
        frame.buf[..len].copy_from_slice(bytes);
        frames.push(frame);
    }
}

/// Encodes normalized events into FlatBuffers `Envelope`s without allocating per message.
///
/// Two paths, chosen per kind at compile time, give the same typed reads:
/// * **hot-path kinds** (order flow, trades, book updates: a table holding one struct body)
///   use a frame: at construction the FlatBuffers builder writes one message of the kind,
///   and each encode overwrites its header struct, flags, venue, instrument and body struct
///   in place (a few stores; the builder's vtable bookkeeping is done once, not per
///   message);
/// * **other kinds** (reference, status and session events) go through the reused
///   `FlatBufferBuilder`, reset between messages.
///
/// Each method returns the finished message, borrowed from the encoder until the next call.
///
/// ```
/// use mdbus_schema::{self as fb, AddOrderFields, Encoder, HeaderFields, Side};
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
    core: Core,
    frames: Box<[Frame; HOT_KINDS]>,
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

macro_rules! encode_methods {
    ($( $(#[$doc:meta])* $method:ident($fields:ty); )*) => {
        $(
            $(#[$doc])*
            #[inline]
            pub fn $method(&mut self, header: &HeaderFields, fields: &$fields) -> Encoded<'_> {
                self.encode(header, fields)
            }
        )*
    };
}

impl Encoder {
    /// An encoder with its builder buffer and the frames of the hot-path kinds (allocated
    /// once, here).
    pub fn new() -> Self {
        let mut core = Core {
            fbb: FlatBufferBuilder::with_capacity(MAX_ENCODED_LEN),
        };
        let mut frames = Vec::with_capacity(HOT_KINDS);
        core.push_frame::<AddOrderFields>(&mut frames);
        core.push_frame::<AddOrderMpidFields>(&mut frames);
        core.push_frame::<OrderExecutedFields>(&mut frames);
        core.push_frame::<OrderExecutedWithPriceFields>(&mut frames);
        core.push_frame::<OrderCancelFields>(&mut frames);
        core.push_frame::<OrderDeleteFields>(&mut frames);
        core.push_frame::<OrderReplaceFields>(&mut frames);
        core.push_frame::<TradeFields>(&mut frames);
        core.push_frame::<CrossTradeFields>(&mut frames);
        core.push_frame::<BrokenTradeFields>(&mut frames);
        core.push_frame::<BboFields>(&mut frames);
        core.push_frame::<PriceLevelUpdateFields>(&mut frames);
        let Ok(frames) = <Box<[Frame; HOT_KINDS]>>::try_from(frames.into_boxed_slice()) else {
            unreachable!("one frame for each of the {HOT_KINDS} hot-path kinds");
        };
        // Warm the builder for the other kinds: its bookkeeping vectors reach their size.
        core.encode(&HeaderFields::default(), &StockDirectoryFields::default());
        Encoder { core, frames }
    }

    /// The frame of every hot-path kind.
    pub(super) fn frames(&self) -> &[Frame] {
        &self.frames[..]
    }

    /// Encodes one event of any kind with its header; the per-kind methods call this.
    // Always inlined: the frame path is a few stores, and inlining lets the compiler write
    // the header and body straight from registers (a call would pass them through memory).
    #[inline(always)]
    pub fn encode<E: EventFields>(&mut self, header: &HeaderFields, event: &E) -> Encoded<'_> {
        match E::FRAME {
            Some(i) if self.frames[i].fixed => {
                let buf = &mut self.frames[i].buf[..BODY_AT + E::BODY_LEN];
                write_variable_parts(buf, header, event);
                Encoded { bytes: buf }
            }
            _ => self.encode_with_builder(header, event),
        }
    }

    /// The length of every message of kind `E` when the encoder writes it from a frame (see
    /// [`encode_into`](Self::encode_into)); `None` for kinds that go through the builder.
    #[inline(always)]
    pub fn fixed_len<E: EventFields>(&self) -> Option<usize> {
        match E::FRAME {
            Some(i) if self.frames[i].fixed => Some(BODY_AT + E::BODY_LEN),
            _ => None,
        }
    }

    /// Writes the message [`encode`](Self::encode) would return into `dst`, which must be
    /// [`fixed_len`](Self::fixed_len) bytes long: the kind's frame, then its variable parts,
    /// straight into the destination (a ring's record, say). Returns false, having written
    /// nothing, when `E` has no frame or `dst` has another length.
    ///
    /// Building a message and then copying it out reads back bytes just written, in wider
    /// words than they were written in, and the processor cannot forward such stores to the
    /// load: each copy waits for the stores to reach the cache. Here the only bytes read are
    /// the frame's, which no message changes.
    #[inline(always)]
    #[must_use]
    pub fn encode_into<E: EventFields>(
        &self,
        header: &HeaderFields,
        event: &E,
        dst: &mut [u8],
    ) -> bool {
        let Some(i) = E::FRAME else { return false };
        let frame = &self.frames[i];
        let len = BODY_AT + E::BODY_LEN;
        if !frame.fixed || dst.len() != len {
            return false;
        }
        // The frame's variable parts may hold an earlier message's: all are overwritten below.
        dst.copy_from_slice(&frame.buf[..len]);
        write_variable_parts(dst, header, event);
        true
    }

    /// Encodes any kind through the FlatBuffers builder, hot-path kinds included: the
    /// reference the frames are tested against, and the baseline they are measured against.
    /// Slower than [`encode`](Self::encode); same reads.
    #[inline(never)]
    pub fn encode_with_builder<E: EventFields>(
        &mut self,
        header: &HeaderFields,
        event: &E,
    ) -> Encoded<'_> {
        Encoded {
            bytes: self.core.encode(header, event),
        }
    }

    /// The builder's encoding with every field stored: byte for byte what the frame path
    /// must produce (tests only).
    #[cfg(test)]
    pub(crate) fn encode_all_fields<E: EventFields>(
        &mut self,
        header: &HeaderFields,
        event: &E,
    ) -> &[u8] {
        self.core.encode_all_fields(header, event)
    }

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
        /// Encodes an IEX `S` System Event.
        iex_system_event(IexSystemEventFields);
        /// Encodes an IEX `D` Security Directory.
        iex_security_directory(IexSecurityDirectoryFields);
        /// Encodes an IEX `H` Trading Status.
        iex_trading_status(IexTradingStatusFields);
        /// Encodes an IEX `I` Retail Liquidity Indicator.
        iex_retail_liquidity_indicator(IexRetailLiquidityIndicatorFields);
        /// Encodes an IEX `O` Operational Halt Status.
        iex_operational_halt_status(IexOperationalHaltStatusFields);
        /// Encodes an IEX `P` Short Sale Price Test Status.
        iex_short_sale_price_test_status(IexShortSalePriceTestStatusFields);
        /// Encodes an IEX `E` Security Event.
        iex_security_event(IexSecurityEventFields);
        /// Encodes an IEX `Q` Quote Update.
        iex_quote_update(IexQuoteUpdateFields);
        /// Encodes an IEX `8` Price Level Update.
        iex_price_level_update_buy(IexPriceLevelUpdateBuyFields);
        /// Encodes an IEX `5` Price Level Update.
        iex_price_level_update_sell(IexPriceLevelUpdateSellFields);
        /// Encodes an IEX `T` Trade Report.
        iex_trade_report(IexTradeReportFields);
        /// Encodes an IEX `B` Trade Break.
        iex_trade_break(IexTradeBreakFields);
        /// Encodes an IEX `X` Official Price.
        iex_official_price(IexOfficialPriceFields);
        /// Encodes an IEX `A` Auction Information.
        iex_auction_information(IexAuctionInformationFields);
        /// Encodes an IEX `a` Add Order.
        iex_add_order(IexAddOrderFields);
        /// Encodes an IEX `M` Order Modify.
        iex_order_modify(IexOrderModifyFields);
        /// Encodes an IEX `R` Order Delete.
        iex_order_delete(IexOrderDeleteFields);
        /// Encodes an IEX `L` Order Executed.
        iex_order_executed(IexOrderExecutedFields);
        /// Encodes an IEX `C` Clear Book.
        iex_clear_book(IexClearBookFields);
        /// Encodes a consolidated best bid and offer.
        consolidated_bbo(ConsolidatedBboFields);
    }
}
