//! Which local pods' established connections a change of the ruleset may have revoked. With
//! `--conntrack-flush` the agent deletes their conntrack entries after the transaction, so that the
//! next packet of each of their connections is judged by the new rules.
//!
//! - NetworkPolicy: every pod a verdict map dispatches when rules, chains or peer sets lost
//!   something (or the table was replaced); else the pods whose dispatch changed.
//! - ClusterNetworkPolicy: the subjects of every combination chain whose decision maps allow less
//!   somewhere. Per packet the verdicts of a decision map order as `drop` < `return` (or no
//!   element: the next stage judges) < `accept`, so a map allows less exactly where an `accept`
//!   region of the old map is not all `accept` in the new one, or a `drop` region of the new map
//!   was not all `drop` in the old one. A Deny added, an Accept removed or a peer that joins a
//!   Deny rule shrink it; a pod that joins an Accept rule (ranges merging, elements split by the
//!   new address) does not.
//!
//! Decision maps are compared before the transaction ([`shrunk_decision_maps`]: the committed
//! ruleset is replaced by it), and the pods read after it ([`affected_pods`]).

use std::collections::BTreeSet;
use std::net::IpAddr;

use policy_compiler::cidr::to_u128;
use policy_compiler::nft::transaction::Op;
use policy_compiler::nft::{DecisionKey, DecisionMap, DecisionVerdict, Ruleset, Verdict};

use crate::dataplane::ApplyReport;

/// The decision maps of `desired` that allow less than they did in `committed` somewhere (and
/// those whose key changed type). Maps that are new or gone are left out: a new combination's
/// subjects join dispatch maps, and a removed one's chain is deleted, which [`affected_pods`]
/// answers broadly.
pub fn shrunk_decision_maps(committed: Option<&Ruleset>, desired: &Ruleset) -> BTreeSet<String> {
    let Some(committed) = committed else {
        return BTreeSet::new();
    };
    desired
        .decision_maps
        .iter()
        .filter(|(name, new)| {
            committed.decision_maps.get(*name).is_some_and(|old| {
                old != *new
                    && (old.family != new.family || old.ports != new.ports || allows_less(old, new))
            })
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Whether some packet `old` accepts is not accepted by `new`, or some packet `new` drops was not
/// dropped by `old`.
fn allows_less(old: &DecisionMap, new: &DecisionMap) -> bool {
    let uncovered = |from: &DecisionMap, to: &DecisionMap, verdict: DecisionVerdict| {
        from.elements
            .iter()
            .filter(|(key, d)| {
                d.verdict == verdict && to.elements.get(key).map(|e| e.verdict) != Some(verdict)
            })
            .any(|(key, _)| !covered(key, to, verdict))
    };
    uncovered(old, new, DecisionVerdict::Accept) || uncovered(new, old, DecisionVerdict::Drop)
}

/// The part of an element inside a key: its address range, clipped, and its port range.
type Piece = (u128, u128, Option<(u16, u16)>);

/// Whether the elements of `map` with `verdict` hold every packet `key` holds.
fn covered(key: &DecisionKey, map: &DecisionMap, verdict: DecisionVerdict) -> bool {
    let (first, last) = (to_u128(&key.first), to_u128(&key.last));
    let candidates: Vec<Piece> = map
        .elements
        .iter()
        .filter(|(k, d)| d.verdict == verdict && k.overlaps(key))
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
/// revoked, `desired` being the ruleset it committed and `shrunk` the decision maps that allow less
/// ([`shrunk_decision_maps`]): every pod a verdict map dispatches (NetworkPolicy isolation,
/// ClusterNetworkPolicy tiers) when rules, chains or peer sets lost something, or the table was
/// replaced; else the pods whose dispatch changed and the subjects of the chains that look up a
/// shrunk decision map (or jump to one that does).
pub fn affected_pods(
    report: &ApplyReport,
    desired: &Ruleset,
    shrunk: &BTreeSet<String>,
) -> BTreeSet<IpAddr> {
    let every_dispatched = || -> BTreeSet<IpAddr> {
        desired
            .maps
            .values()
            .flat_map(|m| m.elements.keys().copied())
            .collect()
    };
    let broad = report.full
        || report.transaction.ops.iter().any(|op| {
            matches!(
                op,
                Op::DeleteElements(..) | Op::FlushChain(_) | Op::DeleteChain(_) | Op::DeleteSet(_)
            )
        });
    if broad {
        return every_dispatched();
    }
    let mut pods: BTreeSet<IpAddr> = report
        .transaction
        .ops
        .iter()
        .flat_map(|op| match op {
            Op::AddMapElements(_, e) => e.iter().map(|(ip, _)| *ip).collect(),
            Op::DeleteMapElements(_, keys) => keys.clone(),
            _ => Vec::new(),
        })
        .collect();
    if shrunk.is_empty() {
        return pods;
    }
    let chains = chains_reaching(desired, shrunk);
    if chains
        .iter()
        .any(|c| desired.chains.get(c).is_some_and(|c| c.base.is_some()))
    {
        // A base chain itself decides by the map: every packet of the hook may be judged anew.
        return every_dispatched();
    }
    for map in desired.maps.values() {
        for (ip, chain) in &map.elements {
            if chains.contains(chain) {
                pods.insert(*ip);
            }
        }
    }
    pods
}

/// The chains that look up one of `maps`, and the chains that jump to those, transitively.
fn chains_reaching(ruleset: &Ruleset, maps: &BTreeSet<String>) -> BTreeSet<String> {
    let mut reached: BTreeSet<String> = ruleset
        .chains
        .iter()
        .filter(|(_, c)| {
            c.rules.iter().any(
                |r| matches!(&r.verdict, Verdict::DecisionVmap { map, .. } if maps.contains(map)),
            )
        })
        .map(|(n, _)| n.clone())
        .collect();
    loop {
        let more: Vec<String> = ruleset
            .chains
            .iter()
            .filter(|(n, c)| {
                !reached.contains(*n)
                    && c.rules
                        .iter()
                        .any(|r| matches!(&r.verdict, Verdict::Jump(to) if reached.contains(to)))
            })
            .map(|(n, _)| n.clone())
            .collect();
        if more.is_empty() {
            return reached;
        }
        reached.extend(more);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_compiler::cidr::Family;
    use policy_compiler::model::Protocol;
    use policy_compiler::nft::Decision;

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
                        verdict: *v,
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
