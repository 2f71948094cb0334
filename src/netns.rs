//! Named network namespaces (`/run/netns/NAME`), entered from a thread spawned for the purpose.
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread, and a socket opened there belongs to that
//! namespace for its whole life, whichever thread uses it. So a socket for another namespace is
//! opened by [`run_in`] on a thread of its own, which enters the namespace, runs the opening code,
//! and ends: no other thread of the agent ever changes namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where `ip netns` keeps the namespace named `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Runs `f` on a new thread inside the network namespace at `netns` and returns what it returns;
/// an error when the namespace cannot be opened or entered (or the thread panicked).
pub fn run_in<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let file = File::open(netns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns only reads the descriptor, which `file` keeps open for the call, and
            // moves the calling thread, which was spawned for this and ends right after `f`, into
            // the namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the thread in the namespace panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_an_error_and_runs_nothing() {
        let mut ran = false;
        let result = run_in(&path("nftpolicy-no-such-namespace"), || ran = true);
        assert_eq!(
            result.map_err(|e| e.kind()),
            Err(io::ErrorKind::NotFound),
            "no such namespace"
        );
        assert!(!ran);
    }
}
