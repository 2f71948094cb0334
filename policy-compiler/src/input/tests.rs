use super::*;
use crate::model::{NamespaceScope, Peer, PortSpec, Protocol};

fn parse(text: &str) -> Result<Manifests, InputErrors> {
    parse_sources(&[Source {
        name: "test.yaml".to_string(),
        text: text.to_string(),
    }])
}

fn policy(spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: x}}\nspec:\n{spec}"
    )
}

/// Asserts the input is rejected with one message containing every fragment.
fn rejected(text: &str, fragments: &[&str]) {
    let err = parse(text).expect_err("input must be rejected").to_string();
    for f in fragments {
        assert!(err.contains(f), "error {err:?} lacks {f:?}");
    }
}

#[test]
fn reads_multi_document_yaml_lists_json_and_skips_other_kinds() {
    let yaml = "\
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: a}}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: x, labels: {app: web}}
  spec:
    nodeName: n1
    containers: [{name: c, image: i, ports: [{containerPort: 80, name: http}]}]
  status: {phase: Running, podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]}
- apiVersion: v1
  kind: Service
  metadata: {name: s, namespace: x}
---
";
    let json = r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "y"}, "spec": {"podSelector": {}}}"#;
    let m = parse_sources(&[
        Source {
            name: "a.yaml".into(),
            text: yaml.into(),
        },
        Source {
            name: "b.json".into(),
            text: json.into(),
        },
    ])
    .expect("valid input");
    let c = &m.cluster;
    assert_eq!(m.skipped["a.yaml"].kinds.get("Service"), Some(&1));
    let pod = c.pod(&ObjectRef::new("x", "a")).expect("pod");
    assert_eq!(pod.ips.len(), 2, "dual-stack pod keeps one IP per family");
    assert_eq!(pod.ports[0].protocol, Protocol::Tcp);
    assert_eq!(
        c.namespace("x")
            .unwrap()
            .labels
            .get("kubernetes.io/metadata.name"),
        Some("x")
    );
    // y is only referenced by the policy: it exists implicitly, with its name label.
    assert_eq!(
        c.namespace("y")
            .unwrap()
            .labels
            .get("kubernetes.io/metadata.name"),
        Some("y")
    );
    let p = c.policies().values().next().unwrap();
    assert!(p.isolates_ingress && !p.isolates_egress);
}

use crate::model::ObjectRef;

#[test]
fn policy_types_default_like_the_api_server() {
    let egress_rules = policy("  podSelector: {}\n  egress: [{to: [{podSelector: {}}]}]\n");
    let p = parse(&egress_rules).unwrap();
    let p = p.cluster.policies().values().next().unwrap();
    assert!(p.isolates_ingress && p.isolates_egress);
    let empty_egress = policy("  podSelector: {}\n  egress: []\n");
    let p = parse(&empty_egress).unwrap();
    let p = p.cluster.policies().values().next().unwrap();
    assert!(p.isolates_ingress && !p.isolates_egress);
    let explicit = policy("  podSelector: {}\n  policyTypes: [Egress]\n");
    let p = parse(&explicit).unwrap();
    let p = p.cluster.policies().values().next().unwrap();
    assert!(!p.isolates_ingress && p.isolates_egress);
}

#[test]
fn peers_and_ports_convert_with_defaults() {
    let text = policy(
        "  podSelector: {}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: a}}
    - namespaceSelector: {}
    - ipBlock: {cidr: 10.244.1.5/4, except: [10.1.0.0/16]}
    ports:
    - port: 80
    - {port: 8000, endPort: 8080, protocol: UDP}
    - {protocol: SCTP}
    - {port: http}
",
    );
    let m = parse(&text).unwrap();
    let p = m.cluster.policies().values().next().unwrap();
    let rule = &p.ingress[0];
    assert!(
        matches!(&rule.peers[0], Peer::Pods(pp) if pp.namespaces == NamespaceScope::Own("x".into()))
    );
    assert!(
        matches!(&rule.peers[1], Peer::Pods(pp) if matches!(&pp.namespaces, NamespaceScope::Selected(s) if s.is_everything()))
    );
    match &rule.peers[2] {
        Peer::IpBlock(b) => assert_eq!(
            b.cidr.to_string(),
            "0.0.0.0/4",
            "non-canonical CIDR is masked"
        ),
        other => panic!("expected an ipBlock, got {other:?}"),
    }
    let ports: Vec<_> = rule
        .ports
        .iter()
        .map(|p| (p.protocol, p.port.clone()))
        .collect();
    assert_eq!(
        ports,
        vec![
            (Protocol::Tcp, PortSpec::Range(80, 80)),
            (Protocol::Udp, PortSpec::Range(8000, 8080)),
            (Protocol::Sctp, PortSpec::Any),
            (Protocol::Tcp, PortSpec::Named("http".into())),
        ]
    );
}

#[test]
fn invalid_yaml_names_the_file() {
    rejected("kind: [unclosed\n", &["test.yaml", "invalid YAML"]);
    // Not a Kubernetes object: skipped with a warning naming the file, or, strictly, rejected.
    let m = parse("- just\n- a list\n").expect("skipped");
    assert_eq!(m.skipped["test.yaml"].not_objects, 1);
    let errors = parse_strict("- just\n- a list\n")
        .expect_err("strict")
        .to_string();
    assert!(
        errors.contains("test.yaml: document 1") && errors.contains("not a Kubernetes object"),
        "{errors}"
    );
}

fn parse_strict(text: &str) -> Result<Manifests, InputErrors> {
    parse_sources_with(
        &[Source {
            name: "test.yaml".to_string(),
            text: text.to_string(),
        }],
        &ParseOptions {
            strict: true,
            ..ParseOptions::default()
        },
    )
}

#[test]
fn documents_that_play_no_part_are_skipped_with_one_warning_per_file() {
    let sources = [
        Source {
            name: "chart/values.yaml".to_string(),
            text: "replicaCount: 2\nimage: {repository: nginx}\n".to_string(),
        },
        Source {
            name: "app.yaml".to_string(),
            text: "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: d}\n---\n[1, 2]\n".to_string(),
        },
    ];
    let m = parse_sources(&sources).expect("skipped, not rejected");
    assert_eq!(
        m.skip_warnings(),
        [
            "app.yaml: skipped 1 document that is not a Kubernetes object and 3 objects of kinds that play no part in policy (ConfigMap, Service)",
            "chart/values.yaml: skipped 1 document that is not a Kubernetes object",
        ]
    );
    let strict = ParseOptions {
        strict: true,
        ..ParseOptions::default()
    };
    let errors = parse_sources_with(&sources, &strict).expect_err("strict").0;
    assert_eq!(errors.len(), 5, "{errors:?}");
    assert!(
        errors[0]
            .to_string()
            .starts_with("chart/values.yaml: document 1"),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("kind Service plays no part")),
        "{errors:?}"
    );
}

#[test]
fn typed_lists_give_their_kind_to_their_items() {
    let json = r#"{"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
        {"metadata": {"name": "a", "namespace": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}]},
         "status": {"podIP": "10.0.0.1"}},
        {"metadata": {"name": "b", "namespace": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}]}"#;
    let m = parse_sources(&[Source {
        name: "pods.json".into(),
        text: json.into(),
    }])
    .expect("a PodList");
    assert_eq!(m.cluster.pods().len(), 2);
    let a = m.cluster.pod(&ObjectRef::new("x", "a")).expect("x/a");
    assert!(a.live, "it has a status: read from a cluster");
    let b = m.cluster.pod(&ObjectRef::new("x", "b")).expect("x/b");
    assert!(!b.live, "no status: a manifest");
    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicyList\nitems:\n- metadata: {name: p}\n  spec: {podSelector: {}}\n";
    let m = parse(np).expect("a NetworkPolicyList");
    assert!(m
        .cluster
        .policies()
        .contains_key(&ObjectRef::new("default", "p")));
}

#[test]
fn objects_without_a_namespace_take_the_default_one() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}\n";
    let options = ParseOptions {
        default_namespace: "team-a".to_string(),
        ..ParseOptions::default()
    };
    let m = parse_sources_with(
        &[Source {
            name: "p.yaml".into(),
            text: text.into(),
        }],
        &options,
    )
    .expect("valid");
    assert!(m.cluster.pod(&ObjectRef::new("team-a", "p")).is_some());
    assert!(m.cluster.namespace("team-a").is_some());
}

#[test]
fn workloads_become_pod_templates() {
    let text = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, tier: fe}}
    spec:
      containers:
      - name: c
        image: nginx
        ports: [{name: http, containerPort: 8080}, {containerPort: 53, protocol: UDP}]
      initContainers:
      - {name: proxy, image: envoy, restartPolicy: Always, ports: [{name: admin, containerPort: 9901}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report}
spec:
  schedule: '@daily'
  jobTemplate:
    spec:
      template:
        metadata: {labels: {app: report}}
        spec: {hostNetwork: true, restartPolicy: Never, containers: [{name: c, image: i}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-5d8
  namespace: shop
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: u1, controller: true}]
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: nginx}]}
";
    let m = parse(text).expect("valid workloads");
    let workloads = m.cluster.workloads();
    assert_eq!(workloads.len(), 3);
    let web = &workloads[&crate::model::WorkloadRef::new("shop", "web", "Deployment")];
    assert_eq!(web.labels.get("tier").expect("label tier"), "fe");
    assert_eq!(web.ports.len(), 3);
    assert!(web
        .ports
        .iter()
        .any(|p| p.name.as_deref() == Some("admin") && p.port == 9901));
    assert!(web
        .ports
        .iter()
        .any(|p| p.port == 53 && p.protocol == Protocol::Udp));
    let report = &workloads[&crate::model::WorkloadRef::new("default", "report", "CronJob")];
    assert!(report.host_network);
    let rs = &workloads[&crate::model::WorkloadRef::new("shop", "web-5d8", "ReplicaSet")];
    assert_eq!(
        rs.owner,
        Some(crate::model::OwnerRef {
            kind: "Deployment".into(),
            name: "web".into()
        })
    );
    // Their fields are checked as a pod's are, located in the template.
    rejected(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  selector: {}\n  serviceName: db\n  template:\n    spec: {containers: [{name: c, image: i, ports: [{containerPort: 70000}]}]}\n",
        &[
            "StatefulSet default/db",
            "field spec.template.spec.containers[0].ports[0].containerPort",
            "out of range",
        ],
    );
    rejected(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {selector: {}}\n",
        &["Deployment default/d", "spec.template"],
    );
}

#[test]
fn invalid_cidrs_and_excepts_are_rejected() {
    rejected(
        &policy("  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]\n"),
        &[
            "document 1",
            "NetworkPolicy x/p",
            "spec.ingress[0].from[0].ipBlock.cidr",
            "prefix length",
        ],
    );
    rejected(
        &policy("  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]\n"),
        &["spec.egress[0].to[0].ipBlock.except[0]", "strict subset"],
    );
    rejected(
        &policy("  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]}]\n"),
        &["strict subset"],
    );
}

#[test]
fn invalid_ports_are_rejected() {
    rejected(
        &policy("  podSelector: {}\n  ingress: [{ports: [{endPort: 90}]}]\n"),
        &["spec.ingress[0].ports[0].endPort", "requires port"],
    );
    rejected(
        &policy("  podSelector: {}\n  ingress: [{ports: [{port: 90, endPort: 80}]}]\n"),
        &["spec.ingress[0].ports[0].endPort", "below port"],
    );
    rejected(
        &policy("  podSelector: {}\n  ingress: [{ports: [{port: http, endPort: 80}]}]\n"),
        &["spec.ingress[0].ports[0].endPort", "named port"],
    );
    rejected(
        &policy("  podSelector: {}\n  ingress: [{ports: [{port: 80, protocol: ICMP}]}]\n"),
        &["spec.ingress[0].ports[0].protocol", "ICMP"],
    );
    rejected(
        &policy("  podSelector: {}\n  ingress: [{ports: [{port: 70000}]}]\n"),
        &["spec.ingress[0].ports[0].port", "out of range"],
    );
}

#[test]
fn invalid_selectors_are_rejected() {
    rejected(
        &policy("  podSelector: {matchExpressions: [{key: a, operator: Maybe}]}\n"),
        &[
            "spec.podSelector.matchExpressions[0].operator",
            "unknown operator",
        ],
    );
    rejected(
        &policy("  podSelector: {matchExpressions: [{key: a, operator: In}]}\n"),
        &[
            "spec.podSelector.matchExpressions[0].values",
            "at least one value",
        ],
    );
    rejected(
        &policy("  podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}\n"),
        &[
            "spec.podSelector.matchExpressions[0].values",
            "takes no values",
        ],
    );
}

#[test]
fn invalid_peers_are_rejected() {
    rejected(
        &policy("  podSelector: {}\n  ingress: [{from: [{}]}]\n"),
        &["spec.ingress[0].from[0]", "needs a podSelector"],
    );
    rejected(
        &policy(
            "  podSelector: {}\n  ingress: [{from: [{podSelector: {}, ipBlock: {cidr: 10.0.0.0/8}}]}]\n",
        ),
        &["spec.ingress[0].from[0]", "cannot be combined"],
    );
}

#[test]
fn invalid_pod_ips_and_types_are_rejected() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {containers: []}\nstatus: {podIP: 10.0.0.300}\n";
    rejected(pod, &["Pod x/a", "status.podIP", "not an IP address"]);
    let typed = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {containers: [{name: c, ports: [{containerPort: web}]}]}\n";
    rejected(
        typed,
        &["Pod x/a", "spec.containers[0].ports[0].containerPort"],
    );
}

#[test]
fn duplicates_name_both_places() {
    let text = format!(
        "{}\n---\n{}",
        policy("  podSelector: {}\n"),
        policy("  podSelector: {}\n")
    );
    rejected(
        &text,
        &[
            "NetworkPolicy x/p is defined twice",
            "test.yaml: document 1",
            "test.yaml: document 2",
        ],
    );
}

#[test]
fn every_error_is_reported_and_none_yields_state() {
    let text = format!(
        "{}\n---\n{}",
        policy("  podSelector: {}\n  ingress: [{from: [{}]}]\n"),
        policy("  podSelector: {matchExpressions: [{key: a, operator: In}]}\n")
            .replace("name: p", "name: q")
    );
    let errors = parse(&text).expect_err("invalid").0;
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn large_multi_document_streams_are_read_whole() {
    // Cluster dumps run to many thousands of documents; the YAML parser's default budget stops at 1024.
    let text: String = (0..3000)
        .map(|i| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{i}}}\n---\n"))
        .collect();
    let m = parse(&text).expect("3000 documents");
    assert_eq!(m.cluster.namespaces().len(), 3000);
}

/// A NetworkPolicy selecting every pod of namespace x, annotated with `annotations` (flow style
/// entries, `""` for none), in document 2 of `test.yaml` (after a Namespace).
fn annotated_policy(annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: x}}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {{name: deny-all, namespace: x, annotations: {{{annotations}}}}}\n\
         spec: {{podSelector: {{}}}}\n"
    )
}

#[test]
fn the_enforcement_annotation_chooses_audit_or_enforce() {
    use crate::model::Enforcement;
    let read = |annotations: &str| {
        let m = parse(&annotated_policy(annotations)).unwrap_or_else(|e| panic!("{e}"));
        m.cluster.policies()[&ObjectRef::new("x", "deny-all")].enforcement
    };
    assert_eq!(read(""), Enforcement::Enforce, "no annotation: enforced");
    assert_eq!(read("other: audit"), Enforcement::Enforce);
    assert_eq!(
        read("nftpolicy.io/enforcement: enforce"),
        Enforcement::Enforce
    );
    assert_eq!(read("nftpolicy.io/enforcement: audit"), Enforcement::Audit);
    // A JSON manifest reads the same.
    let json = r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "y",
                     "annotations": {"nftpolicy.io/enforcement": "audit"}},
        "spec": {"podSelector": {}}}"#;
    let m = parse_sources(&[Source {
        name: "p.json".into(),
        text: json.into(),
    }])
    .expect("valid");
    assert!(m.cluster.policies()[&ObjectRef::new("y", "p")].is_audit());
}

#[test]
fn an_unknown_enforcement_is_a_located_error_naming_the_values() {
    for value in ["Audit", "warn", "\"\""] {
        let text = annotated_policy(&format!("nftpolicy.io/enforcement: {value}"));
        let errors = parse(&text).expect_err("rejected").0;
        let [InputError::Invalid(e)] = errors.as_slice() else {
            panic!("one field error expected: {errors:?}");
        };
        assert_eq!(
            e.location,
            Location {
                file: "test.yaml".into(),
                document: 2,
                item: None
            }
        );
        assert_eq!(
            (e.kind.as_str(), e.object.as_str()),
            ("NetworkPolicy", "x/deny-all")
        );
        assert_eq!(
            e.field,
            "metadata.annotations[\"nftpolicy.io/enforcement\"]"
        );
        let shown = value.trim_matches('"');
        assert_eq!(
            e.message,
            format!(
                "unknown enforcement mode \"{shown}\": use enforce or audit (no annotation is \
                 enforce)"
            )
        );
    }
}

#[test]
fn a_cluster_network_policy_cannot_be_audited_yet() {
    let cnp = |annotations: &str| {
        format!(
            "apiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n\
             metadata: {{name: guard, annotations: {{{annotations}}}}}\n\
             spec: {{tier: Admin, priority: 5, subject: {{namespaces: {{}}}}, \
             egress: [{{action: Deny, to: [{{namespaces: {{}}}}]}}]}}\n"
        )
    };
    let m = parse(&cnp("nftpolicy.io/enforcement: enforce")).expect("enforce is fine");
    assert!(m.cluster.cluster_policy("guard").is_some());
    let errors = parse(&cnp("nftpolicy.io/enforcement: audit"))
        .expect_err("audit is rejected")
        .0;
    let [InputError::Invalid(e)] = errors.as_slice() else {
        panic!("one field error expected: {errors:?}");
    };
    assert_eq!(
        e.to_string(),
        "test.yaml: document 1: ClusterNetworkPolicy guard: field \
         metadata.annotations[\"nftpolicy.io/enforcement\"]: audit mode is not supported for \
         ClusterNetworkPolicy yet; remove the annotation, or run the agent with --audit-all"
    );
    rejected(
        &cnp("nftpolicy.io/enforcement: dry-run"),
        &[
            "ClusterNetworkPolicy guard",
            "metadata.annotations[\"nftpolicy.io/enforcement\"]",
            "unknown enforcement mode \"dry-run\": use enforce",
        ],
    );
}

/// The locations and kinds a reader's objects come with, and the errors.
fn read_objects(name: &str, text: &str, buffer: usize) -> (Vec<String>, Vec<String>) {
    let mut reader = std::io::BufReader::with_capacity(buffer, text.as_bytes());
    let mut seen = Vec::new();
    let errors = for_each_object_read(name, &mut reader, &mut |o| {
        seen.push(format!(
            "{} {}",
            o.location,
            o.value["kind"].as_str().unwrap_or("?")
        ));
    });
    (seen, errors.iter().map(ToString::to_string).collect())
}

#[test]
fn a_reader_yields_what_the_same_text_does() {
    let yaml = "\n  \napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: v1\nkind: List\n\
        items: [{apiVersion: v1, kind: Pod, metadata: {name: a, namespace: x}}]\n";
    let json =
        "\n  {\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"x\"}}\n\
        {\"apiVersion\": \"v1\", \"kind\": \"Node\", \"metadata\": {\"name\": \"n\"}}";
    // JSON that two objects make is no YAML: a reader must find it past more blanks than it
    // buffers.
    let padded = format!("{}{json}", " \n".repeat(100));
    for (name, text) in [
        ("a.yaml", yaml),
        ("a.txt", json),
        ("a.json", json),
        ("b.txt", &padded),
    ] {
        let source = Source {
            name: name.into(),
            text: text.into(),
        };
        let mut from_text = Vec::new();
        let text_errors = for_each_object(&source, &mut |o| {
            from_text.push(format!(
                "{} {}",
                o.location,
                o.value["kind"].as_str().unwrap_or("?")
            ));
        });
        assert!(text_errors.is_empty(), "{text_errors:?}");
        assert_eq!(from_text.len(), 2, "{from_text:?}");
        // A buffer as small as a few bytes still finds where the JSON starts.
        for buffer in [8, 4096] {
            assert_eq!(
                read_objects(name, text, buffer),
                (from_text.clone(), vec![])
            );
        }
    }
    assert_eq!(
        read_objects("a.yaml", yaml, 64).0,
        [
            "a.yaml: document 1 Namespace",
            "a.yaml: document 2, items[0] Pod"
        ]
    );
}

#[test]
fn a_reader_stops_at_a_syntax_error_with_the_objects_before_it_delivered() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\nkind: [broken\n";
    let (seen, errors) = read_objects("a.yaml", text, 4096);
    assert_eq!(seen, ["a.yaml: document 1 Namespace"]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("a.yaml: invalid YAML"), "{errors:?}");
    let (seen, errors) = read_objects("a.json", "{\"kind\": ", 4096);
    assert!(seen.is_empty());
    assert!(errors[0].starts_with("a.json: invalid JSON"), "{errors:?}");
}
