//! The network-policy-api conformance suite as data (`fixtures/network-policy-api`): every case
//! parses, in upstream's order, every probe names a pod of the model, every step changes or checks
//! something, the model is the suite's houses and nodes, and the README's counts are the suite's.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use policy_compiler::cnp_conformance::{Case, Feature, Suite};
use policy_compiler::model::{ObjectRef, Protocol};

fn dir() -> std::path::PathBuf {
    common::fixtures().join("network-policy-api")
}

fn suite() -> Suite {
    Suite::read(&dir()).unwrap_or_else(|e| panic!("cannot read the suite: {e}"))
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().expect("ip")).collect()
}

#[test]
fn every_case_parses_in_upstream_order() {
    let suite = suite();
    assert_eq!(suite.cases.len(), 24);
    let mut names = BTreeSet::new();
    for (i, case) in suite.cases.iter().enumerate() {
        let file = Path::new(&case.file).file_name().expect("file name");
        assert_eq!(
            file.to_string_lossy(),
            format!("{:02}-{}.yaml", i + 1, case.name)
        );
        assert!(names.insert(&case.name), "{}: name used twice", case.file);
        // Step 1 is the test's manifests, applied before any subtest; every later step belongs to
        // one.
        let first = &case.steps[0];
        assert_eq!(first.subtest, None, "{}", case.file);
        assert!(
            !first.apply.is_empty() && first.probes.is_empty(),
            "{}",
            case.file
        );
        for step in &case.steps[1..] {
            assert!(
                step.subtest.is_some(),
                "{}: a step outside subtests",
                case.file
            );
        }
    }
    // Upstream runs the tests in the order they are registered: its files in name order, each
    // file's list in order (CNPAdminTierIngressNamedPort is registered after CNPAdminTierIngressUDP).
    let tests: Vec<&str> = suite
        .cases
        .iter()
        .map(|c| c.upstream.test.as_str())
        .collect();
    assert_eq!(
        tests[..13],
        [
            "CNPAdminTierEgressNamedPort",
            "CNPAdminTierEgressNodePeers",
            "CNPAdminTierEgressInlineCIDRPeers",
            "CNPAdminTierEgressSCTP",
            "CNPAdminTierEgressTCP",
            "CNPAdminTierEgressUDP",
            "CNPAdminTierGress",
            "CNPAdminTierIngressSCTP",
            "CNPAdminTierIngressTCP",
            "CNPAdminTierIngressUDP",
            "CNPAdminTierIngressNamedPort",
            "CNPAdminTierIntegration",
            "CNPAdminTierPriorityField",
        ]
    );
    assert_eq!(
        tests[13..],
        [
            "CNPBaselineTierEgressNamedPort",
            "CNPBaselineTierEgressNodePeers",
            "CNPBaselineTierIngressNamedPort",
            "CNPBaselineTierEgressInlineCIDRPeers",
            "CNPBaselineTierEgressSCTP",
            "CNPBaselineTierEgressTCP",
            "CNPBaselineTierEgressUDP",
            "CNPBaselineTierGress",
            "CNPBaselineTierIngressSCTP",
            "CNPBaselineTierIngressTCP",
            "CNPBaselineTierIngressUDP",
        ]
    );
}

#[test]
fn every_probe_names_a_pod_of_the_model_and_every_step_does_something() {
    let suite = suite();
    let cluster = &suite.model.cluster;
    let mut host_network_probes = 0;
    for case in &suite.cases {
        for (i, step) in case.steps.iter().enumerate() {
            assert!(!step.is_empty(), "{} step {}: empty", case.file, i + 1);
            for probe in &step.probes {
                let from = cluster.pod(&probe.from);
                let to = cluster.pod(&probe.to);
                assert!(from.is_some(), "{}: no pod {}", case.file, probe.from);
                let to = to.unwrap_or_else(|| panic!("{}: no pod {}", case.file, probe.to));
                // A host-network server stands for its node: the node must be in the model.
                if to.host_network {
                    host_network_probes += 1;
                    let node = to.node.as_deref().expect("scheduled");
                    assert!(suite.model.nodes.contains_key(node), "{}", case.file);
                }
            }
        }
    }
    assert_eq!(host_network_probes, 9);
}

#[test]
fn the_model_is_the_upstream_houses_on_two_nodes() {
    let suite = suite();
    let cluster = &suite.model.cluster;
    let houses = [
        ("gryffindor", "harry-potter", 1),
        ("slytherin", "draco-malfoy", 2),
        ("hufflepuff", "cedric-diggory", 3),
        ("ravenclaw", "luna-lovegood", 4),
    ];
    assert_eq!(cluster.namespaces().len(), 5);
    assert_eq!(cluster.pods().len(), 10);
    for (house, set, digit) in houses {
        let ns = format!("network-policy-conformance-{house}");
        assert_eq!(
            cluster
                .namespace(&ns)
                .expect(&ns)
                .labels
                .get("conformance-house")
                .expect("label conformance-house"),
            house
        );
        for replica in 0..2u8 {
            let pod = cluster
                .pod(&ObjectRef::new(&ns, format!("{set}-{replica}")))
                .expect("pod");
            let node = format!("node-{}", replica + 1);
            assert_eq!(
                pod.labels
                    .get("conformance-house")
                    .expect("label conformance-house"),
                house
            );
            assert_eq!(pod.node.as_deref(), Some(node.as_str()));
            assert!(!pod.host_network);
            let v4 = format!("10.244.{}.{digit}{replica}", replica + 1);
            let v6 = format!("fd00:10:244:{}::{digit}{replica}", replica + 1);
            assert_eq!(pod.ips, ips(&[&v4, &v6]), "{}", pod.id);
            assert_eq!(pod.named_port("web", Protocol::Tcp), Some(80));
            assert_eq!(pod.named_port("dns", Protocol::Udp), Some(53));
            assert_eq!(
                pod.ports.len(),
                2,
                "{}: only web and dns are declared",
                pod.id
            );
        }
    }
    let forest = "network-policy-conformance-forbidden-forrest";
    for replica in 0..2u8 {
        let pod = cluster
            .pod(&ObjectRef::new(forest, format!("centaur-{replica}")))
            .expect("centaur");
        let node = &suite.model.nodes[pod.node.as_deref().expect("scheduled")];
        assert!(pod.host_network);
        assert_eq!(pod.ips, node.internal_ips);
        let declared: BTreeMap<u16, (Protocol, String)> = pod
            .ports
            .iter()
            .map(|p| {
                (
                    p.port,
                    (
                        p.protocol,
                        p.name.as_deref().unwrap_or_default().to_string(),
                    ),
                )
            })
            .collect();
        assert_eq!(
            declared,
            BTreeMap::from([
                (34345, (Protocol::Tcp, "web-34345".to_string())),
                (34346, (Protocol::Tcp, "web-34346".to_string())),
                (34347, (Protocol::Udp, "dns-34347".to_string())),
                (34349, (Protocol::Udp, "dns-34349".to_string())),
            ])
        );
    }
    assert_eq!(suite.model.nodes.len(), 2);
    for (name, n) in [("node-1", 1), ("node-2", 2)] {
        let node = &suite.model.nodes[name];
        assert_eq!(
            node.labels
                .get("kubernetes.io/os")
                .expect("label kubernetes.io/os"),
            "linux"
        );
        assert_eq!(
            node.internal_ips,
            ips(&[
                &format!("192.168.100.{n}"),
                &format!("fd00:192:168:100::{n}")
            ])
        );
        assert_eq!(
            node.external_ips,
            ips(&[&format!("203.0.113.{n}"), &format!("2001:db8:100::{n}")])
        );
    }
}

/// `(cases, steps, probes)` of some cases.
fn tally<'a>(cases: impl Iterator<Item = &'a Case>) -> (usize, usize, usize) {
    cases.fold((0, 0, 0), |(c, s, p), case| {
        (c + 1, s + case.steps.len(), p + case.probes().count())
    })
}

#[test]
fn the_readme_counts_are_the_suites() {
    let suite = suite();
    let readme = std::fs::read_to_string(dir().join("README.md")).expect("README.md");
    let lines: BTreeSet<&str> = readme.lines().map(str::trim).collect();
    let mut expected = Vec::new();
    for (i, case) in suite.cases.iter().enumerate() {
        expected.push(format!(
            "| {:02} | {} | {} | {} | {} | {} |",
            i + 1,
            case.name,
            case.upstream.test,
            case.upstream.feature(),
            case.steps.len(),
            case.probes().count()
        ));
    }
    for feature in Feature::ALL {
        let (c, s, p) = tally(
            suite
                .cases
                .iter()
                .filter(|k| k.upstream.feature() == feature),
        );
        expected.push(format!("| {feature} | {c} | {s} | {p} |"));
    }
    let (c, s, p) = tally(suite.cases.iter());
    expected.push(format!("| every feature | {c} | {s} | {p} |"));
    for tier in ["Admin", "Baseline"] {
        let prefix = format!("CNP{tier}Tier");
        let (c, s, p) = tally(
            suite
                .cases
                .iter()
                .filter(|k| k.upstream.test.starts_with(&prefix)),
        );
        expected.push(format!("| {tier} | {c} | {s} | {p} |"));
    }
    let probes: Vec<_> = suite.cases.iter().flat_map(Case::probes).collect();
    for protocol in Protocol::ALL {
        let of: Vec<_> = probes.iter().filter(|p| p.protocol == protocol).collect();
        let allowed = of.iter().filter(|p| p.allowed).count();
        expected.push(format!(
            "| {} | {} | {allowed} | {} |",
            protocol.as_api(),
            of.len(),
            of.len() - allowed
        ));
    }
    let allowed = probes.iter().filter(|p| p.allowed).count();
    expected.push(format!(
        "| every protocol | {} | {allowed} | {} |",
        probes.len(),
        probes.len() - allowed
    ));
    let missing: Vec<&String> = expected
        .iter()
        .filter(|l| !lines.contains(l.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md lacks these rows (or has other numbers):\n{}",
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_readme_example_has_the_case_format() {
    let readme = std::fs::read_to_string(dir().join("README.md")).expect("README.md");
    let (_, rest) = readme
        .split_once("## Case format")
        .expect("a format section");
    let (_, rest) = rest.split_once("```yaml\n").expect("an example");
    let (example, _) = rest.split_once("```").expect("the example's end");
    let source = policy_compiler::input::Source {
        name: "README.md".to_string(),
        text: example.to_string(),
    };
    let case = policy_compiler::cnp_conformance::parse_case(&source)
        .unwrap_or_else(|e| panic!("the README's example: {e}"));
    assert_eq!(case.upstream.feature(), Feature::ClusterNetworkPolicy);
    let step = &case.steps[1];
    assert!(step.subtest.is_some());
    assert!(!step.delete.is_empty() && !step.labels.is_empty() && !step.probes.is_empty());
    assert!(!case.steps[0].apply.is_empty());
}

/// The endpoint of a probe's pod over a family: a pod that takes part in policy by its address,
/// or a host-network pod as its (node's) address.
fn endpoint<'a>(
    cluster: &'a policy_compiler::ClusterState,
    pod: &ObjectRef,
    family: policy_compiler::Family,
) -> Option<policy_compiler::analysis::Endpoint<'a>> {
    let p = cluster.pod(pod)?;
    let ip = p.ip(family)?;
    Some(if p.participates() {
        policy_compiler::analysis::Endpoint::pod(p, ip)
    } else {
        policy_compiler::analysis::Endpoint::from_ip(cluster, ip)
    })
}

#[test]
fn every_probe_of_every_step_is_what_the_evaluator_says_in_both_families() {
    let suite = suite();
    let mut checked = 0;
    for case in &suite.cases {
        let mut cluster = suite.model.cluster.clone();
        for (i, step) in case.steps.iter().enumerate() {
            case.apply_step(i, &mut cluster)
                .unwrap_or_else(|e| panic!("{}: {e}", case.file));
            for probe in &step.probes {
                for family in [policy_compiler::Family::V4, policy_compiler::Family::V6] {
                    let (Some(from), Some(to)) = (
                        endpoint(&cluster, &probe.from, family),
                        endpoint(&cluster, &probe.to, family),
                    ) else {
                        panic!(
                            "{}: {} or {} has no IPv{} address",
                            case.file,
                            probe.from,
                            probe.to,
                            family.number()
                        );
                    };
                    let verdict = policy_compiler::analysis::evaluate(
                        &cluster,
                        from,
                        to,
                        probe.protocol,
                        probe.port,
                    );
                    assert_eq!(
                        verdict.allowed(),
                        probe.allowed,
                        "{} step {} ({}): {} -> {} {}/{} over IPv{}:\n{}",
                        case.file,
                        i + 1,
                        step.description,
                        probe.from,
                        probe.to,
                        probe.port,
                        probe.protocol,
                        family.number(),
                        policy_compiler::analysis::explain_text(&verdict)
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * 301, "every probe in both families");
}

#[test]
fn every_probe_of_every_step_is_what_the_rendered_rulesets_do_in_both_families() {
    use policy_compiler::verify::{node_outcomes, to_own_node};
    let suite = suite();
    let mut checked = 0;
    let mut on_input_hook = 0;
    let mut failures = Vec::new();
    for case in &suite.cases {
        let mut cluster = suite.model.cluster.clone();
        for (i, step) in case.steps.iter().enumerate() {
            case.apply_step(i, &mut cluster)
                .unwrap_or_else(|e| panic!("{}: {e}", case.file));
            if step.probes.is_empty() {
                continue;
            }
            let rulesets = policy_compiler::compile_all(&cluster);
            for probe in &step.probes {
                for family in [policy_compiler::Family::V4, policy_compiler::Family::V6] {
                    let from = endpoint(&cluster, &probe.from, family).expect("address");
                    let to = endpoint(&cluster, &probe.to, family).expect("address");
                    let transport = Some((probe.protocol, probe.port));
                    let outcomes = node_outcomes(&cluster, &rulesets, &from, &to, transport)
                        .unwrap_or_else(|e| panic!("{}: interpreter: {e}", case.file));
                    assert!(
                        !outcomes.is_empty(),
                        "{}: no node judged {probe:?}",
                        case.file
                    );
                    if to_own_node(&cluster, &from, &to) {
                        on_input_hook += 1;
                    }
                    let accepted = outcomes.iter().all(|(_, o)| o.accepted);
                    if accepted != probe.allowed {
                        let trace: Vec<String> = outcomes
                            .iter()
                            .flat_map(|(node, o)| {
                                o.trace.iter().map(move |t| format!("  {node}: {t}"))
                            })
                            .collect();
                        failures.push(format!(
                            "{} step {} ({}): {} -> {} {}/{} over IPv{}: upstream expects {}, \
                             rulesets say {accepted}\n{}",
                            case.file,
                            i + 1,
                            step.description,
                            probe.from,
                            probe.to,
                            probe.port,
                            probe.protocol,
                            family.number(),
                            probe.allowed,
                            trace.join("\n")
                        ));
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} probes differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, 2 * 301, "every probe in both families");
    // The node peer cases reach a pod's own node: those packets go through the input hook.
    assert!(on_input_hook > 0, "no probe reached its own node");
}
