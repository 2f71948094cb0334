//! Who can reach whom: for every ordered pair of workloads, every external address range and every
//! node, the exact set of allowed connections (`policyc connections`, and what `diff`, `verify`
//! and `graph` build on).
//!
//! Pods that no selector, peer, ipBlock, network or named port tells apart behave alike, so the
//! work is done per class of such pods, found by partition refinement: start from one class and
//! split it by every set a policy distinguishes (the pods a NetworkPolicy or a
//! ClusterNetworkPolicy selects, the pods a rule's pod and namespace peers match, the pods in an
//! address range an ipBlock or `networks` boundary delimits, the pods declaring a named port with
//! a given number). Each direction of a connection between two classes is then judged as the
//! API defines it, on whole sets of connections at once: the Admin tier's rules of the
//! ClusterNetworkPolicies selecting the pod, by priority (then name) and in written order, each
//! taking what matches of what earlier rules left (Accept allows it, Deny drops it, Pass hands it
//! on); then, for what is left and passed, the NetworkPolicies isolating the pod (the union of
//! their rules whose peers match the other end), or, when none isolates it, the Baseline tier
//! the same way with everything it leaves allowed. A connection is what the source's egress and
//! the destination's ingress both allow. The address space outside the pod CIDRs is cut at
//! every ipBlock and `networks` boundary into external ranges, judged the same way.
//!
//! NetworkPolicies in audit mode (`nftpolicy.io/enforcement: audit`) are left out: they isolate
//! nothing and, beside enforced ones, add nothing, so every connection is what the enforced
//! policies and the tiers make it (what audit policies would deny is the evaluator's to say).
//!
//! Nodes: every address of a Node of the input is a party of its node, `node/NAME` (the node's
//! addresses are cut out of the external ranges), or `node/NAME[ADDR,…]` for each group of its
//! addresses when rules tell them apart. Traffic between a node and the pods running on it never
//! crosses the forward hook and is judged differently (from a pod to its own node only
//! ClusterNetworkPolicy egress rules judge it; from the node to its pods everything is allowed),
//! so it is reported with the node's own-node party, `node/NAME (own node)`, and `node/NAME`
//! stands for the node as pods on other nodes see it. A pod's hostIPs that no Node of the input
//! lists are not told apart from the external range they lie in.

mod conns;
mod effects;
mod exposure;
mod lookup;
pub mod report;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use fixedbitset::FixedBitSet;

pub use conns::{ConnSet, PortRanges};
pub use effects::{ClusterRuleEffects, RuleEffect, Tie};
pub use exposure::{exposure, Exposed, Exposure, ExposureReport};
pub use lookup::Lookup;

use crate::analysis::{ClusterRuleRef, TierMatch};
use crate::cidr::{from_u128, max_u128, to_u128, Cidr, Family};
use crate::cluster::ClusterState;
use crate::index::ClusterIndex;
use crate::model::{
    Action, ClusterNetworkPolicy, ClusterPeer, ClusterPort, Direction, ObjectRef, Peer, PolicyPort,
    PortSpec, Protocol, Subject, Tier, WorkloadRef,
};
use crate::workload::PodCidrs;

/// A node as a party: some or all of its addresses, as pods on other nodes or as its own pods
/// see it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeParty {
    /// The Node's name.
    pub name: String,
    /// The addresses the party stands for (the Node's InternalIP and ExternalIP addresses, or
    /// the group of them that rules treat alike).
    pub addresses: Vec<IpAddr>,
    /// Whether the party is a group of the node's addresses rather than all of them (rules tell
    /// its addresses apart): printed with them, `node/NAME[ADDR,…]`.
    pub part: bool,
    /// The node as the pods running on it reach it, and as it reaches them (`node/NAME (own
    /// node)`): traffic that never crosses the forward hook.
    pub own: bool,
}

impl fmt::Display for NodeParty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node/{}", self.name)?;
        if self.part {
            let addresses: Vec<String> = self.addresses.iter().map(IpAddr::to_string).collect();
            write!(f, "[{}]", addresses.join(","))?;
        }
        if self.own {
            f.write_str(" (own node)")?;
        }
        Ok(())
    }
}

/// One end of a reported connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Party {
    /// A workload (or a pod of no workload, `ns/name[Pod]`).
    Workload(WorkloadRef),
    /// A range of addresses outside the pod CIDRs (and outside the nodes' addresses),
    /// `first-last`.
    External {
        /// First address.
        first: IpAddr,
        /// Last address.
        last: IpAddr,
    },
    /// A node of the input: see [`NodeParty`].
    Node(NodeParty),
}

impl Party {
    /// The address family of an external range, or of a node party whose addresses are all of
    /// one family.
    pub fn family(&self) -> Option<Family> {
        match self {
            Party::Workload(_) => None,
            Party::External { first, .. } => Some(Family::of(first)),
            Party::Node(n) => {
                let first = Family::of(n.addresses.first()?);
                n.addresses
                    .iter()
                    .all(|a| Family::of(a) == first)
                    .then_some(first)
            }
        }
    }

    /// Whether `name` names this party: `ns/name[Kind]`, `ns/name` (any kind), the range
    /// `first-last`, or a node party as it is printed.
    pub fn is_named(&self, name: &str) -> bool {
        match self {
            Party::Workload(w) => {
                let text = w.to_string();
                text == name || format!("{}/{}", w.namespace, w.name) == name
            }
            Party::External { .. } | Party::Node(_) => self.to_string() == name,
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Party::Workload(w) => write!(f, "{w}"),
            Party::External { first, last } => write!(f, "{first}-{last}"),
            Party::Node(n) => n.fmt(f),
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

/// A rule of a NetworkPolicy, as the engine uses it.
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

/// A rule of a ClusterNetworkPolicy, as the engine uses it.
#[derive(Debug)]
struct ClusterRuleInfo {
    /// The rule, as causes name it.
    rule: ClusterRuleRef,
    action: Action,
    /// Matches every end: a peer of a kind nftpolicy does not know, in a Deny or Pass rule.
    any_peer: bool,
    /// The classes its `namespaces` and `pods` peers match.
    classes: FixedBitSet,
    /// Per family, the address atoms its `networks` hold.
    atoms: [FixedBitSet; 2],
    /// Per family, the node ends whose address of that family its `nodes` peers match.
    nodes: [FixedBitSet; 2],
    protocols: Vec<ClusterPort>,
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
    /// NetworkPolicies isolating the members, per direction ([ingress, egress]).
    isolated_by: [Vec<usize>; 2],
    /// The rules of those policies, per direction.
    rules: [Vec<usize>; 2],
    /// The ClusterNetworkPolicy rules that apply to the members, per tier ([Admin, Baseline])
    /// and direction, in evaluation order.
    tiers: [[Vec<usize>; 2]; 2],
}

/// Addresses of a node that every rule treats alike: at most one atom per family.
#[derive(Debug)]
struct NodeEnd {
    /// The Node's name.
    name: String,
    /// Per family, the atom of the addresses of that family (each node address is an atom of its
    /// own; alike ones are judged by one of them).
    atom: [Option<usize>; 2],
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

    /// The atoms a prefix covers (prefixes are cut at their bounds, so they hold whole atoms).
    fn covered(&self, cidr: &Cidr) -> std::ops::RangeInclusive<usize> {
        let (first, last) = cidr.bounds();
        self.of(first)..=self.of(last)
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

fn tier_slot(t: Tier) -> usize {
    match t {
        Tier::Admin => 0,
        Tier::Baseline => 1,
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
    /// NetworkPolicies isolating the source for egress (none: its egress is open to them).
    pub egress_isolated_by: Vec<ObjectRef>,
    /// NetworkPolicies isolating the destination for ingress (none: its ingress is open).
    pub ingress_isolated_by: Vec<ObjectRef>,
    /// Rules of those policies that let something through (of what the Admin tier left them).
    pub allowed_by: Vec<crate::analysis::RuleRef>,
    /// The ClusterNetworkPolicy rules that decide some of the pair's connections (the first
    /// rule of their tier to match them), egress then ingress, each in evaluation order, with
    /// their action.
    pub cluster_rules: Vec<TierMatch>,
}

impl Causes {
    /// Every NetworkPolicy named: isolating either end, or allowing.
    pub fn policies(&self) -> BTreeSet<&ObjectRef> {
        self.egress_isolated_by
            .iter()
            .chain(&self.ingress_isolated_by)
            .chain(self.allowed_by.iter().map(|r| &r.policy))
            .collect()
    }

    /// The names of the ClusterNetworkPolicies whose rules decide something of the pair.
    pub fn cluster_policies(&self) -> BTreeSet<&str> {
        self.cluster_rules
            .iter()
            .map(|m| m.rule.policy.as_str())
            .collect()
    }
}

/// An end of a connection being judged: a class, an external atom of a family, or a node end.
#[derive(Debug, Clone, Copy)]
enum End {
    Class(usize),
    External(usize),
    /// A node end; `true`: as the pods running on the node reach it and it reaches them.
    Node(usize, bool),
}

/// Which rules a judgement went through, for [`Connectivity::causes`].
#[derive(Debug, Default)]
struct Notes {
    /// ClusterNetworkPolicy rules that decided some connections.
    cluster_rules: Vec<usize>,
    /// NetworkPolicy rules that allowed some.
    rules: Vec<usize>,
}

/// The connectivity of a cluster.
#[derive(Debug)]
pub struct Connectivity {
    /// Workload parties, then external ones, sorted by name (the output order).
    parties: Vec<Party>,
    /// Per party: its class, its external atom and family, or its node end.
    ends: Vec<(End, Option<Family>)>,
    /// The distinct connection sets.
    sets: Vec<ConnSet>,
    /// (from, to, family slot or 2 for all, set), sorted by from then to.
    connections: Vec<(u32, u32, u8, u32)>,
    classes: Vec<Class>,
    policies: Vec<ObjectRef>,
    rules: Vec<RuleInfo>,
    cluster_rules: Vec<ClusterRuleInfo>,
    node_ends: Vec<NodeEnd>,
    /// Pods per workload party (the index's pods), for lookups.
    members: Vec<Vec<ObjectRef>>,
    /// Per workload party, the nodes its pods run on (`None`: a pod on no node), sorted.
    member_nodes: Vec<Vec<Option<std::sync::Arc<str>>>>,
}

/// How every rule treats an address: its family's slot, then per NetworkPolicy rule whether its
/// ipBlocks hold it, and per ClusterNetworkPolicy rule whether its networks and its nodes peers do.
type Signature = (usize, Vec<bool>);

/// The pods a ClusterNetworkPolicy's subject selects.
fn subject_pods(index: &ClusterIndex<'_>, subject: &Subject) -> Vec<usize> {
    match subject {
        Subject::Namespaces(s) => index.select_pods(
            &index.select_namespaces(s),
            &crate::selector::LabelSelector::everything(),
        ),
        Subject::Pods(p) => index.select_pods(&index.select_namespaces(&p.namespaces), &p.pods),
    }
}

/// The pods a ClusterNetworkPolicy rule's `namespaces` and `pods` peers match.
fn cluster_rule_pods(index: &ClusterIndex<'_>, rule: &crate::model::ClusterRule) -> Vec<usize> {
    let mut matched: Vec<usize> = rule
        .peers
        .iter()
        .filter_map(|peer| match peer {
            ClusterPeer::Namespaces(s) => {
                Some(subject_pods(index, &Subject::Namespaces(s.clone())))
            }
            ClusterPeer::Pods(p) => Some(subject_pods(index, &Subject::Pods(p.clone()))),
            _ => None,
        })
        .flatten()
        .collect();
    matched.sort_unstable();
    matched.dedup();
    matched
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
        // Policies in audit mode isolate nothing and allow nothing a pod would not be allowed
        // without them: connectivity is that of the enforced policies.
        let policies: Vec<&crate::model::Policy> = cluster
            .policies()
            .values()
            .filter(|p| !p.is_audit())
            .collect();
        // In evaluation order: Admin then Baseline, each by priority then name.
        let mut cluster_policies: Vec<&ClusterNetworkPolicy> =
            cluster.cluster_policies().values().collect();
        cluster_policies.sort_by(|a, b| (a.tier, a.order_key()).cmp(&(b.tier, b.order_key())));
        let nodes: Vec<&crate::model::Node> = cluster.node_objects().values().collect();

        // The atoms of each family: every ipBlock cidr and except boundary, every `networks`
        // prefix, every node address (an atom of its own), and the pod CIDRs.
        let mut boundaries: [BTreeSet<u128>; 2] = Default::default();
        let mut add = |cidr: &Cidr| {
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
        for policy in &cluster_policies {
            for d in Direction::BOTH {
                for rule in policy.rules(d) {
                    for peer in &rule.peers {
                        if let ClusterPeer::Networks(networks) = peer {
                            networks.iter().for_each(&mut add);
                        }
                    }
                }
            }
        }
        for node in &nodes {
            for ip in &node.addresses {
                add(&Cidr::host(*ip));
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
        let cluster_targets: Vec<Vec<usize>> = cluster_policies
            .iter()
            .map(|p| subject_pods(&index, &p.subject))
            .collect();
        for t in &cluster_targets {
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
        for policy in cluster_policies.iter().filter(|_| !per_pod) {
            for d in Direction::BOTH {
                for rule in policy.rules(d) {
                    let pod_peers = rule
                        .peers
                        .iter()
                        .any(|p| matches!(p, ClusterPeer::Namespaces(_) | ClusterPeer::Pods(_)));
                    if pod_peers {
                        refine(
                            &mut cluster_rule_pods(&index, rule).into_iter(),
                            &mut class_of,
                        );
                    }
                }
            }
        }
        let mut named: BTreeSet<&str> = policies
            .iter()
            .flat_map(|p| Direction::BOTH.map(|d| p.rules(d)))
            .flatten()
            .flat_map(|r| &r.ports)
            .filter_map(|p| match &p.port {
                PortSpec::Named(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        named.extend(
            cluster_policies
                .iter()
                .flat_map(|p| Direction::BOTH.map(|d| p.rules(d)))
                .flatten()
                .flat_map(|r| &r.protocols)
                .filter_map(|p| match p {
                    ClusterPort::Named(n) => Some(n.as_str()),
                    ClusterPort::Range { .. } => None,
                }),
        );
        if !named.is_empty() {
            let mut by_port: BTreeMap<(&str, Protocol, u16), Vec<usize>> = BTreeMap::new();
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
                        tiers: Default::default(),
                    });
                    classes.len() - 1
                })
            })
            .collect();
        let atom_bits = || {
            [
                FixedBitSet::with_capacity(atoms[0].len()),
                FixedBitSet::with_capacity(atoms[1].len()),
            ]
        };

        // NetworkPolicy rules, with the classes and atoms their peers match.
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
                        atoms: atom_bits(),
                        ports: rule.ports.clone(),
                    };
                    for p in rule_pods(rule) {
                        info.classes.insert(class_of[p]);
                    }
                    for peer in &rule.peers {
                        let Peer::IpBlock(block) = peer else { continue };
                        let f = block.cidr.family();
                        let a = &atoms[family_slot(f)];
                        for i in a.covered(&block.cidr) {
                            let start = a.starts[i];
                            if !block
                                .except
                                .iter()
                                .any(|e| e.contains(&from_u128(f, start)))
                            {
                                info.atoms[family_slot(f)].insert(i);
                            }
                        }
                    }
                    own[dir_slot(d)].push(rules.len());
                    rules.push(info);
                }
            }
            rules_of.push(own);
        }

        // ClusterNetworkPolicy rules, likewise; their `nodes` peers are resolved below.
        let mut cluster_rules: Vec<ClusterRuleInfo> = Vec::new();
        let mut cluster_rules_of: Vec<[Vec<usize>; 2]> = Vec::new();
        // Per rule, the selectors of its `nodes` peers.
        let mut node_selectors: Vec<Vec<&crate::selector::LabelSelector>> = Vec::new();
        for policy in &cluster_policies {
            let mut own: [Vec<usize>; 2] = Default::default();
            for d in Direction::BOTH {
                for (position, rule) in policy.rules(d).iter().enumerate() {
                    let mut info = ClusterRuleInfo {
                        rule: ClusterRuleRef {
                            policy: policy.name.clone(),
                            tier: policy.tier,
                            priority: policy.priority,
                            direction: d,
                            index: position,
                            name: rule.name.clone(),
                        },
                        action: rule.action,
                        any_peer: rule.action != Action::Accept
                            && rule.peers.contains(&ClusterPeer::Unknown),
                        classes: FixedBitSet::with_capacity(classes.len()),
                        atoms: atom_bits(),
                        nodes: Default::default(),
                        protocols: rule.protocols.clone(),
                    };
                    for p in cluster_rule_pods(&index, rule) {
                        info.classes.insert(class_of[p]);
                    }
                    let mut selectors = Vec::new();
                    for peer in &rule.peers {
                        match peer {
                            ClusterPeer::Networks(networks) => {
                                for cidr in networks {
                                    let f = family_slot(cidr.family());
                                    for i in atoms[f].covered(cidr) {
                                        info.atoms[f].insert(i);
                                    }
                                }
                            }
                            ClusterPeer::Nodes(s) => selectors.push(s),
                            _ => {}
                        }
                    }
                    own[dir_slot(d)].push(cluster_rules.len());
                    cluster_rules.push(info);
                    node_selectors.push(selectors);
                }
            }
            cluster_rules_of.push(own);
        }

        // Node ends: each Node's addresses grouped by how every rule treats them.
        let node_matches = |r: usize, ip: &IpAddr| {
            node_selectors[r].iter().any(|s| {
                nodes
                    .iter()
                    .any(|n| s.matches(&n.labels) && n.addresses.contains(ip))
            })
        };
        let signature = |ip: &IpAddr| -> Signature {
            let f = family_slot(Family::of(ip));
            let atom = atoms[f].of(to_u128(ip));
            let mut bits: Vec<bool> = rules.iter().map(|r| r.atoms[f].contains(atom)).collect();
            for (r, rule) in cluster_rules.iter().enumerate() {
                bits.push(rule.atoms[f].contains(atom));
                bits.push(node_matches(r, ip));
            }
            (f, bits)
        };
        let mut node_ends: Vec<NodeEnd> = Vec::new();
        // Per node end: its party (before `own`), and a representative address per family.
        let mut node_parties: Vec<(NodeParty, [Option<IpAddr>; 2])> = Vec::new();
        for node in &nodes {
            let mut groups: Vec<(Signature, Vec<IpAddr>)> = Vec::new();
            for ip in &node.addresses {
                let sig = signature(ip);
                match groups.iter_mut().find(|(s, _)| *s == sig) {
                    Some((_, ips)) => ips.push(*ip),
                    None => groups.push((sig, vec![*ip])),
                }
            }
            let whole = FAMILIES.iter().all(|f| {
                groups
                    .iter()
                    .filter(|((slot, _), _)| *slot == family_slot(*f))
                    .count()
                    <= 1
            });
            let parts: Vec<Vec<IpAddr>> = if whole {
                vec![node.addresses.clone()]
            } else {
                groups.into_iter().map(|(_, ips)| ips).collect()
            };
            for addresses in parts {
                let mut rep: [Option<IpAddr>; 2] = [None, None];
                for ip in &addresses {
                    rep[family_slot(Family::of(ip))].get_or_insert(*ip);
                }
                node_ends.push(NodeEnd {
                    name: node.name.clone(),
                    atom: rep.map(|ip| {
                        ip.map(|ip| atoms[family_slot(Family::of(&ip))].of(to_u128(&ip)))
                    }),
                });
                node_parties.push((
                    NodeParty {
                        name: node.name.clone(),
                        addresses,
                        part: !whole,
                        own: false,
                    },
                    rep,
                ));
            }
        }
        for (r, rule) in cluster_rules.iter_mut().enumerate() {
            for f in FAMILIES {
                let bits = &mut rule.nodes[family_slot(f)];
                bits.grow(node_ends.len());
                for (k, (_, rep)) in node_parties.iter().enumerate() {
                    if rep[family_slot(f)].is_some_and(|ip| node_matches(r, &ip)) {
                        bits.insert(k);
                    }
                }
            }
        }

        // What isolates each class and the tiers' rules that apply to it, from its first member.
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
        for (ci, t) in cluster_targets.iter().enumerate() {
            let tier = tier_slot(cluster_policies[ci].tier);
            for &p in t.iter().filter(|p| is_rep[**p]) {
                let c = &mut classes[class_of[p]];
                for d in Direction::BOTH {
                    c.tiers[tier][dir_slot(d)].extend(&cluster_rules_of[ci][dir_slot(d)]);
                }
            }
        }

        // Parties: workloads (one per workload whose pods are one class; else one per pod), then
        // external ranges (atoms outside the pod CIDRs and the nodes' addresses, neighbours that
        // every ipBlock and network treats alike merged), then nodes.
        let mut by_workload: BTreeMap<WorkloadRef, Vec<usize>> = BTreeMap::new();
        for (p, pod) in pods.iter().enumerate() {
            by_workload.entry(pod.workload_ref()).or_default().push(p);
        }
        let mut parties: Vec<(Party, End, Option<Family>, Vec<usize>)> = Vec::new();
        for (workload, members) in by_workload {
            let first = class_of[members[0]];
            if members.iter().all(|p| class_of[*p] == first) {
                parties.push((Party::Workload(workload), End::Class(first), None, members));
            } else {
                for p in members {
                    let pod = pods[p];
                    let own = WorkloadRef::new(&*pod.id.namespace, &*pod.id.name, "Pod");
                    parties.push((Party::Workload(own), End::Class(class_of[p]), None, vec![p]));
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
            let node_atoms: BTreeSet<usize> = node_ends
                .iter()
                .filter_map(|n| n.atom[family_slot(f)])
                .collect();
            let outside = |i: usize| {
                !node_atoms.contains(&i)
                    && !cidrs
                        .cidrs()
                        .iter()
                        .any(|c| c.contains(&from_u128(f, a.starts[i])))
            };
            let membership = |i: usize| -> Vec<bool> {
                rules
                    .iter()
                    .map(|r| &r.atoms)
                    .chain(cluster_rules.iter().map(|r| &r.atoms))
                    .map(|bits| bits[family_slot(f)].contains(i))
                    .collect()
            };
            let mut i = 0;
            while i < a.len() {
                if !outside(i) {
                    i += 1;
                    continue;
                }
                let m = membership(i);
                let mut j = i;
                while j + 1 < a.len() && outside(j + 1) && membership(j + 1) == m {
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
        let nodes_with_pods: BTreeSet<&str> =
            pods.iter().filter_map(|p| p.node.as_deref()).collect();
        for (k, (party, _)) in node_parties.into_iter().enumerate() {
            if nodes_with_pods.contains(party.name.as_str()) {
                let own = NodeParty {
                    own: true,
                    ..party.clone()
                };
                parties.push((Party::Node(own), End::Node(k, true), None, Vec::new()));
            }
            parties.push((Party::Node(party), End::Node(k, false), None, Vec::new()));
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
            cluster_rules,
            node_ends,
            members: Vec::new(),
            member_nodes: Vec::new(),
        };
        for (party, end, family, members) in parties {
            let mut on: Vec<Option<std::sync::Arc<str>>> =
                members.iter().map(|p| pods[*p].node.clone()).collect();
            on.sort();
            on.dedup();
            this.parties.push(party);
            this.ends.push((end, family));
            this.members
                .push(members.iter().map(|p| pods[*p].id.clone()).collect());
            this.member_nodes.push(on);
        }
        this.connect();
        this
    }

    /// The atom of an end's address of a family.
    fn atom(&self, end: End, family: Family) -> Option<usize> {
        let f = family_slot(family);
        match end {
            End::Class(c) => self.classes[c].atom[f],
            End::External(a) => Some(a),
            End::Node(k, _) => self.node_ends[k].atom[f],
        }
    }

    /// The port a destination declares under a name for a protocol (none for no pod).
    fn named_port(&self, destination: End, name: &str, protocol: Protocol) -> Option<u16> {
        match destination {
            End::Class(c) => self.classes[c]
                .ports
                .iter()
                .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
                .map(|p| p.port),
            End::External(_) | End::Node(..) => None,
        }
    }

    /// The connections a NetworkPolicy rule allows to `destination` (its peers matching `other`,
    /// the far end).
    fn rule_allows(
        &self,
        rule: &RuleInfo,
        other: End,
        family: Family,
        destination: End,
    ) -> Option<ConnSet> {
        let peer = rule.any_peer
            || matches!(other, End::Class(c) if rule.classes.contains(c))
            || self
                .atom(other, family)
                .is_some_and(|a| rule.atoms[family_slot(family)].contains(a));
        if !peer {
            return None;
        }
        Some(ConnSet::of_rule(&rule.ports, |name, protocol| {
            self.named_port(destination, name, protocol)
        }))
    }

    /// Whether a peer of a ClusterNetworkPolicy rule matches `other`.
    fn cluster_peer_matches(&self, rule: &ClusterRuleInfo, other: End, family: Family) -> bool {
        let f = family_slot(family);
        rule.any_peer
            || match other {
                End::Class(c) => rule.classes.contains(c),
                End::Node(k, _) => rule.nodes[f].contains(k),
                End::External(_) => false,
            }
            || self
                .atom(other, family)
                .is_some_and(|a| rule.atoms[f].contains(a))
    }

    /// The connections a ClusterNetworkPolicy rule's protocols match to `destination`.
    fn cluster_rule_set(&self, rule: &ClusterRuleInfo, destination: End) -> ConnSet {
        ConnSet::of_cluster_rule(&rule.protocols, |name, protocol| {
            self.named_port(destination, name, protocol)
        })
    }

    /// The connections a ClusterNetworkPolicy rule matches to `destination` (its peers matching
    /// `other`).
    fn cluster_rule_matches(
        &self,
        rule: &ClusterRuleInfo,
        other: End,
        family: Family,
        destination: End,
    ) -> Option<ConnSet> {
        self.cluster_peer_matches(rule, other, family)
            .then(|| self.cluster_rule_set(rule, destination))
    }

    /// One tier's rules judging what is still `open`: each rule takes what it matches of what
    /// earlier rules left. Returns what the tier accepted and what it passed; `open` keeps what
    /// no rule matched.
    fn tier(
        &self,
        tier: &[usize],
        other: End,
        family: Family,
        destination: End,
        open: &mut ConnSet,
        notes: &mut Option<&mut Notes>,
    ) -> (ConnSet, ConnSet) {
        let (mut accepted, mut passed) = (ConnSet::none(), ConnSet::none());
        for &r in tier {
            if open.is_empty() {
                break;
            }
            let rule = &self.cluster_rules[r];
            let Some(matched) = self
                .cluster_rule_matches(rule, other, family, destination)
                .map(|set| set.intersection(open))
                .filter(|m| !m.is_empty())
            else {
                continue;
            };
            *open = open.difference(&matched);
            if let Some(notes) = notes.as_deref_mut() {
                notes.cluster_rules.push(r);
            }
            match rule.action {
                Action::Accept => accepted = accepted.union(&matched),
                Action::Deny => {}
                Action::Pass => passed = passed.union(&matched),
            }
        }
        (accepted, passed)
    }

    /// What `end`'s policies allow in `direction` with `other` over `family`: everything for an
    /// external range or a node; for a class, its Admin tier, then the NetworkPolicies isolating
    /// it or else its Baseline tier (see the module documentation). `own_node`: `other` is the
    /// pod's own node (egress), which NetworkPolicy allows.
    fn judge(
        &self,
        end: End,
        direction: Direction,
        other: End,
        family: Family,
        own_node: bool,
        mut notes: Option<&mut Notes>,
    ) -> ConnSet {
        let End::Class(c) = end else {
            return ConnSet::all();
        };
        let class = &self.classes[c];
        let d = dir_slot(direction);
        let destination = match direction {
            Direction::Egress => other,
            Direction::Ingress => end,
        };
        let mut open = ConnSet::all();
        let (accepted, passed) = self.tier(
            &class.tiers[tier_slot(Tier::Admin)][d],
            other,
            family,
            destination,
            &mut open,
            &mut notes,
        );
        let mut open = open.union(&passed);
        if open.is_empty() {
            return accepted;
        }
        if !class.isolated_by[d].is_empty() {
            if own_node {
                return accepted.union(&open);
            }
            let mut allowed = ConnSet::none();
            for &r in &class.rules[d] {
                let Some(set) = self
                    .rule_allows(&self.rules[r], other, family, destination)
                    .map(|s| s.intersection(&open))
                    .filter(|s| !s.is_empty())
                else {
                    continue;
                };
                allowed = allowed.union(&set);
                match notes.as_deref_mut() {
                    Some(notes) => notes.rules.push(r),
                    None if allowed == open => break,
                    None => {}
                }
            }
            return accepted.union(&allowed);
        }
        let (baseline_accepted, baseline_passed) = self.tier(
            &class.tiers[tier_slot(Tier::Baseline)][d],
            other,
            family,
            destination,
            &mut open,
            &mut notes,
        );
        // A Baseline Pass, like no match, is the default: allowed.
        accepted
            .union(&baseline_accepted)
            .union(&baseline_passed)
            .union(&open)
    }

    /// The connections allowed from `from` to `to` over `family`: what the source's egress and
    /// the destination's ingress both allow; from a pod to its own node, what its egress allows;
    /// from a node to its own pods, everything.
    fn between(&self, from: End, to: End, family: Family) -> ConnSet {
        match (from, to) {
            (End::Node(_, true), _) => ConnSet::all(),
            (_, End::Node(_, true)) => self.judge(from, Direction::Egress, to, family, true, None),
            _ => {
                let egress = self.judge(from, Direction::Egress, to, family, false, None);
                if egress.is_empty() {
                    return egress;
                }
                egress.intersection(&self.judge(to, Direction::Ingress, from, family, false, None))
            }
        }
    }

    fn families_of(&self, party: usize) -> Vec<Family> {
        match self.ends[party] {
            (End::External(_), Some(f)) => vec![f],
            (End::Class(c), _) => FAMILIES
                .into_iter()
                .filter(|f| self.classes[c].atom[family_slot(*f)].is_some())
                .collect(),
            (End::Node(k, _), _) => FAMILIES
                .into_iter()
                .filter(|f| self.node_ends[k].atom[family_slot(*f)].is_some())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// For each class, the classes its rules can match at all, per direction: pairs outside them
    /// allow nothing and need no evaluation. Only an isolated class is limited: by its
    /// NetworkPolicy rules and its Admin tier's Accept rules (Deny and Pass allow nothing of
    /// their own).
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
        let matched = |any_peer: bool, classes: &FixedBitSet, atoms: &[FixedBitSet; 2]| {
            if any_peer {
                return None;
            }
            let mut bits = classes.clone();
            bits.grow(n);
            for f in FAMILIES {
                for a in atoms[family_slot(f)].ones() {
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
        };
        let rule_classes: Vec<Option<FixedBitSet>> = self
            .rules
            .iter()
            .map(|r| matched(r.any_peer, &r.classes, &r.atoms))
            .collect();
        let cluster_rule_classes: Vec<Option<FixedBitSet>> = self
            .cluster_rules
            .iter()
            .map(|r| matched(r.any_peer, &r.classes, &r.atoms))
            .collect();
        let side = |direction: Direction| -> Vec<Option<FixedBitSet>> {
            let d = dir_slot(direction);
            self.classes
                .iter()
                .map(|class| {
                    if class.isolated_by[d].is_empty() {
                        return None;
                    }
                    let accepting = class.tiers[tier_slot(Tier::Admin)][d]
                        .iter()
                        .filter(|r| self.cluster_rules[**r].action == Action::Accept)
                        .map(|r| &cluster_rule_classes[*r]);
                    let mut bits = FixedBitSet::with_capacity(n);
                    for reached in class.rules[d]
                        .iter()
                        .map(|r| &rule_classes[*r])
                        .chain(accepting)
                    {
                        match reached {
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

    /// Whether a workload party has pods on the node of a node end (`on`), or off it (`!on`).
    fn has_pods(&self, party: u32, node: usize, on: bool) -> bool {
        let name = self.node_ends[node].name.as_str();
        self.member_nodes[party as usize]
            .iter()
            .any(|n| (n.as_deref() == Some(name)) == on)
    }

    /// Computes the connections once per pair of groups (a class of alike pods, one external
    /// range, or one node end) and expands each non-empty result to the pairs of parties in the
    /// two groups (with a node, the parties of the class that have pods on it, for its own-node
    /// party, or off it).
    fn connect(&mut self) {
        // Groups: each class of pods (with its parties), and each external range or node on its
        // own.
        let mut class_parties: Vec<Vec<u32>> = vec![Vec::new(); self.classes.len()];
        let mut others: Vec<u32> = Vec::new();
        for (i, (end, _)) in self.ends.iter().enumerate() {
            match end {
                End::Class(c) => class_parties[*c].push(i as u32),
                End::External(_) | End::Node(..) => others.push(i as u32),
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
        let other_families: HashMap<u32, Vec<Family>> = others
            .iter()
            .map(|e| (*e, self.families_of(*e as usize)))
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
            if from_parties.is_empty() || to_parties.is_empty() {
                return;
            }
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
            for &e in &others {
                let (end, _) = self.ends[e as usize];
                let families = &other_families[&e];
                let parties: Vec<u32> = match end {
                    End::Node(k, own) => class_parties[s]
                        .iter()
                        .copied()
                        .filter(|p| self.has_pods(*p, k, own))
                        .collect(),
                    _ => class_parties[s].clone(),
                };
                pair(
                    End::Class(s),
                    &class_families[s],
                    &parties,
                    end,
                    families,
                    &[e],
                );
                pair(
                    end,
                    families,
                    &[e],
                    End::Class(s),
                    &class_families[s],
                    &parties,
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

    /// Every party: workloads, external ranges and nodes, sorted by name.
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

    /// The party a name denotes (`ns/name[Kind]`, `ns/name`, `first-last`, or a node party as
    /// printed).
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

    /// Whether two parties make a pair that stands for some connection: not a workload with a
    /// node's own-node party when none of its pods runs on that node, nor with the node's other
    /// party when all of them do (nor a party with itself).
    pub fn has_pair(&self, a: &Party, b: &Party) -> bool {
        let (Some(i), Some(j)) = (
            self.parties.iter().position(|p| p == a),
            self.parties.iter().position(|p| p == b),
        ) else {
            return false;
        };
        let fits = |workload: usize, other: usize| match self.ends[other].0 {
            End::Node(k, own) => self.has_pods(workload as u32, k, own),
            _ => true,
        };
        i != j
            && match (self.ends[i].0, self.ends[j].0) {
                (End::Class(_), _) => fits(i, j),
                (_, End::Class(_)) => fits(j, i),
                _ => true,
            }
    }

    /// The NetworkPolicies that isolate a party in a direction (none for external ranges and
    /// nodes).
    pub fn isolated_by(&self, party: &Party, direction: Direction) -> Vec<&ObjectRef> {
        let Some(i) = self.parties.iter().position(|p| p == party) else {
            return Vec::new();
        };
        match self.ends[i].0 {
            End::Class(c) => self.classes[c].isolated_by[dir_slot(direction)]
                .iter()
                .map(|p| &self.policies[*p])
                .collect(),
            End::External(_) | End::Node(..) => Vec::new(),
        }
    }

    /// Why a pair is what it is over `family`: the NetworkPolicies isolating the source for
    /// egress and the destination for ingress, the rules (of those) whose peers and ports let
    /// something through, and the ClusterNetworkPolicy rules that decide some of its connections.
    /// From a node to its own pods nothing decides (everything is allowed); from a pod to its own
    /// node only its egress does.
    pub fn causes(&self, from: &Party, to: &Party, family: Family) -> Causes {
        let mut causes = Causes::default();
        let (Some(a), Some(b)) = (
            self.parties.iter().position(|p| p == from),
            self.parties.iter().position(|p| p == to),
        ) else {
            return causes;
        };
        let (a, b) = (self.ends[a].0, self.ends[b].0);
        if matches!(a, End::Node(_, true)) {
            return causes;
        }
        let own_node = matches!(b, End::Node(_, true));
        for (end, other, direction) in [(a, b, Direction::Egress), (b, a, Direction::Ingress)] {
            let End::Class(c) = end else { continue };
            if own_node && direction == Direction::Ingress {
                continue;
            }
            let isolated: Vec<ObjectRef> = self.classes[c].isolated_by[dir_slot(direction)]
                .iter()
                .map(|p| self.policies[*p].clone())
                .collect();
            match direction {
                Direction::Egress => causes.egress_isolated_by = isolated,
                Direction::Ingress => causes.ingress_isolated_by = isolated,
            }
            let mut notes = Notes::default();
            self.judge(end, direction, other, family, own_node, Some(&mut notes));
            for r in notes.rules {
                let rule = &self.rules[r];
                causes.allowed_by.push(crate::analysis::RuleRef {
                    policy: self.policies[rule.policy].clone(),
                    direction: rule.direction,
                    index: rule.index,
                });
            }
            for r in notes.cluster_rules {
                let rule = &self.cluster_rules[r];
                causes.cluster_rules.push(TierMatch {
                    rule: rule.rule.clone(),
                    action: rule.action,
                });
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
