//! Offline review benchmarks (criterion): `policyc connections` on generated clusters, computed per
//! class of alike pods, side by side with the per-pod baseline (every pod a party and a class of
//! its own), from the parsed cluster (reading manifests is measured apart, by the command).
//!
//! `cargo bench -p policy-compiler --bench review`. Class and connection counts are printed once.
//! Medium is also measured with 100 ClusterNetworkPolicies of 10 rules.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use policy_compiler::analysis::connectivity::Connectivity;
use policy_compiler::diff::{Diff, Version};
use policy_compiler::generate::guardrails::with_guardrails;
use policy_compiler::generate::{pod_cidrs, workload, WorkloadSize};
use policy_compiler::model::{PolicyPort, PortSpec, Protocol};
use policy_compiler::workload::{materialize, PodCidrs};
use policy_compiler::ClusterState;

fn connections(c: &mut Criterion) {
    let mut group = c.benchmark_group("connections");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let cidrs = pod_cidrs();
    for (name, size, baseline) in [
        ("small", WorkloadSize::SMALL, true),
        ("medium", WorkloadSize::MEDIUM, true),
        ("large", WorkloadSize::LARGE, false),
    ] {
        let mut cluster = workload(42, size);
        materialize(&mut cluster, &cidrs);
        let once = Connectivity::compute(&cluster, &cidrs);
        eprintln!(
            "{name}: {} pods, {} parties, {} classes, {} connections",
            cluster.participating_pods().count(),
            once.parties().len(),
            once.class_count(),
            once.len()
        );
        group.bench_function(format!("{name}/classes"), |b| {
            b.iter(|| black_box(Connectivity::compute(&cluster, &cidrs)))
        });
        if baseline {
            group.bench_function(format!("{name}/per_pod"), |b| {
                b.iter(|| black_box(Connectivity::compute_per_pod(&cluster, &cidrs)))
            });
        }
    }
    group.finish();
}

fn connections_with_cluster_policies(c: &mut Criterion) {
    let mut group = c.benchmark_group("connections");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let cidrs = pod_cidrs();
    // 100 guardrails of 10 rules each, as `policyc generate --cluster-policies 100` writes them.
    let mut cluster = with_guardrails(
        &workload(42, WorkloadSize::MEDIUM),
        42,
        100,
        WorkloadSize::MEDIUM.nodes,
    );
    materialize(&mut cluster, &cidrs);
    let once = Connectivity::compute(&cluster, &cidrs);
    eprintln!(
        "medium with 100 ClusterNetworkPolicies: {} parties, {} classes, {} connections",
        once.parties().len(),
        once.class_count(),
        once.len()
    );
    group.bench_function("medium_cluster_policies/classes", |b| {
        b.iter(|| black_box(Connectivity::compute(&cluster, &cidrs)))
    });
    // What lint's ClusterNetworkPolicy rules judge by.
    let effects = once.cluster_rule_effects();
    eprintln!(
        "medium with 100 ClusterNetworkPolicies: {} of {} rules decide something, {} ties",
        effects.rules.iter().filter(|e| e.decides).count(),
        effects.rules.len(),
        effects.ties.len()
    );
    group.bench_function("medium_cluster_policies/rule_effects", |b| {
        b.iter(|| black_box(once.cluster_rule_effects()))
    });
    group.finish();
}

/// Both versions' connectivity and the diff between them, as `policyc diff` computes them.
fn connectivity_diff(old: &ClusterState, new: &ClusterState, cidrs: &PodCidrs) -> Diff {
    let (a, b) = (
        Connectivity::compute(old, cidrs),
        Connectivity::compute(new, cidrs),
    );
    policy_compiler::diff::diff(Version::new(old, &a), Version::new(new, &b))
}

/// `diff` of medium against medium with one policy edited: both connectivities and the diff, as
/// the command computes them.
fn diff(c: &mut Criterion) {
    let mut group = c.benchmark_group("diff");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let cidrs = pod_cidrs();
    let mut old = workload(42, WorkloadSize::MEDIUM);
    materialize(&mut old, &cidrs);
    let mut new = old.clone();
    // The partner egress of one namespace's backends gets a wider port range.
    let mut edited = new
        .policies()
        .values()
        .find(|p| p.id.name.starts_with("egress-partners"))
        .expect("an egress-partners policy")
        .clone();
    edited.egress[0].ports = vec![PolicyPort {
        protocol: Protocol::Tcp,
        port: PortSpec::Range(30000, 30200),
    }];
    new.upsert_policy(edited);
    let d = connectivity_diff(&old, &new, &cidrs);
    let changes = d.added.len() + d.removed.len() + d.changed.len();
    eprintln!("medium, one policy edited: {changes} changes");
    group.bench_function("medium/one_policy_edited", |b| {
        b.iter(|| black_box(connectivity_diff(&old, &new, &cidrs)))
    });
    group.finish();
}

criterion_group!(
    benches,
    connections,
    connections_with_cluster_policies,
    diff
);
criterion_main!(benches);
