//! The kernel apply at its floor: one element-only transaction (a peer-set element and a
//! verdict-map element added, then both deleted) through `nft -f -` against the same as an
//! nf_tables netlink batch, on node-0's ruleset of the medium (10k pods) and large (100k pods)
//! generated clusters, each loaded into a throwaway network namespace; and the named counters read
//! with `nft -j list counters` against a netlink dump. Needs root and nft.
//!
//! `cargo bench --bench kernel_apply` (as root). Not root: prints a `SKIPPED` banner and exits 0
//! (1 with `NFTPOLICY_REQUIRE_LAB=1`). The ways are interleaved run by run, so that the machine's
//! noise falls on all of them alike. Prints medians and p99 per way and size, and the ratios.
//!
//! - `nft -f`: `NftKernel::run_script(tx.render())`, what every transaction cost before;
//! - `netlink (Kernel::commit)`: as the agent commits: the batch sent on the socket the kernel
//!   keeps, every answer read;
//! - `netlink, new socket each time`: the same with a socket opened for each transaction (from a
//!   thread that enters the namespace), which is why the kernel keeps its socket.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use nftpolicy::dataplane::Dataplane;
use nftpolicy::kernel::netlink::{ElementBatch, NfTablesSocket};
use nftpolicy::kernel::{Kernel, NftKernel};
use policy_compiler::cidr::Family;
use policy_compiler::generate::{workload, WorkloadSize};
use policy_compiler::nft::json::{parse_counters, parse_table};
use policy_compiler::nft::transaction::{Op, Transaction};
use policy_compiler::nft::{Ruleset, SetElement, SetType};
use policy_compiler::plan::compile_node;
use policylab::lab::Netns;
use support::percentile;

const RUNS: usize = 50;
const COUNTER_RUNS: usize = 20;

/// The pair of transactions: add a new address to a peer set and to a verdict map, then delete it.
fn transactions(ruleset: &Ruleset) -> (Transaction, Transaction) {
    let (set, _) = ruleset
        .sets
        .iter()
        .filter(|(_, s)| s.set_type == SetType::Addr(Family::V4))
        .max_by_key(|(_, s)| s.elements.len())
        .expect("an IPv4 peer set");
    let (map, vmap) = ruleset
        .maps
        .iter()
        .filter(|(_, m)| m.family == Family::V4)
        .max_by_key(|(_, m)| m.elements.len())
        .expect("an IPv4 verdict map");
    let chain = vmap
        .elements
        .values()
        .next()
        .expect("a map element")
        .clone();
    let new = IpAddr::V4(Ipv4Addr::new(10, 250, 250, 250));
    let add = Transaction {
        ops: vec![
            Op::AddElements(set.clone(), vec![SetElement::Addr(new)]),
            Op::AddMapElements(map.clone(), vec![(new, chain)]),
        ],
    };
    let delete = Transaction {
        ops: vec![
            Op::DeleteElements(set.clone(), vec![SetElement::Addr(new)]),
            Op::DeleteMapElements(map.clone(), vec![new]),
        ],
    };
    (add, delete)
}

struct Stats {
    median: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    Stats {
        median: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn measure(label: &str, size: WorkloadSize) {
    let ns = Netns::create("apply").unwrap_or_else(|e| panic!("{e}"));
    let kernel = NftKernel::in_netns(ns.name());
    let ruleset = compile_node(&workload(42, size), "node-0");
    let load = time(|| {
        Dataplane::new(kernel.clone())
            .apply(&ruleset)
            .map(|_| ())
            .expect("the full load");
    });
    let listing =
        || parse_table(&kernel.list_table().expect("list").expect("table")).expect("parse");
    let before = listing();
    let (add, delete) = transactions(&ruleset);
    let (add_batch, delete_batch) = (
        ElementBatch::from_transaction(&add).expect("element-only"),
        ElementBatch::from_transaction(&delete).expect("element-only"),
    );
    let mut nft = Vec::new();
    let mut commit = Vec::new();
    let mut batch = Vec::new();
    for _ in 0..RUNS {
        for tx in [&add, &delete] {
            nft.push(time(|| kernel.run_script(&tx.render()).expect("nft -f")));
        }
        for tx in [&add, &delete] {
            commit.push(time(|| kernel.commit(tx).expect("netlink commit")));
        }
        for b in [&add_batch, &delete_batch] {
            batch.push(time(|| {
                let mut socket = NfTablesSocket::open(Some(ns.name())).expect("a netlink socket");
                socket.commit(b).expect("netlink batch");
            }));
        }
    }
    assert!(listing() == before, "every add was deleted again");

    let mut list_counters = Vec::new();
    let mut dump_counters = Vec::new();
    for _ in 0..COUNTER_RUNS {
        let mut json = None;
        list_counters.push(time(|| {
            let text = kernel.list_counters().expect("list").expect("table");
            json = Some(parse_counters(&text).expect("parse"));
        }));
        let mut dumped = None;
        dump_counters.push(time(|| {
            dumped = Some(kernel.counter_values().expect("dump"));
        }));
        assert_eq!(json, dumped, "both reads give the same counters");
    }

    println!(
        "\n## {label}: node-0 holds {} elements, {} rules, {} counters (full load {:.0} ms)\n",
        ruleset.element_count(),
        ruleset.rule_count(),
        ruleset.counters.len(),
        ms(load)
    );
    println!("| way | runs | median ms | p99 ms | median vs nft -f |");
    println!("|---|---|---|---|---|");
    rows(vec![
        ("element tx: nft -f", nft),
        ("element tx: netlink (Kernel::commit, kept socket)", commit),
        ("element tx: netlink, new socket each time", batch),
    ]);
    rows(vec![
        ("counters: nft -j list counters + parse", list_counters),
        ("counters: netlink dump", dump_counters),
    ]);
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    if let Err(e) = policylab::lab::preflight() {
        if std::env::var("NFTPOLICY_REQUIRE_LAB").as_deref() == Ok("1") {
            eprintln!("kernel_apply bench: the lab is required (NFTPOLICY_REQUIRE_LAB=1): {e}");
            std::process::exit(1);
        }
        eprintln!("\n!!!!!!!! SKIPPED kernel_apply bench: {e} !!!!!!!!\n");
        return;
    }
    println!("# Kernel apply: nft -f against netlink");
    println!(
        "\none transaction = a peer-set element add + a verdict-map element add, or the matching \
         delete; {RUNS} adds and {RUNS} deletes per way, interleaved"
    );
    measure("MEDIUM (10k pods)", WorkloadSize::MEDIUM);
    measure("LARGE (100k pods)", WorkloadSize::LARGE);
}

/// Prints one table row per way, each median against the first way's.
fn rows(ways: Vec<(&str, Vec<Duration>)>) {
    let Some(base) = ways
        .first()
        .map(|(_, samples)| stats(samples.clone()).median)
    else {
        return;
    };
    for (way, samples) in ways {
        let n = samples.len();
        let s = stats(samples);
        println!(
            "| {way} | {n} | {:.3} | {:.3} | {:.4} |",
            ms(s.median),
            ms(s.p99),
            s.median.as_secs_f64() / base.as_secs_f64()
        );
    }
}
