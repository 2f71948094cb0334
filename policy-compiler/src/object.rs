//! The object pipeline: the one place that knows the kinds nftpolicy reads.
//!
//! A raw object (a manifest document, a `List` item, a watch event's object) is identified here (its
//! [`Kind`], its namespace with the default applied, its name), converted into the compact model
//! ([`Object`]) or rejected with a located [`FieldError`], and keyed ([`Object::key`],
//! [`key_of`]). `policyc`'s input, the agent's `dir:` source and its Kubernetes source all go
//! through [`convert`]; adding a kind means one entry in [`Kind`] and its converter here (and, for
//! the agent, one watcher).

use serde_json::Value;

use crate::input::{
    namespace_from_api, pod_from_api, policy_from_api, workload_from_api, FieldError, RawObject,
};
use crate::model::{Namespace, ObjectRef, Pod, Policy, Workload};

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
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 10] = [
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
    ];

    /// The kinds that decide what a node enforces: what the node agent watches. Workloads are for
    /// offline review only (their pods are what the agent sees).
    pub const ENFORCED: [Kind; 3] = [Kind::Namespace, Kind::Pod, Kind::NetworkPolicy];

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
        }
    }

    /// Whether the kind is a workload: an object with a pod template.
    pub fn is_workload(self) -> bool {
        !Kind::ENFORCED.contains(&self)
    }

    /// The API group (empty for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::Namespace | Kind::Pod | Kind::ReplicationController => "",
            Kind::NetworkPolicy => "networking.k8s.io",
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::ReplicaSet => "apps",
            Kind::Job | Kind::CronJob => "batch",
        }
    }

    /// The API version read.
    pub fn version(self) -> &'static str {
        "v1"
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(self) -> String {
        match self.group() {
            "" => self.version().to_string(),
            group => format!("{group}/{}", self.version()),
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
        }
    }

    /// Whether objects of the kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace)
    }

    /// The kind an API `kind` name denotes, if nftpolicy reads it.
    pub fn from_name(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The kind of a raw object (by its `kind` field), if nftpolicy reads it.
    pub fn of(value: &Value) -> Option<Kind> {
        value["kind"].as_str().and_then(Kind::from_name)
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
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Policy(_) => Kind::NetworkPolicy,
            Object::Workload(w) => Kind::from_name(&w.id.kind).unwrap_or(Kind::Deployment),
        }
    }

    /// The object's key: namespace and name, the namespace empty for cluster-scoped kinds.
    pub fn key(&self) -> ObjectRef {
        match self {
            Object::Namespace(n) => ObjectRef::new("", &n.name),
            Object::Pod(p) => p.id.clone(),
            Object::Policy(p) => p.id.clone(),
            Object::Workload(w) => ObjectRef::new(&w.id.namespace, &w.id.name),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Location;
    use serde_json::json;

    fn raw(value: Value) -> RawObject {
        RawObject {
            location: Location {
                file: "t.yaml".into(),
                document: 1,
                item: None,
            },
            value,
        }
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
