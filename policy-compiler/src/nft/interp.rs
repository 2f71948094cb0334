//! An interpreter for [`Ruleset`]: the verdict the forward hook gives a packet, without a kernel.
//!
//! It follows nftables semantics for what the model can express: base chains run in priority order;
//! `accept` ends only the current base chain; `drop` is final; `jump` returns to the caller when the
//! called chain ends without a verdict; a base chain that ends accepts (policy accept).

use std::net::IpAddr;

use super::{AddrField, Match, Ruleset, SetElement, Verdict};
use crate::cidr::Family;
use crate::model::Protocol;

/// A packet as the forward hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub dport: u16,
    /// Whether the packet belongs to an established (or related) connection.
    pub established: bool,
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
}

/// A ruleset the interpreter cannot evaluate (a dangling reference or a jump loop).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpError {
    /// A rule refers to a chain, set or map that does not exist.
    #[error("chain {chain}: reference to missing {what} {name}")]
    Missing {
        /// The chain holding the rule.
        chain: String,
        /// `chain`, `set` or `map`.
        what: &'static str,
        /// The missing name.
        name: String,
    },
    /// Jumps nest deeper than nft allows.
    #[error("jumps nest deeper than 16 at chain {0}")]
    TooDeep(String),
}

enum Flow {
    Continue,
    Accept,
    Drop,
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
}

impl Interp<'_> {
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
            Match::L4Proto(proto) => p.protocol == *proto,
            Match::Dport { protocol, ports } => {
                p.protocol == *protocol && ports.iter().any(|(a, b)| (*a..=*b).contains(&p.dport))
            }
            Match::DaddrProtoPortInSet { family: f, set } => {
                *f == family && set_has(set, SetElement::AddrProtoPort(p.dst, p.protocol, p.dport))?
            }
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
                if !self.matches(name, m)? {
                    all = false;
                    break;
                }
            }
            if !all {
                continue;
            }
            let target = match &rule.verdict {
                Verdict::Accept => {
                    self.trace.push(format!("{name}: {rule}"));
                    return Ok(Flow::Accept);
                }
                Verdict::Drop => {
                    self.trace.push(format!("{name}: {rule}"));
                    return Ok(Flow::Drop);
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
                } else {
                    self.trace.push(format!("{name}: {rule} -> jump {target}"));
                }
                match self.run_chain(&target, depth + 1)? {
                    Flow::Continue => {}
                    decided => return Ok(decided),
                }
            }
        }
        Ok(Flow::Continue)
    }
}

/// Evaluates a packet through every base chain of the ruleset.
pub fn evaluate(ruleset: &Ruleset, packet: &Packet) -> Result<Outcome, InterpError> {
    let mut interp = Interp {
        ruleset,
        packet,
        trace: Vec::new(),
        rules_tried: 0,
    };
    for (name, _) in ruleset.base_chains() {
        if let Flow::Drop = interp.run_chain(name, 0)? {
            return Ok(Outcome {
                accepted: false,
                trace: interp.trace,
                rules_tried: interp.rules_tried,
            });
        }
    }
    Ok(Outcome {
        accepted: true,
        trace: interp.trace,
        rules_tried: interp.rules_tried,
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
                base: Some(BaseChain { priority: 0 }),
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
            protocol: Protocol::Tcp,
            dport,
            established,
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
