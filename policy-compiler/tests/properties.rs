//! Property tests on generated clusters: the rendered rulesets, run through the nft interpreter,
//! agree with the evaluator on every flow; rendering is deterministic.

use policy_compiler::analysis::PortProto;
use policy_compiler::generate::{cluster, Shape};
use policy_compiler::plan::compile_all;
use policy_compiler::verify::disagreements;
use proptest::prelude::*;

fn ports() -> Vec<PortProto> {
    [
        "80/TCP", "81/TCP", "8080/TCP", "8001/TCP", "53/UDP", "54/UDP", "80/SCTP", "80/UDP",
    ]
    .iter()
    .map(|p| p.parse().expect("port"))
    .collect()
}

fn outside() -> Vec<std::net::IpAddr> {
    [
        "192.0.2.7",
        "10.0.1.200",
        "10.0.0.11",
        "198.51.100.1",
        "fd00:0:1::99",
        "fd00:5::1",
        "2001:db8::1",
    ]
    .iter()
    .map(|ip| ip.parse().expect("ip"))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn rulesets_agree_with_the_evaluator(seed in any::<u64>(), pods in 2usize..9, policies in 0usize..5) {
        let c = cluster(seed, Shape { pods, policies, nodes: 2 });
        let rulesets = compile_all(&c);
        let bad = disagreements(&c, &rulesets, &ports(), &outside());
        prop_assert!(bad.is_empty(), "seed {seed} pods {pods} policies {policies}: {bad:#?}\n{c:#?}");
    }

    #[test]
    fn rendering_is_deterministic(seed in any::<u64>()) {
        let c = cluster(seed, Shape::default());
        let first: Vec<String> = compile_all(&c).values().map(|r| r.render()).collect();
        let again: Vec<String> = compile_all(&c.clone()).values().map(|r| r.render()).collect();
        prop_assert_eq!(first, again);
    }
}

/// The outside addresses, and the nodes' own.
fn outside_and_nodes() -> Vec<std::net::IpAddr> {
    let mut out = outside();
    out.extend((0..2).map(policy_compiler::generate::cluster_policies::node_address));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// With ClusterNetworkPolicies of both tiers around the NetworkPolicies: the rendered tiers
    /// (dispatch maps, combination chains, decision maps, the input hook for a pod's own node)
    /// agree with the evaluator on every flow, the nodes' addresses included.
    #[test]
    fn tiered_rulesets_agree_with_the_evaluator(
        seed in any::<u64>(),
        pods in 2usize..9,
        policies in 0usize..4,
        cluster_policies in 1usize..5,
    ) {
        let c = cluster(seed, Shape { pods, policies, nodes: 2 });
        let c = policy_compiler::generate::cluster_policies::with_cluster_policies(&c, seed, cluster_policies, 2);
        let rulesets = compile_all(&c);
        let bad = disagreements(&c, &rulesets, &ports(), &outside_and_nodes());
        prop_assert!(
            bad.is_empty(),
            "seed {seed} pods {pods} policies {policies} cluster policies {cluster_policies}: {bad:#?}\n{:#?}\n{:#?}",
            c.cluster_policies(),
            c
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The label index resolves every peer and podSelector to exactly the pods a full scan finds.
    #[test]
    fn index_resolution_equals_a_scan(seed in any::<u64>()) {
        use policy_compiler::index::ClusterIndex;
        use policy_compiler::model::{NamespaceScope, Peer};
        let c = cluster(seed, Shape { pods: 8, policies: 4, nodes: 2 });
        let index = ClusterIndex::new(&c);
        let pods = index.pods();
        for policy in c.policies().values() {
            let scan: Vec<usize> = (0..pods.len())
                .filter(|i| pods[*i].id.namespace == policy.id.namespace && policy.pod_selector.matches(&pods[*i].labels))
                .collect();
            prop_assert_eq!(index.policy_targets(policy), scan, "seed {} policy {}", seed, &policy.id);
            for rule in policy.ingress.iter().chain(&policy.egress) {
                for peer in &rule.peers {
                    let Peer::Pods(p) = peer else { continue };
                    let scan: Vec<usize> = (0..pods.len())
                        .filter(|i| {
                            let pod = pods[*i];
                            let ns_ok = match &p.namespaces {
                                NamespaceScope::Own(ns) => *pod.id.namespace == **ns,
                                NamespaceScope::Selected(s) => s.matches(&c.namespace(&pod.id.namespace).expect("ns").labels),
                            };
                            ns_ok && p.pods.matches(&pod.labels)
                        })
                        .collect();
                    prop_assert_eq!(index.peer_pods(p), scan, "seed {} peer {}", seed, p);
                }
            }
        }
    }
}

/// `c` with some of its NetworkPolicies (chosen by `seed`) in audit mode.
fn with_audit(c: &policy_compiler::ClusterState, seed: u64) -> policy_compiler::ClusterState {
    let mut out = c.clone();
    let policies: Vec<_> = c.policies().values().cloned().collect();
    for (i, mut p) in policies.into_iter().enumerate() {
        if (seed >> (i % 64)) & 1 == 1 {
            p.enforcement = policy_compiler::model::Enforcement::Audit;
            out.upsert_policy(p);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// With some policies in audit mode (audit groups inline their rules, returning, before the
    /// Baseline tier) the rendered rulesets still agree with the evaluator on every flow, with and
    /// without ClusterNetworkPolicies around them.
    #[test]
    fn rulesets_with_audit_policies_agree_with_the_evaluator(
        seed in any::<u64>(),
        pods in 2usize..9,
        policies in 1usize..5,
        cluster_policies in 0usize..4,
    ) {
        let c = cluster(seed, Shape { pods, policies, nodes: 2 });
        let c = policy_compiler::generate::cluster_policies::with_cluster_policies(&c, seed, cluster_policies, 2);
        let c = with_audit(&c, seed.rotate_left(17));
        let rulesets = compile_all(&c);
        let bad = disagreements(&c, &rulesets, &ports(), &outside_and_nodes());
        prop_assert!(bad.is_empty(), "seed {seed}: {bad:#?}\n{c:#?}");
    }

    /// Under `audit_all` nothing drops: no rule and no decision ends in `drop`, and every drop
    /// point of the enforced ruleset is a counted accept.
    #[test]
    fn audit_all_drops_nothing(seed in any::<u64>(), cluster_policies in 0usize..4) {
        use policy_compiler::nft::{DecisionVerdict, Verdict};
        use policy_compiler::plan::{compile_all_with, CompileOptions, Origin};
        let c = cluster(seed, Shape { pods: 8, policies: 4, nodes: 2 });
        let c = policy_compiler::generate::cluster_policies::with_cluster_policies(&c, seed, cluster_policies, 2);
        let options = CompileOptions { audit_all: true, ..CompileOptions::default() };
        for (node, compiled) in compile_all_with(&c, &options) {
            let r = &compiled.ruleset;
            for (name, chain) in &r.chains {
                prop_assert!(chain.rules.iter().all(|rule| rule.verdict != Verdict::Drop), "{node}: {name} drops");
            }
            for (name, map) in &r.decision_maps {
                prop_assert!(map.elements.values().all(|d| d.verdict != DecisionVerdict::Drop), "{node}: {name} drops");
            }
            for (name, origin) in &compiled.origins {
                if let Origin::Isolation { audit, .. } = origin {
                    prop_assert!(*audit, "{node}: {name} is an enforced drop point");
                }
            }
        }
    }
}
