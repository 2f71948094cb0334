//! Packets and bytes per policy, read from the ruleset's named counters at each scrape.
//!
//! Every counter of the committed ruleset has an [`Origin`] (from the compile); a scrape lists the
//! counters (`nft -j list counters table inet nftpolicy`: the counter objects only, never the sets
//! and maps) and sums them into series:
//!
//! - `nftpolicy_policy_packets_total` and `nftpolicy_policy_bytes_total`, labels `namespace`,
//!   `policy`, `direction`, `verdict`: `accept` (a rule of the policy allowed), `would_accept` (a
//!   rule of an audit policy matched), `drop` (no rule of the policies isolating the pod allowed:
//!   counted for each of them), `would_deny` (the same for audit policies, or under
//!   `--audit-all`);
//! - `nftpolicy_cluster_policy_packets_total` and `..._bytes_total`, labels `tier`, `policy`,
//!   `direction`, `verdict` (`accept`, `drop`, `would_deny`), from the ClusterNetworkPolicy rules
//!   that decided (Pass decides nothing and has no counter);
//! - with per-rule series (`--rule-metrics`), `nftpolicy_policy_rule_packets_total` /
//!   `..._bytes_total` with a `rule` label (the rule's index) and
//!   `nftpolicy_cluster_policy_rule_packets_total` / `..._bytes_total` (the rule's name, else its
//!   index).
//!
//! Series are emitted in a fixed order (family, then labels) up to a cap
//! (`--metrics-max-series`, counting a packets/bytes pair once); the rest are left out of the
//! scrape and counted in `nftpolicy_policy_series_omitted` (a gauge: series left out at the last
//! scrape). A scrape that cannot read the counters emits none and counts
//! `nftpolicy_counter_read_errors_total`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use policy_compiler::nft::CounterValue;
use policy_compiler::plan::{Origin, Origins};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::agent::CommitObserver;
use crate::kernel::Kernel;

/// Reads the values of the ruleset's named counters, by name.
pub trait CounterReader: Send + Sync + std::fmt::Debug + 'static {
    /// The counters' values, or why they cannot be read.
    fn read(&self) -> Result<BTreeMap<String, CounterValue>, String>;
}

/// Reads the counters through the kernel seam ([`Kernel::counter_values`]: a netlink dump on the
/// real kernel); no table: no counters.
#[derive(Debug, Clone)]
pub struct KernelCounters<K>(pub K);

impl<K: Kernel + Sync + 'static> CounterReader for KernelCounters<K> {
    fn read(&self) -> Result<BTreeMap<String, CounterValue>, String> {
        self.0.counter_values().map_err(|e| e.to_string())
    }
}

/// How long one read of the counters serves the scrapes after it, by default.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// The default cap on policy series per scrape.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// A metric family of policy series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SeriesFamily {
    /// Per NetworkPolicy, direction and verdict.
    Policy,
    /// Per ClusterNetworkPolicy, direction and verdict.
    ClusterPolicy,
    /// Per NetworkPolicy rule.
    PolicyRule,
    /// Per ClusterNetworkPolicy rule.
    ClusterPolicyRule,
}

impl SeriesFamily {
    /// The metric name without the `nftpolicy_` prefix and the unit.
    fn stem(self) -> &'static str {
        match self {
            SeriesFamily::Policy => "policy",
            SeriesFamily::ClusterPolicy => "cluster_policy",
            SeriesFamily::PolicyRule => "policy_rule",
            SeriesFamily::ClusterPolicyRule => "cluster_policy_rule",
        }
    }

    fn help(self) -> &'static str {
        match self {
            SeriesFamily::Policy => {
                "by NetworkPolicy, direction and verdict, from the ruleset's counters"
            }
            SeriesFamily::ClusterPolicy => {
                "by ClusterNetworkPolicy, direction and verdict, from the ruleset's counters"
            }
            SeriesFamily::PolicyRule => "by NetworkPolicy rule and verdict",
            SeriesFamily::ClusterPolicyRule => "by ClusterNetworkPolicy rule and verdict",
        }
    }
}

/// Labels of one series, in order.
pub type SeriesLabels = Vec<(String, String)>;

/// Packets and bytes of every series, by family and labels.
pub type SeriesValues = BTreeMap<(SeriesFamily, SeriesLabels), CounterValue>;

/// The verdict label of a counter's origin (`accept`, `would_accept`, `drop`, `would_deny`).
fn verdict(origin: &Origin) -> &'static str {
    match origin {
        Origin::PolicyRule { audit: true, .. } => "would_accept",
        other => other.verdict(),
    }
}

/// Sums the counters into series; counters without an origin (of another ruleset) are left out.
pub fn aggregate(
    origins: &Origins,
    values: &BTreeMap<String, CounterValue>,
    per_rule: bool,
) -> SeriesValues {
    let mut out = SeriesValues::new();
    let mut add = |family: SeriesFamily, labels: SeriesLabels, v: &CounterValue| {
        let e = out.entry((family, labels)).or_default();
        e.packets = e.packets.saturating_add(v.packets);
        e.bytes = e.bytes.saturating_add(v.bytes);
    };
    let l = |pairs: &[(&str, &str)]| -> SeriesLabels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    for (name, value) in values {
        let Some(origin) = origins.get(name) else {
            continue;
        };
        let verdict = verdict(origin);
        let direction = origin.direction().as_str();
        match origin {
            Origin::PolicyRule { policy, index, .. } => {
                let base = [
                    ("namespace", &*policy.namespace),
                    ("policy", &*policy.name),
                    ("direction", direction),
                ];
                add(
                    SeriesFamily::Policy,
                    l(&[base[0], base[1], base[2], ("verdict", verdict)]),
                    value,
                );
                if per_rule {
                    let index = index.to_string();
                    add(
                        SeriesFamily::PolicyRule,
                        l(&[
                            base[0],
                            base[1],
                            base[2],
                            ("rule", &index),
                            ("verdict", verdict),
                        ]),
                        value,
                    );
                }
            }
            Origin::Isolation { policies, .. } => {
                for policy in policies {
                    add(
                        SeriesFamily::Policy,
                        l(&[
                            ("namespace", &policy.namespace),
                            ("policy", &policy.name),
                            ("direction", direction),
                            ("verdict", verdict),
                        ]),
                        value,
                    );
                }
            }
            Origin::ClusterRule {
                tier,
                policy,
                index,
                rule_name,
                ..
            } => {
                let tier = tier.to_string();
                add(
                    SeriesFamily::ClusterPolicy,
                    l(&[
                        ("tier", &tier),
                        ("policy", policy),
                        ("direction", direction),
                        ("verdict", verdict),
                    ]),
                    value,
                );
                if per_rule {
                    let rule = rule_name.clone().unwrap_or_else(|| index.to_string());
                    add(
                        SeriesFamily::ClusterPolicyRule,
                        l(&[
                            ("tier", &tier),
                            ("policy", policy),
                            ("direction", direction),
                            ("rule", &rule),
                            ("verdict", verdict),
                        ]),
                        value,
                    );
                }
            }
        }
    }
    out
}

/// The policy series of the agent's `/metrics`: a Prometheus collector reading the counters at
/// each scrape, with the origins of the committed ruleset (replaced after each sync).
#[derive(Debug)]
pub struct PolicyCounters {
    reader: Box<dyn CounterReader>,
    /// How long a read serves later scrapes: nft 1.0.6 fetches its whole cache (sets and their
    /// elements included) even to list counters, 70 ms at medium and 290 ms at large, so scrapes
    /// closer together than this (several Prometheus servers, a short interval) read once.
    min_interval: Duration,
    last: Mutex<Option<(Instant, BTreeMap<String, CounterValue>)>>,
    origins: Mutex<Arc<Origins>>,
    per_rule: bool,
    max_series: usize,
    omitted: AtomicU64,
    read_errors: AtomicU64,
}

impl PolicyCounters {
    /// A collector reading through `reader`, per rule or not, emitting at most `max_series`.
    pub fn new(reader: Box<dyn CounterReader>, per_rule: bool, max_series: usize) -> Self {
        Self {
            reader,
            min_interval: DEFAULT_MIN_INTERVAL,
            last: Mutex::new(None),
            origins: Mutex::new(Arc::new(Origins::new())),
            per_rule,
            max_series,
            omitted: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
        }
    }

    /// Scrapes within `interval` of a read reuse its values (zero: every scrape reads).
    pub fn with_min_interval(mut self, interval: Duration) -> Self {
        self.min_interval = interval;
        self
    }

    /// The counters' values: the last read when it is recent enough, else a new one.
    fn values(&self) -> Result<BTreeMap<String, CounterValue>, String> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, values)) = last.as_ref() {
            if at.elapsed() < self.min_interval {
                return Ok(values.clone());
            }
        }
        let values = self.reader.read()?;
        *last = Some((Instant::now(), values.clone()));
        Ok(values)
    }

    /// The origins of the ruleset now committed.
    pub fn set_origins(&self, origins: Arc<Origins>) {
        *self.origins.lock().unwrap_or_else(PoisonError::into_inner) = origins;
    }

    /// The series of one scrape, capped: what is emitted, and how many were left out.
    pub fn scrape(&self) -> Result<(SeriesValues, usize), String> {
        let origins = Arc::clone(&self.origins.lock().unwrap_or_else(PoisonError::into_inner));
        let values = self.values()?;
        let all = aggregate(&origins, &values, self.per_rule);
        let omitted = all.len().saturating_sub(self.max_series);
        Ok((all.into_iter().take(self.max_series).collect(), omitted))
    }
}

impl CommitObserver for PolicyCounters {
    fn committed(
        &self,
        origins: &Arc<Origins>,
        _cluster: &policy_compiler::ClusterState,
        _changed: crate::agent::Changed<'_>,
    ) {
        self.set_origins(Arc::clone(origins));
    }
}

impl Collector for PolicyCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let series = match self.scrape() {
            Ok((series, omitted)) => {
                self.omitted.store(omitted as u64, Ordering::Relaxed);
                series
            }
            Err(e) => {
                self.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot read the ruleset's counters for /metrics");
                SeriesValues::new()
            }
        };
        let mut by_family: BTreeMap<SeriesFamily, Vec<(&SeriesLabels, &CounterValue)>> =
            BTreeMap::new();
        for ((family, labels), v) in &series {
            by_family.entry(*family).or_default().push((labels, v));
        }
        for (family, rows) in &by_family {
            for (unit, pick) in [
                (
                    "packets",
                    (|v: &CounterValue| v.packets) as fn(&CounterValue) -> u64,
                ),
                ("bytes", |v: &CounterValue| v.bytes),
            ] {
                let name = format!("{}_{unit}", family.stem());
                let help = format!("{} {}", capitalized(unit), family.help());
                let counter = ConstCounter::new(0u64);
                let mut metric =
                    encoder.encode_descriptor(&name, &help, None, counter.metric_type())?;
                for (labels, v) in rows {
                    ConstCounter::new(pick(v)).encode(metric.encode_family(*labels)?)?;
                }
            }
        }
        let omitted = ConstGauge::new(self.omitted.load(Ordering::Relaxed) as i64);
        omitted.encode(encoder.encode_descriptor(
            "policy_series_omitted",
            "Policy series left out of the last scrape by the --metrics-max-series cap",
            None,
            omitted.metric_type(),
        )?)?;
        let errors = ConstCounter::new(self.read_errors.load(Ordering::Relaxed));
        errors.encode(encoder.encode_descriptor(
            "counter_read_errors",
            "Scrapes that could not read the ruleset's counters",
            None,
            errors.metric_type(),
        )?)?;
        Ok(())
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_compiler::model::{Action, Direction, ObjectRef, Tier};

    fn value(packets: u64, bytes: u64) -> CounterValue {
        CounterValue { packets, bytes }
    }

    fn origins() -> Origins {
        let web = ObjectRef::new("x", "allow-web");
        let deny = ObjectRef::new("x", "deny-all");
        Origins::from([
            (
                "np_x_allow-web_ingress_0".to_string(),
                Origin::PolicyRule {
                    policy: web.clone(),
                    direction: Direction::Ingress,
                    index: 0,
                    audit: false,
                },
            ),
            (
                "np_x_allow-web_ingress_1".to_string(),
                Origin::PolicyRule {
                    policy: web.clone(),
                    direction: Direction::Ingress,
                    index: 1,
                    audit: false,
                },
            ),
            (
                "ingress_x_allow-web_deny-all".to_string(),
                Origin::Isolation {
                    direction: Direction::Ingress,
                    policies: vec![web, deny],
                    audit: false,
                },
            ),
            (
                "admin_RULE_guard_egress_0".to_string(),
                Origin::ClusterRule {
                    tier: Tier::Admin,
                    policy: "guard".into(),
                    direction: Direction::Egress,
                    index: 0,
                    rule_name: Some("block-metadata".into()),
                    action: Action::Deny,
                    audit: true,
                },
            ),
        ])
    }

    fn labels(pairs: &[(&str, &str)]) -> SeriesLabels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rules_sum_per_policy_and_drops_count_for_each_isolating_policy() {
        let values = BTreeMap::from([
            ("np_x_allow-web_ingress_0".to_string(), value(3, 300)),
            ("np_x_allow-web_ingress_1".to_string(), value(2, 20)),
            ("ingress_x_allow-web_deny-all".to_string(), value(5, 500)),
            ("admin_RULE_guard_egress_0".to_string(), value(1, 60)),
            ("from_another_ruleset".to_string(), value(9, 9)),
        ]);
        let series = aggregate(&origins(), &values, false);
        let get = |family, pairs: &[(&str, &str)]| series.get(&(family, labels(pairs))).copied();
        let web = [
            ("namespace", "x"),
            ("policy", "allow-web"),
            ("direction", "ingress"),
        ];
        assert_eq!(
            get(
                SeriesFamily::Policy,
                &[web[0], web[1], web[2], ("verdict", "accept")]
            ),
            Some(value(5, 320))
        );
        assert_eq!(
            get(
                SeriesFamily::Policy,
                &[web[0], web[1], web[2], ("verdict", "drop")]
            ),
            Some(value(5, 500))
        );
        assert_eq!(
            get(
                SeriesFamily::Policy,
                &[
                    ("namespace", "x"),
                    ("policy", "deny-all"),
                    ("direction", "ingress"),
                    ("verdict", "drop")
                ]
            ),
            Some(value(5, 500))
        );
        assert_eq!(
            get(
                SeriesFamily::ClusterPolicy,
                &[
                    ("tier", "Admin"),
                    ("policy", "guard"),
                    ("direction", "egress"),
                    ("verdict", "would_deny")
                ]
            ),
            Some(value(1, 60))
        );
        // Four series: allow-web accept and drop, deny-all drop, guard would_deny.
        assert_eq!(series.len(), 4);
    }

    #[test]
    fn per_rule_series_name_the_rule() {
        let values = BTreeMap::from([
            ("np_x_allow-web_ingress_1".to_string(), value(2, 20)),
            ("admin_RULE_guard_egress_0".to_string(), value(1, 60)),
        ]);
        let series = aggregate(&origins(), &values, true);
        assert_eq!(
            series.get(&(
                SeriesFamily::PolicyRule,
                labels(&[
                    ("namespace", "x"),
                    ("policy", "allow-web"),
                    ("direction", "ingress"),
                    ("rule", "1"),
                    ("verdict", "accept")
                ])
            )),
            Some(&value(2, 20))
        );
        assert!(series.contains_key(&(
            SeriesFamily::ClusterPolicyRule,
            labels(&[
                ("tier", "Admin"),
                ("policy", "guard"),
                ("direction", "egress"),
                ("rule", "block-metadata"),
                ("verdict", "would_deny")
            ])
        )));
    }

    #[derive(Debug)]
    struct Fixed(Result<BTreeMap<String, CounterValue>, String>);

    impl CounterReader for Fixed {
        fn read(&self) -> Result<BTreeMap<String, CounterValue>, String> {
            self.0.clone()
        }
    }

    fn encoded(collector: PolicyCounters) -> String {
        let mut registry = prometheus_client::registry::Registry::with_prefix("nftpolicy");
        registry.register_collector(Box::new(collector));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
        out
    }

    #[test]
    fn the_cap_leaves_series_out_and_says_how_many() {
        let values = BTreeMap::from([
            ("np_x_allow-web_ingress_0".to_string(), value(3, 300)),
            ("ingress_x_allow-web_deny-all".to_string(), value(5, 500)),
        ]);
        let collector = PolicyCounters::new(Box::new(Fixed(Ok(values))), false, 2);
        collector.set_origins(Arc::new(origins()));
        let text = encoded(collector);
        // Three series (allow-web accept, allow-web drop, deny-all drop), two kept in order.
        assert!(text.contains(
            "nftpolicy_policy_packets_total{namespace=\"x\",policy=\"allow-web\",direction=\"ingress\",verdict=\"accept\"} 3"
        ), "{text}");
        assert!(text.contains(
            "nftpolicy_policy_bytes_total{namespace=\"x\",policy=\"allow-web\",direction=\"ingress\",verdict=\"drop\"} 500"
        ), "{text}");
        assert!(!text.contains("deny-all"), "{text}");
        assert!(text.contains("nftpolicy_policy_series_omitted 1"), "{text}");
    }

    #[derive(Debug, Default)]
    struct Counting(std::sync::atomic::AtomicUsize);

    impl CounterReader for Arc<Counting> {
        fn read(&self) -> Result<BTreeMap<String, CounterValue>, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(BTreeMap::new())
        }
    }

    #[test]
    fn scrapes_within_the_interval_read_the_kernel_once() {
        let reads = Arc::new(Counting::default());
        let collector = PolicyCounters::new(Box::new(reads.clone()), false, 10)
            .with_min_interval(Duration::from_secs(3600));
        collector.scrape().expect("scrape");
        collector.scrape().expect("scrape");
        assert_eq!(reads.0.load(Ordering::SeqCst), 1);
        let every = PolicyCounters::new(Box::new(reads.clone()), false, 10)
            .with_min_interval(Duration::ZERO);
        every.scrape().expect("scrape");
        every.scrape().expect("scrape");
        assert_eq!(reads.0.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_failed_read_emits_no_series_and_counts() {
        let collector =
            PolicyCounters::new(Box::new(Fixed(Err("nft: no table".into()))), false, 10);
        collector.set_origins(Arc::new(origins()));
        let text = encoded(collector);
        assert!(!text.contains("nftpolicy_policy_packets_total{"), "{text}");
        assert!(
            text.contains("nftpolicy_counter_read_errors_total 1"),
            "{text}"
        );
    }
}
