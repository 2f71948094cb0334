//! `policyc`: compile Kubernetes NetworkPolicy manifests to nftables, and analyse connectivity offline.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use policy_compiler::analysis::{
    declared_ports, evaluate, explain_json, explain_text, ConnectionVerdict, Endpoint, Matrix,
    PortProto,
};
use policy_compiler::cidr::Family;
use policy_compiler::generate::{workload, WorkloadSize};
use policy_compiler::input::{parse_sources, read_paths, Manifests};
use policy_compiler::manifest::cluster_manifests;
use policy_compiler::model::ObjectRef;
use policy_compiler::plan::{compile_all, compile_node};
use policy_compiler::verify::node_outcomes;
use policy_compiler::ClusterState;

/// Compile Kubernetes NetworkPolicy to per-node nftables rulesets, and analyse connectivity offline.
///
/// PATH arguments are files, directories (read recursively: *.yaml, *.yml, *.json) or `-` for standard
/// input; YAML may hold several documents, and `List` kinds (as `kubectl get -o yaml` prints) are
/// unpacked. Namespaces, Pods and NetworkPolicies are used; other kinds are skipped with a note.
/// Invalid input exits with status 2 and prints nothing on standard output.
#[derive(Parser, Debug)]
#[command(name = "policyc", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the nftables ruleset a node enforces (loadable with `nft -f`).
    Compile {
        /// Manifest files, directories, or `-`.
        #[arg(required = true)]
        paths: Vec<String>,
        /// The node whose ruleset to print: its own pods are the targets, peers are cluster-wide.
        #[arg(long)]
        node: Option<String>,
        /// Write one `<node>.nft` file per node into this directory instead.
        #[arg(long, conflicts_with = "node")]
        out_dir: Option<PathBuf>,
    },
    /// Print the truth table of pod-to-pod connectivity.
    Matrix {
        /// Manifest files, directories, or `-`.
        #[arg(required = true)]
        paths: Vec<String>,
        /// Ports to probe, e.g. `80/TCP,53/UDP` (default: every port a pod declares).
        #[arg(long, value_delimiter = ',')]
        ports: Vec<PortProto>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = MatrixFormat::Table)]
        output: MatrixFormat,
    },
    /// Print a seeded, realistic cluster (namespaces, deployments' pods, policies) as manifests.
    Generate {
        /// `small` (100 pods, 20 policies), `medium` (10k pods, 1k policies, 100 namespaces, 50
        /// nodes) or `large` (100k pods, 10k policies, 1000 namespaces, 500 nodes).
        #[arg(long, default_value = "small")]
        size: String,
        /// The seed: the same seed and size give the same cluster.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output format: a multi-document YAML stream, or one JSON `List`.
        #[arg(short = 'o', long, value_enum, default_value_t = GenerateFormat::Yaml)]
        output: GenerateFormat,
    },
    /// Explain whether a connection is allowed, and by which rules.
    Explain {
        /// Manifest files, directories, or `-`.
        #[arg(required = true)]
        paths: Vec<String>,
        /// Source: `namespace/pod` or an IP address.
        #[arg(long)]
        from: String,
        /// Destination: `namespace/pod` or an IP address.
        #[arg(long)]
        to: String,
        /// Destination port and protocol, e.g. `80/TCP`.
        #[arg(long)]
        port: PortProto,
        /// Address family to use between two dual-stack pods (default: IPv4 when both have it).
        #[arg(long, value_parser = ["4", "6"])]
        family: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = ExplainFormat::Text)]
        output: ExplainFormat,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MatrixFormat {
    Table,
    Markdown,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GenerateFormat {
    Yaml,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExplainFormat {
    Text,
    Json,
}

/// Input errors: printed as they are, exit status 2.
struct InputFailure(String);

fn load(paths: &[String]) -> std::result::Result<Manifests, InputFailure> {
    let sources = read_paths(paths).map_err(|e| InputFailure(e.to_string()))?;
    let manifests = parse_sources(&sources).map_err(|e| InputFailure(e.to_string()))?;
    for warning in manifests.skip_warnings() {
        eprintln!("policyc: warning: {warning}");
    }
    Ok(manifests)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let paths = match &cli.command {
        Command::Compile { paths, .. }
        | Command::Matrix { paths, .. }
        | Command::Explain { paths, .. } => paths.clone(),
        Command::Generate { size, seed, output } => {
            return match generate(size, *seed, *output) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("policyc: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
    };
    let manifests = match load(&paths) {
        Ok(m) => m,
        Err(InputFailure(message)) => {
            eprintln!("{message}");
            eprintln!("policyc: invalid input; nothing was produced");
            return ExitCode::from(2);
        }
    };
    match run(cli.command, &manifests.cluster) {
        Ok(output) => {
            use std::io::Write;
            match std::io::stdout().lock().write_all(output.as_bytes()) {
                // A reader that stopped early (`| head`) is not an error.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("policyc: cannot write the output: {e}");
                    ExitCode::from(2)
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("policyc: {e:#}");
            ExitCode::from(2)
        }
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

fn generate(size: &str, seed: u64, output: GenerateFormat) -> Result<()> {
    use std::io::Write;
    let size = WorkloadSize::named(size)
        .ok_or_else(|| anyhow!("--size {size:?}: use small, medium or large"))?;
    let items = cluster_manifests(&workload(seed, size));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match output {
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
    Ok(())
}

fn run(command: Command, cluster: &ClusterState) -> Result<String> {
    match command {
        Command::Generate { .. } => bail!("generate reads no manifests"),
        Command::Compile {
            node: Some(node), ..
        } => {
            if !cluster.nodes().contains(node.as_str()) {
                eprintln!(
                    "policyc: node {node} runs no pod of the input; its ruleset isolates nothing"
                );
            }
            Ok(compile_node(cluster, &node).render())
        }
        Command::Compile {
            out_dir: Some(dir), ..
        } => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut written = String::new();
            for (node, ruleset) in compile_all(cluster) {
                let path = dir.join(format!("{node}.nft"));
                std::fs::write(&path, ruleset.render())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                written.push_str(&format!("{}\n", path.display()));
            }
            Ok(written)
        }
        Command::Compile { .. } => {
            let nodes = cluster.nodes();
            match nodes.len() {
                1 => Ok(compile_node(cluster, nodes.first().copied().unwrap_or_default()).render()),
                0 => bail!("no pod in the input is scheduled to a node (spec.nodeName); pass --node NAME"),
                _ => bail!(
                    "the input has several nodes ({}): pass --node NAME for one, or --out-dir DIR for all",
                    nodes.into_iter().collect::<Vec<_>>().join(", ")
                ),
            }
        }
        Command::Matrix { ports, output, .. } => {
            let ports = if ports.is_empty() {
                declared_ports(cluster)
            } else {
                ports
            };
            if ports.is_empty() {
                bail!("no pod declares a container port: pass --ports, e.g. --ports 80/TCP");
            }
            let matrix = Matrix::evaluate(cluster, &ports);
            Ok(match output {
                MatrixFormat::Table => matrix.to_table(),
                MatrixFormat::Markdown => matrix.to_markdown(),
                MatrixFormat::Json => {
                    format!("{}\n", serde_json::to_string_pretty(&matrix.to_json())?)
                }
            })
        }
        Command::Explain {
            from,
            to,
            port,
            family,
            output,
            ..
        } => {
            let family = family.map(|f| if f == "6" { Family::V6 } else { Family::V4 });
            let (from, to) = endpoints(cluster, &from, &to, family)?;
            let verdict = evaluate(cluster, from, to, port.protocol, port.port);
            Ok(match output {
                ExplainFormat::Json => {
                    format!(
                        "{}\n",
                        serde_json::to_string_pretty(&explain_json(&verdict))?
                    )
                }
                ExplainFormat::Text => {
                    let mut text = explain_text(&verdict);
                    text.push_str(&nft_path(cluster, &from, &to, &verdict));
                    text
                }
            })
        }
    }
}

/// The endpoint a `namespace/pod` or address argument names, in the requested or common family.
fn endpoints<'a>(
    cluster: &'a ClusterState,
    from: &str,
    to: &str,
    family: Option<Family>,
) -> Result<(Endpoint<'a>, Endpoint<'a>)> {
    enum Arg<'a> {
        Ip(IpAddr),
        Pod(&'a policy_compiler::model::Pod),
    }
    let parse = |s: &str, flag: &str| -> Result<Arg<'a>> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Arg::Ip(ip));
        }
        let (ns, name) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("{flag} {s:?}: expected namespace/pod or an IP address"))?;
        let pod = cluster
            .pod(&ObjectRef::new(ns, name))
            .ok_or_else(|| anyhow!("{flag} {s}: no such pod in the input"))?;
        if !pod.participates() {
            bail!(
                "{flag} {s}: the pod takes no part in policy (host network, no IP yet, or finished); \
                 pass its address instead"
            );
        }
        Ok(Arg::Pod(pod))
    };
    let (a, b) = (parse(from, "--from")?, parse(to, "--to")?);
    let want = match (&a, &b, family) {
        (_, _, Some(f)) => f,
        (Arg::Ip(ip), _, None) | (_, Arg::Ip(ip), None) => Family::of(ip),
        (Arg::Pod(p), Arg::Pod(q), None) => policy_compiler::analysis::common_family(p, q)
            .ok_or_else(|| anyhow!("{from} and {to} share no address family"))?,
    };
    let resolve = |arg: Arg<'a>, s: &str| -> Result<Endpoint<'a>> {
        match arg {
            Arg::Ip(ip) if Family::of(&ip) == want => Ok(Endpoint::from_ip(cluster, ip)),
            Arg::Ip(ip) => bail!("{ip} is not an IPv{} address", want.number()),
            Arg::Pod(p) => p
                .ip(want)
                .map(|ip| Endpoint::pod(p, ip))
                .ok_or_else(|| anyhow!("{s} has no IPv{} address", want.number())),
        }
    };
    Ok((resolve(a, from)?, resolve(b, to)?))
}

/// What the compiled rulesets do with the connection's first packet, node by node.
fn nft_path(
    cluster: &ClusterState,
    from: &Endpoint<'_>,
    to: &Endpoint<'_>,
    verdict: &ConnectionVerdict,
) -> String {
    if verdict.loopback || verdict.node_local {
        return String::new();
    }
    let port = PortProto {
        port: verdict.port,
        protocol: verdict.protocol,
    };
    let mut out = String::new();
    match node_outcomes(&compile_all(cluster), from, to, port) {
        Ok(outcomes) => {
            for (node, outcome) in outcomes {
                let word = if outcome.accepted { "accept" } else { "drop" };
                out.push_str(&format!("  nftables on {node}: {word}\n"));
                for line in outcome.trace {
                    out.push_str(&format!("    {line}\n"));
                }
            }
        }
        Err(e) => out.push_str(&format!("  nftables: cannot evaluate: {e}\n")),
    }
    out
}
