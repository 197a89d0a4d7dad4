//! Proves the live hot path allocates nothing once warm: sequencing (in order, duplicates,
//! reordering, re-requests, a gap given up), decoding, normalizing and publishing the real
//! AAPL session, and answering the re-requests from a retransmission store. A counting
//! global allocator (its own test binary) counts the allocations of the measuring thread.

mod live_common;

use std::time::Duration;

use live_common::{SESSION, aapl, stream_config};
use mdbus_bus::Bus;
use mdbus_codecs::moldudp64::{MoldError, PacketBuilder, encode_end_of_session};
use mdbus_codecs::retransmit::{RetransmitConfig, RetransmitStore};
use mdbus_codecs::sequencer::{Deliver, Event, LateJoin, Line, Sequencer, SequencerConfig};
use mdbus_feed_handlers::pipeline::FeedPipeline;

struct Sink<'a>(&'a mut FeedPipeline);

impl Deliver for Sink<'_> {
    fn message(&mut self, seq: u64, msg: &[u8]) {
        self.0.on_message(seq, msg, seq * 10).expect("published");
    }
    fn gap(&mut self, first: u64, count: u64) {
        self.0.on_gap(first, count, false, 0).expect("published");
    }
}

/// Reply packets of the server, in preallocated space.
struct Replies {
    bufs: Vec<[u8; 1400]>,
    lens: Vec<usize>,
}

#[test]
fn sequencing_and_publishing_allocate_nothing_once_warm() {
    let messages = aapl();
    // The session as 1,400-byte packets.
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut next = 0;
    while next < messages.len() {
        let mut buf = vec![0u8; 1400];
        let mut b = PacketBuilder::new(&mut buf, SESSION, next as u64 + 1).unwrap();
        while next < messages.len() {
            match b.push(&messages[next]) {
                Ok(()) => next += 1,
                Err(MoldError::PacketFull { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let n = b.finish();
        buf.truncate(n);
        packets.push(buf);
    }
    let mut eos = [0u8; 20];
    encode_end_of_session(&mut eos, SESSION, 10_001).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let mut pipeline = FeedPipeline::new(&bus, "aapl", &stream_config()).unwrap();
    // Warm-up: every message kind and bus event through the normalizer once.
    for (i, m) in messages.iter().enumerate() {
        pipeline.on_message(i as u64 + 1, m, 0).unwrap();
    }
    pipeline.on_gap(1, 1, true, 0).unwrap();
    pipeline.on_gap(1, 1, false, 0).unwrap();
    pipeline.on_end_of_session(1, 0).unwrap();

    let mut server = RetransmitStore::new(RetransmitConfig {
        rate_messages_per_sec: 0,
        ..RetransmitConfig::new(SESSION)
    })
    .unwrap();
    for m in &messages {
        server.push(m).unwrap();
    }
    let mut seq = Sequencer::new(SequencerConfig {
        session: Some(SESSION),
        late_join: LateJoin::FromSequence(1),
        nak_delay: Duration::from_micros(500),
        request_timeout: Duration::from_millis(5),
        max_retries: 1,
        ..SequencerConfig::default()
    })
    .unwrap();
    let mut replies = Replies {
        bufs: vec![[0u8; 1400]; 128],
        lens: Vec::with_capacity(128),
    };
    let mut request = [0u8; 20];
    let src = "127.0.0.1:9".parse().unwrap();
    // Packets 100..=104 are lost on both lines and the server ignores requests for them:
    // they are given up after the retries.
    let ignored = {
        let p = mdbus_codecs::moldudp64::Packet::parse(&packets[100]).unwrap();
        let q = mdbus_codecs::moldudp64::Packet::parse(&packets[104]).unwrap();
        p.sequence_number()..q.next_sequence_number()
    };
    let mut events = 0u64;
    let mut lost = 0u64;

    // The counter itself works: an allocation on this thread is seen.
    let seen = allocation_counter::measure(|| {
        std::hint::black_box(vec![1u8; 16]);
    });
    assert_eq!(
        seen.count_total, 1,
        "the allocation counter missed an allocation"
    );

    let allocations = allocation_counter::measure(|| {
        let ms = 1_000_000u64;
        let mut now = 0u64;
        let mut i = 0;
        let mut rounds = 0;
        while !seq.is_ended() {
            rounds += 1;
            assert!(rounds < 100_000, "no progress");
            now += ms / 4;
            if i < packets.len() {
                // Line A loses every 7th packet; line B carries every 3rd; packets 13k+5
                // and 13k+6 swap places on line A; 100..=104 are lost on both.
                let k = match i % 13 {
                    5 => i + 1,
                    6 => i - 1,
                    _ => i,
                }
                .min(packets.len() - 1);
                let burst = (100..=104).contains(&k);
                if k % 7 != 6 && !burst {
                    seq.handle_packet(now, Line::A, &packets[k], Sink(&mut pipeline));
                }
                if i % 3 == 0 && !burst {
                    seq.handle_packet(now, Line::B, &packets[i], Sink(&mut pipeline));
                }
                i += 1;
            } else {
                seq.handle_packet(now, Line::A, &eos, Sink(&mut pipeline));
            }
            if seq.next_deadline().is_some_and(|d| d <= now) {
                seq.handle_timeout(now, Sink(&mut pipeline));
            }
            while let Some(r) = seq.poll_request(now) {
                if ignored.contains(&r.sequence_number) {
                    continue;
                }
                r.encode(&mut request).unwrap();
                replies.lens.clear();
                let Replies { bufs, lens } = &mut replies;
                server
                    .handle_request(now, src, &request, |p| {
                        let k = lens.len();
                        bufs[k][..p.len()].copy_from_slice(p);
                        lens.push(p.len());
                    })
                    .unwrap();
                for (b, &n) in replies.bufs.iter().zip(&replies.lens) {
                    seq.handle_packet(now, Line::Recovery, &b[..n], Sink(&mut pipeline));
                }
            }
            while let Some(e) = seq.poll_event() {
                events += 1;
                if let Event::Gap {
                    count,
                    recoverable: false,
                    ..
                } = e
                {
                    lost += count;
                }
            }
        }
    })
    .count_total;

    let s = seq.stats();
    let gap = ignored.end - ignored.start;
    // Not vacuous: every path ran.
    assert_eq!(s.messages, 10_000 - gap);
    assert_eq!((s.unrecoverable, lost), (gap, gap));
    assert!(
        s.recovered > 500 && s.duplicates > 1000 && s.out_of_order > 1000,
        "{s:?}"
    );
    assert!(s.requests_sent > 10 && events > 10);
    assert_eq!(pipeline.stats().lost, gap + 1);
    assert_eq!(allocations, 0, "allocations on the hot path");
}
