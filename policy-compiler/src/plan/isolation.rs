//! Isolation: which local pods are isolated, per direction, and by which policies.
//!
//! A pod is isolated for ingress when any policy of its namespace selects it and has `Ingress` in its
//! `policyTypes`; likewise for egress. Isolation comes from selection, not from rules; a pod that no
//! policy isolates in a direction is not in that direction's verdict map (default allow).
//!
//! Beside isolation, the plan records the ClusterNetworkPolicies whose subject holds each pod, in
//! evaluation order (tier, priority, name): the tiers judge a pod whether or not it is isolated.

use std::collections::BTreeSet;

use crate::cidr::Family;
use crate::index::ClusterIndex;
use crate::model::{ClusterNetworkPolicy, Direction, Pod, Policy, Subject, Tier};
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
    /// ClusterNetworkPolicies whose subject holds it, by tier, priority and name.
    pub cluster_policies: Vec<&'a ClusterNetworkPolicy>,
}

impl<'a> LocalPod<'a> {
    /// Policies isolating the pod in `direction`.
    pub fn policies(&self, direction: Direction) -> &[&'a Policy] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// The ClusterNetworkPolicies of `tier` that judge the pod's traffic in `direction` (those
    /// selecting it that have rules in that direction), in evaluation order.
    pub fn tier_policies(&self, tier: Tier, direction: Direction) -> Vec<&'a ClusterNetworkPolicy> {
        self.cluster_policies
            .iter()
            .copied()
            .filter(|c| c.tier == tier && !c.rules(direction).is_empty())
            .collect()
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
    /// pod position → (ingress, egress) policies.
    isolation: Vec<(Vec<&'a Policy>, Vec<&'a Policy>)>,
    /// pod position → ClusterNetworkPolicies selecting it, in evaluation order.
    cluster_policies: Vec<Vec<&'a ClusterNetworkPolicy>>,
}

impl<'a> ClusterPlan<'a> {
    /// Resolves every policy's `podSelector`.
    pub fn new(index: ClusterIndex<'a>) -> Self {
        let mut isolation = vec![(Vec::new(), Vec::new()); index.pods().len()];
        for policy in index.cluster().policies().values() {
            if !policy.isolates_ingress && !policy.isolates_egress {
                continue;
            }
            for i in index.policy_targets(policy) {
                if policy.isolates_ingress {
                    isolation[i].0.push(policy);
                }
                if policy.isolates_egress {
                    isolation[i].1.push(policy);
                }
            }
        }
        let mut cluster_policies = vec![Vec::new(); index.pods().len()];
        let mut ordered: Vec<&ClusterNetworkPolicy> =
            index.cluster().cluster_policies().values().collect();
        ordered.sort_by(|a, b| (a.tier, a.order_key()).cmp(&(b.tier, b.order_key())));
        for policy in ordered {
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

    /// The plan for one node.
    pub fn node(&self, node: &str) -> NodePlan<'a> {
        let pods = self
            .index
            .pods()
            .iter()
            .zip(self.isolation.iter().zip(&self.cluster_policies))
            .filter(|(p, _)| p.node.as_deref() == Some(node))
            .map(|(pod, ((ingress, egress), cluster_policies))| LocalPod {
                pod,
                ingress: ingress.clone(),
                egress: egress.clone(),
                cluster_policies: cluster_policies.clone(),
            })
            .collect();
        NodePlan {
            node: node.to_string(),
            families: self.index.cluster().families(),
            pods,
        }
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
