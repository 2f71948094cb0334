//! The `policyd` binary before its first sync (root): with `--fail-closed` it holds new forwarded
//! connections until the API answers; without it, it changes nothing. Either way it is alive but not
//! ready, and what it installed stays in force when it exits.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get, kernel_available, netns};
use nftpolicy::kernel::{Kernel, NftKernel};

struct Policyd(Child);

impl Drop for Policyd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The status code of `GET path`.
fn status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path).map(|(code, _)| code)
}

/// Starts policyd against an API server that does not answer.
fn start(netns: &str, port: u16, fail_closed: bool, dir: &std::path::Path) -> Policyd {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"http://127.0.0.1:9\"}}]\n\
         users: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .expect("kubeconfig");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_policyd"));
    cmd.args([
        "--node-name",
        "node-1",
        "--source",
        "kube",
        "--netns",
        netns,
    ])
    .args(["--listen", &format!("127.0.0.1:{port}")])
    .env("KUBECONFIG", &kubeconfig)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if fail_closed {
        cmd.arg("--fail-closed");
    }
    let p = Policyd(cmd.spawn().expect("start policyd"));
    let started = Instant::now();
    while status(port, "/healthz") != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "policyd did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

#[test]
fn before_the_first_sync_fail_closed_holds_and_the_default_changes_nothing() {
    if !kernel_available("before_the_first_sync_fail_closed_holds_and_the_default_changes_nothing")
    {
        return;
    }
    let dir = std::env::temp_dir().join(format!("policyd-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");

    // Default: nothing installed, alive, not ready.
    let ns = netns("policyd");
    let kernel = NftKernel::in_netns(ns.name());
    let port = free_port();
    let agent = start(ns.name(), port, false, &dir);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(port, "/readyz"), Some(503), "no sync yet: not ready");
    assert!(
        kernel.list_table().expect("list").is_none(),
        "nothing installed"
    );
    drop(agent);

    // --fail-closed: the fail-closed table is in place, and stays after the agent exits.
    let ns = netns("policyd");
    let kernel = NftKernel::in_netns(ns.name());
    let port = free_port();
    let agent = start(ns.name(), port, true, &dir);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(port, "/readyz"), Some(503));
    let installed = || {
        let json = kernel.list_table().expect("list").expect("a table");
        policy_compiler::nft::json::parse_table(&json).expect("parse")
    };
    assert_eq!(installed(), policy_compiler::plan::fail_closed_ruleset());
    drop(agent);
    assert_eq!(
        installed(),
        policy_compiler::plan::fail_closed_ruleset(),
        "fail-static on exit"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
