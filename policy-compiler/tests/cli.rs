//! `policyc` as a user runs it: exit codes, stdout/stderr discipline, determinism and formats.

mod common;

use common::{policyc, text};

use std::path::PathBuf;

fn demo() -> String {
    common::fixtures().join("demo").display().to_string()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("policyc-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn compile_is_deterministic_and_equals_the_golden_file() {
    let first = policyc(&["compile", &demo(), "--node", "node-1"], None);
    assert!(first.status.success(), "{}", text(&first.stderr));
    // The same objects given file by file in another order give the same bytes.
    let dir = common::fixtures().join("demo");
    let files: Vec<String> = [
        "services.yaml",
        "policies.yaml",
        "pods.yaml",
        "namespaces.yaml",
    ]
    .iter()
    .map(|f| dir.join(f).display().to_string())
    .collect();
    let mut args = vec!["compile", "--node", "node-1"];
    args.extend(files.iter().map(String::as_str));
    let reordered = policyc(&args, None);
    assert_eq!(first.stdout, reordered.stdout);
    let golden = std::fs::read(common::fixtures().join("golden/demo-node-1.nft")).expect("golden");
    assert_eq!(first.stdout, golden);
    assert!(
        text(&first.stderr).contains(
            "services.yaml: skipped 5 objects of kinds that play no part in policy (Service)"
        ),
        "{}",
        text(&first.stderr)
    );
}

#[test]
fn bad_input_exits_2_names_the_place_and_prints_nothing_on_stdout() {
    let dir = temp_dir("bad");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: x}\n\
         spec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/4]}}]}]\n",
    )
    .expect("write");
    let out = policyc(
        &[
            "compile",
            &demo(),
            bad.to_str().expect("utf-8"),
            "--node",
            "node-1",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    for fragment in [
        "bad.yaml: document 2",
        "NetworkPolicy x/web",
        "spec.ingress[0].from[0].ipBlock.except[0]",
        "strict subset",
    ] {
        assert!(err.contains(fragment), "{err} lacks {fragment}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn duplicates_across_files_name_both_places() {
    let dir = temp_dir("dup");
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: dup}\n";
    std::fs::write(dir.join("a.yaml"), ns).expect("write");
    std::fs::write(dir.join("b.yaml"), ns).expect("write");
    let out = policyc(
        &["matrix", dir.to_str().expect("utf-8"), "--ports", "80/TCP"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("Namespace dup is defined twice"), "{err}");
    assert!(
        err.contains("a.yaml: document 1") && err.contains("b.yaml: document 1"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reads_standard_input_and_writes_one_file_per_node() {
    let pods = std::fs::read_to_string(common::fixtures().join("demo/pods.yaml")).expect("pods");
    let out = policyc(&["compile", "-"], Some(&pods));
    assert_eq!(
        out.status.code(),
        Some(2),
        "two nodes need --node or --out-dir"
    );
    assert!(
        text(&out.stderr).contains("--out-dir"),
        "{}",
        text(&out.stderr)
    );

    let dir = temp_dir("out");
    let out = policyc(
        &[
            "compile",
            &demo(),
            "--out-dir",
            dir.to_str().expect("utf-8"),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for node in ["node-1", "node-2"] {
        let written = std::fs::read(dir.join(format!("{node}.nft"))).expect("node file");
        let golden = std::fs::read(common::fixtures().join(format!("golden/demo-{node}.nft")))
            .expect("golden");
        assert_eq!(written, golden, "{node}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn matrix_json_has_the_documented_schema() {
    let out = policyc(
        &[
            "matrix",
            &demo(),
            "--ports",
            "9090/TCP,53/UDP",
            "-o",
            "json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let pods = v["pods"].as_array().expect("pods");
    assert_eq!(pods.len(), 9, "10 pods minus the host-network one");
    assert_eq!(v["ports"], serde_json::json!(["9090/TCP", "53/UDP"]));
    let flows = v["flows"].as_array().expect("flows");
    // Dual-stack cluster: every flow carries its family; IPv6 exists only between the two v6 pods.
    assert_eq!(flows.len(), 2 * (9 * 9 + 2 * 2));
    let find = |from: &str, to: &str, port: u64, family: u64| {
        flows
            .iter()
            .find(|f| {
                f["from"] == from && f["to"] == to && f["port"] == port && f["family"] == family
            })
            .unwrap_or_else(|| panic!("no flow {from} -> {to} {port} v{family}"))
    };
    assert_eq!(
        find("frontend/web-0", "backend/api-0", 9090, 4)["allowed"],
        true
    );
    assert_eq!(
        find("frontend/web-0", "backend/api-0", 9090, 4)["protocol"],
        "TCP"
    );
    assert_eq!(
        find("frontend/web-0", "backend/api-1", 9090, 6)["allowed"],
        true
    );
    assert_eq!(
        find("backend/api-0", "frontend/web-0", 9090, 4)["allowed"],
        false
    );
    assert_eq!(
        find("db/redis-0", "kube-system/coredns-0", 53, 4)["allowed"],
        true
    );
    assert_eq!(
        find("db/redis-0", "db/redis-0", 9090, 4)["allowed"],
        true,
        "loopback"
    );

    let table = policyc(&["matrix", &demo(), "--ports", "9090/TCP"], None);
    let table = text(&table.stdout);
    assert!(
        table.contains("9090/TCP IPv4") && table.contains("9090/TCP IPv6"),
        "{table}"
    );
}

#[test]
fn explain_names_the_policies_and_rules() {
    let out = policyc(
        &[
            "explain",
            &demo(),
            "--from",
            "backend/worker-0",
            "--to",
            "db/postgres-0",
            "--port",
            "5432/TCP",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(
        t.starts_with(
            "backend/worker-0 (10.244.2.21) -> db/postgres-0 (10.244.1.30) 5432/TCP: DENIED"
        ),
        "{t}"
    );
    assert!(
        t.contains("egress: denied: backend/worker-0 is isolated for egress by"),
        "{t}"
    );
    assert!(t.contains("ingress: allowed"), "{t}");
    assert!(
        t.contains("db/postgres-allow-ingress ingress[0]: allows it"),
        "{t}"
    );
    assert!(t.contains("nftables on node-2: drop"), "{t}");

    let out = policyc(
        &[
            "explain",
            &demo(),
            "--from",
            "backend/api-0",
            "--to",
            "203.0.113.10",
            "--port",
            "443/TCP",
            "-o",
            "json",
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["allowed"], true);
    assert_eq!(
        v["egress"]["allowedBy"],
        serde_json::json!(["backend/api-allow-egress egress[2]"])
    );
    assert_eq!(v["ingress"]["pod"], serde_json::Value::Null);

    let out = policyc(
        &[
            "explain",
            &demo(),
            "--from",
            "nope/x",
            "--to",
            "1.2.3.4",
            "--port",
            "80",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--from nope/x: no such pod"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn generate_prints_valid_deterministic_manifests() {
    let a = policyc(&["generate", "--size", "small", "--seed", "7"], None);
    assert!(a.status.success(), "{}", text(&a.stderr));
    let b = policyc(&["generate", "--size", "small", "--seed", "7"], None);
    assert_eq!(a.stdout, b.stdout, "same seed, same cluster");
    let c = policyc(&["generate", "--size", "small", "--seed", "8"], None);
    assert_ne!(a.stdout, c.stdout, "another seed, another cluster");
    let compiled = policyc(
        &["compile", "-", "--node", "node-0"],
        Some(&text(&a.stdout)),
    );
    assert!(compiled.status.success(), "{}", text(&compiled.stderr));
    let rules = text(&compiled.stdout);
    assert!(rules.contains("table inet nftpolicy"), "{rules}");
    let bad = policyc(&["generate", "--size", "huge"], None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("use small, medium or large"));
}
