//! The compact internal model of cluster state: namespaces, pods, NetworkPolicies,
//! ClusterNetworkPolicies ([`cluster_policy`]) and Nodes ([`node`]), validated.
//!
//! The Kubernetes API types stop at [`crate::input`]; everything after works on these.

pub mod cluster_policy;
pub mod node;

pub use cluster_policy::{
    Action, ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, PodsSelector, Subject,
    Tier,
};
pub use node::Node;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::cidr::{Cidr, Family};
use crate::intern::Interner;
use crate::selector::{LabelSelector, Labels};

/// A transport protocol NetworkPolicy can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Every protocol, in a fixed order.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// Parses the API spelling (`TCP`, `UDP`, `SCTP`).
    pub fn from_api(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The API spelling.
    pub fn as_api(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// The nftables spelling.
    pub fn as_nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_api())
    }
}

/// A namespaced object's identity, printed `namespace/name`, ordered by namespace then name.
///
/// Its strings are shared: a clone is two reference counts, so the store's key, the pod's `id` and
/// a source's copy of the key are one allocation each, and the [`crate::ClusterState`] makes the
/// namespace its interned copy ([`ObjectRef::share`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Namespace (empty for cluster-scoped objects).
    pub namespace: Arc<str>,
    /// Name.
    pub name: Arc<str>,
}

impl ObjectRef {
    /// Builds a reference from copies of `namespace` and `name` (to share strings already held,
    /// build it from its fields).
    pub fn new(namespace: impl AsRef<str>, name: impl AsRef<str>) -> Self {
        Self {
            namespace: Arc::from(namespace.as_ref()),
            name: Arc::from(name.as_ref()),
        }
    }

    /// Makes the namespace `interner`'s shared copy (objects of a namespace repeat it).
    pub fn share(&mut self, interner: &mut Interner) {
        interner.share(&mut self.namespace);
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A namespace and its labels (always including `kubernetes.io/metadata.name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
}

/// The label every namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl Namespace {
    /// A namespace with the given labels plus its `kubernetes.io/metadata.name` label.
    pub fn new(name: impl Into<String>, mut labels: Labels) -> Self {
        let name = name.into();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        Self { name, labels }
    }
}

/// A port a container declares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerPort {
    /// The port's name, which NetworkPolicy named ports refer to (shared: pods of a workload
    /// repeat it).
    pub name: Option<Arc<str>>,
    /// Number.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// The object that controls another: its `ownerReferences` entry with `controller: true` (a
/// ReplicaSet for a Deployment's pod, a Job for a CronJob's).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnerRef {
    /// The owner's kind (any kind: a custom controller's too).
    pub kind: Arc<str>,
    /// The owner's name, in the same namespace (shared: a workload's pods repeat it).
    pub name: Arc<str>,
}

/// A workload: what a pod belongs to in the analyses' output, printed `namespace/name[Kind]` (a
/// pod of no workload is its own, `namespace/name[Pod]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Kind (`Deployment`, `Pod`, or the kind of an owner nftpolicy does not read).
    pub kind: String,
}

impl WorkloadRef {
    /// Builds a reference.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        kind: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            kind: kind.into(),
        }
    }

    /// Parses `namespace/name[Kind]`.
    pub fn parse(s: &str) -> Option<Self> {
        let (rest, kind) = s.strip_suffix(']')?.rsplit_once('[')?;
        let (namespace, name) = rest.split_once('/')?;
        (!namespace.is_empty() && !name.is_empty() && !kind.is_empty())
            .then(|| Self::new(namespace, name, kind))
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}[{}]", self.namespace, self.name, self.kind)
    }
}

/// A workload object (Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job,
/// CronJob), reduced to its pod template: what its pods will look like to policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Namespace, name and kind.
    pub id: WorkloadRef,
    /// The workload that controls this one (a Deployment for a ReplicaSet), if any.
    pub owner: Option<OwnerRef>,
    /// The pod template's labels.
    pub labels: Labels,
    /// The pod template's container ports.
    pub ports: Vec<ContainerPort>,
    /// Whether its pods use the node's network namespace.
    pub host_network: bool,
}

/// A pod's lifecycle phase, as far as policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodPhase {
    /// Pending, Running or Unknown: the pod may hold its IPs.
    Active,
    /// Succeeded or Failed: its IPs may already belong to another pod.
    Finished,
}

/// A pod, reduced to what policy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Namespace and name.
    pub id: ObjectRef,
    /// Labels.
    pub labels: Labels,
    /// The node it runs on, if scheduled (shared: a node's pods repeat it).
    pub node: Option<Arc<str>>,
    /// Its IPs, at most one per family.
    pub ips: Vec<IpAddr>,
    /// Whether it uses the node's network namespace.
    pub host_network: bool,
    /// The addresses of its node (`status.hostIPs`): traffic between a pod and its own node is
    /// always allowed.
    pub host_ips: Vec<IpAddr>,
    /// Phase.
    pub phase: PodPhase,
    /// Declared container ports.
    pub ports: Vec<ContainerPort>,
    /// The object that controls it (its ReplicaSet, Job, StatefulSet...), if any (boxed: the
    /// agent keeps none).
    pub owner: Option<Box<OwnerRef>>,
    /// Whether it was read from a running cluster (it has a `status`), rather than from a manifest
    /// that was never applied.
    pub live: bool,
    /// The workload it is reported as, once resolved ([`crate::workload`]); `None` for the agent,
    /// which needs none (boxed: the agent's pods do not pay for it inline).
    pub workload: Option<Box<WorkloadRef>>,
}

impl Pod {
    /// Makes the strings the pod repeats from other pods (its namespace, label keys and values, its
    /// node's name, container port names, its owner) `interner`'s shared copies, and its lists no larger than
    /// they are.
    pub fn share(&mut self, interner: &mut Interner) {
        self.id.share(interner);
        self.labels.share(interner);
        if let Some(node) = &mut self.node {
            interner.share(node);
        }
        for port in &mut self.ports {
            if let Some(name) = &mut port.name {
                interner.share(name);
            }
        }
        if let Some(owner) = &mut self.owner {
            interner.share(&mut owner.kind);
            interner.share(&mut owner.name);
        }
        self.ips.shrink_to_fit();
        self.host_ips.shrink_to_fit();
        self.ports.shrink_to_fit();
    }

    /// Whether the pod takes part in policy: it has an IP of its own and is not finished.
    /// Host-network, IP-less and finished pods are neither selected nor matched as peers.
    pub fn participates(&self) -> bool {
        !self.host_network && !self.ips.is_empty() && self.phase == PodPhase::Active
    }

    /// The pod's IP of one family.
    pub fn ip(&self, family: Family) -> Option<IpAddr> {
        self.ips.iter().copied().find(|ip| Family::of(ip) == family)
    }

    /// The workload the pod is reported as: its resolved workload, or itself (`namespace/name[Pod]`).
    pub fn workload_ref(&self) -> WorkloadRef {
        self.workload
            .as_deref()
            .cloned()
            .unwrap_or_else(|| WorkloadRef::new(&*self.id.namespace, &*self.id.name, "Pod"))
    }

    /// The number a named port resolves to on this pod, if it declares that name for the protocol.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
    }
}

/// A traffic direction, from the selected pod's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Traffic to the selected pod.
    Ingress,
    /// Traffic from the selected pod.
    Egress,
}

impl Direction {
    /// Both directions.
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// `ingress` or `egress`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which namespaces a pod peer draws from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NamespaceScope {
    /// The policy's own namespace (a peer with `podSelector` only).
    Own(String),
    /// Namespaces matching a selector (`namespaceSelector`, `{}` for all).
    Selected(LabelSelector),
}

/// The pods a peer selects: namespaces, then pods within them (the AND of one peer).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodPeer {
    /// The namespaces.
    pub namespaces: NamespaceScope,
    /// The pods in those namespaces (`{}` for all).
    pub pods: LabelSelector,
}

impl PodPeer {
    /// Whether the peer selects `pod`, whose namespace carries `namespace_labels` (the pod-by-pod
    /// form of [`crate::index::ClusterIndex::peer_pods`]; participation is the caller's to check).
    pub fn selects(&self, pod: &Pod, namespace_labels: &Labels) -> bool {
        let in_scope = match &self.namespaces {
            NamespaceScope::Own(ns) => *pod.id.namespace == **ns,
            NamespaceScope::Selected(s) => s.matches(namespace_labels),
        };
        in_scope && self.pods.matches(&pod.labels)
    }
}

impl fmt::Display for PodPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespaces {
            NamespaceScope::Own(ns) => write!(f, "pods {} in namespace {ns}", self.pods),
            NamespaceScope::Selected(s) => {
                write!(f, "pods {} in namespaces {s}", self.pods)
            }
        }
    }
}

/// An `ipBlock`: a prefix minus exceptions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpBlock {
    /// The prefix.
    pub cidr: Cidr,
    /// Prefixes inside it that are excluded.
    pub except: Vec<Cidr>,
}

impl IpBlock {
    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ipBlock {}", self.cidr)?;
        if !self.except.is_empty() {
            let ex: Vec<String> = self.except.iter().map(|c| c.to_string()).collect();
            write!(f, " except {}", ex.join(", "))?;
        }
        Ok(())
    }
}

/// One entry of a rule's `from` or `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// Pods chosen by selectors.
    Pods(PodPeer),
    /// Addresses.
    IpBlock(IpBlock),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Pods(p) => p.fmt(f),
            Peer::IpBlock(b) => b.fmt(f),
        }
    }
}

/// The port part of one `ports` entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortSpec {
    /// Every port of the protocol (`port` absent).
    Any,
    /// A number or an inclusive `port`..`endPort` range.
    Range(u16, u16),
    /// A named port, resolved against the destination pod's container ports.
    Named(String),
}

/// One `ports` entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyPort {
    /// The protocol (TCP when omitted).
    pub protocol: Protocol,
    /// The port or ports.
    pub port: PortSpec,
}

impl fmt::Display for PolicyPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.port {
            PortSpec::Any => write!(f, "any/{}", self.protocol),
            PortSpec::Range(a, b) if a == b => write!(f, "{a}/{}", self.protocol),
            PortSpec::Range(a, b) => write!(f, "{a}-{b}/{}", self.protocol),
            PortSpec::Named(n) => write!(f, "{n}/{}", self.protocol),
        }
    }
}

/// One ingress or egress rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `from`/`to`; empty means every source or destination.
    pub peers: Vec<Peer>,
    /// `ports`; empty means every port and protocol.
    pub ports: Vec<PolicyPort>,
}

/// A NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Namespace and name.
    pub id: ObjectRef,
    /// The pods of its namespace it applies to.
    pub pod_selector: LabelSelector,
    /// Whether it isolates selected pods for ingress (`Ingress` in effective `policyTypes`).
    pub isolates_ingress: bool,
    /// Whether it isolates selected pods for egress.
    pub isolates_egress: bool,
    /// Ingress rules.
    pub ingress: Vec<Rule>,
    /// Egress rules.
    pub egress: Vec<Rule>,
    /// Whether the policy is enforced or only audited (annotation `nftpolicy.io/enforcement`).
    pub enforcement: Enforcement,
}

/// How a policy takes effect, from its `nftpolicy.io/enforcement` annotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Enforcement {
    /// Enforced (no annotation, or `enforce`).
    #[default]
    Enforce,
    /// `audit`: compiled as if enforced, but what it alone would deny is counted (and logged with
    /// the deny log) as "would deny" and judged as if the policy did not exist.
    Audit,
}

/// The annotation that puts a NetworkPolicy in audit mode (`audit`) or says it is enforced
/// (`enforce`, the same as no annotation).
pub const ENFORCEMENT_ANNOTATION: &str = "nftpolicy.io/enforcement";

impl Enforcement {
    /// Every mode, in the order messages list them.
    pub const ALL: [Enforcement; 2] = [Enforcement::Enforce, Enforcement::Audit];

    /// Parses the annotation's value (`enforce` or `audit`, exactly).
    pub fn from_annotation(value: &str) -> Option<Enforcement> {
        Enforcement::ALL
            .into_iter()
            .find(|e| e.as_annotation() == value)
    }

    /// The annotation's value: `enforce` or `audit`.
    pub fn as_annotation(self) -> &'static str {
        match self {
            Enforcement::Enforce => "enforce",
            Enforcement::Audit => "audit",
        }
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_annotation())
    }
}

impl Policy {
    /// Whether the policy is in audit mode (annotation `nftpolicy.io/enforcement: audit`).
    pub fn is_audit(&self) -> bool {
        self.enforcement == Enforcement::Audit
    }

    /// Whether the policy isolates its pods in `direction`.
    pub fn isolates(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.isolates_ingress,
            Direction::Egress => self.isolates_egress,
        }
    }

    /// The rules of one direction. Rules of a direction the policy does not isolate have no effect.
    pub fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_refs_order_by_namespace_then_name_and_print_namespace_slash_name() {
        let mut refs = [
            ObjectRef::new("b", "a"),
            ObjectRef::new("a", "z"),
            ObjectRef::new("a", "b"),
            ObjectRef::new("", "n"),
            ObjectRef::new("a-b", "a"),
        ];
        refs.sort();
        let printed: Vec<String> = refs.iter().map(ToString::to_string).collect();
        // As (namespace, name) pairs of strings sort: a range from `(ns, "")` holds the
        // namespace's objects first.
        assert_eq!(printed, ["/n", "a/b", "a/z", "a-b/a", "b/a"]);
        let as_strings: Vec<(String, String)> = refs
            .iter()
            .map(|r| (r.namespace.to_string(), r.name.to_string()))
            .collect();
        let mut sorted = as_strings.clone();
        sorted.sort();
        assert_eq!(as_strings, sorted);
    }

    #[test]
    fn equal_object_refs_hash_alike_whatever_their_allocations() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        let hash = |r: &ObjectRef| {
            let mut h = DefaultHasher::new();
            r.hash(&mut h);
            h.finish()
        };
        let a = ObjectRef::new("shop", "web");
        let b = ObjectRef::new(String::from("shop"), String::from("web"));
        assert!(!Arc::ptr_eq(&a.name, &b.name));
        assert_eq!(a, b);
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(a, ObjectRef::new("shopw", "eb"));
    }

    #[test]
    fn refs_of_one_namespace_shared_through_an_interner_are_one_allocation() {
        let mut interner = Interner::new();
        let mut a = ObjectRef::new("shop", "web");
        let mut b = ObjectRef::new("shop", "db");
        let mut c = ObjectRef::new("bank", "web");
        assert!(!Arc::ptr_eq(&a.namespace, &b.namespace));
        a.share(&mut interner);
        b.share(&mut interner);
        c.share(&mut interner);
        assert!(Arc::ptr_eq(&a.namespace, &b.namespace));
        assert!(!Arc::ptr_eq(&a.namespace, &c.namespace));
        assert!(!Arc::ptr_eq(&a.name, &c.name), "names are not interned");
    }
}
