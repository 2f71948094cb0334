//! A directory of manifests as a source (`--source dir:PATH`): the same input `policyc` reads,
//! re-read whenever it changes, for running without a cluster (the lab, tests, demos).
//!
//! Bad input never wipes good state: a file that does not parse keeps the objects it last had, and an
//! invalid object is reported and left out, its last valid version (if any) kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use policy_compiler::input::{for_each_object, read_paths};
use policy_compiler::model::ObjectRef;
use policy_compiler::object::{convert, Converted, DEFAULT_NAMESPACE};
use tokio::sync::mpsc;

use super::{Kind, Object, Update};

/// Polls a directory and sends its state as [`Update`]s: one [`Update::Reset`] per kind on the first
/// read, then, for each file that changed, the objects it added, changed or dropped.
///
/// Only a hash of each file and the keys of its objects are kept: the objects themselves live in the
/// agent's store, once.
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    /// Per file: a hash of the last text read (an unchanged file is not parsed again) and the keys of
    /// the objects it defines, from its last text that parsed.
    files: BTreeMap<String, (u64, BTreeSet<(Kind, ObjectRef)>)>,
    /// Which file defines each key (a key defined twice belongs to the first file that defined it).
    owners: BTreeMap<(Kind, ObjectRef), String>,
    listed: bool,
}

/// The valid and the invalid objects of one kind, for the first list.
type KindList = (Vec<Object>, Vec<(ObjectRef, String)>);

/// What one file yields when it parses.
struct Parsed {
    objects: Vec<Object>,
    invalid: Vec<(Kind, ObjectRef, String)>,
}

fn text_hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(text, &mut h);
    std::hash::Hasher::finish(&h)
}

impl DirSource {
    /// A source for a directory (read recursively, like `policyc`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
            owners: BTreeMap::new(),
            listed: false,
        }
    }

    /// Streams one file into objects, converting each document as it comes; `None` when the file
    /// does not parse.
    fn parse(source: &policy_compiler::input::Source) -> Option<Parsed> {
        let mut parsed = Parsed {
            objects: Vec::new(),
            invalid: Vec::new(),
        };
        let problems = for_each_object(source, &mut |raw| match convert(raw, DEFAULT_NAMESPACE) {
            // Only the kinds the agent enforces: workloads are for offline review (the agent
            // enforces the pods they make).
            Converted::Other(_) => {}
            Converted::Valid(o) if !o.kind().is_enforced() => {}
            Converted::Invalid { kind, .. } if !kind.is_enforced() => {}
            Converted::Valid(o) => parsed.objects.push(o),
            Converted::Invalid { kind, key, error } => {
                let error = error.to_string();
                tracing::warn!(kind = kind.as_str(), object = %key, %error, "invalid object left out");
                parsed.invalid.push((kind, key, error));
            }
        });
        for problem in &problems {
            tracing::warn!(file = %source.name, error = %problem, "file does not parse; keeping its last objects");
        }
        problems.is_empty().then_some(parsed)
    }

    /// Reads the directory; returns the updates to send (nothing when no file changed).
    pub fn poll(&mut self) -> Vec<Update> {
        let sources = match read_paths(&[self.dir.display().to_string()]) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the manifest directory; keeping the last state");
                return Vec::new();
            }
        };
        let mut updates = Vec::new();
        let mut lists: BTreeMap<Kind, KindList> = Kind::ENFORCED
            .iter()
            .map(|k| (*k, Default::default()))
            .collect();
        let present: BTreeSet<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        // Files that are gone take their objects with them.
        let gone: Vec<String> = self
            .files
            .keys()
            .filter(|f| !present.contains(f.as_str()))
            .cloned()
            .collect();
        for file in gone {
            if let Some((_, keys)) = self.files.remove(&file) {
                for key in keys {
                    if self.owners.get(&key) == Some(&file) {
                        self.owners.remove(&key);
                        updates.push(Update::Delete(key.0, key.1));
                    }
                }
            }
        }
        for source in &sources {
            let hash = text_hash(&source.text);
            let previous = self.files.get(&source.name);
            if previous.is_some_and(|(h, _)| *h == hash) {
                continue;
            }
            let old_keys = previous.map(|(_, k)| k.clone()).unwrap_or_default();
            let Some(parsed) = Self::parse(source) else {
                // Remember the broken text (so it is not parsed again) but keep its last objects.
                self.files.insert(source.name.clone(), (hash, old_keys));
                continue;
            };
            let mut keys = BTreeSet::new();
            for object in parsed.objects {
                let key = (object.kind(), object.key());
                let owner = self
                    .owners
                    .entry(key.clone())
                    .or_insert_with(|| source.name.clone());
                if *owner != source.name {
                    let error = format!(
                        "{}: defined twice; the definition in {owner} is used",
                        source.name
                    );
                    lists
                        .entry(key.0)
                        .or_default()
                        .1
                        .push((key.1.clone(), error.clone()));
                    if self.listed {
                        updates.push(Update::Invalid {
                            kind: key.0,
                            key: key.1,
                            error,
                        });
                    }
                    continue;
                }
                keys.insert(key.clone());
                if self.listed {
                    updates.push(Update::Upsert(object));
                } else {
                    lists.entry(key.0).or_default().0.push(object);
                }
            }
            for (kind, key, error) in parsed.invalid {
                // An invalid object stays the file's: its last valid version is kept, not deleted.
                let k = (kind, key.clone());
                if self.owners.get(&k).is_none_or(|o| *o == source.name) {
                    self.owners.insert(k.clone(), source.name.clone());
                    keys.insert(k);
                }
                if self.listed {
                    updates.push(Update::Invalid { kind, key, error });
                } else {
                    lists.entry(kind).or_default().1.push((key, error));
                }
            }
            for key in old_keys.difference(&keys) {
                if self.owners.get(key) == Some(&source.name) {
                    self.owners.remove(key);
                    updates.push(Update::Delete(key.0, key.1.clone()));
                }
            }
            self.files.insert(source.name.clone(), (hash, keys));
        }
        if !self.listed {
            self.listed = true;
            updates.extend(
                lists
                    .into_iter()
                    .map(|(kind, (objects, invalid))| Update::Reset {
                        kind,
                        objects,
                        invalid,
                    }),
            );
        }
        // Parsing a large directory leaves freed memory in the allocator's arenas; hand it back.
        // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
        updates
    }

    /// Polls every `interval` and sends updates until the receiver is gone.
    pub async fn run(mut self, interval: Duration, tx: mpsc::Sender<Update>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for update in self.poll() {
                if tx.send(update).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n";
    const POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}}\n";
    const BAD_POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]\n";

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("dirsource-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        Dir(d)
    }

    fn kinds(updates: &[Update]) -> Vec<String> {
        updates
            .iter()
            .map(|u| match u {
                Update::Reset {
                    kind,
                    objects,
                    invalid,
                } => {
                    format!(
                        "reset {} {}+{}",
                        kind.as_str(),
                        objects.len(),
                        invalid.len()
                    )
                }
                Update::Upsert(o) => format!("upsert {} {}", o.kind().as_str(), o.key()),
                Update::Delete(k, key) => format!("delete {} {key}", k.as_str()),
                Update::Invalid { kind, key, .. } => format!("invalid {} {key}", kind.as_str()),
                Update::Stale(kind) => format!("stale {}", kind.as_str()),
                Update::Live(kind) => format!("live {}", kind.as_str()),
            })
            .collect()
    }

    #[test]
    fn first_read_lists_then_only_changes_are_sent() {
        let d = dir("changes");
        std::fs::write(d.0.join("ns.yaml"), NS).expect("write");
        std::fs::write(d.0.join("policy.yaml"), POLICY).expect("write");
        let mut source = DirSource::new(&d.0);
        assert_eq!(
            kinds(&source.poll()),
            [
                "reset Namespace 1+0",
                "reset Pod 0+0",
                "reset NetworkPolicy 1+0",
                "reset ClusterNetworkPolicy 0+0",
                "reset Node 0+0",
            ]
        );
        assert!(source.poll().is_empty(), "nothing changed");

        // An invalid edit is reported; nothing is deleted, so the last valid version stays.
        std::fs::write(d.0.join("policy.yaml"), BAD_POLICY).expect("write");
        assert_eq!(kinds(&source.poll()), ["invalid NetworkPolicy x/p"]);
        // A file that does not parse sends nothing at all, once.
        std::fs::write(d.0.join("policy.yaml"), "kind: [broken\n").expect("write");
        assert!(source.poll().is_empty());
        assert!(source.poll().is_empty());
        // Fixed again: the policy comes back.
        std::fs::write(d.0.join("policy.yaml"), POLICY).expect("write");
        assert_eq!(kinds(&source.poll()), ["upsert NetworkPolicy x/p"]);
        // The same object in a second file is reported, not applied.
        std::fs::write(d.0.join("zz-copy.yaml"), POLICY).expect("write");
        assert_eq!(kinds(&source.poll()), ["invalid NetworkPolicy x/p"]);
        std::fs::remove_file(d.0.join("zz-copy.yaml")).expect("rm");
        assert!(source.poll().is_empty(), "the copy never owned the policy");
        // A removed file takes its objects with it.
        std::fs::remove_file(d.0.join("policy.yaml")).expect("rm");
        assert_eq!(kinds(&source.poll()), ["delete NetworkPolicy x/p"]);
    }

    const CNP: &str = "apiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n\
        metadata: {name: c}\nspec:\n  tier: Admin\n  priority: 1\n  subject: {namespaces: {}}\n\
        \x20 egress: [{action: Deny, to: [{nodes: {matchLabels: {role: db}}}]}]\n";
    const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {role: db}}\n\
        status: {addresses: [{type: InternalIP, address: 192.168.0.1}, {type: Hostname, address: n1}]}\n";

    #[test]
    fn cluster_network_policies_and_nodes_are_read_and_workloads_left_out() {
        let d = dir("kinds");
        std::fs::write(d.0.join("ns.yaml"), NS).expect("write");
        std::fs::write(d.0.join("node.yaml"), NODE).expect("write");
        // Both versions of ClusterNetworkPolicy; an invalid one (no subject) and one whose
        // domainNames peer nftpolicy does not enforce are reported and left out.
        let others = format!(
            "{CNP}---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
             metadata: {{name: old}}\nspec: {{tier: Baseline, priority: 5, subject: {{namespaces: {{}}}}}}\n\
             ---\napiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n\
             metadata: {{name: bad}}\nspec: {{tier: Admin, priority: 1}}\n\
             ---\napiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n\
             metadata: {{name: dns}}\nspec:\n  tier: Admin\n  priority: 2\n  subject: {{namespaces: {{}}}}\n\
             \x20 egress: [{{action: Accept, to: [{{domainNames: [example.com]}}]}}]\n\
             ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d, namespace: x}}\n"
        );
        std::fs::write(d.0.join("others.yaml"), others).expect("write");
        let mut source = DirSource::new(&d.0);
        let updates = source.poll();
        assert_eq!(
            kinds(&updates),
            [
                "reset Namespace 1+0",
                "reset Pod 0+0",
                "reset NetworkPolicy 0+0",
                "reset ClusterNetworkPolicy 2+2",
                "reset Node 1+0",
            ]
        );
        let mut store = crate::source::Store::new();
        for u in updates.clone() {
            store.apply(u);
        }
        let cluster = store.cluster();
        assert_eq!(
            cluster.cluster_policies().keys().collect::<Vec<_>>(),
            ["c", "old"]
        );
        let node = cluster.node("n1").expect("node n1");
        assert_eq!(node.labels.get("role").expect("label role"), "db");
        assert_eq!(
            node.addresses,
            ["192.168.0.1".parse::<std::net::IpAddr>().expect("ip")]
        );
        let errors: Vec<&String> = store.invalid().values().collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors.iter().any(|e| e.contains("domainNames")),
            "{errors:?}"
        );
        assert!(
            store
                .invalid()
                .contains_key(&(Kind::ClusterNetworkPolicy, ObjectRef::new("", "bad"))),
            "{errors:?}"
        );

        // A node relabelled, and a CNP turned invalid: an Upsert, and a report that leaves the
        // last valid version in force.
        std::fs::write(d.0.join("node.yaml"), NODE.replace("role: db", "role: web"))
            .expect("write");
        let broken = format!(
            "{}---\n",
            CNP.replace("subject: {namespaces: {}}", "subject: {}")
        );
        let rest = std::fs::read_to_string(d.0.join("others.yaml")).expect("read");
        std::fs::write(d.0.join("others.yaml"), rest.replacen(CNP, &broken, 1)).expect("write");
        let updates = source.poll();
        let mut seen = kinds(&updates);
        seen.sort();
        // The changed file is read again whole: each of its objects is sent again.
        assert_eq!(
            seen,
            [
                "invalid ClusterNetworkPolicy /bad",
                "invalid ClusterNetworkPolicy /c",
                "invalid ClusterNetworkPolicy /dns",
                "upsert ClusterNetworkPolicy /old",
                "upsert Node /n1",
            ]
        );
        for u in updates {
            store.apply(u);
        }
        let c = store
            .cluster()
            .cluster_policy("c")
            .expect("the last valid c");
        assert_eq!(c.egress.len(), 1);
        assert_eq!(
            store
                .cluster()
                .node("n1")
                .expect("n1")
                .labels
                .get("role")
                .expect("label role"),
            "web"
        );
    }
}
