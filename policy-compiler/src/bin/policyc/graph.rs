//! `policyc graph`: the connectivity graph as DOT, Mermaid or SVG.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use policy_compiler::analysis::connectivity::Connectivity;
use policy_compiler::analysis::graph::{to_dot, to_mermaid, Graph};

use crate::{InputArgs, Output};

/// Print the connectivity graph: workloads grouped by namespace, external ranges and nodes, and an
/// edge per allowed connection labelled with its ports (as `connections` writes them).
#[derive(Args, Debug)]
pub struct GraphArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Output format: Graphviz DOT, a Mermaid flowchart (for markdown), or SVG (runs Graphviz's
    /// `dot`).
    #[arg(short = 'o', long, value_enum, default_value_t = GraphFormat::Dot)]
    output: GraphFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
    Svg,
}

pub fn run(args: GraphArgs) -> Result<Output> {
    let loaded = args.input.load()?;
    let connectivity = Connectivity::compute(&loaded.cluster, &loaded.cidrs);
    let graph = Graph::new(connectivity.connections());
    Ok(Output::clean(match args.output {
        GraphFormat::Dot => to_dot(&graph),
        GraphFormat::Mermaid => to_mermaid(&graph),
        GraphFormat::Svg => svg(&to_dot(&graph))?,
    }))
}

/// Renders DOT with Graphviz's `dot -Tsvg`.
fn svg(dot: &str) -> Result<String> {
    let mut child = match Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "-o svg needs Graphviz's `dot`, which is not installed (apt-get install graphviz, brew \
             install graphviz); -o dot prints the graph for it"
        ),
        Err(e) => return Err(e).context("cannot run Graphviz's dot"),
    };
    let mut stdin = child.stdin.take().context("dot's standard input")?;
    let text = dot.to_string();
    // Written from a thread, so that a large graph cannot deadlock on a full output pipe.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let output = child
        .wait_with_output()
        .context("cannot run Graphviz's dot")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writing to dot failed"))?
        .context("cannot write to Graphviz's dot")?;
    if !output.status.success() {
        bail!(
            "Graphviz's dot failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).context("dot printed something that is not UTF-8")
}
