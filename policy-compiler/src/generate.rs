//! Seeded random clusters for differential and property tests: small, varied, and reproducible from
//! the seed alone.

use std::net::IpAddr;

use crate::cidr::Cidr;
use crate::cluster::ClusterState;
use crate::model::{
    ContainerPort, IpBlock, Namespace, NamespaceScope, ObjectRef, OwnerRef, Peer, Pod, PodPeer,
    PodPhase, Policy, PolicyPort, PortSpec, Protocol, Rule,
};
use crate::selector::{LabelSelector, Labels, Requirement};

pub mod cluster_policies;
pub mod decisions;
pub mod guardrails;

/// SplitMix64: a tiny, well-distributed generator, stable across platforms and releases.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A random element.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The pod address ranges of generated clusters (pods in 10.0.0.0/8, IPv6 ones in fd00::/64), for
/// the analyses that tell pods from external addresses (`--pod-cidr 10.0.0.0/8,fd00::/64`).
pub fn pod_cidrs() -> crate::workload::PodCidrs {
    crate::workload::PodCidrs::parse(&["10.0.0.0/8", "fd00::/64"]).unwrap_or_default()
}

/// Shape of a generated cluster.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Number of pods (some of which may not participate).
    pub pods: usize,
    /// Number of policies.
    pub policies: usize,
    /// Number of nodes.
    pub nodes: usize,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            pods: 6,
            policies: 3,
            nodes: 2,
        }
    }
}

const NAMESPACES: [&str; 3] = ["a", "b", "c"];
const POD_LABELS: [(&str, &[&str]); 2] = [("app", &["web", "api", "db"]), ("tier", &["fe", "be"])];
const NS_LABELS: [(&str, &[&str]); 2] = [("team", &["x", "y"]), ("env", &["prod", "dev"])];

fn labels(rng: &mut Rng, keys: &[(&str, &[&str])]) -> Labels {
    let mut out = Labels::new();
    for (k, vs) in keys {
        if !rng.one_in(3) {
            out.insert(k.to_string(), rng.pick(vs).to_string());
        }
    }
    out
}

fn selector(rng: &mut Rng, keys: &[(&str, &[&str])]) -> LabelSelector {
    let mut reqs = Vec::new();
    for _ in 0..rng.below(3) {
        let (k, vs) = *rng.pick(keys);
        let v = rng.pick(vs).to_string();
        reqs.push(match rng.below(6) {
            0 | 1 => Requirement::In(k.to_string(), vec![v]),
            2 => Requirement::In(
                k.to_string(),
                vs.iter().take(2).map(|s| s.to_string()).collect(),
            ),
            3 => Requirement::NotIn(k.to_string(), vec![v]),
            4 => Requirement::Exists(k.to_string()),
            _ => Requirement::DoesNotExist(k.to_string()),
        });
    }
    LabelSelector::new(reqs)
}

/// Container ports: the name `web` means 80 on some pods and 8080 on others, as named ports do.
fn container_ports(rng: &mut Rng) -> Vec<ContainerPort> {
    let choices = [
        (Some("web"), 80, Protocol::Tcp),
        (Some("web"), 8080, Protocol::Tcp),
        (Some("dns"), 53, Protocol::Udp),
        (None, 81, Protocol::Tcp),
        (Some("assoc"), 80, Protocol::Sctp),
    ];
    let mut ports: Vec<ContainerPort> = Vec::new();
    for (name, port, protocol) in choices {
        let clash = ports
            .iter()
            .any(|p| p.name.is_some() && p.name.as_deref() == name && p.protocol == protocol);
        if rng.one_in(2) && !clash {
            ports.push(ContainerPort {
                name: name.map(Into::into),
                port,
                protocol,
            });
        }
    }
    ports
}

fn pod(rng: &mut Rng, i: usize, shape: &Shape) -> Pod {
    let node = rng.below(shape.nodes.max(1));
    let mut ips: Vec<IpAddr> = vec![IpAddr::from([10, 0, node as u8, 10 + i as u8])];
    if rng.one_in(3) {
        ips.push(
            format!("fd00:0:{node}::{:x}", 10 + i)
                .parse()
                .expect("valid v6"),
        );
    }
    let host_network = rng.one_in(12);
    if host_network {
        ips = vec![IpAddr::from([192, 168, 0, node as u8 + 1])];
    }
    Pod {
        id: ObjectRef::new(*rng.pick(&NAMESPACES), format!("p{i}")),
        labels: labels(rng, &POD_LABELS),
        node: Some(format!("n{node}").into()),
        ips,
        host_network,
        host_ips: vec![IpAddr::from([192, 168, 0, node as u8 + 1])],
        phase: if rng.one_in(12) {
            PodPhase::Finished
        } else {
            PodPhase::Active
        },
        ports: container_ports(rng),
        owner: None,
        live: true,
        workload: None,
    }
}

fn ip_block(rng: &mut Rng) -> IpBlock {
    let cidr = |s: &str| s.parse::<Cidr>().expect("valid cidr");
    match rng.below(5) {
        0 => IpBlock {
            cidr: cidr("10.0.0.0/16"),
            except: vec![cidr("10.0.1.0/24")],
        },
        1 => IpBlock {
            cidr: cidr("0.0.0.0/0"),
            except: vec![cidr("10.0.0.10/31"), cidr("192.0.2.0/24")],
        },
        2 => IpBlock {
            cidr: cidr("10.0.1.0/24"),
            except: vec![],
        },
        3 => IpBlock {
            cidr: cidr("fd00::/16"),
            except: vec![cidr("fd00:0:1::/48")],
        },
        _ => IpBlock {
            cidr: cidr("192.0.2.0/24"),
            except: vec![],
        },
    }
}

fn peer(rng: &mut Rng, namespace: &str) -> Peer {
    match rng.below(4) {
        0 => Peer::Pods(PodPeer {
            namespaces: NamespaceScope::Own(namespace.to_string()),
            pods: selector(rng, &POD_LABELS),
        }),
        1 => Peer::Pods(PodPeer {
            namespaces: NamespaceScope::Selected(selector(rng, &NS_LABELS)),
            pods: LabelSelector::everything(),
        }),
        2 => Peer::Pods(PodPeer {
            namespaces: NamespaceScope::Selected(selector(rng, &NS_LABELS)),
            pods: selector(rng, &POD_LABELS),
        }),
        _ => Peer::IpBlock(ip_block(rng)),
    }
}

fn policy_port(rng: &mut Rng) -> PolicyPort {
    let (protocol, port) = match rng.below(7) {
        0 => (Protocol::Tcp, PortSpec::Range(80, 80)),
        1 => (Protocol::Tcp, PortSpec::Range(79, 81)),
        2 => (Protocol::Tcp, PortSpec::Named("web".into())),
        3 => (Protocol::Udp, PortSpec::Named("dns".into())),
        4 => (Protocol::Udp, PortSpec::Any),
        5 => (Protocol::Sctp, PortSpec::Range(80, 80)),
        _ => (Protocol::Tcp, PortSpec::Range(8000, 8080)),
    };
    PolicyPort { protocol, port }
}

fn rules(rng: &mut Rng, namespace: &str) -> Vec<Rule> {
    (0..rng.below(3))
        .map(|_| Rule {
            peers: (0..rng.below(3)).map(|_| peer(rng, namespace)).collect(),
            ports: (0..rng.below(3)).map(|_| policy_port(rng)).collect(),
        })
        .collect()
}

/// A random cluster of the given shape, the same for the same seed.
pub fn cluster(seed: u64, shape: Shape) -> ClusterState {
    let mut rng = Rng::new(seed);
    let mut cluster = ClusterState::new();
    for ns in NAMESPACES {
        cluster.upsert_namespace(Namespace::new(ns, labels(&mut rng, &NS_LABELS)));
    }
    for i in 0..shape.pods {
        let p = pod(&mut rng, i, &shape);
        cluster.upsert_pod(p);
    }
    for i in 0..shape.policies {
        let namespace = rng.pick(&NAMESPACES).to_string();
        let ingress = rules(&mut rng, &namespace);
        let egress = rules(&mut rng, &namespace);
        let (isolates_ingress, isolates_egress) = match rng.below(4) {
            0 => (true, !egress.is_empty()),
            1 => (true, false),
            2 => (false, true),
            _ => (true, true),
        };
        cluster.upsert_policy(Policy {
            id: ObjectRef::new(namespace.clone(), format!("np{i}")),
            pod_selector: selector(&mut rng, &POD_LABELS),
            isolates_ingress,
            isolates_egress,
            ingress,
            egress,
            enforcement: crate::model::Enforcement::Enforce,
        });
    }
    cluster
}

/// One random change of the kinds a cluster sees: a pod relabelled, added or removed, a namespace
/// relabelled, a policy edited, added or removed. The same seed gives the same change.
pub fn mutate(cluster: &ClusterState, seed: u64) -> ClusterState {
    let mut rng = Rng::new(seed);
    let mut next = cluster.clone();
    let pods: Vec<ObjectRef> = next.pods().keys().cloned().collect();
    let policies: Vec<ObjectRef> = next.policies().keys().cloned().collect();
    match rng.below(7) {
        0 if !pods.is_empty() => {
            let id = rng.pick(&pods).clone();
            let labels = labels(&mut rng, &POD_LABELS);
            if let Some(p) = next.pod_mut(&id) {
                p.labels = labels;
            }
        }
        1 if !pods.is_empty() => {
            let id = rng.pick(&pods).clone();
            next.remove_pod(&id);
        }
        2 => {
            let ns = rng.pick(&NAMESPACES).to_string();
            let labels = labels(&mut rng, &NS_LABELS);
            next.upsert_namespace(Namespace::new(ns, labels));
        }
        3 if !policies.is_empty() => {
            let id = rng.pick(&policies).clone();
            next.remove_policy(&id);
        }
        4 if !policies.is_empty() => {
            let id = rng.pick(&policies).clone();
            if let Some(old) = cluster.policies().get(&id) {
                let mut p = old.clone();
                match rng.below(3) {
                    0 => p.ingress = rules(&mut rng, &id.namespace),
                    1 => p.egress = rules(&mut rng, &id.namespace),
                    _ => p.pod_selector = selector(&mut rng, &POD_LABELS),
                }
                next.upsert_policy(p);
            }
        }
        5 => {
            let i = pods.len() + 100 + rng.below(50);
            let p = pod(&mut rng, i, &Shape::default());
            next.upsert_pod(p);
        }
        _ => {
            let namespace = rng.pick(&NAMESPACES).to_string();
            next.upsert_policy(Policy {
                id: ObjectRef::new(namespace.clone(), format!("added{}", rng.below(3))),
                pod_selector: selector(&mut rng, &POD_LABELS),
                isolates_ingress: true,
                isolates_egress: rng.one_in(2),
                ingress: rules(&mut rng, &namespace),
                egress: rules(&mut rng, &namespace),
                enforcement: crate::model::Enforcement::Enforce,
            });
        }
    }
    next
}

/// Size of a [`workload`].
#[derive(Debug, Clone, Copy)]
pub struct WorkloadSize {
    /// Namespaces.
    pub namespaces: usize,
    /// Pods (spread over the namespaces in deployments of 1-10 replicas).
    pub pods: usize,
    /// Policies (spread over the namespaces).
    pub policies: usize,
    /// Nodes (pods are spread round-robin; at most 250 pods per node).
    pub nodes: usize,
}

impl WorkloadSize {
    /// 100 pods, 20 policies, 5 namespaces, 2 nodes.
    pub const SMALL: WorkloadSize = WorkloadSize {
        namespaces: 5,
        pods: 100,
        policies: 20,
        nodes: 2,
    };
    /// 10k pods, 1k policies, 100 namespaces, 50 nodes.
    pub const MEDIUM: WorkloadSize = WorkloadSize {
        namespaces: 100,
        pods: 10_000,
        policies: 1_000,
        nodes: 50,
    };
    /// 100k pods, 10k policies, 1000 namespaces, 500 nodes.
    pub const LARGE: WorkloadSize = WorkloadSize {
        namespaces: 1_000,
        pods: 100_000,
        policies: 10_000,
        nodes: 500,
    };

    /// A preset by name: `small`, `medium` or `large`.
    pub fn named(name: &str) -> Option<WorkloadSize> {
        match name {
            "small" => Some(Self::SMALL),
            "medium" => Some(Self::MEDIUM),
            "large" => Some(Self::LARGE),
            _ => None,
        }
    }
}

/// `pod` of a [`workload`] with its `tier` label flipped between `frontend` and `backend` (a `db`
/// or unlabelled pod becomes `frontend`): the relabel the tier-to-tier policies' peers see.
pub fn tier_flipped(pod: &Pod) -> Pod {
    let mut flipped = pod.clone();
    let tier = if flipped.labels.get("tier") == Some("frontend") {
        "backend"
    } else {
        "frontend"
    };
    flipped.labels.insert("tier", tier);
    flipped
}

/// A cluster shaped like production ones, at any size: namespaces labelled with teams and
/// environments; deployments with app and tier labels and named container ports; and per namespace a
/// default-deny, then policies allowing the same namespace, other teams' namespaces on a named port,
/// tier to tier, DNS egress to kube-system, and ipBlock egress with excepts on an endPort range. One
/// deployment in four is dual-stack; kube-system runs two DNS pods. Deterministic for a seed.
pub fn workload(seed: u64, size: WorkloadSize) -> ClusterState {
    let mut rng = Rng::new(seed);
    let mut cluster = ClusterState::new();
    cluster.upsert_namespace(Namespace::new("kube-system", Labels::new()));
    for d in 0..2u8 {
        cluster.upsert_pod(Pod {
            id: ObjectRef::new("kube-system", format!("coredns-{d}")),
            labels: Labels::from([("k8s-app".to_string(), "kube-dns".to_string())]),
            node: Some(format!("node-{}", d as usize % size.nodes.max(1)).into()),
            ips: vec![IpAddr::from([10, 63, 0, 10 + d])],
            host_network: false,
            host_ips: vec![],
            phase: PodPhase::Active,
            ports: vec![
                ContainerPort {
                    name: Some("dns".into()),
                    port: 53,
                    protocol: Protocol::Udp,
                },
                ContainerPort {
                    name: Some("dns-tcp".into()),
                    port: 53,
                    protocol: Protocol::Tcp,
                },
            ],
            owner: None,
            live: true,
            workload: None,
        });
    }
    let teams = ["payments", "search", "web", "data", "platform"];
    let envs = ["prod", "staging", "dev"];
    let namespaces: Vec<String> = (0..size.namespaces.max(1))
        .map(|i| format!("ns-{i}"))
        .collect();
    for ns in &namespaces {
        let mut labels = Labels::new();
        labels.insert("team", rng.pick(&teams).to_string());
        labels.insert("env", rng.pick(&envs).to_string());
        cluster.upsert_namespace(Namespace::new(ns.clone(), labels));
    }
    let nodes = size.nodes.max(1);
    let mut per_node = vec![0usize; nodes];
    let tiers = ["frontend", "backend", "db"];
    let mut i = 0;
    let mut deployment = 0;
    while i < size.pods {
        let ns = &namespaces[deployment % namespaces.len()];
        let app = format!("app-{deployment}");
        let tier = *rng.pick(&tiers);
        let replicas = 1 + rng.below(10);
        // One deployment in four is dual-stack.
        let dual_stack = rng.one_in(4);
        for r in 0..replicas {
            if i >= size.pods {
                break;
            }
            let node = i % nodes;
            let k = per_node[node];
            per_node[node] += 1;
            let ip = IpAddr::from([
                10,
                64 + (node / 256) as u8,
                (node % 256) as u8,
                1 + (k % 250) as u8,
            ]);
            let mut labels = Labels::new();
            labels.insert("app", app.clone());
            labels.insert("tier", tier.to_string());
            // As the Deployment controller names them: ReplicaSet `<app>-<hash>`, its pods
            // labelled with the hash.
            let hash = format!(
                "{:x}",
                (deployment as u64 + 1).wrapping_mul(0x9e37_79b9) & 0xffff_ffff
            );
            labels.insert("pod-template-hash", hash.clone());
            cluster.upsert_pod(Pod {
                id: ObjectRef::new(ns.clone(), format!("{app}-{hash}-{r}")),
                labels,
                node: Some(format!("node-{node}").into()),
                ips: if dual_stack {
                    let v6 = (0xfd00_0000_0000_0000_0000_0000_0000_0000u128)
                        | ((node as u128) << 16)
                        | (1 + (k % 250) as u128);
                    vec![ip, IpAddr::from(v6.to_be_bytes())]
                } else {
                    vec![ip]
                },
                host_network: false,
                host_ips: vec![IpAddr::from([
                    192,
                    168,
                    (node / 256) as u8,
                    (node % 256) as u8,
                ])],
                phase: PodPhase::Active,
                ports: vec![
                    ContainerPort {
                        name: Some("http".into()),
                        port: 8080,
                        protocol: Protocol::Tcp,
                    },
                    ContainerPort {
                        name: Some("metrics".into()),
                        port: 9090,
                        protocol: Protocol::Tcp,
                    },
                ],
                owner: Some(Box::new(OwnerRef {
                    kind: "ReplicaSet".into(),
                    name: format!("{app}-{hash}").into(),
                })),
                live: true,
                workload: None,
            });
            i += 1;
        }
        deployment += 1;
    }
    let pods_selector = |k: &str, v: &str| LabelSelector::from_labels([(k, v)]);
    for p in 0..size.policies {
        let ns = namespaces[p % namespaces.len()].clone();
        let nth_in_ns = p / namespaces.len();
        let own = |sel: LabelSelector| {
            Peer::Pods(PodPeer {
                namespaces: NamespaceScope::Own(ns.clone()),
                pods: sel,
            })
        };
        let tcp = |port: PortSpec| PolicyPort {
            protocol: Protocol::Tcp,
            port,
        };
        let (name, policy) = match nth_in_ns % 6 {
            0 => (
                "default-deny",
                (LabelSelector::everything(), true, true, vec![], vec![]),
            ),
            1 => (
                "allow-same-namespace",
                (
                    LabelSelector::everything(),
                    true,
                    false,
                    vec![Rule {
                        peers: vec![own(LabelSelector::everything())],
                        ports: vec![],
                    }],
                    vec![],
                ),
            ),
            2 => {
                let team = rng.pick(&teams).to_string();
                let peer = Peer::Pods(PodPeer {
                    namespaces: NamespaceScope::Selected(LabelSelector::from_labels([(
                        "team",
                        team.as_str(),
                    )])),
                    pods: LabelSelector::everything(),
                });
                (
                    "allow-team-http",
                    (
                        pods_selector("tier", "frontend"),
                        true,
                        false,
                        vec![Rule {
                            peers: vec![peer],
                            ports: vec![tcp(PortSpec::Named("http".into()))],
                        }],
                        vec![],
                    ),
                )
            }
            3 => (
                "backend-from-frontend",
                (
                    pods_selector("tier", "backend"),
                    true,
                    false,
                    vec![Rule {
                        peers: vec![own(pods_selector("tier", "frontend"))],
                        ports: vec![tcp(PortSpec::Named("http".into()))],
                    }],
                    vec![],
                ),
            ),
            4 => {
                let dns = Peer::Pods(PodPeer {
                    namespaces: NamespaceScope::Selected(LabelSelector::from_labels([(
                        "kubernetes.io/metadata.name",
                        "kube-system",
                    )])),
                    pods: LabelSelector::from_labels([("k8s-app", "kube-dns")]),
                });
                let udp53 = PolicyPort {
                    protocol: Protocol::Udp,
                    port: PortSpec::Range(53, 53),
                };
                (
                    "allow-dns",
                    (
                        LabelSelector::everything(),
                        false,
                        true,
                        vec![],
                        vec![Rule {
                            peers: vec![dns],
                            ports: vec![udp53, tcp(PortSpec::Range(53, 53))],
                        }],
                    ),
                )
            }
            _ => {
                let block = IpBlock {
                    cidr: "203.0.113.0/24"
                        .parse()
                        .unwrap_or_else(|_| Cidr::host(IpAddr::from([203, 0, 113, 0]))),
                    except: vec!["203.0.113.128/25"
                        .parse()
                        .unwrap_or_else(|_| Cidr::host(IpAddr::from([203, 0, 113, 128])))],
                };
                (
                    "egress-partners",
                    (
                        pods_selector("tier", "backend"),
                        false,
                        true,
                        vec![],
                        vec![Rule {
                            peers: vec![Peer::IpBlock(block)],
                            ports: vec![tcp(PortSpec::Range(30000, 30100))],
                        }],
                    ),
                )
            }
        };
        let (pod_selector, isolates_ingress, isolates_egress, ingress, egress) = policy;
        cluster.upsert_policy(Policy {
            id: ObjectRef::new(ns, format!("{name}-{}", nth_in_ns / 6)),
            pod_selector,
            isolates_ingress,
            isolates_egress,
            ingress,
            egress,
            enforcement: crate::model::Enforcement::Enforce,
        });
    }
    cluster
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_tier_goes_between_frontend_and_backend() {
        let cluster = workload(1, WorkloadSize::SMALL);
        let tier_of = |tier: &str| {
            cluster
                .pods()
                .values()
                .find(|p| p.labels.get("tier") == Some(tier))
                .unwrap_or_else(|| panic!("a {tier} pod"))
        };
        for (from, to) in [
            ("frontend", "backend"),
            ("backend", "frontend"),
            ("db", "frontend"),
        ] {
            let pod = tier_of(from);
            let flipped = tier_flipped(pod);
            assert_eq!(flipped.labels.get("tier"), Some(to));
            assert_eq!(flipped.id, pod.id);
            assert_eq!(flipped.ips, pod.ips);
        }
    }
}
