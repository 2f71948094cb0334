//! `policyd` on the lab (root): one agent per node namespace with `--source dir:`, driven by edits to
//! the manifests, measured with packets; killed and restarted; its table deleted behind its back.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, http_get, kernel_available};
use nftpolicy::kernel::{Kernel, NftKernel};
use policylab::lab::{netns, Lab, LabSpec, PodSpec, Probe, Protocol};

const NAMESPACES: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: \"y\"}\n";

fn pod(ns: &str, name: &str, app: &str, node: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: \"{ns}\", labels: {{app: {app}}}}}\n\
         spec: {{nodeName: {node}, containers: [{{name: c, image: i, ports: [{{containerPort: 80}}]}}]}}\n\
         status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n"
    )
}

const PODS: [(&str, &str, &str, &str, &str); 4] = [
    ("x", "a", "web", "node-1", "10.244.1.10"),
    ("x", "b", "db", "node-1", "10.244.1.11"),
    ("x", "c", "web", "node-2", "10.244.2.10"),
    ("y", "d", "client", "node-2", "10.244.2.11"),
];

fn pods_yaml(relabel_d_as_web: bool) -> String {
    PODS.iter()
        .map(|(ns, n, app, node, ip)| {
            let app = if relabel_d_as_web && *n == "d" {
                "web"
            } else {
                app
            };
            pod(ns, n, app, node, ip)
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// x/b (db) accepts only from app=web pods of any namespace.
const DB_POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db-from-web, namespace: x}\n\
spec:\n  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}]\n";

struct Agent {
    child: Child,
    port: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(node: &str, netns: &str, dir: &Path, port: u16, conntrack_flush: bool) -> Agent {
    let child = Command::new(env!("CARGO_BIN_EXE_policyd"))
        .args(conntrack_flush.then_some("--conntrack-flush"))
        .args([
            "--node-name",
            node,
            "--source",
            &format!("dir:{}", dir.display()),
            "--netns",
            netns,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--poll-ms",
            "50",
            "--debounce-interval-ms",
            "20",
            "--audit-interval-secs",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.join(format!("{node}-{port}.log")))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .expect("start policyd");
    Agent { child, port }
}

fn wait_ready(agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if http_get(agent.port, "/readyz").is_some_and(|(c, _)| c == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("policyd on port {} not ready within 10 s", agent.port);
}

fn metric(agent: &Agent, name: &str) -> f64 {
    let (_, body) = http_get(agent.port, "/metrics").expect("metrics");
    body.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Probes y/d -> x/b and x/a -> x/b on 80/TCP.
fn probe(lab: &Lab) -> (bool, bool) {
    let probes = [
        Probe {
            from: "y/d".into(),
            to: ip("10.244.1.11"),
            port: 80,
            protocol: Protocol::Tcp,
        },
        Probe {
            from: "x/a".into(),
            to: ip("10.244.1.11"),
            port: 80,
            protocol: Protocol::Tcp,
        },
    ];
    let r = lab.probe_all(&probes, Duration::from_millis(150));
    (
        *r[0].as_ref().expect("probe"),
        *r[1].as_ref().expect("probe"),
    )
}

/// Waits until the probes give `want`; returns how long it took. The bound is for a change that
/// never comes, not a target: the time is printed, and benchmarks measure it (a loaded machine
/// can take a while to run the probes themselves).
fn until(lab: &Lab, want: (bool, bool), what: &str) -> Duration {
    let started = Instant::now();
    loop {
        if probe(lab) == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: connectivity did not follow within 10 s"
        );
    }
}

fn nft_table_exists(netns: &str) -> bool {
    NftKernel::in_netns(netns)
        .list_table()
        .is_ok_and(|t| t.is_some())
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn agents_follow_edits_survive_kill_9_and_repair_drift() {
    if !kernel_available("agents_follow_edits_survive_kill_9_and_repair_drift") {
        return;
    }
    let dir = TempDir(std::env::temp_dir().join(format!("policyd-lab-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("dir");
    std::fs::write(dir.0.join("namespaces.yaml"), NAMESPACES).expect("write");
    std::fs::write(dir.0.join("pods.yaml"), pods_yaml(false)).expect("write");

    let lab = Lab::create(&LabSpec {
        nodes: vec!["node-1".into(), "node-2".into()],
        pods: PODS
            .iter()
            .map(|(ns, n, _, node, ip_)| PodSpec {
                id: format!("{ns}/{n}"),
                node: node.to_string(),
                ips: vec![ip(ip_)],
                ports: vec![(80, Protocol::Tcp), (81, Protocol::Udp)],
            })
            .collect(),
        services: vec![],
    })
    .expect("lab");
    let ns1 = lab.node_netns("node-1").expect("node-1").to_string();
    let ns2 = lab.node_netns("node-2").expect("node-2").to_string();
    let mut a1 = start_agent("node-1", &ns1, &dir.0, free_port(), false);
    let a2 = start_agent("node-2", &ns2, &dir.0, free_port(), false);
    wait_ready(&a1);
    wait_ready(&a2);
    assert_eq!(probe(&lab), (true, true), "no policy: default allow");

    // Add a policy: y/d (client) loses access to x/b, x/a (web) keeps it.
    std::fs::write(dir.0.join("policy.yaml"), DB_POLICY).expect("write");
    let t_add = until(&lab, (false, true), "policy added");
    // Relabel y/d as web: it is allowed again.
    std::fs::write(dir.0.join("pods.yaml"), pods_yaml(true)).expect("write");
    let t_relabel = until(&lab, (true, true), "pod relabelled");
    std::fs::write(dir.0.join("pods.yaml"), pods_yaml(false)).expect("write");
    until(&lab, (false, true), "pod relabelled back");
    // A broken edit of the policy file keeps the last good policy in force.
    std::fs::write(dir.0.join("policy.yaml"), "kind: [broken\n").expect("write");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        probe(&lab),
        (false, true),
        "a file that does not parse changes nothing"
    );
    std::fs::write(dir.0.join("policy.yaml"), DB_POLICY).expect("write");
    // Delete the policy: everything is allowed again.
    std::fs::remove_file(dir.0.join("policy.yaml")).expect("rm");
    let t_delete = until(&lab, (true, true), "policy deleted");
    eprintln!(
        "event to enforcement (file poll 50 ms and debounce, 20 ms interval, included): add {} ms, relabel {} ms, delete {} ms",
        t_add.as_millis(),
        t_relabel.as_millis(),
        t_delete.as_millis()
    );
    std::fs::write(dir.0.join("policy.yaml"), DB_POLICY).expect("write");
    until(&lab, (false, true), "policy re-added");

    // kill -9 the node-1 agent while watching the table and probing: the table never disappears and
    // enforcement never lapses.
    let stop = Arc::new(AtomicBool::new(false));
    let missing = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, missing, ns1) = (stop.clone(), missing.clone(), ns1.clone());
        std::thread::spawn(move || {
            let mut checks = 0;
            while !stop.load(Ordering::SeqCst) {
                if !nft_table_exists(&ns1) {
                    missing.fetch_add(1, Ordering::SeqCst);
                }
                checks += 1;
            }
            checks
        })
    };
    // SIGKILL: the agent gets no chance to clean up.
    let _ = a1.child.kill();
    let _ = a1.child.wait();
    assert_eq!(
        probe(&lab),
        (false, true),
        "the ruleset stays in force while the agent is down"
    );
    let port = free_port();
    a1 = start_agent("node-1", &ns1, &dir.0, port, false);
    wait_ready(&a1);
    assert_eq!(probe(&lab), (false, true), "after restart");
    stop.store(true, Ordering::SeqCst);
    let checks = watcher.join().expect("watcher");
    assert!(checks > 10, "the table was checked ({checks} times)");
    assert_eq!(
        missing.load(Ordering::SeqCst),
        0,
        "the table disappeared during the restart"
    );
    assert_eq!(
        metric(&a1, "nftpolicy_sync_duration_seconds_count{kind=\"full\"}"),
        0.0,
        "a restart reads the table back and sends no full replace"
    );

    // Someone deletes the table: the audit (every second here) restores it.
    NftKernel::in_netns(&ns1)
        .delete_table()
        .expect("nft delete table");
    assert_eq!(
        probe(&lab),
        (true, true),
        "without the table, traffic flows"
    );
    let started = Instant::now();
    while !nft_table_exists(&ns1) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the audit did not restore the table"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    until(&lab, (false, true), "after the audit");
    assert_eq!(metric(&a1, "nftpolicy_drift_repairs_total"), 1.0);

    // Established connections. By default a policy that starts denying a flow leaves the flow running
    // (ct state established is accepted before any policy); new connections are denied.
    std::fs::remove_file(dir.0.join("policy.yaml")).expect("rm");
    until(&lab, (true, true), "policy deleted");
    let d_netns = lab.pod_netns("y/d").expect("y/d").to_string();
    let flow = UdpFlow::open(&d_netns, "10.244.1.11:81");
    assert!(flow.echo(), "the UDP flow works while nothing is denied");
    std::fs::write(dir.0.join("policy.yaml"), DB_POLICY).expect("write");
    until(&lab, (false, true), "policy re-added");
    assert!(
        flow.echo(),
        "by default an established flow outlives a policy that denies it"
    );
    // With --conntrack-flush the agent deletes the affected conntrack entries: the flow's next packet
    // is judged as new, and denied.
    drop(a1);
    a1 = start_agent("node-1", &ns1, &dir.0, free_port(), true);
    wait_ready(&a1);
    std::fs::remove_file(dir.0.join("policy.yaml")).expect("rm");
    until(&lab, (true, true), "policy deleted");
    let flow = UdpFlow::open(&d_netns, "10.244.1.11:81");
    assert!(flow.echo(), "a fresh flow works while nothing is denied");
    std::fs::write(dir.0.join("policy.yaml"), DB_POLICY).expect("write");
    until(&lab, (false, true), "policy re-added");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !flow.echo(),
        "with --conntrack-flush the established flow is cut"
    );
    drop(a2);
    drop(a1);
    lab.teardown().expect("teardown");
}

/// A UDP socket inside a pod's network namespace, connected to a peer: one long-lived flow.
struct UdpFlow(std::net::UdpSocket);

impl UdpFlow {
    fn open(pod_netns: &str, to: &str) -> Self {
        let file = netns::open(pod_netns).expect("the pod's namespace");
        // A socket stays in the namespace it was created in, whichever thread uses it later.
        let socket = netns::run_in(&file, pod_netns, || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
            socket.connect(to).expect("connect");
            socket
        })
        .expect("enter the pod's namespace");
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        UdpFlow(socket)
    }

    fn echo(&self) -> bool {
        let mut buf = [0u8; 16];
        self.0.send(b"ping").is_ok() && self.0.recv(&mut buf).is_ok()
    }
}
