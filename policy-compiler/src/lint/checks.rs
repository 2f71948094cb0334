//! Each rule's check over the cluster: findings about objects and fields, not yet located.

use std::collections::{BTreeMap, BTreeSet};

use crate::cidr::Cidr;
use crate::cluster::ClusterState;
use crate::input::Location;
use crate::model::{
    Direction, IpBlock, Namespace, NamespaceScope, ObjectRef, Peer, Pod, PodPeer, Policy,
    PolicyPort, PortSpec, Protocol, Rule, Subject, WorkloadRef, NAMESPACE_NAME_LABEL,
};
use crate::object::Kind;
use crate::selector::{LabelSelector, Labels, Requirement};
use crate::workload::PodCidrs;

use super::rules::{
    Rule as LintRule, EGRESS_BLOCKS_DNS, IPBLOCK_COVERS_POD_CIDR, NAMED_PORT_UNDECLARED,
    NAMESPACE_NOT_DECLARED, PEER_MATCHES_NOTHING, POLICY_SELECTS_NO_POD, RULE_DUPLICATE,
    RULE_SHADOWED, WORKLOAD_NOT_ISOLATED,
};
use super::LintInput;

/// Namespaces every cluster has: objects in them need no Namespace in the input.
pub const BUILTIN_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// How many names a message lists before "and N more".
pub(super) const LISTED: usize = 3;

/// A finding about an object, before it is located in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Draft {
    pub rule: &'static LintRule,
    pub kind: Kind,
    pub object: ObjectRef,
    /// The fields the finding is about, by preference: the first one the source writes is pointed
    /// at (`""` is the object itself).
    pub fields: Vec<String>,
    pub message: String,
}

/// Runs every check.
pub(super) fn run(input: &LintInput<'_>) -> Vec<Draft> {
    let checker = Checker::new(input);
    let mut drafts = Vec::new();
    for policy in input.cluster.policies().values() {
        checker.policy_selects_no_pod(policy, &mut drafts);
        for direction in Direction::BOTH {
            for (index, rule) in policy.rules(direction).iter().enumerate() {
                let at = RuleAt {
                    policy,
                    direction,
                    index,
                    rule,
                };
                checker.peers(&at, &mut drafts);
                checker.named_ports(&at, &mut drafts);
            }
            checker.overlapping_rules(policy, direction, &mut drafts);
        }
    }
    checker.egress_without_dns(&mut drafts);
    checker.namespaces_not_declared(&mut drafts);
    checker.workloads_not_isolated(&mut drafts);
    drafts
}

/// One rule of a policy, and where it is.
struct RuleAt<'a> {
    policy: &'a Policy,
    direction: Direction,
    index: usize,
    rule: &'a Rule,
}

impl RuleAt<'_> {
    /// `spec.ingress[1]`.
    fn path(&self) -> String {
        rule_path(self.direction, self.index)
    }

    /// `spec.ingress[1].from[0]`.
    fn peer_path(&self, peer: usize) -> String {
        let key = match self.direction {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        };
        format!("{}.{key}[{peer}]", self.path())
    }
}

fn rule_path(direction: Direction, index: usize) -> String {
    format!("spec.{direction}[{index}]")
}

/// The participating pods of one namespace that have the same labels: no selector tells them
/// apart, so they are matched once.
struct PodClass<'a> {
    namespace: &'a str,
    labels: &'a Labels,
    pods: Vec<&'a Pod>,
}

struct Checker<'a> {
    cluster: &'a ClusterState,
    locations: &'a BTreeMap<(Kind, ObjectRef), Location>,
    pod_cidrs: &'a PodCidrs,
    /// The pods that take part in policy.
    pods: Vec<&'a Pod>,
    /// The same pods, by namespace and labels.
    classes: Vec<PodClass<'a>>,
    /// The policies of each namespace.
    policies: BTreeMap<&'a str, Vec<&'a Policy>>,
    /// The namespaces the input has some pod or workload in.
    namespaces_with_pods: BTreeSet<&'a str>,
    /// The names (and protocols) of container ports numbered 53.
    dns_port_names: BTreeSet<(&'a str, Protocol)>,
}

impl<'a> Checker<'a> {
    fn new(input: &LintInput<'a>) -> Self {
        let pods: Vec<&Pod> = input.cluster.participating_pods().collect();
        let mut classes: BTreeMap<(&str, &Labels), Vec<&Pod>> = BTreeMap::new();
        for pod in &pods {
            classes
                .entry((&*pod.id.namespace, &pod.labels))
                .or_default()
                .push(pod);
        }
        let mut policies: BTreeMap<&str, Vec<&Policy>> = BTreeMap::new();
        for policy in input.cluster.policies().values() {
            policies
                .entry(&*policy.id.namespace)
                .or_default()
                .push(policy);
        }
        Self {
            cluster: input.cluster,
            locations: input.locations,
            pod_cidrs: input.pod_cidrs,
            classes: classes
                .into_iter()
                .map(|((namespace, labels), pods)| PodClass {
                    namespace,
                    labels,
                    pods,
                })
                .collect(),
            policies,
            namespaces_with_pods: input.cluster.pods().keys().map(|p| &*p.namespace).collect(),
            dns_port_names: pods
                .iter()
                .flat_map(|p| &p.ports)
                .filter(|p| p.port == 53)
                .filter_map(|p| Some((p.name.as_deref()?, p.protocol)))
                .collect(),
            pods,
        }
    }

    fn draft(
        &self,
        rule: &'static LintRule,
        policy: &Policy,
        fields: Vec<String>,
        message: String,
    ) -> Draft {
        Draft {
            rule,
            kind: Kind::NetworkPolicy,
            object: policy.id.clone(),
            fields,
            message,
        }
    }

    /// The policies of a namespace that select pods with `labels`.
    fn selecting<'s>(
        &'s self,
        namespace: &str,
        labels: &'s Labels,
    ) -> impl Iterator<Item = &'a Policy> + 's {
        self.policies
            .get(namespace)
            .map(|v| v.as_slice())
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(move |p| p.pod_selector.matches(labels))
    }

    /// The pods a policy applies to.
    fn selected(&self, policy: &Policy) -> Vec<&'a Pod> {
        self.classes
            .iter()
            .filter(|c| {
                c.namespace == &*policy.id.namespace && policy.pod_selector.matches(c.labels)
            })
            .flat_map(|c| c.pods.iter().copied())
            .collect()
    }

    fn in_scope(&self, scope: &NamespaceScope, namespace: &str) -> bool {
        match scope {
            NamespaceScope::Own(ns) => ns == namespace,
            NamespaceScope::Selected(s) => self
                .cluster
                .namespace(namespace)
                .is_some_and(|n| s.matches(&n.labels)),
        }
    }

    /// The pods a peer matches (an ipBlock matches the pods whose addresses it holds).
    fn peer_pods(&self, peer: &Peer) -> Vec<&'a Pod> {
        match peer {
            Peer::Pods(p) => self
                .classes
                .iter()
                .filter(|c| self.in_scope(&p.namespaces, c.namespace) && p.pods.matches(c.labels))
                .flat_map(|c| c.pods.iter().copied())
                .collect(),
            Peer::IpBlock(b) => self
                .pods
                .iter()
                .copied()
                .filter(|pod| pod.ips.iter().any(|ip| b.contains(ip)))
                .collect(),
        }
    }

    /// The namespaces a selector matches: the input's, and the ones every cluster has (with only
    /// their `kubernetes.io/metadata.name` label when the input does not declare them).
    fn namespaces_matching(&self, selector: &LabelSelector) -> Vec<String> {
        let mut names: Vec<String> = self
            .cluster
            .namespaces()
            .values()
            .filter(|n| selector.matches(&n.labels))
            .map(|n| n.name.clone())
            .collect();
        for builtin in BUILTIN_NAMESPACES {
            if self.cluster.namespace(builtin).is_none()
                && selector.matches(&Namespace::new(builtin, Labels::new()).labels)
            {
                names.push(builtin.to_string());
            }
        }
        names.sort();
        names
    }

    /// The namespaces a peer's scope covers.
    fn scope_names(&self, scope: &NamespaceScope) -> Vec<String> {
        match scope {
            NamespaceScope::Own(ns) => vec![ns.clone()],
            NamespaceScope::Selected(selector) => self.namespaces_matching(selector),
        }
    }

    /// Whether a rule's peers can match pods of namespaces the input has no pod of (every
    /// namespace for an empty peer list).
    fn reaches_unseen_pods(&self, rule: &Rule) -> bool {
        rule.peers.is_empty()
            || rule.peers.iter().any(|peer| match peer {
                Peer::Pods(p) => self
                    .scope_names(&p.namespaces)
                    .iter()
                    .any(|ns| !self.has_pods(ns)),
                Peer::IpBlock(_) => false,
            })
    }

    /// Whether the input shows the pods of a namespace: it has some pod or workload there.
    fn has_pods(&self, namespace: &str) -> bool {
        self.namespaces_with_pods.contains(namespace)
    }

    fn policy_selects_no_pod(&self, policy: &Policy, out: &mut Vec<Draft>) {
        if !self.selected(policy).is_empty() {
            return;
        }
        let ns = &policy.id.namespace;
        let why = if policy.pod_selector.is_everything() {
            format!("namespace {ns} has no pod or workload")
        } else {
            format!(
                "no pod or workload in namespace {ns} has labels matching {}",
                policy.pod_selector
            )
        };
        out.push(self.draft(
            &POLICY_SELECTS_NO_POD,
            policy,
            vec!["spec.podSelector".to_string()],
            format!("NetworkPolicy {} selects no pod: {why}", policy.id),
        ));
    }

    /// `peer-matches-nothing` and `ipblock-covers-pod-cidr`, peer by peer.
    fn peers(&self, at: &RuleAt<'_>, out: &mut Vec<Draft>) {
        for (j, peer) in at.rule.peers.iter().enumerate() {
            let path = at.peer_path(j);
            match peer {
                Peer::Pods(p) => self.pod_peer(at, &path, peer, p, out),
                Peer::IpBlock(block) => self.ip_block(at, &path, block, out),
            }
        }
    }

    /// A pod peer: its namespaceSelector matches no namespace, or it matches no pod in the
    /// namespaces whose pods the input shows (a peer into namespaces the input has no pod of, such
    /// as cluster DNS in kube-system, is left alone).
    fn pod_peer(
        &self,
        at: &RuleAt<'_>,
        path: &str,
        peer: &Peer,
        p: &PodPeer,
        out: &mut Vec<Draft>,
    ) {
        let id = &at.policy.id;
        let scope = self.scope_names(&p.namespaces);
        if let (NamespaceScope::Selected(selector), true) = (&p.namespaces, scope.is_empty()) {
            let known = list(self.cluster.namespaces().keys().cloned(), 5);
            out.push(self.draft(
                &PEER_MATCHES_NOTHING,
                at.policy,
                vec![format!("{path}.namespaceSelector")],
                format!(
                    "NetworkPolicy {id} {path}: namespaceSelector {selector} matches no \
                     namespace (the input's namespaces: {known})"
                ),
            ));
            return;
        }
        let shown: Vec<&String> = scope.iter().filter(|ns| self.has_pods(ns)).collect();
        if shown.is_empty() || !self.peer_pods(peer).is_empty() {
            return;
        }
        let place = match &p.namespaces {
            NamespaceScope::Own(ns) => format!("in namespace {ns}"),
            NamespaceScope::Selected(s) if s.is_everything() => "in any namespace".to_string(),
            NamespaceScope::Selected(s) => format!(
                "in the namespaces namespaceSelector {s} matches ({})",
                list(shown.iter().map(|n| n.to_string()), LISTED)
            ),
        };
        let why = if p.pods.is_everything() {
            format!("there is no pod or workload {place}")
        } else {
            format!("no pod or workload {place} has labels matching {}", p.pods)
        };
        let field = match (&p.namespaces, p.pods.is_everything()) {
            (NamespaceScope::Selected(_), true) => "namespaceSelector",
            _ => "podSelector",
        };
        out.push(self.draft(
            &PEER_MATCHES_NOTHING,
            at.policy,
            vec![format!("{path}.{field}")],
            format!("NetworkPolicy {id} {path} matches no pod: {why}"),
        ));
    }

    fn ip_block(&self, at: &RuleAt<'_>, path: &str, block: &IpBlock, out: &mut Vec<Draft>) {
        let overlaps: Vec<String> = self
            .pod_cidrs
            .cidrs()
            .iter()
            .filter_map(|range| match pod_addresses_in(block, range) {
                Overlap::None => None,
                Overlap::Part => Some(format!("part of the pod CIDR {range}")),
                Overlap::All => Some(format!("all of the pod CIDR {range}")),
            })
            .collect();
        if overlaps.is_empty() {
            return;
        }
        out.push(self.draft(
            &IPBLOCK_COVERS_POD_CIDR,
            at.policy,
            vec![format!("{path}.ipBlock.cidr")],
            format!(
                "NetworkPolicy {} {path}: {block} includes {}: ipBlocks match pod addresses, so it \
                 allows the pods there whatever their labels",
                at.policy.id,
                overlaps.join(" and ")
            ),
        ));
    }

    /// `named-port-undeclared`: the destinations are the selected pods (ingress) or the pods the
    /// peers match (egress). When there are none, another rule says why (`policy-selects-no-pod`,
    /// `peer-matches-nothing`), except for egress to ipBlocks that hold no pod: a named port never
    /// matches an address outside the cluster. An egress rule that can reach pods the input does
    /// not show (an empty `to` reaches every namespace, kube-system's DNS pods among them, which
    /// declare `dns`/UDP) is not judged: its port may be declared there.
    fn named_ports(&self, at: &RuleAt<'_>, out: &mut Vec<Draft>) {
        let named: Vec<(usize, &str, Protocol)> = at
            .rule
            .ports
            .iter()
            .enumerate()
            .filter_map(|(k, p)| match &p.port {
                PortSpec::Named(name) => Some((k, name.as_str(), p.protocol)),
                _ => None,
            })
            .collect();
        if named.is_empty() {
            return;
        }
        let (destinations, whose) = match at.direction {
            Direction::Ingress => (self.selected(at.policy), "the pods the policy selects"),
            Direction::Egress if self.reaches_unseen_pods(at.rule) => return,
            Direction::Egress => {
                let mut pods: Vec<&Pod> = at
                    .rule
                    .peers
                    .iter()
                    .flat_map(|peer| self.peer_pods(peer))
                    .collect();
                pods.sort_by(|a, b| a.id.cmp(&b.id));
                pods.dedup_by(|a, b| a.id == b.id);
                (pods, "the pods its peers match")
            }
        };
        let only_ip_blocks = !at.rule.peers.is_empty()
            && at.rule.peers.iter().all(|p| matches!(p, Peer::IpBlock(_)));
        for (k, name, protocol) in named {
            let field = format!("{}.ports[{k}].port", at.path());
            let message = if destinations.is_empty() {
                if !(at.direction == Direction::Egress && only_ip_blocks) {
                    continue;
                }
                format!(
                    "NetworkPolicy {} {}.ports[{k}]: named port {name}/{protocol} never matches: \
                     named ports resolve against the destination pod's container ports, and the \
                     rule's ipBlocks hold no pod address",
                    at.policy.id,
                    at.path()
                )
            } else if destinations
                .iter()
                .any(|pod| pod.named_port(name, protocol).is_some())
            {
                continue;
            } else {
                let declared: BTreeSet<String> = destinations
                    .iter()
                    .flat_map(|pod| &pod.ports)
                    .filter_map(|p| Some(format!("{}/{}", p.name.as_ref()?, p.protocol)))
                    .collect();
                let declared = if declared.is_empty() {
                    "they declare no named port".to_string()
                } else {
                    format!("they declare {}", list(declared, LISTED))
                };
                format!(
                    "NetworkPolicy {} {}.ports[{k}]: named port {name}/{protocol} is declared by \
                     no pod the rule applies to ({whose}: {}; {declared})",
                    at.policy.id,
                    at.path(),
                    workloads(&destinations)
                )
            };
            out.push(self.draft(&NAMED_PORT_UNDECLARED, at.policy, vec![field], message));
        }
    }

    /// `rule-duplicate` and `rule-shadowed` within one policy and direction. A rule is a duplicate
    /// of an earlier one with the same peers and ports (as sets); it is shadowed by another rule
    /// that provably allows all it allows ([`rule_covers`]). Of two rules that cover each other
    /// without being written alike, the later is reported.
    fn overlapping_rules(&self, policy: &Policy, direction: Direction, out: &mut Vec<Draft>) {
        let rules = policy.rules(direction);
        let normalized: Vec<(Vec<&Peer>, Vec<&PolicyPort>)> = rules
            .iter()
            .map(|r| {
                let mut peers: Vec<&Peer> = r.peers.iter().collect();
                peers.sort();
                peers.dedup();
                let mut ports: Vec<&PolicyPort> = r.ports.iter().collect();
                ports.sort();
                ports.dedup();
                (peers, ports)
            })
            .collect();
        for j in 0..rules.len() {
            let this = rule_path(direction, j);
            if let Some(i) = (0..j).find(|&i| normalized[i] == normalized[j]) {
                let other = rule_path(direction, i);
                out.push(self.draft(
                    &RULE_DUPLICATE,
                    policy,
                    vec![this.clone()],
                    format!(
                        "NetworkPolicy {} {this} duplicates {other}: the same peers and ports",
                        policy.id
                    ),
                ));
                continue;
            }
            let covering = (0..rules.len()).find(|&i| {
                i != j
                    && normalized[i] != normalized[j]
                    && rule_covers(&rules[i], &rules[j])
                    && (i < j || !rule_covers(&rules[j], &rules[i]))
            });
            let Some(i) = covering else { continue };
            let other = rule_path(direction, i);
            let peers = if rules[i].peers.is_empty() {
                match direction {
                    Direction::Ingress => "every source (it has no from)".to_string(),
                    Direction::Egress => "every destination (it has no to)".to_string(),
                }
            } else {
                format!("every peer of {this}")
            };
            let ports = if rules[i].ports.is_empty() {
                "every port (it has no ports)".to_string()
            } else {
                format!("every port {this} allows")
            };
            out.push(self.draft(
                &RULE_SHADOWED,
                policy,
                vec![this.clone()],
                format!(
                    "NetworkPolicy {} {this} is covered by {other}, which allows {peers} on {ports}",
                    policy.id
                ),
            ));
        }
    }

    /// Whether a rule allows DNS (UDP or TCP port 53) to some destination.
    fn allows_dns(&self, rule: &Rule) -> bool {
        rule.ports.is_empty()
            || rule.ports.iter().any(|p| {
                matches!(p.protocol, Protocol::Udp | Protocol::Tcp)
                    && match &p.port {
                        PortSpec::Any => true,
                        PortSpec::Range(a, b) => (*a..=*b).contains(&53),
                        PortSpec::Named(name) => {
                            self.dns_port_names.contains(&(name.as_str(), p.protocol))
                        }
                    }
            })
    }

    /// `egress-blocks-dns`: once per policy isolating for egress pods that no egress rule of the
    /// policies selecting them lets reach port 53, naming their workloads. Policies in audit mode
    /// isolate nothing, and add nothing beside enforced ones.
    fn egress_without_dns(&self, out: &mut Vec<Draft>) {
        let mut blocked: BTreeMap<&ObjectRef, Vec<&Pod>> = BTreeMap::new();
        for class in &self.classes {
            let isolating: Vec<&Policy> = self
                .selecting(class.namespace, class.labels)
                .filter(|p| p.isolates_egress && !p.is_audit())
                .collect();
            if isolating
                .iter()
                .any(|p| p.egress.iter().any(|r| self.allows_dns(r)))
            {
                continue;
            }
            for policy in isolating {
                blocked
                    .entry(&policy.id)
                    .or_default()
                    .extend(class.pods.iter().copied());
            }
        }
        for (id, pods) in blocked {
            let Some(policy) = self.cluster.policies().get(id) else {
                continue;
            };
            let names: BTreeSet<WorkloadRef> = pods.iter().map(|p| p.workload_ref()).collect();
            let (them, they) = if names.len() == 1 {
                ("it", "it")
            } else {
                ("them", "they")
            };
            out.push(
                self.draft(
                    &EGRESS_BLOCKS_DNS,
                    policy,
                    ["spec.policyTypes", "spec.egress", "spec.podSelector"]
                        .map(String::from)
                        .to_vec(),
                    format!(
                    "NetworkPolicy {id} isolates {} for egress, and no egress rule of the policies \
                     selecting {them} allows DNS (UDP or TCP port 53): {they} cannot resolve names",
                    workloads(&pods)
                ),
                ),
            );
        }
    }

    /// `namespace-not-declared`, when the input declares namespaces at all.
    fn namespaces_not_declared(&self, out: &mut Vec<Draft>) {
        let declared: BTreeSet<&str> = self
            .locations
            .keys()
            .filter(|(kind, _)| *kind == Kind::Namespace)
            .map(|(_, key)| &*key.name)
            .collect();
        if declared.is_empty() {
            return;
        }
        for (kind, key) in self.locations.keys() {
            let ns = &*key.namespace;
            if !kind.namespaced() || declared.contains(ns) || BUILTIN_NAMESPACES.contains(&ns) {
                continue;
            }
            out.push(Draft {
                rule: &NAMESPACE_NOT_DECLARED,
                kind: *kind,
                object: key.clone(),
                fields: vec!["metadata.namespace".to_string()],
                message: format!(
                    "{} {key} is in namespace {ns}, which no Namespace of the input declares \
                     (declared: {})",
                    kind.as_str(),
                    list(declared.iter().map(|n| n.to_string()), LISTED)
                ),
            });
        }
    }

    /// Whether a ClusterNetworkPolicy with rules selects the pods of a namespace with `labels`.
    fn cluster_policy_selects(&self, namespace: &str, labels: &Labels) -> bool {
        let Some(ns) = self.cluster.namespace(namespace) else {
            return false;
        };
        self.cluster.cluster_policies().values().any(|c| {
            let selected = match &c.subject {
                Subject::Namespaces(s) => s.matches(&ns.labels),
                Subject::Pods(p) => p.namespaces.matches(&ns.labels) && p.pods.matches(labels),
            };
            selected && !(c.ingress.is_empty() && c.egress.is_empty())
        })
    }

    /// `workload-not-isolated`: workloads none of whose pods any enforced policy isolates (nor
    /// any ClusterNetworkPolicy with rules selects); policies in audit mode isolate nothing, and
    /// the message says when they select it. The finding is on the workload's object, or on its
    /// first pod when the input has only its pods (a dump).
    fn workloads_not_isolated(&self, out: &mut Vec<Draft>) {
        // Each workload's pods, whether a policy isolates any of them, and whether audit
        // policies would.
        let mut by_workload: BTreeMap<WorkloadRef, (Vec<&Pod>, bool, bool)> = BTreeMap::new();
        for class in &self.classes {
            let (mut isolated, mut audited) = (false, false);
            for p in self.selecting(class.namespace, class.labels) {
                let isolates = p.isolates_ingress || p.isolates_egress;
                if p.is_audit() {
                    audited |= isolates;
                } else {
                    isolated |= isolates;
                }
            }
            isolated |= self.cluster_policy_selects(class.namespace, class.labels);
            for pod in &class.pods {
                let entry = by_workload.entry(pod.workload_ref()).or_default();
                entry.0.push(pod);
                entry.1 |= isolated;
                entry.2 |= audited;
            }
        }
        for (workload, (pods, isolated, audited)) in by_workload {
            if isolated {
                continue;
            }
            let own = Kind::from_name(&workload.kind)
                .map(|k| (k, ObjectRef::new(&workload.namespace, &workload.name)))
                .filter(|key| self.locations.contains_key(key));
            let object = own.or_else(|| {
                pods.iter()
                    .map(|pod| (Kind::Pod, pod.id.clone()))
                    .find(|key| self.locations.contains_key(key))
            });
            let Some((kind, object)) = object else {
                continue;
            };
            out.push(Draft {
                rule: &WORKLOAD_NOT_ISOLATED,
                kind,
                object,
                fields: vec![String::new()],
                message: format!(
                    "{workload} is isolated by no NetworkPolicy in either direction: it accepts \
                     connections from anywhere and may open connections to anywhere{}",
                    if audited {
                        " (policies in audit mode select it: they deny nothing)"
                    } else {
                        ""
                    }
                ),
            });
        }
    }
}

/// How much of a pod CIDR an ipBlock includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overlap {
    None,
    Part,
    All,
}

/// The part of `range` that `block` (its cidr minus its excepts) includes, exactly.
pub(super) fn pod_addresses_in(block: &IpBlock, range: &Cidr) -> Overlap {
    // Prefixes are nested or disjoint: the intersection is the smaller one, or nothing.
    let inside = if block.cidr.covers(range) {
        *range
    } else if range.covers(&block.cidr) {
        block.cidr
    } else {
        return Overlap::None;
    };
    let (first, last) = inside.bounds();
    let mut excepted: Vec<(u128, u128)> = block
        .except
        .iter()
        .filter(|e| e.family() == inside.family())
        .map(Cidr::bounds)
        .filter(|&(a, b)| b >= first && a <= last)
        .map(|(a, b)| (a.max(first), b.min(last)))
        .collect();
    excepted.sort();
    // Whether the excepts leave nothing of `inside`.
    let mut next = first;
    for (a, b) in &excepted {
        if *a > next {
            break;
        }
        if *b >= last {
            return Overlap::None;
        }
        next = next.max(b + 1);
    }
    if inside == *range && excepted.is_empty() {
        Overlap::All
    } else {
        Overlap::Part
    }
}

/// Whether every object `narrow` matches, `wide` matches too, whatever the objects' labels:
/// each requirement of `wide` follows from one of `narrow`'s.
fn selector_implies(narrow: &LabelSelector, wide: &LabelSelector) -> bool {
    wide.requirements().iter().all(|w| {
        narrow.requirements().iter().any(|n| match (w, n) {
            _ if w == n => true,
            (Requirement::In(k, wide_values), Requirement::In(nk, values)) => {
                k == nk && values.iter().all(|v| wide_values.contains(v))
            }
            (Requirement::Exists(k), Requirement::In(nk, _) | Requirement::Exists(nk)) => k == nk,
            (Requirement::NotIn(k, wide_values), Requirement::NotIn(nk, values)) => {
                k == nk && wide_values.iter().all(|v| values.contains(v))
            }
            (Requirement::NotIn(k, wide_values), Requirement::In(nk, values)) => {
                k == nk && values.iter().all(|v| !wide_values.contains(v))
            }
            (Requirement::NotIn(k, _), Requirement::DoesNotExist(nk)) => k == nk,
            _ => false,
        })
    })
}

/// A namespace scope as a namespace selector: the policy's own namespace is the one whose
/// `kubernetes.io/metadata.name` label is its name (a label every namespace has and no one can
/// change).
fn scope_selector(scope: &NamespaceScope) -> LabelSelector {
    match scope {
        NamespaceScope::Own(ns) => {
            LabelSelector::from_labels([(NAMESPACE_NAME_LABEL, ns.as_str())])
        }
        NamespaceScope::Selected(s) => s.clone(),
    }
}

/// Whether peer `wide` matches everything peer `narrow` matches, whatever the cluster holds.
fn peer_covers(wide: &Peer, narrow: &Peer) -> bool {
    match (wide, narrow) {
        (Peer::Pods(w), Peer::Pods(n)) => {
            selector_implies(
                &scope_selector(&n.namespaces),
                &scope_selector(&w.namespaces),
            ) && selector_implies(&n.pods, &w.pods)
        }
        (Peer::IpBlock(w), Peer::IpBlock(n)) => {
            w.cidr.covers(&n.cidr)
                && w.except.iter().all(|e| {
                    let disjoint = !e.covers(&n.cidr) && !n.cidr.covers(e);
                    disjoint || n.except.iter().any(|x| x.covers(e))
                })
        }
        _ => false,
    }
}

/// Whether `ports` allow every connection `port` allows.
fn port_covered(port: &PolicyPort, ports: &[PolicyPort]) -> bool {
    let same: Vec<&PortSpec> = ports
        .iter()
        .filter(|p| p.protocol == port.protocol)
        .map(|p| &p.port)
        .collect();
    if same.contains(&&PortSpec::Any) {
        return true;
    }
    match &port.port {
        PortSpec::Any => false,
        PortSpec::Named(_) => same.contains(&&port.port),
        PortSpec::Range(start, end) => {
            let mut ranges: Vec<(u16, u16)> = same
                .iter()
                .filter_map(|p| match p {
                    PortSpec::Range(a, b) => Some((*a, *b)),
                    _ => None,
                })
                .collect();
            ranges.sort();
            let mut next = u32::from(*start);
            for (a, b) in ranges {
                if u32::from(a) > next {
                    break;
                }
                next = next.max(u32::from(b) + 1);
            }
            next > u32::from(*end)
        }
    }
}

/// Whether rule `wide` allows every (peer, port) that rule `narrow` allows: an empty peer list
/// allows every peer, an empty port list every port.
fn rule_covers(wide: &Rule, narrow: &Rule) -> bool {
    let peers = wide.peers.is_empty()
        || (!narrow.peers.is_empty()
            && narrow
                .peers
                .iter()
                .all(|n| wide.peers.iter().any(|w| peer_covers(w, n))));
    let ports = wide.ports.is_empty()
        || (!narrow.ports.is_empty() && narrow.ports.iter().all(|p| port_covered(p, &wide.ports)));
    peers && ports
}

/// The workloads of some pods, sorted, the first few by name.
fn workloads(pods: &[&Pod]) -> String {
    let names: BTreeSet<String> = pods.iter().map(|p| p.workload_ref().to_string()).collect();
    list(names, LISTED)
}

/// `a, b, c and 4 more`.
pub(super) fn list(items: impl IntoIterator<Item = String>, max: usize) -> String {
    let items: Vec<String> = items.into_iter().collect();
    if items.len() <= max {
        return items.join(", ");
    }
    format!("{} and {} more", items[..max].join(", "), items.len() - max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector::from_labels(pairs.iter().copied())
    }

    fn block(cidr: &str, except: &[&str]) -> IpBlock {
        IpBlock {
            cidr: cidr.parse().expect("cidr"),
            except: except.iter().map(|e| e.parse().expect("cidr")).collect(),
        }
    }

    fn tcp(a: u16, b: u16) -> PolicyPort {
        PolicyPort {
            protocol: Protocol::Tcp,
            port: PortSpec::Range(a, b),
        }
    }

    #[test]
    fn selector_implication_is_sound() {
        let web = sel(&[("app", "web")]);
        let web_prod = sel(&[("app", "web"), ("env", "prod")]);
        assert!(selector_implies(&web_prod, &web));
        assert!(!selector_implies(&web, &web_prod));
        assert!(selector_implies(&web, &LabelSelector::everything()));
        assert!(!selector_implies(&LabelSelector::everything(), &web));
        let web_or_api = LabelSelector::new(vec![Requirement::In(
            "app".into(),
            vec!["api".into(), "web".into()],
        )]);
        assert!(selector_implies(&web, &web_or_api));
        assert!(!selector_implies(&web_or_api, &web));
        let has_app = LabelSelector::new(vec![Requirement::Exists("app".into())]);
        assert!(selector_implies(&web, &has_app));
        let not_db = LabelSelector::new(vec![Requirement::NotIn("app".into(), vec!["db".into()])]);
        assert!(selector_implies(&web, &not_db));
        assert!(!selector_implies(&has_app, &not_db));
        // The own namespace, as a selector, is implied by a namespaceSelector that names it.
        let own = scope_selector(&NamespaceScope::Own("shop".into()));
        assert!(selector_implies(
            &own,
            &sel(&[(NAMESPACE_NAME_LABEL, "shop")])
        ));
        assert!(!selector_implies(&own, &sel(&[("team", "a")])));
    }

    #[test]
    fn ip_block_coverage_accounts_for_excepts() {
        let covers = |w: IpBlock, n: IpBlock| peer_covers(&Peer::IpBlock(w), &Peer::IpBlock(n));
        assert!(covers(block("10.0.0.0/8", &[]), block("10.1.0.0/16", &[])));
        assert!(!covers(block("10.1.0.0/16", &[]), block("10.0.0.0/8", &[])));
        // The wide block's except cuts into the narrow one.
        assert!(!covers(
            block("10.0.0.0/8", &["10.1.2.0/24"]),
            block("10.1.0.0/16", &[])
        ));
        // ...unless the narrow one excepts it too, or it lies elsewhere.
        assert!(covers(
            block("10.0.0.0/8", &["10.1.2.0/24"]),
            block("10.1.0.0/16", &["10.1.0.0/20", "10.1.2.0/23"])
        ));
        assert!(covers(
            block("10.0.0.0/8", &["10.9.0.0/16"]),
            block("10.1.0.0/16", &[])
        ));
        // An except around the whole narrow block.
        assert!(!covers(
            block("10.0.0.0/8", &["10.1.0.0/16"]),
            block("10.1.2.0/24", &[])
        ));
    }

    #[test]
    fn port_coverage_merges_ranges_and_keeps_protocols_and_names_apart() {
        assert!(port_covered(&tcp(80, 81), &[tcp(80, 80), tcp(81, 81)]));
        assert!(!port_covered(&tcp(80, 82), &[tcp(80, 80), tcp(82, 82)]));
        assert!(port_covered(&tcp(65535, 65535), &[tcp(1, 65535)]));
        let udp_any = PolicyPort {
            protocol: Protocol::Udp,
            port: PortSpec::Any,
        };
        assert!(!port_covered(&tcp(53, 53), std::slice::from_ref(&udp_any)));
        let named = PolicyPort {
            protocol: Protocol::Tcp,
            port: PortSpec::Named("http".into()),
        };
        assert!(!port_covered(&named, &[tcp(1, 65535)]));
        assert!(port_covered(&named, std::slice::from_ref(&named)));
        let tcp_any = PolicyPort {
            protocol: Protocol::Tcp,
            port: PortSpec::Any,
        };
        assert!(port_covered(&named, &[tcp_any]));
    }

    #[test]
    fn an_empty_peer_list_covers_every_peer_but_no_peer_covers_it() {
        let every_pod = Rule {
            peers: vec![Peer::Pods(PodPeer {
                namespaces: NamespaceScope::Selected(LabelSelector::everything()),
                pods: LabelSelector::everything(),
            })],
            ports: vec![],
        };
        let everything = Rule {
            peers: vec![],
            ports: vec![],
        };
        assert!(rule_covers(&everything, &every_pod));
        // Every pod is not every address: ipBlocks and addresses outside the cluster.
        assert!(!rule_covers(&every_pod, &everything));
        let web_80 = Rule {
            peers: vec![Peer::Pods(PodPeer {
                namespaces: NamespaceScope::Own("shop".into()),
                pods: sel(&[("app", "web")]),
            })],
            ports: vec![tcp(80, 80)],
        };
        assert!(rule_covers(&every_pod, &web_80));
        assert!(!rule_covers(&web_80, &every_pod));
        let no_ports_named = Rule {
            peers: web_80.peers.clone(),
            ports: vec![],
        };
        assert!(rule_covers(&no_ports_named, &web_80));
        assert!(!rule_covers(&web_80, &no_ports_named));
    }

    #[test]
    fn pod_cidr_overlap_is_exact() {
        let pods: Cidr = "10.244.0.0/16".parse().expect("cidr");
        assert_eq!(
            pod_addresses_in(&block("0.0.0.0/0", &[]), &pods),
            Overlap::All
        );
        assert_eq!(
            pod_addresses_in(&block("0.0.0.0/0", &["10.244.0.0/16"]), &pods),
            Overlap::None
        );
        assert_eq!(
            pod_addresses_in(
                &block("0.0.0.0/0", &["10.244.0.0/17", "10.244.128.0/17"]),
                &pods
            ),
            Overlap::None
        );
        assert_eq!(
            pod_addresses_in(&block("0.0.0.0/0", &["10.244.0.0/17"]), &pods),
            Overlap::Part
        );
        assert_eq!(
            pod_addresses_in(&block("10.244.3.0/24", &[]), &pods),
            Overlap::Part
        );
        assert_eq!(
            pod_addresses_in(&block("192.168.0.0/16", &[]), &pods),
            Overlap::None
        );
        assert_eq!(pod_addresses_in(&block("::/0", &[]), &pods), Overlap::None);
    }

    #[test]
    fn lists_are_capped() {
        let names = |n: usize| (0..n).map(|i| format!("w{i}"));
        assert_eq!(list(names(3), 3), "w0, w1, w2");
        assert_eq!(list(names(5), 3), "w0, w1, w2 and 2 more");
    }
}
