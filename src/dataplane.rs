//! The nftables dataplane: applies [`Ruleset`]s to the kernel through one atomic `nft -f -`
//! transaction per change, keeping the committed state in memory.
//!
//! The first apply, and the first after a failure, replaces the table whole; every other apply sends
//! only the difference ([`Transaction::diff`]), and an unchanged ruleset does not run `nft` at all.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use policy_compiler::nft::transaction::{Transaction, TxStats};
use policy_compiler::nft::{Ruleset, TABLE_NAME};

/// A failure to change the kernel.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// `nft` (or `ip netns exec`) could not be started.
    #[error("cannot run {program}: {source}; is nftables installed (apt-get install nftables)?")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `nft` rejected the transaction; nothing was changed.
    #[error("nft rejected the transaction{where_}: {stderr}")]
    Rejected {
        /// ` in netns X`, or empty.
        where_: String,
        /// nft's own message, with line and column.
        stderr: String,
    },
}

/// Runs `nft`, in the current network namespace or in a named one (`ip netns exec NAME nft ...`).
#[derive(Debug, Clone, Default)]
pub struct NftRunner {
    netns: Option<String>,
}

impl NftRunner {
    /// A runner for the current network namespace.
    pub fn host() -> Self {
        Self { netns: None }
    }

    /// A runner for a named network namespace (`/run/netns/NAME`).
    pub fn in_netns(name: impl Into<String>) -> Self {
        Self {
            netns: Some(name.into()),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]).args(args);
                c
            }
            None => {
                let mut c = Command::new("nft");
                c.args(args);
                c
            }
        }
    }

    fn where_(&self) -> String {
        self.netns
            .as_ref()
            .map(|n| format!(" in netns {n}"))
            .unwrap_or_default()
    }

    /// Runs `nft -f -` with `script` on standard input: all of it or nothing.
    pub fn run(&self, script: &str) -> Result<(), DataplaneError> {
        self.run_with(&["-f", "-"], script).map(|_| ())
    }

    fn run_with(&self, args: &[&str], stdin: &str) -> Result<String, DataplaneError> {
        let program = if self.netns.is_some() { "ip" } else { "nft" }.to_string();
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| DataplaneError::Spawn {
                program: program.clone(),
                source,
            })?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .map_err(|source| DataplaneError::Spawn {
                    program: program.clone(),
                    source,
                })?;
        }
        let out = child
            .wait_with_output()
            .map_err(|source| DataplaneError::Spawn { program, source })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(DataplaneError::Rejected {
                where_: self.where_(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// `nft -j list table inet nftpolicy`, or `None` when the table does not exist.
    pub fn list_table_json(&self) -> Result<Option<String>, DataplaneError> {
        match self.run_with(&["-j", "list", "table", "inet", TABLE_NAME], "") {
            Ok(json) => Ok(Some(json)),
            Err(DataplaneError::Rejected { stderr, .. }) if stderr.contains("No such file") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the conntrack entries to and from `ip` (`conntrack -D`), so that the next packet of
    /// each connection is judged by the rules again. Needs the `conntrack` tool.
    pub fn delete_conntrack_entries(&self, ip: &std::net::IpAddr) -> Result<(), DataplaneError> {
        for flag in ["-s", "-d"] {
            let ip = ip.to_string();
            let mut cmd = match &self.netns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns, "conntrack"]);
                    c
                }
                None => Command::new("conntrack"),
            };
            let out =
                cmd.args(["-D", flag, &ip])
                    .output()
                    .map_err(|source| DataplaneError::Spawn {
                        program: "conntrack (apt-get install conntrack)".to_string(),
                        source,
                    })?;
            // conntrack exits 1 when there was nothing to delete.
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() && !stderr.contains("0 flow entries") {
                return Err(DataplaneError::Rejected {
                    where_: self.where_(),
                    stderr: stderr.trim().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Deletes the table if it exists.
    pub fn delete_table(&self) -> Result<(), DataplaneError> {
        self.run(&format!(
            "add table inet {TABLE_NAME}\ndelete table inet {TABLE_NAME}\n"
        ))
    }
}

/// What one [`Dataplane::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The transaction sent (empty when nothing changed).
    pub transaction: Transaction,
    /// Whether the table was replaced whole.
    pub full: bool,
    /// Operations sent (0 when nothing changed and `nft` did not run).
    pub operations: usize,
    /// What the operations do.
    pub stats: TxStats,
    /// Time spent in `nft`.
    pub duration: Duration,
}

/// The kernel's `table inet nftpolicy` in one network namespace, and what was last committed to it.
#[derive(Debug)]
pub struct Dataplane {
    runner: NftRunner,
    committed: Option<Ruleset>,
    needs_full: bool,
}

impl Dataplane {
    /// A dataplane that knows nothing of the kernel's state yet: the first apply replaces the table.
    pub fn new(runner: NftRunner) -> Self {
        Self {
            runner,
            committed: None,
            needs_full: true,
        }
    }

    /// A dataplane for a kernel that may already hold the table (an agent restart): the table is read
    /// back and the first apply sends only the difference, so no rule disappears in between. A table
    /// that cannot be read back exactly is replaced whole (atomically) by the first apply.
    pub fn from_kernel(runner: NftRunner) -> Result<Self, DataplaneError> {
        let mut dp = Self::new(runner);
        if let Some(json) = dp.runner.list_table_json()? {
            match policy_compiler::nft::json::parse_table(&json) {
                Ok(ruleset) => {
                    dp.committed = Some(ruleset);
                    dp.needs_full = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the existing table is not one nftpolicy wrote as is; the first sync replaces it whole");
                }
            }
        }
        Ok(dp)
    }

    /// Whether the kernel's table equals what was committed. `Ok(false)` also when the table is
    /// missing or holds something the model cannot express.
    pub fn kernel_matches(&self) -> Result<bool, DataplaneError> {
        let Some(committed) = &self.committed else {
            return Ok(true);
        };
        Ok(match self.runner.list_table_json()? {
            None => false,
            Some(json) => policy_compiler::nft::json::parse_table(&json)
                .map(|kernel| &kernel == committed)
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

    /// The runner.
    pub fn runner(&self) -> &NftRunner {
        &self.runner
    }

    /// The transaction `apply` would send for `desired`.
    pub fn plan(&self, desired: &Ruleset) -> (bool, Transaction) {
        match (&self.committed, self.needs_full) {
            (Some(committed), false) => (false, Transaction::diff(committed, desired)),
            _ => (true, Transaction::full(desired)),
        }
    }

    /// Makes the kernel hold `desired`, in one atomic transaction. On failure nothing changed in the
    /// kernel, the error carries nft's message, and the next apply replaces the table whole.
    pub fn apply(&mut self, desired: &Ruleset) -> Result<ApplyReport, DataplaneError> {
        let (full, tx) = self.plan(desired);
        if tx.is_empty() {
            return Ok(ApplyReport {
                transaction: tx,
                full,
                operations: 0,
                stats: TxStats::default(),
                duration: Duration::ZERO,
            });
        }
        let started = Instant::now();
        let result = self.runner.run(&tx.render());
        let duration = started.elapsed();
        match result {
            Ok(()) => {
                self.committed = Some(desired.clone());
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
