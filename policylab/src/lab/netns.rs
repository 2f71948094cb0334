//! Network namespaces: entering them from threads, and one of its own for a test or a bench
//! ([`Netns`]).
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread. Sockets created there stay in that namespace
//! for their whole life, whichever thread uses them; processes spawned from the thread start there; and
//! `/proc/sys/net` shows the thread's namespace. So the lab never changes the namespace of a thread it
//! did not spawn for the purpose, and neither may callers of [`enter`].

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use super::cmd::{self, NETNS_DIR};
use super::{install_signal_handler, live_labs, LabError, LAB_COUNTER, NETNS_PREFIX};

/// A network namespace of its own, outside any lab, removed on drop (also when a test panics): for
/// tests and benches that need a kernel to themselves. It is named `nplab<pid>x<n>-<label>`, like a
/// lab's namespaces, so the lab's Ctrl-C handler and `policylab clean` remove it too.
#[derive(Debug)]
pub struct Netns {
    name: String,
    prefix: String,
}

impl Netns {
    /// Creates the namespace. Needs root (see [`super::preflight`]).
    pub fn create(label: &str) -> Result<Netns, LabError> {
        let prefix = format!(
            "{NETNS_PREFIX}{}x{}-",
            std::process::id(),
            LAB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        install_signal_handler();
        live_labs().push(prefix.clone());
        let netns = Netns {
            name: format!("{prefix}{label}"),
            prefix,
        };
        // On error, `netns` is dropped, which removes whatever was made.
        cmd::add_netns(&[netns.name.as_str()])?;
        Ok(netns)
    }

    /// Its name, for `ip netns exec NAME` and [`nftpolicy::kernel::NftKernel::in_netns`].
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = cmd::delete_netns_with_prefix(&self.prefix) {
            tracing::error!(netns = %self.name, error = %e, "cannot remove the namespace");
        }
        live_labs().retain(|p| p != &self.prefix);
    }
}

/// Opens `/run/netns/NAME`, to enter it later.
pub fn open(name: &str) -> Result<File, LabError> {
    File::open(format!("{NETNS_DIR}/{name}")).map_err(|source| LabError::Setns {
        netns: name.to_string(),
        source,
    })
}

/// Moves the calling thread into the namespace `file` (named `name`, for errors). Only for threads
/// spawned for the purpose, which end with it.
pub fn enter(file: &File, name: &str) -> Result<(), LabError> {
    // SAFETY: setns only reads the descriptor, which `file` keeps open for the call, and changes the
    // calling thread's network namespace, which the caller owns (see the module doc).
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(LabError::Setns {
            netns: name.to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `f` on a new thread inside the namespace `file` (named `name`), and returns what it returns.
pub fn run_in<R: Send>(
    file: &File,
    name: &str,
    f: impl FnOnce() -> R + Send,
) -> Result<R, LabError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(file, name)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(LabError::Internal(format!("a thread in {name} panicked"))))
    })
}

/// Sysctls to write in one namespace: the namespace, its name, and `(key, value)`s.
pub(super) type SysctlJob<'a> = (&'a File, &'a str, &'a [(&'a str, &'a str)]);

/// Writes sysctls (`net/ipv4/ip_forward` = `1`, ...) in each namespace, from one thread that enters
/// them in turn.
pub(super) fn write_sysctls(jobs: &[SysctlJob<'_>]) -> Result<(), LabError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            for (file, name, sysctls) in jobs {
                enter(file, name)?;
                for (key, value) in *sysctls {
                    std::fs::write(format!("/proc/sys/{key}"), value).map_err(|e| {
                        LabError::io(
                            format!("cannot set sysctl {key}={value} in netns {name}"),
                            e,
                        )
                    })?;
                }
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(LabError::Internal("the sysctl thread panicked".to_string())))
    })
}
