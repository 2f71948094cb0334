//! The reconcile loop on the real kernel (root), in throwaway network namespaces: the scenarios of
//! `tests/agent.rs`, so that the fake kernel is not the only judge of them.

mod common;

use std::time::Duration;

use common::reconcile::{self, config, demo, Harness};
use common::{kernel_available, netns, Netns};
use nftpolicy::agent::AgentConfig;
use nftpolicy::kernel::NftKernel;
use policy_compiler::ClusterState;

/// An agent with `config` on the kernel, in a network namespace of its own (there while the
/// returned [`Netns`] lives), that has loaded the demo in one full replace; `None` when `test`
/// cannot use the kernel.
async fn listed(
    test: &str,
    config: AgentConfig,
) -> Option<(Netns, Harness<NftKernel>, ClusterState)> {
    if !kernel_available(test) {
        return None;
    }
    let ns = netns("agent");
    let mut h = Harness::start(NftKernel::in_netns(ns.name()), config);
    let cluster = demo();
    reconcile::assert_full(&h.list(&cluster).await);
    Some((ns, h, cluster))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_becomes_exactly_its_transaction() {
    let Some((_ns, mut h, mut cluster)) =
        listed("each_change_becomes_exactly_its_transaction", config()).await
    else {
        return;
    };
    h.assert_enforces(&cluster);
    reconcile::pod_add(&mut h, &mut cluster).await;
    reconcile::relabel(&mut h, &mut cluster).await;
    reconcile::policy_edit(&mut h, &mut cluster).await;
    reconcile::no_change(&mut h, &cluster).await;
    reconcile::burst(&mut h, &mut cluster).await;
    reconcile::cluster_policy_changes(&mut h, &mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_table_fails_the_diff_and_is_replaced_whole() {
    let Some((_ns, mut h, mut cluster)) = listed(
        "a_lost_table_fails_the_diff_and_is_replaced_whole",
        config(),
    )
    .await
    else {
        return;
    };
    reconcile::rejected_then_full_replace(&mut h, &mut cluster, |k| {
        k.delete_table().expect("nft delete table")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_adopts_the_table_and_sends_nothing() {
    let Some((_ns, h, mut cluster)) =
        listed("a_restart_adopts_the_table_and_sends_nothing", config()).await
    else {
        return;
    };
    let kernel = h.stop().await;
    let mut h = Harness::start(kernel, config());
    h.assert_enforces(&cluster);
    let first = h.list(&cluster).await;
    assert!(!first.nft_called, "{first:?}");
    assert!(h.health.is_ready());
    reconcile::pod_add(&mut h, &mut cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_repairs_drift() {
    let mut c = config();
    c.audit_interval = Duration::from_millis(100);
    let Some((_ns, mut h, cluster)) = listed("the_audit_repairs_drift", c).await else {
        return;
    };
    reconcile::audit_repairs(&mut h, &cluster, |k| {
        k.run_script(
            "delete element inet nftpolicy pods_NS_db_PODS_app_postgres_v4 { 10.244.1.30 }\n",
        )
        .expect("nft delete element")
    })
    .await;
}
