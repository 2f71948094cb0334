//! A fake Kubernetes API server for the Kubernetes source's tests. It behaves as kube-apiserver does
//! wherever the agent can tell the difference:
//!
//! - LIST of pods, namespaces, nodes, networkpolicies and clusternetworkpolicies (all namespaces;
//!   nodes and clusternetworkpolicies are cluster-scoped), paginated with `limit` and `continue`; a
//!   continue token whose snapshot left the history answers `410 Gone`;
//! - ClusterNetworkPolicy is a custom resource: it is served at the versions the test chooses
//!   (`v1beta1` and `v1alpha2` by default, as network-policy-api v0.3 installs it; `v1alpha2` only,
//!   as v0.2; or none, the CRD not installed), one set of objects at every served version, each
//!   response carrying the requested version's `apiVersion`. API discovery
//!   (`GET /apis/GROUP/VERSION`) lists the resources a group version serves and answers `404`
//!   when it serves none, as does any request for a version that is not served. Removing the CRD
//!   deletes its objects (DELETED on the watches) before the resource goes; any change of the
//!   served versions ends the open watches of the resource;
//! - WATCH from a resourceVersion: the history after it, then live events; `410 Gone` (as an ERROR
//!   event in a 200 response, as the watch cache answers) below the history; nothing for events at
//!   or below the watch's resourceVersion (so after an etcd restore a watch from above the restored
//!   revision is accepted and silent); bookmarks every `bookmark_interval` carrying the current
//!   resourceVersion when it is above the last one sent; the stream ends at `timeoutSeconds`;
//! - Event create (`409` when the name exists) and merge patch (`404` when it does not);
//! - driven by the test: an outage (open connections cut, the port closed: connection refused), a
//!   restart (the watch cache starts at the current resourceVersion, so every resumed watch gets
//!   410), a compaction, an etcd restore (the resourceVersion goes back to a snapshot's), failing
//!   requests, and injected bookmarks.
//!
//! Every request is recorded with its User-Agent. `FAKE_API_LOG=1` prints them.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// The resources the fake knows: (plural, group, kind, namespaced).
pub const RESOURCES: [(&str, &str, &str, bool); 5] = [
    ("namespaces", "", "Namespace", false),
    ("pods", "", "Pod", true),
    ("nodes", "", "Node", false),
    (
        "networkpolicies",
        "networking.k8s.io",
        "NetworkPolicy",
        true,
    ),
    (
        "clusternetworkpolicies",
        CNP_GROUP,
        "ClusterNetworkPolicy",
        false,
    ),
];

/// The group of ClusterNetworkPolicy.
pub const CNP_GROUP: &str = "policy.networking.k8s.io";

/// The versions of ClusterNetworkPolicy that network-policy-api v0.3 serves.
pub const CNP_V1BETA1: &[&str] = &["v1beta1", "v1alpha2"];

/// The versions of ClusterNetworkPolicy that network-policy-api v0.2 serves.
pub const CNP_V1ALPHA2: &[&str] = &["v1alpha2"];

/// `group/version`, or `version` for the core group.
fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The list path of a resource at a version.
fn list_path(group: &str, version: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}/{plural}")
    } else {
        format!("/apis/{group}/{version}/{plural}")
    }
}

/// The list path of a built-in resource (served at `v1`).
pub fn path_of(plural: &str) -> String {
    let (_, group, _, _) = RESOURCES
        .iter()
        .find(|r| r.0 == plural)
        .expect("a known resource");
    assert_ne!(
        *group, CNP_GROUP,
        "ClusterNetworkPolicy has several versions"
    );
    list_path(group, "v1", plural)
}

/// The list path of ClusterNetworkPolicy at a version.
pub fn cnp_path(version: &str) -> String {
    list_path(CNP_GROUP, version, "clusternetworkpolicies")
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The User-Agent header.
    pub user_agent: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

impl Request {
    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether it is a watch.
    pub fn is_watch(&self) -> bool {
        self.param("watch") == Some("true")
    }
}

#[derive(Debug, Clone)]
enum Live {
    /// A watch event (its type and object), with its resourceVersion.
    Event(u64, &'static str, Value),
    /// A bookmark at this resourceVersion, sent whatever the watch's resourceVersion.
    Bookmark(u64),
    /// End every open watch stream.
    Close,
    /// Send `410 Gone` on every open watch stream and end it.
    Gone,
}

#[derive(Clone)]
struct Resource {
    group: &'static str,
    kind: &'static str,
    /// The versions served (none: a custom resource whose CRD is not installed).
    versions: Vec<&'static str>,
    objects: BTreeMap<(String, String), Value>,
    /// Each object as list items hold it (no `apiVersion` or `kind`), serialized once when it is
    /// written: a list of 100k objects is served as a real API server's watch cache serves it,
    /// without building and serializing every object again.
    items: BTreeMap<(String, String), Arc<str>>,
    /// Watch events: resourceVersion, type, object.
    history: Vec<(u64, &'static str, Value)>,
    /// Watches from a resourceVersion below this one get `410 Gone`.
    compacted: u64,
    live: broadcast::Sender<Live>,
    /// The next this many list or watch requests fail with 500.
    fail: usize,
}

/// The stored state at one moment, for [`FakeApi::restore`].
#[derive(Clone)]
pub struct Snapshot {
    rv: u64,
    objects: HashMap<&'static str, BTreeMap<(String, String), Value>>,
}

impl Snapshot {
    /// The resourceVersion of the snapshot.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }
}

struct Inner {
    rv: u64,
    uid: u64,
    resources: HashMap<&'static str, Resource>,
    requests: Vec<Request>,
    /// Event requests: (method, namespace in the path, body).
    event_requests: Vec<(String, String, Value)>,
    /// Stored Events by (namespace, name).
    events: BTreeMap<(String, String), Value>,
    fail_events: bool,
    /// Paginated lists in progress: id -> (resourceVersion, items), the items shared by the
    /// list's pages (a list of 100k objects is not copied for each page).
    continuations: HashMap<u64, (u64, ListItems)>,
    next_continuation: u64,
    /// The next request with a continue token answers 410, as when its snapshot was compacted.
    expire_continuation: bool,
    /// The next request with a continue token fails with 500.
    fail_continuation: bool,
    bookmark_interval: Option<Duration>,
}

type Shared = Arc<Mutex<Inner>>;

/// A list's serialized items, shared by its pages.
type ListItems = Arc<Vec<Arc<str>>>;

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().expect("fake state")
}

/// The fake API server. The server task ends with the test's runtime.
#[derive(Clone)]
pub struct FakeApi {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    addr: SocketAddr,
    inner: Shared,
    server: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl FakeApi {
    /// Starts a server on a free local port, with ClusterNetworkPolicy served at both its
    /// versions ([`CNP_V1BETA1`]).
    pub async fn start() -> FakeApi {
        Self::start_serving(CNP_V1BETA1).await
    }

    /// Starts a server on a free local port, with ClusterNetworkPolicy served at `cnp_versions`
    /// (none: its CRD is not installed).
    pub async fn start_serving(cnp_versions: &[&'static str]) -> FakeApi {
        let mut resources = HashMap::new();
        for (plural, group, kind, _) in RESOURCES {
            let versions = if group == CNP_GROUP {
                cnp_versions.to_vec()
            } else {
                vec!["v1"]
            };
            resources.insert(
                plural,
                Resource {
                    group,
                    kind,
                    versions,
                    objects: BTreeMap::new(),
                    items: BTreeMap::new(),
                    history: Vec::new(),
                    compacted: 0,
                    live: broadcast::channel(1024).0,
                    fail: 0,
                },
            );
        }
        let inner = Arc::new(Mutex::new(Inner {
            // resourceVersions start high enough that "0" is never one.
            rv: 100,
            uid: 0,
            resources,
            requests: Vec::new(),
            event_requests: Vec::new(),
            events: BTreeMap::new(),
            fail_events: false,
            continuations: HashMap::new(),
            next_continuation: 0,
            expire_continuation: false,
            fail_continuation: false,
            bookmark_interval: None,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let fake = FakeApi {
            url: format!("http://{addr}"),
            addr,
            inner,
            server: Arc::new(Mutex::new(None)),
        };
        fake.serve(listener);
        fake
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .fallback(handle)
            .with_state(self.inner.clone());
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) aborts every connection: an outage cuts
            // open watches as a dying API server does.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        *self.server.lock().expect("server handle") = Some(task);
    }

    /// A kube client for the server, without authentication, configured as the agent configures
    /// its own (User-Agent, connect timeout).
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("server URL"));
        nftpolicy::source::kube::client(config, "node-1").expect("kube client")
    }

    /// Stops serving: open connections are cut, new ones refused.
    pub fn stop(&self) {
        if let Some(task) = self.server.lock().expect("server handle").take() {
            task.abort();
        }
    }

    /// Serves again on the same port, as a restarted API server: its watch cache starts at the
    /// current resourceVersion, so watches resumed from before get `410 Gone`.
    pub async fn start_again(&self) {
        {
            let mut inner = lock(&self.inner);
            let rv = inner.rv;
            for r in inner.resources.values_mut() {
                r.compacted = rv;
                r.history.clear();
            }
            inner.continuations.clear();
        }
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        self.serve(listener);
    }

    /// The state now, to restore later.
    pub fn snapshot(&self) -> Snapshot {
        let inner = lock(&self.inner);
        Snapshot {
            rv: inner.rv,
            objects: inner
                .resources
                .iter()
                .map(|(p, r)| (*p, r.objects.clone()))
                .collect(),
        }
    }

    /// An etcd restore from `snapshot`, with the API server restarted on it: the objects and the
    /// resourceVersion go back to the snapshot's; watches resumed from below it get `410 Gone`, and
    /// watches from above it are accepted and silent until the resourceVersion passes theirs.
    pub async fn restore(&self, snapshot: &Snapshot) {
        self.stop();
        {
            let mut inner = lock(&self.inner);
            inner.rv = snapshot.rv;
            for (plural, objects) in &snapshot.objects {
                let r = inner.resources.get_mut(plural).expect("a served resource");
                r.objects = objects.clone();
                r.items = objects
                    .iter()
                    .map(|(key, object)| (key.clone(), item_text(object)))
                    .collect();
            }
        }
        self.start_again().await;
    }

    /// Bookmarks on watches that ask for them, this often (none by default).
    pub fn bookmarks_every(&self, interval: Duration) {
        lock(&self.inner).bookmark_interval = Some(interval);
    }

    /// Sends a bookmark at `rv` on the open watches of a resource, whatever their resourceVersion.
    pub fn send_bookmark(&self, plural: &str, rv: u64) {
        let inner = lock(&self.inner);
        let _ = inner.resources[plural].live.send(Live::Bookmark(rv));
    }

    /// A write to a resource the agent does not watch (a Lease, say): the resourceVersion moves
    /// on, and no watch of the agent's sees it.
    pub fn write_elsewhere(&self) {
        lock(&self.inner).rv += 1;
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.inner).rv
    }

    /// Serves ClusterNetworkPolicy at `versions` from now on, as when its CRD is installed,
    /// upgraded or (with none) deleted: the open watches of it end, and a deleted CRD takes its
    /// objects with it first (`DELETED` on the watches).
    pub fn serve_cnp_versions(&self, versions: &[&'static str]) {
        let plural = "clusternetworkpolicies";
        if versions.is_empty() {
            let keys: Vec<(String, String)> = lock(&self.inner).resources[plural]
                .objects
                .keys()
                .cloned()
                .collect();
            for (namespace, name) in keys {
                self.delete(plural, &namespace, &name);
            }
        }
        let mut inner = lock(&self.inner);
        let r = inner.resources.get_mut(plural).expect("a known resource");
        r.versions = versions.to_vec();
        let _ = r.live.send(Live::Close);
    }

    /// The list paths of the resources served now, at the version a client prefers (for
    /// ClusterNetworkPolicy, the first served of [`CNP_V1BETA1`]).
    pub fn list_paths(&self) -> Vec<String> {
        let inner = lock(&self.inner);
        RESOURCES
            .iter()
            .filter_map(|(plural, group, _, _)| {
                let r = &inner.resources[plural];
                let version = if *group == CNP_GROUP {
                    CNP_V1BETA1.iter().find(|v| r.versions.contains(v))?
                } else {
                    &"v1"
                };
                Some(list_path(group, version, plural))
            })
            .collect()
    }

    /// Creates or replaces an object (`ADDED` or `MODIFIED` on the watch streams). `object` holds
    /// at least `metadata.name` (and `metadata.namespace` when namespaced).
    pub fn apply(&self, plural: &str, mut object: Value) {
        let mut inner = lock(&self.inner);
        inner.rv += 1;
        let rv = inner.rv;
        let key = key_of(&object);
        let existing_uid = inner.resources[plural]
            .objects
            .get(&key)
            .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string));
        let uid = match existing_uid {
            Some(uid) => uid,
            None => {
                inner.uid += 1;
                format!("uid-{}", inner.uid)
            }
        };
        let r = inner.resources.get_mut(plural).expect("a served resource");
        let Some(version) = r.versions.first() else {
            panic!("{plural} is not served: its objects cannot be created")
        };
        object["apiVersion"] = json!(group_version(r.group, version));
        object["kind"] = json!(r.kind);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["metadata"]["uid"] = json!(uid);
        let kind = if r.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        r.items.insert(key.clone(), item_text(&object));
        r.objects.insert(key, object.clone());
        publish(r, rv, kind, object);
    }

    /// Deletes an object (`DELETED` on the watch streams).
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) {
        let mut inner = lock(&self.inner);
        inner.rv += 1;
        let rv = inner.rv;
        let r = inner.resources.get_mut(plural).expect("a served resource");
        let key = (namespace.to_string(), name.to_string());
        r.items.remove(&key);
        let mut object = r.objects.remove(&key).expect("deleting an existing object");
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        publish(r, rv, "DELETED", object);
    }

    /// Ends the open watch streams of a resource (as an API server does at `timeoutSeconds`).
    pub fn close_watches(&self, plural: &str) {
        let inner = lock(&self.inner);
        let _ = inner.resources[plural].live.send(Live::Close);
    }

    /// Compacts the history of a resource: open watches get `410 Gone`, and so do watches from any
    /// resourceVersion seen so far, which makes the client list again.
    pub fn expire(&self, plural: &str) {
        let mut inner = lock(&self.inner);
        inner.rv += 1;
        let rv = inner.rv;
        let r = inner.resources.get_mut(plural).expect("a served resource");
        r.compacted = rv;
        r.history.clear();
        let _ = r.live.send(Live::Gone);
    }

    /// The next `n` list or watch requests of a resource fail with 500.
    pub fn fail_next(&self, plural: &str, n: usize) {
        lock(&self.inner)
            .resources
            .get_mut(plural)
            .expect("a served resource")
            .fail = n;
    }

    /// The next list request that continues a paginated list answers `410 Gone`.
    pub fn expire_next_continuation(&self) {
        lock(&self.inner).expire_continuation = true;
    }

    /// The next list request that continues a paginated list fails with `500`.
    pub fn fail_next_continuation(&self) {
        lock(&self.inner).fail_continuation = true;
    }

    /// Forgets every stored Event (as their TTL does): patching one answers 404.
    pub fn drop_events(&self) {
        lock(&self.inner).events.clear();
    }

    /// Whether Event creation and patching fail with 500.
    pub fn fail_events(&self, fail: bool) {
        lock(&self.inner).fail_events = fail;
    }

    /// Every object stored now, as one `List` document (what `kubectl get` of every kind served
    /// prints with `-o json`), each item with its `apiVersion` and `kind`.
    pub fn manifests(&self) -> String {
        let inner = lock(&self.inner);
        let items: Vec<Value> = RESOURCES
            .iter()
            .flat_map(|(plural, _, _, _)| inner.resources[plural].objects.values().cloned())
            .collect();
        json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.inner).requests.clone()
    }

    /// Event requests so far: (method, namespace in the path, body).
    pub fn events(&self) -> Vec<(String, String, Value)> {
        lock(&self.inner).event_requests.clone()
    }

    /// The Events stored now, as the API holds them.
    pub fn stored_events(&self) -> Vec<Value> {
        lock(&self.inner).events.values().cloned().collect()
    }
}

fn key_of(object: &Value) -> (String, String) {
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"]
        .as_str()
        .expect("objects have metadata.name");
    (namespace.to_string(), name.to_string())
}

fn publish(r: &mut Resource, rv: u64, kind: &'static str, object: Value) {
    r.history.push((rv, kind, object.clone()));
    let _ = r.live.send(Live::Event(rv, kind, object));
}

/// A watch event line, the object at `api_version`.
fn event_line(kind: &str, object: &Value, api_version: &str) -> String {
    let mut object = object.clone();
    object["apiVersion"] = json!(api_version);
    json!({"type": kind, "object": object}).to_string() + "\n"
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    json_response(code, &body)
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    text_response(code, body.to_string())
}

/// A response whose body is JSON text.
fn text_response(code: StatusCode, body: String) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("response")
}

fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                k.to_string(),
                v.replace("%3D", "=")
                    .replace("%2C", ",")
                    .replace("%3A", ":"),
            )
        })
        .collect()
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in fields {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn handle_event(inner: &mut Inner, method: &Method, rest: &str, body: &Bytes) -> Response {
    let mut parts = rest.split('/');
    let namespace = parts.next().unwrap_or_default().to_string();
    let collection = parts.next();
    let name = parts.next().map(str::to_string);
    if collection != Some("events") {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no such path in the fake",
        );
    }
    if inner.fail_events {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "events are down",
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
    };
    inner
        .event_requests
        .push((method.to_string(), namespace.clone(), body.clone()));
    inner.rv += 1;
    let rv = inner.rv.to_string();
    match (method.clone(), name) {
        (Method::POST, None) => {
            let Some(name) = body["metadata"]["name"].as_str().map(str::to_string) else {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "metadata.name: Required value",
                );
            };
            let key = (namespace, name);
            if inner.events.contains_key(&key) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    "events already exists",
                );
            }
            let mut event = body;
            event["metadata"]["resourceVersion"] = json!(rv);
            inner.events.insert(key, event.clone());
            json_response(StatusCode::CREATED, &event)
        }
        (Method::PATCH, Some(name)) => {
            let Some(event) = inner.events.get_mut(&(namespace, name.clone())) else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("events.events.k8s.io \"{name}\" not found"),
                );
            };
            merge_patch(event, &body);
            event["metadata"]["resourceVersion"] = json!(rv);
            json_response(StatusCode::OK, event)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not served by the fake",
        ),
    }
}

fn strip_type(object: &Value) -> Value {
    let mut o = object.clone();
    if let Value::Object(m) = &mut o {
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

fn list(
    inner: &mut Inner,
    plural: &str,
    api_version: &str,
    kind: &str,
    request: &Request,
) -> Response {
    let limit: Option<usize> = request
        .param("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0);
    let current_rv = inner.rv;
    let compacted = inner.resources[plural].compacted;
    let (id, offset, rv, items) = match request.param("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            if std::mem::take(&mut inner.fail_continuation) {
                return status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "the fake fails this page",
                );
            }
            let parsed = token.split_once(':').and_then(|(id, offset)| {
                Some((id.parse::<u64>().ok()?, offset.parse::<usize>().ok()?))
            });
            let found = parsed.and_then(|(id, offset)| {
                let (rv, items) = inner.continuations.get(&id)?;
                Some((id, offset, *rv, Arc::clone(items)))
            });
            let expired = std::mem::take(&mut inner.expire_continuation);
            match found {
                Some((id, offset, rv, items)) if rv >= compacted && !expired => {
                    (Some(id), offset, rv, items)
                }
                _ => {
                    return status(
                        StatusCode::GONE,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    )
                }
            }
        }
        None => {
            let items: Vec<Arc<str>> = inner.resources[plural].items.values().cloned().collect();
            (None, 0, current_rv, Arc::new(items))
        }
    };
    let end = limit.map_or(items.len(), |l| (offset + l).min(items.len()));
    let page = &items[offset.min(end)..end];
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if end < items.len() {
        let id = id.unwrap_or_else(|| {
            let id = inner.next_continuation;
            inner.next_continuation += 1;
            inner.continuations.insert(id, (rv, items.clone()));
            id
        });
        metadata["continue"] = json!(format!("{id}:{end}"));
        metadata["remainingItemCount"] = json!(items.len() - end);
    }
    let head = json!({
        "apiVersion": api_version,
        "kind": format!("{kind}List"),
        "metadata": metadata,
    })
    .to_string();
    // The head's closing brace makes way for the items, already serialized.
    let mut body =
        String::with_capacity(head.len() + page.iter().map(|i| i.len() + 1).sum::<usize>() + 16);
    body.push_str(head.strip_suffix('}').unwrap_or(&head));
    body.push_str(",\"items\":[");
    for (i, item) in page.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("]}");
    text_response(StatusCode::OK, body)
}

/// An object as a list item: serialized without `apiVersion` and `kind`.
fn item_text(object: &Value) -> Arc<str> {
    Arc::from(strip_type(object).to_string())
}

fn gone_line(from: u64) -> String {
    json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {from}"),
        "reason": "Expired", "code": 410,
    }})
    .to_string()
        + "\n"
}

fn bookmark_line(kind: &str, api_version: &str, rv: u64) -> String {
    json!({"type": "BOOKMARK", "object": {
        "kind": kind, "apiVersion": api_version,
        "metadata": {"resourceVersion": rv.to_string()},
    }})
    .to_string()
        + "\n"
}

/// An open watch stream's state.
struct WatchStream {
    shared: Shared,
    live: broadcast::Receiver<Live>,
    /// The highest resourceVersion sent (or the watch's own).
    sent: u64,
    deadline: Instant,
    bookmarks: Option<tokio::time::Interval>,
    kind: &'static str,
    api_version: String,
    done: bool,
}

impl WatchStream {
    async fn next_line(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        loop {
            let tick = async {
                match &mut self.bookmarks {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(self.deadline) => return None,
                _ = tick => {
                    let current = lock(&self.shared).rv;
                    if current > self.sent {
                        self.sent = current;
                        return Some(bookmark_line(self.kind, &self.api_version, current));
                    }
                }
                message = self.live.recv() => match message {
                    Ok(Live::Event(rv, kind, object)) if rv > self.sent => {
                        self.sent = rv;
                        return Some(event_line(kind, &object, &self.api_version));
                    }
                    Ok(Live::Event(..)) => continue,
                    Ok(Live::Bookmark(rv)) => {
                        return Some(bookmark_line(self.kind, &self.api_version, rv));
                    }
                    Ok(Live::Gone) => {
                        self.done = true;
                        return Some(gone_line(self.sent));
                    }
                    Ok(Live::Close) | Err(_) => return None,
                },
            }
        }
    }
}

async fn handle(
    State(inner): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Request {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: parse_query(uri.query()),
        user_agent: headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        at: Instant::now(),
    };
    if std::env::var_os("FAKE_API_LOG").is_some() {
        eprintln!("fake API: {method} {uri}");
    }
    let mut guard = lock(&inner);
    guard.requests.push(request.clone());

    if let Some(rest) = request
        .path
        .strip_prefix("/apis/events.k8s.io/v1/namespaces/")
    {
        return handle_event(&mut guard, &method, rest, &body);
    }

    let Some(route) = route(&guard, &request.path) else {
        return not_found();
    };
    let (plural, version) = match route {
        Route::Discovery { group, version } => return discovery(&guard, group, version),
        Route::Collection { plural, version } => (plural, version),
    };
    let kind = guard.resources[plural].kind;
    let api_version = group_version(guard.resources[plural].group, version);
    if method != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "read only",
        );
    }
    let bookmark_interval = guard.bookmark_interval;
    let current_rv = guard.rv;
    {
        let r = guard.resources.get_mut(plural).expect("a served resource");
        if r.fail > 0 {
            r.fail -= 1;
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "the fake is down",
            );
        }
    }
    if !request.is_watch() {
        return list(&mut guard, plural, &api_version, kind, &request);
    }
    let r = &guard.resources[plural];

    // WATCH from a resourceVersion: the history after it, then live events.
    let from: u64 = request
        .param("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(current_rv);
    if from < r.compacted {
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Body::from(gone_line(from)))
            .expect("response");
    }
    let backlog: Vec<(u64, String)> = r
        .history
        .iter()
        .filter(|(rv, _, _)| *rv > from)
        .map(|(rv, kind, object)| (*rv, event_line(kind, object, &api_version)))
        .collect();
    let sent = backlog.last().map_or(from, |(rv, _)| *rv);
    let timeout = request
        .param("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800);
    let bookmarks = (request.param("allowWatchBookmarks") == Some("true"))
        .then_some(bookmark_interval)
        .flatten()
        .map(|every| {
            let mut i = tokio::time::interval_at(Instant::now() + every, every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
    let state = WatchStream {
        shared: inner.clone(),
        live: r.live.subscribe(),
        sent,
        deadline: Instant::now() + Duration::from_secs(timeout),
        bookmarks,
        kind: r.kind,
        api_version,
        done: false,
    };
    drop(guard);

    let backlog = futures::stream::iter(
        backlog
            .into_iter()
            .map(|(_, l)| Ok::<_, Infallible>(Bytes::from(l))),
    );
    let live = futures::stream::unfold(state, |mut state| async move {
        let line = state.next_line().await?;
        Some((Ok::<_, Infallible>(Bytes::from(line)), state))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::StreamExt::chain(backlog, live)))
        .expect("response")
}

/// What a request path names.
enum Route<'p> {
    /// `GET /apis/GROUP/VERSION`: the resources a group version serves.
    Discovery { group: &'p str, version: &'p str },
    /// A resource's collection at a served version.
    Collection {
        plural: &'static str,
        version: &'p str,
    },
}

/// The route of a path, if the fake serves it now.
fn route<'p>(inner: &Inner, path: &'p str) -> Option<Route<'p>> {
    let parts: Vec<&'p str> = path.trim_start_matches('/').split('/').collect();
    let (group, version, plural) = match parts.as_slice() {
        ["api", version, plural] => ("", *version, *plural),
        ["apis", group, version, plural] => (*group, *version, *plural),
        ["apis", group, version] => return Some(Route::Discovery { group, version }),
        _ => return None,
    };
    let (plural, _, _, _) = RESOURCES.iter().find(|r| r.0 == plural && r.1 == group)?;
    inner.resources[plural]
        .versions
        .contains(&version)
        .then_some(Route::Collection { plural, version })
}

/// `404`, as the API server answers for a path it does not serve.
fn not_found() -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// The `APIResourceList` of a group version, or `404` when it serves nothing.
fn discovery(inner: &Inner, group: &str, version: &str) -> Response {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|(plural, g, _, _)| {
            *g == group && inner.resources[plural].versions.contains(&version)
        })
        .map(|(plural, _, kind, namespaced)| {
            json!({
                "name": plural,
                "singularName": kind.to_lowercase(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
            })
        })
        .collect();
    if resources.is_empty() {
        return not_found();
    }
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version(group, version),
            "resources": resources,
        }),
    )
}
