//! Property tests of record framing: random payload sizes, random interleavings of publish
//! and poll, and so random wrap points. Every payload must come back byte-for-byte, seqs must
//! be consecutive (or skip exactly what an overrun reported), padding must never be delivered.

use mdbus_shm::{
    ClaimError, Consumer, ConsumerOptions, Mode, PollError, Producer, Resync, RingConfig, StartAt,
    in_process,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Publish a record with this payload length.
    Publish(usize),
    /// Poll up to this many records.
    Poll(usize),
}

fn ops(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            4 => (0..=max_len).prop_map(Op::Publish),
            // Small payloads often, to pack many records between wraps.
            2 => (0..=24usize).prop_map(Op::Publish),
            1 => (1..40usize).prop_map(Op::Poll),
        ],
        1..400,
    )
}

/// Payload of record `seq`: its length and bytes derive from the seq, so a reader can check it
/// without knowing what was published.
fn body(seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

fn msg_type(seq: u64, len: usize) -> u32 {
    (seq as u32).wrapping_mul(31) ^ len as u32
}

/// Checks a delivered record against what was published.
fn check(published: &[usize], seq: u64, ty: u32, payload: &[u8]) {
    let len = published[seq as usize];
    assert_eq!(payload.len(), len, "seq {seq}: length");
    assert_eq!(ty, msg_type(seq, len), "seq {seq}: msg_type");
    assert_eq!(payload, body(seq, len).as_slice(), "seq {seq}: payload");
}

struct Reader {
    c: Consumer,
    next: u64,
    delivered: u64,
    lost: u64,
}

impl Reader {
    fn poll(&mut self, published: &[usize], max: usize, allow_loss: bool) {
        for _ in 0..max {
            let mut got = None;
            match self
                .c
                .poll(|r| got = Some((r.seq(), r.msg_type(), r.payload().to_vec())))
            {
                Ok(true) => {
                    let (seq, ty, payload) = got.unwrap();
                    assert_eq!(seq, self.next, "seqs must be consecutive");
                    check(published, seq, ty, &payload);
                    self.next += 1;
                    self.delivered += 1;
                }
                Ok(false) => return,
                Err(PollError::Overrun {
                    first_lost_seq,
                    lost,
                }) => {
                    assert!(allow_loss, "loss on a lossless ring");
                    assert_eq!(first_lost_seq, self.next);
                    assert!(lost >= 1);
                    self.next += lost;
                    self.lost += lost;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }
}

fn publish(p: &mut Producer, published: &mut Vec<usize>, len: usize) -> Result<(), ClaimError> {
    let seq = published.len() as u64;
    let mut claim = p.claim(len, msg_type(seq, len))?;
    claim.copy_from_slice(&body(seq, len));
    assert_eq!(claim.commit(), seq);
    published.push(len);
    Ok(())
}

fn ring(mode: Mode, capacity: usize) -> RingConfig {
    RingConfig {
        capacity,
        max_msg_len: (capacity / 4 - 16) as u32,
        mode,
        max_consumers: 2,
        ..RingConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn lossless_framing_round_trips(ops in ops(1008), cap_shift in 0u32..2) {
        let capacity = 4096usize << cap_shift;
        let (mut p, f) = in_process(&ring(Mode::Lossless, capacity)).unwrap();
        let c = f.consumer(&ConsumerOptions { start: StartAt::Oldest, resync: Resync::Oldest, lossless: true }).unwrap();
        let mut r = Reader { c, next: 0, delivered: 0, lost: 0 };
        let mut published = Vec::new();
        for op in ops {
            match op {
                Op::Publish(len) => {
                    if publish(&mut p, &mut published, len) == Err(ClaimError::BackPressured) {
                        // A full ring: reading frees room for exactly what was read.
                        r.poll(&published, usize::MAX, false);
                        publish(&mut p, &mut published, len).unwrap();
                    }
                }
                Op::Poll(n) => r.poll(&published, n, false),
            }
        }
        r.poll(&published, usize::MAX, false);
        prop_assert_eq!(r.delivered, published.len() as u64);
        prop_assert_eq!(r.lost, 0);
    }

    #[test]
    fn broadcast_framing_accounts_for_every_record(ops in ops(1008), resync_newest: bool) {
        let (mut p, f) = in_process(&ring(Mode::Broadcast, 4096)).unwrap();
        let resync = if resync_newest { Resync::Newest } else { Resync::Oldest };
        let c = f.consumer(&ConsumerOptions { start: StartAt::Oldest, resync, lossless: true }).unwrap();
        let mut r = Reader { c, next: 0, delivered: 0, lost: 0 };
        let mut published = Vec::new();
        for op in ops {
            match op {
                Op::Publish(len) => publish(&mut p, &mut published, len).unwrap(),
                Op::Poll(n) => r.poll(&published, n, true),
            }
        }
        r.poll(&published, usize::MAX, true);
        prop_assert_eq!(r.next, published.len() as u64);
        prop_assert_eq!(r.delivered + r.lost, published.len() as u64);
        prop_assert_eq!(r.c.stats().lost, r.lost);
    }

    #[test]
    fn late_joiners_start_on_record_boundaries(lens in prop::collection::vec(0..=1008usize, 1..200), start in 0u8..3) {
        let (mut p, f) = in_process(&ring(Mode::Broadcast, 4096)).unwrap();
        let mut published = Vec::new();
        for len in lens {
            publish(&mut p, &mut published, len).unwrap();
        }
        let start = [StartAt::Oldest, StartAt::Newest, StartAt::Next][start as usize];
        let c = f.consumer(&ConsumerOptions { start, resync: Resync::Oldest, lossless: true }).unwrap();
        let first = c.next_seq();
        let n = published.len() as u64;
        match start {
            StartAt::Newest => prop_assert_eq!(first, n - 1),
            StartAt::Next => prop_assert_eq!(first, n),
            StartAt::Oldest => prop_assert!(first < n),
        }
        let mut r = Reader { c, next: first, delivered: 0, lost: 0 };
        r.poll(&published, usize::MAX, false);
        prop_assert_eq!(r.next, n);
    }
}

/// A case proptest once found: a broadcast reader lapped several times over records of mixed
/// sizes must report exactly what it lost (`first_lost_seq` is the next seq it expected).
#[test]
fn broadcast_regression_mixed_sizes_lapped() {
    let ops = vec![
        Op::Publish(313),
        Op::Publish(753),
        Op::Publish(777),
        Op::Publish(969),
        Op::Publish(281),
        Op::Publish(873),
        Op::Publish(481),
        Op::Publish(489),
        Op::Publish(681),
        Op::Publish(713),
        Op::Publish(257),
        Op::Publish(454),
        Op::Publish(700),
        Op::Publish(362),
        Op::Publish(290),
        Op::Publish(24),
        Op::Publish(230),
        Op::Publish(2),
        Op::Publish(939),
        Op::Publish(0),
        Op::Publish(323),
        Op::Publish(572),
        Op::Publish(520),
        Op::Publish(584),
        Op::Publish(122),
        Op::Publish(642),
        Op::Publish(688),
        Op::Publish(956),
        Op::Publish(871),
        Op::Publish(777),
        Op::Publish(663),
        Op::Publish(815),
        Op::Publish(954),
        Op::Publish(317),
        Op::Publish(102),
        Op::Publish(12),
        Op::Publish(22),
        Op::Publish(21),
        Op::Publish(347),
        Op::Publish(12),
        Op::Publish(18),
        Op::Publish(273),
        Op::Publish(987),
        Op::Publish(320),
        Op::Publish(184),
        Op::Publish(712),
        Op::Poll(10),
        Op::Publish(20),
        Op::Publish(8),
        Op::Publish(918),
        Op::Publish(9),
        Op::Publish(366),
        Op::Poll(8),
        Op::Publish(807),
        Op::Publish(413),
        Op::Publish(870),
        Op::Publish(19),
        Op::Publish(0),
        Op::Publish(171),
        Op::Publish(13),
        Op::Publish(230),
        Op::Publish(24),
        Op::Publish(4),
        Op::Publish(885),
        Op::Publish(22),
        Op::Poll(14),
    ];
    let (mut p, f) = in_process(&ring(Mode::Broadcast, 4096)).unwrap();
    let c = f
        .consumer(&ConsumerOptions {
            start: StartAt::Oldest,
            resync: Resync::Oldest,
            lossless: true,
        })
        .unwrap();
    let mut r = Reader {
        c,
        next: 0,
        delivered: 0,
        lost: 0,
    };
    let mut published = Vec::new();
    for op in ops {
        match op {
            Op::Publish(len) => publish(&mut p, &mut published, len).unwrap(),
            Op::Poll(n) => r.poll(&published, n, true),
        }
    }
    r.poll(&published, usize::MAX, true);
    assert_eq!(r.next, published.len() as u64);
    assert_eq!(r.delivered + r.lost, published.len() as u64);
    assert_eq!(r.c.stats().lost, r.lost);
}
