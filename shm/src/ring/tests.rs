//! Unit tests of the ring protocol on the in-process backend (miri-clean).

use super::*;
use crate::config::{ConsumerOptions, Resync, StartAt, WaitStrategy};
use crate::error::{ClaimError, PollError};

/// Scales a record count down under miri (an interpreter, ~1000x slower).
fn n(native: u64, miri: u64) -> u64 {
    if cfg!(miri) { miri } else { native }
}

fn cfg(mode: Mode, capacity: usize) -> RingConfig {
    RingConfig {
        capacity,
        max_msg_len: (capacity / 4 - 16) as u32,
        mode,
        max_consumers: 4,
        ..RingConfig::default()
    }
}

fn opts(start: StartAt, resync: Resync) -> ConsumerOptions {
    ConsumerOptions {
        start,
        resync,
        lossless: true,
    }
}

/// Deterministic payload for a seq: length varies, bytes depend on seq and index.
fn payload(seq: u64, max: usize) -> Vec<u8> {
    let len = (seq as usize * 7 + 3) % (max + 1);
    (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
}

/// Polls everything available, returning (seq, msg_type, payload) of validated records and
/// the errors seen.
type Delivered = Vec<(u64, u32, Vec<u8>)>;

fn drain(c: &mut Consumer) -> (Delivered, Vec<PollError>) {
    let mut got = Vec::new();
    let mut errs = Vec::new();
    loop {
        let mut last = None;
        match c.poll(|r| last = Some((r.seq(), r.msg_type(), r.payload().to_vec()))) {
            Ok(true) => got.push(last.unwrap()),
            Ok(false) | Err(PollError::Closed) => break,
            Err(e) => errs.push(e),
        }
    }
    (got, errs)
}

#[test]
fn publish_then_poll_round_trips() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    assert_eq!(c.poll(|_| panic!("empty ring delivered")), Ok(false));
    for seq in 0..10 {
        assert_eq!(
            p.publish(seq as u32 + 100, &payload(seq, 200)).unwrap(),
            seq
        );
    }
    let (got, errs) = drain(&mut c);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(got.len(), 10);
    for (i, (seq, ty, data)) in got.into_iter().enumerate() {
        assert_eq!(seq, i as u64);
        assert_eq!(ty, i as u32 + 100);
        assert_eq!(data, payload(seq, 200));
    }
    assert_eq!(c.next_seq(), 10);
    assert_eq!(c.lag(), 0);
}

#[test]
fn claim_commit_abort_and_too_large() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    let max = p.config().max_msg_len as usize;
    assert_eq!(
        p.claim(max + 1, 0).unwrap_err(),
        ClaimError::TooLarge {
            len: max + 1,
            max: max as u32
        }
    );
    let mut claim = p.claim(3, 9).unwrap();
    claim.copy_from_slice(b"abc");
    claim.abort();
    let mut claim = p.claim(4, 9).unwrap();
    claim.copy_from_slice(b"zzzz");
    drop(claim);
    assert_eq!(c.poll(|_| panic!("aborted claim visible")), Ok(false));
    let mut claim = p.claim(2, 5).unwrap();
    assert_eq!(claim.seq(), 0);
    claim.copy_from_slice(b"ok");
    assert_eq!(claim.commit(), 0);
    let (got, _) = drain(&mut c);
    assert_eq!(got, vec![(0, 5, b"ok".to_vec())]);
    // An empty payload is a valid record.
    p.publish(1, &[]).unwrap();
    let (got, _) = drain(&mut c);
    assert_eq!(got, vec![(1, 1, Vec::new())]);
}

#[test]
fn wrap_around_with_padding_is_invisible() {
    let (mut p, f) = in_process(&cfg(Mode::Lossless, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    assert!(c.is_registered());
    let mut next = 0u64;
    let total = n(2_000, 150);
    let max = n(1000, 250) as usize;
    // Many laps with awkward sizes, reading as we go: every wrap pads.
    for seq in 0..total {
        let data = payload(seq, max);
        loop {
            match p.publish(7, &data) {
                Ok(s) => {
                    assert_eq!(s, seq);
                    break;
                }
                Err(ClaimError::BackPressured) => {
                    let (got, errs) = drain(&mut c);
                    assert!(errs.is_empty());
                    for (s, _, d) in got {
                        assert_eq!(s, next);
                        assert_eq!(d, payload(s, max));
                        next += 1;
                    }
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    let (got, errs) = drain(&mut c);
    assert!(errs.is_empty());
    for (s, _, d) in got {
        assert_eq!(s, next);
        assert_eq!(d, payload(s, max));
        next += 1;
    }
    assert_eq!(next, total);
}

#[test]
fn broadcast_overrun_reports_exact_loss_resync_oldest() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    let total = n(1_000, 400);
    for seq in 0..total {
        p.publish(0, &seq.to_le_bytes()).unwrap();
    }
    let (got, errs) = drain(&mut c);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let PollError::Overrun {
        first_lost_seq,
        lost,
    } = errs[0]
    else {
        panic!("{errs:?}")
    };
    assert_eq!(first_lost_seq, 0);
    assert!(lost > 0);
    // Everything after the loss is delivered, in order, intact.
    assert_eq!(got.first().unwrap().0, first_lost_seq + lost);
    for w in got.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1);
    }
    for (s, _, d) in &got {
        assert_eq!(d.as_slice(), s.to_le_bytes());
    }
    assert_eq!(got.len() as u64 + lost, total);
    assert_eq!(c.stats().lost, lost);
    assert_eq!(c.stats().overruns, 1);
}

#[test]
fn broadcast_overrun_resync_newest() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, Resync::Newest)).unwrap();
    for seq in 0..1_000u64 {
        p.publish(0, &seq.to_le_bytes()).unwrap();
    }
    let (got, errs) = drain(&mut c);
    assert_eq!(
        errs,
        vec![PollError::Overrun {
            first_lost_seq: 0,
            lost: 999
        }]
    );
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![999]);
}

#[test]
// The callback's payload borrow and the producer's claim alias on purpose (that is the race
// being tested); miri's borrow tracker rightly rejects it, so this one runs natively only.
#[cfg_attr(miri, ignore)]
fn overrun_during_callback_invalidates_the_delivery() {
    // The producer laps the consumer while its callback runs: the poll must report the record
    // the callback saw as lost.
    let (mut p, f) = in_process(&cfg(Mode::Broadcast, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    p.publish(0, &[1; 32]).unwrap();
    let mut saw = None;
    let r = c.poll(|r| {
        saw = Some(r.seq());
        // Run the producer a full lap ahead without touching `r` afterwards.
        for _ in 0..200 {
            p.publish(0, &[2; 32]).unwrap();
        }
    });
    assert_eq!(saw, Some(0));
    let Err(PollError::Overrun {
        first_lost_seq,
        lost,
    }) = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(first_lost_seq, 0);
    assert!(lost >= 1);
    assert_eq!(c.next_seq(), lost);
    let (got, errs) = drain(&mut c);
    assert!(errs.is_empty());
    assert_eq!(got.len() as u64 + lost, 201);
}

#[test]
fn start_positions() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast, 4096)).unwrap();
    // Empty ring: every start delivers the first record.
    for start in [StartAt::Oldest, StartAt::Newest, StartAt::Next] {
        let c = f.consumer(&opts(start, Resync::Oldest)).unwrap();
        assert_eq!(c.next_seq(), 0, "{start:?}");
    }
    for seq in 0..5u64 {
        p.publish(0, &seq.to_le_bytes()).unwrap();
    }
    let mut oldest = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    let mut newest = f.consumer(&opts(StartAt::Newest, Resync::Oldest)).unwrap();
    let mut next = f.consumer(&opts(StartAt::Next, Resync::Oldest)).unwrap();
    p.publish(0, &5u64.to_le_bytes()).unwrap();
    let seqs = |c: &mut Consumer| drain(c).0.into_iter().map(|g| g.0).collect::<Vec<_>>();
    assert_eq!(seqs(&mut oldest), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(seqs(&mut newest), vec![4, 5]);
    assert_eq!(seqs(&mut next), vec![5]);
    // After laps, Oldest starts at the oldest intact record.
    let total = n(500, 400);
    for seq in 6..total {
        p.publish(0, &seq.to_le_bytes()).unwrap();
    }
    let mut late = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    let got = seqs(&mut late);
    assert!(got[0] > 6 && *got.last().unwrap() == total - 1, "{got:?}");
    assert_eq!(got.len() as u64, total - got[0]);
}

#[test]
fn lossless_back_pressure_and_no_loss() {
    let (mut p, f) = in_process(&cfg(Mode::Lossless, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    assert_eq!(p.active_consumers(), 1);
    let mut published = 0u64;
    while p.publish(0, &published.to_le_bytes()).is_ok() {
        published += 1;
    }
    // 24-byte records in a 4096-byte ring: a full ring, nothing more.
    assert_eq!(published, 4096 / 24);
    assert_eq!(p.publish(0, &[0; 8]), Err(ClaimError::BackPressured));
    let mut got = 0u64;
    assert_eq!(
        c.poll(|r| assert_eq!(r.payload(), 0u64.to_le_bytes())),
        Ok(true)
    );
    got += 1;
    // One record consumed: room for exactly one more.
    assert!(p.publish(0, &published.to_le_bytes()).is_ok());
    published += 1;
    assert_eq!(p.publish(0, &[0; 8]), Err(ClaimError::BackPressured));
    let (rest, errs) = drain(&mut c);
    assert!(errs.is_empty());
    for (s, _, d) in rest {
        assert_eq!(s, got);
        assert_eq!(d, got.to_le_bytes());
        got += 1;
    }
    assert_eq!(got, published);
    // Consumer gone: the producer is free again.
    drop(c);
    assert_eq!(p.active_consumers(), 0);
    for seq in 0..n(1000, 400) {
        p.publish(0, &seq.to_le_bytes()).unwrap();
    }
}

#[test]
fn lossless_unregistered_reader_and_broadcast_like_without_consumers() {
    let (mut p, f) = in_process(&cfg(Mode::Lossless, 4096)).unwrap();
    let mut spy = f
        .consumer(&ConsumerOptions {
            lossless: false,
            ..opts(StartAt::Oldest, Resync::Oldest)
        })
        .unwrap();
    assert!(!spy.is_registered());
    for seq in 0..n(1000, 400) {
        p.publish(0, &seq.to_le_bytes()).unwrap();
    }
    let (got, errs) = drain(&mut spy);
    let [
        PollError::Overrun {
            first_lost_seq: 0,
            lost,
        },
    ] = errs[..]
    else {
        panic!("{errs:?}")
    };
    assert_eq!(got.len() as u64 + lost, n(1000, 400));
}

#[test]
fn dead_consumer_is_reaped() {
    let (mut p, f) = in_process(&cfg(Mode::Lossless, 4096)).unwrap();
    let c = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    // Pretend the consumer's process died.
    c.test_set_slot_pid(u32::MAX);
    let mut published = 0;
    for seq in 0..n(1000, 400) {
        if p.publish(0, &seq.to_le_bytes()).is_ok() {
            published += 1;
        }
    }
    assert_eq!(published, n(1000, 400));
    assert_eq!(p.reaped_consumers(), 1);
    assert_eq!(p.active_consumers(), 0);
}

#[test]
fn consumer_slots_run_out_and_come_back() {
    let config = RingConfig {
        max_consumers: 1,
        ..cfg(Mode::Lossless, 4096)
    };
    let (_p, f) = in_process(&config).unwrap();
    let first = f.consumer(&opts(StartAt::Next, Resync::Oldest)).unwrap();
    let err = f
        .consumer(&opts(StartAt::Next, Resync::Oldest))
        .unwrap_err();
    assert!(
        matches!(err, SetupError::NoConsumerSlot { max: 1, .. }),
        "{err}"
    );
    drop(first);
    f.consumer(&opts(StartAt::Next, Resync::Oldest)).unwrap();
}

#[test]
fn closed_after_everything_is_read() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    p.publish(3, b"last words").unwrap();
    drop(p);
    assert_eq!(
        c.producer_status(std::time::Duration::from_secs(60)),
        ProducerStatus::Closed
    );
    let mut seen = Vec::new();
    assert_eq!(c.poll(|r| seen.extend_from_slice(r.payload())), Ok(true));
    assert_eq!(seen, b"last words");
    assert_eq!(c.poll(|_| {}), Err(PollError::Closed));
    assert_eq!(c.poll(|_| {}), Err(PollError::Closed));
    assert_eq!(
        c.wait(&WaitStrategy::BusySpin, None),
        Err(PollError::Closed)
    );
}

#[test]
fn poll_copy_and_batch() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    p.publish(1, b"0123456789").unwrap();
    let mut small = [0u8; 4];
    let info = c.poll_copy(&mut small).unwrap().unwrap();
    assert_eq!(
        info,
        RecordInfo {
            seq: 0,
            msg_type: 1,
            len: 10,
            copied: 4
        }
    );
    assert_eq!(&small, b"0123");
    assert_eq!(c.poll_copy(&mut small), Ok(None));
    for seq in 1..=10u64 {
        p.publish(2, &seq.to_le_bytes()).unwrap();
    }
    let mut seqs = Vec::new();
    assert_eq!(c.poll_batch(4, |r| seqs.push(r.seq())), Ok(4));
    assert_eq!(c.poll_batch(100, |r| seqs.push(r.seq())), Ok(6));
    assert_eq!(c.poll_batch(100, |r| seqs.push(r.seq())), Ok(0));
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
}

#[test]
fn heartbeat_and_status() {
    let (p, f) = in_process(&cfg(Mode::Broadcast, 4096)).unwrap();
    let c = f.consumer(&ConsumerOptions::default()).unwrap();
    p.heartbeat();
    let pid = std::process::id();
    assert_eq!(
        c.producer_status(std::time::Duration::from_secs(3600)),
        ProducerStatus::Alive { pid }
    );
    assert_eq!(
        c.producer_status(std::time::Duration::ZERO),
        ProducerStatus::Dead { pid }
    );
    assert_eq!(c.epoch(), p.epoch());
    assert_ne!(p.epoch(), 0);
}

#[test]
fn threads_lossless_every_record_arrives() {
    let (n, max) = if cfg!(miri) {
        (250, 60)
    } else {
        (100_000, 300)
    };
    let body = move |seq: u64| payload(seq, max);
    let (mut p, f) = in_process(&cfg(Mode::Lossless, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    let reader = std::thread::spawn(move || {
        let mut next = 0u64;
        while next < n {
            match c.poll(|r| {
                assert_eq!(r.seq(), next);
                assert_eq!(r.payload(), body(next).as_slice());
            }) {
                Ok(true) => next += 1,
                Ok(false) => std::thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        }
        c.stats()
    });
    for seq in 0..n {
        let data = body(seq);
        while p.publish(seq as u32, &data).is_err() {
            std::thread::yield_now();
        }
    }
    let stats = reader.join().unwrap();
    assert_eq!(stats.delivered, n);
    assert_eq!(stats.lost, 0);
}

#[test]
fn batching_wait_pauses_then_sees_records_and_times_out() {
    use std::time::{Duration, Instant};
    let (mut p, f) = in_process(&cfg(Mode::Lossless, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Next, Resync::Oldest)).unwrap();
    let pause = Duration::from_micros(50);
    let batching = WaitStrategy::Batching { pause };
    // Nothing to read: times out.
    assert_eq!(c.wait(&batching, Some(Duration::from_millis(2))), Ok(false));
    // A record already there is seen after one pause, not before.
    p.publish(0, &1u64.to_le_bytes()).unwrap();
    let t = Instant::now();
    assert_eq!(c.wait(&batching, None), Ok(true));
    assert!(t.elapsed() >= pause);
    assert!(c.poll(|_| {}).unwrap());
    // Records published while it waits are all read after it returns.
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < 3 {
            assert_eq!(c.wait(&batching, None), Ok(true));
            while c.poll(|_| {}).unwrap() {
                got += 1;
            }
        }
        (got, c)
    });
    for i in 0..3u64 {
        std::thread::sleep(Duration::from_millis(1));
        p.publish(0, &i.to_le_bytes()).unwrap();
    }
    let (got, mut c) = reader.join().unwrap();
    assert_eq!(got, 3);
    // A closed stream is reported, not waited on.
    drop(p);
    assert_eq!(c.wait(&batching, None), Err(PollError::Closed));
}

#[test]
fn blocking_wait_wakes_up() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Next, Resync::Oldest)).unwrap();
    // Nothing to read: times out.
    assert_eq!(
        c.wait(
            &WaitStrategy::Blocking,
            Some(std::time::Duration::from_millis(5))
        ),
        Ok(false)
    );
    assert_eq!(
        c.wait(
            &WaitStrategy::SpinThenYield { spins: 10 },
            Some(std::time::Duration::from_millis(1))
        ),
        Ok(false)
    );
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < 3 {
            assert_eq!(c.wait(&WaitStrategy::Blocking, None), Ok(true));
            while c.poll(|_| {}).unwrap() {
                got += 1;
            }
        }
        got
    });
    for i in 0..3u64 {
        std::thread::sleep(std::time::Duration::from_millis(2));
        p.publish(0, &i.to_le_bytes()).unwrap();
    }
    assert_eq!(reader.join().unwrap(), 3);
}

#[test]
fn handles_are_send_and_factories_shareable() {
    fn send<T: Send>() {}
    fn shareable<T: Send + Sync + Clone>() {}
    send::<Producer>();
    send::<Consumer>();
    shareable::<ConsumerFactory>();
}

#[test]
fn stale_payload_that_looks_like_a_marker_is_not_delivered() {
    use crate::layout::seq_marker;
    // Lap one: 64 records of 64 bytes whose payload words sit where the headers of lap two's
    // 24-byte records will be, holding exactly the markers those records will carry.
    let (mut p, f) = in_process(&cfg(Mode::Lossless, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    for i in 0..64u64 {
        let mut body = [0u8; 48];
        for (j, w) in body.chunks_exact_mut(8).enumerate() {
            let off = i * 64 + 16 + 8 * j as u64;
            if off >= 8 && (off - 8).is_multiple_of(24) {
                let seq = 64 + (off - 8) / 24;
                w.copy_from_slice(&seq_marker(seq, false).to_le_bytes());
            }
        }
        assert_eq!(p.publish(1, &body), Ok(i));
        assert_eq!(c.poll(|r| assert_eq!(r.seq(), i)), Ok(true));
    }
    assert_eq!(c.poll(|_| panic!("nothing was published")), Ok(false));
    // Lap two: each record is delivered once it is committed, and nothing before.
    for seq in 64..n(230, 100) {
        assert_eq!(p.publish(2, &seq.to_le_bytes()), Ok(seq));
        let mut got = None;
        assert_eq!(
            c.poll(|r| got = Some((r.seq(), r.payload().to_vec()))),
            Ok(true)
        );
        assert_eq!(got, Some((seq, seq.to_le_bytes().to_vec())));
        assert_eq!(
            c.poll(|r| panic!("stale bytes delivered as record {}", r.seq())),
            Ok(false)
        );
    }
}

/// `peek` shows the next record without consuming it: across wraps and padding, every record
/// is peeked (twice) and then polled with the same contents; the producer gets no room from a
/// peek.
#[test]
fn peek_shows_the_next_record_and_consumes_nothing() {
    let (mut p, f) = in_process(&cfg(Mode::Lossless, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    assert_eq!(c.peek(|_| panic!("empty ring peeked")), Ok(false));
    let total = n(1_000, 120);
    let max = n(900, 250) as usize;
    let mut published = 0u64;
    let mut next = 0u64;
    while next < total {
        // Fill until the consumer holds the producer back.
        while published < total && p.publish(9, &payload(published, max)).is_ok() {
            published += 1;
        }
        if published < total {
            // A peek publishes no position: still no room.
            let mut seen = None;
            assert_eq!(c.peek(|r| seen = Some(r.seq())), Ok(true));
            assert_eq!(seen, Some(next));
            assert_eq!(
                p.publish(9, &payload(published, max)),
                Err(ClaimError::BackPressured)
            );
        }
        for _ in 0..2 {
            let mut peeked = None;
            assert_eq!(
                c.peek(|r| peeked = Some((r.seq(), r.msg_type(), r.payload().to_vec()))),
                Ok(true)
            );
            assert_eq!(peeked, Some((next, 9, payload(next, max))));
            assert_eq!(c.next_seq(), next);
        }
        let mut polled = None;
        assert_eq!(
            c.poll(|r| polled = Some((r.seq(), r.payload().to_vec()))),
            Ok(true)
        );
        assert_eq!(polled, Some((next, payload(next, max))));
        next += 1;
    }
    assert_eq!(c.peek(|_| panic!("drained ring peeked")), Ok(false));
    drop(p);
    assert_eq!(
        c.peek(|_| panic!("closed ring peeked")),
        Err(PollError::Closed)
    );
}

/// A broadcast consumer lapped before it peeks learns of the loss from the peek, exactly as a
/// poll would have told it, and then reads on from the oldest record.
#[test]
fn peek_reports_an_overrun_like_poll() {
    let (mut p, f) = in_process(&cfg(Mode::Broadcast, 4096)).unwrap();
    let mut c = f.consumer(&opts(StartAt::Oldest, Resync::Oldest)).unwrap();
    for seq in 0..n(500, 200) {
        p.publish(1, &seq.to_le_bytes()).unwrap();
    }
    let err = c.peek(|_| {}).unwrap_err();
    let PollError::Overrun {
        first_lost_seq,
        lost,
    } = err
    else {
        panic!("{err:?}");
    };
    assert_eq!(first_lost_seq, 0);
    let mut peeked = None;
    assert_eq!(c.peek(|r| peeked = Some(r.seq())), Ok(true));
    assert_eq!(peeked, Some(lost));
    let mut polled = None;
    assert_eq!(c.poll(|r| polled = Some(r.seq())), Ok(true));
    assert_eq!(polled, Some(lost));
}

/// The prefetches and the demotions are hints: asking for any position (masked into the region, past its end
/// too) changes no byte of the region.
#[test]
fn prefetches_change_nothing() {
    let config = cfg(Mode::Broadcast, 4096);
    let seg = crate::segment::Segment::heap(&config, 1).unwrap();
    let ring = RingHandle::new(Arc::clone(&seg));
    let mut p = Producer::from_segment(seg, config, None);
    for i in 0..40u64 {
        p.publish(1, &[i as u8; 80]).unwrap();
    }
    let data = *ring.data();
    // SAFETY: `0 + 4096 <= capacity`; nothing publishes while the bytes are read.
    let before = unsafe { data.bytes(0, 4096) }.to_vec();
    for pos in (0..3 * 4096 + 64).step_by(8) {
        data.prefetch(pos);
        data.prefetch_write(pos);
        data.demote(pos);
    }
    // SAFETY: as above.
    assert_eq!(unsafe { data.bytes(0, 4096) }, &before[..]);
}

/// `hand_off` takes each line written since the last call once (the line a record shares with
/// the next one again, since the next commit wrote it), and no more than 2 KiB before `tail`.
#[test]
fn hand_off_takes_the_lines_written_since_the_last_call() {
    let config = cfg(Mode::Broadcast, 65536);
    let seg = crate::segment::Segment::heap(&config, 1).unwrap();
    let mut p = Producer::from_segment(seg, config, None);
    let lines = |p: &mut Producer| {
        let mut v = Vec::new();
        p.hand_off_lines(|line| v.push(line));
        v
    };
    assert_eq!(lines(&mut p), Vec::<u64>::new());
    // 64-byte payloads make 80-byte records: [0, 80), then [80, 160).
    p.publish(1, &[1; 64]).unwrap();
    assert_eq!(lines(&mut p), vec![0, 64]);
    assert_eq!(lines(&mut p), Vec::<u64>::new());
    p.publish(1, &[2; 64]).unwrap();
    assert_eq!(lines(&mut p), vec![64, 128]);
    // 100 more end at 8160: only the lines of its last 2048 bytes, from 6112 on.
    for i in 0..100u8 {
        p.publish(1, &[i; 64]).unwrap();
    }
    let want: Vec<u64> = (6080..8160).step_by(64).collect();
    assert_eq!(lines(&mut p), want);
    p.hand_off();
    assert_eq!(lines(&mut p), Vec::<u64>::new());
}
