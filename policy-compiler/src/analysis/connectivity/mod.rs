//! Who can reach whom: for every ordered pair of workloads and every external address range, the
//! exact set of allowed connections (`policyc connections`, and what `diff`, `verify` and `graph`
//! build on).
//!
//! Pods that no selector, peer, ipBlock or named port tells apart behave alike, so the work is
//! done per class of such pods, found by partition refinement: start from one class and split it by
//! every set a policy distinguishes (the pods a policy selects, the pods a rule's pod peers match,
//! the pods in an address range an ipBlock boundary delimits, the pods declaring a named port with
//! a given number). Connections between two classes are then the intersection of the source's
//! egress and the destination's ingress, each the union of the rules whose peers match the other
//! end, as the API defines them. The address space outside the pod CIDRs is cut at every ipBlock
//! boundary into external ranges, judged the same way.

mod conns;
mod exposure;
mod lookup;
pub mod report;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use fixedbitset::FixedBitSet;

pub use conns::{ConnSet, PortRanges};
pub use exposure::{exposure, Exposed, Exposure, ExposureReport};
pub use lookup::Lookup;

use crate::cidr::{from_u128, max_u128, to_u128, Family};
use crate::cluster::ClusterState;
use crate::index::ClusterIndex;
use crate::model::{Direction, ObjectRef, Peer, PolicyPort, PortSpec, WorkloadRef};
use crate::workload::PodCidrs;

/// One end of a reported connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Party {
    /// A workload (or a pod of no workload, `ns/name[Pod]`).
    Workload(WorkloadRef),
    /// A range of addresses outside the pod CIDRs, `first-last`.
    External {
        /// First address.
        first: IpAddr,
        /// Last address.
        last: IpAddr,
    },
}

impl Party {
    /// The address family of an external range.
    pub fn family(&self) -> Option<Family> {
        match self {
            Party::Workload(_) => None,
            Party::External { first, .. } => Some(Family::of(first)),
        }
    }

    /// Whether `name` names this party: `ns/name[Kind]`, `ns/name` (any kind), or the range
    /// `first-last`.
    pub fn is_named(&self, name: &str) -> bool {
        match self {
            Party::Workload(w) => {
                let text = w.to_string();
                text == name || format!("{}/{}", w.namespace, w.name) == name
            }
            Party::External { .. } => self.to_string() == name,
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Party::Workload(w) => write!(f, "{w}"),
            Party::External { first, last } => write!(f, "{first}-{last}"),
        }
    }
}

/// One allowed connection set between two parties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection<'a> {
    /// Source.
    pub from: &'a Party,
    /// Destination.
    pub to: &'a Party,
    /// The family, when the two families of dual-stack workloads allow different things (`None`:
    /// the same for every family they share, or an external range's own).
    pub family: Option<Family>,
    /// What is allowed (never empty).
    pub allowed: &'a ConnSet,
}

/// A rule of a policy, as the engine uses it.
#[derive(Debug)]
struct RuleInfo {
    policy: usize,
    direction: Direction,
    /// Its index in the policy's rules of that direction.
    index: usize,
    /// No peers: every source (ingress) or destination (egress).
    any_peer: bool,
    /// The classes its pod peers match.
    classes: FixedBitSet,
    /// Per family, the address atoms its ipBlock peers hold.
    atoms: [FixedBitSet; 2],
    ports: Vec<PolicyPort>,
}

/// A class of pods that behave alike.
#[derive(Debug)]
struct Class {
    /// A member (position in the index's pod list).
    rep: usize,
    /// Per family, the atom of the members' address (`None`: no address of that family).
    atom: [Option<usize>; 2],
    /// The members' container ports (named ports resolve against them).
    ports: Vec<crate::model::ContainerPort>,
    /// Policies isolating the members, per direction ([ingress, egress]).
    isolated_by: [Vec<usize>; 2],
    /// The rules of those policies, per direction.
    rules: [Vec<usize>; 2],
}

/// The address space of one family cut at every boundary that matters.
#[derive(Debug, Default)]
struct Atoms {
    /// Starts of the atoms, ascending; atom `i` is `starts[i]..starts[i + 1]` (the last runs to
    /// the family's end).
    starts: Vec<u128>,
}

impl Atoms {
    fn new(family: Family, boundaries: BTreeSet<u128>) -> Self {
        let mut starts: Vec<u128> = boundaries.into_iter().collect();
        if starts.first() != Some(&0) {
            starts.insert(0, 0);
        }
        starts.retain(|s| *s <= max_u128(family));
        Self { starts }
    }

    fn of(&self, n: u128) -> usize {
        self.starts.partition_point(|s| *s <= n).saturating_sub(1)
    }

    fn last(&self, family: Family, i: usize) -> u128 {
        self.starts
            .get(i + 1)
            .map(|next| next - 1)
            .unwrap_or(max_u128(family))
    }

    fn len(&self) -> usize {
        self.starts.len()
    }
}

fn family_slot(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

fn dir_slot(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// Per class and direction, the classes its rules can match (`None`: every class, as when the
/// class is not isolated in that direction or a rule has no peers).
struct Reach {
    egress: Vec<Option<FixedBitSet>>,
    ingress: Vec<Option<FixedBitSet>>,
}

/// What decides a pair: see [`Connectivity::causes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Causes {
    /// Policies isolating the source for egress (none: its egress is open).
    pub egress_isolated_by: Vec<ObjectRef>,
    /// Policies isolating the destination for ingress (none: its ingress is open).
    pub ingress_isolated_by: Vec<ObjectRef>,
    /// Rules of those policies that let something through.
    pub allowed_by: Vec<crate::analysis::RuleRef>,
}

impl Causes {
    /// Every policy named: isolating either end, or allowing.
    pub fn policies(&self) -> BTreeSet<&ObjectRef> {
        self.egress_isolated_by
            .iter()
            .chain(&self.ingress_isolated_by)
            .chain(self.allowed_by.iter().map(|r| &r.policy))
            .collect()
    }
}

/// An end of a connection being judged: a class, or an external atom of a family.
#[derive(Debug, Clone, Copy)]
enum End {
    Class(usize),
    External(usize),
}

/// The connectivity of a cluster.
#[derive(Debug)]
pub struct Connectivity {
    /// Workload parties, then external ones, sorted by name (the output order).
    parties: Vec<Party>,
    /// Per party: its class, or its external atom and family.
    ends: Vec<(End, Option<Family>)>,
    /// The distinct connection sets.
    sets: Vec<ConnSet>,
    /// (from, to, family slot or 2 for all, set), sorted by from then to.
    connections: Vec<(u32, u32, u8, u32)>,
    classes: Vec<Class>,
    policies: Vec<ObjectRef>,
    rules: Vec<RuleInfo>,
    /// Pods per workload party (the index's pods), for lookups.
    members: Vec<Vec<ObjectRef>>,
}

impl Connectivity {
    /// Computes every connection of a (materialized) cluster; `cidrs` delimit the pods' address
    /// space, outside of which the external ranges lie.
    pub fn compute(cluster: &ClusterState, cidrs: &PodCidrs) -> Self {
        Self::compute_with(cluster, cidrs, false)
    }

    /// The same connections computed pod by pod, without classes: every pod is a party of its own
    /// (`ns/name[Pod]`). The baseline the class computation is measured and tested against.
    pub fn compute_per_pod(cluster: &ClusterState, cidrs: &PodCidrs) -> Self {
        Self::compute_with(cluster, cidrs, true)
    }

    fn compute_with(cluster: &ClusterState, cidrs: &PodCidrs, per_pod: bool) -> Self {
        let index = ClusterIndex::new(cluster);
        let pods = index.pods();
        let policies: Vec<&crate::model::Policy> = cluster.policies().values().collect();

        // The atoms of each family: every ipBlock cidr and except boundary, and the pod CIDRs.
        let mut boundaries: [BTreeSet<u128>; 2] = Default::default();
        let mut add = |cidr: &crate::cidr::Cidr| {
            let (first, last) = cidr.bounds();
            let set = &mut boundaries[family_slot(cidr.family())];
            set.insert(first);
            if last < max_u128(cidr.family()) {
                set.insert(last + 1);
            }
        };
        for cidr in cidrs.cidrs() {
            add(cidr);
        }
        for policy in &policies {
            for d in Direction::BOTH {
                for rule in policy.rules(d) {
                    for peer in &rule.peers {
                        if let Peer::IpBlock(block) = peer {
                            add(&block.cidr);
                            for except in &block.except {
                                add(except);
                            }
                        }
                    }
                }
            }
        }
        let [b4, b6] = boundaries;
        let atoms = [Atoms::new(Family::V4, b4), Atoms::new(Family::V6, b6)];

        // Partition refinement of the pods (per pod: every pod a class of its own).
        let mut class_of: Vec<u32> = if per_pod {
            (0..pods.len() as u32).collect()
        } else {
            vec![0; pods.len()]
        };
        let mut next: u32 = 1;
        let mut split: HashMap<u32, u32> = HashMap::new();
        let mut refine = |members: &mut dyn Iterator<Item = usize>, class_of: &mut Vec<u32>| {
            if per_pod {
                return;
            }
            split.clear();
            for p in members {
                let c = class_of[p];
                let nc = *split.entry(c).or_insert_with(|| {
                    next += 1;
                    next
                });
                class_of[p] = nc;
            }
        };
        let pod_atom = |p: usize, f: Family| -> Option<usize> {
            pods[p]
                .ip(f)
                .map(|ip| atoms[family_slot(f)].of(to_u128(&ip)))
        };
        for f in FAMILIES {
            let mut by_atom: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for p in 0..pods.len() {
                if let Some(a) = pod_atom(p, f) {
                    by_atom.entry(a).or_default().push(p);
                }
            }
            for members in by_atom.values() {
                refine(&mut members.iter().copied(), &mut class_of);
            }
        }
        let targets: Vec<Vec<usize>> = policies.iter().map(|p| index.policy_targets(p)).collect();
        for t in &targets {
            refine(&mut t.iter().copied(), &mut class_of);
        }
        let rule_pods = |rule: &crate::model::Rule| -> Vec<usize> {
            let mut matched: Vec<usize> = rule
                .peers
                .iter()
                .filter_map(|peer| match peer {
                    Peer::Pods(pp) => Some(index.peer_pods(pp)),
                    Peer::IpBlock(_) => None,
                })
                .flatten()
                .collect();
            matched.sort_unstable();
            matched.dedup();
            matched
        };
        for policy in policies.iter().filter(|_| !per_pod) {
            for d in Direction::BOTH {
                for rule in policy.rules(d) {
                    if rule.peers.iter().any(|p| matches!(p, Peer::Pods(_))) {
                        refine(&mut rule_pods(rule).into_iter(), &mut class_of);
                    }
                }
            }
        }
        let named: BTreeSet<&str> = policies
            .iter()
            .flat_map(|p| Direction::BOTH.map(|d| p.rules(d)))
            .flatten()
            .flat_map(|r| &r.ports)
            .filter_map(|p| match &p.port {
                PortSpec::Named(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        if !named.is_empty() {
            let mut by_port: BTreeMap<(&str, crate::model::Protocol, u16), Vec<usize>> =
                BTreeMap::new();
            for (p, pod) in pods.iter().enumerate() {
                for cp in &pod.ports {
                    if let Some(name) = cp.name.as_deref().filter(|n| named.contains(n)) {
                        by_port
                            .entry((name, cp.protocol, cp.port))
                            .or_default()
                            .push(p);
                    }
                }
            }
            for members in by_port.values() {
                refine(&mut members.iter().copied(), &mut class_of);
            }
        }

        // Compact the classes, in the order of their first member.
        let mut compact: HashMap<u32, usize> = HashMap::new();
        let mut classes: Vec<Class> = Vec::new();
        let class_of: Vec<usize> = (0..pods.len())
            .map(|p| {
                *compact.entry(class_of[p]).or_insert_with(|| {
                    classes.push(Class {
                        rep: p,
                        atom: [pod_atom(p, Family::V4), pod_atom(p, Family::V6)],
                        ports: pods[p].ports.clone(),
                        isolated_by: Default::default(),
                        rules: Default::default(),
                    });
                    classes.len() - 1
                })
            })
            .collect();

        // Rules, with the classes and atoms their peers match.
        let mut rules: Vec<RuleInfo> = Vec::new();
        let mut rules_of: Vec<[Vec<usize>; 2]> = Vec::new();
        for (pi, policy) in policies.iter().enumerate() {
            let mut own: [Vec<usize>; 2] = Default::default();
            for d in Direction::BOTH {
                for (index, rule) in policy.rules(d).iter().enumerate() {
                    let mut info = RuleInfo {
                        policy: pi,
                        direction: d,
                        index,
                        any_peer: rule.peers.is_empty(),
                        classes: FixedBitSet::with_capacity(classes.len()),
                        atoms: [
                            FixedBitSet::with_capacity(atoms[0].len()),
                            FixedBitSet::with_capacity(atoms[1].len()),
                        ],
                        ports: rule.ports.clone(),
                    };
                    for p in rule_pods(rule) {
                        info.classes.insert(class_of[p]);
                    }
                    for peer in &rule.peers {
                        let Peer::IpBlock(block) = peer else { continue };
                        let f = block.cidr.family();
                        let a = &atoms[family_slot(f)];
                        let bits = &mut info.atoms[family_slot(f)];
                        let (first, last) = block.cidr.bounds();
                        for i in a.of(first)..=a.of(last) {
                            let start = a.starts[i];
                            if !block
                                .except
                                .iter()
                                .any(|e| e.contains(&from_u128(f, start)))
                            {
                                bits.insert(i);
                            }
                        }
                    }
                    own[dir_slot(d)].push(rules.len());
                    rules.push(info);
                }
            }
            rules_of.push(own);
        }
        // What isolates each class, from its first member.
        let mut is_rep = vec![false; pods.len()];
        for c in &classes {
            is_rep[c.rep] = true;
        }
        for (pi, t) in targets.iter().enumerate() {
            for &p in t.iter().filter(|p| is_rep[**p]) {
                let c = &mut classes[class_of[p]];
                for d in Direction::BOTH {
                    if policies[pi].isolates(d) {
                        c.isolated_by[dir_slot(d)].push(pi);
                        c.rules[dir_slot(d)].extend(&rules_of[pi][dir_slot(d)]);
                    }
                }
            }
        }

        // Parties: workloads (one per workload whose pods are one class; else one per pod), then
        // external ranges (atoms outside the pod CIDRs, neighbours that every ipBlock treats
        // alike merged).
        let mut by_workload: BTreeMap<WorkloadRef, Vec<usize>> = BTreeMap::new();
        for (p, pod) in pods.iter().enumerate() {
            by_workload.entry(pod.workload_ref()).or_default().push(p);
        }
        let mut parties: Vec<(Party, End, Option<Family>, Vec<ObjectRef>)> = Vec::new();
        for (workload, members) in by_workload {
            let first = class_of[members[0]];
            if members.iter().all(|p| class_of[*p] == first) {
                let ids = members.iter().map(|p| pods[*p].id.clone()).collect();
                parties.push((Party::Workload(workload), End::Class(first), None, ids));
            } else {
                for p in members {
                    let pod = pods[p];
                    let own = WorkloadRef::new(&pod.id.namespace, &pod.id.name, "Pod");
                    parties.push((
                        Party::Workload(own),
                        End::Class(class_of[p]),
                        None,
                        vec![pod.id.clone()],
                    ));
                }
            }
        }
        for f in FAMILIES {
            if !cidrs.cidrs().iter().any(|c| c.family() == f)
                && !pods.iter().any(|p| p.ip(f).is_some())
            {
                continue;
            }
            let a = &atoms[family_slot(f)];
            let inside_pods = |i: usize| {
                cidrs
                    .cidrs()
                    .iter()
                    .any(|c| c.contains(&from_u128(f, a.starts[i])))
            };
            let membership = |i: usize| -> Vec<bool> {
                rules
                    .iter()
                    .map(|r| r.atoms[family_slot(f)].contains(i))
                    .collect()
            };
            let mut i = 0;
            while i < a.len() {
                if inside_pods(i) {
                    i += 1;
                    continue;
                }
                let m = membership(i);
                let mut j = i;
                while j + 1 < a.len() && !inside_pods(j + 1) && membership(j + 1) == m {
                    j += 1;
                }
                parties.push((
                    Party::External {
                        first: from_u128(f, a.starts[i]),
                        last: from_u128(f, a.last(f, j)),
                    },
                    End::External(i),
                    Some(f),
                    Vec::new(),
                ));
                i = j + 1;
            }
        }
        parties.sort_by_cached_key(|(p, ..)| p.to_string());

        let mut this = Self {
            parties: Vec::with_capacity(parties.len()),
            ends: Vec::with_capacity(parties.len()),
            sets: Vec::new(),
            connections: Vec::new(),
            classes,
            policies: policies.iter().map(|p| p.id.clone()).collect(),
            rules,
            members: Vec::new(),
        };
        for (party, end, family, members) in parties {
            this.parties.push(party);
            this.ends.push((end, family));
            this.members.push(members);
        }
        this.connect();
        this
    }

    /// The connections a rule allows to `to` (its peers matching `other`, the far end).
    fn rule_allows(
        &self,
        rule: &RuleInfo,
        other: End,
        family: Family,
        destination: End,
    ) -> Option<ConnSet> {
        let peer = rule.any_peer
            || match other {
                End::Class(c) => {
                    rule.classes.contains(c)
                        || self.classes[c].atom[family_slot(family)]
                            .is_some_and(|a| rule.atoms[family_slot(family)].contains(a))
                }
                End::External(a) => rule.atoms[family_slot(family)].contains(a),
            };
        if !peer {
            return None;
        }
        Some(ConnSet::of_rule(
            &rule.ports,
            |name, protocol| match destination {
                End::Class(c) => self.classes[c]
                    .ports
                    .iter()
                    .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
                    .map(|p| p.port),
                End::External(_) => None,
            },
        ))
    }

    /// What `end`'s policies allow in `direction` with `other`: everything when no policy
    /// isolates it (or it is an external range), else the union of its rules that match.
    fn side(&self, end: End, direction: Direction, other: End, family: Family) -> ConnSet {
        let End::Class(c) = end else {
            return ConnSet::all();
        };
        let class = &self.classes[c];
        if class.isolated_by[dir_slot(direction)].is_empty() {
            return ConnSet::all();
        }
        let destination = match direction {
            Direction::Egress => other,
            Direction::Ingress => end,
        };
        let mut acc = ConnSet::none();
        for &r in &class.rules[dir_slot(direction)] {
            if let Some(set) = self.rule_allows(&self.rules[r], other, family, destination) {
                acc = acc.union(&set);
                if acc.is_all() {
                    break;
                }
            }
        }
        acc
    }

    /// The connections allowed from `from` to `to` over `family`.
    fn between(&self, from: End, to: End, family: Family) -> ConnSet {
        let egress = self.side(from, Direction::Egress, to, family);
        if egress.is_empty() {
            return egress;
        }
        egress.intersection(&self.side(to, Direction::Ingress, from, family))
    }

    fn families_of(&self, party: usize) -> Vec<Family> {
        match self.ends[party] {
            (End::External(_), Some(f)) => vec![f],
            (End::Class(c), _) => FAMILIES
                .into_iter()
                .filter(|f| self.classes[c].atom[family_slot(*f)].is_some())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// For each class, the classes its rules can match at all, per direction: pairs outside them
    /// allow nothing and need no evaluation.
    fn reach(&self) -> Reach {
        let n = self.classes.len();
        // The classes each rule's peers can match: its pod peers', and those whose address lies in
        // an atom its ipBlocks hold (in either family: an over-approximation is enough here).
        let mut classes_by_atom: [HashMap<usize, Vec<usize>>; 2] = Default::default();
        for (c, class) in self.classes.iter().enumerate() {
            for f in FAMILIES {
                if let Some(a) = class.atom[family_slot(f)] {
                    classes_by_atom[family_slot(f)]
                        .entry(a)
                        .or_default()
                        .push(c);
                }
            }
        }
        let rule_classes: Vec<Option<FixedBitSet>> = self
            .rules
            .iter()
            .map(|r| {
                if r.any_peer {
                    return None;
                }
                let mut bits = r.classes.clone();
                bits.grow(n);
                for f in FAMILIES {
                    for a in r.atoms[family_slot(f)].ones() {
                        for &c in classes_by_atom[family_slot(f)]
                            .get(&a)
                            .into_iter()
                            .flatten()
                        {
                            bits.insert(c);
                        }
                    }
                }
                Some(bits)
            })
            .collect();
        let side = |direction: Direction| -> Vec<Option<FixedBitSet>> {
            self.classes
                .iter()
                .map(|class| {
                    if class.isolated_by[dir_slot(direction)].is_empty() {
                        return None;
                    }
                    let mut bits = FixedBitSet::with_capacity(n);
                    for &r in &class.rules[dir_slot(direction)] {
                        match &rule_classes[r] {
                            None => return None,
                            Some(b) => bits.union_with(b),
                        }
                    }
                    Some(bits)
                })
                .collect()
        };
        Reach {
            egress: side(Direction::Egress),
            ingress: side(Direction::Ingress),
        }
    }

    /// Computes the connections once per pair of groups (a class of alike pods, or one external
    /// range) and expands each non-empty result to the pairs of parties in the two groups.
    fn connect(&mut self) {
        // Groups: each class of pods (with its parties), and each external range on its own.
        let mut class_parties: Vec<Vec<u32>> = vec![Vec::new(); self.classes.len()];
        let mut externals: Vec<u32> = Vec::new();
        for (i, (end, _)) in self.ends.iter().enumerate() {
            match end {
                End::Class(c) => class_parties[*c].push(i as u32),
                End::External(_) => externals.push(i as u32),
            }
        }
        let class_families: Vec<Vec<Family>> = (0..self.classes.len())
            .map(|c| {
                FAMILIES
                    .into_iter()
                    .filter(|f| self.classes[c].atom[family_slot(*f)].is_some())
                    .collect()
            })
            .collect();
        let reach = self.reach();
        let mut interned: HashMap<ConnSet, u32> = HashMap::new();
        let mut connections = Vec::new();
        // Evaluates one pair of groups and records its connections for every pair of their parties.
        let mut pair = |a: End,
                        from_families: &[Family],
                        from_parties: &[u32],
                        b: End,
                        to_families: &[Family],
                        to_parties: &[u32]| {
            let results: Vec<(Family, ConnSet)> = from_families
                .iter()
                .filter(|f| to_families.contains(f))
                .map(|f| (*f, self.between(a, b, *f)))
                .collect();
            let same = results.windows(2).all(|w| w[0].1 == w[1].1);
            let mut found: Vec<(u8, u32)> = Vec::new();
            let mut intern = |family: u8, set: ConnSet| {
                if !set.is_empty() {
                    let next = interned.len() as u32;
                    found.push((family, *interned.entry(set).or_insert(next)));
                }
            };
            if same {
                if let Some((_, set)) = results.into_iter().next() {
                    intern(2, set);
                }
            } else {
                for (f, set) in results {
                    intern(family_slot(f) as u8, set);
                }
            }
            for &(family, set) in &found {
                for &from in from_parties {
                    for &to in to_parties {
                        if from != to {
                            connections.push((from, to, family, set));
                        }
                    }
                }
            }
        };
        let all_classes: Vec<usize> = (0..self.classes.len()).collect();
        for s in 0..self.classes.len() {
            if class_parties[s].is_empty() {
                continue;
            }
            // Only the classes the source's egress can reach, whose ingress admits it.
            let candidates: Vec<usize> = match &reach.egress[s] {
                Some(bits) => bits.ones().collect(),
                None => all_classes.clone(),
            };
            for d in candidates {
                if class_parties[d].is_empty()
                    || reach.ingress[d].as_ref().is_some_and(|b| !b.contains(s))
                {
                    continue;
                }
                pair(
                    End::Class(s),
                    &class_families[s],
                    &class_parties[s],
                    End::Class(d),
                    &class_families[d],
                    &class_parties[d],
                );
            }
            for &e in &externals {
                let (end, family) = self.ends[e as usize];
                let families: Vec<Family> = family.into_iter().collect();
                pair(
                    End::Class(s),
                    &class_families[s],
                    &class_parties[s],
                    end,
                    &families,
                    &[e],
                );
                pair(
                    end,
                    &families,
                    &[e],
                    End::Class(s),
                    &class_families[s],
                    &class_parties[s],
                );
            }
        }
        connections.sort_unstable();
        let mut sets = vec![ConnSet::none(); interned.len()];
        for (set, id) in interned {
            sets[id as usize] = set;
        }
        self.sets = sets;
        self.connections = connections;
    }

    /// Every party: workloads and external ranges, sorted by name.
    pub fn parties(&self) -> &[Party] {
        &self.parties
    }

    /// Every allowed connection, sorted by source then destination; a party to itself is left out,
    /// and so are pairs with nothing allowed.
    pub fn connections(&self) -> impl Iterator<Item = Connection<'_>> {
        self.connections
            .iter()
            .map(|&(from, to, family, set)| Connection {
                from: &self.parties[from as usize],
                to: &self.parties[to as usize],
                family: match family {
                    0 => Some(Family::V4),
                    1 => Some(Family::V6),
                    _ => None,
                },
                allowed: &self.sets[set as usize],
            })
    }

    /// How many connections there are.
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// Whether nothing is allowed between any two parties.
    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// The party a name denotes (`ns/name[Kind]`, `ns/name`, or `first-last`).
    pub fn party(&self, name: &str) -> Option<&Party> {
        self.parties.iter().find(|p| p.is_named(name))
    }

    /// The pods a workload party stands for.
    pub fn members(&self, party: &Party) -> &[ObjectRef] {
        self.parties
            .iter()
            .position(|p| p == party)
            .map(|i| self.members[i].as_slice())
            .unwrap_or_default()
    }

    /// The policies that isolate a party in a direction (none for external ranges).
    pub fn isolated_by(&self, party: &Party, direction: Direction) -> Vec<&ObjectRef> {
        let Some(i) = self.parties.iter().position(|p| p == party) else {
            return Vec::new();
        };
        match self.ends[i].0 {
            End::Class(c) => self.classes[c].isolated_by[dir_slot(direction)]
                .iter()
                .map(|p| &self.policies[*p])
                .collect(),
            End::External(_) => Vec::new(),
        }
    }

    /// Why a pair is what it is over `family`: the policies isolating the source for egress and
    /// the destination for ingress, and the rules (of those) whose peers and ports let something
    /// through.
    pub fn causes(&self, from: &Party, to: &Party, family: Family) -> Causes {
        let mut causes = Causes::default();
        let (Some(a), Some(b)) = (
            self.parties.iter().position(|p| p == from),
            self.parties.iter().position(|p| p == to),
        ) else {
            return causes;
        };
        let (a, b) = (self.ends[a].0, self.ends[b].0);
        for (end, other, direction) in [(a, b, Direction::Egress), (b, a, Direction::Ingress)] {
            let End::Class(c) = end else { continue };
            let class = &self.classes[c];
            let isolated: Vec<ObjectRef> = class.isolated_by[dir_slot(direction)]
                .iter()
                .map(|p| self.policies[*p].clone())
                .collect();
            match direction {
                Direction::Egress => causes.egress_isolated_by = isolated,
                Direction::Ingress => causes.ingress_isolated_by = isolated,
            }
            let destination = if direction == Direction::Egress {
                other
            } else {
                end
            };
            for &r in &class.rules[dir_slot(direction)] {
                let rule = &self.rules[r];
                if self
                    .rule_allows(rule, other, family, destination)
                    .is_some_and(|s| !s.is_empty())
                {
                    causes.allowed_by.push(crate::analysis::RuleRef {
                        policy: self.policies[rule.policy].clone(),
                        direction: rule.direction,
                        index: rule.index,
                    });
                }
            }
        }
        causes
    }

    /// How many classes of alike pods the computation used.
    pub fn class_count(&self) -> usize {
        self.classes.len()
    }
}

#[cfg(test)]
mod tests;
