//! Replay of real Nasdaq data end to end: ITCH file and pcaps -> sequencer -> decoder ->
//! publisher -> bus stream -> book service; recordings round-trip; truncated files keep what
//! came before.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use mdbus_bus::schema as fb;
use mdbus_bus::{Bus, ReceiveError, SubscribeOptions, Subscriber, WaitStrategy};
use mdbus_feed_handlers::book::BookSummary;
use mdbus_feed_handlers::bookstream::{BookService, BookServiceConfig};
use mdbus_feed_handlers::record::{
    RecordError, RecordOptions, RecordStats, RecordWriter, record_counters, record_stream,
    record_stream_with_counters,
};
use mdbus_feed_handlers::replay::{
    ReplayOptions, ReplayReport, Replayer, Source, replay_book_config, replay_ring,
};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codecs/testdata")
        .join(rel)
}

fn aapl() -> PathBuf {
    testdata("itch/aapl-2020-01-30-10k.itch")
}

const AAPL_COUNTS: [(&str, u64); 11] = [
    ("A", 4758),
    ("D", 4083),
    ("E", 849),
    ("P", 240),
    ("L", 52),
    ("U", 7),
    ("X", 6),
    ("F", 2),
    ("R", 1),
    ("H", 1),
    ("Y", 1),
];

/// The reference reading of the AAPL file, checked on the summary's JSON.
fn assert_reference(summary: &BookSummary) {
    let v: serde_json::Value = serde_json::from_str(&summary.to_json()).expect("JSON");
    assert_eq!(v["messages"], 10_000);
    assert_eq!(v["gaps"], 0);
    for (letter, n) in AAPL_COUNTS {
        assert_eq!(v["counts"][letter], n, "count of {letter}");
    }
    let book = &v["books"]["13"];
    assert_eq!(book["best_bid"], 3_201_400);
    assert_eq!(book["bid_size"], 25);
    assert_eq!(book["best_ask"], 3_203_000);
    assert_eq!(book["ask_size"], 100);
    assert_eq!(book["resting_orders"], 215);
    assert_eq!(book["executed_shares"], 81_556);
    assert_eq!(book["prints"], 1_089);
    assert_eq!(v["books"].as_object().map(|o| o.len()), Some(1));
}

fn summary_options() -> ReplayOptions {
    ReplayOptions {
        book_summary: Some(replay_book_config()),
        ..ReplayOptions::default()
    }
}

/// Every record of a stream, as (type, bytes), until its publisher closes it.
fn drain_raw(sub: &mut Subscriber) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        match sub.poll(|m| out.push((m.msg_type(), m.payload().to_vec()))) {
            Ok(_) => {}
            Err(ReceiveError::Closed) => return out,
            Err(e) => panic!("{}: {e}", sub.name()),
        }
    }
}

fn replay_path(
    bus: &Bus,
    path: &Path,
    stream: &str,
    options: ReplayOptions,
) -> (ReplayReport, Subscriber) {
    let r = Replayer::open(
        &Source::Path(path.to_owned()),
        bus,
        stream,
        &replay_ring(),
        options,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sub = bus
        .subscriber(stream, &SubscribeOptions::default())
        .expect("subscribe");
    let report = r
        .run(&mut |_| {})
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (report, sub)
}

#[test]
fn aapl_replays_through_the_bus_and_the_book_service_rebuilds_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let (report, mut sub) = replay_path(&bus, &aapl(), "itch", summary_options());
    assert_eq!(report.format, "itch");
    assert_eq!(
        (report.records, report.published, report.gaps),
        (10_000, 10_000, 0)
    );
    assert!(report.truncated.is_none() && report.warnings.is_empty());
    let replayed = report.summary.as_ref().expect("summary asked for");
    assert_reference(replayed);

    // The book service, reading the stream the replay published, agrees.
    let mut svc = BookService::new(
        &bus,
        "itch",
        &BookServiceConfig {
            book: replay_book_config(),
            ..BookServiceConfig::default()
        },
    )
    .unwrap();
    let mut trades = bus
        .subscriber("itch.trades", &SubscribeOptions::default())
        .unwrap();
    let stats = svc
        .run(&mut sub, WaitStrategy::BusySpin, &AtomicBool::new(false))
        .unwrap();
    assert!(stats.ended);
    assert_eq!(stats.messages, 10_000);
    let from_bus = svc.summary();
    assert_reference(&from_bus);
    assert_eq!(from_bus.to_json(), replayed.to_json());

    // Every print reached the trade stream with a price.
    drop(svc);
    let mut shares = 0u64;
    let mut n = 0u64;
    loop {
        match trades.poll_event(|e| {
            if let Some(t) = e.envelope().event_as_trade() {
                let b = t.body();
                assert!(
                    b.price() > 3_000_000 && b.price() < 3_400_000,
                    "{}",
                    b.price()
                );
                shares += u64::from(b.shares());
                n += 1;
            }
        }) {
            Ok(_) => {}
            Err(ReceiveError::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((n, shares), (1_089, 81_556));
    assert_eq!(stats.unpriced_prints, 0);
}

/// (sequence number of the first message, message count) of each packet of a pcap.
fn packets(path: &Path) -> Vec<(u64, u64)> {
    let mut r = mdbus_codecs::capture::open_capture(path).unwrap();
    let mut out = Vec::new();
    while let Some(d) = r.next_datagram() {
        let d = d.unwrap();
        let p = mdbus_codecs::moldudp64::Packet::parse(d.payload).unwrap();
        out.push((p.sequence_number(), u64::from(p.message_count())));
    }
    out
}

/// (gaps, missing messages) between consecutive packets sorted by sequence number.
fn expected_gaps(mut pkts: Vec<(u64, u64)>) -> (u64, u64) {
    pkts.sort_unstable();
    let mut gaps = (0, 0);
    for w in pkts.windows(2) {
        let next = w[0].0 + w[0].1;
        if w[1].0 > next {
            gaps.0 += 1;
            gaps.1 += w[1].0 - next;
        }
    }
    gaps
}

fn nasdaq_pcaps() -> Vec<PathBuf> {
    let dir = testdata("pcap/Nasdaq.Equities.TotalView.Itch.v5.0");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 8, "{}", dir.display());
    files
}

#[test]
fn nasdaq_pcaps_replay_and_their_sequence_jumps_are_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let mut total_gaps = 0;
    for (i, path) in nasdaq_pcaps().iter().enumerate() {
        let pkts = packets(path);
        let (gaps, missing) = expected_gaps(pkts.clone());
        let stream = format!("pcap{i}");
        let (report, mut sub) = replay_path(&bus, path, &stream, summary_options());
        let name = path.display();
        assert_eq!(report.format, "pcap", "{name}");
        assert_eq!(
            (report.gaps, report.gap_messages),
            (gaps, missing),
            "{name}"
        );
        assert_eq!(report.late_join_first_seq, Some(pkts[0].0), "{name}");
        let messages: u64 = pkts.iter().map(|p| p.1).sum();
        assert_eq!(
            (report.messages, report.published),
            (messages, messages),
            "{name}"
        );
        assert_eq!(report.decode_errors, 0, "{name}");
        assert_eq!(
            report.summary.as_ref().map(|s| s.gaps),
            Some(gaps),
            "{name}"
        );
        // On the stream: every message, a gap notice in each jump, the end of the session.
        let records = drain_raw(&mut sub);
        let notices = records
            .iter()
            .filter(|(_, b)| {
                fb::read_verified(b)
                    .unwrap()
                    .event_as_gap_notice()
                    .is_some_and(|g| !g.recoverable())
            })
            .count() as u64;
        assert_eq!(notices, gaps, "{name}");
        assert_eq!(records.len() as u64, messages + gaps + 1, "{name}");
        total_gaps += gaps;
    }
    // Multiple.Packets.pcap: two packets of one session, 4,244,620 messages apart.
    assert_eq!(total_gaps, 1);
}

/// Writes one pcap holding the packets of all the Nasdaq pcaps, sorted by sequence number.
fn merged_pcap(out: &Path) -> Vec<(u64, u64)> {
    let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut header = Vec::new();
    for path in nasdaq_pcaps() {
        let bytes = std::fs::read(&path).unwrap();
        header = bytes[..24].to_vec();
        let little =
            bytes[..4] == [0x4d, 0x3c, 0xb2, 0xa1] || bytes[..4] == [0xd4, 0xc3, 0xb2, 0xa1];
        assert!(little, "{}: little-endian pcap expected", path.display());
        let mut off = 24;
        let mut seqs = packets(&path).into_iter();
        while off + 16 <= bytes.len() {
            let incl = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
            let rec = bytes[off..off + 16 + incl].to_vec();
            records.push((seqs.next().unwrap().0, rec));
            off += 16 + incl;
        }
    }
    records.sort_by_key(|r| r.0);
    let mut file = header;
    for (_, r) in &records {
        file.extend_from_slice(r);
    }
    std::fs::write(out, file).unwrap();
    nasdaq_pcaps().iter().flat_map(|p| packets(p)).collect()
}

#[test]
fn a_session_spread_over_the_nasdaq_pcaps_reports_each_jump_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("merged.pcap");
    let pkts = merged_pcap(&path);
    let (gaps, missing) = expected_gaps(pkts.clone());
    assert_eq!(gaps, 7, "the files hold 9 packets, two of them adjacent");
    let bus = Bus::with_root(dir.path().join("bus")).unwrap();
    let (report, _sub) = replay_path(&bus, &path, "merged", ReplayOptions::default());
    assert_eq!((report.gaps, report.gap_messages), (gaps, missing));
    assert_eq!(report.published, pkts.iter().map(|p| p.1).sum::<u64>());
}

/// The AAPL file replayed onto stream `live`, and two readers that subscribed before it
/// started (one to keep as the original, one for the recorder).
fn aapl_replayed_to_two_readers(bus: &Bus) -> (Subscriber, Subscriber) {
    let r = Replayer::open(
        &Source::Path(aapl()),
        bus,
        "live",
        &replay_ring(),
        ReplayOptions::default(),
    )
    .unwrap();
    let original = bus
        .subscriber("live", &SubscribeOptions::default())
        .unwrap();
    let recorder = bus
        .subscriber("live", &SubscribeOptions::default())
        .unwrap();
    r.run(&mut |_| {}).unwrap();
    (original, recorder)
}

/// Records `sub` through `writer` (to `file`) with the default options until the stream ends;
/// `stop` is the stop request, made (or not) before it starts.
fn record<W: std::io::Write>(
    sub: &mut Subscriber,
    writer: &mut RecordWriter<W>,
    file: &Path,
    stop: bool,
) -> Result<RecordStats, RecordError> {
    record_stream(
        sub,
        writer,
        file,
        &RecordOptions::default(),
        &AtomicBool::new(stop),
    )
}

#[test]
fn record_counter_names_fit_a_counters_file_and_match_the_values() {
    let stats = RecordStats {
        records: 1,
        bytes: 2,
        overruns: 3,
        lost: 4,
        stop: mdbus_feed_handlers::record::StopReason::Stopped,
    };
    assert_eq!(RecordStats::NAMES.len(), stats.values().len());
    let dir = tempfile::tempdir().unwrap();
    // `create` checks every name (printable ASCII, no spaces, at most 31 bytes, distinct).
    record_counters(dir.path(), "live", Path::new("x.mdbrec")).unwrap();
}

#[test]
fn two_recorders_of_one_stream_both_publish_their_counters() {
    let dir = tempfile::tempdir().unwrap();
    let first = record_counters(dir.path(), "live", Path::new("a.mdbrec")).unwrap();
    let second = record_counters(dir.path(), "live", Path::new("b.mdbrec")).unwrap();
    let a = mdbus_shm::counters::read_counters(first.path()).unwrap();
    let b = mdbus_shm::counters::read_counters(second.path()).unwrap();
    assert_eq!(a.role, "record");
    assert_eq!(b.role, format!("record-{}", std::process::id()));
    assert!(a.alive && b.alive);
    assert_eq!((a.stream.as_str(), b.stream.as_str()), ("live", "live"));
    // Once the first is done, its name is free again.
    drop(first);
    let third = record_counters(dir.path(), "live", Path::new("c.mdbrec")).unwrap();
    assert_eq!(
        mdbus_shm::counters::read_counters(third.path())
            .unwrap()
            .role,
        "record"
    );
}

#[test]
fn a_recorder_publishes_its_counters_and_finishes_them() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path().join("bus")).unwrap();
    let file = dir.path().join("itch.mdbrec");
    let (_original, mut rec_sub) = aapl_replayed_to_two_readers(&bus);
    let counters = record_counters(bus.root(), "live", &file).unwrap();
    let path = bus.root().join("live.record.stat");
    let running = mdbus_shm::counters::read_counters(&path).unwrap();
    assert!(running.alive && !running.finished);
    assert_eq!(
        (running.role.as_str(), running.stream.as_str()),
        ("record", "live")
    );
    let mut writer = RecordWriter::create(&file, "live").unwrap();
    let stats = record_stream_with_counters(
        &mut rec_sub,
        &mut writer,
        &file,
        &RecordOptions::default(),
        &AtomicBool::new(false),
        Some(&counters),
    )
    .unwrap();
    assert_eq!(stats.records, 10_001);
    let snap = mdbus_shm::counters::read_counters(&path).unwrap();
    assert!(snap.finished && !snap.alive);
    let expected: Vec<(String, u64)> = RecordStats::NAMES
        .iter()
        .map(|n| (*n).to_owned())
        .zip(stats.values())
        .collect();
    assert_eq!(snap.counters, expected);
    assert_eq!(
        snap.get("bytes"),
        Some(std::fs::metadata(&file).unwrap().len())
    );
}

#[test]
fn record_then_replay_reproduces_the_same_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path().join("bus")).unwrap();
    let file = dir.path().join("itch.mdbrec");
    let (mut original, mut rec_sub) = aapl_replayed_to_two_readers(&bus);
    let mut writer = RecordWriter::create(&file, "live").unwrap();
    let stats = record(&mut rec_sub, &mut writer, &file, false).unwrap();
    drop(writer);
    assert_eq!(
        stats.records, 10_001,
        "10,000 messages and the end of the session"
    );
    assert_eq!(stats.lost, 0);
    let original = drain_raw(&mut original);
    assert_eq!(original.len(), 10_001);

    // Replaying the recording republishes the same envelopes, byte for byte.
    let (report, mut again) = replay_path(&bus, &file, "again", summary_options());
    assert_eq!(report.format, "recording");
    assert_eq!(report.published, 10_000);
    assert_reference(report.summary.as_ref().unwrap());
    assert_eq!(drain_raw(&mut again), original);

    // A recording cut short keeps the records before the cut and names its offset.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.mdbrec");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let (report, mut again) = replay_path(&bus, &cut, "cut", ReplayOptions::default());
    let t = report.truncated.expect("truncation reported");
    let last_len = original.last().unwrap().1.len() as u64 + 24;
    assert_eq!(t.offset, bytes.len() as u64 - last_len);
    assert!(
        t.detail.contains(&format!("offset {}", t.offset)),
        "{}",
        t.detail
    );
    let got = drain_raw(&mut again);
    assert_eq!(&got[..10_000], &original[..10_000]);
    assert_eq!(got.len(), 10_001, "the replay adds the end of the session");
}

/// A file on a disk that fills after `room` bytes.
struct FullDisk {
    kept: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    room: usize,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut kept = self.kept.lock().unwrap();
        let n = buf.len().min(self.room - kept.len());
        if n == 0 && !buf.is_empty() {
            return Err(std::io::ErrorKind::StorageFull.into());
        }
        kept.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_recording_that_fills_the_disk_says_how_far_it_got_and_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path().join("bus")).unwrap();
    let (mut original, mut rec_sub) = aapl_replayed_to_two_readers(&bus);
    let original = drain_raw(&mut original);

    // The disk takes 300,000 bytes: about a quarter of the session's 1.2 MB.
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let disk = FullDisk {
        kept: std::sync::Arc::clone(&kept),
        room: 300_000,
    };
    let file = dir.path().join("full.mdbrec");
    let mut writer = RecordWriter::new(disk, "live", 1).unwrap();
    let err = record(&mut rec_sub, &mut writer, &file, false).expect_err("the disk filled");
    let RecordError::WriteFailed {
        records,
        bytes,
        unwritten,
        source,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);
    // Exactly what reached the disk: every byte it took, the complete records among them.
    let kept = kept.lock().unwrap().clone();
    assert_eq!(*bytes, kept.len() as u64, "{err}");
    assert!(*records > 1_000 && *records < 10_001, "{records}");
    assert_eq!(records + unwritten, writer.records());
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "{records} complete records ({bytes} bytes) reached the file"
        )) && text.contains("full.mdbrec"),
        "{text}"
    );

    // What reached the disk replays: every complete record, byte for byte.
    std::fs::write(&file, &kept).unwrap();
    let (report, mut again) = replay_path(&bus, &file, "again", ReplayOptions::default());
    assert_eq!(report.records, *records, "{report:?}");
    assert!(report.truncated.is_some(), "the last record was cut");
    let got = drain_raw(&mut again);
    let complete = *records as usize;
    assert_eq!(&got[..complete], &original[..complete]);
}

#[test]
fn a_stop_request_ends_a_recording_before_the_next_record_however_busy_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path().join("bus")).unwrap();
    // 10,001 records wait in the ring: the stream is never idle.
    let (_original, mut rec_sub) = aapl_replayed_to_two_readers(&bus);
    let file = dir.path().join("stopped.mdbrec");
    let mut writer = RecordWriter::create(&file, "live").unwrap();
    let stats = record(&mut rec_sub, &mut writer, &file, true).unwrap();
    assert_eq!(stats.stop, mdbus_feed_handlers::record::StopReason::Stopped);
    assert_eq!(stats.records, 0, "{stats:?}");
    assert_eq!(stats.bytes, std::fs::metadata(&file).unwrap().len());
}

#[test]
fn a_truncated_itch_file_reports_the_offset_and_keeps_what_came_before() {
    let bytes = std::fs::read(aapl()).unwrap();
    // Offset of the last record.
    let mut last = 0;
    let mut off = 0;
    while off < bytes.len() {
        last = off;
        off += 2 + usize::from(u16::from_be_bytes([bytes[off], bytes[off + 1]]));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.itch");
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    let bus = Bus::with_root(dir.path().join("bus")).unwrap();
    let (report, mut sub) = replay_path(&bus, &path, "cut", summary_options());
    let t = report.truncated.expect("truncation reported");
    assert_eq!(t.offset, last as u64);
    assert!(
        t.detail.contains("cut.itch") && t.detail.contains(&last.to_string()),
        "{}",
        t.detail
    );
    assert_eq!(report.published, 9_999);
    assert_eq!(report.summary.unwrap().messages, 9_999);
    assert_eq!(
        drain_raw(&mut sub).len(),
        10_000,
        "9,999 messages and the end of the session"
    );
}

/// Five real Nasdaq packets (one message each: U, A, D, E, I) with their session and
/// sequence numbers zeroed, as sanitized public samples have them.
fn sanitized() -> PathBuf {
    testdata("pcap/sanitized/nasdaq-itch-5-packets-sequence-0.pcap")
}

/// The ITCH letter of every source message on a stream, and the sequence numbers.
fn letters(records: &[(u32, Vec<u8>)]) -> (String, Vec<u64>) {
    let mut letters = String::new();
    let mut seqs = Vec::new();
    for (_, b) in records {
        let env = fb::read_verified(b).unwrap();
        if let Some(t) = mdbus_feed_handlers::venue::source_type_of(env.venue(), env.event_type()) {
            letters.push(char::from(t));
            seqs.push(env.header().seq());
        }
    }
    (letters, seqs)
}

#[test]
fn the_sanitized_nasdaq_sample_replays_all_five_messages_in_capture_order() {
    let pkts = packets(&sanitized());
    assert_eq!(pkts, [(0, 1); 5], "five packets, each numbered 0");
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let (report, mut sub) = replay_path(&bus, &sanitized(), "s", summary_options());
    assert_eq!((report.messages, report.published), (5, 5), "{report:?}");
    assert_eq!(report.decode_errors, 0);
    let why = report.unsequenced.as_deref().expect("sequencing was off");
    assert!(
        why.contains("sanitized") && why.contains("sequence number 0"),
        "{why}"
    );
    assert_eq!(report.zero_sequence_packets, 5);
    assert_eq!(report.gaps, 0);
    let records = drain_raw(&mut sub);
    assert_eq!(letters(&records), ("UADEI".to_owned(), vec![1, 2, 3, 4, 5]));
    assert_eq!(records.len(), 6, "five messages and the end of the session");
}

/// A pcap of the records of `files` (little-endian pcaps with one header), in that order.
fn concatenated(files: &[PathBuf], out: &Path) {
    let mut file = Vec::new();
    for path in files {
        let bytes = std::fs::read(path).unwrap();
        if file.is_empty() {
            file.extend_from_slice(&bytes[..24]);
        }
        file.extend_from_slice(&bytes[24..]);
    }
    std::fs::write(out, file).unwrap();
}

#[test]
fn a_real_capture_with_sanitized_packets_mixed_in_is_sequenced_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path().join("bus")).unwrap();
    let real = testdata("pcap/Nasdaq.Equities.TotalView.Itch.v5.0/Multiple.Packets.pcap");
    let real_pkts = packets(&real);
    let messages: u64 = real_pkts.iter().map(|p| p.1).sum();
    let (gaps, missing) = expected_gaps(real_pkts.clone());
    for (i, order) in [[sanitized(), real.clone()], [real.clone(), sanitized()]]
        .iter()
        .enumerate()
    {
        let path = dir.path().join(format!("mixed{i}.pcap"));
        concatenated(order, &path);
        let (report, mut sub) = replay_path(&bus, &path, &format!("m{i}"), summary_options());
        assert_eq!(report.unsequenced, None, "{report:?}");
        assert_eq!(report.published, messages, "{report:?}");
        assert_eq!((report.gaps, report.gap_messages), (gaps, missing));
        assert_eq!(report.late_join_first_seq, Some(real_pkts[0].0));
        assert_eq!(report.foreign_session_packets, 0);
        assert_eq!(
            (report.zero_sequence_packets, report.zero_sequence_messages),
            (5, 5)
        );
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("sequence number 0") && w.contains("not replayed")),
            "{:?}",
            report.warnings
        );
        let (_, seqs) = letters(&drain_raw(&mut sub));
        assert_eq!(seqs.first(), Some(&real_pkts[0].0));
    }
}
