//! Rule generation: the [`Ruleset`] that enforces a [`NodePlan`].
//!
//! Base chains dispatch through verdict maps to group chains; a group chain jumps to the chain of
//! each policy of its combination, then drops; a policy chain holds the policy's rules for one
//! direction, each accepting. Peers become named sets of pod addresses (shared by every rule with the
//! same selectors) or prefix matches (ipBlocks); named ports become sets of `address . protocol .
//! port` resolved per pod.

use std::collections::{BTreeMap, BTreeSet};

use super::isolation::{LocalPod, NodePlan};
use super::naming::{
    audit_group_chain_name, group_chain_name, named_port_set_name, peer_set_name,
    policy_chain_name, policy_rule_counter_name, vmap_name,
};
use super::origin::{CompileOptions, Origin, Origins};
use super::tiers::{self, Layout, TierRenderer, TierSubject};
use crate::cidr::Family;
use crate::cluster::ClusterState;
use crate::index::ClusterIndex;
use crate::model::{
    Direction, NamespaceScope, ObjectRef, Peer, Pod, PodPeer, Policy, PolicyPort, PortSpec,
    Protocol, Rule, Tier,
};
use crate::nft::{
    AddrField, BaseChain, Chain, Counter, Match, Rule as NftRule, Ruleset, Set, SetElement,
    SetType, Verdict, VerdictMap,
};
use crate::selector::Labels;

/// Port matches of a rule's numeric and protocol-only ports; empty list means "no port constraint".
fn port_matches(ports: &[PolicyPort]) -> Vec<Match> {
    let mut any: BTreeSet<Protocol> = BTreeSet::new();
    let mut ranges: BTreeMap<Protocol, Vec<(u16, u16)>> = BTreeMap::new();
    for p in ports {
        match &p.port {
            PortSpec::Any => {
                any.insert(p.protocol);
            }
            PortSpec::Range(a, b) => ranges.entry(p.protocol).or_default().push((*a, *b)),
            PortSpec::Named(_) => {}
        }
    }
    let mut out: Vec<Match> = any.iter().map(|p| Match::L4Proto(*p)).collect();
    for (protocol, mut list) in ranges {
        if any.contains(&protocol) {
            continue;
        }
        list.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::new();
        for (a, b) in list {
            match merged.last_mut() {
                Some(last) if a as u32 <= last.1 as u32 + 1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        out.push(Match::Dport {
            protocol,
            ports: merged,
        });
    }
    out
}

fn named_ports(ports: &[PolicyPort]) -> Vec<(&str, Protocol)> {
    ports
        .iter()
        .filter_map(|p| match &p.port {
            PortSpec::Named(n) => Some((n.as_str(), p.protocol)),
            _ => None,
        })
        .collect()
}

/// A set whose elements follow pods anywhere in the cluster, and what decides them: an
/// incremental compiler keeps such sets up to date pod by pod with [`SetSource::elements`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SetSource {
    /// The addresses of one family of the pods a peer selects.
    Peer(PodPeer, Family),
    /// The `address . protocol . port` an egress rule's named ports resolve to, at the pods its
    /// peers allow as destinations (every pod when it has none).
    EgressNamedPorts {
        /// The rule's peers.
        peers: Vec<Peer>,
        /// The rule's named ports.
        named: Vec<(String, Protocol)>,
        /// The family.
        family: Family,
    },
}

impl SetSource {
    /// Whether the set can hold pods of `namespace`, which carries `labels` (pods of other
    /// namespaces give it nothing).
    pub(crate) fn may_select_in(&self, namespace: &str, labels: &Labels) -> bool {
        let in_scope = |peer: &PodPeer| match &peer.namespaces {
            NamespaceScope::Own(ns) => ns == namespace,
            NamespaceScope::Selected(s) => s.matches(labels),
        };
        match self {
            SetSource::Peer(peer, _) => in_scope(peer),
            SetSource::EgressNamedPorts { peers, .. } => {
                peers.is_empty()
                    || peers.iter().any(|peer| match peer {
                        Peer::Pods(p) => in_scope(p),
                        Peer::IpBlock(_) => true,
                    })
            }
        }
    }

    /// Whether a namespace's labels going from `before` to `after` can change what its pods give
    /// the set: whether a namespace selector of its peers matches one and not the other.
    pub(crate) fn relabel_matters(&self, before: &Labels, after: &Labels) -> bool {
        let differs = |peer: &PodPeer| match &peer.namespaces {
            NamespaceScope::Own(_) => false,
            NamespaceScope::Selected(s) => s.matches(before) != s.matches(after),
        };
        match self {
            SetSource::Peer(peer, _) => differs(peer),
            SetSource::EgressNamedPorts { peers, .. } => peers.iter().any(|peer| match peer {
                Peer::Pods(p) => differs(p),
                Peer::IpBlock(_) => false,
            }),
        }
    }

    /// The elements a participating pod, whose namespace carries `namespace_labels`, gives the set.
    pub(crate) fn elements(&self, pod: &Pod, namespace_labels: &Labels) -> Vec<SetElement> {
        match self {
            SetSource::Peer(peer, family) => match pod.ip(*family) {
                Some(ip) if peer.selects(pod, namespace_labels) => vec![SetElement::Addr(ip)],
                _ => Vec::new(),
            },
            SetSource::EgressNamedPorts {
                peers,
                named,
                family,
            } => {
                let allowed = peers.is_empty()
                    || peers.iter().any(|peer| match peer {
                        Peer::Pods(p) => p.selects(pod, namespace_labels),
                        Peer::IpBlock(block) => {
                            pod.ip(*family).is_some_and(|ip| block.contains(&ip))
                        }
                    });
                if !allowed {
                    return Vec::new();
                }
                let named: Vec<(&str, Protocol)> =
                    named.iter().map(|(n, p)| (n.as_str(), *p)).collect();
                named_port_elements(pod, *family, &named).collect()
            }
        }
    }
}

/// The `address . protocol . port` elements of `pod`'s ports named in `named`, for one family.
fn named_port_elements<'p>(
    pod: &'p Pod,
    family: Family,
    named: &'p [(&'p str, Protocol)],
) -> impl Iterator<Item = SetElement> + 'p {
    pod.ip(family).into_iter().flat_map(move |ip| {
        named.iter().filter_map(move |(port_name, protocol)| {
            pod.named_port(port_name, *protocol)
                .map(|port| SetElement::AddrProtoPort(ip, *protocol, port))
        })
    })
}

/// Builds one node's ruleset.
pub(super) struct Renderer<'i, 'a> {
    cluster: &'a ClusterState,
    /// The index that resolves peers; `None`: the sets of [`SetSource`]s are left empty, for an
    /// incremental compiler to fill.
    index: Option<&'i ClusterIndex<'a>>,
    plan: NodePlan<'a>,
    options: CompileOptions,
    ruleset: Ruleset,
    /// Where each counter the rules reference comes from.
    origins: Origins,
    /// The sets whose elements follow pods cluster-wide, by name.
    sources: BTreeMap<String, SetSource>,
    /// The ingress named-port sets rendered, whose elements are the policy's local targets' ports.
    target_sets: Vec<TargetSet>,
    /// Whether [`Renderer::render`] renders the tiers' content (else only what the base chains
    /// look up: the caller renders the tiers on its own).
    tiers: bool,
}

/// An ingress named-port set: its elements are the ports of these names on the pods a policy
/// selects on the node, for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TargetSet {
    /// The set's name.
    pub(super) name: String,
    /// The family.
    pub(super) family: Family,
    /// The rule's named ports.
    pub(super) named: Vec<(String, Protocol)>,
}

impl TargetSet {
    /// The set's elements, from the policy's local targets.
    pub(super) fn elements<'p>(
        &self,
        targets: impl Iterator<Item = &'p Pod>,
    ) -> BTreeSet<SetElement> {
        let named: Vec<(&str, Protocol)> =
            self.named.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        targets
            .flat_map(|pod| named_port_elements(pod, self.family, &named).collect::<Vec<_>>())
            .collect()
    }
}

/// One policy's rules for one direction rendered alone, with what they use: what a full render
/// puts in the policy's chain (or, for an audit policy, inlines in its audit groups). Sets come
/// without elements, for an incremental compiler to fill.
#[derive(Debug, Clone)]
pub(super) struct PolicyPart {
    /// The rules.
    pub(super) rules: Vec<NftRule>,
    /// Whether the policy is compiled in audit mode (its rules inlined, each returning).
    pub(super) audit: bool,
    /// The sets the rules match on, empty.
    pub(super) sets: BTreeMap<String, Set>,
    /// Of those, the sets whose elements follow pods cluster-wide.
    pub(super) sources: BTreeMap<String, SetSource>,
    /// Of those, the ingress named-port sets.
    pub(super) target_sets: Vec<TargetSet>,
    /// The origins of the counters the rules reference.
    pub(super) origins: Origins,
}

/// How a group chain ends: the isolation drop, or for audit the "would deny" that lets the packet
/// go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GroupKind {
    /// Enforced policies isolate the pods: jump to each policy chain, then drop (under
    /// `audit_all`: count as "would deny" and accept).
    Enforced,
    /// Only audit policies would isolate the pods: their rules inline, each returning on a match
    /// (the next stage judges as if they did not exist), then count as "would deny" and return.
    Audit,
}

impl<'i, 'a> Renderer<'i, 'a> {
    /// A renderer that resolves every set through `index`.
    pub(super) fn new(
        index: &'i ClusterIndex<'a>,
        plan: NodePlan<'a>,
        options: CompileOptions,
    ) -> Self {
        Self::with(index.cluster(), Some(index), plan, options)
    }

    /// A renderer that leaves the sets of [`SetSource`]s empty (the tiers, when the cluster has
    /// ClusterNetworkPolicies, are still resolved in full).
    pub(super) fn deferred(
        cluster: &'a ClusterState,
        plan: NodePlan<'a>,
        options: CompileOptions,
    ) -> Self {
        Self::with(cluster, None, plan, options)
    }

    fn with(
        cluster: &'a ClusterState,
        index: Option<&'i ClusterIndex<'a>>,
        plan: NodePlan<'a>,
        options: CompileOptions,
    ) -> Self {
        Self {
            cluster,
            index,
            plan,
            options,
            ruleset: Ruleset::default(),
            origins: Origins::new(),
            sources: BTreeMap::new(),
            target_sets: Vec::new(),
            tiers: true,
        }
    }

    /// The same renderer, rendering of the tiers only what the base chains look up (their content
    /// is rendered on its own, as [`super::tiers::render_tiers`] does).
    pub(super) fn without_tiers(mut self) -> Self {
        self.tiers = false;
        self
    }

    /// One policy's rules for one direction, rendered alone for a node of these address families.
    pub(super) fn policy_part(
        cluster: &'a ClusterState,
        families: &BTreeSet<Family>,
        options: CompileOptions,
        policy: &Policy,
        direction: Direction,
    ) -> PolicyPart {
        let plan = NodePlan {
            node: String::new(),
            families: families.clone(),
            pods: Vec::new(),
        };
        let mut renderer = Self::with(cluster, None, plan, options);
        let audit = renderer.audits(policy);
        let rules = renderer.policy_rules(direction, policy, &[], audit);
        let referenced: BTreeSet<&str> = referenced_counters(&rules).collect();
        renderer
            .origins
            .retain(|name, _| referenced.contains(name.as_str()));
        PolicyPart {
            rules,
            audit,
            sets: renderer.ruleset.sets,
            sources: renderer.sources,
            target_sets: renderer.target_sets,
            origins: renderer.origins,
        }
    }

    /// A group chain rendered alone, with the origin of its counter; `audited` holds the rules of
    /// its policies when it is an audit group.
    pub(super) fn group_part(
        cluster: &'a ClusterState,
        options: CompileOptions,
        direction: Direction,
        group: &str,
        kind: GroupKind,
        policies: &[&Policy],
        audited: &BTreeMap<&ObjectRef, Vec<NftRule>>,
    ) -> (Chain, Origins) {
        let plan = NodePlan {
            node: String::new(),
            families: BTreeSet::new(),
            pods: Vec::new(),
        };
        let mut renderer = Self::with(cluster, None, plan, options);
        renderer.group_chain(direction, group, kind, policies, &[], audited);
        let chain = renderer.ruleset.chains.remove(group).unwrap_or(Chain {
            base: None,
            rules: Vec::new(),
        });
        (chain, renderer.origins)
    }

    /// The ruleset, the origin of each of its counters, and the sources of its sets whose
    /// elements follow pods cluster-wide.
    pub(super) fn render(mut self) -> (Ruleset, Origins, BTreeMap<String, SetSource>) {
        let layout = Layout::of(self.cluster);
        for (priority, direction) in [(0, Direction::Egress), (1, Direction::Ingress)] {
            self.base_chain(&layout, direction, priority);
        }
        tiers::node_egress_chain(&mut self.ruleset, &layout);
        let plan = std::mem::take(&mut self.plan.pods);
        let families: Vec<Family> = self.plan.families.iter().copied().collect();
        // With no local pod the tiers render nothing but what the base chains look up.
        if self.tiers && !layout.is_empty() && !plan.is_empty() {
            let built;
            let index = match self.index {
                Some(index) => index,
                None => {
                    built = ClusterIndex::new(self.cluster);
                    &built
                }
            };
            let subjects: Vec<TierSubject<'_>> = plan.iter().map(TierSubject::of).collect();
            TierRenderer::new(index, families, self.options).render(
                &mut self.ruleset,
                &mut self.origins,
                &layout,
                &subjects,
            );
        }
        for direction in Direction::BOTH {
            // Group chains and the local pods each one judges.
            let mut groups: BTreeMap<String, (GroupKind, Vec<&Policy>, Vec<&Pod>)> =
                BTreeMap::new();
            for local in &plan {
                let Some((kind, policies, name)) = group_of(local, direction) else {
                    continue;
                };
                let group = groups
                    .entry(name)
                    .or_insert_with(|| (kind, policies.to_vec(), Vec::new()));
                group.2.push(local.pod);
            }
            let mut targets: BTreeMap<&ObjectRef, (&Policy, Vec<&Pod>)> = BTreeMap::new();
            for (_, policies, pods) in groups.values() {
                for policy in policies {
                    targets
                        .entry(&policy.id)
                        .or_insert_with(|| (policy, Vec::new()))
                        .1
                        .extend(pods.iter().copied());
                }
            }
            // Each policy's rules: in its own chain when enforced, inline in its audit groups when
            // audited (only audit groups hold audit policies).
            let mut audited: BTreeMap<&ObjectRef, Vec<NftRule>> = BTreeMap::new();
            for (id, (policy, local_targets)) in &targets {
                let audit = self.audits(policy);
                let rules = self.policy_rules(direction, policy, local_targets, audit);
                if audit {
                    audited.insert(id, rules);
                } else {
                    self.ruleset.chains.insert(
                        policy_chain_name(&policy.id, direction),
                        Chain { base: None, rules },
                    );
                }
            }
            for (group_name, (kind, policies, pods)) in &groups {
                self.group_chain(direction, group_name, *kind, policies, pods, &audited);
            }
        }
        self.counters();
        (self.ruleset, self.origins, self.sources)
    }

    /// Whether a policy is compiled in audit mode (its own annotation; under `audit_all` every
    /// policy is compiled as enforced and the drops turn into "would deny" instead).
    fn audits(&self, policy: &Policy) -> bool {
        policy.is_audit() && !self.options.audit_all
    }

    /// The counter objects of every counter the rules reference, and only those origins.
    fn counters(&mut self) {
        let referenced: BTreeSet<&str> = self
            .ruleset
            .chains
            .values()
            .flat_map(|c| referenced_counters(&c.rules))
            .collect();
        self.origins
            .retain(|name, _| referenced.contains(name.as_str()));
        for (name, origin) in &self.origins {
            self.ruleset
                .counters
                .insert(name.clone(), counter_of(origin));
        }
    }

    /// A direction's base chain: established traffic, the Admin tier, the NetworkPolicy verdict
    /// maps, the Baseline tier (tiers only when the cluster has rules in them).
    fn base_chain(&mut self, layout: &Layout, direction: Direction, priority: i32) {
        let field = match direction {
            Direction::Egress => AddrField::Saddr,
            Direction::Ingress => AddrField::Daddr,
        };
        let mut rules = vec![NftRule {
            matches: vec![Match::CtEstablishedOrRelated],
            verdict: Verdict::Accept,
            comment: None,
        }];
        if layout.has(Tier::Admin, direction) {
            rules.extend(tiers::dispatch_rules(
                &mut self.ruleset,
                Tier::Admin,
                direction,
            ));
        }
        for family in [Family::V4, Family::V6] {
            let map = vmap_name(direction, family);
            self.ruleset.maps.insert(
                map.clone(),
                VerdictMap {
                    family,
                    elements: BTreeMap::new(),
                },
            );
            rules.push(NftRule {
                matches: vec![],
                verdict: Verdict::Vmap { family, field, map },
                comment: None,
            });
        }
        if layout.has(Tier::Baseline, direction) {
            rules.extend(tiers::dispatch_rules(
                &mut self.ruleset,
                Tier::Baseline,
                direction,
            ));
        }
        self.ruleset.chains.insert(
            direction.as_str().to_string(),
            Chain {
                base: Some(BaseChain::forward(priority)),
                rules,
            },
        );
    }

    /// A group chain, and the verdict map elements that send its pods to it.
    fn group_chain(
        &mut self,
        direction: Direction,
        group: &str,
        kind: GroupKind,
        policies: &[&Policy],
        pods: &[&Pod],
        audited: &BTreeMap<&ObjectRef, Vec<NftRule>>,
    ) {
        let mut rules: Vec<NftRule> = match kind {
            GroupKind::Enforced => policies
                .iter()
                .map(|p| NftRule {
                    matches: vec![],
                    verdict: Verdict::Jump(policy_chain_name(&p.id, direction)),
                    comment: None,
                })
                .collect(),
            GroupKind::Audit => policies
                .iter()
                .flat_map(|p| audited.get(&p.id).into_iter().flatten().cloned())
                .collect(),
        };
        let ids: Vec<String> = policies.iter().map(|p| p.id.to_string()).collect();
        let would_deny = kind == GroupKind::Audit || self.options.audit_all;
        let isolated = format!("isolated for {direction} by {}", ids.join(", "));
        rules.extend(drop_point_rules(
            &self.options,
            group,
            match (kind, self.options.audit_all) {
                (GroupKind::Audit, _) => Verdict::Continue,
                (GroupKind::Enforced, true) => Verdict::Accept,
                (GroupKind::Enforced, false) => Verdict::Drop,
            },
            if would_deny {
                format!("would deny (audit): {isolated}")
            } else {
                isolated
            },
        ));
        self.origins.insert(
            group.to_string(),
            Origin::Isolation {
                direction,
                policies: policies.iter().map(|p| p.id.clone()).collect(),
                audit: would_deny,
            },
        );
        self.ruleset
            .chains
            .insert(group.to_string(), Chain { base: None, rules });
        for pod in pods {
            for ip in &pod.ips {
                let map = vmap_name(direction, Family::of(ip));
                if let Some(m) = self.ruleset.maps.get_mut(&map) {
                    m.elements.insert(*ip, group.to_string());
                }
            }
        }
    }

    /// The address field a peer constrains: the source for ingress, the destination for egress.
    fn peer_field(direction: Direction) -> AddrField {
        match direction {
            Direction::Ingress => AddrField::Saddr,
            Direction::Egress => AddrField::Daddr,
        }
    }

    /// Ensures the set for a pod peer exists and returns its name.
    fn peer_set(&mut self, peer: &PodPeer, family: Family) -> String {
        let set_name = peer_set_name(peer, family);
        if !self.ruleset.sets.contains_key(&set_name) {
            let elements = match self.index {
                Some(index) => index
                    .peer_pods(peer)
                    .into_iter()
                    .filter_map(|i| index.pods()[i].ip(family))
                    .map(SetElement::Addr)
                    .collect(),
                None => BTreeSet::new(),
            };
            self.sources
                .insert(set_name.clone(), SetSource::Peer(peer.clone(), family));
            self.ruleset.sets.insert(
                set_name.clone(),
                Set {
                    set_type: SetType::Addr(family),
                    comment: peer.to_string(),
                    elements,
                },
            );
        }
        set_name
    }

    /// Peer alternatives for one family: each is a list of matches; `None` when the rule allows every
    /// peer. An ipBlock of the other family gives no alternative.
    fn peer_alternatives(
        &mut self,
        direction: Direction,
        rule: &Rule,
        family: Family,
    ) -> Option<Vec<Vec<Match>>> {
        if rule.peers.is_empty() {
            return None;
        }
        let field = Self::peer_field(direction);
        let mut out = Vec::new();
        for peer in &rule.peers {
            match peer {
                Peer::Pods(p) => {
                    let set = self.peer_set(p, family);
                    out.push(vec![Match::InSet { family, field, set }]);
                }
                Peer::IpBlock(block) if block.cidr.family() == family => {
                    let mut matches = vec![Match::Prefix {
                        field,
                        negated: false,
                        cidr: block.cidr,
                    }];
                    matches.extend(block.except.iter().map(|e| Match::Prefix {
                        field,
                        negated: true,
                        cidr: *e,
                    }));
                    out.push(matches);
                }
                Peer::IpBlock(_) => {}
            }
        }
        Some(out)
    }

    /// A policy's rules for one direction, each counted on its rule's counter and accepting (or,
    /// for an audit policy, returning: the rules are inlined in its audit groups).
    fn policy_rules(
        &mut self,
        direction: Direction,
        policy: &Policy,
        local_targets: &[&Pod],
        audit: bool,
    ) -> Vec<NftRule> {
        let mut rules = Vec::new();
        let families: Vec<Family> = self.plan.families.iter().copied().collect();
        for (i, rule) in policy.rules(direction).iter().enumerate() {
            let comment = Some(format!("{} {direction}[{i}]", policy.id));
            let counter = policy_rule_counter_name(&policy.id, direction, i);
            self.origins.insert(
                counter.clone(),
                Origin::PolicyRule {
                    policy: policy.id.clone(),
                    direction,
                    index: i,
                    audit,
                },
            );
            let first = rules.len();
            let ports = port_matches(&rule.ports);
            let named = named_ports(&rule.ports);
            // With no ports at all, the rule allows every port; with only named ports, the numeric
            // part allows nothing.
            let numeric: Vec<Vec<Match>> = if rule.ports.is_empty() {
                vec![vec![]]
            } else {
                ports.into_iter().map(|m| vec![m]).collect()
            };
            let all_families = rule.peers.is_empty();
            if all_families {
                // No peer constraint: one rule per port alternative, for every family at once.
                for port in &numeric {
                    rules.push(NftRule {
                        matches: port.clone(),
                        verdict: Verdict::Accept,
                        comment: comment.clone(),
                    });
                }
            }
            // Peer sets only where a rule uses them: an egress rule of named ports alone matches
            // destinations through its named-port set, which holds only allowed peers.
            let needs_peers =
                !numeric.is_empty() || (direction == Direction::Ingress && !named.is_empty());
            for &family in &families {
                let peers = if needs_peers {
                    self.peer_alternatives(direction, rule, family)
                } else {
                    None
                };
                if let Some(peers) = &peers {
                    for peer in peers {
                        for port in &numeric {
                            let mut matches = peer.clone();
                            matches.extend(port.iter().cloned());
                            rules.push(NftRule {
                                matches,
                                verdict: Verdict::Accept,
                                comment: comment.clone(),
                            });
                        }
                    }
                }
                if named.is_empty() {
                    continue;
                }
                let set =
                    self.named_port_set(direction, policy, i, rule, family, &named, local_targets);
                let named_match = Match::DaddrProtoPortInSet { family, set };
                match (direction, peers) {
                    // Ingress: the set holds the local targets' ports; peers still constrain the source.
                    (Direction::Ingress, Some(peers)) => {
                        for peer in peers {
                            let mut matches = peer;
                            matches.push(named_match.clone());
                            rules.push(NftRule {
                                matches,
                                verdict: Verdict::Accept,
                                comment: comment.clone(),
                            });
                        }
                    }
                    // Egress, or no peers: the set already holds only allowed destinations.
                    _ => rules.push(NftRule {
                        matches: vec![named_match],
                        verdict: Verdict::Accept,
                        comment: comment.clone(),
                    }),
                }
            }
            for r in &mut rules[first..] {
                r.matches.push(Match::Counter(counter.clone()));
                if audit {
                    r.verdict = Verdict::Return;
                }
            }
        }
        rules
    }

    /// The set of `address . protocol . port` a rule's named ports resolve to, for one family.
    ///
    /// For ingress the destinations are the policy's local targets; for egress they are the pods the
    /// rule's peers select anywhere in the cluster (all pods when it has no peers).
    #[allow(clippy::too_many_arguments)]
    fn named_port_set(
        &mut self,
        direction: Direction,
        policy: &Policy,
        rule_index: usize,
        rule: &Rule,
        family: Family,
        named: &[(&str, Protocol)],
        local_targets: &[&Pod],
    ) -> String {
        let set_name = named_port_set_name(&policy.id, direction, rule_index, family);
        let destinations: Vec<&Pod> = match (direction, self.index) {
            (Direction::Ingress, _) => local_targets.to_vec(),
            (Direction::Egress, Some(index)) => Self::egress_destinations(index, rule, family),
            (Direction::Egress, None) => Vec::new(),
        };
        if direction == Direction::Ingress {
            self.target_sets.push(TargetSet {
                name: set_name.clone(),
                family,
                named: named.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            });
        }
        if direction == Direction::Egress {
            self.sources.insert(
                set_name.clone(),
                SetSource::EgressNamedPorts {
                    peers: rule.peers.clone(),
                    named: named.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
                    family,
                },
            );
        }
        let elements: BTreeSet<SetElement> = destinations
            .into_iter()
            .flat_map(|pod| named_port_elements(pod, family, named))
            .collect();
        let ports: Vec<String> = named.iter().map(|(n, p)| format!("{n}/{p}")).collect();
        self.ruleset.sets.insert(
            set_name.clone(),
            Set {
                set_type: SetType::AddrProtoPort(family),
                comment: format!(
                    "{} {direction}[{rule_index}] named ports {}",
                    policy.id,
                    ports.join(", ")
                ),
                elements,
            },
        );
        set_name
    }

    /// Pods an egress rule's peers allow as destinations, with an address of `family`.
    fn egress_destinations(index: &ClusterIndex<'a>, rule: &Rule, family: Family) -> Vec<&'a Pod> {
        let pods = index.pods();
        if rule.peers.is_empty() {
            return pods.to_vec();
        }
        let mut chosen: BTreeSet<usize> = BTreeSet::new();
        for peer in &rule.peers {
            match peer {
                Peer::Pods(p) => chosen.extend(index.peer_pods(p)),
                Peer::IpBlock(block) => chosen.extend(
                    pods.iter()
                        .enumerate()
                        .filter(|(_, pod)| pod.ip(family).is_some_and(|ip| block.contains(&ip)))
                        .map(|(i, _)| i),
                ),
            }
        }
        chosen.into_iter().map(|i| pods[i]).collect()
    }
}

/// The rules of a drop point named `counter` (its counter, and the prefix of its log messages):
/// with the deny log, `limit rate R/second burst B packets log prefix "counter" group G` (a rule of
/// its own: over the rate it does not match, and the verdict below still applies); then `counter
/// name "counter"` with the verdict.
pub(super) fn drop_point_rules(
    options: &CompileOptions,
    counter: &str,
    verdict: Verdict,
    comment: String,
) -> Vec<NftRule> {
    let mut rules = Vec::new();
    if let Some(log) = options.deny_log {
        rules.push(NftRule {
            matches: vec![
                Match::Limit {
                    rate: log.rate,
                    burst: log.burst,
                },
                Match::Log {
                    group: log.group,
                    prefix: counter.to_string(),
                },
            ],
            verdict: Verdict::Continue,
            comment: None,
        });
    }
    rules.push(NftRule {
        matches: vec![Match::Counter(counter.to_string())],
        verdict,
        comment: Some(comment),
    });
    rules
}

/// The group a local pod is judged by in `direction`: its kind, its policies and its chain's name;
/// `None` when no policy (enforced or audited) isolates it there.
pub(super) fn group_of<'p, 'a>(
    local: &'p LocalPod<'a>,
    direction: Direction,
) -> Option<(GroupKind, &'p [&'a Policy], String)> {
    let (kind, policies) = match local.policies(direction) {
        [] => (GroupKind::Audit, local.audit_policies(direction)),
        enforced => (GroupKind::Enforced, enforced),
    };
    if policies.is_empty() {
        return None;
    }
    let name = match kind {
        GroupKind::Enforced => group_chain_name(direction, policies),
        GroupKind::Audit => audit_group_chain_name(direction, policies),
    };
    Some((kind, policies, name))
}

/// The counters `rules` reference.
pub(super) fn referenced_counters(rules: &[NftRule]) -> impl Iterator<Item = &str> {
    rules
        .iter()
        .flat_map(|r| &r.matches)
        .filter_map(|m| match m {
            Match::Counter(name) => Some(name.as_str()),
            _ => None,
        })
}

/// The counter object of a counter with this origin.
pub(super) fn counter_of(origin: &Origin) -> Counter {
    Counter {
        comment: Some(counter_comment(origin)),
    }
}

/// A counter object's comment: what it counts, e.g. `x/allow-web ingress[0]`.
fn counter_comment(origin: &Origin) -> String {
    match origin {
        Origin::PolicyRule {
            policy,
            direction,
            index,
            audit,
        } => {
            let mode = if *audit { " (audit)" } else { "" };
            format!("{policy} {direction}[{index}]{mode}")
        }
        Origin::Isolation {
            direction,
            policies,
            audit,
        } => {
            let ids: Vec<String> = policies.iter().map(ToString::to_string).collect();
            let what = if *audit { "would deny (audit)" } else { "drop" };
            format!("{what}: isolated for {direction} by {}", ids.join(", "))
        }
        Origin::ClusterRule {
            tier,
            policy,
            direction,
            index,
            rule_name,
            action,
            audit,
        } => {
            let name = rule_name
                .as_deref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default();
            let mode = if *audit { " would deny (audit)" } else { "" };
            format!("[{tier}] {policy} {direction}[{index}]{name} {action}{mode}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::{LabelSelector, Requirement};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        let mut labels = Labels::new();
        for (k, v) in pairs {
            labels.insert(*k, *v);
        }
        labels
    }

    #[test]
    fn a_relabel_matters_to_a_set_only_when_one_of_its_namespace_selectors_changes_its_answer() {
        let team_a = LabelSelector::new(vec![Requirement::In("team".into(), vec!["a".into()])]);
        let selected = PodPeer {
            namespaces: NamespaceScope::Selected(team_a),
            pods: LabelSelector::everything(),
        };
        let own = PodPeer {
            namespaces: NamespaceScope::Own("x".into()),
            pods: LabelSelector::everything(),
        };
        let (a, b) = (labels(&[("team", "a")]), labels(&[("team", "b")]));
        let a_dev = labels(&[("team", "a"), ("env", "dev")]);
        let peer = SetSource::Peer(selected.clone(), Family::V4);
        assert!(peer.relabel_matters(&a, &b));
        assert!(peer.relabel_matters(&b, &a));
        assert!(!peer.relabel_matters(&a, &a_dev), "team=a either way");
        assert!(!SetSource::Peer(own.clone(), Family::V4).relabel_matters(&a, &b));
        let named = |peers: Vec<Peer>| SetSource::EgressNamedPorts {
            peers,
            named: vec![("http".into(), Protocol::Tcp)],
            family: Family::V4,
        };
        assert!(named(vec![Peer::Pods(own.clone()), Peer::Pods(selected)]).relabel_matters(&a, &b));
        assert!(!named(vec![Peer::Pods(own)]).relabel_matters(&a, &b));
        assert!(
            !named(Vec::new()).relabel_matters(&a, &b),
            "no peers: every pod, whatever its namespace"
        );
    }
}
