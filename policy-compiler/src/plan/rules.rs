//! Rule generation: the [`Ruleset`] that enforces a [`NodePlan`].
//!
//! Base chains dispatch through verdict maps to group chains; a group chain jumps to the chain of
//! each policy of its combination, then drops; a policy chain holds the policy's rules for one
//! direction, each accepting. Peers become named sets of pod addresses (shared by every rule with the
//! same selectors) or prefix matches (ipBlocks); named ports become sets of `address . protocol .
//! port` resolved per pod.

use std::collections::{BTreeMap, BTreeSet};

use super::isolation::NodePlan;
use super::naming::{
    group_chain_name, named_port_set_name, peer_set_name, policy_chain_name, vmap_name,
};
use super::tiers::{self, Layout, TierRenderer};
use crate::cidr::Family;
use crate::index::ClusterIndex;
use crate::model::{
    Direction, ObjectRef, Peer, Pod, PodPeer, Policy, PolicyPort, PortSpec, Protocol, Rule, Tier,
};
use crate::nft::{
    AddrField, BaseChain, Chain, Match, Rule as NftRule, Ruleset, Set, SetElement, SetType,
    Verdict, VerdictMap,
};

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

/// Builds one node's ruleset.
pub(super) struct Renderer<'i, 'a> {
    index: &'i ClusterIndex<'a>,
    plan: NodePlan<'a>,
    ruleset: Ruleset,
}

impl<'i, 'a> Renderer<'i, 'a> {
    pub(super) fn new(index: &'i ClusterIndex<'a>, plan: NodePlan<'a>) -> Self {
        Self {
            index,
            plan,
            ruleset: Ruleset::default(),
        }
    }

    pub(super) fn render(mut self) -> Ruleset {
        let layout = Layout::of(self.index.cluster());
        for (priority, direction) in [(0, Direction::Egress), (1, Direction::Ingress)] {
            self.base_chain(&layout, direction, priority);
        }
        tiers::node_egress_chain(&mut self.ruleset, &layout);
        let plan = std::mem::take(&mut self.plan.pods);
        let families: Vec<Family> = self.plan.families.iter().copied().collect();
        TierRenderer::new(self.index, families).render(&mut self.ruleset, &layout, &plan);
        for direction in Direction::BOTH {
            // Group chains and the local pods each one judges.
            let mut groups: BTreeMap<String, (Vec<&Policy>, Vec<&Pod>)> = BTreeMap::new();
            for local in &plan {
                let policies = local.policies(direction);
                if policies.is_empty() {
                    continue;
                }
                let group = groups
                    .entry(group_chain_name(direction, policies))
                    .or_insert_with(|| (policies.to_vec(), Vec::new()));
                group.1.push(local.pod);
            }
            let mut targets: BTreeMap<&ObjectRef, (&Policy, Vec<&Pod>)> = BTreeMap::new();
            for (group_name, (policies, pods)) in &groups {
                self.group_chain(direction, group_name, policies, pods);
                for policy in policies {
                    targets
                        .entry(&policy.id)
                        .or_insert_with(|| (policy, Vec::new()))
                        .1
                        .extend(pods.iter().copied());
                }
            }
            for (policy, local_targets) in targets.values() {
                self.policy_chain(direction, policy, local_targets);
            }
        }
        self.ruleset
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

    fn group_chain(
        &mut self,
        direction: Direction,
        group: &str,
        policies: &[&Policy],
        pods: &[&Pod],
    ) {
        let mut rules: Vec<NftRule> = policies
            .iter()
            .map(|p| NftRule {
                matches: vec![],
                verdict: Verdict::Jump(policy_chain_name(&p.id, direction)),
                comment: None,
            })
            .collect();
        let ids: Vec<String> = policies.iter().map(|p| p.id.to_string()).collect();
        rules.push(NftRule {
            matches: vec![],
            verdict: Verdict::Drop,
            comment: Some(format!("isolated for {direction} by {}", ids.join(", "))),
        });
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
            let elements = self
                .index
                .peer_pods(peer)
                .into_iter()
                .filter_map(|i| self.index.pods()[i].ip(family))
                .map(SetElement::Addr)
                .collect();
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

    fn policy_chain(&mut self, direction: Direction, policy: &Policy, local_targets: &[&Pod]) {
        let chain_name = policy_chain_name(&policy.id, direction);
        let mut rules = Vec::new();
        let families: Vec<Family> = self.plan.families.iter().copied().collect();
        for (i, rule) in policy.rules(direction).iter().enumerate() {
            let comment = Some(format!("{} {direction}[{i}]", policy.id));
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
        }
        self.ruleset
            .chains
            .insert(chain_name, Chain { base: None, rules });
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
        let destinations: Vec<&Pod> = match direction {
            Direction::Ingress => local_targets.to_vec(),
            Direction::Egress => self.egress_destinations(rule, family),
        };
        let mut elements = BTreeSet::new();
        for pod in destinations {
            let Some(ip) = pod.ip(family) else { continue };
            for (port_name, protocol) in named {
                if let Some(port) = pod.named_port(port_name, *protocol) {
                    elements.insert(SetElement::AddrProtoPort(ip, *protocol, port));
                }
            }
        }
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
    fn egress_destinations(&self, rule: &Rule, family: Family) -> Vec<&'a Pod> {
        let pods = self.index.pods();
        if rule.peers.is_empty() {
            return pods.to_vec();
        }
        let mut chosen: BTreeSet<usize> = BTreeSet::new();
        for peer in &rule.peers {
            match peer {
                Peer::Pods(p) => chosen.extend(self.index.peer_pods(p)),
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
