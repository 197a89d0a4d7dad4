//! Fuzz entry functions for the mdbus wire codecs and capture reader.
//!
//! Each function takes arbitrary bytes and must neither panic nor hang; the checks inside
//! (`assert!`) state properties that hold for every input. The `fuzz_targets/` binaries call
//! them under libFuzzer, and `codecs/tests/fuzz_corpus.rs` runs them over the committed seed
//! corpora in `corpus-seed/<target>/` as ordinary regression tests.

use std::io::Cursor;

use mdbus_codecs::capture::{CaptureReader, Record};
use mdbus_codecs::itch::{self, DecodeError, Stream};
use mdbus_codecs::{fb, moldudp64, soupbintcp};

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
    let _ = env.flags();
    if let Some(name) = env.event_type().variant_name() {
        assert!(!name.is_empty());
    }
    // SAFETY: `data` passed `read_verified` just above and is borrowed unchanged.
    let trusted = unsafe { fb::read_trusted(data) };
    assert_eq!(render(&trusted), verified);
}
