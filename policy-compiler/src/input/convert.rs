//! Conversion from `k8s-openapi` types to the internal model, with the API server's validation.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;

use super::{FieldError, Location, RawObject};
use serde_json::Value;

/// The result of converting one object: the value, or the first bad field.
pub type FieldResult<T> = Result<T, Box<FieldError>>;
use crate::cidr::{Cidr, Family};
use crate::model::{
    ContainerPort, Enforcement, IpBlock, Namespace, NamespaceScope, Node, ObjectRef, OwnerRef,
    Peer, Pod, PodPeer, PodPhase, Policy, PolicyPort, PortSpec, Protocol, Rule, Workload,
    WorkloadRef, ENFORCEMENT_ANNOTATION,
};
use crate::selector::{LabelSelector, Labels, Requirement};

/// Collects field errors for one object.
pub(super) struct Checker<'a> {
    pub(super) location: &'a Location,
    pub(super) kind: &'static str,
    pub(super) id: String,
}

impl<'a> Checker<'a> {
    /// A checker for a raw object of `kind`, named as [`raw_id`] gives it.
    pub(super) fn raw(object: &'a RawObject, kind: &'static str, namespaced: bool) -> Self {
        Checker {
            location: &object.location,
            kind,
            id: raw_id(&object.value, namespaced),
        }
    }

    /// A checker for an object of `kind` already typed, named by its metadata (as [`raw_id`]
    /// names it).
    fn typed(
        location: &'a Location,
        kind: &'static str,
        metadata: &meta::ObjectMeta,
        namespaced: bool,
    ) -> Self {
        let name = metadata.name.as_deref().unwrap_or("<unnamed>");
        let id = if namespaced {
            let namespace = metadata.namespace.as_deref().unwrap_or("default");
            format!("{namespace}/{name}")
        } else {
            name.to_string()
        };
        Checker { location, kind, id }
    }

    pub(super) fn error(
        &self,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Box<FieldError> {
        Box::new(FieldError {
            location: self.location.clone(),
            kind: self.kind.to_string(),
            object: self.id.clone(),
            field: field.into(),
            message: message.into(),
        })
    }
}

/// A best-effort `namespace/name` for messages, before the object is typed.
pub(super) fn raw_id(value: &serde_json::Value, namespaced: bool) -> String {
    let name = value["metadata"]["name"].as_str().unwrap_or("<unnamed>");
    if namespaced {
        let ns = value["metadata"]["namespace"].as_str().unwrap_or("default");
        format!("{ns}/{name}")
    } else {
        name.to_string()
    }
}

pub(super) fn typed<T: DeserializeOwned>(c: &Checker<'_>, value: &Value) -> FieldResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        c.error(path, e.into_inner().to_string())
    })
}

pub(super) fn name_of(c: &Checker<'_>, metadata: &meta::ObjectMeta) -> FieldResult<String> {
    match metadata.name.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(c.error("metadata.name", "is required")),
    }
}

pub(super) fn labels_of(metadata: &meta::ObjectMeta) -> Labels {
    metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// An annotation's field path, as errors name it: `metadata.annotations["nftpolicy.io/enforcement"]`.
pub(super) fn annotation_field(key: &str) -> String {
    format!("metadata.annotations[{key:?}]")
}

/// The value of the `nftpolicy.io/enforcement` annotation, if the object has it.
pub(super) fn enforcement_annotation(metadata: &meta::ObjectMeta) -> Option<&str> {
    metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ENFORCEMENT_ANNOTATION))
        .map(String::as_str)
}

/// How a NetworkPolicy takes effect, from its `nftpolicy.io/enforcement` annotation: `audit`, or
/// `enforce` (also when the annotation is absent).
fn enforcement(c: &Checker<'_>, metadata: &meta::ObjectMeta) -> FieldResult<Enforcement> {
    let Some(value) = enforcement_annotation(metadata) else {
        return Ok(Enforcement::Enforce);
    };
    Enforcement::from_annotation(value).ok_or_else(|| {
        c.error(
            annotation_field(ENFORCEMENT_ANNOTATION),
            format!(
                "unknown enforcement mode {value:?}: use enforce or audit (no annotation is \
                 enforce)"
            ),
        )
    })
}

/// Converts a `Namespace`.
pub fn namespace_from_api(object: &RawObject) -> FieldResult<Namespace> {
    let c = Checker::raw(object, "Namespace", false);
    let ns: core::Namespace = typed(&c, &object.value)?;
    namespace_checked(&c, ns)
}

/// Converts a `Namespace` already typed (read at `location`).
pub fn namespace_from_typed(location: &Location, ns: core::Namespace) -> FieldResult<Namespace> {
    namespace_checked(
        &Checker::typed(location, "Namespace", &ns.metadata, false),
        ns,
    )
}

fn namespace_checked(c: &Checker<'_>, ns: core::Namespace) -> FieldResult<Namespace> {
    let name = name_of(c, &ns.metadata)?;
    Ok(Namespace::new(name, labels_of(&ns.metadata)))
}

/// Converts a `Node`: its name, labels, and the `InternalIP` and `ExternalIP` entries of
/// `status.addresses` (the addresses `nodes` peers match).
pub fn node_from_api(object: &RawObject) -> FieldResult<Node> {
    let c = Checker::raw(object, "Node", false);
    let node: core::Node = typed(&c, &object.value)?;
    node_checked(&c, node)
}

/// Converts a `Node` already typed (read at `location`).
pub fn node_from_typed(location: &Location, node: core::Node) -> FieldResult<Node> {
    node_checked(
        &Checker::typed(location, "Node", &node.metadata, false),
        node,
    )
}

fn node_checked(c: &Checker<'_>, node: core::Node) -> FieldResult<Node> {
    let name = name_of(c, &node.metadata)?;
    let mut addresses: Vec<IpAddr> = Vec::new();
    let entries = node.status.and_then(|s| s.addresses).unwrap_or_default();
    for (i, entry) in entries.iter().enumerate() {
        if !matches!(entry.type_.as_str(), "InternalIP" | "ExternalIP") {
            continue;
        }
        let ip: IpAddr = entry.address.parse().map_err(|_| {
            c.error(
                format!("status.addresses[{i}].address"),
                format!(
                    "{:?} is not an IP address (an {} entry holds one)",
                    entry.address, entry.type_
                ),
            )
        })?;
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    Ok(Node {
        name,
        labels: labels_of(&node.metadata),
        addresses,
    })
}

fn parse_protocol(c: &Checker<'_>, field: &str, p: Option<&str>) -> FieldResult<Protocol> {
    match p {
        None => Ok(Protocol::Tcp),
        Some(s) => Protocol::from_api(s).ok_or_else(|| {
            c.error(
                field,
                format!("unknown protocol {s:?}: use TCP, UDP or SCTP"),
            )
        }),
    }
}

fn port_number(c: &Checker<'_>, field: &str, n: i32) -> FieldResult<u16> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| c.error(field, format!("port {n} is out of range 1-65535")))
}

/// Converts a `Pod`.
pub fn pod_from_api(object: &RawObject) -> FieldResult<Pod> {
    let c = Checker::raw(object, "Pod", true);
    let pod: core::Pod = typed(&c, &object.value)?;
    pod_checked(&c, pod)
}

/// Converts a `Pod` already typed (read at `location`).
pub fn pod_from_typed(location: &Location, pod: core::Pod) -> FieldResult<Pod> {
    pod_checked(&Checker::typed(location, "Pod", &pod.metadata, true), pod)
}

fn pod_checked(c: &Checker<'_>, pod: core::Pod) -> FieldResult<Pod> {
    let name = name_of(c, &pod.metadata)?;
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let spec = pod.spec.unwrap_or_default();

    let live = pod.status.is_some();
    let status = pod.status.unwrap_or_default();
    let ports = container_ports(c, &spec, "spec")?;

    let mut raw_ips: Vec<(String, String)> = status
        .pod_ips
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, ip)| (format!("status.podIPs[{i}].ip"), ip.ip.clone()))
        .collect();
    if raw_ips.is_empty() {
        if let Some(ip) = status.pod_ip.clone().filter(|s| !s.is_empty()) {
            raw_ips.push(("status.podIP".to_string(), ip));
        }
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    for (field, raw) in raw_ips {
        let ip: IpAddr = raw
            .parse()
            .map_err(|_| c.error(&field, format!("{raw:?} is not an IP address")))?;
        if let Some(other) = ips.iter().find(|o| Family::of(o) == Family::of(&ip)) {
            if *other != ip {
                return Err(c.error(
                    field,
                    format!("a pod has at most one IP per family, but lists {other} and {ip}"),
                ));
            }
            continue;
        }
        ips.push(ip);
    }

    let mut host_ips: Vec<IpAddr> = Vec::new();
    let raw_host_ips = status
        .host_ips
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, h)| (format!("status.hostIPs[{i}].ip"), h.ip.clone()))
        .chain(
            status
                .host_ip
                .clone()
                .map(|h| ("status.hostIP".to_string(), h)),
        );
    for (field, raw) in raw_host_ips.filter(|(_, r)| !r.is_empty()) {
        let ip: IpAddr = raw
            .parse()
            .map_err(|_| c.error(&field, format!("{raw:?} is not an IP address")))?;
        if !host_ips.contains(&ip) {
            host_ips.push(ip);
        }
    }

    let phase = match status.phase.as_deref() {
        Some("Succeeded") | Some("Failed") => PodPhase::Finished,
        _ => PodPhase::Active,
    };
    Ok(Pod {
        id: ObjectRef::new(namespace, name),
        labels: labels_of(&pod.metadata),
        node: spec.node_name.filter(|n| !n.is_empty()).map(Into::into),
        ips,
        host_network: spec.host_network.unwrap_or(false),
        host_ips,
        phase,
        ports,
        owner: controller_of(&pod.metadata).map(Box::new),
        live,
        workload: None,
    })
}

/// The container ports a pod spec declares (at `prefix`, `spec` for a pod): its containers' and
/// its sidecars' (init containers that keep running serve ports like ordinary containers).
fn container_ports(
    c: &Checker<'_>,
    spec: &core::PodSpec,
    prefix: &str,
) -> FieldResult<Vec<ContainerPort>> {
    let mut ports = Vec::new();
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, ic)| ic.restart_policy.as_deref() == Some("Always"))
        .map(|(i, ic)| (format!("{prefix}.initContainers[{i}]"), ic));
    let containers = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, ct)| (format!("{prefix}.containers[{i}]"), ct));
    for (path, container) in containers.chain(sidecars) {
        for (j, p) in container.ports.iter().flatten().enumerate() {
            let field = format!("{path}.ports[{j}]");
            ports.push(ContainerPort {
                name: p.name.as_deref().filter(|n| !n.is_empty()).map(Into::into),
                port: port_number(c, &format!("{field}.containerPort"), p.container_port)?,
                protocol: parse_protocol(c, &format!("{field}.protocol"), p.protocol.as_deref())?,
            });
        }
    }
    Ok(ports)
}

/// The owner reference marked `controller: true`, if any.
fn controller_of(metadata: &meta::ObjectMeta) -> Option<OwnerRef> {
    metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| OwnerRef {
            kind: o.kind.as_str().into(),
            name: o.name.as_str().into(),
        })
}

/// Converts a workload (`kind` is one of the workload kinds of [`crate::object::Kind`]) into its
/// pod template.
pub fn workload_from_api(kind: &'static str, object: &RawObject) -> FieldResult<Workload> {
    use k8s_openapi::api::apps::v1 as apps;
    use k8s_openapi::api::batch::v1 as batch;
    let c = Checker::raw(object, kind, true);
    // (metadata, template, the template's field path)
    let (metadata, template, path): (meta::ObjectMeta, Option<core::PodTemplateSpec>, &str) =
        match kind {
            "Deployment" => {
                let w: apps::Deployment = typed(&c, &object.value)?;
                (w.metadata, w.spec.map(|s| s.template), "spec.template")
            }
            "StatefulSet" => {
                let w: apps::StatefulSet = typed(&c, &object.value)?;
                (w.metadata, w.spec.map(|s| s.template), "spec.template")
            }
            "DaemonSet" => {
                let w: apps::DaemonSet = typed(&c, &object.value)?;
                (w.metadata, w.spec.map(|s| s.template), "spec.template")
            }
            "ReplicaSet" => {
                let w: apps::ReplicaSet = typed(&c, &object.value)?;
                (w.metadata, w.spec.and_then(|s| s.template), "spec.template")
            }
            "ReplicationController" => {
                let w: core::ReplicationController = typed(&c, &object.value)?;
                (w.metadata, w.spec.and_then(|s| s.template), "spec.template")
            }
            "Job" => {
                let w: batch::Job = typed(&c, &object.value)?;
                (w.metadata, w.spec.map(|s| s.template), "spec.template")
            }
            "CronJob" => {
                let w: batch::CronJob = typed(&c, &object.value)?;
                (
                    w.metadata,
                    w.spec.and_then(|s| s.job_template.spec).map(|s| s.template),
                    "spec.jobTemplate.spec.template",
                )
            }
            other => return Err(c.error("kind", format!("{other} is not a workload kind"))),
        };
    let name = name_of(&c, &metadata)?;
    let namespace = metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let Some(template) = template else {
        return Err(c.error(path, "a workload needs a pod template"));
    };
    let spec = template
        .spec
        .ok_or_else(|| c.error(format!("{path}.spec"), "is required"))?;
    let labels = template
        .metadata
        .as_ref()
        .map(labels_of)
        .unwrap_or_default();
    Ok(Workload {
        id: WorkloadRef::new(namespace, name, kind),
        owner: controller_of(&metadata),
        labels,
        ports: container_ports(&c, &spec, &format!("{path}.spec"))?,
        host_network: spec.host_network.unwrap_or(false),
    })
}

pub(super) fn selector(
    c: &Checker<'_>,
    field: &str,
    s: Option<&meta::LabelSelector>,
) -> FieldResult<LabelSelector> {
    let Some(s) = s else {
        return Ok(LabelSelector::everything());
    };
    let mut requirements: Vec<Requirement> = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
        .collect();
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        let values = e.values.clone().unwrap_or_default();
        let key = e.key.clone();
        let r = match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(c.error(
                    format!("{f}.values"),
                    format!("operator {} needs at least one value", e.operator),
                ))
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(c.error(
                    format!("{f}.values"),
                    format!("operator {} takes no values", e.operator),
                ))
            }
            "In" => Requirement::In(key, values),
            "NotIn" => Requirement::NotIn(key, values),
            "Exists" => Requirement::Exists(key),
            "DoesNotExist" => Requirement::DoesNotExist(key),
            other => {
                return Err(c.error(
                    format!("{f}.operator"),
                    format!("unknown operator {other:?}: use In, NotIn, Exists or DoesNotExist"),
                ))
            }
        };
        requirements.push(r);
    }
    Ok(LabelSelector::new(requirements))
}

fn cidr(c: &Checker<'_>, field: &str, s: &str) -> FieldResult<Cidr> {
    s.parse()
        .map_err(|e: crate::cidr::CidrError| c.error(field, e.to_string()))
}

fn peer(
    c: &Checker<'_>,
    field: &str,
    namespace: &str,
    p: &net::NetworkPolicyPeer,
) -> FieldResult<Peer> {
    if let Some(block) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err(c.error(
                field,
                "ipBlock cannot be combined with podSelector or namespaceSelector in one peer; \
                 write them as separate peers",
            ));
        }
        let f = format!("{field}.ipBlock");
        let range = cidr(c, &format!("{f}.cidr"), &block.cidr)?;
        let mut except = Vec::new();
        for (i, e) in block.except.iter().flatten().enumerate() {
            let ef = format!("{f}.except[{i}]");
            let ex = cidr(c, &ef, e)?;
            if !(range.covers(&ex) && ex.prefix_len() > range.prefix_len()) {
                return Err(c.error(
                    ef,
                    format!("{e} must be a strict subset of the cidr {}", block.cidr),
                ));
            }
            except.push(ex);
        }
        except.sort();
        except.dedup();
        return Ok(Peer::IpBlock(IpBlock {
            cidr: range,
            except,
        }));
    }
    if p.pod_selector.is_none() && p.namespace_selector.is_none() {
        return Err(c.error(
            field,
            "a peer needs a podSelector, a namespaceSelector or an ipBlock",
        ));
    }
    let pods = selector(c, &format!("{field}.podSelector"), p.pod_selector.as_ref())?;
    let namespaces = match &p.namespace_selector {
        None => NamespaceScope::Own(namespace.to_string()),
        Some(s) => {
            NamespaceScope::Selected(selector(c, &format!("{field}.namespaceSelector"), Some(s))?)
        }
    };
    Ok(Peer::Pods(PodPeer { namespaces, pods }))
}

/// Whether a string is a valid port name (IANA service name): 1-15 characters of `a-z`, `0-9` and
/// `-`, with at least one letter, no leading, trailing or double hyphen.
fn valid_port_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && n.bytes().any(|b| b.is_ascii_lowercase())
        && !n.starts_with('-')
        && !n.ends_with('-')
        && !n.contains("--")
}

fn policy_port(
    c: &Checker<'_>,
    field: &str,
    p: &net::NetworkPolicyPort,
) -> FieldResult<PolicyPort> {
    let protocol = parse_protocol(c, &format!("{field}.protocol"), p.protocol.as_deref())?;
    let port = match (&p.port, p.end_port) {
        (None, Some(_)) => {
            return Err(c.error(format!("{field}.endPort"), "endPort requires port"));
        }
        (None, None) => PortSpec::Any,
        (Some(IntOrString::String(name)), end) => {
            if end.is_some() {
                return Err(c.error(
                    format!("{field}.endPort"),
                    "endPort cannot be used with a named port",
                ));
            }
            if let Ok(n) = name.parse::<i32>() {
                // A number written as a string: the API server rejects it as a port name.
                return Err(c.error(
                    format!("{field}.port"),
                    format!("{name:?} is a string; write the port number {n} without quotes"),
                ));
            }
            if !valid_port_name(name) {
                return Err(c.error(
                    format!("{field}.port"),
                    format!(
                        "{name:?} is not a valid port name (1-15 lowercase letters, digits and '-', \
                         with at least one letter)"
                    ),
                ));
            }
            PortSpec::Named(name.clone())
        }
        (Some(IntOrString::Int(n)), end) => {
            let start = port_number(c, &format!("{field}.port"), *n)?;
            let end = match end {
                None => start,
                Some(e) => {
                    let e = port_number(c, &format!("{field}.endPort"), e)?;
                    if e < start {
                        return Err(c.error(
                            format!("{field}.endPort"),
                            format!("endPort {e} is below port {start}"),
                        ));
                    }
                    e
                }
            };
            PortSpec::Range(start, end)
        }
    };
    Ok(PolicyPort { protocol, port })
}

fn rule(
    c: &Checker<'_>,
    field: &str,
    namespace: &str,
    peers_field: &str,
    peers: Option<&Vec<net::NetworkPolicyPeer>>,
    ports: Option<&Vec<net::NetworkPolicyPort>>,
) -> FieldResult<Rule> {
    let peers = peers
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| peer(c, &format!("{field}.{peers_field}[{i}]"), namespace, p))
        .collect::<Result<Vec<_>, _>>()?;
    let ports = ports
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| policy_port(c, &format!("{field}.ports[{i}]"), p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule { peers, ports })
}

/// Converts a `NetworkPolicy`, applying the API server's defaulting of `policyTypes`, and reading
/// its `nftpolicy.io/enforcement` annotation (`enforce`, the default, or `audit`).
pub fn policy_from_api(object: &RawObject) -> FieldResult<Policy> {
    let c = Checker::raw(object, "NetworkPolicy", true);
    let np: net::NetworkPolicy = typed(&c, &object.value)?;
    policy_checked(&c, np)
}

/// Converts a `NetworkPolicy` already typed (read at `location`).
pub fn policy_from_typed(location: &Location, np: net::NetworkPolicy) -> FieldResult<Policy> {
    policy_checked(
        &Checker::typed(location, "NetworkPolicy", &np.metadata, true),
        np,
    )
}

fn policy_checked(c: &Checker<'_>, np: net::NetworkPolicy) -> FieldResult<Policy> {
    let name = name_of(c, &np.metadata)?;
    let enforcement = enforcement(c, &np.metadata)?;
    let namespace = np
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let spec = np.spec.unwrap_or_default();
    let pod_selector = selector(c, "spec.podSelector", spec.pod_selector.as_ref())?;

    let ingress = spec
        .ingress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            let f = format!("spec.ingress[{i}]");
            rule(c, &f, &namespace, "from", r.from.as_ref(), r.ports.as_ref())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let egress = spec
        .egress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            let f = format!("spec.egress[{i}]");
            rule(c, &f, &namespace, "to", r.to.as_ref(), r.ports.as_ref())
        })
        .collect::<Result<Vec<_>, _>>()?;

    let (isolates_ingress, isolates_egress) = match spec.policy_types.as_deref() {
        None | Some([]) => (true, !egress.is_empty()),
        Some(types) => {
            let mut seen = BTreeMap::new();
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" | "Egress" => {
                        seen.insert(t.as_str(), ());
                    }
                    other => {
                        return Err(c.error(
                            format!("spec.policyTypes[{i}]"),
                            format!("unknown policy type {other:?}: use Ingress or Egress"),
                        ))
                    }
                }
            }
            (seen.contains_key("Ingress"), seen.contains_key("Egress"))
        }
    };
    Ok(Policy {
        id: ObjectRef::new(namespace, name),
        pod_selector,
        isolates_ingress,
        isolates_egress,
        ingress,
        egress,
        enforcement,
    })
}
