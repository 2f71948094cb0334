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
        makes the allowed connections explicit.",
    help: "Add a policy selecting the workload's pods, or a default-deny policy for the namespace \
        (`podSelector: {}` with `policyTypes: [Ingress, Egress]`) and allow what it needs.",
};

/// Every rule, in the order of SARIF's `rules` (a result's `ruleIndex` is an index here).
pub static RULES: [&Rule; 9] = [
    &POLICY_SELECTS_NO_POD,
    &PEER_MATCHES_NOTHING,
    &NAMED_PORT_UNDECLARED,
    &RULE_DUPLICATE,
    &RULE_SHADOWED,
    &IPBLOCK_COVERS_POD_CIDR,
    &EGRESS_BLOCKS_DNS,
    &NAMESPACE_NOT_DECLARED,
    &WORKLOAD_NOT_ISOLATED,
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
