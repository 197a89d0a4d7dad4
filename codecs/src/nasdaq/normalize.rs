//! Normalization: decoded ITCH 5.0 messages into normalized FlatBuffers envelopes.
//!
//! Lossless: every field of every ITCH message reaches the normalized event, byte for byte
//! (alpha fields keep their padding, single-character codes their ASCII byte, prices their
//! raw fixed-point value). The message type becomes the union tag; stock locate, tracking
//! number and timestamp go to the envelope header beside the caller's sequence number and
//! receive timestamp; the envelope names the venue ([`Venue::Nasdaq`]) and the instrument
//! (the stock locate).
//!
//! ```
//! use mdbus_codecs::fb::{self, Side};
//! use mdbus_codecs::nasdaq::itch::{self, OrderDeleteFields};
//! use mdbus_codecs::nasdaq::normalize::Normalizer;
//!
//! let wire = OrderDeleteFields {
//!     stock_locate: 13,
//!     tracking_number: 1,
//!     timestamp: 34_200_000_000_000,
//!     order_reference_number: 42,
//! }
//! .to_bytes()?;
//! let mut norm = Normalizer::new();
//! let msg = norm.normalize(&itch::decode(&wire)?, 1001, 1_580_394_600_000_000_000);
//! let env = msg.envelope();
//! assert_eq!(env.header().seq(), 1001);
//! assert_eq!(env.header().exchange_ts_ns(), 34_200_000_000_000);
//! assert_eq!(env.event_as_order_delete().map(|d| d.body().order_reference_number()), Some(42));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::fb::{
    self, Encoded, Encoder, EnvelopeFlags, EventSink, HeaderFields, Side, SystemEventCode, ToBytes,
    ToBytesWithBuilder, TradingState, Venue,
};
use crate::nasdaq::itch::{self, Message};

/// The fields of an ITCH Stock Directory as the normalizer puts them in its envelope; for a
/// consumer of decoded messages that publishes what it would read from that envelope.
#[inline]
pub fn stock_directory_fields(m: &itch::StockDirectory<'_>) -> fb::StockDirectoryFields {
    fb::StockDirectoryFields {
        stock: m.stock(),
        market_category: m.market_category(),
        financial_status_indicator: m.financial_status_indicator(),
        round_lot_size: m.round_lot_size(),
        round_lots_only: m.round_lots_only(),
        issue_classification: m.issue_classification(),
        issue_sub_type: m.issue_sub_type(),
        authenticity: m.authenticity(),
        short_sale_threshold_indicator: m.short_sale_threshold_indicator(),
        ipo_flag: m.ipo_flag(),
        luld_reference_price_tier: m.luld_reference_price_tier(),
        etp_flag: m.etp_flag(),
        etp_leverage_factor: m.etp_leverage_factor(),
        inverse_indicator: m.inverse_indicator(),
    }
}

/// The fields of an ITCH Trade (non-cross) as the normalizer puts them in its envelope.
#[inline]
pub fn trade_fields(m: &itch::Trade<'_>) -> fb::TradeFields {
    fb::TradeFields {
        order_reference_number: m.order_reference_number(),
        buy_sell_indicator: Side(m.buy_sell_indicator()),
        shares: m.shares(),
        stock: m.stock(),
        price: m.price().0,
        match_number: m.match_number(),
    }
}

/// The fields of an ITCH Cross Trade as the normalizer puts them in its envelope.
#[inline]
pub fn cross_trade_fields(m: &itch::CrossTrade<'_>) -> fb::CrossTradeFields {
    fb::CrossTradeFields {
        shares: m.shares(),
        stock: m.stock(),
        cross_price: m.cross_price().0,
        match_number: m.match_number(),
        cross_type: m.cross_type(),
    }
}

/// The fields of an ITCH Broken Trade as the normalizer puts them in its envelope.
#[inline]
pub fn broken_trade_fields(m: &itch::BrokenTrade<'_>) -> fb::BrokenTradeFields {
    fb::BrokenTradeFields {
        match_number: m.match_number(),
    }
}

/// Turns decoded ITCH messages into normalized envelopes with one reused [`Encoder`]: no
/// allocation per message, nothing can fail (every ITCH 5.0 message has a normalized form).
#[derive(Debug, Default)]
pub struct Normalizer {
    encoder: Encoder,
    flags: EnvelopeFlags,
}

impl Normalizer {
    /// A normalizer for live data (no envelope flags).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the delivery flags stamped on every following message (e.g.
    /// [`EnvelopeFlags::Replayed`] when reading a capture, [`EnvelopeFlags::Retransmitted`]
    /// while forwarding recovered messages).
    pub fn set_flags(&mut self, flags: EnvelopeFlags) {
        self.flags = flags;
    }

    /// The flags stamped on every message.
    pub fn flags(&self) -> EnvelopeFlags {
        self.flags
    }

    /// The encoder, to publish bus-level events (heartbeats, gap notices, book updates) with
    /// the same buffers.
    pub fn encoder(&mut self) -> &mut Encoder {
        &mut self.encoder
    }

    /// Normalizes one ITCH message: `seq` is its source sequence number (MoldUDP64 sequence
    /// number, or position in a capture), `recv_ts_ns` when it was received (ns since the Unix
    /// epoch). The result borrows the normalizer until the next call.
    #[inline]
    pub fn normalize(&mut self, msg: &Message<'_>, seq: u64, recv_ts_ns: u64) -> Encoded<'_> {
        self.normalize_to(msg, seq, recv_ts_ns, &mut ToBytes)
    }

    /// [`normalize`](Self::normalize) with every kind encoded through the FlatBuffers builder
    /// ([`Encoder::encode_with_builder`]): the baseline the default path is measured against.
    pub fn normalize_with_builder(
        &mut self,
        msg: &Message<'_>,
        seq: u64,
        recv_ts_ns: u64,
    ) -> Encoded<'_> {
        self.normalize_to(msg, seq, recv_ts_ns, &mut ToBytesWithBuilder)
    }

    /// [`normalize`](Self::normalize) into `sink`: the event and its header go to the sink
    /// with this normalizer's encoder (a bus publisher writes it straight into its ring).
    #[inline(always)]
    pub fn normalize_to<S: EventSink>(
        &mut self,
        msg: &Message<'_>,
        seq: u64,
        recv_ts_ns: u64,
        sink: &mut S,
    ) -> S::Out<'_> {
        // The header is read from each arm's own view (fixed offsets), not through
        // `Message`'s accessors, which would dispatch on the type again for every field.
        let flags = self.flags;
        macro_rules! header {
            ($m:expr) => {
                &HeaderFields {
                    seq,
                    exchange_ts_ns: $m.timestamp(),
                    recv_ts_ns,
                    stock_locate: $m.stock_locate(),
                    tracking_number: $m.tracking_number(),
                    flags,
                    venue: Venue::Nasdaq,
                    instrument: u32::from($m.stock_locate()),
                }
            };
        }
        let enc = &mut self.encoder;
        match msg {
            Message::SystemEvent(m) => sink.put(
                enc,
                header!(m),
                &fb::SystemEventFields {
                    event_code: SystemEventCode(m.event_code()),
                },
            ),
            Message::StockDirectory(m) => sink.put(enc, header!(m), &stock_directory_fields(m)),
            Message::StockTradingAction(m) => sink.put(
                enc,
                header!(m),
                &fb::StockTradingActionFields {
                    stock: m.stock(),
                    trading_state: TradingState(m.trading_state()),
                    reserved: m.reserved(),
                    reason: m.reason(),
                },
            ),
            Message::RegShoRestriction(m) => sink.put(
                enc,
                header!(m),
                &fb::RegShoRestrictionFields {
                    stock: m.stock(),
                    reg_sho_action: m.reg_sho_action(),
                },
            ),
            Message::MarketParticipantPosition(m) => sink.put(
                enc,
                header!(m),
                &fb::MarketParticipantPositionFields {
                    mpid: m.mpid(),
                    stock: m.stock(),
                    primary_market_maker: m.primary_market_maker(),
                    market_maker_mode: m.market_maker_mode(),
                    market_participant_state: m.market_participant_state(),
                },
            ),
            Message::MwcbDeclineLevel(m) => sink.put(
                enc,
                header!(m),
                &fb::MwcbDeclineLevelFields {
                    level1: m.level1().0,
                    level2: m.level2().0,
                    level3: m.level3().0,
                },
            ),
            Message::MwcbStatus(m) => sink.put(
                enc,
                header!(m),
                &fb::MwcbStatusFields {
                    breached_level: m.breached_level(),
                },
            ),
            Message::IpoQuotingPeriodUpdate(m) => sink.put(
                enc,
                header!(m),
                &fb::IpoQuotingPeriodUpdateFields {
                    stock: m.stock(),
                    ipo_quotation_release_time: m.ipo_quotation_release_time(),
                    ipo_quotation_release_qualifier: m.ipo_quotation_release_qualifier(),
                    ipo_price: m.ipo_price().0,
                },
            ),
            Message::LuldAuctionCollar(m) => sink.put(
                enc,
                header!(m),
                &fb::LuldAuctionCollarFields {
                    stock: m.stock(),
                    auction_collar_reference_price: m.auction_collar_reference_price().0,
                    upper_auction_collar_price: m.upper_auction_collar_price().0,
                    lower_auction_collar_price: m.lower_auction_collar_price().0,
                    auction_collar_extension: m.auction_collar_extension(),
                },
            ),
            Message::OperationalHalt(m) => sink.put(
                enc,
                header!(m),
                &fb::OperationalHaltFields {
                    stock: m.stock(),
                    market_code: m.market_code(),
                    operational_halt_action: m.operational_halt_action(),
                },
            ),
            Message::AddOrder(m) => sink.put(
                enc,
                header!(m),
                &fb::AddOrderFields {
                    order_reference_number: m.order_reference_number(),
                    buy_sell_indicator: Side(m.buy_sell_indicator()),
                    shares: m.shares(),
                    stock: m.stock(),
                    price: m.price().0,
                },
            ),
            Message::AddOrderMpid(m) => sink.put(
                enc,
                header!(m),
                &fb::AddOrderMpidFields {
                    order_reference_number: m.order_reference_number(),
                    buy_sell_indicator: Side(m.buy_sell_indicator()),
                    shares: m.shares(),
                    stock: m.stock(),
                    price: m.price().0,
                    attribution: m.attribution(),
                },
            ),
            Message::OrderExecuted(m) => sink.put(
                enc,
                header!(m),
                &fb::OrderExecutedFields {
                    order_reference_number: m.order_reference_number(),
                    executed_shares: m.executed_shares(),
                    match_number: m.match_number(),
                },
            ),
            Message::OrderExecutedWithPrice(m) => sink.put(
                enc,
                header!(m),
                &fb::OrderExecutedWithPriceFields {
                    order_reference_number: m.order_reference_number(),
                    executed_shares: m.executed_shares(),
                    match_number: m.match_number(),
                    printable: m.printable(),
                    execution_price: m.execution_price().0,
                },
            ),
            Message::OrderCancel(m) => sink.put(
                enc,
                header!(m),
                &fb::OrderCancelFields {
                    order_reference_number: m.order_reference_number(),
                    cancelled_shares: m.cancelled_shares(),
                },
            ),
            Message::OrderDelete(m) => sink.put(
                enc,
                header!(m),
                &fb::OrderDeleteFields {
                    order_reference_number: m.order_reference_number(),
                },
            ),
            Message::OrderReplace(m) => sink.put(
                enc,
                header!(m),
                &fb::OrderReplaceFields {
                    original_order_reference_number: m.original_order_reference_number(),
                    new_order_reference_number: m.new_order_reference_number(),
                    shares: m.shares(),
                    price: m.price().0,
                },
            ),
            Message::Trade(m) => sink.put(enc, header!(m), &trade_fields(m)),
            Message::CrossTrade(m) => sink.put(enc, header!(m), &cross_trade_fields(m)),
            Message::BrokenTrade(m) => sink.put(enc, header!(m), &broken_trade_fields(m)),
            Message::NetOrderImbalanceIndicator(m) => sink.put(
                enc,
                header!(m),
                &fb::NetOrderImbalanceIndicatorFields {
                    paired_shares: m.paired_shares(),
                    imbalance_shares: m.imbalance_shares(),
                    imbalance_direction: m.imbalance_direction(),
                    stock: m.stock(),
                    far_price: m.far_price().0,
                    near_price: m.near_price().0,
                    current_reference_price: m.current_reference_price().0,
                    cross_type: m.cross_type(),
                    price_variation_indicator: m.price_variation_indicator(),
                },
            ),
            Message::RetailPriceImprovementIndicator(m) => sink.put(
                enc,
                header!(m),
                &fb::RetailPriceImprovementIndicatorFields {
                    stock: m.stock(),
                    interest_flag: m.interest_flag(),
                },
            ),
            Message::DirectListingPriceDiscovery(m) => sink.put(
                enc,
                header!(m),
                &fb::DirectListingPriceDiscoveryFields {
                    stock: m.stock(),
                    open_eligibility_status: m.open_eligibility_status(),
                    minimum_allowable_price: m.minimum_allowable_price().0,
                    maximum_allowable_price: m.maximum_allowable_price().0,
                    near_execution_price: m.near_execution_price().0,
                    near_execution_time: m.near_execution_time(),
                    lower_price_range_collar: m.lower_price_range_collar().0,
                    upper_price_range_collar: m.upper_price_range_collar().0,
                },
            ),
        }
    }
}
