//! The real kernel: `nft` and `conntrack`, run in the agent's network namespace or in a named one
//! (`ip netns exec NAME ...`), and nf_tables netlink messages for element-only transactions and
//! counter reads (a socket opened in that namespace).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use policy_compiler::nft::transaction::Transaction;
use policy_compiler::nft::{CounterValue, TABLE_NAME};

use super::netlink::{ElementBatch, NetlinkError, NfTablesSocket};
use super::{Kernel, KernelError};
use crate::process::{self, ProcessError};

/// Runs `nft` and `conntrack`, in the current network namespace or in a named one; commits
/// element-only transactions and reads the counters over netlink.
///
/// [`Kernel::commit`] sends a transaction made only of element ops on sets and verdict maps
/// ([`ElementBatch::from_transaction`]) as one nf_tables netlink batch, with the same semantics as
/// `nft -f -` (all or nothing; adding an existing element is a no-op; deleting a missing one fails
/// the batch), and every other transaction through `nft -f -`. Clones share the counts of which
/// path ran ([`NftKernel::commit_paths`]) and one netlink socket, opened on first use (in the
/// named namespace, which must outlive the kernel) and opened again after it failed.
#[derive(Debug, Clone, Default)]
pub struct NftKernel {
    netns: Option<String>,
    paths: Arc<PathCounts>,
    socket: Arc<Mutex<Option<NfTablesSocket>>>,
}

#[derive(Debug, Default)]
struct PathCounts {
    netlink: AtomicU64,
    nft: AtomicU64,
}

/// How many transactions [`NftKernel::commit`](Kernel::commit) sent each way (committed or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitPaths {
    /// As an nf_tables netlink batch (element-only transactions).
    pub netlink: u64,
    /// Through `nft -f -`.
    pub nft: u64,
}

/// A program the kernel seam runs, with what to do when it is missing.
#[derive(Debug, Clone, Copy)]
enum Tool {
    Nft,
    Conntrack,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Nft => "nft",
            Tool::Conntrack => "conntrack",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Tool::Nft => "is nftables installed (apt-get install nftables)?",
            Tool::Conntrack => "is conntrack installed (apt-get install conntrack)?",
        }
    }
}

impl NftKernel {
    /// The kernel of the current network namespace.
    pub fn host() -> Self {
        Self::default()
    }

    /// The kernel as seen from a named network namespace (`/run/netns/NAME`).
    pub fn in_netns(name: impl Into<String>) -> Self {
        Self {
            netns: Some(name.into()),
            paths: Arc::default(),
            socket: Arc::default(),
        }
    }

    /// How many transactions went each way so far (shared by clones).
    pub fn commit_paths(&self) -> CommitPaths {
        CommitPaths {
            netlink: self.paths.netlink.load(Ordering::Relaxed),
            nft: self.paths.nft.load(Ordering::Relaxed),
        }
    }

    /// Commits an element-only transaction as one netlink batch.
    pub fn commit_batch(&self, batch: &ElementBatch) -> Result<(), KernelError> {
        self.with_socket(|socket| socket.commit(batch))
    }

    /// Runs `request` on the kept netlink socket, opening it first if needed; a socket that failed
    /// (anything but a rejection) is dropped, and the next request opens a new one.
    fn with_socket<T>(
        &self,
        request: impl FnOnce(&mut NfTablesSocket) -> Result<T, NetlinkError>,
    ) -> Result<T, KernelError> {
        // A panic while the lock was held leaves at worst a socket with answers unread, which the
        // sequence numbers tell apart.
        let mut kept = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        let socket = match kept.take() {
            Some(socket) => socket,
            None => {
                NfTablesSocket::open(self.netns.as_deref()).map_err(|e| self.netlink_error(e))?
            }
        };
        let socket = kept.insert(socket);
        let result = request(socket);
        if let Err(e) = &result {
            if !matches!(e, NetlinkError::Rejected(_)) {
                *kept = None;
            }
        }
        result.map_err(|e| self.netlink_error(e))
    }

    /// A netlink failure as the seam reports it.
    fn netlink_error(&self, error: NetlinkError) -> KernelError {
        match error {
            NetlinkError::Rejected(message) => KernelError::Rejected {
                netns: self.netns_note(),
                message,
            },
            other => KernelError::Netlink {
                netns: self.netns_note(),
                message: other.to_string(),
            },
        }
    }

    /// The named network namespace, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// ` in netns NAME`, or empty: for error messages.
    fn netns_note(&self) -> String {
        self.netns
            .as_ref()
            .map(|n| format!(" in netns {n}"))
            .unwrap_or_default()
    }

    /// Runs `tool args` with `stdin`, through `ip netns exec` for a named namespace.
    fn run_tool(&self, tool: Tool, args: &[&str], stdin: &str) -> Result<process::Output, Failure> {
        let result = match &self.netns {
            Some(ns) => {
                let mut full = vec!["netns", "exec", ns.as_str(), tool.name()];
                full.extend_from_slice(args);
                process::run("ip", &full, stdin)
            }
            None => process::run(tool.name(), args, stdin),
        };
        result.map_err(|e| match e {
            ProcessError::Spawn { source, .. } | ProcessError::Wait { source, .. } => {
                let program = if self.netns.is_some() {
                    "ip"
                } else {
                    tool.name()
                };
                let hint = if self.netns.is_some() {
                    "is iproute2 installed (apt-get install iproute2)?"
                } else {
                    tool.hint()
                };
                Failure::Unavailable(KernelError::Unavailable {
                    program,
                    source,
                    hint,
                })
            }
            ProcessError::Failed { status, stderr, .. } => Failure::Failed {
                code: status.code(),
                stderr,
            },
        })
    }

    /// Runs `nft -f -` with `script` on standard input: all of it or nothing. For tables other than
    /// nftpolicy's (benchmarks, tests); the dataplane commits [`Transaction`]s.
    pub fn run_script(&self, script: &str) -> Result<(), KernelError> {
        match self.run_tool(Tool::Nft, &["-f", "-"], script) {
            Ok(_) => Ok(()),
            Err(failure) => Err(failure.classify(|message| KernelError::Rejected {
                netns: self.netns_note(),
                message,
            })),
        }
    }

    /// Deletes nftpolicy's table if it exists.
    pub fn delete_table(&self) -> Result<(), KernelError> {
        self.run_script(&format!(
            "add table inet {TABLE_NAME}\ndelete table inet {TABLE_NAME}\n"
        ))
    }
}

/// A failed run, before it is classified by what was asked.
enum Failure {
    /// The program could not be run: already a [`KernelError`].
    Unavailable(KernelError),
    /// It ran and did not exit 0.
    Failed { code: Option<i32>, stderr: String },
}

impl Failure {
    /// The error for a program that ran and failed, as `failed` makes it from its message.
    fn classify(self, failed: impl FnOnce(String) -> KernelError) -> KernelError {
        match self {
            Failure::Unavailable(e) => e,
            Failure::Failed { stderr, .. } => failed(stderr),
        }
    }
}

/// Whether `nft list` failed because the table does not exist (exit 1, "No such file or
/// directory"), rather than for another reason (`ip netns exec` into a missing namespace exits 255).
fn table_missing(code: Option<i32>, stderr: &str) -> bool {
    code == Some(1) && stderr.starts_with("Error: No such file or directory")
}

/// Whether `conntrack -D` failed only because there was nothing to delete (it exits 1 then).
fn nothing_to_delete(stderr: &str) -> bool {
    stderr.contains("0 flow entries")
}

impl Kernel for NftKernel {
    fn commit(&self, transaction: &Transaction) -> Result<(), KernelError> {
        match ElementBatch::from_transaction(transaction) {
            Some(batch) => {
                self.paths.netlink.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    path = "netlink",
                    ops = transaction.ops.len(),
                    messages = batch.messages(),
                    netns = self.netns.as_deref(),
                    "committing an element-only transaction"
                );
                self.commit_batch(&batch)
            }
            None => {
                self.paths.nft.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    path = "nft",
                    ops = transaction.ops.len(),
                    netns = self.netns.as_deref(),
                    "committing a transaction"
                );
                self.run_script(&transaction.render())
            }
        }
    }

    fn list_table(&self) -> Result<Option<String>, KernelError> {
        match self.run_tool(Tool::Nft, &["-j", "list", "table", "inet", TABLE_NAME], "") {
            Ok(out) => Ok(Some(out.stdout)),
            Err(Failure::Failed { code, stderr }) if table_missing(code, &stderr) => Ok(None),
            Err(failure) => Err(failure.classify(|message| KernelError::List {
                netns: self.netns_note(),
                message,
            })),
        }
    }

    fn list_counters(&self) -> Result<Option<String>, KernelError> {
        let args = ["-j", "list", "counters", "table", "inet", TABLE_NAME];
        match self.run_tool(Tool::Nft, &args, "") {
            Ok(out) => Ok(Some(out.stdout)),
            Err(Failure::Failed { code, stderr }) if table_missing(code, &stderr) => Ok(None),
            Err(failure) => Err(failure.classify(|message| KernelError::List {
                netns: self.netns_note(),
                message,
            })),
        }
    }

    fn counter_values(&self) -> Result<BTreeMap<String, CounterValue>, KernelError> {
        self.with_socket(NfTablesSocket::counters)
    }

    fn delete_conntrack_entries(&self, ip: IpAddr) -> Result<(), KernelError> {
        let addr = ip.to_string();
        for flag in ["-s", "-d"] {
            match self.run_tool(Tool::Conntrack, &["-D", flag, &addr], "") {
                Ok(_) => {}
                Err(Failure::Failed { stderr, .. }) if nothing_to_delete(&stderr) => {}
                Err(failure) => {
                    return Err(failure.classify(|message| KernelError::Conntrack {
                        ip,
                        netns: self.netns_note(),
                        message,
                    }))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nfts_own_missing_table_error_means_no_table() {
        let nft = "Error: No such file or directory\nlist table inet nftpolicy\n                ^^^^^^^^^";
        assert!(table_missing(Some(1), nft));
        // `ip netns exec` into a namespace that does not exist: not an empty kernel.
        assert!(!table_missing(
            Some(255),
            "Cannot open network namespace \"x\": No such file or directory"
        ));
        assert!(!table_missing(Some(1), "Error: Operation not permitted"));
    }

    #[test]
    fn failures_are_classified_by_what_was_asked() {
        let failed = || Failure::Failed {
            code: Some(1),
            stderr: "Error: Operation not permitted".into(),
        };
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let conntrack = failed().classify(|message| KernelError::Conntrack {
            ip,
            netns: String::new(),
            message,
        });
        assert!(matches!(conntrack, KernelError::Conntrack { .. }));
        assert!(
            !conntrack.to_string().contains("rejected"),
            "a failed conntrack is not a rejected transaction: {conntrack}"
        );
        let list = failed().classify(|message| KernelError::List {
            netns: " in netns n".into(),
            message,
        });
        assert_eq!(
            list.to_string(),
            "cannot list table inet nftpolicy in netns n: Error: Operation not permitted"
        );
        // A program that could not run stays what it is, whatever was asked.
        let unavailable = Failure::Unavailable(KernelError::Unavailable {
            program: "nft",
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
            hint: Tool::Nft.hint(),
        })
        .classify(|message| KernelError::Rejected {
            netns: String::new(),
            message,
        });
        assert!(
            matches!(unavailable, KernelError::Unavailable { program: "nft", .. }),
            "{unavailable:?}"
        );
        assert!(nothing_to_delete(
            "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted."
        ));
    }
}
