//! `policyd`'s command line, in the library so that deployment manifests can be checked against it.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

use crate::http::DEFAULT_LISTEN;

/// The default metrics and health port (see [`DEFAULT_LISTEN`]).
pub const DEFAULT_PORT: u16 = 9808;

/// The nftpolicy node agent: enforces Kubernetes NetworkPolicy for this node's pods with nftables.
///
/// It watches Pods, Namespaces and NetworkPolicies (all namespaces: peers are cluster-wide), compiles
/// the node's ruleset, and applies only the difference to `table inet nftpolicy` in one atomic
/// `nft -f -` transaction per burst of changes. On restart it reads the table back, so no rule
/// disappears in between. On exit the last ruleset stays in force (fail-static).
#[derive(Parser, Debug)]
#[command(name = "policyd", version)]
pub struct Cli {
    /// This node's name, as in the pods' spec.nodeName.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Where cluster state comes from: `kube` (the API server: in-cluster config or kubeconfig) or
    /// `dir:PATH` (a directory of manifests, re-read when it changes).
    #[arg(long, default_value = "kube")]
    pub source: String,
    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Wait this long after the first change of a burst before syncing (milliseconds).
    #[arg(long, default_value_t = 50)]
    pub debounce_ms: u64,
    /// Compare the kernel's table with the committed one this often, and repair drift (seconds).
    #[arg(long, default_value_t = 300)]
    pub audit_interval_secs: u64,
    /// How often a `dir:` source is re-read (milliseconds).
    #[arg(long, default_value_t = 200)]
    pub poll_ms: u64,
    /// Until the first sync, drop every new forwarded connection on this node (established ones keep
    /// flowing). Without it, traffic keeps the last ruleset in force (or none, on a fresh node).
    #[arg(long)]
    pub fail_closed: bool,
    /// After a change that may revoke access, delete the conntrack entries of the affected pods, so
    /// established connections are judged again by the new rules (needs the `conntrack` tool).
    /// Without it, established connections keep flowing until they end.
    #[arg(long)]
    pub conntrack_flush: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Apply the rules inside this network namespace (`/run/netns/NAME`) instead of the agent's own
    /// (used by the lab, where each node is a namespace).
    #[arg(long)]
    pub netns: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
