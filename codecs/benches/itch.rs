//! ITCH 5.0 decode throughput on real data: the first 10,000 AAPL messages of 2020-01-30.
//!
//! * `mdbus/view`: walk the length-prefixed stream and decode each message into its zero-copy
//!   view, reading the common header fields.
//! * `mdbus/all_fields`: the same, copying every field of every message out (`to_fields`).
//! * `itchy/parse`: the `itchy` crate parsing the same bytes into its owned messages.
//!
//! `cargo bench -p mdbus-codecs --bench itch`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mdbus_codecs::nasdaq::itch::Stream;

const AAPL: &[u8] = include_bytes!("../testdata/itch/aapl-2020-01-30-10k.itch");
const MESSAGES: u64 = 10_000;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("itch_decode_aapl_10k");
    g.throughput(Throughput::Elements(MESSAGES));

    g.bench_function("mdbus/view", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for m in Stream::new(black_box(AAPL)).filter_map(|(_, m)| m.ok()) {
                acc = acc
                    .wrapping_add(m.timestamp())
                    .wrapping_add(u64::from(m.stock_locate()))
                    .wrapping_add(u64::from(m.msg_type()));
            }
            assert_ne!(acc, 0);
            acc
        })
    });

    g.bench_function("mdbus/all_fields", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for m in Stream::new(black_box(AAPL)).filter_map(|(_, m)| m.ok()) {
                black_box(m.to_fields());
                n += 1;
            }
            assert_eq!(n, MESSAGES);
            n
        })
    });

    g.bench_function("itchy/parse", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for m in itchy::MessageStream::from_reader(black_box(AAPL)).flatten() {
                black_box(m);
                n += 1;
            }
            assert_eq!(n, MESSAGES);
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
