//! [`ClusterState`]: the validated namespaces, pods, policies, ClusterNetworkPolicies and Nodes
//! the compiler works from.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::cidr::Family;
use crate::intern::Interner;
use crate::model::{
    ClusterNetworkPolicy, Namespace, Node, ObjectRef, Pod, Policy, Workload, WorkloadRef,
};
use crate::object::{Kind, Object};
use crate::selector::Labels;

/// Packs a map's nodes after a bulk load. A map filled in key order (a list, a directory read)
/// leaves each node about half full, as every insertion at the end splits the last one; rebuilding
/// it from its own sorted entries fills them. The value is unchanged.
pub fn pack<K: Ord, V>(map: &mut BTreeMap<K, V>) {
    *map = std::mem::take(map).into_iter().collect();
}

/// Everything the compiler knows about a cluster.
///
/// Namespaces that pods or policies refer to but that were never declared exist implicitly, with only
/// their `kubernetes.io/metadata.name` label.
///
/// The label keys and values of the objects it holds are shared through its [`Interner`]: a
/// cluster's pods repeat a few hundred strings.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    namespaces: BTreeMap<String, Namespace>,
    pods: BTreeMap<ObjectRef, Pod>,
    policies: BTreeMap<ObjectRef, Policy>,
    workloads: BTreeMap<WorkloadRef, Workload>,
    cluster_policies: BTreeMap<String, ClusterNetworkPolicy>,
    node_objects: BTreeMap<String, Node>,
    /// The shared copies of the strings the objects repeat (not part of the cluster's value).
    interner: Interner,
}

impl PartialEq for ClusterState {
    fn eq(&self, other: &Self) -> bool {
        self.namespaces == other.namespaces
            && self.pods == other.pods
            && self.policies == other.policies
            && self.workloads == other.workloads
            && self.cluster_policies == other.cluster_policies
            && self.node_objects == other.node_objects
    }
}

impl Eq for ClusterState {}

impl ClusterState {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a namespace.
    pub fn upsert_namespace(&mut self, mut ns: Namespace) {
        ns.labels.share(&mut self.interner);
        self.namespaces.insert(ns.name.clone(), ns);
    }

    /// Adds or replaces a pod (and its namespace, implicitly, if unknown).
    ///
    /// The pod's `id` and its key in the store are one allocation: a pod that replaces another
    /// takes the key already held.
    pub fn upsert_pod(&mut self, mut pod: Pod) {
        pod.share(&mut self.interner);
        if let Some((key, _)) = self.pods.get_key_value(&pod.id) {
            pod.id = key.clone();
        }
        self.ensure_namespace(&pod.id.namespace);
        self.pods.insert(pod.id.clone(), pod);
    }

    /// Adds or replaces a policy (and its namespace, implicitly, if unknown). Its `id` and its
    /// key are one allocation, as a pod's.
    pub fn upsert_policy(&mut self, mut policy: Policy) {
        policy.id.share(&mut self.interner);
        if let Some((key, _)) = self.policies.get_key_value(&policy.id) {
            policy.id = key.clone();
        }
        self.ensure_namespace(&policy.id.namespace);
        self.policies.insert(policy.id.clone(), policy);
    }

    /// Removes a pod; returns it if it existed.
    pub fn remove_pod(&mut self, id: &ObjectRef) -> Option<Pod> {
        self.pods.remove(id)
    }

    /// Removes a policy; returns it if it existed.
    pub fn remove_policy(&mut self, id: &ObjectRef) -> Option<Policy> {
        self.policies.remove(id)
    }

    /// Removes a namespace's declaration. Pods and policies in it keep it alive implicitly.
    pub fn remove_namespace(&mut self, name: &str) -> Option<Namespace> {
        let removed = self.namespaces.remove(name);
        let still_used = self.pods.keys().any(|p| &*p.namespace == name)
            || self.policies.keys().any(|p| &*p.namespace == name)
            || self.workloads.keys().any(|w| w.namespace == name);
        if still_used {
            self.ensure_namespace(name);
        }
        removed
    }

    /// Adds or replaces an object of any kind.
    pub fn upsert(&mut self, object: Object) {
        match object {
            Object::Namespace(n) => self.upsert_namespace(n),
            Object::Pod(p) => self.upsert_pod(p),
            Object::Policy(p) => self.upsert_policy(p),
            Object::Workload(w) => self.upsert_workload(w),
            Object::ClusterPolicy(p) => self.upsert_cluster_policy(p),
            Object::Node(n) => self.upsert_node(n),
        }
    }

    /// Adds or replaces a ClusterNetworkPolicy.
    pub fn upsert_cluster_policy(&mut self, policy: ClusterNetworkPolicy) {
        self.cluster_policies.insert(policy.name.clone(), policy);
    }

    /// Removes a ClusterNetworkPolicy; returns it if it existed.
    pub fn remove_cluster_policy(&mut self, name: &str) -> Option<ClusterNetworkPolicy> {
        self.cluster_policies.remove(name)
    }

    /// All ClusterNetworkPolicies, by name (both tiers; see [`ClusterNetworkPolicy::order_key`]
    /// for the order they are evaluated in).
    pub fn cluster_policies(&self) -> &BTreeMap<String, ClusterNetworkPolicy> {
        &self.cluster_policies
    }

    /// A ClusterNetworkPolicy by name.
    pub fn cluster_policy(&self, name: &str) -> Option<&ClusterNetworkPolicy> {
        self.cluster_policies.get(name)
    }

    /// Adds or replaces a Node.
    pub fn upsert_node(&mut self, mut node: Node) {
        node.labels.share(&mut self.interner);
        self.node_objects.insert(node.name.clone(), node);
    }

    /// Removes a Node; returns it if it existed.
    pub fn remove_node(&mut self, name: &str) -> Option<Node> {
        self.node_objects.remove(name)
    }

    /// All Node objects, by name (what `nodes` peers select; [`ClusterState::nodes`] is the names
    /// of the nodes pods run on, whether or not their Node objects were read).
    pub fn node_objects(&self) -> &BTreeMap<String, Node> {
        &self.node_objects
    }

    /// A Node object by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.node_objects.get(name)
    }

    /// Adds or replaces a workload (and its namespace, implicitly, if unknown).
    pub fn upsert_workload(&mut self, mut workload: Workload) {
        workload.labels.share(&mut self.interner);
        self.ensure_namespace(&workload.id.namespace);
        self.workloads.insert(workload.id.clone(), workload);
    }

    /// All workloads, by reference.
    pub fn workloads(&self) -> &BTreeMap<WorkloadRef, Workload> {
        &self.workloads
    }

    /// Removes an object of any kind by its key ([`Object::key`]); returns whether it existed. A
    /// namespace that pods or policies are still in stays, implicitly.
    pub fn remove(&mut self, kind: Kind, key: &ObjectRef) -> bool {
        match kind {
            Kind::Namespace => self.remove_namespace(&key.name).is_some(),
            Kind::Pod => self.remove_pod(key).is_some(),
            Kind::NetworkPolicy => self.remove_policy(key).is_some(),
            Kind::ClusterNetworkPolicy => self.remove_cluster_policy(&key.name).is_some(),
            Kind::Node => self.remove_node(&key.name).is_some(),
            workload => self
                .workloads
                .remove(&WorkloadRef::new(
                    &*key.namespace,
                    &*key.name,
                    workload.as_str(),
                ))
                .is_some(),
        }
    }

    /// An object of any kind by its key (implicit namespaces included).
    pub fn get(&self, kind: Kind, key: &ObjectRef) -> Option<Object> {
        match kind {
            Kind::Namespace => self.namespace(&key.name).cloned().map(Object::Namespace),
            Kind::Pod => self.pod(key).cloned().map(Object::Pod),
            Kind::NetworkPolicy => self.policies.get(key).cloned().map(Object::Policy),
            Kind::ClusterNetworkPolicy => self
                .cluster_policy(&key.name)
                .cloned()
                .map(Object::ClusterPolicy),
            Kind::Node => self.node(&key.name).cloned().map(Object::Node),
            workload => self
                .workloads
                .get(&WorkloadRef::new(
                    &*key.namespace,
                    &*key.name,
                    workload.as_str(),
                ))
                .cloned()
                .map(Object::Workload),
        }
    }

    /// The keys of every object of a kind (implicit namespaces included).
    pub fn keys(&self, kind: Kind) -> Vec<ObjectRef> {
        match kind {
            Kind::Namespace => self
                .namespaces
                .keys()
                .map(|n| ObjectRef::new("", n))
                .collect(),
            Kind::Pod => self.pods.keys().cloned().collect(),
            Kind::NetworkPolicy => self.policies.keys().cloned().collect(),
            Kind::ClusterNetworkPolicy => self
                .cluster_policies
                .keys()
                .map(|n| ObjectRef::new("", n))
                .collect(),
            Kind::Node => self
                .node_objects
                .keys()
                .map(|n| ObjectRef::new("", n))
                .collect(),
            workload => self
                .workloads
                .keys()
                .filter(|w| w.kind == workload.as_str())
                .map(|w| ObjectRef::new(&w.namespace, &w.name))
                .collect(),
        }
    }

    fn ensure_namespace(&mut self, name: &str) {
        if !self.namespaces.contains_key(name) {
            self.namespaces
                .insert(name.to_string(), Namespace::new(name, Labels::new()));
        }
    }

    /// All namespaces, by name.
    pub fn namespaces(&self) -> &BTreeMap<String, Namespace> {
        &self.namespaces
    }

    /// A namespace by name.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    /// Mutable access to a namespace (to relabel it).
    pub fn namespace_mut(&mut self, name: &str) -> Option<&mut Namespace> {
        self.namespaces.get_mut(name)
    }

    /// Packs the maps' nodes after a bulk load (see [`pack`]). The value is unchanged.
    pub fn compact(&mut self) {
        pack(&mut self.namespaces);
        pack(&mut self.pods);
        pack(&mut self.policies);
        pack(&mut self.workloads);
        pack(&mut self.cluster_policies);
        pack(&mut self.node_objects);
    }

    /// All pods, including those that take no part in policy.
    pub fn pods(&self) -> &BTreeMap<ObjectRef, Pod> {
        &self.pods
    }

    /// A pod by reference.
    pub fn pod(&self, id: &ObjectRef) -> Option<&Pod> {
        self.pods.get(id)
    }

    /// Mutable access to a pod (to relabel it).
    pub fn pod_mut(&mut self, id: &ObjectRef) -> Option<&mut Pod> {
        self.pods.get_mut(id)
    }

    /// All policies.
    pub fn policies(&self) -> &BTreeMap<ObjectRef, Policy> {
        &self.policies
    }

    /// Pods that take part in policy (see [`Pod::participates`]), in `namespace/name` order.
    pub fn participating_pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values().filter(|p| p.participates())
    }

    /// The participating pod that holds `ip`, if any.
    pub fn pod_by_ip(&self, ip: &IpAddr) -> Option<&Pod> {
        self.participating_pods().find(|p| p.ips.contains(ip))
    }

    /// Nodes that run at least one participating pod, sorted (their names, as the pods'
    /// `spec.nodeName` give them; [`ClusterState::node_objects`] holds the Node objects read).
    pub fn nodes(&self) -> BTreeSet<&str> {
        self.participating_pods()
            .filter_map(|p| p.node.as_deref())
            .collect()
    }

    /// Address families used by participating pods; IPv4 alone when there are no pods.
    pub fn families(&self) -> BTreeSet<Family> {
        let mut families: BTreeSet<Family> = self
            .participating_pods()
            .flat_map(|p| p.ips.iter().map(Family::of))
            .collect();
        if families.is_empty() {
            families.insert(Family::V4);
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::PodPhase;

    fn pod(namespace: &str, name: &str, app: &str) -> Pod {
        Pod {
            id: ObjectRef::new(namespace, name),
            labels: Labels::from([("app".to_string(), app.to_string())]),
            node: Some("node-0".into()),
            ips: vec!["10.0.0.1".parse().expect("ip")],
            host_network: false,
            host_ips: vec![],
            phase: PodPhase::Active,
            ports: vec![],
            owner: None,
            live: true,
            workload: None,
        }
    }

    /// The store's key of a pod.
    fn key<'a>(cluster: &'a ClusterState, id: &ObjectRef) -> &'a ObjectRef {
        cluster.pods().get_key_value(id).expect("pod").0
    }

    #[test]
    fn a_pods_id_and_its_key_are_one_allocation_and_its_namespace_is_shared() {
        let mut cluster = ClusterState::new();
        cluster.upsert_pod(pod("shop", "web", "web"));
        cluster.upsert_pod(pod("shop", "db", "db"));
        let web = cluster.pod(&ObjectRef::new("shop", "web")).expect("web");
        let db = cluster.pod(&ObjectRef::new("shop", "db")).expect("db");
        assert!(Arc::ptr_eq(&web.id.namespace, &db.id.namespace));
        let web_key = key(&cluster, &web.id);
        assert!(Arc::ptr_eq(&web_key.name, &web.id.name));
        assert!(Arc::ptr_eq(&web_key.namespace, &web.id.namespace));

        // A new version of the pod takes the key already held.
        let held = Arc::clone(&web_key.name);
        cluster.upsert_pod(pod("shop", "web", "api"));
        let web = cluster.pod(&ObjectRef::new("shop", "web")).expect("web");
        assert_eq!(web.labels.get("app"), Some("api"));
        assert!(Arc::ptr_eq(&web.id.name, &held));
        assert!(Arc::ptr_eq(&key(&cluster, &web.id).name, &held));
    }

    #[test]
    fn a_policys_namespace_is_shared_with_its_pods() {
        let mut cluster = ClusterState::new();
        cluster.upsert_pod(pod("shop", "web", "web"));
        cluster.upsert_policy(Policy {
            id: ObjectRef::new("shop", "deny"),
            pod_selector: Default::default(),
            isolates_ingress: true,
            isolates_egress: false,
            ingress: vec![],
            egress: vec![],
            enforcement: Default::default(),
        });
        let policy = cluster
            .policies()
            .get(&ObjectRef::new("shop", "deny"))
            .expect("policy");
        let web = cluster.pod(&ObjectRef::new("shop", "web")).expect("web");
        assert!(Arc::ptr_eq(&policy.id.namespace, &web.id.namespace));
    }
}
