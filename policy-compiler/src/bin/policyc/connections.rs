//! `policyc connections`: every allowed connection between workloads and external ranges.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use policy_compiler::analysis::connectivity::{exposure, report, Connection, Connectivity};
use policy_compiler::analysis::graph;

use crate::{InputArgs, Output};

/// Print every allowed connection between workloads, external address ranges and nodes.
///
/// For every ordered pair of workloads (a workload to itself left out), every range of addresses
/// outside the pod CIDRs (cut at every ipBlock cidr and except and every ClusterNetworkPolicy
/// network) and every Node of the input, the exact set of allowed protocols and ports, through
/// the ClusterNetworkPolicy tiers and the NetworkPolicies. Pairs with nothing allowed are not
/// listed. `other protocols` are ICMP and every protocol without ports, which only rules without
/// ports decide; a set is written by what it lacks when that is shorter (`All Connections except
/// TCP 10250`). A Node is `node/NAME` as pods on other nodes reach it, and `node/NAME (own node)`
/// for the traffic between it and the pods running on it (which never crosses the forward hook:
/// the node reaches its pods on everything, and only ClusterNetworkPolicy egress rules judge a
/// pod's traffic to its own node).
#[derive(Args, Debug)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = ConnectionsFormat::Text)]
    output: ConnectionsFormat,
    /// Only connections from or to this workload (`namespace/name[Kind]` or `namespace/name`).
    #[arg(long)]
    focus: Option<String>,
    /// Also report which workloads accept connections from (or may open them to) any address,
    /// any namespace, any pod of a namespace or any external address, and which no policy
    /// isolates.
    #[arg(long)]
    exposure: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ConnectionsFormat {
    Text,
    Json,
    Markdown,
    Csv,
    Dot,
}

pub fn run(args: ConnectionsArgs) -> Result<Output> {
    let loaded = args.input.load()?;
    let connectivity = Connectivity::compute(&loaded.cluster, &loaded.cidrs);
    let focus = match &args.focus {
        Some(name) => match connectivity.party(name) {
            Some(p) => Some(p.clone()),
            None => bail!(
                "--focus {name}: no such workload in the input (write namespace/name[Kind] or \
                 namespace/name)"
            ),
        },
        None => None,
    };
    let selected = || -> Vec<Connection<'_>> {
        connectivity
            .connections()
            .filter(|c| focus.as_ref().is_none_or(|f| c.from == f || c.to == f))
            .collect()
    };
    let exposure = args
        .exposure
        .then(|| exposure(&loaded.cluster, &connectivity));
    let exposure = exposure.map(|mut e| {
        if let Some(f) = &focus {
            e.exposures.retain(|x| &x.workload == f);
            e.unisolated.retain(|w| w == f);
        }
        e
    });
    let stdout = match args.output {
        ConnectionsFormat::Text => {
            let mut text = report::to_text(selected());
            if let Some(e) = &exposure {
                text.push_str("\nExposure:\n");
                text.push_str(&e.to_text());
            }
            text
        }
        ConnectionsFormat::Json => {
            let mut json = report::to_json(selected());
            if let Some(e) = &exposure {
                let e = e.to_json();
                json["exposure"] = e["exposure"].clone();
                json["unisolated"] = e["unisolated"].clone();
            }
            format!("{}\n", serde_json::to_string_pretty(&json)?)
        }
        ConnectionsFormat::Markdown => {
            let mut text = report::to_markdown(selected());
            if let Some(e) = &exposure {
                text.push_str("\n**Exposure**\n\n```\n");
                text.push_str(&e.to_text());
                text.push_str("```\n");
            }
            text
        }
        ConnectionsFormat::Csv => report::to_csv(selected()),
        ConnectionsFormat::Dot => graph::to_dot(&graph::Graph::new(selected())),
    };
    Ok(Output::clean(stdout))
}
