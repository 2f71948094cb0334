//! The kernel lists back exactly what was loaded: every ruleset the compiler emits (the demo's nodes,
//! every step of every upstream case on every node, generated dual-stack clusters) and rulesets
//! built around decision maps, named counters and log rules (by hand, and generated), loaded with
//! `nft -f -` into a throwaway network namespace and listed with `nft -j list table inet nftpolicy`,
//! parses back with `nft::json::parse_table` to the ruleset that was loaded; and what nftpolicy
//! never writes is refused. Needs root and `nft`; see `common::kernel_available`.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use policy_compiler::cidr::{Cidr, Family};
use policy_compiler::generate::decisions;
use policy_compiler::input::{parse_sources, read_paths};
use policy_compiler::model::Protocol;
use policy_compiler::nft::json::{as_listed, canonical_listing, listing, parse_table, JsonError};
use policy_compiler::nft::{
    AddrField, BaseChain, Chain, Counter, Decision, DecisionKey, DecisionMap, DecisionVerdict,
    Hook, Match, Rule, Ruleset, Set, SetElement, SetType, Verdict, VerdictMap,
};
use policy_compiler::plan::compile_all;

/// A network namespace that is deleted when dropped, also when the test panics.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "npjson{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add");
        assert!(status.success(), "ip netns add {name} failed");
        Self { name }
    }

    /// Runs `nft ARGS` in the namespace with `input` on standard input; its standard output.
    fn nft(&self, args: &[&str], input: &str) -> Result<String, String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run nft: {e}"))?;
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(input.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "nft {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Loads the rendered ruleset (it replaces the table atomically) and lists it back.
    fn load_and_list(&self, ruleset: &Ruleset) -> Result<String, String> {
        self.nft(&["-f", "-"], &ruleset.render())?;
        self.list()
    }

    fn list(&self) -> Result<String, String> {
        self.nft(&["-j", "list", "table", "inet", "nftpolicy"], "")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The first place two rulesets differ, for a readable failure.
fn difference(got: &Ruleset, want: &Ruleset) -> String {
    fn keys<V>(a: &std::collections::BTreeMap<String, V>) -> BTreeSet<&str> {
        a.keys().map(String::as_str).collect()
    }
    for (kind, g, w) in [
        ("sets", keys(&got.sets), keys(&want.sets)),
        ("maps", keys(&got.maps), keys(&want.maps)),
        ("chains", keys(&got.chains), keys(&want.chains)),
        ("counters", keys(&got.counters), keys(&want.counters)),
    ] {
        if g != w {
            return format!("{kind}: listed {g:?}, loaded {w:?}");
        }
    }
    for (name, counter) in &want.counters {
        if got.counters[name] != *counter {
            return format!(
                "counter {name}: listed {:?}, loaded {counter:?}",
                got.counters[name]
            );
        }
    }
    for (name, set) in &want.sets {
        if got.sets[name] != *set {
            return format!("set {name}: listed {:#?}\nloaded {set:#?}", got.sets[name]);
        }
    }
    for (name, map) in &want.maps {
        if got.maps[name] != *map {
            return format!("map {name}: listed {:#?}\nloaded {map:#?}", got.maps[name]);
        }
    }
    if keys(&got.decision_maps) != keys(&want.decision_maps) {
        return format!(
            "decision maps: listed {:?}, loaded {:?}",
            keys(&got.decision_maps),
            keys(&want.decision_maps)
        );
    }
    for (name, map) in &want.decision_maps {
        if got.decision_maps[name] != *map {
            return format!(
                "decision map {name}: listed {:#?}\nloaded {map:#?}",
                got.decision_maps[name]
            );
        }
    }
    for (name, chain) in &want.chains {
        if got.chains[name] != *chain {
            return format!(
                "chain {name}: listed {:#?}\nloaded {chain:#?}",
                got.chains[name]
            );
        }
    }
    "no difference".into()
}

/// Loads each ruleset into `ns`, lists and parses it, and compares it with what was loaded; the
/// kernel's listing must also be the one [`listing`] writes for it (what the agent's fake kernel
/// lists). Returns the failures, and how many rulesets needed `as_listed` (a comment nft stores
/// shortened).
fn round_trip(ns: &Netns, rulesets: &[(String, Ruleset)]) -> (Vec<String>, usize) {
    let mut errors = Vec::new();
    let mut normalised = 0;
    for (label, ruleset) in rulesets {
        let json = match ns.load_and_list(ruleset) {
            Ok(json) => json,
            Err(e) => {
                errors.push(format!("{label}: {e}"));
                continue;
            }
        };
        match (
            canonical_listing(&json),
            canonical_listing(&listing(ruleset)),
        ) {
            (Ok(kernel), Ok(written)) if kernel == written => {}
            (Ok(kernel), Ok(written)) => errors.push(format!(
                "{label}: nft lists\n{kernel:#}\nwhere nft::json::listing writes\n{written:#}"
            )),
            (Err(e), _) | (_, Err(e)) => errors.push(format!("{label}: {e}")),
        }
        let want = as_listed(ruleset);
        if want != *ruleset {
            normalised += 1;
        }
        match parse_table(&json) {
            Ok(got) if got == want => {}
            Ok(got) => errors.push(format!(
                "{label}: read back differently: {}",
                difference(&got, &want)
            )),
            Err(e) => errors.push(format!("{label}: {e}")),
        }
    }
    (errors, normalised)
}

fn assert_round_trips(test: &str, rulesets: &[(String, Ruleset)]) {
    let ns = Netns::new();
    let (errors, normalised) = round_trip(&ns, rulesets);
    eprintln!(
        "{test}: {} of {} rulesets read back equal ({normalised} with comments nft stores shortened)",
        rulesets.len() - errors.len(),
        rulesets.len()
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn demo_rulesets_read_back_equal() {
    if !common::kernel_available("demo_rulesets_read_back_equal") {
        return;
    }
    let sources =
        read_paths(&[common::fixtures().join("demo").display().to_string()]).expect("read demo");
    let demo = parse_sources(&sources).expect("valid demo").cluster;
    let rulesets: Vec<(String, Ruleset)> = compile_all(&demo)
        .into_iter()
        .map(|(node, r)| (format!("demo {node}"), r))
        .collect();
    assert_eq!(rulesets.len(), 2, "the demo has two nodes");
    // The demo is what the lab and the README show: it needs no normalisation at all.
    for (label, r) in &rulesets {
        assert_eq!(&as_listed(r), r, "{label}");
    }
    assert_round_trips("demo_rulesets_read_back_equal", &rulesets);
}

#[test]
fn every_conformance_step_reads_back_equal() {
    if !common::kernel_available("every_conformance_step_reads_back_equal") {
        return;
    }
    let rulesets = common::conformance_rulesets();
    assert!(rulesets.len() > 50, "expected the upstream suite's steps");
    assert_round_trips("every_conformance_step_reads_back_equal", &rulesets);
}

#[test]
fn generated_dual_stack_clusters_read_back_equal() {
    if !common::kernel_available("generated_dual_stack_clusters_read_back_equal") {
        return;
    }
    let rulesets = common::generated_rulesets(0..40);
    // The generator gives some pods an IPv6 address: the v6 sets, maps and prefixes are exercised.
    let v6_elements: usize = rulesets
        .iter()
        .flat_map(|(_, r)| r.sets.values())
        .filter(|s| s.set_type.family() == Family::V6)
        .map(|s| s.elements.len())
        .sum();
    assert!(v6_elements > 0, "no dual-stack pods were generated");
    assert_round_trips("generated_dual_stack_clusters_read_back_equal", &rulesets);
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("cidr")
}

/// A hand-written ruleset with every construct, including shapes the compiler does not emit, whose
/// listing loses information: long and quoted comments and log prefixes, unmerged ports, a
/// protocol dependency (and one a statement keeps), named counters named like other objects,
/// rules without verdict.
fn unusual() -> Ruleset {
    let mut r = Ruleset::default();
    r.counters.insert(
        "named_v6".into(),
        Counter {
            comment: Some(format!("a \"quoted\" $comment {}", "é".repeat(100))),
        },
    );
    r.counters.insert("c".into(), Counter { comment: None });
    r.counters.insert(
        "np_ns-1_allow.web_ingress_0".into(),
        Counter {
            comment: Some(String::new()),
        },
    );
    r.sets.insert(
        "named_v6".into(),
        Set {
            set_type: SetType::AddrProtoPort(Family::V6),
            comment: format!(
                "a \"quoted\" comment, üñíçødé, and long: {}",
                "é".repeat(100)
            ),
            elements: [
                SetElement::AddrProtoPort(ip("fd00::1"), Protocol::Sctp, 80),
                SetElement::AddrProtoPort(ip("fd00::2"), Protocol::Tcp, 0),
                SetElement::AddrProtoPort(ip("fd00::2"), Protocol::Udp, 65535),
            ]
            .into(),
        },
    );
    r.sets.insert(
        "named_v4".into(),
        Set {
            set_type: SetType::AddrProtoPort(Family::V4),
            comment: String::new(),
            elements: [SetElement::AddrProtoPort(ip("10.0.0.1"), Protocol::Udp, 53)].into(),
        },
    );
    r.sets.insert(
        "addrs_v6".into(),
        Set {
            set_type: SetType::Addr(Family::V6),
            comment: "x".repeat(127),
            elements: ["::1", "::ffff:1.2.3.4", "fd00::1"]
                .into_iter()
                .map(|a| SetElement::Addr(ip(a)))
                .collect(),
        },
    );
    r.maps.insert(
        "m6".into(),
        VerdictMap {
            family: Family::V6,
            elements: [(ip("fd00::1"), "c".to_string())].into(),
        },
    );
    r.maps.insert(
        "m4".into(),
        VerdictMap {
            family: Family::V4,
            elements: Default::default(),
        },
    );
    let accept = |matches: Vec<Match>| Rule {
        matches,
        verdict: Verdict::Accept,
        comment: None,
    };
    let dport = |protocol, ports: &[(u16, u16)]| Match::Dport {
        protocol,
        ports: ports.to_vec(),
    };
    let prefix = |field, negated, c: &str| Match::Prefix {
        field,
        negated,
        cidr: cidr(c),
    };
    r.chains.insert(
        "early".into(),
        Chain {
            base: Some(BaseChain::forward(-3)),
            rules: vec![
                accept(vec![Match::CtEstablishedOrRelated]),
                Rule {
                    matches: vec![],
                    verdict: Verdict::Vmap {
                        family: Family::V6,
                        field: AddrField::Saddr,
                        map: "m6".into(),
                    },
                    comment: None,
                },
                Rule {
                    matches: vec![],
                    verdict: Verdict::Vmap {
                        family: Family::V4,
                        field: AddrField::Daddr,
                        map: "m4".into(),
                    },
                    comment: None,
                },
            ],
        },
    );
    r.chains.insert(
        "empty".into(),
        Chain {
            base: None,
            rules: vec![],
        },
    );
    r.chains.insert(
        "c".into(),
        Chain {
            base: None,
            rules: vec![
                accept(vec![Match::L4Proto(Protocol::Tcp)]),
                accept(vec![Match::L4Proto(Protocol::Udp)]),
                accept(vec![Match::L4Proto(Protocol::Sctp)]),
                accept(vec![dport(Protocol::Tcp, &[(80, 80)])]),
                accept(vec![dport(Protocol::Udp, &[(79, 81)])]),
                accept(vec![dport(
                    Protocol::Sctp,
                    &[(8000, 8080), (80, 80), (90, 100)],
                )]),
                accept(vec![dport(
                    Protocol::Tcp,
                    &[(1, 1), (2, 2), (3, 5), (7, 7)],
                )]),
                accept(vec![dport(Protocol::Tcp, &[(1, 2), (2, 5), (4, 4)])]),
                accept(vec![dport(Protocol::Tcp, &[(0, 65535)])]),
                accept(vec![
                    Match::L4Proto(Protocol::Udp),
                    Match::InSet {
                        family: Family::V6,
                        field: AddrField::Saddr,
                        set: "addrs_v6".into(),
                    },
                    dport(Protocol::Udp, &[(1, 1), (3, 3)]),
                ]),
                accept(vec![
                    Match::L4Proto(Protocol::Tcp),
                    Match::L4Proto(Protocol::Tcp),
                    dport(Protocol::Tcp, &[(80, 80)]),
                ]),
                accept(vec![prefix(AddrField::Saddr, false, "10.1.2.3/32")]),
                accept(vec![
                    prefix(AddrField::Daddr, false, "fd00::1/128"),
                    prefix(AddrField::Daddr, true, "fd00::/16"),
                    prefix(AddrField::Daddr, true, "fd00:1::/48"),
                ]),
                accept(vec![
                    prefix(AddrField::Daddr, false, "0.0.0.0/0"),
                    prefix(AddrField::Daddr, true, "10.0.0.10/31"),
                    prefix(AddrField::Daddr, true, "192.0.2.7/32"),
                ]),
                accept(vec![prefix(AddrField::Saddr, false, "::/0")]),
                accept(vec![Match::DaddrProtoPortInSet {
                    family: Family::V6,
                    set: "named_v6".into(),
                }]),
                accept(vec![
                    Match::InSet {
                        family: Family::V4,
                        field: AddrField::Daddr,
                        set: "named_v4_peers".into(),
                    },
                    Match::DaddrProtoPortInSet {
                        family: Family::V4,
                        set: "named_v4".into(),
                    },
                ]),
                Rule {
                    matches: vec![],
                    verdict: Verdict::Jump("empty".into()),
                    comment: Some(String::new()),
                },
                Rule {
                    matches: vec![],
                    verdict: Verdict::Continue,
                    comment: None,
                },
                Rule {
                    matches: vec![Match::L4Proto(Protocol::Udp)],
                    verdict: Verdict::Continue,
                    comment: Some("no verdict".into()),
                },
                Rule {
                    matches: vec![
                        Match::Limit {
                            rate: u32::MAX,
                            burst: 5,
                        },
                        Match::Log {
                            group: u16::MAX,
                            prefix: format!("a \"quoted\" $prefix {}", "é".repeat(100)),
                        },
                        Match::Limit { rate: 1, burst: 1 },
                        Match::Log {
                            group: 0,
                            prefix: String::new(),
                        },
                    ],
                    verdict: Verdict::Continue,
                    comment: None,
                },
                accept(vec![
                    Match::Counter("np_ns-1_allow.web_ingress_0".into()),
                    Match::L4Proto(Protocol::Tcp),
                    Match::Counter("c".into()),
                    dport(Protocol::Tcp, &[(80, 80)]),
                    Match::Counter("named_v6".into()),
                    Match::Counter("named_v6".into()),
                ]),
                Rule {
                    matches: vec![],
                    verdict: Verdict::Drop,
                    comment: Some(format!("\"{}\"", "0123456789".repeat(13))),
                },
            ],
        },
    );
    r.sets.insert(
        "named_v4_peers".into(),
        Set {
            set_type: SetType::Addr(Family::V4),
            comment: "peers".into(),
            elements: BTreeSet::new(),
        },
    );
    r
}

#[test]
fn every_construct_reads_back_as_listed() {
    if !common::kernel_available("every_construct_reads_back_as_listed") {
        return;
    }
    let r = unusual();
    assert_ne!(
        as_listed(&r),
        r,
        "the ruleset should exercise normalisation"
    );
    assert_round_trips(
        "every_construct_reads_back_as_listed",
        &[("hand-written".into(), r)],
    );
}

/// What someone else adds to the table is drift: the listing no longer parses.
#[test]
fn foreign_additions_are_errors() {
    if !common::kernel_available("foreign_additions_are_errors") {
        return;
    }
    let sources =
        read_paths(&[common::fixtures().join("demo").display().to_string()]).expect("read demo");
    let demo = parse_sources(&sources).expect("valid demo").cluster;
    let ruleset = compile_all(&demo)
        .remove("node-1")
        .expect("the demo has node-1");
    let ns = Netns::new();
    let additions = [
        ("add rule inet nftpolicy egress counter", "counter"),
        ("add rule inet nftpolicy egress ip saddr 10.0.0.1 log drop", "log"),
        ("add rule inet nftpolicy egress tcp sport 80 accept", "sport"),
        ("add rule inet nftpolicy egress ct state new accept", "new"),
        ("add rule inet nftpolicy egress goto ingress_v4_chain", "goto"),
        (
            "add set inet nftpolicy extra { type ipv4_addr; flags interval; comment \"x\"; }",
            "interval",
        ),
        ("add set inet nftpolicy extra { type ether_addr; comment \"x\"; }", "ether_addr"),
        ("add set inet nftpolicy extra { type ipv4_addr; }", "extra"),
        (
            "add element inet nftpolicy pods_NS_db_PODS_app_redis_v4 { 10.9.9.9 comment \"e\" }",
            "10.9.9.9",
        ),
        ("add map inet nftpolicy extra { type ipv4_addr : ipv4_addr; }", "extra"),
        (
            "add element inet nftpolicy egress_v4 { 10.9.9.9 : goto np_db_default-deny-all_egress }",
            "goto",
        ),
        (
            "add chain inet nftpolicy extra { type filter hook output priority filter; policy accept; }",
            "output",
        ),
        (
            "add chain inet nftpolicy extra { type filter hook input priority filter; policy drop; }",
            "drop",
        ),
        (
            "add map inet nftpolicy extra { type ipv4_addr : verdict; flags interval,timeout; }",
            "timeout",
        ),
        (
            "add map inet nftpolicy extra { type ipv4_addr : verdict; flags interval; elements = { 10.0.0.0/8 : goto np_db_default-deny-all_egress } }",
            "goto",
        ),
        (
            "add map inet nftpolicy extra { type ipv4_addr . inet_service : verdict; flags interval; }",
            "inet_service",
        ),
        (
            "add chain inet nftpolicy extra { type filter hook forward priority filter; policy drop; }",
            "drop",
        ),
        ("add limit inet nftpolicy extra { rate 1/second; }", "limit"),
        ("add rule inet nftpolicy egress limit rate over 1/second accept", "inv"),
        (
            "add rule inet nftpolicy egress limit rate 1 kbytes/second accept",
            "kbytes",
        ),
        (
            "add rule inet nftpolicy egress log prefix \"x\" group 1 snaplen 64",
            "snaplen",
        ),
        ("add rule inet nftpolicy egress log prefix \"x\" level info", "info"),
        ("add table inet nftpolicy { flags dormant; }", "flags"),
    ];
    let mut errors = Vec::new();
    for (command, quoted) in additions {
        let setup = if command.contains("ingress_v4_chain") {
            "add chain inet nftpolicy ingress_v4_chain\n"
        } else {
            ""
        };
        let result = ns
            .load_and_list(&ruleset)
            .and_then(|_| ns.nft(&["-f", "-"], &format!("{setup}{command}\n")))
            .and_then(|_| ns.list());
        let json = match result {
            Ok(json) => json,
            Err(e) => {
                errors.push(format!("{command}: {e}"));
                continue;
            }
        };
        match parse_table(&json) {
            Err(e @ JsonError::Unexpected { .. }) if e.to_string().contains(quoted) => {
                eprintln!("{command}\n    -> {e}");
            }
            other => errors.push(format!(
                "{command}: expected an error quoting {quoted:?}, got {other:?}"
            )),
        }
    }
    // A counter someone adds reads back, and is drift: the table is no longer the ruleset.
    let json = ns
        .load_and_list(&ruleset)
        .and_then(|_| ns.nft(&["add", "counter", "inet", "nftpolicy", "extra"], ""))
        .and_then(|_| ns.list())
        .expect("add a counter");
    let with_counter = parse_table(&json).expect("parses");
    assert_ne!(with_counter, ruleset);
    assert!(with_counter.counters.contains_key("extra"));
    // And after all that, the compiler's ruleset replaces the table and reads back equal again.
    let json = ns.load_and_list(&ruleset).expect("load again");
    assert_eq!(parse_table(&json).expect("parses"), ruleset);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

fn key(first: &str, last: &str, ports: Option<(Protocol, u16, u16)>) -> DecisionKey {
    DecisionKey {
        first: ip(first),
        last: ip(last),
        ports,
    }
}

fn decision(verdict: DecisionVerdict, comment: Option<&str>) -> Decision {
    Decision {
        verdict,
        comment: comment.map(str::to_string),
    }
}

/// A hand-written ruleset with every construct of decision maps and every key shape: single
/// addresses, prefixes (`/0` and full-length ones), ranges that are not prefixes and ranges at both
/// ends of the address space, in both families; single ports and port ranges at both ends; every
/// verdict; comments absent, empty, quoted, non-ASCII and too long; base chains on the input hook;
/// `return`; the protocol matches; a verdict map and a decision map looked up by the same key.
fn decisions_by_hand() -> Ruleset {
    use DecisionVerdict::{Accept, Drop, Return};
    use Protocol::{Sctp, Tcp, Udp};
    let long = format!(
        "ns/a-cnp-with-a-long-name ingress[3] \"quoted\" {}",
        "é".repeat(60)
    );
    let mut r = Ruleset::default();
    r.decision_maps.insert(
        "any_v4".into(),
        DecisionMap {
            family: Family::V4,
            ports: false,
            elements: [
                (key("0.0.0.0", "0.0.0.0", None), decision(Drop, Some(""))),
                (key("0.0.0.1", "0.0.0.9", None), decision(Accept, None)),
                (
                    key("10.0.0.0", "10.0.0.1", None),
                    decision(Return, Some(&long)),
                ),
                (key("10.0.0.2", "10.0.0.2", None), decision(Return, None)),
                (
                    key("10.0.0.4", "10.0.0.7", None),
                    decision(Drop, Some("a/b egress[0]")),
                ),
                (key("10.0.1.0", "10.0.1.255", None), decision(Accept, None)),
                (key("10.0.2.0", "10.0.2.255", None), decision(Accept, None)),
                (
                    key("128.0.0.0", "199.255.255.255", None),
                    decision(Drop, None),
                ),
                (
                    key("200.0.0.0", "255.255.255.254", None),
                    decision(Accept, None),
                ),
                (
                    key("255.255.255.255", "255.255.255.255", None),
                    decision(Return, None),
                ),
            ]
            .into(),
        },
    );
    r.decision_maps.insert(
        "everything_v6".into(),
        DecisionMap {
            family: Family::V6,
            ports: false,
            elements: [(
                key("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
                decision(Drop, Some("deny all")),
            )]
            .into(),
        },
    );
    r.decision_maps.insert(
        "any_v6".into(),
        DecisionMap {
            family: Family::V6,
            ports: false,
            elements: [
                (key("::", "::", None), decision(Accept, None)),
                (
                    key("::ffff:1.2.3.4", "::ffff:1.2.3.4", None),
                    decision(Return, None),
                ),
                (key("fd00::", "fd00::7", None), decision(Drop, None)),
                (
                    key("fd00::9", "fd00::1:0", None),
                    decision(Accept, Some("range")),
                ),
                (
                    key("fe00::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
                    decision(Return, None),
                ),
            ]
            .into(),
        },
    );
    r.decision_maps.insert(
        "ports_v4".into(),
        DecisionMap {
            family: Family::V4,
            ports: true,
            elements: [
                (
                    key("0.0.0.0", "255.255.255.255", Some((Sctp, 0, 65535))),
                    decision(Drop, None),
                ),
                (
                    key("10.0.0.1", "10.0.0.1", Some((Tcp, 0, 0))),
                    decision(Accept, Some("")),
                ),
                (
                    key("10.0.0.1", "10.0.0.1", Some((Tcp, 1, 79))),
                    decision(Drop, None),
                ),
                (
                    key("10.0.0.1", "10.0.0.1", Some((Tcp, 80, 80))),
                    decision(Accept, Some(&long)),
                ),
                (
                    key("10.0.0.1", "10.0.0.1", Some((Tcp, 65535, 65535))),
                    decision(Return, None),
                ),
                (
                    key("10.0.0.0", "10.255.255.255", Some((Udp, 53, 53))),
                    decision(Accept, Some("dns")),
                ),
                (
                    key("10.244.1.6", "10.244.1.9", Some((Udp, 1, 52))),
                    decision(Return, None),
                ),
                (
                    key("200.0.0.0", "255.255.255.255", Some((Udp, 54, 65535))),
                    decision(Drop, None),
                ),
            ]
            .into(),
        },
    );
    r.decision_maps.insert(
        "ports_v6".into(),
        DecisionMap {
            family: Family::V6,
            ports: true,
            elements: [
                (
                    key(
                        "::",
                        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                        Some((Udp, 0, 65535)),
                    ),
                    decision(Drop, None),
                ),
                (
                    key("fd00::1", "fd00::1", Some((Tcp, 80, 80))),
                    decision(Accept, None),
                ),
                (
                    key(
                        "fd00::",
                        "fd00::ffff:ffff:ffff:ffff",
                        Some((Tcp, 8000, 8080)),
                    ),
                    decision(Return, Some("ünïcødé")),
                ),
                (
                    key("fd00:1::3", "fd00:1::9", Some((Sctp, 9003, 9005))),
                    decision(Accept, None),
                ),
            ]
            .into(),
        },
    );
    r.decision_maps.insert(
        "empty_v4".into(),
        DecisionMap {
            family: Family::V4,
            ports: true,
            elements: Default::default(),
        },
    );
    r.maps.insert(
        "egress_v4".into(),
        VerdictMap {
            family: Family::V4,
            elements: [(ip("10.0.0.1"), "comb".to_string())].into(),
        },
    );
    let rule = |matches: Vec<Match>, verdict: Verdict, comment: Option<&str>| Rule {
        matches,
        verdict,
        comment: comment.map(str::to_string),
    };
    let lookup = |family, field, ports: bool, map: &str| {
        rule(
            vec![Match::L4ProtoWithPorts { negated: !ports }],
            Verdict::DecisionVmap {
                family,
                field,
                ports,
                map: map.into(),
            },
            None,
        )
    };
    let vmap = |map: &str| Verdict::Vmap {
        family: Family::V4,
        field: AddrField::Saddr,
        map: map.into(),
    };
    let base = |hook, priority, rules| Chain {
        base: Some(BaseChain { hook, priority }),
        rules,
    };
    r.chains.insert(
        "egress".into(),
        base(
            Hook::Forward,
            0,
            vec![
                rule(vec![Match::CtEstablishedOrRelated], Verdict::Accept, None),
                rule(vec![], vmap("egress_v4"), None),
                rule(vec![], Verdict::Jump("comb".into()), None),
            ],
        ),
    );
    r.chains.insert(
        "node".into(),
        base(
            Hook::Input,
            0,
            vec![
                rule(vec![Match::CtEstablishedOrRelated], Verdict::Accept, None),
                rule(vec![], Verdict::Jump("comb".into()), Some("to the node")),
            ],
        ),
    );
    r.chains.insert(
        "node_early".into(),
        base(
            Hook::Input,
            -7,
            vec![rule(vec![], Verdict::Return, Some("policy accept"))],
        ),
    );
    r.chains
        .insert("node_late".into(), base(Hook::Input, 3, vec![]));
    r.chains.insert(
        "comb".into(),
        Chain {
            base: None,
            rules: vec![
                lookup(Family::V4, AddrField::Saddr, true, "ports_v4"),
                lookup(Family::V4, AddrField::Saddr, false, "any_v4"),
                lookup(Family::V6, AddrField::Daddr, true, "ports_v6"),
                lookup(Family::V6, AddrField::Daddr, false, "any_v6"),
                rule(
                    vec![],
                    Verdict::DecisionVmap {
                        family: Family::V6,
                        field: AddrField::Saddr,
                        ports: false,
                        map: "everything_v6".into(),
                    },
                    Some("no protocol match"),
                ),
                rule(
                    vec![Match::L4ProtoWithPorts { negated: false }],
                    Verdict::DecisionVmap {
                        family: Family::V4,
                        field: AddrField::Daddr,
                        ports: true,
                        map: "empty_v4".into(),
                    },
                    None,
                ),
                rule(
                    vec![
                        Match::L4Proto(Protocol::Tcp),
                        Match::L4ProtoWithPorts { negated: false },
                    ],
                    Verdict::Accept,
                    None,
                ),
                rule(
                    vec![Match::L4ProtoWithPorts { negated: true }],
                    Verdict::Drop,
                    Some("icmp"),
                ),
                rule(vec![], Verdict::Return, None),
            ],
        },
    );
    r
}

#[test]
fn decision_maps_read_back_as_listed() {
    if !common::kernel_available("decision_maps_read_back_as_listed") {
        return;
    }
    let r = decisions_by_hand();
    assert_ne!(as_listed(&r), r, "the long comments should be shortened");
    assert_round_trips(
        "decision_maps_read_back_as_listed",
        &[("by hand".into(), r)],
    );
}

#[test]
fn generated_decision_rulesets_read_back_equal() {
    if !common::kernel_available("generated_decision_rulesets_read_back_equal") {
        return;
    }
    let rulesets: Vec<(String, Ruleset)> = (0..80)
        .map(|seed| (format!("decisions seed {seed}"), decisions::ruleset(seed)))
        .collect();
    let elements: usize = rulesets
        .iter()
        .flat_map(|(_, r)| r.decision_maps.values())
        .map(|m| m.elements.len())
        .sum();
    assert!(elements > 1000, "{elements} elements");
    // Named counters, counter, limit and log statements and rules without verdict too.
    let counters: usize = rulesets.iter().map(|(_, r)| r.counters.len()).sum();
    let rules: Vec<&Rule> = rulesets
        .iter()
        .flat_map(|(_, r)| r.chains.values())
        .flat_map(|c| &c.rules)
        .collect();
    let statements = rules
        .iter()
        .flat_map(|r| &r.matches)
        .filter(|m| m.is_statement())
        .count();
    let without_verdict = rules
        .iter()
        .filter(|r| r.verdict == Verdict::Continue)
        .count();
    assert!(
        counters > 100 && statements > 200 && without_verdict > 40,
        "{counters} counters, {statements} statements, {without_verdict} rules without verdict"
    );
    assert_round_trips("generated_decision_rulesets_read_back_equal", &rulesets);
}
