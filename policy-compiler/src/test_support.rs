//! What the unit tests share: clusters read from manifest text, and the manifests they write again
//! and again (namespaces, workloads, NetworkPolicies), as YAML documents.

use crate::input::{parse_sources, Source};
use crate::workload::{materialize, PodCidrs};
use crate::ClusterState;

/// The cluster of one manifest file, `t.yaml`, holding `text` (which must be valid).
pub(crate) fn parse(text: &str) -> ClusterState {
    parse_sources(&[Source {
        name: "t.yaml".into(),
        text: text.into(),
    }])
    .expect("valid")
    .cluster
}

/// The cluster of `text` ([`parse`]), materialized: workloads as representative pods, addresses
/// synthesised in `cidrs`.
pub(crate) fn materialized(text: &str, cidrs: &PodCidrs) -> ClusterState {
    let mut c = parse(text);
    materialize(&mut c, cidrs);
    c
}

/// YAML documents as one multi-document text, separated by `---`.
pub(crate) fn documents(documents: &[String]) -> String {
    documents.join("---\n")
}

/// A pod spec of one container without ports.
pub(crate) const ONE_CONTAINER: &str = "{containers: [{name: c, image: i}]}";

/// A pod spec of one container with the port `http`, TCP 8080.
pub(crate) const HTTP_ON_8080: &str =
    "{containers: [{name: c, image: i, ports: [{name: http, containerPort: 8080}]}]}";

/// A Namespace labelled `labels` (`key: value, ...`).
pub(crate) fn namespace(name: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n")
}

/// A Deployment selecting its pods by `app: NAME`, its pod template labelled `labels`
/// (`key: value, ...`) with the pod spec `pod_spec` (in flow style).
pub(crate) fn deployment(namespace: &str, name: &str, labels: &str, pod_spec: &str) -> String {
    apps_workload("Deployment", "", namespace, name, labels, pod_spec)
}

/// A StatefulSet (its service of its own name), as [`deployment`] writes a Deployment.
pub(crate) fn stateful_set(namespace: &str, name: &str, labels: &str, pod_spec: &str) -> String {
    let service = format!("  serviceName: {name}\n");
    apps_workload("StatefulSet", &service, namespace, name, labels, pod_spec)
}

fn apps_workload(
    kind: &str,
    spec_lines: &str,
    namespace: &str,
    name: &str,
    labels: &str,
    pod_spec: &str,
) -> String {
    format!(
        "apiVersion: apps/v1
kind: {kind}
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{spec_lines}  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{{labels}}}}}
    spec: {pod_spec}
"
    )
}

/// A NetworkPolicy whose spec is `spec` (its lines, indented by two spaces).
pub(crate) fn network_policy(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    )
}
