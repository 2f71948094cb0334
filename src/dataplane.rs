//! The nftables dataplane: applies [`Ruleset`]s to the kernel through one atomic transaction per
//! change, keeping the committed state in memory.
//!
//! The first apply, and the first after a failure, replaces the table whole; every other apply sends
//! only the difference ([`Transaction::diff`]), and an unchanged ruleset does not ask the kernel at
//! all. The kernel is a [`Kernel`]: `nft` itself ([`crate::kernel::NftKernel`]) or an in-memory
//! stand-in ([`crate::kernel::FakeKernel`]).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use policy_compiler::nft::json::as_listed;
use policy_compiler::nft::transaction::{Touched, Transaction, TxStats};
use policy_compiler::nft::Ruleset;
use policy_compiler::plan::fail_closed_ruleset;

use crate::kernel::{Kernel, KernelError};

/// What one [`Dataplane::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The transaction sent (empty when nothing changed).
    pub transaction: Transaction,
    /// Whether the table was replaced whole.
    pub full: bool,
    /// Operations sent (0 when nothing changed and the kernel was not asked).
    pub operations: usize,
    /// What the operations do.
    pub stats: TxStats,
    /// Time the kernel took to commit the transaction.
    pub duration: Duration,
}

/// The kernel's `table inet nftpolicy` in one network namespace, and what was last committed to it.
#[derive(Debug)]
pub struct Dataplane {
    kernel: Box<dyn Kernel>,
    committed: Option<Ruleset>,
    /// Whether `committed` was read back from the kernel rather than committed by this dataplane:
    /// its comments are then in the form the kernel stores them (shortened; see [`as_listed`]), and
    /// the next apply compares `desired` in that form.
    committed_listed: bool,
    needs_full: bool,
}

impl Dataplane {
    /// A dataplane that knows nothing of the kernel's state yet: the first apply replaces the table.
    pub fn new(kernel: impl Kernel + 'static) -> Self {
        Self {
            kernel: Box::new(kernel),
            committed: None,
            committed_listed: false,
            needs_full: true,
        }
    }

    /// A dataplane for a kernel that may already hold the table (an agent restart): the table is read
    /// back and the first apply sends only the difference, so no rule disappears in between. A table
    /// that cannot be read back exactly is replaced whole (atomically) by the first apply.
    pub fn from_kernel(kernel: impl Kernel + 'static) -> Result<Self, KernelError> {
        let mut dp = Self::new(kernel);
        if let Some(json) = dp.kernel.list_table()? {
            match policy_compiler::nft::json::parse_table(&json) {
                Ok(ruleset) => {
                    dp.committed = Some(ruleset);
                    dp.committed_listed = true;
                    dp.needs_full = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the existing table is not one nftpolicy wrote as is; the first sync replaces it whole");
                }
            }
        }
        Ok(dp)
    }

    /// Whether the kernel's table equals what was committed (in the form the kernel lists it:
    /// long comments shortened). `Ok(false)` also when the table is missing or holds something the
    /// model cannot express.
    pub fn kernel_matches(&self) -> Result<bool, KernelError> {
        let Some(committed) = &self.committed else {
            return Ok(true);
        };
        Ok(match self.kernel.list_table()? {
            None => false,
            Some(json) => policy_compiler::nft::json::parse_table(&json)
                .map(|kernel| kernel == as_listed(committed))
                .unwrap_or(false),
        })
    }

    /// Makes the next apply replace the table whole.
    pub fn force_full(&mut self) {
        self.needs_full = true;
    }

    /// The ruleset last committed.
    pub fn committed(&self) -> Option<&Ruleset> {
        self.committed.as_ref()
    }

    /// The kernel.
    pub fn kernel(&self) -> &dyn Kernel {
        self.kernel.as_ref()
    }

    /// On a node where the kernel holds no table of nftpolicy's (nothing was committed or read back),
    /// installs [`fail_closed_ruleset`], which drops every new forwarded connection until the first
    /// sync replaces it; returns whether it did. After a restart the table in force stays as it is.
    pub fn install_fail_closed(&mut self) -> Result<bool, KernelError> {
        if self.committed.is_some() {
            return Ok(false);
        }
        self.apply(&fail_closed_ruleset())?;
        Ok(true)
    }

    /// Deletes the conntrack entries from and to `ip` (see [`Kernel::delete_conntrack_entries`]).
    pub fn delete_conntrack_entries(&self, ip: IpAddr) -> Result<(), KernelError> {
        self.kernel.delete_conntrack_entries(ip)
    }

    /// The transaction `apply` would send for `desired`.
    pub fn plan(&self, desired: &Ruleset) -> (bool, Transaction) {
        match (&self.committed, self.needs_full) {
            // Read back from the kernel: a comment it stores shortened is not a difference.
            (Some(committed), false) if self.committed_listed => {
                (false, Transaction::diff(committed, &as_listed(desired)))
            }
            (Some(committed), false) => (false, Transaction::diff(committed, desired)),
            _ => (true, Transaction::full(desired)),
        }
    }

    /// Makes the kernel hold `desired`, in one atomic transaction. On failure nothing changed in the
    /// kernel, the error carries the kernel's message, and the next apply replaces the table whole.
    pub fn apply(&mut self, desired: &Ruleset) -> Result<ApplyReport, KernelError> {
        self.apply_touched(desired, None)
    }

    /// [`Dataplane::apply`] for a `desired` ruleset that differs from the one last applied only in
    /// what `touched` names (as an incremental compiler reports it; `None`: anything may differ):
    /// the diff and the update of the committed copy cost what changed, not the table.
    pub fn apply_touched(
        &mut self,
        desired: &Ruleset,
        touched: Option<&Touched>,
    ) -> Result<ApplyReport, KernelError> {
        let (full, tx) = match (&self.committed, self.needs_full, touched) {
            (Some(committed), false, Some(touched)) if !self.committed_listed => (
                false,
                Transaction::diff_touched(committed, desired, touched),
            ),
            _ => self.plan(desired),
        };
        if tx.is_empty() {
            if std::mem::take(&mut self.committed_listed) {
                // The kernel holds `desired` as it stores it: the copy takes the compiler's form,
                // which the next diffs compare with.
                self.committed = Some(desired.clone());
            }
            return Ok(ApplyReport {
                transaction: tx,
                full,
                operations: 0,
                stats: TxStats::default(),
                duration: Duration::ZERO,
            });
        }
        let started = Instant::now();
        let result = self.kernel.commit(&tx);
        let duration = started.elapsed();
        match result {
            Ok(()) => {
                // What the kernel now holds: the committed copy with the transaction applied
                // (which costs what the transaction does), or `desired` copied whole.
                let predicted = !full
                    && !self.committed_listed
                    && tx.apply_in_place(&mut self.committed).is_ok();
                if !predicted {
                    self.committed = Some(desired.clone());
                }
                self.committed_listed = false;
                debug_assert!(
                    self.committed.as_ref() == Some(desired),
                    "the committed copy differs from the ruleset the transaction was made for"
                );
                self.needs_full = false;
                Ok(ApplyReport {
                    full,
                    operations: tx.ops.len(),
                    stats: tx.stats(),
                    duration,
                    transaction: tx,
                })
            }
            Err(e) => {
                self.needs_full = true;
                Err(e)
            }
        }
    }
}
