//! A typed model of nftpolicy's one nftables table, its text form, and an interpreter for it.
//!
//! The same [`Ruleset`] is what `policyc compile` prints, what the agent diffs against the committed
//! state, and what [`interp`] evaluates packet by packet in tests.
//!
//! Besides named sets and the verdict maps that send a pod's traffic to its chain, a ruleset holds
//! *decision maps* ([`DecisionMap`]): interval verdict maps keyed by address (or by address,
//! protocol and destination port) whose disjoint elements each carry the verdict of the first rule
//! that covers that region, so that an ordered list of rules costs one lookup per packet; and *named
//! counters* ([`Counter`]), table objects that rules count packets into (`counter name "NAME"`), so
//! that a count survives the rewriting of the chains that count into it.
//!
//! A [`Rule`] is its expressions in order ([`Match`]), then a [`Verdict`] or none
//! ([`Verdict::Continue`]). An expression is a match, which holds for a packet or not, or a
//! statement (counter, limit, log), which acts on the packet and holds: nft evaluates them left to
//! right and stops at the first that does not hold, so a statement counts or logs every packet
//! that reaches it, whatever later matches say.

pub mod interp;
pub mod json;
mod render;
pub mod transaction;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::cidr::{to_u128, Cidr, Family};
use crate::model::Protocol;

/// The table nftpolicy owns (`table inet nftpolicy`); nothing else is ever touched.
pub const TABLE_NAME: &str = "nftpolicy";

/// The longest comment nft stores on a rule, set or chain.
pub const MAX_COMMENT_LEN: usize = 127;

/// What a named set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetType {
    /// Addresses of one family (`ipv4_addr` / `ipv6_addr`).
    Addr(Family),
    /// Destination address, protocol and port (`ipv4_addr . inet_proto . inet_service`): named ports
    /// resolved per pod.
    AddrProtoPort(Family),
}

impl SetType {
    /// The address family of the set's key.
    pub fn family(self) -> Family {
        match self {
            SetType::Addr(f) | SetType::AddrProtoPort(f) => f,
        }
    }
}

/// One element of a named set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetElement {
    /// An address.
    Addr(IpAddr),
    /// An address, protocol and port.
    AddrProtoPort(IpAddr, Protocol, u16),
}

/// A named set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Key type.
    pub set_type: SetType,
    /// What the set stands for (a peer's selectors, a rule's named ports).
    pub comment: String,
    /// Elements.
    pub elements: BTreeSet<SetElement>,
}

/// A verdict map from a pod address to the chain that judges its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictMap {
    /// The key's family.
    pub family: Family,
    /// Address → chain to jump to.
    pub elements: BTreeMap<IpAddr, String>,
}

/// A decision map's verdict for the packets an element holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DecisionVerdict {
    /// `accept`: ends the base chain (later base chains still judge the packet).
    Accept,
    /// `drop` (final).
    Drop,
    /// `return`: ends this chain, and the chain that jumped here goes on after the jump (in a base
    /// chain: its policy, accept).
    Return,
    /// `jump CHAIN`: the chain judges, and when it returns the rule after the lookup goes on.
    Jump(String),
}

/// The key of one decision map element: an inclusive address range and, in a map with ports, one
/// protocol and an inclusive destination port range.
///
/// Rendered as a single address, an aligned prefix or `first-last`, and ports as `80` or `53-60`,
/// which is also how nft lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DecisionKey {
    /// First address of the range.
    pub first: IpAddr,
    /// Last address of the range (`first` for a single address).
    pub last: IpAddr,
    /// Protocol, first and last port, in a map keyed with ports; `None` in an address-only map.
    pub ports: Option<(Protocol, u16, u16)>,
}

impl DecisionKey {
    /// The prefix that is exactly this address range, if there is one (a single address is a
    /// full-length prefix).
    pub fn prefix(&self) -> Option<Cidr> {
        let family = Family::of(&self.first);
        if Family::of(&self.last) != family {
            return None;
        }
        let (first, last) = (to_u128(&self.first), to_u128(&self.last));
        let host = first ^ last;
        // The range is a prefix when first and last differ exactly in some trailing bits, which
        // are all 0 in first (and so all 1 in last).
        if host & host.wrapping_add(1) != 0 || first & host != 0 {
            return None;
        }
        let bits: u32 = match family {
            Family::V4 => 32,
            Family::V6 => 128,
        };
        let len = bits - host.count_ones();
        Some(Cidr::new(self.first, u8::try_from(len).ok()?))
    }

    /// Whether the key holds a packet's address and, in a map with ports, its protocol and port.
    pub fn holds(&self, addr: &IpAddr, transport: Option<(Protocol, u16)>) -> bool {
        let in_range = Family::of(addr) == Family::of(&self.first)
            && (to_u128(&self.first)..=to_u128(&self.last)).contains(&to_u128(addr));
        in_range
            && match (self.ports, transport) {
                (None, _) => true,
                (Some((p, lo, hi)), Some((q, port))) => p == q && (lo..=hi).contains(&port),
                (Some(_), None) => false,
            }
    }

    /// Whether two keys hold a packet in common.
    pub fn overlaps(&self, other: &DecisionKey) -> bool {
        let (a, b) = (to_u128(&self.first), to_u128(&self.last));
        let (c, d) = (to_u128(&other.first), to_u128(&other.last));
        let addrs = Family::of(&self.first) == Family::of(&other.first) && a <= d && c <= b;
        addrs
            && match (self.ports, other.ports) {
                (Some((p, lo, hi)), Some((q, lo2, hi2))) => p == q && lo <= hi2 && lo2 <= hi,
                (None, None) => true,
                // Keys of different maps.
                _ => false,
            }
    }
}

/// What a decision map element does, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decision {
    /// The verdict.
    pub verdict: DecisionVerdict,
    /// The rule that decided this region, e.g. `a/b ingress[0]`.
    pub comment: Option<String>,
}

/// A decision map: an interval verdict map (`flags interval`) keyed by address, or by address,
/// protocol and destination port (`ipv4_addr . inet_proto . inet_service`), whose elements are
/// disjoint: each packet finds at most one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionMap {
    /// The address family of the key.
    pub family: Family,
    /// Whether the key goes on with protocol and destination port ranges (`. meta l4proto . th
    /// dport`); otherwise it is the address alone.
    pub ports: bool,
    /// Elements, by key.
    pub elements: BTreeMap<DecisionKey, Decision>,
}

impl DecisionMap {
    /// Whether `key` is one this map can hold: the map's family, ports exactly when the map has
    /// them, and ranges that are not empty.
    pub fn fits(&self, key: &DecisionKey) -> bool {
        Family::of(&key.first) == self.family
            && Family::of(&key.last) == self.family
            && to_u128(&key.first) <= to_u128(&key.last)
            && match key.ports {
                None => !self.ports,
                Some((_, lo, hi)) => self.ports && lo <= hi,
            }
    }
}

/// Which address of a packet a match looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddrField {
    /// Source address.
    Saddr,
    /// Destination address.
    Daddr,
}

/// One expression of a rule, a match or a statement, in the rule's order; a rule's verdict applies
/// when all of its expressions hold. Statements ([`Match::Counter`], [`Match::Limit`],
/// [`Match::Log`]) always hold, except a limit over its rate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// `ct state established,related`.
    CtEstablishedOrRelated,
    /// `ip saddr 10.0.0.0/8` or, negated, `ip saddr != 10.1.0.0/16`.
    Prefix {
        /// Source or destination.
        field: AddrField,
        /// Whether the match is `!=`.
        negated: bool,
        /// The prefix; its family decides `ip` or `ip6`.
        cidr: Cidr,
    },
    /// `ip saddr @set`.
    InSet {
        /// Address family.
        family: Family,
        /// Source or destination.
        field: AddrField,
        /// The set's name.
        set: String,
    },
    /// `meta l4proto tcp`.
    L4Proto(Protocol),
    /// `meta l4proto { tcp, udp, sctp }`: a protocol with ports; negated (`!=`), any other
    /// (ICMP, ICMPv6, ...).
    L4ProtoWithPorts {
        /// Whether the match is `!=`.
        negated: bool,
    },
    /// `tcp dport 80`, `tcp dport 8000-8080`, `tcp dport { 80, 443 }`.
    Dport {
        /// Protocol.
        protocol: Protocol,
        /// Inclusive ranges, sorted; a single port is `(p, p)`.
        ports: Vec<(u16, u16)>,
    },
    /// `ip daddr . meta l4proto . th dport @set`: named ports resolved per destination pod.
    DaddrProtoPortInSet {
        /// Address family.
        family: Family,
        /// The set's name.
        set: String,
    },
    /// `counter name "NAME"`: counts the packet and its bytes into the table's named counter
    /// `NAME` (a [`Counter`] of [`Ruleset::counters`]); always holds.
    Counter(String),
    /// `limit rate RATE/second burst BURST packets`: holds while packets reach it at no more than
    /// `rate` a second, with bursts of up to `burst` packets; over that rate the rule stops here.
    /// nft refuses a rate or a burst of 0.
    Limit {
        /// Packets a second.
        rate: u32,
        /// Packets let through at once above the rate, before it applies.
        burst: u32,
    },
    /// `log prefix "PREFIX" group GROUP`: sends the packet, headed by `prefix`, to NFLOG group
    /// `group` (read by a netlink socket bound to it); always holds. nft stores at most
    /// [`MAX_LOG_PREFIX_LEN`] bytes of prefix.
    Log {
        /// The NFLOG group.
        group: u16,
        /// The prefix each logged packet carries.
        prefix: String,
    },
}

impl Match {
    /// Whether this is a statement (counter, limit, log) rather than a match on the packet.
    pub fn is_statement(&self) -> bool {
        matches!(
            self,
            Match::Counter(_) | Match::Limit { .. } | Match::Log { .. }
        )
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Accept (ends the base chain, not the hook: later base chains still judge the packet).
    Accept,
    /// Drop (final).
    Drop,
    /// Return to the chain that jumped here (in a base chain: its policy, accept).
    Return,
    /// Evaluate another chain, then continue here if it did not decide.
    Jump(String),
    /// `ip saddr vmap @map`: jump to the chain the map gives for the address, if any.
    Vmap {
        /// Address family.
        family: Family,
        /// Source or destination.
        field: AddrField,
        /// The map's name.
        map: String,
    },
    /// `ip saddr vmap @map` or `ip saddr . meta l4proto . th dport vmap @map` on a [`DecisionMap`]:
    /// the verdict of the element that holds the packet, if any.
    DecisionVmap {
        /// Address family.
        family: Family,
        /// Source or destination.
        field: AddrField,
        /// Whether the key goes on with `. meta l4proto . th dport` (a map with ports).
        ports: bool,
        /// The decision map's name.
        map: String,
    },
    /// No verdict: the next rule goes on (a rule of statements, such as a log rule). Written as
    /// nothing after the rule's expressions, or as `continue` in a rule that has none (nft has no
    /// empty rule).
    Continue,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Matches and statements, in order, all of which must hold for the verdict to apply.
    pub matches: Vec<Match>,
    /// The verdict ([`Verdict::Continue`]: none).
    pub verdict: Verdict,
    /// Ties the rule to its origin, e.g. `x/allow-web ingress[0]`.
    pub comment: Option<String>,
}

/// The netfilter hook a base chain is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// `forward`: traffic routed through the node (pod to pod, pod to the outside).
    Forward,
    /// `input`: traffic addressed to the node itself.
    Input,
}

impl Hook {
    /// The nft keyword.
    pub fn as_nft(self) -> &'static str {
        match self {
            Hook::Forward => "forward",
            Hook::Input => "input",
        }
    }
}

/// Where a base chain is attached: `type filter hook HOOK priority filter + PRIORITY; policy
/// accept;`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    /// The hook.
    pub hook: Hook,
    /// Offset from the `filter` priority on that hook.
    pub priority: i32,
}

impl BaseChain {
    /// A base chain on the forward hook.
    pub const fn forward(priority: i32) -> Self {
        Self {
            hook: Hook::Forward,
            priority,
        }
    }
}

/// A chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Set for base chains, attached to a hook.
    pub base: Option<BaseChain>,
    /// Rules, in order.
    pub rules: Vec<Rule>,
}

/// A named counter of the table: `counter NAME { comment "..."; }`.
///
/// Its packet and byte counts are kernel state, not part of the model: they start at 0 when the
/// counter is added, grow with every packet a `counter name "NAME"` statement sees, and are lost
/// only when the counter (or the table) is deleted. They are read with
/// `nft -j list counters table inet nftpolicy` ([`json::parse_counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Counter {
    /// What the counter counts (a policy rule, a drop point); `None`: no comment.
    pub comment: Option<String>,
}

/// The values of a named counter, as the kernel lists them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CounterValue {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (whole packets, from the network header).
    pub bytes: u64,
}

/// The longest log prefix nft stores, in bytes.
pub const MAX_LOG_PREFIX_LEN: usize = 127;

/// The whole `inet nftpolicy` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Named sets, by name.
    pub sets: BTreeMap<String, Set>,
    /// Verdict maps, by name.
    pub maps: BTreeMap<String, VerdictMap>,
    /// Decision maps, by name (sets, verdict maps and decision maps share one namespace in nft).
    pub decision_maps: BTreeMap<String, DecisionMap>,
    /// Named counters, by name. Counters have a namespace of their own: a counter may have the name
    /// of a set, a map or a chain (as a drop point's counter has its chain's).
    pub counters: BTreeMap<String, Counter>,
    /// Chains, by name.
    pub chains: BTreeMap<String, Chain>,
}

impl Ruleset {
    /// Base chains ordered by hook, then priority, then name: on each hook, the order the kernel
    /// runs them in.
    pub fn base_chains(&self) -> Vec<(&str, &Chain)> {
        let mut base: Vec<(&str, &Chain)> = self
            .chains
            .iter()
            .filter(|(_, c)| c.base.is_some())
            .map(|(n, c)| (n.as_str(), c))
            .collect();
        base.sort_by_key(|(n, c)| (c.base.map(|b| (b.hook, b.priority)), *n));
        base
    }

    /// The number of rules in all chains.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }

    /// The number of elements in all sets and maps.
    pub fn element_count(&self) -> usize {
        self.sets.values().map(|s| s.elements.len()).sum::<usize>()
            + self.maps.values().map(|m| m.elements.len()).sum::<usize>()
            + self
                .decision_maps
                .values()
                .map(|m| m.elements.len())
                .sum::<usize>()
    }
}

/// A small ruleset with every construct of decision maps, shared by the unit tests of the nft
/// modules: [`example::TEXT`] is its text and [`example::LISTING`] nft 1.0.6's listing of it, both
/// checked by hand against what nft loads and lists.
#[cfg(test)]
pub(crate) mod example {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A key `first-last`, with ports when given.
    pub(crate) fn key(first: &str, last: &str, ports: Option<(Protocol, u16, u16)>) -> DecisionKey {
        DecisionKey {
            first: ip(first),
            last: ip(last),
            ports,
        }
    }

    pub(crate) fn decision(verdict: DecisionVerdict, comment: Option<&str>) -> Decision {
        Decision {
            verdict,
            comment: comment.map(str::to_string),
        }
    }

    /// `table inet nftpolicy` with four decision maps, an input-hook base chain and a combination
    /// chain that looks packets up in them.
    pub(crate) fn ruleset() -> Ruleset {
        use DecisionVerdict::{Accept, Drop, Return};
        use Protocol::{Sctp, Tcp, Udp};
        let mut r = Ruleset::default();
        r.decision_maps.insert(
            "d_any_v4".into(),
            DecisionMap {
                family: Family::V4,
                ports: false,
                elements: [
                    (
                        key("10.0.0.0", "10.255.255.255", None),
                        decision(Drop, None),
                    ),
                    (
                        key("192.168.1.1", "192.168.1.1", None),
                        decision(Return, Some("x")),
                    ),
                    (
                        key("200.0.0.0", "255.255.255.255", None),
                        decision(Accept, None),
                    ),
                ]
                .into(),
            },
        );
        r.decision_maps.insert(
            "d_any_v6".into(),
            DecisionMap {
                family: Family::V6,
                ports: false,
                elements: [
                    (
                        key("fd00::", "fd00::ffff:ffff:ffff:ffff", None),
                        decision(Drop, None),
                    ),
                    (key("fd01::1", "fd01::1", None), decision(Return, Some("c"))),
                    (key("fd02::3", "fd02::9", None), decision(Accept, None)),
                ]
                .into(),
            },
        );
        r.decision_maps.insert(
            "d_ports_v4".into(),
            DecisionMap {
                family: Family::V4,
                ports: true,
                elements: [
                    (
                        key("0.0.0.0", "255.255.255.255", Some((Sctp, 0, 65535))),
                        decision(Accept, None),
                    ),
                    (
                        key("10.0.0.0", "10.255.255.255", Some((Udp, 53, 60))),
                        decision(Drop, None),
                    ),
                    (
                        key("10.244.1.5", "10.244.1.5", Some((Tcp, 80, 80))),
                        decision(Accept, Some("a/b ingress[0]")),
                    ),
                    (
                        key("10.244.1.5", "10.244.1.5", Some((Udp, 0, 0))),
                        decision(Drop, Some("")),
                    ),
                    (
                        key("10.244.1.6", "10.244.1.9", Some((Tcp, 1, 65535))),
                        decision(Return, None),
                    ),
                ]
                .into(),
            },
        );
        r.decision_maps.insert(
            "d_ports_v6".into(),
            DecisionMap {
                family: Family::V6,
                ports: true,
                elements: BTreeMap::new(),
            },
        );
        let rule = |matches: Vec<Match>, verdict: Verdict| Rule {
            matches,
            verdict,
            comment: None,
        };
        r.chains.insert(
            "node".into(),
            Chain {
                base: Some(BaseChain {
                    hook: Hook::Input,
                    priority: 0,
                }),
                rules: vec![
                    rule(vec![Match::CtEstablishedOrRelated], Verdict::Accept),
                    rule(vec![], Verdict::Jump("comb".into())),
                ],
            },
        );
        let lookup = |family, field, ports: bool, map: &str| {
            rule(
                vec![Match::L4ProtoWithPorts { negated: !ports }],
                Verdict::DecisionVmap {
                    family,
                    field,
                    ports,
                    map: map.into(),
                },
            )
        };
        r.chains.insert(
            "comb".into(),
            Chain {
                base: None,
                rules: vec![
                    lookup(Family::V4, AddrField::Saddr, true, "d_ports_v4"),
                    lookup(Family::V4, AddrField::Saddr, false, "d_any_v4"),
                    lookup(Family::V6, AddrField::Daddr, true, "d_ports_v6"),
                    lookup(Family::V6, AddrField::Daddr, false, "d_any_v6"),
                    rule(vec![], Verdict::Return),
                ],
            },
        );
        r
    }

    /// `table inet nftpolicy` with named counters (one named like a chain), a rule that counts and
    /// accepts, a log rule without verdict, a rule without any expression but `continue`, and a
    /// counter ahead of a match.
    pub(crate) fn counted() -> Ruleset {
        let mut r = Ruleset::default();
        r.counters.insert(
            "comb".into(),
            Counter {
                comment: Some("isolation of comb".into()),
            },
        );
        r.counters
            .insert("np_a_0".into(), Counter { comment: None });
        r.counters.insert(
            "spare".into(),
            Counter {
                comment: Some(String::new()),
            },
        );
        let rule = |matches: Vec<Match>, verdict: Verdict, comment: Option<&str>| Rule {
            matches,
            verdict,
            comment: comment.map(str::to_string),
        };
        r.chains.insert(
            "node".into(),
            Chain {
                base: Some(BaseChain {
                    hook: Hook::Input,
                    priority: 0,
                }),
                rules: vec![
                    rule(vec![Match::CtEstablishedOrRelated], Verdict::Accept, None),
                    rule(
                        vec![
                            Match::Prefix {
                                field: AddrField::Saddr,
                                negated: false,
                                cidr: "10.0.1.0/24".parse().unwrap(),
                            },
                            Match::Counter("np_a_0".into()),
                        ],
                        Verdict::Accept,
                        Some("a/b ingress[0]"),
                    ),
                    rule(
                        vec![
                            Match::Counter("np_a_0".into()),
                            Match::Prefix {
                                field: AddrField::Saddr,
                                negated: false,
                                cidr: "10.0.2.0/24".parse().unwrap(),
                            },
                        ],
                        Verdict::Return,
                        None,
                    ),
                    rule(vec![], Verdict::Jump("comb".into()), None),
                ],
            },
        );
        r.chains.insert(
            "comb".into(),
            Chain {
                base: None,
                rules: vec![
                    rule(vec![], Verdict::Continue, Some("nothing")),
                    rule(
                        vec![
                            Match::Limit {
                                rate: 10,
                                burst: 20,
                            },
                            Match::Log {
                                group: 7,
                                prefix: "comb".into(),
                            },
                        ],
                        Verdict::Continue,
                        None,
                    ),
                    rule(vec![Match::Counter("comb".into())], Verdict::Drop, None),
                ],
            },
        );
        r
    }

    /// What `counted().render_table()` must print: loaded with `nft -f`, nft 1.0.6 lists it back
    /// in these same forms (and a `packets 0 bytes 0` line in each counter).
    pub(crate) const COUNTED_TEXT: &str = r#"table inet nftpolicy {
	counter comb {
		comment "isolation of comb"
	}
	counter np_a_0 {
	}
	counter spare {
		comment ""
	}
	chain node {
		type filter hook input priority filter; policy accept;
		ct state established,related accept
		ip saddr 10.0.1.0/24 counter name "np_a_0" accept comment "a/b ingress[0]"
		counter name "np_a_0" ip saddr 10.0.2.0/24 return
		jump comb
	}
	chain comb {
		continue comment "nothing"
		limit rate 10/second burst 20 packets log prefix "comb" group 7
		counter name "comb" drop
	}
}
"#;

    /// `nft -j list table inet nftpolicy` after loading [`COUNTED_TEXT`], as nft 1.0.6 printed it.
    pub(crate) const COUNTED_LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "nftpolicy", "handle": 7}}, {"counter": {"family": "inet", "name": "comb", "table": "nftpolicy", "handle": 3, "comment": "isolation of comb", "packets": 0, "bytes": 0}}, {"counter": {"family": "inet", "name": "np_a_0", "table": "nftpolicy", "handle": 4, "packets": 0, "bytes": 0}}, {"counter": {"family": "inet", "name": "spare", "table": "nftpolicy", "handle": 5, "comment": "", "packets": 0, "bytes": 0}}, {"chain": {"family": "inet", "table": "nftpolicy", "name": "node", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}, {"chain": {"family": "inet", "table": "nftpolicy", "name": "comb", "handle": 2}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "node", "handle": 6, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "node", "handle": 7, "comment": "a/b ingress[0]", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.1.0", "len": 24}}}}, {"counter": "np_a_0"}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "node", "handle": 8, "expr": [{"counter": "np_a_0"}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.0.2.0", "len": 24}}}}, {"return": null}]}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "node", "handle": 9, "expr": [{"jump": {"target": "comb"}}]}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "comb", "handle": 10, "comment": "nothing", "expr": [{"continue": null}]}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "comb", "handle": 11, "expr": [{"limit": {"rate": 10, "burst": 20, "per": "second"}}, {"log": {"prefix": "comb", "group": 7}}]}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "comb", "handle": 12, "expr": [{"counter": "comb"}, {"drop": null}]}}]}"#;

    /// What `ruleset().render_table()` must print. Loaded with `nft -f` (after `add table`,
    /// `delete table`), nft 1.0.6 lists it back in these same forms.
    pub(crate) const TEXT: &str = r#"table inet nftpolicy {
	map d_any_v4 {
		type ipv4_addr : verdict
		flags interval
		elements = {
			10.0.0.0/8 : drop,
			192.168.1.1 comment "x" : return,
			200.0.0.0-255.255.255.255 : accept
		}
	}
	map d_any_v6 {
		type ipv6_addr : verdict
		flags interval
		elements = {
			fd00::/64 : drop,
			fd01::1 comment "c" : return,
			fd02::3-fd02::9 : accept
		}
	}
	map d_ports_v4 {
		type ipv4_addr . inet_proto . inet_service : verdict
		flags interval
		elements = {
			0.0.0.0/0 . sctp . 0-65535 : accept,
			10.0.0.0/8 . udp . 53-60 : drop,
			10.244.1.5 . tcp . 80 comment "a/b ingress[0]" : accept,
			10.244.1.5 . udp . 0 comment "" : drop,
			10.244.1.6-10.244.1.9 . tcp . 1-65535 : return
		}
	}
	map d_ports_v6 {
		type ipv6_addr . inet_proto . inet_service : verdict
		flags interval
	}
	chain node {
		type filter hook input priority filter; policy accept;
		ct state established,related accept
		jump comb
	}
	chain comb {
		meta l4proto { tcp, udp, sctp } ip saddr . meta l4proto . th dport vmap @d_ports_v4
		meta l4proto != { tcp, udp, sctp } ip saddr vmap @d_any_v4
		meta l4proto { tcp, udp, sctp } ip6 daddr . meta l4proto . th dport vmap @d_ports_v6
		meta l4proto != { tcp, udp, sctp } ip6 daddr vmap @d_any_v6
		return
	}
}
"#;

    /// `nft -j list table inet nftpolicy` after loading [`TEXT`], as nft 1.0.6 printed it.
    pub(crate) const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "nftpolicy", "handle": 2}}, {"map": {"family": "inet", "name": "d_any_v4", "table": "nftpolicy", "type": "ipv4_addr", "handle": 3, "map": "verdict", "flags": ["interval"], "elem": [[{"prefix": {"addr": "10.0.0.0", "len": 8}}, {"drop": null}], [{"elem": {"val": "192.168.1.1", "comment": "x"}}, {"return": null}], [{"range": ["200.0.0.0", "255.255.255.255"]}, {"accept": null}]]}}, {"map": {"family": "inet", "name": "d_any_v6", "table": "nftpolicy", "type": "ipv6_addr", "handle": 4, "map": "verdict", "flags": ["interval"], "elem": [[{"prefix": {"addr": "fd00::", "len": 64}}, {"drop": null}], [{"elem": {"val": "fd01::1", "comment": "c"}}, {"return": null}], [{"range": ["fd02::3", "fd02::9"]}, {"accept": null}]]}}, {"map": {"family": "inet", "name": "d_ports_v4", "table": "nftpolicy", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 5, "map": "verdict", "flags": ["interval"], "elem": [[{"concat": [{"prefix": {"addr": "0.0.0.0", "len": 0}}, "sctp", {"range": [0, 65535]}]}, {"accept": null}], [{"concat": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, "udp", {"range": [53, 60]}]}, {"drop": null}], [{"elem": {"val": {"concat": ["10.244.1.5", "tcp", 80]}, "comment": "a/b ingress[0]"}}, {"accept": null}], [{"elem": {"val": {"concat": ["10.244.1.5", "udp", 0]}, "comment": ""}}, {"drop": null}], [{"concat": [{"range": ["10.244.1.6", "10.244.1.9"]}, "tcp", {"range": [1, 65535]}]}, {"return": null}]]}}, {"map": {"family": "inet", "name": "d_ports_v6", "table": "nftpolicy", "type": ["ipv6_addr", "inet_proto", "inet_service"], "handle": 6, "map": "verdict", "flags": ["interval"]}}, {"chain": {"family": "inet", "table": "nftpolicy", "name": "node", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}, {"chain": {"family": "inet", "table": "nftpolicy", "name": "comb", "handle": 2}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "node", "handle": 7, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "node", "handle": 8, "expr": [{"jump": {"target": "comb"}}]}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "comb", "handle": 10, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp", "sctp"]}}}, {"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "saddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@d_ports_v4"}}]}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "comb", "handle": 12, "expr": [{"match": {"op": "!=", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp", "sctp"]}}}, {"vmap": {"key": {"payload": {"protocol": "ip", "field": "saddr"}}, "data": "@d_any_v4"}}]}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "comb", "handle": 14, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp", "sctp"]}}}, {"vmap": {"key": {"concat": [{"payload": {"protocol": "ip6", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@d_ports_v6"}}]}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "comb", "handle": 16, "expr": [{"match": {"op": "!=", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp", "sctp"]}}}, {"vmap": {"key": {"payload": {"protocol": "ip6", "field": "daddr"}}, "data": "@d_any_v6"}}]}}, {"rule": {"family": "inet", "table": "nftpolicy", "chain": "comb", "handle": 17, "expr": [{"return": null}]}}]}"#;
}
