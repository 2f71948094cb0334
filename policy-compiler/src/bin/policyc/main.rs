//! `policyc`: compile Kubernetes NetworkPolicy manifests to nftables, and analyse connectivity offline.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod compile;
mod connections;
mod diff;
mod explain;
mod generate;
mod graph;
mod lint;
mod matrix;
mod verify;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use policy_compiler::input::{parse_sources_with, read_paths, Manifests, ParseOptions, Source};
use policy_compiler::workload::{materialize, PodCidrs};
use policy_compiler::ClusterState;

/// Compile Kubernetes NetworkPolicy to per-node nftables rulesets, and analyse connectivity offline.
///
/// PATH arguments are files, directories (read recursively: *.yaml, *.yml, *.json) or `-` for standard
/// input (`kubectl kustomize DIR | policyc ... -`, `helm template ... | policyc ... -`); YAML may hold
/// several documents, and `List` kinds (as `kubectl get -o yaml` prints) are unpacked. Namespaces,
/// Pods, NetworkPolicies, ClusterNetworkPolicies (policy.networking.k8s.io v1beta1 and v1alpha2),
/// Nodes and workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job,
/// CronJob) are read; other documents are skipped with one warning per file. Exit status: 0 clean, 1 findings (when a command is asked to fail on them), 2 invalid
/// input, with nothing on standard output.
#[derive(Parser, Debug)]
#[command(name = "policyc", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where manifests come from and how they are read.
#[derive(Args, Debug, Clone)]
struct InputArgs {
    /// Manifest files, directories, or `-` for standard input.
    #[arg(required = true)]
    paths: Vec<String>,
    #[command(flatten)]
    reading: ReadArgs,
}

/// How manifests are read (shared by every command that reads them).
#[derive(Args, Debug, Clone)]
struct ReadArgs {
    /// The namespace of objects that name none (as kubectl's -n).
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Reject documents that are not Kubernetes objects and objects of kinds that play no part
    /// (exit 2), instead of skipping them with a warning.
    #[arg(long)]
    strict: bool,
    /// The cluster's pod address ranges, one or more CIDRs (comma-separated): pods without an
    /// address (a repository's workloads) get one synthesised from them, stable by namespace and
    /// name, and external addresses are those outside them. Default: 10.244.0.0/16 and
    /// fd00:10:244::/56 (kind's), dual-stack; give one IPv4 CIDR for single-stack.
    #[arg(long, value_delimiter = ',')]
    pod_cidr: Vec<String>,
}

// Each command's help is its arguments' doc comment (a doc comment here would replace it).
#[derive(Subcommand, Debug)]
enum Command {
    Compile(compile::CompileArgs),
    Matrix(matrix::MatrixArgs),
    Connections(connections::ConnectionsArgs),
    Explain(explain::ExplainArgs),
    Graph(graph::GraphArgs),
    Diff(diff::DiffArgs),
    Verify(verify::VerifyArgs),
    Lint(lint::LintArgs),
    Generate(generate::GenerateArgs),
}

/// What a command printed, and whether it found what it was asked to fail on (exit 1).
struct Output {
    stdout: String,
    findings: bool,
}

impl Output {
    fn clean(stdout: String) -> Self {
        Self {
            stdout,
            findings: false,
        }
    }
}

/// Invalid input: printed as it is, exit status 2.
#[derive(Debug)]
struct InputFailure(String);

impl std::fmt::Display for InputFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputFailure {}

/// The cluster of some paths' manifests, made analysable (workloads as pods, addresses
/// synthesised), and the pod CIDRs used.
struct Loaded {
    cluster: ClusterState,
    cidrs: PodCidrs,
}

impl ReadArgs {
    fn cidrs(&self) -> std::result::Result<PodCidrs, InputFailure> {
        if self.pod_cidr.is_empty() {
            return Ok(PodCidrs::default());
        }
        PodCidrs::parse(&self.pod_cidr).map_err(|e| InputFailure(e.to_string()))
    }

    /// Reads and validates `paths`, keeping the sources; warnings about skipped documents go to
    /// standard error.
    fn read(
        &self,
        paths: &[String],
    ) -> std::result::Result<(Vec<Source>, Manifests), InputFailure> {
        let sources = read_paths(paths).map_err(|e| InputFailure(e.to_string()))?;
        let options = ParseOptions {
            default_namespace: self.namespace.clone(),
            strict: self.strict,
        };
        let manifests =
            parse_sources_with(&sources, &options).map_err(|e| InputFailure(e.to_string()))?;
        for warning in manifests.skip_warnings() {
            eprintln!("policyc: warning: {warning}");
        }
        Ok((sources, manifests))
    }

    /// Reads and validates `paths`; warnings about skipped documents go to standard error.
    fn load(&self, paths: &[String]) -> std::result::Result<Loaded, InputFailure> {
        let cidrs = self.cidrs()?;
        let (_, manifests) = self.read(paths)?;
        let mut cluster = manifests.cluster;
        materialize(&mut cluster, &cidrs);
        Ok(Loaded { cluster, cidrs })
    }
}

impl InputArgs {
    fn load(&self) -> std::result::Result<Loaded, InputFailure> {
        self.reading.load(&self.paths)
    }
}

fn run(command: Command) -> Result<Output> {
    match command {
        Command::Compile(args) => compile::run(args),
        Command::Matrix(args) => matrix::run(args),
        Command::Connections(args) => connections::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Lint(args) => lint::run(args),
        Command::Generate(args) => generate::run(args),
    }
}

/// Whether an error is a closed standard output (`policyc ... | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(output) => {
            match std::io::stdout().lock().write_all(output.stdout.as_bytes()) {
                // A reader that stopped early (`| head`) is not an error.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("policyc: cannot write the output: {e}");
                    ExitCode::from(2)
                }
                _ if output.findings => ExitCode::from(1),
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(InputFailure(message)) = e.downcast_ref::<InputFailure>() {
                eprintln!("{message}");
                eprintln!("policyc: invalid input; nothing was produced");
            } else {
                eprintln!("policyc: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}
