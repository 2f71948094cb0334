//! Per-node planning and rendering: which local pods are isolated, by which policies, and the
//! [`Ruleset`] that enforces exactly that. The entry points are [`compile_node`] (what the agent and
//! `policyc compile` use), [`compile_all`] and [`fail_closed_ruleset`]; the work is split by concept:
//! [`isolation`] (which local pods each policy isolates), [`naming`] (the names of sets, maps and
//! chains) and `rules` (the chains, rules and sets themselves).
//!
//! Layout (see the README for why):
//! - base chains `egress` and `ingress` on the forward hook look the pod address up in a verdict map
//!   (`egress_v4`, `ingress_v4`, …) that sends each isolated local pod to its *group chain*;
//! - a group chain stands for one combination of policies (pods with the same combination share it):
//!   it jumps to each policy's chain in turn, then drops;
//! - a policy chain holds that policy's rules for one direction, each rule accepting;
//! - counters: each NetworkPolicy rule counts on its own named counter (`np_x_allow-web_ingress_0`,
//!   shared by the nft rules it becomes), each group chain's drop on a counter named like the chain,
//!   each ClusterNetworkPolicy Accept or Deny in the chain of its rule (`admin_RULE_guard_egress_2`)
//!   that its decisions jump to; [`Origin`] says what each counts. With the deny log
//!   ([`CompileOptions::deny_log`]) each drop point is preceded by a rate-limited NFLOG rule whose
//!   prefix is its counter's name;
//! - audit: a pod that only audit policies would isolate goes to an *audit group* chain
//!   (`egress_AUDIT_x_deny-all`) holding their rules inline, each returning on a match, then a
//!   "would deny" counter (and log rule): either way the packet goes on to the Baseline tier and the
//!   default allow, as if the audit policies did not exist. Pods enforced policies isolate are
//!   enforced by them alone. With [`CompileOptions::audit_all`] every policy is compiled as
//!   enforced and each drop point counts (and logs) a "would deny" and accepts;
//! - peers are named sets of pod addresses, shared by every rule with the same selectors; ipBlocks
//!   are prefix matches; named ports are sets of `address . protocol . port` resolved per pod.
//!
//! So pod churn only changes set and map elements, and a policy edit only touches its own chains.

mod class_runs;
pub mod isolation;
pub mod live;
mod local;
pub mod naming;
pub mod origin;
mod peers;
mod regions;
mod rules;
mod tiers;
mod universe;

use std::collections::BTreeMap;

use crate::index::ClusterIndex;
use crate::model::Direction;
use crate::nft::{BaseChain, Chain, Match, Rule as NftRule, Ruleset, Verdict};

pub use isolation::{ClusterPlan, LocalPod, NodePlan};
pub use live::{LiveNode, LiveStats};
pub use naming::{
    audit_group_chain_name, cluster_rule_chain_name, cluster_rule_token, group_chain_name,
    named_port_set_name, peer_set_name, policy_chain_name, policy_rule_counter_name,
    tier_class_chain_name, tier_class_map_name, tier_peers_map_name, tier_subjects_set_name,
    vmap_name, NODE_EGRESS_CHAIN,
};
pub use origin::{CompileOptions, DenyLog, Origin, Origins};

/// A node's ruleset and where each of its counters comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    /// The ruleset.
    pub ruleset: Ruleset,
    /// The origin of each named counter of the ruleset, by name.
    pub origins: Origins,
}

impl ClusterPlan<'_> {
    /// Renders the ruleset of one node, with the default options.
    pub fn ruleset(&self, node: &str) -> Ruleset {
        self.compile(node, &CompileOptions::default()).ruleset
    }

    /// Renders the ruleset of one node and the origins of its counters.
    pub fn compile(&self, node: &str, options: &CompileOptions) -> Compiled {
        let plan = self.node_with(node, options.audit_all);
        let (ruleset, origins, _) = rules::Renderer::new(self.index(), plan, *options).render();
        Compiled { ruleset, origins }
    }
}

/// Compiles the ruleset of one node (counters, no log rules, every policy as its annotation says).
pub fn compile_node(cluster: &crate::ClusterState, node: &str) -> Ruleset {
    ClusterPlan::new(ClusterIndex::new(cluster)).ruleset(node)
}

/// Compiles the ruleset of one node with `options`, and the origins of its counters.
pub fn compile_node_with(
    cluster: &crate::ClusterState,
    node: &str,
    options: &CompileOptions,
) -> Compiled {
    ClusterPlan::new(ClusterIndex::new(cluster)).compile(node, options)
}

/// Compiles the rulesets of every node that runs a participating pod.
pub fn compile_all(cluster: &crate::ClusterState) -> BTreeMap<String, Ruleset> {
    compile_all_with(cluster, &CompileOptions::default())
        .into_iter()
        .map(|(node, compiled)| (node, compiled.ruleset))
        .collect()
}

/// Compiles every node that runs a participating pod with `options`.
pub fn compile_all_with(
    cluster: &crate::ClusterState,
    options: &CompileOptions,
) -> BTreeMap<String, Compiled> {
    let plan = ClusterPlan::new(ClusterIndex::new(cluster));
    cluster
        .nodes()
        .into_iter()
        .map(|n| (n.to_string(), plan.compile(n, options)))
        .collect()
}

/// The ruleset `policyd --fail-closed` installs while it has not completed its first sync: the same
/// base chains, dropping every new forwarded connection (established ones keep flowing), since
/// which pods are local is not known yet.
pub fn fail_closed_ruleset() -> Ruleset {
    let mut ruleset = Ruleset::default();
    for (priority, direction) in [(0, Direction::Egress), (1, Direction::Ingress)] {
        ruleset.chains.insert(
            direction.as_str().to_string(),
            Chain {
                base: Some(BaseChain::forward(priority)),
                rules: vec![
                    NftRule {
                        matches: vec![Match::CtEstablishedOrRelated],
                        verdict: Verdict::Accept,
                        comment: None,
                    },
                    NftRule {
                        matches: vec![],
                        verdict: Verdict::Drop,
                        comment: Some("fail-closed until the first sync".to_string()),
                    },
                ],
            },
        );
    }
    ruleset
}
