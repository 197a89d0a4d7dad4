//! Typed reads: normalized envelopes published on a stream come back as FlatBuffers views, on
//! broadcast and lossless streams, verified or trusted; malformed and foreign records are
//! counted and skipped, never handed out.

use mdbus_bus::schema::{AddOrderFields, Encoder, HeaderFields, Side};
use mdbus_bus::{Bus, ENVELOPE_MSG_TYPE, Mode, StreamConfig, SubscribeOptions, Subscriber, Trust};

fn add_order(encoder: &mut Encoder, i: u64) -> Vec<u8> {
    let header = HeaderFields {
        seq: 1000 + i,
        exchange_ts_ns: 34_200_000_000_000 + i,
        recv_ts_ns: 7,
        stock_locate: 13,
        tracking_number: 2,
        ..HeaderFields::default()
    };
    let body = AddOrderFields {
        order_reference_number: 500 + i,
        buy_sell_indicator: if i.is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        },
        shares: 100 + i as u32,
        stock: *b"AAPL    ",
        price: 3_201_400 + i as u32,
    };
    encoder.encode(&header, &body).as_bytes().to_vec()
}

/// Drains `subscriber` with `poll_event`, or with `poll_event_batch(batch)` when `batch` is
/// given, returning (header seq, order ref, shares) triples.
fn drain(subscriber: &mut Subscriber, batch: Option<usize>) -> Vec<(u64, u64, u32)> {
    let mut out = Vec::new();
    let mut take = |event: mdbus_bus::Event<'_>| {
        let envelope = event.envelope();
        let add = envelope.event_as_add_order().expect("an add order");
        out.push((
            envelope.header().seq(),
            add.body().order_reference_number(),
            add.body().shares(),
        ));
    };
    match batch {
        None => while subscriber.poll_event(&mut take).unwrap() {},
        Some(max) => loop {
            let n = subscriber.poll_event_batch(max, &mut take).unwrap();
            assert!(n <= max, "a batch of {n} records for a maximum of {max}");
            if n == 0 {
                break;
            }
        },
    }
    out
}

fn run(mode: Mode, trust: Trust) {
    run_with(mode, trust, None);
    run_with(mode, trust, Some(1));
    run_with(mode, trust, Some(7));
}

fn run_with(mode: Mode, trust: Trust, batch: Option<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let config = StreamConfig {
        mode,
        ..StreamConfig::default()
    };
    let mut publisher = bus.publisher("typed", &config).unwrap();
    let options = SubscribeOptions {
        trust,
        ..SubscribeOptions::default()
    };
    let mut subscriber = bus.subscriber("typed", &options).unwrap();
    let mut encoder = Encoder::new();
    for i in 0..50 {
        publisher
            .publish_envelope(&add_order(&mut encoder, i))
            .unwrap();
        if i == 10 {
            // A record of another type, and one of the envelope type that is not an envelope.
            publisher.publish(99, b"not for typed readers").unwrap();
            if !trust.is_trusted() {
                publisher.publish(ENVELOPE_MSG_TYPE, &[0xff; 40]).unwrap();
            }
        }
    }
    let got = drain(&mut subscriber, batch);
    let expected: Vec<_> = (0..50)
        .map(|i| (1000 + i, 500 + i, 100 + i as u32))
        .collect();
    assert_eq!(got, expected);
    let stats = subscriber.stats();
    assert_eq!(stats.received, 50);
    assert_eq!(stats.foreign, 1);
    assert_eq!(stats.invalid, if trust.is_trusted() { 0 } else { 1 });
}

#[test]
fn broadcast_verified() {
    run(Mode::Broadcast, Trust::VERIFY);
}

#[test]
fn broadcast_trusted() {
    // SAFETY: the only envelope records on this stream come from `Encoder` above.
    run(Mode::Broadcast, unsafe { Trust::publisher() });
}

#[test]
fn lossless_verified() {
    run(Mode::Lossless, Trust::VERIFY);
}

#[test]
fn lossless_trusted() {
    // SAFETY: the only envelope records on this stream come from `Encoder` above.
    run(Mode::Lossless, unsafe { Trust::publisher() });
}

/// A lossless publisher waits on its subscribers' positions: a batched read publishes its
/// position once per batch, so a full ring gets room back after each batch.
#[test]
fn lossless_batches_give_the_publisher_room() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let config = StreamConfig {
        mode: Mode::Lossless,
        capacity: 4096,
        max_msg_len: 512,
        ..StreamConfig::default()
    };
    let mut publisher = bus.publisher("room", &config).unwrap();
    let mut subscriber = bus
        .subscriber("room", &SubscribeOptions::default())
        .unwrap();
    let mut encoder = Encoder::new();
    let mut published = 0u64;
    let mut seen = 0u64;
    for _round in 0..20 {
        // Fill the ring until the subscriber holds the publisher back.
        let mut filled = 0;
        while publisher
            .publish_envelope(&add_order(&mut encoder, published))
            .is_ok()
        {
            published += 1;
            filled += 1;
        }
        assert!(filled > 0, "a drained ring took nothing");
        while seen < published {
            let n = subscriber
                .poll_event_batch(5, |e| {
                    let add = e.envelope().event_as_add_order().unwrap();
                    assert_eq!(add.body().order_reference_number(), 500 + seen);
                    seen += 1;
                })
                .unwrap();
            assert!(n > 0, "records published but none read");
        }
    }
    assert_eq!(subscriber.stats().received, published);
}
