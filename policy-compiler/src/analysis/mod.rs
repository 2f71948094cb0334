//! Connectivity straight from the NetworkPolicy API semantics: the evaluator behind `policyc matrix`
//! and `policyc explain`, and the reference the rendered rulesets are tested against.
//!
//! The evaluator deliberately shares no code with planning and rendering (no index, no sets): it
//! scans policies and reads the rules as the API defines them, so the two can be checked against each
//! other.

pub mod connectivity;
mod explain;
pub mod graph;
mod matrix;

use std::net::IpAddr;

use crate::cidr::Family;
use crate::cluster::ClusterState;
use crate::model::{
    Direction, NamespaceScope, ObjectRef, Peer, Pod, Policy, PortSpec, Protocol, Rule,
};

pub use explain::{explain_json, explain_text};
pub use matrix::{declared_ports, write_grid, Matrix, MatrixFlow, PortProto};

/// One end of a connection: a participating pod (by one of its IPs) or a bare address.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// The address used.
    pub ip: IpAddr,
    /// The participating pod holding it, if any.
    pub pod: Option<&'a Pod>,
}

impl<'a> Endpoint<'a> {
    /// The endpoint for an address: the participating pod holding it, or an outside address.
    pub fn from_ip(cluster: &'a ClusterState, ip: IpAddr) -> Self {
        Self {
            ip,
            pod: cluster.pod_by_ip(&ip),
        }
    }

    /// A participating pod by one of its addresses.
    pub fn pod(pod: &'a Pod, ip: IpAddr) -> Self {
        Self { ip, pod: Some(pod) }
    }

    fn describe(&self) -> String {
        match self.pod {
            Some(p) => format!("{} ({})", p.id, self.ip),
            None => self.ip.to_string(),
        }
    }
}

/// A rule of a policy, named as `ns/policy ingress[i]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleRef {
    /// The policy.
    pub policy: ObjectRef,
    /// The direction.
    pub direction: Direction,
    /// The rule's index in `spec.ingress` or `spec.egress`.
    pub index: usize,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}[{}]", self.policy, self.direction, self.index)
    }
}

/// How one rule of an isolating policy judged the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCheck {
    /// The rule.
    pub rule: RuleRef,
    /// Whether a peer of the rule (or its empty peer list) matches the other end.
    pub peer_matches: bool,
    /// Whether a port of the rule (or its empty port list) matches.
    pub port_matches: bool,
}

impl RuleCheck {
    /// Whether the rule allows the connection.
    pub fn allows(&self) -> bool {
        self.peer_matches && self.port_matches
    }
}

/// The verdict of one direction: egress at the source, or ingress at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionVerdict {
    /// The direction.
    pub direction: Direction,
    /// The pod whose policies apply (source for egress, destination for ingress), if it is one.
    pub pod: Option<ObjectRef>,
    /// Policies that isolate that pod in this direction.
    pub isolated_by: Vec<ObjectRef>,
    /// Every rule of those policies, with how it judged the connection.
    pub rules: Vec<RuleCheck>,
}

impl DirectionVerdict {
    /// Allowed: the pod is not isolated in this direction, or some rule allows the connection.
    pub fn allowed(&self) -> bool {
        self.isolated_by.is_empty() || self.rules.iter().any(RuleCheck::allows)
    }

    /// The rules that allow the connection.
    pub fn allowed_by(&self) -> impl Iterator<Item = &RuleRef> {
        self.rules.iter().filter(|r| r.allows()).map(|r| &r.rule)
    }
}

/// The verdict for a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionVerdict {
    /// Source, as `ns/pod (ip)` or an address.
    pub from: String,
    /// Destination.
    pub to: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
    /// A pod reaching its own address: the traffic never leaves its network namespace.
    pub loopback: bool,
    /// Traffic between a pod and its own node (kubelet probes, host-network pods): always allowed,
    /// and it never crosses the forward hook.
    pub node_local: bool,
    /// Egress at the source.
    pub egress: DirectionVerdict,
    /// Ingress at the destination.
    pub ingress: DirectionVerdict,
}

impl ConnectionVerdict {
    /// Whether the connection is allowed: loopback, or both directions allow it.
    pub fn allowed(&self) -> bool {
        self.loopback || self.node_local || (self.egress.allowed() && self.ingress.allowed())
    }
}

fn peer_matches(
    cluster: &ClusterState,
    policy: &Policy,
    peer: &Peer,
    other: &Endpoint<'_>,
) -> bool {
    match peer {
        Peer::IpBlock(block) => block.contains(&other.ip),
        Peer::Pods(p) => {
            let Some(pod) = other.pod else { return false };
            let ns_ok = match &p.namespaces {
                NamespaceScope::Own(ns) => {
                    debug_assert_eq!(ns, &policy.id.namespace);
                    pod.id.namespace == *ns
                }
                NamespaceScope::Selected(s) => cluster
                    .namespace(&pod.id.namespace)
                    .is_some_and(|n| s.matches(&n.labels)),
            };
            ns_ok && p.pods.matches(&pod.labels)
        }
    }
}

fn port_matches(rule: &Rule, destination: &Endpoint<'_>, protocol: Protocol, port: u16) -> bool {
    rule.ports.is_empty()
        || rule.ports.iter().any(|p| {
            p.protocol == protocol
                && match &p.port {
                    PortSpec::Any => true,
                    PortSpec::Range(a, b) => (*a..=*b).contains(&port),
                    PortSpec::Named(name) => {
                        destination.pod.and_then(|d| d.named_port(name, protocol)) == Some(port)
                    }
                }
        })
}

fn judge_direction(
    cluster: &ClusterState,
    direction: Direction,
    subject: &Endpoint<'_>,
    other: &Endpoint<'_>,
    destination: &Endpoint<'_>,
    protocol: Protocol,
    port: u16,
) -> DirectionVerdict {
    let mut verdict = DirectionVerdict {
        direction,
        pod: subject.pod.map(|p| p.id.clone()),
        isolated_by: Vec::new(),
        rules: Vec::new(),
    };
    let Some(pod) = subject.pod else {
        return verdict;
    };
    for policy in cluster.policies().values() {
        if policy.id.namespace != pod.id.namespace
            || !policy.isolates(direction)
            || !policy.pod_selector.matches(&pod.labels)
        {
            continue;
        }
        verdict.isolated_by.push(policy.id.clone());
        for (index, rule) in policy.rules(direction).iter().enumerate() {
            let peer_ok = rule.peers.is_empty()
                || rule
                    .peers
                    .iter()
                    .any(|peer| peer_matches(cluster, policy, peer, other));
            verdict.rules.push(RuleCheck {
                rule: RuleRef {
                    policy: policy.id.clone(),
                    direction,
                    index,
                },
                peer_matches: peer_ok,
                port_matches: port_matches(rule, destination, protocol, port),
            });
        }
    }
    verdict
}

/// Judges a new connection from `from` to `to` on `port`/`protocol`.
pub fn evaluate(
    cluster: &ClusterState,
    from: Endpoint<'_>,
    to: Endpoint<'_>,
    protocol: Protocol,
    port: u16,
) -> ConnectionVerdict {
    let loopback = match (from.pod, to.pod) {
        (Some(a), Some(b)) => a.id == b.id,
        _ => from.ip == to.ip,
    };
    let on_own_node = |pod: Option<&Pod>, other: &Endpoint<'_>| {
        pod.is_some_and(|p| p.host_ips.contains(&other.ip))
    };
    let node_local = !loopback && (on_own_node(from.pod, &to) || on_own_node(to.pod, &from));
    ConnectionVerdict {
        from: from.describe(),
        to: to.describe(),
        protocol,
        port,
        loopback,
        node_local,
        egress: judge_direction(cluster, Direction::Egress, &from, &to, &to, protocol, port),
        ingress: judge_direction(cluster, Direction::Ingress, &to, &from, &to, protocol, port),
    }
}

/// The address family two endpoints can talk over, preferring IPv4, if any.
pub fn common_family(a: &Pod, b: &Pod) -> Option<Family> {
    [Family::V4, Family::V6]
        .into_iter()
        .find(|f| a.ip(*f).is_some() && b.ip(*f).is_some())
}

#[cfg(test)]
mod tests;
