//! How soon after the Kubernetes API comes back a change made there reaches the agent's store: the
//! Kubernetes source against the fake API server of the tests (tests/kube_support), through kube's
//! real client, after (a) a 20 s outage, (b) a compaction (every watch answered 410), (c) a 3 s
//! restart. Each run: the API goes away (or compacts), comes back, a pod is created at once; the
//! time measured is from the API's readiness to the Pod list (or watch event) that holds the new
//! pod. Prints each run and the median.
//!
//! `cargo bench --bench api_recovery` (no root needed; about two minutes).

#[path = "../tests/kube_support/mod.rs"]
mod kube_support;
mod support;

use std::time::{Duration, Instant};

use kube_support::FakeApi;
use nftpolicy::source::kube::{run, SourceMetrics, WatchOptions};
use nftpolicy::source::{Kind, Object, Update};
use serde_json::json;
use support::{block_on, percentile};
use tokio::sync::mpsc;

fn pod(name: &str, ip: &str) -> serde_json::Value {
    json!({
        "metadata": {"namespace": "a", "name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

/// Waits for the update that carries pod `name`: an Upsert, or a page of a Pod list that holds it.
async fn until_pod(rx: &mut mpsc::Receiver<Update>, name: &str) {
    loop {
        let update = rx.recv().await.expect("the source runs");
        let found = match &update {
            Update::Upsert(Object::Pod(p)) => &*p.id.name == name,
            Update::ListPage {
                kind: Kind::Pod,
                objects,
                ..
            } => objects
                .iter()
                .any(|o| matches!(o, Object::Pod(p) if &*p.id.name == name)),
            _ => false,
        };
        if found {
            return;
        }
    }
}

#[derive(Clone, Copy)]
enum Scenario {
    Outage(Duration),
    Compaction,
}

async fn measure(scenario: Scenario, runs: usize) -> Vec<Duration> {
    let fake = FakeApi::start().await;
    fake.apply(
        "namespaces",
        json!({"metadata": {"name": "a", "labels": {}}}),
    );
    fake.apply("pods", pod("web", "10.244.1.10"));
    let (tx, mut rx) = mpsc::channel(1024);
    let source = tokio::spawn(run(
        fake.client(),
        WatchOptions::new("node-1"),
        tx,
        SourceMetrics::new(),
    ));
    until_pod(&mut rx, "web").await;
    let mut times = Vec::new();
    for i in 0..runs {
        // Let the watches settle before each run.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let name = format!("new-{i}");
        let ready = match scenario {
            Scenario::Outage(down) => {
                fake.stop();
                tokio::time::sleep(down).await;
                fake.start_again().await;
                Instant::now()
            }
            Scenario::Compaction => {
                for plural in ["namespaces", "pods", "networkpolicies"] {
                    fake.expire(plural);
                }
                Instant::now()
            }
        };
        fake.apply("pods", pod(&name, &format!("10.244.2.{}", i + 1)));
        until_pod(&mut rx, &name).await;
        times.push(ready.elapsed());
    }
    drop(rx);
    let _ = source.await;
    times
}

fn report(what: &str, mut times: Vec<Duration>) {
    let each: Vec<String> = times
        .iter()
        .map(|t| format!("{:.0} ms", t.as_secs_f64() * 1e3))
        .collect();
    times.sort();
    println!(
        "{what}: median {:.0} ms, max {:.0} ms ({})",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 1.0).as_secs_f64() * 1e3,
        each.join(", ")
    );
}

fn main() {
    block_on(async {
        report(
            "after a 20 s outage",
            measure(Scenario::Outage(Duration::from_secs(20)), 3).await,
        );
        report(
            "after a 3 s restart",
            measure(Scenario::Outage(Duration::from_secs(3)), 5).await,
        );
        report(
            "after a compaction",
            measure(Scenario::Compaction, 10).await,
        );
    });
}
