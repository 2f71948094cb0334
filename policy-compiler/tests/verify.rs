//! `policyc verify`: the hand-checked report of `fixtures/verify/rules.yaml` on the demo, exit
//! statuses, and located errors in rules files.

mod common;

use common::{policyc, text};

use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture(path: &str) -> String {
    common::fixtures().join(path).display().to_string()
}

/// A rules file with this text, in a directory of the test's own.
fn rules_file(test: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("policyc-verify-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("rules.yaml");
    std::fs::write(&path, body).expect("write");
    path
}

/// `policyc verify MANIFESTS --rules RULES <extra>`.
fn verify(manifests: &str, rules: &Path, extra: &[&str]) -> Output {
    let rules = rules.display().to_string();
    let mut args = vec!["verify", manifests, "--rules", &rules];
    args.extend(extra);
    policyc(&args, None)
}

#[test]
fn the_fixture_rules_report_as_checked_by_hand() {
    let (demo, rules) = (fixture("demo"), fixture("verify/rules.yaml"));
    let expected = std::fs::read_to_string(common::fixtures().join("verify/expected/demo.txt"))
        .expect("golden");
    for args in [
        vec!["verify", &demo, "--rules", &rules],
        vec!["verify", "--rules", &rules, &demo],
        vec!["verify", "--rules", &rules, &demo, "-o", "text"],
    ] {
        let out = policyc(&args, None);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), expected, "{args:?}");
    }
    let out = policyc(&["verify", "-o", "json", &demo, "--rules", &rules], None);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("verify/expected/demo.json"))
            .expect("golden"),
    )
    .expect("golden json");
    assert_eq!(json, golden);
}

#[test]
fn rules_that_hold_exit_0() {
    let rules = rules_file(
        "hold",
        "rules:\n\
         - name: the api reaches postgres\n  allow: {from: {workload: backend/api}, to: {workload: db/postgres}, port: 5432}\n\
         - name: nothing reaches the api from outside\n  deny: {from: {cidr: 0.0.0.0/0}, to: {workload: backend/api}}\n",
    );
    let out = verify(&fixture("demo"), &rules, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "holds: the api reaches postgres\nholds: nothing reaches the api from outside\n\
         0 of 2 rules violated\n"
    );
}

#[test]
fn many_violations_are_counted_and_the_first_shown() {
    // Every pair of workloads that allows some TCP port. In the demo (its README's allowed
    // flows) those are api-0 and api-1 to postgres, redis and coredns (6); worker to redis and
    // coredns (2); postgres and redis to coredns (2); web-0 and web-1 to api-0, api-1 and
    // coredns (6); coredns to web-0 and web-1 (2): 18.
    let rules = rules_file(
        "many",
        "rules:\n- name: nothing talks\n  deny: {from: {pods: {}}, to: {pods: {}}}\n",
    );
    let out = verify(&fixture("demo"), &rules, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "violated: nothing talks: 18 pairs allow some of TCP 1-65535"
    );
    assert_eq!(
        lines[1..11].iter().filter(|l| l.contains(" => ")).count(),
        10
    );
    assert_eq!(lines[11], "  and 8 more");
    assert_eq!(lines[12], "1 of 1 rule violated");
    let out = verify(&fixture("demo"), &rules, &["-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["rules"][0]["violation_count"], 18);
    assert_eq!(
        json["rules"][0]["violations"].as_array().map(Vec::len),
        Some(10)
    );
}

#[test]
fn invalid_rules_and_input_exit_2_with_nothing_on_stdout() {
    let demo = fixture("demo");
    let cases = [
        (
            "syntax",
            "rules:\n- name: a\n  allow: {from: {namespace: frontend}, to: {namespace: db}, port: [1]}\n",
            "rules.yaml:3:61: rules[0] (\"a\"): field allow.port: invalid type: sequence",
        ),
        (
            "nothing",
            "rules:\n- name: typo\n  deny:\n    from: {workload: frontend/wbe}\n    to: {namespace: db}\n",
            "rules.yaml:4:11: rules[0] (\"typo\"): field deny.from: no workload frontend/wbe in \
             the input",
        ),
        (
            "protocol",
            "rules:\n- name: gre\n  deny:\n    from: {namespace: frontend}\n    to: {namespace: db}\n    protocol: GRE\n",
            "rules.yaml:6:15: rules[0] (\"gre\"): field deny.protocol: \"GRE\": expected TCP, \
             UDP, SCTP or ICMP",
        ),
    ];
    for (name, body, message) in cases {
        let rules = rules_file(name, body);
        let out = verify(&demo, &rules, &[]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(out.stdout.is_empty(), "{name}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains(message), "{name}: {err}");
    }
    let out = policyc(
        &["verify", &demo, "--rules", "/nonexistent/rules.yaml"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("/nonexistent/rules.yaml: cannot read"));
    // Invalid manifests, with valid rules.
    let rules = rules_file(
        "manifests",
        "rules:\n- name: a\n  deny: {from: {namespace: x}, to: {namespace: y}}\n",
    );
    let bad = rules.with_file_name("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: 1}\n",
    )
    .expect("write");
    let out = verify(&bad.display().to_string(), &rules, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("bad.yaml: document 1"),
        "{}",
        text(&out.stderr)
    );
    // --rules is required.
    let out = policyc(&["verify", &demo], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}
