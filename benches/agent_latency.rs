//! Event-to-kernel latency of the agent for a pod add: from the source update entering the reconcile
//! loop to the transaction committed by nft, on clusters of 1k and 10k pods (generated workloads),
//! in a throwaway network namespace. Needs root and nft.
//!
//! `cargo bench --bench agent_latency` (as root). Prints medians and p99 over 60 pod adds.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nftpolicy::agent::{Agent, AgentConfig, Health};
use nftpolicy::dataplane::Dataplane;
use nftpolicy::kernel::NftKernel;
use nftpolicy::metrics::Metrics;
use nftpolicy::source::{Kind, Object, Update};
use policy_compiler::generate::{workload, WorkloadSize};
use policy_compiler::model::ObjectRef;
use policylab::lab::Netns;
use support::{block_on, percentile};
use tokio::sync::mpsc;

async fn measure(size: WorkloadSize, debounce: Duration) {
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
    for kind in Kind::ENFORCED {
        let objects = cluster
            .keys(kind)
            .iter()
            .filter_map(|key| cluster.get(kind, key))
            .collect();
        tx.send(Update::Reset {
            kind,
            objects,
            invalid: vec![],
        })
        .await
        .expect("agent");
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
    let mut latencies = Vec::new();
    let mut ops = Vec::new();
    for i in 0..60u32 {
        let mut pod = template.clone();
        pod.id = ObjectRef::new(template.id.namespace.clone(), format!("bench-{i}"));
        pod.ips = vec![std::net::IpAddr::from([
            10,
            200,
            (i / 250) as u8,
            (1 + i % 250) as u8,
        ])];
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
        "{} pods, {} policies, {} nodes, debounce {} ms: full load {} ms ({} ops); pod add event->kernel p50 {:.1} ms, p99 {:.1} ms; ops per pod add: median {}",
        size.pods,
        size.policies,
        size.nodes,
        debounce.as_millis(),
        full.as_millis(),
        r.operations,
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        ops[ops.len() / 2],
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    block_on(async {
        for (pods, policies, namespaces, nodes) in [(1_000, 100, 10, 5), (10_000, 1_000, 100, 50)] {
            let size = WorkloadSize {
                namespaces,
                pods,
                policies,
                nodes,
            };
            for debounce in [Duration::ZERO, Duration::from_millis(50)] {
                measure(size, debounce).await;
            }
        }
    });
}
