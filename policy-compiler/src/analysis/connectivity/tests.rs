use super::*;
use crate::analysis::{evaluate, evaluate_portless, Endpoint};
use crate::model::{ObjectRef, Protocol};
use crate::test_support::{
    deployment, documents, materialized, namespace, network_policy, HTTP_ON_8080, ONE_CONTAINER,
};
use crate::workload::materialize;

fn lines(c: &Connectivity) -> Vec<String> {
    c.connections()
        .map(|conn| {
            let family = conn
                .family
                .map(|f| format!(" (IPv{})", f.number()))
                .unwrap_or_default();
            format!("{} => {} : {}{family}", conn.from, conn.to, conn.allowed)
        })
        .collect()
}

/// Namespaces shop and ops; web (port http, 8080) open to client on http and 9000-9010 and to ops
/// on 9090; client reaches its own namespace, and the outside but 10/8 and 192.168/16 on UDP 53
/// and TCP 443.
fn shop() -> String {
    documents(&[
        namespace("shop", "team: shop"),
        namespace("ops", "team: ops"),
        deployment("shop", "web", "app: web", HTTP_ON_8080),
        deployment("shop", "client", "app: client", ONE_CONTAINER),
        deployment("ops", "monitor", "app: monitor", ONE_CONTAINER),
        network_policy(
            "shop",
            "web",
            "  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}, {port: 9000, endPort: 9010}]
  - from: [{namespaceSelector: {matchLabels: {team: ops}}}]
    ports: [{port: 9090}]
",
        ),
        network_policy(
            "shop",
            "client",
            "  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {}}]
  - to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8, 192.168.0.0/16]}}]
    ports: [{protocol: UDP, port: 53}, {port: 443}]
",
        ),
    ])
}

#[test]
fn workloads_and_external_ranges_get_exactly_what_the_rules_allow() {
    let c = materialized(&shop(), &PodCidrs::default());
    let got = lines(&Connectivity::compute(
        &c,
        &PodCidrs::parse(&["10.244.0.0/16"]).expect("cidr"),
    ));
    let expected = [
        // Ingress to web: client on its named port and the range; ops on 9090.
        "0.0.0.0-9.255.255.255 => ops/monitor[Deployment] : All Connections",
        "0.0.0.0-9.255.255.255 => shop/client[Deployment] : All Connections",
        "10.0.0.0-10.243.255.255 => ops/monitor[Deployment] : All Connections",
        "10.0.0.0-10.243.255.255 => shop/client[Deployment] : All Connections",
        "10.245.0.0-191.255.255.255 => ops/monitor[Deployment] : All Connections",
        "10.245.0.0-191.255.255.255 => shop/client[Deployment] : All Connections",
        "11.0.0.0-192.167.255.255 => ops/monitor[Deployment] : All Connections",
        "11.0.0.0-192.167.255.255 => shop/client[Deployment] : All Connections",
    ];
    // The ranges are cut at 10.0.0.0/8, 192.168.0.0/16 and the pod CIDR.
    for line in expected.iter().take(2) {
        assert!(
            got.contains(&line.to_string()),
            "{line} missing in {got:#?}"
        );
    }
    let must = [
        "ops/monitor[Deployment] => shop/web[Deployment] : TCP 9090",
        "shop/client[Deployment] => shop/web[Deployment] : TCP 8080,9000-9010",
        "shop/client[Deployment] => 0.0.0.0-9.255.255.255 : TCP 443,UDP 53",
        "shop/client[Deployment] => 11.0.0.0-192.167.255.255 : TCP 443,UDP 53",
        "shop/client[Deployment] => 192.169.0.0-255.255.255.255 : TCP 443,UDP 53",
        "ops/monitor[Deployment] => shop/client[Deployment] : All Connections",
        "shop/web[Deployment] => shop/client[Deployment] : All Connections",
        "shop/web[Deployment] => ops/monitor[Deployment] : All Connections",
    ];
    for line in must {
        assert!(
            got.contains(&line.to_string()),
            "{line} missing in {got:#?}"
        );
    }
    for absent in [
        // client's egress to ops is not allowed (podSelector {} is its own namespace only).
        "shop/client[Deployment] => ops/monitor[Deployment]",
        // 10/8 and 192.168/16 are excepted.
        "shop/client[Deployment] => 10.0.0.0-10.243.255.255",
        "shop/client[Deployment] => 192.168.0.0-192.168.255.255",
        // Nothing from outside reaches web.
        "0.0.0.0-9.255.255.255 => shop/web[Deployment]",
    ] {
        assert!(
            !got.iter().any(|l| l.starts_with(absent)),
            "{absent} should not be allowed: {got:#?}"
        );
    }
}

/// The ends a party stands for over a family: every member pod (of a workload party), the first
/// and last address of an external range, every address of a node party.
fn probed_ends<'a>(
    c: &'a ClusterState,
    conn: &Connectivity,
    party: &Party,
    family: Family,
) -> Vec<Endpoint<'a>> {
    match party {
        Party::Workload(_) => conn
            .members(party)
            .iter()
            .filter_map(|id| c.pod(id))
            .filter_map(|pod| pod.ip(family).map(|ip| Endpoint::pod(pod, ip)))
            .collect(),
        Party::External { first, last } if Family::of(first) == family => {
            vec![Endpoint::from_ip(c, *first), Endpoint::from_ip(c, *last)]
        }
        Party::External { .. } => Vec::new(),
        Party::Node(n) => n
            .addresses
            .iter()
            .filter(|ip| Family::of(ip) == family)
            .map(|ip| Endpoint::from_ip(c, *ip))
            .collect(),
    }
}

/// Whether a pair of ends is one the pair of parties stands for: a pod with a node's own-node
/// party is a pod on that node; with the node's other party, a pod off it.
fn stands_for(end: &Endpoint<'_>, other: &Party) -> bool {
    match (end.pod, other) {
        (Some(pod), Party::Node(n)) => (pod.node.as_deref() == Some(n.name.as_str())) == n.own,
        _ => true,
    }
}

/// Every connection agrees with the evaluator, port by port and for ICMP (a protocol without
/// ports), for every pod of a workload, both ends of every external range and every address of
/// every node; returns how many verdicts were compared.
fn agrees_with_the_evaluator(c: &ClusterState, cidrs: &PodCidrs) -> usize {
    let conn = Connectivity::compute(c, cidrs);
    let mut probes: Vec<Option<(Protocol, u16)>> = vec![
        Some((Protocol::Tcp, 80)),
        Some((Protocol::Tcp, 443)),
        Some((Protocol::Tcp, 8080)),
        Some((Protocol::Tcp, 9000)),
        Some((Protocol::Tcp, 9010)),
        Some((Protocol::Tcp, 9090)),
        Some((Protocol::Udp, 53)),
        Some((Protocol::Sctp, 80)),
        None,
    ];
    for p in c.pods().values() {
        for cp in &p.ports {
            probes.push(Some((cp.protocol, cp.port)));
        }
    }
    probes.sort();
    probes.dedup();
    let allowed: HashMap<(String, String, Option<Family>), ConnSet> = conn
        .connections()
        .map(|k| {
            (
                (k.from.to_string(), k.to.to_string(), k.family),
                k.allowed.clone(),
            )
        })
        .collect();
    let mut checked = 0;
    for from in conn.parties() {
        for to in conn.parties() {
            if from == to {
                continue;
            }
            for family in [Family::V4, Family::V6] {
                let set = allowed
                    .get(&(from.to_string(), to.to_string(), Some(family)))
                    .or_else(|| allowed.get(&(from.to_string(), to.to_string(), None)));
                for a in probed_ends(c, &conn, from, family) {
                    for b in probed_ends(c, &conn, to, family) {
                        if (a.pod.is_none() && b.pod.is_none())
                            || !stands_for(&a, to)
                            || !stands_for(&b, from)
                        {
                            continue;
                        }
                        for probe in &probes {
                            let verdict = match probe {
                                Some((protocol, port)) => evaluate(c, a, b, *protocol, *port),
                                None => evaluate_portless(c, a, b),
                            };
                            let got = set.is_some_and(|s| match probe {
                                Some((protocol, port)) => s.contains(*protocol, *port),
                                None => s.has_other_protocols(),
                            });
                            assert_eq!(
                                got,
                                verdict.allowed(),
                                "{from} -> {to} ({} -> {}) {} over IPv{}: connections say {got} \
                                 ({set:?}), the evaluator:\n{}",
                                a.ip,
                                b.ip,
                                verdict.traffic(),
                                family.number(),
                                crate::analysis::explain_text(&verdict)
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 0);
    checked
}

#[test]
fn the_shop_agrees_with_the_evaluator() {
    agrees_with_the_evaluator(
        &materialized(&shop(), &PodCidrs::default()),
        &PodCidrs::parse(&["10.244.0.0/16"]).expect("cidr"),
    );
    agrees_with_the_evaluator(
        &materialized(&shop(), &PodCidrs::default()),
        &PodCidrs::default(),
    );
}

#[test]
fn policies_in_audit_mode_isolate_nothing_and_agree_with_the_evaluator() {
    // The shop with web's ingress policy in audit mode: web is open to every pod.
    let audited = shop().replace(
        "NetworkPolicy\nmetadata: {name: web, namespace: shop}",
        "NetworkPolicy\nmetadata: {name: web, namespace: shop, annotations: \
         {nftpolicy.io/enforcement: audit}}",
    );
    let c = materialized(&audited, &PodCidrs::default());
    assert!(c.policies()[&ObjectRef::new("shop", "web")].is_audit());
    let cidrs = PodCidrs::parse(&["10.244.0.0/16"]).expect("cidr");
    let got = lines(&Connectivity::compute(&c, &cidrs));
    for line in [
        "ops/monitor[Deployment] => shop/web[Deployment] : All Connections",
        "shop/client[Deployment] => shop/web[Deployment] : All Connections",
        "0.0.0.0-9.255.255.255 => shop/web[Deployment] : All Connections",
    ] {
        assert!(
            got.contains(&line.to_string()),
            "{line} missing in {got:#?}"
        );
    }
    agrees_with_the_evaluator(&c, &cidrs);
    // Random clusters with every other policy in audit mode, some of them beside enforced ones.
    for seed in 0..20 {
        let mut c = crate::generate::cluster(seed, crate::generate::Shape::default());
        let policies: Vec<_> = c.policies().values().cloned().collect();
        for mut p in policies.into_iter().step_by(2) {
            p.enforcement = crate::model::Enforcement::Audit;
            c.upsert_policy(p);
        }
        agrees_with_the_evaluator(
            &c,
            &PodCidrs::parse(&["10.0.0.0/16", "fd00::/48"]).expect("cidrs"),
        );
    }
}

#[test]
fn generated_clusters_agree_with_the_evaluator() {
    for seed in 0..40 {
        let c = crate::generate::cluster(seed, crate::generate::Shape::default());
        agrees_with_the_evaluator(
            &c,
            &PodCidrs::parse(&["10.0.0.0/16", "fd00::/48"]).expect("cidrs"),
        );
    }
}

/// A generated cluster with random ClusterNetworkPolicies and a Node for each of its nodes:
/// 6 pods, or 24 (so that classes hold several).
fn generated_with_cluster_policies(seed: u64) -> ClusterState {
    let shape = crate::generate::Shape {
        pods: if seed % 2 == 0 { 6 } else { 24 },
        ..crate::generate::Shape::default()
    };
    let c = crate::generate::cluster(seed, shape);
    crate::generate::cluster_policies::with_cluster_policies(&c, seed, 4, shape.nodes)
}

#[test]
fn generated_clusters_with_cluster_policies_agree_with_the_evaluator() {
    let cidrs = PodCidrs::parse(&["10.0.0.0/16", "fd00::/48"]).expect("cidrs");
    let mut checked = 0;
    for seed in 0..60 {
        checked += agrees_with_the_evaluator(&generated_with_cluster_policies(seed), &cidrs);
    }
    assert!(checked > 10_000, "{checked} verdicts compared");
}

#[test]
fn every_step_of_the_network_policy_api_suite_agrees_with_the_evaluator() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/network-policy-api");
    let suite = crate::cnp_conformance::Suite::read(&dir).expect("the suite reads");
    let mut steps = 0;
    for case in &suite.cases {
        let mut c = suite.model.cluster.clone();
        for i in 0..case.steps.len() {
            case.apply_step(i, &mut c).expect("the step applies");
            agrees_with_the_evaluator(&c, &PodCidrs::default());
            steps += 1;
        }
    }
    assert_eq!(steps, 120);
}

#[test]
fn pods_that_behave_alike_share_a_class() {
    // 30 replicas of each of three deployments: three classes, whatever the replica count.
    let c = crate::generate::workload(
        7,
        crate::generate::WorkloadSize::named("small").expect("small"),
    );
    let conn = Connectivity::compute(&c, &PodCidrs::default());
    assert!(
        conn.class_count() < c.participating_pods().count(),
        "{} classes for {} pods",
        conn.class_count(),
        c.participating_pods().count()
    );
}

/// Connection sets by (from, to) name, with their families.
type ByPair = HashMap<(String, String), Vec<(Option<Family>, ConnSet)>>;

/// The class computation gives, pod pair by pod pair, what computing every pod on its own gives.
fn agrees_with_the_per_pod_baseline(c: &ClusterState, cidrs: &PodCidrs) {
    let classes = Connectivity::compute(c, cidrs);
    let per_pod = Connectivity::compute_per_pod(c, cidrs);
    let by_class: ByPair = {
        let mut m = ByPair::new();
        for k in classes.connections() {
            m.entry((k.from.to_string(), k.to.to_string()))
                .or_default()
                .push((k.family, k.allowed.clone()));
        }
        m
    };
    // The party a pod belongs to in the class computation.
    let party_of = |id: &ObjectRef| -> Option<String> {
        classes
            .parties()
            .iter()
            .find(|p| classes.members(p).contains(id))
            .map(|p| p.to_string())
    };
    let mut per_pod_pairs = ByPair::new();
    for k in per_pod.connections() {
        let name = |p: &Party| match p {
            Party::Workload(_) => per_pod.members(p).first().and_then(&party_of),
            other => Some(other.to_string()),
        };
        let (Some(from), Some(to)) = (name(k.from), name(k.to)) else {
            panic!("{} or {} has no party", k.from, k.to);
        };
        if from == to {
            // Two pods of one workload: the class computation leaves a workload to itself out.
            continue;
        }
        let entry = per_pod_pairs.entry((from, to)).or_default();
        let item = (k.family, k.allowed.clone());
        if !entry.contains(&item) {
            entry.push(item);
        }
    }
    for (pair, sets) in &per_pod_pairs {
        assert_eq!(
            by_class.get(pair),
            Some(sets),
            "{} => {}: per class {:?}, per pod {sets:?}",
            pair.0,
            pair.1,
            by_class.get(pair)
        );
    }
    assert_eq!(by_class.len(), per_pod_pairs.len());
}

#[test]
fn classes_agree_with_computing_every_pod_on_its_own() {
    agrees_with_the_per_pod_baseline(
        &materialized(&shop(), &PodCidrs::default()),
        &PodCidrs::default(),
    );
    for seed in 0..40 {
        let c = crate::generate::cluster(seed, crate::generate::Shape::default());
        agrees_with_the_per_pod_baseline(
            &c,
            &PodCidrs::parse(&["10.0.0.0/16", "fd00::/48"]).expect("cidrs"),
        );
    }
    for seed in 0..40 {
        agrees_with_the_per_pod_baseline(
            &generated_with_cluster_policies(seed),
            &PodCidrs::parse(&["10.0.0.0/16", "fd00::/48"]).expect("cidrs"),
        );
    }
    let mut w = crate::generate::workload(
        3,
        crate::generate::WorkloadSize::named("small").expect("small"),
    );
    materialize(&mut w, &PodCidrs::default());
    agrees_with_the_per_pod_baseline(&w, &PodCidrs::default());
}

/// The tiers fixture (`fixtures/tiers`), its base version, single-stack.
fn tiers() -> (ClusterState, PodCidrs) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tiers");
    let text: Vec<String> = ["cluster.yaml", "base/policies.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).expect("fixture"))
        .collect();
    let cidrs = PodCidrs::parse(&["10.244.0.0/16"]).expect("cidr");
    (materialized(&documents(&text), &cidrs), cidrs)
}

#[test]
fn causes_name_the_cluster_policy_rules_that_decide() {
    let (c, cidrs) = tiers();
    let conn = Connectivity::compute(&c, &cidrs);
    let party = |name: &str| conn.party(name).unwrap_or_else(|| panic!("{name}")).clone();
    let rules = |from: &str, to: &str| -> Vec<String> {
        conn.causes(&party(from), &party(to), Family::V4)
            .cluster_rules
            .iter()
            .map(|m| m.cause())
            .collect()
    };
    // The monitor's scrape port is accepted in the Admin tier, the rest passed to db's
    // NetworkPolicy, which does not allow it.
    let causes = conn.causes(
        &party("ops/monitor[Pod]"),
        &party("shop/db[Pod]"),
        Family::V4,
    );
    assert_eq!(
        causes.ingress_isolated_by,
        [ObjectRef::new("shop", "db-ingress")]
    );
    assert!(causes.allowed_by.is_empty() && causes.egress_isolated_by.is_empty());
    assert_eq!(
        rules("ops/monitor[Pod]", "shop/db[Pod]"),
        [
            "[Admin] monitoring (priority 20) ingress[0] \"scrape\" Accept",
            "[Admin] monitoring (priority 20) ingress[1] \"ops-rest\" Pass"
        ]
    );
    assert_eq!(
        rules("shop/db[Pod]", "shop/web[Pod]"),
        ["[Baseline] default-deny (priority 1) ingress[0] \"pods\" Deny"]
    );
    for node in ["node/n2", "node/n1 (own node)"] {
        assert_eq!(
            rules("shop/web[Pod]", node),
            ["[Admin] guard (priority 10) egress[1] \"kubelet\" Deny"],
            "{node}"
        );
    }
    assert_eq!(
        rules("shop/web[Pod]", "169.254.169.254-169.254.169.254"),
        ["[Admin] guard (priority 10) egress[0] \"metadata\" Deny"]
    );
    // From a node to its own pods nothing decides: everything is allowed.
    assert_eq!(
        conn.causes(
            &party("node/n1 (own node)"),
            &party("shop/web[Pod]"),
            Family::V4
        ),
        Causes::default()
    );
    // web reaches db by the NetworkPolicy alone.
    let causes = conn.causes(&party("shop/web[Pod]"), &party("shop/db[Pod]"), Family::V4);
    assert!(causes.cluster_rules.is_empty());
    assert_eq!(
        causes
            .allowed_by
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["shop/db-ingress ingress[0]"]
    );
}
