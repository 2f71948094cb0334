//! A directory of manifests as a source (`--source dir:PATH`): the same input `policyc` reads,
//! re-read whenever it changes, for running without a cluster (the lab, tests, demos).
//!
//! Bad input never wipes good state: a file that does not parse keeps the objects it last had, and an
//! invalid object is reported and left out, its last valid version (if any) kept.
//!
//! Each poll walks the directory (new and removed files) and reads only the files whose metadata
//! changed: device, inode, size, and modification and change times to the nanosecond. A rewrite
//! that keeps the size within the filesystem's timestamp granularity would keep the metadata too,
//! so a file changed within the last [`RECENT`] is read (and its text hashed) on every poll until it
//! is older.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hasher;
use std::io::{BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use policy_compiler::input::for_each_object_read;
use policy_compiler::intern::Interner;
use policy_compiler::model::ObjectRef;
use policy_compiler::object::{convert, Converted, DEFAULT_NAMESPACE};
use tokio::sync::mpsc;

use super::{Kind, Object, Update};

/// How long after its last change a file is read on every poll whatever its metadata says: more
/// than the coarsest timestamp granularity of common filesystems (FAT's 2 s; ext4 and xfs keep
/// nanoseconds, but update them from a clock that ticks every few milliseconds).
pub const RECENT: Duration = Duration::from_secs(2);

/// The extensions of the files read inside the directory (as `policyc` reads a directory).
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Polls a directory and sends its state as [`Update`]s: one [`Update::Reset`] per kind on the first
/// read, then, for each file that changed, the objects it added, changed or dropped.
///
/// Only the metadata and a hash of each file and the keys of its objects are kept: the objects
/// themselves live in the agent's store, once. A file is read as a stream, never held whole. The
/// keys share their strings with the objects sent (and so with the store), and each file's name
/// is one shared string.
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    /// Per file, what its last read left (see [`FileState`]).
    files: BTreeMap<Arc<str>, FileState>,
    /// Which file defines each key (a key defined twice belongs to the first file that defined it).
    owners: BTreeMap<(Kind, ObjectRef), Arc<str>>,
    /// Keys that other files than their owner define again (reported as defined twice), with
    /// those files: when the owner lets a key go, they are read again in the same poll, and the
    /// first of them takes it (entries can be stale: a stale one costs a read).
    duplicates: BTreeMap<(Kind, ObjectRef), BTreeSet<Arc<str>>>,
    /// Files to read in this poll whatever their metadata and text say (see `duplicates`).
    reread: BTreeSet<Arc<str>>,
    /// The shared copies of the strings objects repeat (namespaces, labels), made as they are
    /// read: a first read holds each once before the store takes the objects (and adopts these
    /// copies as its own).
    interner: Interner,
    listed: bool,
    /// Whether unchanged metadata spares a read (see the module documentation).
    trust_metadata: bool,
    /// Files read so far.
    reads: u64,
}

/// What is kept of a file between polls.
#[derive(Debug)]
struct FileState {
    /// Its metadata when it was last read.
    metadata: FileMetadata,
    /// A hash of the last text read: an unchanged text is not parsed again.
    hash: u64,
}

/// The metadata that tells whether a file may have changed since it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileMetadata {
    dev: u64,
    ino: u64,
    size: u64,
    /// Modification time: seconds and nanoseconds.
    mtime: (i64, i64),
    /// Status change time: seconds and nanoseconds.
    ctime: (i64, i64),
}

impl FileMetadata {
    fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    /// Whether the file changed within [`RECENT`] of `now` (or its times are ahead of the clock).
    fn is_recent(&self, now: SystemTime) -> bool {
        let (secs, nanos) = self.mtime.max(self.ctime);
        let Ok(secs) = u64::try_from(secs) else {
            return false;
        };
        let changed = SystemTime::UNIX_EPOCH
            + Duration::from_secs(secs)
            + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
        now.duration_since(changed).map_or(true, |age| age < RECENT)
    }
}

/// The error of an object `file` defines again, which `owner` defines first.
fn defined_twice(file: &str, owner: &str) -> String {
    format!("{file}: defined twice; the definition in {owner} is used")
}

/// A manifest file found by the walk: its name (its path, as `policyc` names it), path and
/// metadata.
struct Found {
    name: String,
    path: PathBuf,
    metadata: FileMetadata,
}

/// The manifest files under `path` (recursively, sorted as `policyc` reads them; `path` itself
/// when it is a file), with their metadata. Any error fails the whole walk: a directory that cannot
/// be read must not look like its files were removed.
fn walk(path: &Path, named: bool, found: &mut Vec<Found>) -> std::io::Result<()> {
    let metadata = std::fs::metadata(path)?;
    if metadata.is_dir() {
        let mut children = std::fs::read_dir(path)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()?;
        children.sort();
        for child in children {
            walk(&child, false, found)?;
        }
        return Ok(());
    }
    let is_manifest = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e));
    if named || is_manifest {
        found.push(Found {
            name: path.display().to_string(),
            path: path.to_path_buf(),
            metadata: FileMetadata::of(&metadata),
        });
    }
    Ok(())
}

/// The valid and the invalid objects of one kind, for the first list.
type KindList = (Vec<Object>, Vec<(ObjectRef, String)>);

/// What one file yields when it parses.
struct Parsed {
    objects: Vec<Object>,
    invalid: Vec<(Kind, ObjectRef, String)>,
}

/// A file being read, hashed as it goes (its text's hash tells whether it changed), remembering
/// whether reading it failed (which is not the text's fault: it is read again at the next poll).
struct Hashing<R> {
    inner: R,
    hasher: DefaultHasher,
    failed: Option<std::io::Error>,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: DefaultHasher::new(),
            failed: None,
        }
    }

    /// Reads what is left (so that the hash covers the whole text) and gives the hash, or the
    /// reading's error.
    fn finish(mut self) -> std::io::Result<u64> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        match self.failed {
            Some(e) => Err(e),
            None => Ok(self.hasher.finish()),
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.write(&buf[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.failed = Some(std::io::Error::new(e.kind(), e.to_string()));
                Err(e)
            }
        }
    }
}

/// The hash of a file's text, reading it as a stream.
fn file_hash(path: &Path) -> std::io::Result<u64> {
    Hashing::new(std::fs::File::open(path)?).finish()
}

/// The buffer of a file being parsed.
const READ_BUFFER: usize = 64 * 1024;

impl DirSource {
    /// A source for a directory (read recursively, like `policyc`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
            owners: BTreeMap::new(),
            duplicates: BTreeMap::new(),
            reread: BTreeSet::new(),
            interner: Interner::new(),
            listed: false,
            trust_metadata: true,
            reads: 0,
        }
    }

    /// Reads every file on every poll, whatever its metadata (and hashes it, as before metadata
    /// was checked): for filesystems whose timestamps cannot be trusted, and to measure what the
    /// metadata check saves.
    pub fn reading_every_file(mut self) -> Self {
        self.trust_metadata = false;
        self
    }

    /// How many files the polls have read so far (a file whose metadata is unchanged, and that
    /// did not change within [`RECENT`], is not read).
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Streams one file into objects, converting each document as it comes (its strings shared
    /// through `interner`); returns the objects (`None` when the file does not parse) and the
    /// hash of the text read, or the error that stopped the reading.
    fn parse(
        name: &str,
        path: &Path,
        interner: &mut Interner,
    ) -> std::io::Result<(Option<Parsed>, u64)> {
        let mut parsed = Parsed {
            objects: Vec::new(),
            invalid: Vec::new(),
        };
        let mut reader =
            BufReader::with_capacity(READ_BUFFER, Hashing::new(std::fs::File::open(path)?));
        let problems = for_each_object_read(name, &mut reader, &mut |raw| {
            match convert(raw, DEFAULT_NAMESPACE) {
                // Only the kinds the agent enforces: workloads are for offline review (the agent
                // enforces the pods they make).
                Converted::Other(_) => {}
                Converted::Valid(o) if !o.kind().is_enforced() => {}
                Converted::Invalid { kind, .. } if !kind.is_enforced() => {}
                Converted::Valid(mut o) => {
                    o.share(interner);
                    parsed.objects.push(o);
                }
                Converted::Invalid { kind, key, error } => {
                    let error = error.to_string();
                    tracing::warn!(kind = kind.as_str(), object = %key, %error, "invalid object left out");
                    parsed.invalid.push((kind, key, error));
                }
            }
        });
        // What the buffer holds was hashed already; the rest is hashed as it is read.
        let hash = reader.into_inner().finish()?;
        for problem in &problems {
            tracing::warn!(file = %name, error = %problem, "file does not parse; keeping its last objects");
        }
        Ok((problems.is_empty().then_some(parsed), hash))
    }

    /// The key of an object read from a file: the one already held if the key is known (so
    /// that a file read again adds no copy), else `key` with its namespace shared.
    fn shared_key(&mut self, mut key: (Kind, ObjectRef)) -> (Kind, ObjectRef) {
        match self.owners.get_key_value(&key) {
            Some((held, _)) => held.clone(),
            None => {
                key.1.share(&mut self.interner);
                key
            }
        }
    }

    /// Walks the directory and reads the files that may have changed; returns the updates to send
    /// (nothing when no file changed).
    pub fn poll(&mut self) -> Vec<Update> {
        let mut found = Vec::new();
        if let Err(e) = walk(&self.dir, true, &mut found) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the manifest directory; keeping the last state");
            return Vec::new();
        }
        let now = SystemTime::now();
        let mut updates = Vec::new();
        let mut lists: BTreeMap<Kind, KindList> = Kind::ENFORCED
            .iter()
            .map(|k| (*k, Default::default()))
            .collect();
        let present: BTreeSet<&str> = found.iter().map(|f| f.name.as_str()).collect();
        // Files that are gone take their objects with them.
        let gone: Vec<Arc<str>> = self
            .files
            .keys()
            .filter(|f| !present.contains(&***f))
            .cloned()
            .collect();
        // The files to read: new ones, and known ones whose metadata says they may have changed.
        let to_read: Vec<&Found> = found
            .iter()
            .filter(|file| {
                !self.trust_metadata
                    || file.metadata.is_recent(now)
                    || self
                        .files
                        .get(file.name.as_str())
                        .is_none_or(|p| p.metadata != file.metadata)
            })
            .collect();
        // The keys of the files gone or to read again, from one scan of the owners. They stay
        // right through the poll: a file's keys change only when that file is read or goes.
        let known: HashSet<&str> = gone
            .iter()
            .map(|f| &**f)
            .chain(to_read.iter().map(|f| f.name.as_str()))
            .filter(|f| self.files.contains_key(*f))
            .collect();
        let mut owned = if known.is_empty() {
            HashMap::new()
        } else {
            self.owned_keys(&known)
        };
        for file in &gone {
            self.files.remove(file);
            for key in owned.remove(&**file).unwrap_or_default() {
                self.owners.remove(&key);
                self.release(&key);
                updates.push(Update::Delete(key.0, key.1));
            }
        }
        let mut read_any = false;
        // Files of this poll not read yet, and the objects defined in one while another of them
        // still owned their key: an object moved to a file read before the one it left is that
        // file's once the other has let it go (decided after every file is read).
        let mut pending: HashSet<&str> = to_read.iter().map(|f| f.name.as_str()).collect();
        let mut contested: Vec<(Arc<str>, (Kind, ObjectRef), Object)> = Vec::new();
        let mut queue: std::collections::VecDeque<&Found> = to_read.into_iter().collect();
        let mut read_now: HashSet<&str> = HashSet::new();
        loop {
            let Some(file) = queue.pop_front() else {
                // Files defining again a key its owner let go in this poll: read now (whatever
                // their metadata), so that the key passes to one of them at once.
                let again: Vec<&Found> = found
                    .iter()
                    .filter(|f| {
                        self.reread.contains(f.name.as_str()) && !read_now.contains(f.name.as_str())
                    })
                    .collect();
                if again.is_empty() {
                    break;
                }
                pending.extend(again.iter().map(|f| f.name.as_str()));
                queue.extend(again);
                continue;
            };
            read_now.insert(file.name.as_str());
            pending.remove(file.name.as_str());
            let forced = self.reread.remove(file.name.as_str());
            let previous = self.files.get_key_value(file.name.as_str());
            // The file's name, one shared string for all its keys.
            let name: Arc<str> = previous.map_or_else(
                || Arc::from(file.name.as_str()),
                |(name, _)| Arc::clone(name),
            );
            self.reads += 1;
            read_any = true;
            if let Some(state) = self.files.get_mut(&name) {
                // Known: hashed first (as a stream), and parsed only if the text changed.
                match file_hash(&file.path) {
                    Ok(hash) if hash == state.hash && !forced => {
                        state.metadata = file.metadata;
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // Read again at the next poll; until then its last objects stay.
                        tracing::warn!(file = %file.name, error = %e, "cannot read the file; keeping its last objects");
                        continue;
                    }
                }
            }
            let (parsed, hash) = match Self::parse(&name, &file.path, &mut self.interner) {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(file = %file.name, error = %e, "cannot read the file; keeping its last objects");
                    continue;
                }
            };
            let known = self.files.remove(&name).is_some();
            let Some(parsed) = parsed else {
                // Remember the broken text (so it is not parsed again) but keep its last objects.
                self.files.insert(
                    name,
                    FileState {
                        metadata: file.metadata,
                        hash,
                    },
                );
                continue;
            };
            let old_keys = if known {
                owned.remove(&*name).unwrap_or_default()
            } else {
                Vec::new()
            };
            let mut keys = Vec::new();
            for object in parsed.objects {
                let key = self.shared_key((object.kind(), object.key()));
                let owner = self
                    .owners
                    .entry(key.clone())
                    .or_insert_with(|| Arc::clone(&name));
                if *owner != name && pending.contains(&**owner) {
                    contested.push((Arc::clone(&name), key, object));
                    continue;
                }
                if *owner != name {
                    let error = defined_twice(&name, owner);
                    self.report_duplicate(&name, key, error, &mut lists, &mut updates);
                    continue;
                }
                keys.push(key.clone());
                self.send(object, &mut lists, &mut updates);
            }
            for (kind, key, error) in parsed.invalid {
                // An invalid object stays the file's: its last valid version is kept, not deleted.
                let k = self.shared_key((kind, key));
                if self.owners.get(&k).is_none_or(|o| *o == name) {
                    self.owners.insert(k.clone(), Arc::clone(&name));
                    keys.push(k.clone());
                }
                let key = k.1;
                if self.listed {
                    updates.push(Update::Invalid { kind, key, error });
                } else {
                    lists.entry(kind).or_default().1.push((key, error));
                }
            }
            keys.sort_unstable();
            keys.dedup();
            for key in old_keys {
                if keys.binary_search(&key).is_err() {
                    self.owners.remove(&key);
                    self.release(&key);
                    updates.push(Update::Delete(key.0, key.1));
                }
            }
            self.files.insert(
                name,
                FileState {
                    metadata: file.metadata,
                    hash,
                },
            );
        }
        // Whatever is left names files that are gone.
        self.reread.clear();
        for (name, key, object) in contested {
            let owner = self
                .owners
                .entry(key.clone())
                .or_insert_with(|| Arc::clone(&name));
            if *owner == name {
                self.send(object, &mut lists, &mut updates);
            } else {
                let error = defined_twice(&name, owner);
                self.report_duplicate(&name, key, error, &mut lists, &mut updates);
            }
        }
        if !self.listed {
            self.listed = true;
            // The first read filled the owners in key order, leaving the map's nodes half
            // empty: pack them (later reads add few keys).
            policy_compiler::cluster::pack(&mut self.owners);
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
        if read_any {
            // Reading a large directory leaves freed memory in the allocator's arenas; hand it
            // back.
            crate::heap::release_free_memory();
        }
        updates
    }

    /// Sends an object its file owns: in the first list, or as an upsert after it.
    fn send(
        &self,
        object: Object,
        lists: &mut BTreeMap<Kind, KindList>,
        updates: &mut Vec<Update>,
    ) {
        if self.listed {
            updates.push(Update::Upsert(object));
        } else {
            lists.entry(object.kind()).or_default().0.push(object);
        }
    }

    /// Reports that `file` defines `key` again, which another file owns (`error` says which),
    /// and remembers it for when that file lets the key go.
    fn report_duplicate(
        &mut self,
        file: &Arc<str>,
        key: (Kind, ObjectRef),
        error: String,
        lists: &mut BTreeMap<Kind, KindList>,
        updates: &mut Vec<Update>,
    ) {
        self.duplicates
            .entry(key.clone())
            .or_default()
            .insert(Arc::clone(file));
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
    }

    /// The owner of `key` let it go: the files that define it again are to be read.
    fn release(&mut self, key: &(Kind, ObjectRef)) {
        if let Some(files) = self.duplicates.remove(key) {
            self.reread.extend(files);
        }
    }

    /// The keys each of `files` defines (owns): one scan of the owners, made only by a poll that
    /// reads a known file again or finds one gone, whatever the number of such files. Keeping each
    /// file's keys beside the owners instead would cost a second entry per object (some 4 MiB at
    /// 100k pods) to spare that scan.
    fn owned_keys<'f>(&self, files: &HashSet<&'f str>) -> HashMap<&'f str, Vec<(Kind, ObjectRef)>> {
        let mut owned: HashMap<&'f str, Vec<(Kind, ObjectRef)>> = HashMap::new();
        for (key, owner) in &self.owners {
            if let Some(file) = files.get(&**owner) {
                owned.entry(*file).or_default().push(key.clone());
            }
        }
        owned
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
                Update::ListBegin(kind) => format!("list {}", kind.as_str()),
                Update::ListPage { kind, .. } => format!("page {}", kind.as_str()),
                Update::ListEnd(kind) => format!("end {}", kind.as_str()),
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

    const POLICY_2: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: q, namespace: x}\nspec: {podSelector: {}}\n";

    #[test]
    fn unchanged_files_are_not_read_and_changes_new_and_removed_files_are_seen() {
        let d = dir("metadata");
        std::fs::write(d.0.join("ns.yaml"), NS).expect("write");
        std::fs::write(d.0.join("policy.yaml"), POLICY).expect("write");
        std::fs::write(d.0.join("notes.txt"), "not a manifest").expect("write");
        let mut source = DirSource::new(&d.0);
        source.poll();
        assert_eq!(source.reads(), 2, "the manifests, not notes.txt");
        // Older than the window now: their metadata is trusted.
        std::thread::sleep(RECENT + Duration::from_millis(200));
        assert!(source.poll().is_empty());
        assert!(source.poll().is_empty());
        assert_eq!(source.reads(), 2, "an unchanged directory reads no file");

        // An edit that keeps the size.
        let renamed = POLICY.replace("name: p", "name: q");
        assert_eq!(renamed.len(), POLICY.len());
        std::fs::write(d.0.join("policy.yaml"), &renamed).expect("write");
        let mut seen = kinds(&source.poll());
        seen.sort();
        assert_eq!(
            seen,
            ["delete NetworkPolicy x/p", "upsert NetworkPolicy x/q"]
        );
        assert_eq!(source.reads(), 3, "only the edited file is read");

        // A new file in a new subdirectory, and a removed one.
        std::fs::create_dir(d.0.join("more")).expect("mkdir");
        std::fs::write(
            d.0.join("more/p2.yaml"),
            POLICY_2.replace("name: q", "name: r"),
        )
        .expect("write");
        assert_eq!(kinds(&source.poll()), ["upsert NetworkPolicy x/r"]);
        std::fs::remove_file(d.0.join("policy.yaml")).expect("rm");
        assert_eq!(kinds(&source.poll()), ["delete NetworkPolicy x/q"]);

        // Quiet again once the window has passed.
        std::thread::sleep(RECENT + Duration::from_millis(200));
        let reads = source.reads();
        assert!(source.poll().is_empty());
        assert_eq!(source.reads(), reads);
    }

    #[test]
    fn many_files_changed_in_one_poll_each_lose_only_their_own_objects() {
        let policy = |name: &str| POLICY.replace("name: p", &format!("name: {name}"));
        let docs = |names: &[&str]| {
            names
                .iter()
                .map(|n| policy(n))
                .collect::<Vec<_>>()
                .join("---\n")
        };
        let d = dir("many");
        std::fs::write(d.0.join("a.yaml"), docs(&["p1", "p2"])).expect("write");
        std::fs::write(d.0.join("b.yaml"), docs(&["p3"])).expect("write");
        std::fs::write(d.0.join("c.yaml"), docs(&["p4"])).expect("write");
        std::fs::write(d.0.join("d.yaml"), docs(&["p5"])).expect("write");
        let mut source = DirSource::new(&d.0);
        source.poll();
        // In one poll: p2 moves from a.yaml to b.yaml, c.yaml goes, d.yaml is rewritten
        // unchanged.
        std::fs::write(d.0.join("a.yaml"), docs(&["p1"])).expect("write");
        std::fs::write(d.0.join("b.yaml"), docs(&["p3", "p2"])).expect("write");
        std::fs::remove_file(d.0.join("c.yaml")).expect("rm");
        std::fs::write(d.0.join("d.yaml"), docs(&["p5"])).expect("write");
        assert_eq!(
            kinds(&source.poll()),
            [
                "delete NetworkPolicy x/p4",
                "upsert NetworkPolicy x/p1",
                "delete NetworkPolicy x/p2",
                "upsert NetworkPolicy x/p3",
                "upsert NetworkPolicy x/p2",
            ]
        );
        // Each key now belongs to the file that holds it: removing b.yaml takes p2 and p3 only.
        std::fs::remove_file(d.0.join("b.yaml")).expect("rm");
        let mut seen = kinds(&source.poll());
        seen.sort();
        assert_eq!(
            seen,
            ["delete NetworkPolicy x/p2", "delete NetworkPolicy x/p3"]
        );
    }

    #[test]
    fn an_object_moved_to_a_file_read_before_the_one_it_left_stays() {
        let policy = |name: &str| POLICY.replace("name: p", &format!("name: {name}"));
        let docs = |names: &[&str]| {
            names
                .iter()
                .map(|n| policy(n))
                .collect::<Vec<_>>()
                .join("---\n")
        };
        let d = dir("moved-back");
        std::fs::write(d.0.join("a.yaml"), docs(&["p1"])).expect("write");
        std::fs::write(d.0.join("b.yaml"), docs(&["p2", "p3"])).expect("write");
        let mut source = DirSource::new(&d.0);
        source.poll();
        // In one poll p2 moves from b.yaml to a.yaml, which is read first: b.yaml lets it go,
        // then a.yaml takes it.
        std::fs::write(d.0.join("a.yaml"), docs(&["p1", "p2"])).expect("write");
        std::fs::write(d.0.join("b.yaml"), docs(&["p3"])).expect("write");
        assert_eq!(
            kinds(&source.poll()),
            [
                "upsert NetworkPolicy x/p1",
                "upsert NetworkPolicy x/p3",
                "delete NetworkPolicy x/p2",
                "upsert NetworkPolicy x/p2",
            ]
        );
        // A real duplicate is still one: the file that owns the key keeps it.
        std::fs::write(d.0.join("c.yaml"), docs(&["p3"])).expect("write");
        assert_eq!(kinds(&source.poll()), ["invalid NetworkPolicy x/p3"]);
        // p2 is a.yaml's now: removing a.yaml takes p1 and p2 with it.
        std::fs::remove_file(d.0.join("a.yaml")).expect("rm");
        let mut seen = kinds(&source.poll());
        seen.sort();
        assert_eq!(
            seen,
            ["delete NetworkPolicy x/p1", "delete NetworkPolicy x/p2"]
        );
    }

    #[test]
    fn a_definition_in_a_second_file_takes_over_when_the_first_lets_it_go() {
        let d = dir("takeover");
        std::fs::write(d.0.join("a.yaml"), POLICY).expect("write");
        std::fs::write(d.0.join("b.yaml"), POLICY).expect("write");
        std::fs::write(d.0.join("c.yaml"), POLICY).expect("write");
        let mut source = DirSource::new(&d.0);
        let first = source.poll();
        assert!(
            kinds(&first).contains(&"reset NetworkPolicy 1+2".to_string()),
            "{:?}",
            kinds(&first)
        );
        // Older than the window: b.yaml and c.yaml are not read again unless asked to.
        std::thread::sleep(RECENT + Duration::from_millis(200));
        assert!(source.poll().is_empty());
        // The owner goes: in the same poll the next file takes the policy, the third is still a
        // duplicate.
        std::fs::remove_file(d.0.join("a.yaml")).expect("rm");
        assert_eq!(
            kinds(&source.poll()),
            [
                "delete NetworkPolicy x/p",
                "upsert NetworkPolicy x/p",
                "invalid NetworkPolicy x/p",
            ]
        );
        // b.yaml owns it now: an edit of b.yaml that drops it hands it to c.yaml.
        std::fs::write(d.0.join("b.yaml"), NS).expect("write");
        let seen = kinds(&source.poll());
        assert_eq!(
            seen,
            [
                "upsert Namespace /x",
                "delete NetworkPolicy x/p",
                "upsert NetworkPolicy x/p"
            ]
        );
        std::fs::remove_file(d.0.join("c.yaml")).expect("rm");
        assert_eq!(kinds(&source.poll()), ["delete NetworkPolicy x/p"]);
    }

    #[test]
    fn a_same_size_rewrite_within_the_timestamp_granularity_is_seen() {
        let d = dir("racy");
        std::fs::write(d.0.join("ns.yaml"), NS).expect("write");
        let path = d.0.join("policy.yaml");
        std::fs::write(&path, POLICY).expect("write");
        let mut source = DirSource::new(&d.0);
        source.poll();
        std::fs::write(&path, POLICY.replace("name: p", "name: q")).expect("write");
        // On a filesystem with coarse timestamps both writes can fall in one tick: the same
        // inode, size and times. (Recent kernels make the second write's times finer once the first
        // ones were read, so this is set here as such a filesystem would leave it.)
        let after = FileMetadata::of(&std::fs::metadata(&path).expect("stat"));
        let name = path.display().to_string();
        source
            .files
            .get_mut(name.as_str())
            .expect("read before")
            .metadata = after;
        let mut seen = kinds(&source.poll());
        seen.sort();
        assert_eq!(
            seen,
            ["delete NetworkPolicy x/p", "upsert NetworkPolicy x/q"]
        );
    }

    #[test]
    fn a_file_is_recent_for_the_window_after_its_last_change() {
        let stat = |mtime: i64, ctime: i64| FileMetadata {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: (mtime, 500),
            ctime: (ctime, 0),
        };
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert!(stat(100, 100).is_recent(at(101)));
        assert!(!stat(100, 100).is_recent(at(103)));
        // A change of status (a rewrite whose mtime was set back) counts as a change.
        assert!(stat(10, 100).is_recent(at(101)));
        // Times ahead of the clock: read until the clock passes them.
        assert!(stat(200, 200).is_recent(at(101)));
    }

    const POD: &str =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: x, labels: {app: web}}\n\
        spec: {nodeName: node-0}\nstatus: {phase: Running, podIP: 10.0.0.1}\n";

    #[test]
    fn keys_share_their_strings_with_the_objects_and_each_file_name_is_one_string() {
        let d = dir("shared");
        let second = POD.replace("name: web", "name: db");
        std::fs::write(d.0.join("pods.yaml"), format!("{POD}---\n{second}")).expect("write");
        let mut source = DirSource::new(&d.0);
        let updates = source.poll();
        let pods: Vec<&Object> = updates
            .iter()
            .flat_map(|u| match u {
                Update::Reset {
                    kind: Kind::Pod,
                    objects,
                    ..
                } => objects.iter().collect(),
                _ => vec![],
            })
            .collect();
        assert_eq!(pods.len(), 2);
        let ids: Vec<&ObjectRef> = pods
            .iter()
            .map(|o| match o {
                Object::Pod(p) => &p.id,
                _ => unreachable!("pods only"),
            })
            .collect();
        assert!(Arc::ptr_eq(&ids[0].namespace, &ids[1].namespace));
        let (owned, file) = source
            .owners
            .get_key_value(&(Kind::Pod, ids[0].clone()))
            .expect("owned");
        assert!(Arc::ptr_eq(&owned.1.name, &ids[0].name));
        let file_key = source.files.keys().next().expect("one file");
        assert!(Arc::ptr_eq(file, file_key));
        // Both pods' owners are the one file-name string.
        let files: Vec<&Arc<str>> = source.owners.values().collect();
        assert!(files.iter().all(|f| Arc::ptr_eq(f, file_key)));

        // Read again after an edit: the keys held are kept, not copied.
        let held = Arc::clone(&owned.1.name);
        std::fs::write(
            d.0.join("pods.yaml"),
            format!("{}---\n{second}", POD.replace("app: web", "app: api")),
        )
        .expect("write");
        let updates = source.poll();
        assert_eq!(kinds(&updates), ["upsert Pod x/web", "upsert Pod x/db"]);
        let (listed, _) = source
            .owners
            .get_key_value(&(Kind::Pod, ObjectRef::new("x", "web")))
            .expect("owned");
        assert!(Arc::ptr_eq(&listed.1.name, &held));
    }

    #[test]
    fn reading_every_file_ignores_the_metadata() {
        let d = dir("every");
        std::fs::write(d.0.join("ns.yaml"), NS).expect("write");
        let mut source = DirSource::new(&d.0).reading_every_file();
        source.poll();
        std::thread::sleep(RECENT + Duration::from_millis(200));
        assert!(source.poll().is_empty());
        assert_eq!(source.reads(), 2);
    }
}
