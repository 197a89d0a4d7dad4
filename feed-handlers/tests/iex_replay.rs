//! Replays of IEX captures (IEX-TP in pcap): protocol detection, the tracker's restarts and
//! cut segment in the report, and the `--book-summary` books, checked against a reading of
//! the capture written here from the specifications (IEX-TP v1, DEEP 1.0), not through the
//! decoders under test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mdbus_bus::Bus;
use mdbus_codecs::capture::{CaptureError, CaptureReader};
use mdbus_feed_handlers::replay::{
    ReplayError, ReplayOptions, ReplayProtocol, ReplayReport, Replayer, Source, replay_book_config,
    replay_ring,
};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codecs/testdata")
        .join(rel)
}

/// IEX's DEEP 1.0 sample, decompressed (by `gzip`, so this crate needs no gzip reader).
fn deep_sample() -> &'static [u8] {
    let path = testdata("iex/deep10-2017-04-25.pcap.gz");
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("gzip -dc {}: {e}", path.display()));
    assert!(out.status.success(), "gzip -dc {}", path.display());
    Box::leak(out.stdout.into_boxed_slice())
}

fn summary_options() -> ReplayOptions {
    ReplayOptions {
        book_summary: Some(replay_book_config()),
        ..ReplayOptions::default()
    }
}

fn replay(source: Source, options: ReplayOptions) -> Result<ReplayReport, ReplayError> {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    Replayer::open(&source, &bus, "iex", &replay_ring(), options)?.run(&mut |_| {})
}

/// What the independent reading finds: messages per type, and per symbol the price levels
/// of each side and the prints.
#[derive(Default)]
struct Reading {
    counts: BTreeMap<char, u64>,
    messages: u64,
    bids: BTreeMap<String, BTreeMap<i64, u64>>,
    asks: BTreeMap<String, BTreeMap<i64, u64>>,
    prints: BTreeMap<String, (u64, u64)>,
}

fn le_u16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Reads every UDP payload (the capture's cut last one included) as IEX-TP v1 segments:
/// 40-byte header (message count at offset 14), then messages each preceded by a 2-byte
/// little-endian length; applies DEEP price level updates (`8` buy, `5` sell: symbol at 10,
/// size u32 at 18, price i64 at 22) to the levels in file order and tallies trade reports
/// (`T`: size u32 at 18). The DEEP sample has no duplicate or out-of-order segment.
fn read_deep(bytes: &'static [u8]) -> Reading {
    let mut r = Reading::default();
    let mut reader = CaptureReader::from_reader("deep", std::io::Cursor::new(bytes)).unwrap();
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    loop {
        match reader.next_datagram() {
            None => break,
            Some(Ok(d)) => payloads.push(d.payload.to_vec()),
            Some(Err(CaptureError::Truncated { .. })) => {
                let d = reader.cut_datagram().expect("the cut last packet");
                payloads.push(d.payload.to_vec());
            }
            Some(Err(e)) => panic!("{e}"),
        }
    }
    for p in &payloads {
        let count = le_u16(p, 14);
        let mut at = 40;
        for _ in 0..count {
            if at + 2 > p.len() {
                break;
            }
            let len = le_u16(p, at);
            let Some(m) = p.get(at + 2..at + 2 + len) else {
                break; // cut off
            };
            at += 2 + len;
            r.messages += 1;
            *r.counts.entry(char::from(m[0])).or_default() += 1;
            let symbol = || {
                String::from_utf8_lossy(&m[10..18])
                    .trim_end_matches(' ')
                    .to_owned()
            };
            let size = || u64::from(u32::from_le_bytes(m[18..22].try_into().unwrap()));
            match m[0] {
                b'8' | b'5' => {
                    let price = i64::from_le_bytes(m[22..30].try_into().unwrap());
                    let side = if m[0] == b'8' {
                        &mut r.bids
                    } else {
                        &mut r.asks
                    };
                    let levels = side.entry(symbol()).or_default();
                    match size() {
                        0 => levels.remove(&price),
                        s => levels.insert(price, s),
                    };
                }
                b'T' => {
                    let t = r.prints.entry(symbol()).or_default();
                    t.0 += size();
                    t.1 += 1;
                }
                _ => {}
            }
        }
    }
    r
}

#[test]
fn deep_sample_replays_with_the_readme_counts_and_books_of_an_independent_reading() {
    let bytes = deep_sample();
    let source = Source::Bytes {
        name: "deep10-2017-04-25.pcap".into(),
        bytes,
    };
    let report = replay(source, summary_options()).expect("replays");
    assert_eq!(report.protocol, "iex-deep");
    assert_eq!((report.messages, report.published), (392_010, 392_010));
    assert_eq!((report.restarts, report.cut_segments), (11, 1));
    assert_eq!((report.duplicates, report.malformed_packets), (0, 0));
    // The 33 messages the capture cut off are the one gap.
    assert_eq!((report.gaps, report.gap_messages), (1, 33));
    let cut = report.truncated.as_ref().expect("the cut is reported");
    assert!(cut.offset > 22_000_000, "{cut:?}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("the capture cuts the segment") && w.contains("11 of 44")),
        "{:?}",
        report.warnings
    );
    assert!(report.warnings.iter().any(|w| w.contains("restarted at 1")));

    let summary = report.iex_summary.as_ref().expect("a summary");
    let json: serde_json::Value =
        serde_json::from_str(&report.summary_json().unwrap()).expect("JSON");
    let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["books", "counts", "gaps", "messages"]);
    assert_eq!(json["messages"], 392_010);
    assert_eq!(json["gaps"], 1);
    let readme = [
        ('H', 93_638),
        ('O', 93_638),
        ('P', 93_636),
        ('T', 83_343),
        ('5', 14_630),
        ('8', 12_949),
        ('B', 73),
        ('E', 59),
        ('S', 44),
    ];
    for (t, n) in readme {
        assert_eq!(json["counts"][t.to_string()], n, "type {t}");
    }
    assert_eq!(json["counts"].as_object().unwrap().len(), readme.len());

    let reading = read_deep(bytes);
    assert_eq!(reading.messages, 392_010);
    let readme: BTreeMap<char, u64> = readme.into_iter().collect();
    assert_eq!(reading.counts, readme);

    let mut want = BTreeMap::new();
    let symbols: std::collections::BTreeSet<&String> = reading
        .bids
        .keys()
        .chain(reading.asks.keys())
        .chain(reading.prints.keys())
        .collect();
    for sym in symbols {
        let bid = reading.bids.get(sym).and_then(|l| l.last_key_value());
        let ask = reading.asks.get(sym).and_then(|l| l.first_key_value());
        let (traded, prints) = reading.prints.get(sym).copied().unwrap_or_default();
        if bid.is_none() && ask.is_none() && prints == 0 {
            continue;
        }
        want.insert(
            sym.clone(),
            serde_json::json!({
                "best_bid": bid.map(|b| *b.0),
                "bid_size": bid.map_or(0, |b| *b.1),
                "best_ask": ask.map(|a| *a.0),
                "ask_size": ask.map_or(0, |a| *a.1),
                "traded_shares": traded,
                "prints": prints,
            }),
        );
    }
    assert!(!want.is_empty());
    let got: BTreeMap<String, serde_json::Value> = json["books"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(summary.books.len(), want.len());
    // Some symbol has both sides: the levels were really applied.
    assert!(
        summary
            .books
            .values()
            .any(|b| b.best_bid.is_some() && b.best_ask.is_some())
    );
}

/// Reads the DEEP+ capture from the specifications: IEX-TP v1 segments (message count at 14,
/// first sequence number at 24), delivering each message whose sequence number is not below
/// the next expected (a segment starting at 1 while more is expected restarts the count,
/// unless it repeats the segment before), and DEEP+ orders applied to a map of live orders:
/// `a` (side at 1, `8` buy; id at 18, size u32 at 26, price i64 at 30), `M` (new size and
/// price), `R` (delete), `L` (executes size at 26: a print, known order or not), `C`
/// (every order of the symbol gone); `T` prints size at 18.
fn read_deep_plus(path: &Path) -> (u64, BTreeMap<String, serde_json::Value>) {
    let bytes = std::fs::read(path).unwrap();
    let mut reader = CaptureReader::from_reader("deep+", std::io::Cursor::new(bytes)).unwrap();
    let mut orders: BTreeMap<u64, (String, bool, i64, u64)> = BTreeMap::new();
    let mut prints: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let (mut next, mut last, mut started, mut messages) = (0u64, (0u64, 0usize), false, 0u64);
    while let Some(d) = reader.next_datagram() {
        let p = d.unwrap().payload.to_vec();
        let count = le_u16(&p, 14);
        let first = u64::from_le_bytes(p[24..32].try_into().unwrap());
        if !started {
            started = true;
            next = first;
        } else if first == 1 && next > 1 && last != (1, count) {
            next = 1;
        }
        last = (first, count);
        let mut at = 40;
        for i in 0..count {
            let len = le_u16(&p, at);
            let m = &p[at + 2..at + 2 + len];
            at += 2 + len;
            let seq = first + i as u64;
            if seq < next {
                continue;
            }
            messages += 1;
            let sym = String::from_utf8_lossy(m.get(10..18).unwrap_or_default())
                .trim_end_matches(' ')
                .to_owned();
            let u32_at = |o: usize| u64::from(u32::from_le_bytes(m[o..o + 4].try_into().unwrap()));
            let u64_at = |o: usize| u64::from_le_bytes(m[o..o + 8].try_into().unwrap());
            let i64_at = |o: usize| i64::from_le_bytes(m[o..o + 8].try_into().unwrap());
            match m[0] {
                b'a' => {
                    orders.insert(u64_at(18), (sym, m[1] == b'8', i64_at(30), u32_at(26)));
                }
                b'M' => {
                    if let Some(o) = orders.get_mut(&u64_at(18)) {
                        (o.2, o.3) = (i64_at(30), u32_at(26));
                    }
                }
                b'R' => {
                    orders.remove(&u64_at(18));
                }
                b'L' => {
                    let t = prints.entry(sym).or_default();
                    t.0 += u32_at(26);
                    t.1 += 1;
                    let id = u64_at(18);
                    if let Some(o) = orders.get_mut(&id) {
                        o.3 = o.3.saturating_sub(u32_at(26));
                        if o.3 == 0 {
                            orders.remove(&id);
                        }
                    }
                }
                b'C' => orders.retain(|_, o| o.0 != sym),
                b'T' => {
                    let t = prints.entry(sym).or_default();
                    t.0 += u32_at(18);
                    t.1 += 1;
                }
                _ => {}
            }
        }
        next = next.max(first + count as u64);
    }
    // Per symbol and side: shares per price.
    let mut sides: BTreeMap<(String, bool), BTreeMap<i64, u64>> = BTreeMap::new();
    for (sym, buy, price, size) in orders.values() {
        *sides
            .entry((sym.clone(), *buy))
            .or_default()
            .entry(*price)
            .or_default() += size;
    }
    let mut books = BTreeMap::new();
    let symbols: std::collections::BTreeSet<String> = sides
        .keys()
        .map(|k| k.0.clone())
        .chain(prints.keys().cloned())
        .collect();
    for sym in symbols {
        let bid = sides
            .get(&(sym.clone(), true))
            .and_then(|l| l.last_key_value());
        let ask = sides
            .get(&(sym.clone(), false))
            .and_then(|l| l.first_key_value());
        let (traded, n) = prints.get(&sym).copied().unwrap_or_default();
        books.insert(
            sym,
            serde_json::json!({
                "best_bid": bid.map(|b| *b.0),
                "bid_size": bid.map_or(0, |b| *b.1),
                "best_ask": ask.map(|a| *a.0),
                "ask_size": ask.map_or(0, |a| *a.1),
                "traded_shares": traded,
                "prints": n,
            }),
        );
    }
    (messages, books)
}

#[test]
fn deep_plus_capture_rebuilds_its_order_books_and_counts_its_prints() {
    let path = testdata("iex/deepplus-all-message-types.pcap");
    let report = replay(Source::Path(path.clone()), summary_options()).expect("replays");
    let (messages, want) = read_deep_plus(&path);
    assert_eq!(messages, 211);
    let json: serde_json::Value =
        serde_json::from_str(&report.summary_json().unwrap()).expect("JSON");
    let got: BTreeMap<String, serde_json::Value> = json["books"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(report.protocol, "iex-deep-plus");
    assert_eq!(report.restarts, 3);
    assert_eq!(report.messages, 211);
    let s = report.iex_summary.as_ref().expect("a summary");
    assert_eq!(s.messages, 211);
    assert_eq!(s.counts.total(), 211);
    // Prints: every trade report and order executed, known order or not.
    let prints: u64 = s.books.values().map(|b| b.prints).sum();
    assert_eq!(prints, s.counts.get(b'T') + s.counts.get(b'L'));
    assert!(prints > 0);
    for (sym, b) in &s.books {
        assert_eq!(sym.trim_end(), sym);
        assert_eq!(b.best_bid.is_none(), b.bid_size == 0, "{sym}");
        assert_eq!(b.best_ask.is_none(), b.ask_size == 0, "{sym}");
    }
}

/// A classic pcap of Ethernet/IPv4/UDP frames to `dst`, one per payload.
fn pcap_of(dst: ([u8; 4], u16), payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65_535u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (i, p) in payloads.iter().enumerate() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        let total = u16::try_from(20 + 8 + p.len()).unwrap();
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1]);
        ip.extend_from_slice(&dst.0);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&5000u16.to_be_bytes());
        frame.extend_from_slice(&dst.1.to_be_bytes());
        frame.extend_from_slice(&u16::try_from(8 + p.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(p);
        f.extend_from_slice(&u32::try_from(i).unwrap().to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        let n = u32::try_from(frame.len()).unwrap();
        f.extend_from_slice(&n.to_le_bytes());
        f.extend_from_slice(&n.to_le_bytes());
        f.extend_from_slice(&frame);
    }
    f
}

/// A Cboe PITCH sequenced unit (header and one 34-byte Add Order).
fn pitch_unit(seq: u32) -> Vec<u8> {
    let mut p = vec![42, 0, 1, 1];
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&[34, 0x37]);
    p.extend_from_slice(&[0x81; 32]);
    p
}

#[test]
fn a_capture_of_neither_protocol_is_refused_saying_what_it_holds() {
    let payloads: Vec<Vec<u8>> = (0..40).map(|i| pitch_unit(1000 + i)).collect();
    let bytes: &'static [u8] = Box::leak(pcap_of(([239, 9, 8, 7], 30_010), &payloads).into());
    let source = Source::Bytes {
        name: "pitch.pcap".into(),
        bytes,
    };
    let e = replay(source.clone(), ReplayOptions::default()).expect_err("refused");
    let text = e.to_string();
    assert!(matches!(e, ReplayError::NotDetected { .. }), "{e:?}");
    assert!(
        text.starts_with(
            "pitch.pcap: no MoldUDP64 or IEX-TP packet in the first 40 datagrams: 40 UDP datagrams to 239.9.8.7:30010; first bytes 2a 00 01 01 e8 03 00 00"
        ),
        "{text}"
    );
    // Forced, it is read as what it was told (and its packets are counted as damaged).
    let r = replay(
        source,
        ReplayOptions {
            protocol: Some(ReplayProtocol::IexDeep),
            ..ReplayOptions::default()
        },
    )
    .expect("forced");
    assert_eq!(
        (r.protocol, r.messages, r.malformed_packets),
        ("iex-deep", 0, 40)
    );
}

#[test]
fn an_itch_file_keeps_its_path_and_refuses_an_iex_protocol() {
    // A length-prefixed ITCH file: one system event.
    let mut itch = vec![0u8, 12, b'S'];
    itch.extend_from_slice(&[0; 11]);
    itch[13] = b'O';
    let bytes: &'static [u8] = Box::leak(itch.into_boxed_slice());
    let source = Source::Bytes {
        name: "day.itch".into(),
        bytes,
    };
    let r = replay(source.clone(), ReplayOptions::default()).expect("replays");
    assert_eq!((r.format, r.protocol, r.messages), ("itch", "itch", 1));
    let e = replay(
        source,
        ReplayOptions {
            protocol: Some(ReplayProtocol::IexTops),
            ..ReplayOptions::default()
        },
    )
    .expect_err("refused");
    assert!(e.to_string().contains("this is an ITCH file"), "{e}");
}

#[test]
fn moldudp64_in_a_pcap_is_still_itch() {
    let mut p = b"SESSION001".to_vec();
    p.extend_from_slice(&1u64.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    let mut m = vec![b'S'];
    m.extend_from_slice(&[0; 11]);
    p.extend_from_slice(&u16::try_from(m.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&m);
    let bytes: &'static [u8] = Box::leak(pcap_of(([233, 54, 12, 1], 26_400), &[p]).into());
    let r = replay(
        Source::Bytes {
            name: "mold.pcap".into(),
            bytes,
        },
        ReplayOptions::default(),
    )
    .expect("replays");
    assert_eq!((r.format, r.protocol, r.messages), ("pcap", "itch", 1));
}
