//! Proves the replay and the book service allocate nothing per message: a counting global
//! allocator (its own test binary) counts the allocations of the measuring thread.
//!
//! * The book service handling the whole AAPL session (10,000 real envelopes, publishing
//!   levels, BBOs and trades into rings) allocates nothing at all.
//! * A replay of three passes of the session allocates exactly as much as a replay of one:
//!   whatever it allocates (the report at the end) does not grow with the messages.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use mdbus_bus::{Bus, SubscribeOptions};
use mdbus_codecs::itch::Stream;
use mdbus_codecs::normalize::Normalizer;
use mdbus_feed_handlers::book::BookConfig;
use mdbus_feed_handlers::bookstream::{BookService, BookServiceConfig, output_ring};
use mdbus_feed_handlers::replay::{ReplayOptions, Replayer, Source, replay_ring};

struct Counting;

thread_local! {
    /// Allocations made by this thread while counting is on (`None`: not counting).
    static COUNT: Cell<Option<u64>> = const { Cell::new(None) };
}

fn note_allocation() {
    // `try_with`: the allocator may run while this thread's locals are being torn down.
    let _ = COUNT.try_with(|c| {
        if let Some(n) = c.get() {
            c.set(Some(n + 1));
        }
    });
}

// SAFETY: defers every operation to `System`, unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns how many allocations this thread made meanwhile.
fn allocations_during<T>(f: impl FnOnce() -> T) -> (u64, T) {
    COUNT.with(|c| c.set(Some(0)));
    let r = f();
    (COUNT.with(|c| c.replace(None)).expect("counting was on"), r)
}

const AAPL: &[u8] = include_bytes!("../../codecs/testdata/itch/aapl-2020-01-30-10k.itch");

#[test]
fn the_book_service_allocates_nothing_per_message() {
    // The session's envelopes, normalized up front.
    let mut norm = Normalizer::new();
    let envelopes: Vec<Vec<u8>> = Stream::new(AAPL)
        .enumerate()
        .map(|(i, (_, m))| norm.normalize(&m.unwrap(), i as u64 + 1, 0).to_vec())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let config = BookServiceConfig {
        book: BookConfig {
            max_orders: 4096,
            max_instruments: 64,
            levels_per_side_hint: 256,
        },
        output: output_ring(),
        publish_levels: true,
    };
    let mut svc = BookService::new(&bus, "aapl", &config).unwrap();
    // Subscribers on both outputs, so the service publishes into rings that are read.
    let _book = bus
        .subscriber("aapl.book", &SubscribeOptions::default())
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

fn replay_allocations(passes: usize) -> (u64, u64) {
    let bytes: &'static [u8] = Box::leak(AAPL.repeat(passes).into_boxed_slice());
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let source = Source::Bytes {
        name: "aapl".into(),
        bytes,
    };
    let r = Replayer::open(&source, &bus, "f", &replay_ring(), ReplayOptions::default()).unwrap();
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
