//! The Kubernetes source: watches Namespaces, Pods and NetworkPolicies in all namespaces and sends
//! [`Update`]s.
//!
//! Each kind has its own [`watcher()`] (list, then watch from the list's resourceVersion, re-list on
//! `410 Gone`), with kube's default backoff on errors. Objects are converted to the compiler's compact
//! model as they arrive, so the agent keeps labels, IPs, phase, node and ports, never whole objects.
//! An object the compiler rejects is sent as [`Update::Invalid`] and recorded as a Warning Event on
//! the object (reason `InvalidNetworkPolicy`, `InvalidPod` or `InvalidNamespace`, naming the field).
//!
//! While the API fails, nothing is sent: the agent keeps enforcing its last ruleset. A (re)list is
//! sent as one [`Update::Reset`] per kind, carrying the objects it left out as invalid.

use std::collections::HashMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace as ApiNamespace, ObjectReference, Pod as ApiPod};
use k8s_openapi::api::networking::v1::NetworkPolicy as ApiNetworkPolicy;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::events::{Event as K8sEvent, EventType, Recorder, Reporter};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource};
use policy_compiler::input::{
    namespace_from_api, pod_from_api, policy_from_api, FieldError, Location, RawObject,
};
use policy_compiler::model::ObjectRef;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Kind, Object, Update};

/// The resources and verbs the agent uses: the ClusterRole in `deploy/` must grant exactly these.
///
/// Events are written with the `events.k8s.io/v1` API (kube's [`Recorder`]).
pub const RBAC: &[(&str, &str, &[&str])] = &[
    ("", "pods", &["get", "list", "watch"]),
    ("", "namespaces", &["get", "list", "watch"]),
    (
        "networking.k8s.io",
        "networkpolicies",
        &["get", "list", "watch"],
    ),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// The reporting controller named on the Events the agent records.
pub const REPORTING_CONTROLLER: &str = "nftpolicy";

/// How many Events may wait to be published; beyond that they are dropped (and counted).
const EVENT_QUEUE: usize = 256;

/// The most an Event's note may hold (the API's limit is 1 kB).
const NOTE_LIMIT: usize = 1024;

/// The `kind` label of the source's metrics.
type KindLabel = [(&'static str, &'static str); 1];

fn kind_label(kind: Kind) -> KindLabel {
    [("kind", kind.as_str())]
}

/// Counters of the Kubernetes source. Clones share the counters; [`SourceMetrics::register`] exposes
/// them in a Prometheus registry.
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    watch_errors: Family<KindLabel, Counter>,
    invalid_objects: Family<KindLabel, Counter>,
    events_failed: Counter,
}

impl Default for SourceMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SourceMetrics {
    /// Counters at zero, one series per kind.
    pub fn new() -> Self {
        let metrics = Self {
            watch_errors: Family::default(),
            invalid_objects: Family::default(),
            events_failed: Counter::default(),
        };
        // Every series exists from the start, so that /metrics shows zeros rather than nothing.
        for kind in Kind::ALL {
            drop(metrics.watch_errors.get_or_create(&kind_label(kind)));
            drop(metrics.invalid_objects.get_or_create(&kind_label(kind)));
        }
        metrics
    }

    /// Registers the counters under the registry's prefix and `kube`: `kube_watch_errors_total` and
    /// `kube_invalid_objects_total` (by `kind`), and `kube_events_failed_total`.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("kube");
        registry.register(
            "watch_errors",
            "Failed list and watch requests to the Kubernetes API, by kind (each is retried with backoff)",
            self.watch_errors.clone(),
        );
        registry.register(
            "invalid_objects",
            "Invalid objects seen in the Kubernetes API, by kind (each object and problem counted once)",
            self.invalid_objects.clone(),
        );
        registry.register(
            "events_failed",
            "Kubernetes Events about invalid objects that could not be published",
            self.events_failed.clone(),
        );
    }

    /// Failed list and watch requests for a kind so far.
    pub fn watch_errors(&self, kind: Kind) -> u64 {
        self.watch_errors.get_or_create(&kind_label(kind)).get()
    }

    /// Invalid objects of a kind reported so far (each object and problem once).
    pub fn invalid_objects(&self, kind: Kind) -> u64 {
        self.invalid_objects.get_or_create(&kind_label(kind)).get()
    }

    /// Events that could not be published (rejected by the API or dropped because too many waited).
    pub fn events_failed(&self) -> u64 {
        self.events_failed.get()
    }
}

/// A client for the cluster the agent runs in: the pod's service account when in a cluster, else
/// the kubeconfig (`KUBECONFIG` or `~/.kube/config`, current context).
pub async fn client_from_env() -> anyhow::Result<Client> {
    use anyhow::Context as _;
    let config = kube::Config::infer().await.context(
        "cannot find how to reach the Kubernetes API: run policyd in a pod with its service account \
         (see deploy/), or set KUBECONFIG to a kubeconfig file whose current context is the cluster",
    )?;
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).with_context(|| {
        format!(
            "cannot build a Kubernetes API client for {url}: check the kubeconfig's TLS settings"
        )
    })?;
    info!(cluster_url = %url, "Kubernetes API client ready");
    Ok(client)
}

/// Watches Pods, Namespaces and NetworkPolicies in all namespaces and sends [`Update`]s to `tx`
/// until its receiver is dropped; returns then.
///
/// Watch errors and API outages are retried with kube's default backoff (0.8 s doubling to 30 s,
/// with jitter); while they last, no update is sent. Each (re)list becomes one [`Update::Reset`]
/// with the kind's valid objects and its invalid ones (reported, left out); watch events become
/// [`Update::Upsert`], [`Update::Invalid`] or [`Update::Delete`]. Each invalid object is also
/// recorded once per problem as a Warning Event on it, reported by [`REPORTING_CONTROLLER`] with
/// `node_name` as the instance; failing to publish an Event is logged and counted, never fatal.
pub async fn run(
    client: Client,
    node_name: String,
    tx: mpsc::Sender<Update>,
    metrics: SourceMetrics,
) {
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let reporter = Reporter {
        controller: REPORTING_CONTROLLER.to_string(),
        instance: Some(node_name),
    };
    let publisher = publish_events(client.clone(), reporter, events_rx, metrics.clone());
    let watches = futures::future::join3(
        watch_kind(Kind::Namespace, &client, &tx, &events_tx, &metrics),
        watch_kind(Kind::Pod, &client, &tx, &events_tx, &metrics),
        watch_kind(Kind::NetworkPolicy, &client, &tx, &events_tx, &metrics),
    );
    // The publisher only ends when every events sender is gone, i.e. after the watches.
    tokio::select! {
        _ = watches => {}
        _ = publisher => {}
    }
    info!("update receiver dropped: Kubernetes watches stopped");
}

/// The API resource of a kind.
fn api_resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::Namespace => ApiResource::erase::<ApiNamespace>(&()),
        Kind::Pod => ApiResource::erase::<ApiPod>(&()),
        Kind::NetworkPolicy => ApiResource::erase::<ApiNetworkPolicy>(&()),
    }
}

/// Runs one kind's watcher until the update receiver is dropped.
async fn watch_kind(
    kind: Kind,
    client: &Client,
    tx: &mpsc::Sender<Update>,
    events: &mpsc::Sender<InvalidReport>,
    metrics: &SourceMetrics,
) {
    let resource = api_resource(kind);
    // Objects are read as dynamic JSON, not typed: an object the typed model cannot hold must be
    // reported as invalid by the compiler, not fail the whole list.
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    // No selector: peers are cluster-wide, so the agent needs the pods of every node. The default
    // list semantic (quorum reads, pages of 500) never goes back in time on a re-list.
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut state = KindWatch::new(kind, resource, events.clone(), metrics.clone());
    let mut failing = false;
    loop {
        let next = tokio::select! {
            biased;
            _ = tx.closed() => return,
            next = stream.next() => next,
        };
        // A watcher stream never ends on its own; if it did, there is nothing more to watch.
        let Some(next) = next else {
            warn!(kind = kind.as_str(), "watch stream ended");
            return;
        };
        let updates = match next {
            Ok(event) => {
                // `Init` comes before the list request: only what follows proves the API is back.
                if !matches!(event, watcher::Event::Init) && std::mem::take(&mut failing) {
                    info!(kind = kind.as_str(), "Kubernetes API reachable again");
                }
                state.handle(event)
            }
            Err(error) => {
                failing = true;
                metrics.watch_errors.get_or_create(&kind_label(kind)).inc();
                warn!(
                    kind = kind.as_str(),
                    error = %error,
                    "watching the Kubernetes API failed; retrying with backoff, the last ruleset stays in force"
                );
                continue;
            }
        };
        for update in updates {
            if tx.send(update).await.is_err() {
                return;
            }
        }
    }
}

/// An invalid object to record an Event on.
#[derive(Debug)]
struct InvalidReport {
    reference: ObjectReference,
    kind: Kind,
    note: String,
}

/// Publishes Events about invalid objects, one at a time, until every sender is gone.
async fn publish_events(
    client: Client,
    reporter: Reporter,
    mut reports: mpsc::Receiver<InvalidReport>,
    metrics: SourceMetrics,
) {
    while let Some(report) = reports.recv().await {
        // A fresh recorder per Event: a recorder turns a repeat of the same reason on the same
        // object into a series of the first Event, keeping its note, and a new problem must show
        // its own field. Repeats of one problem never get here (see `KindWatch::invalid`).
        let recorder = Recorder::new(client.clone(), reporter.clone());
        let event = K8sEvent {
            type_: EventType::Warning,
            reason: format!("Invalid{}", report.kind.as_str()),
            note: Some(report.note),
            action: "Validate".to_string(),
            secondary: None,
        };
        let object = reference_name(&report.reference);
        match recorder.publish(&event, &report.reference).await {
            Ok(()) => {
                debug!(kind = report.kind.as_str(), %object, reason = %event.reason, "event recorded")
            }
            Err(error) => {
                metrics.events_failed.inc();
                let hint = match &error {
                    kube::Error::Api(status) if status.is_forbidden() => {
                        "; the ClusterRole must grant create on events.k8s.io events"
                    }
                    _ => "",
                };
                warn!(
                    kind = report.kind.as_str(),
                    %object,
                    %error,
                    "cannot record an Event about an invalid object{hint}"
                );
            }
        }
    }
}

fn reference_name(reference: &ObjectReference) -> String {
    let name = reference.name.as_deref().unwrap_or_default();
    match reference.namespace.as_deref() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// A (re)list in progress.
#[derive(Debug, Default)]
struct Listing {
    objects: Vec<Object>,
    invalid: Vec<Update>,
}

/// One kind's watch state: the list being buffered and the problems already recorded as Events.
struct KindWatch {
    kind: Kind,
    resource: ApiResource,
    listing: Option<Listing>,
    /// Invalid objects with an Event recorded: uid and error, so that each problem is recorded once,
    /// not again at every re-list.
    reported: HashMap<ObjectRef, (Option<String>, String)>,
    events: mpsc::Sender<InvalidReport>,
    metrics: SourceMetrics,
}

impl KindWatch {
    fn new(
        kind: Kind,
        resource: ApiResource,
        events: mpsc::Sender<InvalidReport>,
        metrics: SourceMetrics,
    ) -> Self {
        Self {
            kind,
            resource,
            listing: None,
            reported: HashMap::new(),
            events,
            metrics,
        }
    }

    /// The updates a watcher event makes.
    fn handle(&mut self, event: watcher::Event<DynamicObject>) -> Vec<Update> {
        match event {
            watcher::Event::Init => {
                debug!(kind = self.kind.as_str(), "listing");
                self.listing = Some(Listing::default());
                Vec::new()
            }
            watcher::Event::InitApply(object) => {
                let converted = self.convert(&object);
                let listing = self.listing.get_or_insert_with(Listing::default);
                match converted {
                    Update::Upsert(o) => listing.objects.push(o),
                    invalid => listing.invalid.push(invalid),
                }
                Vec::new()
            }
            watcher::Event::InitDone => {
                let Listing { objects, invalid } = self.listing.take().unwrap_or_default();
                // Forget recorded problems of objects that are gone or valid now.
                self.reported.retain(|key, _| {
                    invalid
                        .iter()
                        .any(|u| matches!(u, Update::Invalid { key: k, .. } if k == key))
                });
                info!(
                    kind = self.kind.as_str(),
                    objects = objects.len(),
                    invalid = invalid.len(),
                    "listed"
                );
                let invalid = invalid
                    .into_iter()
                    .filter_map(|u| match u {
                        Update::Invalid { key, error, .. } => Some((key, error)),
                        _ => None,
                    })
                    .collect();
                vec![Update::Reset {
                    kind: self.kind,
                    objects,
                    invalid,
                }]
            }
            watcher::Event::Apply(object) => {
                vec![self.convert(&object)]
            }
            watcher::Event::Delete(object) => {
                let key = key_of(self.kind, &object);
                self.reported.remove(&key);
                debug!(kind = self.kind.as_str(), object = %key, "deleted");
                vec![Update::Delete(self.kind, key)]
            }
        }
    }

    /// Converts an object into its [`Update::Upsert`], or reports it and returns its
    /// [`Update::Invalid`].
    fn convert(&mut self, object: &DynamicObject) -> Update {
        let raw = RawObject {
            location: Location {
                file: "api".to_string(),
                document: 0,
                item: None,
            },
            value: self.json(object),
        };
        let converted = match self.kind {
            Kind::Namespace => namespace_from_api(&raw).map(Object::Namespace),
            Kind::Pod => pod_from_api(&raw).map(Object::Pod),
            Kind::NetworkPolicy => policy_from_api(&raw).map(Object::Policy),
        };
        match converted {
            Ok(o) => {
                self.reported.remove(&o.key());
                Update::Upsert(o)
            }
            Err(error) => self.invalid(object, &error),
        }
    }

    /// The object as the JSON the converters read: `apiVersion` and `kind` are missing from the
    /// items of a list.
    fn json(&self, object: &DynamicObject) -> Value {
        let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.entry("apiVersion")
                .or_insert_with(|| Value::from(self.resource.api_version.clone()));
            map.entry("kind")
                .or_insert_with(|| Value::from(self.resource.kind.clone()));
        }
        value
    }

    /// Reports an invalid object: logged, counted and recorded as an Event once per problem.
    fn invalid(&mut self, object: &DynamicObject, error: &FieldError) -> Update {
        let key = key_of(self.kind, object);
        let message = format!(
            "{} {}: field {}: {}",
            error.kind, error.object, error.field, error.message
        );
        let fingerprint = (object.metadata.uid.clone(), message.clone());
        if self.reported.get(&key) != Some(&fingerprint) {
            warn!(
                kind = self.kind.as_str(),
                object = %error.object,
                field = %error.field,
                error = %error.message,
                "invalid object left out of the rules"
            );
            self.metrics
                .invalid_objects
                .get_or_create(&kind_label(self.kind))
                .inc();
            let note = truncate(
                format!(
                    "field {}: {} (nftpolicy leaves this version out and keeps enforcing the last valid one, if any)",
                    error.field, error.message
                ),
                NOTE_LIMIT,
            );
            let report = InvalidReport {
                reference: object.object_ref(&self.resource),
                kind: self.kind,
                note,
            };
            if let Err(e) = self.events.try_send(report) {
                self.metrics.events_failed.inc();
                warn!(kind = self.kind.as_str(), object = %error.object, error = %e, "too many Events waiting; this one is dropped");
            }
            self.reported.insert(key.clone(), fingerprint);
        }
        Update::Invalid {
            kind: self.kind,
            key,
            error: message,
        }
    }
}

/// The key of an object, as [`Object::key`] gives it (namespaces have an empty namespace part).
fn key_of(kind: Kind, object: &DynamicObject) -> ObjectRef {
    let name = object.metadata.name.clone().unwrap_or_default();
    match kind {
        Kind::Namespace => ObjectRef::new("", name),
        Kind::Pod | Kind::NetworkPolicy => ObjectRef::new(
            object.metadata.namespace.as_deref().unwrap_or("default"),
            name,
        ),
    }
}

/// Cuts a string to at most `limit` bytes, on a character boundary.
fn truncate(mut s: String, limit: usize) -> String {
    if s.len() > limit {
        let mut end = limit.saturating_sub(3);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("abc".into(), 10), "abc");
        assert_eq!(truncate("abcdefghij".into(), 6), "abc...");
        let s = truncate("ééééé".into(), 8);
        assert!(s.len() <= 8 && s.ends_with("..."), "{s}");
    }

    #[test]
    fn rbac_covers_the_watched_kinds_and_events() {
        for kind in Kind::ALL {
            let r = api_resource(kind);
            assert!(
                RBAC.iter().any(|(g, res, verbs)| *g == r.group
                    && *res == r.plural
                    && ["get", "list", "watch"].iter().all(|v| verbs.contains(v))),
                "{kind:?}"
            );
        }
        assert!(RBAC
            .iter()
            .any(|(g, r, _)| *g == "events.k8s.io" && *r == "events"));
    }

    #[test]
    fn metrics_are_exposed_per_kind_from_zero() {
        let metrics = SourceMetrics::new();
        metrics
            .watch_errors
            .get_or_create(&kind_label(Kind::Pod))
            .inc();
        let mut registry = Registry::with_prefix("nftpolicy");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("nftpolicy_kube_watch_errors_total{kind=\"Pod\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("nftpolicy_kube_watch_errors_total{kind=\"Namespace\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("nftpolicy_kube_invalid_objects_total{kind=\"NetworkPolicy\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("nftpolicy_kube_events_failed_total 0"),
            "{text}"
        );
        assert_eq!(metrics.watch_errors(Kind::Pod), 1);
    }

    #[test]
    fn namespace_keys_have_no_namespace() {
        let mut o = DynamicObject::new("x", &api_resource(Kind::Namespace));
        assert_eq!(key_of(Kind::Namespace, &o), ObjectRef::new("", "x"));
        o.metadata.namespace = Some("ns".into());
        assert_eq!(key_of(Kind::Pod, &o), ObjectRef::new("ns", "x"));
    }
}
