//! ClusterNetworkPolicies in every `policyc` command, on the tiers fixture (`fixtures/tiers`):
//! invalid ones refused by every command with a located error, `connections`, `diff` and `verify`
//! against reports checked by hand, and `explain`'s walk through the tiers.

mod common;

use common::{policyc, text};

const CIDR: &str = "--pod-cidr=10.244.0.0/16";
const CLUSTER: &str = "fixtures/tiers/cluster.yaml";
const BASE: &str = "fixtures/tiers/base";
const CHANGED: &str = "fixtures/tiers/changed";

fn expected(name: &str) -> String {
    std::fs::read_to_string(common::fixtures().join("tiers/expected").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `policyc ARGS` that must exit with `code`: its standard output.
fn run(args: &[&str], code: i32) -> String {
    let out = policyc(args, None);
    assert_eq!(
        out.status.code(),
        Some(code),
        "policyc {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn every_command_refuses_an_invalid_cluster_policy_with_its_place() {
    // The second document: a v1alpha2 object whose networks entry has host bits set.
    let invalid = format!(
        "{}---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\n\
         metadata: {{name: bad}}\nspec:\n  tier: Admin\n  priority: 5\n  subject: {{namespaces: \
         {{}}}}\n  egress:\n  - action: Deny\n    to: [{{networks: [\"10.0.0.1/8\"]}}]\n",
        std::fs::read_to_string(common::fixtures().join("tiers/base/policies.yaml"))
            .expect("fixture")
            .split("---\n")
            .next()
            .expect("a document")
    );
    let rules = "fixtures/tiers/rules.yaml";
    let commands: [&[&str]; 9] = [
        &["compile", "-"],
        &["matrix", "-"],
        &["connections", "-"],
        &["graph", "-"],
        &["lint", "-"],
        &[
            "explain", "-", "--from", "1.1.1.1", "--to", "2.2.2.2", "--port", "80",
        ],
        &["verify", "-", "--rules", rules],
        &["diff", CLUSTER, "--", "-"],
        &["diff", "-", "--", CLUSTER],
    ];
    for command in commands {
        let out = policyc(command, Some(&invalid));
        assert_eq!(out.status.code(), Some(2), "{command:?}");
        assert!(out.stdout.is_empty(), "{command:?}: {}", text(&out.stdout));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(
                "<stdin>: document 2: ClusterNetworkPolicy bad: field spec.egress[0].to[0].networks[0]"
            ) && stderr.contains("10.0.0.1/8"),
            "{command:?}: {stderr}"
        );
    }
}

#[test]
fn connections_are_the_tiers_as_checked_by_hand() {
    let out = run(&["connections", CIDR, CLUSTER, BASE], 0);
    assert_eq!(out, expected("connections.txt"));
    // The other formats write the same sets, the protocols without ports included.
    let json: serde_json::Value =
        serde_json::from_str(&run(&["connections", "-o", "json", CIDR, CLUSTER, BASE], 0))
            .expect("json");
    let to_node = json["connections"]
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["from"] == "shop/web[Pod]" && c["to"] == "node/n2")
        .expect("web to n2");
    assert_eq!(
        to_node["allowed"],
        serde_json::json!([
            {"protocol": "TCP", "ports": [[1, 10249], [10251, 65535]]},
            {"protocol": "UDP", "ports": [[1, 65535]]},
            {"protocol": "SCTP", "ports": [[1, 65535]]},
            {"protocol": "other"},
        ])
    );
    assert_eq!(to_node["all"], false);
    let csv = run(&["connections", "-o", "csv", CIDR, CLUSTER, BASE], 0);
    assert!(
        csv.contains("\nshop/web[Pod],node/n2,All Connections except TCP 10250\n"),
        "{csv}"
    );
    let markdown = run(&["connections", "-o", "markdown", CIDR, CLUSTER, BASE], 0);
    assert!(
        markdown.contains("\n| node/n1 (own node) | shop/web[Pod] | All Connections |\n"),
        "{markdown}"
    );
    let dot = run(&["graph", CIDR, CLUSTER, BASE], 0);
    assert!(
        dot.contains("  \"node/n2\" [label=\"node/n2\", shape=box3d];\n")
            && dot.contains(
                "  \"shop/web[Pod]\" -> \"node/n2\" [label=\"All Connections except TCP 10250\"];\n"
            ),
        "{dot}"
    );
    // A node party can be focused on.
    let focused = run(
        &[
            "connections",
            CIDR,
            CLUSTER,
            BASE,
            "--focus",
            "node/n2 (own node)",
        ],
        0,
    );
    assert_eq!(
        focused,
        "node/n2 (own node) => shop/db[Pod] : All Connections\n\
         shop/db[Pod] => node/n2 (own node) : All Connections except TCP 10250\n"
    );
}

#[test]
fn a_cluster_policy_change_shows_its_connectivity_effect() {
    let out = run(&["diff", CIDR, CLUSTER, BASE, "--", CLUSTER, CHANGED], 0);
    assert_eq!(out, expected("diff.txt"));
    let json: serde_json::Value = serde_json::from_str(&run(
        &[
            "diff", "-o", "json", CIDR, CLUSTER, BASE, "--", CLUSTER, CHANGED,
        ],
        0,
    ))
    .expect("json");
    assert_eq!(
        json["added"][0]["cluster_rules"],
        serde_json::json!([
            {"rule": "[Baseline] default-deny ingress[0] \"pods\"", "tier": "Baseline",
             "policy": "default-deny", "priority": 1, "direction": "ingress", "index": 0,
             "name": "pods", "action": "Deny"},
            {"rule": "[Baseline] default-deny ingress[0] \"pods\"", "tier": "Baseline",
             "policy": "default-deny", "priority": 1, "direction": "ingress", "index": 0,
             "name": "pods", "action": "Pass"},
        ])
    );
    assert_eq!(json["added"][0]["policies"], serde_json::json!([]));
    // The same version on both sides: nothing.
    let same = run(&["diff", CIDR, CLUSTER, BASE, "--", CLUSTER, BASE], 0);
    assert_eq!(same, "no connectivity changes\n");
}

#[test]
fn verify_judges_nodes_and_names_the_deciding_rules() {
    let out = run(
        &[
            "verify",
            CIDR,
            CLUSTER,
            BASE,
            "--rules",
            "fixtures/tiers/rules.yaml",
        ],
        1,
    );
    assert_eq!(out, expected("verify.txt"));
    let json: serde_json::Value = serde_json::from_str(&run(
        &[
            "verify",
            "-o",
            "json",
            CIDR,
            CLUSTER,
            BASE,
            "--rules",
            "fixtures/tiers/rules.yaml",
        ],
        1,
    ))
    .expect("json");
    let violation = &json["rules"][4]["violations"][0];
    assert_eq!(violation["cluster_rules"][0]["action"], "Deny");
    assert_eq!(violation["cluster_rules"][0]["policy"], "default-deny");
    let icmp = &json["rules"][7];
    assert_eq!(
        (&icmp["protocol"], &icmp["ports"], &icmp["holds"]),
        (&"ICMP".into(), &serde_json::Value::Null, &false.into())
    );
}

#[test]
fn explain_walks_each_direction_through_the_tiers() {
    let explain = |extra: &[&str]| {
        let mut args = vec!["explain", CIDR, CLUSTER, BASE];
        args.extend(extra);
        run(&args, 0)
    };
    // Passed by the Admin tier to db's NetworkPolicy, which does not allow it.
    let out = explain(&["--from", "ops/monitor", "--to", "shop/db", "--port", "5432"]);
    let lines: Vec<&str> = out.lines().take(4).collect();
    assert_eq!(
        lines,
        [
            "ops/monitor (10.244.1.30) -> shop/db (10.244.2.20) 5432/TCP: DENIED",
            "  egress: [default] allow -> allowed",
            "  ingress: [Admin] monitoring ingress[1] \"ops-rest\" Pass -> [NetworkPolicy] \
             shop/db-ingress: no rule allows -> denied",
            "    shop/db-ingress ingress[0]: port matches, but no peer selects the source",
        ]
    );
    // ICMP: the Baseline's Deny has no protocols, so it drops ICMP too.
    let out = explain(&["--from", "shop/db", "--to", "shop/web", "--icmp"]);
    let lines: Vec<&str> = out.lines().take(3).collect();
    assert_eq!(
        lines,
        [
            "shop/db (10.244.2.20) -> shop/web (10.244.1.10) ICMP: DENIED",
            "  egress: [default] allow -> allowed",
            "  ingress: [Baseline] default-deny ingress[0] \"pods\" Deny -> denied",
        ]
    );
    assert!(out.contains("  nftables on n1: drop\n"), "{out}");
    // To its own node: only the egress tiers judge it.
    let out = explain(&[
        "--from",
        "shop/web",
        "--to",
        "192.168.0.1",
        "--port",
        "10250",
    ]);
    let lines: Vec<&str> = out.lines().take(3).collect();
    assert_eq!(
        lines,
        [
            "shop/web (10.244.1.10) -> 192.168.0.1 10250/TCP: DENIED",
            "  to its own node: NetworkPolicy allows it; ClusterNetworkPolicy egress rules judge it",
            "  egress: [Admin] guard egress[1] \"kubelet\" Deny -> denied",
        ]
    );
    // JSON carries the same walk, and the rules that matched.
    let json: serde_json::Value = serde_json::from_str(&explain(&[
        "--from",
        "ops/monitor",
        "--to",
        "shop/db",
        "--port",
        "5432",
        "-o",
        "json",
    ]))
    .expect("json");
    assert_eq!(
        json["ingress"]["tiers"]["walkthrough"],
        "[Admin] monitoring ingress[1] \"ops-rest\" Pass -> [NetworkPolicy] shop/db-ingress: no \
         rule allows -> denied"
    );
    assert_eq!(json["ingress"]["tiers"]["decision"], "NetworkPolicyDeny");
    assert_eq!(
        json["ingress"]["tiers"]["matched"][0]["rule"],
        "[Admin] monitoring ingress[1] \"ops-rest\""
    );
    assert_eq!(
        json["egress"]["tiers"]["walkthrough"],
        "[default] allow -> allowed"
    );
    let json: serde_json::Value = serde_json::from_str(&explain(&[
        "--from", "shop/db", "--to", "shop/web", "--icmp", "-o", "json",
    ]))
    .expect("json");
    assert_eq!(
        (json["protocol"].clone(), json["port"].clone()),
        ("ICMP".into(), serde_json::Value::Null)
    );
    assert_eq!(json["allowed"], false);
    // A port and --icmp are one or the other.
    let out = policyc(
        &[
            "explain", CLUSTER, "--from", "shop/db", "--to", "shop/web", "--icmp", "--port", "80",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let out = policyc(
        &["explain", CLUSTER, "--from", "shop/db", "--to", "shop/web"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--port"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn lint_judges_the_tiers_as_the_fixture_explains_them() {
    // The base: every rule decides something, the Pass reaches db's NetworkPolicy and the
    // Baseline Deny, the priorities differ, the metadata network holds no pod; and every pod is
    // selected by guard, so none is reported as isolated by nothing.
    let out = policyc(&["lint", CIDR, CLUSTER, BASE, "--deny", "notes"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(out.stdout.is_empty());
    // The change turns default-deny's Deny into a Pass, in the Baseline tier.
    let out = run(&["lint", CIDR, CLUSTER, CHANGED], 0);
    assert_eq!(
        out,
        "fixtures/tiers/changed/policies.yaml:40:7: note[cluster-pass-reaches-nothing]: \
         ClusterNetworkPolicy default-deny spec.ingress[0] (\"pods\") passes its connections on \
         to the default, allow (nothing is evaluated after the Baseline tier): it allows them, as \
         an Accept would\n"
    );
}

#[test]
fn a_node_relabelled_is_the_cause_of_what_its_labels_change() {
    // n2 loses `role: worker`: guard's kubelet rule no longer selects it.
    let cluster = std::fs::read_to_string(common::fixtures().join("tiers/cluster.yaml"))
        .expect("fixture")
        .replace(
            "metadata: {name: n2, labels: {role: worker}}",
            "metadata: {name: n2, labels: {role: edge}}",
        );
    let out = policyc(
        &["diff", CIDR, CLUSTER, BASE, "--", "-", BASE],
        Some(&cluster),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "changed: ops/monitor[Pod] => node/n2 : All Connections except TCP 10250 -> All \
         Connections (by node n2)\n\
         changed: shop/db[Pod] => node/n2 (own node) : All Connections except TCP 10250 -> All \
         Connections (by node n2)\n\
         changed: shop/web[Pod] => node/n2 : All Connections except TCP 10250 -> All Connections \
         (by node n2)\n"
    );
}

#[test]
fn compile_and_matrix_read_both_api_versions() {
    // guard and monitoring are v1beta1, default-deny v1alpha2: the ruleset carries all three.
    let ruleset = run(&["compile", CIDR, CLUSTER, BASE, "--node", "n1"], 0);
    for name in ["guard", "monitoring", "default-deny"] {
        assert!(ruleset.contains(name), "{name} missing from the ruleset");
    }
    let json: serde_json::Value = serde_json::from_str(&run(
        &[
            "matrix", CIDR, CLUSTER, BASE, "--ports", "9090/TCP", "-o", "json",
        ],
        0,
    ))
    .expect("json");
    let allowed = |from: &str, to: &str| {
        json["flows"]
            .as_array()
            .expect("flows")
            .iter()
            .find(|f| f["from"] == from && f["to"] == to)
            .map(|f| f["allowed"].clone())
    };
    // The Admin tier's scrape rule, and the Baseline's Deny.
    assert_eq!(allowed("ops/monitor", "shop/web"), Some(true.into()));
    assert_eq!(allowed("shop/db", "shop/web"), Some(false.into()));
}
