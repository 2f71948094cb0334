//! `policyc compile`: the ruleset of one node, or of every node.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use policy_compiler::nft::Ruleset;
use policy_compiler::workload::place_unscheduled;
use policy_compiler::{compile_all, compile_node, ClusterState};

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
}

/// The ruleset of `node`, pods without a node (a repository's workloads) taken to run on it;
/// warns when the node runs no pod of the input.
pub fn compile_on_node(cluster: &mut ClusterState, node: &str) -> Ruleset {
    place_unscheduled(cluster, node);
    if !cluster.nodes().contains(node) {
        eprintln!("policyc: node {node} runs no pod of the input; its ruleset isolates nothing");
    }
    compile_node(cluster, node)
}

pub fn run(args: CompileArgs) -> Result<Output> {
    let mut loaded = args.input.load()?;
    let cluster = &mut loaded.cluster;
    if let Some(node) = &args.node {
        return Ok(Output::clean(compile_on_node(cluster, node).render()));
    }
    if let Some(dir) = args.out_dir {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut written = String::new();
        for (node, ruleset) in compile_all(cluster) {
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
            compile_node(cluster, nodes.first().copied().unwrap_or_default()).render(),
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
