//! `policyc verify`: must-allow and must-deny expectations checked against the connectivity.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use policy_compiler::analysis::connectivity::Connectivity;
use policy_compiler::verify_rules;

use crate::{InputArgs, InputFailure, Output};

/// Violations shown per rule (all are counted).
const SHOWN: usize = 10;

/// Check must-allow and must-deny expectations against the connectivity
///
/// The rules file is YAML (the repository's fixtures/verify/rules.yaml explains every form):
///
///     rules:
///       - name: web accepts the frontend on 8080
///         allow:                      # or deny:
///           from: {workload: shop/frontend}
///           to: {workload: "shop/web[Deployment]"}
///           protocol: TCP             # TCP (default), UDP, SCTP or ICMP (no port)
///           port: 8080                # or ports: 8080-8090; absent: every port
///
/// An endpoint is one of `workload: ns/name[Kind]` (or `ns/name`), `namespace: NAME`,
/// `pods: {namespace: NAME, labels: {...}}`, `namespaceLabels: {...}` or `cidr: PREFIX`
/// (external addresses, outside the pod CIDRs). An allow holds when every selected pair allows
/// every port of the range over every address family the pair has; a deny when no pair allows
/// any. A workload with itself is not judged. Every violated rule is printed with the first
/// pairs that break it and the policies deciding them.
///
/// Exit status: 1 when a rule is violated; 2 on invalid input or an invalid rules file (a
/// selector that matches nothing included), with nothing on standard output.
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct VerifyArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The rules file (YAML).
    #[arg(long, value_name = "FILE")]
    rules: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = VerifyFormat::Text)]
    output: VerifyFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum VerifyFormat {
    Text,
    Json,
}

pub fn run(args: VerifyArgs) -> Result<Output> {
    let name = args.rules.display().to_string();
    let text = std::fs::read_to_string(&args.rules)
        .map_err(|e| InputFailure(format!("{name}: cannot read: {e}")))?;
    let rules = verify_rules::parse(&name, &text).map_err(|e| InputFailure(e.to_string()))?;
    let loaded = args.input.load()?;
    let connectivity = Connectivity::compute(&loaded.cluster, &loaded.cidrs);
    let outcomes = verify_rules::check(&rules, &loaded.cluster, &connectivity, SHOWN)
        .map_err(|e| InputFailure(e.to_string()))?;
    let stdout = match args.output {
        VerifyFormat::Text => verify_rules::to_text(&outcomes),
        VerifyFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&verify_rules::to_json(&outcomes))?
        ),
    };
    Ok(Output {
        stdout,
        findings: outcomes.iter().any(|o| !o.holds()),
    })
}
