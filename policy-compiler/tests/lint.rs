//! `policyc lint` as a user and CI run it: locations, formats, SARIF that code scanning accepts,
//! exit statuses, standard input.

mod common;

use common::{policyc, policyc_in, root, text};

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

const FINDINGS: &str = "fixtures/lint/findings";
const FINDINGS_YAML: &str = "fixtures/lint/findings/findings.yaml";

/// Where each finding of `fixtures/lint/findings/findings.yaml` is, as its comments say (each
/// line and column checked against the file by hand).
const EXPECTED: [(usize, usize, &str, &str); 11] = [
    (48, 1, "note", "workload-not-isolated"),
    (67, 1, "note", "workload-not-isolated"),
    (71, 3, "warning", "namespace-not-declared"),
    (89, 3, "warning", "policy-selects-no-pod"),
    (108, 5, "warning", "rule-duplicate"),
    (116, 7, "warning", "peer-matches-nothing"),
    (121, 7, "warning", "peer-matches-nothing"),
    (125, 7, "warning", "named-port-undeclared"),
    (143, 5, "warning", "rule-shadowed"),
    (153, 9, "warning", "ipblock-covers-pod-cidr"),
    (165, 3, "warning", "egress-blocks-dns"),
];

/// Every lint rule's id, in the order of the rules table.
const RULE_IDS: [&str; 13] = [
    "policy-selects-no-pod",
    "peer-matches-nothing",
    "named-port-undeclared",
    "rule-duplicate",
    "rule-shadowed",
    "ipblock-covers-pod-cidr",
    "egress-blocks-dns",
    "namespace-not-declared",
    "workload-not-isolated",
    "cluster-policy-priority-tie",
    "cluster-pass-reaches-nothing",
    "networks-cover-pod-cidr",
    "cluster-rule-shadowed",
];

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("policyc-lint-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn text_points_at_each_field_like_a_compiler() {
    let out = policyc(&["lint", FINDINGS], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let prefixes: Vec<String> = EXPECTED
        .iter()
        .map(|(line, col, severity, rule)| {
            format!("{FINDINGS_YAML}:{line}:{col}: {severity}[{rule}]: ")
        })
        .collect();
    assert_eq!(lines.len(), prefixes.len(), "{stdout}");
    for (line, prefix) in lines.iter().zip(&prefixes) {
        assert!(
            line.starts_with(prefix.as_str()),
            "{line:?} should start with {prefix:?}"
        );
    }
    // Messages name the object, the rule's field path and what covers what.
    assert_eq!(
        lines[4],
        format!(
            "{FINDINGS_YAML}:108:5: warning[rule-duplicate]: NetworkPolicy shop/web-ingress \
             spec.ingress[1] duplicates spec.ingress[0]: the same peers and ports"
        )
    );
    assert_eq!(
        lines[8],
        format!(
            "{FINDINGS_YAML}:143:5: warning[rule-shadowed]: NetworkPolicy shop/api spec.ingress[1] \
             is covered by spec.ingress[0], which allows every peer of spec.ingress[1] on every \
             port spec.ingress[1] allows"
        )
    );
    assert!(lines[10].contains("isolates shop/web[Deployment] for egress"));
    // The summary goes to standard error, so that standard output stays the findings alone.
    assert!(
        text(&out.stderr).contains("policyc lint: 9 warnings and 2 notes"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_clean_repository_has_no_findings_even_when_denying_warnings() {
    let out = policyc(&["lint", "fixtures/lint/clean", "--deny", "warnings"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("policyc lint: no findings"));
    let out = policyc(&["lint", "fixtures/lint/clean", "-o", "json"], None);
    assert_eq!(json(&out), serde_json::json!({"findings": []}));
}

#[test]
fn deny_decides_the_exit_status() {
    // Warnings: exit 0 unless denied; options may come after the paths.
    let out = policyc(&["lint", FINDINGS], None);
    assert_eq!(out.status.code(), Some(0));
    let out = policyc(
        &["lint", FINDINGS, "--deny", "warnings", "-o", "json"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["findings"].as_array().map(Vec::len), Some(11));
    let out = policyc(&["lint", "--deny", "warnings", FINDINGS], None);
    assert_eq!(out.status.code(), Some(1));
    // A note alone fails only `--deny notes`.
    let dir = temp_dir("note");
    std::fs::write(
        dir.join("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lonely, namespace: shop}\n\
         spec: {containers: [{name: c, image: i}]}\n",
    )
    .expect("write");
    let path = dir.join("pod.yaml");
    let path = path.to_str().expect("utf-8");
    let out = policyc(&["lint", path, "--deny", "warnings"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("note[workload-not-isolated]: shop/lonely[Pod]"));
    let out = policyc(&["lint", path, "--deny", "notes"], None);
    assert_eq!(out.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_input_exits_2_with_nothing_on_stdout() {
    let bad = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: x}\n\
               spec: {podSelector: {}, ingress: [{ports: [{port: 0}]}]}\n";
    for format in ["text", "json", "sarif"] {
        let out = policyc(
            &["lint", "-", "-o", format, "--deny", "warnings"],
            Some(bad),
        );
        assert_eq!(out.status.code(), Some(2), "{format}");
        assert!(out.stdout.is_empty(), "{format}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(
            err.contains("<stdin>: document 1") && err.contains("spec.ingress[0].ports[0].port"),
            "{err}"
        );
    }
    let out = policyc(&["lint", FINDINGS, "--pod-cidr", "10.0.0.0/33"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn json_findings_locate_list_items_in_json_input() {
    let out = policyc(&["lint", "fixtures/lint/json", "-o", "json"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Positions checked by hand against fixtures/lint/json/list.json: the podSelector key of
    // items[2].spec.ingress[0].from[0] (line 41, column 35), and items[2].spec.ingress[2]'s `{`.
    assert_eq!(
        json(&out),
        serde_json::json!({"findings": [
            {
                "rule": "peer-matches-nothing",
                "severity": "warning",
                "message": "NetworkPolicy store/cart spec.ingress[0].from[0] matches no pod: no pod \
                    or workload in namespace store has labels matching app=checkout",
                "file": "fixtures/lint/json/list.json",
                "line": 41,
                "column": 35,
                "object": "store/cart",
                "kind": "NetworkPolicy",
                "field": "spec.ingress[0].from[0].podSelector",
            },
            {
                "rule": "rule-shadowed",
                "severity": "warning",
                "message": "NetworkPolicy store/cart spec.ingress[2] is covered by spec.ingress[1], \
                    which allows every peer of spec.ingress[2] on every port spec.ingress[2] allows",
                "file": "fixtures/lint/json/list.json",
                "line": 48,
                "column": 21,
                "object": "store/cart",
                "kind": "NetworkPolicy",
                "field": "spec.ingress[2]",
            },
        ]})
    );
}

#[test]
fn json_gives_object_kind_and_field_of_each_finding() {
    let out = policyc(&["lint", FINDINGS, "-o", "json"], None);
    let findings = json(&out)["findings"].clone();
    let rows: Vec<(u64, u64, &str, &str, &str, &str)> = findings
        .as_array()
        .expect("array")
        .iter()
        .map(|f| {
            (
                f["line"].as_u64().expect("line"),
                f["column"].as_u64().expect("column"),
                f["rule"].as_str().expect("rule"),
                f["object"].as_str().expect("object"),
                f["kind"].as_str().expect("kind"),
                f["field"].as_str().expect("field"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (48, 1, "workload-not-isolated", "shop/report", "CronJob", ""),
            (
                67,
                1,
                "workload-not-isolated",
                "billing/invoices",
                "Deployment",
                ""
            ),
            (
                71,
                3,
                "namespace-not-declared",
                "billing/invoices",
                "Deployment",
                "metadata.namespace"
            ),
            (
                89,
                3,
                "policy-selects-no-pod",
                "shop/typo",
                "NetworkPolicy",
                "spec.podSelector"
            ),
            (
                108,
                5,
                "rule-duplicate",
                "shop/web-ingress",
                "NetworkPolicy",
                "spec.ingress[1]"
            ),
            (
                116,
                7,
                "peer-matches-nothing",
                "shop/web-ingress",
                "NetworkPolicy",
                "spec.ingress[2].from[0].namespaceSelector"
            ),
            (
                121,
                7,
                "peer-matches-nothing",
                "shop/web-ingress",
                "NetworkPolicy",
                "spec.ingress[3].from[0].podSelector"
            ),
            (
                125,
                7,
                "named-port-undeclared",
                "shop/web-ingress",
                "NetworkPolicy",
                "spec.ingress[4].ports[0].port"
            ),
            (
                143,
                5,
                "rule-shadowed",
                "shop/api",
                "NetworkPolicy",
                "spec.ingress[1]"
            ),
            (
                153,
                9,
                "ipblock-covers-pod-cidr",
                "shop/api",
                "NetworkPolicy",
                "spec.egress[0].to[0].ipBlock.cidr"
            ),
            (
                165,
                3,
                "egress-blocks-dns",
                "shop/web-egress",
                "NetworkPolicy",
                "spec.policyTypes"
            ),
        ]
    );
    for f in findings.as_array().expect("array") {
        assert_eq!(f["file"], FINDINGS_YAML);
    }
}

/// The SARIF 2.1.0 schema (OASIS's, as the serde-sarif crate ships it).
fn sarif_schema() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/sarif-schema-2.1.0.json");
    let mut schema: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("schema")).expect("schema JSON");
    // The published schema's pattern for `language` (of a run and of a tool component) has a
    // stray `]`, which the validator's check of the schema itself rejects as a regular
    // expression. policyc writes no `language`; the pattern is dropped rather than guessed at.
    for definition in ["run", "toolComponent"] {
        let language = schema
            .pointer_mut(&format!("/definitions/{definition}/properties/language"))
            .and_then(Value::as_object_mut)
            .expect("language in the schema");
        assert!(language.remove("pattern").is_some());
    }
    schema
}

/// What code scanning requires of a SARIF log, beyond the schema.
fn check_code_scanning_rules(sarif: &Value) {
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&sarif_schema())
        .expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(sarif)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    let driver = &run["tool"]["driver"];
    assert_eq!(driver["name"], "policyc");
    assert_eq!(driver["version"], env!("CARGO_PKG_VERSION"));
    let rules = driver["rules"].as_array().expect("rules");
    let ids: Vec<&str> = rules
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, RULE_IDS);
    for rule in rules {
        for key in ["name", "shortDescription", "fullDescription", "help"] {
            assert!(!rule[key].is_null(), "{key} of {}", rule["id"]);
        }
        assert!(rule["help"]["text"].is_string() && rule["help"]["markdown"].is_string());
        assert!(["warning", "note"].contains(
            &rule["defaultConfiguration"]["level"]
                .as_str()
                .expect("level")
        ));
    }
    for result in run["results"].as_array().expect("results") {
        let index = result["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(result["ruleId"], rules[index]["id"]);
        assert!(["none", "note", "warning", "error"]
            .contains(&result["level"].as_str().expect("level")));
        assert_eq!(
            result["level"],
            rules[index]["defaultConfiguration"]["level"]
        );
        assert!(result["message"]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty()));
        let physical = &result["locations"][0]["physicalLocation"];
        let uri = physical["artifactLocation"]["uri"].as_str().expect("uri");
        assert!(
            !uri.is_empty()
                && !uri.starts_with('/')
                && !uri.starts_with("./")
                && !uri.contains(':')
                && !uri.contains('\\'),
            "{uri}"
        );
        assert!(physical["region"]["startLine"]
            .as_u64()
            .is_some_and(|l| l >= 1));
        assert!(physical["region"]["startColumn"]
            .as_u64()
            .is_some_and(|c| c >= 1));
        assert!(result["partialFingerprints"].is_object());
    }
}

#[test]
fn sarif_is_valid_for_code_scanning() {
    let out = policyc(&["lint", FINDINGS, "-o", "sarif"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sarif = json(&out);
    check_code_scanning_rules(&sarif);
    let run = &sarif["runs"][0];
    assert_eq!(run["columnKind"], "unicodeCodePoints");
    let results = run["results"].as_array().expect("results");
    assert_eq!(results.len(), EXPECTED.len());
    for (result, (line, column, level, rule)) in results.iter().zip(EXPECTED) {
        assert_eq!(result["ruleId"], rule);
        assert_eq!(result["level"], level);
        let physical = &result["locations"][0]["physicalLocation"];
        assert_eq!(physical["artifactLocation"]["uri"], FINDINGS_YAML);
        assert_eq!(physical["region"]["startLine"], line);
        assert_eq!(physical["region"]["startColumn"], column);
    }
    // The schema check is live: a level SARIF does not define is refused.
    let mut broken = sarif.clone();
    broken["runs"][0]["results"][0]["level"] = Value::from("warn");
    let validator = jsonschema::options()
        .build(&sarif_schema())
        .expect("schema compiles");
    assert!(!validator.is_valid(&broken));
    assert!(validator.is_valid(&sarif));
    // A clean run is valid too, with the rules and no results.
    let out = policyc(&["lint", "fixtures/lint/clean", "-o", "sarif"], None);
    let sarif = json(&out);
    check_code_scanning_rules(&sarif);
    assert_eq!(sarif["runs"][0]["results"], serde_json::json!([]));
}

#[test]
fn locations_are_relative_to_the_current_directory() {
    // From the fixture's own directory, the file is named as given there.
    let dir = root().join(FINDINGS);
    let out = policyc_in(&dir, &["lint", ".", "-o", "sarif"], None);
    let sarif = json(&out);
    check_code_scanning_rules(&sarif);
    assert_eq!(
        sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
            ["uri"],
        "findings.yaml"
    );
    let out = policyc_in(&dir, &["lint", "."], None);
    assert!(text(&out.stdout).starts_with("./findings.yaml:48:1: note[workload-not-isolated]"));
    // An absolute path under the current directory is made relative for SARIF; text keeps it as
    // given.
    let absolute = std::fs::canonicalize(root().join(FINDINGS_YAML)).expect("path");
    let absolute = absolute.to_str().expect("utf-8");
    let cwd = std::fs::canonicalize(root()).expect("root");
    let out = policyc_in(&cwd, &["lint", absolute, "-o", "sarif"], None);
    let sarif = json(&out);
    check_code_scanning_rules(&sarif);
    assert_eq!(
        sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
            ["uri"],
        FINDINGS_YAML
    );
    let out = policyc_in(&cwd, &["lint", absolute], None);
    assert!(text(&out.stdout).starts_with(&format!("{absolute}:48:1: ")));
}

#[test]
fn standard_input_is_named_stdin() {
    let yaml = std::fs::read_to_string(root().join(FINDINGS_YAML)).expect("fixture");
    let out = policyc(&["lint", "-"], Some(&yaml));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), EXPECTED.len());
    for (line, (l, c, severity, rule)) in lines.iter().zip(EXPECTED) {
        assert!(
            line.starts_with(&format!("<stdin>:{l}:{c}: {severity}[{rule}]: ")),
            "{line}"
        );
    }
    // SARIF needs a URI on every result: `<stdin>`, percent-encoded, names no repository file.
    let out = policyc(&["lint", "-", "-o", "sarif"], Some(&yaml));
    let sarif = json(&out);
    check_code_scanning_rules(&sarif);
    for result in sarif["runs"][0]["results"].as_array().expect("results") {
        assert_eq!(
            result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "%3Cstdin%3E"
        );
    }
    // JSON input on standard input is located too.
    let list =
        std::fs::read_to_string(root().join("fixtures/lint/json/list.json")).expect("fixture");
    let out = policyc(&["lint", "-", "-o", "json"], Some(&list));
    let findings = json(&out);
    assert_eq!(findings["findings"][0]["file"], "<stdin>");
    assert_eq!(findings["findings"][0]["line"], 41);
    assert_eq!(findings["findings"][0]["column"], 35);
}

#[test]
fn the_rules_are_listed_in_help() {
    let out = policyc(&["lint", "--help"], None);
    let help = text(&out.stdout);
    for rule in RULE_IDS {
        assert!(help.contains(rule), "{rule} missing from {help}");
    }
}

#[test]
fn cluster_policies_get_one_finding_of_each_of_their_rules() {
    const FILE: &str = "fixtures/lint/cluster-policies/findings.yaml";
    let out = policyc(&["lint", "fixtures/lint/cluster-policies"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{FILE}:46:7: warning[cluster-policy-priority-tie]: ClusterNetworkPolicy block-ops \
                 spec.ingress[0] (\"ops\", Deny) and ClusterNetworkPolicy allow-monitoring \
                 spec.ingress[0] (\"scrape\", Accept) are both in the Admin tier at priority 10, \
                 and both decide ops/monitor[Pod] => shop/web[Pod] : TCP 9090: equal priorities \
                 are evaluated by name, so allow-monitoring's Accept wins"
            ),
            format!(
                "{FILE}:59:7: warning[cluster-rule-shadowed]: ClusterNetworkPolicy late-accept \
                 spec.ingress[0] (\"from-ops\", Accept) decides nothing: every connection it \
                 matches is decided earlier in the Admin tier by block-ops spec.ingress[0] \
                 (\"ops\", priority 10)"
            ),
            format!(
                "{FILE}:75:24: warning[networks-cover-pod-cidr]: ClusterNetworkPolicy deny-internet \
                 spec.egress[0].to[0].networks[0]: 0.0.0.0/0 includes all of the pod CIDR \
                 10.244.0.0/16: networks match pod addresses, so the rule (Deny) also matches the \
                 traffic to the pods there, whatever their labels"
            ),
            format!(
                "{FILE}:88:7: note[cluster-pass-reaches-nothing]: ClusterNetworkPolicy \
                 defer-to-owners spec.ingress[0] (\"defer\") passes its connections on, but no \
                 NetworkPolicy isolates their pods in that direction and no Baseline rule denies \
                 any of them: they are all allowed, as an Accept would allow them"
            ),
            format!(
                "{FILE}:101:7: note[cluster-pass-reaches-nothing]: ClusterNetworkPolicy \
                 baseline-open spec.ingress[0] (\"from-shop\") passes its connections on to the \
                 default, allow (nothing is evaluated after the Baseline tier): it allows them, as \
                 an Accept would"
            ),
        ]
    );
    // SARIF locates them at the same places, under the rules' indexes.
    let out = policyc(
        &["lint", "fixtures/lint/cluster-policies", "-o", "sarif"],
        None,
    );
    let sarif = json(&out);
    check_code_scanning_rules(&sarif);
    let results: Vec<(String, u64, u64)> = sarif["runs"][0]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let region = &r["locations"][0]["physicalLocation"]["region"];
            (
                r["ruleId"].as_str().expect("id").to_string(),
                region["startLine"].as_u64().expect("line"),
                region["startColumn"].as_u64().expect("column"),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("cluster-policy-priority-tie".to_string(), 46, 7),
            ("cluster-rule-shadowed".to_string(), 59, 7),
            ("networks-cover-pod-cidr".to_string(), 75, 24),
            ("cluster-pass-reaches-nothing".to_string(), 88, 7),
            ("cluster-pass-reaches-nothing".to_string(), 101, 7),
        ]
    );
    // A network outside the given pod CIDR that holds pods of the input names them; one that
    // holds neither is clean.
    let input = |network: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: shop}}\n\
             spec: {{containers: [{{name: c, image: i}}]}}\n\
             status: {{phase: Running, podIP: 10.244.0.10}}\n---\n\
             apiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n\
             metadata: {{name: out}}\nspec:\n  tier: Admin\n  priority: 1\n  subject: \
             {{namespaces: {{}}}}\n  egress:\n  - action: Deny\n    to: [{{networks: \
             [\"{network}\"]}}]\n"
        )
    };
    let lint = |network: &str| {
        let out = policyc(
            &["lint", "-", "--pod-cidr", "10.96.0.0/16", "-o", "json"],
            Some(&input(network)),
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        json(&out)["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .filter(|f| f["rule"] == "networks-cover-pod-cidr")
            .map(|f| f["message"].as_str().expect("message").to_string())
            .collect::<Vec<String>>()
    };
    assert_eq!(
        lint("10.244.0.0/24"),
        ["ClusterNetworkPolicy out spec.egress[0].to[0].networks[0]: 10.244.0.0/24 includes the \
          address of pod shop/web: networks match pod addresses, so the rule (Deny) also matches \
          the traffic to the pods there, whatever their labels"]
    );
    assert!(lint("192.0.2.0/24").is_empty());
}
