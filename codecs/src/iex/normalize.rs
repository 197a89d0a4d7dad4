//! Normalization: decoded IEX messages into envelopes of the venue-neutral schema.
//!
//! Every message becomes its own `Iex*` event (see the schema's EVOLUTION.md, v4), field for field:
//! flags, sale conditions and reserved bytes as sent, prices as IEX's Price (`i64`, 1e-4),
//! symbols as their 8 space-padded bytes, IEX's epoch timestamp kept in the event. The
//! envelope names [`Venue::Iex`] and the instrument id the normalizer's [`Directory`] gives the
//! symbol (first seen, first numbered, from 1; 0 for the market-wide System Event).
//! `Header.exchange_ts_ns` is the time of day on the US/Eastern clock
//! ([`eastern_time_of_day_ns`]); `stock_locate` and `tracking_number` are 0 (ITCH's own).
//!
//! ```
//! use mdbus_codecs::fb;
//! use mdbus_codecs::iex::{message, normalize::Normalizer};
//!
//! let mut m = [0u8; 26];
//! m[0] = b'X'; // official price
//! m[1] = b'Q';
//! m[2..10].copy_from_slice(&1_493_126_200_000_000_000i64.to_le_bytes()); // 2017-04-25 13:16:40 UTC
//! m[10..18].copy_from_slice(b"ZIEXT   ");
//! m[18..26].copy_from_slice(&251_500i64.to_le_bytes());
//! let mut norm = Normalizer::new();
//! let env = norm.normalize(&message::decode(&m)?, 7, 0).envelope();
//! assert_eq!((env.venue(), env.instrument()), (fb::Venue::Iex, 1));
//! assert_eq!(env.header().exchange_ts_ns(), (9 * 3600 + 16 * 60 + 40) * 1_000_000_000); // 09:16:40 EDT
//! let x = env.event_as_iex_official_price().expect("an official price");
//! assert_eq!((x.official_price(), x.symbol().0), (251_500, *b"ZIEXT   "));
//! # Ok::<(), mdbus_codecs::iex::message::DecodeError>(())
//! ```

use crate::directory::Directory;
use crate::fb::{
    self, Encoded, Encoder, EnvelopeFlags, EventSink, HeaderFields, Side, ToBytes, Venue,
};
use crate::iex::message::Message;

/// Instruments an IEX directory holds by default: IEX lists about 10,000 symbols.
pub const DEFAULT_DIRECTORY_CAPACITY: usize = 1 << 16;

const NS: i128 = 1_000_000_000;
const DAY_S: i64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year of a day counted from 1970-01-01.
fn year_of_day(z: i64) -> i64 {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(m <= 2)
}

/// The first Sunday on or after day `z` (days since 1970-01-01, a Thursday).
fn sunday_on_or_after(z: i64) -> i64 {
    let weekday = (z + 4).rem_euclid(7); // 0 = Sunday
    z + (7 - weekday) % 7
}

/// US/Eastern's offset from UTC at `unix_s`, in seconds: -4 h during daylight saving time,
/// else -5 h, by the rule in force since 2007 (from 2:00 local on the second Sunday of March
/// to 2:00 local on the first Sunday of November).
pub fn eastern_offset_s(unix_s: i64) -> i64 {
    let year = year_of_day(unix_s.div_euclid(DAY_S));
    let start = (sunday_on_or_after(days_from_civil(year, 3, 1)) + 7) * DAY_S + 7 * 3600;
    let end = sunday_on_or_after(days_from_civil(year, 11, 1)) * DAY_S + 6 * 3600;
    if (start..end).contains(&unix_s) {
        -4 * 3600
    } else {
        -5 * 3600
    }
}

/// IEX's timestamp (ns since the Unix epoch) as the schema's exchange time: nanoseconds since
/// midnight on the US/Eastern clock (EST or EDT, [`eastern_offset_s`]). On the two days a
/// year the clock changes (Sundays, when IEX does not trade) this is the clock's time of day,
/// not the time elapsed since midnight. Defined for every `i64`.
pub fn eastern_time_of_day_ns(unix_ns: i64) -> u64 {
    let offset = eastern_offset_s(unix_ns.div_euclid(1_000_000_000));
    let local = i128::from(unix_ns) + i128::from(offset) * NS;
    // In [0, 86_400e9): fits a u64.
    u64::try_from(local.rem_euclid(i128::from(DAY_S) * NS)).unwrap_or(0)
}

/// [`eastern_time_of_day_ns`] over a stream of timestamps. It remembers the span of UTC time
/// that is one US/Eastern day at one offset, so a timestamp inside the last span seen costs
/// two compares and a subtraction; the calendar is worked out again only when a timestamp
/// leaves it. Every result equals [`eastern_time_of_day_ns`]'s.
#[derive(Clone, Copy, Debug)]
pub struct EasternClock {
    /// The span, in ns since the Unix epoch: `[from_ns, to_ns)`; `from_ns` is its midnight.
    from_ns: i64,
    to_ns: i64,
}

impl Default for EasternClock {
    fn default() -> Self {
        Self::new()
    }
}

impl EasternClock {
    /// A clock that has seen no day yet.
    pub const fn new() -> Self {
        EasternClock {
            from_ns: 1,
            to_ns: 0,
        }
    }

    /// The time of day on the US/Eastern clock of `unix_ns`, as [`eastern_time_of_day_ns`].
    #[inline]
    pub fn time_of_day_ns(&mut self, unix_ns: i64) -> u64 {
        if unix_ns >= self.from_ns && unix_ns < self.to_ns {
            // In the span: its offset is the span's and its midnight is `from_ns`.
            return unix_ns.abs_diff(self.from_ns);
        }
        self.enter_day_of(unix_ns)
    }

    #[cold]
    #[inline(never)]
    fn enter_day_of(&mut self, unix_ns: i64) -> u64 {
        const NS_S: i64 = 1_000_000_000;
        const DAY_NS: i64 = DAY_S * NS_S;
        let offset_s = eastern_offset_s(unix_ns.div_euclid(NS_S));
        let offset_ns = offset_s * NS_S;
        let span = unix_ns.checked_add(offset_ns).and_then(|local| {
            let midnight = local
                .checked_sub(local.rem_euclid(DAY_NS))?
                .checked_sub(offset_ns)?;
            Some((midnight, midnight.checked_add(DAY_NS)?))
        });
        // A day the clock changes on (a Sunday twice a year) is not one span: it is worked
        // out per timestamp. Elsewhere the offset, a step twice a year, is the same at both
        // ends of the day and so all through it.
        match span {
            Some((from, to))
                if eastern_offset_s(from.div_euclid(NS_S)) == offset_s
                    && eastern_offset_s((to - 1).div_euclid(NS_S)) == offset_s =>
            {
                *self = EasternClock {
                    from_ns: from,
                    to_ns: to,
                };
                unix_ns.abs_diff(from)
            }
            _ => eastern_time_of_day_ns(unix_ns),
        }
    }
}

/// The schema's side of an IEX side byte (`8` buy, `5` sell); another byte is kept as is.
#[inline]
pub fn side_of(b: u8) -> Side {
    match b {
        b'8' => Side::Buy,
        b'5' => Side::Sell,
        other => Side(other),
    }
}

/// Turns decoded IEX messages into envelopes with one reused [`Encoder`] and the venue's
/// instrument [`Directory`]. No allocation per message (the directory is preallocated).
#[derive(Debug)]
pub struct Normalizer {
    encoder: Encoder,
    flags: EnvelopeFlags,
    directory: Directory,
    refused: u64,
    clock: EasternClock,
}

impl Default for Normalizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Normalizer {
    /// A normalizer with a directory of [`DEFAULT_DIRECTORY_CAPACITY`] instruments.
    pub fn new() -> Self {
        Self::with_directory(Directory::with_capacity(DEFAULT_DIRECTORY_CAPACITY))
    }

    /// A normalizer numbering instruments in `directory`.
    pub fn with_directory(directory: Directory) -> Self {
        Normalizer {
            encoder: Encoder::new(),
            flags: EnvelopeFlags::empty(),
            directory,
            refused: 0,
            clock: EasternClock::new(),
        }
    }

    /// The instrument directory (symbol <-> id).
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Messages whose symbol the full directory could not number (published with
    /// instrument 0). Non-zero means the directory was made too small for the feed.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Sets the delivery flags stamped on every following envelope.
    pub fn set_flags(&mut self, flags: EnvelopeFlags) {
        self.flags = flags;
    }

    /// The delivery flags stamped on every envelope.
    pub fn flags(&self) -> EnvelopeFlags {
        self.flags
    }

    /// The encoder, to publish bus events with the same buffers.
    pub fn encoder(&mut self) -> &mut Encoder {
        &mut self.encoder
    }

    /// The instrument id of the message's symbol (assigned at first sight); 0 for the System
    /// Event, and for a symbol a full directory refuses (counted in [`refused`](Self::refused)).
    #[inline]
    pub fn instrument(&mut self, msg: &Message<'_>) -> u32 {
        let Some(symbol) = msg.symbol() else { return 0 };
        match self.directory.assign(symbol) {
            Ok(id) => id,
            Err(_) => {
                self.refused += 1;
                0
            }
        }
    }

    /// The message's exchange time as the schema's clock has it: the time of day on the
    /// US/Eastern clock ([`eastern_time_of_day_ns`], through the normalizer's [`EasternClock`]).
    #[inline]
    pub fn exchange_ts_ns(&mut self, msg: &Message<'_>) -> u64 {
        self.clock.time_of_day_ns(msg.timestamp())
    }

    /// Normalizes one message: `seq` is its IEX-TP sequence number (or capture position),
    /// `recv_ts_ns` when it was received (ns since the Unix epoch). The result borrows the
    /// normalizer until the next call.
    pub fn normalize(&mut self, msg: &Message<'_>, seq: u64, recv_ts_ns: u64) -> Encoded<'_> {
        self.normalize_to(msg, seq, recv_ts_ns, &mut ToBytes)
    }

    /// [`normalize`](Self::normalize) into `sink`: the event and its header go to the sink
    /// with this normalizer's encoder (a bus publisher writes it straight into its ring).
    pub fn normalize_to<S: EventSink>(
        &mut self,
        msg: &Message<'_>,
        seq: u64,
        recv_ts_ns: u64,
        sink: &mut S,
    ) -> S::Out<'_> {
        let instrument = self.instrument(msg);
        let timestamp = msg.timestamp();
        let h = &HeaderFields {
            seq,
            exchange_ts_ns: self.clock.time_of_day_ns(timestamp),
            recv_ts_ns,
            stock_locate: 0,
            tracking_number: 0,
            flags: self.flags,
            venue: Venue::Iex,
            instrument,
        };
        let enc = &mut self.encoder;
        match msg {
            Message::SystemEvent(m) => sink.put(
                enc,
                h,
                &fb::IexSystemEventFields {
                    timestamp,
                    system_event: m.system_event(),
                },
            ),
            Message::SecurityDirectory(m) => sink.put(
                enc,
                h,
                &fb::IexSecurityDirectoryFields {
                    timestamp,
                    symbol: m.symbol(),
                    flags: m.flags(),
                    round_lot_size: m.round_lot_size(),
                    adjusted_poc_price: m.adjusted_poc_price(),
                    luld_tier: m.luld_tier(),
                },
            ),
            Message::TradingStatus(m) => sink.put(
                enc,
                h,
                &fb::IexTradingStatusFields {
                    timestamp,
                    symbol: m.symbol(),
                    trading_status: m.trading_status(),
                    reason: m.reason(),
                },
            ),
            Message::RetailLiquidityIndicator(m) => sink.put(
                enc,
                h,
                &fb::IexRetailLiquidityIndicatorFields {
                    timestamp,
                    symbol: m.symbol(),
                    retail_liquidity_indicator: m.retail_liquidity_indicator(),
                },
            ),
            Message::OperationalHaltStatus(m) => sink.put(
                enc,
                h,
                &fb::IexOperationalHaltStatusFields {
                    timestamp,
                    symbol: m.symbol(),
                    operational_halt_status: m.operational_halt_status(),
                },
            ),
            Message::ShortSalePriceTestStatus(m) => sink.put(
                enc,
                h,
                &fb::IexShortSalePriceTestStatusFields {
                    timestamp,
                    symbol: m.symbol(),
                    short_sale_price_test_status: m.short_sale_price_test_status(),
                    detail: m.detail(),
                },
            ),
            Message::SecurityEvent(m) => sink.put(
                enc,
                h,
                &fb::IexSecurityEventFields {
                    timestamp,
                    symbol: m.symbol(),
                    security_event: m.security_event(),
                },
            ),
            Message::QuoteUpdate(m) => sink.put(
                enc,
                h,
                &fb::IexQuoteUpdateFields {
                    timestamp,
                    symbol: m.symbol(),
                    flags: m.flags(),
                    bid_size: m.bid_size(),
                    bid_price: m.bid_price(),
                    ask_price: m.ask_price(),
                    ask_size: m.ask_size(),
                },
            ),
            Message::PriceLevelUpdateBuy(m) => sink.put(
                enc,
                h,
                &fb::IexPriceLevelUpdateBuyFields {
                    timestamp,
                    symbol: m.symbol(),
                    event_flags: m.event_flags(),
                    size: m.size(),
                    price: m.price(),
                },
            ),
            Message::PriceLevelUpdateSell(m) => sink.put(
                enc,
                h,
                &fb::IexPriceLevelUpdateSellFields {
                    timestamp,
                    symbol: m.symbol(),
                    event_flags: m.event_flags(),
                    size: m.size(),
                    price: m.price(),
                },
            ),
            Message::TradeReport(m) => sink.put(
                enc,
                h,
                &fb::IexTradeReportFields {
                    timestamp,
                    symbol: m.symbol(),
                    sale_condition_flags: m.sale_condition_flags(),
                    size: m.size(),
                    price: m.price(),
                    trade_id: m.trade_id(),
                },
            ),
            Message::TradeBreak(m) => sink.put(
                enc,
                h,
                &fb::IexTradeBreakFields {
                    timestamp,
                    symbol: m.symbol(),
                    sale_condition_flags: m.sale_condition_flags(),
                    size: m.size(),
                    price: m.price(),
                    trade_id: m.trade_id(),
                },
            ),
            Message::OfficialPrice(m) => sink.put(
                enc,
                h,
                &fb::IexOfficialPriceFields {
                    timestamp,
                    symbol: m.symbol(),
                    price_type: m.price_type(),
                    official_price: m.official_price(),
                },
            ),
            Message::AuctionInformation(m) => sink.put(
                enc,
                h,
                &fb::IexAuctionInformationFields {
                    timestamp,
                    symbol: m.symbol(),
                    auction_type: m.auction_type(),
                    paired_shares: m.paired_shares(),
                    reference_price: m.reference_price(),
                    indicative_clearing_price: m.indicative_clearing_price(),
                    imbalance_shares: m.imbalance_shares(),
                    imbalance_side: m.imbalance_side(),
                    extension_number: m.extension_number(),
                    scheduled_auction_time: m.scheduled_auction_time(),
                    auction_book_clearing_price: m.auction_book_clearing_price(),
                    collar_reference_price: m.collar_reference_price(),
                    lower_auction_collar: m.lower_auction_collar(),
                    upper_auction_collar: m.upper_auction_collar(),
                },
            ),
            Message::AddOrder(m) => sink.put(
                enc,
                h,
                &fb::IexAddOrderFields {
                    timestamp,
                    symbol: m.symbol(),
                    side: side_of(m.side()),
                    order_id: m.order_id(),
                    size: m.size(),
                    price: m.price(),
                },
            ),
            Message::OrderModify(m) => sink.put(
                enc,
                h,
                &fb::IexOrderModifyFields {
                    timestamp,
                    symbol: m.symbol(),
                    modify_flags: m.modify_flags(),
                    order_id: m.order_id(),
                    size: m.size(),
                    price: m.price(),
                },
            ),
            Message::OrderDelete(m) => sink.put(
                enc,
                h,
                &fb::IexOrderDeleteFields {
                    timestamp,
                    symbol: m.symbol(),
                    reserved: m.reserved(),
                    order_id: m.order_id(),
                },
            ),
            Message::OrderExecuted(m) => sink.put(
                enc,
                h,
                &fb::IexOrderExecutedFields {
                    timestamp,
                    symbol: m.symbol(),
                    sale_condition_flags: m.sale_condition_flags(),
                    order_id: m.order_id(),
                    size: m.size(),
                    price: m.price(),
                    trade_id: m.trade_id(),
                },
            ),
            Message::ClearBook(m) => sink.put(
                enc,
                h,
                &fb::IexClearBookFields {
                    timestamp,
                    symbol: m.symbol(),
                    reserved: m.reserved(),
                },
            ),
        }
    }
}

/// The IEX message type a normalized IEX event came from; `None` for kinds that are not
/// IEX's. One kind per type: the inverse of normalization.
pub fn type_of_event(event: fb::Event) -> Option<u8> {
    Some(match event {
        fb::Event::IexSystemEvent => b'S',
        fb::Event::IexSecurityDirectory => b'D',
        fb::Event::IexTradingStatus => b'H',
        fb::Event::IexRetailLiquidityIndicator => b'I',
        fb::Event::IexOperationalHaltStatus => b'O',
        fb::Event::IexShortSalePriceTestStatus => b'P',
        fb::Event::IexSecurityEvent => b'E',
        fb::Event::IexQuoteUpdate => b'Q',
        fb::Event::IexPriceLevelUpdateBuy => b'8',
        fb::Event::IexPriceLevelUpdateSell => b'5',
        fb::Event::IexTradeReport => b'T',
        fb::Event::IexTradeBreak => b'B',
        fb::Event::IexOfficialPrice => b'X',
        fb::Event::IexAuctionInformation => b'A',
        fb::Event::IexAddOrder => b'a',
        fb::Event::IexOrderModify => b'M',
        fb::Event::IexOrderDelete => b'R',
        fb::Event::IexOrderExecuted => b'L',
        fb::Event::IexClearBook => b'C',
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
