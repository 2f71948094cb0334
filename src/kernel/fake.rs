//! An in-memory kernel for tests: the table as a [`Ruleset`], changed only by transactions applied
//! with nft's own rules, and listed as nft 1.0.6 lists it.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use policy_compiler::nft::json::listing;
use policy_compiler::nft::transaction::Transaction;
use policy_compiler::nft::Ruleset;

use super::{Kernel, KernelError};

/// One request the dataplane made of a [`FakeKernel`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelCall {
    /// A transaction, and whether it was committed (`false`: rejected, nothing changed).
    Commit(Transaction, bool),
    /// A listing of the table.
    List,
    /// A deletion of the conntrack entries of an address.
    DeleteConntrack(IpAddr),
}

#[derive(Debug, Default)]
struct State {
    table: Option<Ruleset>,
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
/// - The table is listed as `nft -j list table inet nftpolicy` prints it
///   ([`policy_compiler::nft::json::listing`]); no table lists as `None`.
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

    /// A kernel that already holds `ruleset` (a node where the agent ran before).
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
        self.state().table = None;
    }

    /// Changes the table behind the dataplane's back; returns false (and changes nothing) when there
    /// is no table.
    pub fn drift(&self, change: impl FnOnce(&mut Ruleset)) -> bool {
        match self.state().table.as_mut() {
            Some(table) => {
                change(table);
                true
            }
            None => false,
        }
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
    use policy_compiler::nft::json::parse_table;
    use policy_compiler::nft::transaction::Op;
    use policy_compiler::nft::{Chain, Set, SetElement, SetType, VerdictMap};

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
}
