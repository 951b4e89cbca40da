//! The planner's table tests, one scenario per decision, in a file per step of the plan; the
//! scenarios' fixtures are here.

mod compaction;
mod follow;
mod launch;
mod model;
mod outdated;
mod readiness;
mod summary;
mod unavailable;
mod vacuum;

use eventpipe_transformer::query::mode::Mode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

use super::follow::retry_backoff;
use super::naming::{job_name, version};
use super::*;
use crate::crd::{EventPipelineSpec, ExecutionSpec, ProcessingMode, ScheduleSpec};

/// The Job of a launch as it is once created, running.
fn created(launch: &Launch) -> ObservedJob {
    ObservedJob {
        name: launch.job.clone(),
        partition: launch.partition.to_string(),
        fingerprint: launch.fingerprint.clone(),
        spec_hash: launch.spec_hash.clone(),
        attempt: launch.attempt,
        launch: launch.launch,
        outcome: JobOutcome::Running,
        stopping: false,
        waiting: None,
        disruptions: Vec::new(),
    }
}

/// The observation of a reconcile that has read no manifest.
static NO_MANIFESTS: std::sync::LazyLock<HashMap<String, Committed>> = std::sync::LazyLock::new(HashMap::new);

/// 2026-11-28T16:00:00Z: the partitions of the 24th and before are closed.
const NOW: i64 = 1_795_881_600;
const UID: &str = "0b6c1f4e-0000-4000-8000-000000000001";
const SPEC: &str = "spec-1";

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(NOW + seconds).unwrap()
}

fn day(day: u8) -> PartitionKey {
    PartitionKey { year: 2026, month: 11, day, hour: None }
}

/// The Job name of an attempt at a day's partition with these inputs and the spec `spec_hash`.
fn name_with(day_of_month: u8, fingerprint: &str, spec_hash: &str, attempt: u32) -> String {
    job_name("settings", &day(day_of_month), &version(UID, fingerprint, spec_hash), attempt)
}

fn name(day_of_month: u8, fingerprint: &str, attempt: u32) -> String {
    name_with(day_of_month, fingerprint, SPEC, attempt)
}

/// A pipeline spec with no grace period, 2 Job slots and 3 attempts 30 s apart.
struct Scenario {
    spec: EventPipelineSpec,
    spec_hash: String,
    generation: i64,
    previous: EventPipelineStatus,
    partitions: Vec<ObservedPartition>,
    jobs: Vec<ObservedJob>,
    vacuums: Vec<ObservedVacuum>,
    /// What each partition's manifest commits, as the Jobs (or the test) left it.
    sink: HashMap<String, Committed>,
    retry: Option<String>,
    reprocess: Option<String>,
    now: Timestamp,
    mode: Mode,
    deleting: bool,
    /// The reason the source cannot be listed, if so.
    unavailable: Option<&'static str>,
}

impl Scenario {
    fn new() -> Self {
        let spec = EventPipelineSpec {
            schedule: ScheduleSpec { grace_period_seconds: 0, poll_interval_seconds: 60, ..ScheduleSpec::default() },
            execution: ExecutionSpec { max_concurrent_jobs: 2, max_attempts: 3, retry_backoff_seconds: 30, ..ExecutionSpec::default() },
            ..EventPipelineSpec::default()
        };
        Self {
            spec,
            spec_hash: SPEC.into(),
            generation: 1,
            previous: EventPipelineStatus::default(),
            partitions: Vec::new(),
            jobs: Vec::new(),
            vacuums: Vec::new(),
            sink: HashMap::new(),
            retry: None,
            reprocess: None,
            now: at(0),
            mode: Mode::full("the SQL aggregates rows"),
            deleting: false,
            unavailable: None,
        }
    }

    fn partition(mut self, day_of_month: u8, fingerprint: &str, landed: i64) -> Self {
        let partition = ObservedPartition {
            key: day(day_of_month),
            fingerprint: fingerprint.into(),
            modified: vec![at(landed)],
            settled: None,
        };
        self.partitions.push(partition);
        self
    }

    /// The partition of a day whose objects landed at these times (seconds from `NOW`), as
    /// listed now: its fingerprint is `n<count>` for its first `count` objects, and those
    /// older than the grace period are the settled ones.
    fn growing(mut self, day_of_month: u8, landed: &[i64]) -> Self {
        let grace = i64::from(self.spec.schedule.grace_period_seconds);
        let before = self.now - SignedDuration::from_secs(grace);
        let settled = landed.iter().filter(|at_| at(**at_) <= before).count();
        let partition = ObservedPartition {
            key: day(day_of_month),
            fingerprint: format!("n{}", landed.len()),
            modified: landed.iter().map(|at_| at(*at_)).collect(),
            settled: (settled > 0).then(|| Settled { fingerprint: format!("n{settled}"), before }),
        };
        self.partitions.retain(|p| p.key != partition.key);
        self.partitions.push(partition);
        self
    }

    /// A Job of the current spec for a day's partition, launched as the partition's `attempt`-th
    /// launch, that ended as `outcome` (and committed, if it succeeded).
    fn job(mut self, day_of_month: u8, fingerprint: &str, attempt: u32, outcome: JobOutcome) -> Self {
        let spec_hash = self.spec_hash.clone();
        let name = name_with(day_of_month, fingerprint, &spec_hash, attempt);
        self.jobs.push(ObservedJob {
            name: name.clone(),
            partition: day(day_of_month).to_string(),
            fingerprint: fingerprint.into(),
            spec_hash,
            attempt,
            launch: attempt,
            outcome: JobOutcome::Running,
            stopping: false,
            waiting: None,
            disruptions: Vec::new(),
        });
        self.finish(&name, outcome)
    }

    /// The observation with no manifest read yet.
    fn observation(&self) -> Observation<'_> {
        Observation {
            now: self.now,
            pipeline: "settings",
            uid: UID,
            generation: Some(self.generation),
            deleting: self.deleting,
            spec: &self.spec,
            spec_hash: &self.spec_hash,
            mode: &self.mode,
            previous: &self.previous,
            partitions: &self.partitions,
            looked_in: "s3://b/events/ from 2026-11-18 to 2026-11-24",
            jobs: &self.jobs,
            vacuums: &self.vacuums,
            committed: &NO_MANIFESTS,
            requests: Requests { retry: self.retry.as_deref(), reprocess: self.reprocess.as_deref() },
            unavailable: self.unavailable.map(|reason| Unavailable { reason, message: "listing s3://b/events/: timed out" }),
        }
    }

    /// Plans as the reconcile does: once, and again with the manifests the first plan asked for.
    fn plan(&self) -> Plan {
        let first = plan(&self.observation());
        if first.unread_manifests.is_empty() {
            return first;
        }
        let read = first.unread_manifests.iter().map(|p| (p.clone(), self.sink.get(p).cloned().unwrap_or(Committed::Nothing))).collect();
        let second = plan(&Observation { committed: &read, ..self.observation() });
        assert!(second.unread_manifests.is_empty(), "one round of reads suffices: {:?}", second.unread_manifests);
        second
    }

    /// Carries the plan's status into the next reconcile, with the launched Jobs running.
    fn next(mut self, plan: &Plan) -> Self {
        self.previous = plan.status.clone();
        self.jobs.extend(plan.launches.iter().map(created));
        self
    }

    /// The first planned launch run to `outcome`, and the status that records it carried over.
    fn first_launch_ends(self, outcome: impl FnOnce(&Launch) -> JobOutcome) -> Self {
        let plan = self.plan();
        let launch = plan.launches[0].clone();
        let mut scenario = self.next(&plan).finish(&launch.job, outcome(&launch));
        scenario.previous = scenario.plan().status;
        scenario
    }

    /// The first planned launch run and committed, and the status that records it carried over.
    fn first_launch_committed(self) -> Self {
        self.first_launch_ends(|launch| committed(launch, 1))
    }

    /// Ends a Job; a success commits to the sink what the transformer reports, by default the
    /// inputs and spec the Job was launched for.
    fn finish(mut self, job: &str, outcome: JobOutcome) -> Self {
        let job = self.jobs.iter_mut().find(|j| j.name == job).expect("job exists");
        if let JobOutcome::Succeeded(report) = &outcome {
            let report = report.clone().unwrap_or_else(|| summary(4));
            let manifest = Summary {
                input_fingerprint: Some(report.input_fingerprint.clone()).filter(|f| !f.is_empty()).unwrap_or_else(|| job.fingerprint.clone()),
                spec_hash: job.spec_hash.clone(),
                skipped: true,
                ..report
            };
            self.sink.insert(job.partition.clone(), Committed::Output(manifest));
        }
        job.outcome = outcome;
        self
    }

    /// Every partition processed once, successfully, and recorded.
    fn all_done(mut self) -> Self {
        for _ in 0..self.partitions.len() {
            let plan = self.plan();
            let launches = plan.launches.clone();
            self = self.next(&plan);
            for launch in &launches {
                self = self.finish(&launch.job, JobOutcome::Succeeded(Some(summary(4))));
            }
        }
        let done = self.plan();
        assert!(done.status.partitions.iter().all(|p| p.state == PartitionState::Succeeded), "{:?}", states(&done));
        self.previous = done.status;
        self
    }
}

fn states(plan: &Plan) -> Vec<(String, PartitionState, u32)> {
    plan.status.partitions.iter().map(|p| (p.partition[19..].to_string(), p.state, p.attempts)).collect()
}

fn launched(plan: &Plan) -> Vec<(u8, u32)> {
    plan.launches.iter().map(|l| (l.partition.day, l.attempt)).collect()
}

fn condition<'a>(plan: &'a Plan, kind: &str) -> (&'a str, &'a str) {
    let c = plan.status.conditions.iter().find(|c| c.type_ == kind).expect("condition present");
    (c.status.as_str(), c.reason.as_str())
}

fn summary(rows: u64) -> Summary {
    Summary { rows_read: rows, rows_written: rows / 2, bytes_written: 100, seconds: 1.23456, spec_hash: SPEC.into(), ..Summary::default() }
}

/// The summary of a Job that committed what it was launched for, its output made of
/// `increments` runs.
fn committed(launch: &Launch, increments: u32) -> JobOutcome {
    JobOutcome::Succeeded(Some(Summary {
        input_fingerprint: launch.fingerprint.clone(),
        spec_hash: launch.spec_hash.clone(),
        increments,
        ..summary(4)
    }))
}

/// Today's partition (the 28th), open until 2026-11-29T00:00:00Z plus the grace period.
const TODAY: u8 = 28;

fn appending() -> Scenario {
    let mut scenario = Scenario::new();
    scenario.mode = Mode::Append;
    scenario.spec.schedule.grace_period_seconds = 120;
    scenario.spec.schedule.poll_interval_seconds = 600;
    scenario
}
