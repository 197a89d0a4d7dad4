//! Proves an IEX capture's replay allocates nothing per message (its own test binary, for
//! the counting allocator): three times the segments cost exactly the allocations of one
//! pass, with and without the `--book-summary` books.

use mdbus_bus::Bus;
use mdbus_feed_handlers::replay::{
    ReplayOptions, Replayer, Source, replay_book_config, replay_ring,
};

/// A DEEP message: price level update (`8`/`5`) or trade report (`T`) of `sym`.
fn message(t: u8, flags: u8, sym: &[u8; 8], size: u32, price: i64) -> Vec<u8> {
    let mut m = vec![0u8; if t == b'T' { 38 } else { 30 }];
    m[0] = t;
    m[1] = flags;
    m[10..18].copy_from_slice(sym);
    m[18..22].copy_from_slice(&size.to_le_bytes());
    m[22..30].copy_from_slice(&price.to_le_bytes());
    m
}

/// A classic pcap of `segments` DEEP segments of 8 messages each, numbered from 1.
fn capture(segments: u64) -> &'static [u8] {
    let mut f = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    f.extend_from_slice(&[
        2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ]);
    let mut seq = 1u64;
    for i in 0..segments {
        let mut body = Vec::new();
        for k in 0..8u32 {
            let sym = if k % 2 == 0 { b"ZIEXT   " } else { b"ZXIET   " };
            let price = 100_000 + i64::from(k % 4) * 100;
            let m = match k {
                0..=2 => message(b'8', u8::from(k == 2), sym, 100 + k, price),
                3..=5 => message(b'5', u8::from(k == 5), sym, 100 + k, price + 1_000),
                _ => message(b'T', 0, sym, 10, price),
            };
            body.extend_from_slice(&u16::try_from(m.len()).unwrap().to_le_bytes());
            body.extend_from_slice(&m);
        }
        let mut seg = vec![1u8, 0, 0x04, 0x80];
        seg.extend_from_slice(&1u32.to_le_bytes());
        seg.extend_from_slice(&42u32.to_le_bytes());
        seg.extend_from_slice(&u16::try_from(body.len()).unwrap().to_le_bytes());
        seg.extend_from_slice(&8u16.to_le_bytes());
        seg.extend_from_slice(&(i * 1000).to_le_bytes());
        seg.extend_from_slice(&seq.to_le_bytes());
        seg.extend_from_slice(&0u64.to_le_bytes());
        seg.extend_from_slice(&body);
        seq += 8;
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        frame.extend_from_slice(&u16::try_from(28 + seg.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 233, 215, 179, 1]);
        frame.extend_from_slice(&[0x13, 0x88, 0x2a, 0xf8]);
        frame.extend_from_slice(&u16::try_from(8 + seg.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&seg);
        f.extend_from_slice(&u32::try_from(i).unwrap().to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        let n = u32::try_from(frame.len()).unwrap().to_le_bytes();
        f.extend_from_slice(&n);
        f.extend_from_slice(&n);
        f.extend_from_slice(&frame);
    }
    Box::leak(f.into_boxed_slice())
}

/// Allocations of the replay's run over `segments` segments, and the messages published.
fn replay_allocations(segments: u64, summary: bool) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let source = Source::Bytes {
        name: "deep".into(),
        bytes: capture(segments),
    };
    let options = ReplayOptions {
        book_summary: summary.then(replay_book_config),
        ..ReplayOptions::default()
    };
    let r = Replayer::open(&source, &bus, "f", &replay_ring(), options).unwrap();
    let mut report = None;
    let n = allocation_counter::measure(|| report = Some(r.run(&mut |_| {}).unwrap())).count_total;
    let report = report.unwrap();
    assert_eq!(report.protocol, "iex-deep");
    assert_eq!((report.gaps, report.decode_errors), (0, 0));
    (n, report.published)
}

#[test]
fn an_iex_replay_allocates_nothing_per_message() {
    for summary in [false, true] {
        let (one, published) = replay_allocations(1_000, summary);
        assert_eq!(published, 8_000);
        let (three, published) = replay_allocations(3_000, summary);
        assert_eq!(published, 24_000);
        assert_eq!(
            one, three,
            "allocations grew with the messages (summary {summary})"
        );
    }
}
