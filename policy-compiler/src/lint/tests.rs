use super::*;
use crate::input::{parse_sources_with, ParseOptions};
use crate::workload::materialize;

/// A namespace `shop` (team=shop) with web (http/TCP 8080), api (http-api/TCP 9090) and a
/// DNS-like workload `dns` in `infra` (dns/UDP 53); then `extra`.
fn repo(extra: &str) -> String {
    format!(
        "\
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{team: shop}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: infra}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: c, image: i, ports: [{{name: http, containerPort: 8080}}]}}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: api, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec: {{containers: [{{name: c, image: i, ports: [{{name: http-api, containerPort: 9090}}]}}]}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: dns, namespace: infra}}
spec:
  selector: {{matchLabels: {{app: dns}}}}
  template:
    metadata: {{labels: {{app: dns}}}}
    spec:
      containers: [{{name: c, image: i, ports: [{{name: dns, containerPort: 53, protocol: UDP}}]}}]
---
{extra}"
    )
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n{spec}"
    )
}

fn lint_with(text: &str, options: &ParseOptions, cidrs: &PodCidrs) -> Vec<Finding> {
    let sources = [Source {
        name: "repo.yaml".to_string(),
        text: text.to_string(),
    }];
    let manifests = parse_sources_with(&sources, options).expect("valid input");
    let mut cluster = manifests.cluster.clone();
    materialize(&mut cluster, cidrs);
    lint(&LintInput {
        sources: &sources,
        locations: &manifests.locations,
        cluster: &cluster,
        pod_cidrs: cidrs,
    })
}

fn run(text: &str) -> Vec<Finding> {
    lint_with(text, &ParseOptions::default(), &PodCidrs::default())
}

/// The findings of one rule, as (object, field).
fn of(findings: &[Finding], rule: &Rule) -> Vec<(String, String)> {
    findings
        .iter()
        .filter(|f| f.rule.id == rule.id)
        .map(|f| (f.object_name(), f.field.clone()))
        .collect()
}

fn pair(object: &str, field: &str) -> (String, String) {
    (object.to_string(), field.to_string())
}

/// Isolates every pod of shop both ways and allows DNS: what a correct repository has, so that a
/// test's own policy is the only thing judged.
fn baseline() -> String {
    policy(
        "baseline",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n  egress:\n  - ports: [{protocol: UDP, port: 53}]\n",
    )
}

fn with_baseline(spec_name: &str, spec: &str) -> String {
    repo(&format!("{}---\n{}", baseline(), policy(spec_name, spec)))
}

#[test]
fn a_correct_repository_has_no_warnings() {
    let findings = run(&with_baseline(
        "web",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: api}}}]\n    ports: [{port: http}]\n",
    ));
    let warnings: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity() == Severity::Warning)
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn policy_selects_no_pod() {
    let findings = run(&with_baseline(
        "typo",
        "  podSelector: {matchLabels: {app: wbe}}\n",
    ));
    assert_eq!(
        of(&findings, &POLICY_SELECTS_NO_POD),
        [pair("shop/typo", "spec.podSelector")]
    );
    let message = &findings
        .iter()
        .find(|f| f.rule.id == POLICY_SELECTS_NO_POD.id)
        .expect("finding")
        .message;
    assert!(
        message.contains("app=wbe") && message.contains("namespace shop"),
        "{message}"
    );
    // Selecting a workload (a Deployment's pod template) is selecting a pod.
    let findings = run(&with_baseline(
        "web",
        "  podSelector: {matchLabels: {app: web}}\n",
    ));
    assert!(of(&findings, &POLICY_SELECTS_NO_POD).is_empty());
}

#[test]
fn peer_matches_nothing() {
    let findings = run(&with_baseline(
        "web",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: nope}}\n    - podSelector: {matchLabels: {app: nope}}\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: infra}}\n      podSelector: {matchLabels: {app: web}}\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: infra}}\n",
    ));
    assert_eq!(
        of(&findings, &PEER_MATCHES_NOTHING),
        [
            pair("shop/web", "spec.ingress[0].from[0].namespaceSelector"),
            pair("shop/web", "spec.ingress[0].from[1].podSelector"),
            pair("shop/web", "spec.ingress[0].from[2].podSelector"),
        ]
    );
    // Peers that match: a workload of another namespace, every namespace, and the pods of a
    // namespace the input shows none of (cluster DNS in kube-system).
    let findings = run(&with_baseline(
        "web",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: infra}}\n      podSelector: {matchLabels: {app: dns}}\n    - namespaceSelector: {}\n    - podSelector: {matchLabels: {app: api}}\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}\n      podSelector: {matchLabels: {k8s-app: kube-dns}}\n",
    ));
    assert!(
        of(&findings, &PEER_MATCHES_NOTHING).is_empty(),
        "{findings:#?}"
    );
}

#[test]
fn named_port_undeclared() {
    let findings = run(&with_baseline(
        "web",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - ports: [{port: http}, {port: metrics}, {port: http, protocol: UDP}]\n  egress:\n  - to: [{podSelector: {matchLabels: {app: api}}}]\n    ports: [{port: http-api}, {port: http}]\n  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: infra}}}]\n    ports: [{port: dns, protocol: UDP}, {port: nowhere}]\n  - to: [{ipBlock: {cidr: 192.168.0.0/16}}]\n    ports: [{port: https}]\n",
    ));
    assert_eq!(
        of(&findings, &NAMED_PORT_UNDECLARED),
        [
            pair("shop/web", "spec.ingress[0].ports[1].port"),
            pair("shop/web", "spec.ingress[0].ports[2].port"),
            pair("shop/web", "spec.egress[0].ports[1].port"),
            pair("shop/web", "spec.egress[1].ports[1].port"),
            pair("shop/web", "spec.egress[2].ports[0].port"),
        ]
    );
    let messages: Vec<&str> = findings
        .iter()
        .filter(|f| f.rule.id == NAMED_PORT_UNDECLARED.id)
        .map(|f| f.message.as_str())
        .collect();
    assert!(messages[0].contains("metrics/TCP") && messages[0].contains("they declare http/TCP"));
    assert!(
        messages[4].contains("ipBlocks hold no pod address"),
        "{}",
        messages[4]
    );
    // Every named port there is declared by a pod the rule applies to, or the rule may reach
    // pods the input does not show: every namespace (no to), kube-system's DNS, and a namespace
    // the input has no pod of.
    let empty =
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: empty, labels: {team: empty}}\n---\n";
    let findings = run(&format!("{empty}{}", with_baseline(
        "web",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - ports: [{port: http}]\n  egress:\n  - to: [{podSelector: {matchLabels: {app: api}}}]\n    ports: [{port: http-api}]\n  - ports: [{port: dns, protocol: UDP}, {port: dns-tcp}]\n  - to: [{namespaceSelector: {}}]\n    ports: [{port: dns-tcp}]\n  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}, podSelector: {matchLabels: {k8s-app: kube-dns}}}]\n    ports: [{port: dns-tcp}]\n  - to: [{namespaceSelector: {matchLabels: {team: shop}}}, {namespaceSelector: {matchLabels: {team: empty}}}]\n    ports: [{port: metrics}]\n",
    )));
    assert!(
        of(&findings, &NAMED_PORT_UNDECLARED).is_empty(),
        "{findings:#?}"
    );
}

#[test]
fn rule_duplicate_and_rule_shadowed() {
    let findings = run(&with_baseline(
        "web",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: api}}}, {namespaceSelector: {}}]\n    ports: [{port: 80}, {port: 443}]\n  - ports: [{port: 443}, {port: 80}]\n    from: [{namespaceSelector: {}}, {podSelector: {matchLabels: {app: api}}}]\n  - from: [{podSelector: {matchLabels: {app: api}}}]\n    ports: [{port: 80}]\n  - ports: [{port: 8000, endPort: 8100}]\n  - from: [{ipBlock: {cidr: 192.168.0.0/16}}]\n    ports: [{port: 8080}]\n",
    ));
    assert_eq!(
        of(&findings, &RULE_DUPLICATE),
        [pair("shop/web", "spec.ingress[1]")]
    );
    assert_eq!(
        of(&findings, &RULE_SHADOWED),
        [
            pair("shop/web", "spec.ingress[2]"),
            pair("shop/web", "spec.ingress[4]"),
        ]
    );
    let messages: Vec<&str> = findings
        .iter()
        .filter(|f| f.rule.id == RULE_SHADOWED.id)
        .map(|f| f.message.as_str())
        .collect();
    assert!(
        messages[0].contains("spec.ingress[2] is covered by spec.ingress[0]"),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].contains("spec.ingress[4] is covered by spec.ingress[3], which allows every source (it has no from)"),
        "{}",
        messages[1]
    );
    // Rules that overlap without one covering the other: nothing to report.
    let findings = run(&with_baseline(
        "web",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: api}}}]\n    ports: [{port: 80}]\n  - from: [{podSelector: {}}]\n    ports: [{port: 443}]\n  - ports: [{port: 8080}]\n  - from: [{podSelector: {matchLabels: {app: api}}}]\n    ports: [{port: 80, protocol: UDP}]\n  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]\n    ports: [{port: 80}]\n  - from: [{ipBlock: {cidr: 10.1.0.0/16}}]\n    ports: [{port: 80}]\n",
    ));
    assert!(of(&findings, &RULE_DUPLICATE).is_empty(), "{findings:#?}");
    assert!(of(&findings, &RULE_SHADOWED).is_empty(), "{findings:#?}");
}

#[test]
fn rules_that_cover_each_other_report_the_later_one_only() {
    let findings = run(&with_baseline(
        "web",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - ports: [{port: 80}, {port: 81}]\n  - ports: [{port: 80, endPort: 81}]\n",
    ));
    assert_eq!(
        of(&findings, &RULE_SHADOWED),
        [pair("shop/web", "spec.ingress[1]")]
    );
}

#[test]
fn ipblock_covers_pod_cidr() {
    let spec = "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 0.0.0.0/0}\n    - ipBlock: {cidr: 0.0.0.0/0, except: [10.244.0.0/17]}\n    - ipBlock: {cidr: 0.0.0.0/0, except: [10.244.0.0/16]}\n    - ipBlock: {cidr: 192.168.0.0/16}\n    - ipBlock: {cidr: 'fd00:10:244:1::/64'}\n";
    let findings = run(&with_baseline("web", spec));
    assert_eq!(
        of(&findings, &IPBLOCK_COVERS_POD_CIDR),
        [
            pair("shop/web", "spec.ingress[0].from[0].ipBlock.cidr"),
            pair("shop/web", "spec.ingress[0].from[1].ipBlock.cidr"),
            pair("shop/web", "spec.ingress[0].from[4].ipBlock.cidr"),
        ]
    );
    let messages: Vec<&str> = findings
        .iter()
        .filter(|f| f.rule.id == IPBLOCK_COVERS_POD_CIDR.id)
        .map(|f| f.message.as_str())
        .collect();
    assert!(messages[0].contains("all of the pod CIDR 10.244.0.0/16"));
    assert!(messages[1].contains("part of the pod CIDR 10.244.0.0/16"));
    assert!(messages[2].contains("part of the pod CIDR fd00:10:244::/56"));
    // With the cluster's own pod CIDR given, 192.168.0.0/16 is the one that matters.
    let cidrs = PodCidrs::parse(&["192.168.0.0/16"]).expect("cidr");
    let findings = lint_with(
        &with_baseline("web", spec),
        &ParseOptions::default(),
        &cidrs,
    );
    assert_eq!(
        of(&findings, &IPBLOCK_COVERS_POD_CIDR),
        [
            pair("shop/web", "spec.ingress[0].from[0].ipBlock.cidr"),
            pair("shop/web", "spec.ingress[0].from[1].ipBlock.cidr"),
            pair("shop/web", "spec.ingress[0].from[2].ipBlock.cidr"),
            pair("shop/web", "spec.ingress[0].from[3].ipBlock.cidr"),
        ]
    );
    // Addresses outside every pod CIDR: nothing to report.
    let findings = run(&with_baseline(
        "web",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.244.0.0/16]}}]\n",
    ));
    assert!(of(&findings, &IPBLOCK_COVERS_POD_CIDR).is_empty());
}

#[test]
fn egress_blocks_dns_once_per_isolating_policy() {
    let text = repo(&format!(
        "{}---\n{}",
        policy("deny-egress", "  podSelector: {}\n  policyTypes: [Egress]\n"),
        policy(
            "web-egress",
            "  podSelector: {matchLabels: {app: web}}\n  egress:\n  - to: [{podSelector: {matchLabels: {app: api}}}]\n    ports: [{port: 9090}]\n",
        )
    ));
    let findings = run(&text);
    assert_eq!(
        of(&findings, &EGRESS_BLOCKS_DNS),
        [
            pair("shop/deny-egress", "spec.policyTypes"),
            // Isolating for egress by its egress rules alone: the finding points at them.
            pair("shop/web-egress", "spec.egress"),
        ]
    );
    let deny = findings
        .iter()
        .find(|f| f.rule.id == EGRESS_BLOCKS_DNS.id)
        .expect("finding");
    assert!(
        deny.message
            .contains("isolates shop/api[Deployment], shop/web[Deployment] for egress"),
        "{}",
        deny.message
    );
    // A DNS rule in any policy selecting the pods (here by the named port of the DNS workload),
    // or no egress isolation: nothing to report.
    let dns = policy(
        "dns",
        "  podSelector: {}\n  egress:\n  - to: [{namespaceSelector: {}}]\n    ports: [{port: dns, protocol: UDP}]\n",
    );
    let findings = run(&format!("{text}---\n{dns}"));
    assert!(
        of(&findings, &EGRESS_BLOCKS_DNS).is_empty(),
        "{findings:#?}"
    );
    let findings = run(&repo(&policy("ingress-only", "  podSelector: {}\n")));
    assert!(of(&findings, &EGRESS_BLOCKS_DNS).is_empty());
}

#[test]
fn namespace_not_declared() {
    let other = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: shpo}\nspec: {podSelector: {}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: kube-system}\nspec: {podSelector: {}}\n";
    let findings = run(&repo(other));
    assert_eq!(
        of(&findings, &NAMESPACE_NOT_DECLARED),
        [pair("shpo/np", "metadata.namespace")]
    );
    // Without metadata.namespace, the default namespace (-n) applies and the finding points at
    // metadata, the nearest field the source writes.
    let unnamed = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec: {containers: [{name: c, image: i}]}\n";
    let options = ParseOptions {
        default_namespace: "team-a".to_string(),
        strict: false,
    };
    let findings = lint_with(unnamed, &options, &PodCidrs::default());
    let finding = findings
        .iter()
        .find(|f| f.rule.id == NAMESPACE_NOT_DECLARED.id)
        .expect("finding");
    assert_eq!(finding.object_name(), "team-a/p");
    assert_eq!(finding.field, "metadata.namespace");
    assert_eq!(finding.position, Some(Position { line: 7, column: 1 }));
    // An input that declares no namespace at all is not judged.
    let findings = run(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: shpo}\nspec: {podSelector: {}}\n",
    );
    assert!(of(&findings, &NAMESPACE_NOT_DECLARED).is_empty());
}

#[test]
fn workload_not_isolated_is_a_note() {
    let findings = run(&repo(&policy(
        "web",
        "  podSelector: {matchLabels: {app: web}}\n",
    )));
    let notes: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.rule.id == WORKLOAD_NOT_ISOLATED.id)
        .collect();
    assert_eq!(
        notes.iter().map(|f| f.object_name()).collect::<Vec<_>>(),
        ["shop/api", "infra/dns"]
    );
    assert!(notes.iter().all(|f| f.severity() == Severity::Note));
    assert_eq!(notes[0].kind, Kind::Deployment);
    assert!(notes[0]
        .message
        .starts_with("shop/api[Deployment] is isolated by no NetworkPolicy"));
    // Isolated for ingress only is isolated.
    let findings = run(&repo(&format!(
        "{}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: all, namespace: infra}}\nspec: {{podSelector: {{}}}}\n",
        policy("all", "  podSelector: {}\n")
    )));
    assert!(
        of(&findings, &WORKLOAD_NOT_ISOLATED).is_empty(),
        "{findings:#?}"
    );
}

/// A policy of namespace shop in audit mode.
fn audited(name: &str, spec: &str) -> String {
    policy(name, spec).replace(
        "namespace: shop}",
        "namespace: shop, annotations: {nftpolicy.io/enforcement: audit}}",
    )
}

#[test]
fn policies_in_audit_mode_isolate_nothing() {
    // An audit default-deny of both directions: no pod is isolated, no DNS is blocked.
    let deny_all = audited(
        "deny-all",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n",
    );
    let findings = run(&repo(&deny_all));
    assert!(
        of(&findings, &EGRESS_BLOCKS_DNS).is_empty(),
        "{findings:#?}"
    );
    let notes: Vec<(String, &str)> = findings
        .iter()
        .filter(|f| f.rule.id == WORKLOAD_NOT_ISOLATED.id)
        .map(|f| (f.object_name(), f.message.as_str()))
        .collect();
    assert_eq!(
        notes,
        // In the order of the source.
        [
            (
                "shop/web".to_string(),
                "shop/web[Deployment] is isolated by no NetworkPolicy in either direction: it \
                 accepts connections from anywhere and may open connections to anywhere \
                 (policies in audit mode select it: they deny nothing)"
            ),
            (
                "shop/api".to_string(),
                "shop/api[Deployment] is isolated by no NetworkPolicy in either direction: it \
                 accepts connections from anywhere and may open connections to anywhere \
                 (policies in audit mode select it: they deny nothing)"
            ),
            (
                "infra/dns".to_string(),
                "infra/dns[DaemonSet] is isolated by no NetworkPolicy in either direction: it \
                 accepts connections from anywhere and may open connections to anywhere"
            ),
        ]
    );
    // Beside an enforced egress isolation, an audit policy's DNS rule adds nothing.
    let dns = audited(
        "dns",
        "  podSelector: {}\n  egress:\n  - ports: [{port: 53, protocol: UDP}]\n",
    );
    let deny_egress = policy(
        "deny-egress",
        "  podSelector: {}\n  policyTypes: [Egress]\n",
    );
    let findings = run(&repo(&format!("{deny_egress}---\n{dns}")));
    assert_eq!(
        of(&findings, &EGRESS_BLOCKS_DNS),
        [pair("shop/deny-egress", "spec.policyTypes")]
    );
    // The checks of a policy's own rules judge audit policies too.
    let twice = audited(
        "twice",
        "  podSelector: {}\n  ingress:\n  - ports: [{port: 80}]\n  - ports: [{port: 80}]\n",
    );
    let findings = run(&repo(&twice));
    assert_eq!(
        of(&findings, &RULE_DUPLICATE),
        [pair("shop/twice", "spec.ingress[1]")]
    );
}

#[test]
fn findings_are_sorted_by_place_and_located_at_the_field() {
    let text = repo(&policy(
        "typo",
        "  podSelector:\n    matchLabels: {app: wbe}\n",
    ));
    let findings = run(&text);
    let places: Vec<(usize, usize)> = findings
        .iter()
        .filter_map(|f| f.position.map(|p| (p.line, p.column)))
        .collect();
    let mut sorted = places.clone();
    sorted.sort();
    assert_eq!(places, sorted);
    let typo = findings
        .iter()
        .find(|f| f.rule.id == POLICY_SELECTS_NO_POD.id)
        .expect("finding");
    let line = text
        .lines()
        .position(|l| l == "  podSelector:")
        .expect("line")
        + 1;
    assert_eq!(typo.position, Some(Position { line, column: 3 }));
    assert_eq!(typo.file, "repo.yaml");
}
