//! `policyd`: the nftpolicy node agent. Keeps the node's `table inet nftpolicy` equal to what
//! `policyc compile --node` would print for the live cluster, changing the kernel only by the
//! difference, in atomic transactions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use tokio::sync::mpsc;

use nftpolicy::agent::{Agent, AgentConfig, Health};
use nftpolicy::dataplane::{Dataplane, NftRunner};
use nftpolicy::http::{serve, DEFAULT_LISTEN};
use nftpolicy::metrics::Metrics;
use nftpolicy::source::files::DirSource;

/// The nftpolicy node agent: enforces Kubernetes NetworkPolicy for this node's pods with nftables.
///
/// It watches Pods, Namespaces and NetworkPolicies (all namespaces: peers are cluster-wide), compiles
/// the node's ruleset, and applies only the difference to `table inet nftpolicy` in one atomic
/// `nft -f -` transaction per burst of changes. On restart it reads the table back, so no rule
/// disappears in between. On exit the last ruleset stays in force (fail-static).
#[derive(Parser, Debug)]
#[command(name = "policyd", version)]
struct Cli {
    /// This node's name, as in the pods' spec.nodeName.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Where cluster state comes from: `kube` (the API server: in-cluster config or kubeconfig) or
    /// `dir:PATH` (a directory of manifests, re-read when it changes).
    #[arg(long, default_value = "kube")]
    source: String,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Wait this long after the first change of a burst before syncing (milliseconds).
    #[arg(long, default_value_t = 50)]
    debounce_ms: u64,
    /// Compare the kernel's table with the committed one this often, and repair drift (seconds).
    #[arg(long, default_value_t = 300)]
    audit_interval_secs: u64,
    /// How often a `dir:` source is re-read (milliseconds).
    #[arg(long, default_value_t = 200)]
    poll_ms: u64,
    /// Until the first sync, drop every new forwarded connection on this node (established ones keep
    /// flowing). Without it, traffic keeps the last ruleset in force (or none, on a fresh node).
    #[arg(long)]
    fail_closed: bool,
    /// After a change that may revoke access, delete the conntrack entries of the affected pods, so
    /// established connections are judged again by the new rules (needs the `conntrack` tool).
    /// Without it, established connections keep flowing until they end.
    #[arg(long)]
    conntrack_flush: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Apply the rules inside this network namespace (`/run/netns/NAME`) instead of the agent's own
    /// (used by the lab, where each node is a namespace).
    #[arg(long)]
    netns: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let runner = match &cli.netns {
        Some(ns) => NftRunner::in_netns(ns),
        None => NftRunner::host(),
    };
    let mut dataplane = Dataplane::from_kernel(runner).context("cannot read the nftables state")?;
    let fresh = dataplane.committed().is_none();
    if cli.fail_closed && fresh {
        dataplane
            .apply(&policy_compiler::plan::fail_closed_ruleset())
            .context("cannot install the fail-closed ruleset")?;
        tracing::info!("fail-closed: new forwarded connections are dropped until the first sync");
    }
    let source_metrics = nftpolicy::source::kube::SourceMetrics::new();
    let metrics = Arc::new(Metrics::new_with(|r| source_metrics.register(r)));
    let health = Arc::new(Health::default());
    let (addr, _server) = serve(cli.listen, health.clone(), metrics.clone())
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    tracing::info!(%addr, node = %cli.node_name, source = %cli.source, restart = !fresh, "policyd started");

    let (tx, rx) = mpsc::channel(1024);
    if let Some(dir) = cli.source.strip_prefix("dir:") {
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            bail!("--source dir:{}: not a directory", dir.display());
        }
        tokio::spawn(DirSource::new(dir).run(Duration::from_millis(cli.poll_ms), tx));
    } else if cli.source == "kube" {
        let client = nftpolicy::source::kube::client_from_env().await?;
        tokio::spawn(nftpolicy::source::kube::run(
            client,
            cli.node_name.clone(),
            tx,
            source_metrics,
        ));
    } else {
        bail!("--source {}: use `kube` or `dir:PATH`", cli.source);
    }

    let mut config = AgentConfig::new(cli.node_name);
    config.debounce = Duration::from_millis(cli.debounce_ms);
    config.audit_interval = Duration::from_secs(cli.audit_interval_secs.max(1));
    config.conntrack_flush = cli.conntrack_flush;
    let agent = Agent::new(config, dataplane, metrics, health);
    tokio::select! {
        _ = agent.run(rx) => {}
        _ = shutdown_signal() => tracing::info!("stopping; the last ruleset stays in force"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
