//! The reconcile loop driven by scripted source updates (no cluster) on any [`Kernel`]: the scenarios
//! that `tests/agent.rs` runs on the fake kernel without root and `tests/agent_kernel.rs` runs on the
//! real one. Each scenario asserts what the transactions were and that the kernel then holds exactly
//! what the compiler says.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use nftpolicy::agent::{Agent, AgentConfig, Health, SyncReport};
use nftpolicy::dataplane::Dataplane;
use nftpolicy::debounce::DebounceConfig;
use nftpolicy::kernel::Kernel;
use nftpolicy::metrics::Metrics;
pub use nftpolicy::source::resets;
use nftpolicy::source::{Kind, Object, Update};
use policy_compiler::input::{parse_sources, read_paths, Source};
use policy_compiler::model::{ClusterNetworkPolicy, ObjectRef, Pod, Policy};
use policy_compiler::nft::transaction::Op;
use policy_compiler::nft::Ruleset;
use policy_compiler::{compile_node, ClusterState};
use tokio::sync::mpsc;

/// The node the agent enforces.
pub const NODE: &str = "node-1";

/// The demo cluster (fixtures/demo).
pub fn demo() -> ClusterState {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo");
    let sources = read_paths(&[dir.display().to_string()]).expect("read");
    parse_sources(&sources).expect("valid").cluster
}

/// The ClusterNetworkPolicy that a manifest (one YAML document) defines, read as `policyc` reads
/// it.
pub fn cluster_policy(manifest: &str) -> ClusterNetworkPolicy {
    let source = Source {
        name: "test.yaml".into(),
        text: manifest.to_string(),
    };
    let cluster = parse_sources(&[source]).expect("a valid manifest").cluster;
    let mut policies = cluster.cluster_policies().values().cloned();
    let policy = policies.next().expect("a ClusterNetworkPolicy");
    assert!(policies.next().is_none(), "one ClusterNetworkPolicy");
    policy
}

/// The agent's configuration in these tests: a short debounce and retry, no audit unless a test
/// asks for one. The gather window is as long as the interval (30 ms), so that the updates a
/// scenario sends back to back are one sync however the test's threads are scheduled.
pub fn config() -> AgentConfig {
    let mut config = AgentConfig::new(NODE);
    config.debounce = DebounceConfig {
        min: Duration::from_millis(30),
        interval: Duration::from_millis(30),
        max_wait: Duration::from_millis(250),
    };
    config.retry = Duration::from_millis(50);
    config.audit_interval = Duration::from_secs(3600);
    config
}

/// An agent running on `kernel`, fed by the test, reporting every sync.
pub struct Harness<K> {
    /// The kernel the agent's dataplane uses (a clone of it).
    pub kernel: K,
    /// The agent's metrics.
    pub metrics: Arc<Metrics>,
    /// The agent's health.
    pub health: Arc<Health>,
    tx: mpsc::Sender<Update>,
    reports: mpsc::UnboundedReceiver<SyncReport>,
    agent: tokio::task::JoinHandle<()>,
}

impl<K: Kernel + Clone + 'static> Harness<K> {
    /// Starts an agent whose dataplane reads the kernel's table first (as policyd does).
    pub fn start(kernel: K, config: AgentConfig) -> Self {
        let dataplane = Dataplane::from_kernel(kernel.clone()).expect("read the kernel");
        Self::start_with(kernel, dataplane, config)
    }

    /// Starts an agent on a dataplane prepared by the test.
    pub fn start_with(kernel: K, dataplane: Dataplane, config: AgentConfig) -> Self {
        Self::start_observed(kernel, dataplane, config, Vec::new())
    }

    /// Starts an agent that tells `observers` of every ruleset it commits.
    pub fn start_observed(
        kernel: K,
        dataplane: Dataplane,
        config: AgentConfig,
        observers: Vec<Arc<dyn nftpolicy::agent::CommitObserver>>,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(64);
        let (otx, reports) = mpsc::unbounded_channel();
        let mut agent =
            Agent::new(config, dataplane, metrics.clone(), health.clone()).with_observer(otx);
        for observer in observers {
            agent = agent.with_commit_observer(observer);
        }
        let agent = tokio::spawn(agent.run(rx));
        Self {
            kernel,
            metrics,
            health,
            tx,
            reports,
            agent,
        }
    }

    /// Sends one update to the agent.
    pub async fn send(&self, u: Update) {
        self.tx.send(u).await.expect("agent running");
    }

    /// The next sync's report.
    pub async fn next(&mut self) -> SyncReport {
        tokio::time::timeout(Duration::from_secs(5), self.reports.recv())
            .await
            .expect("a sync within 5 s")
            .expect("agent running")
    }

    /// Fails if a sync happens within `d`.
    pub async fn none_within(&mut self, d: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(d, self.reports.recv()).await {
            panic!("expected no sync, got {r:?}");
        }
    }

    /// Lists every kind of `cluster` and returns the first sync's report.
    pub async fn list(&mut self, cluster: &ClusterState) -> SyncReport {
        for u in resets(cluster) {
            self.send(u).await;
        }
        self.next().await
    }

    /// What the kernel holds now, read back as policyd reads it (`None`: no table).
    pub fn table(&self) -> Option<Ruleset> {
        let json = self.kernel.list_table().expect("list the table")?;
        Some(policy_compiler::nft::json::parse_table(&json).expect("a table nftpolicy wrote"))
    }

    /// Asserts that the kernel holds exactly what the compiler gives for `cluster`.
    pub fn assert_enforces(&self, cluster: &ClusterState) {
        assert_eq!(
            self.table().as_ref(),
            Some(&compile_node(cluster, NODE)),
            "the kernel's table differs from the compiled ruleset"
        );
    }

    /// Stops the sources and waits for the agent to end; returns the kernel.
    pub async fn stop(self) -> K {
        let Self {
            kernel,
            health,
            tx,
            agent,
            ..
        } = self;
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), agent)
            .await
            .expect("the agent ends when its sources do")
            .expect("the agent did not panic");
        assert!(!health.is_alive(), "a stopped agent is not alive");
        kernel
    }
}

/// The operations of a successful sync.
pub fn ops(r: &SyncReport) -> Vec<Op> {
    r.result
        .as_ref()
        .expect("sync succeeded")
        .transaction
        .ops
        .clone()
}

/// Asserts that the report is of a successful sync that replaced the table whole.
pub fn assert_full(r: &SyncReport) {
    let report = r.result.as_ref().expect("sync succeeded");
    assert!(
        r.nft_called && report.full,
        "expected a full replace: {r:?}"
    );
}

/// `frontend/web-0` copied as `frontend/web-2` at 10.244.1.12 (on node-1; isolated by the frontend
/// policies).
pub fn new_web_pod(cluster: &ClusterState) -> Pod {
    let mut web = cluster
        .pod(&ObjectRef::new("frontend", "web-0"))
        .expect("web-0")
        .clone();
    web.id.name = "web-2".into();
    web.ips = vec!["10.244.1.12".parse().expect("ip")];
    web
}

/// A pod added: set and map element additions only.
pub async fn pod_add<K: Kernel + Clone + 'static>(h: &mut Harness<K>, cluster: &mut ClusterState) {
    let web = new_web_pod(cluster);
    cluster.upsert_pod(web.clone());
    h.send(Update::Upsert(Object::Pod(web))).await;
    let o = ops(&h.next().await);
    assert!(!o.is_empty());
    for op in &o {
        assert!(
            matches!(op, Op::AddElements(..) | Op::AddMapElements(..)),
            "pod add: {op:?}"
        );
    }
    assert!(
        o.iter().any(|op| matches!(op, Op::AddMapElements(_, e)
            if e.iter().any(|(ip, _)| ip.to_string() == "10.244.1.12"))),
        "the isolated pod joins its verdict map: {o:?}"
    );
    h.assert_enforces(cluster);
}

/// A label change moves the pod out of the peer sets that selected it and back in: element deletions,
/// then element additions, nothing else. (`kube-system/coredns-0` runs on node-1 in a namespace
/// without policies, and is a DNS peer.)
pub async fn relabel<K: Kernel + Clone + 'static>(h: &mut Harness<K>, cluster: &mut ClusterState) {
    let dns = ObjectRef::new("kube-system", "coredns-0");
    let mut coredns = cluster.pod(&dns).expect("coredns-0").clone();
    coredns.labels.insert("k8s-app", "other");
    cluster.upsert_pod(coredns.clone());
    h.send(Update::Upsert(Object::Pod(coredns.clone()))).await;
    let o = ops(&h.next().await);
    assert!(!o.is_empty());
    assert!(
        o.iter().all(|op| matches!(op, Op::DeleteElements(..))),
        "relabel out: {o:?}"
    );
    h.assert_enforces(cluster);
    coredns.labels.insert("k8s-app", "kube-dns");
    cluster.upsert_pod(coredns.clone());
    h.send(Update::Upsert(Object::Pod(coredns))).await;
    let o = ops(&h.next().await);
    assert!(!o.is_empty());
    assert!(
        o.iter().all(|op| matches!(op, Op::AddElements(..))),
        "relabel back: {o:?}"
    );
    h.assert_enforces(cluster);
}

/// A policy edit touches only that policy's chains and the peer sets of its rules.
pub async fn policy_edit<K: Kernel + Clone + 'static>(
    h: &mut Harness<K>,
    cluster: &mut ClusterState,
) {
    let id = ObjectRef::new("backend", "api-allow-egress");
    let mut p: Policy = cluster.policies()[&id].clone();
    assert!(p.egress.len() > 1, "the edit drops a rule");
    p.egress.truncate(1);
    cluster.upsert_policy(p.clone());
    h.send(Update::Upsert(Object::Policy(p))).await;
    let o = ops(&h.next().await);
    assert!(
        o.iter()
            .any(|op| matches!(op, Op::FlushChain(n) if n.contains("api-allow-egress"))),
        "the policy's chain is refilled: {o:?}"
    );
    for op in &o {
        let name = match op {
            Op::FlushChain(n) | Op::DeleteChain(n) | Op::AddRule(n, _) | Op::AddChain(n, _) => n,
            Op::AddSet(n, _)
            | Op::DeleteSet(n)
            | Op::AddElements(n, _)
            | Op::DeleteElements(n, _)
            | Op::AddCounter(n, _)
            | Op::DeleteCounter(n) => n,
            other => panic!("policy edit: {other:?}"),
        };
        assert!(
            name.contains("api-allow-egress") || name.starts_with("pods_"),
            "policy edit touched {name}"
        );
    }
    h.assert_enforces(cluster);
}

/// Updates that change nothing (the same objects again, a relist with the same content) cause no
/// sync at all.
pub async fn no_change<K: Kernel + Clone + 'static>(h: &mut Harness<K>, cluster: &ClusterState) {
    for pod in cluster.pods().values().take(3) {
        h.send(Update::Upsert(Object::Pod(pod.clone()))).await;
    }
    for u in resets(cluster) {
        h.send(u).await;
    }
    h.none_within(Duration::from_millis(300)).await;
    h.assert_enforces(cluster);
}

/// Twenty pods added at once are one transaction.
pub async fn burst<K: Kernel + Clone + 'static>(h: &mut Harness<K>, cluster: &mut ClusterState) {
    let web = new_web_pod(cluster);
    for i in 0..20u8 {
        let mut p = web.clone();
        p.labels.insert("app", "api");
        p.id.name = format!("burst-{i}").into();
        p.ips = vec![IpAddr::from([10, 244, 1, 100 + i])];
        cluster.upsert_pod(p.clone());
        h.send(Update::Upsert(Object::Pod(p))).await;
    }
    let r = h.next().await;
    let map_keys: usize = ops(&r)
        .iter()
        .map(|op| match op {
            Op::AddMapElements(_, e) => e.len(),
            _ => 0,
        })
        .sum();
    // Each new pod is isolated (frontend's default deny) in both directions, IPv4 only.
    assert_eq!(map_keys, 40, "all 20 pods in one transaction");
    h.none_within(Duration::from_millis(200)).await;
    h.assert_enforces(cluster);
}

/// After `break_next` makes the next transaction fail, a change is reported as a rejected
/// transaction, and the retry replaces the table whole.
pub async fn rejected_then_full_replace<K: Kernel + Clone + 'static>(
    h: &mut Harness<K>,
    cluster: &mut ClusterState,
    break_next: impl FnOnce(&K),
) {
    break_next(&h.kernel);
    let web = new_web_pod(cluster);
    cluster.upsert_pod(web.clone());
    h.send(Update::Upsert(Object::Pod(web))).await;
    let failed = h.next().await;
    let error = failed.result.as_ref().expect_err("the transaction fails");
    assert!(
        error.starts_with("the kernel rejected the transaction"),
        "{error}"
    );
    assert!(failed.nft_called);
    assert!(
        !h.health.is_ready(),
        "a failed sync makes the agent unready"
    );
    let repaired = h.next().await;
    assert_full(&repaired);
    assert!(h.health.is_ready());
    assert!(
        h.metrics.encode().contains("nftpolicy_sync_errors_total 1"),
        "{}",
        h.metrics.encode()
    );
    h.assert_enforces(cluster);
}

/// After `tamper` changes the kernel behind the agent's back, the audit finds the drift and replaces
/// the table whole. Needs an agent with a short audit interval.
pub async fn audit_repairs<K: Kernel + Clone + 'static>(
    h: &mut Harness<K>,
    cluster: &ClusterState,
    tamper: impl FnOnce(&K),
) {
    // Not compared with the table here: the audit may repair it before a read. The repair
    // counted below is the proof that it found the tampering.
    tamper(&h.kernel);
    let repair = h.next().await;
    assert_full(&repair);
    assert!(
        h.metrics
            .encode()
            .contains("nftpolicy_drift_repairs_total 1"),
        "{}",
        h.metrics.encode()
    );
    h.assert_enforces(cluster);
}

/// A Node with one InternalIP and a `role` label.
pub fn node(name: &str, ip: &str, role: &str) -> policy_compiler::model::Node {
    policy_compiler::model::Node {
        name: name.into(),
        labels: [("role".to_string(), role.to_string())].into(),
        addresses: vec![ip.parse().expect("ip")],
    }
}

/// The Admin ClusterNetworkPolicy `guard` for the backend namespace (backend/api-0 on node-1):
/// nothing to the Nodes with `role: db`; the db namespace accepted on `db_port`/TCP.
pub fn guard(db_port: u16) -> ClusterNetworkPolicy {
    guard_with(
        "  - name: no-db-nodes
    action: Deny
    to: [{nodes: {matchLabels: {role: db}}}]
",
        db_port,
        "",
    )
}

/// The Admin ClusterNetworkPolicy `guard` for the backend namespace: the egress rules `before`
/// (YAML list items), the db namespace accepted on `db_port`/TCP, then the rules `after`.
pub fn guard_with(before: &str, db_port: u16, after: &str) -> ClusterNetworkPolicy {
    cluster_policy(&format!(
        "apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {{name: guard}}
spec:
  tier: Admin
  priority: 10
  subject:
    namespaces: {{matchLabels: {{team: platform}}}}
  egress:
{before}  - name: db
    action: Accept
    to: [{{namespaces: {{matchLabels: {{kubernetes.io/metadata.name: db}}}}}}]
    protocols: [{{tcp: {{destinationPort: {{number: {db_port}}}}}}}]
{after}"
    ))
}

/// Asserts that the NetworkPolicy part of a transaction changes only elements of sets and maps,
/// and that whatever it changes of the ClusterNetworkPolicy tiers (names starting with `prefix`:
/// their peer classes' chains and decision maps, which come and go with the classes) is
/// element operations too when `tier_elements_only`.
pub fn assert_element_operations(ops: &[Op], prefix: &str) {
    assert_tier_operations(ops, prefix, true)
}

/// As [`assert_element_operations`], letting the tiers' class chains and maps (names starting
/// with `prefix`) be added and removed when `tier_elements_only` is false.
pub fn assert_tier_operations(ops: &[Op], prefix: &str, tier_elements_only: bool) {
    assert!(!ops.is_empty());
    for op in ops {
        match op {
            Op::AddDecisionElements(name, _) | Op::DeleteDecisionElements(name, _) => {
                assert!(name.starts_with(prefix), "{op:?}")
            }
            Op::AddElements(..)
            | Op::DeleteElements(..)
            | Op::AddMapElements(..)
            | Op::DeleteMapElements(..) => {}
            Op::AddChain(name, _)
            | Op::FlushChain(name)
            | Op::DeleteChain(name)
            | Op::AddRule(name, _)
            | Op::AddDecisionMap(name, _)
            | Op::DeleteDecisionMap(name)
            | Op::AddCounter(name, _)
            | Op::DeleteCounter(name)
                if !tier_elements_only && name.starts_with(prefix) => {}
            other => panic!("not an element operation: {other:?}"),
        }
    }
}

/// Asserts that `ops` give `address` an element of the Admin egress peers map, leading to a peer
/// class whose decision maps (in `table`, the ruleset after `ops`) drop something (directly, or
/// through the chain of a Deny rule): the address joined a Deny rule's peers.
pub fn assert_joins_a_dropping_class(ops: &[Op], table: &Ruleset, address: IpAddr) {
    use policy_compiler::nft::{DecisionVerdict, Verdict};
    let jumps_to = ops.iter().find_map(|op| match op {
        Op::AddDecisionElements(map, e) if map == "admin_egress_peers_v4" => e
            .iter()
            .find(|(k, _)| k.holds(&address, None))
            .map(|(_, d)| d.verdict.clone()),
        _ => None,
    });
    let Some(DecisionVerdict::Jump(class)) = jumps_to else {
        panic!("{address} joins a peer class: {ops:?}");
    };
    let drops = table.chains[&class].rules.iter().any(|r| match &r.verdict {
        Verdict::DecisionVmap { map, .. } => {
            table.decision_maps[map]
                .elements
                .values()
                .any(|d| match &d.verdict {
                    DecisionVerdict::Drop => true,
                    // A Deny rule's chain: it counts, then drops.
                    DecisionVerdict::Jump(rule) => table.chains[rule]
                        .rules
                        .last()
                        .is_some_and(|r| r.verdict == Verdict::Drop),
                    _ => false,
                })
        }
        _ => false,
    });
    assert!(drops, "{address} joins the Deny rule: {ops:?}");
}

/// With Nodes and the ClusterNetworkPolicy [`guard`] in force: an edit of one of its rules, a
/// Node that joins its `nodes` peer and a pod added are element operations (the first two on the
/// guard's decision maps only), each leaving the kernel with what the compiler gives.
pub async fn cluster_policy_changes<K: Kernel + Clone + 'static>(
    h: &mut Harness<K>,
    cluster: &mut ClusterState,
) {
    let send = |cluster: &mut ClusterState, object: Object| {
        cluster.upsert(object.clone());
        Update::Upsert(object)
    };
    for n in [
        node("node-1", "192.168.100.1", "worker"),
        node("node-2", "192.168.100.2", "worker"),
    ] {
        h.send(send(cluster, Object::Node(n))).await;
    }
    h.send(send(cluster, Object::ClusterPolicy(guard(5432))))
        .await;
    // One sync, or two when the Nodes come in a sync of their own.
    let desired = compile_node(cluster, NODE);
    while h.table().as_ref() != Some(&desired) {
        let r = h.next().await;
        assert!(r.result.is_ok(), "{r:?}");
    }

    h.send(send(cluster, Object::ClusterPolicy(guard(6432))))
        .await;
    assert_element_operations(&ops(&h.next().await), "admin_");
    h.assert_enforces(cluster);

    let db_node = node("node-2", "192.168.100.2", "db");
    h.send(send(cluster, Object::Node(db_node))).await;
    let o = ops(&h.next().await);
    // The Node's address joins a peer class of its own: its chain and maps are new.
    assert_tier_operations(&o, "admin_", false);
    let address: IpAddr = "192.168.100.2".parse().expect("ip");
    assert_joins_a_dropping_class(&o, &h.table().expect("a table"), address);
    h.assert_enforces(cluster);

    let mut web = new_web_pod(cluster);
    web.id.name = "web-3".into();
    web.ips = vec!["10.244.1.13".parse().expect("ip")];
    h.send(send(cluster, Object::Pod(web))).await;
    assert_element_operations(&ops(&h.next().await), "admin_");
    h.assert_enforces(cluster);
}
