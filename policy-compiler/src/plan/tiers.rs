//! ClusterNetworkPolicy tiers in the ruleset: the Admin tier before the NetworkPolicy verdict maps,
//! the Baseline tier after them.
//!
//! Layout, for each tier and direction that some ClusterNetworkPolicy of the cluster has rules in:
//! - the base chain of the direction looks the local pod up in a dispatch map (`admin_egress_v4`, …)
//!   placed before (Admin) or after (Baseline) the NetworkPolicy maps; the dispatch map sends the pod
//!   to the *combination chain* of the policies of that tier selecting it;
//! - a combination chain stands for one list of policies in evaluation order (and, for ingress, one
//!   way its subjects resolve the named ports the rules use). It looks the packet up in two
//!   *decision maps* per family, one keyed by `peer address . protocol . port` for TCP, UDP and
//!   SCTP, one keyed by peer address for every other protocol. Each element holds the verdict of the
//!   first rule that matches the packets it holds: `accept` (Accept), `drop` (Deny) or `return`
//!   (Pass, and the end of the chain when nothing matches: the next stage judges);
//! - the elements are computed here by a sweep over the peer address space: every rule contributes
//!   address ranges (pods and Nodes as single addresses, networks as ranges), and each elementary
//!   range gets, per protocol and port range, the first rule of the list that covers it.
//!
//! So the first-match order of a tier costs one lookup per packet however many rules it has, pod
//! churn only changes elements, and a Baseline rule never sees a pod NetworkPolicies isolate (their
//! group chains decide first).
//!
//! What a local pod sends to its own node crosses the input hook, not forward: when the cluster has
//! egress rules, the `node_egress` base chain dispatches the same combination chains there. A pod
//! that NetworkPolicies isolate for egress is left out of the Baseline dispatch maps: on forward
//! its group chain decides before, and on input NetworkPolicy allows (it never restricts a pod's
//! traffic to its node).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::isolation::LocalPod;
use super::naming::{
    decision_map_name, tier_chain_name, tier_vmap_name, ResolvedNamedPort, NODE_EGRESS_CHAIN,
};
use crate::cidr::{max_u128, to_u128, Family};
use crate::cluster::ClusterState;
use crate::index::ClusterIndex;
use crate::model::{
    Action, ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, Direction, Pod, Protocol,
    Tier,
};
use crate::nft::{
    AddrField, BaseChain, Chain, Decision, DecisionKey, DecisionMap, DecisionVerdict, Hook, Match,
    Rule as NftRule, Ruleset, Verdict, VerdictMap,
};
use crate::selector::LabelSelector;

/// The tiers and directions the cluster's ClusterNetworkPolicies have rules in: only those get
/// rules in the base chains, so a cluster without ClusterNetworkPolicies renders as before and a
/// pod's arrival never changes a chain.
#[derive(Debug, Clone, Default)]
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

/// The dispatch rules of a tier for a base chain (one per family), creating the dispatch maps.
pub(super) fn dispatch_rules(
    ruleset: &mut Ruleset,
    tier: Tier,
    direction: Direction,
) -> Vec<NftRule> {
    [Family::V4, Family::V6]
        .into_iter()
        .map(|family| {
            let map = tier_vmap_name(tier, direction, family);
            ruleset
                .maps
                .entry(map.clone())
                .or_insert_with(|| VerdictMap {
                    family,
                    elements: BTreeMap::new(),
                });
            NftRule {
                matches: vec![],
                verdict: Verdict::Vmap {
                    family,
                    field: subject_field(direction),
                    map,
                },
                comment: None,
            }
        })
        .collect()
}

/// The `node_egress` base chain on the input hook, when the cluster has egress rules: the Admin
/// tier, then the Baseline tier. NetworkPolicy never restricts a pod's traffic to its node, so
/// nothing stands between them; the pods NetworkPolicies isolate are absent from the Baseline
/// dispatch maps (see [`TierRenderer`]), so they pass.
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
fn named_port(pod: &Pod, name: &str) -> Option<(Protocol, u16)> {
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
        .flat_map(|r| &r.protocols)
        .filter_map(|port| match port {
            ClusterPort::Named(n) => Some(n.as_str()),
            ClusterPort::Range { .. } => None,
        })
        .collect();
    names.into_iter().collect()
}

/// One combination of a tier: its policies, how its subjects resolve the named ports, its pods.
struct Combination<'a> {
    policies: Vec<&'a ClusterNetworkPolicy>,
    named_ports: Vec<ResolvedNamedPort<'a>>,
    pods: Vec<&'a Pod>,
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

/// A rule ready for the sweep: its region, its ports and what it decides.
struct SweepRule<'r> {
    region: &'r PeerRegion,
    /// `protocols` is empty: every protocol and port.
    all: bool,
    /// Port ranges per protocol (in [`Protocol::ALL`] order), named ports resolved for ingress.
    ports: [Vec<(u16, u16)>; 3],
    decision: Decision,
}

/// What one elementary address range decides: rule positions in the combination's rule list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cell {
    /// The rule deciding protocols without ports, if any.
    other: Option<usize>,
    /// `(protocol, first port, last port, rule)`, by protocol and port.
    ports: Vec<(Protocol, u16, u16, usize)>,
}

fn protocol_slot(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
        Protocol::Sctp => 2,
    }
}

/// Sorts and merges ranges that overlap or touch.
fn merge_ranges<T: Copy + Ord + Into<u128>>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
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

/// The decision of every port and protocol for one elementary range whose active rules (in
/// evaluation order) are `active`; `point` is the address when the range is a single address.
fn cell(rules: &[SweepRule<'_>], active: &BTreeSet<usize>, point: Option<u128>) -> Cell {
    let other = active.iter().copied().find(|i| rules[*i].all);
    let mut ports = Vec::new();
    for protocol in Protocol::ALL {
        let slot = protocol_slot(protocol);
        let mut uncovered = vec![(0u16, u16::MAX)];
        let mut pieces: Vec<(u16, u16, usize)> = Vec::new();
        for &i in active {
            let rule = &rules[i];
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
                let named = point.and_then(|p| rule.region.named.get(&p));
                for &(q, port) in named.into_iter().flatten() {
                    if q == protocol {
                        for (x, y) in carve(&mut uncovered, port, port) {
                            pieces.push((x, y, i));
                        }
                    }
                }
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

/// Sweeps the address space of one family: the elementary ranges some rule covers, each with its
/// cell, adjacent ranges with equal cells merged.
fn sweep(rules: &[SweepRule<'_>], family: Family) -> Vec<(u128, u128, Cell)> {
    let max = max_u128(family);
    // (position, rule, starts): a rule becomes active at the first address of each of its ranges
    // and inactive after the last.
    let mut events: Vec<(u128, usize, bool)> = Vec::new();
    let mut boundaries: Vec<u128> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        for &(a, b) in &rule.region.ranges {
            events.push((a, i, true));
            boundaries.push(a);
            if b < max {
                events.push((b + 1, i, false));
                boundaries.push(b + 1);
            }
        }
        // Named ports resolve per destination pod: each such address is its own range.
        for &p in rule.region.named.keys() {
            boundaries.push(p);
            if p < max {
                boundaries.push(p + 1);
            }
        }
    }
    events.sort_unstable();
    boundaries.sort_unstable();
    boundaries.dedup();
    let mut out: Vec<(u128, u128, Cell)> = Vec::new();
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
        let c = cell(rules, &active, (start == end).then_some(start));
        match out.last_mut() {
            Some(last) if last.1 + 1 == start && last.2 == c => last.1 = end,
            _ => out.push((start, end, c)),
        }
    }
    out
}

/// A ports map element: address range, protocol and port range, rule.
type PortsElement = (u128, u128, (Protocol, u16, u16), usize);

/// The elements of the two maps for the cells of a sweep, each map merging adjacent address ranges
/// on which the same rule decides the same protocol and ports (the two maps merge independently:
/// an element of one may span cells the other splits).
fn elements(cells: &[(u128, u128, Cell)]) -> (Vec<PortsElement>, Vec<(u128, u128, usize)>) {
    let mut any: Vec<(u128, u128, usize)> = Vec::new();
    let mut ports: Vec<PortsElement> = Vec::new();
    // Ports elements the previous cell ended, by protocol, ports and rule: they grow while the next
    // cells are adjacent and hold the same piece.
    let mut open: HashMap<((Protocol, u16, u16), usize), usize> = HashMap::new();
    for (first, last, cell) in cells {
        if let Some(i) = cell.other {
            match any.last_mut() {
                Some(prev) if prev.2 == i && prev.1 + 1 == *first => prev.1 = *last,
                _ => any.push((*first, *last, i)),
            }
        }
        let mut still_open = HashMap::with_capacity(cell.ports.len());
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

fn decision_verdict(action: Action) -> DecisionVerdict {
    match action {
        Action::Accept => DecisionVerdict::Accept,
        Action::Deny => DecisionVerdict::Drop,
        Action::Pass => DecisionVerdict::Return,
    }
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

/// Renders the tiers of one node into a ruleset whose base chains already dispatch to them.
pub(super) struct TierRenderer<'i, 'a> {
    index: &'i ClusterIndex<'a>,
    families: Vec<Family>,
    /// Peer regions by (policy, direction, rule, family), shared by every combination.
    regions: HashMap<(&'a str, Direction, usize, Family), PeerRegion>,
}

impl<'i, 'a> TierRenderer<'i, 'a> {
    pub(super) fn new(index: &'i ClusterIndex<'a>, families: Vec<Family>) -> Self {
        Self {
            index,
            families,
            regions: HashMap::new(),
        }
    }

    pub(super) fn render(&mut self, ruleset: &mut Ruleset, layout: &Layout, pods: &[LocalPod<'a>]) {
        for tier in Tier::ALL {
            for direction in Direction::BOTH {
                if layout.has(tier, direction) {
                    self.render_tier(ruleset, tier, direction, pods);
                }
            }
        }
    }

    fn render_tier(
        &mut self,
        ruleset: &mut Ruleset,
        tier: Tier,
        direction: Direction,
        pods: &[LocalPod<'a>],
    ) {
        let mut combinations: BTreeMap<String, Combination<'a>> = BTreeMap::new();
        for local in pods {
            // NetworkPolicies decide for the pods they isolate before the Baseline tier is reached
            // on the forward hook; on the input hook (a pod reaching its node) they allow, and the
            // pod's absence from the Baseline dispatch map is what lets the packet through.
            if tier == Tier::Baseline && !local.policies(direction).is_empty() {
                continue;
            }
            let policies = local.tier_policies(tier, direction);
            if policies.is_empty() {
                continue;
            }
            let named_ports: Vec<ResolvedNamedPort<'a>> = match direction {
                Direction::Ingress => ingress_named_ports(&policies)
                    .into_iter()
                    .map(|n| (n, named_port(local.pod, n)))
                    .collect(),
                Direction::Egress => Vec::new(),
            };
            let chain = tier_chain_name(tier, direction, &policies, &named_ports);
            combinations
                .entry(chain)
                .or_insert_with(|| Combination {
                    policies,
                    named_ports,
                    pods: Vec::new(),
                })
                .pods
                .push(local.pod);
        }
        for (chain, combination) in &combinations {
            self.combination(ruleset, tier, direction, chain, combination);
            for pod in &combination.pods {
                for ip in &pod.ips {
                    let map = tier_vmap_name(tier, direction, Family::of(ip));
                    if let Some(m) = ruleset.maps.get_mut(&map) {
                        m.elements.insert(*ip, chain.clone());
                    }
                }
            }
        }
    }

    /// The combination chain and its decision maps.
    fn combination(
        &mut self,
        ruleset: &mut Ruleset,
        tier: Tier,
        direction: Direction,
        chain: &str,
        combination: &Combination<'a>,
    ) {
        let names: Vec<&str> = combination
            .policies
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let comment = format!("{tier} {direction}: {}", names.join(", "));
        let mut rules = Vec::new();
        for family in self.families.clone() {
            let [ports_map, any_map] = [true, false].map(|ports| {
                decision_map_name(
                    tier,
                    direction,
                    &combination.policies,
                    &combination.named_ports,
                    ports,
                    family,
                )
            });
            let (ports_elements, any_elements) = self.decisions(direction, combination, family);
            ruleset.decision_maps.insert(
                ports_map.clone(),
                DecisionMap {
                    family,
                    ports: true,
                    elements: ports_elements,
                },
            );
            ruleset.decision_maps.insert(
                any_map.clone(),
                DecisionMap {
                    family,
                    ports: false,
                    elements: any_elements,
                },
            );
            for (ports, map) in [(true, ports_map), (false, any_map)] {
                rules.push(NftRule {
                    matches: vec![Match::L4ProtoWithPorts { negated: !ports }],
                    verdict: Verdict::DecisionVmap {
                        family,
                        field: peer_field(direction),
                        ports,
                        map,
                    },
                    comment: Some(comment.clone()),
                });
            }
        }
        ruleset
            .chains
            .insert(chain.to_string(), Chain { base: None, rules });
    }

    /// The elements of a combination's two decision maps for one family.
    #[allow(clippy::type_complexity)]
    fn decisions(
        &mut self,
        direction: Direction,
        combination: &Combination<'a>,
        family: Family,
    ) -> (
        BTreeMap<DecisionKey, Decision>,
        BTreeMap<DecisionKey, Decision>,
    ) {
        // Resolve every rule's peers first (cached across combinations), then borrow them.
        let mut order: Vec<(&'a ClusterNetworkPolicy, usize)> = Vec::new();
        for policy in &combination.policies {
            for index in 0..policy.rules(direction).len() {
                self.ensure_region(policy, direction, index, family);
                order.push((policy, index));
            }
        }
        let named: BTreeMap<&str, Option<(Protocol, u16)>> =
            combination.named_ports.iter().copied().collect();
        let rules: Vec<SweepRule<'_>> = order
            .iter()
            .map(|(policy, index)| {
                let rule = &policy.rules(direction)[*index];
                let region = &self.regions[&(policy.name.as_str(), direction, *index, family)];
                let mut ports: [Vec<(u16, u16)>; 3] = Default::default();
                for port in &rule.protocols {
                    match port {
                        ClusterPort::Range {
                            protocol,
                            first,
                            last,
                        } => ports[protocol_slot(*protocol)].push((*first, *last)),
                        // Ingress: the subjects' own port; egress: resolved per destination in
                        // the region.
                        ClusterPort::Named(n) => {
                            if let Some(Some((protocol, port))) = named.get(n.as_str()) {
                                ports[protocol_slot(*protocol)].push((*port, *port));
                            }
                        }
                    }
                }
                SweepRule {
                    region,
                    all: rule.protocols.is_empty(),
                    ports: ports.map(merge_ranges),
                    decision: Decision {
                        verdict: decision_verdict(rule.action),
                        comment: Some(rule_comment(policy, direction, *index)),
                    },
                }
            })
            .collect();
        let addr = |n: u128| crate::cidr::from_u128(family, n);
        let decision = |i: usize| rules[i].decision.clone();
        let (ports, any) = elements(&sweep(&rules, family));
        let ports_elements = ports
            .into_iter()
            .map(|(first, last, (protocol, a, b), i)| {
                let key = DecisionKey {
                    first: addr(first),
                    last: addr(last),
                    ports: Some((protocol, a, b)),
                };
                (key, decision(i))
            })
            .collect();
        let any_elements = any
            .into_iter()
            .map(|(first, last, i)| {
                let key = DecisionKey {
                    first: addr(first),
                    last: addr(last),
                    ports: None,
                };
                (key, decision(i))
            })
            .collect();
        (ports_elements, any_elements)
    }

    fn ensure_region(
        &mut self,
        policy: &'a ClusterNetworkPolicy,
        direction: Direction,
        index: usize,
        family: Family,
    ) {
        let key = (policy.name.as_str(), direction, index, family);
        if self.regions.contains_key(&key) {
            return;
        }
        let rule = &policy.rules(direction)[index];
        let region = self.region(direction, rule, family);
        self.regions.insert(key, region);
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
        let names: Vec<&str> = rule
            .protocols
            .iter()
            .filter_map(|p| match p {
                ClusterPort::Named(n) => Some(n.as_str()),
                ClusterPort::Range { .. } => None,
            })
            .collect();
        if direction == Direction::Egress && !names.is_empty() {
            for pod in pods {
                let Some(ip) = pod.ip(family) else { continue };
                let n = to_u128(&ip);
                let inside = ranges
                    .binary_search_by(|&(a, b)| {
                        if b < n {
                            std::cmp::Ordering::Less
                        } else if a > n {
                            std::cmp::Ordering::Greater
                        } else {
                            std::cmp::Ordering::Equal
                        }
                    })
                    .is_ok();
                if !inside {
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
