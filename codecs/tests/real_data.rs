//! Real Nasdaq data from `testdata/`: every file decodes, with the counts the data set states.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mdbus_codecs::capture::{CaptureFormat, CaptureReader, CaptureStats, Record, open_capture};
use mdbus_codecs::moldudp64::Packet;
use mdbus_codecs::nasdaq::itch::{self, Message, Stream};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

const AAPL: &str = "itch/aapl-2020-01-30-10k.itch";

const AAPL_COUNTS: [(u8, usize); 11] = [
    (b'A', 4758),
    (b'D', 4083),
    (b'E', 849),
    (b'P', 240),
    (b'L', 52),
    (b'U', 7),
    (b'X', 6),
    (b'F', 2),
    (b'R', 1),
    (b'H', 1),
    (b'Y', 1),
];

#[test]
fn aapl_itch_file_counts_per_type() {
    let bytes = std::fs::read(testdata(AAPL)).expect("read AAPL file");
    let mut counts = BTreeMap::new();
    let mut last_ts = 0;
    for (offset, msg) in Stream::new(&bytes) {
        let msg = msg.unwrap_or_else(|e| panic!("offset {offset}: {e}"));
        *counts.entry(msg.msg_type()).or_insert(0usize) += 1;
        assert_eq!(msg.stock_locate(), 13, "offset {offset}");
        assert!(
            msg.timestamp() >= last_ts,
            "timestamps go forward at {offset}"
        );
        last_ts = msg.timestamp();
        // Every message re-encodes to its own bytes.
        let mut out = [0u8; 64];
        let n = msg.to_fields().encode(&mut out).expect("encode");
        assert_eq!(&out[..n], msg.as_bytes(), "offset {offset}");
    }
    let want: BTreeMap<u8, usize> = AAPL_COUNTS.into_iter().collect();
    assert_eq!(counts, want);
    assert_eq!(counts.values().sum::<usize>(), 10_000);
    // 03:07 to 07:59 ET, in nanoseconds since midnight.
    const NS: u64 = 1_000_000_000;
    assert!(((7 * 3600 + 59 * 60) * NS..8 * 3600 * NS).contains(&last_ts));
}

#[test]
fn aapl_fields_are_sane() {
    let bytes = std::fs::read(testdata(AAPL)).expect("read AAPL file");
    let (mut dir, mut adds) = (0, 0);
    for (_, msg) in Stream::new(&bytes) {
        match msg.expect("decodes") {
            Message::StockDirectory(m) => {
                dir += 1;
                assert_eq!(&m.stock(), b"AAPL    ");
                assert_eq!(m.round_lot_size(), 100);
                assert_eq!(m.market_category(), b'Q');
            }
            Message::AddOrder(m) => {
                adds += 1;
                assert_eq!(itch::trim_alpha(&m.stock()), b"AAPL");
                assert!(matches!(m.buy_sell_indicator(), b'B' | b'S'));
                // AAPL traded near $320 that day; pre-market quotes stay within a wide band.
                assert!((1_000_000..=10_000_000).contains(&m.price().raw()), "{m:?}");
            }
            Message::StockTradingAction(m) => assert_eq!(m.trading_state(), b'T'),
            _ => {}
        }
    }
    assert_eq!((dir, adds), (1, 4758));
}

#[test]
fn aapl_through_the_capture_reader() {
    let mut r = open_capture(testdata(AAPL)).expect("open");
    assert_eq!(r.format(), CaptureFormat::ItchLengthPrefixed);
    let mut n = 0;
    while let Some(rec) = r.next_record() {
        let Record::Itch(m) = rec.expect("record") else {
            panic!("not ITCH")
        };
        itch::decode(m.message).unwrap_or_else(|e| panic!("offset {}: {e}", m.offset));
        n += 1;
    }
    assert_eq!(n, 10_000);
    assert_eq!(r.stats().itch_messages, 10_000);
}

/// Every MoldUDP64 packet of a pcap: (session, sequence number, ITCH messages).
fn read_pcap(path: &Path, dst: &str) -> (Vec<(String, u64, Vec<u8>)>, CaptureStats) {
    let mut r: CaptureReader = open_capture(path).expect("open");
    assert_eq!(
        r.format(),
        CaptureFormat::Pcap {
            nanosecond: true,
            big_endian: false
        }
    );
    let mut packets = Vec::new();
    while let Some(d) = r.next_datagram() {
        let d = d.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.dst.to_string(), dst, "{}", path.display());
        assert!(d.ts_ns > 1_692_600_000_000_000_000, "2023-08-21 or later");
        let p = Packet::parse(d.payload).expect("MoldUDP64 header");
        let mut types = Vec::new();
        for m in p.messages() {
            let m = m.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let msg = itch::decode(m).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            types.push(msg.msg_type());
        }
        assert_eq!(types.len(), usize::from(p.message_count()));
        packets.push((p.session().to_string(), p.sequence_number(), types));
    }
    (packets, r.stats())
}

#[test]
fn every_pcap_is_moldudp64_with_the_named_message_type() {
    let named = [
        ("AddOrderNoMpidAttributionMessage", b'A'),
        ("MarketParticipantPositionMessage", b'L'),
        ("NetOrderImbalanceIndicatorMessage", b'I'),
        ("OrderDeleteMessage", b'D'),
        ("OrderExecutedMessage", b'E'),
        ("OrderReplaceMessage", b'U'),
        ("StockTradingActionMessage", b'H'),
    ];
    let mut seen = 0;
    for (venue, session, dst) in [
        ("Nasdaq", "000010059B", "233.54.12.111:26477"),
        ("Bx", "000010059D", "233.49.196.40:25475"),
    ] {
        let dir = testdata(&format!("pcap/{venue}.Equities.TotalView.Itch.v5.0"));
        for entry in std::fs::read_dir(&dir).expect("pcap folder") {
            let path = entry.expect("entry").path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("name")
                .to_owned();
            if stem == "Multiple.Packets" {
                continue;
            }
            let want = named.iter().find(|(n, _)| *n == stem).map(|(_, t)| *t);
            let want = want.unwrap_or_else(|| panic!("unexpected file {stem}"));
            let (packets, stats) = read_pcap(&path, dst);
            assert_eq!(packets.len(), 1, "{stem}");
            assert_eq!(packets[0].0, session, "{venue} {stem}");
            assert_eq!(packets[0].2, vec![want], "{venue} {stem}");
            assert_eq!(stats.udp_datagrams, 1);
            seen += 1;
        }
    }
    assert_eq!(seen, 10);
}

#[test]
fn multiple_packets_pcap() {
    let path = testdata("pcap/Nasdaq.Equities.TotalView.Itch.v5.0/Multiple.Packets.pcap");
    let (packets, stats) = read_pcap(&path, "233.54.12.111:26477");
    let counts: Vec<usize> = packets.iter().map(|p| p.2.len()).collect();
    assert_eq!(counts, [1, 38]);
    assert!(packets.iter().all(|p| p.0 == "000010059B"));
    assert_eq!(stats.packets, 2);
    assert_eq!(stats.udp_datagrams, 2);
}
