//! What a change does to who can reach whom (`policyc diff`): the connections added, removed and
//! changed between two versions of a cluster, each with the policies (or workloads) that cause it,
//! and the workloads added and removed.
//!
//! Both versions' connections come from [`Connectivity`]. A pair of workloads is compared per
//! address family: a change that is the same for every family the pair has is one entry
//! (`family: None`), otherwise there is one entry per family that changed. A pair is *added* when
//! nothing was allowed before and something is now, *removed* in the opposite case, *changed* when
//! something was allowed before and after, but not the same.
//!
//! External address ranges are cut where either version's ipBlocks cut them, so the two versions'
//! ranges need not match: both versions' ranges of a family are split at the union of their
//! boundaries, every piece is compared on its own (it lies in exactly one range of each version),
//! and adjacent pieces that changed alike are merged again. A changed ipBlock cidr therefore
//! shows as the addresses whose connectivity changed, written `first-last` as in `connections`,
//! and nothing else.
//!
//! The causes of a change are the policies that differ between the versions (added, removed or
//! edited) among those that decide the pair in either version ([`Connectivity::causes`]): those
//! whose rules let something through for the pair, and those isolating an end in a direction in
//! which that end is isolated in one version and not in the other (a policy that isolates an end
//! other policies isolate in both versions changes nothing for the pair, and is not named; nor is
//! one that only isolates a workload present in one version, which is itself the cause). The
//! ClusterNetworkPolicies that differ are named by their rules that decide some of the pair's
//! connections in either version. Then the ends of the pair that are workloads which changed:
//! present in one version only, pods with other labels, addresses or ports, or a namespace with
//! other labels; and the ends that are Nodes which changed (labels or addresses). When no policy
//! changed (a workload's labels did), the workloads or nodes are the cause; a pair cannot change
//! without one or the other.

mod report;

use std::collections::{BTreeSet, HashMap, HashSet};

pub use report::{to_json, to_markdown, to_text, NodeTransaction, MARKDOWN_ROWS};

use crate::analysis::connectivity::{ConnSet, Connection, Connectivity, Lookup, Party};
use crate::analysis::TierMatch;
use crate::cidr::{from_u128, max_u128, to_u128, Family};
use crate::cluster::ClusterState;
use crate::model::{Direction, ObjectRef, WorkloadRef};

/// One version of a cluster: its (materialized) state and the connectivity computed from it.
#[derive(Debug, Clone, Copy)]
pub struct Version<'a> {
    /// The cluster.
    pub cluster: &'a ClusterState,
    /// Its connectivity.
    pub connectivity: &'a Connectivity,
}

impl<'a> Version<'a> {
    /// A cluster with the connectivity computed from it.
    pub fn new(cluster: &'a ClusterState, connectivity: &'a Connectivity) -> Self {
        Version {
            cluster,
            connectivity,
        }
    }
}

/// How a pair changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// Nothing was allowed before; something is now.
    Added,
    /// Something was allowed before; nothing is now.
    Removed,
    /// Something is allowed before and after, but not the same.
    Changed,
}

/// A pair whose allowed connections differ between the versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Source.
    pub from: Party,
    /// Destination.
    pub to: Party,
    /// The family that changed, when the pair's families changed differently (`None`: the same
    /// change for every family of the pair, or an external range's own).
    pub family: Option<Family>,
    /// What was allowed (empty for an added pair).
    pub before: ConnSet,
    /// What is allowed now (empty for a removed pair).
    pub after: ConnSet,
    /// The NetworkPolicies that changed among those deciding the pair, in either version,
    /// sorted.
    pub policies: Vec<ObjectRef>,
    /// The rules of the ClusterNetworkPolicies that changed that decide some of the pair's
    /// connections, in either version (the old version's first), with their action.
    pub cluster_rules: Vec<TierMatch>,
    /// The ends of the pair that are workloads which changed, sorted.
    pub workloads: Vec<WorkloadRef>,
    /// The ends of the pair that are Nodes which changed (labels or addresses), sorted.
    pub nodes: Vec<String>,
}

impl Change {
    /// Added, removed or changed.
    pub fn kind(&self) -> ChangeKind {
        if self.before.is_empty() {
            ChangeKind::Added
        } else if self.after.is_empty() {
            ChangeKind::Removed
        } else {
            ChangeKind::Changed
        }
    }

    /// The pair as it was.
    pub fn before(&self) -> Connection<'_> {
        Connection {
            from: &self.from,
            to: &self.to,
            family: self.family,
            allowed: &self.before,
        }
    }

    /// The pair as it is now.
    pub fn after(&self) -> Connection<'_> {
        Connection {
            from: &self.from,
            to: &self.to,
            family: self.family,
            allowed: &self.after,
        }
    }
}

/// The difference between two versions' connectivity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Pairs with nothing allowed before, sorted by source, destination and family.
    pub added: Vec<Change>,
    /// Pairs with nothing allowed now, sorted likewise.
    pub removed: Vec<Change>,
    /// Pairs allowed before and after, but not the same, sorted likewise.
    pub changed: Vec<Change>,
    /// Workloads of the new version only, sorted.
    pub workloads_added: Vec<WorkloadRef>,
    /// Workloads of the old version only, sorted.
    pub workloads_removed: Vec<WorkloadRef>,
}

impl Diff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.workloads_added.is_empty()
            && self.workloads_removed.is_empty()
    }

    /// The changes of one kind.
    pub fn of_kind(&self, kind: ChangeKind) -> &[Change] {
        match kind {
            ChangeKind::Added => &self.added,
            ChangeKind::Removed => &self.removed,
            ChangeKind::Changed => &self.changed,
        }
    }
}

/// One version, indexed.
struct Side<'a> {
    version: Version<'a>,
    lookup: Lookup<'a>,
}

/// A change found, before its causes are worked out.
struct Found<'a> {
    from: Party,
    to: Party,
    family: Option<Family>,
    before: Option<&'a ConnSet>,
    after: Option<&'a ConnSet>,
    /// The families compared.
    families: Vec<Family>,
    /// Per version, the pairs of parties the entry covers (one for workloads; for external
    /// ranges, every range of that version a merged piece lies in).
    pairs: [Vec<(&'a Party, &'a Party)>; 2],
}

/// The difference between the connectivity of `old` and `new`.
pub fn diff(old: Version<'_>, new: Version<'_>) -> Diff {
    let sides = [
        Side {
            version: old,
            lookup: old.connectivity.lookup(),
        },
        Side {
            version: new,
            lookup: new.connectivity.lookup(),
        },
    ];
    let mut found = workload_pairs(&sides);
    for family in [Family::V4, Family::V6] {
        found.extend(external_pairs(&sides, family));
    }

    let policies_changed = changed_policies(old.cluster, new.cluster);
    let cluster_policies_changed: HashSet<&str> = old
        .cluster
        .cluster_policies()
        .keys()
        .chain(new.cluster.cluster_policies().keys())
        .filter(|name| old.cluster.cluster_policy(name) != new.cluster.cluster_policy(name))
        .map(String::as_str)
        .collect();
    let mut workload_changed: HashMap<WorkloadRef, bool> = HashMap::new();
    let mut out = Diff::default();
    for f in found {
        let policies = causing_policies(&sides, &f, &policies_changed);
        let cluster_rules = causing_cluster_rules(&sides, &f, &cluster_policies_changed);
        let mut nodes: Vec<String> = [&f.from, &f.to]
            .into_iter()
            .filter_map(|end| match end {
                Party::Node(n) if old.cluster.node(&n.name) != new.cluster.node(&n.name) => {
                    Some(n.name.clone())
                }
                _ => None,
            })
            .collect();
        nodes.sort();
        nodes.dedup();
        let mut workloads: Vec<WorkloadRef> = Vec::new();
        for end in [&f.from, &f.to] {
            let Party::Workload(w) = end else { continue };
            let changed = *workload_changed
                .entry(w.clone())
                .or_insert_with(|| workload_differs(&sides, end));
            if changed && !workloads.contains(w) {
                workloads.push(w.clone());
            }
        }
        workloads.sort();
        let change = Change {
            from: f.from,
            to: f.to,
            family: f.family,
            before: f.before.cloned().unwrap_or_default(),
            after: f.after.cloned().unwrap_or_default(),
            policies,
            cluster_rules,
            workloads,
            nodes,
        };
        match change.kind() {
            ChangeKind::Added => out.added.push(change),
            ChangeKind::Removed => out.removed.push(change),
            ChangeKind::Changed => out.changed.push(change),
        }
    }
    for list in [&mut out.added, &mut out.removed, &mut out.changed] {
        list.sort_by_cached_key(|c| (c.from.to_string(), c.to.to_string(), c.family));
    }
    let workloads = |side: &Side<'_>| -> BTreeSet<WorkloadRef> {
        side.version
            .connectivity
            .parties()
            .iter()
            .filter_map(|p| match p {
                Party::Workload(w) => Some(w.clone()),
                Party::External { .. } | Party::Node(_) => None,
            })
            .collect()
    };
    let (before, after) = (workloads(&sides[0]), workloads(&sides[1]));
    out.workloads_added = after.difference(&before).cloned().collect();
    out.workloads_removed = before.difference(&after).cloned().collect();
    out
}

/// The changed policies that cause a change: those whose rules let something through for the
/// pair in either version, and those isolating an end (of both versions) in a direction in which
/// it is isolated in one version and not in the other. A policy that isolates an end other
/// policies isolate in both versions changes nothing for the pair and is left out; so is one that
/// only isolates a workload of one version (the workload is the cause).
fn causing_policies(
    sides: &[Side<'_>; 2],
    found: &Found<'_>,
    changed: &HashSet<ObjectRef>,
) -> Vec<ObjectRef> {
    let mut out: BTreeSet<ObjectRef> = BTreeSet::new();
    for (side, pairs) in sides.iter().zip(&found.pairs) {
        for (a, b) in pairs {
            for family in &found.families {
                let causes = side.version.connectivity.causes(a, b, *family);
                out.extend(
                    causes
                        .allowed_by
                        .into_iter()
                        .map(|r| r.policy)
                        .filter(|p| changed.contains(p)),
                );
            }
        }
    }
    for (direction, end) in [
        (Direction::Egress, &found.from),
        (Direction::Ingress, &found.to),
    ] {
        if !sides.iter().all(|s| s.lookup.contains(end)) {
            continue;
        }
        let isolating = sides
            .each_ref()
            .map(|s| s.version.connectivity.isolated_by(end, direction));
        if isolating[0].is_empty() != isolating[1].is_empty() {
            out.extend(
                isolating
                    .into_iter()
                    .flatten()
                    .filter(|p| changed.contains(*p))
                    .cloned(),
            );
        }
    }
    out.into_iter().collect()
}

/// The rules of changed ClusterNetworkPolicies that decide some of the pair's connections in
/// either version.
fn causing_cluster_rules(
    sides: &[Side<'_>; 2],
    found: &Found<'_>,
    changed: &HashSet<&str>,
) -> Vec<TierMatch> {
    let mut out: Vec<TierMatch> = Vec::new();
    for (side, pairs) in sides.iter().zip(&found.pairs) {
        for (a, b) in pairs {
            for family in &found.families {
                for m in side
                    .version
                    .connectivity
                    .causes(a, b, *family)
                    .cluster_rules
                {
                    if changed.contains(m.rule.policy.as_str()) && !out.contains(&m) {
                        out.push(m);
                    }
                }
            }
        }
    }
    out
}

/// Policies added, removed or edited.
fn changed_policies(old: &ClusterState, new: &ClusterState) -> HashSet<ObjectRef> {
    old.policies()
        .keys()
        .chain(new.policies().keys())
        .filter(|id| old.policies().get(*id) != new.policies().get(*id))
        .cloned()
        .collect()
}

/// Whether a workload party differs between the versions in what policy sees: present in one
/// only, its pods (labels, addresses, ports, taking part) or its namespace's labels.
fn workload_differs<'a>(sides: &'a [Side<'a>; 2], party: &Party) -> bool {
    let Party::Workload(w) = party else {
        return false;
    };
    if !sides.iter().all(|s| s.lookup.contains(party)) {
        return true;
    }
    let seen = |side: &'a Side<'a>| {
        let cluster = side.version.cluster;
        let pods: Vec<_> = side
            .lookup
            .members(party)
            .iter()
            .map(|id| {
                cluster
                    .pod(id)
                    .map(|p| (&p.id, &p.labels, &p.ips, &p.ports, p.participates()))
            })
            .collect();
        let namespace = cluster.namespace(&w.namespace).map(|n| &n.labels);
        (pods, namespace)
    };
    seen(&sides[0]) != seen(&sides[1])
}

/// Pairs of workloads, and of workloads and nodes, whose connections differ.
fn workload_pairs<'a>(sides: &'a [Side<'a>; 2]) -> Vec<Found<'a>> {
    let mut pairs: HashSet<(&Party, &Party)> = HashSet::new();
    for side in sides {
        for c in side.version.connectivity.connections() {
            let external = |p: &Party| matches!(p, Party::External { .. });
            if !external(c.from) && !external(c.to) {
                pairs.insert((c.from, c.to));
            }
        }
    }
    let mut found = Vec::new();
    for (from, to) in pairs {
        let mut families: Vec<Family> = sides
            .iter()
            .flat_map(|s| s.lookup.shared_families(from, to))
            .collect();
        families.sort();
        families.dedup();
        let compared: Vec<(Family, Option<&ConnSet>, Option<&ConnSet>)> = families
            .iter()
            .map(|f| {
                (
                    *f,
                    sides[0].lookup.allowed(from, to, *f),
                    sides[1].lookup.allowed(from, to, *f),
                )
            })
            .collect();
        let differ: Vec<&(Family, Option<&ConnSet>, Option<&ConnSet>)> =
            compared.iter().filter(|(_, b, a)| b != a).collect();
        let Some(first) = differ.first() else {
            continue;
        };
        let pair_in = |side: &Side<'_>| -> Vec<(&'a Party, &'a Party)> {
            if side.lookup.contains(from) && side.lookup.contains(to) {
                vec![(from, to)]
            } else {
                Vec::new()
            }
        };
        let pairs = [pair_in(&sides[0]), pair_in(&sides[1])];
        let alike = differ.len() == compared.len()
            && differ
                .iter()
                .all(|(_, b, a)| (*b, *a) == (first.1, first.2));
        if alike {
            found.push(Found {
                from: from.clone(),
                to: to.clone(),
                family: None,
                before: first.1,
                after: first.2,
                families,
                pairs,
            });
        } else {
            for (f, before, after) in differ {
                found.push(Found {
                    from: from.clone(),
                    to: to.clone(),
                    family: Some(*f),
                    before: *before,
                    after: *after,
                    families: vec![*f],
                    pairs: pairs.clone(),
                });
            }
        }
    }
    found
}

/// An external range of one version, as numbers.
struct Range<'a> {
    first: u128,
    last: u128,
    party: &'a Party,
}

/// Adjacent pieces of the address space that changed alike.
struct Run<'a> {
    first: u128,
    last: u128,
    before: Option<&'a ConnSet>,
    after: Option<&'a ConnSet>,
    /// Per version, the ranges the pieces lie in.
    holders: [Vec<&'a Party>; 2],
}

/// Connections between workloads and the external addresses of `family` that differ, per piece
/// of the address space both versions' ranges cut, adjacent pieces that changed alike merged.
fn external_pairs<'a>(sides: &'a [Side<'a>; 2], family: Family) -> Vec<Found<'a>> {
    let ranges = |side: &'a Side<'a>| -> Vec<Range<'a>> {
        let mut out: Vec<Range<'a>> = side
            .version
            .connectivity
            .parties()
            .iter()
            .filter_map(|p| match p {
                Party::External { first, last } if Family::of(first) == family => Some(Range {
                    first: to_u128(first),
                    last: to_u128(last),
                    party: p,
                }),
                _ => None,
            })
            .collect();
        out.sort_by_key(|r| r.first);
        out
    };
    let ranges = [ranges(&sides[0]), ranges(&sides[1])];
    // The pieces: cut at every range's start and after every range's end.
    let mut cuts: BTreeSet<u128> = BTreeSet::new();
    for r in ranges.iter().flatten() {
        cuts.insert(r.first);
        if r.last < max_u128(family) {
            cuts.insert(r.last + 1);
        }
    }
    let cuts: Vec<u128> = cuts.into_iter().collect();
    let containing = |list: &[Range<'a>], n: u128| -> Option<&'a Party> {
        let i = list.partition_point(|r| r.first <= n).checked_sub(1)?;
        (list[i].last >= n).then_some(list[i].party)
    };
    // (first, last, the range holding it in each version)
    let pieces: Vec<(u128, u128, [Option<&'a Party>; 2])> = cuts
        .iter()
        .enumerate()
        .map(|(i, &first)| {
            let last = cuts
                .get(i + 1)
                .map(|next| next - 1)
                .unwrap_or(max_u128(family));
            let holders = [containing(&ranges[0], first), containing(&ranges[1], first)];
            (first, last, holders)
        })
        .filter(|(_, _, holders)| holders.iter().any(Option::is_some))
        .collect();
    if pieces.is_empty() {
        return Vec::new();
    }
    // Workloads with a connection to or from an external range, in either version.
    let mut workloads: HashSet<&'a Party> = HashSet::new();
    for side in sides {
        for c in side.version.connectivity.connections() {
            match (c.from, c.to) {
                (w @ Party::Workload(_), Party::External { first, .. })
                | (Party::External { first, .. }, w @ Party::Workload(_))
                    if Family::of(first) == family =>
                {
                    workloads.insert(w);
                }
                _ => {}
            }
        }
    }
    let mut found = Vec::new();
    for w in workloads {
        for outbound in [true, false] {
            let allowed = |s: usize, range: Option<&'a Party>| -> Option<&'a ConnSet> {
                let range = range?;
                let lookup = &sides[s].lookup;
                if outbound {
                    lookup.allowed(w, range, family)
                } else {
                    lookup.allowed(range, w, family)
                }
            };
            let mut run: Option<Run<'a>> = None;
            let mut flush = |run: Option<Run<'a>>| {
                let Some(run) = run else { return };
                let range = Party::External {
                    first: from_u128(family, run.first),
                    last: from_u128(family, run.last),
                };
                let pairs = [0, 1].map(|s| -> Vec<(&Party, &Party)> {
                    if !sides[s].lookup.contains(w) {
                        return Vec::new();
                    }
                    run.holders[s]
                        .iter()
                        .map(|h| if outbound { (w, *h) } else { (*h, w) })
                        .collect()
                });
                let (from, to) = if outbound {
                    (w.clone(), range)
                } else {
                    (range, w.clone())
                };
                found.push(Found {
                    from,
                    to,
                    family: None,
                    before: run.before,
                    after: run.after,
                    families: vec![family],
                    pairs,
                });
            };
            for (first, last, holders) in &pieces {
                let before = allowed(0, holders[0]);
                let after = allowed(1, holders[1]);
                if before == after {
                    flush(run.take());
                    continue;
                }
                let extends = run.as_ref().is_some_and(|r| {
                    r.last.checked_add(1) == Some(*first) && (r.before, r.after) == (before, after)
                });
                if !extends {
                    flush(run.take());
                }
                let current = run.get_or_insert_with(|| Run {
                    first: *first,
                    last: *last,
                    before,
                    after,
                    holders: Default::default(),
                });
                current.last = *last;
                for (touched, holder) in current.holders.iter_mut().zip(holders) {
                    if let Some(h) = holder {
                        if !touched.contains(h) {
                            touched.push(h);
                        }
                    }
                }
            }
            flush(run.take());
        }
    }
    found
}

#[cfg(test)]
mod tests;
