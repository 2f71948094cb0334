//! Sources of cluster state for the agent: the Kubernetes API ([`kube`]) or a directory of manifests
//! ([`files`]). Each sends [`Update`]s; the agent folds them into a [`Store`].

pub mod files;
pub mod kube;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use policy_compiler::model::ObjectRef;
use policy_compiler::ClusterState;

pub use policy_compiler::object::{Kind, Object};

/// A change reported by a source.
///
/// A list of a kind comes either whole, as one [`Update::Reset`], or page by page: an
/// [`Update::ListBegin`], any number of [`Update::ListPage`]s, and an [`Update::ListEnd`]. The
/// store applies each page as it comes and removes, at the end, the objects of the kind that the
/// list did not hold; a list that never ends (a [`Update::ListBegin`] again, or an
/// [`Update::Stale`]) removes nothing. A source does not interleave a kind's list with other
/// updates of that kind.
// Sent one at a time through a channel: boxing the large variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// All objects of a kind, after a (re)list, in one update: the same as a
    /// [`Update::ListBegin`], one [`Update::ListPage`] and an [`Update::ListEnd`].
    Reset {
        /// The kind.
        kind: Kind,
        /// The valid objects.
        objects: Vec<Object>,
        /// The invalid objects, with what is wrong.
        invalid: Vec<(ObjectRef, String)>,
    },
    /// A (re)list of a kind starts (dropping any unfinished one of that kind): its pages follow.
    ListBegin(Kind),
    /// A page of the kind's list in progress. `invalid` are the listed objects that are invalid:
    /// reported and left out, their last valid version (if the store has one) kept in force.
    ListPage {
        /// The kind.
        kind: Kind,
        /// The valid objects.
        objects: Vec<Object>,
        /// The invalid objects, with what is wrong.
        invalid: Vec<(ObjectRef, String)>,
    },
    /// The kind's list is complete: any object of the kind that it did not hold is gone.
    ListEnd(Kind),
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
    /// The kind's watch, or a list of it whose pages had begun, failed: what the store holds of it
    /// may be behind the cluster until the kind's next complete list or [`Update::Live`], and a list
    /// in progress is abandoned (it removes nothing). Changes nothing.
    Stale(Kind),
    /// The kind's watch resumed where it was, without a re-list: it is current again (the changes
    /// it missed follow as Upserts and Deletes). Changes nothing.
    Live(Kind),
}

impl Update {
    /// The kind whose list this update completes ([`Update::ListEnd`] or [`Update::Reset`]).
    pub fn completes_list(&self) -> Option<Kind> {
        match self {
            Update::Reset { kind, .. } | Update::ListEnd(kind) => Some(*kind),
            _ => None,
        }
    }
}

/// What a source sends after listing every kind the agent watches in `cluster`: one
/// [`Update::Reset`] per kind, with all of its objects (to load a whole cluster into an agent, as
/// tests and benchmarks do).
pub fn resets(cluster: &ClusterState) -> Vec<Update> {
    Kind::ENFORCED
        .iter()
        .map(|&kind| Update::Reset {
            kind,
            objects: cluster
                .keys(kind)
                .iter()
                .filter_map(|key| cluster.get(kind, key))
                .collect(),
            invalid: vec![],
        })
        .collect()
}

/// The agent's view of the cluster: the valid objects, kept directly as the [`ClusterState`] the
/// compiler reads (no second copy), plus the invalid objects it is leaving out.
#[derive(Debug, Clone, Default)]
pub struct Store {
    cluster: ClusterState,
    /// Namespaces declared by the source (the cluster also holds implicit ones).
    declared: BTreeSet<String>,
    invalid: BTreeMap<(Kind, ObjectRef), String>,
    /// The kinds whose list is in progress, with the keys their pages held so far (valid and
    /// invalid objects): only keys, the objects go to the cluster as they come.
    listing: BTreeMap<Kind, HashSet<ObjectRef>>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A declared object (implicit namespaces, which the cluster keeps for pods and policies, are
    /// not the source's).
    fn get(&self, kind: Kind, key: &ObjectRef) -> Option<Object> {
        if kind == Kind::Namespace && !self.declared.contains(&*key.name) {
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
    fn put(&mut self, mut object: Object) -> bool {
        if let Object::Pod(pod) = &mut object {
            // What no rule reads is not kept: a pod's node addresses and owner serve the offline
            // analysis (traffic to its own node, workloads), not the ruleset.
            pod.host_ips = Vec::new();
            pod.owner = None;
        }
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
        if kind == Kind::Namespace && !self.declared.remove(&*key.name) {
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
                self.begin_list(kind);
                let changed = self.list_page(kind, objects, invalid);
                self.end_list(kind) | changed
            }
            Update::ListBegin(kind) => {
                self.begin_list(kind);
                false
            }
            Update::ListPage {
                kind,
                objects,
                invalid,
            } => self.list_page(kind, objects, invalid),
            Update::ListEnd(kind) => self.end_list(kind),
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
            Update::Stale(kind) => {
                // A list in progress is abandoned: what its pages brought stays, nothing goes.
                self.listing.remove(&kind);
                false
            }
            Update::Live(_) => false,
        }
    }

    /// Starts a list of `kind`, forgetting the keys of an unfinished one (its snapshot is not the
    /// new list's).
    fn begin_list(&mut self, kind: Kind) {
        self.listing.insert(kind, HashSet::new());
    }

    /// Applies a page of `kind`'s list and notes its keys; returns whether the valid objects
    /// changed. A page without a list begun starts one.
    fn list_page(
        &mut self,
        kind: Kind,
        objects: Vec<Object>,
        invalid: Vec<(ObjectRef, String)>,
    ) -> bool {
        let mut seen = self.listing.remove(&kind).unwrap_or_default();
        let mut changed = false;
        for object in objects {
            let key = object.key();
            self.invalid.remove(&(kind, key.clone()));
            changed |= self.put(object);
            seen.insert(key);
        }
        // Listed but invalid: reported, and the last valid version (if any) stays in force.
        for (key, error) in invalid {
            seen.insert(key.clone());
            self.invalid.insert((kind, key), error);
        }
        self.listing.insert(kind, seen);
        changed
    }

    /// Completes `kind`'s list: the objects (and reports of invalid ones) it did not hold are
    /// gone. Returns whether the valid objects changed; without a list begun, nothing changes.
    fn end_list(&mut self, kind: Kind) -> bool {
        let Some(seen) = self.listing.remove(&kind) else {
            return false;
        };
        let mut changed = false;
        for key in self.keys(kind) {
            if !seen.contains(&key) {
                changed |= self.remove(kind, &key);
            }
        }
        self.invalid
            .retain(|(k, key), _| *k != kind || seen.contains(key));
        changed
    }

    /// Whether a list of some kind is in progress: until it ends, the store holds a mix of the
    /// list's objects and older ones (none removed yet).
    pub fn is_listing(&self) -> bool {
        !self.listing.is_empty()
    }

    /// Objects reported invalid and left out, with their errors.
    pub fn invalid(&self) -> &BTreeMap<(Kind, ObjectRef), String> {
        &self.invalid
    }

    /// The cluster state the compiler works from.
    pub fn cluster(&self) -> &ClusterState {
        &self.cluster
    }

    /// Packs the cluster's maps after a bulk load (see [`ClusterState::compact`]).
    pub fn compact(&mut self) {
        self.cluster.compact();
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

    #[test]
    fn pods_keep_only_what_rules_read_and_packing_changes_nothing() {
        use policy_compiler::generate::{workload, WorkloadSize};
        let size = WorkloadSize::named("small").expect("a size");
        let cluster = workload(7, size);
        let pods: Vec<_> = cluster.pods().values().cloned().collect();
        assert!(
            pods.iter().any(|p| p.owner.is_some()),
            "the workload has owners"
        );
        let mut store = Store::new();
        for pod in &pods {
            store.apply(Update::Upsert(Object::Pod(pod.clone())));
        }
        for pod in &pods {
            let kept = store.cluster().pod(&pod.id).expect("kept");
            assert!(
                kept.host_ips.is_empty() && kept.owner.is_none(),
                "{:?}",
                kept.id
            );
            let mut expected = pod.clone();
            expected.host_ips = Vec::new();
            expected.owner = None;
            assert_eq!(kept, &expected);
        }
        let before = store.cluster().clone();
        store.compact();
        assert_eq!(store.cluster(), &before);
        assert_eq!(store.cluster().pods().len(), pods.len());
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

    fn page(objects: Vec<Object>, invalid: Vec<(ObjectRef, String)>) -> Update {
        Update::ListPage {
            kind: Kind::Namespace,
            objects,
            invalid,
        }
    }

    fn names(s: &Store) -> Vec<String> {
        s.cluster()
            .namespaces()
            .keys()
            .filter(|n| s.declared.contains(*n))
            .cloned()
            .collect()
    }

    #[test]
    fn a_paged_list_applies_each_page_and_removes_the_unlisted_at_its_end() {
        let mut s = Store::new();
        s.apply(reset(
            vec![ns("a", "x"), ns("b", "x"), ns("c", "x")],
            vec![],
        ));
        assert!(!s.apply(Update::ListBegin(Kind::Namespace)));
        assert!(s.is_listing());
        // Page one changes a; it is in the store at once.
        assert!(s.apply(page(vec![ns("a", "y")], vec![])));
        assert_eq!(
            s.cluster()
                .namespace("a")
                .and_then(|n| n.labels.get("team").map(str::to_string)),
            Some("y".to_string())
        );
        // Page two: b turned invalid (its last valid version stays), d is new.
        assert!(s.apply(page(vec![ns("d", "x")], vec![(key("b"), "bad".into())])));
        assert_eq!(
            names(&s),
            ["a", "b", "c", "d"],
            "nothing removed before the end"
        );
        // The end: c, which no page held, is gone.
        assert!(s.apply(Update::ListEnd(Kind::Namespace)));
        assert!(!s.is_listing());
        assert_eq!(names(&s), ["a", "b", "d"]);
        assert_eq!(
            s.invalid().keys().collect::<Vec<_>>(),
            [&(Kind::Namespace, key("b"))]
        );
    }

    #[test]
    fn an_interrupted_list_removes_nothing_and_the_next_complete_list_decides() {
        let mut s = Store::new();
        s.apply(reset(
            vec![ns("a", "x"), ns("b", "x"), ns("c", "x")],
            vec![],
        ));
        // A list that holds only a so far, abandoned (its kind's watch failed).
        s.apply(Update::ListBegin(Kind::Namespace));
        s.apply(page(vec![ns("a", "x")], vec![]));
        assert!(!s.apply(Update::Stale(Kind::Namespace)));
        assert!(!s.is_listing());
        assert_eq!(names(&s), ["a", "b", "c"]);
        // An end without its beginning changes nothing.
        assert!(!s.apply(Update::ListEnd(Kind::Namespace)));
        assert_eq!(names(&s), ["a", "b", "c"]);
        // A list started over (its continuation expired): the first attempt's keys do not count.
        s.apply(Update::ListBegin(Kind::Namespace));
        s.apply(page(vec![ns("a", "x"), ns("b", "x")], vec![]));
        s.apply(Update::ListBegin(Kind::Namespace));
        s.apply(page(vec![ns("c", "x")], vec![]));
        assert!(s.apply(Update::ListEnd(Kind::Namespace)));
        assert_eq!(names(&s), ["c"]);
    }

    #[test]
    fn an_unchanged_paged_relist_reports_no_change() {
        let mut s = Store::new();
        s.apply(reset(
            vec![ns("a", "x"), ns("b", "x")],
            vec![(key("bad"), "e".into())],
        ));
        let relist = [
            Update::ListBegin(Kind::Namespace),
            page(vec![ns("a", "x")], vec![(key("bad"), "e".into())]),
            page(vec![ns("b", "x")], vec![]),
            Update::ListEnd(Kind::Namespace),
        ];
        for update in relist {
            assert!(!s.apply(update.clone()), "{update:?}");
        }
        assert_eq!(names(&s), ["a", "b"]);
        assert_eq!(s.invalid().len(), 1);
    }

    #[test]
    fn lists_of_other_kinds_leave_a_kind_alone() {
        let mut s = Store::new();
        s.apply(reset(vec![ns("a", "x")], vec![(key("bad"), "e".into())]));
        s.apply(Update::Reset {
            kind: Kind::Node,
            objects: vec![],
            invalid: vec![],
        });
        assert_eq!(names(&s), ["a"]);
        assert_eq!(s.invalid().len(), 1);
    }
}
