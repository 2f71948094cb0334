//! `policyd`: the nftpolicy node agent. Keeps the node's `table inet nftpolicy` equal to what
//! `policyc compile --node` would print for the live cluster, changing the kernel only by the
//! difference, in atomic transactions.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::sync::mpsc;

use nftpolicy::agent::{Agent, AgentConfig, Health};
use nftpolicy::cli::{Cli, LogFormat};
use nftpolicy::dataplane::Dataplane;
use nftpolicy::denials::reader::DenyLogReader;
use nftpolicy::denials::Denials;
use nftpolicy::http::serve;
use nftpolicy::kernel::NftKernel;
use nftpolicy::metrics::Metrics;
use nftpolicy::policy_metrics::{KernelCounters, PolicyCounters};
use nftpolicy::source::files::DirSource;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(nftpolicy::cli::DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> Result<()> {
    nftpolicy::heap::use_one_arena();
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
    let kernel = match &cli.netns {
        Some(ns) => NftKernel::in_netns(ns),
        None => NftKernel::host(),
    };
    let mut dataplane =
        Dataplane::from_kernel(kernel.clone()).context("cannot read the nftables state")?;
    let fresh = dataplane.committed().is_none();
    if cli.fail_closed
        && dataplane
            .install_fail_closed()
            .context("cannot install the fail-closed ruleset")?
    {
        tracing::info!("fail-closed: new forwarded connections are dropped until the first sync");
    }
    let source_metrics = nftpolicy::source::kube::SourceMetrics::new();
    let denials = cli
        .deny_log
        .then(|| Arc::new(Denials::new(cli.denials_buffer)));
    let policy_counters = Arc::new(
        PolicyCounters::new(
            Box::new(KernelCounters(kernel.clone())),
            cli.rule_metrics,
            cli.metrics_max_series,
        )
        .with_min_interval(Duration::from_secs(cli.counters_min_interval_secs)),
    );
    let metrics = Arc::new(Metrics::new_with(|r| {
        source_metrics.register(r);
        r.register_collector(Box::new(policy_counters.clone()));
        if let Some(denials) = &denials {
            denials.register(r);
        }
    }));
    // Bound before the first sync loads the log rules, so that none of their messages is lost; the
    // reader runs until the process ends.
    let _deny_log = match (cli.deny_log_reader(), &denials) {
        (Some(config), Some(denials)) => Some(
            DenyLogReader::start(&config, denials.clone())
                .context("cannot read the deny log (--deny-log)")?,
        ),
        _ => None,
    };
    let health = Arc::new(Health::default());
    let (addr, _server) = serve(cli.listen, health.clone(), metrics.clone(), denials.clone())
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
        let client = nftpolicy::source::kube::client_from_env(&cli.node_name).await?;
        let mut options = nftpolicy::source::kube::WatchOptions::new(cli.node_name.clone());
        options.relist_interval =
            (cli.relist_interval_secs > 0).then(|| Duration::from_secs(cli.relist_interval_secs));
        tokio::spawn(nftpolicy::source::kube::run(
            client,
            options,
            tx,
            source_metrics,
        ));
    } else {
        bail!("--source {}: use `kube` or `dir:PATH`", cli.source);
    }

    let compile = cli.compile_options();
    let debounce = cli.debounce();
    let mut config = AgentConfig::new(cli.node_name);
    config.debounce = debounce;
    config.audit_interval = Duration::from_secs(cli.audit_interval_secs.max(1));
    config.conntrack_flush = cli.conntrack_flush;
    config.relist_hold = Duration::from_secs(cli.relist_hold_secs);
    config.compile = compile;
    let mut agent =
        Agent::new(config, dataplane, metrics, health).with_commit_observer(policy_counters);
    if let Some(denials) = denials {
        agent = agent.with_commit_observer(denials);
    }
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
