//! The dataplane on the real kernel (root, in throwaway network namespaces): a diff applied on top of
//! a committed ruleset leaves exactly the state a fresh load of the new ruleset gives, for compiled
//! rulesets and for rulesets built around decision maps and named counters, and the same state as
//! on the fake kernel; the kernel refuses exactly the decision map and counter batches that
//! `Transaction::apply_to` predicts it refuses; and a named counter counts on, through a diff that
//! rewrites the chains counting into it, the packets the interpreter says cross it. (Rejected
//! transactions, full replaces and "no change, no nft call" are reconcile-loop scenarios:
//! `tests/agent.rs` on the fake kernel, `tests/agent_kernel.rs` on this one.)

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::Command;

use common::{kernel_available, netns, Netns};
use nftpolicy::dataplane::Dataplane;
use nftpolicy::kernel::{FakeKernel, Kernel, KernelError, NftKernel};
use policy_compiler::generate::{cluster, decisions, mutate, Rng, Shape};
use policy_compiler::model::Protocol;
use policy_compiler::nft::interp::{evaluate, Packet};
use policy_compiler::nft::json::{as_listed, canonical_listing, parse_counters, parse_table};
use policy_compiler::nft::transaction::{Op, Transaction, TxError};
use policy_compiler::nft::{
    BaseChain, Chain, Counter, CounterValue, Decision, DecisionKey, DecisionVerdict, Hook, Match,
    Rule, Ruleset, Verdict,
};
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
    // The fake kernel, given the same rulesets, must take the same transactions and end the same.
    let mut fake = Dataplane::new(FakeKernel::new());
    // Fresh loads go to a namespace of their own; each replaces the table whole.
    let fresh_ns = netns("fresh");
    let fresh = NftKernel::in_netns(fresh_ns.name());
    let mut rng = Rng::new(12);
    let mut seed = 0;
    let (mut partial, mut element_ops, mut redefined) = (0, 0, 0);
    let (mut counters_added, mut counters_deleted, mut counters_kept) = (0, 0, 0);
    for step in 0..80 {
        // Mostly a ruleset close to the last one (the next seed), sometimes one far away.
        seed = if rng.one_in(4) {
            rng.next_u64()
        } else {
            seed + 1
        };
        let desired = decisions::ruleset(seed);
        let before = dp.committed().cloned();
        let report = dp
            .apply(&desired)
            .unwrap_or_else(|e| panic!("step {step} (seed {seed}): {e}"));
        let on_fake = fake
            .apply(&desired)
            .unwrap_or_else(|e| panic!("step {step} (seed {seed}): the fake kernel: {e}"));
        assert_eq!(
            on_fake.transaction, report.transaction,
            "step {step} (seed {seed})"
        );
        assert_eq!(
            kernel_state(fake.kernel()),
            kernel_state(dp.kernel()),
            "step {step} (seed {seed}): the fake kernel differs from the kernel"
        );
        partial += usize::from(!report.full);
        if let (Some(before), false) = (&before, report.full) {
            counters_kept += before
                .counters
                .iter()
                .filter(|(n, c)| desired.counters.get(*n) == Some(*c))
                .count();
        }
        for op in &report.transaction.ops {
            match op {
                Op::AddDecisionElements(..) | Op::DeleteDecisionElements(..) => element_ops += 1,
                Op::AddCounter(..) if !report.full => counters_added += 1,
                Op::DeleteCounter(_) => counters_deleted += 1,
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
    assert!(
        counters_added >= 20 && counters_deleted >= 20 && counters_kept >= 100,
        "counters: {counters_added} added, {counters_deleted} deleted, {counters_kept} kept by diffs"
    );
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
        errors.extend(check_prediction(&kernel, &base, label, &tx, &committed));
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

/// A table with the named counters `a` (named by chain `c`) and `b` (named by nothing), and a set
/// named like `a`.
fn counter_base() -> Ruleset {
    let mut r = Ruleset::default();
    r.counters.insert(
        "a".into(),
        Counter {
            comment: Some("first".into()),
        },
    );
    r.counters.insert("b".into(), Counter { comment: None });
    r.sets.insert(
        "a".into(),
        policy_compiler::nft::Set {
            set_type: policy_compiler::nft::SetType::Addr(policy_compiler::Family::V4),
            comment: "named like a counter".into(),
            elements: Default::default(),
        },
    );
    r.chains.insert(
        "c".into(),
        Chain {
            base: None,
            rules: vec![counted_rule("a", Verdict::Drop)],
        },
    );
    r
}

fn counted_rule(counter: &str, verdict: Verdict) -> Rule {
    Rule {
        matches: vec![Match::Counter(counter.into())],
        verdict,
        comment: None,
    }
}

#[test]
fn the_kernel_refuses_the_counter_batches_apply_to_refuses() {
    if !kernel_available("the_kernel_refuses_the_counter_batches_apply_to_refuses") {
        return;
    }
    let comment = |c: &str| Counter {
        comment: Some(c.into()),
    };
    let limited = |rate, burst| Rule {
        matches: vec![Match::Limit { rate, burst }],
        verdict: Verdict::Continue,
        comment: None,
    };
    let batches: Vec<(&str, Vec<Op>, bool)> = vec![
        (
            "a rule naming a missing counter",
            vec![Op::AddRule("c".into(), counted_rule("x", Verdict::Accept))],
            false,
        ),
        (
            "delete a counter a rule names",
            vec![Op::DeleteCounter("a".into())],
            false,
        ),
        (
            "delete a missing counter",
            vec![Op::DeleteCounter("x".into())],
            false,
        ),
        (
            "delete a counter nothing names",
            vec![Op::DeleteCounter("b".into())],
            true,
        ),
        (
            "add an existing counter with another comment: nothing changes",
            vec![Op::AddCounter("a".into(), comment("second"))],
            true,
        ),
        (
            "flush, delete, add with another comment, refill",
            vec![
                Op::FlushChain("c".into()),
                Op::DeleteCounter("a".into()),
                Op::AddCounter("a".into(), comment("second")),
                Op::AddRule("c".into(), counted_rule("a", Verdict::Drop)),
            ],
            true,
        ),
        (
            "add a counter, and a rule naming it",
            vec![
                Op::AddCounter("x".into(), Counter::default()),
                Op::AddRule("c".into(), counted_rule("x", Verdict::Continue)),
            ],
            true,
        ),
        (
            "delete a counter, then name it",
            vec![
                Op::DeleteCounter("b".into()),
                Op::AddRule("c".into(), counted_rule("b", Verdict::Accept)),
            ],
            false,
        ),
        (
            "a counter named like a chain",
            vec![Op::AddCounter("c".into(), comment("c"))],
            true,
        ),
        (
            "a limit and a log",
            vec![Op::AddRule(
                "c".into(),
                Rule {
                    matches: vec![
                        Match::Limit {
                            rate: 10,
                            burst: 20,
                        },
                        Match::Log {
                            group: 7,
                            prefix: "a".into(),
                        },
                    ],
                    verdict: Verdict::Continue,
                    comment: None,
                },
            )],
            true,
        ),
        (
            "a limit of 0 a second",
            vec![Op::AddRule("c".into(), limited(0, 1))],
            false,
        ),
        (
            "a limit with a burst of 0",
            vec![Op::AddRule("c".into(), limited(1, 0))],
            false,
        ),
    ];
    let ns = netns("counter-batches");
    let kernel = NftKernel::in_netns(ns.name());
    let fake = FakeKernel::new();
    let base = counter_base();
    let mut errors = Vec::new();
    for (label, ops, accepted) in &batches {
        for k in [&kernel as &dyn Kernel, &fake] {
            k.commit(&Transaction::full(&base))
                .unwrap_or_else(|e| panic!("{label}: load: {e}"));
        }
        let tx = Transaction { ops: ops.clone() };
        let committed = kernel.commit(&tx);
        errors.extend(check_prediction(&kernel, &base, label, &tx, &committed));
        if fake.commit(&tx).is_ok() != committed.is_ok() {
            errors.push(format!("{label}: the fake kernel disagrees"));
        }
        if committed.is_ok() != *accepted {
            errors.push(format!(
                "{label}: expected the kernel to {} it",
                if *accepted { "take" } else { "refuse" }
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Whether the kernel did with `tx` (on `base`) what `apply_to` predicts: took it and holds the
/// predicted table, or refused it as the prediction does; the disagreement, if any.
fn check_prediction(
    kernel: &NftKernel,
    base: &Ruleset,
    label: &str,
    tx: &Transaction,
    committed: &Result<(), KernelError>,
) -> Option<String> {
    let mut predicted = Some(base.clone());
    let prediction = tx.apply_to(&mut predicted);
    match (committed, &prediction) {
        (Ok(()), Ok(())) => {
            let listed = kernel_table(kernel);
            (Some(&listed) != predicted.as_ref())
                .then(|| format!("{label}: the kernel holds {listed:#?}\nnot {predicted:#?}"))
        }
        (Err(KernelError::Rejected { .. }), Err(_)) => None,
        _ => Some(format!(
            "{label}: the kernel says {committed:?}, apply_to {prediction:?}\n{}",
            tx.render()
        )),
    }
}

/// `nft -j list counters table inet nftpolicy` in the namespace, parsed; the netlink dump of the
/// counters (`Kernel::counter_values`) reads the same.
fn kernel_counters(ns: &Netns) -> BTreeMap<String, CounterValue> {
    let kernel = NftKernel::in_netns(ns.name());
    let json = kernel
        .list_counters()
        .expect("list the counters")
        .expect("a table");
    let listed = parse_counters(&json).expect("the counters parse");
    assert_eq!(
        kernel
            .counter_values()
            .expect("the netlink dump of the counters"),
        listed,
        "the netlink dump reads what nft lists"
    );
    listed
}

/// The counters of the fake kernel, as it lists them.
fn fake_counters(kernel: &FakeKernel) -> BTreeMap<String, CounterValue> {
    let json = kernel.list_counters().expect("list").expect("a table");
    parse_counters(&json).expect("the counters parse")
}

/// A node's table for loopback traffic: on the input hook, UDP counted into `probe` (by a rule
/// without verdict), then every packet into `input_all`, which the last rule accepts.
fn loopback_ruleset(probe_comment: &str) -> Ruleset {
    let mut r = Ruleset::default();
    r.counters.insert(
        "probe".into(),
        Counter {
            comment: Some(probe_comment.into()),
        },
    );
    r.counters.insert("input_all".into(), Counter::default());
    r.chains.insert(
        "node".into(),
        Chain {
            base: Some(BaseChain {
                hook: Hook::Input,
                priority: 0,
            }),
            rules: vec![
                Rule {
                    matches: vec![
                        Match::L4Proto(Protocol::Udp),
                        Match::Counter("probe".into()),
                    ],
                    verdict: Verdict::Continue,
                    comment: Some("udp".into()),
                },
                counted_rule("input_all", Verdict::Accept),
            ],
        },
    );
    r
}

/// Sends `count` UDP datagrams of `payload` bytes from and to the namespace's loopback, to a port
/// bound there (so that no ICMP error comes back).
fn send_datagrams(ns: &Netns, count: usize, payload: usize) -> u16 {
    let file = policylab::lab::netns::open(ns.name()).expect("open the namespace");
    policylab::lab::netns::run_in(&file, ns.name(), || {
        let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = receiver.local_addr().expect("address").port();
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = vec![0u8; payload + 1];
        for _ in 0..count {
            sender
                .send_to(&vec![7u8; payload], ("127.0.0.1", port))
                .expect("send");
            // Received: it went through the input hook.
            assert_eq!(receiver.recv(&mut buf).expect("receive"), payload);
        }
        port
    })
    .expect("run in the namespace")
}

#[test]
fn a_named_counter_counts_on_through_a_diff_that_rewrites_its_chain() {
    if !kernel_available("a_named_counter_counts_on_through_a_diff_that_rewrites_its_chain") {
        return;
    }
    let ns = netns("counting");
    let up = Command::new("ip")
        .args(["netns", "exec", ns.name(), "ip", "link", "set", "lo", "up"])
        .status()
        .expect("run ip");
    assert!(up.success(), "ip link set lo up");
    let mut dp = Dataplane::new(NftKernel::in_netns(ns.name()));
    let fake_kernel = FakeKernel::new();
    let mut fake = Dataplane::new(fake_kernel.clone());
    let (payload, bytes) = (12, 12 + 28);
    let mut expected: BTreeMap<String, CounterValue> = BTreeMap::new();
    // Sends datagrams on the kernel; counts what the interpreter says they cross on the fake
    // kernel and in `expected`.
    let traffic = |ruleset: &Ruleset, count: usize, expected: &mut BTreeMap<_, _>| {
        let port = send_datagrams(&ns, count, payload);
        let packet = Packet {
            src: "127.0.0.1".parse().expect("address"),
            dst: "127.0.0.1".parse().expect("address"),
            transport: Some((Protocol::Udp, port)),
            established: false,
            to_node: true,
        };
        let outcome = evaluate(ruleset, &packet).expect("evaluates");
        assert!(outcome.accepted);
        for name in &outcome.counters {
            assert!(fake_kernel.count(name, count as u64, (count * bytes) as u64));
            let value: &mut CounterValue = expected.entry(name.clone()).or_default();
            value.packets += count as u64;
            value.bytes += (count * bytes) as u64;
        }
    };
    let first = loopback_ruleset("udp to the node");
    assert!(dp.apply(&first).expect("load").full);
    fake.apply(&first).expect("load on the fake kernel");
    expected.insert("probe".into(), CounterValue::default());
    expected.insert("input_all".into(), CounterValue::default());
    traffic(&first, 5, &mut expected);
    assert_eq!(expected["probe"].packets, 5, "the interpreter counts UDP");
    assert_eq!(kernel_counters(&ns), expected);
    assert_eq!(fake_counters(&fake_kernel), expected);

    // The chain is rewritten: a rule in front, the counting rule's comment changed. The counters
    // stay, and count on.
    let mut rewritten = first.clone();
    let rules = &mut rewritten.chains.get_mut("node").expect("node").rules;
    rules[0].comment = Some("udp, rewritten".into());
    rules.insert(
        0,
        Rule {
            matches: vec![Match::Prefix {
                field: policy_compiler::nft::AddrField::Saddr,
                negated: false,
                cidr: "10.9.9.9/32".parse().expect("cidr"),
            }],
            verdict: Verdict::Drop,
            comment: None,
        },
    );
    let report = dp.apply(&rewritten).expect("diff");
    assert!(!report.full);
    assert!(
        report
            .transaction
            .ops
            .contains(&Op::FlushChain("node".into()))
            && !report
                .transaction
                .ops
                .iter()
                .any(|op| matches!(op, Op::AddCounter(..) | Op::DeleteCounter(_))),
        "{}",
        report.transaction.render()
    );
    fake.apply(&rewritten).expect("diff on the fake kernel");
    assert_eq!(
        kernel_counters(&ns),
        expected,
        "the rewrite kept the counts"
    );
    traffic(&rewritten, 3, &mut expected);
    assert_eq!(expected["probe"].packets, 8);
    assert_eq!(kernel_counters(&ns), expected);
    assert_eq!(fake_counters(&fake_kernel), expected);

    // A new comment on `probe`: deleted and added again, it starts from 0; `input_all` counts on.
    let mut recommented = rewritten.clone();
    recommented
        .counters
        .get_mut("probe")
        .expect("probe")
        .comment = Some("probes".into());
    let report = dp.apply(&recommented).expect("diff");
    assert!(!report.full);
    fake.apply(&recommented).expect("diff on the fake kernel");
    expected.insert("probe".into(), CounterValue::default());
    assert_eq!(kernel_counters(&ns), expected);
    assert_eq!(kernel_table(dp.kernel()), recommented);
    traffic(&recommented, 2, &mut expected);
    assert_eq!(expected["input_all"].packets, 10);
    assert_eq!(kernel_counters(&ns), expected);
    assert_eq!(fake_counters(&fake_kernel), expected);

    // A full replace starts every counter from 0.
    dp.force_full();
    fake.force_full();
    assert!(dp.apply(&recommented).expect("full").full);
    fake.apply(&recommented).expect("full on the fake kernel");
    let zero: BTreeMap<String, CounterValue> = expected
        .keys()
        .map(|n| (n.clone(), CounterValue::default()))
        .collect();
    assert_eq!(kernel_counters(&ns), zero);
    assert_eq!(fake_counters(&fake_kernel), zero);
}
