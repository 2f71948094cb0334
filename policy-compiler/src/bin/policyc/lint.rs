//! `policyc lint`: findings about policies and workloads, located, as text, JSON or SARIF.

use anyhow::Result;
use clap::{Args, ValueEnum};

use policy_compiler::lint::report::{self, SarifTool};
use policy_compiler::lint::{lint, Finding, LintInput, Severity, RULES};
use policy_compiler::workload::materialize;

use crate::{InputArgs, Output};

/// Report policies and workloads that are valid but probably wrong.
///
/// Each finding has a rule id, a severity (warning or note) and the file, line and column of the
/// object or field it is about, with paths as given (relative paths stay relative: run from the
/// repository root for repository-relative locations). Standard input (`-`) is named `<stdin>`
/// (`%3Cstdin%3E` in SARIF). Text and JSON go to standard output, a one-line summary to standard
/// error. Exit status: 0 whatever is found unless `--deny` says otherwise; 1 with `--deny warnings`
/// when there is a warning, with `--deny notes` when there is any finding; 2 for invalid input.
#[derive(Args, Debug)]
#[command(after_help = rules_help())]
pub struct LintArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Output format: `text` (`file:line:col: warning[rule-id]: message`), `json`, or `sarif`
    /// (SARIF 2.1.0, for code scanning).
    #[arg(short = 'o', long, value_enum, default_value_t = LintFormat::Text)]
    output: LintFormat,
    /// Exit 1 when there are findings of this severity or worse: `warnings`, or `notes` (any
    /// finding).
    #[arg(long, value_enum)]
    deny: Option<Deny>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LintFormat {
    Text,
    Json,
    Sarif,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Deny {
    /// Warnings.
    Warnings,
    /// Warnings and notes.
    Notes,
}

impl Deny {
    fn denies(self, severity: Severity) -> bool {
        match self {
            Deny::Warnings => severity == Severity::Warning,
            Deny::Notes => true,
        }
    }
}

/// The rules, locations and exit statuses, under `policyc lint --help`.
fn rules_help() -> String {
    let mut text = String::from(
        "Locations are the paths as given (run from the repository root for repository-relative \
         ones); standard input is <stdin> (%3Cstdin%3E in SARIF). The summary line goes to \
         standard error.\n\nExit status: 0 whatever is found, unless --deny: 1 with --deny \
         warnings when there is a warning, with --deny notes when there is any finding; 2 for \
         invalid input (nothing on standard output).\n\nRules:\n",
    );
    for rule in RULES {
        text.push_str(&format!(
            "  {:<26}{:<8} {}\n",
            rule.id,
            rule.severity.as_str(),
            rule.summary
        ));
    }
    text
}

pub fn run(args: LintArgs) -> Result<Output> {
    let reading = &args.input.reading;
    let pod_cidrs = reading.cidrs()?;
    let (sources, manifests) = reading.read(&args.input.paths)?;
    let mut cluster = manifests.cluster;
    materialize(&mut cluster, &pod_cidrs);
    let findings: Vec<Finding> = lint(&LintInput {
        sources: &sources,
        locations: &manifests.locations,
        cluster: &cluster,
        pod_cidrs: &pod_cidrs,
    });
    let stdout = match args.output {
        LintFormat::Text => report::to_text(&findings),
        LintFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&report::to_json(&findings))?
        ),
        LintFormat::Sarif => {
            let tool = SarifTool {
                name: "policyc".to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                information_uri: Some(env!("CARGO_PKG_REPOSITORY"))
                    .filter(|uri| !uri.is_empty())
                    .map(str::to_string),
            };
            let base = std::env::current_dir().ok();
            let sarif = report::to_sarif(&findings, &tool, base.as_deref());
            format!("{}\n", serde_json::to_string_pretty(&sarif)?)
        }
    };
    eprintln!("policyc lint: {}", report::summary(&findings));
    let denied = args
        .deny
        .is_some_and(|deny| findings.iter().any(|f| deny.denies(f.severity())));
    Ok(Output {
        stdout,
        findings: denied,
    })
}
