//! The incremental compiler against the full one: random sequences of events on generated
//! clusters (pods added, removed, relabelled, moved, finished, readdressed onto another pod's
//! address; namespaces relabelled and removed; policies added, edited, removed, switched to audit;
//! ClusterNetworkPolicies and Nodes), and after every event (or burst of events) the incremental
//! ruleset renders byte for byte as a fresh `compile_node_with` of the cluster, with the same
//! counter origins, and the transaction it reports takes the previous ruleset exactly to it.

use std::net::IpAddr;

use policy_compiler::generate::cluster_policies::{self, with_cluster_policies};
use policy_compiler::generate::guardrails::with_guardrails;
use policy_compiler::generate::{cluster, mutate, workload, Rng, Shape, WorkloadSize};
use policy_compiler::model::{
    Action, ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, Direction, PodsSelector,
    PolicyPort, PortSpec, Protocol, Subject, Tier,
};
use policy_compiler::model::{Enforcement, Namespace, ObjectRef, Pod, PodPhase, Policy};
use policy_compiler::nft::transaction::Transaction;
use policy_compiler::object::{Kind, Object};
use policy_compiler::plan::{
    compile_node_with, policy_chain_name, CompileOptions, DenyLog, LiveNode, LiveStats, Origin,
};
use policy_compiler::selector::{LabelSelector, Labels, Requirement};
use policy_compiler::ClusterState;
use proptest::prelude::*;

const KINDS: [Kind; 5] = [
    Kind::Namespace,
    Kind::Pod,
    Kind::NetworkPolicy,
    Kind::ClusterNetworkPolicy,
    Kind::Node,
];

/// One random change beyond what [`mutate`] makes: a pod moved to the other node, finished,
/// readdressed (sometimes onto another pod's address), a policy switched between enforce and audit,
/// a namespace removed, a ClusterNetworkPolicy or Node added or removed, a ClusterNetworkPolicy
/// moved in the evaluation order (priority, a rule more or fewer), a ClusterNetworkPolicy's
/// rules edited in place (ports, peers, Accept against Deny, names).
fn mutate_more(c: &ClusterState, seed: u64, with_tiers: bool) -> ClusterState {
    let mut rng = Rng::new(seed);
    let mut next = c.clone();
    let pods: Vec<ObjectRef> = next.pods().keys().cloned().collect();
    let policies: Vec<ObjectRef> = next.policies().keys().cloned().collect();
    match rng.below(if with_tiers { 12 } else { 5 }) {
        0 if !pods.is_empty() => {
            let id = rng.pick(&pods).clone();
            if let Some(p) = next.pod_mut(&id) {
                p.node = Some(
                    if p.node.as_deref() == Some("n0") {
                        "n1"
                    } else {
                        "n0"
                    }
                    .into(),
                );
            }
        }
        1 if !pods.is_empty() => {
            let id = rng.pick(&pods).clone();
            if let Some(p) = next.pod_mut(&id) {
                p.phase = match p.phase {
                    PodPhase::Active => PodPhase::Finished,
                    PodPhase::Finished => PodPhase::Active,
                };
            }
        }
        2 if pods.len() > 1 => {
            let id = rng.pick(&pods).clone();
            let other = rng.pick(&pods).clone();
            let taken = |ip: &IpAddr| c.pods().values().any(|p| p.ips.contains(ip));
            let ip: IpAddr = match c.pod(&other).and_then(|p| p.ips.first().copied()) {
                Some(ip) if rng.one_in(2) => ip,
                _ => (0..=250u8)
                    .map(|n| IpAddr::from([10, 0, 7, n.wrapping_add(rng.below(250) as u8)]))
                    .find(|ip| !taken(ip))
                    .unwrap_or(IpAddr::from([10, 0, 8, 1])),
            };
            if let Some(p) = next.pod_mut(&id) {
                if !p.host_network {
                    p.ips = vec![ip];
                }
            }
        }
        3 if !policies.is_empty() => {
            let id = rng.pick(&policies).clone();
            if let Some(p) = c.policies().get(&id) {
                let mut p = p.clone();
                p.enforcement = match p.enforcement {
                    Enforcement::Enforce => Enforcement::Audit,
                    Enforcement::Audit => Enforcement::Enforce,
                };
                next.upsert_policy(p);
            }
        }
        4 => {
            let ns = *rng.pick(&["a", "b", "c"]);
            next.remove_namespace(ns);
        }
        5 | 6 => {
            let count = c.cluster_policies().len();
            let name = format!("cnp{}", rng.below(count + 2));
            if let Some(p) = c.cluster_policy(&name).filter(|_| rng.one_in(3)) {
                // Moved in the evaluation order: another priority, a rule more or fewer.
                let mut p = p.clone();
                match rng.below(3) {
                    0 => p.priority = rng.below(40) as u16,
                    1 => {
                        let rules = if rng.one_in(2) {
                            &mut p.ingress
                        } else {
                            &mut p.egress
                        };
                        if let Some(rule) = rules.first().cloned() {
                            rules.insert(rng.below(rules.len() + 1), rule);
                        }
                    }
                    _ => {
                        p.ingress.pop();
                    }
                }
                next.upsert_cluster_policy(p);
            } else if c.cluster_policy(&name).is_some() && rng.one_in(2) {
                next.remove_cluster_policy(&name);
            } else {
                let extra = with_cluster_policies(&ClusterState::new(), rng.next_u64(), 3, 2);
                if let Some(p) = extra.cluster_policies().values().next() {
                    let mut p = p.clone();
                    p.name = name;
                    next.upsert_cluster_policy(p);
                }
            }
        }
        7..=10 => {
            // A ClusterNetworkPolicy edited in place: its rules' ports alone, their peers alone,
            // its subject alone (a quarter of the time each), or its subject (half of those
            // times), its rules' ports, peers, Accept against Deny and names.
            let names: Vec<String> = c.cluster_policies().keys().cloned().collect();
            if names.is_empty() {
                return next;
            }
            let name = rng.pick(&names).clone();
            let Some(mut p) = c.cluster_policy(&name).cloned() else {
                return next;
            };
            let mode = rng.below(8) / 2;
            if mode == 3 || (mode == 2 && rng.one_in(2)) {
                p.subject = cluster_policies::subject(&mut rng);
                if mode == 3 {
                    next.upsert_cluster_policy(p);
                    return next;
                }
            }
            let directions = [Direction::Ingress, Direction::Egress];
            for (direction, rules) in directions.into_iter().zip([&mut p.ingress, &mut p.egress]) {
                for rule in rules.iter_mut() {
                    if rng.one_in(2) {
                        continue;
                    }
                    if mode == 1 || (mode == 2 && rng.one_in(3)) {
                        rule.peers = (0..1 + rng.below(2))
                            .map(|_| cluster_policies::peer(&mut rng, direction))
                            .collect();
                        continue;
                    }
                    edit_rule(&mut rng, rule, mode == 0);
                }
            }
            next.upsert_cluster_policy(p);
        }
        _ => {
            let nodes: Vec<String> = c.node_objects().keys().cloned().collect();
            if let Some(name) = nodes.first() {
                next.remove_node(name);
            }
        }
    }
    next
}

/// Edits a ClusterNetworkPolicy rule's ports (`ports_alone`), or its ports, action or name.
fn edit_rule(rng: &mut Rng, rule: &mut ClusterRule, ports_alone: bool) {
    match rng.below(if ports_alone { 2 } else { 4 }) {
        0 => rule.protocols.clear(),
        1 => {
            let first = 1 + rng.below(2000) as u16;
            rule.protocols = vec![ClusterPort::Range {
                protocol: *rng.pick(&[Protocol::Tcp, Protocol::Udp]),
                first,
                last: first + rng.below(3) as u16,
            }];
        }
        2 => {
            rule.action = match rule.action {
                Action::Accept => Action::Deny,
                Action::Deny => Action::Accept,
                Action::Pass => Action::Pass,
            };
        }
        _ => rule.name = Some(format!("edited-{}", rng.below(100))),
    }
}

/// The keys whose object differs between two clusters, kind by kind.
fn changes(before: &ClusterState, after: &ClusterState) -> Vec<(Kind, ObjectRef)> {
    let mut out = Vec::new();
    for kind in KINDS {
        let mut keys = before.keys(kind);
        keys.extend(after.keys(kind));
        keys.sort();
        keys.dedup();
        for key in keys {
            if before.get(kind, &key) != after.get(kind, &key) {
                out.push((kind, key));
            }
        }
    }
    out
}

/// Brings `state` to `target`'s version of one object; returns the object's previous version.
fn apply(
    state: &mut ClusterState,
    target: &ClusterState,
    kind: Kind,
    key: &ObjectRef,
) -> Option<Object> {
    let old = state.get(kind, key);
    match target.get(kind, key) {
        Some(object) => state.upsert(object),
        None => {
            state.remove(kind, key);
        }
    }
    old
}

fn options(choice: u8) -> CompileOptions {
    match choice % 3 {
        0 => CompileOptions::default(),
        1 => CompileOptions {
            deny_log: Some(DenyLog::DEFAULT),
            audit_all: false,
        },
        _ => CompileOptions {
            deny_log: None,
            audit_all: true,
        },
    }
}

fn check(
    live: &mut LiveNode,
    state: &ClusterState,
    committed: &mut policy_compiler::nft::Ruleset,
) -> LiveStats {
    let (touched, stats) = live.flush(state);
    let expected = compile_node_with(state, live.node(), live.options());
    assert_eq!(
        live.ruleset().render(),
        expected.ruleset.render(),
        "the incremental ruleset differs from a full compile"
    );
    assert_eq!(live.origins(), &expected.origins, "counter origins differ");
    let tx = match &touched {
        Some(t) => Transaction::diff_touched(committed, live.ruleset(), t),
        None => Transaction::full(live.ruleset()),
    };
    let mut state_after = Some(committed.clone());
    tx.apply_to(&mut state_after)
        .unwrap_or_else(|e| panic!("the transaction does not apply: {e}\n{}", tx.render()));
    assert_eq!(
        state_after.as_ref(),
        Some(live.ruleset()),
        "the transaction does not lead to the new ruleset:\n{}",
        tx.render()
    );
    *committed = live.ruleset().clone();
    stats
}

fn run(seed: u64, pods: usize, policies: usize, steps: usize, choice: u8, with_tiers: bool) {
    let options = options(choice);
    let mut state = cluster(
        seed,
        Shape {
            pods,
            policies,
            nodes: 2,
        },
    );
    if with_tiers {
        state = with_cluster_policies(&state, seed, 2, 2);
    }
    let node = "n0";
    let mut live = LiveNode::new(&state, node, options);
    let mut committed = policy_compiler::nft::Ruleset::default();
    check(&mut live, &state, &mut committed);
    let mut rng = Rng::new(seed ^ 0x11fe);
    for _ in 0..steps {
        let target = if rng.one_in(3) {
            mutate_more(&state, rng.next_u64(), with_tiers)
        } else {
            mutate(&state, rng.next_u64())
        };
        // Mostly one flush per event; sometimes a burst flushed once.
        let burst = rng.one_in(4);
        for (kind, key) in changes(&state, &target) {
            let old = apply(&mut state, &target, kind, &key);
            live.changed(&state, kind, &key, old.as_ref());
            if !burst {
                check(&mut live, &state, &mut committed);
            }
        }
        if burst {
            check(&mut live, &state, &mut committed);
        }
    }
}

/// Without ClusterNetworkPolicies the node's own part changes piece by piece: a pod added beside
/// one of the node's isolated pods renders nothing (its groups and policies are rendered
/// already), a policy edited renders that policy's rules again and nothing else, and neither
/// renders the local part in full.
/// A policy with ingress rules whose ingress chain the node's ruleset holds.
fn enforced_ingress_policy(state: &ClusterState, live: &LiveNode) -> Option<Policy> {
    state
        .policies()
        .values()
        .find(|p| {
            !p.ingress.is_empty()
                && live
                    .ruleset()
                    .chains
                    .contains_key(&policy_chain_name(&p.id, Direction::Ingress))
        })
        .cloned()
}

/// Edits `policy`'s first ingress rule to port 8443/TCP alone, flushes and checks against a full
/// compile; returns what the flush did.
fn edit_ingress_ports(
    state: &mut ClusterState,
    live: &mut LiveNode,
    committed: &mut policy_compiler::nft::Ruleset,
    policy: &Policy,
) -> LiveStats {
    let mut edited = policy.clone();
    edited.ingress[0].ports = vec![PolicyPort {
        protocol: Protocol::Tcp,
        port: PortSpec::Range(8443, 8443),
    }];
    let old = state
        .policies()
        .get(&policy.id)
        .cloned()
        .map(Object::Policy);
    state.upsert_policy(edited);
    live.changed(state, Kind::NetworkPolicy, &policy.id, old.as_ref());
    check(live, state, committed)
}

#[test]
fn local_events_render_only_their_pieces() {
    let mut state = cluster(
        7,
        Shape {
            pods: 60,
            policies: 16,
            nodes: 2,
        },
    );
    let mut live = LiveNode::new(&state, "n0", CompileOptions::default());
    let mut committed = policy_compiler::nft::Ruleset::default();
    check(&mut live, &state, &mut committed);
    let policy = enforced_ingress_policy(&state, &live).expect("a policy enforced on n0");
    let template = state
        .pods()
        .values()
        .find(|p| {
            p.node.as_deref() == Some("n0")
                && p.participates()
                && p.id.namespace == policy.id.namespace
                && policy.pod_selector.matches(&p.labels)
        })
        .expect("a pod of n0 the policy selects")
        .clone();
    let mut added = template.clone();
    added.id = ObjectRef::new(template.id.namespace.clone(), "added-beside");
    added.ips = vec![IpAddr::from([10, 99, 0, 1])];
    state.upsert_pod(added.clone());
    live.changed(&state, Kind::Pod, &added.id, None);
    let stats = check(&mut live, &state, &mut committed);
    assert!(!stats.rendered, "a pod add rendered the local part in full");
    assert_eq!(
        stats.pieces, 0,
        "a pod joining existing groups renders nothing"
    );

    let stats = edit_ingress_ports(&mut state, &mut live, &mut committed, &policy);
    assert!(
        !stats.rendered,
        "a policy edit rendered the local part in full"
    );
    assert!(
        (1..=2).contains(&stats.pieces),
        "a policy edit renders that policy's rules (one part per direction), rendered {}",
        stats.pieces
    );
}

/// With ClusterNetworkPolicies the node's own part changes piece by piece too: a pod added beside
/// one of the node's tier subjects renders neither the NetworkPolicy part nor the tiers in full
/// (only the tiers' subjects and the class chains of its peers, over the classes of the last
/// render), and neither does a policy edit, which renders that policy's rules again.
#[test]
fn local_events_with_tiers_render_only_their_pieces() {
    let node = "node-0";
    let mut state = with_guardrails(&workload(3, WorkloadSize::SMALL), 7, 10, 2);
    let mut live = LiveNode::new(&state, node, CompileOptions::default());
    let mut committed = policy_compiler::nft::Ruleset::default();
    check(&mut live, &state, &mut committed);
    let subjects: Vec<IpAddr> = live
        .ruleset()
        .sets
        .iter()
        .filter(|(name, _)| name.contains("_subjects_"))
        .flat_map(|(_, set)| &set.elements)
        .map(|e| match *e {
            policy_compiler::nft::SetElement::Addr(ip)
            | policy_compiler::nft::SetElement::AddrProtoPort(ip, _, _) => ip,
        })
        .collect();
    let template = state
        .pods()
        .values()
        .find(|p| {
            p.node.as_deref() == Some(node)
                && p.participates()
                && p.ips.iter().any(|ip| subjects.contains(ip))
        })
        .expect("a tier subject on the node")
        .clone();
    let IpAddr::V4(first) = template.ips[0] else {
        panic!("an IPv4 pod");
    };
    let held = |ip: &IpAddr| state.pods().values().any(|p| p.ips.contains(ip));
    let free = (1..=250u32)
        .map(|k| IpAddr::from(std::net::Ipv4Addr::from(u32::from(first) + k)))
        .find(|ip| !held(ip))
        .expect("a free address near the template");
    let mut added = template.clone();
    added.id = ObjectRef::new(template.id.namespace.clone(), "added-beside");
    added.ips = vec![free];
    state.upsert_pod(added.clone());
    live.changed(&state, Kind::Pod, &added.id, None);
    let stats = check(&mut live, &state, &mut committed);
    assert!(!stats.rendered, "a pod add rendered the local part in full");
    assert!(
        !stats.tiers_rendered,
        "a pod add rendered the tiers in full"
    );
    assert!(
        stats.tier_pieces > 0,
        "the pod joins the tiers' subjects and its classes' decision maps"
    );
    let old = state.remove_pod(&added.id).map(Object::Pod);
    live.changed(&state, Kind::Pod, &added.id, old.as_ref());
    let stats = check(&mut live, &state, &mut committed);
    assert!(!stats.rendered && !stats.tiers_rendered);

    let policy = enforced_ingress_policy(&state, &live).expect("a policy enforced on the node");
    let stats = edit_ingress_ports(&mut state, &mut live, &mut committed, &policy);
    assert!(
        !stats.rendered && !stats.tiers_rendered,
        "a policy edit rendered the local part or the tiers in full"
    );
    assert!(
        (1..=2).contains(&stats.pieces),
        "a policy edit renders that policy's rules (one part per direction), rendered {}",
        stats.pieces
    );
}

/// An Admin ClusterNetworkPolicy with ingress rules that judges some pod of `live`'s node (its
/// rules have counters there).
fn admin_policy_judging_the_node(state: &ClusterState, live: &LiveNode) -> ClusterNetworkPolicy {
    let judging: Vec<&str> = live
        .origins()
        .values()
        .filter_map(|o| match o {
            Origin::ClusterRule { policy, .. } => Some(policy.as_str()),
            _ => None,
        })
        .collect();
    state
        .cluster_policies()
        .values()
        .find(|p| {
            p.tier == Tier::Admin && !p.ingress.is_empty() && judging.contains(&p.name.as_str())
        })
        .expect("an Admin policy with ingress rules judging a pod of the node")
        .clone()
}

/// Puts `policy` into `state` as the ClusterNetworkPolicy `name` (`None`: removes it), tells
/// `live`, and checks its flush (see [`check`]).
fn set_cluster_policy(
    (state, live, committed): (
        &mut ClusterState,
        &mut LiveNode,
        &mut policy_compiler::nft::Ruleset,
    ),
    name: &str,
    policy: Option<ClusterNetworkPolicy>,
) -> LiveStats {
    let key = ObjectRef::new("", name);
    let old = state
        .cluster_policy(name)
        .cloned()
        .map(Object::ClusterPolicy);
    match policy {
        Some(p) => state.upsert_cluster_policy(p),
        None => {
            state.remove_cluster_policy(name);
        }
    }
    live.changed(state, Kind::ClusterNetworkPolicy, &key, old.as_ref());
    check(live, state, committed)
}

/// A ClusterNetworkPolicy edit of ports, actions, names, peers or its subject renders neither the
/// tiers nor the NetworkPolicy part in full; one that adds a tier to the base chains (the first Baseline policy)
/// renders it all again.
#[test]
fn a_cluster_network_policy_edit_renders_the_tiers_alone() {
    let node = "node-0";
    let mut state = with_guardrails(&workload(3, WorkloadSize::SMALL), 7, 10, 2);
    // The Admin tier alone, so that a Baseline policy adds to the base chains.
    let baselines: Vec<String> = state
        .cluster_policies()
        .values()
        .filter(|p| p.tier == Tier::Baseline)
        .map(|p| p.name.clone())
        .collect();
    for name in baselines {
        state.remove_cluster_policy(&name);
    }
    let mut live = LiveNode::new(&state, node, CompileOptions::default());
    let mut committed = policy_compiler::nft::Ruleset::default();
    check(&mut live, &state, &mut committed);
    let policy = admin_policy_judging_the_node(&state, &live);
    let mut edit = |state: &mut ClusterState, live: &mut LiveNode, edited: ClusterNetworkPolicy| {
        let name = edited.name.clone();
        set_cluster_policy((state, live, &mut committed), &name, Some(edited))
    };

    // Its first ingress rule narrowed to one port, then turned from Accept to Deny or back, and
    // renamed: the peer classes stay, and only what its rules decide is rendered again.
    let mut narrowed = policy.clone();
    narrowed.ingress[0].protocols = vec![ClusterPort::Range {
        protocol: Protocol::Tcp,
        first: 8443,
        last: 8443,
    }];
    let stats = edit(&mut state, &mut live, narrowed.clone());
    assert!(
        !stats.rendered && !stats.tiers_rendered,
        "a ports edit rendered the local part or the tiers in full"
    );
    assert!(
        stats.tier_pieces > 0,
        "a ports edit renders its rules' chains again"
    );
    let mut flipped = narrowed.clone();
    for rule in &mut flipped.ingress {
        rule.action = match rule.action {
            Action::Accept => Action::Deny,
            Action::Deny => Action::Accept,
            Action::Pass => Action::Pass,
        };
        rule.name = Some(format!("{}-edited", rule.name.clone().unwrap_or_default()));
    }
    let stats = edit(&mut state, &mut live, flipped);
    assert!(
        !stats.rendered && !stats.tiers_rendered,
        "an action or name edit rendered the local part or the tiers in full"
    );

    // Its first ingress rule's peers replaced by a network, by every namespace, and given back:
    // the rule's region changes, and only the addresses its old and new peers disagree on move
    // in the peers maps, neither the tiers nor the local part rendered in full.
    let peers = narrowed.ingress[0].peers.clone();
    let replacements = [
        vec![ClusterPeer::Networks(vec!["10.99.0.0/16"
            .parse()
            .expect("a CIDR")])],
        vec![ClusterPeer::Namespaces(LabelSelector::everything())],
        peers,
    ];
    for replaced in replacements {
        let mut moved = narrowed.clone();
        moved.ingress[0].peers = replaced;
        let stats = edit(&mut state, &mut live, moved);
        assert!(
            !stats.rendered && !stats.tiers_rendered,
            "a peers edit rendered the local part or the tiers in full"
        );
        assert!(
            stats.element_changes > 0,
            "a peers edit changed no element of the peers maps"
        );
    }

    // Its subject written another way (the pods of the same namespaces, by a pod selector that
    // selects every pod): the node's pods are planned again, none moves, and nothing is rendered
    // in full. (Subjects that move pods are in the property tests.)
    let rewritten = match &narrowed.subject {
        Subject::Namespaces(namespaces) => Subject::Pods(PodsSelector {
            namespaces: namespaces.clone(),
            pods: LabelSelector::everything(),
        }),
        Subject::Pods(selector) => Subject::Pods(PodsSelector {
            namespaces: selector.namespaces.clone(),
            pods: LabelSelector::new(
                selector
                    .pods
                    .requirements()
                    .iter()
                    .chain(selector.pods.requirements())
                    .cloned()
                    .collect(),
            ),
        }),
    };
    for replaced in [rewritten, narrowed.subject.clone()] {
        let mut moved = narrowed.clone();
        moved.subject = replaced;
        let stats = edit(&mut state, &mut live, moved);
        assert!(
            !stats.rendered && !stats.tiers_rendered,
            "a subject edit rendered the local part or the tiers in full: {stats:?}"
        );
    }

    // The first Baseline policy: the base chains dispatch to the Baseline tier now, so the
    // local part is rendered again.
    let mut baseline = policy.clone();
    baseline.name = "added-baseline".into();
    baseline.tier = Tier::Baseline;
    let stats = edit(&mut state, &mut live, baseline);
    assert!(
        stats.rendered,
        "a policy that adds a tier to the base chains did not render the local part"
    );
}

/// A ClusterNetworkPolicy that judges pods of the node and comes, moves in the evaluation order
/// (another priority, a rule more), stops and starts judging them (its subject edited) and goes,
/// renders neither the tiers nor the NetworkPolicy part in full: its rules enter and leave the
/// tiers' universe, and only the addresses its peers hold move in the peers maps.
#[test]
fn a_cluster_network_policy_entering_and_leaving_renders_the_tiers_alone() {
    let node = "node-0";
    let mut state = with_guardrails(&workload(3, WorkloadSize::SMALL), 7, 10, 2);
    let mut live = LiveNode::new(&state, node, CompileOptions::default());
    let mut committed = policy_compiler::nft::Ruleset::default();
    check(&mut live, &state, &mut committed);
    let template = admin_policy_judging_the_node(&state, &live);
    let mut copy = template.clone();
    copy.name = "aaa-copy".into();
    copy.priority = 0;
    let key = ObjectRef::new("", &copy.name);
    let mut step = |state: &mut ClusterState, policy: Option<ClusterNetworkPolicy>, what: &str| {
        let stats = set_cluster_policy((state, &mut live, &mut committed), &key.name, policy);
        assert!(
            !stats.rendered && !stats.tiers_rendered,
            "{what} rendered the local part or the tiers in full: {stats:?}"
        );
        assert!(stats.tier_pieces > 0, "{what} rendered no rule chain");
        assert!(
            live.origins().values().any(|o| matches!(
                o,
                Origin::ClusterRule { policy, .. } if policy.as_str() == &*key.name
            )) == state
                .cluster_policy(&key.name)
                .is_some_and(|p| p.subject == copy.subject),
            "{what}: its rules' counters are not those of a policy judging pods of the node"
        );
        stats
    };
    // First in evaluation order, with the template's peers: every address those hold moves to
    // a class with its rules.
    let stats = step(&mut state, Some(copy.clone()), "its arrival");
    assert!(
        stats.element_changes > 0,
        "its arrival moved no peers-map element"
    );
    let mut later = copy.clone();
    later.priority = 999;
    step(&mut state, Some(later.clone()), "its move to the end");
    let mut longer = later.clone();
    longer.ingress.insert(0, longer.ingress[0].clone());
    step(&mut state, Some(longer.clone()), "a rule more");
    // Its subject edited to hold no pod of the node, and back: it leaves and enters.
    let mut nowhere = longer.clone();
    nowhere.subject = Subject::Pods(PodsSelector {
        namespaces: LabelSelector::everything(),
        pods: LabelSelector::new(vec![Requirement::In(
            "app".into(),
            vec!["runs-on-no-node".into()],
        )]),
    });
    step(
        &mut state,
        Some(nowhere),
        "its subject holding no pod of the node",
    );
    step(&mut state, Some(longer), "its subject back");
    step(&mut state, None, "its removal");
}

/// A peer class that decided nothing for the node's pods and starts deciding something when a
/// pod of the node is relabelled gets its chain, and its addresses their peers-map elements,
/// without a full render: a Pass of one policy shadows a Deny of another for the network both
/// name while every pod the second judges is judged by the first, until a pod only the second
/// judges comes.
#[test]
fn a_peer_class_that_starts_deciding_renders_the_tiers_alone() {
    let node = "node-0";
    let mut state = workload(3, WorkloadSize::SMALL);
    let local: Vec<Pod> = state
        .pods()
        .values()
        .filter(|p| p.node.as_deref() == Some(node) && p.participates() && !p.host_network)
        .cloned()
        .collect();
    let first = local.first().expect("a pod of the node").clone();
    let other = local
        .iter()
        .find(|p| p.id.namespace != first.id.namespace)
        .expect("a pod of the node in another namespace")
        .clone();
    let marked = |namespaces: LabelSelector| {
        Subject::Pods(PodsSelector {
            namespaces,
            pods: LabelSelector::new(vec![Requirement::In("judged".into(), vec!["yes".into()])]),
        })
    };
    let rule = |action: Action| ClusterRule {
        name: None,
        action,
        peers: vec![ClusterPeer::Networks(vec!["192.0.2.0/24"
            .parse()
            .expect("a CIDR")])],
        protocols: Vec::new(),
    };
    let namespace_of = |pod: &Pod| {
        LabelSelector::new(vec![Requirement::In(
            "kubernetes.io/metadata.name".into(),
            vec![pod.id.namespace.to_string()],
        )])
    };
    state.upsert_cluster_policy(ClusterNetworkPolicy {
        name: "passes".into(),
        tier: Tier::Admin,
        priority: 1,
        subject: marked(namespace_of(&first)),
        ingress: Vec::new(),
        egress: vec![rule(Action::Pass)],
    });
    state.upsert_cluster_policy(ClusterNetworkPolicy {
        name: "denies".into(),
        tier: Tier::Admin,
        priority: 2,
        subject: marked(LabelSelector::everything()),
        ingress: Vec::new(),
        egress: vec![rule(Action::Deny)],
    });
    let mut judged = first.clone();
    judged.labels.insert("judged", "yes");
    state.upsert_pod(judged);
    let mut live = LiveNode::new(&state, node, CompileOptions::default());
    let mut committed = policy_compiler::nft::Ruleset::default();
    check(&mut live, &state, &mut committed);
    let peers_elements = |live: &LiveNode| {
        live.ruleset()
            .decision_maps
            .iter()
            .filter(|(name, _)| name.contains("_peers_"))
            .flat_map(|(_, m)| m.elements.values())
            .count()
    };
    assert_eq!(
        peers_elements(&live),
        0,
        "the network's class decides nothing while the Pass shadows the Deny"
    );
    let mut relabelled = other.clone();
    relabelled.labels.insert("judged", "yes");
    state.upsert_pod(relabelled);
    live.changed(
        &state,
        Kind::Pod,
        &other.id,
        Some(&Object::Pod(other.clone())),
    );
    let stats = check(&mut live, &state, &mut committed);
    assert!(
        !stats.rendered && !stats.tiers_rendered,
        "a class starting to decide rendered the local part or the tiers in full: {stats:?}"
    );
    assert!(
        peers_elements(&live) > 0,
        "the network got no element in the peers map"
    );
    // And back: the class stops deciding.
    let old = state.pod(&other.id).cloned().map(Object::Pod);
    state.upsert_pod(other.clone());
    live.changed(&state, Kind::Pod, &other.id, old.as_ref());
    let stats = check(&mut live, &state, &mut committed);
    assert!(
        !stats.tiers_rendered,
        "the class stopping rendered the tiers in full"
    );
}

/// A ClusterNetworkPolicy whose subject holds no pod of the node, before or after, renders
/// nothing there when it comes, moves in the evaluation order, or goes: its rules are in no class,
/// chain or map of the node; and the node's own events stay piece by piece after it.
#[test]
fn a_cluster_network_policy_that_judges_no_local_pod_renders_nothing() {
    let node = "node-0";
    let mut state = with_guardrails(&workload(3, WorkloadSize::SMALL), 7, 10, 2);
    let mut live = LiveNode::new(&state, node, CompileOptions::default());
    let mut committed = policy_compiler::nft::Ruleset::default();
    check(&mut live, &state, &mut committed);
    let template = state
        .cluster_policies()
        .values()
        .find(|p| p.tier == Tier::Admin && !p.ingress.is_empty())
        .expect("an Admin policy with ingress rules")
        .clone();
    let mut elsewhere = template.clone();
    elsewhere.name = "aaa-judges-no-pod-here".into();
    elsewhere.priority = 0;
    elsewhere.subject = Subject::Pods(PodsSelector {
        namespaces: LabelSelector::everything(),
        pods: LabelSelector::new(vec![Requirement::In(
            "app".into(),
            vec!["runs-on-no-node".into()],
        )]),
    });
    let key = ObjectRef::new("", &elsewhere.name);
    let step = |(state, live, committed): (
        &mut ClusterState,
        &mut LiveNode,
        &mut policy_compiler::nft::Ruleset,
    ),
                policy: Option<ClusterNetworkPolicy>,
                what: &str| {
        let stats = set_cluster_policy((state, live, committed), &key.name, policy);
        assert!(
            !stats.rendered && !stats.tiers_rendered,
            "{what} rendered the local part or the tiers in full"
        );
    };
    // First in evaluation order: every other policy's position moves.
    step(
        (&mut state, &mut live, &mut committed),
        Some(elsewhere.clone()),
        "its arrival",
    );
    let mut later = elsewhere.clone();
    later.priority = 999;
    step(
        (&mut state, &mut live, &mut committed),
        Some(later),
        "its move to the end",
    );
    // A pod of the node added beside one of its tier subjects: still piece by piece.
    let local = state
        .pods()
        .values()
        .find(|p| p.node.as_deref() == Some(node) && p.participates())
        .expect("a pod of the node")
        .clone();
    let mut added = local.clone();
    added.id = ObjectRef::new(local.id.namespace.clone(), "added-after-reorder");
    added.ips = vec![IpAddr::from([10, 250, 0, 9])];
    state.upsert_pod(added.clone());
    live.changed(&state, Kind::Pod, &added.id, None);
    let stats = check(&mut live, &state, &mut committed);
    assert!(
        !stats.rendered && !stats.tiers_rendered,
        "a pod add after it rendered in full"
    );
    step((&mut state, &mut live, &mut committed), None, "its removal");
}

/// With ClusterNetworkPolicies the tiers' peers follow the rest of the cluster element by element:
/// a pod added to another node and removed again, and a Node that stops being a control-plane
/// node, change elements of the peers maps and render nothing of the local part; a pod of the node
/// itself changes its pieces only (see `local_events_with_tiers_render_only_their_pieces`).
#[test]
fn remote_events_with_tiers_change_only_peers_elements() {
    let node = "node-0";
    let mut state = with_guardrails(&workload(3, WorkloadSize::SMALL), 7, 10, 2);
    let mut live = LiveNode::new(&state, node, CompileOptions::default());
    let mut committed = policy_compiler::nft::Ruleset::default();
    check(&mut live, &state, &mut committed);
    let peers_elements = |live: &LiveNode| -> usize {
        live.ruleset()
            .decision_maps
            .iter()
            .filter(|(name, _)| name.contains("_peers_"))
            .map(|(_, m)| m.elements.len())
            .sum()
    };
    let remote = state
        .pods()
        .values()
        .find(|p| {
            p.node.as_deref() != Some(node) && p.participates() && &*p.id.namespace != "kube-system"
        })
        .expect("a pod of another node")
        .clone();
    let mut added = remote.clone();
    added.id = ObjectRef::new(remote.id.namespace.clone(), "added-elsewhere");
    added.ips = vec![IpAddr::from([10, 250, 0, 2])];
    let before = peers_elements(&live);
    state.upsert_pod(added.clone());
    live.changed(&state, Kind::Pod, &added.id, None);
    let stats = check(&mut live, &state, &mut committed);
    assert!(!stats.rendered, "a remote pod add rendered the local part");
    assert_ne!(
        peers_elements(&live),
        before,
        "the new address changes the peers maps"
    );

    let old = state.remove_pod(&added.id).map(Object::Pod);
    live.changed(&state, Kind::Pod, &added.id, old.as_ref());
    let stats = check(&mut live, &state, &mut committed);
    assert!(
        !stats.rendered,
        "a remote pod removal rendered the local part"
    );
    assert_eq!(peers_elements(&live), before, "the address leaves again");

    let mut worker = state.node("node-1").expect("Node node-1").clone();
    let old = Object::Node(worker.clone());
    worker
        .labels
        .remove("node-role.kubernetes.io/control-plane");
    state.upsert_node(worker);
    live.changed(
        &state,
        Kind::Node,
        &ObjectRef::new("", "node-1"),
        Some(&old),
    );
    let stats = check(&mut live, &state, &mut committed);
    assert!(!stats.rendered, "a Node relabel rendered the local part");
    assert!(
        stats.element_changes > 0,
        "the Node's address changes class"
    );

    let local = state
        .pods()
        .values()
        .find(|p| p.node.as_deref() == Some(node) && p.participates())
        .expect("a pod of the node")
        .clone();
    let old = state.remove_pod(&local.id).map(Object::Pod);
    live.changed(&state, Kind::Pod, &local.id, old.as_ref());
    let stats = check(&mut live, &state, &mut committed);
    assert!(
        !stats.rendered,
        "a local pod removal rendered the local part in full"
    );
}

/// Pods in a namespace that no Namespace object declares: the cluster holds the namespace
/// implicitly, with only its name label (as the API server labels every namespace), so the tiers'
/// subjects and peers select its pods as those of a declared namespace with only that label, in a
/// full compile and through the incremental path alike (the guardrails include subjects whose
/// namespace selector is empty).
#[test]
fn undeclared_namespaces_are_tier_subjects_and_peers_as_in_a_full_compile() {
    let node = "node-0";
    let mut state = with_guardrails(&workload(3, WorkloadSize::SMALL), 7, 10, 2);
    let mut live = LiveNode::new(&state, node, CompileOptions::default());
    let mut committed = policy_compiler::nft::Ruleset::default();
    check(&mut live, &state, &mut committed);
    let template = |on_node: bool| {
        state
            .pods()
            .values()
            .find(|p| {
                (p.node.as_deref() == Some(node)) == on_node
                    && p.participates()
                    && p.labels.get("tier") == Some("frontend")
            })
            .expect("a frontend pod")
            .clone()
    };
    let ghost = |template: &Pod, name: &str, ip: [u8; 4]| {
        let mut pod = template.clone();
        pod.id = ObjectRef::new("ghost", name);
        pod.ips = vec![IpAddr::from(ip)];
        pod
    };
    let local = ghost(&template(true), "local", [10, 250, 0, 1]);
    let remote = ghost(&template(false), "remote", [10, 250, 0, 2]);
    let remote_too = ghost(&template(false), "remote-too", [10, 250, 0, 3]);

    // A pod of another node first, while the node has none there (its peer class is new to the
    // tiers, which may render them in full), then another of the same class: the peers path.
    state.upsert_pod(remote.clone());
    assert_eq!(
        state.namespace("ghost").map(|n| n.labels.clone()),
        Some(Namespace::new("ghost", Labels::new()).labels),
        "the cluster holds the undeclared namespace with its name label"
    );
    live.changed(&state, Kind::Pod, &remote.id, None);
    check(&mut live, &state, &mut committed);
    state.upsert_pod(remote_too.clone());
    live.changed(&state, Kind::Pod, &remote_too.id, None);
    let stats = check(&mut live, &state, &mut committed);
    assert!(!stats.rendered, "a remote pod add rendered the local part");
    assert!(
        stats.element_changes > 0,
        "the new address joins the peers maps"
    );

    // The same cluster with the namespace declared with only its name label compiles alike.
    let mut declared = state.clone();
    declared.upsert_namespace(Namespace::new("ghost", Labels::new()));
    assert_eq!(
        compile_node_with(&declared, node, live.options())
            .ruleset
            .render(),
        live.ruleset().render(),
        "an undeclared namespace is not one declared with its name label"
    );

    // A pod on the node: its subjects are rendered again.
    state.upsert_pod(local.clone());
    live.changed(&state, Kind::Pod, &local.id, None);
    let stats = check(&mut live, &state, &mut committed);
    assert!(
        stats.tiers_rendered || stats.tier_pieces > 0,
        "a local pod renders what the tiers decide for the node's pods again"
    );

    // The local pod relabelled out of the frontend tier and back.
    for tier in ["db", "frontend"] {
        let old = state.pod(&local.id).cloned().map(Object::Pod);
        let mut relabelled = local.clone();
        relabelled.labels.insert("tier", tier);
        state.upsert_pod(relabelled);
        live.changed(&state, Kind::Pod, &local.id, old.as_ref());
        check(&mut live, &state, &mut committed);
    }

    // Declared with labels the guardrails select, then undeclared again (it stays, implicitly).
    let old = state.namespace("ghost").cloned().map(Object::Namespace);
    let mut labels = Labels::new();
    labels.insert("env", "dev");
    labels.insert("team", "platform");
    state.upsert_namespace(Namespace::new("ghost", labels));
    live.changed(
        &state,
        Kind::Namespace,
        &ObjectRef::new("", "ghost"),
        old.as_ref(),
    );
    check(&mut live, &state, &mut committed);
    let old = state.namespace("ghost").cloned().map(Object::Namespace);
    assert!(state.remove(Kind::Namespace, &ObjectRef::new("", "ghost")));
    assert!(state.namespace("ghost").is_some(), "its pods keep it");
    live.changed(
        &state,
        Kind::Namespace,
        &ObjectRef::new("", "ghost"),
        old.as_ref(),
    );
    check(&mut live, &state, &mut committed);

    // The local pod goes: the namespace has pods on other nodes only, its remote pods change
    // only the peers maps.
    let old = state.remove_pod(&local.id).map(Object::Pod);
    live.changed(&state, Kind::Pod, &local.id, old.as_ref());
    check(&mut live, &state, &mut committed);
    let old = state.remove_pod(&remote.id).map(Object::Pod);
    live.changed(&state, Kind::Pod, &remote.id, old.as_ref());
    let stats = check(&mut live, &state, &mut committed);
    assert!(
        !stats.rendered,
        "a remote pod removal rendered the local part"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn incremental_rulesets_equal_full_compiles(
        seed in any::<u64>(),
        pods in 2usize..12,
        policies in 0usize..6,
        choice in any::<u8>(),
    ) {
        run(seed, pods, policies, 16, choice, false);
    }

    #[test]
    fn incremental_rulesets_equal_full_compiles_with_tiers(
        seed in any::<u64>(),
        pods in 2usize..10,
        policies in 0usize..5,
        choice in any::<u8>(),
    ) {
        run(seed, pods, policies, 12, choice, true);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// More pods on the node than combinations of ClusterNetworkPolicies: pods share combinations
    /// and their addresses make runs, which a pod's move splits and merges.
    #[test]
    fn incremental_rulesets_equal_full_compiles_with_tiers_over_shared_combinations(
        seed in any::<u64>(),
        pods in 16usize..40,
        policies in 0usize..4,
        choice in any::<u8>(),
    ) {
        run(seed, pods, policies, 16, choice, true);
    }
}
