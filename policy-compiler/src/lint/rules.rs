//! The lint rules: one table of ids, severities, descriptions and help, used by every output.

use std::fmt;

/// How serious a finding is.
///
/// There is no error severity: what the API server would reject is invalid input, which every
/// command refuses (exit status 2) before any rule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Probably a mistake: the policy does not do what it seems to.
    Warning,
    /// Worth knowing, often intended.
    Note,
}

impl Severity {
    /// `warning` or `note`, as in text output and SARIF's `level`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lint rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// The stable id (`policy-selects-no-pod`), in text output, JSON and SARIF's `ruleId`.
    pub id: &'static str,
    /// The id in PascalCase (`PolicySelectsNoPod`), SARIF's `name`.
    pub name: &'static str,
    /// The severity of its findings.
    pub severity: Severity,
    /// One sentence: what the rule finds.
    pub summary: &'static str,
    /// Why it matters, in a few sentences.
    pub description: &'static str,
    /// How to fix it (Markdown).
    pub help: &'static str,
}

/// `policy-selects-no-pod`.
pub static POLICY_SELECTS_NO_POD: Rule = Rule {
    id: "policy-selects-no-pod",
    name: "PolicySelectsNoPod",
    severity: Severity::Warning,
    summary: "A NetworkPolicy whose podSelector matches no pod of its namespace.",
    description: "A policy applies to the pods of its own namespace that its spec.podSelector \
        matches. When no pod or workload of the input in that namespace has matching labels, the \
        policy isolates nothing and its rules allow nothing: usually a label or namespace typo.",
    help: "Check `spec.podSelector` against the labels of the pod templates it is meant for, and \
        `metadata.namespace` against the namespace those workloads are in. If the workloads live \
        elsewhere, lint them together with the policies (`policyc lint policies/ workloads/`).",
};

/// `peer-matches-nothing`.
pub static PEER_MATCHES_NOTHING: Rule = Rule {
    id: "peer-matches-nothing",
    name: "PeerMatchesNothing",
    severity: Severity::Warning,
    summary: "A from/to peer whose podSelector or namespaceSelector matches nothing.",
    description:
        "A pod peer allows the pods its namespaceSelector and podSelector match together. \
        A namespaceSelector that matches no namespace, or a peer that matches no pod, allows \
        nothing: usually a label typo, or a namespace whose labels are not in the input.",
    help: "Check the selector's labels against the pods' and namespaces' labels. Every namespace \
        carries `kubernetes.io/metadata.name: <name>`, which a namespaceSelector can always rely \
        on. Lint the Namespace objects and workloads together with the policies.",
};

/// `named-port-undeclared`.
pub static NAMED_PORT_UNDECLARED: Rule = Rule {
    id: "named-port-undeclared",
    name: "NamedPortUndeclared",
    severity: Severity::Warning,
    summary: "A named port that no pod the rule applies to declares.",
    description: "A named port matches a destination pod's container port of that name and \
        protocol. For ingress the destinations are the pods the policy selects; for egress the \
        pods the rule's peers match. When none of them declares the name with that protocol, the \
        port allows nothing. Egress rules that can reach namespaces the input has no pod of (an \
        empty `to` reaches them all) are not judged.",
    help: "Name the container port in the pod template (`ports: [{name: http, containerPort: \
        8080}]`), fix the name or protocol in the policy, or use the port number.",
};

/// `rule-duplicate`.
pub static RULE_DUPLICATE: Rule = Rule {
    id: "rule-duplicate",
    name: "RuleDuplicate",
    severity: Severity::Warning,
    summary: "A rule identical to an earlier rule of the same policy and direction.",
    description: "Two rules with the same peers and the same ports (in any order) allow the same \
        connections; the later one adds nothing. It is often a copy meant to be edited.",
    help: "Delete the duplicate, or change it to allow what it was meant to.",
};

/// `rule-shadowed`.
pub static RULE_SHADOWED: Rule = Rule {
    id: "rule-shadowed",
    name: "RuleShadowed",
    severity: Severity::Warning,
    summary: "A rule every connection of which another rule of the same policy already allows.",
    description: "Rules of a policy are a union: a rule whose every peer is matched by a peer of \
        another rule (an empty `from`/`to` matches everything) and whose every port that other \
        rule allows too (empty `ports` allows every port) adds nothing. Only coverage that holds \
        whatever the cluster's labels and addresses is reported.",
    help:
        "Delete the covered rule, or narrow the covering rule if the covered one was meant to be \
        the only way in.",
};

/// `ipblock-covers-pod-cidr`.
pub static IPBLOCK_COVERS_POD_CIDR: Rule = Rule {
    id: "ipblock-covers-pod-cidr",
    name: "IpBlockCoversPodCidr",
    severity: Severity::Warning,
    summary: "An ipBlock that includes pod addresses.",
    description: "ipBlocks match addresses, and the API applies them to pod addresses too: an \
        ipBlock whose cidr (minus its excepts) includes all or part of the cluster's pod CIDR \
        allows whichever pods hold those addresses, whatever their labels. That is rarely meant, \
        and pod addresses change as pods are rescheduled.",
    help: "Add the pod CIDR to `except` (`cidr: 0.0.0.0/0, except: [10.244.0.0/16]`) and allow \
        pods with a podSelector or namespaceSelector peer. Give the cluster's real pod CIDR with \
        `--pod-cidr`.",
};

/// `egress-blocks-dns`.
pub static EGRESS_BLOCKS_DNS: Rule = Rule {
    id: "egress-blocks-dns",
    name: "EgressBlocksDns",
    severity: Severity::Warning,
    summary: "Egress isolation that leaves a pod without DNS.",
    description: "A pod selected by a policy isolating egress may only open the connections some \
        egress rule of the policies selecting it allows. When no such rule allows UDP or TCP port \
        53 to any destination, the pod cannot resolve names. Reported once for each policy that \
        isolates such pods for egress, naming the pods' workloads.",
    help: "Add an egress rule for DNS, e.g. `- to: [{namespaceSelector: {matchLabels: \
        {kubernetes.io/metadata.name: kube-system}}, podSelector: {matchLabels: {k8s-app: \
        kube-dns}}}]` with `ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]`.",
};

/// `namespace-not-declared`.
pub static NAMESPACE_NOT_DECLARED: Rule = Rule {
    id: "namespace-not-declared",
    name: "NamespaceNotDeclared",
    severity: Severity::Warning,
    summary: "An object in a namespace that no Namespace of the input declares.",
    description: "When the input declares namespaces, an object in another namespace is usually \
        a typo in `metadata.namespace`, or a namespace that is missing, so that its labels (which \
        namespaceSelectors match) are unknown. Namespaces every cluster has (default, \
        kube-system, kube-public, kube-node-lease) need no declaration. Not checked when the \
        input declares no namespace at all.",
    help: "Fix `metadata.namespace`, or add the Namespace object with its labels to the input.",
};

/// `workload-not-isolated`.
pub static WORKLOAD_NOT_ISOLATED: Rule = Rule {
    id: "workload-not-isolated",
    name: "WorkloadNotIsolated",
    severity: Severity::Note,
    summary: "A workload that no policy isolates in either direction.",
    description: "A pod that no policy selects accepts connections from anywhere and opens \
        connections to anywhere. That may be intended; a default-deny policy in its namespace \
        makes the allowed connections explicit. Pods that a ClusterNetworkPolicy with rules \
        selects are not reported.",
    help: "Add a policy selecting the workload's pods, or a default-deny policy for the namespace \
        (`podSelector: {}` with `policyTypes: [Ingress, Egress]`) and allow what it needs.",
};

/// `cluster-policy-priority-tie`.
pub static CLUSTER_POLICY_PRIORITY_TIE: Rule = Rule {
    id: "cluster-policy-priority-tie",
    name: "ClusterPolicyPriorityTie",
    severity: Severity::Warning,
    summary: "ClusterNetworkPolicies of one tier and priority whose rules decide a connection \
        differently.",
    description: "Within a tier, ClusterNetworkPolicies are evaluated by priority, and the API \
        leaves the order of equal priorities to the implementation; nftpolicy evaluates them by \
        name. When a rule of each of two such policies would decide the same connection of a pod \
        both select (each the first rule of its policy to match it, the connection decided by no \
        policy of higher priority) with different actions, the name decides which wins, and \
        another implementation may decide otherwise. Reported at the rule of the policy that \
        loses, naming an example connection.",
    help: "Give the policies different priorities, in the order meant, or make their rules \
        agree on the connections they share.",
};

/// `cluster-pass-reaches-nothing`.
pub static CLUSTER_PASS_REACHES_NOTHING: Rule = Rule {
    id: "cluster-pass-reaches-nothing",
    name: "ClusterPassReachesNothing",
    severity: Severity::Note,
    summary: "A ClusterNetworkPolicy Pass that allows everything it passes, as an Accept would.",
    description: "A Pass hands connections on: from the Admin tier to the NetworkPolicies and \
        the Baseline tier, from the Baseline tier to the default, allow. An Admin Pass reaches \
        nothing when, for every connection it decides, no NetworkPolicy isolates the pod in that \
        direction and no Baseline rule denies the connection: all of it is allowed, as by \
        Accept, and the NetworkPolicies it defers to do not exist (yet). A Pass in the Baseline \
        tier always allows what it decides: nothing is evaluated after the Baseline tier.",
    help: "Write Accept if allowing is meant; if the Pass defers to namespace owners, their \
        NetworkPolicies are missing from the input (lint them together).",
};

/// `networks-cover-pod-cidr`.
pub static NETWORKS_COVER_POD_CIDR: Rule = Rule {
    id: "networks-cover-pod-cidr",
    name: "NetworksCoverPodCidr",
    severity: Severity::Warning,
    summary: "A ClusterNetworkPolicy `networks` entry that includes pod addresses.",
    description: "`networks` match addresses, pod addresses included: `0.0.0.0/0` is the \
        internet and every pod of the cluster. A network that includes all or part of the pod \
        CIDR, or the address of a pod of the input, makes the rule match the traffic to those \
        pods too, whatever their labels, which is rarely meant for a rule about the outside.",
    help: "Put a rule for the pods first (a `namespaces` or `pods` peer: it decides them before \
        the network rule), or use networks that leave the pod CIDR out. Give the cluster's real \
        pod CIDR with `--pod-cidr`.",
};

/// `cluster-rule-shadowed`.
pub static CLUSTER_RULE_SHADOWED: Rule = Rule {
    id: "cluster-rule-shadowed",
    name: "ClusterRuleShadowed",
    severity: Severity::Warning,
    summary:
        "A ClusterNetworkPolicy rule that decides nothing: earlier rules decide all it matches.",
    description: "The first rule of a tier that matches a connection decides it. A rule that \
        matches connections of the pods its policy selects, every one of which a rule before it \
        decides (of a policy of higher priority, of equal priority and an earlier name, or \
        earlier in its own policy), never decides anything; nor does a Baseline rule all of whose \
        connections NetworkPolicies decide (the Baseline tier is only for pods no NetworkPolicy \
        isolates). Judged over the pods, ranges and nodes of the input.",
    help: "Delete the rule, move it before the rules that cover it (a lower priority value, or \
        earlier in its policy), or narrow those.",
};

/// Every rule, in the order of SARIF's `rules` (a result's `ruleIndex` is an index here).
pub static RULES: [&Rule; 13] = [
    &POLICY_SELECTS_NO_POD,
    &PEER_MATCHES_NOTHING,
    &NAMED_PORT_UNDECLARED,
    &RULE_DUPLICATE,
    &RULE_SHADOWED,
    &IPBLOCK_COVERS_POD_CIDR,
    &EGRESS_BLOCKS_DNS,
    &NAMESPACE_NOT_DECLARED,
    &WORKLOAD_NOT_ISOLATED,
    &CLUSTER_POLICY_PRIORITY_TIE,
    &CLUSTER_PASS_REACHES_NOTHING,
    &NETWORKS_COVER_POD_CIDR,
    &CLUSTER_RULE_SHADOWED,
];

impl Rule {
    /// The rule's index in [`RULES`] (every rule of this module is there).
    pub fn index(&self) -> Option<usize> {
        RULES.iter().position(|r| r.id == self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_kebab_case_and_names_are_their_pascal_case() {
        for (i, rule) in RULES.iter().enumerate() {
            assert_eq!(rule.index(), Some(i));
            assert!(
                rule.id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                rule.id
            );
            let pascal: String = rule
                .id
                .split('-')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect();
            assert_eq!(pascal.to_lowercase(), rule.name.to_lowercase());
            assert!(rule.summary.ends_with('.') && rule.description.ends_with('.'));
        }
    }
}
