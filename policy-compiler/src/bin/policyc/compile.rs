//! `policyc compile`: the ruleset of one node, or of every node.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use policy_compiler::nft::Ruleset;
use policy_compiler::plan::{
    compile_all_with, compile_node_with, CompileOptions, Compiled, DenyLog,
};
use policy_compiler::workload::place_unscheduled;
use policy_compiler::ClusterState;

use crate::{InputArgs, Output};

/// Print the nftables ruleset a node enforces (loadable with `nft -f`).
#[derive(Args, Debug)]
pub struct CompileArgs {
    #[command(flatten)]
    input: InputArgs,
    /// The node whose ruleset to print: its own pods are the targets, peers are cluster-wide. Pods
    /// without a node (a repository's workloads) are taken to run on it, so a repository's
    /// ruleset reads as "a node running one replica of every workload".
    #[arg(long)]
    node: Option<String>,
    /// Write one `<node>.nft` file per node into this directory instead.
    #[arg(long, conflicts_with = "node")]
    out_dir: Option<PathBuf>,
    /// Include the deny log rules `policyd --deny-log` loads: before each drop point, a
    /// rate-limited NFLOG rule whose prefix is the drop point's counter.
    #[arg(long)]
    deny_log: bool,
    /// The NFLOG group of the deny log.
    #[arg(long, default_value_t = DenyLog::DEFAULT.group, requires = "deny_log")]
    deny_log_group: u16,
    /// Log messages per second per drop point.
    #[arg(long, default_value_t = DenyLog::DEFAULT.rate, requires = "deny_log")]
    deny_log_rate: u32,
    /// Log messages a drop point may send at once above the rate.
    #[arg(long, default_value_t = DenyLog::DEFAULT.burst, requires = "deny_log")]
    deny_log_burst: u32,
    /// Every policy in audit mode, as `policyd --audit-all` loads it: each drop point counts (and
    /// logs) a "would deny" and accepts.
    #[arg(long)]
    audit_all: bool,
}

impl CompileArgs {
    fn options(&self) -> CompileOptions {
        CompileOptions {
            deny_log: self.deny_log.then_some(DenyLog {
                group: self.deny_log_group,
                rate: self.deny_log_rate,
                burst: self.deny_log_burst,
            }),
            audit_all: self.audit_all,
        }
    }
}

/// The ruleset of `node`, pods without a node (a repository's workloads) taken to run on it;
/// warns when the node runs no pod of the input.
pub fn compile_on_node(cluster: &mut ClusterState, node: &str) -> Ruleset {
    compile_on_node_with(cluster, node, &CompileOptions::default())
}

/// [`compile_on_node`] with compile options.
fn compile_on_node_with(
    cluster: &mut ClusterState,
    node: &str,
    options: &CompileOptions,
) -> Ruleset {
    place_unscheduled(cluster, node);
    if !cluster.nodes().contains(node) {
        eprintln!("policyc: node {node} runs no pod of the input; its ruleset isolates nothing");
    }
    compile_node_with(cluster, node, options).ruleset
}

pub fn run(args: CompileArgs) -> Result<Output> {
    let options = args.options();
    let mut loaded = args.input.load()?;
    let cluster = &mut loaded.cluster;
    if let Some(node) = &args.node {
        return Ok(Output::clean(
            compile_on_node_with(cluster, node, &options).render(),
        ));
    }
    if let Some(dir) = args.out_dir {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut written = String::new();
        for (node, Compiled { ruleset, .. }) in compile_all_with(cluster, &options) {
            let path = dir.join(format!("{node}.nft"));
            std::fs::write(&path, ruleset.render())
                .with_context(|| format!("cannot write {}", path.display()))?;
            written.push_str(&format!("{}\n", path.display()));
        }
        return Ok(Output::clean(written));
    }
    let nodes = cluster.nodes();
    match nodes.len() {
        1 => Ok(Output::clean(
            compile_node_with(
                cluster,
                nodes.first().copied().unwrap_or_default(),
                &options,
            )
            .ruleset
            .render(),
        )),
        0 => bail!(
            "no pod in the input is scheduled to a node (spec.nodeName): pass --node NAME (pods \
             without a node are then taken to run on it)"
        ),
        _ => bail!(
            "the input has several nodes ({}): pass --node NAME for one, or --out-dir DIR for all",
            nodes.into_iter().collect::<Vec<_>>().join(", ")
        ),
    }
}
