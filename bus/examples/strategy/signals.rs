//! The strategy's logic, apart from its I/O: a microprice from the best bid and offer, a
//! trade-flow signal (a time-decayed EWMA of signed traded volume), and a stance per
//! instrument: long when the microprice leans above the mid and buyers have been lifting
//! offers, short in the mirror case, held until either turns. `mdbus demo` runs this same
//! module.
//!
//! It reads typed FlatBuffers views (`Envelope`) and keeps plain numbers in a table made once:
//! nothing here allocates per message.

use mdbus_bus::schema::{self as fb, Envelope};

/// Instruments tracked: ids 0 to 65,535 of the feed's venue (for Nasdaq, every stock locate);
/// the per-instrument table has one entry each.
pub const LOCATES: usize = 1 << 16;

/// Denominator of Price(4) values: raw 3_201_400 is 320.14.
pub const PRICE_SCALE: f64 = 10_000.0;

/// Best bid and offer of one instrument, raw Price(4) integers (0 for an empty side).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quote {
    /// Best bid, Price(4).
    pub bid: i64,
    /// Shares at the best bid.
    pub bid_size: u64,
    /// Best ask, Price(4).
    pub ask: i64,
    /// Shares at the best ask.
    pub ask_size: u64,
}

impl Quote {
    /// Whether both sides have a price and the book is not crossed or locked.
    pub fn is_two_sided(&self) -> bool {
        self.bid > 0 && self.ask > self.bid && self.bid_size > 0 && self.ask_size > 0
    }

    /// The mid price, in currency units.
    pub fn mid(&self) -> f64 {
        (self.bid + self.ask) as f64 / 2.0 / PRICE_SCALE
    }

    /// The microprice, in currency units: the mid leaned towards the side with less size,
    /// `(bid * ask_size + ask * bid_size) / (bid_size + ask_size)`; `None` unless two-sided.
    pub fn microprice(&self) -> Option<f64> {
        if !self.is_two_sided() {
            return None;
        }
        let (b, a) = (self.bid as f64, self.ask as f64);
        let (bs, asz) = (self.bid_size as f64, self.ask_size as f64);
        Some((b * asz + a * bs) / (bs + asz) / PRICE_SCALE)
    }
}

/// Tuning of the signal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Half-life of the trade-flow EWMA, nanoseconds of exchange time.
    pub flow_half_life_ns: u64,
    /// |microprice - mid| / half-spread needed for a stance (0 to 1).
    pub imbalance: f64,
    /// |trade flow| (shares) needed for a stance.
    pub flow_shares: f64,
}

impl Default for Params {
    /// A 10-second flow half-life, imbalance 0.5, flow 300 shares.
    fn default() -> Self {
        Params {
            flow_half_life_ns: 10_000_000_000,
            imbalance: 0.5,
            flow_shares: 300.0,
        }
    }
}

/// What the strategy would do in one instrument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Stance {
    /// No view.
    #[default]
    Flat,
    /// Size leans to the bid and buyers are lifting offers.
    Long,
    /// Size leans to the ask and sellers are hitting bids.
    Short,
}

impl Stance {
    /// `FLAT`, `LONG` or `SHORT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stance::Flat => "FLAT",
            Stance::Long => "LONG",
            Stance::Short => "SHORT",
        }
    }
}

/// The table slot of the instrument an event is about: its id in its venue's directory
/// (`Envelope::instrument`; for Nasdaq, the stock locate). Ids past the table are not tracked.
#[inline]
fn slot(env: &Envelope<'_>) -> Option<u16> {
    u16::try_from(env.instrument()).ok()
}

/// A change of stance, with what caused it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Signal {
    /// Instrument id in its venue's directory (for Nasdaq, the stock locate).
    pub locate: u16,
    /// Exchange time of the event that triggered it, ns since midnight.
    pub exchange_ts_ns: u64,
    /// Receive timestamp of the source message, ns since the Unix epoch.
    pub recv_ts_ns: u64,
    /// The new stance.
    pub stance: Stance,
    /// Microprice then.
    pub microprice: f64,
    /// Mid then.
    pub mid: f64,
    /// Trade flow then (signed shares, decayed).
    pub flow: f64,
}

/// Counters of what the strategy saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// BBO updates applied.
    pub bbo_updates: u64,
    /// Trades applied.
    pub trades: u64,
    /// Signals emitted.
    pub signals: u64,
    /// Unrecoverable gap notices (state reset).
    pub gaps: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Instrument {
    quote: Quote,
    /// Trade flow as of `flow_ts`.
    flow: f64,
    flow_ts: u64,
    stance: Stance,
}

/// The strategy's state: one entry per stock locate, allocated once.
#[derive(Debug)]
pub struct Strategy {
    params: Params,
    instruments: Box<[Instrument]>,
    symbols: Box<[[u8; 8]]>,
    stats: Stats,
}

impl Strategy {
    /// A strategy with `params`; allocates its tables (a few MB) now.
    pub fn new(params: Params) -> Strategy {
        Strategy {
            params,
            instruments: vec![Instrument::default(); LOCATES].into_boxed_slice(),
            symbols: vec![*b"        "; LOCATES].into_boxed_slice(),
            stats: Stats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The latest quote of `locate`.
    pub fn quote(&self, locate: u16) -> Quote {
        self.instruments[usize::from(locate)].quote
    }

    /// The current stance in `locate`.
    pub fn stance(&self, locate: u16) -> Stance {
        self.instruments[usize::from(locate)].stance
    }

    /// Trade flow of `locate` (signed shares) as of its last trade.
    pub fn flow(&self, locate: u16) -> f64 {
        self.instruments[usize::from(locate)].flow
    }

    /// The symbol of `locate`, from the stock directory on the book stream (trimmed; empty
    /// if none was seen).
    pub fn symbol(&self, locate: u16) -> &str {
        let s = &self.symbols[usize::from(locate)];
        let end = s.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
        core::str::from_utf8(&s[..end]).unwrap_or("?")
    }

    /// Handles one event of a `<feed>.book` stream (BBO, stock directory, gap notice; price
    /// levels are ignored). Returns a signal when the instrument's stance changed.
    #[inline]
    pub fn on_book_event(&mut self, env: &Envelope<'_>) -> Option<Signal> {
        let h = env.header();
        let locate = slot(env)?;
        match env.event_type() {
            fb::Event::Bbo => {
                let b = env.event_as_bbo()?.body();
                self.stats.bbo_updates += 1;
                self.instruments[usize::from(locate)].quote = Quote {
                    bid: b.bid_price(),
                    bid_size: b.bid_size(),
                    ask: b.ask_price(),
                    ask_size: b.ask_size(),
                };
                self.evaluate(locate, h.exchange_ts_ns(), h.recv_ts_ns())
            }
            fb::Event::StockDirectory => {
                let d = env.event_as_stock_directory()?;
                self.symbols[usize::from(locate)] = d.stock().0;
                None
            }
            fb::Event::GapNotice => {
                self.on_gap(env);
                None
            }
            _ => None,
        }
    }

    /// Handles one event of a `<feed>.trades` stream (trades, gap notices). Returns a signal
    /// when the instrument's stance changed.
    #[inline]
    pub fn on_trade_event(&mut self, env: &Envelope<'_>) -> Option<Signal> {
        let h = env.header();
        let locate = slot(env)?;
        match env.event_type() {
            fb::Event::Trade => {
                let t = env.event_as_trade()?.body();
                self.stats.trades += 1;
                let i = &mut self.instruments[usize::from(locate)];
                // The indicator is the resting order's side: a resting buy filled means the
                // aggressor sold. Without it, the price against the quote decides.
                let sign = match t.buy_sell_indicator() {
                    fb::Side::Buy => -1.0,
                    fb::Side::Sell => 1.0,
                    _ if i.quote.ask > 0 && i64::from(t.price()) >= i.quote.ask => 1.0,
                    _ if i.quote.bid > 0 && i64::from(t.price()) <= i.quote.bid => -1.0,
                    _ => 0.0,
                };
                let now = h.exchange_ts_ns();
                i.flow = decay(i.flow, i.flow_ts, now, self.params.flow_half_life_ns)
                    + sign * f64::from(t.shares());
                i.flow_ts = now;
                self.evaluate(locate, now, h.recv_ts_ns())
            }
            fb::Event::GapNotice => {
                self.on_gap(env);
                None
            }
            _ => None,
        }
    }

    /// Lost data: forget the state of the instrument named (all of them for instrument 0).
    fn on_gap(&mut self, env: &Envelope<'_>) {
        let Some(g) = env.event_as_gap_notice() else {
            return;
        };
        if g.recoverable() {
            return;
        }
        self.stats.gaps += 1;
        match slot(env) {
            Some(0) => self.instruments.fill(Instrument::default()),
            Some(l) => self.instruments[usize::from(l)] = Instrument::default(),
            None => {}
        }
    }

    #[inline]
    fn evaluate(&mut self, locate: u16, now: u64, recv_ts_ns: u64) -> Option<Signal> {
        let p = self.params;
        let i = &mut self.instruments[usize::from(locate)];
        let micro = i.quote.microprice()?;
        let mid = i.quote.mid();
        let half_spread = (i.quote.ask - i.quote.bid) as f64 / 2.0 / PRICE_SCALE;
        let imbalance = (micro - mid) / half_spread;
        let flow = decay(i.flow, i.flow_ts, now, p.flow_half_life_ns);
        // Enter when book imbalance and trade flow agree; hold until one of them turns.
        let stance = match i.stance {
            Stance::Long if imbalance >= 0.0 && flow >= 0.0 => Stance::Long,
            Stance::Short if imbalance <= 0.0 && flow <= 0.0 => Stance::Short,
            _ if imbalance > p.imbalance && flow > p.flow_shares => Stance::Long,
            _ if imbalance < -p.imbalance && flow < -p.flow_shares => Stance::Short,
            _ => Stance::Flat,
        };
        if stance == i.stance {
            return None;
        }
        i.stance = stance;
        self.stats.signals += 1;
        Some(Signal {
            locate,
            exchange_ts_ns: now,
            recv_ts_ns,
            stance,
            microprice: micro,
            mid,
            flow,
        })
    }
}

/// `value` recorded at `then`, decayed to `now` with half-life `half_life_ns`.
#[inline]
fn decay(value: f64, then: u64, now: u64, half_life_ns: u64) -> f64 {
    if value == 0.0 || now <= then {
        return value;
    }
    let halves = (now - then) as f64 / half_life_ns.max(1) as f64;
    value * (-halves * core::f64::consts::LN_2).exp()
}

/// `HH:MM:SS.mmm` of an exchange timestamp (ns since midnight), without allocating.
pub fn time_of_day(ns: u64) -> impl core::fmt::Display {
    struct T(u64);
    impl core::fmt::Display for T {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let ms = self.0 / 1_000_000;
            let s = ms / 1000;
            write!(
                f,
                "{:02}:{:02}:{:02}.{:03}",
                s / 3600,
                s / 60 % 60,
                s % 60,
                ms % 1000
            )
        }
    }
    T(ns)
}
