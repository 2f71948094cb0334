//! Seeded random ClusterNetworkPolicies, and the Nodes their `nodes` peers select, for the
//! property tests of the tiers: few priorities (so ties are broken by name), every action, every
//! kind of peer and port, networks that cover pods, nodes and the outside.

use std::net::IpAddr;

use super::{labels, selector, Rng, NS_LABELS, POD_LABELS};
use crate::cidr::Cidr;
use crate::cluster::ClusterState;
use crate::model::{
    Action, ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, Direction, Node,
    PodsSelector, Protocol, Subject, Tier,
};
use crate::selector::LabelSelector;

const NODE_LABELS: [(&str, &[&str]); 2] = [("zone", &["a", "b"]), ("role", &["worker", "edge"])];

/// The address of generated node `n` (the `status.hostIPs` of the pods [`super::cluster`] puts on
/// it).
pub fn node_address(n: usize) -> IpAddr {
    IpAddr::from([192, 168, 0, n as u8 + 1])
}

fn pods_selector(rng: &mut Rng) -> PodsSelector {
    PodsSelector {
        namespaces: selector(rng, &NS_LABELS),
        pods: selector(rng, &POD_LABELS),
    }
}

fn network(rng: &mut Rng) -> Cidr {
    let cidrs = [
        "10.0.0.0/16",
        "10.0.1.0/24",
        "10.0.0.12/30",
        "0.0.0.0/0",
        "192.168.0.0/24",
        "192.168.0.2/32",
        "192.0.2.0/24",
        "fd00::/16",
        "fd00:0:1::/48",
        "::/0",
    ];
    rng.pick(&cidrs).parse().expect("valid cidr")
}

/// A random subject: the pods of namespaces, or pods of namespaces.
pub fn subject(rng: &mut Rng) -> Subject {
    if rng.one_in(2) {
        Subject::Namespaces(selector(rng, &NS_LABELS))
    } else {
        Subject::Pods(pods_selector(rng))
    }
}

/// A random peer of a rule of `direction`: namespaces, pods, networks, Nodes (egress), or rarely a
/// peer of a newer API version.
pub fn peer(rng: &mut Rng, direction: Direction) -> ClusterPeer {
    let kinds = match direction {
        Direction::Ingress => 2,
        Direction::Egress => 5,
    };
    match rng.below(kinds + 1) {
        0 => ClusterPeer::Namespaces(selector(rng, &NS_LABELS)),
        1 => ClusterPeer::Pods(pods_selector(rng)),
        2 => {
            let mut cidrs: Vec<Cidr> = Vec::new();
            for _ in 0..1 + rng.below(2) {
                let c = network(rng);
                if !cidrs.contains(&c) {
                    cidrs.push(c);
                }
            }
            ClusterPeer::Networks(cidrs)
        }
        3 | 4 => ClusterPeer::Nodes(selector(rng, &NODE_LABELS)),
        // Rarely: a peer of a newer API version, which fails closed.
        _ if rng.one_in(3) => ClusterPeer::Unknown,
        _ => ClusterPeer::Namespaces(LabelSelector::everything()),
    }
}

fn port(rng: &mut Rng) -> ClusterPort {
    let range = |protocol, first, last| ClusterPort::Range {
        protocol,
        first,
        last,
    };
    match rng.below(8) {
        0 => range(Protocol::Tcp, 80, 80),
        1 => range(Protocol::Tcp, 79, 81),
        2 => range(Protocol::Udp, 53, 53),
        3 => range(Protocol::Sctp, 80, 80),
        4 => range(Protocol::Tcp, 8000, 8080),
        5 => ClusterPort::Named("web".into()),
        6 => ClusterPort::Named("dns".into()),
        _ => ClusterPort::Named("assoc".into()),
    }
}

fn rules(rng: &mut Rng, direction: Direction) -> Vec<ClusterRule> {
    (0..rng.below(4))
        .map(|i| ClusterRule {
            name: rng.one_in(2).then(|| format!("r{i}")),
            action: *rng.pick(&Action::ALL),
            peers: (0..1 + rng.below(2))
                .map(|_| peer(rng, direction))
                .collect(),
            protocols: (0..rng.below(3)).map(|_| port(rng)).collect(),
        })
        .collect()
}

/// `cluster` with `count` random ClusterNetworkPolicies and a Node for each of its `nodes` nodes
/// (`n0`, `n1`, …, addressed as [`node_address`]). The same seed gives the same policies.
pub fn with_cluster_policies(
    cluster: &ClusterState,
    seed: u64,
    count: usize,
    nodes: usize,
) -> ClusterState {
    let mut rng = Rng::new(seed ^ 0x5eed_c1a5_7e12);
    let mut out = cluster.clone();
    for n in 0..nodes {
        out.upsert_node(Node {
            name: format!("n{n}"),
            labels: labels(&mut rng, &NODE_LABELS),
            addresses: vec![node_address(n)],
        });
    }
    for i in 0..count {
        let subject = subject(&mut rng);
        out.upsert_cluster_policy(ClusterNetworkPolicy {
            name: format!("cnp{i}"),
            tier: *rng.pick(&Tier::ALL),
            priority: rng.below(3) as u16,
            subject,
            ingress: rules(&mut rng, Direction::Ingress),
            egress: rules(&mut rng, Direction::Egress),
        });
    }
    out
}
