//! Sets of connections: every protocol and port, or port ranges per protocol.

use std::fmt;

use serde_json::{json, Value};

use crate::model::{PolicyPort, PortSpec, Protocol};

/// Inclusive port ranges, sorted, disjoint and not adjacent (merged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRanges(Vec<(u16, u16)>);

impl PortRanges {
    /// Every port, 1-65535.
    pub fn full() -> Self {
        Self(vec![(1, u16::MAX)])
    }

    /// One range (empty when `first > last`).
    pub fn range(first: u16, last: u16) -> Self {
        if first > last {
            Self::default()
        } else {
            Self(vec![(first, last)])
        }
    }

    /// The ranges.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.0
    }

    /// Whether no port is in the set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every port is.
    pub fn is_full(&self) -> bool {
        self.0 == [(1, u16::MAX)]
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|(a, b)| (*a..=*b).contains(&port))
    }

    /// The union.
    pub fn union(&self, other: &Self) -> Self {
        let mut all: Vec<(u16, u16)> = self.0.iter().chain(&other.0).copied().collect();
        all.sort_unstable();
        let mut out: Vec<(u16, u16)> = Vec::with_capacity(all.len());
        for (a, b) in all {
            match out.last_mut() {
                Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Self(out)
    }

    /// The intersection.
    pub fn intersection(&self, other: &Self) -> Self {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() && j < other.0.len() {
            let (a1, b1) = self.0[i];
            let (a2, b2) = other.0[j];
            let (a, b) = (a1.max(a2), b1.min(b2));
            if a <= b {
                out.push((a, b));
            }
            if b1 < b2 {
                i += 1;
            } else {
                j += 1;
            }
        }
        Self(out)
    }

    /// The ports in `self` and not in `other`.
    pub fn difference(&self, other: &Self) -> Self {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            let mut start = u32::from(a);
            let end = u32::from(b);
            for &(c, d) in &other.0 {
                let (c, d) = (u32::from(c), u32::from(d));
                if d < start || c > end {
                    continue;
                }
                if c > start {
                    out.push((start as u16, (c - 1) as u16));
                }
                start = start.max(d + 1);
            }
            if start <= end {
                out.push((start as u16, end as u16));
            }
        }
        Self(out)
    }
}

impl fmt::Display for PortRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A set of connections: `all` (every protocol, ICMP included, every port), or port ranges of
/// TCP, UDP and SCTP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnSet {
    all: bool,
    /// Per protocol, in [`Protocol::ALL`] order; empty when `all`.
    ports: [PortRanges; 3],
}

fn slot(p: Protocol) -> usize {
    match p {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
        Protocol::Sctp => 2,
    }
}

impl ConnSet {
    /// Nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// Everything.
    pub fn all() -> Self {
        Self {
            all: true,
            ports: Default::default(),
        }
    }

    /// Ports of one protocol.
    pub fn ports(protocol: Protocol, ranges: PortRanges) -> Self {
        let mut set = Self::none();
        set.ports[slot(protocol)] = ranges;
        set
    }

    /// Whether the set is everything.
    pub fn is_all(&self) -> bool {
        self.all
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        !self.all && self.ports.iter().all(PortRanges::is_empty)
    }

    /// The ports of a protocol (every port when `all`).
    pub fn protocol(&self, protocol: Protocol) -> PortRanges {
        if self.all {
            PortRanges::full()
        } else {
            self.ports[slot(protocol)].clone()
        }
    }

    /// Whether the set holds `port` of `protocol`.
    pub fn contains(&self, protocol: Protocol, port: u16) -> bool {
        self.all || self.ports[slot(protocol)].contains(port)
    }

    /// The union.
    pub fn union(&self, other: &Self) -> Self {
        if self.all || other.all {
            return Self::all();
        }
        let mut out = Self::none();
        for p in 0..3 {
            out.ports[p] = self.ports[p].union(&other.ports[p]);
        }
        out
    }

    /// The intersection.
    pub fn intersection(&self, other: &Self) -> Self {
        match (self.all, other.all) {
            (true, _) => other.clone(),
            (_, true) => self.clone(),
            _ => {
                let mut out = Self::none();
                for p in 0..3 {
                    out.ports[p] = self.ports[p].intersection(&other.ports[p]);
                }
                out
            }
        }
    }

    /// The connections a rule's `ports` allow to a destination, named ports resolved with
    /// `named` (`None`: the destination is no pod, or does not declare it).
    pub fn of_rule(ports: &[PolicyPort], named: impl Fn(&str, Protocol) -> Option<u16>) -> Self {
        if ports.is_empty() {
            return Self::all();
        }
        let mut out = Self::none();
        for p in ports {
            let ranges = match &p.port {
                PortSpec::Any => PortRanges::full(),
                PortSpec::Range(a, b) => PortRanges::range(*a, *b),
                PortSpec::Named(name) => match named(name, p.protocol) {
                    Some(n) => PortRanges::range(n, n),
                    None => continue,
                },
            };
            let s = slot(p.protocol);
            out.ports[s] = out.ports[s].union(&ranges);
        }
        out
    }

    /// `{"all": bool, "allowed": [{"protocol", "ports": [[a, b], ...]}]}` members.
    pub fn json_fields(&self) -> (Value, Value) {
        if self.all {
            return (json!(true), json!([]));
        }
        let allowed: Vec<Value> = Protocol::ALL
            .iter()
            .filter(|p| !self.ports[slot(**p)].is_empty())
            .map(|p| {
                let ranges: Vec<Value> = self.ports[slot(*p)]
                    .ranges()
                    .iter()
                    .map(|(a, b)| json!([a, b]))
                    .collect();
                json!({"protocol": p.as_api(), "ports": ranges})
            })
            .collect();
        (json!(false), Value::Array(allowed))
    }
}

impl fmt::Display for ConnSet {
    /// `All Connections`, `No Connections`, or `TCP 80,8080-8090,UDP 53`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all {
            return f.write_str("All Connections");
        }
        let parts: Vec<String> = Protocol::ALL
            .iter()
            .filter(|p| !self.ports[slot(**p)].is_empty())
            .map(|p| format!("{} {}", p.as_api(), self.ports[slot(*p)]))
            .collect();
        if parts.is_empty() {
            f.write_str("No Connections")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_intersect_and_subtract() {
        let a = PortRanges::range(80, 80).union(&PortRanges::range(81, 90));
        assert_eq!(a.ranges(), [(80, 90)]);
        let b = a.union(&PortRanges::range(100, 200));
        assert_eq!(b.to_string(), "80-90,100-200");
        assert_eq!(
            b.intersection(&PortRanges::range(85, 150)).to_string(),
            "85-90,100-150"
        );
        assert_eq!(
            PortRanges::full().difference(&b).to_string(),
            "1-79,91-99,201-65535"
        );
        assert!(PortRanges::range(5, 4).is_empty());
        assert!(PortRanges::range(1, 65535).is_full());
    }

    #[test]
    fn sets_combine_and_print_like_the_peers() {
        let tcp = ConnSet::ports(Protocol::Tcp, PortRanges::range(80, 80));
        let udp = ConnSet::ports(Protocol::Udp, PortRanges::range(53, 53));
        let both = tcp.union(&udp);
        assert_eq!(both.to_string(), "TCP 80,UDP 53");
        assert_eq!(both.intersection(&ConnSet::all()), both);
        assert_eq!(ConnSet::all().to_string(), "All Connections");
        assert_eq!(tcp.intersection(&udp).to_string(), "No Connections");
        assert!(tcp.intersection(&udp).is_empty());
        assert!(both.union(&ConnSet::all()).is_all());
        let (all, allowed) = both.json_fields();
        assert_eq!(all, json!(false));
        assert_eq!(
            allowed,
            json!([{"protocol": "TCP", "ports": [[80, 80]]}, {"protocol": "UDP", "ports": [[53, 53]]}])
        );
    }

    #[test]
    fn rules_resolve_named_ports_on_the_destination() {
        let ports = vec![
            PolicyPort {
                protocol: Protocol::Tcp,
                port: PortSpec::Named("http".into()),
            },
            PolicyPort {
                protocol: Protocol::Tcp,
                port: PortSpec::Range(8080, 8090),
            },
        ];
        let set = ConnSet::of_rule(&ports, |n, _| (n == "http").then_some(80));
        assert_eq!(set.to_string(), "TCP 80,8080-8090");
        let set = ConnSet::of_rule(&ports, |_, _| None);
        assert_eq!(set.to_string(), "TCP 8080-8090");
        assert!(ConnSet::of_rule(&[], |_, _| None).is_all());
    }
}
