//! The node's own part of its ruleset, kept pod by pod and policy by policy: [`LocalPart`], for
//! [`super::LiveNode`] (the tiers, when the cluster has ClusterNetworkPolicies, are kept beside it).
//!
//! The local part is made of pieces that each follow few objects:
//! - a *member* per participating pod of the node: its addresses and, per direction, the group
//!   that judges it;
//! - a *group* per combination of policies isolating some local pod in a direction: its chain
//!   (a jump to each policy's chain, or the audit policies' rules inline, then the drop point), its
//!   counter, and the verdict map elements that send its pods to it;
//! - a *part* per policy and direction that some group holds: its rules (in its own chain, or
//!   inlined by audit groups), their counters, and the sets they match on (peer sets, shared
//!   between parts that have the same peer, and named-port sets).
//!
//! A pod event refreshes that pod's member: it leaves its old groups and joins its new ones; a
//! policy event renders the policy's parts again and refreshes the members of its namespace. What
//! no group holds any longer goes, and so do sets no part uses. Every piece is rendered by the
//! same code as a full compile ([`Renderer::policy_part`], [`Renderer::group_part`]), so the result
//! equals a full compile (the property tests check it event by event), and the work per event is
//! that of the pieces it touches.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::isolation::local_pod;
use super::naming::{policy_chain_name, vmap_name};
use super::origin::{CompileOptions, Origins};
use super::rules::{counter_of, group_of, GroupKind, PolicyPart, Renderer, SetSource, TargetSet};
use crate::cidr::Family;
use crate::cluster::ClusterState;
use crate::model::{Direction, ObjectRef, Pod, Policy};
use crate::nft::transaction::Touched;
use crate::nft::{Chain, Rule as NftRule, Ruleset, Set};

/// The objects of a ruleset the local part writes to, and the record of what it changed.
pub(super) struct Out<'a> {
    /// The node's ruleset.
    pub(super) ruleset: &'a mut Ruleset,
    /// The origins of its counters.
    pub(super) origins: &'a mut Origins,
    /// The sets whose elements follow pods cluster-wide.
    pub(super) sources: &'a mut BTreeMap<String, SetSource>,
    /// What changed; `None`: not recorded (anything may have).
    pub(super) touched: &'a mut Option<Touched>,
    /// Cluster-wide sets out of the ruleset (of a previous ruleset, or that no part uses any
    /// longer), their elements kept up to date: a set of the same name and definition takes them
    /// over instead of being resolved again, and a set that goes is kept here.
    pub(super) stash: BTreeMap<String, (Set, SetSource)>,
    /// The sets that took their elements from the stash.
    pub(super) carried: BTreeSet<String>,
    /// Cluster-wide sets resolved by a scan of the cluster's pods.
    pub(super) resolved_sets: usize,
    /// Policy parts and groups rendered.
    pub(super) rendered: usize,
    /// Whether `origins` changed.
    pub(super) origins_changed: bool,
}

impl<'a> Out<'a> {
    /// Writes to these objects, recording what changes in `touched`.
    pub(super) fn new(
        ruleset: &'a mut Ruleset,
        origins: &'a mut Origins,
        sources: &'a mut BTreeMap<String, SetSource>,
        touched: &'a mut Option<Touched>,
    ) -> Self {
        Self {
            ruleset,
            origins,
            sources,
            touched,
            stash: BTreeMap::new(),
            carried: BTreeSet::new(),
            resolved_sets: 0,
            rendered: 0,
            origins_changed: false,
        }
    }

    fn touch(&mut self, record: impl FnOnce(&mut Touched)) {
        if let Some(t) = self.touched.as_mut() {
            record(t);
        }
    }

    fn put_chain(&mut self, name: String, chain: Chain) {
        self.touch(|t| {
            t.chains.insert(name.clone());
        });
        self.ruleset.chains.insert(name, chain);
    }

    fn remove_chain(&mut self, name: &str) {
        if self.ruleset.chains.remove(name).is_some() {
            self.touch(|t| {
                t.chains.insert(name.to_string());
            });
        }
    }

    fn put_counters(&mut self, origins: Origins) {
        for (name, origin) in origins {
            if self.origins.get(&name) == Some(&origin) {
                continue;
            }
            self.ruleset
                .counters
                .insert(name.clone(), counter_of(&origin));
            self.touch(|t| {
                t.counters.insert(name.clone());
            });
            self.origins.insert(name, origin);
            self.origins_changed = true;
        }
    }

    fn remove_counter(&mut self, name: &str) {
        if self.origins.remove(name).is_some() {
            self.origins_changed = true;
        }
        if self.ruleset.counters.remove(name).is_some() {
            self.touch(|t| {
                t.counters.insert(name.to_string());
            });
        }
    }

    fn touch_set(&mut self, name: &str) {
        self.touch(|t| {
            t.set_elements.remove(name);
            t.sets.insert(name.to_string());
        });
    }

    /// Makes the set `name` what `set` defines, keeping its elements if it already is; a new
    /// cluster-wide set takes the elements of the stash or is resolved.
    fn put_set(
        &mut self,
        cluster: &ClusterState,
        name: &str,
        mut set: Set,
        source: Option<SetSource>,
    ) {
        let same = |s: &Set| s.set_type == set.set_type && s.comment == set.comment;
        if let Some(existing) = self.ruleset.sets.get(name) {
            if same(existing) && self.sources.get(name) == source.as_ref() {
                return;
            }
        }
        set.elements = match (self.stash.remove(name), &source) {
            (Some((old, old_source)), Some(source)) if same(&old) && old_source == *source => {
                self.carried.insert(name.to_string());
                old.elements
            }
            (_, Some(source)) => {
                self.resolved_sets += 1;
                super::live::resolve(cluster, source)
            }
            // A named-port set of ingress follows the local targets, which fill it.
            (_, None) => BTreeSet::new(),
        };
        match source {
            Some(source) => self.sources.insert(name.to_string(), source),
            None => self.sources.remove(name),
        };
        self.ruleset.sets.insert(name.to_string(), set);
        self.touch_set(name);
    }

    fn remove_set(&mut self, name: &str) {
        let source = self.sources.remove(name);
        if let Some(set) = self.ruleset.sets.remove(name) {
            self.touch_set(name);
            if let Some(source) = source {
                self.stash.insert(name.to_string(), (set, source));
            }
        }
    }

    /// Points `ip` at `group` in a direction's verdict map, or removes it (`None`).
    fn map_element(&mut self, direction: Direction, ip: IpAddr, group: Option<&String>) {
        let map = vmap_name(direction, Family::of(&ip));
        let Some(m) = self.ruleset.maps.get_mut(&map) else {
            return;
        };
        let changed = match group {
            Some(g) if m.elements.get(&ip) == Some(g) => false,
            Some(g) => {
                m.elements.insert(ip, g.clone());
                true
            }
            None => m.elements.remove(&ip).is_some(),
        };
        if changed {
            self.touch(|t| {
                t.maps.insert(map);
            });
        }
    }
}

/// A participating pod of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    /// Its addresses.
    ips: Vec<IpAddr>,
    /// The group judging it, per direction it is isolated in.
    groups: Vec<(Direction, String)>,
}

/// A combination of policies isolating local pods in one direction.
#[derive(Debug, Clone)]
struct Group {
    direction: Direction,
    kind: GroupKind,
    policies: Vec<ObjectRef>,
    pods: BTreeSet<ObjectRef>,
}

/// A policy's rules in one direction, as some group holds them.
#[derive(Debug, Clone)]
struct Part {
    /// The rules, kept for an audit part (its groups inline them); an enforced part's are in
    /// its chain.
    audited: Option<Vec<NftRule>>,
    /// The sets its rules match on.
    sets: Vec<String>,
    /// Its ingress named-port sets.
    target_sets: Vec<TargetSet>,
    /// Its counters.
    counters: Vec<String>,
    /// The groups holding it.
    groups: BTreeSet<String>,
}

/// The node's own part of its ruleset (see the module documentation).
#[derive(Debug, Clone)]
pub(super) struct LocalPart {
    node: String,
    options: CompileOptions,
    families: BTreeSet<Family>,
    members: BTreeMap<ObjectRef, Member>,
    groups: BTreeMap<String, Group>,
    parts: BTreeMap<(ObjectRef, Direction), Part>,
    /// How many parts use each set.
    set_users: BTreeMap<String, usize>,
    /// Per direction and address, how many local pods of each group hold it: the verdict map
    /// sends the address to the last of those groups by name, as a full render does.
    holders: BTreeMap<(Direction, IpAddr), BTreeMap<String, usize>>,
}

/// What one refresh changed, to finish at its end.
#[derive(Default)]
struct Pending {
    /// Parts whose targets may have changed.
    retarget: BTreeSet<(ObjectRef, Direction)>,
    /// Audit parts rendered again: the groups inlining them are rendered again.
    audited: BTreeSet<(ObjectRef, Direction)>,
    /// Groups a pod left: those left empty go (no other group can become empty).
    left: BTreeSet<String>,
}

impl LocalPart {
    /// Builds the local part of `node` into `out.ruleset` (which holds the rest of the node's
    /// ruleset: base chains and verdict maps, empty), for these address families.
    pub(super) fn build(
        cluster: &ClusterState,
        node: &str,
        options: CompileOptions,
        families: BTreeSet<Family>,
        out: &mut Out<'_>,
    ) -> Self {
        let mut part = Self {
            node: node.to_string(),
            options,
            families,
            members: BTreeMap::new(),
            groups: BTreeMap::new(),
            parts: BTreeMap::new(),
            set_users: BTreeMap::new(),
            holders: BTreeMap::new(),
        };
        let pods: BTreeSet<ObjectRef> = cluster
            .participating_pods()
            .filter(|p| p.node.as_deref() == Some(node))
            .map(|p| p.id.clone())
            .collect();
        part.apply(cluster, &pods, &BTreeSet::new(), out);
        part
    }

    /// The address families it was rendered for.
    pub(super) fn families(&self) -> &BTreeSet<Family> {
        &self.families
    }

    /// Takes in what changed: `pods` (of this node before or now) and `policies` (of namespaces
    /// with pods of this node before).
    pub(super) fn apply(
        &mut self,
        cluster: &ClusterState,
        pods: &BTreeSet<ObjectRef>,
        policies: &BTreeSet<ObjectRef>,
        out: &mut Out<'_>,
    ) {
        let mut pending = Pending::default();
        for key in policies {
            for direction in Direction::BOTH {
                let part = (key.clone(), direction);
                if !self.parts.contains_key(&part) {
                    continue;
                }
                if let Some(policy) = cluster.policies().get(key) {
                    self.render_part(cluster, policy, direction, out, &mut pending);
                }
            }
        }
        let mut refresh: BTreeSet<&ObjectRef> = pods.iter().collect();
        let namespaces: BTreeSet<&str> = policies.iter().map(|p| &*p.namespace).collect();
        for namespace in namespaces {
            let first = ObjectRef::new(namespace, "");
            refresh.extend(
                self.members
                    .range(first..)
                    .take_while(|(id, _)| &*id.namespace == namespace)
                    .map(|(id, _)| id),
            );
        }
        let refresh: Vec<ObjectRef> = refresh.into_iter().cloned().collect();
        for key in &refresh {
            self.refresh(cluster, key, out, &mut pending);
        }
        self.finish(cluster, out, pending);
    }

    /// Brings the member `key` up to date: it leaves its groups and joins those of now.
    fn refresh(
        &mut self,
        cluster: &ClusterState,
        key: &ObjectRef,
        out: &mut Out<'_>,
        pending: &mut Pending,
    ) {
        if let Some(old) = self.members.remove(key) {
            for (direction, group) in &old.groups {
                self.leave(key, &old.ips, *direction, group, out, pending);
            }
        }
        let Some(pod) = cluster
            .pod(key)
            .filter(|p| p.participates() && p.node.as_deref() == Some(self.node.as_str()))
        else {
            return;
        };
        let local = local_pod(cluster, pod, &[], self.options.audit_all);
        let mut groups = Vec::new();
        for direction in Direction::BOTH {
            if let Some((kind, policies, name)) = group_of(&local, direction) {
                self.join(cluster, pod, direction, kind, policies, &name, out, pending);
                groups.push((direction, name));
            }
        }
        self.members.insert(
            key.clone(),
            Member {
                ips: pod.ips.clone(),
                groups,
            },
        );
    }

    /// A pod joins a group (made if new, with the parts of its policies).
    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        cluster: &ClusterState,
        pod: &Pod,
        direction: Direction,
        kind: GroupKind,
        policies: &[&Policy],
        name: &String,
        out: &mut Out<'_>,
        pending: &mut Pending,
    ) {
        if !self.groups.contains_key(name) {
            for policy in policies {
                if !self.parts.contains_key(&(policy.id.clone(), direction)) {
                    self.render_part(cluster, policy, direction, out, pending);
                }
            }
            self.render_group(cluster, direction, kind, policies, name, out);
            for policy in policies {
                if let Some(part) = self.parts.get_mut(&(policy.id.clone(), direction)) {
                    part.groups.insert(name.clone());
                }
            }
            self.groups.insert(
                name.clone(),
                Group {
                    direction,
                    kind,
                    policies: policies.iter().map(|p| p.id.clone()).collect(),
                    pods: BTreeSet::new(),
                },
            );
        }
        if let Some(group) = self.groups.get_mut(name) {
            group.pods.insert(pod.id.clone());
            for policy in &group.policies {
                pending.retarget.insert((policy.clone(), direction));
            }
        }
        for ip in &pod.ips {
            let holders = self.holders.entry((direction, *ip)).or_default();
            *holders.entry(name.clone()).or_default() += 1;
            let winner = holders.keys().next_back();
            out.map_element(direction, *ip, winner);
        }
    }

    /// A pod leaves a group (which goes at the end of the refresh if no pod is left in it).
    fn leave(
        &mut self,
        key: &ObjectRef,
        ips: &[IpAddr],
        direction: Direction,
        name: &str,
        out: &mut Out<'_>,
        pending: &mut Pending,
    ) {
        if let Some(group) = self.groups.get_mut(name) {
            group.pods.remove(key);
            for policy in &group.policies {
                pending.retarget.insert((policy.clone(), direction));
            }
            pending.left.insert(name.to_string());
        }
        for ip in ips {
            let slot = (direction, *ip);
            let Some(holders) = self.holders.get_mut(&slot) else {
                continue;
            };
            if let Some(n) = holders.get_mut(name) {
                *n -= 1;
                if *n == 0 {
                    holders.remove(name);
                }
            }
            let winner = holders.keys().next_back().cloned();
            if holders.is_empty() {
                self.holders.remove(&slot);
            }
            out.map_element(direction, *ip, winner.as_ref());
        }
    }

    /// Renders a group's chain and counter.
    fn render_group(
        &self,
        cluster: &ClusterState,
        direction: Direction,
        kind: GroupKind,
        policies: &[&Policy],
        name: &str,
        out: &mut Out<'_>,
    ) {
        let audited: BTreeMap<&ObjectRef, Vec<NftRule>> = match kind {
            GroupKind::Enforced => BTreeMap::new(),
            GroupKind::Audit => policies
                .iter()
                .filter_map(|p| {
                    let part = self.parts.get(&(p.id.clone(), direction))?;
                    Some((&p.id, part.audited.clone()?))
                })
                .collect(),
        };
        let (chain, origins) = Renderer::group_part(
            cluster,
            self.options,
            direction,
            name,
            kind,
            policies,
            &audited,
        );
        out.rendered += 1;
        out.put_chain(name.to_string(), chain);
        out.put_counters(origins);
    }

    /// Renders a policy's part in one direction (again, if it exists: its groups stay), and
    /// releases what the previous rendering used that this one does not.
    fn render_part(
        &mut self,
        cluster: &ClusterState,
        policy: &Policy,
        direction: Direction,
        out: &mut Out<'_>,
        pending: &mut Pending,
    ) {
        let key = (policy.id.clone(), direction);
        let PolicyPart {
            rules,
            audit,
            sets,
            mut sources,
            target_sets,
            origins,
        } = Renderer::policy_part(cluster, &self.families, self.options, policy, direction);
        out.rendered += 1;
        let chain = policy_chain_name(&policy.id, direction);
        let counters: Vec<String> = origins.keys().cloned().collect();
        let set_names: Vec<String> = sets.keys().cloned().collect();
        for (name, set) in sets {
            *self.set_users.entry(name.clone()).or_default() += 1;
            let source = sources.remove(&name);
            out.put_set(cluster, &name, set, source);
        }
        out.put_counters(origins);
        let audited = if audit {
            out.remove_chain(&chain);
            Some(rules)
        } else {
            out.put_chain(chain, Chain { base: None, rules });
            None
        };
        let was_audit = self.parts.get(&key).is_some_and(|p| p.audited.is_some());
        if audit || was_audit {
            pending.audited.insert(key.clone());
        }
        pending.retarget.insert(key.clone());
        let part = Part {
            audited,
            sets: set_names,
            target_sets,
            counters,
            groups: BTreeSet::new(),
        };
        if let Some(old) = self.parts.insert(key.clone(), part) {
            if let Some(new) = self.parts.get_mut(&key) {
                new.groups = old.groups;
                for name in &old.counters {
                    if !new.counters.contains(name) {
                        out.remove_counter(name);
                    }
                }
            }
            self.release_sets(&old.sets, out);
        }
    }

    /// A part no longer uses these sets: a set no part uses goes.
    fn release_sets(&mut self, sets: &[String], out: &mut Out<'_>) {
        for name in sets {
            let Some(users) = self.set_users.get_mut(name) else {
                continue;
            };
            *users -= 1;
            if *users == 0 {
                self.set_users.remove(name);
                out.remove_set(name);
            }
        }
    }

    /// Ends a refresh: audit groups inlining parts rendered again are rendered again, groups no
    /// pod is in go, then parts no group holds, and the ingress named-port sets of parts whose
    /// targets changed follow them.
    fn finish(&mut self, cluster: &ClusterState, out: &mut Out<'_>, pending: Pending) {
        // Parts whose last group went: a part gets its first group as it is made, so no other
        // part can be unheld.
        let mut unheld: BTreeSet<(ObjectRef, Direction)> = BTreeSet::new();
        for name in &pending.left {
            if !self.groups.get(name).is_some_and(|g| g.pods.is_empty()) {
                continue;
            }
            let Some(group) = self.groups.remove(name) else {
                continue;
            };
            out.remove_chain(name);
            out.remove_counter(name);
            for policy in group.policies {
                let key = (policy, group.direction);
                if let Some(part) = self.parts.get_mut(&key) {
                    part.groups.remove(name);
                    if part.groups.is_empty() {
                        unheld.insert(key);
                    }
                }
            }
        }
        for key in &unheld {
            let Some(part) = self.parts.remove(key) else {
                continue;
            };
            if part.audited.is_none() {
                out.remove_chain(&policy_chain_name(&key.0, key.1));
            }
            for name in &part.counters {
                out.remove_counter(name);
            }
            self.release_sets(&part.sets, out);
        }
        // Audit groups whose inlined rules were rendered again.
        let regroup: BTreeSet<String> = pending
            .audited
            .iter()
            .filter_map(|key| self.parts.get(key))
            .flat_map(|p| p.groups.iter().cloned())
            .collect();
        for name in regroup {
            let Some(group) = self.groups.get(&name) else {
                continue;
            };
            let policies: Vec<&Policy> = group
                .policies
                .iter()
                .filter_map(|id| cluster.policies().get(id))
                .collect();
            if policies.len() != group.policies.len() {
                continue;
            }
            let (direction, kind) = (group.direction, group.kind);
            self.render_group(cluster, direction, kind, &policies, &name, out);
        }
        for key in &pending.retarget {
            let Some(part) = self.parts.get(key) else {
                continue;
            };
            if part.target_sets.is_empty() {
                continue;
            }
            let targets: BTreeSet<&ObjectRef> = part
                .groups
                .iter()
                .filter_map(|g| self.groups.get(g))
                .flat_map(|g| &g.pods)
                .collect();
            for target_set in &part.target_sets {
                let elements = target_set.elements(targets.iter().filter_map(|id| cluster.pod(id)));
                let Some(set) = out.ruleset.sets.get_mut(&target_set.name) else {
                    continue;
                };
                if set.elements != elements {
                    set.elements = elements;
                    out.touch_set(&target_set.name);
                }
            }
        }
    }
}
