//! The upstream e2e conformance cases as data (`fixtures/upstream-e2e/`): parsing, applying each
//! step's changes to a [`ClusterState`], and building the expected reachability the way upstream's
//! `Reachability` builder does.
//!
//! Pure: callers read the files (see [`crate::input::read_paths`]) and hand over their text.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::cluster::ClusterState;
use crate::input::{self, InputErrors, RawObject, Source};
use crate::model::{ObjectRef, Protocol};
use crate::object::{self, Converted, Kind};

/// A case file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The YAML does not have the case format.
    #[error("{file}: not a conformance case: {message}")]
    Format {
        /// File.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// An object in a step is invalid.
    #[error("{0}")]
    Input(#[from] InputErrors),
    /// A step refers to something that does not exist.
    #[error("case {case}, step {step}: {message}")]
    Step {
        /// Case name.
        case: String,
        /// 1-based step number.
        step: usize,
        /// What is wrong.
        message: String,
    },
}

/// An object named by kind, namespace and name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectKey {
    /// `NetworkPolicy`.
    pub kind: String,
    /// Namespace.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

/// A label change on a pod or namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelChange {
    /// `Pod` or `Namespace`.
    pub kind: String,
    /// The pod's namespace.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Labels added or overwritten.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Label keys removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Upstream's `Peer{Namespace, Pod}`: empty fields match anything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerPattern {
    /// Namespace, or any.
    pub namespace: Option<String>,
    /// Pod name, or any.
    pub pod: Option<String>,
}

impl PeerPattern {
    fn matches(&self, pod: &ObjectRef) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|n| **n == *pod.namespace)
            && self.pod.as_ref().is_none_or(|p| **p == *pod.name)
    }
}

/// `from`/`to` pair of pods (`ns/name`) or peer patterns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pair<T> {
    /// Source.
    pub from: T,
    /// Destination.
    pub to: T,
}

/// One builder call of upstream's `Reachability`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExpectOp {
    /// `ExpectAllIngress(pod, allowed)`.
    pub expect_all_ingress: Option<String>,
    /// `ExpectAllEgress(pod, allowed)`.
    pub expect_all_egress: Option<String>,
    /// `Expect(from, to, allowed)`.
    pub expect: Option<Pair<String>>,
    /// `ExpectPeer(from, to, allowed)`.
    pub expect_peer: Option<Pair<PeerPattern>>,
    /// The value set.
    pub allowed: bool,
}

impl ExpectOp {
    /// Whether the op sets the cell `from -> to`.
    pub fn selects(&self, from: &ObjectRef, to: &ObjectRef) -> bool {
        let is = |pod: &ObjectRef, s: &str| parse_pod_ref(s).as_ref() == Some(pod);
        if let Some(p) = &self.expect_all_ingress {
            is(to, p)
        } else if let Some(p) = &self.expect_all_egress {
            is(from, p)
        } else if let Some(pair) = &self.expect {
            is(from, &pair.from) && is(to, &pair.to)
        } else if let Some(pair) = &self.expect_peer {
            pair.from.matches(from) && pair.to.matches(to)
        } else {
            false
        }
    }
}

/// Expected reachability: a default, then builder calls in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// `NewReachability(pods, default)`.
    pub default: bool,
    /// Builder calls.
    #[serde(default)]
    pub ops: Vec<ExpectOp>,
}

/// One probe (upstream `ValidateOrFail`): a port, a protocol and the expected matrix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Port.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The expected reachability.
    pub expect: Expectation,
}

/// One step: changes, then probes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// What the step does.
    #[serde(default)]
    pub description: String,
    /// Objects created or replaced.
    #[serde(default)]
    pub apply: Vec<Value>,
    /// Objects removed.
    #[serde(default)]
    pub delete: Vec<ObjectKey>,
    /// Label changes.
    #[serde(default)]
    pub labels: Vec<LabelChange>,
    /// Probes after the changes.
    #[serde(default)]
    pub probes: Vec<Probe>,
}

/// One upstream test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Slug.
    pub name: String,
    /// Upstream test name.
    pub upstream: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub context: String,
    /// The pods upstream creates and compares, `ns/name`.
    pub pods: Vec<String>,
    /// Steps.
    pub steps: Vec<Step>,
    /// The file it came from.
    #[serde(skip)]
    pub file: String,
}

/// Parses a case file.
pub fn parse_case(source: &Source) -> Result<Case, CaseError> {
    let format_error = |message: String| CaseError::Format {
        file: source.name.clone(),
        message,
    };
    let mut case: Case =
        serde_saphyr::from_str(&source.text).map_err(|e| format_error(e.to_string()))?;
    case.file = source.name.clone();
    for step in &case.steps {
        for probe in &step.probes {
            if Protocol::from_api(&probe.protocol).is_none() {
                return Err(format_error(format!(
                    "probe protocol {:?} is not TCP, UDP or SCTP",
                    probe.protocol
                )));
            }
            for op in &probe.expect.ops {
                let kinds = [
                    op.expect_all_ingress.is_some(),
                    op.expect_all_egress.is_some(),
                    op.expect.is_some(),
                    op.expect_peer.is_some(),
                ];
                if kinds.iter().filter(|k| **k).count() != 1 {
                    return Err(format_error(
                        "each expect op names exactly one of expectAllIngress, expectAllEgress, \
                         expect, expectPeer"
                            .to_string(),
                    ));
                }
            }
        }
    }
    Ok(case)
}

fn parse_pod_ref(s: &str) -> Option<ObjectRef> {
    let (ns, name) = s.split_once('/')?;
    Some(ObjectRef::new(ns, name))
}

impl Case {
    /// The probed pods as references.
    pub fn pod_refs(&self) -> Vec<ObjectRef> {
        self.pods.iter().filter_map(|p| parse_pod_ref(p)).collect()
    }

    fn step_error(&self, step: usize, message: String) -> CaseError {
        CaseError::Step {
            case: self.name.clone(),
            step: step + 1,
            message,
        }
    }

    /// Applies step `index` (0-based) to `cluster`: deletes, then label changes, then applies.
    pub fn apply_step(&self, index: usize, cluster: &mut ClusterState) -> Result<(), CaseError> {
        let step = &self.steps[index];
        let changes = Changes {
            delete: &step.delete,
            labels: &step.labels,
            apply: &step.apply,
        };
        apply_changes(cluster, &changes, &self.file, index).map_err(|e| match e {
            ChangeError::Input(errors) => CaseError::Input(errors),
            ChangeError::Step(message) => self.step_error(index, message),
        })
    }
}

/// One step's changes, as the conformance suites write them.
#[derive(Debug, Clone, Copy)]
pub struct Changes<'a> {
    /// Objects removed (NetworkPolicy, ClusterNetworkPolicy or Pod).
    pub delete: &'a [ObjectKey],
    /// Label changes on pods and namespaces.
    pub labels: &'a [LabelChange],
    /// Objects created, or replaced by kind, namespace and name.
    pub apply: &'a [Value],
}

/// Why a step's changes cannot be made.
#[derive(Debug)]
pub enum ChangeError {
    /// An applied object is invalid.
    Input(InputErrors),
    /// A change names something that does not exist, or cannot be changed.
    Step(String),
}

/// Makes a step's changes to `cluster`: deletes, then label changes, then applies. `file` and
/// `step` (0-based) locate the applied objects in errors.
pub fn apply_changes(
    cluster: &mut ClusterState,
    changes: &Changes<'_>,
    file: &str,
    step: usize,
) -> Result<(), ChangeError> {
    for key in changes.delete {
        let id = ObjectRef::new(key.namespace.clone().unwrap_or_default(), &key.name);
        let removed = match Kind::from_name(&key.kind) {
            Some(kind @ (Kind::NetworkPolicy | Kind::ClusterNetworkPolicy | Kind::Pod)) => {
                cluster.remove(kind, &id)
            }
            _ => return Err(ChangeError::Step(format!("cannot delete a {}", key.kind))),
        };
        if !removed {
            return Err(ChangeError::Step(format!("delete: no {} {id}", key.kind)));
        }
    }
    for change in changes.labels {
        let labels = match change.kind.as_str() {
            "Namespace" => cluster.namespace_mut(&change.name).map(|n| &mut n.labels),
            "Pod" => {
                let id = ObjectRef::new(change.namespace.clone().unwrap_or_default(), &change.name);
                cluster.pod_mut(&id).map(|p| &mut p.labels)
            }
            other => return Err(ChangeError::Step(format!("cannot relabel a {other}"))),
        };
        let Some(labels) = labels else {
            return Err(ChangeError::Step(format!(
                "labels: no {} {}",
                change.kind, change.name
            )));
        };
        for k in &change.remove {
            labels.remove(k);
        }
        labels.extend(change.add.clone());
        if change.kind == "Namespace" {
            // The name label is not removable.
            labels.insert(
                crate::model::NAMESPACE_NAME_LABEL.to_string(),
                change.name.clone(),
            );
        }
    }
    for (i, object) in changes.apply.iter().enumerate() {
        let raw = RawObject::document(
            format!("{file} (step {}, apply)", step + 1),
            i + 1,
            object.clone(),
        );
        match object::convert(raw, object::DEFAULT_NAMESPACE) {
            Converted::Valid(o) => cluster.upsert(o),
            Converted::Invalid { error, .. } => {
                return Err(ChangeError::Input(InputErrors(vec![
                    input::InputError::Invalid(error),
                ])))
            }
            Converted::Other(raw) => {
                let other = raw.value["kind"].as_str().unwrap_or_default().to_string();
                return Err(ChangeError::Step(format!("cannot apply a {other:?}")));
            }
        }
    }
    Ok(())
}

impl Probe {
    /// The probe's protocol.
    pub fn protocol(&self) -> Protocol {
        Protocol::from_api(&self.protocol).unwrap_or(Protocol::Tcp)
    }

    /// The expected verdict for every ordered pair of `pods`, loopback included (callers ignore it,
    /// as upstream does).
    pub fn expected(&self, pods: &[ObjectRef]) -> BTreeMap<(ObjectRef, ObjectRef), bool> {
        let mut cells = BTreeMap::new();
        for from in pods {
            for to in pods {
                cells.insert((from.clone(), to.clone()), self.expect.default);
            }
        }
        for op in &self.expect.ops {
            for ((from, to), v) in cells.iter_mut() {
                if op.selects(from, to) {
                    *v = op.allowed;
                }
            }
        }
        cells
    }
}

/// The model and cases of a suite directory.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The starting cluster.
    pub model: ClusterState,
    /// Cases, in file order.
    pub cases: Vec<Case>,
}

impl Suite {
    /// Builds a suite from the model's sources and the cases' sources.
    pub fn parse(model: &[Source], cases: &[Source]) -> Result<Self, CaseError> {
        let model = input::parse_sources(model)?.cluster;
        let cases = cases
            .iter()
            .map(parse_case)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { model, cases })
    }

    /// Reads `DIR/model.yaml` and `DIR/cases/`.
    pub fn read(dir: &std::path::Path) -> Result<Self, CaseError> {
        let model = input::read_paths(&[dir.join("model.yaml").display().to_string()])?;
        let cases = input::read_paths(&[dir.join("cases").display().to_string()])?;
        Self::parse(&model, &cases)
    }
}
