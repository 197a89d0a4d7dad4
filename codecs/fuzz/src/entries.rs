//! Fuzz entry functions for the mdbus wire codecs and capture reader.
//!
//! Each function takes arbitrary bytes and must neither panic nor hang; the checks inside
//! (`assert!`) state properties that hold for every input. The `fuzz_targets/` binaries call
//! them under libFuzzer, and `codecs/tests/fuzz_corpus.rs` runs them over the committed seed
//! corpora in `corpus-seed/<target>/` as ordinary regression tests.

use std::io::Cursor;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use mdbus_codecs::capture::{CaptureReader, Record};
use mdbus_codecs::moldudp64::{
    Packet, PacketBuilder, RequestPacket, Session, encode_end_of_session, encode_heartbeat,
};
use mdbus_codecs::nasdaq::itch::{self, DecodeError, Stream};
use mdbus_codecs::nasdaq::soupbintcp;
use mdbus_codecs::retransmit::{Reply, RetransmitConfig, RetransmitStore};
use mdbus_codecs::sequencer::{Backoff, Deliver, LateJoin, Line, Sequencer, SequencerConfig};
use mdbus_codecs::{fb, moldudp64};

/// Decodes `data` as one ITCH message and as a length-prefixed stream. A message that decodes
/// re-encodes to exactly its own bytes.
pub fn itch_decode(data: &[u8]) {
    if let Ok(m) = itch::decode(data) {
        assert_eq!(m.as_bytes(), data);
        let fields = m.to_fields();
        let mut out = [0u8; 64];
        let n = fields
            .encode(&mut out)
            .expect("a decoded message re-encodes");
        assert_eq!(&out[..n], data);
        let _ = format!("{m:?}");
    }
    let mut last = None;
    for (offset, r) in Stream::new(data) {
        assert!(last.is_none_or(|l| offset > l) && offset < data.len());
        last = Some(offset);
        if let Err(DecodeError::TruncatedRecord { needed, available }) = r {
            assert!(available < needed && offset + available == data.len());
        }
    }
}

/// Parses `data` as a MoldUDP64 packet, its blocks as ITCH messages, and as a re-request.
pub fn moldudp64_parse(data: &[u8]) {
    if let Ok(p) = moldudp64::Packet::parse(data) {
        let _ = (p.session(), p.sequence_number(), p.next_sequence_number());
        let mut n = 0usize;
        for m in p.messages() {
            match m {
                Ok(msg) => {
                    n += 1;
                    let _ = itch::decode(msg);
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        assert!(n <= usize::from(p.messages_len()));
    }
    if let Ok(r) = moldudp64::RequestPacket::decode(data) {
        let mut out = [0u8; moldudp64::HEADER_LEN];
        assert_eq!(r.encode(&mut out), Ok(moldudp64::HEADER_LEN));
        assert_eq!(&out[..], data);
    }
}

/// Decodes `data` as a stream of SoupBinTCP packets; whatever decodes re-encodes to the same
/// length.
pub fn soupbintcp_decode(data: &[u8]) {
    let mut pos = 0;
    while pos < data.len() {
        match soupbintcp::decode(&data[pos..]) {
            Ok(soupbintcp::Decoded::Packet { packet, len }) => {
                assert!(len > 0 && pos + len <= data.len());
                let mut out = vec![0u8; len];
                assert_eq!(packet.encode(&mut out), Ok(len));
                pos += len;
            }
            Ok(soupbintcp::Decoded::Incomplete { needed }) => {
                assert!(needed > data.len() - pos);
                break;
            }
            Err(_) => break,
        }
    }
}

/// Reads `data` as a capture file (pcap, pcapng or length-prefixed ITCH) from memory, and
/// every UDP payload as MoldUDP64.
pub fn capture_read(data: &[u8]) {
    let Ok(mut reader) = CaptureReader::from_reader("fuzz-input", Cursor::new(data.to_vec()))
    else {
        return;
    };
    let mut last = 0u64;
    while let Some(rec) = reader.next_record() {
        match rec {
            Ok(Record::Udp(d)) => {
                assert!(d.offset >= last && d.offset < data.len() as u64);
                last = d.offset;
                moldudp64_parse(d.payload);
            }
            Ok(Record::Itch(m)) => {
                assert!(m.offset >= last && m.offset < data.len() as u64);
                last = m.offset;
                let _ = itch::decode(m.message);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    let _ = reader.stats();
}

/// Hashes what a formatter writes without storing it (no allocation per input): FNV-1a.
struct Fnv(u64);

impl std::fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for b in s.bytes() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(())
    }
}

fn render(env: &fb::Envelope<'_>) -> u64 {
    use std::fmt::Write;
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    write!(h, "{env:?}").expect("hashing never fails");
    h.0
}

/// The verifier path of the normalized schema: `fb::read_verified` rejects or accepts without
/// panicking, and whatever it accepts is readable in full (every field of the header and of
/// the event, through the generated `Debug`, which walks them all) and reads the same through
/// the unverified `read_trusted`.
pub fn fb_verify(data: &[u8]) {
    let Ok(env) = fb::read_verified(data) else {
        return;
    };
    let verified = render(&env);
    let h = env.header();
    let _ = (
        h.seq(),
        h.exchange_ts_ns(),
        h.recv_ts_ns(),
        h.stock_locate(),
        h.tracking_number(),
    );
    let _ = (env.flags(), env.venue(), env.instrument());
    if let Some(name) = env.event_type().variant_name() {
        assert!(!name.is_empty());
    }
    // SAFETY: `data` passed `read_verified` just above and is borrowed unchanged.
    let trusted = unsafe { fb::read_trusted(data) };
    assert_eq!(render(&trusted), verified);
}

/// Reads fuzz input as a stream of numbers; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// A sequence number: small, near `around`, near `u64::MAX`, or anything.
    fn seq(&mut self, around: u64) -> u64 {
        match self.u8() % 4 {
            0 => u64::from(self.u8()),
            1 => around
                .saturating_add(u64::from(self.u8()))
                .saturating_sub(32),
            2 => u64::MAX - u64::from(self.u8()),
            _ => self.u64(),
        }
    }
}

const FUZZ_SESSIONS: [Session; 2] = [Session(*b"FUZZSESS01"), Session(*b"FUZZSESS02")];

/// The content of message `seq` in the packets the sequencer target builds.
fn content(seq: u64, len: u8) -> ([u8; 16], usize) {
    let mut m = [0u8; 16];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    (m, 8 + usize::from(len % 9))
}

/// Checks what the sequencer target's sequencer delivers.
struct Checker {
    /// Every sequence number below this was delivered or skipped already.
    next: u64,
    messages: u64,
}

impl Deliver for &mut Checker {
    fn message(&mut self, seq: u64, msg: &[u8]) {
        assert!(seq != 0, "sequence 0 delivered");
        assert!(seq >= self.next, "{seq} delivered after {}", self.next);
        assert!(
            msg.len() >= 8 && msg[..8] == seq.to_le_bytes(),
            "content of {seq}"
        );
        self.next = seq.checked_add(1).expect("message u64::MAX delivered");
        self.messages += 1;
    }

    fn gap(&mut self, first: u64, count: u64) {
        assert!(count > 0, "empty gap at {first}");
        assert!(first >= self.next, "gap at {first} after {}", self.next);
        self.next = first.checked_add(count).expect("gap past u64::MAX");
    }
}

/// Drives a [`Sequencer`] with any sequence of packets (any line, session, sequence number
/// and count, data, heartbeats, ends of session, damaged ones), clock steps, timeouts and
/// `poll_request` calls. Delivery is in strictly increasing sequence order, nothing twice,
/// each message its own; requests are sound; nothing panics (overflow checks on).
pub fn sequencer(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.u8();
    let config = SequencerConfig {
        session: (flags & 1 != 0).then_some(FUZZ_SESSIONS[0]),
        nak_delay: Duration::from_nanos(u64::from(input.u16())),
        request_timeout: Duration::from_nanos(u64::from(input.u16())),
        max_retries: u32::from(input.u8() % 4),
        backoff: Backoff {
            factor: 1 + u32::from(input.u8() % 3),
            max: Duration::from_nanos(u64::from(input.u16()) * 4),
        },
        max_outstanding_requests: usize::from(input.u8() % 4),
        max_request_messages: 1 + u16::from(input.u8() % 64),
        coalesce_within: u16::from(input.u8() % 8),
        reorder_capacity_bytes: 1 + usize::from(input.u16() % 2048),
        reorder_capacity_messages: 1 + usize::from(input.u8() % 128),
        max_gaps: 2 + usize::from(input.u8() % 8),
        late_join: if flags & 2 != 0 {
            LateJoin::LiveEdge
        } else {
            LateJoin::FromSequence(input.seq(1))
        },
        max_gap: match input.u8() % 4 {
            0 => 1 + u64::from(input.u8()),
            1 => 1_000_000,
            2 => u64::MAX,
            _ => input.u64().max(1),
        },
        // From the flags byte, so that the seeds' other fields keep their meaning.
        jump_confirm: Duration::from_nanos(u64::from(flags >> 2) * 4096),
    };
    let mut seqr = Sequencer::new(config).expect("a valid configuration");
    let mut check = Checker {
        next: 0,
        messages: 0,
    };
    let mut now = 0u64;
    let mut buf = [0u8; 2048];
    while !input.is_empty() {
        match input.u8() % 8 {
            0..=3 => {
                let line = [Line::A, Line::B, Line::Recovery][usize::from(input.u8() % 3)];
                let session = FUZZ_SESSIONS[usize::from(input.u8() % 8 == 0)];
                let seq = input.seq(seqr.next_seq());
                let kind = input.u8();
                let len = match kind % 8 {
                    0 => encode_heartbeat(&mut buf, session, seq).expect("room"),
                    1 => encode_end_of_session(&mut buf, session, seq).expect("room"),
                    n => {
                        let mut b = PacketBuilder::new(&mut buf, session, seq).expect("room");
                        let count = if n == 7 { input.u8() } else { n - 1 };
                        for i in 0..u64::from(count) {
                            let (m, l) = content(seq.wrapping_add(i), input.u8());
                            if b.push(&m[..l]).is_err() {
                                break;
                            }
                        }
                        b.finish()
                    }
                };
                // Now and then a damaged one: cut short.
                let cut = input.u8();
                let len = if cut > 240 {
                    len.min(usize::from(cut - 240) * 4)
                } else {
                    len
                };
                seqr.handle_packet(now, line, &buf[..len], &mut check);
            }
            4 => {
                now = match input.u8() % 4 {
                    0 => now.saturating_add(u64::from(input.u16())),
                    1 => now.saturating_add(u64::from(input.u16()) << 16),
                    2 => now.saturating_sub(u64::from(input.u16())), // a clock step back
                    _ => input.u64(),
                };
            }
            5 => seqr.handle_timeout(now, &mut check),
            6 => {
                let mut n = 0;
                while let Some(r) = seqr.poll_request(now) {
                    assert!(r.message_count >= 1 && r.sequence_number >= 1, "{r:?}");
                    assert!(
                        r.sequence_number
                            .checked_add(u64::from(r.message_count))
                            .is_some(),
                        "{r:?}"
                    );
                    assert!(r.message_count <= config.max_request_messages, "{r:?}");
                    n += 1;
                    assert!(n <= 1 << 16, "poll_request does not stop");
                }
            }
            _ => {
                if let Some(t) = seqr.next_deadline()
                    && input.u8() % 2 == 0
                {
                    now = now.max(t);
                }
            }
        }
        while seqr.poll_event().is_some() {}
        assert!(seqr.next_seq() <= seqr.highest_seen());
        let _ = (seqr.missing(), seqr.reorder_held(), seqr.is_ended());
    }
    assert_eq!(seqr.stats().messages, check.messages);
}

/// Drives a [`RetransmitStore`] with any configuration, any messages pushed, restarts, and any
/// requests (well formed or not) from any sources at any times. Every reply is sound: packets
/// parse, fit the limits, carry consecutive sequence numbers from where the request asked
/// (or the "not available" notice first), and hold exactly the stored messages.
pub fn retransmit(data: &[u8]) {
    let mut input = Input(data);
    let session = FUZZ_SESSIONS[0];
    let config = RetransmitConfig {
        session,
        first_seq: input.seq(1),
        capacity_messages: 1 + usize::from(input.u8() % 64),
        capacity_bytes: 1 + usize::from(input.u16() % 4096),
        max_packet_len: 22 + usize::from(input.u16() % 1500),
        max_reply_messages: 1 + u16::from(input.u8()),
        max_reply_packets: 1 + u16::from(input.u8() % 16),
        rate_messages_per_sec: u64::from(input.u16()),
        burst_messages: u64::from(input.u16()),
        max_sources: 1 + usize::from(input.u8() % 8),
        total_rate_multiple: 1 + u64::from(input.u8() % 4),
    };
    let Ok(mut store) = RetransmitStore::new(config) else {
        return;
    };
    let mut now = 0u64;
    let mut msg = [0u8; 1600];
    while !input.is_empty() {
        match input.u8() % 8 {
            0..=2 => {
                let len = usize::from(input.u16()) % msg.len();
                let fill = input.u8();
                msg[..len].fill(fill);
                let next = store.next_seq();
                match store.push(&msg[..len]) {
                    Ok(seq) => {
                        assert_eq!(seq, next);
                        assert!(seq < u64::MAX);
                        assert_eq!(store.get(seq), Some(&msg[..len]));
                    }
                    Err(e) => {
                        let _ = e.to_string();
                        assert_eq!(store.next_seq(), next);
                    }
                }
            }
            3 => store.restart(
                FUZZ_SESSIONS[usize::from(input.u8() % 4 == 0)],
                input.seq(1),
            ),
            4 => now = now.saturating_add(u64::from(input.u16()) << (input.u8() % 24)),
            _ => {
                let mut req = [0u8; 20];
                let len = if input.u8() % 8 == 0 {
                    for b in &mut req {
                        *b = input.u8();
                    }
                    usize::from(input.u8() % 21)
                } else {
                    let r = RequestPacket {
                        session: FUZZ_SESSIONS[usize::from(input.u8() % 8 == 0)],
                        sequence_number: input.seq(store.first_available()),
                        message_count: match input.u8() % 3 {
                            0 => u16::from(input.u8()),
                            1 => u16::MAX,
                            _ => input.u16(),
                        },
                    };
                    r.encode(&mut req).expect("room")
                };
                let port = input.u16();
                let source = match input.u8() % 3 {
                    0 => SocketAddr::from((Ipv4Addr::from(u32::from(input.u8())), port)),
                    1 => SocketAddr::from((Ipv6Addr::from(u128::from(input.u16()) << 64), port)),
                    _ => SocketAddr::from((
                        Ipv4Addr::from(u32::from(input.u8())).to_ipv6_mapped(),
                        port,
                    )),
                };
                let mut packets = Vec::new();
                let res =
                    store.handle_request(now, source, &req[..len], |p| packets.push(p.to_vec()));
                if let Ok(reply) = res {
                    check_reply(&store, &req[..len], &reply, &packets);
                } else {
                    assert!(packets.is_empty());
                }
            }
        }
    }
}

fn check_reply(store: &RetransmitStore, req: &[u8], reply: &Reply, packets: &[Vec<u8>]) {
    let c = store.config();
    let req = RequestPacket::decode(req).expect("answered, so well formed");
    assert_eq!(usize::from(reply.packets), packets.len());
    assert!(reply.packets <= c.max_reply_packets);
    assert!(reply.messages <= u64::from(c.max_reply_messages));
    let mut next = req.sequence_number;
    let mut messages = 0u64;
    for (i, p) in packets.iter().enumerate() {
        assert!(p.len() <= c.max_packet_len);
        let p = Packet::parse(p).expect("a reply packet parses");
        assert_eq!(p.session(), c.session);
        if p.message_count() == 0 {
            assert_eq!(i, 0, "the notice comes first");
            assert_eq!(reply.not_available_below, Some(p.sequence_number()));
            assert!(p.sequence_number() > req.sequence_number);
            next = p.sequence_number();
            continue;
        }
        assert_eq!(p.sequence_number(), next);
        for (k, m) in p.messages().enumerate() {
            let m = m.expect("a reply block parses");
            let seq = next + k as u64;
            assert_eq!(store.get(seq), Some(m), "message {seq}");
        }
        let n = u64::from(p.message_count());
        next = next.checked_add(n).expect("no reply passes u64::MAX");
        messages += n;
    }
    assert_eq!(messages, reply.messages);
    assert!(packets.is_empty() || next <= store.next_seq());
}

/// Parses `data` as one IEX-TP segment and decodes its messages with every feed's rules; then
/// reads `data` as a stream of datagrams (each preceded by its 2-byte little-endian length)
/// through an IEX-TP tracker. Decoded messages are their own bytes; a tracker delivers
/// consecutive sequence numbers and counts every datagram.
pub fn iex_tp(data: &[u8]) {
    use mdbus_codecs::directory::Directory;
    use mdbus_codecs::iex::message::{self as iex_msg, Message as IexMessage};
    use mdbus_codecs::iex::normalize::{self as iex_norm, Normalizer};
    use mdbus_codecs::iex::tp::{Protocol, Segment, Tracker};

    // A small directory, so that fuzzed symbols also fill it.
    let mut norm = Normalizer::with_directory(Directory::with_capacity(4));
    let mut check_msg = |m: &[u8]| {
        if let Ok(d) = iex_msg::decode(m) {
            let (event, instrument) = {
                let e = norm.normalize(&d, 1, 2);
                let env = fb::read_verified(e.as_ref()).expect("a normalized message verifies");
                (env.event_type(), env.instrument())
            };
            assert_eq!(iex_norm::type_of_event(event), Some(d.msg_type()));
            if d.symbol().is_none() {
                assert_eq!(instrument, 0);
            } else if instrument == 0 {
                assert!(norm.refused() > 0);
            }
            assert_eq!(d.as_bytes(), m);
            assert_eq!(d.msg_type(), m[0]);
            let _ = (d.timestamp(), d.symbol(), format!("{d:?}"));
            assert_eq!(
                d.symbol().is_none(),
                matches!(d, IexMessage::SystemEvent(_))
            );
        }
        for p in [Protocol::TOPS, Protocol::DEEP, Protocol::DEEP_PLUS] {
            if let Err(e) = iex_msg::decode_for(p, m) {
                let _ = e.to_string();
            }
        }
    };
    if let Ok(s) = Segment::parse(data) {
        let _ = (s.next_seq(), s.is_cut(), format!("{s:?}"));
        let (complete, err) = s.check();
        let mut n = 0u16;
        for m in s.messages() {
            match m {
                Ok(m) => {
                    n += 1;
                    check_msg(m);
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        assert_eq!(n, complete);
        assert!(err.is_some() || n == s.message_count());
    }
    let mut t = Tracker::new();
    let mut rest = data;
    let mut packets = 0u64;
    while let Some((&[lo, hi], tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_le_bytes([lo, hi])).min(tail.len());
        let (dgram, next) = tail.split_at(len);
        rest = next;
        packets += 1;
        let before = t.stats().messages;
        match t.handle(dgram) {
            Ok(h) => {
                let mut prev = None;
                let mut k = 0u64;
                for (seq, m) in h.messages() {
                    assert!(prev.is_none_or(|p: u64| seq == p + 1));
                    prev = Some(seq);
                    k += 1;
                    check_msg(m);
                }
                assert_eq!(k, u64::from(h.deliver));
                assert_eq!(t.stats().messages, before + k);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    assert_eq!(t.stats().packets, packets);
}

/// Decodes `data` as one message of `protocol`'s feed only, and normalizes what decodes: a
/// message of a type the feed does not send is refused (and decodes with every feed's rules
/// only when its type is another feed's), one it sends normalizes into an envelope that
/// verifies and names the message's type, instrument and exchange time.
fn iex_feed(protocol: mdbus_codecs::iex::tp::Protocol, data: &[u8]) {
    use mdbus_codecs::directory::Directory;
    use mdbus_codecs::iex::message::{self as iex_msg, DecodeError as IexDecodeError};
    use mdbus_codecs::iex::normalize::{self as iex_norm, Normalizer, eastern_time_of_day_ns};

    let mut norm = Normalizer::with_directory(Directory::with_capacity(4));
    match iex_msg::decode_for(protocol, data) {
        Ok(d) => {
            assert_eq!(d.as_bytes(), data);
            assert_eq!(d.msg_type(), data[0]);
            let instrument = norm.instrument(&d);
            let e = norm.normalize(&d, 7, 9);
            let env = fb::read_verified(e.as_ref()).expect("a normalized message verifies");
            assert_eq!(
                iex_norm::type_of_event(env.event_type()),
                Some(d.msg_type())
            );
            assert_eq!(env.venue(), fb::Venue::Iex);
            assert_eq!(env.instrument(), instrument);
            assert_eq!(env.header().seq(), 7);
            assert_eq!(
                env.header().exchange_ts_ns(),
                eastern_time_of_day_ns(d.timestamp())
            );
        }
        Err(IexDecodeError::NotInProtocol { msg_type, .. }) => {
            assert_eq!(msg_type, data[0]);
            assert!(iex_msg::decode(data).is_ok());
        }
        Err(e) => {
            let _ = e.to_string();
            assert!(iex_msg::decode(data).is_err());
        }
    }
}

/// One message as IEX TOPS decodes it (its types only), normalized; see [`iex_feed`].
pub fn iex_tops(data: &[u8]) {
    iex_feed(mdbus_codecs::iex::tp::Protocol::TOPS, data);
}

/// One message as IEX DEEP decodes it (its types only), normalized; see [`iex_feed`].
pub fn iex_deep(data: &[u8]) {
    iex_feed(mdbus_codecs::iex::tp::Protocol::DEEP, data);
}
