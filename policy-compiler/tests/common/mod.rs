//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use policy_compiler::conformance::Suite;
use policy_compiler::generate::{cluster, Shape};
use policy_compiler::input::{parse_sources, read_paths};
use policy_compiler::nft::Ruleset;
use policy_compiler::plan::compile_all;

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `policyc` with `args` in `dir`, writing `stdin` (or nothing) to its standard input.
pub fn policyc_in(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run policyc");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("policyc output")
}

/// Runs `policyc` in the repository root, as CI does (paths in its messages are relative to it).
pub fn policyc(args: &[&str], stdin: Option<&str>) -> Output {
    policyc_in(&root(), args, stdin)
}

/// Bytes as text, lossily.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// The upstream e2e suite.
pub fn suite() -> Suite {
    Suite::read(&fixtures().join("upstream-e2e"))
        .unwrap_or_else(|e| panic!("cannot read the suite: {e}"))
}

/// Upstream cases whose final state is kept as a golden ruleset.
pub const GOLDEN_CASES: [&str; 4] = [
    "14-ports",
    "17-ingress-one-named-port",
    "29-egress-to-pod-in-other-ns-pod-and-namespace-selector",
    "35-egress-cidr-except",
];

/// `(file stem, rendered text)` for every golden ruleset: the demo's nodes, and the nodes of each
/// golden upstream case after its last step.
pub fn golden_rulesets() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let sources = read_paths(&[fixtures().join("demo").display().to_string()]).expect("read demo");
    let demo = parse_sources(&sources).expect("valid demo").cluster;
    for (node, ruleset) in compile_all(&demo) {
        out.push((format!("demo-{node}"), ruleset.render()));
    }
    let suite = suite();
    for name in GOLDEN_CASES {
        let case = suite
            .cases
            .iter()
            .find(|c| c.file.contains(name))
            .unwrap_or_else(|| panic!("no case {name}"));
        let mut cluster = suite.model.clone();
        for i in 0..case.steps.len() {
            case.apply_step(i, &mut cluster).expect("step applies");
        }
        for (node, ruleset) in compile_all(&cluster) {
            out.push((format!("upstream-{name}-{node}"), ruleset.render()));
        }
    }
    out
}

/// Whether this process may use the kernel's nftables: root with `nft` installed. When it may not,
/// prints a loud note and returns false, or panics under `NFTPOLICY_REQUIRE_LAB=1` (CI), where a
/// skipped kernel test would hide a failure. (The same rule as `policylab::lab::kernel_available`,
/// which this pure crate cannot depend on.)
pub fn kernel_available(test: &str) -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let nft = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && nft {
        return true;
    }
    let why = match (root, nft) {
        (false, _) => "it needs root",
        _ => "`nft` is not installed (apt-get install nftables)",
    };
    if std::env::var("NFTPOLICY_REQUIRE_LAB").is_ok_and(|v| v == "1") {
        panic!("{test}: {why}, and NFTPOLICY_REQUIRE_LAB=1 forbids skipping");
    }
    // Straight to the standard error: the test harness captures `eprintln!` of passing tests.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!! SKIPPED {test}: {why} !!!!!!!!\n"
    );
    false
}

/// Every node's ruleset after every step of every upstream case, labelled `case step N node`.
pub fn conformance_rulesets() -> Vec<(String, Ruleset)> {
    let suite = suite();
    let mut out = Vec::new();
    for case in &suite.cases {
        let mut c = suite.model.clone();
        for i in 0..case.steps.len() {
            case.apply_step(i, &mut c).expect("step applies");
            for (node, r) in compile_all(&c) {
                out.push((format!("{} step {} {node}", case.name, i + 1), r));
            }
        }
    }
    out
}

/// Every node's ruleset of generated clusters (8 pods, some dual-stack, 4 policies, 2 nodes), one
/// per seed, labelled `generated seed N node`.
pub fn generated_rulesets(seeds: std::ops::Range<u64>) -> Vec<(String, Ruleset)> {
    let shape = Shape {
        pods: 8,
        policies: 4,
        nodes: 2,
    };
    seeds
        .flat_map(|seed| {
            compile_all(&cluster(seed, shape))
                .into_iter()
                .map(move |(node, r)| (format!("generated seed {seed} {node}"), r))
        })
        .collect()
}
