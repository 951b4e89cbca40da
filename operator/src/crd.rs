//! The `EventPipeline` custom resource. Its spec embeds the transformer's data-path types, so the
//! same Rust types define the CRD schema, the local runner's manifest and the Job's task.

use eventpipe_transformer::spec::PipelineSpec;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::pod_settings::PodSettings;

/// An EventPipeline turns every date partition of CSV files under `spec.source.url` into Parquet
/// under `spec.sink.url`, one Kubernetes Job per partition, exactly once per input version.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[allow(clippy::duplicated_attributes, reason = "each printcolumn names its own type_ and priority")]
#[kube(
    group = "eventpipe.dev",
    version = "v1alpha1",
    kind = "EventPipeline",
    plural = "eventpipelines",
    shortname = "evp",
    namespaced,
    doc = "An EventPipeline turns date partitions of CSV files in S3 into query-ready Parquet.",
    status = "EventPipelineStatus",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Last Done", type_ = "string", json_path = ".status.lastCompletedPartition"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pendingPartitions"),
    printcolumn(name = "Running", type_ = "integer", json_path = ".status.runningJobs"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failedPartitions"),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend", priority = "1"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.mode", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.source.schema) || self.source.schema.all(c, c.type == 'timestamp' || (!has(c.unit) && !has(c.format)))"
).message("unit and format apply to timestamp columns only"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.source.schema) || self.source.schema.all(c, !(has(c.unit) && has(c.format)))"
).message("a timestamp column takes either unit or format, not both"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.schedule) || !has(self.schedule.startDate) || timestamp(self.schedule.startDate + 'T00:00:00Z') >= timestamp('1970-01-01T00:00:00Z')"
).message("schedule.startDate must be a real day, YYYY-MM-DD, from 1970 on"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.source.eventTime) || int(self.source.eventTime.lateness.substring(0, size(self.source.eventTime.lateness) - 1)) * (self.source.eventTime.lateness.endsWith('d') ? 1440 : (self.source.eventTime.lateness.endsWith('h') ? 60 : 1)) <= 10080"
).message("source.eventTime.lateness must be at most 7d (168h, 10080m)"))]
#[serde(rename_all = "camelCase")]
pub struct EventPipelineSpec {
    /// The data path: source, transform, sink, bad-record policy and S3 settings.
    #[serde(flatten)]
    pub pipeline: PipelineSpec,
    /// When to look for partitions and which ones.
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// How the transformer Jobs run.
    #[serde(default)]
    pub execution: ExecutionSpec,
    /// Stop launching Jobs; Jobs already running finish and their results are recorded.
    #[serde(default)]
    pub suspend: bool,
}

/// When to look for partitions and which ones.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// Seconds between two listings of the source (with S3 event notifications,
    /// `source.notifications.listIntervalSeconds` instead).
    #[serde(default = "default_poll_interval_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub poll_interval_seconds: u32,
    /// How many days (UTC, today included) to look back for partitions. Ignored when `startDate`
    /// is set.
    #[serde(default = "default_lookback_days")]
    #[schemars(range(min = 1, max = 366))]
    pub lookback_days: u32,
    /// The first day to process, `YYYY-MM-DD` (UTC): every partition from that day until today is
    /// processed, for backfills, however long the window. Days that ended more than a day ago and
    /// whose partitions are all committed are listed again only every `closedRelistSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub start_date: Option<String>,
    /// Seconds a partition's newest object must have been in place before the partition is
    /// processed, so that files uploaded together are processed together. Objects arriving later
    /// change the partition's fingerprint and it is processed again.
    #[serde(default = "default_grace_period_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub grace_period_seconds: u32,
    /// The IANA time zone the layout's dates and hours are in, e.g. `Europe/Berlin`; UTC when
    /// absent. A partition is open until its day (or hour) has ended there, plus
    /// `gracePeriodSeconds`, and closed after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub timezone: Option<String>,
    /// For transforms that need the whole partition (aggregations): while a partition is open,
    /// recompute it at most this often. Absent: such a partition is processed once, when it
    /// closes. Row-by-row transforms convert new objects as they settle, whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60, max = 86400))]
    pub open_refresh_seconds: Option<u32>,
    /// Seconds between two listings of the days that ended more than a day ago and whose
    /// partitions are all committed: a late file there is found within this time. The other days
    /// (today, yesterday, and any with work left) are listed every poll.
    #[serde(default = "default_closed_relist_seconds")]
    #[schemars(range(min = 1, max = 604800))]
    pub closed_relist_seconds: u32,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        Self {
            poll_interval_seconds: default_poll_interval_seconds(),
            lookback_days: default_lookback_days(),
            start_date: None,
            grace_period_seconds: default_grace_period_seconds(),
            timezone: None,
            open_refresh_seconds: None,
            closed_relist_seconds: default_closed_relist_seconds(),
        }
    }
}

fn default_poll_interval_seconds() -> u32 {
    60
}

fn default_lookback_days() -> u32 {
    7
}

fn default_grace_period_seconds() -> u32 {
    120
}

fn default_closed_relist_seconds() -> u32 {
    3600
}

/// How the transformer Jobs run.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSpec {
    /// The transformer image; defaults to the one the operator was installed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Placement, image pulls and size of the Jobs' pods; each setting left out comes from the
    /// operator's installation (chart value `jobDefaults`).
    #[serde(flatten)]
    pub pod: PodSettings,
    /// Pod restarts within one Job (the Job's `backoffLimit`); the operator's own retries start a
    /// new Job instead.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,
    /// Seconds the transformer may run, from its pod's start; a run that takes longer stops with
    /// an error and counts as a failed attempt. The Job's own `activeDeadlineSeconds` is this
    /// plus `startTimeoutSeconds`, so that a slow start never cuts a run short.
    #[serde(default = "default_active_deadline_seconds")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: i64,
    /// Seconds a Job's pod may take to start (be scheduled, pull its image, start its
    /// container): past it the attempt fails with the pod's waiting reason (`ErrImagePull`,
    /// `Unschedulable`, …) and the Job is deleted. A reason beyond an ordinary start shows in the
    /// partition's message and a `PodNotStarting` Event within a poll.
    #[serde(default = "default_start_timeout_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub start_timeout_seconds: u32,
    /// Disruptions (evictions, drains, preemptions) of an attempt's pods that are still there
    /// (a node-pressure eviction leaves its pod behind) before the attempt fails. A disruption
    /// does not use up an attempt, and the Job starts a new pod; this bound keeps a pod whose own
    /// memory use gets it evicted from running again and again until the deadline.
    #[serde(default = "default_max_disruptions")]
    #[schemars(range(min = 1, max = 100))]
    pub max_disruptions: u32,
    /// Seconds a finished Job is kept before Kubernetes deletes it; at least 60, so that the
    /// operator reads the pod's report. A result whose Job is gone is read from the partition's
    /// committed manifest.
    #[serde(default = "default_ttl_seconds_after_finished")]
    #[schemars(range(min = 60))]
    pub ttl_seconds_after_finished: i32,
    /// Jobs of this pipeline running at once; the oldest partitions go first.
    #[serde(default = "default_max_concurrent_jobs")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent_jobs: u32,
    /// Attempts per partition and input version, each a new Job, before the partition is marked
    /// failed.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: u32,
    /// Seconds between the first failed attempt and the next; doubles with every attempt, up to
    /// an hour.
    #[serde(default = "default_retry_backoff_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub retry_backoff_seconds: u32,
}

impl Default for ExecutionSpec {
    fn default() -> Self {
        Self {
            image: None,
            pod: PodSettings::default(),
            backoff_limit: 0,
            active_deadline_seconds: default_active_deadline_seconds(),
            start_timeout_seconds: default_start_timeout_seconds(),
            max_disruptions: default_max_disruptions(),
            ttl_seconds_after_finished: default_ttl_seconds_after_finished(),
            max_concurrent_jobs: default_max_concurrent_jobs(),
            max_attempts: default_max_attempts(),
            retry_backoff_seconds: default_retry_backoff_seconds(),
        }
    }
}

fn default_active_deadline_seconds() -> i64 {
    3600
}

fn default_start_timeout_seconds() -> u32 {
    300
}

fn default_max_disruptions() -> u32 {
    3
}

fn default_ttl_seconds_after_finished() -> i32 {
    86400
}

fn default_max_concurrent_jobs() -> u32 {
    2
}

fn default_max_attempts() -> u32 {
    3
}

fn default_retry_backoff_seconds() -> u32 {
    30
}

/// What the operator observed and did.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventPipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The newest partition whose output is committed, `year=YYYY/month=MM/day=DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed_partition: Option<String>,
    /// Partitions found but not processed yet: waiting, running or retrying.
    #[serde(default)]
    pub pending_partitions: u32,
    /// Jobs running now.
    #[serde(default)]
    pub running_jobs: u32,
    /// Partitions that failed every attempt; they are tried again when their inputs or the spec
    /// change.
    #[serde(default)]
    pub failed_partitions: u32,
    /// Every partition in the schedule's window, by state, however many there are.
    #[serde(default)]
    pub partition_counts: PartitionCounts,
    /// The oldest partition in the window whose output is not committed for its current inputs
    /// and spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_unprocessed_partition: Option<String>,
    /// The partitions in the schedule's window, oldest first; at most 400 of them when the window
    /// holds more: every one running, retrying or failed, then the oldest still to process, then
    /// the newest processed. `partitionCounts` counts them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["partition"]))]
    pub partitions: Vec<PartitionStatus>,
    /// How partitions are processed: `Append` (new objects are converted as they settle and
    /// added to the partition's output) or `Full` (the whole partition, once it closes unless
    /// `schedule.openRefreshSeconds` says otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ProcessingMode>,
    /// Why the transform is processed in this mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_reason: Option<String>,
    /// The value of the `eventpipe.dev/retry` annotation last acted on; a new value gives failed
    /// partitions new attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retry_request: Option<String>,
    /// The value of the `eventpipe.dev/reprocess` annotation last acted on; a new value names a
    /// partition to process again even though its output is committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reprocess_request: Option<String>,
    /// The latest vacuum of a Delta sink's table (`sink.format: delta`), run by a Job at most
    /// daily: it deletes the files no version within `sink.delta.retentionHours` lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vacuum: Option<VacuumStatus>,
}

/// A vacuum of a Delta sink's table.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VacuumStatus {
    /// Its Job.
    pub job: String,
    /// When it was launched.
    pub started_at: Time,
    /// `Running`, `Succeeded` or `Failed`.
    pub state: VacuumState,
    /// Data files it deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_deleted: Option<u64>,
    /// Log files it deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_files_deleted: Option<u64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl VacuumStatus {
    /// A vacuum whose Job `job` was launched at `at`.
    pub fn started(job: String, at: k8s_openapi::jiff::Timestamp) -> Self {
        Self { job, started_at: Time(at), state: VacuumState::Running, files_deleted: None, log_files_deleted: None, message: None }
    }
}

/// Where a vacuum is.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[schemars(transform = any_string)]
pub enum VacuumState {
    /// Its Job runs.
    #[default]
    Running,
    /// It finished; the next one is due a day after it started.
    Succeeded,
    /// It failed; the next one is due an hour after it started.
    Failed,
    /// A state written by another version of the operator; this one takes the vacuum for failed.
    #[serde(other)]
    Unknown,
}

/// The partitions of the window by state.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionCounts {
    /// Waiting for their newest object to settle.
    #[serde(default)]
    pub settling: u32,
    /// Open, waiting for their period to close.
    #[serde(default)]
    pub open: u32,
    /// Ready to run, waiting for a Job slot.
    #[serde(default)]
    pub pending: u32,
    /// Processed by a Job now.
    #[serde(default)]
    pub running: u32,
    /// Waiting to try again after a failed attempt.
    #[serde(default)]
    pub retrying: u32,
    /// Committed for their current inputs and spec.
    #[serde(default)]
    pub succeeded: u32,
    /// Failed every attempt.
    #[serde(default)]
    pub failed: u32,
}

/// One partition: its inputs' version, its state and the result of its latest Job.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionStatus {
    /// The partition, `year=YYYY/month=MM/day=DD[/hour=HH]`.
    pub partition: String,
    /// Fingerprint of the input objects (paths, sizes and ETags) this state is about; once
    /// succeeded, the one the transformer committed.
    pub fingerprint: String,
    /// Hash of the data-path spec (source, transform, sink, badRecords) this state is about.
    #[serde(default)]
    pub spec_hash: String,
    /// Where the partition is in its lifecycle: `Settling`, `Open`, `Pending`, `Running`,
    /// `Retrying`, `Succeeded` or `Failed`.
    pub state: PartitionState,
    /// `Open` until its day (or hour) has ended in the schedule's time zone, plus the grace
    /// period; `Closed` after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    /// Jobs launched for this input version.
    #[serde(default)]
    pub attempts: u32,
    /// The number of the latest Job launched for this partition, counting every launch whatever
    /// its inputs or spec; the Job carries it in its label `eventpipe.dev/launch`. The operator
    /// follows only the Job of this launch, or one of a later launch for the same inputs and spec
    /// (created just before a restart); an older Job never decides the partition's state.
    #[serde(default)]
    pub launch: u32,
    /// Failed attempts since the inputs or the spec last changed; at `execution.maxAttempts` the
    /// partition is marked failed.
    #[serde(default)]
    pub failures: u32,
    /// The latest Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// When the next attempt may start (state `Retrying`), the grace period ends (`Settling`) or
    /// the partition closes (`Open`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,
    /// In append mode: the latest Job takes the objects last modified up to this time, those
    /// older than the grace period when it was launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_before: Option<Time>,
    /// When output was last committed for this partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<Time>,
    /// Runs the committed output is made of: 1 for a whole partition, one more per increment
    /// added in append mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increments: Option<u32>,
    /// Input rows read by the successful Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_read: Option<u64>,
    /// Input rows rejected: bad ones, and with event time those late, early or without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_rejected: Option<u64>,
    /// With event time: input rows read that belong to another partition, which keeps them
    /// (or, when they are late, the partition of their directory rejects them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_routed: Option<u64>,
    /// Output rows written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_written: Option<u64>,
    /// Output bytes written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_written: Option<u64>,
    /// Seconds the transformer ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Why the partition is in this state, e.g. the error of the last failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How a pipeline's partitions are processed.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[schemars(transform = any_string)]
pub enum ProcessingMode {
    /// The transform keeps rows one by one: new objects are converted on their own and added.
    Append,
    /// The transform needs the whole partition.
    Full,
    /// A value written by another version of the operator; never written by this one.
    #[serde(other)]
    Unknown,
}

/// Whether a partition's period has ended.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[schemars(transform = any_string)]
pub enum Period {
    /// Its day (or hour) has not ended, or ended less than the grace period ago.
    Open,
    /// Objects arriving now are late data.
    Closed,
    /// A value written by another version of the operator; never written by this one.
    #[serde(other)]
    Unknown,
}

/// Where a partition is in its lifecycle.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[schemars(transform = any_string)]
pub enum PartitionState {
    /// Found; its newest object is younger than the grace period.
    Settling,
    /// Open, and its transform needs the whole partition: it is processed when it closes
    /// (`notBefore`), or refreshed every `schedule.openRefreshSeconds`.
    Open,
    /// Ready to run, waiting for a free Job slot (or for `suspend` to be lifted).
    #[default]
    Pending,
    /// A Job is processing it.
    Running,
    /// The last attempt failed; another starts after `notBefore`.
    Retrying,
    /// Its output is committed for this fingerprint.
    Succeeded,
    /// Every attempt failed; see `message`.
    Failed,
    /// A state written by another version of the operator; this one checks the partition again
    /// and never writes it.
    #[serde(other)]
    Unknown,
}

/// The schema of a status enum: any string, so that a status written by another version of the
/// operator, which may know more values, is accepted by the API server and read by this version
/// (as `Unknown`) instead of stopping its watch. The field's description lists the values.
fn any_string(schema: &mut schemars::Schema) {
    for keyword in ["enum", "oneOf", "anyOf"] {
        schema.remove(keyword);
    }
    schema.insert("type".into(), "string".into());
}

/// The CustomResourceDefinition as YAML, as `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&EventPipeline::crd())
}

impl EventPipelineSpec {
    /// The data path as runs read it: event-time partitions are days (or hours) of the
    /// schedule's time zone.
    pub fn data_path(&self) -> PipelineSpec {
        let mut pipeline = self.pipeline.clone();
        if let Some(event_time) = &mut pipeline.source.event_time {
            event_time.time_zone.clone_from(&self.schedule.timezone);
        }
        pipeline
    }

    /// How long after a partition's end its rows may still arrive: event time's lateness, zero
    /// for partitions by directory.
    pub fn lateness(&self) -> chrono::Duration {
        self.pipeline.source.event_time.as_ref().and_then(|event_time| event_time.lateness()).unwrap_or_default()
    }

    /// The time between two listings of the source's window: `schedule.pollIntervalSeconds`, or
    /// with S3 event notifications their `listIntervalSeconds`.
    pub fn listing_interval(&self) -> std::time::Duration {
        let seconds = match &self.pipeline.source.notifications {
            Some(notifications) => notifications.list_interval_seconds,
            None => self.schedule.poll_interval_seconds,
        };
        std::time::Duration::from_secs(seconds.into())
    }

    /// Refuses a Delta sink whose retention is not longer than a Job may run: the vacuum would
    /// delete the files of a run that has not committed yet.
    pub fn check_delta_retention(&self) -> Result<(), String> {
        let retention_hours = self.pipeline.sink.delta.retention_hours;
        let longest_run = self.execution.active_deadline_seconds.saturating_add(self.execution.start_timeout_seconds.into());
        if self.pipeline.sink.format == eventpipe_transformer::spec::SinkFormat::Delta && i64::from(retention_hours) * 3600 <= longest_run {
            return Err(format!(
                "sink.delta.retentionHours ({retention_hours}) must be longer than a Job may run \
                 (execution.activeDeadlineSeconds + startTimeoutSeconds = {longest_run} s): the vacuum would delete the files of runs not committed yet"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_directory_is_generated_from_these_types() {
        let committed = include_str!("../../crds/eventpipe.dev_eventpipelines.yaml");
        assert!(
            committed == crd_yaml().unwrap(),
            "crds/eventpipe.dev_eventpipelines.yaml is stale: run `cargo run --bin eventpipe -- crd > crds/eventpipe.dev_eventpipelines.yaml`"
        );
    }

    fn spec_schema() -> serde_json::Value {
        let crd = serde_json::to_value(<EventPipeline as kube::CustomResourceExt>::crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    }

    /// Calls `visit` with the path and schema of `schema` and of every field below it.
    fn walk(path: &str, schema: &serde_json::Value, visit: &mut impl FnMut(&str, &serde_json::Value)) {
        visit(path, schema);
        for (name, child) in schema["properties"].as_object().into_iter().flatten() {
            walk(&format!("{path}.{name}"), child, visit);
        }
        if let Some(items) = schema.get("items") {
            for (name, child) in items["properties"].as_object().into_iter().flatten() {
                walk(&format!("{path}[].{name}"), child, visit);
            }
        }
    }

    #[test]
    fn every_spec_field_is_documented() {
        let mut undocumented = Vec::new();
        walk("spec", &spec_schema(), &mut |path, schema| {
            if schema.get("description").is_none() {
                undocumented.push(path.to_string());
            }
        });
        assert!(undocumented.is_empty(), "fields without a description: {undocumented:?}");
    }

    /// The API server knows no unsigned formats: a field without a maximum admits a number the
    /// operator cannot read, which stops the pipeline instead of being refused at admission.
    #[test]
    fn every_unsigned_spec_field_has_a_maximum_the_operator_reads() {
        let limits = [("uint8", f64::from(u8::MAX)), ("uint16", f64::from(u16::MAX)), ("uint32", f64::from(u32::MAX))];
        let mut unbounded = Vec::new();
        walk("spec", &spec_schema(), &mut |path, schema| {
            if let Some((_, limit)) = limits.iter().find(|(format, _)| schema["format"] == *format)
                && !schema["maximum"].as_f64().is_some_and(|maximum| maximum <= *limit)
            {
                unbounded.push(path.to_string());
            }
        });
        assert!(unbounded.is_empty(), "unsigned fields without a maximum they fit: {unbounded:?}");
    }

    #[test]
    fn a_delta_retention_shorter_than_a_run_is_refused() {
        let mut spec = EventPipelineSpec::default();
        spec.pipeline.sink.format = eventpipe_transformer::spec::SinkFormat::Delta;
        assert_eq!(spec.check_delta_retention(), Ok(()), "the defaults fit");
        spec.pipeline.sink.delta.retention_hours = 1;
        spec.execution.active_deadline_seconds = 3600;
        let refusal = spec.check_delta_retention().unwrap_err();
        assert!(refusal.starts_with("sink.delta.retentionHours (1) must be longer than a Job may run"), "{refusal}");
        spec.pipeline.sink.format = eventpipe_transformer::spec::SinkFormat::Parquet;
        assert_eq!(spec.check_delta_retention(), Ok(()), "a Parquet sink has no vacuum");
    }
}
