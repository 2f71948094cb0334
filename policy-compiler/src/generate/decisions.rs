//! Seeded random rulesets built around decision maps, for the tests of the nftables layer: its
//! text, its listing, its transactions and its interpreter.
//!
//! A ruleset has the shape a tiered policy compiles to: base chains on the forward and input hooks
//! jump to *combination chains*, each of which looks the packet up in its decision maps, one keyed
//! with protocol and port (`meta l4proto { tcp, udp, sctp } ip saddr . meta l4proto . th dport vmap
//! @…`) and one by address alone (`meta l4proto != { tcp, udp, sctp } ip saddr vmap @…`), and may
//! end in `return` or `drop`; a verdict map sends some addresses to combination chains as well, and
//! so may a decision map keyed by address whose elements jump.
//!
//! The names come from a small pool, and each map's elements are drawn mostly from a pool of
//! disjoint keys fixed by the map's name, so that the rulesets of two seeds share most of their
//! objects and elements and differ in the ways a diff must handle: elements added, removed, changed
//! in verdict or comment, or replaced by overlapping ones; maps and chains added, removed and
//! redefined; the input-hook chain present or not, rarely at another priority. Keys cover single
//! addresses, aligned prefixes (`/0` included), ranges that are not prefixes, ranges reaching the
//! last address, single ports and port ranges (`0`, `65535`, `0-65535`), in both families.
//!
//! Rules count into named counters as compiled rulesets do: a combination chain's final `drop`
//! into a counter named like the chain, often after a log rule without verdict (`limit rate …
//! log prefix "…" group …`), and jumps into counters of their own, sometimes ahead of their match;
//! spare counters nothing names come and go, one of them named like a map. A counter's comment is
//! mostly fixed by its name, so that most counters are shared by two seeds and some change comment;
//! comments and log prefixes range from nothing to what nft stores shortened or rewritten.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::Rng;
use crate::cidr::{from_u128, max_u128, Cidr, Family};
use crate::model::Protocol;
use crate::nft::{
    AddrField, BaseChain, Chain, Counter, Decision, DecisionKey, DecisionMap, DecisionVerdict,
    Hook, Match, Rule, Ruleset, Verdict, VerdictMap,
};

/// The combination chains a ruleset may hold: `(name, direction's address field)`.
const COMBINATIONS: [(&str, AddrField); 4] = [
    ("cnp_egress_0", AddrField::Saddr),
    ("cnp_egress_1", AddrField::Saddr),
    ("cnp_ingress_0", AddrField::Daddr),
    ("cnp_ingress_1", AddrField::Daddr),
];

/// Comments an element may carry, from nothing to what nft stores shortened.
fn comment(rng: &mut Rng) -> Option<String> {
    match rng.below(8) {
        0..=2 => None,
        3 => Some(String::new()),
        4 => Some(format!("x/cnp-{} ingress[{}]", rng.below(3), rng.below(3))),
        5 => Some(format!("a \"quoted\" rule {}", rng.below(2))),
        6 => Some(format!("ünïcødé {}", "é".repeat(70 + rng.below(3)))),
        _ => Some(format!("long {}", "x".repeat(120 + rng.below(20)))),
    }
}

fn verdict(rng: &mut Rng) -> DecisionVerdict {
    rng.pick(&[
        DecisionVerdict::Accept,
        DecisionVerdict::Drop,
        DecisionVerdict::Return,
    ])
    .clone()
}

/// A random address range of a family, mostly inside a small region so that ranges of different
/// draws meet.
fn addr_range(rng: &mut Rng, family: Family) -> (IpAddr, IpAddr) {
    let (base, bits): (u128, u32) = match family {
        Family::V4 => (u128::from(u32::from_be_bytes([10, 244, 0, 0])), 32),
        Family::V6 => (0xfd00_0010_0244_u128 << 80, 128),
    };
    let max = max_u128(family);
    let point = |rng: &mut Rng| base + (rng.next_u64() % 4096) as u128;
    let (first, last) = match rng.below(12) {
        0..=3 => {
            let a = point(rng);
            (a, a)
        }
        4..=6 => {
            let len = bits - 1 - rng.below(10) as u32;
            let (first, last) = Cidr::new(from_u128(family, point(rng)), len as u8).bounds();
            (first, last)
        }
        7 | 8 => {
            let a = point(rng);
            (a, a + 1 + (rng.next_u64() % 300) as u128)
        }
        9 => (0, max),
        10 => (max - (rng.next_u64() % 1000) as u128, max),
        _ => (0, (rng.next_u64() % 1000) as u128),
    };
    (from_u128(family, first), from_u128(family, last.min(max)))
}

fn ports(rng: &mut Rng) -> (Protocol, u16, u16) {
    let protocol = *rng.pick(&Protocol::ALL);
    let (lo, hi) = match rng.below(8) {
        0 => (0, 0),
        1 => (65535, 65535),
        2 => (0, 65535),
        3 => (1, 65535),
        4 => {
            let p = *rng.pick(&[53u16, 80, 443, 8080]);
            (p, p)
        }
        _ => {
            let lo = (rng.next_u64() % 2000) as u16;
            (lo, lo + (rng.next_u64() % 200) as u16)
        }
    };
    (protocol, lo, hi)
}

fn key(rng: &mut Rng, family: Family, with_ports: bool) -> DecisionKey {
    let (first, last) = addr_range(rng, family);
    DecisionKey {
        first,
        last,
        ports: with_ports.then(|| ports(rng)),
    }
}

/// A seed for a map's pool of keys, from its name and definition.
fn pool_seed(name: &str, family: Family, with_ports: bool) -> u64 {
    name.bytes().fold(
        0xcbf2_9ce4_8422_2325_u64 ^ u64::from(family.number()) ^ u64::from(with_ports),
        |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3),
    )
}

/// A decision map: about half of the map's pool of keys, and a few keys of this seed's own that
/// overlap none of those.
fn decision_map(rng: &mut Rng, name: &str, family: Family, with_ports: bool) -> DecisionMap {
    let mut pool = Rng::new(pool_seed(name, family, with_ports));
    let mut elements: BTreeMap<DecisionKey, Decision> = BTreeMap::new();
    let mut add = |k: DecisionKey, d: Decision| {
        if !elements.keys().any(|e| e.overlaps(&k)) {
            elements.insert(k, d);
        }
    };
    let random_decision = |rng: &mut Rng| Decision {
        verdict: verdict(rng),
        comment: comment(rng),
    };
    for _ in 0..10 {
        // The pool is drawn in a fixed order, so two seeds choose among the same keys, and most
        // often give them the pool's decision.
        let k = key(&mut pool, family, with_ports);
        let pooled = random_decision(&mut pool);
        if rng.one_in(2) {
            let d = if rng.one_in(3) {
                random_decision(rng)
            } else {
                pooled
            };
            add(k, d);
        }
    }
    for _ in 0..rng.below(4) {
        let k = key(rng, family, with_ports);
        let d = random_decision(rng);
        add(k, d);
    }
    DecisionMap {
        family,
        ports: with_ports,
        elements,
    }
}

/// A named counter, added to the ruleset: its comment is mostly the one fixed by its name.
fn counter(rng: &mut Rng, ruleset: &mut Ruleset, name: &str) -> Match {
    let mut pool = Rng::new(pool_seed(name, Family::V4, false) ^ 0x5eed);
    let pooled = comment(&mut pool);
    let comment = if rng.one_in(5) { comment(rng) } else { pooled };
    ruleset
        .counters
        .insert(name.to_string(), Counter { comment });
    Match::Counter(name.to_string())
}

/// The log rule before a drop point: `limit rate R/second burst B packets log prefix "P" group G`,
/// without verdict; the prefix is mostly the drop point's counter name.
fn log_rule(rng: &mut Rng, name: &str) -> Rule {
    let prefix = match rng.below(8) {
        0 => String::new(),
        1 => format!("a \"quoted\" ${name}"),
        2 => format!("{name}_{}", "é".repeat(70)),
        _ => name.to_string(),
    };
    rule(
        vec![
            Match::Limit {
                rate: *rng.pick(&[1, 10, 1000, u32::MAX]),
                burst: *rng.pick(&[1, 5, 20, u32::MAX]),
            },
            Match::Log {
                group: *rng.pick(&[0, 7, 100, u16::MAX]),
                prefix,
            },
        ],
        Verdict::Continue,
        rng.one_in(4).then(|| "deny log".to_string()),
    )
}

fn rule(matches: Vec<Match>, verdict: Verdict, comment: Option<String>) -> Rule {
    Rule {
        matches,
        verdict,
        comment,
    }
}

/// A combination chain and its decision maps.
fn combination(rng: &mut Rng, ruleset: &mut Ruleset, chain: &str, field: AddrField) {
    let mut rules = Vec::new();
    for family in [Family::V4, Family::V6] {
        if rng.one_in(5) {
            continue;
        }
        for with_ports in [true, false] {
            let name = format!(
                "{chain}_{}_{}",
                if with_ports { "ports" } else { "any" },
                family.suffix()
            );
            // Rarely, the same name with the other key: a redefined map.
            let keyed_with_ports = with_ports != rng.one_in(10);
            let map = decision_map(rng, &name, family, keyed_with_ports);
            rules.push(rule(
                vec![Match::L4ProtoWithPorts {
                    negated: !with_ports,
                }],
                Verdict::DecisionVmap {
                    family,
                    field,
                    ports: keyed_with_ports,
                    map: name.clone(),
                },
                None,
            ));
            ruleset.decision_maps.insert(name, map);
        }
    }
    match rng.below(5) {
        0 => rules.push(rule(vec![], Verdict::Return, Some("pass".into()))),
        1 => rules.push(rule(vec![], Verdict::Drop, Some(format!("{chain} deny")))),
        // A drop point: counted into the counter named like the chain, often logged first.
        2 | 3 => {
            if !rng.one_in(3) {
                rules.push(log_rule(rng, chain));
            }
            let count = counter(rng, ruleset, chain);
            rules.push(rule(vec![count], Verdict::Drop, None));
        }
        _ => {}
    }
    if rng.one_in(10) {
        // A rule of nothing but `continue`.
        rules.insert(0, rule(vec![], Verdict::Continue, Some("nothing".into())));
    }
    ruleset
        .chains
        .insert(chain.to_string(), Chain { base: None, rules });
}

/// A random ruleset with decision maps; the same seed gives the same ruleset.
pub fn ruleset(seed: u64) -> Ruleset {
    let mut rng = Rng::new(seed);
    let mut r = Ruleset::default();
    let present: Vec<(&str, AddrField)> = COMBINATIONS
        .iter()
        .copied()
        .filter(|_| !rng.one_in(4))
        .collect();
    for (chain, field) in &present {
        combination(&mut rng, &mut r, chain, *field);
    }
    let jumps = |field: AddrField, rng: &mut Rng, r: &mut Ruleset, base: &str| -> Vec<Rule> {
        present
            .iter()
            .filter(|(_, f)| *f == field)
            .map(|(chain, _)| {
                let mut matches = if rng.one_in(3) {
                    vec![Match::Prefix {
                        field,
                        negated: rng.one_in(2),
                        cidr: Cidr::new(IpAddr::from([10, 244, 0, 0]), 16),
                    }]
                } else {
                    vec![]
                };
                // Counted last, as the compiler does, or ahead of the match.
                match rng.below(4) {
                    0 => {
                        let count = counter(rng, r, &format!("{base}_{chain}"));
                        matches.push(count);
                    }
                    1 => {
                        let count = counter(rng, r, &format!("{base}_{chain}"));
                        matches.insert(0, count);
                    }
                    _ => {}
                }
                rule(matches, Verdict::Jump(chain.to_string()), None)
            })
            .collect()
    };
    let established = || rule(vec![Match::CtEstablishedOrRelated], Verdict::Accept, None);
    // A verdict map beside the decision maps: the same JSON shape reads back as either.
    let egress_chains: Vec<&str> = present
        .iter()
        .filter(|(_, f)| *f == AddrField::Saddr)
        .map(|(c, _)| *c)
        .collect();
    let mut egress_v4 = VerdictMap {
        family: Family::V4,
        elements: BTreeMap::new(),
    };
    if !egress_chains.is_empty() {
        for i in 0..rng.below(3) {
            let ip = IpAddr::from([10, 244, 9, i as u8 + rng.below(3) as u8 * 3]);
            let chain = rng.pick(&egress_chains).to_string();
            egress_v4.elements.insert(ip, chain);
        }
    }
    r.maps.insert("egress_v4".into(), egress_v4);
    // A decision map whose elements jump to combination chains (as a tier's peer classes do),
    // sometimes absent, so that a diff removes it together with the chains it jumps to.
    let peers = (!egress_chains.is_empty() && !rng.one_in(3)).then(|| {
        let mut map = decision_map(&mut rng, "egress_peers_v4", Family::V4, false);
        for decision in map.elements.values_mut() {
            if !rng.one_in(3) {
                decision.verdict = DecisionVerdict::Jump(rng.pick(&egress_chains).to_string());
            }
        }
        r.decision_maps.insert("egress_peers_v4".into(), map);
        rule(
            vec![],
            Verdict::DecisionVmap {
                family: Family::V4,
                field: AddrField::Daddr,
                ports: false,
                map: "egress_peers_v4".into(),
            },
            None,
        )
    });
    let mut egress = vec![
        established(),
        rule(
            vec![],
            Verdict::Vmap {
                family: Family::V4,
                field: AddrField::Saddr,
                map: "egress_v4".into(),
            },
            None,
        ),
    ];
    egress.extend(peers);
    egress.extend(jumps(AddrField::Saddr, &mut rng, &mut r, "egress"));
    let mut ingress = vec![established()];
    ingress.extend(jumps(AddrField::Daddr, &mut rng, &mut r, "ingress"));
    if rng.one_in(4) {
        ingress.push(rule(vec![], Verdict::Return, None));
    }
    r.chains.insert(
        "egress".into(),
        Chain {
            base: Some(BaseChain::forward(0)),
            rules: egress,
        },
    );
    r.chains.insert(
        "ingress".into(),
        Chain {
            base: Some(BaseChain::forward(1)),
            rules: ingress,
        },
    );
    // Traffic from local pods to the node itself: the egress combinations judge it too.
    if !rng.one_in(4) {
        let mut node = vec![established()];
        node.extend(jumps(AddrField::Saddr, &mut rng, &mut r, "node"));
        let priority = if rng.one_in(20) { 5 } else { 0 };
        r.chains.insert(
            "node".into(),
            Chain {
                base: Some(BaseChain {
                    hook: Hook::Input,
                    priority,
                }),
                rules: node,
            },
        );
    }
    // Counters no rule names, one of them named like the verdict map.
    for name in ["spare_0", "spare_1", "egress_v4"] {
        if rng.one_in(2) {
            counter(&mut rng, &mut r, name);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_disjoint_and_fit_their_maps() {
        for seed in 0..200 {
            for (name, map) in &ruleset(seed).decision_maps {
                let keys: Vec<&DecisionKey> = map.elements.keys().collect();
                for (i, a) in keys.iter().enumerate() {
                    assert!(map.fits(a), "seed {seed} {name}: {a}");
                    for b in &keys[i + 1..] {
                        assert!(!a.overlaps(b), "seed {seed} {name}: {a} and {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_rulesets_of_two_seeds_share_much_and_differ_in_every_way() {
        let (mut shared, mut changed, mut redefined, mut overlapping) = (0, 0, 0, 0);
        let mut shapes = std::collections::BTreeSet::new();
        for seed in 0..100 {
            let (a, b) = (ruleset(seed), ruleset(seed + 1000));
            for (name, m) in &a.decision_maps {
                for k in m.elements.keys() {
                    shapes.insert((
                        k.first == k.last,
                        k.prefix().is_some(),
                        k.last == from_u128(m.family, max_u128(m.family)),
                        k.ports.map(|(_, lo, hi)| lo == hi),
                    ));
                }
                let Some(n) = b.decision_maps.get(name) else {
                    continue;
                };
                if (m.family, m.ports) != (n.family, n.ports) {
                    redefined += 1;
                    continue;
                }
                for (k, d) in &m.elements {
                    match n.elements.get(k) {
                        Some(e) if e == d => shared += 1,
                        Some(_) => changed += 1,
                        None if n.elements.keys().any(|e| e.overlaps(k)) => overlapping += 1,
                        None => {}
                    }
                }
            }
        }
        assert!(shared > 100, "{shared}");
        assert!(changed > 100, "{changed}");
        assert!(redefined > 5, "{redefined}");
        assert!(overlapping > 20, "{overlapping}");
        // Single addresses, prefixes and other ranges, at the end of the space or not; single
        // ports and ranges.
        assert!(shapes.len() >= 8, "{shapes:?}");
    }

    #[test]
    fn counters_are_shared_recommented_and_named_as_compiled_rulesets_name_them() {
        let (mut shared, mut recommented, mut gone, mut spare) = (0, 0, 0, 0);
        let (mut logs, mut continues, mut ahead, mut counted_drops) = (0, 0, 0, 0);
        for seed in 0..100 {
            let (a, b) = (ruleset(seed), ruleset(seed + 1000));
            for (name, c) in &a.counters {
                match b.counters.get(name) {
                    Some(d) if d == c => shared += 1,
                    Some(_) => recommented += 1,
                    None => gone += 1,
                }
            }
            let mut named = std::collections::BTreeSet::new();
            for chain in a.chains.values() {
                for r in &chain.rules {
                    for (i, m) in r.matches.iter().enumerate() {
                        match m {
                            Match::Counter(name) => {
                                assert!(a.counters.contains_key(name), "seed {seed}: {name}");
                                named.insert(name.clone());
                                ahead += usize::from(i + 1 < r.matches.len());
                                counted_drops += usize::from(r.verdict == Verdict::Drop);
                            }
                            Match::Log { .. } => logs += 1,
                            _ => {}
                        }
                    }
                    continues += usize::from(r.verdict == Verdict::Continue);
                }
            }
            spare += a.counters.keys().filter(|n| !named.contains(*n)).count();
        }
        assert!(shared > 100, "{shared}");
        assert!(recommented > 20, "{recommented}");
        assert!(gone > 20, "{gone}");
        assert!(spare > 50, "{spare}");
        assert!(logs > 50 && continues > logs, "{logs} {continues}");
        assert!(ahead > 20, "{ahead}");
        assert!(counted_drops > 50, "{counted_drops}");
    }
}
