//! Which protocol a capture's datagrams carry, judged by their content (sans-IO): MoldUDP64
//! carrying ITCH, or IEX-TP carrying TOPS, DEEP or DEEP+ (by the segment's message protocol
//! id).
//!
//! A datagram counts as MoldUDP64 only if its header and message blocks fit it exactly (every
//! block whole, no byte left over) and its session name is printable ASCII (or zeroed, as in a
//! sanitized capture); as IEX-TP only if it is a version 1 segment of a known message protocol
//! whose declared payload length is what the datagram holds (less for a cut last segment).
//! Other UDP payloads (Cboe PITCH, say) are neither, and a capture of nothing else is refused
//! with a description of what it holds.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddrV4;

use mdbus_codecs::iex::tp::{self, Protocol as TpProtocol, Segment};
use mdbus_codecs::moldudp64::{self, END_OF_SESSION_COUNT, HEARTBEAT_COUNT, Packet};

/// Datagrams looked at before a capture is judged.
pub const DETECT_DATAGRAMS: usize = 64;

/// The protocol a capture is replayed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum ReplayProtocol {
    /// Nasdaq TotalView-ITCH 5.0 (length-prefixed file, or MoldUDP64 datagrams).
    #[default]
    Itch,
    /// IEX TOPS (1.5 or 1.6) over IEX-TP.
    IexTops,
    /// IEX DEEP 1.0 over IEX-TP.
    IexDeep,
    /// IEX DEEP+ 1.0 over IEX-TP.
    IexDeepPlus,
}

impl ReplayProtocol {
    /// Every protocol, by its `--protocol` name.
    pub const ALL: [(&'static str, ReplayProtocol); 4] = [
        ("itch", ReplayProtocol::Itch),
        ("iex-tops", ReplayProtocol::IexTops),
        ("iex-deep", ReplayProtocol::IexDeep),
        ("iex-deep-plus", ReplayProtocol::IexDeepPlus),
    ];

    /// The `--protocol` name.
    pub fn name(self) -> &'static str {
        match self {
            ReplayProtocol::Itch => "itch",
            ReplayProtocol::IexTops => "iex-tops",
            ReplayProtocol::IexDeep => "iex-deep",
            ReplayProtocol::IexDeepPlus => "iex-deep-plus",
        }
    }

    /// The IEX-TP message protocol of an IEX feed; `None` for ITCH.
    pub fn iex(self) -> Option<TpProtocol> {
        match self {
            ReplayProtocol::Itch => None,
            ReplayProtocol::IexTops => Some(TpProtocol::TOPS),
            ReplayProtocol::IexDeep => Some(TpProtocol::DEEP),
            ReplayProtocol::IexDeepPlus => Some(TpProtocol::DEEP_PLUS),
        }
    }

    /// The protocol of an IEX-TP message protocol id; `None` for an id not known.
    pub fn of_iex(p: TpProtocol) -> Option<ReplayProtocol> {
        match p {
            TpProtocol::TOPS | TpProtocol::TOPS_1_5 => Some(ReplayProtocol::IexTops),
            TpProtocol::DEEP => Some(ReplayProtocol::IexDeep),
            TpProtocol::DEEP_PLUS => Some(ReplayProtocol::IexDeepPlus),
            _ => None,
        }
    }
}

impl fmt::Display for ReplayProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ReplayProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ReplayProtocol::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                let names: Vec<_> = ReplayProtocol::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown protocol {s:?} (one of {})", names.join(", "))
            })
    }
}

/// Whether `payload` is a whole, plausible MoldUDP64 packet.
pub fn is_moldudp64(payload: &[u8]) -> bool {
    let Ok(pkt) = Packet::parse(payload) else {
        return false;
    };
    let session = pkt.session().0;
    let named = session.iter().all(|b| matches!(b, b' '..=b'~'));
    if !named && session != [0; 10] {
        return false;
    }
    match pkt.message_count() {
        HEARTBEAT_COUNT | END_OF_SESSION_COUNT => payload.len() == moldudp64::HEADER_LEN,
        count => {
            let mut n = 0u16;
            for m in pkt.messages() {
                if m.is_err() {
                    return false;
                }
                n = n.saturating_add(1);
            }
            n == count
        }
    }
}

/// The IEX-TP message protocol of `payload` if it is a version 1 segment of a known protocol
/// (its payload possibly cut short, as a capture's last one may be).
pub fn iex_protocol(payload: &[u8]) -> Option<TpProtocol> {
    let seg = Segment::parse(payload).ok()?;
    (seg.version() == tp::VERSION && seg.reserved() == 0 && seg.protocol().name().is_some())
        .then(|| seg.protocol())
}

/// What the datagrams looked at held, when none was of a known protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotDetected {
    /// Datagrams looked at.
    pub datagrams: usize,
    /// Datagrams per destination, most first.
    pub destinations: Vec<(SocketAddrV4, usize)>,
    /// The first bytes (at most 16) of the first datagram.
    pub first_bytes: Vec<u8>,
}

impl fmt::Display for NotDetected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.datagrams == 0 {
            return f.write_str("no MoldUDP64 or IEX-TP packet: the capture holds no UDP datagram");
        }
        write!(
            f,
            "no MoldUDP64 or IEX-TP packet in the first {} datagrams:",
            self.datagrams
        )?;
        for (i, (dst, n)) in self.destinations.iter().take(3).enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep} {n} UDP datagrams to {dst}")?;
        }
        if self.destinations.len() > 3 {
            write!(f, " and {} more destinations", self.destinations.len() - 3)?;
        }
        let mut hex = String::new();
        for b in &self.first_bytes {
            let _ = write!(hex, " {b:02x}");
        }
        write!(f, "; first bytes{hex} (choose one with --protocol)")
    }
}

/// Judges a capture by its first datagrams (destination and UDP payload, at most
/// [`DETECT_DATAGRAMS`] of them are read): the protocol most of the recognized ones carry
/// (MoldUDP64 on a tie), or what was found when none is recognized.
pub fn detect<'a>(
    datagrams: impl IntoIterator<Item = (SocketAddrV4, &'a [u8])>,
) -> Result<ReplayProtocol, NotDetected> {
    let mut seen = 0usize;
    let mut mold = 0usize;
    let mut iex: BTreeMap<ReplayProtocol, usize> = BTreeMap::new();
    let mut destinations: BTreeMap<SocketAddrV4, usize> = BTreeMap::new();
    let mut first_bytes = Vec::new();
    for (dst, payload) in datagrams.into_iter().take(DETECT_DATAGRAMS) {
        if seen == 0 {
            first_bytes = payload[..payload.len().min(16)].to_vec();
        }
        seen += 1;
        *destinations.entry(dst).or_default() += 1;
        if let Some(p) = iex_protocol(payload).and_then(ReplayProtocol::of_iex) {
            *iex.entry(p).or_default() += 1;
        } else if is_moldudp64(payload) {
            mold += 1;
        }
    }
    let best_iex = iex.iter().max_by_key(|(_, n)| **n).map(|(p, n)| (*p, *n));
    match best_iex {
        Some((p, n)) if n > mold => Ok(p),
        _ if mold > 0 => Ok(ReplayProtocol::Itch),
        _ => {
            let mut destinations: Vec<_> = destinations.into_iter().collect();
            destinations.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            Err(NotDetected {
                datagrams: seen,
                destinations,
                first_bytes,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const DST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 1, 2, 3), 30001);

    fn mold(session: &[u8; 10], seq: u64, msgs: &[&[u8]]) -> Vec<u8> {
        let mut p = session.to_vec();
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&u16::try_from(msgs.len()).unwrap().to_be_bytes());
        for m in msgs {
            p.extend_from_slice(&u16::try_from(m.len()).unwrap().to_be_bytes());
            p.extend_from_slice(m);
        }
        p
    }

    fn iex_segment(protocol: u16, msgs: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::new();
        for m in msgs {
            body.extend_from_slice(&u16::try_from(m.len()).unwrap().to_le_bytes());
            body.extend_from_slice(m);
        }
        let mut p = vec![1u8, 0];
        p.extend_from_slice(&protocol.to_le_bytes());
        p.extend_from_slice(&1u32.to_le_bytes()); // channel
        p.extend_from_slice(&7u32.to_le_bytes()); // session
        p.extend_from_slice(&u16::try_from(body.len()).unwrap().to_le_bytes());
        p.extend_from_slice(&u16::try_from(msgs.len()).unwrap().to_le_bytes());
        p.extend_from_slice(&0u64.to_le_bytes()); // stream offset
        p.extend_from_slice(&1u64.to_le_bytes()); // first sequence number
        p.extend_from_slice(&0u64.to_le_bytes()); // send time
        p.extend_from_slice(&body);
        p
    }

    #[test]
    fn moldudp64_packets_are_itch() {
        let a = mold(b"000006157B", 1, &[b"S0123456789ab", b"Hxyz"]);
        let hb = mold(b"000006157B", 3, &[]);
        assert!(is_moldudp64(&a) && is_moldudp64(&hb));
        assert_eq!(
            detect([(DST, &a[..]), (DST, &hb[..])]),
            Ok(ReplayProtocol::Itch)
        );
        // A sanitized capture: session and sequence numbers zeroed.
        let z = mold(&[0; 10], 0, &[b"Sabc"]);
        assert_eq!(detect([(DST, &z[..])]), Ok(ReplayProtocol::Itch));
    }

    #[test]
    fn iex_segments_are_named_by_their_message_protocol() {
        let q = [b'Q'; 42];
        for (id, p) in [
            (0x8002, ReplayProtocol::IexTops),
            (0x8003, ReplayProtocol::IexTops),
            (0x8004, ReplayProtocol::IexDeep),
            (0x8005, ReplayProtocol::IexDeepPlus),
        ] {
            let s = iex_segment(id, &[&q]);
            assert_eq!(detect([(DST, &s[..])]), Ok(p), "{id:#x}");
            // A cut final segment still names its protocol.
            assert_eq!(detect([(DST, &s[..s.len() - 5])]), Ok(p));
        }
        let hb = iex_segment(0x8004, &[]);
        assert_eq!(detect([(DST, &hb[..])]), Ok(ReplayProtocol::IexDeep));
        // An unknown message protocol is not IEX-TP.
        let other = iex_segment(0x1234, &[&q]);
        assert!(detect([(DST, &other[..])]).is_err());
    }

    #[test]
    fn a_cboe_pitch_payload_is_not_taken_for_moldudp64() {
        // A Cboe Sequenced Unit Header (length, count, unit, sequence number; little-endian)
        // and an Add Order: what a PITCH capture carries. Its first 20 bytes parse as a
        // MoldUDP64 header, which is why it must be judged by more than that.
        let mut pitch = vec![0u8; 8];
        pitch[2] = 1; // one message
        pitch[3] = 1; // unit
        pitch[4..8].copy_from_slice(&0x9876_5432u32.to_le_bytes());
        pitch.extend_from_slice(&[34, 0x37]);
        pitch.extend_from_slice(&[0x81; 32]);
        let len = u16::try_from(pitch.len()).unwrap();
        pitch[0..2].copy_from_slice(&len.to_le_bytes());
        assert!(Packet::parse(&pitch).is_ok());
        assert!(!is_moldudp64(&pitch));
        let e = detect(std::iter::repeat_n((DST, &pitch[..]), 40)).unwrap_err();
        assert_eq!((e.datagrams, e.destinations.clone()), (40, vec![(DST, 40)]));
        let text = e.to_string();
        assert!(
            text.starts_with(
                "no MoldUDP64 or IEX-TP packet in the first 40 datagrams: 40 UDP datagrams to 239.1.2.3:30001; first bytes 2a 00 01 01"
            ),
            "{text}"
        );
        // A printable session whose blocks do not fill the datagram is not MoldUDP64 either.
        let mut bad = mold(b"SESSION001", 1, &[b"abc"]);
        bad.push(0);
        assert!(!is_moldudp64(&bad));
    }

    #[test]
    fn nothing_recognized_and_nothing_at_all_are_told_apart() {
        let e = detect(std::iter::empty::<(SocketAddrV4, &[u8])>()).unwrap_err();
        assert_eq!(e.datagrams, 0);
        assert!(e.to_string().contains("no UDP datagram"));
        // Only the first DETECT_DATAGRAMS count.
        let junk = [0xffu8; 30];
        let e = detect(std::iter::repeat_n((DST, &junk[..]), 1000)).unwrap_err();
        assert_eq!(e.datagrams, DETECT_DATAGRAMS);
    }

    #[test]
    fn protocol_names_round_trip() {
        for (n, p) in ReplayProtocol::ALL {
            assert_eq!(n.parse::<ReplayProtocol>(), Ok(p));
            assert_eq!(p.to_string(), n);
        }
        assert!("pitch".parse::<ReplayProtocol>().is_err());
    }
}
