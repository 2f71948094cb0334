//! Compiler benchmarks (criterion): full compiles of one node and of all nodes on generated
//! workloads, and incremental changes (pod added, pod relabelled, policy edited) measured as the time
//! to the new desired ruleset plus the diff against the committed one.
//!
//! `cargo bench -p policy-compiler --bench compile`. Transaction sizes are printed once per change.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use policy_compiler::generate::guardrails::with_guardrails;
use policy_compiler::generate::{workload, WorkloadSize};
use policy_compiler::model::{Direction, ObjectRef, PolicyPort, PortSpec, Protocol};
use policy_compiler::nft::transaction::Transaction;
use policy_compiler::plan::{compile_all, compile_node, policy_chain_name};
use policy_compiler::ClusterState;

const NODE: &str = "node-0";

fn full(c: &mut Criterion) {
    let mut group = c.benchmark_group("full");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for (name, size) in [
        ("small", WorkloadSize::SMALL),
        ("medium", WorkloadSize::MEDIUM),
        ("large", WorkloadSize::LARGE),
    ] {
        let cluster = workload(42, size);
        group.bench_function(format!("{name}/one_node"), |b| {
            b.iter(|| black_box(compile_node(&cluster, NODE)))
        });
        if name != "large" {
            group.bench_function(format!("{name}/all_nodes"), |b| {
                b.iter(|| black_box(compile_all(&cluster)))
            });
        }
    }
    // The medium workload with 100 guardrail ClusterNetworkPolicies of 10 rules each.
    let medium = workload(42, WorkloadSize::MEDIUM);
    let tiered = with_guardrails(&medium, 42, 100, WorkloadSize::MEDIUM.nodes);
    group.bench_function("medium_100_cnps/one_node", |b| {
        b.iter(|| black_box(compile_node(&tiered, NODE)))
    });
    group.finish();
}

/// The changes measured: each turns the cluster into a new one.
fn changes(cluster: &ClusterState) -> Vec<(&'static str, ClusterState)> {
    let local = cluster
        .pods()
        .values()
        .find(|p| p.node.as_deref() == Some(NODE) && &*p.id.namespace != "kube-system")
        .expect("a pod on node-0")
        .clone();
    let mut added = cluster.clone();
    let mut pod = local.clone();
    pod.id = ObjectRef::new(local.id.namespace.clone(), "bench-new-pod");
    pod.ips = vec![IpAddr::from([10, 250, 0, 1])];
    added.upsert_pod(pod);

    let mut relabelled = cluster.clone();
    let tier = if local.labels.get("tier") == Some("frontend") {
        "backend"
    } else {
        "frontend"
    };
    if let Some(p) = relabelled.pod_mut(&local.id) {
        p.labels.insert("tier", tier);
    }

    // A policy that the node enforces (its chain is in the node's ruleset) gets a port on its first
    // ingress rule.
    let committed = compile_node(cluster, NODE);
    let mut edited = cluster.clone();
    let policy = cluster
        .policies()
        .values()
        .find(|p| {
            !p.ingress.is_empty()
                && committed
                    .chains
                    .contains_key(&policy_chain_name(&p.id, Direction::Ingress))
        })
        .expect("a policy with ingress rules enforced on node-0")
        .clone();
    let mut changed = policy.clone();
    changed.ingress[0].ports = vec![PolicyPort {
        protocol: Protocol::Tcp,
        port: PortSpec::Range(8443, 8443),
    }];
    edited.upsert_policy(changed);
    vec![
        ("pod_added", added),
        ("pod_relabelled", relabelled),
        ("policy_edited", edited),
    ]
}

fn incremental(c: &mut Criterion) {
    let mut group = c.benchmark_group("incremental_medium");
    group.sample_size(30);
    let cluster = workload(42, WorkloadSize::MEDIUM);
    let committed = compile_node(&cluster, NODE);
    for (name, next) in changes(&cluster) {
        let tx = Transaction::diff(&committed, &compile_node(&next, NODE));
        eprintln!(
            "{name}: transaction of {} operations ({:?})",
            tx.ops.len(),
            tx.stats()
        );
        group.bench_function(name, |b| {
            b.iter_batched(
                || next.clone(),
                |next| {
                    let desired = compile_node(&next, NODE);
                    black_box(Transaction::diff(&committed, &desired))
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, full, incremental);
criterion_main!(benches);
