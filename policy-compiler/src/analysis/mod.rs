//! Connectivity straight from the NetworkPolicy API semantics: the evaluator behind `policyc matrix`
//! and `policyc explain`, and the reference the rendered rulesets are tested against.
//!
//! The evaluator deliberately shares no code with planning and rendering (no index, no sets): it
//! scans policies and reads the rules as the API defines them, so the two can be checked against each
//! other.

pub mod connectivity;
mod explain;
pub mod graph;
mod matrix;

use std::net::IpAddr;

use crate::cidr::Family;
use crate::cluster::ClusterState;
use crate::model::{
    Action, ClusterNetworkPolicy, ClusterPeer, ClusterPort, Direction, NamespaceScope, ObjectRef,
    Peer, Pod, Policy, PortSpec, Protocol, Rule, Subject, Tier,
};

pub use explain::{explain_json, explain_text};
pub use matrix::{declared_ports, write_grid, Matrix, MatrixFlow, PortProto};

/// One end of a connection: a participating pod (by one of its IPs) or a bare address.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// The address used.
    pub ip: IpAddr,
    /// The participating pod holding it, if any.
    pub pod: Option<&'a Pod>,
}

impl<'a> Endpoint<'a> {
    /// The endpoint for an address: the participating pod holding it, or an outside address.
    pub fn from_ip(cluster: &'a ClusterState, ip: IpAddr) -> Self {
        Self {
            ip,
            pod: cluster.pod_by_ip(&ip),
        }
    }

    /// A participating pod by one of its addresses.
    pub fn pod(pod: &'a Pod, ip: IpAddr) -> Self {
        Self { ip, pod: Some(pod) }
    }

    fn describe(&self) -> String {
        match self.pod {
            Some(p) => format!("{} ({})", p.id, self.ip),
            None => self.ip.to_string(),
        }
    }
}

/// A rule of a policy, named as `ns/policy ingress[i]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleRef {
    /// The policy.
    pub policy: ObjectRef,
    /// The direction.
    pub direction: Direction,
    /// The rule's index in `spec.ingress` or `spec.egress`.
    pub index: usize,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}[{}]", self.policy, self.direction, self.index)
    }
}

/// How one rule of an isolating policy judged the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCheck {
    /// The rule.
    pub rule: RuleRef,
    /// Whether a peer of the rule (or its empty peer list) matches the other end.
    pub peer_matches: bool,
    /// Whether a port of the rule (or its empty port list) matches.
    pub port_matches: bool,
}

impl RuleCheck {
    /// Whether the rule allows the connection.
    pub fn allows(&self) -> bool {
        self.peer_matches && self.port_matches
    }
}

/// A rule of a ClusterNetworkPolicy, printed `[Admin] name egress[2] "rule-name"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClusterRuleRef {
    /// The policy's name.
    pub policy: String,
    /// Its tier.
    pub tier: Tier,
    /// Its priority.
    pub priority: u16,
    /// The direction.
    pub direction: Direction,
    /// The rule's index in `spec.ingress` or `spec.egress`.
    pub index: usize,
    /// The rule's name, if it has one.
    pub name: Option<String>,
}

impl std::fmt::Display for ClusterRuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}] {} {}[{}]",
            self.tier.as_api(),
            self.policy,
            self.direction,
            self.index
        )?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        Ok(())
    }
}

/// The first ClusterNetworkPolicy rule of a tier that matched, and its action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierMatch {
    /// The rule.
    pub rule: ClusterRuleRef,
    /// What it does.
    pub action: Action,
}

impl TierMatch {
    /// The rule, its priority and its action, as the reports name what decides a connection:
    /// `[Admin] allow-monitoring (priority 10) egress[2] "scrape" Pass`.
    pub fn cause(&self) -> String {
        let r = &self.rule;
        let mut text = format!(
            "[{}] {} (priority {}) {}[{}]",
            r.tier.as_api(),
            r.policy,
            r.priority,
            r.direction,
            r.index
        );
        if let Some(name) = &r.name {
            text.push_str(&format!(" {name:?}"));
        }
        format!("{text} {}", self.action.as_api())
    }

    /// `{"rule", "tier", "policy", "priority", "direction", "index", "name", "action"}`, `rule`
    /// as [`ClusterRuleRef`] prints it and `name` null for a rule without one.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "rule": self.rule.to_string(),
            "tier": self.rule.tier.as_api(),
            "policy": self.rule.policy,
            "priority": self.rule.priority,
            "direction": self.rule.direction.as_str(),
            "index": self.rule.index,
            "name": self.rule.name,
            "action": self.action.as_api(),
        })
    }
}

/// What decided one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An Admin tier rule accepted it (no NetworkPolicy or Baseline rule is consulted).
    AdminAccept,
    /// An Admin tier rule denied it.
    AdminDeny,
    /// NetworkPolicies isolate the pod in this direction: allowed if one of their rules allows it.
    NetworkPolicy(bool),
    /// A Baseline tier rule accepted it.
    BaselineAccept,
    /// A Baseline tier rule denied it.
    BaselineDeny,
    /// Nothing decided: allowed.
    Default,
}

impl Decision {
    /// Whether the decision lets the connection through.
    pub fn allows(self) -> bool {
        match self {
            Decision::AdminAccept | Decision::BaselineAccept | Decision::Default => true,
            Decision::AdminDeny | Decision::BaselineDeny => false,
            Decision::NetworkPolicy(allowed) => allowed,
        }
    }
}

/// How the evaluator reads the policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvalOptions {
    /// Every NetworkPolicy and ClusterNetworkPolicy in audit mode, as the agent's `--audit-all`
    /// compiles them: each is judged as if enforced (whatever its annotation says), and whatever
    /// that denies is let through and reported as [`DirectionVerdict::would_deny`].
    pub audit_all: bool,
}

/// What would deny a direction that audit mode lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WouldDeny {
    /// NetworkPolicies selecting the pod, none of whose rules allows the connection: the audit
    /// policies of a pod that no enforced policy isolates or, with [`EvalOptions::audit_all`],
    /// the policies isolating it.
    NetworkPolicies(Vec<ObjectRef>),
    /// A ClusterNetworkPolicy Deny rule (with [`EvalOptions::audit_all`]).
    ClusterRule(TierMatch),
}

impl std::fmt::Display for WouldDeny {
    /// The policies, `x/deny-all, x/other`, or the rule as [`TierMatch::cause`] names it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WouldDeny::NetworkPolicies(ids) => {
                let names: Vec<String> = ids.iter().map(ObjectRef::to_string).collect();
                f.write_str(&names.join(", "))
            }
            WouldDeny::ClusterRule(m) => f.write_str(&m.cause()),
        }
    }
}

/// The verdict of one direction: egress at the source, or ingress at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionVerdict {
    /// The direction.
    pub direction: Direction,
    /// The pod whose policies apply (source for egress, destination for ingress), if it is one.
    pub pod: Option<ObjectRef>,
    /// Enforced policies that isolate that pod in this direction (with
    /// [`EvalOptions::audit_all`], every policy isolating it).
    pub isolated_by: Vec<ObjectRef>,
    /// Every rule of those policies, with how it judged the connection.
    pub rules: Vec<RuleCheck>,
    /// Policies in audit mode (annotation `nftpolicy.io/enforcement: audit`) that select the pod
    /// in this direction. They isolate nothing: with enforced policies isolating the pod they
    /// change nothing, else what none of their rules allows is [`Self::would_deny`] (unless the
    /// Admin tier decides). Empty with [`EvalOptions::audit_all`].
    pub audited_by: Vec<ObjectRef>,
    /// Every rule of those audit policies, with how it judged the connection.
    pub audit_rules: Vec<RuleCheck>,
    /// The ClusterNetworkPolicy rules that matched, in evaluation order: the Admin tier's first
    /// match, then (when the NetworkPolicy stage did not decide) the Baseline tier's.
    pub tiers: Vec<TierMatch>,
    /// What decided (with [`EvalOptions::audit_all`]: what would decide with every policy
    /// enforced).
    pub decision: Decision,
    /// What would deny the direction, had audit mode not been asked for: the audit policies of
    /// a pod no enforced policy isolates, when none of their rules allows the connection and the
    /// Admin tier did not decide it (whatever the Baseline tier then decides); with
    /// [`EvalOptions::audit_all`], whatever denies it.
    pub would_deny: Option<WouldDeny>,
    /// Evaluated with [`EvalOptions::audit_all`]: a deny of [`Self::decision`] is let through.
    pub audit_all: bool,
}

impl DirectionVerdict {
    /// Allowed by the tiers: an Admin Accept, or the NetworkPolicies isolating the pod allowing it,
    /// or a Baseline Accept, or nothing deciding; with [`EvalOptions::audit_all`], always.
    pub fn allowed(&self) -> bool {
        self.audit_all || self.decision.allows()
    }

    /// What would deny the direction and the mode that lets it through, for reports:
    /// `x/deny-all (audit)`, or `x/deny-all (--audit-all)`.
    pub fn would_deny_text(&self) -> Option<String> {
        let mode = if self.audit_all {
            "--audit-all"
        } else {
            "audit"
        };
        self.would_deny.as_ref().map(|w| format!("{w} ({mode})"))
    }

    /// With [`EvalOptions::audit_all`], what the decision denies becomes a would-deny.
    fn audit_everything(mut self) -> Self {
        if self.audit_all && !self.decision.allows() {
            self.would_deny = match self.decision {
                Decision::NetworkPolicy(_) => {
                    Some(WouldDeny::NetworkPolicies(self.isolated_by.clone()))
                }
                // The rule that denied is the last one matched.
                _ => self.tiers.last().cloned().map(WouldDeny::ClusterRule),
            };
        }
        self
    }

    /// The rules that allow the connection.
    pub fn allowed_by(&self) -> impl Iterator<Item = &RuleRef> {
        self.rules.iter().filter(|r| r.allows()).map(|r| &r.rule)
    }
}

/// The verdict for a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionVerdict {
    /// Source, as `ns/pod (ip)` or an address.
    pub from: String,
    /// Destination.
    pub to: String,
    /// TCP, UDP or SCTP and the destination port; `None` for a protocol without ports (ICMP,
    /// ICMPv6, …), which only rules without ports match.
    pub transport: Option<(Protocol, u16)>,
    /// A pod reaching its own address: the traffic never leaves its network namespace.
    pub loopback: bool,
    /// Traffic between a pod and its own node (kubelet probes, host-network pods): it never
    /// crosses the forward hook. From the node to the pod it is always allowed; from the pod to
    /// its node, only ClusterNetworkPolicy egress rules judge it (NetworkPolicy allows it).
    pub node_local: bool,
    /// Whether a node-local connection goes from the pod to its node (else from the node).
    pub to_own_node: bool,
    /// Whether the cluster has ClusterNetworkPolicies (explanations then show the tiers).
    pub cluster_policies: bool,
    /// Egress at the source.
    pub egress: DirectionVerdict,
    /// Ingress at the destination.
    pub ingress: DirectionVerdict,
}

impl ConnectionVerdict {
    /// The directions with a [`DirectionVerdict::would_deny`] that the connection's first packet
    /// meets, in order: egress at the source, then ingress at the destination if egress let the
    /// packet on (a packet egress denies never reaches ingress). None for traffic no policy
    /// judges (a pod to itself, a node to its own pods), and only egress for a pod's traffic to
    /// its own node.
    pub fn would_deny(&self) -> Vec<&DirectionVerdict> {
        if self.loopback || (self.node_local && !self.to_own_node) {
            return Vec::new();
        }
        let mut met = vec![&self.egress];
        if !self.to_own_node && self.egress.allowed() {
            met.push(&self.ingress);
        }
        met.retain(|d| d.would_deny.is_some());
        met
    }

    /// The traffic judged, as `80/TCP`, or `ICMP` for a protocol without ports.
    pub fn traffic(&self) -> String {
        match self.transport {
            Some((protocol, port)) => format!("{port}/{protocol}"),
            None => "ICMP".to_string(),
        }
    }

    /// Whether the connection is allowed: loopback; from a node to its pod; from a pod to its
    /// node when its egress allows it; else when both directions do.
    pub fn allowed(&self) -> bool {
        if self.loopback || (self.node_local && !self.to_own_node) {
            return true;
        }
        if self.to_own_node {
            return self.egress.allowed();
        }
        self.egress.allowed() && self.ingress.allowed()
    }
}

fn peer_matches(
    cluster: &ClusterState,
    policy: &Policy,
    peer: &Peer,
    other: &Endpoint<'_>,
) -> bool {
    match peer {
        Peer::IpBlock(block) => block.contains(&other.ip),
        Peer::Pods(p) => {
            let Some(pod) = other.pod else { return false };
            let ns_ok = match &p.namespaces {
                NamespaceScope::Own(ns) => {
                    debug_assert_eq!(ns.as_str(), &*policy.id.namespace);
                    *pod.id.namespace == **ns
                }
                NamespaceScope::Selected(s) => cluster
                    .namespace(&pod.id.namespace)
                    .is_some_and(|n| s.matches(&n.labels)),
            };
            ns_ok && p.pods.matches(&pod.labels)
        }
    }
}

fn port_matches(rule: &Rule, destination: &Endpoint<'_>, transport: Transport) -> bool {
    let Some((protocol, port)) = transport else {
        return rule.ports.is_empty();
    };
    rule.ports.is_empty()
        || rule.ports.iter().any(|p| {
            p.protocol == protocol
                && match &p.port {
                    PortSpec::Any => true,
                    PortSpec::Range(a, b) => (*a..=*b).contains(&port),
                    PortSpec::Named(name) => {
                        destination.pod.and_then(|d| d.named_port(name, protocol)) == Some(port)
                    }
                }
        })
}

/// Whether a ClusterNetworkPolicy's subject selects a pod.
fn subject_selects(cluster: &ClusterState, subject: &Subject, pod: &Pod) -> bool {
    let ns_labels = cluster.namespace(&pod.id.namespace).map(|n| &n.labels);
    match subject {
        Subject::Namespaces(s) => ns_labels.is_some_and(|l| s.matches(l)),
        Subject::Pods(p) => {
            ns_labels.is_some_and(|l| p.namespaces.matches(l)) && p.pods.matches(&pod.labels)
        }
    }
}

/// Whether a ClusterNetworkPolicy peer holds the other end.
fn cluster_peer_matches(
    cluster: &ClusterState,
    peer: &ClusterPeer,
    action: Action,
    other: &Endpoint<'_>,
) -> bool {
    let pod_in = |namespaces: &crate::selector::LabelSelector| {
        other.pod.is_some_and(|p| {
            cluster
                .namespace(&p.id.namespace)
                .is_some_and(|n| namespaces.matches(&n.labels))
        })
    };
    match peer {
        ClusterPeer::Namespaces(s) => pod_in(s),
        ClusterPeer::Pods(p) => {
            pod_in(&p.namespaces) && other.pod.is_some_and(|q| p.pods.matches(&q.labels))
        }
        ClusterPeer::Networks(cidrs) => cidrs.iter().any(|c| c.contains(&other.ip)),
        ClusterPeer::Nodes(s) => cluster
            .node_objects()
            .values()
            .any(|n| s.matches(&n.labels) && n.addresses.contains(&other.ip)),
        // A peer of a newer API version: an Accept matches nothing, a Deny or Pass everything.
        ClusterPeer::Unknown => action != Action::Accept,
    }
}

/// Whether a ClusterNetworkPolicy rule's protocols hold the connection (none: all traffic).
fn cluster_ports_match(
    ports: &[ClusterPort],
    destination: &Endpoint<'_>,
    transport: Transport,
) -> bool {
    let Some((protocol, port)) = transport else {
        return ports.is_empty();
    };
    ports.is_empty()
        || ports.iter().any(|p| match p {
            ClusterPort::Range {
                protocol: pr,
                first,
                last,
            } => *pr == protocol && (*first..=*last).contains(&port),
            ClusterPort::Named(name) => {
                destination.pod.and_then(|d| d.named_port(name, protocol)) == Some(port)
            }
        })
}

/// The first rule of a tier that matches, among the tier's policies selecting `pod`, by priority
/// then name (the tie-break for equal priorities), rules in written order.
#[allow(clippy::too_many_arguments)]
fn first_tier_match(
    cluster: &ClusterState,
    tier: Tier,
    direction: Direction,
    pod: &Pod,
    other: &Endpoint<'_>,
    destination: &Endpoint<'_>,
    transport: Transport,
) -> Option<TierMatch> {
    let mut policies: Vec<&ClusterNetworkPolicy> = cluster
        .cluster_policies()
        .values()
        .filter(|c| c.tier == tier && subject_selects(cluster, &c.subject, pod))
        .collect();
    policies.sort_by_key(|c| c.order_key());
    for policy in policies {
        for (index, rule) in policy.rules(direction).iter().enumerate() {
            let peer = rule
                .peers
                .iter()
                .any(|p| cluster_peer_matches(cluster, p, rule.action, other));
            if peer && cluster_ports_match(&rule.protocols, destination, transport) {
                return Some(TierMatch {
                    rule: ClusterRuleRef {
                        policy: policy.name.clone(),
                        tier,
                        priority: policy.priority,
                        direction,
                        index,
                        name: rule.name.clone(),
                    },
                    action: rule.action,
                });
            }
        }
    }
    None
}

/// How each rule of `policy` in `direction` judges the connection with `other`.
fn rule_checks<'a>(
    cluster: &'a ClusterState,
    policy: &'a Policy,
    direction: Direction,
    other: &'a Endpoint<'_>,
    destination: &'a Endpoint<'_>,
    transport: Transport,
) -> impl Iterator<Item = RuleCheck> + 'a {
    policy
        .rules(direction)
        .iter()
        .enumerate()
        .map(move |(index, rule)| {
            let peer_ok = rule.peers.is_empty()
                || rule
                    .peers
                    .iter()
                    .any(|peer| peer_matches(cluster, policy, peer, other));
            RuleCheck {
                rule: RuleRef {
                    policy: policy.id.clone(),
                    direction,
                    index,
                },
                peer_matches: peer_ok,
                port_matches: port_matches(rule, destination, transport),
            }
        })
}

#[allow(clippy::too_many_arguments)]
fn judge_direction(
    cluster: &ClusterState,
    direction: Direction,
    subject: &Endpoint<'_>,
    other: &Endpoint<'_>,
    destination: &Endpoint<'_>,
    transport: Transport,
    to_own_node: bool,
    options: EvalOptions,
) -> DirectionVerdict {
    let mut verdict = DirectionVerdict {
        direction,
        pod: subject.pod.map(|p| p.id.clone()),
        isolated_by: Vec::new(),
        rules: Vec::new(),
        audited_by: Vec::new(),
        audit_rules: Vec::new(),
        tiers: Vec::new(),
        decision: Decision::Default,
        would_deny: None,
        audit_all: options.audit_all,
    };
    let Some(pod) = subject.pod else {
        return verdict;
    };
    for policy in cluster.policies().values() {
        if policy.id.namespace != pod.id.namespace
            || !policy.isolates(direction)
            || !policy.pod_selector.matches(&pod.labels)
        {
            continue;
        }
        let checks = rule_checks(cluster, policy, direction, other, destination, transport);
        if policy.is_audit() && !options.audit_all {
            verdict.audited_by.push(policy.id.clone());
            verdict.audit_rules.extend(checks);
        } else {
            verdict.isolated_by.push(policy.id.clone());
            verdict.rules.extend(checks);
        }
    }
    let tier = |t| first_tier_match(cluster, t, direction, pod, other, destination, transport);
    // 1. Admin: Accept and Deny decide; Pass goes on to the NetworkPolicies.
    if let Some(m) = tier(Tier::Admin) {
        let action = m.action;
        verdict.tiers.push(m);
        match action {
            Action::Accept => {
                verdict.decision = Decision::AdminAccept;
                return verdict.audit_everything();
            }
            Action::Deny => {
                verdict.decision = Decision::AdminDeny;
                return verdict.audit_everything();
            }
            Action::Pass => {}
        }
    }
    // 2. NetworkPolicy: decides for the pods enforced policies isolate (a pod's traffic to its
    // own node is always allowed by it); audit policies then change nothing.
    if !verdict.isolated_by.is_empty() {
        let allowed = to_own_node || verdict.rules.iter().any(RuleCheck::allows);
        verdict.decision = Decision::NetworkPolicy(allowed);
        return verdict.audit_everything();
    }
    // Audit policies alone isolate nothing: what none of their rules allows, they would deny,
    // and the next stages judge it as if they did not exist.
    let audit_allows = to_own_node || verdict.audit_rules.iter().any(RuleCheck::allows);
    if !verdict.audited_by.is_empty() && !audit_allows {
        verdict.would_deny = Some(WouldDeny::NetworkPolicies(verdict.audited_by.clone()));
    }
    // 3. Baseline: Accept and Deny decide; Pass, or no match, is the default: allowed.
    if let Some(m) = tier(Tier::Baseline) {
        verdict.decision = match m.action {
            Action::Accept => Decision::BaselineAccept,
            Action::Deny => Decision::BaselineDeny,
            Action::Pass => Decision::Default,
        };
        verdict.tiers.push(m);
    }
    verdict.audit_everything()
}

/// Judges a new connection from `from` to `to` on `port`/`protocol`.
pub fn evaluate(
    cluster: &ClusterState,
    from: Endpoint<'_>,
    to: Endpoint<'_>,
    protocol: Protocol,
    port: u16,
) -> ConnectionVerdict {
    evaluate_with(
        cluster,
        from,
        to,
        Some((protocol, port)),
        EvalOptions::default(),
    )
}

/// Judges the first packet of a protocol without ports (an ICMP echo request, say) from `from` to
/// `to`: only rules without ports match it.
pub fn evaluate_portless(
    cluster: &ClusterState,
    from: Endpoint<'_>,
    to: Endpoint<'_>,
) -> ConnectionVerdict {
    evaluate_with(cluster, from, to, None, EvalOptions::default())
}

/// TCP, UDP or SCTP with a destination port, or `None` for a protocol without ports.
type Transport = Option<(Protocol, u16)>;

/// Judges a new connection from `from` to `to` with `options`: on a TCP, UDP or SCTP port
/// (`Some((protocol, port))`), or, for `None`, the first packet of a protocol without ports.
pub fn evaluate_with(
    cluster: &ClusterState,
    from: Endpoint<'_>,
    to: Endpoint<'_>,
    transport: Option<(Protocol, u16)>,
    options: EvalOptions,
) -> ConnectionVerdict {
    let loopback = match (from.pod, to.pod) {
        (Some(a), Some(b)) => a.id == b.id,
        _ => from.ip == to.ip,
    };
    // A pod's own node: its status.hostIPs, and its Node's addresses.
    let on_own_node = |pod: Option<&Pod>, other: &Endpoint<'_>| {
        pod.is_some_and(|p| {
            p.host_ips.contains(&other.ip)
                || p.node
                    .as_deref()
                    .and_then(|n| cluster.node(n))
                    .is_some_and(|n| n.addresses.contains(&other.ip))
        })
    };
    let to_own_node = !loopback && on_own_node(from.pod, &to);
    let node_local = to_own_node || (!loopback && on_own_node(to.pod, &from));
    ConnectionVerdict {
        from: from.describe(),
        to: to.describe(),
        transport,
        loopback,
        node_local,
        to_own_node,
        cluster_policies: !cluster.cluster_policies().is_empty(),
        egress: judge_direction(
            cluster,
            Direction::Egress,
            &from,
            &to,
            &to,
            transport,
            to_own_node,
            options,
        ),
        ingress: judge_direction(
            cluster,
            Direction::Ingress,
            &to,
            &from,
            &to,
            transport,
            false,
            options,
        ),
    }
}

/// The address family two endpoints can talk over, preferring IPv4, if any.
pub fn common_family(a: &Pod, b: &Pod) -> Option<Family> {
    [Family::V4, Family::V6]
        .into_iter()
        .find(|f| a.ip(*f).is_some() && b.ip(*f).is_some())
}

#[cfg(test)]
mod tests;
