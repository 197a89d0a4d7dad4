//! The messages of IEX's TOPS 1.5/1.6, DEEP 1.0 and DEEP+ 1.0 feeds: zero-copy,
//! bounds-checked views, every field under its specification name and width.
//!
//! The three feeds share one message space (a type byte never means two layouts), so one
//! [`decode`] reads them all; [`decode_for`] also refuses a type the given feed does not
//! send. All integers are little-endian. The specifications' types:
//!
//! - *Price*: `i64`, 4 implied decimal places (`1_234_500` = 123.45);
//! - *Timestamp*: `i64`, nanoseconds since the Unix epoch (UTC);
//! - *Event Time*: `u32`, seconds since the Unix epoch;
//! - *String*: fixed-width ASCII, left-justified, space-padded (symbols are 8 bytes).
//!
//! Every message starts with Message Type (1 byte), a type-specific byte (flags or a code),
//! and Timestamp (8 bytes). A message longer than its layout is accepted and read by its
//! layout (IEX may append fields); a shorter one is [`DecodeError::Truncated`].
//!
//! ```
//! use mdbus_codecs::iex::message::{self, Message};
//!
//! let mut bytes = [0u8; 30];
//! bytes[0] = b'8'; // price level update, buy side
//! bytes[1] = 0x01; // event processing complete
//! bytes[2..10].copy_from_slice(&1_493_132_590_000_000_000i64.to_le_bytes());
//! bytes[10..18].copy_from_slice(b"ZIEXT   ");
//! bytes[18..22].copy_from_slice(&100u32.to_le_bytes());
//! bytes[22..30].copy_from_slice(&251_500i64.to_le_bytes());
//! let Message::PriceLevelUpdateBuy(m) = message::decode(&bytes)? else { unreachable!() };
//! assert_eq!((m.size(), m.price(), &m.symbol()), (100, 251_500, b"ZIEXT   "));
//! assert!(m.event_processing_complete());
//! # Ok::<(), mdbus_codecs::iex::message::DecodeError>(())
//! ```

use core::fmt;

use crate::iex::tp::Protocol;

/// Why bytes are not an IEX message. Small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    /// No bytes.
    #[error("empty IEX message")]
    Empty,
    /// A type byte no IEX feed defines.
    #[error("unknown IEX message type {msg_type:#04x} ({})", char::from(*msg_type).escape_default())]
    UnknownType {
        /// The type byte.
        msg_type: u8,
    },
    /// A type the feed named does not send.
    #[error("IEX message type {msg_type:#04x} ({}) is not part of {protocol}", char::from(*msg_type).escape_default())]
    NotInProtocol {
        /// The type byte.
        msg_type: u8,
        /// The feed.
        protocol: Protocol,
    },
    /// Fewer bytes than the type's layout.
    #[error("IEX message type {} truncated: {len} bytes, {needed} needed", char::from(*msg_type).escape_default())]
    Truncated {
        /// The type byte.
        msg_type: u8,
        /// Bytes given.
        len: usize,
        /// Bytes the layout needs.
        needed: usize,
    },
}

#[inline]
fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

/// Reads a field of a fixed width at a fixed offset of a view (checked against the view's
/// length when the view was made).
trait Field: Sized {
    fn read(b: &[u8], at: usize) -> Self;
}

impl Field for u8 {
    #[inline]
    fn read(b: &[u8], at: usize) -> u8 {
        b[at]
    }
}

impl Field for u32 {
    #[inline]
    fn read(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(arr(b, at))
    }
}

impl Field for u64 {
    #[inline]
    fn read(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(arr(b, at))
    }
}

impl Field for i64 {
    #[inline]
    fn read(b: &[u8], at: usize) -> i64 {
        i64::from_le_bytes(arr(b, at))
    }
}

impl<const N: usize> Field for [u8; N] {
    #[inline]
    fn read(b: &[u8], at: usize) -> [u8; N] {
        arr(b, at)
    }
}

macro_rules! views {
    ($(
        $(#[$doc:meta])*
        $name:ident = $ty:literal, $len:literal {
            $( $(#[$fdoc:meta])* $field:ident : $fty:ty = $off:literal ),* $(,)?
        }
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Copy, PartialEq, Eq, Hash)]
            pub struct $name<'a>(&'a [u8]);

            impl<'a> $name<'a> {
                /// The type byte.
                pub const TYPE: u8 = $ty;
                /// Length of the layout (a message may be longer).
                pub const LEN: usize = $len;

                /// A view of `bytes`, which must start with this type and hold the layout.
                #[inline]
                pub fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
                    match bytes.first() {
                        None => Err(DecodeError::Empty),
                        Some(&t) if t != $ty => Err(DecodeError::UnknownType { msg_type: t }),
                        Some(_) if bytes.len() < $len => Err(DecodeError::Truncated {
                            msg_type: $ty,
                            len: bytes.len(),
                            needed: $len,
                        }),
                        Some(_) => Ok(Self(bytes)),
                    }
                }

                /// The message's bytes (all of them, beyond the layout too).
                #[inline]
                pub fn as_bytes(&self) -> &'a [u8] {
                    self.0
                }

                /// Timestamp, ns since the Unix epoch (offset 2, 8 bytes).
                #[inline]
                pub fn timestamp(&self) -> i64 {
                    i64::read(self.0, 2)
                }

                $(
                    $(#[$fdoc])*
                    #[inline]
                    pub fn $field(&self) -> $fty {
                        <$fty>::read(self.0, $off)
                    }
                )*
            }

            impl fmt::Debug for $name<'_> {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.debug_struct(stringify!($name))
                        .field("timestamp", &self.timestamp())
                        $( .field(stringify!($field), &self.$field()) )*
                        .finish()
                }
            }
        )*
    };
}

views! {
    /// `S` System Event (all feeds), 10 bytes.
    SystemEvent = b'S', 10 {
        /// System Event (offset 1): `O` start of messages, `S` start of system hours, `R`
        /// start of regular market hours, `M` end of regular market hours, `E` end of system
        /// hours, `C` end of messages.
        system_event: u8 = 1,
    }

    /// `D` Security Directory (all feeds), 31 bytes.
    SecurityDirectory = b'D', 31 {
        /// Flags (offset 1): 0x80 test security, 0x40 when issued, 0x20 ETP.
        flags: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Round Lot Size (offset 18, 4 bytes).
        round_lot_size: u32 = 18,
        /// Adjusted POC Price (offset 22, 8 bytes): the adjusted previous official closing
        /// price, Price.
        adjusted_poc_price: i64 = 22,
        /// LULD Tier (offset 30): 0 not applicable, 1 tier 1, 2 tier 2.
        luld_tier: u8 = 30,
    }

    /// `H` Trading Status (all feeds), 22 bytes.
    TradingStatus = b'H', 22 {
        /// Trading Status (offset 1): `H` halted, `O` halt released into an order acceptance
        /// period, `P` paused with an order acceptance period, `T` trading on IEX.
        trading_status: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Reason (offset 18, 4 bytes, space-padded): halt or pause reason code.
        reason: [u8; 4] = 18,
    }

    /// `I` Retail Liquidity Indicator (TOPS 1.6, DEEP+), 18 bytes.
    RetailLiquidityIndicator = b'I', 18 {
        /// Retail Liquidity Indicator (offset 1): space none, `A` buy interest, `B` sell
        /// interest, `C` both.
        retail_liquidity_indicator: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
    }

    /// `O` Operational Halt Status (all feeds), 18 bytes.
    OperationalHaltStatus = b'O', 18 {
        /// Operational Halt Status (offset 1): `O` IEX operational halt, `N` not halted.
        operational_halt_status: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
    }

    /// `P` Short Sale Price Test Status (all feeds), 19 bytes.
    ShortSalePriceTestStatus = b'P', 19 {
        /// Short Sale Price Test Status (offset 1): 0 not in effect, 1 in effect.
        short_sale_price_test_status: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Detail (offset 18): space none, `A` activated, `C` continued, `D` deactivated, `N`
        /// not available.
        detail: u8 = 18,
    }

    /// `E` Security Event (DEEP, DEEP+), 18 bytes.
    SecurityEvent = b'E', 18 {
        /// Security Event (offset 1): `O` opening process complete, `C` closing process
        /// complete.
        security_event: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
    }

    /// `Q` Quote Update (TOPS), 42 bytes: IEX's best bid and offer.
    QuoteUpdate = b'Q', 42 {
        /// Flags (offset 1): 0x80 symbol halted/paused/not available, 0x40 pre/post-market
        /// session.
        flags: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Bid Size (offset 18, 4 bytes).
        bid_size: u32 = 18,
        /// Bid Price (offset 22, 8 bytes), Price.
        bid_price: i64 = 22,
        /// Ask Price (offset 30, 8 bytes), Price.
        ask_price: i64 = 30,
        /// Ask Size (offset 38, 4 bytes).
        ask_size: u32 = 38,
    }

    /// `8` Price Level Update on the buy side (DEEP), 30 bytes.
    PriceLevelUpdateBuy = b'8', 30 {
        /// Event Flags (offset 1): 0x01 event processing complete (the book is consistent
        /// after this message), 0 more updates of the same event follow.
        event_flags: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Size (offset 18, 4 bytes): aggregate displayed shares at the level, 0 = level gone.
        size: u32 = 18,
        /// Price (offset 22, 8 bytes), Price.
        price: i64 = 22,
    }

    /// `5` Price Level Update on the sell side (DEEP), 30 bytes.
    PriceLevelUpdateSell = b'5', 30 {
        /// Event Flags (offset 1): 0x01 event processing complete.
        event_flags: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Size (offset 18, 4 bytes): aggregate displayed shares at the level, 0 = level gone.
        size: u32 = 18,
        /// Price (offset 22, 8 bytes), Price.
        price: i64 = 22,
    }

    /// `T` Trade Report (all feeds), 38 bytes.
    TradeReport = b'T', 38 {
        /// Sale Condition Flags (offset 1): 0x80 intermarket sweep, 0x40 extended hours,
        /// 0x20 odd lot, 0x10 trade through exempt, 0x08 single-price cross.
        sale_condition_flags: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Size (offset 18, 4 bytes).
        size: u32 = 18,
        /// Price (offset 22, 8 bytes), Price.
        price: i64 = 22,
        /// Trade ID (offset 30, 8 bytes).
        trade_id: u64 = 30,
    }

    /// `X` Official Price (all feeds), 26 bytes.
    OfficialPrice = b'X', 26 {
        /// Price Type (offset 1): `Q` official opening price, `M` official closing price.
        price_type: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Official Price (offset 18, 8 bytes), Price.
        official_price: i64 = 18,
    }

    /// `B` Trade Break (all feeds), 38 bytes: the Trade Report of the same Trade ID is broken.
    TradeBreak = b'B', 38 {
        /// Sale Condition Flags (offset 1), as in the Trade Report.
        sale_condition_flags: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Size (offset 18, 4 bytes).
        size: u32 = 18,
        /// Price (offset 22, 8 bytes), Price.
        price: i64 = 22,
        /// Trade ID (offset 30, 8 bytes).
        trade_id: u64 = 30,
    }

    /// `A` Auction Information (all feeds), 80 bytes.
    AuctionInformation = b'A', 80 {
        /// Auction Type (offset 1): `O` opening, `C` closing, `I` IPO, `H` halt, `V`
        /// volatility.
        auction_type: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Paired Shares (offset 18, 4 bytes).
        paired_shares: u32 = 18,
        /// Reference Price (offset 22, 8 bytes), Price.
        reference_price: i64 = 22,
        /// Indicative Clearing Price (offset 30, 8 bytes), Price.
        indicative_clearing_price: i64 = 30,
        /// Imbalance Shares (offset 38, 4 bytes).
        imbalance_shares: u32 = 38,
        /// Imbalance Side (offset 42): `B` buy, `S` sell, `N` none.
        imbalance_side: u8 = 42,
        /// Extension Number (offset 43): extensions of the auction so far.
        extension_number: u8 = 43,
        /// Scheduled Auction Time (offset 44, 4 bytes), Event Time: seconds since the epoch.
        scheduled_auction_time: u32 = 44,
        /// Auction Book Clearing Price (offset 48, 8 bytes), Price.
        auction_book_clearing_price: i64 = 48,
        /// Collar Reference Price (offset 56, 8 bytes), Price.
        collar_reference_price: i64 = 56,
        /// Lower Auction Collar (offset 64, 8 bytes), Price.
        lower_auction_collar: i64 = 64,
        /// Upper Auction Collar (offset 72, 8 bytes), Price.
        upper_auction_collar: i64 = 72,
    }

    /// `a` Add Order (DEEP+), 38 bytes.
    AddOrder = b'a', 38 {
        /// Side (offset 1): `8` buy, `5` sell.
        side: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Order ID (offset 18, 8 bytes).
        order_id: u64 = 18,
        /// Size (offset 26, 4 bytes).
        size: u32 = 26,
        /// Price (offset 30, 8 bytes), Price.
        price: i64 = 30,
    }

    /// `M` Order Modify (DEEP+), 38 bytes: the order's new size and price.
    OrderModify = b'M', 38 {
        /// Modify Flags (offset 1): 0x01 the order keeps its priority, 0 it loses it.
        modify_flags: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Order ID (offset 18, 8 bytes).
        order_id: u64 = 18,
        /// Size (offset 26, 4 bytes): the new displayed size.
        size: u32 = 26,
        /// Price (offset 30, 8 bytes), Price: the new price.
        price: i64 = 30,
    }

    /// `R` Order Delete (DEEP+), 26 bytes.
    OrderDelete = b'R', 26 {
        /// Reserved (offset 1), as sent.
        reserved: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Order ID (offset 18, 8 bytes).
        order_id: u64 = 18,
    }

    /// `L` Order Executed (DEEP+), 46 bytes: an execution against a displayed order.
    OrderExecuted = b'L', 46 {
        /// Sale Condition Flags (offset 1), as in the Trade Report.
        sale_condition_flags: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
        /// Order ID (offset 18, 8 bytes).
        order_id: u64 = 18,
        /// Size (offset 26, 4 bytes): shares executed.
        size: u32 = 26,
        /// Price (offset 30, 8 bytes), Price.
        price: i64 = 30,
        /// Trade ID (offset 38, 8 bytes).
        trade_id: u64 = 38,
    }

    /// `C` Clear Book (DEEP+), 18 bytes: every order of the symbol is gone.
    ClearBook = b'C', 18 {
        /// Reserved (offset 1), as sent.
        reserved: u8 = 1,
        /// Symbol (offset 10, 8 bytes).
        symbol: [u8; 8] = 10,
    }
}

impl PriceLevelUpdateBuy<'_> {
    /// Whether the event's processing is complete (Event Flags 0x01): the book may be shown.
    #[inline]
    pub fn event_processing_complete(&self) -> bool {
        self.event_flags() & EVENT_PROCESSING_COMPLETE != 0
    }
}

impl PriceLevelUpdateSell<'_> {
    /// Whether the event's processing is complete (Event Flags 0x01): the book may be shown.
    #[inline]
    pub fn event_processing_complete(&self) -> bool {
        self.event_flags() & EVENT_PROCESSING_COMPLETE != 0
    }
}

/// Event Flags bit of a price level update: the book is consistent after it.
pub const EVENT_PROCESSING_COMPLETE: u8 = 0x01;

/// One decoded IEX message of any feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Message<'a> {
    SystemEvent(SystemEvent<'a>),
    SecurityDirectory(SecurityDirectory<'a>),
    TradingStatus(TradingStatus<'a>),
    RetailLiquidityIndicator(RetailLiquidityIndicator<'a>),
    OperationalHaltStatus(OperationalHaltStatus<'a>),
    ShortSalePriceTestStatus(ShortSalePriceTestStatus<'a>),
    SecurityEvent(SecurityEvent<'a>),
    QuoteUpdate(QuoteUpdate<'a>),
    PriceLevelUpdateBuy(PriceLevelUpdateBuy<'a>),
    PriceLevelUpdateSell(PriceLevelUpdateSell<'a>),
    TradeReport(TradeReport<'a>),
    OfficialPrice(OfficialPrice<'a>),
    TradeBreak(TradeBreak<'a>),
    AuctionInformation(AuctionInformation<'a>),
    AddOrder(AddOrder<'a>),
    OrderModify(OrderModify<'a>),
    OrderDelete(OrderDelete<'a>),
    OrderExecuted(OrderExecuted<'a>),
    ClearBook(ClearBook<'a>),
}

macro_rules! each {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            Message::SystemEvent($m) => $e,
            Message::SecurityDirectory($m) => $e,
            Message::TradingStatus($m) => $e,
            Message::RetailLiquidityIndicator($m) => $e,
            Message::OperationalHaltStatus($m) => $e,
            Message::ShortSalePriceTestStatus($m) => $e,
            Message::SecurityEvent($m) => $e,
            Message::QuoteUpdate($m) => $e,
            Message::PriceLevelUpdateBuy($m) => $e,
            Message::PriceLevelUpdateSell($m) => $e,
            Message::TradeReport($m) => $e,
            Message::OfficialPrice($m) => $e,
            Message::TradeBreak($m) => $e,
            Message::AuctionInformation($m) => $e,
            Message::AddOrder($m) => $e,
            Message::OrderModify($m) => $e,
            Message::OrderDelete($m) => $e,
            Message::OrderExecuted($m) => $e,
            Message::ClearBook($m) => $e,
        }
    };
}

impl<'a> Message<'a> {
    /// The type byte.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.as_bytes()[0]
    }

    /// The message's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        each!(self, m => m.as_bytes())
    }

    /// Timestamp, ns since the Unix epoch.
    #[inline]
    pub fn timestamp(&self) -> i64 {
        each!(self, m => m.timestamp())
    }

    /// The symbol the message is about; `None` for the System Event (market-wide).
    #[inline]
    pub fn symbol(&self) -> Option<[u8; 8]> {
        match self {
            Message::SystemEvent(_) => None,
            // Every other layout holds Symbol at offset 10.
            _ => Some(<[u8; 8]>::read(self.as_bytes(), 10)),
        }
    }
}

/// Decodes one message of any IEX feed. Never panics.
#[inline]
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    let t = *bytes.first().ok_or(DecodeError::Empty)?;
    Ok(match t {
        b'S' => Message::SystemEvent(SystemEvent::new(bytes)?),
        b'D' => Message::SecurityDirectory(SecurityDirectory::new(bytes)?),
        b'H' => Message::TradingStatus(TradingStatus::new(bytes)?),
        b'I' => Message::RetailLiquidityIndicator(RetailLiquidityIndicator::new(bytes)?),
        b'O' => Message::OperationalHaltStatus(OperationalHaltStatus::new(bytes)?),
        b'P' => Message::ShortSalePriceTestStatus(ShortSalePriceTestStatus::new(bytes)?),
        b'E' => Message::SecurityEvent(SecurityEvent::new(bytes)?),
        b'Q' => Message::QuoteUpdate(QuoteUpdate::new(bytes)?),
        b'8' => Message::PriceLevelUpdateBuy(PriceLevelUpdateBuy::new(bytes)?),
        b'5' => Message::PriceLevelUpdateSell(PriceLevelUpdateSell::new(bytes)?),
        b'T' => Message::TradeReport(TradeReport::new(bytes)?),
        b'X' => Message::OfficialPrice(OfficialPrice::new(bytes)?),
        b'B' => Message::TradeBreak(TradeBreak::new(bytes)?),
        b'A' => Message::AuctionInformation(AuctionInformation::new(bytes)?),
        b'a' => Message::AddOrder(AddOrder::new(bytes)?),
        b'M' => Message::OrderModify(OrderModify::new(bytes)?),
        b'R' => Message::OrderDelete(OrderDelete::new(bytes)?),
        b'L' => Message::OrderExecuted(OrderExecuted::new(bytes)?),
        b'C' => Message::ClearBook(ClearBook::new(bytes)?),
        _ => return Err(DecodeError::UnknownType { msg_type: t }),
    })
}

/// Whether feed `protocol` sends messages of type `msg_type` (by its specification).
pub fn protocol_sends(protocol: Protocol, msg_type: u8) -> bool {
    const COMMON: &[u8] = b"SDHOPTXBA";
    match protocol {
        Protocol::TOPS | Protocol::TOPS_1_5 => {
            COMMON.contains(&msg_type) || b"QIE".contains(&msg_type)
        }
        Protocol::DEEP => COMMON.contains(&msg_type) || b"E85".contains(&msg_type),
        Protocol::DEEP_PLUS => COMMON.contains(&msg_type) || b"EIaMRLC".contains(&msg_type),
        _ => false,
    }
}

/// Decodes one message of feed `protocol`, refusing a type that feed does not send.
#[inline]
pub fn decode_for(protocol: Protocol, bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    let m = decode(bytes)?;
    if protocol_sends(protocol, m.msg_type()) {
        Ok(m)
    } else {
        Err(DecodeError::NotInProtocol {
            msg_type: m.msg_type(),
            protocol,
        })
    }
}

#[cfg(test)]
mod tests;
