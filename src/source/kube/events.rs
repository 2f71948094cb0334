//! Warning Events about invalid objects, written with the `events.k8s.io/v1` API.
//!
//! A problem is one Event: the first report of a problem on an object (same object, reason and
//! note) creates it, and each later report of the same problem (the object seen again in a list, or
//! a new version of it with the same problem) patches its `series` (count and last observed time),
//! as `kubectl describe` shows it ("x4 over 10m"). A different problem on the same object is an
//! Event of its own, so its note names its own field. kube's `Recorder` keys series on the object
//! reference including its resourceVersion and not on the note, which would create an Event per
//! object version and hide a new problem in the series of an old one; hence this small recorder.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as ApiEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::metrics::SourceMetrics;
use crate::source::Kind;

/// A series is patched while its last report is younger than this; after that (or when the API no
/// longer has the Event) a new Event is created.
const SERIES_TTL: Duration = Duration::from_secs(30 * 60);

/// The most series remembered; the oldest is forgotten beyond that.
const SERIES_LIMIT: usize = 10_000;

/// An invalid object to record an Event on.
#[derive(Debug)]
pub(super) struct InvalidReport {
    /// The object.
    pub(super) reference: ObjectReference,
    /// Its kind (the Event's reason is `Invalid<Kind>`).
    pub(super) kind: Kind,
    /// What is wrong.
    pub(super) note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    namespace: String,
    kind: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    reason: String,
    note: String,
}

#[derive(Debug)]
struct Series {
    /// The Event's name.
    name: String,
    count: i32,
    last: Instant,
}

/// How an Event was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Created,
    Patched(i32),
}

/// Writes Events and remembers their series.
struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    series: HashMap<SeriesKey, Series>,
}

impl Recorder {
    fn key(report: &InvalidReport, reason: &str) -> SeriesKey {
        SeriesKey {
            namespace: event_namespace(&report.reference),
            kind: report.reference.kind.clone(),
            name: report.reference.name.clone(),
            uid: report.reference.uid.clone(),
            reason: reason.to_string(),
            note: report.note.clone(),
        }
    }

    fn forget_old(&mut self, now: Instant) {
        self.series
            .retain(|_, s| now.saturating_duration_since(s.last) < SERIES_TTL);
        while self.series.len() >= SERIES_LIMIT {
            let Some(oldest) = self
                .series
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.series.remove(&oldest);
        }
    }

    async fn publish(&mut self, report: &InvalidReport) -> Result<Written, kube::Error> {
        let now = Instant::now();
        self.forget_old(now);
        let reason = format!("Invalid{}", report.kind.as_str());
        let key = Self::key(report, &reason);
        let api: Api<ApiEvent> = Api::namespaced(self.client.clone(), &key.namespace);
        if let Some(series) = self.series.get_mut(&key) {
            let count = series.count + 1;
            let patch = json!({"series": {
                "count": count,
                "lastObservedTime": MicroTime(Timestamp::now()),
            }});
            match api
                .patch(&series.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    series.count = count;
                    series.last = now;
                    return Ok(Written::Patched(count));
                }
                // Expired in the API meanwhile: start a new Event.
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    self.series.remove(&key);
                }
                Err(e) => return Err(e),
            }
        }
        let stamp = Timestamp::now();
        let event = ApiEvent {
            action: Some("Validate".to_string()),
            reason: Some(reason),
            note: Some(report.note.clone()),
            type_: Some("Warning".to_string()),
            event_time: Some(MicroTime(stamp)),
            regarding: Some(report.reference.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            metadata: ObjectMeta {
                namespace: Some(key.namespace.clone()),
                name: Some(format!(
                    "{}.{:x}",
                    report.reference.name.as_deref().unwrap_or("nftpolicy"),
                    stamp.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            ..ApiEvent::default()
        };
        let created = api.create(&PostParams::default(), &event).await?;
        let name = created
            .metadata
            .name
            .or(event.metadata.name)
            .unwrap_or_default();
        self.series.insert(
            key,
            Series {
                name,
                count: 1,
                last: now,
            },
        );
        Ok(Written::Created)
    }
}

/// Where an Event about an object goes: the object's namespace, or `default` for cluster-scoped
/// objects (as kubectl and client-go do).
fn event_namespace(reference: &ObjectReference) -> String {
    reference
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

fn reference_name(reference: &ObjectReference) -> String {
    let name = reference.name.as_deref().unwrap_or_default();
    match reference.namespace.as_deref() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Publishes Events about invalid objects, one at a time, until every sender is gone. Failures are
/// logged and counted, never fatal.
pub(super) async fn publish_events(
    client: Client,
    controller: String,
    instance: String,
    mut reports: mpsc::Receiver<InvalidReport>,
    metrics: SourceMetrics,
) {
    let mut recorder = Recorder {
        client,
        controller,
        instance,
        series: HashMap::new(),
    };
    while let Some(report) = reports.recv().await {
        let object = reference_name(&report.reference);
        match recorder.publish(&report).await {
            Ok(Written::Created) => {
                debug!(kind = report.kind.as_str(), %object, "event recorded")
            }
            Ok(Written::Patched(count)) => {
                debug!(kind = report.kind.as_str(), %object, count, "event series updated")
            }
            Err(error) => {
                metrics.count_event_failed();
                let hint = match &error {
                    kube::Error::Api(status) if status.is_forbidden() => {
                        "; the ClusterRole must grant create and patch on events.k8s.io events"
                    }
                    _ => "",
                };
                warn!(
                    kind = report.kind.as_str(),
                    %object,
                    %error,
                    "cannot record an Event about an invalid object{hint}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_scoped_objects_get_their_events_in_default() {
        let mut r = ObjectReference {
            name: Some("x".into()),
            ..ObjectReference::default()
        };
        assert_eq!(event_namespace(&r), "default");
        assert_eq!(reference_name(&r), "x");
        r.namespace = Some("ns".into());
        assert_eq!(event_namespace(&r), "ns");
        assert_eq!(reference_name(&r), "ns/x");
    }
}
