//! Every ruleset shape the compiler emits loads into the kernel's nftables checker (`nft -c -f -`):
//! the golden files, every step of every upstream case on every node, and generated clusters.
//! Needs root and `nft`; see `common::kernel_available`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

fn nft_check(label: &str, text: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{label}: cannot run nft: {e}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| format!("{label}: no stdin"))?
        .write_all(text.as_bytes())
        .map_err(|e| format!("{label}: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{label}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{label}: nft rejected it:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn golden_files_load_with_nft_check() {
    if !common::kernel_available("golden_files_load_with_nft_check") {
        return;
    }
    let dir = common::fixtures().join("golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected the golden files in {}",
        dir.display()
    );
    let errors: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).expect("read golden");
            nft_check(&f.display().to_string(), &text).err()
        })
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn every_conformance_and_generated_ruleset_loads_with_nft_check() {
    if !common::kernel_available("every_conformance_and_generated_ruleset_loads_with_nft_check") {
        return;
    }
    let rulesets: Vec<(String, String)> = common::conformance_rulesets()
        .into_iter()
        .chain(common::generated_rulesets(0..40))
        .map(|(label, r)| (label, r.render()))
        .collect();
    let errors: Vec<String> = rulesets
        .iter()
        .filter_map(|(label, text)| nft_check(label, text).err())
        .collect();
    eprintln!(
        "nft -c accepted {} of {} rulesets",
        rulesets.len() - errors.len(),
        rulesets.len()
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Two local pods on one address (a pod's address taken over while the API still shows the pod
/// that had it) under ClusterNetworkPolicies: the tiers' decision maps hold one element per address
/// and port range, so the kernel loads the ruleset (overlapping interval elements it refuses).
#[test]
fn local_pods_sharing_an_address_under_tiers_load_with_nft_check() {
    use policy_compiler::generate::cluster_policies::with_cluster_policies;
    use policy_compiler::generate::{cluster, Shape};
    use policy_compiler::plan::compile_all;
    if !common::kernel_available("local_pods_sharing_an_address_under_tiers_load_with_nft_check") {
        return;
    }
    let shape = Shape {
        pods: 12,
        policies: 4,
        nodes: 2,
    };
    let mut shared = 0;
    let mut errors = Vec::new();
    for seed in 0..30 {
        let mut c = with_cluster_policies(&cluster(seed, shape), seed, 3, 3);
        // Each node's second participating pod (by name) takes its first one's address.
        for node in ["n0", "n1"] {
            let local: Vec<_> = c
                .participating_pods()
                .filter(|p| p.node.as_deref() == Some(node))
                .map(|p| (p.id.clone(), p.ips.clone()))
                .collect();
            if let [(_, first), (second, _), ..] = local.as_slice() {
                if let Some(p) = c.pod_mut(second) {
                    p.ips = first.clone();
                    shared += 1;
                }
            }
        }
        for (node, r) in compile_all(&c) {
            if let Err(e) = nft_check(&format!("seed {seed} {node}"), &r.render()) {
                errors.push(e);
            }
        }
    }
    assert!(
        shared >= 30,
        "only {shared} nodes had two pods to share an address"
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
