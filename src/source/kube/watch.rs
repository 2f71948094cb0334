//! One kind's list-and-watch loop (preceded, for a custom resource, by API discovery of the version
//! served), and what the kinds share: the outage log, the wake-up when the API is back, and the
//! request to list every kind again.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, ObjectList, WatchEvent, WatchParams};
use kube::core::Status;
use kube::Client;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::item::ListItem;
use super::metrics::{RelistReason, SourceMetrics, WatchState};
use super::{api_for, Converter, WatchOptions};
use crate::source::{Kind, Update};

/// How much longer than its `timeoutSeconds` a watch may stay silent before the connection is taken
/// for dead (a network partition that never closes it) and the watch is resumed.
const IDLE_MARGIN: Duration = Duration::from_secs(30);

/// A watch that ends sooner than this without delivering anything is resumed after a backoff
/// delay, so a server or proxy that closes watches at once is not hammered.
const SHORT_WATCH: Duration = Duration::from_secs(1);

/// How long a resumed watch must stay open, delivering nothing, before its kind counts as current
/// again (see [`Update::Live`]).
const LIVE_AFTER: Duration = Duration::from_millis(200);

/// Why a kind's watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// It must be listed again.
    Relist(RelistReason),
    /// The API answered `404`: a custom resource no longer served at this version.
    NotServed,
}

/// What the watch loop does next.
enum Step<T> {
    Stop,
    Relist(RelistReason),
    Live,
    Item(T),
}

/// Why a request failed.
#[derive(Debug)]
enum Failure {
    /// The request failed (connection, HTTP status, decoding).
    Request(kube::Error),
    /// The API answered a watch with an error other than 410.
    Status(Box<Status>),
    /// A list came without a resourceVersion.
    NoResourceVersion,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Request(e) => {
                // The causes carry what matters ("tcp connect error: Connection refused"); some
                // are already part of the error's own text.
                let mut text = e.to_string();
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    let cause_text = cause.to_string();
                    if !text.contains(&cause_text) {
                        text.push_str(": ");
                        text.push_str(&cause_text);
                    }
                    source = cause.source();
                }
                f.write_str(&text)
            }
            Failure::Status(s) => write!(f, "{} ({}): {}", s.reason, s.code, s.message),
            Failure::NoResourceVersion => write!(f, "a list without metadata.resourceVersion"),
        }
    }
}

impl Failure {
    fn is_forbidden(&self) -> bool {
        match self {
            Failure::Request(kube::Error::Api(s)) => s.is_forbidden(),
            Failure::Status(s) => s.is_forbidden(),
            _ => false,
        }
    }
}

/// `410 Gone`: the resourceVersion (or list continuation) is older than the API's history.
fn is_gone(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 410)
}

/// `404 Not Found`: for a list, a watch or API discovery, the resource (or its version) is not
/// served.
fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// A resourceVersion as a number, when the API's are (etcd's are). The API calls them opaque, so
/// anything else is never compared.
fn numeric(resource_version: &str) -> Option<u64> {
    resource_version.parse().ok()
}

/// The update receiver is gone: stop.
#[derive(Debug)]
pub(super) struct Stopped;

/// The state of the API as the kinds see it together.
#[derive(Debug, Default)]
struct Outage {
    failing: BTreeSet<Kind>,
    since: Option<Instant>,
    failed_requests: u64,
}

/// What the kinds' watchers share.
pub(super) struct Shared {
    /// Bumped to make every kind list again (a resourceVersion went backwards).
    relist_all: watch::Sender<u64>,
    /// Woken when a failing kind's request succeeds: the others stop waiting out their backoff.
    recovered: Notify,
    outage: Mutex<Outage>,
    metrics: SourceMetrics,
}

impl Shared {
    pub(super) fn new(metrics: SourceMetrics) -> Self {
        Self {
            relist_all: watch::Sender::new(0),
            recovered: Notify::new(),
            outage: Mutex::new(Outage::default()),
            metrics,
        }
    }

    fn outage(&self) -> std::sync::MutexGuard<'_, Outage> {
        // The guarded data is a few counters: a panic elsewhere cannot leave it inconsistent.
        self.outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request of `kind` failed: counted, and logged at WARN when it starts an outage.
    fn failed(&self, kind: Kind, failure: &Failure, retry_within: Duration) {
        self.metrics.count_error(kind);
        self.metrics.set_state(kind, WatchState::Failing);
        let mut outage = self.outage();
        outage.failed_requests += 1;
        outage.failing.insert(kind);
        if outage.since.is_some() {
            debug!(kind = kind.as_str(), error = %failure, "Kubernetes API request failed again");
            return;
        }
        outage.since = Some(Instant::now());
        drop(outage);
        let hint = if failure.is_forbidden() {
            "; the ClusterRole must grant get, list and watch on it (see deploy/10-rbac.yaml)"
        } else {
            ""
        };
        warn!(
            kind = kind.as_str(),
            error = %failure,
            retry_within_ms = retry_within.as_millis() as u64,
            "Kubernetes API request failed; retrying, the last ruleset stays in force{hint}"
        );
    }

    /// A request of `kind` succeeded: ends the outage when no kind is failing any more (logged
    /// with its duration), and wakes the kinds still waiting out a backoff.
    fn succeeded(&self, kind: Kind) {
        let mut outage = self.outage();
        if !outage.failing.remove(&kind) {
            return;
        }
        if outage.failing.is_empty() {
            if let Some(since) = outage.since.take() {
                info!(
                    outage_secs = format!("{:.1}", since.elapsed().as_secs_f64()),
                    failed_requests = outage.failed_requests,
                    "Kubernetes API reachable again"
                );
                outage.failed_requests = 0;
            }
        }
        drop(outage);
        self.recovered.notify_waiters();
    }

    /// Makes every kind list again.
    fn relist_everything(&self) {
        self.relist_all.send_modify(|generation| *generation += 1);
    }
}

/// The next page of a list, requested on its own task while the current page is converted;
/// dropping it (the list abandoned, the source stopped) cancels the request.
struct NextPage(JoinHandle<kube::Result<ObjectList<ListItem>>>);

impl NextPage {
    fn request(api: &Api<ListItem>, params: &ListParams) -> Self {
        let (api, params) = (api.clone(), params.clone());
        Self(tokio::spawn(async move { api.list(&params).await }))
    }

    async fn response(mut self) -> kube::Result<ObjectList<ListItem>> {
        match (&mut self.0).await {
            Ok(response) => response,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: only by the runtime shutting down.
            Err(e) => Err(kube::Error::Service(Box::new(e))),
        }
    }
}

impl Drop for NextPage {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One kind's list-and-watch loop.
pub(super) struct Watcher {
    kind: Kind,
    client: Client,
    /// The kind's objects at the version watched.
    api: Api<DynamicObject>,
    /// The same, for lists (their items kept as text until converted).
    lists: Api<ListItem>,
    /// The version discovery found served (custom resources), `None` before or while absent.
    served: Option<&'static str>,
    /// Whether the next list must be preceded by API discovery (a custom resource, at first and
    /// after a `404`).
    discover: bool,
    /// Whether the kind was found absent (not served) and its empty list sent.
    absent: bool,
    converter: Converter,
    options: Arc<WatchOptions>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Update>,
    backoff: Backoff,
    rng: fastrand::Rng,
    relist_requests: watch::Receiver<u64>,
    /// The highest resourceVersion seen since the last list (the list's, events', bookmarks').
    highest: Option<u64>,
    /// Whether the kind was listed once.
    listed: bool,
    /// Whether [`Update::Stale`] was sent and neither a complete list nor a Live followed yet.
    stale: bool,
    /// Whether a list's [`Update::ListBegin`] was sent and its [`Update::ListEnd`] not yet.
    listing: bool,
}

impl Watcher {
    pub(super) fn new(
        kind: Kind,
        client: Client,
        converter: Converter,
        options: Arc<WatchOptions>,
        shared: Arc<Shared>,
        tx: mpsc::Sender<Update>,
    ) -> Self {
        // Seeded by node and kind: agents (and kinds) draw different delays.
        let mut seed = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&(&options.node_name, kind), &mut seed);
        let seed = std::hash::Hasher::finish(&seed);
        let relist_requests = shared.relist_all.subscribe();
        let (api, lists, _) = api_for(&client, kind, kind.version());
        Self {
            kind,
            client,
            api,
            lists,
            served: None,
            discover: kind.is_custom_resource(),
            absent: false,
            converter,
            backoff: Backoff::new(options.backoff_initial, options.backoff_max, seed),
            rng: fastrand::Rng::with_seed(seed.rotate_left(17)),
            options,
            shared,
            tx,
            relist_requests,
            highest: None,
            listed: false,
            stale: false,
            listing: false,
        }
    }

    /// Lists and watches until the update receiver is dropped.
    pub(super) async fn run(mut self) {
        let _ = self.run_until_stopped().await;
    }

    async fn run_until_stopped(&mut self) -> Result<(), Stopped> {
        let mut reason = None;
        loop {
            if self.discover {
                self.discover().await?;
            }
            let Some(resource_version) = self.list(reason.take()).await? else {
                self.not_served().await?;
                continue;
            };
            match self.watch(resource_version).await? {
                Next::Relist(next) => reason = Some(next),
                Next::NotServed => self.not_served().await?,
            }
        }
    }

    /// Whether a failed request says that this custom resource is not served (at this version).
    fn not_served_by(&self, failure: &Failure) -> bool {
        self.kind.is_custom_resource()
            && match failure {
                Failure::Request(e) => is_not_found(e),
                Failure::Status(s) => s.code == 404,
                Failure::NoResourceVersion => false,
            }
    }

    /// The version of a custom resource that API discovery lists as served, preferred first;
    /// `None` when it serves none.
    async fn served_version(&self) -> Result<Option<&'static str>, Failure> {
        for version in self.kind.versions() {
            let group_version = self.kind.group_version(version);
            match self.client.list_api_group_resources(&group_version).await {
                Ok(list) if list.resources.iter().any(|r| r.name == self.kind.plural()) => {
                    return Ok(Some(version));
                }
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(Failure::Request(e)),
            }
        }
        Ok(None)
    }

    /// Finds the version of a custom resource that the API serves, and watches that one. While it
    /// serves none, the kind is absent: the first time, an empty list says it has no objects (so
    /// the agent enforces none and waits for nothing) and one INFO line says why; then discovery is
    /// asked again every [`WatchOptions::rediscover_interval`]. Neither is a failure.
    async fn discover(&mut self) -> Result<(), Stopped> {
        loop {
            match self.served_version().await {
                Ok(Some(version)) => {
                    self.shared.succeeded(self.kind);
                    let api_version = self.kind.group_version(version);
                    if self.served != Some(version) {
                        let (api, lists, resource) = api_for(&self.client, self.kind, version);
                        self.api = api;
                        self.lists = lists;
                        self.converter.use_resource(resource);
                        self.served = Some(version);
                        let preferred = self.kind.version();
                        if version == preferred {
                            info!(
                                kind = self.kind.as_str(),
                                api_version, "served; watching it"
                            );
                        } else {
                            info!(
                                kind = self.kind.as_str(),
                                api_version,
                                "served at this version only ({preferred} is not); watching it"
                            );
                        }
                    } else if self.absent {
                        info!(
                            kind = self.kind.as_str(),
                            api_version, "served; watching it"
                        );
                    }
                    self.absent = false;
                    self.discover = false;
                    return Ok(());
                }
                Ok(None) => {
                    self.shared.succeeded(self.kind);
                    self.backoff.reset();
                    self.shared.metrics.set_state(self.kind, WatchState::Absent);
                    // As good as an empty list: the kind is known to have no objects.
                    self.shared.metrics.touch(self.kind);
                    if !self.absent {
                        self.absent = true;
                        self.served = None;
                        info!(
                            kind = self.kind.as_str(),
                            group = self.kind.group(),
                            versions = self.kind.versions().join(", "),
                            rediscover_secs = self.options.rediscover_interval.as_secs(),
                            "not served by the Kubernetes API (its CustomResourceDefinition is not installed): none is enforced; API discovery is asked again periodically"
                        );
                        let begin = self.converter.begin_list();
                        self.send(begin).await?;
                        let (end, _, _) = self.converter.finish_list();
                        self.send(end).await?;
                        self.listed = true;
                        self.stale = false;
                    } else {
                        // Absent still, after a failed request: current again.
                        self.live().await?;
                    }
                    self.wait_rediscovery().await?;
                }
                Err(failure) => self.failed(failure).await?,
            }
        }
    }

    /// Waits [`WatchOptions::rediscover_interval`] (±10 %), or less when every kind is asked to
    /// list again.
    async fn wait_rediscovery(&mut self) -> Result<(), Stopped> {
        let delay = self.jittered(self.options.rediscover_interval);
        let relist = self.relist_requests.changed();
        tokio::select! {
            _ = self.tx.closed() => return Err(Stopped),
            _ = sleep(delay) => {}
            _ = relist => {}
        }
        self.relist_requests.borrow_and_update();
        Ok(())
    }

    /// A list or watch of a custom resource was answered `404` (its CustomResourceDefinition was
    /// deleted, or no longer serves this version): the kind's view may be behind until API
    /// discovery says where it went. Discovery is asked after a backoff step, so that a discovery
    /// that still lists the resource (around a CRD's creation or deletion) is not followed by a
    /// burst of requests.
    async fn not_served(&mut self) -> Result<(), Stopped> {
        debug!(
            kind = self.kind.as_str(),
            version = self.served.unwrap_or_default(),
            "not served (404); asking API discovery again"
        );
        self.shared.succeeded(self.kind);
        self.discover = true;
        self.mark_stale().await?;
        let delay = self.backoff.next_delay();
        self.wait(delay).await
    }

    async fn send(&self, update: Update) -> Result<(), Stopped> {
        self.tx.send(update).await.map_err(|_| Stopped)
    }

    /// Tells the agent this kind's view may be behind, once per episode (never before the first
    /// list: the agent waits for that anyway).
    async fn mark_stale(&mut self) -> Result<(), Stopped> {
        if self.listed && !self.stale {
            self.stale = true;
            self.send(Update::Stale(self.kind)).await?;
        }
        Ok(())
    }

    /// The kind's watch resumed without a re-list: tells the agent it is current again.
    async fn live(&mut self) -> Result<(), Stopped> {
        if std::mem::take(&mut self.stale) {
            self.send(Update::Live(self.kind)).await?;
        }
        Ok(())
    }

    /// Waits `delay`, or less when another kind finds the API back.
    async fn wait(&self, delay: Duration) -> Result<(), Stopped> {
        let recovered = self.shared.recovered.notified();
        tokio::select! {
            _ = self.tx.closed() => Err(Stopped),
            _ = sleep(delay) => Ok(()),
            _ = recovered => Ok(()),
        }
    }

    /// Counts and logs a failed request, marks the kind stale, and waits out the backoff.
    async fn failed(&mut self, failure: Failure) -> Result<(), Stopped> {
        self.shared.failed(self.kind, &failure, self.backoff.max());
        self.mark_stale().await?;
        let delay = self.backoff.next_delay();
        self.wait(delay).await
    }

    /// Notes a resourceVersion seen on the watch.
    fn observe(&mut self, resource_version: Option<&str>) {
        if let Some(rv) = resource_version.and_then(numeric) {
            self.highest = Some(self.highest.map_or(rv, |h| h.max(rv)));
        }
        self.shared.metrics.touch(self.kind);
    }

    /// Whether `resource_version` is below the highest one seen; if so, logs it and makes every
    /// other kind list again (this one does too, or just did).
    fn went_backwards(&mut self, resource_version: &str, seen_in: &str) -> bool {
        let (Some(now), Some(highest)) = (numeric(resource_version), self.highest) else {
            return false;
        };
        if now >= highest {
            return false;
        }
        warn!(
            kind = self.kind.as_str(),
            seen_in,
            resource_version = now,
            highest_seen = highest,
            "the Kubernetes API's resourceVersion went backwards (etcd restored from an older backup?): listing every kind again"
        );
        self.shared.relist_everything();
        // This kind answers the request itself.
        self.relist_requests.borrow_and_update();
        true
    }

    /// Lists the kind until a list succeeds, sending its pages as they come (see
    /// [`Watcher::list_pages`]), and returns its resourceVersion; `None` when the API answers that
    /// it does not serve the kind (see [`Watcher::not_served`]).
    async fn list(&mut self, reason: Option<RelistReason>) -> Result<Option<String>, Stopped> {
        if let Some(reason) = reason {
            self.shared.metrics.count_relist(self.kind, reason);
            debug!(
                kind = self.kind.as_str(),
                reason = reason.as_str(),
                "listing again"
            );
            if reason != RelistReason::Periodic {
                self.mark_stale().await?;
            }
            if reason == RelistReason::ResourceVersionBackwards {
                // The history this kind saw is gone: the list's resourceVersion starts it anew.
                self.highest = None;
            }
        }
        loop {
            self.shared
                .metrics
                .set_state(self.kind, WatchState::Listing);
            let listed = self.list_pages().await?;
            if listed.is_err() {
                self.abandon_list().await?;
            }
            match listed {
                Ok(resource_version) => {
                    self.backoff.reset();
                    self.shared.succeeded(self.kind);
                    self.shared.metrics.touch(self.kind);
                    if self.listed {
                        self.went_backwards(&resource_version, "list");
                    }
                    self.highest = numeric(&resource_version);
                    let (update, objects, invalid) = self.converter.finish_list();
                    if self.listed {
                        debug!(kind = self.kind.as_str(), objects, invalid, "listed");
                    } else {
                        info!(kind = self.kind.as_str(), objects, invalid, "listed");
                    }
                    self.send(update).await?;
                    self.listing = false;
                    self.listed = true;
                    self.stale = false;
                    return Ok(Some(resource_version));
                }
                Err(failure) if self.not_served_by(&failure) => return Ok(None),
                Err(failure) => self.failed(failure).await?,
            }
        }
    }

    /// One complete list, in pages of [`WatchOptions::page_size`]: each page is converted and sent
    /// as it comes, the first after an [`Update::ListBegin`]; returns the list's resourceVersion
    /// (the caller sends the [`Update::ListEnd`], or abandons the list when it failed).
    ///
    /// The next page is requested (and decoded, on another worker) while the current one is
    /// converted and sent, so that the API server's work, the transfer and the agent's overlap.
    async fn list_pages(&mut self) -> Result<Result<String, Failure>, Stopped> {
        let page_size = usize::try_from(self.options.page_size)
            .unwrap_or(usize::MAX)
            .max(1);
        let mut params = ListParams::default().limit(self.options.page_size);
        let mut resource_version = None;
        let mut first = true;
        let mut next: Option<NextPage> = None;
        loop {
            let response = match next.take() {
                Some(page) => page.response().await,
                None => self.lists.list(&params).await,
            };
            let page = match response {
                Ok(page) => page,
                Err(e) if is_gone(&e) && params.continue_token.is_some() => {
                    // The list's snapshot left the API's history between pages: list again, in
                    // one response (as client-go's pager does), sent from its beginning.
                    debug!(
                        kind = self.kind.as_str(),
                        "list continuation expired; listing again in one page"
                    );
                    params = ListParams::default();
                    resource_version = None;
                    first = true;
                    continue;
                }
                Err(e) => return Ok(Err(Failure::Request(e))),
            };
            if first {
                first = false;
                let begin = self.converter.begin_list();
                self.send(begin).await?;
                self.listing = true;
            }
            if resource_version.is_none() {
                resource_version = page.metadata.resource_version.filter(|v| !v.is_empty());
            }
            let more = match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => {
                    params.continue_token = Some(token);
                    next = Some(NextPage::request(&self.lists, &params));
                    true
                }
                None => false,
            };
            // A list answered in one response goes to the agent in pages all the same.
            for items in page.items.chunks(page_size) {
                let update = self.converter.page(items);
                self.send(update).await?;
            }
            if !more {
                break;
            }
        }
        Ok(resource_version.ok_or(Failure::NoResourceVersion))
    }

    /// A list whose pages had begun failed: the agent is told the kind is stale (the list is
    /// abandoned, and removes nothing), even before its first complete list.
    async fn abandon_list(&mut self) -> Result<(), Stopped> {
        if std::mem::take(&mut self.listing) {
            self.stale = true;
            self.send(Update::Stale(self.kind)).await?;
        }
        Ok(())
    }

    /// The API's current resourceVersion, from a one-item list.
    async fn current_resource_version(&self) -> Result<String, Failure> {
        let page = self
            .api
            .list(&ListParams::default().limit(1))
            .await
            .map_err(Failure::Request)?;
        page.metadata
            .resource_version
            .filter(|v| !v.is_empty())
            .ok_or(Failure::NoResourceVersion)
    }

    /// `interval` ± 10 %, at random.
    fn jittered(&mut self, interval: Duration) -> Duration {
        let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let jitter = millis / 10;
        let at = millis.saturating_sub(jitter) + self.rng.u64(0..=jitter.saturating_mul(2));
        Duration::from_millis(at)
    }

    /// A relist deadline `interval` ± 10 % from now.
    fn relist_deadline(&mut self) -> Option<Instant> {
        let interval = self.options.relist_interval?;
        Some(Instant::now() + self.jittered(interval))
    }

    /// Watches from `resource_version`, resuming after ends and failures, until the kind must be
    /// listed again (or, for a custom resource, is not served any more); returns why.
    async fn watch(&mut self, mut resource_version: String) -> Result<Next, Stopped> {
        let relist_at = self.relist_deadline();
        let mut resumed = false;
        loop {
            if self.relist_requests.has_changed().unwrap_or(false) {
                self.relist_requests.borrow_and_update();
                return Ok(Next::Relist(RelistReason::ResourceVersionBackwards));
            }
            if resumed {
                match self.current_resource_version().await {
                    Ok(current) => {
                        self.shared.succeeded(self.kind);
                        if self.went_backwards(&current, "list") {
                            return Ok(Next::Relist(RelistReason::ResourceVersionBackwards));
                        }
                    }
                    Err(failure) if self.not_served_by(&failure) => return Ok(Next::NotServed),
                    Err(failure) => {
                        self.failed(failure).await?;
                        continue;
                    }
                }
            }
            resumed = true;
            let timeout = self.rng.u32(self.options.watch_timeout_secs.clone());
            let params = WatchParams::default().timeout(timeout);
            let stream = match self.api.watch(&params, &resource_version).await {
                Ok(stream) => stream,
                Err(e) if is_gone(&e) => return Ok(Next::Relist(RelistReason::Expired)),
                Err(e) => {
                    let failure = Failure::Request(e);
                    if self.not_served_by(&failure) {
                        return Ok(Next::NotServed);
                    }
                    self.failed(failure).await?;
                    continue;
                }
            };
            self.shared.succeeded(self.kind);
            self.shared
                .metrics
                .set_state(self.kind, WatchState::Watching);
            // A stale kind is current again once its resumed watch delivers something or stays open
            // for a moment: an API server that lost its history accepts the watch and answers 410
            // at once, and that must not count as resumed.
            let mut live_at = self.stale.then(|| Instant::now() + LIVE_AFTER);
            let idle = Duration::from_secs(u64::from(timeout)) + IDLE_MARGIN;
            let opened = Instant::now();
            let mut delivered = false;
            let mut stream = std::pin::pin!(stream);
            loop {
                let next = tokio::select! {
                    biased;
                    _ = self.tx.closed() => Step::Stop,
                    _ = self.relist_requests.changed() => Step::Relist(RelistReason::ResourceVersionBackwards),
                    _ = async { sleep_until(relist_at.unwrap_or_else(Instant::now)).await }, if relist_at.is_some() => {
                        Step::Relist(RelistReason::Periodic)
                    }
                    _ = async { sleep_until(live_at.unwrap_or_else(Instant::now)).await }, if live_at.is_some() => Step::Live,
                    next = tokio::time::timeout(idle, stream.next()) => Step::Item(next),
                };
                let next = match next {
                    Step::Stop => return Err(Stopped),
                    Step::Relist(reason) => {
                        if reason == RelistReason::ResourceVersionBackwards {
                            self.relist_requests.borrow_and_update();
                        }
                        return Ok(Next::Relist(reason));
                    }
                    Step::Live => {
                        live_at = None;
                        self.live().await?;
                        continue;
                    }
                    Step::Item(next) => next,
                };
                let event = match next {
                    Err(_) => {
                        debug!(
                            kind = self.kind.as_str(),
                            "watch silent past its timeout; resuming"
                        );
                        break;
                    }
                    Ok(None) => {
                        debug!(kind = self.kind.as_str(), "watch ended; resuming");
                        if !delivered && opened.elapsed() < SHORT_WATCH {
                            let delay = self.backoff.next_delay();
                            self.wait(delay).await?;
                        }
                        break;
                    }
                    Ok(Some(Ok(event))) => event,
                    Ok(Some(Err(e))) if is_gone(&e) => {
                        return Ok(Next::Relist(RelistReason::Expired))
                    }
                    Ok(Some(Err(e))) => {
                        let failure = Failure::Request(e);
                        if self.not_served_by(&failure) {
                            return Ok(Next::NotServed);
                        }
                        self.failed(failure).await?;
                        break;
                    }
                };
                let (update, rv) = match event {
                    WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                        self.observe(object.metadata.resource_version.as_deref());
                        let update = self.converter.applied(&object);
                        (update, object.metadata.resource_version)
                    }
                    WatchEvent::Deleted(object) => {
                        self.observe(object.metadata.resource_version.as_deref());
                        let update = self.converter.deleted(&object);
                        (update, object.metadata.resource_version)
                    }
                    WatchEvent::Bookmark(bookmark) => {
                        let rv = bookmark.metadata.resource_version;
                        if self.went_backwards(&rv, "bookmark") {
                            return Ok(Next::Relist(RelistReason::ResourceVersionBackwards));
                        }
                        if live_at.take().is_some() {
                            self.live().await?;
                        }
                        self.observe(Some(&rv));
                        resource_version = rv;
                        delivered = true;
                        self.backoff.reset();
                        continue;
                    }
                    WatchEvent::Error(status) if status.code == 410 => {
                        return Ok(Next::Relist(RelistReason::Expired));
                    }
                    WatchEvent::Error(status) => {
                        let failure = Failure::Status(status);
                        if self.not_served_by(&failure) {
                            return Ok(Next::NotServed);
                        }
                        self.failed(failure).await?;
                        break;
                    }
                };
                if let Some(rv) = rv.filter(|v| !v.is_empty()) {
                    resource_version = rv;
                }
                delivered = true;
                self.backoff.reset();
                self.send(update).await?;
                // Current again once the first change it missed is in.
                if live_at.take().is_some() {
                    self.live().await?;
                }
            }
        }
    }
}
