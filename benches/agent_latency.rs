//! Event-to-kernel latency of the agent for a pod add: from the source update entering the reconcile
//! loop to the transaction committed to the kernel, on clusters of 1k, 10k and 100k pods (generated workloads),
//! in a throwaway network namespace. Needs root and nft.
//!
//! `cargo bench --bench agent_latency` (as root; `-- medium` for one size). On 1k pods and medium
//! for each debounce (none; the fixed 50 ms wait of earlier versions; the default, adaptive one),
//! at large for the default one, in one run, side by side:
//!
//! - `isolated`: 60 pod adds, each 100 ms after the previous one is in the kernel (a quiet
//!   cluster): medians and p99;
//! - `back-to-back`: 60 pod adds, each sent as soon as the previous one is in the kernel;
//! - `stream`: 200 pod adds, one every 2 ms (a deployment scaled up): how many syncs carried them,
//!   and each pod's latency to the sync whose transaction added its address.

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nftpolicy::agent::{Agent, AgentConfig, Health, SyncReport};
use nftpolicy::dataplane::Dataplane;
use nftpolicy::debounce::DebounceConfig;
use nftpolicy::kernel::NftKernel;
use nftpolicy::metrics::Metrics;
use nftpolicy::source::{resets, Object, Update};
use policy_compiler::generate::{workload, WorkloadSize};
use policy_compiler::model::{ObjectRef, Pod};
use policylab::lab::Netns;
use support::{block_on, percentile};
use tokio::sync::mpsc;

/// The debounces compared.
fn debounces() -> [(&'static str, DebounceConfig); 3] {
    [
        ("none", DebounceConfig::fixed(Duration::ZERO)),
        (
            "fixed 50 ms",
            DebounceConfig::fixed(Duration::from_millis(50)),
        ),
        ("default (1/50/250 ms)", DebounceConfig::DEFAULT),
    ]
}

/// A copy of `template` named `bench-<i>` at an address of its own.
fn pod(template: &Pod, i: u32) -> (Pod, IpAddr) {
    let mut pod = template.clone();
    pod.id = ObjectRef::new(template.id.namespace.clone(), format!("bench-{i}"));
    let ip = IpAddr::from([10, 200, (i / 250) as u8, (1 + i % 250) as u8]);
    pod.ips = vec![ip];
    (pod, ip)
}

/// Whether a sync's transaction mentions `ip` (as a set or map element).
fn mentions(report: &SyncReport, ip: IpAddr) -> bool {
    let needle = ip.to_string();
    report.result.as_ref().is_ok_and(|r| {
        r.transaction
            .ops
            .iter()
            .any(|op| format!("{op:?}").contains(&needle))
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn measure(size: WorkloadSize, name: &str, debounce: DebounceConfig) {
    let ns = Netns::create("latency").unwrap_or_else(|e| panic!("{e}"));
    let cluster = workload(42, size);
    let node = "node-0";
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (tx, rx) = mpsc::channel(1024);
    let (otx, mut reports) = mpsc::unbounded_channel();
    let mut config = AgentConfig::new(node);
    config.debounce = debounce;
    let agent = Agent::new(
        config,
        Dataplane::new(NftKernel::in_netns(ns.name())),
        metrics,
        health,
    )
    .with_observer(otx);
    tokio::spawn(agent.run(rx));
    let started = Instant::now();
    // One Reset per kind the agent watches, as the Kubernetes source sends after listing.
    for update in resets(&cluster) {
        tx.send(update).await.expect("agent");
    }
    let first = reports.recv().await.expect("first sync");
    let full = started.elapsed();
    let r = first.result.expect("full load");
    let template = cluster
        .pods()
        .values()
        .find(|p| p.node.as_deref() == Some(node))
        .expect("a pod on node-0")
        .clone();
    let mut next = 0u32;
    // One pod at a time, each sent `gap` after the previous one is in the kernel.
    for (scenario, gap) in [
        ("isolated", Duration::from_millis(100)),
        ("back-to-back", Duration::ZERO),
    ] {
        let mut latencies = Vec::new();
        let mut ops = Vec::new();
        for _ in 0..60 {
            tokio::time::sleep(gap).await;
            let (pod, _) = pod(&template, next);
            next += 1;
            let t = Instant::now();
            tx.send(Update::Upsert(Object::Pod(pod)))
                .await
                .expect("agent");
            let report = reports.recv().await.expect("sync");
            latencies.push(t.elapsed());
            ops.push(report.result.expect("sync ok").operations);
        }
        latencies.sort();
        ops.sort();
        println!(
            "{} pods, {} policies, {} nodes, debounce {name}: full load {} ms ({} ops); {scenario} pod add event->kernel p50 {:.1} ms, p99 {:.1} ms; ops per pod add: median {}",
            size.pods,
            size.policies,
            size.nodes,
            full.as_millis(),
            r.operations,
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ops[ops.len() / 2],
        );
    }
    // A stream: 200 pods, one every 2 ms, while the agent syncs.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut sent = Vec::new();
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(report) = reports.recv().await {
            seen.push((Instant::now(), report));
        }
        seen
    });
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    for _ in 0..200 {
        tick.tick().await;
        let (pod, ip) = pod(&template, next);
        next += 1;
        sent.push((Instant::now(), ip));
        tx.send(Update::Upsert(Object::Pod(pod)))
            .await
            .expect("agent");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(tx);
    let seen = collector.await.expect("collector");
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(t, ip)| {
            seen.iter()
                .find(|(at, r)| at >= t && mentions(r, *ip))
                .map(|(at, _)| *at - *t)
        })
        .collect();
    latencies.sort();
    if latencies.is_empty() {
        println!(
            "{} pods, debounce {name}: stream: no pod address found in the transactions",
            size.pods
        );
        return;
    }
    println!(
        "{} pods, {} policies, {} nodes, debounce {name}: stream of 200 pod adds in {} ms: {} syncs, {} pods traced; event->kernel p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        size.pods,
        size.policies,
        size.nodes,
        sent.last().map_or(0, |(t, _)| (*t - sent[0].0).as_millis()),
        seen.len(),
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters sizes by name (`1k`, `medium`,
    // `large`).
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    block_on(async {
        let small = WorkloadSize {
            namespaces: 10,
            pods: 1_000,
            policies: 100,
            nodes: 5,
        };
        for (name, size) in [
            ("1k", Some(small)),
            ("medium", WorkloadSize::named("medium")),
            ("large", WorkloadSize::named("large")),
        ] {
            if filter.as_deref().is_some_and(|f| f != name) {
                continue;
            }
            let size = size.expect("a named size");
            for (debounce_name, debounce) in debounces() {
                // At large, the default debounce alone: the others are compared on the smaller
                // clusters, and the full load takes a while.
                if name == "large" && debounce != DebounceConfig::DEFAULT {
                    continue;
                }
                measure(size, debounce_name, debounce).await;
            }
        }
    });
}
