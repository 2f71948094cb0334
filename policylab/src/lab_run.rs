//! A cluster on a lab: manifests become network namespaces, each node's compiled ruleset is enforced
//! by the same [`Dataplane`] the agent uses (one atomic transaction per change, a diff after the first),
//! and connectivity is measured with real packets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use policy_compiler::analysis::{evaluate, Endpoint, PortProto};
use policy_compiler::cidr::Family;
use policy_compiler::model::{ObjectRef, PodPhase, Protocol};
use policy_compiler::{compile_node, ClusterState};

use crate::lab::{Lab, LabError, LabSpec, PodSpec, Probe, ServiceSpec};
use crate::services::{per_pod_services, PerPodServiceIps};
use nftpolicy::dataplane::{ApplyReport, Dataplane};
use nftpolicy::kernel::{KernelError, NftKernel};

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
        .filter_map(|p| p.node.clone())
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
            pod.node = Some(names[i % names.len()].clone());
        }
        if pod.ips.is_empty() {
            let node_index = pod
                .node
                .as_ref()
                .and_then(|n| names.iter().position(|x| x == n))
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
    /// What the packets did.
    pub allowed: bool,
    /// What the evaluator predicts.
    pub predicted: bool,
}

/// A cluster running on a lab, with a dataplane per node.
pub struct LabCluster {
    cluster: ClusterState,
    lab: Lab,
    dataplanes: BTreeMap<String, Dataplane>,
    service_ips: PerPodServiceIps,
}

impl LabCluster {
    /// Builds the lab for a scheduled cluster (see [`schedule`]): a namespace per node and per
    /// participating pod, the input's Services plus one Service per pod, and an empty dataplane per
    /// node (nothing enforced until [`LabCluster::enforce`]). Every pod serves its declared container
    /// ports and also `serve`, the ports that will be probed, so that a probe measures policy rather
    /// than a missing listener.
    pub fn build(
        cluster: ClusterState,
        services: Vec<ServiceSpec>,
        serve: &[PortProto],
    ) -> Result<Self, LabRunError> {
        let (mut all_services, service_ips) = per_pod_services(&cluster, serve);
        all_services.extend(services);
        let nodes: Vec<String> = cluster.nodes().into_iter().map(str::to_string).collect();
        let pods = cluster
            .participating_pods()
            .filter_map(|p| {
                Some(PodSpec {
                    id: p.id.to_string(),
                    node: p.node.clone()?,
                    ips: p.ips.clone(),
                    ports: p
                        .ports
                        .iter()
                        .map(|c| (c.port, c.protocol))
                        .chain(serve.iter().map(|s| (s.port, s.protocol)))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                })
            })
            .collect();
        let lab = Lab::create(&LabSpec {
            nodes: nodes.iter().map(|n| n.as_str().into()).collect(),
            pods,
            services: all_services,
        })?;
        let mut dataplanes = BTreeMap::new();
        for node in &nodes {
            let ns = lab
                .node_netns(node)
                .ok_or_else(|| LabRunError::Unknown(format!("the lab has no node {node}")))?;
            dataplanes.insert(node.clone(), Dataplane::new(NftKernel::in_netns(ns)));
        }
        Ok(Self {
            cluster,
            lab,
            dataplanes,
            service_ips,
        })
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
            let ruleset = compile_node(&self.cluster, node);
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
        let chosen: Vec<&policy_compiler::model::Pod> = if pods.is_empty() {
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
        let mut cells = Vec::new();
        let mut probes = Vec::new();
        for port in &probed {
            for family in [Family::V4, Family::V6] {
                for from in &chosen {
                    let Some(from_ip) = from.ip(family) else {
                        continue;
                    };
                    for to in &chosen {
                        let Some(to_ip) = to.ip(family) else { continue };
                        let target = match via {
                            Via::Service if from.id != to.id => self
                                .service_ips
                                .get(&(to.id.clone(), family))
                                .copied()
                                .ok_or_else(|| {
                                    LabRunError::Unknown(format!("no Service for {}", to.id))
                                })?,
                            _ => to_ip,
                        };
                        let predicted = evaluate(
                            &self.cluster,
                            Endpoint::pod(from, from_ip),
                            Endpoint::pod(to, to_ip),
                            port.protocol,
                            port.port,
                        )
                        .allowed();
                        probes.push(Probe {
                            from: from.id.to_string(),
                            to: target,
                            port: port.port,
                            protocol: port.protocol,
                        });
                        cells.push((from.id.clone(), to.id.clone(), *port, family, predicted));
                    }
                }
            }
        }
        let results = self.lab.probe_all(&probes, timeout);
        let mut out = Vec::with_capacity(cells.len());
        for ((from, to, port, family, predicted), result) in cells.into_iter().zip(results) {
            out.push(Measurement {
                from,
                to,
                port,
                family,
                allowed: result?,
                predicted,
            });
        }
        Ok((out, skipped))
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
