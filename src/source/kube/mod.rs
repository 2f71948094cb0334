//! The Kubernetes source: watches Namespaces, Pods, NetworkPolicies, ClusterNetworkPolicies and
//! Nodes (all cluster-wide) and sends [`Update`]s.
//!
//! Each kind lists (in pages), then watches from the list's resourceVersion with bookmarks
//! ([`watch`]). Objects are converted to the compiler's compact model as they arrive, so the agent
//! keeps labels, IPs, phase, node and ports, never whole objects; each page of a list is sent as
//! it comes ([`Update::ListBegin`], [`Update::ListPage`]s, [`Update::ListEnd`]), so that no copy of
//! a whole list is ever held besides the agent's store. An object the compiler rejects is
//! sent as [`Update::Invalid`] and recorded as a Warning Event on the object ([`events`]).
//!
//! ClusterNetworkPolicy is a custom resource: before listing it, API discovery says which of its
//! versions the cluster serves (`v1beta1`, else `v1alpha2`). When neither is (the CRD is not
//! installed), the kind is *absent*: it is sent as an empty list (nothing to enforce,
//! and nothing for the agent to wait for), logged once at INFO, shown as `absent` in the watch
//! state metric, and discovery is asked again every [`WatchOptions::rediscover_interval`] (30 s),
//! so a CRD installed later is enforced within that time. A `404` on a list or watch of it (the CRD
//! deleted, or the version no longer served) sends it back to discovery. None of this counts as a
//! request failure.
//!
//! Recovery from API trouble:
//! - a failed request is retried after a capped, jittered backoff ([`WatchOptions::backoff_max`],
//!   3 s), and as soon as any kind's request succeeds again the others retry at once, so every kind
//!   is back within the cap of the API's return, and together;
//! - `410 Gone` (the watch's resourceVersion is older than the API's history: after an API server
//!   restart or a compaction) is answered by an immediate re-list, counted as a re-list, not an error;
//! - a kind whose watch failed after its first list is reported [`Update::Stale`] until it is listed
//!   again ([`Update::ListEnd`]) or its watch resumes ([`Update::Live`]), so the agent can hold syncs
//!   for a consistent view;
//! - a resourceVersion below one already seen (in a list, a bookmark, or the one-item list made before
//!   every resumed watch) means etcd was restored from an older backup: the watches would resume above
//!   the restored history and receive nothing, so every kind is listed again;
//! - optionally, every kind is listed again every [`WatchOptions::relist_interval`].
//!
//! While the API fails, nothing is sent: the agent keeps enforcing its last ruleset. The log has one
//! line when the API starts failing and one when it is back, with the outage's duration.
//!
//! The list-and-watch loop is written on kube's `Api::list` and `Api::watch` rather than on
//! kube-runtime's `watcher`, because the watcher consumes bookmarks and list resourceVersions
//! internally (so a resourceVersion going backwards cannot be seen) and gives 410 Gone no path
//! distinct from failures.

mod backoff;
mod events;
mod item;
mod metrics;
mod watch;

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject};
use kube::{Client, Resource};
use policy_compiler::input::{FieldError, RawObject};
use policy_compiler::model::ObjectRef;
use policy_compiler::object::{self, Converted, DEFAULT_NAMESPACE};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use metrics::{RelistReason, SourceMetrics, WatchState};

use self::events::InvalidReport;
use self::item::ListItem;
use super::{Kind, Update};

/// The resources and verbs the agent uses: the ClusterRole in `deploy/` must grant exactly these.
///
/// Events are written with the `events.k8s.io/v1` API: created for a new problem, patched as it
/// recurs (see [`events`]).
/// API discovery (which versions of ClusterNetworkPolicy are served) needs no rule: every
/// authenticated client may read it (the `system:discovery` ClusterRole).
pub const RBAC: &[(&str, &str, &[&str])] = &[
    ("", "pods", &["get", "list", "watch"]),
    ("", "namespaces", &["get", "list", "watch"]),
    ("", "nodes", &["get", "list", "watch"]),
    (
        "networking.k8s.io",
        "networkpolicies",
        &["get", "list", "watch"],
    ),
    (
        "policy.networking.k8s.io",
        "clusternetworkpolicies",
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

/// How long connecting to the API server may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The User-Agent of every request the agent makes: `policyd/<version> (<node>)`, so that the API
/// server's audit log and metrics name the agent and its node.
pub fn user_agent(node_name: &str) -> String {
    format!("policyd/{} ({node_name})", env!("CARGO_PKG_VERSION"))
}

/// A client for `config` that identifies itself with [`user_agent`] and gives up connecting after
/// 5 s (the API server is a hop away; a retry comes sooner than a long connect would end).
pub fn client(mut config: kube::Config, node_name: &str) -> anyhow::Result<Client> {
    use anyhow::Context as _;
    let agent = http::HeaderValue::from_str(&user_agent(node_name)).with_context(|| {
        format!("node name {node_name:?} cannot be sent in a User-Agent header")
    })?;
    config
        .headers
        .retain(|(name, _)| name != http::header::USER_AGENT);
    config.headers.push((http::header::USER_AGENT, agent));
    config.connect_timeout = Some(
        config
            .connect_timeout
            .map_or(CONNECT_TIMEOUT, |t| t.min(CONNECT_TIMEOUT)),
    );
    let url = config.cluster_url.to_string();
    Client::try_from(config).with_context(|| {
        format!(
            "cannot build a Kubernetes API client for {url}: check the kubeconfig's TLS settings"
        )
    })
}

/// A client for the cluster the agent runs in: the pod's service account when in a cluster, else
/// the kubeconfig (`KUBECONFIG` or `~/.kube/config`, current context). See [`client`].
pub async fn client_from_env(node_name: &str) -> anyhow::Result<Client> {
    use anyhow::Context as _;
    let config = kube::Config::infer().await.context(
        "cannot find how to reach the Kubernetes API: run policyd in a pod with its service account \
         (see deploy/), or set KUBECONFIG to a kubeconfig file whose current context is the cluster",
    )?;
    let url = config.cluster_url.to_string();
    let client = client(config, node_name)?;
    info!(cluster_url = %url, "Kubernetes API client ready");
    Ok(client)
}

/// How the source talks to the API.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// This node's name: the instance on Events, and the seed of the backoff's jitter.
    pub node_name: String,
    /// The first retry's longest wait.
    pub backoff_initial: Duration,
    /// The longest wait before retrying a failed request (each wait is random below its ceiling).
    pub backoff_max: Duration,
    /// List every kind again this often (each kind at a random point within ±10 %); `None`: never.
    pub relist_interval: Option<Duration>,
    /// Objects per list page.
    pub page_size: u32,
    /// The watch requests' `timeoutSeconds`, drawn at random in this range for each watch, so that
    /// the agents of a cluster do not re-watch in lockstep. Each resumed watch is preceded by a
    /// one-item list that checks the API's resourceVersion.
    pub watch_timeout_secs: RangeInclusive<u32>,
    /// How often API discovery is asked again about a custom resource the API does not serve (its
    /// CustomResourceDefinition not installed), each wait drawn within ±10 %.
    pub rediscover_interval: Duration,
}

impl WatchOptions {
    /// The defaults: backoff from 200 ms to 3 s, no periodic re-list, pages of 500, watches of
    /// 270-330 s, absent custom resources looked for every 30 s.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(3),
            relist_interval: None,
            page_size: 500,
            watch_timeout_secs: 270..=330,
            rediscover_interval: Duration::from_secs(30),
        }
    }
}

/// Watches every kind of [`Kind::ENFORCED`] (Pods, Namespaces, NetworkPolicies, and, where the
/// cluster serves them, ClusterNetworkPolicies; Nodes) and sends [`Update`]s to `tx` until its
/// receiver is dropped; returns then.
///
/// Each (re)list becomes an [`Update::ListBegin`], one [`Update::ListPage`] per page of at most
/// [`WatchOptions::page_size`] objects with the kind's valid objects and its invalid ones
/// (reported, left out), and an [`Update::ListEnd`]; a list that fails after its first page is
/// abandoned with an [`Update::Stale`]. Watch events become [`Update::Upsert`], [`Update::Invalid`] or
/// [`Update::Delete`]; a kind whose watch failed is reported [`Update::Stale`], and [`Update::Live`]
/// when its watch resumes without a re-list. Each invalid object is also recorded as a Warning Event
/// on it, reported by [`REPORTING_CONTROLLER`] with the node name as the instance; failing to
/// publish an Event is logged and counted, never fatal. See the module documentation for recovery.
pub async fn run(
    client: Client,
    options: WatchOptions,
    tx: mpsc::Sender<Update>,
    metrics: SourceMetrics,
) {
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let publisher = events::publish_events(
        client.clone(),
        REPORTING_CONTROLLER.to_string(),
        options.node_name.clone(),
        events_rx,
        metrics.clone(),
    );
    let options = Arc::new(options);
    let shared = Arc::new(watch::Shared::new(metrics.clone()));
    let watcher = |kind: Kind| {
        let converter = Converter::new(kind, events_tx.clone(), metrics.clone());
        watch::Watcher::new(
            kind,
            client.clone(),
            converter,
            options.clone(),
            shared.clone(),
            tx.clone(),
        )
        .run()
    };
    let watches = futures::future::join_all(Kind::ENFORCED.map(watcher));
    drop(events_tx);
    // The publisher only ends when every events sender is gone, i.e. after the watches.
    tokio::select! {
        _ = watches => {}
        _ = publisher => {}
    }
    info!("update receiver dropped: Kubernetes watches stopped");
}

/// The API resource of a kind at one of its versions, from the object pipeline's table of kinds.
fn api_resource(kind: Kind, version: &str) -> ApiResource {
    ApiResource {
        group: kind.group().to_string(),
        version: version.to_string(),
        api_version: kind.group_version(version),
        kind: kind.as_str().to_string(),
        plural: kind.plural().to_string(),
    }
}

/// The APIs for a kind's objects at one version, all namespaces: one for watches, one for lists.
/// Objects are read as JSON, not typed, so that an object the typed model cannot hold is reported
/// as invalid by the compiler and does not fail the whole list: watch events as dynamic objects,
/// list items as their text ([`ListItem`]).
fn api_for(
    client: &Client,
    kind: Kind,
    version: &str,
) -> (Api<DynamicObject>, Api<ListItem>, ApiResource) {
    let resource = api_resource(kind, version);
    (
        Api::all_with(client.clone(), &resource),
        Api::all_with(client.clone(), &resource),
        resource,
    )
}

/// A (re)list in progress: how many valid objects it held so far, and the invalid ones.
#[derive(Debug, Default)]
struct Listing {
    objects: usize,
    invalid: HashSet<ObjectRef>,
}

/// What was last reported about an invalid object: its uid, the problem and the resourceVersion
/// it was seen at.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reported {
    uid: Option<String>,
    problem: String,
    resource_version: Option<String>,
}

/// Turns one kind's API objects into [`Update`]s, reporting invalid ones.
struct Converter {
    kind: Kind,
    /// The resource at the version being watched.
    resource: ApiResource,
    listing: Option<Listing>,
    /// Invalid objects already reported, so that a problem is logged and counted once, and its
    /// recurrences only update its Event.
    reported: HashMap<ObjectRef, Reported>,
    events: mpsc::Sender<InvalidReport>,
    metrics: SourceMetrics,
}

impl Converter {
    /// A converter for the kind's preferred version (see [`Converter::use_resource`]).
    fn new(kind: Kind, events: mpsc::Sender<InvalidReport>, metrics: SourceMetrics) -> Self {
        Self {
            kind,
            resource: api_resource(kind, kind.version()),
            listing: None,
            reported: HashMap::new(),
            events,
            metrics,
        }
    }

    /// The objects now come from `resource` (another version of the kind).
    fn use_resource(&mut self, resource: ApiResource) {
        self.resource = resource;
    }

    /// Starts a list (dropping any unfinished one): its [`Update::ListBegin`].
    fn begin_list(&mut self) -> Update {
        self.listing = Some(Listing::default());
        Update::ListBegin(self.kind)
    }

    /// A page of the list being read: its [`Update::ListPage`].
    fn page(&mut self, items: &[ListItem]) -> Update {
        let mut objects = Vec::with_capacity(items.len());
        let mut invalid = Vec::new();
        for item in items {
            match self.convert_item(item) {
                Update::Upsert(o) => objects.push(o),
                Update::Invalid { key, error, .. } => invalid.push((key, error)),
                _ => {}
            }
        }
        let listing = self.listing.get_or_insert_with(Listing::default);
        listing.objects += objects.len();
        listing
            .invalid
            .extend(invalid.iter().map(|(key, _)| key.clone()));
        Update::ListPage {
            kind: self.kind,
            objects,
            invalid,
        }
    }

    /// The list is complete: its [`Update::ListEnd`], with how many valid and invalid objects it
    /// held.
    fn finish_list(&mut self) -> (Update, usize, usize) {
        let Listing { objects, invalid } = self.listing.take().unwrap_or_default();
        // Forget problems of objects that are gone or valid now.
        self.reported.retain(|key, _| invalid.contains(key));
        (Update::ListEnd(self.kind), objects, invalid.len())
    }

    /// An object added or changed (a watch event).
    fn applied(&mut self, object: &DynamicObject) -> Update {
        self.convert(object, false)
    }

    /// An object deleted (a watch event).
    fn deleted(&mut self, object: &DynamicObject) -> Update {
        let key = key_of(self.kind, object);
        self.reported.remove(&key);
        debug!(kind = self.kind.as_str(), object = %key, "deleted");
        Update::Delete(self.kind, key)
    }

    /// Converts an object of a watch event into its [`Update::Upsert`], or reports it and returns
    /// its [`Update::Invalid`].
    fn convert(&mut self, object: &DynamicObject, in_list: bool) -> Update {
        let raw = RawObject::document("api", 0, self.json(object));
        let converted = object::convert_as(self.kind, raw, DEFAULT_NAMESPACE);
        self.converted(object, converted, in_list)
    }

    /// Converts an item of a list page, straight from its text.
    fn convert_item(&mut self, item: &ListItem) -> Update {
        let converted = object::convert_api_text(
            self.kind,
            &self.resource.api_version,
            item.text.get(),
            DEFAULT_NAMESPACE,
        );
        self.converted(item, converted, true)
    }

    /// What a converted object is sent as.
    fn converted<K>(&mut self, object: &K, converted: Converted, in_list: bool) -> Update
    where
        K: Resource<DynamicType = ApiResource>,
    {
        match converted {
            Converted::Valid(o) => {
                if !self.reported.is_empty() {
                    self.reported.remove(&o.key());
                }
                Update::Upsert(o)
            }
            Converted::Invalid { key, error, .. } => self.invalid(object, key, &error, in_list),
            // Not produced by convert_as.
            Converted::Other(_) => Update::Invalid {
                kind: self.kind,
                key: key_of(self.kind, object),
                error: format!("{} object of an unknown kind", self.kind.as_str()),
            },
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

    /// Reports an invalid object. A new problem is logged, counted and recorded as an Event; the
    /// same problem seen again (in a list, or in a new version of the object) updates that Event's
    /// series; the same version seen twice in a watch is not reported again.
    fn invalid<K>(
        &mut self,
        object: &K,
        key: ObjectRef,
        error: &FieldError,
        in_list: bool,
    ) -> Update
    where
        K: Resource<DynamicType = ApiResource>,
    {
        let message = format!(
            "{} {}: field {}: {}",
            error.kind, error.object, error.field, error.message
        );
        let now = Reported {
            uid: object.meta().uid.clone(),
            problem: message.clone(),
            resource_version: object.meta().resource_version.clone(),
        };
        let previous = self.reported.insert(key.clone(), now.clone());
        let same_problem = previous
            .as_ref()
            .is_some_and(|p| p.uid == now.uid && p.problem == now.problem);
        let seen_again = previous.as_ref() == Some(&now) && !in_list;
        if !same_problem {
            warn!(
                kind = self.kind.as_str(),
                object = %error.object,
                field = %error.field,
                error = %error.message,
                "invalid object left out of the rules"
            );
            self.metrics.count_invalid(self.kind);
        }
        if !seen_again {
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
                self.metrics.count_event_failed();
                warn!(kind = self.kind.as_str(), object = %error.object, error = %e, "too many Events waiting; this one is dropped");
            }
        }
        Update::Invalid {
            kind: self.kind,
            key,
            error: message,
        }
    }
}

/// The key of an object, as [`Object::key`] gives it (namespaces have an empty namespace part).
fn key_of<K: Resource>(kind: Kind, object: &K) -> ObjectRef {
    let name = object.meta().name.clone().unwrap_or_default();
    if kind.namespaced() {
        ObjectRef::new(
            object
                .meta()
                .namespace
                .as_deref()
                .unwrap_or(DEFAULT_NAMESPACE),
            name,
        )
    } else {
        ObjectRef::new("", name)
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
        for kind in Kind::ENFORCED {
            let r = api_resource(kind, kind.version());
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
    fn rbac_grants_only_reads_and_events() {
        let watched: Vec<(String, String)> = Kind::ENFORCED
            .iter()
            .map(|k| (k.group().to_string(), k.plural().to_string()))
            .collect();
        for (group, resource, verbs) in RBAC {
            if (*group, *resource) == ("events.k8s.io", "events") {
                assert_eq!(*verbs, ["create", "patch"]);
                continue;
            }
            assert!(
                watched.contains(&(group.to_string(), resource.to_string())),
                "{group}/{resource} is not watched"
            );
            assert_eq!(*verbs, ["get", "list", "watch"], "{group}/{resource}");
        }
        assert_eq!(RBAC.len(), Kind::ENFORCED.len() + 1);
    }

    #[test]
    fn api_resources_match_the_kubernetes_types() {
        use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        let typed = [
            (Kind::Namespace, ApiResource::erase::<Namespace>(&())),
            (Kind::Pod, ApiResource::erase::<Pod>(&())),
            (
                Kind::NetworkPolicy,
                ApiResource::erase::<NetworkPolicy>(&()),
            ),
            (Kind::Node, ApiResource::erase::<Node>(&())),
        ];
        for (kind, expected) in typed {
            assert_eq!(api_resource(kind, kind.version()), expected, "{kind:?}");
        }
        let cnp = Kind::ClusterNetworkPolicy;
        let r = api_resource(cnp, "v1alpha2");
        assert_eq!(
            (r.group.as_str(), r.version.as_str(), r.api_version.as_str()),
            (
                "policy.networking.k8s.io",
                "v1alpha2",
                "policy.networking.k8s.io/v1alpha2"
            )
        );
        assert_eq!(
            (r.kind.as_str(), r.plural.as_str()),
            ("ClusterNetworkPolicy", "clusternetworkpolicies")
        );
        assert_eq!(
            api_resource(cnp, cnp.version()).api_version,
            cnp.api_version()
        );
    }

    #[test]
    fn namespace_keys_have_no_namespace() {
        let mut o = DynamicObject::new("x", &api_resource(Kind::Namespace, "v1"));
        assert_eq!(key_of(Kind::Namespace, &o), ObjectRef::new("", "x"));
        o.metadata.namespace = Some("ns".into());
        assert_eq!(key_of(Kind::Pod, &o), ObjectRef::new("ns", "x"));
    }

    #[test]
    fn the_user_agent_names_the_agent_its_version_and_node() {
        assert_eq!(
            user_agent("node-1"),
            format!("policyd/{} (node-1)", env!("CARGO_PKG_VERSION"))
        );
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("url"));
        assert!(client(config.clone(), "node\n1").is_err());
    }
}
