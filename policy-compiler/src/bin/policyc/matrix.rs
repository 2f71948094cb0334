//! `policyc matrix`: the pod-to-pod truth table on given ports, for review-size inputs.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use policy_compiler::analysis::{declared_ports, EvalOptions, Matrix, PortProto};

use crate::{InputArgs, Output};

/// The most cells (pods × pods × ports) a matrix is computed for: beyond, `connections` is the tool.
const MAX_CELLS: usize = 2_000_000;

/// Print the truth table of pod-to-pod connectivity on given ports.
///
/// In the table, `.` is allowed, `X` denied, `-` a pair without a common address family, and `A`
/// allowed by audit mode only: a NetworkPolicy annotated `nftpolicy.io/enforcement: audit` (or,
/// with `--audit-all`, any policy) would deny it (Markdown: ✓, ✗ and ⚠; JSON: `"wouldDeny"`).
#[derive(Args, Debug)]
pub struct MatrixArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Ports to probe, e.g. `80/TCP,53/UDP` (default: every port a pod declares).
    #[arg(long, value_delimiter = ',')]
    ports: Vec<PortProto>,
    /// Judge every policy as the agent's `--audit-all` does: as enforced, but what would be
    /// denied is allowed, and marked `A`.
    #[arg(long)]
    audit_all: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = MatrixFormat::Table)]
    output: MatrixFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MatrixFormat {
    Table,
    Markdown,
    Json,
}

pub fn run(args: MatrixArgs) -> Result<Output> {
    let loaded = args.input.load()?;
    let cluster = &loaded.cluster;
    let ports = if args.ports.is_empty() {
        declared_ports(cluster)
    } else {
        args.ports
    };
    if ports.is_empty() {
        bail!("no pod declares a container port: pass --ports, e.g. --ports 80/TCP");
    }
    let pods = cluster.participating_pods().count();
    let cells = pods.saturating_mul(pods).saturating_mul(ports.len());
    if cells > MAX_CELLS {
        bail!(
            "{pods} pods on {} ports make {cells} cells, too many for a matrix: use `policyc \
             connections` (every workload pair, computed per class of alike pods; --focus \
             WORKLOAD for one), or `policyc explain` for one connection",
            ports.len()
        );
    }
    let options = EvalOptions {
        audit_all: args.audit_all,
    };
    let matrix = Matrix::evaluate_with(cluster, &ports, options);
    Ok(Output::clean(match args.output {
        MatrixFormat::Table => matrix.to_table(),
        MatrixFormat::Markdown => matrix.to_markdown(),
        MatrixFormat::Json => format!("{}\n", serde_json::to_string_pretty(&matrix.to_json())?),
    }))
}
