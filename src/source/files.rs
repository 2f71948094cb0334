//! A directory of manifests as a source (`--source dir:PATH`): the same input `policyc` reads,
//! re-read whenever it changes, for running without a cluster (the lab, tests, demos).
//!
//! Bad input never wipes good state: a file that does not parse keeps the objects it last had, and an
//! invalid object is reported (in [`Update::Reset`]) and left out, its last valid version (if any) kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use policy_compiler::input::{
    for_each_object, namespace_from_api, pod_from_api, policy_from_api, read_paths,
};
use policy_compiler::model::ObjectRef;
use tokio::sync::mpsc;

use super::{Kind, Object, Update};

/// Polls a directory and sends its state as [`Update`]s.
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    /// A hash of the last text seen, per file: unchanged input is not parsed again, and the texts
    /// themselves are not kept.
    texts: BTreeMap<String, u64>,
    /// The objects of each file as last parsed successfully.
    last_good: BTreeMap<String, Vec<Object>>,
}

fn convert(raw: &policy_compiler::input::RawObject) -> Option<Result<Object, (Kind, String)>> {
    let kind = raw.value["kind"].as_str()?;
    Some(match kind {
        "Namespace" => namespace_from_api(raw)
            .map(Object::Namespace)
            .map_err(|e| (Kind::Namespace, e.to_string())),
        "Pod" => pod_from_api(raw)
            .map(Object::Pod)
            .map_err(|e| (Kind::Pod, e.to_string())),
        "NetworkPolicy" => policy_from_api(raw)
            .map(Object::Policy)
            .map_err(|e| (Kind::NetworkPolicy, e.to_string())),
        _ => return None,
    })
}

fn raw_key(kind: Kind, value: &serde_json::Value) -> ObjectRef {
    let name = value["metadata"]["name"].as_str().unwrap_or("<unnamed>");
    let namespace = match kind {
        Kind::Namespace => "",
        _ => value["metadata"]["namespace"].as_str().unwrap_or("default"),
    };
    ObjectRef::new(namespace, name)
}

impl DirSource {
    /// A source for a directory (read recursively, like `policyc`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            texts: BTreeMap::new(),
            last_good: BTreeMap::new(),
        }
    }

    /// Reads the directory; returns the updates to send, or nothing when no file changed.
    pub fn poll(&mut self) -> Vec<Update> {
        let sources = match read_paths(&[self.dir.display().to_string()]) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the manifest directory; keeping the last state");
                return Vec::new();
            }
        };
        let texts: BTreeMap<String, u64> = sources
            .iter()
            .map(|s| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(&s.text, &mut h);
                (s.name.clone(), std::hash::Hasher::finish(&h))
            })
            .collect();
        if texts == self.texts {
            return Vec::new();
        }
        self.texts = texts;
        let mut invalid: BTreeMap<Kind, Vec<(ObjectRef, String)>> = BTreeMap::new();
        let mut last_good = BTreeMap::new();
        for source in &sources {
            // Objects are converted as the file streams by, one document at a time.
            let mut objects = Vec::new();
            let mut file_invalid = Vec::new();
            let problems = for_each_object(source, &mut |raw| match convert(&raw) {
                None => {}
                Some(Ok(o)) => objects.push(o),
                Some(Err((kind, error))) => {
                    let key = raw_key(kind, &raw.value);
                    tracing::warn!(kind = kind.as_str(), object = %key, %error, "invalid object left out");
                    // Its previous valid version, if the file had one, stays.
                    if let Some(prev) = self
                        .last_good
                        .get(&source.name)
                        .and_then(|objs| objs.iter().find(|o| o.kind() == kind && o.key() == key))
                    {
                        objects.push(prev.clone());
                    }
                    file_invalid.push((kind, key, error));
                }
            });
            if problems.is_empty() {
                for (kind, key, error) in file_invalid {
                    invalid.entry(kind).or_default().push((key, error));
                }
                last_good.insert(source.name.clone(), objects);
            } else {
                for problem in &problems {
                    tracing::warn!(file = %source.name, error = %problem, "file does not parse; keeping its last objects");
                }
                let kept = self
                    .last_good
                    .get(&source.name)
                    .cloned()
                    .unwrap_or_default();
                last_good.insert(source.name.clone(), kept);
            }
        }
        self.last_good = last_good;
        // Parsing a large directory leaves freed memory in the allocator's arenas; hand it back.
        // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
        let mut seen: BTreeSet<(Kind, ObjectRef)> = BTreeSet::new();
        let mut by_kind: BTreeMap<Kind, Vec<Object>> =
            Kind::ALL.iter().map(|k| (*k, Vec::new())).collect();
        for (file, objects) in &self.last_good {
            for o in objects {
                if seen.insert((o.kind(), o.key())) {
                    by_kind.entry(o.kind()).or_default().push(o.clone());
                } else {
                    let error = format!("{file}: defined twice; the first definition is used");
                    invalid.entry(o.kind()).or_default().push((o.key(), error));
                }
            }
        }
        by_kind
            .into_iter()
            .map(|(kind, objects)| Update::Reset {
                kind,
                objects,
                invalid: invalid.remove(&kind).unwrap_or_default(),
            })
            .collect()
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
