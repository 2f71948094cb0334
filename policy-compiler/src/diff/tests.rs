use super::*;
use crate::input::{parse_sources, read_paths};
use crate::test_support::{
    deployment, documents, materialized, namespace, network_policy, ONE_CONTAINER,
};
use crate::workload::{materialize, PodCidrs};

fn diff_of(old: &ClusterState, new: &ClusterState, cidrs: &PodCidrs) -> Diff {
    let (a, b) = (
        Connectivity::compute(old, cidrs),
        Connectivity::compute(new, cidrs),
    );
    diff(Version::new(old, &a), Version::new(new, &b))
}

fn v4() -> PodCidrs {
    PodCidrs::parse(&["10.244.0.0/16"]).expect("cidr")
}

/// `kind: from => to : before -> after (policies; workloads)`, one per change.
fn lines(d: &Diff) -> Vec<String> {
    [&d.added, &d.removed, &d.changed]
        .into_iter()
        .flatten()
        .map(|c| {
            let family = c
                .family
                .map(|f| format!(" IPv{}", f.number()))
                .unwrap_or_default();
            let names = |v: Vec<String>| v.join(",");
            format!(
                "{:?}: {} => {}{family} : {} -> {} ({}; {})",
                c.kind(),
                c.from,
                c.to,
                c.before,
                c.after,
                names(c.policies.iter().map(ToString::to_string).collect()),
                names(c.workloads.iter().map(ToString::to_string).collect()),
            )
        })
        .collect()
}

#[test]
fn a_version_against_itself_is_empty() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    for paths in [
        vec![dir.join("demo")],
        vec![dir.join("diff/namespaces.yaml"), dir.join("diff/base")],
        vec![dir.join("diff/namespaces.yaml"), dir.join("diff/changed")],
    ] {
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let sources = read_paths(&paths).expect("read");
        for cidrs in [PodCidrs::default(), v4()] {
            let mut c = parse_sources(&sources).expect("valid").cluster;
            materialize(&mut c, &cidrs);
            let d = diff_of(&c, &c.clone(), &cidrs);
            assert!(d.is_empty(), "{paths:?}: {:#?}", lines(&d));
        }
    }
    let cidrs = PodCidrs::parse(&["10.0.0.0/16", "fd00::/48"]).expect("cidrs");
    for seed in 0..30 {
        let c = crate::generate::cluster(seed, crate::generate::Shape::default());
        let d = diff_of(&c, &c.clone(), &cidrs);
        assert!(d.is_empty(), "seed {seed}: {:#?}", lines(&d));
    }
    let c = crate::generate::workload(
        3,
        crate::generate::WorkloadSize::named("small").expect("small"),
    );
    assert!(diff_of(&c, &c.clone(), &PodCidrs::default()).is_empty());
}

/// Namespace shop; web (labelled tier: front) and client; every pod isolated (`deny`), client
/// reaching web on 80 (`front`), client's egress to its namespace (`client`).
fn shop() -> String {
    documents(&[
        namespace("shop", "team: shop"),
        deployment("shop", "web", "app: web, tier: front", ONE_CONTAINER),
        deployment("shop", "client", "app: client", ONE_CONTAINER),
        network_policy(
            "shop",
            "deny",
            "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n",
        ),
        network_policy(
            "shop",
            "front",
            "  podSelector: {matchLabels: {tier: front}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]
",
        ),
        network_policy(
            "shop",
            "client",
            "  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {matchLabels: {team: shop}}}]}]
",
        ),
    ])
}

#[test]
fn a_relabelled_workload_is_named_when_no_policy_changed() {
    let old = materialized(&shop(), &v4());
    assert_eq!(
        lines(&diff_of(&old, &old, &v4())),
        Vec::<String>::new(),
        "client reaches web on 80 in both"
    );
    // web loses the tier label that `front` selects it by: its ingress is `deny`'s alone.
    let new = materialized(&shop().replace("app: web, tier: front", "app: web"), &v4());
    assert_eq!(
        lines(&diff_of(&old, &new, &v4())),
        [
            "Removed: shop/client[Deployment] => shop/web[Deployment] : TCP 80 -> No Connections \
          (; shop/web[Deployment])"
        ]
    );
    // The shop namespace loses the label client's egress needs.
    let new = materialized(&shop().replace("labels: {team: shop}", "labels: {}"), &v4());
    assert_eq!(
        lines(&diff_of(&old, &new, &v4())),
        [
            "Removed: shop/client[Deployment] => shop/web[Deployment] : TCP 80 -> No Connections \
          (; shop/client[Deployment],shop/web[Deployment])"
        ]
    );
}

#[test]
fn enforcing_a_policy_in_audit_mode_removes_what_it_isolates_and_names_it() {
    let audited = shop().replace(
        "metadata: {name: deny, namespace: shop}",
        "metadata: {name: deny, namespace: shop, annotations: {nftpolicy.io/enforcement: audit}}",
    );
    let old = materialized(&audited, &v4());
    assert!(old.policies()[&ObjectRef::new("shop", "deny")].is_audit());
    let new = materialized(&shop(), &v4());
    let mut got = lines(&diff_of(&old, &new, &v4()));
    got.sort();
    // In audit mode `deny` isolated nothing: web's egress and client's ingress were open. web's
    // ingress was `front`'s and client's egress `client`'s: client => web stays TCP 80.
    assert_eq!(
        got,
        [
            "Removed: 0.0.0.0-10.243.255.255 => shop/client[Deployment] : All Connections -> No \
             Connections (shop/deny; )",
            "Removed: 10.245.0.0-255.255.255.255 => shop/client[Deployment] : All Connections -> \
             No Connections (shop/deny; )",
            "Removed: shop/web[Deployment] => 0.0.0.0-10.243.255.255 : All Connections -> No \
             Connections (shop/deny; )",
            "Removed: shop/web[Deployment] => 10.245.0.0-255.255.255.255 : All Connections -> No \
             Connections (shop/deny; )",
            "Removed: shop/web[Deployment] => shop/client[Deployment] : All Connections -> No \
             Connections (shop/deny; )",
        ]
    );
    // And back to audit: the same connections, added.
    let back = lines(&diff_of(&new, &old, &v4()));
    assert_eq!(back.len(), 5, "{back:#?}");
    assert!(
        back.iter()
            .all(|l| l.starts_with("Added: ") && l.ends_with("(shop/deny; )")),
        "{back:#?}"
    );
}

#[test]
fn edited_policies_are_named_and_redundant_isolation_is_not() {
    let old = materialized(&shop(), &v4());
    // `front` opens 443 too; a new policy isolates client for egress, as `client` already does,
    // and allows nothing to web: it changes nothing for client => web.
    let new = format!(
        "{}---\n{}",
        shop().replace("ports: [{port: 80}]", "ports: [{port: 80}, {port: 443}]"),
        network_policy(
            "shop",
            "client-dns",
            "  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{ports: [{port: 53, protocol: UDP}], to: [{ipBlock: {cidr: 10.96.0.10/32}}]}]
",
        )
    );
    let new = materialized(&new, &v4());
    assert_eq!(
        lines(&diff_of(&old, &new, &v4())),
        [
            "Added: shop/client[Deployment] => 10.96.0.10-10.96.0.10 : No Connections -> UDP 53 \
             (shop/client-dns; )",
            "Changed: shop/client[Deployment] => shop/web[Deployment] : TCP 80 -> TCP 80,443 \
             (shop/front; )",
        ]
    );
    // Without `deny` and `front`, nothing isolates web for ingress: both are named, as the
    // policies whose isolation is gone.
    let open = shop()
        .split("---\n")
        .filter(|d| !d.contains("name: deny") && !d.contains("name: front"))
        .collect::<Vec<_>>()
        .join("---\n");
    let new = materialized(&open, &v4());
    let d = diff_of(&old, &new, &v4());
    let web = d
        .changed
        .iter()
        .find(|c| c.from.to_string() == "shop/client[Deployment]" && c.to.is_named("shop/web"))
        .expect("client => web changed");
    assert_eq!(web.after.to_string(), "All Connections");
    assert_eq!(
        web.policies,
        [
            ObjectRef::new("shop", "deny"),
            ObjectRef::new("shop", "front")
        ]
    );
    assert!(web.workloads.is_empty());
}

#[test]
fn a_moved_ipblock_shows_exactly_the_addresses_that_changed() {
    let with_block = |block: &str| {
        let partners = network_policy(
            "shop",
            "partners",
            &format!(
                "  podSelector: {{matchLabels: {{app: web}}}}
  ingress: [{{from: [{{ipBlock: {block}}}], ports: [{{port: 8443}}]}}]
"
            ),
        );
        format!("{}---\n{partners}", shop())
    };
    // 192.0.2.64-192.0.2.255 before; 192.0.2.0-192.0.2.127 after.
    let old = materialized(
        &with_block("{cidr: 192.0.2.0/24, except: [192.0.2.0/26]}"),
        &v4(),
    );
    let new = materialized(&with_block("{cidr: 192.0.2.0/25}"), &v4());
    assert_eq!(
        lines(&diff_of(&old, &new, &v4())),
        [
            "Added: 192.0.2.0-192.0.2.63 => shop/web[Deployment] : No Connections -> TCP 8443 \
             (shop/partners; )",
            "Removed: 192.0.2.128-192.0.2.255 => shop/web[Deployment] : TCP 8443 -> No \
             Connections (shop/partners; )",
        ]
    );
    // And back.
    assert_eq!(
        lines(&diff_of(&new, &old, &v4())),
        [
            "Added: 192.0.2.128-192.0.2.255 => shop/web[Deployment] : No Connections -> TCP 8443 \
             (shop/partners; )",
            "Removed: 192.0.2.0-192.0.2.63 => shop/web[Deployment] : TCP 8443 -> No Connections \
             (shop/partners; )",
        ]
    );
}

#[test]
fn families_that_change_differently_are_reported_apart() {
    // Dual-stack: an ipBlock of the IPv6 pod range lets client reach web on 443 over IPv6 only.
    let old = materialized(&shop(), &PodCidrs::default());
    let new = shop().replace(
        "ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]",
        "ingress:
  - {from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}
  - {from: [{ipBlock: {cidr: 'fd00:10:244::/56'}}], ports: [{port: 443}]}",
    );
    let new = materialized(&new, &PodCidrs::default());
    assert_eq!(
        lines(&diff_of(&old, &new, &PodCidrs::default())),
        [
            "Changed: shop/client[Deployment] => shop/web[Deployment] IPv6 : TCP 80 -> TCP 80,443 \
          (shop/front; )"
        ]
    );
    // The same change over both families is one entry.
    let both = shop().replace("ports: [{port: 80}]", "ports: [{port: 80}, {port: 443}]");
    let both = materialized(&both, &PodCidrs::default());
    assert_eq!(
        lines(&diff_of(&old, &both, &PodCidrs::default())),
        [
            "Changed: shop/client[Deployment] => shop/web[Deployment] : TCP 80 -> TCP 80,443 \
          (shop/front; )"
        ]
    );
}

#[test]
fn workloads_added_and_removed_are_listed_with_their_pairs() {
    let old = materialized(&shop(), &v4());
    let renamed = shop().replace(
        "kind: Deployment\nmetadata: {name: client,",
        "kind: Deployment\nmetadata: {name: shopper,",
    );
    assert_ne!(renamed, shop());
    let new = materialized(&renamed, &v4());
    let d = diff_of(&old, &new, &v4());
    assert_eq!(
        d.workloads_added,
        [WorkloadRef::new("shop", "shopper", "Deployment")]
    );
    assert_eq!(
        d.workloads_removed,
        [WorkloadRef::new("shop", "client", "Deployment")]
    );
    let got = lines(&d);
    assert!(
        got.contains(
            &"Added: shop/shopper[Deployment] => shop/web[Deployment] : No Connections -> TCP 80 \
              (; shop/shopper[Deployment])"
                .to_string()
        ),
        "{got:#?}"
    );
    assert!(
        got.contains(
            &"Removed: shop/client[Deployment] => shop/web[Deployment] : TCP 80 -> No \
              Connections (; shop/client[Deployment])"
                .to_string()
        ),
        "{got:#?}"
    );
}
