//! `policyd`'s command line, in the library so that deployment manifests can be checked against it.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

use crate::http::DEFAULT_LISTEN;

/// The default metrics and health port (see [`DEFAULT_LISTEN`]).
pub const DEFAULT_PORT: u16 = 9808;

/// The nftpolicy node agent: enforces Kubernetes NetworkPolicy (and network-policy-api
/// ClusterNetworkPolicy, where its CRD is installed) for this node's pods with nftables.
///
/// It watches Pods, Namespaces, NetworkPolicies, ClusterNetworkPolicies and Nodes (cluster-wide:
/// peers are), compiles the node's ruleset, and applies only the difference to `table inet
/// nftpolicy` in one atomic `nft -f -` transaction per burst of changes. On restart it reads the table back, so no rule
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
    /// With `--source kube`: list every kind again this often (seconds; 0 = never). Watches already
    /// resume after errors, re-list on 410 Gone, and re-list every kind when the API's
    /// resourceVersion goes backwards (an etcd restore); a periodic re-list also bounds how long any
    /// other silent staleness can last, at the cost of a full list of every pod, namespace and
    /// policy per agent (see the README before turning it on in a large cluster).
    #[arg(long, default_value_t = 0)]
    pub relist_interval_secs: u64,
    /// With `--source kube`: how long a due sync waits for kinds whose watch failed to be listed
    /// again, so that it sees every kind current (seconds; 0 = never wait). After that it runs with
    /// their last known state, and says so in the log.
    #[arg(long, default_value_t = 10)]
    pub relist_hold_secs: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Apply the rules inside this network namespace (`/run/netns/NAME`) instead of the agent's own
    /// (used by the lab, where each node is a namespace).
    #[arg(long)]
    pub netns: Option<String>,
}

/// The log filter when `RUST_LOG` is not set: `info` for the agent. The Kubernetes client's own
/// error lines for failed requests are dropped (the agent logs each outage once, with its
/// duration), and so are its warnings about watch connections that end without TLS close_notify
/// (the normal end of a watch when an API server restarts).
pub const DEFAULT_LOG_FILTER: &str =
    "info,kube_client::client=error,kube_client::client::builder=off";

/// The format of log lines.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
