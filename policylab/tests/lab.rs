//! The lab on the real kernel (root): the upstream e2e and network-policy-api conformance cases
//! measured with packets, and generated clusters whose measured connectivity must equal the
//! evaluator's prediction.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use policy_compiler::analysis::PortProto;
use policy_compiler::cidr::Family;
use policy_compiler::cnp_conformance;
use policy_compiler::conformance::Suite;
use policy_compiler::generate::{cluster, Shape};
use policy_compiler::model::Protocol;
use policylab::lab::kernel_available;
use policylab::lab_run::{run_case, run_cnp_case, schedule, LabCluster, Via};

const TIMEOUT: Duration = Duration::from_millis(250);

#[test]
fn upstream_conformance_on_the_real_kernel() {
    if !kernel_available("upstream_conformance_on_the_real_kernel") {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/upstream-e2e");
    let suite = Suite::read(&dir).expect("suite");
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut passed, mut cells, mut partial) = (0, 0, 0);
    let mut skipped = Vec::new();
    for case in &suite.cases {
        if case.context == "SCTP" {
            skipped.push(case.name.clone());
            continue;
        }
        let outcome = run_case(&suite.model, case, TIMEOUT)
            .unwrap_or_else(|e| panic!("case {}: {e}", case.name));
        cells += outcome.cells;
        partial += outcome.partial_applies;
        if outcome.mismatches.is_empty() {
            passed += 1;
        } else {
            failures.push(format!(
                "{}:\n  {}",
                case.name,
                outcome.mismatches.join("\n  ")
            ));
        }
    }
    eprintln!(
        "lab conformance: {passed} cases passed, {} failed, {cells} cells measured, {partial} diff \
         transactions; skipped (no SCTP in this kernel): {}; {:.1}s",
        failures.len(),
        skipped.join(", "),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(skipped.len(), 3, "only the SCTP context is skipped");
    assert!(
        partial > 0,
        "steps after the first must be applied as diffs"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn generated_clusters_measure_as_predicted() {
    if !kernel_available("generated_clusters_measure_as_predicted") {
        return;
    }
    let ports: Vec<PortProto> = ["80/TCP", "8080/TCP", "81/TCP", "53/UDP"]
        .iter()
        .map(|p| p.parse().expect("port"))
        .collect();
    let mut mismatches = Vec::new();
    let mut flows = 0;
    for seed in 1..=6u64 {
        let c = schedule(
            &cluster(
                seed,
                Shape {
                    pods: 7,
                    policies: 4,
                    nodes: 2,
                },
            ),
            2,
        );
        let mut lab =
            LabCluster::build(c, Vec::new(), &ports).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        lab.enforce().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        for via in [Via::Pod, Via::Service] {
            let (measured, _) = lab
                .measure(&[], &ports, via, TIMEOUT)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            flows += measured.len();
            for m in measured.iter().filter(|m| m.allowed != m.predicted) {
                mismatches.push(format!(
                    "seed {seed} via {}: {} -> {} {} IPv{}: measured {}, predicted {}",
                    via.as_str(),
                    m.from,
                    m.to,
                    m.port,
                    m.family.number(),
                    m.allowed,
                    m.predicted
                ));
            }
        }
        lab.teardown().expect("teardown");
    }
    eprintln!("differential: {flows} flows measured on 6 generated clusters");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn network_policy_api_conformance_on_the_real_kernel() {
    if !kernel_available("network_policy_api_conformance_on_the_real_kernel") {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/network-policy-api");
    let suite = cnp_conformance::Suite::read(&dir).expect("suite");
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut steps, mut v4, mut v6, mut own_node, mut sctp, mut partial) = (0, 0, 0, 0, 0, 0);
    for case in &suite.cases {
        let outcome = run_cnp_case(&suite.model, case, TIMEOUT)
            .unwrap_or_else(|e| panic!("case {}: {e}", case.name));
        assert_eq!(outcome.steps, case.steps.len(), "{}", case.name);
        steps += outcome.steps;
        v4 += outcome.measured.get(&Family::V4).copied().unwrap_or(0);
        v6 += outcome.measured.get(&Family::V6).copied().unwrap_or(0);
        own_node += outcome.to_own_node;
        sctp += outcome.sctp_evaluated;
        partial += outcome.partial_applies;
        if !outcome.mismatches.is_empty() {
            failures.push(format!(
                "{}:\n  {}",
                case.name,
                outcome.mismatches.join("\n  ")
            ));
        }
    }
    eprintln!(
        "network-policy-api on the lab: {} cases, {} failed, {steps} steps, probes measured IPv4 \
         {v4} IPv6 {v6} ({own_node} to the source's own node), {sctp} SCTP evaluated only, \
         {partial} diff transactions; {:.1}s",
        suite.cases.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every TCP and UDP probe of every step is sent in both families; every SCTP one is evaluated
    // in both.
    let probes: Vec<&cnp_conformance::Probe> =
        suite.cases.iter().flat_map(|c| c.probes()).collect();
    let sctp_probes = probes
        .iter()
        .filter(|p| p.protocol == Protocol::Sctp)
        .count();
    assert_eq!(v4, probes.len() - sctp_probes);
    assert_eq!(v6, probes.len() - sctp_probes);
    assert_eq!(sctp, 2 * sctp_probes);
    assert_eq!(
        steps,
        suite.cases.iter().map(|c| c.steps.len()).sum::<usize>()
    );
    // The node-peer cases reach the client's own node through the input hook.
    assert!(own_node > 0, "no probe reached its own node");
    assert!(
        partial > 0,
        "steps after the first must be applied as diffs"
    );
}
