//! An in-memory kernel for tests: the table as a [`Ruleset`], changed only by transactions applied
//! with nft's own rules, and listed as nft 1.0.6 lists it; and the counts of its named counters.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use policy_compiler::nft::json::{counters_listing, listing};
use policy_compiler::nft::transaction::{Op, Transaction};
use policy_compiler::nft::{CounterValue, Ruleset};

use super::{Kernel, KernelError};

/// One request the dataplane made of a [`FakeKernel`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelCall {
    /// A transaction, and whether it was committed (`false`: rejected, nothing changed).
    Commit(Transaction, bool),
    /// A listing of the table.
    List,
    /// A read of the table's named counters (their listing or their values).
    ListCounters,
    /// A deletion of the conntrack entries of an address.
    DeleteConntrack(IpAddr),
}

#[derive(Debug, Default)]
struct State {
    table: Option<Ruleset>,
    /// Counts of named counters of the table that counted something.
    counts: BTreeMap<String, CounterValue>,
    reject_next: Option<String>,
    fail_conntrack: Option<String>,
    calls: Vec<KernelCall>,
}

/// A kernel that keeps `table inet nftpolicy` in memory.
///
/// - A transaction applies as `nft -f -` would ([`Transaction::apply_to`]): all or nothing; deleting a
///   missing element, a set still referenced or a chain still in use fails the whole batch; a verdict
///   map key whose verdict changes must be deleted before it is added again; without the table only
///   a transaction that creates it applies. A rejected transaction is a [`KernelError::Rejected`].
///   A rule naming a counter that does not exist fails the batch (`ENOENT`), and so does deleting a
///   counter a rule still names (`EBUSY`).
/// - The table is listed as `nft -j list table inet nftpolicy` prints it
///   ([`policy_compiler::nft::json::listing`]); no table lists as `None`.
/// - Named counters count what tests tell them to ([`FakeKernel::count`]), and keep their counts
///   as the kernel does: through every transaction that leaves them in place (a chain flushed and
///   refilled counts on into the same counter), back to 0 when a transaction deletes them or the
///   table. They are listed as `nft -j list counters table inet nftpolicy` prints them
///   ([`FakeKernel::list_counters`]).
/// - Conntrack deletions are recorded and succeed.
///
/// It can be told to reject the next transaction ([`FakeKernel::reject_next`]), to lose the table
/// ([`FakeKernel::lose_table`]), to drift ([`FakeKernel::drift`]) and to fail conntrack deletions
/// ([`FakeKernel::fail_conntrack`]); every request is recorded ([`FakeKernel::calls`]).
///
/// Clones share one kernel: keep a clone to inspect and tamper with the kernel a dataplane uses.
#[derive(Debug, Clone, Default)]
pub struct FakeKernel {
    state: Arc<Mutex<State>>,
}

impl FakeKernel {
    /// A kernel without the table (a fresh node).
    pub fn new() -> Self {
        Self::default()
    }

    /// A kernel that already holds `ruleset` (a node where the agent ran before), its counters at 0.
    pub fn with_table(ruleset: Ruleset) -> Self {
        let kernel = Self::new();
        kernel.state().table = Some(ruleset);
        kernel
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves a state that is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The table as the kernel holds it now, or `None`.
    pub fn table(&self) -> Option<Ruleset> {
        self.state().table.clone()
    }

    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<KernelCall> {
        self.state().calls.clone()
    }

    /// The transactions committed so far (rejected ones left out), in order.
    pub fn committed(&self) -> Vec<Transaction> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                KernelCall::Commit(tx, true) => Some(tx.clone()),
                _ => None,
            })
            .collect()
    }

    /// The addresses whose conntrack entries were deleted so far, in order.
    pub fn conntrack_deletions(&self) -> Vec<IpAddr> {
        self.state()
            .calls
            .iter()
            .filter_map(|c| match c {
                KernelCall::DeleteConntrack(ip) => Some(*ip),
                _ => None,
            })
            .collect()
    }

    /// Makes the next transaction fail with `message`, changing nothing, as when the kernel refuses
    /// a batch at commit time.
    pub fn reject_next(&self, message: impl Into<String>) {
        self.state().reject_next = Some(message.into());
    }

    /// Removes the table behind the dataplane's back (`nft delete table`, `nft flush ruleset`).
    pub fn lose_table(&self) {
        let mut state = self.state();
        state.table = None;
        state.counts.clear();
    }

    /// Changes the table behind the dataplane's back; returns false (and changes nothing) when there
    /// is no table. A counter the change deletes loses its counts.
    pub fn drift(&self, change: impl FnOnce(&mut Ruleset)) -> bool {
        let mut state = self.state();
        let State { table, counts, .. } = &mut *state;
        match table.as_mut() {
            Some(table) => {
                change(table);
                counts.retain(|name, _| table.counters.contains_key(name));
                true
            }
            None => false,
        }
    }

    /// Counts `packets` packets of `bytes` bytes in all into the named counter `name`, as packets
    /// crossing a `counter name "NAME"` statement do; returns false (and counts nothing) when the
    /// table has no such counter.
    pub fn count(&self, name: &str, packets: u64, bytes: u64) -> bool {
        let mut state = self.state();
        let exists = state
            .table
            .as_ref()
            .is_some_and(|t| t.counters.contains_key(name));
        if exists {
            let value = state.counts.entry(name.to_string()).or_default();
            value.packets = value.packets.saturating_add(packets);
            value.bytes = value.bytes.saturating_add(bytes);
        }
        exists
    }

    /// The counts of every named counter of the table, by name (empty without the table).
    pub fn counter_values(&self) -> BTreeMap<String, CounterValue> {
        let state = self.state();
        state
            .table
            .iter()
            .flat_map(|t| t.counters.keys())
            .map(|name| {
                let value = state.counts.get(name).copied().unwrap_or_default();
                (name.clone(), value)
            })
            .collect()
    }

    /// The table's named counters as `nft -j list counters table inet nftpolicy` prints them
    /// ([`policy_compiler::nft::json::counters_listing`]), or `None` when there is no table (nft
    /// fails then); recorded as [`KernelCall::ListCounters`].
    pub fn list_counters(&self) -> Result<Option<String>, KernelError> {
        let mut state = self.state();
        state.calls.push(KernelCall::ListCounters);
        Ok(state
            .table
            .as_ref()
            .map(|t| counters_listing(t, &state.counts)))
    }

    /// Makes every conntrack deletion from now on fail with `message`.
    pub fn fail_conntrack(&self, message: impl Into<String>) {
        self.state().fail_conntrack = Some(message.into());
    }
}

impl Kernel for FakeKernel {
    fn commit(&self, transaction: &Transaction) -> Result<(), KernelError> {
        let mut state = self.state();
        let result = match state.reject_next.take() {
            Some(message) => Err(message),
            None => transaction
                .apply_to(&mut state.table)
                .map_err(|e| format!("Error: {e}")),
        };
        if result.is_ok() {
            // What the transaction deleted starts again from 0; the rest keeps its counts.
            let State { table, counts, .. } = &mut *state;
            for op in &transaction.ops {
                match op {
                    Op::DeleteTable => counts.clear(),
                    Op::DeleteCounter(name) => {
                        counts.remove(name);
                    }
                    _ => {}
                }
            }
            counts.retain(|name, _| {
                table
                    .as_ref()
                    .is_some_and(|t| t.counters.contains_key(name))
            });
        }
        state
            .calls
            .push(KernelCall::Commit(transaction.clone(), result.is_ok()));
        result.map_err(|message| KernelError::Rejected {
            netns: String::new(),
            message,
        })
    }

    fn list_table(&self) -> Result<Option<String>, KernelError> {
        let mut state = self.state();
        state.calls.push(KernelCall::List);
        Ok(state.table.as_ref().map(listing))
    }

    fn list_counters(&self) -> Result<Option<String>, KernelError> {
        FakeKernel::list_counters(self)
    }

    /// [`FakeKernel::counter_values`], recorded as [`KernelCall::ListCounters`].
    fn counter_values(&self) -> Result<BTreeMap<String, CounterValue>, KernelError> {
        self.state().calls.push(KernelCall::ListCounters);
        Ok(FakeKernel::counter_values(self))
    }

    fn delete_conntrack_entries(&self, ip: IpAddr) -> Result<(), KernelError> {
        let mut state = self.state();
        state.calls.push(KernelCall::DeleteConntrack(ip));
        match &state.fail_conntrack {
            Some(message) => Err(KernelError::Conntrack {
                ip,
                netns: String::new(),
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use policy_compiler::cidr::Family;
    use policy_compiler::nft::json::{parse_counters, parse_table};
    use policy_compiler::nft::{
        Chain, Counter, Match, Rule, Set, SetElement, SetType, Verdict, VerdictMap,
    };

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// A table with a peer set holding 10.0.0.1, a verdict map sending 10.0.0.1 to chain `a`, and the
    /// chains `a` and `b`.
    fn table() -> Ruleset {
        let mut r = Ruleset::default();
        r.sets.insert(
            "pods_x_v4".into(),
            Set {
                set_type: SetType::Addr(Family::V4),
                comment: "x: app=web".into(),
                elements: BTreeSet::from([SetElement::Addr(ip("10.0.0.1"))]),
            },
        );
        r.maps.insert(
            "ingress_v4".into(),
            VerdictMap {
                family: Family::V4,
                elements: BTreeMap::from([(ip("10.0.0.1"), "a".to_string())]),
            },
        );
        for chain in ["a", "b"] {
            r.chains.insert(
                chain.into(),
                Chain {
                    base: None,
                    rules: vec![],
                },
            );
        }
        r
    }

    fn tx(ops: Vec<Op>) -> Transaction {
        Transaction { ops }
    }

    #[test]
    fn a_transaction_applies_whole_or_not_at_all() {
        let kernel = FakeKernel::with_table(table());
        let add = Op::AddElements("pods_x_v4".into(), vec![SetElement::Addr(ip("10.0.0.2"))]);
        let missing =
            Op::DeleteElements("pods_x_v4".into(), vec![SetElement::Addr(ip("10.0.0.9"))]);
        let err = kernel
            .commit(&tx(vec![add.clone(), missing]))
            .expect_err("deleting a missing element fails the batch");
        assert!(matches!(err, KernelError::Rejected { .. }), "{err:?}");
        assert_eq!(
            kernel.table(),
            Some(table()),
            "nothing of the batch applied"
        );
        kernel
            .commit(&tx(vec![add]))
            .expect("the add alone applies");
        assert_eq!(
            kernel.table().expect("table").sets["pods_x_v4"]
                .elements
                .len(),
            2
        );
        assert_eq!(kernel.committed().len(), 1);
    }

    #[test]
    fn a_vmap_key_that_changes_verdict_needs_delete_then_add() {
        let kernel = FakeKernel::with_table(table());
        let to_b = Op::AddMapElements("ingress_v4".into(), vec![(ip("10.0.0.1"), "b".into())]);
        kernel
            .commit(&tx(vec![to_b.clone()]))
            .expect_err("an add over a key with another verdict fails");
        let delete = Op::DeleteMapElements("ingress_v4".into(), vec![ip("10.0.0.1")]);
        kernel
            .commit(&tx(vec![delete, to_b]))
            .expect("delete, then add");
        assert_eq!(
            kernel.table().expect("table").maps["ingress_v4"].elements[&ip("10.0.0.1")],
            "b"
        );
    }

    #[test]
    fn without_the_table_only_a_full_replace_applies() {
        let kernel = FakeKernel::with_table(table());
        kernel.lose_table();
        assert_eq!(kernel.list_table().expect("list"), None);
        let add = Op::AddElements("pods_x_v4".into(), vec![SetElement::Addr(ip("10.0.0.2"))]);
        kernel.commit(&tx(vec![add])).expect_err("no table");
        kernel.commit(&Transaction::full(&table())).expect("full");
        assert_eq!(kernel.table(), Some(table()));
    }

    #[test]
    fn the_listing_reads_back_as_the_table_and_shows_drift() {
        let kernel = FakeKernel::with_table(table());
        let json = kernel.list_table().expect("list").expect("a table");
        assert_eq!(parse_table(&json).expect("parses"), table());
        assert!(kernel.drift(|t| {
            t.sets.get_mut("pods_x_v4").expect("set").elements.clear();
        }));
        let json = kernel.list_table().expect("list").expect("a table");
        assert_ne!(parse_table(&json).expect("parses"), table());
    }

    #[test]
    fn it_can_be_told_to_reject_the_next_transaction_and_to_fail_conntrack() {
        let kernel = FakeKernel::new();
        kernel.reject_next("Error: Could not process rule: No buffer space available");
        let err = kernel
            .commit(&Transaction::full(&table()))
            .expect_err("rejected");
        assert!(err.to_string().contains("No buffer space"), "{err}");
        assert_eq!(kernel.table(), None);
        kernel
            .commit(&Transaction::full(&table()))
            .expect("only the next one");

        kernel.delete_conntrack_entries(ip("10.0.0.1")).expect("ok");
        kernel.fail_conntrack("Operation not permitted");
        let err = kernel
            .delete_conntrack_entries(ip("10.0.0.2"))
            .expect_err("told to fail");
        assert!(matches!(err, KernelError::Conntrack { .. }), "{err:?}");
        assert_eq!(
            kernel.conntrack_deletions(),
            vec![ip("10.0.0.1"), ip("10.0.0.2")]
        );
        assert_eq!(
            kernel
                .calls()
                .iter()
                .filter(|c| matches!(c, KernelCall::Commit(_, false)))
                .count(),
            1
        );
    }

    /// `table()` with the counter `drops` (and the unnamed `spare`), counted into by chain `a`'s
    /// one rule, `counter name "drops" drop`.
    fn counted() -> Ruleset {
        let mut r = table();
        r.counters.insert(
            "drops".into(),
            Counter {
                comment: Some("isolation of a".into()),
            },
        );
        r.counters.insert("spare".into(), Counter::default());
        r.chains.get_mut("a").expect("chain a").rules = vec![Rule {
            matches: vec![Match::Counter("drops".into())],
            verdict: Verdict::Drop,
            comment: None,
        }];
        r
    }

    fn value(packets: u64, bytes: u64) -> CounterValue {
        CounterValue { packets, bytes }
    }

    #[test]
    fn counters_must_exist_for_the_rules_that_name_them_and_outlive_them() {
        let kernel = FakeKernel::with_table(counted());
        let naming_missing = Op::AddRule(
            "b".into(),
            Rule {
                matches: vec![Match::Counter("nope".into())],
                verdict: Verdict::Accept,
                comment: None,
            },
        );
        let err = kernel
            .commit(&tx(vec![naming_missing]))
            .expect_err("a rule naming a missing counter");
        assert!(err.to_string().contains("nope: no such counter"), "{err}");
        let err = kernel
            .commit(&tx(vec![Op::DeleteCounter("drops".into())]))
            .expect_err("a counter a rule names");
        assert!(
            err.to_string().contains("drops: counter is in use"),
            "{err}"
        );
        assert_eq!(kernel.table(), Some(counted()));
        kernel
            .commit(&tx(vec![
                Op::FlushChain("a".into()),
                Op::DeleteCounter("drops".into()),
            ]))
            .expect("once the chain is flushed");
        assert!(!kernel
            .table()
            .expect("table")
            .counters
            .contains_key("drops"));
    }

    #[test]
    fn counts_survive_the_rewriting_of_chains_and_go_with_their_counter() {
        let kernel = FakeKernel::with_table(counted());
        assert!(kernel.count("drops", 3, 180));
        assert!(!kernel.count("nope", 1, 1), "no such counter");
        assert_eq!(kernel.counter_values()["drops"], value(3, 180));
        // A diff that rewrites the chain counting into `drops` keeps its counts.
        let mut rewritten = counted();
        rewritten
            .chains
            .get_mut("a")
            .expect("chain a")
            .rules
            .insert(
                0,
                Rule {
                    matches: vec![Match::Counter("spare".into())],
                    verdict: Verdict::Continue,
                    comment: None,
                },
            );
        let diff = Transaction::diff(&counted(), &rewritten);
        assert!(
            diff.ops.contains(&Op::FlushChain("a".into())),
            "{}",
            diff.render()
        );
        kernel.commit(&diff).expect("diff");
        assert!(kernel.count("drops", 1, 60) && kernel.count("spare", 1, 60));
        let listed = parse_counters(&kernel.list_counters().expect("list").expect("a table"))
            .expect("parses");
        assert_eq!(
            listed,
            BTreeMap::from([
                ("drops".to_string(), value(4, 240)),
                ("spare".to_string(), value(1, 60)),
            ])
        );
        assert_eq!(kernel.calls().last(), Some(&KernelCall::ListCounters));
        // A new comment: the counter is deleted and added again, from 0.
        let mut recommented = rewritten.clone();
        recommented
            .counters
            .get_mut("drops")
            .expect("drops")
            .comment = Some("other".into());
        kernel
            .commit(&Transaction::diff(&rewritten, &recommented))
            .expect("diff");
        assert_eq!(kernel.counter_values()["drops"], value(0, 0));
        assert_eq!(kernel.counter_values()["spare"], value(1, 60));
        // A full replace deletes the table and every count; so does losing the table.
        kernel
            .commit(&Transaction::full(&recommented))
            .expect("full");
        assert_eq!(kernel.counter_values()["spare"], value(0, 0));
        assert!(kernel.count("spare", 2, 2));
        kernel.lose_table();
        assert_eq!(kernel.list_counters().expect("list"), None);
        kernel
            .commit(&Transaction::full(&recommented))
            .expect("full");
        assert_eq!(kernel.counter_values()["spare"], value(0, 0));
    }
}
