//! CPU per event of the incremental compiler ([`LiveNode`]) against the full path (compile the
//! node from the whole cluster, diff whole rulesets), side by side in one run, on the medium and
//! large generated workloads, for node-0.
//!
//! Each event is applied and then undone (both are measured as events): a pod added to node-0 and
//! to another node, a pod of node-0 and of another node relabelled (its `tier`, which peers select),
//! a policy enforced on node-0 edited (a port on its first ingress rule), a namespace with pods
//! but none on node-0 relabelled (its `env`), a Node other than node-0 labelled as control plane,
//! a ClusterNetworkPolicy's first rule narrowed to one port and, apart, its peers replaced by a
//! network, a copy of it added first in evaluation order (as it is, and with every rule's peers
//! one namespace), its priority moved to the end, and a copy of it whose subject holds no pod
//! added (a row is left out when the cluster has no such
//! object). An incremental sample is the change to the cluster state, the compiler's
//! update, and the transaction (diff of what was touched, applied to the committed copy); a full
//! sample compiles the node and diffs.
//!
//! Each size runs twice: as generated, and with 100 ClusterNetworkPolicies
//! (`policy_compiler::generate::guardrails`, as `policyc generate --cluster-policies 100` writes
//! them), where the tiers' peers maps follow the other nodes' pods.
//!
//! `cargo bench -p policy-compiler --bench live` (a few minutes); an argument filters the rows by
//! cluster name (`medium`, `large`, `cnp`). Prints medians and p99. `LIVE_BENCH_ROUNDS` sets the
//! incremental rounds per event (100 unless set; each round is the event and its undo),
//! `LIVE_BENCH_FULL_ROUNDS` the full ones (at least 1); `LIVE_BENCH_EVENT` keeps only the events
//! whose name holds it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use policy_compiler::generate::guardrails::with_guardrails;
use policy_compiler::generate::{tier_flipped, workload, WorkloadSize};
use policy_compiler::model::{
    ClusterNetworkPolicy, ClusterPeer, ClusterPort, ClusterRule, Direction, Namespace, Node,
    ObjectRef, Pod, PodsSelector, PolicyPort, PortSpec, Protocol, Subject,
};
use policy_compiler::nft::transaction::Transaction;
use policy_compiler::nft::Ruleset;
use policy_compiler::object::{Kind, Object};
use policy_compiler::plan::{
    compile_node_with, policy_chain_name, CompileOptions, LiveNode, LiveStats,
};
use policy_compiler::selector::{LabelSelector, Requirement};
use policy_compiler::ClusterState;

const NODE: &str = "node-0";
/// The label the guardrails' control-plane `nodes` peers select.
const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";

/// One change to the cluster and its undo.
#[derive(Clone)]
enum Event {
    /// Puts this pod (replacing the one of its key).
    Pod(Pod),
    /// Removes this pod.
    RemovePod(ObjectRef),
    /// Puts this policy.
    Policy(policy_compiler::model::Policy),
    /// Puts this namespace.
    Namespace(Namespace),
    /// Puts this Node.
    Node(Node),
    /// Puts this ClusterNetworkPolicy.
    ClusterPolicy(ClusterNetworkPolicy),
    /// Removes the ClusterNetworkPolicy of this name.
    RemoveClusterPolicy(String),
}

impl Event {
    fn apply(&self, cluster: &mut ClusterState) -> (Kind, ObjectRef, Option<Object>) {
        match self {
            Event::Pod(p) => {
                let old = cluster.pod(&p.id).cloned().map(Object::Pod);
                cluster.upsert_pod(p.clone());
                (Kind::Pod, p.id.clone(), old)
            }
            Event::RemovePod(id) => {
                let old = cluster.remove_pod(id).map(Object::Pod);
                (Kind::Pod, id.clone(), old)
            }
            Event::Policy(p) => {
                let old = cluster.policies().get(&p.id).cloned().map(Object::Policy);
                cluster.upsert_policy(p.clone());
                (Kind::NetworkPolicy, p.id.clone(), old)
            }
            Event::Namespace(n) => {
                let old = cluster.namespace(&n.name).cloned().map(Object::Namespace);
                cluster.upsert_namespace(n.clone());
                (Kind::Namespace, ObjectRef::new("", &n.name), old)
            }
            Event::Node(n) => {
                let old = cluster.node(&n.name).cloned().map(Object::Node);
                cluster.upsert_node(n.clone());
                (Kind::Node, ObjectRef::new("", &n.name), old)
            }
            Event::ClusterPolicy(p) => {
                let old = cluster
                    .cluster_policies()
                    .get(&p.name)
                    .cloned()
                    .map(Object::ClusterPolicy);
                cluster.upsert_cluster_policy(p.clone());
                (Kind::ClusterNetworkPolicy, ObjectRef::new("", &p.name), old)
            }
            Event::RemoveClusterPolicy(name) => {
                let old = cluster
                    .remove_cluster_policy(name)
                    .map(Object::ClusterPolicy);
                (Kind::ClusterNetworkPolicy, ObjectRef::new("", name), old)
            }
        }
    }
}

/// The measured changes, each as (name, do, undo).
fn events(cluster: &ClusterState) -> Vec<(&'static str, Event, Event)> {
    let on = |local: bool| {
        cluster
            .pods()
            .values()
            .find(|p| {
                (p.node.as_deref() == Some(NODE)) == local
                    && &*p.id.namespace != "kube-system"
                    && p.participates()
            })
            .expect("a pod")
            .clone()
    };
    let added = |template: &Pod, name: &str, ip: [u8; 4]| {
        let mut pod = template.clone();
        pod.id = ObjectRef::new(template.id.namespace.clone(), name);
        pod.ips = vec![IpAddr::from(ip)];
        pod
    };
    let (local, remote) = (on(true), on(false));
    let remote_namespace = remote.id.namespace.to_string();
    let committed = compile_node_with(cluster, NODE, &CompileOptions::default()).ruleset;
    let policy = cluster
        .policies()
        .values()
        .find(|p| {
            !p.ingress.is_empty()
                && committed
                    .chains
                    .contains_key(&policy_chain_name(&p.id, Direction::Ingress))
        })
        .expect("a policy with ingress rules enforced on node-0")
        .clone();
    let mut edited = policy.clone();
    edited.ingress[0].ports = vec![PolicyPort {
        protocol: Protocol::Tcp,
        port: PortSpec::Range(8443, 8443),
    }];
    let new_local = added(&local, "bench-local", [10, 250, 0, 1]);
    let new_remote = added(&remote, "bench-remote", [10, 250, 0, 2]);
    let mut events = vec![
        (
            "pod added, node-0",
            Event::Pod(new_local.clone()),
            Event::RemovePod(new_local.id),
        ),
        (
            "pod added, other node",
            Event::Pod(new_remote.clone()),
            Event::RemovePod(new_remote.id),
        ),
        (
            "pod relabelled, node-0",
            Event::Pod(tier_flipped(&local)),
            Event::Pod(local),
        ),
        (
            "pod relabelled, other node",
            Event::Pod(tier_flipped(&remote)),
            Event::Pod(remote),
        ),
        (
            "policy edited (enforced on node-0)",
            Event::Policy(edited),
            Event::Policy(policy),
        ),
    ];
    // A namespace with participating pods, none of them on node-0, its `env` relabelled (which
    // namespace selectors of the ClusterNetworkPolicies select).
    let mut with_pods = std::collections::BTreeSet::new();
    let mut on_node = std::collections::BTreeSet::new();
    for pod in cluster.pods().values().filter(|p| p.participates()) {
        with_pods.insert(&*pod.id.namespace);
        if pod.node.as_deref() == Some(NODE) {
            on_node.insert(&*pod.id.namespace);
        }
    }
    let elsewhere = cluster.namespaces().values().find(|n| {
        n.name != "kube-system"
            && with_pods.contains(n.name.as_str())
            && !on_node.contains(n.name.as_str())
    });
    match elsewhere {
        Some(namespace) => {
            let mut relabelled = namespace.clone();
            let env = if relabelled.labels.get("env") == Some("dev") {
                "prod"
            } else {
                "dev"
            };
            relabelled.labels.insert("env", env);
            events.push((
                "namespace relabelled, no pods on node-0",
                Event::Namespace(relabelled),
                Event::Namespace(namespace.clone()),
            ));
        }
        None => eprintln!("no namespace without pods on {NODE}: its row is left out"),
    }
    // A Node other than node-0 labelled as control plane (which the guardrails' `nodes` peers
    // select) and back.
    if let Some(node) = cluster
        .node_objects()
        .values()
        .find(|n| n.name != NODE && !n.labels.contains_key(CONTROL_PLANE))
    {
        let mut relabelled = node.clone();
        relabelled.labels.insert(CONTROL_PLANE, "");
        events.push((
            "Node relabelled (control plane)",
            Event::Node(relabelled),
            Event::Node(node.clone()),
        ));
    }
    // A ClusterNetworkPolicy's first rule narrowed to one port, and back: the peer classes stay.
    if let Some(policy) = cluster
        .cluster_policies()
        .values()
        .find(|p| !p.ingress.is_empty() || !p.egress.is_empty())
    {
        let mut edited = policy.clone();
        if let Some(rule) = first_rule(&mut edited) {
            rule.protocols = vec![ClusterPort::Range {
                protocol: Protocol::Tcp,
                first: 8443,
                last: 8443,
            }];
        }
        events.push((
            "ClusterNetworkPolicy ports edited",
            Event::ClusterPolicy(edited.clone()),
            Event::ClusterPolicy(policy.clone()),
        ));
        // The same rule's peers replaced by a network, and back: the peer classes change.
        if let Some(rule) = first_rule(&mut edited) {
            rule.peers = vec![ClusterPeer::Networks(vec!["10.99.0.0/16"
                .parse()
                .expect("a CIDR")])];
        }
        events.push((
            "ClusterNetworkPolicy peers edited",
            Event::ClusterPolicy(edited),
            Event::ClusterPolicy(policy.clone()),
        ));
        // The same rule given one namespace more as peers (that of a pod of another node), and
        // back: only that namespace's pods can move.
        let mut widened = policy.clone();
        if let Some(rule) = first_rule(&mut widened) {
            rule.peers
                .push(ClusterPeer::Namespaces(LabelSelector::new(vec![
                    Requirement::In(
                        "kubernetes.io/metadata.name".into(),
                        vec![remote_namespace.clone()],
                    ),
                ])));
        }
        events.push((
            "ClusterNetworkPolicy peers edited (a namespace added)",
            Event::ClusterPolicy(widened),
            Event::ClusterPolicy(policy.clone()),
        ));
        // Its subject written another way (a pod selector that selects every pod of the same
        // namespaces), and back: the node's pods are planned again, none moves.
        let mut rewritten = policy.clone();
        rewritten.subject = match &policy.subject {
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
        events.push((
            "ClusterNetworkPolicy subject edited (no pod moves)",
            Event::ClusterPolicy(rewritten),
            Event::ClusterPolicy(policy.clone()),
        ));
        // A copy judging the same pods, first in evaluation order, added and removed: its rules
        // enter and leave the tiers' universe.
        let mut copy = policy.clone();
        copy.name = "bench-copy".into();
        copy.priority = 0;
        events.push((
            "ClusterNetworkPolicy added (a copy, first in order)",
            Event::ClusterPolicy(copy.clone()),
            Event::RemoveClusterPolicy(copy.name.clone()),
        ));
        // A copy whose rules' peers are one namespace (that of a pod of another node), first in
        // evaluation order, added and removed: the usual new policy, whose peers are a few pods.
        let mut narrow = copy.clone();
        narrow.name = "bench-narrow".into();
        for rule in narrow.ingress.iter_mut().chain(narrow.egress.iter_mut()) {
            rule.peers = vec![ClusterPeer::Namespaces(LabelSelector::new(vec![
                Requirement::In(
                    "kubernetes.io/metadata.name".into(),
                    vec![remote_namespace.clone()],
                ),
            ]))];
        }
        events.push((
            "ClusterNetworkPolicy added (peers: one namespace)",
            Event::ClusterPolicy(narrow.clone()),
            Event::RemoveClusterPolicy(narrow.name),
        ));
        // Its priority moved to the end of its tier, and back.
        let mut last = policy.clone();
        last.priority = ClusterNetworkPolicy::MAX_PRIORITY;
        events.push((
            "ClusterNetworkPolicy priority changed (to the end)",
            Event::ClusterPolicy(last),
            Event::ClusterPolicy(policy.clone()),
        ));
        // A copy whose subject holds no pod, first in evaluation order, added and removed.
        let mut elsewhere = policy.clone();
        elsewhere.name = "bench-judges-no-pod".into();
        elsewhere.priority = 0;
        elsewhere.subject = Subject::Pods(PodsSelector {
            namespaces: LabelSelector::everything(),
            pods: LabelSelector::new(vec![Requirement::In(
                "app".into(),
                vec!["bench-runs-nowhere".into()],
            )]),
        });
        events.push((
            "ClusterNetworkPolicy added, judging no pod of node-0",
            Event::ClusterPolicy(elsewhere.clone()),
            Event::RemoveClusterPolicy(elsewhere.name),
        ));
    }
    events
}

/// A ClusterNetworkPolicy's first ingress rule, or its first egress rule if it has no ingress.
fn first_rule(policy: &mut ClusterNetworkPolicy) -> Option<&mut ClusterRule> {
    if policy.ingress.is_empty() {
        policy.egress.first_mut()
    } else {
        policy.ingress.first_mut()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Incremental: `rounds` times the event and its undo; the durations of both.
fn incremental(
    cluster: &mut ClusterState,
    live: &mut LiveNode,
    committed: &mut Option<Ruleset>,
    do_: &Event,
    undo: &Event,
    rounds: usize,
) -> (Vec<Duration>, usize, LiveStats) {
    let mut samples = Vec::new();
    let mut ops = 0;
    let mut most = LiveStats::default();
    for _ in 0..rounds {
        for event in [do_, undo] {
            let started = Instant::now();
            let (kind, key, old) = event.apply(cluster);
            live.changed(cluster, kind, &key, old.as_ref());
            let (touched, stats) = live.flush(cluster);
            most.pieces = most.pieces.max(stats.pieces);
            most.resolved_sets = most.resolved_sets.max(stats.resolved_sets);
            most.rendered |= stats.rendered;
            let base = committed.as_ref().expect("a committed ruleset");
            let tx = match &touched {
                Some(t) => Transaction::diff_touched(base, live.ruleset(), t),
                None => Transaction::diff(base, live.ruleset()),
            };
            tx.apply_in_place(committed)
                .expect("the transaction applies");
            samples.push(started.elapsed());
            ops = ops.max(tx.ops.len());
        }
    }
    (samples, ops, most)
}

/// Full path: compile the node and diff against the committed ruleset.
fn full(
    cluster: &mut ClusterState,
    committed: &mut Ruleset,
    do_: &Event,
    undo: &Event,
    rounds: usize,
) -> Vec<Duration> {
    let mut samples = Vec::new();
    for _ in 0..rounds {
        for event in [do_, undo] {
            let started = Instant::now();
            event.apply(cluster);
            let desired = compile_node_with(cluster, NODE, &CompileOptions::default()).ruleset;
            let tx = Transaction::diff(committed, &desired);
            std::hint::black_box(&tx);
            *committed = desired;
            samples.push(started.elapsed());
        }
    }
    samples
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters sizes by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let rounds: usize = std::env::var("LIVE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100);
    println!("| cluster | event | incremental median | incremental p99 | full median | full p99 | ratio (median) | ops | pieces rendered / sets resolved (most) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, size, full_rounds, tiers) in [
        ("medium", WorkloadSize::MEDIUM, 15, false),
        ("large", WorkloadSize::LARGE, 5, false),
        ("medium + 100 cnp", WorkloadSize::MEDIUM, 15, true),
        ("large + 100 cnp", WorkloadSize::LARGE, 5, true),
    ] {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let full_rounds: usize = std::env::var("LIVE_BENCH_FULL_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(full_rounds)
            .max(1);
        let mut cluster = workload(42, size);
        if tiers {
            cluster = with_guardrails(&cluster, 42, 100, size.nodes);
        }
        let started = Instant::now();
        let mut live = LiveNode::new(&cluster, NODE, CompileOptions::default());
        let (_, _) = live.flush(&cluster);
        eprintln!("{name}: initial compile {:?}", started.elapsed());
        let mut committed = Some(live.ruleset().clone());
        let only = std::env::var("LIVE_BENCH_EVENT").ok();
        for (event, do_, undo) in events(&cluster) {
            if only.as_deref().is_some_and(|o| !event.contains(o)) {
                continue;
            }
            let (mut inc, ops, most) =
                incremental(&mut cluster, &mut live, &mut committed, &do_, &undo, rounds);
            let mut base = committed.clone().unwrap_or_default();
            let mut fl = full(&mut cluster, &mut base, &do_, &undo, full_rounds);
            inc.sort();
            fl.sort();
            let ratio = percentile(&fl, 0.5).as_secs_f64() / percentile(&inc, 0.5).as_secs_f64();
            println!(
                "| {name} | {event} | {} | {} | {} | {} | {ratio:.0}× | {ops} | {}{} / {} |",
                ms(percentile(&inc, 0.5)),
                ms(percentile(&inc, 0.99)),
                ms(percentile(&fl, 0.5)),
                ms(percentile(&fl, 0.99)),
                most.pieces,
                if most.rendered {
                    " (full local render)"
                } else {
                    ""
                },
                most.resolved_sets,
            );
        }
        // The incremental ruleset is still the full compile's.
        let expected = compile_node_with(&cluster, NODE, &CompileOptions::default()).ruleset;
        assert!(
            live.ruleset() == &expected,
            "the incremental ruleset drifted from a full compile"
        );
    }
}
