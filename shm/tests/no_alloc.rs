//! Publishing (single records and batches) and polling allocate nothing after setup: a counting global allocator watches a
//! million messages through in-process and file-backed rings, in one thread and in two.
//! (Its own test binary, without the libtest harness, so nothing else allocates meanwhile.)
//! Counting is per thread: each thread doing ring work (producer and consumer alike) measures
//! the span of that work and the counts are summed, so the runtime's own bookkeeping (a thread
//! starting or ending) is not charged to the ring.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mdbus_shm::{
    ClaimError, Consumer, ConsumerOptions, Mode, Producer, Resync, RingConfig, StartAt, in_process,
};

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

/// Runs `f` on this thread and returns how many allocations and frees this thread made meanwhile.
fn allocations_in(f: impl FnOnce()) -> usize {
    let info = allocation_counter::measure(f);
    // Every free is counted too: frees = allocations - net live allocations.
    let frees = info.count_total as i64 - info.count_current;
    (info.count_total as i64 + frees) as usize
}

/// One thread, interleaved: claim/commit, `publish` and `claim_batch` (written through
/// `payload_mut` and `fill`), then `poll_batch`, `poll` and `poll_copy`. Returns the sum of the
/// first payload bytes (to keep the work observable).
fn interleaved(p: &mut Producer, c: &mut Consumer) -> u64 {
    let payload = [7u8; 64];
    let mut copy = [0u8; 1024];
    let mut sum = 0u64;
    let mut seq = 0u64;
    while seq < MESSAGES {
        for i in 0..16 {
            if i % 2 == 0 {
                let mut claim = p.claim(40, 1).unwrap();
                claim.fill(seq as u8);
                claim.commit();
            } else {
                p.publish(2, &payload).unwrap();
            }
            seq += 1;
        }
        let mut batched = 0;
        while batched < 16 {
            let mut batch = p.claim_batch(64, 3, (16 - batched).min(5)).unwrap();
            if batched % 2 == 0 {
                for k in 0..batch.len() {
                    if let Some(b) = batch.payload_mut(k) {
                        b.copy_from_slice(&payload);
                    }
                }
            } else {
                batch.fill(|_, b| b.copy_from_slice(&payload));
            }
            batched += batch.len();
            seq += batch.len() as u64;
            batch.commit();
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
        let n = allocations_in(|| {
            let mut next = 0u64;
            while next < MESSAGES {
                match c.poll(|r| assert_eq!(r.seq(), next)) {
                    Ok(true) => next += 1,
                    Ok(false) => std::hint::spin_loop(),
                    Err(e) => panic!("{e:?}"),
                }
            }
        });
        done2.store(true, Ordering::Release);
        (c, n)
    });
    while !ready.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let payload = [3u8; 100];
    let n = allocations_in(|| {
        go.store(true, Ordering::Release);
        // Single records and batches alternately.
        let mut sent = 0;
        while sent < MESSAGES {
            if sent % 2 == 0 {
                match p.publish(9, &payload) {
                    Ok(_) => sent += 1,
                    Err(ClaimError::BackPressured) => std::hint::spin_loop(),
                    Err(e) => panic!("{e:?}"),
                }
            } else {
                let max = (MESSAGES - sent).min(7) as usize;
                match p.claim_batch(payload.len(), 9, max) {
                    Ok(mut batch) => {
                        batch.fill(|_, b| b.copy_from_slice(&payload));
                        sent += batch.len() as u64;
                        batch.commit();
                    }
                    Err(ClaimError::BackPressured) => std::hint::spin_loop(),
                    Err(e) => panic!("{e:?}"),
                }
            }
        }
        while !done.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
    });
    let (c, reader_n) = reader.join().unwrap();
    let n = n + reader_n;
    assert_eq!(n, 0, "two threads: {n} allocations");
    assert_eq!(c.stats().delivered, MESSAGES);
    println!("in-process lossless, two threads: {MESSAGES} messages, 0 allocations");
}
