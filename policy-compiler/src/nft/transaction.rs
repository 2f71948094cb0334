//! Transactions: the difference between two [`Ruleset`]s as data, rendered as one `nft -f -` batch.
//!
//! A transaction is built, printed and tested like any value, and [`Transaction::apply_to`] predicts
//! the state it leaves, with the errors nft would raise (deleting a missing element, a referenced set,
//! a chain still in use), so the agent keeps the committed state in memory instead of re-reading the
//! kernel.
//!
//! [`Transaction::diff`] touches only what changed: pod churn becomes set and map element operations;
//! an edited policy flushes and refills its own chains; nothing unchanged is flushed.
//!
//! Decision maps (interval maps) are edited element by element too. What nft 1.0.6 does with them,
//! measured on the kernel, and how [`Transaction::apply_to`] predicts it:
//!
//! - An element is deleted by its key written as it is listed (`10.0.0.1`, `10.0.0.0/8`,
//!   `10.0.0.1-10.0.0.9`, ports `80` or `53-60`); every other spelling of the same range works too
//!   (`10.0.0.1-10.0.0.1 . tcp . 80-80`). In an address-only map the key must be an element's
//!   exactly, or the batch fails ("element does not exist"). In a map with ports the kernel looks up
//!   the key's first point (first address, protocol, first port) and deletes the element holding
//!   it, whatever the rest of the key says; the batch fails only when no element holds it.
//! - Adding an element whose key exists with the same verdict changes nothing (not even the
//!   comment); with another verdict the batch fails. Adding an element that overlaps another fails
//!   the batch, with one exception the kernel lets through: in a map with ports, an element whose
//!   first and last points both lie outside an element it overlaps (it encloses it in some field).
//!   The kernel's lookup is then ambiguous, so the prediction refuses every overlap.
//! - Each operation sees the ones before it in the batch: deleting an element, then adding one
//!   that overlaps it, applies. So [`Transaction::diff`] deletes a map's elements before it adds
//!   any, and an element whose verdict or comment changes is deleted and added.
//!
//! Named counters are objects of the table whose packet and byte counts live in the kernel, so
//! [`Transaction::diff`] never deletes and adds again a counter that did not change: a chain it
//! flushes and refills counts on into the same counters, from the counts they had. What nft 1.0.6
//! does with them, and how [`Transaction::apply_to`] predicts it:
//!
//! - A rule naming a counter that does not exist fails the batch (`ENOENT`), and so does deleting
//!   a counter a rule still names (`EBUSY`). So counters are added before the rules that name them
//!   and deleted after the chains that named them are flushed or deleted.
//! - Adding a counter that exists changes nothing, not even its comment, and keeps its counts; a
//!   counter's comment cannot be changed in place. So a counter whose comment changes is deleted
//!   and added again (its counts start again from 0), after the chains that name it are flushed,
//!   which are then refilled.
//! - Counters have a namespace of their own: a counter may have the name of a set, a map or a
//!   chain.
//! - A full replace ([`Transaction::full`]) deletes the table, and with it every count.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

use super::render::{
    chain_declaration, counter_declaration, decision_element, decision_map_declaration,
    map_declaration, set_declaration,
};
use super::{
    Chain, Counter, Decision, DecisionKey, DecisionMap, DecisionVerdict, Match, Rule, Ruleset, Set,
    SetElement, Verdict, VerdictMap, TABLE_NAME,
};

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `add table inet nftpolicy` (a no-op when it exists).
    AddTable,
    /// `delete table inet nftpolicy`.
    DeleteTable,
    /// `add set` with its elements (definition only is a no-op when an identical set exists).
    AddSet(String, Set),
    /// `delete set`.
    DeleteSet(String),
    /// `add element` to a set.
    AddElements(String, Vec<SetElement>),
    /// `delete element` from a set; every element must exist.
    DeleteElements(String, Vec<SetElement>),
    /// `add map` with its elements.
    AddMap(String, VerdictMap),
    /// `delete map`.
    DeleteMap(String),
    /// `add element` to a verdict map: address → chain to jump to.
    AddMapElements(String, Vec<(IpAddr, String)>),
    /// `delete element` from a verdict map; every key must exist.
    DeleteMapElements(String, Vec<IpAddr>),
    /// `add map` of a decision map (`flags interval`), with its elements.
    AddDecisionMap(String, DecisionMap),
    /// `delete map` of a decision map.
    DeleteDecisionMap(String),
    /// `add element` to a decision map; no element may overlap another of the map.
    AddDecisionElements(String, Vec<(DecisionKey, Decision)>),
    /// `delete element` from a decision map; every key must find its element (in a map with ports,
    /// the one holding the key's first point: see the module documentation).
    DeleteDecisionElements(String, Vec<DecisionKey>),
    /// `add counter`: a named counter, from 0 (a no-op when it exists, whatever its comment).
    AddCounter(String, Counter),
    /// `delete counter`; no rule may name it.
    DeleteCounter(String),
    /// `add chain` (a no-op when it exists); base chains carry their hook.
    AddChain(String, Chain),
    /// `flush chain`: remove its rules.
    FlushChain(String),
    /// `delete chain`; it must be empty and unreferenced.
    DeleteChain(String),
    /// `add rule` at the end of a chain.
    AddRule(String, Rule),
}

/// An atomic batch of operations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    /// The operations, in order.
    pub ops: Vec<Op>,
}

/// Why a transaction cannot apply to a state (what nft would refuse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The table does not exist.
    #[error("table inet {TABLE_NAME} does not exist")]
    NoTable,
    /// An object the operation needs is missing.
    #[error("{0}: no such {1}")]
    Missing(String, &'static str),
    /// An object is still referenced or not empty.
    #[error("{0}: {1} is in use")]
    Busy(String, &'static str),
    /// An element or key already exists with other data, or a definition differs.
    #[error("{0}: exists with a different definition")]
    Conflict(String),
    /// A decision map element overlaps another element of the map.
    #[error("{0}: overlaps {1}")]
    Overlap(String, String),
    /// An element or lookup does not fit the map's key type (family, ports, an empty range).
    #[error("{0}: does not fit the key of map {1}")]
    Mismatch(String, String),
    /// A value nft refuses, such as a limit of 0 packets a second.
    #[error("{0}: {1}")]
    Invalid(String, &'static str),
}

/// Counts of what a transaction does, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxStats {
    /// Set and map elements added.
    pub elements_added: usize,
    /// Set and map elements deleted.
    pub elements_deleted: usize,
    /// Rules added.
    pub rules_added: usize,
    /// Chains flushed.
    pub chains_flushed: usize,
    /// Sets, maps, counters and chains added or deleted.
    pub objects_changed: usize,
}

/// The kind of a decision map in references and errors.
const DECISION_MAP: &str = "decision map";

/// The kind of a named counter in references and errors.
const COUNTER: &str = "counter";

fn chain_refs(chain: &Chain) -> impl Iterator<Item = (&'static str, &str)> {
    chain.rules.iter().flat_map(|r| {
        let mut refs: Vec<(&'static str, &str)> = r
            .matches
            .iter()
            .filter_map(|m| match m {
                Match::InSet { set, .. } | Match::DaddrProtoPortInSet { set, .. } => {
                    Some(("set", set.as_str()))
                }
                Match::Counter(name) => Some((COUNTER, name.as_str())),
                _ => None,
            })
            .collect();
        match &r.verdict {
            Verdict::Jump(c) => refs.push(("chain", c.as_str())),
            Verdict::Vmap { map, .. } => refs.push(("map", map.as_str())),
            Verdict::DecisionVmap { map, .. } => refs.push((DECISION_MAP, map.as_str())),
            Verdict::Accept | Verdict::Drop | Verdict::Return | Verdict::Continue => {}
        }
        refs
    })
}

/// The objects an incremental compiler changed between two rulesets, by kind and name (see
/// [`Transaction::diff_touched`]): every object not named here is the same in both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Sets whose definition or elements may differ (elements compared unless tracked below).
    pub sets: BTreeSet<String>,
    /// Verdict maps that may differ.
    pub maps: BTreeSet<String>,
    /// Decision maps that may differ.
    pub decision_maps: BTreeSet<String>,
    /// Counters that may differ.
    pub counters: BTreeSet<String>,
    /// Chains that may differ.
    pub chains: BTreeSet<String>,
    /// Sets that exist in both rulesets with the same definition, whose element changes are
    /// known: they are not compared.
    pub set_elements: BTreeMap<String, ElementDelta>,
    /// Decision maps that exist in both rulesets with the same definition, whose element changes
    /// are known: they are not compared (unless `decision_maps` names them too).
    pub decision_elements: BTreeMap<String, DecisionDelta>,
}

/// The delta of `name` in `deltas`, made empty if absent (without allocating the name when
/// present, as it mostly is: an event changes a few sets and maps, element by element).
fn delta_of<'d, D: Default>(deltas: &'d mut BTreeMap<String, D>, name: &str) -> &'d mut D {
    if !deltas.contains_key(name) {
        deltas.insert(name.to_string(), D::default());
    }
    deltas.get_mut(name).expect("the delta was inserted above")
}

impl Touched {
    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
            && self.maps.is_empty()
            && self.decision_maps.is_empty()
            && self.counters.is_empty()
            && self.chains.is_empty()
            && self.set_elements.values().all(ElementDelta::is_empty)
            && self.decision_elements.values().all(DecisionDelta::is_empty)
    }

    /// Records that `element` left the set `set` (cancelling an addition of it).
    pub fn element_removed(&mut self, set: &str, element: SetElement) {
        let delta = delta_of(&mut self.set_elements, set);
        if !delta.added.remove(&element) {
            delta.removed.insert(element);
        }
    }

    /// Records that `element` joined the set `set` (cancelling a removal of it).
    pub fn element_added(&mut self, set: &str, element: SetElement) {
        let delta = delta_of(&mut self.set_elements, set);
        if !delta.removed.remove(&element) {
            delta.added.insert(element);
        }
    }

    /// Records that the element `key` (deciding `decision`) left the decision map `map`
    /// (cancelling an addition of it).
    pub fn decision_removed(&mut self, map: &str, key: DecisionKey, decision: Decision) {
        let delta = delta_of(&mut self.decision_elements, map);
        if delta.added.get(&key) == Some(&decision) {
            delta.added.remove(&key);
        } else {
            delta.removed.insert(key, decision);
        }
    }

    /// Records that the element `key` (deciding `decision`) joined the decision map `map`
    /// (cancelling a removal of the same element).
    pub fn decision_added(&mut self, map: &str, key: DecisionKey, decision: Decision) {
        let delta = delta_of(&mut self.decision_elements, map);
        if delta.removed.get(&key) == Some(&decision) {
            delta.removed.remove(&key);
        } else {
            delta.added.insert(key, decision);
        }
    }

    /// Adds everything `other` touched (its element changes after this one's).
    pub fn merge(&mut self, other: Touched) {
        self.sets.extend(other.sets);
        self.maps.extend(other.maps);
        self.decision_maps.extend(other.decision_maps);
        self.counters.extend(other.counters);
        self.chains.extend(other.chains);
        for (set, delta) in other.set_elements {
            for e in delta.removed {
                self.element_removed(&set, e);
            }
            for e in delta.added {
                self.element_added(&set, e);
            }
        }
        for (map, delta) in other.decision_elements {
            for (key, decision) in delta.removed {
                self.decision_removed(&map, key, decision);
            }
            for (key, decision) in delta.added {
                self.decision_added(&map, key, decision);
            }
        }
    }
}

/// The element changes of one set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementDelta {
    /// Elements the committed set holds and the desired one does not.
    pub removed: BTreeSet<SetElement>,
    /// Elements the desired set holds and the committed one does not.
    pub added: BTreeSet<SetElement>,
}

impl ElementDelta {
    /// Whether the set's elements are unchanged.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

/// The element changes of one decision map: an element whose decision changes is both removed
/// (with the committed decision) and added (with the new one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionDelta {
    /// Elements the committed map holds and the desired one does not hold alike.
    pub removed: BTreeMap<DecisionKey, Decision>,
    /// Elements the desired map holds and the committed one does not hold alike.
    pub added: BTreeMap<DecisionKey, Decision>,
}

impl DecisionDelta {
    /// Whether the map's elements are unchanged.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

/// Of `names`, those `present` holds and `absent` does not (the objects to add, or to delete),
/// in order.
fn only_in<A, B>(
    names: &[&str],
    present: &BTreeMap<String, A>,
    absent: &BTreeMap<String, B>,
) -> Vec<String> {
    names
        .iter()
        .filter(|n| present.contains_key(**n) && !absent.contains_key(**n))
        .map(|n| n.to_string())
        .collect()
}

/// The names to compare of one kind of object: those `touched` names, or every name of either
/// ruleset, sorted.
fn names<'a, V>(
    touched: Option<&'a BTreeSet<String>>,
    committed: &'a BTreeMap<String, V>,
    desired: &'a BTreeMap<String, V>,
) -> Vec<&'a str> {
    match touched {
        Some(names) => names.iter().map(String::as_str).collect(),
        None => committed
            .keys()
            .chain(desired.keys())
            .map(String::as_str)
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .collect(),
    }
}

impl Transaction {
    /// Whether there is nothing to do (then `nft` need not run at all).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Replaces the whole table atomically with `desired`, whatever the kernel holds (named counters
    /// start again from 0).
    pub fn full(desired: &Ruleset) -> Self {
        let mut ops = vec![Op::AddTable, Op::DeleteTable, Op::AddTable];
        for (name, counter) in &desired.counters {
            ops.push(Op::AddCounter(name.clone(), counter.clone()));
        }
        for (name, chain) in &desired.chains {
            ops.push(Op::AddChain(
                name.clone(),
                Chain {
                    base: chain.base,
                    rules: vec![],
                },
            ));
        }
        for (name, set) in &desired.sets {
            ops.push(Op::AddSet(name.clone(), set.clone()));
        }
        for (name, map) in &desired.maps {
            ops.push(Op::AddMap(name.clone(), map.clone()));
        }
        for (name, map) in &desired.decision_maps {
            ops.push(Op::AddDecisionMap(name.clone(), map.clone()));
        }
        for (name, chain) in &desired.chains {
            for rule in &chain.rules {
                ops.push(Op::AddRule(name.clone(), rule.clone()));
            }
        }
        Self { ops }
    }

    /// The operations that turn `committed` into `desired`, touching only what differs. Falls back to
    /// [`Transaction::full`] when a verdict map or base chain changes definition, which nft cannot
    /// edit in place. A named counter that did not change is never deleted (its counts go on); one
    /// whose comment changed is deleted and added again (see the module documentation).
    pub fn diff(committed: &Ruleset, desired: &Ruleset) -> Self {
        Self::diff_in(committed, desired, None)
    }

    /// What [`Transaction::diff`] gives, comparing only the objects `touched` names: the caller
    /// (an incremental compiler) knows every other object is equal in both rulesets, and for the
    /// sets whose element changes it tracked, the changes themselves. The cost follows `touched`,
    /// not the rulesets.
    pub fn diff_touched(committed: &Ruleset, desired: &Ruleset, touched: &Touched) -> Self {
        Self::diff_in(committed, desired, Some(touched))
    }

    fn diff_in(committed: &Ruleset, desired: &Ruleset, touched: Option<&Touched>) -> Self {
        let sets = names(touched.map(|t| &t.sets), &committed.sets, &desired.sets);
        let maps = names(touched.map(|t| &t.maps), &committed.maps, &desired.maps);
        let decision_maps = names(
            touched.map(|t| &t.decision_maps),
            &committed.decision_maps,
            &desired.decision_maps,
        );
        let counters = names(
            touched.map(|t| &t.counters),
            &committed.counters,
            &desired.counters,
        );
        let chains = names(
            touched.map(|t| &t.chains),
            &committed.chains,
            &desired.chains,
        );
        let redefined_map =
            maps.iter()
                .any(|n| match (committed.maps.get(*n), desired.maps.get(*n)) {
                    (Some(old), Some(m)) => old.family != m.family,
                    _ => false,
                });
        let rebased_chain =
            chains.iter().any(
                |n| match (committed.chains.get(*n), desired.chains.get(*n)) {
                    (Some(old), Some(c)) => old.base != c.base,
                    _ => false,
                },
            );
        if redefined_map || rebased_chain {
            return Self::full(desired);
        }
        let mut ops = Vec::new();
        // Sets whose type or comment changed, and decision maps whose key changed, are deleted and
        // added again; first the chains that use them are flushed.
        let redefined_sets: BTreeSet<&str> = sets
            .iter()
            .copied()
            .filter(|n| match (committed.sets.get(*n), desired.sets.get(*n)) {
                (Some(old), Some(s)) => old.set_type != s.set_type || old.comment != s.comment,
                _ => false,
            })
            .collect();
        let redefined_decision_maps: BTreeSet<&str> = decision_maps
            .iter()
            .copied()
            .filter(|n| {
                match (
                    committed.decision_maps.get(*n),
                    desired.decision_maps.get(*n),
                ) {
                    (Some(old), Some(m)) => old.family != m.family || old.ports != m.ports,
                    _ => false,
                }
            })
            .collect();
        // Counters whose comment changed: nft keeps the old comment on `add counter`.
        let redefined_counters: BTreeSet<&str> = counters
            .iter()
            .copied()
            .filter(
                |n| match (committed.counters.get(*n), desired.counters.get(*n)) {
                    (Some(old), Some(c)) => old != c,
                    _ => false,
                },
            )
            .collect();
        let uses_redefined = |chain: &Chain| {
            chain_refs(chain).any(|(kind, name)| match kind {
                "set" => redefined_sets.contains(name),
                DECISION_MAP => redefined_decision_maps.contains(name),
                COUNTER => redefined_counters.contains(name),
                _ => false,
            })
        };
        let uses_any_redefined = !redefined_sets.is_empty()
            || !redefined_decision_maps.is_empty()
            || !redefined_counters.is_empty();
        // A chain outside `touched` is unchanged, but it may use a redefined set, map or counter:
        // then it is refilled too.
        let extra_chains: Vec<&str> = match touched {
            Some(_) if uses_any_redefined => desired
                .chains
                .iter()
                .filter(|(n, c)| {
                    !chains.contains(&n.as_str())
                        && committed.chains.contains_key(*n)
                        && uses_redefined(c)
                })
                .map(|(n, _)| n.as_str())
                .collect(),
            _ => Vec::new(),
        };
        let refilled: Vec<&str> = chains
            .iter()
            .copied()
            .filter(
                |n| match (committed.chains.get(*n), desired.chains.get(*n)) {
                    (Some(old), Some(c)) => old.rules != c.rules || uses_redefined(old),
                    _ => false,
                },
            )
            .chain(extra_chains)
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .collect();
        let removed_chains: Vec<&str> = chains
            .iter()
            .copied()
            .filter(|n| committed.chains.contains_key(*n) && !desired.chains.contains_key(*n))
            .collect();
        // Removed chains that use a redefined set or map are emptied with the refilled ones, before
        // the redefinition.
        let flushed_early: Vec<&str> = removed_chains
            .iter()
            .copied()
            .filter(|n| uses_redefined(&committed.chains[*n]))
            .collect();
        // 1. New chains, declared empty so that map elements and rules can refer to them.
        for name in only_in(&chains, &desired.chains, &committed.chains) {
            let base = desired.chains[&name].base;
            ops.push(Op::AddChain(
                name,
                Chain {
                    base,
                    rules: vec![],
                },
            ));
        }
        // 2. New counters, sets and maps, with their elements.
        for name in only_in(&counters, &desired.counters, &committed.counters) {
            let counter = desired.counters[&name].clone();
            ops.push(Op::AddCounter(name, counter));
        }
        for name in only_in(&sets, &desired.sets, &committed.sets) {
            let set = desired.sets[&name].clone();
            ops.push(Op::AddSet(name, set));
        }
        for name in only_in(&maps, &desired.maps, &committed.maps) {
            let map = desired.maps[&name].clone();
            ops.push(Op::AddMap(name, map));
        }
        for name in only_in(
            &decision_maps,
            &desired.decision_maps,
            &committed.decision_maps,
        ) {
            let map = desired.decision_maps[&name].clone();
            ops.push(Op::AddDecisionMap(name, map));
        }
        // 3. Chains whose rules change, or that use a redefined set or map, are emptied.
        for name in refilled.iter().chain(&flushed_early) {
            ops.push(Op::FlushChain(name.to_string()));
        }
        // 4. Redefined counters, sets and decision maps.
        for name in &redefined_counters {
            ops.push(Op::DeleteCounter(name.to_string()));
            ops.push(Op::AddCounter(
                name.to_string(),
                desired.counters[*name].clone(),
            ));
        }
        for name in &redefined_sets {
            ops.push(Op::DeleteSet(name.to_string()));
            ops.push(Op::AddSet(name.to_string(), desired.sets[*name].clone()));
        }
        for name in &redefined_decision_maps {
            ops.push(Op::DeleteDecisionMap(name.to_string()));
            ops.push(Op::AddDecisionMap(
                name.to_string(),
                desired.decision_maps[*name].clone(),
            ));
        }
        // 5. Element changes of the other sets and of the maps: the tracked changes of a set
        // `touched` carries, or the difference.
        let tracked = touched.map(|t| &t.set_elements);
        let tracked_names: Vec<&str> = tracked
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let element_sets: BTreeSet<&str> = sets.iter().copied().chain(tracked_names).collect();
        for name in element_sets {
            let (Some(old), Some(set)) = (committed.sets.get(name), desired.sets.get(name)) else {
                continue;
            };
            if redefined_sets.contains(name) {
                continue;
            }
            let (gone, new): (Vec<SetElement>, Vec<SetElement>) =
                match tracked.and_then(|t| t.get(name)) {
                    Some(delta) => (
                        delta.removed.iter().copied().collect(),
                        delta.added.iter().copied().collect(),
                    ),
                    None => (
                        old.elements.difference(&set.elements).copied().collect(),
                        set.elements.difference(&old.elements).copied().collect(),
                    ),
                };
            if !gone.is_empty() {
                ops.push(Op::DeleteElements(name.to_string(), gone));
            }
            if !new.is_empty() {
                ops.push(Op::AddElements(name.to_string(), new));
            }
        }
        for name in &maps {
            let (Some(old), Some(map)) = (committed.maps.get(*name), desired.maps.get(*name))
            else {
                continue;
            };
            let (gone, new) = changed_entries(&old.elements, &map.elements);
            if !gone.is_empty() {
                ops.push(Op::DeleteMapElements(name.to_string(), gone));
            }
            if !new.is_empty() {
                ops.push(Op::AddMapElements(name.to_string(), new));
            }
        }
        // Decision map elements: every deletion of a map before its additions, so that an element
        // never overlaps one that is on its way out. A map `touched` names is compared; one whose
        // element changes it tracked (and does not name) takes them as they are.
        let tracked_decisions = touched.map(|t| &t.decision_elements);
        let tracked_maps: Vec<&str> = tracked_decisions
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let compared: BTreeSet<&str> = decision_maps.iter().copied().collect();
        let element_maps: BTreeSet<&str> = compared.iter().copied().chain(tracked_maps).collect();
        for name in element_maps {
            let (Some(old), Some(map)) = (
                committed.decision_maps.get(name),
                desired.decision_maps.get(name),
            ) else {
                continue;
            };
            if redefined_decision_maps.contains(name) {
                continue;
            }
            let delta = tracked_decisions
                .and_then(|t| t.get(name))
                .filter(|_| !compared.contains(name));
            let (gone, new) = match delta {
                Some(delta) => (
                    delta.removed.keys().copied().collect(),
                    delta.added.iter().map(|(k, d)| (*k, d.clone())).collect(),
                ),
                None => changed_entries(&old.elements, &map.elements),
            };
            if !gone.is_empty() {
                ops.push(Op::DeleteDecisionElements(name.to_string(), gone));
            }
            if !new.is_empty() {
                ops.push(Op::AddDecisionElements(name.to_string(), new));
            }
        }
        // 6. Rules of new and refilled chains.
        for name in chains
            .iter()
            .copied()
            .chain(refilled.iter().copied())
            .collect::<BTreeSet<&str>>()
        {
            let Some(chain) = desired.chains.get(name) else {
                continue;
            };
            if committed.chains.contains_key(name) && !refilled.contains(&name) {
                continue;
            }
            for rule in &chain.rules {
                ops.push(Op::AddRule(name.to_string(), rule.clone()));
            }
        }
        // 7. Removed chains: emptied first (they may jump to each other), then the removed verdict
        // and decision maps (no rule uses them now, and their elements may jump to removed chains),
        // then the chains.
        for name in &removed_chains {
            if !committed.chains[*name].rules.is_empty() && !flushed_early.contains(name) {
                ops.push(Op::FlushChain(name.to_string()));
            }
        }
        for name in only_in(&maps, &committed.maps, &desired.maps) {
            ops.push(Op::DeleteMap(name));
        }
        for name in only_in(
            &decision_maps,
            &committed.decision_maps,
            &desired.decision_maps,
        ) {
            ops.push(Op::DeleteDecisionMap(name));
        }
        for name in &removed_chains {
            ops.push(Op::DeleteChain(name.to_string()));
        }
        // 8. Removed sets and counters, now unreferenced.
        for name in only_in(&sets, &committed.sets, &desired.sets) {
            ops.push(Op::DeleteSet(name));
        }
        for name in only_in(&counters, &committed.counters, &desired.counters) {
            ops.push(Op::DeleteCounter(name));
        }
        Self { ops }
    }

    /// Counts of what the transaction does.
    pub fn stats(&self) -> TxStats {
        let mut s = TxStats::default();
        for op in &self.ops {
            match op {
                Op::AddElements(_, e) => s.elements_added += e.len(),
                Op::DeleteElements(_, e) => s.elements_deleted += e.len(),
                Op::AddMapElements(_, e) => s.elements_added += e.len(),
                Op::DeleteMapElements(_, e) => s.elements_deleted += e.len(),
                Op::AddDecisionElements(_, e) => s.elements_added += e.len(),
                Op::DeleteDecisionElements(_, e) => s.elements_deleted += e.len(),
                Op::AddRule(..) => s.rules_added += 1,
                Op::FlushChain(_) => s.chains_flushed += 1,
                Op::AddSet(_, set) => {
                    s.objects_changed += 1;
                    s.elements_added += set.elements.len();
                }
                Op::AddMap(_, map) => {
                    s.objects_changed += 1;
                    s.elements_added += map.elements.len();
                }
                Op::AddDecisionMap(_, map) => {
                    s.objects_changed += 1;
                    s.elements_added += map.elements.len();
                }
                Op::AddTable | Op::DeleteTable => {}
                Op::DeleteSet(_)
                | Op::DeleteMap(_)
                | Op::DeleteDecisionMap(_)
                | Op::AddCounter(..)
                | Op::DeleteCounter(_)
                | Op::AddChain(..)
                | Op::DeleteChain(_) => s.objects_changed += 1,
            }
        }
        s
    }

    /// The transaction as an `nft -f` file.
    pub fn render(&self) -> String {
        let t = format!("inet {TABLE_NAME}");
        let mut out = String::new();
        let list = |items: Vec<String>| items.join(", ");
        for op in &self.ops {
            let _ = match op {
                Op::AddTable => writeln!(out, "add table {t}"),
                Op::DeleteTable => writeln!(out, "delete table {t}"),
                Op::AddSet(name, set) => {
                    let _ = writeln!(
                        out,
                        "add set {t} {name} {{ {} }}",
                        set_declaration(set).join("; ") + ";"
                    );
                    if set.elements.is_empty() {
                        Ok(())
                    } else {
                        let items = set.elements.iter().map(|e| e.to_string()).collect();
                        writeln!(out, "add element {t} {name} {{ {} }}", list(items))
                    }
                }
                Op::DeleteSet(name) => writeln!(out, "delete set {t} {name}"),
                Op::AddElements(name, elements) => {
                    let items = elements.iter().map(|e| e.to_string()).collect();
                    writeln!(out, "add element {t} {name} {{ {} }}", list(items))
                }
                Op::DeleteElements(name, elements) => {
                    let items = elements.iter().map(|e| e.to_string()).collect();
                    writeln!(out, "delete element {t} {name} {{ {} }}", list(items))
                }
                Op::AddMap(name, map) => {
                    let _ = writeln!(out, "add map {t} {name} {{ {}; }}", map_declaration(map));
                    if map.elements.is_empty() {
                        Ok(())
                    } else {
                        let items = map
                            .elements
                            .iter()
                            .map(|(k, c)| format!("{k} : jump {c}"))
                            .collect();
                        writeln!(out, "add element {t} {name} {{ {} }}", list(items))
                    }
                }
                Op::DeleteMap(name) => writeln!(out, "delete map {t} {name}"),
                Op::AddMapElements(name, elements) => {
                    let items = elements
                        .iter()
                        .map(|(k, c)| format!("{k} : jump {c}"))
                        .collect();
                    writeln!(out, "add element {t} {name} {{ {} }}", list(items))
                }
                Op::DeleteMapElements(name, keys) => {
                    let items = keys.iter().map(|k| k.to_string()).collect();
                    writeln!(out, "delete element {t} {name} {{ {} }}", list(items))
                }
                Op::AddDecisionMap(name, map) => {
                    let _ = writeln!(
                        out,
                        "add map {t} {name} {{ {}; }}",
                        decision_map_declaration(map).join("; ")
                    );
                    if map.elements.is_empty() {
                        Ok(())
                    } else {
                        let items = map
                            .elements
                            .iter()
                            .map(|(k, d)| decision_element(k, d))
                            .collect();
                        writeln!(out, "add element {t} {name} {{ {} }}", list(items))
                    }
                }
                Op::DeleteDecisionMap(name) => writeln!(out, "delete map {t} {name}"),
                Op::AddDecisionElements(name, elements) => {
                    let items = elements
                        .iter()
                        .map(|(k, d)| decision_element(k, d))
                        .collect();
                    writeln!(out, "add element {t} {name} {{ {} }}", list(items))
                }
                Op::DeleteDecisionElements(name, keys) => {
                    let items = keys.iter().map(|k| k.to_string()).collect();
                    writeln!(out, "delete element {t} {name} {{ {} }}", list(items))
                }
                Op::AddCounter(name, counter) => match counter_declaration(counter) {
                    Some(decl) => writeln!(out, "add counter {t} {name} {{ {decl}; }}"),
                    None => writeln!(out, "add counter {t} {name}"),
                },
                Op::DeleteCounter(name) => writeln!(out, "delete counter {t} {name}"),
                Op::AddChain(name, chain) => match chain_declaration(chain) {
                    Some(decl) => writeln!(out, "add chain {t} {name} {{ {decl} }}"),
                    None => writeln!(out, "add chain {t} {name}"),
                },
                Op::FlushChain(name) => writeln!(out, "flush chain {t} {name}"),
                Op::DeleteChain(name) => writeln!(out, "delete chain {t} {name}"),
                Op::AddRule(chain, rule) => writeln!(out, "add rule {t} {chain} {rule}"),
            };
        }
        out
    }

    /// Applies the transaction to a predicted state (`None`: no table), failing like nft would.
    /// On error the state is unchanged: transactions are all-or-nothing.
    pub fn apply_to(&self, state: &mut Option<Ruleset>) -> Result<(), TxError> {
        let mut next = state.clone();
        for op in &self.ops {
            apply_op(&mut next, op, Checks::All)?;
        }
        *state = next;
        Ok(())
    }
}

/// The keys of `old` whose entry `new` lacks or holds otherwise (to delete), and the entries of
/// `new` that `old` lacks or holds otherwise (to add): a changed value is deleted and added again,
/// as the kernel needs.
impl Transaction {
    /// Applies the transaction to `state` in place, without the copy [`Transaction::apply_to`]
    /// makes to be all-or-nothing: for a transaction the kernel already committed, whose
    /// prediction fails only when `state` was not what the kernel held. On error `state` is left
    /// partly changed. What the kernel checked in committing it is not checked again: that nothing
    /// deleted is still referenced (a scan of every chain per deletion), and that no element
    /// added overlaps another (a scan of the map per element).
    pub fn apply_in_place(&self, state: &mut Option<Ruleset>) -> Result<(), TxError> {
        self.ops
            .iter()
            .try_for_each(|op| apply_op(state, op, Checks::Committed))
    }
}

fn changed_entries<K: Ord + Copy, V: PartialEq + Clone>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> (Vec<K>, Vec<(K, V)>) {
    let gone = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| *k)
        .collect();
    let added = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    (gone, added)
}

/// What applying an operation checks, as the kernel does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checks {
    /// Everything the kernel checks.
    All,
    /// The transaction was committed: no scan for references to what it deletes, nor for
    /// elements that overlap what it adds.
    Committed,
}

fn references(rs: &Ruleset, kind: &'static str, name: &str, checks: Checks) -> bool {
    if checks == Checks::Committed {
        return false;
    }
    rs.chains
        .values()
        .any(|c| chain_refs(c).any(|(k, n)| k == kind && n == name))
        || (kind == "chain"
            && (rs
                .maps
                .values()
                .any(|m| m.elements.values().any(|c| c == name))
                || rs.decision_maps.values().any(|m| {
                    m.elements
                        .values()
                        .any(|d| matches!(&d.verdict, DecisionVerdict::Jump(c) if c == name))
                })))
}

fn apply_op(state: &mut Option<Ruleset>, op: &Op, checks: Checks) -> Result<(), TxError> {
    if let Op::AddTable = op {
        state.get_or_insert_with(Ruleset::default);
        return Ok(());
    }
    if let Op::DeleteTable = op {
        return state.take().map(|_| ()).ok_or(TxError::NoTable);
    }
    let rs = state.as_mut().ok_or(TxError::NoTable)?;
    match op {
        Op::AddTable | Op::DeleteTable => {}
        Op::AddSet(name, _) | Op::AddMap(name, _) if rs.decision_maps.contains_key(name) => {
            return Err(TxError::Conflict(name.clone()))
        }
        Op::AddSet(name, set) => match rs.sets.get_mut(name) {
            Some(old) if old.set_type != set.set_type || old.comment != set.comment => {
                return Err(TxError::Conflict(name.clone()))
            }
            Some(old) => old.elements.extend(set.elements.iter().copied()),
            None => {
                rs.sets.insert(name.clone(), set.clone());
            }
        },
        Op::DeleteSet(name) => {
            if !rs.sets.contains_key(name) {
                return Err(TxError::Missing(name.clone(), "set"));
            }
            if references(rs, "set", name, checks) {
                return Err(TxError::Busy(name.clone(), "set"));
            }
            rs.sets.remove(name);
        }
        Op::AddElements(name, elements) => {
            let set = rs
                .sets
                .get_mut(name)
                .ok_or_else(|| TxError::Missing(name.clone(), "set"))?;
            set.elements.extend(elements.iter().copied());
        }
        Op::DeleteElements(name, elements) => {
            let set = rs
                .sets
                .get_mut(name)
                .ok_or_else(|| TxError::Missing(name.clone(), "set"))?;
            for e in elements {
                if !set.elements.remove(e) {
                    return Err(TxError::Missing(format!("{name} element {e}"), "element"));
                }
            }
        }
        Op::AddMap(name, map) => {
            check_targets(rs, map.elements.iter().map(|(k, c)| (*k, c)))?;
            match rs.maps.get_mut(name) {
                Some(old) if old.family != map.family => {
                    return Err(TxError::Conflict(name.clone()))
                }
                Some(_) => {
                    add_map_elements(rs, name, map.elements.iter().map(|(k, c)| (*k, c.clone())))?
                }
                None => {
                    rs.maps.insert(name.clone(), map.clone());
                }
            }
        }
        Op::DeleteMap(name) => {
            if !rs.maps.contains_key(name) {
                return Err(TxError::Missing(name.clone(), "map"));
            }
            if references(rs, "map", name, checks) {
                return Err(TxError::Busy(name.clone(), "map"));
            }
            rs.maps.remove(name);
        }
        Op::AddMapElements(name, elements) => {
            check_targets(rs, elements.iter().map(|(k, c)| (*k, c)))?;
            add_map_elements(rs, name, elements.iter().cloned())?;
        }
        Op::DeleteMapElements(name, keys) => {
            let map = rs
                .maps
                .get_mut(name)
                .ok_or_else(|| TxError::Missing(name.clone(), "map"))?;
            for k in keys {
                if map.elements.remove(k).is_none() {
                    return Err(TxError::Missing(format!("{name} element {k}"), "element"));
                }
            }
        }
        Op::AddDecisionMap(name, map) => {
            if rs.sets.contains_key(name) || rs.maps.contains_key(name) {
                return Err(TxError::Conflict(name.clone()));
            }
            match rs.decision_maps.get(name) {
                Some(old) if old.family != map.family || old.ports != map.ports => {
                    return Err(TxError::Conflict(name.clone()))
                }
                Some(_) => {}
                None => {
                    rs.decision_maps.insert(
                        name.clone(),
                        DecisionMap {
                            elements: Default::default(),
                            ..map.clone()
                        },
                    );
                }
            }
            add_decision_elements(rs, name, map.elements.iter(), checks)?;
        }
        Op::DeleteDecisionMap(name) => {
            if !rs.decision_maps.contains_key(name) {
                return Err(TxError::Missing(name.clone(), DECISION_MAP));
            }
            if references(rs, DECISION_MAP, name, checks) {
                return Err(TxError::Busy(name.clone(), DECISION_MAP));
            }
            rs.decision_maps.remove(name);
        }
        Op::AddDecisionElements(name, elements) => {
            add_decision_elements(rs, name, elements.iter().map(|(k, d)| (k, d)), checks)?;
        }
        Op::DeleteDecisionElements(name, keys) => {
            let map = rs
                .decision_maps
                .get_mut(name)
                .ok_or_else(|| TxError::Missing(name.clone(), DECISION_MAP))?;
            for k in keys {
                if !map.fits(k) {
                    return Err(TxError::Mismatch(format!("element {k}"), name.clone()));
                }
                // With ports, the kernel deletes the element holding the key's first point; the
                // elements are disjoint, so there is at most one.
                let found = match k.ports {
                    Some((protocol, port, _)) => map
                        .elements
                        .keys()
                        .find(|e| e.holds(&k.first, Some((protocol, port))))
                        .copied(),
                    None => map.elements.contains_key(k).then_some(*k),
                };
                match found {
                    Some(e) => {
                        map.elements.remove(&e);
                    }
                    None => return Err(TxError::Missing(format!("{name} element {k}"), "element")),
                }
            }
        }
        Op::AddCounter(name, counter) => {
            // An existing counter is left as it is, comment and counts included.
            rs.counters
                .entry(name.clone())
                .or_insert_with(|| counter.clone());
        }
        Op::DeleteCounter(name) => {
            if !rs.counters.contains_key(name) {
                return Err(TxError::Missing(name.clone(), COUNTER));
            }
            if references(rs, COUNTER, name, checks) {
                return Err(TxError::Busy(name.clone(), COUNTER));
            }
            rs.counters.remove(name);
        }
        Op::AddChain(name, chain) => match rs.chains.get(name) {
            Some(old) if old.base != chain.base => return Err(TxError::Conflict(name.clone())),
            Some(_) => {}
            None => {
                rs.chains.insert(
                    name.clone(),
                    Chain {
                        base: chain.base,
                        rules: vec![],
                    },
                );
            }
        },
        Op::FlushChain(name) => {
            rs.chains
                .get_mut(name)
                .ok_or_else(|| TxError::Missing(name.clone(), "chain"))?
                .rules
                .clear();
        }
        Op::DeleteChain(name) => {
            let chain = rs
                .chains
                .get(name)
                .ok_or_else(|| TxError::Missing(name.clone(), "chain"))?;
            if !chain.rules.is_empty() || references(rs, "chain", name, checks) {
                return Err(TxError::Busy(name.clone(), "chain"));
            }
            rs.chains.remove(name);
        }
        Op::AddRule(chain, rule) => {
            let probe = Chain {
                base: None,
                rules: vec![rule.clone()],
            };
            for (kind, target) in chain_refs(&probe) {
                let exists = match kind {
                    "set" => rs.sets.contains_key(target),
                    "map" => rs.maps.contains_key(target),
                    DECISION_MAP => rs.decision_maps.contains_key(target),
                    COUNTER => rs.counters.contains_key(target),
                    _ => rs.chains.contains_key(target),
                };
                if !exists {
                    return Err(TxError::Missing(target.to_string(), kind));
                }
            }
            for m in &rule.matches {
                if let Match::Limit { rate, burst } = m {
                    if *rate == 0 || *burst == 0 {
                        return Err(TxError::Invalid(
                            format!("rule {rule}"),
                            "a limit needs a rate and a burst of at least 1 packet",
                        ));
                    }
                }
            }

            if let Verdict::DecisionVmap {
                family, ports, map, ..
            } = &rule.verdict
            {
                let m = &rs.decision_maps[map];
                if m.family != *family || m.ports != *ports {
                    return Err(TxError::Mismatch(format!("rule {rule}"), map.clone()));
                }
            }
            rs.chains
                .get_mut(chain)
                .ok_or_else(|| TxError::Missing(chain.clone(), "chain"))?
                .rules
                .push(rule.clone());
        }
    }
    Ok(())
}

fn check_targets<'a>(
    rs: &Ruleset,
    mut elements: impl Iterator<Item = (IpAddr, &'a String)>,
) -> Result<(), TxError> {
    match elements.find(|(_, c)| !rs.chains.contains_key(*c)) {
        Some((_, c)) => Err(TxError::Missing(c.clone(), "chain")),
        None => Ok(()),
    }
}

/// Adds decision map elements one by one, as the kernel does: an existing key with the same verdict
/// is left as it is (comment included), one with another verdict is a conflict, an element that
/// overlaps another is refused, and so is one that jumps to a chain that does not exist.
fn add_decision_elements<'a>(
    rs: &mut Ruleset,
    name: &str,
    elements: impl Iterator<Item = (&'a DecisionKey, &'a Decision)> + Clone,
    checks: Checks,
) -> Result<(), TxError> {
    for (_, d) in elements.clone() {
        if let DecisionVerdict::Jump(chain) = &d.verdict {
            if !rs.chains.contains_key(chain) {
                return Err(TxError::Missing(chain.clone(), "chain"));
            }
        }
    }
    let map = rs
        .decision_maps
        .get_mut(name)
        .ok_or_else(|| TxError::Missing(name.to_string(), DECISION_MAP))?;
    for (k, d) in elements {
        if !map.fits(k) {
            return Err(TxError::Mismatch(format!("element {k}"), name.to_string()));
        }
        if let Some(existing) = map.elements.get(k) {
            if existing.verdict != d.verdict {
                return Err(TxError::Conflict(format!("{name} element {k}")));
            }
            continue;
        }
        // A scan of the map per element: the kernel checked a committed transaction already.
        let overlapping = match checks {
            Checks::All => map.elements.keys().find(|e| e.overlaps(k)),
            Checks::Committed => None,
        };
        if let Some(other) = overlapping {
            return Err(TxError::Overlap(
                format!("{name} element {k}"),
                other.to_string(),
            ));
        }
        map.elements.insert(*k, d.clone());
    }
    Ok(())
}

fn add_map_elements(
    rs: &mut Ruleset,
    name: &str,
    elements: impl Iterator<Item = (IpAddr, String)>,
) -> Result<(), TxError> {
    let map = rs
        .maps
        .get_mut(name)
        .ok_or_else(|| TxError::Missing(name.to_string(), "map"))?;
    for (k, c) in elements {
        match map.elements.get(&k) {
            Some(existing) if *existing != c => {
                return Err(TxError::Conflict(format!("{name} element {k}")))
            }
            _ => {
                map.elements.insert(k, c);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::example::{self, decision, key};
    use super::super::{AddrField, DecisionVerdict, SetType};
    use super::*;
    use crate::cidr::Family;
    use crate::model::Protocol::{Sctp, Tcp, Udp};
    use DecisionVerdict::{Accept, Drop, Return};

    fn applied(from: &Ruleset, tx: &Transaction) -> Result<Ruleset, TxError> {
        let mut state = Some(from.clone());
        tx.apply_to(&mut state)?;
        Ok(state.unwrap_or_default())
    }

    fn tx(ops: Vec<Op>) -> Transaction {
        Transaction { ops }
    }

    #[test]
    fn element_changes_delete_before_they_add() {
        let old = example::ruleset();
        let mut new = old.clone();
        let any = &mut new.decision_maps.get_mut("d_any_v4").unwrap().elements;
        // 10.0.0.0/8 is split in two overlapping halves, one with another verdict; a comment
        // changes; an element is added.
        any.remove(&key("10.0.0.0", "10.255.255.255", None));
        any.insert(
            key("10.0.0.0", "10.127.255.255", None),
            decision(Drop, None),
        );
        any.insert(
            key("10.128.0.0", "10.255.255.255", None),
            decision(Accept, None),
        );
        any.insert(
            key("192.168.1.1", "192.168.1.1", None),
            decision(Return, Some("y")),
        );
        any.insert(
            key("192.168.1.2", "192.168.1.2", None),
            decision(Drop, None),
        );
        let ports = &mut new.decision_maps.get_mut("d_ports_v4").unwrap().elements;
        // A verdict changes; an element goes.
        ports.insert(
            key("10.244.1.5", "10.244.1.5", Some((Tcp, 80, 80))),
            decision(Drop, Some("a/b ingress[0]")),
        );
        ports.remove(&key("10.244.1.5", "10.244.1.5", Some((Udp, 0, 0))));
        let diff = Transaction::diff(&old, &new);
        assert_eq!(
            diff.render(),
            "delete element inet nftpolicy d_any_v4 { 10.0.0.0/8, 192.168.1.1 }\n\
             add element inet nftpolicy d_any_v4 { 10.0.0.0/9 : drop, 10.128.0.0/9 : accept, \
             192.168.1.1 comment \"y\" : return, 192.168.1.2 : drop }\n\
             delete element inet nftpolicy d_ports_v4 { 10.244.1.5 . tcp . 80, 10.244.1.5 . udp . 0 }\n\
             add element inet nftpolicy d_ports_v4 { 10.244.1.5 . tcp . 80 comment \"a/b ingress[0]\" : drop }\n"
        );
        assert_eq!(applied(&old, &diff), Ok(new.clone()));
        let stats = diff.stats();
        assert_eq!((stats.elements_deleted, stats.elements_added), (4, 5));
        // In the other order the halves would overlap the whole.
        let mut reversed = diff.clone();
        reversed.ops.swap(0, 1);
        assert!(matches!(
            applied(&old, &reversed),
            Err(TxError::Overlap(e, other)) if e == "d_any_v4 element 10.0.0.0/9" && other == "10.0.0.0/8"
        ));
    }

    #[test]
    fn tracked_decision_elements_are_taken_as_they_are() {
        let old = example::ruleset();
        let mut new = old.clone();
        let mut touched = Touched::default();
        let any = &mut new.decision_maps.get_mut("d_any_v4").unwrap().elements;
        let whole = key("10.0.0.0", "10.255.255.255", None);
        let gone = any.remove(&whole).unwrap();
        touched.decision_removed("d_any_v4", whole, gone.clone());
        let half = key("10.0.0.0", "10.127.255.255", None);
        any.insert(half, decision(Drop, None));
        touched.decision_added("d_any_v4", half, decision(Drop, None));
        // Added and removed again, removed and added back: nothing to do for either.
        let passing = key("192.168.9.9", "192.168.9.9", None);
        touched.decision_added("d_any_v4", passing, decision(Drop, None));
        touched.decision_removed("d_any_v4", passing, decision(Drop, None));
        assert_eq!(touched.decision_elements["d_any_v4"].added.len(), 1);
        let diff = Transaction::diff_touched(&old, &new, &touched);
        assert_eq!(
            diff.render(),
            "delete element inet nftpolicy d_any_v4 { 10.0.0.0/8 }\n\
             add element inet nftpolicy d_any_v4 { 10.0.0.0/9 : drop }\n"
        );
        assert_eq!(applied(&old, &diff), Ok(new.clone()));
        // Tracked changes of a map `touched` also names are not trusted: it is compared.
        let mut named = touched.clone();
        named
            .decision_elements
            .get_mut("d_any_v4")
            .unwrap()
            .added
            .clear();
        named.decision_maps.insert("d_any_v4".into());
        assert_eq!(
            Transaction::diff_touched(&old, &new, &named).render(),
            diff.render()
        );
        // A removal and re-addition with the same decision cancel out.
        let mut back = Touched::default();
        back.decision_removed("d_any_v4", whole, gone.clone());
        back.decision_added("d_any_v4", whole, gone);
        assert!(back.is_empty());
    }

    #[test]
    fn a_redefined_decision_map_is_recreated_once_its_chains_are_flushed() {
        let old = example::ruleset();
        let mut new = old.clone();
        new.decision_maps.get_mut("d_ports_v6").unwrap().ports = false;
        new.decision_maps
            .get_mut("d_ports_v6")
            .unwrap()
            .elements
            .insert(key("fd00::1", "fd00::1", None), decision(Accept, None));
        let comb = new.chains.get_mut("comb").unwrap();
        comb.rules[2].verdict = Verdict::DecisionVmap {
            family: Family::V6,
            field: AddrField::Daddr,
            ports: false,
            map: "d_ports_v6".into(),
        };
        let diff = Transaction::diff(&old, &new);
        let text = diff.render();
        assert!(
            text.starts_with(
                "flush chain inet nftpolicy comb\n\
                 delete map inet nftpolicy d_ports_v6\n\
                 add map inet nftpolicy d_ports_v6 { type ipv6_addr : verdict; flags interval; }\n\
                 add element inet nftpolicy d_ports_v6 { fd00::1 : accept }\n\
                 add rule inet nftpolicy comb meta l4proto { tcp, udp, sctp } ip saddr . meta l4proto . th dport vmap @d_ports_v4\n"
            ),
            "{text}"
        );
        assert_eq!(applied(&old, &diff), Ok(new.clone()));

        // A chain that used the map and goes away is emptied before the map is recreated.
        new.chains.remove("comb");
        new.chains.get_mut("node").unwrap().rules.pop();
        let diff = Transaction::diff(&old, &new);
        assert_eq!(applied(&old, &diff), Ok(new.clone()));
        let flushes = diff
            .ops
            .iter()
            .filter(|op| matches!(op, Op::FlushChain(c) if c == "comb"))
            .count();
        assert_eq!(flushes, 1, "{}", diff.render());
    }

    #[test]
    fn maps_are_added_before_the_rules_that_use_them_and_deleted_after() {
        let r = example::ruleset();
        let up = Transaction::diff(&Ruleset::default(), &r);
        assert_eq!(applied(&Ruleset::default(), &up), Ok(r.clone()));
        let down = Transaction::diff(&r, &Ruleset::default());
        assert_eq!(applied(&r, &down), Ok(Ruleset::default()));
        // Decision maps go once no rule uses them (after the flushes), before the chains (their
        // elements may jump to them).
        let position = |f: &dyn Fn(&Op) -> bool| down.ops.iter().position(f);
        let last_flush = down
            .ops
            .iter()
            .rposition(|op| matches!(op, Op::FlushChain(_)));
        let map_deleted = position(&|op| matches!(op, Op::DeleteDecisionMap(_)));
        let chain_deleted = position(&|op| matches!(op, Op::DeleteChain(_)));
        assert!(
            last_flush < map_deleted && map_deleted < chain_deleted,
            "{}",
            down.render()
        );
        let full = Transaction::full(&r);
        let mut nothing = None;
        full.apply_to(&mut nothing).unwrap();
        assert_eq!(nothing, Some(r.clone()));
        assert_eq!(full.stats().elements_added, 11);
        assert!(full.render().contains(
            "add map inet nftpolicy d_ports_v4 { type ipv4_addr . inet_proto . inet_service : verdict; flags interval; }\n\
             add element inet nftpolicy d_ports_v4 { 0.0.0.0/0 . sctp . 0-65535 : accept, 10.0.0.0/8 . udp . 53-60 : drop, \
             10.244.1.5 . tcp . 80 comment \"a/b ingress[0]\" : accept, 10.244.1.5 . udp . 0 comment \"\" : drop, \
             10.244.1.6-10.244.1.9 . tcp . 1-65535 : return }\n"
        ));
        assert!(full
            .render()
            .contains("add chain inet nftpolicy node { type filter hook input priority filter; policy accept; }\n"));
    }

    /// `add element` / `delete element` of one decision map.
    fn add(map: &str, elements: &[(DecisionKey, Decision)]) -> Op {
        Op::AddDecisionElements(map.into(), elements.to_vec())
    }

    fn del(map: &str, keys: &[DecisionKey]) -> Op {
        Op::DeleteDecisionElements(map.into(), keys.to_vec())
    }

    #[test]
    fn apply_to_predicts_what_nft_does_with_interval_elements() {
        let r = example::ruleset();
        let fails = |ops: Vec<Op>| applied(&r, &tx(ops)).unwrap_err();
        // Address-only map: the key must be an element's exactly.
        for k in [
            key("10.0.0.0", "10.0.255.255", None),
            key("10.0.0.0", "10.0.0.0", None),
            key("11.0.0.1", "11.0.0.1", None),
        ] {
            assert!(matches!(
                fails(vec![del("d_any_v4", &[k])]),
                TxError::Missing(..)
            ));
        }
        // Twice in one operation: the second is missing.
        let k = key("192.168.1.1", "192.168.1.1", None);
        assert!(matches!(
            fails(vec![del("d_any_v4", &[k, k])]),
            TxError::Missing(..)
        ));
        // Map with ports: the element holding the key's first point goes.
        let after = applied(
            &r,
            &tx(vec![del(
                "d_ports_v4",
                &[key("10.1.0.0", "10.1.0.255", Some((Udp, 60, 70)))],
            )]),
        )
        .unwrap();
        assert!(!after.decision_maps["d_ports_v4"]
            .elements
            .contains_key(&key("10.0.0.0", "10.255.255.255", Some((Udp, 53, 60)))));
        assert_eq!(after.decision_maps["d_ports_v4"].elements.len(), 4);
        for k in [
            key("9.255.255.255", "10.0.0.1", Some((Udp, 53, 53))),
            key("10.0.0.0", "10.0.0.0", Some((Udp, 52, 53))),
            key("10.0.0.0", "10.0.0.0", Some((Tcp, 53, 53))),
        ] {
            assert!(matches!(
                fails(vec![del("d_ports_v4", &[k])]),
                TxError::Missing(..)
            ));
        }
        // The same key with the same verdict: nothing changes, not even the comment.
        let same = applied(
            &r,
            &tx(vec![add(
                "d_any_v4",
                &[(
                    key("192.168.1.1", "192.168.1.1", None),
                    decision(Return, Some("new")),
                )],
            )]),
        );
        assert_eq!(same, Ok(r.clone()));
        // With another verdict, it conflicts.
        assert!(matches!(
            fails(vec![add(
                "d_any_v4",
                &[(
                    key("192.168.1.1", "192.168.1.1", None),
                    decision(Drop, None)
                )]
            )]),
            TxError::Conflict(_)
        ));
        // Overlaps: inside, across the end, enclosing (which the kernel would take in a map
        // with ports, ambiguously).
        for (map, k) in [
            ("d_any_v4", key("10.1.2.3", "10.1.2.3", None)),
            ("d_any_v4", key("9.0.0.0", "10.0.0.0", None)),
            ("d_any_v4", key("192.168.0.0", "192.168.255.255", None)),
            (
                "d_ports_v4",
                key("10.244.1.9", "10.244.1.20", Some((Tcp, 80, 80))),
            ),
            (
                "d_ports_v4",
                key("10.244.1.5", "10.244.1.5", Some((Tcp, 1, 100))),
            ),
            ("d_ports_v4", key("1.0.0.0", "1.0.0.0", Some((Sctp, 7, 7)))),
        ] {
            assert!(
                matches!(
                    fails(vec![add(map, &[(k, decision(Accept, None))])]),
                    TxError::Overlap(..)
                ),
                "{map} {k}"
            );
        }
        // Next to an element, or with another protocol, is no overlap.
        let beside = [
            (key("11.0.0.0", "11.0.0.0", None), decision(Accept, None)),
            (
                key("9.255.255.255", "9.255.255.255", None),
                decision(Accept, None),
            ),
        ];
        assert!(applied(&r, &tx(vec![add("d_any_v4", &beside)])).is_ok());
        let other_protocol = [(
            key("10.244.1.5", "10.244.1.9", Some((Sctp, 80, 80))),
            decision(Accept, None),
        )];
        assert!(matches!(
            applied(&r, &tx(vec![add("d_ports_v4", &other_protocol)])),
            Err(TxError::Overlap(..))
        ));
        let other_protocol = [(
            key("10.244.1.5", "10.244.1.9", Some((Udp, 80, 80))),
            decision(Accept, None),
        )];
        assert!(applied(&r, &tx(vec![add("d_ports_v4", &other_protocol)])).is_ok());
    }

    #[test]
    fn apply_to_refuses_what_does_not_fit() {
        let r = example::ruleset();
        let fails = |ops: Vec<Op>| applied(&r, &tx(ops)).unwrap_err();
        for (map, k) in [
            ("d_any_v4", key("fd00::9", "fd00::9", None)),
            ("d_any_v4", key("10.0.0.9", "10.0.0.1", None)),
            ("d_any_v4", key("11.0.0.1", "11.0.0.1", Some((Tcp, 1, 1)))),
            ("d_ports_v4", key("11.0.0.1", "11.0.0.1", None)),
            ("d_ports_v4", key("11.0.0.1", "11.0.0.1", Some((Tcp, 9, 1)))),
        ] {
            assert!(matches!(
                fails(vec![add(map, &[(k, decision(Accept, None))])]),
                TxError::Mismatch(..)
            ));
            assert!(matches!(fails(vec![del(map, &[k])]), TxError::Mismatch(..)));
        }
        // A lookup whose key is not the map's.
        let rule = Rule {
            matches: vec![],
            verdict: Verdict::DecisionVmap {
                family: Family::V4,
                field: AddrField::Saddr,
                ports: true,
                map: "d_any_v4".into(),
            },
            comment: None,
        };
        assert!(matches!(
            fails(vec![Op::AddRule("comb".into(), rule.clone())]),
            TxError::Mismatch(..)
        ));
        let missing = Rule {
            verdict: Verdict::DecisionVmap {
                family: Family::V4,
                field: AddrField::Saddr,
                ports: true,
                map: "nope".into(),
            },
            ..rule
        };
        assert!(matches!(
            fails(vec![Op::AddRule("comb".into(), missing)]),
            TxError::Missing(_, DECISION_MAP)
        ));
        // A map in use, a map of another definition, a name taken by a set.
        assert!(matches!(
            fails(vec![Op::DeleteDecisionMap("d_any_v4".into())]),
            TxError::Busy(..)
        ));
        let mut other = r.decision_maps["d_any_v6"].clone();
        other.ports = true;
        assert!(matches!(
            fails(vec![Op::AddDecisionMap("d_any_v6".into(), other)]),
            TxError::Conflict(_)
        ));
        let set = Set {
            set_type: SetType::Addr(Family::V4),
            comment: String::new(),
            elements: Default::default(),
        };
        assert!(matches!(
            fails(vec![Op::AddSet("d_any_v4".into(), set)]),
            TxError::Conflict(_)
        ));
        let mut with_set = r.clone();
        with_set.sets.insert(
            "s".into(),
            Set {
                set_type: SetType::Addr(Family::V4),
                comment: String::new(),
                elements: Default::default(),
            },
        );
        assert!(matches!(
            applied(
                &with_set,
                &tx(vec![Op::AddDecisionMap(
                    "s".into(),
                    r.decision_maps["d_any_v4"].clone()
                )])
            ),
            Err(TxError::Conflict(_))
        ));
        // A failed transaction leaves the state as it was.
        let mut state = Some(r.clone());
        let batch = tx(vec![
            del("d_any_v4", &[key("192.168.1.1", "192.168.1.1", None)]),
            del("d_any_v4", &[key("192.168.1.1", "192.168.1.1", None)]),
        ]);
        assert!(batch.apply_to(&mut state).is_err());
        assert_eq!(state, Some(r));
    }

    // ---- named counters ----

    fn position(tx: &Transaction, f: impl Fn(&Op) -> bool) -> Option<usize> {
        tx.ops.iter().position(f)
    }

    #[test]
    fn counters_are_added_before_the_rules_that_name_them_and_deleted_after() {
        let r = example::counted();
        let up = Transaction::diff(&Ruleset::default(), &r);
        assert_eq!(applied(&Ruleset::default(), &up), Ok(r.clone()));
        let last_counter = up
            .ops
            .iter()
            .rposition(|op| matches!(op, Op::AddCounter(..)));
        let first_rule = position(&up, |op| matches!(op, Op::AddRule(..)));
        assert!(last_counter < first_rule, "{}", up.render());
        assert!(up.render().contains(
            "add counter inet nftpolicy comb { comment \"isolation of comb\"; }\n\
             add counter inet nftpolicy np_a_0\n\
             add counter inet nftpolicy spare { comment \"\"; }\n"
        ));
        let down = Transaction::diff(&r, &Ruleset::default());
        assert_eq!(applied(&r, &down), Ok(Ruleset::default()));
        let first_delete = position(&down, |op| matches!(op, Op::DeleteCounter(_)));
        let last_chain_op = down
            .ops
            .iter()
            .rposition(|op| matches!(op, Op::FlushChain(_) | Op::DeleteChain(_)));
        assert!(last_chain_op < first_delete, "{}", down.render());
        assert!(down
            .render()
            .ends_with("delete counter inet nftpolicy comb\ndelete counter inet nftpolicy np_a_0\ndelete counter inet nftpolicy spare\n"));
        // Deleting the counters first, the kernel would refuse: the chains still name them.
        let mut early = down.clone();
        early
            .ops
            .sort_by_key(|op| !matches!(op, Op::DeleteCounter(_)));
        assert_eq!(
            applied(&r, &early),
            Err(TxError::Busy("comb".into(), COUNTER))
        );
        // A full replace adds them before any rule too.
        let full = Transaction::full(&r);
        let mut nothing = None;
        full.apply_to(&mut nothing).unwrap();
        assert_eq!(nothing, Some(r.clone()));
        let last_counter = full
            .ops
            .iter()
            .rposition(|op| matches!(op, Op::AddCounter(..)));
        assert!(last_counter < position(&full, |op| matches!(op, Op::AddRule(..))));
        assert_eq!(full.stats().objects_changed, 3 + 2);
    }

    #[test]
    fn a_rewritten_chain_counts_on_into_the_same_counters() {
        let old = example::counted();
        let mut new = old.clone();
        // The drop point moves behind a new rule; np_a_0 is no longer named by comb's caller's
        // second rule, which goes.
        let comb = new.chains.get_mut("comb").unwrap();
        comb.rules.insert(
            0,
            Rule {
                matches: vec![Match::Counter("spare".into())],
                verdict: Verdict::Continue,
                comment: None,
            },
        );
        new.chains.get_mut("node").unwrap().rules.remove(2);
        let diff = Transaction::diff(&old, &new);
        assert_eq!(applied(&old, &diff), Ok(new.clone()));
        assert!(
            diff.ops
                .iter()
                .all(|op| !matches!(op, Op::AddCounter(..) | Op::DeleteCounter(_))),
            "{}",
            diff.render()
        );
        assert_eq!(
            diff.render(),
            "flush chain inet nftpolicy comb\n\
             flush chain inet nftpolicy node\n\
             add rule inet nftpolicy comb counter name \"spare\"\n\
             add rule inet nftpolicy comb continue comment \"nothing\"\n\
             add rule inet nftpolicy comb limit rate 10/second burst 20 packets log prefix \"comb\" group 7\n\
             add rule inet nftpolicy comb counter name \"comb\" drop\n\
             add rule inet nftpolicy node ct state established,related accept\n\
             add rule inet nftpolicy node ip saddr 10.0.1.0/24 counter name \"np_a_0\" accept comment \"a/b ingress[0]\"\n\
             add rule inet nftpolicy node jump comb\n"
        );
        assert!(Transaction::diff(&new, &new).is_empty());
    }

    #[test]
    fn a_counter_whose_comment_changes_is_added_again_once_its_chains_are_flushed() {
        let old = example::counted();
        let mut new = old.clone();
        new.counters.get_mut("np_a_0").unwrap().comment = Some("a/b ingress[0]".into());
        new.counters.get_mut("spare").unwrap().comment = None;
        new.counters.insert("fresh".into(), Counter::default());
        let diff = Transaction::diff(&old, &new);
        assert_eq!(applied(&old, &diff), Ok(new.clone()));
        assert_eq!(
            diff.render(),
            "add counter inet nftpolicy fresh\n\
             flush chain inet nftpolicy node\n\
             delete counter inet nftpolicy np_a_0\n\
             add counter inet nftpolicy np_a_0 { comment \"a/b ingress[0]\"; }\n\
             delete counter inet nftpolicy spare\n\
             add counter inet nftpolicy spare\n\
             add rule inet nftpolicy node ct state established,related accept\n\
             add rule inet nftpolicy node ip saddr 10.0.1.0/24 counter name \"np_a_0\" accept comment \"a/b ingress[0]\"\n\
             add rule inet nftpolicy node counter name \"np_a_0\" ip saddr 10.0.2.0/24 return\n\
             add rule inet nftpolicy node jump comb\n"
        );
        // `add counter` alone would leave the old comment, as nft does.
        let in_place = tx(vec![Op::AddCounter(
            "np_a_0".into(),
            new.counters["np_a_0"].clone(),
        )]);
        assert_eq!(applied(&old, &in_place), Ok(old.clone()));
    }

    #[test]
    fn apply_to_predicts_what_nft_does_with_counters() {
        let r = example::counted();
        let fails = |ops: Vec<Op>| applied(&r, &tx(ops)).unwrap_err();
        let counted_rule = |name: &str| Rule {
            matches: vec![Match::Counter(name.into())],
            verdict: Verdict::Accept,
            comment: None,
        };
        assert_eq!(
            fails(vec![Op::AddRule("comb".into(), counted_rule("nope"))]),
            TxError::Missing("nope".into(), COUNTER)
        );
        assert_eq!(
            fails(vec![Op::DeleteCounter("np_a_0".into())]),
            TxError::Busy("np_a_0".into(), COUNTER)
        );
        assert_eq!(
            fails(vec![Op::DeleteCounter("nope".into())]),
            TxError::Missing("nope".into(), COUNTER)
        );
        // Unnamed, a counter goes; added in the same batch, a rule may name it.
        let spare_gone = applied(&r, &tx(vec![Op::DeleteCounter("spare".into())])).unwrap();
        assert!(!spare_gone.counters.contains_key("spare"));
        let batch = tx(vec![
            Op::AddCounter("new".into(), Counter::default()),
            Op::AddRule("comb".into(), counted_rule("new")),
        ]);
        let after = applied(&r, &batch).unwrap();
        assert_eq!(after.counters["new"], Counter::default());
        // Counters have a namespace of their own: one may be named like a set or a chain.
        let mut with_set = r.clone();
        with_set.sets.insert(
            "comb".into(),
            Set {
                set_type: SetType::Addr(Family::V4),
                comment: String::new(),
                elements: Default::default(),
            },
        );
        let both = applied(
            &with_set,
            &tx(vec![Op::AddCounter("node".into(), Counter::default())]),
        )
        .unwrap();
        assert!(both.counters.contains_key("node") && both.chains.contains_key("node"));
        // nft refuses a limit of 0 packets a second, or a burst of 0.
        for (rate, burst) in [(0, 1), (1, 0)] {
            let limited = Rule {
                matches: vec![Match::Limit { rate, burst }],
                verdict: Verdict::Continue,
                comment: None,
            };
            assert!(matches!(
                fails(vec![Op::AddRule("comb".into(), limited)]),
                TxError::Invalid(..)
            ));
        }
    }
}
