//! `SourceMerge`: two streams written in source order by one thread are read back as one, in
//! exactly that order, while the writer runs (the reader often finds a stream empty), with
//! ties in the order the streams were given; closed streams end the merge; records typed reads
//! skip are skipped by the merge too.

use mdbus_bus::merge::SourceMerge;
use mdbus_bus::schema::{AddOrderFields, Encoder, HeaderFields, Side};
use mdbus_bus::{Bus, Mode, StreamConfig, SubscribeOptions, Trust, WaitStrategy};
use std::time::Duration;

fn envelope(encoder: &mut Encoder, seq: u64, tag: u64) -> Vec<u8> {
    let header = HeaderFields {
        seq,
        stock_locate: 13,
        ..HeaderFields::default()
    };
    let body = AddOrderFields {
        order_reference_number: tag,
        buy_sell_indicator: Side::Buy,
        shares: 100,
        stock: *b"AAPL    ",
        price: 3_201_400,
    };
    encoder.encode(&header, &body).as_bytes().to_vec()
}

/// What the writer sends for source message `seq`: on A, on B, or on both (A first).
fn plan(seq: u64) -> (bool, bool) {
    // A small deterministic scramble, so runs of each kind occur.
    let x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61;
    match x {
        0..=2 => (true, false),
        3..=5 => (false, true),
        _ => (true, true),
    }
}

fn run(mode: Mode, trust: Trust) {
    run_with(mode, trust, true);
    run_with(mode, trust, false);
}

/// `concurrent`: the reader merges while the writer writes; else once everything is written
/// (every stream holds many records at once).
fn run_with(mode: Mode, trust: Trust, concurrent: bool) {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let config = StreamConfig {
        mode,
        capacity: 1 << 20,
        ..StreamConfig::default()
    };
    let mut a = bus.publisher("a", &config).unwrap();
    let mut b = bus.publisher("b", &config).unwrap();
    let options = SubscribeOptions {
        trust,
        ..SubscribeOptions::default()
    };
    let mut merge = SourceMerge::new([
        bus.subscriber("a", &options).unwrap(),
        bus.subscriber("b", &options).unwrap(),
    ]);
    // Written ahead of the reader, everything must fit in the ring at once: a lossless
    // writer would wait forever for room, and a broadcast one would lap the records.
    let messages = if concurrent && !cfg!(debug_assertions) {
        30_000
    } else {
        3_000
    };
    let mut expected = Vec::new();
    for seq in 1..=messages {
        let (on_a, on_b) = plan(seq);
        if on_a {
            expected.push((0usize, seq));
        }
        if on_b {
            expected.push((1usize, seq));
        }
    }
    std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let mut encoder = Encoder::new();
            for seq in 1..=messages {
                let (on_a, on_b) = plan(seq);
                if on_a {
                    while a.publish_envelope(&envelope(&mut encoder, seq, 1)).is_err() {
                        assert!(
                            concurrent,
                            "the ring is full with no reader: make it larger"
                        );
                        std::thread::yield_now();
                    }
                }
                if seq % 97 == 0 {
                    // A record typed reads skip, between two envelopes.
                    b.publish(42, b"not an envelope").unwrap();
                }
                if on_b {
                    while b.publish_envelope(&envelope(&mut encoder, seq, 2)).is_err() {
                        assert!(
                            concurrent,
                            "the ring is full with no reader: make it larger"
                        );
                        std::thread::yield_now();
                    }
                }
                if seq % 64 == 0 {
                    std::thread::yield_now();
                }
            }
            // Dropping the publishers closes both streams.
        });
        if !concurrent {
            writer.join().unwrap();
        }
        let mut got = Vec::with_capacity(expected.len());
        while !merge.all_ended() {
            let polled = merge
                .poll(|k, e| {
                    let env = e.envelope();
                    let tag = env
                        .event_as_add_order()
                        .unwrap()
                        .body()
                        .order_reference_number();
                    assert_eq!(tag, k as u64 + 1, "an event of stream {k} from the other");
                    got.push((k, env.header().seq()));
                })
                .unwrap();
            if !polled {
                merge.wait(
                    &WaitStrategy::SpinThenYield { spins: 10 },
                    Duration::from_micros(50),
                );
            }
        }
        assert_eq!(got.len(), expected.len());
        assert_eq!(got, expected, "not in source order");
    });
    let [a, b] = merge.into_inner();
    assert_eq!(a.stats().foreign, 0);
    assert_eq!(b.stats().foreign, messages / 97);
}

#[test]
fn lossless_streams_merge_in_source_order() {
    run(Mode::Lossless, Trust::VERIFY);
}

#[test]
fn trusted_lossless_streams_merge_in_source_order() {
    // SAFETY: the only envelope records on these streams come from `Encoder` above.
    run(Mode::Lossless, unsafe { Trust::publisher() });
}

#[test]
fn broadcast_streams_merge_in_source_order() {
    // A ring the reader keeps up with (1 MiB for a few hundred KiB in flight at most).
    run(Mode::Broadcast, Trust::VERIFY);
}

/// `end` takes a stream out: nothing more is delivered from it.
#[test]
fn an_ended_stream_delivers_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let config = StreamConfig::default();
    let _a = bus.publisher("a", &config).unwrap();
    let mut b = bus.publisher("b", &config).unwrap();
    let options = SubscribeOptions::default();
    let mut merge = SourceMerge::new([
        bus.subscriber("a", &options).unwrap(),
        bus.subscriber("b", &options).unwrap(),
    ]);
    let mut encoder = Encoder::new();
    b.publish_envelope(&envelope(&mut encoder, 5, 2)).unwrap();
    let mut got = Vec::new();
    assert!(
        merge
            .poll(|k, e| got.push((k, e.envelope().header().seq())))
            .unwrap()
    );
    assert_eq!(got, [(1, 5)]);
    merge.end(1);
    assert!(merge.is_ended(1) && !merge.all_ended());
    b.publish_envelope(&envelope(&mut encoder, 6, 2)).unwrap();
    assert!(
        !merge
            .poll(|_, _| panic!("an ended stream delivered"))
            .unwrap()
    );
}
