//! The review fixture (`fixtures/review/`: a repository and a pull request against it) through
//! every command a reviewer runs in CI, from the repository root: `compile`, `diff`, `verify` and
//! `lint` in every format against golden files checked by hand, their exit statuses, the CI
//! recipes of `examples/ci/` run on the fixture, and `explain`'s JSON shape with workload names.

mod common;

use common::{policyc, root, text};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

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
        let out = policyc(args, None);
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
    let out = policyc(&["compile", "--node", "node-1", BASE], None);
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
        let out = policyc(&["diff", BASE, "--fail-on", kinds, "--", CHANGED], None);
        assert_eq!(out.status.code(), Some(status), "--fail-on {kinds}");
        // Failing changes nothing in what is printed.
        assert_eq!(text(&out.stdout), golden("diff.text"), "--fail-on {kinds}");
    }
    // A version against itself: nothing changes, nothing fails.
    let out = policyc(&["diff", "--fail-on", "any", BASE, "--", BASE], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "no connectivity changes\n");
    let out = policyc(&["diff", "-o", "markdown", BASE, "--", BASE], None);
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
            let out = policyc(&["lint", version, "--deny", deny], None);
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

// The CI recipes: their policyc command lines, run on the fixture laid out as the recipes expect
// (the pull request's manifests in $MANIFESTS, the base branch's in base/$MANIFESTS and its rules
// in base/$RULES).

/// A policyc command line of a recipe, and whether its step or job may fail without failing the
/// pipeline.
#[derive(Debug)]
struct RecipeCommand {
    line: String,
    may_fail: bool,
}

/// A recipe's variables and policyc command lines.
struct Recipe {
    name: &'static str,
    variables: BTreeMap<String, String>,
    commands: Vec<RecipeCommand>,
}

fn load_yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The shell lines of a script (continuation lines joined) that run policyc.
fn policyc_lines(script: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in script.lines() {
        let line = line.trim();
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            continue;
        }
        current.push_str(line);
        lines.push(std::mem::take(&mut current));
    }
    lines
        .into_iter()
        .filter(|l| l.starts_with("policyc "))
        .collect()
}

/// The policyc command lines of a script, of a step or job that `may_fail`.
fn script_commands(script: &str, may_fail: bool) -> impl Iterator<Item = RecipeCommand> {
    policyc_lines(script)
        .into_iter()
        .map(move |line| RecipeCommand { line, may_fail })
}

fn strings(map: &Value) -> BTreeMap<String, String> {
    map.as_object()
        .expect("a mapping of variables")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("a string").to_string()))
        .collect()
}

fn github_actions() -> Recipe {
    let doc = load_yaml("examples/ci/github-actions.yml");
    let mut commands = Vec::new();
    for job in doc["jobs"].as_object().expect("jobs").values() {
        for step in job["steps"].as_array().expect("steps") {
            if let Some(run) = step["run"].as_str() {
                let may_fail = step["continue-on-error"] == json!(true);
                commands.extend(script_commands(run, may_fail));
            }
        }
    }
    Recipe {
        name: "github-actions",
        variables: strings(&doc["env"]),
        commands,
    }
}

fn gitlab_ci() -> Recipe {
    let doc = load_yaml("examples/ci/gitlab-ci.yml");
    let mut commands = Vec::new();
    for job in doc.as_object().expect("jobs").values() {
        let may_fail = job["allow_failure"] == json!(true);
        for key in ["before_script", "script"] {
            for entry in job[key].as_array().into_iter().flatten() {
                let script = entry.as_str().expect("a script line");
                commands.extend(script_commands(script, may_fail));
            }
        }
    }
    Recipe {
        name: "gitlab-ci",
        variables: strings(&doc["variables"]),
        commands,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A checkout as the recipe sees it: `pull_request` (a directory of the fixture) in $MANIFESTS,
/// the fixture's base in base/$MANIFESTS, the rules in base/$RULES.
fn checkout(recipe: &Recipe, case: &str, pull_request: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ci-{}-{case}", recipe.name));
    let _ = std::fs::remove_dir_all(&dir);
    let manifests = &recipe.variables["MANIFESTS"];
    let rules = &recipe.variables["RULES"];
    copy_dir(&root().join(pull_request), &dir.join(manifests));
    copy_dir(&root().join(BASE), &dir.join("base").join(manifests));
    let rules_path = dir.join("base").join(rules);
    std::fs::create_dir_all(rules_path.parent().expect("a directory")).expect("create dir");
    std::fs::copy(root().join(RULES), rules_path).expect("copy rules");
    dir
}

fn has_jq() -> bool {
    Command::new("jq").arg("--version").output().is_ok()
}

/// Runs a recipe line as CI's shells do (bash, -e, pipefail), policyc on the path.
fn run_line(recipe: &Recipe, dir: &Path, line: &str) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_policyc"))
        .parent()
        .expect("a directory");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", line])
        .current_dir(dir)
        .envs(&recipe.variables)
        .env("PATH", path)
        .stdin(Stdio::null())
        .output()
        .expect("run bash")
}

/// Runs every policyc line of the recipe on a checkout; `gates_fail` says whether the verify
/// gate and `--fail-on` are to fail (the pull request) or pass (no change).
fn run_recipe(recipe: &Recipe, dir: &Path, gates_fail: bool) {
    let jq = has_jq();
    for command in &recipe.commands {
        if command.line.contains("| jq ") && !jq {
            eprintln!(
                "{}: jq is not installed; not run: {}",
                recipe.name, command.line
            );
            continue;
        }
        let gate =
            command.line.starts_with("policyc verify ") || command.line.contains("--fail-on");
        let expected = if gates_fail && gate { 1 } else { 0 };
        let out = run_line(recipe, dir, &command.line);
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{}: {}\n{}",
            recipe.name,
            command.line,
            text(&out.stderr)
        );
    }
}

#[test]
fn the_recipes_commands_run_on_the_fixture_as_the_recipes_expect() {
    for recipe in [github_actions(), gitlab_ci()] {
        let lines: Vec<&str> = recipe.commands.iter().map(|c| c.line.as_str()).collect();
        // Each recipe lints to SARIF, comments the markdown diff, gates on verify, and may gate
        // on new connections.
        for needed in [
            ["policyc lint ", "-o sarif"],
            ["policyc diff ", "-o markdown"],
            ["policyc verify ", "--rules"],
            ["policyc diff ", "--fail-on added"],
        ] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(needed[0]) && l.contains(needed[1])),
                "{}: no `{} ... {}` in {lines:?}",
                recipe.name,
                needed[0],
                needed[1]
            );
        }
        // verify is a gate; --fail-on added is an optional one; the rest cannot fail on a clean
        // input.
        for command in &recipe.commands {
            let optional = command.line.contains("--fail-on");
            assert_eq!(command.may_fail, optional, "{}: {command:?}", recipe.name);
        }

        // The pull request: verify fails (two rules broken), --fail-on added fails (four new
        // connections), the rest succeed.
        let dir = checkout(&recipe, "pull-request", CHANGED);
        run_recipe(&recipe, &dir, true);
        let comment = std::fs::read_to_string(dir.join("policyc-diff.md")).expect("the diff");
        assert_eq!(comment, golden("diff.markdown"), "{}", recipe.name);
        // SARIF locations are relative to the checkout's root, as code scanning wants them.
        let sarif: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("policyc.sarif")).expect("the SARIF"),
        )
        .expect("JSON");
        let manifests = &recipe.variables["MANIFESTS"];
        let uris: Vec<&str> = sarif["runs"][0]["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                    .as_str()
                    .expect("a uri")
            })
            .collect();
        assert_eq!(
            uris,
            [
                format!("{manifests}/platform/coredns.yaml"),
                format!("{manifests}/shop/policies.yaml")
            ],
            "{}",
            recipe.name
        );
        if recipe.name == "gitlab-ci" && has_jq() {
            let report: Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join("gl-code-quality-report.json"))
                    .expect("the code quality report"),
            )
            .expect("JSON");
            assert_eq!(
                report,
                json!([
                    {
                        "description": "kube-system/coredns[Deployment] is isolated by no \
                            NetworkPolicy in either direction: it accepts connections from \
                            anywhere and may open connections to anywhere",
                        "check_name": "workload-not-isolated",
                        "fingerprint": format!("workload-not-isolated:{manifests}/platform/coredns.yaml:Deployment/kube-system/coredns:"),
                        "severity": "info",
                        "location": {"path": format!("{manifests}/platform/coredns.yaml"), "lines": {"begin": 1}}
                    },
                    {
                        "description": "NetworkPolicy shop/frontend spec.ingress[0].from[0]: \
                            ipBlock 0.0.0.0/0 includes all of the pod CIDR 10.244.0.0/16: \
                            ipBlocks match pod addresses, so it allows the pods there whatever \
                            their labels",
                        "check_name": "ipblock-covers-pod-cidr",
                        "fingerprint": format!("ipblock-covers-pod-cidr:{manifests}/shop/policies.yaml:NetworkPolicy/shop/frontend:spec.ingress[0].from[0].ipBlock.cidr"),
                        "severity": "minor",
                        "location": {"path": format!("{manifests}/shop/policies.yaml"), "lines": {"begin": 41}}
                    }
                ])
            );
        }

        // A pull request that changes nothing passes every gate.
        let dir = checkout(&recipe, "no-change", BASE);
        run_recipe(&recipe, &dir, false);
        let comment = std::fs::read_to_string(dir.join("policyc-diff.md")).expect("the diff");
        assert_eq!(
            comment,
            "### Connectivity changes\n\nNo change in who can reach whom.\n"
        );
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

/// `policyc explain MANIFESTS --from FROM --to TO --port PORT <extra>`.
fn explain(manifests: &str, from: &str, to: &str, port: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "explain", manifests, "--from", from, "--to", to, "--port", port,
    ];
    args.extend(extra);
    policyc(&args, None)
}

/// [`explain`] with `-o json`, which must succeed: its JSON.
fn explain_json(manifests: &str, from: &str, to: &str, port: &str) -> Value {
    let out = explain(manifests, from, to, port, &["-o", "json"]);
    assert!(
        out.status.success(),
        "explain {manifests} --from {from} --to {to} --port {port}: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn explain_keeps_its_json_shape_when_given_workload_names() {
    let workloads = explain_json(BASE, "shop/frontend", "shop/api[Deployment]", "8000/TCP");
    let pods = explain_json(
        "fixtures/demo",
        "frontend/web-0",
        "backend/api-0",
        "9090/TCP",
    );
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
    let dump_workloads = explain_json(
        "fixtures/demo",
        "frontend/web",
        "backend/api[StatefulSet]",
        "9090/TCP",
    );
    assert_eq!(dump_workloads, pods);
    // A workload named without its kind is the same workload.
    let without_kind = explain_json(BASE, "shop/frontend[Deployment]", "shop/api", "8000/TCP");
    assert_eq!(without_kind, workloads);

    // Text names the workload's pod and its address.
    let out = explain(
        BASE,
        "shop/frontend",
        "shop/api[Deployment]",
        "8000/TCP",
        &[],
    );
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.lines().next(),
        Some(
            "shop/frontend[Deployment] (10.244.247.12) -> shop/api[Deployment] (10.244.126.62) \
             8000/TCP: ALLOWED"
        )
    );
    // The repository's pods have no node: their rules are shown as one node running them.
    assert!(
        stdout.contains("  nftables on (unscheduled pods): accept\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  ingress: allowed: shop/api[Deployment] is isolated for ingress by \
             shop/allow-metrics, shop/api, shop/default-deny\n"
        ),
        "{stdout}"
    );
}
