//! Order book builder throughput on real data: the first 10,000 AAPL messages of 2020-01-30
//! (9,945 book events), and the memory it takes.
//!
//! * `apply`: the pre-decoded events applied to a book sized for the sample (reset, untimed,
//!   between passes).
//! * `decode+apply`: from the raw length-prefixed bytes: decode, convert, apply.
//! * `apply/nasdaq_day_table`: the events applied to a builder sized for a full Nasdaq day
//!   (`BookConfig::nasdaq_day`, 10 million orders); each pass shifts the order references so
//!   its orders are new, and the orders every pass leaves resting pile up, so the order table
//!   holds hundreds of thousands to millions of live orders spread over 320 MB, as in a day.
//!
//! Throughput is in messages (book events) per second. At the end the process's peak resident
//! memory (`VmHWM`) is printed beside the preallocated sizes.
//!
//! `cargo bench -p mdbus-feed-handlers --bench book -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use mdbus_codecs::itch::Stream;
use mdbus_feed_handlers::book::{BookBuilder, BookConfig, BookUpdate, OrderEvent};

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

fn with_refs_shifted(ev: &OrderEvent, by: u64) -> OrderEvent {
    let mut ev = *ev;
    match &mut ev {
        OrderEvent::Add { order_ref, .. }
        | OrderEvent::Execute { order_ref, .. }
        | OrderEvent::ExecuteWithPrice { order_ref, .. }
        | OrderEvent::Cancel { order_ref, .. }
        | OrderEvent::Delete { order_ref, .. }
        | OrderEvent::Invalid { order_ref, .. } => *order_ref += by,
        OrderEvent::Replace {
            old_ref, new_ref, ..
        } => {
            *old_ref += by;
            *new_ref += by;
        }
        OrderEvent::Trade { .. } => {}
    }
    ev
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

    g.bench_function("apply/nasdaq_day_table", |b| {
        let mut book = BookBuilder::new(BookConfig::nasdaq_day()).expect("config");
        let mut pass = 0u64;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut acc = 0u64;
            for _ in 0..iters {
                pass += 1;
                // Sample references stay below 2^40; each pass gets its own range.
                let shift = pass << 40;
                let t = Instant::now();
                for ev in black_box(&evs) {
                    book.apply(&with_refs_shifted(ev, shift), &mut sink(&mut acc));
                }
                total += t.elapsed();
            }
            black_box(acc);
            total
        });
        let c = book.counters();
        println!(
            "nasdaq_day_table: {} passes, {} live orders at the end, {} refused (capacity)",
            pass,
            book.live_orders(),
            c.capacity_exhausted
        );
    });
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

criterion_group!(benches, bench);

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
