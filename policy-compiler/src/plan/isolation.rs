//! Isolation: which local pods are isolated, per direction, and by which policies.
//!
//! A pod is isolated for ingress when any policy of its namespace selects it and has `Ingress` in its
//! `policyTypes`; likewise for egress. Isolation comes from selection, not from rules; a pod that no
//! policy isolates in a direction is not in that direction's verdict map (default allow).

use std::collections::BTreeSet;

use crate::cidr::Family;
use crate::index::ClusterIndex;
use crate::model::{Direction, Pod, Policy};

/// A local pod and the policies that isolate it, per direction.
#[derive(Debug, Clone)]
pub struct LocalPod<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Policies isolating it for ingress, by id.
    pub ingress: Vec<&'a Policy>,
    /// Policies isolating it for egress, by id.
    pub egress: Vec<&'a Policy>,
}

impl<'a> LocalPod<'a> {
    /// Policies isolating the pod in `direction`.
    pub fn policies(&self, direction: Direction) -> &[&'a Policy] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
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
    /// pod position → (ingress, egress) policies.
    isolation: Vec<(Vec<&'a Policy>, Vec<&'a Policy>)>,
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
        Self { index, isolation }
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
            .zip(&self.isolation)
            .filter(|(p, _)| p.node.as_deref() == Some(node))
            .map(|(pod, (ingress, egress))| LocalPod {
                pod,
                ingress: ingress.clone(),
                egress: egress.clone(),
            })
            .collect();
        NodePlan {
            node: node.to_string(),
            families: self.index.cluster().families(),
            pods,
        }
    }
}
