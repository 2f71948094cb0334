//! Transactions: the diff between two rulesets, applied to the first, gives exactly the second, and
//! touches only what changed.

use std::collections::BTreeSet;
use std::net::IpAddr;

mod common;

use policy_compiler::generate::cluster_policies::with_cluster_policies;
use policy_compiler::generate::{cluster, decisions, mutate, Shape};
use policy_compiler::input::{parse_sources, read_paths};
use policy_compiler::model::{ObjectRef, Policy};
use policy_compiler::nft::transaction::{Op, Transaction};
use policy_compiler::nft::Ruleset;
use policy_compiler::plan::{compile_all, compile_node};
use policy_compiler::ClusterState;
use proptest::prelude::*;

fn demo() -> ClusterState {
    let sources =
        read_paths(&[common::fixtures().join("demo").display().to_string()]).expect("read");
    parse_sources(&sources).expect("valid").cluster
}

fn assert_applies(old: &Ruleset, new: &Ruleset) -> Transaction {
    let tx = Transaction::diff(old, new);
    let mut state = Some(old.clone());
    tx.apply_to(&mut state)
        .unwrap_or_else(|e| panic!("diff does not apply: {e}\n{}", tx.render()));
    assert_eq!(
        state.as_ref(),
        Some(new),
        "diff leaves another state:\n{}",
        tx.render()
    );
    tx
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn diff_applied_to_the_old_ruleset_gives_the_new_one(seed in any::<u64>(), change in any::<u64>(), steps in 1usize..4) {
        let a = cluster(seed, Shape { pods: 8, policies: 4, nodes: 2 });
        let mut b = a.clone();
        for i in 0..steps {
            b = mutate(&b, change.wrapping_add(i as u64));
        }
        for node in ["n0", "n1"] {
            let (old, new) = (compile_node(&a, node), compile_node(&b, node));
            assert_applies(&old, &new);
            let mut from_nothing = None;
            prop_assert!(Transaction::full(&new).apply_to(&mut from_nothing).is_ok());
            prop_assert_eq!(from_nothing.as_ref(), Some(&new));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Between clusters with ClusterNetworkPolicies (and without any: the tiers come and go whole),
    /// mutated pods and policies: the diff applies and gives the new ruleset, both ways.
    #[test]
    fn diffs_between_tiered_rulesets_apply(seed in any::<u64>(), change in any::<u64>(), a_count in 0usize..4, b_count in 0usize..4) {
        let base = cluster(seed, Shape { pods: 8, policies: 3, nodes: 2 });
        let a = with_cluster_policies(&base, seed, a_count, 2);
        let b = with_cluster_policies(&mutate(&base, change), change, b_count, 2);
        for node in ["n0", "n1"] {
            let (old, new) = (compile_node(&a, node), compile_node(&b, node));
            assert_applies(&old, &new);
            assert_applies(&new, &old);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Decision maps: elements added, removed, changed or replaced by overlapping ones, maps
    /// redefined, chains on both hooks added and removed.
    #[test]
    fn diffs_between_decision_rulesets_apply_and_give_the_new_one(a in any::<u64>(), b in any::<u64>()) {
        let (old, new) = (decisions::ruleset(a), decisions::ruleset(b));
        let tx = assert_applies(&old, &new);
        // Within a map, every deletion comes before every addition.
        let mut added = BTreeSet::new();
        for op in &tx.ops {
            match op {
                Op::AddDecisionElements(m, _) => { added.insert(m.clone()); }
                Op::DeleteDecisionElements(m, _) => prop_assert!(!added.contains(m), "{}", tx.render()),
                _ => {}
            }
        }
        // A named counter that stays as it was is never deleted nor added again: its counts go
        // on (unless the diff falls back to a full replace).
        if !tx.ops.contains(&Op::DeleteTable) {
            for op in &tx.ops {
                if let Op::AddCounter(name, _) | Op::DeleteCounter(name) = op {
                    prop_assert!(
                        old.counters.get(name) != new.counters.get(name),
                        "{name} is unchanged:\n{}",
                        tx.render()
                    );
                }
            }
        }
        prop_assert!(Transaction::diff(&new, &new).is_empty());
        let mut from_nothing = None;
        prop_assert!(Transaction::full(&new).apply_to(&mut from_nothing).is_ok());
        prop_assert_eq!(from_nothing.as_ref(), Some(&new));
    }
}

#[test]
fn nothing_changed_means_no_operations() {
    let c = demo();
    let rs = compile_node(&c, "node-1");
    assert!(Transaction::diff(&rs, &rs.clone()).is_empty());
}

#[test]
fn a_pod_added_is_only_element_operations() {
    let mut c = demo();
    let before = compile_all(&c);
    let mut web = c
        .pod(&ObjectRef::new("frontend", "web-0"))
        .expect("web-0")
        .clone();
    web.id.name = "web-2".into();
    web.ips = vec!["10.244.1.12".parse::<IpAddr>().expect("ip")];
    c.upsert_pod(web);
    for (node, after) in compile_all(&c) {
        let tx = assert_applies(&before[&node], &after);
        for op in &tx.ops {
            assert!(
                matches!(op, Op::AddElements(..) | Op::AddMapElements(..)),
                "{node}: a pod add must be element adds only, got {op:?}"
            );
        }
        let stats = tx.stats();
        assert!(
            stats.elements_added > 0 && stats.elements_added <= 6,
            "{node}: {stats:?}"
        );
    }
}

#[test]
fn a_relabelled_pod_moves_between_sets_by_elements() {
    let mut c = demo();
    let before = compile_node(&c, "node-2");
    // worker-0 becomes an api pod: it leaves and joins peer sets, and its vmap verdicts change.
    let id = ObjectRef::new("backend", "worker-0");
    c.pod_mut(&id)
        .expect("worker-0")
        .labels
        .insert("app", "api");
    let after = compile_node(&c, "node-2");
    let tx = assert_applies(&before, &after);
    // api-1 runs on node-2 too, so the api group chain exists: elements move, and the worker chains
    // and sets that lost their last pod on this node are removed. Nothing but elements is added.
    for op in &tx.ops {
        assert!(
            matches!(
                op,
                Op::AddElements(..)
                    | Op::DeleteElements(..)
                    | Op::AddMapElements(..)
                    | Op::DeleteMapElements(..)
                    | Op::FlushChain(..)
                    | Op::DeleteChain(..)
                    | Op::DeleteSet(..)
                    | Op::DeleteCounter(..)
            ),
            "a relabel must add nothing but elements, got {op:?}\n{}",
            tx.render()
        );
    }
    assert!(
        tx.ops.iter().any(|op| matches!(op, Op::AddMapElements(..))),
        "{}",
        tx.render()
    );
    assert!(
        tx.ops.iter().any(
            |op| matches!(op, Op::DeleteChain(c) if c == "np_backend_worker-allow-egress_egress")
        ),
        "{}",
        tx.render()
    );
    assert!(
        tx.ops
            .iter()
            .any(|op| matches!(op, Op::DeleteMapElements(..))),
        "{}",
        tx.render()
    );
    assert!(
        tx.ops.iter().any(|op| matches!(op, Op::AddMapElements(..))),
        "{}",
        tx.render()
    );
}

#[test]
fn a_policy_edit_touches_only_that_policys_chains_and_sets() {
    let mut c = demo();
    let before = compile_all(&c);
    let id = ObjectRef::new("backend", "api-allow-egress");
    let mut p: Policy = c.policies()[&id].clone();
    p.egress.truncate(1);
    c.upsert_policy(p);
    for (node, after) in compile_all(&c) {
        let tx = assert_applies(&before[&node], &after);
        let touched: BTreeSet<String> = tx
            .ops
            .iter()
            .map(|op| match op {
                Op::FlushChain(n) | Op::DeleteChain(n) | Op::AddRule(n, _) | Op::AddChain(n, _) => {
                    n.clone()
                }
                Op::AddSet(n, _)
                | Op::DeleteSet(n)
                | Op::AddElements(n, _)
                | Op::DeleteElements(n, _)
                | Op::AddCounter(n, _)
                | Op::DeleteCounter(n) => n.clone(),
                other => panic!("{node}: unexpected {other:?}"),
            })
            .collect();
        for name in &touched {
            assert!(
                name.contains("api-allow-egress") || name.starts_with("pods_"),
                "{node}: the edit of backend/api-allow-egress touched {name}:\n{}",
                tx.render()
            );
        }
        if node == "node-1" {
            assert!(
                touched.contains("np_backend_api-allow-egress_egress"),
                "{touched:?}"
            );
        }
    }
}

#[test]
fn a_pod_add_stays_a_handful_of_element_operations_at_any_size() {
    use policy_compiler::generate::{workload, WorkloadSize};
    let mut sizes = Vec::new();
    for size in [WorkloadSize::SMALL, WorkloadSize::MEDIUM] {
        let mut c = workload(42, size);
        let before = compile_node(&c, "node-0");
        let mut pod = c
            .pods()
            .values()
            .find(|p| p.node.as_deref() == Some("node-0") && &*p.id.namespace != "kube-system")
            .expect("a pod on node-0")
            .clone();
        pod.id.name = "added".into();
        pod.ips = vec!["10.250.0.1".parse::<IpAddr>().expect("ip")];
        c.upsert_pod(pod);
        let tx = assert_applies(&before, &compile_node(&c, "node-0"));
        assert!(
            tx.ops
                .iter()
                .all(|op| matches!(op, Op::AddElements(..) | Op::AddMapElements(..))),
            "{}",
            tx.render()
        );
        sizes.push(tx.stats().elements_added);
    }
    assert!(
        sizes.iter().all(|n| (1..=10).contains(n)),
        "elements added per size: {sizes:?}"
    );
}
