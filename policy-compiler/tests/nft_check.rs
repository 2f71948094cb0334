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
