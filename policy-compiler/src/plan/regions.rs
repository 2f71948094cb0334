//! A ClusterNetworkPolicy's peers edited in place, over the tiers kept in a [`PeerBook`]: each
//! rule whose peers changed gets the region of its new peers (one it shares with rules of the same
//! peers, or a new one), and only the addresses its old and new regions disagree on are classified
//! again and spliced into the peers maps, so that the edit costs what it moves, not a render of the
//! tiers over the whole cluster.
//!
//! The addresses that can change class are those of the pods one region selects and the other
//! does not (or both select, when the egress named ports resolved at them changed), the Nodes one
//! region holds and the other does not, and the address ranges one region's networks cover and
//! the other's do not. A single address is classified as a pod event classifies it; a range is
//! swept between the boundaries every region of the map draws inside it (networks' ends, Nodes,
//! pods), as a full render sweeps the whole address space. A class none had gets its chain
//! rendered then ([`super::tiers::add_class`]).
//!
//! The evaluation order and the rules' count and Pass-ness are those of the last full render (see
//! [`super::tiers::keeps_order`]), so the universe of rules and the rule chains stay; what the
//! edit changes besides the peers (ports, Accept against Deny, names; the subject) is rendered
//! after, by [`super::tiers::refresh_rules`] and the subjects' refresh.
//!
//! The same splice gives a policy entering or leaving the universe its regions, or the region of
//! no peer ([`give_regions`], [`super::universe`]); a rule that leaves, or enters with peers
//! another rule of the map has, moves whole classes instead of addresses: every class its
//! region's addresses are in gains or loses it, and the peers-map elements of each such class's
//! chain jump to the new class's chain ([`take_classes`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use super::peers::{Holder, LiveRegion, PeerBook, PeersMap, Structural, Target};
use super::tiers::{add_classes, ranges_hold, ClassKey, RegionClass, SlotSubjects};
use crate::cidr::{from_u128, max_u128, to_u128, Family};
use crate::cluster::ClusterState;
use crate::model::{ClusterNetworkPolicy, ClusterPeer, ObjectRef, Pod, Tier};
use crate::nft::transaction::Touched;
use crate::nft::{DecisionVerdict, Ruleset};
use crate::selector::Labels;

/// Gives the rules of `policy` (as the cluster holds it now) the regions of their peers in every
/// peers map where the policy judges some local pod, and splices the addresses whose class that
/// changes into the maps; changes are recorded in `touched`. `holders` counts the participating
/// pods holding each address. Returns how many peers-map elements changed. [`Structural`] when an
/// address two pods hold, or a Node's address a pod holds, changes class, or the book no longer
/// describes the policy's rules; then `ruleset` and `book` are left half done, for a full render
/// to replace.
pub(super) fn refresh_regions(
    ruleset: &mut Ruleset,
    touched: &mut Option<Touched>,
    book: &mut PeerBook,
    (cluster, holders): (&ClusterState, &HashMap<IpAddr, u32>),
    policy: &ClusterNetworkPolicy,
) -> Result<usize, Structural> {
    give_regions(
        ruleset,
        touched,
        book,
        (cluster, holders),
        policy.tier,
        &|slot, family| {
            // It judges no local pod where it is not in the universe: its rules have no regions.
            let first = slot.first_rule(&policy.name)?;
            let direction = slot.slot().1;
            let regions = policy
                .rules(direction)
                .iter()
                .map(|rule| LiveRegion::of(cluster, direction, rule, family))
                .collect();
            Some((first, regions))
        },
    )
}

/// The regions some rules of a slot's universe are to have in a family: the position of the
/// first, and a region for each rule from there (`None`: none in that slot).
pub(super) type NewRegions<'f> =
    dyn Fn(&SlotSubjects, Family) -> Option<(usize, Vec<LiveRegion>)> + 'f;

/// Gives rules of the universes of `tier` the regions `new` says, in every peers map, and
/// splices the addresses whose class that changes into the maps (see [`refresh_regions`]).
pub(super) fn give_regions(
    ruleset: &mut Ruleset,
    touched: &mut Option<Touched>,
    book: &mut PeerBook,
    (cluster, holders): (&ClusterState, &HashMap<IpAddr, u32>),
    tier: Tier,
    new: &NewRegions<'_>,
) -> Result<usize, Structural> {
    let mut count = 0;
    let (regions, maps, slots) = book.all_mut();
    for map in maps.iter_mut().filter(|m| m.tier == tier) {
        let slot = slots
            .iter()
            .find(|s| s.slot() == (map.tier, map.direction))
            .ok_or(Structural)?;
        let family = map.family;
        let Some((first, given)) = new(slot, family) else {
            continue;
        };
        let empty = LiveRegion::empty(family);
        // The map's regions with rules before: a rule joining one from the region of no peer
        // takes the classes of its addresses along (see `take_classes`).
        let before: Vec<(usize, usize)> = map
            .regions
            .iter()
            .zip(&map.rules_of)
            .filter_map(|(r, rules)| Some((*r, *rules.first()?)))
            .collect();
        let mut joins: Vec<(usize, usize)> = Vec::new();
        let mut leaves: Vec<usize> = Vec::new();
        let mut changes: Vec<(LiveRegion, LiveRegion)> = Vec::new();
        for (index, new) in given.into_iter().enumerate() {
            let u = first + index;
            let k = *map.region_of.get(u).ok_or(Structural)?;
            let r = *map.regions.get(k).ok_or(Structural)?;
            let old = regions.get(r).ok_or(Structural)?;
            if old.same_peers(&new) {
                continue;
            }
            let joined = old.same_peers(&empty).then(|| {
                before
                    .iter()
                    .find(|(r, _)| regions.get(*r).is_some_and(|x| x.same_peers(&new)))
                    .map(|(_, beside)| *beside)
            });
            if let Some(Some(beside)) = joined {
                joins.push((u, beside));
            } else if new.same_peers(&empty) {
                leaves.push(u);
            } else if !changes
                .iter()
                .any(|(o, n)| o.same_peers(old) && n.same_peers(&new))
            {
                // Rules sharing a region move alike: their addresses are classified once.
                changes.push((old.clone(), new.clone()));
            }
            let r = LiveRegion::place(regions, new);
            map.give_region(u, r)?;
        }
        if !joins.is_empty() || !leaves.is_empty() {
            count += take_classes(
                ruleset,
                touched,
                map,
                (regions, slot),
                (cluster, holders),
                &|key| key.without(&leaves).joined(&joins),
            )?;
        }
        if !changes.is_empty() {
            count += reclassify(
                ruleset,
                touched,
                map,
                (regions, slot),
                (cluster, holders),
                &changes,
            )?;
        }
    }
    book.drop_unused_regions();
    Ok(count)
}

/// Moves every address of `map` whose class `to` changes (rules entering or leaving the classes
/// of the addresses some region holds, as a whole) to its new class, class by class: the
/// peers-map elements of a class with a chain jump to the new class's chain (or go, when it has
/// none), spliced span by span; a class without a chain whose new class has one has no element to
/// move, so the addresses of one of the new class's regions are classified again
/// ([`reveal`]). Returns how many peers-map elements changed.
fn take_classes(
    ruleset: &mut Ruleset,
    touched: &mut Option<Touched>,
    map: &mut PeersMap,
    (regions, slot): (&[LiveRegion], &SlotSubjects),
    (cluster, holders): (&ClusterState, &HashMap<IpAddr, u32>),
    to: &dyn Fn(&ClassKey) -> ClassKey,
) -> Result<usize, Structural> {
    // Each class that changes, with its new class; those none had are added together.
    let mut moves: Vec<(usize, ClassKey)> = Vec::new();
    let mut fresh: Vec<ClassKey> = Vec::new();
    let mut seen: HashSet<ClassKey> = HashSet::new();
    for (id, (key, _)) in map.keys.iter().enumerate() {
        let new = to(key);
        if &new == key {
            continue;
        }
        if !new.is_empty() && !map.class_ids.contains_key(&new) && seen.insert(new.clone()) {
            fresh.push(new.clone());
        }
        moves.push((id, new));
    }
    add_classes(map, slot, cluster, fresh)?;
    // Each chain whose class changes, with the new class's chain.
    let mut retarget: HashMap<String, Option<String>> = HashMap::new();
    let mut revealed: Vec<usize> = Vec::new();
    for (id, new) in moves {
        let chain = map.keys.get(id).and_then(|(_, chain)| chain.clone());
        let now = map.class_ids.get(&new).copied();
        let now_chain = now.and_then(|id| map.keys.get(id)?.1.clone());
        match (chain, now_chain) {
            (Some(chain), target) => {
                retarget.insert(chain, target);
            }
            (None, Some(_)) => revealed.extend(now),
            (None, None) => {}
        }
    }
    let mut chains: BTreeSet<String> = BTreeSet::new();
    let mut count = 0;
    if !retarget.is_empty() {
        let moved: Vec<Target> = ruleset
            .decision_maps
            .get(&map.name)
            .into_iter()
            .flat_map(|m| &m.elements)
            .filter_map(|(key, decision)| {
                let DecisionVerdict::Jump(chain) = &decision.verdict else {
                    return None;
                };
                let target = retarget.get(chain)?;
                Some((to_u128(&key.first), to_u128(&key.last), target.clone()))
            })
            .collect();
        // Adjacent elements are spliced as one span.
        let mut at = 0;
        while at < moved.len() {
            let mut end = at + 1;
            while end < moved.len() && moved[end - 1].1.checked_add(1) == Some(moved[end].0) {
                end += 1;
            }
            let span = (moved[at].0, moved[end - 1].1);
            count += map.splice(ruleset, touched, span, &moved[at..end], &mut chains);
            at = end;
        }
    }
    for chain in chains {
        map.settle(ruleset, touched, &chain)?;
    }
    for id in revealed {
        count += reveal(
            ruleset,
            touched,
            map,
            (regions, slot),
            (cluster, holders),
            id,
        )?;
    }
    Ok(count)
}

/// Splices in the addresses of the class `id` of `map`, whose chain has just come (it had none,
/// and starts deciding something for the node's pods: [`super::tiers::start_class`]): those of
/// one of its rules' regions are classified again, and those in the class get elements, while
/// the others' stay as they were. The region chosen is the one with the narrowest networks (a
/// selector's pods are read through the namespaces it can select). Returns how many peers-map
/// elements changed.
pub(super) fn reveal(
    ruleset: &mut Ruleset,
    touched: &mut Option<Touched>,
    map: &mut PeersMap,
    (regions, slot): (&[LiveRegion], &SlotSubjects),
    (cluster, holders): (&ClusterState, &HashMap<IpAddr, u32>),
    id: usize,
) -> Result<usize, Structural> {
    let (key, _) = map.keys.get(id).ok_or(Structural)?;
    let width = |region: &LiveRegion| -> u128 {
        region.fixed.iter().fold(0u128, |sum, (a, b)| {
            sum.saturating_add(b - a).saturating_add(1)
        })
    };
    let region = key
        .rules()
        .iter()
        .filter_map(|u| map.regions.get(*map.region_of.get(*u)?))
        .filter_map(|r| regions.get(*r))
        .min_by_key(|region| (width(region), region.nodes.len()))
        .ok_or(Structural)?
        .clone();
    let empty = LiveRegion::empty(map.family);
    reclassify(
        ruleset,
        touched,
        map,
        (regions, slot),
        (cluster, holders),
        &[(empty, region)],
    )
}

/// Classifies again, in `map`, the addresses on which the old and new regions of `changes`
/// disagree, over the map's regions as they are now, and splices them in.
fn reclassify(
    ruleset: &mut Ruleset,
    touched: &mut Option<Touched>,
    map: &mut PeersMap,
    (regions, slot): (&[LiveRegion], &SlotSubjects),
    (cluster, holders): (&ClusterState, &HashMap<IpAddr, u32>),
    changes: &[(LiveRegion, LiveRegion)],
) -> Result<usize, Structural> {
    let family = map.family;
    let holders_of = |n: u128| holders.get(&from_u128(family, n)).copied().unwrap_or(0);
    // Ranges one region's networks cover and the other's do not.
    let spans = merge_spans(
        changes
            .iter()
            .flat_map(|(old, new)| differing(&old.fixed, &new.fixed))
            .collect(),
    );
    let in_spans = |n: u128| ranges_hold(&spans, n);
    // Single addresses: Nodes one region holds and the other does not, pods one region selects
    // and the other does not.
    let mut points: BTreeMap<u128, Option<Holder<'_>>> = BTreeMap::new();
    for (old, new) in changes {
        for n in old.nodes.keys().chain(new.nodes.keys()) {
            if old.nodes.contains_key(n) != new.nodes.contains_key(n) {
                if holders_of(*n) > 0 {
                    // A pod holds it too: who resolves its named ports is not known here.
                    return Err(Structural);
                }
                points.insert(*n, None);
            }
        }
    }
    for (n, holder) in selection_changes(cluster, family, changes) {
        if holders_of(n) > 1 {
            return Err(Structural);
        }
        points.insert(n, Some(holder));
    }
    let mut chains: BTreeSet<String> = BTreeSet::new();
    let mut count = 0;
    if !spans.is_empty() {
        // The pods whose addresses lie in the spans draw boundaries there.
        let mut pods_in_spans: BTreeMap<u128, Holder<'_>> = BTreeMap::new();
        for pod in cluster.participating_pods() {
            let Some(ip) = pod.ip(family) else { continue };
            let n = to_u128(&ip);
            if !in_spans(n) {
                continue;
            }
            let labels = cluster.namespace(&pod.id.namespace).map(|ns| &ns.labels);
            if pods_in_spans.insert(n, (pod, labels)).is_some() || holders_of(n) > 1 {
                return Err(Structural);
            }
        }
        for &(a, b) in &spans {
            let targets = sweep(map, regions, (a, b), &pods_in_spans)
                .into_iter()
                .map(|(s, e, held)| Ok((s, e, map.chain_of(slot, cluster, held)?)))
                .collect::<Result<Vec<_>, Structural>>()?;
            count += map.splice(ruleset, touched, (a, b), &targets, &mut chains);
        }
    }
    // Consecutive addresses (a workload's pods, mostly) are spliced as one span.
    let mut run: Option<(u128, u128, Vec<Target>)> = None;
    for (n, holder) in points.into_iter().filter(|(n, _)| !in_spans(*n)) {
        let held = map.held_at(regions, n, holder);
        let target = map.chain_of(slot, cluster, held)?;
        match &mut run {
            Some((_, last, targets)) if last.checked_add(1) == Some(n) => {
                *last = n;
                match targets.last_mut() {
                    Some(t) if t.2 == target => t.1 = n,
                    _ => targets.push((n, n, target)),
                }
            }
            _ => {
                if let Some((a, b, targets)) = run.replace((n, n, vec![(n, n, target)])) {
                    count += map.splice(ruleset, touched, (a, b), &targets, &mut chains);
                }
            }
        }
    }
    if let Some((a, b, targets)) = run {
        count += map.splice(ruleset, touched, (a, b), &targets, &mut chains);
    }
    for chain in chains {
        map.settle(ruleset, touched, &chain)?;
    }
    Ok(count)
}

/// The participating pods of `family` on which some change's old and new regions disagree (one
/// holds the pod's address and the other does not, or either does and the egress named ports
/// resolved at the pod differ), by address, each as a holder. Only the namespaces that the peers
/// one version has and the other lacks can select are read, unless named ports changed: they
/// resolve at every pod a region holds, whichever peer (or network, or Node) puts it there.
fn selection_changes<'c>(
    cluster: &'c ClusterState,
    family: Family,
    changes: &[(LiveRegion, LiveRegion)],
) -> Vec<(u128, Holder<'c>)> {
    let mut out = Vec::new();
    let mut check = |pod: &'c Pod, labels: Option<&'c Labels>| {
        let Some(ip) = pod.ip(family) else { return };
        let (n, holder) = (to_u128(&ip), (pod, labels));
        let differs = changes.iter().any(|(old, new)| {
            let (was, is) = (old.holds(n, Some(holder)), new.holds(n, Some(holder)));
            was != is || ((was || is) && old.named_ports != new.named_ports)
        });
        if differs {
            out.push((n, holder));
        }
    };
    if changes
        .iter()
        .any(|(old, new)| old.named_ports != new.named_ports)
    {
        for pod in cluster.participating_pods() {
            check(pod, cluster.namespace(&pod.id.namespace).map(|n| &n.labels));
        }
        return out;
    }
    // A pod's membership changes only through a peer one version has and the other does not:
    // only the namespaces those can select are read.
    let differing: Vec<&ClusterPeer> = changes
        .iter()
        .flat_map(|(old, new)| {
            let gone = old.peers.iter().filter(|p| !new.peers.contains(p));
            let came = new.peers.iter().filter(|p| !old.peers.contains(p));
            gone.chain(came)
        })
        .filter(|p| matches!(p, ClusterPeer::Namespaces(_) | ClusterPeer::Pods(_)))
        .collect();
    if differing.is_empty() {
        return out;
    }
    for (name, namespace) in cluster.namespaces() {
        let labels = &namespace.labels;
        if !differing.iter().any(|peer| may_select_in(peer, labels)) {
            continue;
        }
        let from = ObjectRef::new(name.as_str(), "");
        let pods = cluster
            .pods()
            .range(from..)
            .take_while(|(id, _)| &*id.namespace == name.as_str())
            .map(|(_, p)| p)
            .filter(|p| p.participates());
        for pod in pods {
            check(pod, Some(labels));
        }
    }
    out
}

/// Whether `peer` can select pods of a namespace with `labels`.
fn may_select_in(peer: &ClusterPeer, labels: &Labels) -> bool {
    match peer {
        ClusterPeer::Namespaces(s) => s.matches(labels),
        ClusterPeer::Pods(p) => p.namespaces.matches(labels),
        ClusterPeer::Networks(_) | ClusterPeer::Nodes(_) | ClusterPeer::Unknown => false,
    }
}

/// The ranges one of two sorted, disjoint range lists covers and the other does not, sorted.
fn differing(a: &[(u128, u128)], b: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut cuts: Vec<u128> = Vec::with_capacity(2 * (a.len() + b.len()));
    for &(x, y) in a.iter().chain(b) {
        cuts.push(x);
        if let Some(after) = y.checked_add(1) {
            cuts.push(after);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<(u128, u128)> = Vec::new();
    for (i, &start) in cuts.iter().enumerate() {
        if ranges_hold(a, start) == ranges_hold(b, start) {
            continue;
        }
        // The last cut is the end of a range that reaches the top of the address space.
        let end = cuts.get(i + 1).map_or(u128::MAX, |c| c - 1);
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(start) => last.1 = end,
            _ => out.push((start, end)),
        }
    }
    out
}

/// Sorts and merges ranges that overlap or touch.
fn merge_spans(mut spans: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    spans.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The classes over `first..=last` in `map`: the span cut at every boundary a region of the map
/// draws inside it (its networks' ends, its Nodes' addresses) and at the addresses of the pods
/// in it (`pods`, by address), each piece with its class.
fn sweep(
    map: &PeersMap,
    regions: &[LiveRegion],
    (first, last): (u128, u128),
    pods: &BTreeMap<u128, Holder<'_>>,
) -> Vec<(u128, u128, RegionClass)> {
    let max = max_u128(map.family);
    let last = last.min(max);
    let mut cuts: Vec<u128> = vec![first];
    let single = |n: u128, cuts: &mut Vec<u128>| {
        if first <= n && n <= last {
            cuts.push(n);
            if n < last {
                cuts.push(n + 1);
            }
        }
    };
    for region in map.regions.iter().filter_map(|r| regions.get(*r)) {
        for &(x, y) in &region.fixed {
            if first < x && x <= last {
                cuts.push(x);
            }
            if first <= y && y < last {
                cuts.push(y + 1);
            }
        }
        for n in region.nodes.keys() {
            single(*n, &mut cuts);
        }
    }
    for n in pods.range(first..=last).map(|(n, _)| *n) {
        single(n, &mut cuts);
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.iter()
        .enumerate()
        .map(|(i, &start)| {
            let end = cuts.get(i + 1).map_or(last, |c| c - 1);
            let holder = if start == end {
                pods.get(&start).copied()
            } else {
                None
            };
            (start, end, map.held_at(regions, start, holder))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_ranges_are_what_one_list_covers_alone() {
        assert_eq!(differing(&[(10, 20)], &[(10, 20)]), vec![]);
        assert_eq!(
            differing(&[(10, 20)], &[(15, 30)]),
            vec![(10, 14), (21, 30)]
        );
        assert_eq!(differing(&[], &[(5, 5)]), vec![(5, 5)]);
        assert_eq!(
            differing(&[(0, u128::MAX)], &[(3, 4)]),
            vec![(0, 2), (5, u128::MAX)]
        );
        assert_eq!(differing(&[(1, 2), (3, 4)], &[(1, 4)]), vec![]);
    }

    #[test]
    fn spans_merge_when_they_touch() {
        assert_eq!(
            merge_spans(vec![(5, 9), (1, 4), (20, 30), (25, 26)]),
            vec![(1, 9), (20, 30)]
        );
    }
}
