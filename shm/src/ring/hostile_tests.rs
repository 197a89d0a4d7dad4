//! A segment whose shared words were written by someone other than the producer (or a producer
//! that reaped a live consumer's slot): every poll returns in bounded time, a broken invariant
//! is a `Corrupt` error naming the word, and a consumer whose slot was taken from it never
//! takes overwritten bytes for a record.

use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::config::{ConsumerOptions, Resync, StartAt};
use crate::error::{PollError, RingWord};
use crate::layout::{PADDING_FLAG, seq_marker};

fn cfg(mode: Mode) -> RingConfig {
    RingConfig {
        capacity: 4096,
        max_msg_len: 1008,
        mode,
        max_consumers: 4,
        ..RingConfig::default()
    }
}

fn opts(start: StartAt, lossless: bool) -> ConsumerOptions {
    ConsumerOptions {
        start,
        resync: Resync::Oldest,
        lossless,
    }
}

/// Runs `f` on its own thread and fails the test if it has not returned within a generous
/// time: a regression to an endless loop fails here instead of hanging the test run.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let limit = if cfg!(miri) { 600 } else { 60 };
    match rx.recv_timeout(Duration::from_secs(limit)) {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {limit} s: the poll loops forever"),
    }
}

/// The first `n` polls' results (records as their seqs).
fn polls(c: &mut Consumer, n: usize) -> Vec<Result<Option<u64>, PollError>> {
    (0..n)
        .map(|_| {
            let mut seq = None;
            c.poll(|r| seq = Some(r.seq())).map(|_| seq)
        })
        .collect()
}

/// 10 records of 40 bytes (56 in the ring each).
fn ten(p: &mut Producer) {
    for i in 0..10u64 {
        p.publish(1, &[i as u8; 40]).unwrap();
    }
}

fn is_corrupt(r: &Result<Option<u64>, PollError>) -> bool {
    matches!(r, Err(PollError::Corrupt { .. }))
}

/// The three corrupt `tail` values of the report, for a consumer that has read nothing, one
/// that has read everything, and a registered lossless one: each poll answers, with an error
/// naming `tail`; once the word is repaired the records are delivered, none lost.
#[test]
fn corrupt_tail_is_reported_not_looped_on() {
    for (name, bad) in [
        ("2^64-8", (|_| u64::MAX - 7) as fn(u64) -> u64),
        ("two laps ahead", |tail| tail + 2 * 4096),
        ("capacity+4096", |_| 4096 + 4096),
    ] {
        for (mode, lossless, drained) in [
            (Mode::Broadcast, false, false),
            (Mode::Broadcast, false, true),
            (Mode::Lossless, true, false),
            (Mode::Lossless, false, true),
        ] {
            let what = format!("tail {name}, {mode:?}, registered {lossless}, drained {drained}");
            let (mut p, f) = in_process(&cfg(mode)).unwrap();
            let mut c = f.consumer(&opts(StartAt::Oldest, lossless)).unwrap();
            ten(&mut p);
            if drained {
                assert_eq!(polls(&mut c, 10).iter().filter(|r| r.is_ok()).count(), 10);
            }
            let tail = c.test_header().tail.tail.load(Ordering::Relaxed);
            c.test_header()
                .tail
                .tail
                .store(bad(tail), Ordering::Relaxed);
            let (got, c) = bounded(&what, move || (polls(&mut c, 12), c));
            let corrupt: Vec<_> = got.iter().filter(|r| is_corrupt(r)).collect();
            assert!(!corrupt.is_empty(), "{what}: {got:?}");
            for r in &corrupt {
                let Err(PollError::Corrupt { word, value, .. }) = r else {
                    unreachable!()
                };
                assert_eq!(
                    (*word, *value),
                    (RingWord::Tail, bad(tail)),
                    "{what}: {r:?}"
                );
            }
            // Nothing delivered twice or out of order meanwhile.
            let seqs: Vec<u64> = got.iter().filter_map(|r| (*r).ok().flatten()).collect();
            assert!(
                seqs.windows(2).all(|w| w[1] == w[0] + 1),
                "{what}: {seqs:?}"
            );
            assert!(!drained || seqs.is_empty(), "{what}: {seqs:?}");
            // Repaired: the consumer continues where it was, nothing lost.
            let mut c = c;
            c.test_header().tail.tail.store(tail, Ordering::Relaxed);
            let rest: Vec<u64> = polls(&mut c, 12)
                .into_iter()
                .filter_map(|r| r.unwrap_or_else(|e| panic!("{what}: {e}")))
                .collect();
            let mut all = seqs.clone();
            all.extend(rest);
            let want: Vec<u64> = if drained { vec![] } else { (0..10).collect() };
            assert_eq!(all, want, "{what}");
        }
    }
}

/// `tail_intent` far ahead of anything committed: a validating consumer reports it instead of
/// retrying its resynchronisation forever.
#[test]
fn corrupt_intent_is_reported_not_looped_on() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, false)).unwrap();
    ten(&mut p);
    c.test_header()
        .intent
        .value
        .store(u64::MAX - 7, Ordering::Relaxed);
    let got = bounded("intent", move || polls(&mut c, 4));
    for r in &got {
        assert!(
            matches!(
                r,
                Err(PollError::Corrupt {
                    word: RingWord::TailIntent,
                    value: 0xffff_ffff_ffff_fff8,
                    ..
                })
            ),
            "{got:?}"
        );
    }
}

/// `head` behind what the producer may already have overwritten (a producer that wrapped
/// several times): joining at the oldest record reports it instead of retrying forever; `head`
/// beyond `tail` is reported too (it used to join at the live edge, silently).
#[test]
fn corrupt_head_is_reported_at_join() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast)).unwrap();
    let c = f.consumer(&opts(StartAt::Newest, false)).unwrap();
    for i in 0..500u64 {
        p.publish(1, &[i as u8; 40]).unwrap();
    }
    let tail = c.test_header().tail.tail.load(Ordering::Relaxed);
    for bad in [0, tail + 4096] {
        c.test_header().head.value.store(bad, Ordering::Relaxed);
        let f = f.clone();
        let r = bounded("head", move || {
            f.consumer(&opts(StartAt::Oldest, false)).map(|_| ())
        });
        let Err(SetupError::BadHeader { field, .. }) = &r else {
            panic!("head {bad}: {r:?}")
        };
        assert_eq!(*field, "head", "head {bad}");
    }
}

/// `latest` at or beyond `tail`: joining at the newest record names the word.
#[test]
fn corrupt_latest_is_reported_at_join() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast)).unwrap();
    let c = f.consumer(&opts(StartAt::Newest, false)).unwrap();
    ten(&mut p);
    let tail = c.test_header().tail.tail.load(Ordering::Relaxed);
    for bad in [u64::MAX - 7, tail, tail + 4096 * 3] {
        c.test_header().tail.latest.store(bad, Ordering::Relaxed);
        let r = bounded("latest", {
            let f = f.clone();
            move || f.consumer(&opts(StartAt::Newest, false)).map(|_| ())
        });
        let Err(SetupError::BadHeader { field, .. }) = &r else {
            panic!("latest {bad}: {r:?}")
        };
        assert_eq!(*field, "latest", "latest {bad}");
    }
}

/// A `state` word that is no state: the idle poll names it.
#[test]
fn corrupt_state_is_named() {
    let (_p, f) = in_process(&cfg(Mode::Broadcast)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, false)).unwrap();
    c.test_header().control.state.store(7, Ordering::Relaxed);
    let r = c.poll(|_| panic!("nothing was published"));
    assert!(
        matches!(
            r,
            Err(PollError::Corrupt {
                word: RingWord::State,
                value: 7,
                ..
            })
        ),
        "{r:?}"
    );
}

/// A forged padding record at the start of the region that claims the whole region (and a
/// forged one before it leading there): the fast path must not follow it lap after lap.
#[test]
fn forged_padding_is_not_followed_forever() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, false)).unwrap();
    ten(&mut p);
    assert_eq!(polls(&mut c, 10).iter().filter(|r| r.is_ok()).count(), 10);
    let cursor = 560;
    let marker = seq_marker(10, false);
    c.test_store_data(cursor, u64::from(PADDING_FLAG) | (4096 - cursor));
    c.test_store_data(cursor + 8, marker);
    c.test_store_data(0, u64::from(PADDING_FLAG) | 4096);
    c.test_store_data(8, marker);
    let (got, mut c) = bounded("padding", move || (polls(&mut c, 8), c));
    assert!(
        got.iter()
            .all(|r| matches!(r, Ok(None) | Err(PollError::Corrupt { .. }))),
        "{got:?}"
    );
    // The producer's next records overwrite the forgery and arrive, none lost.
    for i in 10..20u64 {
        p.publish(1, &[i as u8; 40]).unwrap();
    }
    let seqs: Vec<u64> = polls(&mut c, 12)
        .into_iter()
        .filter_map(|r| r.unwrap())
        .collect();
    assert_eq!(seqs, (10..20).collect::<Vec<_>>());
}

/// A registered consumer whose slot was reaped (its pid looked dead) before it read: the
/// producer reuses the bytes of its unread records at once; the consumer must not deliver
/// them as records.
#[test]
fn reaped_before_the_read_never_delivers_overwritten_bytes() {
    let (mut p, f) = in_process(&cfg(Mode::Lossless)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, true)).unwrap();
    // 64 records of 64 bytes: the ring is exactly full for `c`, which read nothing.
    for i in 0..64u64 {
        p.publish(1, &[i as u8; 48]).unwrap();
    }
    assert!(
        p.publish(1, &[0; 48]).is_err(),
        "the slot holds the producer back"
    );
    c.test_set_slot_pid(u32::MAX);
    // The producer reaps the slot at its next liveness check (at most one per millisecond),
    // then writes a payload over record 0's (not committed yet).
    for _ in 0..10_000 {
        if p.claim(48, 1).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(p.reaped_consumers(), 1);
    let mut claim = p.claim(48, 1).unwrap();
    claim.fill(0xee);
    let mut got = Vec::new();
    let r = c.poll(|r| got.push((r.seq(), r.payload().to_vec())));
    for (seq, bytes) in &got {
        assert!(
            r.is_err() || bytes == &vec![*seq as u8; 48],
            "record {seq}: {bytes:?}"
        );
    }
    assert!(matches!(r, Err(PollError::Overrun { .. })), "{r:?}");
    assert!(!c.is_registered());
    claim.commit();
}

/// The slot is reaped while the callback runs and the producer overwrites the record under
/// it: the poll reports the record lost.
#[test]
#[cfg_attr(miri, ignore)]
fn reaped_during_the_callback_reports_the_record_lost() {
    let (mut p, f) = in_process(&cfg(Mode::Lossless)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, true)).unwrap();
    for i in 0..64u64 {
        p.publish(1, &[i as u8; 48]).unwrap();
    }
    let mut saw = None;
    let r = c.poll(|r| {
        saw = Some(r.seq());
        f.test_set_slot_pid(0, u32::MAX);
        let mut claim = p.claim(48, 1).unwrap();
        claim.fill(0xee);
        claim.commit();
    });
    assert_eq!(saw, Some(0));
    assert!(
        matches!(
            r,
            Err(PollError::Overrun {
                first_lost_seq: 0,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(!c.is_registered());
}

/// As `reaped_during_the_callback_reports_the_record_lost`, in the middle of a batch: the
/// records before the reap are delivered intact and stable, the one under the callback is
/// reported lost, and nothing after it is handed out.
#[test]
#[cfg_attr(miri, ignore)]
fn reaped_during_a_batch_reports_the_record_lost() {
    let (mut p, f) = in_process(&cfg(Mode::Lossless)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, true)).unwrap();
    for i in 0..64u64 {
        p.publish(1, &[i as u8; 48]).unwrap();
    }
    let mut saw = Vec::new();
    let r = c.poll_batch(10, |r| {
        saw.push((r.seq(), r.is_stable(), r.payload() == [r.seq() as u8; 48]));
        if r.seq() == 2 {
            f.test_set_slot_pid(0, u32::MAX);
            // Overwrites the first records (0 and 1, read already) and announces an intent
            // past record 2.
            for _ in 0..3 {
                let mut claim = p.claim(48, 1).unwrap();
                claim.fill(0xee);
                claim.commit();
            }
        }
    });
    assert_eq!(
        saw,
        [(0, true, true), (1, true, true), (2, true, true)],
        "no record after the reap is handed out"
    );
    assert!(
        matches!(
            r,
            Err(PollError::Overrun {
                first_lost_seq: 2,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(!c.is_registered());
    assert_eq!(c.stats().slot_lost, 1);
}

/// A broadcast reader lapped while a batch's callback runs: the records before are valid, the
/// one under the callback is the first lost, and the loss is counted exactly. (Not under miri:
/// the producer writes the bytes the callback's view borrows, as the speculative view allows.)
#[test]
#[cfg_attr(miri, ignore)]
fn lapped_during_a_batch_counts_the_loss_exactly() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, false)).unwrap();
    for i in 0..40u64 {
        p.publish(1, &[i as u8; 48]).unwrap();
    }
    let mut saw = Vec::new();
    let r = c.poll_batch(10, |r| {
        saw.push(r.seq());
        if r.seq() == 3 {
            // A lap and then some: 64-byte records, 64 to a lap.
            for i in 40..140u64 {
                p.publish(1, &[i as u8; 48]).unwrap();
            }
        }
    });
    assert_eq!(saw, [0, 1, 2, 3]);
    let Err(PollError::Overrun {
        first_lost_seq,
        lost,
    }) = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(first_lost_seq, 3);
    assert_eq!(c.next_seq(), 3 + lost);
    // Everything from there on arrives, in order, intact.
    let mut next = c.next_seq();
    loop {
        match c.poll_batch(16, |r| {
            assert_eq!((r.seq(), r.payload()), (next, &[next as u8; 48][..]));
            next += 1;
        }) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(next, 140);
}

/// A record in the middle of a batch whose length word says padding, or more than
/// `max_msg_len`, under the right marker: `poll_batch` hands out the records before it, never
/// the forged one, and reports it as corrupt.
#[test]
fn forged_length_inside_a_batch_is_not_delivered() {
    for forged in [PADDING_FLAG | 8, 1009, PADDING_FLAG | 1008] {
        let (mut p, f) = in_process(&cfg(Mode::Broadcast)).unwrap();
        let mut c = f.consumer(&opts(StartAt::Oldest, false)).unwrap();
        ten(&mut p);
        // Record 5 starts at 5 * 56; its marker stays.
        c.test_store_data(5 * 56, u64::from(forged) | (1 << 32));
        let (r, saw) = bounded("forged length", move || {
            let mut saw = Vec::new();
            let r = c.poll_batch(10, |r| saw.push((r.seq(), r.payload().len())));
            (r, saw)
        });
        assert_eq!(
            saw,
            (0..5).map(|s| (s, 40)).collect::<Vec<_>>(),
            "{forged:#x}"
        );
        assert!(
            matches!(r, Err(PollError::Corrupt { .. })),
            "{forged:#x}: {r:?}"
        );
    }
}
