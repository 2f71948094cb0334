//! Human and JSON explanations of a [`ConnectionVerdict`].

use std::fmt::Write;

use serde_json::json;

use super::{ConnectionVerdict, DirectionVerdict, RuleCheck};
use crate::model::Direction;

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

fn write_direction(out: &mut String, d: &DirectionVerdict) {
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
    if d.isolated_by.is_empty() {
        let _ = writeln!(
            out,
            "  {label}: allowed: no policy selects {pod} for {label} (default allow)"
        );
        return;
    }
    let names: Vec<String> = d.isolated_by.iter().map(|p| p.to_string()).collect();
    let _ = writeln!(
        out,
        "  {label}: {}: {pod} is isolated for {label} by {}",
        if d.allowed() { "allowed" } else { "denied" },
        names.join(", ")
    );
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
        "{} -> {} {}/{}: {}",
        v.from,
        v.to,
        v.port,
        v.protocol,
        verdict_word(v.allowed())
    );
    if v.loopback {
        let _ = writeln!(
            out,
            "  a pod reaching its own address never leaves its network namespace: no policy applies"
        );
        return out;
    }
    if v.node_local {
        let _ = writeln!(
            out,
            "  traffic between a pod and its own node is always allowed (it does not cross the \
             forward hook)"
        );
        return out;
    }
    write_direction(&mut out, &v.egress);
    write_direction(&mut out, &v.ingress);
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

/// The explanation as JSON.
pub fn explain_json(v: &ConnectionVerdict) -> serde_json::Value {
    json!({
        "from": v.from,
        "to": v.to,
        "port": v.port,
        "protocol": v.protocol.as_api(),
        "allowed": v.allowed(),
        "loopback": v.loopback,
        "nodeLocal": v.node_local,
        "egress": direction_json(&v.egress),
        "ingress": direction_json(&v.ingress),
    })
}
