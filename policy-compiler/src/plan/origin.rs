//! What a compiled ruleset is asked to do besides enforcing ([`CompileOptions`]: deny logs, audit
//! of every policy), and where each of its named counters comes from ([`Origin`], by counter name
//! in [`Origins`]): the agent labels its metrics with it, and names the policies of a denial from
//! the NFLOG prefix, which is the counter name of the drop point that logged it.

use std::collections::BTreeMap;

use crate::model::{Action, Direction, ObjectRef, Tier};

/// Options of a compile; the default is what `compile_node` gives: counters on every accept rule
/// and drop point, no log rules, every policy as its annotation says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileOptions {
    /// Log rules before each drop point (and each "would deny" of an audit policy), through NFLOG.
    pub deny_log: Option<DenyLog>,
    /// Every NetworkPolicy and ClusterNetworkPolicy in audit mode: compiled as enforced, every drop
    /// point counted (and logged) as "would deny" and accepted.
    pub audit_all: bool,
}

/// How denials are logged: `limit rate RATE/second burst BURST packets log prefix "COUNTER" group
/// GROUP`, one limit per drop point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenyLog {
    /// The NFLOG group the agent reads.
    pub group: u16,
    /// Log messages per second per drop point.
    pub rate: u32,
    /// Messages a drop point may log at once above the rate.
    pub burst: u32,
}

impl DenyLog {
    /// The defaults of `policyd --deny-log` and `policyc compile --deny-log`: group 100, 10
    /// messages per second per drop point, bursts of 20.
    pub const DEFAULT: DenyLog = DenyLog {
        group: 100,
        rate: 10,
        burst: 20,
    };
}

impl Default for DenyLog {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a packet that crossed a counter met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A NetworkPolicy rule allowed it.
    PolicyRule {
        /// The policy.
        policy: ObjectRef,
        /// The rule's direction.
        direction: Direction,
        /// The rule's index in that direction.
        index: usize,
        /// The policy is audited: the packet would be allowed by it (it is judged on as if the
        /// policy did not exist).
        audit: bool,
    },
    /// No rule of the policies isolating the pod allowed it: dropped, or with `audit`, "would deny"
    /// (accepted under `audit_all`, judged on as if the policies did not exist otherwise).
    Isolation {
        /// The direction isolated.
        direction: Direction,
        /// The policies that isolate the pod in that direction, sorted.
        policies: Vec<ObjectRef>,
        /// Whether this is a "would deny".
        audit: bool,
    },
    /// A ClusterNetworkPolicy rule decided it: Accept or Deny (Pass has no counter: the next stage
    /// judges).
    ClusterRule {
        /// The tier.
        tier: Tier,
        /// The ClusterNetworkPolicy's name.
        policy: String,
        /// The rule's direction.
        direction: Direction,
        /// The rule's index in that direction.
        index: usize,
        /// The rule's `name`, if it has one.
        rule_name: Option<String>,
        /// Accept or Deny.
        action: Action,
        /// A Deny under `audit_all`: "would deny", accepted.
        audit: bool,
    },
}

impl Origin {
    /// The verdict the kernel applied where this counter counts: `accept`, `drop` or `would_deny`
    /// (the label of the agent's metrics and denials).
    pub fn verdict(&self) -> &'static str {
        match self {
            Origin::PolicyRule { .. } => "accept",
            Origin::Isolation { audit: true, .. } => "would_deny",
            Origin::Isolation { audit: false, .. } => "drop",
            Origin::ClusterRule {
                action: Action::Deny,
                audit: true,
                ..
            } => "would_deny",
            Origin::ClusterRule {
                action: Action::Deny,
                ..
            } => "drop",
            Origin::ClusterRule { .. } => "accept",
        }
    }

    /// The direction the counter's rule judges.
    pub fn direction(&self) -> Direction {
        match self {
            Origin::PolicyRule { direction, .. }
            | Origin::Isolation { direction, .. }
            | Origin::ClusterRule { direction, .. } => *direction,
        }
    }
}

/// The origin of every named counter of one compiled ruleset, by counter name.
pub type Origins = BTreeMap<String, Origin>;
