//! A minimal fake Kubernetes API server for the Kubernetes source's tests: LIST and WATCH of pods,
//! namespaces and networkpolicies (all namespaces), and Event creation, with the watch streams,
//! outages and expiries driven by the test. `FAKE_API_LOG=1` prints every request.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// The resources the fake serves: (plural, list path, apiVersion, kind).
pub const RESOURCES: [(&str, &str, &str, &str); 3] = [
    ("namespaces", "/api/v1/namespaces", "v1", "Namespace"),
    ("pods", "/api/v1/pods", "v1", "Pod"),
    (
        "networkpolicies",
        "/apis/networking.k8s.io/v1/networkpolicies",
        "networking.k8s.io/v1",
        "NetworkPolicy",
    ),
];

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query parameters, in order.
    pub query: Vec<(String, String)>,
}

impl Request {
    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
enum Live {
    /// A watch event line, with its resourceVersion.
    Line(u64, String),
    /// End every open watch stream.
    Close,
    /// Send `410 Gone` on every open watch stream and end it.
    Gone,
}

struct Resource {
    api_version: &'static str,
    kind: &'static str,
    objects: BTreeMap<(String, String), Value>,
    history: Vec<(u64, String)>,
    /// Watches from a resourceVersion below this one get `410 Gone`.
    compacted: u64,
    live: broadcast::Sender<Live>,
    /// The next this many list or watch requests fail with 500.
    fail: usize,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    uid: u64,
    resources: HashMap<&'static str, Resource>,
    requests: Vec<Request>,
    events: Vec<(String, String, Value)>,
    fail_events: bool,
}

/// The fake API server. Dropping it does not stop the server task (the test runtime ends it).
#[derive(Clone)]
pub struct FakeApi {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeApi {
    /// Starts a server on a free local port.
    pub async fn start() -> FakeApi {
        let mut inner = Inner::default();
        for (plural, _, api_version, kind) in RESOURCES {
            inner.resources.insert(
                plural,
                Resource {
                    api_version,
                    kind,
                    objects: BTreeMap::new(),
                    history: Vec::new(),
                    compacted: 0,
                    live: broadcast::channel(1024).0,
                    fail: 0,
                },
            );
        }
        // resourceVersions start high enough that "0" is never one.
        inner.rv = 100;
        let inner = Arc::new(Mutex::new(inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake API server");
        });
        FakeApi { url, inner }
    }

    /// A kube client for the server, without authentication.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("server URL"));
        kube::Client::try_from(config).expect("kube client")
    }

    /// Creates or replaces an object (`ADDED` or `MODIFIED` on the watch streams). `object` holds
    /// at least `metadata.name` (and `metadata.namespace` when namespaced).
    pub fn apply(&self, plural: &str, mut object: Value) {
        let mut inner = self.inner.lock().expect("fake state");
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
        object["apiVersion"] = json!(r.api_version);
        object["kind"] = json!(r.kind);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["metadata"]["uid"] = json!(uid);
        let kind = if r.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        r.objects.insert(key, object.clone());
        publish(r, rv, kind, object);
    }

    /// Deletes an object (`DELETED` on the watch streams).
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) {
        let mut inner = self.inner.lock().expect("fake state");
        inner.rv += 1;
        let rv = inner.rv;
        let r = inner.resources.get_mut(plural).expect("a served resource");
        let mut object = r
            .objects
            .remove(&(namespace.to_string(), name.to_string()))
            .expect("deleting an existing object");
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        publish(r, rv, "DELETED", object);
    }

    /// Ends the open watch streams of a resource (as an API server does at `timeoutSeconds`).
    pub fn close_watches(&self, plural: &str) {
        let inner = self.inner.lock().expect("fake state");
        let _ = inner.resources[plural].live.send(Live::Close);
    }

    /// Forgets the history of a resource: open watches get `410 Gone`, and so do watches from any
    /// resourceVersion seen so far, which makes the client list again.
    pub fn expire(&self, plural: &str) {
        let mut inner = self.inner.lock().expect("fake state");
        inner.rv += 1;
        let rv = inner.rv;
        let r = inner.resources.get_mut(plural).expect("a served resource");
        r.compacted = rv;
        r.history.clear();
        let _ = r.live.send(Live::Gone);
    }

    /// The next `n` list or watch requests of a resource fail with 500.
    pub fn fail_next(&self, plural: &str, n: usize) {
        let mut inner = self.inner.lock().expect("fake state");
        inner
            .resources
            .get_mut(plural)
            .expect("a served resource")
            .fail = n;
    }

    /// Whether Event creation fails with 500.
    pub fn fail_events(&self, fail: bool) {
        self.inner.lock().expect("fake state").fail_events = fail;
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.inner.lock().expect("fake state").requests.clone()
    }

    /// Events created or patched so far: (method, namespace in the path, body).
    pub fn events(&self) -> Vec<(String, String, Value)> {
        self.inner.lock().expect("fake state").events.clone()
    }
}

fn key_of(object: &Value) -> (String, String) {
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"]
        .as_str()
        .expect("objects have metadata.name");
    (namespace.to_string(), name.to_string())
}

fn publish(r: &mut Resource, rv: u64, kind: &str, object: Value) {
    let line = json!({"type": kind, "object": object}).to_string() + "\n";
    r.history.push((rv, line.clone()));
    let _ = r.live.send(Live::Line(rv, line));
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("response")
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("response")
}

fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.replace("%3D", "=").replace("%2C", ","))
        })
        .collect()
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let request = Request {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: parse_query(uri.query()),
    };
    if std::env::var_os("FAKE_API_LOG").is_some() {
        eprintln!("fake API: {method} {uri}");
    }
    let mut guard = inner.lock().expect("fake state");
    guard.requests.push(request.clone());

    if let Some(rest) = request
        .path
        .strip_prefix("/apis/events.k8s.io/v1/namespaces/")
    {
        let namespace = rest.split('/').next().unwrap_or_default().to_string();
        if guard.fail_events {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "events are down",
            );
        }
        let Ok(mut event) = serde_json::from_slice::<Value>(&body) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
        };
        event["metadata"]["resourceVersion"] = json!("1");
        guard
            .events
            .push((request.method.clone(), namespace, event.clone()));
        let code = if method == Method::POST {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return json_response(code, &event);
    }

    let Some((plural, _, _, kind)) = RESOURCES.iter().find(|r| r.1 == request.path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no such path in the fake",
        );
    };
    if method != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "read only",
        );
    }
    let current_rv = guard.rv;
    let r = guard.resources.get_mut(plural).expect("a served resource");
    if r.fail > 0 {
        r.fail -= 1;
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the fake is down",
        );
    }

    if request.param("watch") != Some("true") {
        // LIST: items carry no apiVersion and kind, as from a real API server.
        let items: Vec<Value> = r
            .objects
            .values()
            .map(|o| {
                let mut o = o.clone();
                if let Value::Object(m) = &mut o {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
                o
            })
            .collect();
        let list = json!({
            "apiVersion": r.api_version,
            "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": current_rv.to_string()},
            "items": items,
        });
        return json_response(StatusCode::OK, &list);
    }

    // WATCH from a resourceVersion: the history after it, then live events.
    let from: u64 = request
        .param("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let gone_line = json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {from}"),
        "reason": "Expired", "code": 410,
    }})
    .to_string()
        + "\n";
    if from < r.compacted {
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Body::from(gone_line))
            .expect("response");
    }
    let mut backlog: Vec<String> = r
        .history
        .iter()
        .filter(|(rv, _)| *rv > from)
        .map(|(_, line)| line.clone())
        .collect();
    if request.param("allowWatchBookmarks") == Some("true") {
        backlog.push(
            json!({"type": "BOOKMARK", "object": {
                "kind": kind, "apiVersion": r.api_version,
                "metadata": {"resourceVersion": current_rv.to_string()},
            }})
            .to_string()
                + "\n",
        );
    }
    let live = r.live.subscribe();
    drop(guard);

    let backlog = futures::stream::iter(backlog.into_iter().map(|l| Ok(Bytes::from(l))));
    let live = futures::stream::unfold(
        (live, false, gone_line),
        move |(mut live, done, gone_line)| async move {
            if done {
                return None;
            }
            loop {
                match live.recv().await {
                    Ok(Live::Line(rv, line)) if rv > from => {
                        return Some((
                            Ok::<_, Infallible>(Bytes::from(line)),
                            (live, false, gone_line),
                        ))
                    }
                    Ok(Live::Line(..)) => continue,
                    Ok(Live::Gone) => {
                        let line = Bytes::from(gone_line.clone());
                        return Some((Ok(line), (live, true, gone_line)));
                    }
                    Ok(Live::Close) | Err(_) => return None,
                }
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::StreamExt::chain(backlog, live)))
        .expect("response")
}
