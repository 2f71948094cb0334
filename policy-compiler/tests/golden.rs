//! Golden rulesets: `policyc compile` of the demo and of a few upstream cases, checked in under
//! `fixtures/golden/` so that every change to the generated rules is reviewed in a diff.
//!
//! The files are reviewed snapshots; what the rules *mean* is tested elsewhere (conformance, demo and
//! property tests run the same rulesets through the interpreter, and `nft_check` loads them into the
//! kernel's checker). Regenerate after an intended change with `NFTPOLICY_UPDATE_GOLDEN=1 cargo test`.

mod common;

use std::path::PathBuf;

use common::golden_rulesets;

#[test]
fn compiled_rulesets_match_the_reviewed_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/golden");
    let update = std::env::var("NFTPOLICY_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, text) in golden_rulesets() {
        let path = dir.join(format!("{name}.nft"));
        if update {
            std::fs::create_dir_all(&dir).expect("create golden dir");
            std::fs::write(&path, &text).expect("write golden file");
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with NFTPOLICY_UPDATE_GOLDEN=1",
                path.display()
            )
        });
        if golden != text {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "generated rulesets differ from the golden files (review with `git diff` after \
         NFTPOLICY_UPDATE_GOLDEN=1 cargo test --test golden): {stale:?}"
    );
}
