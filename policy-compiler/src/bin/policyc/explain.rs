//! `policyc explain`: why one connection is allowed or denied, down to the nftables rules.

use std::net::IpAddr;

use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};

use policy_compiler::analysis::{
    evaluate_with, explain_json, explain_text, ConnectionVerdict, Endpoint, EvalOptions, PortProto,
};
use policy_compiler::cidr::Family;
use policy_compiler::compile_all;
use policy_compiler::model::{ObjectRef, Pod, WorkloadRef};
use policy_compiler::verify::node_outcomes;
use policy_compiler::workload::place_unscheduled;
use policy_compiler::ClusterState;

use crate::{InputArgs, Output};

/// Explain whether a connection is allowed, and by which rules.
///
/// In a cluster with ClusterNetworkPolicies each direction is walked through the tiers: the Admin
/// rule that matched, the NetworkPolicies that decided, the Baseline rule that matched or the
/// default, then the verdict (`[Admin] allow-monitoring egress[2] "scrape" Pass ->
/// [NetworkPolicy] x/deny-all: no rule allows -> denied`).
///
/// NetworkPolicies annotated `nftpolicy.io/enforcement: audit` isolate nothing: what they alone
/// would deny is allowed, and said so (`ALLOWED; would be denied by x/deny-all (audit)`).
#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Source: a pod or workload (`namespace/name`, `namespace/name[Kind]`) or an IP address.
    #[arg(long)]
    from: String,
    /// Destination: a pod or workload (`namespace/name`, `namespace/name[Kind]`) or an IP address.
    #[arg(long)]
    to: String,
    /// Destination port and protocol, e.g. `80/TCP`.
    #[arg(long, required_unless_present = "icmp", conflicts_with = "icmp")]
    port: Option<PortProto>,
    /// Judge an ICMP echo request instead of a port: what every protocol without ports (ICMP,
    /// ICMPv6, …) gets, which only rules without ports match.
    #[arg(long)]
    icmp: bool,
    /// Address family to use between two dual-stack pods (default: IPv4 when both have it).
    #[arg(long, value_parser = ["4", "6"])]
    family: Option<String>,
    /// Judge every policy as the agent's `--audit-all` does: as enforced, but what would be
    /// denied is allowed, and said so (`would be denied by ... (--audit-all)`). The nftables
    /// path is not shown.
    #[arg(long)]
    audit_all: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = ExplainFormat::Text)]
    output: ExplainFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExplainFormat {
    Text,
    Json,
}

/// The node `explain` takes pods without a node to run on, so that their rules can be shown.
const UNSCHEDULED_NODE: &str = "(unscheduled pods)";

pub fn run(args: ExplainArgs) -> Result<Output> {
    let mut loaded = args.input.load()?;
    place_unscheduled(&mut loaded.cluster, UNSCHEDULED_NODE);
    let cluster = &loaded.cluster;
    let family = args
        .family
        .map(|f| if f == "6" { Family::V6 } else { Family::V4 });
    let (from, to) = endpoints(cluster, &args.from, &args.to, family)?;
    let options = EvalOptions {
        audit_all: args.audit_all,
    };
    let transport = args.port.map(|p| (p.protocol, p.port));
    let verdict = evaluate_with(cluster, from, to, transport, options);
    Ok(Output::clean(match args.output {
        ExplainFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&explain_json(&verdict))?
        ),
        ExplainFormat::Text => {
            let mut text = explain_text(&verdict);
            if !args.audit_all {
                text.push_str(&nft_path(cluster, &from, &to, &verdict));
            }
            text
        }
    }))
}

/// The pod a `namespace/name` or `namespace/name[Kind]` argument names: the pod of that name, or
/// the first pod of that workload.
pub fn named_pod<'a>(cluster: &'a ClusterState, name: &str) -> Option<&'a Pod> {
    if let Some((ns, pod)) = name.split_once('/') {
        if let Some(p) = cluster.pod(&ObjectRef::new(ns, pod)) {
            return Some(p);
        }
    }
    let wanted = WorkloadRef::parse(name);
    cluster.pods().values().find(|p| {
        let w = p.workload_ref();
        match &wanted {
            Some(wanted) => w == *wanted,
            None => format!("{}/{}", w.namespace, w.name) == name,
        }
    })
}

/// The endpoint a pod, workload or address argument names, in the requested or common family.
fn endpoints<'a>(
    cluster: &'a ClusterState,
    from: &str,
    to: &str,
    family: Option<Family>,
) -> Result<(Endpoint<'a>, Endpoint<'a>)> {
    enum Arg<'a> {
        Ip(IpAddr),
        Pod(&'a Pod),
    }
    let parse = |s: &str, flag: &str| -> Result<Arg<'a>> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Arg::Ip(ip));
        }
        if !s.contains('/') {
            bail!("{flag} {s:?}: expected namespace/name, namespace/name[Kind] or an IP address");
        }
        let pod = named_pod(cluster, s)
            .ok_or_else(|| anyhow!("{flag} {s}: no such pod or workload in the input"))?;
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
    if verdict.loopback || (verdict.node_local && !verdict.to_own_node) {
        return String::new();
    }
    let mut out = String::new();
    match node_outcomes(cluster, &compile_all(cluster), from, to, verdict.transport) {
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
