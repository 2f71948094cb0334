//! The checks of the ClusterNetworkPolicy rules: findings about ClusterNetworkPolicies and their
//! fields, not yet located.

use crate::analysis::connectivity::{Connectivity, RuleEffect};
use crate::analysis::ClusterRuleRef;
use crate::model::{Action, ClusterNetworkPolicy, ClusterPeer, IpBlock, ObjectRef, Tier};
use crate::object::Kind;

use super::checks::{list, pod_addresses_in, Draft, Overlap, LISTED};
use super::rules::{
    Rule as LintRule, CLUSTER_PASS_REACHES_NOTHING, CLUSTER_POLICY_PRIORITY_TIE,
    CLUSTER_RULE_SHADOWED, NETWORKS_COVER_POD_CIDR,
};
use super::LintInput;

/// Runs every ClusterNetworkPolicy check.
pub(super) fn run(input: &LintInput<'_>) -> Vec<Draft> {
    let policies = input.cluster.cluster_policies();
    if policies.is_empty() {
        return Vec::new();
    }
    let mut drafts = Vec::new();
    for policy in policies.values() {
        networks_cover_pods(input, policy, &mut drafts);
    }
    let effects = Connectivity::compute(input.cluster, input.pod_cidrs).cluster_rule_effects();
    for effect in &effects.rules {
        shadowed(effect, &mut drafts);
        pass_reaches_nothing(effect, &mut drafts);
    }
    for tie in &effects.ties {
        let (from, to, both) = &tie.example;
        let (first, second) = (&tie.first, &tie.second);
        drafts.push(draft(
            &CLUSTER_POLICY_PRIORITY_TIE,
            &second.policy,
            vec![path(second)],
            format!(
                "ClusterNetworkPolicy {} {} ({}) and ClusterNetworkPolicy {} {} ({}) are both in \
                 the {} tier at priority {}, and both decide {from} => {to} : {both}: equal \
                 priorities are evaluated by name, so {}'s {} wins",
                second.policy,
                path(second),
                described(second, tie.second_action),
                first.policy,
                path(first),
                described(first, tie.first_action),
                first.tier,
                first.priority,
                first.policy,
                tie.first_action,
            ),
        ));
    }
    drafts
}

fn draft(rule: &'static LintRule, policy: &str, fields: Vec<String>, message: String) -> Draft {
    Draft {
        rule,
        kind: Kind::ClusterNetworkPolicy,
        object: ObjectRef::new("", policy),
        fields,
        message,
    }
}

/// `spec.egress[1]`.
fn path(rule: &ClusterRuleRef) -> String {
    format!("spec.{}[{}]", rule.direction, rule.index)
}

/// `"scrape", Accept`, or `Accept` for a rule without a name.
fn described(rule: &ClusterRuleRef, action: Action) -> String {
    match &rule.name {
        Some(name) => format!("{name:?}, {action}"),
        None => action.to_string(),
    }
}

/// `guard spec.egress[0] ("metadata", priority 10)`.
fn earlier(rule: &ClusterRuleRef) -> String {
    let name = rule
        .name
        .as_ref()
        .map(|n| format!("{n:?}, "))
        .unwrap_or_default();
    format!(
        "{} {} ({name}priority {})",
        rule.policy,
        path(rule),
        rule.priority
    )
}

/// `networks-cover-pod-cidr`: each `networks` entry that includes part of a pod CIDR, or (outside
/// them) the address of a pod of the input.
fn networks_cover_pods(input: &LintInput<'_>, policy: &ClusterNetworkPolicy, out: &mut Vec<Draft>) {
    for (index, rule) in policy.egress.iter().enumerate() {
        for (j, peer) in rule.peers.iter().enumerate() {
            let ClusterPeer::Networks(networks) = peer else {
                continue;
            };
            for (k, network) in networks.iter().enumerate() {
                let block = IpBlock {
                    cidr: *network,
                    except: Vec::new(),
                };
                let mut covered: Vec<String> = input
                    .pod_cidrs
                    .cidrs()
                    .iter()
                    .filter_map(|range| match pod_addresses_in(&block, range) {
                        Overlap::None => None,
                        Overlap::Part => Some(format!("part of the pod CIDR {range}")),
                        Overlap::All => Some(format!("all of the pod CIDR {range}")),
                    })
                    .collect();
                if covered.is_empty() {
                    let pods: Vec<String> = input
                        .cluster
                        .participating_pods()
                        .filter(|p| p.ips.iter().any(|ip| network.contains(ip)))
                        .map(|p| p.id.to_string())
                        .collect();
                    if pods.is_empty() {
                        continue;
                    }
                    covered.push(format!("the address of pod {}", list(pods, LISTED)));
                }
                let field = format!("spec.egress[{index}].to[{j}].networks[{k}]");
                out.push(draft(
                    &NETWORKS_COVER_POD_CIDR,
                    &policy.name,
                    vec![field.clone()],
                    format!(
                        "ClusterNetworkPolicy {} {field}: {network} includes {}: networks match \
                         pod addresses, so the rule ({}) also matches the traffic to the pods \
                         there, whatever their labels",
                        policy.name,
                        covered.join(" and "),
                        rule.action
                    ),
                ));
            }
        }
    }
}

/// `cluster-rule-shadowed`: a rule that matches connections of the input and decides none.
fn shadowed(effect: &RuleEffect, out: &mut Vec<Draft>) {
    if !effect.matches || effect.decides {
        return;
    }
    let rule = &effect.rule;
    let mut by: Vec<String> = Vec::new();
    if !effect.decided_earlier_by.is_empty() {
        by.push(format!(
            "earlier in the {} tier by {}",
            rule.tier,
            list(effect.decided_earlier_by.iter().map(earlier), LISTED)
        ));
    }
    if effect.decided_by_network_policies {
        by.push(
            "by the NetworkPolicies isolating its pods (the Baseline tier is only for pods no \
             NetworkPolicy isolates)"
                .to_string(),
        );
    }
    out.push(draft(
        &CLUSTER_RULE_SHADOWED,
        &rule.policy,
        vec![path(rule)],
        format!(
            "ClusterNetworkPolicy {} {} ({}) decides nothing: every connection it matches is \
             decided {}",
            rule.policy,
            path(rule),
            described(rule, effect.action),
            by.join(", and ")
        ),
    ));
}

/// `cluster-pass-reaches-nothing`: an Admin Pass all of whose connections end allowed without a
/// NetworkPolicy or a Baseline Deny judging them, and a Baseline Pass that decides something.
fn pass_reaches_nothing(effect: &RuleEffect, out: &mut Vec<Draft>) {
    if effect.action != Action::Pass || !effect.decides {
        return;
    }
    let rule = &effect.rule;
    let what = match rule.tier {
        Tier::Admin if effect.reaches => return,
        Tier::Admin => {
            "passes its connections on, but no NetworkPolicy isolates their pods in that \
             direction and no Baseline rule denies any of them: they are all allowed, as an \
             Accept would allow them"
        }
        Tier::Baseline => {
            "passes its connections on to the default, allow (nothing is evaluated after the \
             Baseline tier): it allows them, as an Accept would"
        }
    };
    let name = rule
        .name
        .as_ref()
        .map(|n| format!(" ({n:?})"))
        .unwrap_or_default();
    out.push(draft(
        &CLUSTER_PASS_REACHES_NOTHING,
        &rule.policy,
        vec![format!("{}.action", path(rule)), path(rule)],
        format!(
            "ClusterNetworkPolicy {} {}{name} {what}",
            rule.policy,
            path(rule)
        ),
    ));
}
