//! Event-time partitions (see [`crate::spec::EventTimeSpec`]): which output partition an event
//! time belongs to, which source directories and objects an output partition reads, and what
//! becomes of each row a run reads. Pure functions, no I/O: the operator composes an output's
//! inputs — and so its fingerprint — with the same [`EventTime::compose`] as the run.
//!
//! The rule, for an object of source directory P last modified at m: output O reads it when O is
//! P, or P lies in O's read range (O-1, and the directories after O that start before O's end plus
//! the lateness) and m is no later than O's end plus the lateness. A row of the object with
//! event time t belongs to O' = the partition of t. Each run that reads the object keeps the row
//! if O' is the run's partition and otherwise counts it as routed — except the run of P itself,
//! which rejects it when O' does not read the object. So each row is kept or rejected exactly
//! once, and whether a row is late depends only on the object, never on when a run happened.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::error::{Error, Result};
use crate::layout::{Layout, PartitionKey};
use crate::spec::{ColumnType, SourceSpec};
use crate::store::discovery::{DiscoveredPartition, Partitions};

/// The longest lateness accepted.
const MAX_LATENESS: Duration = Duration::days(7);

/// A pipeline's event-time partitioning, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct EventTime {
    /// The `timestamp` column holding the event time.
    pub column: String,
    lateness: Duration,
    zone: Tz,
    hourly: bool,
}

/// What a run does with a row it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fate {
    /// The row's event time lies in the run's partition: the SQL sees it.
    Kept,
    /// Another partition keeps it, or rejects it: this run counts it and leaves it.
    Routed,
    /// Its partition does not read its object (the object arrived later than the lateness
    /// allows): rejected by the run of its directory.
    Late,
    /// Its event time lies more than one partition after its directory: rejected by the run of
    /// its directory.
    Early,
    /// Its event time is empty: rejected by the run of its directory.
    NoEventTime,
}

impl Fate {
    /// The fates of rows that go to the rejected-rows location.
    pub const REJECTED: [Fate; 3] = [Self::Late, Self::Early, Self::NoEventTime];

    /// The reason written with a rejected row, and its name in counts.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::Routed => "routed",
            Self::Late => "late",
            Self::Early => "early",
            Self::NoEventTime => "no event time",
        }
    }
}

/// The event times a run keeps or routes for the objects of one group (see [`EventTime::fates`]):
/// rows of the run's partition are kept; rows in `routed` (when the group's objects are the run's
/// own) are routed, those before it late, those from `early_from` on early; every row of another
/// directory's object that is not kept is routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FateBounds {
    /// The run's partition: start and end.
    pub kept: (DateTime<Utc>, DateTime<Utc>),
    /// For the run's own objects: the event times some partition reading the object keeps.
    /// `None` for another directory's objects: their directory's run rejects what nobody keeps.
    pub routed: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Event times from here on lie more than one partition after the directory.
    pub early_from: DateTime<Utc>,
}

impl FateBounds {
    /// The fate of a row with event time `at`.
    pub fn fate(&self, at: Option<DateTime<Utc>>) -> Fate {
        let within = |(start, end): (DateTime<Utc>, DateTime<Utc>), at| start <= at && at < end;
        match (at, self.routed) {
            (Some(at), _) if within(self.kept, at) => Fate::Kept,
            (_, None) => Fate::Routed,
            (None, Some(_)) => Fate::NoEventTime,
            (Some(at), Some(routed)) if within(routed, at) => Fate::Routed,
            (Some(at), Some(_)) if at >= self.early_from => Fate::Early,
            (Some(_), Some(_)) => Fate::Late,
        }
    }
}

impl EventTime {
    /// The source's event-time partitioning, or `None` without `source.eventTime`. The column must
    /// be a declared `timestamp` column; the lateness at most 7 days.
    pub fn of(source: &SourceSpec, layout: &Layout) -> Result<Option<Self>> {
        let Some(spec) = &source.event_time else { return Ok(None) };
        let invalid = |message: String| Err(Error::Config(format!("source.eventTime.{message}")));
        match source.schema.iter().find(|column| column.name == spec.column) {
            Some(column) if column.data_type == ColumnType::Timestamp => {}
            Some(_) => return invalid(format!("column {:?} must be a timestamp column of source.schema", spec.column)),
            None => return invalid(format!("column {:?} is not a column of source.schema", spec.column)),
        }
        let lateness = match spec.lateness() {
            Some(lateness) if lateness <= MAX_LATENESS => lateness,
            _ => return invalid(format!("lateness {:?} is not a duration such as 30m, 2h or 1d of at most 7d", spec.lateness)),
        };
        let zone = match &spec.time_zone {
            Some(name) => name.parse().map_err(|_| Error::Config(format!("time zone {name:?} is not an IANA time zone such as Europe/Berlin")))?,
            None => Tz::UTC,
        };
        Ok(Some(Self { column: spec.column.clone(), lateness, zone, hourly: layout.is_hourly() }))
    }

    /// How long after a partition's end its rows may still arrive.
    pub fn lateness(&self) -> Duration {
        self.lateness
    }

    /// The partition an instant lies in: its day, or hour, in the time zone.
    pub fn partition_of(&self, at: DateTime<Utc>) -> PartitionKey {
        let local = at.with_timezone(&self.zone).naive_local();
        key_of(local, self.hourly)
    }

    /// When a partition starts: the first instant of its local day or hour (a local time a
    /// daylight-saving change skips starts when it would have ended).
    pub fn start(&self, key: &PartitionKey) -> DateTime<Utc> {
        let local = local_start(key);
        self.zone
            .from_local_datetime(&local)
            .earliest()
            .or_else(|| self.zone.from_local_datetime(&(local + Duration::hours(1))).earliest())
            .map_or_else(|| local.and_utc(), |at| at.to_utc())
    }

    /// When a partition ends: the start of the next.
    pub fn end(&self, key: &PartitionKey) -> DateTime<Utc> {
        self.start(&self.step(key, 1))
    }

    /// The partition `n` days (or hours) after `key`; before it for negative `n`.
    pub fn step(&self, key: &PartitionKey, n: i64) -> PartitionKey {
        let length = if self.hourly { Duration::hours(n) } else { Duration::days(n) };
        key_of(local_start(key) + length, self.hourly)
    }

    /// The source directories output partition `output` reads, oldest first: the one before it,
    /// its own, and those after it that start before its end plus the lateness.
    pub fn reads(&self, output: &PartitionKey) -> Vec<PartitionKey> {
        let last = self.end(output) + self.lateness;
        let mut read = vec![self.step(output, -1), *output];
        let mut next = self.step(output, 1);
        while self.start(&next) <= last {
            read.push(next);
            next = self.step(&next, 1);
        }
        read
    }

    /// The output partitions whose read range holds source directory `source`, oldest first.
    pub fn readers(&self, source: &PartitionKey) -> Vec<PartitionKey> {
        let periods = if self.hourly { self.lateness.num_hours() + 2 } else { self.lateness.num_days() + 2 };
        (-periods..=1).map(|n| self.step(source, n)).filter(|output| self.reads(output).contains(source)).collect()
    }

    /// Whether output partition `output` reads an object of directory `source` last modified at
    /// `modified`.
    pub fn includes(&self, output: &PartitionKey, source: &PartitionKey, modified: DateTime<Utc>) -> bool {
        output == source || (modified <= self.end(output) + self.lateness && self.reads(output).contains(source))
    }

    /// The output partitions of the source's directories: each holds the objects it reads (see
    /// the module doc). An output exists when it reads at least one object.
    pub fn compose(&self, sources: &Partitions) -> Partitions {
        let mut outputs: BTreeMap<PartitionKey, DiscoveredPartition> = BTreeMap::new();
        for (source, found) in sources {
            for output in self.readers(source) {
                for (input, modified) in found.inputs.iter().zip(&found.modified) {
                    if self.includes(&output, source, *modified) {
                        let composed = outputs.entry(output).or_insert_with(|| DiscoveredPartition { inputs: Vec::new(), modified: Vec::new() });
                        composed.inputs.push(input.clone());
                        composed.modified.push(*modified);
                    }
                }
            }
        }
        outputs
    }

    /// What the run of `output` does with the rows of an object of directory `source` last
    /// modified at `modified`, by their event time.
    pub fn fates(&self, output: &PartitionKey, source: &PartitionKey, modified: DateTime<Utc>) -> FateBounds {
        let kept = (self.start(output), self.end(output));
        let early_from = self.end(&self.step(source, 1));
        if output != source {
            return FateBounds { kept, routed: None, early_from };
        }
        // The partitions reading the object form one run of consecutive partitions around it.
        let readers: Vec<PartitionKey> = self.readers(source).into_iter().filter(|reader| self.includes(reader, source, modified)).collect();
        let (first, last) = (readers.first().unwrap_or(source), readers.last().unwrap_or(source));
        FateBounds { kept, routed: Some((self.start(first), self.end(last))), early_from }
    }
}

/// The partition of a local time.
fn key_of(local: NaiveDateTime, hourly: bool) -> PartitionKey {
    use chrono::Datelike;
    let date = local.date();
    PartitionKey {
        year: u16::try_from(date.year()).unwrap_or(0),
        month: date.month() as u8,
        day: date.day() as u8,
        hour: hourly.then(|| local.hour() as u8),
    }
}

/// A partition's first local time.
fn local_start(key: &PartitionKey) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(key.year.into(), key.month.into(), key.day.into())
        .and_then(|date| date.and_hms_opt(key.hour.unwrap_or(0).into(), 0, 0))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
