//! Dataplane benchmarks: what enforcing nftpolicy's ruleset costs packets, and what loading it
//! costs. Needs root, `ip` (iproute2) and `nft`; `iperf3` for the throughput part (without it, a
//! built-in TCP stream is measured instead, and the report says so).
//!
//! ```sh
//! sudo cargo bench -p policylab --bench dataplane   # or, as root: cargo bench -p policylab --bench dataplane
//! ```
//!
//! Not root: prints a `SKIPPED` banner and exits 0 (1 with `NFTPOLICY_REQUIRE_LAB=1`). Takes a
//! little over two minutes on 2 cores (12 s of it loading the naive ruleset). Every namespace it
//! makes carries the lab's prefix and is removed at the end, on panic, and on Ctrl-C (by the lab's
//! handler); `policylab clean` removes them after a `kill -9`. Nothing is asserted about timings;
//! the run fails only when the setup does not behave (a mode that does not enforce what it should,
//! a connection loop that cannot connect).
//!
//! # Setup
//!
//! A lab ([`policylab::lab`]) with two nodes, `node-0` and `node-1`, and three pods in namespace
//! `bench` (labels `team=payments`, `env=prod`): `bench/server` (10.64.0.240) and `bench/client`
//! (10.64.25.241) on `node-0`, `bench/client-remote` (10.64.26.241) on `node-1`. The cluster model
//! is `workload(42, WorkloadSize::MEDIUM)` (10k pods, 1k policies, 50 nodes; node `K` runs 200 of
//! the pods, at 10.64.K.1-200) plus those three pods and three policies of namespace `bench`:
//! `default-deny` (every pod, both directions), `allow-payments-to-server` (ingress to
//! `app=bench-server` from every pod of the `team=payments` namespaces, a few thousand pods, on TCP
//! 8080 and 5201) and `allow-client-to-server` (egress from `app=bench-client` to
//! `app=bench-server` on the same ports). So the first packet of a connection is judged by both
//! base chains: the client's egress and the server's ingress. The server pod also serves 8081,
//! which the policy does not allow: after every switch of mode, a connection to each port checks
//! that 8080 passes and that 8081 passes exactly in the modes without policy. Only `node-0`
//! enforces; `node-1` has no filter table. Every node holds the lab's Service NAT table (an empty
//! `nat` prerouting chain), so conntrack runs in every mode, as on any node with kube-proxy.
//! (Neither the lab nor the compiler needs a pod's address to lie in its node's range; the clients'
//! addresses are chosen for their place in the naive rule lists, below.)
//!
//! The rulesets are loaded into `node-0` once, each in its own table, and a mode is switched by one
//! small `nft` transaction that wakes one table and makes the others `dormant` (a dormant table's
//! base chains are off the hook: the packet path is that of no table). So the modes alternate
//! quickly and the naive ruleset, which takes seconds to load, is loaded once:
//!
//! - (a) `no table`: every table dormant;
//! - (b) `ct only`: `table inet nftpolicy_ctonly`, nftpolicy's two base chains (`egress` at
//!   `filter`, `ingress` at `filter + 1`) holding only `ct state established,related accept`;
//! - (c) `nftpolicy`: `table inet nftpolicy`, `compile_node(&cluster, "node-0")` applied with
//!   [`Dataplane::apply`];
//! - (d) `naive`: `table inet nftpolicy_naive`, the same policy as linear rule lists, derived from
//!   (c) by [`naive`]: each verdict-map dispatch (`ip daddr vmap @ingress_v4`, ...) becomes one `ip
//!   daddr <pod> jump <group chain>` rule per map element, in address order; each policy-chain rule
//!   that references named sets becomes one rule per element (per combination of elements when it
//!   references two): `ip saddr @pods_X` gives `ip saddr <addr>`, `ip daddr . meta l4proto . th
//!   dport @named_X` gives `ip daddr <addr> tcp dport <port>`. Group chains, policy chains, port
//!   matches, comments and rule order are kept; no named set or map remains. The clients' addresses
//!   sort in the middle of the expanded payments list (the expected place of a random peer), and
//!   the server and the same-node client come last in node-0's dispatch lists (their addresses sort
//!   after node-0's other pods, as with a pod appended to a per-pod layout); the report gives the
//!   number of rules the first packet (SYN) crosses in each mode, counted on the model by [`interp`]
//!   (`Outcome::rules_tried`). The naive and compiled rulesets are checked (on the model, with
//!   [`interp`]) to give the same verdicts for the bench flows and for a sample of node-0 pod pairs.
//! - (e) `nftpolicy + 100 CNPs`: `table inet nftpolicy_tiered`, `compile_node` of the same cluster
//!   with 100 guardrail ClusterNetworkPolicies of 10 rules each
//!   ([`policy_compiler::generate::guardrails`]: four in five Admin; subjects by namespace `env` or
//!   `team` and by pod `tier`; rules on monitoring, development namespaces, databases, DNS, the
//!   metadata service, control-plane nodes, blocklisted networks, and a Pass for the cluster range).
//!   The bench pods are subjects of some of them, so the first packet also crosses the Admin tier
//!   of both directions (subject set, peer class map, class decision map), whose rules pass it on
//!   to the NetworkPolicies; its verdicts on the bench flows are checked like (c)'s.
//! - (c0) `nftpolicy without counters`: (c) with every `counter name` statement and counter object
//!   taken out (the ruleset before it counted), to show what the counters cost;
//! - (f) `nftpolicy --deny-log --audit-all`: the same cluster compiled as `policyd --deny-log
//!   --audit-all` loads it (log rules before every drop point, every drop point a counted "would
//!   deny" that accepts), so 8081 passes too.
//!
//! # Measurements
//!
//! 1. **New connections per second** through `node-0`: [`CONN_WORKERS`] threads enter the client
//!    pod's namespace (`setns`) and loop on TCP connect + close to 10.64.0.240:8080, where
//!    [`AcceptServer`] ([`ACCEPT_THREADS`] threads, backlog [`ACCEPT_BACKLOG`]) accepts and closes.
//!    Both sides close with `SO_LINGER` 0 (an RST), so that no FIN_WAIT or TIME_WAIT state is left
//!    for a SYN that reuses the port to run into (with a FIN from the server, about one connection
//!    in 100k stalled 1 s on a SYN retransmission). The lab's own server is not used for this port:
//!    one thread serves every port of every pod with a listen backlog of 128, and when other
//!    processes keep the CPUs busy its accept queue fills with connections the client has already
//!    reset, SYNs are dropped (listen drops), and workers wait 1 s per retransmission (rates fell
//!    to a few hundred per second in some windows). From `bench/client` (same node) and from
//!    `bench/client-remote` (across nodes: through `node-1`, the fabric bridge, then `node-0`).
//!    [`CONN_ROUNDS`] rounds; each round measures every mode for [`CONN_SECS`] s per client, in an
//!    order that rotates every round. Reported: the median rate; the median over rounds of the
//!    ratio to (b) in the same round; and the CPU time per connection of this process (workers,
//!    accept threads, and the kernel work done in their context, which includes the forwarding
//!    through the nodes) plus `ksoftirqd`, with its median excess over (b): it varies much less
//!    than the rate when other processes load the machine. SYN retransmissions in the client and
//!    listen drops in the server are counted and shown when not zero.
//! 2. **Throughput of one established TCP flow**: `iperf3 -c` in `bench/client` against `iperf3 -s`
//!    in `bench/server` (port 5201), [`IPERF_ROUNDS`] rounds of [`IPERF_SECS`] s alternating (a)
//!    and (c); median receiver rate, and median per-round ratio.
//! 3. **`nft` apply time** in a namespace of its own: the full MEDIUM ruleset of `node-0` on an
//!    empty namespace ([`Dataplane::apply`] on a new dataplane: `Transaction::full`), then one pod
//!    added to the cluster, recompiled and applied on top (`Transaction::diff`); medians over
//!    [`APPLY_REPS`] repetitions (the table is deleted between them). The compile time is shown
//!    apart, and so is the one load of each table into `node-0` (the naive one included). Then
//!    what a `/metrics` scrape asks of the kernel: `nft -j list counters` and its parse on
//!    node-0's MEDIUM and LARGE tables, against one `nft -j list table`.
//!
//! Also printed: `nproc`, `uname -r`, `nft --version`, the load average before and after (other
//! processes on the machine show up there), and who used the CPU during the connection loops.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nftpolicy::dataplane::Dataplane;
use nftpolicy::kernel::{Kernel, NftKernel};
use policy_compiler::generate::{guardrails, workload, WorkloadSize};
use policy_compiler::model::{
    Namespace, NamespaceScope, ObjectRef, Peer, Pod, PodPeer, PodPhase, Policy, PolicyPort,
    PortSpec, Rule,
};
use policy_compiler::nft::interp::{self, Packet};
use policy_compiler::nft::json::parse_counters;
use policy_compiler::nft::{
    AddrField, BaseChain, Chain, Match, Rule as NftRule, Ruleset, SetElement, Verdict, TABLE_NAME,
};
use policy_compiler::plan::{compile_node_with, CompileOptions, DenyLog};
use policy_compiler::selector::{LabelSelector, Labels};
use policy_compiler::{compile_node, Cidr, ClusterState, Family, Protocol};
use policylab::lab::{netns, Lab, LabSpec, Netns, PodSpec};

/// Worker threads of the connection loop.
const CONN_WORKERS: usize = 4;
/// Rounds of the connection-rate part (each measures every mode once per client).
const CONN_ROUNDS: usize = 5;
/// Seconds per connection-rate measurement.
const CONN_SECS: f64 = 2.0;
/// Rounds of the throughput part (each measures both modes once).
const IPERF_ROUNDS: usize = 4;
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
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 64, 25, 241);
const REMOTE_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 64, 26, 241);
/// Served by [`AcceptServer`] in `bench/server` (accept and close); allowed by the policy.
const CONN_PORT: u16 = 8080;
/// Threads of the [`AcceptServer`], and their name.
const ACCEPT_THREADS: usize = 2;
const ACCEPT_THREAD_NAME: &str = "bench-accept";
/// Listen backlog of the [`AcceptServer`] (the kernel caps it at `net.core.somaxconn`, 4096).
const ACCEPT_BACKLOG: libc::c_int = 4096;
/// Served by the lab's server in `bench/server` (for the mode checks); not allowed by the policy.
const DENIED_PORT: u16 = 8081;
/// iperf3 (or the built-in stream) in `bench/server`; allowed by the policy.
const STREAM_PORT: u16 = 5201;
/// The tables of modes (b) and (d); (c) is nftpolicy's own `inet nftpolicy`.
const TABLE_CT_ONLY: &str = "nftpolicy_ctonly";
const TABLE_NAIVE: &str = "nftpolicy_naive";
/// The table of mode (e).
const TABLE_TIERED: &str = "nftpolicy_tiered";
/// The table of mode (c0): (c) without its counters, as the ruleset was before it had them.
const TABLE_UNCOUNTED: &str = "nftpolicy_uncounted";
/// The table of mode (f): (c) compiled with the deny log and every policy in audit mode.
const TABLE_AUDIT: &str = "nftpolicy_audit";
/// ClusterNetworkPolicies of mode (e), of [`guardrails::RULES_PER_POLICY`] rules each.
const CLUSTER_POLICIES: usize = 100;

/// What `node-0` enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    NoTable,
    CtOnly,
    Uncounted,
    Nftpolicy,
    Naive,
    Tiered,
    AuditLog,
}

impl Mode {
    const ALL: [Mode; 7] = [
        Mode::NoTable,
        Mode::CtOnly,
        Mode::Uncounted,
        Mode::Nftpolicy,
        Mode::Naive,
        Mode::Tiered,
        Mode::AuditLog,
    ];

    fn label(self) -> &'static str {
        match self {
            Mode::NoTable => "(a) no table",
            Mode::CtOnly => "(b) ct only",
            Mode::Nftpolicy => "(c) nftpolicy",
            Mode::Naive => "(d) naive",
            Mode::Tiered => "(e) nftpolicy + 100 CNPs",
            Mode::Uncounted => "(c0) nftpolicy without counters",
            Mode::AuditLog => "(f) nftpolicy --deny-log --audit-all",
        }
    }

    /// The table awake in this mode.
    fn table(self) -> Option<&'static str> {
        match self {
            Mode::NoTable => None,
            Mode::CtOnly => Some(TABLE_CT_ONLY),
            Mode::Nftpolicy => Some(TABLE_NAME),
            Mode::Naive => Some(TABLE_NAIVE),
            Mode::Tiered => Some(TABLE_TIERED),
            Mode::Uncounted => Some(TABLE_UNCOUNTED),
            Mode::AuditLog => Some(TABLE_AUDIT),
        }
    }

    /// Whether the mode enforces the policy (denies the server's port 8081); (f) audits it.
    fn enforces(self) -> bool {
        matches!(
            self,
            Mode::Uncounted | Mode::Nftpolicy | Mode::Naive | Mode::Tiered
        )
    }
}

/// The rulesets of the modes that have one.
struct Rulesets {
    ct_only: Ruleset,
    compiled: Ruleset,
    naive: Ruleset,
    tiered: Ruleset,
    uncounted: Ruleset,
    audit: Ruleset,
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to parse.
    if let Err(e) = policylab::lab::preflight() {
        if std::env::var("NFTPOLICY_REQUIRE_LAB").as_deref() == Ok("1") {
            eprintln!("dataplane bench: the lab is required (NFTPOLICY_REQUIRE_LAB=1): {e}");
            std::process::exit(1);
        }
        eprintln!("\n!!!!!!!! SKIPPED dataplane bench: {e} !!!!!!!!\n");
        return;
    }
    let started = Instant::now();
    println!("# nftpolicy dataplane bench\n");
    println!(
        "machine: nproc {}, kernel {}, {}; load average at start {}",
        output("nproc", &[]),
        output("uname", &["-r"]),
        output("nft", &["--version"]),
        load_average(),
    );

    // The cluster, the rulesets, and the check that (c) and (d) mean the same.
    let cluster = bench_cluster();
    let t = Instant::now();
    let compiled = compile_node(&cluster, NODE);
    let compile_ms = ms(t.elapsed());
    let naive = naive(&compiled);
    let tiered_cluster =
        guardrails::with_guardrails(&cluster, 42, CLUSTER_POLICIES, WorkloadSize::MEDIUM.nodes);
    let t = Instant::now();
    let tiered = compile_node(&tiered_cluster, NODE);
    let tiered_compile_ms = ms(t.elapsed());
    let audit = compile_node_with(
        &cluster,
        NODE,
        &CompileOptions {
            deny_log: Some(DenyLog::DEFAULT),
            audit_all: true,
        },
    )
    .ruleset;
    let rulesets = Rulesets {
        ct_only: ct_only(),
        uncounted: uncounted(&compiled),
        compiled,
        naive,
        tiered,
        audit,
    };
    let paths = check_equivalent(&cluster, &rulesets);
    let payments = cluster
        .pods()
        .values()
        .filter(|p| p.participates() && p.ip(Family::V4).is_some())
        .filter(|p| {
            cluster
                .namespace(&p.id.namespace)
                .is_some_and(|n| n.labels.get("team") == Some("payments"))
        })
        .count();
    println!(
        "cluster: MEDIUM workload (seed 42) + namespace {BENCH_NS}: {} pods, {} policies; the \
         server's allowed peers (team=payments namespaces): {payments} IPv4 pods\n\
         ruleset of {NODE}: {} chains, {} rules, {} sets + {} maps, {} elements (compile_node: \
         {compile_ms:.0} ms)\nnaive ruleset: {} chains, {} rules, no sets or maps; verdicts \
         equal to the compiled ones on {} sampled packets",
        cluster.pods().len(),
        cluster.policies().len(),
        rulesets.compiled.chains.len(),
        rulesets.compiled.rule_count(),
        rulesets.compiled.sets.len(),
        rulesets.compiled.maps.len(),
        rulesets.compiled.element_count(),
        rulesets.naive.chains.len(),
        rulesets.naive.rule_count(),
        paths.compared,
    );
    println!(
        "mode (e): the same cluster with {CLUSTER_POLICIES} guardrail ClusterNetworkPolicies of {} \
         rules each (policy_compiler::generate::guardrails); ruleset of {NODE}: {} chains, {} rules, {} sets + {} maps + {} decision maps, {} \
         elements (compile_node: {tiered_compile_ms:.0} ms)",
        guardrails::RULES_PER_POLICY,
        rulesets.tiered.chains.len(),
        rulesets.tiered.rule_count(),
        rulesets.tiered.sets.len(),
        rulesets.tiered.maps.len(),
        rulesets.tiered.decision_maps.len(),
        rulesets.tiered.element_count(),
    );

    let lab = Lab::create(&lab_spec()).expect("cannot create the lab (see the error)");
    let node_ns = lab
        .node_netns(NODE)
        .expect("the lab has node-0")
        .to_string();
    let (tables, loads) = Tables::load(NftKernel::in_netns(&node_ns), &rulesets);
    // The lab's server (one thread for all ports of all pods, listen backlog 128) falls behind when
    // the CPUs are busy: the connections the client has already reset fill its accept queue, the
    // next SYNs are dropped, and the worker that sent one waits 1 s for the retransmission. Hence a
    // server of our own for the measured port (the lab's serves the denied port).
    let server_ns = Ns::open(lab.pod_netns(SERVER).expect("the server pod"));
    let accept_server = AcceptServer::start(&server_ns, SocketAddr::new(ip4(SERVER_IP), CONN_PORT));

    let conn = conn_rates(&lab, &tables);
    let stream = throughput(&lab, &tables);
    drop(accept_server);
    let apply = apply_times(&cluster);

    print_report(&conn, &paths, &stream, &apply, &loads);
    println!("\nload average at the end {}", load_average());
    lab.teardown().expect("cannot remove the lab's namespaces");
    println!("total bench time {:.0} s", started.elapsed().as_secs_f64());
}

// -------------------------------------------------------------------------------------------------
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
        node: Some(node.into()),
        ips: vec![ip4(ip)],
        host_network: false,
        host_ips: vec![],
        phase: PodPhase::Active,
        ports: vec![],
        owner: None,
        live: true,
        workload: None,
    }
}

fn allowed_ports() -> Vec<PolicyPort> {
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
        enforcement: policy_compiler::model::Enforcement::Enforce,
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
            ports: allowed_ports(),
        }],
        egress: vec![],
        enforcement: policy_compiler::model::Enforcement::Enforce,
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
            ports: allowed_ports(),
        }],
        enforcement: policy_compiler::model::Enforcement::Enforce,
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
        nodes: vec![NODE.into(), REMOTE_NODE.into()],
        pods: vec![
            // Port 8080 is served by the bench's own [`AcceptServer`].
            pod(SERVER, NODE, SERVER_IP, vec![(DENIED_PORT, Protocol::Tcp)]),
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
                base: Some(BaseChain::forward(priority)),
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

/// Mode (d): `compiled` without named sets or maps (see the module doc): each verdict-map rule
/// becomes one `jump` rule per map element, and each rule referencing sets becomes one rule per
/// element (per combination of elements).
fn naive(compiled: &Ruleset) -> Ruleset {
    let mut out = Ruleset {
        // The same counters, counted by the expanded rules.
        counters: compiled.counters.clone(),
        ..Ruleset::default()
    };
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

/// How many rules the first packet of the same-node bench flow crosses, per mode.
#[derive(Debug)]
struct Paths {
    /// (mode, same node?) → rules crossed by the SYN from `bench/client` (same node) or
    /// `bench/client-remote` to the server's port 8080.
    syn_rules: BTreeMap<(Mode, bool), usize>,
    /// Packets on which the naive and compiled rulesets were compared.
    compared: usize,
}

/// Checks on the model that (c) and (d) give the same verdicts for the bench flows and for a sample
/// of node-0 pod pairs, and counts the rules the bench SYN crosses.
fn check_equivalent(cluster: &ClusterState, rulesets: &Rulesets) -> Paths {
    let syn = |src: Ipv4Addr, dport: u16| Packet {
        src: ip4(src),
        dst: ip4(SERVER_IP),
        transport: Some((Protocol::Tcp, dport)),
        established: false,
        to_node: false,
    };
    let bench_flows = [
        (syn(CLIENT_IP, CONN_PORT), true),
        (syn(CLIENT_IP, STREAM_PORT), true),
        (syn(REMOTE_CLIENT_IP, CONN_PORT), true),
        (syn(CLIENT_IP, DENIED_PORT), false),
    ];
    for (p, expected) in &bench_flows {
        for (mode, ruleset) in [
            (Mode::Nftpolicy, &rulesets.compiled),
            (Mode::Tiered, &rulesets.tiered),
            (Mode::Uncounted, &rulesets.uncounted),
            (Mode::AuditLog, &rulesets.audit),
        ] {
            let ok = interp::evaluate(ruleset, p)
                .expect("the compiled rulesets evaluate")
                .accepted;
            let expected = *expected || !mode.enforces();
            assert_eq!(
                ok,
                expected,
                "bench flow {p:?} in {}: allowed should be {expected}",
                mode.label()
            );
        }
    }
    let mut packets: Vec<Packet> = bench_flows.iter().map(|(p, _)| *p).collect();
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
    for (i, local) in node_pods.iter().enumerate().step_by(7) {
        for remote in others.iter().skip(i % 5).step_by(9) {
            for (protocol, dport) in [(Protocol::Tcp, 8080), (Protocol::Udp, 53)] {
                for (src, dst) in [(remote, local), (local, remote)] {
                    packets.push(Packet {
                        src: *src,
                        dst: *dst,
                        transport: Some((protocol, dport)),
                        established: false,
                        to_node: false,
                    });
                }
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
    assert!(
        allowed > bench_flows.len() && allowed < packets.len(),
        "the sample should hold both verdicts"
    );
    let mut syn_rules = BTreeMap::new();
    for mode in Mode::ALL {
        let ruleset = match mode {
            Mode::NoTable => None,
            Mode::CtOnly => Some(&rulesets.ct_only),
            Mode::Nftpolicy => Some(&rulesets.compiled),
            Mode::Naive => Some(&rulesets.naive),
            Mode::Tiered => Some(&rulesets.tiered),
            Mode::Uncounted => Some(&rulesets.uncounted),
            Mode::AuditLog => Some(&rulesets.audit),
        };
        for (same, syn) in [(true, &packets[0]), (false, &packets[2])] {
            let crossed = ruleset.map_or(0, |r| {
                interp::evaluate(r, syn)
                    .expect("the bench rulesets evaluate")
                    .rules_tried
            });
            syn_rules.insert((mode, same), crossed);
        }
    }
    Paths {
        syn_rules,
        compared: packets.len(),
    }
}

// -------------------------------------------------------------------------------------------------
// node-0's tables and modes.

/// node-0's three tables, loaded once; [`Tables::switch`] wakes the one of a mode and makes the
/// others dormant.
struct Tables {
    runner: NftKernel,
}

impl Tables {
    /// Loads (c) with the [`Dataplane`], then (b) and (d) as tables of their own, created dormant;
    /// returns how long each load took in `nft`, and leaves node-0 in mode (a).
    fn load(runner: NftKernel, rulesets: &Rulesets) -> (Tables, BTreeMap<Mode, Duration>) {
        let mut loads = BTreeMap::new();
        let mut dataplane = Dataplane::new(runner.clone());
        let report = dataplane
            .apply(&rulesets.compiled)
            .expect("cannot load the compiled ruleset");
        assert!(report.full, "a new dataplane replaces the table whole");
        loads.insert(Mode::Nftpolicy, report.duration);
        for (mode, ruleset) in [
            (Mode::CtOnly, &rulesets.ct_only),
            (Mode::Naive, &rulesets.naive),
            (Mode::Tiered, &rulesets.tiered),
            (Mode::Uncounted, &rulesets.uncounted),
            (Mode::AuditLog, &rulesets.audit),
        ] {
            let table = mode.table().expect("modes other than (a) have a table");
            let t = Instant::now();
            runner
                .run_script(&dormant_table(ruleset, table))
                .unwrap_or_else(|e| panic!("cannot load {}: {e}", mode.label()));
            loads.insert(mode, t.elapsed());
        }
        let tables = Tables { runner };
        tables.switch(Mode::NoTable);
        (tables, loads)
    }

    /// Makes node-0 enforce `mode`, in one transaction; returns how long `nft` took.
    fn switch(&self, mode: Mode) -> Duration {
        let mut script = String::new();
        for table in [
            TABLE_NAME,
            TABLE_CT_ONLY,
            TABLE_NAIVE,
            TABLE_TIERED,
            TABLE_UNCOUNTED,
            TABLE_AUDIT,
        ] {
            if mode.table() == Some(table) {
                let _ = writeln!(script, "add table inet {table}");
            } else {
                let _ = writeln!(script, "add table inet {table} {{ flags dormant; }}");
            }
        }
        let t = Instant::now();
        self.runner
            .run_script(&script)
            .unwrap_or_else(|e| panic!("cannot switch node-0 to {}: {e}", mode.label()));
        t.elapsed()
    }
}

/// (c) without its counters: every `counter name` statement and counter object taken out.
fn uncounted(compiled: &Ruleset) -> Ruleset {
    let mut out = compiled.clone();
    out.counters.clear();
    for chain in out.chains.values_mut() {
        for rule in &mut chain.rules {
            rule.matches.retain(|m| !matches!(m, Match::Counter(_)));
        }
    }
    out
}

/// `ruleset` as `nft -f` text for a dormant `table inet <table>` (replacing any table of that
/// name).
fn dormant_table(ruleset: &Ruleset, table: &str) -> String {
    let text = ruleset.render_table();
    let header = format!("table inet {TABLE_NAME} {{\n");
    let body = text
        .strip_prefix(&header)
        .expect("render_table starts with the table's header");
    format!(
        "add table inet {table}\ndelete table inet {table}\n\
         table inet {table} {{\n\tflags dormant\n{body}"
    )
}

/// Switches node-0 to `mode` and checks with connections from the client that it enforces what it
/// should: port 8080 always passes, port 8081 only without policy (else it is dropped: a timeout).
fn enter_mode(lab: &Lab, tables: &Tables, mode: Mode) -> Duration {
    let took = tables.switch(mode);
    let client = Ns::open(lab.pod_netns(CLIENT).expect("the client pod"));
    let outcomes = client.run(|| {
        [CONN_PORT, DENIED_PORT].map(|port| {
            let to = SocketAddr::new(ip4(SERVER_IP), port);
            match TcpStream::connect_timeout(&to, Duration::from_millis(500)) {
                Ok(_) => true,
                // Connected, and reset by the accept server before connect returned.
                Err(e) => e.kind() == ErrorKind::ConnectionReset,
            }
        })
    });
    assert_eq!(
        outcomes,
        [true, !mode.enforces()],
        "{}: ports {CONN_PORT} and {DENIED_PORT} should be [open, {}]",
        mode.label(),
        if mode.enforces() { "dropped" } else { "open" }
    );
    took
}

// -------------------------------------------------------------------------------------------------
// 1. New connections per second.

/// One connection-loop measurement.
#[derive(Debug, Clone, Copy, Default)]
struct ConnSample {
    rate: f64,
    /// Connects that failed (refused, timed out, ...).
    failures: u64,
    /// CPU time of this process and of the `ksoftirqd` threads per connection, in µs.
    cpu_per_conn_us: f64,
    /// CPU time of the `ksoftirqd` threads (packet processing deferred out of our threads), in % of
    /// one CPU.
    ksoftirqd_cpu: f64,
    /// Machine busy time over the window, in % of all CPUs.
    busy: f64,
    /// CPU time of the client workers, in % of one CPU.
    workers_cpu: f64,
    /// CPU time of the accept threads, in % of one CPU.
    server_cpu: f64,
    /// SYN retransmissions in the client's namespace (a dropped SYN waits 1 s).
    syn_retrans: u64,
    /// Listen-queue drops (overflows included) in the server's namespace.
    listen_drops: u64,
    /// Conntrack entries in node-0 after the window.
    conntrack: u64,
}

#[derive(Debug, Default)]
struct ConnResults {
    /// (mode, same node?) → one sample per round.
    samples: BTreeMap<(Mode, bool), Vec<ConnSample>>,
    /// How long the mode switches took in `nft`.
    switches: Vec<Duration>,
    conntrack_max: u64,
}

/// Open namespaces and names the measurement needs.
struct ConnSetup {
    clients: [(bool, Ns); 2],
    server: Ns,
    node: Ns,
    /// `/proc/<pid>` of each `ksoftirqd/N` kernel thread.
    ksoftirqd: Vec<std::path::PathBuf>,
    target: SocketAddr,
}

fn conn_rates(lab: &Lab, tables: &Tables) -> ConnResults {
    let pod_ns = |id: &str| Ns::open(lab.pod_netns(id).expect("a pod of the bench"));
    let setup = ConnSetup {
        clients: [(true, pod_ns(CLIENT)), (false, pod_ns(REMOTE_CLIENT))],
        server: pod_ns(SERVER),
        node: Ns::open(lab.node_netns(NODE).expect("the lab has node-0")),
        ksoftirqd: ksoftirqd_tasks(),
        target: SocketAddr::new(ip4(SERVER_IP), CONN_PORT),
    };
    let mut results = ConnResults {
        conntrack_max: read_u64("/proc/sys/net/netfilter/nf_conntrack_max").unwrap_or(0),
        ..ConnResults::default()
    };
    println!(
        "\n1. new connections: {CONN_ROUNDS} rounds x {} modes x 2 clients x {CONN_SECS} s, \
         {CONN_WORKERS} workers ...",
        Mode::ALL.len()
    );
    // Warm-up: the flows work under the policy, and the first connections' costs are paid.
    enter_mode(lab, tables, Mode::Nftpolicy);
    for (_, client) in &setup.clients {
        let warm = conn_loop(client, setup.target, Duration::from_millis(300));
        assert!(
            warm.0 > 10 && warm.1 == 0,
            "the bench flow does not work under the compiled ruleset: {} connections, {} failures",
            warm.0,
            warm.1
        );
    }
    for round in 0..CONN_ROUNDS {
        for k in 0..Mode::ALL.len() {
            let mode = Mode::ALL[(k + round) % Mode::ALL.len()];
            results.switches.push(enter_mode(lab, tables, mode));
            for (same_node, client) in &setup.clients {
                let sample = measure_conns(&setup, client);
                results
                    .samples
                    .entry((mode, *same_node))
                    .or_default()
                    .push(sample);
            }
        }
        eprintln!("   round {}/{CONN_ROUNDS} done", round + 1);
    }
    results
}

/// The counters read around a window of the connection loop.
struct Counters {
    /// CPU time of this process.
    process: Duration,
    /// CPU time of the `ksoftirqd` threads.
    ksoftirqd: Duration,
    /// CPU time of the accept threads.
    accept: Duration,
    machine: CpuTimes,
    syn_retrans: u64,
    listen_drops: u64,
}

impl Counters {
    fn read(setup: &ConnSetup, client: &Ns) -> Counters {
        Counters {
            process: process_cpu(),
            ksoftirqd: setup.ksoftirqd.iter().map(|p| task_cpu(p)).sum(),
            accept: threads_cpu(ACCEPT_THREAD_NAME),
            machine: cpu_times(),
            syn_retrans: tcp_ext(client, &["TCPSynRetrans"]),
            listen_drops: tcp_ext(&setup.server, &["ListenDrops"]),
        }
    }
}

/// One window of the connection loop from `client`, with the counters around it.
fn measure_conns(setup: &ConnSetup, client: &Ns) -> ConnSample {
    let before = Counters::read(setup, client);
    let window = Duration::from_secs_f64(CONN_SECS);
    let (ok, failures, workers_cpu) = conn_loop(client, setup.target, window);
    let after = Counters::read(setup, client);
    let secs = window.as_secs_f64();
    let percent = |d: Duration| d.as_secs_f64() / secs * 100.0;
    let ksoftirqd = after.ksoftirqd.saturating_sub(before.ksoftirqd);
    let ours = after.process.saturating_sub(before.process) + ksoftirqd;
    ConnSample {
        rate: ok as f64 / secs,
        failures,
        cpu_per_conn_us: ours.as_secs_f64() * 1e6 / ok.max(1) as f64,
        ksoftirqd_cpu: percent(ksoftirqd),
        busy: after.machine.busy_since(before.machine),
        workers_cpu: percent(workers_cpu),
        server_cpu: percent(after.accept.saturating_sub(before.accept)),
        syn_retrans: after.syn_retrans.saturating_sub(before.syn_retrans),
        listen_drops: after.listen_drops.saturating_sub(before.listen_drops),
        conntrack: conntrack_count(&setup.node),
    }
}

/// The connection loop's server: [`ACCEPT_THREADS`] threads accept on one listener (backlog
/// [`ACCEPT_BACKLOG`]) in the server pod, and close each connection at once. Stopped on drop.
struct AcceptServer {
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl AcceptServer {
    fn start(netns: &Ns, addr: SocketAddr) -> AcceptServer {
        let listener = netns
            .run(|| TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("cannot bind {addr} in the server pod: {e}"));
        // SAFETY: listen on a bound, listening socket that `listener` keeps open only changes its
        // backlog.
        let rc = unsafe { libc::listen(listener.as_raw_fd(), ACCEPT_BACKLOG) };
        assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..ACCEPT_THREADS)
            .map(|_| {
                let (listener, stop) = (Arc::clone(&listener), Arc::clone(&stop));
                std::thread::Builder::new()
                    .name(ACCEPT_THREAD_NAME.to_string())
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            match listener.accept() {
                                Ok((stream, _)) => {
                                    // An RST too: no FIN_WAIT or TIME_WAIT state that a SYN
                                    // reusing the port could run into.
                                    let _ = reset_on_close(&stream);
                                    drop(stream);
                                }
                                Err(_) => std::thread::sleep(Duration::from_millis(1)),
                            }
                        }
                    })
                    .expect("cannot start an accept thread")
            })
            .collect();
        AcceptServer {
            listener,
            stop,
            threads,
        }
    }
}

impl Drop for AcceptServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // SAFETY: shutting down the open listener wakes the threads blocked in accept (EINVAL).
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A lab namespace, open to be entered by the bench's threads (with the lab's [`netns`] code).
struct Ns {
    file: File,
    name: String,
}

impl Ns {
    fn open(name: &str) -> Ns {
        Ns {
            file: netns::open(name).unwrap_or_else(|e| panic!("{e}")),
            name: name.to_string(),
        }
    }

    /// Moves the calling thread into the namespace. Only for threads this bench spawns for the
    /// purpose (they end with the measurement).
    fn enter(&self) {
        netns::enter(&self.file, &self.name).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs `f` on a new thread inside the namespace.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        netns::run_in(&self.file, &self.name, f).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// [`CONN_WORKERS`] threads in the client's namespace connect and close as fast as they can for
/// `window`; connections completed after it are not counted. Returns (connections, failures, CPU
/// time of the workers).
fn conn_loop(client: &Ns, to: SocketAddr, window: Duration) -> (u64, u64, Duration) {
    let start = Barrier::new(CONN_WORKERS + 1);
    let stop = AtomicBool::new(false);
    let per_worker: Vec<(u64, u64, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CONN_WORKERS)
            .map(|_| {
                s.spawn(|| {
                    client.enter();
                    start.wait();
                    let cpu_before = thread_self_cpu();
                    let (mut ok, mut failed) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        match TcpStream::connect(to) {
                            Ok(stream) => {
                                reset_on_close(&stream).expect("setsockopt(SO_LINGER)");
                                drop(stream);
                                if !stop.load(Ordering::Relaxed) {
                                    ok += 1;
                                }
                            }
                            // The handshake completed, and the server's RST came in before
                            // connect returned (a refused SYN gives ECONNREFUSED).
                            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                                if !stop.load(Ordering::Relaxed) {
                                    ok += 1;
                                }
                            }
                            Err(_) => {
                                failed += 1;
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                    (ok, failed, thread_self_cpu().saturating_sub(cpu_before))
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
    (
        per_worker.iter().map(|w| w.0).sum(),
        per_worker.iter().map(|w| w.1).sum(),
        per_worker.iter().map(|w| w.2).sum(),
    )
}

/// `SO_LINGER` 0: close sends an RST and leaves no FIN_WAIT or TIME_WAIT state behind.
fn reset_on_close(stream: &TcpStream) -> std::io::Result<()> {
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
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn rusage_cpu(who: libc::c_int) -> Duration {
    // SAFETY: an all-zero rusage is a valid value, which getrusage overwrites.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, exclusively borrowed rusage.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time (user + system) of the calling thread.
fn thread_self_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_THREAD)
}

/// CPU time (user + system) of this process, all threads.
fn process_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_SELF)
}

/// CPU time (user + system) of this process's threads named `name` (at most 15 bytes, as the kernel
/// keeps them).
fn threads_cpu(name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .map(|t| t.path())
        .filter(|p| std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim_end() == name))
        .map(|p| task_cpu(&p))
        .sum()
}

/// `/proc/<pid>` of the `ksoftirqd/N` kernel threads.
fn ksoftirqd_tasks() -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .collect()
}

/// CPU time (user + system) of the task at `/proc/<pid>` or `/proc/self/task/<tid>`, or zero.
fn task_cpu(task: &std::path::Path) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let ticks = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    };
    let Ok(stat) = std::fs::read_to_string(task.join("stat")) else {
        return Duration::ZERO;
    };
    // After `(comm)`: the state is field 3, utime and stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    match fields[..] {
        [utime, stime] => Duration::from_secs_f64((utime + stime) as f64 / ticks),
        _ => Duration::ZERO,
    }
}

/// Busy and total time of all CPUs (`/proc/stat`, in ticks).
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    /// Busy time since `before`, in % of all CPUs.
    fn busy_since(self, before: CpuTimes) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(before.busy) as f64 / total as f64 * 100.0
    }
}

fn cpu_times() -> CpuTimes {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    }
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The sum of the `TcpExt` counters `keys` in the namespace.
fn tcp_ext(netns: &Ns, keys: &[&str]) -> u64 {
    let text =
        netns.run(|| std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default());
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let [names, values] = lines[..] else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(name, _)| keys.contains(name))
        .filter_map(|(_, value)| value.parse::<u64>().ok())
        .sum()
}

/// Conntrack entries in the namespace (the count is per namespace).
fn conntrack_count(netns: &Ns) -> u64 {
    netns.run(|| read_u64("/proc/sys/net/netfilter/nf_conntrack_count").unwrap_or(0))
}

// -------------------------------------------------------------------------------------------------
// 2. Throughput of an established flow.

#[derive(Debug, Default)]
struct StreamResults {
    /// "iperf 3.x" or the built-in stream.
    tool: String,
    /// Mode → one sample per round.
    samples: BTreeMap<Mode, Vec<StreamSample>>,
}

/// One stream measurement.
#[derive(Debug, Clone, Copy)]
struct StreamSample {
    /// Received, Gbit/s.
    gbps: f64,
    /// CPU use of the sending and the receiving process (or thread), % of one CPU.
    sender_cpu: f64,
    receiver_cpu: f64,
}

/// A child process killed and reaped on drop (and killed by the kernel if this process dies first:
/// `PR_SET_PDEATHSIG`).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ip netns exec NETNS PROGRAM ARGS...`, killed when the spawning thread ends. Spawn from the main
/// thread only.
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

fn throughput(lab: &Lab, tables: &Tables) -> StreamResults {
    let server_ns = lab.pod_netns(SERVER).expect("server pod").to_string();
    let client_ns = lab.pod_netns(CLIENT).expect("client pod").to_string();
    let iperf = Command::new("iperf3")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split(" (")
                .next()
                .unwrap_or("iperf3")
                .trim()
                .to_string()
        });
    let mut results = StreamResults {
        tool: iperf.clone().unwrap_or_else(|| {
            "built-in TCP stream (iperf3 not found: apt-get install iperf3)".to_string()
        }),
        ..StreamResults::default()
    };
    println!(
        "\n2. established-flow throughput: {IPERF_ROUNDS} rounds x 2 modes x {IPERF_SECS} s \
         with {} ...",
        results.tool
    );
    let port = STREAM_PORT.to_string();
    let _server = iperf.as_ref().map(|_| {
        ChildGuard(
            spawn_in_netns(&server_ns, "iperf3", &["-s", "-p", &port])
                .expect("cannot start iperf3 -s"),
        )
    });
    for round in 0..IPERF_ROUNDS {
        for k in 0..2 {
            let mode = [Mode::NoTable, Mode::Nftpolicy][(k + round) % 2];
            enter_mode(lab, tables, mode);
            let sample = if iperf.is_some() {
                iperf_run(&client_ns)
            } else {
                stream_run(lab)
            };
            results.samples.entry(mode).or_default().push(sample);
        }
    }
    results
}

/// One `iperf3 -c` run from the client pod: the receiver's rate, and iperf3's own CPU figures.
/// Retries while the server is starting.
fn iperf_run(client_ns: &str) -> StreamSample {
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
            let cpu = &json["end"]["cpu_utilization_percent"];
            return StreamSample {
                gbps: bps / 1e9,
                sender_cpu: cpu["host_total"].as_f64().unwrap_or(f64::NAN),
                receiver_cpu: cpu["remote_total"].as_f64().unwrap_or(f64::NAN),
            };
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
/// [`IPERF_SECS`] to one in the server pod, which reads and counts them.
fn stream_run(lab: &Lab) -> StreamSample {
    let server = Ns::open(lab.pod_netns(SERVER).expect("server pod"));
    let client = Ns::open(lab.pod_netns(CLIENT).expect("client pod"));
    let addr = SocketAddr::new(ip4(SERVER_IP), STREAM_PORT);
    let ready = Barrier::new(2);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            server.enter();
            let listener = TcpListener::bind(addr);
            ready.wait();
            let (mut conn, _) = listener
                .expect("cannot bind the stream server")
                .accept()
                .expect("the stream server cannot accept");
            let mut buf = vec![0u8; 1 << 17];
            let (mut bytes, t, cpu) = (0u64, Instant::now(), thread_self_cpu());
            while let Ok(n @ 1..) = conn.read(&mut buf) {
                bytes += n as u64;
            }
            let secs = t.elapsed().as_secs_f64();
            (
                bytes as f64 * 8.0 / secs / 1e9,
                thread_self_cpu().saturating_sub(cpu).as_secs_f64() / secs * 100.0,
            )
        });
        let writer = s.spawn(|| {
            client.enter();
            ready.wait();
            let mut conn = TcpStream::connect(addr).expect("cannot connect the stream");
            let buf = vec![0x5au8; 1 << 17];
            let (t, cpu) = (Instant::now(), thread_self_cpu());
            let end = t + Duration::from_secs(u64::from(IPERF_SECS));
            while Instant::now() < end && conn.write_all(&buf).is_ok() {}
            thread_self_cpu().saturating_sub(cpu).as_secs_f64() / t.elapsed().as_secs_f64() * 100.0
        });
        let (gbps, receiver_cpu) = reader.join().expect("the stream reader panicked");
        StreamSample {
            gbps,
            sender_cpu: writer.join().expect("the stream writer panicked"),
            receiver_cpu,
        }
    })
}

// -------------------------------------------------------------------------------------------------
// 3. Apply time.

#[derive(Debug, Default)]
struct ApplyResults {
    full: Vec<Duration>,
    full_ops: usize,
    add: Vec<Duration>,
    add_ops: Vec<usize>,
    compile: Vec<Duration>,
    /// Per workload size: counters in the table, `nft -j list counters` and parse times, and
    /// one `nft -j list table` (what a scrape avoids).
    scrape: Vec<Scrape>,
}

/// What reading the counters of one node's table costs (a `/metrics` scrape's kernel read).
#[derive(Debug)]
struct Scrape {
    size: &'static str,
    counters: usize,
    elements: usize,
    read: Vec<Duration>,
    list_table: Duration,
}

/// Loads `ruleset` into `runner`'s empty namespace and times the counter read, [`APPLY_REPS`]
/// times, against one listing of the whole table.
fn scrape_cost(runner: &NftKernel, size: &'static str, ruleset: &Ruleset) -> Scrape {
    runner.delete_table().expect("cannot delete the table");
    Dataplane::new(runner.clone())
        .apply(ruleset)
        .expect("the full load failed");
    let mut read = Vec::new();
    for _ in 0..APPLY_REPS {
        let t = Instant::now();
        let json = runner
            .list_counters()
            .expect("cannot list the counters")
            .expect("the table exists");
        let values = parse_counters(&json).expect("the listing parses");
        read.push(t.elapsed());
        assert_eq!(
            values.len(),
            ruleset.counters.len(),
            "every counter is listed"
        );
    }
    let t = Instant::now();
    runner.list_table().expect("cannot list the table");
    Scrape {
        size,
        counters: ruleset.counters.len(),
        elements: ruleset.element_count(),
        read,
        list_table: t.elapsed(),
    }
}

fn apply_times(cluster: &ClusterState) -> ApplyResults {
    println!("\n3. nft apply time: {APPLY_REPS} x (full load, then one pod added) ...");
    let ns = Netns::create("apply").unwrap_or_else(|e| panic!("{e}"));
    let runner = NftKernel::in_netns(ns.name());
    let full = compile_node(cluster, NODE);
    let template = cluster
        .pods()
        .values()
        // A deployment's pod (isolated, a peer of several policies), not a kube-system one.
        .find(|p| p.node.as_deref() == Some(NODE) && p.id.namespace.starts_with("ns-"))
        .expect("a workload pod on node-0")
        .clone();
    let mut results = ApplyResults::default();
    for i in 0..APPLY_REPS {
        runner
            .delete_table()
            .expect("cannot delete the table between repetitions");
        let mut dataplane = Dataplane::new(runner.clone());
        let report = dataplane.apply(&full).expect("the full load failed");
        assert!(report.full, "a new dataplane replaces the table whole");
        results.full.push(report.duration);
        results.full_ops = report.operations;

        // A replica of a node-0 deployment, at a free node-0 address.
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
    results.scrape.push(scrape_cost(&runner, "MEDIUM", &full));
    let large = workload(42, WorkloadSize::LARGE);
    results
        .scrape
        .push(scrape_cost(&runner, "LARGE", &compile_node(&large, NODE)));
    results
}

// -------------------------------------------------------------------------------------------------
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

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn durations_ms(values: &[Duration]) -> Vec<f64> {
    values.iter().map(|d| ms(*d)).collect()
}

fn print_report(
    conn: &ConnResults,
    paths: &Paths,
    stream: &StreamResults,
    apply: &ApplyResults,
    loads: &BTreeMap<Mode, Duration>,
) {
    println!("\n## Results\n");
    println!(
        "| measurement | mode | median | vs baseline | min-max | CPU µs/conn | rules/SYN | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut ratios_c = BTreeMap::new();
    for same in [true, false] {
        let what = if same {
            "new conn/s, same node"
        } else {
            "new conn/s, across nodes"
        };
        let base = conn
            .samples
            .get(&(Mode::CtOnly, same))
            .cloned()
            .unwrap_or_default();
        for mode in Mode::ALL {
            let samples = conn.samples.get(&(mode, same)).cloned().unwrap_or_default();
            let of = |f: fn(&ConnSample) -> f64| samples.iter().map(f).collect::<Vec<_>>();
            let rates = of(|s| s.rate);
            // The ratio to (b) within each round, then the median over rounds.
            let ratio = median(
                &samples
                    .iter()
                    .zip(&base)
                    .map(|(s, b)| s.rate / b.rate * 100.0)
                    .collect::<Vec<_>>(),
            );
            // The same for the CPU time per connection, as extra cost over (b).
            let cpu_extra = median(
                &samples
                    .iter()
                    .zip(&base)
                    .map(|(s, b)| (s.cpu_per_conn_us / b.cpu_per_conn_us - 1.0) * 100.0)
                    .collect::<Vec<_>>(),
            );
            if matches!(
                mode,
                Mode::Nftpolicy | Mode::Tiered | Mode::Uncounted | Mode::AuditLog
            ) {
                ratios_c.insert((mode, same), (ratio, cpu_extra));
            }
            let (lo, hi) = min_max(&rates);
            let crossed = paths.syn_rules.get(&(mode, same)).copied().unwrap_or(0);
            let mut notes = format!(
                "busy {:.0} %, workers {:.0} %, accept threads {:.0} %, ksoftirqd {:.0} %",
                median(&of(|s| s.busy)),
                median(&of(|s| s.workers_cpu)),
                median(&of(|s| s.server_cpu)),
                median(&of(|s| s.ksoftirqd_cpu)),
            );
            let sum = |f: fn(&ConnSample) -> u64| samples.iter().map(f).sum::<u64>();
            let (failures, retrans, drops) = (
                sum(|s| s.failures),
                sum(|s| s.syn_retrans),
                sum(|s| s.listen_drops),
            );
            if failures + retrans + drops > 0 {
                let _ = write!(
                    notes,
                    "; {failures} failed connects, {retrans} SYN retransmits, {drops} listen drops"
                );
            }
            println!(
                "| {what} | {} | {:.0} | {:.1} % | {lo:.0}-{hi:.0} | {:.1} ({cpu_extra:+.1} %) | \
                 {} | {notes} |",
                mode.label(),
                median(&rates),
                ratio,
                median(&of(|s| s.cpu_per_conn_us)),
                crossed,
            );
        }
    }
    let tp = |mode: Mode| stream.samples.get(&mode).cloned().unwrap_or_default();
    let base = tp(Mode::NoTable);
    let mut ratio_stream = f64::NAN;
    for mode in [Mode::NoTable, Mode::Nftpolicy] {
        let samples = tp(mode);
        let v: Vec<f64> = samples.iter().map(|s| s.gbps).collect();
        let ratio = median(
            &samples
                .iter()
                .zip(&base)
                .map(|(x, b)| x.gbps / b.gbps * 100.0)
                .collect::<Vec<_>>(),
        );
        if mode == Mode::Nftpolicy {
            ratio_stream = ratio;
        }
        let (lo, hi) = min_max(&v);
        println!(
            "| TCP stream Gbit/s, same node | {} | {:.2} | {ratio:.1} % | {lo:.2}-{hi:.2} | | | \
             {}; CPU: sender {:.0} %, receiver {:.0} % |",
            mode.label(),
            median(&v),
            stream.tool,
            median(&samples.iter().map(|s| s.sender_cpu).collect::<Vec<_>>()),
            median(&samples.iter().map(|s| s.receiver_cpu).collect::<Vec<_>>()),
        );
    }
    let full = durations_ms(&apply.full);
    let add = durations_ms(&apply.add);
    let (full_lo, full_hi) = min_max(&full);
    let (add_lo, add_hi) = min_max(&add);
    let add_ops = median(&apply.add_ops.iter().map(|&n| n as f64).collect::<Vec<_>>());
    println!(
        "| nft apply ms | (c) full MEDIUM load, empty netns | {:.1} | 100 % | \
         {full_lo:.1}-{full_hi:.1} | | | {} operations |",
        median(&full),
        apply.full_ops,
    );
    println!(
        "| nft apply ms | (c) pod add on top (diff) | {:.1} | {:.1} % | {add_lo:.1}-{add_hi:.1} \
         | | | {add_ops:.0} operation(s); compile_node before it: {:.0} ms (median) |",
        median(&add),
        median(&add) / median(&full) * 100.0,
        median(&durations_ms(&apply.compile)),
    );
    for scrape in &apply.scrape {
        let read = durations_ms(&scrape.read);
        let (lo, hi) = min_max(&read);
        println!(
            "| counters read ms (`nft -j list counters` + parse) | (c) {} table of {NODE} | {:.1} | \
             {:.1} % of a table listing | {lo:.1}-{hi:.1} | | | {} counters, {} elements; `nft -j \
             list table`: {:.0} ms |",
            scrape.size,
            median(&read),
            median(&read) / ms(scrape.list_table) * 100.0,
            scrape.counters,
            scrape.elements,
            ms(scrape.list_table),
        );
    }
    for mode in [
        Mode::CtOnly,
        Mode::Uncounted,
        Mode::Nftpolicy,
        Mode::Naive,
        Mode::Tiered,
        Mode::AuditLog,
    ] {
        if let Some(d) = loads.get(&mode) {
            println!(
                "| nft load ms, once, into {NODE} | {} | {:.0} | | | | | table inet {} |",
                mode.label(),
                ms(*d),
                mode.table().unwrap_or("-"),
            );
        }
    }
    let max_ct = conn
        .samples
        .values()
        .flatten()
        .map(|s| s.conntrack)
        .max()
        .unwrap_or(0);
    println!(
        "\n- Baselines: conn/s against (b) ct only, stream against (a) no table. A ratio is the \
         median over rounds of the ratio within the round."
    );
    println!(
        "- CPU µs/conn: CPU time of this process (client workers, accept threads, and the kernel \
         work done in their context, forwarding included) and of ksoftirqd, per connection; in \
         parentheses the median over rounds of its excess over (b). It varies much less than the \
         rate when other processes load the machine."
    );
    println!(
        "- rules/SYN: rules the first packet crosses in {NODE} (counted on the model). busy: the \
         whole machine, % of all CPUs; workers, accept threads, ksoftirqd: % of one CPU."
    );
    println!(
        "- Mode switches (one nft transaction): median {:.0} ms. Conntrack entries in {NODE}: at \
         most {max_ct} (nf_conntrack_max {}).",
        median(&durations_ms(&conn.switches)),
        conn.conntrack_max,
    );
    let verdict = |v: f64, target: f64| if v >= target { "met" } else { "NOT met" };
    let ratio = |mode: Mode, same: bool| {
        ratios_c
            .get(&(mode, same))
            .copied()
            .unwrap_or((f64::NAN, f64::NAN))
    };
    let ((same, same_cpu), (across, across_cpu)) =
        (ratio(Mode::Nftpolicy, true), ratio(Mode::Nftpolicy, false));
    let ((tiered_same, _), (tiered_across, _)) =
        (ratio(Mode::Tiered, true), ratio(Mode::Tiered, false));
    let ((uncounted_same, _), (uncounted_across, _)) =
        (ratio(Mode::Uncounted, true), ratio(Mode::Uncounted, false));
    let ((audit_same, _), (audit_across, _)) =
        (ratio(Mode::AuditLog, true), ratio(Mode::AuditLog, false));
    println!(
        "\nTargets: (c)/(b) new conn/s >= 90 %: same node {same:.1} % ({}), across nodes \
         {across:.1} % ({}) (CPU per connection {same_cpu:+.1} % and {across_cpu:+.1} %); \
         (e)/(b) new conn/s >= 90 %: same node {tiered_same:.1} % ({}), across nodes \
         {tiered_across:.1} % ({}); (c)/(a) stream >= 95 %: {ratio_stream:.1} % ({}).",
        verdict(same, 90.0),
        verdict(across, 90.0),
        verdict(tiered_same, 90.0),
        verdict(tiered_across, 90.0),
        verdict(ratio_stream, 95.0),
    );
    println!(
        "Counters: (c) with counters {same:.1} % / {across:.1} % against (c0) without them \
         {uncounted_same:.1} % / {uncounted_across:.1} % (same node / across nodes); (f) with the \
         deny log and every policy in audit mode {audit_same:.1} % / {audit_across:.1} %."
    );
}

/// The first line of a command's output, or `?`.
fn output(program: &str, args: &[&str]) -> String {
    nftpolicy::process::run(program, args, "")
        .ok()
        .and_then(|o| o.stdout.lines().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_string())
}
