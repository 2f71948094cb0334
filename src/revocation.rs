//! Which local pods' established connections a change of the ruleset may have revoked. With
//! `--conntrack-flush` the agent deletes their conntrack entries after the transaction, so that the
//! next packet of each of their connections is judged by the new rules.
//!
//! - NetworkPolicy: every pod a verdict map dispatches when rules, chains or peer sets lost
//!   something (or the table was replaced); else the pods whose dispatch changed.
//! - ClusterNetworkPolicy: a tier's decision maps are keyed by local pod address (one pair per
//!   peer class), so where a map allows less its keys name the pods. Per packet the verdicts of a
//!   decision map order as `drop` < `return` (or no element: the next stage judges) < `accept`, so
//!   a map allows less exactly where an `accept` region of the old map is not all `accept` in the
//!   new one, or a `drop` region of the new map was not all `drop` in the old one. A Deny added, an
//!   Accept removed or a rule of the pod's policies that now matches the class shrink it; a pod that
//!   joins an Accept rule (ranges merging, elements split by the new address) does not. Besides: a
//!   pod that becomes a tier's subject, and every subject of a tier whose peers map lost or changed
//!   an element (a peer address now in another class).
//!
//! Decision maps are compared before the transaction ([`shrunk_decision_maps`]: the committed
//! ruleset is replaced by it), and the pods read after it ([`affected_pods`]).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use policy_compiler::cidr::to_u128;
use policy_compiler::cidr::Family;
use policy_compiler::model::{Direction, Tier};
use policy_compiler::nft::transaction::Op;
use policy_compiler::nft::{
    Chain, Decision, DecisionKey, DecisionMap, DecisionVerdict, Ruleset, SetElement, Verdict,
};
use policy_compiler::plan::{tier_peers_map_name, tier_subjects_set_name};

use crate::dataplane::ApplyReport;

/// The local pods a tier judges (in `committed` or `desired`) whose verdicts allow less in
/// `desired` somewhere: for each subject, its decisions are read back as one decision map keyed by
/// peer address (the peers map's ranges, each with the elements of its class's maps that hold the
/// subject) and compared ([`allows_less`]). So what counts is the verdict per packet, not how the
/// classes are laid out: a rule added that renames classes allows less only where it does. A pod
/// that becomes or stops being a subject is counted (its traffic is judged by other rules now).
pub fn tier_revocations(committed: Option<&Ruleset>, desired: &Ruleset) -> BTreeSet<IpAddr> {
    let Some(committed) = committed else {
        return BTreeSet::new();
    };
    let mut pods = BTreeSet::new();
    for (tier, direction, family) in tier_lookups() {
        let set = tier_subjects_set_name(tier, direction, family);
        let peers = tier_peers_map_name(tier, direction, family);
        let (old, new) = (addresses(committed, &set), addresses(desired, &set));
        pods.extend(old.symmetric_difference(&new).copied());
        let unchanged = committed.decision_maps.get(&peers) == desired.decision_maps.get(&peers)
            && class_maps(committed, &peers) == class_maps(desired, &peers)
            && rule_chains(committed, &peers) == rule_chains(desired, &peers);
        if unchanged {
            continue;
        }
        for ip in old.intersection(&new) {
            let less = [true, false].into_iter().any(|ports| {
                allows_less(
                    &by_peer(committed, &peers, ip, ports),
                    &by_peer(desired, &peers, ip, ports),
                )
            });
            if less {
                pods.insert(*ip);
            }
        }
    }
    pods
}

/// The class maps a peers map leads to, by name.
fn class_maps<'r>(ruleset: &'r Ruleset, peers: &str) -> Vec<(&'r str, &'r DecisionMap)> {
    let mut maps: Vec<(&str, &DecisionMap)> = ruleset
        .decision_maps
        .get(peers)
        .into_iter()
        .flat_map(|m| m.elements.values())
        .filter_map(|d| match &d.verdict {
            DecisionVerdict::Jump(chain) => ruleset.chains.get(chain),
            _ => None,
        })
        .flat_map(|c| &c.rules)
        .filter_map(|r| match &r.verdict {
            Verdict::DecisionVmap { map, .. } => {
                ruleset.decision_maps.get(map).map(|m| (map.as_str(), m))
            }
            _ => None,
        })
        .collect();
    maps.sort_by_key(|(n, _)| *n);
    maps.dedup_by_key(|(n, _)| *n);
    maps
}

/// The rule chains the class maps of a peers map jump to, by name.
fn rule_chains<'r>(ruleset: &'r Ruleset, peers: &str) -> Vec<(&'r str, &'r Chain)> {
    let mut chains: Vec<(&str, &Chain)> = class_maps(ruleset, peers)
        .into_iter()
        .flat_map(|(_, m)| m.elements.values())
        .filter_map(|d| match &d.verdict {
            DecisionVerdict::Jump(chain) => ruleset.chains.get(chain).map(|c| (chain.as_str(), c)),
            _ => None,
        })
        .collect();
    chains.sort_by_key(|(n, _)| *n);
    chains.dedup_by_key(|(n, _)| *n);
    chains
}

/// What a decision finally does to a packet: a jump to a rule's chain is that chain's last
/// verdict (accept or drop; anything else leaves it to the next stage, as `return`).
fn final_decision(ruleset: &Ruleset, decision: &Decision) -> Decision {
    let DecisionVerdict::Jump(chain) = &decision.verdict else {
        return decision.clone();
    };
    let last = ruleset.chains.get(chain).and_then(|c| c.rules.last());
    let verdict = match last.map(|r| &r.verdict) {
        Some(Verdict::Accept) => DecisionVerdict::Accept,
        Some(Verdict::Drop) => DecisionVerdict::Drop,
        _ => DecisionVerdict::Return,
    };
    Decision {
        verdict,
        comment: decision.comment.clone(),
    }
}

/// What a tier decides for the subject `ip`, as a decision map keyed by peer address (with
/// protocol and port when `ports`): each range of the peers map with the verdicts of its class's
/// map elements that hold `ip`.
fn by_peer(ruleset: &Ruleset, peers: &str, ip: &IpAddr, ports: bool) -> DecisionMap {
    let mut out = DecisionMap {
        family: Family::of(ip),
        ports,
        elements: Default::default(),
    };
    let Some(map) = ruleset.decision_maps.get(peers) else {
        return out;
    };
    // What each class decides for `ip`, read once per class (the peers map has many ranges per
    // class).
    let mut decided: HashMap<&str, Vec<(&DecisionKey, &Decision)>> = HashMap::new();
    for (range, d) in &map.elements {
        let DecisionVerdict::Jump(chain) = &d.verdict else {
            continue;
        };
        let held = decided
            .entry(chain.as_str())
            .or_insert_with(|| class_decisions(ruleset, chain, ip, ports));
        for (k, decision) in held.iter() {
            let key = DecisionKey {
                first: range.first,
                last: range.last,
                ports: k.ports,
            };
            out.elements.insert(key, final_decision(ruleset, decision));
        }
    }
    out
}

/// The elements of a class chain's decision maps (keyed with ports or not) that hold `ip`.
fn class_decisions<'r>(
    ruleset: &'r Ruleset,
    chain: &str,
    ip: &IpAddr,
    ports: bool,
) -> Vec<(&'r DecisionKey, &'r Decision)> {
    let Some(chain) = ruleset.chains.get(chain) else {
        return Vec::new();
    };
    chain
        .rules
        .iter()
        .filter_map(|rule| match &rule.verdict {
            Verdict::DecisionVmap {
                map, ports: keyed, ..
            } if *keyed == ports => ruleset.decision_maps.get(map),
            _ => None,
        })
        .flat_map(|class| &class.elements)
        .filter(|(k, _)| holds_address(k, ip))
        .collect()
}

/// Whether some packet `old` accepts is not accepted by `new`, or some packet `new` drops was not
/// dropped by `old`.
fn allows_less(old: &DecisionMap, new: &DecisionMap) -> bool {
    let uncovered = |from: &DecisionMap, to: &DecisionMap, verdict: DecisionVerdict| {
        from.elements
            .iter()
            .filter(|(key, d)| {
                d.verdict == verdict && to.elements.get(key).map(|e| &e.verdict) != Some(&verdict)
            })
            .any(|(key, _)| !covered(key, to, &verdict))
    };
    uncovered(old, new, DecisionVerdict::Accept) || uncovered(new, old, DecisionVerdict::Drop)
}

/// The part of an element inside a key: its address range, clipped, and its port range.
type Piece = (u128, u128, Option<(u16, u16)>);

/// Whether the elements of `map` with `verdict` hold every packet `key` holds.
fn covered(key: &DecisionKey, map: &DecisionMap, verdict: &DecisionVerdict) -> bool {
    let (first, last) = (to_u128(&key.first), to_u128(&key.last));
    let candidates: Vec<Piece> = map
        .elements
        .iter()
        .filter(|(k, d)| d.verdict == *verdict && k.overlaps(key))
        .map(|(k, _)| {
            let ports = k.ports.map(|(_, lo, hi)| (lo, hi));
            (
                to_u128(&k.first).max(first),
                to_u128(&k.last).min(last),
                ports,
            )
        })
        .collect();
    let Some((_, lo, hi)) = key.ports else {
        let ranges = candidates.iter().map(|&(a, b, _)| (a, b)).collect();
        return covers(ranges, first, last);
    };
    // Elementary address intervals: each candidate holds the whole of one or none of it.
    let mut starts: Vec<u128> = vec![first];
    for &(a, b, _) in &candidates {
        starts.push(a);
        if let Some(next) = b.checked_add(1).filter(|n| *n <= last) {
            starts.push(next);
        }
    }
    starts.sort_unstable();
    starts.dedup();
    starts.iter().all(|&at| {
        let ports = candidates
            .iter()
            .filter(|&&(a, b, _)| a <= at && at <= b)
            .filter_map(|&(_, _, ports)| ports)
            .map(|(a, b)| (u128::from(a), u128::from(b)))
            .collect();
        covers(ports, u128::from(lo), u128::from(hi))
    })
}

/// Whether the union of inclusive `ranges` holds all of `[first, last]`.
fn covers(mut ranges: Vec<(u128, u128)>, first: u128, last: u128) -> bool {
    ranges.sort_unstable();
    let mut next = first;
    for (a, b) in ranges {
        if a > next {
            return false;
        }
        if b >= next {
            match b.checked_add(1) {
                Some(n) if b < last => next = n,
                _ => return true,
            }
        }
    }
    false
}

/// The local pod addresses whose established connections the transaction of `report` may have
/// revoked, `desired` being the ruleset it committed and `tiers` the subjects whose tier verdicts
/// allow less ([`tier_revocations`]): with them, for NetworkPolicy, every pod a verdict map
/// dispatches when its rules, chains or sets lost something (or the table was replaced; then the
/// tiers' subjects too), else the pods whose dispatch changed.
pub fn affected_pods(
    report: &ApplyReport,
    desired: &Ruleset,
    tiers: &BTreeSet<IpAddr>,
) -> BTreeSet<IpAddr> {
    let dispatched = || {
        desired
            .maps
            .values()
            .flat_map(|m| m.elements.keys().copied())
    };
    let broad = report.full
        || report.transaction.ops.iter().any(|op| match op {
            Op::DeleteElements(name, _)
            | Op::FlushChain(name)
            | Op::DeleteChain(name)
            | Op::DeleteSet(name) => !is_tier_object(name),
            _ => false,
        });
    let mut pods: BTreeSet<IpAddr> = tiers.clone();
    if broad {
        pods.extend(dispatched());
        if report.full {
            pods.extend(tier_subjects(desired));
        }
        return pods;
    }
    for op in &report.transaction.ops {
        match op {
            Op::AddMapElements(_, e) => pods.extend(e.iter().map(|(ip, _)| *ip)),
            Op::DeleteMapElements(_, keys) => pods.extend(keys.iter().copied()),
            _ => {}
        }
    }
    pods
}

/// Whether a set, map or chain belongs to a ClusterNetworkPolicy tier (whose revocations
/// [`tier_revocations`] finds exactly).
fn is_tier_object(name: &str) -> bool {
    name.starts_with("admin_") || name.starts_with("baseline_")
}

/// Every tier, direction and family a ruleset may look subjects up in.
fn tier_lookups() -> impl Iterator<Item = (Tier, Direction, Family)> {
    Tier::ALL.into_iter().flat_map(|tier| {
        Direction::BOTH.into_iter().flat_map(move |direction| {
            [Family::V4, Family::V6]
                .into_iter()
                .map(move |family| (tier, direction, family))
        })
    })
}

/// The addresses in a set of `ruleset` (none when it has no such set).
fn addresses(ruleset: &Ruleset, set: &str) -> BTreeSet<IpAddr> {
    ruleset
        .sets
        .get(set)
        .into_iter()
        .flat_map(|s| &s.elements)
        .filter_map(|e| match e {
            SetElement::Addr(ip) => Some(*ip),
            SetElement::AddrProtoPort(..) => None,
        })
        .collect()
}

/// The addresses of every tier's subjects in `ruleset`.
fn tier_subjects(ruleset: &Ruleset) -> BTreeSet<IpAddr> {
    tier_lookups()
        .flat_map(|(tier, direction, family)| {
            addresses(ruleset, &tier_subjects_set_name(tier, direction, family))
        })
        .collect()
}

/// Whether a key's address range holds `ip` (whatever its ports).
fn holds_address(key: &DecisionKey, ip: &IpAddr) -> bool {
    Family::of(ip) == Family::of(&key.first)
        && (to_u128(&key.first)..=to_u128(&key.last)).contains(&to_u128(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_compiler::cidr::Family;
    use policy_compiler::model::Protocol;

    fn key(first: &str, last: &str, ports: Option<(u16, u16)>) -> DecisionKey {
        DecisionKey {
            first: first.parse().expect("ip"),
            last: last.parse().expect("ip"),
            ports: ports.map(|(lo, hi)| (Protocol::Tcp, lo, hi)),
        }
    }

    fn map(ports: bool, elements: &[(DecisionKey, DecisionVerdict)]) -> DecisionMap {
        DecisionMap {
            family: Family::V4,
            ports,
            elements: elements
                .iter()
                .map(|(k, v)| {
                    let d = Decision {
                        verdict: v.clone(),
                        comment: None,
                    };
                    (*k, d)
                })
                .collect(),
        }
    }

    use DecisionVerdict::{Accept, Drop, Return};

    #[test]
    fn ranges_cover_exactly_when_nothing_is_missing() {
        assert!(covers(vec![(5, 9), (0, 4)], 0, 9));
        assert!(covers(vec![(0, 3), (2, 12)], 1, 10));
        assert!(!covers(vec![(0, 3), (5, 9)], 0, 9), "4 is missing");
        assert!(!covers(vec![(1, 9)], 0, 9), "0 is missing");
        assert!(!covers(vec![(0, 8)], 0, 9), "9 is missing");
        assert!(!covers(vec![], 3, 3));
        assert!(covers(vec![(0, u128::MAX)], 0, u128::MAX));
    }

    #[test]
    fn an_accept_region_split_or_merged_into_accepts_allows_as_much() {
        // A pod joins an Accept rule: two ranges merge into one element.
        let old = map(
            false,
            &[
                (key("10.0.0.1", "10.0.0.4", None), Accept),
                (key("10.0.0.6", "10.0.0.9", None), Accept),
            ],
        );
        let new = map(false, &[(key("10.0.0.1", "10.0.0.9", None), Accept)]);
        assert!(!allows_less(&old, &new));
        assert!(allows_less(&new, &old), "10.0.0.5 no longer accepted");
        // The same with ports: an element split by address and by port, all still accepted.
        let old = map(
            true,
            &[(key("10.0.0.0", "10.0.0.255", Some((80, 90))), Accept)],
        );
        let new = map(
            true,
            &[
                (key("10.0.0.0", "10.0.0.9", Some((80, 90))), Accept),
                (key("10.0.0.10", "10.0.0.10", Some((80, 84))), Accept),
                (key("10.0.0.10", "10.0.0.10", Some((85, 90))), Accept),
                (key("10.0.0.11", "10.0.0.255", Some((70, 95))), Accept),
            ],
        );
        assert!(!allows_less(&old, &new));
        // One port of one address goes to a Pass: less is allowed there.
        let mut holed = new.clone();
        holed
            .elements
            .remove(&key("10.0.0.10", "10.0.0.10", Some((85, 90))));
        assert!(allows_less(&old, &holed));
        holed.elements.insert(
            key("10.0.0.10", "10.0.0.10", Some((85, 90))),
            Decision {
                verdict: Return,
                comment: None,
            },
        );
        assert!(allows_less(&old, &holed));
    }

    #[test]
    fn a_new_drop_allows_less_unless_it_was_dropped_already() {
        let old = map(
            true,
            &[
                (key("10.0.0.1", "10.0.0.1", Some((80, 80))), Accept),
                (key("10.0.0.0", "10.0.0.255", Some((443, 443))), Drop),
            ],
        );
        // A Deny added where a Pass (no element) was.
        let mut new = old.clone();
        new.elements.insert(
            key("10.0.0.1", "10.0.0.1", Some((22, 22))),
            Decision {
                verdict: Drop,
                comment: None,
            },
        );
        assert!(allows_less(&old, &new));
        assert!(!allows_less(&new, &old), "the Deny removed again");
        // The drop region split in two (an Accept rule placed before it takes one address): no
        // address is dropped that was not, and the one accepted is more.
        let split = map(
            true,
            &[
                (key("10.0.0.1", "10.0.0.1", Some((80, 80))), Accept),
                (key("10.0.0.0", "10.0.0.6", Some((443, 443))), Drop),
                (key("10.0.0.7", "10.0.0.7", Some((443, 443))), Accept),
                (key("10.0.0.8", "10.0.0.255", Some((443, 443))), Drop),
            ],
        );
        assert!(!allows_less(&old, &split));
        assert!(allows_less(&split, &old), "10.0.0.7:443 dropped again");
    }

    #[test]
    fn a_comment_change_allows_as_much() {
        let old = map(false, &[(key("10.0.0.1", "10.0.0.1", None), Accept)]);
        let mut new = old.clone();
        for d in new.elements.values_mut() {
            d.comment = Some("[Admin 1] a egress[0] renamed".into());
        }
        assert!(!allows_less(&old, &new));
    }
}
