//! Real IEX captures in `testdata/iex/`: the DEEP+ capture, and IEX's DEEP 1.0 sample (4 MB,
//! gzipped).
//!
//! The DEEP sample's file ends inside its last record: the capture reader reports that record
//! as truncated, and these tests read the cut frame from the file themselves (Ethernet, IPv4
//! and UDP headers by hand) to hand the tracker the cut segment.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use mdbus_codecs::capture::{CaptureError, CaptureReader, open_capture};
use mdbus_codecs::fb;
use mdbus_codecs::iex::message::{self, Message};
use mdbus_codecs::iex::normalize::{self, Normalizer};
use mdbus_codecs::iex::tp::{Notice, Protocol, Segment, TpError, Tracker, TrackerStats};

/// What a run of the tracker over a capture saw.
#[derive(Debug, Default)]
struct Reading {
    stats: TrackerStats,
    /// Messages of every segment (delivered or not), by type.
    all_types: BTreeMap<u8, u64>,
    /// Delivered messages, by type.
    delivered_types: BTreeMap<u8, u64>,
    /// Packet index of each restart.
    restarts: Vec<u64>,
    /// (packet, complete, message count, error) of each cut or damaged segment.
    incomplete: Vec<(u64, u16, u16, TpError)>,
    /// File offset of each cut segment's record.
    cut_offsets: Vec<u64>,
    /// Instruments with a price level update.
    level_instruments: std::collections::BTreeSet<u32>,
    /// Instruments numbered by the normalizer.
    instruments: usize,
}

/// The UDP payload of a cut Ethernet/IPv4/UDP frame (what the file holds of it).
fn cut_payload(frame: &[u8]) -> &[u8] {
    assert_eq!(&frame[12..14], [0x08, 0x00], "IPv4 over Ethernet");
    let ihl = usize::from(frame[14] & 0x0F) * 4;
    assert_eq!(frame[14 + 9], 17, "UDP");
    &frame[14 + ihl + 8..]
}

/// Runs a tracker over every datagram of `reader`; `file` (the capture's bytes) lets it read
/// a last record the file cuts.
fn read(mut reader: CaptureReader, protocol: Protocol, file: Option<&[u8]>) -> Reading {
    let mut r = Reading::default();
    let mut tracker = Tracker::new();
    let mut norm = Normalizer::new();
    loop {
        let (offset, payload) = match reader.next_datagram() {
            None => break,
            Some(Ok(d)) => (d.offset, d.payload),
            Some(Err(CaptureError::Truncated { offset, .. })) if file.is_some() => {
                let rec = &file.unwrap_or_default()[usize::try_from(offset).expect("offset")..];
                (offset, cut_payload(&rec[16..]))
            }
            Some(Err(e)) => panic!("{e}"),
        };
        let d = Datagram { offset, payload };
        let seg = Segment::parse(d.payload).expect("every datagram is a segment");
        assert_eq!(seg.protocol(), protocol);
        for m in seg.messages().map_while(Result::ok) {
            *r.all_types.entry(m[0]).or_default() += 1;
        }
        let h = tracker
            .handle(d.payload)
            .expect("one session, one protocol");
        if let Some(Notice::Restart { packet, .. }) = h.notice {
            r.restarts.push(packet);
        }
        if let Some(i) = h.incomplete {
            r.incomplete
                .push((i.packet, i.complete, i.message_count, i.error));
            r.cut_offsets.push(d.offset);
        }
        for (seq, bytes) in h.messages() {
            let m = message::decode_for(protocol, bytes)
                .unwrap_or_else(|e| panic!("packet at {}, seq {seq}: {e}", d.offset));
            assert!(m.timestamp() > 1_400_000_000_000_000_000, "{m:?}");
            if !matches!(m, Message::SystemEvent(_)) {
                assert!(m.symbol().is_some_and(|s| s[0].is_ascii_uppercase()));
            }
            *r.delivered_types.entry(m.msg_type()).or_default() += 1;
            // Normalized: the event names the type, the envelope the venue and the symbol's id.
            let env = norm.normalize(&m, seq, 0).envelope();
            assert_eq!(
                normalize::type_of_event(env.event_type()),
                Some(m.msg_type())
            );
            assert_eq!(env.venue(), fb::Venue::Iex);
            assert_eq!(env.header().seq(), seq);
            let id = env.instrument();
            assert_eq!(norm.directory().symbol_of(id), m.symbol(), "{m:?}");
            if matches!(m.msg_type(), b'8' | b'5') {
                r.level_instruments.insert(id);
            }
        }
    }
    assert_eq!(norm.refused(), 0);
    r.instruments = norm.directory().len();
    r.stats = tracker.stats();
    r
}

struct Datagram<'a> {
    offset: u64,
    payload: &'a [u8],
}

fn counts(pairs: &[(u8, u64)]) -> BTreeMap<u8, u64> {
    pairs.iter().copied().collect()
}

#[test]
fn deep_plus_capture_decodes_with_three_restarts() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/iex/deepplus-all-message-types.pcap");
    let r = read(
        open_capture(&path).expect("open"),
        Protocol::DEEP_PLUS,
        None,
    );
    let want = counts(&[
        (b'B', 1),
        (b'D', 1),
        (b'E', 35),
        (b'H', 97),
        (b'I', 96),
        (b'L', 3),
        (b'M', 1),
        (b'O', 101),
        (b'P', 101),
        (b'R', 1),
        (b'S', 5),
        (b'T', 4),
        (b'a', 1),
    ]);
    assert_eq!(r.all_types, want);
    assert_eq!(r.all_types.values().sum::<u64>(), 447);
    let st = r.stats;
    assert_eq!(st.packets, 13);
    assert_eq!(r.restarts, [3, 7, 10]);
    assert_eq!(st.restarts, 3);
    // The capture repeats segments and jumps between parts of a session: every message is
    // delivered once, or counted as a duplicate or late.
    assert_eq!(st.messages + st.duplicates + st.out_of_order, 447);
    assert_eq!((st.messages, st.duplicates, st.out_of_order), (211, 235, 1));
    assert_eq!(r.delivered_types.values().sum::<u64>(), st.messages);
    assert_eq!((st.malformed, st.cut_segments, st.heartbeats), (0, 0, 0));
    assert!(r.incomplete.is_empty());
}

/// IEX's DEEP 1.0 sample (`codecs/testdata/iex/deep10-2017-04-25.pcap.gz`), decompressed.
fn deep_sample() -> (PathBuf, Vec<u8>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/iex/deep10-2017-04-25.pcap.gz");
    let gz = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut file = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut file)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, file)
}

#[test]
fn deep_sample_counts_restarts_and_its_cut_last_packet() {
    let (path, file) = deep_sample();
    let reader =
        CaptureReader::from_reader(&path, std::io::Cursor::new(file.clone())).expect("a pcap");
    let r = read(reader, Protocol::DEEP, Some(&file));
    let want = counts(&[
        (b'H', 93_638),
        (b'O', 93_638),
        (b'P', 93_636),
        (b'T', 83_343),
        (b'5', 14_630),
        (b'8', 12_949),
        (b'B', 73),
        (b'E', 59),
        (b'S', 44),
    ]);
    assert_eq!(r.all_types, want);
    assert_eq!(r.delivered_types, want);
    let st = r.stats;
    assert_eq!(st.packets, 121_315);
    assert_eq!(st.messages, 392_010);
    assert_eq!(st.restarts, 11);
    assert_eq!(r.restarts.len(), 11);
    assert_eq!(
        (
            st.duplicates,
            st.out_of_order,
            st.gaps_detected,
            st.malformed
        ),
        (0, 0, 0, 0)
    );
    // The last packet: 378 of 1,408 payload bytes, 11 complete messages of 44.
    assert_eq!(st.cut_segments, 1);
    assert_eq!(r.incomplete.len(), 1);
    let (packet, complete, count, error) = r.incomplete[0];
    assert_eq!((packet, complete, count), (121_314, 11, 44));
    assert!(
        matches!(
            error,
            TpError::Cut {
                declared: 1408,
                available: 378,
                index: 11,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(st.missing_messages, 33);
    assert_eq!(
        r.level_instruments.len(),
        20,
        "20 symbols have price levels"
    );
    assert!(r.instruments >= 20);
    assert!(r.cut_offsets[0] > 22_000_000);
}
