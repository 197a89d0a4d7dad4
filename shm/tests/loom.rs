//! Loom model tests of the ring protocol: the same producer/consumer code as production, with
//! the header's atomics and every 8-byte word of the data region modelled by loom, so that
//! loom explores the weak-memory behaviours the orderings allow.
//!
//! Run (about a minute on two cores):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p mdbus-shm --release --test loom
//! ```
//!
//! The preemption bound defaults to 3; `LOOM_MAX_PREEMPTIONS` overrides it.
#![cfg(loom)]

use loom::thread;
use mdbus_shm::{
    ClaimError, ConsumerOptions, Mode, PollError, Resync, RingConfig, StartAt, in_process,
};

fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    b.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f()
    });
    eprintln!("explored {} executions", runs.load(Ordering::Relaxed));
}

/// A 128-byte ring: 24-byte records (8-byte payloads), five per lap, then 8 bytes of padding.
fn tiny(mode: Mode) -> RingConfig {
    RingConfig {
        capacity: 128,
        max_msg_len: 16,
        mode,
        max_consumers: 2,
        ..RingConfig::default()
    }
}

fn body(seq: u64) -> [u8; 8] {
    (seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa5a5).to_le_bytes()
}

/// Publishes record `seq`; `false` if the ring is back-pressured.
fn publish(p: &mut mdbus_shm::Producer, seq: u64) -> bool {
    match p.publish(seq as u32, &body(seq)) {
        Ok(s) => {
            assert_eq!(s, seq);
            true
        }
        Err(ClaimError::BackPressured) => false,
        Err(e) => panic!("{e:?}"),
    }
}

fn oldest() -> ConsumerOptions {
    ConsumerOptions {
        start: StartAt::Oldest,
        resync: Resync::Oldest,
        lossless: true,
    }
}

/// What a consumer saw.
#[derive(Debug, Default)]
struct Seen {
    delivered: u64,
    lost: u64,
}

/// Polls `polls` times (`None`: until nothing is left). Checks that every delivered record is
/// intact and in order, and that every loss starts exactly where reading stopped.
fn consume(c: &mut mdbus_shm::Consumer, polls: Option<usize>, seen: &mut Seen) {
    let mut left = polls.unwrap_or(usize::MAX);
    while left > 0 {
        left -= 1;
        let next = c.next_seq();
        let mut got = None;
        match c.poll(|r| got = Some((r.seq(), r.msg_type(), r.payload().to_vec()))) {
            Ok(true) => {
                let (seq, ty, data) = got.unwrap();
                assert_eq!(seq, next, "out of order");
                assert_eq!(ty, seq as u32);
                assert_eq!(data, body(seq), "validated record was torn");
                seen.delivered += 1;
            }
            // Nothing new (`Closed`: the producer is gone and everything was read).
            Ok(false) | Err(PollError::Closed) if polls.is_none() => return,
            Ok(false) | Err(PollError::Closed) => {}
            Err(PollError::Overrun {
                first_lost_seq,
                lost,
            }) => {
                assert_eq!(
                    first_lost_seq, next,
                    "loss must start where reading stopped"
                );
                assert!(lost >= 1);
                assert_eq!(c.next_seq(), next + lost, "loss count must be exact");
                seen.lost += lost;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[test]
fn publish_then_poll() {
    model(|| {
        let (mut p, f) = in_process(&tiny(Mode::Broadcast)).unwrap();
        let mut c = f.consumer(&oldest()).unwrap();
        let t = thread::spawn(move || {
            assert!(publish(&mut p, 0));
            assert!(publish(&mut p, 1));
        });
        let mut seen = Seen::default();
        consume(&mut c, Some(2), &mut seen);
        t.join().unwrap();
        consume(&mut c, None, &mut seen);
        assert_eq!((seen.delivered, seen.lost), (2, 0));
    });
}

#[test]
fn wrap_with_padding() {
    model(|| {
        let (mut p, f) = in_process(&tiny(Mode::Lossless)).unwrap();
        let mut c = f.consumer(&oldest()).unwrap();
        assert!(c.is_registered());
        for seq in 0..4 {
            assert!(publish(&mut p, seq));
        }
        // Records 4 and 5: the fifth fills the lap to 120 bytes, the sixth pads the last 8
        // bytes and wraps, overwriting record 0 once the consumer has read it.
        let t = thread::spawn(move || {
            let mut published = 4;
            while published < 6 && publish(&mut p, published) {
                published += 1;
            }
            published
        });
        let mut seen = Seen::default();
        consume(&mut c, Some(3), &mut seen);
        let published = t.join().unwrap();
        consume(&mut c, None, &mut seen);
        assert_eq!((seen.delivered, seen.lost), (published, 0));
        assert!(published >= 5);
    });
}

#[test]
fn broadcast_overrun_is_detected_with_exact_loss() {
    model(|| {
        let (mut p, f) = in_process(&tiny(Mode::Broadcast)).unwrap();
        let mut c = f.consumer(&oldest()).unwrap();
        for seq in 0..4 {
            assert!(publish(&mut p, seq));
        }
        // Three more records wrap and overwrite records 0 and 1 while the consumer reads them.
        let t = thread::spawn(move || {
            for seq in 4..7 {
                assert!(publish(&mut p, seq));
            }
        });
        let mut seen = Seen::default();
        consume(&mut c, Some(2), &mut seen);
        t.join().unwrap();
        consume(&mut c, None, &mut seen);
        assert_eq!(seen.delivered + seen.lost, 7);
        assert_eq!(c.next_seq(), 7);
    });
}

#[test]
fn lossless_back_pressure_loses_nothing() {
    model(|| {
        let (mut p, f) = in_process(&tiny(Mode::Lossless)).unwrap();
        let mut c = f.consumer(&oldest()).unwrap();
        for seq in 0..5 {
            assert!(publish(&mut p, seq));
        }
        // The ring is full: the sixth record needs the consumer to have read record 0, the
        // seventh record 1.
        let t = thread::spawn(move || {
            let mut published = 5;
            while published < 7 && publish(&mut p, published) {
                published += 1;
            }
            published
        });
        let mut seen = Seen::default();
        consume(&mut c, Some(2), &mut seen);
        let published = t.join().unwrap();
        // Back-pressure only ever happens with a full ring unread.
        assert!(published - 5 <= seen.delivered);
        consume(&mut c, None, &mut seen);
        assert_eq!((seen.delivered, seen.lost), (published, 0));
    });
}

#[test]
fn lossless_registration_races_the_producer() {
    model(|| {
        let (mut p, f) = in_process(&tiny(Mode::Lossless)).unwrap();
        for seq in 0..4 {
            assert!(publish(&mut p, seq));
        }
        // No consumer yet: the producer wraps freely, announcing the overwrite.
        let t = thread::spawn(move || {
            let mut published = 4;
            while published < 7 && publish(&mut p, published) {
                published += 1;
            }
            published
        });
        // Registering while the producer laps: wherever the consumer lands, it must receive
        // every later record intact, with no overrun.
        let mut c = f.consumer(&oldest()).unwrap();
        let first = c.next_seq();
        let mut seen = Seen::default();
        consume(&mut c, Some(1), &mut seen);
        let published = t.join().unwrap();
        consume(&mut c, None, &mut seen);
        assert_eq!(seen.lost, 0);
        assert_eq!(seen.delivered, published - first);
    });
}

/// A registered consumer whose slot is taken from it (its pid faked dead, so the producer
/// reaps it when it needs the room) while it reads: whatever it delivers is intact (the slot
/// check after the callback sees every overwrite the intent check would), and what the
/// producer overwrote is an exact overrun.
#[test]
fn reaped_consumer_never_delivers_overwritten_bytes() {
    model(|| {
        let (mut p, f) = in_process(&tiny(Mode::Lossless)).unwrap();
        let mut c = f.consumer(&oldest()).unwrap();
        assert!(c.is_registered());
        for seq in 0..5 {
            assert!(publish(&mut p, seq));
        }
        let t = thread::spawn(move || {
            f.test_set_slot_pid(0, u32::MAX);
            // Records 5 and 6 wrap over records 0 and 1 unless the consumer read them.
            assert!(publish(&mut p, 5));
            assert!(publish(&mut p, 6));
        });
        let mut seen = Seen::default();
        consume(&mut c, Some(2), &mut seen);
        t.join().unwrap();
        consume(&mut c, None, &mut seen);
        assert!(!c.is_registered());
        assert_eq!(seen.delivered + seen.lost, 7);
    });
}

/// A 256-byte ring of 24-byte records: a batch holds at most two (`capacity / 4` bytes).
fn batch_ring(mode: Mode) -> RingConfig {
    RingConfig {
        capacity: 256,
        max_msg_len: 8,
        mode,
        max_consumers: 2,
        ..RingConfig::default()
    }
}

/// Publishes records from `next` on in one batch of up to `max`; how many (0 if
/// back-pressured).
fn publish_batch(p: &mut mdbus_shm::Producer, next: u64, max: usize) -> u64 {
    match p.claim_batch(8, next as u32, max) {
        Ok(mut b) => {
            assert_eq!(b.first_seq(), next);
            for i in 0..b.len() {
                b.payload_mut(i)
                    .unwrap()
                    .copy_from_slice(&body(next + i as u64));
            }
            let n = b.len() as u64;
            assert_eq!(b.commit(), next);
            n
        }
        Err(ClaimError::BackPressured) => 0,
        Err(e) => panic!("{e:?}"),
    }
}

/// As `consume`, through `poll_batch` (two records at most per call), without the type
/// check (the records of a batch share one type).
fn consume_batch(c: &mut mdbus_shm::Consumer, polls: Option<usize>, seen: &mut Seen) {
    let mut left = polls.unwrap_or(usize::MAX);
    while left > 0 {
        left -= 1;
        let next = c.next_seq();
        let mut got = Vec::new();
        let r = c.poll_batch(2, |r| got.push((r.seq(), r.payload().to_vec())));
        // Records delivered before an error stay valid; after an overrun, only those below
        // the first lost one.
        let valid = match r {
            Err(PollError::Overrun { first_lost_seq, .. }) => {
                got.iter().filter(|(seq, _)| *seq < first_lost_seq).count()
            }
            _ => got.len(),
        };
        for (i, (seq, data)) in got.iter().take(valid).enumerate() {
            assert_eq!(*seq, next + i as u64, "out of order");
            assert_eq!(*data, body(*seq), "validated record was torn");
        }
        seen.delivered += valid as u64;
        match r {
            Ok(n) => {
                assert_eq!(n, got.len());
                if n == 0 && polls.is_none() {
                    return;
                }
            }
            Err(PollError::Closed) if polls.is_none() => return,
            Err(PollError::Closed) => {}
            Err(PollError::Overrun {
                first_lost_seq,
                lost,
            }) => {
                assert_eq!(
                    first_lost_seq,
                    next + valid as u64,
                    "loss must start where reading stopped"
                );
                assert!(lost >= 1);
                assert_eq!(
                    c.next_seq(),
                    first_lost_seq + lost,
                    "loss count must be exact"
                );
                seen.lost += lost;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// A batch commit (headers written last to first, one `tail` store) races a reader: it
/// never sees a record of the batch before its payload, and reads the batch in order.
#[test]
fn batch_commit_then_poll() {
    model(|| {
        let (mut p, f) = in_process(&batch_ring(Mode::Broadcast)).unwrap();
        let mut c = f.consumer(&oldest()).unwrap();
        let t = thread::spawn(move || {
            assert_eq!(publish_batch(&mut p, 0, 2), 2);
        });
        let mut seen = Seen::default();
        consume_batch(&mut c, Some(2), &mut seen);
        t.join().unwrap();
        consume_batch(&mut c, None, &mut seen);
        assert_eq!((seen.delivered, seen.lost), (2, 0));
    });
}

/// Batches wrap a lossless ring (padding before a batch, back-pressure against the
/// registered reader): nothing is lost or torn.
#[test]
fn batch_wraps_lossless_ring() {
    model(|| {
        let (mut p, f) = in_process(&batch_ring(Mode::Lossless)).unwrap();
        let mut c = f.consumer(&oldest()).unwrap();
        // 10 records (240 bytes): the batches below pad the last 16 bytes and wrap over
        // records the reader may not have read yet.
        let mut published = 0;
        while published < 9 {
            published += publish_batch(&mut p, published, 2);
        }
        let t = thread::spawn(move || {
            let mut published = published;
            for _ in 0..2 {
                published += publish_batch(&mut p, published, 2);
            }
            published
        });
        let mut seen = Seen::default();
        consume_batch(&mut c, Some(3), &mut seen);
        let published = t.join().unwrap();
        consume_batch(&mut c, None, &mut seen);
        assert_eq!((seen.delivered, seen.lost), (published, 0));
    });
}

/// A broadcast reader lapped by batches counts its loss exactly.
#[test]
fn batch_overrun_is_detected_with_exact_loss() {
    model(|| {
        let (mut p, f) = in_process(&batch_ring(Mode::Broadcast)).unwrap();
        let mut c = f.consumer(&oldest()).unwrap();
        let mut published = 0;
        while published < 9 {
            published += publish_batch(&mut p, published, 2);
        }
        let t = thread::spawn(move || {
            let mut published = published;
            while published < 13 {
                published += publish_batch(&mut p, published, 2);
            }
            published
        });
        let mut seen = Seen::default();
        consume_batch(&mut c, Some(2), &mut seen);
        let published = t.join().unwrap();
        consume_batch(&mut c, None, &mut seen);
        assert_eq!(seen.delivered + seen.lost, published);
        assert_eq!(c.next_seq(), published);
    });
}
