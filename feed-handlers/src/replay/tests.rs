use super::*;
use mdbus_bus::{ReceiveError, SubscribeOptions, Subscriber};
use mdbus_codecs::moldudp64::PacketBuilder;
use mdbus_codecs::nasdaq::itch::{self, MessageFields, Price4};

use crate::test_fixtures::stock_directory;

const H: u64 = 3_600_000_000_000;
const M: u64 = 60_000_000_000;

fn add(locate: u16, order: u64, ts: u64) -> MessageFields {
    MessageFields::AddOrder(itch::AddOrderFields {
        stock_locate: locate,
        tracking_number: 0,
        timestamp: ts,
        order_reference_number: order,
        buy_sell_indicator: b'B',
        shares: 100,
        stock: *b"AAPL    ",
        price: Price4(1_000_000 + order as u32),
    })
}

fn wire(m: &MessageFields) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let n = m.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn itch_file(msgs: &[MessageFields]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        let w = wire(m);
        out.extend_from_slice(&(w.len() as u16).to_be_bytes());
        out.extend_from_slice(&w);
    }
    out
}

fn leak(bytes: Vec<u8>) -> Source {
    Source::Bytes {
        name: "test".into(),
        bytes: Box::leak(bytes.into_boxed_slice()),
    }
}

/// (source seq, event, locate, flags) of an envelope.
type Seen = (u64, fb::Event, u16, EnvelopeFlags);

/// Every envelope until the stream closes.
fn drain(sub: &mut Subscriber) -> Vec<Seen> {
    let mut out = Vec::new();
    loop {
        match sub.poll_event(|e| {
            let env = e.envelope();
            out.push((
                env.header().seq(),
                env.event_type(),
                env.header().stock_locate(),
                env.flags(),
            ));
        }) {
            Ok(_) => {}
            Err(ReceiveError::Closed) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

/// A replay of `source` onto stream `feed` of `bus` in a ring of `ring`, and a reader of the
/// stream subscribed before it runs.
fn open_with_reader(
    source: &Source,
    bus: &Bus,
    ring: &StreamConfig,
    options: ReplayOptions,
) -> (Replayer, Subscriber) {
    let r = Replayer::open(source, bus, "feed", ring, options).unwrap();
    let sub = bus
        .subscriber("feed", &SubscribeOptions::default())
        .unwrap();
    (r, sub)
}

/// Runs a replay of `source` onto stream `feed` of `bus`: its report, and a reader that
/// subscribed before it started.
fn replay_onto(bus: &Bus, source: &Source, options: ReplayOptions) -> (ReplayReport, Subscriber) {
    let (r, sub) = open_with_reader(source, bus, &replay_ring(), options);
    (r.run(&mut |_| {}).unwrap(), sub)
}

fn replay(source: Source, options: ReplayOptions) -> (ReplayReport, Vec<Seen>) {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let (report, mut sub) = replay_onto(&bus, &source, options);
    (report, drain(&mut sub))
}

/// (source seq, event) of each envelope.
fn kinds(got: &[Seen]) -> Vec<(u64, fb::Event)> {
    got.iter().map(|g| (g.0, g.1)).collect()
}

/// The source seq of each envelope.
fn seqs(got: &[Seen]) -> Vec<u64> {
    got.iter().map(|g| g.0).collect()
}

/// Asserts that one of the report's warnings contains each of `words`.
fn assert_warned(report: &ReplayReport, words: &[&str]) {
    assert!(
        report
            .warnings
            .iter()
            .any(|w| words.iter().all(|word| w.contains(word))),
        "{:?}",
        report.warnings
    );
}

#[test]
fn window_and_symbol_filters() {
    let msgs = [
        stock_directory(13, *b"AAPL    ", 3 * H),
        stock_directory(14, *b"MSFT    ", 3 * H),
        add(13, 1, 9 * H + 29 * M),
        add(14, 2, 9 * H + 31 * M),
        add(13, 3, 9 * H + 31 * M),
        add(13, 4, 10 * H + M),
        add(13, 5, 10 * H + 2 * M),
    ];
    let options = ReplayOptions {
        from: Some("09:30".parse().unwrap()),
        to: Some("10:00".parse().unwrap()),
        symbols: vec!["aapl".into(), "ZZZZ".into()],
        book_summary: Some(BookConfig {
            max_orders: 64,
            max_instruments: 4,
            levels_per_side_hint: 4,
        }),
        ..ReplayOptions::default()
    };
    let (report, got) = replay(leak(itch_file(&msgs)), options);
    let replayed = EnvelopeFlags::Replayed;
    assert_eq!(
        got,
        [
            (1, fb::Event::StockDirectory, 13, replayed),
            (5, fb::Event::AddOrder, 13, replayed),
            (7, fb::Event::EndOfSession, 0, replayed),
        ]
    );
    assert_eq!(report.published, 2);
    // MSFT's directory, order 1 (before), order 2 (MSFT), order 4 (after: the replay stops).
    assert_eq!(report.filtered, 4);
    assert_eq!(report.records, 6, "reading stopped at the window's end");
    assert_eq!(report.unresolved_symbols, ["ZZZZ"]);
    let summary = report.summary.unwrap();
    assert_eq!(summary.messages, 2);
    assert_eq!(summary.book(13).unwrap().resting_orders, 1);
}

#[test]
fn a_time_window_outside_the_file_says_where_its_messages_lie() {
    let msgs = [
        stock_directory(13, *b"AAPL    ", 3 * H),
        add(13, 1, 9 * H + 31 * M),
        add(13, 2, 9 * H + 45 * M),
    ];
    let window = |from: Option<&str>, to: Option<&str>| ReplayOptions {
        from: from.map(|f| f.parse().unwrap()),
        to: to.map(|t| t.parse().unwrap()),
        ..ReplayOptions::default()
    };
    let (report, _) = replay(leak(itch_file(&msgs)), window(Some("15:00"), None));
    assert_eq!(report.published, 1, "the directory only");
    assert_warned(
        &report,
        &["no message in --from 15:00", "from 03:00:00 to 09:45:00"],
    );
    let (report, _) = replay(leak(itch_file(&msgs)), window(Some("01:00"), Some("02:00")));
    assert_warned(&report, &["no message in --from 01:00:00 --to 02:00:00"]);
    // A window the messages fall in says nothing of the kind.
    let (report, _) = replay(leak(itch_file(&msgs)), window(Some("09:30"), Some("09:40")));
    assert_eq!(report.published, 2);
    assert!(
        report.warnings.iter().all(|w| !w.contains("no message in")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn a_truncated_itch_file_keeps_what_came_before() {
    let mut bytes = itch_file(&[add(13, 1, 1), add(13, 2, 2), add(13, 3, 3)]);
    let last = bytes.len() - 38; // 2-byte prefix + 36-byte add order
    bytes.truncate(bytes.len() - 5);
    let (report, got) = replay(leak(bytes), ReplayOptions::default());
    assert_eq!(report.published, 2);
    let t = report.truncated.expect("reported");
    assert_eq!(t.offset, last as u64);
    assert!(t.detail.contains(&format!("offset {last}")), "{}", t.detail);
    assert_eq!(got.len(), 3, "two messages and the end of the session");
}

#[test]
fn undecodable_messages_are_lost_gaps_not_errors() {
    let mut bytes = itch_file(&[add(13, 1, 1)]);
    // A record of the right length for an `A` whose type byte is unknown.
    let mut junk = wire(&add(13, 2, 2));
    junk[0] = b'!';
    bytes.extend_from_slice(&(junk.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&junk);
    bytes.extend_from_slice(&itch_file(&[add(13, 3, 3)]));
    // Starting with a good record, the file is recognised as ITCH.
    let (report, got) = replay(leak(bytes), ReplayOptions::default());
    assert_eq!(report.decode_errors, 1);
    assert_eq!(
        kinds(&got),
        [
            (1, fb::Event::AddOrder),
            (2, fb::Event::GapNotice),
            (3, fb::Event::AddOrder),
            (4, fb::Event::EndOfSession),
        ]
    );
}

/// A UDP datagram: destination address, destination port, payload.
type Datagram = ([u8; 4], u16, Vec<u8>);

/// A classic pcap (microseconds, little-endian, Ethernet) of UDP datagrams.
fn pcap(datagrams: &[Datagram]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, (dst, port, payload)) in datagrams.iter().enumerate() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&[1, 0, 0x5e, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&total.to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1]);
        frame.extend_from_slice(dst);
        frame.extend_from_slice(&1000u16.to_be_bytes());
        frame.extend_from_slice(&port.to_be_bytes());
        frame.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(payload);
        out.extend_from_slice(&(1_600_000_000 + i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

fn mold(session: &[u8; 10], seq: u64, msgs: &[MessageFields]) -> Vec<u8> {
    let mut buf = vec![0u8; 1400];
    let mut b = PacketBuilder::new(&mut buf, Session(*session), seq).unwrap();
    for m in msgs {
        b.push(&wire(m)).unwrap();
    }
    let n = b.finish();
    buf.truncate(n);
    buf
}

#[test]
fn pcap_sequence_jumps_are_gaps_and_other_feeds_are_filtered() {
    let bytes = pcap(&[
        packet(SESSION, 10, &[add(13, 1, 1), add(13, 2, 2)]),
        (GROUP, 26400, mold(b"OTHERFEED1", 1, &[add(99, 1, 1)])),
        packet(SESSION, 15, &[add(13, 3, 3)]),
    ]);
    let options = ReplayOptions {
        port: Some(26477),
        stamp: Stamp::Source,
        ..ReplayOptions::default()
    };
    let (report, got) = replay(leak(bytes.clone()), options);
    assert_eq!(report.format, "pcap");
    assert_eq!((report.gaps, report.gap_messages), (1, 3));
    assert_eq!(report.late_join_first_seq, Some(10));
    assert_eq!(report.datagrams_filtered, 1);
    assert_eq!(
        kinds(&got),
        [
            (10, fb::Event::AddOrder),
            (11, fb::Event::AddOrder),
            (12, fb::Event::GapNotice),
            (15, fb::Event::AddOrder),
            (16, fb::Event::EndOfSession),
        ]
    );

    // Without the port filter the other session's packet is counted and named in a warning.
    let (report, _) = replay(leak(bytes), ReplayOptions::default());
    assert_eq!(report.foreign_session_packets, 1);
    assert_warned(&report, &["--group/--port"]);
}

#[test]
fn source_stamps_come_from_the_capture() {
    let bytes = pcap(&[([233, 0, 0, 1], 1, mold(SESSION, 1, &[add(13, 1, 1)]))]);
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let options = ReplayOptions {
        stamp: Stamp::Source,
        ..ReplayOptions::default()
    };
    let (_, mut sub) = replay_onto(&bus, &leak(bytes), options);
    let mut stamps = Vec::new();
    while let Ok(true) = sub.poll_event(|e| stamps.push(e.envelope().header().recv_ts_ns())) {}
    assert_eq!(stamps[0], 1_600_000_000_000_000_000);
}

#[test]
fn bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let src = leak(itch_file(&[add(13, 1, 1)]));
    let open = |o: ReplayOptions| Replayer::open(&src, &bus, "f", &replay_ring(), o).map(|_| ());
    let e = open(ReplayOptions {
        port: Some(1),
        ..ReplayOptions::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("ITCH file"), "{e}");
    let e = open(ReplayOptions {
        symbols: vec!["TOOLONGSYM".into()],
        ..ReplayOptions::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("TOOLONGSYM"), "{e}");
    let e = open(ReplayOptions {
        from: Some("10:00".parse().unwrap()),
        to: Some("09:00".parse().unwrap()),
        ..ReplayOptions::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

/// A replay whose only reader is its own idle work, on a ring that holds a few dozen
/// envelopes: everything arrives, in order, through the waits (for room, and at a paced
/// speed for each message's time), and `run` runs the work to the end of the session before
/// it closes the stream. Returns the report and how many times the work ran.
fn replay_read_by_its_idle_work(source: &Source, speed: Speed) -> (ReplayReport, u64) {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let ring = StreamConfig {
        capacity: 4096,
        max_msg_len: 512,
        mode: mdbus_bus::Mode::Lossless,
        ..StreamConfig::default()
    };
    let options = ReplayOptions {
        speed,
        ..ReplayOptions::default()
    };
    let (r, mut sub) = open_with_reader(source, &bus, &ring, options);
    let seen = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), false, 0u64)));
    let work = {
        let seen = std::sync::Arc::clone(&seen);
        Box::new(move || {
            let mut s = seen.lock().unwrap();
            s.2 += 1;
            while !s.1 {
                let mut got = None;
                sub.poll_event(|e| {
                    let env = e.envelope();
                    got = Some((env.header().seq(), env.event_type()));
                })
                .unwrap();
                match got {
                    Some((_, fb::Event::EndOfSession)) => s.1 = true,
                    Some((seq, _)) => s.0.push(seq),
                    None => break,
                }
            }
            !s.1
        })
    };
    let report = r.with_idle_work(work).run(&mut |_| {}).unwrap();
    let (seqs, ended, calls) = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        ended,
        "the work read the end of the session before run returned"
    );
    assert_eq!(report.published, 10_000);
    assert_eq!(seqs, (1..=10_000).collect::<Vec<u64>>());
    (report, calls)
}

const AAPL: &[u8] = include_bytes!("../../../codecs/testdata/itch/aapl-2020-01-30-10k.itch");

/// The AAPL session as an ITCH file, and as a recording (a file in `dir`) of its normalized
/// stream.
fn aapl_sources(dir: &Path) -> [(&'static str, Source); 2] {
    let itch_file = Source::Bytes {
        name: "aapl".into(),
        bytes: AAPL,
    };
    let mut norm = mdbus_codecs::nasdaq::normalize::Normalizer::new();
    let mut w = crate::record::RecordWriter::new(Vec::new(), "aapl", 1).unwrap();
    let mut seq = 0;
    for (_, m) in itch::Stream::new(AAPL) {
        seq += 1;
        let env = norm.normalize(&m.unwrap(), seq, 0);
        w.write(
            seq,
            mdbus_bus::ENVELOPE_MSG_TYPE,
            34_200_000_000_000 + seq,
            &env,
        )
        .unwrap();
    }
    let recording = dir.join("aapl.mdbusrec");
    std::fs::write(&recording, w.finish().unwrap()).unwrap();
    [("itch", itch_file), ("recording", Source::Path(recording))]
}

#[test]
fn idle_work_reads_the_stream_while_the_replay_waits_for_room() {
    let dir = tempfile::tempdir().unwrap();
    for (format, source) in aapl_sources(dir.path()) {
        let (report, calls) = replay_read_by_its_idle_work(&source, Speed::Max);
        assert_eq!(report.format, format);
        // The envelopes between two turns of the work do not fit in 4 KiB: the replay waited.
        assert!(report.back_pressured > 0, "{report:?}");
        assert!(
            calls >= 10_000 / crate::pipeline::IDLE_WORK_EVERY,
            "{calls}"
        );
    }
}

#[test]
fn idle_work_reads_the_stream_while_a_paced_replay_waits() {
    let dir = tempfile::tempdir().unwrap();
    for (format, source) in aapl_sources(dir.path()) {
        let (report, calls) = replay_read_by_its_idle_work(&source, Speed::Rate(2_000_000));
        assert_eq!(report.format, format);
        assert!(
            calls >= 10_000 / crate::pipeline::IDLE_WORK_EVERY,
            "{calls}"
        );
    }
}

/// The receive stamps of every message envelope of the AAPL session replayed at `speed`.
fn aapl_stamps(speed: Speed) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let source = Source::Bytes {
        name: "aapl".into(),
        bytes: AAPL,
    };
    let options = ReplayOptions {
        speed,
        ..ReplayOptions::default()
    };
    let (report, mut sub) = replay_onto(&bus, &source, options);
    assert_eq!(
        report.back_pressured, 0,
        "no pause: the ring holds the session"
    );
    let mut stamps = Vec::new();
    while let Ok(true) = sub.poll_event(|e| {
        let env = e.envelope();
        if Nasdaq::type_of_event(env.event_type()).is_some() {
            stamps.push(env.header().recv_ts_ns());
        }
    }) {}
    assert_eq!(stamps.len(), 10_000);
    stamps
}

#[test]
fn full_speed_stamps_read_the_clock_once_per_group() {
    let stamps = aapl_stamps(Speed::Max);
    let every = STAMP_EVERY as usize;
    for (i, s) in stamps.iter().enumerate() {
        assert_eq!(*s, stamps[i - i % every], "message {}", i + 1);
    }
    let readings: Vec<u64> = stamps.iter().step_by(every).copied().collect();
    assert!(readings.windows(2).all(|w| w[0] <= w[1]), "never backwards");
    let distinct = readings.windows(2).filter(|w| w[0] < w[1]).count() + 1;
    assert!(
        distinct > readings.len() * 9 / 10,
        "a fresh reading for each group: {distinct} of {}",
        readings.len()
    );
}

#[test]
fn paced_stamps_read_the_clock_for_every_message() {
    let stamps = aapl_stamps(Speed::Rate(2_000_000));
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "each message its own reading"
    );
}

#[test]
fn a_stamp_after_a_pause_is_a_new_reading() {
    let clock = StampClock::new();
    let mut stamps = Stamps::new(Speed::Max);
    let first = stamps.next(&clock, 0);
    for _ in 1..STAMP_EVERY {
        assert_eq!(stamps.next(&clock, 0), first);
    }
    std::thread::sleep(std::time::Duration::from_millis(2));
    let second = stamps.next(&clock, 0);
    assert!(second >= first + 2_000_000, "a group of {STAMP_EVERY}");
    // The pipeline paused (its count moved): the next stamp is a new reading.
    std::thread::sleep(std::time::Duration::from_millis(2));
    let third = stamps.next(&clock, 1);
    assert!(third >= second + 2_000_000, "after a pause");
    assert_eq!(stamps.next(&clock, 1), third, "no pause since");
    let mut paced = Stamps::new(Speed::Rate(1_000));
    let a = paced.next(&clock, 0);
    std::thread::sleep(std::time::Duration::from_millis(1));
    assert!(paced.next(&clock, 0) > a);
}

/// A heartbeat (`count` 0) or end of session (`count` 0xFFFF) announcing `next`.
fn mold_empty(session: &[u8; 10], next: u64, count: u16) -> Vec<u8> {
    let mut p = session.to_vec();
    p.extend_from_slice(&next.to_be_bytes());
    p.extend_from_slice(&count.to_be_bytes());
    p
}

/// A MoldUDP64 packet whose header says `count` messages at `seq`, with `msgs` in it.
fn mold_raw(session: &[u8; 10], seq: u64, count: u16, msgs: &[MessageFields]) -> Vec<u8> {
    let mut p = mold_empty(session, seq, count);
    for m in msgs {
        let w = wire(m);
        p.extend_from_slice(&(w.len() as u16).to_be_bytes());
        p.extend_from_slice(&w);
    }
    p
}

const ZEROED: &[u8; 10] = &[0; 10];
const GROUP: [u8; 4] = [233, 54, 12, 111];
const SESSION: &[u8; 10] = b"SESSION001";

/// `payload` sent to the feed's group and port.
fn on_feed(payload: Vec<u8>) -> Datagram {
    (GROUP, 26477, payload)
}

/// A MoldUDP64 packet of `msgs` numbered from `seq`, sent to the feed.
fn packet(session: &[u8; 10], seq: u64, msgs: &[MessageFields]) -> Datagram {
    on_feed(mold(session, seq, msgs))
}

/// Replays a capture of `packets`.
fn replay_capture(packets: &[Datagram], options: ReplayOptions) -> (ReplayReport, Vec<Seen>) {
    replay(leak(pcap(packets)), options)
}

#[test]
fn a_sanitized_capture_replays_every_message_in_capture_order() {
    // Session and sequence numbers zeroed, as in sanitized public samples.
    let packets: Vec<_> = (1..=5)
        .map(|i| packet(ZEROED, 0, &[add(13, i, i)]))
        .collect();
    let (report, got) = replay_capture(&packets, ReplayOptions::default());
    assert_eq!(report.published, 5, "{report:?}");
    assert_eq!(
        kinds(&got),
        [
            (1, fb::Event::AddOrder),
            (2, fb::Event::AddOrder),
            (3, fb::Event::AddOrder),
            (4, fb::Event::AddOrder),
            (5, fb::Event::AddOrder),
            (6, fb::Event::EndOfSession),
        ]
    );
    let why = report.unsequenced.as_deref().expect("sequencing was off");
    assert!(why.contains("sequence number 0"), "{why}");
    assert!(why.contains("capture order"), "{why}");
    assert_eq!(
        (report.zero_sequence_packets, report.zero_sequence_messages),
        (5, 5)
    );
    assert_eq!((report.gaps, report.duplicates), (0, 0));
    assert_eq!(report.late_join_first_seq, None);
}

#[test]
fn a_sanitized_capture_keeps_its_order_its_damage_and_its_end() {
    // Heartbeats carry nothing; a damaged block is a lost message in place; the end of the
    // session ends it and what follows is counted.
    let mut damaged = mold_raw(ZEROED, 0, 3, &[add(13, 3, 3)]);
    damaged.extend_from_slice(&[0, 40, 1]); // a block cut short, then nothing
    let packets = [
        packet(ZEROED, 0, &[add(13, 1, 1), add(13, 2, 2)]),
        on_feed(mold_empty(ZEROED, 0, 0)),
        on_feed(damaged),
        packet(ZEROED, 0, &[add(13, 4, 4)]),
        on_feed(mold_empty(ZEROED, 0, 0xFFFF)),
        packet(ZEROED, 0, &[add(13, 5, 5)]),
    ];
    let (report, got) = replay_capture(&packets, ReplayOptions::default());
    assert_eq!(
        kinds(&got),
        [
            (1, fb::Event::AddOrder),
            (2, fb::Event::AddOrder),
            (3, fb::Event::AddOrder),
            (4, fb::Event::GapNotice),
            (6, fb::Event::AddOrder),
            (7, fb::Event::EndOfSession),
        ]
    );
    assert!(report.unsequenced.is_some());
    assert_eq!((report.gaps, report.gap_messages), (1, 2));
    assert_eq!(report.malformed_packets, 1);
    assert_eq!(report.after_end_messages, 1);
    assert_eq!(report.published, 4);
}

#[test]
fn a_stray_sequence_zero_packet_does_not_make_a_real_capture_unsequenced() {
    let packets = [
        packet(ZEROED, 0, &[add(13, 99, 1)]),
        packet(SESSION, 10, &[add(13, 1, 1), add(13, 2, 2)]),
        packet(SESSION, 0, &[add(13, 98, 2)]),
        packet(SESSION, 12, &[add(13, 3, 3)]),
    ];
    let (report, got) = replay_capture(&packets, ReplayOptions::default());
    assert_eq!(report.unsequenced, None, "{report:?}");
    assert_eq!(
        kinds(&got),
        [
            (10, fb::Event::AddOrder),
            (11, fb::Event::AddOrder),
            (12, fb::Event::AddOrder),
            (13, fb::Event::EndOfSession),
        ]
    );
    assert_eq!(report.late_join_first_seq, Some(10));
    assert_eq!(report.foreign_session_packets, 0);
    assert_eq!(
        (report.zero_sequence_packets, report.zero_sequence_messages),
        (2, 2)
    );
    assert_warned(&report, &["sequence number 0", "not replayed"]);
}

#[test]
fn duplicates_foreign_packets_and_packets_after_the_end_are_counted() {
    let packets = [
        packet(SESSION, 1, &[add(13, 1, 1), add(13, 2, 2)]),
        // The other line's copy.
        packet(SESSION, 1, &[add(13, 1, 1), add(13, 2, 2)]),
        packet(b"SESSION002", 1, &[add(13, 9, 1)]),
        on_feed(mold_empty(SESSION, 3, 0xFFFF)),
        // A stale packet after the end.
        packet(SESSION, 3, &[add(13, 3, 3), add(13, 4, 4)]),
    ];
    let (report, got) = replay_capture(&packets, ReplayOptions::default());
    assert_eq!(report.published, 2);
    assert_eq!(report.duplicates, 2);
    assert_eq!(
        (
            report.foreign_session_packets,
            report.foreign_session_messages
        ),
        (1, 1)
    );
    assert_eq!(report.after_end_messages, 2);
    assert_eq!(got.len(), 3, "two messages and the end");
}

#[test]
fn a_capture_with_sequence_numbers_near_u64_max_neither_panics_nor_wraps() {
    let packets = [
        packet(SESSION, 1, &[add(13, 1, 1)]),
        // Their last message would be numbered past u64::MAX - 1: no next sequence number.
        packet(SESSION, u64::MAX, &[add(13, 2, 2)]),
        packet(SESSION, u64::MAX - 1, &[add(13, 3, 3), add(13, 4, 4)]),
        packet(SESSION, 2, &[add(13, 5, 5)]),
    ];
    let (report, got) = replay_capture(&packets, ReplayOptions::default());
    assert_eq!(
        kinds(&got),
        [
            (1, fb::Event::AddOrder),
            (2, fb::Event::AddOrder),
            (3, fb::Event::EndOfSession),
        ]
    );
    assert_eq!((report.gaps, report.gap_messages), (0, 0));
    assert_eq!(report.malformed_packets, 2);
    assert_warned(&report, &["18446744073709551615"]);
}

#[test]
fn a_recording_with_extreme_sequence_numbers_neither_panics_nor_wraps() {
    let mut norm = mdbus_codecs::nasdaq::normalize::Normalizer::new();
    let mut w = crate::record::RecordWriter::new(Vec::new(), "x", 1).unwrap();
    let m = |i: u64| wire(&add(13, i, i));
    for (bus_seq, src_seq) in [(1, 1), (u64::MAX, u64::MAX), (u64::MAX, u64::MAX), (0, 0)] {
        let bytes = m(bus_seq % 7);
        let msg = itch::decode(&bytes).unwrap();
        let env = norm.normalize(&msg, src_seq, 0).to_vec();
        w.write(bus_seq, mdbus_bus::ENVELOPE_MSG_TYPE, 1, &env)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("extreme.mdbusrec");
    std::fs::write(&path, w.finish().unwrap()).unwrap();
    let (report, got) = replay(Source::Path(path), ReplayOptions::default());
    assert_eq!(report.published, 4, "{report:?}");
    // One jump forward (1 -> u64::MAX); a repeat and a restart are not gaps.
    assert_eq!((report.gaps, report.gap_messages), (1, u64::MAX - 2));
    let end = got.last().unwrap();
    assert_eq!((end.0, end.1), (1, fb::Event::EndOfSession));
}

#[test]
fn a_long_sanitized_prefix_is_replayed_in_capture_order_and_later_real_packets_reported() {
    let mut packets: Vec<_> = (0..HOLD_PACKETS as u64 + 2)
        .map(|i| packet(ZEROED, 0, &[add(13, i + 1, i + 1)]))
        .collect();
    packets.push(packet(SESSION, 7, &[add(13, 9, 9)]));
    let (report, got) = replay_capture(&packets, ReplayOptions::default());
    let n = HOLD_PACKETS as u64 + 2;
    assert_eq!(report.published, n);
    assert!(report.unsequenced.is_some());
    assert_eq!(
        seqs(&got),
        (1..=n + 1).collect::<Vec<_>>(),
        "in capture order, then the end"
    );
    assert_eq!(
        (
            report.sequenced_packets_skipped,
            report.sequenced_messages_skipped
        ),
        (1, 1)
    );
    assert_warned(&report, &["real sequence numbers"]);
}

#[test]
fn forged_far_jumps_in_a_capture_are_counted_not_taken_as_gaps() {
    let packets = [
        packet(SESSION, 1, &[add(13, 1, 1), add(13, 2, 2)]),
        packet(SESSION, 3, &[add(13, 3, 3)]),
        packet(SESSION, 1_000_000_000_000, &[add(13, 9, 9)]),
        on_feed(mold_empty(SESSION, 1_000_000_000_000_000_000, 0)),
        packet(SESSION, 4, &[add(13, 4, 4)]),
    ];
    let (report, got) = replay_capture(&packets, ReplayOptions::default());
    assert_eq!(seqs(&got), [1, 2, 3, 4, 5], "four messages and the end");
    assert_eq!((report.gaps, report.gap_messages), (0, 0), "{report:?}");
    assert_eq!(report.implausible_jumps, 2);
    assert_eq!(report.implausible_messages, 1);
    assert_warned(&report, &["--max-gap"]);

    // A real jump beyond the window: the next packet near it corroborates it.
    let packets = [
        packet(SESSION, 1, &[add(13, 1, 1)]),
        packet(SESSION, 2, &[add(13, 2, 2)]),
        packet(SESSION, 100, &[add(13, 3, 3)]),
        packet(SESSION, 101, &[add(13, 4, 4)]),
    ];
    let options = ReplayOptions {
        max_gap: 10,
        ..ReplayOptions::default()
    };
    let (report, got) = replay_capture(&packets, options);
    assert_eq!(
        kinds(&got),
        [
            (1, fb::Event::AddOrder),
            (2, fb::Event::AddOrder),
            (3, fb::Event::GapNotice),
            (101, fb::Event::AddOrder),
            (102, fb::Event::EndOfSession),
        ]
    );
    // The suspect packet was not kept: its message is in the gap.
    assert_eq!((report.gaps, report.gap_messages), (1, 98));
    assert_eq!(
        (report.implausible_jumps, report.jumps_corroborated),
        (1, 1)
    );
}

#[test]
fn a_forged_first_packet_does_not_take_the_place_of_the_real_session() {
    let packets = [
        packet(SESSION, 1_000_000_000_000, &[add(13, 9, 9)]),
        packet(SESSION, 1, &[add(13, 1, 1), add(13, 2, 2)]),
        packet(SESSION, 3, &[add(13, 3, 3)]),
    ];
    let (report, got) = replay_capture(&packets, ReplayOptions::default());
    assert_eq!(
        seqs(&got),
        [1, 2, 3, 4],
        "three messages and the end: {report:?}"
    );
    assert_eq!(
        (report.anchors_replaced, report.replaced_anchor_messages),
        (1, 1)
    );
    assert_eq!((report.gaps, report.duplicates), (0, 0));
    assert_warned(&report, &["first packet was replaced"]);
}

/// A recording of envelopes with these headers: a directory listing `ZZZZ` and two add
/// orders each.
fn recording_of(headers: &[HeaderFields]) -> PathBuf {
    let mut enc = Encoder::new();
    let mut w = crate::record::RecordWriter::new(Vec::new(), "x", 1).unwrap();
    for (i, h) in headers.iter().enumerate() {
        let h = HeaderFields {
            seq: i as u64 + 1,
            ..*h
        };
        let env = match i % 3 {
            0 => enc
                .stock_directory(
                    &h,
                    &fb::StockDirectoryFields {
                        stock: *b"ZZZZ    ",
                        ..Default::default()
                    },
                )
                .to_vec(),
            _ => enc
                .add_order(
                    &h,
                    &fb::AddOrderFields {
                        order_reference_number: i as u64,
                        buy_sell_indicator: fb::Side::Buy,
                        shares: 1,
                        stock: *b"ZZZZ    ",
                        price: 1,
                    },
                )
                .to_vec(),
        };
        w.write(i as u64 + 1, mdbus_bus::ENVELOPE_MSG_TYPE, 1, &env)
            .unwrap();
    }
    let path = std::env::temp_dir().join(format!(
        "mdbus-v17-venue-{}-{}.mdbusrec",
        std::process::id(),
        headers.len()
    ));
    std::fs::write(&path, w.finish().unwrap()).unwrap();
    path
}

#[test]
fn a_recording_is_filtered_by_instrument_and_one_from_before_venues_by_stock_locate() {
    let iex = |instrument| HeaderFields {
        venue: fb::Venue::Iex,
        instrument,
        ..HeaderFields::default()
    };
    // Written before envelopes named a venue: venue Unknown, instrument 0, the ITCH locate.
    let old = |stock_locate| HeaderFields {
        stock_locate,
        ..HeaderFields::default()
    };
    let path = recording_of(&[
        iex(70_000), // lists ZZZZ as 70,000
        iex(70_000),
        iex(5),
        old(13), // lists ZZZZ as locate 13
        old(13),
        old(14),
    ]);
    let options = ReplayOptions {
        symbols: vec!["ZZZZ".into()],
        ..ReplayOptions::default()
    };
    let (report, got) = replay(Source::Path(path.clone()), options);
    std::fs::remove_file(&path).unwrap();
    let published: Vec<_> = kinds(&got)
        .into_iter()
        .filter(|k| k.1 != fb::Event::EndOfSession)
        .collect();
    assert_eq!(
        published,
        [
            (1, fb::Event::StockDirectory),
            (2, fb::Event::AddOrder),
            (4, fb::Event::StockDirectory),
            (5, fb::Event::AddOrder),
        ]
    );
    assert_eq!((report.published, report.filtered), (4, 2), "{report:?}");
    assert!(report.unresolved_symbols.is_empty());
}

#[test]
fn the_symbol_filter_keeps_ids_past_its_bitmap() {
    let mut f = SymbolFilter::new(&["AAPL".into()]).unwrap().unwrap();
    assert!(f.allows(0) && !f.allows(1) && !f.allows(u32::MAX));
    f.directory(u32::MAX, b"AAPL    ");
    f.directory(u32::MAX, b"AAPL    ");
    f.directory(FILTER_BITMAP_IDS - 1, b"AAPL    ");
    f.directory(7, b"MSFT    ");
    assert!(f.allows(u32::MAX) && f.allows(FILTER_BITMAP_IDS - 1));
    assert!(!f.allows(7) && !f.allows(FILTER_BITMAP_IDS));
    assert_eq!(f.allowed_large, [u32::MAX]);
}

#[test]
fn counter_names_fit_a_counters_file_and_match_the_values() {
    let report = replay(leak(itch_file(&[add(1, 1, H)])), ReplayOptions::default()).0;
    assert_eq!(ReplayReport::NAMES.len(), report.values().len());
    let dir = tempfile::tempdir().unwrap();
    // `create` checks every name (printable ASCII, no spaces, at most 31 bytes, distinct).
    CounterFile::create(dir.path(), "feed", COUNTERS_ROLE, "", &ReplayReport::NAMES).unwrap();
}

#[test]
fn a_replay_publishes_its_report_as_counters() {
    let dir = tempfile::tempdir().unwrap();
    let sources = aapl_sources(dir.path());
    let pcap_source = leak(pcap(&[
        (
            [239, 1, 1, 1],
            5000,
            mold(b"SESSION001", 1, &[add(1, 1, H), add(1, 2, H)]),
        ),
        (
            [239, 1, 1, 1],
            5000,
            mold(b"SESSION001", 5, &[add(1, 5, H)]),
        ),
    ]));
    for (what, source) in sources.into_iter().chain([("pcap", pcap_source)]) {
        let root = tempfile::tempdir().unwrap();
        let bus = Bus::with_root(root.path()).unwrap();
        let mut r = Replayer::open(
            &source,
            &bus,
            "feed",
            &replay_ring(),
            ReplayOptions::default(),
        )
        .unwrap();
        r.publish_counters(&bus).unwrap();
        let path = root.path().join("feed.replay.stat");
        let running = mdbus_shm::counters::read_counters(&path).unwrap();
        assert!(running.alive && !running.finished, "{what}");
        let report = r.run(&mut |_| {}).unwrap();
        let snap = mdbus_shm::counters::read_counters(&path).unwrap();
        assert_eq!(
            (snap.role.as_str(), snap.stream.as_str()),
            ("replay", "feed")
        );
        assert!(snap.finished && !snap.alive, "{what}");
        assert!(snap.updates >= 1, "{what}");
        let expected: Vec<(String, u64)> = ReplayReport::NAMES
            .iter()
            .map(|n| (*n).to_owned())
            .zip(report.values())
            .collect();
        assert_eq!(snap.counters, expected, "{what}");
        assert!(snap.get("published").unwrap() > 0, "{what}");
        assert!(
            snap.detail.starts_with(report.format),
            "{what}: {}",
            snap.detail
        );
    }
}

/// A paced replay that builds books on its own thread applies every order message it has
/// published before it waits for the next one: book updates are never held back across a
/// wait. The idle work, which runs in the waits on the replay's thread, checks that the book
/// stream already carries the last order message the feed stream does.
#[test]
fn a_paced_replay_publishes_its_books_before_each_wait() {
    use crate::bookstream::{BookService, BookServiceConfig, Share, book_stream_name};
    let mut msgs = vec![stock_directory(1, *b"AAPL    ", 0)];
    // Each add is a new best bid: one Bbo on the book stream per message.
    msgs.extend((1..=12u64).map(|i| add(1, i, i * 1_000)));
    let source = leak(itch_file(&msgs));
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::with_root(dir.path()).unwrap();
    let config = BookServiceConfig {
        book: BookConfig {
            max_orders: 64,
            max_instruments: 4,
            levels_per_side_hint: 16,
        },
        output: replay_ring(),
        publish_levels: false,
        share: Share::ALL,
    };
    let svc = BookService::new(&bus, "feed", &config).unwrap();
    let options = ReplayOptions {
        speed: Speed::Rate(200),
        ..ReplayOptions::default()
    };
    let (r, mut feed) = open_with_reader(&source, &bus, &replay_ring(), options);
    let mut book = bus
        .subscriber(&book_stream_name("feed"), &SubscribeOptions::default())
        .unwrap();
    // (waits that saw an order message, the lags seen: feed seq - latest book seq)
    let seen = Arc::new(std::sync::Mutex::new((0u32, Vec::new())));
    let work = {
        let seen = Arc::clone(&seen);
        let (mut last_order, mut last_book) = (0u64, 0u64);
        Box::new(move || {
            let mut ended = false;
            while let Ok(true) = feed.poll_event(|e| {
                let env = e.envelope();
                match env.event_type() {
                    fb::Event::AddOrder => last_order = env.header().seq(),
                    fb::Event::EndOfSession => ended = true,
                    _ => {}
                }
            }) {}
            while let Ok(true) = book.poll_event(|e| {
                let env = e.envelope();
                if env.event_type() == fb::Event::Bbo {
                    last_book = env.header().seq();
                }
            }) {}
            if last_order != 0 && !ended {
                let mut s = seen.lock().unwrap();
                s.0 += 1;
                s.1.push(last_order - last_book);
            }
            !ended
        }) as IdleWork
    };
    let (report, svc) = r
        .with_idle_work(work)
        .with_book_service(svc)
        .unwrap()
        .run_with_book_service(&mut |_| {})
        .unwrap();
    assert_eq!(report.published, 13);
    assert_eq!(svc.unwrap().stats().bbos_published, 12);
    let (waits, lags) = std::mem::take(&mut *seen.lock().unwrap());
    assert!(waits >= 1, "the replay waited after an order message");
    assert!(
        lags.iter().all(|&l| l == 0),
        "book updates held back across a wait (feed seq - book seq): {lags:?}"
    );
}
