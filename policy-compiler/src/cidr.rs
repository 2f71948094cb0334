//! IP prefixes as NetworkPolicy `ipBlock` writes them, including non-canonical forms.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `4` or `6`.
    pub fn number(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }

    /// `v4` or `v6`, the suffix of per-family nftables objects.
    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

/// A prefix: a network address (host bits cleared) and a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/` in the string.
    #[error("{0:?} is not a CIDR: expected ADDRESS/LENGTH, e.g. 10.0.0.0/8")]
    MissingLength(String),
    /// The address part does not parse.
    #[error("{0:?} is not a CIDR: the address does not parse")]
    BadAddress(String),
    /// The length part is not a number within the family's range.
    #[error("{0:?} is not a CIDR: the prefix length must be 0-{1}")]
    BadLength(String, u8),
}

fn mask_u128(bits: u32, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        (!0u128) << (bits - len as u32)
    }
}

/// An address as a number (IPv4 in the low 32 bits).
pub fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(*a) as u128,
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// The address of a family with this number (IPv4 takes the low 32 bits).
pub fn from_u128(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// The highest address of a family, as a number.
pub fn max_u128(family: Family) -> u128 {
    match family {
        Family::V4 => u32::MAX as u128,
        Family::V6 => u128::MAX,
    }
}

impl Cidr {
    /// Builds a prefix, clearing host bits (`10.244.1.5/4` becomes `0.0.0.0/4`).
    /// `len` is clamped to the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Self {
        let bits = Self::bits(Family::of(&addr));
        let len = len.min(bits as u8);
        let masked = to_u128(&addr) & mask_u128(bits, len);
        let addr = match addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(masked as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(masked)),
        };
        Self { addr, len }
    }

    /// The prefix holding exactly one address.
    pub fn host(addr: IpAddr) -> Self {
        Self::new(addr, Self::bits(Family::of(&addr)) as u8)
    }

    fn bits(family: Family) -> u32 {
        match family {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The address family.
    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// Whether `ip` lies inside this prefix (always false across families).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        Family::of(ip) == self.family()
            && to_u128(ip) & mask_u128(Self::bits(self.family()), self.len) == to_u128(&self.addr)
    }

    /// The first and last addresses of the prefix, as numbers.
    pub fn bounds(&self) -> (u128, u128) {
        let bits = Self::bits(self.family());
        let first = to_u128(&self.addr);
        let host = !mask_u128(bits, self.len) & max_u128(self.family());
        (first, first | host)
    }

    /// Whether `other` lies entirely inside this prefix.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.len >= self.len && self.contains(&other.addr)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| CidrError::MissingLength(s.to_string()))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(s.to_string()))?;
        let bits = Self::bits(Family::of(&addr)) as u8;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= bits)
            .ok_or_else(|| CidrError::BadLength(s.to_string(), bits))?;
        Ok(Self::new(addr, len))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_canonical_cidrs_are_masked() {
        let c: Cidr = "10.244.1.5/4".parse().unwrap();
        assert_eq!(c.to_string(), "0.0.0.0/4");
        let c: Cidr = "fd00::1:5/64".parse().unwrap();
        assert_eq!(c.to_string(), "fd00::/64");
        let c: Cidr = "10.244.1.5/32".parse().unwrap();
        assert!(c.contains(&"10.244.1.5".parse().unwrap()));
        assert!(!c.contains(&"10.244.1.6".parse().unwrap()));
    }

    #[test]
    fn containment_respects_family_and_length() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(&"10.255.0.1".parse().unwrap()));
        assert!(!c.contains(&"11.0.0.1".parse().unwrap()));
        assert!(!c.contains(&"::ffff:10.0.0.1".parse().unwrap()));
        assert!(c.covers(&"10.1.0.0/16".parse().unwrap()));
        assert!(!c.covers(&"0.0.0.0/0".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&"192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn malformed_cidrs_are_rejected_with_a_reason() {
        assert!(matches!(
            "10.0.0.0".parse::<Cidr>(),
            Err(CidrError::MissingLength(_))
        ));
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::BadAddress(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::BadLength(_, 32))
        ));
        assert!(matches!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::BadLength(_, 128))
        ));
    }
}
