//! The reconcile loop on the fake kernel (no root): scripted source updates, one test per behaviour.
//! The same scenarios run on the real kernel in `tests/agent_kernel.rs`.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use common::reconcile::{self, config, demo, new_web_pod, resets, Harness, NODE};
use nftpolicy::dataplane::Dataplane;
use nftpolicy::kernel::{FakeKernel, KernelCall};
use nftpolicy::source::{Kind, Object, Update};
use policy_compiler::model::ObjectRef;
use policy_compiler::nft::{SetElement, SetType};
use policy_compiler::plan::fail_closed_ruleset;
use policy_compiler::{compile_node, ClusterState};

/// An agent on a fresh fake kernel that has listed the demo cluster and synced once.
async fn listed() -> (Harness<FakeKernel>, ClusterState) {
    listed_with(config()).await
}

async fn listed_with(config: nftpolicy::agent::AgentConfig) -> (Harness<FakeKernel>, ClusterState) {
    let mut h = Harness::start(FakeKernel::new(), config);
    let cluster = demo();
    reconcile::assert_full(&h.list(&cluster).await);
    h.assert_enforces(&cluster);
    (h, cluster)
}

fn commits(kernel: &FakeKernel) -> usize {
    kernel
        .calls()
        .iter()
        .filter(|c| matches!(c, KernelCall::Commit(..)))
        .count()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// The list of every pod of `cluster`, as the source sends it after a re-list.
fn pod_list(cluster: &ClusterState) -> Update {
    resets(cluster)
        .into_iter()
        .find(|u| {
            matches!(
                u,
                Update::Reset {
                    kind: Kind::Pod,
                    ..
                }
            )
        })
        .expect("a pod list")
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_enforced_until_every_kind_is_listed() {
    let mut h = Harness::start(FakeKernel::new(), config());
    let cluster = demo();
    let mut r = resets(&cluster);
    let last = r.pop().expect("resets");
    for reset in r {
        h.send(reset).await;
    }
    h.none_within(Duration::from_millis(200)).await;
    assert!(!h.health.is_ready());
    assert_eq!(
        h.kernel.calls(),
        vec![KernelCall::List],
        "only the start-up listing"
    );
    h.send(last).await;
    reconcile::assert_full(&h.next().await);
    assert!(h.health.is_ready());
    h.assert_enforces(&cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_add_is_element_operations_only() {
    let (mut h, mut cluster) = listed().await;
    reconcile::pod_add(&mut h, &mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relabel_moves_elements() {
    let (mut h, mut cluster) = listed().await;
    reconcile::relabel(&mut h, &mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_edit_touches_only_its_chains_and_sets() {
    let (mut h, mut cluster) = listed().await;
    reconcile::policy_edit(&mut h, &mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_network_policy_and_node_changes_are_element_operations() {
    let (mut h, mut cluster) = listed().await;
    reconcile::cluster_policy_changes(&mut h, &mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_runs_no_nft() {
    let (mut h, cluster) = listed().await;
    let before = h.kernel.calls().len();
    reconcile::no_change(&mut h, &cluster).await;
    // `assert_enforces` lists the table once; nothing else reached the kernel.
    assert_eq!(h.kernel.calls()[before..], [KernelCall::List]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_object_is_reported_and_left_out() {
    let (mut h, cluster) = listed().await;
    let before = commits(&h.kernel);
    h.send(Update::Invalid {
        kind: Kind::NetworkPolicy,
        key: ObjectRef::new("frontend", "broken"),
        error: "field spec.ingress[0].from[0].ipBlock.cidr: bad".into(),
    })
    .await;
    h.none_within(Duration::from_millis(200)).await;
    assert!(
        h.metrics.encode().contains("nftpolicy_invalid_objects 1"),
        "{}",
        h.metrics.encode()
    );
    assert_eq!(commits(&h.kernel), before);
    h.assert_enforces(&cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_one_transaction() {
    let (mut h, mut cluster) = listed().await;
    let before = commits(&h.kernel);
    reconcile::burst(&mut h, &mut cluster).await;
    assert_eq!(commits(&h.kernel), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_transaction_is_followed_by_a_full_replace() {
    let (mut h, mut cluster) = listed().await;
    reconcile::rejected_then_full_replace(&mut h, &mut cluster, |k| {
        k.reject_next("Error: Could not process rule: No buffer space available")
    })
    .await;
    // The rejected diff changed nothing; the replace came right after it.
    let calls = h.kernel.calls();
    let n = calls.len();
    assert!(
        matches!(&calls[n - 3..], [KernelCall::Commit(diff, false), KernelCall::Commit(full, true), KernelCall::List]
            if !diff.ops.contains(&policy_compiler::nft::transaction::Op::DeleteTable)
                && full.ops.contains(&policy_compiler::nft::transaction::Op::DeleteTable)),
        "{:?}",
        &calls[n - 3..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_table_fails_the_diff_and_is_replaced_whole() {
    let (mut h, mut cluster) = listed().await;
    reconcile::rejected_then_full_replace(&mut h, &mut cluster, FakeKernel::lose_table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_adopts_the_table_and_sends_nothing() {
    let (h, cluster) = listed().await;
    let kernel = h.stop().await;
    assert_eq!(
        kernel.table(),
        Some(compile_node(&cluster, NODE)),
        "fail-static: the table stays when the agent stops"
    );
    let before = commits(&kernel);
    let mut h = Harness::start(kernel, config());
    let first = h.list(&cluster).await;
    assert!(!first.nft_called, "{first:?}");
    assert_eq!(first.result.as_ref().expect("ok").operations, 0);
    assert!(
        h.health.is_ready(),
        "ready after the first sync, even without a change"
    );
    assert_eq!(commits(&h.kernel), before, "nothing was sent to the kernel");
    // And the next change is a diff, not a replace.
    let mut cluster = cluster;
    reconcile::pod_add(&mut h, &mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_over_a_changed_cluster_sends_only_the_difference() {
    let (h, cluster) = listed().await;
    let kernel = h.stop().await;
    let mut changed = cluster.clone();
    changed.upsert_pod(new_web_pod(&cluster));
    let mut h = Harness::start(kernel, config());
    let first = h.list(&changed).await;
    let report = first.result.as_ref().expect("ok");
    assert!(!report.full && report.operations > 0, "{first:?}");
    h.assert_enforces(&changed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_repairs_drift() {
    let mut c = config();
    c.audit_interval = Duration::from_millis(100);
    let (mut h, cluster) = listed_with(c).await;
    reconcile::audit_repairs(&mut h, &cluster, |k| {
        assert!(k.drift(|t| {
            let set = t
                .sets
                .get_mut("pods_NS_db_PODS_app_postgres_v4")
                .expect("the demo's postgres peer set");
            assert!(set.elements.remove(&SetElement::Addr(ip("10.244.1.30"))));
        }));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_restores_a_deleted_table() {
    let mut c = config();
    c.audit_interval = Duration::from_millis(100);
    let (mut h, cluster) = listed_with(c).await;
    reconcile::audit_repairs(&mut h, &cluster, FakeKernel::lose_table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_holds_until_the_first_sync_and_stays_after_exit() {
    // A fresh node: the fail-closed ruleset goes in before anything is listed.
    let kernel = FakeKernel::new();
    let mut dataplane = Dataplane::from_kernel(kernel.clone()).expect("read");
    assert!(dataplane.install_fail_closed().expect("install"));
    assert_eq!(kernel.table(), Some(fail_closed_ruleset()));
    let mut h = Harness::start_with(kernel, dataplane, config());
    let cluster = demo();
    let mut r = resets(&cluster);
    let last = r.pop().expect("resets");
    for reset in r {
        h.send(reset).await;
    }
    h.none_within(Duration::from_millis(200)).await;
    assert!(
        !h.health.is_ready(),
        "alive but not ready before the first sync"
    );
    assert!(h.health.is_alive());
    assert_eq!(
        h.kernel.table(),
        Some(fail_closed_ruleset()),
        "still holding"
    );
    h.send(last).await;
    let first = h.next().await;
    assert!(
        !first.result.as_ref().expect("ok").full,
        "the first sync diffs the fail-closed table"
    );
    h.assert_enforces(&cluster);
    // The agent stops: what it installed stays in force (fail-static).
    let kernel = h.stop().await;
    assert_eq!(kernel.table(), Some(compile_node(&cluster, NODE)));

    // A restart keeps the table in force: fail-closed installs nothing over it.
    let before = commits(&kernel);
    let mut dataplane = Dataplane::from_kernel(kernel.clone()).expect("read");
    assert!(!dataplane.install_fail_closed().expect("nothing to do"));
    assert_eq!(commits(&kernel), before);
    assert_eq!(kernel.table(), Some(compile_node(&cluster, NODE)));
}

/// The isolated pods of node-1 in the demo: frontend/web-0 (dual-stack), backend/api-0 and
/// db/postgres-0.
fn isolated_demo_pods() -> BTreeSet<IpAddr> {
    [
        "10.244.1.10",
        "fd00:10:244:1::10",
        "10.244.1.20",
        "10.244.1.30",
    ]
    .iter()
    .map(|s| ip(s))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conntrack_flush_targets_the_pods_whose_access_may_have_been_revoked() {
    let mut c = config();
    c.conntrack_flush = true;
    let (mut h, mut cluster) = listed_with(c).await;
    let deleted = |h: &Harness<FakeKernel>| -> BTreeSet<IpAddr> {
        h.kernel.conntrack_deletions().into_iter().collect()
    };
    // The first sync replaced the table: every isolated local pod.
    assert_eq!(deleted(&h), isolated_demo_pods());

    // A pod added only joins sets and maps: only the new pod's entries (its isolation changed).
    let before = h.kernel.conntrack_deletions().len();
    let web = new_web_pod(&cluster);
    cluster.upsert_pod(web.clone());
    h.send(Update::Upsert(Object::Pod(web.clone()))).await;
    h.next().await.result.expect("ok");
    assert_eq!(
        h.kernel.conntrack_deletions()[before..],
        [ip("10.244.1.12")]
    );

    // A policy edit (a chain refilled) may revoke anything: every isolated local pod.
    let before = h.kernel.conntrack_deletions().len();
    let id = ObjectRef::new("backend", "api-allow-egress");
    let mut p = cluster.policies()[&id].clone();
    p.egress.truncate(1);
    cluster.upsert_policy(p.clone());
    h.send(Update::Upsert(Object::Policy(p))).await;
    h.next().await.result.expect("ok");
    let mut all = isolated_demo_pods();
    all.insert(ip("10.244.1.12"));
    let after: BTreeSet<IpAddr> = h.kernel.conntrack_deletions()[before..]
        .iter()
        .copied()
        .collect();
    assert_eq!(after, all);

    // A conntrack failure is logged and does not fail the sync.
    h.kernel.fail_conntrack("Operation not permitted");
    cluster.remove_pod(&web.id);
    h.send(Update::Delete(Kind::Pod, web.id.clone())).await;
    let r = h.next().await;
    assert!(r.result.is_ok(), "{r:?}");
    assert!(h.health.is_ready());
    h.assert_enforces(&cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_conntrack_flush_no_entry_is_deleted() {
    let (mut h, mut cluster) = listed().await;
    reconcile::policy_edit(&mut h, &mut cluster).await;
    assert!(h.kernel.conntrack_deletions().is_empty());
}

/// A policy edit of the demo (one of backend/api-allow-egress's egress rules dropped).
fn edited_policy(cluster: &mut ClusterState) -> policy_compiler::model::Policy {
    let id = ObjectRef::new("backend", "api-allow-egress");
    let mut p = cluster.policies()[&id].clone();
    p.egress.truncate(1);
    cluster.upsert_policy(p.clone());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_waits_for_a_kind_being_listed_again_then_runs_once_with_both_changes() {
    let (mut h, mut cluster) = listed().await;
    // The pod watch failed; while pods are listed again, a policy changes.
    h.send(Update::Stale(Kind::Pod)).await;
    let policy = edited_policy(&mut cluster);
    h.send(Update::Upsert(Object::Policy(policy))).await;
    h.none_within(Duration::from_millis(400)).await;
    // The pods' list comes back with a new pod: one sync carries both changes.
    let web = new_web_pod(&cluster);
    cluster.upsert_pod(web);
    let pods = pod_list(&cluster);
    h.send(pods).await;
    let r = h.next().await;
    let ops = reconcile::ops(&r);
    assert!(
        ops.iter().any(|op| matches!(op, policy_compiler::nft::transaction::Op::FlushChain(n) if n.contains("api-allow-egress"))),
        "the policy edit: {ops:?}"
    );
    assert!(
        ops.iter().any(|op| matches!(
            op,
            policy_compiler::nft::transaction::Op::AddMapElements(..)
        )),
        "the new pod: {ops:?}"
    );
    h.assert_enforces(&cluster);
    h.none_within(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_resumes_without_a_list_releases_the_held_sync() {
    let (mut h, mut cluster) = listed().await;
    h.send(Update::Stale(Kind::Namespace)).await;
    let policy = edited_policy(&mut cluster);
    h.send(Update::Upsert(Object::Policy(policy))).await;
    h.none_within(Duration::from_millis(300)).await;
    h.send(Update::Live(Kind::Namespace)).await;
    h.next().await;
    h.assert_enforces(&cluster);
}

/// The cluster's pods as one page of a list.
fn pod_page(cluster: &ClusterState) -> Update {
    resets(cluster)
        .into_iter()
        .find_map(|u| match u {
            Update::Reset {
                kind: Kind::Pod,
                objects,
                invalid,
            } => Some(Update::ListPage {
                kind: Kind::Pod,
                objects,
                invalid,
            }),
            _ => None,
        })
        .expect("a pod reset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_in_progress_holds_syncs_until_it_ends() {
    let (mut h, mut cluster) = listed().await;
    // Pods are listed again (a periodic relist, say); meanwhile a policy changes.
    h.send(Update::ListBegin(Kind::Pod)).await;
    let policy = edited_policy(&mut cluster);
    h.send(Update::Upsert(Object::Policy(policy))).await;
    let web = new_web_pod(&cluster);
    cluster.upsert_pod(web);
    h.send(pod_page(&cluster)).await;
    h.none_within(Duration::from_millis(400)).await;
    // The list's end releases the held sync: it carries the edit and the listed pod.
    h.send(Update::ListEnd(Kind::Pod)).await;
    h.next().await;
    h.assert_enforces(&cluster);
    h.none_within(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_that_does_not_end_holds_syncs_for_at_most_the_hold() {
    let mut config = config();
    config.relist_hold = Duration::from_millis(500);
    let (mut h, mut cluster) = listed_with(config).await;
    h.send(Update::ListBegin(Kind::Pod)).await;
    let policy = edited_policy(&mut cluster);
    let sent = std::time::Instant::now();
    h.send(Update::Upsert(Object::Policy(policy))).await;
    let web = new_web_pod(&cluster);
    cluster.upsert_pod(web);
    h.send(pod_page(&cluster)).await;
    h.none_within(Duration::from_millis(300)).await;
    // The list's pages stop coming: the sync runs with what the store holds, nothing removed.
    h.next().await;
    assert!(
        sent.elapsed() >= Duration::from_millis(500),
        "held {:?}",
        sent.elapsed()
    );
    h.assert_enforces(&cluster);
    // The list ends holding every pod already there: nothing more to do.
    h.send(Update::ListEnd(Kind::Pod)).await;
    h.none_within(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_is_bounded_and_the_sync_then_runs_with_what_is_known() {
    let mut config = config();
    config.relist_hold = Duration::from_millis(500);
    let (mut h, mut cluster) = listed_with(config).await;
    h.send(Update::Stale(Kind::Pod)).await;
    let policy = edited_policy(&mut cluster);
    let sent = std::time::Instant::now();
    h.send(Update::Upsert(Object::Policy(policy))).await;
    h.none_within(Duration::from_millis(300)).await;
    h.next().await;
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(2),
        "held {waited:?}"
    );
    h.assert_enforces(&cluster);
    // Pods still not back: later changes are not held again.
    let web = new_web_pod(&cluster);
    cluster.upsert_pod(web.clone());
    let sent = std::time::Instant::now();
    h.send(Update::Upsert(Object::Pod(web))).await;
    h.next().await;
    assert!(
        sent.elapsed() < Duration::from_millis(400),
        "{:?}",
        sent.elapsed()
    );
    h.assert_enforces(&cluster);
}

/// An Admin ClusterNetworkPolicy for the backend namespace (backend/api-0 on node-1): the db
/// pods on 5432/TCP are accepted, between the rules `before` and `after` (YAML list items).
fn backend_guard(before: &str, after: &str) -> policy_compiler::model::ClusterNetworkPolicy {
    reconcile::guard_with(before, 5432, after)
}

const DNS_ACCEPT: &str = "  - name: dns
    action: Accept
    to: [{pods: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}, podSelector: {matchLabels: {k8s-app: kube-dns}}}}]
    protocols: [{udp: {destinationPort: {number: 53}}}]
";
const REST_DENY: &str = "  - name: rest
    action: Deny
    to: [{networks: [0.0.0.0/0]}]
";
const QUARANTINE_DENY: &str = "  - name: quarantine
    action: Deny
    to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {quarantine: \"yes\"}}}}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conntrack_flush_cuts_the_subjects_of_a_cluster_network_policy_that_allows_less() {
    let mut c = config();
    c.conntrack_flush = true;
    let (mut h, mut cluster) = listed_with(c).await;
    let api_0 = ip("10.244.1.20");
    // Sends an update that `cluster` already has; returns the sync's operations and the
    // addresses whose conntrack entries it deleted.
    async fn step(
        h: &mut Harness<FakeKernel>,
        cluster: &ClusterState,
        update: Update,
    ) -> (Vec<policy_compiler::nft::transaction::Op>, BTreeSet<IpAddr>) {
        let before = h.kernel.conntrack_deletions().len();
        h.send(update).await;
        let ops = reconcile::ops(&h.next().await);
        h.assert_enforces(cluster);
        let deleted = h.kernel.conntrack_deletions()[before..]
            .iter()
            .copied()
            .collect();
        (ops, deleted)
    }
    let upsert = |cluster: &mut ClusterState, p: policy_compiler::model::ClusterNetworkPolicy| {
        cluster.upsert_cluster_policy(p.clone());
        Update::Upsert(Object::ClusterPolicy(p))
    };

    // The first ClusterNetworkPolicy adds the Admin tier to the base chains: every pod a map
    // dispatches (api-0 among the isolated ones).
    let u = upsert(&mut cluster, backend_guard("", ""));
    let (_, deleted) = step(&mut h, &cluster, u).await;
    assert_eq!(deleted, isolated_demo_pods());

    // A Deny added after the Accept: only the guard's decision maps change, and only its subject
    // loses its established connections.
    let u = upsert(&mut cluster, backend_guard("", REST_DENY));
    let (ops, deleted) = step(&mut h, &cluster, u).await;
    reconcile::assert_tier_operations(&ops, "admin_", false);
    assert_eq!(deleted, BTreeSet::from([api_0]));

    // An Accept placed before the Deny allows more: nothing is cut.
    let rules = format!("{DNS_ACCEPT}{REST_DENY}");
    let u = upsert(&mut cluster, backend_guard("", &rules));
    let (ops, deleted) = step(&mut h, &cluster, u).await;
    reconcile::assert_tier_operations(&ops, "admin_", false);
    assert!(deleted.is_empty(), "{deleted:?}");

    // A Deny placed first that matches no pod yet: the later rules' elements change comment (their
    // index), not verdict.
    let u = upsert(&mut cluster, backend_guard(QUARANTINE_DENY, &rules));
    let (ops, deleted) = step(&mut h, &cluster, u).await;
    reconcile::assert_tier_operations(&ops, "admin_", false);
    assert!(deleted.is_empty(), "{deleted:?}");

    // A db pod on node-2 joins the Accept rule's peers: element operations, nothing cut.
    let mut postgres_1 = cluster
        .pod(&ObjectRef::new("db", "postgres-0"))
        .expect("postgres-0")
        .clone();
    postgres_1.id.name = "postgres-1".into();
    postgres_1.node = Some("node-2".into());
    postgres_1.ips = vec![ip("10.244.2.31")];
    cluster.upsert_pod(postgres_1.clone());
    let u = Update::Upsert(Object::Pod(postgres_1.clone()));
    let (ops, deleted) = step(&mut h, &cluster, u).await;
    reconcile::assert_tier_operations(&ops, "admin_", false);
    // Its address joins the peer class of postgres-0 (the Accept rule's).
    let table = h.table().expect("a table");
    let class_of = |addr: IpAddr| {
        table.decision_maps["admin_egress_peers_v4"]
            .elements
            .iter()
            .find(|(k, _)| k.holds(&addr, None))
            .map(|(_, d)| d.verdict.clone())
    };
    assert!(class_of(ip("10.244.2.31")).is_some(), "{ops:?}");
    assert_eq!(
        class_of(ip("10.244.2.31")),
        class_of(ip("10.244.2.30")),
        "{ops:?}"
    );
    assert!(deleted.is_empty(), "{deleted:?}");

    // The same pod quarantined: 5432/TCP to it goes from Accept to Deny, and the subject's
    // established connections are cut.
    postgres_1.labels.insert("quarantine", "yes");
    cluster.upsert_pod(postgres_1.clone());
    let u = Update::Upsert(Object::Pod(postgres_1));
    let (ops, deleted) = step(&mut h, &cluster, u).await;
    reconcile::assert_tier_operations(&ops, "admin_", false);
    assert_eq!(deleted, BTreeSet::from([api_0]));
}

/// `/metrics` policy series come from the committed ruleset's counters: what the kernel counted on
/// a rule's counter is that policy's accepted packets, and a group's drops count for each policy
/// of the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_metrics_read_the_committed_rulesets_counters() {
    use nftpolicy::policy_metrics::{KernelCounters, PolicyCounters};
    use std::sync::Arc;
    let kernel = FakeKernel::new();
    let counters = Arc::new(
        PolicyCounters::new(Box::new(KernelCounters(kernel.clone())), false, 1000)
            .with_min_interval(Duration::ZERO),
    );
    let dataplane = Dataplane::from_kernel(kernel.clone()).expect("read the kernel");
    let mut h =
        Harness::start_observed(kernel.clone(), dataplane, config(), vec![counters.clone()]);
    let cluster = demo();
    reconcile::assert_full(&h.list(&cluster).await);
    // The demo's backend/api-allow-ingress rule 0 and the api pods' ingress group on this node.
    let rule = policy_compiler::plan::policy_rule_counter_name(
        &ObjectRef::new("backend", "api-allow-ingress"),
        policy_compiler::model::Direction::Ingress,
        0,
    );
    let group = "ingress_backend_api-allow-ingress_default-deny-all";
    assert!(
        kernel.count(&rule, 3, 180),
        "{rule} is a counter of the table"
    );
    assert!(
        kernel.count(group, 2, 120),
        "{group} is a counter of the table"
    );
    let mut registry = prometheus_client::registry::Registry::with_prefix("nftpolicy");
    registry.register_collector(Box::new(counters));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    for line in [
        r#"nftpolicy_policy_packets_total{namespace="backend",policy="api-allow-ingress",direction="ingress",verdict="accept"} 3"#,
        r#"nftpolicy_policy_bytes_total{namespace="backend",policy="api-allow-ingress",direction="ingress",verdict="accept"} 180"#,
        r#"nftpolicy_policy_packets_total{namespace="backend",policy="api-allow-ingress",direction="ingress",verdict="drop"} 2"#,
        r#"nftpolicy_policy_packets_total{namespace="backend",policy="default-deny-all",direction="ingress",verdict="drop"} 2"#,
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
    // Listed with `list counters`, never the whole table, for a scrape.
    assert!(kernel
        .calls()
        .iter()
        .any(|c| matches!(c, KernelCall::ListCounters)));
}

/// A debounce with a long interval, to tell apart a sync at once from one that waited for it.
fn slow_interval(interval: Duration, max_wait: Duration) -> nftpolicy::agent::AgentConfig {
    let mut c = config();
    c.debounce = nftpolicy::debounce::DebounceConfig {
        min: Duration::from_millis(1),
        interval,
        max_wait,
    };
    c
}

/// `frontend/web-0` copied as `frontend/<name>` at `address` (on node-1).
fn web_pod(cluster: &mut ClusterState, name: &str, address: &str) -> Update {
    let mut web = new_web_pod(cluster);
    web.id.name = name.into();
    web.ips = vec![ip(address)];
    cluster.upsert_pod(web.clone());
    Update::Upsert(Object::Pod(web))
}

/// Whether the operations give `address` a verdict map element (the new pod's isolation).
fn adds(ops: &[policy_compiler::nft::transaction::Op], address: &str) -> bool {
    ops.iter().any(|op| {
        matches!(op, policy_compiler::nft::transaction::Op::AddMapElements(_, e)
            if e.iter().any(|(k, _)| k.to_string() == address))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_in_a_quiet_period_is_synced_without_waiting_for_the_interval() {
    let interval = Duration::from_secs(2);
    let (mut h, mut cluster) = listed_with(slow_interval(interval, interval * 4)).await;
    // Quiet: no sync in the last interval.
    tokio::time::sleep(interval + Duration::from_millis(200)).await;
    let sent = std::time::Instant::now();
    h.send(web_pod(&mut cluster, "web-2", "10.244.1.12")).await;
    let r = h.next().await;
    let waited = sent.elapsed();
    assert!(adds(&reconcile::ops(&r), "10.244.1.12"), "{r:?}");
    assert!(waited < interval / 2, "waited {waited:?}");
    h.assert_enforces(&cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_soon_after_a_sync_wait_for_the_interval_and_go_together() {
    let interval = Duration::from_secs(1);
    let (mut h, mut cluster) = listed_with(slow_interval(interval, interval * 4)).await;
    // Right after the first sync: the change waits for the interval, and the next one joins it.
    h.send(web_pod(&mut cluster, "web-2", "10.244.1.12")).await;
    h.none_within(Duration::from_millis(300)).await;
    h.send(web_pod(&mut cluster, "web-3", "10.244.1.13")).await;
    let o = reconcile::ops(&h.next().await);
    assert!(adds(&o, "10.244.1.12") && adds(&o, "10.244.1.13"), "{o:?}");
    h.assert_enforces(&cluster);
    // And again after that sync: at most one per interval.
    h.send(web_pod(&mut cluster, "web-4", "10.244.1.14")).await;
    h.none_within(Duration::from_millis(300)).await;
    assert!(adds(&reconcile::ops(&h.next().await), "10.244.1.14"));
    h.assert_enforces(&cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_waits_longer_than_max_wait_for_the_interval() {
    let max_wait = Duration::from_millis(200);
    let (mut h, mut cluster) = listed_with(slow_interval(Duration::from_secs(10), max_wait)).await;
    let sent = std::time::Instant::now();
    h.send(web_pod(&mut cluster, "web-2", "10.244.1.12")).await;
    let r = h.next().await;
    let waited = sent.elapsed();
    assert!(adds(&reconcile::ops(&r), "10.244.1.12"), "{r:?}");
    assert!(
        waited >= max_wait && waited < Duration::from_secs(5),
        "waited {waited:?}: the cap, not the 10 s interval"
    );
    h.assert_enforces(&cluster);
}

/// The value of the sample `name` (no labels) in the Prometheus text `metrics`.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_metrics_count_the_changes_of_each_sync_and_how_long_they_waited() {
    let (mut h, mut cluster) = listed().await;
    let m = h.metrics.encode();
    // The first sync carried the initial lists, one update per kind.
    assert_eq!(sample(&m, "nftpolicy_sync_events_count"), 1.0);
    assert_eq!(
        sample(&m, "nftpolicy_sync_events_sum"),
        Kind::ENFORCED.len() as f64
    );
    assert_eq!(sample(&m, "nftpolicy_sync_queue_lag_seconds_count"), 1.0);
    // Twenty pods in one transaction: one more observation, of 20 changes.
    reconcile::burst(&mut h, &mut cluster).await;
    let m = h.metrics.encode();
    assert_eq!(sample(&m, "nftpolicy_sync_events_count"), 2.0);
    assert_eq!(
        sample(&m, "nftpolicy_sync_events_sum"),
        Kind::ENFORCED.len() as f64 + 20.0
    );
    assert_eq!(sample(&m, "nftpolicy_sync_queue_lag_seconds_count"), 2.0);
    // Each oldest change waited at least the tests' 30 ms gather window before its commit.
    let lag = sample(&m, "nftpolicy_sync_queue_lag_seconds_sum");
    assert!(lag >= 2.0 * 0.030, "{lag}");
    // Updates that change nothing are no changes: no sync, nothing observed.
    reconcile::no_change(&mut h, &cluster).await;
    let m = h.metrics.encode();
    assert_eq!(sample(&m, "nftpolicy_sync_events_count"), 2.0);
    assert_eq!(sample(&m, "nftpolicy_sync_queue_lag_seconds_count"), 2.0);
}

/// The demo node's ruleset with comments longer than the kernel stores (as policies of many
/// names give): the kernel lists them shortened.
fn with_long_comments() -> policy_compiler::nft::Ruleset {
    let mut ruleset = compile_node(&demo(), NODE);
    assert!(!ruleset.counters.is_empty());
    for (name, counter) in &mut ruleset.counters {
        counter.comment = Some(format!("{name}: {}", "policy-name, ".repeat(30)));
    }
    ruleset
}

#[test]
fn a_restart_over_a_table_with_long_comments_sends_nothing_and_audits_clean() {
    let ruleset = with_long_comments();
    let kernel = FakeKernel::with_table(ruleset.clone());
    let mut dataplane = Dataplane::from_kernel(kernel.clone()).expect("read");
    assert!(dataplane.kernel_matches().expect("list"));
    let report = dataplane.apply(&ruleset).expect("apply");
    assert_eq!(report.operations, 0, "{}", report.transaction.render());
    assert_eq!(commits(&kernel), 0);
    assert!(dataplane.kernel_matches().expect("list"), "no drift");

    // A change afterwards: only it is sent.
    let mut changed = ruleset.clone();
    let (_, set) = changed
        .sets
        .iter_mut()
        .find(|(name, set)| name.ends_with("_v4") && matches!(set.set_type, SetType::Addr(_)))
        .expect("an IPv4 set");
    set.elements.insert(SetElement::Addr(ip("10.244.9.9")));
    let report = dataplane.apply(&changed).expect("apply");
    assert_eq!(report.operations, 1, "{}", report.transaction.render());
    assert!(dataplane.kernel_matches().expect("list"), "no drift");
}

#[test]
fn a_table_with_long_comments_committed_whole_audits_clean() {
    let kernel = FakeKernel::new();
    let mut dataplane = Dataplane::from_kernel(kernel.clone()).expect("read");
    dataplane.apply(&with_long_comments()).expect("apply");
    assert!(dataplane.kernel_matches().expect("list"), "no drift");
}

/// What a commit observer was told of the pods, commit after commit (`None`: all of them).
#[derive(Debug, Default)]
struct PodsObserved(std::sync::Mutex<Vec<Option<Vec<ObjectRef>>>>);

impl nftpolicy::agent::CommitObserver for PodsObserved {
    fn committed(
        &self,
        _origins: &std::sync::Arc<policy_compiler::plan::Origins>,
        _cluster: &ClusterState,
        changed: nftpolicy::agent::Changed<'_>,
    ) {
        let seen = match changed {
            nftpolicy::agent::Changed::All => None,
            nftpolicy::agent::Changed::Pods(pods) => Some(pods.keys().cloned().collect()),
        };
        self.0.lock().unwrap().push(seen);
    }
}

impl PodsObserved {
    fn take(&self) -> Vec<Option<Vec<ObjectRef>>> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The commit observers (the deny log's pods) are told which pods changed since the commit they
/// saw before: all after the first sync and after a list that changed pods, else the pods of
/// the events given to the compiler, the failed syncs' included, and none for a policy event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_observers_are_told_only_the_pods_that_changed() {
    use std::sync::Arc;
    let kernel = FakeKernel::new();
    let observed = Arc::new(PodsObserved::default());
    let dataplane = Dataplane::from_kernel(kernel.clone()).expect("read the kernel");
    let mut h =
        Harness::start_observed(kernel.clone(), dataplane, config(), vec![observed.clone()]);
    let mut cluster = demo();
    reconcile::assert_full(&h.list(&cluster).await);
    assert_eq!(observed.take(), vec![None], "the first sync: every pod");

    // One pod event: that pod only.
    h.send(web_pod(&mut cluster, "web-2", "10.244.1.12")).await;
    assert!(h.next().await.result.is_ok());
    let web_2 = ObjectRef::new("frontend", "web-2");
    assert_eq!(observed.take(), vec![Some(vec![web_2.clone()])]);

    // A policy event: no pod.
    h.send(Update::Upsert(Object::Policy(edited_policy(&mut cluster))))
        .await;
    assert!(h.next().await.result.is_ok());
    assert_eq!(observed.take(), vec![Some(vec![])]);

    // A pod event whose sync fails: nothing is observed, and the retry that commits it tells it.
    h.kernel
        .reject_next("Error: Could not process rule: No buffer space available");
    cluster.remove_pod(&web_2);
    h.send(Update::Delete(Kind::Pod, web_2.clone())).await;
    assert!(h.next().await.result.is_err());
    assert_eq!(observed.take(), vec![], "a failed sync is not observed");
    assert!(h.next().await.result.is_ok());
    assert_eq!(observed.take(), vec![Some(vec![web_2])]);

    // A list of the pods that changes one: every pod again.
    let mut web_0 = cluster
        .pod(&ObjectRef::new("frontend", "web-0"))
        .expect("web-0")
        .clone();
    web_0.ips = vec![ip("10.244.1.20")];
    cluster.upsert_pod(web_0);
    let pods = pod_list(&cluster);
    h.send(pods).await;
    let r = h.next().await;
    assert!(r.full_compile, "{r:?}");
    assert_eq!(observed.take(), vec![None]);
    h.assert_enforces(&cluster);
}
