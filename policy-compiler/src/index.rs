//! Label indexes that resolve selectors without scanning every pod for every selector.
//!
//! A selector's positive requirements (`In`, `Exists`) pick candidates from an index of
//! `key=value` → pods (or namespaces); the remaining requirements filter only those candidates. A
//! selector with no positive requirement starts from the pods of the namespaces in scope.

use std::collections::HashMap;

use crate::cluster::ClusterState;
use crate::model::{NamespaceScope, Pod, PodPeer, Policy};
use crate::selector::{LabelSelector, Labels, Requirement};

/// An index from labels (borrowed from the objects) to the positions of objects in a list.
#[derive(Debug, Default)]
struct LabelIndex<'a> {
    by_label: HashMap<(&'a str, &'a str), Vec<usize>>,
    by_key: HashMap<&'a str, Vec<usize>>,
}

impl<'a> LabelIndex<'a> {
    fn build(labels: impl Iterator<Item = (usize, &'a Labels)>) -> Self {
        let mut index = LabelIndex::default();
        for (i, labels) in labels {
            for (k, v) in labels {
                index.by_label.entry((k, v)).or_default().push(i);
                index.by_key.entry(k).or_default().push(i);
            }
        }
        index
    }

    /// The smallest candidate list any positive requirement of `selector` allows, or `None` when the
    /// selector has no positive requirement.
    fn candidates(&self, selector: &LabelSelector) -> Option<Vec<usize>> {
        let mut best: Option<Vec<usize>> = None;
        for r in selector.requirements() {
            let list = match r {
                Requirement::In(k, vs) => {
                    let mut list: Vec<usize> = vs
                        .iter()
                        .flat_map(|v| {
                            self.by_label
                                .get(&(k.as_str(), v.as_str()))
                                .into_iter()
                                .flatten()
                                .copied()
                        })
                        .collect();
                    list.sort_unstable();
                    list.dedup();
                    list
                }
                Requirement::Exists(k) => self.by_key.get(k.as_str()).cloned().unwrap_or_default(),
                Requirement::NotIn(..) | Requirement::DoesNotExist(_) => continue,
            };
            if best.as_ref().is_none_or(|b| list.len() < b.len()) {
                best = Some(list);
            }
        }
        best
    }
}

/// Selector resolution over the participating pods and the namespaces of a cluster.
#[derive(Debug)]
pub struct ClusterIndex<'a> {
    cluster: &'a ClusterState,
    pods: Vec<&'a Pod>,
    /// Per namespace: its pods, and a label index over them.
    pods_by_namespace: HashMap<&'a str, (Vec<usize>, LabelIndex<'a>)>,
    namespaces: Vec<&'a str>,
    namespace_labels: LabelIndex<'a>,
}

impl<'a> ClusterIndex<'a> {
    /// Indexes a cluster's participating pods and its namespaces.
    pub fn new(cluster: &'a ClusterState) -> Self {
        let pods: Vec<&Pod> = cluster.participating_pods().collect();
        let mut by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, p) in pods.iter().enumerate() {
            by_namespace.entry(&*p.id.namespace).or_default().push(i);
        }
        let pods_by_namespace = by_namespace
            .into_iter()
            .map(|(ns, positions)| {
                let index = LabelIndex::build(positions.iter().map(|i| (*i, &pods[*i].labels)));
                (ns, (positions, index))
            })
            .collect();
        let namespaces: Vec<&str> = cluster.namespaces().keys().map(String::as_str).collect();
        let namespace_labels =
            LabelIndex::build(cluster.namespaces().values().map(|n| &n.labels).enumerate());
        Self {
            cluster,
            pods,
            pods_by_namespace,
            namespaces,
            namespace_labels,
        }
    }

    /// The cluster this index covers.
    pub fn cluster(&self) -> &'a ClusterState {
        self.cluster
    }

    /// Participating pods, in `namespace/name` order; other methods return positions in this list.
    pub fn pods(&self) -> &[&'a Pod] {
        &self.pods
    }

    /// Names of the namespaces a selector matches, sorted.
    pub fn select_namespaces(&self, selector: &LabelSelector) -> Vec<&'a str> {
        let all = self.cluster.namespaces();
        let matches = |name: &&str| all.get(*name).is_some_and(|n| selector.matches(&n.labels));
        match self.namespace_labels.candidates(selector) {
            Some(c) => c
                .into_iter()
                .map(|i| self.namespaces[i])
                .filter(matches)
                .collect(),
            None => self.namespaces.iter().copied().filter(matches).collect(),
        }
    }

    /// Positions of the pods in `namespaces` that `selector` matches, sorted. Each namespace is
    /// looked up in its own label index, so the cost follows the pods a selector can match there.
    pub fn select_pods(&self, namespaces: &[&str], selector: &LabelSelector) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for ns in namespaces {
            let Some((positions, index)) = self.pods_by_namespace.get(ns) else {
                continue;
            };
            let matches = |i: &usize| selector.matches(&self.pods[*i].labels);
            match index.candidates(selector) {
                Some(c) => out.extend(c.into_iter().filter(matches)),
                None => out.extend(positions.iter().copied().filter(matches)),
            }
        }
        out.sort_unstable();
        out
    }

    /// Positions of the pods a pod peer selects, cluster-wide.
    pub fn peer_pods(&self, peer: &PodPeer) -> Vec<usize> {
        match &peer.namespaces {
            NamespaceScope::Own(ns) => self.select_pods(&[ns.as_str()], &peer.pods),
            NamespaceScope::Selected(s) => {
                let namespaces = self.select_namespaces(s);
                self.select_pods(&namespaces, &peer.pods)
            }
        }
    }

    /// Positions of the pods a policy applies to (its `podSelector` in its namespace).
    pub fn policy_targets(&self, policy: &Policy) -> Vec<usize> {
        self.select_pods(&[&*policy.id.namespace], &policy.pod_selector)
    }
}
