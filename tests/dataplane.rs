//! The dataplane on the real kernel (root, in throwaway network namespaces): a diff applied on top of
//! a committed ruleset leaves exactly the state a fresh load of the new ruleset gives. (Rejected
//! transactions, full replaces and "no change, no nft call" are reconcile-loop scenarios:
//! `tests/agent.rs` on the fake kernel, `tests/agent_kernel.rs` on this one.)

mod common;

use common::{kernel_available, netns};
use nftpolicy::dataplane::Dataplane;
use nftpolicy::kernel::{Kernel, NftKernel};
use policy_compiler::generate::{cluster, mutate, Shape};
use policy_compiler::nft::json::canonical_listing;
use policy_compiler::nft::Ruleset;
use policy_compiler::plan::compile_node;
use serde_json::Value;

/// The kernel's listing of the table, canonical (see `canonical_listing`).
fn kernel_state(kernel: &dyn Kernel) -> Value {
    let json = kernel.list_table().expect("list").expect("table exists");
    canonical_listing(&json).expect("nft json")
}

fn fresh_state(ruleset: &Ruleset) -> Value {
    let ns = netns("dataplane");
    let mut dp = Dataplane::new(NftKernel::in_netns(ns.name()));
    dp.apply(ruleset).expect("full load");
    kernel_state(dp.kernel())
}

#[test]
fn diffs_leave_the_kernel_exactly_as_a_fresh_load_would() {
    if !kernel_available("diffs_leave_the_kernel_exactly_as_a_fresh_load_would") {
        return;
    }
    let ns = netns("dataplane");
    let mut dp = Dataplane::new(NftKernel::in_netns(ns.name()));
    let mut current = cluster(
        7,
        Shape {
            pods: 10,
            policies: 5,
            nodes: 2,
        },
    );
    let first = dp.apply(&compile_node(&current, "n0")).expect("first load");
    assert!(first.full);
    let mut partial = 0;
    let mut previous = kernel_state(dp.kernel());
    for step in 0..60u64 {
        current = mutate(&current, 1000 + step);
        let desired = compile_node(&current, "n0");
        let report = dp
            .apply(&desired)
            .unwrap_or_else(|e| panic!("step {step}: {e}"));
        assert!(!report.full, "step {step}: only the first apply is full");
        partial += usize::from(report.operations > 0);
        let state = kernel_state(dp.kernel());
        assert_eq!(
            state,
            fresh_state(&desired),
            "step {step}: the kernel differs from a fresh load"
        );
        // The comparison can tell states apart: a transaction that did something changed the listing.
        assert_eq!(report.operations > 0, state != previous, "step {step}");
        previous = state;
    }
    assert!(
        partial >= 20,
        "most mutations change the node's ruleset ({partial} did)"
    );
}
