//! Capture reader tests on files built in memory.

use std::io::Cursor;
use std::net::SocketAddrV4;

use super::net::build_frame;
use super::*;

fn addrs() -> (SocketAddrV4, SocketAddrV4) {
    (
        "206.200.243.241:55143".parse().unwrap(),
        "233.54.12.111:26477".parse().unwrap(),
    )
}

fn reader(bytes: Vec<u8>) -> CaptureReader {
    CaptureReader::from_reader("mem.cap", Cursor::new(bytes)).expect("open")
}

/// Classic pcap with the given magic (as written in the file's byte order) and records.
fn pcap(big_endian: bool, nanos: bool, linktype: u32, records: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let u32b = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u16b = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut f = Vec::new();
    f.extend_from_slice(&u32b(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    f.extend_from_slice(&u16b(2));
    f.extend_from_slice(&u16b(4));
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&u32b(65_535));
    f.extend_from_slice(&u32b(linktype));
    for (sec, frac, data) in records {
        f.extend_from_slice(&u32b(*sec));
        f.extend_from_slice(&u32b(*frac));
        f.extend_from_slice(&u32b(data.len() as u32));
        f.extend_from_slice(&u32b(data.len() as u32));
        f.extend_from_slice(data);
    }
    f
}

fn block(big_endian: bool, t: u32, body: &[u8]) -> Vec<u8> {
    let u32b = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let pad = (4 - body.len() % 4) % 4;
    let len = (12 + body.len() + pad) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(&u32b(t));
    b.extend_from_slice(&u32b(len));
    b.extend_from_slice(body);
    b.extend_from_slice(&vec![0; pad]);
    b.extend_from_slice(&u32b(len));
    b
}

/// pcapng: one section, one Ethernet interface with `tsresol`, then EPBs with raw timestamps.
fn pcapng(big_endian: bool, tsresol: Option<u8>, packets: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let u32b = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u16b = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut shb = Vec::new();
    shb.extend_from_slice(&u32b(0x1a2b_3c4d));
    shb.extend_from_slice(&u16b(1));
    shb.extend_from_slice(&u16b(0));
    shb.extend_from_slice(&[0xff; 8]);
    let mut f = block(big_endian, 0x0a0d_0d0a, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&u16b(1)); // Ethernet
    idb.extend_from_slice(&u16b(0));
    idb.extend_from_slice(&u32b(0));
    if let Some(r) = tsresol {
        idb.extend_from_slice(&u16b(9));
        idb.extend_from_slice(&u16b(1));
        idb.extend_from_slice(&[r, 0, 0, 0]);
        idb.extend_from_slice(&[0; 4]); // end of options
    }
    f.extend(block(big_endian, 1, &idb));
    // An interface statistics block, to be skipped and counted.
    let mut isb = Vec::new();
    isb.extend_from_slice(&u32b(0));
    isb.extend_from_slice(&u32b(0));
    isb.extend_from_slice(&u32b(0));
    f.extend(block(big_endian, 5, &isb));
    for (ts, data) in packets {
        let mut epb = Vec::new();
        epb.extend_from_slice(&u32b(0));
        epb.extend_from_slice(&u32b((ts >> 32) as u32));
        epb.extend_from_slice(&u32b(*ts as u32));
        epb.extend_from_slice(&u32b(data.len() as u32));
        epb.extend_from_slice(&u32b(data.len() as u32));
        epb.extend_from_slice(data);
        f.extend(block(big_endian, 6, &epb));
    }
    f
}

fn collect(r: &mut CaptureReader) -> (Vec<(u64, Vec<u8>)>, Vec<String>) {
    let (mut ok, mut errs) = (Vec::new(), Vec::new());
    while let Some(rec) = r.next_record() {
        match rec {
            Ok(Record::Udp(d)) => ok.push((d.ts_ns, d.payload.to_vec())),
            Ok(Record::Itch(m)) => ok.push((m.offset, m.message.to_vec())),
            Err(e) => errs.push(e.to_string()),
        }
    }
    (ok, errs)
}

#[test]
fn pcap_all_magics() {
    let (s, d) = addrs();
    for big_endian in [false, true] {
        for nanos in [false, true] {
            let frac = if nanos { 123_456_789 } else { 123_456 };
            let recs = vec![
                (1_692_711_000, frac, build_frame(1, s, d, b"one")),
                (1_692_711_001, 0, build_frame(0, s, d, b"two")),
            ];
            let mut r = reader(pcap(big_endian, nanos, 1, &recs));
            assert_eq!(
                r.format(),
                CaptureFormat::Pcap {
                    nanosecond: nanos,
                    big_endian
                }
            );
            let first = r.next_datagram().unwrap().unwrap();
            assert_eq!((first.src, first.dst), (s, d));
            assert_eq!(first.offset, 24);
            let want_ns = if nanos { 123_456_789 } else { 123_456_000 };
            assert_eq!(first.ts_ns, 1_692_711_000_000_000_000 + want_ns);
            assert_eq!(first.payload, b"one");
            let (rest, errs) = collect(&mut r);
            assert_eq!(rest, vec![(1_692_711_001_000_000_000, b"two".to_vec())]);
            assert!(errs.is_empty());
            assert_eq!(r.stats().udp_datagrams, 2);
        }
    }
}

#[test]
fn pcap_skips_are_counted_and_truncation_reported() {
    let (s, d) = addrs();
    let mut tcp = build_frame(0, s, d, b"tcp");
    tcp[14 + 9] = 6;
    let mut frag = build_frame(0, s, d, b"frag");
    frag[14 + 6] = 0x20;
    let mut arp = build_frame(0, s, d, b"arp");
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let good = build_frame(2, s, d, b"good");
    let recs = vec![
        (1, 0, tcp),
        (2, 0, frag),
        (3, 0, arp),
        (4, 0, good.clone()),
        (5, 0, good),
    ];
    let mut bytes = pcap(false, true, 1, &recs);
    let cut = bytes.len() - 5;
    bytes.truncate(cut);
    let last_offset = cut + 5 - (16 + 14 + 8 + 20 + 8 + 4);
    let mut r = CaptureReader::from_reader("day.pcap", Cursor::new(bytes)).unwrap();
    let (ok, errs) = collect(&mut r);
    assert_eq!(ok, vec![(4_000_000_000, b"good".to_vec())]);
    assert_eq!(
        errs,
        vec![format!(
            "day.pcap: truncated record at offset {last_offset}: needs 70 bytes, 65 left"
        )]
    );
    let st = r.stats();
    assert_eq!(
        (
            st.packets,
            st.udp_datagrams,
            st.skipped_non_udp,
            st.ipv4_fragments,
            st.skipped_non_ipv4
        ),
        (4, 1, 1, 1, 1)
    );
    assert!(r.next_record().is_none());
}

#[test]
fn pcap_truncated_header_and_unknown_format() {
    let bytes = pcap(false, false, 1, &[]);
    let e = CaptureReader::from_reader("x.pcap", Cursor::new(bytes[..20].to_vec())).unwrap_err();
    assert!(
        matches!(
            e,
            CaptureError::Truncated {
                offset: 0,
                needed: 24,
                available: 20,
                ..
            }
        ),
        "{e}"
    );
    let e = CaptureReader::from_reader("x.bin", Cursor::new(b"hello".to_vec())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "x.bin: not a pcap, pcapng or length-prefixed ITCH file (first bytes [68, 65, 6c, 6c])"
    );
    let e = CaptureReader::from_reader("empty", Cursor::new(Vec::new())).unwrap_err();
    assert_eq!(e.to_string(), "empty: empty file: no capture to read");
    let e = open_capture("/nonexistent/file.pcap").unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/file.pcap: "), "{e}");
}

#[test]
fn pcap_other_link_types() {
    let (s, d) = addrs();
    let f = build_frame(0, s, d, b"raw");
    let mut r = reader(pcap(false, false, 101, &[(0, 0, f[14..].to_vec())]));
    assert_eq!(collect(&mut r).0, vec![(0, b"raw".to_vec())]);
    let mut r = reader(pcap(false, false, 105, &[(0, 0, f.clone())]));
    assert_eq!(collect(&mut r).0, vec![]);
    assert_eq!(r.stats().unsupported_link_type, 1);
}

#[test]
fn pcapng_both_byte_orders_and_resolutions() {
    let (s, d) = addrs();
    let frame = build_frame(1, s, d, b"ng");
    for big_endian in [false, true] {
        // Default resolution: microseconds.
        let mut r = reader(pcapng(big_endian, None, &[(1_000_001, frame.clone())]));
        assert_eq!(r.format(), CaptureFormat::PcapNg);
        let (ok, errs) = collect(&mut r);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(ok, vec![(1_000_001_000, b"ng".to_vec())]);
        assert_eq!(r.stats().other_blocks, 1);
        // Nanoseconds.
        let mut r = reader(pcapng(big_endian, Some(9), &[(5, frame.clone())]));
        assert_eq!(collect(&mut r).0, vec![(5, b"ng".to_vec())]);
        // Power-of-two resolution: 2^-10 s units.
        let mut r = reader(pcapng(
            big_endian,
            Some(0x80 | 10),
            &[(1024 * 3, frame.clone())],
        ));
        assert_eq!(collect(&mut r).0, vec![(3_000_000_000, b"ng".to_vec())]);
    }
}

#[test]
fn pcapng_truncated_final_block_keeps_the_rest() {
    let (s, d) = addrs();
    let frame = build_frame(0, s, d, b"p");
    let mut bytes = pcapng(
        false,
        Some(9),
        &[(1, frame.clone()), (2, frame.clone()), (3, frame)],
    );
    bytes.truncate(bytes.len() - 1);
    let mut r = reader(bytes);
    let (ok, errs) = collect(&mut r);
    assert_eq!(ok.len(), 2);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("truncated record at offset"), "{errs:?}");
}

#[test]
fn pcapng_damaged_block_is_reported_and_skipped() {
    let (s, d) = addrs();
    let frame = build_frame(0, s, d, b"p");
    let mut bytes = pcapng(false, Some(9), &[(1, frame.clone()), (2, frame)]);
    // Point the first EPB at interface 7, which does not exist.
    let first_epb = 28 + 32 + 24;
    bytes[first_epb + 8] = 7;
    let mut r = reader(bytes);
    let (ok, errs) = collect(&mut r);
    assert_eq!(ok, vec![(2, b"p".to_vec())]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains(&format!("offset {first_epb}")), "{errs:?}");
}

#[test]
fn itch_file_is_sniffed_and_streamed() {
    use crate::nasdaq::itch::{MessageFields, OrderDeleteFields, write_framed};
    let mut bytes = vec![0u8; 21 * 3];
    for i in 0..3 {
        let m = MessageFields::from(OrderDeleteFields {
            order_reference_number: i,
            ..Default::default()
        });
        write_framed(&m, &mut bytes[21 * i as usize..]).unwrap();
    }
    bytes.extend_from_slice(&[0, 19, b'D']);
    let mut r = reader(bytes);
    assert_eq!(r.format(), CaptureFormat::ItchLengthPrefixed);
    let (ok, errs) = collect(&mut r);
    assert_eq!(
        ok.iter().map(|(off, _)| *off).collect::<Vec<_>>(),
        [0, 21, 42]
    );
    assert_eq!(
        errs,
        ["mem.cap: truncated record at offset 63: needs 21 bytes, 3 left"]
    );
    assert_eq!(r.stats().itch_messages, 3);
}

#[test]
fn records_larger_than_the_buffer_and_tiny_reads() {
    /// A reader that hands out at most 7 bytes per call.
    struct Trickle(Cursor<Vec<u8>>);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7);
            self.0.read(&mut buf[..n])
        }
    }
    let (s, d) = addrs();
    let big = vec![0xab; 60_000];
    let frames: Vec<_> = (0..12u32)
        .map(|i| (i, 0, build_frame(0, s, d, &big[..50_000 + i as usize])))
        .collect();
    let bytes = pcap(false, true, 1, &frames);
    let mut r = CaptureReader::from_reader("big", Trickle(Cursor::new(bytes))).unwrap();
    let (ok, errs) = collect(&mut r);
    assert!(errs.is_empty());
    assert_eq!(ok.len(), 12);
    for (i, (_, p)) in ok.iter().enumerate() {
        assert_eq!(p.len(), 50_000 + i);
    }
}

#[test]
fn timestamp_scaling() {
    assert_eq!(pcapng_ts_ns(7, 6, 0), 7_000);
    assert_eq!(pcapng_ts_ns(7, 9, 0), 7);
    assert_eq!(pcapng_ts_ns(7_000, 12, 0), 7);
    assert_eq!(pcapng_ts_ns(7, 200, 0), 0);
    assert_eq!(pcapng_ts_ns(1, 0x80, 2), 3_000_000_000);
    assert_eq!(pcapng_ts_ns(u64::MAX, 0, 0), u64::MAX);
}

#[test]
fn a_cut_last_record_hands_out_the_payload_bytes_it_holds() {
    let (s, d) = addrs();
    let payload: Vec<u8> = (0u8..100).collect();
    let whole = build_frame(1, s, d, b"first");
    let last = build_frame(1, s, d, &payload);
    let full = pcap(false, false, 1, &[(7, 5, whole), (8, 250, last)]);
    // Whole file: nothing is cut.
    let mut r = reader(full.clone());
    let (ok, errs) = collect(&mut r);
    assert_eq!((ok.len(), errs.len()), (2, 0));
    assert!(r.cut_datagram().is_none());
    // The file ends 30 bytes into the last record's payload.
    let headers = 14 + 4 + 20 + 8;
    let record_at = full.len() - (16 + headers + payload.len());
    let mut cut = full.clone();
    cut.truncate(full.len() - 70);
    let mut r = reader(cut);
    assert!(matches!(r.next_datagram(), Some(Ok(_))));
    assert!(r.cut_datagram().is_none(), "not before the cut is met");
    assert!(matches!(
        r.next_datagram(),
        Some(Err(CaptureError::Truncated { .. }))
    ));
    let got = r.cut_datagram().expect("the bytes held");
    assert_eq!(got.payload, &payload[..30]);
    assert_eq!((got.src, got.dst), (s, d));
    assert_eq!((got.ts_ns, got.offset), (8_000_250_000, record_at as u64));
    assert!(r.next_datagram().is_none());
    // Cut inside the UDP header: no payload to hand out.
    let mut cut = full.clone();
    cut.truncate(full.len() - payload.len() - 4);
    let mut r = reader(cut);
    let _ = collect(&mut r);
    assert!(r.cut_datagram().is_none());
    // pcapng is not read this way.
    let mut ng = pcapng(false, None, &[(1, build_frame(0, s, d, &payload))]);
    ng.truncate(ng.len() - 20);
    let mut r = reader(ng);
    let _ = collect(&mut r);
    assert!(r.cut_datagram().is_none());
}

#[test]
fn a_gzipped_capture_reads_as_the_capture_itself() {
    use std::io::Write as _;
    let (s, d) = addrs();
    let recs = vec![
        (1_692_711_000, 5, build_frame(1, s, d, b"one")),
        (1_692_711_001, 6, build_frame(0, s, d, b"two")),
    ];
    let plain = pcap(false, true, 1, &recs);
    let dir = std::env::temp_dir().join(format!("mdbus-capture-gz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (p, gz) = (dir.join("s.pcap"), dir.join("s.pcap.gz"));
    std::fs::write(&p, &plain).unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&plain).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let (want, want_errs) = collect(&mut open_capture(&p).unwrap());
    let mut r = open_capture(&gz).unwrap();
    assert_eq!(
        r.format(),
        CaptureFormat::Pcap {
            nanosecond: true,
            big_endian: false
        }
    );
    let (got, errs) = collect(&mut r);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(got, want);
    assert_eq!(got.len(), 2);
    assert!(errs.is_empty() && want_errs.is_empty(), "{errs:?}");
}
