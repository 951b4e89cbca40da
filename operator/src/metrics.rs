//! The operator's Prometheus metrics, served on `/metrics`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a reconcile ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReconcileResult {
    /// The pipeline was planned and acted on.
    Ok,
    /// The spec is invalid or the source unreachable; reported on the conditions.
    Degraded,
    /// A Kubernetes API call failed; retried with backoff.
    Error,
    /// The pipeline's spec could not be decoded by this version; reported on its conditions.
    Unreadable,
}

/// Labels of the per-reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// How the reconcile ended.
    pub result: ReconcileResult,
}

/// Labels naming a pipeline.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    /// The pipeline's namespace.
    pub namespace: String,
    /// The pipeline's name.
    pub pipeline: String,
}

/// Which rows a row counter counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RowKind {
    /// Input rows read.
    Read,
    /// Input rows left out as bad, or rejected for their event time.
    Rejected,
    /// With event time: input rows read that another partition keeps (or rejects); each row is
    /// read by up to three days, so `Read` counts it up to three times and `Routed` the others.
    Routed,
    /// Output rows written.
    Written,
}

impl RowKind {
    /// Every kind.
    pub const ALL: [RowKind; 4] = [RowKind::Read, RowKind::Rejected, RowKind::Routed, RowKind::Written];

    /// How many rows of this kind a run handled.
    pub fn of(&self, run: &eventpipe_transformer::task::RunRows) -> u64 {
        match self {
            RowKind::Read => run.read,
            RowKind::Rejected => run.rejected,
            RowKind::Routed => run.routed,
            RowKind::Written => run.written,
        }
    }
}

/// Labels of the row counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RowLabels {
    /// The pipeline's namespace.
    pub namespace: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// Which rows.
    pub kind: RowKind,
}

/// What became of a notification message.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum NotificationOutcome {
    /// It named an object of the source's partitions: the partition is listed at once.
    Partition,
    /// It named nothing of the source (another bucket or prefix, a test event, another kind of
    /// event); deleted at once.
    Ignored,
    /// It was no notification this reads; deleted, and logged.
    Unreadable,
}

/// Labels of the notification counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// The pipeline's namespace.
    pub namespace: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// What became of the message.
    pub outcome: NotificationOutcome,
}

/// Every metric the operator exports.
pub struct Metrics {
    /// Reconciles, by result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Reconcile durations.
    pub reconcile_seconds: Histogram,
    /// Jobs created.
    pub jobs_launched: Family<PipelineLabels, Counter>,
    /// Partitions committed.
    pub partitions_processed: Family<PipelineLabels, Counter>,
    /// Failed attempts.
    pub attempts_failed: Family<PipelineLabels, Counter>,
    /// Partitions given up on.
    pub partitions_failed: Family<PipelineLabels, Counter>,
    /// Rows transformer runs read, rejected and wrote, each row counted by the run that handled it.
    pub rows: Family<RowLabels, Counter>,
    /// Age in seconds of the oldest object whose rows are not committed yet; 0 when all are.
    pub lag_seconds: Family<PipelineLabels, Gauge>,
    /// Source prefixes listed in S3.
    pub source_listings: Family<PipelineLabels, Counter>,
    /// Notification messages received from SQS, by outcome.
    pub notifications: Family<NotificationLabels, Counter>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("eventpipe");
        let metrics = Self {
            reconciles: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            jobs_launched: Family::default(),
            partitions_processed: Family::default(),
            attempts_failed: Family::default(),
            partitions_failed: Family::default(),
            rows: Family::default(),
            lag_seconds: Family::default(),
            source_listings: Family::default(),
            notifications: Family::default(),
            registry: Registry::default(),
        };
        registry.register("reconciles", "Reconciles of EventPipelines, by result", metrics.reconciles.clone());
        registry.register("reconcile_duration_seconds", "Time one reconcile took", metrics.reconcile_seconds.clone());
        registry.register("jobs_launched", "Transformer Jobs created", metrics.jobs_launched.clone());
        registry.register("partitions_processed", "Partitions whose output was committed", metrics.partitions_processed.clone());
        registry.register("attempts_failed", "Transformer Jobs that failed", metrics.attempts_failed.clone());
        registry.register("partitions_failed", "Partitions that failed every attempt", metrics.partitions_failed.clone());
        registry.register("rows", "Rows transformer runs read, rejected and wrote, by kind; an increment counts only its own rows", metrics.rows.clone());
        registry.register(
            "partition_lag_seconds",
            "Age in seconds of the oldest object whose rows are not committed yet (0 when all are)",
            metrics.lag_seconds.clone(),
        );
        registry.register(
            "source_listings",
            "Source prefixes listed in S3 (one LIST request per 1,000 objects); at most once per poll interval",
            metrics.source_listings.clone(),
        );
        registry.register(
            "notifications",
            "Messages read from pipelines' SQS queues of S3 event notifications, by what became of them",
            metrics.notifications.clone(),
        );
        Self { registry, ..metrics }
    }
}

impl Metrics {
    /// Removes every series of a pipeline that no longer exists.
    pub fn forget(&self, labels: &PipelineLabels) {
        for family in [&self.jobs_launched, &self.partitions_processed, &self.attempts_failed, &self.partitions_failed, &self.source_listings] {
            family.remove(labels);
        }
        self.lag_seconds.remove(labels);
        for kind in RowKind::ALL {
            self.rows.remove(&RowLabels { namespace: labels.namespace.clone(), pipeline: labels.pipeline.clone(), kind });
        }
        for outcome in [NotificationOutcome::Partition, NotificationOutcome::Ignored, NotificationOutcome::Unreadable] {
            self.notifications.remove(&NotificationLabels { namespace: labels.namespace.clone(), pipeline: labels.pipeline.clone(), outcome });
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_text_format() {
        let metrics = Metrics::default();
        metrics.reconciles.get_or_create(&ResultLabels { result: ReconcileResult::Ok }).inc();
        let labels = RowLabels { namespace: "data".into(), pipeline: "settings".into(), kind: RowKind::Written };
        metrics.rows.get_or_create(&labels).inc_by(42);
        let text = metrics.encode();
        assert!(text.contains("eventpipe_reconciles_total{result=\"Ok\"} 1"), "{text}");
        assert!(text.contains("eventpipe_rows_total{namespace=\"data\",pipeline=\"settings\",kind=\"Written\"} 42"), "{text}");
        metrics.forget(&PipelineLabels { namespace: "data".into(), pipeline: "settings".into() });
        assert!(!metrics.encode().contains("pipeline=\"settings\""), "a deleted pipeline's series are gone");
    }
}
