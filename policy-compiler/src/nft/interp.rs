//! An interpreter for [`Ruleset`]: the verdict a node's hooks give a packet, without a kernel.
//!
//! It follows nftables semantics for what the model can express: a packet addressed to the node
//! itself ([`Packet::to_node`]) goes through the base chains on the input hook, any other through
//! those on the forward hook (the kernel never shows one packet to both); on a hook, base chains run
//! in priority order; `accept` ends only the current base chain; `drop` is final; `jump` returns to
//! the caller when the called chain ends without a verdict or with `return`; a base chain that ends,
//! or returns, accepts (policy accept). A decision map lookup gives the verdict of the one element
//! that holds the packet, or no verdict at all.
//!
//! A rule's expressions are evaluated in order up to the first that does not hold. Statements hold:
//! a counter counts the packet ([`Outcome::counters`]), a log logs it ([`Outcome::logged`]) and a
//! limit lets it through (the interpreter judges one packet, always under the rate). A rule
//! without verdict ([`Verdict::Continue`]) lets the next rule go on.

use std::net::IpAddr;

use super::{AddrField, DecisionVerdict, Hook, Match, Ruleset, SetElement, Verdict};
use crate::cidr::Family;
use crate::model::Protocol;

/// A packet as a node's hooks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// The transport protocol and destination port for TCP, UDP and SCTP; `None` for a protocol
    /// without ports (ICMP, ICMPv6, ...).
    pub transport: Option<(Protocol, u16)>,
    /// Whether the packet belongs to an established (or related) connection.
    pub established: bool,
    /// Whether the destination is an address of this node (a pod reaching its own node's address,
    /// e.g. a node peer): the input hook judges the packet, and the forward hook never sees it.
    /// `false` for traffic the node routes (pod to pod, pod to the outside).
    pub to_node: bool,
}

impl Packet {
    /// The hook whose base chains judge the packet.
    pub fn hook(&self) -> Hook {
        if self.to_node {
            Hook::Input
        } else {
            Hook::Forward
        }
    }
}

/// The outcome of evaluating a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the packet passes the hook.
    pub accepted: bool,
    /// The rules that decided, as `chain: rule` lines, in evaluation order.
    pub trace: Vec<String>,
    /// How many rules the hook tried (every rule whose matches were evaluated, in every chain the
    /// packet went through): the per-packet cost of the ruleset for this packet.
    pub rules_tried: usize,
    /// The named counters that counted the packet, in the order it crossed them (a counter crossed
    /// twice is listed twice).
    pub counters: Vec<String>,
    /// The prefixes the packet was logged with, in order.
    pub logged: Vec<String>,
}

/// A ruleset the interpreter cannot evaluate (a dangling reference or a jump loop).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    /// A rule refers to a chain, set or map that does not exist.
    #[error("chain {chain}: reference to missing {what} {name}")]
    Missing {
        /// The chain holding the rule.
        chain: String,
        /// `chain`, `set`, `map`, `decision map` or `counter`.
        what: &'static str,
        /// The missing name.
        name: String,
    },
    /// Jumps nest deeper than nft allows.
    #[error("jumps nest deeper than 16 at chain {0}")]
    TooDeep(String),
    /// A decision map lookup whose key is not the map's (nft refuses to load it).
    #[error("chain {chain}: the lookup's key does not match decision map {map}")]
    KeyMismatch {
        /// The chain holding the rule.
        chain: String,
        /// The map.
        map: String,
    },
    /// More than one element of a decision map holds the packet: the kernel's choice between them
    /// is unspecified.
    #[error("decision map {map}: elements {elements} overlap")]
    Ambiguous {
        /// The map.
        map: String,
        /// The elements that hold the packet.
        elements: String,
    },
}

enum Flow {
    Continue,
    Accept,
    Drop,
    Return,
}

fn packet_family(p: &Packet) -> Family {
    Family::of(&p.src)
}

fn addr(p: &Packet, field: AddrField) -> IpAddr {
    match field {
        AddrField::Saddr => p.src,
        AddrField::Daddr => p.dst,
    }
}

struct Interp<'a> {
    ruleset: &'a Ruleset,
    packet: &'a Packet,
    trace: Vec<String>,
    rules_tried: usize,
    counters: Vec<String>,
    logged: Vec<String>,
}

impl Interp<'_> {
    /// Whether an expression holds; a statement acts (counts, logs) and holds.
    fn holds(&mut self, chain: &str, m: &Match) -> Result<bool, InterpError> {
        match m {
            Match::Counter(name) => {
                if !self.ruleset.counters.contains_key(name) {
                    return Err(InterpError::Missing {
                        chain: chain.to_string(),
                        what: "counter",
                        name: name.clone(),
                    });
                }
                self.counters.push(name.clone());
                Ok(true)
            }
            // One packet at a time is always under the rate.
            Match::Limit { .. } => Ok(true),
            Match::Log { prefix, .. } => {
                self.logged.push(prefix.clone());
                Ok(true)
            }
            _ => self.matches(chain, m),
        }
    }

    fn matches(&self, chain: &str, m: &Match) -> Result<bool, InterpError> {
        let p = self.packet;
        let family = packet_family(p);
        let set_has = |name: &str, element: SetElement| -> Result<bool, InterpError> {
            let set = self
                .ruleset
                .sets
                .get(name)
                .ok_or_else(|| InterpError::Missing {
                    chain: chain.to_string(),
                    what: "set",
                    name: name.to_string(),
                })?;
            Ok(set.elements.contains(&element))
        };
        Ok(match m {
            Match::CtEstablishedOrRelated => p.established,
            Match::Prefix {
                field,
                negated,
                cidr,
            } => cidr.family() == family && cidr.contains(&addr(p, *field)) != *negated,
            Match::InSet {
                family: f,
                field,
                set,
            } => *f == family && set_has(set, SetElement::Addr(addr(p, *field)))?,
            Match::L4Proto(proto) => matches!(p.transport, Some((q, _)) if q == *proto),
            Match::L4ProtoWithPorts { negated } => p.transport.is_some() != *negated,
            Match::Dport { protocol, ports } => match p.transport {
                Some((q, port)) => {
                    q == *protocol && ports.iter().any(|(a, b)| (*a..=*b).contains(&port))
                }
                None => false,
            },
            Match::DaddrProtoPortInSet { family: f, set } => match p.transport {
                Some((q, port)) => {
                    *f == family && set_has(set, SetElement::AddrProtoPort(p.dst, q, port))?
                }
                None => false,
            },
            // Statements, handled by `holds`.
            Match::Counter(_) | Match::Limit { .. } | Match::Log { .. } => true,
        })
    }

    fn run_chain(&mut self, name: &str, depth: usize) -> Result<Flow, InterpError> {
        if depth > 16 {
            return Err(InterpError::TooDeep(name.to_string()));
        }
        let chain = self
            .ruleset
            .chains
            .get(name)
            .ok_or_else(|| InterpError::Missing {
                chain: name.to_string(),
                what: "chain",
                name: name.to_string(),
            })?;
        for rule in &chain.rules {
            self.rules_tried += 1;
            let mut all = true;
            for m in &rule.matches {
                if !self.holds(name, m)? {
                    all = false;
                    break;
                }
            }
            if !all {
                continue;
            }
            let target = match &rule.verdict {
                Verdict::Continue => None,
                Verdict::Accept => {
                    self.trace.push(format!("{name}: {rule}"));
                    return Ok(Flow::Accept);
                }
                Verdict::Drop => {
                    self.trace.push(format!("{name}: {rule}"));
                    return Ok(Flow::Drop);
                }
                Verdict::Return => {
                    self.trace.push(format!("{name}: {rule}"));
                    return Ok(Flow::Return);
                }
                Verdict::DecisionVmap {
                    family,
                    field,
                    ports,
                    map,
                } => {
                    let dmap = self.ruleset.decision_maps.get(map).ok_or_else(|| {
                        InterpError::Missing {
                            chain: name.to_string(),
                            what: "decision map",
                            name: map.clone(),
                        }
                    })?;
                    if dmap.family != *family || dmap.ports != *ports {
                        return Err(InterpError::KeyMismatch {
                            chain: name.to_string(),
                            map: map.clone(),
                        });
                    }
                    if *family != packet_family(self.packet) {
                        continue;
                    }
                    let addr = addr(self.packet, *field);
                    let transport = if *ports { self.packet.transport } else { None };
                    if *ports && transport.is_none() {
                        continue;
                    }
                    let mut holding = dmap
                        .elements
                        .iter()
                        .filter(|(k, _)| k.holds(&addr, transport));
                    let Some((key, decision)) = holding.next() else {
                        continue;
                    };
                    if let Some((other, _)) = holding.next() {
                        return Err(InterpError::Ambiguous {
                            map: map.clone(),
                            elements: format!("{key}, {other}"),
                        });
                    }
                    self.trace.push(format!(
                        "{name}: {rule} -> {}",
                        super::render::decision_element(key, decision)
                    ));
                    match &decision.verdict {
                        DecisionVerdict::Accept => return Ok(Flow::Accept),
                        DecisionVerdict::Drop => return Ok(Flow::Drop),
                        DecisionVerdict::Return => return Ok(Flow::Return),
                        DecisionVerdict::Jump(target) => Some(target.clone()),
                    }
                }
                Verdict::Jump(target) => Some(target.clone()),
                Verdict::Vmap { family, field, map } => {
                    let vmap = self
                        .ruleset
                        .maps
                        .get(map)
                        .ok_or_else(|| InterpError::Missing {
                            chain: name.to_string(),
                            what: "map",
                            name: map.clone(),
                        })?;
                    if *family != packet_family(self.packet) {
                        None
                    } else {
                        vmap.elements.get(&addr(self.packet, *field)).cloned()
                    }
                }
            };
            if let Some(target) = target {
                if !self.ruleset.chains.contains_key(&target) {
                    return Err(InterpError::Missing {
                        chain: name.to_string(),
                        what: "chain",
                        name: target,
                    });
                }
                if matches!(rule.verdict, Verdict::Jump(_)) {
                    self.trace.push(format!("{name}: {rule}"));
                } else if matches!(rule.verdict, Verdict::DecisionVmap { .. }) {
                    // Traced with the element above.
                } else {
                    self.trace.push(format!("{name}: {rule} -> jump {target}"));
                }
                match self.run_chain(&target, depth + 1)? {
                    Flow::Continue | Flow::Return => {}
                    decided => return Ok(decided),
                }
            }
        }
        Ok(Flow::Continue)
    }
}

/// Evaluates a packet through every base chain of the ruleset on the packet's hook
/// ([`Packet::hook`]).
pub fn evaluate(ruleset: &Ruleset, packet: &Packet) -> Result<Outcome, InterpError> {
    let mut interp = Interp {
        ruleset,
        packet,
        trace: Vec::new(),
        rules_tried: 0,
        counters: Vec::new(),
        logged: Vec::new(),
    };
    let hook = packet.hook();
    let mut accepted = true;
    for (name, _) in ruleset
        .base_chains()
        .into_iter()
        .filter(|(_, c)| c.base.is_some_and(|b| b.hook == hook))
    {
        if let Flow::Drop = interp.run_chain(name, 0)? {
            accepted = false;
            break;
        }
    }
    Ok(Outcome {
        accepted,
        trace: interp.trace,
        rules_tried: interp.rules_tried,
        counters: interp.counters,
        logged: interp.logged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::{BaseChain, Chain, Rule, VerdictMap};

    fn rule(matches: Vec<Match>, verdict: Verdict) -> Rule {
        Rule {
            matches,
            verdict,
            comment: None,
        }
    }

    /// `egress`: established accept, then `ip saddr vmap @egress_v4` sending 10.0.0.1 to `pod`, which
    /// accepts TCP 80 and drops the rest.
    fn ruleset() -> Ruleset {
        let mut r = Ruleset::default();
        r.maps.insert(
            "egress_v4".into(),
            VerdictMap {
                family: Family::V4,
                elements: [("10.0.0.1".parse().unwrap(), "pod".to_string())].into(),
            },
        );
        r.chains.insert(
            "egress".into(),
            Chain {
                base: Some(BaseChain::forward(0)),
                rules: vec![
                    rule(vec![Match::CtEstablishedOrRelated], Verdict::Accept),
                    rule(
                        vec![],
                        Verdict::Vmap {
                            family: Family::V4,
                            field: AddrField::Saddr,
                            map: "egress_v4".into(),
                        },
                    ),
                ],
            },
        );
        r.chains.insert(
            "pod".into(),
            Chain {
                base: None,
                rules: vec![
                    rule(
                        vec![Match::Dport {
                            protocol: Protocol::Tcp,
                            ports: vec![(80, 80)],
                        }],
                        Verdict::Accept,
                    ),
                    rule(vec![], Verdict::Drop),
                ],
            },
        );
        r
    }

    fn packet(src: &str, dport: u16, established: bool) -> Packet {
        Packet {
            src: src.parse().unwrap(),
            dst: "10.0.9.9".parse().unwrap(),
            transport: Some((Protocol::Tcp, dport)),
            established,
            to_node: false,
        }
    }

    #[test]
    fn verdicts_and_the_rules_each_packet_tries() {
        let r = ruleset();
        for (p, accepted, tried) in [
            // Established: the first rule decides.
            (packet("10.0.0.1", 81, true), true, 1),
            // Not in the map: both base-chain rules, then the chain's policy.
            (packet("10.0.0.2", 81, false), true, 2),
            // In the map: the pod's chain too, up to the rule that decides.
            (packet("10.0.0.1", 80, false), true, 3),
            (packet("10.0.0.1", 81, false), false, 4),
        ] {
            let outcome = evaluate(&r, &p).unwrap();
            assert_eq!(outcome.accepted, accepted, "{p:?}");
            assert_eq!(outcome.rules_tried, tried, "{p:?}");
        }
    }
}

#[cfg(test)]
mod decision_tests {
    use super::*;
    use crate::nft::example::{self, decision, key};
    use crate::nft::{BaseChain, Chain, Rule};

    fn packet(src: &str, dst: &str, transport: Option<(Protocol, u16)>) -> Packet {
        Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            transport,
            established: false,
            to_node: true,
        }
    }

    /// `(accepted, rules tried, last trace line)` for a packet to the node.
    fn judge(r: &Ruleset, p: &Packet) -> (bool, usize, String) {
        let outcome = evaluate(r, p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        let last = outcome.trace.last().cloned().unwrap_or_default();
        (outcome.accepted, outcome.rules_tried, last)
    }

    #[test]
    fn decision_maps_give_the_verdict_of_the_element_holding_the_packet() {
        use Protocol::{Sctp, Tcp, Udp};
        let r = example::ruleset();
        let to = "10.0.9.9";
        for (p, accepted, tried, last) in [
            // The node's chain: established accept, jump comb; then the lookups in order.
            (
                packet("10.244.1.5", to, Some((Tcp, 80))),
                true,
                3,
                "comb: meta l4proto { tcp, udp, sctp } ip saddr . meta l4proto . th dport vmap @d_ports_v4 -> 10.244.1.5 . tcp . 80 comment \"a/b ingress[0]\" : accept",
            ),
            (
                packet("10.244.1.5", to, Some((Udp, 0))),
                false,
                3,
                "comb: meta l4proto { tcp, udp, sctp } ip saddr . meta l4proto . th dport vmap @d_ports_v4 -> 10.244.1.5 . udp . 0 comment \"\" : drop",
            ),
            // `return` from the element: back in the node's chain, which ends: accept.
            (
                packet("10.244.1.7", to, Some((Tcp, 443))),
                true,
                3,
                "comb: meta l4proto { tcp, udp, sctp } ip saddr . meta l4proto . th dport vmap @d_ports_v4 -> 10.244.1.6-10.244.1.9 . tcp . 1-65535 : return",
            ),
            (
                packet("10.1.2.3", to, Some((Udp, 60))),
                false,
                3,
                "comb: meta l4proto { tcp, udp, sctp } ip saddr . meta l4proto . th dport vmap @d_ports_v4 -> 10.0.0.0/8 . udp . 53-60 : drop",
            ),
            (
                packet("1.2.3.4", to, Some((Sctp, 9))),
                true,
                3,
                "comb: meta l4proto { tcp, udp, sctp } ip saddr . meta l4proto . th dport vmap @d_ports_v4 -> 0.0.0.0/0 . sctp . 0-65535 : accept",
            ),
            // No element: every rule of comb, down to its `return`.
            (
                packet("10.1.2.3", to, Some((Udp, 61))),
                true,
                7,
                "comb: return",
            ),
            // Without ports, the address-only map decides.
            (
                packet("10.1.2.3", to, None),
                false,
                4,
                "comb: meta l4proto != { tcp, udp, sctp } ip saddr vmap @d_any_v4 -> 10.0.0.0/8 : drop",
            ),
            (
                packet("192.168.1.1", to, None),
                true,
                4,
                "comb: meta l4proto != { tcp, udp, sctp } ip saddr vmap @d_any_v4 -> 192.168.1.1 comment \"x\" : return",
            ),
            (
                packet("255.255.255.255", to, None),
                true,
                4,
                "comb: meta l4proto != { tcp, udp, sctp } ip saddr vmap @d_any_v4 -> 200.0.0.0-255.255.255.255 : accept",
            ),
            (packet("172.16.0.1", to, None), true, 7, "comb: return"),
            // IPv6: by destination.
            (
                packet("fd99::1", "fd00::5", None),
                false,
                6,
                "comb: meta l4proto != { tcp, udp, sctp } ip6 daddr vmap @d_any_v6 -> fd00::/64 : drop",
            ),
            (
                packet("fd99::1", "fd00::5", Some((Tcp, 80))),
                true,
                7,
                "comb: return",
            ),
        ] {
            assert_eq!(judge(&r, &p), (accepted, tried, last.to_string()), "{p:?}");
        }
        // Established connections pass at the first rule; the forward hook has no chain here.
        let mut p = packet("10.1.2.3", to, None);
        p.established = true;
        assert_eq!(
            judge(&r, &p),
            (true, 1, "node: ct state established,related accept".into())
        );
        p.established = false;
        p.to_node = false;
        assert_eq!(p.hook(), Hook::Forward);
        assert_eq!(judge(&r, &p), (true, 0, String::new()));
    }

    #[test]
    fn the_input_hook_judges_only_packets_to_the_node() {
        let mut r = Ruleset::default();
        let drop_all = |hook| Chain {
            base: Some(BaseChain { hook, priority: 0 }),
            rules: vec![Rule {
                matches: vec![],
                verdict: Verdict::Drop,
                comment: Some(format!("{hook:?}")),
            }],
        };
        r.chains.insert("node".into(), drop_all(Hook::Input));
        let mut p = packet("10.0.0.1", "10.0.0.2", None);
        assert_eq!(
            judge(&r, &p),
            (false, 1, "node: drop comment \"Input\"".into())
        );
        p.to_node = false;
        assert_eq!(judge(&r, &p), (true, 0, String::new()));
        r.chains.insert("fwd".into(), drop_all(Hook::Forward));
        assert_eq!(
            judge(&r, &p),
            (false, 1, "fwd: drop comment \"Forward\"".into())
        );
    }

    #[test]
    fn return_ends_a_base_chain_but_not_the_hook() {
        let chain = |priority, rules: Vec<Verdict>| Chain {
            base: Some(BaseChain::forward(priority)),
            rules: rules
                .into_iter()
                .map(|verdict| Rule {
                    matches: vec![],
                    verdict,
                    comment: None,
                })
                .collect(),
        };
        let mut r = Ruleset::default();
        r.chains
            .insert("a".into(), chain(0, vec![Verdict::Return, Verdict::Drop]));
        let mut p = packet("10.0.0.1", "10.0.0.2", Some((Protocol::Tcp, 1)));
        p.to_node = false;
        assert_eq!(judge(&r, &p), (true, 1, "a: return".into()));
        r.chains.insert("b".into(), chain(1, vec![Verdict::Drop]));
        assert_eq!(judge(&r, &p), (false, 2, "b: drop".into()));
    }

    #[test]
    fn statements_count_and_log_the_packets_that_reach_them() {
        let r = example::counted();
        let judge = |src: &str, established: bool| {
            let mut p = packet(src, "10.0.9.9", Some((Protocol::Udp, 53)));
            p.established = established;
            let o = evaluate(&r, &p).unwrap_or_else(|e| panic!("{src}: {e}"));
            (o.accepted, o.rules_tried, o.counters, o.logged)
        };
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Counted by the rule that accepts it.
        assert_eq!(
            judge("10.0.1.5", false),
            (true, 2, names(&["np_a_0"]), names(&[]))
        );
        // Counted by the counter ahead of the match, which holds: return, the policy accepts.
        assert_eq!(
            judge("10.0.2.5", false),
            (true, 3, names(&["np_a_0"]), names(&[]))
        );
        // Counted ahead of a match that does not hold; then in comb, `continue` and the log rule
        // go on to the counted drop.
        assert_eq!(
            judge("10.9.9.9", false),
            (false, 7, names(&["np_a_0", "comb"]), names(&["comb"]))
        );
        assert_eq!(judge("10.9.9.9", true), (true, 1, names(&[]), names(&[])));
        // The trace shows the rules that decided, not the rules without verdict.
        let p = packet("10.9.9.9", "10.0.9.9", None);
        let trace = evaluate(&r, &p).unwrap().trace;
        assert_eq!(
            trace,
            names(&["node: jump comb", "comb: counter name \"comb\" drop"])
        );
        // A limit lets the packet through whatever its rate: one packet is under any.
        let mut slow = r.clone();
        slow.chains.get_mut("comb").unwrap().rules[1].matches[0] =
            Match::Limit { rate: 1, burst: 1 };
        assert_eq!(evaluate(&slow, &p).unwrap().logged, names(&["comb"]));
        // A counter that does not exist is an error, as nft refuses the rule.
        let mut missing = r.clone();
        missing.counters.remove("comb");
        assert_eq!(
            evaluate(&missing, &p),
            Err(InterpError::Missing {
                chain: "comb".into(),
                what: "counter",
                name: "comb".into()
            })
        );
    }

    #[test]
    fn overlapping_elements_and_mismatched_keys_are_errors() {
        let mut r = example::ruleset();
        r.decision_maps
            .get_mut("d_any_v4")
            .unwrap()
            .elements
            .insert(
                key("10.1.0.0", "10.1.0.255", None),
                decision(DecisionVerdict::Accept, None),
            );
        let p = packet("10.1.0.1", "10.0.0.1", None);
        assert_eq!(
            evaluate(&r, &p),
            Err(InterpError::Ambiguous {
                map: "d_any_v4".into(),
                elements: "10.0.0.0/8, 10.1.0.0/24".into()
            })
        );
        // Elsewhere in the map, lookups still work.
        assert!(
            !evaluate(&r, &packet("10.2.0.1", "10.0.0.1", None))
                .unwrap()
                .accepted
        );
        let mut r = example::ruleset();
        r.decision_maps.get_mut("d_any_v4").unwrap().ports = true;
        assert_eq!(
            evaluate(&r, &p),
            Err(InterpError::KeyMismatch {
                chain: "comb".into(),
                map: "d_any_v4".into()
            })
        );
    }
}
