//! The upstream Kubernetes NetworkPolicy e2e suite, ported as data in `fixtures/upstream-e2e`, run
//! against the evaluator and against the rendered rulesets (through the nft interpreter).

mod common;

use common::suite;
use policy_compiler::analysis::{evaluate, explain_text, Endpoint, PortProto};
use policy_compiler::cidr::Family;
use policy_compiler::model::Protocol;
use policy_compiler::plan::compile_all;
use policy_compiler::verify::{disagreements, rulesets_allow};

/// Every port the model serves, for the ruleset cross-check.
fn model_ports() -> Vec<PortProto> {
    let mut ports = Vec::new();
    for protocol in Protocol::ALL {
        for port in [80, 81, 82] {
            ports.push(PortProto { port, protocol });
        }
    }
    ports
}

#[test]
fn suite_has_every_upstream_connectivity_test() {
    let suite = suite();
    assert_eq!(suite.cases.len(), 48, "upstream has 48 connectivity tests");
    let count = |ctx: &str| suite.cases.iter().filter(|c| c.context == ctx).count();
    assert_eq!((count("TCP"), count("UDP"), count("SCTP")), (42, 3, 3));
    assert_eq!(suite.model.participating_pods().count(), 9);
}

#[test]
fn evaluator_and_rulesets_match_every_upstream_step() {
    let suite = suite();
    let mut failures = Vec::new();
    let (mut steps, mut probes, mut cells, mut cross_checked) = (0, 0, 0, 0);
    for case in &suite.cases {
        let mut cluster = suite.model.clone();
        let pods = case.pod_refs();
        assert_eq!(
            pods.len(),
            case.pods.len(),
            "{}: malformed pods list",
            case.name
        );
        for (i, step) in case.steps.iter().enumerate() {
            case.apply_step(i, &mut cluster)
                .unwrap_or_else(|e| panic!("{}: {e}", case.file));
            steps += 1;
            let rulesets = compile_all(&cluster);
            for probe in &step.probes {
                probes += 1;
                let port = PortProto {
                    port: probe.port,
                    protocol: probe.protocol(),
                };
                for ((from, to), expected) in probe.expected(&pods) {
                    if from == to {
                        continue; // upstream ignores loopback
                    }
                    let a = cluster.pod(&from).expect("model pod");
                    let b = cluster.pod(&to).expect("model pod");
                    let (ea, eb) = (
                        Endpoint::pod(a, a.ip(Family::V4).expect("IPv4 model")),
                        Endpoint::pod(b, b.ip(Family::V4).expect("IPv4 model")),
                    );
                    let verdict = evaluate(&cluster, ea, eb, port.protocol, port.port);
                    let nft = rulesets_allow(&cluster, &rulesets, &ea, &eb, port)
                        .unwrap_or_else(|e| panic!("{}: interpreter: {e}", case.name));
                    cells += 1;
                    if verdict.allowed() != expected || nft != expected {
                        failures.push(format!(
                            "{} step {} ({}): {from} -> {to} {port}: upstream expects {}, evaluator \
                             says {}, rulesets say {}\n{}",
                            case.name,
                            i + 1,
                            step.description,
                            expected,
                            verdict.allowed(),
                            nft,
                            explain_text(&verdict)
                        ));
                    }
                }
            }
            // Beyond upstream's matrix: every pair of the nine pods, on every port, and an outside
            // address, must get the same verdict from the rulesets as from the evaluator.
            let outside = ["192.0.2.10".parse().expect("ip")];
            for d in disagreements(&cluster, &rulesets, &model_ports(), &outside) {
                failures.push(format!(
                    "{} step {}: rulesets disagree with the evaluator on {}: evaluator {}, rulesets {:?}",
                    case.name,
                    i + 1,
                    d.flow,
                    d.expected,
                    d.rulesets
                ));
            }
            cross_checked += 1;
        }
    }
    eprintln!(
        "conformance: {} cases, {steps} steps, {probes} probes, {cells} upstream cells matched; \
         {cross_checked} steps cross-checked against the rulesets",
        suite.cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
