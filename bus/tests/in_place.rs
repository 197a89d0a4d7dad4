//! Typed reads hand out views over the ring itself only while the subscriber holds its
//! lossless slot: a subscriber without one, or one whose slot the publisher took back (its pid
//! looked dead), gets validated copies, and a record overwritten under it is reported lost,
//! never delivered with someone else's bytes.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use mdbus_bus::schema::{AddOrderFields, Encoder, HeaderFields, Side};
use mdbus_bus::{
    Bus, Mode, Publisher, ReceiveError, StreamConfig, SubscribeOptions, Subscriber, Trust,
};

/// Ring bytes of every record published here: envelopes are padded to this minus the
/// 16-byte record header, so records sit at the same offsets on every lap.
const RECORD: usize = 128;
const CAPACITY: usize = 4096;

/// An add-order envelope with header seq `1000 + i`, padded to `RECORD - 16` bytes.
fn envelope(encoder: &mut Encoder, i: u64) -> Vec<u8> {
    let header = HeaderFields {
        seq: 1000 + i,
        exchange_ts_ns: 34_200_000_000_000 + i,
        stock_locate: 13,
        ..HeaderFields::default()
    };
    let body = AddOrderFields {
        order_reference_number: 500 + i,
        buy_sell_indicator: Side::Buy,
        shares: 100,
        stock: *b"AAPL    ",
        price: 3_201_400,
    };
    let mut bytes = encoder.encode(&header, &body).as_bytes().to_vec();
    assert!(
        bytes.len() <= RECORD - 16,
        "envelope of {} bytes",
        bytes.len()
    );
    bytes.resize(RECORD - 16, 0);
    bytes
}

fn setup(dir: &Path, lossless: bool) -> (Bus, Publisher, Subscriber) {
    let bus = Bus::with_root(dir).unwrap();
    let config = StreamConfig {
        mode: Mode::Lossless,
        capacity: CAPACITY,
        max_msg_len: 512,
        ..StreamConfig::default()
    };
    let publisher = bus.publisher("in-place", &config).unwrap();
    let options = SubscribeOptions {
        lossless,
        // Trusted reads follow offsets without checks: exactly the reads that must never see
        // bytes change under them.
        // SAFETY: every envelope-typed record here is built by `schema::Encoder` (then padded
        // with zeros, which a view never reads).
        trust: unsafe { Trust::publisher() },
        ..SubscribeOptions::default()
    };
    let subscriber = bus.subscriber("in-place", &options).unwrap();
    (bus, publisher, subscriber)
}

/// Publishes one lap of the ring: envelopes 0 to `CAPACITY / RECORD - 1`, unread.
fn fill_ring(publisher: &mut Publisher, encoder: &mut Encoder) {
    for i in 0..(CAPACITY / RECORD) as u64 {
        publisher.publish_envelope(&envelope(encoder, i)).unwrap();
    }
}

/// Asserts that a poll reported every record from the first (seq 0) on lost.
#[track_caller]
fn assert_lost_from_the_first<T: std::fmt::Debug>(r: &Result<T, ReceiveError>) {
    assert!(
        matches!(
            r,
            Err(ReceiveError::Overrun {
                first_lost_seq: 0,
                ..
            })
        ),
        "{r:?}"
    );
}

/// Writes a pid that cannot exist into consumer slot 0 of the stream's segment, as if the
/// subscriber's process had died (the file is the shared mapping's backing).
fn fake_dead_owner(bus: &Bus) {
    let path = bus.stream_path("in-place").unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let off = mdbus_shm::layout::HEADER_FIXED_SIZE as u64;
    let mut ctl = [0u8; 8];
    file.read_exact_at(&mut ctl, off).unwrap();
    let ctl = u64::from_le_bytes(ctl);
    assert_eq!(ctl & 0xff, 2, "slot 0 is active");
    let dead = (ctl & 0xffff_ffff) | (0x8000_0000u64 << 32);
    file.write_all_at(&dead.to_le_bytes(), off).unwrap();
}

/// Claims room for one more record once the publisher has reaped the slot that held it back
/// (it checks liveness at most once a millisecond), writes `payload` into it and commits it
/// if `commit`, else leaves it uncommitted.
fn overwrite_after_reap(publisher: &mut Publisher, payload: &[u8], commit: bool) {
    for _ in 0..10_000 {
        if let Ok(mut claim) = publisher.claim(payload.len(), mdbus_bus::ENVELOPE_MSG_TYPE) {
            claim.copy_from_slice(payload);
            if commit {
                claim.commit();
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the publisher never reaped the slot");
}

/// A lossless stream read without a slot: the publisher laps the subscriber freely, so the
/// view must be over a copy: it does not change while the publisher rewrites the ring.
#[test]
fn unregistered_subscriber_of_a_lossless_stream_reads_copies() {
    let dir = tempfile::tempdir().unwrap();
    let (_bus, mut publisher, mut subscriber) = setup(dir.path(), false);
    assert!(!subscriber.is_registered());
    let mut encoder = Encoder::new();
    publisher
        .publish_envelope(&envelope(&mut encoder, 0))
        .unwrap();
    let later: Vec<Vec<u8>> = (1..=2 * (CAPACITY / RECORD) as u64)
        .map(|i| envelope(&mut encoder, i))
        .collect();
    let mut seen = Vec::new();
    let r = subscriber.poll_event(|e| {
        seen.push(e.envelope().header().seq());
        // Two laps of new records, at the same offsets, while the view is held.
        for bytes in &later {
            publisher.publish_envelope(bytes).unwrap();
        }
        seen.push(e.envelope().header().seq());
    });
    assert_eq!(
        seen,
        vec![1000, 1000],
        "the view changed under the callback"
    );
    assert_eq!(r, Ok(true));
}

/// The publisher reaped the subscriber's slot before it read, and wrote another envelope
/// over its first unread record: the subscriber reports the loss instead of delivering the
/// other envelope as record 0.
#[test]
fn reaped_subscriber_reports_the_loss_instead_of_reading_overwritten_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, mut publisher, mut subscriber) = setup(dir.path(), true);
    let mut encoder = Encoder::new();
    fill_ring(&mut publisher, &mut encoder);
    fake_dead_owner(&bus);
    // Room for one more record: its payload lands on record 0's (not committed yet).
    overwrite_after_reap(&mut publisher, &envelope(&mut encoder, 77), false);
    let mut seen = Vec::new();
    let r = subscriber.poll_event(|e| seen.push((e.seq(), e.envelope().header().seq())));
    assert!(
        seen.iter().all(|&(seq, header)| header == 1000 + seq),
        "delivered someone else's bytes: {seen:?}"
    );
    assert_lost_from_the_first(&r);
    assert!(!subscriber.is_registered());
    // It reads on as a reader without a slot: validated copies, in order.
    let mut next = None;
    while subscriber
        .poll_event(|e| {
            assert_eq!(e.envelope().header().seq(), 1000 + e.seq());
            next = Some(e.seq());
        })
        .unwrap_or(true)
    {}
    assert_eq!(next, Some((CAPACITY / RECORD) as u64 - 1));
}

/// The slot is reaped while the callback holds a view, and the publisher rewrites the record:
/// the poll reports the record lost, so the caller discards what it derived.
#[test]
fn slot_reaped_during_the_callback_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, mut publisher, mut subscriber) = setup(dir.path(), true);
    let mut encoder = Encoder::new();
    fill_ring(&mut publisher, &mut encoder);
    let other = envelope(&mut encoder, 77);
    let mut seen = None;
    let r = subscriber.poll_event_batch(4, |e| {
        if seen.is_none() {
            seen = Some(e.seq());
            fake_dead_owner(&bus);
            overwrite_after_reap(&mut publisher, &other, true);
        }
    });
    assert_eq!(seen, Some(0));
    assert_lost_from_the_first(&r);
}
