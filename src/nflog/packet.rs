//! The headers of a logged packet: IPv4 or IPv6, then TCP, UDP, SCTP or ICMP, read from the first
//! bytes of the packet that NFLOG copies (the IP header first: hooks of the `inet` family see no
//! link-layer header).
//!
//! Every read is bounds-checked: a payload too short for what its headers announce, or with an
//! impossible header, is [`MalformedPacket`], never a panic.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `ETH_P_IP`: the NFLOG hardware protocol of an IPv4 packet.
pub const ETH_P_IP: u16 = 0x0800;
/// `ETH_P_IPV6`: the NFLOG hardware protocol of an IPv6 packet.
pub const ETH_P_IPV6: u16 = 0x86dd;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_ICMPV6: u8 = 58;
// IPv6 extension headers that may come before the transport header.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;

/// The IP and transport headers of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeaders {
    /// The source address.
    pub src: IpAddr,
    /// The destination address.
    pub dst: IpAddr,
    /// The transport protocol (IPv4 protocol, or the IPv6 header after the extension headers).
    pub protocol: TransportProtocol,
    /// What the transport header says, when the packet has one that is read here.
    pub transport: Transport,
}

/// A transport protocol, by IP protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportProtocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
    /// Any other protocol, by number.
    Other(u8),
}

impl TransportProtocol {
    /// The protocol of IP protocol number `number`.
    pub fn from_number(number: u8) -> Self {
        match number {
            IPPROTO_TCP => Self::Tcp,
            IPPROTO_UDP => Self::Udp,
            IPPROTO_SCTP => Self::Sctp,
            IPPROTO_ICMP => Self::Icmp,
            IPPROTO_ICMPV6 => Self::Icmpv6,
            n => Self::Other(n),
        }
    }
}

impl fmt::Display for TransportProtocol {
    /// `tcp`, `udp`, `sctp`, `icmp`, `icmpv6`, or the protocol number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp => f.write_str("tcp"),
            Self::Udp => f.write_str("udp"),
            Self::Sctp => f.write_str("sctp"),
            Self::Icmp => f.write_str("icmp"),
            Self::Icmpv6 => f.write_str("icmpv6"),
            Self::Other(n) => write!(f, "{n}"),
        }
    }
}

/// What the transport header of a packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP, UDP or SCTP ports.
    Ports {
        /// The source port.
        src: u16,
        /// The destination port.
        dst: u16,
    },
    /// An ICMP or ICMPv6 message.
    Icmp {
        /// Its type.
        icmp_type: u8,
        /// Its code.
        code: u8,
    },
    /// No header read: another protocol, or a fragment after the first (which holds none).
    None,
}

/// Why a payload is not a packet whose headers can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedPacket {
    /// Fewer bytes than the headers need.
    #[error("truncated {0} header")]
    Truncated(&'static str),
    /// The IP version is neither 4 nor 6, or differs from the NFLOG hardware protocol.
    #[error("IP version {0} (hardware protocol {1:#06x})")]
    Version(u8, u16),
    /// An IPv4 header length below 20 bytes.
    #[error("IPv4 header length {0}")]
    HeaderLength(usize),
}

/// Reads the headers of `payload`, an IP packet from its first byte (possibly cut short by the copy
/// range). `hw_protocol` is the NFLOG hardware protocol (`ETH_P_IP`, `ETH_P_IPV6`), when the message
/// has one; otherwise (or when it is another) the version nibble tells the family.
pub fn parse(payload: &[u8], hw_protocol: Option<u16>) -> Result<PacketHeaders, MalformedPacket> {
    let first = *payload.first().ok_or(MalformedPacket::Truncated("IP"))?;
    let version = first >> 4;
    let expected = match hw_protocol {
        Some(ETH_P_IP) => Some(4),
        Some(ETH_P_IPV6) => Some(6),
        _ => None,
    };
    if expected.is_some_and(|v| v != version) {
        return Err(MalformedPacket::Version(
            version,
            hw_protocol.unwrap_or_default(),
        ));
    }
    match version {
        4 => parse_ipv4(payload),
        6 => parse_ipv6(payload),
        v => Err(MalformedPacket::Version(v, hw_protocol.unwrap_or_default())),
    }
}

fn parse_ipv4(p: &[u8]) -> Result<PacketHeaders, MalformedPacket> {
    let header: &[u8; 20] = bytes(p, 0).ok_or(MalformedPacket::Truncated("IPv4"))?;
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if header_len < 20 {
        return Err(MalformedPacket::HeaderLength(header_len));
    }
    let src = IpAddr::V4(Ipv4Addr::new(
        header[12], header[13], header[14], header[15],
    ));
    let dst = IpAddr::V4(Ipv4Addr::new(
        header[16], header[17], header[18], header[19],
    ));
    let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
    let protocol = header[9];
    let transport = if fragment_offset != 0 {
        Transport::None
    } else {
        let rest = p
            .get(header_len..)
            .ok_or(MalformedPacket::Truncated("IPv4"))?;
        parse_transport(protocol, rest)?
    };
    Ok(PacketHeaders {
        src,
        dst,
        protocol: TransportProtocol::from_number(protocol),
        transport,
    })
}

fn parse_ipv6(p: &[u8]) -> Result<PacketHeaders, MalformedPacket> {
    let header: &[u8; 40] = bytes(p, 0).ok_or(MalformedPacket::Truncated("IPv6"))?;
    let src: [u8; 16] = *bytes(header, 8).ok_or(MalformedPacket::Truncated("IPv6"))?;
    let dst: [u8; 16] = *bytes(header, 24).ok_or(MalformedPacket::Truncated("IPv6"))?;
    let mut next = header[6];
    let mut offset = 40;
    let mut later_fragment = false;
    loop {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH => {
                let ext: &[u8; 2] =
                    bytes(p, offset).ok_or(MalformedPacket::Truncated("IPv6 extension"))?;
                // AH counts 4-byte units minus 2; the others 8-byte units past the first 8.
                offset += if next == IPV6_AUTH {
                    (usize::from(ext[1]) + 2) * 4
                } else {
                    (usize::from(ext[1]) + 1) * 8
                };
                next = ext[0];
            }
            IPV6_FRAGMENT => {
                let ext: &[u8; 8] =
                    bytes(p, offset).ok_or(MalformedPacket::Truncated("IPv6 fragment"))?;
                next = ext[0];
                later_fragment = u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0;
                offset += 8;
            }
            _ => break,
        }
    }
    let transport = if later_fragment {
        Transport::None
    } else {
        let rest = p
            .get(offset..)
            .ok_or(MalformedPacket::Truncated("IPv6 extension"))?;
        parse_transport(next, rest)?
    };
    Ok(PacketHeaders {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        protocol: TransportProtocol::from_number(next),
        transport,
    })
}

fn parse_transport(protocol: u8, rest: &[u8]) -> Result<Transport, MalformedPacket> {
    match protocol {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            // The ports are the first four bytes of all three headers.
            let ports: &[u8; 4] =
                bytes(rest, 0).ok_or(MalformedPacket::Truncated(match protocol {
                    IPPROTO_TCP => "TCP",
                    IPPROTO_UDP => "UDP",
                    _ => "SCTP",
                }))?;
            Ok(Transport::Ports {
                src: u16::from_be_bytes([ports[0], ports[1]]),
                dst: u16::from_be_bytes([ports[2], ports[3]]),
            })
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let icmp: &[u8; 2] = bytes(rest, 0).ok_or(MalformedPacket::Truncated("ICMP"))?;
            Ok(Transport::Icmp {
                icmp_type: icmp[0],
                code: icmp[1],
            })
        }
        _ => Ok(Transport::None),
    }
}

/// The `N` bytes of `p` at `offset`, if it has them.
fn bytes<const N: usize>(p: &[u8], offset: usize) -> Option<&[u8; N]> {
    p.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header (options of `options` 4-byte words) from 10.0.0.1 to 10.0.0.2, then `rest`.
    fn ipv4(protocol: u8, fragment_offset: u16, options: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45 + options, 0, 0, 0, 0, 0];
        p.extend(fragment_offset.to_be_bytes());
        p.extend([64, protocol, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend(std::iter::repeat_n(1u8, usize::from(options) * 4));
        p.extend(rest);
        p
    }

    /// An IPv6 header from 2001:db8::1 to 2001:db8::2 with next header `next`, then `rest`.
    fn ipv6(next: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        p.extend("2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend("2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend(rest);
        p
    }

    const PORTS: [u8; 8] = [0x9c, 0x40, 0x15, 0x38, 0, 0, 0, 0]; // 40000 -> 5432

    fn v4(a: &str) -> IpAddr {
        a.parse().unwrap()
    }

    #[test]
    fn ipv4_gives_addresses_protocol_and_ports() {
        for (number, protocol) in [
            (6, TransportProtocol::Tcp),
            (17, TransportProtocol::Udp),
            (132, TransportProtocol::Sctp),
        ] {
            let got = parse(&ipv4(number, 0, 0, &PORTS), Some(ETH_P_IP)).unwrap();
            assert_eq!(
                got,
                PacketHeaders {
                    src: v4("10.0.0.1"),
                    dst: v4("10.0.0.2"),
                    protocol,
                    transport: Transport::Ports {
                        src: 40000,
                        dst: 5432
                    },
                }
            );
        }
    }

    #[test]
    fn ipv4_options_move_the_transport_header() {
        let got = parse(&ipv4(17, 0, 2, &PORTS), None).unwrap();
        assert_eq!(
            got.transport,
            Transport::Ports {
                src: 40000,
                dst: 5432
            }
        );
    }

    #[test]
    fn icmp_gives_type_and_code() {
        let got = parse(&ipv4(1, 0, 0, &[8, 0, 0xf7, 0xff]), Some(ETH_P_IP)).unwrap();
        assert_eq!(got.protocol, TransportProtocol::Icmp);
        assert_eq!(
            got.transport,
            Transport::Icmp {
                icmp_type: 8,
                code: 0
            }
        );
        let got = parse(&ipv6(58, &[128, 0, 0, 0]), Some(ETH_P_IPV6)).unwrap();
        assert_eq!(got.protocol, TransportProtocol::Icmpv6);
        assert_eq!(
            got.transport,
            Transport::Icmp {
                icmp_type: 128,
                code: 0
            }
        );
    }

    #[test]
    fn a_later_fragment_and_another_protocol_have_no_ports() {
        let got = parse(&ipv4(6, 185, 0, &[]), None).unwrap();
        assert_eq!(
            (got.protocol, got.transport),
            (TransportProtocol::Tcp, Transport::None)
        );
        let got = parse(&ipv4(47, 0, 0, &[1, 2]), None).unwrap();
        assert_eq!(
            (got.protocol, got.transport),
            (TransportProtocol::Other(47), Transport::None)
        );
        assert_eq!(TransportProtocol::Other(47).to_string(), "47");
    }

    #[test]
    fn ipv6_walks_extension_headers_to_the_ports() {
        let plain = parse(&ipv6(6, &PORTS), Some(ETH_P_IPV6)).unwrap();
        assert_eq!(
            plain,
            PacketHeaders {
                src: "2001:db8::1".parse().unwrap(),
                dst: "2001:db8::2".parse().unwrap(),
                protocol: TransportProtocol::Tcp,
                transport: Transport::Ports {
                    src: 40000,
                    dst: 5432
                },
            }
        );
        // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> AH (length 1: 12 bytes) ->
        // first fragment (offset 0) -> UDP.
        let mut rest = vec![60, 0, 1, 4, 0, 0, 0, 0];
        rest.extend([51, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        rest.extend([44, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        rest.extend([17, 0, 0, 1, 0, 0, 0, 9]);
        rest.extend(PORTS);
        let got = parse(&ipv6(0, &rest), None).unwrap();
        assert_eq!(got.protocol, TransportProtocol::Udp);
        assert_eq!(got.transport, plain.transport);
        // A later fragment: no ports.
        let got = parse(&ipv6(44, &[6, 0, 0, 8, 0, 0, 0, 9]), None).unwrap();
        assert_eq!(
            (got.protocol, got.transport),
            (TransportProtocol::Tcp, Transport::None)
        );
    }

    #[test]
    fn truncated_and_impossible_headers_are_malformed() {
        let cases: Vec<(&str, Vec<u8>, Option<u16>, MalformedPacket)> = vec![
            ("empty", vec![], None, MalformedPacket::Truncated("IP")),
            (
                "short IPv4",
                ipv4(6, 0, 0, &PORTS)[..19].to_vec(),
                None,
                MalformedPacket::Truncated("IPv4"),
            ),
            (
                "IHL 4",
                {
                    let mut p = ipv4(6, 0, 0, &PORTS);
                    p[0] = 0x44;
                    p
                },
                None,
                MalformedPacket::HeaderLength(16),
            ),
            (
                "IHL past the copy",
                {
                    let mut p = ipv4(6, 0, 0, &[]);
                    p[0] = 0x4f;
                    p
                },
                None,
                MalformedPacket::Truncated("IPv4"),
            ),
            (
                "TCP ports cut",
                ipv4(6, 0, 0, &PORTS[..3]),
                None,
                MalformedPacket::Truncated("TCP"),
            ),
            (
                "UDP ports missing",
                ipv4(17, 0, 0, &[]),
                None,
                MalformedPacket::Truncated("UDP"),
            ),
            (
                "ICMP cut",
                ipv4(1, 0, 0, &[8]),
                None,
                MalformedPacket::Truncated("ICMP"),
            ),
            (
                "short IPv6",
                ipv6(6, &[])[..39].to_vec(),
                None,
                MalformedPacket::Truncated("IPv6"),
            ),
            (
                "IPv6 extension cut",
                ipv6(0, &[6]),
                None,
                MalformedPacket::Truncated("IPv6 extension"),
            ),
            (
                "IPv6 extension longer than the copy",
                ipv6(60, &[6, 20, 0, 0, 0, 0, 0, 0]),
                None,
                MalformedPacket::Truncated("IPv6 extension"),
            ),
            (
                "version 5",
                vec![0x55; 40],
                None,
                MalformedPacket::Version(5, 0),
            ),
            (
                "IPv6 said to be IPv4",
                ipv6(6, &PORTS),
                Some(ETH_P_IP),
                MalformedPacket::Version(6, ETH_P_IP),
            ),
        ];
        for (what, payload, hw, expected) in cases {
            assert_eq!(parse(&payload, hw), Err(expected), "{what}");
        }
    }

    #[test]
    fn no_payload_makes_it_panic() {
        // Every cut of valid packets, and valid packets with random bytes overwritten, in both
        // families: each gives a result (checked above for the meaningful cases), never a panic.
        let mut extended = vec![60, 0, 1, 4, 0, 0, 0, 0];
        extended.extend([44, 0, 0, 0, 0, 0, 0, 9]);
        extended.extend([17, 0, 0, 0, 0, 0, 0, 0]);
        extended.extend(PORTS);
        let valid = [
            ipv4(6, 0, 0, &PORTS),
            ipv4(1, 0, 3, &[8, 0]),
            ipv6(6, &PORTS),
            ipv6(0, &extended),
        ];
        for p in &valid {
            for cut in 0..=p.len() {
                for hw in [None, Some(ETH_P_IP), Some(ETH_P_IPV6), Some(0x0806)] {
                    let _ = parse(&p[..cut], hw);
                }
            }
        }
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..50_000 {
            let mut p = valid[i % valid.len()].clone();
            for _ in 0..4 {
                let r = next();
                let at = (r as usize) % p.len();
                p[at] = (r >> 40) as u8;
            }
            let cut = (next() as usize) % (p.len() + 1);
            let _ = parse(&p[..cut], None);
            // And pure noise.
            let noise: Vec<u8> = (0..(next() % 140)).map(|_| next() as u8).collect();
            let _ = parse(&noise, None);
        }
    }
}
