//! The incremental compiler of one node: [`LiveNode`] keeps a node's ruleset between events and
//! changes only what an event touches, so that the agent's work per event follows the change, not
//! the cluster.
//!
//! A node's ruleset has two kinds of content:
//! - the *local part*: verdict maps, group chains, policy chains, counters, the named-port sets of
//!   ingress rules and the tiers. It follows the node's own pods and the policies selecting them
//!   (a few hundred pods at most);
//! - the *cluster-wide sets*: the addresses of each pod peer ([`SetSource::Peer`]) and the
//!   named ports of egress rules at their destinations ([`SetSource::EgressNamedPorts`]). They follow
//!   pods anywhere in the cluster and hold most of the elements.
//!
//! A pod event changes the elements of the cluster-wide sets that selected the pod before or select
//! it now, element by element. Only an event that can change the local part touches it: a pod of
//! this node, a policy of a namespace with pods on this node, a ClusterNetworkPolicy, a namespace
//! with pods on this node when the cluster has ClusterNetworkPolicies (their subjects select by
//! namespace labels), or the first pod of a new address family.
//!
//! The NetworkPolicy part of the local part is kept piece by piece ([`super::local`]): a pod of
//! this node leaves its groups and joins its new ones, a policy's rules are rendered again when
//! it changes, and what nothing holds any longer goes. With ClusterNetworkPolicies the tiers are
//! kept beside it: their peers maps resolve peers cluster-wide, and are kept element by element
//! ([`super::peers`]): a pod of another node, a namespace without pods on this node or a Node
//! changes only the elements of the addresses it involves, each classified again without an index
//! over the cluster. A change of this node's pods, of a policy of theirs or of a namespace of
//! theirs renders again only what the tiers decide for the pods that changed, over the peer
//! classes of the last full render of the tiers and the subjects it left
//! ([`super::tiers::SlotSubjects`]): each such pod leaves its combination of policies and joins
//! its new one, and only the subjects-set elements and class decision-map elements through and
//! beside its addresses change ([`super::class_runs`]). An address of a peer class none had gets
//! the class's chain rendered then ([`super::tiers::add_class`]). A ClusterNetworkPolicy that
//! starts judging the node's pods, or stops, enters or leaves the tiers' *universe* (the rules
//! the classes are numbered by) on its own ([`super::universe`]); a class that decided nothing for
//! the node's pods and starts deciding something gets its chain, and its addresses are found by
//! classifying those of one of its regions again ([`super::regions::reveal`]). What that cannot
//! take (an address two pods hold) renders the tiers again in full, through an index over the
//! cluster, by the same renderer as a full compile ([`super::tiers::TierRenderer`]), replacing what
//! the last one put in the ruleset (and the class chains added since).
//!
//! A ClusterNetworkPolicy edit that keeps the order (the same priority, rule count and Pass rules:
//! [`super::tiers::keeps_order`]) renders again only what it changes: the rules whose peers
//! changed get the regions of their new peers, and only the addresses the old and new regions
//! disagree on are classified again ([`super::regions`]); the rules whose ports, action or name
//! changed get their chains again, and the classes holding them decide again for the policy's
//! combinations ([`super::tiers::refresh_rules`]); another subject plans the node's pods again
//! and refreshes those whose plan changed, as a namespace's relabel does (the policy entering or
//! leaving the universe where it starts or stops judging the node's pods). One that judges no pod
//! of this node, before or after (its subject holds none), renders nothing: the kept subjects are
//! numbered again in the new evaluation order. Any other ClusterNetworkPolicy event (one added or
//! deleted, another priority, rule count, Pass rule or ingress named port) takes the policy out of
//! the universes it was in and puts it back where it judges now ([`super::universe`]); one that
//! changes the tiers' place in the base chains renders the tiers and the local part again in
//! full. A change of
//! the address families builds the whole local part again (its cluster-wide sets carried over
//! from the previous ruleset when their source did not change, or resolved afresh), then the
//! tiers.
//!
//! Every change is recorded as a [`Touched`] for [`Transaction::diff_touched`], which compares only
//! those objects: the diff of an event is as small as the event.
//!
//! The full compile is the oracle: after any sequence of events the ruleset equals
//! [`super::compile_node_with`] of the cluster, which the property tests check event by event.
//!
//! [`Transaction::diff_touched`]: crate::nft::transaction::Transaction::diff_touched

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::isolation::{local_pod, ordered_cluster_policies, subject_holds, ClusterPlan, NodePlan};
use super::local::{LocalPart, Out};
use super::origin::{CompileOptions, Origin, Origins};
use super::peers::{Holder, PeerBook, Structural};
use super::regions;
use super::rules::{counter_of, Renderer, SetSource};
use super::tiers::{self, Layout, TierSubject};
use super::universe;
use crate::cidr::Family;
use crate::cluster::ClusterState;
use crate::index::ClusterIndex;
use crate::model::{
    ClusterNetworkPolicy, Direction, Namespace, Node, ObjectRef, Pod, Policy, Tier,
};
use crate::nft::transaction::Touched;
use crate::nft::{Ruleset, Set, SetElement};
use crate::object::Kind;
use crate::selector::Labels;

/// The most cluster-wide sets a [`LiveNode`] keeps out of its ruleset, for when they come back.
pub const RETIRED_SETS: usize = 256;
/// The most elements those sets hold together.
pub const RETIRED_ELEMENTS: usize = 200_000;

/// One node's ruleset, kept up to date event by event (see the module documentation).
#[derive(Debug, Clone)]
pub struct LiveNode {
    node: String,
    options: CompileOptions,
    ruleset: Ruleset,
    origins: Origins,
    /// Bumped whenever `origins` may have changed.
    origins_generation: u64,
    /// The cluster-wide sets of the ruleset, by name.
    sources: BTreeMap<String, SetSource>,
    /// The participating pods of this node.
    local: BTreeSet<ObjectRef>,
    /// The namespaces of `local`, with how many of its pods each holds.
    local_namespaces: BTreeMap<Arc<str>, usize>,
    /// How many participating pods hold each address (an address two pods hold stays in a set
    /// while either gives it).
    addresses: HashMap<IpAddr, u32>,
    /// How many addresses of each family participating pods hold: [IPv4, IPv6].
    families: [usize; 2],
    /// The local part must be rendered again in full before the next [`LiveNode::flush`]
    /// returns.
    dirty: bool,
    /// The tiers must be rendered again in full before the next flush returns.
    tiers_dirty: bool,
    /// The tiers and directions the base chains of the last full render of the local part
    /// dispatch to: a ClusterNetworkPolicy change that moves them renders the local part again.
    layout: Layout,
    /// The NetworkPolicy part of the local part, kept piece by piece; `None`: built when it
    /// changes.
    local_part: Option<LocalPart>,
    /// With ClusterNetworkPolicies, what the tiers' peers maps are made of, kept element by
    /// element between full renders of the tiers; `None`: the tiers are to be rendered again in
    /// full (or the cluster has none).
    peers: Option<PeerBook>,
    /// The objects the last full render of the tiers put in the ruleset, which the next one
    /// replaces.
    tier_objects: TierObjects,
    /// Cluster-wide sets no longer in the ruleset, their elements kept up to date, so that a set
    /// that comes back (a local pod relabelled back and forth, say) need not be resolved again;
    /// bounded by [`RETIRED_SETS`] and [`RETIRED_ELEMENTS`].
    retired: BTreeMap<String, (Set, SetSource)>,
    /// With ClusterNetworkPolicies, what the tiers read of each local pod (see [`TierSubject`]),
    /// valid while the ClusterNetworkPolicies are those of the last full render of the tiers, or
    /// differ from them only by policies that judge no local pod: an entry goes when its pod
    /// changes, or its namespace or a NetworkPolicy of it does.
    subjects: BTreeMap<ObjectRef, SubjectMemo>,
    /// The names of the ClusterNetworkPolicies in evaluation order, as `subjects` number them.
    ordered_names: Vec<String>,
    /// A ClusterNetworkPolicy that judges no local pod, before or after, came, went or changed
    /// since the last flush: `subjects` are to be numbered again, and nothing else rendered.
    reordered: bool,
    /// Namespaces of the node's pods that changed since the last flush: their pods' entries in
    /// `subjects` are stale, and the next flush renders what the tiers decide for them again.
    stale_subjects: BTreeSet<Arc<str>>,
    /// ClusterNetworkPolicies edited since the last flush in ways that keep the tiers' order
    /// (see [`tiers::keeps_order`]), with the rules whose ports, action or name each edit changed (indexes, ingress
    /// then egress): the next flush renders again only what those rules decide, unless the tiers
    /// are rendered in full anyway.
    cluster_edits: BTreeMap<String, [BTreeSet<usize>; 2]>,
    /// ClusterNetworkPolicies whose rules' peers were edited since the last flush in ways that
    /// keep the tiers' order (see [`tiers::keeps_order`]): the next flush gives their rules
    /// the regions of their new peers and classifies again the addresses that moves, unless the
    /// tiers are rendered in full anyway.
    region_edits: BTreeSet<String>,
    /// ClusterNetworkPolicies changed since the last flush in ways that move their rules in the
    /// tiers' evaluation order (added, deleted, another priority, rule count, Pass rule or ingress
    /// named port), judging some pod of this node before or after: the next flush takes them out
    /// of the tiers' universes and puts them back as they are now ([`super::universe`]), unless
    /// the tiers are rendered in full anyway.
    moved: BTreeSet<String>,
    /// Pods of this node (before or now) changed since the last flush.
    local_pods: BTreeSet<ObjectRef>,
    /// Policies of namespaces with pods on this node changed since the last flush.
    local_policies: BTreeSet<ObjectRef>,
    /// What changed since the last flush; `None`: anything may have.
    touched: Option<Touched>,
    /// What the work since the last flush was.
    stats: LiveStats,
}

/// What a [`LiveNode`] did since the last [`LiveNode::flush`], for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Events applied.
    pub events: usize,
    /// Whether the local part was rendered again in full.
    pub rendered: bool,
    /// Cluster-wide sets resolved afresh (by a scan of the cluster's pods).
    pub resolved_sets: usize,
    /// Set elements added or removed by pod and namespace events, and elements of the tiers'
    /// peers maps added or removed by pod, namespace and Node events and by ClusterNetworkPolicy
    /// peers edits.
    pub element_changes: usize,
    /// Pieces of the local part (a policy's rules in one direction, a group chain) rendered on
    /// their own.
    pub pieces: usize,
    /// Whether the tiers were rendered again in full (with ClusterNetworkPolicies): their peer
    /// regions resolved through an index over the cluster, the address space classified again.
    pub tiers_rendered: bool,
    /// Changes to the tiers' subjects sets and class decision-map elements made over the classes
    /// of the last full render, for a change of the node's own pods, and ClusterNetworkPolicy rule
    /// chains rendered or removed on their own (a rules edit, a policy entering or leaving the
    /// tiers' order).
    pub tier_pieces: usize,
}

/// What the tiers read of a local pod (see [`TierSubject`]), kept between flushes: whether
/// NetworkPolicies isolate it (ingress, egress), and by tier and direction the
/// ClusterNetworkPolicies that judge it, as positions in evaluation order
/// ([`ordered_cluster_policies`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubjectMemo {
    isolated: [bool; 2],
    judging: [Box<[u32]>; 4],
}

impl SubjectMemo {
    /// What the tiers read of `pod`, planned afresh (`ordered`: as
    /// [`ordered_cluster_policies`] gives them).
    fn plan(
        cluster: &ClusterState,
        pod: &Pod,
        ordered: &[&ClusterNetworkPolicy],
        audit_all: bool,
    ) -> Self {
        let local = local_pod(cluster, pod, ordered, audit_all);
        let subject = TierSubject::of(&local);
        // The policies judging the pod are a subsequence of `ordered`.
        let judging = subject.judging.map(|policies| {
            let mut positions = Vec::with_capacity(policies.len());
            let mut held = policies.iter().peekable();
            for (at, policy) in ordered.iter().enumerate() {
                if held.peek().is_some_and(|h| std::ptr::eq(**h, *policy)) {
                    held.next();
                    positions.push(at as u32);
                }
            }
            positions.into_boxed_slice()
        });
        Self {
            isolated: subject.isolated,
            judging,
        }
    }

    /// The subject `pod` is by this memo.
    fn subject<'c>(&self, pod: &'c Pod, ordered: &[&'c ClusterNetworkPolicy]) -> TierSubject<'c> {
        TierSubject {
            pod,
            isolated: self.isolated,
            judging: self.judging.each_ref().map(|positions| {
                positions
                    .iter()
                    .filter_map(|at| ordered.get(*at as usize).copied())
                    .collect()
            }),
        }
    }
}

/// The names of what a full render of the tiers puts in a ruleset, and of the class chains (with
/// their decision maps) added to the tiers since: what the next full render replaces.
#[derive(Debug, Clone, Default)]
struct TierObjects {
    chains: BTreeSet<String>,
    sets: BTreeSet<String>,
    decision_maps: BTreeSet<String>,
    counters: BTreeSet<String>,
}

impl TierObjects {
    /// Counts in class chains (with their decision maps) added since the last full render of the
    /// tiers: the next one replaces them too.
    fn add(&mut self, added: Vec<(String, [String; 2])>) {
        for (chain, maps) in added {
            self.chains.insert(chain);
            self.decision_maps.extend(maps);
        }
    }
}

impl LiveNode {
    /// Compiles `node` in full from `cluster` (as [`super::compile_node_with`] does) and keeps
    /// what later events need. The first [`LiveNode::flush`] reports everything as touched.
    pub fn new(cluster: &ClusterState, node: &str, options: CompileOptions) -> Self {
        let index = ClusterIndex::new(cluster);
        let plan = ClusterPlan::new(index);
        let node_plan = plan.node_with(node, options.audit_all);
        // Rendered whole for its cluster-wide sets, resolved through the index, which the local
        // part built below takes over; the tiers are rendered on their own after it.
        let (ruleset, origins, sources) = Renderer::new(plan.index(), node_plan, options)
            .without_tiers()
            .render();
        let mut live = Self {
            node: node.to_string(),
            options,
            ruleset,
            origins,
            origins_generation: 0,
            sources,
            local: BTreeSet::new(),
            local_namespaces: BTreeMap::new(),
            addresses: HashMap::new(),
            families: [0, 0],
            dirty: false,
            tiers_dirty: false,
            layout: Layout::default(),
            local_part: None,
            peers: None,
            tier_objects: TierObjects::default(),
            retired: BTreeMap::new(),
            subjects: BTreeMap::new(),
            ordered_names: Vec::new(),
            reordered: false,
            stale_subjects: BTreeSet::new(),
            cluster_edits: BTreeMap::new(),
            region_edits: BTreeSet::new(),
            moved: BTreeSet::new(),
            local_pods: BTreeSet::new(),
            local_policies: BTreeSet::new(),
            touched: None,
            stats: LiveStats::default(),
        };
        for pod in cluster.participating_pods() {
            live.count(pod, true);
        }
        live.local_pods.clear();
        // The same local part, rendered piece by piece (its sets carried over), and the tiers on
        // their own: from here on they change piece by piece.
        live.build_local(cluster);
        if !cluster.cluster_policies().is_empty() {
            live.render_tiers(cluster, Some(plan.index()));
        }
        live.stats = LiveStats::default();
        live
    }

    /// The node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// What the ruleset does besides enforcing.
    pub fn options(&self) -> &CompileOptions {
        &self.options
    }

    /// The ruleset as of the last [`LiveNode::flush`].
    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// The origins of the ruleset's counters, as of the last [`LiveNode::flush`].
    pub fn origins(&self) -> &Origins {
        &self.origins
    }

    /// A number that changes whenever [`LiveNode::origins`] may have (so that a caller sharing
    /// them need not compare).
    pub fn origins_generation(&self) -> u64 {
        self.origins_generation
    }

    /// Takes in the change of one object: `old` is what the cluster held before (`None`: it did
    /// not exist), and `cluster` holds it now (or no longer).
    pub fn changed(
        &mut self,
        cluster: &ClusterState,
        kind: Kind,
        key: &ObjectRef,
        old: Option<&crate::object::Object>,
    ) {
        use crate::object::Object;
        self.stats.events += 1;
        match kind {
            Kind::Pod => {
                let old = match old {
                    Some(Object::Pod(p)) => Some(p),
                    _ => None,
                };
                self.pod_changed(cluster, old, key);
            }
            Kind::Namespace => {
                let old = match old {
                    Some(Object::Namespace(n)) => Some(n),
                    _ => None,
                };
                self.namespace_changed(cluster, old, &key.name);
            }
            Kind::NetworkPolicy => {
                let old = match old {
                    Some(Object::Policy(p)) => Some(p),
                    _ => None,
                };
                self.policy_changed(cluster, old, key);
            }
            // An edit that keeps the subjects renders again what it changes (the regions of the
            // rules whose peers changed, what the others decide); any other renders the tiers
            // again, and the rest too if their place in the base chains moves.
            Kind::ClusterNetworkPolicy => {
                let old = match old {
                    Some(Object::ClusterPolicy(p)) => Some(p),
                    _ => None,
                };
                let new = cluster.cluster_policy(&key.name);
                match (old, new) {
                    (Some(old), Some(new)) if old == new => {}
                    _ if self.judges_no_local_pod(cluster, old, new) => self.reordered = true,
                    (Some(old), Some(new)) if tiers::keeps_order(old, new) => {
                        if !tiers::same_regions(old, new) {
                            self.region_edits.insert(new.name.clone());
                        }
                        if old.subject != new.subject {
                            // Which of the node's pods it judges may change: each is planned
                            // again, and those whose plan differs refreshed.
                            self.stale_subjects
                                .extend(self.local_namespaces.keys().cloned());
                        }
                        let edited = self.cluster_edits.entry(new.name.clone()).or_default();
                        for (rules, direction) in edited.iter_mut().zip(Direction::BOTH) {
                            let (was, now) = (old.rules(direction), new.rules(direction));
                            rules.extend(
                                (0..now.len())
                                    .filter(|i| !tiers::decides_alike(&was[*i], &now[*i])),
                            );
                        }
                    }
                    _ if self.tiers_stale() => self.tiers_dirty = true,
                    _ => {
                        self.moved.insert(key.name.to_string());
                    }
                }
            }
            // Nodes are peers of the tiers only.
            Kind::Node if !cluster.cluster_policies().is_empty() => {
                let old = match old {
                    Some(Object::Node(n)) => Some(n),
                    _ => None,
                };
                self.node_changed(cluster, old, cluster.node(&key.name));
            }
            // Workloads are what offline review reads; the ruleset follows pods.
            _ => {}
        }
    }

    /// A pod changed from `old` to what `cluster` holds under `key`.
    pub fn pod_changed(&mut self, cluster: &ClusterState, old: Option<&Pod>, key: &ObjectRef) {
        let old = old.filter(|p| p.participates());
        let new = cluster.pod(key).filter(|p| p.participates());
        if old == new {
            return;
        }
        let families = self.family_set();
        if let Some(p) = old {
            self.count(p, false);
        }
        if let Some(p) = new {
            self.count(p, true);
        }
        if self.family_set() != families {
            self.dirty = true;
        }
        if !cluster.cluster_policies().is_empty() {
            let addresses: Vec<IpAddr> =
                old.iter().chain(&new).flat_map(|p| p.ips.clone()).collect();
            self.refresh_peers(cluster, &addresses, new);
        }
        let namespace_labels = namespace_labels(cluster, &key.namespace);
        let gives = |source: &SetSource, pod: Option<&Pod>| {
            pod.map(|p| source.elements(p, &namespace_labels))
                .unwrap_or_default()
        };
        let sources = std::mem::take(&mut self.sources);
        for (name, source) in &sources {
            let (before, after) = (gives(source, old), gives(source, new));
            self.replace_elements(cluster, name, source, before, after, Some(key));
        }
        self.sources = sources;
        let mut retired = std::mem::take(&mut self.retired);
        for (set, source) in retired.values_mut() {
            let (before, after) = (gives(source, old), gives(source, new));
            self.replace_retired(cluster, set, source, before, after, Some(key));
        }
        self.retired = retired;
    }

    /// A namespace changed from `old` to what `cluster` holds under `name` (a namespace that pods
    /// or policies are in exists implicitly, with only its name label).
    pub fn namespace_changed(
        &mut self,
        cluster: &ClusterState,
        old: Option<&Namespace>,
        name: &str,
    ) {
        let before = old
            .map(|n| n.labels.clone())
            .unwrap_or_else(|| Namespace::new(name, Labels::new()).labels);
        let after = namespace_labels(cluster, name);
        let tiers = !cluster.cluster_policies().is_empty();
        // The tiers' selectors see only the namespaces the cluster holds.
        let held = old.is_some() != cluster.namespace(name).is_some();
        if before == after && !(tiers && held) {
            return;
        }
        let first = ObjectRef::new(name, "");
        let pods: Vec<&Pod> = cluster
            .pods()
            .range(first..)
            .take_while(|(id, _)| &*id.namespace == name)
            .map(|(_, p)| p)
            .filter(|p| p.participates())
            .collect();
        if tiers {
            if let Some((namespace, _)) = self.local_namespaces.get_key_value(name) {
                // The tiers' subjects among the node's pods may change.
                self.stale_subjects.insert(Arc::clone(namespace));
            }
            for pod in &pods {
                self.refresh_peers(cluster, &pod.ips, Some(pod));
            }
        }
        let sources = std::mem::take(&mut self.sources);
        // A set none of whose namespace selectors reads the change gets the same elements.
        for (set, source) in sources
            .iter()
            .filter(|(_, s)| s.relabel_matters(&before, &after))
        {
            for pod in &pods {
                let was = source.elements(pod, &before);
                let is = source.elements(pod, &after);
                self.replace_elements(cluster, set, source, was, is, Some(&pod.id));
            }
        }
        self.sources = sources;
        let mut retired = std::mem::take(&mut self.retired);
        for (set, source) in retired
            .values_mut()
            .filter(|(_, s)| s.relabel_matters(&before, &after))
        {
            for pod in &pods {
                let was = source.elements(pod, &before);
                let is = source.elements(pod, &after);
                self.replace_retired(cluster, set, source, was, is, Some(&pod.id));
            }
        }
        self.retired = retired;
    }

    /// A NetworkPolicy changed from `old` to what `cluster` holds under `key`.
    pub fn policy_changed(
        &mut self,
        cluster: &ClusterState,
        old: Option<&Policy>,
        key: &ObjectRef,
    ) {
        if old == cluster.policies().get(key) {
            return;
        }
        // Only a policy of a namespace with pods on this node can select them.
        if self.local_namespaces.contains_key(&key.namespace) {
            self.local_policies.insert(key.clone());
        }
    }

    /// Brings the ruleset up to date with every change taken in (rendering pieces of the local
    /// part, or all of it, or the tiers, as the changes need) and returns what changed since the last flush, for
    /// [`crate::nft::transaction::Transaction::diff_touched`]; `None`: anything may have (compare
    /// everything), as after [`LiveNode::new`].
    pub fn flush(&mut self, cluster: &ClusterState) -> (Option<Touched>, LiveStats) {
        let reordered = std::mem::take(&mut self.reordered);
        if !self.moved.is_empty() {
            // Every pod is planned again in the new order, below.
            if Layout::of(cluster) != self.layout {
                self.tiers_dirty = true;
            }
        } else if reordered {
            self.renumber_subjects(cluster);
        }
        if self.tiers_dirty && !self.dirty && Layout::of(cluster) != self.layout {
            self.dirty = true;
        }
        let changed = self.local_changed();
        let tiers = !cluster.cluster_policies().is_empty();
        if !tiers {
            // Nothing to keep of the tiers.
            self.peers = None;
            self.tier_objects = TierObjects::default();
            self.subjects.clear();
            self.ordered_names.clear();
        }
        let mut rebuilt = false;
        if changed {
            let families = self.family_set();
            match self.local_part.take() {
                Some(mut part) if !self.dirty && part.families() == &families => {
                    let mut out = Out::new(
                        &mut self.ruleset,
                        &mut self.origins,
                        &mut self.sources,
                        &mut self.touched,
                    );
                    out.stash = std::mem::take(&mut self.retired);
                    part.apply(cluster, &self.local_pods, &self.local_policies, &mut out);
                    self.retired = std::mem::take(&mut out.stash);
                    self.stats.pieces += out.rendered;
                    self.stats.resolved_sets += out.resolved_sets;
                    if out.origins_changed {
                        self.origins_generation += 1;
                    }
                    self.local_part = Some(part);
                }
                _ => {
                    self.build_local(cluster);
                    self.stats.rendered = true;
                    rebuilt = true;
                }
            }
        }
        if tiers {
            if rebuilt || self.tiers_dirty || self.peers.is_none() {
                self.render_tiers(cluster, None);
            } else {
                self.refresh_tiers(cluster, changed);
            }
        }
        self.dirty = false;
        self.tiers_dirty = false;
        self.local_pods.clear();
        self.local_policies.clear();
        self.stale_subjects.clear();
        self.cluster_edits.clear();
        self.region_edits.clear();
        self.moved.clear();
        self.bound_retired();
        let touched = self.touched.replace(Touched::default());
        (touched, std::mem::take(&mut self.stats))
    }

    /// Whether the local part is to change at the next flush.
    fn local_changed(&self) -> bool {
        self.dirty || !self.local_pods.is_empty() || !self.local_policies.is_empty()
    }

    /// Whether the tiers are to be rendered in full at the next flush anyway (then their peers are
    /// not kept up to date in between).
    fn tiers_stale(&self) -> bool {
        self.dirty || self.tiers_dirty || self.peers.is_none()
    }

    /// Classifies `addresses` again in the tiers' peers maps, now that `holder` (if any) is the
    /// participating pod that holds them; an address another pod holds too, or a change the
    /// peers maps cannot take element by element, renders the tiers in full at the next flush.
    fn refresh_peers(
        &mut self,
        cluster: &ClusterState,
        addresses: &[IpAddr],
        holder: Option<&Pod>,
    ) {
        if self.tiers_stale() {
            self.tiers_dirty = true;
            return;
        }
        let shared = addresses.iter().any(|ip| {
            let itself = holder.is_some_and(|p| p.ips.contains(ip));
            self.addresses.get(ip).copied().unwrap_or(0) > u32::from(itself)
        });
        let Some(book) = self.peers.take().filter(|_| !shared) else {
            self.tiers_dirty = true;
            return;
        };
        let holder = holder.map(|p| {
            let labels = cluster.namespace(&p.id.namespace).map(|n| &n.labels);
            (p, labels)
        });
        self.refresh_book(cluster, book, addresses, holder);
    }

    /// Refreshes `addresses` in `book` (taken out of `self.peers`) and puts it back; a structural
    /// change drops it and renders the tiers in full at the next flush.
    fn refresh_book(
        &mut self,
        cluster: &ClusterState,
        mut book: PeerBook,
        addresses: &[IpAddr],
        holder: Option<Holder<'_>>,
    ) {
        let refreshed = book.refresh(
            &mut self.ruleset,
            &mut self.touched,
            (cluster, addresses),
            holder,
        );
        self.tier_objects.add(book.take_added());
        match refreshed {
            Ok(changes) => {
                self.stats.element_changes += changes;
                self.peers = Some(book);
            }
            Err(Structural) => self.tiers_dirty = true,
        }
    }

    /// A Node changed from `old` to `new` (the cluster has ClusterNetworkPolicies).
    fn node_changed(&mut self, cluster: &ClusterState, old: Option<&Node>, new: Option<&Node>) {
        if old == new {
            return;
        }
        // An address a pod holds too may resolve named ports differently: rare, rendered in full.
        let shared = old
            .into_iter()
            .chain(new)
            .flat_map(|n| &n.addresses)
            .any(|ip| self.addresses.contains_key(ip));
        if self.tiers_stale() || shared {
            self.tiers_dirty = true;
            return;
        }
        let Some(mut book) = self.peers.take() else {
            self.tiers_dirty = true;
            return;
        };
        let addresses = book.node_changed(old, new);
        self.refresh_book(cluster, book, &addresses, None);
    }

    /// The address families of the participating pods, IPv4 alone when there are none (as
    /// [`ClusterState::families`] gives them).
    fn family_set(&self) -> BTreeSet<Family> {
        let mut set = BTreeSet::new();
        if self.families[0] > 0 {
            set.insert(Family::V4);
        }
        if self.families[1] > 0 {
            set.insert(Family::V6);
        }
        if set.is_empty() {
            set.insert(Family::V4);
        }
        set
    }

    /// Counts a participating pod in (`add`) or out.
    fn count(&mut self, pod: &Pod, add: bool) {
        for ip in &pod.ips {
            let slot = match Family::of(ip) {
                Family::V4 => 0,
                Family::V6 => 1,
            };
            if add {
                self.families[slot] += 1;
                *self.addresses.entry(*ip).or_default() += 1;
            } else {
                self.families[slot] = self.families[slot].saturating_sub(1);
                if let Some(n) = self.addresses.get_mut(ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.addresses.remove(ip);
                    }
                }
            }
        }
        if pod.node.as_deref() == Some(self.node.as_str()) {
            self.local_pods.insert(pod.id.clone());
            let namespace = pod.id.namespace.clone();
            if add {
                self.local.insert(pod.id.clone());
                *self.local_namespaces.entry(namespace).or_default() += 1;
            } else {
                self.local.remove(&pod.id);
                if let Some(n) = self.local_namespaces.get_mut(&namespace) {
                    *n -= 1;
                    if *n == 0 {
                        self.local_namespaces.remove(&namespace);
                    }
                }
            }
        }
    }

    /// One pod (`pod`, or none) gave `before` to the set `name` and gives `after` now: the
    /// elements it no longer gives leave the set unless another pod still gives them.
    fn replace_elements(
        &mut self,
        cluster: &ClusterState,
        name: &str,
        source: &SetSource,
        before: Vec<SetElement>,
        after: Vec<SetElement>,
        pod: Option<&ObjectRef>,
    ) {
        if before == after {
            return;
        }
        let gone = self.leaving(cluster, source, &before, &after, pod);
        let Some(set) = self.ruleset.sets.get_mut(name) else {
            return;
        };
        for element in gone {
            if set.elements.remove(&element) {
                self.stats.element_changes += 1;
                if let Some(t) = &mut self.touched {
                    t.element_removed(name, element);
                }
            }
        }
        for element in after {
            if set.elements.insert(element) {
                self.stats.element_changes += 1;
                if let Some(t) = &mut self.touched {
                    t.element_added(name, element);
                }
            }
        }
    }

    /// As [`LiveNode::replace_elements`], for a retired set (nothing is recorded).
    fn replace_retired(
        &self,
        cluster: &ClusterState,
        set: &mut Set,
        source: &SetSource,
        before: Vec<SetElement>,
        after: Vec<SetElement>,
        pod: Option<&ObjectRef>,
    ) {
        if before == after {
            return;
        }
        for element in self.leaving(cluster, source, &before, &after, pod) {
            set.elements.remove(&element);
        }
        set.elements.extend(after);
    }

    /// Of the elements one pod (`pod`, or none) gave a set of `source`, those that leave it now
    /// that the pod gives `after`: not given again, and given by no other pod.
    fn leaving(
        &self,
        cluster: &ClusterState,
        source: &SetSource,
        before: &[SetElement],
        after: &[SetElement],
        pod: Option<&ObjectRef>,
    ) -> Vec<SetElement> {
        before
            .iter()
            .filter(|e| !after.contains(e) && !self.still_given(cluster, source, e, pod))
            .copied()
            .collect()
    }

    /// Keeps the retired sets within bounds (dropping them all past one: they are a cache).
    fn bound_retired(&mut self) {
        let elements: usize = self.retired.values().map(|(s, _)| s.elements.len()).sum();
        if self.retired.len() > RETIRED_SETS || elements > RETIRED_ELEMENTS {
            self.retired.clear();
        }
    }

    /// Whether a participating pod other than `except` gives `element` to a set of `source`: only
    /// possible when two pods hold its address, which is rare and so checked by a scan.
    fn still_given(
        &self,
        cluster: &ClusterState,
        source: &SetSource,
        element: &SetElement,
        except: Option<&ObjectRef>,
    ) -> bool {
        let (SetElement::Addr(ip) | SetElement::AddrProtoPort(ip, _, _)) = *element;
        let holders = self.addresses.get(&ip).copied().unwrap_or(0);
        let itself = except
            .and_then(|key| cluster.pod(key))
            .is_some_and(|p| p.participates() && p.ips.contains(&ip));
        if holders <= u32::from(itself) {
            return false;
        }
        cluster
            .participating_pods()
            .filter(|p| p.ips.contains(&ip) && Some(&p.id) != except)
            .any(|p| {
                source
                    .elements(p, &namespace_labels(cluster, &p.id.namespace))
                    .contains(element)
            })
    }

    /// Builds the local part again piece by piece, keeping it for the events to come, with the
    /// cluster-wide sets carried over.
    fn build_local(&mut self, cluster: &ClusterState) {
        self.layout = Layout::of(cluster);
        let families = self.family_set();
        let skeleton = NodePlan {
            node: self.node.clone(),
            families: families.clone(),
            pods: Vec::new(),
        };
        let (ruleset, mut origins, mut sources) =
            Renderer::deferred(cluster, skeleton, self.options).render();
        let mut old = std::mem::replace(&mut self.ruleset, ruleset);
        let old_sources = std::mem::take(&mut self.sources);
        let mut stash = BTreeMap::new();
        let old_sets = std::mem::take(&mut old.sets);
        let set_names: BTreeSet<String> = old_sets.keys().cloned().collect();
        for (name, set) in old_sets {
            if let Some(source) = old_sources.get(&name) {
                stash.insert(name, (set, source.clone()));
            }
        }
        stash.append(&mut self.retired);
        let mut unrecorded = None;
        let mut out = Out::new(
            &mut self.ruleset,
            &mut origins,
            &mut sources,
            &mut unrecorded,
        );
        out.stash = stash;
        let part = LocalPart::build(cluster, &self.node, self.options, families, &mut out);
        let carried = std::mem::take(&mut out.carried);
        self.retired = std::mem::take(&mut out.stash);
        self.stats.pieces += out.rendered;
        self.stats.resolved_sets += out.resolved_sets;
        self.local_part = Some(part);
        self.sources = sources;
        if let Some(touched) = &mut self.touched {
            let new = &self.ruleset;
            touched.chains.extend(names(&old.chains, &new.chains));
            touched.maps.extend(names(&old.maps, &new.maps));
            touched
                .decision_maps
                .extend(names(&old.decision_maps, &new.decision_maps));
            touched.counters.extend(names(&old.counters, &new.counters));
            let all: BTreeSet<&String> = set_names.iter().chain(new.sets.keys()).collect();
            for name in all {
                // A set carried over from the previous ruleset is as its tracked changes say; one
                // taken from the retired sets is new to it.
                if !(carried.contains(name) && set_names.contains(name)) {
                    touched.set_elements.remove(name);
                    touched.sets.insert(name.clone());
                }
            }
        }
        if self.origins != origins {
            self.origins = origins;
            self.origins_generation += 1;
        }
    }

    /// What the tiers read of each participating pod of this node: from `subjects`, planned
    /// again for the pods that changed since the last flush and those of namespaces whose labels
    /// or NetworkPolicies did.
    fn tier_subjects<'c>(&mut self, cluster: &'c ClusterState) -> Vec<TierSubject<'c>> {
        let ordered = ordered_cluster_policies(cluster);
        self.ordered_names = ordered.iter().map(|p| p.name.clone()).collect();
        let stale = self.stale_namespaces();
        let audit_all = self.options.audit_all;
        // `local` and the memos are both in key order: walked side by side, the memos of pods no
        // longer local, or stale, fall out.
        let mut memos = std::mem::take(&mut self.subjects).into_iter().peekable();
        let mut kept = BTreeMap::new();
        let mut subjects = Vec::with_capacity(self.local.len());
        for key in &self.local {
            while memos.next_if(|(k, _)| k < key).is_some() {}
            let memo = memos
                .next_if(|(k, _)| k == key)
                .map(|(_, memo)| memo)
                .filter(|_| !self.local_pods.contains(key) && !stale.contains(&*key.namespace));
            let Some(pod) = cluster.pod(key) else {
                continue;
            };
            let memo = memo.unwrap_or_else(|| SubjectMemo::plan(cluster, pod, &ordered, audit_all));
            subjects.push(memo.subject(pod, &ordered));
            kept.insert(key.clone(), memo);
        }
        self.subjects = kept;
        subjects
    }

    /// Whether a ClusterNetworkPolicy going from `old` to `new` (`None`: absent) judges no local
    /// pod either way, while the tiers are kept piece by piece: no kept subject is judged by `old`,
    /// and `new`'s subject holds no local pod. Then its rules are in no class, chain or map here,
    /// and only the evaluation order the subjects are numbered by may move (the base chains' place
    /// of the tiers is checked at the flush).
    fn judges_no_local_pod(
        &self,
        cluster: &ClusterState,
        old: Option<&ClusterNetworkPolicy>,
        new: Option<&ClusterNetworkPolicy>,
    ) -> bool {
        if self.tiers_stale() {
            return false;
        }
        let judged_before = old.is_some_and(|old| {
            let Some(at) = self.ordered_names.iter().position(|n| *n == old.name) else {
                return true;
            };
            let at = at as u32;
            self.subjects
                .values()
                .any(|memo| memo.judging.iter().any(|positions| positions.contains(&at)))
        });
        let holds_now = new.is_some_and(|new| {
            self.local
                .iter()
                .filter_map(|key| cluster.pod(key))
                .any(|pod| subject_holds(cluster, pod, &new.subject))
        });
        !judged_before && !holds_now
    }

    /// Numbers the kept subjects' policies again in the evaluation order of `cluster` after
    /// ClusterNetworkPolicies that judge no local pod came, went or moved; renders the tiers in
    /// full at this flush if a kept subject was judged by one that went.
    fn renumber_subjects(&mut self, cluster: &ClusterState) {
        let ordered = ordered_cluster_policies(cluster);
        let now: HashMap<&str, u32> = ordered
            .iter()
            .enumerate()
            .map(|(at, p)| (p.name.as_str(), at as u32))
            .collect();
        let moved: Vec<Option<u32>> = self
            .ordered_names
            .iter()
            .map(|name| now.get(name.as_str()).copied())
            .collect();
        for memo in self.subjects.values_mut() {
            for positions in &mut memo.judging {
                let renumbered: Option<Box<[u32]>> = positions
                    .iter()
                    .map(|at| moved.get(*at as usize).copied().flatten())
                    .collect();
                match renumbered {
                    Some(renumbered) => *positions = renumbered,
                    None => self.tiers_dirty = true,
                }
            }
        }
        self.ordered_names = ordered.iter().map(|p| p.name.clone()).collect();
        if Layout::of(cluster) != self.layout {
            self.tiers_dirty = true;
        }
    }

    /// Numbers the kept subjects' policies again in the evaluation order of `cluster` after the
    /// ClusterNetworkPolicies `moved` came, went or moved in it (see [`LiveNode::moved`]): each
    /// memo loses the moved policies, and gains them where their subject holds its pod now (with
    /// rules in the slot's direction), as [`SubjectMemo::plan`] would find; returns the pods whose
    /// memo so changed. Only the moved policies' subjects are read.
    fn renumber_moved(
        &mut self,
        cluster: &ClusterState,
        moved: &BTreeSet<String>,
    ) -> BTreeSet<ObjectRef> {
        let mut judged = BTreeSet::new();
        if moved.is_empty() {
            return judged;
        }
        let ordered = ordered_cluster_policies(cluster);
        let now: HashMap<&str, u32> = ordered
            .iter()
            .enumerate()
            .map(|(at, p)| (p.name.as_str(), at as u32))
            .collect();
        let before = std::mem::take(&mut self.ordered_names);
        for (key, memo) in &mut self.subjects {
            let mut lost = false;
            for positions in &mut memo.judging {
                let renumbered: Box<[u32]> = positions
                    .iter()
                    .filter_map(|at| {
                        let name = before.get(*at as usize)?;
                        if moved.contains(name) {
                            lost = true;
                            return None;
                        }
                        now.get(name.as_str()).copied()
                    })
                    .collect();
                *positions = renumbered;
            }
            if lost {
                judged.insert(key.clone());
            }
        }
        for policy in moved.iter().filter_map(|name| cluster.cluster_policy(name)) {
            let Some(&at) = now.get(policy.name.as_str()) else {
                continue;
            };
            for (key, memo) in &mut self.subjects {
                let Some(pod) = cluster.pod(key) else {
                    continue;
                };
                if !subject_holds(cluster, pod, &policy.subject) {
                    continue;
                }
                for (s, (tier, direction)) in TierSubject::SLOTS.iter().enumerate() {
                    if policy.tier != *tier || policy.rules(*direction).is_empty() {
                        continue;
                    }
                    let mut positions = memo.judging[s].to_vec();
                    if let Err(i) = positions.binary_search(&at) {
                        positions.insert(i, at);
                    }
                    memo.judging[s] = positions.into_boxed_slice();
                }
                judged.insert(key.clone());
            }
        }
        self.ordered_names = ordered.iter().map(|p| p.name.clone()).collect();
        judged
    }

    /// The namespaces whose pods' subjects are to be planned again: those whose labels changed,
    /// and those whose NetworkPolicies did.
    fn stale_namespaces(&self) -> BTreeSet<Arc<str>> {
        self.stale_subjects
            .iter()
            .cloned()
            .chain(self.local_policies.iter().map(|p| Arc::clone(&p.namespace)))
            .collect()
    }

    /// The participating pods of this node whose subjects may differ since the last flush, each
    /// with what the tiers read of it now (`None`: no longer local), in key order; brings
    /// `subjects` up to date. A pod of a stale namespace is left out when it did not change and
    /// is planned as before; one of `judged` (whose memo [`LiveNode::renumber_moved`] changed)
    /// is in.
    fn changed_subjects<'c>(
        &mut self,
        cluster: &'c ClusterState,
        judged: &BTreeSet<ObjectRef>,
    ) -> Vec<(ObjectRef, Option<TierSubject<'c>>)> {
        let ordered = ordered_cluster_policies(cluster);
        let audit_all = self.options.audit_all;
        let stale = self.stale_namespaces();
        let mut keys: BTreeSet<ObjectRef> = self.local_pods.clone();
        keys.extend(judged.iter().cloned());
        for namespace in &stale {
            let from = ObjectRef {
                namespace: Arc::clone(namespace),
                name: Arc::from(""),
            };
            keys.extend(
                self.local
                    .range(&from..)
                    .take_while(|k| k.namespace == *namespace)
                    .cloned(),
            );
        }
        let mut changed = Vec::with_capacity(keys.len());
        for key in keys {
            let pod = cluster.pod(&key).filter(|_| self.local.contains(&key));
            let Some(pod) = pod else {
                self.subjects.remove(&key);
                changed.push((key, None));
                continue;
            };
            // A memo `renumber_moved` brought up to date stands, unless the pod or its namespace
            // changed too.
            let current = judged.contains(&key)
                && !self.local_pods.contains(&key)
                && !stale.contains(&key.namespace);
            if let Some(memo) = self.subjects.get(&key).filter(|_| current) {
                changed.push((key.clone(), Some(memo.subject(pod, &ordered))));
                continue;
            }
            let memo = SubjectMemo::plan(cluster, pod, &ordered, audit_all);
            let subject = memo.subject(pod, &ordered);
            let same = !judged.contains(&key)
                && !self.local_pods.contains(&key)
                && self.subjects.get(&key) == Some(&memo);
            self.subjects.insert(key.clone(), memo);
            if !same {
                changed.push((key, Some(subject)));
            }
        }
        changed
    }

    /// Renders the tiers again in full (through `index`, or one built over the cluster) and
    /// replaces what the last full render of them put in the ruleset.
    fn render_tiers(&mut self, cluster: &ClusterState, index: Option<&ClusterIndex<'_>>) {
        let built;
        let index = match index {
            Some(index) => index,
            None => {
                built = ClusterIndex::new(cluster);
                &built
            }
        };
        // The ClusterNetworkPolicies may have changed: every pod is planned again.
        self.subjects.clear();
        let pods = self.tier_subjects(cluster);
        let layout = Layout::of(cluster);
        let families = self.family_set().into_iter().collect();
        let (rendered, origins, book) =
            tiers::render_tiers(index, families, self.options, &layout, &pods);
        self.peers = Some(book);
        self.stats.tiers_rendered = true;
        let old = std::mem::take(&mut self.tier_objects);
        let new = TierObjects {
            chains: rendered.chains.keys().cloned().collect(),
            sets: rendered.sets.keys().cloned().collect(),
            decision_maps: rendered.decision_maps.keys().cloned().collect(),
            counters: origins.keys().cloned().collect(),
        };
        let ruleset = &mut self.ruleset;
        for name in old.chains.difference(&new.chains) {
            ruleset.chains.remove(name);
        }
        for name in old.sets.difference(&new.sets) {
            ruleset.sets.remove(name);
        }
        for name in old.decision_maps.difference(&new.decision_maps) {
            ruleset.decision_maps.remove(name);
        }
        ruleset.chains.extend(rendered.chains);
        ruleset.sets.extend(rendered.sets);
        ruleset.decision_maps.extend(rendered.decision_maps);
        let mut origins_changed = false;
        for name in old.counters.difference(&new.counters) {
            ruleset.counters.remove(name);
            origins_changed |= self.origins.remove(name).is_some();
        }
        for (name, origin) in origins {
            ruleset.counters.insert(name.clone(), counter_of(&origin));
            if self.origins.get(&name) != Some(&origin) {
                self.origins.insert(name, origin);
                origins_changed = true;
            }
        }
        if origins_changed {
            self.origins_generation += 1;
        }
        if let Some(touched) = &mut self.touched {
            touched
                .chains
                .extend(old.chains.union(&new.chains).cloned());
            touched
                .counters
                .extend(old.counters.union(&new.counters).cloned());
            for name in old.sets.union(&new.sets) {
                // Compared in full: what was tracked of it no longer applies.
                touched.set_elements.remove(name);
                touched.sets.insert(name.clone());
            }
            for name in old.decision_maps.union(&new.decision_maps) {
                touched.decision_elements.remove(name);
                touched.decision_maps.insert(name.clone());
            }
        }
        self.tier_objects = new;
    }

    /// Gives the rules of the ClusterNetworkPolicies whose peers were edited since the last flush
    /// the regions of their new peers, classifying again the addresses that moves, over the peer
    /// classes of the last full render of the tiers and those added since; an edit that needs more
    /// renders the tiers in full. Returns whether they were not rendered in full (the rules and
    /// subjects are then still to be refreshed).
    fn refresh_regions(&mut self, cluster: &ClusterState) -> bool {
        if self.region_edits.is_empty() {
            return true;
        }
        let Some(mut book) = self.peers.take() else {
            self.render_tiers(cluster, None);
            return false;
        };
        for name in std::mem::take(&mut self.region_edits) {
            let refreshed = cluster
                .cluster_policy(&name)
                .ok_or(Structural)
                .and_then(|policy| {
                    regions::refresh_regions(
                        &mut self.ruleset,
                        &mut self.touched,
                        &mut book,
                        (cluster, &self.addresses),
                        policy,
                    )
                });
            self.tier_objects.add(book.take_added());
            match refreshed {
                Ok(changes) => self.stats.element_changes += changes,
                Err(Structural) => {
                    self.render_tiers(cluster, None);
                    return false;
                }
            }
        }
        self.peers = Some(book);
        true
    }

    /// Renders again what the rules of the ClusterNetworkPolicies edited since the last flush
    /// decide, over the peer classes of the last full render of the tiers; an edit that needs more
    /// renders them in full. Returns whether the tiers were not rendered in full (the subjects are
    /// then still to be refreshed).
    fn refresh_rules(&mut self, cluster: &ClusterState) -> bool {
        if self.cluster_edits.is_empty() {
            return true;
        }
        let Some(mut book) = self.peers.take() else {
            self.render_tiers(cluster, None);
            return false;
        };
        let mut origins_changed = false;
        for (name, edited) in std::mem::take(&mut self.cluster_edits) {
            let refreshed = cluster
                .cluster_policy(&name)
                .ok_or(Structural)
                .and_then(|policy| {
                    tiers::refresh_rules(
                        &mut self.ruleset,
                        &mut self.touched,
                        &mut book,
                        (cluster, &self.addresses, &self.options),
                        (policy, &edited),
                    )
                });
            self.tier_objects.add(book.take_added());
            let Ok(origins) = refreshed else {
                self.render_tiers(cluster, None);
                return false;
            };
            origins_changed |= self.put_rule_counters(origins);
        }
        if origins_changed {
            self.origins_generation += 1;
        }
        self.peers = Some(book);
        true
    }

    /// Puts the counters of ClusterNetworkPolicy rule chains rendered on their own (their chains
    /// are in the ruleset), with their origins, into the ruleset, recorded for the next full
    /// render of the tiers to replace; returns whether an origin changed.
    fn put_rule_counters(&mut self, origins: Vec<(String, Origin)>) -> bool {
        self.stats.tier_pieces += origins.len();
        let mut changed = false;
        for (chain, origin) in origins {
            self.ruleset
                .counters
                .insert(chain.clone(), counter_of(&origin));
            self.tier_objects.chains.insert(chain.clone());
            self.tier_objects.counters.insert(chain.clone());
            if self.origins.get(&chain) != Some(&origin) {
                self.origins.insert(chain, origin);
                changed = true;
            }
        }
        changed
    }

    /// Brings the tiers up to date piece by piece over the peer classes of the last full render
    /// of them (see the module documentation): the ClusterNetworkPolicies that leave a universe
    /// go first, then the edits that keep the order, then the policies that enter a universe
    /// take their place, the node's pods changed are refreshed, and the entering policies' rules
    /// get the regions of their peers. A change that needs more renders the tiers in full.
    fn refresh_tiers(&mut self, cluster: &ClusterState, changed: bool) {
        let moved = std::mem::take(&mut self.moved);
        let judged = self.renumber_moved(cluster, &moved);
        let subjects = (changed || !self.stale_subjects.is_empty() || !judged.is_empty())
            .then(|| self.changed_subjects(cluster, &judged));
        let (leaving, entering) = if subjects.is_some() || !moved.is_empty() {
            self.universe_changes(subjects.as_deref().unwrap_or_default(), &moved)
        } else {
            Default::default()
        };
        if !leaving.is_empty() {
            let Some(mut book) = self.peers.take() else {
                self.render_tiers(cluster, None);
                return;
            };
            let mut origins_changed = false;
            for (name, slots) in &leaving {
                let left = universe::leave(
                    &mut self.ruleset,
                    &mut self.touched,
                    &mut book,
                    (cluster, &self.addresses),
                    (name, slots),
                );
                self.tier_objects.add(book.take_added());
                let Ok((changes, chains)) = left else {
                    self.render_tiers(cluster, None);
                    return;
                };
                self.stats.element_changes += changes;
                self.stats.tier_pieces += chains.len();
                for chain in chains {
                    origins_changed |= self.origins.remove(&chain).is_some();
                    self.tier_objects.chains.remove(&chain);
                    self.tier_objects.counters.remove(&chain);
                }
            }
            if origins_changed {
                self.origins_generation += 1;
            }
            self.peers = Some(book);
        }
        if !(self.refresh_regions(cluster) && self.refresh_rules(cluster)) {
            return;
        }
        if !entering.is_empty() {
            let Some(mut book) = self.peers.take() else {
                self.render_tiers(cluster, None);
                return;
            };
            let mut origins_changed = false;
            for (name, slots) in &entering {
                let entered = cluster
                    .cluster_policy(name)
                    .ok_or(Structural)
                    .and_then(|policy| {
                        universe::enter(
                            &mut self.ruleset,
                            &mut self.touched,
                            &mut book,
                            (cluster, &self.options),
                            (policy, slots),
                        )
                    });
                let Ok(origins) = entered else {
                    self.render_tiers(cluster, None);
                    return;
                };
                origins_changed |= self.put_rule_counters(origins);
            }
            if origins_changed {
                self.origins_generation += 1;
            }
            self.peers = Some(book);
        }
        if let Some(subjects) = &subjects {
            if !self.refresh_subjects(cluster, subjects) {
                return;
            }
        }
        if !entering.is_empty() {
            // Now that the subjects judged by them are in their combinations.
            self.region_edits = entering.iter().map(|(name, _)| name.clone()).collect();
            self.refresh_regions(cluster);
        }
    }

    /// The ClusterNetworkPolicies to leave and to enter the tiers' universes at this flush, each
    /// with the tiers and directions where it does (of one tier): those `moved`, and those that
    /// start or stop judging some pod of the node by the pods `changed`.
    fn universe_changes(
        &self,
        changed: &[(ObjectRef, Option<TierSubject<'_>>)],
        moved: &BTreeSet<String>,
    ) -> (UniverseMoves, UniverseMoves) {
        let Some(book) = &self.peers else {
            return Default::default();
        };
        let mut leaving: BTreeMap<String, Vec<(Tier, Direction)>> = BTreeMap::new();
        let mut entering: BTreeMap<String, Vec<(Tier, Direction)>> = BTreeMap::new();
        for slot in book.slots() {
            let (enter, leave) = slot.universe_moves(changed, moved);
            for name in leave {
                leaving.entry(name).or_default().push(slot.slot());
            }
            for name in enter {
                entering.entry(name).or_default().push(slot.slot());
            }
        }
        (
            leaving.into_iter().collect(),
            entering.into_iter().collect(),
        )
    }

    /// Renders again what the tiers decide for the node's pods `changed` (see
    /// [`LiveNode::changed_subjects`]) over the peer classes of the last full render of the
    /// tiers; a change that needs more renders them in full. Returns whether they were not.
    fn refresh_subjects(
        &mut self,
        cluster: &ClusterState,
        changed: &[(ObjectRef, Option<TierSubject<'_>>)],
    ) -> bool {
        let Some(mut book) = self.peers.take() else {
            self.render_tiers(cluster, None);
            return false;
        };
        let layout = Layout::of(cluster);
        let refreshed = tiers::refresh_subjects(
            &mut self.ruleset,
            &mut self.touched,
            &mut book,
            (cluster, &self.addresses),
            (&layout, changed),
        );
        // Class chains that started deciding were added: a full render replaces them too.
        self.tier_objects.add(book.take_added());
        match refreshed {
            Ok(pieces) => {
                self.stats.tier_pieces += pieces;
                self.peers = Some(book);
                true
            }
            Err(Structural) => {
                self.render_tiers(cluster, None);
                false
            }
        }
    }
}

/// ClusterNetworkPolicies, each with the tiers and directions (of its tier) where it enters or
/// leaves the tiers' universes.
type UniverseMoves = Vec<(String, Vec<(Tier, Direction)>)>;

/// Every name of either map.
fn names<V>(old: &BTreeMap<String, V>, new: &BTreeMap<String, V>) -> Vec<String> {
    old.keys()
        .chain(new.keys())
        .cloned()
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect()
}

/// The labels of a namespace as the cluster holds them (a namespace it does not hold has its name
/// label only).
fn namespace_labels(cluster: &ClusterState, name: &str) -> Labels {
    match cluster.namespace(name) {
        Some(n) => n.labels.clone(),
        None => Namespace::new(name, Labels::new()).labels,
    }
}

/// The elements of a cluster-wide set, from the participating pods of the cluster: only the
/// namespaces the set's peers can select are read, each through its range of pods.
pub(super) fn resolve(cluster: &ClusterState, source: &SetSource) -> BTreeSet<SetElement> {
    let mut elements = BTreeSet::new();
    let pods = cluster.pods();
    let mut next = pods.keys().next();
    while let Some(first) = next {
        let namespace = first.namespace.clone();
        let labels = namespace_labels(cluster, &namespace);
        let in_namespace = pods
            .range(first.clone()..)
            .take_while(|(id, _)| id.namespace == namespace);
        if source.may_select_in(&namespace, &labels) {
            for (_, pod) in in_namespace.filter(|(_, p)| p.participates()) {
                elements.extend(source.elements(pod, &labels));
            }
        }
        // Past the namespace: no namespace name holds a NUL, so every name after this one sorts
        // at or after `namespace\0`.
        next = pods
            .range(ObjectRef::new(format!("{namespace}\0"), "")..)
            .next()
            .map(|(id, _)| id);
    }
    elements
}
