use std::net::IpAddr;

use super::*;
use crate::cidr::Cidr;
use crate::model::{ContainerPort, IpBlock, Namespace, PodPeer, PodPhase, PolicyPort, Rule};
use crate::selector::{LabelSelector, Labels};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn pod(ns: &str, name: &str, app: &str, addr: &str, ports: &[(&str, u16)]) -> Pod {
    Pod {
        id: ObjectRef::new(ns, name),
        labels: Labels::from([("app".to_string(), app.to_string())]),
        node: Some("n1".into()),
        ips: vec![ip(addr)],
        host_network: false,
        host_ips: vec![ip("192.168.0.1")],
        phase: PodPhase::Active,
        ports: ports
            .iter()
            .map(|(n, p)| ContainerPort {
                name: Some(n.to_string()),
                port: *p,
                protocol: Protocol::Tcp,
            })
            .collect(),
        owner: None,
        live: true,
        workload: None,
    }
}

fn policy(
    ns: &str,
    name: &str,
    target: &str,
    ingress: Vec<Rule>,
    egress: Option<Vec<Rule>>,
) -> Policy {
    Policy {
        id: ObjectRef::new(ns, name),
        pod_selector: LabelSelector::from_labels([("app", target)]),
        isolates_ingress: true,
        isolates_egress: egress.is_some(),
        ingress,
        egress: egress.unwrap_or_default(),
        enforcement: crate::model::Enforcement::Enforce,
    }
}

fn tcp(port: PortSpec) -> PolicyPort {
    PolicyPort {
        protocol: Protocol::Tcp,
        port,
    }
}

fn cluster(pods: Vec<Pod>, policies: Vec<Policy>) -> ClusterState {
    let mut c = ClusterState::new();
    c.upsert_namespace(Namespace::new("x", Labels::new()));
    for p in pods {
        c.upsert_pod(p);
    }
    for p in policies {
        c.upsert_policy(p);
    }
    c
}

fn allowed(c: &ClusterState, from: &str, to: &str, protocol: Protocol, port: u16) -> bool {
    let from = Endpoint::from_ip(c, ip(from));
    let to = Endpoint::from_ip(c, ip(to));
    evaluate(c, from, to, protocol, port).allowed()
}

#[test]
fn isolation_comes_from_selection_not_from_rules() {
    // Only UDP/81 is allowed, and that still cuts TCP.
    let udp_only = Rule {
        peers: vec![],
        ports: vec![PolicyPort {
            protocol: Protocol::Udp,
            port: PortSpec::Range(81, 81),
        }],
    };
    let c = cluster(
        vec![
            pod("x", "a", "a", "10.0.0.1", &[]),
            pod("x", "b", "b", "10.0.0.2", &[]),
        ],
        vec![policy("x", "p", "a", vec![udp_only], None)],
    );
    assert!(!allowed(&c, "10.0.0.2", "10.0.0.1", Protocol::Tcp, 81));
    assert!(allowed(&c, "10.0.0.2", "10.0.0.1", Protocol::Udp, 81));
    assert!(!allowed(&c, "10.0.0.2", "10.0.0.1", Protocol::Udp, 80));
    // b is selected by nothing: default allow both ways.
    assert!(allowed(&c, "10.0.0.1", "10.0.0.2", Protocol::Tcp, 1));
}

#[test]
fn named_ports_resolve_per_destination_pod() {
    let to_web = Rule {
        peers: vec![],
        ports: vec![tcp(PortSpec::Named("http".into()))],
    };
    let c = cluster(
        vec![
            pod("x", "client", "client", "10.0.0.1", &[]),
            pod("x", "w1", "web", "10.0.0.2", &[("http", 80)]),
            pod("x", "w2", "web", "10.0.0.3", &[("http", 8080)]),
        ],
        vec![policy("x", "egress", "client", vec![], Some(vec![to_web]))],
    );
    assert!(allowed(&c, "10.0.0.1", "10.0.0.2", Protocol::Tcp, 80));
    assert!(!allowed(&c, "10.0.0.1", "10.0.0.2", Protocol::Tcp, 8080));
    assert!(allowed(&c, "10.0.0.1", "10.0.0.3", Protocol::Tcp, 8080));
    assert!(!allowed(&c, "10.0.0.1", "10.0.0.3", Protocol::Tcp, 80));
    // An outside address has no named ports.
    assert!(!allowed(&c, "10.0.0.1", "192.0.2.1", Protocol::Tcp, 80));
}

#[test]
fn connections_need_egress_and_ingress() {
    let from_all = Rule {
        peers: vec![],
        ports: vec![],
    };
    let deny_egress = policy(
        "x",
        "deny-egress",
        "a",
        vec![from_all.clone()],
        Some(vec![]),
    );
    let c = cluster(
        vec![
            pod("x", "a", "a", "10.0.0.1", &[]),
            pod("x", "b", "b", "10.0.0.2", &[]),
        ],
        vec![
            deny_egress,
            policy("x", "allow-b", "b", vec![from_all], None),
        ],
    );
    let v = evaluate(
        &c,
        Endpoint::from_ip(&c, ip("10.0.0.1")),
        Endpoint::from_ip(&c, ip("10.0.0.2")),
        Protocol::Tcp,
        80,
    );
    assert!(!v.allowed() && !v.egress.allowed() && v.ingress.allowed());
    assert_eq!(
        v.ingress
            .allowed_by()
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
        ["x/allow-b ingress[0]"]
    );
    assert!(allowed(&c, "10.0.0.2", "10.0.0.1", Protocol::Tcp, 80));
}

#[test]
fn ip_blocks_match_pod_ips_minus_excepts() {
    let block = Rule {
        peers: vec![Peer::IpBlock(IpBlock {
            cidr: "10.0.0.0/24".parse::<Cidr>().expect("cidr"),
            except: vec!["10.0.0.3/32".parse().expect("cidr")],
        })],
        ports: vec![],
    };
    let c = cluster(
        vec![
            pod("x", "a", "a", "10.0.0.1", &[]),
            pod("x", "b", "b", "10.0.0.2", &[]),
            pod("x", "c", "c", "10.0.0.3", &[]),
        ],
        vec![policy("x", "p", "a", vec![block], None)],
    );
    assert!(
        allowed(&c, "10.0.0.2", "10.0.0.1", Protocol::Tcp, 80),
        "pod IP inside the block"
    );
    assert!(
        !allowed(&c, "10.0.0.3", "10.0.0.1", Protocol::Tcp, 80),
        "pod IP in except"
    );
    assert!(
        allowed(&c, "10.0.0.200", "10.0.0.1", Protocol::Tcp, 80),
        "outside address"
    );
    assert!(!allowed(&c, "10.0.1.1", "10.0.0.1", Protocol::Tcp, 80));
}

#[test]
fn pods_without_a_part_are_neither_selected_nor_peers_and_own_node_passes() {
    let from_web = Rule {
        peers: vec![Peer::Pods(PodPeer {
            namespaces: NamespaceScope::Own("x".into()),
            pods: LabelSelector::from_labels([("app", "web")]),
        })],
        ports: vec![],
    };
    let mut host = pod("x", "host", "web", "192.168.0.2", &[]);
    host.host_network = true;
    let mut done = pod("x", "done", "web", "10.0.0.9", &[]);
    done.phase = PodPhase::Finished;
    let c = cluster(
        vec![pod("x", "db", "db", "10.0.0.1", &[]), host, done],
        vec![policy("x", "p", "db", vec![from_web], None)],
    );
    assert!(
        !allowed(&c, "192.168.0.2", "10.0.0.1", Protocol::Tcp, 5432),
        "host-network pod is not a pod peer"
    );
    assert!(
        !allowed(&c, "10.0.0.9", "10.0.0.1", Protocol::Tcp, 5432),
        "finished pod's IP may be reused"
    );
    let v = evaluate(
        &c,
        Endpoint::from_ip(&c, ip("192.168.0.1")),
        Endpoint::from_ip(&c, ip("10.0.0.1")),
        Protocol::Tcp,
        5432,
    );
    assert!(
        v.node_local && v.allowed(),
        "the pod's own node (kubelet) always passes"
    );
}
