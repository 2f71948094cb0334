//! Writing the internal model back as Kubernetes manifests (the inverse of [`crate::input`]), for
//! `policyc generate` and for round-trip tests.

use serde_json::{json, Map, Value};

use crate::cluster::ClusterState;
use crate::model::{
    ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, Namespace, NamespaceScope, Node,
    Peer, Pod, PodPhase, PodsSelector, Policy, PortSpec, Rule, Subject, ENFORCEMENT_ANNOTATION,
};
use crate::object::Kind;
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
                v["name"] = json!(&**name);
            }
            v
        })
        .collect();
    let mut spec = json!({"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10", "ports": ports}]});
    if let Some(node) = &p.node {
        spec["nodeName"] = json!(&**node);
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
    let mut metadata =
        json!({"name": &*p.id.name, "namespace": &*p.id.namespace, "labels": p.labels});
    if let Some(owner) = &p.owner {
        let api_version = Kind::from_name(&owner.kind)
            .map(|k| k.api_version())
            .unwrap_or_else(|| "v1".to_string());
        metadata["ownerReferences"] = json!([{
            "apiVersion": api_version,
            "kind": &*owner.kind,
            "name": &*owner.name,
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

/// A `NetworkPolicy` manifest, with `policyTypes` written out (and the `nftpolicy.io/enforcement`
/// annotation of a policy in audit mode).
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
    let mut metadata = json!({"name": &*p.id.name, "namespace": &*p.id.namespace});
    if p.is_audit() {
        metadata["annotations"] = json!({ ENFORCEMENT_ANNOTATION: p.enforcement.as_annotation() });
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": spec,
    })
}

/// The field a [`ClusterPeer::Unknown`] is written with: a peer that sets no field nftpolicy
/// knows, read back as the same. No API version can define it (API field names have no `-`).
pub const UNKNOWN_PEER_FIELD: &str = "unknown-peer";

fn pods_selector(p: &PodsSelector) -> Value {
    let mut v = json!({"podSelector": selector(&p.pods)});
    if !p.namespaces.is_everything() {
        v["namespaceSelector"] = selector(&p.namespaces);
    }
    v
}

fn cluster_peer(p: &ClusterPeer) -> Value {
    match p {
        ClusterPeer::Namespaces(s) => json!({"namespaces": selector(s)}),
        ClusterPeer::Pods(pods) => json!({"pods": pods_selector(pods)}),
        ClusterPeer::Networks(cidrs) => {
            json!({"networks": cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>()})
        }
        ClusterPeer::Nodes(s) => json!({"nodes": selector(s)}),
        ClusterPeer::Unknown => json!({ UNKNOWN_PEER_FIELD: {} }),
    }
}

fn cluster_port(p: &ClusterPort) -> Value {
    match p {
        ClusterPort::Named(name) => json!({"destinationNamedPort": name}),
        ClusterPort::Range {
            protocol,
            first,
            last,
        } => {
            let port = if first == last {
                json!({"number": first})
            } else {
                json!({"range": {"start": first, "end": last}})
            };
            json!({ protocol.as_nft(): {"destinationPort": port} })
        }
    }
}

fn cluster_rule(r: &ClusterRule, peers_key: &str) -> Value {
    let mut v = Map::new();
    if let Some(name) = &r.name {
        v.insert("name".into(), json!(name));
    }
    v.insert("action".into(), json!(r.action.as_api()));
    v.insert(
        peers_key.into(),
        Value::Array(r.peers.iter().map(cluster_peer).collect()),
    );
    if !r.protocols.is_empty() {
        v.insert(
            "protocols".into(),
            Value::Array(r.protocols.iter().map(cluster_port).collect()),
        );
    }
    Value::Object(v)
}

/// A `ClusterNetworkPolicy` manifest, of the preferred API version.
pub fn cluster_policy_manifest(p: &ClusterNetworkPolicy) -> Value {
    let subject = match &p.subject {
        Subject::Namespaces(s) => json!({"namespaces": selector(s)}),
        Subject::Pods(pods) => json!({"pods": pods_selector(pods)}),
    };
    let mut spec = json!({"tier": p.tier.as_api(), "priority": p.priority, "subject": subject});
    if !p.ingress.is_empty() {
        spec["ingress"] = json!(p
            .ingress
            .iter()
            .map(|r| cluster_rule(r, "from"))
            .collect::<Vec<_>>());
    }
    if !p.egress.is_empty() {
        spec["egress"] = json!(p
            .egress
            .iter()
            .map(|r| cluster_rule(r, "to"))
            .collect::<Vec<_>>());
    }
    json!({
        "apiVersion": Kind::ClusterNetworkPolicy.api_version(),
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": p.name},
        "spec": spec,
    })
}

/// A `Node` manifest; its addresses are written as `InternalIP`s (the model does not tell them
/// from `ExternalIP`s, which `nodes` peers match alike).
pub fn node_manifest(n: &Node) -> Value {
    let addresses: Vec<Value> = n
        .addresses
        .iter()
        .map(|ip| json!({"type": "InternalIP", "address": ip.to_string()}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": n.name, "labels": n.labels},
        "status": {"addresses": addresses},
    })
}

/// Every namespace, pod, policy, ClusterNetworkPolicy and Node of a cluster, in that order.
pub fn cluster_manifests(c: &ClusterState) -> Vec<Value> {
    c.namespaces()
        .values()
        .map(namespace_manifest)
        .chain(c.pods().values().map(pod_manifest))
        .chain(c.policies().values().map(policy_manifest))
        .chain(c.cluster_policies().values().map(cluster_policy_manifest))
        .chain(c.node_objects().values().map(node_manifest))
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

    fn cluster_policies_and_nodes() -> ClusterState {
        use crate::model::{Action, Tier};
        use crate::selector::Requirement;
        use crate::Protocol;
        let web = LabelSelector::from_labels([("app", "web")]);
        let house = LabelSelector::new(vec![
            Requirement::In("house".into(), vec!["a".into(), "b".into()]),
            Requirement::DoesNotExist("legacy".into()),
        ]);
        let rule = |name: Option<&str>, action, peers, protocols| ClusterRule {
            name: name.map(str::to_string),
            action,
            peers,
            protocols,
        };
        let admin = ClusterNetworkPolicy {
            name: "admin".into(),
            tier: Tier::Admin,
            priority: 0,
            subject: Subject::Pods(PodsSelector {
                namespaces: house.clone(),
                pods: web.clone(),
            }),
            ingress: vec![rule(
                Some("from-monitoring"),
                Action::Accept,
                vec![
                    ClusterPeer::Namespaces(LabelSelector::from_labels([("team", "mon")])),
                    ClusterPeer::Pods(PodsSelector {
                        namespaces: LabelSelector::everything(),
                        pods: web.clone(),
                    }),
                    ClusterPeer::Unknown,
                ],
                vec![
                    ClusterPort::Named("metrics".into()),
                    ClusterPort::Range {
                        protocol: Protocol::Sctp,
                        first: 9003,
                        last: 9003,
                    },
                ],
            )],
            egress: vec![
                rule(
                    None,
                    Action::Deny,
                    vec![
                        ClusterPeer::Networks(vec![
                            "169.254.169.254/32".parse().expect("cidr"),
                            "fd00:ec2::254/128".parse().expect("cidr"),
                        ]),
                        ClusterPeer::Nodes(LabelSelector::everything()),
                    ],
                    vec![ClusterPort::Range {
                        protocol: Protocol::Tcp,
                        first: 1,
                        last: 65535,
                    }],
                ),
                rule(
                    Some("rest"),
                    Action::Pass,
                    vec![ClusterPeer::Namespaces(LabelSelector::everything())],
                    vec![],
                ),
            ],
        };
        let baseline = ClusterNetworkPolicy {
            name: "baseline".into(),
            tier: Tier::Baseline,
            priority: 1000,
            subject: Subject::Namespaces(LabelSelector::everything()),
            ingress: vec![rule(
                None,
                Action::Deny,
                vec![ClusterPeer::Namespaces(house)],
                vec![ClusterPort::Range {
                    protocol: Protocol::Udp,
                    first: 5000,
                    last: 5010,
                }],
            )],
            egress: vec![],
        };
        let mut c = ClusterState::new();
        c.upsert_cluster_policy(admin);
        c.upsert_cluster_policy(baseline);
        c.upsert_node(Node {
            name: "node-1".into(),
            labels: [("kubernetes.io/os".to_string(), "linux".to_string())].into(),
            addresses: vec![
                "192.168.0.1".parse().expect("ip"),
                "fd00::1".parse().expect("ip"),
                "203.0.113.1".parse().expect("ip"),
            ],
        });
        c.upsert_node(Node {
            name: "node-2".into(),
            labels: Default::default(),
            addresses: vec![],
        });
        c
    }

    #[test]
    fn cluster_policies_and_nodes_read_back_the_same() {
        let c = cluster_policies_and_nodes();
        assert_eq!(c.cluster_policies().len(), 2);
        assert_eq!(c.node_objects().len(), 2);
        assert_eq!(round_trip(&c), c);
        let admin = cluster_policy_manifest(&c.cluster_policies()["admin"]);
        assert_eq!(
            admin["apiVersion"], "policy.networking.k8s.io/v1beta1",
            "the preferred version"
        );
        assert_eq!(
            admin["spec"]["egress"][0]["protocols"][0],
            json!({"tcp": {"destinationPort": {"range": {"start": 1, "end": 65535}}}})
        );
        assert_eq!(
            admin["spec"]["ingress"][0]["from"][2],
            json!({"unknown-peer": {}})
        );
    }

    #[test]
    fn manifests_read_back_as_the_same_cluster() {
        let w = workload(7, WorkloadSize::SMALL);
        assert_eq!(round_trip(&w), w);
        // A policy in audit mode keeps its annotation.
        let mut audited = w.clone();
        let mut policy = audited
            .policies()
            .values()
            .next()
            .expect("a policy")
            .clone();
        policy.enforcement = crate::model::Enforcement::Audit;
        assert_eq!(
            policy_manifest(&policy)["metadata"]["annotations"],
            json!({"nftpolicy.io/enforcement": "audit"})
        );
        audited.upsert_policy(policy);
        assert_eq!(round_trip(&audited), audited);
        assert_ne!(audited, w);
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
