//! `mdbus bench synth`: a synthetic full-day Nasdaq TotalView-ITCH 5.0 session, for replaying a
//! day's load where no real day is at hand.
//!
//! [`generate`] writes Nasdaq's file format (each message preceded by its 2-byte big-endian
//! length, as `codecs/testdata/itch/aapl-2020-01-30-10k.itch`), every message encoded by
//! `mdbus_codecs::nasdaq::itch`. The session is deterministic for a seed: the same [`SynthParams`] give
//! the same bytes run after run (the generator is a self-contained xoshiro256++ seeded by
//! SplitMix64). The draws use `f64` `ln`, `exp` and `powf` from the platform's math library,
//! so another platform may give other bytes of the same shape.
//!
//! # Shape of the day
//! * **Frame**: `S O` (start of messages), a `R` stock directory and a `H` trading action
//!   (`T`, trading) per instrument and `S S` (start of system hours), all at 04:00:00; `S Q`
//!   at 09:30:00, `S M` at 16:00:00, `S E` and `S C` at 20:00:00. That is `2K + 6` messages;
//!   the other `N - 2K - 6` are order flow.
//! * **Clock**: order-flow timestamps rise linearly with the message index within each part
//!   of the day: 10 % of the flow in the pre-market (04:00 to 09:30), 85 % in regular hours
//!   (09:30 to 16:00), 5 % after hours (16:00 to 20:00).
//! * **Instruments**: locates `1..=K`, symbols `AAAA`, `AAAB`, ... Activity is Zipf with
//!   exponent [`ZIPF_EXPONENT`] (1.0): the instrument of rank `r` gets a share `1/r / H_K` of
//!   the adds and trades (with K = 8,000 the busiest gets 10.5 %, the top 80 about 52 %);
//!   ranks are dealt to locates by a seeded shuffle.
//! * **Prices**: on a $0.01 grid (100 in `Price4` units). Each instrument opens at a price
//!   log-uniform in $5 to $500 and keeps a mid that moves one tick up or down with
//!   probability 1/16 at each of its adds and replaces, reflected to stay within
//!   [`MID_RANGE`] ticks of the open. A bid rests at `mid - d`, an ask at `mid + 1 + d`, where
//!   the distance `d` is the whole part of an exponential of mean 3 ticks, capped at 31; a bid is then lowered
//!   below the instrument's best live ask and an ask raised above its best live bid, so no book
//!   ever crosses or locks.
//! * **Sizes**: 80 % round lots, `100 x (1 + G)` with `G` geometric (p = 1/2) capped at 9;
//!   20 % odd lots, uniform in 1 to 99.
//! * **Order lifetimes**: 10 % of adds rest for the rest of the day; the others, and every
//!   order after a partial execution, partial cancel or replace, come due after a lifetime
//!   log-uniform in 1 ms to 2 h (median 2.7 s). An order is acted on at the first message whose
//!   timestamp has reached its due time (so with few messages the clock is coarse and short
//!   lifetimes round up to the next message).
//! * **Message mix**: a message is an event for a due order whenever one is due; otherwise a
//!   new add (`F` with probability 1/2,000, else `A`) or, with probability [`TRADE_PROB`], a
//!   `P` trade of a hidden order at the instrument's mid. A due order is deleted (`D`,
//!   82.72 %), fully executed (`E`, 3 %), partly executed (`E`, 14 %), partly cancelled (`X`,
//!   0.13 %) or replaced (`U` with a new reference, new size and a price on the same side,
//!   0.15 %); one execution in 100 is a `C` (executed with price, printable, at the order's
//!   price). Partial executions and cancels take 1 to `shares - 1` shares, uniformly. With the
//!   rested 10 % this reproduces the real AAPL sample's mix (per 10,000: A 4,758, D 4,083,
//!   E 849, P 240, U 7, X 6, F 2): D about 86 % and E about 18 % of the adds, P about 5 %.
//!   The live orders grow through the day to about 5 % of `N` (the rested orders and the
//!   long-lived ones): 1.08 million for 20 million messages.
//!
//! Memory is proportional to the live orders (about 40 bytes each: a slot and a due-time heap
//! entry) plus 2 KiB per instrument (a live-order count per price level, 256 levels a side);
//! messages are encoded into a reused 64 KiB buffer, so the steady state allocates nothing but
//! the amortised growth of the order slab and heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;

use mdbus_codecs::nasdaq::itch::{
    AddOrderFields, AddOrderMpidFields, MAX_TIMESTAMP, MessageFields, OrderCancelFields,
    OrderDeleteFields, OrderExecutedFields, OrderExecutedWithPriceFields, OrderReplaceFields,
    Price4, StockDirectoryFields, StockTradingActionFields, SystemEventFields, TradeFields,
    write_framed,
};

/// Zipf exponent of the activity per instrument.
pub const ZIPF_EXPONENT: f64 = 1.0;
/// Probability that a message with no order due is a `P` trade.
pub const TRADE_PROB: f64 = 0.048;
/// How far (ticks) an instrument's mid may wander from its open.
pub const MID_RANGE: u16 = 96;

const NS_PER_SEC: u64 = 1_000_000_000;
const T_START: u64 = 4 * 3600 * NS_PER_SEC;
const T_OPEN: u64 = 9 * 3600 * NS_PER_SEC + 30 * 60 * NS_PER_SEC;
const T_CLOSE: u64 = 16 * 3600 * NS_PER_SEC;
const T_END: u64 = 20 * 3600 * NS_PER_SEC;

/// Price grid step in `Price4` units ($0.01).
const TICK: u32 = 100;
/// Price levels tracked per side of an instrument (a window around its open).
const WIN: usize = 256;
/// The mid's lowest and highest window index.
const MID_LO: u16 = 128 - MID_RANGE;
const MID_HI: u16 = 127 + MID_RANGE;
/// Largest distance (ticks) of a new order from the mid.
const MAX_DIST: u16 = 31;
/// Minimum and maximum lifetime of an order that comes due (ns).
const LIFE_MIN: f64 = 1e6;
const LIFE_MAX: f64 = 2.0 * 3600.0 * 1e9;
/// Output buffer size.
const BUF: usize = 64 * 1024;
/// Frame messages: `S O`, `S S`, `S Q`, `S M`, `S E`, `S C`, besides `R` and `H` per instrument.
const FRAME_EVENTS: u64 = 6;

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynthParams {
    /// Messages in all, frame included (at least `2 * instruments + 6`).
    pub messages: u64,
    /// Instruments, 1 to 65,535 (locates `1..=instruments`).
    pub instruments: u32,
    /// Seed of the generator.
    pub seed: u64,
}

impl SynthParams {
    /// The fewest messages a session of `instruments` instruments can have (its frame).
    pub const fn min_messages(instruments: u32) -> u64 {
        2 * instruments as u64 + FRAME_EVENTS
    }

    /// Checks that the parameters can make a session.
    pub fn validate(&self) -> Result<(), SynthError> {
        if self.instruments == 0 || self.instruments > u32::from(u16::MAX) {
            return Err(SynthError::BadParams(format!(
                "--instruments must be 1 to 65535, got {}",
                self.instruments
            )));
        }
        let min = SynthParams::min_messages(self.instruments);
        if self.messages < min {
            return Err(SynthError::BadParams(format!(
                "--messages {} is too few for {} instruments: the frame alone (a directory and a \
                 trading action per instrument, six system events) is {min}",
                self.messages, self.instruments
            )));
        }
        Ok(())
    }
}

/// What a generated session holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthSummary {
    /// Messages written.
    pub messages: u64,
    /// Messages per ITCH type byte.
    pub by_type: Vec<(u8, u64)>,
    /// Instruments in the directory.
    pub instruments: u32,
    /// Most orders live at once.
    pub peak_live_orders: u64,
    /// Orders live at the end of the session.
    pub live_orders_at_end: u64,
    /// Bytes written (length prefixes included).
    pub bytes: u64,
}

impl SynthSummary {
    /// Messages of one type.
    pub fn count(&self, msg_type: u8) -> u64 {
        self.by_type
            .iter()
            .find(|(t, _)| *t == msg_type)
            .map_or(0, |(_, n)| *n)
    }

    /// One line: messages by type, instruments, peak live orders, size.
    pub fn line(&self) -> String {
        let types: Vec<String> = self
            .by_type
            .iter()
            .map(|(t, n)| format!("{} {n}", char::from(*t)))
            .collect();
        format!(
            "synth: {} messages ({}), {} instruments, peak live orders {}, live at end {}, {} bytes ({:.1} MiB)",
            self.messages,
            types.join(", "),
            self.instruments,
            self.peak_live_orders,
            self.live_orders_at_end,
            self.bytes,
            self.bytes as f64 / (1024.0 * 1024.0)
        )
    }
}

/// Why a session could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// The parameters cannot make a session.
    #[error("{0}")]
    BadParams(String),
    /// The writer failed.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// A message could not be encoded (a bug in the generator).
    #[error("internal error: cannot encode a message: {0}")]
    Encode(#[from] mdbus_codecs::nasdaq::itch::EncodeError),
}

/// xoshiro256++ seeded by SplitMix64: small, fast, and the same on every platform.
#[derive(Debug)]
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in (0, 1].
    #[inline]
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p`.
    #[inline]
    fn chance(&mut self, p: f64) -> bool {
        self.unit() <= p
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift.
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A live order.
#[derive(Clone, Copy, Debug)]
struct Order {
    order_ref: u64,
    shares: u32,
    locate: u16,
    /// Window index of its price level.
    level: u16,
    bid: bool,
}

/// One instrument's state.
#[derive(Debug)]
struct Instrument {
    symbol: [u8; 8],
    /// Price (ticks) of window index 0.
    base_ticks: u32,
    /// Window index of the mid (bids rest at or below it, asks above it).
    mid: u16,
    /// Best live bid's window index, if any.
    best_bid: Option<u16>,
    /// Best live ask's window index, if any.
    best_ask: Option<u16>,
}

impl Instrument {
    #[inline]
    fn price(&self, level: u16) -> Price4 {
        Price4((self.base_ticks + u32::from(level)) * TICK)
    }
}

/// Per-instrument live-order counts per price level, flat: `[instrument][side][level]`.
#[derive(Debug)]
struct Ladders(Vec<u32>);

impl Ladders {
    #[inline]
    fn idx(inst: usize, bid: bool, level: u16) -> usize {
        (inst * 2 + usize::from(bid)) * WIN + usize::from(level)
    }
}

/// The generator's state.
#[derive(Debug)]
struct Gen {
    rng: Rng,
    instruments: Vec<Instrument>,
    ladders: Ladders,
    /// Cumulative Zipf weights by rank, normalised to 1.
    zipf_cdf: Vec<f64>,
    /// Instrument index of each rank.
    rank_to_inst: Vec<u16>,
    orders: Vec<Order>,
    free: Vec<u32>,
    due: BinaryHeap<Reverse<(u64, u32)>>,
    live: u64,
    peak_live: u64,
    next_ref: u64,
    next_match: u64,
}

/// Writes framed messages through a reused buffer, counting them.
#[derive(Debug)]
struct Sink<W: Write> {
    out: W,
    buf: Box<[u8]>,
    len: usize,
    bytes: u64,
    counts: [u64; 256],
}

impl<W: Write> Sink<W> {
    #[inline]
    fn put(&mut self, msg: &MessageFields) -> Result<(), SynthError> {
        // Every ITCH message is at most 50 bytes.
        if self.len + 64 > self.buf.len() {
            self.flush()?;
        }
        let n = write_framed(msg, &mut self.buf[self.len..])?;
        self.len += n;
        self.bytes += n as u64;
        self.counts[usize::from(msg.msg_type())] += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SynthError> {
        self.out.write_all(&self.buf[..self.len])?;
        self.len = 0;
        Ok(())
    }
}

/// Symbol of instrument `i`: four letters, base 26 (`AAAA`, `AAAB`, ...), space-padded.
fn symbol(i: u32) -> [u8; 8] {
    let mut s = *b"AAAA    ";
    let mut v = i;
    for c in s[..4].iter_mut().rev() {
        *c = b'A' + (v % 26) as u8;
        v /= 26;
    }
    s
}

impl Gen {
    fn new(params: &SynthParams) -> Self {
        let k = params.instruments as usize;
        let mut rng = Rng::new(params.seed);
        let instruments = (0..params.instruments)
            .map(|i| {
                // Open log-uniform in $5 to $500 (500 to 50,000 ticks).
                let open = (500.0 * (100f64.ln() * rng.unit()).exp()) as u32;
                Instrument {
                    symbol: symbol(i),
                    base_ticks: open.max(500) - 128,
                    mid: 127,
                    best_bid: None,
                    best_ask: None,
                }
            })
            .collect();
        let mut zipf_cdf = Vec::with_capacity(k);
        let mut acc = 0.0;
        for r in 1..=k {
            acc += (r as f64).powf(-ZIPF_EXPONENT);
            zipf_cdf.push(acc);
        }
        for c in &mut zipf_cdf {
            *c /= acc;
        }
        let mut rank_to_inst: Vec<u16> = (0..k).map(|i| i as u16).collect();
        for i in (1..k).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            rank_to_inst.swap(i, j);
        }
        Gen {
            rng,
            instruments,
            ladders: Ladders(vec![0; k * 2 * WIN]),
            zipf_cdf,
            rank_to_inst,
            orders: Vec::new(),
            free: Vec::new(),
            due: BinaryHeap::new(),
            live: 0,
            peak_live: 0,
            next_ref: 1,
            next_match: 1,
        }
    }

    /// An instrument index drawn by the Zipf weights.
    #[inline]
    fn pick_instrument(&mut self) -> usize {
        let u = self.rng.unit();
        let rank = self
            .zipf_cdf
            .partition_point(|&c| c < u)
            .min(self.zipf_cdf.len() - 1);
        usize::from(self.rank_to_inst[rank])
    }

    /// A displayed size.
    #[inline]
    fn shares(&mut self) -> u32 {
        if self.rng.chance(0.8) {
            let g = (self.rng.next_u64() | (1 << 9)).trailing_zeros();
            100 * (1 + g)
        } else {
            1 + self.rng.below(99) as u32
        }
    }

    /// A lifetime (ns), log-uniform in `LIFE_MIN..LIFE_MAX`.
    #[inline]
    fn lifetime(&mut self) -> u64 {
        (LIFE_MIN * ((LIFE_MAX / LIFE_MIN).ln() * self.rng.unit()).exp()) as u64
    }

    /// Moves the mid of `inst` by a tick with probability 1/16, reflected within its range.
    #[inline]
    fn walk(&mut self, inst: usize) {
        let r = self.rng.next_u64();
        if r & 0xF == 0 {
            let m = &mut self.instruments[inst].mid;
            *m = if r & 0x10 == 0 {
                if *m < MID_HI { *m + 1 } else { *m - 1 }
            } else if *m > MID_LO {
                *m - 1
            } else {
                *m + 1
            };
        }
    }

    /// The level a new order of `inst` on that side rests at: near the mid, never crossing.
    #[inline]
    fn place(&mut self, inst: usize, bid: bool) -> u16 {
        let d = ((-self.rng.unit().ln()) * 3.0).min(f64::from(MAX_DIST)) as u16;
        let ins = &self.instruments[inst];
        if bid {
            let l = ins.mid - d;
            match ins.best_ask {
                Some(a) if a <= l => a - 1,
                _ => l,
            }
        } else {
            let l = ins.mid + 1 + d;
            match ins.best_bid {
                Some(b) if b >= l => b + 1,
                _ => l,
            }
        }
    }

    /// Counts an order in at `level` of `inst`.
    #[inline]
    fn level_add(&mut self, inst: usize, bid: bool, level: u16) {
        self.ladders.0[Ladders::idx(inst, bid, level)] += 1;
        let ins = &mut self.instruments[inst];
        if bid {
            if ins.best_bid.is_none_or(|b| level > b) {
                ins.best_bid = Some(level);
            }
        } else if ins.best_ask.is_none_or(|a| level < a) {
            ins.best_ask = Some(level);
        }
    }

    /// Counts an order out of `level` of `inst`, finding the next best level if it was the last
    /// at the best.
    #[inline]
    fn level_remove(&mut self, inst: usize, bid: bool, level: u16) {
        let i = Ladders::idx(inst, bid, level);
        self.ladders.0[i] -= 1;
        if self.ladders.0[i] != 0 {
            return;
        }
        let base = Ladders::idx(inst, bid, 0);
        let side = &self.ladders.0[base..base + WIN];
        let ins = &mut self.instruments[inst];
        if bid {
            if ins.best_bid == Some(level) {
                ins.best_bid = side[..usize::from(level)]
                    .iter()
                    .rposition(|&n| n != 0)
                    .map(|p| p as u16);
            }
        } else if ins.best_ask == Some(level) {
            ins.best_ask = side[usize::from(level) + 1..]
                .iter()
                .position(|&n| n != 0)
                .map(|p| (p + usize::from(level) + 1) as u16);
        }
    }

    fn take_ref(&mut self) -> u64 {
        let r = self.next_ref;
        self.next_ref += 1;
        r
    }

    fn take_match(&mut self) -> u64 {
        let m = self.next_match;
        self.next_match += 1;
        m
    }

    /// Schedules `slot` to come due a lifetime after `now`, unless that is past the day.
    #[inline]
    fn schedule(&mut self, slot: u32, now: u64) {
        let at = now.saturating_add(self.lifetime());
        if at < T_END {
            self.due.push(Reverse((at, slot)));
        }
    }

    fn free_slot(&mut self, slot: u32) {
        self.free.push(slot);
        self.live -= 1;
    }

    /// A new order: `A` (or, 1 in 2,000, `F`).
    fn add<W: Write>(&mut self, sink: &mut Sink<W>, now: u64) -> Result<(), SynthError> {
        let inst = self.pick_instrument();
        self.walk(inst);
        let bid = self.rng.next_u64() & 1 == 0;
        let level = self.place(inst, bid);
        let shares = self.shares();
        let order_ref = self.take_ref();
        let locate = inst as u16 + 1;
        self.level_add(inst, bid, level);
        let ins = &self.instruments[inst];
        let (stock, price) = (ins.symbol, ins.price(level));
        let buy_sell_indicator = if bid { b'B' } else { b'S' };
        let msg = if self.rng.below(2000) == 0 {
            MessageFields::AddOrderMpid(AddOrderMpidFields {
                stock_locate: locate,
                tracking_number: 0,
                timestamp: now,
                order_reference_number: order_ref,
                buy_sell_indicator,
                shares,
                stock,
                price,
                attribution: *b"SYNT",
            })
        } else {
            MessageFields::AddOrder(AddOrderFields {
                stock_locate: locate,
                tracking_number: 0,
                timestamp: now,
                order_reference_number: order_ref,
                buy_sell_indicator,
                shares,
                stock,
                price,
            })
        };
        sink.put(&msg)?;
        let order = Order {
            order_ref,
            shares,
            locate,
            level,
            bid,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.orders[s as usize] = order;
                s
            }
            None => {
                let Ok(s) = u32::try_from(self.orders.len()) else {
                    return Err(SynthError::BadParams(format!(
                        "more than {} live orders: use fewer --messages",
                        u32::MAX
                    )));
                };
                self.orders.push(order);
                s
            }
        };
        self.live += 1;
        self.peak_live = self.peak_live.max(self.live);
        // One add in ten rests for the rest of the day.
        if self.rng.below(10) != 0 {
            self.schedule(slot, now);
        }
        Ok(())
    }

    /// A `P` trade of a hidden order at an instrument's mid.
    fn trade<W: Write>(&mut self, sink: &mut Sink<W>, now: u64) -> Result<(), SynthError> {
        let inst = self.pick_instrument();
        let shares = self.shares();
        let match_number = self.take_match();
        let ins = &self.instruments[inst];
        sink.put(&MessageFields::Trade(TradeFields {
            stock_locate: inst as u16 + 1,
            tracking_number: 0,
            timestamp: now,
            order_reference_number: 0,
            buy_sell_indicator: b'B',
            shares,
            stock: ins.symbol,
            price: ins.price(ins.mid),
            match_number,
        }))
    }

    /// The event of a due order.
    fn act<W: Write>(&mut self, sink: &mut Sink<W>, slot: u32, now: u64) -> Result<(), SynthError> {
        let o = self.orders[slot as usize];
        let inst = usize::from(o.locate - 1);
        let u = self.rng.below(10_000);
        let partial_ok = o.shares > 1;
        // Per 10,000 due events: U 15, X 13, full E 300, partial E 1,400, D the rest.
        let (stock_locate, tracking_number, timestamp) = (o.locate, 0, now);
        let order_reference_number = o.order_ref;
        if u < 15 {
            // Replace: new reference, size and price on the same side.
            self.walk(inst);
            let level = self.place(inst, o.bid);
            let shares = self.shares();
            let new_ref = self.take_ref();
            self.level_remove(inst, o.bid, o.level);
            self.level_add(inst, o.bid, level);
            let price = self.instruments[inst].price(level);
            sink.put(&MessageFields::OrderReplace(OrderReplaceFields {
                stock_locate,
                tracking_number,
                timestamp,
                original_order_reference_number: order_reference_number,
                new_order_reference_number: new_ref,
                shares,
                price,
            }))?;
            self.orders[slot as usize] = Order {
                order_ref: new_ref,
                shares,
                level,
                ..o
            };
            self.schedule(slot, now);
        } else if u < 28 && partial_ok {
            let cancelled_shares = 1 + self.rng.below(u64::from(o.shares - 1)) as u32;
            sink.put(&MessageFields::OrderCancel(OrderCancelFields {
                stock_locate,
                tracking_number,
                timestamp,
                order_reference_number,
                cancelled_shares,
            }))?;
            self.orders[slot as usize].shares -= cancelled_shares;
            self.schedule(slot, now);
        } else if u < 1728 {
            let full = u < 328 || !partial_ok;
            let executed_shares = if full {
                o.shares
            } else {
                1 + self.rng.below(u64::from(o.shares - 1)) as u32
            };
            let match_number = self.take_match();
            let msg = if self.rng.below(100) == 0 {
                MessageFields::OrderExecutedWithPrice(OrderExecutedWithPriceFields {
                    stock_locate,
                    tracking_number,
                    timestamp,
                    order_reference_number,
                    executed_shares,
                    match_number,
                    printable: b'Y',
                    execution_price: self.instruments[inst].price(o.level),
                })
            } else {
                MessageFields::OrderExecuted(OrderExecutedFields {
                    stock_locate,
                    tracking_number,
                    timestamp,
                    order_reference_number,
                    executed_shares,
                    match_number,
                })
            };
            sink.put(&msg)?;
            if full {
                self.level_remove(inst, o.bid, o.level);
                self.free_slot(slot);
            } else {
                self.orders[slot as usize].shares -= executed_shares;
                self.schedule(slot, now);
            }
        } else {
            sink.put(&MessageFields::OrderDelete(OrderDeleteFields {
                stock_locate,
                tracking_number,
                timestamp,
                order_reference_number,
            }))?;
            self.level_remove(inst, o.bid, o.level);
            self.free_slot(slot);
        }
        Ok(())
    }
}

fn system_event<W: Write>(sink: &mut Sink<W>, code: u8, now: u64) -> Result<(), SynthError> {
    sink.put(&MessageFields::SystemEvent(SystemEventFields {
        stock_locate: 0,
        tracking_number: 0,
        timestamp: now,
        event_code: code,
    }))
}

/// How many of `n` order-flow messages fall in regular hours (85 %).
#[inline]
fn regular_hours(n: u64) -> u64 {
    (u128::from(n) * 85 / 100) as u64
}

/// Timestamp of order-flow message `j` of `n`: 10 % before the open, 85 % in regular hours,
/// 5 % after the close, evenly spaced within each part.
#[inline]
fn clock(j: u64, n: u64) -> u64 {
    let pre = n / 10;
    let regular = regular_hours(n);
    let (start, len, first, count) = if j < pre {
        (T_START, T_OPEN - T_START, 0, pre)
    } else if j < pre + regular {
        (T_OPEN, T_CLOSE - T_OPEN, pre, regular)
    } else {
        (T_CLOSE, T_END - T_CLOSE, pre + regular, n - pre - regular)
    };
    let t = start + (u128::from(j - first) * u128::from(len) / u128::from(count.max(1))) as u64;
    debug_assert!(t <= MAX_TIMESTAMP);
    t
}

/// Writes a synthetic session to `out` (see the module docs for its shape) and says what it
/// holds. `out` is written in 64 KiB pieces; wrap it in nothing.
pub fn generate<W: Write>(out: W, params: &SynthParams) -> Result<SynthSummary, SynthError> {
    params.validate()?;
    let min = SynthParams::min_messages(params.instruments);
    let mut g = Gen::new(params);
    let mut sink = Sink {
        out,
        buf: vec![0; BUF].into_boxed_slice(),
        len: 0,
        bytes: 0,
        counts: [0; 256],
    };

    system_event(&mut sink, b'O', T_START)?;
    for (i, ins) in g.instruments.iter().enumerate() {
        sink.put(&MessageFields::StockDirectory(
            StockDirectoryFields::common_stock(i as u16 + 1, ins.symbol, T_START),
        ))?;
    }
    for (i, ins) in g.instruments.iter().enumerate() {
        sink.put(&MessageFields::StockTradingAction(
            StockTradingActionFields {
                stock_locate: i as u16 + 1,
                tracking_number: 0,
                timestamp: T_START,
                stock: ins.symbol,
                trading_state: b'T',
                reserved: b' ',
                reason: *b"    ",
            },
        ))?;
    }
    system_event(&mut sink, b'S', T_START)?;

    let n = params.messages - min;
    let open_at = n / 10;
    let close_at = open_at + regular_hours(n);
    for j in 0..n {
        if j == open_at {
            system_event(&mut sink, b'Q', T_OPEN)?;
        }
        if j == close_at {
            system_event(&mut sink, b'M', T_CLOSE)?;
        }
        let now = clock(j, n);
        match g.due.peek() {
            Some(&Reverse((at, slot))) if at <= now => {
                g.due.pop();
                g.act(&mut sink, slot, now)?;
            }
            _ => {
                if g.rng.chance(TRADE_PROB) {
                    g.trade(&mut sink, now)?;
                } else {
                    g.add(&mut sink, now)?;
                }
            }
        }
    }
    if n <= open_at {
        system_event(&mut sink, b'Q', T_OPEN)?;
    }
    if n <= close_at {
        system_event(&mut sink, b'M', T_CLOSE)?;
    }
    system_event(&mut sink, b'E', T_END)?;
    system_event(&mut sink, b'C', T_END)?;
    sink.flush()?;
    sink.out.flush()?;

    let by_type = sink
        .counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n != 0)
        .map(|(t, n)| (t as u8, *n))
        .collect::<Vec<_>>();
    Ok(SynthSummary {
        messages: by_type.iter().map(|(_, n)| n).sum(),
        by_type,
        instruments: params.instruments,
        peak_live_orders: g.peak_live,
        live_orders_at_end: g.live,
        bytes: sink.bytes,
    })
}

/// `mdbus bench synth FILE`: write a synthetic full-day ITCH 5.0 session.
#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// The file to write (Nasdaq's length-prefixed ITCH format).
    pub file: std::path::PathBuf,
    /// Messages in all, the frame (directory, trading actions, system events) included.
    #[arg(long, default_value_t = 20_000_000)]
    pub messages: u64,
    /// Instruments (1 to 65535).
    #[arg(long, default_value_t = 8_000)]
    pub instruments: u32,
    /// Seed: the same seed and counts give the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Runs `bench synth`, printing the summary line to `out`.
pub fn run(args: &SynthArgs, out: &mut dyn Write) -> Result<(), super::BenchError> {
    let params = SynthParams {
        messages: args.messages,
        instruments: args.instruments,
        seed: args.seed,
    };
    let io = |source| super::BenchError::Io {
        path: args.file.clone(),
        source,
    };
    // Refuse bad parameters before the file is created (and an old one truncated).
    if let Err(e) = params.validate() {
        return Err(super::BenchError::BadArg(e.to_string()));
    }
    let file = std::fs::File::create(&args.file).map_err(io)?;
    let summary = match generate(file, &params) {
        Ok(s) => s,
        Err(SynthError::BadParams(m)) => return Err(super::BenchError::BadArg(m)),
        Err(SynthError::Io(e)) => return Err(io(e)),
        Err(e @ SynthError::Encode(_)) => return Err(super::BenchError::Internal(e.to_string())),
    };
    writeln!(
        out,
        "{}, written to {}",
        summary.line(),
        args.file.display()
    )
    .map_err(|source| super::BenchError::Io {
        path: std::path::PathBuf::from("<stdout>"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_four_letters_base_26() {
        assert_eq!(&symbol(0), b"AAAA    ");
        assert_eq!(&symbol(1), b"AAAB    ");
        assert_eq!(&symbol(26), b"AABA    ");
        assert_eq!(&symbol(65_534), b"DSYO    ");
    }

    #[test]
    fn clock_rises_through_the_day() {
        let n = 1000;
        assert_eq!(clock(0, n), T_START);
        assert_eq!(clock(100, n), T_OPEN);
        assert_eq!(clock(950, n), T_CLOSE);
        let mut last = 0;
        for j in 0..n {
            let t = clock(j, n);
            assert!(t >= last && t < T_END);
            last = t;
        }
    }

    #[test]
    fn clock_does_not_overflow_for_huge_counts() {
        let n = u64::MAX;
        assert_eq!(clock(0, n), T_START);
        assert!(clock(n / 2, n) > T_OPEN && clock(n / 2, n) < T_CLOSE);
        assert!(clock(n - 1, n) < T_END);
    }
}
