//! The demo cluster (`fixtures/demo`): flows its README promises, judged by the evaluator and by the
//! rendered rulesets, which must agree everywhere.

use std::path::PathBuf;

use policy_compiler::analysis::{evaluate, explain_text, Endpoint, PortProto};
use policy_compiler::cidr::Family;
use policy_compiler::input::{parse_sources, read_paths};
use policy_compiler::model::ObjectRef;
use policy_compiler::plan::compile_all;
use policy_compiler::verify::{disagreements, rulesets_allow};
use policy_compiler::ClusterState;

fn demo() -> ClusterState {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo");
    let sources = read_paths(&[dir.display().to_string()]).expect("read demo");
    parse_sources(&sources).expect("valid demo").cluster
}

/// `ns/pod` (IPv4), `ns/pod@6` (IPv6) or an address.
fn endpoint<'a>(cluster: &'a ClusterState, s: &str) -> Endpoint<'a> {
    if let Ok(ip) = s.parse() {
        return Endpoint::from_ip(cluster, ip);
    }
    let (s, family) = match s.strip_suffix("@6") {
        Some(s) => (s, Family::V6),
        None => (s, Family::V4),
    };
    let (ns, name) = s.split_once('/').expect("ns/pod");
    let pod = cluster.pod(&ObjectRef::new(ns, name)).expect("demo pod");
    Endpoint::pod(pod, pod.ip(family).expect("pod has that family"))
}

const ALLOWED: &[(&str, &str, &str)] = &[
    ("frontend/web-0", "backend/api-0", "9090/TCP"),
    ("frontend/web-1", "backend/api-1", "9090/TCP"),
    ("frontend/web-0@6", "backend/api-1@6", "9090/TCP"),
    ("frontend/web-0", "kube-system/coredns-0", "53/UDP"),
    ("frontend/web-1", "kube-system/coredns-1", "53/TCP"),
    ("backend/api-0", "kube-system/coredns-1", "53/UDP"),
    ("db/postgres-0", "kube-system/coredns-0", "53/TCP"),
    ("backend/api-0", "db/postgres-0", "5432/TCP"),
    ("backend/api-1", "db/redis-0", "6379/TCP"),
    ("backend/worker-0", "db/redis-0", "6379/TCP"),
    ("backend/api-1", "203.0.113.10", "443/TCP"),
    ("backend/api-0", "203.0.113.127", "443/TCP"),
    ("backend/worker-0", "198.51.100.7", "30000/TCP"),
    ("backend/worker-0", "198.51.100.7", "30050/TCP"),
    ("backend/worker-0", "198.51.100.7", "30100/TCP"),
    ("8.8.8.8", "frontend/web-0", "8080/TCP"),
    ("2001:db8::1", "frontend/web-0@6", "8080/TCP"),
    ("kube-system/coredns-0", "frontend/web-1", "8080/TCP"),
    ("192.168.100.1", "frontend/web-1", "8080/TCP"),
    ("kube-system/coredns-0", "kube-system/coredns-1", "53/UDP"),
    ("kube-system/coredns-1", "192.168.100.1", "9100/TCP"),
    // A pod and its own node always talk (kubelet probes, host-network agents).
    ("192.168.100.1", "db/postgres-0", "5432/TCP"),
    ("frontend/web-0", "192.168.100.1", "9100/TCP"),
    // A pod reaching itself never leaves its network namespace.
    ("backend/api-0", "backend/api-0", "9091/TCP"),
];

const DENIED: &[(&str, &str, &str)] = &[
    ("frontend/web-0", "db/postgres-0", "5432/TCP"),
    ("frontend/web-0", "db/redis-0", "6379/TCP"),
    ("frontend/web-0", "backend/api-0", "9091/TCP"),
    ("frontend/web-0", "backend/worker-0", "9090/TCP"),
    ("frontend/web-0", "frontend/web-1", "8080/TCP"),
    ("frontend/web-0", "kube-system/coredns-0", "9153/TCP"),
    ("frontend/web-0", "8.8.8.8", "53/UDP"),
    ("frontend/web-1", "192.168.100.1", "9100/TCP"),
    ("backend/api-0", "frontend/web-0", "8080/TCP"),
    ("backend/api-0", "backend/api-1", "9090/TCP"),
    ("backend/worker-0", "db/postgres-0", "5432/TCP"),
    ("backend/worker-0", "backend/api-0", "9090/TCP"),
    ("backend/api-0", "db/postgres-0", "6379/TCP"),
    ("backend/api-0", "203.0.113.200", "443/TCP"),
    ("backend/api-0", "203.0.113.10", "80/TCP"),
    ("backend/worker-0", "203.0.113.10", "443/TCP"),
    ("backend/worker-0", "198.51.100.7", "29999/TCP"),
    ("backend/worker-0", "198.51.100.7", "30101/TCP"),
    ("backend/worker-0", "198.51.100.7", "30050/UDP"),
    ("backend/api-0", "198.51.100.7", "30050/TCP"),
    ("kube-system/coredns-0", "backend/api-0", "9090/TCP"),
    ("kube-system/coredns-0", "backend/api-0", "9091/TCP"),
    ("kube-system/coredns-0", "db/postgres-0", "5432/TCP"),
    ("kube-system/coredns-0", "db/redis-0", "6379/TCP"),
    ("db/postgres-0", "db/redis-0", "6379/TCP"),
    ("db/redis-0", "db/postgres-0", "5432/TCP"),
    ("8.8.8.8", "frontend/web-0", "9090/TCP"),
    ("8.8.8.8", "backend/api-0", "9090/TCP"),
    ("2001:db8::1", "backend/api-1@6", "9090/TCP"),
    ("192.168.100.1", "db/redis-0", "6379/TCP"),
    ("192.168.100.1", "backend/api-1", "9090/TCP"),
];

#[test]
fn demo_flows_are_judged_as_documented_by_evaluator_and_rulesets() {
    let cluster = demo();
    let rulesets = compile_all(&cluster);
    let mut failures = Vec::new();
    for (expected, flows) in [(true, ALLOWED), (false, DENIED)] {
        for (from, to, port) in flows {
            let port: PortProto = port.parse().expect("port");
            let (a, b) = (endpoint(&cluster, from), endpoint(&cluster, to));
            let verdict = evaluate(&cluster, a, b, port.protocol, port.port);
            if verdict.allowed() != expected {
                failures.push(format!("evaluator: {}", explain_text(&verdict)));
            }
            if !verdict.loopback && !verdict.node_local {
                let nft = rulesets_allow(&cluster, &rulesets, &a, &b, port).expect("interpretable");
                if nft != expected {
                    failures.push(format!("rulesets say {nft} for {from} -> {to} {port}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn demo_rulesets_agree_with_the_evaluator_on_every_flow() {
    let cluster = demo();
    let rulesets = compile_all(&cluster);
    assert_eq!(rulesets.len(), 2, "two nodes");
    let mut ports: Vec<PortProto> = policy_compiler::analysis::declared_ports(&cluster);
    ports.extend(
        ["443/TCP", "30050/TCP", "53/UDP", "1/SCTP"].map(|p| p.parse::<PortProto>().expect("port")),
    );
    let outside = [
        "203.0.113.10",
        "203.0.113.200",
        "198.51.100.7",
        "8.8.8.8",
        "2001:db8::1",
        "192.168.100.2",
    ]
    .map(|ip| ip.parse().expect("ip"));
    let bad = disagreements(&cluster, &rulesets, &ports, &outside);
    assert!(bad.is_empty(), "{bad:#?}");
}
