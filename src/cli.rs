//! `policyd`'s command line, in the library so that deployment manifests can be checked against it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use policy_compiler::plan::{CompileOptions, DenyLog};

use crate::debounce::DebounceConfig;
use crate::denials::reader::ReaderConfig;
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
    /// Address for /healthz, /readyz, /metrics and /denials.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// A change that comes when no sync ended in the last `--debounce-interval-ms` is synced after
    /// this gather window, which lets the changes that come with it join (milliseconds).
    #[arg(long, default_value_t = DebounceConfig::DEFAULT.min.as_millis() as u64)]
    pub debounce_min_ms: u64,
    /// Under a burst of changes, at most one sync per this interval after the end of the previous
    /// one, carrying every change since (milliseconds). `--debounce-ms` is its former name.
    #[arg(
        long,
        visible_alias = "debounce-ms",
        default_value_t = DebounceConfig::DEFAULT.interval.as_millis() as u64
    )]
    pub debounce_interval_ms: u64,
    /// The longest a change waits for its sync, whatever the other two debounce flags say
    /// (milliseconds; not counting retries of failed syncs, nor `--relist-hold-secs`).
    #[arg(long, default_value_t = DebounceConfig::DEFAULT.max_wait.as_millis() as u64)]
    pub debounce_max_wait_ms: u64,
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
    /// again, or that are being listed again, so that it sees every kind current (seconds; 0 =
    /// never wait). After that it runs with their last known state, and says so in the log.
    #[arg(long, default_value_t = 10)]
    pub relist_hold_secs: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Apply the rules inside this network namespace (`/run/netns/NAME`) instead of the agent's own
    /// (used by the lab, where each node is a namespace).
    #[arg(long)]
    pub netns: Option<String>,
    /// Log denied packets: each drop point of the ruleset logs (rate-limited) through NFLOG to
    /// `--deny-log-group`, which the agent reads: one log line per denial (target
    /// `nftpolicy::denial`), the last ones at `/denials`, and `nftpolicy_denials_total`.
    #[arg(long)]
    pub deny_log: bool,
    /// With `--deny-log`: the NFLOG group the ruleset logs to and the agent reads.
    #[arg(long, default_value_t = DenyLog::DEFAULT.group)]
    pub deny_log_group: u16,
    /// With `--deny-log`: log messages per second per drop point (a group chain's drop, a
    /// ClusterNetworkPolicy Deny rule); denials above it are dropped unlogged (still counted).
    #[arg(long, default_value_t = DenyLog::DEFAULT.rate, value_parser = clap::value_parser!(u32).range(1..))]
    pub deny_log_rate: u32,
    /// With `--deny-log`: messages a drop point may log at once above the rate.
    #[arg(long, default_value_t = DenyLog::DEFAULT.burst)]
    pub deny_log_burst: u32,
    /// With `--deny-log`: how many of the last denials `/denials` serves.
    #[arg(long, default_value_t = 1000)]
    pub denials_buffer: usize,
    /// Every policy in audit mode (for trying nftpolicy beside another enforcer): compiled as
    /// enforced, but each drop point counts (and with `--deny-log` logs) a "would deny" and
    /// accepts; nothing is dropped.
    #[arg(long)]
    pub audit_all: bool,
    /// Also export per-rule series (`nftpolicy_policy_rule_packets_total`, ...).
    #[arg(long)]
    pub rule_metrics: bool,
    /// The most policy series a scrape exports; the rest are left out and counted in
    /// `nftpolicy_policy_series_omitted`.
    #[arg(long, default_value_t = crate::policy_metrics::DEFAULT_MAX_SERIES)]
    pub metrics_max_series: usize,
    /// Scrapes of `/metrics` within this many seconds of a read of the ruleset's counters reuse
    /// it (nft reads its whole cache to list them); 0 reads on every scrape.
    #[arg(long, default_value_t = crate::policy_metrics::DEFAULT_MIN_INTERVAL.as_secs())]
    pub counters_min_interval_secs: u64,
}

impl Cli {
    /// The compile options the flags ask for: log rules before each drop point with `--deny-log`
    /// (group, rate and burst from their flags).
    pub fn compile_options(&self) -> CompileOptions {
        CompileOptions {
            deny_log: self.deny_log.then_some(DenyLog {
                group: self.deny_log_group,
                rate: self.deny_log_rate,
                burst: self.deny_log_burst,
            }),
            audit_all: self.audit_all,
        }
    }

    /// The debounce the three `--debounce-*` flags ask for.
    pub fn debounce(&self) -> DebounceConfig {
        DebounceConfig {
            min: Duration::from_millis(self.debounce_min_ms),
            interval: Duration::from_millis(self.debounce_interval_ms),
            max_wait: Duration::from_millis(self.debounce_max_wait_ms),
        }
    }

    /// What the deny log reader reads, with `--deny-log`: the group, in the namespace of
    /// `--netns` if given.
    pub fn deny_log_reader(&self) -> Option<ReaderConfig> {
        self.deny_log.then(|| ReaderConfig {
            netns: self
                .netns
                .as_ref()
                .map(|name| PathBuf::from(format!("/run/netns/{name}"))),
            ..ReaderConfig::new(self.deny_log_group)
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from([&["policyd", "--node-name", "n"], args].concat()).expect("valid")
    }

    #[test]
    fn the_deny_log_is_off_by_default_and_its_flags_reach_the_compiler() {
        let off = parse(&[]);
        assert_eq!(off.compile_options(), CompileOptions::default());
        assert!(off.deny_log_reader().is_none());
        assert_eq!(off.denials_buffer, 1000);

        let on = parse(&["--deny-log"]);
        assert_eq!(
            on.compile_options().deny_log,
            Some(DenyLog {
                group: 100,
                rate: 10,
                burst: 20
            })
        );
        let reader = on.deny_log_reader().expect("a reader");
        assert_eq!((reader.group, reader.netns), (100, None));

        let set = parse(&[
            "--deny-log",
            "--deny-log-group",
            "7",
            "--deny-log-rate",
            "3",
            "--deny-log-burst",
            "0",
            "--denials-buffer",
            "5",
            "--netns",
            "node-1",
        ]);
        assert_eq!(
            set.compile_options(),
            CompileOptions {
                deny_log: Some(DenyLog {
                    group: 7,
                    rate: 3,
                    burst: 0
                }),
                audit_all: false,
            }
        );
        let reader = set.deny_log_reader().expect("a reader");
        assert_eq!(reader.group, 7);
        assert_eq!(reader.netns, Some(PathBuf::from("/run/netns/node-1")));
        assert_eq!(set.denials_buffer, 5);
    }

    #[test]
    fn the_debounce_flags_default_to_the_adaptive_debounce_and_keep_the_former_name() {
        assert_eq!(parse(&[]).debounce(), DebounceConfig::DEFAULT);
        let ms = Duration::from_millis;
        assert_eq!(
            parse(&[
                "--debounce-min-ms",
                "2",
                "--debounce-interval-ms",
                "100",
                "--debounce-max-wait-ms",
                "400"
            ])
            .debounce(),
            DebounceConfig {
                min: ms(2),
                interval: ms(100),
                max_wait: ms(400)
            }
        );
        assert_eq!(
            parse(&["--debounce-ms", "20"]).debounce(),
            DebounceConfig {
                interval: ms(20),
                ..DebounceConfig::DEFAULT
            },
            "--debounce-ms sets the interval, as before"
        );
    }

    #[test]
    fn a_zero_rate_is_refused() {
        let err = Cli::try_parse_from(["policyd", "--node-name", "n", "--deny-log-rate", "0"])
            .expect_err("a rate of 0 logs nothing");
        assert!(err.to_string().contains("--deny-log-rate"), "{err}");
    }
}
