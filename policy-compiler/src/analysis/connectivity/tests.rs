use super::*;
use crate::analysis::{evaluate, Endpoint};
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

/// Every connection agrees with the evaluator, port by port, for pods and for addresses.
fn agrees_with_the_evaluator(c: &ClusterState, cidrs: &PodCidrs) {
    let conn = Connectivity::compute(c, cidrs);
    let mut probes: Vec<(Protocol, u16)> = vec![
        (Protocol::Tcp, 80),
        (Protocol::Tcp, 443),
        (Protocol::Tcp, 8080),
        (Protocol::Tcp, 9000),
        (Protocol::Tcp, 9010),
        (Protocol::Tcp, 9090),
        (Protocol::Udp, 53),
        (Protocol::Sctp, 80),
    ];
    for p in c.pods().values() {
        for cp in &p.ports {
            probes.push((cp.protocol, cp.port));
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
    let endpoint = |party: &Party, family: Family| -> Option<Endpoint<'_>> {
        match party {
            Party::Workload(_) => {
                let id = conn.members(party).first()?;
                let pod = c.pod(id)?;
                pod.ip(family).map(|ip| Endpoint::pod(pod, ip))
            }
            Party::External { first, .. } => {
                (Family::of(first) == family).then(|| Endpoint::from_ip(c, *first))
            }
        }
    };
    let mut checked = 0;
    for from in conn.parties() {
        for to in conn.parties() {
            if from == to {
                continue;
            }
            for family in [Family::V4, Family::V6] {
                let (Some(a), Some(b)) = (endpoint(from, family), endpoint(to, family)) else {
                    continue;
                };
                if a.pod.is_none() && b.pod.is_none() {
                    continue;
                }
                let set = allowed
                    .get(&(from.to_string(), to.to_string(), Some(family)))
                    .or_else(|| allowed.get(&(from.to_string(), to.to_string(), None)));
                for (protocol, port) in &probes {
                    let verdict = evaluate(c, a, b, *protocol, *port);
                    let expected = verdict.allowed() && !verdict.node_local;
                    let got = set.is_some_and(|s| s.contains(*protocol, *port));
                    assert_eq!(
                        got, expected,
                        "{from} -> {to} {protocol}/{port} over IPv{}: connections say {got}, the evaluator {expected}",
                        family.number()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0);
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
fn generated_clusters_agree_with_the_evaluator() {
    for seed in 0..40 {
        let c = crate::generate::cluster(seed, crate::generate::Shape::default());
        agrees_with_the_evaluator(
            &c,
            &PodCidrs::parse(&["10.0.0.0/16", "fd00::/48"]).expect("cidrs"),
        );
    }
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
            external => Some(external.to_string()),
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
    let mut w = crate::generate::workload(
        3,
        crate::generate::WorkloadSize::named("small").expect("small"),
    );
    materialize(&mut w, &PodCidrs::default());
    agrees_with_the_per_pod_baseline(&w, &PodCidrs::default());
}
