//! A typed model of nftpolicy's one nftables table, its text form, and an interpreter for it.
//!
//! The same [`Ruleset`] is what `policyc compile` prints, what the agent diffs against the committed
//! state, and what [`interp`] evaluates packet by packet in tests.

pub mod interp;
pub mod json;
mod render;
pub mod transaction;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::cidr::{Cidr, Family};
use crate::model::Protocol;

/// The table nftpolicy owns (`table inet nftpolicy`); nothing else is ever touched.
pub const TABLE_NAME: &str = "nftpolicy";

/// The longest comment nft stores on a rule, set or chain.
pub const MAX_COMMENT_LEN: usize = 127;

/// What a named set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetType {
    /// Addresses of one family (`ipv4_addr` / `ipv6_addr`).
    Addr(Family),
    /// Destination address, protocol and port (`ipv4_addr . inet_proto . inet_service`): named ports
    /// resolved per pod.
    AddrProtoPort(Family),
}

impl SetType {
    /// The address family of the set's key.
    pub fn family(self) -> Family {
        match self {
            SetType::Addr(f) | SetType::AddrProtoPort(f) => f,
        }
    }
}

/// One element of a named set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetElement {
    /// An address.
    Addr(IpAddr),
    /// An address, protocol and port.
    AddrProtoPort(IpAddr, Protocol, u16),
}

/// A named set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Key type.
    pub set_type: SetType,
    /// What the set stands for (a peer's selectors, a rule's named ports).
    pub comment: String,
    /// Elements.
    pub elements: BTreeSet<SetElement>,
}

/// A verdict map from a pod address to the chain that judges its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictMap {
    /// The key's family.
    pub family: Family,
    /// Address → chain to jump to.
    pub elements: BTreeMap<IpAddr, String>,
}

/// Which address of a packet a match looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddrField {
    /// Source address.
    Saddr,
    /// Destination address.
    Daddr,
}

/// One match expression of a rule; a rule matches when all of its matches do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// `ct state established,related`.
    CtEstablishedOrRelated,
    /// `ip saddr 10.0.0.0/8` or, negated, `ip saddr != 10.1.0.0/16`.
    Prefix {
        /// Source or destination.
        field: AddrField,
        /// Whether the match is `!=`.
        negated: bool,
        /// The prefix; its family decides `ip` or `ip6`.
        cidr: Cidr,
    },
    /// `ip saddr @set`.
    InSet {
        /// Address family.
        family: Family,
        /// Source or destination.
        field: AddrField,
        /// The set's name.
        set: String,
    },
    /// `meta l4proto tcp`.
    L4Proto(Protocol),
    /// `tcp dport 80`, `tcp dport 8000-8080`, `tcp dport { 80, 443 }`.
    Dport {
        /// Protocol.
        protocol: Protocol,
        /// Inclusive ranges, sorted; a single port is `(p, p)`.
        ports: Vec<(u16, u16)>,
    },
    /// `ip daddr . meta l4proto . th dport @set`: named ports resolved per destination pod.
    DaddrProtoPortInSet {
        /// Address family.
        family: Family,
        /// The set's name.
        set: String,
    },
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Accept (ends the base chain, not the hook: later base chains still judge the packet).
    Accept,
    /// Drop (final).
    Drop,
    /// Evaluate another chain, then continue here if it did not decide.
    Jump(String),
    /// `ip saddr vmap @map`: jump to the chain the map gives for the address, if any.
    Vmap {
        /// Address family.
        family: Family,
        /// Source or destination.
        field: AddrField,
        /// The map's name.
        map: String,
    },
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Matches, all of which must hold.
    pub matches: Vec<Match>,
    /// The verdict.
    pub verdict: Verdict,
    /// Ties the rule to its origin, e.g. `x/allow-web ingress[0]`.
    pub comment: Option<String>,
}

/// The hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    /// Offset from the `filter` priority on the forward hook.
    pub priority: i32,
}

/// A chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Set for the base chains attached to the forward hook.
    pub base: Option<BaseChain>,
    /// Rules, in order.
    pub rules: Vec<Rule>,
}

/// The whole `inet nftpolicy` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Named sets, by name.
    pub sets: BTreeMap<String, Set>,
    /// Verdict maps, by name.
    pub maps: BTreeMap<String, VerdictMap>,
    /// Chains, by name.
    pub chains: BTreeMap<String, Chain>,
}

impl Ruleset {
    /// Base chains ordered by priority, then name: the order the kernel runs them in.
    pub fn base_chains(&self) -> Vec<(&str, &Chain)> {
        let mut base: Vec<(&str, &Chain)> = self
            .chains
            .iter()
            .filter(|(_, c)| c.base.is_some())
            .map(|(n, c)| (n.as_str(), c))
            .collect();
        base.sort_by_key(|(n, c)| (c.base.map(|b| b.priority), *n));
        base
    }

    /// The number of rules in all chains.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }

    /// The number of elements in all sets and maps.
    pub fn element_count(&self) -> usize {
        self.sets.values().map(|s| s.elements.len()).sum::<usize>()
            + self.maps.values().map(|m| m.elements.len()).sum::<usize>()
    }
}
