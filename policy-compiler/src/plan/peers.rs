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
//! What this cannot do is a *structural* change, left to the full render: an address of a class the
//! last render did not have (its chain was never rendered), or an address more than one pod holds.
//! A class chain whose last address leaves is taken out of the ruleset (as the full render would
//! leave it out) and put back, as it was, when an address joins the class again: the class chain
//! depends on the local pods and the tiers' policies only.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::tiers::{named_port, ranges_hold, ClassCache, ClassKey, RegionClass, SlotSubjects};
use crate::cidr::{from_u128, max_u128, to_u128, Family};
use crate::model::{ClusterPeer, Direction, Node, Pod, Protocol, Tier};
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

/// One peers map and the classes it was rendered with.
#[derive(Debug, Clone)]
pub(super) struct PeersMap {
    /// The decision map's name.
    pub(super) name: String,
    pub(super) tier: Tier,
    pub(super) direction: Direction,
    pub(super) family: Family,
    /// The regions the class keys number (positions in [`PeerBook`]'s list), in that order.
    pub(super) regions: Vec<usize>,
    /// Every class of the render, with its chain (`None`: it decides nothing for any local pod).
    pub(super) classes: HashMap<RegionClass, Option<String>>,
    /// The key of every class of the render, with its chain as in `classes`: what a change of the
    /// local pods renders the class chains again from.
    pub(super) keys: Vec<(ClassKey, Option<String>)>,
    /// The two decision maps of each class chain: `[ports, any]`.
    pub(super) class_maps: HashMap<String, [String; 2]>,
    /// What the classes decided for the local pods at the last render.
    pub(super) cache: ClassCache,
    /// How many elements of the map jump to each chain.
    pub(super) elements: HashMap<String, usize>,
    /// Class chains whose addresses all left, with their maps, for when one comes back.
    pub(super) stash: Stash,
}

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

    /// The peers maps and the local subjects, for the class chains to be rendered again over
    /// their classes when local pods or a ClusterNetworkPolicy's rules change.
    pub(super) fn parts_mut(&mut self) -> (&mut [PeersMap], &mut [SlotSubjects]) {
        (&mut self.maps, &mut self.subjects)
    }

    /// Sets the regions (after the renderer has seen every rule).
    pub(super) fn set_regions(&mut self, regions: Vec<LiveRegion>) {
        self.regions = regions;
    }

    /// A Node changed from `old` to `new`: the addresses whose Node holders changed, for
    /// [`PeerBook::refresh`].
    pub(super) fn node_changed(&mut self, old: Option<&Node>, new: Option<&Node>) -> Vec<IpAddr> {
        let selected = |peers: &[ClusterPeer], node: &Node| {
            peers.iter().any(|peer| match peer {
                ClusterPeer::Nodes(s) => s.matches(&node.labels),
                _ => false,
            })
        };
        for region in &mut self.regions {
            let family = region.family;
            if let Some(node) = old.filter(|n| selected(&region.peers, n)) {
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
            if let Some(node) = new.filter(|n| selected(&region.peers, n)) {
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
    /// participating pod that holds any of them now (no other pod may hold one). Changes are
    /// recorded in `touched`. On [`Structural`] the book and the maps are left half done: render
    /// the tiers in full.
    pub(super) fn refresh(
        &mut self,
        ruleset: &mut Ruleset,
        touched: &mut Option<Touched>,
        addresses: &[IpAddr],
        holder: Option<Holder<'_>>,
    ) -> Result<usize, Structural> {
        let mut changes = 0;
        for map in &mut self.maps {
            let mut chains: BTreeSet<String> = BTreeSet::new();
            let family = map.family;
            for ip in addresses.iter().filter(|ip| Family::of(ip) == family) {
                let n = to_u128(ip);
                let at = holder.filter(|(pod, _)| pod.ip(map.family) == Some(*ip));
                let class = class_at(&self.regions, &map.regions, n, at);
                let target = if class.regions.is_empty() {
                    None
                } else {
                    match map.classes.get(&class) {
                        Some(chain) => chain.clone(),
                        None => return Err(Structural),
                    }
                };
                changes += map.splice(ruleset, touched, n, target.as_deref(), &mut chains);
            }
            for chain in chains {
                map.settle(ruleset, touched, &chain)?;
            }
        }
        Ok(changes)
    }
}

/// Whether a pod with its namespace's labels is one of `peers`' pods.
fn selects_pod(peers: &[ClusterPeer], (pod, namespace): Holder<'_>) -> bool {
    let Some(namespace) = namespace else {
        return false;
    };
    peers.iter().any(|peer| match peer {
        ClusterPeer::Namespaces(s) => s.matches(namespace),
        ClusterPeer::Pods(p) => p.namespaces.matches(namespace) && p.pods.matches(&pod.labels),
        ClusterPeer::Networks(_) | ClusterPeer::Nodes(_) | ClusterPeer::Unknown => false,
    })
}

/// The class of address `n` over `used` regions (positions in `regions`), as the renderer's sweep
/// finds it: `at` is the pod that holds the address, if one does.
fn class_at(
    regions: &[LiveRegion],
    used: &[usize],
    n: u128,
    at: Option<Holder<'_>>,
) -> RegionClass {
    let mut held = Vec::new();
    let mut named = Vec::new();
    for (k, r) in used.iter().enumerate() {
        let Some(region) = regions.get(*r) else {
            continue;
        };
        let holds = ranges_hold(&region.fixed, n)
            || region.nodes.contains_key(&n)
            || at.is_some_and(|h| selects_pod(&region.peers, h));
        if !holds {
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

    /// The element holding address `n`: its range and chain.
    fn element_at(&self, map: &DecisionMap, n: u128) -> Option<(u128, u128, String)> {
        let probe = self.key(n, max_u128(self.family));
        let (key, decision) = map.elements.range(..=probe).next_back()?;
        let (first, last) = (to_u128(&key.first), to_u128(&key.last));
        (first <= n && n <= last).then(|| (first, last, jump(decision).unwrap_or("").to_string()))
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
                chains.insert(chain.to_string());
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
        *self.elements.entry(chain.to_string()).or_default() += 1;
        chains.insert(chain.to_string());
        if let Some(t) = touched {
            t.decision_added(&self.name, key, decision.clone());
        }
        map.elements.insert(key, decision);
    }

    /// Puts address `n` under `target` (`None`: no element), splitting the element that held it
    /// and merging with neighbours that jump to the same chain; returns the elements changed.
    fn splice(
        &mut self,
        ruleset: &mut Ruleset,
        touched: &mut Option<Touched>,
        n: u128,
        target: Option<&str>,
        chains: &mut BTreeSet<String>,
    ) -> usize {
        let Some(mut map) = ruleset.decision_maps.remove(&self.name) else {
            return 0;
        };
        let max = max_u128(self.family);
        let current = self.element_at(&map, n);
        if current.as_ref().map(|(_, _, c)| c.as_str()) == target {
            ruleset.decision_maps.insert(self.name.clone(), map);
            return 0;
        }
        let mut changes = 0;
        if let Some((first, last, chain)) = current {
            self.remove(&mut map, touched, (first, last), chains);
            changes += 1;
            if first < n {
                self.insert(&mut map, touched, (first, n - 1), &chain, chains);
                changes += 1;
            }
            if n < last {
                self.insert(&mut map, touched, (n + 1, last), &chain, chains);
                changes += 1;
            }
        }
        if let Some(chain) = target {
            let (mut first, mut last) = (n, n);
            if n > 0 {
                if let Some((a, b, c)) = self.element_at(&map, n - 1) {
                    if b == n - 1 && c == chain {
                        self.remove(&mut map, touched, (a, b), chains);
                        changes += 1;
                        first = a;
                    }
                }
            }
            if n < max {
                if let Some((a, b, c)) = self.element_at(&map, n + 1) {
                    if a == n + 1 && c == chain {
                        self.remove(&mut map, touched, (a, b), chains);
                        changes += 1;
                        last = b;
                    }
                }
            }
            self.insert(&mut map, touched, (first, last), chain, chains);
            changes += 1;
        }
        ruleset.decision_maps.insert(self.name.clone(), map);
        changes
    }

    /// After splices: a class chain no element jumps to any longer leaves the ruleset (stashed),
    /// one an element jumps to again comes back.
    fn settle(
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
            classes: HashMap::new(),
            keys: Vec::new(),
            class_maps: HashMap::new(),
            cache: ClassCache::default(),
            elements: element_counts(map),
            stash: HashMap::new(),
        }
    }

    fn splice(elements: &[(u32, u32, &str)], n: u32, target: Option<&str>) -> DecisionMap {
        let mut ruleset = Ruleset::default();
        let map = map_of(elements);
        let mut book = peers(&map);
        ruleset.decision_maps.insert("peers".into(), map);
        let mut touched = Some(Touched::default());
        book.splice(
            &mut ruleset,
            &mut touched,
            n.into(),
            target,
            &mut BTreeSet::new(),
        );
        let map = ruleset.decision_maps.remove("peers").expect("the map");
        assert_eq!(book.elements, element_counts(&map), "counts follow the map");
        map
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
