//! A cluster on a lab: manifests become network namespaces, each node's compiled ruleset is enforced
//! by the same [`Dataplane`] the agent uses (one atomic transaction per change, a diff after the first),
//! and connectivity is measured with real packets.
//!
//! A lab node owns the addresses of its Node object (InternalIPs and ExternalIPs), its pods'
//! `status.hostIPs` and its host-network pods' IPs; host-network pods are no namespaces of their
//! own: their ports are served by their node, on its addresses, and a probe to one goes to its IP,
//! which is its node's. A probe from a pod to its own node's address crosses that node's input hook.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use policy_compiler::analysis::{evaluate, Endpoint, PortProto};
use policy_compiler::cidr::Family;
use policy_compiler::model::{ObjectRef, Pod, PodPhase, Protocol};
use policy_compiler::nft::json::parse_counters;
use policy_compiler::nft::CounterValue;
use policy_compiler::plan::{compile_node_with, CompileOptions, Compiled};
use policy_compiler::verify::to_own_node;
use policy_compiler::{cnp_conformance, ClusterState};

use crate::lab::{Lab, LabError, LabSpec, NodeSpec, PodSpec, Probe, ProbeOutcome, ServiceSpec};
use crate::services::{per_pod_services, PerPodServiceIps};
use nftpolicy::dataplane::{ApplyReport, Dataplane};
use nftpolicy::kernel::{Kernel, KernelError, NftKernel};

/// How probes address the destination pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The pod's own IP.
    Pod,
    /// The pod's own ClusterIP Service, DNATed on the source's node as kube-proxy does.
    Service,
}

impl Via {
    /// `pod` or `service`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Pod => "pod",
            Via::Service => "service",
        }
    }
}

/// A failure to build, enforce or probe.
#[derive(Debug, thiserror::Error)]
pub enum LabRunError {
    /// The lab itself failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A node's ruleset could not be applied.
    #[error("node {node}: {source}")]
    Dataplane {
        /// The node.
        node: String,
        /// The cause.
        source: KernelError,
    },
    /// A probe names something the lab does not have.
    #[error("{0}")]
    Unknown(String),
}

/// Gives unscheduled pods a node (round-robin over `nodes`, `node-1`…`node-N` when no pod names
/// one) and IP-less pods an IPv4 address from their node's pod CIDR (10.244.K.0/24 for the K-th
/// node), so the lab and the compiler see the same cluster.
pub fn schedule(cluster: &ClusterState, nodes: usize) -> ClusterState {
    let mut next = cluster.clone();
    let mut names: Vec<String> = cluster
        .pods()
        .values()
        .filter_map(|p| p.node.as_deref().map(str::to_string))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut k = 1;
    while names.len() < nodes.max(1) {
        let candidate = format!("node-{k}");
        if !names.contains(&candidate) {
            names.push(candidate);
        }
        k += 1;
    }
    let used: BTreeSet<IpAddr> = cluster
        .pods()
        .values()
        .flat_map(|p| p.ips.clone())
        .collect();
    let mut next_host: BTreeMap<usize, u8> = BTreeMap::new();
    let ids: Vec<ObjectRef> = cluster.pods().keys().cloned().collect();
    for (i, id) in ids.iter().enumerate() {
        let Some(pod) = next.pod_mut(id) else {
            continue;
        };
        if pod.host_network || pod.phase == PodPhase::Finished {
            continue;
        }
        if pod.node.is_none() {
            pod.node = Some(names[i % names.len()].as_str().into());
        }
        if pod.ips.is_empty() {
            let node_index = pod
                .node
                .as_ref()
                .and_then(|n| names.iter().position(|x| **x == **n))
                .unwrap_or(0);
            let host = next_host.entry(node_index).or_insert(10);
            loop {
                let ip = IpAddr::from([10, 244, (node_index + 1) as u8, *host]);
                *host = host.saturating_add(1);
                if !used.contains(&ip) {
                    pod.ips.push(ip);
                    break;
                }
                if *host == u8::MAX {
                    break;
                }
            }
        }
    }
    next
}

/// A connection to probe: from a pod with a network namespace of its own to a pod (a host-network
/// pod stands for its node's address), over one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Source pod (a participating pod).
    pub from: ObjectRef,
    /// Destination pod: a participating pod, or a host-network pod.
    pub to: ObjectRef,
    /// Port and protocol (TCP or UDP: the lab has no SCTP).
    pub port: PortProto,
    /// Address family.
    pub family: Family,
}

/// One measured cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// Source pod.
    pub from: ObjectRef,
    /// Destination pod.
    pub to: ObjectRef,
    /// Port and protocol.
    pub port: PortProto,
    /// Address family.
    pub family: Family,
    /// Whether the connection was made (`outcome` is [`ProbeOutcome::Reached`]).
    pub allowed: bool,
    /// What the packets met.
    pub outcome: ProbeOutcome,
    /// What the evaluator predicts.
    pub predicted: bool,
    /// Whether the destination is an address of the source's own node (the packets cross its input
    /// hook, not forward).
    pub to_own_node: bool,
}

/// The ports a pod serves: its container ports and `serve`.
fn served_ports(pod: &Pod, serve: &[PortProto]) -> Vec<(u16, Protocol)> {
    pod.ports
        .iter()
        .map(|c| (c.port, c.protocol))
        .chain(serve.iter().map(|s| (s.port, s.protocol)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Whether a pod runs in its node's network namespace: a running host-network pod on a node.
fn on_host_network(pod: &Pod) -> bool {
    pod.host_network && pod.phase == PodPhase::Active && pod.node.is_some()
}

/// The lab's nodes: those of the participating pods and of the host-network pods. Each owns the
/// addresses of its Node object, its pods' host IPs and its host-network pods' IPs, in that order
/// without repeats; a node with addresses serves its host-network pods' ports and `serve` on them.
fn node_specs(cluster: &ClusterState, serve: &[PortProto]) -> Vec<NodeSpec> {
    let mut nodes: BTreeMap<&str, NodeSpec> = BTreeMap::new();
    let on_nodes = cluster
        .pods()
        .values()
        .filter(|p| p.participates() || on_host_network(p));
    for pod in on_nodes {
        let Some(name) = pod.node.as_deref() else {
            continue;
        };
        let node = nodes.entry(name).or_insert_with(|| NodeSpec {
            name: name.to_string(),
            ips: cluster
                .node(name)
                .map(|n| n.addresses.clone())
                .unwrap_or_default(),
            ports: Vec::new(),
        });
        let own = pod.host_ips.iter().chain(if pod.host_network {
            pod.ips.as_slice()
        } else {
            &[]
        });
        for ip in own {
            if !node.ips.contains(ip) {
                node.ips.push(*ip);
            }
        }
        if pod.host_network {
            node.ports
                .extend(pod.ports.iter().map(|c| (c.port, c.protocol)));
        }
    }
    nodes
        .into_values()
        .map(|mut node| {
            if !node.ips.is_empty() {
                node.ports
                    .extend(serve.iter().map(|s| (s.port, s.protocol)));
            }
            node.ports.sort();
            node.ports.dedup();
            node
        })
        .collect()
}

/// A cluster running on a lab, with a dataplane per node.
pub struct LabCluster {
    cluster: ClusterState,
    lab: Lab,
    dataplanes: BTreeMap<String, Dataplane>,
    service_ips: PerPodServiceIps,
    options: CompileOptions,
}

impl LabCluster {
    /// Builds the lab for a scheduled cluster (see [`schedule`]): a namespace per node and per
    /// participating pod, the input's Services plus one Service per pod, and an empty dataplane per
    /// node (nothing enforced until [`LabCluster::enforce`]). Every pod serves its declared container
    /// ports and also `serve`, the ports that will be probed, so that a probe measures policy rather
    /// than a missing listener; every node with addresses (see the module) serves its host-network
    /// pods' ports and `serve` on each of them.
    pub fn build(
        cluster: ClusterState,
        services: Vec<ServiceSpec>,
        serve: &[PortProto],
    ) -> Result<Self, LabRunError> {
        let (mut all_services, service_ips) = per_pod_services(&cluster, serve);
        all_services.extend(services);
        let nodes = node_specs(&cluster, serve);
        let pods = cluster
            .participating_pods()
            .filter_map(|p| {
                Some(PodSpec {
                    id: p.id.to_string(),
                    node: p.node.as_deref()?.to_string(),
                    ips: p.ips.clone(),
                    ports: served_ports(p, serve),
                })
            })
            .collect();
        let lab = Lab::create(&LabSpec {
            nodes: nodes.clone(),
            pods,
            services: all_services,
        })?;
        let mut dataplanes = BTreeMap::new();
        for node in &nodes {
            let ns = lab.node_netns(&node.name).ok_or_else(|| {
                LabRunError::Unknown(format!("the lab has no node {}", node.name))
            })?;
            dataplanes.insert(node.name.clone(), Dataplane::new(NftKernel::in_netns(ns)));
        }
        Ok(Self {
            cluster,
            lab,
            dataplanes,
            service_ips,
            options: CompileOptions::default(),
        })
    }

    /// Compiles with `options` from the next [`LabCluster::enforce`] on (deny log, audit of every
    /// policy), as `policyd` does with its flags.
    pub fn set_options(&mut self, options: CompileOptions) {
        self.options = options;
    }

    /// What node `node` compiles now: its ruleset and the origins of its counters.
    pub fn compiled(&self, node: &str) -> Compiled {
        compile_node_with(&self.cluster, node, &self.options)
    }

    /// The values of node `node`'s named counters, read from its kernel.
    pub fn counters(&self, node: &str) -> Result<BTreeMap<String, CounterValue>, LabRunError> {
        let ns = self
            .lab
            .node_netns(node)
            .ok_or_else(|| LabRunError::Unknown(format!("the lab has no node {node}")))?;
        let listing =
            NftKernel::in_netns(ns)
                .list_counters()
                .map_err(|source| LabRunError::Dataplane {
                    node: node.to_string(),
                    source,
                })?;
        match listing {
            Some(json) => parse_counters(&json)
                .map_err(|e| LabRunError::Unknown(format!("node {node}: counters: {e}"))),
            None => Ok(BTreeMap::new()),
        }
    }

    /// The cluster as enforced.
    pub fn cluster(&self) -> &ClusterState {
        &self.cluster
    }

    /// Changes the cluster (policies, labels); call [`LabCluster::enforce`] to apply. Pods must
    /// keep their nodes and addresses: the lab's topology is fixed.
    pub fn cluster_mut(&mut self) -> &mut ClusterState {
        &mut self.cluster
    }

    /// The lab.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// Compiles every node's ruleset and applies it: the whole table the first time, the difference
    /// after that.
    pub fn enforce(&mut self) -> Result<BTreeMap<String, ApplyReport>, LabRunError> {
        let mut reports = BTreeMap::new();
        for (node, dataplane) in &mut self.dataplanes {
            let ruleset = compile_node_with(&self.cluster, node, &self.options).ruleset;
            let report = dataplane
                .apply(&ruleset)
                .map_err(|source| LabRunError::Dataplane {
                    node: node.clone(),
                    source,
                })?;
            reports.insert(node.clone(), report);
        }
        Ok(reports)
    }

    /// The nodes whose kernel table differs from the ruleset last applied to it (read back with
    /// `nft -j list table`): none, unless a transaction did not do what it was computed to do.
    pub fn kernel_differs(&self) -> Result<Vec<String>, LabRunError> {
        let mut differ = Vec::new();
        for (node, dataplane) in &self.dataplanes {
            let matches = dataplane
                .kernel_matches()
                .map_err(|source| LabRunError::Dataplane {
                    node: node.clone(),
                    source,
                })?;
            if !matches {
                differ.push(node.clone());
            }
        }
        Ok(differ)
    }

    /// Probes every ordered pair of `pods` (all participating pods when empty) on every port, in
    /// every family both pods have, and pairs each result with the evaluator's prediction. A pod
    /// probing itself uses its own IP (it never leaves its namespace). SCTP is not probed (this
    /// kernel has none): those ports are returned in the second list.
    pub fn measure(
        &self,
        pods: &[ObjectRef],
        ports: &[PortProto],
        via: Via,
        timeout: Duration,
    ) -> Result<(Vec<Measurement>, Vec<PortProto>), LabRunError> {
        let chosen: Vec<&Pod> = if pods.is_empty() {
            self.cluster.participating_pods().collect()
        } else {
            pods.iter()
                .map(|id| {
                    self.cluster
                        .pod(id)
                        .filter(|p| p.participates())
                        .ok_or_else(|| LabRunError::Unknown(format!("no participating pod {id}")))
                })
                .collect::<Result<_, _>>()?
        };
        let (probed, skipped): (Vec<PortProto>, Vec<PortProto>) =
            ports.iter().partition(|p| p.protocol != Protocol::Sctp);
        let mut flows = Vec::new();
        for port in &probed {
            for family in [Family::V4, Family::V6] {
                for from in chosen.iter().filter(|p| p.ip(family).is_some()) {
                    for to in chosen.iter().filter(|p| p.ip(family).is_some()) {
                        flows.push(Flow {
                            from: from.id.clone(),
                            to: to.id.clone(),
                            port: *port,
                            family,
                        });
                    }
                }
            }
        }
        Ok((self.probe(&flows, via, timeout)?, skipped))
    }

    /// Probes each flow, in parallel, and pairs each result with the evaluator's prediction, in
    /// input order. With [`Via::Service`], a flow to another participating pod goes to that pod's
    /// Service; a flow to a host-network pod goes to its IP (its node's address) either way.
    pub fn probe(
        &self,
        flows: &[Flow],
        via: Via,
        timeout: Duration,
    ) -> Result<Vec<Measurement>, LabRunError> {
        let mut cells = Vec::with_capacity(flows.len());
        let mut probes = Vec::with_capacity(flows.len());
        for flow in flows {
            let predicted = predict(&self.cluster, flow)?;
            let target = match (via, predicted.destination.pod) {
                (Via::Service, Some(to)) if flow.from != flow.to => self
                    .service_ips
                    .get(&(to.id.clone(), flow.family))
                    .copied()
                    .ok_or_else(|| LabRunError::Unknown(format!("no Service for {}", to.id)))?,
                _ => predicted.destination.ip,
            };
            probes.push(Probe {
                from: flow.from.to_string(),
                to: target,
                port: flow.port.port,
                protocol: flow.port.protocol,
            });
            cells.push((flow, predicted.allowed, predicted.to_own_node));
        }
        let results = self.lab.probe_outcomes(&probes, timeout);
        let mut out = Vec::with_capacity(cells.len());
        for ((flow, predicted, own_node), result) in cells.into_iter().zip(results) {
            let outcome = result?;
            out.push(Measurement {
                from: flow.from.clone(),
                to: flow.to.clone(),
                port: flow.port,
                family: flow.family,
                allowed: outcome.reached(),
                outcome,
                predicted,
                to_own_node: own_node,
            });
        }
        Ok(out)
    }

    /// Removes the lab (also done on drop).
    pub fn teardown(self) -> Result<(), LabRunError> {
        Ok(self.lab.teardown()?)
    }
}

/// The result of one conformance case on the lab.
#[derive(Debug, Clone, Default)]
pub struct CaseOutcome {
    /// Steps run.
    pub steps: usize,
    /// Cells compared (loopback excluded, as upstream does).
    pub cells: usize,
    /// Cells where packets disagreed with upstream's expectation.
    pub mismatches: Vec<String>,
    /// Transactions applied after the first full load, and their operations.
    pub partial_applies: usize,
}

/// Runs one upstream case on its own lab: the model, then each step's changes applied as a diff
/// (the agent's way), then each probe through the pods' Services, compared with upstream's matrix.
pub fn run_case(
    model: &ClusterState,
    case: &policy_compiler::conformance::Case,
    timeout: Duration,
) -> Result<CaseOutcome, LabRunError> {
    let pods = case.pod_refs();
    let ports: Vec<PortProto> = case
        .steps
        .iter()
        .flat_map(|s| &s.probes)
        .map(|p| PortProto {
            port: p.port,
            protocol: p.protocol(),
        })
        .collect();
    let mut lab = LabCluster::build(schedule(model, 2), Vec::new(), &ports)?;
    let mut outcome = CaseOutcome::default();
    for (i, step) in case.steps.iter().enumerate() {
        case.apply_step(i, lab.cluster_mut())
            .map_err(|e| LabRunError::Unknown(e.to_string()))?;
        let reports = lab.enforce()?;
        outcome.partial_applies += reports
            .values()
            .filter(|r| !r.full && r.operations > 0)
            .count();
        outcome.steps += 1;
        for probe in &step.probes {
            let port = PortProto {
                port: probe.port,
                protocol: probe.protocol(),
            };
            let expected = probe.expected(&pods);
            let (measured, _) = lab.measure(&pods, &[port], Via::Service, timeout)?;
            for m in measured.iter().filter(|m| m.from != m.to) {
                outcome.cells += 1;
                let want = expected.get(&(m.from.clone(), m.to.clone())).copied();
                if want != Some(m.allowed) {
                    outcome.mismatches.push(format!(
                        "step {} ({}): {} -> {} {}: upstream expects {:?}, packets {}",
                        i + 1,
                        step.description,
                        m.from,
                        m.to,
                        m.port,
                        want,
                        if m.allowed { "passed" } else { "were dropped" }
                    ));
                }
            }
        }
    }
    lab.teardown()?;
    Ok(outcome)
}

/// The result of one network-policy-api conformance case on the lab.
#[derive(Debug, Clone, Default)]
pub struct CnpCaseOutcome {
    /// Steps run.
    pub steps: usize,
    /// Probes sent as packets, by family (TCP and UDP).
    pub measured: BTreeMap<Family, usize>,
    /// Of those, the probes to an address of the source's own node (through its input hook).
    pub to_own_node: usize,
    /// SCTP probes, in both families, checked against the evaluator only (this kernel has no SCTP).
    pub sctp_evaluated: usize,
    /// Transactions applied after the first full load.
    pub partial_applies: usize,
    /// Probes whose packets, or whose evaluator verdict, differ from upstream's expectation.
    pub mismatches: Vec<String>,
}

impl CnpCaseOutcome {
    /// Probes sent as packets, over both families.
    pub fn measured_total(&self) -> usize {
        self.measured.values().sum()
    }
}

/// What upstream requires of a probe's packets: a connection when it is allowed, a timeout (a drop,
/// not a refusal) when it is not.
fn upstream_outcome(allowed: bool) -> ProbeOutcome {
    if allowed {
        ProbeOutcome::Reached
    } else {
        ProbeOutcome::TimedOut
    }
}

/// Runs one network-policy-api case on its own lab: the model (host-network pods served by their
/// nodes, on the nodes' addresses), then each step's changes enforced (the whole ruleset first, a
/// diff after; each node's table read back must be the compiled ruleset), then each of the step's
/// probes in IPv4 and in IPv6 to the server pod's IP (a host-network pod's being its node's), all
/// at once. A TCP or UDP probe must reach when upstream allows it and time out when it does not,
/// and the evaluator must agree; an SCTP probe is checked against the evaluator only.
pub fn run_cnp_case(
    model: &cnp_conformance::Model,
    case: &cnp_conformance::Case,
    timeout: Duration,
) -> Result<CnpCaseOutcome, LabRunError> {
    let serve: Vec<PortProto> = case
        .probes()
        .filter(|p| p.protocol != Protocol::Sctp)
        .map(|p| PortProto {
            port: p.port,
            protocol: p.protocol,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut lab = LabCluster::build(model.cluster.clone(), Vec::new(), &serve)?;
    let mut outcome = CnpCaseOutcome::default();
    for (i, step) in case.steps.iter().enumerate() {
        case.apply_step(i, lab.cluster_mut())
            .map_err(|e| LabRunError::Unknown(e.to_string()))?;
        let reports = lab.enforce()?;
        outcome.partial_applies += reports
            .values()
            .filter(|r| !r.full && r.operations > 0)
            .count();
        outcome.steps += 1;
        for node in lab.kernel_differs()? {
            outcome.mismatches.push(format!(
                "step {} ({}): node {node}: the kernel's table is not the compiled ruleset",
                i + 1,
                step.description
            ));
        }
        let mut flows = Vec::new();
        let mut expected = Vec::new();
        for probe in &step.probes {
            for family in [Family::V4, Family::V6] {
                let port = PortProto {
                    port: probe.port,
                    protocol: probe.protocol,
                };
                let what = format!(
                    "step {} ({}): {} -> {} {port} IPv{}",
                    i + 1,
                    step.description,
                    probe.from,
                    probe.to,
                    family.number()
                );
                let flow = Flow {
                    from: probe.from.clone(),
                    to: probe.to.clone(),
                    port,
                    family,
                };
                if probe.protocol == Protocol::Sctp {
                    outcome.sctp_evaluated += 1;
                    let predicted = predict(lab.cluster(), &flow)?.allowed;
                    if predicted != probe.allowed {
                        outcome.mismatches.push(format!(
                            "{what}: upstream expects {}, the evaluator says {} (SCTP, not probed)",
                            allowed_word(probe.allowed),
                            allowed_word(predicted)
                        ));
                    }
                    continue;
                }
                flows.push(flow);
                expected.push((what, probe.allowed));
            }
        }
        let measured = lab.probe(&flows, Via::Pod, timeout)?;
        for (m, (what, allowed)) in measured.iter().zip(expected) {
            *outcome.measured.entry(m.family).or_default() += 1;
            outcome.to_own_node += usize::from(m.to_own_node);
            let want = upstream_outcome(allowed);
            if m.outcome != want || m.predicted != allowed {
                outcome.mismatches.push(format!(
                    "{what}: upstream expects {} ({want}), packets {}, the evaluator says {}{}",
                    allowed_word(allowed),
                    m.outcome,
                    allowed_word(m.predicted),
                    if m.to_own_node {
                        " (to the source's own node)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    lab.teardown()?;
    Ok(outcome)
}

fn allowed_word(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "denied"
    }
}

/// What the evaluator says of a flow.
struct Predicted<'c> {
    /// The destination as the evaluator takes it: a participating pod, or an address (a
    /// host-network pod's IP, its node's).
    destination: Endpoint<'c>,
    /// Whether the connection is allowed.
    allowed: bool,
    /// Whether the destination is an address of the source's own node.
    to_own_node: bool,
}

/// The evaluator's verdict on a flow, from the source pod's IP of the family to the destination
/// pod's (a host-network pod's being its node's).
fn predict<'c>(cluster: &'c ClusterState, flow: &Flow) -> Result<Predicted<'c>, LabRunError> {
    let family = flow.family.number();
    let from = cluster
        .pod(&flow.from)
        .filter(|p| p.participates())
        .ok_or_else(|| {
            LabRunError::Unknown(format!(
                "no pod {} with a network namespace of its own (running, not on the host \
                 network, with an IP) to probe from",
                flow.from
            ))
        })?;
    let to = cluster
        .pod(&flow.to)
        .filter(|p| p.participates() || on_host_network(p))
        .ok_or_else(|| {
            LabRunError::Unknown(format!(
                "no pod {} to probe (a running pod, or a host-network pod on a node)",
                flow.to
            ))
        })?;
    let (Some(from_ip), Some(to_ip)) = (from.ip(flow.family), to.ip(flow.family)) else {
        return Err(LabRunError::Unknown(format!(
            "{} or {} has no IPv{family} address",
            flow.from, flow.to
        )));
    };
    let source = Endpoint::pod(from, from_ip);
    let destination = if to.participates() {
        Endpoint::pod(to, to_ip)
    } else {
        Endpoint::from_ip(cluster, to_ip)
    };
    let to_own_node = to_own_node(cluster, &source, &destination);
    let allowed = evaluate(
        cluster,
        source,
        destination,
        flow.port.protocol,
        flow.port.port,
    )
    .allowed();
    Ok(Predicted {
        destination,
        allowed,
        to_own_node,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn cnp_model() -> cnp_conformance::Model {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/network-policy-api");
        cnp_conformance::Suite::read(&dir)
            .unwrap_or_else(|e| panic!("{e}"))
            .model
    }

    #[test]
    fn nodes_own_their_node_objects_addresses_and_serve_their_host_network_pods_ports() {
        let serve = [PortProto {
            port: 80,
            protocol: Protocol::Tcp,
        }];
        let nodes = node_specs(&cnp_model().cluster, &serve);
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node-1", "node-2"]);
        for (node, n) in nodes.iter().zip([1, 2]) {
            // The Node's InternalIPs and ExternalIPs, as written (the pods' host IPs and the
            // centaur's IPs are its InternalIPs).
            assert_eq!(
                node.ips,
                [
                    ip(&format!("192.168.100.{n}")),
                    ip(&format!("fd00:192:168:100::{n}")),
                    ip(&format!("203.0.113.{n}")),
                    ip(&format!("2001:db8:100::{n}")),
                ]
            );
            // centaur-<n-1>'s declared ports, and the probed port.
            assert_eq!(
                node.ports,
                [
                    (80, Protocol::Tcp),
                    (34345, Protocol::Tcp),
                    (34346, Protocol::Tcp),
                    (34347, Protocol::Udp),
                    (34349, Protocol::Udp),
                ]
            );
        }
    }

    #[test]
    fn nodes_without_node_objects_or_host_addresses_have_no_address() {
        let mut cluster = cnp_model().cluster;
        let centaurs: Vec<ObjectRef> = cluster
            .pods()
            .values()
            .filter(|p| p.host_network)
            .map(|p| p.id.clone())
            .collect();
        for id in &centaurs {
            cluster.remove_pod(id);
        }
        let ids: Vec<ObjectRef> = cluster.pods().keys().cloned().collect();
        for id in &ids {
            if let Some(pod) = cluster.pod_mut(id) {
                pod.host_ips.clear();
            }
        }
        for name in ["node-1", "node-2"] {
            cluster.remove_node(name);
        }
        // As the upstream e2e model: the nodes have no address, so they serve nothing.
        let serve = [PortProto {
            port: 80,
            protocol: Protocol::Tcp,
        }];
        let nodes = node_specs(&cluster, &serve);
        assert_eq!(nodes.len(), 2);
        assert!(nodes.iter().all(|n| n.ips.is_empty() && n.ports.is_empty()));
    }
}
