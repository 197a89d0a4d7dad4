use super::*;
use crate::moldudp64::{PacketBuilder, encode_end_of_session, encode_heartbeat};
use crate::retransmit::{RetransmitConfig, RetransmitStore};

const S: Session = Session(*b"SESSION001");
const MS: u64 = 1_000_000;

fn pkt_of(session: Session, seq: u64, msgs: &[&[u8]]) -> Vec<u8> {
    let mut buf = vec![0u8; 9000];
    let mut b = PacketBuilder::new(&mut buf, session, seq).unwrap();
    for m in msgs {
        b.push(m).unwrap();
    }
    let n = b.finish();
    buf.truncate(n);
    buf
}

fn msg(seq: u64) -> Vec<u8> {
    format!("m{seq}").into_bytes()
}

/// A packet of the generated messages `seq .. seq + n`.
fn pkt(seq: u64, n: u64) -> Vec<u8> {
    let msgs: Vec<Vec<u8>> = (0..n).map(|i| msg(seq.wrapping_add(i))).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    pkt_of(S, seq, &refs)
}

fn hb(seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; 20];
    encode_heartbeat(&mut b, S, seq).unwrap();
    b
}

fn eos(seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; 20];
    encode_end_of_session(&mut b, S, seq).unwrap();
    b
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Msg(u64),
    Gap(u64, u64),
}

/// Collects what is delivered; checks each message is the one generated for its seq.
#[derive(Debug, Default)]
struct Sink {
    items: Vec<Item>,
}

impl Deliver for &mut Sink {
    fn message(&mut self, seq: u64, m: &[u8]) {
        assert_eq!(m, msg(seq), "content of {seq}");
        self.items.push(Item::Msg(seq));
    }
    fn gap(&mut self, first: u64, count: u64) {
        self.items.push(Item::Gap(first, count));
    }
}

impl Sink {
    fn take(&mut self) -> Vec<Item> {
        std::mem::take(&mut self.items)
    }
}

fn msgs(r: std::ops::Range<u64>) -> Vec<Item> {
    r.map(Item::Msg).collect()
}

fn events(s: &mut Sequencer) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn requests(s: &mut Sequencer, now: u64) -> Vec<(u64, u16)> {
    std::iter::from_fn(|| s.poll_request(now))
        .map(|r| {
            assert_eq!(r.session, S);
            (r.sequence_number, r.message_count)
        })
        .collect()
}

fn cfg() -> SequencerConfig {
    SequencerConfig {
        nak_delay: Duration::from_millis(1),
        request_timeout: Duration::from_millis(10),
        max_retries: 2,
        backoff: Backoff {
            factor: 2,
            max: Duration::from_millis(15),
        },
        ..SequencerConfig::default()
    }
}

fn seq_with(c: SequencerConfig) -> (Sequencer, Sink) {
    (Sequencer::new(c).unwrap(), Sink::default())
}

#[test]
fn in_order_messages_are_delivered_zero_copy() {
    let mut s = Sequencer::new(SequencerConfig {
        late_join: LateJoin::FromSequence(1),
        ..cfg()
    })
    .unwrap();
    let p = pkt(1, 3);
    let range = p.as_ptr_range();
    let mut seen = Vec::new();
    s.handle_packet(0, Line::A, &p, |seq, m: &[u8]| {
        assert!(range.contains(&m.as_ptr()), "borrowed from the datagram");
        seen.push(seq);
    });
    assert_eq!(seen, [1, 2, 3]);
    assert_eq!(events(&mut s), [Event::SessionStarted { session: S }]);
    assert_eq!(s.session(), Some(S));
    assert_eq!(s.next_seq(), 4);
    let st = s.stats();
    assert_eq!((st.packets, st.messages, st.duplicates), (1, 3, 0));
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn line_b_duplicates_lose_arbitration() {
    let (mut s, mut sink) = seq_with(cfg());
    s.handle_packet(0, Line::A, &pkt(1, 2), &mut sink);
    s.handle_packet(0, Line::B, &pkt(1, 2), &mut sink);
    // B is ahead for a moment: it wins 3..4, A's copy is the duplicate.
    s.handle_packet(0, Line::B, &pkt(3, 2), &mut sink);
    s.handle_packet(0, Line::A, &pkt(3, 2), &mut sink);
    // Overlapping packets count message by message.
    s.handle_packet(0, Line::A, &pkt(4, 3), &mut sink);
    assert_eq!(sink.take(), msgs(1..7));
    assert_eq!(s.stats().duplicates, 2 + 2 + 1);
    assert_eq!(s.stats().gaps_detected, 0);
}

#[test]
fn reordering_within_the_nak_delay_asks_for_nothing() {
    let (mut s, mut sink) = seq_with(cfg());
    s.handle_packet(0, Line::A, &pkt(1, 1), &mut sink);
    s.handle_packet(0, Line::A, &pkt(4, 2), &mut sink);
    s.handle_packet(MS / 4, Line::A, &pkt(3, 1), &mut sink);
    assert_eq!(sink.take(), msgs(1..2));
    assert_eq!(s.missing(), 1);
    assert_eq!(s.reorder_held().0, 3);
    assert_eq!(s.next_deadline(), Some(MS), "NAK delay after detection");
    assert_eq!(requests(&mut s, MS - 1), []);
    s.handle_packet(MS / 2, Line::A, &pkt(2, 1), &mut sink);
    assert_eq!(sink.take(), msgs(2..6));
    let st = s.stats();
    assert_eq!(
        (st.out_of_order, st.gaps_detected, st.requests_sent),
        (3, 1, 0)
    );
    assert_eq!(s.reorder_held(), (0, 0));
    assert_eq!(s.next_deadline(), None);
    assert_eq!(requests(&mut s, 10 * MS), []);
    // Only the start event: filling a gap that was never requested is not a recovery.
    assert_eq!(events(&mut s), [Event::SessionStarted { session: S }]);
}

#[test]
fn a_gap_is_requested_after_the_nak_delay_and_recovered() {
    let (mut s, mut sink) = seq_with(cfg());
    s.handle_packet(0, Line::A, &pkt(1, 2), &mut sink);
    s.handle_packet(0, Line::A, &pkt(6, 2), &mut sink);
    events(&mut s);
    assert_eq!(requests(&mut s, MS), [(3, 3)]);
    assert_eq!(
        events(&mut s),
        [Event::Gap {
            first: 3,
            count: 3,
            recoverable: true
        }]
    );
    // In flight: not asked again before the timeout.
    assert_eq!(requests(&mut s, 5 * MS), []);
    assert_eq!(s.next_deadline(), Some(11 * MS));
    s.handle_packet(3 * MS, Line::Recovery, &pkt(3, 3), &mut sink);
    assert_eq!(sink.take(), [msgs(1..3), msgs(3..8)].concat());
    assert_eq!(
        events(&mut s),
        [Event::Recovered {
            first: 3,
            count: 3,
            latency_ns: 3 * MS
        }]
    );
    assert_eq!(s.stats().recovered, 3);
    assert_eq!(requests(&mut s, 20 * MS), []);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn requests_coalesce_neighbours_and_split_large_gaps() {
    let (mut s, mut sink) = seq_with(SequencerConfig {
        max_request_messages: 10,
        coalesce_within: 2,
        max_outstanding_requests: 3,
        ..cfg()
    });
    s.handle_packet(0, Line::A, &pkt(1, 1), &mut sink);
    // Missing: 2..4, (4..6 received), 6..8, (8..12 received), 12..40.
    s.handle_packet(0, Line::A, &pkt(4, 2), &mut sink);
    s.handle_packet(0, Line::A, &pkt(8, 4), &mut sink);
    s.handle_packet(0, Line::A, &pkt(40, 1), &mut sink);
    // 2..8 coalesced over the 2 received messages; 12..40 split by 10; at most 3 in flight.
    assert_eq!(requests(&mut s, MS), [(2, 6), (12, 10), (22, 10)]);
    assert_eq!(s.stats().requests_sent, 3);
    // The first answer completes a request: the next chunk goes out.
    s.handle_packet(2 * MS, Line::Recovery, &pkt(2, 6), &mut sink);
    assert_eq!(requests(&mut s, 2 * MS), [(32, 8)]);
    assert_eq!(s.stats().duplicates, 2, "4 and 5 came back");
    assert_eq!(sink.take(), msgs(1..12));
}

#[test]
fn retries_back_off_then_the_gap_is_given_up_in_place() {
    let (mut s, mut sink) = seq_with(cfg()); // timeout 10 ms doubling to 15 ms, 2 retries
    s.handle_packet(0, Line::A, &pkt(1, 1), &mut sink);
    s.handle_packet(0, Line::A, &pkt(3, 2), &mut sink);
    events(&mut s);
    assert_eq!(requests(&mut s, MS), [(2, 1)]);
    assert_eq!(s.next_deadline(), Some(11 * MS));
    assert_eq!(requests(&mut s, 11 * MS - 1), []);
    assert_eq!(requests(&mut s, 11 * MS), [(2, 1)]);
    assert_eq!(
        s.next_deadline(),
        Some(26 * MS),
        "10 ms doubled, capped at 15 ms"
    );
    assert_eq!(requests(&mut s, 26 * MS), [(2, 1)]);
    assert_eq!(s.next_deadline(), Some(41 * MS));
    // Out of retries: the timeout gives it up; delivery continues past it.
    assert_eq!(requests(&mut s, 41 * MS), []);
    s.handle_timeout(40 * MS, &mut sink);
    assert_eq!(sink.take(), msgs(1..2));
    s.handle_timeout(41 * MS, &mut sink);
    assert_eq!(
        sink.take(),
        [vec![Item::Gap(2, 1)], msgs(3..5)].concat(),
        "the gap in place"
    );
    assert_eq!(
        events(&mut s),
        [
            Event::Gap {
                first: 2,
                count: 1,
                recoverable: true
            },
            Event::Gap {
                first: 2,
                count: 1,
                recoverable: false
            }
        ]
    );
    let st = s.stats();
    assert_eq!((st.requests_sent, st.unrecoverable, st.messages), (3, 1, 3));
    // A late retransmission of it is a duplicate.
    s.handle_packet(42 * MS, Line::Recovery, &pkt(2, 1), &mut sink);
    assert_eq!(sink.take(), []);
    assert_eq!(s.stats().duplicates, 1);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn an_answer_in_part_shrinks_the_retry() {
    let (mut s, mut sink) = seq_with(cfg());
    s.handle_packet(0, Line::A, &pkt(1, 1), &mut sink);
    s.handle_packet(0, Line::A, &pkt(11, 1), &mut sink);
    assert_eq!(requests(&mut s, MS), [(2, 9)]);
    s.handle_packet(2 * MS, Line::Recovery, &pkt(2, 3), &mut sink);
    s.handle_packet(2 * MS, Line::Recovery, &pkt(8, 1), &mut sink);
    assert_eq!(requests(&mut s, 11 * MS), [(5, 6)], "from 5 through 10");
    s.handle_packet(12 * MS, Line::Recovery, &pkt(5, 6), &mut sink);
    assert_eq!(sink.take(), msgs(1..12));
}

#[test]
fn not_available_answers_give_up_at_once() {
    let (mut s, mut sink) = seq_with(cfg());
    s.handle_packet(0, Line::A, &pkt(1, 1), &mut sink);
    s.handle_packet(0, Line::A, &pkt(10, 1), &mut sink);
    assert_eq!(requests(&mut s, MS), [(2, 8)]);
    events(&mut s);
    // The server holds only from 6 on: it says so, then sends 6..10.
    s.handle_packet(2 * MS, Line::Recovery, &hb(6), &mut sink);
    assert_eq!(sink.take(), [msgs(1..2), vec![Item::Gap(2, 4)]].concat());
    s.handle_packet(2 * MS, Line::Recovery, &pkt(6, 4), &mut sink);
    assert_eq!(sink.take(), msgs(6..11));
    assert_eq!(
        events(&mut s),
        [
            Event::Gap {
                first: 2,
                count: 4,
                recoverable: false
            },
            Event::Recovered {
                first: 6,
                count: 4,
                latency_ns: 2 * MS
            }
        ]
    );
    assert_eq!(s.stats().not_available, 1);
    assert_eq!(s.stats().heartbeats, 0, "not a heartbeat of the feed");
    assert_eq!(requests(&mut s, 100 * MS), []);
}

#[test]
fn heartbeats_reveal_a_tail_gap_and_end_of_session_waits_for_it() {
    let (mut s, mut sink) = seq_with(cfg());
    s.handle_packet(0, Line::A, &pkt(1, 3), &mut sink);
    s.handle_packet(0, Line::A, &hb(4), &mut sink);
    assert_eq!(s.missing(), 0);
    // 4 and 5 were lost; the heartbeat says 6 is next.
    s.handle_packet(MS, Line::A, &hb(6), &mut sink);
    s.handle_packet(MS, Line::A, &eos(6), &mut sink);
    assert_eq!(s.missing(), 2);
    assert!(!s.is_ended());
    events(&mut s);
    assert_eq!(requests(&mut s, 2 * MS), [(4, 2)]);
    s.handle_packet(3 * MS, Line::Recovery, &pkt(4, 2), &mut sink);
    assert!(s.is_ended());
    let ev = events(&mut s);
    assert_eq!(ev.last(), Some(&Event::EndOfSession { next_seq: 6 }));
    assert_eq!(sink.take(), msgs(1..6));
    assert_eq!(s.stats().heartbeats, 2);
    // After the end: nothing more.
    s.handle_packet(4 * MS, Line::A, &pkt(6, 1), &mut sink);
    assert_eq!(sink.take(), []);
    assert_eq!(s.poll_request(100 * MS), None);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn end_of_session_after_a_lost_tail_ends_once_given_up() {
    let (mut s, mut sink) = seq_with(SequencerConfig {
        max_outstanding_requests: 0, // no retransmission server
        ..cfg()
    });
    s.handle_packet(0, Line::A, &pkt(1, 1), &mut sink);
    s.handle_packet(0, Line::A, &eos(4), &mut sink);
    assert_eq!(s.poll_request(10 * MS), None);
    assert_eq!(s.next_deadline(), Some(MS));
    s.handle_timeout(MS, &mut sink);
    assert_eq!(sink.take(), vec![Item::Msg(1), Item::Gap(2, 2)]);
    assert!(s.is_ended());
}

#[test]
fn other_sessions_and_damaged_packets_are_counted_and_ignored() {
    let (mut s, mut sink) = seq_with(SequencerConfig {
        session: Some(S),
        ..cfg()
    });
    let other = Session(*b"OTHER00001");
    s.handle_packet(0, Line::A, &pkt_of(other, 1, &[b"x"]), &mut sink);
    assert_eq!(s.next_seq(), 0, "not started by a foreign packet");
    s.handle_packet(0, Line::A, &[0u8; 7], &mut sink);
    s.handle_packet(0, Line::A, &pkt(1, 2), &mut sink);
    // A packet of 3..6 cut inside its third block: 3 and 4 are delivered, 5 stays missing.
    let mut cut = pkt(3, 3);
    cut.truncate(cut.len() - 1);
    s.handle_packet(0, Line::A, &cut, &mut sink);
    assert_eq!(sink.take(), msgs(1..5));
    assert_eq!(
        s.missing(),
        0,
        "the count of a damaged packet is not trusted"
    );
    s.handle_packet(0, Line::A, &pkt(6, 1), &mut sink);
    assert_eq!(s.missing(), 1);
    assert_eq!(requests(&mut s, MS), [(5, 1)]);
    let st = s.stats();
    assert_eq!((st.foreign_session, st.malformed, st.packets), (1, 2, 5));
}

#[test]
fn late_join_at_the_live_edge_reports_what_it_skipped() {
    let (mut s, mut sink) = seq_with(cfg());
    s.handle_packet(0, Line::A, &pkt(100, 2), &mut sink);
    // Held until a second packet near it shows it is the feed's.
    assert_eq!(sink.take(), []);
    assert_eq!(events(&mut s), [Event::SessionStarted { session: S }]);
    s.handle_packet(0, Line::B, &pkt(100, 2), &mut sink);
    assert_eq!(sink.take(), [], "a copy proves nothing");
    s.handle_packet(0, Line::A, &pkt(102, 1), &mut sink);
    assert_eq!(sink.take(), msgs(100..103));
    assert_eq!(events(&mut s), [Event::LateJoin { first_seq: 100 }]);
    assert_eq!(s.stats().late_join, 99);
    assert_eq!(s.poll_request(10 * MS), None);
    // A joiner that first sees a heartbeat starts there.
    let (mut s, mut sink) = seq_with(cfg());
    s.handle_packet(0, Line::B, &hb(50), &mut sink);
    s.handle_packet(0, Line::B, &pkt(50, 1), &mut sink);
    assert_eq!(sink.take(), msgs(50..51));
}

#[test]
fn late_join_from_a_sequence_recovers_the_start() {
    let (mut s, mut sink) = seq_with(SequencerConfig {
        late_join: LateJoin::FromSequence(5),
        ..cfg()
    });
    s.handle_packet(0, Line::A, &pkt(1, 3), &mut sink);
    assert_eq!(sink.take(), []);
    assert_eq!(s.stats().duplicates, 3, "before the start");
    s.handle_packet(0, Line::A, &pkt(8, 1), &mut sink);
    assert_eq!(requests(&mut s, MS), [(5, 3)]);
    s.handle_packet(MS, Line::Recovery, &pkt(5, 3), &mut sink);
    assert_eq!(sink.take(), msgs(5..9));
    assert!(events(&mut s).contains(&Event::LateJoin { first_seq: 5 }));
}

#[test]
fn a_full_reorder_store_gives_up_the_oldest_gap() {
    // Room for 4 messages of 2 or 3 bytes: 10 bytes.
    let (mut s, mut sink) = seq_with(SequencerConfig {
        reorder_capacity_bytes: 10,
        ..cfg()
    });
    s.handle_packet(0, Line::A, &pkt(1, 1), &mut sink);
    s.handle_packet(0, Line::A, &pkt(3, 4), &mut sink); // m3..m6: 8 bytes held
    assert_eq!(s.reorder_held(), (4, 8));
    s.handle_packet(0, Line::A, &pkt(8, 2), &mut sink); // m8 fits, m9 does not
    // Message 2 given up (in place), 3..6 delivered, 7 still missing, 8 and 9 held.
    assert_eq!(
        sink.take(),
        [msgs(1..2), vec![Item::Gap(2, 1)], msgs(3..7)].concat()
    );
    assert_eq!(s.reorder_held().0, 2);
    assert_eq!(s.stats().overflows, 1);
    s.handle_packet(0, Line::A, &pkt(7, 1), &mut sink);
    assert_eq!(sink.take(), msgs(7..10));
}

#[test]
fn a_jump_beyond_the_reorder_window_gives_up_the_gap() {
    let (mut s, mut sink) = seq_with(SequencerConfig {
        reorder_capacity_messages: 8,
        ..cfg()
    });
    s.handle_packet(0, Line::A, &pkt(1, 1), &mut sink);
    s.handle_packet(0, Line::A, &pkt(100, 1), &mut sink);
    assert_eq!(
        sink.take(),
        vec![Item::Msg(1), Item::Gap(2, 98), Item::Msg(100)]
    );
}

#[test]
fn a_full_table_of_gaps_gives_up_the_oldest() {
    let (mut s, mut sink) = seq_with(SequencerConfig {
        max_gaps: 2,
        ..cfg()
    });
    s.handle_packet(0, Line::A, &pkt(1, 1), &mut sink);
    s.handle_packet(0, Line::A, &pkt(3, 1), &mut sink); // gap 2
    s.handle_packet(0, Line::A, &pkt(5, 1), &mut sink); // gap 4
    s.handle_packet(0, Line::A, &pkt(7, 1), &mut sink); // gap 6: 2 goes
    assert_eq!(
        sink.take(),
        vec![Item::Msg(1), Item::Gap(2, 1), Item::Msg(3)]
    );
    assert_eq!(s.missing(), 2);
    // A message inside the oldest gap that would need a split, with the table full: 12..20
    // missing, 11 arrives in the middle of nothing; 15 would split 12..20.
    let (mut s, mut sink) = seq_with(SequencerConfig {
        max_gaps: 2,
        ..cfg()
    });
    s.handle_packet(0, Line::A, &pkt(1, 1), &mut sink);
    s.handle_packet(0, Line::A, &pkt(10, 1), &mut sink); // gap 2..10
    s.handle_packet(0, Line::A, &pkt(20, 1), &mut sink); // gap 11..20
    s.handle_packet(0, Line::A, &pkt(5, 1), &mut sink); // splitting 2..10 skips nothing
    assert_eq!(
        sink.take(),
        msgs(1..2),
        "the oldest gap is never skipped over its own message"
    );
    assert_eq!(s.missing(), 8 + 9);
    s.handle_packet(0, Line::A, &pkt(15, 1), &mut sink); // splitting 11..20: 2..10 goes
    assert_eq!(sink.take(), vec![Item::Gap(2, 8), Item::Msg(10)]);
}

#[test]
fn without_a_server_gaps_are_given_up_after_the_nak_delay() {
    let (mut s, mut sink) = seq_with(SequencerConfig {
        max_outstanding_requests: 0,
        ..cfg()
    });
    s.handle_packet(0, Line::A, &pkt(1, 1), &mut sink);
    s.handle_packet(0, Line::A, &pkt(4, 1), &mut sink);
    s.handle_packet(MS / 2, Line::A, &pkt(2, 1), &mut sink); // reordered, not lost
    assert_eq!(s.next_deadline(), Some(MS));
    s.handle_timeout(MS / 2, &mut sink);
    assert_eq!(sink.take(), msgs(1..3));
    s.handle_timeout(MS, &mut sink);
    assert_eq!(sink.take(), vec![Item::Gap(3, 1), Item::Msg(4)]);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn config_is_checked() {
    for bad in [
        SequencerConfig {
            max_request_messages: 0,
            ..cfg()
        },
        SequencerConfig {
            max_gaps: 1,
            ..cfg()
        },
        SequencerConfig {
            backoff: Backoff {
                factor: 0,
                max: Duration::ZERO,
            },
            ..cfg()
        },
        SequencerConfig {
            max_gap: 0,
            ..cfg()
        },
    ] {
        assert!(Sequencer::new(bad).is_err(), "{bad:?}");
    }
}

/// A closure sink works too; gaps then come only as events.
#[test]
fn closures_are_sinks() {
    let mut s = Sequencer::new(SequencerConfig {
        max_outstanding_requests: 0,
        ..cfg()
    })
    .unwrap();
    let mut got = Vec::new();
    s.handle_packet(0, Line::A, &pkt(1, 1), |q, _: &[u8]| got.push(q));
    s.handle_packet(0, Line::A, &pkt(3, 1), |q, _: &[u8]| got.push(q));
    s.handle_timeout(MS, |q, _: &[u8]| got.push(q));
    assert_eq!(got, [1, 3]);
    assert!(events(&mut s).contains(&Event::Gap {
        first: 2,
        count: 1,
        recoverable: false
    }));
}

mod simulation {
    //! A message stream chopped into packets, sent on two lines that drop, duplicate, and
    //! reorder, with a retransmission server (sans-IO) whose requests and answers may be lost
    //! too, all on a simulated clock.

    use super::*;
    use proptest::prelude::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    #[derive(Clone, Debug)]
    struct Net {
        /// Loss, in percent, of line A and line B packets.
        loss: [u8; 2],
        /// Packets duplicated on a line, in percent.
        dup: u8,
        /// Largest extra delay of a line packet (reordering), in microseconds.
        jitter_us: u64,
        /// Loss of requests and of answers, in percent.
        recovery_loss: u8,
        /// Delay of an answer, in microseconds.
        answer_us: u64,
    }

    #[derive(Debug)]
    enum Ev {
        /// The feed sends packet `i` on both lines.
        Send(usize),
        /// A datagram reaches the sequencer.
        Arrive(Line, Vec<u8>),
        /// The feed sends end of session (again).
        Eos,
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn pct(&mut self, p: u8) -> bool {
            self.next() % 100 < u64::from(p)
        }
        fn upto(&mut self, n: u64) -> u64 {
            if n == 0 { 0 } else { self.next() % (n + 1) }
        }
    }

    struct Outcome {
        items: Vec<Item>,
        events: Vec<Event>,
        stats: SequencerStats,
        n: u64,
    }

    fn simulate(
        n: u64,
        chunk: &[u8],
        net: &Net,
        c: SequencerConfig,
        store_messages: usize,
        seed: u64,
    ) -> Outcome {
        let mut rng = Rng(seed | 1);
        // Packets: the stream chopped into chunks of 1..=8 messages.
        let mut packets = Vec::new();
        let mut first = 1;
        let mut k = 0;
        while first <= n {
            let len = u64::from(chunk[k % chunk.len()]).min(n + 1 - first);
            packets.push((first, len));
            first += len;
            k += 1;
        }
        let mut server = RetransmitStore::new(RetransmitConfig {
            capacity_messages: store_messages,
            max_reply_messages: 16,
            max_reply_packets: 4,
            max_packet_len: 20 + 4 * 8,
            rate_messages_per_sec: 0,
            ..RetransmitConfig::new(S)
        })
        .unwrap();
        let mut seq = Sequencer::new(c).unwrap();
        let mut sink = Sink::default();
        let mut evs = Vec::new();
        let mut heap: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
        let mut payloads: Vec<Option<Ev>> = Vec::new();
        let mut order = 0u64;
        let mut push = |heap: &mut BinaryHeap<_>, payloads: &mut Vec<Option<Ev>>, t: u64, e| {
            order += 1;
            payloads.push(Some(e));
            heap.push(Reverse((t, order, payloads.len() - 1)));
        };
        let us = 1_000;
        for i in 0..packets.len() {
            push(&mut heap, &mut payloads, i as u64 * 20 * us, Ev::Send(i));
        }
        push(
            &mut heap,
            &mut payloads,
            packets.len() as u64 * 20 * us,
            Ev::Eos,
        );
        let mut now = 0;
        let mut steps = 0;
        let mut eos_sent = 0;
        while !seq.is_ended() {
            steps += 1;
            assert!(steps < 1_000_000, "no progress");
            let next_ev = heap.peek().map(|r| r.0.0);
            let deadline = seq.next_deadline();
            match (next_ev, deadline) {
                (None, None) => panic!("stalled: nothing scheduled, sequencer idle but not ended"),
                (Some(t), Some(d)) if d < t => {
                    now = now.max(d);
                    seq.handle_timeout(now, &mut sink);
                }
                (None, Some(d)) => {
                    now = now.max(d);
                    seq.handle_timeout(now, &mut sink);
                }
                (Some(_), _) => {
                    let Reverse((t, _, idx)) = heap.pop().unwrap();
                    now = now.max(t);
                    match payloads[idx].take().unwrap() {
                        Ev::Send(i) => {
                            let (first, len) = packets[i];
                            for s in first..first + len {
                                assert_eq!(server.push(&msg(s)).unwrap(), s);
                            }
                            let bytes = pkt(first, len);
                            for (li, line) in [Line::A, Line::B].into_iter().enumerate() {
                                let copies = if rng.pct(net.dup) { 2 } else { 1 };
                                for _ in 0..copies {
                                    if !rng.pct(net.loss[li]) {
                                        let at = now + rng.upto(net.jitter_us) * us;
                                        push(
                                            &mut heap,
                                            &mut payloads,
                                            at,
                                            Ev::Arrive(line, bytes.clone()),
                                        );
                                    }
                                }
                            }
                        }
                        Ev::Eos => {
                            // The feed repeats end of session until the receiver is done
                            // (each copy may be lost like any packet).
                            eos_sent += 1;
                            assert!(eos_sent < 10_000, "end of session never taken");
                            let next = n + 1;
                            for (li, line) in [Line::A, Line::B].into_iter().enumerate() {
                                if !rng.pct(net.loss[li]) {
                                    push(
                                        &mut heap,
                                        &mut payloads,
                                        now + us,
                                        Ev::Arrive(line, eos(next)),
                                    );
                                }
                            }
                            push(&mut heap, &mut payloads, now + 50 * us, Ev::Eos);
                        }
                        Ev::Arrive(line, bytes) => seq.handle_packet(now, line, &bytes, &mut sink),
                    }
                }
            }
            while let Some(r) = seq.poll_request(now) {
                assert!(r.message_count >= 1);
                if rng.pct(net.recovery_loss) {
                    continue;
                }
                let mut b = [0u8; 20];
                r.encode(&mut b).unwrap();
                let mut answers = Vec::new();
                let src = "10.0.0.1:1".parse().unwrap();
                let _ = server.handle_request(now, src, &b, |p| answers.push(p.to_vec()));
                for a in answers {
                    if !rng.pct(net.recovery_loss) {
                        let at = now + net.answer_us * us;
                        push(&mut heap, &mut payloads, at, Ev::Arrive(Line::Recovery, a));
                    }
                }
            }
            evs.extend(std::iter::from_fn(|| seq.poll_event()));
        }
        Outcome {
            items: sink.items,
            events: evs,
            stats: seq.stats(),
            n,
        }
    }

    /// Every message exactly once, in order, or inside exactly one unrecoverable gap; the
    /// gaps delivered in place are exactly the unrecoverable `Gap` events.
    fn check(o: &Outcome) -> Result<(), TestCaseError> {
        let mut next = 1;
        let mut gaps = Vec::new();
        for item in &o.items {
            match *item {
                Item::Msg(s) => {
                    prop_assert_eq!(s, next, "message out of order");
                    next += 1;
                }
                Item::Gap(first, count) => {
                    prop_assert_eq!(first, next, "gap out of place");
                    prop_assert!(count > 0);
                    next += count;
                    gaps.push((first, count));
                }
            }
        }
        prop_assert_eq!(next, o.n + 1, "stream not covered");
        let gap_events: Vec<(u64, u64)> = o
            .events
            .iter()
            .filter_map(|e| match *e {
                Event::Gap {
                    first,
                    count,
                    recoverable: false,
                } => Some((first, count)),
                _ => None,
            })
            .collect();
        prop_assert_eq!(&gap_events, &gaps);
        let lost: u64 = gaps.iter().map(|g| g.1).sum();
        prop_assert_eq!(o.stats.messages + lost, o.n);
        prop_assert_eq!(o.stats.unrecoverable, lost);
        prop_assert_eq!(
            o.events.last(),
            Some(&Event::EndOfSession { next_seq: o.n + 1 })
        );
        Ok(())
    }

    fn net() -> impl Strategy<Value = Net> {
        ([0u8..40, 0u8..40], 0u8..20, 0u64..200, 0u8..30, 10u64..400).prop_map(
            |(loss, dup, jitter_us, recovery_loss, answer_us)| Net {
                loss,
                dup,
                jitter_us,
                recovery_loss,
                answer_us,
            },
        )
    }

    fn config() -> impl Strategy<Value = SequencerConfig> {
        (
            (0u64..300, 200u64..2000, 0u32..4, 1u32..3),
            (0usize..4, 1u16..20, 0u16..4),
            (
                prop_oneof![Just(1 << 20), 8usize..200],
                4usize..300,
                2usize..12,
            ),
        )
            .prop_map(
                |(
                    (nak_us, timeout_us, max_retries, factor),
                    (max_out, max_req, coalesce),
                    (bytes, window, max_gaps),
                )| SequencerConfig {
                    session: None,
                    nak_delay: Duration::from_micros(nak_us),
                    request_timeout: Duration::from_micros(timeout_us),
                    max_retries,
                    backoff: Backoff {
                        factor,
                        max: Duration::from_millis(5),
                    },
                    max_outstanding_requests: max_out,
                    max_request_messages: max_req,
                    coalesce_within: coalesce,
                    reorder_capacity_bytes: bytes,
                    reorder_capacity_messages: window,
                    max_gaps,
                    late_join: LateJoin::FromSequence(1),
                    max_gap: 1_000_000,
                    jump_confirm: Duration::from_secs(2),
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_message_once_in_order_or_in_an_exact_gap(
            n in 1u64..400,
            chunk in prop::collection::vec(1u8..=8, 1..8),
            net in net(),
            c in config(),
            store in prop_oneof![Just(100_000usize), 1usize..50],
            seed in any::<u64>(),
        ) {
            let o = simulate(n, &chunk, &net, c, store, seed);
            check(&o)?;
        }

        /// With a server that has everything, requests and answers that arrive, answers
        /// faster than the timeout, and room enough, nothing is lost however bad the lines.
        #[test]
        fn nothing_is_lost_when_recovery_works(
            n in 1u64..400,
            chunk in prop::collection::vec(1u8..=8, 1..8),
            loss in [0u8..60, 0u8..60],
            dup in 0u8..20,
            jitter_us in 0u64..200,
            seed in any::<u64>(),
        ) {
            let net = Net { loss, dup, jitter_us, recovery_loss: 0, answer_us: 50 };
            let c = SequencerConfig {
                nak_delay: Duration::from_micros(100),
                request_timeout: Duration::from_micros(500),
                late_join: LateJoin::FromSequence(1),
                ..SequencerConfig::default()
            };
            let o = simulate(n, &chunk, &net, c, 100_000, seed);
            check(&o)?;
            prop_assert_eq!(o.stats.unrecoverable, 0);
            prop_assert_eq!(o.stats.messages, n);
        }
    }
}

/// Forged and impossible input: none of it may affect delivery of the real session.
mod forged {
    use super::*;

    /// The real session 1..=10 in packets of 2, from `from` (inclusive) to 10.
    fn real(s: &mut Sequencer, sink: &mut Sink, from: u64, to: u64) {
        let mut q = from;
        while q < to {
            let n = (to - q).min(2);
            s.handle_packet(q * 1000, Line::A, &pkt(q, n), &mut *sink);
            q += n;
        }
    }

    fn quiet(s: &mut Sequencer) {
        assert_eq!(requests(s, 1 << 40), [], "nothing to re-request");
        assert_eq!(s.missing(), 0);
        assert!(
            !events(s).iter().any(|e| matches!(e, Event::Gap { .. })),
            "no gap reported"
        );
    }

    #[test]
    fn a_forged_packet_far_ahead_is_held_off() {
        let (mut s, mut sink) = seq_with(cfg());
        real(&mut s, &mut sink, 1, 5);
        s.handle_packet(5000, Line::A, &pkt(5 + 1_000_000_000_000, 1), &mut sink);
        real(&mut s, &mut sink, 5, 11);
        assert_eq!(sink.take(), msgs(1..11));
        assert_eq!(s.highest_seen(), 11);
        quiet(&mut s);
        let st = s.stats();
        assert_eq!((st.implausible_jumps, st.jumps_corroborated), (1, 0));
        assert_eq!(
            (st.messages, st.unrecoverable, st.gaps_detected),
            (10, 0, 0)
        );
    }

    #[test]
    fn sequence_numbers_near_u64_max_neither_wrap_nor_act() {
        let (mut s, mut sink) = seq_with(cfg());
        real(&mut s, &mut sink, 1, 5);
        // The last message would be u64::MAX: seq + count passes u64::MAX.
        s.handle_packet(5000, Line::A, &pkt(u64::MAX, 1), &mut sink);
        s.handle_packet(5000, Line::B, &pkt(u64::MAX - 1, 2), &mut sink);
        assert_eq!(s.stats().malformed, 2);
        // The very last valid message: far ahead, held off.
        s.handle_packet(5000, Line::A, &pkt(u64::MAX - 1, 1), &mut sink);
        real(&mut s, &mut sink, 5, 11);
        assert_eq!(sink.take(), msgs(1..11));
        quiet(&mut s);
        assert_eq!(s.stats().implausible_jumps, 1);
        assert_eq!(s.stats().messages, 10);
    }

    #[test]
    fn a_heartbeat_announcing_a_far_sequence_is_held_off() {
        let (mut s, mut sink) = seq_with(cfg());
        real(&mut s, &mut sink, 1, 5);
        s.handle_packet(5000, Line::A, &hb(1_000_000_000_000_000_000), &mut sink);
        s.handle_packet(5000, Line::A, &hb(u64::MAX), &mut sink);
        real(&mut s, &mut sink, 5, 11);
        quiet(&mut s);
        s.handle_packet(20_000, Line::A, &eos(11), &mut sink);
        assert_eq!(sink.take(), msgs(1..11));
        assert!(s.is_ended());
        assert_eq!(s.stats().implausible_jumps, 2);
        // An end of session far ahead does not end it either.
        let (mut s, mut sink) = seq_with(cfg());
        real(&mut s, &mut sink, 1, 5);
        s.handle_packet(5000, Line::B, &eos(1_000_000_000_000_000_000), &mut sink);
        assert!(!s.is_ended());
        real(&mut s, &mut sink, 5, 11);
        assert_eq!(sink.take(), msgs(1..11));
        quiet(&mut s);
    }

    #[test]
    fn an_end_of_session_below_what_was_seen_is_ignored() {
        let (mut s, mut sink) = seq_with(cfg());
        real(&mut s, &mut sink, 1, 7);
        s.handle_packet(7000, Line::A, &eos(3), &mut sink);
        assert!(!s.is_ended(), "a forged end below what was delivered");
        // Below what is known to exist (7..9 seen ahead of a gap at 6), above what was
        // delivered.
        s.handle_packet(7000, Line::A, &pkt(8, 1), &mut sink);
        s.handle_packet(7000, Line::A, &eos(7), &mut sink);
        assert!(!s.is_ended());
        s.handle_packet(8000, Line::A, &pkt(7, 1), &mut sink);
        real(&mut s, &mut sink, 9, 11);
        assert_eq!(s.stats().forged_end_of_session, 2);
        s.handle_packet(20_000, Line::A, &eos(11), &mut sink);
        assert_eq!(sink.take(), msgs(1..11));
        assert!(s.is_ended());
        assert_eq!(
            events(&mut s).last(),
            Some(&Event::EndOfSession { next_seq: 11 })
        );
    }

    #[test]
    fn a_forged_first_packet_is_replaced_by_the_real_session() {
        let (mut s, mut sink) = seq_with(cfg());
        s.handle_packet(0, Line::A, &pkt(1_000_000_000_000, 1), &mut sink);
        real(&mut s, &mut sink, 5000, 5010);
        assert_eq!(sink.take(), msgs(5000..5010));
        assert_eq!(s.stats().anchors_replaced, 1);
        assert_eq!(s.stats().late_join, 4999);
        let ev = events(&mut s);
        assert!(ev.contains(&Event::LateJoin { first_seq: 5000 }), "{ev:?}");
        assert!(!ev.contains(&Event::LateJoin {
            first_seq: 1_000_000_000_000
        }));
        quiet(&mut s);
        // The same forged packet again, and one far below: both held off.
        s.handle_packet(MS, Line::A, &pkt(1_000_000_000_000, 1), &mut sink);
        real(&mut s, &mut sink, 5010, 5012);
        assert_eq!(sink.take(), msgs(5010..5012));
    }

    #[test]
    fn a_first_packet_alone_is_delivered_after_the_nak_delay() {
        let (mut s, mut sink) = seq_with(cfg());
        s.handle_packet(0, Line::A, &pkt(40, 2), &mut sink);
        assert_eq!(s.next_deadline(), Some(MS));
        s.handle_timeout(MS - 1, &mut sink);
        assert_eq!(sink.take(), []);
        s.handle_timeout(MS, &mut sink);
        assert_eq!(sink.take(), msgs(40..42));
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn a_genuine_jump_is_followed_once_corroborated() {
        let (mut s, mut sink) = seq_with(cfg());
        real(&mut s, &mut sink, 1, 5);
        let j = 5 + 10_000_000;
        s.handle_packet(MS, Line::A, &pkt(j, 2), &mut sink);
        assert_eq!(requests(&mut s, 2 * MS), []);
        assert_eq!(s.highest_seen(), 5);
        // The feed goes on from where the jump's messages end, and nothing continues the
        // old sequence: the jump was real.
        let confirm = ns(SequencerConfig::default().jump_confirm);
        s.handle_packet(MS + confirm / 2, Line::A, &pkt(j + 2, 0), &mut sink);
        assert_eq!(
            s.highest_seen(),
            5,
            "not yet: the old sequence may still go on"
        );
        s.handle_packet(2 * MS + confirm, Line::A, &pkt(j + 2, 2), &mut sink);
        assert_eq!(s.stats().jumps_corroborated, 1);
        assert_eq!(s.highest_seen(), j + 4);
        // Far beyond the reorder window: what was jumped over (the first packet after the
        // jump included, it was not kept) is given up at once and delivery goes on.
        assert_eq!(
            sink.take(),
            [
                msgs(1..5),
                vec![Item::Gap(5, j + 2 - 5)],
                msgs(j + 2..j + 4)
            ]
            .concat()
        );
        assert_eq!(s.missing(), 0);
        s.handle_packet(3 * MS + confirm, Line::A, &pkt(j + 4, 1), &mut sink);
        assert_eq!(sink.take(), msgs(j + 4..j + 5));
        assert!(events(&mut s).contains(&Event::Gap {
            first: 5,
            count: j + 2 - 5,
            recoverable: false
        }));
    }

    #[test]
    fn consistent_forged_packets_do_not_confirm_a_jump_while_the_feed_goes_on() {
        // An attacker sends a run of packets that continue from each other far ahead, in
        // between the real feed's packets: the real line never falls silent, so the jump
        // is never taken, however many forged packets agree with each other.
        let (mut s, mut sink) = seq_with(cfg());
        real(&mut s, &mut sink, 1, 5);
        let j = 5 + 1_000_000_000_000;
        let mut q = 5;
        for i in 0..1000u64 {
            let now = MS + i * 10 * MS;
            s.handle_packet(now, Line::A, &pkt(j + 2 * i, 2), &mut sink);
            if i % 100 == 0 {
                // The real feed: a packet every second, or a heartbeat when idle.
                s.handle_packet(now, Line::A, &pkt(q, 1), &mut sink);
                q += 1;
            }
        }
        s.handle_timeout(10_001 * MS, &mut sink);
        assert_eq!(sink.take(), msgs(1..q));
        assert_eq!(s.highest_seen(), q);
        assert_eq!(s.stats().jumps_corroborated, 0);
        assert_eq!(s.stats().implausible_jumps, 1000);
        quiet(&mut s);
    }

    #[test]
    fn a_jump_is_taken_only_after_the_current_line_falls_silent() {
        let (mut s, mut sink) = seq_with(cfg());
        real(&mut s, &mut sink, 1, 5);
        let last_real = 4 * 1000;
        let j = 5 + 10_000_000;
        let confirm = ns(SequencerConfig::default().jump_confirm);
        // The feed really jumped: packets go on from the jump, nothing below it.
        let mut t = last_real;
        let mut q = j;
        while t < last_real + confirm {
            t += 100 * MS;
            s.handle_packet(t, Line::A, &pkt(q, 1), &mut sink);
            q += 1;
            if t < last_real + confirm {
                assert_eq!(s.highest_seen(), 5, "held at {t}");
            }
        }
        assert_eq!(s.stats().jumps_corroborated, 1);
        assert_eq!(s.highest_seen(), q);
    }

    #[test]
    fn sequence_zero_is_counted_and_not_delivered() {
        // A sanitized capture: every packet has sequence number 0.
        let (mut s, mut sink) = seq_with(cfg());
        for _ in 0..5 {
            s.handle_packet(0, Line::A, &pkt(0, 1), &mut sink);
        }
        s.handle_timeout(MS, &mut sink);
        assert_eq!(sink.take(), []);
        assert_eq!(s.stats().zero_sequence, 5);
        assert_eq!(s.session(), None, "not started by an unsequenced packet");
        // Amid a real session too.
        real(&mut s, &mut sink, 1, 5);
        s.handle_packet(0, Line::A, &pkt(0, 3), &mut sink);
        s.handle_packet(0, Line::A, &hb(0), &mut sink);
        real(&mut s, &mut sink, 5, 11);
        assert_eq!(sink.take(), msgs(1..11));
        assert_eq!(s.stats().zero_sequence, 7);
    }
}

mod forged_props {
    //! Far jumps, forged ends and sequence 0 thrown at the sequencer at random.

    use super::*;
    use proptest::prelude::*;

    /// Checks what a sink saw: message contents match, and sequence numbers (messages and
    /// gaps) strictly increase.
    fn monotonic(items: &[Item]) -> Result<(), TestCaseError> {
        let mut next = 0u64;
        for item in items {
            let (first, end) = match *item {
                Item::Msg(s) => (s, s.checked_add(1)),
                Item::Gap(f, c) => (f, f.checked_add(c)),
            };
            prop_assert!(first >= next, "{item:?} after {next}");
            prop_assert!(end.is_some(), "{item:?} passes u64::MAX");
            next = end.unwrap_or(u64::MAX);
        }
        Ok(())
    }

    /// A forged packet: data, heartbeat or end of session at `seq`.
    fn forged(kind: u8, seq: u64) -> Vec<u8> {
        match kind % 3 {
            0 => pkt(seq, 1),
            1 => hb(seq),
            _ => eos(seq),
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Packet(u8, u64, u8),
        Timeout(u64),
        Poll(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let seq = prop_oneof![
            0u64..40,
            any::<u64>(),
            (0u64..40).prop_map(|d| u64::MAX - d),
            (0u64..40).prop_map(|d| 1_000_000 + d),
        ];
        prop_oneof![
            6 => (0u8..3, seq, 0u8..6).prop_map(|(l, s, k)| Op::Packet(l, s, k)),
            1 => (0u64..5_000_000).prop_map(Op::Timeout),
            1 => (0u64..5_000_000).prop_map(Op::Poll),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any packets on any line: no panic (debug arithmetic is checked), and what is
        /// delivered is in strictly increasing order, each message its own.
        #[test]
        fn any_packets_deliver_in_order(
            ops in prop::collection::vec(op(), 1..60),
            live in any::<bool>(),
            max_gap in prop_oneof![Just(1_000_000u64), 1u64..50],
        ) {
            let (mut s, mut sink) = seq_with(SequencerConfig {
                late_join: if live { LateJoin::LiveEdge } else { LateJoin::FromSequence(1) },
                max_gap,
                reorder_capacity_messages: 64,
                max_gaps: 4,
                ..cfg()
            });
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Packet(line, seq, k) => {
                        let line = [Line::A, Line::B, Line::Recovery][usize::from(line)];
                        let p = match k {
                            0 => hb(seq),
                            1 => eos(seq),
                            n => pkt(seq, u64::from(n - 1)),
                        };
                        s.handle_packet(now, line, &p, &mut sink);
                    }
                    Op::Timeout(dt) => {
                        now = now.saturating_add(dt);
                        s.handle_timeout(now, &mut sink);
                    }
                    Op::Poll(dt) => {
                        now = now.saturating_add(dt);
                        while let Some(r) = s.poll_request(now) {
                            prop_assert!(r.message_count >= 1);
                            prop_assert!(r.sequence_number >= 1);
                            prop_assert!(r.sequence_number
                                .checked_add(u64::from(r.message_count)).is_some());
                        }
                    }
                }
                let _ = (s.missing(), s.next_deadline(), events(&mut s));
                prop_assert!(s.next_seq() <= s.highest_seen() || s.highest_seen() == 0);
            }
            monotonic(&sink.items)?;
        }

        /// A real session with forged packets at random far sequence numbers between its
        /// packets: the session is delivered whole, nothing is asked for or given up.
        #[test]
        fn forged_far_packets_never_touch_the_real_session(
            n in 2u64..200,
            per in 1u64..5,
            forgeries in prop::collection::vec((any::<u64>(), 0u8..3, 0usize..100), 0..8),
            live in any::<bool>(),
        ) {
            let start = 1_000;
            let (mut s, mut sink) = seq_with(SequencerConfig {
                late_join: if live { LateJoin::LiveEdge } else { LateJoin::FromSequence(start) },
                ..cfg()
            });
            // Far from the session and from each other (else they corroborate each other).
            let far = |x: u64| x.saturating_sub(2_000_000) > start + n && x > 4_000_000;
            let mut q = start;
            let mut i = 0;
            let mut now = 0;
            while q < start + n {
                for &(seq, kind, at) in &forgeries {
                    if at == i && far(seq) {
                        s.handle_packet(now, Line::A, &forged(kind, seq), &mut sink);
                    }
                }
                // A forged end of session below what was seen, now and then.
                if i % 7 == 3 {
                    s.handle_packet(now, Line::B, &eos(q - 1), &mut sink);
                }
                let k = per.min(start + n - q);
                s.handle_packet(now, Line::A, &pkt(q, k), &mut sink);
                q += k;
                i += 1;
                now += 1000;
            }
            s.handle_packet(now, Line::A, &eos(start + n), &mut sink);
            s.handle_timeout(now + MS, &mut sink);
            let got = sink.take();
            monotonic(&got)?;
            prop_assert!(got.iter().all(|m| matches!(m, Item::Msg(_))), "{got:?}");
            // A live-edge join may start a packet or two late (a forged packet between the
            // first two real ones replaces the anchor), never later, and ends with the session.
            let first = match got.first() { Some(Item::Msg(f)) => *f, _ => start + n };
            if !live {
                prop_assert_eq!(first, start);
            }
            prop_assert!(first <= start + 2 * per + 2 * per * forgeries.len() as u64);
            prop_assert_eq!(got, msgs(first..start + n));
            prop_assert!(s.is_ended());
            prop_assert_eq!(s.stats().unrecoverable, 0);
            prop_assert_eq!(s.stats().requests_sent, 0);
        }
    }
}

#[test]
fn recovery_answers_before_anything_was_asked_are_ignored() {
    let (mut s, mut sink) = seq_with(cfg());
    s.handle_packet(0, Line::A, &pkt(100, 2), &mut sink);
    // Unsolicited, far from the first packet: neither confirms nor replaces it.
    s.handle_packet(0, Line::Recovery, &pkt(1_000_000_000, 1), &mut sink);
    s.handle_packet(0, Line::A, &pkt(102, 1), &mut sink);
    assert_eq!(sink.take(), msgs(100..103));
    assert_eq!(s.stats().anchors_replaced, 0);
}

#[test]
fn a_forged_first_heartbeat_far_ahead_never_stands_alone() {
    let (mut s, mut sink) = seq_with(cfg());
    s.handle_packet(0, Line::A, &hb(1_000_000_000_000_000_000), &mut sink);
    assert_eq!(s.next_deadline(), None, "nothing to deliver: no deadline");
    s.handle_timeout(100 * MS, &mut sink);
    // The real session, long after.
    s.handle_packet(200 * MS, Line::A, &pkt(5000, 2), &mut sink);
    s.handle_packet(200 * MS, Line::A, &pkt(5002, 2), &mut sink);
    assert_eq!(sink.take(), msgs(5000..5004));
    assert_eq!(s.stats().anchors_replaced, 1);
    assert_eq!(requests(&mut s, 300 * MS), []);
}

/// Found by the fuzz target: starting "from sequence 0" asked the server for message 0.
#[test]
fn from_sequence_zero_starts_at_one() {
    let (mut s, mut sink) = seq_with(SequencerConfig {
        late_join: LateJoin::FromSequence(0),
        ..cfg()
    });
    s.handle_packet(0, Line::A, &pkt(3, 1), &mut sink);
    assert_eq!(requests(&mut s, MS), [(1, 2)]);
    s.handle_packet(MS, Line::Recovery, &pkt(1, 2), &mut sink);
    assert_eq!(sink.take(), msgs(1..4));
}

/// Making room for a split may give up (and deliver past) the very range holding the
/// message: it is then a duplicate, and no hole is left ending before it starts.
#[test]
fn a_split_that_skips_its_own_range_leaves_no_broken_hole() {
    let (mut s, mut sink) = seq_with(SequencerConfig {
        late_join: LateJoin::FromSequence(1),
        max_outstanding_requests: 3,
        max_retries: 1,
        backoff: Backoff::constant(),
        coalesce_within: 0,
        max_gaps: 4,
        ..cfg()
    });
    for q in [1, 3, 5, 9] {
        s.handle_packet(0, Line::A, &pkt(q, 1), &mut sink);
    }
    // Holes [2, 3), [4, 5), [6, 9); their requests sent in that order, then retried in the
    // order the table of requests ends up in once the first is given up.
    assert_eq!(s.poll_request(MS).map(|r| r.sequence_number), Some(2));
    assert_eq!(requests(&mut s, 2 * MS), [(4, 1), (6, 3)]);
    assert_eq!(requests(&mut s, 11 * MS), [(2, 1)]);
    s.handle_timeout(21 * MS, &mut sink);
    assert_eq!(s.poll_request(21 * MS).map(|r| r.sequence_number), Some(6));
    assert_eq!(s.poll_request(25 * MS).map(|r| r.sequence_number), Some(4));
    // Two more holes fill the table: [10, 11), [12, 13).
    s.handle_packet(26 * MS, Line::A, &pkt(11, 1), &mut sink);
    s.handle_packet(26 * MS, Line::A, &pkt(13, 1), &mut sink);
    s.handle_timeout(31 * MS, &mut sink); // [6, 9) is given up, [4, 5) still in flight
    sink.take();
    // 7 splits [6, 9): room is made by giving up [4, 5), and delivery runs through [6, 9).
    s.handle_packet(32 * MS, Line::A, &pkt(7, 1), &mut sink);
    assert_eq!(
        sink.take(),
        [Item::Gap(4, 1), Item::Msg(5), Item::Gap(6, 3), Item::Msg(9)]
    );
    assert_eq!(s.missing(), 2);
    assert_eq!(s.next_seq(), 10);
}
