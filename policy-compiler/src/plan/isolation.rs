//! Isolation: which local pods are isolated, per direction, and by which policies.
//!
//! A pod is isolated for ingress when any policy of its namespace selects it and has `Ingress` in its
//! `policyTypes`; likewise for egress. Isolation comes from selection, not from rules; a pod that no
//! policy isolates in a direction is not in that direction's verdict map (default allow).
//!
//! Audit policies (`nftpolicy.io/enforcement: audit`) are kept apart: they isolate nothing, and a
//! pod only they would isolate is judged by its audit group (see [`super`]); under `audit_all`
//! every policy isolates as if enforced.
//!
//! Beside isolation, the plan records the ClusterNetworkPolicies whose subject holds each pod, in
//! evaluation order (tier, priority, name): the tiers judge a pod whether or not it is isolated.

use std::collections::BTreeSet;

use crate::cidr::Family;
use crate::cluster::ClusterState;
use crate::index::ClusterIndex;
use crate::model::{ClusterNetworkPolicy, Direction, Enforcement, ObjectRef, Pod, Policy, Subject};
use crate::selector::LabelSelector;

/// A local pod and the policies that isolate it, per direction.
#[derive(Debug, Clone)]
pub struct LocalPod<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Policies isolating it for ingress, by id.
    pub ingress: Vec<&'a Policy>,
    /// Policies isolating it for egress, by id.
    pub egress: Vec<&'a Policy>,
    /// Audit policies that would isolate it for ingress, by id (with `audit_all`, every policy
    /// is in `ingress` instead).
    pub audit_ingress: Vec<&'a Policy>,
    /// Audit policies that would isolate it for egress, by id.
    pub audit_egress: Vec<&'a Policy>,
    /// ClusterNetworkPolicies whose subject holds it, by tier, priority and name.
    pub cluster_policies: Vec<&'a ClusterNetworkPolicy>,
}

impl<'a> LocalPod<'a> {
    /// Policies isolating the pod in `direction` (the enforced ones).
    pub fn policies(&self, direction: Direction) -> &[&'a Policy] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Audit policies that would isolate the pod in `direction`.
    pub fn audit_policies(&self, direction: Direction) -> &[&'a Policy] {
        match direction {
            Direction::Ingress => &self.audit_ingress,
            Direction::Egress => &self.audit_egress,
        }
    }
}

/// What one node enforces: its participating pods and the policies isolating each.
#[derive(Debug, Clone)]
pub struct NodePlan<'a> {
    /// The node's name.
    pub node: String,
    /// Address families in the cluster.
    pub families: BTreeSet<Family>,
    /// The node's participating pods (isolated or not), in `namespace/name` order.
    pub pods: Vec<LocalPod<'a>>,
}

/// For every participating pod, the policies that isolate it per direction, computed once for the
/// cluster through the index.
#[derive(Debug)]
pub struct ClusterPlan<'a> {
    index: ClusterIndex<'a>,
    /// pod position → (ingress, egress) policies, enforced and audited apart.
    isolation: Vec<Isolation<'a>>,
    /// pod position → ClusterNetworkPolicies selecting it, in evaluation order.
    cluster_policies: Vec<Vec<&'a ClusterNetworkPolicy>>,
}

impl<'a> ClusterPlan<'a> {
    /// Resolves every policy's `podSelector`.
    pub fn new(index: ClusterIndex<'a>) -> Self {
        let mut isolation = vec![Isolation::default(); index.pods().len()];
        for policy in index.cluster().policies().values() {
            if !policy.isolates_ingress && !policy.isolates_egress {
                continue;
            }
            for i in index.policy_targets(policy) {
                isolation[i].add(policy);
            }
        }
        let mut cluster_policies = vec![Vec::new(); index.pods().len()];
        for policy in ordered_cluster_policies(index.cluster()) {
            for i in subject_pods(&index, &policy.subject) {
                cluster_policies[i].push(policy);
            }
        }
        Self {
            index,
            isolation,
            cluster_policies,
        }
    }

    /// The index the plan was built from.
    pub fn index(&self) -> &ClusterIndex<'a> {
        &self.index
    }

    /// The plan for one node, every policy as its annotation says.
    pub fn node(&self, node: &str) -> NodePlan<'a> {
        self.node_with(node, false)
    }

    /// The plan for one node; with `audit_all`, audit policies isolate as enforced ones do (the
    /// whole ruleset is then in audit mode, its drops turned into "would deny").
    pub fn node_with(&self, node: &str, audit_all: bool) -> NodePlan<'a> {
        let pods = self
            .index
            .pods()
            .iter()
            .zip(self.isolation.iter().zip(&self.cluster_policies))
            .filter(|(p, _)| p.node.as_deref() == Some(node))
            .map(|(pod, (isolation, cluster_policies))| {
                isolation.local_pod(pod, cluster_policies.clone(), audit_all)
            })
            .collect();
        NodePlan {
            node: node.to_string(),
            families: self.index.cluster().families(),
            pods,
        }
    }
}

/// The policies isolating one pod: (ingress, egress), enforced and audited.
#[derive(Debug, Clone, Default)]
struct Isolation<'a> {
    enforced: (Vec<&'a Policy>, Vec<&'a Policy>),
    audited: (Vec<&'a Policy>, Vec<&'a Policy>),
}

impl<'a> Isolation<'a> {
    /// Counts `policy`, which selects the pod, by its enforcement and the directions it isolates
    /// (callers give policies in id order).
    fn add(&mut self, policy: &'a Policy) {
        let lists = match policy.enforcement {
            Enforcement::Enforce => &mut self.enforced,
            Enforcement::Audit => &mut self.audited,
        };
        if policy.isolates_ingress {
            lists.0.push(policy);
        }
        if policy.isolates_egress {
            lists.1.push(policy);
        }
    }

    /// The local pod these policies isolate; with `audit_all`, audit policies isolate as enforced
    /// ones do.
    fn local_pod(
        &self,
        pod: &'a Pod,
        cluster_policies: Vec<&'a ClusterNetworkPolicy>,
        audit_all: bool,
    ) -> LocalPod<'a> {
        let (enforced, audited) = (&self.enforced, &self.audited);
        let merge = |a: &[&'a Policy], b: &[&'a Policy]| {
            let mut all: Vec<&'a Policy> = a.iter().chain(b).copied().collect();
            all.sort_by(|x, y| x.id.cmp(&y.id));
            all
        };
        if audit_all {
            LocalPod {
                pod,
                ingress: merge(&enforced.0, &audited.0),
                egress: merge(&enforced.1, &audited.1),
                audit_ingress: Vec::new(),
                audit_egress: Vec::new(),
                cluster_policies,
            }
        } else {
            LocalPod {
                pod,
                ingress: enforced.0.clone(),
                egress: enforced.1.clone(),
                audit_ingress: audited.0.clone(),
                audit_egress: audited.1.clone(),
                cluster_policies,
            }
        }
    }
}

/// The ClusterNetworkPolicies of a cluster in evaluation order: tier, then priority and name.
pub(super) fn ordered_cluster_policies(cluster: &ClusterState) -> Vec<&ClusterNetworkPolicy> {
    let mut ordered: Vec<&ClusterNetworkPolicy> = cluster.cluster_policies().values().collect();
    ordered.sort_by(|a, b| (a.tier, a.order_key()).cmp(&(b.tier, b.order_key())));
    ordered
}

/// The plan of one participating pod, resolved for that pod alone (no index over the cluster): the
/// policies of its namespace that select it, and of `ordered` (see [`ordered_cluster_policies`])
/// those whose subject holds it. The same as [`ClusterPlan::node_with`] gives it.
pub(super) fn local_pod<'a>(
    cluster: &'a ClusterState,
    pod: &'a Pod,
    ordered: &[&'a ClusterNetworkPolicy],
    audit_all: bool,
) -> LocalPod<'a> {
    let namespace = &*pod.id.namespace;
    let mut isolation = Isolation::default();
    let first = ObjectRef::new(namespace, "");
    for (_, policy) in cluster
        .policies()
        .range(first..)
        .take_while(|(id, _)| &*id.namespace == namespace)
    {
        if (policy.isolates_ingress || policy.isolates_egress)
            && policy.pod_selector.matches(&pod.labels)
        {
            isolation.add(policy);
        }
    }
    let cluster_policies = ordered
        .iter()
        .copied()
        .filter(|c| subject_holds(cluster, pod, &c.subject))
        .collect();
    isolation.local_pod(pod, cluster_policies, audit_all)
}

/// Whether a ClusterNetworkPolicy `subject` holds `pod` (a namespace the cluster does not hold has
/// no labels).
pub(super) fn subject_holds(cluster: &ClusterState, pod: &Pod, subject: &Subject) -> bool {
    let empty = crate::selector::Labels::new();
    let namespace_labels = cluster
        .namespace(&pod.id.namespace)
        .map_or(&empty, |n| &n.labels);
    match subject {
        Subject::Namespaces(s) => s.matches(namespace_labels),
        Subject::Pods(p) => p.namespaces.matches(namespace_labels) && p.pods.matches(&pod.labels),
    }
}

/// Positions of the participating pods a ClusterNetworkPolicy subject holds (host-network pods do
/// not participate, so they are never subjects).
pub(super) fn subject_pods(index: &ClusterIndex<'_>, subject: &Subject) -> Vec<usize> {
    match subject {
        Subject::Namespaces(namespaces) => index.select_pods(
            &index.select_namespaces(namespaces),
            &LabelSelector::everything(),
        ),
        Subject::Pods(p) => index.select_pods(&index.select_namespaces(&p.namespaces), &p.pods),
    }
}
