//! The agent's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of the sync duration histogram: whether the table was replaced whole.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// `full` or `partial`.
    pub kind: String,
}

/// Every metric the agent exports (prefix `nftpolicy_`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Time from compile to committed transaction, full and partial apart.
    pub sync_duration: Family<SyncLabels, Histogram>,
    /// Source changes each successful sync committed.
    pub sync_events: Histogram,
    /// Time from the oldest change a successful sync committed entering the agent to the commit.
    pub sync_queue_lag: Histogram,
    /// Operations sent to nft.
    pub transaction_operations: Counter,
    /// Syncs that failed.
    pub sync_errors: Counter,
    /// Audits that found the kernel different from what was committed, and repaired it.
    pub drift_repairs: Counter,
    /// Objects reported invalid and left out.
    pub invalid_objects: Gauge,
    /// Rules in the committed table.
    pub rules: Gauge,
    /// Named sets and maps in the committed table.
    pub sets: Gauge,
    /// Set and map elements in the committed table.
    pub elements: Gauge,
    /// Unix time of the last successful sync.
    pub last_sync_timestamp: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        Self::new_with(|_| {})
    }

    /// Creates and registers every metric, and lets `extra` register more (a source's, say).
    pub fn new_with(extra: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::with_prefix("nftpolicy");
        let sync_duration = Family::<SyncLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        let m = Self {
            sync_duration,
            sync_events: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            sync_queue_lag: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            transaction_operations: Counter::default(),
            sync_errors: Counter::default(),
            drift_repairs: Counter::default(),
            invalid_objects: Gauge::default(),
            rules: Gauge::default(),
            sets: Gauge::default(),
            elements: Gauge::default(),
            last_sync_timestamp: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sync_duration_seconds",
            "Time to compile and commit one sync, by kind (full table replace or partial diff)",
            m.sync_duration.clone(),
        );
        registry.register(
            "sync_events",
            "Source changes (updates that changed the cluster state) committed by each successful sync, \
             including syncs that found the ruleset already in force",
            m.sync_events.clone(),
        );
        registry.register(
            "sync_queue_lag_seconds",
            "Time from the oldest change a successful sync committed entering the agent to the commit",
            m.sync_queue_lag.clone(),
        );
        registry.register(
            "transaction_operations",
            "Operations sent to nft in transactions",
            m.transaction_operations.clone(),
        );
        registry.register("sync_errors", "Syncs that failed", m.sync_errors.clone());
        registry.register(
            "drift_repairs",
            "Audits that found the kernel's table different from the committed one and replaced it",
            m.drift_repairs.clone(),
        );
        registry.register(
            "invalid_objects",
            "Objects reported invalid and left out",
            m.invalid_objects.clone(),
        );
        registry.register("rules", "Rules in the committed table", m.rules.clone());
        registry.register(
            "sets",
            "Named sets and maps in the committed table",
            m.sets.clone(),
        );
        registry.register(
            "elements",
            "Set and map elements in the committed table",
            m.elements.clone(),
        );
        registry.register(
            "last_sync_timestamp_seconds",
            "Unix time of the last successful sync",
            m.last_sync_timestamp.clone(),
        );
        extra(&mut registry);
        Self { registry, ..m }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}
