//! Services for the lab: the ClusterIP Services of the input, and one Service per pod as the upstream
//! e2e suite creates them, each resolved to backends (pod IP and target port) the way the endpoints
//! controller does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use policy_compiler::analysis::PortProto;
use policy_compiler::cidr::Family;
use policy_compiler::input::Location;
use policy_compiler::model::{ObjectRef, Pod, Protocol};
use policy_compiler::ClusterState;
use serde_json::Value;

use crate::lab::{ServicePort, ServiceSpec};

/// A Service in the input that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{location}: Service {name}: {message}")]
pub struct ServiceError {
    /// Where it is.
    pub location: Location,
    /// `namespace/name`.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

/// The ClusterIP Services among `objects` (other kinds are ignored). Headless Services and Services
/// without a selector have no cluster IP to DNAT and are left out.
pub fn input_services(
    cluster: &ClusterState,
    objects: &[(Location, Value)],
) -> Result<Vec<ServiceSpec>, ServiceError> {
    let mut out = Vec::new();
    for (location, value) in objects {
        if value["kind"].as_str() != Some("Service") {
            continue;
        }
        let error = |name: &str, message: String| ServiceError {
            location: location.clone(),
            name: name.to_string(),
            message,
        };
        let svc: core::Service = serde_json::from_value(value.clone())
            .map_err(|e| error(&value["metadata"]["name"].to_string(), e.to_string()))?;
        let namespace = svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = format!(
            "{namespace}/{}",
            svc.metadata.name.clone().unwrap_or_default()
        );
        let spec = svc.spec.unwrap_or_default();
        let Some(selector) = spec.selector.filter(|s| !s.is_empty()) else {
            continue;
        };
        let mut cluster_ips = Vec::new();
        for raw in spec
            .cluster_ips
            .into_iter()
            .flatten()
            .chain(spec.cluster_ip)
        {
            if raw == "None" || raw.is_empty() {
                continue;
            }
            let ip: IpAddr = raw.parse().map_err(|_| {
                error(
                    &name,
                    format!("spec.clusterIP {raw:?} is not an IP address"),
                )
            })?;
            if !cluster_ips.contains(&ip) {
                cluster_ips.push(ip);
            }
        }
        if cluster_ips.is_empty() {
            continue;
        }
        let backends: Vec<&Pod> = cluster
            .participating_pods()
            .filter(|p| {
                *p.id.namespace == *namespace
                    && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
            })
            .collect();
        let families: BTreeSet<Family> = cluster_ips.iter().map(Family::of).collect();
        let mut ports = Vec::new();
        for (i, sp) in spec.ports.iter().flatten().enumerate() {
            let protocol = match sp.protocol.as_deref() {
                None => Protocol::Tcp,
                Some(p) => Protocol::from_api(p).ok_or_else(|| {
                    error(
                        &name,
                        format!("spec.ports[{i}].protocol {p:?} is not TCP, UDP or SCTP"),
                    )
                })?,
            };
            let port = u16::try_from(sp.port).map_err(|_| {
                error(
                    &name,
                    format!("spec.ports[{i}].port {} is out of range", sp.port),
                )
            })?;
            // Like the endpoints controller: a pod that does not declare a named target port is not
            // a backend of that port.
            let target = |pod: &Pod| -> Option<u16> {
                match &sp.target_port {
                    None => Some(port),
                    Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                    Some(IntOrString::String(n)) => pod.named_port(n, protocol),
                }
            };
            let backends = backends
                .iter()
                .filter_map(|pod| target(pod).map(|t| (pod, t)))
                .flat_map(|(pod, t)| pod.ips.iter().map(move |ip| (*ip, t)))
                // A single-stack Service reaches only the addresses of its own family.
                .filter(|(ip, _)| families.contains(&Family::of(ip)))
                .collect();
            ports.push(ServicePort {
                port,
                protocol,
                backends,
            });
        }
        out.push(ServiceSpec {
            name,
            cluster_ips,
            ports,
        });
    }
    Ok(out)
}

/// The addresses of the per-pod Services, by pod and family.
pub type PerPodServiceIps = BTreeMap<(ObjectRef, Family), IpAddr>;

/// 10.96.128.0, the start of the per-pod Services' IPv4 range.
const PER_POD_SERVICES_V4: u32 = u32::from_be_bytes([10, 96, 128, 0]);
/// fd00:96::, the start of their IPv6 range.
const PER_POD_SERVICES_V6: u128 = 0xfd00_0096 << 96;

/// One Service per participating pod, named `s-<namespace>-<pod>` as upstream names them, exposing
/// each container port and each port of `extra` on the same number, with a cluster IP per family of
/// the pod from 10.96.128.0/17 and fd00:96::/108.
pub fn per_pod_services(
    cluster: &ClusterState,
    extra: &[PortProto],
) -> (Vec<ServiceSpec>, PerPodServiceIps) {
    let mut specs = Vec::new();
    let mut ips = PerPodServiceIps::new();
    for (i, pod) in cluster.participating_pods().enumerate() {
        let i = i as u32;
        let mut cluster_ips = Vec::new();
        for ip in &pod.ips {
            let vip = match Family::of(ip) {
                Family::V4 => IpAddr::from((PER_POD_SERVICES_V4 + 1 + i).to_be_bytes()),
                Family::V6 => IpAddr::from((PER_POD_SERVICES_V6 + 1 + i as u128).to_be_bytes()),
            };
            ips.insert((pod.id.clone(), Family::of(ip)), vip);
            cluster_ips.push(vip);
        }
        let served: BTreeSet<(u16, Protocol)> = pod
            .ports
            .iter()
            .map(|p| (p.port, p.protocol))
            .chain(extra.iter().map(|p| (p.port, p.protocol)))
            .collect();
        let ports = served
            .into_iter()
            .map(|(port, protocol)| ServicePort {
                port,
                protocol,
                backends: pod.ips.iter().map(|ip| (*ip, port)).collect(),
            })
            .collect();
        specs.push(ServiceSpec {
            name: format!("s-{}-{}", pod.id.namespace, pod.id.name),
            cluster_ips,
            ports,
        });
    }
    (specs, ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_pod_service_ranges_start_where_documented() {
        assert_eq!(
            IpAddr::from((PER_POD_SERVICES_V4 + 1).to_be_bytes()),
            "10.96.128.1".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            IpAddr::from((PER_POD_SERVICES_V6 + 1).to_be_bytes()),
            "fd00:96::1".parse::<IpAddr>().expect("ip")
        );
    }
}
