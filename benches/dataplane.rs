//! Dataplane benchmarks: what enforcing nftpolicy's ruleset costs packets, and what loading it costs.
//! Needs root, `ip` (iproute2) and `nft`; `iperf3` for the throughput part (a built-in TCP stream is
//! used instead, and said so, when it is missing).
//!
//! ```sh
//! sudo cargo bench --bench dataplane      # or, as root: cargo bench --bench dataplane
//! ```
//!
//! Not root: prints a `SKIPPED` banner and exits 0 (1 with `NFTPOLICY_REQUIRE_LAB=1`). Takes about two
//! and a half minutes on 2 cores. Every namespace it makes carries the lab's prefix and is removed at
//! the end, on panic, and on Ctrl-C (by the lab's handler); `policylab clean` removes them after a
//! `kill -9`.
//!
//! # Setup
//!
//! A lab ([`nftpolicy::lab`]) with two nodes, `node-0` and `node-1`, and three pods in namespace
//! `bench` (labels `team=payments`, `env=prod`): `bench/server` (10.64.0.240) and `bench/client`
//! (10.64.0.241) on `node-0`, `bench/client-remote` (10.64.1.241) on `node-1`. The cluster model is
//! `workload(42, WorkloadSize::MEDIUM)` (10k pods, 1k policies, 50 nodes; `node-0` runs 200 of the
//! pods, at 10.64.0.1-200) plus those three pods and three policies of namespace `bench`:
//! `default-deny` (every pod, both directions), `allow-payments-to-server` (ingress to
//! `app=bench-server` from every pod of the `team=payments` namespaces, about 2000 pods, on TCP 8080
//! and 5201) and `allow-client-to-server` (egress from `app=bench-client` to `app=bench-server` on
//! the same ports). So the first packet of a connection is judged by both base chains: the client's
//! egress and the server's ingress. Only `node-0` enforces; `node-1` has no filter table. Every node
//! always holds the lab's Service NAT table (an empty `nat` prerouting chain), so conntrack runs in
//! every mode, as on any node with kube-proxy.
//!
//! # Measurements
//!
//! 1. **New connections per second** through `node-0`: worker threads ([`CONN_WORKERS`]) that enter
//!    the client pod's namespace (`setns`) and loop on TCP connect + close (with `SO_LINGER` 0, an
//!    RST, so that neither side keeps TIME_WAIT and ephemeral ports never run out) to 10.64.0.240:8080,
//!    which the lab's server accepts and closes. From `bench/client` (same node) and from
//!    `bench/client-remote` (across nodes: through `node-1`, the fabric, then `node-0`). Each mode
//!    is loaded in `node-0` in turn, [`CONN_ROUNDS`] rounds of [`CONN_SECS`] s per mode and client,
//!    the order rotating every round; the median over rounds is reported, with its ratio to (b):
//!    - (a) `no table`: no `inet nftpolicy` table;
//!    - (b) `ct only`: the two base chains with only `ct state established,related accept`;
//!    - (c) `nftpolicy`: `compile_node(&cluster, "node-0")`, applied with [`Dataplane::apply`];
//!    - (d) `naive`: the same policy as linear rule lists, derived from (c) by [`naive`]: each
//!      verdict-map dispatch `ip daddr vmap @ingress_v4` becomes one `ip daddr <pod> jump <group
//!      chain>` rule per map element (in address order), and each policy-chain rule that references
//!      named sets becomes one rule per element (per combination of elements when it references
//!      two): `ip saddr @pods_X` gives `ip saddr <addr>`, `ip daddr . meta l4proto . th dport
//!      @named_X` gives `ip daddr <addr> tcp dport <port>`. Group chains, policy chains, port
//!      matches, comments and rule order are kept; no named set or map remains. The bench pods
//!      come last in the dispatch lists (their addresses sort after node-0's pods: the order a
//!      per-pod layout gets when a pod is appended), and the client comes early in the expanded
//!      payments list (address order), so the path is far from the worst case; the table prints
//!      how many rules the first packet (SYN) crosses in each mode, counted on the model.
//!    The naive and the compiled rulesets are checked to give the same verdicts (on the model) for
//!    the bench flows and a sample of node-0 pod pairs.
//! 2. **Throughput of one established TCP flow**: `iperf3 -c` in `bench/client` against `iperf3 -s`
//!    in `bench/server` (port 5201), [`IPERF_ROUNDS`] rounds of [`IPERF_SECS`] s alternating (a) and
//!    (c); median of the receiver's rate.
//! 3. **`nft` apply time** in a namespace of its own: the full MEDIUM ruleset of `node-0` on an empty
//!    namespace ([`Dataplane::apply`] on a new dataplane: `Transaction::full`), then one pod added
//!    to the cluster, recompiled and applied on top (`Transaction::diff`); medians over
//!    [`APPLY_REPS`] repetitions (the table is deleted between them). Compile time is shown apart.
//!
//! Also printed: `nproc`, `uname -r`, `nft --version`, and the CPU use during the connection loops
//! (machine busy time, the client workers' CPU time, the lab server thread's), which tells who is
//! the bottleneck.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use nftpolicy::dataplane::{Dataplane, NftRunner};
use nftpolicy::lab::{Lab, LabSpec, PodSpec};
use policy_compiler::generate::{workload, WorkloadSize};
use policy_compiler::model::{
    Namespace, NamespaceScope, ObjectRef, Peer, Pod, PodPeer, PodPhase, Policy, PolicyPort,
    PortSpec, Rule,
};
use policy_compiler::nft::interp::{self, Packet};
use policy_compiler::nft::{
    AddrField, BaseChain, Chain, Match, Rule as NftRule, Ruleset, SetElement, Verdict,
};
use policy_compiler::plan::compile_node;
use policy_compiler::selector::{LabelSelector, Labels};
use policy_compiler::{Cidr, ClusterState, Family, Protocol};

/// Worker threads of the connection loop.
const CONN_WORKERS: usize = 4;
/// Rounds of the connection-rate part (each measures every mode once per client).
const CONN_ROUNDS: usize = 5;
/// Seconds per connection-rate measurement.
const CONN_SECS: f64 = 2.0;
/// Rounds of the throughput part (each measures both modes once).
const IPERF_ROUNDS: usize = 3;
/// Seconds per iperf3 run.
const IPERF_SECS: u32 = 3;
/// Repetitions of the apply-time part.
const APPLY_REPS: usize = 10;

const NODE: &str = "node-0";
const REMOTE_NODE: &str = "node-1";
const BENCH_NS: &str = "bench";
const SERVER: &str = "bench/server";
const CLIENT: &str = "bench/client";
const REMOTE_CLIENT: &str = "bench/client-remote";
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 240);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 241);
const REMOTE_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 64, 1, 241);
/// Served by the lab's server in `bench/server` (accept and close).
const CONN_PORT: u16 = 8080;
/// iperf3 (or the built-in stream) in `bench/server`.
const STREAM_PORT: u16 = 5201;

/// The rulesets the connection-rate part alternates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    NoTable,
    CtOnly,
    Nftpolicy,
    Naive,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::NoTable, Mode::CtOnly, Mode::Nftpolicy, Mode::Naive];

    fn label(self) -> &'static str {
        match self {
            Mode::NoTable => "(a) no table",
            Mode::CtOnly => "(b) ct only",
            Mode::Nftpolicy => "(c) nftpolicy",
            Mode::Naive => "(d) naive",
        }
    }
}

/// The rulesets of the modes that have one.
struct Rulesets {
    ct_only: Ruleset,
    compiled: Ruleset,
    naive: Ruleset,
}

impl Rulesets {
    fn of(&self, mode: Mode) -> Option<&Ruleset> {
        match mode {
            Mode::NoTable => None,
            Mode::CtOnly => Some(&self.ct_only),
            Mode::Nftpolicy => Some(&self.compiled),
            Mode::Naive => Some(&self.naive),
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to parse.
    if let Err(e) = nftpolicy::lab::preflight() {
        if std::env::var("NFTPOLICY_REQUIRE_LAB").as_deref() == Ok("1") {
            eprintln!("dataplane bench: the lab is required (NFTPOLICY_REQUIRE_LAB=1): {e}");
            std::process::exit(1);
        }
        eprintln!("\n!!!!!!!! SKIPPED dataplane bench: {e} !!!!!!!!\n");
        return;
    }
    let started = Instant::now();
    println!("# nftpolicy dataplane bench");
    println!(
        "machine: nproc {}, kernel {}, {}",
        output("nproc", &[]),
        output("uname", &["-r"]),
        output("nft", &["--version"])
    );

    // The cluster, the rulesets, and checks that they mean the same.
    let cluster = bench_cluster();
    let t = Instant::now();
    let compiled = compile_node(&cluster, NODE);
    let compile_ms = ms(t.elapsed());
    let naive = naive(&compiled);
    let rulesets = Rulesets {
        ct_only: ct_only(),
        compiled,
        naive,
    };
    let paths = check_equivalent(&cluster, &rulesets);
    println!(
        "cluster: MEDIUM workload (seed 42) + namespace {BENCH_NS}: {} pods, {} policies; ruleset of \
         {NODE}: {} chains, {} rules, {} sets + {} maps, {} elements (compiled in {compile_ms:.0} ms); \
         naive: {} chains, {} rules, no sets",
        cluster.pods().len(),
        cluster.policies().len(),
        rulesets.compiled.chains.len(),
        rulesets.compiled.rule_count(),
        rulesets.compiled.sets.len(),
        rulesets.compiled.maps.len(),
        rulesets.compiled.element_count(),
        rulesets.naive.chains.len(),
        rulesets.naive.rule_count(),
    );

    let lab = Lab::create(&lab_spec()).expect("cannot create the lab (see the error)");
    let node_ns = lab
        .node_netns(NODE)
        .expect("the lab has node-0")
        .to_string();
    let runner = NftRunner::in_netns(&node_ns);

    // 1. New connections per second.
    let conn = conn_rates(&lab, &runner, &rulesets);
    // 2. Throughput.
    let stream = throughput(&lab, &runner, &rulesets.compiled);
    // 3. Apply time.
    let apply = apply_times(&lab, &cluster);

    print_report(&conn, &paths, &stream, &apply);
    lab.teardown().expect("cannot remove the lab's namespaces");
    println!(
        "\ntotal bench time {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------------
// The cluster and the rulesets.

fn ip4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn bench_pod(name: &str, node: &str, ip: Ipv4Addr, app: &str) -> Pod {
    Pod {
        id: ObjectRef::new(BENCH_NS, name),
        labels: labels(&[("app", app)]),
        node: Some(node.to_string()),
        ips: vec![ip4(ip)],
        host_network: false,
        host_ips: vec![],
        phase: PodPhase::Active,
        ports: vec![],
    }
}

fn tcp_ports() -> Vec<PolicyPort> {
    [CONN_PORT, STREAM_PORT]
        .into_iter()
        .map(|p| PolicyPort {
            protocol: Protocol::Tcp,
            port: PortSpec::Range(p, p),
        })
        .collect()
}

/// `workload(42, MEDIUM)` plus the bench namespace, pods and policies (see the module doc).
fn bench_cluster() -> ClusterState {
    let mut cluster = workload(42, WorkloadSize::MEDIUM);
    cluster.upsert_namespace(Namespace::new(
        BENCH_NS,
        labels(&[("team", "payments"), ("env", "prod")]),
    ));
    cluster.upsert_pod(bench_pod("server", NODE, SERVER_IP, "bench-server"));
    cluster.upsert_pod(bench_pod("client", NODE, CLIENT_IP, "bench-client"));
    cluster.upsert_pod(bench_pod(
        "client-remote",
        REMOTE_NODE,
        REMOTE_CLIENT_IP,
        "bench-client",
    ));
    let app = |v: &str| LabelSelector::from_labels([("app", v)]);
    cluster.upsert_policy(Policy {
        id: ObjectRef::new(BENCH_NS, "default-deny"),
        pod_selector: LabelSelector::everything(),
        isolates_ingress: true,
        isolates_egress: true,
        ingress: vec![],
        egress: vec![],
    });
    cluster.upsert_policy(Policy {
        id: ObjectRef::new(BENCH_NS, "allow-payments-to-server"),
        pod_selector: app("bench-server"),
        isolates_ingress: true,
        isolates_egress: false,
        ingress: vec![Rule {
            peers: vec![Peer::Pods(PodPeer {
                namespaces: NamespaceScope::Selected(LabelSelector::from_labels([(
                    "team", "payments",
                )])),
                pods: LabelSelector::everything(),
            })],
            ports: tcp_ports(),
        }],
        egress: vec![],
    });
    cluster.upsert_policy(Policy {
        id: ObjectRef::new(BENCH_NS, "allow-client-to-server"),
        pod_selector: app("bench-client"),
        isolates_ingress: false,
        isolates_egress: true,
        ingress: vec![],
        egress: vec![Rule {
            peers: vec![Peer::Pods(PodPeer {
                namespaces: NamespaceScope::Own(BENCH_NS.to_string()),
                pods: app("bench-server"),
            })],
            ports: tcp_ports(),
        }],
    });
    cluster
}

fn lab_spec() -> LabSpec {
    let pod = |id: &str, node: &str, ip: Ipv4Addr, ports: Vec<(u16, Protocol)>| PodSpec {
        id: id.to_string(),
        node: node.to_string(),
        ips: vec![ip4(ip)],
        ports,
    };
    LabSpec {
        nodes: vec![NODE.to_string(), REMOTE_NODE.to_string()],
        pods: vec![
            pod(SERVER, NODE, SERVER_IP, vec![(CONN_PORT, Protocol::Tcp)]),
            pod(CLIENT, NODE, CLIENT_IP, vec![]),
            pod(REMOTE_CLIENT, REMOTE_NODE, REMOTE_CLIENT_IP, vec![]),
        ],
        services: vec![],
    }
}

/// Mode (b): nftpolicy's two base chains with nothing but `ct state established,related accept`.
fn ct_only() -> Ruleset {
    let mut ruleset = Ruleset::default();
    for (name, priority) in [("egress", 0), ("ingress", 1)] {
        ruleset.chains.insert(
            name.to_string(),
            Chain {
                base: Some(BaseChain { priority }),
                rules: vec![NftRule {
                    matches: vec![Match::CtEstablishedOrRelated],
                    verdict: Verdict::Accept,
                    comment: None,
                }],
            },
        );
    }
    ruleset
}

/// Mode (d): `compiled` without named sets or maps (see the module doc): verdict maps become one
/// `jump` rule per element, and each rule referencing sets becomes one rule per element (per
/// combination of elements).
fn naive(compiled: &Ruleset) -> Ruleset {
    let mut out = Ruleset::default();
    for (name, chain) in &compiled.chains {
        let mut rules = Vec::new();
        for rule in &chain.rules {
            if let Verdict::Vmap { field, map, .. } = &rule.verdict {
                let map = compiled
                    .maps
                    .get(map)
                    .expect("compiled rulesets define the maps they use");
                for (ip, target) in &map.elements {
                    let mut matches = rule.matches.clone();
                    matches.push(host_match(*field, *ip));
                    rules.push(NftRule {
                        matches,
                        verdict: Verdict::Jump(target.clone()),
                        comment: rule.comment.clone(),
                    });
                }
                continue;
            }
            // The alternatives of each match; the rule becomes their cartesian product.
            let mut expanded: Vec<Vec<Match>> = vec![Vec::new()];
            for m in &rule.matches {
                let alternatives: Vec<Vec<Match>> = match m {
                    Match::InSet { field, set, .. } => set_elements(compiled, set)
                        .filter_map(|e| match e {
                            SetElement::Addr(ip) => Some(vec![host_match(*field, *ip)]),
                            SetElement::AddrProtoPort(..) => None,
                        })
                        .collect(),
                    Match::DaddrProtoPortInSet { set, .. } => set_elements(compiled, set)
                        .filter_map(|e| match e {
                            SetElement::AddrProtoPort(ip, protocol, port) => Some(vec![
                                host_match(AddrField::Daddr, *ip),
                                Match::Dport {
                                    protocol: *protocol,
                                    ports: vec![(*port, *port)],
                                },
                            ]),
                            SetElement::Addr(_) => None,
                        })
                        .collect(),
                    other => vec![vec![other.clone()]],
                };
                expanded = expanded
                    .iter()
                    .flat_map(|prefix| {
                        alternatives.iter().map(move |alt| {
                            let mut v = prefix.clone();
                            v.extend(alt.iter().cloned());
                            v
                        })
                    })
                    .collect();
            }
            rules.extend(expanded.into_iter().map(|matches| NftRule {
                matches,
                verdict: rule.verdict.clone(),
                comment: rule.comment.clone(),
            }));
        }
        out.chains.insert(
            name.clone(),
            Chain {
                base: chain.base,
                rules,
            },
        );
    }
    out
}

fn host_match(field: AddrField, ip: IpAddr) -> Match {
    Match::Prefix {
        field,
        negated: false,
        cidr: Cidr::host(ip),
    }
}

fn set_elements<'a>(ruleset: &'a Ruleset, set: &str) -> impl Iterator<Item = &'a SetElement> {
    ruleset
        .sets
        .get(set)
        .expect("compiled rulesets define the sets they use")
        .elements
        .iter()
}

/// How many rules the first packet of each bench flow crosses, per mode.
#[derive(Debug)]
struct Paths {
    /// (mode, rules crossed by the SYN from `bench/client` to the server).
    syn_rules: Vec<(Mode, usize)>,
    /// Packets on which the naive and compiled rulesets were compared.
    compared: usize,
}

/// Checks on the model that (c) and (d) give the same verdicts for the bench flows and for a sample
/// of node-0 pod pairs, and counts the rules the bench SYN crosses.
fn check_equivalent(cluster: &ClusterState, rulesets: &Rulesets) -> Paths {
    let syn = |src: Ipv4Addr, dport: u16| Packet {
        src: ip4(src),
        dst: ip4(SERVER_IP),
        protocol: Protocol::Tcp,
        dport,
        established: false,
    };
    let mut packets = vec![
        syn(CLIENT_IP, CONN_PORT),
        syn(CLIENT_IP, STREAM_PORT),
        syn(REMOTE_CLIENT_IP, CONN_PORT),
        syn(CLIENT_IP, 22),
    ];
    let node_pods: Vec<IpAddr> = cluster
        .pods()
        .values()
        .filter(|p| p.node.as_deref() == Some(NODE))
        .filter_map(|p| p.ip(Family::V4))
        .collect();
    let others: Vec<IpAddr> = cluster
        .pods()
        .values()
        .filter_map(|p| p.ip(Family::V4))
        .step_by(97)
        .collect();
    for (i, dst) in node_pods.iter().enumerate().step_by(7) {
        for src in others.iter().skip(i % 5).step_by(9) {
            for (protocol, dport) in [(Protocol::Tcp, 8080), (Protocol::Udp, 53)] {
                packets.push(Packet {
                    src: *src,
                    dst: *dst,
                    protocol,
                    dport,
                    established: false,
                });
                packets.push(Packet {
                    src: *dst,
                    dst: *src,
                    protocol,
                    dport,
                    established: false,
                });
            }
        }
    }
    let mut allowed = 0;
    for p in &packets {
        let c = interp::evaluate(&rulesets.compiled, p).expect("the compiled ruleset evaluates");
        let d = interp::evaluate(&rulesets.naive, p).expect("the naive ruleset evaluates");
        assert_eq!(
            c.accepted, d.accepted,
            "the naive ruleset disagrees with the compiled one on {p:?}"
        );
        allowed += usize::from(c.accepted);
    }
    let first = packets[0];
    for (i, expected) in [(0, true), (1, true), (2, true), (3, false)] {
        let ok = interp::evaluate(&rulesets.compiled, &packets[i])
            .expect("the compiled ruleset evaluates")
            .accepted;
        assert_eq!(
            ok, expected,
            "bench flow {:?} should be allowed={expected}",
            packets[i]
        );
    }
    assert!(
        allowed > 4 && allowed < packets.len(),
        "the sample should hold both verdicts"
    );
    let syn_rules = Mode::ALL
        .iter()
        .map(|&m| (m, rulesets.of(m).map_or(0, |r| rules_crossed(r, &first))))
        .collect();
    Paths {
        syn_rules,
        compared: packets.len(),
    }
}

enum Flow {
    Continue,
    Accept,
    Drop,
}

/// The number of rules the hook evaluates for `p` (every rule whose matches are tried), following
/// nftables semantics like [`interp`] does.
fn rules_crossed(ruleset: &Ruleset, p: &Packet) -> usize {
    let mut count = 0;
    for (name, _) in ruleset.base_chains() {
        if let Flow::Drop = walk(ruleset, name, p, &mut count) {
            break;
        }
    }
    count
}

fn walk(ruleset: &Ruleset, chain: &str, p: &Packet, count: &mut usize) -> Flow {
    let Some(chain) = ruleset.chains.get(chain) else {
        return Flow::Continue;
    };
    for rule in &chain.rules {
        *count += 1;
        if !rule.matches.iter().all(|m| matches(ruleset, m, p)) {
            continue;
        }
        let target = match &rule.verdict {
            Verdict::Accept => return Flow::Accept,
            Verdict::Drop => return Flow::Drop,
            Verdict::Jump(c) => Some(c.as_str()),
            Verdict::Vmap { family, field, map } => {
                let addr = field_addr(*field, p);
                if Family::of(&addr) != *family {
                    None
                } else {
                    ruleset
                        .maps
                        .get(map)
                        .and_then(|m| m.elements.get(&addr))
                        .map(String::as_str)
                }
            }
        };
        if let Some(target) = target {
            match walk(ruleset, target, p, count) {
                Flow::Continue => {}
                decided => return decided,
            }
        }
    }
    Flow::Continue
}

fn field_addr(field: AddrField, p: &Packet) -> IpAddr {
    match field {
        AddrField::Saddr => p.src,
        AddrField::Daddr => p.dst,
    }
}

fn matches(ruleset: &Ruleset, m: &Match, p: &Packet) -> bool {
    let in_set = |set: &str, e: &SetElement| {
        ruleset
            .sets
            .get(set)
            .is_some_and(|s| s.elements.contains(e))
    };
    match m {
        Match::CtEstablishedOrRelated => p.established,
        Match::Prefix {
            field,
            negated,
            cidr,
        } => {
            let addr = field_addr(*field, p);
            cidr.family() == Family::of(&addr) && cidr.contains(&addr) != *negated
        }
        Match::InSet { family, field, set } => {
            let addr = field_addr(*field, p);
            Family::of(&addr) == *family && in_set(set, &SetElement::Addr(addr))
        }
        Match::L4Proto(protocol) => p.protocol == *protocol,
        Match::Dport { protocol, ports } => {
            p.protocol == *protocol && ports.iter().any(|&(a, b)| a <= p.dport && p.dport <= b)
        }
        Match::DaddrProtoPortInSet { family, set } => {
            Family::of(&p.dst) == *family
                && in_set(set, &SetElement::AddrProtoPort(p.dst, p.protocol, p.dport))
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// 1. New connections per second.

/// One connection-loop measurement.
#[derive(Debug, Clone, Copy)]
struct ConnSample {
    rate: f64,
    /// Connects that failed (refused, timed out, ...).
    failures: u64,
    /// Connects that took longer than 200 ms (a dropped SYN is retransmitted after 1 s).
    slow: u64,
    /// Machine busy time over the window, in % of all CPUs.
    busy: f64,
    /// CPU time of the client workers, in % of one CPU.
    client_cpu: f64,
    /// CPU time of the lab's server thread, in % of one CPU.
    server_cpu: f64,
    /// Conntrack entries in node-0 after the window.
    conntrack: u64,
}

#[derive(Debug, Default)]
struct ConnResults {
    /// (mode, same node?) → samples.
    samples: BTreeMap<(Mode, bool), Vec<ConnSample>>,
    /// Load time of each mode's ruleset, per load.
    loads: BTreeMap<Mode, Vec<Duration>>,
    conntrack_max: u64,
}

fn conn_rates(lab: &Lab, runner: &NftRunner, rulesets: &Rulesets) -> ConnResults {
    let node_ns = lab
        .node_netns(NODE)
        .expect("the lab has node-0")
        .to_string();
    let server_thread = format!("{}serve", lab.prefix());
    let clients = [
        (true, netns_file(lab.pod_netns(CLIENT).expect("client pod"))),
        (
            false,
            netns_file(lab.pod_netns(REMOTE_CLIENT).expect("remote client pod")),
        ),
    ];
    let node_file = netns_file(&node_ns);
    let target = SocketAddr::new(ip4(SERVER_IP), CONN_PORT);
    let mut results = ConnResults {
        conntrack_max: read_u64("/proc/sys/net/netfilter/nf_conntrack_max").unwrap_or(0),
        ..ConnResults::default()
    };
    // Warm-up: the path works (and the first connections' costs are paid) before measuring.
    load(runner, rulesets, Mode::Nftpolicy);
    for (_, file) in &clients {
        let warm = conn_loop(file, target, CONN_WORKERS, Duration::from_millis(300));
        assert!(
            warm.rate > 100.0 && warm.failures == 0,
            "the bench flow does not work under the compiled ruleset: {warm:?}"
        );
    }
    println!(
        "\n1. new connections: {} rounds x {} modes x 2 clients x {CONN_SECS} s, {CONN_WORKERS} \
         workers ...",
        CONN_ROUNDS,
        Mode::ALL.len()
    );
    for round in 0..CONN_ROUNDS {
        for k in 0..Mode::ALL.len() {
            let mode = Mode::ALL[(k + round) % Mode::ALL.len()];
            let took = load(runner, rulesets, mode);
            results.loads.entry(mode).or_default().push(took);
            for (same_node, file) in &clients {
                let server_before = thread_cpu(&server_thread);
                let busy_before = cpu_busy();
                let mut s = conn_loop(
                    file,
                    target,
                    CONN_WORKERS,
                    Duration::from_secs_f64(CONN_SECS),
                );
                s.busy = cpu_busy().since(busy_before);
                s.server_cpu = thread_cpu(&server_thread)
                    .saturating_sub(server_before)
                    .as_secs_f64()
                    / CONN_SECS
                    * 100.0;
                s.conntrack = conntrack_count(&node_file);
                results
                    .samples
                    .entry((mode, *same_node))
                    .or_default()
                    .push(s);
            }
        }
        eprintln!("   round {}/{CONN_ROUNDS} done", round + 1);
    }
    // Leave node-0 without the table for the throughput part's first mode.
    load(runner, rulesets, Mode::NoTable);
    results
}

/// Makes node-0 hold `mode`'s ruleset; returns how long `nft` took.
fn load(runner: &NftRunner, rulesets: &Rulesets, mode: Mode) -> Duration {
    let t = Instant::now();
    match rulesets.of(mode) {
        None => runner
            .delete_table()
            .expect("cannot delete the nftpolicy table"),
        Some(ruleset) => {
            let mut dataplane = Dataplane::new(runner.clone());
            let report = dataplane
                .apply(ruleset)
                .unwrap_or_else(|e| panic!("cannot load {}: {e}", mode.label()));
            assert!(report.full, "a new dataplane replaces the table whole");
        }
    }
    t.elapsed()
}

fn netns_file(name: &str) -> File {
    File::open(format!("/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("cannot open /run/netns/{name}: {e}"))
}

/// Moves the calling thread into the network namespace `file`. Only for threads this bench spawns
/// for the purpose (they end with the measurement).
fn enter(file: &File) {
    // SAFETY: setns only reads the descriptor, which `file` keeps open for the call, and changes the
    // namespace of the calling thread, which is one of ours.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns failed: {}", std::io::Error::last_os_error());
}

/// `CONN_WORKERS` threads in the client's namespace connect and close as fast as they can for
/// `window`; connections completed after the window are not counted.
fn conn_loop(client: &File, to: SocketAddr, workers: usize, window: Duration) -> ConnSample {
    let start = Barrier::new(workers + 1);
    let stop = AtomicBool::new(false);
    let per_worker: Vec<(u64, u64, u64, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    enter(client);
                    start.wait();
                    let cpu_before = own_thread_cpu();
                    let (mut ok, mut failed, mut slow) = (0u64, 0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        match TcpStream::connect(to) {
                            Ok(stream) => {
                                reset_on_close(&stream);
                                drop(stream);
                                if !stop.load(Ordering::Relaxed) {
                                    ok += 1;
                                    slow += u64::from(t.elapsed() > Duration::from_millis(200));
                                }
                            }
                            Err(_) => {
                                failed += 1;
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                    (
                        ok,
                        failed,
                        slow,
                        own_thread_cpu().saturating_sub(cpu_before),
                    )
                })
            })
            .collect();
        start.wait();
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().expect("a connection worker panicked"))
            .collect()
    });
    let secs = window.as_secs_f64();
    ConnSample {
        rate: per_worker.iter().map(|w| w.0).sum::<u64>() as f64 / secs,
        failures: per_worker.iter().map(|w| w.1).sum(),
        slow: per_worker.iter().map(|w| w.2).sum(),
        busy: 0.0,
        client_cpu: per_worker.iter().map(|w| w.3.as_secs_f64()).sum::<f64>() / secs * 100.0,
        server_cpu: 0.0,
        conntrack: 0,
    }
}

/// `SO_LINGER` 0: close sends an RST and leaves no TIME_WAIT behind.
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is open (owned by `stream`), and the option value is a valid `linger`
    // of the size given.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_LINGER): {}",
        std::io::Error::last_os_error()
    );
}

/// CPU time (user + system) of the calling thread.
fn own_thread_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid, and getrusage writes only into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, exclusively borrowed rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time (user + system) of this process's thread named `name` (as truncated by the kernel to 15
/// bytes), or zero.
fn thread_cpu(name: &str) -> Duration {
    let comm: String = name.chars().take(15).collect();
    let ticks = clock_ticks();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let is_it = std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim_end() == comm);
        if !is_it {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<u64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse().ok())
            .collect();
        if fields.len() == 2 {
            return Duration::from_secs_f64((fields[0] + fields[1]) as f64 / ticks);
        }
    }
    Duration::ZERO
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Busy and total jiffies of all CPUs (`/proc/stat`).
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    /// Busy time since `before`, in % of all CPUs.
    fn since(self, before: CpuTimes) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(before.busy) as f64 / total as f64 * 100.0
    }
}

fn cpu_busy() -> CpuTimes {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait are the 4th and 5th.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    }
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Conntrack entries in the namespace `file` (the count is per namespace).
fn conntrack_count(file: &File) -> u64 {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(file);
            read_u64("/proc/sys/net/netfilter/nf_conntrack_count").unwrap_or(0)
        })
        .join()
        .unwrap_or(0)
    })
}

// ---------------------------------------------------------------------------------------------------
// 2. Throughput of an established flow.

#[derive(Debug, Default)]
struct StreamResults {
    /// "iperf3 3.x" or the built-in stream.
    tool: String,
    /// Mode → Gbit/s per round.
    samples: BTreeMap<Mode, Vec<f64>>,
}

/// A child process killed and reaped on drop (also killed if this process dies: `PDEATHSIG`).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in_netns(netns: &str, program: &str, args: &[&str]) -> std::io::Result<Child> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, program])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

fn throughput(lab: &Lab, runner: &NftRunner, compiled: &Ruleset) -> StreamResults {
    let server_ns = lab.pod_netns(SERVER).expect("server pod").to_string();
    let client_ns = lab.pod_netns(CLIENT).expect("client pod").to_string();
    let iperf = Command::new("iperf3")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("iperf3")
                .to_string()
        });
    let mut results = StreamResults {
        tool: iperf.clone().unwrap_or_else(|| {
            "built-in TCP stream (iperf3 not found: apt-get install iperf3)".to_string()
        }),
        ..StreamResults::default()
    };
    println!(
        "\n2. established-flow throughput: {IPERF_ROUNDS} rounds x 2 modes x {IPERF_SECS} s with {} ...",
        results.tool
    );
    let port = STREAM_PORT.to_string();
    let _server = iperf.as_ref().map(|_| {
        ChildGuard(
            spawn_in_netns(&server_ns, "iperf3", &["-s", "-p", &port])
                .expect("cannot start iperf3 -s"),
        )
    });
    let rulesets = Rulesets {
        ct_only: ct_only(),
        compiled: compiled.clone(),
        naive: Ruleset::default(),
    };
    for round in 0..IPERF_ROUNDS {
        for k in 0..2 {
            let mode = [Mode::NoTable, Mode::Nftpolicy][(k + round) % 2];
            load(runner, &rulesets, mode);
            let gbps = if iperf.is_some() {
                iperf_run(&client_ns)
            } else {
                stream_run(lab)
            };
            results.samples.entry(mode).or_default().push(gbps);
        }
    }
    results
}

/// One `iperf3 -c` run from the client pod; the receiver's rate in Gbit/s. Retries while the server
/// is starting.
fn iperf_run(client_ns: &str) -> f64 {
    let server = SERVER_IP.to_string();
    let (port, secs) = (STREAM_PORT.to_string(), IPERF_SECS.to_string());
    let mut last_error = String::new();
    for _ in 0..20 {
        let out = spawn_in_netns(
            client_ns,
            "iperf3",
            &["-c", &server, "-p", &port, "-t", &secs, "-J"],
        )
        .and_then(|c| c.wait_with_output())
        .expect("cannot run iperf3 -c");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = json["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps / 1e9;
        }
        last_error = json["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned());
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("iperf3 -c keeps failing: {last_error}");
}

/// The fallback without iperf3: one thread in the client pod writes 128 KiB buffers for
/// `IPERF_SECS` to one in the server pod, which reads and counts them; Gbit/s received.
fn stream_run(lab: &Lab) -> f64 {
    let server = netns_file(lab.pod_netns(SERVER).expect("server pod"));
    let client = netns_file(lab.pod_netns(CLIENT).expect("client pod"));
    let addr = SocketAddr::new(ip4(SERVER_IP), STREAM_PORT);
    let ready = Barrier::new(2);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            enter(&server);
            let listener = TcpListener::bind(addr);
            ready.wait();
            let (mut conn, _) = listener
                .expect("cannot bind the stream server")
                .accept()
                .expect("accept");
            let mut buf = vec![0u8; 1 << 17];
            let (mut bytes, t) = (0u64, Instant::now());
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => bytes += n as u64,
                }
            }
            bytes as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e9
        });
        s.spawn(|| {
            enter(&client);
            ready.wait();
            let mut conn = TcpStream::connect(addr).expect("cannot connect the stream");
            let buf = vec![0x5au8; 1 << 17];
            let end = Instant::now() + Duration::from_secs(u64::from(IPERF_SECS));
            while Instant::now() < end {
                if conn.write_all(&buf).is_err() {
                    break;
                }
            }
        });
        reader.join().expect("the stream reader panicked")
    })
}

// ---------------------------------------------------------------------------------------------------
// 3. Apply time.

/// A network namespace removed on drop. Its name carries the lab's prefix, so the lab's Ctrl-C
/// handler and `policylab clean` remove it too.
struct Netns(String);

impl Netns {
    fn add(name: String) -> Netns {
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name} failed");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if std::path::Path::new("/run/netns").join(&self.0).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.0])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[derive(Debug, Default)]
struct ApplyResults {
    full: Vec<Duration>,
    full_ops: usize,
    add: Vec<Duration>,
    add_ops: Vec<usize>,
    compile: Vec<Duration>,
}

fn apply_times(lab: &Lab, cluster: &ClusterState) -> ApplyResults {
    println!("\n3. nft apply time: {APPLY_REPS} x (full load, then one pod added) ...");
    let ns = Netns::add(format!("{}apply", lab.prefix()));
    let runner = NftRunner::in_netns(&ns.0);
    let full = compile_node(cluster, NODE);
    let template = cluster
        .pods()
        .values()
        .find(|p| p.node.as_deref() == Some(NODE) && p.id.namespace != BENCH_NS)
        .expect("a workload pod on node-0")
        .clone();
    let mut results = ApplyResults::default();
    for i in 0..APPLY_REPS {
        runner
            .delete_table()
            .expect("cannot delete the table between repetitions");
        let mut dataplane = Dataplane::new(runner.clone());
        let report = dataplane.apply(&full).expect("the full load failed");
        assert!(report.full);
        results.full.push(report.duration);
        results.full_ops = report.operations;

        let mut next = cluster.clone();
        let mut pod = template.clone();
        pod.id = ObjectRef::new(template.id.namespace.clone(), format!("bench-add-{i}"));
        pod.ips = vec![ip4(Ipv4Addr::new(10, 64, 0, 201 + i as u8))];
        next.upsert_pod(pod);
        let t = Instant::now();
        let desired = compile_node(&next, NODE);
        results.compile.push(t.elapsed());
        let report = dataplane.apply(&desired).expect("the pod-add apply failed");
        assert!(!report.full, "the pod add should be a diff");
        results.add.push(report.duration);
        results.add_ops.push(report.operations);
    }
    results
}

// ---------------------------------------------------------------------------------------------------
// The report.

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median_ms(values: &[Duration]) -> f64 {
    median(&values.iter().map(|d| ms(*d)).collect::<Vec<_>>())
}

fn print_report(conn: &ConnResults, paths: &Paths, stream: &StreamResults, apply: &ApplyResults) {
    let rate = |mode: Mode, same: bool| {
        median(
            &conn
                .samples
                .get(&(mode, same))
                .map(|s| s.iter().map(|x| x.rate).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
    };
    println!("\n## Results\n");
    println!(
        "| measurement | mode | median | ratio | min-max | rules crossed by SYN | CPU: busy / client / server | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for same in [true, false] {
        let what = if same {
            "new conn/s, same node"
        } else {
            "new conn/s, across nodes"
        };
        let base = rate(Mode::CtOnly, same);
        for mode in Mode::ALL {
            let samples = conn.samples.get(&(mode, same)).cloned().unwrap_or_default();
            let rates: Vec<f64> = samples.iter().map(|s| s.rate).collect();
            let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
            let max = rates.iter().copied().fold(0.0, f64::max);
            let m = |f: fn(&ConnSample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
            let failures: u64 = samples.iter().map(|s| s.failures).sum();
            let slow: u64 = samples.iter().map(|s| s.slow).sum();
            let crossed = paths
                .syn_rules
                .iter()
                .find(|(m, _)| *m == mode)
                .map_or(0, |(_, n)| *n);
            let load = conn
                .loads
                .get(&mode)
                .filter(|_| mode != Mode::NoTable)
                .map(|l| format!("load {:.0} ms", median_ms(l)))
                .unwrap_or_default();
            let mut notes = vec![load];
            if failures + slow > 0 {
                notes.push(format!("{failures} failed, {slow} slow (>200 ms) connects"));
            }
            println!(
                "| {what} | {} | {:.0} | {:.1} % | {:.0}-{:.0} | {crossed} | {:.0} % / {:.0} % / {:.0} % | {} |",
                mode.label(),
                rate(mode, same),
                rate(mode, same) / base * 100.0,
                min,
                max,
                m(|s| s.busy),
                m(|s| s.client_cpu),
                m(|s| s.server_cpu),
                notes.into_iter().filter(|n| !n.is_empty()).collect::<Vec<_>>().join("; "),
            );
        }
    }
    let tp = |mode: Mode| median(stream.samples.get(&mode).map_or(&[][..], |v| v.as_slice()));
    let base = tp(Mode::NoTable);
    for mode in [Mode::NoTable, Mode::Nftpolicy] {
        let v = stream.samples.get(&mode).cloned().unwrap_or_default();
        println!(
            "| TCP stream Gbit/s, same node | {} | {:.2} | {:.1} % | {:.2}-{:.2} | | | {} |",
            mode.label(),
            tp(mode),
            tp(mode) / base * 100.0,
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max),
            stream.tool,
        );
    }
    let add_ops = median(&apply.add_ops.iter().map(|&n| n as f64).collect::<Vec<_>>());
    println!(
        "| nft apply ms | full MEDIUM load (empty netns) | {:.1} | | {:.1}-{:.1} | | | {} operations |",
        median_ms(&apply.full),
        apply.full.iter().map(|d| ms(*d)).fold(f64::INFINITY, f64::min),
        apply.full.iter().map(|d| ms(*d)).fold(0.0, f64::max),
        apply.full_ops,
    );
    println!(
        "| nft apply ms | pod add (diff) | {:.1} | {:.1} % of full | {:.1}-{:.1} | | | {add_ops:.0} operations; compile_node before it: {:.0} ms |",
        median_ms(&apply.add),
        median_ms(&apply.add) / median_ms(&apply.full) * 100.0,
        apply.add.iter().map(|d| ms(*d)).fold(f64::INFINITY, f64::min),
        apply.add.iter().map(|d| ms(*d)).fold(0.0, f64::max),
        median_ms(&apply.compile),
    );
    let max_ct = conn
        .samples
        .values()
        .flatten()
        .map(|s| s.conntrack)
        .max()
        .unwrap_or(0);
    println!(
        "\nratios: conn/s against (b) ct only (targets: (c) >= 90 %); stream against (a) no table \
         (target: (c) >= 95 %). Medians over rounds; CPU: machine busy (% of all CPUs), client \
         workers and lab server thread (% of one CPU). Conntrack entries in {NODE}: at most {max_ct} \
         (nf_conntrack_max {}). Naive vs compiled verdicts agreed on {} packets.",
        conn.conntrack_max, paths.compared
    );
    let c = rate(Mode::Nftpolicy, true) / rate(Mode::CtOnly, true) * 100.0;
    let t = tp(Mode::Nftpolicy) / base * 100.0;
    println!(
        "targets: conn/s (c)/(b) same node {c:.1} % ({}), stream (c)/(a) {t:.1} % ({})",
        if c >= 90.0 { "met" } else { "NOT met" },
        if t >= 95.0 { "met" } else { "NOT met" },
    );
}

/// The first line of a command's output, or `?`.
fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".to_string())
}
