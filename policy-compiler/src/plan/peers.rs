//! The tiers' peers maps kept element by element: [`PeerBook`] holds what the last full render of
//! the tiers ([`super::tiers::TierRenderer`]) resolved their peers from, so that a pod, namespace or
//! Node event elsewhere in the cluster changes only the elements of the addresses it involves.
//!
//! A peers map (per tier, direction and family) sends each address to the chain of its *peer
//! class*: the regions (distinct peers of the tier's rules) that hold it, and the ports those with
//! egress named ports resolve there. The full render sweeps the address space and merges adjacent
//! ranges with the same chain, so the map is the maximal runs of addresses with one chain. An
//! address's class needs no index: a region holds it when one of its networks (or an unknown peer
//! that fails closed) covers it, a Node its `nodes` peers select has it, or the pod that holds it
//! matches its `namespaces` or `pods` peers. A changed address is so classified again and spliced
//! into the map as the sweep would have put it: the element holding it split around it, the address
//! joined to a neighbour with the same chain.
//!
//! A class is named by the rules whose regions hold the address ([`ClassKey`]), so an address of a
//! class the last render did not have gets its chain rendered then, decided for the local pods
//! the render left ([`super::tiers::add_class`]); a ClusterNetworkPolicy edit that changes a rule's
//! peers gives the rule another region and classifies again only the addresses the old and new
//! regions disagree on ([`super::regions`]). What this cannot do is a *structural* change, left to
//! the full render: an address more than one pod holds, or local pods the render's subjects no
//! longer describe. A class chain whose last address leaves is taken out of the ruleset (as the
//! full render would leave it out) and put back, as it was, when an address joins the class
//! again: the class chain depends on the local pods and the tiers' policies only.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::tiers::{
    add_class, merge_ranges, named_port, ranges_hold, rule_named_ports, ClassCache, ClassKey,
    RegionClass, SlotSubjects,
};
use super::universe::Shift;
use crate::cidr::{from_u128, max_u128, to_u128, Family};
use crate::cluster::ClusterState;
use crate::model::{Action, ClusterPeer, ClusterRule, Direction, Node, Pod, Protocol, Tier};
use crate::nft::transaction::Touched;
use crate::nft::{Chain, Decision, DecisionKey, DecisionMap, DecisionVerdict, Ruleset};
use crate::selector::Labels;

/// The event changes the tiers' structure (see the module documentation): render them in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Structural;

/// A participating pod and the labels of its namespace (`None`: the cluster holds no such
/// namespace, which no `namespaces` selector then matches).
pub(super) type Holder<'p> = (&'p Pod, Option<&'p Labels>);

/// The tiers' peers as of the last full render, kept up to date event by event.
#[derive(Debug, Clone, Default)]
pub(super) struct PeerBook {
    /// Distinct peer regions, as the renderer numbered them.
    regions: Vec<LiveRegion>,
    /// One per tier, direction and family rendered.
    maps: Vec<PeersMap>,
    /// The local subjects of each tier and direction rendered.
    subjects: Vec<SlotSubjects>,
}

/// What a rule's peers are made of, for one family.
#[derive(Debug, Clone)]
pub(super) struct LiveRegion {
    pub(super) family: Family,
    /// The rule's peers.
    pub(super) peers: Vec<ClusterPeer>,
    /// The destination named ports it resolves per peer pod, as written (egress rules only).
    pub(super) named_ports: Vec<String>,
    /// Its networks (and, for an unknown peer of a Deny or Pass rule, everything), merged.
    pub(super) fixed: Vec<(u128, u128)>,
    /// Addresses of the Nodes its `nodes` peers select, with how many Nodes have each.
    pub(super) nodes: HashMap<u128, u32>,
}

impl LiveRegion {
    /// What the peers of `rule` (of `direction`) are made of in `family`, over the cluster's
    /// Nodes.
    pub(super) fn of(
        cluster: &ClusterState,
        direction: Direction,
        rule: &ClusterRule,
        family: Family,
    ) -> Self {
        let mut fixed: Vec<(u128, u128)> = Vec::new();
        for peer in &rule.peers {
            match peer {
                ClusterPeer::Networks(cidrs) => fixed.extend(
                    cidrs
                        .iter()
                        .filter(|c| c.family() == family)
                        .map(|c| c.bounds()),
                ),
                // Fails closed: an Accept rule matches nothing with it, Deny and Pass everything.
                ClusterPeer::Unknown if rule.action != Action::Accept => {
                    fixed.push((0, max_u128(family)));
                }
                _ => {}
            }
        }
        let mut nodes: HashMap<u128, u32> = HashMap::new();
        for node in cluster.node_objects().values() {
            if !selects_node(&rule.peers, node) {
                continue;
            }
            for ip in node.addresses.iter().filter(|ip| Family::of(ip) == family) {
                *nodes.entry(to_u128(ip)).or_default() += 1;
            }
        }
        let named_ports = match direction {
            Direction::Egress => rule_named_ports(rule).map(str::to_string).collect(),
            Direction::Ingress => Vec::new(),
        };
        Self {
            family,
            peers: rule.peers.clone(),
            named_ports,
            fixed: merge_ranges(fixed),
            nodes,
        }
    }

    /// The region of no peer, which holds no address: what rules entering the universe have
    /// until they get their own, and rules leaving it get first.
    pub(super) fn empty(family: Family) -> Self {
        Self {
            family,
            peers: Vec::new(),
            named_ports: Vec::new(),
            fixed: Vec::new(),
            nodes: HashMap::new(),
        }
    }

    /// The position in `regions` of the region that holds what `region` holds, `region` added
    /// when none does.
    pub(super) fn place(regions: &mut Vec<LiveRegion>, region: LiveRegion) -> usize {
        match regions.iter().position(|x| x.same_peers(&region)) {
            Some(r) => r,
            None => {
                regions.push(region);
                regions.len() - 1
            }
        }
    }

    /// Whether two regions hold the same addresses alike (the Nodes follow from the peers).
    pub(super) fn same_peers(&self, other: &LiveRegion) -> bool {
        self.family == other.family
            && self.peers == other.peers
            && self.named_ports == other.named_ports
            && self.fixed == other.fixed
    }

    /// Whether it holds the address `n`, which `at` holds if a participating pod does.
    pub(super) fn holds(&self, n: u128, at: Option<Holder<'_>>) -> bool {
        ranges_hold(&self.fixed, n)
            || self.nodes.contains_key(&n)
            || at.is_some_and(|h| selects_pod(&self.peers, h))
    }
}

/// Whether `peers` select the Node `node`.
fn selects_node(peers: &[ClusterPeer], node: &Node) -> bool {
    peers.iter().any(|peer| match peer {
        ClusterPeer::Nodes(s) => s.matches(&node.labels),
        _ => false,
    })
}

/// One peers map and the classes it was rendered with.
#[derive(Debug, Clone)]
pub(super) struct PeersMap {
    /// The decision map's name.
    pub(super) name: String,
    pub(super) tier: Tier,
    pub(super) direction: Direction,
    pub(super) family: Family,
    /// The regions of the rules of the universe (positions in [`PeerBook`]'s list), each once.
    pub(super) regions: Vec<usize>,
    /// The rules (positions in the universe, ascending) whose region is each of `regions`.
    pub(super) rules_of: Vec<Vec<usize>>,
    /// The position in `regions` of each rule's region, by position in the universe.
    pub(super) region_of: Vec<usize>,
    /// The position in `keys` of every class known.
    pub(super) class_ids: HashMap<ClassKey, usize>,
    /// The position in `keys` of the class of each set of regions met (see
    /// [`PeersMap::held_at`]), so that an address finds its class without the rules being
    /// gathered; cleared when a rule gets another region.
    pub(super) by_regions: HashMap<RegionClass, usize>,
    /// Every class of the render and those added since, with its chain (`None`: it decides
    /// nothing for any local pod): what a change of the local pods renders the class chains again
    /// from.
    pub(super) keys: Vec<(ClassKey, Option<String>)>,
    /// The two decision maps of each class chain: `[ports, any]`.
    pub(super) class_maps: HashMap<String, [String; 2]>,
    /// What the classes decided for the local pods at the last render.
    pub(super) cache: ClassCache,
    /// How many elements of the map jump to each chain.
    pub(super) elements: HashMap<String, usize>,
    /// Class chains whose addresses all left, with their maps, for when one comes back.
    pub(super) stash: Stash,
    /// The class chains added since the last [`PeerBook::take_added`], with their maps.
    pub(super) added: Vec<(String, [String; 2])>,
}

/// An address range of a peers map and the class chain its addresses jump to (`None`: no
/// element).
pub(super) type Target = (u128, u128, Option<String>);

/// Class chains set aside, by name, with their two decision maps (ports, any).
pub(super) type Stash = HashMap<String, (Chain, DecisionMap, DecisionMap)>;

impl PeerBook {
    /// Adds the maps of another render over the same regions (the renderer renders tier by tier).
    pub(super) fn push_map(&mut self, map: PeersMap) {
        self.maps.push(map);
    }

    /// Adds the local subjects of a tier and direction rendered.
    pub(super) fn push_subjects(&mut self, subjects: SlotSubjects) {
        self.subjects.push(subjects);
    }

    /// The local subjects of each tier and direction rendered.
    pub(super) fn slots(&self) -> &[SlotSubjects] {
        &self.subjects
    }

    /// Sets the regions (after the renderer has seen every rule).
    pub(super) fn set_regions(&mut self, regions: Vec<LiveRegion>) {
        self.regions = regions;
    }

    /// The regions, the peers maps and the local subjects, for a ClusterNetworkPolicy edit to give
    /// its rules other regions ([`super::regions`]).
    pub(super) fn all_mut(
        &mut self,
    ) -> (&mut Vec<LiveRegion>, &mut [PeersMap], &mut [SlotSubjects]) {
        (&mut self.regions, &mut self.maps, &mut self.subjects)
    }

    /// The class chains (with their decision maps) added to the maps since the last call, in the
    /// ruleset or stashed: what a full render of the tiers is to replace besides its own.
    pub(super) fn take_added(&mut self) -> Vec<(String, [String; 2])> {
        self.maps
            .iter_mut()
            .flat_map(|m| std::mem::take(&mut m.added))
            .collect()
    }

    /// Drops the regions no peers map uses any longer (after rules were given other regions).
    pub(super) fn drop_unused_regions(&mut self) {
        let mut used = vec![false; self.regions.len()];
        for map in &self.maps {
            for r in &map.regions {
                if let Some(u) = used.get_mut(*r) {
                    *u = true;
                }
            }
        }
        if used.iter().all(|u| *u) {
            return;
        }
        let mut renumbered = vec![0; self.regions.len()];
        let mut next = 0;
        for (r, u) in used.iter().enumerate() {
            renumbered[r] = next;
            next += usize::from(*u);
        }
        let mut keep = used.iter();
        self.regions
            .retain(|_| keep.next().copied().unwrap_or(true));
        for map in &mut self.maps {
            for r in &mut map.regions {
                *r = renumbered[*r];
            }
        }
    }

    /// A Node changed from `old` to `new`: the addresses whose Node holders changed, for
    /// [`PeerBook::refresh`].
    pub(super) fn node_changed(&mut self, old: Option<&Node>, new: Option<&Node>) -> Vec<IpAddr> {
        for region in &mut self.regions {
            let family = region.family;
            if let Some(node) = old.filter(|n| selects_node(&region.peers, n)) {
                for ip in node.addresses.iter().filter(|ip| Family::of(ip) == family) {
                    let n = to_u128(ip);
                    if let Some(count) = region.nodes.get_mut(&n) {
                        *count -= 1;
                        if *count == 0 {
                            region.nodes.remove(&n);
                        }
                    }
                }
            }
            if let Some(node) = new.filter(|n| selects_node(&region.peers, n)) {
                for ip in node.addresses.iter().filter(|ip| Family::of(ip) == family) {
                    *region.nodes.entry(to_u128(ip)).or_default() += 1;
                }
            }
        }
        let mut addresses: Vec<IpAddr> = old
            .into_iter()
            .chain(new)
            .flat_map(|n| n.addresses.iter().copied())
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        addresses
    }

    /// Classifies `addresses` again and splices them into the peers maps: `holder` is the one
    /// participating pod that holds any of them now (no other pod may hold one). An address of a
    /// class not seen yet gets the class's chain, decided for the local subjects from the
    /// cluster's ClusterNetworkPolicies. Changes are recorded in `touched`. On [`Structural`]
    /// the book and the maps are left half done: render the tiers in full.
    pub(super) fn refresh(
        &mut self,
        ruleset: &mut Ruleset,
        touched: &mut Option<Touched>,
        (cluster, addresses): (&ClusterState, &[IpAddr]),
        holder: Option<Holder<'_>>,
    ) -> Result<usize, Structural> {
        let mut changes = 0;
        for map in &mut self.maps {
            let mut chains: BTreeSet<String> = BTreeSet::new();
            let family = map.family;
            let slot = self
                .subjects
                .iter()
                .find(|s| s.slot() == (map.tier, map.direction))
                .ok_or(Structural)?;
            for ip in addresses.iter().filter(|ip| Family::of(ip) == family) {
                let n = to_u128(ip);
                let at = holder.filter(|(pod, _)| pod.ip(map.family) == Some(*ip));
                let held = map.held_at(&self.regions, n, at);
                let target = map.chain_of(slot, cluster, held)?;
                changes += map.splice(ruleset, touched, (n, n), &[(n, n, target)], &mut chains);
            }
            for chain in chains {
                map.settle(ruleset, touched, &chain)?;
            }
        }
        Ok(changes)
    }
}

/// Whether a pod with its namespace's labels is one of `peers`' pods.
pub(super) fn selects_pod(peers: &[ClusterPeer], (pod, namespace): Holder<'_>) -> bool {
    let Some(namespace) = namespace else {
        return false;
    };
    peers.iter().any(|peer| match peer {
        ClusterPeer::Namespaces(s) => s.matches(namespace),
        ClusterPeer::Pods(p) => p.namespaces.matches(namespace) && p.pods.matches(&pod.labels),
        ClusterPeer::Networks(_) | ClusterPeer::Nodes(_) | ClusterPeer::Unknown => false,
    })
}

/// Notes `chain` among those whose elements changed.
fn note_chain(chains: &mut BTreeSet<String>, chain: &str) {
    if !chains.contains(chain) {
        chains.insert(chain.to_string());
    }
}

/// The chain an element jumps to.
fn jump(decision: &Decision) -> Option<&str> {
    match &decision.verdict {
        DecisionVerdict::Jump(chain) => Some(chain),
        _ => None,
    }
}

impl PeersMap {
    fn key(&self, first: u128, last: u128) -> DecisionKey {
        DecisionKey {
            first: from_u128(self.family, first),
            last: from_u128(self.family, last),
            ports: None,
        }
    }

    fn remove(
        &mut self,
        map: &mut DecisionMap,
        touched: &mut Option<Touched>,
        (first, last): (u128, u128),
        chains: &mut BTreeSet<String>,
    ) {
        let key = self.key(first, last);
        if let Some(decision) = map.elements.remove(&key) {
            if let Some(chain) = jump(&decision) {
                if let Some(count) = self.elements.get_mut(chain) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.elements.remove(chain);
                    }
                }
                note_chain(chains, chain);
            }
            if let Some(t) = touched {
                t.decision_removed(&self.name, key, decision);
            }
        }
    }

    fn insert(
        &mut self,
        map: &mut DecisionMap,
        touched: &mut Option<Touched>,
        (first, last): (u128, u128),
        chain: &str,
        chains: &mut BTreeSet<String>,
    ) {
        let key = self.key(first, last);
        let decision = Decision {
            verdict: DecisionVerdict::Jump(chain.to_string()),
            comment: None,
        };
        match self.elements.get_mut(chain) {
            Some(count) => *count += 1,
            None => {
                self.elements.insert(chain.to_string(), 1);
            }
        }
        note_chain(chains, chain);
        if let Some(t) = touched {
            t.decision_added(&self.name, key, decision.clone());
        }
        map.elements.insert(key, decision);
    }

    /// Puts the addresses `first..=last` under `targets` (sorted, disjoint, within that span; an
    /// address they leave out, or whose target is `None`, has no element), splitting the elements
    /// that cross the span's ends and merging with neighbours that jump to the same chain, so
    /// that the map stays the maximal runs of addresses with one chain; returns the elements
    /// changed. The chains of the elements that came or went go in `chains`.
    pub(super) fn splice(
        &mut self,
        ruleset: &mut Ruleset,
        touched: &mut Option<Touched>,
        (first, last): (u128, u128),
        targets: &[Target],
        chains: &mut BTreeSet<String>,
    ) -> usize {
        let Some(map) = ruleset.decision_maps.get_mut(&self.name) else {
            return 0;
        };
        let max = max_u128(self.family);
        // The elements that hold an address of the span or touch it.
        let (low, high) = (first.saturating_sub(1), last.saturating_add(1).min(max));
        let mut old: Vec<(u128, u128, String)> = Vec::new();
        for (key, decision) in map.elements.range(..=self.key(high, max)).rev() {
            let (a, b) = (to_u128(&key.first), to_u128(&key.last));
            if b < low {
                break;
            }
            old.push((a, b, jump(decision).unwrap_or("").to_string()));
        }
        old.reverse();
        let mut pieces: Vec<(u128, u128, &str)> = Vec::new();
        for (a, b, chain) in &old {
            if *a < first {
                pieces.push((*a, (*b).min(first - 1), chain));
            }
        }
        pieces.extend(
            targets
                .iter()
                .filter_map(|(a, b, t)| Some((*a, *b, t.as_deref()?))),
        );
        for (a, b, chain) in &old {
            if *b > last {
                pieces.push(((*a).max(last + 1), *b, chain));
            }
        }
        let mut new: Vec<(u128, u128, &str)> = Vec::with_capacity(pieces.len());
        for (a, b, chain) in pieces {
            match new.last_mut() {
                Some(prev) if prev.2 == chain && prev.1.checked_add(1) == Some(a) => prev.1 = b,
                _ => new.push((a, b, chain)),
            }
        }
        // Both lists are sorted by first address, and disjoint: one walk finds what went and
        // came (an element whose key stays but whose chain changes goes before it comes back).
        let mut changes = 0;
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            let was = old.get(i).map(|(a, b, c)| (*a, *b, c.as_str()));
            let is = new.get(j).copied();
            if was.is_some() && was == is {
                i += 1;
                j += 1;
                continue;
            }
            let (go, come) = match (was, is) {
                (Some(w), Some(n)) => (w.0 <= n.0, n.0 <= w.0),
                (Some(_), None) => (true, false),
                _ => (false, true),
            };
            if let Some((a, b, _)) = was.filter(|_| go) {
                self.remove(map, touched, (a, b), chains);
                changes += 1;
                i += 1;
            }
            if let Some((a, b, chain)) = is.filter(|_| come) {
                self.insert(map, touched, (a, b), chain, chains);
                changes += 1;
                j += 1;
            }
        }
        changes
    }

    /// The position in the map's regions of the book's region `r`, added without rules when the
    /// map has it not.
    pub(super) fn map_region(&mut self, r: usize) -> usize {
        match self.regions.iter().position(|x| *x == r) {
            Some(k) => k,
            None => {
                self.regions.push(r);
                self.rules_of.push(Vec::new());
                self.regions.len() - 1
            }
        }
    }

    /// Gives the rule `u` (a position in the universe) the region `r` (a position in the book's
    /// list); a region no rule of the map has any longer leaves the map's.
    pub(super) fn give_region(&mut self, u: usize, r: usize) -> Result<(), Structural> {
        let was = *self.region_of.get(u).ok_or(Structural)?;
        let now = self.map_region(r);
        if now == was {
            return Ok(());
        }
        self.by_regions.clear();
        let (Some(old), Some(new)) = (self.rules_of.get(was), self.rules_of.get(now)) else {
            return Err(Structural);
        };
        let old: Vec<usize> = old.iter().copied().filter(|x| *x != u).collect();
        let mut new = new.clone();
        if let Err(at) = new.binary_search(&u) {
            new.insert(at, u);
        }
        self.rules_of[now] = new;
        self.region_of[u] = now;
        if old.is_empty() {
            self.regions.remove(was);
            self.rules_of.remove(was);
            for k in &mut self.region_of {
                if *k > was {
                    *k -= 1;
                }
            }
        } else {
            self.rules_of[was] = old;
        }
        Ok(())
    }

    /// Renumbers the universe's rules by `shift`: rules entering take the region at `empty` (a
    /// position in the map's list, of a region that holds no address; its rules are only these,
    /// until they get their own), rules leaving (given such a region before, so that no address's
    /// class holds them) leave their region, a region left without rules leaves the map, and so
    /// do the classes that hold a rule leaving, which have no address (their chains are out of the
    /// ruleset). [`Structural`] when such a class still has elements.
    pub(super) fn shift(&mut self, shift: Shift, empty: usize) -> Result<(), Structural> {
        match shift {
            Shift::Enter { at, count } => {
                if at > self.region_of.len() || empty >= self.regions.len() {
                    return Err(Structural);
                }
                self.region_of
                    .splice(at..at, std::iter::repeat_n(empty, count));
                for rules in &mut self.rules_of {
                    for u in rules.iter_mut() {
                        *u = shift.apply(*u).ok_or(Structural)?;
                    }
                }
                self.rules_of[empty].extend(at..at + count);
                self.rules_of[empty].sort_unstable();
            }
            Shift::Leave { at, count } => {
                let end = at + count;
                if end > self.region_of.len() {
                    return Err(Structural);
                }
                self.region_of.drain(at..end);
                for rules in &mut self.rules_of {
                    *rules = rules.iter().filter_map(|u| shift.apply(*u)).collect();
                }
                // Regions left without rules leave the map.
                let mut k = 0;
                while k < self.regions.len() {
                    if self.rules_of[k].is_empty() {
                        self.regions.remove(k);
                        self.rules_of.remove(k);
                        for r in &mut self.region_of {
                            if *r > k {
                                *r -= 1;
                            }
                        }
                    } else {
                        k += 1;
                    }
                }
                self.by_regions.clear();
            }
        }
        let mut keep = Vec::with_capacity(self.keys.len());
        let mut keys = Vec::with_capacity(self.keys.len());
        for (key, chain) in std::mem::take(&mut self.keys) {
            match key.shifted(shift) {
                Some(key) => {
                    keep.push(true);
                    keys.push((key, chain));
                }
                None => {
                    keep.push(false);
                    if let Some(chain) = chain {
                        if self.elements.get(&chain).copied().unwrap_or(0) > 0 {
                            return Err(Structural);
                        }
                        self.class_maps.remove(&chain);
                        self.stash.remove(&chain);
                    }
                }
            }
        }
        self.class_ids = keys
            .iter()
            .enumerate()
            .map(|(id, (key, _))| (key.clone(), id))
            .collect();
        if keep.iter().any(|k| !k) {
            // Class positions moved.
            self.by_regions.clear();
        }
        self.keys = keys;
        self.cache.shift(&keep, shift)
    }

    /// The regions of the map (positions in its list; `regions`: the book's) that hold address
    /// `n`, and the ports their egress named ports resolve to there, as the renderer's sweep finds
    /// them: `at` is the pod that holds the address, if one does.
    pub(super) fn held_at(
        &self,
        regions: &[LiveRegion],
        n: u128,
        at: Option<Holder<'_>>,
    ) -> RegionClass {
        let mut held = Vec::new();
        let mut named = Vec::new();
        for (k, r) in self.regions.iter().enumerate() {
            let Some(region) = regions.get(*r) else {
                continue;
            };
            if !region.holds(n, at) {
                continue;
            }
            held.push(k);
            // Named ports resolve at the pod holding the address, whichever peer put it in.
            if let Some((pod, _)) = at {
                let resolved: Vec<(Protocol, u16)> = region
                    .named_ports
                    .iter()
                    .filter_map(|name| named_port(pod, name))
                    .collect();
                if !resolved.is_empty() {
                    named.push((k, resolved));
                }
            }
        }
        RegionClass {
            regions: held,
            named,
        }
    }

    /// The class of the addresses the regions `held` hold (see [`PeersMap::held_at`]).
    pub(super) fn class_of(&self, held: &RegionClass) -> ClassKey {
        ClassKey::of_regions(held, &self.rules_of)
    }

    /// The chain of the class of the addresses the regions `held` hold (`None`: no rule holds
    /// them, or the class decides nothing for any local pod), rendering it (out of the ruleset,
    /// for [`PeersMap::settle`] to bring in) when the class is new, decided for `slot`'s subjects
    /// by the cluster's ClusterNetworkPolicies.
    pub(super) fn chain_of(
        &mut self,
        slot: &SlotSubjects,
        cluster: &ClusterState,
        held: RegionClass,
    ) -> Result<Option<String>, Structural> {
        let id = match self.by_regions.get(&held) {
            Some(id) => *id,
            None => {
                let key = self.class_of(&held);
                if key.is_empty() {
                    return Ok(None);
                }
                let id = match self.class_ids.get(&key) {
                    Some(id) => *id,
                    None => add_class(self, slot, cluster, key)?,
                };
                self.by_regions.insert(held, id);
                id
            }
        };
        Ok(self.keys.get(id).and_then(|(_, chain)| chain.clone()))
    }

    /// The class `id`, whose chain decides nothing any longer for any local pod (its decision maps
    /// are empty), is left without a chain, as a full render leaves it: the peers-map elements
    /// jumping to the chain (all of the class's addresses) go, and so do the chain and its maps
    /// (from the ruleset, or the stash); returns how many peers-map elements went. A class without
    /// a chain that starts deciding again gets one back, and its addresses are found by
    /// classifying those of one of its regions again ([`super::regions::reveal`]).
    pub(super) fn stop_class(
        &mut self,
        ruleset: &mut Ruleset,
        touched: &mut Option<Touched>,
        id: usize,
    ) -> Result<usize, Structural> {
        let chain = self
            .keys
            .get_mut(id)
            .and_then(|(_, chain)| chain.take())
            .ok_or(Structural)?;
        let maps = self.class_maps.remove(&chain).ok_or(Structural)?;
        let mut count = 0;
        if let Some(peers) = ruleset.decision_maps.get_mut(&self.name) {
            let gone: Vec<DecisionKey> = peers
                .elements
                .iter()
                .filter(|(_, d)| jump(d) == Some(chain.as_str()))
                .map(|(k, _)| *k)
                .collect();
            for key in gone {
                if let Some(decision) = peers.elements.remove(&key) {
                    count += 1;
                    if let Some(t) = touched.as_mut() {
                        t.decision_removed(&self.name, key, decision);
                    }
                }
            }
        }
        self.elements.remove(&chain);
        if self.stash.remove(&chain).is_none() {
            ruleset.chains.remove(&chain);
            for name in &maps {
                ruleset.decision_maps.remove(name);
            }
            if let Some(t) = touched.as_mut() {
                t.chains.insert(chain);
                for name in maps {
                    t.decision_elements.remove(&name);
                    t.decision_maps.insert(name);
                }
            }
        }
        Ok(count)
    }

    /// After splices: a class chain no element jumps to any longer leaves the ruleset (stashed),
    /// one an element jumps to again comes back.
    pub(super) fn settle(
        &mut self,
        ruleset: &mut Ruleset,
        touched: &mut Option<Touched>,
        chain: &str,
    ) -> Result<(), Structural> {
        let used = self.elements.get(chain).copied().unwrap_or(0) > 0;
        let present = ruleset.chains.contains_key(chain);
        if used == present {
            return Ok(());
        }
        let Some(maps) = self.class_maps.get(chain).cloned() else {
            return Err(Structural);
        };
        if used {
            let Some((c, ports, any)) = self.stash.remove(chain) else {
                return Err(Structural);
            };
            ruleset.chains.insert(chain.to_string(), c);
            let [ports_name, any_name] = &maps;
            ruleset.decision_maps.insert(ports_name.clone(), ports);
            ruleset.decision_maps.insert(any_name.clone(), any);
        } else {
            let c = ruleset.chains.remove(chain);
            let [ports_name, any_name] = &maps;
            let ports = ruleset.decision_maps.remove(ports_name);
            let any = ruleset.decision_maps.remove(any_name);
            let (Some(c), Some(ports), Some(any)) = (c, ports, any) else {
                return Err(Structural);
            };
            self.stash.insert(chain.to_string(), (c, ports, any));
        }
        if let Some(t) = touched {
            t.chains.insert(chain.to_string());
            for name in maps {
                t.decision_elements.remove(&name);
                t.decision_maps.insert(name);
            }
        }
        Ok(())
    }
}

/// How many elements of a map jump to each chain.
pub(super) fn element_counts(map: &DecisionMap) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for decision in map.elements.values() {
        if let Some(chain) = jump(decision) {
            *counts.entry(chain.to_string()).or_default() += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_of(elements: &[(u32, u32, &str)]) -> DecisionMap {
        DecisionMap {
            family: Family::V4,
            ports: false,
            elements: elements
                .iter()
                .map(|&(a, b, c)| {
                    (
                        DecisionKey {
                            first: IpAddr::from(a.to_be_bytes()),
                            last: IpAddr::from(b.to_be_bytes()),
                            ports: None,
                        },
                        Decision {
                            verdict: DecisionVerdict::Jump(c.to_string()),
                            comment: None,
                        },
                    )
                })
                .collect(),
        }
    }

    fn peers(map: &DecisionMap) -> PeersMap {
        PeersMap {
            name: "peers".into(),
            tier: Tier::Admin,
            direction: Direction::Egress,
            family: Family::V4,
            regions: Vec::new(),
            rules_of: Vec::new(),
            region_of: Vec::new(),
            class_ids: HashMap::new(),
            by_regions: HashMap::new(),
            keys: Vec::new(),
            class_maps: HashMap::new(),
            cache: ClassCache::default(),
            elements: element_counts(map),
            stash: HashMap::new(),
            added: Vec::new(),
        }
    }

    fn splice(elements: &[(u32, u32, &str)], n: u32, target: Option<&str>) -> DecisionMap {
        let mut ruleset = Ruleset::default();
        let map = map_of(elements);
        let mut book = peers(&map);
        ruleset.decision_maps.insert("peers".into(), map);
        let mut touched = Some(Touched::default());
        let n = u128::from(n);
        let target = target.map(str::to_string);
        book.splice(
            &mut ruleset,
            &mut touched,
            (n, n),
            &[(n, n, target)],
            &mut BTreeSet::new(),
        );
        let map = ruleset.decision_maps.remove("peers").expect("the map");
        assert_eq!(book.elements, element_counts(&map), "counts follow the map");
        map
    }

    /// Splices `targets` over `first..=last` into a map of `elements`.
    fn splice_span(
        elements: &[(u32, u32, &str)],
        (first, last): (u32, u32),
        targets: &[(u32, u32, &str)],
    ) -> DecisionMap {
        let mut ruleset = Ruleset::default();
        let map = map_of(elements);
        let mut book = peers(&map);
        ruleset.decision_maps.insert("peers".into(), map);
        let targets: Vec<Target> = targets
            .iter()
            .map(|&(a, b, c)| (a.into(), b.into(), Some(c.to_string())))
            .collect();
        let mut touched = Some(Touched::default());
        let mut chains = BTreeSet::new();
        book.splice(
            &mut ruleset,
            &mut touched,
            (first.into(), last.into()),
            &targets,
            &mut chains,
        );
        let map = ruleset.decision_maps.remove("peers").expect("the map");
        assert_eq!(book.elements, element_counts(&map), "counts follow the map");
        map
    }

    #[test]
    fn a_span_replaces_what_it_covers_and_joins_equal_neighbours() {
        // Across two elements: their outer parts stay, the span's pieces join the neighbour of
        // their chain, a gap in the targets leaves no element.
        assert_eq!(
            splice_span(
                &[(10, 20, "a"), (21, 30, "b")],
                (15, 25),
                &[(15, 17, "a"), (20, 25, "c")]
            ),
            map_of(&[(10, 17, "a"), (20, 25, "c"), (26, 30, "b")])
        );
        // Targets equal to what is there: the map is unchanged, element for element.
        let same = &[(10, 20, "a"), (21, 30, "b")];
        assert_eq!(
            splice_span(same, (12, 25), &[(12, 20, "a"), (21, 25, "b")]),
            map_of(same)
        );
        // An empty span of targets clears it; neighbours of one chain on both sides join
        // through a target of theirs.
        assert_eq!(
            splice_span(&[(0, 100, "a")], (40, 60), &[]),
            map_of(&[(0, 39, "a"), (61, 100, "a")])
        );
        assert_eq!(
            splice_span(&[(0, 39, "a"), (61, 100, "a")], (40, 60), &[(40, 60, "a")]),
            map_of(&[(0, 100, "a")])
        );
        // The whole address space.
        assert_eq!(
            splice_span(&[(5, 9, "a")], (0, u32::MAX), &[(0, u32::MAX, "b")]),
            map_of(&[(0, u32::MAX, "b")])
        );
    }

    #[test]
    fn an_address_splits_its_element_and_joins_equal_neighbours() {
        // Into the middle of another chain's range: three elements.
        assert_eq!(
            splice(&[(10, 20, "a")], 15, Some("b")),
            map_of(&[(10, 14, "a"), (15, 15, "b"), (16, 20, "a")])
        );
        // Out of a range: two elements, and nothing at the address.
        assert_eq!(splice(&[(10, 20, "a")], 10, None), map_of(&[(11, 20, "a")]));
        // Between two ranges of its chain: one element.
        assert_eq!(
            splice(
                &[(10, 14, "a"), (15, 15, "b"), (16, 20, "a")],
                15,
                Some("a")
            ),
            map_of(&[(10, 20, "a")])
        );
        // Into a gap next to its chain on one side only.
        assert_eq!(
            splice(&[(10, 14, "a"), (16, 20, "b")], 15, Some("a")),
            map_of(&[(10, 15, "a"), (16, 20, "b")])
        );
        // At the ends of the address space.
        assert_eq!(splice(&[(1, 5, "a")], 0, Some("a")), map_of(&[(0, 5, "a")]));
        assert_eq!(
            splice(&[(0, u32::MAX, "a")], u32::MAX, Some("b")),
            map_of(&[(0, u32::MAX - 1, "a"), (u32::MAX, u32::MAX, "b")])
        );
    }
}
