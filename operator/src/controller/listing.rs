//! Listing a pipeline's source: the window's prefixes (a day's or a month's directory, see
//! [`Window::listing_prefixes`]), each kept between reconciles. A prefix with work left, or one
//! that covers today or yesterday, is listed again every poll interval; one whose days ended more
//! than a day ago and whose partitions are all committed only every `closedRelistSeconds`, so that
//! a long window costs what its recent days cost. Job events and the operator's own status writes
//! never list: they reuse what was kept. A failed listing is kept too, for a backoff that doubles.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eventpipe_transformer::event_time::EventTime;
use eventpipe_transformer::layout::PartitionKey;
use eventpipe_transformer::store::discovery::{self, DiscoveredPartition};
use eventpipe_transformer::commit::fingerprint::fingerprint;
use eventpipe_transformer::validate::CheckedPipeline;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::ToSpan;
use k8s_openapi::jiff::civil::Date;
use kube::{Client, ResourceExt};

use crate::crd::EventPipeline;

use super::observe::{Blocked, Caches};
use super::plan::{ObservedPartition, Settled};
use super::window::{Prefix, Window};

/// The partitions in the schedule's window, oldest first.
pub struct Listed {
    /// The partitions.
    pub partitions: Vec<ObservedPartition>,
    /// Prefixes listed in S3 now (each one LIST request per 1,000 objects).
    pub prefixes_listed: usize,
    /// Where and for which days the source was looked at, for messages.
    pub looked_in: String,
}

/// How often a prefix is listed: while it has work left or covers recent days, and once its days
/// are closed and its partitions committed.
#[derive(Clone, Copy)]
struct Intervals {
    poll: Duration,
    closed_relist: Duration,
}

/// What was listed of each pipeline's source, by pipeline UID.
#[derive(Default)]
pub struct Listings {
    kept: Mutex<HashMap<String, Listing>>,
    failed: Mutex<HashMap<String, FailedListing>>,
}

/// What was listed of one pipeline's source, by prefix; for an event-time pipeline also the
/// output partitions composed from them, until a prefix is listed again or leaves the window.
struct Listing {
    generation: Option<i64>,
    prefixes: HashMap<String, PrefixListing>,
    composed: Option<Vec<ObservedPartition>>,
}

impl Listing {
    fn new(generation: Option<i64>) -> Self {
        Self { generation, prefixes: HashMap::new(), composed: None }
    }
}

/// One prefix's listing: when, what it held, and whether those partitions were all committed at
/// the last plan.
struct PrefixListing {
    at: Instant,
    found: Found,
    settled: bool,
}

/// What one listing of a prefix found: its partitions as the planner sees them or, for an
/// event-time pipeline, its objects, which the output partitions are composed from, with the time
/// its settled objects were modified at or before (the listing's time minus the grace period).
enum Found {
    Partitions(Vec<ObservedPartition>),
    Objects { partitions: discovery::Partitions, settled_before: Timestamp },
}

impl Found {
    fn keys(&self) -> Vec<PartitionKey> {
        match self {
            Found::Partitions(partitions) => partitions.iter().map(|partition| partition.key).collect(),
            Found::Objects { partitions, .. } => partitions.keys().copied().collect(),
        }
    }
}

/// A listing that failed: why, how many times in a row, and until when it is not tried again.
struct FailedListing {
    generation: Option<i64>,
    failures: u32,
    until: Instant,
    blocked: Blocked,
}

impl Listings {
    /// Drops what was listed for a pipeline, so that its next reconcile lists every prefix.
    pub fn forget(&self, uid: &str) {
        self.kept.lock().expect("not poisoned").remove(uid);
        self.failed.lock().expect("not poisoned").remove(uid);
    }

    /// Notes which partitions the last plan left unfinished (not committed for their current
    /// inputs and spec): a closed prefix without any is listed only every `closedRelistSeconds`.
    pub fn note_unfinished(&self, uid: &str, unfinished: &BTreeSet<String>) {
        if let Some(listing) = self.kept.lock().expect("not poisoned").get_mut(uid) {
            for prefix in listing.prefixes.values_mut() {
                prefix.settled = prefix.found.keys().iter().all(|key| !unfinished.contains(&key.to_string()));
            }
        }
    }

    /// Keeps a failed listing of this generation of a pipeline until its backoff ends, and
    /// returns that backoff: it doubles with every failure in a row.
    pub(super) fn failed(&self, uid: &str, generation: Option<i64>, blocked: Blocked) -> Duration {
        let mut failed = self.failed.lock().expect("not poisoned");
        let failures = failed.get(uid).filter(|earlier| earlier.generation == generation).map_or(0, |earlier| earlier.failures) + 1;
        let backoff = super::retry_delay(failures);
        failed.insert(uid.to_string(), FailedListing { generation, failures, until: Instant::now() + backoff, blocked });
        backoff
    }

    /// The failure of the last listing of this generation of a pipeline while its backoff lasts.
    pub(super) fn kept_failure(&self, uid: &str, generation: Option<i64>) -> Option<Blocked> {
        let failed = self.failed.lock().expect("not poisoned");
        failed.get(uid).filter(|failed| failed.generation == generation && Instant::now() < failed.until).map(|failed| failed.blocked.clone())
    }

    /// The prefixes whose kept listing is too old, or missing, and those holding a key that
    /// notifications announced.
    fn due<'a>(&self, uid: &str, generation: Option<i64>, prefixes: &'a [Prefix], today: Date, every: Intervals, announced: &BTreeSet<String>) -> Vec<&'a Prefix> {
        let kept = self.kept.lock().expect("not poisoned");
        let listing = kept.get(uid).filter(|listing| listing.generation == generation);
        prefixes
            .iter()
            .filter(|prefix| {
                if announced.iter().any(|key| prefix.paths.iter().any(|path| key.starts_with(path.as_str()))) {
                    return true;
                }
                let Some(kept) = listing.and_then(|listing| listing.prefixes.get(prefix.name())) else { return true };
                let every = if kept.settled && prefix.closed(today) { every.closed_relist } else { every.poll };
                // A requeue after exactly one interval must list: allow for timer jitter.
                kept.at.elapsed() >= every.mul_f64(0.9)
            })
            .collect()
    }

    /// Keeps what was just listed, drops prefixes that left the window, and returns the
    /// partitions of every prefix kept, oldest first: the source's, or with event time the
    /// output partitions composed from them (see [`EventTime::compose`]).
    fn keep(&self, uid: &str, generation: Option<i64>, prefixes: &[Prefix], listed: Vec<(String, Found)>, event_time: Option<&EventTime>) -> Vec<ObservedPartition> {
        let mut kept = self.kept.lock().expect("not poisoned");
        let listing = kept.entry(uid.to_string()).or_insert_with(|| Listing::new(generation));
        if listing.generation != generation {
            *listing = Listing::new(generation);
        }
        let count = listing.prefixes.len();
        let changed = !listed.is_empty();
        for (path, found) in listed {
            listing.prefixes.insert(path, PrefixListing { at: Instant::now(), found, settled: false });
        }
        listing.prefixes.retain(|name, _| prefixes.iter().any(|prefix| prefix.name() == name));
        if changed || listing.prefixes.len() != count {
            listing.composed = None;
        }
        let mut partitions: Vec<ObservedPartition> = match event_time {
            Some(event_time) => listing.composed.get_or_insert_with(|| compose(event_time, listing.prefixes.values())).clone(),
            None => listing
                .prefixes
                .values()
                .flat_map(|prefix| match &prefix.found {
                    Found::Partitions(partitions) => partitions.clone(),
                    Found::Objects { .. } => Vec::new(),
                })
                .collect(),
        };
        partitions.sort_by_key(|partition| partition.key);
        partitions
    }
}

/// The output partitions of an event-time pipeline, composed from the objects of its listed
/// prefixes. An output's objects count as settled before the oldest cutoff of the listings of
/// the directories it reads.
fn compose<'a>(event_time: &EventTime, prefixes: impl Iterator<Item = &'a PrefixListing>) -> Vec<ObservedPartition> {
    let mut sources = discovery::Partitions::new();
    let mut settled_before = BTreeMap::new();
    for prefix in prefixes {
        if let Found::Objects { partitions, settled_before: cutoff } = &prefix.found {
            sources.extend(partitions.clone());
            settled_before.extend(partitions.keys().map(|key| (*key, *cutoff)));
        }
    }
    event_time
        .compose(&sources)
        .into_iter()
        .map(|(key, found)| {
            let cutoff = event_time.reads(&key).iter().filter_map(|source| settled_before.get(source)).min().copied().unwrap_or_else(Timestamp::now);
            observed(key, &found, cutoff)
        })
        .collect()
}

/// What the planner sees of a partition's objects, those modified at or before `settled_before`
/// counting as settled.
fn observed(key: PartitionKey, found: &DiscoveredPartition, settled_before: Timestamp) -> ObservedPartition {
    let timestamp = |at: chrono::DateTime<chrono::Utc>| Timestamp::from_millisecond(at.timestamp_millis()).unwrap_or(settled_before);
    let cutoff = chrono::DateTime::from_timestamp_millis(settled_before.as_millisecond()).unwrap_or_default();
    let mut modified: Vec<Timestamp> = found.modified.iter().copied().map(timestamp).collect();
    modified.sort();
    ObservedPartition {
        key,
        fingerprint: fingerprint(&found.inputs),
        modified,
        settled: found.settled(cutoff).map(|settled| Settled { fingerprint: fingerprint(&settled.inputs), before: settled_before }),
    }
}

/// Lists the prefixes of the schedule's window that are due (see the module doc), and at once
/// those holding keys that notifications `announced`; returns every partition of the window. A
/// failed listing is not tried again before its backoff ends.
pub async fn partitions(
    client: &Client,
    caches: &Caches,
    pipeline: &EventPipeline,
    checked: &CheckedPipeline,
    now: Timestamp,
    announced: &BTreeSet<String>,
) -> Result<Listed, Blocked> {
    let uid = pipeline.uid().unwrap_or_default();
    let generation = pipeline.metadata.generation;
    let listings = &caches.listings;
    if let Some(blocked) = listings.kept_failure(&uid, generation) {
        return Err(blocked);
    }
    let schedule = &pipeline.spec.schedule;
    let window = Window::of(schedule, now).map_err(Blocked::InvalidSpec)?;
    let event_time = checked.event_time.as_ref();
    // An event-time day reads the directory of the day before it, and is open for its lateness.
    let lateness_days = event_time.map_or(0, |event_time| event_time.lateness().num_days() + 1);
    let prefixes = window.reaching_back(i64::from(event_time.is_some())).listing_prefixes(&checked.layout);
    let today = window.last.checked_sub(lateness_days.days()).unwrap_or(window.last);
    let every = Intervals { poll: pipeline.spec.listing_interval(), closed_relist: Duration::from_secs(schedule.closed_relist_seconds.into()) };
    let due = listings.due(&uid, generation, &prefixes, today, every, announced);
    let listed = if due.is_empty() {
        Vec::new()
    } else {
        match list(client, caches, pipeline, checked, &due, now).await {
            Ok(listed) => listed,
            Err(blocked) => {
                if matches!(blocked, Blocked::SourceUnavailable(_)) {
                    listings.failed(&uid, generation, blocked.clone());
                    // Rotated credentials are one cause: the next try reads the Secret again.
                    caches.s3.forget(&uid);
                }
                return Err(blocked);
            }
        }
    };
    let partitions = listings.keep(&uid, generation, &prefixes, listed, event_time).into_iter().filter(|partition| window.contains(&partition.key)).collect();
    Ok(Listed { partitions, prefixes_listed: due.len(), looked_in: window.describe(&checked.source.url(), &checked.layout) })
}

/// Lists each of these prefixes.
async fn list(
    client: &Client,
    caches: &Caches,
    pipeline: &EventPipeline,
    checked: &CheckedPipeline,
    prefixes: &[&Prefix],
    now: Timestamp,
) -> Result<Vec<(String, Found)>, Blocked> {
    let source = caches.s3.open(client, pipeline, &checked.source).await?;
    let grace = i64::from(pipeline.spec.schedule.grace_period_seconds) * 1000;
    let settled_before = Timestamp::from_millisecond(now.as_millisecond() - grace).unwrap_or(now);
    let mut listed = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        // Every spelling of a directory at once: a partition written in both is one partition.
        let partitions = discovery::discover_below(&source, &checked.layout, &prefix.paths)
            .await
            .map_err(|e| Blocked::SourceUnavailable(format!("listing {}: {}", checked.source.url(), super::s3::describe(pipeline, e))))?;
        let found = match checked.event_time {
            Some(_) => Found::Objects { partitions, settled_before },
            None => Found::Partitions(partitions.into_iter().map(|(key, found)| observed(key, &found, settled_before)).collect()),
        };
        listed.push((prefix.name().to_string(), found));
    }
    Ok(listed)
}

#[cfg(test)]
mod tests {
    use eventpipe_transformer::layout::PartitionKey;

    use super::*;

    #[test]
    fn a_failed_listing_is_kept_for_a_backoff_that_doubles() {
        let listings = Listings::default();
        let unreachable = Blocked::SourceUnavailable("listing s3://b/events/: connection refused".into());
        assert_eq!(listings.kept_failure("uid", Some(1)), None);
        assert_eq!(listings.failed("uid", Some(1), unreachable.clone()), Duration::from_secs(5));
        assert_eq!(listings.kept_failure("uid", Some(1)), Some(unreachable.clone()), "Job events do not list again");
        assert_eq!(listings.failed("uid", Some(1), unreachable.clone()), Duration::from_secs(10));
        assert_eq!(listings.kept_failure("uid", Some(2)), None, "a new generation lists at once");
        listings.forget("uid");
        assert_eq!(listings.kept_failure("uid", Some(1)), None);
    }

    #[test]
    fn a_closed_prefix_whose_partitions_are_committed_is_listed_less_often() {
        let listings = Listings::default();
        let today: Date = "2026-11-24".parse().unwrap();
        let october = Prefix { paths: vec!["year=2026/month=10/".into()], last_day: "2026-10-31".parse().unwrap() };
        let yesterday = Prefix { paths: vec!["year=2026/month=11/day=23/".into()], last_day: "2026-11-23".parse().unwrap() };
        let prefixes = [october.clone(), yesterday.clone()];
        let third = PartitionKey { year: 2026, month: 10, day: 3, hour: None };
        let settled_before: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let found = |partitions: Vec<(PartitionKey, DiscoveredPartition)>| {
            Found::Partitions(partitions.into_iter().map(|(key, found)| observed(key, &found, settled_before)).collect())
        };
        let october_listing = found(vec![(third, object("year=2026/month=10/day=03/a.csv", "2026-10-03T10:00:00Z"))]);
        let listed = listings.keep("uid", Some(1), &prefixes, vec![(october.name().to_string(), october_listing), (yesterday.name().to_string(), found(Vec::new()))], None);
        assert_eq!(listed.iter().map(|partition| (partition.key, partition.settled.is_some())).collect::<Vec<_>>(), [(third, true)]);
        let every = Intervals { poll: Duration::ZERO, closed_relist: Duration::from_secs(3600) };
        let due = |generation| listings.due("uid", generation, &prefixes, today, every, &BTreeSet::new()).into_iter().map(|p| p.name().to_string()).collect::<Vec<_>>();
        assert_eq!(due(Some(1)).len(), 2, "not known to be committed yet");
        listings.note_unfinished("uid", &BTreeSet::new());
        assert_eq!(due(Some(1)), [yesterday.name()], "yesterday may still take late files: listed every poll");
        listings.note_unfinished("uid", &BTreeSet::from([third.to_string()]));
        assert_eq!(due(Some(1)).len(), 2, "work left in October");
        assert_eq!(due(Some(2)).len(), 2, "a new generation lists everything");
        listings.note_unfinished("uid", &BTreeSet::new());
        let announced = BTreeSet::from(["year=2026/month=10/day=03/late.csv".to_string()]);
        let hourly = Intervals { poll: Duration::from_secs(3600), ..every };
        let due_now = listings.due("uid", Some(1), &prefixes, today, hourly, &announced);
        assert_eq!(due_now.iter().map(|p| p.name()).collect::<Vec<_>>(), [october.name()], "an announced object's prefix is listed at once");
    }

    fn object(path: &str, modified: &str) -> DiscoveredPartition {
        let input = eventpipe_transformer::task::InputObject { path: path.into(), size: 1, etag: Some(path.into()), modified: None };
        DiscoveredPartition { inputs: vec![input], modified: vec![modified.parse().unwrap()] }
    }

    /// With event time the planner sees output days, each with the objects it reads: the 24th
    /// takes the 25th's object that arrived within the lateness, and its fingerprint is the one
    /// the run commits for the same objects.
    #[test]
    fn event_time_days_are_composed_from_the_directories_they_read() {
        let listings = Listings::default();
        let day = |day: u8| PartitionKey { year: 2026, month: 11, day, hour: None };
        let prefix = |day: u8| Prefix { paths: vec![format!("year=2026/month=11/day={day}/")], last_day: format!("2026-11-{day}").parse().unwrap() };
        let prefixes = [prefix(24), prefix(25)];
        let settled_before: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let found = |key: PartitionKey, object: DiscoveredPartition| Found::Objects { partitions: [(key, object)].into_iter().collect(), settled_before };
        let in_time = object("year=2026/month=11/day=25/a.csv", "2026-11-25T01:00:00Z");
        let listed = vec![
            (prefixes[0].name().to_string(), found(day(24), object("year=2026/month=11/day=24/b.csv", "2026-11-24T10:00:00Z"))),
            (prefixes[1].name().to_string(), found(day(25), in_time.clone())),
        ];
        let source = eventpipe_transformer::spec::SourceSpec {
            schema: vec![eventpipe_transformer::spec::Column {
                name: "ts".into(),
                data_type: eventpipe_transformer::spec::ColumnType::Timestamp,
                nullable: true,
                unit: None,
                format: None,
            }],
            event_time: Some(eventpipe_transformer::spec::EventTimeSpec { column: "ts".into(), lateness: "2h".into(), time_zone: None }),
            ..Default::default()
        };
        let layout = eventpipe_transformer::layout::Layout::parse(&source.layout).unwrap();
        let event_time = EventTime::of(&source, &layout).unwrap().unwrap();
        let observed = listings.keep("uid", Some(1), &prefixes, listed, Some(&event_time));
        assert_eq!(observed.iter().map(|partition| partition.key).collect::<Vec<_>>(), [day(24), day(25), day(26)], "the 26th reads the 25th's object for clocks ahead");
        let composed = event_time.compose(&[(day(24), object("year=2026/month=11/day=24/b.csv", "2026-11-24T10:00:00Z")), (day(25), in_time.clone())].into_iter().collect());
        assert_eq!(observed[0].fingerprint, fingerprint(&composed[&day(24)].inputs));
        assert_eq!(composed[&day(24)].inputs.len(), 2, "the 24th reads both objects");
        assert_eq!(observed[0].modified.len(), 2);
        let again = listings.keep("uid", Some(1), &prefixes, Vec::new(), Some(&event_time));
        assert_eq!(again, observed, "a reconcile that lists nothing sees the same days");
        let late = object("year=2026/month=11/day=25/c.csv", "2026-11-25T01:30:00Z");
        let mut both = in_time.clone();
        both.inputs.extend(late.inputs);
        both.modified.extend(late.modified);
        let relisted = listings.keep("uid", Some(1), &prefixes, vec![(prefixes[1].name().to_string(), found(day(25), both))], Some(&event_time));
        assert_eq!(relisted[0].modified.len(), 3, "an object that arrived within the lateness is the 24th's too");
        assert_ne!(relisted[0].fingerprint, observed[0].fingerprint);
    }
}
