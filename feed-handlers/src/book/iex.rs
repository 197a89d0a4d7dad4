//! IEX's decoded messages as book input, and the IEX `--book-summary`.
//!
//! A thin layer over the envelope path ([`EnvelopeBooks`]): each decoded message is read into
//! the [`IexInput`] its normalized envelope would give ([`IexInput::of_message`]) and applied by
//! [`EnvelopeBooks::apply_iex`], so a replay's books (built before the messages are
//! normalized) and the books of the bus's envelopes (book service, receiver) are made by one
//! piece of code. DEEP price level updates (`8` buy, `5` sell) are staged and flushed at the
//! message whose Event Flags say "event processing complete"; DEEP+ orders (`a`, `M`, `R`,
//! `L`) are L3 events and a Clear Book (`C`) deletes every order of its symbol; a TOPS quote
//! update (`Q`) is the instrument's top of book as IEX states it. Trade Reports (`T`) and
//! DEEP+ Order Executed (`L`, known order or not) are the prints; trade breaks change nothing.
//! Prices keep their 1e-4 scale; a price or side the builder cannot hold is an
//! [`OrderEvent::Invalid`], counted.

use std::collections::BTreeMap;

use mdbus_codecs::directory::Directory;
use mdbus_codecs::iex::message::Message;
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::{
    BookBuilder, BookConfig, BookConfigError, EnvelopeBooks, GapPolicy, IexInput, IexPrint,
    InvalidReason, LevelEvent, OrderEvent, Side, TypeCounts,
};

impl IexInput {
    /// What decoded message `msg` about instrument `locate` does to books: the same
    /// [`IexInput`] as its normalized envelope gives ([`iex_input_of_envelope`]); `None` for
    /// messages that change no book and print nothing.
    ///
    /// [`iex_input_of_envelope`]: super::iex_input_of_envelope
    #[inline]
    pub fn of_message(msg: &Message<'_>, locate: u16) -> Option<IexInput> {
        let print = |size, price, trade_id| IexPrint {
            shares: size,
            price,
            trade_id,
        };
        let input = match msg {
            Message::PriceLevelUpdateBuy(m) => IexInput::level(
                locate,
                Side::Bid,
                m.price(),
                m.size(),
                m.event_processing_complete(),
            ),
            Message::PriceLevelUpdateSell(m) => IexInput::level(
                locate,
                Side::Ask,
                m.price(),
                m.size(),
                m.event_processing_complete(),
            ),
            Message::AddOrder(m) => {
                let side = match m.side() {
                    b'8' => Some(Side::Bid),
                    b'5' => Some(Side::Ask),
                    _ => None,
                };
                IexInput::add(locate, side, m.side(), m.order_id(), m.size(), m.price())
            }
            Message::OrderModify(m) => IexInput::modify(locate, m.order_id(), m.size(), m.price()),
            Message::OrderDelete(m) => IexInput::Order(OrderEvent::Delete {
                locate,
                order_ref: m.order_id(),
            }),
            Message::OrderExecuted(m) => IexInput::executed(
                locate,
                m.order_id(),
                print(m.size(), m.price(), m.trade_id()),
            ),
            Message::TradeReport(m) => {
                IexInput::trade(locate, print(m.size(), m.price(), m.trade_id()))
            }
            Message::QuoteUpdate(q) => {
                IexInput::quote(q.bid_price(), q.bid_size(), q.ask_price(), q.ask_size())
            }
            Message::ClearBook(_) => IexInput::ClearBook,
            _ => return None,
        };
        Some(input)
    }
}

/// The book input of one IEX message about instrument `locate`: the builder event, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IexBookEvent {
    /// A DEEP price level; `complete` when its event's processing is complete (flush).
    Level {
        /// The level.
        level: LevelEvent,
        /// Event Flags said "event processing complete".
        complete: bool,
    },
    /// A DEEP+ order event (or an invalid one).
    Order(OrderEvent),
}

impl IexBookEvent {
    /// The book event of `msg` about `locate`, `None` for messages that change no book (prints
    /// are read by [`iex_print`], quotes by [`IexBooks`]); from [`IexInput::of_message`].
    #[inline]
    pub fn of(msg: &Message<'_>, locate: u16) -> Option<IexBookEvent> {
        match IexInput::of_message(msg, locate)? {
            IexInput::Level { level, complete } => Some(IexBookEvent::Level { level, complete }),
            IexInput::Order(ev) | IexInput::Executed { ev, .. } => Some(IexBookEvent::Order(ev)),
            IexInput::Trade { .. } | IexInput::Quote(_) | IexInput::ClearBook => None,
        }
    }
}

/// The shares of a print: a Trade Report, or a DEEP+ Order Executed; `None` otherwise (a
/// trade break changes no print).
#[inline]
pub fn iex_print(msg: &Message<'_>) -> Option<u32> {
    match msg {
        Message::TradeReport(m) => Some(m.size()),
        Message::OrderExecuted(m) => Some(m.size()),
        _ => None,
    }
}

/// Books of an IEX feed from its decoded messages, with the tallies its `--book-summary`
/// prints: messages per type, and per instrument the top of book (levels, orders or TOPS
/// quotes) and the prints. [`EnvelopeBooks`] underneath.
#[derive(Debug)]
pub struct IexBooks {
    books: EnvelopeBooks,
    /// Messages about an instrument id the books cannot key (above 65,535).
    bad_instruments: u64,
}

impl IexBooks {
    /// Books of `config`.
    pub fn new(config: BookConfig) -> Result<Self, BookConfigError> {
        Ok(IexBooks {
            books: EnvelopeBooks::new(config, GapPolicy::CountLost)?,
            bad_instruments: 0,
        })
    }

    /// The books.
    pub fn builder(&self) -> &BookBuilder {
        self.books.builder()
    }

    /// Messages per type byte.
    pub fn counts(&self) -> &TypeCounts {
        self.books.counts()
    }

    /// Messages observed.
    pub fn messages(&self) -> u64 {
        self.books.messages()
    }

    /// Messages about an instrument id the books cannot key.
    pub fn bad_instruments(&self) -> u64 {
        self.bad_instruments
    }

    /// Counts `msg` (about `instrument`, 0 for market-wide) and applies it to the books.
    pub fn observe(&mut self, msg: &Message<'_>, instrument: u32) {
        self.books.observe_source(msg.msg_type(), None);
        if instrument == 0 {
            return;
        }
        let Ok(locate) = u16::try_from(instrument) else {
            self.bad_instruments += 1;
            let ev = OrderEvent::Invalid {
                locate: 0,
                order_ref: 0,
                reason: InvalidReason::BadInstrument(instrument),
            };
            self.books
                .apply_iex(instrument, &IexInput::Order(ev), &mut |_| {});
            return;
        };
        if let Some(input) = IexInput::of_message(msg, locate) {
            self.books.apply_iex(instrument, &input, &mut |_| {});
        }
    }

    /// The summary, symbols named by `directory`, with `gaps` as counted by the reader.
    /// Level updates of an event still incomplete when the capture ended are applied first.
    pub fn summary(&mut self, directory: &Directory, gaps: u64) -> IexSummary {
        self.books
            .iex_summary_named(gaps, |id| directory.symbol_of(id))
    }
}

/// One symbol of an [`IexSummary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct IexBookEntry {
    /// Best bid (1e-4), `null` when the side is empty.
    pub best_bid: Option<i64>,
    /// Shares at the best bid, 0 when none.
    pub bid_size: u64,
    /// Best ask (1e-4), `null` when the side is empty.
    pub best_ask: Option<i64>,
    /// Shares at the best ask, 0 when none.
    pub ask_size: u64,
    /// Shares of every Trade Report (and DEEP+ Order Executed).
    pub traded_shares: u64,
    /// Number of those messages.
    pub prints: u64,
}

/// The IEX `--book-summary`: `{"messages": N, "counts": {...}, "gaps": G, "books": {"SYM":
/// {...}}}`, symbols with their trailing spaces stripped, in byte order.
#[derive(Clone, Debug, PartialEq)]
pub struct IexSummary {
    /// IEX messages read.
    pub messages: u64,
    /// Messages per type byte, keyed by the byte as a character.
    pub counts: TypeCounts,
    /// Gaps in the sequence numbers.
    pub gaps: u64,
    /// Every symbol with a non-empty side or a print.
    pub books: BTreeMap<String, IexBookEntry>,
}

impl Serialize for IexSummary {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("messages", &self.messages)?;
        m.serialize_entry("counts", &self.counts)?;
        m.serialize_entry("gaps", &self.gaps)?;
        m.serialize_entry("books", &self.books)?;
        m.end()
    }
}

impl IexSummary {
    /// The summary as one line of JSON.
    pub fn to_json(&self) -> String {
        // Integers, strings and maps with string keys: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use mdbus_codecs::iex::message::decode;

    use super::*;

    /// A message of `len` bytes, type `t`, flags byte `f`, symbol `sym`.
    fn msg(t: u8, f: u8, sym: &[u8; 8], len: usize) -> Vec<u8> {
        let mut m = vec![0u8; len];
        m[0] = t;
        m[1] = f;
        m[10..18].copy_from_slice(sym);
        m
    }

    fn level(t: u8, complete: bool, size: u32, price: i64) -> Vec<u8> {
        let mut m = msg(t, u8::from(complete), b"ZIEXT   ", 30);
        m[18..22].copy_from_slice(&size.to_le_bytes());
        m[22..30].copy_from_slice(&price.to_le_bytes());
        m
    }

    fn books() -> (IexBooks, Directory) {
        let mut dir = Directory::with_capacity(4);
        assert_eq!(dir.assign(*b"ZIEXT   "), Ok(1));
        (IexBooks::new(BookConfig::default()).unwrap(), dir)
    }

    #[test]
    fn a_decoded_message_and_its_envelope_give_the_same_book_input() {
        use mdbus_codecs::iex::normalize::Normalizer;

        let with = |t: u8, f: u8, len: usize, fill: &dyn Fn(&mut Vec<u8>)| {
            let mut m = msg(t, f, b"ZIEXT   ", len);
            fill(&mut m);
            m
        };
        let order = |m: &mut Vec<u8>| {
            m[18..26].copy_from_slice(&7u64.to_le_bytes());
            m[26..30].copy_from_slice(&300u32.to_le_bytes());
            m[30..38].copy_from_slice(&1_234_500i64.to_le_bytes());
        };
        let print = |m: &mut Vec<u8>| {
            m[18..22].copy_from_slice(&100u32.to_le_bytes());
            m[22..30].copy_from_slice(&1_234_500i64.to_le_bytes());
            m[30..38].copy_from_slice(&99u64.to_le_bytes());
        };
        let messages = [
            level(b'8', true, 100, 250_000),
            level(b'5', false, 0, 251_000),
            level(b'8', true, 100, -5),
            with(b'a', b'8', 38, &order),
            with(b'a', b'5', 38, &order),
            with(b'a', b'X', 38, &order),
            with(b'M', 1, 38, &order),
            with(b'R', 0, 26, &|m| {
                m[18..26].copy_from_slice(&7u64.to_le_bytes())
            }),
            with(b'L', 0, 46, &|m| {
                order(m);
                m[38..46].copy_from_slice(&5u64.to_le_bytes());
            }),
            with(b'T', 0x80, 38, &print),
            with(b'B', 0, 38, &print),
            with(b'Q', 0, 42, &|m| {
                m[18..22].copy_from_slice(&500u32.to_le_bytes());
                m[22..30].copy_from_slice(&99_000i64.to_le_bytes());
                m[30..38].copy_from_slice(&99_100i64.to_le_bytes());
                m[38..42].copy_from_slice(&200u32.to_le_bytes());
            }),
            with(b'C', 0, 18, &|_| {}),
            with(b'H', b'T', 22, &|_| {}),
        ];
        let mut norm = Normalizer::new();
        for bytes in &messages {
            let m = decode(bytes).unwrap();
            let instrument = norm.instrument(&m);
            let from_message = IexInput::of_message(&m, u16::try_from(instrument).unwrap());
            let env = norm.normalize(&m, 1, 2).envelope();
            assert_eq!(
                super::super::iex_input_of_envelope(&env),
                from_message,
                "{}",
                char::from(bytes[0])
            );
        }
    }

    #[test]
    fn levels_are_held_until_the_event_is_complete() {
        let (mut b, dir) = books();
        b.observe(&decode(&level(b'8', false, 100, 250_000)).unwrap(), 1);
        b.observe(&decode(&level(b'5', false, 300, 251_000)).unwrap(), 1);
        assert_eq!(
            b.builder().staged_levels(),
            2,
            "half an event is not flushed"
        );
        b.observe(&decode(&level(b'8', true, 0, 250_000)).unwrap(), 1);
        assert_eq!(b.builder().staged_levels(), 0);
        let s = b.summary(&dir, 0);
        let e = s.books["ZIEXT"];
        assert_eq!(
            (e.best_bid, e.bid_size, e.best_ask, e.ask_size),
            (None, 0, Some(251_000), 300)
        );
        assert_eq!(s.counts.get(b'8'), 2);
    }

    #[test]
    fn a_price_the_builder_cannot_hold_is_counted_invalid() {
        let (mut b, dir) = books();
        b.observe(&decode(&level(b'8', true, 100, -1)).unwrap(), 1);
        b.observe(&decode(&level(b'5', true, 100, i64::MAX)).unwrap(), 1);
        let mut add = msg(b'a', b'8', b"ZIEXT   ", 38);
        add[30..38].copy_from_slice(&(1i64 << 40).to_le_bytes());
        b.observe(&decode(&add).unwrap(), 1);
        add[1] = b'X';
        b.observe(&decode(&add).unwrap(), 1);
        assert_eq!(b.builder().counters().invalid, 4);
        assert!(b.summary(&dir, 0).books.is_empty());
        // An instrument id beyond the books' keys: counted, not a panic.
        b.observe(&decode(&level(b'8', true, 1, 1)).unwrap(), 70_000);
        assert_eq!(b.bad_instruments(), 1);
    }

    #[test]
    fn deep_plus_orders_build_the_book_and_clear_book_empties_it() {
        let (mut b, dir) = books();
        let order = |t: u8, f: u8, id: u64, size: u32, price: i64| {
            let mut m = msg(t, f, b"ZIEXT   ", if t == b'R' { 26 } else { 38 });
            m[18..26].copy_from_slice(&id.to_le_bytes());
            if t != b'R' {
                m[26..30].copy_from_slice(&size.to_le_bytes());
                m[30..38].copy_from_slice(&price.to_le_bytes());
            }
            m
        };
        for m in [
            order(b'a', b'8', 1, 100, 100_000),
            order(b'a', b'8', 2, 200, 101_000),
            order(b'a', b'5', 3, 300, 102_000),
            order(b'M', 0, 2, 50, 101_500),
            order(b'R', 0, 1, 0, 0),
        ] {
            b.observe(&decode(&m).unwrap(), 1);
        }
        let e = b.summary(&dir, 0).books["ZIEXT"];
        assert_eq!(
            (e.best_bid, e.bid_size, e.best_ask, e.ask_size),
            (Some(101_500), 50, Some(102_000), 300)
        );
        b.observe(&decode(&msg(b'C', 0, b"ZIEXT   ", 18)).unwrap(), 1);
        assert_eq!(b.builder().live_orders(), 0);
        assert!(b.summary(&dir, 0).books.is_empty());
    }

    #[test]
    fn prints_and_quotes_make_the_summary() {
        let (mut b, dir) = books();
        let mut t = msg(b'T', 0, b"ZIEXT   ", 38);
        t[18..22].copy_from_slice(&100u32.to_le_bytes());
        b.observe(&decode(&t).unwrap(), 1);
        // An execution of an order never seen still prints.
        let mut l = msg(b'L', 0, b"ZIEXT   ", 46);
        l[18..26].copy_from_slice(&77u64.to_le_bytes());
        l[26..30].copy_from_slice(&40u32.to_le_bytes());
        b.observe(&decode(&l).unwrap(), 1);
        // A trade break changes nothing.
        let mut br = msg(b'B', 0, b"ZIEXT   ", 38);
        br[18..22].copy_from_slice(&100u32.to_le_bytes());
        b.observe(&decode(&br).unwrap(), 1);
        let mut q = msg(b'Q', 0, b"ZIEXT   ", 42);
        q[18..22].copy_from_slice(&500u32.to_le_bytes());
        q[22..30].copy_from_slice(&99_000i64.to_le_bytes());
        b.observe(&decode(&q).unwrap(), 1);
        let s = b.summary(&dir, 2);
        assert_eq!(
            s.to_json(),
            r#"{"messages":4,"counts":{"B":1,"L":1,"Q":1,"T":1},"gaps":2,"books":{"ZIEXT":{"best_bid":99000,"bid_size":500,"best_ask":null,"ask_size":0,"traded_shares":140,"prints":2}}}"#
        );
    }
}
