//! Entering network namespaces from threads.
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread. Sockets created there stay in that namespace
//! for their whole life, whichever thread uses them; processes spawned from the thread start there; and
//! `/proc/sys/net` shows the thread's namespace. So the lab never changes the namespace of a thread it
//! did not spawn for the purpose.

use std::fs::File;
use std::os::fd::AsRawFd;

use super::cmd::NETNS_DIR;
use super::LabError;

/// Opens `/run/netns/NAME`, to enter it later.
pub(super) fn open(name: &str) -> Result<File, LabError> {
    File::open(format!("{NETNS_DIR}/{name}")).map_err(|source| LabError::Setns {
        netns: name.to_string(),
        source,
    })
}

/// Moves the calling thread into the namespace `file` (named `name`). Only for threads the lab spawns
/// and ends.
pub(super) fn enter(file: &File, name: &str) -> Result<(), LabError> {
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

/// Runs `f` on a new thread inside the namespace `file`, and returns what it returns.
pub(super) fn run_in<R: Send>(
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
