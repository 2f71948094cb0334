//! `policyc diff`: the hand-checked outputs of `fixtures/diff/`, options in every position, exit
//! statuses; and, on generated clusters with random edits, that the diff says what comparing two
//! `connections` runs says.

mod common;

use common::{policyc, text};

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Output;

use policy_compiler::analysis::connectivity::{ConnSet, Connectivity, Party};
use policy_compiler::cidr::{to_u128, Family};
use policy_compiler::diff::{diff, ChangeKind, Diff, Version};
use policy_compiler::generate::{cluster, mutate, Shape};
use policy_compiler::workload::PodCidrs;
use policy_compiler::ClusterState;
use proptest::prelude::*;

fn fixture(path: &str) -> String {
    common::fixtures().join(path).display().to_string()
}

fn expected(name: &str) -> String {
    std::fs::read_to_string(common::fixtures().join("diff/expected").join(name)).expect("golden")
}

const CIDR: &str = "10.244.0.0/16";

/// `diff --pod-cidr CIDR <extra> NAMESPACES BASE -- NAMESPACES <new>`: the fixture's base against
/// the paths `new` (with the fixture's namespaces).
fn diff_from_base(extra: &[&str], new: &[&str]) -> Output {
    let (ns, base) = (fixture("diff/namespaces.yaml"), fixture("diff/base"));
    let mut args = vec!["diff", "--pod-cidr", CIDR];
    args.extend(extra);
    args.extend([ns.as_str(), base.as_str(), "--", ns.as_str()]);
    args.extend(new);
    policyc(&args, None)
}

/// `diff --pod-cidr CIDR <extra> OLD -- NEW` of the fixture's two versions.
fn fixture_diff(extra: &[&str]) -> Output {
    diff_from_base(extra, &[&fixture("diff/changed")])
}

fn stdout_of(out: &Output, status: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(status),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn each_format_is_the_hand_checked_output() {
    assert_eq!(stdout_of(&fixture_diff(&[]), 0), expected("diff.txt"));
    assert_eq!(
        stdout_of(&fixture_diff(&["-o", "markdown"]), 0),
        expected("diff.md")
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout_of(&fixture_diff(&["-o", "json"]), 0)).expect("json");
    let golden: serde_json::Value = serde_json::from_str(&expected("diff.json")).expect("golden");
    assert_eq!(json, golden);
}

#[test]
fn with_a_node_the_transaction_follows() {
    let out = stdout_of(&fixture_diff(&["--node", "n1"]), 0);
    assert_eq!(out, expected("diff-node-n1.txt"));
    let transaction = out
        .split_once("\nnft transaction on node n1:\n")
        .expect("transaction")
        .1;
    let json: serde_json::Value = serde_json::from_str(&stdout_of(
        &fixture_diff(&["--node", "n1", "-o", "json"]),
        0,
    ))
    .expect("json");
    assert_eq!(json["transaction"], transaction);
    let md = stdout_of(&fixture_diff(&["--node", "n1", "-o", "markdown"]), 0);
    assert_eq!(
        md,
        format!(
            "{}\n<details><summary>nft transaction on node <code>n1</code></summary>\n\n```\n{transaction}```\n\n</details>\n",
            expected("diff.md")
        )
    );
}

#[test]
fn options_work_before_between_and_after_the_old_paths() {
    let (ns, base, changed) = (
        fixture("diff/namespaces.yaml"),
        fixture("diff/base"),
        fixture("diff/changed"),
    );
    let golden: serde_json::Value = serde_json::from_str(&expected("diff.json")).expect("golden");
    // The old side, options among its paths; the new side is `-- NAMESPACES CHANGED` each time.
    let old_sides: [Vec<&str>; 4] = [
        // As the issue writes it.
        vec!["--pod-cidr", CIDR, "-o", "json", &ns, &base],
        vec![&ns, &base, "--pod-cidr", CIDR, "-o", "json"],
        vec!["-o", "json", &ns, "--pod-cidr", CIDR, &base],
        vec![&ns, "--output=json", &base, "--pod-cidr=10.244.0.0/16"],
    ];
    for old_side in old_sides {
        let mut args = vec!["diff"];
        args.extend(old_side);
        args.extend(["--", &ns, &changed]);
        let out = policyc(&args, None);
        let json: serde_json::Value = serde_json::from_str(&stdout_of(&out, 0)).expect("json");
        assert_eq!(json, golden, "{args:?}");
    }
    // After `--` everything is a path of the new version: an option there is not read as one.
    let out = policyc(
        &["diff", &ns, &base, "--", &ns, &changed, "-o", "json"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("-o: not a file; options go before `--`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn fail_on_exits_1_only_for_the_kinds_asked() {
    let (ns, base) = (fixture("diff/namespaces.yaml"), fixture("diff/base"));
    let (base_workloads, base_policies) = (
        fixture("diff/base/workloads.yaml"),
        fixture("diff/base/policies.yaml"),
    );
    let (changed_workloads, changed_policies) = (
        fixture("diff/changed/workloads.yaml"),
        fixture("diff/changed/policies.yaml"),
    );
    // The workloads change, the policies do not: a pair added and one removed, none changed.
    let workloads_only =
        |fail_on: &[&str]| diff_from_base(fail_on, &[&changed_workloads, &base_policies]);
    let out = workloads_only(&[]);
    assert_eq!(
        stdout_of(&out, 0),
        "added: ops/monitor[Deployment] => shop/worker[Deployment] : TCP 9100 (by workload shop/worker[Deployment])\n\
         removed: ops/monitor[Deployment] => shop/legacy[Deployment] : TCP 9100 (by workload shop/legacy[Deployment])\n\
         workload added: shop/worker[Deployment]\n\
         workload removed: shop/legacy[Deployment]\n"
    );
    for (fail_on, status) in [
        (&["--fail-on", "changed"][..], 0),
        (&["--fail-on", "added"][..], 1),
        (&["--fail-on", "removed"][..], 1),
        (&["--fail-on", "any"][..], 1),
        (&["--fail-on", "changed,removed"][..], 1),
        (&["--fail-on", "changed", "--fail-on", "added"][..], 1),
    ] {
        let out = workloads_only(fail_on);
        assert_eq!(out.status.code(), Some(status), "{fail_on:?}");
        // The report is printed either way.
        assert!(text(&out.stdout).starts_with("added: "), "{fail_on:?}");
    }
    // A cluster as it runs against the policies of a branch: only the policies change.
    let branch = |fail_on: &[&str]| diff_from_base(fail_on, &[&base_workloads, &changed_policies]);
    assert_eq!(
        stdout_of(&branch(&[]), 0),
        "added: ops/monitor[Deployment] => 198.51.100.0-198.51.100.255 : TCP 443 (by ops/monitor-egress-partners)\n\
         removed: 192.0.2.128-192.0.2.255 => shop/web[Deployment] : TCP 8080 (by shop/web-ingress)\n\
         changed: shop/web[Deployment] => shop/api[Deployment] : TCP 9090 -> TCP 9090-9091 (by shop/api-ingress, shop/web-egress)\n"
    );
    assert_eq!(branch(&["--fail-on", "changed"]).status.code(), Some(1));
    // Against itself nothing fails.
    let out = policyc(
        &[
            "diff",
            "--fail-on",
            "added,removed,changed,any",
            &ns,
            &base,
            "--",
            &ns,
            &base,
        ],
        None,
    );
    assert_eq!(stdout_of(&out, 0), "no connectivity changes\n");
}

#[test]
fn a_version_against_itself_is_empty_in_every_format() {
    let demo = fixture("demo");
    for extra in [&[][..], &["--pod-cidr", CIDR][..]] {
        let mut args = vec!["diff", "--fail-on", "any"];
        args.extend(extra);
        args.extend([demo.as_str(), "--", &demo]);
        assert_eq!(
            stdout_of(&policyc(&args, None), 0),
            "no connectivity changes\n"
        );
    }
    let out = policyc(&["diff", "-o", "json", &demo, "--", &demo], None);
    let json: serde_json::Value = serde_json::from_str(&stdout_of(&out, 0)).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"added": [], "removed": [], "changed": [], "workloads_added": [],
                           "workloads_removed": []})
    );
    let out = policyc(&["diff", "-o", "markdown", &demo, "--", &demo], None);
    assert_eq!(
        stdout_of(&out, 0),
        "### Connectivity changes\n\nNo change in who can reach whom.\n"
    );
    // The same manifests from standard input on one side.
    let pods = std::fs::read_to_string(common::fixtures().join("demo/pods.yaml")).expect("pods");
    let (ns, policies) = (
        fixture("demo/namespaces.yaml"),
        fixture("demo/policies.yaml"),
    );
    let out = policyc(&["diff", &ns, &policies, "-", "--", &demo], Some(&pods));
    assert_eq!(stdout_of(&out, 0), "no connectivity changes\n");
}

#[test]
fn invalid_input_on_either_side_exits_2_with_nothing_on_stdout() {
    let dir = std::env::temp_dir().join(format!("policyc-diff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n\
         spec: {podSelector: {}, ingress: [{ports: [{port: 0}]}]}\n",
    )
    .expect("write");
    let bad = bad.display().to_string();
    let base = fixture("diff/base");
    for args in [
        vec!["diff", &bad, "--", &base],
        vec!["diff", &base, "--", &bad],
        vec!["diff", "--fail-on", "any", "-o", "json", &base, "--", &bad],
    ] {
        let out = policyc(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains("bad.yaml: document 1"), "{err}");
        assert!(err.contains("NetworkPolicy x/p"), "{err}");
    }
    let out = policyc(&["diff", "-", "--", "-"], Some(""));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("standard input (-) can be read by one side only"));
    // Both sides are required.
    let out = policyc(&["diff", &base], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

// The property: the diff says what comparing two `connections` runs says.

/// A party's families, from its pods' addresses (alike for all of a party's pods).
fn families(c: &ClusterState, conn: &Connectivity, party: &Party) -> Vec<Family> {
    match party {
        Party::External { first, .. } => vec![Family::of(first)],
        Party::Node(n) => {
            let mut families: Vec<Family> = n.addresses.iter().map(Family::of).collect();
            families.sort();
            families.dedup();
            families
        }
        Party::Workload(_) => {
            let Some(pod) = conn.members(party).first().and_then(|id| c.pod(id)) else {
                return Vec::new();
            };
            [Family::V4, Family::V6]
                .into_iter()
                .filter(|f| pod.ip(*f).is_some())
                .collect()
        }
    }
}

/// Workload-to-workload connections per (from, to, family), `None` entries expanded to the
/// families the pair shares.
fn per_family(
    c: &ClusterState,
    conn: &Connectivity,
) -> BTreeMap<(String, String, Family), ConnSet> {
    let mut out = BTreeMap::new();
    for k in conn.connections() {
        if !matches!((k.from, k.to), (Party::Workload(_), Party::Workload(_))) {
            continue;
        }
        let shared: Vec<Family> = match k.family {
            Some(f) => vec![f],
            None => {
                let theirs = families(c, conn, k.to);
                families(c, conn, k.from)
                    .into_iter()
                    .filter(|f| theirs.contains(f))
                    .collect()
            }
        };
        for f in shared {
            out.insert((k.from.to_string(), k.to.to_string(), f), k.allowed.clone());
        }
    }
    out
}

type Key = (String, String, Family, ConnSet, ConnSet);

/// The workload pairs the diff lists, per family.
fn diff_per_family(
    d: &Diff,
    shared: impl Fn(&str, &str) -> Vec<Family>,
) -> (BTreeSet<Key>, Vec<String>) {
    let mut out = BTreeSet::new();
    let mut misfiled = Vec::new();
    for kind in [ChangeKind::Added, ChangeKind::Removed, ChangeKind::Changed] {
        for ch in d.of_kind(kind) {
            if ch.kind() != kind {
                misfiled.push(format!("{kind:?}: {ch:?}"));
            }
            if !matches!((&ch.from, &ch.to), (Party::Workload(_), Party::Workload(_))) {
                continue;
            }
            let (from, to) = (ch.from.to_string(), ch.to.to_string());
            let fams = match ch.family {
                Some(f) => vec![f],
                None => shared(&from, &to),
            };
            for f in fams {
                out.insert((
                    from.clone(),
                    to.clone(),
                    f,
                    ch.before.clone(),
                    ch.after.clone(),
                ));
            }
        }
    }
    (out, misfiled)
}

/// What is allowed between a workload and the external range of `conn` holding `ip`.
fn external(conn: &Connectivity, workload: &str, ip: IpAddr, outbound: bool) -> ConnSet {
    let n = to_u128(&ip);
    let Some(range) = conn.parties().iter().find(|p| match p {
        Party::External { first, last } => {
            Family::of(first) == Family::of(&ip) && to_u128(first) <= n && n <= to_u128(last)
        }
        Party::Workload(_) | Party::Node(_) => false,
    }) else {
        return ConnSet::none();
    };
    conn.connections()
        .find(|k| {
            let (w, r) = if outbound {
                (k.from, k.to)
            } else {
                (k.to, k.from)
            };
            w.to_string() == workload && r == range
        })
        .map(|k| k.allowed.clone())
        .unwrap_or_default()
}

fn check_agreement(old: &ClusterState, new: &ClusterState) -> Result<(), TestCaseError> {
    let cidrs = PodCidrs::parse(&["10.0.0.0/16", "fd00::/48"]).expect("cidrs");
    let (a, b) = (
        Connectivity::compute(old, &cidrs),
        Connectivity::compute(new, &cidrs),
    );
    let d = diff(Version::new(old, &a), Version::new(new, &b));
    // Between workloads, family by family.
    let (before, after) = (per_family(old, &a), per_family(new, &b));
    let mut expected: BTreeSet<Key> = BTreeSet::new();
    for key in before.keys().chain(after.keys()) {
        let (x, y) = (
            before.get(key).cloned().unwrap_or_default(),
            after.get(key).cloned().unwrap_or_default(),
        );
        if x != y {
            expected.insert((key.0.clone(), key.1.clone(), key.2, x, y));
        }
    }
    let shared = |from: &str, to: &str| -> Vec<Family> {
        let mut out = BTreeSet::new();
        for (c, conn) in [(old, &a), (new, &b)] {
            let (Some(x), Some(y)) = (conn.party(from), conn.party(to)) else {
                continue;
            };
            let theirs = families(c, conn, y);
            out.extend(
                families(c, conn, x)
                    .into_iter()
                    .filter(|f| theirs.contains(f)),
            );
        }
        out.into_iter().collect()
    };
    let (got, misfiled) = diff_per_family(&d, shared);
    prop_assert!(misfiled.is_empty(), "{misfiled:#?}");
    prop_assert_eq!(&got, &expected);
    // Every change has a cause.
    for ch in d.added.iter().chain(&d.removed).chain(&d.changed) {
        prop_assert!(
            !ch.policies.is_empty() || !ch.workloads.is_empty(),
            "no cause for {ch:?}"
        );
    }
    // Between workloads and external addresses: at every range boundary of either version.
    let workloads: BTreeSet<String> = a
        .parties()
        .iter()
        .chain(b.parties())
        .filter(|p| matches!(p, Party::Workload(_)))
        .map(ToString::to_string)
        .collect();
    let mut probes: BTreeSet<IpAddr> = BTreeSet::new();
    for p in a.parties().iter().chain(b.parties()) {
        if let Party::External { first, last } = p {
            probes.insert(*first);
            probes.insert(*last);
        }
    }
    let externals: Vec<(&policy_compiler::diff::Change, bool)> = d
        .added
        .iter()
        .chain(&d.removed)
        .chain(&d.changed)
        .filter_map(|ch| match (&ch.from, &ch.to) {
            (Party::Workload(_), Party::External { .. }) => Some((ch, true)),
            (Party::External { .. }, Party::Workload(_)) => Some((ch, false)),
            _ => None,
        })
        .collect();
    for ch in &externals {
        prop_assert_eq!(ch.0.family, None);
        // The ends of a listed range are probes too.
        let range = if ch.1 { &ch.0.to } else { &ch.0.from };
        if let Party::External { first, last } = range {
            probes.insert(*first);
            probes.insert(*last);
        }
    }
    for w in &workloads {
        for outbound in [true, false] {
            for ip in &probes {
                let (x, y) = (
                    external(&a, w, *ip, outbound),
                    external(&b, w, *ip, outbound),
                );
                let listed: Vec<&policy_compiler::diff::Change> = externals
                    .iter()
                    .filter(|(ch, out)| {
                        let (end, range) = if *out {
                            (&ch.from, &ch.to)
                        } else {
                            (&ch.to, &ch.from)
                        };
                        *out == outbound
                            && end.to_string() == *w
                            && match range {
                                Party::External { first, last } => {
                                    Family::of(first) == Family::of(ip)
                                        && to_u128(first) <= to_u128(ip)
                                        && to_u128(ip) <= to_u128(last)
                                }
                                Party::Workload(_) | Party::Node(_) => false,
                            }
                    })
                    .map(|(ch, _)| *ch)
                    .collect();
                if x == y {
                    prop_assert!(
                        listed.is_empty(),
                        "{w} {ip} outbound {outbound}: unchanged, yet {listed:#?}"
                    );
                } else {
                    prop_assert_eq!(
                        listed.len(),
                        1,
                        "{} {} outbound {}: {} -> {}",
                        w,
                        ip,
                        outbound,
                        &x,
                        &y
                    );
                    prop_assert_eq!(&listed[0].before, &x);
                    prop_assert_eq!(&listed[0].after, &y);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn diff_agrees_with_two_connections_runs(
        seed in any::<u64>(),
        pods in 2usize..9,
        policies in 0usize..5,
        edits in proptest::collection::vec(any::<u64>(), 1..4),
    ) {
        let old = cluster(seed, Shape { pods, policies, nodes: 2 });
        let mut new = old.clone();
        for e in &edits {
            new = mutate(&new, *e);
        }
        check_agreement(&old, &new)?;
        check_agreement(&new, &old)?;
    }

    #[test]
    fn diff_of_a_cluster_against_itself_is_empty(seed in any::<u64>(), pods in 2usize..9, policies in 0usize..5) {
        let c = cluster(seed, Shape { pods, policies, nodes: 2 });
        let cidrs = PodCidrs::parse(&["10.0.0.0/16", "fd00::/48"]).expect("cidrs");
        let conn = Connectivity::compute(&c, &cidrs);
        let version = Version::new(&c, &conn);
        let d = diff(version, version);
        prop_assert!(d.is_empty(), "{d:#?}");
    }
}
