//! The kernel seam: everything the dataplane asks of the kernel, behind one trait.
//!
//! [`NftKernel`] is the real one: it runs `nft` (and `conntrack`) in the agent's network namespace
//! or in a named one, and sends element-only transactions and counter reads over netlink
//! ([`netlink`]) instead, which costs the same whatever the size of the table. [`FakeKernel`] keeps the table in memory and follows nft's rules, so the
//! reconcile loop, restarts, retries, full replaces and audits are tested without root; it can be
//! told to reject the next transaction, to lose the table, or to drift.
//!
//! Failures are classified here, once, into [`KernelError`]: a program that cannot be started, a
//! transaction the kernel rejected (nothing changed), a table that cannot be listed, conntrack entries that
//! cannot be deleted.

mod fake;
pub mod netlink;
mod nft;

use std::collections::BTreeMap;
use std::net::IpAddr;

use policy_compiler::nft::transaction::Transaction;
use policy_compiler::nft::{CounterValue, TABLE_NAME};

pub use fake::{FakeKernel, KernelCall};
pub use nft::{CommitPaths, NftKernel};

/// What the dataplane asks of the kernel. Every method is one atomic step.
pub trait Kernel: Send + std::fmt::Debug {
    /// Commits `transaction` as one batch (`nft -f -`): all of it, or nothing and
    /// [`KernelError::Rejected`].
    fn commit(&self, transaction: &Transaction) -> Result<(), KernelError>;

    /// The table as `nft -j list table inet nftpolicy` prints it, or `None` when it does not exist.
    fn list_table(&self) -> Result<Option<String>, KernelError>;

    /// The table's named counters as `nft -j list counters table inet nftpolicy` prints them (the
    /// counter objects alone, not the sets and maps), or `None` when the table does not exist.
    fn list_counters(&self) -> Result<Option<String>, KernelError>;

    /// The values of the table's named counters, by name; none when the table does not exist.
    fn counter_values(&self) -> Result<BTreeMap<String, CounterValue>, KernelError>;

    /// Deletes the conntrack entries from and to `ip`, so that the next packet of each of those
    /// connections is judged by the rules again. No entry to delete is not an error.
    fn delete_conntrack_entries(&self, ip: IpAddr) -> Result<(), KernelError>;
}

/// A failure of the kernel seam, by what failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A program could not be started or waited for: the kernel was not asked at all.
    #[error("cannot run {program}: {source}; {hint}")]
    Unavailable {
        /// `nft`, `conntrack`, or `ip` (for a named network namespace).
        program: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
        /// What to install or check.
        hint: &'static str,
    },
    /// The kernel (through nft or netlink) rejected the transaction; nothing was changed.
    #[error("the kernel rejected the transaction{netns}: {message}")]
    Rejected {
        /// ` in netns NAME`, or empty.
        netns: String,
        /// nft's own message, with line and column; or, through netlink, what each failed
        /// message did to which set or map, and its errno.
        message: String,
    },
    /// A netlink request could not be made or its answer read (the socket failed); the kernel may
    /// not have been asked, or may have applied a batch whose answer was lost.
    #[error("netlink request failed{netns}: {message}")]
    Netlink {
        /// ` in netns NAME`, or empty.
        netns: String,
        /// What failed.
        message: String,
    },
    /// The table could not be listed.
    #[error("cannot list table inet {TABLE_NAME}{netns}: {message}")]
    List {
        /// ` in netns NAME`, or empty.
        netns: String,
        /// nft's own message.
        message: String,
    },
    /// `conntrack` could not delete the entries of an address.
    #[error("conntrack cannot delete the entries of {ip}{netns}: {message}")]
    Conntrack {
        /// The address.
        ip: IpAddr,
        /// ` in netns NAME`, or empty.
        netns: String,
        /// conntrack's own message.
        message: String,
    },
}
