//! What a repository holds, made into pods to analyse: each pod is reported as its workload
//! (`namespace/name[Kind]`, following ownerReferences: a ReplicaSet's pods are its Deployment's), a
//! workload without pods in the input gets one representative pod from its template, and pods that
//! were never scheduled get addresses synthesised from the pod CIDRs, stably by namespace and name.
//!
//! Only offline review does this ([`materialize`]); the agent enforces the pods the API reports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::cidr::{from_u128, Cidr, Family};
use crate::cluster::ClusterState;
use crate::model::{ObjectRef, OwnerRef, Pod, PodPhase, WorkloadRef};

/// The label the Deployment controller puts on a ReplicaSet's pods, whose value ends the
/// ReplicaSet's name (`web-5d8b9c` for Deployment `web`).
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The pod address ranges of the cluster (`--pod-cidr`): addresses are synthesised from the first
/// of each family, and the external address space excludes them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCidrs(Vec<Cidr>);

impl Default for PodCidrs {
    /// kind's defaults: `10.244.0.0/16` and `fd00:10:244::/56` (dual-stack).
    fn default() -> Self {
        Self(vec![
            Cidr::new(IpAddr::from([10, 244, 0, 0]), 16),
            Cidr::new(IpAddr::from([0xfd00, 0x10, 0x244, 0, 0, 0, 0, 0u16]), 56),
        ])
    }
}

/// Why `--pod-cidr` is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodCidrError {
    /// A CIDR does not parse.
    #[error("--pod-cidr: {0}")]
    Cidr(#[from] crate::cidr::CidrError),
    /// A CIDR is written with host bits.
    #[error("--pod-cidr {0}: host bits are set; the network is {1}")]
    HostBits(String, Cidr),
    /// No CIDR at all.
    #[error("--pod-cidr: give at least one CIDR, e.g. 10.244.0.0/16")]
    Empty,
    /// A range too small to hold pods.
    #[error("--pod-cidr {0}: too small to hold pods (at most /30 for IPv4, /126 for IPv6)")]
    TooSmall(Cidr),
}

impl PodCidrs {
    /// Parses one or more CIDRs (as given to `--pod-cidr`, each maybe comma-separated).
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, PodCidrError> {
        let mut cidrs = Vec::new();
        for value in values {
            for part in value
                .as_ref()
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                let cidr: Cidr = part.parse()?;
                let (addr, _) = part.split_once('/').unwrap_or((part, ""));
                if addr.parse::<IpAddr>().ok() != Some(cidr.addr()) {
                    return Err(PodCidrError::HostBits(part.to_string(), cidr));
                }
                let max = if cidr.family() == Family::V4 { 30 } else { 126 };
                if cidr.prefix_len() > max {
                    return Err(PodCidrError::TooSmall(cidr));
                }
                cidrs.push(cidr);
            }
        }
        if cidrs.is_empty() {
            return Err(PodCidrError::Empty);
        }
        Ok(Self(cidrs))
    }

    /// Every range.
    pub fn cidrs(&self) -> &[Cidr] {
        &self.0
    }

    /// The range addresses of a family are synthesised from.
    pub fn first(&self, family: Family) -> Option<Cidr> {
        self.0.iter().copied().find(|c| c.family() == family)
    }
}

/// Makes the cluster's workloads and unscheduled pods analysable: resolves each pod's workload,
/// adds a representative pod for each workload without pods, and synthesises addresses for pods
/// that were never scheduled (no node, no IP, no status).
pub fn materialize(cluster: &mut ClusterState, cidrs: &PodCidrs) {
    resolve_workloads(cluster);
    add_representatives(cluster);
    synthesize_addresses(cluster, cidrs);
}

/// Takes every participating pod without a node to run on `node` (a repository's workloads), so
/// that the node's ruleset reads as "a node running one replica of every workload".
pub fn place_unscheduled(cluster: &mut ClusterState, node: &str) {
    let unscheduled: Vec<ObjectRef> = cluster
        .participating_pods()
        .filter(|p| p.node.is_none())
        .map(|p| p.id.clone())
        .collect();
    for id in unscheduled {
        if let Some(pod) = cluster.pod_mut(&id) {
            pod.node = Some(node.into());
        }
    }
}

/// The top of a chain of owners: `owner` in `namespace`, then its own owner while the input holds
/// it (a ReplicaSet's Deployment).
fn top_owner(cluster: &ClusterState, namespace: &str, owner: &OwnerRef) -> WorkloadRef {
    let mut current = WorkloadRef::new(namespace, &*owner.name, &*owner.kind);
    let mut seen = BTreeSet::new();
    while let Some(next) = cluster
        .workloads()
        .get(&current)
        .and_then(|w| w.owner.as_ref())
    {
        if !seen.insert(current.clone()) {
            break;
        }
        current = WorkloadRef::new(namespace, &*next.name, &*next.kind);
    }
    current
}

/// The workload a pod is reported as, from its controller: its ReplicaSet's Deployment (from the
/// ReplicaSet, or from the `pod-template-hash` naming convention when the input lacks it), its
/// Job's CronJob, its StatefulSet...; `None` for a pod of no controller.
fn workload_of(cluster: &ClusterState, pod: &Pod) -> Option<WorkloadRef> {
    let owner = pod.owner.as_ref()?;
    let namespace = &*pod.id.namespace;
    let direct = WorkloadRef::new(namespace, &*owner.name, &*owner.kind);
    if &*owner.kind == "ReplicaSet" && !cluster.workloads().contains_key(&direct) {
        if let Some(hash) = pod.labels.get(POD_TEMPLATE_HASH) {
            if let Some(deployment) = owner.name.strip_suffix(&format!("-{hash}")) {
                return Some(WorkloadRef::new(namespace, deployment, "Deployment"));
            }
        }
    }
    Some(top_owner(cluster, namespace, owner))
}

fn resolve_workloads(cluster: &mut ClusterState) {
    let resolved: Vec<(ObjectRef, WorkloadRef)> = cluster
        .pods()
        .values()
        .filter(|p| p.workload.is_none())
        .filter_map(|p| workload_of(cluster, p).map(|w| (p.id.clone(), w)))
        .collect();
    for (id, workload) in resolved {
        if let Some(pod) = cluster.pod_mut(&id) {
            pod.workload = Some(Box::new(workload));
        }
    }
}

fn add_representatives(cluster: &mut ClusterState) {
    let with_pods: BTreeSet<WorkloadRef> = cluster
        .pods()
        .values()
        .filter_map(|p| p.workload.as_deref().cloned())
        .collect();
    // Each top workload once, from its own template when the input has it.
    let mut templates: BTreeMap<WorkloadRef, &crate::model::Workload> = BTreeMap::new();
    for workload in cluster.workloads().values() {
        let top = match &workload.owner {
            Some(owner) => top_owner(cluster, &workload.id.namespace, owner),
            None => workload.id.clone(),
        };
        if with_pods.contains(&top) {
            continue;
        }
        let own = top == workload.id;
        match templates.get(&top) {
            Some(existing) if existing.id == top || !own => {}
            _ => {
                templates.insert(top, workload);
            }
        }
    }
    let pods: Vec<Pod> = templates
        .into_iter()
        .map(|(top, w)| Pod {
            id: ObjectRef::new(&top.namespace, format!("{}[{}]", top.name, top.kind)),
            labels: w.labels.clone(),
            node: None,
            ips: Vec::new(),
            host_network: w.host_network,
            host_ips: Vec::new(),
            phase: PodPhase::Active,
            ports: w.ports.clone(),
            owner: None,
            live: false,
            workload: Some(Box::new(top)),
        })
        .collect();
    for pod in pods {
        cluster.upsert_pod(pod);
    }
}

/// FNV-1a, 64 bits: stable across platforms and releases (unlike the standard library's hasher).
fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn synthesize_addresses(cluster: &mut ClusterState, cidrs: &PodCidrs) {
    let wanted: Vec<ObjectRef> = cluster
        .pods()
        .values()
        .filter(|p| {
            p.ips.is_empty()
                && p.node.is_none()
                && !p.live
                && !p.host_network
                && p.phase == PodPhase::Active
        })
        .map(|p| p.id.clone())
        .collect();
    let mut used: BTreeSet<IpAddr> = cluster
        .pods()
        .values()
        .flat_map(|p| p.ips.iter().chain(&p.host_ips).copied())
        .collect();
    let mut assigned: BTreeMap<ObjectRef, Vec<IpAddr>> = BTreeMap::new();
    for family in [Family::V4, Family::V6] {
        let Some(cidr) = cidrs.first(family) else {
            continue;
        };
        let (first, last) = cidr.bounds();
        // Neither the network address nor the last one (IPv4's broadcast).
        let usable = last - first - 1;
        let mut order: Vec<(u64, &ObjectRef)> = wanted
            .iter()
            .map(|id| (fnv1a(&format!("{}/{}", id.namespace, id.name)), id))
            .collect();
        order.sort();
        for (hash, id) in order {
            let mut offset = u128::from(hash) % usable;
            // Collisions move to the next free address; the pod that hashes lower keeps its own.
            for _ in 0..usable.min(1 << 20) {
                let ip = from_u128(family, first + 1 + offset);
                if used.insert(ip) {
                    assigned.entry(id.clone()).or_default().push(ip);
                    break;
                }
                offset = (offset + 1) % usable;
            }
        }
    }
    for (id, ips) in assigned {
        if let Some(pod) = cluster.pod_mut(&id) {
            pod.ips = ips;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        deployment, documents, materialized, stateful_set, HTTP_ON_8080, ONE_CONTAINER,
    };

    /// A repository: Deployment web (port http, 8080), StatefulSet db and Pod debug.
    fn repo() -> String {
        documents(&[
            deployment("shop", "web", "app: web", HTTP_ON_8080),
            stateful_set("shop", "db", "app: db", ONE_CONTAINER),
            "apiVersion: v1
kind: Pod
metadata: {name: debug, namespace: shop, labels: {app: debug}}
spec: {containers: [{name: c, image: i}]}
"
            .to_string(),
        ])
    }

    #[test]
    fn each_workload_gets_one_representative_pod_with_stable_addresses() {
        let c = materialized(&repo(), &PodCidrs::default());
        let names: Vec<String> = c
            .pods()
            .values()
            .map(|p| p.workload_ref().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "shop/db[StatefulSet]",
                "shop/debug[Pod]",
                "shop/web[Deployment]"
            ]
        );
        for pod in c.pods().values() {
            assert!(pod.participates(), "{pod:?}");
            assert_eq!(pod.ips.len(), 2, "dual-stack by default: {pod:?}");
            assert!(PodCidrs::default()
                .cidrs()
                .iter()
                .any(|cidr| cidr.contains(&pod.ips[0])));
        }
        let web = c
            .pods()
            .values()
            .find(|p| p.workload_ref().name == "web")
            .expect("web");
        assert_eq!(
            web.named_port("http", crate::model::Protocol::Tcp),
            Some(8080)
        );
        // Adding an unrelated workload moves nobody.
        let more = format!("{}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: other, namespace: x}}\nspec: {{containers: [{{name: c, image: i}}]}}\n", repo());
        let c2 = materialized(&more, &PodCidrs::default());
        for pod in c.pods().values() {
            assert_eq!(c2.pod(&pod.id).expect("still there").ips, pod.ips);
        }
    }

    #[test]
    fn one_ipv4_cidr_gives_single_stack_pods() {
        let c = materialized(&repo(), &PodCidrs::parse(&["10.0.0.0/24"]).expect("cidr"));
        for pod in c.pods().values() {
            assert_eq!(pod.ips.len(), 1);
            assert!(Cidr::new(IpAddr::from([10, 0, 0, 0]), 24).contains(&pod.ips[0]));
            assert_ne!(pod.ips[0], IpAddr::from([10, 0, 0, 0]));
            assert_ne!(pod.ips[0], IpAddr::from([10, 0, 0, 255]));
        }
    }

    #[test]
    fn collisions_in_a_tiny_range_still_give_distinct_addresses() {
        let pods: String = (0..50)
            .map(|i| format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}}}\nspec: {{containers: [{{name: c, image: i}}]}}\n"))
            .collect();
        let c = materialized(&pods, &PodCidrs::parse(&["10.0.0.0/26"]).expect("cidr"));
        let ips: BTreeSet<IpAddr> = c.pods().values().flat_map(|p| p.ips.clone()).collect();
        assert_eq!(ips.len(), 50);
    }

    #[test]
    fn pods_of_a_dump_are_their_workloads_and_keep_their_addresses() {
        let dump = "\
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: ReplicaSet
  metadata:
    name: web-5d8
    namespace: shop
    ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: u, controller: true}]
  spec:
    selector: {matchLabels: {app: web}}
    template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c, image: i}]}}
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-5d8-abcde
    namespace: shop
    labels: {app: web, pod-template-hash: 5d8}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-5d8, uid: v, controller: true}]
  spec: {nodeName: n1, containers: [{name: c, image: i}]}
  status: {phase: Running, podIP: 10.1.2.3}
- apiVersion: v1
  kind: Pod
  metadata:
    name: api-7f9-xyz
    namespace: shop
    labels: {app: api, pod-template-hash: 7f9}
    ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: api-7f9, uid: w, controller: true}]
  spec: {nodeName: n1, containers: [{name: c, image: i}]}
  status: {phase: Running, podIP: 10.1.2.4}
- apiVersion: v1
  kind: Pod
  metadata:
    name: pending
    namespace: shop
  spec: {nodeName: n1, containers: [{name: c, image: i}]}
  status: {phase: Pending}
";
        let c = materialized(dump, &PodCidrs::default());
        let web = c
            .pod(&ObjectRef::new("shop", "web-5d8-abcde"))
            .expect("web pod");
        assert_eq!(web.workload_ref().to_string(), "shop/web[Deployment]");
        assert_eq!(web.ips, [IpAddr::from([10, 1, 2, 3])]);
        // Without its ReplicaSet in the input, the naming convention still names the Deployment.
        let api = c
            .pod(&ObjectRef::new("shop", "api-7f9-xyz"))
            .expect("api pod");
        assert_eq!(api.workload_ref().to_string(), "shop/api[Deployment]");
        // The Deployment has a pod: no representative; a scheduled pod without an IP stays out.
        assert_eq!(c.pods().len(), 3);
        assert!(!c
            .pod(&ObjectRef::new("shop", "pending"))
            .expect("pending")
            .participates());
    }

    #[test]
    fn pod_cidrs_are_checked() {
        assert!(PodCidrs::parse(&["10.244.0.0/16,fd00:10:244::/56"]).is_ok());
        assert!(matches!(
            PodCidrs::parse(&["10.244.0.1/16"]),
            Err(PodCidrError::HostBits(..))
        ));
        assert!(matches!(PodCidrs::parse(&[""]), Err(PodCidrError::Empty)));
        assert!(matches!(
            PodCidrs::parse(&["10.0.0.0/31"]),
            Err(PodCidrError::TooSmall(_))
        ));
        assert!(PodCidrs::parse(&["300.0.0.0/8"]).is_err());
    }
}
