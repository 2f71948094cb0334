//! ClusterNetworkPolicy tiers in the ruleset: the Admin tier before the NetworkPolicy verdict maps,
//! the Baseline tier after them.
//!
//! Layout, for each tier and direction that some ClusterNetworkPolicy of the cluster has rules in,
//! and each family:
//! - the base chain of the direction holds one rule, placed before (Admin) or after (Baseline) the
//!   NetworkPolicy maps: `ip saddr @admin_egress_subjects_v4 ip daddr vmap @admin_egress_peers_v4`
//!   (for ingress the fields swap): a local pod the tier's policies select looks its *peer* up;
//! - the peers map is an interval map from peer address ranges to the chain of their *peer class*.
//!   A class is the set of the tier's rules (of the policies selecting some local pod) whose peers
//!   hold an address: every address in it is judged alike by every rule. Pods and Nodes are single
//!   addresses, networks ranges; the classes are few (they follow the selectors, not the pods);
//! - a class chain looks the *local pod* up in two decision maps, one keyed by `local address .
//!   protocol . port` for TCP, UDP and SCTP, one by local address for every other protocol. Each
//!   element holds, for the pods of one combination of policies, the first rule in evaluation order
//!   that matches the class and the packet: a jump to that rule's chain (`admin_RULE_guard_egress_2`,
//!   one per Accept or Deny rule of the policies judging some local pod), which counts and accepts or
//!   drops (with the deny log, a Deny logs first; under `audit_all` it accepts, a "would deny").
//!   No element: no rule matches, or the first that does is a Pass, and the next stage judges. A
//!   Pass rule so takes what it matches from the rules after it without an element of its own, and
//!   a class whose rules decide nothing but Pass for every local pod has no chain: its addresses
//!   have no element in the peers map, and a packet to them costs only the base chain's two
//!   lookups.
//!
//! So the first-match order of a tier costs three lookups per packet however many rules it has;
//! the peer addresses are listed once per tier and direction, not once per combination of
//! policies; pod churn only changes elements (a class chain appears only when a pod brings a new
//! class); and a Baseline rule never sees a pod NetworkPolicies isolate (their group chains decide
//! first on forward, and such pods are not Baseline subjects).
//!
//! What a local pod sends to its own node crosses the input hook, not forward: when the cluster has
//! egress rules, the `node_egress` base chain looks the same subjects and peers up there. A pod that
//! NetworkPolicies isolate for egress is not a Baseline subject: on forward its group chain decides
//! before, and on input NetworkPolicy allows (it never restricts a pod's traffic to its node).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::class_runs::{ClassRuns, RunChanges};
use super::isolation::LocalPod;
use super::naming::{
    cluster_rule_chain_name, cluster_rule_token, tier_class_chain_name, tier_class_map_name,
    tier_peers_map_name, tier_subjects_set_name, ResolvedNamedPort, NODE_EGRESS_CHAIN,
};
use super::origin::{CompileOptions, Origin, Origins};
use super::peers::{element_counts, LiveRegion, PeerBook, PeersMap, Stash, Structural};
use super::regions::reveal;
use super::rules::drop_point_rules;
use super::universe::Shift;
use crate::cidr::{max_u128, to_u128, Family};
use crate::cluster::ClusterState;
use crate::index::ClusterIndex;
use crate::model::{
    Action, ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, Direction, ObjectRef, Pod,
    Protocol, Tier,
};
use crate::nft::transaction::Touched;
use crate::nft::{
    AddrField, BaseChain, Chain, Decision, DecisionKey, DecisionMap, DecisionVerdict, Hook, Match,
    Rule as NftRule, Ruleset, Set, SetElement, SetType, Verdict,
};
use crate::selector::LabelSelector;

/// What the tiers read of a local pod: the pod, whether NetworkPolicies (enforced ones, or every
/// one under `audit_all`) isolate it in each direction, and for each tier and direction the
/// ClusterNetworkPolicies that judge its traffic (those whose subject holds it that have rules in
/// that direction), in evaluation order.
#[derive(Debug, Clone)]
pub(super) struct TierSubject<'a> {
    pub(super) pod: &'a Pod,
    /// Isolated for ingress, for egress.
    pub(super) isolated: [bool; 2],
    /// By [`TierSubject::slot`].
    pub(super) judging: [Vec<&'a ClusterNetworkPolicy>; 4],
}

impl<'a> TierSubject<'a> {
    /// What the tiers read of `local`.
    pub(super) fn of(local: &LocalPod<'a>) -> Self {
        let judging = Self::SLOTS.map(|(tier, direction)| {
            local
                .cluster_policies
                .iter()
                .copied()
                .filter(|c| c.tier == tier && !c.rules(direction).is_empty())
                .collect()
        });
        Self {
            pod: local.pod,
            isolated: [
                !local.policies(Direction::Ingress).is_empty(),
                !local.policies(Direction::Egress).is_empty(),
            ],
            judging,
        }
    }

    /// Each tier and direction, at its slot.
    pub(super) const SLOTS: [(Tier, Direction); 4] = [
        (Tier::Admin, Direction::Ingress),
        (Tier::Admin, Direction::Egress),
        (Tier::Baseline, Direction::Ingress),
        (Tier::Baseline, Direction::Egress),
    ];

    /// The position of a tier and direction in [`TierSubject::SLOTS`].
    fn slot(tier: Tier, direction: Direction) -> usize {
        let tier = match tier {
            Tier::Admin => 0,
            Tier::Baseline => 2,
        };
        tier + match direction {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        }
    }

    /// Whether NetworkPolicies isolate the pod in `direction`.
    fn isolated(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.isolated[0],
            Direction::Egress => self.isolated[1],
        }
    }

    /// The ClusterNetworkPolicies of `tier` that judge the pod's traffic in `direction`, in
    /// evaluation order.
    fn judging(&self, tier: Tier, direction: Direction) -> &[&'a ClusterNetworkPolicy] {
        &self.judging[Self::slot(tier, direction)]
    }
}

/// The tiers and directions the cluster's ClusterNetworkPolicies have rules in: only those get
/// rules in the base chains, so a cluster without ClusterNetworkPolicies renders as before and a
/// pod's arrival never changes a chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Layout {
    present: BTreeSet<(Tier, Direction)>,
}

impl Layout {
    pub(super) fn of(cluster: &ClusterState) -> Self {
        let mut present = BTreeSet::new();
        for policy in cluster.cluster_policies().values() {
            for direction in Direction::BOTH {
                if !policy.rules(direction).is_empty() {
                    present.insert((policy.tier, direction));
                }
            }
        }
        Self { present }
    }

    pub(super) fn has(&self, tier: Tier, direction: Direction) -> bool {
        self.present.contains(&(tier, direction))
    }

    /// Whether no tier has rules in any direction.
    pub(super) fn is_empty(&self) -> bool {
        self.present.is_empty()
    }

    fn has_egress(&self) -> bool {
        Tier::ALL.iter().any(|t| self.has(*t, Direction::Egress))
    }
}

/// The field that holds the local pod: the source for egress, the destination for ingress.
fn subject_field(direction: Direction) -> AddrField {
    match direction {
        Direction::Egress => AddrField::Saddr,
        Direction::Ingress => AddrField::Daddr,
    }
}

/// The field that holds the peer.
fn peer_field(direction: Direction) -> AddrField {
    match direction {
        Direction::Egress => AddrField::Daddr,
        Direction::Ingress => AddrField::Saddr,
    }
}

/// The rules of a tier for a base chain (one per family), creating its subjects sets and peers
/// maps (filled by [`TierRenderer`]).
pub(super) fn dispatch_rules(
    ruleset: &mut Ruleset,
    tier: Tier,
    direction: Direction,
) -> Vec<NftRule> {
    [Family::V4, Family::V6]
        .into_iter()
        .map(|family| {
            let set = tier_subjects_set_name(tier, direction, family);
            let map = tier_peers_map_name(tier, direction, family);
            ruleset.sets.entry(set.clone()).or_insert_with(|| Set {
                set_type: SetType::Addr(family),
                comment: format!("{tier} {direction} subjects"),
                elements: BTreeSet::new(),
            });
            ruleset
                .decision_maps
                .entry(map.clone())
                .or_insert_with(|| DecisionMap {
                    family,
                    ports: false,
                    elements: BTreeMap::new(),
                });
            NftRule {
                matches: vec![Match::InSet {
                    family,
                    field: subject_field(direction),
                    set,
                }],
                verdict: Verdict::DecisionVmap {
                    family,
                    field: peer_field(direction),
                    ports: false,
                    map,
                },
                comment: None,
            }
        })
        .collect()
}

/// The `node_egress` base chain on the input hook, when the cluster has egress rules: the Admin
/// tier, then the Baseline tier. NetworkPolicy never restricts a pod's traffic to its node, so
/// nothing stands between them; the pods NetworkPolicies isolate are not Baseline subjects
/// (see [`TierRenderer`]), so they pass.
pub(super) fn node_egress_chain(ruleset: &mut Ruleset, layout: &Layout) {
    if !layout.has_egress() {
        return;
    }
    let mut rules = vec![NftRule {
        matches: vec![Match::CtEstablishedOrRelated],
        verdict: Verdict::Accept,
        comment: None,
    }];
    if layout.has(Tier::Admin, Direction::Egress) {
        rules.extend(dispatch_rules(ruleset, Tier::Admin, Direction::Egress));
    }
    if layout.has(Tier::Baseline, Direction::Egress) {
        rules.extend(dispatch_rules(ruleset, Tier::Baseline, Direction::Egress));
    }
    ruleset.chains.insert(
        NODE_EGRESS_CHAIN.to_string(),
        Chain {
            base: Some(BaseChain {
                hook: Hook::Input,
                priority: 0,
            }),
            rules,
        },
    );
}

/// A named port's protocol and number on a pod (names are unique among a pod's ports).
pub(super) fn named_port(pod: &Pod, name: &str) -> Option<(Protocol, u16)> {
    pod.ports
        .iter()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| (p.protocol, p.port))
}

/// The destination named ports the ingress rules of some policies use, sorted, without repeats.
fn ingress_named_ports<'p>(policies: &[&'p ClusterNetworkPolicy]) -> Vec<&'p str> {
    let names: BTreeSet<&str> = policies
        .iter()
        .flat_map(|p| &p.ingress)
        .flat_map(rule_named_ports)
        .collect();
    names.into_iter().collect()
}

/// The policy of a [`cluster_rule_token`] (`policy.direction.index`; the name may hold dots).
fn token_policy(token: &str) -> &str {
    token.rsplitn(3, '.').last().unwrap_or_default()
}

/// The destination named ports of a rule's `protocols`, as written.
pub(super) fn rule_named_ports(rule: &ClusterRule) -> impl Iterator<Item = &str> {
    rule.protocols.iter().filter_map(|port| match port {
        ClusterPort::Named(n) => Some(n.as_str()),
        ClusterPort::Range { .. } => None,
    })
}

/// One combination of a tier: its policies, how its subjects resolve the named ports, its pods.
struct Combination<'a> {
    /// What tells it from the others: its policies' names and how its pods resolve the named
    /// ports.
    key: Vec<String>,
    policies: Vec<&'a ClusterNetworkPolicy>,
    named_ports: Vec<ResolvedNamedPort<'a>>,
    /// The addresses its pods decide: an address that several local subjects hold (a pod's
    /// address taken over before the API shows the pod that had it gone) is decided by the first
    /// of them in `namespace/name` order alone, so no two elements of a decision map overlap.
    addresses: Vec<IpAddr>,
    /// Its pods, each with the addresses it decides.
    members: Vec<(&'a ObjectRef, Vec<IpAddr>)>,
}

/// Where a rule's peers are, for one family: address ranges and, for egress named ports, the
/// ports each destination pod resolves them to.
#[derive(Debug, Default)]
struct PeerRegion {
    /// Inclusive address ranges, sorted, disjoint and not adjacent.
    ranges: Vec<(u128, u128)>,
    /// Destination pod address → the protocol and port its named ports resolve to (egress rules
    /// with named ports only).
    named: HashMap<u128, Vec<(Protocol, u16)>>,
}

/// A rule ready to decide: its ports.
struct SweepRule {
    /// `protocols` is empty: every protocol and port.
    all: bool,
    /// A Pass rule: it takes what it matches from the rules after it, and leaves it to the next
    /// stage, as no element does.
    pass: bool,
    /// Port ranges per protocol (in [`Protocol::ALL`] order), named ports resolved for ingress.
    ports: [Vec<(u16, u16)>; 3],
}

/// What a peer class decides for a combination: positions in the tier's rule list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cell {
    /// The rule deciding protocols without ports, if any.
    pub(super) other: Option<usize>,
    /// `(protocol, first port, last port, rule)`, by protocol and port.
    pub(super) ports: Vec<(Protocol, u16, u16, usize)>,
}

impl Cell {
    /// The same decisions with the universe's rules renumbered by `shift` (`None`: one of them
    /// leaves).
    fn shifted(&self, shift: Shift) -> Option<Cell> {
        Some(Cell {
            other: match self.other {
                Some(u) => Some(shift.apply(u)?),
                None => None,
            },
            ports: self
                .ports
                .iter()
                .map(|&(protocol, a, b, u)| Some((protocol, a, b, shift.apply(u)?)))
                .collect::<Option<_>>()?,
        })
    }
}

fn protocol_slot(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
        Protocol::Sctp => 2,
    }
}

/// Whether sorted, disjoint inclusive `ranges` hold `n`.
pub(super) fn ranges_hold(ranges: &[(u128, u128)], n: u128) -> bool {
    ranges
        .binary_search_by(|&(a, b)| {
            if b < n {
                std::cmp::Ordering::Less
            } else if a > n {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Sorts and merges ranges that overlap or touch.
pub(super) fn merge_ranges<T: Copy + Ord + Into<u128>>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a.into() <= last.1.into().saturating_add(1) => {
                if b > last.1 {
                    last.1 = b;
                }
            }
            _ => out.push((a, b)),
        }
    }
    out
}

/// Removes `[a, b]` from the uncovered port ranges, returning the parts it covered.
fn carve(uncovered: &mut Vec<(u16, u16)>, a: u16, b: u16) -> Vec<(u16, u16)> {
    let mut covered = Vec::new();
    let mut rest = Vec::with_capacity(uncovered.len() + 1);
    for &(x, y) in uncovered.iter() {
        if b < x || y < a {
            rest.push((x, y));
            continue;
        }
        let (lo, hi) = (x.max(a), y.min(b));
        covered.push((lo, hi));
        if x < lo {
            rest.push((x, lo - 1));
        }
        if hi < y {
            rest.push((hi + 1, y));
        }
    }
    *uncovered = rest;
    covered
}

/// The decision of every port and protocol for the packets between a peer class and a combination:
/// `active` holds the combination's rules whose peers hold the class, in evaluation order, with
/// their positions in the tier's rule list; `named` holds, by position, the ports the rules with
/// egress named ports resolve them to at the class's addresses (a class's key). What a Pass rule
/// decides is left out (no element means the same).
fn cell(active: &[(usize, &SweepRule)], named: &[(usize, Vec<(Protocol, u16)>)]) -> Cell {
    let other = active
        .iter()
        .find(|(_, r)| r.all)
        .filter(|(_, r)| !r.pass)
        .map(|(i, _)| *i);
    let mut ports = Vec::new();
    for protocol in Protocol::ALL {
        let slot = protocol_slot(protocol);
        let mut uncovered = vec![(0u16, u16::MAX)];
        let mut pieces: Vec<(u16, u16, usize)> = Vec::new();
        for &(i, rule) in active {
            let before = pieces.len();
            if rule.all {
                for (a, b) in carve(&mut uncovered, 0, u16::MAX) {
                    pieces.push((a, b, i));
                }
            } else {
                for &(a, b) in &rule.ports[slot] {
                    for (x, y) in carve(&mut uncovered, a, b) {
                        pieces.push((x, y, i));
                    }
                }
                let resolved = named.iter().find(|(u, _)| *u == i).map(|(_, p)| p);
                for &(q, port) in resolved.into_iter().flatten() {
                    if q == protocol {
                        for (x, y) in carve(&mut uncovered, port, port) {
                            pieces.push((x, y, i));
                        }
                    }
                }
            }
            if rule.pass {
                pieces.truncate(before);
            }
            if uncovered.is_empty() {
                break;
            }
        }
        pieces.sort_unstable();
        let mut merged: Vec<(u16, u16, usize)> = Vec::with_capacity(pieces.len());
        for (a, b, i) in pieces {
            match merged.last_mut() {
                Some(last) if last.2 == i && last.1 as u32 + 1 == a as u32 => last.1 = b,
                _ => merged.push((a, b, i)),
            }
        }
        ports.extend(merged.into_iter().map(|(a, b, i)| (protocol, a, b, i)));
    }
    Cell { other, ports }
}

/// The peer class of an address: the rules (positions in the tier's rule list, ascending) whose
/// peers hold it and, for egress rules with named ports, the ports the address resolves them to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ClassKey {
    rules: Vec<usize>,
    named: Vec<(usize, Vec<(Protocol, u16)>)>,
}

impl ClassKey {
    /// The class of the rules `rules` (each once), with the ports `named` says the rules with
    /// egress named ports resolve them to.
    pub(super) fn new(
        mut rules: Vec<usize>,
        mut named: Vec<(usize, Vec<(Protocol, u16)>)>,
    ) -> Self {
        rules.sort_unstable();
        named.sort();
        Self { rules, named }
    }

    /// Its rules (positions in the universe, ascending).
    pub(super) fn rules(&self) -> &[usize] {
        &self.rules
    }

    /// The class of the same addresses once `rules` hold no address: without them (and what their
    /// named ports resolve to).
    pub(super) fn without(&self, rules: &[usize]) -> Self {
        Self {
            rules: self
                .rules
                .iter()
                .copied()
                .filter(|u| !rules.contains(u))
                .collect(),
            named: self
                .named
                .iter()
                .filter(|(u, _)| !rules.contains(u))
                .cloned()
                .collect(),
        }
    }

    /// The class of the same addresses once each rule `u` of `joins` holds what the rule beside
    /// it (`(u, beside)`: one whose region `u` joins) holds: with the rules joining a region the
    /// class's addresses are in, each resolving named ports as the rule beside it does.
    pub(super) fn joined(&self, joins: &[(usize, usize)]) -> Self {
        let mut rules = self.rules.clone();
        let mut named = self.named.clone();
        for &(u, beside) in joins {
            if self.rules.binary_search(&beside).is_err() {
                continue;
            }
            rules.push(u);
            if let Some((_, ports)) = self.named.iter().find(|(r, _)| *r == beside) {
                named.push((u, ports.clone()));
            }
        }
        Self::new(rules, named)
    }

    /// The class of the addresses no rule's peers hold.
    pub(super) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The same class with the universe's rules renumbered by `shift` (`None`: one of its rules
    /// leaves). The order of the rules stays: a shift is monotone.
    pub(super) fn shifted(&self, shift: Shift) -> Option<Self> {
        Some(Self {
            rules: self
                .rules
                .iter()
                .map(|u| shift.apply(*u))
                .collect::<Option<_>>()?,
            named: self
                .named
                .iter()
                .map(|(u, ports)| Some((shift.apply(*u)?, ports.clone())))
                .collect::<Option<_>>()?,
        })
    }

    /// The class of the addresses the regions `held` hold, each region holding the peers of the
    /// rules `rules_of` gives at its position.
    pub(super) fn of_regions(held: &RegionClass, rules_of: &[Vec<usize>]) -> Self {
        let rules = held
            .regions
            .iter()
            .filter_map(|k| rules_of.get(*k))
            .flatten()
            .copied()
            .collect();
        let named = held
            .named
            .iter()
            .filter_map(|(k, ports)| Some((rules_of.get(*k)?, ports)))
            .flat_map(|(rules, ports)| rules.iter().map(|u| (*u, ports.clone())))
            .collect();
        Self::new(rules, named)
    }
}

/// What [`classify`] finds for an address: the regions (positions in its list) that hold it, and
/// the named ports of those that resolve them there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct RegionClass {
    pub(super) regions: Vec<usize>,
    pub(super) named: Vec<(usize, Vec<(Protocol, u16)>)>,
}

/// Sweeps the address space of one family over distinct regions: each elementary range some region
/// covers, with the regions holding it; adjacent ranges held alike merged.
fn classify(regions: &[&PeerRegion], family: Family) -> Vec<(u128, u128, RegionClass)> {
    let max = max_u128(family);
    // (position, rule, starts): a rule becomes active at the first address of each of its ranges
    // and inactive after the last.
    let mut events: Vec<(u128, usize, bool)> = Vec::new();
    let mut boundaries: Vec<u128> = Vec::new();
    for (i, region) in regions.iter().enumerate() {
        for &(a, b) in &region.ranges {
            events.push((a, i, true));
            boundaries.push(a);
            if b < max {
                events.push((b + 1, i, false));
                boundaries.push(b + 1);
            }
        }
        // Named ports resolve per destination pod: each such address is its own range.
        for &p in region.named.keys() {
            boundaries.push(p);
            if p < max {
                boundaries.push(p + 1);
            }
        }
    }
    events.sort_unstable();
    boundaries.sort_unstable();
    boundaries.dedup();
    let mut out: Vec<(u128, u128, RegionClass)> = Vec::new();
    let mut active: BTreeSet<usize> = BTreeSet::new();
    let mut next = 0;
    for (k, &start) in boundaries.iter().enumerate() {
        while let Some(&(position, rule, starts)) = events.get(next) {
            if position != start {
                break;
            }
            if starts {
                active.insert(rule);
            } else {
                active.remove(&rule);
            }
            next += 1;
        }
        if active.is_empty() {
            continue;
        }
        let end = boundaries.get(k + 1).map_or(max, |b| b - 1);
        let named = if start == end {
            active
                .iter()
                .filter_map(|&r| regions[r].named.get(&start).map(|p| (r, p.clone())))
                .collect()
        } else {
            Vec::new()
        };
        let key = RegionClass {
            regions: active.iter().copied().collect(),
            named,
        };
        match out.last_mut() {
            Some(last) if last.1 + 1 == start && last.2 == key => last.1 = end,
            _ => out.push((start, end, key)),
        }
    }
    out
}

/// A rule ready to decide for a combination whose subjects resolve ingress named ports as
/// `named_ports` (egress named ports resolve per destination, in the class's key).
fn sweep_rule(rule: &ClusterRule, named_ports: &[ResolvedNamedPort<'_>]) -> SweepRule {
    let mut ports: [Vec<(u16, u16)>; 3] = Default::default();
    for port in &rule.protocols {
        match port {
            ClusterPort::Range {
                protocol,
                first,
                last,
            } => ports[protocol_slot(*protocol)].push((*first, *last)),
            ClusterPort::Named(n) => {
                let resolved = named_ports
                    .iter()
                    .find(|(name, _)| *name == n.as_str())
                    .and_then(|(_, p)| *p);
                if let Some((protocol, port)) = resolved {
                    ports[protocol_slot(protocol)].push((port, port));
                }
            }
        }
    }
    SweepRule {
        all: rule.protocols.is_empty(),
        pass: rule.action == Action::Pass,
        ports: ports.map(merge_ranges),
    }
}

/// A ports map element: address range, protocol and port range, rule.
pub(super) type PortsElement = (u128, u128, (Protocol, u16, u16), usize);

/// The elements of a class chain's two maps: ports map, and address range and rule of the map for
/// every other protocol.
pub(super) type ClassElements = (Vec<PortsElement>, Vec<(u128, u128, usize)>);

/// The elements of a class's two maps for the cells of its local pods (sorted by address), each map
/// merging adjacent addresses on which the same rule decides the same protocol and ports (the two
/// maps merge independently: an element of one may span cells the other splits).
pub(super) fn elements(cells: &[ClassCell]) -> ClassElements {
    let mut any: Vec<(u128, u128, usize)> = Vec::new();
    let mut ports: Vec<PortsElement> = Vec::new();
    // The previous cell, and the positions of the ports elements it ended, in the order of its
    // pieces: they grow while the next cells are adjacent and hold the same piece.
    let mut previous: Option<(u128, &Arc<Cell>)> = None;
    let mut open: Vec<usize> = Vec::new();
    for (first, last, cell) in cells {
        if let Some(i) = cell.other {
            match any.last_mut() {
                Some(prev) if prev.2 == i && prev.1 + 1 == *first => prev.1 = *last,
                _ => any.push((*first, *last, i)),
            }
        }
        let adjacent = previous.is_some_and(|(end, _)| end + 1 == *first);
        match previous {
            // The same cell right after: every piece goes on (the usual case, a combination's
            // pods holding consecutive addresses).
            Some((_, p)) if adjacent && (Arc::ptr_eq(p, cell) || p == cell) => {
                for &at in &open {
                    ports[at].1 = *last;
                }
            }
            _ => {
                // A cell's pieces are in the order `cell` makes them, by protocol slot and first
                // port (distinct within a cell): a walk of both lists finds those that go on.
                let order = |&(protocol, a, _, _): &(Protocol, u16, u16, usize)| {
                    (protocol_slot(protocol), a)
                };
                let before = if adjacent {
                    std::mem::take(&mut open)
                } else {
                    open.clear();
                    Vec::new()
                };
                let mut before = before.into_iter().peekable();
                for piece @ &(protocol, a, b, i) in &cell.ports {
                    while before.peek().is_some_and(|&at| {
                        let (_, _, (p, x, _), _) = ports[at];
                        order(&(p, x, 0, 0)) < order(piece)
                    }) {
                        before.next();
                    }
                    let goes_on = before.peek().copied().filter(|&at| {
                        let (_, _, (p, x, y), u) = ports[at];
                        (p, x, y, u) == (protocol, a, b, i)
                    });
                    match goes_on {
                        Some(at) => {
                            before.next();
                            ports[at].1 = *last;
                            open.push(at);
                        }
                        None => {
                            open.push(ports.len());
                            ports.push((*first, *last, (protocol, a, b), i));
                        }
                    }
                }
            }
        }
        previous = Some((*last, cell));
    }
    (ports, any)
}

/// `[Admin 10] name egress[2] rule-name`: the rule an element comes from.
fn rule_comment(policy: &ClusterNetworkPolicy, direction: Direction, index: usize) -> String {
    let mut text = format!(
        "[{} {}] {} {direction}[{index}]",
        policy.tier, policy.priority, policy.name
    );
    if let Some(name) = &policy.rules(direction)[index].name {
        text.push(' ');
        text.push_str(name);
    }
    text
}

/// What a rule's region is made of: its peers, whether an unknown peer matches everything (Deny
/// and Pass) or nothing (Accept), and the destination named ports it resolves per peer (egress).
type RegionKey<'a> = (Direction, Family, &'a [ClusterPeer], bool, Vec<&'a str>);

fn region_key(direction: Direction, rule: &ClusterRule, family: Family) -> RegionKey<'_> {
    let named = match direction {
        Direction::Egress => rule_named_ports(rule).collect(),
        Direction::Ingress => Vec::new(),
    };
    (
        direction,
        family,
        &rule.peers,
        rule.action != Action::Accept,
        named,
    )
}

/// Puts the addresses of a tier's combinations in its subjects sets.
fn fill_subjects(
    ruleset: &mut Ruleset,
    tier: Tier,
    direction: Direction,
    combinations: &[Combination<'_>],
) {
    for combination in combinations {
        for ip in &combination.addresses {
            let set = tier_subjects_set_name(tier, direction, Family::of(ip));
            if let Some(s) = ruleset.sets.get_mut(&set) {
                s.elements.insert(SetElement::Addr(*ip));
            }
        }
    }
}

/// Every rule of the policies of a tier's combinations, in evaluation order (policies by priority
/// and name, then rules as written; each combination's own order is this one, restricted).
struct Universe<'a> {
    rules: Vec<(&'a ClusterNetworkPolicy, usize)>,
    /// The position of each policy's first rule (its rules follow it, as written).
    first_rule: HashMap<String, usize>,
}

/// What names and decides each rule of a [`Universe`], by position.
struct RuleNames {
    /// Each rule's [`cluster_rule_token`].
    tokens: Vec<String>,
    /// Each rule's chain (Accept and Deny rules have one).
    rule_chains: Vec<String>,
    /// What an element deciding by each rule holds: a jump to its chain, or for a Pass a return.
    decisions: Vec<Decision>,
}

impl<'a> Universe<'a> {
    fn of(direction: Direction, combinations: &[Combination<'a>]) -> Self {
        let mut policies: Vec<&'a ClusterNetworkPolicy> = combinations
            .iter()
            .flat_map(|c| c.policies.iter().copied())
            .collect();
        policies.sort_unstable_by(|a, b| a.order_key().cmp(&b.order_key()));
        policies.dedup_by(|a, b| a.name == b.name);
        let mut first_rule = HashMap::new();
        let mut rules = Vec::new();
        for p in policies {
            first_rule.insert(p.name.clone(), rules.len());
            rules.extend((0..p.rules(direction).len()).map(|i| (p, i)));
        }
        Self { rules, first_rule }
    }

    /// The names and decisions of every rule.
    fn names(&self, tier: Tier, direction: Direction) -> RuleNames {
        let tokens = self
            .rules
            .iter()
            .map(|(p, i)| cluster_rule_token(p, direction, *i))
            .collect();
        // Accept and Deny decisions jump to their rule's chain, which counts (and logs) them.
        let rule_chains: Vec<String> = self
            .rules
            .iter()
            .map(|(p, i)| cluster_rule_chain_name(tier, p, direction, *i))
            .collect();
        let decisions = self
            .rules
            .iter()
            .zip(&rule_chains)
            .map(|((p, i), chain)| rule_decision(p, direction, *i, chain.clone()))
            .collect();
        RuleNames {
            tokens,
            rule_chains,
            decisions,
        }
    }
}

/// A combination's rules, ready to decide (ingress named ports resolved as its pods resolve
/// them), by position in the universe whose policies' first rules are `first_rule`, in
/// evaluation order.
fn combination_rules(
    first_rule: &HashMap<String, usize>,
    direction: Direction,
    c: &Combination<'_>,
) -> Vec<(usize, SweepRule)> {
    let mut rules: Vec<(usize, SweepRule)> = c
        .policies
        .iter()
        .filter_map(|p| Some((*p, *first_rule.get(p.name.as_str())?)))
        .flat_map(|(p, first)| {
            p.rules(direction)
                .iter()
                .enumerate()
                .map(move |(i, rule)| (first + i, rule))
        })
        .map(|(u, rule)| (u, sweep_rule(rule, &c.named_ports)))
        .collect();
    rules.sort_by_key(|(u, _)| *u);
    rules
}

/// One local address of a class's chain, with what the class decides for it (shared by the
/// addresses of a combination).
pub(super) type ClassCell = (u128, u128, Arc<Cell>);

/// What an element deciding by rule `index` of `policy` holds: a jump to the rule's `chain`, or
/// for a Pass a return.
fn rule_decision(
    policy: &ClusterNetworkPolicy,
    direction: Direction,
    index: usize,
    chain: String,
) -> Decision {
    Decision {
        verdict: match policy.rules(direction)[index].action {
            Action::Pass => DecisionVerdict::Return,
            Action::Accept | Action::Deny => DecisionVerdict::Jump(chain),
        },
        comment: Some(rule_comment(policy, direction, index)),
    }
}

/// The key of a ports map element of `family`.
fn ports_key(family: Family, &(first, last, ports, _): &PortsElement) -> DecisionKey {
    DecisionKey {
        first: crate::cidr::from_u128(family, first),
        last: crate::cidr::from_u128(family, last),
        ports: Some(ports),
    }
}

/// The key of an element of `family` of the map for every other protocol.
fn any_key(family: Family, &(first, last, _): &(u128, u128, usize)) -> DecisionKey {
    DecisionKey {
        first: crate::cidr::from_u128(family, first),
        last: crate::cidr::from_u128(family, last),
        ports: None,
    }
}

/// What the classes of a peers map decided for the local pods at the last render (full, or of
/// the subjects alone), so that a change of the local pods decides again only for combinations
/// not seen yet and patches only the elements through the addresses that moved. Valid while the
/// classes and the rules judging local pods are those of the render that made it.
#[derive(Debug, Clone, Default)]
pub(super) struct ClassCache {
    /// What each class (by position in the map's keys) decides for a combination, by the
    /// combination's number (in [`SlotSubjects`]) then the class: `Some(None)`, nothing; `None`,
    /// not decided yet.
    decided: Vec<Vec<Option<Option<Arc<Cell>>>>>,
    /// The elements of each class's two maps, as runs (empty: the class has no chain).
    runs: Vec<ClassRuns>,
}

impl ClassCache {
    /// What the class `id` decides for the combination `number`, if decided yet.
    fn decided(&self, id: usize, number: usize) -> Option<&Option<Arc<Cell>>> {
        self.decided.get(number)?.get(id)?.as_ref()
    }

    /// Forgets what the class `id` decides for the combination `number`.
    fn forget(&mut self, id: usize, number: usize) {
        if let Some(decided) = self.decided.get_mut(number).and_then(|c| c.get_mut(id)) {
            *decided = None;
        }
    }

    /// Keeps the classes whose position `keep` marks (the others leave, and the positions close
    /// up), their decisions and elements renumbered by `shift`. [`Structural`] when a class kept
    /// decides by a rule that leaves.
    pub(super) fn shift(&mut self, keep: &[bool], shift: Shift) -> Result<(), Structural> {
        // Cells are shared between decisions: each is renumbered once.
        let mut renumbered: HashMap<*const Cell, Arc<Cell>> = HashMap::new();
        for classes in &mut self.decided {
            let mut kept = Vec::with_capacity(classes.len());
            for (id, decided) in classes.drain(..).enumerate() {
                if !keep.get(id).copied().unwrap_or(false) {
                    continue;
                }
                kept.push(match decided {
                    Some(Some(cell)) => {
                        let cell = match renumbered.get(&Arc::as_ptr(&cell)) {
                            Some(done) => Arc::clone(done),
                            None => {
                                let done = Arc::new(cell.shifted(shift).ok_or(Structural)?);
                                renumbered.insert(Arc::as_ptr(&cell), Arc::clone(&done));
                                done
                            }
                        };
                        Some(Some(cell))
                    }
                    other => other,
                });
            }
            *classes = kept;
        }
        let mut runs = Vec::with_capacity(self.runs.len());
        for (id, mut r) in std::mem::take(&mut self.runs).into_iter().enumerate() {
            if keep.get(id).copied().unwrap_or(false) {
                r.shift(shift).map_err(|_| Structural)?;
                runs.push(r);
            }
        }
        self.runs = runs;
        Ok(())
    }

    /// Records what the class `id` decides for the combination `number`.
    fn record(&mut self, id: usize, number: usize, decided: Option<Arc<Cell>>) {
        if self.decided.len() <= number {
            self.decided.resize_with(number + 1, Vec::new);
        }
        let classes = &mut self.decided[number];
        if classes.len() <= id {
            classes.resize(id + 1, None);
        }
        classes[id] = Some(decided);
    }
}

/// The addresses of `family` of each combination, sorted.
fn family_addresses(combinations: &[Combination<'_>], family: Family) -> Vec<Vec<u128>> {
    combinations
        .iter()
        .map(|c| {
            let mut addresses: Vec<u128> = c
                .addresses
                .iter()
                .filter(|ip| Family::of(ip) == family)
                .map(to_u128)
                .collect();
            addresses.sort_unstable();
            addresses
        })
        .collect()
}

/// The combinations' rules, each made the first time a combination needs them.
struct LazyRules<'u, 'c, 'a> {
    first_rule: &'u HashMap<String, usize>,
    direction: Direction,
    combinations: &'c [Combination<'a>],
    rules: Vec<Option<Vec<(usize, SweepRule)>>>,
}

impl<'u, 'c, 'a> LazyRules<'u, 'c, 'a> {
    fn new(
        first_rule: &'u HashMap<String, usize>,
        direction: Direction,
        combinations: &'c [Combination<'a>],
    ) -> Self {
        Self {
            first_rule,
            direction,
            combinations,
            rules: (0..combinations.len()).map(|_| None).collect(),
        }
    }

    fn of(&mut self, c: usize) -> &[(usize, SweepRule)] {
        let (first_rule, direction, combination) =
            (self.first_rule, self.direction, &self.combinations[c]);
        self.rules[c].get_or_insert_with(|| combination_rules(first_rule, direction, combination))
    }
}

/// What the rules of a class (`key`, at position `id` in its map) decide for the combination `c`
/// (numbered `number` in `cache`): a cell, or `None` when nothing (no rule of the class judges it,
/// or what they decide is a Pass).
fn decide(
    (id, key): (usize, &ClassKey),
    (c, number): (usize, usize),
    rules: &mut LazyRules<'_, '_, '_>,
    cache: &mut ClassCache,
) -> Option<Arc<Cell>> {
    if let Some(decided) = cache.decided(id, number) {
        return decided.clone();
    }
    let active: Vec<(usize, &SweepRule)> = rules
        .of(c)
        .iter()
        .filter(|(u, _)| key.rules.binary_search(u).is_ok())
        .map(|(u, r)| (*u, r))
        .collect();
    let decided = if active.is_empty() {
        None
    } else {
        Some(cell(&active, &key.named))
            .filter(|d| d.other.is_some() || !d.ports.is_empty())
            .map(Arc::new)
    };
    cache.record(id, number, decided.clone());
    decided
}

/// What a peer class (`key`, at position `id` in its map) decides for the local pods of one
/// family: a cell per address (`addresses`, by combination, numbered by position) of a
/// combination for which some rule of the class decides something, sorted by address (empty:
/// the class has no chain).
fn class_cells(
    class: (usize, &ClassKey),
    rules: &mut LazyRules<'_, '_, '_>,
    addresses: &[Vec<u128>],
    cache: &mut ClassCache,
) -> Vec<ClassCell> {
    let mut cells: Vec<ClassCell> = Vec::with_capacity(addresses.iter().map(Vec::len).sum());
    for (c, addresses) in addresses.iter().enumerate() {
        if addresses.is_empty() {
            continue;
        }
        let Some(decided) = decide(class, (c, c), rules, cache) else {
            continue;
        };
        cells.extend(addresses.iter().map(|&n| (n, n, Arc::clone(&decided))));
    }
    cells.sort_unstable_by_key(|(n, _, _)| *n);
    cells
}

/// The local subjects of one tier and direction as the tiers last rendered them, kept between
/// renders so that a change of some local pods renders only what it changes: which combination
/// each subject and each of its addresses is in, and what rules the combinations are judged by.
/// Valid while the ClusterNetworkPolicies are those of the full render that made it, or differ from
/// them by edits that keep the order ([`keeps_order`]) taken in since.
#[derive(Debug, Clone)]
pub(super) struct SlotSubjects {
    tier: Tier,
    direction: Direction,
    /// A number for each combination seen, by its key (what the class caches decide by).
    numbers: HashMap<Vec<String>, usize>,
    /// The names of each combination's policies, by number.
    policies: Vec<Vec<String>>,
    /// How each combination's pods resolve the ingress named ports of its policies (in the order
    /// of [`ingress_named_ports`]), by number.
    resolved: Vec<Vec<OwnedNamedPort>>,
    /// How many subjects each combination has, by number.
    members: Vec<usize>,
    /// How many combinations with subjects each policy is in: the rules of the policies counted
    /// here are the universe the classes number.
    judging: HashMap<String, usize>,
    /// Each subject's addresses (those it decides) and combination.
    pods: HashMap<ObjectRef, (Vec<IpAddr>, usize)>,
    /// The combination of each address a subject decides.
    holders: HashMap<IpAddr, usize>,
    /// The position of each policy's first rule in the universe.
    first_rule: HashMap<String, usize>,
    /// Each rule's [`cluster_rule_token`], by position in the universe.
    tokens: Vec<String>,
    /// What an element deciding by each rule of the universe holds.
    decisions: Vec<Decision>,
    /// Two subjects held one address at the render: who decides it follows name order, which a
    /// change of either renders again in full.
    shared: bool,
}

impl SlotSubjects {
    /// The subjects of a full render's `combinations`, numbered by position.
    fn of(
        (tier, direction): (Tier, Direction),
        combinations: &[Combination<'_>],
        universe: &Universe<'_>,
        names: &RuleNames,
        shared: bool,
    ) -> Self {
        let mut subjects = Self {
            tier,
            direction,
            numbers: HashMap::new(),
            policies: Vec::new(),
            resolved: Vec::new(),
            members: Vec::new(),
            judging: HashMap::new(),
            pods: HashMap::new(),
            holders: HashMap::new(),
            first_rule: universe.first_rule.clone(),
            tokens: names.tokens.clone(),
            decisions: names.decisions.clone(),
            shared,
        };
        for (number, c) in combinations.iter().enumerate() {
            subjects.numbers.insert(c.key.clone(), number);
            subjects
                .policies
                .push(c.policies.iter().map(|p| p.name.clone()).collect());
            subjects.resolved.push(
                c.named_ports
                    .iter()
                    .map(|(n, p)| (n.to_string(), *p))
                    .collect(),
            );
            subjects.members.push(c.members.len());
            for p in &c.policies {
                *subjects.judging.entry(p.name.clone()).or_default() += 1;
            }
            for (pod, addresses) in &c.members {
                for ip in addresses {
                    subjects.holders.insert(*ip, number);
                }
                subjects
                    .pods
                    .insert((*pod).clone(), (addresses.clone(), number));
            }
        }
        subjects
    }

    /// The tier and direction.
    pub(super) fn slot(&self) -> (Tier, Direction) {
        (self.tier, self.direction)
    }

    /// The position of the first rule of the policy `name` in the universe, if it judges some
    /// subject.
    pub(super) fn first_rule(&self, name: &str) -> Option<usize> {
        self.first_rule.get(name).copied()
    }

    /// Takes the policy `name` out of the combinations' rules (it stops judging here): its rules
    /// stay at their positions, in no combination's rules, until [`SlotSubjects::drop_rules`]
    /// closes them up. Returns the shift that does, `None` when the policy is not in the universe.
    pub(super) fn leave(&mut self, name: &str) -> Option<Shift> {
        let at = self.first_rule.remove(name)?;
        let end = self
            .first_rule
            .values()
            .copied()
            .filter(|u| *u > at)
            .min()
            .unwrap_or(self.tokens.len());
        Some(Shift::Leave {
            at,
            count: end.saturating_sub(at),
        })
    }

    /// The chains of the universe's rules `at..at + count` that have one (Accept and Deny).
    pub(super) fn rule_chains(&self, at: usize, count: usize) -> Vec<String> {
        self.decisions
            .iter()
            .skip(at)
            .take(count)
            .filter_map(|d| match &d.verdict {
                DecisionVerdict::Jump(chain) => Some(chain.clone()),
                _ => None,
            })
            .collect()
    }

    /// Renumbers the universe's rules by `shift`, after a policy left ([`SlotSubjects::leave`]).
    pub(super) fn drop_rules(&mut self, shift: Shift) {
        let Shift::Leave { at, count } = shift else {
            return;
        };
        let end = (at + count).min(self.tokens.len());
        self.tokens.drain(at.min(end)..end);
        self.decisions.drain(at.min(end)..end);
        for first in self.first_rule.values_mut() {
            if let Some(u) = shift.apply(*first) {
                *first = u;
            }
        }
    }

    /// Puts the rules of `policy` (as the cluster holds it, as are the policies of the universe)
    /// into the universe at their place in evaluation order, judging no subject yet; returns the
    /// shift that moves the rules after them. [`Structural`] when a policy of the universe is gone
    /// from the cluster, or `policy` is in the universe already.
    pub(super) fn enter(
        &mut self,
        cluster: &ClusterState,
        policy: &ClusterNetworkPolicy,
    ) -> Result<Shift, Structural> {
        if self.first_rule.contains_key(&policy.name) {
            return Err(Structural);
        }
        let mut at = self.tokens.len();
        for (name, first) in &self.first_rule {
            let other = cluster.cluster_policy(name).ok_or(Structural)?;
            if other.order_key() > policy.order_key() {
                at = at.min(*first);
            }
        }
        let (tier, direction) = (self.tier, self.direction);
        let count = policy.rules(direction).len();
        let shift = Shift::Enter { at, count };
        for first in self.first_rule.values_mut() {
            if let Some(u) = shift.apply(*first) {
                *first = u;
            }
        }
        self.first_rule.insert(policy.name.clone(), at);
        let tokens = (0..count).map(|i| cluster_rule_token(policy, direction, i));
        self.tokens.splice(at..at, tokens);
        let decisions = (0..count).map(|i| {
            let chain = cluster_rule_chain_name(tier, policy, direction, i);
            rule_decision(policy, direction, i, chain)
        });
        self.decisions.splice(at..at, decisions);
        Ok(shift)
    }

    /// What taking in the local pods `changed` (see [`refresh_subjects`]) does to the universe:
    /// the policies that come to judge some subject here and are not in it (to enter), and those
    /// of it that judge no subject any longer (to leave), each once, by name. The policies `moved`
    /// (whose rules moved in the evaluation order) leave where they are in the universe and enter
    /// where they judge some subject after; `changed` then holds every local pod.
    pub(super) fn universe_moves(
        &self,
        changed: &[(ObjectRef, Option<TierSubject<'_>>)],
        moved: &BTreeSet<String>,
    ) -> (Vec<String>, Vec<String>) {
        let (tier, direction) = (self.tier, self.direction);
        // Mostly nothing moves: no policy judging a pod that changed is new to the universe, and
        // no combination loses its last subject.
        if moved.is_empty() {
            let mut leaving: HashMap<usize, usize> = HashMap::new();
            let mut new = false;
            for (key, subject) in changed {
                if let Some((_, number)) = self.pods.get(key) {
                    *leaving.entry(*number).or_default() += 1;
                }
                new |= subject
                    .as_ref()
                    .and_then(|s| judged(s, tier, direction))
                    .is_some_and(|judging| {
                        judging
                            .iter()
                            .any(|p| !self.first_rule.contains_key(&p.name))
                    });
            }
            let emptied = leaving
                .iter()
                .any(|(number, n)| self.members.get(*number).is_some_and(|m| m <= n));
            if !new && !emptied {
                return (Vec::new(), Vec::new());
            }
        }
        // Subjects more or fewer in each combination, by number.
        let mut delta: HashMap<usize, isize> = HashMap::new();
        let mut before: BTreeSet<&str> = BTreeSet::new();
        let mut after: BTreeSet<&str> = BTreeSet::new();
        for (key, subject) in changed {
            if let Some((_, number)) = self.pods.get(key) {
                *delta.entry(*number).or_default() -= 1;
                before.extend(
                    self.policies
                        .get(*number)
                        .into_iter()
                        .flatten()
                        .map(String::as_str),
                );
            }
            let Some((subject, judging)) = subject
                .as_ref()
                .and_then(|s| Some((s, judged(s, tier, direction)?)))
            else {
                continue;
            };
            after.extend(judging.iter().map(|p| p.name.as_str()));
            let named = combination_named_ports(direction, judging);
            let resolved = resolve_named(subject.pod, &named);
            if let Some(number) = self.numbers.get(&combination_key(judging, &resolved)) {
                *delta.entry(*number).or_default() += 1;
            }
        }
        let judges_after = |name: &str| {
            after.contains(name)
                || self.policies.iter().enumerate().any(|(number, policies)| {
                    let members = self.members.get(number).copied().unwrap_or(0) as isize
                        + delta.get(&number).copied().unwrap_or(0);
                    members > 0 && policies.iter().any(|p| p == name)
                })
        };
        let entering = after
            .iter()
            .filter(|p| moved.contains(**p) || !self.first_rule.contains_key(**p))
            .map(|p| p.to_string())
            .collect();
        let leaving = self
            .first_rule
            .keys()
            .filter(|p| moved.contains(*p) || (before.contains(p.as_str()) && !judges_after(p)))
            .cloned()
            .collect();
        (entering, leaving)
    }

    /// The combination `number`, to decide by: its policies of the universe as the cluster holds
    /// them now (a policy leaving the universe, [`SlotSubjects::leave`], is left out: its rules
    /// are in no class), and how its pods resolve their ingress named ports (no addresses or
    /// members).
    fn combination<'c>(
        &'c self,
        cluster: &'c ClusterState,
        number: usize,
    ) -> Result<Combination<'c>, Structural> {
        let names = self.policies.get(number).ok_or(Structural)?;
        let policies: Vec<&ClusterNetworkPolicy> = names
            .iter()
            .filter(|n| self.first_rule.contains_key(n.as_str()))
            .map(|n| cluster.cluster_policy(n).ok_or(Structural))
            .collect::<Result<_, _>>()?;
        let resolved = self.resolved.get(number).ok_or(Structural)?;
        Ok(Combination {
            key: Vec::new(),
            policies,
            named_ports: resolved.iter().map(|(n, p)| (n.as_str(), *p)).collect(),
            addresses: Vec::new(),
            members: Vec::new(),
        })
    }

    /// The addresses of `family` the subjects decide, sorted, each with its combination's number.
    fn held(&self, family: Family) -> Vec<(u128, usize)> {
        let mut held: Vec<(u128, usize)> = self
            .holders
            .iter()
            .filter(|(ip, _)| Family::of(ip) == family)
            .map(|(ip, number)| (to_u128(ip), *number))
            .collect();
        held.sort_unstable();
        held
    }

    /// The number of the combination `key` (with the policies `policies`, whose ingress named
    /// ports its pods resolve as `resolved` says), numbering it if new.
    fn number(
        &mut self,
        key: &[String],
        policies: &[&ClusterNetworkPolicy],
        resolved: &[ResolvedNamedPort<'_>],
    ) -> usize {
        if let Some(n) = self.numbers.get(key) {
            return *n;
        }
        let n = self.policies.len();
        self.numbers.insert(key.to_vec(), n);
        self.policies
            .push(policies.iter().map(|p| p.name.clone()).collect());
        self.resolved
            .push(resolved.iter().map(|(n, p)| (n.to_string(), *p)).collect());
        self.members.push(0);
        n
    }

    /// One subject more (`join`) or fewer in the combination `number`; the policies whose count
    /// of combinations went from or to zero go in `moved`.
    fn count(&mut self, number: usize, join: bool, moved: &mut Vec<String>) {
        let Some(members) = self.members.get_mut(number) else {
            return;
        };
        let was = *members;
        *members = if join { was + 1 } else { was.saturating_sub(1) };
        if (was == 0) == (*members == 0) {
            return;
        }
        for p in self.policies.get(number).into_iter().flatten() {
            let n = self.judging.entry(p.clone()).or_default();
            *n = if join { *n + 1 } else { n.saturating_sub(1) };
            moved.push(p.clone());
        }
    }

    /// Whether the policies judging some subject are still those of the universe, after counts
    /// of `moved` changed.
    fn same_universe(&self, moved: &[String]) -> bool {
        moved.iter().all(|p| {
            let judging = self.judging.get(p).copied().unwrap_or(0) > 0;
            judging == self.first_rule.contains_key(p)
        })
    }
}

/// A named port and what a combination's pods resolve it to, as [`SlotSubjects`] keeps it.
type OwnedNamedPort = (String, Option<(Protocol, u16)>);

/// What a local pod is judged by in a tier and direction: the policies, in evaluation order, or
/// `None` when it is not a subject there.
fn judged<'s, 'a>(
    local: &'s TierSubject<'a>,
    tier: Tier,
    direction: Direction,
) -> Option<&'s [&'a ClusterNetworkPolicy]> {
    // NetworkPolicies decide for the pods they isolate before the Baseline tier is reached on the
    // forward hook; on the input hook (a pod reaching its node) they allow, and the pod's absence
    // from the Baseline subjects is what lets the packet through.
    if tier == Tier::Baseline && local.isolated(direction) {
        return None;
    }
    Some(local.judging(tier, direction)).filter(|j| !j.is_empty())
}

/// The named ports a combination of `policies` tells its pods apart by in `direction`: the
/// destination named ports of their ingress rules, resolved at the subject; none for egress (they
/// resolve at the peer).
fn combination_named_ports<'p>(
    direction: Direction,
    policies: &[&'p ClusterNetworkPolicy],
) -> Vec<&'p str> {
    match direction {
        Direction::Ingress => ingress_named_ports(policies),
        Direction::Egress => Vec::new(),
    }
}

/// How the pods of a combination resolve the named ports `named` (see [`ingress_named_ports`]).
fn resolve_named<'a>(pod: &Pod, named: &[&'a str]) -> Vec<ResolvedNamedPort<'a>> {
    named.iter().map(|n| (*n, named_port(pod, n))).collect()
}

/// What tells a combination from the others: its policies' names and how its pods resolve the
/// named ports.
fn combination_key(
    policies: &[&ClusterNetworkPolicy],
    resolved: &[ResolvedNamedPort<'_>],
) -> Vec<String> {
    let mut key: Vec<String> = policies.iter().map(|p| p.name.clone()).collect();
    key.push(String::new());
    key.extend(resolved.iter().map(|(n, p)| format!("{n}={p:?}")));
    key
}

/// A peer class's chain and its two decision maps, from the cells of its local pods (sorted
/// by address); returns the chain's name and the maps' (`[ports, any]`).
fn class_chain(
    ruleset: &mut Ruleset,
    (tier, direction, family): (Tier, Direction, Family),
    key: &ClassKey,
    (tokens, decisions): (&[String], &[Decision]),
    (ports_elements, any_elements): &ClassElements,
) -> (String, [String; 2]) {
    let rule_tokens: Vec<String> = key.rules.iter().map(|u| tokens[*u].clone()).collect();
    let named_tokens: Vec<String> = key
        .named
        .iter()
        .map(|(u, ports)| {
            let resolved: Vec<String> = ports
                .iter()
                .map(|(p, n)| format!("{}.{n}", p.as_nft()))
                .collect();
            format!("{}={}", tokens[*u], resolved.join("+"))
        })
        .collect();
    let chain = tier_class_chain_name(tier, direction, &rule_tokens, &named_tokens, family);
    let [ports_map, any_map] = [true, false].map(|ports| {
        tier_class_map_name(tier, direction, &rule_tokens, &named_tokens, ports, family)
    });
    ruleset.decision_maps.insert(
        ports_map.clone(),
        DecisionMap {
            family,
            ports: true,
            elements: ports_elements
                .iter()
                .map(|e| (ports_key(family, e), decisions[e.3].clone()))
                .collect(),
        },
    );
    ruleset.decision_maps.insert(
        any_map.clone(),
        DecisionMap {
            family,
            ports: false,
            elements: any_elements
                .iter()
                .map(|e| (any_key(family, e), decisions[e.2].clone()))
                .collect(),
        },
    );
    let mut policies: Vec<&str> = Vec::new();
    for u in &key.rules {
        let policy = token_policy(&tokens[*u]);
        if policies.last() != Some(&policy) {
            policies.push(policy);
        }
    }
    let comment = format!("{tier} {direction} peers of {}", policies.join(", "));
    let map_names = [ports_map.clone(), any_map.clone()];
    let rules = [(true, ports_map), (false, any_map)]
        .into_iter()
        .map(|(ports, map)| NftRule {
            matches: vec![Match::L4ProtoWithPorts { negated: !ports }],
            verdict: Verdict::DecisionVmap {
                family,
                field: subject_field(direction),
                ports,
                map,
            },
            comment: Some(comment.clone()),
        })
        .collect();
    ruleset
        .chains
        .insert(chain.clone(), Chain { base: None, rules });
    (chain, map_names)
}

/// The rules of the chain `chain` of rule `index` of `policy` in `direction` (it counts, and accepts
/// or drops; with the deny log a Deny logs first; under `audit_all` it accepts, a "would deny"), and
/// its counter's origin; `None` for a Pass rule, which has no chain.
pub(super) fn rule_chain(
    options: &CompileOptions,
    (tier, direction): (Tier, Direction),
    policy: &ClusterNetworkPolicy,
    index: usize,
    chain: &str,
) -> Option<(Vec<NftRule>, Origin)> {
    let rule = policy.rules(direction).get(index)?;
    if rule.action == Action::Pass {
        return None;
    }
    let deny = rule.action == Action::Deny;
    let audit = deny && options.audit_all;
    let verdict = match (deny, audit) {
        (false, _) | (true, true) => Verdict::Accept,
        (true, false) => Verdict::Drop,
    };
    let mut comment = rule_comment(policy, direction, index);
    if audit {
        comment.push_str(" (audit: would deny)");
    }
    let rules = if deny {
        drop_point_rules(options, chain, verdict, comment)
    } else {
        vec![NftRule {
            matches: vec![Match::Counter(chain.to_string())],
            verdict,
            comment: Some(comment),
        }]
    };
    let origin = Origin::ClusterRule {
        tier,
        policy: policy.name.clone(),
        direction,
        index,
        rule_name: rule.name.clone(),
        action: rule.action,
        audit,
    };
    Some((rules, origin))
}

/// Puts the chain `chain` of a ClusterNetworkPolicy rule, rendered on its own, with `rules` into
/// the ruleset, its chain and counter recorded in `touched`.
pub(super) fn put_rule_chain(
    (ruleset, touched): (&mut Ruleset, &mut Option<Touched>),
    chain: &str,
    rules: Vec<NftRule>,
) {
    ruleset
        .chains
        .insert(chain.to_string(), Chain { base: None, rules });
    if let Some(t) = touched.as_mut() {
        t.chains.insert(chain.to_string());
        t.counters.insert(chain.to_string());
    }
}

/// The tiers' content alone, rendered by [`TierRenderer`] into a ruleset of their own: the subjects
/// sets and peers maps of the tiers and directions `layout` has, the class chains and their
/// decision maps, and the rule chains, with the origins of the rule chains' counters and the book
/// of the peers maps.
pub(super) fn render_tiers<'a>(
    index: &ClusterIndex<'a>,
    families: Vec<Family>,
    options: CompileOptions,
    layout: &Layout,
    pods: &[TierSubject<'a>],
) -> (Ruleset, Origins, PeerBook) {
    let mut ruleset = Ruleset::default();
    for tier in Tier::ALL {
        for direction in Direction::BOTH {
            if layout.has(tier, direction) {
                dispatch_rules(&mut ruleset, tier, direction);
            }
        }
    }
    let mut origins = Origins::new();
    let mut renderer = TierRenderer::new(index, families, options).keeping_book();
    renderer.render(&mut ruleset, &mut origins, layout, pods);
    let book = renderer.take_book().unwrap_or_default();
    (ruleset, origins, book)
}

/// Renders again what the tiers decide for the local pods `changed` (each with what the tiers
/// read of it now; `None`: it is no longer local), over the peer classes of the last full render
/// (kept in `book`, their peers maps kept up to date element by element) and the subjects it
/// left there: the subjects sets, and the decision maps of the classes that decide otherwise for
/// an address that moved (in `ruleset`, or in the book's stash for a class no address holds now),
/// element by element through and beside those addresses. Returns how many elements changed,
/// each recorded in `touched`. [`Structural`] when the local pods change what a full render would
/// render beyond that: the rules judging them (so the classes and the rule chains; the policies
/// that start or stop judging enter and leave the universe before, [`super::universe`]), or who
/// decides an address two subjects hold; then `ruleset` and `book` are left half done, for a full
/// render to replace. A class that stops deciding anything loses its chain
/// ([`PeersMap::stop_class`]); one without a chain that starts deciding something gets one, and
/// its addresses their peers-map elements ([`start_class`], [`reveal`]: `cluster` and `holders`,
/// the participating pods holding each address, are what that reads).
pub(super) fn refresh_subjects(
    ruleset: &mut Ruleset,
    touched: &mut Option<Touched>,
    book: &mut PeerBook,
    (cluster, holders): (&ClusterState, &HashMap<IpAddr, u32>),
    (layout, changed): (&Layout, &[(ObjectRef, Option<TierSubject<'_>>)]),
) -> Result<usize, Structural> {
    let mut count = 0;
    let (regions, maps, slots) = book.all_mut();
    for tier in Tier::ALL {
        for direction in Direction::BOTH {
            if !layout.has(tier, direction) {
                continue;
            }
            let Some(slot) = slots
                .iter_mut()
                .find(|s| (s.tier, s.direction) == (tier, direction))
            else {
                return Err(Structural);
            };
            let (fresh, moves) = slot.take(changed)?;
            if moves.is_empty() {
                continue;
            }
            count += refresh_subjects_sets(ruleset, touched, (tier, direction), &moves)?;
            let mut rules = LazyRules::new(&slot.first_rule, direction, &fresh.combinations);
            let mut rendered = 0;
            for map in maps.iter_mut() {
                if (map.tier, map.direction) != (tier, direction) {
                    continue;
                }
                rendered += 1;
                let family = map.family;
                let moves: Vec<(u128, Option<usize>, Option<usize>)> = moves
                    .iter()
                    .filter(|(ip, _, _)| Family::of(ip) == family)
                    .map(|(ip, was, now)| (to_u128(ip), *was, *now))
                    .collect();
                if moves.is_empty() {
                    continue;
                }
                let (changes, started) = refresh_class_maps(
                    ruleset,
                    touched,
                    map,
                    &slot.decisions,
                    (&mut rules, &fresh.positions),
                    &moves,
                )?;
                count += changes;
                for id in started {
                    count += start_class(
                        (ruleset, touched),
                        map,
                        (regions, slot),
                        (cluster, holders),
                        id,
                    )?;
                }
            }
            if rendered == 0 {
                return Err(Structural);
            }
        }
    }
    Ok(count)
}

/// Whether the rules of two versions of a ClusterNetworkPolicy (as many in each direction, see
/// [`keeps_order`]) have the same peers, as their peer regions read them (egress named ports
/// included): then the tiers' peer classes stay.
pub(super) fn same_regions(old: &ClusterNetworkPolicy, new: &ClusterNetworkPolicy) -> bool {
    Direction::BOTH.into_iter().all(|direction| {
        let (was, now) = (old.rules(direction), new.rules(direction));
        was.iter().zip(now).all(|(a, b)| {
            [Family::V4, Family::V6]
                .into_iter()
                .all(|f| same_region(direction, (a, b), f))
        })
    })
}

/// Whether an edit of a ClusterNetworkPolicy from `old` to `new` keeps its rules' places in the
/// tiers' evaluation order and what tells its combinations apart: the same name, tier and priority,
/// as many rules in each direction, each a Pass where there was one, and the same ingress named
/// ports. Then, while the policy judges some pod of the node before and after, the universe of
/// rules stays, and what the edit changes is rendered on its own: other peers by
/// [`super::regions::refresh_regions`], ports, actions and names by [`refresh_rules`], another
/// subject by the subjects' refresh ([`refresh_subjects`]) of the node's pods it held or holds.
pub(super) fn keeps_order(old: &ClusterNetworkPolicy, new: &ClusterNetworkPolicy) -> bool {
    old.name == new.name
        && old.tier == new.tier
        && old.priority == new.priority
        && ingress_named_ports(&[old]) == ingress_named_ports(&[new])
        && Direction::BOTH.into_iter().all(|direction| {
            let (was, now) = (old.rules(direction), new.rules(direction));
            was.len() == now.len()
                && was
                    .iter()
                    .zip(now)
                    .all(|(a, b)| (a.action == Action::Pass) == (b.action == Action::Pass))
        })
}

/// Whether two versions of a rule decide alike where their peers hold an address: the same name,
/// action and ports.
pub(super) fn decides_alike(a: &ClusterRule, b: &ClusterRule) -> bool {
    a.name == b.name && a.action == b.action && a.protocols == b.protocols
}

/// Whether two versions of a rule have the same peers, as a peer region holds them: the same
/// [`region_key`], but for whether the rule accepts, which decides only what an unknown peer holds
/// (nothing, or everything).
fn same_region(direction: Direction, (a, b): (&ClusterRule, &ClusterRule), family: Family) -> bool {
    let (da, fa, pa, closed_a, na) = region_key(direction, a, family);
    let (db, fb, pb, closed_b, nb) = region_key(direction, b, family);
    let unknown = pa.contains(&ClusterPeer::Unknown);
    (da, fa, pa, na) == (db, fb, pb, nb) && (closed_a == closed_b || !unknown)
}

/// Renders again what an edit of `policy` that [`keeps_order`] changes (`edited`: the indexes of
/// the rules it changed, ingress then egress), over the peer classes and subjects of the last full
/// render (kept in `book`): the chains of those rules, what elements deciding by them hold, and the
/// decision maps of the classes that hold one of them, decided again for the combinations the
/// policy is in: element by element where cells changed when only ports did (what an element
/// deciding by a rule holds is the same), else each such map rewritten and compared whole in the
/// transaction; all recorded in `touched`. Returns the origins of the rule chains' counters, by
/// chain. A class that stops deciding anything loses its chain ([`PeersMap::stop_class`]); one
/// without a chain that starts deciding something gets one, and its addresses their peers-map
/// elements ([`start_class`], [`reveal`]). [`Structural`] when the book no longer describes the
/// policy, or such an address is one two pods hold; then `ruleset` and `book` are left half done,
/// for a full render to replace.
pub(super) fn refresh_rules(
    ruleset: &mut Ruleset,
    touched: &mut Option<Touched>,
    book: &mut PeerBook,
    (cluster, holders, options): (&ClusterState, &HashMap<IpAddr, u32>, &CompileOptions),
    (policy, edited): (&ClusterNetworkPolicy, &[BTreeSet<usize>; 2]),
) -> Result<Vec<(String, Origin)>, Structural> {
    let mut origins = Vec::new();
    let (regions, maps, slots) = book.all_mut();
    for slot in slots.iter_mut().filter(|s| s.tier == policy.tier) {
        let (tier, direction) = (slot.tier, slot.direction);
        let Some(&first) = slot.first_rule.get(&policy.name) else {
            // It judges no local pod here: nothing of it is rendered.
            continue;
        };
        let edited: BTreeSet<usize> = match direction {
            Direction::Ingress => &edited[0],
            Direction::Egress => &edited[1],
        }
        .iter()
        .filter(|i| **i < policy.rules(direction).len())
        .map(|i| first + i)
        .collect();
        if edited.is_empty() {
            continue;
        }
        if edited.last().is_some_and(|u| *u >= slot.decisions.len()) {
            return Err(Structural);
        }
        // Whether what an element deciding by each changed rule holds stays (only ports changed):
        // then the classes' elements are patched where their cells change, else rewritten.
        let mut same_decisions = true;
        for &u in &edited {
            let index = u - first;
            let chain = cluster_rule_chain_name(tier, policy, direction, index);
            let decision = rule_decision(policy, direction, index, chain.clone());
            same_decisions &= slot.decisions[u] == decision;
            slot.decisions[u] = decision;
            let had = ruleset.chains.contains_key(&chain);
            match rule_chain(options, (tier, direction), policy, index, &chain) {
                Some((rules, origin)) if had => {
                    put_rule_chain((ruleset, touched), &chain, rules);
                    origins.push((chain, origin));
                }
                None if !had => {}
                _ => return Err(Structural),
            }
        }
        // The combinations the policy is in, to be decided again, from the cluster's policies.
        let mut combinations: Vec<Combination<'_>> = Vec::new();
        let mut positions: HashMap<usize, usize> = HashMap::new();
        for (number, names) in slot.policies.iter().enumerate() {
            if !names.contains(&policy.name) {
                continue;
            }
            positions.insert(number, combinations.len());
            combinations.push(slot.combination(cluster, number)?);
        }
        let mut rules = LazyRules::new(&slot.first_rule, direction, &combinations);
        for map in maps
            .iter_mut()
            .filter(|m| (m.tier, m.direction) == (tier, direction))
        {
            let family = map.family;
            let held = slot.held(family);
            let mut stopped = Vec::new();
            let mut started = Vec::new();
            for (id, (key, chain)) in map.keys.iter().enumerate() {
                if !key.rules.iter().any(|u| edited.contains(u)) {
                    continue;
                }
                if same_decisions {
                    // Patched: each address of the policy's combinations moves from what the
                    // class decided for it to what it decides now.
                    let old: HashMap<usize, Option<Arc<Cell>>> = positions
                        .keys()
                        .filter_map(|n| Some((*n, map.cache.decided(id, *n)?.clone())))
                        .collect();
                    for number in positions.keys() {
                        map.cache.forget(id, *number);
                    }
                    let mut changes = RunChanges::default();
                    for &(address, number) in &held {
                        let Some(&c) = positions.get(&number) else {
                            continue;
                        };
                        let Some(was) = old.get(&number) else {
                            return Err(Structural);
                        };
                        let now = decide((id, key), (c, number), &mut rules, &mut map.cache);
                        let Some(runs) = map.cache.runs.get_mut(id) else {
                            return Err(Structural);
                        };
                        runs.reassign(address, was.as_deref(), now.as_deref(), &mut changes)
                            .map_err(|_| Structural)?;
                    }
                    let runs = map.cache.runs.get(id).ok_or(Structural)?;
                    let applied = apply_class_changes(
                        ruleset,
                        touched,
                        (&map.class_maps, &mut map.stash),
                        (family, chain.as_deref(), runs),
                        changes,
                        &slot.decisions,
                    )?;
                    match applied {
                        Applied::Stopped => stopped.push(id),
                        Applied::Started => started.push(id),
                        Applied::Elements(_) => {}
                    }
                    continue;
                }
                for number in positions.keys() {
                    map.cache.forget(id, *number);
                }
                let mut cells: Vec<ClassCell> = Vec::new();
                for &(address, number) in &held {
                    let decided = match map.cache.decided(id, number) {
                        Some(decided) => decided.clone(),
                        None => match positions.get(&number) {
                            Some(&c) => decide((id, key), (c, number), &mut rules, &mut map.cache),
                            None => return Err(Structural),
                        },
                    };
                    if let Some(cell) = decided {
                        cells.push((address, address, cell));
                    }
                }
                let chain = match chain {
                    None if cells.is_empty() => continue,
                    Some(_) if cells.is_empty() => {
                        if let Some(runs) = map.cache.runs.get_mut(id) {
                            *runs = ClassRuns::of(&(Vec::new(), Vec::new()));
                        }
                        stopped.push(id);
                        continue;
                    }
                    Some(chain) => chain,
                    None => {
                        if let Some(runs) = map.cache.runs.get_mut(id) {
                            *runs = ClassRuns::of(&elements(&cells));
                        }
                        started.push(id);
                        continue;
                    }
                };
                let (ports, any) = elements(&cells);
                let decision = |u: usize| slot.decisions.get(u).cloned().ok_or(Structural);
                let ports_elements = ports
                    .iter()
                    .map(|e| Ok((ports_key(family, e), decision(e.3)?)))
                    .collect::<Result<BTreeMap<_, _>, Structural>>()?;
                let any_elements = any
                    .iter()
                    .map(|e| Ok((any_key(family, e), decision(e.2)?)))
                    .collect::<Result<BTreeMap<_, _>, Structural>>()?;
                if let Some(runs) = map.cache.runs.get_mut(id) {
                    *runs = ClassRuns::of(&(ports, any));
                }
                let Some([ports_map, any_map]) = map.class_maps.get(chain) else {
                    return Err(Structural);
                };
                if let Some((_, p, a)) = map.stash.get_mut(chain) {
                    p.elements = ports_elements;
                    a.elements = any_elements;
                    continue;
                }
                for (name, elements) in [(ports_map, ports_elements), (any_map, any_elements)] {
                    let Some(m) = ruleset.decision_maps.get_mut(name) else {
                        return Err(Structural);
                    };
                    m.elements = elements;
                    if let Some(t) = touched.as_mut() {
                        // Compared whole: what was tracked of it no longer applies.
                        t.decision_elements.remove(name);
                        t.decision_maps.insert(name.clone());
                    }
                }
            }
            for id in stopped {
                map.stop_class(ruleset, touched, id)?;
            }
            for id in started {
                start_class(
                    (ruleset, touched),
                    map,
                    (regions, slot),
                    (cluster, holders),
                    id,
                )?;
            }
        }
    }
    Ok(origins)
}

/// Adds the peer class `key`, which the peers map `map` (of `slot`'s tier and direction) has not
/// seen, to the map's classes: decided for the subjects `slot` holds by the cluster's
/// ClusterNetworkPolicies, its chain and decision maps rendered into the map's stash (no element
/// of the peers map jumps to it yet: [`PeersMap::settle`] brings it into the ruleset when one
/// does), with no chain when it decides nothing for any subject; returns its position in the
/// map's keys. The chain is what a full render would render for the class. [`Structural`] when
/// the subjects no longer match the cluster's policies.
pub(super) fn add_class(
    map: &mut PeersMap,
    slot: &SlotSubjects,
    cluster: &ClusterState,
    key: ClassKey,
) -> Result<usize, Structural> {
    let ids = add_classes(map, slot, cluster, vec![key])?;
    ids.first().copied().ok_or(Structural)
}

/// Adds the peer classes `keys` (distinct, none seen by `map`) as [`add_class`] adds one, the
/// subjects' combinations and their rules made once for all; returns their positions in the
/// map's keys, in order.
pub(super) fn add_classes(
    map: &mut PeersMap,
    slot: &SlotSubjects,
    cluster: &ClusterState,
    keys: Vec<ClassKey>,
) -> Result<Vec<usize>, Structural> {
    let (direction, family) = (slot.direction, map.family);
    let mut combinations: Vec<Combination<'_>> = Vec::new();
    let mut positions: HashMap<usize, usize> = HashMap::new();
    for (number, members) in slot.members.iter().enumerate() {
        if *members > 0 {
            positions.insert(number, combinations.len());
            combinations.push(slot.combination(cluster, number)?);
        }
    }
    let held = slot.held(family);
    let mut rules = LazyRules::new(&slot.first_rule, direction, &combinations);
    let mut ids = Vec::with_capacity(keys.len());
    for key in keys {
        if key.rules.last().is_some_and(|u| *u >= slot.decisions.len())
            || map.class_ids.contains_key(&key)
        {
            return Err(Structural);
        }
        let id = map.keys.len();
        if map.cache.runs.len() != id {
            return Err(Structural);
        }
        let mut cells: Vec<ClassCell> = Vec::new();
        for &(address, number) in &held {
            let c = *positions.get(&number).ok_or(Structural)?;
            if let Some(cell) = decide((id, &key), (c, number), &mut rules, &mut map.cache) {
                cells.push((address, address, cell));
            }
        }
        let class_elements = elements(&cells);
        let chain = if cells.is_empty() {
            None
        } else {
            Some(stash_chain(map, slot, &key, &class_elements)?)
        };
        map.cache.runs.push(ClassRuns::of(&class_elements));
        map.class_ids.insert(key.clone(), id);
        map.keys.push((key, chain));
        ids.push(id);
    }
    Ok(ids)
}

/// The combinations local pods joined in one refresh of a tier and direction: one of each, from
/// a pod that joined it, to decide by.
struct Fresh<'a> {
    combinations: Vec<Combination<'a>>,
    /// The position in `combinations` of each combination, by number.
    positions: HashMap<usize, usize>,
}

/// An address of a subject whose combination changed: it was in one (by number) or not, and is
/// in one or not.
type Move = (IpAddr, Option<usize>, Option<usize>);

impl SlotSubjects {
    /// Takes in the local pods `changed` (see [`refresh_subjects`]): the combinations they joined
    /// and the addresses that moved, sorted by address.
    fn take<'a>(
        &mut self,
        changed: &[(ObjectRef, Option<TierSubject<'a>>)],
    ) -> Result<(Fresh<'a>, Vec<Move>), Structural> {
        if self.shared {
            return Err(Structural);
        }
        let (tier, direction) = (self.tier, self.direction);
        let mut fresh = Fresh {
            combinations: Vec::new(),
            positions: HashMap::new(),
        };
        // Each address touched, with its combination before.
        let mut before: BTreeMap<IpAddr, Option<usize>> = BTreeMap::new();
        let mut counted: Vec<String> = Vec::new();
        for (key, subject) in changed {
            if let Some((addresses, number)) = self.pods.remove(key) {
                for ip in addresses {
                    let held = self.holders.remove(&ip);
                    before.entry(ip).or_insert(held);
                }
                self.count(number, false, &mut counted);
            }
            let Some((subject, judging)) = subject
                .as_ref()
                .and_then(|s| Some((s, judged(s, tier, direction)?)))
            else {
                continue;
            };
            let named = combination_named_ports(direction, judging);
            let resolved = resolve_named(subject.pod, &named);
            let combination = combination_key(judging, &resolved);
            let number = self.number(&combination, judging, &resolved);
            self.count(number, true, &mut counted);
            let mut addresses: Vec<IpAddr> = Vec::with_capacity(subject.pod.ips.len());
            for ip in &subject.pod.ips {
                if addresses.contains(ip) {
                    continue;
                }
                let held = self.holders.insert(*ip, number);
                if held.is_some() {
                    // Another subject holds it too.
                    return Err(Structural);
                }
                before.entry(*ip).or_insert(held);
                addresses.push(*ip);
            }
            if let std::collections::hash_map::Entry::Vacant(e) = fresh.positions.entry(number) {
                e.insert(fresh.combinations.len());
                fresh.combinations.push(Combination {
                    key: combination,
                    policies: judging.to_vec(),
                    named_ports: resolved,
                    addresses: Vec::new(),
                    members: Vec::new(),
                });
            }
            self.pods.insert(key.clone(), (addresses, number));
        }
        if !self.same_universe(&counted) {
            return Err(Structural);
        }
        let moves = before
            .into_iter()
            .filter_map(|(ip, was)| {
                let now = self.holders.get(&ip).copied();
                (was != now).then_some((ip, was, now))
            })
            .collect();
        Ok((fresh, moves))
    }
}

/// Brings the subjects sets of a tier and direction up to date with the addresses that joined
/// and left them; returns how many elements changed.
fn refresh_subjects_sets(
    ruleset: &mut Ruleset,
    touched: &mut Option<Touched>,
    (tier, direction): (Tier, Direction),
    moves: &[Move],
) -> Result<usize, Structural> {
    let mut count = 0;
    for (ip, was, now) in moves {
        let joined = match (was, now) {
            (None, Some(_)) => true,
            (Some(_), None) => false,
            _ => continue,
        };
        let name = tier_subjects_set_name(tier, direction, Family::of(ip));
        let Some(set) = ruleset.sets.get_mut(&name) else {
            return Err(Structural);
        };
        let element = SetElement::Addr(*ip);
        let changed = if joined {
            set.elements.insert(element)
        } else {
            set.elements.remove(&element)
        };
        if !changed {
            return Err(Structural);
        }
        count += 1;
        if let Some(t) = touched.as_mut() {
            if joined {
                t.element_added(&name, element);
            } else {
                t.element_removed(&name, element);
            }
        }
    }
    Ok(count)
}

/// Patches the class decision maps of one peers map for the addresses of its family that moved
/// (`moves`), deciding for the combinations `fresh` holds (their positions by number) what the
/// cache has not decided yet; returns how many elements changed, and the classes without a chain
/// that start deciding something (for [`start_class`]).
fn refresh_class_maps(
    ruleset: &mut Ruleset,
    touched: &mut Option<Touched>,
    map: &mut PeersMap,
    decisions: &[Decision],
    (rules, fresh): (&mut LazyRules<'_, '_, '_>, &HashMap<usize, usize>),
    moves: &[(u128, Option<usize>, Option<usize>)],
) -> Result<(usize, Vec<usize>), Structural> {
    let family = map.family;
    let mut count = 0;
    let mut stopped = Vec::new();
    let mut started = Vec::new();
    for (id, (key, chain)) in map.keys.iter().enumerate() {
        let mut changes = RunChanges::default();
        for &(address, was, now) in moves {
            let old = match was {
                Some(number) => match map.cache.decided(id, number) {
                    Some(decided) => decided.clone(),
                    None => return Err(Structural),
                },
                None => None,
            };
            let new = match now {
                Some(number) => match map.cache.decided(id, number) {
                    Some(decided) => decided.clone(),
                    None => match fresh.get(&number) {
                        Some(&c) => decide((id, key), (c, number), rules, &mut map.cache),
                        None => return Err(Structural),
                    },
                },
                None => None,
            };
            let Some(runs) = map.cache.runs.get_mut(id) else {
                return Err(Structural);
            };
            runs.reassign(address, old.as_deref(), new.as_deref(), &mut changes)
                .map_err(|_| Structural)?;
        }
        let runs = map.cache.runs.get(id).ok_or(Structural)?;
        match apply_class_changes(
            ruleset,
            touched,
            (&map.class_maps, &mut map.stash),
            (family, chain.as_deref(), runs),
            changes,
            decisions,
        )? {
            Applied::Elements(n) => count += n,
            Applied::Stopped => stopped.push(id),
            Applied::Started => started.push(id),
        }
    }
    for id in stopped {
        count += map.stop_class(ruleset, touched, id)?;
    }
    Ok((count, started))
}

/// The class `id` of `map`, which had no chain, decides something now for the subjects of
/// `slot` (its runs say what): its chain and decision maps are rendered into the map's stash, as
/// [`add_class`] renders them, and its addresses are spliced in ([`reveal`]: `regions` are the
/// book's, `holders` count the participating pods holding each address); returns how many
/// peers-map elements changed.
pub(super) fn start_class(
    (ruleset, touched): (&mut Ruleset, &mut Option<Touched>),
    map: &mut PeersMap,
    (regions, slot): (&[LiveRegion], &SlotSubjects),
    (cluster, holders): (&ClusterState, &HashMap<IpAddr, u32>),
    id: usize,
) -> Result<usize, Structural> {
    let (key, chain) = map.keys.get(id).ok_or(Structural)?;
    if chain.is_some() {
        return Err(Structural);
    }
    let key = key.clone();
    let class_elements = map.cache.runs.get(id).ok_or(Structural)?.elements();
    let chain = stash_chain(map, slot, &key, &class_elements)?;
    if let Some((_, c)) = map.keys.get_mut(id) {
        *c = Some(chain);
    }
    reveal(
        ruleset,
        touched,
        map,
        (regions, slot),
        (cluster, holders),
        id,
    )
}

/// Renders the chain of the class `key` of `map` with the elements `class_elements` into the
/// map's stash (no element of the peers map jumps to it yet: [`PeersMap::settle`] brings it
/// into the ruleset when one does); returns its name.
fn stash_chain(
    map: &mut PeersMap,
    slot: &SlotSubjects,
    key: &ClassKey,
    class_elements: &ClassElements,
) -> Result<String, Structural> {
    let mut scratch = Ruleset::default();
    let (chain, [ports, any]) = class_chain(
        &mut scratch,
        (slot.tier, slot.direction, map.family),
        key,
        (&slot.tokens, &slot.decisions),
        class_elements,
    );
    let rendered = (
        scratch.chains.remove(&chain),
        scratch.decision_maps.remove(&ports),
        scratch.decision_maps.remove(&any),
    );
    let (Some(c), Some(p), Some(a)) = rendered else {
        return Err(Structural);
    };
    map.stash.insert(chain.clone(), (c, p, a));
    map.added
        .push((chain.clone(), [ports.clone(), any.clone()]));
    map.class_maps.insert(chain.clone(), [ports, any]);
    Ok(chain)
}

/// Settles what `changes` says went and came of a class's elements (its runs now `runs`) and puts
/// it into the two decision maps of the class's chain `chain` (in `ruleset`, or stashed in
/// `stash`), each element deciding as `decisions` says by its rule; records each change in
/// `touched` (for maps in the ruleset) and returns how many there were, [`Applied::Stopped`]
/// when the class loses them all (it decides nothing any longer: see [`PeersMap::stop_class`]),
/// or [`Applied::Started`] when it starts deciding something (it has no chain and gets
/// elements), which changes the peers maps.
fn apply_class_changes(
    ruleset: &mut Ruleset,
    touched: &mut Option<Touched>,
    (class_maps, stash): (&HashMap<String, [String; 2]>, &mut Stash),
    (family, chain, runs): (Family, Option<&str>, &ClassRuns),
    mut changes: RunChanges,
    decisions: &[Decision],
) -> Result<Applied, Structural> {
    changes.settle();
    if changes.is_empty() {
        return Ok(Applied::Elements(0));
    }
    let chain = match chain {
        Some(_) if runs.is_empty() => return Ok(Applied::Stopped),
        Some(chain) => chain,
        None => return Ok(Applied::Started),
    };
    let Some([ports_map, any_map]) = class_maps.get(chain) else {
        return Err(Structural);
    };
    // Removals first: an element replaced keeps its key.
    let mut edits: Vec<(&String, bool, DecisionKey, usize)> = Vec::new();
    edits.extend(
        changes
            .ports_gone
            .iter()
            .map(|e| (ports_map, false, ports_key(family, e), e.3)),
    );
    edits.extend(
        changes
            .any_gone
            .iter()
            .map(|e| (any_map, false, any_key(family, e), e.2)),
    );
    edits.extend(
        changes
            .ports_came
            .iter()
            .map(|e| (ports_map, true, ports_key(family, e), e.3)),
    );
    edits.extend(
        changes
            .any_came
            .iter()
            .map(|e| (any_map, true, any_key(family, e), e.2)),
    );
    let stashed = stash.get_mut(chain);
    let in_ruleset = stashed.is_none();
    let mut stashed = stashed.map(|(_, p, a)| (p, a));
    let mut count = 0;
    for (map_name, added, key, u) in edits {
        let Some(decision) = decisions.get(u) else {
            return Err(Structural);
        };
        let target = match &mut stashed {
            Some((p, a)) => {
                if map_name == ports_map {
                    &mut **p
                } else {
                    &mut **a
                }
            }
            None => match ruleset.decision_maps.get_mut(map_name) {
                Some(m) => m,
                None => return Err(Structural),
            },
        };
        if added {
            target.elements.insert(key, decision.clone());
        } else {
            target.elements.remove(&key);
        }
        count += 1;
        if let (true, Some(t)) = (in_ruleset, touched.as_mut()) {
            if added {
                t.decision_added(map_name, key, decision.clone());
            } else {
                t.decision_removed(map_name, key, decision.clone());
            }
        }
    }
    Ok(Applied::Elements(count))
}

/// What [`apply_class_changes`] did to a class's decision maps.
enum Applied {
    /// So many elements changed.
    Elements(usize),
    /// The class decides nothing any longer: its chain is to go.
    Stopped,
    /// The class had no chain and decides something now (its runs say what): its chain is to
    /// come ([`start_class`]), and its addresses with it.
    Started,
}

/// Renders the tiers of one node into a ruleset whose base chains already look them up.
pub(super) struct TierRenderer<'i, 'a> {
    index: &'i ClusterIndex<'a>,
    families: Vec<Family>,
    options: CompileOptions,
    /// Distinct peer regions: rules with the same peers (most guardrails share theirs) share one.
    regions: Vec<PeerRegion>,
    /// A region's position in `regions` by what it is made of.
    region_ids: HashMap<RegionKey<'a>, usize>,
    /// A rule's region by (policy, direction, rule, family).
    rule_regions: HashMap<(&'a str, Direction, usize, Family), usize>,
    /// What the peers maps are made of, for an incremental compiler (`None`: not kept); its
    /// regions are `regions`' order.
    book: Option<(Vec<LiveRegion>, PeerBook)>,
}

impl<'i, 'a> TierRenderer<'i, 'a> {
    pub(super) fn new(
        index: &'i ClusterIndex<'a>,
        families: Vec<Family>,
        options: CompileOptions,
    ) -> Self {
        Self {
            index,
            families,
            options,
            regions: Vec::new(),
            region_ids: HashMap::new(),
            rule_regions: HashMap::new(),
            book: None,
        }
    }

    /// Keeps what the peers maps are made of, for [`TierRenderer::take_book`].
    pub(super) fn keeping_book(mut self) -> Self {
        self.book = Some((Vec::new(), PeerBook::default()));
        self
    }

    /// What the peers maps rendered are made of (`None` unless [`TierRenderer::keeping_book`]).
    pub(super) fn take_book(&mut self) -> Option<PeerBook> {
        let (regions, mut book) = self.book.take()?;
        book.set_regions(regions);
        Some(book)
    }

    pub(super) fn render(
        &mut self,
        ruleset: &mut Ruleset,
        origins: &mut Origins,
        layout: &Layout,
        pods: &[TierSubject<'a>],
    ) {
        for tier in Tier::ALL {
            for direction in Direction::BOTH {
                if layout.has(tier, direction) {
                    self.render_tier(ruleset, origins, tier, direction, pods);
                }
            }
        }
    }

    /// The local pods of a tier and direction, grouped by the policies that judge them (and, for
    /// ingress, how they resolve the named ports those policies use), in the order of each one's
    /// first pod, and whether two of them held one address. Nothing rendered depends on that
    /// order: each address is in one combination, and what is rendered from them is sorted by
    /// address or by rule.
    fn combinations(
        tier: Tier,
        direction: Direction,
        pods: &[TierSubject<'a>],
    ) -> (Vec<Combination<'a>>, bool) {
        // Pods are grouped first by their policies, as references (the cluster's own objects:
        // the same policy is the same reference), so that what the policies alone decide (their
        // names, their ingress named ports) is found once per group; then by how each pod
        // resolves those named ports.
        struct Group<'a> {
            policies: Vec<&'a ClusterNetworkPolicy>,
            named: Vec<&'a str>,
            /// The group's combinations (positions in `combinations`) by resolved named ports.
            by_ports: HashMap<Vec<ResolvedNamedPort<'a>>, usize>,
        }
        let mut groups: Vec<Group<'a>> = Vec::new();
        let mut group_ids: HashMap<Vec<*const ClusterNetworkPolicy>, usize> = HashMap::new();
        // The group of the pod before: pods of a workload are neighbours and share their policies,
        // so most pods find theirs without hashing the list.
        let mut previous: Option<usize> = None;
        let mut combinations: Vec<Combination<'a>> = Vec::new();
        let mut claimed: HashSet<IpAddr> = HashSet::new();
        let mut shared = false;
        for local in pods {
            let Some(judging) = judged(local, tier, direction) else {
                continue;
            };
            let same = |group: &Group<'a>| {
                group.policies.len() == judging.len()
                    && group
                        .policies
                        .iter()
                        .zip(judging)
                        .all(|(a, b)| std::ptr::eq(*a, *b))
            };
            let id = match previous.filter(|g| groups.get(*g).is_some_and(same)) {
                Some(id) => id,
                None => {
                    let refs: Vec<*const ClusterNetworkPolicy> =
                        judging.iter().map(|p| *p as *const _).collect();
                    *group_ids.entry(refs).or_insert_with(|| {
                        groups.push(Group {
                            named: combination_named_ports(direction, judging),
                            policies: judging.to_vec(),
                            by_ports: HashMap::new(),
                        });
                        groups.len() - 1
                    })
                }
            };
            previous = Some(id);
            let Some(group) = groups.get_mut(id) else {
                continue;
            };
            let resolved = resolve_named(local.pod, &group.named);
            let policies = &group.policies;
            let at = *group
                .by_ports
                .entry(resolved)
                .or_insert_with_key(|resolved| {
                    combinations.push(Combination {
                        key: combination_key(policies, resolved),
                        policies: policies.clone(),
                        named_ports: resolved.clone(),
                        addresses: Vec::new(),
                        members: Vec::new(),
                    });
                    combinations.len() - 1
                });
            let mut addresses = Vec::with_capacity(local.pod.ips.len());
            for ip in &local.pod.ips {
                if claimed.insert(*ip) {
                    addresses.push(*ip);
                } else if !addresses.contains(ip) {
                    shared = true;
                }
            }
            if let Some(combination) = combinations.get_mut(at) {
                combination.addresses.extend(&addresses);
                combination.members.push((&local.pod.id, addresses));
            }
        }
        (combinations, shared)
    }

    fn render_tier(
        &mut self,
        ruleset: &mut Ruleset,
        origins: &mut Origins,
        tier: Tier,
        direction: Direction,
        pods: &[TierSubject<'a>],
    ) {
        let (combinations, shared) = Self::combinations(tier, direction, pods);
        fill_subjects(ruleset, tier, direction, &combinations);
        let universe = Universe::of(direction, &combinations);
        let names = universe.names(tier, direction);
        let mut rules = LazyRules::new(&universe.first_rule, direction, &combinations);
        for family in self.families.clone() {
            let region_of: Vec<usize> = universe
                .rules
                .iter()
                .map(|(policy, index)| self.ensure_region(policy, direction, *index, family))
                .collect();
            let mut used = region_of.clone();
            used.sort_unstable();
            used.dedup();
            let used_regions: Vec<&PeerRegion> = used.iter().map(|r| &self.regions[*r]).collect();
            // The universe's rules whose region is each used one.
            let mut rules_of: Vec<Vec<usize>> = vec![Vec::new(); used.len()];
            for (u, r) in region_of.iter().enumerate() {
                if let Ok(k) = used.binary_search(r) {
                    rules_of[k].push(u);
                }
            }
            let mut class_ids: HashMap<RegionClass, usize> = HashMap::new();
            let mut class_keys: Vec<ClassKey> = Vec::new();
            let mut ranges: Vec<(u128, u128, usize)> = Vec::new();
            for (first, last, held) in classify(&used_regions, family) {
                let id = *class_ids.entry(held).or_insert_with_key(|held| {
                    class_keys.push(ClassKey::of_regions(held, &rules_of));
                    class_keys.len() - 1
                });
                ranges.push((first, last, id));
            }
            let mut chains: HashMap<usize, String> = HashMap::new();
            let mut class_maps: HashMap<String, [String; 2]> = HashMap::new();
            // Combinations are numbered by position.
            let mut cache = ClassCache::default();
            let addresses = family_addresses(&combinations, family);
            for (id, key) in class_keys.iter().enumerate() {
                let cells = class_cells((id, key), &mut rules, &addresses, &mut cache);
                let class_elements = elements(&cells);
                if !cells.is_empty() {
                    let (chain, maps) = class_chain(
                        ruleset,
                        (tier, direction, family),
                        key,
                        (&names.tokens, &names.decisions),
                        &class_elements,
                    );
                    class_maps.insert(chain.clone(), maps);
                    chains.insert(id, chain);
                }
                if self.book.is_some() {
                    cache.runs.push(ClassRuns::of(&class_elements));
                }
            }
            let peers = tier_peers_map_name(tier, direction, family);
            let Some(map) = ruleset.decision_maps.get_mut(&peers) else {
                continue;
            };
            let mut merged: Vec<(u128, u128, &String)> = Vec::new();
            for (first, last, id) in &ranges {
                let Some(chain) = chains.get(id) else {
                    continue;
                };
                match merged.last_mut() {
                    Some(prev) if prev.2 == chain && prev.1 + 1 == *first => prev.1 = *last,
                    _ => merged.push((*first, *last, chain)),
                }
            }
            let addr = |n: u128| crate::cidr::from_u128(family, n);
            for (first, last, chain) in merged {
                map.elements.insert(
                    DecisionKey {
                        first: addr(first),
                        last: addr(last),
                        ports: None,
                    },
                    Decision {
                        verdict: DecisionVerdict::Jump(chain.clone()),
                        comment: None,
                    },
                );
            }
            if let Some((_, book)) = &mut self.book {
                // Each universe rule's region, as a position in `used`.
                let region_of = region_of
                    .iter()
                    .map(|r| used.binary_search(r).unwrap_or_default())
                    .collect();
                book.push_map(PeersMap {
                    name: peers.clone(),
                    tier,
                    direction,
                    family,
                    regions: used.clone(),
                    rules_of: rules_of.clone(),
                    region_of,
                    class_ids: class_keys
                        .iter()
                        .enumerate()
                        .map(|(id, key)| (key.clone(), id))
                        .collect(),
                    by_regions: class_ids,
                    keys: class_keys
                        .iter()
                        .enumerate()
                        .map(|(id, key)| (key.clone(), chains.get(&id).cloned()))
                        .collect(),
                    class_maps,
                    cache,
                    elements: element_counts(map),
                    stash: HashMap::new(),
                    added: Vec::new(),
                });
            }
        }
        if let Some((_, book)) = &mut self.book {
            book.push_subjects(SlotSubjects::of(
                (tier, direction),
                &combinations,
                &universe,
                &names,
                shared,
            ));
        }
        // Every Accept and Deny rule of the policies judging some local pod has its chain, used
        // or not: a pod or Node that makes a rule decide somewhere changes elements only.
        for (u, &(policy, index)) in universe.rules.iter().enumerate() {
            let chain = &names.rule_chains[u];
            if let Some((rules, origin)) =
                rule_chain(&self.options, (tier, direction), policy, index, chain)
            {
                ruleset
                    .chains
                    .insert(chain.clone(), Chain { base: None, rules });
                origins.insert(chain.clone(), origin);
            }
        }
    }

    /// The position of a rule's region in `regions`, computing it the first time its peers are
    /// seen.
    fn ensure_region(
        &mut self,
        policy: &'a ClusterNetworkPolicy,
        direction: Direction,
        index: usize,
        family: Family,
    ) -> usize {
        let key = (policy.name.as_str(), direction, index, family);
        if let Some(r) = self.rule_regions.get(&key) {
            return *r;
        }
        let rule = &policy.rules(direction)[index];
        let content = region_key(direction, rule, family);
        let r = match self.region_ids.get(&content) {
            Some(r) => *r,
            None => {
                let region = self.region(direction, rule, family);
                self.regions.push(region);
                if self.book.is_some() {
                    let live = LiveRegion::of(self.index.cluster(), direction, rule, family);
                    if let Some((regions, _)) = &mut self.book {
                        regions.push(live);
                    }
                }
                self.region_ids.insert(content, self.regions.len() - 1);
                self.regions.len() - 1
            }
        };
        self.rule_regions.insert(key, r);
        r
    }

    /// Where a rule's peers are.
    fn region(&self, direction: Direction, rule: &ClusterRule, family: Family) -> PeerRegion {
        let pods = self.index.pods();
        let mut ranges: Vec<(u128, u128)> = Vec::new();
        let add_pods = |positions: Vec<usize>, ranges: &mut Vec<(u128, u128)>| {
            for i in positions {
                if let Some(ip) = pods[i].ip(family) {
                    let n = to_u128(&ip);
                    ranges.push((n, n));
                }
            }
        };
        for peer in &rule.peers {
            match peer {
                ClusterPeer::Namespaces(s) => {
                    let namespaces = self.index.select_namespaces(s);
                    add_pods(
                        self.index
                            .select_pods(&namespaces, &LabelSelector::everything()),
                        &mut ranges,
                    );
                }
                ClusterPeer::Pods(p) => {
                    let namespaces = self.index.select_namespaces(&p.namespaces);
                    add_pods(self.index.select_pods(&namespaces, &p.pods), &mut ranges);
                }
                ClusterPeer::Networks(cidrs) => ranges.extend(
                    cidrs
                        .iter()
                        .filter(|c| c.family() == family)
                        .map(|c| c.bounds()),
                ),
                ClusterPeer::Nodes(s) => ranges.extend(
                    self.index
                        .cluster()
                        .node_objects()
                        .values()
                        .filter(|n| s.matches(&n.labels))
                        .flat_map(|n| &n.addresses)
                        .filter(|ip| Family::of(ip) == family)
                        .map(|ip| (to_u128(ip), to_u128(ip))),
                ),
                // Fails closed: an Accept rule matches nothing with it, Deny and Pass everything.
                ClusterPeer::Unknown => {
                    if rule.action != Action::Accept {
                        ranges.push((0, max_u128(family)));
                    }
                }
            }
        }
        let ranges = merge_ranges(ranges);
        let mut named = HashMap::new();
        let names: Vec<&str> = rule_named_ports(rule).collect();
        if direction == Direction::Egress && !names.is_empty() {
            for pod in pods {
                let Some(ip) = pod.ip(family) else { continue };
                let n = to_u128(&ip);
                if !ranges_hold(&ranges, n) {
                    continue;
                }
                let resolved: Vec<(Protocol, u16)> =
                    names.iter().filter_map(|n| named_port(pod, n)).collect();
                if !resolved.is_empty() {
                    named.insert(n, resolved);
                }
            }
        }
        PeerRegion { ranges, named }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carving_keeps_first_cover() {
        let mut uncovered = vec![(0, u16::MAX)];
        assert_eq!(carve(&mut uncovered, 80, 90), vec![(80, 90)]);
        assert_eq!(carve(&mut uncovered, 85, 100), vec![(91, 100)]);
        assert_eq!(uncovered, vec![(0, 79), (101, u16::MAX)]);
        assert_eq!(
            carve(&mut uncovered, 0, u16::MAX),
            vec![(0, 79), (101, u16::MAX)]
        );
        assert!(uncovered.is_empty());
    }

    fn rule(action: Action, tcp: Option<(u16, u16)>) -> SweepRule {
        let mut ports: [Vec<(u16, u16)>; 3] = Default::default();
        ports[protocol_slot(Protocol::Tcp)].extend(tcp);
        SweepRule {
            all: tcp.is_none(),
            pass: action == Action::Pass,
            ports,
        }
    }

    #[test]
    fn a_pass_takes_its_ports_from_later_rules_without_elements() {
        let pass_web = rule(Action::Pass, Some((80, 90)));
        let deny_all = rule(Action::Deny, None);
        let cell_of = |active: &[(usize, &SweepRule)]| cell(active, &[]);
        // Pass on TCP 80-90, then Deny everything: the Deny decides all but 80-90, which has no
        // element (the next stage judges it, as Pass says).
        let decided = cell_of(&[(0, &pass_web), (1, &deny_all)]);
        assert_eq!(decided.other, Some(1));
        let tcp: Vec<_> = decided
            .ports
            .iter()
            .filter(|p| p.0 == Protocol::Tcp)
            .collect();
        assert_eq!(
            tcp,
            vec![
                &(Protocol::Tcp, 0, 79, 1),
                &(Protocol::Tcp, 91, u16::MAX, 1)
            ]
        );
        assert!(decided.ports.contains(&(Protocol::Udp, 0, u16::MAX, 1)));
        // A Pass of everything first: nothing after it decides, and the cell is empty.
        let pass_all = rule(Action::Pass, None);
        let decided = cell_of(&[(0, &pass_all), (1, &deny_all)]);
        assert_eq!(decided.other, None);
        assert!(decided.ports.is_empty());
    }

    #[test]
    fn a_rule_token_names_its_policy_dots_included() {
        assert_eq!(token_policy("guard.egress.3"), "guard");
        assert_eq!(token_policy("team.a.guard.ingress.0"), "team.a.guard");
    }

    /// The elements of `cells` as their definition says: per address, per piece of its cell, an
    /// element that grows while the next address is adjacent and holds the same piece.
    fn reference_elements(cells: &[ClassCell]) -> ClassElements {
        let mut any: Vec<(u128, u128, usize)> = Vec::new();
        let mut ports: Vec<PortsElement> = Vec::new();
        let mut open: HashMap<((Protocol, u16, u16), usize), usize> = HashMap::new();
        for (first, last, cell) in cells {
            if let Some(i) = cell.other {
                match any.last_mut() {
                    Some(prev) if prev.2 == i && prev.1 + 1 == *first => prev.1 = *last,
                    _ => any.push((*first, *last, i)),
                }
            }
            let mut still_open = HashMap::new();
            for &(protocol, a, b, i) in &cell.ports {
                let piece = ((protocol, a, b), i);
                match open.get(&piece) {
                    Some(&at) if ports[at].1 + 1 == *first => {
                        ports[at].1 = *last;
                        still_open.insert(piece, at);
                    }
                    _ => {
                        still_open.insert(piece, ports.len());
                        ports.push((*first, *last, (protocol, a, b), i));
                    }
                }
            }
            open = still_open;
        }
        (ports, any)
    }

    #[test]
    fn elements_merge_adjacent_addresses_as_their_definition_says() {
        // Cells as `cell` makes them, from random rules over a few ports; addresses mostly
        // adjacent, cells often shared.
        let mut seed: u64 = 0x5eed;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..500 {
            let rules: Vec<SweepRule> = (0..1 + next(4))
                .map(|_| {
                    let mut ports: [Vec<(u16, u16)>; 3] = Default::default();
                    for slot in &mut ports {
                        for _ in 0..next(3) {
                            let a = next(8) as u16 * 10;
                            slot.push((a, a + next(15) as u16));
                        }
                    }
                    SweepRule {
                        all: next(5) == 0,
                        pass: next(4) == 0,
                        ports: ports.map(merge_ranges),
                    }
                })
                .collect();
            let palette: Vec<Arc<Cell>> = (0..1 + next(3))
                .map(|_| {
                    let active: Vec<(usize, &SweepRule)> =
                        rules.iter().enumerate().filter(|_| next(3) != 0).collect();
                    Arc::new(cell(&active, &[]))
                })
                .collect();
            let mut cells: Vec<ClassCell> = Vec::new();
            let mut address = 100u128;
            for _ in 0..next(12) {
                address += 1 + u128::from(next(4) == 0);
                let shared = &palette[next(palette.len() as u64) as usize];
                let cell = if next(6) == 0 {
                    Arc::new((**shared).clone())
                } else {
                    Arc::clone(shared)
                };
                cells.push((address, address, cell));
            }
            assert_eq!(elements(&cells), reference_elements(&cells), "{cells:?}");
        }
    }

    #[test]
    fn ranges_merge_when_they_touch() {
        assert_eq!(
            merge_ranges(vec![(5u16, 9), (1, 4), (20, 30), (25, 26)]),
            vec![(1, 9), (20, 30)]
        );
        assert_eq!(
            merge_ranges(vec![(0u128, u128::MAX), (3, 4)]),
            vec![(0, u128::MAX)]
        );
    }
}
