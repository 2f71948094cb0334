//! Cross-checks the rendered rulesets against the evaluator: for a connection, the verdict of every
//! node ruleset its first packet crosses must equal what the API semantics say.

use std::collections::BTreeMap;

use crate::analysis::{evaluate, Endpoint, PortProto};
use crate::cidr::Family;
use crate::cluster::ClusterState;
use crate::nft::interp::{self, InterpError, Outcome, Packet};
use crate::nft::Ruleset;

/// Rulesets by node, as [`crate::plan::compile_all`] returns them.
pub type NodeRulesets = BTreeMap<String, Ruleset>;

/// The nodes whose forward hook a connection's first packet crosses: the source pod's node, then the
/// destination pod's node (once when they are the same). Outside addresses have none.
pub fn nodes_crossed<'a>(from: &Endpoint<'a>, to: &Endpoint<'a>) -> Vec<&'a str> {
    let mut nodes: Vec<&str> = [from.pod, to.pod]
        .into_iter()
        .flatten()
        .filter_map(|p| p.node.as_deref())
        .collect();
    nodes.dedup();
    nodes
}

/// What each crossed node's ruleset does with a new connection's first packet, in crossing order.
/// Nodes without a ruleset are left out.
pub fn node_outcomes(
    rulesets: &NodeRulesets,
    from: &Endpoint<'_>,
    to: &Endpoint<'_>,
    port: PortProto,
) -> Result<Vec<(String, Outcome)>, InterpError> {
    let packet = Packet {
        src: from.ip,
        dst: to.ip,
        transport: Some((port.protocol, port.port)),
        established: false,
        to_node: false,
    };
    let mut out = Vec::new();
    for node in nodes_crossed(from, to) {
        if let Some(ruleset) = rulesets.get(node) {
            out.push((node.to_string(), interp::evaluate(ruleset, &packet)?));
        }
    }
    Ok(out)
}

/// Whether the rulesets let a new connection through: every crossed node accepts its first packet.
pub fn rulesets_allow(
    rulesets: &NodeRulesets,
    from: &Endpoint<'_>,
    to: &Endpoint<'_>,
    port: PortProto,
) -> Result<bool, InterpError> {
    Ok(node_outcomes(rulesets, from, to, port)?
        .iter()
        .all(|(_, outcome)| outcome.accepted))
}

/// One connection on which the rulesets and the evaluator disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement {
    /// `from -> to port/proto`.
    pub flow: String,
    /// The evaluator's verdict.
    pub expected: bool,
    /// The rulesets' verdict, or why they could not be evaluated.
    pub rulesets: Result<bool, InterpError>,
}

/// Checks every ordered pair of distinct participating pods, in every family both have, on every
/// port, plus each extra address to and from every pod. Connections that never cross the forward hook
/// (a pod to itself, a pod and its own node) are skipped.
pub fn disagreements(
    cluster: &ClusterState,
    rulesets: &NodeRulesets,
    ports: &[PortProto],
    extra_addresses: &[std::net::IpAddr],
) -> Vec<Disagreement> {
    let pods: Vec<_> = cluster.participating_pods().collect();
    let mut pairs: Vec<(Endpoint<'_>, Endpoint<'_>)> = Vec::new();
    for family in [Family::V4, Family::V6] {
        for a in &pods {
            let Some(ip_a) = a.ip(family) else { continue };
            for b in &pods {
                let Some(ip_b) = b.ip(family) else { continue };
                if a.id != b.id {
                    pairs.push((Endpoint::pod(a, ip_a), Endpoint::pod(b, ip_b)));
                }
            }
            for ip in extra_addresses.iter().filter(|ip| Family::of(ip) == family) {
                let outside = Endpoint::from_ip(cluster, *ip);
                pairs.push((Endpoint::pod(a, ip_a), outside));
                pairs.push((outside, Endpoint::pod(a, ip_a)));
            }
        }
    }
    let mut out = Vec::new();
    for (from, to) in pairs {
        for port in ports {
            let verdict = evaluate(cluster, from, to, port.protocol, port.port);
            if verdict.loopback || verdict.node_local {
                continue;
            }
            let got = rulesets_allow(rulesets, &from, &to, *port);
            if got.as_ref().ok() != Some(&verdict.allowed()) {
                out.push(Disagreement {
                    flow: format!("{} -> {} {port}", verdict.from, verdict.to),
                    expected: verdict.allowed(),
                    rulesets: got,
                });
            }
        }
    }
    out
}
