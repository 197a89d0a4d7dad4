//! Link, IPv4 and UDP headers, parsed by hand: small, allocation-free, never panicking.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;

/// Link-layer header types this reader understands (the pcap `LINKTYPE_*` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// Ethernet II, with any number of 802.1Q / 802.1ad (QinQ) VLAN tags.
    Ethernet,
    /// Raw IP, no link header (`LINKTYPE_RAW` / `LINKTYPE_IPV4`).
    RawIp,
    /// Linux cooked capture v1 (`LINKTYPE_LINUX_SLL`).
    LinuxSll,
    /// Anything else: its packets are counted and skipped.
    Other,
}

/// Why a captured frame yields no UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Skip {
    NonIpv4,
    NonUdp,
    Fragment,
    Malformed,
    UnsupportedLinkType,
}

/// Addresses and payload range (within `frame`) of a UDP datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Udp {
    pub(crate) src: SocketAddrV4,
    pub(crate) dst: SocketAddrV4,
    pub(crate) payload: Range<usize>,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const IPPROTO_UDP: u8 = 17;

#[inline]
fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

/// Parses one captured frame down to its UDP payload.
pub(crate) fn parse_frame(link: LinkType, frame: &[u8]) -> Result<Udp, Skip> {
    let ip_start = match link {
        LinkType::RawIp => 0,
        LinkType::Ethernet => {
            let mut off = 12;
            let mut ethertype = be16(frame, off).ok_or(Skip::Malformed)?;
            while matches!(
                ethertype,
                ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
            ) {
                off += 4;
                ethertype = be16(frame, off).ok_or(Skip::Malformed)?;
            }
            if ethertype != ETHERTYPE_IPV4 {
                return Err(Skip::NonIpv4);
            }
            off + 2
        }
        LinkType::LinuxSll => {
            if be16(frame, 14).ok_or(Skip::Malformed)? != ETHERTYPE_IPV4 {
                return Err(Skip::NonIpv4);
            }
            16
        }
        LinkType::Other => return Err(Skip::UnsupportedLinkType),
    };
    parse_ipv4(frame, ip_start)
}

/// [`parse_frame`] for a frame cut short (the last record of a truncated file): the IPv4
/// and UDP headers must be whole and the packet unfragmented UDP; the payload range ends at
/// the UDP length or at the end of what the frame holds, whichever comes first.
pub(crate) fn parse_cut_frame(link: LinkType, frame: &[u8]) -> Option<Udp> {
    let at = match link {
        LinkType::RawIp => 0,
        LinkType::Ethernet => {
            let mut off = 12;
            let mut ethertype = be16(frame, off)?;
            while matches!(
                ethertype,
                ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
            ) {
                off += 4;
                ethertype = be16(frame, off)?;
            }
            (ethertype == ETHERTYPE_IPV4).then_some(off + 2)?
        }
        LinkType::LinuxSll => (be16(frame, 14)? == ETHERTYPE_IPV4).then_some(16)?,
        LinkType::Other => return None,
    };
    let h = frame.get(at..)?.first_chunk::<20>()?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if h[0] >> 4 != 4 || ihl < 20 || frag & 0x3fff != 0 || h[9] != IPPROTO_UDP {
        return None;
    }
    let u = frame.get(at + ihl..)?.first_chunk::<8>()?;
    let udp_len = usize::from(u16::from_be_bytes([u[4], u[5]]));
    if udp_len < 8 {
        return None;
    }
    let start = at + ihl + 8;
    let end = (start + udp_len - 8).min(frame.len());
    Some(Udp {
        src: SocketAddrV4::new(
            Ipv4Addr::new(h[12], h[13], h[14], h[15]),
            u16::from_be_bytes([u[0], u[1]]),
        ),
        dst: SocketAddrV4::new(
            Ipv4Addr::new(h[16], h[17], h[18], h[19]),
            u16::from_be_bytes([u[2], u[3]]),
        ),
        payload: start..end,
    })
}

fn parse_ipv4(frame: &[u8], at: usize) -> Result<Udp, Skip> {
    let ip = frame.get(at..).ok_or(Skip::Malformed)?;
    let Some(h) = ip.first_chunk::<20>() else {
        return Err(if ip.first().is_some_and(|v| v >> 4 != 4) {
            Skip::NonIpv4
        } else {
            Skip::Malformed
        });
    };
    if h[0] >> 4 != 4 {
        return Err(Skip::NonIpv4);
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    // Frames may carry link padding after the IP packet; a capture may have cut the packet
    // short (snap length): then it cannot be delivered whole.
    if ihl < 20 || total < ihl || total > ip.len() {
        return Err(Skip::Malformed);
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if frag & 0x3fff != 0 {
        // More-fragments flag set or a non-zero fragment offset.
        return Err(Skip::Fragment);
    }
    if h[9] != IPPROTO_UDP {
        return Err(Skip::NonUdp);
    }
    let src_ip = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst_ip = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    let udp = &ip[ihl..total];
    let Some(u) = udp.first_chunk::<8>() else {
        return Err(Skip::Malformed);
    };
    let udp_len = usize::from(u16::from_be_bytes([u[4], u[5]]));
    if udp_len < 8 || udp_len > udp.len() {
        return Err(Skip::Malformed);
    }
    let start = at + ihl + 8;
    Ok(Udp {
        src: SocketAddrV4::new(src_ip, u16::from_be_bytes([u[0], u[1]])),
        dst: SocketAddrV4::new(dst_ip, u16::from_be_bytes([u[2], u[3]])),
        payload: start..start + udp_len - 8,
    })
}

/// Builds an Ethernet/IPv4/UDP frame (for tests and fuzz seeds), with `vlans` 802.1Q tags.
#[cfg(test)]
pub(crate) fn build_frame(
    vlans: usize,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0x01, 0x00, 0x5e, 0x00, 0x00, 0x01, 0x02, 0, 0, 0, 0, 1];
    for i in 0..vlans {
        let tpid = if i == 0 && vlans > 1 {
            ETHERTYPE_QINQ
        } else {
            ETHERTYPE_VLAN
        };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, IPPROTO_UDP, 0, 0]);
    let at = f.len() - 10;
    f[at..at + 2].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&src.ip().octets());
    f.extend_from_slice(&dst.ip().octets());
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (SocketAddrV4, SocketAddrV4) {
        (
            "10.0.0.1:1234".parse().unwrap(),
            "233.54.12.111:26477".parse().unwrap(),
        )
    }

    #[test]
    fn ethernet_with_and_without_vlans() {
        let (s, d) = addrs();
        for vlans in 0..3 {
            let f = build_frame(vlans, s, d, b"payload");
            let u = parse_frame(LinkType::Ethernet, &f).unwrap();
            assert_eq!((u.src, u.dst), (s, d));
            assert_eq!(&f[u.payload], b"payload");
        }
    }

    #[test]
    fn padding_is_ignored_and_raw_ip_works() {
        let (s, d) = addrs();
        let mut f = build_frame(0, s, d, b"x");
        f.extend_from_slice(&[0; 10]);
        let u = parse_frame(LinkType::Ethernet, &f).unwrap();
        assert_eq!(&f[u.payload], b"x");
        let u = parse_frame(LinkType::RawIp, &f[14..]).unwrap();
        assert_eq!(u.dst, d);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        sll.extend_from_slice(&f[14..]);
        assert_eq!(
            &sll[parse_frame(LinkType::LinuxSll, &sll).unwrap().payload],
            b"x"
        );
    }

    #[test]
    fn skips() {
        let (s, d) = addrs();
        let f = build_frame(1, s, d, b"abc");
        let ip = 18;
        let mut v6 = f.clone();
        v6[16..18].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(parse_frame(LinkType::Ethernet, &v6), Err(Skip::NonIpv4));
        let mut tcp = f.clone();
        tcp[ip + 9] = 6;
        assert_eq!(parse_frame(LinkType::Ethernet, &tcp), Err(Skip::NonUdp));
        let mut mf = f.clone();
        mf[ip + 6] |= 0x20;
        assert_eq!(parse_frame(LinkType::Ethernet, &mf), Err(Skip::Fragment));
        let mut off = f.clone();
        off[ip + 7] = 1;
        assert_eq!(parse_frame(LinkType::Ethernet, &off), Err(Skip::Fragment));
        assert_eq!(
            parse_frame(LinkType::Ethernet, &f[..f.len() - 1]),
            Err(Skip::Malformed)
        );
        assert_eq!(
            parse_frame(LinkType::Ethernet, &f[..10]),
            Err(Skip::Malformed)
        );
        assert_eq!(
            parse_frame(LinkType::Other, &f),
            Err(Skip::UnsupportedLinkType)
        );
        let mut bad_udp = f.clone();
        bad_udp[ip + 24..ip + 26].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(
            parse_frame(LinkType::Ethernet, &bad_udp),
            Err(Skip::Malformed)
        );
    }

    #[test]
    fn never_panics_on_prefixes() {
        let (s, d) = addrs();
        let f = build_frame(2, s, d, b"abcdef");
        for k in 0..f.len() {
            for link in [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll] {
                let _ = parse_frame(link, &f[..k]);
                let _ = parse_frame(link, &f[k..]);
                // A cut frame yields at most the bytes it holds.
                if let Some(u) = parse_cut_frame(link, &f[..k]) {
                    assert!(u.payload.start <= u.payload.end && u.payload.end <= k);
                }
                let _ = parse_cut_frame(link, &f[k..]);
            }
        }
    }
}
