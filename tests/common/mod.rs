//! Helpers shared by the root package's integration tests.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether this process may use the kernel (root with `nft` and `ip`). When it may not, prints a
/// loud note and returns false, or panics under `NFTPOLICY_REQUIRE_LAB=1` (as CI runs).
pub fn kernel_available(test: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let tools = ["nft", "ip"].iter().all(|t| {
        Command::new(t)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if root && tools {
        return true;
    }
    let why = if root {
        "`nft` or `ip` is missing (apt-get install nftables iproute2)"
    } else {
        "it needs root"
    };
    if std::env::var("NFTPOLICY_REQUIRE_LAB").is_ok_and(|v| v == "1") {
        panic!("{test}: {why}, and NFTPOLICY_REQUIRE_LAB=1 forbids skipping");
    }
    eprintln!("\n!!!!!!!! SKIPPED {test}: {why} !!!!!!!!\n");
    false
}

/// A network namespace that exists for the guard's lifetime, removed on drop (also when a test
/// panics).
pub struct Netns(pub String);

impl Netns {
    /// Creates a uniquely named namespace.
    pub fn create() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "nptest{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(status.success(), "ip netns add {name} failed");
        Self(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
