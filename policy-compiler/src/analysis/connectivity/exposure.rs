//! Exposure (`policyc connections --exposure`): which workloads accept connections from, or may
//! open them to, whole categories of peers rather than named ones — any address, any pod of any
//! namespace, any pod of a namespace (or of the namespaces a selector matches, new ones
//! included), any external address — and which workloads no policy isolates at all. It reads the
//! NetworkPolicies' rules only: ClusterNetworkPolicies are not looked at.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Value};

use super::{ConnSet, Connectivity, Party, PortRanges};
use crate::cidr::Family;
use crate::cluster::ClusterState;
use crate::model::{Direction, NamespaceScope, Peer, PolicyPort, PortSpec, Protocol};

/// A category of peers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exposed {
    /// Every source or destination: the workload is not isolated in this direction, or a rule
    /// has no peers.
    AnyAddress,
    /// Every pod of every namespace (`namespaceSelector: {}` without a pod selector).
    AnyNamespace,
    /// Every pod of the namespaces a selector matches, now or later.
    Namespaces(String),
    /// Every pod of one namespace (`podSelector: {}` in the policy's namespace).
    Namespace(String),
    /// Every external address of a family (`ipBlock` `0.0.0.0/0` or `::/0` without except).
    AnyExternal(Family),
}

impl fmt::Display for Exposed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exposed::AnyAddress => f.write_str("any address"),
            Exposed::AnyNamespace => f.write_str("any pod in any namespace"),
            Exposed::Namespaces(s) => write!(f, "any pod in namespaces with {s}"),
            Exposed::Namespace(n) => write!(f, "any pod in namespace {n}"),
            Exposed::AnyExternal(family) => write!(f, "any IPv{} address", family.number()),
        }
    }
}

/// One exposure of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// The workload.
    pub workload: Party,
    /// `Ingress`: it accepts from the category; `Egress`: it may open connections to it.
    pub direction: Direction,
    /// The category of peers.
    pub peer: Exposed,
    /// What is allowed with them. In egress, a named port stands for every number the input's
    /// pods declare under that name (it resolves on each destination pod).
    pub allowed: ConnSet,
}

/// The exposure report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExposureReport {
    /// Every exposure, by workload, direction and category.
    pub exposures: Vec<Exposure>,
    /// Workloads that no policy isolates, in either direction.
    pub unisolated: Vec<Party>,
}

/// Finds the exposures of every workload of `connectivity`.
pub fn exposure(cluster: &ClusterState, connectivity: &Connectivity) -> ExposureReport {
    let mut report = ExposureReport::default();
    // What each named port means somewhere: egress to a category reaches all of them.
    let mut named: BTreeMap<(&str, Protocol), Vec<u16>> = BTreeMap::new();
    for pod in cluster.participating_pods() {
        for p in &pod.ports {
            if let Some(name) = &p.name {
                named.entry((name, p.protocol)).or_default().push(p.port);
            }
        }
    }
    for party in connectivity.parties() {
        if !matches!(party, Party::Workload(_)) {
            continue;
        }
        let Some(pod) = connectivity
            .members(party)
            .first()
            .and_then(|id| cluster.pod(id))
        else {
            continue;
        };
        let mut any_isolation = false;
        for direction in Direction::BOTH {
            let policies = connectivity.isolated_by(party, direction);
            let mut found: BTreeMap<Exposed, ConnSet> = BTreeMap::new();
            if policies.is_empty() {
                found.insert(Exposed::AnyAddress, ConnSet::all());
            }
            any_isolation |= !policies.is_empty();
            for policy in policies.iter().filter_map(|id| cluster.policies().get(*id)) {
                for rule in policy.rules(direction) {
                    let set = match direction {
                        Direction::Ingress => ConnSet::of_rule(&rule.ports, |name, protocol| {
                            pod.named_port(name, protocol)
                        }),
                        Direction::Egress => egress_set(&rule.ports, &named),
                    };
                    if set.is_empty() {
                        continue;
                    }
                    let mut categories = Vec::new();
                    if rule.peers.is_empty() {
                        categories.push(Exposed::AnyAddress);
                    }
                    for peer in &rule.peers {
                        match peer {
                            Peer::Pods(pp) if pp.pods.is_everything() => {
                                categories.push(match &pp.namespaces {
                                    NamespaceScope::Selected(s) if s.is_everything() => {
                                        Exposed::AnyNamespace
                                    }
                                    NamespaceScope::Selected(s) => {
                                        Exposed::Namespaces(s.to_string())
                                    }
                                    NamespaceScope::Own(ns) => Exposed::Namespace(ns.clone()),
                                });
                            }
                            Peer::IpBlock(b) if b.cidr.prefix_len() == 0 && b.except.is_empty() => {
                                categories.push(Exposed::AnyExternal(b.cidr.family()));
                            }
                            _ => {}
                        }
                    }
                    for category in categories {
                        let entry = found.entry(category).or_default();
                        *entry = entry.union(&set);
                    }
                }
            }
            for (peer, allowed) in found {
                report.exposures.push(Exposure {
                    workload: party.clone(),
                    direction,
                    peer,
                    allowed,
                });
            }
        }
        if !any_isolation {
            report.unisolated.push(party.clone());
        }
    }
    report
}

/// The connections an egress rule's ports allow to a whole category of destinations: a named port
/// counts as every number some pod declares for it.
fn egress_set(ports: &[PolicyPort], named: &BTreeMap<(&str, Protocol), Vec<u16>>) -> ConnSet {
    if ports.is_empty() {
        return ConnSet::all();
    }
    let mut set = ConnSet::none();
    for p in ports {
        let numbers: Vec<u16> = match &p.port {
            PortSpec::Named(name) => named
                .get(&(name.as_str(), p.protocol))
                .cloned()
                .unwrap_or_default(),
            _ => {
                set = set.union(&ConnSet::of_rule(std::slice::from_ref(p), |_, _| None));
                continue;
            }
        };
        for n in numbers {
            set = set.union(&ConnSet::ports(p.protocol, PortRanges::range(n, n)));
        }
    }
    set
}

impl ExposureReport {
    /// `ns/web[Deployment] <= any pod in any namespace : TCP 8080` (`=>` for egress), then the
    /// workloads isolated in no direction.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for e in &self.exposures {
            let arrow = match e.direction {
                Direction::Ingress => "<=",
                Direction::Egress => "=>",
            };
            out.push_str(&format!(
                "{} {arrow} {} : {}\n",
                e.workload, e.peer, e.allowed
            ));
        }
        if !self.unisolated.is_empty() {
            out.push_str("Isolated in no direction:\n");
            for w in &self.unisolated {
                out.push_str(&format!("{w}\n"));
            }
        }
        out
    }

    /// `{"exposure": [{"workload", "direction", "peer", "all", "allowed"}], "unisolated": [...]}`.
    pub fn to_json(&self) -> Value {
        let exposures: Vec<Value> = self
            .exposures
            .iter()
            .map(|e| {
                let (all, allowed) = e.allowed.json_fields();
                json!({
                    "workload": e.workload.to_string(),
                    "direction": e.direction.as_str(),
                    "peer": e.peer.to_string(),
                    "all": all,
                    "allowed": allowed,
                })
            })
            .collect();
        let unisolated: Vec<String> = self.unisolated.iter().map(|p| p.to_string()).collect();
        json!({"exposure": exposures, "unisolated": unisolated})
    }
}
