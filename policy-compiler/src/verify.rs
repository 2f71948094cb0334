//! Cross-checks the rendered rulesets against the evaluator: for a connection, the verdict of every
//! node ruleset its first packet crosses must equal what the API semantics say.

use std::collections::BTreeMap;

use crate::analysis::{evaluate, evaluate_portless, ConnectionVerdict, Endpoint, PortProto};
use crate::cidr::Family;
use crate::cluster::ClusterState;
use crate::model::Protocol;
use crate::nft::interp::{self, InterpError, Outcome, Packet};
use crate::nft::Ruleset;

/// Rulesets by node, as [`crate::plan::compile_all`] returns them.
pub type NodeRulesets = BTreeMap<String, Ruleset>;

/// Whether `to` is an address of the node `from` runs on (its `status.hostIPs`, its Node's
/// addresses): the packet then goes to that node's input hook instead of crossing forward.
pub fn to_own_node(cluster: &ClusterState, from: &Endpoint<'_>, to: &Endpoint<'_>) -> bool {
    from.pod.is_some_and(|p| {
        p.host_ips.contains(&to.ip)
            || p.node
                .as_deref()
                .and_then(|n| cluster.node(n))
                .is_some_and(|n| n.addresses.contains(&to.ip))
    })
}

/// The nodes whose hooks a connection's first packet crosses: the source pod's node, then the
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

/// What each crossed node's ruleset does with a new connection's first packet, in crossing order:
/// on the forward hook, or on the input hook of the source's node when the destination is that
/// node. Nodes without a ruleset are left out.
pub fn node_outcomes(
    cluster: &ClusterState,
    rulesets: &NodeRulesets,
    from: &Endpoint<'_>,
    to: &Endpoint<'_>,
    transport: Option<(Protocol, u16)>,
) -> Result<Vec<(String, Outcome)>, InterpError> {
    let packet = Packet {
        src: from.ip,
        dst: to.ip,
        transport,
        established: false,
        to_node: to_own_node(cluster, from, to),
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
    cluster: &ClusterState,
    rulesets: &NodeRulesets,
    from: &Endpoint<'_>,
    to: &Endpoint<'_>,
    port: PortProto,
) -> Result<bool, InterpError> {
    Ok(node_outcomes(
        cluster,
        rulesets,
        from,
        to,
        Some((port.protocol, port.port)),
    )?
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
/// port and for a protocol without ports (ICMP), plus each extra address to and from every pod. Connections no hook judges (a pod to itself,
/// a node to its own pod) are skipped; a pod's traffic to its own node is judged on the input hook.
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
    let mut check = |verdict: ConnectionVerdict, got: Result<bool, InterpError>| {
        if got.as_ref().ok() != Some(&verdict.allowed()) {
            out.push(Disagreement {
                flow: format!("{} -> {} {}", verdict.from, verdict.to, verdict.traffic()),
                expected: verdict.allowed(),
                rulesets: got,
            });
        }
    };
    // Loopback is never filtered; node-local traffic is judged only towards the pod's own node.
    let judged = |v: &ConnectionVerdict| !v.loopback && (!v.node_local || v.to_own_node);
    for (from, to) in pairs {
        for port in ports {
            let verdict = evaluate(cluster, from, to, port.protocol, port.port);
            if judged(&verdict) {
                let got = rulesets_allow(cluster, rulesets, &from, &to, *port);
                check(verdict, got);
            }
        }
        let verdict = evaluate_portless(cluster, from, to);
        if judged(&verdict) {
            let got = node_outcomes(cluster, rulesets, &from, &to, None)
                .map(|outcomes| outcomes.iter().all(|(_, o)| o.accepted));
            check(verdict, got);
        }
    }
    out
}
