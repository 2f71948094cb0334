//! ClusterNetworkPolicies entering and leaving a tier's *universe*: the rules of the policies that
//! judge some pod of the node, in evaluation order, whose positions number the peer classes, the
//! cells and the class runs the tiers keep ([`super::tiers`], [`super::peers`]). A policy added,
//! deleted or moved in the order (priority, rule count, Pass rules, ingress named ports), or one
//! that starts or stops judging the node's pods, changes the universe; it is taken piece by piece
//! here instead of rendering the tiers again:
//!
//! - a policy **leaves** ([`leave`]): its rules are taken out of every combination's rules first,
//!   then given the region of no peer ([`super::regions::give_regions`]): every class holding one
//!   of them gives its addresses to the class without them, class by class (the peers-map
//!   elements of its chain jump to the other's), no address classified again; then the positions
//!   close up ([`Shift::Leave`]), the classes holding its rules go, and so do the rules' chains.
//!   The subjects it judged are left for the subjects' refresh, which finds nothing of it to
//!   decide;
//! - a policy **enters** ([`enter`]): its rules take their place in the evaluation order with the
//!   region of no peer ([`Shift::Enter`]), so that no class holds them, and get their chains; the
//!   subjects' refresh then puts the pods it judges in their combinations, and only then do its
//!   rules get the regions of their peers ([`super::regions::refresh_regions`]), decided for the
//!   subjects as they are: a rule whose peers some rule of the map has already joins that
//!   region, and the classes of its addresses take the rule along, class by class; a rule with
//!   peers of its own has its addresses classified again. A class without a chain that gets one
//!   so has its addresses found by classifying those of one of its regions
//!   ([`super::regions::reveal`]).
//!
//! A shift is monotone: the rules that stay keep their order, so every class, cell and element
//! keeps its meaning, renumbered.

use std::collections::HashMap;
use std::net::IpAddr;

use super::origin::{CompileOptions, Origin};
use super::peers::{LiveRegion, PeerBook, Structural};
use super::regions::give_regions;
use super::tiers::{put_rule_chain, rule_chain};
use crate::cluster::ClusterState;
use crate::model::{ClusterNetworkPolicy, Direction, Tier};
use crate::nft::transaction::Touched;
use crate::nft::Ruleset;
use crate::plan::naming::cluster_rule_chain_name;

/// How the positions of a universe's rules move: `count` rules enter at `at`, or leave from
/// there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shift {
    Enter { at: usize, count: usize },
    Leave { at: usize, count: usize },
}

impl Shift {
    /// Where the rule at `u` goes (`None`: it leaves).
    pub(super) fn apply(self, u: usize) -> Option<usize> {
        match self {
            Shift::Enter { at, count } => Some(if u >= at { u + count } else { u }),
            Shift::Leave { at, count } => {
                if u < at {
                    Some(u)
                } else if u < at + count {
                    None
                } else {
                    Some(u - count)
                }
            }
        }
    }
}

/// Takes the ClusterNetworkPolicy `name` out of the universes of the tier and directions `slots`
/// (all of one tier; see the module documentation); changes are recorded in `touched`. `holders` counts the
/// participating pods holding each address. Returns how many peers-map elements changed and the
/// rule chains (and counters) that went. [`Structural`] as
/// [`super::regions::refresh_regions`]; then `ruleset` and `book` are left half done, for a full
/// render to replace.
pub(super) fn leave(
    ruleset: &mut Ruleset,
    touched: &mut Option<Touched>,
    book: &mut PeerBook,
    (cluster, holders): (&ClusterState, &HashMap<IpAddr, u32>),
    (name, slots): (&str, &[(Tier, Direction)]),
) -> Result<(usize, Vec<String>), Structural> {
    let Some(&(tier, _)) = slots.first() else {
        return Ok((0, Vec::new()));
    };
    if slots.iter().any(|(t, _)| *t != tier) {
        return Err(Structural);
    }
    let (_, _, subjects) = book.all_mut();
    let shifts: Vec<((Tier, Direction), Shift)> = subjects
        .iter_mut()
        .filter(|s| slots.contains(&s.slot()))
        .filter_map(|s| Some((s.slot(), s.leave(name)?)))
        .collect();
    if shifts.is_empty() {
        return Ok((0, Vec::new()));
    }
    let changes = give_regions(
        ruleset,
        touched,
        book,
        (cluster, holders),
        tier,
        &|slot, family| {
            let shift = shifts.iter().find(|(s, _)| *s == slot.slot())?.1;
            let Shift::Leave { at, count } = shift else {
                return None;
            };
            Some((at, vec![LiveRegion::empty(family); count]))
        },
    )?;
    let mut chains = Vec::new();
    let (_, maps, slots) = book.all_mut();
    for &(at_slot, shift) in &shifts {
        let Shift::Leave { at, count } = shift else {
            continue;
        };
        let slot = slots
            .iter_mut()
            .find(|s| s.slot() == at_slot)
            .ok_or(Structural)?;
        chains.extend(slot.rule_chains(at, count));
        slot.drop_rules(shift);
        for map in maps.iter_mut().filter(|m| (m.tier, m.direction) == at_slot) {
            map.shift(shift, 0)?;
        }
    }
    book.drop_unused_regions();
    for chain in &chains {
        ruleset.chains.remove(chain);
        ruleset.counters.remove(chain);
        if let Some(t) = touched.as_mut() {
            t.chains.insert(chain.clone());
            t.counters.insert(chain.clone());
        }
    }
    Ok((changes, chains))
}

/// Puts the rules of `policy` into the universes of the tier and directions `slots` (where it
/// judges some pod of the node, and is not in the universe), with the region of no peer, and
/// renders their chains (see the module documentation); changes are recorded in `touched`.
/// Returns the origins of the rule chains' counters, by chain. The regions of its peers are the
/// caller's to give, after the subjects' refresh. [`Structural`] when the book has no such
/// universe, or a policy of it is gone from the cluster.
pub(super) fn enter(
    ruleset: &mut Ruleset,
    touched: &mut Option<Touched>,
    book: &mut PeerBook,
    (cluster, options): (&ClusterState, &CompileOptions),
    (policy, slots): (&ClusterNetworkPolicy, &[(Tier, Direction)]),
) -> Result<Vec<(String, Origin)>, Structural> {
    let mut origins = Vec::new();
    let (regions, maps, subjects) = book.all_mut();
    for &(tier, direction) in slots {
        let slot = subjects
            .iter_mut()
            .find(|s| s.slot() == (tier, direction))
            .ok_or(Structural)?;
        let shift = slot.enter(cluster, policy)?;
        for map in maps
            .iter_mut()
            .filter(|m| (m.tier, m.direction) == (tier, direction))
        {
            let r = LiveRegion::place(regions, LiveRegion::empty(map.family));
            let e = map.map_region(r);
            map.shift(shift, e)?;
        }
        for index in 0..policy.rules(direction).len() {
            let chain = cluster_rule_chain_name(tier, policy, direction, index);
            let Some((rules, origin)) =
                rule_chain(options, (tier, direction), policy, index, &chain)
            else {
                continue;
            };
            put_rule_chain((ruleset, touched), &chain, rules);
            origins.push((chain, origin));
        }
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shift_keeps_the_order_of_the_rules_that_stay() {
        let enter = Shift::Enter { at: 2, count: 3 };
        assert_eq!(
            (0..4).map(|u| enter.apply(u)).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(5), Some(6)]
        );
        let leave = Shift::Leave { at: 2, count: 3 };
        assert_eq!(
            (0..7).map(|u| leave.apply(u)).collect::<Vec<_>>(),
            [Some(0), Some(1), None, None, None, Some(2), Some(3)]
        );
    }
}
