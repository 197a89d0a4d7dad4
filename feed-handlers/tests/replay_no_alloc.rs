//! Proves the replay and the book service allocate nothing per message: a counting global
//! allocator (its own test binary) counts the allocations of the measuring thread.
//!
//! * The book service handling the whole AAPL session (10,000 real envelopes, publishing
//!   levels, BBOs and trades into rings) allocates nothing at all, envelope by envelope and in
//!   `poll` turns read from an input stream, and in `run` with its counters published.
//! * A replay of three passes of the session allocates exactly as much as a replay of one:
//!   whatever it allocates (the report at the end) does not grow with the messages; the same
//!   with its counters published, which add no allocation.
//! * The books on the feed handler's thread: the book service fed the session's decoded
//!   messages allocates nothing at all, and a replay feeding it (its thread decoding,
//!   publishing, building the books and publishing their outputs) allocates as much for three
//!   passes as for one.

use std::sync::atomic::AtomicBool;

use mdbus_bus::{Bus, SubscribeOptions, WaitStrategy};
use mdbus_codecs::nasdaq::itch::Stream;
use mdbus_codecs::nasdaq::normalize::Normalizer;
use mdbus_feed_handlers::book::BookConfig;
use mdbus_feed_handlers::bookstream::{BookService, BookServiceConfig, Polled, output_ring};
use mdbus_feed_handlers::replay::{ReplayOptions, Replayer, Source, replay_ring};

/// Runs `f` and returns how many allocations this thread made meanwhile.
fn allocations_during<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let mut r = None;
    let n = allocation_counter::measure(|| r = Some(f())).count_total;
    (n, r.expect("the measured closure ran"))
}

const AAPL: &[u8] = include_bytes!("../../codecs/testdata/itch/aapl-2020-01-30-10k.itch");

/// The session's envelopes, normalized up front.
fn aapl_envelopes() -> Vec<Vec<u8>> {
    let mut norm = Normalizer::new();
    Stream::new(AAPL)
        .enumerate()
        .map(|(i, (_, m))| norm.normalize(&m.unwrap(), i as u64 + 1, 0).to_vec())
        .collect()
}

/// A book service sized for the session, publishing levels.
fn service_config() -> BookServiceConfig {
    BookServiceConfig {
        book: BookConfig {
            max_orders: 4096,
            max_instruments: 64,
            levels_per_side_hint: 256,
        },
        output: output_ring(),
        publish_levels: true,
        ..BookServiceConfig::default()
    }
}

#[test]
fn the_book_service_allocates_nothing_per_message() {
    let envelopes = aapl_envelopes();
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let config = service_config();
    let mut svc = BookService::new(&bus, "aapl", &config).unwrap();
    // Subscribers on the book and levels outputs, so the service publishes into rings that are
    // read.
    let _book = bus
        .subscriber("aapl.book", &SubscribeOptions::default())
        .unwrap();
    let _levels = bus
        .subscriber("aapl.levels", &SubscribeOptions::default())
        .unwrap();
    let views: Vec<_> = envelopes
        .iter()
        .map(|e| mdbus_bus::schema::read_verified(e).unwrap())
        .collect();
    let (n, ()) = allocations_during(|| {
        for env in &views {
            svc.handle(env);
        }
    });
    assert_eq!(
        n,
        0,
        "allocations while handling 10,000 envelopes; {:?}",
        svc.builder().counters()
    );
    let st = svc.stats();
    assert_eq!(st.messages, 10_000);
    assert_eq!(st.trades_published, 1_089);
    assert!(st.bbos_published > 0 && st.levels_published > 0);
}

#[test]
fn book_service_poll_turns_allocate_nothing() {
    let envelopes = aapl_envelopes();
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let config = service_config();
    let mut publisher = bus.publisher("aapl", &output_ring()).unwrap();
    let mut input = bus
        .subscriber("aapl", &SubscribeOptions::default())
        .unwrap();
    let mut svc = BookService::new(&bus, "aapl", &config).unwrap();
    let _levels = bus
        .subscriber("aapl.levels", &SubscribeOptions::default())
        .unwrap();
    for e in &envelopes {
        publisher.publish_envelope(e).unwrap();
    }
    let (n, turns) = allocations_during(|| {
        let mut turns = 0u32;
        while let Polled::Worked(_) = svc.poll(&mut input, 64).unwrap() {
            turns += 1;
        }
        turns
    });
    assert_eq!(n, 0, "allocations in {turns} poll turns");
    let st = svc.stats();
    assert_eq!(st.messages, 10_000);
    assert_eq!(st.trades_published, 1_089);
    assert!(st.bbos_published > 0 && st.levels_published > 0);
}

#[test]
fn the_book_service_run_publishing_counters_allocates_nothing() {
    let envelopes = aapl_envelopes();
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let config = service_config();
    let mut publisher = bus.publisher("aapl", &output_ring()).unwrap();
    let mut input = bus
        .subscriber("aapl", &SubscribeOptions::default())
        .unwrap();
    let mut svc = BookService::new(&bus, "aapl", &config).unwrap();
    svc.publish_counters(&bus).unwrap();
    let _levels = bus
        .subscriber("aapl.levels", &SubscribeOptions::default())
        .unwrap();
    for e in &envelopes {
        publisher.publish_envelope(e).unwrap();
    }
    // Closed: `run` ends once it has read everything.
    drop(publisher);
    let stop = AtomicBool::new(false);
    let (n, st) =
        allocations_during(|| svc.run(&mut input, WaitStrategy::BusySpin, &stop).unwrap());
    assert_eq!(n, 0, "allocations in a run with counters");
    assert_eq!(st.messages, 10_000);
    assert_eq!(st.trades_published, 1_089);
}

fn replay_allocations(passes: usize) -> (u64, u64) {
    replay_allocations_with(passes, false)
}

/// [`replay_allocations`], publishing the replay's counters if `counters`.
fn replay_allocations_with(passes: usize, counters: bool) -> (u64, u64) {
    let bytes: &'static [u8] = Box::leak(AAPL.repeat(passes).into_boxed_slice());
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let source = Source::Bytes {
        name: "aapl".into(),
        bytes,
    };
    let mut r =
        Replayer::open(&source, &bus, "f", &replay_ring(), ReplayOptions::default()).unwrap();
    if counters {
        r.publish_counters(&bus).unwrap();
    }
    let (n, report) = allocations_during(|| r.run(&mut |_| {}).unwrap());
    (n, report.published)
}

#[test]
fn a_replay_allocates_nothing_per_message() {
    let (one, published) = replay_allocations(1);
    assert_eq!(published, 10_000);
    let (three, published) = replay_allocations(3);
    assert_eq!(published, 30_000);
    assert_eq!(one, three, "allocations grew with the messages");
}

#[test]
fn a_replay_publishing_counters_allocates_nothing_per_message() {
    let (one, published) = replay_allocations_with(1, true);
    assert_eq!(published, 10_000);
    let (three, published) = replay_allocations_with(3, true);
    assert_eq!(published, 30_000);
    assert_eq!(one, three, "allocations grew with the messages");
    assert_eq!(one, replay_allocations(1).0, "the counters allocate");
}

#[test]
fn the_book_service_fed_decoded_messages_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let mut svc = BookService::new(&bus, "aapl", &service_config()).unwrap();
    let _book = bus
        .subscriber("aapl.book", &SubscribeOptions::default())
        .unwrap();
    let _trades = bus
        .subscriber("aapl.trades", &SubscribeOptions::default())
        .unwrap();
    let messages: Vec<_> = Stream::new(AAPL).map(|(_, m)| m.unwrap()).collect();
    let flags = mdbus_bus::schema::EnvelopeFlags::Replayed;
    let (n, ()) = allocations_during(|| {
        for (i, m) in messages.iter().enumerate() {
            let seq = i as u64 + 1;
            svc.accept_itch(seq, 1_000 + seq, flags, m);
        }
        let header = mdbus_bus::schema::HeaderFields {
            seq: 10_001,
            flags,
            venue: mdbus_bus::schema::Venue::Nasdaq,
            ..Default::default()
        };
        svc.handle_end_of_session(&header);
    });
    assert_eq!(
        n,
        0,
        "allocations while handling 10,000 decoded messages; {:?}",
        svc.builder().counters()
    );
    let st = svc.stats();
    assert_eq!(st.messages, 10_000);
    assert_eq!(st.trades_published, 1_089);
    assert!(st.bbos_published > 0 && st.levels_published > 0 && st.ended);
}

/// A replay of `passes` passes of the session feeding a book service on its own thread:
/// (allocations during the run, messages published, the service's messages).
fn replay_with_books_allocations(passes: usize) -> (u64, u64, u64) {
    let bytes: &'static [u8] = Box::leak(AAPL.repeat(passes).into_boxed_slice());
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let source = Source::Bytes {
        name: "aapl".into(),
        bytes,
    };
    let svc = BookService::new(&bus, "f", &service_config()).unwrap();
    let r = Replayer::open(&source, &bus, "f", &replay_ring(), ReplayOptions::default())
        .unwrap()
        .with_book_service(svc)
        .unwrap();
    // Into output rings nobody reads, as a bench row does: nothing holds the replay back.
    let (n, (report, svc)) = allocations_during(|| r.run_with_book_service(&mut |_| {}).unwrap());
    let svc = svc.expect("the service comes back");
    assert!(svc.stats().ended);
    (n, report.published, svc.stats().messages)
}

#[test]
fn a_replay_building_books_on_its_thread_allocates_nothing_per_message() {
    let (one, published, messages) = replay_with_books_allocations(1);
    assert_eq!((published, messages), (10_000, 10_000));
    let (three, published, messages) = replay_with_books_allocations(3);
    assert_eq!((published, messages), (30_000, 30_000));
    assert_eq!(one, three, "allocations grew with the messages");
}

#[test]
fn the_counter_sees_allocations() {
    // The harness can fail: an allocation inside the measured closure is counted.
    let (n, ()) = allocations_during(|| {
        std::hint::black_box(vec![1u8; 16]);
    });
    assert_eq!(n, 1);
}
