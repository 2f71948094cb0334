//! The Kubernetes source's metrics: request failures, re-lists by reason, the state of each kind's
//! watch and the time of its last sign of life, invalid objects and unpublished Events.

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::source::Kind;

/// Why a kind was listed again after its first list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelistReason {
    /// The API answered a watch with `410 Gone` (its history no longer reaches the last
    /// resourceVersion: after a compaction, or an API server restart). The normal way a watch
    /// resumes; not an error.
    Expired,
    /// The API's resourceVersion went below one already seen (etcd restored from an older backup):
    /// every kind is listed again.
    ResourceVersionBackwards,
    /// `--relist-interval-secs` elapsed.
    Periodic,
}

impl RelistReason {
    /// Every reason.
    pub const ALL: [RelistReason; 3] = [
        RelistReason::Expired,
        RelistReason::ResourceVersionBackwards,
        RelistReason::Periodic,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RelistReason::Expired => "expired",
            RelistReason::ResourceVersionBackwards => "resource_version_backwards",
            RelistReason::Periodic => "periodic",
        }
    }
}

/// What a kind's watch is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchState {
    /// Listing (the first list, or a re-list).
    Listing,
    /// Watching: changes arrive as they happen.
    Watching,
    /// The last request failed; retrying with backoff. The kind's last known state is in force.
    Failing,
    /// The API does not serve the kind (a custom resource whose CustomResourceDefinition is not
    /// installed): none of its objects exist, and the API is asked again periodically.
    Absent,
}

impl WatchState {
    /// Every state.
    pub const ALL: [WatchState; 4] = [
        WatchState::Listing,
        WatchState::Watching,
        WatchState::Failing,
        WatchState::Absent,
    ];

    /// The `state` label.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchState::Listing => "listing",
            WatchState::Watching => "watching",
            WatchState::Failing => "failing",
            WatchState::Absent => "absent",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RelistLabels {
    kind: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    kind: &'static str,
    state: &'static str,
}

fn kind_label(kind: Kind) -> KindLabel {
    KindLabel {
        kind: kind.as_str(),
    }
}

/// Counters and gauges of the Kubernetes source. Clones share them; [`SourceMetrics::register`]
/// exposes them in a Prometheus registry.
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    watch_errors: Family<KindLabel, Counter>,
    relists: Family<RelistLabels, Counter>,
    watch_state: Family<StateLabels, Gauge>,
    last_event: Family<KindLabel, Gauge<f64, AtomicU64>>,
    invalid_objects: Family<KindLabel, Counter>,
    events_failed: Counter,
}

impl Default for SourceMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SourceMetrics {
    /// Every series at zero (every kind `listing`), so that /metrics shows zeros rather than
    /// nothing.
    pub fn new() -> Self {
        let metrics = Self {
            watch_errors: Family::default(),
            relists: Family::default(),
            watch_state: Family::default(),
            last_event: Family::default(),
            invalid_objects: Family::default(),
            events_failed: Counter::default(),
        };
        for kind in Kind::ENFORCED {
            drop(metrics.watch_errors.get_or_create(&kind_label(kind)));
            drop(metrics.invalid_objects.get_or_create(&kind_label(kind)));
            drop(metrics.last_event.get_or_create(&kind_label(kind)));
            for reason in RelistReason::ALL {
                drop(metrics.relists.get_or_create(&RelistLabels {
                    kind: kind.as_str(),
                    reason: reason.as_str(),
                }));
            }
            metrics.set_state(kind, WatchState::Listing);
        }
        metrics
    }

    /// Registers everything under the registry's prefix and `kube`: `kube_watch_errors_total`,
    /// `kube_relists_total` (by `reason`), `kube_watch_state` (1 for the current `state`),
    /// `kube_last_event_timestamp_seconds`, `kube_invalid_objects_total` (all by `kind`), and
    /// `kube_events_failed_total`.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("kube");
        registry.register(
            "watch_errors",
            "Failed list and watch requests to the Kubernetes API, by kind (each is retried with backoff; 410 Gone is not an error, see relists)",
            self.watch_errors.clone(),
        );
        registry.register(
            "relists",
            "Lists of a kind after its first one, by reason: expired (410 Gone), resource_version_backwards (etcd restored), periodic",
            self.relists.clone(),
        );
        registry.register(
            "watch_state",
            "State of each kind's watch: 1 for the current state (listing, watching, failing, absent: not served by the API), 0 for the others",
            self.watch_state.clone(),
        );
        registry.register(
            "last_event_timestamp_seconds",
            "Unix time of the last list, watch event or bookmark received for a kind, or of the last API discovery that found it not served (0 before the first)",
            self.last_event.clone(),
        );
        registry.register(
            "invalid_objects",
            "Invalid objects seen in the Kubernetes API, by kind (each object and problem counted once)",
            self.invalid_objects.clone(),
        );
        registry.register(
            "events_failed",
            "Kubernetes Events about invalid objects that could not be published",
            self.events_failed.clone(),
        );
    }

    /// Failed list and watch requests for a kind so far.
    pub fn watch_errors(&self, kind: Kind) -> u64 {
        self.watch_errors.get_or_create(&kind_label(kind)).get()
    }

    /// Re-lists of a kind for a reason so far.
    pub fn relists(&self, kind: Kind, reason: RelistReason) -> u64 {
        self.relists
            .get_or_create(&RelistLabels {
                kind: kind.as_str(),
                reason: reason.as_str(),
            })
            .get()
    }

    /// The current state of a kind's watch.
    pub fn state(&self, kind: Kind) -> WatchState {
        WatchState::ALL
            .into_iter()
            .find(|s| {
                self.watch_state
                    .get_or_create(&StateLabels {
                        kind: kind.as_str(),
                        state: s.as_str(),
                    })
                    .get()
                    == 1
            })
            .unwrap_or(WatchState::Listing)
    }

    /// Unix time of the last list, event or bookmark of a kind, or of the last discovery that
    /// found it not served (0 before the first).
    pub fn last_event_seconds(&self, kind: Kind) -> f64 {
        self.last_event.get_or_create(&kind_label(kind)).get()
    }

    /// Invalid objects of a kind reported so far (each object and problem once).
    pub fn invalid_objects(&self, kind: Kind) -> u64 {
        self.invalid_objects.get_or_create(&kind_label(kind)).get()
    }

    /// Events that could not be published (rejected by the API or dropped because too many waited).
    pub fn events_failed(&self) -> u64 {
        self.events_failed.get()
    }

    pub(super) fn count_error(&self, kind: Kind) {
        self.watch_errors.get_or_create(&kind_label(kind)).inc();
    }

    pub(super) fn count_relist(&self, kind: Kind, reason: RelistReason) {
        self.relists
            .get_or_create(&RelistLabels {
                kind: kind.as_str(),
                reason: reason.as_str(),
            })
            .inc();
    }

    pub(super) fn count_invalid(&self, kind: Kind) {
        self.invalid_objects.get_or_create(&kind_label(kind)).inc();
    }

    pub(super) fn count_event_failed(&self) {
        self.events_failed.inc();
    }

    pub(super) fn set_state(&self, kind: Kind, state: WatchState) {
        for s in WatchState::ALL {
            self.watch_state
                .get_or_create(&StateLabels {
                    kind: kind.as_str(),
                    state: s.as_str(),
                })
                .set(i64::from(s == state));
        }
    }

    /// Records that a kind just received a list, an event or a bookmark (or was found not
    /// served).
    pub(super) fn touch(&self, kind: Kind) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_event.get_or_create(&kind_label(kind)).set(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(metrics: &SourceMetrics) -> String {
        let mut registry = Registry::with_prefix("nftpolicy");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text
    }

    #[test]
    fn every_series_exists_from_zero() {
        let metrics = SourceMetrics::new();
        metrics.count_error(Kind::Pod);
        let text = encode(&metrics);
        for line in [
            "nftpolicy_kube_watch_errors_total{kind=\"Pod\"} 1",
            "nftpolicy_kube_watch_errors_total{kind=\"Namespace\"} 0",
            "nftpolicy_kube_invalid_objects_total{kind=\"NetworkPolicy\"} 0",
            "nftpolicy_kube_relists_total{kind=\"Pod\",reason=\"expired\"} 0",
            "nftpolicy_kube_relists_total{kind=\"Namespace\",reason=\"resource_version_backwards\"} 0",
            "nftpolicy_kube_watch_state{kind=\"Pod\",state=\"listing\"} 1",
            "nftpolicy_kube_watch_state{kind=\"Pod\",state=\"failing\"} 0",
            "nftpolicy_kube_last_event_timestamp_seconds{kind=\"NetworkPolicy\"} 0.0",
            "nftpolicy_kube_watch_errors_total{kind=\"ClusterNetworkPolicy\"} 0",
            "nftpolicy_kube_watch_state{kind=\"Node\",state=\"absent\"} 0",
            "nftpolicy_kube_events_failed_total 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert_eq!(metrics.watch_errors(Kind::Pod), 1);
    }

    #[test]
    fn exactly_one_state_is_set() {
        let metrics = SourceMetrics::new();
        metrics.set_state(Kind::Pod, WatchState::Failing);
        assert_eq!(metrics.state(Kind::Pod), WatchState::Failing);
        metrics.set_state(Kind::Pod, WatchState::Watching);
        assert_eq!(metrics.state(Kind::Pod), WatchState::Watching);
        let text = encode(&metrics);
        assert!(text.contains("nftpolicy_kube_watch_state{kind=\"Pod\",state=\"watching\"} 1"));
        assert!(text.contains("nftpolicy_kube_watch_state{kind=\"Pod\",state=\"failing\"} 0"));
        assert!(text.contains("nftpolicy_kube_watch_state{kind=\"Pod\",state=\"listing\"} 0"));
        metrics.set_state(Kind::ClusterNetworkPolicy, WatchState::Absent);
        assert_eq!(
            metrics.state(Kind::ClusterNetworkPolicy),
            WatchState::Absent
        );
        let text = encode(&metrics);
        for (state, value) in [
            ("absent", 1),
            ("listing", 0),
            ("watching", 0),
            ("failing", 0),
        ] {
            let line = format!(
                "nftpolicy_kube_watch_state{{kind=\"ClusterNetworkPolicy\",state=\"{state}\"}} {value}"
            );
            assert!(text.contains(&line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn touch_records_the_time() {
        let metrics = SourceMetrics::new();
        metrics.touch(Kind::Namespace);
        assert!(metrics.last_event_seconds(Kind::Namespace) > 1.0e9);
        assert_eq!(metrics.last_event_seconds(Kind::Pod), 0.0);
    }
}
