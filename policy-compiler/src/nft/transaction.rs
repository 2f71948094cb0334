//! Transactions: the difference between two [`Ruleset`]s as data, rendered as one `nft -f -` batch.
//!
//! A transaction is built, printed and tested like any value, and [`Transaction::apply_to`] predicts
//! the state it leaves, with the errors nft would raise (deleting a missing element, a referenced set,
//! a chain still in use), so the agent keeps the committed state in memory instead of re-reading the
//! kernel.
//!
//! [`Transaction::diff`] touches only what changed: pod churn becomes set and map element operations;
//! an edited policy flushes and refills its own chains; nothing unchanged is flushed.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

use super::render::{chain_declaration, map_declaration, set_declaration};
use super::{Chain, Match, Rule, Ruleset, Set, SetElement, Verdict, VerdictMap, TABLE_NAME};

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
    /// Sets, maps and chains added or deleted.
    pub objects_changed: usize,
}

fn chain_refs(chain: &Chain) -> impl Iterator<Item = (&'static str, &str)> {
    chain.rules.iter().flat_map(|r| {
        let mut refs: Vec<(&'static str, &str)> = r
            .matches
            .iter()
            .filter_map(|m| match m {
                Match::InSet { set, .. } | Match::DaddrProtoPortInSet { set, .. } => {
                    Some(("set", set.as_str()))
                }
                _ => None,
            })
            .collect();
        match &r.verdict {
            Verdict::Jump(c) => refs.push(("chain", c.as_str())),
            Verdict::Vmap { map, .. } => refs.push(("map", map.as_str())),
            Verdict::Accept | Verdict::Drop => {}
        }
        refs
    })
}

impl Transaction {
    /// Whether there is nothing to do (then `nft` need not run at all).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Replaces the whole table atomically with `desired`, whatever the kernel holds.
    pub fn full(desired: &Ruleset) -> Self {
        let mut ops = vec![Op::AddTable, Op::DeleteTable, Op::AddTable];
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
        for (name, chain) in &desired.chains {
            for rule in &chain.rules {
                ops.push(Op::AddRule(name.clone(), rule.clone()));
            }
        }
        Self { ops }
    }

    /// The operations that turn `committed` into `desired`, touching only what differs. Falls back to
    /// [`Transaction::full`] when a map or base chain changes definition, which nft cannot edit in place.
    pub fn diff(committed: &Ruleset, desired: &Ruleset) -> Self {
        let redefined_map = desired.maps.iter().any(|(n, m)| {
            committed
                .maps
                .get(n)
                .is_some_and(|old| old.family != m.family)
        });
        let rebased_chain = desired.chains.iter().any(|(n, c)| {
            committed
                .chains
                .get(n)
                .is_some_and(|old| old.base != c.base)
        });
        if redefined_map || rebased_chain {
            return Self::full(desired);
        }
        let mut ops = Vec::new();
        // Sets whose type or comment changed are deleted and added again; first the chains that use
        // them are flushed.
        let redefined_sets: BTreeSet<&str> = desired
            .sets
            .iter()
            .filter(|(n, s)| {
                committed
                    .sets
                    .get(*n)
                    .is_some_and(|old| old.set_type != s.set_type || old.comment != s.comment)
            })
            .map(|(n, _)| n.as_str())
            .collect();
        let uses_redefined = |chain: &Chain| {
            chain_refs(chain).any(|(kind, name)| kind == "set" && redefined_sets.contains(name))
        };
        let refilled: Vec<&str> = desired
            .chains
            .iter()
            .filter(|(n, c)| {
                committed
                    .chains
                    .get(*n)
                    .is_some_and(|old| old.rules != c.rules || uses_redefined(old))
            })
            .map(|(n, _)| n.as_str())
            .collect();
        let removed_chains: Vec<&str> = committed
            .chains
            .keys()
            .filter(|n| !desired.chains.contains_key(*n))
            .map(String::as_str)
            .collect();

        // 1. New chains, declared empty so that map elements and rules can refer to them.
        for (name, chain) in &desired.chains {
            if !committed.chains.contains_key(name) {
                ops.push(Op::AddChain(
                    name.clone(),
                    Chain {
                        base: chain.base,
                        rules: vec![],
                    },
                ));
            }
        }
        // 2. New sets and maps, with their elements.
        for (name, set) in &desired.sets {
            if !committed.sets.contains_key(name) {
                ops.push(Op::AddSet(name.clone(), set.clone()));
            }
        }
        for (name, map) in &desired.maps {
            if !committed.maps.contains_key(name) {
                ops.push(Op::AddMap(name.clone(), map.clone()));
            }
        }
        // 3. Chains whose rules change, or that use a redefined set, are emptied.
        for name in &refilled {
            ops.push(Op::FlushChain(name.to_string()));
        }
        // 4. Redefined sets.
        for name in &redefined_sets {
            ops.push(Op::DeleteSet(name.to_string()));
            ops.push(Op::AddSet(name.to_string(), desired.sets[*name].clone()));
        }
        // 5. Element changes of the other sets and of the maps.
        for (name, set) in &desired.sets {
            let Some(old) = committed.sets.get(name) else {
                continue;
            };
            if redefined_sets.contains(name.as_str()) {
                continue;
            }
            let gone: Vec<SetElement> = old.elements.difference(&set.elements).copied().collect();
            let new: Vec<SetElement> = set.elements.difference(&old.elements).copied().collect();
            if !gone.is_empty() {
                ops.push(Op::DeleteElements(name.clone(), gone));
            }
            if !new.is_empty() {
                ops.push(Op::AddElements(name.clone(), new));
            }
        }
        for (name, map) in &desired.maps {
            let Some(old) = committed.maps.get(name) else {
                continue;
            };
            let gone: Vec<IpAddr> = old
                .elements
                .iter()
                .filter(|(k, v)| map.elements.get(*k) != Some(*v))
                .map(|(k, _)| *k)
                .collect();
            let new: Vec<(IpAddr, String)> = map
                .elements
                .iter()
                .filter(|(k, v)| old.elements.get(*k) != Some(*v))
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            if !gone.is_empty() {
                ops.push(Op::DeleteMapElements(name.clone(), gone));
            }
            if !new.is_empty() {
                ops.push(Op::AddMapElements(name.clone(), new));
            }
        }
        // 6. Rules of new and refilled chains.
        for (name, chain) in &desired.chains {
            if committed.chains.contains_key(name) && !refilled.contains(&name.as_str()) {
                continue;
            }
            for rule in &chain.rules {
                ops.push(Op::AddRule(name.clone(), rule.clone()));
            }
        }
        // 7. Removed chains: emptied first (they may jump to each other), then deleted.
        for name in &removed_chains {
            if !committed.chains[*name].rules.is_empty() {
                ops.push(Op::FlushChain(name.to_string()));
            }
        }
        for name in &removed_chains {
            ops.push(Op::DeleteChain(name.to_string()));
        }
        // 8. Removed sets and maps, now unreferenced.
        for name in committed
            .sets
            .keys()
            .filter(|n| !desired.sets.contains_key(*n))
        {
            ops.push(Op::DeleteSet(name.clone()));
        }
        for name in committed
            .maps
            .keys()
            .filter(|n| !desired.maps.contains_key(*n))
        {
            ops.push(Op::DeleteMap(name.clone()));
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
                Op::AddTable | Op::DeleteTable => {}
                Op::DeleteSet(_) | Op::DeleteMap(_) | Op::AddChain(..) | Op::DeleteChain(_) => {
                    s.objects_changed += 1
                }
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
            apply_op(&mut next, op)?;
        }
        *state = next;
        Ok(())
    }
}

fn references(rs: &Ruleset, kind: &'static str, name: &str) -> bool {
    rs.chains
        .values()
        .any(|c| chain_refs(c).any(|(k, n)| k == kind && n == name))
        || (kind == "chain"
            && rs
                .maps
                .values()
                .any(|m| m.elements.values().any(|c| c == name)))
}

fn apply_op(state: &mut Option<Ruleset>, op: &Op) -> Result<(), TxError> {
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
            if references(rs, "set", name) {
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
            if references(rs, "map", name) {
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
            if !chain.rules.is_empty() || references(rs, "chain", name) {
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
                    _ => rs.chains.contains_key(target),
                };
                if !exists {
                    return Err(TxError::Missing(target.to_string(), kind));
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
