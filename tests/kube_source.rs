//! The Kubernetes source (`nftpolicy::source::kube::run`) against a fake API server: lists become
//! Resets, watch events become Upserts and Deletes, invalid objects are reported and recorded as
//! Events, and closed streams, expiries and outages are ridden out.

mod kube_support;

use std::net::IpAddr;
use std::time::Duration;

use kube_support::FakeApi;
use nftpolicy::source::kube::{run, SourceMetrics};
use nftpolicy::source::{Kind, Object, Store, Update};
use policy_compiler::model::ObjectRef;
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

/// A fake cluster: namespaces a and b, pods a/web and b/client, a valid policy a/allow-b and an
/// invalid one, a/bad.
async fn cluster() -> FakeApi {
    let fake = FakeApi::start().await;
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
    store: Store,
}

fn start(fake: &FakeApi) -> Running {
    init_tracing();
    let (tx, rx) = mpsc::channel(64);
    let metrics = SourceMetrics::new();
    let task = tokio::spawn(run(
        fake.client(),
        "node-1".to_string(),
        tx,
        metrics.clone(),
    ));
    Running {
        rx,
        task,
        metrics,
        store: Store::new(),
    }
}

impl Running {
    /// The next update, applied to the store.
    async fn next(&mut self, within: Duration) -> Update {
        let update = timeout(within, self.rx.recv())
            .await
            .expect("an update in time")
            .expect("the source is running");
        self.store.apply(update.clone());
        update
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
        .filter(|r| r.path == path && r.param("watch") == Some("true"))
        .collect()
}

#[tokio::test]
async fn lists_watches_and_reports_invalid_objects() {
    let fake = cluster().await;
    let mut source = start(&fake);

    // The initial lists: one Reset per kind, the invalid policy reported in its kind's Reset.
    let updates = source
        .until_resets(&Kind::ALL, Duration::from_secs(5))
        .await;
    assert_eq!(updates.len(), 3, "{updates:#?}");
    assert_eq!(
        reset_keys(&updates, Kind::Namespace),
        [key("", "a"), key("", "b")]
    );
    assert_eq!(
        reset_keys(&updates, Kind::Pod),
        [key("a", "web"), key("b", "client")]
    );
    assert_eq!(
        reset_keys(&updates, Kind::NetworkPolicy),
        [key("a", "allow-b")]
    );
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
        cluster.namespace("b").expect("namespace b").labels["team"],
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
    for (_, path, _, _) in kube_support::RESOURCES {
        let list = requests
            .iter()
            .find(|r| r.path == path)
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
        assert_eq!(watch.param("timeoutSeconds"), Some("290"), "{watch:?}");
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
        matches!(&u, Update::Upsert(Object::Pod(p)) if p.labels.get("v").map(String::as_str) == Some("2")),
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
        cluster.pod(&key("a", "web")).expect("a/web").labels["v"],
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
    for kind in Kind::ALL {
        assert_eq!(source.metrics.watch_errors(kind), 0, "{kind:?}");
    }
    assert_eq!(source.metrics.events_failed(), 0);
    source.quiet(Duration::from_millis(200)).await;
    source.stop().await;
}

#[tokio::test]
async fn resumes_a_closed_watch_without_listing_again() {
    let fake = cluster().await;
    let mut source = start(&fake);
    source
        .until_resets(&Kind::ALL, Duration::from_secs(5))
        .await;
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
    let lists = fake
        .requests()
        .iter()
        .filter(|r| r.path == pods && r.param("watch").is_none())
        .count();
    assert_eq!(lists, 1, "no second list");
    assert_eq!(source.metrics.watch_errors(Kind::Pod), 0);
    assert_eq!(source.store.cluster().pods().len(), 3);
    source.quiet(Duration::from_millis(200)).await;
    source.stop().await;
}

#[tokio::test]
async fn rides_out_expiries_and_outages() {
    let fake = cluster().await;
    let mut source = start(&fake);
    source
        .until_resets(&Kind::ALL, Duration::from_secs(5))
        .await;
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

    // Nothing but a pod Reset with the new state, and the missed policy as an Upsert.
    let mut updates = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while !(updates.iter().any(is_reset(Kind::Pod))
        && updates.iter().any(|u| matches!(u, Update::Upsert(_))))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        updates.push(source.next(left).await);
    }
    assert_eq!(updates.len(), 2, "{updates:#?}");
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
    assert_eq!(source.metrics.watch_errors(Kind::Pod), 2, "410, then a 500");
    assert_eq!(source.metrics.watch_errors(Kind::NetworkPolicy), 1, "a 500");
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
    let updates = source
        .until_resets(&Kind::ALL, Duration::from_secs(5))
        .await;
    assert_eq!(updates.len(), 3, "{updates:#?}");
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
