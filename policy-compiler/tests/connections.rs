//! `policyc connections` and `policyc graph` as a reviewer runs them in CI, from the repository root,
//! on the review fixture (`fixtures/review/`): every format against a golden file checked by hand,
//! workloads as a repository holds them, stdin, options in any position, and errors.

mod common;

use common::{policyc, root, text};

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn golden(name: &str) -> String {
    std::fs::read_to_string(root().join("fixtures/review/golden").join(name))
        .unwrap_or_else(|e| panic!("golden {name}: {e}"))
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

const BASE: &str = "fixtures/review/base";

#[test]
fn every_format_equals_its_golden_file() {
    for (format, file) in [
        ("text", "connections.text"),
        ("json", "connections.json"),
        ("markdown", "connections.markdown"),
        ("csv", "connections.csv"),
        ("dot", "connections.dot"),
    ] {
        let out = policyc(&["connections", BASE, "-o", format], None);
        assert_eq!(ok(&out), golden(file), "-o {format}");
    }
    let out = policyc(&["connections", BASE, "--exposure"], None);
    assert_eq!(ok(&out), golden("connections-exposure.text"));
    let out = policyc(&["connections", "--exposure", "-o", "json", BASE], None);
    assert_eq!(ok(&out), golden("connections-exposure.json"));
    let out = policyc(&["connections", BASE, "--focus", "shop/api"], None);
    assert_eq!(ok(&out), golden("connections-focus.text"));
    let out = policyc(&["graph", BASE, "-o", "mermaid"], None);
    assert_eq!(ok(&out), golden("graph.mermaid"));
    let out = policyc(&["graph", "-o", "dot", BASE], None);
    assert_eq!(ok(&out), golden("graph.dot"));
}

#[test]
fn the_repository_is_read_as_it_is_with_one_warning_per_skipped_file() {
    let out = policyc(&["connections", BASE], None);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "policyc: warning: fixtures/review/base/chart/values.yaml: skipped 1 document that is not a Kubernetes object",
            "policyc: warning: fixtures/review/base/kustomization.yaml: skipped 1 object of kinds that play no part in policy (Kustomization)",
        ]
    );
    // Workloads are named as the peers and roxctl name them.
    let stdout = text(&out.stdout);
    for name in [
        "shop/frontend[Deployment]",
        "shop/cart[StatefulSet]",
        "payments/ledger-backup[CronJob]",
        "kube-system/coredns[Deployment]",
    ] {
        assert!(stdout.contains(name), "{name} missing");
    }
    // --strict: the same files are invalid input.
    let out = policyc(&["connections", "--strict", BASE], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "fixtures/review/base/chart/values.yaml: document 1: not a Kubernetes object"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("kind Kustomization plays no part"),
        "{stderr}"
    );
}

#[test]
fn kustomize_output_through_stdin_gives_the_same_connections() {
    // What `kubectl kustomize fixtures/review/base` prints: the resources, one document each.
    let kustomization = std::fs::read_to_string(root().join(BASE).join("kustomization.yaml"))
        .expect("kustomization");
    let mut stream = String::new();
    for line in kustomization.lines() {
        if let Some(file) = line.trim().strip_prefix("- ") {
            stream.push_str("---\n");
            stream.push_str(
                &std::fs::read_to_string(root().join(BASE).join(file)).expect("a resource"),
            );
        }
    }
    let out = policyc(&["connections", "-"], Some(&stream));
    assert_eq!(ok(&out), golden("connections.text"));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn a_typed_pod_list_from_the_api_is_read() {
    let pods = r#"{"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": [
      {"metadata": {"name": "web-1", "namespace": "x", "labels": {"app": "web"}},
       "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]},
       "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}},
      {"metadata": {"name": "client", "namespace": "x", "labels": {"app": "client"}},
       "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
       "status": {"phase": "Running", "podIP": "10.244.1.6", "podIPs": [{"ip": "10.244.1.6"}]}}]}"#;
    let policy = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]\n";
    let dir = std::env::temp_dir().join(format!("policyc-podlist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("pods.json"), pods).expect("write");
    std::fs::write(dir.join("policy.yaml"), policy).expect("write");
    let out = policyc(
        &[
            "connections",
            &dir.display().to_string(),
            "--pod-cidr",
            "10.244.0.0/16",
        ],
        None,
    );
    let stdout = ok(&out);
    assert!(
        stdout.contains("x/client[Pod] => x/web-1[Pod] : TCP 80\n"),
        "{stdout}"
    );
    // One IPv4 pod CIDR: no IPv6 ranges.
    assert!(!stdout.contains("::"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_has_the_documented_shape() {
    let out = policyc(&["connections", BASE, "-o", "json"], None);
    let json: Value = serde_json::from_str(&ok(&out)).expect("JSON");
    let list = json["connections"].as_array().expect("a list");
    assert!(!list.is_empty());
    for c in list {
        assert!(c["from"].is_string() && c["to"].is_string(), "{c}");
        assert_ne!(c["from"], c["to"]);
        let all = c["all"].as_bool().expect("all");
        let allowed = c["allowed"].as_array().expect("allowed");
        assert_eq!(all, allowed.is_empty(), "{c}");
        for a in allowed {
            assert!(["TCP", "UDP", "SCTP"].contains(&a["protocol"].as_str().expect("protocol")));
            let ranges: Vec<(u64, u64)> = a["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .map(|r| (r[0].as_u64().expect("first"), r[1].as_u64().expect("last")))
                .collect();
            assert!(ranges.iter().all(|(a, b)| a <= b), "{c}");
            assert!(
                ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0),
                "merged and sorted: {c}"
            );
        }
    }
    let api_cart = list
        .iter()
        .find(|c| c["from"] == "shop/api[Deployment]" && c["to"] == "shop/cart[StatefulSet]")
        .expect("api to cart");
    assert_eq!(
        api_cart["allowed"],
        serde_json::json!([{"protocol": "TCP", "ports": [[6379, 6379]]}])
    );
    // coredns reaches the frontend over IPv4 only: the frontend admits 0.0.0.0/0, which holds
    // coredns' pod address, and no IPv6 source.
    let dns_web = list
        .iter()
        .find(|c| {
            c["from"] == "kube-system/coredns[Deployment]" && c["to"] == "shop/frontend[Deployment]"
        })
        .expect("coredns to frontend");
    assert_eq!(dns_web["family"], "IPv4");
}

#[test]
fn errors_exit_2_with_nothing_on_stdout() {
    for args in [
        vec!["connections", BASE, "--focus", "shop/nope"],
        vec!["connections", BASE, "--pod-cidr", "10.244.0.1/16"],
        vec!["connections", "fixtures/review/missing"],
        vec!["graph", BASE, "-o", "pdf"],
    ] {
        let out = policyc(&args, None);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = policyc(&["connections", BASE, "--focus", "shop/nope"], None);
    assert!(text(&out.stderr).contains("--focus shop/nope: no such workload"));
    let out = policyc(&["connections", BASE, "--pod-cidr", "10.244.0.1/16"], None);
    assert!(text(&out.stderr).contains("host bits are set; the network is 10.244.0.0/16"));
}

#[test]
fn svg_goes_through_graphviz_or_says_it_is_missing() {
    let out = policyc(&["graph", BASE, "-o", "svg"], None);
    let has_dot = Command::new("dot").arg("-V").output().is_ok();
    if has_dot {
        let svg = ok(&out);
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("shop/frontend[Deployment]") || svg.contains("frontend[Deployment]"));
    } else {
        assert_eq!(out.status.code(), Some(2));
        assert!(
            text(&out.stderr).contains("needs Graphviz's `dot`"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn matrix_refuses_a_cluster_too_large_for_a_table() {
    let big = Path::new(env!("CARGO_TARGET_TMPDIR")).join("medium.json");
    let generated = policyc(&["generate", "--size", "medium", "-o", "json"], None);
    std::fs::write(&big, ok(&generated)).expect("write");
    let out = policyc(&["matrix", &big.display().to_string()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("use `policyc connections`"),
        "{}",
        text(&out.stderr)
    );
}
