//! Normalized envelopes -> book events -> a [`BookBuilder`]: the one path from the bus's events
//! to books, used by the book service, replay's `--book-summary` and the receiver's
//! `--book-summary`.
//!
//! Envelopes are read through [`ReadBody`], so one body serves an [`Envelope`]'s accessors and,
//! in place, a [`FrameView`](fb::FrameView) (the book service's fast path). Order messages
//! become [`OrderEvent`]s (L3), `PriceLevelUpdate`s become [`LevelEvent`]s (L2). Every book is
//! keyed through [`instrument_of`]. [`EnvelopeBooks`] holds a builder with the tallies a
//! summary prints: messages per source type, gaps, and records that failed verification.
//!
//! IEX's envelopes (`Iex*`) are read into an [`IexInput`] ([`iex_input_of_envelope`]) and
//! applied by [`EnvelopeBooks::apply_iex`]: DEEP price levels are staged with
//! [`BookBuilder::set_level`] and flushed only at the level whose Event Flags say "event
//! processing complete", so no book shows half an event; DEEP+ orders are L3 events for the
//! same builder ITCH feeds (a Clear Book deletes every order of its symbol); a TOPS quote is
//! the instrument's top of book as IEX states it; trade reports and DEEP+ order executions are
//! the prints. The IEX replay's books ([`IexBooks`](super::IexBooks)) read decoded messages into
//! the same [`IexInput`] and apply them here: one path.

use mdbus_bus::ENVELOPE_MSG_TYPE;
use mdbus_bus::schema::{self as fb, Envelope, HeaderFields, ReadBody};

use std::collections::BTreeMap;

use super::{
    BookBuilder, BookConfig, BookConfigError, BookEvent, BookSummary, IexBookEntry, IexSummary,
    InvalidReason, LevelEvent, OrderEvent, Outcome, Side, TypeCounts, UpdateSink,
};

/// The instrument an envelope is about, the key of its book: the envelope's instrument id in
/// its venue's directory. Envelopes written before the schema named venues (venue `Unknown`)
/// can only be Nasdaq ITCH: their stock locate is the id.
#[inline(always)]
pub fn instrument_of(header: &HeaderFields) -> u32 {
    if header.venue == fb::Venue::Unknown {
        u32::from(header.stock_locate)
    } else {
        header.instrument
    }
}

/// The builder's key for `instrument`; `None` for an id the builder cannot hold (above 65,535).
#[inline(always)]
pub(crate) fn book_key(instrument: u32) -> Option<u16> {
    u16::try_from(instrument).ok()
}

/// The header fields of an envelope, to stamp on events derived from it.
#[inline]
pub fn header_of(env: &Envelope<'_>) -> HeaderFields {
    ReadBody::header_fields(env)
}

/// The order event a normalized envelope carries (the twin of [`OrderEvent::from_itch`] for the
/// bus side), or `None` for events that neither change an order book nor print. Reads an
/// [`Envelope`] or, in place, its [`FrameView`](fb::FrameView).
#[inline(always)]
pub fn order_event_from_envelope<R: ReadBody>(msg: &R) -> Option<OrderEvent> {
    let (event, instrument) = (msg.event_type(), instrument_of(&msg.header_fields()));
    if event == fb::Event::Trade {
        read_trade(msg, instrument).map(|(ev, _)| ev)
    } else {
        read_order(msg, event, instrument).map(|(ev, _)| ev)
    }
}

/// The book event a normalized envelope carries: an order event (as
/// [`order_event_from_envelope`]) or a price level (`PriceLevelUpdate`); `None` for events
/// that neither change a book nor print. A level whose side or price the builder cannot hold
/// becomes an [`OrderEvent::Invalid`], counted by the builder.
#[inline(always)]
pub fn book_event_from_envelope<R: ReadBody>(msg: &R) -> Option<BookEvent> {
    let (event, instrument) = (msg.event_type(), instrument_of(&msg.header_fields()));
    match event {
        fb::Event::Trade => read_trade(msg, instrument).map(|(ev, _)| BookEvent::Order(ev)),
        fb::Event::PriceLevelUpdate => read_level(msg, instrument),
        _ => read_order(msg, event, instrument).map(|(ev, _)| BookEvent::Order(ev)),
    }
}

/// An event for an instrument id the builder cannot key.
#[cold]
fn bad_instrument(instrument: u32, order_ref: u64) -> OrderEvent {
    OrderEvent::Invalid {
        locate: 0,
        order_ref,
        reason: InvalidReason::BadInstrument(instrument),
    }
}

/// The book event of an order message (`A`, `F`, `E`, `C`, `X`, `D`, `U`) and the match
/// number of an `E` or `C` execution (0 otherwise), the one print field only the envelope
/// knows; `None` for any other event (`P` trades: [`read_trade`]). `event` and `instrument`
/// are the envelope's union tag and [`instrument_of`], already read by the caller.
///
/// Generic over where the bodies come from: a [`FrameView`](fb::FrameView) (in place, the
/// service's fast path) or the envelope's accessors.
#[inline(always)]
fn read_order<R: ReadBody>(
    msg: &R,
    event: fb::Event,
    instrument: u32,
) -> Option<(OrderEvent, u64)> {
    let Some(locate) = book_key(instrument) else {
        return is_order_event(event).then(|| (bad_instrument(instrument, 0), 0));
    };
    let none = 0;
    let add = |order_ref: u64, side: fb::Side, price: u32, shares: u32| match side {
        fb::Side::Buy => OrderEvent::Add {
            locate,
            order_ref,
            side: Side::Bid,
            price,
            shares,
        },
        fb::Side::Sell => OrderEvent::Add {
            locate,
            order_ref,
            side: Side::Ask,
            price,
            shares,
        },
        other => OrderEvent::Invalid {
            locate,
            order_ref,
            reason: InvalidReason::BadSide(other.0),
        },
    };
    let ev = match event {
        fb::Event::AddOrder => {
            let b: fb::AddOrderBody = msg.body()?;
            let ev = add(
                b.order_reference_number(),
                b.buy_sell_indicator(),
                b.price(),
                b.shares(),
            );
            (ev, none)
        }
        fb::Event::AddOrderMpid => {
            let b: fb::AddOrderMpidBody = msg.body()?;
            let ev = add(
                b.order_reference_number(),
                b.buy_sell_indicator(),
                b.price(),
                b.shares(),
            );
            (ev, none)
        }
        fb::Event::OrderExecuted => {
            let b: fb::OrderExecutedBody = msg.body()?;
            let ev = OrderEvent::Execute {
                locate,
                order_ref: b.order_reference_number(),
                shares: b.executed_shares(),
            };
            (ev, b.match_number())
        }
        fb::Event::OrderExecutedWithPrice => {
            let b: fb::OrderExecutedWithPriceBody = msg.body()?;
            let ev = OrderEvent::ExecuteWithPrice {
                locate,
                order_ref: b.order_reference_number(),
                shares: b.executed_shares(),
                price: b.execution_price(),
                printable: b.printable() == b'Y',
            };
            (ev, b.match_number())
        }
        fb::Event::OrderCancel => {
            let b: fb::OrderCancelBody = msg.body()?;
            let ev = OrderEvent::Cancel {
                locate,
                order_ref: b.order_reference_number(),
                shares: b.cancelled_shares(),
            };
            (ev, none)
        }
        fb::Event::OrderDelete => {
            let b: fb::OrderDeleteBody = msg.body()?;
            let ev = OrderEvent::Delete {
                locate,
                order_ref: b.order_reference_number(),
            };
            (ev, none)
        }
        fb::Event::OrderReplace => {
            let b: fb::OrderReplaceBody = msg.body()?;
            let ev = OrderEvent::Replace {
                locate,
                old_ref: b.original_order_reference_number(),
                new_ref: b.new_order_reference_number(),
                shares: b.shares(),
                price: b.price(),
            };
            (ev, none)
        }
        _ => return None,
    };
    Some(ev)
}

/// Whether [`read_order`] reads `event`.
fn is_order_event(event: fb::Event) -> bool {
    matches!(
        event,
        fb::Event::AddOrder
            | fb::Event::AddOrderMpid
            | fb::Event::OrderExecuted
            | fb::Event::OrderExecutedWithPrice
            | fb::Event::OrderCancel
            | fb::Event::OrderDelete
            | fb::Event::OrderReplace
    )
}

/// What the book service reads of every input message: its header, its kind and, for an
/// order message, its book event and match number ([`read_order`]).
pub(crate) type InputRead = (HeaderFields, fb::Event, Option<(OrderEvent, u64)>);

/// Reads one input message (see [`InputRead`]).
#[inline(always)]
pub(crate) fn read_input<R: ReadBody>(msg: &R) -> InputRead {
    let event = msg.event_type();
    let header = msg.header_fields();
    (
        header,
        event,
        read_order(msg, event, instrument_of(&header)),
    )
}

/// [`read_input`] through the accessors, for what the frame reader does not read (the rare
/// kinds, other encoders' layouts): out of line, so that the hot path is inlined once.
#[inline(never)]
pub(crate) fn read_input_generic(env: &Envelope<'_>) -> InputRead {
    read_input(env)
}

/// The book event of a `P` trade (a print on no displayed order) and its print, every field
/// of which the envelope carries.
#[inline]
pub(crate) fn read_trade<R: ReadBody>(
    msg: &R,
    instrument: u32,
) -> Option<(OrderEvent, fb::TradeFields)> {
    let b: fb::TradeBody = msg.body()?;
    let ev = match book_key(instrument) {
        Some(locate) => OrderEvent::Trade {
            locate,
            shares: b.shares(),
            price: b.price(),
        },
        None => bad_instrument(instrument, 0),
    };
    let print = fb::TradeFields {
        order_reference_number: b.order_reference_number(),
        buy_sell_indicator: b.buy_sell_indicator(),
        shares: b.shares(),
        stock: b.stock().0,
        price: b.price(),
        match_number: b.match_number(),
    };
    Some((ev, print))
}

/// The book event of a `PriceLevelUpdate`: a [`LevelEvent`] (a `Delete` action, or size 0,
/// removes the level), or an invalid event when the side, price or instrument cannot be held.
#[inline]
fn read_level<R: ReadBody>(msg: &R, instrument: u32) -> Option<BookEvent> {
    let b: fb::PriceLevelBody = msg.body()?;
    let Some(locate) = book_key(instrument) else {
        return Some(BookEvent::Order(bad_instrument(instrument, 0)));
    };
    let invalid = |reason| {
        Some(BookEvent::Order(OrderEvent::Invalid {
            locate,
            order_ref: 0,
            reason,
        }))
    };
    let side = match b.side() {
        fb::Side::Buy => Side::Bid,
        fb::Side::Sell => Side::Ask,
        other => return invalid(InvalidReason::BadSide(other.0)),
    };
    let Ok(price) = u32::try_from(b.price()) else {
        return invalid(InvalidReason::BadPrice(b.price()));
    };
    let deleted = b.action() == fb::BookAction::Delete;
    Some(BookEvent::Level(LevelEvent {
        locate,
        side,
        price,
        shares: if deleted { 0 } else { b.size() },
        orders: if deleted { 0 } else { b.order_count() },
    }))
}

/// A print of an IEX message: a Trade Report, or a DEEP+ Order Executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IexPrint {
    /// Shares traded.
    pub shares: u32,
    /// Price, Price(4).
    pub price: i64,
    /// IEX's trade id.
    pub trade_id: u64,
}

/// A TOPS quote: (price, size) per side, `None` for an empty side (price and size 0).
pub type IexQuote = (Option<(i64, u64)>, Option<(i64, u64)>);

/// What one IEX message (decoded, or normalized into its envelope) does to books. The
/// builder events name the book key (`locate`) the caller gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IexInput {
    /// A DEEP price level (`8`, `5`), staged; `complete` when the Event Flags say "event
    /// processing complete" (flush the event's levels then).
    Level {
        /// The level (size 0 removes it).
        level: LevelEvent,
        /// The event is complete.
        complete: bool,
    },
    /// A DEEP+ order event (`a`, `M`, `R`), or an invalid event (a price, side or instrument
    /// the builder cannot hold).
    Order(OrderEvent),
    /// A DEEP+ Order Executed (`L`): the execution of a displayed order, and its print.
    Executed {
        /// The execution ([`OrderEvent::Execute`]).
        ev: OrderEvent,
        /// The print.
        print: IexPrint,
    },
    /// A Trade Report (`T`): a print, on no order the book shows ([`OrderEvent::Trade`], or
    /// invalid when its price cannot be held).
    Trade {
        /// The builder's print event.
        ev: OrderEvent,
        /// The print.
        print: IexPrint,
    },
    /// A TOPS Quote Update (`Q`): the instrument's top of book as IEX states it.
    Quote(IexQuote),
    /// A DEEP+ Clear Book (`C`): every order of the instrument is gone.
    ClearBook,
}

impl IexInput {
    /// A DEEP price level on `side`; an invalid event when the price cannot be held.
    #[inline]
    pub fn level(locate: u16, side: Side, price: i64, size: u32, complete: bool) -> IexInput {
        match u32::try_from(price) {
            Ok(price) => IexInput::Level {
                level: LevelEvent {
                    locate,
                    side,
                    price,
                    shares: u64::from(size),
                    orders: 0,
                },
                complete,
            },
            Err(_) => IexInput::invalid(locate, 0, InvalidReason::BadPrice(price)),
        }
    }

    /// A DEEP+ Add Order of `side` (`None`: the side byte `byte` is neither buy nor sell).
    #[inline]
    pub fn add(
        locate: u16,
        side: Option<Side>,
        byte: u8,
        order_ref: u64,
        size: u32,
        price: i64,
    ) -> IexInput {
        let Some(side) = side else {
            return IexInput::invalid(locate, order_ref, InvalidReason::BadSide(byte));
        };
        match u32::try_from(price) {
            Ok(price) => IexInput::Order(OrderEvent::Add {
                locate,
                order_ref,
                side,
                price,
                shares: size,
            }),
            Err(_) => IexInput::invalid(locate, order_ref, InvalidReason::BadPrice(price)),
        }
    }

    /// A DEEP+ Order Modify: the order keeps its id and side, its size and price are replaced.
    #[inline]
    pub fn modify(locate: u16, order_ref: u64, size: u32, price: i64) -> IexInput {
        match u32::try_from(price) {
            Ok(price) => IexInput::Order(OrderEvent::Replace {
                locate,
                old_ref: order_ref,
                new_ref: order_ref,
                shares: size,
                price,
            }),
            Err(_) => IexInput::invalid(locate, order_ref, InvalidReason::BadPrice(price)),
        }
    }

    /// A DEEP+ Order Executed.
    #[inline]
    pub fn executed(locate: u16, order_ref: u64, print: IexPrint) -> IexInput {
        IexInput::Executed {
            ev: OrderEvent::Execute {
                locate,
                order_ref,
                shares: print.shares,
            },
            print,
        }
    }

    /// A Trade Report.
    #[inline]
    pub fn trade(locate: u16, print: IexPrint) -> IexInput {
        let ev = match u32::try_from(print.price) {
            Ok(price) => OrderEvent::Trade {
                locate,
                shares: print.shares,
                price,
            },
            Err(_) => OrderEvent::Invalid {
                locate,
                order_ref: 0,
                reason: InvalidReason::BadPrice(print.price),
            },
        };
        IexInput::Trade { ev, print }
    }

    /// A TOPS quote: a side with price and size 0 is empty.
    #[inline]
    pub fn quote(bid_price: i64, bid_size: u32, ask_price: i64, ask_size: u32) -> IexInput {
        let side =
            |price: i64, size: u32| (price != 0 || size != 0).then_some((price, u64::from(size)));
        IexInput::Quote((side(bid_price, bid_size), side(ask_price, ask_size)))
    }

    #[cold]
    fn invalid(locate: u16, order_ref: u64, reason: InvalidReason) -> IexInput {
        IexInput::Order(OrderEvent::Invalid {
            locate,
            order_ref,
            reason,
        })
    }

    /// The print, for a trade report or an order executed.
    pub fn print(&self) -> Option<IexPrint> {
        match self {
            IexInput::Executed { print, .. } | IexInput::Trade { print, .. } => Some(*print),
            _ => None,
        }
    }
}

/// The symbol an IEX envelope names (every IEX message but the System Event names one).
pub fn iex_symbol(env: &Envelope<'_>) -> Option<[u8; 8]> {
    use fb::Event as E;
    let s = match env.event_type() {
        E::IexSecurityDirectory => env.event_as_iex_security_directory()?.symbol(),
        E::IexTradingStatus => env.event_as_iex_trading_status()?.symbol(),
        E::IexRetailLiquidityIndicator => env.event_as_iex_retail_liquidity_indicator()?.symbol(),
        E::IexOperationalHaltStatus => env.event_as_iex_operational_halt_status()?.symbol(),
        E::IexShortSalePriceTestStatus => env.event_as_iex_short_sale_price_test_status()?.symbol(),
        E::IexSecurityEvent => env.event_as_iex_security_event()?.symbol(),
        E::IexQuoteUpdate => env.event_as_iex_quote_update()?.symbol(),
        E::IexPriceLevelUpdateBuy => env.event_as_iex_price_level_update_buy()?.symbol(),
        E::IexPriceLevelUpdateSell => env.event_as_iex_price_level_update_sell()?.symbol(),
        E::IexTradeReport => env.event_as_iex_trade_report()?.symbol(),
        E::IexTradeBreak => env.event_as_iex_trade_break()?.symbol(),
        E::IexOfficialPrice => env.event_as_iex_official_price()?.symbol(),
        E::IexAuctionInformation => env.event_as_iex_auction_information()?.symbol(),
        E::IexAddOrder => env.event_as_iex_add_order()?.symbol(),
        E::IexOrderModify => env.event_as_iex_order_modify()?.symbol(),
        E::IexOrderDelete => env.event_as_iex_order_delete()?.symbol(),
        E::IexOrderExecuted => env.event_as_iex_order_executed()?.symbol(),
        E::IexClearBook => env.event_as_iex_clear_book()?.symbol(),
        _ => return None,
    };
    Some(s.0)
}

/// Whether `event` is one of IEX's message kinds (`IexSystemEvent` ... `IexClearBook`).
#[inline]
pub fn is_iex_event(event: fb::Event) -> bool {
    (fb::Event::IexSystemEvent.0..=fb::Event::IexClearBook.0).contains(&event.0)
}

/// What an IEX envelope does to books ([`IexInput`]), keyed by its [`instrument_of`]; `None`
/// for messages that change no book and print nothing, and for market-wide ones
/// (instrument 0). An instrument the builder cannot key is an invalid event, to be counted.
pub fn iex_input_of_envelope(env: &Envelope<'_>) -> Option<IexInput> {
    use fb::Event as E;
    let event = env.event_type();
    let instrument = instrument_of(&ReadBody::header_fields(env));
    if instrument == 0 || !is_iex_event(event) {
        return None;
    }
    let Some(locate) = book_key(instrument) else {
        let touches = matches!(
            event,
            E::IexPriceLevelUpdateBuy
                | E::IexPriceLevelUpdateSell
                | E::IexAddOrder
                | E::IexOrderModify
                | E::IexOrderDelete
                | E::IexOrderExecuted
                | E::IexTradeReport
                | E::IexQuoteUpdate
                | E::IexClearBook
        );
        return touches.then(|| IexInput::Order(bad_instrument(instrument, 0)));
    };
    let input = match event {
        E::IexPriceLevelUpdateBuy => {
            let m = env.event_as_iex_price_level_update_buy()?;
            IexInput::level(
                locate,
                Side::Bid,
                m.price(),
                m.size(),
                m.event_flags() & 1 != 0,
            )
        }
        E::IexPriceLevelUpdateSell => {
            let m = env.event_as_iex_price_level_update_sell()?;
            IexInput::level(
                locate,
                Side::Ask,
                m.price(),
                m.size(),
                m.event_flags() & 1 != 0,
            )
        }
        E::IexAddOrder => {
            let m = env.event_as_iex_add_order()?;
            let side = match m.side() {
                fb::Side::Buy => Some(Side::Bid),
                fb::Side::Sell => Some(Side::Ask),
                _ => None,
            };
            IexInput::add(locate, side, m.side().0, m.order_id(), m.size(), m.price())
        }
        E::IexOrderModify => {
            let m = env.event_as_iex_order_modify()?;
            IexInput::modify(locate, m.order_id(), m.size(), m.price())
        }
        E::IexOrderDelete => IexInput::Order(OrderEvent::Delete {
            locate,
            order_ref: env.event_as_iex_order_delete()?.order_id(),
        }),
        E::IexOrderExecuted => {
            let m = env.event_as_iex_order_executed()?;
            let print = IexPrint {
                shares: m.size(),
                price: m.price(),
                trade_id: m.trade_id(),
            };
            IexInput::executed(locate, m.order_id(), print)
        }
        E::IexTradeReport => {
            let m = env.event_as_iex_trade_report()?;
            let print = IexPrint {
                shares: m.size(),
                price: m.price(),
                trade_id: m.trade_id(),
            };
            IexInput::trade(locate, print)
        }
        E::IexQuoteUpdate => {
            let m = env.event_as_iex_quote_update()?;
            IexInput::quote(m.bid_price(), m.bid_size(), m.ask_price(), m.ask_size())
        }
        E::IexClearBook => IexInput::ClearBook,
        _ => return None,
    };
    Some(input)
}

/// What the IEX books keep per instrument beside the builder's book: the last TOPS quote and
/// the prints.
#[derive(Clone, Copy, Debug, Default)]
struct IexTally {
    quote: Option<IexQuote>,
    traded_shares: u64,
    prints: u64,
}

/// What a gap notice does to [`EnvelopeBooks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapPolicy {
    /// Count the unrecoverable notices (messages were lost) and keep the books: the book
    /// service and a replay report the loss and carry on.
    CountLost,
    /// Count every notice, and start the books afresh after an unrecoverable one, as a
    /// strategy would: the receiver's summary.
    CountAllResetOnLoss,
}

/// Books built from normalized envelopes, with the tallies a `--book-summary` prints: messages
/// per source type, gaps, and records that failed verification.
///
/// [`observe`](Self::observe) applies each envelope's book event without publishing; the book
/// service, which publishes, counts with [`count`](Self::count) and applies through
/// [`builder_mut`](Self::builder_mut) with its own [`UpdateSink`](super::UpdateSink).
#[derive(Debug)]
pub struct EnvelopeBooks {
    builder: BookBuilder,
    counts: TypeCounts,
    messages: u64,
    gaps: u64,
    invalid: u64,
    policy: GapPolicy,
    /// IEX: quotes and prints by instrument id; grows when an id is first seen.
    iex: Vec<IexTally>,
    /// IEX: the symbol of each instrument id its envelopes named; grows alike.
    iex_symbols: Vec<[u8; 8]>,
    /// IEX envelopes were observed: the summary takes IEX's form.
    iex_seen: bool,
}

impl EnvelopeBooks {
    /// Forgets every book and tally, as for a new session (the storage stays).
    pub fn reset(&mut self) {
        self.builder.reset();
        self.counts = TypeCounts::new();
        (self.messages, self.gaps, self.invalid) = (0, 0, 0);
        self.iex.clear();
        self.iex_symbols.clear();
        self.iex_seen = false;
    }

    /// Books of `config`, handling gap notices by `policy`.
    pub fn new(config: BookConfig, policy: GapPolicy) -> Result<Self, BookConfigError> {
        Ok(Self {
            builder: BookBuilder::new(config)?,
            counts: TypeCounts::new(),
            messages: 0,
            gaps: 0,
            invalid: 0,
            policy,
            iex: Vec::new(),
            iex_symbols: Vec::new(),
            iex_seen: false,
        })
    }

    /// The books.
    pub fn builder(&self) -> &BookBuilder {
        &self.builder
    }

    /// The books, to apply events with an update sink of one's own.
    pub fn builder_mut(&mut self) -> &mut BookBuilder {
        &mut self.builder
    }

    /// Source messages seen per type letter.
    pub fn counts(&self) -> &TypeCounts {
        &self.counts
    }

    /// Source messages seen.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Gaps counted (see [`GapPolicy`]).
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// Records that failed verification ([`observe_record`](Self::observe_record)).
    pub fn invalid(&self) -> u64 {
        self.invalid
    }

    /// Counts an envelope of kind `event` from `venue` if it carries a source message (keyed
    /// by the venue's type byte); returns whether it did.
    #[inline(always)]
    pub fn count(&mut self, venue: fb::Venue, event: fb::Event) -> bool {
        match crate::venue::source_type_of(venue, event) {
            Some(t) => {
                self.messages += 1;
                self.counts.record(t);
                true
            }
            None => false,
        }
    }

    /// Counts one source message of type `msg_type` (its venue's type byte) read before it
    /// was normalized, whose book event the caller applies itself (the book service fed
    /// decoded messages).
    #[inline(always)]
    pub fn count_source(&mut self, msg_type: u8) {
        self.messages += 1;
        self.counts.record(msg_type);
    }

    /// Counts one source message of type `msg_type` read before it was normalized (a replay
    /// of a capture) and applies its book event, if any.
    #[inline]
    pub fn observe_source(&mut self, msg_type: u8, ev: Option<BookEvent>) {
        self.messages += 1;
        self.counts.record(msg_type);
        if let Some(ev) = ev {
            self.apply(&ev);
        }
    }

    /// Observes one bus record: an envelope is verified (one that fails is counted in
    /// [`invalid`](Self::invalid)) and [`observe`](Self::observe)d; other record types are
    /// ignored. Returns the kind of the envelope observed, so a caller that also watches for
    /// some kind (the end of a session) does not verify the record a second time.
    pub fn observe_record(&mut self, msg_type: u32, payload: &[u8]) -> Option<fb::Event> {
        if msg_type != ENVELOPE_MSG_TYPE {
            return None;
        }
        match fb::root_as_envelope(payload) {
            Ok(env) => {
                self.observe(&env);
                Some(env.event_type())
            }
            Err(_) => {
                self.invalid += 1;
                None
            }
        }
    }

    /// Observes one envelope: counts a source message and applies its book event; a gap
    /// notice is handled by the [`GapPolicy`].
    pub fn observe(&mut self, env: &Envelope<'_>) {
        let event = env.event_type();
        if event == fb::Event::GapNotice {
            if let Some(g) = env.event_as_gap_notice() {
                self.gap(g.recoverable());
            }
            return;
        }
        let source = self.count(env.venue(), event);
        if is_iex_event(event) {
            self.observe_iex(env);
        } else if (source || event == fb::Event::PriceLevelUpdate)
            && let Some(ev) = book_event_from_envelope(env)
        {
            self.apply(&ev);
        }
    }

    /// Applies an IEX envelope (counted already), learning its instrument's symbol.
    #[inline(never)]
    fn observe_iex(&mut self, env: &Envelope<'_>) {
        self.iex_seen = true;
        let instrument = instrument_of(&ReadBody::header_fields(env));
        if let Some(symbol) = iex_symbol(env) {
            self.name_iex(instrument, symbol);
        }
        if let Some(input) = iex_input_of_envelope(env) {
            self.apply_iex(instrument, &input, &mut |_| {});
        }
    }

    /// Records that IEX instrument `instrument` is `symbol` (for the IEX summary's names).
    pub fn name_iex(&mut self, instrument: u32, symbol: [u8; 8]) {
        let Some(i) = book_key(instrument).map(usize::from) else {
            return;
        };
        if self.iex_symbols.len() <= i {
            self.iex_symbols.resize(i + 1, *b"        ");
        }
        self.iex_symbols[i] = symbol;
    }

    /// Applies what an IEX message does to the books of `instrument` (its [`IexInput`]),
    /// sending the builder's updates to `out`: a level is staged and the event's levels
    /// flushed at the complete one; orders, executions and prints go to the builder; a clear
    /// book deletes the instrument's orders; a quote and the prints are kept for the summary.
    /// Returns what the builder made of the book event (`Applied` for a quote).
    pub fn apply_iex(
        &mut self,
        instrument: u32,
        input: &IexInput,
        out: &mut impl UpdateSink,
    ) -> Outcome {
        match *input {
            IexInput::Level { level, complete } => {
                let o = self.builder.set_level(&level, out);
                if complete {
                    self.builder.flush_levels(out);
                }
                o
            }
            IexInput::Order(ev) => self.builder.apply(&ev, out),
            IexInput::Executed { ev, print } | IexInput::Trade { ev, print } => {
                if let Some(t) = self.iex_tally(instrument) {
                    t.traded_shares = t.traded_shares.saturating_add(u64::from(print.shares));
                    t.prints += 1;
                }
                self.builder.apply(&ev, out)
            }
            IexInput::Quote(q) => {
                if let Some(t) = self.iex_tally(instrument) {
                    t.quote = Some(q);
                }
                Outcome::Applied
            }
            IexInput::ClearBook => {
                if let Some(locate) = book_key(instrument) {
                    self.builder.clear_orders(locate, out);
                }
                Outcome::Applied
            }
        }
    }

    /// The IEX tally of `instrument`, made when first needed; `None` for an id the books
    /// cannot key.
    fn iex_tally(&mut self, instrument: u32) -> Option<&mut IexTally> {
        let i = usize::from(book_key(instrument)?);
        if self.iex.len() <= i {
            self.iex.resize(i + 1, IexTally::default());
        }
        self.iex.get_mut(i)
    }

    /// The IEX `--book-summary` of everything observed, symbols as the envelopes named them
    /// (`#id` for an instrument none named), with `gaps` as its gap count. Level updates of
    /// an event still incomplete (the stream ended within it) are applied first, unpublished.
    pub fn iex_summary(&mut self, gaps: u64) -> IexSummary {
        let symbols = std::mem::take(&mut self.iex_symbols);
        let s = self.iex_summary_named(gaps, |id| {
            let s = *symbols.get(usize::try_from(id).ok()?)?;
            (s != *b"        ").then_some(s)
        });
        self.iex_symbols = symbols;
        s
    }

    /// [`iex_summary`](Self::iex_summary) with the symbol of each instrument id from `name`.
    pub fn iex_summary_named(
        &mut self,
        gaps: u64,
        name: impl Fn(u32) -> Option<[u8; 8]>,
    ) -> IexSummary {
        self.builder.flush_levels(&mut |_| {});
        let mut books = BTreeMap::new();
        let ids = self
            .builder
            .locates()
            .chain((0..self.iex.len()).filter_map(|i| u16::try_from(i).ok()));
        for locate in ids {
            let tally = self
                .iex
                .get(usize::from(locate))
                .copied()
                .unwrap_or_default();
            let (bid, ask) = match tally.quote {
                Some(q) => q,
                None => match self.builder.bbo(locate) {
                    Some(b) => (
                        b.bid_price.map(|p| (i64::from(p), b.bid_size)),
                        b.ask_price.map(|p| (i64::from(p), b.ask_size)),
                    ),
                    None => (None, None),
                },
            };
            if bid.is_none() && ask.is_none() && tally.prints == 0 {
                continue;
            }
            let id = u32::from(locate);
            let symbol = name(id).map_or_else(
                || format!("#{id}"),
                |s| String::from_utf8_lossy(&s).trim_end().to_owned(),
            );
            books.insert(
                symbol,
                IexBookEntry {
                    best_bid: bid.map(|b| b.0),
                    bid_size: bid.map_or(0, |b| b.1),
                    best_ask: ask.map(|a| a.0),
                    ask_size: ask.map_or(0, |a| a.1),
                    traded_shares: tally.traded_shares,
                    prints: tally.prints,
                },
            );
        }
        IexSummary {
            messages: self.messages,
            counts: self.counts.clone(),
            gaps,
            books,
        }
    }

    /// A gap notice, `recoverable` or not, handled by the [`GapPolicy`].
    pub fn gap(&mut self, recoverable: bool) {
        match self.policy {
            GapPolicy::CountLost => self.gaps += u64::from(!recoverable),
            GapPolicy::CountAllResetOnLoss => {
                self.gaps += 1;
                if !recoverable {
                    self.builder.reset();
                    for t in &mut self.iex {
                        t.quote = None;
                    }
                }
            }
        }
    }

    /// Applies a book event, publishing nothing.
    #[inline]
    fn apply(&mut self, ev: &BookEvent) {
        match ev {
            BookEvent::Order(ev) => {
                self.builder.apply(ev, &mut |_| {});
            }
            BookEvent::Level(ev) => {
                self.builder.apply_level(ev, &mut |_| {});
            }
        }
    }

    /// The `--book-summary` JSON of everything observed: IEX's form
    /// ([`iex_summary`](Self::iex_summary)) when IEX envelopes were observed, else ITCH's
    /// ([`summary`](Self::summary)); the gaps as counted here.
    pub fn summary_json(&mut self) -> String {
        if self.iex_seen {
            self.iex_summary(self.gaps).to_json()
        } else {
            self.summary().to_json()
        }
    }

    /// The summary of everything observed.
    pub fn summary(&self) -> BookSummary {
        self.summary_with_gaps(self.gaps)
    }

    /// The summary with `gaps` as its gap count, for a caller that counts gaps itself (a
    /// replay's sequencer).
    pub fn summary_with_gaps(&self, gaps: u64) -> BookSummary {
        self.builder.summary(&self.counts, self.messages, gaps)
    }
}

#[cfg(test)]
mod tests {
    use mdbus_bus::schema::{Encoder, FrameReader};

    use super::*;

    fn header(locate: u16) -> HeaderFields {
        HeaderFields {
            seq: 1,
            stock_locate: locate,
            ..HeaderFields::default()
        }
    }

    /// The envelope bytes of `fields` for `locate`.
    fn encode<E: fb::EventFields>(locate: u16, fields: &E) -> Vec<u8> {
        Encoder::new().encode(&header(locate), fields).to_vec()
    }

    fn level_fields(
        side: fb::Side,
        price: i64,
        action: fb::BookAction,
    ) -> fb::PriceLevelUpdateFields {
        fb::PriceLevelUpdateFields {
            side,
            price,
            size: 300,
            order_count: 2,
            action,
        }
    }

    /// The book event of `bytes`, read through the accessors and, where the frame reader
    /// reads it, in place: both must agree.
    fn read(bytes: &[u8]) -> Option<BookEvent> {
        let env = fb::read_verified(bytes).expect("valid envelope");
        let ev = book_event_from_envelope(&env);
        if let Some(view) = FrameReader::new().read_envelope(&env) {
            assert_eq!(book_event_from_envelope(&view), ev, "frame path");
        }
        ev
    }

    #[test]
    fn the_instrument_is_the_stock_locate() {
        assert_eq!(instrument_of(&header(65_535)), 65_535);
        assert_eq!(book_key(65_535), Some(65_535));
        assert_eq!(book_key(65_536), None);
        assert_eq!(
            bad_instrument(65_536, 0),
            OrderEvent::Invalid {
                locate: 0,
                order_ref: 0,
                reason: InvalidReason::BadInstrument(65_536)
            }
        );
    }

    #[test]
    fn price_level_updates_become_level_events() {
        let new = level_fields(fb::Side::Sell, 1_234_500, fb::BookAction::New);
        assert_eq!(
            read(&encode(9, &new)),
            Some(BookEvent::Level(LevelEvent {
                locate: 9,
                side: Side::Ask,
                price: 1_234_500,
                shares: 300,
                orders: 2,
            }))
        );
        // A delete removes the level whatever size it names.
        let del = level_fields(fb::Side::Buy, 7, fb::BookAction::Delete);
        assert_eq!(
            read(&encode(9, &del)),
            Some(BookEvent::Level(LevelEvent {
                locate: 9,
                side: Side::Bid,
                price: 7,
                shares: 0,
                orders: 0,
            }))
        );
        // What the builder cannot hold is invalid, to be counted.
        let invalid = |reason| {
            Some(BookEvent::Order(OrderEvent::Invalid {
                locate: 9,
                order_ref: 0,
                reason,
            }))
        };
        let side = level_fields(fb::Side::Unknown, 7, fb::BookAction::New);
        assert_eq!(
            read(&encode(9, &side)),
            invalid(InvalidReason::BadSide(fb::Side::Unknown.0))
        );
        for price in [-1, i64::from(u32::MAX) + 1] {
            let f = level_fields(fb::Side::Buy, price, fb::BookAction::Change);
            assert_eq!(
                read(&encode(9, &f)),
                invalid(InvalidReason::BadPrice(price))
            );
        }
    }

    fn add_fields(order_ref: u64) -> fb::AddOrderFields {
        fb::AddOrderFields {
            order_reference_number: order_ref,
            buy_sell_indicator: fb::Side::Buy,
            shares: 100,
            stock: *b"AAPL    ",
            price: 3_201_400,
        }
    }

    fn gap(recoverable: bool) -> Vec<u8> {
        encode(
            0,
            &fb::GapNoticeFields {
                first_missing_seq: 1,
                count: 1,
                recoverable,
                scope: fb::GapScope::Source,
            },
        )
    }

    fn books(policy: GapPolicy) -> EnvelopeBooks {
        let config = BookConfig {
            max_orders: 16,
            max_instruments: 4,
            levels_per_side_hint: 4,
        };
        EnvelopeBooks::new(config, policy).expect("config")
    }

    #[test]
    fn envelopes_build_order_and_level_books() {
        let mut b = books(GapPolicy::CountLost);
        b.observe_record(ENVELOPE_MSG_TYPE, &encode(13, &add_fields(1)));
        let level = level_fields(fb::Side::Sell, 500, fb::BookAction::New);
        b.observe_record(ENVELOPE_MSG_TYPE, &encode(14, &level));
        // A price level is a book event, not a source message of the count.
        assert_eq!(
            (b.messages(), b.counts().get(b'A'), b.counts().total()),
            (1, 1, 1)
        );
        let s = b.summary();
        assert_eq!(s.book(13).map(|e| e.best_bid), Some(Some(3_201_400)));
        assert_eq!(
            s.book(14).map(|e| (e.best_ask, e.ask_size)),
            Some((Some(500), 300))
        );
        assert_eq!(b.builder().counters().events, 2);
        // A source message read before normalization counts alike.
        b.observe_source(b'D', None);
        assert_eq!((b.messages(), b.counts().get(b'D')), (2, 1));
    }

    #[test]
    fn records_that_do_not_verify_are_counted_and_other_records_ignored() {
        let mut b = books(GapPolicy::CountLost);
        b.observe_record(ENVELOPE_MSG_TYPE, b"not an envelope");
        b.observe_record(ENVELOPE_MSG_TYPE.wrapping_add(1), b"not an envelope");
        b.observe_record(
            ENVELOPE_MSG_TYPE.wrapping_add(1),
            &encode(13, &add_fields(1)),
        );
        assert_eq!((b.invalid(), b.messages()), (1, 0));
        assert_eq!(b.builder().counters().events, 0);
    }

    #[test]
    fn iex_envelopes_build_iex_books_named_by_their_symbols() {
        let mut b = books(GapPolicy::CountLost);
        let iex = |seq: u64, fields: &dyn Fn(&mut Encoder, &HeaderFields) -> Vec<u8>| {
            let h = HeaderFields {
                seq,
                venue: fb::Venue::Iex,
                instrument: 3,
                ..HeaderFields::default()
            };
            fields(&mut Encoder::new(), &h)
        };
        let level = |buy: bool, flags: u8, size: u32, price: i64| {
            move |e: &mut Encoder, h: &HeaderFields| {
                let symbol = *b"ZIEXT   ";
                if buy {
                    let f = fb::IexPriceLevelUpdateBuyFields {
                        symbol,
                        event_flags: flags,
                        size,
                        price,
                        ..Default::default()
                    };
                    e.iex_price_level_update_buy(h, &f).to_vec()
                } else {
                    let f = fb::IexPriceLevelUpdateSellFields {
                        symbol,
                        event_flags: flags,
                        size,
                        price,
                        ..Default::default()
                    };
                    e.iex_price_level_update_sell(h, &f).to_vec()
                }
            }
        };
        b.observe_record(ENVELOPE_MSG_TYPE, &iex(1, &level(true, 0, 100, 250_000)));
        b.observe_record(ENVELOPE_MSG_TYPE, &iex(2, &level(false, 0, 300, 251_000)));
        // Half an event: its updates are held, not published.
        assert_eq!(b.builder().staged_levels(), 2);
        b.observe_record(ENVELOPE_MSG_TYPE, &iex(3, &level(true, 1, 200, 250_100)));
        assert_eq!(b.builder().staged_levels(), 0);
        let trade = |e: &mut Encoder, h: &HeaderFields| {
            let f = fb::IexTradeReportFields {
                symbol: *b"ZIEXT   ",
                size: 40,
                price: 250_000,
                ..Default::default()
            };
            e.iex_trade_report(h, &f).to_vec()
        };
        b.observe_record(ENVELOPE_MSG_TYPE, &iex(4, &trade));
        assert_eq!(
            b.summary_json(),
            r#"{"messages":4,"counts":{"5":1,"8":2,"T":1},"gaps":0,"books":{"ZIEXT":{"best_bid":250100,"bid_size":200,"best_ask":251000,"ask_size":300,"traded_shares":40,"prints":1}}}"#
        );
        // Nasdaq's envelopes keep ITCH's form.
        let mut n = books(GapPolicy::CountLost);
        n.observe_record(ENVELOPE_MSG_TYPE, &encode(13, &add_fields(1)));
        assert_eq!(n.summary_json(), n.summary().to_json());
    }

    #[test]
    fn gap_policies() {
        // The service and a replay: only lost messages count, the books stay.
        let mut b = books(GapPolicy::CountLost);
        b.observe_record(ENVELOPE_MSG_TYPE, &encode(13, &add_fields(1)));
        b.observe_record(ENVELOPE_MSG_TYPE, &gap(true));
        b.observe_record(ENVELOPE_MSG_TYPE, &gap(false));
        assert_eq!((b.gaps(), b.builder().live_orders()), (1, 1));
        assert_eq!(b.summary().gaps, 1);
        assert_eq!(b.summary_with_gaps(5).gaps, 5);
        // The receiver: every notice counts, and a loss starts the books afresh.
        let mut b = books(GapPolicy::CountAllResetOnLoss);
        b.observe_record(ENVELOPE_MSG_TYPE, &encode(13, &add_fields(1)));
        b.observe_record(ENVELOPE_MSG_TYPE, &gap(true));
        assert_eq!((b.gaps(), b.builder().live_orders()), (1, 1));
        b.observe_record(ENVELOPE_MSG_TYPE, &gap(false));
        assert_eq!((b.gaps(), b.builder().live_orders()), (2, 0));
        assert_eq!(b.messages(), 1, "the messages seen stay counted");
    }
}
