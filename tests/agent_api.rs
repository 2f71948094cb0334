//! The agent end to end without root: the Kubernetes source (kube's client) on the fake API server
//! (tests/kube_support) feeding the reconcile loop on the fake kernel. The API goes away and comes
//! back, and one kind fails while the others keep working: what the kernel holds, and when.
//! ClusterNetworkPolicies and Nodes, at either version or with the CRD absent: the kernel holds
//! what `policy_compiler::compile_node` gives for the objects the API serves.

mod common;
mod kube_support;

use common::reconcile;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_support::FakeApi;
use nftpolicy::agent::{Agent, AgentConfig, Health, SyncReport};
use nftpolicy::dataplane::Dataplane;
use nftpolicy::debounce::DebounceConfig;
use nftpolicy::kernel::{FakeKernel, Kernel};
use nftpolicy::metrics::Metrics;
use nftpolicy::source::kube::{run, RelistReason, SourceMetrics, WatchOptions, WatchState};
use nftpolicy::source::Kind;
use policy_compiler::compile_node;
use policy_compiler::input::{parse_sources, Source};
use policy_compiler::nft::transaction::Op;
use serde_json::{json, Value};
use tokio::sync::mpsc;

fn namespace(name: &str, team: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"team": team}}})
}

fn pod(namespace: &str, name: &str, ip: &str, labels: Value) -> Value {
    pod_on("node-1", namespace, name, ip, labels)
}

fn pod_on(node: &str, namespace: &str, name: &str, ip: &str, labels: Value) -> Value {
    json!({
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

fn web_policy(ports: &[u16]) -> Value {
    let ports: Vec<Value> = ports.iter().map(|p| json!({"port": p})).collect();
    json!({
        "metadata": {"namespace": "a", "name": "web"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}], "ports": ports}],
        },
    })
}

struct Running {
    fake: FakeApi,
    kernel: FakeKernel,
    source: SourceMetrics,
    health: Arc<Health>,
    reports: mpsc::UnboundedReceiver<SyncReport>,
}

async fn start(relist_hold: Duration) -> Running {
    let fake = FakeApi::start().await;
    apply_namespaces_pods_and_policy(&fake);
    run_agent(fake, WatchOptions::new("node-1"), relist_hold).await
}

/// Namespaces a and b, pods a/web and b/client on node-1, and the NetworkPolicy a/web (from b to
/// a's web pods on 80).
fn apply_namespaces_pods_and_policy(fake: &FakeApi) {
    fake.apply("namespaces", namespace("a", "a"));
    fake.apply("namespaces", namespace("b", "b"));
    fake.apply(
        "pods",
        pod("a", "web", "10.244.1.10", json!({"app": "web"})),
    );
    fake.apply(
        "pods",
        pod("b", "client", "10.244.1.20", json!({"app": "client"})),
    );
    fake.apply("networkpolicies", web_policy(&[80]));
}

/// The agent of node-1 on `fake`, once its first sync succeeded.
async fn run_agent(fake: FakeApi, options: WatchOptions, relist_hold: Duration) -> Running {
    let kernel = FakeKernel::new();
    let dataplane = Dataplane::from_kernel(kernel.clone()).expect("the fake lists");
    let mut config = AgentConfig::new("node-1");
    config.debounce = DebounceConfig {
        interval: Duration::from_millis(20),
        ..DebounceConfig::DEFAULT
    };
    config.relist_hold = relist_hold;
    let (otx, reports) = mpsc::unbounded_channel();
    let health = Arc::new(Health::default());
    let agent =
        Agent::new(config, dataplane, Arc::new(Metrics::new()), health.clone()).with_observer(otx);
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(agent.run(rx));
    let source = SourceMetrics::new();
    tokio::spawn(run(fake.client(), options, tx, source.clone()));
    let mut running = Running {
        fake,
        kernel,
        source,
        health,
        reports,
    };
    let first = running.sync(Duration::from_secs(5)).await;
    assert!(first.result.is_ok(), "{first:?}");
    running
}

impl Running {
    async fn sync(&mut self, within: Duration) -> SyncReport {
        tokio::time::timeout(within, self.reports.recv())
            .await
            .expect("a sync in time")
            .expect("the agent runs")
    }

    /// Asserts that the kernel holds what the compiler gives node-1 for the objects the API
    /// serves now (read as `policyc` reads `kubectl get -o json`).
    fn assert_enforces_the_api(&self) {
        let source = Source {
            name: "api.json".into(),
            text: self.fake.manifests(),
        };
        let cluster = parse_sources(&[source])
            .expect("the API serves valid objects")
            .cluster;
        assert_eq!(
            self.kernel.table(),
            Some(compile_node(&cluster, "node-1")),
            "the kernel's table differs from the compiled ruleset"
        );
    }

    /// The names of the kernel's chains that start with `prefix`.
    fn chains(&self, prefix: &str) -> Vec<String> {
        let table = self.kernel.table().unwrap_or_default();
        table
            .chains
            .keys()
            .filter(|c| c.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Waits until `kind` is watched: listed, and its watch request answered (which may come
    /// after the sync of its list).
    async fn watching(&self, kind: Kind) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.source.state(kind) != WatchState::Watching {
            assert!(Instant::now() < deadline, "{kind:?} is not watched");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Fails if a sync happens within `d`.
    async fn no_sync_within(&mut self, d: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(d, self.reports.recv()).await {
            panic!("expected no sync, got {r:?}");
        }
    }

    /// The kernel's table as nft would list it.
    fn listing(&self) -> String {
        self.kernel
            .list_table()
            .expect("the fake lists")
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_when_the_api_is_back_reaches_the_kernel_within_5_s() {
    let mut r = start(Duration::from_secs(10)).await;
    assert!(r.listing().contains("10.244.1.10"));
    // The API server is gone long enough for every backoff to reach its cap.
    r.fake.stop();
    tokio::time::sleep(Duration::from_secs(8)).await;
    r.fake.start_again().await;
    let ready = Instant::now();
    r.fake.apply(
        "pods",
        pod("a", "web-2", "10.244.1.11", json!({"app": "web"})),
    );
    loop {
        let report = r.sync(Duration::from_secs(5)).await;
        assert!(report.result.is_ok(), "{report:?}");
        if r.listing().contains("10.244.1.11") {
            break;
        }
    }
    let took = ready.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "{took:?} after the API was ready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_pods_fail_a_policy_change_waits_and_lands_with_the_pods_in_one_sync() {
    let mut r = start(Duration::from_secs(10)).await;
    // The pod watch ends and its next requests fail; the policy watch keeps working.
    r.fake.fail_next("pods", 3);
    r.fake.close_watches("pods");
    let deadline = Instant::now() + Duration::from_secs(3);
    while r.source.state(Kind::Pod) != WatchState::Failing {
        assert!(Instant::now() < deadline, "the pod watch never failed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    r.fake.apply("networkpolicies", web_policy(&[80, 8080]));
    r.fake.apply(
        "pods",
        pod("a", "web-2", "10.244.1.11", json!({"app": "web"})),
    );
    let report = r.sync(Duration::from_secs(10)).await;
    let text = report
        .result
        .as_ref()
        .expect("the sync succeeds")
        .transaction
        .render();
    assert!(text.contains("8080"), "the policy change:\n{text}");
    assert!(
        text.contains("10.244.1.11"),
        "the pods' missed change:\n{text}"
    );
    let listing = r.listing();
    assert!(listing.contains("8080") && listing.contains("10.244.1.11"));
}

fn node(name: &str, ip: &str, role: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"role": role}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    })
}

/// The Admin policy `guard` for namespace b (b/client): no traffic to the nodes with `role: db`,
/// and a's web pods accepted on `web_port`/TCP.
fn guard(priority: i64, web_port: u16) -> Value {
    json!({
        "metadata": {"name": "guard"},
        "spec": {
            "tier": "Admin",
            "priority": priority,
            "subject": {"namespaces": {"matchLabels": {"team": "b"}}},
            "egress": [
                {"name": "no-db-nodes", "action": "Deny",
                 "to": [{"nodes": {"matchLabels": {"role": "db"}}}]},
                {"name": "web", "action": "Accept",
                 "to": [{"pods": {"namespaceSelector": {"matchLabels": {"team": "a"}},
                                  "podSelector": {"matchLabels": {"app": "web"}}}}],
                 "protocols": [{"tcp": {"destinationPort": {"number": web_port}}}]},
            ],
        },
    })
}

/// The Baseline policy `quiet` for namespace a: no egress beyond the cluster network.
fn quiet() -> Value {
    json!({
        "metadata": {"name": "quiet"},
        "spec": {
            "tier": "Baseline",
            "priority": 100,
            "subject": {"namespaces": {"matchLabels": {"team": "a"}}},
            "egress": [
                {"name": "cluster", "action": "Pass", "to": [{"networks": ["10.244.0.0/16"]}]},
                {"name": "outside", "action": "Deny", "to": [{"networks": ["0.0.0.0/0", "::/0"]}]},
            ],
        },
    })
}

/// [`apply_namespaces_pods_and_policy`], the pod a/db on node-2, Nodes node-1 and node-2
/// (`role: worker`), and (where the API serves them) the ClusterNetworkPolicies guard and quiet.
fn apply_cluster_with_policies(fake: &FakeApi, cnp_served: bool) {
    apply_namespaces_pods_and_policy(fake);
    fake.apply(
        "pods",
        pod_on("node-2", "a", "db", "10.244.2.10", json!({"app": "db"})),
    );
    fake.apply("nodes", node("node-1", "192.168.100.1", "worker"));
    fake.apply("nodes", node("node-2", "192.168.100.2", "worker"));
    if cnp_served {
        fake.apply("clusternetworkpolicies", guard(10, 80));
        fake.apply("clusternetworkpolicies", quiet());
    }
}

/// The operations of a successful sync, asserted to be element operations (those of decision
/// maps on maps starting with `prefix`; see [`reconcile::assert_element_operations`]).
fn assert_elements_only(report: &SyncReport, prefix: &str) -> Vec<Op> {
    let ops = report
        .result
        .as_ref()
        .expect("the sync succeeds")
        .transaction
        .ops
        .clone();
    reconcile::assert_element_operations(&ops, prefix);
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_network_policies_and_nodes_are_enforced_and_changed_by_element_operations() {
    let fake = FakeApi::start().await;
    apply_cluster_with_policies(&fake, true);
    let mut r = run_agent(fake, WatchOptions::new("node-1"), Duration::from_secs(10)).await;
    r.assert_enforces_the_api();
    assert!(
        !r.chains("admin_egress_guard.").is_empty(),
        "guard's peer classes"
    );
    assert!(
        !r.chains("baseline_egress_quiet.").is_empty(),
        "quiet's peer classes"
    );
    r.watching(Kind::ClusterNetworkPolicy).await;

    // An edit of a rule: only guard's decision maps change.
    r.fake.apply("clusternetworkpolicies", guard(10, 8080));
    let report = r.sync(Duration::from_secs(3)).await;
    assert_elements_only(&report, "admin_");
    r.assert_enforces_the_api();

    // A pod added where ClusterNetworkPolicies select it and peer it: element operations.
    r.fake.apply(
        "pods",
        pod("a", "web-2", "10.244.1.11", json!({"app": "web"})),
    );
    let report = r.sync(Duration::from_secs(3)).await;
    let ops = assert_elements_only(&report, "");
    assert!(
        ops.iter().any(|op| matches!(op, Op::AddElements(s, e)
            if s.starts_with("baseline_egress_subjects") && e.iter().any(|e| e.to_string() == "10.244.1.11"))),
        "the new pod is one of quiet's subjects: {ops:?}"
    );
    r.assert_enforces_the_api();

    // A Node labelled role=db: its address joins guard's Deny rule.
    r.fake.apply("nodes", node("node-2", "192.168.100.2", "db"));
    let report = r.sync(Duration::from_secs(3)).await;
    let ops = report
        .result
        .as_ref()
        .expect("the sync succeeds")
        .transaction
        .ops
        .clone();
    let node_2: std::net::IpAddr = "192.168.100.2".parse().expect("ip");
    // Its address leads to a peer class (new: no Node had the label) whose maps drop.
    reconcile::assert_joins_a_dropping_class(&ops, &r.kernel.table().expect("a table"), node_2);
    r.assert_enforces_the_api();
    let enforced = r.kernel.table();

    // An invalid edit (a priority above 1000): reported, left out, the last valid version stays.
    r.fake.apply("clusternetworkpolicies", guard(5000, 22));
    r.no_sync_within(Duration::from_millis(300)).await;
    assert_eq!(r.kernel.table(), enforced);
    let events: Vec<Value> = r
        .fake
        .events()
        .into_iter()
        .map(|(_, _, e)| e)
        .filter(|e| e["reason"] == "InvalidClusterNetworkPolicy")
        .collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["type"], "Warning");
    assert_eq!(events[0]["regarding"]["name"], "guard");
    let note = events[0]["note"].as_str().expect("a note");
    assert!(note.starts_with("field spec.priority: "), "{note}");
    assert!(r.health.is_ready());

    // Fixed again: enforced as written.
    r.fake.apply("clusternetworkpolicies", guard(10, 22));
    r.sync(Duration::from_secs(3)).await;
    r.assert_enforces_the_api();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_network_policies_served_at_v1alpha2_only_are_enforced() {
    let fake = FakeApi::start_serving(kube_support::CNP_V1ALPHA2).await;
    apply_cluster_with_policies(&fake, true);
    let mut r = run_agent(fake, WatchOptions::new("node-1"), Duration::from_secs(10)).await;
    r.assert_enforces_the_api();
    assert!(
        !r.chains("admin_egress_guard.").is_empty(),
        "guard's peer classes"
    );
    r.fake.apply("clusternetworkpolicies", guard(10, 8080));
    let report = r.sync(Duration::from_secs(3)).await;
    assert_elements_only(&report, "admin_");
    r.assert_enforces_the_api();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_crd_the_agent_enforces_network_policies_and_then_a_crd_installed_later() {
    let fake = FakeApi::start_serving(&[]).await;
    apply_cluster_with_policies(&fake, false);
    let mut options = WatchOptions::new("node-1");
    options.rediscover_interval = Duration::from_millis(300);
    // The longest wait for the next discovery (the interval and its jitter), and time to list
    // and sync.
    let within = options.rediscover_interval * 11 / 10 + Duration::from_millis(700);
    // Ready on the first sync: nothing waits for the absent kind.
    let mut r = run_agent(fake, options, Duration::from_secs(10)).await;
    assert!(r.health.is_ready());
    assert_eq!(
        r.source.state(Kind::ClusterNetworkPolicy),
        WatchState::Absent
    );
    assert_eq!(r.source.watch_errors(Kind::ClusterNetworkPolicy), 0);
    r.assert_enforces_the_api();
    assert!(r.chains("admin").is_empty() && r.chains("baseline").is_empty());
    assert!(r.listing().contains("10.244.1.10"));

    // The CRD installed, and policies created: enforced within the rediscovery interval.
    r.fake.serve_cnp_versions(kube_support::CNP_V1BETA1);
    r.fake.apply("clusternetworkpolicies", guard(10, 80));
    r.fake.apply("clusternetworkpolicies", quiet());
    let installed = Instant::now();
    loop {
        let report = r.sync(Duration::from_secs(2)).await;
        assert!(report.result.is_ok(), "{report:?}");
        if !r.chains("baseline_egress_quiet").is_empty() {
            break;
        }
    }
    assert!(installed.elapsed() < within, "{:?}", installed.elapsed());
    r.assert_enforces_the_api();
    r.watching(Kind::ClusterNetworkPolicy).await;

    // The CRD deleted: its policies go with it.
    r.fake.serve_cnp_versions(&[]);
    while !(r.chains("admin").is_empty() && r.chains("baseline").is_empty()) {
        r.sync(Duration::from_secs(3)).await;
    }
    r.assert_enforces_the_api();
    let deadline = Instant::now() + Duration::from_secs(3);
    while r.source.state(Kind::ClusterNetworkPolicy) != WatchState::Absent {
        assert!(Instant::now() < deadline, "the kind is absent again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(r.source.watch_errors(Kind::ClusterNetworkPolicy), 0);
}

/// [`apply_namespaces_pods_and_policy`] and the pods a/web-3 to a/web-6: six pods, more than a page
/// of two.
fn apply_six_pods(fake: &FakeApi) {
    apply_namespaces_pods_and_policy(fake);
    for i in 3..=6 {
        fake.apply(
            "pods",
            pod(
                "a",
                &format!("web-{i}"),
                &format!("10.244.1.{}", 10 + i),
                json!({"app": "web"}),
            ),
        );
    }
}

fn in_pages_of_two() -> WatchOptions {
    let mut options = WatchOptions::new("node-1");
    options.page_size = 2;
    options
}

/// Waits until the pods were listed again `count` times after a 410 and watch again.
async fn relisted(r: &Running, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.source.relists(Kind::Pod, RelistReason::Expired) < count
        || r.source.state(Kind::Pod) != WatchState::Watching
    {
        assert!(Instant::now() < deadline, "the pods were not listed again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_relist_that_changes_nothing_sends_nothing_and_keeps_the_incremental_state() {
    let fake = FakeApi::start().await;
    apply_six_pods(&fake);
    let mut r = run_agent(fake, in_pages_of_two(), Duration::from_secs(10)).await;
    r.assert_enforces_the_api();
    let transactions = r.kernel.committed().len();

    // Every watch of pods answered 410: the pods are listed again, in three pages, unchanged.
    r.fake.expire("pods");
    relisted(&r, 1).await;
    r.no_sync_within(Duration::from_millis(300)).await;
    assert_eq!(r.kernel.committed().len(), transactions);

    // The next change is applied to the node's ruleset as it stood: no full compile.
    r.fake.apply(
        "pods",
        pod("a", "web-7", "10.244.1.17", json!({"app": "web"})),
    );
    let report = r.sync(Duration::from_secs(3)).await;
    assert!(report.result.is_ok(), "{report:?}");
    assert!(!report.full_compile, "{report:?}");
    assert_eq!(r.kernel.committed().len(), transactions + 1);
    r.assert_enforces_the_api();

    // A relist that does change things (a pod deleted while the API was down) is synced, the node
    // compiled in full.
    r.fake.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    while r.source.state(Kind::Pod) != WatchState::Failing {
        assert!(Instant::now() < deadline, "the pod watch never failed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    r.fake.delete("pods", "a", "web-3");
    r.fake.start_again().await;
    let report = r.sync(Duration::from_secs(10)).await;
    assert!(report.result.is_ok(), "{report:?}");
    assert!(report.full_compile, "{report:?}");
    r.assert_enforces_the_api();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_over_an_unchanged_paged_cluster_sends_nothing_to_the_kernel() {
    let fake = FakeApi::start().await;
    apply_six_pods(&fake);
    let first = run_agent(fake, in_pages_of_two(), Duration::from_secs(10)).await;
    first.assert_enforces_the_api();
    let enforced = first.kernel.table().expect("a table");

    // A new agent on a node whose kernel holds that table: it lists everything again, page by
    // page, compiles in full, and finds nothing to change.
    let kernel = FakeKernel::with_table(enforced.clone());
    let dataplane = Dataplane::from_kernel(kernel.clone()).expect("the fake lists");
    let mut config = AgentConfig::new("node-1");
    config.debounce = DebounceConfig {
        interval: Duration::from_millis(20),
        ..DebounceConfig::DEFAULT
    };
    let (otx, mut reports) = mpsc::unbounded_channel();
    let health = Arc::new(Health::default());
    let agent =
        Agent::new(config, dataplane, Arc::new(Metrics::new()), health.clone()).with_observer(otx);
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(agent.run(rx));
    tokio::spawn(run(
        first.fake.client(),
        in_pages_of_two(),
        tx,
        SourceMetrics::new(),
    ));
    let report = tokio::time::timeout(Duration::from_secs(5), reports.recv())
        .await
        .expect("a sync in time")
        .expect("the agent runs");
    assert!(report.result.is_ok(), "{report:?}");
    assert!(report.full_compile);
    assert!(!report.nft_called, "{report:?}");
    assert!(kernel.committed().is_empty(), "{:?}", kernel.committed());
    assert_eq!(kernel.table(), Some(enforced));
    assert!(health.is_ready());
}
