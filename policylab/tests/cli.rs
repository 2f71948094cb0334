//! `policylab conformance` tells the two suites apart by their case files, runs the one it finds,
//! and prints per case and in total what it measured.

use std::path::PathBuf;
use std::process::{Command, Output};

use policylab::lab::kernel_available;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn policylab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_policylab"))
        .args(args)
        .output()
        .expect("run policylab")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_directory_of_neither_suite_is_an_error_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("policylab-cli-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("cases")).expect("dir");
    std::fs::write(dir.join("cases/01-x.yaml"), "name: x\nsteps: []\n").expect("write");
    let out = policylab(&["conformance", &dir.display().to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("01-x.yaml has neither case format"),
        "{stderr}"
    );
    assert!(stderr.contains("pass --suite"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn conformance_runs_the_suite_its_directory_holds() {
    if !kernel_available("conformance_runs_the_suite_its_directory_holds") {
        return;
    }
    let cnp = fixtures().join("network-policy-api").display().to_string();
    let out = policylab(&["conformance", &cnp, "--case", "admin-egress-node-peers"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    // Case 02: 5 probes in 4 steps, 4 of them TCP or UDP, all to the client's own node, and one
    // SCTP; each in both families.
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.contains("admin-egress-node-peers"))
        .unwrap_or_else(|| panic!("no row: {stdout}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..7],
        ["PASS", "admin-egress-node-peers", "4", "4", "4", "8", "2"]
    );
    assert!(
        stdout.contains(
            "conformance: 1 of 1 cases passed, 0 failed; 4 steps; 8 probes measured (IPv4 4, \
             IPv6 4; 8 to the source's own node), 2 SCTP probes evaluated only;"
        ),
        "{stdout}"
    );

    // The same command, on the upstream e2e suite.
    let e2e = fixtures().join("upstream-e2e").display().to_string();
    let out = policylab(&["conformance", &e2e, "--case", "01-default-deny-ingress"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("conformance: 1 passed, 0 failed, 0 skipped"),
        "{stdout}"
    );
}
