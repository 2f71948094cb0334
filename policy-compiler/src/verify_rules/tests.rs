use super::*;
use crate::test_support::{
    deployment, documents, materialized, namespace, network_policy, stateful_set, HTTP_ON_8080,
    ONE_CONTAINER,
};
use crate::workload::PodCidrs;

/// Namespaces shop and db (labelled team: data); frontend, web (port http, 8080) and postgres.
fn shop_manifests() -> String {
    documents(&[
        namespace("shop", "team: shop"),
        namespace("db", "team: data"),
        deployment("shop", "frontend", "app: frontend", ONE_CONTAINER),
        deployment("shop", "web", "app: web", HTTP_ON_8080),
        stateful_set("db", "postgres", "app: postgres", ONE_CONTAINER),
        format!(
            "# web accepts frontend on 8080-8090 and the partners' 203.0.113.0/24 on 443.\n{}",
            network_policy(
                "shop",
                "web",
                "  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 8080, endPort: 8090}]
  - from: [{ipBlock: {cidr: 203.0.113.0/24}}]
    ports: [{port: 443}]
",
            )
        ),
        format!(
            "# postgres accepts web on 5432.\n{}",
            network_policy(
                "db",
                "postgres",
                "  podSelector: {matchLabels: {app: postgres}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: shop}}, podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 5432}]
",
            )
        ),
    ])
}

/// The shop, single-stack: frontend is open for ingress, every egress is open.
fn shop(cidrs: &PodCidrs) -> (ClusterState, Connectivity) {
    let c = materialized(&shop_manifests(), cidrs);
    let conn = Connectivity::compute(&c, cidrs);
    (c, conn)
}

fn v4() -> PodCidrs {
    PodCidrs::parse(&["10.244.0.0/16"]).expect("cidr")
}

fn rules(body: &str) -> RulesFile {
    parse("rules.yaml", &format!("rules:\n{body}")).unwrap_or_else(|e| panic!("{e}"))
}

/// Each rule: `holds` or `N: from => to : allowed (policies)` for the violations kept.
fn judge(body: &str, shown: usize) -> Vec<String> {
    let (c, conn) = shop(&v4());
    let file = rules(body);
    let outcomes = check(&file, &c, &conn, shown).unwrap_or_else(|e| panic!("{e}"));
    outcomes
        .iter()
        .map(|o| {
            if o.holds() {
                return format!("{}: holds", o.rule.name);
            }
            let pairs: Vec<String> = o
                .violations
                .iter()
                .map(|v| {
                    let policies: Vec<String> =
                        v.policies.iter().map(ToString::to_string).collect();
                    format!(
                        "{} => {} : {} ({})",
                        v.from,
                        v.to,
                        v.allowed,
                        policies.join(",")
                    )
                })
                .collect();
            format!(
                "{}: {}: {}",
                o.rule.name,
                o.violation_count,
                pairs.join("; ")
            )
        })
        .collect()
}

#[test]
fn workloads_are_selected_by_name_with_or_without_kind() {
    assert_eq!(
        judge(
            "\
- name: exact
  allow:
    from: {workload: shop/frontend}
    to: {workload: 'shop/web[Deployment]'}
    port: 8080
- name: the whole range
  allow:
    from: {workload: 'shop/frontend[Deployment]'}
    to: {workload: shop/web}
    ports: 8080-8090
- name: one port too many
  allow:
    from: {workload: shop/frontend}
    to: {workload: shop/web}
    ports: 8080-8091
- name: any port
  deny:
    from: {workload: shop/frontend}
    to: {workload: shop/web}
",
            10
        ),
        [
            "exact: holds",
            "the whole range: holds",
            "one port too many: 1: shop/frontend[Deployment] => shop/web[Deployment] : TCP \
             8080-8090 (shop/web)",
            "any port: 1: shop/frontend[Deployment] => shop/web[Deployment] : TCP 8080-8090 \
             (shop/web)",
        ]
    );
}

#[test]
fn namespaces_pods_and_namespace_labels_select_their_workloads() {
    assert_eq!(
        judge(
            "\
- name: only web reaches the database
  deny:
    from: {namespace: shop}
    to: {pods: {namespace: db, labels: {app: postgres}}}
    port: 5432
- name: the database reaches the shop's DNS port
  deny:
    from: {namespaceLabels: {team: data}}
    to: {namespace: shop}
    protocol: UDP
    port: 53
- name: pods anywhere
  allow:
    from: {pods: {labels: {app: web}}}
    to: {pods: {}}
    protocol: SCTP
",
            10
        ),
        [
            "only web reaches the database: 1: shop/web[Deployment] => db/postgres[StatefulSet] \
             : TCP 5432 (db/postgres)",
            // frontend is not isolated: everything reaches it; web is, and allows no UDP.
            "the database reaches the shop's DNS port: 1: db/postgres[StatefulSet] => \
             shop/frontend[Deployment] : All Connections ()",
            // web => frontend is open; web => postgres allows TCP 5432 only.
            "pods anywhere: 1: shop/web[Deployment] => db/postgres[StatefulSet] : TCP 5432 \
             (db/postgres)",
        ]
    );
}

#[test]
fn cidr_endpoints_are_the_external_addresses_in_the_prefix() {
    assert_eq!(
        judge(
            "\
- name: half the partners reach web on 443
  allow:
    from: {cidr: 203.0.113.0/25}
    to: {workload: shop/web}
    port: 443
- name: nothing outside reaches web
  deny:
    from: {cidr: 0.0.0.0/0}
    to: {workload: shop/web}
- name: one address reaches frontend
  deny:
    from: {cidr: 198.51.100.7/32}
    to: {workload: shop/frontend}
    port: 80
- name: web reaches the internet
  allow:
    from: {workload: shop/web}
    to: {cidr: 0.0.0.0/0}
",
            10
        ),
        [
            "half the partners reach web on 443: holds",
            "nothing outside reaches web: 1: 203.0.113.0-203.0.113.255 => shop/web[Deployment] \
             : TCP 443 (shop/web)",
            "one address reaches frontend: 1: 198.51.100.7-198.51.100.7 => \
             shop/frontend[Deployment] : All Connections ()",
            "web reaches the internet: holds",
        ]
    );
}

#[test]
fn violations_are_counted_beyond_those_kept() {
    // frontend => web allows 8080-8090 only; web => frontend everything.
    assert_eq!(
        judge(
            "\
- name: the shop is closed
  deny:
    from: {namespace: shop}
    to: {namespace: shop}
",
            1
        ),
        [
            "the shop is closed: 2: shop/frontend[Deployment] => shop/web[Deployment] : TCP \
          8080-8090 (shop/web)"
        ]
    );
}

#[test]
fn a_pair_without_a_shared_family_allows_nothing() {
    // Dual-stack: an IPv6 prefix reaches the workloads over IPv6; a pod with an IPv4 address
    // only (a dump's) shares no family with it.
    let text = format!(
        "{}---
apiVersion: v1
kind: Pod
metadata: {{name: old, namespace: shop}}
spec: {{nodeName: node-1, containers: [{{name: c, image: i}}]}}
status: {{phase: Running, podIP: 10.244.200.1}}
",
        shop_manifests()
    );
    let cidrs = PodCidrs::default();
    let c = materialized(&text, &cidrs);
    let conn = Connectivity::compute(&c, &cidrs);
    let file = rules(
        "\
- name: IPv6 reaches the shop
  allow:
    from: {cidr: '2001:db8::/32'}
    to: {namespace: shop}
    port: 8080
",
    );
    let outcomes = check(&file, &c, &conn, 10).expect("valid rules");
    let broken: Vec<String> = outcomes[0]
        .violations
        .iter()
        .map(|v| {
            format!(
                "{} => {} : {} ({:?}, shared family: {})",
                v.from, v.to, v.allowed, v.policies, !v.no_shared_family
            )
        })
        .collect();
    assert_eq!(
        broken,
        [
            "2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff => shop/old[Pod] : No Connections \
             ([], shared family: false)",
            // web allows 8080 from frontend, not from outside.
            "2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff => shop/web[Deployment] : No \
             Connections ([ObjectRef { namespace: \"shop\", name: \"web\" }], shared family: true)",
        ]
    );
}

#[test]
fn selectors_that_match_nothing_are_errors() {
    let (c, conn) = shop(&v4());
    let file = rules(
        "\
- name: typo
  allow:
    from: {workload: shop/frontent}
    to: {namespace: nowhere}
- name: inside the pods
  deny:
    from: {cidr: 10.244.0.0/16}
    to: {namespaceLabels: {team: none}}
- name: itself
  deny:
    from: {workload: shop/web}
    to: {pods: {namespace: shop, labels: {app: web}}}
",
    );
    let errors = check(&file, &c, &conn, 10).expect_err("invalid");
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "rules.yaml:4:11: rules[0] (\"typo\"): field allow.from: no workload shop/frontent \
             in the input (host-network and finished pods take no part)",
            "rules.yaml:5:9: rules[0] (\"typo\"): field allow.to: no workload in namespace \
             nowhere",
            "rules.yaml:8:11: rules[1] (\"inside the pods\"): field deny.from: no external \
             address in 10.244.0.0/16 (addresses in the pod CIDRs are pods')",
            "rules.yaml:9:9: rules[1] (\"inside the pods\"): field deny.to: no workload in a \
             namespace with these labels",
            "rules.yaml:10:3: rules[2] (\"itself\"): field deny: from and to make no pair: a \
             workload with itself is not judged, nor a workload with the side of a node none of \
             its pods is on",
        ]
    );
}

fn parse_error(body: &str) -> Vec<String> {
    match parse("rules.yaml", body) {
        Ok(file) => panic!("accepted: {file:?}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn invalid_rules_files_name_the_place_the_rule_and_the_field() {
    // Unknown fields and wrong types, as the deserializer finds them.
    assert_eq!(
        parse_error(
            "rules:\n- name: a\n  allow:\n    form: {workload: x/y}\n    to: {workload: x/z}\n"
        ),
        [
            "rules.yaml:4:5: rules[0] (\"a\"): field allow.form: unknown field `form`, expected \
          one of from, to, protocol, port, ports"
        ]
    );
    assert_eq!(
        parse_error(
            "rules:\n- name: a\n  deny: {from: {workload: x/y}, to: {workload: x/z}}\n\
             - name: b\n  deny:\n    from: {namespaceLabels: {team: [x]}}\n    to: {namespace: x}\n"
        ),
        ["rules.yaml:6:36: rules[1] (\"b\"): field deny.from.namespaceLabels.team: expected \
          string scalar"]
    );
    assert_eq!(
        parse_error("rules:\n- allow: {from: {namespace: a}, to: {namespace: b}}\n"),
        ["rules.yaml:2:3: rules[0]: missing field `name`"]
    );
    assert_eq!(
        parse_error("rulez: []\n"),
        ["rules.yaml:1:1: field rulez: unknown field `rulez`, expected one of rules"]
    );
    assert_eq!(
        parse_error("rules: []\n"),
        ["rules.yaml: field rules: no rules: give at least one (an empty file verifies nothing)"]
    );
    // What the deserializer accepts but a rule cannot mean, every problem at once.
    assert_eq!(
        parse_error(
            "\
rules:
- name: a
  allow:
    from: {workload: x}
    to: {namespace: db, cidr: 10.0.0.0/8}
    port: 0
    protocol: tcp
- name: b
  deny:
    from: {cidr: 10.0.0.0/8}
    to: {cidr: 192.0.2.0/24}
    port: 80
    ports: 80-90
- name: c
- name: d
  allow: {from: {namespace: a}, to: {namespace: b}}
  deny: {from: {namespace: a}, to: {namespace: b}}
- name: e
  allow: {from: {pods: {namespace: ''}}, to: {namespace: b}, ports: 90-80}
- name: f
  allow: {from: {cidr: 10.0.0.1/8}, to: {namespace: b}}
- name: ''
  allow: {from: {namespace: a}, to: {namespace: b}, ports: http}
"
        ),
        [
            "rules.yaml:4:11: rules[0] (\"a\"): field allow.from.workload: \"x\": expected \
             namespace/name[Kind] or namespace/name",
            "rules.yaml:5:9: rules[0] (\"a\"): field allow.to: give exactly one of workload, \
             namespace, pods, namespaceLabels, cidr or node (found 2)",
            "rules.yaml:6:11: rules[0] (\"a\"): field allow.port: 0: expected a port 1-65535 \
             (8080) or an inclusive range (8080-8090)",
            "rules.yaml:7:15: rules[0] (\"a\"): field allow.protocol: \"tcp\": expected TCP, UDP, \
             SCTP or ICMP",
            "rules.yaml:11:9: rules[1] (\"b\"): field deny.to: from and to are both cidr or \
             node: connections between addresses outside the pods are not judged",
            "rules.yaml:13:12: rules[1] (\"b\"): field deny.ports: give port or ports, not both",
            "rules.yaml:14:3: rules[2] (\"c\"): give one of allow or deny",
            "rules.yaml:17:9: rules[3] (\"d\"): field deny: give one of allow or deny, not both",
            "rules.yaml:19:17: rules[4] (\"e\"): field allow.from.pods.namespace: must not be \
             empty",
            "rules.yaml:19:69: rules[4] (\"e\"): field allow.ports: \"90-80\": the range ends \
             before it starts; expected a port 1-65535 (8080) or an inclusive range (8080-8090)",
            "rules.yaml:21:17: rules[5] (\"f\"): field allow.from.cidr: \"10.0.0.1/8\": host bits \
             are set; the network is 10.0.0.0/8",
            "rules.yaml:22:3: rules[6] (\"\"): field name: must not be empty",
            "rules.yaml:23:60: rules[6] (\"\"): field allow.ports: \"http\": expected a port \
             1-65535 (8080) or an inclusive range (8080-8090)",
        ]
    );
}

#[test]
fn the_fixture_rules_file_parses() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/verify/rules.yaml");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let file = parse("rules.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(file.rules.len() >= 5);
}

#[test]
fn text_says_whether_a_violated_range_is_broken_in_part() {
    // frontend => web allows TCP 8080-8090 only; nothing reaches postgres but web.
    let (c, conn) = shop(&v4());
    let file = rules(
        "\
- name: frontend reaches nothing of web
  deny: {from: {workload: shop/frontend}, to: {workload: shop/web}}
- name: frontend does not reach web on 8080
  deny: {from: {workload: shop/frontend}, to: {workload: shop/web}, port: 8080}
- name: frontend reaches web on 8080-8100
  allow: {from: {workload: shop/frontend}, to: {workload: shop/web}, ports: 8080-8100}
- name: frontend reaches postgres
  allow: {from: {workload: shop/frontend}, to: {workload: db/postgres}, port: 5432}
",
    );
    let outcomes = check(&file, &c, &conn, 10).expect("valid rules");
    assert_eq!(
        to_text(&outcomes),
        "\
violated: frontend reaches nothing of web: 1 pair allows some of TCP 1-65535
  shop/frontend[Deployment] => shop/web[Deployment] : TCP 8080-8090 (by shop/web)
violated: frontend does not reach web on 8080: 1 pair allows TCP 8080
  shop/frontend[Deployment] => shop/web[Deployment] : TCP 8080-8090 (by shop/web)
violated: frontend reaches web on 8080-8100: 1 pair does not allow all of TCP 8080-8100
  shop/frontend[Deployment] => shop/web[Deployment] : TCP 8080-8090 (by shop/web)
violated: frontend reaches postgres: 1 pair does not allow TCP 5432
  shop/frontend[Deployment] => db/postgres[StatefulSet] : No Connections (by db/postgres)
4 of 4 rules violated
"
    );
}

#[test]
fn icmp_takes_no_port() {
    let file = rules(
        "  - name: ping
    deny:
      from: {namespace: shop}
      to: {cidr: 0.0.0.0/0}
      protocol: ICMP
",
    );
    assert_eq!(file.rules[0].protocol, None);
    assert_eq!(file.rules[0].traffic(), "ICMP");
    assert_eq!(
        parse_error(
            "rules:
  - name: ping
    deny:
      from: {namespace: shop}
      to: {cidr: 0.0.0.0/0}
      protocol: ICMP
      port: 8
"
        ),
        ["rules.yaml:7:13: rules[0] (\"ping\"): field deny.port: ICMP has no ports: give none"]
    );
}
