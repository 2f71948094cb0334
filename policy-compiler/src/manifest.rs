//! Writing the internal model back as Kubernetes manifests (the inverse of [`crate::input`]), for
//! `policyc generate` and for round-trip tests.

use serde_json::{json, Map, Value};

use crate::cluster::ClusterState;
use crate::model::{Namespace, NamespaceScope, Peer, Pod, PodPhase, Policy, PortSpec, Rule};
use crate::selector::{LabelSelector, Requirement};

fn selector(s: &LabelSelector) -> Value {
    let mut labels = Map::new();
    let mut expressions = Vec::new();
    for r in s.requirements() {
        match r {
            // matchLabels holds one value per key; a second requirement on the key is an expression.
            Requirement::In(k, vs) if vs.len() == 1 && !labels.contains_key(k) => {
                labels.insert(k.clone(), json!(vs[0]));
            }
            Requirement::In(k, vs) => {
                expressions.push(json!({"key": k, "operator": "In", "values": vs}))
            }
            Requirement::NotIn(k, vs) => {
                expressions.push(json!({"key": k, "operator": "NotIn", "values": vs}))
            }
            Requirement::Exists(k) => expressions.push(json!({"key": k, "operator": "Exists"})),
            Requirement::DoesNotExist(k) => {
                expressions.push(json!({"key": k, "operator": "DoesNotExist"}))
            }
        }
    }
    let mut out = Map::new();
    if !labels.is_empty() {
        out.insert("matchLabels".into(), Value::Object(labels));
    }
    if !expressions.is_empty() {
        out.insert("matchExpressions".into(), Value::Array(expressions));
    }
    Value::Object(out)
}

fn peer(p: &Peer) -> Value {
    match p {
        Peer::IpBlock(b) => {
            let mut block = json!({"cidr": b.cidr.to_string()});
            if !b.except.is_empty() {
                block["except"] = json!(b.except.iter().map(|c| c.to_string()).collect::<Vec<_>>());
            }
            json!({ "ipBlock": block })
        }
        Peer::Pods(pp) => match &pp.namespaces {
            NamespaceScope::Own(_) => json!({"podSelector": selector(&pp.pods)}),
            NamespaceScope::Selected(ns) => {
                let mut v = json!({"namespaceSelector": selector(ns)});
                if !pp.pods.is_everything() {
                    v["podSelector"] = selector(&pp.pods);
                }
                v
            }
        },
    }
}

fn rule(r: &Rule, peers_key: &str) -> Value {
    let mut v = Map::new();
    if !r.peers.is_empty() {
        v.insert(
            peers_key.into(),
            Value::Array(r.peers.iter().map(peer).collect()),
        );
    }
    if !r.ports.is_empty() {
        let ports = r
            .ports
            .iter()
            .map(|p| {
                let mut port = json!({"protocol": p.protocol.as_api()});
                match &p.port {
                    PortSpec::Any => {}
                    PortSpec::Range(a, b) => {
                        port["port"] = json!(a);
                        if a != b {
                            port["endPort"] = json!(b);
                        }
                    }
                    PortSpec::Named(n) => port["port"] = json!(n),
                }
                port
            })
            .collect();
        v.insert("ports".into(), Value::Array(ports));
    }
    Value::Object(v)
}

/// A `Namespace` manifest.
pub fn namespace_manifest(n: &Namespace) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n.name, "labels": n.labels}})
}

/// A `Pod` manifest, with the status fields policy reads.
pub fn pod_manifest(p: &Pod) -> Value {
    let ports: Vec<Value> = p
        .ports
        .iter()
        .map(|c| {
            let mut v = json!({"containerPort": c.port, "protocol": c.protocol.as_api()});
            if let Some(name) = &c.name {
                v["name"] = json!(name);
            }
            v
        })
        .collect();
    let mut spec = json!({"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10", "ports": ports}]});
    if let Some(node) = &p.node {
        spec["nodeName"] = json!(node);
    }
    if p.host_network {
        spec["hostNetwork"] = json!(true);
    }
    let phase = match p.phase {
        PodPhase::Active => "Running",
        PodPhase::Finished => "Succeeded",
    };
    let mut status = json!({"phase": phase});
    if let Some(first) = p.ips.first() {
        status["podIP"] = json!(first.to_string());
        status["podIPs"] = json!(p
            .ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string()}))
            .collect::<Vec<_>>());
    }
    if let Some(first) = p.host_ips.first() {
        status["hostIP"] = json!(first.to_string());
        status["hostIPs"] = json!(p
            .host_ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string()}))
            .collect::<Vec<_>>());
    }
    let mut metadata = json!({"name": p.id.name, "namespace": p.id.namespace, "labels": p.labels});
    if let Some(owner) = &p.owner {
        let api_version = crate::object::Kind::from_name(&owner.kind)
            .map(|k| k.api_version())
            .unwrap_or_else(|| "v1".to_string());
        metadata["ownerReferences"] = json!([{
            "apiVersion": api_version,
            "kind": owner.kind,
            "name": owner.name,
            "uid": format!("{}-{}", p.id.namespace, owner.name),
            "controller": true,
        }]);
    }
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
    });
    if p.live {
        pod["status"] = status;
    }
    pod
}

/// A `NetworkPolicy` manifest, with `policyTypes` written out.
pub fn policy_manifest(p: &Policy) -> Value {
    let mut types = Vec::new();
    if p.isolates_ingress {
        types.push("Ingress");
    }
    if p.isolates_egress {
        types.push("Egress");
    }
    let mut spec = json!({"podSelector": selector(&p.pod_selector), "policyTypes": types});
    if !p.ingress.is_empty() {
        spec["ingress"] = json!(p
            .ingress
            .iter()
            .map(|r| rule(r, "from"))
            .collect::<Vec<_>>());
    }
    if !p.egress.is_empty() {
        spec["egress"] = json!(p.egress.iter().map(|r| rule(r, "to")).collect::<Vec<_>>());
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": p.id.name, "namespace": p.id.namespace},
        "spec": spec,
    })
}

/// Every namespace, pod and policy of a cluster, in that order.
pub fn cluster_manifests(c: &ClusterState) -> Vec<Value> {
    c.namespaces()
        .values()
        .map(namespace_manifest)
        .chain(c.pods().values().map(pod_manifest))
        .chain(c.policies().values().map(policy_manifest))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{cluster, workload, Shape, WorkloadSize};
    use crate::input::{parse_sources, Source};

    fn round_trip(c: &ClusterState) -> ClusterState {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": cluster_manifests(c)});
        let source = Source {
            name: "generated.json".into(),
            text: list.to_string(),
        };
        parse_sources(&[source])
            .expect("generated manifests are valid")
            .cluster
    }

    #[test]
    fn manifests_read_back_as_the_same_cluster() {
        let w = workload(7, WorkloadSize::SMALL);
        assert_eq!(round_trip(&w), w);
        for seed in 0..50 {
            let c = cluster(
                seed,
                Shape {
                    pods: 8,
                    policies: 4,
                    nodes: 2,
                },
            );
            assert_eq!(round_trip(&c), c, "seed {seed}");
        }
    }
}
