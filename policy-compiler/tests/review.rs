//! The review fixture (`fixtures/review/`: a repository and a pull request against it) through
//! every command a reviewer runs in CI, from the repository root: `compile`, `diff`, `verify` and
//! `lint` in every format against golden files checked by hand, their exit statuses, and
//! `explain`'s JSON shape with workload names.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs policyc in the repository root, so paths (and those in its output) are relative.
fn policyc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("run policyc")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn golden(name: &str) -> String {
    std::fs::read_to_string(root().join("fixtures/review/golden").join(name))
        .unwrap_or_else(|e| panic!("golden {name}: {e}"))
}

const BASE: &str = "fixtures/review/base";
const CHANGED: &str = "fixtures/review/changed";
const RULES: &str = "fixtures/review/rules.yaml";

#[test]
fn every_command_and_format_equals_its_golden_file() {
    let cases: &[(&[&str], &str, i32)] = &[
        (
            &["compile", "--node", "node-1", BASE],
            "compile-node-1.nft",
            0,
        ),
        (&["diff", BASE, "--", CHANGED], "diff.text", 0),
        (
            &["diff", BASE, "-o", "markdown", "--", CHANGED],
            "diff.markdown",
            0,
        ),
        (&["diff", "-o", "json", BASE, "--", CHANGED], "diff.json", 0),
        (
            &["diff", "--node", "node-1", BASE, "--", CHANGED],
            "diff-node-1.text",
            0,
        ),
        (&["verify", BASE, "--rules", RULES], "verify-base.text", 0),
        (
            &["verify", BASE, "--rules", RULES, "-o", "json"],
            "verify-base.json",
            0,
        ),
        (
            &["verify", CHANGED, "--rules", RULES],
            "verify-changed.text",
            1,
        ),
        (
            &["verify", "-o", "json", "--rules", RULES, CHANGED],
            "verify-changed.json",
            1,
        ),
        (&["lint", BASE], "lint-base.text", 0),
        (&["lint", BASE, "-o", "json"], "lint-base.json", 0),
        (&["lint", "-o", "sarif", BASE], "lint-base.sarif", 0),
        (&["lint", CHANGED], "lint-changed.text", 0),
        (&["lint", CHANGED, "-o", "json"], "lint-changed.json", 0),
        (&["lint", CHANGED, "-o", "sarif"], "lint-changed.sarif", 0),
    ];
    for (args, file, status) in cases {
        let out = policyc(args);
        assert_eq!(
            out.status.code(),
            Some(*status),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), golden(file), "{args:?} against {file}");
    }
}

#[test]
fn compile_places_the_repository_on_the_node_and_warns_only_about_skipped_files() {
    let out = policyc(&["compile", "--node", "node-1", BASE]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stderr).lines().collect::<Vec<_>>(),
        [
            "policyc: warning: fixtures/review/base/chart/values.yaml: skipped 1 document that is not a Kubernetes object",
            "policyc: warning: fixtures/review/base/kustomization.yaml: skipped 1 object of kinds that play no part in policy (Kustomization)",
        ]
    );
}

#[test]
fn diff_fails_on_the_kinds_of_change_the_pull_request_has() {
    // The pull request adds connections and changes one (Prometheus to coredns), removes none.
    for (kinds, status) in [
        ("added", 1),
        ("removed", 0),
        ("changed", 1),
        ("any", 1),
        ("removed,changed", 1),
    ] {
        let out = policyc(&["diff", BASE, "--fail-on", kinds, "--", CHANGED]);
        assert_eq!(out.status.code(), Some(status), "--fail-on {kinds}");
        // Failing changes nothing in what is printed.
        assert_eq!(text(&out.stdout), golden("diff.text"), "--fail-on {kinds}");
    }
    // A version against itself: nothing changes, nothing fails.
    let out = policyc(&["diff", "--fail-on", "any", BASE, "--", BASE]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "no connectivity changes\n");
    let out = policyc(&["diff", "-o", "markdown", BASE, "--", BASE]);
    assert_eq!(
        text(&out.stdout),
        "### Connectivity changes\n\nNo change in who can reach whom.\n"
    );
}

#[test]
fn lint_denies_the_warning_both_versions_have() {
    // Both versions keep the frontend's ipBlock 0.0.0.0/0 (a warning) and the unisolated coredns
    // (a note).
    for (version, golden_file) in [(BASE, "lint-base.text"), (CHANGED, "lint-changed.text")] {
        for deny in ["warnings", "notes"] {
            let out = policyc(&["lint", version, "--deny", deny]);
            assert_eq!(out.status.code(), Some(1), "{version} --deny {deny}");
            assert_eq!(text(&out.stdout), golden(golden_file));
            assert!(
                text(&out.stderr).ends_with("policyc lint: 1 warning and 1 note\n"),
                "{}",
                text(&out.stderr)
            );
        }
    }
}

// explain with workload names.

/// The shape of a JSON value: objects keep their keys (each with its value's shape), arrays
/// become the distinct shapes of their elements, scalars their type.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        Value::Array(items) => {
            let mut shapes: Vec<Value> = items.iter().map(shape).collect();
            shapes.sort_by_key(ToString::to_string);
            shapes.dedup();
            Value::Array(shapes)
        }
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => json!("null"),
    }
}

fn explain_json(args: &[&str]) -> Value {
    let out = policyc(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn explain_keeps_its_json_shape_when_given_workload_names() {
    let workloads = explain_json(&[
        "explain",
        BASE,
        "--from",
        "shop/frontend",
        "--to",
        "shop/api[Deployment]",
        "--port",
        "8000/TCP",
        "-o",
        "json",
    ]);
    let pods = explain_json(&[
        "explain",
        "fixtures/demo",
        "--from",
        "frontend/web-0",
        "--to",
        "backend/api-0",
        "--port",
        "9090/TCP",
        "-o",
        "json",
    ]);
    assert_eq!(shape(&workloads), shape(&pods));
    assert_eq!(
        workloads["from"],
        "shop/frontend[Deployment] (10.244.247.12)"
    );
    assert_eq!(workloads["to"], "shop/api[Deployment] (10.244.126.62)");
    assert_eq!(workloads["egress"]["pod"], "shop/frontend[Deployment]");
    assert_eq!(workloads["ingress"]["pod"], "shop/api[Deployment]");
    assert_eq!(workloads["allowed"], true);
    // On a dump, a workload name is its first pod: the same answer as the pod's name.
    let dump_workloads = explain_json(&[
        "explain",
        "fixtures/demo",
        "--from",
        "frontend/web",
        "--to",
        "backend/api[StatefulSet]",
        "--port",
        "9090/TCP",
        "-o",
        "json",
    ]);
    assert_eq!(dump_workloads, pods);
    // A workload named without its kind is the same workload.
    let without_kind = explain_json(&[
        "explain",
        BASE,
        "--from",
        "shop/frontend[Deployment]",
        "--to",
        "shop/api",
        "--port",
        "8000/TCP",
        "-o",
        "json",
    ]);
    assert_eq!(without_kind, workloads);

    // Text names the workload's pod and its address.
    let out = policyc(&[
        "explain",
        BASE,
        "--from",
        "shop/frontend",
        "--to",
        "shop/api[Deployment]",
        "--port",
        "8000/TCP",
    ]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.lines().next(),
        Some(
            "shop/frontend[Deployment] (10.244.247.12) -> shop/api[Deployment] (10.244.126.62) \
             8000/TCP: ALLOWED"
        )
    );
    assert!(
        stdout.contains(
            "  ingress: allowed: shop/api[Deployment] is isolated for ingress by \
             shop/allow-metrics, shop/api, shop/default-deny\n"
        ),
        "{stdout}"
    );
}
