//! The dataplane on the real kernel (root, in throwaway network namespaces): a diff applied on top of
//! a committed ruleset leaves exactly the state a fresh load of the new ruleset gives, for compiled
//! rulesets and for rulesets built around decision maps; and the kernel refuses exactly the
//! decision map batches that `Transaction::apply_to` predicts it refuses. (Rejected
//! transactions, full replaces and "no change, no nft call" are reconcile-loop scenarios:
//! `tests/agent.rs` on the fake kernel, `tests/agent_kernel.rs` on this one.)

mod common;

use common::{kernel_available, netns};
use nftpolicy::dataplane::Dataplane;
use nftpolicy::kernel::{Kernel, KernelError, NftKernel};
use policy_compiler::generate::{cluster, decisions, mutate, Rng, Shape};
use policy_compiler::model::Protocol;
use policy_compiler::nft::json::{as_listed, canonical_listing, parse_table};
use policy_compiler::nft::transaction::{Op, Transaction, TxError};
use policy_compiler::nft::{Decision, DecisionKey, DecisionVerdict, Ruleset};
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

/// The kernel's table read back as a ruleset.
fn kernel_table(kernel: &dyn Kernel) -> Ruleset {
    let json = kernel.list_table().expect("list").expect("table exists");
    parse_table(&json).unwrap_or_else(|e| panic!("{e}\n{json}"))
}

#[test]
fn decision_map_diffs_leave_the_kernel_exactly_as_a_fresh_load_would() {
    if !kernel_available("decision_map_diffs_leave_the_kernel_exactly_as_a_fresh_load_would") {
        return;
    }
    let ns = netns("decisions");
    let mut dp = Dataplane::new(NftKernel::in_netns(ns.name()));
    // Fresh loads go to a namespace of their own; each replaces the table whole.
    let fresh_ns = netns("fresh");
    let fresh = NftKernel::in_netns(fresh_ns.name());
    let mut rng = Rng::new(12);
    let mut seed = 0;
    let (mut partial, mut element_ops, mut redefined) = (0, 0, 0);
    for step in 0..80 {
        // Mostly a ruleset close to the last one (the next seed), sometimes one far away.
        seed = if rng.one_in(4) {
            rng.next_u64()
        } else {
            seed + 1
        };
        let desired = decisions::ruleset(seed);
        let report = dp
            .apply(&desired)
            .unwrap_or_else(|e| panic!("step {step} (seed {seed}): {e}"));
        partial += usize::from(!report.full);
        for op in &report.transaction.ops {
            match op {
                Op::AddDecisionElements(..) | Op::DeleteDecisionElements(..) => element_ops += 1,
                Op::DeleteDecisionMap(name)
                    if desired.decision_maps.contains_key(name) && !report.full =>
                {
                    redefined += 1
                }
                _ => {}
            }
        }
        fresh
            .commit(&Transaction::full(&desired))
            .unwrap_or_else(|e| panic!("step {step}: fresh load: {e}"));
        assert_eq!(
            kernel_state(dp.kernel()),
            kernel_state(&fresh),
            "step {step} (seed {seed}): the kernel differs from a fresh load:\n{}",
            report.transaction.render()
        );
        assert_eq!(
            kernel_table(dp.kernel()),
            as_listed(&desired),
            "step {step} (seed {seed}): the table reads back otherwise"
        );
    }
    assert!(partial >= 60, "most applies are diffs ({partial} were)");
    assert!(element_ops >= 100, "{element_ops} element operations");
    assert!(redefined >= 3, "{redefined} maps redefined in place");
}

fn key(first: &str, last: &str, ports: Option<(Protocol, u16, u16)>) -> DecisionKey {
    DecisionKey {
        first: first.parse().expect("address"),
        last: last.parse().expect("address"),
        ports,
    }
}

fn element(k: DecisionKey, verdict: DecisionVerdict) -> (DecisionKey, Decision) {
    (
        k,
        Decision {
            verdict,
            comment: Some("c".into()),
        },
    )
}

/// A table with one address-only and one port decision map.
fn batch_base() -> Ruleset {
    use DecisionVerdict::{Accept, Drop};
    use Protocol::{Tcp, Udp};
    let mut r = Ruleset::default();
    r.decision_maps.insert(
        "a4".into(),
        policy_compiler::nft::DecisionMap {
            family: policy_compiler::Family::V4,
            ports: false,
            elements: [
                element(key("10.1.0.0", "10.1.255.255", None), Accept),
                element(key("10.2.0.1", "10.2.0.1", None), Drop),
                element(key("10.3.0.5", "10.3.0.9", None), Drop),
            ]
            .into(),
        },
    );
    r.decision_maps.insert(
        "p4".into(),
        policy_compiler::nft::DecisionMap {
            family: policy_compiler::Family::V4,
            ports: true,
            elements: [
                element(key("10.1.0.0", "10.1.255.255", Some((Tcp, 80, 90))), Accept),
                element(key("10.2.0.1", "10.2.0.1", Some((Udp, 53, 53))), Drop),
            ]
            .into(),
        },
    );
    r
}

#[test]
fn the_kernel_refuses_the_decision_map_batches_apply_to_refuses() {
    if !kernel_available("the_kernel_refuses_the_decision_map_batches_apply_to_refuses") {
        return;
    }
    use DecisionVerdict::{Accept, Drop, Return};
    use Protocol::{Sctp, Tcp, Udp};
    let add = |map: &str, elements: Vec<(DecisionKey, Decision)>| {
        Op::AddDecisionElements(map.into(), elements)
    };
    let del = |map: &str, keys: Vec<DecisionKey>| Op::DeleteDecisionElements(map.into(), keys);
    let a = |first, last| key(first, last, None);
    let p = |first, last, proto, lo, hi| key(first, last, Some((proto, lo, hi)));
    // Each batch, and whether the kernel takes it.
    let batches: Vec<(&str, Vec<Op>, bool)> = vec![
        (
            "delete each, written as listed",
            vec![
                del(
                    "a4",
                    vec![
                        a("10.1.0.0", "10.1.255.255"),
                        a("10.2.0.1", "10.2.0.1"),
                        a("10.3.0.5", "10.3.0.9"),
                    ],
                ),
                del(
                    "p4",
                    vec![
                        p("10.1.0.0", "10.1.255.255", Tcp, 80, 90),
                        p("10.2.0.1", "10.2.0.1", Udp, 53, 53),
                    ],
                ),
            ],
            true,
        ),
        (
            "delete a missing address",
            vec![del("a4", vec![a("10.2.0.2", "10.2.0.2")])],
            false,
        ),
        (
            "delete part of a prefix",
            vec![del("a4", vec![a("10.1.0.0", "10.1.0.255")])],
            false,
        ),
        (
            "delete an address of a range",
            vec![del("a4", vec![a("10.3.0.5", "10.3.0.5")])],
            false,
        ),
        (
            "delete twice",
            vec![del(
                "a4",
                vec![a("10.2.0.1", "10.2.0.1"), a("10.2.0.1", "10.2.0.1")],
            )],
            false,
        ),
        (
            "delete by the first point, with ports",
            vec![del("p4", vec![p("10.1.2.0", "10.1.2.255", Tcp, 85, 85)])],
            true,
        ),
        (
            "delete, first point outside",
            vec![del("p4", vec![p("10.0.255.255", "10.1.0.0", Tcp, 80, 80)])],
            false,
        ),
        (
            "delete, other protocol",
            vec![del("p4", vec![p("10.2.0.1", "10.2.0.1", Tcp, 53, 53)])],
            false,
        ),
        (
            "delete, first port outside",
            vec![del("p4", vec![p("10.2.0.1", "10.2.0.1", Udp, 52, 53)])],
            false,
        ),
        (
            "add the same, comment aside",
            vec![add(
                "a4",
                vec![(
                    a("10.2.0.1", "10.2.0.1"),
                    Decision {
                        verdict: Drop,
                        comment: None,
                    },
                )],
            )],
            true,
        ),
        (
            "add the same key, another verdict",
            vec![add("a4", vec![element(a("10.2.0.1", "10.2.0.1"), Return)])],
            false,
        ),
        (
            "add the same key with ports, another verdict",
            vec![add(
                "p4",
                vec![element(p("10.2.0.1", "10.2.0.1", Udp, 53, 53), Accept)],
            )],
            false,
        ),
        (
            "add inside",
            vec![add("a4", vec![element(a("10.1.2.3", "10.1.2.3"), Drop)])],
            false,
        ),
        (
            "add across an end",
            vec![add("a4", vec![element(a("10.3.0.9", "10.3.0.20"), Drop)])],
            false,
        ),
        (
            "add around",
            vec![add(
                "a4",
                vec![element(a("10.0.0.0", "10.255.255.255"), Drop)],
            )],
            false,
        ),
        (
            "add inside, with ports",
            vec![add(
                "p4",
                vec![element(p("10.1.2.3", "10.1.2.3", Tcp, 85, 85), Drop)],
            )],
            false,
        ),
        (
            "add across an end, with ports",
            vec![add(
                "p4",
                vec![element(p("10.1.0.0", "10.1.255.255", Tcp, 90, 100), Drop)],
            )],
            false,
        ),
        (
            "add next to them",
            vec![
                add(
                    "a4",
                    vec![
                        element(a("10.0.255.255", "10.0.255.255"), Return),
                        element(a("10.2.0.0", "10.2.0.0"), Return),
                        element(a("10.2.0.2", "10.3.0.4"), Return),
                    ],
                ),
                add(
                    "p4",
                    vec![
                        element(p("10.1.0.0", "10.1.255.255", Tcp, 91, 65535), Return),
                        element(p("10.1.0.0", "10.1.255.255", Sctp, 80, 90), Return),
                        element(p("10.2.0.1", "10.2.0.1", Udp, 0, 52), Return),
                    ],
                ),
            ],
            true,
        ),
        (
            "add two that overlap",
            vec![add(
                "a4",
                vec![
                    element(a("11.0.0.0", "11.0.0.9"), Drop),
                    element(a("11.0.0.9", "11.0.0.9"), Drop),
                ],
            )],
            false,
        ),
        (
            "delete, then add what overlapped",
            vec![
                del("a4", vec![a("10.1.0.0", "10.1.255.255")]),
                add(
                    "a4",
                    vec![
                        element(a("10.1.0.0", "10.1.127.255"), Drop),
                        element(a("10.1.128.0", "10.1.255.255"), Return),
                    ],
                ),
                del("p4", vec![p("10.1.0.0", "10.1.255.255", Tcp, 80, 90)]),
                add(
                    "p4",
                    vec![element(p("10.0.0.0", "10.255.255.255", Tcp, 80, 80), Drop)],
                ),
            ],
            true,
        ),
        (
            "add what overlaps, then delete",
            vec![
                add("a4", vec![element(a("10.1.0.0", "10.1.127.255"), Drop)]),
                del("a4", vec![a("10.1.0.0", "10.1.255.255")]),
            ],
            false,
        ),
        (
            "delete and add the same key with another verdict",
            vec![
                del("p4", vec![p("10.2.0.1", "10.2.0.1", Udp, 53, 53)]),
                add(
                    "p4",
                    vec![element(p("10.2.0.1", "10.2.0.1", Udp, 53, 53), Return)],
                ),
            ],
            true,
        ),
    ];
    let ns = netns("batches");
    let kernel = NftKernel::in_netns(ns.name());
    let base = batch_base();
    let mut errors = Vec::new();
    for (label, ops, accepted) in &batches {
        kernel
            .commit(&Transaction::full(&base))
            .unwrap_or_else(|e| panic!("{label}: load: {e}"));
        let tx = Transaction { ops: ops.clone() };
        let committed = kernel.commit(&tx);
        let mut predicted = Some(base.clone());
        let prediction = tx.apply_to(&mut predicted);
        match (&committed, &prediction) {
            (Ok(()), Ok(())) => {
                let listed = kernel_table(&kernel);
                if Some(&listed) != predicted.as_ref() {
                    errors.push(format!(
                        "{label}: the kernel holds {listed:#?}\nnot {predicted:#?}"
                    ));
                }
            }
            (Err(KernelError::Rejected { .. }), Err(_)) => {}
            _ => errors.push(format!(
                "{label}: the kernel says {committed:?}, apply_to {prediction:?}\n{}",
                tx.render()
            )),
        }
        if committed.is_ok() != *accepted {
            errors.push(format!(
                "{label}: expected the kernel to {} it",
                if *accepted { "take" } else { "refuse" }
            ));
        }
    }
    // The one overlap the kernel lets through: with ports, an element that encloses another in
    // some field while its first and last points lie outside every element. The prediction refuses
    // it, since the kernel's lookup is then ambiguous.
    kernel.commit(&Transaction::full(&base)).expect("load");
    let around = Transaction {
        ops: vec![add(
            "p4",
            vec![element(p("10.1.2.0", "10.1.2.255", Tcp, 1, 100), Drop)],
        )],
    };
    assert!(
        kernel.commit(&around).is_ok(),
        "the kernel takes an enclosing element"
    );
    assert!(matches!(
        around.apply_to(&mut Some(base.clone())),
        Err(TxError::Overlap(..))
    ));
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
