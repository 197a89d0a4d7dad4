use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use mdbus_codecs::moldudp64::{Packet, RequestPacket, Session};

use super::*;

const S: Session = Session(*b"TESTSESS01");

fn playout(max_datagram: usize, window_ns: u64) -> Playout {
    Playout::new(&PlayoutConfig {
        session: S,
        max_datagram,
        flush_window_ns: window_ns,
        store_messages: 1 << 16,
        store_bytes: 1 << 22,
        reply_rate: 1000,
        reply_burst: 100,
        max_reply_messages: 1024,
    })
    .expect("a valid playout")
}

/// A message of `len` bytes whose bytes say which one it is.
fn msg(i: u64, len: usize) -> Vec<u8> {
    let mut m = vec![0u8; len];
    for (j, b) in m.iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(j as u8);
    }
    m
}

/// Every packet sent, as (first sequence number, count, messages).
fn parse_all(packets: &[Vec<u8>]) -> Vec<(u64, u16, Vec<Vec<u8>>)> {
    packets
        .iter()
        .map(|p| {
            let pk = Packet::parse(p).expect("a MoldUDP64 packet");
            assert_eq!(pk.session(), S);
            let msgs = if pk.is_end_of_session() {
                Vec::new()
            } else {
                pk.messages()
                    .map(|m| m.expect("a whole block").to_vec())
                    .collect()
            };
            (pk.sequence_number(), pk.message_count(), msgs)
        })
        .collect()
}

fn aapl() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/testdata/itch/aapl-2020-01-30-10k.itch")
}

#[test]
fn at_max_speed_packets_fill_up_to_the_budget_numbered_from_one() {
    let mut p = playout(1400, 200_000);
    let mut sent = Vec::new();
    let input: Vec<Vec<u8>> = (0..1000).map(|i| msg(i, 20 + (i as usize % 30))).collect();
    for (i, m) in input.iter().enumerate() {
        // Every message has its own timestamp; all are due at once.
        assert!(p.offer(i as u64, 0, m, &mut |b: &[u8]| sent.push(b.to_vec())));
    }
    p.flush(&mut |b: &[u8]| sent.push(b.to_vec()));
    let parsed = parse_all(&sent);
    let mut next = 1;
    let mut out = Vec::new();
    for (i, (seq, count, msgs)) in parsed.iter().enumerate() {
        assert_eq!(*seq, next, "packet {i} starts where the one before ended");
        assert_eq!(usize::from(*count), msgs.len());
        next += u64::from(*count);
        assert!(sent[i].len() <= 1400);
        if i + 1 < parsed.len() {
            // Full: the next message (at most 51 bytes with its length) did not fit.
            assert!(
                sent[i].len() > 1400 - 52,
                "packet {i}: {} bytes",
                sent[i].len()
            );
        }
        out.extend(msgs.iter().cloned());
    }
    assert_eq!(out, input);
    assert_eq!(p.next_seq(), 1001);
    assert_eq!(p.stats().messages, 1000);
    assert_eq!(p.stats().packets, sent.len() as u64);
}

#[test]
fn paced_messages_share_a_packet_by_timestamp_or_flush_window() {
    let window = 100_000;
    let mut p = playout(1400, window);
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut send = |b: &[u8]| sent.push(b.to_vec());
    let m = msg(0, 30);
    // Same exchange timestamp: one packet, even when due after the window.
    p.offer(5, 0, &m, &mut send);
    p.offer(5, 10 * window, &m, &mut send);
    // Due within the window of the packet's first message: joins.
    p.offer(6, window, &m, &mut send);
    assert_eq!(p.open_count(), 3);
    // Another timestamp, due after the window: the open packet goes first.
    assert!(!p.joins(m.len(), 7, window + 1));
    p.offer(7, window + 1, &m, &mut send);
    assert_eq!(p.open_count(), 1);
    assert_eq!(p.flush_deadline(), Some(2 * window + 1));
    p.flush(&mut send);
    let parsed = parse_all(&sent);
    assert_eq!(
        parsed.iter().map(|(s, c, _)| (*s, *c)).collect::<Vec<_>>(),
        [(1, 3), (4, 1)]
    );
}

#[test]
fn heartbeats_and_end_of_session_carry_the_next_sequence_number() {
    let mut p = playout(1400, 0);
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut send = |b: &[u8]| sent.push(b.to_vec());
    p.heartbeat(&mut send);
    p.offer(1, 0, &msg(1, 10), &mut send);
    p.offer(1, 0, &msg(2, 10), &mut send);
    // The open packet goes out before the end of the session.
    p.end_of_session(&mut send);
    p.end_of_session(&mut send);
    let pk: Vec<Packet<'_>> = sent.iter().map(|b| Packet::parse(b).unwrap()).collect();
    assert!(pk[0].is_heartbeat() && pk[0].sequence_number() == 1);
    assert_eq!((pk[1].sequence_number(), pk[1].message_count()), (1, 2));
    for eos in &pk[2..] {
        assert!(eos.is_end_of_session());
        assert_eq!(eos.sequence_number(), 3);
        assert_eq!(eos.as_bytes().len(), 20);
    }
    assert_eq!(sent.len(), 4);
    assert_eq!((p.stats().heartbeats, p.stats().end_of_session), (1, 2));
}

#[test]
fn a_message_longer_than_a_datagram_is_counted_and_not_numbered() {
    let mut p = playout(64, 0);
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut send = |b: &[u8]| sent.push(b.to_vec());
    assert!(p.offer(1, 0, &msg(1, 42), &mut send)); // 20 + 2 + 42 = 64: fits exactly
    assert!(!p.offer(1, 0, &msg(2, 43), &mut send));
    assert!(p.offer(1, 0, &msg(3, 10), &mut send));
    p.flush(&mut send);
    assert_eq!(p.stats().oversize, 1);
    let parsed = parse_all(&sent);
    assert_eq!(
        parsed.iter().map(|(s, c, _)| (*s, *c)).collect::<Vec<_>>(),
        [(1, 1), (2, 1)]
    );
}

fn request(session: Session, seq: u64, count: u16) -> [u8; 20] {
    let mut r = [0u8; 20];
    RequestPacket {
        session,
        sequence_number: seq,
        message_count: count,
    }
    .encode(&mut r)
    .unwrap();
    r
}

#[test]
fn re_requests_are_answered_from_what_was_sent_and_rate_limited_per_host() {
    let mut p = playout(1400, 0);
    let mut wire = |_: &[u8]| {};
    for i in 1..=50 {
        p.offer(i, 0, &msg(i, 20), &mut wire);
    }
    // Messages 1..=50 are still in the open packet: not sent, so not answered yet.
    let host: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let mut answers: Vec<Vec<u8>> = Vec::new();
    p.handle_request(0, host, &request(S, 1, 5), &mut |b: &[u8]| {
        answers.push(b.to_vec())
    })
    .unwrap();
    assert!(answers.is_empty());
    p.flush(&mut wire);
    p.handle_request(0, host, &request(S, 10, 3), &mut |b: &[u8]| {
        answers.push(b.to_vec())
    })
    .unwrap();
    let parsed = parse_all(&answers);
    assert_eq!(parsed.len(), 1);
    assert_eq!((parsed[0].0, parsed[0].1), (10, 3));
    assert_eq!(parsed[0].2, [msg(10, 20), msg(11, 20), msg(12, 20)]);
    assert_eq!(p.stats().retransmit_messages, 3);
    assert_eq!(p.stats().retransmit_packets, 1);

    // Another session's request, and a malformed one, are refused and counted.
    let other = Session(*b"OTHERSESS1");
    assert!(
        p.handle_request(0, host, &request(other, 1, 1), &mut |_: &[u8]| {})
            .is_err()
    );
    assert!(
        p.handle_request(0, host, &[1, 2, 3], &mut |_: &[u8]| {})
            .is_err()
    );
    assert_eq!(p.stats().bad_requests, 2);

    // A burst of 100 per host: from any of its ports the host gets no more at once.
    let mut got = 0u64;
    for port in 0..10u16 {
        let from: SocketAddr = SocketAddr::from(([10, 0, 0, 1], 5000 + port));
        let _ = p.handle_request(0, from, &request(S, 1, 50), &mut |b: &[u8]| {
            got += u64::from(Packet::parse(b).unwrap().message_count())
        });
    }
    assert!(got <= 100, "{got}");
    assert!(p.stats().rate_limited > 0);
    // Another host has its own bucket.
    let mut other_got = 0u64;
    p.handle_request(
        0,
        "10.0.0.2:4000".parse().unwrap(),
        &request(S, 1, 50),
        &mut |b: &[u8]| other_got += u64::from(Packet::parse(b).unwrap().message_count()),
    )
    .unwrap();
    assert_eq!(other_got, 50);
    assert_eq!(p.stats().requests, 15);
}

#[test]
fn session_names_come_from_the_file_or_the_flag() {
    let s = session_from_file(&aapl());
    assert_eq!(&s.0, b"AAPL202001");
    assert_eq!(
        &session_from_file(Path::new("/x/a-b.itch")).0,
        b"ABITCH    "
    );
    assert_eq!(&session_from_file(Path::new("/x/--.")).0, b"EXCHANGE  ");
    assert_eq!(Session::parse("S1").unwrap().0, *b"S1        ");
    assert!(Session::parse("").is_err());
    assert!(Session::parse("ELEVENCHARS").is_err());
    assert!(Session::parse("caf\u{e9}").is_err());
    assert_eq!(counters_name(Session::parse("a b/c").unwrap()), "a_b_c");
    assert_eq!(counters_name(Session::parse(".x").unwrap()), "_x");
    assert_eq!(counters_name(s), "AAPL202001");
}

#[test]
fn the_schedule_follows_the_speed() {
    let mut s = Schedule::new(Speed::Max);
    assert_eq!((s.due(5), s.due(1_000_000)), (0, 0));
    let mut s = Schedule::new(Speed::Factor(10.0));
    assert_eq!(s.due(1_000_000_000), 0);
    assert_eq!(s.due(1_050_000_000), 5_000_000);
    // Earlier than the first: due at once.
    assert_eq!(s.due(5), 0);
    let mut s = Schedule::new(Speed::Rate(1000));
    assert_eq!([s.due(9), s.due(9), s.due(0)], [0, 1_000_000, 2_000_000]);
}

#[test]
fn the_source_reads_every_itch_message_with_its_timestamp() {
    let mut src = Source::open(&aapl(), None).unwrap();
    let mut buf = [0u8; 1400];
    let (mut n, mut last) = (0u64, 0u64);
    while let Some((ts, len)) = src.next_into(&mut buf) {
        assert!(len <= buf.len());
        assert_eq!(
            mdbus_codecs::nasdaq::itch::timestamp_of(&buf[..len]),
            Some(ts)
        );
        assert!(ts >= last);
        last = ts;
        n += 1;
    }
    assert_eq!(n, 10_000);
    assert_eq!(src.stats(), SourceStats::default());
}

#[test]
fn the_source_reads_a_pcap_in_sequence_order() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../codecs/testdata/pcap");
    let mut src = Source::open(
        &dir.join("Nasdaq.Equities.TotalView.Itch.v5.0/Multiple.Packets.pcap"),
        None,
    )
    .unwrap();
    let mut buf = [0u8; 1400];
    let mut n = 0;
    while let Some((_, len)) = src.next_into(&mut buf) {
        assert!(len > 0 && len <= buf.len());
        n += 1;
    }
    assert!(n > 0);
    assert_eq!(src.stats().capture_errors, 0);
    // A sanitized capture (every packet numbered 0) plays in capture order.
    let mut src = Source::open(
        &dir.join("sanitized/nasdaq-itch-5-packets-sequence-0.pcap"),
        None,
    )
    .unwrap();
    let mut n = 0;
    while src.next_into(&mut buf).is_some() {
        n += 1;
    }
    assert!(n >= 5, "{n}");
}

#[test]
fn a_recording_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec");
    std::fs::write(&path, b"MDBUSREC\x01\x00\x00\x00rest").unwrap();
    let e = Source::open(&path, None).unwrap_err().to_string();
    assert!(e.contains("recording"), "{e}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let e = Source::open(&empty, None).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
}

/// The whole exchange on loopback, to a unicast "group": every message of the file arrives
/// once in order (no loss on loopback at this size), then the end of the session, and a
/// re-request is answered during the linger.
#[test]
fn an_exchange_plays_the_file_and_ends_the_session() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = socket2::SockRef::from(&rx).set_recv_buffer_size(8 << 20);
    let SocketAddr::V4(group) = rx.local_addr().unwrap() else {
        unreachable!()
    };
    let mut cfg = ExchangeConfig::new(group);
    cfg.request_addr = "127.0.0.1:0".parse().unwrap();
    cfg.send.interface = std::net::Ipv4Addr::LOCALHOST;
    cfg.linger = Duration::from_millis(500);
    cfg.speed = Speed::Rate(20_000);
    let mut ex = Exchange::new(&aapl(), cfg).unwrap();
    let server = ex.request_addr().unwrap();
    assert_eq!(ex.session().0, *b"AAPL202001");
    let stop = AtomicBool::new(false);
    let player = std::thread::spawn(move || ex.run(&stop));

    let mut buf = [0u8; 2048];
    let mut expected = 1u64;
    let mut src = Source::open(&aapl(), None).unwrap();
    let mut want = [0u8; 1400];
    loop {
        let n = rx.recv(&mut buf).expect("a packet within 10 s");
        let p = Packet::parse(&buf[..n]).unwrap();
        if p.is_end_of_session() {
            assert_eq!(p.sequence_number(), 10_001);
            break;
        }
        if p.is_heartbeat() {
            continue;
        }
        assert_eq!(p.sequence_number(), expected);
        for m in p.messages() {
            let m = m.unwrap();
            let (_, len) = src.next_into(&mut want).unwrap();
            assert_eq!(m, &want[..len]);
        }
        expected = p.next_sequence_number();
    }
    // Answered while it lingers.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
        .send_to(&request(Session(*b"AAPL202001"), 9_999, 5), server)
        .unwrap();
    let n = client.recv(&mut buf).unwrap();
    let p = Packet::parse(&buf[..n]).unwrap();
    assert_eq!((p.sequence_number(), p.message_count()), (9_999, 2));
    let stats = player.join().unwrap();
    assert_eq!(stats.messages, 10_000);
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.retransmit_messages, 2);
    assert!(stats.end_of_session >= 3);
    assert_eq!(stats.send_errors, 0);
}

#[test]
fn reading_batching_and_answering_do_not_allocate() {
    let mut src = Source::open(&aapl(), None).unwrap();
    let mut p = playout(1400, 0);
    let mut sched = Schedule::new(Speed::Factor(1.0));
    let mut buf = [0u8; 1400];
    let host: SocketAddr = "10.0.0.1:4000".parse().unwrap();
    let req = request(S, 100, 50);
    let (mut bytes, mut answered) = (0usize, 0usize);
    let info = allocation_counter::measure(|| {
        while let Some((ts, len)) = src.next_into(&mut buf) {
            let due = sched.due(ts);
            p.offer(ts, due, &buf[..len], &mut |b: &[u8]| bytes += b.len());
        }
        p.end_of_session(&mut |b: &[u8]| bytes += b.len());
        p.heartbeat(&mut |b: &[u8]| bytes += b.len());
        let _ = p.handle_request(0, host, &req, &mut |b: &[u8]| answered += b.len());
    });
    assert_eq!(info.count_total, 0);
    assert_eq!(p.stats().messages, 10_000);
    assert!(bytes > 0 && answered > 0);
}

/// A length-prefixed ITCH file of system event messages ('S', 12 bytes) stamped `ts`.
fn itch_file_of(dir: &Path, ts: &[u64]) -> PathBuf {
    let mut bytes = Vec::new();
    for (i, t) in ts.iter().enumerate() {
        let mut m = [0u8; 12];
        m[0] = b'S';
        m[3..5].copy_from_slice(&(i as u16).to_be_bytes());
        m[5..11].copy_from_slice(&t.to_be_bytes()[2..]);
        m[11] = b'O';
        bytes.extend_from_slice(&12u16.to_be_bytes());
        bytes.extend_from_slice(&m);
    }
    let path = dir.join("events.itch");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Every datagram `rx` receives until the end of the session.
fn receive_session(rx: &UdpSocket) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let n = rx.recv(&mut buf).expect("a packet within 10 s");
        out.push(buf[..n].to_vec());
        if Packet::parse(&buf[..n]).is_ok_and(|p| p.is_end_of_session()) {
            return out;
        }
    }
}

fn local_receiver() -> (UdpSocket, SocketAddrV4) {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let SocketAddr::V4(addr) = rx.local_addr().unwrap() else {
        unreachable!()
    };
    (rx, addr)
}

/// At the recorded pace, a quiet stretch of the capture is filled with heartbeats carrying
/// the next sequence number; line B gets the very same packets.
#[test]
fn a_quiet_stretch_gets_heartbeats_and_line_b_the_same_packets() {
    let dir = tempfile::tempdir().unwrap();
    // Two messages at one timestamp, then one 60 ms later.
    let file = itch_file_of(dir.path(), &[1_000_000_000, 1_000_000_000, 1_060_000_000]);
    let (rx_a, a) = local_receiver();
    let (rx_b, b) = local_receiver();
    let mut cfg = ExchangeConfig::new(a);
    cfg.line_b = Some(b);
    cfg.request_addr = "127.0.0.1:0".parse().unwrap();
    cfg.send.interface = std::net::Ipv4Addr::LOCALHOST;
    cfg.speed = Speed::Factor(1.0);
    cfg.heartbeat_interval = Duration::from_millis(5);
    cfg.linger = Duration::ZERO;
    cfg.session = Some(S);
    let mut ex = Exchange::new(&file, cfg).unwrap();
    let stop = AtomicBool::new(false);
    let player = std::thread::spawn(move || ex.run(&stop));
    let got_a = receive_session(&rx_a);
    let got_b = receive_session(&rx_b);
    let stats = player.join().unwrap();
    assert_eq!(got_a, got_b);
    let pk: Vec<Packet<'_>> = got_a.iter().map(|b| Packet::parse(b).unwrap()).collect();
    // The two messages stamped alike share the first packet.
    assert_eq!((pk[0].sequence_number(), pk[0].message_count()), (1, 2));
    let heartbeats: Vec<_> = pk.iter().filter(|p| p.is_heartbeat()).collect();
    assert!(
        !heartbeats.is_empty(),
        "no heartbeat in 60 ms at 5 ms intervals"
    );
    assert!(heartbeats.iter().all(|h| h.sequence_number() == 3));
    let last_data = pk.iter().rposition(|p| p.message_count() == 1).unwrap();
    assert_eq!(pk[last_data].sequence_number(), 3);
    assert!(pk.last().unwrap().is_end_of_session());
    assert_eq!(stats.messages, 3);
    assert_eq!(stats.heartbeats, heartbeats.len() as u64);
}

/// The fault injector drops line A's packets by its seed and counts what it dropped; the
/// store still holds those messages for re-requests.
#[test]
fn the_fault_injector_drops_line_a_packets_and_counts_them() {
    let (rx, a) = local_receiver();
    let _ = socket2::SockRef::from(&rx).set_recv_buffer_size(8 << 20);
    let mut cfg = ExchangeConfig::new(a);
    cfg.request_addr = "127.0.0.1:0".parse().unwrap();
    cfg.send.interface = std::net::Ipv4Addr::LOCALHOST;
    cfg.speed = Speed::Rate(20_000);
    cfg.linger = Duration::ZERO;
    cfg.fault = "drop=0.2,seed=3".parse().unwrap();
    let mut ex = Exchange::new(&aapl(), cfg).unwrap();
    let stop = AtomicBool::new(false);
    let player = std::thread::spawn(move || ex.run(&stop));
    let got = receive_session(&rx);
    let stats = player.join().unwrap();
    let received: u64 = got
        .iter()
        .map(|b| Packet::parse(b).unwrap())
        .filter(|p| !p.is_end_of_session())
        .map(|p| u64::from(p.message_count()))
        .sum();
    assert!(
        stats.fault_dropped_packets > 0 && stats.fault_dropped > 0,
        "{stats:?}"
    );
    assert_eq!(received + stats.fault_dropped, 10_000, "{stats:?}");
    assert_eq!(stats.messages, 10_000);
}

fn deep_plus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../codecs/testdata/iex/deepplus-all-message-types.pcap")
}

/// The IEX-TP segments of a capture, as captured.
fn segments_of(path: &Path) -> Vec<Vec<u8>> {
    let mut r = mdbus_codecs::capture::open_capture(path).unwrap();
    let mut out = Vec::new();
    while let Some(d) = r.next_datagram() {
        out.push(d.unwrap().payload.to_vec());
    }
    out
}

/// An IEX capture (told by its content) is played as its segments, each re-sent whole and in
/// order on lines A and B, with no MoldUDP64 and no end of session.
#[test]
fn an_iex_capture_is_played_as_its_segments_on_both_lines() {
    let (rx_a, a) = local_receiver();
    let (rx_b, b) = local_receiver();
    let mut cfg = ExchangeConfig::new(a);
    cfg.line_b = Some(b);
    cfg.request_addr = "127.0.0.1:0".parse().unwrap();
    cfg.send.interface = std::net::Ipv4Addr::LOCALHOST;
    cfg.speed = Speed::Rate(20_000);
    let mut ex = Exchange::new(&deep_plus(), cfg).unwrap();
    assert_eq!(ex.iex(), Some(mdbus_codecs::iex::tp::Protocol::DEEP_PLUS));
    let stop = AtomicBool::new(false);
    let stats = ex.run(&stop);
    let want = segments_of(&deep_plus());
    let mut buf = [0u8; 65_536];
    for rx in [&rx_a, &rx_b] {
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut got = Vec::new();
        while let Ok(n) = rx.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        assert_eq!(got, want);
    }
    let messages: u64 = want
        .iter()
        .map(|s| {
            u64::from(
                mdbus_codecs::iex::tp::Segment::parse(s)
                    .unwrap()
                    .message_count(),
            )
        })
        .sum();
    assert_eq!(stats.messages, messages);
    assert_eq!(stats.packets + stats.heartbeats, want.len() as u64);
    assert_eq!(stats.end_of_session, 0);
}

/// `protocol` says what the capture holds: IEX asked of an ITCH file is refused.
#[test]
fn an_iex_protocol_is_refused_for_an_itch_file() {
    let mut cfg = ExchangeConfig::new("127.0.0.1:9".parse().unwrap());
    cfg.request_addr = "127.0.0.1:0".parse().unwrap();
    cfg.protocol = Some(ReplayProtocol::IexDeep);
    let e = Exchange::new(&aapl(), cfg).unwrap_err().to_string();
    assert!(e.contains("holds no IEX-TP segments"), "{e}");
}

/// The fault injector reads IEX-TP segments as such: what it drops on line A is counted in
/// the messages those segments carry.
#[test]
fn an_iex_capture_s_dropped_segments_are_counted_in_their_messages() {
    let (rx_a, a) = local_receiver();
    let mut cfg = ExchangeConfig::new(a);
    cfg.request_addr = "127.0.0.1:0".parse().unwrap();
    cfg.send.interface = std::net::Ipv4Addr::LOCALHOST;
    cfg.speed = Speed::Rate(20_000);
    cfg.fault = "drop=0.3,seed=5".parse().unwrap();
    let mut ex = Exchange::new(&deep_plus(), cfg).unwrap();
    let stats = ex.run(&AtomicBool::new(false));
    let count = |s: &[u8]| {
        u64::from(
            mdbus_codecs::iex::tp::Segment::parse(s)
                .unwrap()
                .message_count(),
        )
    };
    let want = segments_of(&deep_plus());
    let sent: u64 = want.iter().map(|s| count(s)).sum();
    rx_a.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 65_536];
    let (mut got, mut packets) = (0u64, 0u64);
    while let Ok(n) = rx_a.recv(&mut buf) {
        got += count(&buf[..n]);
        packets += 1;
    }
    assert!(stats.fault_dropped_packets > 0, "{stats:?}");
    assert_eq!(
        packets + stats.fault_dropped_packets,
        want.len() as u64,
        "{stats:?}"
    );
    assert_eq!(stats.fault_dropped, sent - got, "{stats:?}");
}
