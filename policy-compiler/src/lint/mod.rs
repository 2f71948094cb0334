//! Lint: findings about policies and workloads that are valid but probably wrong, each with a
//! stable rule id, a severity and the line and column of the object or field it is about.
//!
//! The rules are one table ([`RULES`]); [`lint`] runs their checks over a materialized cluster
//! ([`crate::workload::materialize`]: workloads count as pods) and locates each finding in the
//! sources ([`crate::input::position`]), only for the objects that have findings. [`report`] writes
//! findings as compiler-style text, JSON or SARIF.
//!
//! What the checks prove and what they leave alone:
//! - `rule-shadowed` reports only coverage that holds whatever labels and addresses the cluster
//!   holds (selector implication, prefix containment, port ranges merged per protocol); coverage
//!   by a union of several rules is not looked for.
//! - `named-port-undeclared` is not reported where there is no destination pod at all (another
//!   rule says why), except for egress rules whose peers are all ipBlocks holding no pod address;
//!   nor for egress rules that can reach namespaces the input has no pod of (an empty `to`, or
//!   cluster DNS in kube-system, whose pods declare `dns`/UDP): the port may be declared there.
//! - `peer-matches-nothing` judges a pod peer only in namespaces the input has pods of; a
//!   namespaceSelector is judged against the input's namespaces and the ones every cluster has.
//! - `egress-blocks-dns` is reported once per policy that isolates affected pods for egress; a
//!   rule counts as allowing DNS when it allows UDP or TCP port 53 to any peer (the DNS service is
//!   seldom in the input).
//! - `namespace-not-declared` runs only when the input declares some Namespace, and leaves out
//!   the namespaces every cluster has ([`BUILTIN_NAMESPACES`]).
//! - The ClusterNetworkPolicy rules but `networks-cover-pod-cidr` (`cluster-rule-shadowed`,
//!   `cluster-pass-reaches-nothing`, `cluster-policy-priority-tie`) judge what each rule does
//!   over the input, exactly: every pod its policy selects with every pod, external range and
//!   node of the input ([`crate::analysis::connectivity::ClusterRuleEffects`]). Another set of
//!   pods or nodes may give other findings; a rule that matches nothing of the input is not
//!   judged.
//! - NetworkPolicies in audit mode isolate nothing: `egress-blocks-dns`, `workload-not-isolated`
//!   and the ClusterNetworkPolicy rules judge the enforced policies only (the checks of a
//!   policy's own fields and rules judge every policy).

mod checks;
mod cluster_checks;
pub mod report;
mod rules;

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::ClusterState;
use crate::input::position::{field_positions, FieldPositions, ObjectSlot, Position};
use crate::input::{Location, Source};
use crate::model::ObjectRef;
use crate::object::Kind;
use crate::workload::PodCidrs;

pub use checks::BUILTIN_NAMESPACES;
pub use rules::{
    Rule, Severity, CLUSTER_PASS_REACHES_NOTHING, CLUSTER_POLICY_PRIORITY_TIE,
    CLUSTER_RULE_SHADOWED, EGRESS_BLOCKS_DNS, IPBLOCK_COVERS_POD_CIDR, NAMED_PORT_UNDECLARED,
    NAMESPACE_NOT_DECLARED, NETWORKS_COVER_POD_CIDR, PEER_MATCHES_NOTHING, POLICY_SELECTS_NO_POD,
    RULES, RULE_DUPLICATE, RULE_SHADOWED, WORKLOAD_NOT_ISOLATED,
};

/// What lint reads.
#[derive(Debug, Clone, Copy)]
pub struct LintInput<'a> {
    /// The sources, for locating findings.
    pub sources: &'a [Source],
    /// Where each object was defined ([`crate::input::Manifests::locations`]).
    pub locations: &'a BTreeMap<(Kind, ObjectRef), Location>,
    /// The cluster, materialized (workloads as representative pods, addresses synthesised).
    pub cluster: &'a ClusterState,
    /// The pod CIDRs (`ipblock-covers-pod-cidr`).
    pub pod_cidrs: &'a PodCidrs,
}

/// One finding, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub rule: &'static Rule,
    /// What is wrong, naming the object and the field.
    pub message: String,
    /// The object's kind.
    pub kind: Kind,
    /// The object's key (the namespace empty for a Namespace).
    pub object: ObjectRef,
    /// The field the finding is about (`spec.ingress[1].from[0].podSelector`), `""` for the
    /// object itself.
    pub field: String,
    /// The file as given (a path, or `<stdin>`).
    pub file: String,
    /// The line and column of the field, or of its nearest ancestor the source writes (a field
    /// left to its default has no place of its own); `None` if the object could not be found in
    /// the text.
    pub position: Option<Position>,
}

impl Finding {
    /// The severity (the rule's).
    pub fn severity(&self) -> Severity {
        self.rule.severity
    }

    /// `namespace/name`, or `name` for a Namespace.
    pub fn object_name(&self) -> String {
        if self.object.namespace.is_empty() {
            self.object.name.to_string()
        } else {
            self.object.to_string()
        }
    }
}

/// Runs every rule; the findings are sorted by file, line and column (then rule and message).
pub fn lint(input: &LintInput<'_>) -> Vec<Finding> {
    let mut drafts = checks::run(input);
    drafts.extend(cluster_checks::run(input));
    let mut slots: BTreeMap<&str, BTreeSet<ObjectSlot>> = BTreeMap::new();
    for draft in &drafts {
        if let Some(location) = input.locations.get(&(draft.kind, draft.object.clone())) {
            slots
                .entry(location.file.as_str())
                .or_default()
                .insert((location.document, location.item));
        }
    }
    let positions: BTreeMap<&str, FieldPositions> = slots
        .into_iter()
        .filter_map(|(file, slots)| {
            let source = input.sources.iter().find(|s| s.name == file)?;
            Some((file, field_positions(source, &slots)))
        })
        .collect();
    let mut findings: Vec<Finding> = drafts
        .into_iter()
        .map(|draft| {
            let location = input.locations.get(&(draft.kind, draft.object.clone()));
            let found = location.and_then(|l| {
                let positions = positions.get(l.file.as_str())?;
                Some((positions, (l.document, l.item)))
            });
            // The first field the source writes; else the first, at its nearest written ancestor.
            let field = draft
                .fields
                .iter()
                .find(|f| found.is_some_and(|(p, slot)| p.contains(slot, f)))
                .or(draft.fields.first())
                .cloned()
                .unwrap_or_default();
            let position = found
                .and_then(|(p, slot)| p.find(slot, &field))
                .map(|f| f.0);
            Finding {
                rule: draft.rule,
                message: draft.message,
                kind: draft.kind,
                object: draft.object,
                field,
                file: location.map(|l| l.file.clone()).unwrap_or_default(),
                position,
            }
        })
        .collect();
    findings.sort_by(|a, b| {
        (&a.file, a.position, a.rule.id, &a.message)
            .cmp(&(&b.file, b.position, b.rule.id, &b.message))
    });
    findings.dedup();
    findings
}

#[cfg(test)]
mod tests;
