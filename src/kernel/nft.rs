//! The real kernel: `nft` and `conntrack`, run in the agent's network namespace or in a named one
//! (`ip netns exec NAME ...`).

use std::net::IpAddr;

use policy_compiler::nft::transaction::Transaction;
use policy_compiler::nft::TABLE_NAME;

use super::{Kernel, KernelError};
use crate::process::{self, ProcessError};

/// Runs `nft` and `conntrack`, in the current network namespace or in a named one.
#[derive(Debug, Clone, Default)]
pub struct NftKernel {
    netns: Option<String>,
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
        Self { netns: None }
    }

    /// The kernel as seen from a named network namespace (`/run/netns/NAME`).
    pub fn in_netns(name: impl Into<String>) -> Self {
        Self {
            netns: Some(name.into()),
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
        self.run_script(&transaction.render())
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
