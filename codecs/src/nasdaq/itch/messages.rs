//! The ITCH 5.0 message table: one zero-copy view and one owned field struct per message type,
//! plus the [`Message`] and [`MessageFields`] enums over all of them.
//!
//! Every message starts with the same 11-byte header:
//!
//! ```text
//!  offset  0      1..3           3..5              5..11
//!        +------+--------------+-----------------+---------------------------+
//!        | type | stock_locate | tracking_number | timestamp (ns since 00:00) |
//!        +------+--------------+-----------------+---------------------------+
//! ```
//!
//! followed by the type's own fields at the offsets written in the table below. The table is
//! checked at compile time: the fields of each type must follow one another without gaps from
//! offset 11 and end exactly at the type's length.

use core::fmt;

use super::field::{DebugField, Field, read_timestamp, write_timestamp};
use super::{DecodeError, EncodeError, MAX_TIMESTAMP, Price4, Price8};

macro_rules! itch_messages {
    ($(
        $(#[$doc:meta])*
        $name:ident, $fields:ident = $ty:literal, $len:literal {
            $( $(#[$fdoc:meta])* $field:ident : $fty:ty = $off:literal, )*
        }
    )*) => {
        $(
            // Layout check: contiguous fields from offset 11 ending exactly at the length.
            const _: () = {
                #[allow(unused_mut)]
                let mut next = 11usize;
                $(
                    assert!($off == next, "ITCH field offset does not follow the previous field");
                    next = $off + <$fty as Field>::SIZE;
                )*
                assert!(next == $len, "ITCH fields do not end at the message length");
            };

            $(#[$doc])*
            ///
            /// A zero-copy view over exactly
            #[doc = concat!(stringify!($len), " bytes whose first byte is `", stringify!($ty), "`.")]
            /// Made only by [`decode`](super::decode) or `from_bytes`, which check the length
            /// once, so the accessors cannot go out of bounds.
            #[derive(Clone, Copy, PartialEq, Eq, Hash)]
            pub struct $name<'a>(&'a [u8; $len]);

            impl<'a> $name<'a> {
                /// The message type byte.
                pub const MSG_TYPE: u8 = $ty;
                /// The message length in bytes (fixed per type).
                pub const LEN: usize = $len;

                /// Views `buf` as this message type: `buf` must be exactly one message of this
                /// type, without a length prefix.
                pub fn from_bytes(buf: &'a [u8]) -> Result<Self, DecodeError> {
                    match buf.first() {
                        None => Err(DecodeError::Empty),
                        Some(&t) if t != Self::MSG_TYPE => Err(DecodeError::UnexpectedType {
                            expected: Self::MSG_TYPE,
                            found: t,
                        }),
                        Some(&t) => match <&[u8; $len]>::try_from(buf) {
                            Ok(a) => Ok(Self(a)),
                            Err(_) => Err(DecodeError::length(t, buf.len(), $len)),
                        },
                    }
                }

                /// The raw bytes of the message.
                #[inline]
                pub fn as_bytes(&self) -> &'a [u8; $len] {
                    self.0
                }

                /// Locate code identifying the security (0 for messages not tied to one).
                #[inline]
                pub fn stock_locate(&self) -> u16 {
                    u16::read(self.0, 1)
                }

                /// Nasdaq internal tracking number.
                #[inline]
                pub fn tracking_number(&self) -> u16 {
                    u16::read(self.0, 3)
                }

                /// Nanoseconds since midnight (6 bytes on the wire).
                #[inline]
                pub fn timestamp(&self) -> u64 {
                    read_timestamp(self.0)
                }

                $(
                    $(#[$fdoc])*
                    #[inline]
                    pub fn $field(&self) -> $fty {
                        <$fty as Field>::read(self.0, $off)
                    }
                )*

                /// Copies every field out into the owned form.
                pub fn to_fields(&self) -> $fields {
                    $fields {
                        stock_locate: self.stock_locate(),
                        tracking_number: self.tracking_number(),
                        timestamp: self.timestamp(),
                        $( $field: self.$field(), )*
                    }
                }
            }

            impl fmt::Debug for $name<'_> {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    fmt::Debug::fmt(&self.to_fields(), f)
                }
            }

            #[doc = concat!("Owned fields of [`", stringify!($name), "`], for building and encoding messages.")]
            #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
            pub struct $fields {
                /// Locate code identifying the security.
                pub stock_locate: u16,
                /// Nasdaq internal tracking number.
                pub tracking_number: u16,
                /// Nanoseconds since midnight; must fit in 48 bits to be encoded.
                pub timestamp: u64,
                $( $(#[$fdoc])* pub $field: $fty, )*
            }

            impl $fields {
                /// The message type byte.
                pub const MSG_TYPE: u8 = $ty;
                /// The message length in bytes.
                pub const LEN: usize = $len;

                /// Writes the message (no length prefix) at the start of `buf`; returns the
                /// number of bytes written ([`Self::LEN`]).
                pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
                    if self.timestamp > MAX_TIMESTAMP {
                        return Err(EncodeError::TimestampOutOfRange { timestamp: self.timestamp });
                    }
                    let Some(b) = buf.get_mut(..$len) else {
                        return Err(EncodeError::BufferTooSmall { needed: $len, available: buf.len() });
                    };
                    b[0] = Self::MSG_TYPE;
                    self.stock_locate.write(b, 1);
                    self.tracking_number.write(b, 3);
                    write_timestamp(b, self.timestamp);
                    $( <$fty as Field>::write(self.$field, b, $off); )*
                    Ok($len)
                }

                /// Encodes the message into a fixed-size array.
                pub fn to_bytes(&self) -> Result<[u8; $len], EncodeError> {
                    let mut b = [0u8; $len];
                    self.encode(&mut b)?;
                    Ok(b)
                }
            }

            impl fmt::Debug for $fields {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.debug_struct(stringify!($name))
                        .field("stock_locate", &self.stock_locate)
                        .field("tracking_number", &self.tracking_number)
                        .field("timestamp", &self.timestamp)
                        $( .field(stringify!($field), &DebugField(&self.$field)) )*
                        .finish()
                }
            }

            impl<'a> From<$name<'a>> for Message<'a> {
                fn from(m: $name<'a>) -> Self {
                    Message::$name(m)
                }
            }

            impl From<$fields> for MessageFields {
                fn from(m: $fields) -> Self {
                    MessageFields::$name(m)
                }
            }
        )*

        /// One decoded ITCH 5.0 message: a zero-copy view per type, borrowing the input bytes.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Message<'a> {
            $( $(#[$doc])* $name($name<'a>), )*
        }

        /// The owned fields of any ITCH 5.0 message, for building and encoding messages.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum MessageFields {
            $( $(#[$doc])* $name($fields), )*
        }

        /// Every message type byte this decoder knows, in specification order.
        pub const MESSAGE_TYPES: &[u8] = &[$( $ty, )*];

        /// Fixed length of the message of type `msg_type`, or `None` for an unknown type.
        pub const fn message_len(msg_type: u8) -> Option<usize> {
            match msg_type {
                $( $ty => Some($len), )*
                _ => None,
            }
        }

        /// Decodes exactly one ITCH 5.0 message (no length prefix) without copying.
        ///
        /// The length is checked once here against the fixed length of the type; the returned
        /// view's accessors then read straight from `buf`. Never panics.
        #[inline]
        pub fn decode(buf: &[u8]) -> Result<Message<'_>, DecodeError> {
            let Some(&t) = buf.first() else {
                return Err(DecodeError::Empty);
            };
            match t {
                $(
                    $ty => match <&[u8; $len]>::try_from(buf) {
                        Ok(a) => Ok(Message::$name($name(a))),
                        Err(_) => Err(DecodeError::length(t, buf.len(), $len)),
                    },
                )*
                _ => Err(DecodeError::UnknownType { msg_type: t, len: buf.len() }),
            }
        }

        impl<'a> Message<'a> {
            /// The message type byte (`b'A'` for Add Order, ...).
            #[inline]
            pub fn msg_type(&self) -> u8 {
                match self { $( Message::$name(_) => $ty, )* }
            }

            /// The raw bytes of the message (no length prefix).
            #[inline]
            pub fn as_bytes(&self) -> &'a [u8] {
                match self { $( Message::$name(m) => m.0, )* }
            }

            /// Locate code identifying the security (0 for messages not tied to one).
            #[inline]
            pub fn stock_locate(&self) -> u16 {
                u16::read(self.as_bytes(), 1)
            }

            /// Nasdaq internal tracking number.
            #[inline]
            pub fn tracking_number(&self) -> u16 {
                u16::read(self.as_bytes(), 3)
            }

            /// Nanoseconds since midnight.
            #[inline]
            pub fn timestamp(&self) -> u64 {
                read_timestamp(self.as_bytes())
            }

            /// Copies every field out into the owned form.
            pub fn to_fields(&self) -> MessageFields {
                match self { $( Message::$name(m) => MessageFields::$name(m.to_fields()), )* }
            }
        }

        impl MessageFields {
            /// The message type byte.
            pub fn msg_type(&self) -> u8 {
                match self { $( MessageFields::$name(_) => $ty, )* }
            }

            /// The encoded length in bytes (without a length prefix).
            pub fn encoded_len(&self) -> usize {
                match self { $( MessageFields::$name(_) => $len, )* }
            }

            /// Writes the message (no length prefix) at the start of `buf`; returns the number
            /// of bytes written.
            pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
                match self { $( MessageFields::$name(m) => m.encode(buf), )* }
            }
        }
    };
}

itch_messages! {
    /// `S` System Event: signals a market or data feed handler event.
    SystemEvent, SystemEventFields = b'S', 12 {
        /// Event code: `O` start of messages, `S` start of system hours, `Q` start of market
        /// hours, `M` end of market hours, `E` end of system hours, `C` end of messages.
        event_code: u8 = 11,
    }
    /// `R` Stock Directory: one per security at the start of the day.
    StockDirectory, StockDirectoryFields = b'R', 39 {
        /// Security symbol, left-justified, space-padded.
        stock: [u8; 8] = 11,
        /// Listing market (`Q`, `G`, `S`, `N`, `A`, `P`, `Z`, `V`, space).
        market_category: u8 = 19,
        /// Financial status for Nasdaq-listed issues.
        financial_status_indicator: u8 = 20,
        /// Number of shares in a round lot.
        round_lot_size: u32 = 21,
        /// `Y` if only round lots are accepted.
        round_lots_only: u8 = 25,
        /// Security class.
        issue_classification: u8 = 26,
        /// Security sub-type (two characters).
        issue_sub_type: [u8; 2] = 27,
        /// `P` live/production, `T` test.
        authenticity: u8 = 29,
        /// Reg SHO short sale threshold indicator (`Y`, `N`, space).
        short_sale_threshold_indicator: u8 = 30,
        /// IPO flag (`Y`, `N`, space).
        ipo_flag: u8 = 31,
        /// LULD reference price tier (`1`, `2`, space).
        luld_reference_price_tier: u8 = 32,
        /// Exchange traded product flag (`Y`, `N`, space).
        etp_flag: u8 = 33,
        /// ETP leverage factor (integer).
        etp_leverage_factor: u32 = 34,
        /// `Y` for an inverse ETP.
        inverse_indicator: u8 = 38,
    }
    /// `H` Stock Trading Action: trading status of a security.
    StockTradingAction, StockTradingActionFields = b'H', 25 {
        /// Security symbol.
        stock: [u8; 8] = 11,
        /// `H` halted, `P` paused, `Q` quotation only, `T` trading.
        trading_state: u8 = 19,
        /// Reserved.
        reserved: u8 = 20,
        /// Trading action reason (four characters).
        reason: [u8; 4] = 21,
    }
    /// `Y` Reg SHO Short Sale Price Test Restricted Indicator.
    RegShoRestriction, RegShoRestrictionFields = b'Y', 20 {
        /// Security symbol.
        stock: [u8; 8] = 11,
        /// `0` no test, `1` test in effect (intra-day drop), `2` test remains in effect.
        reg_sho_action: u8 = 19,
    }
    /// `L` Market Participant Position.
    MarketParticipantPosition, MarketParticipantPositionFields = b'L', 26 {
        /// Market participant identifier (four characters).
        mpid: [u8; 4] = 11,
        /// Security symbol.
        stock: [u8; 8] = 15,
        /// `Y` primary market maker, `N` not.
        primary_market_maker: u8 = 23,
        /// `N` normal, `P` passive, `S` syndicate, `R` pre-syndicate, `L` penalty.
        market_maker_mode: u8 = 24,
        /// `A` active, `E` excused, `W` withdrawn, `S` suspended, `D` deleted.
        market_participant_state: u8 = 25,
    }
    /// `V` MWCB Decline Level: market-wide circuit breaker levels for the day.
    MwcbDeclineLevel, MwcbDeclineLevelFields = b'V', 35 {
        /// Level 1 (Price(8)).
        level1: Price8 = 11,
        /// Level 2 (Price(8)).
        level2: Price8 = 19,
        /// Level 3 (Price(8)).
        level3: Price8 = 27,
    }
    /// `W` MWCB Status: a market-wide circuit breaker level was breached.
    MwcbStatus, MwcbStatusFields = b'W', 12 {
        /// Level breached: `1`, `2` or `3`.
        breached_level: u8 = 11,
    }
    /// `K` Quoting Period Update (IPO).
    IpoQuotingPeriodUpdate, IpoQuotingPeriodUpdateFields = b'K', 28 {
        /// Security symbol.
        stock: [u8; 8] = 11,
        /// Seconds since midnight of the anticipated quotation release.
        ipo_quotation_release_time: u32 = 19,
        /// `A` anticipated release time, `C` postponed / cancelled.
        ipo_quotation_release_qualifier: u8 = 23,
        /// IPO price.
        ipo_price: Price4 = 24,
    }
    /// `J` LULD Auction Collar.
    LuldAuctionCollar, LuldAuctionCollarFields = b'J', 35 {
        /// Security symbol.
        stock: [u8; 8] = 11,
        /// Reference price used to set the collars.
        auction_collar_reference_price: Price4 = 19,
        /// Upper collar price.
        upper_auction_collar_price: Price4 = 23,
        /// Lower collar price.
        lower_auction_collar_price: Price4 = 27,
        /// Number of extensions of the reopening auction.
        auction_collar_extension: u32 = 31,
    }
    /// `h` Operational Halt.
    OperationalHalt, OperationalHaltFields = b'h', 21 {
        /// Security symbol.
        stock: [u8; 8] = 11,
        /// `Q` Nasdaq, `B` BX, `X` PSX.
        market_code: u8 = 19,
        /// `H` halted, `T` resumed.
        operational_halt_action: u8 = 20,
    }
    /// `A` Add Order (no MPID attribution).
    AddOrder, AddOrderFields = b'A', 36 {
        /// Day-unique order reference number.
        order_reference_number: u64 = 11,
        /// `B` buy, `S` sell.
        buy_sell_indicator: u8 = 19,
        /// Displayed shares.
        shares: u32 = 20,
        /// Security symbol.
        stock: [u8; 8] = 24,
        /// Display price.
        price: Price4 = 32,
    }
    /// `F` Add Order with MPID attribution.
    AddOrderMpid, AddOrderMpidFields = b'F', 40 {
        /// Day-unique order reference number.
        order_reference_number: u64 = 11,
        /// `B` buy, `S` sell.
        buy_sell_indicator: u8 = 19,
        /// Displayed shares.
        shares: u32 = 20,
        /// Security symbol.
        stock: [u8; 8] = 24,
        /// Display price.
        price: Price4 = 32,
        /// Market participant identifier of the order (four characters).
        attribution: [u8; 4] = 36,
    }
    /// `E` Order Executed (at the order's display price).
    OrderExecuted, OrderExecutedFields = b'E', 31 {
        /// Reference number of the executed order.
        order_reference_number: u64 = 11,
        /// Shares executed.
        executed_shares: u32 = 19,
        /// Day-unique match number of the execution.
        match_number: u64 = 23,
    }
    /// `C` Order Executed With Price (at a price other than the display price).
    OrderExecutedWithPrice, OrderExecutedWithPriceFields = b'C', 36 {
        /// Reference number of the executed order.
        order_reference_number: u64 = 11,
        /// Shares executed.
        executed_shares: u32 = 19,
        /// Day-unique match number of the execution.
        match_number: u64 = 23,
        /// `Y` printable (counts toward volume), `N` not.
        printable: u8 = 31,
        /// Execution price.
        execution_price: Price4 = 32,
    }
    /// `X` Order Cancel (partial).
    OrderCancel, OrderCancelFields = b'X', 23 {
        /// Reference number of the order.
        order_reference_number: u64 = 11,
        /// Shares removed from the order.
        cancelled_shares: u32 = 19,
    }
    /// `D` Order Delete.
    OrderDelete, OrderDeleteFields = b'D', 19 {
        /// Reference number of the deleted order.
        order_reference_number: u64 = 11,
    }
    /// `U` Order Replace: the original order is removed and a new one added.
    OrderReplace, OrderReplaceFields = b'U', 35 {
        /// Reference number of the replaced order.
        original_order_reference_number: u64 = 11,
        /// Reference number of the new order.
        new_order_reference_number: u64 = 19,
        /// Displayed shares of the new order.
        shares: u32 = 27,
        /// Display price of the new order.
        price: Price4 = 31,
    }
    /// `P` Trade (non-cross): execution of a non-displayed order.
    Trade, TradeFields = b'P', 44 {
        /// Reference number of the non-displayed order (0 since 2015).
        order_reference_number: u64 = 11,
        /// `B` buy, `S` sell (always `B` since 2015).
        buy_sell_indicator: u8 = 19,
        /// Shares executed.
        shares: u32 = 20,
        /// Security symbol.
        stock: [u8; 8] = 24,
        /// Execution price.
        price: Price4 = 32,
        /// Day-unique match number.
        match_number: u64 = 36,
    }
    /// `Q` Cross Trade.
    CrossTrade, CrossTradeFields = b'Q', 40 {
        /// Shares matched in the cross (8 bytes).
        shares: u64 = 11,
        /// Security symbol.
        stock: [u8; 8] = 19,
        /// Cross price.
        cross_price: Price4 = 27,
        /// Day-unique match number.
        match_number: u64 = 31,
        /// `O` opening, `C` closing, `H` IPO/halt, `I` intraday/extended cross.
        cross_type: u8 = 39,
    }
    /// `B` Broken Trade: an execution was broken.
    BrokenTrade, BrokenTradeFields = b'B', 19 {
        /// Match number of the broken execution.
        match_number: u64 = 11,
    }
    /// `I` Net Order Imbalance Indicator (NOII).
    NetOrderImbalanceIndicator, NetOrderImbalanceIndicatorFields = b'I', 50 {
        /// Shares paired at the current reference price.
        paired_shares: u64 = 11,
        /// Shares not paired at the current reference price.
        imbalance_shares: u64 = 19,
        /// `B` buy, `S` sell, `N` none, `O` insufficient orders, `P` paused.
        imbalance_direction: u8 = 27,
        /// Security symbol.
        stock: [u8; 8] = 28,
        /// Hypothetical clearing price of cross orders only.
        far_price: Price4 = 36,
        /// Hypothetical clearing price of cross and continuous orders.
        near_price: Price4 = 40,
        /// Price at which paired shares are maximized.
        current_reference_price: Price4 = 44,
        /// `O` opening, `C` closing, `H` IPO/halt, `A` extended trading close.
        cross_type: u8 = 48,
        /// Deviation of the near price from the reference price (`L`, `1`-`9`, `A`-`C`, space).
        price_variation_indicator: u8 = 49,
    }
    /// `N` Retail Price Improvement Indicator (RPII).
    RetailPriceImprovementIndicator, RetailPriceImprovementIndicatorFields = b'N', 20 {
        /// Security symbol.
        stock: [u8; 8] = 11,
        /// `B` buy side, `S` sell side, `A` both, `N` none.
        interest_flag: u8 = 19,
    }
    /// `O` Direct Listing with Capital Raise Price Discovery.
    DirectListingPriceDiscovery, DirectListingPriceDiscoveryFields = b'O', 48 {
        /// Security symbol.
        stock: [u8; 8] = 11,
        /// `N` not eligible, `Y` eligible to open.
        open_eligibility_status: u8 = 19,
        /// Minimum allowable price.
        minimum_allowable_price: Price4 = 20,
        /// Maximum allowable price.
        maximum_allowable_price: Price4 = 24,
        /// Near execution price.
        near_execution_price: Price4 = 28,
        /// Time of the near execution price (8 bytes).
        near_execution_time: u64 = 32,
        /// Lower price range collar.
        lower_price_range_collar: Price4 = 40,
        /// Upper price range collar.
        upper_price_range_collar: Price4 = 44,
    }
}

impl StockDirectoryFields {
    /// The directory entry of an ordinary Nasdaq-listed common stock (round lots of 100, not
    /// an ETP, tier 1) naming `stock` for `locate` at `timestamp` (ns since midnight).
    pub fn common_stock(locate: u16, stock: [u8; 8], timestamp: u64) -> Self {
        StockDirectoryFields {
            stock_locate: locate,
            tracking_number: 0,
            timestamp,
            stock,
            market_category: b'Q',
            financial_status_indicator: b'N',
            round_lot_size: 100,
            round_lots_only: b'N',
            issue_classification: b'C',
            issue_sub_type: *b"Z ",
            authenticity: b'P',
            short_sale_threshold_indicator: b'N',
            ipo_flag: b'N',
            luld_reference_price_tier: b'1',
            etp_flag: b'N',
            etp_leverage_factor: 0,
            inverse_indicator: b'N',
        }
    }
}
