use super::*;

const MODEL: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {kubernetes.io/os: linux}}
status:
  addresses:
    - {type: InternalIP, address: "192.168.0.1"}
    - {type: InternalIP, address: "fd00::1"}
    - {type: ExternalIP, address: "203.0.113.1"}
    - {type: Hostname, address: n1}
---
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {house: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: a, labels: {house: a}}
spec: {nodeName: n1, containers: [{name: c}]}
status:
  hostIPs: [{ip: "192.168.0.1"}, {ip: "fd00::1"}]
  podIPs: [{ip: "10.0.0.1"}, {ip: "fd01::1"}]
---
apiVersion: v1
kind: Pod
metadata: {name: host, namespace: a}
spec: {nodeName: n1, hostNetwork: true, containers: [{name: c}]}
status:
  hostIPs: [{ip: "192.168.0.1"}, {ip: "fd00::1"}]
  podIPs: [{ip: "192.168.0.1"}, {ip: "fd00::1"}]
"#;

const CASE: &str = r#"
name: example
upstream:
  test: CNPExample
  file: conformance/tests/example.go
  features: [ClusterNetworkPolicy, ClusterNetworkPolicyEgressNodePeers]
  manifests: [base/example.yaml]
steps:
  - description: the manifest
    apply:
      - apiVersion: policy.networking.k8s.io/v1alpha2
        kind: ClusterNetworkPolicy
        metadata: {name: deny-nodes}
        spec: {tier: Admin, priority: 1, subject: {namespaces: {}}}
      - apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: np, namespace: a}
        spec: {podSelector: {}, policyTypes: [Ingress]}
  - subtest: "Should deny"
    description: probes
    probes:
      - {from: a/client, to: a/host, protocol: TCP, port: 34345, allowed: false}
  - subtest: "Should deny"
    description: cleanup
    labels: [{kind: Namespace, name: a, add: {house: b}}]
    delete:
      - {kind: ClusterNetworkPolicy, name: deny-nodes}
      - {kind: NetworkPolicy, namespace: a, name: np}
"#;

fn source(name: &str, text: &str) -> Source {
    Source {
        name: name.to_string(),
        text: text.to_string(),
    }
}

fn suite_with(case: &str) -> Result<Suite, SuiteError> {
    Suite::parse(&[source("model.yaml", MODEL)], &[source("case.yaml", case)])
}

fn model_with(model: &str) -> Result<Model, SuiteError> {
    Model::parse(&[source("model.yaml", model)])
}

#[test]
fn reads_a_valid_suite() {
    let suite = suite_with(CASE).expect("valid");
    let node = &suite.model.nodes["n1"];
    assert_eq!(
        node.labels
            .get("kubernetes.io/os")
            .expect("label kubernetes.io/os"),
        "linux"
    );
    let addresses: Vec<String> = node.addresses().map(|ip| ip.to_string()).collect();
    assert_eq!(addresses, ["192.168.0.1", "fd00::1", "203.0.113.1"]);
    let case = &suite.cases[0];
    assert_eq!(case.file, "case.yaml");
    assert_eq!(
        case.upstream.feature(),
        Feature::ClusterNetworkPolicyEgressNodePeers
    );
    assert_eq!(case.steps.len(), 3);
    assert_eq!(case.steps[0].subtest, None);
    assert_eq!(case.steps[1].subtest.as_deref(), Some("Should deny"));
    let probe = case.probes().next().expect("one probe");
    assert_eq!(probe.from, ObjectRef::new("a", "client"));
    assert_eq!(probe.to, ObjectRef::new("a", "host"));
    assert_eq!(
        (probe.protocol, probe.port, probe.allowed),
        (Protocol::Tcp, 34345, false)
    );
    assert_eq!(case.steps[0].apply[0]["spec"]["tier"], "Admin");
    assert!(suite
        .model
        .cluster
        .pod(&ObjectRef::new("a", "host"))
        .is_some_and(|p| p.host_network));
}

fn step_error(result: Result<Suite, SuiteError>) -> (usize, String) {
    match result {
        Err(SuiteError::Step {
            file,
            step,
            message,
        }) => {
            assert_eq!(file, "case.yaml");
            (step, message)
        }
        other => panic!("expected a step error, got {other:?}"),
    }
}

fn format_error(result: Result<Suite, SuiteError>) -> String {
    match result {
        Err(SuiteError::Format { file, message }) => {
            assert_eq!(file, "case.yaml");
            message
        }
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn rejects_unknown_fields() {
    let message = format_error(suite_with(&CASE.replace(
        "subtest: \"Should deny\"\n    description: probes",
        "subtest: x\n    descriptin: probes",
    )));
    assert!(message.contains("descriptin"), "{message}");
}

#[test]
fn rejects_bad_probes() {
    let message = format_error(suite_with(&CASE.replace("protocol: TCP", "protocol: ICMP")));
    assert!(
        message.contains("\"ICMP\" is not TCP, UDP or SCTP"),
        "{message}"
    );
    let message = format_error(suite_with(&CASE.replace("port: 34345", "port: 0")));
    assert!(message.contains("port 0"), "{message}");
    let message = format_error(suite_with(&CASE.replace("to: a/host", "to: host")));
    assert!(
        message.contains("\"host\" is not namespace/pod"),
        "{message}"
    );
    let (step, message) = step_error(suite_with(&CASE.replace("to: a/host", "to: a/server")));
    assert_eq!(step, 2);
    assert_eq!(message, "probes[0]: no pod a/server in the model");
}

#[test]
fn rejects_an_empty_step() {
    let case = CASE.replace(
        "    probes:\n      - {from: a/client, to: a/host, protocol: TCP, port: 34345, allowed: false}\n",
        "",
    );
    let (step, message) = step_error(suite_with(&case));
    assert_eq!(step, 2);
    assert_eq!(message, "the step changes nothing and checks nothing");
}

#[test]
fn rejects_deleting_what_does_not_exist() {
    let case = CASE.replace(
        "{kind: ClusterNetworkPolicy, name: deny-nodes}",
        "{kind: ClusterNetworkPolicy, name: other}",
    );
    let (step, message) = step_error(suite_with(&case));
    assert_eq!(step, 3);
    assert_eq!(
        message,
        "delete: no ClusterNetworkPolicy other exists at this point"
    );
    let case = CASE.replace(
        "{kind: NetworkPolicy, namespace: a, name: np}",
        "{kind: NetworkPolicy, name: np}",
    );
    let (_, message) = step_error(suite_with(&case));
    assert_eq!(message, "delete: a NetworkPolicy needs its namespace");
}

#[test]
fn rejects_bad_label_changes() {
    let (step, message) = step_error(suite_with(&CASE.replace("name: a, add", "name: b, add")));
    assert_eq!(step, 3);
    assert_eq!(message, "labels: no Namespace b in the model");
    let (_, message) = step_error(suite_with(
        &CASE.replace("kind: Namespace, name: a", "kind: Node, name: a"),
    ));
    assert_eq!(message, "labels: \"Node\" is not Namespace or Pod");
}

#[test]
fn rejects_bad_applied_objects() {
    let (step, message) = step_error(suite_with(&CASE.replace(
        "policy.networking.k8s.io/v1alpha2",
        "policy.networking.k8s.io/v1",
    )));
    assert_eq!(step, 1);
    assert!(
        message.starts_with("apply[0]: apiVersion \"policy.networking.k8s.io/v1\" is not"),
        "{message}"
    );
    let (_, message) = step_error(suite_with(
        &CASE.replace("policyTypes: [Ingress]", "policyTypes: [Sideways]"),
    ));
    assert!(
        message.starts_with("apply[1]: case.yaml (step 1, apply): document 2"),
        "{message}"
    );
    assert!(message.contains("spec.policyTypes"), "{message}");
    let (_, message) = step_error(suite_with(
        &CASE.replace("kind: NetworkPolicy\n", "kind: Service\n"),
    ));
    assert_eq!(
        message,
        "apply[1]: kind \"Service\" is not ClusterNetworkPolicy or NetworkPolicy"
    );
}

#[test]
fn rejects_a_case_without_the_standard_feature() {
    let case = CASE.replace(
        "[ClusterNetworkPolicy, ClusterNetworkPolicyEgressNodePeers]",
        "[ClusterNetworkPolicyEgressNodePeers]",
    );
    let message = format_error(suite_with(&case));
    assert!(
        message.contains("must include ClusterNetworkPolicy"),
        "{message}"
    );
}

fn model_error_of(result: Result<Model, SuiteError>) -> (String, String) {
    match result {
        Err(SuiteError::Model { location, message }) => (location, message),
        other => panic!("expected a model error, got {other:?}"),
    }
}

#[test]
fn rejects_pods_off_the_model_nodes() {
    let (location, message) = model_error_of(model_with(&MODEL.replacen(
        "nodeName: n1",
        "nodeName: n2",
        1,
    )));
    assert_eq!(location, "Pod a/client");
    assert_eq!(message, "runs on node n2, which is not a Node of the model");
    let (_, message) = model_error_of(model_with(&MODEL.replacen(
        "{ip: \"192.168.0.1\"}, {ip: \"fd00::1\"}]\n  podIPs: [{ip: \"10.0.0.1\"",
        "{ip: \"192.168.0.9\"}]\n  podIPs: [{ip: \"10.0.0.1\"",
        1,
    )));
    assert_eq!(
        message,
        "host IP 192.168.0.9 is not an InternalIP of its node n1"
    );
    let host_ips = "podIPs: [{ip: \"192.168.0.1\"}, {ip: \"fd00::1\"}]";
    let (location, message) = model_error_of(model_with(
        &MODEL.replace(host_ips, "podIPs: [{ip: \"192.168.0.1\"}]"),
    ));
    assert_eq!(location, "Pod a/host");
    assert_eq!(
        message,
        "uses the host network, so its pod IPs must be the InternalIPs of n1"
    );
}

/// The model's Nodes are read by [`crate::input`] first, which rejects bad and repeated ones.
fn input_error_of(result: Result<Model, SuiteError>) -> String {
    match result {
        Err(SuiteError::Input(errors)) => errors.to_string(),
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn rejects_bad_nodes() {
    let message = input_error_of(model_with(
        &MODEL.replace("address: \"fd00::1\"", "address: \"fd00::zz\""),
    ));
    assert_eq!(
        message,
        "model.yaml: document 1: Node n1: field status.addresses[1].address: \"fd00::zz\" is not \
         an IP address (an InternalIP entry holds one)"
    );
    let twice = format!("{MODEL}---\napiVersion: v1\nkind: Node\nmetadata: {{name: n1}}\n");
    let message = input_error_of(model_with(&twice));
    assert_eq!(
        message,
        "Node n1 is defined twice: at model.yaml: document 1 and at model.yaml: document 5"
    );
}
