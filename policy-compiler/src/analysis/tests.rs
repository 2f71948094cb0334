use std::net::IpAddr;

use super::*;
use crate::cidr::Cidr;
use crate::model::{ContainerPort, IpBlock, Namespace, PodPeer, PodPhase, PolicyPort, Rule};
use crate::selector::{LabelSelector, Labels};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn pod(ns: &str, name: &str, app: &str, addr: &str, ports: &[(&str, u16)]) -> Pod {
    Pod {
        id: ObjectRef::new(ns, name),
        labels: Labels::from([("app".to_string(), app.to_string())]),
        node: Some("n1".into()),
        ips: vec![ip(addr)],
        host_network: false,
        host_ips: vec![ip("192.168.0.1")],
        phase: PodPhase::Active,
        ports: ports
            .iter()
            .map(|(n, p)| ContainerPort {
                name: Some((*n).into()),
                port: *p,
                protocol: Protocol::Tcp,
            })
            .collect(),
        owner: None,
        live: true,
        workload: None,
    }
}

fn policy(
    ns: &str,
    name: &str,
    target: &str,
    ingress: Vec<Rule>,
    egress: Option<Vec<Rule>>,
) -> Policy {
    Policy {
        id: ObjectRef::new(ns, name),
        pod_selector: LabelSelector::from_labels([("app", target)]),
        isolates_ingress: true,
        isolates_egress: egress.is_some(),
        ingress,
        egress: egress.unwrap_or_default(),
        enforcement: crate::model::Enforcement::Enforce,
    }
}

fn tcp(port: PortSpec) -> PolicyPort {
    PolicyPort {
        protocol: Protocol::Tcp,
        port,
    }
}

fn cluster(pods: Vec<Pod>, policies: Vec<Policy>) -> ClusterState {
    let mut c = ClusterState::new();
    c.upsert_namespace(Namespace::new("x", Labels::new()));
    for p in pods {
        c.upsert_pod(p);
    }
    for p in policies {
        c.upsert_policy(p);
    }
    c
}

fn allowed(c: &ClusterState, from: &str, to: &str, protocol: Protocol, port: u16) -> bool {
    let from = Endpoint::from_ip(c, ip(from));
    let to = Endpoint::from_ip(c, ip(to));
    evaluate(c, from, to, protocol, port).allowed()
}

#[test]
fn isolation_comes_from_selection_not_from_rules() {
    // Only UDP/81 is allowed, and that still cuts TCP.
    let udp_only = Rule {
        peers: vec![],
        ports: vec![PolicyPort {
            protocol: Protocol::Udp,
            port: PortSpec::Range(81, 81),
        }],
    };
    let c = cluster(
        vec![
            pod("x", "a", "a", "10.0.0.1", &[]),
            pod("x", "b", "b", "10.0.0.2", &[]),
        ],
        vec![policy("x", "p", "a", vec![udp_only], None)],
    );
    assert!(!allowed(&c, "10.0.0.2", "10.0.0.1", Protocol::Tcp, 81));
    assert!(allowed(&c, "10.0.0.2", "10.0.0.1", Protocol::Udp, 81));
    assert!(!allowed(&c, "10.0.0.2", "10.0.0.1", Protocol::Udp, 80));
    // b is selected by nothing: default allow both ways.
    assert!(allowed(&c, "10.0.0.1", "10.0.0.2", Protocol::Tcp, 1));
}

#[test]
fn named_ports_resolve_per_destination_pod() {
    let to_web = Rule {
        peers: vec![],
        ports: vec![tcp(PortSpec::Named("http".into()))],
    };
    let c = cluster(
        vec![
            pod("x", "client", "client", "10.0.0.1", &[]),
            pod("x", "w1", "web", "10.0.0.2", &[("http", 80)]),
            pod("x", "w2", "web", "10.0.0.3", &[("http", 8080)]),
        ],
        vec![policy("x", "egress", "client", vec![], Some(vec![to_web]))],
    );
    assert!(allowed(&c, "10.0.0.1", "10.0.0.2", Protocol::Tcp, 80));
    assert!(!allowed(&c, "10.0.0.1", "10.0.0.2", Protocol::Tcp, 8080));
    assert!(allowed(&c, "10.0.0.1", "10.0.0.3", Protocol::Tcp, 8080));
    assert!(!allowed(&c, "10.0.0.1", "10.0.0.3", Protocol::Tcp, 80));
    // An outside address has no named ports.
    assert!(!allowed(&c, "10.0.0.1", "192.0.2.1", Protocol::Tcp, 80));
}

#[test]
fn connections_need_egress_and_ingress() {
    let from_all = Rule {
        peers: vec![],
        ports: vec![],
    };
    let deny_egress = policy(
        "x",
        "deny-egress",
        "a",
        vec![from_all.clone()],
        Some(vec![]),
    );
    let c = cluster(
        vec![
            pod("x", "a", "a", "10.0.0.1", &[]),
            pod("x", "b", "b", "10.0.0.2", &[]),
        ],
        vec![
            deny_egress,
            policy("x", "allow-b", "b", vec![from_all], None),
        ],
    );
    let v = evaluate(
        &c,
        Endpoint::from_ip(&c, ip("10.0.0.1")),
        Endpoint::from_ip(&c, ip("10.0.0.2")),
        Protocol::Tcp,
        80,
    );
    assert!(!v.allowed() && !v.egress.allowed() && v.ingress.allowed());
    assert_eq!(
        v.ingress
            .allowed_by()
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
        ["x/allow-b ingress[0]"]
    );
    assert!(allowed(&c, "10.0.0.2", "10.0.0.1", Protocol::Tcp, 80));
}

#[test]
fn ip_blocks_match_pod_ips_minus_excepts() {
    let block = Rule {
        peers: vec![Peer::IpBlock(IpBlock {
            cidr: "10.0.0.0/24".parse::<Cidr>().expect("cidr"),
            except: vec!["10.0.0.3/32".parse().expect("cidr")],
        })],
        ports: vec![],
    };
    let c = cluster(
        vec![
            pod("x", "a", "a", "10.0.0.1", &[]),
            pod("x", "b", "b", "10.0.0.2", &[]),
            pod("x", "c", "c", "10.0.0.3", &[]),
        ],
        vec![policy("x", "p", "a", vec![block], None)],
    );
    assert!(
        allowed(&c, "10.0.0.2", "10.0.0.1", Protocol::Tcp, 80),
        "pod IP inside the block"
    );
    assert!(
        !allowed(&c, "10.0.0.3", "10.0.0.1", Protocol::Tcp, 80),
        "pod IP in except"
    );
    assert!(
        allowed(&c, "10.0.0.200", "10.0.0.1", Protocol::Tcp, 80),
        "outside address"
    );
    assert!(!allowed(&c, "10.0.1.1", "10.0.0.1", Protocol::Tcp, 80));
}

#[test]
fn pods_without_a_part_are_neither_selected_nor_peers_and_own_node_passes() {
    let from_web = Rule {
        peers: vec![Peer::Pods(PodPeer {
            namespaces: NamespaceScope::Own("x".into()),
            pods: LabelSelector::from_labels([("app", "web")]),
        })],
        ports: vec![],
    };
    let mut host = pod("x", "host", "web", "192.168.0.2", &[]);
    host.host_network = true;
    let mut done = pod("x", "done", "web", "10.0.0.9", &[]);
    done.phase = PodPhase::Finished;
    let c = cluster(
        vec![pod("x", "db", "db", "10.0.0.1", &[]), host, done],
        vec![policy("x", "p", "db", vec![from_web], None)],
    );
    assert!(
        !allowed(&c, "192.168.0.2", "10.0.0.1", Protocol::Tcp, 5432),
        "host-network pod is not a pod peer"
    );
    assert!(
        !allowed(&c, "10.0.0.9", "10.0.0.1", Protocol::Tcp, 5432),
        "finished pod's IP may be reused"
    );
    let v = evaluate(
        &c,
        Endpoint::from_ip(&c, ip("192.168.0.1")),
        Endpoint::from_ip(&c, ip("10.0.0.1")),
        Protocol::Tcp,
        5432,
    );
    assert!(
        v.node_local && v.allowed(),
        "the pod's own node (kubelet) always passes"
    );
}

/// Audit mode: what policies annotated `nftpolicy.io/enforcement: audit` (and every policy, with
/// `audit_all`) change, and what they report.
mod audit {
    use super::*;
    use crate::test_support::{documents, network_policy};

    /// A running pod of namespace x labelled `app: APP`, on node `node` whose address is
    /// `host`.
    fn running(app: &str, ip: &str, node: &str, host: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {app}, namespace: x, labels: {{app: {app}}}}}\n\
             spec: {{nodeName: {node}, containers: [{{name: c, image: i}}]}}\n\
             status: {{phase: Running, podIP: {ip}, hostIP: {host}}}\n"
        )
    }

    /// A NetworkPolicy of namespace x in audit mode.
    fn audited(name: &str, spec: &str) -> String {
        network_policy("x", name, spec).replace(
            "namespace: x}",
            "namespace: x, annotations: {nftpolicy.io/enforcement: audit}}",
        )
    }

    /// Pods db (10.0.0.1, on n1 at 192.168.0.1), web (10.0.0.2), other (10.0.0.3) and mon
    /// (10.0.0.4), the last three on n2 (192.168.0.2), and `objects`.
    fn cluster_of(objects: &[String]) -> ClusterState {
        let mut all = vec![
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n".to_string(),
            running("db", "10.0.0.1", "n1", "192.168.0.1"),
            running("web", "10.0.0.2", "n2", "192.168.0.2"),
            running("other", "10.0.0.3", "n2", "192.168.0.2"),
            running("mon", "10.0.0.4", "n2", "192.168.0.2"),
        ];
        all.extend(objects.iter().cloned());
        let cluster = crate::test_support::parse(&documents(&all));
        assert_eq!(cluster.participating_pods().count(), 4);
        cluster
    }

    fn judge(
        c: &ClusterState,
        from: &str,
        to: &str,
        port: u16,
        audit_all: bool,
    ) -> ConnectionVerdict {
        evaluate_with(
            c,
            Endpoint::from_ip(c, ip(from)),
            Endpoint::from_ip(c, ip(to)),
            Some((Protocol::Tcp, port)),
            EvalOptions { audit_all },
        )
    }

    fn refs(names: &[&str]) -> Vec<ObjectRef> {
        names.iter().map(|n| ObjectRef::new("x", *n)).collect()
    }

    fn by(names: &[&str]) -> Option<WouldDeny> {
        Some(WouldDeny::NetworkPolicies(refs(names)))
    }

    /// The directions of a connection's would-denies, as its first packet meets them.
    fn met(v: &ConnectionVerdict) -> Vec<Direction> {
        v.would_deny().iter().map(|d| d.direction).collect()
    }

    const DB: &str = "10.0.0.1";
    const WEB: &str = "10.0.0.2";
    const OTHER: &str = "10.0.0.3";
    const MON: &str = "10.0.0.4";

    const DENY_ALL_DB: &str =
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress, Egress]\n";

    const DB_FROM_WEB_ON_80: &str = "  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 80}]
";

    #[test]
    fn a_pod_only_an_audit_default_deny_selects_is_open_and_each_would_deny_is_reported() {
        let c = cluster_of(&[audited("deny-all", DENY_ALL_DB)]);
        let v = judge(&c, WEB, DB, 80, false);
        assert!(v.allowed());
        assert!(v.ingress.isolated_by.is_empty());
        assert_eq!(v.ingress.audited_by, refs(&["deny-all"]));
        assert_eq!(v.ingress.decision, Decision::Default);
        assert_eq!(v.ingress.would_deny, by(&["deny-all"]));
        assert_eq!(
            v.ingress.would_deny_text().as_deref(),
            Some("x/deny-all (audit)")
        );
        assert_eq!(v.egress.would_deny, None, "web is selected by nothing");
        assert_eq!(met(&v), [Direction::Ingress]);
        // Its egress too, and a protocol without ports.
        let v = judge(&c, DB, WEB, 443, false);
        assert!(v.allowed());
        assert_eq!(
            (v.egress.would_deny.clone(), met(&v)),
            (by(&["deny-all"]), vec![Direction::Egress])
        );
        let icmp = evaluate_portless(
            &c,
            Endpoint::from_ip(&c, ip(WEB)),
            Endpoint::from_ip(&c, ip(DB)),
        );
        assert!(icmp.allowed() && icmp.ingress.would_deny == by(&["deny-all"]));
        // Its own node is always allowed, so nothing would deny it; nor a pod reaching itself.
        let own = judge(&c, DB, "192.168.0.1", 10250, false);
        assert!(own.to_own_node && own.allowed());
        assert!(own.egress.would_deny.is_none() && met(&own).is_empty());
        let itself = judge(&c, DB, DB, 80, false);
        assert!(itself.allowed() && met(&itself).is_empty());
        // The default evaluation is the same as the explicit one.
        assert_eq!(
            evaluate(
                &c,
                Endpoint::from_ip(&c, ip(WEB)),
                Endpoint::from_ip(&c, ip(DB)),
                Protocol::Tcp,
                80
            ),
            judge(&c, WEB, DB, 80, false)
        );
    }

    #[test]
    fn an_audit_policy_reports_only_what_none_of_its_rules_allows() {
        let c = cluster_of(&[audited("allow-web", DB_FROM_WEB_ON_80)]);
        let v = judge(&c, WEB, DB, 80, false);
        assert!(v.allowed() && v.ingress.would_deny.is_none() && met(&v).is_empty());
        assert_eq!(v.ingress.audit_rules.len(), 1);
        assert!(v.ingress.audit_rules[0].allows());
        for (from, port) in [(OTHER, 80), (WEB, 81)] {
            let v = judge(&c, from, DB, port, false);
            assert!(v.allowed(), "{from} {port}");
            assert_eq!(v.ingress.would_deny, by(&["allow-web"]), "{from} {port}");
        }
    }

    #[test]
    fn beside_an_enforced_policy_audit_policies_change_and_report_nothing() {
        let allow_other = "  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: other}}}]
";
        let enforced = network_policy("x", "allow-web", DB_FROM_WEB_ON_80);
        let both = cluster_of(&[
            enforced.clone(),
            audited("deny-all", DENY_ALL_DB),
            audited("allow-other", allow_other),
        ]);
        let alone = cluster_of(&[enforced]);
        for from in [WEB, OTHER, MON] {
            for port in [80, 81] {
                let v = judge(&both, from, DB, port, false);
                let expected = judge(&alone, from, DB, port, false);
                assert_eq!(v.allowed(), expected.allowed(), "{from} {port}");
                assert_eq!(v.ingress.decision, expected.ingress.decision);
                assert_eq!(v.ingress.isolated_by, refs(&["allow-web"]));
                assert_eq!(v.ingress.audited_by, refs(&["allow-other", "deny-all"]));
                assert!(v.ingress.would_deny.is_none() && met(&v).is_empty());
            }
        }
        assert!(judge(&both, WEB, DB, 80, false).allowed());
        assert!(
            !judge(&both, OTHER, DB, 80, false).allowed(),
            "the audit policy's allow adds nothing"
        );
    }

    /// A Baseline ClusterNetworkPolicy denying ingress from `app: other` to every pod.
    fn baseline_denies_other() -> String {
        "apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: baseline}
spec:
  tier: Baseline
  priority: 10
  subject: {namespaces: {}}
  ingress:
  - {name: no-other, action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: other}}}}]}
"
        .to_string()
    }

    #[test]
    fn the_baseline_tier_still_judges_a_pod_only_audit_policies_select() {
        let c = cluster_of(&[audited("deny-all", DENY_ALL_DB), baseline_denies_other()]);
        let v = judge(&c, OTHER, DB, 80, false);
        assert!(!v.allowed());
        assert_eq!(v.ingress.decision, Decision::BaselineDeny);
        assert_eq!(
            v.ingress.would_deny,
            by(&["deny-all"]),
            "it would be denied by the policy too"
        );
        let v = judge(&c, WEB, DB, 80, false);
        assert!(v.allowed());
        assert_eq!(v.ingress.decision, Decision::Default);
        assert_eq!(v.ingress.would_deny, by(&["deny-all"]));
        // An audit policy that allows: the Baseline denies, nothing would deny.
        let allow_other = "  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: other}}}]
";
        let c = cluster_of(&[audited("allow-other", allow_other), baseline_denies_other()]);
        let v = judge(&c, OTHER, DB, 80, false);
        assert!(!v.allowed() && v.ingress.decision == Decision::BaselineDeny);
        assert!(v.ingress.would_deny.is_none());
        assert_eq!(
            judge(&c, WEB, DB, 80, false).ingress.would_deny,
            by(&["allow-other"])
        );
        // Enforced, the policy keeps the Baseline tier out.
        let c = cluster_of(&[
            network_policy("x", "allow-other", allow_other),
            baseline_denies_other(),
        ]);
        assert!(judge(&c, OTHER, DB, 80, false).allowed());
    }

    /// An Admin ClusterNetworkPolicy for db: Accept from web, Deny from other, Pass from the rest.
    fn admin_for_db() -> String {
        "apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 10
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}
  ingress:
  - {action: Accept, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}]}
  - {name: no-other, action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: other}}}}]}
  - {action: Pass, from: [{namespaces: {}}]}
"
        .to_string()
    }

    #[test]
    fn what_the_admin_tier_decides_no_audit_policy_would_deny() {
        let c = cluster_of(&[audited("deny-all", DENY_ALL_DB), admin_for_db()]);
        let accepted = judge(&c, WEB, DB, 80, false);
        assert!(accepted.allowed() && accepted.ingress.decision == Decision::AdminAccept);
        assert!(accepted.ingress.would_deny.is_none());
        let denied = judge(&c, OTHER, DB, 80, false);
        assert!(!denied.allowed() && denied.ingress.decision == Decision::AdminDeny);
        assert!(denied.ingress.would_deny.is_none());
        let passed = judge(&c, MON, DB, 80, false);
        assert!(passed.allowed() && passed.ingress.decision == Decision::Default);
        assert_eq!(passed.ingress.would_deny, by(&["deny-all"]));
    }

    #[test]
    fn audit_all_judges_every_policy_as_enforced_and_lets_what_it_denies_through() {
        // db: the Admin guard and the enforced allow-web; web's egress to db only, annotated
        // audit (which audit_all enforces like the others).
        let web_egress = "  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
";
        let c = cluster_of(&[
            admin_for_db(),
            network_policy("x", "allow-web", DB_FROM_WEB_ON_80),
            audited("web-egress", web_egress),
        ]);
        for from in [WEB, OTHER, MON] {
            for to in [DB, WEB, OTHER, MON] {
                assert!(judge(&c, from, to, 80, true).allowed(), "{from} -> {to}");
            }
        }
        // The Admin Deny, named as the rule.
        let v = judge(&c, OTHER, DB, 80, true);
        assert_eq!(
            v.ingress.decision,
            Decision::AdminDeny,
            "the enforced decision"
        );
        let Some(WouldDeny::ClusterRule(m)) = &v.ingress.would_deny else {
            panic!("{:?}", v.ingress.would_deny);
        };
        assert_eq!(
            (m.rule.policy.as_str(), m.rule.index, m.action),
            ("guard", 1, Action::Deny)
        );
        assert_eq!(
            v.ingress.would_deny_text().as_deref(),
            Some("[Admin] guard (priority 10) ingress[1] \"no-other\" Deny (--audit-all)")
        );
        assert!(!judge(&c, OTHER, DB, 80, false).allowed());
        // A NetworkPolicy's isolation (mon passes the Admin tier).
        let v = judge(&c, MON, DB, 80, true);
        assert_eq!(v.ingress.decision, Decision::NetworkPolicy(false));
        assert_eq!(v.ingress.would_deny, by(&["allow-web"]));
        assert_eq!(
            v.ingress.would_deny_text().as_deref(),
            Some("x/allow-web (--audit-all)")
        );
        // What is allowed has nothing to report.
        let v = judge(&c, WEB, DB, 80, true);
        assert!(v.ingress.would_deny.is_none() && v.egress.would_deny.is_none());
        // The policy annotated audit is judged as enforced: it isolates web.
        let v = judge(&c, WEB, OTHER, 80, true);
        assert_eq!(v.egress.isolated_by, refs(&["web-egress"]));
        assert!(v.egress.audited_by.is_empty());
        assert_eq!(v.egress.would_deny, by(&["web-egress"]));
        let v = judge(&c, WEB, OTHER, 80, false);
        assert_eq!(v.egress.audited_by, refs(&["web-egress"]));
        assert_eq!(
            v.egress.would_deny_text().as_deref(),
            Some("x/web-egress (audit)")
        );
    }

    #[test]
    fn a_would_deny_is_reported_where_the_first_packet_meets_it() {
        let deny_egress_web = "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Egress]\n";
        let deny_ingress_db = "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress]\n";
        // Egress lets it on (audit) and ingress drops it: the egress would-deny is met.
        let c = cluster_of(&[
            audited("web-deny", deny_egress_web),
            network_policy("x", "db-deny", deny_ingress_db),
        ]);
        let v = judge(&c, WEB, DB, 80, false);
        assert!(!v.allowed());
        assert_eq!(met(&v), [Direction::Egress]);
        // Egress drops it: the ingress would-deny is never met.
        let c = cluster_of(&[
            network_policy("x", "web-deny", deny_egress_web),
            audited("db-deny", deny_ingress_db),
        ]);
        let v = judge(&c, WEB, DB, 80, false);
        assert!(!v.allowed());
        assert_eq!(v.ingress.would_deny, by(&["db-deny"]));
        assert!(met(&v).is_empty());
        // Both audited: both are met, egress first.
        let c = cluster_of(&[
            audited("web-deny", deny_egress_web),
            audited("db-deny", deny_ingress_db),
        ]);
        let v = judge(&c, WEB, DB, 80, false);
        assert!(v.allowed());
        assert_eq!(met(&v), [Direction::Egress, Direction::Ingress]);
    }
}
