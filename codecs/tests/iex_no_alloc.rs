//! IEX's hot path does not allocate: sequencing IEX-TP segments, decoding and normalizing
//! every message of the real DEEP+ capture, and numbering new symbols in a directory, counted
//! on the test's own thread with a counting global allocator.

use std::path::Path;

use mdbus_codecs::capture::open_capture;
use mdbus_codecs::directory::Directory;
use mdbus_codecs::iex::message;
use mdbus_codecs::iex::normalize::Normalizer;
use mdbus_codecs::iex::tp::{Protocol, Tracker};

fn datagrams() -> Vec<Vec<u8>> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/iex/deepplus-all-message-types.pcap");
    let mut r = open_capture(path).expect("open");
    let mut out = Vec::new();
    while let Some(d) = r.next_datagram() {
        out.push(d.expect("reads").payload.to_vec());
    }
    out
}

/// Sequences, decodes and normalizes every datagram; the sum of the envelopes' lengths.
fn run(datagrams: &[Vec<u8>], norm: &mut Normalizer) -> (u64, usize) {
    let mut tracker = Tracker::new();
    let (mut n, mut bytes) = (0u64, 0usize);
    for d in datagrams {
        let h = tracker.handle(d).expect("taken");
        for (seq, m) in h.messages() {
            let m = message::decode_for(Protocol::DEEP_PLUS, m).expect("decodes");
            bytes += norm.normalize(&m, seq, 1).len();
            n += 1;
        }
    }
    (n, bytes)
}

#[test]
fn sequencing_decoding_and_normalizing_allocate_nothing_after_warm_up() {
    let seen = allocation_counter::measure(|| {
        std::hint::black_box(vec![1u8; 16]);
    });
    assert_eq!(seen.count_total, 1, "the allocation counter works");

    let datagrams = datagrams();
    let mut norm = Normalizer::new();
    let warm = run(&datagrams, &mut norm);
    let mut out = (0, 0);
    let info = allocation_counter::measure(|| out = run(&datagrams, &mut norm));
    assert_eq!(out, warm);
    assert_eq!(out.0, 211);
    assert_eq!(info.count_total, 0, "{} allocations", info.count_total);
}

#[test]
fn numbering_new_symbols_allocates_nothing_within_capacity() {
    let mut dir = Directory::with_capacity(1024);
    let info = allocation_counter::measure(|| {
        for i in 0..1024u32 {
            let mut s = *b"S       ";
            s[1..5].copy_from_slice(&i.to_le_bytes());
            assert_eq!(dir.assign(s), Ok(i + 1));
        }
    });
    assert_eq!(info.count_total, 0);
}
