//! What policy does on a node, seen from the kernel (root): the named counters that real probes
//! move are exactly those of the rules the evaluator names, audit policies let everything through
//! while counting what they would deny, and switching a policy from audit to enforce is a diff.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use policy_compiler::analysis::{evaluate, Decision, DirectionVerdict, Endpoint, PortProto};
use policy_compiler::cidr::Family;
use policy_compiler::input::{parse_sources, Source};
use policy_compiler::model::{Direction, Enforcement, ObjectRef, Policy};
use policy_compiler::nft::CounterValue;
use policy_compiler::plan::{audit_group_chain_name, group_chain_name, policy_rule_counter_name};
use policy_compiler::ClusterState;
use policylab::lab::kernel_available;
use policylab::lab_run::{Flow, LabCluster, Via};

const TIMEOUT: Duration = Duration::from_millis(300);

/// Three pods on two nodes: `x/web` and `x/db` isolated for ingress by `x/deny-all`, `x/web`
/// reachable from namespace `clients` on 80 by `x/allow-web`; `clients/client` isolated for egress only by the
/// audit policy `clients/egress-to-web` (which would allow it to reach `x/web` alone).
const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {kubernetes.io/metadata.name: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: clients, labels: {kubernetes.io/metadata.name: clients}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: x, labels: {app: web}}
spec: {nodeName: node-1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: x, labels: {app: db}}
spec: {nodeName: node-2, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.244.2.10, podIPs: [{ip: 10.244.2.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: clients, labels: {app: client}}
spec: {nodeName: node-1, containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.244.1.11, podIPs: [{ip: 10.244.1.11}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-web, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: clients}}}]
    ports: [{protocol: TCP, port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: egress-to-web
  namespace: clients
  annotations: {nftpolicy.io/enforcement: audit}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}
      podSelector: {matchLabels: {app: web}}
"#;

fn cluster() -> ClusterState {
    let manifests = parse_sources(&[Source {
        name: "observability.yaml".into(),
        text: MANIFESTS.into(),
    }])
    .unwrap_or_else(|e| panic!("the test's manifests are valid: {e:?}"));
    manifests.cluster
}

fn pod(s: &str) -> ObjectRef {
    let (ns, name) = s.split_once('/').expect("ns/name");
    ObjectRef::new(ns, name)
}

/// Every ordered pair of the three pods on TCP 80.
fn flows() -> Vec<Flow> {
    let pods = ["x/web", "x/db", "clients/client"];
    let port: PortProto = "80/TCP".parse().expect("port");
    let mut flows = Vec::new();
    for from in pods {
        for to in pods {
            if from != to {
                flows.push(Flow {
                    from: pod(from),
                    to: pod(to),
                    port,
                    family: Family::V4,
                });
            }
        }
    }
    flows
}

/// The counter a direction's verdict moves on the first packet, if any, as the evaluator names
/// its cause: the first allowing rule of the isolating policies (policies by id, rules in order),
/// or their group's drop; an audit group's "would deny" when no audit rule allows.
fn expected_counters(cluster: &ClusterState, verdict: &DirectionVerdict) -> Vec<String> {
    let mut counters = Vec::new();
    let policies = |ids: &[ObjectRef]| -> Vec<&Policy> {
        ids.iter()
            .filter_map(|id| cluster.policies().get(id))
            .collect()
    };
    if let Decision::NetworkPolicy(allowed) = verdict.decision {
        if allowed {
            let first = verdict
                .allowed_by()
                .min_by_key(|r| (r.policy.clone(), r.index))
                .expect("an allowed direction names its rule");
            counters.push(policy_rule_counter_name(
                &first.policy,
                first.direction,
                first.index,
            ));
        } else {
            counters.push(group_chain_name(
                verdict.direction,
                &policies(&verdict.isolated_by),
            ));
        }
    }
    // Audit policies that would isolate the pod when no enforced one does: the first of their
    // rules that allows (policies by id, rules in order), else their audit group's "would deny".
    if verdict.isolated_by.is_empty() && !verdict.audited_by.is_empty() {
        match &verdict.would_deny {
            Some(_) => counters.push(audit_group_chain_name(
                verdict.direction,
                &policies(&verdict.audited_by),
            )),
            None => {
                let first = verdict
                    .audit_rules
                    .iter()
                    .filter(|r| r.allows())
                    .map(|r| &r.rule)
                    .min_by_key(|r| (r.policy.clone(), r.index))
                    .expect("no would-deny: an audit rule allows");
                counters.push(policy_rule_counter_name(
                    &first.policy,
                    first.direction,
                    first.index,
                ));
            }
        }
    }
    counters
}

fn moved(
    before: &BTreeMap<String, CounterValue>,
    after: &BTreeMap<String, CounterValue>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(name, v)| {
            let old = before.get(name).map_or(0, |b| b.packets);
            (v.packets > old).then(|| (name.clone(), v.packets - old))
        })
        .collect()
}

fn all_counters(lab: &LabCluster) -> BTreeMap<String, CounterValue> {
    let mut all = BTreeMap::new();
    for node in ["node-1", "node-2"] {
        for (name, value) in lab.counters(node).expect("counters") {
            // Names are per node; the two nodes' counters of one name add up.
            let e: &mut CounterValue = all.entry(name).or_default();
            e.packets += value.packets;
            e.bytes += value.bytes;
        }
    }
    all
}

/// Probes one flow at a time and checks which counters it moved.
fn check_flows(lab: &LabCluster, failures: &mut Vec<String>) {
    for flow in flows() {
        let before = all_counters(lab);
        let measured = lab
            .probe(std::slice::from_ref(&flow), Via::Pod, TIMEOUT)
            .expect("probe");
        let after = all_counters(lab);
        let cluster = lab.cluster();
        let (from, to) = (
            cluster.pod(&flow.from).expect("pod"),
            cluster.pod(&flow.to).expect("pod"),
        );
        let (fi, ti) = (
            from.ip(Family::V4).expect("ip"),
            to.ip(Family::V4).expect("ip"),
        );
        let verdict = evaluate(
            cluster,
            Endpoint::pod(from, fi),
            Endpoint::pod(to, ti),
            flow.port.protocol,
            flow.port.port,
        );
        let mut expected: BTreeSet<String> = expected_counters(cluster, &verdict.egress)
            .into_iter()
            .collect();
        // Ingress is judged only when egress let the packet through.
        if verdict.egress.allowed() {
            expected.extend(expected_counters(cluster, &verdict.ingress));
        }
        let got = moved(&before, &after);
        let names: BTreeSet<String> = got.keys().cloned().collect();
        let label = format!("{} -> {} {}", flow.from, flow.to, flow.port);
        if names != expected {
            failures.push(format!(
                "{label}: counters moved {got:?}, expected {expected:?}"
            ));
        }
        if measured[0].allowed != verdict.allowed() {
            failures.push(format!(
                "{label}: measured {}, evaluated {}",
                measured[0].allowed,
                verdict.allowed()
            ));
        }
        // An accepted connection crosses each accepting counter with its first packet only.
        if verdict.allowed() {
            for (name, n) in &got {
                if *n != 1 {
                    failures.push(format!("{label}: {name} moved by {n} packets, expected 1"));
                }
            }
        }
    }
}

#[test]
fn counters_follow_the_rules_the_evaluator_names_and_audit_only_counts() {
    if !kernel_available("counters_follow_the_rules_the_evaluator_names_and_audit_only_counts") {
        return;
    }
    let port: PortProto = "80/TCP".parse().expect("port");
    let mut lab = LabCluster::build(cluster(), Vec::new(), &[port]).expect("lab");
    lab.enforce().expect("enforce");
    let mut failures = Vec::new();
    check_flows(&lab, &mut failures);
    // clients/client's audit policy would deny its egress to x/db; the probe still goes out (and is
    // dropped by x/deny-all at ingress), and clients/client -> x/web is allowed and counted on the
    // audit rule, not on a drop.
    let would_deny = audit_group_chain_name(
        Direction::Egress,
        &[lab
            .cluster()
            .policies()
            .get(&pod("clients/egress-to-web"))
            .expect("policy")],
    );
    let counted = lab.counters("node-1").expect("counters");
    assert!(
        counted.get(&would_deny).is_some_and(|v| v.packets > 0),
        "node-1 counted clients/client's would-deny on {would_deny}: {counted:?}"
    );
    let allowed = policy_rule_counter_name(&pod("x/allow-web"), Direction::Ingress, 0);
    assert_eq!(
        counted.get(&allowed).map(|v| v.packets),
        Some(1),
        "the one allowed connection to x/web counted once on {allowed}: {counted:?}"
    );

    // Enforce the audit policy: a diff, not a table replace; clients/client -> x/db is now dropped at
    // egress, on the enforced group's counter.
    let mut enforced = lab
        .cluster()
        .policies()
        .get(&pod("clients/egress-to-web"))
        .expect("policy")
        .clone();
    enforced.enforcement = Enforcement::Enforce;
    lab.cluster_mut().upsert_policy(enforced);
    let reports = lab.enforce().expect("enforce");
    for (node, report) in &reports {
        assert!(
            !report.full,
            "{node}: switching to enforce replaced the table"
        );
    }
    check_flows(&lab, &mut failures);
    lab.teardown().expect("teardown");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The NFLOG group of the deny log test.
const GROUP: u16 = 91;

/// Starts a deny log reader in each node's namespace, resolving against what the node compiled.
fn readers(
    lab: &LabCluster,
) -> Vec<(
    String,
    std::sync::Arc<nftpolicy::denials::Denials>,
    nftpolicy::denials::reader::DenyLogReader,
)> {
    use nftpolicy::denials::reader::{DenyLogReader, ReaderConfig};
    use nftpolicy::denials::{DenialContext, Denials};
    ["node-1", "node-2"]
        .into_iter()
        .map(|node| {
            let denials = std::sync::Arc::new(Denials::new(10_000));
            let origins = std::sync::Arc::new(lab.compiled(node).origins);
            denials.set_context(DenialContext::new(origins, lab.cluster()));
            let mut config = ReaderConfig::new(GROUP);
            let ns = lab.lab().node_netns(node).expect("node");
            config.netns = Some(std::path::PathBuf::from(format!("/run/netns/{ns}")));
            let reader = DenyLogReader::start(&config, denials.clone()).expect("reader");
            (node.to_string(), denials, reader)
        })
        .collect()
}

#[test]
fn denials_name_the_pods_and_policies_within_the_rate() {
    use nftpolicy::denials::Verdict;
    use policy_compiler::plan::{CompileOptions, DenyLog};
    if !kernel_available("denials_name_the_pods_and_policies_within_the_rate") {
        return;
    }
    let port: PortProto = "80/TCP".parse().expect("port");
    let mut lab = LabCluster::build(cluster(), Vec::new(), &[port]).expect("lab");
    let (rate, burst) = (5, 5);
    lab.set_options(CompileOptions {
        deny_log: Some(DenyLog {
            group: GROUP,
            rate,
            burst,
        }),
        audit_all: false,
    });
    lab.enforce().expect("enforce");
    let reading = readers(&lab);
    // Every denied flow once: a denial each, naming both pods and the policies; clients/client
    // -> x/db also a would-deny of its audit policy, at egress on node-1.
    let measured = lab.probe(&flows(), Via::Pod, TIMEOUT).expect("probe");
    std::thread::sleep(Duration::from_millis(300));
    let recent: Vec<_> = reading.iter().flat_map(|(_, d, _)| d.recent()).collect();
    let seen = |from: &str, to: &str, verdict: Verdict, policies: &[&str]| {
        recent.iter().any(|d| {
            d.src.pod.as_deref() == Some(from)
                && d.dst.pod.as_deref() == Some(to)
                && d.dst_port == Some(80)
                && d.verdict == Some(verdict)
                && d.policies.as_deref()
                    == Some(&policies.iter().map(|p| p.to_string()).collect::<Vec<_>>()[..])
        })
    };
    let mut failures = Vec::new();
    for m in &measured {
        if m.allowed {
            continue;
        }
        let policies: &[&str] = if m.to == pod("x/web") {
            &["x/allow-web", "x/deny-all"]
        } else {
            &["x/deny-all"]
        };
        if !seen(
            &m.from.to_string(),
            &m.to.to_string(),
            Verdict::Deny,
            policies,
        ) {
            failures.push(format!("no denial {} -> {} by {policies:?}", m.from, m.to));
        }
    }
    if !seen(
        "clients/client",
        "x/db",
        Verdict::WouldDeny,
        &["clients/egress-to-web"],
    ) {
        failures.push("no would-deny clients/client -> x/db by clients/egress-to-web".into());
    }
    // No denial for what is allowed and not audited.
    if recent.iter().any(|d| {
        d.dst.pod.as_deref() == Some("x/web") && d.src.pod.as_deref() == Some("clients/client")
    }) {
        failures.push(format!("an allowed connection was logged: {recent:?}"));
    }

    // A flood of 400 connection attempts in about a second to a denied pod: the drop point logs
    // within its rate, while its counter counts every SYN.
    let before: usize = reading.iter().map(|(_, d, _)| d.recent().len()).sum();
    let counter = group_chain_name(
        Direction::Ingress,
        &[lab
            .cluster()
            .policies()
            .get(&pod("x/deny-all"))
            .expect("policy")],
    );
    let dropped_before = lab
        .counters("node-2")
        .expect("counters")
        .get(&counter)
        .map_or(0, |v| v.packets);
    let started = std::time::Instant::now();
    let flood: Vec<Flow> = (0..400)
        .map(|_| Flow {
            from: pod("x/web"),
            to: pod("x/db"),
            port,
            family: Family::V4,
        })
        .collect();
    lab.probe(&flood, Via::Pod, Duration::from_millis(100))
        .expect("flood");
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let logged = reading
        .iter()
        .map(|(_, d, _)| d.recent().len())
        .sum::<usize>()
        - before;
    let dropped = lab
        .counters("node-2")
        .expect("counters")
        .get(&counter)
        .map_or(0, |v| v.packets)
        - dropped_before;
    let ceiling = burst as f64 + rate as f64 * (elapsed + 0.5);
    eprintln!(
        "deny log flood: {dropped} SYNs dropped on {counter} in {elapsed:.2} s, {logged} logged \
         (ceiling {ceiling:.0})"
    );
    if dropped < 400 {
        failures.push(format!(
            "the flood's {dropped} drops counted, expected >= 400"
        ));
    }
    if logged == 0 || logged as f64 > ceiling {
        failures.push(format!(
            "{logged} denials logged in {elapsed:.2} s, ceiling {ceiling:.0}"
        ));
    }
    for (node, _, reader) in reading {
        let summary = reader.stop();
        eprintln!("{node}: reader {summary:?}");
    }
    lab.teardown().expect("teardown");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
