//! The object pipeline: the one place that knows the kinds nftpolicy reads.
//!
//! A raw object (a manifest document, a `List` item, a watch event's object) is identified here (its
//! [`Kind`], its namespace with the default applied, its name), converted into the compact model
//! ([`Object`]) or rejected with a located [`FieldError`], and keyed ([`Object::key`],
//! [`key_of`]). `policyc`'s input, the agent's `dir:` source and its Kubernetes source all go
//! through [`convert`]; adding a kind means one entry in [`Kind`] and its converter here (and, for
//! the agent, one watcher).

use serde_json::Value;

use serde::de::DeserializeOwned;

use crate::input::{
    cluster_policy_from_api, namespace_from_api, namespace_from_typed, node_from_api,
    node_from_typed, pod_from_api, pod_from_typed, policy_from_api, policy_from_typed,
    workload_from_api, FieldError, FieldResult, Location, RawObject,
};
use crate::intern::Interner;
use crate::model::{ClusterNetworkPolicy, Namespace, Node, ObjectRef, Pod, Policy, Workload};

/// The namespace of a namespaced object that names none, as `kubectl apply` without `-n` uses.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The kinds nftpolicy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1/Namespace`.
    Namespace,
    /// `v1/Pod`.
    Pod,
    /// `networking.k8s.io/v1/NetworkPolicy`.
    NetworkPolicy,
    /// `apps/v1/Deployment`.
    Deployment,
    /// `apps/v1/StatefulSet`.
    StatefulSet,
    /// `apps/v1/DaemonSet`.
    DaemonSet,
    /// `apps/v1/ReplicaSet`.
    ReplicaSet,
    /// `v1/ReplicationController`.
    ReplicationController,
    /// `batch/v1/Job`.
    Job,
    /// `batch/v1/CronJob`.
    CronJob,
    /// `policy.networking.k8s.io/v1beta1/ClusterNetworkPolicy` (v1alpha2 too: same schema).
    ClusterNetworkPolicy,
    /// `v1/Node`.
    Node,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 12] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::NetworkPolicy,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::ReplicaSet,
        Kind::ReplicationController,
        Kind::Job,
        Kind::CronJob,
        Kind::ClusterNetworkPolicy,
        Kind::Node,
    ];

    /// The workload kinds: objects with a pod template, read for offline review.
    pub const WORKLOADS: [Kind; 7] = [
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::ReplicaSet,
        Kind::ReplicationController,
        Kind::Job,
        Kind::CronJob,
    ];

    /// The kinds that decide what a node enforces: what the node agent watches. Workloads are for
    /// offline review only (their pods are what the agent sees). Nodes are read for the `nodes`
    /// peers of ClusterNetworkPolicies.
    pub const ENFORCED: [Kind; 5] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::NetworkPolicy,
        Kind::ClusterNetworkPolicy,
        Kind::Node,
    ];

    /// The API kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::ReplicationController => "ReplicationController",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            Kind::Node => "Node",
        }
    }

    /// Whether the kind is a workload: an object with a pod template.
    pub fn is_workload(self) -> bool {
        Kind::WORKLOADS.contains(&self)
    }

    /// Whether the node agent enforces objects of the kind (it is one of [`Kind::ENFORCED`]).
    pub fn is_enforced(self) -> bool {
        Kind::ENFORCED.contains(&self)
    }

    /// Whether the kind is a custom resource (defined by a CustomResourceDefinition): a cluster may
    /// serve none of its [`Kind::versions`], or only some of them.
    pub fn is_custom_resource(self) -> bool {
        matches!(self, Kind::ClusterNetworkPolicy)
    }

    /// The API group (empty for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Pod | Kind::ReplicationController | Kind::Node => "",
            Kind::NetworkPolicy => "networking.k8s.io",
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::ReplicaSet => "apps",
            Kind::Job | Kind::CronJob => "batch",
            Kind::ClusterNetworkPolicy => "policy.networking.k8s.io",
        }
    }

    /// The API versions read, preferred first. ClusterNetworkPolicy has two with the same schema:
    /// `v1beta1`, the storage version since network-policy-api v0.3.0, and `v1alpha2`, the only
    /// one of the v0.2 releases.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::ClusterNetworkPolicy => &["v1beta1", "v1alpha2"],
            _ => &["v1"],
        }
    }

    /// The preferred API version.
    pub fn version(self) -> &'static str {
        self.versions()[0]
    }

    /// `group/version` of the preferred version, or `version` for the core group.
    pub fn api_version(self) -> String {
        self.group_version(self.version())
    }

    /// `group/version` of one of the kind's versions, or `version` for the core group.
    pub fn group_version(self, version: &str) -> String {
        match self.group() {
            "" => version.to_string(),
            group => format!("{group}/{version}"),
        }
    }

    /// The resource's plural name, as in API paths and RBAC rules.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Pod => "pods",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::DaemonSet => "daemonsets",
            Kind::ReplicaSet => "replicasets",
            Kind::ReplicationController => "replicationcontrollers",
            Kind::Job => "jobs",
            Kind::CronJob => "cronjobs",
            Kind::ClusterNetworkPolicy => "clusternetworkpolicies",
            Kind::Node => "nodes",
        }
    }

    /// Whether objects of the kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Kind::Namespace | Kind::ClusterNetworkPolicy | Kind::Node
        )
    }

    /// The kind an API `kind` name denotes, if nftpolicy reads it.
    pub fn from_name(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// Whether an object of this kind with this `apiVersion` is one nftpolicy reads. Only
    /// ClusterNetworkPolicy's is checked (its group and one of [`Kind::versions`]): its name is
    /// not unique to network-policy-api. The others are read by kind alone, as they always were.
    pub fn reads_api_version(self, api_version: &str) -> bool {
        match self {
            Kind::ClusterNetworkPolicy => {
                api_version.split_once('/').is_some_and(|(group, version)| {
                    group == self.group() && self.versions().contains(&version)
                })
            }
            _ => true,
        }
    }

    /// The kind of a raw object (by its `kind` and `apiVersion` fields), if nftpolicy reads it.
    pub fn of(value: &Value) -> Option<Kind> {
        let kind = value["kind"].as_str().and_then(Kind::from_name)?;
        let api_version = value["apiVersion"].as_str().unwrap_or_default();
        kind.reads_api_version(api_version).then_some(kind)
    }
}

/// A converted, valid object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A namespace.
    Namespace(Namespace),
    /// A pod.
    Pod(Pod),
    /// A policy.
    Policy(Policy),
    /// A workload's pod template.
    Workload(Workload),
    /// A ClusterNetworkPolicy.
    ClusterPolicy(ClusterNetworkPolicy),
    /// A Node.
    Node(Node),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Policy(_) => Kind::NetworkPolicy,
            Object::Workload(w) => Kind::from_name(&w.id.kind).unwrap_or(Kind::Deployment),
            Object::ClusterPolicy(_) => Kind::ClusterNetworkPolicy,
            Object::Node(_) => Kind::Node,
        }
    }

    /// Makes the strings the object repeats from others `interner`'s shared copies, as the
    /// [`crate::ClusterState`] does when it takes the object in: a source that holds many objects
    /// before the store takes them (a first list) then holds each such string once.
    pub fn share(&mut self, interner: &mut Interner) {
        match self {
            Object::Namespace(n) => n.labels.share(interner),
            Object::Pod(p) => p.share(interner),
            Object::Policy(p) => p.id.share(interner),
            Object::Workload(w) => w.labels.share(interner),
            Object::ClusterPolicy(_) => {}
            Object::Node(n) => n.labels.share(interner),
        }
    }

    /// The object's key: namespace and name, the namespace empty for cluster-scoped kinds.
    pub fn key(&self) -> ObjectRef {
        match self {
            Object::Namespace(n) => ObjectRef::new("", &n.name),
            Object::Pod(p) => p.id.clone(),
            Object::Policy(p) => p.id.clone(),
            Object::Workload(w) => ObjectRef::new(&w.id.namespace, &w.id.name),
            Object::ClusterPolicy(p) => ObjectRef::new("", &p.name),
            Object::Node(n) => ObjectRef::new("", &n.name),
        }
    }
}

/// The key of a raw object of `kind`, as [`Object::key`] gives it once converted: the namespace
/// empty for cluster-scoped kinds, `default_namespace` for a namespaced object that names none.
pub fn key_of(kind: Kind, value: &Value, default_namespace: &str) -> ObjectRef {
    let name = value["metadata"]["name"].as_str().unwrap_or("<unnamed>");
    let namespace = if kind.namespaced() {
        value["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or(default_namespace)
    } else {
        ""
    };
    ObjectRef::new(namespace, name)
}

/// What the pipeline made of a raw object.
// Consumed at once, one object at a time: boxing the large variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Converted {
    /// A valid object of a kind nftpolicy reads.
    Valid(Object),
    /// An object of a kind nftpolicy reads, rejected: what is wrong, located.
    Invalid {
        /// Its kind.
        kind: Kind,
        /// Its key.
        key: ObjectRef,
        /// The first bad field.
        error: Box<FieldError>,
    },
    /// An object of a kind nftpolicy does not read, returned as it came.
    Other(RawObject),
}

/// Converts a raw object, identified by its `kind` field. A namespaced object without
/// `metadata.namespace` is taken to be in `default_namespace`.
pub fn convert(raw: RawObject, default_namespace: &str) -> Converted {
    match Kind::of(&raw.value) {
        Some(kind) => convert_as(kind, raw, default_namespace),
        None => Converted::Other(raw),
    }
}

/// Converts a raw object known to be of `kind` (a watch of that kind), whatever its `kind` field
/// says. A namespaced object without `metadata.namespace` is taken to be in `default_namespace`.
pub fn convert_as(kind: Kind, mut raw: RawObject, default_namespace: &str) -> Converted {
    if kind.namespaced() {
        if let Value::Object(object) = &mut raw.value {
            let metadata = object
                .entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Value::Object(metadata) = metadata {
                let named = metadata
                    .get("namespace")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
                if !named {
                    metadata.insert("namespace".into(), Value::from(default_namespace));
                }
            }
        }
    }
    let converted = match kind {
        Kind::Namespace => namespace_from_api(&raw).map(Object::Namespace),
        Kind::Pod => pod_from_api(&raw).map(Object::Pod),
        Kind::NetworkPolicy => policy_from_api(&raw).map(Object::Policy),
        Kind::ClusterNetworkPolicy => cluster_policy_from_api(&raw).map(Object::ClusterPolicy),
        Kind::Node => node_from_api(&raw).map(Object::Node),
        workload => workload_from_api(workload.as_str(), &raw).map(Object::Workload),
    };
    match converted {
        Ok(object) => Converted::Valid(object),
        Err(error) => Converted::Invalid {
            kind,
            key: key_of(kind, &raw.value, default_namespace),
            error,
        },
    }
}

/// Converts an object of `kind` that the Kubernetes API sent as JSON text at `api_version` (an item
/// of a list page, which names neither), as [`convert_as`] converts it once parsed: the same
/// objects, the same errors.
///
/// The kinds the agent watches in bulk (pods, namespaces, nodes, NetworkPolicies) are decoded
/// straight from the text into their `k8s-openapi` types, without an intermediate JSON tree. An
/// object that does not decode so, or that the conversion rejects (both rare: the API server
/// validated it), is parsed and converted again through [`convert_as`], whose error names the
/// field.
pub fn convert_api_text(
    kind: Kind,
    api_version: &str,
    text: &str,
    default_namespace: &str,
) -> Converted {
    use k8s_openapi::api::{core::v1 as core, networking::v1 as net};
    let location = Location {
        file: "api".to_string(),
        document: 0,
        item: None,
    };
    let ns = default_namespace;
    let direct: Option<FieldResult<Object>> = match kind {
        Kind::Pod => direct::<core::Pod>(text, ns, |p| &mut p.metadata)
            .map(|p| pod_from_typed(&location, p).map(Object::Pod)),
        Kind::Namespace => direct::<core::Namespace>(text, "", |n| &mut n.metadata)
            .map(|n| namespace_from_typed(&location, n).map(Object::Namespace)),
        Kind::Node => direct::<core::Node>(text, "", |n| &mut n.metadata)
            .map(|n| node_from_typed(&location, n).map(Object::Node)),
        Kind::NetworkPolicy => direct::<net::NetworkPolicy>(text, ns, |p| &mut p.metadata)
            .map(|p| policy_from_typed(&location, p).map(Object::Policy)),
        _ => None,
    };
    if let Some(Ok(object)) = direct {
        return Converted::Valid(object);
    }
    let mut value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.entry("apiVersion")
            .or_insert_with(|| Value::from(api_version));
        map.entry("kind")
            .or_insert_with(|| Value::from(kind.as_str()));
    }
    convert_as(kind, RawObject { location, value }, default_namespace)
}

/// `text` decoded as `T`, a namespaced object that names no namespace put in `default_namespace`
/// (empty for cluster-scoped kinds), as [`convert_as`] does; `None` when it does not decode.
fn direct<T: DeserializeOwned>(
    text: &str,
    default_namespace: &str,
    metadata: impl Fn(&mut T) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<T> {
    let mut object: T = serde_json::from_str(text).ok()?;
    let meta = metadata(&mut object);
    if !default_namespace.is_empty() && meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some(default_namespace.to_string());
    }
    Some(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(value: Value) -> RawObject {
        RawObject::document("t.yaml", 1, value)
    }

    #[test]
    fn kinds_know_their_api_coordinates() {
        assert_eq!(Kind::NetworkPolicy.api_version(), "networking.k8s.io/v1");
        assert_eq!(Kind::Pod.api_version(), "v1");
        assert_eq!(Kind::Pod.plural(), "pods");
        assert!(!Kind::Namespace.namespaced());
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::from_name("Service"), None);
        let cnp = Kind::ClusterNetworkPolicy;
        assert_eq!(cnp.api_version(), "policy.networking.k8s.io/v1beta1");
        assert_eq!(
            cnp.group_version("v1alpha2"),
            "policy.networking.k8s.io/v1alpha2"
        );
        assert_eq!(Kind::Node.group_version("v1"), "v1");
        assert_eq!(cnp.versions(), ["v1beta1", "v1alpha2"]);
        assert_eq!(cnp.plural(), "clusternetworkpolicies");
        assert_eq!(Kind::Node.api_version(), "v1");
        assert_eq!(Kind::Node.plural(), "nodes");
        for kind in [cnp, Kind::Node] {
            assert!(!kind.namespaced());
            assert!(!kind.is_workload());
            assert!(kind.is_enforced(), "the agent watches {kind:?}");
        }
        let custom: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| k.is_custom_resource())
            .collect();
        assert_eq!(custom, [cnp], "every other kind is built into Kubernetes");
        assert!(cnp.reads_api_version("policy.networking.k8s.io/v1alpha2"));
        assert!(!cnp.reads_api_version("policy.networking.k8s.io/v1alpha1"));
        assert!(!cnp.reads_api_version("v1beta1"));
        assert!(Kind::Deployment.is_workload() && !Kind::Deployment.is_enforced());
        assert!(Kind::Pod.is_enforced() && !Kind::Pod.is_workload());
    }

    /// What an API list item converts to through the text and through the JSON value: the same
    /// object or the same located error.
    fn both_ways(kind: Kind, item: Value) -> (String, String) {
        let text = item.to_string();
        let direct = convert_api_text(kind, &kind.api_version(), &text, DEFAULT_NAMESPACE);
        let mut value = item;
        value["apiVersion"] = json!(kind.api_version());
        value["kind"] = json!(kind.as_str());
        let raw = RawObject {
            location: Location {
                file: "api".into(),
                document: 0,
                item: None,
            },
            value,
        };
        let via_value = convert_as(kind, raw, DEFAULT_NAMESPACE);
        (format!("{direct:?}"), format!("{via_value:?}"))
    }

    #[test]
    fn api_text_converts_as_the_json_value_does() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                    "uid": "u", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c",
                "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5",
                "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}], "hostIP": "192.168.0.1"}});
        let no_namespace = pod.clone();
        let mut in_namespace = pod.clone();
        in_namespace["metadata"]["namespace"] = json!("team-a");
        let mut bad_ip = in_namespace.clone();
        bad_ip["status"]["podIPs"][1]["ip"] = json!("not-an-ip");
        let mut bad_type = in_namespace.clone();
        bad_type["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("eighty");
        let mut unnamed = in_namespace.clone();
        unnamed["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("name");
        let policy = json!({"metadata": {"name": "np", "namespace": "team-a"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": "http"}]}]}});
        let mut bad_policy = policy.clone();
        bad_policy["spec"]["podSelector"]["matchExpressions"] =
            json!([{"key": "app", "operator": "Near", "values": ["x"]}]);
        let namespace = json!({"metadata": {"name": "team-a", "labels": {"env": "prod"}}});
        let node = json!({"metadata": {"name": "n1", "labels": {"zone": "a"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"},
                {"type": "Hostname", "address": "n1"}]}});
        let mut bad_node = node.clone();
        bad_node["status"]["addresses"][0]["address"] = json!("192.168.0");
        let cases = [
            (Kind::Pod, no_namespace, true),
            (Kind::Pod, in_namespace, true),
            (Kind::Pod, bad_ip, false),
            (Kind::Pod, bad_type, false),
            (Kind::Pod, unnamed, false),
            (Kind::NetworkPolicy, policy, true),
            (Kind::NetworkPolicy, bad_policy, false),
            (Kind::Namespace, namespace, true),
            (Kind::Node, node, true),
            (Kind::Node, bad_node, false),
        ];
        for (kind, item, valid) in cases {
            let (direct, via_value) = both_ways(kind, item.clone());
            assert_eq!(direct, via_value, "{kind:?} {item}");
            assert_eq!(direct.starts_with("Valid("), valid, "{direct}");
        }
        // Not JSON at all: rejected as the value path rejects a non-object.
        let garbage = convert_api_text(Kind::Pod, "v1", "[1, 2", DEFAULT_NAMESPACE);
        assert!(
            matches!(
                garbage,
                Converted::Invalid {
                    kind: Kind::Pod,
                    ..
                }
            ),
            "{garbage:?}"
        );
    }

    #[test]
    fn cluster_scoped_kinds_are_keyed_without_namespace() {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
        let Converted::Valid(o) = convert(raw(node.clone()), "team-a") else {
            panic!("valid")
        };
        assert_eq!((o.kind(), o.key()), (Kind::Node, ObjectRef::new("", "n1")));
        assert_eq!(key_of(Kind::Node, &node, "team-a"), o.key());
        let cnp = json!({"apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy", "metadata": {"name": "c"},
            "spec": {"tier": "Admin", "priority": 3, "subject": {"namespaces": {}}}});
        let Converted::Valid(o) = convert(raw(cnp), "team-a") else {
            panic!("valid")
        };
        assert_eq!(
            (o.kind(), o.key()),
            (Kind::ClusterNetworkPolicy, ObjectRef::new("", "c"))
        );
    }

    #[test]
    fn a_namespaced_object_without_namespace_takes_the_default() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let Converted::Valid(o) = convert(raw(pod.clone()), "team-a") else {
            panic!("valid")
        };
        assert_eq!(o.key(), ObjectRef::new("team-a", "p"));
        assert_eq!(key_of(Kind::Pod, &pod, "team-a"), o.key());
        let Converted::Valid(o) = convert(raw(pod), DEFAULT_NAMESPACE) else {
            panic!("valid")
        };
        assert_eq!(o.key(), ObjectRef::new("default", "p"));
    }

    #[test]
    fn invalid_objects_are_keyed_and_located_and_other_kinds_come_back() {
        let bad = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "np", "namespace": "x"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "1.2.3.4/40"}}]}]}});
        let Converted::Invalid { kind, key, error } = convert(raw(bad), DEFAULT_NAMESPACE) else {
            panic!("invalid")
        };
        assert_eq!(kind, Kind::NetworkPolicy);
        assert_eq!(key, ObjectRef::new("x", "np"));
        assert_eq!(error.field, "spec.ingress[0].from[0].ipBlock.cidr");
        assert_eq!(error.location.file, "t.yaml");
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}});
        assert!(matches!(
            convert(raw(service), DEFAULT_NAMESPACE),
            Converted::Other(_)
        ));
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}});
        assert_eq!(
            key_of(Kind::Namespace, &ns, "team-a"),
            ObjectRef::new("", "n")
        );
    }
}
