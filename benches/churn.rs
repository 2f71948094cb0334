//! Sustained churn: the agent of node-0 on a generated cluster while pods change cluster-wide at a
//! steady rate (a rollout), applying to the real kernel in a throwaway network namespace. Needs root
//! and nft.
//!
//! `sudo cargo bench --bench churn` (medium and large, about 3 minutes; `-- large` for one size).
//! After the cluster is loaded, for 60 s, one event every 2 ms (500 a second), round robin over
//! the nodes: a pod added (a copy of one of that node's pods, at an address of its own), the oldest
//! added pod deleted once 1,000 are up, a pod of the cluster relabelled (its `tier`, which peers
//! select). Each event enters the reconcile loop as a watch event would; the agent runs with its
//! default settings (the adaptive debounce).
//!
//! Printed: the lag of every event (from its entry to the commit of the sync that carried it:
//! each sync reports how many changes it committed, and changes are committed in order), its
//! median, p99 and maximum; the syncs; and the CPU the process used over the window (the agent,
//! and the event generator, which is a small part of it), in cores.

mod support;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nftpolicy::agent::{Agent, AgentConfig, Health};
use nftpolicy::dataplane::Dataplane;
use nftpolicy::kernel::NftKernel;
use nftpolicy::metrics::Metrics;
use nftpolicy::source::{resets, Kind, Object, Update};
use policy_compiler::generate::{tier_flipped, workload, WorkloadSize};
use policy_compiler::model::{ObjectRef, Pod};
use policylab::lab::Netns;
use support::{block_on, percentile};
use tokio::sync::mpsc;

const NODE: &str = "node-0";
const RATE_PER_SECOND: u32 = 500;
const WINDOW: Duration = Duration::from_secs(60);
/// Added pods kept up before the oldest is deleted.
const POOL: usize = 1_000;

/// CPU time the process used so far (user and system), and that of its waited-for children.
fn cpu_time() -> (Duration, Duration) {
    fn of(who: libc::c_int) -> Duration {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `usage` points to writable memory of the size getrusage writes; it is only read
        // back after a successful call, which fills it.
        let rc = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
        if rc != 0 {
            return Duration::ZERO;
        }
        // SAFETY: getrusage returned 0, so it initialised the whole struct.
        let usage = unsafe { usage.assume_init() };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        tv(usage.ru_utime) + tv(usage.ru_stime)
    }
    (of(libc::RUSAGE_SELF), of(libc::RUSAGE_CHILDREN))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `i`-th added pod: a copy of `template` at an address of its own.
fn added(template: &Pod, i: u32) -> Pod {
    let mut pod = template.clone();
    pod.id = ObjectRef::new(template.id.namespace.clone(), format!("churn-{i}"));
    pod.ips = vec![IpAddr::from([
        10,
        200 + (i / 62_500) as u8,
        ((i / 250) % 250) as u8,
        (1 + i % 250) as u8,
    ])];
    pod
}

async fn measure(name: &str, size: WorkloadSize) {
    let ns = Netns::create("churn").unwrap_or_else(|e| panic!("{e}"));
    let cluster = workload(42, size);
    let (tx, rx) = mpsc::channel(4096);
    let (otx, mut reports) = mpsc::unbounded_channel();
    let agent = Agent::new(
        AgentConfig::new(NODE),
        Dataplane::new(NftKernel::in_netns(ns.name())),
        Arc::new(Metrics::new()),
        Arc::new(Health::default()),
    )
    .with_observer(otx);
    tokio::spawn(agent.run(rx));
    let started = Instant::now();
    for update in resets(&cluster) {
        tx.send(update).await.expect("agent");
    }
    reports
        .recv()
        .await
        .expect("first sync")
        .result
        .expect("full load");
    let loaded = started.elapsed();
    // A participating pod per node, to copy; the pods of the cluster, to relabel.
    let mut templates: Vec<Pod> = Vec::new();
    let mut seen_nodes = std::collections::BTreeSet::new();
    for pod in cluster.pods().values() {
        if let Some(node) = pod.node.as_deref() {
            if pod.participates() && seen_nodes.insert(node.to_string()) {
                templates.push(pod.clone());
            }
        }
    }
    let relabel: Vec<Pod> = cluster
        .pods()
        .values()
        .filter(|p| p.participates())
        .step_by(7)
        .cloned()
        .collect();
    let collector = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(report) = reports.recv().await {
            seen.push((Instant::now(), report.changes, report.result.is_ok()));
        }
        seen
    });
    let period = Duration::from_secs(1) / RATE_PER_SECOND;
    let mut tick = tokio::time::interval(period);
    let mut sent: Vec<Instant> = Vec::new();
    let mut up: VecDeque<ObjectRef> = VecDeque::new();
    let mut relabelled_state: Vec<Option<Pod>> = vec![None; relabel.len()];
    let (cpu0, children0) = cpu_time();
    let window_start = Instant::now();
    let mut i: u32 = 0;
    while window_start.elapsed() < WINDOW {
        tick.tick().await;
        let update = match i % 3 {
            0 => {
                let template = &templates[(i as usize / 3) % templates.len()];
                let pod = added(template, i);
                up.push_back(pod.id.clone());
                Update::Upsert(Object::Pod(pod))
            }
            1 if up.len() > POOL => {
                let key = up.pop_front().expect("a pod is up");
                Update::Delete(Kind::Pod, key)
            }
            _ => {
                let slot = (i as usize / 3) % relabel.len();
                let next = match &relabelled_state[slot] {
                    Some(p) => tier_flipped(p),
                    None => tier_flipped(&relabel[slot]),
                };
                relabelled_state[slot] = Some(next.clone());
                Update::Upsert(Object::Pod(next))
            }
        };
        sent.push(Instant::now());
        tx.send(update).await.expect("agent");
        i += 1;
    }
    let window = window_start.elapsed();
    let (cpu1, children1) = cpu_time();
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(tx);
    let seen = collector.await.expect("collector");
    // Changes are committed in order: event k is carried by the first sync whose running total
    // of committed changes exceeds k.
    let mut lags = Vec::with_capacity(sent.len());
    let mut committed = 0usize;
    for (at, changes, _) in &seen {
        let first = committed;
        committed += changes;
        for t in sent.iter().take(committed).skip(first) {
            lags.push(*at - *t);
        }
    }
    let failed = seen.iter().filter(|(_, _, ok)| !ok).count();
    lags.sort();
    let cpu = (cpu1 - cpu0).as_secs_f64() / window.as_secs_f64();
    let children = (children1 - children0).as_secs_f64() / window.as_secs_f64();
    if lags.is_empty() {
        println!("{name}: no event was committed");
        return;
    }
    println!(
        "{name} ({} pods, {} policies, {} nodes; loaded in {:.1} s): {} events in {:.1} s, {} syncs ({failed} failed), {} events committed; lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; CPU {:.3} cores (+ {:.3} in nft)",
        size.pods,
        size.policies,
        size.nodes,
        loaded.as_secs_f64(),
        sent.len(),
        window.as_secs_f64(),
        seen.len(),
        lags.len(),
        ms(percentile(&lags, 0.5)),
        ms(percentile(&lags, 0.99)),
        ms(percentile(&lags, 1.0)),
        cpu,
        children,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters sizes by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    block_on(async {
        for name in ["medium", "large"] {
            if filter.as_deref().is_some_and(|f| !name.contains(f)) {
                continue;
            }
            let size = WorkloadSize::named(name).expect("a named size");
            measure(name, size).await;
        }
    });
}
