//! Publishing and polling allocate nothing after setup: a counting global allocator watches a
//! million messages through in-process and file-backed rings, in one thread and in two.
//! (Its own test binary, without the libtest harness, so nothing else allocates meanwhile.)
//! Only threads doing ring work count: each arms itself for the span of that work, so the
//! runtime's own bookkeeping (a thread starting or ending) is not charged to the ring.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mdbus_shm::{
    ClaimError, Consumer, ConsumerOptions, Mode, Producer, Resync, RingConfig, StartAt, in_process,
};

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread is doing the ring work being measured.
    static THREAD_ARMED: Cell<bool> = const { Cell::new(false) };
}

fn arm_this_thread(on: bool) {
    THREAD_ARMED.with(|a| a.set(on));
}

fn count() {
    if ARMED.load(Ordering::Relaxed) && THREAD_ARMED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator unchanged; counting has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const MESSAGES: u64 = 1_000_000;

fn cfg(mode: Mode) -> RingConfig {
    RingConfig {
        capacity: 64 * 1024,
        max_msg_len: 1024,
        mode,
        ..RingConfig::default()
    }
}

fn opts() -> ConsumerOptions {
    ConsumerOptions {
        start: StartAt::Oldest,
        resync: Resync::Oldest,
        lossless: true,
    }
}

/// Runs `f` with the counter armed and returns how many allocations it made.
fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    arm_this_thread(true);
    f();
    arm_this_thread(false);
    ARMED.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// One thread, interleaved: batches of claim/commit and `publish`, then `poll_batch`, `poll`
/// and `poll_copy`. Returns the sum of the first payload bytes (to keep the work observable).
fn interleaved(p: &mut Producer, c: &mut Consumer) -> u64 {
    let payload = [7u8; 64];
    let mut copy = [0u8; 1024];
    let mut sum = 0u64;
    let mut seq = 0u64;
    while seq < MESSAGES {
        for i in 0..32 {
            if i % 2 == 0 {
                let mut claim = p.claim(40, 1).unwrap();
                claim.fill(seq as u8);
                claim.commit();
            } else {
                p.publish(2, &payload).unwrap();
            }
            seq += 1;
        }
        p.heartbeat();
        let n = c
            .poll_batch(30, |r| sum += u64::from(r.payload()[0]))
            .unwrap();
        assert_eq!(n, 30);
        assert!(c.poll(|r| sum += r.seq()).unwrap());
        let info = c.poll_copy(&mut copy).unwrap().unwrap();
        sum += info.len as u64;
    }
    assert_eq!(c.next_seq(), MESSAGES);
    sum
}

fn main() {
    // The counter itself works: an allocation (and its free) in the window is seen.
    let n = allocations_in(|| {
        std::hint::black_box(vec![1u8; 16]);
    });
    assert_eq!(
        n, 2,
        "the counting allocator missed an allocation or its free"
    );

    // In-process broadcast ring, one thread.
    let (mut p, f) = in_process(&cfg(Mode::Broadcast)).unwrap();
    let mut c = f.consumer(&opts()).unwrap();
    let n = allocations_in(|| {
        interleaved(&mut p, &mut c);
    });
    assert_eq!(n, 0, "in-process broadcast: {n} allocations");
    println!("in-process broadcast, one thread: {MESSAGES} messages, 0 allocations");

    // File-backed ring, one thread.
    let dir = std::env::temp_dir().join(format!("mdbus-shm-no-alloc-{}", std::process::id()));
    let path = dir.join("stream");
    let mut p = Producer::create(&path, &cfg(Mode::Broadcast)).unwrap();
    let mut c = Consumer::open(&path, &opts()).unwrap();
    let n = allocations_in(|| {
        interleaved(&mut p, &mut c);
    });
    assert_eq!(n, 0, "file-backed: {n} allocations");
    println!("file-backed broadcast, one thread: {MESSAGES} messages, 0 allocations");
    drop((p, c));
    std::fs::remove_dir_all(&dir).unwrap();

    // In-process lossless ring, producer and consumer on two threads (back-pressure included).
    let (mut p, f) = in_process(&cfg(Mode::Lossless)).unwrap();
    let mut c = f.consumer(&opts()).unwrap();
    let ready = Arc::new(AtomicBool::new(false));
    let go = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let (ready2, go2, done2) = (Arc::clone(&ready), Arc::clone(&go), Arc::clone(&done));
    let reader = std::thread::spawn(move || {
        // Thread start-up (std's per-thread state) is setup too: signal once past it.
        ready2.store(true, Ordering::Release);
        while !go2.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        arm_this_thread(true);
        let mut next = 0u64;
        while next < MESSAGES {
            match c.poll(|r| assert_eq!(r.seq(), next)) {
                Ok(true) => next += 1,
                Ok(false) => std::hint::spin_loop(),
                Err(e) => panic!("{e:?}"),
            }
        }
        arm_this_thread(false);
        done2.store(true, Ordering::Release);
        c
    });
    while !ready.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let payload = [3u8; 100];
    let n = allocations_in(|| {
        go.store(true, Ordering::Release);
        for _ in 0..MESSAGES {
            loop {
                match p.publish(9, &payload) {
                    Ok(_) => break,
                    Err(ClaimError::BackPressured) => std::hint::spin_loop(),
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
        while !done.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
    });
    let c = reader.join().unwrap();
    assert_eq!(n, 0, "two threads: {n} allocations");
    assert_eq!(c.stats().delivered, MESSAGES);
    println!("in-process lossless, two threads: {MESSAGES} messages, 0 allocations");
}
