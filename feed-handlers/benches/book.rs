//! Order book builder throughput on real data: the first 10,000 AAPL messages of 2020-01-30
//! (9,945 book events), and the memory it takes.
//!
//! * `apply`: the pre-decoded events applied to a book sized for the sample (reset, untimed,
//!   between passes).
//! * `decode+apply`: from the raw length-prefixed bytes: decode, convert, apply.
//! * `book_aapl_10k_levels/set_level+flush`: the same session as a venue that publishes price
//!   levels would send it: the order book's level updates (collected untimed) set on a book of
//!   levels, flushed where the order book published a top. Throughput in level updates.
//! * `book_synthetic_market/apply/nasdaq_day_config`: a builder sized for a full Nasdaq day
//!   (`BookConfig::nasdaq_day`: 10 million orders, 12,000 instruments) holding 3 million live
//!   orders over 8,000 instruments, fed a generated whole-market flow (see [`Market`]) in
//!   batches of 10,000 events (generated untimed, applied timed); `prefetch+apply` the same
//!   with each event's order slots prefetched one event ahead ([`BookBuilder::prefetch`]).
//! * `book_service_aapl_sparse`: the book service reading the AAPL session from an input
//!   stream in turns of 64 records, order references shifted per pass so that they are as
//!   sparse as one instrument's among the whole market's (each add a cold line of the order
//!   table), publishing into rings nobody reads: `handle` per record beside `poll` (which
//!   prefetches one record ahead), with a 2 MB order table and with `nasdaq_day`'s.
//!
//! * `book_day_file` (only when `MDBUS_BOOK_DAY` names a Nasdaq ITCH 5.0 file, such as the
//!   day `mdbus bench synth` writes): the book built on the decoding thread from decoded
//!   fields, the whole file per iteration: `decode+apply` (decode, convert, apply, one
//!   thread, no envelope) and `decode+prefetch+apply` (each event's order slots and book
//!   prefetched 16 events ahead), into a builder sized from the file's adds (grown in steps).
//!   Throughput in messages. On the synthetic full day (`--messages 20000000 --instruments
//!   8000`), one run on the same shared 2-core host: 10.9 M/s without prefetching, 9.1 M/s
//!   with it: holding events back to prefetch costs more than the misses it hides there.
//!
//! Throughput is in messages (book events) per second. At the end the process's peak resident
//! memory (`VmHWM`) is printed beside the preallocated sizes.
//!
//! `cargo bench -p mdbus-feed-handlers --bench book -- --warm-up-time 1 --measurement-time 3`
//!
//! One run on a shared 2-core AMD EPYC virtual machine under other load (figures for
//! comparison within a run, not absolute): `apply` 20.5 M events/s (49 ns each),
//! `decode+apply` 11.8 M/s, the synthetic market at full-day size 3.5 M/s with 3.3 M live
//! orders; peak RSS 424 MB, of which the `nasdaq_day` builder is 371 MB.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use mdbus_codecs::nasdaq::itch::Stream;
use mdbus_feed_handlers::book::{
    BookBuilder, BookConfig, BookUpdate, LevelEvent, OrderEvent, Side,
};

const AAPL: &[u8] = include_bytes!("../../codecs/testdata/itch/aapl-2020-01-30-10k.itch");

fn sample_config() -> BookConfig {
    BookConfig {
        max_orders: 4096,
        max_instruments: 64,
        levels_per_side_hint: 128,
    }
}

fn events() -> Vec<OrderEvent> {
    Stream::new(AAPL)
        .filter_map(|(_, m)| m.ok())
        .filter_map(|m| OrderEvent::from_itch(&m))
        .collect()
}

/// A sink that folds every update into a checksum, as a publisher would read them.
#[inline]
fn sink(acc: &mut u64) -> impl FnMut(BookUpdate) + '_ {
    move |u| {
        *acc = acc.wrapping_add(match u {
            BookUpdate::Level { price, shares, .. } => u64::from(price) ^ shares,
            BookUpdate::Bbo(x) => x.bid_size ^ x.ask_size,
        })
    }
}

fn bench(c: &mut Criterion) {
    let evs = events();
    let mut g = c.benchmark_group("book_aapl_10k");
    g.throughput(Throughput::Elements(evs.len() as u64));

    g.bench_function("apply", |b| {
        let mut book = BookBuilder::new(sample_config()).expect("config");
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut acc = 0u64;
            for _ in 0..iters {
                book.reset();
                let t = Instant::now();
                for ev in black_box(&evs) {
                    book.apply(ev, &mut sink(&mut acc));
                }
                total += t.elapsed();
            }
            black_box(acc);
            total
        })
    });

    g.bench_function("decode+apply", |b| {
        let mut book = BookBuilder::new(sample_config()).expect("config");
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut acc = 0u64;
            for _ in 0..iters {
                book.reset();
                let t = Instant::now();
                for (_, m) in Stream::new(black_box(AAPL)) {
                    if let Some(ev) = m.ok().as_ref().and_then(OrderEvent::from_itch) {
                        book.apply(&ev, &mut sink(&mut acc));
                    }
                }
                total += t.elapsed();
            }
            black_box(acc);
            total
        })
    });

    g.finish();
}

/// The AAPL order book's level updates as level events, each with whether the order book
/// published a top after it (where a level venue's event would end).
fn level_events() -> Vec<(LevelEvent, bool)> {
    let mut book = BookBuilder::new(sample_config()).expect("config");
    let mut out: Vec<(LevelEvent, bool)> = Vec::new();
    for ev in events() {
        book.apply(&ev, &mut |u| match u {
            BookUpdate::Level {
                locate,
                side,
                price,
                shares,
                orders,
                ..
            } => out.push((
                LevelEvent {
                    locate,
                    side,
                    price,
                    shares,
                    orders,
                },
                false,
            )),
            BookUpdate::Bbo(_) => {
                if let Some(last) = out.last_mut() {
                    last.1 = true;
                }
            }
        });
    }
    out
}

fn bench_levels(c: &mut Criterion) {
    let evs = level_events();
    let mut g = c.benchmark_group("book_aapl_10k_levels");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("set_level+flush", |b| {
        let mut book = BookBuilder::new(sample_config()).expect("config");
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut acc = 0u64;
            for _ in 0..iters {
                book.reset();
                let t = Instant::now();
                for (ev, end) in black_box(&evs) {
                    book.set_level(ev, &mut sink(&mut acc));
                    if *end {
                        book.flush_levels(&mut sink(&mut acc));
                    }
                }
                book.flush_levels(&mut sink(&mut acc));
                total += t.elapsed();
            }
            black_box(acc);
            total
        })
    });
    g.finish();
}

/// Instruments in the synthetic market.
const INSTRUMENTS: u64 = 8_000;
/// Live orders the synthetic market holds at steady state.
const LIVE: usize = 3_000_000;
/// Events timed per pass.
const BATCH: usize = 10_000;

/// A live order of the synthetic market.
#[derive(Clone, Copy)]
struct Live {
    order_ref: u64,
    locate: u16,
    side: Side,
    shares: u32,
}

/// A whole-market order flow in the shape of a Nasdaq day: 8,000 instruments, half the flow on
/// the 100 busiest, references rising by one per new order across the market, millions of
/// orders resting, most cancellations hitting young orders, prices a few ticks off each
/// instrument's mid with a tail of deep orders.
struct Market {
    rng: u64,
    next_ref: u64,
    live: Vec<Live>,
}

impl Market {
    fn new() -> Self {
        Self {
            rng: 0x9E37_79B9_7F4A_7C15,
            next_ref: 1,
            live: Vec::with_capacity(LIVE + BATCH),
        }
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11
    }

    fn add(&mut self) -> OrderEvent {
        let r = self.rand();
        let locate = if r & 1 == 0 {
            1 + (r >> 1) % 100
        } else {
            1 + (r >> 1) % INSTRUMENTS
        } as u16;
        let mid = 100_000 + u32::from(locate) * 613 % 5_000_000;
        let r = self.rand();
        let ticks = if r.is_multiple_of(10) {
            (r >> 8) % 200
        } else {
            (r >> 8) % 8
        } as u32;
        let off = 100 * (1 + ticks);
        let (side, price) = if r & 0x80 == 0 {
            (Side::Bid, mid - off)
        } else {
            (Side::Ask, mid + off)
        };
        let shares = 100 * (1 + (r >> 20) % 5) as u32;
        let order_ref = self.next_ref;
        self.next_ref += 1;
        self.live.push(Live {
            order_ref,
            locate,
            side,
            shares,
        });
        OrderEvent::Add {
            locate,
            order_ref,
            side,
            price,
            shares,
        }
    }

    fn next(&mut self) -> OrderEvent {
        let r = self.rand();
        let add_per_mille = if self.live.len() < LIVE { 600 } else { 450 };
        if self.live.is_empty() || r % 1000 < add_per_mille {
            return self.add();
        }
        let n = self.live.len() as u64;
        let r = self.rand();
        // Nine in ten cancellations and executions hit one of the 2,048 youngest orders.
        let back = if !r.is_multiple_of(10) {
            (r >> 4) % n.min(2_048)
        } else {
            (r >> 4) % n
        };
        let i = (n - 1 - back) as usize;
        let o = self.live[i];
        let kind = (r >> 32) % 100;
        if kind < 70 {
            self.live.swap_remove(i);
            OrderEvent::Delete {
                locate: o.locate,
                order_ref: o.order_ref,
            }
        } else if kind < 85 {
            let shares = if kind & 1 == 0 {
                o.shares
            } else {
                o.shares / 2
            };
            if shares == o.shares {
                self.live.swap_remove(i);
            } else {
                self.live[i].shares -= shares;
            }
            OrderEvent::Execute {
                locate: o.locate,
                order_ref: o.order_ref,
                shares,
            }
        } else if kind < 90 {
            let shares = o.shares / 2;
            self.live[i].shares -= shares;
            OrderEvent::Cancel {
                locate: o.locate,
                order_ref: o.order_ref,
                shares,
            }
        } else {
            let new_ref = self.next_ref;
            self.next_ref += 1;
            self.live[i].order_ref = new_ref;
            let mid = 100_000 + u32::from(o.locate) * 613 % 5_000_000;
            let price = match o.side {
                Side::Bid => mid - 100,
                Side::Ask => mid + 100,
            };
            OrderEvent::Replace {
                locate: o.locate,
                old_ref: o.order_ref,
                new_ref,
                shares: o.shares,
                price,
            }
        }
    }
}

fn bench_market(c: &mut Criterion) {
    let mut g = c.benchmark_group("book_synthetic_market");
    g.throughput(Throughput::Elements(BATCH as u64));
    // Made on first use (not at all when the bench is filtered out), then kept: the closure
    // runs for the warm-up and again for the measurement.
    let mut state: Option<(BookBuilder, Market)> = None;
    let full_day = || {
        let mut book = BookBuilder::new(BookConfig::nasdaq_day()).expect("config");
        let mut market = Market::new();
        while market.live.len() < LIVE {
            let ev = market.add();
            book.apply(&ev, &mut |_| {});
        }
        (book, market)
    };
    // The second variant goes on with the same flow from where the first stopped, with each
    // event's order slots prefetched one event ahead, as the book service's poll turns do.
    for (id, prefetch) in [
        ("apply/nasdaq_day_config", false),
        ("prefetch+apply/nasdaq_day_config", true),
    ] {
        g.bench_function(id, |b| {
            let (book, market) = state.get_or_insert_with(full_day);
            let mut batch = Vec::with_capacity(BATCH);
            let mut acc = 0u64;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    batch.clear();
                    batch.extend((0..BATCH).map(|_| market.next()));
                    let t = Instant::now();
                    let evs = black_box(&batch);
                    for (i, ev) in evs.iter().enumerate() {
                        if prefetch && let Some(next) = evs.get(i + 1) {
                            book.prefetch(next);
                        }
                        book.apply(ev, &mut sink(&mut acc));
                    }
                    total += t.elapsed();
                }
                total
            });
            black_box(acc);
        });
    }
    g.finish();
    if let Some((book, _)) = &state {
        let c = book.counters();
        println!(
            "synthetic market: {} live orders, {} books, {} unknown refs, {} refused, \
             {} level growths, {:.1} MB held",
            book.live_orders(),
            book.locates().count(),
            c.unknown_refs,
            c.capacity_exhausted,
            c.level_growths,
            book.memory_bytes() as f64 / 1e6
        );
    }
}

/// Passes of the AAPL session the book service bench cycles through.
const SERVICE_PASSES: u64 = 16;

/// One pass of the AAPL session as normalized envelopes, its order references shifted by
/// `(pass + 1) << 40` (AAPL's references stay one in a few hundred of the market's, and each
/// pass lands on other order table lines), closed by deletes of the orders still resting.
fn service_pass(pass: u64) -> Vec<Vec<u8>> {
    use mdbus_codecs::nasdaq::itch::{self, MessageFields as M};
    use mdbus_codecs::nasdaq::normalize::Normalizer;
    let shift = (pass + 1) << 40;
    let mut norm = Normalizer::new();
    let mut live = std::collections::HashMap::<u64, (u16, u32)>::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    let mut push = |f: &M, out: &mut Vec<Vec<u8>>| {
        let n = f.encode(&mut buf).expect("encode");
        let m = itch::decode(&buf[..n]).expect("decode");
        let seq = out.len() as u64 + 1;
        out.push(norm.normalize(&m, seq, 0).to_vec());
    };
    let mut last_ts = 0;
    for (_, m) in Stream::new(AAPL) {
        let Ok(m) = m else { continue };
        last_ts = m.timestamp();
        let mut f = m.to_fields();
        match &mut f {
            M::AddOrder(x) => x.order_reference_number += shift,
            M::AddOrderMpid(x) => x.order_reference_number += shift,
            M::OrderExecuted(x) => x.order_reference_number += shift,
            M::OrderExecutedWithPrice(x) => x.order_reference_number += shift,
            M::OrderCancel(x) => x.order_reference_number += shift,
            M::OrderDelete(x) => x.order_reference_number += shift,
            M::OrderReplace(x) => {
                x.original_order_reference_number += shift;
                x.new_order_reference_number += shift;
            }
            _ => {}
        }
        push(&f, &mut out);
        let reduce = |live: &mut std::collections::HashMap<u64, (u16, u32)>, r, n: u32| {
            if let Some((_, s)) = live.get_mut(&r) {
                *s = s.saturating_sub(n);
                if *s == 0 {
                    live.remove(&r);
                }
            }
        };
        let buf = &mut [0u8; 64];
        let n = f.encode(buf).expect("encode");
        match itch::decode(&buf[..n])
            .ok()
            .as_ref()
            .and_then(OrderEvent::from_itch)
        {
            Some(OrderEvent::Add {
                locate,
                order_ref,
                shares,
                ..
            }) => {
                live.insert(order_ref, (locate, shares));
            }
            Some(
                OrderEvent::Execute {
                    order_ref, shares, ..
                }
                | OrderEvent::ExecuteWithPrice {
                    order_ref, shares, ..
                }
                | OrderEvent::Cancel {
                    order_ref, shares, ..
                },
            ) => reduce(&mut live, order_ref, shares),
            Some(OrderEvent::Delete { order_ref, .. }) => {
                live.remove(&order_ref);
            }
            Some(OrderEvent::Replace {
                locate,
                old_ref,
                new_ref,
                shares,
                ..
            }) if live.remove(&old_ref).is_some() && shares > 0 => {
                live.insert(new_ref, (locate, shares));
            }
            _ => {}
        }
    }
    let mut rest: Vec<_> = live.into_iter().collect();
    rest.sort_unstable();
    for (order_ref, (locate, _)) in rest {
        let d = M::OrderDelete(itch::OrderDeleteFields {
            stock_locate: locate,
            tracking_number: 0,
            timestamp: last_ts,
            order_reference_number: order_ref,
        });
        push(&d, &mut out);
    }
    out
}

/// The book service over the AAPL session with sparse order references, read from an input
/// stream in turns of 64 records, publishing into rings nobody reads: `poll` (order slots
/// prefetched one record ahead) beside the same batches handed to `handle` one by one.
fn bench_service(c: &mut Criterion) {
    use mdbus_bus::{Bus, StreamConfig, SubscribeOptions, Subscriber, Trust};
    use mdbus_feed_handlers::bookstream::{BookService, BookServiceConfig, Polled, output_ring};

    let mut g = c.benchmark_group("book_service_aapl_sparse");
    let passes: Vec<Vec<Vec<u8>>> = (0..SERVICE_PASSES).map(service_pass).collect();
    g.throughput(Throughput::Elements(passes[0].len() as u64));
    // Rings in shared memory, as in production: on a disk file system every ring page is
    // written back and write-faulted again, which this bench would measure instead.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("temp dir");
    let bus = Bus::with_root(dir.path()).expect("bus");
    let input_ring = StreamConfig {
        capacity: 16 << 20,
        prefault: true,
        ..output_ring()
    };
    for (name, book) in [
        (
            "2MB_table",
            BookConfig {
                max_orders: 1 << 16,
                max_instruments: 16,
                levels_per_side_hint: 256,
            },
        ),
        ("nasdaq_day_config", BookConfig::nasdaq_day()),
    ] {
        for pipelined in [false, true] {
            let id = format!("{}/{name}", if pipelined { "poll" } else { "handle" });
            g.bench_function(id.as_str(), |b| {
                let feed = format!("in-{}", id.replace('/', "-"));
                let mut publisher = bus.publisher(&feed, &input_ring).expect("publisher");
                // SAFETY: the input stream is written only by `publisher` below, with envelopes
                // built by the normalizer's `schema::Encoder` (`service_pass`).
                let trust = unsafe { Trust::publisher() };
                let options = SubscribeOptions {
                    trust,
                    ..SubscribeOptions::default()
                };
                let mut input: Subscriber = bus.subscriber(&feed, &options).expect("subscriber");
                let config = BookServiceConfig {
                    book,
                    output: StreamConfig {
                        prefault: true,
                        ..output_ring()
                    },
                    publish_levels: true,
                    ..BookServiceConfig::default()
                };
                let mut svc = BookService::new(&bus, &feed, &config).expect("service");
                let mut pass = 0;
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let envelopes = &passes[pass % passes.len()];
                        pass += 1;
                        for e in envelopes {
                            publisher.publish_envelope(e).expect("publish");
                        }
                        let t = Instant::now();
                        if pipelined {
                            while let Polled::Worked(_) = svc.poll(&mut input, 64).expect("poll") {}
                        } else {
                            while input
                                .poll_event_batch(64, |ev| {
                                    svc.handle(&ev.envelope());
                                })
                                .expect("poll")
                                > 0
                            {}
                        }
                        total += t.elapsed();
                    }
                    total
                });
                let c = svc.builder().counters();
                assert_eq!(c.unknown_refs + c.duplicate_adds + c.capacity_exhausted, 0);
            });
        }
    }
    g.finish();
}

/// `VmHWM` (peak resident set) and `VmRSS` of this process, from `/proc/self/status`.
fn rss() -> Option<(String, String)> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Events ahead of the one applied whose order slots and book `decode+prefetch+apply` loads.
const DAY_AHEAD: usize = 16;

/// One pass of a whole file through a builder on the decoding thread; messages decoded.
fn day_pass(bytes: &[u8], book: &mut BookBuilder, ahead: bool, acc: &mut u64) -> u64 {
    let mut n = 0u64;
    let mut sink = sink(acc);
    if !ahead {
        for (_, m) in Stream::new(bytes) {
            n += 1;
            if let Some(ev) = m.ok().as_ref().and_then(OrderEvent::from_itch) {
                book.apply(&ev, &mut sink);
            }
        }
        return n;
    }
    // A ring of the events decoded but not yet applied.
    let mut ring = [None::<OrderEvent>; DAY_AHEAD];
    let mut at = 0;
    for (_, m) in Stream::new(bytes) {
        n += 1;
        let Some(ev) = m.ok().as_ref().and_then(OrderEvent::from_itch) else {
            continue;
        };
        book.prefetch(&ev);
        if let Some(due) = ring[at].replace(ev) {
            book.apply(&due, &mut sink);
        }
        at = (at + 1) % DAY_AHEAD;
    }
    for i in 0..DAY_AHEAD {
        if let Some(due) = ring[(at + i) % DAY_AHEAD].take() {
            book.apply(&due, &mut sink);
        }
    }
    n
}

fn bench_day_file(c: &mut Criterion) {
    let Some(path) = std::env::var_os("MDBUS_BOOK_DAY") else {
        return;
    };
    let bytes = std::fs::read(&path).expect("MDBUS_BOOK_DAY: a readable ITCH file");
    let (mut messages, mut adds, mut locates) = (0u64, 0usize, [false; 1 << 16]);
    for m in Stream::new(&bytes).filter_map(|(_, m)| m.ok()) {
        messages += 1;
        adds += usize::from(matches!(m.msg_type(), b'A' | b'F' | b'U'));
        locates[usize::from(m.stock_locate())] = true;
    }
    let config = BookConfig {
        max_orders: adds.max(1),
        max_instruments: locates.iter().filter(|&&x| x).count().max(1),
        levels_per_side_hint: 128,
    };
    let mut g = c.benchmark_group("book_day_file");
    g.throughput(Throughput::Elements(messages));
    g.sample_size(10);
    for (id, ahead) in [("decode+apply", false), ("decode+prefetch+apply", true)] {
        g.bench_function(id, |b| {
            let mut book = BookBuilder::new(config).expect("config");
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut acc = 0u64;
                for _ in 0..iters {
                    book.reset();
                    let t = Instant::now();
                    black_box(day_pass(black_box(&bytes), &mut book, ahead, &mut acc));
                    total += t.elapsed();
                }
                black_box(acc);
                total
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench,
    bench_levels,
    bench_market,
    bench_service,
    bench_day_file
);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let mb = |c: BookConfig| c.memory_bytes() as f64 / 1e6;
    println!(
        "preallocated: sample config {:.1} MB, nasdaq_day config {:.1} MB",
        mb(sample_config()),
        mb(BookConfig::nasdaq_day())
    );
    match rss() {
        Some((hwm, now)) => println!("peak RSS (VmHWM) {hwm}, RSS now {now}"),
        None => println!("peak RSS: /proc/self/status not available"),
    }
}
