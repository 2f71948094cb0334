//! Human and JSON explanations of a [`ConnectionVerdict`].

use std::fmt::Write;

use serde_json::json;

use super::{ConnectionVerdict, Decision, DirectionVerdict, RuleCheck};
use crate::model::{Direction, Tier};

fn verdict_word(allowed: bool) -> &'static str {
    if allowed {
        "ALLOWED"
    } else {
        "DENIED"
    }
}

fn rule_reason(check: &RuleCheck, direction: Direction) -> String {
    let other_end = match direction {
        Direction::Ingress => "source",
        Direction::Egress => "destination",
    };
    match (check.peer_matches, check.port_matches) {
        (true, true) => "allows it".to_string(),
        (false, true) => format!("port matches, but no peer selects the {other_end}"),
        (true, false) => "peer matches, but no port matches".to_string(),
        (false, false) => "neither peer nor port matches".to_string(),
    }
}

/// The walk through the tiers of a direction of a pod, for a cluster with ClusterNetworkPolicies:
/// the Admin rule that matched, the NetworkPolicies that decided, the Baseline rule that matched,
/// the default, then the verdict: `[Admin] allow-monitoring egress[2] "scrape" Pass ->
/// [NetworkPolicy] x/deny-all: no rule allows -> denied`. Tiers in which no rule matched are
/// left out.
fn walkthrough(d: &DirectionVerdict) -> String {
    let mut steps: Vec<String> = Vec::new();
    let mut tiers = d.tiers.iter();
    let admin = d.tiers.first().filter(|m| m.rule.tier == Tier::Admin);
    if let Some(m) = admin {
        tiers.next();
        steps.push(format!("{} {}", m.rule, m.action.as_api()));
    }
    if let Decision::NetworkPolicy(allowed) = d.decision {
        let names: Vec<String> = d.isolated_by.iter().map(|p| p.to_string()).collect();
        let how = match d.allowed_by().next() {
            Some(rule) => format!("{rule} allows"),
            None if allowed => "its own node is always allowed".to_string(),
            None => "no rule allows".to_string(),
        };
        steps.push(format!("[NetworkPolicy] {}: {how}", names.join(", ")));
    }
    if let Some(m) = tiers.next() {
        steps.push(format!("{} {}", m.rule, m.action.as_api()));
    }
    if d.decision == Decision::Default {
        steps.push("[default] allow".to_string());
    }
    steps.push(if d.allowed() { "allowed" } else { "denied" }.to_string());
    steps.join(" -> ")
}

fn write_direction(out: &mut String, d: &DirectionVerdict, tiers: bool) {
    let (label, role) = match d.direction {
        Direction::Egress => ("egress", "source"),
        Direction::Ingress => ("ingress", "destination"),
    };
    let Some(pod) = &d.pod else {
        let _ = writeln!(
            out,
            "  {label}: allowed: the {role} is not a pod in the cluster, so no policy applies to it"
        );
        return;
    };
    if tiers {
        // The walkthrough names the isolating policies; their rules follow when they decided.
        let _ = writeln!(out, "  {label}: {}", walkthrough(d));
        if !matches!(d.decision, Decision::NetworkPolicy(_)) {
            return;
        }
    } else if d.isolated_by.is_empty() {
        let _ = writeln!(
            out,
            "  {label}: allowed: no policy selects {pod} for {label} (default allow)"
        );
        return;
    } else {
        let names: Vec<String> = d.isolated_by.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(
            out,
            "  {label}: {}: {pod} is isolated for {label} by {}",
            if d.allowed() { "allowed" } else { "denied" },
            names.join(", ")
        );
    }
    if d.rules.is_empty() {
        let _ = writeln!(
            out,
            "    those policies have no {label} rules: everything is denied"
        );
    }
    for check in &d.rules {
        let _ = writeln!(
            out,
            "    {}: {}",
            check.rule,
            rule_reason(check, d.direction)
        );
    }
}

/// The explanation as text: the verdict, then egress and ingress with the rule that decided.
pub fn explain_text(v: &ConnectionVerdict) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} -> {} {}: {}",
        v.from,
        v.to,
        v.traffic(),
        verdict_word(v.allowed())
    );
    if v.loopback {
        let _ = writeln!(
            out,
            "  a pod reaching its own address never leaves its network namespace: no policy applies"
        );
        return out;
    }
    if v.node_local && !(v.to_own_node && v.cluster_policies) {
        let _ = writeln!(
            out,
            "  traffic between a pod and its own node is always allowed (it does not cross the \
             forward hook)"
        );
        return out;
    }
    if v.to_own_node {
        let _ = writeln!(
            out,
            "  to its own node: NetworkPolicy allows it; ClusterNetworkPolicy egress rules judge it"
        );
        write_direction(&mut out, &v.egress, v.cluster_policies);
        return out;
    }
    write_direction(&mut out, &v.egress, v.cluster_policies);
    write_direction(&mut out, &v.ingress, v.cluster_policies);
    out
}

fn direction_json(d: &DirectionVerdict) -> serde_json::Value {
    json!({
        "pod": d.pod.as_ref().map(|p| p.to_string()),
        "isolated": !d.isolated_by.is_empty(),
        "isolatedBy": d.isolated_by.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "allowed": d.allowed(),
        "allowedBy": d.allowed_by().map(|r| r.to_string()).collect::<Vec<_>>(),
        "rules": d.rules.iter().map(|c| json!({
            "rule": c.rule.to_string(),
            "peerMatches": c.peer_matches,
            "portMatches": c.port_matches,
            "allows": c.allows(),
        })).collect::<Vec<_>>(),
    })
}

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::AdminAccept => "AdminAccept",
        Decision::AdminDeny => "AdminDeny",
        Decision::NetworkPolicy(true) => "NetworkPolicyAllow",
        Decision::NetworkPolicy(false) => "NetworkPolicyDeny",
        Decision::BaselineAccept => "BaselineAccept",
        Decision::BaselineDeny => "BaselineDeny",
        Decision::Default => "Default",
    }
}

/// The direction's tiers, for a cluster with ClusterNetworkPolicies: the decision, the rules
/// that matched ([`super::TierMatch::to_json`]), and the walkthrough as the text prints it (for
/// a direction that is no pod's, `null`: no policy applies).
fn tiers_json(d: &DirectionVerdict) -> serde_json::Value {
    json!({
        "decision": decision_name(d.decision),
        "matched": d.tiers.iter().map(super::TierMatch::to_json).collect::<Vec<_>>(),
        "walkthrough": d.pod.as_ref().map(|_| walkthrough(d)),
    })
}

/// The explanation as JSON. In a cluster with ClusterNetworkPolicies each direction also has
/// `tiers`: the decision, the rules that matched and the walkthrough.
pub fn explain_json(v: &ConnectionVerdict) -> serde_json::Value {
    let mut j = json!({
        "from": v.from,
        "to": v.to,
        "port": v.transport.map(|(_, port)| port),
        "protocol": v.transport.map_or("ICMP", |(protocol, _)| protocol.as_api()),
        "allowed": v.allowed(),
        "loopback": v.loopback,
        "nodeLocal": v.node_local,
        "egress": direction_json(&v.egress),
        "ingress": direction_json(&v.ingress),
    });
    if v.cluster_policies {
        j["egress"]["tiers"] = tiers_json(&v.egress);
        j["ingress"]["tiers"] = tiers_json(&v.ingress);
        j["toOwnNode"] = json!(v.to_own_node);
    }
    j
}
