//! A model-based test of the planner. Random sequences of what happens to a pipeline — spec
//! changes and rollbacks, objects added, replaced and deleted, Jobs that succeed, fail, are
//! evicted, never start or vanish, a reconcile stopped between its status write and its Jobs'
//! creation (an operator restart), a status lost and rebuilt from the Jobs and the manifests,
//! reprocess and retry requests, time passing — drive the pure planner as the reconcile does
//! (plan, read the manifests it asks for, plan again, write the status, create and stop Jobs)
//! against a small model of the cluster's Jobs and of what the sink commits. After every step:
//! the status never claims a partition committed for inputs or a spec that its manifest does not
//! commit, and no two Jobs run for one partition at once. Once the events stop and Jobs may
//! finish, every partition reaches a terminal state.
//!
//! The seed is fixed, so every run tries the same sequences; a failing sequence is shrunk and
//! kept in `proptest-regressions/` and tried first from then on.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::*;

/// The partitions: closed days, processed whole.
const DAYS: [u8; 3] = [22, 23, 24];
/// The data-path specs the pipeline moves between.
const SPECS: usize = 3;
/// Rounds of reconciles, finished Jobs and time passing that must bring every partition to a
/// terminal state.
const SETTLING_ROUNDS: usize = 40;

/// One thing that happens. Indices pick a partition or a Job modulo how many there are.
#[derive(Clone, Debug)]
enum Step {
    /// The data-path spec becomes the `n`-th (an earlier one is a rollback).
    ChangeSpec(usize),
    AddObject(usize),
    ReplaceObject(usize),
    DeleteObject(usize),
    /// A running Job commits what it lists now, and succeeds.
    Succeed(usize),
    Fail(usize),
    /// A running Job's pod is evicted and left behind.
    Evict(usize),
    /// A running Job's pod cannot pull its image.
    NeverStarts(usize),
    /// A Job disappears: removed after its TTL, or deleted by someone.
    Vanish(usize),
    /// Every Job being deleted is gone.
    StopsComplete,
    Reconcile,
    /// A reconcile writes its status and the operator stops before creating its Jobs.
    RestartAfterStatusWrite,
    /// The status is lost (restored from an old backup, removed by hand).
    LoseStatus,
    Reprocess(usize),
    RemoveReprocess,
    Retry,
    Wait(i64),
}

fn step() -> impl Strategy<Value = Step> {
    let index = 0..8usize;
    prop_oneof![
        2 => (0..SPECS).prop_map(Step::ChangeSpec),
        2 => index.clone().prop_map(Step::AddObject),
        1 => index.clone().prop_map(Step::ReplaceObject),
        1 => index.clone().prop_map(Step::DeleteObject),
        4 => index.clone().prop_map(Step::Succeed),
        2 => index.clone().prop_map(Step::Fail),
        1 => index.clone().prop_map(Step::Evict),
        1 => index.clone().prop_map(Step::NeverStarts),
        2 => index.clone().prop_map(Step::Vanish),
        1 => Just(Step::StopsComplete),
        8 => Just(Step::Reconcile),
        1 => Just(Step::RestartAfterStatusWrite),
        1 => Just(Step::LoseStatus),
        1 => index.prop_map(Step::Reprocess),
        1 => Just(Step::RemoveReprocess),
        1 => Just(Step::Retry),
        2 => prop_oneof![Just(30i64), Just(300), Just(3600)].prop_map(Step::Wait),
    ]
}

/// The pipeline's world: its spec, its source objects, its Jobs, its sink, its status.
struct World {
    spec: EventPipelineSpec,
    spec_version: usize,
    generation: i64,
    objects: [BTreeSet<u32>; DAYS.len()],
    next_object: u32,
    jobs: Vec<ObservedJob>,
    /// What each partition's manifest commits: (spec hash, input fingerprint).
    sink: HashMap<String, (String, String)>,
    status: EventPipelineStatus,
    now: Timestamp,
    retry: Option<String>,
    retries: u32,
    reprocess: Option<String>,
}

impl World {
    fn new() -> Self {
        let mut spec = Scenario::new().spec;
        spec.execution.start_timeout_seconds = 300;
        spec.execution.max_disruptions = 3;
        Self {
            spec,
            spec_version: 0,
            generation: 1,
            objects: std::array::from_fn(|_| BTreeSet::from([0])),
            next_object: 1,
            jobs: Vec::new(),
            sink: HashMap::new(),
            status: EventPipelineStatus::default(),
            now: at(0),
            retry: None,
            retries: 0,
            reprocess: None,
        }
    }

    fn spec_hash(&self) -> String {
        format!("spec-{}", self.spec_version)
    }

    fn fingerprint(&self, index: usize) -> Option<String> {
        let objects = &self.objects[index];
        (!objects.is_empty()).then(|| format!("objects{objects:?}"))
    }

    fn partition_index(&self, partition: &str) -> usize {
        DAYS.iter().position(|d| day(*d).to_string() == partition).expect("a modelled partition")
    }

    fn active(&self) -> Vec<usize> {
        (0..self.jobs.len()).filter(|i| self.jobs[*i].outcome == JobOutcome::Running).collect()
    }

    fn apply(&mut self, step: &Step) {
        match *step {
            Step::ChangeSpec(version) => {
                if version != self.spec_version {
                    self.spec_version = version;
                    self.generation += 1;
                }
            }
            Step::AddObject(p) => {
                self.objects[p % DAYS.len()].insert(self.next_object);
                self.next_object += 1;
            }
            Step::ReplaceObject(p) => {
                let objects = &mut self.objects[p % DAYS.len()];
                if let Some(last) = objects.pop_last() {
                    objects.insert(last + 1000);
                }
            }
            Step::DeleteObject(p) => {
                self.objects[p % DAYS.len()].pop_last();
            }
            Step::Succeed(i) => self.on_active(i, |world, job| world.succeed(job)),
            Step::Fail(i) => self.on_active(i, |world, job| world.jobs[job].outcome = JobOutcome::Failed("boom".into())),
            Step::Evict(i) => self.on_active(i, |world, job| world.jobs[job].disruptions.push("pod: The node was low on resource: memory.".into())),
            Step::NeverStarts(i) => {
                let now = self.now;
                self.on_active(i, |world, job| {
                    let job = &mut world.jobs[job];
                    job.waiting.get_or_insert(Waiting { since: now, problem: Some("ErrImagePull: no such image".into()), pod: Some("p".into()) });
                });
            }
            Step::Vanish(i) => {
                if !self.jobs.is_empty() {
                    let index = i % self.jobs.len();
                    self.jobs.remove(index);
                }
            }
            Step::StopsComplete => self.jobs.retain(|job| !job.stopping),
            Step::Reconcile => self.reconcile(true),
            Step::RestartAfterStatusWrite => self.reconcile(false),
            Step::LoseStatus => self.status = EventPipelineStatus::default(),
            Step::Reprocess(p) => self.reprocess = Some(day(DAYS[p % DAYS.len()]).to_string()),
            Step::RemoveReprocess => self.reprocess = None,
            Step::Retry => {
                self.retries += 1;
                self.retry = Some(self.retries.to_string());
            }
            Step::Wait(seconds) => self.now += SignedDuration::from_secs(seconds),
        }
    }

    fn on_active(&mut self, index: usize, change: impl FnOnce(&mut Self, usize)) {
        let active = self.active();
        if !active.is_empty() {
            change(self, active[index % active.len()]);
        }
    }

    /// The transformer lists the partition now and commits what it finds, with its Job's spec.
    fn succeed(&mut self, job: usize) {
        let partition = self.partition_index(&self.jobs[job].partition);
        let Some(fingerprint) = self.fingerprint(partition) else {
            self.jobs[job].outcome = JobOutcome::Failed("no input objects".into());
            return;
        };
        let spec_hash = self.jobs[job].spec_hash.clone();
        self.sink.insert(self.jobs[job].partition.clone(), (spec_hash.clone(), fingerprint.clone()));
        let report = Summary { input_fingerprint: fingerprint, spec_hash, ..summary(4) };
        let job = &mut self.jobs[job];
        job.waiting = None;
        job.outcome = JobOutcome::Succeeded(Some(report));
    }

    fn manifest(&self, partition: &str) -> Committed {
        match self.sink.get(partition) {
            Some((spec_hash, fingerprint)) => {
                Committed::Output(Summary { input_fingerprint: fingerprint.clone(), spec_hash: spec_hash.clone(), skipped: true, ..summary(4) })
            }
            None => Committed::Nothing,
        }
    }

    /// One reconcile: plan, read the manifests it asks for, plan again; write the status; then,
    /// unless the operator stops right there, create the launched Jobs (an existing name is
    /// `AlreadyExists`) and stop those the plan stops.
    fn reconcile(&mut self, completes: bool) {
        let spec_hash = self.spec_hash();
        let mode = Mode::full("the SQL aggregates rows");
        let partitions: Vec<ObservedPartition> = (0..DAYS.len())
            .filter_map(|index| {
                let fingerprint = self.fingerprint(index)?;
                Some(ObservedPartition { key: day(DAYS[index]), fingerprint, modified: vec![at(-86400)], settled: None })
            })
            .collect();
        let observation = |committed| Observation {
            now: self.now,
            pipeline: "settings",
            uid: UID,
            generation: Some(self.generation),
            deleting: false,
            spec: &self.spec,
            spec_hash: &spec_hash,
            mode: &mode,
            previous: &self.status,
            partitions: &partitions,
            looked_in: "s3://b/events/",
            jobs: &self.jobs,
            vacuums: &[],
            committed,
            requests: Requests { retry: self.retry.as_deref(), reprocess: self.reprocess.as_deref() },
            unavailable: None,
        };
        let none = HashMap::new();
        let first = plan(&observation(&none));
        let read: HashMap<String, Committed> = first.unread_manifests.iter().map(|p| (p.clone(), self.manifest(p))).collect();
        let plan = if first.unread_manifests.is_empty() { first } else { plan(&observation(&read)) };
        assert!(plan.unread_manifests.is_empty(), "one round of reads suffices");
        self.status = plan.status;
        if !completes {
            return;
        }
        for launch in &plan.launches {
            if !self.jobs.iter().any(|job| job.name == launch.job) {
                self.jobs.push(created(launch));
            }
        }
        for stop in plan.stops {
            if let Some(job) = self.jobs.iter_mut().find(|job| job.name == stop.job) {
                job.stopping = true;
            }
        }
    }

    /// The two invariants that hold after every step.
    fn check(&self, history: &[Step]) {
        for entry in self.status.partitions.iter().filter(|entry| entry.state == PartitionState::Succeeded) {
            let claimed = (entry.spec_hash.clone(), entry.fingerprint.clone());
            assert_eq!(self.sink.get(&entry.partition), Some(&claimed), "{} is claimed committed after {history:?}", entry.partition);
        }
        for (index, partition) in DAYS.iter().map(|d| day(*d).to_string()).enumerate() {
            let running = self.jobs.iter().filter(|job| job.partition == partition && job.outcome == JobOutcome::Running).count();
            assert!(running <= 1, "{running} Jobs run for partition {index} after {history:?}");
        }
    }

    /// No more events: Jobs being deleted go, running Jobs whose pod started succeed, time
    /// passes past every backoff and start timeout, and the operator reconciles.
    fn settle(&mut self, history: &mut Vec<Step>) {
        self.reprocess = None;
        for _ in 0..SETTLING_ROUNDS {
            self.record(Step::StopsComplete, history);
            self.record(Step::Reconcile, history);
            while let Some(started) = self.active().iter().position(|job| self.jobs[*job].waiting.is_none()) {
                self.record(Step::Succeed(started), history);
            }
            self.record(Step::Wait(3600), history);
            self.record(Step::Reconcile, history);
        }
    }

    fn record(&mut self, step: Step, history: &mut Vec<Step>) {
        self.apply(&step);
        history.push(step);
        self.check(history);
    }
}

proptest! {
    #![proptest_config(Config { cases: 4000, rng_seed: RngSeed::Fixed(0x0e7e_a7b1_9e21), ..Config::default() })]

    #[test]
    fn the_status_claims_only_what_the_sink_commits(steps in prop::collection::vec(step(), 1..48)) {
        let mut world = World::new();
        let mut history = Vec::new();
        for step in steps {
            world.record(step, &mut history);
        }
        world.settle(&mut history);
        for (index, partition) in DAYS.iter().map(|d| day(*d).to_string()).enumerate() {
            let Some(entry) = world.status.partitions.iter().find(|entry| entry.partition == partition) else {
                assert!(world.fingerprint(index).is_none(), "{partition} has objects but no entry after {history:?}");
                continue;
            };
            assert!(
                matches!(entry.state, PartitionState::Succeeded | PartitionState::Failed),
                "{partition} is {:?} once everything settled, after {history:?}",
                entry.state
            );
        }
    }
}
