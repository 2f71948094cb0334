//! `policyc diff`: what a change does to who can reach whom.

use std::path::Path;

use anyhow::Result;
use clap::{Args, ValueEnum};

use policy_compiler::analysis::connectivity::Connectivity;
use policy_compiler::diff::{self, ChangeKind, NodeTransaction, Version};
use policy_compiler::nft::transaction::Transaction;

use crate::compile::compile_on_node;
use crate::{InputFailure, Output, ReadArgs};

/// Print the connections a change adds, removes and changes, and the workloads it adds and removes
///
///     policyc diff [OPTIONS] OLD... -- NEW...
///
/// Each side is one or more paths (a cluster dump and the policies of a branch, say), read alike
/// (`--namespace`, `--strict` and `--pod-cidr` apply to both). Options go before `--`: everything
/// after it is a path of the new version.
///
/// Each change names the policies that cause it (added, removed or edited ones among those that
/// decide the pair; a ClusterNetworkPolicy by its rules that decide some of the pair's connections
/// in either version, with tier, priority and action) and the workloads and nodes of the pair that
/// changed (added, removed, relabelled).
/// External ranges are compared address by address: a changed ipBlock shows as the addresses
/// whose connectivity changed. Markdown is a pull-request comment.
///
/// Exit status: 1 when a change of a kind given to `--fail-on` exists; 2 when either side is
/// invalid, with nothing on standard output.
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct DiffArgs {
    /// The old version: manifest files, directories, or `-` for standard input.
    #[arg(required = true, value_name = "OLD")]
    old: Vec<String>,
    /// The new version, after `--`.
    #[arg(last = true, required = true, value_name = "NEW")]
    new: Vec<String>,
    #[command(flatten)]
    reading: ReadArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = DiffFormat::Text)]
    output: DiffFormat,
    /// Also print the nft transaction the agent would apply on this node (pods without a node
    /// are taken to run on it, as `compile --node` does).
    #[arg(long)]
    node: Option<String>,
    /// Exit 1 when a change of these kinds exists (repeatable or comma-separated): a workload
    /// added or removed counts as `any`.
    #[arg(long, value_enum, value_delimiter = ',')]
    fail_on: Vec<FailOn>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DiffFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum FailOn {
    /// A pair with nothing allowed before and something now.
    Added,
    /// A pair with something allowed before and nothing now.
    Removed,
    /// A pair allowed before and after, but not the same.
    Changed,
    /// Any of those, or a workload added or removed.
    Any,
}

pub fn run(args: DiffArgs) -> Result<Output> {
    if args.old.iter().any(|p| p == "-") && args.new.iter().any(|p| p == "-") {
        return Err(InputFailure(
            "policyc diff: standard input (-) can be read by one side only".to_string(),
        )
        .into());
    }
    if let Some(option) = args
        .new
        .iter()
        .find(|p| p.starts_with('-') && *p != "-" && !Path::new(p).exists())
    {
        return Err(InputFailure(format!(
            "{option}: not a file; options go before `--` (everything after it is a path of \
             the new version)"
        ))
        .into());
    }
    let old = args.reading.load(&args.old)?;
    let new = args.reading.load(&args.new)?;
    let old_connectivity = Connectivity::compute(&old.cluster, &old.cidrs);
    let new_connectivity = Connectivity::compute(&new.cluster, &new.cidrs);
    let diff = diff::diff(
        Version::new(&old.cluster, &old_connectivity),
        Version::new(&new.cluster, &new_connectivity),
    );
    let transaction = args.node.as_ref().map(|node| {
        let before = compile_on_node(&mut old.cluster.clone(), node);
        let after = compile_on_node(&mut new.cluster.clone(), node);
        NodeTransaction {
            node: node.clone(),
            text: Transaction::diff(&before, &after).render(),
        }
    });
    let stdout = match args.output {
        DiffFormat::Text => diff::to_text(&diff, transaction.as_ref()),
        DiffFormat::Markdown => diff::to_markdown(&diff, transaction.as_ref()),
        DiffFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&diff::to_json(&diff, transaction.as_ref()))?
        ),
    };
    let findings = args.fail_on.iter().any(|kind| match kind {
        FailOn::Added => !diff.of_kind(ChangeKind::Added).is_empty(),
        FailOn::Removed => !diff.of_kind(ChangeKind::Removed).is_empty(),
        FailOn::Changed => !diff.of_kind(ChangeKind::Changed).is_empty(),
        FailOn::Any => !diff.is_empty(),
    });
    Ok(Output { stdout, findings })
}
