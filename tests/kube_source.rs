//! The Kubernetes source (`nftpolicy::source::kube::run`) against a fake API server that behaves as
//! kube-apiserver does (tests/kube_support): lists come page by page (assembled here into one Reset
//! per list, to assert on whole lists), watch events become Upserts and
//! Deletes, invalid objects are reported and recorded as Events (one per problem, patched as it
//! recurs), and closed streams, 410s, outages, restarts and etcd restores are ridden out.

mod kube_support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use kube_support::FakeApi;
use nftpolicy::source::kube::{run, RelistReason, SourceMetrics, WatchOptions, WatchState};
use nftpolicy::source::{Kind, Object, Store, Update};
use policy_compiler::model::{Enforcement, ObjectRef};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "nftpolicy=debug".into()),
        )
        .try_init();
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}})
}

fn pod(namespace: &str, name: &str, ip: &str, node: &str, labels: Value) -> Value {
    json!({
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 80}]}],
        },
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

fn policy_from_namespace(namespace: &str, name: &str, team: &str) -> Value {
    json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": team}}}]}],
        },
    })
}

fn policy_with_cidr(namespace: &str, name: &str, cidr: &str) -> Value {
    json!({
        "metadata": {"namespace": namespace, "name": name},
        "spec": {
            "podSelector": {},
            "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}],
        },
    })
}

/// A Node with one InternalIP.
fn node(name: &str, ip: &str, labels: Value) -> Value {
    json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": [
            {"type": "InternalIP", "address": ip},
            {"type": "Hostname", "address": name},
        ]},
    })
}

/// An Admin ClusterNetworkPolicy for every namespace with these egress rules.
fn cluster_policy(name: &str, priority: i64, egress: Value) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "tier": "Admin",
            "priority": priority,
            "subject": {"namespaces": {}},
            "egress": egress,
        },
    })
}

/// An egress rule that denies traffic to the nodes with `role: db`.
fn deny_db_nodes() -> Value {
    json!([{"name": "no-db-nodes", "action": "Deny", "to": [{"nodes": {"matchLabels": {"role": "db"}}}]}])
}

/// A fake cluster: namespaces a and b, pods a/web and b/client, a valid policy a/allow-b and an
/// invalid one, a/bad, the Node node-1 and the ClusterNetworkPolicy guard.
async fn cluster() -> FakeApi {
    cluster_serving(kube_support::CNP_V1BETA1).await
}

/// [`cluster`], ClusterNetworkPolicy served at `cnp_versions` (none: no guard).
async fn cluster_serving(cnp_versions: &[&'static str]) -> FakeApi {
    let fake = FakeApi::start_serving(cnp_versions).await;
    fake.apply(
        "nodes",
        node("node-1", "192.168.100.1", json!({"role": "db"})),
    );
    if !cnp_versions.is_empty() {
        fake.apply(
            "clusternetworkpolicies",
            cluster_policy("guard", 10, deny_db_nodes()),
        );
    }
    fake.apply("namespaces", namespace("a", json!({"team": "a"})));
    fake.apply("namespaces", namespace("b", json!({"team": "b"})));
    fake.apply(
        "pods",
        pod("a", "web", "10.244.1.10", "node-1", json!({"app": "web"})),
    );
    fake.apply(
        "pods",
        pod(
            "b",
            "client",
            "10.244.2.20",
            "node-2",
            json!({"app": "client"}),
        ),
    );
    fake.apply(
        "networkpolicies",
        policy_from_namespace("a", "allow-b", "b"),
    );
    fake.apply(
        "networkpolicies",
        policy_with_cidr("a", "bad", "10.0.0.0/33"),
    );
    fake
}

struct Running {
    rx: mpsc::Receiver<Update>,
    task: JoinHandle<()>,
    metrics: SourceMetrics,
    /// Every update received, applied as it came.
    store: Store,
    /// Every update received, as it came.
    raw: Vec<Update>,
    /// The lists in progress, assembled page by page.
    lists: HashMap<Kind, List>,
}

/// A list's valid objects and its invalid ones, with their errors.
type List = (Vec<Object>, Vec<(ObjectRef, String)>);

fn start(fake: &FakeApi) -> Running {
    start_with(fake, WatchOptions::new("node-1"))
}

fn start_with(fake: &FakeApi, options: WatchOptions) -> Running {
    init_tracing();
    let (tx, rx) = mpsc::channel(64);
    let metrics = SourceMetrics::new();
    let task = tokio::spawn(run(fake.client(), options, tx, metrics.clone()));
    Running {
        rx,
        task,
        metrics,
        store: Store::new(),
        raw: Vec::new(),
        lists: HashMap::new(),
    }
}

/// The source on `fake`, once it has listed every kind.
async fn start_listed(fake: &FakeApi) -> Running {
    let mut source = start(fake);
    source.until_listed().await;
    source
}

/// The source on `fake`, once it has listed every kind and watches every kind.
async fn start_watching(fake: &FakeApi) -> Running {
    let source = start_listed(fake).await;
    all_watching(&source.metrics, Duration::from_secs(3)).await;
    source
}

impl Running {
    /// The next update, applied to the store; a list's updates (its ListBegin, ListPages and
    /// ListEnd) are applied as they come and returned as one Reset when the list ends.
    async fn next(&mut self, within: Duration) -> Update {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let update = timeout(left, self.rx.recv())
                .await
                .expect("an update in time")
                .expect("the source is running");
            self.store.apply(update.clone());
            self.raw.push(update.clone());
            match update {
                Update::ListBegin(kind) => {
                    self.lists.insert(kind, Default::default());
                }
                Update::ListPage {
                    kind,
                    objects,
                    invalid,
                } => {
                    let list = self
                        .lists
                        .get_mut(&kind)
                        .expect("a page after its ListBegin");
                    list.0.extend(objects);
                    list.1.extend(invalid);
                }
                Update::ListEnd(kind) => {
                    let (objects, invalid) = self
                        .lists
                        .remove(&kind)
                        .expect("a ListEnd after its ListBegin");
                    return Update::Reset {
                        kind,
                        objects,
                        invalid,
                    };
                }
                Update::Reset { .. } => panic!("the source sends lists page by page: {update:?}"),
                other => return other,
            }
        }
    }

    /// The list updates of `kind` received so far: `begin`, the size of each page, `end`.
    fn list_updates(&self, kind: Kind) -> Vec<String> {
        self.raw
            .iter()
            .filter_map(|u| match u {
                Update::ListBegin(k) if *k == kind => Some("begin".to_string()),
                Update::ListPage {
                    kind: k,
                    objects,
                    invalid,
                } if *k == kind => Some((objects.len() + invalid.len()).to_string()),
                Update::ListEnd(k) if *k == kind => Some("end".to_string()),
                Update::Stale(k) if *k == kind => Some("stale".to_string()),
                _ => None,
            })
            .collect()
    }

    /// Updates until (and with) the first one `f` accepts.
    async fn until(&mut self, within: Duration, f: impl Fn(&Update) -> bool) -> Vec<Update> {
        let deadline = Instant::now() + within;
        let mut updates = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let update = self.next(left).await;
            let done = f(&update);
            updates.push(update);
            if done {
                return updates;
            }
        }
    }

    /// Updates until (and with) the first lists: a Reset of every kind, within 5 s.
    async fn until_listed(&mut self) -> Vec<Update> {
        self.until_resets(&Kind::ENFORCED, Duration::from_secs(5))
            .await
    }

    /// Updates until (and with) the Resets of every kind in `kinds`.
    async fn until_resets(&mut self, kinds: &[Kind], within: Duration) -> Vec<Update> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        let mut updates = Vec::new();
        while !kinds.iter().all(|k| seen.contains(k)) {
            let left = deadline.saturating_duration_since(Instant::now());
            let update = self.next(left).await;
            if let Update::Reset { kind, .. } = &update {
                seen.push(*kind);
            }
            updates.push(update);
        }
        updates
    }

    /// Asserts that no update comes for a while.
    async fn quiet(&mut self, for_: Duration) {
        if let Ok(Some(update)) = timeout(for_, self.rx.recv()).await {
            panic!("unexpected update: {update:?}");
        }
    }

    /// Drops the receiver and checks that `run` returns.
    async fn stop(self) {
        drop(self.rx);
        timeout(Duration::from_secs(2), self.task)
            .await
            .expect("run returns once the receiver is dropped")
            .expect("run does not panic");
    }
}

fn position(updates: &[Update], f: impl Fn(&Update) -> bool) -> usize {
    updates
        .iter()
        .position(f)
        .unwrap_or_else(|| panic!("not found in {updates:#?}"))
}

fn is_reset(kind: Kind) -> impl Fn(&Update) -> bool {
    move |u| matches!(u, Update::Reset { kind: k, .. } if *k == kind)
}

fn reset_keys(updates: &[Update], kind: Kind) -> Vec<ObjectRef> {
    let Update::Reset { objects, .. } = &updates[position(updates, is_reset(kind))] else {
        unreachable!()
    };
    let mut keys: Vec<ObjectRef> = objects.iter().map(Object::key).collect();
    keys.sort();
    keys
}

/// Asserts that the Resets in `updates` hold the pods and the valid policy of [`cluster`] as it
/// starts.
fn assert_initial_pods_and_policies(updates: &[Update]) {
    assert_eq!(
        reset_keys(updates, Kind::Pod),
        [key("a", "web"), key("b", "client")]
    );
    assert_eq!(
        reset_keys(updates, Kind::NetworkPolicy),
        [key("a", "allow-b")]
    );
}

fn key(namespace: &str, name: &str) -> ObjectRef {
    ObjectRef::new(namespace, name)
}

/// Waits until `f` holds of the fake, or panics.
async fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The watch requests of a resource so far.
fn watches(fake: &FakeApi, path: &str) -> Vec<kube_support::Request> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path == path && r.is_watch())
        .collect()
}

/// The full lists (not the one-item lists that check the resourceVersion) of a resource so far.
fn full_lists(fake: &FakeApi, path: &str) -> Vec<kube_support::Request> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path == path && !r.is_watch() && r.param("limit") != Some("1"))
        .collect()
}

/// Waits until every kind is watching again.
async fn all_watching(metrics: &SourceMetrics, within: Duration) {
    eventually(within, "every kind watching", || {
        Some(()).filter(|()| {
            Kind::ENFORCED
                .iter()
                .all(|k| metrics.state(*k) == WatchState::Watching)
        })
    })
    .await;
}

/// Asserts that no kind had a watch error.
fn assert_no_watch_errors(metrics: &SourceMetrics) {
    for kind in Kind::ENFORCED {
        assert_eq!(metrics.watch_errors(kind), 0, "{kind:?}");
    }
}

/// Asserts that every kind was listed again `count` times for `reason`.
fn assert_relists(metrics: &SourceMetrics, reason: RelistReason, count: u64) {
    for kind in Kind::ENFORCED {
        assert_eq!(metrics.relists(kind, reason), count, "{kind:?}");
    }
}

/// The watch errors of every kind together.
fn total_watch_errors(metrics: &SourceMetrics) -> u64 {
    Kind::ENFORCED
        .iter()
        .map(|k| metrics.watch_errors(*k))
        .sum()
}

fn is_stale(kind: Kind) -> impl Fn(&Update) -> bool {
    move |u| matches!(u, Update::Stale(k) if *k == kind)
}

fn is_pod_upsert(name: &'static str) -> impl Fn(&Update) -> bool {
    move |u| matches!(u, Update::Upsert(Object::Pod(p)) if &*p.id.name == name)
}

#[tokio::test]
async fn lists_watches_and_reports_invalid_objects() {
    let fake = cluster().await;
    let mut source = start(&fake);

    // The initial lists: one Reset per kind, the invalid policy reported in its kind's Reset.
    let updates = source.until_listed().await;
    assert_eq!(updates.len(), Kind::ENFORCED.len(), "{updates:#?}");
    assert_eq!(
        reset_keys(&updates, Kind::Namespace),
        [key("", "a"), key("", "b")]
    );
    assert_initial_pods_and_policies(&updates);
    // The bad policy comes with its kind's list, reported and left out.
    let Update::Reset { invalid, .. } = &updates[position(&updates, is_reset(Kind::NetworkPolicy))]
    else {
        unreachable!()
    };
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    let (k, error) = &invalid[0];
    assert_eq!(k, &key("a", "bad"));
    assert!(
        error.starts_with("NetworkPolicy a/bad: field spec.ingress[0].from[0].ipBlock.cidr: "),
        "{error}"
    );

    // The store holds the compact model.
    let cluster = source.store.cluster();
    assert_eq!(cluster.namespaces().len(), 2);
    assert_eq!(
        cluster
            .namespace("b")
            .expect("namespace b")
            .labels
            .get("team")
            .expect("label team"),
        "b"
    );
    let web = cluster.pod(&key("a", "web")).expect("pod a/web");
    assert_eq!(web.ips, ["10.244.1.10".parse::<IpAddr>().expect("IP")]);
    assert_eq!(web.node.as_deref(), Some("node-1"));
    assert_eq!(
        web.named_port("http", policy_compiler::model::Protocol::Tcp),
        Some(80)
    );
    assert_eq!(
        cluster.policies().keys().cloned().collect::<Vec<_>>(),
        [key("a", "allow-b")]
    );

    // The invalid policy is recorded as a Warning Event on it.
    let events = eventually(Duration::from_secs(3), "an Event", || {
        Some(fake.events()).filter(|e| !e.is_empty())
    })
    .await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let (method, event_namespace, event) = &events[0];
    assert_eq!((method.as_str(), event_namespace.as_str()), ("POST", "a"));
    assert_eq!(event["reason"], "InvalidNetworkPolicy");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reportingController"], "nftpolicy");
    assert_eq!(event["reportingInstance"], "node-1");
    assert_eq!(event["regarding"]["kind"], "NetworkPolicy");
    assert_eq!(event["regarding"]["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(event["regarding"]["namespace"], "a");
    assert_eq!(event["regarding"]["name"], "bad");
    let note = event["note"].as_str().expect("a note");
    assert!(
        note.starts_with("field spec.ingress[0].from[0].ipBlock.cidr: "),
        "{note}"
    );

    // What kube's watcher asks for: a paginated list, then a watch from the list's version.
    let requests = fake.requests();
    let paths = fake.list_paths();
    assert_eq!(paths.len(), Kind::ENFORCED.len());
    for path in &paths {
        let list = requests
            .iter()
            .find(|r| r.path == *path)
            .expect("a list request");
        assert_eq!(list.method, "GET");
        assert_eq!(list.param("limit"), Some("500"), "{list:?}");
        assert_eq!(list.param("watch"), None, "{list:?}");
        assert_eq!(list.param("resourceVersion"), None, "{list:?}");
        let watch = eventually(Duration::from_secs(3), "a watch request", || {
            watches(&fake, path).into_iter().next()
        })
        .await;
        assert_eq!(
            watch.param("allowWatchBookmarks"),
            Some("true"),
            "{watch:?}"
        );
        let timeout: u32 = watch
            .param("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .expect("a timeout");
        assert!((270..=330).contains(&timeout), "{watch:?}");
        assert_eq!(watch.param("sendInitialEvents"), None, "{watch:?}");
        assert!(watch.param("resourceVersion").is_some(), "{watch:?}");
        assert_eq!(watch.param("labelSelector"), None, "{watch:?}");
        assert_eq!(watch.param("fieldSelector"), None, "{watch:?}");
    }

    // Watch events: ADDED, MODIFIED and DELETED pods.
    fake.apply(
        "pods",
        pod("a", "db", "10.244.1.11", "node-1", json!({"app": "db"})),
    );
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Upsert(Object::Pod(p)) if p.id == key("a", "db")),
        "{u:?}"
    );
    fake.apply(
        "pods",
        pod(
            "a",
            "web",
            "10.244.1.10",
            "node-1",
            json!({"app": "web", "v": "2"}),
        ),
    );
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Upsert(Object::Pod(p)) if p.labels.get("v") == Some("2")),
        "{u:?}"
    );
    fake.delete("pods", "b", "client");
    let u = source.next(Duration::from_secs(3)).await;
    assert_eq!(u, Update::Delete(Kind::Pod, key("b", "client")));

    // A namespace is keyed by its name alone.
    fake.apply("namespaces", namespace("c", json!({"team": "c"})));
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Upsert(o) if o.key() == key("", "c")),
        "{u:?}"
    );

    // The invalid policy is fixed; the valid one breaks: its last valid version stays in force.
    fake.apply(
        "networkpolicies",
        policy_with_cidr("a", "bad", "10.0.0.0/8"),
    );
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Upsert(o) if o.key() == key("a", "bad")),
        "{u:?}"
    );
    fake.apply(
        "networkpolicies",
        policy_with_cidr("a", "allow-b", "300.0.0.0/8"),
    );
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Invalid { kind: Kind::NetworkPolicy, key: k, error }
            if *k == key("a", "allow-b") && error.contains("field spec.ingress[0].from[0].ipBlock.cidr")),
        "{u:?}"
    );
    assert!(source
        .store
        .invalid()
        .contains_key(&(Kind::NetworkPolicy, key("a", "allow-b"))));
    let events = eventually(Duration::from_secs(3), "a second Event", || {
        Some(fake.events()).filter(|e| e.len() == 2)
    })
    .await;
    assert_eq!(events[1].2["regarding"]["name"], "allow-b");

    let cluster = source.store.cluster();
    assert_eq!(
        cluster.namespaces().keys().cloned().collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(
        cluster.pods().keys().cloned().collect::<Vec<_>>(),
        [key("a", "db"), key("a", "web")]
    );
    assert_eq!(
        cluster
            .pod(&key("a", "web"))
            .expect("a/web")
            .labels
            .get("v")
            .expect("label v"),
        "2"
    );
    assert_eq!(
        cluster.policies().keys().cloned().collect::<Vec<_>>(),
        [key("a", "allow-b"), key("a", "bad")]
    );
    // The broken a/allow-b keeps its last valid version (the namespace selector, not the ipBlock).
    let allow_b = format!("{:?}", cluster.policies()[&key("a", "allow-b")]);
    assert!(!allow_b.contains("300.0.0.0"), "{allow_b}");

    assert_eq!(source.metrics.invalid_objects(Kind::NetworkPolicy), 2);
    assert_no_watch_errors(&source.metrics);
    assert_eq!(source.metrics.events_failed(), 0);
    source.quiet(Duration::from_millis(200)).await;
    source.stop().await;
}

#[tokio::test]
async fn resumes_a_closed_watch_without_listing_again() {
    let fake = cluster().await;
    let mut source = start_listed(&fake).await;
    let pods = "/api/v1/pods";
    eventually(Duration::from_secs(3), "a pod watch", || {
        Some(()).filter(|()| !watches(&fake, pods).is_empty())
    })
    .await;

    // The server ends the watch (as at timeoutSeconds); a pod changes before the client is back.
    fake.close_watches("pods");
    fake.apply(
        "pods",
        pod("a", "db", "10.244.1.11", "node-1", json!({"app": "db"})),
    );
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Upsert(Object::Pod(p)) if p.id == key("a", "db")),
        "{u:?}"
    );
    let pod_watches = watches(&fake, pods);
    assert_eq!(pod_watches.len(), 2, "{pod_watches:#?}");
    let first: u64 = pod_watches[0]
        .param("resourceVersion")
        .expect("rv")
        .parse()
        .expect("number");
    let second: u64 = pod_watches[1]
        .param("resourceVersion")
        .expect("rv")
        .parse()
        .expect("number");
    assert!(second >= first, "the watch resumes where it was");
    assert_eq!(full_lists(&fake, pods).len(), 1, "no second list");
    // Before resuming, one one-item list checked that the resourceVersion did not go back.
    let probes: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == pods && r.param("limit") == Some("1"))
        .collect();
    assert_eq!(probes.len(), 1, "{probes:#?}");
    assert!(probes[0].at < pod_watches[1].at);
    assert_eq!(source.metrics.watch_errors(Kind::Pod), 0);
    assert_eq!(source.store.cluster().pods().len(), 3);
    source.quiet(Duration::from_millis(200)).await;
    source.stop().await;
}

#[tokio::test]
async fn rides_out_expiries_and_outages() {
    let fake = cluster().await;
    let mut source = start_listed(&fake).await;
    for path in ["/api/v1/pods", "/apis/networking.k8s.io/v1/networkpolicies"] {
        eventually(Duration::from_secs(3), "the watches", || {
            Some(()).filter(|()| !watches(&fake, path).is_empty())
        })
        .await;
    }

    // Pods: the watch expires (410 Gone) and the re-list fails once; meanwhile pods change.
    fake.fail_next("pods", 1);
    fake.expire("pods");
    fake.delete("pods", "b", "client");
    fake.apply(
        "pods",
        pod(
            "b",
            "client-2",
            "10.244.2.21",
            "node-2",
            json!({"app": "client"}),
        ),
    );
    // Policies: the watch ends and the API is down for the next request; a policy is added.
    fake.fail_next("networkpolicies", 1);
    fake.close_watches("networkpolicies");
    fake.apply(
        "networkpolicies",
        policy_from_namespace("b", "allow-a", "a"),
    );

    // A pod Reset with the new state, the missed policy as an Upsert, and around them each
    // failing kind reported stale until it is back (listed again, or its watch resumed).
    let mut updates = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while !(updates.iter().any(is_reset(Kind::Pod))
        && updates
            .iter()
            .any(|u| matches!(u, Update::Live(Kind::NetworkPolicy))))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        updates.push(source.next(left).await);
    }
    let pod_stale = position(&updates, is_stale(Kind::Pod));
    assert!(
        pod_stale < position(&updates, is_reset(Kind::Pod)),
        "{updates:#?}"
    );
    let policy_stale = position(&updates, is_stale(Kind::NetworkPolicy));
    let policy_live = position(&updates, |u| matches!(u, Update::Live(Kind::NetworkPolicy)));
    let policy_upsert = position(&updates, |u| matches!(u, Update::Upsert(_)));
    // Current again once the first change the resumed watch replays is in.
    assert!(
        policy_stale < policy_upsert && policy_upsert + 1 == policy_live,
        "{updates:#?}"
    );
    assert_eq!(updates.len(), 5, "{updates:#?}");
    assert_eq!(
        reset_keys(&updates, Kind::Pod),
        [key("a", "web"), key("b", "client-2")]
    );
    assert!(
        updates
            .iter()
            .any(|u| matches!(u, Update::Upsert(Object::Policy(p)) if p.id == key("b", "allow-a"))),
        "{updates:#?}"
    );
    assert_eq!(
        source.metrics.watch_errors(Kind::Pod),
        1,
        "the 500; the 410 is a relist, not an error"
    );
    assert_eq!(source.metrics.relists(Kind::Pod, RelistReason::Expired), 1);
    assert_eq!(source.metrics.watch_errors(Kind::NetworkPolicy), 1, "a 500");
    assert_eq!(
        source
            .metrics
            .relists(Kind::NetworkPolicy, RelistReason::Expired),
        0,
        "the policy watch resumed where it was"
    );
    assert_eq!(source.metrics.watch_errors(Kind::Namespace), 0);

    // And the pods watch works again.
    fake.apply(
        "pods",
        pod("a", "db", "10.244.1.11", "node-1", json!({"app": "db"})),
    );
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Upsert(Object::Pod(p)) if p.id == key("a", "db")),
        "{u:?}"
    );
    let cluster = source.store.cluster();
    assert_eq!(
        cluster.pods().keys().cloned().collect::<Vec<_>>(),
        [key("a", "db"), key("a", "web"), key("b", "client-2")]
    );
    assert_eq!(cluster.policies().len(), 2);
    source.stop().await;
}

#[tokio::test]
async fn objects_the_typed_model_rejects_and_event_failures_are_not_fatal() {
    let fake = FakeApi::start().await;
    fake.fail_events(true);
    fake.apply("namespaces", namespace("a", json!({})));
    // Finalizers that are not a list, and a container port that is not a number: a typed watcher
    // would fail the whole list; here each is one invalid object.
    let mut odd = namespace("odd", json!({}));
    odd["spec"] = json!({"finalizers": "kubernetes"});
    fake.apply("namespaces", odd);
    let mut bad_pod = pod("a", "bad", "10.244.1.12", "node-1", json!({}));
    bad_pod["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("eighty");
    fake.apply("pods", bad_pod);
    fake.apply(
        "pods",
        pod("a", "web", "10.244.1.10", "node-1", json!({"app": "web"})),
    );
    let mut source = start(&fake);
    let updates = source.until_listed().await;
    assert_eq!(updates.len(), Kind::ENFORCED.len(), "{updates:#?}");
    assert_eq!(reset_keys(&updates, Kind::Namespace), [key("", "a")]);
    assert_eq!(reset_keys(&updates, Kind::Pod), [key("a", "web")]);
    let errors: Vec<&str> = updates
        .iter()
        .flat_map(|u| match u {
            Update::Reset { invalid, .. } => invalid.iter().map(|(_, e)| e.as_str()).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("Namespace odd: field spec.finalizers: ")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("Pod a/bad: field spec.containers[0].ports[0].containerPort: ")),
        "{errors:?}"
    );

    // Both Events fail to publish: counted, and the source goes on.
    eventually(Duration::from_secs(3), "two failed Events", || {
        Some(()).filter(|()| source.metrics.events_failed() == 2)
    })
    .await;
    let posts = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path.clone())
        .collect::<Vec<_>>();
    assert!(
        posts.contains(&"/apis/events.k8s.io/v1/namespaces/default/events".to_string()),
        "an Event about a namespace goes to the default namespace: {posts:?}"
    );
    fake.delete("pods", "a", "bad");
    let u = source.next(Duration::from_secs(3)).await;
    assert_eq!(u, Update::Delete(Kind::Pod, key("a", "bad")));
    assert_eq!(source.metrics.invalid_objects(Kind::Pod), 1);
    assert_eq!(source.metrics.invalid_objects(Kind::Namespace), 1);
    source.stop().await;
}

/// Log lines written while the guard lives, filtered as policyd filters them by default.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Capture {
    /// Captures this thread's logs (a current-thread test runtime: every task of the test).
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                nftpolicy::cli::DEFAULT_LOG_FILTER,
            ))
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer"))
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The one line of `lines` that contains `text` (asserted to be the only one).
fn only_line<'a>(lines: &'a [String], text: &str) -> &'a str {
    let found: Vec<&String> = lines.iter().filter(|l| l.contains(text)).collect();
    assert_eq!(found.len(), 1, "{lines:#?}");
    found[0]
}

#[tokio::test]
async fn after_an_outage_every_kind_is_back_within_the_capped_backoff_and_the_log_says_it_once() {
    let logs = Capture::default();
    let _guard = logs.install();
    let fake = cluster().await;
    let mut source = start_watching(&fake).await;
    // The cluster goes on elsewhere: every kind's watch is behind the API's resourceVersion, so
    // that the restarted API's watch cache answers each resumed watch with 410.
    fake.write_elsewhere();

    // The API server dies: the cut watches are resumed, the requests refused, every kind stale.
    fake.stop();
    let mut stale = Vec::new();
    while stale.len() < Kind::ENFORCED.len() {
        if let Update::Stale(kind) = source.next(Duration::from_secs(3)).await {
            stale.push(kind);
        }
    }
    for kind in Kind::ENFORCED {
        assert!(stale.contains(&kind), "{stale:?}");
        assert_eq!(source.metrics.state(kind), WatchState::Failing);
    }
    // Long enough for every backoff to reach its cap (3 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let errors = total_watch_errors(&source.metrics);
    assert!(errors >= 9, "requests kept being retried: {errors}");

    // It comes back (with its watch cache started afresh: resumed watches get 410), and a pod is
    // created as soon as it is ready.
    fake.start_again().await;
    let ready = Instant::now();
    fake.apply(
        "pods",
        pod("a", "late", "10.244.1.13", "node-1", json!({"app": "late"})),
    );
    let first = eventually(
        Duration::from_secs(4),
        "a request after the restart",
        || fake.requests().into_iter().find(|r| r.at >= ready),
    )
    .await;
    assert!(
        first.at - ready <= Duration::from_millis(3_300),
        "first request {:?} after the API was ready",
        first.at - ready
    );
    // Every kind lists again, at once and together; the new pod is in the Pod list.
    let updates = source.until_listed().await;
    assert!(
        ready.elapsed() < Duration::from_secs(5),
        "back {:?} after readiness",
        ready.elapsed()
    );
    assert!(reset_keys(&updates, Kind::Pod).contains(&key("a", "late")));
    // The resumed watch's 410 is one re-list.
    assert_relists(&source.metrics, RelistReason::Expired, 1);
    let lists: Vec<Instant> = fake
        .list_paths()
        .iter()
        .map(|path| {
            full_lists(&fake, path)
                .last()
                .expect("a list after the restart")
                .at
        })
        .collect();
    let spread = *lists.iter().max().expect("lists") - *lists.iter().min().expect("lists");
    assert!(
        spread < Duration::from_millis(500),
        "kinds re-listed {spread:?} apart"
    );
    assert_eq!(
        errors,
        total_watch_errors(&source.metrics),
        "no error after the restart: a 410 is not one"
    );
    all_watching(&source.metrics, Duration::from_secs(3)).await;
    for kind in Kind::ENFORCED {
        assert!(source.metrics.last_event_seconds(kind) > 1.0e9);
    }

    // The log: one warning when the outage starts, one line when it ends, with its duration;
    // nothing at ERROR (the client's own error lines are filtered out).
    let lines = logs.lines();
    let failed = only_line(&lines, "Kubernetes API request failed");
    assert!(failed.contains(" WARN "), "{failed}");
    let back = only_line(&lines, "Kubernetes API reachable again");
    assert!(back.contains("outage_secs="), "{back}");
    let loud: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.contains(" ERROR ")
                || (l.contains(" WARN ")
                    && !l.contains("Kubernetes API request failed")
                    && !l.contains("invalid object left out"))
        })
        .collect();
    assert!(loud.is_empty(), "{loud:#?}");
    if std::env::var_os("SHOW_LOGS").is_some() {
        eprintln!("{}", lines.join("\n"));
    }
    source.stop().await;
}

#[tokio::test]
async fn a_resumed_watch_answered_with_410_lists_again_at_once_without_an_error() {
    let fake = cluster().await;
    let mut source = start_watching(&fake).await;
    let pods = &kube_support::path_of("pods");

    let expired = Instant::now();
    fake.expire("pods");
    let updates = source
        .until(Duration::from_secs(3), is_reset(Kind::Pod))
        .await;
    assert!(
        matches!(
            updates.as_slice(),
            [Update::Stale(Kind::Pod), Update::Reset { .. }]
        ),
        "{updates:#?}"
    );
    let relist = full_lists(&fake, pods).last().expect("a re-list").at;
    assert!(
        relist - expired < Duration::from_millis(150),
        "re-listed {:?} after the 410: no backoff step",
        relist - expired
    );
    assert_eq!(source.metrics.watch_errors(Kind::Pod), 0);
    assert_eq!(source.metrics.relists(Kind::Pod, RelistReason::Expired), 1);
    assert_eq!(
        source
            .metrics
            .relists(Kind::Namespace, RelistReason::Expired),
        0
    );
    source.quiet(Duration::from_millis(300)).await;
    source.stop().await;
}

#[tokio::test]
async fn lists_in_pages_and_starts_over_in_one_page_when_a_continuation_expires() {
    let fake = cluster().await;
    fake.apply(
        "pods",
        pod("a", "db", "10.244.1.11", "node-1", json!({"app": "db"})),
    );
    fake.expire_next_continuation();
    let mut options = WatchOptions::new("node-1");
    options.page_size = 2;
    let mut source = start_with(&fake, options);
    let updates = source.until_listed().await;
    assert_eq!(
        reset_keys(&updates, Kind::Pod),
        [key("a", "db"), key("a", "web"), key("b", "client")]
    );
    // The first page as it came; the list begun again, its one response sent in pages too.
    assert_eq!(
        source.list_updates(Kind::Pod),
        ["begin", "2", "begin", "2", "1", "end"]
    );
    let pod_lists: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == kube_support::path_of("pods") && !r.is_watch())
        .collect();
    // Page one, page two answered 410 (its snapshot expired), then the whole list in one response.
    assert_eq!(pod_lists.len(), 3, "{pod_lists:#?}");
    assert_eq!(pod_lists[0].param("limit"), Some("2"));
    assert!(pod_lists[1].param("continue").is_some());
    assert_eq!(pod_lists[2].param("limit"), None);
    assert_eq!(pod_lists[2].param("continue"), None);
    assert_no_watch_errors(&source.metrics);
    source.stop().await;
}

/// [`cluster`] with the pods a/p1, a/p2 and a/p3 besides: five pods, listed in pages of two as
/// a/p1 a/p2, a/p3 a/web, b/client.
async fn cluster_of_five_pods() -> FakeApi {
    let fake = cluster().await;
    for (i, name) in ["p1", "p2", "p3"].iter().enumerate() {
        let ip = format!("10.244.1.{}", 20 + i);
        fake.apply("pods", pod("a", name, &ip, "node-1", json!({"app": "web"})));
    }
    fake
}

fn in_pages_of_two() -> WatchOptions {
    let mut options = WatchOptions::new("node-1");
    options.page_size = 2;
    options
}

#[tokio::test]
async fn a_list_of_more_than_a_page_is_sent_page_by_page() {
    let fake = cluster_of_five_pods().await;
    let mut source = start_with(&fake, in_pages_of_two());
    let updates = source.until_listed().await;
    assert_eq!(
        source.list_updates(Kind::Pod),
        ["begin", "2", "2", "1", "end"]
    );
    assert_eq!(reset_keys(&updates, Kind::Pod).len(), 5);
    assert_eq!(source.store.cluster().pods().len(), 5);
    assert!(!source.store.is_listing());
    // Kinds of at most a page: one page each.
    assert_eq!(source.list_updates(Kind::Namespace), ["begin", "2", "end"]);
    assert_no_watch_errors(&source.metrics);
    source.stop().await;
}

#[tokio::test]
async fn an_interrupted_paged_list_removes_nothing_and_the_next_complete_one_decides() {
    let fake = cluster_of_five_pods().await;
    let mut source = start_with(&fake, in_pages_of_two());
    source.until_listed().await;
    all_watching(&source.metrics, Duration::from_secs(3)).await;

    // While the API is down, b/client is deleted and a/p1 relabelled; back up, the pods are listed
    // again (their watch is answered 410), and the list's second page fails.
    fake.stop();
    // (Once the pods' watch is gone, so that it cannot carry the changes.)
    eventually(Duration::from_secs(5), "the pod watch failing", || {
        Some(()).filter(|()| source.metrics.state(Kind::Pod) == WatchState::Failing)
    })
    .await;
    fake.delete("pods", "b", "client");
    fake.apply(
        "pods",
        pod("a", "p1", "10.244.1.20", "node-1", json!({"app": "db"})),
    );
    fake.fail_next_continuation();
    fake.start_again().await;
    let p1_app = |store: &Store| {
        store
            .cluster()
            .pods()
            .get(&key("a", "p1"))
            .and_then(|p| p.labels.get("app").map(str::to_string))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    // Until the list is abandoned: a Stale while its pages are coming.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let update = source.next(left).await;
        if matches!(update, Update::Stale(Kind::Pod)) && source.lists.contains_key(&Kind::Pod) {
            break;
        }
    }
    // Its first page is in; nothing it did not hold is gone.
    assert_eq!(p1_app(&source.store).as_deref(), Some("db"));
    assert!(source
        .store
        .cluster()
        .pods()
        .contains_key(&key("b", "client")));
    assert_eq!(source.store.cluster().pods().len(), 5);
    assert!(!source.store.is_listing());

    // The list again, whole: b/client is gone.
    let left = deadline.saturating_duration_since(Instant::now());
    source.until(left, is_reset(Kind::Pod)).await;
    let mut pods: Vec<ObjectRef> = source.store.cluster().pods().keys().cloned().collect();
    pods.sort();
    assert_eq!(
        pods,
        [
            key("a", "p1"),
            key("a", "p2"),
            key("a", "p3"),
            key("a", "web")
        ]
    );
    assert_eq!(p1_app(&source.store).as_deref(), Some("db"));
    // The initial list; stale (the outage); the list that failed on its second page, abandoned;
    // the list again.
    assert_eq!(
        source.list_updates(Kind::Pod),
        ["begin", "2", "2", "1", "end", "stale", "begin", "2", "stale", "begin", "2", "2", "end"]
    );
    assert!(source.metrics.watch_errors(Kind::Pod) >= 1);
    source.stop().await;
}

#[tokio::test]
async fn a_kind_failing_while_the_others_stay_up_is_stale_until_its_watch_resumes() {
    let fake = cluster().await;
    let mut source = start_watching(&fake).await;

    // Pods fail for a while; policies keep working and change meanwhile.
    fake.fail_next("pods", 3);
    fake.close_watches("pods");
    let updates = source
        .until(Duration::from_secs(3), is_stale(Kind::Pod))
        .await;
    assert_eq!(updates.len(), 1, "{updates:#?}");
    fake.apply(
        "networkpolicies",
        policy_from_namespace("b", "allow-a", "a"),
    );
    fake.apply(
        "pods",
        pod("a", "db", "10.244.1.11", "node-1", json!({"app": "db"})),
    );
    let updates = source
        .until(Duration::from_secs(8), |u| {
            matches!(u, Update::Live(Kind::Pod))
        })
        .await;
    let policy = position(&updates, |u| matches!(u, Update::Upsert(Object::Policy(_))));
    let pod = position(&updates, is_pod_upsert("db"));
    assert!(
        policy < pod,
        "the policy came while pods were stale: {updates:#?}"
    );
    assert_eq!(
        pod + 2,
        updates.len(),
        "the missed pod, then pods are current again: {updates:#?}"
    );
    assert_eq!(source.metrics.watch_errors(Kind::Pod), 3);
    assert_eq!(source.metrics.watch_errors(Kind::NetworkPolicy), 0);
    assert_eq!(source.metrics.relists(Kind::Pod, RelistReason::Expired), 0);
    source.stop().await;
}

#[tokio::test]
async fn a_resource_version_going_backwards_lists_every_kind_again() {
    let fake = cluster().await;
    let mut source = start_watching(&fake).await;

    // A backup is taken; then the cluster moves on, and the agent follows.
    let backup = fake.snapshot();
    fake.apply(
        "pods",
        pod("a", "db", "10.244.1.11", "node-1", json!({"app": "db"})),
    );
    fake.apply(
        "networkpolicies",
        policy_from_namespace("b", "allow-a", "a"),
    );
    source
        .until(Duration::from_secs(3), |u| {
            matches!(u, Update::Upsert(Object::Policy(_)))
        })
        .await;
    let seen = fake.resource_version();

    // etcd is restored from the backup and the API server restarted on it: the resourceVersion
    // is below what the agent has seen. A watch resumed from there would be accepted and silent;
    // the one-item list before it shows the API went back, and every kind is listed again.
    fake.restore(&backup).await;
    let updates = source.until_listed().await;
    assert_initial_pods_and_policies(&updates);
    assert_relists(&source.metrics, RelistReason::ResourceVersionBackwards, 1);
    // And what happens after the restore is seen, although its resourceVersions are below the
    // ones seen before it.
    all_watching(&source.metrics, Duration::from_secs(3)).await;
    fake.apply(
        "pods",
        pod(
            "a",
            "after",
            "10.244.1.14",
            "node-1",
            json!({"app": "after"}),
        ),
    );
    assert!(
        fake.resource_version() <= seen,
        "not above what was seen before"
    );
    source
        .until(Duration::from_secs(3), is_pod_upsert("after"))
        .await;
    source.stop().await;
}

#[tokio::test]
async fn a_bookmark_below_the_last_resource_version_lists_every_kind_again() {
    let fake = cluster().await;
    fake.bookmarks_every(Duration::from_millis(100));
    let mut source = start_watching(&fake).await;
    // Bookmarks carry the current resourceVersion: nothing to do.
    fake.apply("namespaces", namespace("c", json!({"team": "c"})));
    source.next(Duration::from_secs(3)).await;
    source.quiet(Duration::from_millis(400)).await;

    fake.send_bookmark("pods", 5);
    let updates = source.until_listed().await;
    assert!(updates.iter().any(is_stale(Kind::Pod)), "{updates:#?}");
    assert_relists(&source.metrics, RelistReason::ResourceVersionBackwards, 1);
    assert_no_watch_errors(&source.metrics);
    source.stop().await;
}

#[tokio::test]
async fn a_recurring_problem_is_one_event_whose_series_is_patched() {
    let fake = cluster().await;
    let mut source = start_listed(&fake).await;
    eventually(Duration::from_secs(3), "the first Event", || {
        Some(()).filter(|()| fake.events().len() == 1)
    })
    .await;

    // A new version with the same problem (a label edit): the Event's series counts it.
    let mut relabelled = policy_with_cidr("a", "bad", "10.0.0.0/33");
    relabelled["metadata"]["labels"] = json!({"edited": "yes"});
    fake.apply("networkpolicies", relabelled.clone());
    let u = source.next(Duration::from_secs(3)).await;
    assert!(matches!(u, Update::Invalid { .. }), "{u:?}");
    // Seen again in a re-list: counted again.
    fake.expire("networkpolicies");
    source
        .until(Duration::from_secs(3), is_reset(Kind::NetworkPolicy))
        .await;
    let requests = eventually(Duration::from_secs(3), "two patches", || {
        Some(fake.events()).filter(|e| e.len() == 3)
    })
    .await;
    let methods: Vec<&str> = requests.iter().map(|(m, _, _)| m.as_str()).collect();
    assert_eq!(methods, ["POST", "PATCH", "PATCH"]);
    let stored = fake.stored_events();
    assert_eq!(stored.len(), 1, "one Event for one problem: {stored:#?}");
    assert_eq!(stored[0]["series"]["count"], 3);
    assert!(stored[0]["series"]["lastObservedTime"].is_string());
    assert_eq!(stored[0]["regarding"]["name"], "bad");
    assert!(stored[0]["note"]
        .as_str()
        .expect("a note")
        .starts_with("field spec.ingress[0].from[0].ipBlock.cidr: "));
    assert_eq!(source.metrics.invalid_objects(Kind::NetworkPolicy), 1);

    // A different problem on the same object: an Event of its own, with its own note.
    fake.apply(
        "networkpolicies",
        policy_with_cidr("a", "bad", "300.0.0.0/8"),
    );
    source.next(Duration::from_secs(3)).await;
    eventually(Duration::from_secs(3), "a second Event", || {
        Some(()).filter(|()| fake.stored_events().len() == 2)
    })
    .await;
    assert_eq!(source.metrics.invalid_objects(Kind::NetworkPolicy), 2);

    // An Event the API no longer has (expired) is created again rather than lost.
    fake.drop_events();
    let mut again = policy_with_cidr("a", "bad", "300.0.0.0/8");
    again["metadata"]["labels"] = json!({"edited": "again"});
    fake.apply("networkpolicies", again);
    source.next(Duration::from_secs(3)).await;
    eventually(Duration::from_secs(3), "the Event created anew", || {
        Some(()).filter(|()| fake.stored_events().len() == 1)
    })
    .await;
    let methods: Vec<String> = fake.events().iter().map(|(m, _, _)| m.clone()).collect();
    assert_eq!(methods[3..], ["POST", "PATCH", "POST"]);
    assert_eq!(source.metrics.events_failed(), 0);
    source.stop().await;
}

#[tokio::test]
async fn every_request_names_the_agent_and_its_node() {
    let fake = cluster().await;
    let source = start_listed(&fake).await;
    eventually(Duration::from_secs(3), "an Event and the watches", || {
        let r = fake.requests();
        Some(()).filter(|()| {
            r.iter().any(|r| r.method == "POST")
                && r.iter().filter(|r| r.is_watch()).count() == Kind::ENFORCED.len()
        })
    })
    .await;
    let expected = nftpolicy::source::kube::user_agent("node-1");
    assert!(expected.starts_with("policyd/") && expected.ends_with(" (node-1)"));
    for request in fake.requests() {
        assert_eq!(
            request.user_agent.as_deref(),
            Some(expected.as_str()),
            "{request:?}"
        );
    }
    source.stop().await;
}

#[tokio::test]
async fn a_periodic_relist_lists_every_kind_again_without_holding_syncs() {
    let fake = cluster().await;
    let mut options = WatchOptions::new("node-1");
    options.relist_interval = Some(Duration::from_millis(600));
    let mut source = start_with(&fake, options);
    source.until_listed().await;
    let updates = source
        .until_resets(&Kind::ENFORCED, Duration::from_secs(3))
        .await;
    assert_eq!(
        updates.len(),
        Kind::ENFORCED.len(),
        "only Resets, no Stale: {updates:#?}"
    );
    for kind in Kind::ENFORCED {
        assert!(source.metrics.relists(kind, RelistReason::Periodic) >= 1);
    }
    assert_no_watch_errors(&source.metrics);
    source.stop().await;
}

/// Updates until (and with) the first Reset of `kind`, and that Reset's keys.
async fn until_reset_of(
    source: &mut Running,
    kind: Kind,
    within: Duration,
) -> (Vec<Update>, Vec<ObjectRef>) {
    let updates = source.until(within, is_reset(kind)).await;
    let keys = reset_keys(&updates, kind);
    (updates, keys)
}

#[tokio::test]
async fn cluster_network_policies_and_nodes_are_watched_and_invalid_ones_reported() {
    let fake = cluster().await;
    fake.apply(
        "clusternetworkpolicies",
        cluster_policy("too-high", 5000, deny_db_nodes()),
    );
    let dns = json!([{"action": "Accept", "to": [{"domainNames": ["example.com"]}]}]);
    fake.apply("clusternetworkpolicies", cluster_policy("dns", 3, dns));
    let mut source = start(&fake);
    let updates = source.until_listed().await;
    assert_eq!(
        reset_keys(&updates, Kind::ClusterNetworkPolicy),
        [key("", "guard")]
    );
    assert_eq!(reset_keys(&updates, Kind::Node), [key("", "node-1")]);
    let Update::Reset { invalid, .. } =
        &updates[position(&updates, is_reset(Kind::ClusterNetworkPolicy))]
    else {
        unreachable!()
    };
    let mut errors: Vec<(String, String)> = invalid
        .iter()
        .map(|(k, e)| (k.name.to_string(), e.clone()))
        .collect();
    errors.sort();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].0, "dns");
    assert!(
        errors[0]
            .1
            .starts_with("ClusterNetworkPolicy dns: field spec.egress[0].to[0].domainNames: "),
        "{errors:?}"
    );
    assert_eq!(errors[1].0, "too-high");
    assert!(
        errors[1]
            .1
            .starts_with("ClusterNetworkPolicy too-high: field spec.priority: "),
        "{errors:?}"
    );
    let guard = &source.store.cluster().cluster_policies()["guard"];
    assert_eq!((guard.priority, guard.egress.len()), (10, 1));
    let node_1 = source.store.cluster().node("node-1").expect("node-1");
    assert_eq!(
        node_1.addresses,
        ["192.168.100.1".parse::<IpAddr>().expect("ip")]
    );

    // Discovery first, then the preferred version, cluster-wide.
    let requests = fake.requests();
    let discovery = position_of(&requests, "/apis/policy.networking.k8s.io/v1beta1");
    let list = position_of(&requests, &kube_support::cnp_path("v1beta1"));
    assert!(discovery < list, "{requests:#?}");
    assert!(
        !requests.iter().any(|r| r.path.contains("v1alpha2")),
        "v1beta1 is served: v1alpha2 is not asked about"
    );
    assert!(requests.iter().any(|r| r.path == "/api/v1/nodes"));

    // Each invalid one is a Warning Event on it, in the default namespace (the object is
    // cluster-scoped), naming the version read.
    let events = eventually(Duration::from_secs(3), "three Events", || {
        Some(fake.events()).filter(|e| e.len() == 3)
    })
    .await;
    let mut about: Vec<(&str, &str)> = Vec::new();
    for (_, namespace, event) in &events {
        if event["regarding"]["kind"] != "ClusterNetworkPolicy" {
            continue;
        }
        assert_eq!(namespace, "default");
        assert_eq!(event["reason"], "InvalidClusterNetworkPolicy");
        assert_eq!(event["type"], "Warning");
        assert_eq!(
            event["regarding"]["apiVersion"],
            "policy.networking.k8s.io/v1beta1"
        );
        assert!(event["regarding"]["namespace"].is_null(), "{event}");
        about.push((
            event["regarding"]["name"].as_str().expect("a name"),
            event["note"].as_str().expect("a note"),
        ));
    }
    about.sort();
    assert_eq!(about.len(), 2, "{events:#?}");
    assert!(
        about[0].0 == "dns" && about[0].1.contains("domainNames"),
        "{about:?}"
    );
    assert!(
        about[1].0 == "too-high" && about[1].1.starts_with("field spec.priority: "),
        "{about:?}"
    );
    assert_eq!(
        source.metrics.invalid_objects(Kind::ClusterNetworkPolicy),
        2
    );

    // Watched: an edit, an edit that breaks it (the last valid version stays), a Node relabelled
    // and deleted.
    all_watching(&source.metrics, Duration::from_secs(3)).await;
    let two_rules = json!([
        {"action": "Pass", "to": [{"networks": ["10.0.0.0/8"]}]},
        {"name": "no-db-nodes", "action": "Deny", "to": [{"nodes": {"matchLabels": {"role": "db"}}}]},
    ]);
    fake.apply(
        "clusternetworkpolicies",
        cluster_policy("guard", 10, two_rules),
    );
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Upsert(Object::ClusterPolicy(p)) if p.name == "guard" && p.egress.len() == 2),
        "{u:?}"
    );
    let bad = json!([{"action": "Deny", "to": [{"networks": ["10.0.0.1/8"]}]}]);
    fake.apply("clusternetworkpolicies", cluster_policy("guard", 10, bad));
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Invalid { kind: Kind::ClusterNetworkPolicy, key: k, error }
            if *k == key("", "guard") && error.contains("field spec.egress[0].to[0].networks[0]")),
        "{u:?}"
    );
    assert_eq!(
        source.store.cluster().cluster_policies()["guard"]
            .egress
            .len(),
        2
    );
    fake.apply(
        "nodes",
        node("node-1", "192.168.100.1", json!({"role": "web"})),
    );
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Upsert(Object::Node(n)) if n.labels.get("role").expect("label role") == "web"),
        "{u:?}"
    );
    fake.delete("nodes", "", "node-1");
    let u = source.next(Duration::from_secs(3)).await;
    assert_eq!(u, Update::Delete(Kind::Node, key("", "node-1")));
    assert_no_watch_errors(&source.metrics);
    source.stop().await;
}

/// `object` annotated `nftpolicy.io/enforcement: VALUE`.
fn with_enforcement(mut object: Value, value: &str) -> Value {
    object["metadata"]["annotations"] = json!({ "nftpolicy.io/enforcement": value });
    object
}

#[tokio::test]
async fn policies_in_audit_mode_are_read_and_an_audited_cluster_network_policy_is_reported() {
    let fake = cluster().await;
    fake.apply(
        "networkpolicies",
        with_enforcement(policy_from_namespace("a", "from-a", "a"), "audit"),
    );
    fake.apply(
        "clusternetworkpolicies",
        with_enforcement(cluster_policy("audited", 20, deny_db_nodes()), "audit"),
    );
    fake.apply(
        "clusternetworkpolicies",
        with_enforcement(cluster_policy("enforced", 30, deny_db_nodes()), "enforce"),
    );
    let mut source = start(&fake);
    let updates = source.until_listed().await;
    let enforcement = |source: &Running, name: &str| {
        source.store.cluster().policies()[&key("a", name)].enforcement
    };
    assert_eq!(enforcement(&source, "from-a"), Enforcement::Audit);
    assert_eq!(enforcement(&source, "allow-b"), Enforcement::Enforce);
    // The ClusterNetworkPolicy in audit mode is left out and reported; `enforce` is fine.
    assert_eq!(
        reset_keys(&updates, Kind::ClusterNetworkPolicy),
        [key("", "enforced"), key("", "guard")]
    );
    let Update::Reset { invalid, .. } =
        &updates[position(&updates, is_reset(Kind::ClusterNetworkPolicy))]
    else {
        unreachable!()
    };
    let problem = "field metadata.annotations[\"nftpolicy.io/enforcement\"]: audit mode is not \
                   supported for ClusterNetworkPolicy yet; remove the annotation, or run the agent \
                   with --audit-all";
    assert_eq!(
        invalid,
        &[(
            key("", "audited"),
            format!("ClusterNetworkPolicy audited: {problem}")
        )]
    );
    let events = eventually(Duration::from_secs(3), "two Events", || {
        Some(fake.events()).filter(|e| e.len() == 2)
    })
    .await;
    let (_, namespace, event) = events
        .iter()
        .find(|(_, _, e)| e["regarding"]["name"] == "audited")
        .unwrap_or_else(|| panic!("no Event about audited: {events:#?}"));
    assert_eq!(namespace, "default");
    assert_eq!(event["reason"], "InvalidClusterNetworkPolicy");
    assert_eq!(event["type"], "Warning");
    assert_eq!(
        event["note"],
        format!(
            "{problem} (nftpolicy leaves this version out and keeps enforcing the last valid \
             one, if any)"
        )
    );

    // Watched: enforced by removing the annotation; an unknown value is invalid and the last
    // valid version (enforced) stays.
    all_watching(&source.metrics, Duration::from_secs(3)).await;
    fake.apply("networkpolicies", policy_from_namespace("a", "from-a", "a"));
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Upsert(Object::Policy(p))
            if p.id == key("a", "from-a") && p.enforcement == Enforcement::Enforce),
        "{u:?}"
    );
    fake.apply(
        "networkpolicies",
        with_enforcement(policy_from_namespace("a", "from-a", "a"), "Audit"),
    );
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Invalid { kind: Kind::NetworkPolicy, key: k, error }
            if *k == key("a", "from-a") && error == "NetworkPolicy a/from-a: field \
               metadata.annotations[\"nftpolicy.io/enforcement\"]: unknown enforcement mode \
               \"Audit\": use enforce or audit (no annotation is enforce)"),
        "{u:?}"
    );
    assert_eq!(enforcement(&source, "from-a"), Enforcement::Enforce);
    assert_no_watch_errors(&source.metrics);
    source.stop().await;
}

/// The position of the first request for `path`.
fn position_of(requests: &[kube_support::Request], path: &str) -> usize {
    requests
        .iter()
        .position(|r| r.path == path)
        .unwrap_or_else(|| panic!("no request for {path}: {requests:#?}"))
}

#[tokio::test]
async fn cluster_network_policies_are_read_at_v1alpha2_where_v1beta1_is_not_served() {
    let logs = Capture::default();
    let _guard = logs.install();
    let fake = cluster_serving(kube_support::CNP_V1ALPHA2).await;
    fake.apply(
        "clusternetworkpolicies",
        cluster_policy("too-high", 5000, deny_db_nodes()),
    );
    let mut source = start_watching(&fake).await;
    assert_eq!(
        source
            .store
            .cluster()
            .cluster_policies()
            .keys()
            .collect::<Vec<_>>(),
        ["guard"]
    );
    let requests = fake.requests();
    let v1beta1 = position_of(&requests, "/apis/policy.networking.k8s.io/v1beta1");
    let v1alpha2 = position_of(&requests, "/apis/policy.networking.k8s.io/v1alpha2");
    let list = position_of(&requests, &kube_support::cnp_path("v1alpha2"));
    assert!(v1beta1 < v1alpha2 && v1alpha2 < list, "{requests:#?}");
    assert!(!requests
        .iter()
        .any(|r| r.path == kube_support::cnp_path("v1beta1")));
    assert!(watches(&fake, &kube_support::cnp_path("v1alpha2")).len() == 1);

    // Watched at v1alpha2.
    fake.apply(
        "clusternetworkpolicies",
        cluster_policy("late", 20, deny_db_nodes()),
    );
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Upsert(Object::ClusterPolicy(p)) if p.name == "late"),
        "{u:?}"
    );
    // The Event names the version the object was read at.
    let events = eventually(Duration::from_secs(3), "an Event", || {
        let e: Vec<Value> = fake
            .events()
            .into_iter()
            .map(|(_, _, e)| e)
            .filter(|e| e["regarding"]["kind"] == "ClusterNetworkPolicy")
            .collect();
        Some(e).filter(|e| !e.is_empty())
    })
    .await;
    assert_eq!(
        events[0]["regarding"]["apiVersion"],
        "policy.networking.k8s.io/v1alpha2"
    );
    let lines = logs.lines();
    let served = only_line(&lines, "served at this version only");
    assert!(
        served.contains(" INFO ") && served.contains("policy.networking.k8s.io/v1alpha2"),
        "{served}"
    );

    // The CRD is upgraded to serve v1beta1 only: the watch at v1alpha2 ends, its resumption
    // answers 404, and discovery finds v1beta1, where the kind is listed again.
    fake.serve_cnp_versions(&["v1beta1"]);
    let (updates, keys) = until_reset_of(
        &mut source,
        Kind::ClusterNetworkPolicy,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(keys, [key("", "guard"), key("", "late")]);
    assert!(
        matches!(
            updates.as_slice(),
            [
                Update::Stale(Kind::ClusterNetworkPolicy),
                Update::Reset { .. }
            ]
        ),
        "{updates:#?}"
    );
    assert!(!full_lists(&fake, &kube_support::cnp_path("v1beta1")).is_empty());
    assert_no_watch_errors(&source.metrics);
    all_watching(&source.metrics, Duration::from_secs(3)).await;
    source.stop().await;
}

#[tokio::test]
async fn without_the_crd_no_cluster_network_policy_is_read_and_one_installed_later_is() {
    let logs = Capture::default();
    let _guard = logs.install();
    let fake = cluster_serving(&[]).await;
    let mut options = WatchOptions::new("node-1");
    options.rediscover_interval = Duration::from_millis(300);
    // The longest wait for the next discovery (the interval and its jitter), and time to list.
    let within = options.rediscover_interval * 11 / 10 + Duration::from_millis(500);
    let mut source = start_with(&fake, options);
    // Every kind is listed; ClusterNetworkPolicy is absent: an empty Reset, no list request.
    let updates = source.until_listed().await;
    assert_eq!(updates.len(), Kind::ENFORCED.len(), "{updates:#?}");
    assert!(reset_keys(&updates, Kind::ClusterNetworkPolicy).is_empty());
    assert_eq!(
        source.metrics.state(Kind::ClusterNetworkPolicy),
        WatchState::Absent
    );
    let heard = source
        .metrics
        .last_event_seconds(Kind::ClusterNetworkPolicy);
    assert!(heard > 1.0e9, "an absent kind is not a silent one");
    // Asked again a few times meanwhile: nothing is sent, nothing fails, one line says it.
    let asked = |fake: &FakeApi| {
        fake.requests()
            .iter()
            .filter(|r| r.path == "/apis/policy.networking.k8s.io/v1beta1")
            .count()
    };
    source.quiet(Duration::from_millis(1000)).await;
    assert!(asked(&fake) >= 3, "discovery asked {} times", asked(&fake));
    assert!(!fake
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/clusternetworkpolicies")));
    assert_eq!(source.metrics.watch_errors(Kind::ClusterNetworkPolicy), 0);
    assert!(
        source
            .metrics
            .last_event_seconds(Kind::ClusterNetworkPolicy)
            > heard,
        "each discovery that finds it absent counts"
    );
    let lines = logs.lines();
    let absent = only_line(&lines, "not served by the Kubernetes API");
    assert!(
        absent.contains(" INFO ") && absent.contains("ClusterNetworkPolicy"),
        "{absent}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(" WARN ") && !l.contains("invalid object")),
        "{lines:#?}"
    );

    // The CRD is installed and a policy created: listed within the rediscovery interval.
    fake.serve_cnp_versions(kube_support::CNP_V1BETA1);
    fake.apply(
        "clusternetworkpolicies",
        cluster_policy("guard", 10, deny_db_nodes()),
    );
    let installed = Instant::now();
    let (_, keys) = until_reset_of(
        &mut source,
        Kind::ClusterNetworkPolicy,
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(keys, [key("", "guard")]);
    assert!(installed.elapsed() < within, "{:?}", installed.elapsed());
    all_watching(&source.metrics, Duration::from_secs(3)).await;
    fake.apply(
        "clusternetworkpolicies",
        cluster_policy("late", 20, deny_db_nodes()),
    );
    let u = source.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&u, Update::Upsert(Object::ClusterPolicy(p)) if p.name == "late"),
        "{u:?}"
    );

    // The CRD is deleted: its objects go first, then the kind is absent again.
    fake.serve_cnp_versions(&[]);
    let updates = source
        .until(Duration::from_secs(3), is_reset(Kind::ClusterNetworkPolicy))
        .await;
    let deleted: Vec<&ObjectRef> = updates
        .iter()
        .filter_map(|u| match u {
            Update::Delete(Kind::ClusterNetworkPolicy, k) => Some(k),
            _ => None,
        })
        .collect();
    assert_eq!(
        deleted,
        [&key("", "guard"), &key("", "late")],
        "{updates:#?}"
    );
    assert!(reset_keys(&updates, Kind::ClusterNetworkPolicy).is_empty());
    assert!(source.store.cluster().cluster_policies().is_empty());
    assert_eq!(
        source.metrics.state(Kind::ClusterNetworkPolicy),
        WatchState::Absent
    );
    assert_no_watch_errors(&source.metrics);
    let lines = logs.lines();
    let absent: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("not served by the Kubernetes API"))
        .collect();
    assert_eq!(absent.len(), 2, "once per absence: {lines:#?}");
    source.stop().await;
}

#[tokio::test]
async fn an_absent_kind_is_stale_while_the_api_fails_and_current_when_it_answers_again() {
    let fake = cluster_serving(&[]).await;
    let mut options = WatchOptions::new("node-1");
    options.rediscover_interval = Duration::from_millis(200);
    let mut source = start_with(&fake, options);
    source.until_listed().await;
    all_watching_or_absent(&source.metrics).await;
    fake.stop();
    source
        .until(Duration::from_secs(3), is_stale(Kind::ClusterNetworkPolicy))
        .await;
    fake.start_again().await;
    // Back: each kind is current again (listed again, or its watch resumed), the absent one
    // when discovery answers that it is still not served.
    let updates = source
        .until(Duration::from_secs(5), |u| {
            matches!(u, Update::Live(Kind::ClusterNetworkPolicy))
        })
        .await;
    assert!(
        !updates.iter().any(is_reset(Kind::ClusterNetworkPolicy)),
        "{updates:#?}"
    );
    assert_eq!(
        source.metrics.state(Kind::ClusterNetworkPolicy),
        WatchState::Absent
    );
    assert!(source.metrics.watch_errors(Kind::ClusterNetworkPolicy) >= 1);
    source.stop().await;
}

/// Waits until every kind watches, but ClusterNetworkPolicy, which is absent.
async fn all_watching_or_absent(metrics: &SourceMetrics) {
    eventually(
        Duration::from_secs(3),
        "every kind watching or absent",
        || {
            Some(()).filter(|()| {
                Kind::ENFORCED.iter().all(|k| {
                    let expected = if *k == Kind::ClusterNetworkPolicy {
                        WatchState::Absent
                    } else {
                        WatchState::Watching
                    };
                    metrics.state(*k) == expected
                })
            })
        },
    )
    .await;
}
