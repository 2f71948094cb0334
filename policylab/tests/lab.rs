//! The lab on the real kernel (root): the upstream e2e conformance cases measured with packets, and
//! generated clusters whose measured connectivity must equal the evaluator's prediction.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use policy_compiler::analysis::PortProto;
use policy_compiler::conformance::Suite;
use policy_compiler::generate::{cluster, Shape};
use policylab::lab::kernel_available;
use policylab::lab_run::{run_case, schedule, LabCluster, Via};

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
