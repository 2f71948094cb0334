//! Sources of cluster state for the agent: the Kubernetes API ([`kube`]) or a directory of manifests
//! ([`files`]). Each sends [`Update`]s; the agent folds them into a [`Store`].

pub mod files;
pub mod kube;

use std::collections::BTreeMap;

use policy_compiler::model::{Namespace, ObjectRef, Pod, Policy};
use policy_compiler::ClusterState;

/// The kinds the agent watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1/Namespace`.
    Namespace,
    /// `v1/Pod`.
    Pod,
    /// `networking.k8s.io/v1/NetworkPolicy`.
    NetworkPolicy,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Namespace, Kind::Pod, Kind::NetworkPolicy];

    /// The API kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
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
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Pod(_) => Kind::Pod,
            Object::Policy(_) => Kind::NetworkPolicy,
        }
    }

    /// The object's key (namespaces have an empty namespace part).
    pub fn key(&self) -> ObjectRef {
        match self {
            Object::Namespace(n) => ObjectRef::new("", &n.name),
            Object::Pod(p) => p.id.clone(),
            Object::Policy(p) => p.id.clone(),
        }
    }
}

/// A change reported by a source.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// All objects of a kind, after a (re)list: anything else of that kind is gone.
    Reset(Kind, Vec<Object>),
    /// An object was created or changed.
    Upsert(Object),
    /// An object was deleted.
    Delete(Kind, ObjectRef),
    /// An object exists but is invalid: it is reported and left out (a previous valid version, if
    /// any, stays in force).
    Invalid {
        /// Kind.
        kind: Kind,
        /// Key.
        key: ObjectRef,
        /// What is wrong, with the field.
        error: String,
    },
}

/// The agent's view of the cluster: valid objects, plus the invalid ones it is leaving out.
#[derive(Debug, Clone, Default)]
pub struct Store {
    objects: BTreeMap<(Kind, ObjectRef), Object>,
    invalid: BTreeMap<(Kind, ObjectRef), String>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies an update; returns whether the valid objects changed.
    pub fn apply(&mut self, update: Update) -> bool {
        match update {
            Update::Reset(kind, objects) => {
                let fresh: BTreeMap<(Kind, ObjectRef), Object> =
                    objects.into_iter().map(|o| ((kind, o.key()), o)).collect();
                let before: Vec<(&(Kind, ObjectRef), &Object)> =
                    self.objects.iter().filter(|(k, _)| k.0 == kind).collect();
                let unchanged = before.len() == fresh.len()
                    && before.iter().all(|(k, o)| fresh.get(*k) == Some(*o));
                // Objects still listed but invalid keep their last valid version.
                let kept: Vec<((Kind, ObjectRef), Object)> = self
                    .objects
                    .iter()
                    .filter(|(k, _)| {
                        k.0 == kind && !fresh.contains_key(*k) && self.invalid.contains_key(*k)
                    })
                    .map(|(k, o)| (k.clone(), o.clone()))
                    .collect();
                self.objects.retain(|k, _| k.0 != kind);
                self.invalid
                    .retain(|k, _| k.0 != kind || kept.iter().any(|(kk, _)| kk == k));
                self.objects.extend(fresh);
                self.objects.extend(kept);
                !unchanged
            }
            Update::Upsert(object) => {
                let key = (object.kind(), object.key());
                self.invalid.remove(&key);
                self.objects.insert(key, object.clone()) != Some(object)
            }
            Update::Delete(kind, key) => {
                self.invalid.remove(&(kind, key.clone()));
                self.objects.remove(&(kind, key)).is_some()
            }
            Update::Invalid { kind, key, error } => {
                self.invalid.insert((kind, key), error);
                false
            }
        }
    }

    /// Objects reported invalid and left out, with their errors.
    pub fn invalid(&self) -> &BTreeMap<(Kind, ObjectRef), String> {
        &self.invalid
    }

    /// The cluster state the compiler works from.
    pub fn cluster(&self) -> ClusterState {
        let mut c = ClusterState::new();
        for object in self.objects.values() {
            match object {
                Object::Namespace(n) => c.upsert_namespace(n.clone()),
                Object::Pod(p) => c.upsert_pod(p.clone()),
                Object::Policy(p) => c.upsert_policy(p.clone()),
            }
        }
        c
    }
}
