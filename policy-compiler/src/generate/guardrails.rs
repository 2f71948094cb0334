//! Seeded, realistic ClusterNetworkPolicies over a [`super::workload`] cluster: the guardrails a
//! platform team writes (block the metadata service and the control plane, always allow DNS and
//! monitoring, keep development away from production, delegate the rest to namespace owners), and
//! the Nodes their `nodes` peers select. For benchmarks and `policyc generate`.

use std::net::IpAddr;

use super::Rng;
use crate::cidr::Cidr;
use crate::cluster::ClusterState;
use crate::model::{
    Action, ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, Node, PodsSelector,
    Protocol, Subject, Tier,
};
use crate::selector::{LabelSelector, Labels};

/// Rules per generated ClusterNetworkPolicy: five ingress, five egress.
pub const RULES_PER_POLICY: usize = 10;

/// Nodes `node-0` to `node-2` are labelled `node-role.kubernetes.io/control-plane`.
const CONTROL_PLANE_NODES: usize = 3;

const TEAMS: [&str; 5] = ["payments", "search", "web", "data", "platform"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];
const TIERS: [&str; 3] = ["frontend", "backend", "db"];

fn pick(rng: &mut Rng, items: &[&'static str]) -> &'static str {
    items[rng.below(items.len())]
}

fn one(key: &str, value: &str) -> LabelSelector {
    LabelSelector::from_labels([(key, value)])
}

fn cidr(text: &str) -> Cidr {
    // The texts below are canonical CIDRs.
    text.parse()
        .unwrap_or_else(|_| Cidr::host(IpAddr::from([0, 0, 0, 0])))
}

fn ports(protocol: Protocol, ranges: &[(u16, u16)]) -> Vec<ClusterPort> {
    ranges
        .iter()
        .map(|&(first, last)| ClusterPort::Range {
            protocol,
            first,
            last,
        })
        .collect()
}

fn rule(
    name: String,
    action: Action,
    peers: Vec<ClusterPeer>,
    protocols: Vec<ClusterPort>,
) -> ClusterRule {
    ClusterRule {
        name: Some(name),
        action,
        peers,
        protocols,
    }
}

/// The five ingress rules of policy `i`.
fn ingress(rng: &mut Rng, i: usize) -> Vec<ClusterRule> {
    let team = pick(rng, &TEAMS);
    let scrape = 9090 + (i % 4) as u16;
    vec![
        rule(
            "allow-monitoring".into(),
            Action::Accept,
            vec![ClusterPeer::Namespaces(one("team", "platform"))],
            ports(Protocol::Tcp, &[(scrape, scrape)]),
        ),
        rule(
            "deny-from-dev".into(),
            Action::Deny,
            vec![ClusterPeer::Namespaces(one("env", "dev"))],
            vec![],
        ),
        rule(
            format!("delegate-{team}"),
            Action::Pass,
            vec![ClusterPeer::Namespaces(one("team", team))],
            vec![],
        ),
        rule(
            "deny-db-ports-from-frontends".into(),
            Action::Deny,
            vec![ClusterPeer::Pods(PodsSelector {
                namespaces: LabelSelector::everything(),
                pods: one("tier", "frontend"),
            })],
            ports(Protocol::Tcp, &[(5432, 5440), (3306, 3306)]),
        ),
        rule(
            "allow-frontends-http".into(),
            Action::Accept,
            vec![ClusterPeer::Pods(PodsSelector {
                namespaces: one("env", "prod"),
                pods: one("tier", "frontend"),
            })],
            vec![ClusterPort::Named("http".into())],
        ),
    ]
}

/// The five egress rules of policy `i`.
fn egress(rng: &mut Rng, i: usize) -> Vec<ClusterRule> {
    let blocked = format!("198.51.100.{}/32", i % 256);
    let partner = pick(rng, &["203.0.113.0/25", "203.0.113.128/26", "192.0.2.0/24"]);
    vec![
        rule(
            "deny-metadata".into(),
            Action::Deny,
            vec![ClusterPeer::Networks(vec![cidr("169.254.169.254/32")])],
            vec![],
        ),
        rule(
            "allow-dns".into(),
            Action::Accept,
            vec![ClusterPeer::Pods(PodsSelector {
                namespaces: one("kubernetes.io/metadata.name", "kube-system"),
                pods: one("k8s-app", "kube-dns"),
            })],
            [
                ports(Protocol::Udp, &[(53, 53)]),
                ports(Protocol::Tcp, &[(53, 53)]),
            ]
            .concat(),
        ),
        rule(
            "deny-control-plane".into(),
            Action::Deny,
            vec![ClusterPeer::Nodes(one(
                "node-role.kubernetes.io/control-plane",
                "",
            ))],
            ports(Protocol::Tcp, &[(10250, 10250), (2379, 2380), (6443, 6443)]),
        ),
        rule(
            format!("deny-blocklisted-{}", i % 256),
            Action::Deny,
            vec![ClusterPeer::Networks(vec![cidr(&blocked), cidr(partner)])],
            ports(Protocol::Tcp, &[(443, 443), (8000, 8999)]),
        ),
        rule(
            "delegate-cluster".into(),
            Action::Pass,
            vec![ClusterPeer::Networks(vec![cidr("10.0.0.0/8")])],
            vec![],
        ),
    ]
}

/// `cluster` (a [`super::workload`] cluster on `nodes` nodes) with `count` guardrail
/// ClusterNetworkPolicies of [`RULES_PER_POLICY`] rules each (four in five Admin, the rest
/// Baseline; 50 priorities, each shared by two policies, so that ties are broken by name) and a Node per node, addressed as the workload's pods' host IPs.
/// Deterministic for a seed.
pub fn with_guardrails(
    cluster: &ClusterState,
    seed: u64,
    count: usize,
    nodes: usize,
) -> ClusterState {
    let mut rng = Rng::new(seed ^ 0x6a7d_7a11_5eed);
    let mut out = cluster.clone();
    for n in 0..nodes {
        let mut labels = Labels::new();
        labels.insert("topology.kubernetes.io/zone", format!("zone-{}", n % 3));
        if n < CONTROL_PLANE_NODES {
            labels.insert("node-role.kubernetes.io/control-plane", String::new());
        }
        out.upsert_node(Node {
            name: format!("node-{n}"),
            labels,
            addresses: vec![IpAddr::from([192, 168, (n / 256) as u8, (n % 256) as u8])],
        });
    }
    for i in 0..count {
        let tier = if i % 5 == 4 {
            Tier::Baseline
        } else {
            Tier::Admin
        };
        let subject = match i % 4 {
            0 => Subject::Namespaces(one("env", pick(&mut rng, &ENVS))),
            1 => Subject::Pods(PodsSelector {
                namespaces: one("team", pick(&mut rng, &TEAMS)),
                pods: one("tier", pick(&mut rng, &TIERS)),
            }),
            2 => Subject::Namespaces(one("team", pick(&mut rng, &TEAMS))),
            _ => Subject::Pods(PodsSelector {
                namespaces: LabelSelector::everything(),
                pods: one("tier", pick(&mut rng, &TIERS)),
            }),
        };
        out.upsert_cluster_policy(ClusterNetworkPolicy {
            name: format!("guardrail-{i:03}"),
            tier,
            priority: (i * 7 % 50) as u16,
            subject,
            ingress: ingress(&mut rng, i),
            egress: egress(&mut rng, i),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{workload, WorkloadSize};
    use crate::manifest::cluster_manifests;
    use crate::object::{convert, Converted, DEFAULT_NAMESPACE};

    #[test]
    fn guardrails_are_valid_objects_of_ten_rules_with_both_tiers() {
        let cluster = with_guardrails(&workload(1, WorkloadSize::SMALL), 7, 20, 2);
        assert_eq!(cluster.cluster_policies().len(), 20);
        assert_eq!(cluster.node_objects().len(), 2);
        for p in cluster.cluster_policies().values() {
            assert_eq!(
                p.ingress.len() + p.egress.len(),
                RULES_PER_POLICY,
                "{}",
                p.name
            );
        }
        let tiers: std::collections::BTreeSet<Tier> = cluster
            .cluster_policies()
            .values()
            .map(|p| p.tier)
            .collect();
        assert_eq!(tiers.len(), 2);
        // Written as manifests, every object reads back as valid (the CRD's validation included).
        for (i, value) in cluster_manifests(&cluster).into_iter().enumerate() {
            let raw = crate::input::RawObject::document("generated", i + 1, value);
            assert!(
                matches!(convert(raw, DEFAULT_NAMESPACE), Converted::Valid(_)),
                "document {} is not a valid object",
                i + 1
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_policies() {
        let base = workload(1, WorkloadSize::SMALL);
        let a = with_guardrails(&base, 3, 10, 2);
        let b = with_guardrails(&base, 3, 10, 2);
        let c = with_guardrails(&base, 4, 10, 2);
        let all = |c: &ClusterState| c.cluster_policies().clone();
        assert_eq!(all(&a), all(&b));
        assert_ne!(all(&a), all(&c));
    }
}
