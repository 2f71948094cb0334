//! `policyc generate`: seeded, realistic clusters as manifests.

use std::io::Write;

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};

use policy_compiler::generate::guardrails::with_guardrails;
use policy_compiler::generate::{workload, WorkloadSize};
use policy_compiler::manifest::cluster_manifests;

use crate::Output;

/// Print a seeded, realistic cluster (namespaces, deployments' pods, policies) as manifests.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// `small` (100 pods, 20 policies), `medium` (10k pods, 1k policies, 100 namespaces, 50
    /// nodes) or `large` (100k pods, 10k policies, 1000 namespaces, 500 nodes).
    #[arg(long, default_value = "small")]
    size: String,
    /// The seed: the same seed and size give the same cluster.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also this many ClusterNetworkPolicies (guardrails of 10 rules each: four in five Admin, the
    /// rest Baseline) and a Node per node, which their `nodes` peers select.
    #[arg(long, default_value_t = 0, value_name = "N")]
    cluster_policies: usize,
    /// Output format: a multi-document YAML stream, or one JSON `List`.
    #[arg(short = 'o', long, value_enum, default_value_t = GenerateFormat::Yaml)]
    output: GenerateFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GenerateFormat {
    Yaml,
    Json,
}

/// Writes straight to standard output (a large cluster is not held as one string).
pub fn run(args: GenerateArgs) -> Result<Output> {
    let size = WorkloadSize::named(&args.size)
        .ok_or_else(|| anyhow!("--size {:?}: use small, medium or large", args.size))?;
    let mut cluster = workload(args.seed, size);
    if args.cluster_policies > 0 {
        cluster = with_guardrails(&cluster, args.seed, args.cluster_policies, size.nodes);
    }
    let items = cluster_manifests(&cluster);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.output {
        GenerateFormat::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            serde_json::to_writer(&mut out, &list)?;
            writeln!(out)?;
        }
        GenerateFormat::Yaml => {
            for item in &items {
                writeln!(out, "---")?;
                out.write_all(serde_saphyr::to_string(item)?.as_bytes())?;
            }
        }
    }
    out.flush()?;
    Ok(Output::clean(String::new()))
}
