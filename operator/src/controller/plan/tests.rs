//! The planner's table tests: one scenario per decision.

mod model;

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

#[test]
fn a_firehose_day_in_append_mode_converts_each_object_once_it_settles() {
    let scenario = appending().growing(TODAY, &[-600, -30]);
    let plan = scenario.plan();
    assert_eq!(plan.launches.len(), 1);
    let first = plan.launches[0].clone();
    assert_eq!((first.fingerprint.as_str(), first.settled_before), ("n1", Some(at(-120))), "only the settled object");
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.period, plan.status.mode), (Some(Period::Open), Some(ProcessingMode::Append)));

    let scenario = scenario.next(&plan).finish(&first.job, committed(&first, 1));
    let plan = scenario.plan();
    assert!(plan.launches.is_empty(), "the second object has not settled");
    assert_eq!(states(&plan), vec![("day=28".into(), PartitionState::Succeeded, 1)]);
    assert_eq!(plan.requeue_after, Duration::from_secs(90), "looked at again when it settles");

    let mut scenario = scenario.next(&plan);
    scenario.now = at(90);
    let scenario = scenario.growing(TODAY, &[-600, -30, 80]);
    let plan = scenario.plan();
    let second = plan.launches[0].clone();
    assert_eq!((second.fingerprint.as_str(), second.settled_before, second.force), ("n2", Some(at(-30)), false));
    assert!(!plan.happenings.iter().any(|h| matches!(h, Happening::Outdated { .. })), "growing is not a change");
    let plan = scenario.next(&plan).finish(&second.job, committed(&second, 2)).plan();
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.state, entry.increments, entry.fingerprint.as_str()), (PartitionState::Succeeded, Some(2), "n2"));
}

#[test]
fn a_replaced_object_in_an_append_partition_is_run_again() {
    let mut scenario = appending().growing(TODAY, &[-600]).first_launch_committed();
    // The object was overwritten: same count, another fingerprint. The Job sees that the
    // committed object changed and processes the whole partition.
    scenario.partitions[0].settled.as_mut().unwrap().fingerprint = "replaced".into();
    let plan = scenario.plan();
    assert_eq!(plan.launches.iter().map(|l| l.fingerprint.as_str()).collect::<Vec<_>>(), ["replaced"]);
}

#[test]
fn an_aggregation_runs_once_when_its_day_closes() {
    let mut scenario = Scenario::new().partition(TODAY, "a", -600);
    scenario.spec.schedule.grace_period_seconds = 120;
    scenario.spec.schedule.poll_interval_seconds = 3600 * 24;
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    let entry = &plan.status.partitions[0];
    let closes = Timestamp::from_second(NOW + 8 * 3600 + 120).unwrap();
    assert_eq!((entry.state, entry.period, entry.not_before.clone()), (PartitionState::Open, Some(Period::Open), Some(Time(closes))));
    assert_eq!(condition(&plan, "Ready").0, "True", "waiting for the day to end is not pending work");
    assert_eq!(plan.requeue_after, Duration::from_secs(8 * 3600 + 120), "looked at again when it closes");

    // More objects while open change nothing but the fingerprint.
    let mut scenario = scenario.next(&plan);
    scenario.partitions[0].fingerprint = "b".into();
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    assert_eq!(plan.status.partitions[0].state, PartitionState::Open);

    let mut scenario = scenario.next(&plan);
    scenario.now = closes;
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(TODAY, 1)]);
    assert_eq!((plan.launches[0].fingerprint.as_str(), plan.launches[0].settled_before), ("b", None));
    assert_eq!(plan.status.partitions[0].period, Some(Period::Closed));
}

#[test]
fn open_refresh_recomputes_an_open_aggregation_at_most_that_often() {
    let mut scenario = Scenario::new().partition(TODAY, "a", -600);
    scenario.spec.schedule.open_refresh_seconds = Some(3600);
    let mut scenario = scenario.first_launch_committed();
    scenario.partitions[0].fingerprint = "b".into();
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.state, entry.not_before.clone()), (PartitionState::Settling, Some(Time(at(3600)))));
    let mut scenario = scenario.next(&plan);
    scenario.now = at(3600);
    assert_eq!(launched(&scenario.plan()), vec![(TODAY, 1)]);
}

#[test]
fn a_late_file_after_close_processes_the_partition_again() {
    let scenario = Scenario::new().partition(24, "a", -7200).all_done();
    let mut scenario = scenario;
    scenario.partitions[0] = ObservedPartition { fingerprint: "late".into(), ..scenario.partitions[0].clone() };
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(24, 1)]);
    assert!(plan.happenings.contains(&Happening::Outdated { partition: day(24).to_string(), cause: Outdated::Inputs }));
}

#[test]
fn an_sql_change_to_an_aggregation_waits_for_the_open_day_to_close() {
    let mut scenario = appending().growing(TODAY, &[-600]).first_launch_committed();
    scenario.mode = Mode::full("the SQL aggregates rows (GROUP BY or an aggregate function)");
    scenario.spec_hash = "spec-2".into();
    scenario.generation = 2;
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    assert_eq!(plan.status.partitions[0].state, PartitionState::Open);
    assert_eq!(plan.status.mode, Some(ProcessingMode::Full));
    assert!(plan.status.mode_reason.as_deref().unwrap().contains("aggregates"));
    assert!(plan.happenings.contains(&Happening::Outdated { partition: day(TODAY).to_string(), cause: Outdated::Spec }));
}

#[test]
fn first_run_launches_the_oldest_partitions_up_to_the_concurrency_cap() {
    let scenario = Scenario::new().partition(24, "c", -10).partition(22, "a", -10).partition(23, "b", -10);
    let mut scenario = scenario;
    scenario.partitions.sort_by_key(|p| p.key);
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(22, 1), (23, 1)]);
    assert_eq!(
        states(&plan),
        vec![
            ("day=22".into(), PartitionState::Running, 1),
            ("day=23".into(), PartitionState::Running, 1),
            ("day=24".into(), PartitionState::Pending, 0)
        ]
    );
    assert_eq!((plan.status.pending_partitions, plan.status.running_jobs), (1, 2));
    assert_eq!(condition(&plan, "Ready"), ("False", "Processing"));
    assert_eq!(condition(&plan, "Progressing"), ("True", "Processing"));
    assert_eq!(condition(&plan, "Degraded"), ("False", "AsExpected"));
    assert_eq!(plan.launches[0].job, name(22, "a", 1));
}

#[test]
fn a_finished_job_frees_its_slot_for_the_next_partition_and_records_the_summary() {
    let scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10).partition(24, "c", -10);
    let first = scenario.plan();
    let scenario = scenario.next(&first);
    let job = first.launches[0].job.clone();
    let scenario = scenario.finish(&job, JobOutcome::Succeeded(Some(summary(10))));
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(24, 1)]);
    let done = &plan.status.partitions[0];
    assert_eq!((done.state, done.rows_read, done.rows_written, done.seconds), (PartitionState::Succeeded, Some(10), Some(5), Some(1.235)));
    assert_eq!(plan.status.last_completed_partition.as_deref(), Some("year=2026/month=11/day=22"));
    assert!(matches!(&plan.happenings[0], Happening::Succeeded { job: j, .. } if *j == job));
}

#[test]
fn everything_done_is_ready_and_a_second_identical_reconcile_plans_the_same_status() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let scenario = scenario.next(&first).finish(&first.launches[0].job, JobOutcome::Succeeded(Some(summary(4))));
    let done = scenario.plan();
    assert_eq!(condition(&done, "Ready"), ("True", "UpToDate"));
    assert_eq!(condition(&done, "Progressing"), ("False", "UpToDate"));
    let mut again = scenario;
    again.previous = done.status.clone();
    again.now = at(600);
    let idle = again.plan();
    assert_eq!(idle.status, done.status, "nothing new must change nothing, timestamps included");
    assert!(idle.launches.is_empty() && idle.happenings.is_empty());
    assert_eq!(idle.requeue_after, Duration::from_secs(60));
}

#[test]
fn a_failed_attempt_is_retried_with_exponential_backoff_and_then_given_up() {
    let mut scenario = Scenario::new().partition(22, "a", -10);
    let mut plan = scenario.plan();
    let mut retry_waits = Vec::new();
    for attempt in 1..=3 {
        assert_eq!(launched(&plan), vec![(22, attempt)], "attempt {attempt}");
        let job = plan.launches[0].job.clone();
        scenario = scenario.next(&plan).finish(&job, JobOutcome::Failed(format!("bad row {attempt}")));
        plan = scenario.plan();
        if attempt < 3 {
            assert_eq!(states(&plan), vec![("day=22".into(), PartitionState::Retrying, attempt)]);
            assert!(plan.launches.is_empty(), "no relaunch before the backoff");
            retry_waits.push(plan.requeue_after.as_secs());
            let due = plan.status.partitions[0].not_before.clone().unwrap().0;
            scenario.previous = plan.status.clone();
            scenario.now = due;
            plan = scenario.plan();
        }
    }
    assert_eq!(retry_waits, vec![30, 60]);
    assert_eq!(states(&plan), vec![("day=22".into(), PartitionState::Failed, 3)]);
    assert_eq!(plan.status.partitions[0].message.as_deref(), Some("bad row 3"));
    assert!(matches!(&plan.happenings[0], Happening::GaveUp { message, .. } if message == "bad row 3"));
    assert_eq!(plan.status.failed_partitions, 1);
    assert_eq!(condition(&plan, "Degraded"), ("True", "PartitionsFailed"));
    assert_eq!(condition(&plan, "Ready"), ("False", "PartitionsFailed"));
    scenario.previous = plan.status.clone();
    assert!(scenario.plan().launches.is_empty(), "a failed partition stays failed");
}

#[test]
fn a_spec_change_gives_failed_partitions_new_attempts_under_new_job_names() {
    let mut scenario = Scenario::new().partition(22, "a", -10);
    scenario.spec.execution.max_attempts = 1;
    let first = scenario.plan();
    let mut scenario = scenario.next(&first).finish(&first.launches[0].job, JobOutcome::Failed("boom".into()));
    let failed = scenario.plan();
    assert_eq!(states(&failed), vec![("day=22".into(), PartitionState::Failed, 1)]);
    scenario.previous = failed.status;
    scenario.generation = 2;
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(22, 2)]);
    assert_ne!(plan.launches[0].job, first.launches[0].job);
}

#[test]
fn new_inputs_after_success_are_processed_again() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let mut scenario = scenario.next(&first).finish(&first.launches[0].job, JobOutcome::Succeeded(Some(summary(2))));
    scenario.previous = scenario.plan().status;
    scenario.partitions[0].fingerprint = "a2".into();
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(22, 1)]);
    assert_eq!(plan.launches[0].fingerprint, "a2");
    assert_eq!(plan.happenings[0], Happening::Outdated { partition: day(22).to_string(), cause: Outdated::Inputs });
}

#[test]
fn new_inputs_while_running_wait_for_the_running_job() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let mut scenario = scenario.next(&first);
    scenario.partitions[0].fingerprint = "a2".into();
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    assert_eq!(plan.status.partitions[0].fingerprint, "a");
    let mut scenario = scenario.next(&plan).finish(&first.launches[0].job, JobOutcome::Succeeded(Some(summary(2))));
    let finished = scenario.plan();
    assert!(finished.launches.is_empty() && finished.relist, "the result is newer than the listing: list again first");
    scenario.previous = finished.status;
    let plan = scenario.plan();
    assert_eq!(plan.launches.iter().map(|l| l.fingerprint.as_str()).collect::<Vec<_>>(), vec!["a2"]);
}

#[test]
fn a_fresh_partition_settles_for_the_grace_period() {
    let mut scenario = Scenario::new().partition(24, "c", -30);
    scenario.spec.schedule.grace_period_seconds = 120;
    scenario.spec.schedule.poll_interval_seconds = 600;
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    assert_eq!(states(&plan), vec![("day=24".into(), PartitionState::Settling, 0)]);
    assert_eq!(plan.requeue_after, Duration::from_secs(90));
    scenario.previous = plan.status;
    scenario.now = at(90);
    assert_eq!(launched(&scenario.plan()), vec![(24, 1)]);
}

#[test]
fn without_partitions_the_pipeline_is_not_ready_and_says_where_it_looked() {
    let plan = Scenario::new().plan();
    assert_eq!(condition(&plan, "Ready"), ("False", "NoPartitions"));
    assert_eq!(condition(&plan, "Degraded"), ("False", "AsExpected"));
    let ready = plan.status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert!(ready.message.contains("s3://b/events/ from 2026-11-18 to 2026-11-24"), "{}", ready.message);
}

#[test]
fn suspend_launches_nothing_but_still_records_results() {
    let scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10);
    let first = Scenario { spec: EventPipelineSpec { execution: ExecutionSpec { max_concurrent_jobs: 1, ..Scenario::new().spec.execution }, ..Scenario::new().spec }, ..scenario };
    let plan = first.plan();
    let mut scenario = first.next(&plan).finish(&plan.launches[0].job, JobOutcome::Succeeded(None));
    scenario.spec.suspend = true;
    let suspended = scenario.plan();
    assert!(suspended.launches.is_empty());
    assert_eq!(
        states(&suspended),
        vec![("day=22".into(), PartitionState::Succeeded, 1), ("day=23".into(), PartitionState::Pending, 0)]
    );
    assert_eq!(condition(&suspended, "Ready"), ("False", "Suspended"));
    assert_eq!(suspended.status.partitions[0].message.as_deref(), Some(&*format!("Job {} succeeded without reporting a summary", plan.launches[0].job)));
}

#[test]
fn after_a_restart_existing_jobs_are_adopted_not_launched_again() {
    // The status was lost (or never written) but the Jobs exist.
    let scenario = Scenario::new()
        .partition(22, "a", -10)
        .partition(23, "b", -10)
        .job(22, "a", 1, JobOutcome::Succeeded(Some(summary(8))))
        .job(23, "b", 2, JobOutcome::Running);
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    assert_eq!(
        states(&plan),
        vec![("day=22".into(), PartitionState::Succeeded, 1), ("day=23".into(), PartitionState::Running, 2)]
    );
}

#[test]
fn a_job_that_disappears_counts_as_a_failed_attempt() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let mut scenario = scenario;
    scenario.previous = first.status.clone();
    let plan = scenario.plan();
    assert_eq!(states(&plan), vec![("day=22".into(), PartitionState::Retrying, 1)]);
    assert!(plan.status.partitions[0].message.as_deref().unwrap().contains("disappeared"));
}

#[test]
fn partitions_leaving_the_window_are_dropped_once_their_jobs_finish() {
    let scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10);
    let first = scenario.plan();
    let mut scenario = scenario.next(&first);
    scenario.partitions.remove(0);
    let plan = scenario.plan();
    assert_eq!(states(&plan).len(), 2, "day 22 is still running");
    let scenario = scenario.next(&plan).finish(&first.launches[0].job, JobOutcome::Succeeded(Some(summary(1))));
    let plan = scenario.plan();
    assert_eq!(states(&plan), vec![("day=23".into(), PartitionState::Running, 1)]);
    assert_eq!(plan.status.last_completed_partition.as_deref(), Some("year=2026/month=11/day=22"));
}

#[test]
fn backoff_doubles_and_is_capped_at_an_hour() {
    let waits: Vec<i64> = (1..=9).map(|failures| retry_backoff(30, failures).as_secs()).collect();
    assert_eq!(waits, vec![30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
}

#[test]
fn a_data_path_change_reprocesses_the_window_oldest_first_under_the_cap() {
    let mut scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10).partition(24, "c", -10).all_done();
    scenario.generation = 2;
    scenario.spec_hash = "spec-2".into();
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(22, 1), (23, 1)]);
    assert_eq!(plan.launches[0].job, name_with(22, "a", "spec-2", 2), "the partition's second launch");
    assert!(plan.launches.iter().all(|l| l.spec_hash == "spec-2"));
    let outdated: Vec<_> = plan.happenings.iter().filter(|h| matches!(h, Happening::Outdated { cause: Outdated::Spec, .. })).collect();
    assert_eq!(outdated.len(), 3);
    assert_eq!(states(&plan)[2], ("day=24".into(), PartitionState::Pending, 0));
}

#[test]
fn a_change_outside_the_data_path_reprocesses_nothing() {
    let mut scenario = Scenario::new().partition(22, "a", -10).all_done();
    scenario.generation = 2;
    scenario.spec.execution.max_concurrent_jobs = 5;
    let plan = scenario.plan();
    assert!(plan.launches.is_empty() && plan.happenings.is_empty(), "{:?}", plan.happenings);
}

#[test]
fn a_job_gone_before_its_result_was_recorded_is_read_from_the_manifest() {
    let scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10);
    let first = scenario.plan();
    let mut scenario = scenario;
    scenario.previous = first.status.clone();
    scenario.sink.insert(day(22).to_string(), Committed::Output(Summary { input_fingerprint: "a".into(), ..summary(6) }));
    scenario.sink.insert(day(23).to_string(), Committed::Output(Summary { input_fingerprint: "b".into(), spec_hash: "old".into(), ..summary(6) }));
    let plan = scenario.plan();
    let done = &plan.status.partitions[0];
    assert_eq!((done.state, done.rows_read, done.failures), (PartitionState::Succeeded, Some(6), 0));
    assert!(done.message.as_deref().unwrap().contains("committed manifest"), "{:?}", done.message);
    let lost = &plan.status.partitions[1];
    assert_eq!((lost.state, lost.failures), (PartitionState::Retrying, 1), "a manifest of another spec does not count");
}

#[test]
fn the_committed_fingerprint_is_recorded_and_the_listing_refreshed() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    // An object landed after the listing; the transformer committed what it listed itself.
    let committed = Summary { input_fingerprint: "a2".into(), ..summary(6) };
    let mut scenario = scenario.next(&first).finish(&first.launches[0].job, JobOutcome::Succeeded(Some(committed)));
    let plan = scenario.plan();
    assert!(plan.launches.is_empty(), "the old listing must not relaunch the partition");
    assert_eq!((plan.status.partitions[0].fingerprint.as_str(), plan.relist), ("a2", true));
    assert_eq!(plan.requeue_after, Duration::from_secs(1));
    scenario.previous = plan.status;
    scenario.partitions[0].fingerprint = "a2".into();
    let relisted = scenario.plan();
    assert!(relisted.launches.is_empty() && relisted.happenings.is_empty() && !relisted.relist);
}

#[test]
fn a_retry_request_gives_failed_partitions_new_attempts_once() {
    let mut scenario = Scenario::new().partition(22, "a", -10);
    scenario.spec.execution.max_attempts = 1;
    let mut scenario = scenario.first_launch_ends(|_| JobOutcome::Failed("boom".into()));
    scenario.retry = Some("1".into());
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(22, 2)]);
    assert!(plan.happenings.contains(&Happening::RetryRequested { partitions: 1 }));
    assert_eq!(plan.status.last_retry_request.as_deref(), Some("1"));
    let mut scenario = scenario.next(&plan).finish(&plan.launches[0].job, JobOutcome::Failed("boom again".into()));
    let failed = scenario.plan();
    assert_eq!(states(&failed), vec![("day=22".into(), PartitionState::Failed, 2)], "the same value is acted on once");
    scenario.previous = failed.status;
    assert!(scenario.plan().launches.is_empty());
}

#[test]
fn a_reprocess_request_processes_one_committed_partition_again_with_force() {
    let mut scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10).all_done();
    scenario.reprocess = Some(day(23).to_string());
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(23, 2)]);
    assert!(plan.launches[0].force);
    assert_eq!(plan.status.last_reprocess_request.as_deref(), Some("year=2026/month=11/day=23"));
    let refused = vec![(plan.launches[0].job.clone(), "denied by an admission webhook".to_string())];
    let kept = launch_refused(plan.clone(), &scenario.observation(), &refused);
    assert_eq!(kept.status.last_reprocess_request, None, "a refused reprocess is still requested");
    let scenario = scenario.next(&plan);
    assert!(scenario.plan().launches.is_empty(), "handled once");

    let mut unknown = Scenario::new().partition(22, "a", -10).all_done();
    unknown.reprocess = Some("year=2020/month=01/day=01".into());
    let ignored = unknown.plan();
    assert_eq!(condition(&ignored, "Ready"), ("True", "UpToDate"));
    assert!(ignored.launches.is_empty());
    assert!(matches!(&ignored.happenings[0], Happening::RequestIgnored { message } if message.contains("year=2020")));
}

#[test]
fn a_refused_job_leaves_the_partition_waiting_and_the_pipeline_degraded() {
    let scenario = Scenario::new().partition(22, "a", -10).partition(23, "b", -10);
    let planned = scenario.plan();
    let refused = vec![(planned.launches[1].job.clone(), "exceeded quota: jobs, requested: count/jobs.batch=1".to_string())];
    assert_eq!(before_launches(&planned, &scenario.previous), planned.status, "nothing refused before: the plan's status");
    let plan = launch_refused(planned, &scenario.observation(), &refused);
    assert_eq!(launched(&plan), vec![(22, 1)]);
    assert_eq!(states(&plan)[1], ("day=23".into(), PartitionState::Pending, 0));
    assert_eq!((plan.status.running_jobs, plan.status.pending_partitions), (1, 1));
    assert_eq!(condition(&plan, "Degraded"), ("True", "JobCreateFailed"));
    assert!(plan.happenings.iter().any(|h| matches!(h, Happening::JobCreateFailed { message, .. } if message.contains("quota"))));
    assert!(!plan.happenings.iter().any(|h| matches!(h, Happening::Launched { partition, .. } if partition.ends_with("23"))));
    let mut again = scenario.next(&plan);
    again.now = at(10);
    let retry = again.plan();
    assert_eq!(launched(&retry), vec![(23, 1)], "the next reconcile tries again under the same name");
    let written_first = before_launches(&retry, &again.previous);
    let degraded = written_first.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "JobCreateFailed"), "until a Job is created");
    assert_eq!(condition(&retry, "Degraded").0, "False", "cleared once the creates succeed");
}

/// S1 → S2 → S1: the Jobs of the first S1 run are still there (finished Jobs live for
/// `ttlSecondsAfterFinished`), but the sink holds S2's output, so S1 must run again.
#[test]
fn rolling_the_spec_back_runs_the_partition_again_instead_of_adopting_the_old_job() {
    let mut scenario = Scenario::new().partition(22, "a", -10).all_done();
    let first_job = scenario.previous.partitions[0].job.clone().unwrap();
    scenario.generation = 2;
    scenario.spec_hash = "spec-2".into();
    let mut scenario = scenario.first_launch_committed();
    assert_eq!((scenario.previous.partitions[0].state, scenario.previous.partitions[0].spec_hash.as_str()), (PartitionState::Succeeded, "spec-2"));

    scenario.generation = 3;
    scenario.spec_hash = SPEC.into();
    let rolled_back = scenario.plan();
    assert_eq!(rolled_back.launches.len(), 1, "S1 runs again: {:?}", states(&rolled_back));
    assert_ne!(rolled_back.launches[0].job, first_job, "a new Job, not the first S1 run's");
    assert_eq!(rolled_back.status.partitions[0].state, PartitionState::Running);
}

/// A wrongly uploaded object is deleted: the fingerprint returns to the first input set, whose
/// Job finished long ago; the sink holds the second set's output, so the first runs again.
#[test]
fn deleting_an_object_again_runs_the_partition_instead_of_adopting_the_old_job() {
    let mut scenario = Scenario::new().partition(22, "a", -10).all_done();
    scenario.partitions[0].fingerprint = "a+wrong".into();
    let mut scenario = scenario.first_launch_committed();
    scenario.partitions[0].fingerprint = "a".into();
    let plan = scenario.plan();
    assert_eq!(plan.launches.iter().map(|l| l.fingerprint.as_str()).collect::<Vec<_>>(), ["a"], "{:?}", states(&plan));
}

/// With one attempt, the first input set fails; an uploaded object makes a second set, which
/// succeeds; deleting the object returns to the first set, which gets a new run rather than its
/// old failure.
#[test]
fn with_one_attempt_returning_to_inputs_whose_job_failed_runs_them_again() {
    let mut scenario = Scenario::new().partition(22, "a", -10);
    scenario.spec.execution.max_attempts = 1;
    let mut scenario = scenario.first_launch_ends(|_| JobOutcome::Failed("boom".into()));
    assert_eq!(scenario.previous.partitions[0].state, PartitionState::Failed);
    scenario.partitions[0].fingerprint = "a+fix".into();
    let mut scenario = scenario.first_launch_committed();
    scenario.partitions[0].fingerprint = "a".into();
    let plan = scenario.plan();
    assert_eq!(launched(&plan).len(), 1, "{:?}", states(&plan));
    assert_eq!(plan.status.partitions[0].state, PartitionState::Running);
}

/// A Job reports success, but the partition's manifest commits another spec (another writer, a
/// restored bucket): the status must not claim the output.
#[test]
fn a_reported_success_the_manifest_does_not_commit_is_not_recorded() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let launch = first.launches[0].clone();
    let mut scenario = scenario.next(&first).finish(&launch.job, committed(&launch, 1));
    scenario.sink.insert(day(22).to_string(), Committed::Output(Summary { input_fingerprint: "a".into(), spec_hash: "another-spec".into(), ..summary(4) }));
    let plan = scenario.plan();
    assert_ne!(plan.status.partitions[0].state, PartitionState::Succeeded, "{:?}", plan.status.partitions[0]);
}

/// A Job for S2 was created, but the status write that recorded it was lost, and the spec went
/// back to S1: the S2 Job is never adopted; it is stopped, and S1 runs once it is gone, since
/// the S2 Job may have replaced the output.
#[test]
fn a_job_for_a_decision_the_status_never_recorded_is_stopped_and_the_partition_runs_again() {
    let mut scenario = Scenario::new().partition(22, "a", -10).all_done();
    let stray = ObservedJob {
        name: name_with(22, "a", "spec-2", 2),
        partition: day(22).to_string(),
        fingerprint: "a".into(),
        spec_hash: "spec-2".into(),
        attempt: 1,
        launch: 2,
        outcome: JobOutcome::Running,
        stopping: false,
        waiting: None,
        disruptions: Vec::new(),
    };
    scenario.jobs.push(stray.clone());
    let plan = scenario.plan();
    assert_eq!(plan.stops.iter().map(|s| s.job.as_str()).collect::<Vec<_>>(), [stray.name.as_str()]);
    assert!(plan.launches.is_empty(), "nothing runs beside it");
    assert_eq!(plan.status.partitions[0].state, PartitionState::Pending, "the output may be replaced: not claimed");
    let mut scenario = scenario.next(&plan);
    scenario.jobs.iter_mut().find(|j| j.name == stray.name).unwrap().stopping = true;
    let stopping = scenario.plan();
    assert!(stopping.stops.is_empty() && stopping.launches.is_empty(), "asked once; waits until it is gone");
    scenario.jobs.retain(|j| j.name != stray.name);
    let plan = scenario.plan();
    assert_eq!(plan.launches.iter().map(|l| (l.launch, l.spec_hash.as_str())).collect::<Vec<_>>(), [(3, SPEC)]);
}

/// The same, with the S2 Job already finished: what it left in the sink decides.
#[test]
fn a_finished_job_for_a_decision_the_status_never_recorded_is_checked_against_the_manifest() {
    let done = Scenario::new().partition(22, "a", -10).all_done();
    let stray = ObservedJob {
        name: name_with(22, "a", "spec-2", 2),
        partition: day(22).to_string(),
        fingerprint: "a".into(),
        spec_hash: "spec-2".into(),
        attempt: 1,
        launch: 2,
        outcome: JobOutcome::Failed("boom".into()),
        stopping: false,
        waiting: None,
        disruptions: Vec::new(),
    };
    let mut unchanged = Scenario { jobs: [done.jobs.clone(), vec![stray.clone()]].concat(), ..Scenario::new().partition(22, "a", -10) };
    (unchanged.previous, unchanged.sink) = (done.previous.clone(), done.sink.clone());
    let plan = unchanged.plan();
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.state, entry.launch), (PartitionState::Succeeded, 2), "the manifest still commits S1");
    assert!(plan.launches.is_empty());

    let mut replaced = unchanged;
    replaced.sink.insert(day(22).to_string(), Committed::Output(Summary { input_fingerprint: "a".into(), spec_hash: "spec-2".into(), ..summary(4) }));
    let plan = replaced.plan();
    assert_eq!(plan.launches.iter().map(|l| l.launch).collect::<Vec<_>>(), [3], "the S2 run replaced the output: S1 runs again");
}

/// The sink cannot be read while a Job's result is recovered from its manifest: that says
/// nothing about the attempt, which is neither failed nor succeeded until the manifest is read.
#[test]
fn a_sink_read_error_while_a_job_is_gone_is_not_a_failed_attempt() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let mut scenario = scenario;
    scenario.previous = first.status.clone();
    scenario.sink.insert(day(22).to_string(), Committed::Unreadable("connection refused".into()));
    let plan = scenario.plan();
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.state, entry.failures), (PartitionState::Running, 0), "{entry:?}");
    assert!(entry.message.as_deref().unwrap().contains("connection refused"), "{:?}", entry.message);
    assert!(plan.launches.is_empty());
    scenario.previous = plan.status;
    scenario.sink.insert(day(22).to_string(), Committed::Output(Summary { input_fingerprint: "a".into(), ..summary(6) }));
    assert_eq!(scenario.plan().status.partitions[0].state, PartitionState::Succeeded, "read once the sink answers");
}

/// `kubectl annotate evp NAME eventpipe.dev/reprocess-` and then the same value again: a second
/// request for the same partition.
#[test]
fn a_reprocess_request_for_the_same_partition_works_again_after_the_annotation_was_removed() {
    let mut scenario = Scenario::new().partition(22, "a", -10).all_done();
    scenario.reprocess = Some(day(22).to_string());
    let first = scenario.plan();
    let launch = first.launches[0].clone();
    assert!(launch.force);
    let mut scenario = scenario.next(&first).finish(&launch.job, committed(&launch, 1));
    scenario.previous = scenario.plan().status;
    scenario.reprocess = None;
    scenario.previous = scenario.plan().status;
    scenario.reprocess = Some(day(22).to_string());
    let again = scenario.plan();
    assert_eq!(again.launches.iter().map(|l| l.force).collect::<Vec<_>>(), [true], "{:?}", again.happenings);
}

/// A spec change gives failed partitions new attempts; when the reconcile that sees the change
/// cannot list the source, the next one that can must still give them.
#[test]
fn a_spec_changes_retry_survives_a_degraded_reconcile() {
    let mut scenario = Scenario::new().partition(22, "a", -10);
    scenario.spec.execution.max_attempts = 1;
    let mut scenario = scenario.first_launch_ends(|_| JobOutcome::Failed("boom".into()));
    scenario.generation = 2;
    scenario.unavailable = Some("SourceUnavailable");
    let degraded = scenario.plan();
    assert_eq!(condition(&degraded, "Degraded"), ("True", "SourceUnavailable"));
    assert!(degraded.launches.is_empty());
    scenario.previous = degraded.status;
    scenario.unavailable = None;
    let plan = scenario.plan();
    assert_eq!(launched(&plan), vec![(22, 2)], "{:?}", states(&plan));
}

/// The source cannot be listed, but a Job finishes meanwhile: its result is recorded all the
/// same.
#[test]
fn a_job_that_finishes_while_the_source_is_unavailable_is_recorded() {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let launch = first.launches[0].clone();
    let mut scenario = scenario.next(&first).finish(&launch.job, committed(&launch, 1));
    scenario.unavailable = Some("SourceUnavailable");
    let plan = scenario.plan();
    assert_eq!(plan.status.partitions[0].state, PartitionState::Succeeded, "{:?}", plan.status.partitions[0]);
    assert_eq!(condition(&plan, "Degraded"), ("True", "SourceUnavailable"));
    assert!(plan.happenings.iter().any(|h| matches!(h, Happening::Succeeded { .. })));
}

/// A pipeline with a `deletionTimestamp` (a finalizer, or foreground deletion, keeps it a while)
/// creates no Job: its Jobs would be owned by an object on its way out.
#[test]
fn a_pipeline_being_deleted_launches_nothing() {
    let mut scenario = Scenario::new().partition(22, "a", -10);
    scenario.deleting = true;
    let plan = scenario.plan();
    assert!(plan.launches.is_empty(), "{:?}", plan.launches);
}

/// A state written by a newer version of the operator (after a rollback) is checked again.
#[test]
fn an_unknown_state_is_checked_again() {
    let mut scenario = Scenario::new().partition(22, "a", -10).all_done();
    let entry = &mut scenario.previous.partitions[0];
    entry.state = PartitionState::Unknown;
    let launch = entry.launch;
    let plan = scenario.plan();
    assert_eq!(plan.launches.iter().map(|l| l.launch).collect::<Vec<_>>(), [launch + 1], "{:?}", states(&plan));
    assert!(plan.status.partitions.iter().all(|p| p.state != PartitionState::Unknown));
}

/// The running Job of day 22, launched at `NOW`, its pod in this state now.
fn launched_and(waiting: Option<Waiting>, disruptions: &[&str]) -> Scenario {
    let scenario = Scenario::new().partition(22, "a", -10);
    let first = scenario.plan();
    let mut scenario = scenario.next(&first);
    scenario.jobs[0].waiting = waiting;
    scenario.jobs[0].disruptions = disruptions.iter().map(|d| d.to_string()).collect();
    scenario
}

/// An image that cannot be pulled: said within a poll (message and Event, once), and the attempt
/// fails at the start timeout with that reason, its Job stopped.
#[test]
fn a_pod_that_cannot_pull_its_image_is_reported_and_fails_the_attempt_at_the_start_timeout() {
    let pulling = Waiting { since: at(0), problem: Some("ErrImagePull: no such image".into()), pod: Some("p".into()) };
    let mut scenario = launched_and(Some(pulling), &[]);
    scenario.now = at(5);
    let plan = scenario.plan();
    let entry = &plan.status.partitions[0];
    assert_eq!(entry.state, PartitionState::Running);
    assert!(entry.message.as_deref().unwrap().contains("ErrImagePull: no such image"), "{:?}", entry.message);
    assert!(matches!(&plan.happenings[..], [Happening::NotStarting { problem, .. }] if problem.starts_with("ErrImagePull")), "{:?}", plan.happenings);
    scenario.previous = plan.status;
    scenario.now = at(60);
    assert!(scenario.plan().happenings.is_empty(), "said once");

    scenario.now = at(300);
    let plan = scenario.plan();
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.state, entry.failures), (PartitionState::Retrying, 1));
    let message = entry.message.as_deref().unwrap();
    assert!(message.contains("startTimeoutSeconds (300 s)") && message.contains("ErrImagePull: no such image"), "{message}");
    assert_eq!(plan.stops.iter().map(|s| s.job.as_str()).collect::<Vec<_>>(), [scenario.jobs[0].name.as_str()]);
}

/// A Job without any pod (a pods quota, an admission webhook): said after a short grace.
#[test]
fn a_job_without_a_pod_is_reported_after_a_grace() {
    let mut scenario = launched_and(Some(Waiting { since: at(0), problem: None, pod: None }), &[]);
    scenario.now = at(10);
    assert!(scenario.plan().happenings.is_empty(), "a pod within seconds is ordinary");
    scenario.now = at(40);
    let plan = scenario.plan();
    assert!(plan.status.partitions[0].message.as_deref().unwrap().contains("no pod was created"), "{:?}", plan.status.partitions[0].message);
}

/// Once the pod starts, the message about its waiting goes.
#[test]
fn a_pod_that_starts_clears_the_waiting_message() {
    let pulling = Waiting { since: at(0), problem: Some("ImagePullBackOff".into()), pod: Some("p".into()) };
    let mut scenario = launched_and(Some(pulling), &[]);
    scenario.now = at(5);
    scenario.previous = scenario.plan().status;
    scenario.jobs[0].waiting = None;
    assert_eq!(scenario.plan().status.partitions[0].message, None);
}

/// A pod whose own memory use gets it evicted again and again: the attempt fails after
/// `maxDisruptions` disruptions instead of running until the deadline.
#[test]
fn an_attempt_whose_pods_keep_being_evicted_fails() {
    let evicted = "pod p: The node was low on resource: memory.";
    let scenario = launched_and(None, &[evicted, evicted]);
    assert_eq!(scenario.plan().status.partitions[0].state, PartitionState::Running, "two disruptions are survived");
    let scenario = launched_and(None, &[evicted, evicted, evicted]);
    let plan = scenario.plan();
    let entry = &plan.status.partitions[0];
    assert_eq!((entry.state, entry.failures), (PartitionState::Retrying, 1));
    assert!(entry.message.as_deref().unwrap().contains("disrupted 3 times"), "{:?}", entry.message);
    assert_eq!(plan.stops.len(), 1);
}

/// An hourly layout over a month of November: 28 days × 24 hours, more than the status lists.
fn hourly_month() -> Scenario {
    let mut scenario = Scenario::new();
    for day_of_month in 1..=28 {
        for hour in 0..24 {
            let key = PartitionKey { hour: Some(hour), ..day(day_of_month) };
            scenario.partitions.push(ObservedPartition { key, fingerprint: format!("f{day_of_month}-{hour}"), modified: vec![at(-7200)], settled: None });
        }
    }
    scenario.now = at(3 * 86400);
    scenario
}

#[test]
fn a_window_longer_than_the_status_is_counted_in_full_and_processed_oldest_first() {
    let scenario = hourly_month();
    let plan = scenario.plan();
    assert_eq!(plan.launches.iter().map(|l| l.partition.to_string()).collect::<Vec<_>>(), ["year=2026/month=11/day=01/hour=00", "year=2026/month=11/day=01/hour=01"]);
    let status = &plan.status;
    assert_eq!(status.partitions.len(), status::MAX_LISTED);
    assert_eq!((status.partition_counts.pending, status.partition_counts.running), (670, 2));
    assert_eq!(status.oldest_unprocessed_partition.as_deref(), Some("year=2026/month=11/day=01/hour=00"));
    assert_eq!(condition(&plan, "Ready"), ("False", "Processing"));
    assert_eq!(plan.entries.len(), 672);
}

/// Partitions the status no longer lists (the window is longer than it) are found committed in
/// their manifests, not launched again.
#[test]
fn partitions_the_status_does_not_list_are_checked_against_their_manifests() {
    let mut scenario = hourly_month();
    for partition in &scenario.partitions {
        let committed = Summary { input_fingerprint: partition.fingerprint.clone(), ..summary(4) };
        scenario.sink.insert(partition.key.to_string(), Committed::Output(committed));
    }
    let plan = scenario.plan();
    assert!(plan.launches.is_empty(), "{:?}", plan.launches.first());
    assert_eq!(plan.status.partition_counts.succeeded, 672);
    assert_eq!(plan.status.oldest_unprocessed_partition, None);
    assert_eq!(condition(&plan, "Ready"), ("True", "UpToDate"));
    assert_eq!(plan.status.partitions.first().map(|p| p.partition.as_str()), Some("year=2026/month=11/day=12/hour=08"), "the newest 400 are listed");
}

/// When as many partitions as the status lists are failed or retrying, no more are launched
/// (their state could not be kept), and a condition says how many wait.
#[test]
fn partitions_beyond_what_the_status_can_track_wait_and_say_so() {
    let mut scenario = hourly_month();
    let failed = |partition: &ObservedPartition| PartitionStatus {
        partition: partition.key.to_string(),
        fingerprint: partition.fingerprint.clone(),
        spec_hash: SPEC.into(),
        state: PartitionState::Failed,
        attempts: 3,
        failures: 3,
        launch: 3,
        message: Some("bad row".into()),
        ..PartitionStatus::default()
    };
    scenario.previous.partitions = scenario.partitions.iter().take(status::MAX_LISTED).map(failed).collect();
    let plan = scenario.plan();
    assert!(plan.launches.is_empty());
    assert_eq!(plan.held, 272, "every other partition waits");
    let (ready, reason) = condition(&plan, "Degraded");
    assert_eq!((ready, reason), ("True", "PartitionsFailed"));
    let message = &plan.status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap().message;
    assert!(message.contains("more partitions wait until fewer are failed or retrying"), "{message}");
}
