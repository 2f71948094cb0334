//! Human and JSON explanations of a [`ConnectionVerdict`].

use std::fmt::Write;

use serde_json::json;

use super::{ConnectionVerdict, Decision, DirectionVerdict, RuleCheck};
use crate::model::{Direction, ObjectRef, Tier};

/// The connection's verdict: `ALLOWED`, `DENIED`, or, for a connection audit mode lets through,
/// `ALLOWED; would be denied by x/deny-all (audit)`.
fn verdict_words(v: &ConnectionVerdict) -> String {
    if !v.allowed() {
        return "DENIED".to_string();
    }
    let would: Vec<String> = v
        .would_deny()
        .iter()
        .filter_map(|d| d.would_deny_text())
        .collect();
    if would.is_empty() {
        "ALLOWED".to_string()
    } else {
        format!("ALLOWED; would be denied by {}", would.join(" and by "))
    }
}

/// A direction's verdict: `allowed`, `denied`, or `allowed; would be denied by x/deny-all
/// (audit)` (also after `denied`, when the Baseline tier denies what audit policies would).
fn outcome(d: &DirectionVerdict) -> String {
    let word = if d.allowed() { "allowed" } else { "denied" };
    match d.would_deny_text() {
        Some(would) => format!("{word}; would be denied by {would}"),
        None => word.to_string(),
    }
}

fn names(ids: &[ObjectRef]) -> String {
    ids.iter()
        .map(ObjectRef::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the audit policies of a direction were consulted: no enforced policy isolates the pod
/// and the Admin tier did not decide.
fn audit_consulted(d: &DirectionVerdict) -> bool {
    !d.audited_by.is_empty()
        && d.isolated_by.is_empty()
        && !matches!(d.decision, Decision::AdminAccept | Decision::AdminDeny)
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

/// How the rules of the policies of one stage judged: the first that allows, or none.
fn how(rules: &[RuleCheck], own_node: bool) -> String {
    match rules.iter().find(|r| r.allows()) {
        Some(check) => format!("{} allows", check.rule),
        None if own_node => "its own node is always allowed".to_string(),
        None => "no rule allows".to_string(),
    }
}

/// The walk through the tiers of a direction of a pod, for a cluster with ClusterNetworkPolicies:
/// the Admin rule that matched, the NetworkPolicies that decided (or the audit policies
/// consulted), the Baseline rule that matched, the default, then the verdict: `[Admin]
/// allow-monitoring egress[2] "scrape" Pass -> [NetworkPolicy] x/deny-all: no rule allows ->
/// denied`. Tiers in which no rule matched are left out.
fn walkthrough(d: &DirectionVerdict) -> String {
    let mut steps: Vec<String> = Vec::new();
    let mut tiers = d.tiers.iter();
    let admin = d.tiers.first().filter(|m| m.rule.tier == Tier::Admin);
    if let Some(m) = admin {
        tiers.next();
        steps.push(format!("{} {}", m.rule, m.action.as_api()));
    }
    if let Decision::NetworkPolicy(allowed) = d.decision {
        let own_node = allowed && !d.rules.iter().any(RuleCheck::allows);
        steps.push(format!(
            "[NetworkPolicy] {}: {}",
            names(&d.isolated_by),
            how(&d.rules, own_node)
        ));
    }
    if audit_consulted(d) {
        let own_node = d.would_deny.is_none() && !d.audit_rules.iter().any(RuleCheck::allows);
        steps.push(format!(
            "[NetworkPolicy] {} (audit): {}",
            names(&d.audited_by),
            how(&d.audit_rules, own_node)
        ));
    }
    if let Some(m) = tiers.next() {
        steps.push(format!("{} {}", m.rule, m.action.as_api()));
    }
    if d.decision == Decision::Default {
        steps.push("[default] allow".to_string());
    }
    steps.push(outcome(d));
    steps.join(" -> ")
}

fn write_rules(out: &mut String, d: &DirectionVerdict, rules: &[RuleCheck]) {
    for check in rules {
        let _ = writeln!(
            out,
            "    {}: {}",
            check.rule,
            rule_reason(check, d.direction)
        );
    }
}

/// What the audit policies of a direction did: their rules, when they were consulted; else why
/// they change nothing.
fn write_audit(out: &mut String, d: &DirectionVerdict, label: &str) {
    if d.audited_by.is_empty() {
        return;
    }
    if !audit_consulted(d) {
        let why = if d.isolated_by.is_empty() {
            "the Admin tier decides first"
        } else {
            "enforced policies isolate it"
        };
        let _ = writeln!(
            out,
            "    audit policies {} also select it and change nothing: {why}",
            names(&d.audited_by)
        );
        return;
    }
    if d.audit_rules.is_empty() {
        let _ = writeln!(
            out,
            "    those audit policies have no {label} rules: they would deny everything"
        );
    }
    write_rules(out, d, &d.audit_rules);
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
    } else if !d.isolated_by.is_empty() {
        let _ = writeln!(
            out,
            "  {label}: {}: {pod} is isolated for {label} by {}",
            outcome(d),
            names(&d.isolated_by)
        );
    } else if !d.audited_by.is_empty() {
        let _ = writeln!(
            out,
            "  {label}: {}: only audit policies select {pod} for {label}, and they isolate \
             nothing (default allow)",
            outcome(d)
        );
    } else {
        let _ = writeln!(
            out,
            "  {label}: allowed: no policy selects {pod} for {label} (default allow)"
        );
    }
    if matches!(d.decision, Decision::NetworkPolicy(_)) {
        if d.rules.is_empty() {
            let denied = if d.audit_all {
                "would be denied"
            } else {
                "is denied"
            };
            let _ = writeln!(
                out,
                "    those policies have no {label} rules: everything {denied}"
            );
        }
        write_rules(out, d, &d.rules);
    }
    write_audit(out, d, label);
}

/// The explanation as text: the verdict, then egress and ingress with the rule that decided (and
/// what audit mode lets through: `ALLOWED; would be denied by x/deny-all (audit)`).
pub fn explain_text(v: &ConnectionVerdict) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} -> {} {}: {}",
        v.from,
        v.to,
        v.traffic(),
        verdict_words(v)
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

fn rules_json(rules: &[RuleCheck]) -> Vec<serde_json::Value> {
    rules
        .iter()
        .map(|c| {
            json!({
                "rule": c.rule.to_string(),
                "peerMatches": c.peer_matches,
                "portMatches": c.port_matches,
                "allows": c.allows(),
            })
        })
        .collect()
}

/// `null`, or `{"by", "policies", "clusterRule", "auditAll"}`: `by` as the text names it,
/// `policies` the NetworkPolicies that would deny (empty for a ClusterNetworkPolicy rule),
/// `clusterRule` the rule ([`super::TierMatch::to_json`]) or `null`.
fn would_deny_json(d: &DirectionVerdict) -> serde_json::Value {
    let Some(would) = &d.would_deny else {
        return serde_json::Value::Null;
    };
    let (policies, rule) = match would {
        super::WouldDeny::NetworkPolicies(ids) => (
            ids.iter().map(ObjectRef::to_string).collect(),
            serde_json::Value::Null,
        ),
        super::WouldDeny::ClusterRule(m) => (Vec::new(), m.to_json()),
    };
    json!({
        "by": would.to_string(),
        "policies": policies,
        "clusterRule": rule,
        "auditAll": d.audit_all,
    })
}

fn direction_json(d: &DirectionVerdict) -> serde_json::Value {
    json!({
        "pod": d.pod.as_ref().map(|p| p.to_string()),
        "isolated": !d.isolated_by.is_empty(),
        "isolatedBy": d.isolated_by.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "allowed": d.allowed(),
        "allowedBy": d.allowed_by().map(|r| r.to_string()).collect::<Vec<_>>(),
        "rules": rules_json(&d.rules),
        "auditedBy": d.audited_by.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "auditRules": rules_json(&d.audit_rules),
        "wouldDeny": would_deny_json(d),
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
/// `tiers`: the decision, the rules that matched and the walkthrough. `wouldDeny` lists, as the
/// first packet meets them, the directions audit mode lets through that would deny it
/// (`{"direction", "by", "auditAll"}`); each direction has its own `wouldDeny` (or `null`),
/// `auditedBy` and `auditRules`.
pub fn explain_json(v: &ConnectionVerdict) -> serde_json::Value {
    let would: Vec<serde_json::Value> = v
        .would_deny()
        .iter()
        .filter_map(|d| {
            let by = d.would_deny.as_ref()?.to_string();
            Some(json!({"direction": d.direction.as_str(), "by": by, "auditAll": d.audit_all}))
        })
        .collect();
    let mut j = json!({
        "from": v.from,
        "to": v.to,
        "port": v.transport.map(|(_, port)| port),
        "protocol": v.transport.map_or("ICMP", |(protocol, _)| protocol.as_api()),
        "allowed": v.allowed(),
        "wouldDeny": would,
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
