//! The agent end to end without root: the Kubernetes source (kube's client) on the fake API server
//! (tests/kube_support) feeding the reconcile loop on the fake kernel. The API goes away and comes
//! back, and one kind fails while the others keep working: what the kernel holds, and when.

mod kube_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_support::FakeApi;
use nftpolicy::agent::{Agent, AgentConfig, Health, SyncReport};
use nftpolicy::dataplane::Dataplane;
use nftpolicy::kernel::{FakeKernel, Kernel};
use nftpolicy::metrics::Metrics;
use nftpolicy::source::kube::{run, SourceMetrics, WatchOptions, WatchState};
use nftpolicy::source::Kind;
use serde_json::{json, Value};
use tokio::sync::mpsc;

fn namespace(name: &str, team: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"team": team}}})
}

fn pod(namespace: &str, name: &str, ip: &str, labels: Value) -> Value {
    json!({
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 80}]}]},
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
    reports: mpsc::UnboundedReceiver<SyncReport>,
}

async fn start(relist_hold: Duration) -> Running {
    let fake = FakeApi::start().await;
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
    let kernel = FakeKernel::new();
    let dataplane = Dataplane::from_kernel(kernel.clone()).expect("the fake lists");
    let mut config = AgentConfig::new("node-1");
    config.debounce = Duration::from_millis(20);
    config.relist_hold = relist_hold;
    let (otx, reports) = mpsc::unbounded_channel();
    let agent = Agent::new(
        config,
        dataplane,
        Arc::new(Metrics::new()),
        Arc::new(Health::default()),
    )
    .with_observer(otx);
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(agent.run(rx));
    let source = SourceMetrics::new();
    tokio::spawn(run(
        fake.client(),
        WatchOptions::new("node-1"),
        tx,
        source.clone(),
    ));
    let mut running = Running {
        fake,
        kernel,
        source,
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
