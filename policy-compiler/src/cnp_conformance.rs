//! The network-policy-api conformance suite for ClusterNetworkPolicy, as data
//! (`fixtures/network-policy-api/`, whose README documents the format): the model cluster
//! (namespaces, pods, and the Nodes that `nodes` peers select), and one case per upstream test, each
//! a list of steps: changes, then the connections upstream checks with the verdicts it expects.
//!
//! This module reads the suite and checks that it holds together: every probe names a pod of the
//! model, every step changes or checks something, every deletion names an object that exists at that
//! point, every pod runs on a Node of the model with that node's addresses. It does not interpret
//! policy: ClusterNetworkPolicy objects stay JSON values, and the model's Nodes, which
//! [`crate::input`] validates first, are read again from its documents to keep their InternalIPs
//! apart from their ExternalIPs.
//!
//! Pure: callers read the files (see [`crate::input::read_paths`]) and hand over their text.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1 as core;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::cluster::ClusterState;
pub use crate::conformance::{LabelChange, ObjectKey};
use crate::input::{self, InputError, InputErrors, Location, RawObject, Source};
use crate::model::{ObjectRef, Protocol};
use crate::object::{self, Converted};
use crate::selector::Labels;

/// The API group of ClusterNetworkPolicy.
pub const CNP_GROUP: &str = "policy.networking.k8s.io";

/// The ClusterNetworkPolicy versions a case may apply (their schemas are identical).
pub const CNP_VERSIONS: [&str; 2] = ["v1alpha2", "v1beta1"];

/// The suite could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// A case file does not have the case format.
    #[error("{file}: not a network-policy-api conformance case: {message}")]
    Format {
        /// File.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The model's manifests could not be read or are invalid.
    #[error("{0}")]
    Input(#[from] InputErrors),
    /// The model does not hold together (a pod on a node it does not define, a host address that
    /// is not its node's).
    #[error("{location}: {message}")]
    Model {
        /// File and document, or the pod concerned.
        location: String,
        /// What is wrong.
        message: String,
    },
    /// A step of a case is wrong.
    #[error("{file}, step {step}: {message}")]
    Step {
        /// Case file.
        file: String,
        /// 1-based step number.
        step: usize,
        /// What is wrong.
        message: String,
    },
}

/// An upstream conformance feature: the standard profile, or an experimental feature a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Feature {
    /// The `ClusterNetworkPolicy` standard profile.
    ClusterNetworkPolicy,
    /// Experimental: `destinationNamedPort`.
    ClusterNetworkPolicyNamedPorts,
    /// Experimental: `nodes` egress peers.
    ClusterNetworkPolicyEgressNodePeers,
}

impl Feature {
    /// Every feature, standard first.
    pub const ALL: [Feature; 3] = [
        Feature::ClusterNetworkPolicy,
        Feature::ClusterNetworkPolicyNamedPorts,
        Feature::ClusterNetworkPolicyEgressNodePeers,
    ];

    /// Upstream's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Feature::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            Feature::ClusterNetworkPolicyNamedPorts => "ClusterNetworkPolicyNamedPorts",
            Feature::ClusterNetworkPolicyEgressNodePeers => "ClusterNetworkPolicyEgressNodePeers",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a case comes from upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The test's `ShortName`, e.g. `CNPAdminTierEgressTCP`.
    pub test: String,
    /// The Go file that defines it, from the repository root.
    pub file: String,
    /// The features it requires, as upstream lists them.
    pub features: Vec<Feature>,
    /// The manifests upstream applies before the test, from `conformance/`.
    pub manifests: Vec<String>,
}

impl Upstream {
    /// The feature the test is counted under: the experimental feature it requires, if any, else
    /// the standard profile.
    pub fn feature(&self) -> Feature {
        self.features
            .iter()
            .copied()
            .find(|f| *f != Feature::ClusterNetworkPolicy)
            .unwrap_or(Feature::ClusterNetworkPolicy)
    }
}

/// One connection upstream checks (`PokeServer`): from a pod to a pod's IP (a host-network pod's
/// is its node's), on a protocol and port, with the verdict upstream expects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// The client pod, written `namespace/name`.
    #[serde(deserialize_with = "pod_ref")]
    pub from: ObjectRef,
    /// The server pod, written `namespace/name`.
    #[serde(deserialize_with = "pod_ref")]
    pub to: ObjectRef,
    /// `TCP`, `UDP` or `SCTP`.
    #[serde(deserialize_with = "protocol")]
    pub protocol: Protocol,
    /// Destination port, 1-65535.
    #[serde(deserialize_with = "port")]
    pub port: u16,
    /// Whether the connection must succeed; `false` means it must time out (be dropped).
    pub allowed: bool,
}

fn pod_ref<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectRef, D::Error> {
    let s = String::deserialize(d)?;
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ObjectRef::new(ns, name))
        }
        _ => Err(D::Error::custom(format!("{s:?} is not namespace/pod"))),
    }
}

fn protocol<'de, D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
    let s = String::deserialize(d)?;
    Protocol::from_api(&s)
        .ok_or_else(|| D::Error::custom(format!("protocol {s:?} is not TCP, UDP or SCTP")))
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    match u16::deserialize(d)? {
        0 => Err(D::Error::custom("port 0 is out of range 1-65535")),
        p => Ok(p),
    }
}

/// One step: changes (deletions, then label changes, then applied objects), then probes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The upstream subtest (`t.Run` name) the step belongs to; none for the test's manifests.
    #[serde(default)]
    pub subtest: Option<String>,
    /// What the step does.
    pub description: String,
    /// Objects removed: ClusterNetworkPolicies and NetworkPolicies.
    #[serde(default)]
    pub delete: Vec<ObjectKey>,
    /// Label changes on namespaces and pods.
    #[serde(default)]
    pub labels: Vec<LabelChange>,
    /// Objects created, or replaced whole (by kind, namespace and name): ClusterNetworkPolicies, as
    /// JSON, and NetworkPolicies.
    #[serde(default)]
    pub apply: Vec<Value>,
    /// The connections checked after the changes, in upstream's order.
    #[serde(default)]
    pub probes: Vec<Probe>,
}

impl Step {
    /// Whether the step neither changes nor checks anything.
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty()
            && self.labels.is_empty()
            && self.apply.is_empty()
            && self.probes.is_empty()
    }
}

/// One upstream test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Slug, unique.
    pub name: String,
    /// Where it comes from.
    pub upstream: Upstream,
    /// Steps, in order.
    pub steps: Vec<Step>,
    /// The file it came from.
    #[serde(skip)]
    pub file: String,
}

impl Case {
    /// Every probe of every step, in order.
    pub fn probes(&self) -> impl Iterator<Item = &Probe> {
        self.steps.iter().flat_map(|s| &s.probes)
    }
}

/// A Node of the model, reduced to what `nodes` peers match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// `status.addresses` of type `InternalIP`, in order.
    pub internal_ips: Vec<IpAddr>,
    /// `status.addresses` of type `ExternalIP`, in order.
    pub external_ips: Vec<IpAddr>,
}

impl Node {
    /// The addresses a `nodes` peer matches: internal, then external.
    pub fn addresses(&self) -> impl Iterator<Item = &IpAddr> {
        self.internal_ips.iter().chain(&self.external_ips)
    }
}

/// The cluster every case starts from.
#[derive(Debug, Clone)]
pub struct Model {
    /// Namespaces and pods (host-network pods included), as [`crate::input`] reads them.
    pub cluster: ClusterState,
    /// Nodes, by name.
    pub nodes: BTreeMap<String, Node>,
}

impl Model {
    /// Reads the model's manifests and checks that every pod runs on one of its Nodes, with that
    /// node's InternalIPs as its host IPs (and as its own IPs if it uses the host network).
    pub fn parse(sources: &[Source]) -> Result<Self, SuiteError> {
        let cluster = input::parse_sources(sources)?.cluster;
        let mut nodes = BTreeMap::new();
        let mut errors = Vec::new();
        for source in sources {
            // parse_sources has read these documents already and reported their problems.
            let _ = input::for_each_object(source, &mut |raw| {
                if raw.value["kind"] == "Node" && raw.value["apiVersion"] == "v1" {
                    match node_from_api(&raw) {
                        Ok(node) if nodes.contains_key(&node.name) => errors.push(model_error(
                            &raw.location,
                            format!("Node {} is defined twice", node.name),
                        )),
                        Ok(node) => {
                            nodes.insert(node.name.clone(), node);
                        }
                        Err(e) => errors.push(e),
                    }
                }
            });
        }
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        let model = Self { cluster, nodes };
        model.check_placement()?;
        Ok(model)
    }

    fn check_placement(&self) -> Result<(), SuiteError> {
        for pod in self.cluster.pods().values() {
            let error = |message: String| SuiteError::Model {
                location: format!("Pod {}", pod.id),
                message,
            };
            let Some(name) = &pod.node else {
                return Err(error("spec.nodeName is required in the model".to_string()));
            };
            let Some(node) = self.nodes.get(&**name) else {
                return Err(error(format!(
                    "runs on node {name}, which is not a Node of the model"
                )));
            };
            if pod.host_ips.is_empty() {
                return Err(error("status.hostIPs is required in the model".to_string()));
            }
            for ip in &pod.host_ips {
                if !node.internal_ips.contains(ip) {
                    return Err(error(format!(
                        "host IP {ip} is not an InternalIP of its node {name}"
                    )));
                }
            }
            if pod.host_network {
                let mut own: Vec<&IpAddr> = pod.ips.iter().collect();
                let mut node_ips: Vec<&IpAddr> = node.internal_ips.iter().collect();
                own.sort();
                node_ips.sort();
                if own != node_ips {
                    return Err(error(format!(
                        "uses the host network, so its pod IPs must be the InternalIPs of {name}"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn model_error(location: &Location, message: String) -> SuiteError {
    SuiteError::Model {
        location: location.to_string(),
        message,
    }
}

fn node_from_api(raw: &RawObject) -> Result<Node, SuiteError> {
    let node: core::Node = serde_path_to_error::deserialize(raw.value.clone()).map_err(|e| {
        let field = e.path().to_string();
        model_error(
            &raw.location,
            format!("Node: field {field}: {}", e.into_inner()),
        )
    })?;
    let name = node
        .metadata
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| model_error(&raw.location, "Node: metadata.name is required".into()))?;
    let labels = node
        .metadata
        .labels
        .unwrap_or_default()
        .into_iter()
        .collect();
    let (mut internal_ips, mut external_ips) = (Vec::new(), Vec::new());
    let addresses = node.status.and_then(|s| s.addresses).unwrap_or_default();
    for (i, address) in addresses.iter().enumerate() {
        let list = match address.type_.as_str() {
            "InternalIP" => &mut internal_ips,
            "ExternalIP" => &mut external_ips,
            _ => continue,
        };
        let ip: IpAddr = address.address.parse().map_err(|_| {
            model_error(
                &raw.location,
                format!(
                    "Node {name}: field status.addresses[{i}].address: {:?} is not an IP address",
                    address.address
                ),
            )
        })?;
        list.push(ip);
    }
    Ok(Node {
        name,
        labels,
        internal_ips,
        external_ips,
    })
}

/// The model and the cases of the suite.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The starting cluster.
    pub model: Model,
    /// Cases, in file order (which is upstream's order).
    pub cases: Vec<Case>,
}

impl Suite {
    /// Builds the suite from the model's sources and the cases' sources, and checks every case
    /// against the model.
    pub fn parse(model: &[Source], cases: &[Source]) -> Result<Self, SuiteError> {
        let model = Model::parse(model)?;
        let mut parsed = Vec::new();
        for source in cases {
            let case = parse_case(source)?;
            check_case(&case, &model)?;
            parsed.push(case);
        }
        Ok(Self {
            model,
            cases: parsed,
        })
    }

    /// Reads `DIR/model.yaml` and `DIR/cases/`.
    pub fn read(dir: &Path) -> Result<Self, SuiteError> {
        let model = input::read_paths(&[dir.join("model.yaml").display().to_string()])?;
        let cases = input::read_paths(&[dir.join("cases").display().to_string()])?;
        Self::parse(&model, &cases)
    }
}

/// Parses one case file (its format only; [`Suite::parse`] also checks it against the model).
pub fn parse_case(source: &Source) -> Result<Case, SuiteError> {
    let mut case: Case = serde_saphyr::from_str(&source.text).map_err(|e| SuiteError::Format {
        file: source.name.clone(),
        message: e.to_string(),
    })?;
    case.file = source.name.clone();
    Ok(case)
}

impl Case {
    /// Applies step `index` (0-based) to `cluster`: deletes, then label changes, then applies.
    pub fn apply_step(&self, index: usize, cluster: &mut ClusterState) -> Result<(), SuiteError> {
        let step = &self.steps[index];
        let changes = crate::conformance::Changes {
            delete: &step.delete,
            labels: &step.labels,
            apply: &step.apply,
        };
        crate::conformance::apply_changes(cluster, &changes, &self.file, index).map_err(|e| match e
        {
            crate::conformance::ChangeError::Input(errors) => SuiteError::Input(errors),
            crate::conformance::ChangeError::Step(message) => SuiteError::Step {
                file: self.file.clone(),
                step: index + 1,
                message,
            },
        })
    }
}

/// A policy a case has applied: kind, namespace (empty for a ClusterNetworkPolicy), name.
type PolicyKey = (String, String, String);

fn check_case(case: &Case, model: &Model) -> Result<(), SuiteError> {
    let format = |message: String| SuiteError::Format {
        file: case.file.clone(),
        message,
    };
    if !case
        .upstream
        .features
        .contains(&Feature::ClusterNetworkPolicy)
    {
        return Err(format(
            "upstream.features must include ClusterNetworkPolicy: every test needs it".into(),
        ));
    }
    if case.steps.is_empty() {
        return Err(format("a case has at least one step".into()));
    }
    let mut policies: BTreeSet<PolicyKey> = BTreeSet::new();
    for (i, step) in case.steps.iter().enumerate() {
        let error = |message: String| SuiteError::Step {
            file: case.file.clone(),
            step: i + 1,
            message,
        };
        if step.is_empty() {
            return Err(error("the step changes nothing and checks nothing".into()));
        }
        for key in &step.delete {
            let policy = policy_key(&key.kind, key.namespace.as_deref(), &key.name)
                .map_err(|m| error(format!("delete: {m}")))?;
            if !policies.remove(&policy) {
                return Err(error(format!(
                    "delete: no {} {} exists at this point",
                    key.kind,
                    display_policy(&policy)
                )));
            }
        }
        for change in &step.labels {
            check_label_change(change, &model.cluster)
                .map_err(|m| error(format!("labels: {m}")))?;
        }
        for (j, object) in step.apply.iter().enumerate() {
            let policy = check_applied(object, &case.file, i, j)
                .map_err(|m| error(format!("apply[{j}]: {m}")))?;
            policies.insert(policy);
        }
        for (j, probe) in step.probes.iter().enumerate() {
            for pod in [&probe.from, &probe.to] {
                if model.cluster.pod(pod).is_none() {
                    return Err(error(format!("probes[{j}]: no pod {pod} in the model")));
                }
            }
        }
    }
    Ok(())
}

fn policy_key(kind: &str, namespace: Option<&str>, name: &str) -> Result<PolicyKey, String> {
    match (kind, namespace) {
        ("ClusterNetworkPolicy", None) => Ok((kind.into(), String::new(), name.into())),
        ("ClusterNetworkPolicy", Some(_)) => {
            Err("a ClusterNetworkPolicy is cluster-scoped: it has no namespace".into())
        }
        ("NetworkPolicy", Some(ns)) if !ns.is_empty() => Ok((kind.into(), ns.into(), name.into())),
        ("NetworkPolicy", _) => Err("a NetworkPolicy needs its namespace".into()),
        (other, _) => Err(format!(
            "{other:?} is not ClusterNetworkPolicy or NetworkPolicy"
        )),
    }
}

fn display_policy((_, namespace, name): &PolicyKey) -> String {
    if namespace.is_empty() {
        name.clone()
    } else {
        format!("{namespace}/{name}")
    }
}

fn check_label_change(change: &LabelChange, cluster: &ClusterState) -> Result<(), String> {
    let exists = match (change.kind.as_str(), change.namespace.as_deref()) {
        ("Namespace", None) => cluster.namespace(&change.name).is_some(),
        ("Pod", Some(ns)) => cluster.pod(&ObjectRef::new(ns, &change.name)).is_some(),
        ("Namespace", Some(_)) => return Err("a Namespace has no namespace".into()),
        ("Pod", None) => return Err("a Pod needs its namespace".into()),
        (other, _) => return Err(format!("{other:?} is not Namespace or Pod")),
    };
    if !exists {
        return Err(format!("no {} {} in the model", change.kind, change.name));
    }
    if change.add.is_empty() && change.remove.is_empty() {
        return Err(format!(
            "the change to {} adds and removes nothing",
            change.name
        ));
    }
    Ok(())
}

/// Checks an applied object: a ClusterNetworkPolicy of a known version with a name (its spec is
/// not read here), or a NetworkPolicy valid for [`crate::input`].
fn check_applied(
    object: &Value,
    file: &str,
    step: usize,
    index: usize,
) -> Result<PolicyKey, String> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match kind {
        "ClusterNetworkPolicy" => {
            let version = api_version
                .strip_prefix(CNP_GROUP)
                .and_then(|v| v.strip_prefix('/'));
            if !version.is_some_and(|v| CNP_VERSIONS.contains(&v)) {
                return Err(format!(
                    "apiVersion {api_version:?} is not {CNP_GROUP}/{}",
                    CNP_VERSIONS.join(" or ")
                ));
            }
            if name.is_empty() {
                return Err("ClusterNetworkPolicy: metadata.name is required".into());
            }
            policy_key(kind, object["metadata"]["namespace"].as_str(), name)
        }
        "NetworkPolicy" => {
            if api_version != "networking.k8s.io/v1" {
                return Err(format!(
                    "apiVersion {api_version:?} is not networking.k8s.io/v1"
                ));
            }
            let namespace = object["metadata"]["namespace"].as_str();
            if namespace.is_none_or(str::is_empty) {
                return Err("NetworkPolicy: metadata.namespace is required in a case".into());
            }
            let raw = RawObject::document(
                format!("{file} (step {}, apply)", step + 1),
                index + 1,
                object.clone(),
            );
            match object::convert(raw, object::DEFAULT_NAMESPACE) {
                Converted::Valid(_) => policy_key(kind, namespace, name),
                Converted::Invalid { error, .. } => Err(InputError::Invalid(error).to_string()),
                Converted::Other(_) => Err("NetworkPolicy: not read as one".into()),
            }
        }
        other => Err(format!(
            "kind {other:?} is not ClusterNetworkPolicy or NetworkPolicy"
        )),
    }
}

#[cfg(test)]
mod tests;
