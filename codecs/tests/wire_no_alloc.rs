//! The wire hot paths do not allocate: decoding the real ITCH sample, walking MoldUDP64
//! packets, building packets and encoding messages, counted on the test's own thread with a
//! counting global allocator.

use mdbus_codecs::moldudp64::{Packet, PacketBuilder, Session};
use mdbus_codecs::nasdaq::itch::{self, Stream};
use mdbus_codecs::nasdaq::soupbintcp;

const AAPL: &[u8] = include_bytes!("../testdata/itch/aapl-2020-01-30-10k.itch");

#[test]
fn decode_build_and_parse_do_not_allocate() {
    let mut packet = [0u8; 1400];
    let mut soup = [0u8; 64];
    // The counter itself works: an allocation on this thread is seen.
    let seen = allocation_counter::measure(|| {
        std::hint::black_box(vec![1u8; 16]);
    });
    assert_eq!(
        seen.count_total, 1,
        "the allocation counter missed an allocation"
    );

    // Counts only this thread's allocations (the harness may allocate on others).
    let (mut n, mut in_packets, mut acc) = (0u64, 0u64, 0u64);
    let info = allocation_counter::measure(|| {
        let mut stream = Stream::new(AAPL).peekable();
        while stream.peek().is_some() {
            // Pack as many messages as fit into one MoldUDP64 packet, encoding each in place.
            let mut b = PacketBuilder::new(&mut packet, Session(*b"000010059B"), n + 1).unwrap();
            while let Some((_, Ok(m))) = stream.peek() {
                let fields = m.to_fields();
                if b.push_with(fields.encoded_len(), |out| {
                    fields.encode(out).unwrap();
                })
                .is_err()
                {
                    break;
                }
                stream.next();
                n += 1;
            }
            let len = b.finish();
            // Parse it back and decode every message.
            let p = Packet::parse(&packet[..len]).unwrap();
            for m in p.messages() {
                let m = itch::decode(m.unwrap()).unwrap();
                acc = acc.wrapping_add(m.timestamp());
                in_packets += 1;
            }
            let len = soupbintcp::Packet::SequencedData(&packet[20..40])
                .encode(&mut soup)
                .unwrap();
            assert!(matches!(
                soupbintcp::decode(&soup[..len]),
                Ok(soupbintcp::Decoded::Packet { .. })
            ));
        }
    });
    let allocs = info.count_total;
    assert_eq!((n, in_packets), (10_000, 10_000));
    assert_ne!(acc, 0);
    assert_eq!(allocs, 0, "the wire hot paths allocated {allocs} times");
}
