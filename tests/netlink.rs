//! Element-only transactions through netlink on the real kernel (root, in throwaway network
//! namespaces): from the same table in two namespaces, random element transactions committed
//! through `NftKernel::commit` (a netlink batch) in one and through `nft -f -` in the other leave
//! equal tables, equal to what `Transaction::apply_to` predicts, and are taken or refused alike; a
//! batch whose last op deletes a missing element changes nothing and is `KernelError::Rejected`,
//! naming the set and the errno.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use common::{kernel_available, netns};
use nftpolicy::dataplane::Dataplane;
use nftpolicy::kernel::{CommitPaths, Kernel, KernelError, NftKernel};
use policy_compiler::cidr::Family;
use policy_compiler::model::Protocol;
use policy_compiler::nft::json::parse_table;
use policy_compiler::nft::transaction::{Op, Transaction};
use policy_compiler::nft::{Chain, Ruleset, Set, SetElement, SetType, VerdictMap};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

const CHAINS: [&str; 3] = ["pod_a", "pod_b", "pod_c"];

/// Four sets (addresses and named ports, both families), two verdict maps and the chains their
/// elements jump to, with a few elements each.
fn base() -> Ruleset {
    let mut r = Ruleset::default();
    for chain in CHAINS {
        r.chains.insert(
            chain.into(),
            Chain {
                base: None,
                rules: Vec::new(),
            },
        );
    }
    let set = |set_type, elements: Vec<SetElement>| Set {
        set_type,
        comment: "peers".into(),
        elements: elements.into_iter().collect(),
    };
    r.sets.insert(
        "peers_v4".into(),
        set(
            SetType::Addr(Family::V4),
            vec![SetElement::Addr(ip("10.0.0.1"))],
        ),
    );
    r.sets.insert(
        "peers_v6".into(),
        set(
            SetType::Addr(Family::V6),
            vec![SetElement::Addr(ip("fd00::1"))],
        ),
    );
    r.sets.insert(
        "named_v4".into(),
        set(
            SetType::AddrProtoPort(Family::V4),
            vec![SetElement::AddrProtoPort(
                ip("10.0.0.1"),
                Protocol::Tcp,
                8080,
            )],
        ),
    );
    r.sets.insert(
        "named_v6".into(),
        set(
            SetType::AddrProtoPort(Family::V6),
            vec![SetElement::AddrProtoPort(ip("fd00::1"), Protocol::Udp, 53)],
        ),
    );
    r.maps.insert(
        "ingress_v4".into(),
        VerdictMap {
            family: Family::V4,
            elements: BTreeMap::from([(ip("10.0.0.1"), "pod_a".to_string())]),
        },
    );
    r.maps.insert(
        "ingress_v6".into(),
        VerdictMap {
            family: Family::V6,
            elements: BTreeMap::from([(ip("fd00::1"), "pod_b".to_string())]),
        },
    );
    r
}

/// One of few addresses of `family`, so that adds often meet existing elements.
fn address(rng: &mut fastrand::Rng, family: Family) -> IpAddr {
    let n = rng.u8(1..6);
    match family {
        Family::V4 => ip(&format!("10.0.0.{n}")),
        Family::V6 => ip(&format!("fd00::{n}")),
    }
}

fn element(rng: &mut fastrand::Rng, set_type: SetType) -> SetElement {
    match set_type {
        SetType::Addr(f) => SetElement::Addr(address(rng, f)),
        SetType::AddrProtoPort(f) => {
            let protocol = Protocol::ALL[rng.usize(..Protocol::ALL.len())];
            SetElement::AddrProtoPort(address(rng, f), protocol, [53, 80, 8080][rng.usize(..3)])
        }
    }
}

/// A random element op on `state`: adds (new and existing elements), deletes (mostly of existing
/// elements, now and then of a missing one), on every set and map.
fn random_op(rng: &mut fastrand::Rng, state: &Ruleset) -> Op {
    let count = rng.usize(1..4);
    if rng.bool() {
        let (name, set) = state
            .sets
            .iter()
            .nth(rng.usize(..state.sets.len()))
            .expect("a set");
        let present: Vec<SetElement> = set.elements.iter().copied().collect();
        if rng.bool() || present.is_empty() {
            let elements = (0..count).map(|_| element(rng, set.set_type)).collect();
            Op::AddElements(name.clone(), elements)
        } else {
            let mut elements: Vec<SetElement> = Vec::new();
            for _ in 0..count {
                let e = if rng.u8(..10) == 0 {
                    element(rng, set.set_type)
                } else {
                    present[rng.usize(..present.len())]
                };
                if !elements.contains(&e) {
                    elements.push(e);
                }
            }
            Op::DeleteElements(name.clone(), elements)
        }
    } else {
        let (name, map) = state
            .maps
            .iter()
            .nth(rng.usize(..state.maps.len()))
            .expect("a map");
        let present: Vec<IpAddr> = map.elements.keys().copied().collect();
        if rng.bool() || present.is_empty() {
            let elements = (0..count)
                .map(|_| {
                    let key = address(rng, map.family);
                    // Mostly the chain the key already jumps to (a no-op add), else any chain.
                    let chain = match map.elements.get(&key) {
                        Some(c) if rng.u8(..4) != 0 => c.clone(),
                        _ => CHAINS[rng.usize(..CHAINS.len())].to_string(),
                    };
                    (key, chain)
                })
                .collect();
            Op::AddMapElements(name.clone(), elements)
        } else {
            let mut keys: Vec<IpAddr> = Vec::new();
            for _ in 0..count {
                let k = if rng.u8(..10) == 0 {
                    address(rng, map.family)
                } else {
                    present[rng.usize(..present.len())]
                };
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            Op::DeleteMapElements(name.clone(), keys)
        }
    }
}

fn table(kernel: &NftKernel) -> Ruleset {
    let json = kernel
        .list_table()
        .expect("list")
        .expect("the table exists");
    parse_table(&json).expect("the listing parses")
}

#[test]
fn netlink_batches_do_what_nft_does_and_what_apply_to_predicts() {
    if !kernel_available("netlink_batches_do_what_nft_does_and_what_apply_to_predicts") {
        return;
    }
    let (ns_netlink, ns_nft) = (netns("netlink"), netns("nft"));
    let netlink = NftKernel::in_netns(ns_netlink.name());
    let nft = NftKernel::in_netns(ns_nft.name());
    let start = base();
    for kernel in [&netlink, &nft] {
        Dataplane::new(kernel.clone()).apply(&start).expect("load");
    }
    assert_eq!(table(&netlink), start, "the listing reads back the base");
    let loads = netlink.commit_paths();
    assert_eq!(loads.netlink, 0, "a full load goes through nft");

    let mut rng = fastrand::Rng::with_seed(20);
    let mut predicted = start;
    let (mut taken, mut refused) = (0, 0);
    for step in 0..120 {
        let ops = (0..rng.usize(1..4))
            .map(|_| random_op(&mut rng, &predicted))
            .collect();
        let tx = Transaction { ops };
        let mut next = Some(predicted.clone());
        let prediction = tx.apply_to(&mut next);
        let via_netlink = netlink.commit(&tx);
        let via_nft = nft.run_script(&tx.render());
        let label = format!("step {step}:\n{}", tx.render());
        match (&prediction, &via_netlink, &via_nft) {
            (Ok(()), Ok(()), Ok(())) => {
                taken += 1;
                predicted = next.expect("the table");
            }
            (Err(_), Err(KernelError::Rejected { .. }), Err(KernelError::Rejected { .. })) => {
                refused += 1;
            }
            _ => panic!(
                "{label}\napply_to: {prediction:?}\nnetlink: {via_netlink:?}\nnft: {via_nft:?}"
            ),
        }
        let (a, b) = (table(&netlink), table(&nft));
        assert_eq!(a, b, "{label}\nnetlink and nft tables differ");
        assert_eq!(
            a, predicted,
            "{label}\nthe kernel is not what apply_to predicts"
        );
    }
    assert!(
        taken > 60 && refused > 5,
        "{taken} taken, {refused} refused"
    );
    assert_eq!(
        netlink.commit_paths(),
        CommitPaths {
            netlink: 120,
            nft: loads.nft
        },
        "every element-only transaction went through netlink"
    );
}

#[test]
fn a_batch_deleting_a_missing_element_changes_nothing_and_is_rejected() {
    if !kernel_available("a_batch_deleting_a_missing_element_changes_nothing_and_is_rejected") {
        return;
    }
    let ns = netns("netlink-missing");
    let kernel = NftKernel::in_netns(ns.name());
    Dataplane::new(kernel.clone()).apply(&base()).expect("load");
    let before = table(&kernel);
    let tx = Transaction {
        ops: vec![
            Op::AddElements("peers_v4".into(), vec![SetElement::Addr(ip("10.0.0.7"))]),
            Op::AddMapElements("ingress_v4".into(), vec![(ip("10.0.0.7"), "pod_c".into())]),
            Op::DeleteMapElements("ingress_v6".into(), vec![ip("fd00::1")]),
            Op::DeleteElements(
                "named_v4".into(),
                vec![SetElement::AddrProtoPort(ip("10.0.0.9"), Protocol::Tcp, 80)],
            ),
        ],
    };
    let mut predicted = Some(before.clone());
    assert!(
        tx.apply_to(&mut predicted).is_err(),
        "apply_to refuses it too"
    );
    let error = kernel
        .commit(&tx)
        .expect_err("the delete of a missing element fails");
    let KernelError::Rejected { netns, message } = &error else {
        panic!("not a rejection: {error:?}");
    };
    assert_eq!(netns, &format!(" in netns {}", ns.name()));
    assert!(
        message.contains("delete element from set named_v4")
            && message.contains("No such file or directory")
            && !message.contains("peers_v4"),
        "{message}"
    );
    assert_eq!(kernel.commit_paths().netlink, 1);
    assert_eq!(table(&kernel), before, "nothing of the batch was applied");

    // The same batch without the failing op is taken: the rejection was that op's alone.
    let mut ok = tx.clone();
    ok.ops.pop();
    kernel.commit(&ok).expect("the rest applies");
    let mut predicted = Some(before);
    ok.apply_to(&mut predicted).expect("predicted");
    assert_eq!(Some(table(&kernel)), predicted);
}

#[test]
fn without_the_table_an_element_batch_is_rejected_and_counters_read_empty() {
    if !kernel_available("without_the_table_an_element_batch_is_rejected_and_counters_read_empty") {
        return;
    }
    let ns = netns("netlink-empty");
    let kernel = NftKernel::in_netns(ns.name());
    let tx = Transaction {
        ops: vec![Op::AddElements(
            "peers_v4".into(),
            vec![SetElement::Addr(ip("10.0.0.7"))],
        )],
    };
    let error = kernel.commit(&tx).expect_err("no table");
    assert!(matches!(error, KernelError::Rejected { .. }), "{error:?}");
    assert_eq!(kernel.list_table().expect("list"), None);
    assert_eq!(kernel.counter_values().expect("read"), BTreeMap::new());
    // A namespace that does not exist is not a rejection.
    let missing = NftKernel::in_netns("nftpolicy-no-such-namespace");
    let error = missing.commit(&tx).expect_err("no namespace");
    assert!(matches!(error, KernelError::Netlink { .. }), "{error:?}");
}
