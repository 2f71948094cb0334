//! The reconcile loop: fold source updates into the [`Store`], sync a change at once when things
//! are quiet and coalesce bursts (see [`crate::debounce`]), compile the node's ruleset, and apply the
//! difference in one transaction; audit the kernel for drift.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::net::IpAddr;

use policy_compiler::model::ObjectRef;
use policy_compiler::object::Object;
use policy_compiler::plan::{CompileOptions, LiveNode, Origins};
use policy_compiler::ClusterState;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::dataplane::{ApplyReport, Dataplane};
use crate::debounce::{Debounce, DebounceConfig};
use crate::kernel::KernelError;
use crate::metrics::{Metrics, SyncLabels};
use crate::revocation::{affected_pods, tier_revocations};
use crate::source::{Kind, Store, Update};

/// How the agent behaves.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node whose pods this agent enforces.
    pub node: String,
    /// When changes are synced: at once when quiet, at most once per interval under a burst (see
    /// [`crate::debounce`]).
    pub debounce: DebounceConfig,
    /// How often to compare the kernel with what was committed.
    pub audit_interval: Duration,
    /// How long to wait before retrying a failed sync.
    pub retry: Duration,
    /// Delete the conntrack entries of the local pods whose access a change may have revoked
    /// (see [`crate::revocation`]).
    pub conntrack_flush: bool,
    /// How long a due sync waits for kinds whose watch failed to be listed again (see
    /// [`Update::Stale`]), and for a re-list in progress to end; after that it runs with their last
    /// known state. Zero: never wait.
    pub relist_hold: Duration,
    /// What the ruleset does besides enforcing: deny log rules, audit of every policy.
    pub compile: CompileOptions,
}

impl AgentConfig {
    /// The defaults for a node: the default debounce ([`DebounceConfig::DEFAULT`]: 1 ms gather
    /// window, 50 ms interval, 250 ms cap), 5 min audit, 1 s retry, no conntrack flush, 10 s hold for
    /// re-listing kinds.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            debounce: DebounceConfig::DEFAULT,
            audit_interval: Duration::from_secs(300),
            retry: Duration::from_secs(1),
            conntrack_flush: false,
            relist_hold: Duration::from_secs(10),
            compile: CompileOptions::default(),
        }
    }
}

/// Told of every ruleset the agent commits: the origins of its counters, the cluster it was
/// compiled from, and which pods changed since the commit before (the policy metrics and the deny
/// log name policies and pods with them).
pub trait CommitObserver: Send + Sync + std::fmt::Debug {
    /// A sync committed (or found already in force) the ruleset whose counters `origins` describe,
    /// compiled from `cluster`; of its pods, those `changed` may differ from what the previous call
    /// was given.
    fn committed(&self, origins: &Arc<Origins>, cluster: &ClusterState, changed: Changed<'_>);
}

/// Which pods may have changed since the last commit the observers were told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed<'a> {
    /// Any of them: the first commit, and every commit of a full compile (after a list changed
    /// objects, of any kind).
    All,
    /// Only these (each added, changed or deleted): the pod events given to the incremental
    /// compiler since then, the failed syncs' included, each pod with the addresses it had at
    /// that last commit.
    Pods(&'a PodsBefore),
}

/// Pods that changed, each with the addresses it had before (none when it did not exist).
pub type PodsBefore = BTreeMap<ObjectRef, Box<[IpAddr]>>;

/// The pods given to the incremental compiler since the last commit the observers were told of.
#[derive(Debug)]
enum PodChanges {
    /// Any pod may have changed.
    All,
    /// These pods, with the addresses each had at the last commit.
    Pods(PodsBefore),
}

impl PodChanges {
    /// What to tell the observers.
    fn changed(&self) -> Changed<'_> {
        match self {
            PodChanges::All => Changed::All,
            PodChanges::Pods(pods) => Changed::Pods(pods),
        }
    }
}

/// Liveness and readiness, shared with the HTTP server.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    stopped: AtomicBool,
}

impl Health {
    /// Ready: the first sync succeeded, and so did the last one.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Alive: the reconcile loop has not stopped.
    pub fn is_alive(&self) -> bool {
        !self.stopped.load(Ordering::SeqCst)
    }
}

/// What one sync did, for observers (tests, logs).
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// Whether `nft` ran (false when the ruleset was unchanged).
    pub nft_called: bool,
    /// Whether the node was compiled in full (at the first sync, and after a list changed
    /// objects), rather than updated event by event.
    pub full_compile: bool,
    /// The apply, or why it failed.
    pub result: Result<ApplyReport, String>,
    /// How many changes taken in since the previous successful sync this one committed (0 when
    /// it failed).
    pub changes: usize,
}

/// The agent.
pub struct Agent {
    config: AgentConfig,
    store: Store,
    dataplane: Dataplane,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    observer: Option<mpsc::UnboundedSender<SyncReport>>,
    commit_observers: Vec<Arc<dyn CommitObserver>>,
    listed: BTreeSet<Kind>,
    stale: StaleKinds,
    debounce: Debounce,
    /// The node's ruleset, kept up to date event by event (built at the first sync, and again
    /// after a list replaced a kind's objects wholesale).
    live: Option<LiveNode>,
    /// The origins of the counters of `live`'s ruleset, shared with the commit observers, and the
    /// generation of `live`'s origins they are.
    origins: (Arc<Origins>, Option<u64>),
    /// The pods given to `live` since the commit observers were last told of.
    pod_changes: PodChanges,
}

impl Agent {
    /// An agent over a dataplane (see [`Dataplane::from_kernel`]).
    pub fn new(
        config: AgentConfig,
        dataplane: Dataplane,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            store: Store::new(),
            dataplane,
            metrics,
            health,
            observer: None,
            commit_observers: Vec::new(),
            listed: BTreeSet::new(),
            stale: StaleKinds::new(config.relist_hold),
            debounce: Debounce::new(config.debounce),
            live: None,
            origins: (Arc::new(Origins::new()), None),
            pod_changes: PodChanges::All,
            config,
        }
    }

    /// Tells `observer` of every ruleset committed.
    pub fn with_commit_observer(mut self, observer: Arc<dyn CommitObserver>) -> Self {
        self.commit_observers.push(observer);
        self
    }

    /// Sends a report of every sync to `observer`.
    pub fn with_observer(mut self, observer: mpsc::UnboundedSender<SyncReport>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Whether every kind has been listed once: before that, a sync would enforce a partial view
    /// (policies without their pods, say), so none runs. A kind half-way through a later list (its
    /// objects a mix of the list's and older ones, none removed yet) holds syncs as a stale kind
    /// does, for at most [`AgentConfig::relist_hold`].
    fn lists_complete(&self) -> bool {
        Kind::ENFORCED.iter().all(|k| self.listed.contains(k))
    }

    /// Runs until every source has gone away. The table stays in force afterwards (fail-static).
    pub async fn run(mut self, mut updates: mpsc::Receiver<Update>) {
        // A retry, a hold for stale kinds, or the end of one: the due sync waits until then.
        let mut not_before: Option<Instant> = None;
        let mut audit = tokio::time::interval(self.config.audit_interval);
        audit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        audit.tick().await;
        loop {
            let sync_at = self
                .debounce
                .due()
                .map(|due| not_before.map_or(due, |t| t.max(due)))
                .filter(|_| self.lists_complete());
            tokio::select! {
                update = updates.recv() => {
                    let Some(update) = update else { break };
                    let released = if let Some(kind) = update.completes_list() {
                        self.listed.insert(kind);
                        self.stale.current(kind)
                    } else {
                        match &update {
                            Update::Live(kind) => self.stale.current(*kind),
                            // A re-list: what the store holds of the kind is behind until it ends.
                            Update::ListBegin(kind) if self.listed.contains(kind) => {
                                self.stale.stale(*kind);
                                false
                            }
                            Update::Stale(kind) => {
                                self.stale.stale(*kind);
                                false
                            }
                            _ => false,
                        }
                    };
                    if released {
                        // A sync was held for this kind: with every kind current, it runs after one
                        // interval, which lets the changes a resumed watch replays join it.
                        not_before = Some(Instant::now() + self.config.debounce.interval);
                    }
                    let changed = self.take_in(update);
                    self.metrics.invalid_objects.set(self.store.invalid().len() as i64);
                    // Until the first sync succeeds, every update (the last initial list, say) asks
                    // for one, even when it changes nothing.
                    if changed || !self.health.is_ready() {
                        self.debounce.on_change(Instant::now());
                    }
                }
                _ = async { sleep_until(sync_at.unwrap_or_else(Instant::now)).await }, if sync_at.is_some() => {
                    if let Some(until) = self.stale.hold(Instant::now()) {
                        not_before = Some(until);
                        continue;
                    }
                    not_before = None;
                    if !self.sync() {
                        not_before = Some(Instant::now() + self.config.retry);
                    }
                }
                _ = audit.tick() => {
                    if self.lists_complete() && self.health.is_ready() {
                        self.audit();
                    }
                }
            }
        }
        self.health.stopped.store(true, Ordering::SeqCst);
        tracing::info!("all sources stopped; the last ruleset stays in force");
    }

    /// After a sync: a successful one committed every pending change; counts them and how long
    /// the oldest waited; returns how many.
    fn record_sync(&mut self, ok: bool) -> usize {
        if !ok {
            return 0;
        }
        let now = Instant::now();
        let Some(batch) = self.debounce.synced(now) else {
            return 0;
        };
        self.metrics.sync_events.observe(batch.changes as f64);
        self.metrics
            .sync_queue_lag
            .observe((now - batch.since).as_secs_f64());
        batch.changes as usize
    }

    /// Folds an update into the store and the incremental compiler; returns whether the valid
    /// objects changed. A watch event (one object) is applied to the compiler as it is; a list that
    /// changes anything (it may replace a whole kind) makes the next sync compile the node in full
    /// again, and one that changes nothing keeps the compiler's state. The pods given to the
    /// compiler are noted for the commit observers; a full compile to come tells them all may have
    /// changed.
    fn take_in(&mut self, update: Update) -> bool {
        let one = match &update {
            Update::Upsert(object) => Some((object.kind(), object.key())),
            Update::Delete(kind, key) => Some((*kind, key.clone())),
            _ => None,
        };
        let old = one
            .as_ref()
            .and_then(|(kind, key)| self.store.cluster().get(*kind, key));
        let changed = self.store.apply(update);
        if changed {
            match (&mut self.live, one) {
                (Some(live), Some((kind, key))) => {
                    live.changed(self.store.cluster(), kind, &key, old.as_ref());
                    if let (Kind::Pod, PodChanges::Pods(pods)) = (kind, &mut self.pod_changes) {
                        // The first event since the commit holds the addresses of that commit.
                        pods.entry(key).or_insert_with(|| match &old {
                            Some(Object::Pod(p)) => p.ips.clone().into_boxed_slice(),
                            _ => Box::default(),
                        });
                    }
                }
                _ => {
                    self.live = None;
                    self.pod_changes = PodChanges::All;
                }
            }
        }
        changed
    }

    /// Compiles (incrementally) and applies; returns whether it succeeded.
    fn sync(&mut self) -> bool {
        let started = std::time::Instant::now();
        let full_compile = self.live.is_none();
        if full_compile {
            // The lists filled the store in key order, which leaves its maps' nodes half empty:
            // pack them before the compile, whose own peak comes on top.
            self.store.compact();
        }
        // Compiling and running nft take CPU and a child process: off the async workers.
        let (shrunk, result, stats) = tokio::task::block_in_place(|| {
            let cluster = self.store.cluster();
            let live = self.live.get_or_insert_with(|| {
                LiveNode::new(cluster, &self.config.node, self.config.compile)
            });
            let (touched, stats) = live.flush(cluster);
            let desired = live.ruleset();
            // Read before the apply replaces the committed ruleset.
            let shrunk = self
                .config
                .conntrack_flush
                .then(|| tier_revocations(self.dataplane.committed(), desired));
            let result = self.dataplane.apply_touched(desired, touched.as_ref());
            (shrunk, result, stats)
        });
        let Some(live) = &self.live else {
            return false;
        };
        if self.origins.1 != Some(live.origins_generation()) {
            self.origins = (
                Arc::new(live.origins().clone()),
                Some(live.origins_generation()),
            );
        }
        let origins = self.origins.0.clone();
        let desired = live.ruleset();
        tracing::debug!(
            events = stats.events,
            rendered = stats.rendered,
            pieces = stats.pieces,
            resolved_sets = stats.resolved_sets,
            element_changes = stats.element_changes,
            "compiled"
        );
        let elapsed = started.elapsed();
        let ok = result.is_ok();
        match &result {
            Ok(report) if report.operations == 0 => {
                tracing::debug!("ruleset unchanged; nft not called");
            }
            Ok(report) => {
                let kind = if report.full { "full" } else { "partial" };
                self.metrics
                    .sync_duration
                    .get_or_create(&SyncLabels { kind: kind.into() })
                    .observe(elapsed.as_secs_f64());
                self.metrics
                    .transaction_operations
                    .inc_by(report.operations as u64);
                tracing::info!(
                    kind,
                    operations = report.operations,
                    elements_added = report.stats.elements_added,
                    elements_deleted = report.stats.elements_deleted,
                    rules_added = report.stats.rules_added,
                    millis = elapsed.as_millis() as u64,
                    "synced"
                );
                if let Some(shrunk) = &shrunk {
                    self.flush_conntrack(&affected_pods(report, desired, shrunk));
                }
            }
            Err(e) => {
                self.metrics.sync_errors.inc();
                tracing::error!(error = %e, "sync failed; the next attempt replaces the table whole");
            }
        }
        if ok {
            if full_compile {
                self.pod_changes = PodChanges::All;
            }
            let changed = self.pod_changes.changed();
            for observer in &self.commit_observers {
                observer.committed(&origins, self.store.cluster(), changed);
            }
            self.pod_changes = PodChanges::Pods(PodsBefore::new());
            self.health.ready.store(true, Ordering::SeqCst);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.metrics.last_sync_timestamp.set(now);
            if let Some(rs) = self.dataplane.committed() {
                self.metrics.rules.set(rs.rule_count() as i64);
                self.metrics
                    .sets
                    .set((rs.sets.len() + rs.maps.len()) as i64);
                self.metrics.elements.set(rs.element_count() as i64);
            }
        } else {
            self.health.ready.store(false, Ordering::SeqCst);
        }
        let changes = self.record_sync(ok);
        if let Some(observer) = &self.observer {
            let nft_called = result.as_ref().map(|r| r.operations > 0).unwrap_or(true);
            let _ = observer.send(SyncReport {
                nft_called,
                full_compile,
                result: result.map_err(|e: KernelError| e.to_string()),
                changes,
            });
        }
        if full_compile {
            // A full compile (the first sync, or after a list) follows the lists it read, and
            // leaves their buffers and its own freed in the allocator's arenas: hand them back.
            crate::heap::release_free_memory();
        }
        ok
    }

    fn flush_conntrack(&self, pods: &BTreeSet<IpAddr>) {
        for ip in pods {
            if let Err(e) = self.dataplane.delete_conntrack_entries(*ip) {
                tracing::warn!(%ip, error = %e, "cannot delete conntrack entries");
            }
        }
    }

    /// Compares the kernel with the committed ruleset and repairs drift with a full replace.
    fn audit(&mut self) {
        match tokio::task::block_in_place(|| self.dataplane.kernel_matches()) {
            Ok(true) => tracing::debug!("audit: the kernel matches"),
            Ok(false) => {
                tracing::warn!(
                    "audit: the kernel's table differs from the committed one; replacing it"
                );
                self.metrics.drift_repairs.inc();
                self.dataplane.force_full();
                self.sync();
            }
            Err(e) => tracing::error!(error = %e, "audit: cannot read the table"),
        }
    }
}

/// The kinds whose watch failed and that were not listed again yet, and whether a due sync is
/// waiting for them: after an API outage the kinds come back one by one, and a sync in between would
/// enforce new objects of one kind against stale objects of another.
#[derive(Debug)]
struct StaleKinds {
    kinds: BTreeSet<Kind>,
    limit: Duration,
    hold: Hold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// No sync is waiting.
    None,
    /// A due sync has waited since then.
    Since(Instant),
    /// The wait ran out; syncs run until every kind is current again.
    Expired,
}

impl StaleKinds {
    fn new(limit: Duration) -> Self {
        Self {
            kinds: BTreeSet::new(),
            limit,
            hold: Hold::None,
        }
    }

    /// A kind's view may be behind.
    fn stale(&mut self, kind: Kind) {
        self.kinds.insert(kind);
    }

    /// A kind is current again; true when that releases a held sync.
    fn current(&mut self, kind: Kind) -> bool {
        if !self.kinds.remove(&kind) || !self.kinds.is_empty() {
            return false;
        }
        let held = std::mem::replace(&mut self.hold, Hold::None);
        if let Hold::Since(since) = held {
            tracing::debug!(
                held_ms = since.elapsed().as_millis() as u64,
                "every kind is current again; syncing"
            );
            return true;
        }
        false
    }

    fn names(&self) -> String {
        let names: Vec<&str> = self.kinds.iter().map(|k| k.as_str()).collect();
        names.join(", ")
    }

    /// A sync is due at `now`: `Some(until)` holds it until then (or until [`Self::current`]
    /// releases it), `None` lets it run.
    fn hold(&mut self, now: Instant) -> Option<Instant> {
        if self.kinds.is_empty() || self.limit.is_zero() {
            return None;
        }
        match self.hold {
            Hold::None => {
                tracing::debug!(kinds = %self.names(), "holding the sync until these kinds are listed again");
                self.hold = Hold::Since(now);
                Some(now + self.limit)
            }
            Hold::Since(since) if now < since + self.limit => Some(since + self.limit),
            Hold::Since(_) => {
                tracing::warn!(
                    kinds = %self.names(),
                    waited_secs = self.limit.as_secs_f64(),
                    "kinds still not listed again: syncing with their last known state"
                );
                self.hold = Hold::Expired;
                None
            }
            Hold::Expired => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_sync_waits_for_every_stale_kind() {
        let limit = Duration::from_secs(10);
        let mut s = StaleKinds::new(limit);
        let t0 = Instant::now();
        assert_eq!(s.hold(t0), None, "nothing stale: sync");
        s.stale(Kind::Pod);
        s.stale(Kind::NetworkPolicy);
        assert_eq!(s.hold(t0), Some(t0 + limit));
        // Still held at the next check, with the same end.
        assert_eq!(s.hold(t0 + Duration::from_secs(1)), Some(t0 + limit));
        assert!(!s.current(Kind::NetworkPolicy), "Pod is still stale");
        assert!(
            s.current(Kind::Pod),
            "the last stale kind releases the sync"
        );
        assert_eq!(s.hold(t0 + Duration::from_secs(2)), None);
        assert!(
            !s.current(Kind::Pod),
            "not stale any more: nothing to release"
        );
    }

    #[test]
    fn the_hold_is_bounded_and_then_syncs_run() {
        let limit = Duration::from_secs(10);
        let mut s = StaleKinds::new(limit);
        let t0 = Instant::now();
        s.stale(Kind::Pod);
        assert_eq!(s.hold(t0), Some(t0 + limit));
        assert_eq!(s.hold(t0 + limit), None, "the limit ran out");
        assert_eq!(
            s.hold(t0 + limit + Duration::from_secs(1)),
            None,
            "and later syncs are not held again"
        );
        assert!(!s.current(Kind::Pod), "no sync is held any more");
        // A new episode holds again.
        s.stale(Kind::Namespace);
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(s.hold(t1), Some(t1 + limit));
    }

    #[test]
    fn a_stale_kind_without_a_due_sync_holds_nothing() {
        let mut s = StaleKinds::new(Duration::from_secs(10));
        s.stale(Kind::Pod);
        assert!(!s.current(Kind::Pod), "no sync was due");
        let mut off = StaleKinds::new(Duration::ZERO);
        off.stale(Kind::Pod);
        assert_eq!(off.hold(Instant::now()), None, "a zero limit never holds");
    }
}
