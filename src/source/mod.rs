//! Sources of cluster state for the agent: the Kubernetes API ([`kube`]) or a directory of manifests
//! ([`files`]). Each sends [`Update`]s; the agent folds them into a [`Store`].

pub mod files;
pub mod kube;

use std::collections::{BTreeMap, BTreeSet};

use policy_compiler::model::ObjectRef;
use policy_compiler::ClusterState;

pub use policy_compiler::object::{Kind, Object};

/// A change reported by a source.
// Sent one at a time through a channel: boxing the large variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// All objects of a kind, after a (re)list: anything else of that kind is gone. `invalid` are the
    /// listed objects that are invalid: reported and left out, their last valid version (if the store
    /// has one) kept in force.
    Reset {
        /// The kind.
        kind: Kind,
        /// The valid objects.
        objects: Vec<Object>,
        /// The invalid objects, with what is wrong.
        invalid: Vec<(ObjectRef, String)>,
    },
    /// An object was created or changed.
    Upsert(Object),
    /// An object was deleted.
    Delete(Kind, ObjectRef),
    /// An object changed and is now invalid (a watch event): it is reported and left out (a previous
    /// valid version, if any, stays in force).
    Invalid {
        /// Kind.
        kind: Kind,
        /// Key.
        key: ObjectRef,
        /// What is wrong, with the field.
        error: String,
    },
    /// The kind's watch failed after its first list: what the store holds of it may be behind the
    /// cluster until the kind's next [`Update::Reset`] or [`Update::Live`]. Changes nothing.
    Stale(Kind),
    /// The kind's watch resumed where it was, without a re-list: it is current again (the changes
    /// it missed follow as Upserts and Deletes). Changes nothing.
    Live(Kind),
}

/// The agent's view of the cluster: the valid objects, kept directly as the [`ClusterState`] the
/// compiler reads (no second copy), plus the invalid objects it is leaving out.
#[derive(Debug, Clone, Default)]
pub struct Store {
    cluster: ClusterState,
    /// Namespaces declared by the source (the cluster also holds implicit ones).
    declared: BTreeSet<String>,
    invalid: BTreeMap<(Kind, ObjectRef), String>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A declared object (implicit namespaces, which the cluster keeps for pods and policies, are
    /// not the source's).
    fn get(&self, kind: Kind, key: &ObjectRef) -> Option<Object> {
        if kind == Kind::Namespace && !self.declared.contains(&key.name) {
            return None;
        }
        self.cluster.get(kind, key)
    }

    fn keys(&self, kind: Kind) -> Vec<ObjectRef> {
        match kind {
            Kind::Namespace => self
                .declared
                .iter()
                .map(|n| ObjectRef::new("", n))
                .collect(),
            _ => self.cluster.keys(kind),
        }
    }

    /// Inserts or replaces; returns whether anything changed.
    fn put(&mut self, object: Object) -> bool {
        if self.get(object.kind(), &object.key()).as_ref() == Some(&object) {
            return false;
        }
        if let Object::Namespace(n) = &object {
            self.declared.insert(n.name.clone());
        }
        self.cluster.upsert(object);
        true
    }

    /// Removes; returns whether it existed.
    fn remove(&mut self, kind: Kind, key: &ObjectRef) -> bool {
        if kind == Kind::Namespace && !self.declared.remove(&key.name) {
            return false;
        }
        self.cluster.remove(kind, key)
    }

    /// Applies an update; returns whether the valid objects changed.
    pub fn apply(&mut self, update: Update) -> bool {
        match update {
            Update::Reset {
                kind,
                objects,
                invalid,
            } => {
                let mut next: BTreeMap<ObjectRef, Object> =
                    objects.into_iter().map(|o| (o.key(), o)).collect();
                // Listed but invalid: the last valid version stays in force.
                for (key, _) in &invalid {
                    if !next.contains_key(key) {
                        if let Some(previous) = self.get(kind, key) {
                            next.insert(key.clone(), previous);
                        }
                    }
                }
                let mut changed = false;
                for key in self.keys(kind) {
                    if !next.contains_key(&key) {
                        changed |= self.remove(kind, &key);
                    }
                }
                for object in next.into_values() {
                    changed |= self.put(object);
                }
                self.invalid.retain(|k, _| k.0 != kind);
                self.invalid
                    .extend(invalid.into_iter().map(|(key, error)| ((kind, key), error)));
                changed
            }
            Update::Upsert(object) => {
                self.invalid.remove(&(object.kind(), object.key()));
                self.put(object)
            }
            Update::Delete(kind, key) => {
                self.invalid.remove(&(kind, key.clone()));
                self.remove(kind, &key)
            }
            Update::Invalid { kind, key, error } => {
                self.invalid.insert((kind, key), error);
                false
            }
            Update::Stale(_) | Update::Live(_) => false,
        }
    }

    /// Objects reported invalid and left out, with their errors.
    pub fn invalid(&self) -> &BTreeMap<(Kind, ObjectRef), String> {
        &self.invalid
    }

    /// The cluster state the compiler works from.
    pub fn cluster(&self) -> &ClusterState {
        &self.cluster
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_compiler::model::Namespace;
    use policy_compiler::selector::Labels;

    fn ns(name: &str, team: &str) -> Object {
        let labels = Labels::from([("team".to_string(), team.to_string())]);
        Object::Namespace(Namespace::new(name, labels))
    }

    fn key(name: &str) -> ObjectRef {
        ObjectRef::new("", name)
    }

    fn reset(objects: Vec<Object>, invalid: Vec<(ObjectRef, String)>) -> Update {
        Update::Reset {
            kind: Kind::Namespace,
            objects,
            invalid,
        }
    }

    #[test]
    fn an_invalid_object_keeps_its_last_valid_version_until_it_is_gone() {
        let mut s = Store::new();
        assert!(s.apply(reset(vec![ns("a", "x"), ns("b", "x")], vec![])));
        // a turns invalid by a watch event: reported, v1 stays.
        assert!(!s.apply(Update::Invalid {
            kind: Kind::Namespace,
            key: key("a"),
            error: "bad".into()
        }));
        assert_eq!(s.invalid().len(), 1);
        assert!(s.cluster().namespace("a").is_some());
        // A relist that still has a invalid keeps v1 and the report.
        assert!(!s.apply(reset(vec![ns("b", "x")], vec![(key("a"), "bad".into())])));
        assert!(s.cluster().namespace("a").is_some());
        assert_eq!(s.invalid().len(), 1);
        // A relist without a (deleted meanwhile): gone, and so is its report.
        assert!(s.apply(reset(vec![ns("b", "x")], vec![])));
        assert!(s.cluster().namespace("a").is_none());
        assert!(s.invalid().is_empty());
    }

    #[test]
    fn an_object_never_valid_stays_reported_across_relists() {
        let mut s = Store::new();
        s.apply(reset(vec![], vec![(key("bad"), "e".into())]));
        s.apply(reset(vec![], vec![(key("bad"), "e".into())]));
        assert_eq!(s.invalid().len(), 1);
        assert!(s.cluster().namespace("bad").is_none());
    }

    #[test]
    fn unchanged_relists_and_upserts_report_no_change() {
        let mut s = Store::new();
        assert!(s.apply(reset(vec![ns("a", "x")], vec![])));
        assert!(!s.apply(reset(vec![ns("a", "x")], vec![])));
        assert!(!s.apply(Update::Upsert(ns("a", "x"))));
        assert!(s.apply(Update::Upsert(ns("a", "y"))));
        assert!(s.apply(Update::Delete(Kind::Namespace, key("a"))));
        assert!(!s.apply(Update::Delete(Kind::Namespace, key("a"))));
    }
}
