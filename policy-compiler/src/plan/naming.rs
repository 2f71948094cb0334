//! Names of the sets, maps and chains of a node's ruleset: deterministic, readable, unique.
//!
//! Every name comes from what it stands for (a direction and family, a policy, a combination of
//! policies, a peer's selectors, a rule's named ports), so the same cluster always gives the same
//! names and a change renames nothing it does not touch.
//!
//! A name is `prefix_token_token…[_suffix]` when every token is a plain lowercase token and the result
//! fits in [`MAX_NAME_LEN`]; otherwise `prefix_H<hash>[_suffix]`, with a 48-bit FNV-1a hash of the
//! tokens. Plain tokens contain no `_`, so the joined form is unambiguous; markers put among the
//! tokens (`ALL`, `NS`, `PODS`) are uppercase, which plain tokens never are.

use crate::cidr::Family;
use crate::model::{
    ClusterNetworkPolicy, Direction, NamespaceScope, ObjectRef, PodPeer, Policy, Protocol, Tier,
    NAMESPACE_NAME_LABEL,
};
use crate::selector::LabelSelector;

/// The longest name generated (nft allows more; shorter names keep the ruleset reviewable).
pub const MAX_NAME_LEN: usize = 64;

/// Whether a token can appear as is: lowercase letters, digits, `.`, `-` and `/`.
pub fn is_plain_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"./-".contains(&b))
}

/// Whether a token is one of the uppercase markers callers use (`ALL`, `NS`, `PODS`).
fn is_marker(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_uppercase())
}

/// FNV-1a, 64 bits: stable across runs and platforms.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Builds a name from a prefix, tokens and an optional suffix.
pub fn name(prefix: &str, tokens: &[&str], suffix: Option<&str>) -> String {
    let suffix = suffix.map(|s| format!("_{s}")).unwrap_or_default();
    let plain = tokens.iter().all(|t| is_plain_token(t) || is_marker(t));
    let readable = format!("{prefix}_{}{suffix}", tokens.join("_"));
    if plain && !tokens.is_empty() && readable.len() <= MAX_NAME_LEN {
        return readable;
    }
    let hash = fnv1a(tokens) & 0xffff_ffff_ffff;
    format!("{prefix}_H{hash:012x}{suffix}")
}

/// Name of the verdict map for a direction and family, e.g. `ingress_v4`.
pub fn vmap_name(direction: Direction, family: Family) -> String {
    format!("{}_{}", direction.as_str(), family.suffix())
}

/// Name of a policy's chain for one direction.
pub fn policy_chain_name(policy: &ObjectRef, direction: Direction) -> String {
    name(
        "np",
        &[&policy.namespace, &policy.name, direction.as_str()],
        None,
    )
}

/// Name of the group chain for a combination of policies (all from one namespace).
pub fn group_chain_name(direction: Direction, policies: &[&Policy]) -> String {
    let mut tokens: Vec<&str> = Vec::with_capacity(policies.len() + 1);
    if let Some(first) = policies.first() {
        tokens.push(&first.id.namespace);
    }
    tokens.extend(policies.iter().map(|p| &*p.id.name));
    name(direction.as_str(), &tokens, None)
}

/// Name of the group chain of a combination of audit policies (all from one namespace), for pods
/// no enforced policy isolates: `egress_AUDIT_x_deny-all`.
pub fn audit_group_chain_name(direction: Direction, policies: &[&Policy]) -> String {
    let mut tokens: Vec<&str> = vec!["AUDIT"];
    if let Some(first) = policies.first() {
        tokens.push(&first.id.namespace);
    }
    tokens.extend(policies.iter().map(|p| &*p.id.name));
    name(direction.as_str(), &tokens, None)
}

/// Name of the counter of one NetworkPolicy rule (shared by the nft rules it becomes): the policy
/// chain's name and the rule's index, e.g. `np_x_allow-web_ingress_0`.
pub fn policy_rule_counter_name(policy: &ObjectRef, direction: Direction, rule: usize) -> String {
    name(
        "np",
        &[&policy.namespace, &policy.name, direction.as_str()],
        Some(&rule.to_string()),
    )
}

fn selector_tokens(s: &LabelSelector) -> Vec<String> {
    if s.is_everything() {
        return vec!["ALL".to_string()];
    }
    match s.as_match_labels() {
        Some(pairs) => pairs
            .into_iter()
            .flat_map(|(k, v)| [k.to_string(), v.to_string()])
            .collect(),
        // Expressions have no plain spelling: one token that is never plain forces the hashed form.
        None => vec![s.to_string()],
    }
}

/// Name of the set of addresses of one family that a pod peer selects.
pub fn peer_set_name(peer: &PodPeer, family: Family) -> String {
    let mut tokens = Vec::new();
    match &peer.namespaces {
        NamespaceScope::Own(ns) => tokens.push(ns.clone()),
        NamespaceScope::Selected(s) => {
            tokens.push("NS".to_string());
            // The common `kubernetes.io/metadata.name=<ns>` selector is spelled as the bare name: one
            // token, where other selectors give `ALL` or key/value pairs.
            match s.as_match_labels().as_deref() {
                Some([(NAMESPACE_NAME_LABEL, ns)]) => tokens.push(ns.to_string()),
                _ => tokens.extend(selector_tokens(s)),
            }
            tokens.push("PODS".to_string());
        }
    }
    tokens.extend(selector_tokens(&peer.pods));
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    name("pods", &refs, Some(family.suffix()))
}

/// Name of the set holding a rule's named ports resolved per destination pod.
pub fn named_port_set_name(
    policy: &ObjectRef,
    direction: Direction,
    rule: usize,
    family: Family,
) -> String {
    let rule_token = format!("{}{rule}", direction.as_str());
    name(
        "named",
        &[&policy.namespace, &policy.name, &rule_token],
        Some(family.suffix()),
    )
}

/// The base chain on the input hook that judges what local pods send to their own node.
pub const NODE_EGRESS_CHAIN: &str = "node_egress";

/// `admin` or `baseline`: the prefix of a tier's maps and chains.
fn tier_prefix(tier: Tier) -> &'static str {
    match tier {
        Tier::Admin => "admin",
        Tier::Baseline => "baseline",
    }
}

/// Name of the set of a tier's subjects on the node for a direction, e.g. `admin_egress_subjects_v4`:
/// the local pods whose traffic in that direction the tier's ClusterNetworkPolicies judge.
pub fn tier_subjects_set_name(tier: Tier, direction: Direction, family: Family) -> String {
    format!(
        "{}_{}_subjects_{}",
        tier_prefix(tier),
        direction.as_str(),
        family.suffix()
    )
}

/// Name of the decision map that sends a peer address to the chain of its *peer class* for a tier
/// and direction, e.g. `admin_egress_peers_v4`.
pub fn tier_peers_map_name(tier: Tier, direction: Direction, family: Family) -> String {
    format!(
        "{}_{}_peers_{}",
        tier_prefix(tier),
        direction.as_str(),
        family.suffix()
    )
}

/// A destination named port as the subjects of a combination of policies resolve it: the name,
/// and the protocol and number it has on them (`None` when they declare no port of that name).
pub type ResolvedNamedPort<'p> = (&'p str, Option<(Protocol, u16)>);

/// A rule of a ClusterNetworkPolicy as a name token: `policy.direction.index`.
pub fn cluster_rule_token(
    policy: &ClusterNetworkPolicy,
    direction: Direction,
    index: usize,
) -> String {
    format!("{}.{}.{index}", policy.name, direction.as_str())
}

/// Name of the chain (and counter) of one Accept or Deny rule of a ClusterNetworkPolicy, which its
/// decisions jump to: `admin_RULE_guard_egress_2`.
pub fn cluster_rule_chain_name(
    tier: Tier,
    policy: &ClusterNetworkPolicy,
    direction: Direction,
    index: usize,
) -> String {
    let index = index.to_string();
    name(
        tier_prefix(tier),
        &["RULE", &policy.name, direction.as_str(), &index],
        None,
    )
}

/// The tokens of a peer class: the rules whose peers hold its addresses (as
/// [`cluster_rule_token`]s, in evaluation order) and, for egress rules with named ports, what its
/// addresses resolve them to.
fn class_tokens(direction: Direction, rules: &[String], named: &[String]) -> Vec<String> {
    let mut tokens = vec![direction.as_str().to_string()];
    tokens.extend(rules.iter().cloned());
    if !named.is_empty() {
        tokens.push("PORTS".to_string());
        tokens.extend(named.iter().cloned());
    }
    tokens
}

/// Name of the chain of one peer class of a tier, direction and family (almost always hashed:
/// its comment says what it holds), e.g. `admin_egress_H0123456789ab_v4`.
pub fn tier_class_chain_name(
    tier: Tier,
    direction: Direction,
    rules: &[String],
    named: &[String],
    family: Family,
) -> String {
    let tokens = class_tokens(direction, rules, named);
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    name(tier_prefix(tier), &refs, Some(family.suffix()))
}

/// Name of one of a peer class's decision maps: keyed by local pod address, protocol and port
/// (`ports`), or by local pod address alone for the other protocols (`any`); e.g.
/// `admin_egress_H0123456789ab_ports_v4`.
pub fn tier_class_map_name(
    tier: Tier,
    direction: Direction,
    rules: &[String],
    named: &[String],
    ports: bool,
    family: Family,
) -> String {
    let tokens = class_tokens(direction, rules, named);
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let kind = if ports { "ports" } else { "any" };
    name(
        tier_prefix(tier),
        &refs,
        Some(&format!("{kind}_{}", family.suffix())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens_stay_readable() {
        assert_eq!(
            name("pods", &["x", "app", "web"], Some("v4")),
            "pods_x_app_web_v4"
        );
        assert_eq!(
            name("np", &["x", "allow-web.v2", "ingress"], None),
            "np_x_allow-web.v2_ingress"
        );
    }

    #[test]
    fn odd_or_long_tokens_are_hashed_deterministically() {
        let odd = name("pods", &["x", "App", "Web_1"], Some("v4"));
        assert!(odd.starts_with("pods_H") && odd.ends_with("_v4"), "{odd}");
        assert_eq!(odd, name("pods", &["x", "App", "Web_1"], Some("v4")));
        let long = "a".repeat(80);
        let n = name("np", &["x", &long], None);
        assert!(n.len() <= MAX_NAME_LEN, "{n}");
        assert_ne!(n, name("np", &["x", &"b".repeat(80)], None));
    }

    #[test]
    fn token_boundaries_matter() {
        // Same characters, different tokens: one of them is not plain, so it is hashed.
        assert_ne!(
            name("p", &["a_b", "c"], None),
            name("p", &["a", "b_c"], None)
        );
    }
}
