//! Audit mode in `policyc` (`fixtures/audit/`): `explain` says what audit policies would deny,
//! `matrix` marks it, `--audit-all` judges every policy so; the annotation's errors are invalid
//! input. Every expected output is written out by hand.

mod common;

use common::{policyc, text};

const CLUSTER: &str = "fixtures/audit/cluster.yaml";
const BASELINE: &str = "fixtures/audit/baseline.yaml";

/// Runs policyc, which must succeed, and returns its standard output.
fn run(args: &[&str]) -> String {
    let out = policyc(args, None);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// `explain`'s text up to the nftables path (what the evaluator says).
fn explained(args: &[&str]) -> String {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    run(&all)
        .lines()
        .take_while(|l| !l.starts_with("  nftables"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn explain_says_what_audit_policies_would_deny() {
    // db is selected only by the audit policies, and none of their rules lets web in.
    assert_eq!(
        explained(&[CLUSTER, "--from", "shop/web", "--to", "shop/db", "--port", "5432"]),
        "shop/web (10.244.1.10) -> shop/db (10.244.2.30) 5432/TCP: ALLOWED; would be denied by \
         shop/db-allow-api, shop/default-deny (audit)
  egress: allowed: no policy selects shop/web for egress (default allow)
  ingress: allowed; would be denied by shop/db-allow-api, shop/default-deny (audit): only audit \
         policies select shop/db for ingress, and they isolate nothing (default allow)
    shop/db-allow-api ingress[0]: port matches, but no peer selects the source
"
    );
    // An audit rule that allows: nothing would deny.
    assert_eq!(
        explained(&[CLUSTER, "--from", "shop/api", "--to", "shop/db", "--port", "5432"]),
        "shop/api (10.244.1.20) -> shop/db (10.244.2.30) 5432/TCP: ALLOWED
  egress: allowed: no policy selects shop/api for egress (default allow)
  ingress: allowed: only audit policies select shop/db for ingress, and they isolate nothing \
         (default allow)
    shop/db-allow-api ingress[0]: allows it
"
    );
    // api is isolated by an enforced policy: the audit default-deny changes nothing.
    assert_eq!(
        explained(&[CLUSTER, "--from", "shop/web", "--to", "shop/api", "--port", "8080"]),
        "shop/web (10.244.1.10) -> shop/api (10.244.1.20) 8080/TCP: ALLOWED
  egress: allowed: no policy selects shop/web for egress (default allow)
  ingress: allowed: shop/api is isolated for ingress by shop/api-allow-web
    shop/api-allow-web ingress[0]: allows it
    audit policies shop/default-deny also select it and change nothing: enforced policies \
         isolate it
"
    );
    assert_eq!(
        explained(&[
            CLUSTER,
            "--from",
            "shop/batch",
            "--to",
            "shop/api",
            "--port",
            "8080"
        ]),
        "shop/batch (10.244.2.40) -> shop/api (10.244.1.20) 8080/TCP: DENIED
  egress: allowed: no policy selects shop/batch for egress (default allow)
  ingress: denied: shop/api is isolated for ingress by shop/api-allow-web
    shop/api-allow-web ingress[0]: port matches, but no peer selects the source
    audit policies shop/default-deny also select it and change nothing: enforced policies \
         isolate it
"
    );
}

#[test]
fn explain_json_carries_the_would_deny() {
    let json: serde_json::Value = serde_json::from_str(&run(&[
        "explain", CLUSTER, "--from", "shop/web", "--to", "shop/db", "--port", "5432", "-o", "json",
    ]))
    .expect("json");
    assert_eq!(json["allowed"], true);
    assert_eq!(
        json["wouldDeny"],
        serde_json::json!([{
            "direction": "ingress",
            "by": "shop/db-allow-api, shop/default-deny",
            "auditAll": false,
        }])
    );
    let ingress = &json["ingress"];
    assert_eq!(ingress["isolated"], false);
    assert_eq!(ingress["isolatedBy"], serde_json::json!([]));
    assert_eq!(
        ingress["auditedBy"],
        serde_json::json!(["shop/db-allow-api", "shop/default-deny"])
    );
    assert_eq!(
        ingress["auditRules"],
        serde_json::json!([{
            "rule": "shop/db-allow-api ingress[0]",
            "peerMatches": false,
            "portMatches": true,
            "allows": false,
        }])
    );
    assert_eq!(
        ingress["wouldDeny"],
        serde_json::json!({
            "by": "shop/db-allow-api, shop/default-deny",
            "policies": ["shop/db-allow-api", "shop/default-deny"],
            "clusterRule": null,
            "auditAll": false,
        })
    );
    assert_eq!(json["egress"]["wouldDeny"], serde_json::Value::Null);
    // Enforced: nothing would deny.
    let json: serde_json::Value = serde_json::from_str(&run(&[
        "explain", CLUSTER, "--from", "shop/web", "--to", "shop/api", "--port", "8080", "-o",
        "json",
    ]))
    .expect("json");
    assert_eq!(json["wouldDeny"], serde_json::json!([]));
    assert_eq!(
        json["ingress"]["isolatedBy"],
        serde_json::json!(["shop/api-allow-web"])
    );
    assert_eq!(
        json["ingress"]["auditedBy"],
        serde_json::json!(["shop/default-deny"])
    );
    assert_eq!(json["ingress"]["wouldDeny"], serde_json::Value::Null);
}

#[test]
fn explain_walks_audit_policies_through_the_tiers() {
    // The Baseline tier still judges db (no NetworkPolicy isolates it): batch is denied, and the
    // audit policies would deny it too.
    assert_eq!(
        explained(&[
            CLUSTER,
            BASELINE,
            "--from",
            "shop/batch",
            "--to",
            "shop/db",
            "--port",
            "5432"
        ]),
        "shop/batch (10.244.2.40) -> shop/db (10.244.2.30) 5432/TCP: DENIED
  egress: [default] allow -> allowed
  ingress: [NetworkPolicy] shop/db-allow-api, shop/default-deny (audit): no rule allows -> \
         [Baseline] batch-isolation ingress[0] \"from-batch\" Deny -> denied; would be denied by \
         shop/db-allow-api, shop/default-deny (audit)
    shop/db-allow-api ingress[0]: port matches, but no peer selects the source
"
    );
    assert_eq!(
        explained(&[CLUSTER, BASELINE, "--from", "shop/web", "--to", "shop/db", "--port", "5432"]),
        "shop/web (10.244.1.10) -> shop/db (10.244.2.30) 5432/TCP: ALLOWED; would be denied by \
         shop/db-allow-api, shop/default-deny (audit)
  egress: [default] allow -> allowed
  ingress: [NetworkPolicy] shop/db-allow-api, shop/default-deny (audit): no rule allows -> \
         [default] allow -> allowed; would be denied by shop/db-allow-api, shop/default-deny \
         (audit)
    shop/db-allow-api ingress[0]: port matches, but no peer selects the source
"
    );
    // api: enforced, the Baseline tier is not consulted.
    assert_eq!(
        explained(&[
            CLUSTER,
            BASELINE,
            "--from",
            "shop/batch",
            "--to",
            "shop/api",
            "--port",
            "8080"
        ]),
        "shop/batch (10.244.2.40) -> shop/api (10.244.1.20) 8080/TCP: DENIED
  egress: [default] allow -> allowed
  ingress: [NetworkPolicy] shop/api-allow-web: no rule allows -> denied
    shop/api-allow-web ingress[0]: port matches, but no peer selects the source
    audit policies shop/default-deny also select it and change nothing: enforced policies \
         isolate it
"
    );
}

#[test]
fn explain_audit_all_judges_every_policy_enforced_and_lets_it_through() {
    // Every policy counts as enforced (the audit annotation too), and nothing is denied. No
    // nftables path is shown.
    assert_eq!(
        run(&[
            "explain",
            CLUSTER,
            "--audit-all",
            "--from",
            "shop/batch",
            "--to",
            "shop/api",
            "--port",
            "8080",
        ]),
        "shop/batch (10.244.2.40) -> shop/api (10.244.1.20) 8080/TCP: ALLOWED; would be denied \
         by shop/api-allow-web, shop/default-deny (--audit-all)
  egress: allowed: no policy selects shop/batch for egress (default allow)
  ingress: allowed; would be denied by shop/api-allow-web, shop/default-deny (--audit-all): \
         shop/api is isolated for ingress by shop/api-allow-web, shop/default-deny
    shop/api-allow-web ingress[0]: port matches, but no peer selects the source
"
    );
    assert_eq!(
        run(&[
            "explain",
            CLUSTER,
            "--audit-all",
            "--from",
            "shop/web",
            "--to",
            "shop/batch",
            "--port",
            "80",
        ]),
        "shop/web (10.244.1.10) -> shop/batch (10.244.2.40) 80/TCP: ALLOWED; would be denied by \
         shop/default-deny (--audit-all)
  egress: allowed: no policy selects shop/web for egress (default allow)
  ingress: allowed; would be denied by shop/default-deny (--audit-all): shop/batch is isolated \
         for ingress by shop/default-deny
    those policies have no ingress rules: everything would be denied
"
    );
    // Enforced, the default-deny keeps the Baseline tier out.
    let json: serde_json::Value = serde_json::from_str(&run(&[
        "explain",
        CLUSTER,
        BASELINE,
        "--audit-all",
        "--from",
        "shop/batch",
        "--to",
        "shop/web",
        "--port",
        "80",
        "-o",
        "json",
    ]))
    .expect("json");
    assert_eq!(json["allowed"], true);
    assert_eq!(
        json["wouldDeny"],
        serde_json::json!([{
            "direction": "ingress",
            "by": "shop/default-deny",
            "auditAll": true,
        }]),
        "default-deny isolates web when enforced: the Baseline tier is not consulted"
    );
    // Without NetworkPolicies, the Baseline Deny is what would deny, named by its rule.
    let pods =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: batch}}\n\
                spec: {containers: [{name: c, image: i}]}\nstatus: {podIP: 10.0.0.1}\n---\n\
                apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x}\n\
                spec: {containers: [{name: c, image: i}]}\nstatus: {podIP: 10.0.0.2}\n";
    let out = policyc(
        &[
            "explain",
            "-",
            BASELINE,
            "--audit-all",
            "--from",
            "x/a",
            "--to",
            "x/b",
            "--port",
            "80",
        ],
        Some(pods),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "x/a (10.0.0.1) -> x/b (10.0.0.2) 80/TCP: ALLOWED; would be denied by [Baseline] \
         batch-isolation (priority 10) ingress[0] \"from-batch\" Deny (--audit-all)
  egress: [default] allow -> allowed
  ingress: [Baseline] batch-isolation ingress[0] \"from-batch\" Deny -> allowed; would be \
         denied by [Baseline] batch-isolation (priority 10) ingress[0] \"from-batch\" Deny \
         (--audit-all)
"
    );
}

#[test]
fn matrix_marks_what_only_audit_mode_allows() {
    assert_eq!(
        run(&["matrix", CLUSTER, "--ports", "8080/TCP"]),
        "8080/TCP: rows from, columns to; . allowed, A allowed by audit mode only (it would be \
         denied), X denied, - no common address family
             1 2 3 4
1 shop/api   . A A A
2 shop/batch X . A A
3 shop/db    X A . A
4 shop/web   . A A .

"
    );
    assert_eq!(
        run(&["matrix", CLUSTER, "--ports", "8080/TCP", "--audit-all"]),
        "8080/TCP: rows from, columns to; . allowed, A allowed by audit mode only (it would be \
         denied), X denied, - no common address family
             1 2 3 4
1 shop/api   . A A A
2 shop/batch A . A A
3 shop/db    A A . A
4 shop/web   . A A .

"
    );
    let markdown = run(&["matrix", CLUSTER, "--ports", "5432/TCP", "-o", "markdown"]);
    assert_eq!(
        markdown,
        "### 5432/TCP

✓ allowed, ⚠ allowed by audit mode only (it would be denied), ✗ denied

| from \\ to | shop/api | shop/batch | shop/db | shop/web |
|---|---|---|---|---|
| shop/api | ✓ | ⚠ | ✓ | ⚠ |
| shop/batch | ✗ | ✓ | ⚠ | ⚠ |
| shop/db | ✗ | ⚠ | ✓ | ⚠ |
| shop/web | ✗ | ⚠ | ⚠ | ✓ |

"
    );
    let json: serde_json::Value = serde_json::from_str(&run(&[
        "matrix", CLUSTER, "--ports", "8080/TCP", "-o", "json",
    ]))
    .expect("json");
    let flows = json["flows"].as_array().expect("flows");
    let flow = |from: &str, to: &str| {
        flows
            .iter()
            .find(|f| f["from"] == from && f["to"] == to)
            .unwrap_or_else(|| panic!("no flow {from} -> {to}"))
    };
    assert_eq!(
        flow("shop/web", "shop/db"),
        &serde_json::json!({
            "from": "shop/web", "to": "shop/db", "port": 8080, "protocol": "TCP",
            "allowed": true, "wouldDeny": ["shop/db-allow-api, shop/default-deny (audit)"],
        })
    );
    assert_eq!(
        flow("shop/web", "shop/api"),
        &serde_json::json!({
            "from": "shop/web", "to": "shop/api", "port": 8080, "protocol": "TCP",
            "allowed": true,
        })
    );
    // Without audit policies, no mark and no legend for them.
    let demo = run(&["matrix", "fixtures/demo", "--ports", "9090/TCP"]);
    assert!(!demo.contains("audit") && !demo.contains(" A "), "{demo}");
}

#[test]
fn a_bad_enforcement_annotation_is_invalid_input() {
    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
                  metadata: {name: p, namespace: x, annotations: {nftpolicy.io/enforcement: dry-run}}\n\
                  spec: {podSelector: {}}\n";
    let out = policyc(&["matrix", "-", "--ports", "80"], Some(policy));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        "<stdin>: document 1: NetworkPolicy x/p: field \
         metadata.annotations[\"nftpolicy.io/enforcement\"]: unknown enforcement mode \"dry-run\": \
         use enforce or audit (no annotation is enforce)\n\
         policyc: invalid input; nothing was produced\n"
    );
    let cnp = "apiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n\
               metadata: {name: guard, annotations: {nftpolicy.io/enforcement: audit}}\n\
               spec: {tier: Admin, priority: 1, subject: {namespaces: {}}}\n";
    let out = policyc(&["compile", "-", "--node", "n1"], Some(cnp));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).starts_with(
            "<stdin>: document 1: ClusterNetworkPolicy guard: field \
             metadata.annotations[\"nftpolicy.io/enforcement\"]: audit mode is not supported for \
             ClusterNetworkPolicy yet; remove the annotation, or run the agent with --audit-all\n"
        ),
        "{}",
        text(&out.stderr)
    );
}
