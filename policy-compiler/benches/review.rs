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

/// 100 ClusterNetworkPolicies of 10 rules each over the generated workloads' labels (`team` and
/// `env` on namespaces, `tier` on pods): subjects by team or by tier, every action, namespace,
/// pod and network peers, rules with and without protocols, five priorities (so ties occur).
fn cluster_policies(cluster: &mut ClusterState) {
    use policy_compiler::model::{
        Action, ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, PodsSelector, Subject,
        Tier,
    };
    use policy_compiler::selector::LabelSelector;
    let teams = ["payments", "search", "web", "data", "platform"];
    let envs = ["prod", "staging", "dev"];
    let tiers = ["frontend", "backend", "db"];
    let networks = [
        "0.0.0.0/0",
        "10.64.0.0/16",
        "192.0.2.0/24",
        "169.254.169.254/32",
    ];
    for i in 0..100usize {
        let subject = if i % 2 == 0 {
            Subject::Namespaces(LabelSelector::from_labels([("team", teams[i % 5])]))
        } else {
            Subject::Pods(PodsSelector {
                namespaces: LabelSelector::from_labels([("env", envs[i % 3])]),
                pods: LabelSelector::from_labels([("tier", tiers[i % 3])]),
            })
        };
        let rule = |k: usize, egress: bool| {
            let peer = match (k + i) % 4 {
                0 => ClusterPeer::Namespaces(LabelSelector::from_labels([("env", envs[k % 3])])),
                1 => ClusterPeer::Pods(PodsSelector {
                    namespaces: LabelSelector::from_labels([("team", teams[k % 5])]),
                    pods: LabelSelector::from_labels([("tier", tiers[k % 3])]),
                }),
                2 if egress => ClusterPeer::Networks(vec![networks[k % 4].parse().expect("cidr")]),
                _ => ClusterPeer::Namespaces(LabelSelector::everything()),
            };
            ClusterRule {
                name: Some(format!("r{k}")),
                action: [Action::Accept, Action::Deny, Action::Pass][(i + k) % 3],
                peers: vec![peer],
                protocols: if k % 3 == 0 {
                    Vec::new()
                } else {
                    vec![ClusterPort::Range {
                        protocol: Protocol::Tcp,
                        first: 8000 + k as u16,
                        last: 8010 + k as u16,
                    }]
                },
            }
        };
        cluster.upsert_cluster_policy(ClusterNetworkPolicy {
            name: format!("cnp-{i:03}"),
            tier: if i % 4 == 3 {
                Tier::Baseline
            } else {
                Tier::Admin
            },
            priority: (i % 5) as u16 * 10,
            subject,
            ingress: (0..5).map(|k| rule(k, false)).collect(),
            egress: (5..10).map(|k| rule(k, true)).collect(),
        });
    }
}

fn connections_with_cluster_policies(c: &mut Criterion) {
    let mut group = c.benchmark_group("connections");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let cidrs = pod_cidrs();
    let mut cluster = workload(42, WorkloadSize::MEDIUM);
    materialize(&mut cluster, &cidrs);
    cluster_policies(&mut cluster);
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
