//! Plain values of every normalized event, the input of [`Encoder`](super::Encoder).
//!
//! One `*Fields` struct per member of the schema's `Event` union, with the schema's field names
//! and units (prices are raw fixed-point integers, Price(4) or Price(8) as each field says;
//! alpha fields are the source bytes, space-padded). Each implements [`EventFields`], which
//! knows the union tag and how to build the event's table.

use flatbuffers::{Allocator, FlatBufferBuilder, UnionWIPOffset, WIPOffset};

use crate::generated as g;
use crate::generated::{
    BookAction, EnvelopeFlags, Event, GapScope, Side, SystemEventCode, TradingState, Venue,
};

/// Fields of the envelope that every event carries: the schema's `Header` plus the envelope's
/// delivery flags, venue and instrument.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HeaderFields {
    /// Sequence number of the source message.
    pub seq: u64,
    /// Exchange timestamp, nanoseconds since midnight of the trading day.
    pub exchange_ts_ns: u64,
    /// Receive timestamp, nanoseconds since the Unix epoch.
    pub recv_ts_ns: u64,
    /// The ITCH source's stock locate; 0 for market-wide events and other venues (key
    /// instruments on `venue` and `instrument`).
    pub stock_locate: u16,
    /// The ITCH source's tracking number; 0 for bus events and other venues.
    pub tracking_number: u16,
    /// Delivery facts (retransmitted, replayed); empty for live data, and then not stored.
    pub flags: EnvelopeFlags,
    /// The market the message comes from; `Unknown` when not stated.
    pub venue: Venue,
    /// The instrument within the venue's directory (Nasdaq: the stock locate); 0 for
    /// market-wide events.
    pub instrument: u32,
}

// `EnvelopeFlags` compares its bits, a total equality.
impl Eq for HeaderFields {}

impl HeaderFields {
    #[inline]
    pub(crate) fn to_struct(self) -> g::Header {
        g::Header::new(
            self.seq,
            self.exchange_ts_ns,
            self.recv_ts_ns,
            self.stock_locate,
            self.tracking_number,
        )
    }

    /// The plain values of an envelope's header struct, flags, venue and instrument.
    #[inline]
    pub(crate) fn from_parts(
        h: &g::Header,
        flags: EnvelopeFlags,
        venue: Venue,
        instrument: u32,
    ) -> HeaderFields {
        HeaderFields {
            seq: h.seq(),
            exchange_ts_ns: h.exchange_ts_ns(),
            recv_ts_ns: h.recv_ts_ns(),
            stock_locate: h.stock_locate(),
            tracking_number: h.tracking_number(),
            flags,
            venue,
            instrument,
        }
    }

    /// The header fields of a typed envelope (any kind, any schema version: fields a message
    /// predates read as their defaults).
    #[inline]
    pub fn of(env: &g::Envelope<'_>) -> HeaderFields {
        HeaderFields::from_parts(env.header(), env.flags(), env.venue(), env.instrument())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The plain values of one kind of event: its union tag and how to build its table.
///
/// Sealed: only this module's `*Fields` types implement it, so a message built by
/// [`Encoder`](super::Encoder) always pairs a union tag with a table of the matching type
/// (the guarantee that makes [`Encoded::envelope`](super::Encoded::envelope) safe).
pub trait EventFields: sealed::Sealed + Copy {
    /// The union tag of this kind of event.
    const EVENT: Event;

    /// For hot-path kinds (a table holding one struct body): the index of the kind's frame in
    /// the encoder. `None` for kinds always built by the builder.
    #[doc(hidden)]
    const FRAME: Option<usize> = None;

    /// Hot-path kinds: the length of the body struct.
    #[doc(hidden)]
    const BODY_LEN: usize = 0;

    /// Builds the event's table into `fbb` (no allocation once `fbb` is warm).
    #[doc(hidden)]
    fn build<'b, A: Allocator + 'b>(
        &self,
        fbb: &mut FlatBufferBuilder<'b, A>,
    ) -> WIPOffset<UnionWIPOffset>;

    /// Hot-path kinds: writes the body struct's bytes into `dst` (exactly the body's length).
    #[doc(hidden)]
    #[inline]
    fn write_body(&self, _dst: &mut [u8]) {}

    /// Hot-path kinds: the bytes of the body struct of a message of this kind.
    #[doc(hidden)]
    #[inline]
    fn locate_body(_env: g::Envelope<'_>) -> Option<&[u8]> {
        None
    }
}

/// Implements `EventFields` for a hot-path event: a table holding one struct `body`, encoded
/// through frame number `$frame` of the encoder.
macro_rules! body_event {
    (
        $fields:ident => $table:ident, $args:ident, $body_ty:ident, $as:ident, $frame:expr,
        |$s:ident| $body:expr
    ) => {
        impl sealed::Sealed for $fields {}
        impl EventFields for $fields {
            const EVENT: Event = Event::$table;
            const FRAME: Option<usize> = Some($frame);
            const BODY_LEN: usize = core::mem::size_of::<g::$body_ty>();
            #[inline]
            fn build<'b, A: Allocator + 'b>(
                &self,
                fbb: &mut FlatBufferBuilder<'b, A>,
            ) -> WIPOffset<UnionWIPOffset> {
                let body = self.body();
                g::$table::create(fbb, &g::$args { body: Some(&body) }).as_union_value()
            }
            #[inline]
            fn write_body(&self, dst: &mut [u8]) {
                dst.copy_from_slice(&self.body().0);
            }
            #[inline]
            fn locate_body(env: g::Envelope<'_>) -> Option<&[u8]> {
                env.$as().map(|t| &t.body().0[..])
            }
        }
        impl super::frame_read::sealed::Sealed for g::$body_ty {}
        impl super::FrameBody for g::$body_ty {
            const EVENT: Event = Event::$table;
            #[inline]
            fn from_body_bytes(bytes: &[u8]) -> Option<Self> {
                Some(g::$body_ty(bytes.try_into().ok()?))
            }
            #[inline]
            fn from_envelope(env: &g::Envelope<'_>) -> Option<Self> {
                env.$as().map(|t| *t.body())
            }
        }
        impl $fields {
            #[inline]
            fn body(&self) -> g::$body_ty {
                let $s = self;
                $body
            }
        }
    };
}

/// Implements `EventFields` for a table of scalars built from its generated `*Args`.
macro_rules! table_event {
    ($fields:ident => $table:ident, |$s:ident| $args:expr) => {
        impl sealed::Sealed for $fields {}
        impl EventFields for $fields {
            const EVENT: Event = Event::$table;
            #[inline]
            fn build<'b, A: Allocator + 'b>(
                &self,
                fbb: &mut FlatBufferBuilder<'b, A>,
            ) -> WIPOffset<UnionWIPOffset> {
                let $s = self;
                g::$table::create(fbb, &$args).as_union_value()
            }
        }
    };
}

// ------------------------------------------------------------------------------------------
// System, reference and status events
// ------------------------------------------------------------------------------------------

/// ITCH `S` System Event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SystemEventFields {
    /// Event code (ASCII byte of the source).
    pub event_code: SystemEventCode,
}
table_event!(SystemEventFields => SystemEvent, |s| g::SystemEventArgs {
    event_code: s.event_code,
});

/// ITCH `R` Stock Directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StockDirectoryFields {
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Listing market (ASCII).
    pub market_category: u8,
    /// Financial status indicator (ASCII).
    pub financial_status_indicator: u8,
    /// Shares in a round lot.
    pub round_lot_size: u32,
    /// `Y` if only round lots are accepted.
    pub round_lots_only: u8,
    /// Issue classification (ASCII).
    pub issue_classification: u8,
    /// Issue sub-type (two ASCII bytes).
    pub issue_sub_type: [u8; 2],
    /// `P` production, `T` test.
    pub authenticity: u8,
    /// Reg SHO short sale threshold indicator.
    pub short_sale_threshold_indicator: u8,
    /// IPO flag.
    pub ipo_flag: u8,
    /// LULD reference price tier.
    pub luld_reference_price_tier: u8,
    /// ETP flag.
    pub etp_flag: u8,
    /// ETP leverage factor.
    pub etp_leverage_factor: u32,
    /// Inverse ETP indicator.
    pub inverse_indicator: u8,
}
impl sealed::Sealed for StockDirectoryFields {}
impl EventFields for StockDirectoryFields {
    const EVENT: Event = Event::StockDirectory;
    #[inline]
    fn build<'b, A: Allocator + 'b>(
        &self,
        fbb: &mut FlatBufferBuilder<'b, A>,
    ) -> WIPOffset<UnionWIPOffset> {
        let stock = g::Symbol::new(&self.stock);
        let sub_type = g::Alpha2::new(&self.issue_sub_type);
        g::StockDirectory::create(
            fbb,
            &g::StockDirectoryArgs {
                stock: Some(&stock),
                market_category: self.market_category,
                financial_status_indicator: self.financial_status_indicator,
                round_lot_size: self.round_lot_size,
                round_lots_only: self.round_lots_only,
                issue_classification: self.issue_classification,
                issue_sub_type: Some(&sub_type),
                authenticity: self.authenticity,
                short_sale_threshold_indicator: self.short_sale_threshold_indicator,
                ipo_flag: self.ipo_flag,
                luld_reference_price_tier: self.luld_reference_price_tier,
                etp_flag: self.etp_flag,
                etp_leverage_factor: self.etp_leverage_factor,
                inverse_indicator: self.inverse_indicator,
            },
        )
        .as_union_value()
    }
}

/// ITCH `H` Stock Trading Action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StockTradingActionFields {
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Trading state (ASCII byte of the source).
    pub trading_state: TradingState,
    /// Reserved byte of the source.
    pub reserved: u8,
    /// Reason code (four ASCII bytes).
    pub reason: [u8; 4],
}
impl sealed::Sealed for StockTradingActionFields {}
impl EventFields for StockTradingActionFields {
    const EVENT: Event = Event::StockTradingAction;
    #[inline]
    fn build<'b, A: Allocator + 'b>(
        &self,
        fbb: &mut FlatBufferBuilder<'b, A>,
    ) -> WIPOffset<UnionWIPOffset> {
        let stock = g::Symbol::new(&self.stock);
        let reason = g::Alpha4::new(&self.reason);
        g::StockTradingAction::create(
            fbb,
            &g::StockTradingActionArgs {
                stock: Some(&stock),
                trading_state: self.trading_state,
                reserved: self.reserved,
                reason: Some(&reason),
            },
        )
        .as_union_value()
    }
}

/// ITCH `Y` Reg SHO Short Sale Price Test Restricted Indicator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RegShoRestrictionFields {
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Reg SHO action (ASCII `0`, `1`, `2`).
    pub reg_sho_action: u8,
}
impl sealed::Sealed for RegShoRestrictionFields {}
impl EventFields for RegShoRestrictionFields {
    const EVENT: Event = Event::RegShoRestriction;
    #[inline]
    fn build<'b, A: Allocator + 'b>(
        &self,
        fbb: &mut FlatBufferBuilder<'b, A>,
    ) -> WIPOffset<UnionWIPOffset> {
        let stock = g::Symbol::new(&self.stock);
        g::RegShoRestriction::create(
            fbb,
            &g::RegShoRestrictionArgs {
                stock: Some(&stock),
                reg_sho_action: self.reg_sho_action,
            },
        )
        .as_union_value()
    }
}

/// ITCH `L` Market Participant Position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MarketParticipantPositionFields {
    /// Market participant identifier (four ASCII bytes).
    pub mpid: [u8; 4],
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Primary market maker (`Y`/`N`).
    pub primary_market_maker: u8,
    /// Market maker mode (ASCII).
    pub market_maker_mode: u8,
    /// Market participant state (ASCII).
    pub market_participant_state: u8,
}
impl sealed::Sealed for MarketParticipantPositionFields {}
impl EventFields for MarketParticipantPositionFields {
    const EVENT: Event = Event::MarketParticipantPosition;
    #[inline]
    fn build<'b, A: Allocator + 'b>(
        &self,
        fbb: &mut FlatBufferBuilder<'b, A>,
    ) -> WIPOffset<UnionWIPOffset> {
        let mpid = g::Mpid::new(&self.mpid);
        let stock = g::Symbol::new(&self.stock);
        g::MarketParticipantPosition::create(
            fbb,
            &g::MarketParticipantPositionArgs {
                mpid: Some(&mpid),
                stock: Some(&stock),
                primary_market_maker: self.primary_market_maker,
                market_maker_mode: self.market_maker_mode,
                market_participant_state: self.market_participant_state,
            },
        )
        .as_union_value()
    }
}

/// ITCH `V` MWCB Decline Level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MwcbDeclineLevelFields {
    /// Level 1, Price(8).
    pub level1: u64,
    /// Level 2, Price(8).
    pub level2: u64,
    /// Level 3, Price(8).
    pub level3: u64,
}
table_event!(MwcbDeclineLevelFields => MwcbDeclineLevel, |s| g::MwcbDeclineLevelArgs {
    level1: s.level1,
    level2: s.level2,
    level3: s.level3,
});

/// ITCH `W` MWCB Status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MwcbStatusFields {
    /// Level breached (ASCII `1`, `2`, `3`).
    pub breached_level: u8,
}
table_event!(MwcbStatusFields => MwcbStatus, |s| g::MwcbStatusArgs {
    breached_level: s.breached_level,
});

/// ITCH `K` IPO Quoting Period Update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpoQuotingPeriodUpdateFields {
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Quotation release time, seconds since midnight.
    pub ipo_quotation_release_time: u32,
    /// Release qualifier (ASCII `A`/`C`).
    pub ipo_quotation_release_qualifier: u8,
    /// IPO price, Price(4).
    pub ipo_price: u32,
}
impl sealed::Sealed for IpoQuotingPeriodUpdateFields {}
impl EventFields for IpoQuotingPeriodUpdateFields {
    const EVENT: Event = Event::IpoQuotingPeriodUpdate;
    #[inline]
    fn build<'b, A: Allocator + 'b>(
        &self,
        fbb: &mut FlatBufferBuilder<'b, A>,
    ) -> WIPOffset<UnionWIPOffset> {
        let stock = g::Symbol::new(&self.stock);
        g::IpoQuotingPeriodUpdate::create(
            fbb,
            &g::IpoQuotingPeriodUpdateArgs {
                stock: Some(&stock),
                ipo_quotation_release_time: self.ipo_quotation_release_time,
                ipo_quotation_release_qualifier: self.ipo_quotation_release_qualifier,
                ipo_price: self.ipo_price,
            },
        )
        .as_union_value()
    }
}

/// ITCH `J` LULD Auction Collar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LuldAuctionCollarFields {
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Collar reference price, Price(4).
    pub auction_collar_reference_price: u32,
    /// Upper collar price, Price(4).
    pub upper_auction_collar_price: u32,
    /// Lower collar price, Price(4).
    pub lower_auction_collar_price: u32,
    /// Number of auction extensions.
    pub auction_collar_extension: u32,
}
impl sealed::Sealed for LuldAuctionCollarFields {}
impl EventFields for LuldAuctionCollarFields {
    const EVENT: Event = Event::LuldAuctionCollar;
    #[inline]
    fn build<'b, A: Allocator + 'b>(
        &self,
        fbb: &mut FlatBufferBuilder<'b, A>,
    ) -> WIPOffset<UnionWIPOffset> {
        let stock = g::Symbol::new(&self.stock);
        g::LuldAuctionCollar::create(
            fbb,
            &g::LuldAuctionCollarArgs {
                stock: Some(&stock),
                auction_collar_reference_price: self.auction_collar_reference_price,
                upper_auction_collar_price: self.upper_auction_collar_price,
                lower_auction_collar_price: self.lower_auction_collar_price,
                auction_collar_extension: self.auction_collar_extension,
            },
        )
        .as_union_value()
    }
}

/// ITCH `h` Operational Halt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OperationalHaltFields {
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Market code (ASCII `Q`, `B`, `X`).
    pub market_code: u8,
    /// Halt action (ASCII `H`, `T`).
    pub operational_halt_action: u8,
}
impl sealed::Sealed for OperationalHaltFields {}
impl EventFields for OperationalHaltFields {
    const EVENT: Event = Event::OperationalHalt;
    #[inline]
    fn build<'b, A: Allocator + 'b>(
        &self,
        fbb: &mut FlatBufferBuilder<'b, A>,
    ) -> WIPOffset<UnionWIPOffset> {
        let stock = g::Symbol::new(&self.stock);
        g::OperationalHalt::create(
            fbb,
            &g::OperationalHaltArgs {
                stock: Some(&stock),
                market_code: self.market_code,
                operational_halt_action: self.operational_halt_action,
            },
        )
        .as_union_value()
    }
}

// ------------------------------------------------------------------------------------------
// Order flow and trades
// ------------------------------------------------------------------------------------------

/// ITCH `A` Add Order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddOrderFields {
    /// Order reference number.
    pub order_reference_number: u64,
    /// Buy/sell indicator.
    pub buy_sell_indicator: Side,
    /// Displayed shares.
    pub shares: u32,
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Display price, Price(4).
    pub price: u32,
}
body_event!(
    AddOrderFields => AddOrder, AddOrderArgs, AddOrderBody, event_as_add_order, 0,
    |s| g::AddOrderBody::new(
    s.order_reference_number,
    s.shares,
    s.price,
    &g::Symbol::new(&s.stock),
    s.buy_sell_indicator,
));

/// ITCH `F` Add Order with MPID attribution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddOrderMpidFields {
    /// Order reference number.
    pub order_reference_number: u64,
    /// Buy/sell indicator.
    pub buy_sell_indicator: Side,
    /// Displayed shares.
    pub shares: u32,
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Display price, Price(4).
    pub price: u32,
    /// Attribution MPID (four ASCII bytes).
    pub attribution: [u8; 4],
}
body_event!(
    AddOrderMpidFields => AddOrderMpid, AddOrderMpidArgs, AddOrderMpidBody, event_as_add_order_mpid, 1,
    |s| g::AddOrderMpidBody::new(
    s.order_reference_number,
    s.shares,
    s.price,
    &g::Symbol::new(&s.stock),
    &g::Mpid::new(&s.attribution),
    s.buy_sell_indicator,
));

/// ITCH `E` Order Executed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OrderExecutedFields {
    /// Order reference number.
    pub order_reference_number: u64,
    /// Shares executed.
    pub executed_shares: u32,
    /// Match number.
    pub match_number: u64,
}
body_event!(
    OrderExecutedFields => OrderExecuted, OrderExecutedArgs, OrderExecutedBody, event_as_order_executed, 2,
    |s| g::OrderExecutedBody::new(
    s.order_reference_number,
    s.match_number,
    s.executed_shares,
));

/// ITCH `C` Order Executed With Price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OrderExecutedWithPriceFields {
    /// Order reference number.
    pub order_reference_number: u64,
    /// Shares executed.
    pub executed_shares: u32,
    /// Match number.
    pub match_number: u64,
    /// Printable (ASCII `Y`/`N`).
    pub printable: u8,
    /// Execution price, Price(4).
    pub execution_price: u32,
}
body_event!(
    OrderExecutedWithPriceFields => OrderExecutedWithPrice, OrderExecutedWithPriceArgs, OrderExecutedWithPriceBody, event_as_order_executed_with_price, 3,
    |s| g::OrderExecutedWithPriceBody::new(
        s.order_reference_number,
        s.match_number,
        s.executed_shares,
        s.execution_price,
        s.printable,
    )
);

/// ITCH `X` Order Cancel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OrderCancelFields {
    /// Order reference number.
    pub order_reference_number: u64,
    /// Shares removed.
    pub cancelled_shares: u32,
}
body_event!(
    OrderCancelFields => OrderCancel, OrderCancelArgs, OrderCancelBody, event_as_order_cancel, 4,
    |s| g::OrderCancelBody::new(
    s.order_reference_number,
    s.cancelled_shares,
));

/// ITCH `D` Order Delete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OrderDeleteFields {
    /// Order reference number.
    pub order_reference_number: u64,
}
body_event!(
    OrderDeleteFields => OrderDelete, OrderDeleteArgs, OrderDeleteBody, event_as_order_delete, 5,
    |s| g::OrderDeleteBody::new(
    s.order_reference_number,
));

/// ITCH `U` Order Replace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OrderReplaceFields {
    /// Reference number of the replaced order.
    pub original_order_reference_number: u64,
    /// Reference number of the new order.
    pub new_order_reference_number: u64,
    /// Displayed shares of the new order.
    pub shares: u32,
    /// Display price of the new order, Price(4).
    pub price: u32,
}
body_event!(
    OrderReplaceFields => OrderReplace, OrderReplaceArgs, OrderReplaceBody, event_as_order_replace, 6,
    |s| g::OrderReplaceBody::new(
    s.original_order_reference_number,
    s.new_order_reference_number,
    s.shares,
    s.price,
));

/// ITCH `P` Trade (non-cross).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TradeFields {
    /// Order reference number.
    pub order_reference_number: u64,
    /// Buy/sell indicator.
    pub buy_sell_indicator: Side,
    /// Shares executed.
    pub shares: u32,
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Execution price, Price(4).
    pub price: u32,
    /// Match number.
    pub match_number: u64,
}
body_event!(
    TradeFields => Trade, TradeArgs, TradeBody, event_as_trade, 7,
    |s| g::TradeBody::new(
    s.order_reference_number,
    s.match_number,
    s.shares,
    s.price,
    &g::Symbol::new(&s.stock),
    s.buy_sell_indicator,
));

/// ITCH `Q` Cross Trade.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CrossTradeFields {
    /// Shares matched.
    pub shares: u64,
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Cross price, Price(4).
    pub cross_price: u32,
    /// Match number.
    pub match_number: u64,
    /// Cross type (ASCII).
    pub cross_type: u8,
}
body_event!(
    CrossTradeFields => CrossTrade, CrossTradeArgs, CrossTradeBody, event_as_cross_trade, 8,
    |s| g::CrossTradeBody::new(
    s.shares,
    s.match_number,
    s.cross_price,
    &g::Symbol::new(&s.stock),
    s.cross_type,
));

/// ITCH `B` Broken Trade.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BrokenTradeFields {
    /// Match number of the broken execution.
    pub match_number: u64,
}
body_event!(
    BrokenTradeFields => BrokenTrade, BrokenTradeArgs, BrokenTradeBody, event_as_broken_trade, 9,
    |s| g::BrokenTradeBody::new(
    s.match_number,
));

// ------------------------------------------------------------------------------------------
// Auction and retail interest
// ------------------------------------------------------------------------------------------

/// ITCH `I` Net Order Imbalance Indicator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NetOrderImbalanceIndicatorFields {
    /// Paired shares.
    pub paired_shares: u64,
    /// Imbalance shares.
    pub imbalance_shares: u64,
    /// Imbalance direction (ASCII).
    pub imbalance_direction: u8,
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Far price, Price(4).
    pub far_price: u32,
    /// Near price, Price(4).
    pub near_price: u32,
    /// Current reference price, Price(4).
    pub current_reference_price: u32,
    /// Cross type (ASCII).
    pub cross_type: u8,
    /// Price variation indicator (ASCII).
    pub price_variation_indicator: u8,
}
impl sealed::Sealed for NetOrderImbalanceIndicatorFields {}
impl EventFields for NetOrderImbalanceIndicatorFields {
    const EVENT: Event = Event::NetOrderImbalanceIndicator;
    #[inline]
    fn build<'b, A: Allocator + 'b>(
        &self,
        fbb: &mut FlatBufferBuilder<'b, A>,
    ) -> WIPOffset<UnionWIPOffset> {
        let stock = g::Symbol::new(&self.stock);
        g::NetOrderImbalanceIndicator::create(
            fbb,
            &g::NetOrderImbalanceIndicatorArgs {
                paired_shares: self.paired_shares,
                imbalance_shares: self.imbalance_shares,
                imbalance_direction: self.imbalance_direction,
                stock: Some(&stock),
                far_price: self.far_price,
                near_price: self.near_price,
                current_reference_price: self.current_reference_price,
                cross_type: self.cross_type,
                price_variation_indicator: self.price_variation_indicator,
            },
        )
        .as_union_value()
    }
}

/// ITCH `N` Retail Price Improvement Indicator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RetailPriceImprovementIndicatorFields {
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Interest flag (ASCII).
    pub interest_flag: u8,
}
impl sealed::Sealed for RetailPriceImprovementIndicatorFields {}
impl EventFields for RetailPriceImprovementIndicatorFields {
    const EVENT: Event = Event::RetailPriceImprovementIndicator;
    #[inline]
    fn build<'b, A: Allocator + 'b>(
        &self,
        fbb: &mut FlatBufferBuilder<'b, A>,
    ) -> WIPOffset<UnionWIPOffset> {
        let stock = g::Symbol::new(&self.stock);
        g::RetailPriceImprovementIndicator::create(
            fbb,
            &g::RetailPriceImprovementIndicatorArgs {
                stock: Some(&stock),
                interest_flag: self.interest_flag,
            },
        )
        .as_union_value()
    }
}

/// ITCH `O` Direct Listing with Capital Raise price discovery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DirectListingPriceDiscoveryFields {
    /// Security symbol, space-padded.
    pub stock: [u8; 8],
    /// Open eligibility status (ASCII).
    pub open_eligibility_status: u8,
    /// Minimum allowable price, Price(4).
    pub minimum_allowable_price: u32,
    /// Maximum allowable price, Price(4).
    pub maximum_allowable_price: u32,
    /// Near execution price, Price(4).
    pub near_execution_price: u32,
    /// Near execution time (the source's 8-byte field).
    pub near_execution_time: u64,
    /// Lower price range collar, Price(4).
    pub lower_price_range_collar: u32,
    /// Upper price range collar, Price(4).
    pub upper_price_range_collar: u32,
}
impl sealed::Sealed for DirectListingPriceDiscoveryFields {}
impl EventFields for DirectListingPriceDiscoveryFields {
    const EVENT: Event = Event::DirectListingPriceDiscovery;
    #[inline]
    fn build<'b, A: Allocator + 'b>(
        &self,
        fbb: &mut FlatBufferBuilder<'b, A>,
    ) -> WIPOffset<UnionWIPOffset> {
        let stock = g::Symbol::new(&self.stock);
        g::DirectListingPriceDiscovery::create(
            fbb,
            &g::DirectListingPriceDiscoveryArgs {
                stock: Some(&stock),
                open_eligibility_status: self.open_eligibility_status,
                minimum_allowable_price: self.minimum_allowable_price,
                maximum_allowable_price: self.maximum_allowable_price,
                near_execution_price: self.near_execution_price,
                near_execution_time: self.near_execution_time,
                lower_price_range_collar: self.lower_price_range_collar,
                upper_price_range_collar: self.upper_price_range_collar,
            },
        )
        .as_union_value()
    }
}

// ------------------------------------------------------------------------------------------
// Bus-level events
// ------------------------------------------------------------------------------------------

/// Heartbeat: the stream is alive (no fields beyond the header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HeartbeatFields;
table_event!(HeartbeatFields => Heartbeat, |_s| g::HeartbeatArgs {});

/// Source messages are missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GapNoticeFields {
    /// First missing source sequence number.
    pub first_missing_seq: u64,
    /// Number of consecutive missing messages.
    pub count: u64,
    /// Whether they will still be delivered (re-requested) or are lost.
    pub recoverable: bool,
    /// Which sequence numbers `first_missing_seq` and `count` speak of.
    pub scope: GapScope,
}
table_event!(GapNoticeFields => GapNotice, |s| g::GapNoticeArgs {
    first_missing_seq: s.first_missing_seq,
    count: s.count,
    recoverable: s.recoverable,
    scope: s.scope,
});

/// Best bid and offer. An empty side has price, size and orders 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BboFields {
    /// Best bid, Price(4).
    pub bid_price: i64,
    /// Aggregate shares at the best bid.
    pub bid_size: u64,
    /// Orders at the best bid.
    pub bid_orders: u32,
    /// Best ask, Price(4).
    pub ask_price: i64,
    /// Aggregate shares at the best ask.
    pub ask_size: u64,
    /// Orders at the best ask.
    pub ask_orders: u32,
}
body_event!(
    BboFields => Bbo, BboArgs, BboBody, event_as_bbo, 10,
    |s| g::BboBody::new(
    s.bid_price,
    s.bid_size,
    s.ask_price,
    s.ask_size,
    s.bid_orders,
    s.ask_orders,
));

/// One price level changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PriceLevelUpdateFields {
    /// Side of the level.
    pub side: Side,
    /// Price of the level, Price(4).
    pub price: i64,
    /// New aggregate shares (0 on delete).
    pub size: u64,
    /// New order count (0 on delete).
    pub order_count: u32,
    /// What happened to the level.
    pub action: BookAction,
}
body_event!(
    PriceLevelUpdateFields => PriceLevelUpdate, PriceLevelUpdateArgs, PriceLevelBody, event_as_price_level_update, 11,
    |s| {
    g::PriceLevelBody::new(s.price, s.size, s.order_count, s.side, s.action)
});

/// End of the source session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndOfSessionFields;
table_event!(EndOfSessionFields => EndOfSession, |_s| g::EndOfSessionArgs {});

// ------------------------------------------------------------------------------------------
// IEX events
// ------------------------------------------------------------------------------------------

/// IEX `S` System Event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexSystemEventFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// System Event code (ASCII).
    pub system_event: u8,
}
table_event!(IexSystemEventFields => IexSystemEvent, |s| g::IexSystemEventArgs {
    timestamp: s.timestamp,
    system_event: s.system_event,
});

/// IEX `D` Security Directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexSecurityDirectoryFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Flags: 0x80 test, 0x40 when issued, 0x20 ETP.
    pub flags: u8,
    /// Round lot size.
    pub round_lot_size: u32,
    /// Adjusted previous official closing price, Price(4).
    pub adjusted_poc_price: i64,
    /// LULD tier (0, 1, 2).
    pub luld_tier: u8,
}
table_event!(IexSecurityDirectoryFields => IexSecurityDirectory, |s| g::IexSecurityDirectoryArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    flags: s.flags,
    round_lot_size: s.round_lot_size,
    adjusted_poc_price: s.adjusted_poc_price,
    luld_tier: s.luld_tier,
});

/// IEX `H` Trading Status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexTradingStatusFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Trading status (ASCII).
    pub trading_status: u8,
    /// Reason (four ASCII bytes).
    pub reason: [u8; 4],
}
table_event!(IexTradingStatusFields => IexTradingStatus, |s| g::IexTradingStatusArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    trading_status: s.trading_status,
    reason: Some(&g::Alpha4::new(&s.reason)),
});

/// IEX `I` Retail Liquidity Indicator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexRetailLiquidityIndicatorFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Indicator (ASCII).
    pub retail_liquidity_indicator: u8,
}
table_event!(IexRetailLiquidityIndicatorFields => IexRetailLiquidityIndicator, |s| g::IexRetailLiquidityIndicatorArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    retail_liquidity_indicator: s.retail_liquidity_indicator,
});

/// IEX `O` Operational Halt Status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexOperationalHaltStatusFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Status (ASCII).
    pub operational_halt_status: u8,
}
table_event!(IexOperationalHaltStatusFields => IexOperationalHaltStatus, |s| g::IexOperationalHaltStatusArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    operational_halt_status: s.operational_halt_status,
});

/// IEX `P` Short Sale Price Test Status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexShortSalePriceTestStatusFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// 0 not in effect, 1 in effect.
    pub short_sale_price_test_status: u8,
    /// Detail (ASCII).
    pub detail: u8,
}
table_event!(IexShortSalePriceTestStatusFields => IexShortSalePriceTestStatus, |s| g::IexShortSalePriceTestStatusArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    short_sale_price_test_status: s.short_sale_price_test_status,
    detail: s.detail,
});

/// IEX `E` Security Event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexSecurityEventFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Security event (ASCII).
    pub security_event: u8,
}
table_event!(IexSecurityEventFields => IexSecurityEvent, |s| g::IexSecurityEventArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    security_event: s.security_event,
});

/// IEX `Q` Quote Update.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexQuoteUpdateFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Flags: 0x80 not available, 0x40 pre/post-market.
    pub flags: u8,
    /// Bid size.
    pub bid_size: u32,
    /// Bid price, Price(4).
    pub bid_price: i64,
    /// Ask price, Price(4).
    pub ask_price: i64,
    /// Ask size.
    pub ask_size: u32,
}
table_event!(IexQuoteUpdateFields => IexQuoteUpdate, |s| g::IexQuoteUpdateArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    flags: s.flags,
    bid_size: s.bid_size,
    bid_price: s.bid_price,
    ask_price: s.ask_price,
    ask_size: s.ask_size,
});

/// IEX `8` Price Level Update, buy side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexPriceLevelUpdateBuyFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Event flags (0x01 event processing complete).
    pub event_flags: u8,
    /// Aggregate shares at the level (0: gone).
    pub size: u32,
    /// Price(4).
    pub price: i64,
}
table_event!(IexPriceLevelUpdateBuyFields => IexPriceLevelUpdateBuy, |s| g::IexPriceLevelUpdateBuyArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    event_flags: s.event_flags,
    size: s.size,
    price: s.price,
});

/// IEX `5` Price Level Update, sell side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexPriceLevelUpdateSellFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Event flags (0x01 event processing complete).
    pub event_flags: u8,
    /// Aggregate shares at the level (0: gone).
    pub size: u32,
    /// Price(4).
    pub price: i64,
}
table_event!(IexPriceLevelUpdateSellFields => IexPriceLevelUpdateSell, |s| g::IexPriceLevelUpdateSellArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    event_flags: s.event_flags,
    size: s.size,
    price: s.price,
});

/// IEX `T` Trade Report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexTradeReportFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Sale condition flags.
    pub sale_condition_flags: u8,
    /// Shares.
    pub size: u32,
    /// Price(4).
    pub price: i64,
    /// Trade id.
    pub trade_id: u64,
}
table_event!(IexTradeReportFields => IexTradeReport, |s| g::IexTradeReportArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    sale_condition_flags: s.sale_condition_flags,
    size: s.size,
    price: s.price,
    trade_id: s.trade_id,
});

/// IEX `B` Trade Break.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexTradeBreakFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Sale condition flags.
    pub sale_condition_flags: u8,
    /// Shares.
    pub size: u32,
    /// Price(4).
    pub price: i64,
    /// Trade id.
    pub trade_id: u64,
}
table_event!(IexTradeBreakFields => IexTradeBreak, |s| g::IexTradeBreakArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    sale_condition_flags: s.sale_condition_flags,
    size: s.size,
    price: s.price,
    trade_id: s.trade_id,
});

/// IEX `X` Official Price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexOfficialPriceFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// `Q` opening, `M` closing (ASCII).
    pub price_type: u8,
    /// Price(4).
    pub official_price: i64,
}
table_event!(IexOfficialPriceFields => IexOfficialPrice, |s| g::IexOfficialPriceArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    price_type: s.price_type,
    official_price: s.official_price,
});

/// IEX `A` Auction Information.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexAuctionInformationFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Auction type (ASCII).
    pub auction_type: u8,
    /// Paired shares.
    pub paired_shares: u32,
    /// Price(4).
    pub reference_price: i64,
    /// Price(4).
    pub indicative_clearing_price: i64,
    /// Imbalance shares.
    pub imbalance_shares: u32,
    /// Imbalance side (ASCII).
    pub imbalance_side: u8,
    /// Extensions so far.
    pub extension_number: u8,
    /// Seconds since the Unix epoch.
    pub scheduled_auction_time: u32,
    /// Price(4).
    pub auction_book_clearing_price: i64,
    /// Price(4).
    pub collar_reference_price: i64,
    /// Price(4).
    pub lower_auction_collar: i64,
    /// Price(4).
    pub upper_auction_collar: i64,
}
table_event!(IexAuctionInformationFields => IexAuctionInformation, |s| g::IexAuctionInformationArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    auction_type: s.auction_type,
    paired_shares: s.paired_shares,
    reference_price: s.reference_price,
    indicative_clearing_price: s.indicative_clearing_price,
    imbalance_shares: s.imbalance_shares,
    imbalance_side: s.imbalance_side,
    extension_number: s.extension_number,
    scheduled_auction_time: s.scheduled_auction_time,
    auction_book_clearing_price: s.auction_book_clearing_price,
    collar_reference_price: s.collar_reference_price,
    lower_auction_collar: s.lower_auction_collar,
    upper_auction_collar: s.upper_auction_collar,
});

/// IEX `a` Add Order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexAddOrderFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Side.
    pub side: Side,
    /// Order id.
    pub order_id: u64,
    /// Shares.
    pub size: u32,
    /// Price(4).
    pub price: i64,
}
table_event!(IexAddOrderFields => IexAddOrder, |s| g::IexAddOrderArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    side: s.side,
    order_id: s.order_id,
    size: s.size,
    price: s.price,
});

/// IEX `M` Order Modify.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexOrderModifyFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// 0x01 keeps priority.
    pub modify_flags: u8,
    /// Order id.
    pub order_id: u64,
    /// New shares.
    pub size: u32,
    /// New price, Price(4).
    pub price: i64,
}
table_event!(IexOrderModifyFields => IexOrderModify, |s| g::IexOrderModifyArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    modify_flags: s.modify_flags,
    order_id: s.order_id,
    size: s.size,
    price: s.price,
});

/// IEX `R` Order Delete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexOrderDeleteFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Reserved byte, as sent.
    pub reserved: u8,
    /// Order id.
    pub order_id: u64,
}
table_event!(IexOrderDeleteFields => IexOrderDelete, |s| g::IexOrderDeleteArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    reserved: s.reserved,
    order_id: s.order_id,
});

/// IEX `L` Order Executed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexOrderExecutedFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Sale condition flags.
    pub sale_condition_flags: u8,
    /// Order id.
    pub order_id: u64,
    /// Shares executed.
    pub size: u32,
    /// Price(4).
    pub price: i64,
    /// Trade id.
    pub trade_id: u64,
}
table_event!(IexOrderExecutedFields => IexOrderExecuted, |s| g::IexOrderExecutedArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    sale_condition_flags: s.sale_condition_flags,
    order_id: s.order_id,
    size: s.size,
    price: s.price,
    trade_id: s.trade_id,
});

/// IEX `C` Clear Book.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IexClearBookFields {
    /// IEX Timestamp, ns since the Unix epoch.
    pub timestamp: i64,
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Reserved byte, as sent.
    pub reserved: u8,
}
table_event!(IexClearBookFields => IexClearBook, |s| g::IexClearBookArgs {
    timestamp: s.timestamp,
    symbol: Some(&g::Symbol::new(&s.symbol)),
    reserved: s.reserved,
});

// ------------------------------------------------------------------------------------------
// Consolidated top of book
// ------------------------------------------------------------------------------------------

/// Most venues one [`ConsolidatedBboFields`] carries (the bound of its `venues` vector).
pub const MAX_CONSOLIDATED_VENUES: usize = 8;

/// One venue's top in a consolidated BBO. An empty side has price and size 0.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VenueTopFields {
    /// Best bid, Price(4).
    pub bid_price: i64,
    /// Shares at the best bid.
    pub bid_size: u64,
    /// Best ask, Price(4).
    pub ask_price: i64,
    /// Shares at the best ask.
    pub ask_size: u64,
    /// The venue's instrument id.
    pub instrument: u32,
    /// The venue.
    pub venue: Venue,
    /// The consolidator's input the top came from.
    pub input: u8,
    /// `Stale`: the top is no longer known and left out (prices and sizes 0).
    pub flags: g::VenueTopFlags,
}

impl VenueTopFields {
    fn to_struct(self) -> g::VenueTop {
        g::VenueTop::new(
            self.bid_price,
            self.bid_size,
            self.ask_price,
            self.ask_size,
            self.instrument,
            self.venue,
            self.input,
            self.flags,
        )
    }

    fn of(t: &g::VenueTop) -> Self {
        VenueTopFields {
            bid_price: t.bid_price(),
            bid_size: t.bid_size(),
            ask_price: t.ask_price(),
            ask_size: t.ask_size(),
            instrument: t.instrument(),
            venue: t.venue(),
            input: t.input(),
            flags: t.flags(),
        }
    }
}

/// The best bid and ask of one symbol across venues, with each venue's top. A side no venue
/// quotes has price and size 0 and venue `Unknown`. Plain values, `Copy`: the per-venue tops
/// are a fixed array of which the first `venue_count` are used.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ConsolidatedBboFields {
    /// Symbol, space-padded.
    pub symbol: [u8; 8],
    /// Best bid, Price(4).
    pub bid_price: i64,
    /// Shares at the best bid on `bid_venue`.
    pub bid_size: u64,
    /// Venue of the best bid.
    pub bid_venue: Venue,
    /// Best ask, Price(4).
    pub ask_price: i64,
    /// Shares at the best ask on `ask_venue`.
    pub ask_size: u64,
    /// Venue of the best ask.
    pub ask_venue: Venue,
    /// `Locked`, `Crossed`, `StaleVenue`.
    pub flags: g::ConsolidatedFlags,
    /// Number of used entries of `venues`.
    pub venue_count: u8,
    /// The venues' tops, in input order.
    pub venues: [VenueTopFields; MAX_CONSOLIDATED_VENUES],
}

impl ConsolidatedBboFields {
    /// The used per-venue tops.
    pub fn venues(&self) -> &[VenueTopFields] {
        let n = usize::from(self.venue_count).min(MAX_CONSOLIDATED_VENUES);
        &self.venues[..n]
    }

    /// Reads a received event back into plain values (no allocation). Tops beyond
    /// [`MAX_CONSOLIDATED_VENUES`] (only a writer newer than this code sends them) are left
    /// out.
    pub fn read(t: &g::ConsolidatedBbo<'_>) -> Self {
        let mut f = ConsolidatedBboFields {
            symbol: t.symbol().0,
            bid_price: t.bid_price(),
            bid_size: t.bid_size(),
            bid_venue: t.bid_venue(),
            ask_price: t.ask_price(),
            ask_size: t.ask_size(),
            ask_venue: t.ask_venue(),
            flags: t.flags(),
            ..ConsolidatedBboFields::default()
        };
        if let Some(v) = t.venues() {
            for (slot, top) in f.venues.iter_mut().zip(v.iter()) {
                *slot = VenueTopFields::of(top);
                f.venue_count += 1;
            }
        }
        f
    }
}

impl sealed::Sealed for ConsolidatedBboFields {}
impl EventFields for ConsolidatedBboFields {
    const EVENT: Event = Event::ConsolidatedBbo;
    #[inline]
    fn build<'b, A: Allocator + 'b>(
        &self,
        fbb: &mut FlatBufferBuilder<'b, A>,
    ) -> WIPOffset<UnionWIPOffset> {
        let venues = self.venues();
        fbb.start_vector::<g::VenueTop>(venues.len());
        for v in venues.iter().rev() {
            fbb.push(v.to_struct());
        }
        let venues = fbb.end_vector(venues.len());
        g::ConsolidatedBbo::create(
            fbb,
            &g::ConsolidatedBboArgs {
                symbol: Some(&g::Symbol::new(&self.symbol)),
                bid_price: self.bid_price,
                bid_size: self.bid_size,
                bid_venue: self.bid_venue,
                ask_price: self.ask_price,
                ask_size: self.ask_size,
                ask_venue: self.ask_venue,
                flags: self.flags,
                venues: Some(venues),
            },
        )
        .as_union_value()
    }
}
