//! The reconcile loop driven by scripted source events (no cluster), applying to the real kernel in a
//! throwaway network namespace: each kind of change produces exactly the transaction it should.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{kernel_available, Netns};
use nftpolicy::agent::{Agent, AgentConfig, Health, SyncReport};
use nftpolicy::dataplane::{Dataplane, NftRunner};
use nftpolicy::metrics::Metrics;
use nftpolicy::source::{Kind, Object, Update};
use policy_compiler::input::{parse_sources, read_paths};
use policy_compiler::model::{ObjectRef, Policy};
use policy_compiler::nft::transaction::Op;
use policy_compiler::plan::compile_node;
use policy_compiler::ClusterState;
use tokio::sync::mpsc;

fn demo() -> ClusterState {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo");
    let sources = read_paths(&[dir.display().to_string()]).expect("read");
    parse_sources(&sources).expect("valid").cluster
}

fn resets(c: &ClusterState) -> Vec<Update> {
    let reset = |kind, objects| Update::Reset {
        kind,
        objects,
        invalid: vec![],
    };
    vec![
        reset(
            Kind::Namespace,
            c.namespaces()
                .values()
                .cloned()
                .map(Object::Namespace)
                .collect(),
        ),
        reset(
            Kind::Pod,
            c.pods().values().cloned().map(Object::Pod).collect(),
        ),
        reset(
            Kind::NetworkPolicy,
            c.policies().values().cloned().map(Object::Policy).collect(),
        ),
    ]
}

struct Harness {
    tx: mpsc::Sender<Update>,
    reports: mpsc::UnboundedReceiver<SyncReport>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    runner: NftRunner,
    _ns: Netns,
}

impl Harness {
    fn start() -> Self {
        let ns = Netns::create();
        let runner = NftRunner::in_netns(&ns.0);
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(64);
        let (otx, reports) = mpsc::unbounded_channel();
        let mut config = AgentConfig::new("node-1");
        config.debounce = Duration::from_millis(30);
        let agent = Agent::new(
            config,
            Dataplane::new(runner.clone()),
            metrics.clone(),
            health.clone(),
        )
        .with_observer(otx);
        tokio::spawn(agent.run(rx));
        Self {
            tx,
            reports,
            metrics,
            health,
            runner,
            _ns: ns,
        }
    }

    async fn send(&self, u: Update) {
        self.tx.send(u).await.expect("agent running");
    }

    async fn next(&mut self) -> SyncReport {
        tokio::time::timeout(Duration::from_secs(5), self.reports.recv())
            .await
            .expect("a sync within 5 s")
            .expect("agent running")
    }

    async fn none_within(&mut self, d: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(d, self.reports.recv()).await {
            panic!("expected no sync, got {r:?}");
        }
    }
}

fn ops(r: &SyncReport) -> Vec<Op> {
    r.result
        .as_ref()
        .expect("sync succeeded")
        .transaction
        .ops
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_becomes_exactly_its_transaction() {
    if !kernel_available("each_change_becomes_exactly_its_transaction") {
        return;
    }
    let mut h = Harness::start();
    let mut cluster = demo();

    // Nothing is enforced until every kind has been listed.
    let r = resets(&cluster);
    h.send(r[0].clone()).await;
    h.send(r[1].clone()).await;
    h.none_within(Duration::from_millis(200)).await;
    assert!(!h.health.is_ready());
    h.send(r[2].clone()).await;
    let first = h.next().await;
    assert!(first.nft_called && first.result.as_ref().expect("ok").full);
    assert!(h.health.is_ready());

    // A pod added: element adds only.
    let mut web = cluster
        .pod(&ObjectRef::new("frontend", "web-0"))
        .expect("web-0")
        .clone();
    web.id.name = "web-2".into();
    web.ips = vec!["10.244.1.12".parse().expect("ip")];
    cluster.upsert_pod(web.clone());
    h.send(Update::Upsert(Object::Pod(web.clone()))).await;
    let r = h.next().await;
    for op in ops(&r) {
        assert!(
            matches!(op, Op::AddElements(..) | Op::AddMapElements(..)),
            "pod add: {op:?}"
        );
    }

    // A label change: the pod leaves the peer sets that selected it, then joins them again; elements
    // only. (coredns-0 runs on node-1 in a namespace without policies, and is a DNS peer.)
    let dns = ObjectRef::new("kube-system", "coredns-0");
    let mut coredns = cluster.pod(&dns).expect("coredns-0").clone();
    coredns.labels.insert("k8s-app".into(), "other".into());
    h.send(Update::Upsert(Object::Pod(coredns.clone()))).await;
    let r = h.next().await;
    let o = ops(&r);
    assert!(!o.is_empty());
    assert!(
        o.iter().all(|op| matches!(op, Op::DeleteElements(..))),
        "relabel out: {o:?}"
    );
    coredns.labels.insert("k8s-app".into(), "kube-dns".into());
    h.send(Update::Upsert(Object::Pod(coredns.clone()))).await;
    let r = h.next().await;
    let o = ops(&r);
    assert!(!o.is_empty());
    assert!(
        o.iter().all(|op| matches!(op, Op::AddElements(..))),
        "relabel back: {o:?}"
    );

    // A policy edit: only that policy's chains and sets.
    let id = ObjectRef::new("backend", "api-allow-egress");
    let mut p: Policy = cluster.policies()[&id].clone();
    p.egress.truncate(1);
    cluster.upsert_policy(p.clone());
    h.send(Update::Upsert(Object::Policy(p))).await;
    let r = h.next().await;
    for op in ops(&r) {
        let name = match &op {
            Op::FlushChain(n) | Op::DeleteChain(n) | Op::AddRule(n, _) | Op::AddChain(n, _) => {
                n.clone()
            }
            Op::AddSet(n, _)
            | Op::DeleteSet(n)
            | Op::AddElements(n, _)
            | Op::DeleteElements(n, _) => n.clone(),
            other => panic!("policy edit: {other:?}"),
        };
        assert!(
            name.contains("api-allow-egress") || name.starts_with("pods_"),
            "policy edit touched {name}"
        );
    }

    // Nothing changed: no sync at all, so no nft call; a relist with the same content neither.
    h.send(Update::Upsert(Object::Pod(web.clone()))).await;
    h.send(Update::Upsert(Object::Pod(coredns.clone()))).await;
    for u in resets(&cluster) {
        h.send(u).await;
    }
    h.none_within(Duration::from_millis(300)).await;

    // An invalid object is reported and left out; nothing else changes.
    h.send(Update::Invalid {
        kind: Kind::NetworkPolicy,
        key: ObjectRef::new("frontend", "broken"),
        error: "field spec.ingress[0].from[0].ipBlock.cidr: bad".into(),
    })
    .await;
    h.none_within(Duration::from_millis(200)).await;
    assert!(
        h.metrics.encode().contains("nftpolicy_invalid_objects 1"),
        "{}",
        h.metrics.encode()
    );

    // A burst is one transaction.
    for i in 0..20u8 {
        let mut p = web.clone();
        p.labels.insert("app".into(), "api".into());
        p.id.name = format!("burst-{i}");
        p.ips = vec![std::net::IpAddr::from([10, 244, 1, 100 + i])];
        cluster.upsert_pod(p.clone());
        h.send(Update::Upsert(Object::Pod(p))).await;
    }
    let r = h.next().await;
    let added: usize = ops(&r)
        .iter()
        .map(|op| match op {
            Op::AddElements(_, e) => e.len(),
            Op::AddMapElements(_, e) => e.len(),
            _ => 0,
        })
        .sum();
    assert!(
        added >= 20,
        "all 20 pods in one transaction ({added} elements)"
    );
    h.none_within(Duration::from_millis(200)).await;

    // The kernel holds exactly what the compiler says for the final state.
    let kernel = policy_compiler::nft::json::parse_table(
        &h.runner.list_table_json().expect("list").expect("table"),
    )
    .expect("parse");
    assert_eq!(kernel, compile_node(&cluster, "node-1"));
}
