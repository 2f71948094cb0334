//! Start-up of the agent from the Kubernetes source: the generated medium and large clusters are
//! loaded into the fake API server of the tests (tests/kube_support), and the Kubernetes source
//! (kube's client, pages of 500) feeds the reconcile loop on the fake kernel. Measured: the time to
//! the initial lists of every kind (the last `ListEnd`), the time to ready (the first sync committed),
//! the process's resident memory then (VmRSS and VmHWM); then a restart over the same, unchanged
//! cluster: a new agent on a kernel that holds the table the first one committed, its time to
//! ready and the transactions it sent (none expected).
//!
//! Three kinds of process, so that each agent's memory is its own: this one orchestrates, a child
//! serves the fake API (it holds the cluster as JSON), and each run is a fresh child holding the
//! source and the agent (and the fake kernel's copy of the table, which a real kernel would hold
//! outside the process).
//!
//! `cargo bench --bench startup` (no root needed; a few minutes). `STARTUP_RUNS=medium:3,large:3`
//! chooses the sizes and the runs of each.

#[path = "../tests/kube_support/mod.rs"]
mod kube_support;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_support::FakeApi;
use nftpolicy::agent::{Agent, AgentConfig, Health};
use nftpolicy::dataplane::Dataplane;
use nftpolicy::kernel::FakeKernel;
use nftpolicy::metrics::Metrics;
use nftpolicy::source::kube::{client, run, SourceMetrics, WatchOptions};
use nftpolicy::source::{Kind, Update};
use policy_compiler::generate::{workload, WorkloadSize};
use policy_compiler::manifest::cluster_manifests;
use support::block_on;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Which process this is: unset (the orchestrator), `serve` or `agent`.
const ROLE: &str = "STARTUP_ROLE";
const SIZE: &str = "STARTUP_SIZE";
const URL: &str = "STARTUP_URL";
const NODE: &str = "node-0";

fn size_named(name: &str) -> WorkloadSize {
    WorkloadSize::named(name).unwrap_or_else(|| panic!("unknown size {name}"))
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("serve") => serve(&std::env::var(SIZE).expect("a size")),
        Ok("agent") => agent(&std::env::var(URL).expect("a URL")),
        _ => orchestrate(),
    }
}

/// The fake API server with the generated cluster; prints its URL, serves until stdin closes.
fn serve(size: &str) {
    block_on(async {
        let fake = FakeApi::start().await;
        let items = cluster_manifests(&workload(42, size_named(size)));
        for item in items {
            let plural = match item["kind"].as_str() {
                Some("Namespace") => "namespaces",
                Some("Pod") => "pods",
                Some("NetworkPolicy") => "networkpolicies",
                Some("Node") => "nodes",
                Some("ClusterNetworkPolicy") => "clusternetworkpolicies",
                other => panic!("an unexpected kind {other:?}"),
            };
            fake.apply(plural, item);
        }
        println!("{}", fake.url);
        std::io::stdout().flush().expect("stdout");
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
        })
        .await
        .expect("stdin");
    });
}

/// One start of the agent and what it took.
struct Started {
    listed: Duration,
    ready: Duration,
    nft_called: bool,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the source and the agent on `kernel` (reading its table first, as policyd does) and
/// waits for the first sync.
async fn start(client: kube::Client, kernel: FakeKernel) -> Started {
    let t0 = Instant::now();
    let dataplane = Dataplane::from_kernel(kernel).expect("the fake lists");
    let (otx, mut reports) = mpsc::unbounded_channel();
    let agent = Agent::new(
        AgentConfig::new(NODE),
        dataplane,
        Arc::new(Metrics::new()),
        Arc::new(Health::default()),
    )
    .with_observer(otx);
    let (source_tx, mut source_rx) = mpsc::channel::<Update>(1024);
    let (agent_tx, agent_rx) = mpsc::channel(1024);
    let listed = Arc::new(Mutex::new(None));
    let seen = listed.clone();
    // Between the two: notes when every kind's first list has ended.
    let forward = tokio::spawn(async move {
        let mut ended = Vec::new();
        while let Some(update) = source_rx.recv().await {
            if let Some(kind) = update.completes_list() {
                if !ended.contains(&kind) {
                    ended.push(kind);
                    if ended.len() == Kind::ENFORCED.len() {
                        *seen.lock().expect("lock") = Some(t0.elapsed());
                    }
                }
            }
            if agent_tx.send(update).await.is_err() {
                return;
            }
        }
    });
    let agent = tokio::spawn(agent.run(agent_rx));
    let source = tokio::spawn(run(
        client,
        WatchOptions::new(NODE),
        source_tx,
        SourceMetrics::new(),
    ));
    let report = reports.recv().await.expect("a first sync");
    let ready = t0.elapsed();
    assert!(report.result.is_ok(), "{:?}", report.result);
    let listed = listed.lock().expect("lock").unwrap_or(ready);
    Started {
        listed,
        ready,
        nft_called: report.nft_called,
        tasks: vec![forward, agent, source],
    }
}

/// The CPU time this process has used (user and system), in seconds.
fn process_cpu() -> f64 {
    // SAFETY: getrusage fills the rusage it is given and has no other effect; zeroed is a valid
    // rusage (plain integers).
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// A field of /proc/self/status, in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    kib / 1024.0
}

/// One run: a first start on an empty kernel, then a restart on the table it committed. Prints one
/// `RESULT` line of `key=value`s.
fn agent(url: &str) {
    block_on(async {
        let config = kube::Config::new(url.parse().expect("a URL"));
        let client = client(config, NODE).expect("a client");
        let kernel = FakeKernel::new();
        let first = start(client.clone(), kernel.clone()).await;
        let (rss, hwm, cpu) = (status_mib("VmRSS"), status_mib("VmHWM"), process_cpu());
        let transactions = kernel.committed().len();
        let table = kernel.table().expect("a table");
        for task in &first.tasks {
            task.abort();
        }
        let kernel = FakeKernel::with_table(table);
        let again = start(client, kernel.clone()).await;
        println!(
            "RESULT listed={:.3} ready={:.3} cpu={cpu:.3} rss={rss:.1} hwm={hwm:.1} transactions={transactions} \
             restart_listed={:.3} restart_ready={:.3} restart_transactions={} restart_nft_called={}",
            first.listed.as_secs_f64(),
            first.ready.as_secs_f64(),
            again.listed.as_secs_f64(),
            again.ready.as_secs_f64(),
            kernel.committed().len(),
            again.nft_called,
        );
    });
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
}

fn orchestrate() {
    let plan = std::env::var("STARTUP_RUNS").unwrap_or_else(|_| "medium:3,large:3".into());
    let exe = std::env::current_exe().expect("this binary");
    println!("load average before: {}", uptime().trim());
    for entry in plan.split(',') {
        let (size, runs) = entry.split_once(':').unwrap_or((entry, "3"));
        let runs: usize = runs.parse().expect("a number of runs");
        let loading = Instant::now();
        let mut server = Command::new(&exe)
            .env(ROLE, "serve")
            .env(SIZE, size)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the fake API server");
        let mut url = String::new();
        BufReader::new(server.stdout.take().expect("stdout"))
            .read_line(&mut url)
            .expect("its URL");
        println!(
            "{size}: fake API loaded in {:.1} s at {}",
            loading.elapsed().as_secs_f64(),
            url.trim()
        );
        let mut results: Vec<Vec<(String, f64)>> = Vec::new();
        for i in 0..runs {
            let out = Command::new(&exe)
                .env(ROLE, "agent")
                .env(URL, url.trim())
                .output()
                .expect("an agent run");
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("RESULT "))
                .unwrap_or_else(|| {
                    panic!(
                        "run {i} failed: {text}\n{}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
            println!("{size} run {i}: {line}");
            let fields = line
                .split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    let v = match v {
                        "true" => 1.0,
                        "false" => 0.0,
                        v => v.parse().ok()?,
                    };
                    Some((k.to_string(), v))
                })
                .collect();
            results.push(fields);
        }
        drop(server.stdin.take());
        let _ = server.wait();
        let column = |key: &str| {
            median(
                results
                    .iter()
                    .filter_map(|r| r.iter().find(|(k, _)| k == key).map(|(_, v)| *v))
                    .collect(),
            )
        };
        println!(
            "{size} medians of {runs}: lists done {:.2} s, ready {:.2} s (agent CPU {:.2} s), VmRSS {:.0} MiB, VmHWM {:.0} MiB, \
             transactions {}; restart unchanged: ready {:.2} s, transactions {}, nft called {}",
            column("listed"),
            column("ready"),
            column("cpu"),
            column("rss"),
            column("hwm"),
            column("transactions"),
            column("restart_ready"),
            column("restart_transactions"),
            column("restart_nft_called"),
        );
    }
    println!("load average after: {}", uptime().trim());
}
