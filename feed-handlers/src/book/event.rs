//! The book's input, plain `Copy` events independent of any wire encoding: [`OrderEvent`] for
//! venues that publish orders (L3), with its adapter from ITCH 5.0
//! ([`OrderEvent::from_itch`]), and [`LevelEvent`] for venues that publish price levels (L2).

use mdbus_codecs::nasdaq::itch::Message;

/// Side of the book an order rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Side {
    /// Buy orders (ITCH `B`).
    Bid = 0,
    /// Sell orders (ITCH `S`).
    Ask = 1,
}

impl Side {
    /// The side named by an ITCH buy/sell indicator (`B` or `S`); `None` for any other byte.
    #[inline]
    pub fn from_itch(indicator: u8) -> Option<Side> {
        match indicator {
            b'B' => Some(Side::Bid),
            b'S' => Some(Side::Ask),
            _ => None,
        }
    }

    /// The ITCH buy/sell indicator of this side.
    #[inline]
    pub fn to_itch(self) -> u8 {
        match self {
            Side::Bid => b'B',
            Side::Ask => b'S',
        }
    }
}

/// Why an input message could not become a well-formed book event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    /// An add order or a price level whose buy/sell indicator is neither buy nor sell (the
    /// byte found).
    BadSide(u8),
    /// A price level whose price is negative or above `u32::MAX` (1e-4 units).
    BadPrice(i64),
    /// An instrument id the books cannot key (above 65,535).
    BadInstrument(u32),
}

/// One price level as a venue that publishes levels (not orders) states it: "the aggregate
/// size at `price` on `side` of `locate` is now `shares`" (0 removes the level).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LevelEvent {
    /// Instrument.
    pub locate: u16,
    /// Side of the level.
    pub side: Side,
    /// Price (1e-4).
    pub price: u32,
    /// Aggregate displayed shares now at the level; 0 deletes it.
    pub shares: u64,
    /// Orders now at the level, 0 when the venue does not say.
    pub orders: u32,
}

/// A book event of either shape: an order (L3) or a price level (L2). An instrument's book
/// takes one shape only (see [`BookBuilder`](super::BookBuilder)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BookEvent {
    /// An order event.
    Order(OrderEvent),
    /// A price level event.
    Level(LevelEvent),
}

/// One order-level event for the book builder. Prices are ITCH `Price(4)` raw integers (units
/// of 1e-4); every event names the instrument by its stock locate.
///
/// This type is the seam between decoders and the builder: the ITCH adapter is
/// [`OrderEvent::from_itch`]; other sources (the normalized stream) convert into it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderEvent {
    /// A new displayed order (ITCH `A` and `F`).
    Add {
        /// Instrument.
        locate: u16,
        /// Day-unique order reference.
        order_ref: u64,
        /// Side the order rests on.
        side: Side,
        /// Display price (1e-4).
        price: u32,
        /// Displayed shares.
        shares: u32,
    },
    /// Part or all of an order executed at its display price (ITCH `E`).
    Execute {
        /// Instrument.
        locate: u16,
        /// The executed order.
        order_ref: u64,
        /// Shares executed.
        shares: u32,
    },
    /// Part or all of an order executed at another price (ITCH `C`).
    ExecuteWithPrice {
        /// Instrument.
        locate: u16,
        /// The executed order.
        order_ref: u64,
        /// Shares executed.
        shares: u32,
        /// Execution price (1e-4).
        price: u32,
        /// Whether the execution counts toward volume (ITCH printable `Y`).
        printable: bool,
    },
    /// Part of an order cancelled (ITCH `X`).
    Cancel {
        /// Instrument.
        locate: u16,
        /// The order.
        order_ref: u64,
        /// Shares removed from the order.
        shares: u32,
    },
    /// An order removed from the book (ITCH `D`).
    Delete {
        /// Instrument.
        locate: u16,
        /// The order.
        order_ref: u64,
    },
    /// An order replaced by a new one on the same side and instrument, under a new reference
    /// (ITCH `U`); the new order loses the old one's time priority.
    Replace {
        /// Instrument.
        locate: u16,
        /// The order replaced.
        old_ref: u64,
        /// Reference of the new order.
        new_ref: u64,
        /// Displayed shares of the new order.
        shares: u32,
        /// Display price of the new order (1e-4).
        price: u32,
    },
    /// An execution against a non-displayed order (ITCH `P`): a print, no book change.
    Trade {
        /// Instrument.
        locate: u16,
        /// Shares executed.
        shares: u32,
        /// Execution price (1e-4).
        price: u32,
    },
    /// A book message that could not be understood; the builder counts it and changes
    /// nothing, so that nothing is dropped silently.
    Invalid {
        /// Instrument.
        locate: u16,
        /// Order reference the message named.
        order_ref: u64,
        /// What was wrong.
        reason: InvalidReason,
    },
}

impl OrderEvent {
    /// The book event carried by an ITCH 5.0 message, or `None` for messages that neither
    /// change a book nor print (system, directory, trading status, cross trades, NOII, ...).
    ///
    /// `A`/`F` -> [`Add`](Self::Add), `E` -> [`Execute`](Self::Execute), `C` ->
    /// [`ExecuteWithPrice`](Self::ExecuteWithPrice), `X` -> [`Cancel`](Self::Cancel), `D` ->
    /// [`Delete`](Self::Delete), `U` -> [`Replace`](Self::Replace), `P` ->
    /// [`Trade`](Self::Trade). An add with a buy/sell indicator other than `B`/`S` becomes
    /// [`Invalid`](Self::Invalid).
    #[inline(always)]
    pub fn from_itch(msg: &Message<'_>) -> Option<OrderEvent> {
        let ev = match msg {
            Message::AddOrder(m) => add(
                m.stock_locate(),
                m.order_reference_number(),
                m.buy_sell_indicator(),
                m.price().raw(),
                m.shares(),
            ),
            Message::AddOrderMpid(m) => add(
                m.stock_locate(),
                m.order_reference_number(),
                m.buy_sell_indicator(),
                m.price().raw(),
                m.shares(),
            ),
            Message::OrderExecuted(m) => OrderEvent::Execute {
                locate: m.stock_locate(),
                order_ref: m.order_reference_number(),
                shares: m.executed_shares(),
            },
            Message::OrderExecutedWithPrice(m) => OrderEvent::ExecuteWithPrice {
                locate: m.stock_locate(),
                order_ref: m.order_reference_number(),
                shares: m.executed_shares(),
                price: m.execution_price().raw(),
                printable: m.printable() == b'Y',
            },
            Message::OrderCancel(m) => OrderEvent::Cancel {
                locate: m.stock_locate(),
                order_ref: m.order_reference_number(),
                shares: m.cancelled_shares(),
            },
            Message::OrderDelete(m) => OrderEvent::Delete {
                locate: m.stock_locate(),
                order_ref: m.order_reference_number(),
            },
            Message::OrderReplace(m) => OrderEvent::Replace {
                locate: m.stock_locate(),
                old_ref: m.original_order_reference_number(),
                new_ref: m.new_order_reference_number(),
                shares: m.shares(),
                price: m.price().raw(),
            },
            Message::Trade(m) => OrderEvent::Trade {
                locate: m.stock_locate(),
                shares: m.shares(),
                price: m.price().raw(),
            },
            _ => return None,
        };
        Some(ev)
    }

    /// The instrument (stock locate) the event is about.
    #[inline]
    pub fn locate(&self) -> u16 {
        match *self {
            OrderEvent::Add { locate, .. }
            | OrderEvent::Execute { locate, .. }
            | OrderEvent::ExecuteWithPrice { locate, .. }
            | OrderEvent::Cancel { locate, .. }
            | OrderEvent::Delete { locate, .. }
            | OrderEvent::Replace { locate, .. }
            | OrderEvent::Trade { locate, .. }
            | OrderEvent::Invalid { locate, .. } => locate,
        }
    }
}

#[inline]
fn add(locate: u16, order_ref: u64, indicator: u8, price: u32, shares: u32) -> OrderEvent {
    match Side::from_itch(indicator) {
        Some(side) => OrderEvent::Add {
            locate,
            order_ref,
            side,
            price,
            shares,
        },
        None => OrderEvent::Invalid {
            locate,
            order_ref,
            reason: InvalidReason::BadSide(indicator),
        },
    }
}
