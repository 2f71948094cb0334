//! Sets of connections: port ranges per protocol (TCP, UDP, SCTP) and the other protocols.

use std::fmt;

use serde_json::{json, Value};

use crate::model::{ClusterPort, PolicyPort, PortSpec, Protocol};

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

/// A set of connections: port ranges of TCP, UDP and SCTP, and whether every other IP protocol
/// (ICMP, ICMPv6 and any protocol without ports, called "other protocols") is in. Rules without
/// ports allow everything, other protocols included; rules with ports allow only their ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnSet {
    /// Per protocol, in [`Protocol::ALL`] order.
    ports: [PortRanges; 3],
    /// Every IP protocol but TCP, UDP and SCTP.
    other: bool,
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

    /// Everything: every port of TCP, UDP and SCTP, and every other protocol.
    pub fn all() -> Self {
        Self {
            ports: [PortRanges::full(), PortRanges::full(), PortRanges::full()],
            other: true,
        }
    }

    /// Ports of one protocol.
    pub fn ports(protocol: Protocol, ranges: PortRanges) -> Self {
        let mut set = Self::none();
        set.ports[slot(protocol)] = ranges;
        set
    }

    /// Every IP protocol but TCP, UDP and SCTP (ICMP, ICMPv6, …), and nothing else.
    pub fn other_protocols() -> Self {
        Self {
            ports: Default::default(),
            other: true,
        }
    }

    /// Whether the set is everything.
    pub fn is_all(&self) -> bool {
        self.other && self.ports.iter().all(PortRanges::is_full)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        !self.other && self.ports.iter().all(PortRanges::is_empty)
    }

    /// The ports of a protocol.
    pub fn protocol(&self, protocol: Protocol) -> PortRanges {
        self.ports[slot(protocol)].clone()
    }

    /// Whether the set holds `port` of `protocol`.
    pub fn contains(&self, protocol: Protocol, port: u16) -> bool {
        self.ports[slot(protocol)].contains(port)
    }

    /// Whether the set holds the protocols without ports (ICMP and every IP protocol but TCP, UDP
    /// and SCTP).
    pub fn has_other_protocols(&self) -> bool {
        self.other
    }

    fn combine(
        &self,
        other: &Self,
        ports: impl Fn(&PortRanges, &PortRanges) -> PortRanges,
    ) -> [PortRanges; 3] {
        [0, 1, 2].map(|p| ports(&self.ports[p], &other.ports[p]))
    }

    /// The union.
    pub fn union(&self, other: &Self) -> Self {
        Self {
            ports: self.combine(other, PortRanges::union),
            other: self.other || other.other,
        }
    }

    /// The intersection.
    pub fn intersection(&self, other: &Self) -> Self {
        Self {
            ports: self.combine(other, PortRanges::intersection),
            other: self.other && other.other,
        }
    }

    /// The connections in `self` and not in `other`.
    pub fn difference(&self, other: &Self) -> Self {
        Self {
            ports: self.combine(other, PortRanges::difference),
            other: self.other && !other.other,
        }
    }

    /// The connections a NetworkPolicy rule's `ports` allow to a destination, named ports
    /// resolved with `named` (`None`: the destination is no pod, or does not declare it). No
    /// ports: everything, other protocols included.
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

    /// The connections a ClusterNetworkPolicy rule's `protocols` match to a destination, named
    /// ports resolved with `named` (the port of that name and protocol on the destination pod;
    /// `None` where it declares none). No protocols: everything, other protocols included.
    pub fn of_cluster_rule(
        protocols: &[ClusterPort],
        named: impl Fn(&str, Protocol) -> Option<u16>,
    ) -> Self {
        if protocols.is_empty() {
            return Self::all();
        }
        let mut out = Self::none();
        for p in protocols {
            match p {
                ClusterPort::Range {
                    protocol,
                    first,
                    last,
                } => {
                    let s = slot(*protocol);
                    out.ports[s] = out.ports[s].union(&PortRanges::range(*first, *last));
                }
                ClusterPort::Named(name) => {
                    for protocol in Protocol::ALL {
                        if let Some(n) = named(name, protocol) {
                            let s = slot(protocol);
                            out.ports[s] = out.ports[s].union(&PortRanges::range(n, n));
                        }
                    }
                }
            }
        }
        out
    }

    /// `{"all": bool, "allowed": [{"protocol", "ports": [[a, b], ...]}]}` members; other
    /// protocols are the entry `{"protocol": "other"}` (never listed when `all`).
    pub fn json_fields(&self) -> (Value, Value) {
        if self.is_all() {
            return (json!(true), json!([]));
        }
        let mut allowed: Vec<Value> = Protocol::ALL
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
        if self.other {
            allowed.push(json!({"protocol": OTHER_JSON}));
        }
        (json!(false), Value::Array(allowed))
    }
}

/// How other protocols are written in text.
const OTHER_TEXT: &str = "other protocols";

/// How other protocols are written in JSON's `allowed` (`{"protocol": "other"}`).
const OTHER_JSON: &str = "other";

impl ConnSet {
    /// The ports, `TCP 80,8080-8090,UDP 53`, and `other protocols` when those are in.
    fn listed(&self) -> String {
        let mut parts: Vec<String> = Protocol::ALL
            .iter()
            .filter(|p| !self.ports[slot(**p)].is_empty())
            .map(|p| format!("{} {}", p.as_api(), self.ports[slot(*p)]))
            .collect();
        if self.other {
            parts.push(OTHER_TEXT.to_string());
        }
        parts.join(",")
    }
}

impl fmt::Display for ConnSet {
    /// `All Connections`, `No Connections`, or what the set holds: `TCP 80,8080-8090,UDP 53`
    /// (then `,other protocols` when those are in). A set that holds the other protocols is
    /// written by what it lacks when that is shorter: `All Connections except TCP 10250`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str("All Connections");
        }
        if self.is_empty() {
            return f.write_str("No Connections");
        }
        let listed = self.listed();
        if self.other {
            let except = format!(
                "All Connections except {}",
                Self::all().difference(self).listed()
            );
            if except.len() < listed.len() {
                return f.write_str(&except);
            }
        }
        f.write_str(&listed)
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

    #[test]
    fn other_protocols_are_a_member_of_their_own() {
        let tcp80 = ConnSet::ports(Protocol::Tcp, PortRanges::range(80, 80));
        let icmp = ConnSet::other_protocols();
        // Everything but TCP 80: what an Admin Deny of TCP 80 leaves.
        let rest = ConnSet::all().difference(&tcp80);
        assert_eq!(rest.to_string(), "All Connections except TCP 80");
        assert_eq!(
            rest.listed(),
            "TCP 1-79,81-65535,UDP 1-65535,SCTP 1-65535,other protocols"
        );
        // Written by what it holds when that is shorter than what it lacks.
        let udp53 = ConnSet::ports(Protocol::Udp, PortRanges::range(53, 53));
        assert_eq!(
            ConnSet::all().difference(&udp53.union(&tcp80)).to_string(),
            "All Connections except TCP 80,UDP 53"
        );
        assert!(rest.has_other_protocols() && !rest.contains(Protocol::Tcp, 80));
        assert!(rest.union(&tcp80).is_all());
        assert_eq!(tcp80.union(&icmp).to_string(), "TCP 80,other protocols");
        assert_eq!(icmp.to_string(), "other protocols");
        assert!(icmp.intersection(&tcp80).is_empty());
        assert_eq!(ConnSet::all().difference(&ConnSet::all()), ConnSet::none());
        // Every port of every protocol without the others is not everything.
        let ports_only = ConnSet::all().difference(&icmp);
        assert!(!ports_only.is_all() && !ports_only.has_other_protocols());
        assert_eq!(
            ports_only.to_string(),
            "TCP 1-65535,UDP 1-65535,SCTP 1-65535"
        );
        let (all, allowed) = tcp80.union(&icmp).json_fields();
        assert_eq!(all, json!(false));
        assert_eq!(
            allowed,
            json!([{"protocol": "TCP", "ports": [[80, 80]]}, {"protocol": "other"}])
        );
        assert_eq!(ConnSet::all().json_fields(), (json!(true), json!([])));
    }

    #[test]
    fn cluster_rules_resolve_named_ports_in_every_protocol() {
        let protocols = vec![
            ClusterPort::Named("dns".into()),
            ClusterPort::Range {
                protocol: Protocol::Sctp,
                first: 9003,
                last: 9005,
            },
        ];
        // The destination declares dns as UDP 53 and TCP 5353.
        let set = ConnSet::of_cluster_rule(&protocols, |name, protocol| match (name, protocol) {
            ("dns", Protocol::Udp) => Some(53),
            ("dns", Protocol::Tcp) => Some(5353),
            _ => None,
        });
        assert_eq!(set.to_string(), "TCP 5353,UDP 53,SCTP 9003-9005");
        let set = ConnSet::of_cluster_rule(&protocols, |_, _| None);
        assert_eq!(set.to_string(), "SCTP 9003-9005");
        assert!(ConnSet::of_cluster_rule(&[], |_, _| None).is_all());
    }
}
