//! One transformer run: one partition from CSV to committed Parquet.
//!
//! 1. The partition is listed; its input fingerprint and the spec hash identify the output. An
//!    event-time partition's objects come from the directories it reads (see
//!    [`crate::event_time`]); its `events` holds the rows whose event time falls in it, the others
//!    are counted as routed or rejected.
//! 2. If the committed manifest has both and every file it lists is there, nothing is converted.
//!    In append mode (see [`crate::query::mode`]), when the committed output was made with this spec
//!    from objects that are all still there unchanged, only the objects it lacks are converted:
//!    an increment.
//! 3. The run marks itself alive in the sink (see [`crate::commit::cleanup`]), reads the inputs — each at
//!    the version the listing saw — runs the SQL and writes Parquet.
//! 4. If the read fails on bad data, the inputs are read again with the bad rows set apart by the
//!    same decoder; they fail the run or are left out (and quarantined).
//! 5. The manifest is written (the commit point; an increment's adds to the previous one, on
//!    the condition that it is still the stored one), then every file no manifest lists and no
//!    live run may still commit is deleted — also after a skip, so files of a run killed
//!    mid-write do not stay visible.
//!
//! A compaction task (see [`crate::commit::compaction`]) reads no input: it rewrites what a Delta
//! sink holds for the partition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use datafusion::error::DataFusionError;
use datafusion::prelude::DataFrame;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use tokio::io::AsyncWriteExt;

use crate::csv::bad_rows::BadRows;
use crate::commit::cleanup::{Listing, RunMarker};
use crate::commit::compaction::{self, Compaction};
use crate::commit::delta::{Commit, DeltaSink, Joining};
use crate::csv::decoder::BadRowHandling;
use crate::query::engine::{Engine, is_gzip};
use crate::error::{Error, Result};
use crate::event_time::{EventTime, Fate};
use crate::query::engine::FateGroup;
use crate::query::fates::{self, FateCounts};
use crate::store::discovery::DiscoveredPartition;
use crate::commit::fingerprint::{fingerprint, spec_hash};
use crate::commit::manifest::{self, Manifest, ManifestColumn, ManifestFile};
use crate::query::mode::Mode;
use crate::spec::{BadRecordPolicy, SinkFormat};
use crate::store::{Opener, Retrying, SourceObject, Store};
use crate::task::{InputObject, RunRows, Summary, Task, new_run_id};
use crate::validate::CheckedPipeline;
use crate::csv::values::ColumnRule;
use crate::commit::writer::{self, Output};

/// Runs a task to completion and returns what it did.
pub async fn run(task: &Task) -> Result<Summary> {
    let started = Instant::now();
    let pipeline = &task.pipeline;
    let checked = crate::validate::check(pipeline)?;
    let mode = crate::validate::check_sql(pipeline, &checked.layout).await?;
    let opener = Opener::new(pipeline.s3.as_ref());
    let source = opener.open(&checked.source, Retrying::Patiently).await?;
    let sink = opener.open(&checked.sink, Retrying::Patiently).await?;
    if task.compact {
        let directory = sink.child(&task.partition.sink_path());
        return Ok(match compaction::compact(task, &sink).await? {
            Compaction::Done(manifest) => Summary { skipped: false, ..summary(&manifest, &sink, &directory, None, started) },
            Compaction::NotNeeded(manifest) => summary(&manifest, &sink, &directory, None, started),
        });
    }
    let rejected = opener.open(&checked.rejected, Retrying::Patiently).await?;
    let listed = list_partition(&source, &checked, task).await?;
    let inputs = listed.inputs.clone();
    let fingerprint = fingerprint(&inputs);
    if let Some(expected) = task.expected_fingerprint.as_deref().filter(|expected| **expected != fingerprint) {
        tracing::info!(partition = %task.partition, expected, listed = fingerprint, "the partition changed since it was planned; processing what is there now");
    }
    let spec_hash = spec_hash(pipeline);
    let directory = sink.child(&task.partition.sink_path());
    let partition = Partition { sink: &sink, rejected: &rejected, directory: &directory, rejected_directory: rejected.child(&task.partition.sink_path()) };

    // A Delta sink keeps the committed manifest in its files' tags; a Parquet sink in
    // `_manifest.json`.
    let mut delta = match pipeline.sink.format {
        SinkFormat::Delta => Some(DeltaSink::open(&sink).await?),
        SinkFormat::Parquet => None,
    };
    let previous = match &delta {
        Some(_) => None,
        None => manifest::read(&sink, &directory).await?,
    };
    let previous_manifest = match &delta {
        Some(table) => table.committed(&task.partition).await?,
        None => previous.as_ref().map(|committed| committed.manifest.clone()),
    };
    let mut whole = task.full || task.force;
    if let Some(committed) = previous_manifest.as_ref().filter(|m| m.matches(&fingerprint, &spec_hash) && !task.force) {
        let listing = Listing::sink(&sink, &directory).await?;
        let missing = committed.missing_files(&listing);
        if missing.is_empty() {
            match delta {
                Some(_) => partition.remove_uncommitted_quarantine(&listing, committed).await?,
                None => partition.remove_uncommitted(&listing, committed).await?,
            }
            return Ok(summary(committed, &sink, &directory, None, started));
        }
        tracing::warn!(partition = %task.partition, ?missing, "the committed manifest lists files that are gone; processing the partition again");
        whole = true;
    }

    let commit_mode = pipeline.sink.commit;
    // A store that answers the probe with 501 has answered: it is not asked again for minutes.
    manifest::check_conditional_writes(&opener.open(&checked.sink, Retrying::Briefly).await?, commit_mode).await?;
    let increment = previous_manifest
        .as_ref()
        .filter(|_| mode.is_append() && !whole)
        .and_then(|committed| committed.increment(&inputs, &spec_hash));
    let transaction = match &delta {
        Some(table) => table.transaction_version(&task.partition).await? + 1,
        None => 0,
    };
    let run_id = new_run_id();
    let to_convert = increment.as_deref().unwrap_or(&inputs);
    let marker = RunMarker::start(&sink, &directory, &run_id).await?;
    let run = Run { task, checked: &checked, mode: &mode, inputs: to_convert, listed: &listed, run_id: &run_id, source: &source, partition: &partition };
    let committed = async {
        let mut converted = within_time_limit(task.engine.timeout_seconds, run.convert()).await?;
        if delta.is_some() && converted.output.files.is_empty() {
            // A Delta table records what a partition holds in its files' tags: a run whose SQL
            // kept no row commits one file without rows.
            let schema = Arc::clone(&converted.output.schema);
            converted.output.files.push(writer::write_empty(&sink, &directory, &run_id, schema, pipeline.sink.compression).await?);
        }
        let converted_manifest = run.manifest(&converted, fingerprint, spec_hash);
        let manifest = match previous_manifest.as_ref().filter(|_| increment.is_some()) {
            Some(committed) => committed.appended(converted_manifest),
            None => converted_manifest,
        };
        marker.check_fresh()?;
        match delta.as_mut() {
            Some(table) => {
                let joining = if increment.is_some() { Joining::Add } else { Joining::Replace };
                let files = &converted.output.files;
                if table.commit(&task.partition, files, &converted.output.schema, &manifest, joining, transaction).await? == Commit::AlreadyMade {
                    return Err(Error::Config(format!(
                        "{}: another run committed partition {} meanwhile; the next run processes it again",
                        sink.location.url(),
                        task.partition
                    )));
                }
            }
            None => manifest::commit(&sink, &directory, &manifest, previous.as_ref(), commit_mode).await?,
        }
        Ok((manifest, converted))
    }
    .await;
    let (manifest, converted) = match committed {
        Ok(committed) => committed,
        Err(error) => {
            run.discard_own_files().await?;
            marker.finish().await;
            return Err(error);
        }
    };
    if delta.is_some() {
        let listing = Listing::sink(&sink, &directory).await?;
        marker.finish().await;
        partition.remove_uncommitted_quarantine(&listing, &manifest).await?;
        return Ok(summary(&manifest, &sink, &directory, Some(&converted), started));
    }
    let listing = Listing::sink_after_live_runs(&sink, &directory, &run_id).await?;
    marker.finish().await;
    let missing = manifest.missing_files(&listing);
    if !missing.is_empty() {
        return Err(Error::Config(format!(
            "{}: the committed manifest lists files that are gone ({missing:?}); the next run processes the partition again",
            sink.url_of(&directory)
        )));
    }
    partition.remove_uncommitted(&listing, &manifest).await?;
    Ok(summary(&manifest, &sink, &directory, Some(&converted), started))
}

/// Runs `conversion`, stopping it after `seconds` when a limit is set. A conversion that finished
/// only after the limit (the timer is checked when the runtime gets to it) is refused as well, so
/// the limit holds however busy the runtime was.
async fn within_time_limit<T>(seconds: Option<u64>, conversion: impl Future<Output = Result<T>>) -> Result<T> {
    let Some(seconds) = seconds else { return conversion.await };
    let limit = std::time::Duration::from_secs(seconds);
    let started = Instant::now();
    match tokio::time::timeout(limit, conversion).await {
        Ok(Err(error)) => Err(error),
        Ok(Ok(converted)) if started.elapsed() <= limit => Ok(converted),
        _ => Err(Error::Timeout(seconds)),
    }
}

/// The partition's input objects as the source holds them now — under every spelling of its
/// directory the layout reads, and for an event-time partition those of every directory it reads
/// that it takes (see [`crate::event_time`]) — those modified after the task's `settled_before`
/// left out. A partition without objects is an error: there is nothing to commit.
async fn list_partition(source: &Store, checked: &CheckedPipeline, task: &Task) -> Result<DiscoveredPartition> {
    let directories: Vec<String> = match &checked.event_time {
        Some(event_time) => event_time.reads(&task.partition).iter().flat_map(|key| checked.layout.source_paths(key)).collect(),
        None => checked.layout.source_paths(&task.partition),
    };
    let cutoff = match &task.settled_before {
        Some(text) => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| Error::Config(format!("settledBefore {text:?} is not an RFC 3339 time: {e}")))?
                .to_utc(),
        ),
        None => None,
    };
    let mut found = crate::store::discovery::discover_below(source, &checked.layout, &directories).await?;
    if let Some(event_time) = &checked.event_time {
        found = event_time.compose(&found);
    }
    let partition = found.remove(&task.partition).and_then(|partition| match cutoff {
        Some(cutoff) => partition.settled(cutoff),
        None => Some(partition),
    });
    partition.ok_or_else(|| {
        let own = checked.layout.source_paths(&task.partition);
        Error::Config(format!("partition {} has no input objects under {}", task.partition, source.url_of(&source.child(&own[0]))))
    })
}

/// Where a partition's output goes: its sink directory and its rejected-rows directory.
struct Partition<'a> {
    sink: &'a Store,
    rejected: &'a Store,
    directory: &'a Path,
    rejected_directory: Path,
}

impl Partition<'_> {
    /// Deletes the data and quarantine files that `committed` does not list and no live run may
    /// still commit — those of superseded runs and of runs that died before committing — and the
    /// markers of dead runs.
    async fn remove_uncommitted(&self, sink_listing: &Listing, committed: &Manifest) -> Result<()> {
        let keep: Vec<String> = committed.files.iter().map(|f| f.name.clone()).collect();
        sink_listing.remove_stale(self.sink, self.directory, "part-", &keep).await?;
        self.remove_uncommitted_quarantine(sink_listing, committed).await
    }

    /// Deletes the quarantine files that `committed` does not list and no live run may still
    /// commit, and the markers of dead runs; the data files stay. For a Delta sink: the files a
    /// commit removed are there for readers of earlier versions until the vacuum, but quarantined
    /// rows of a superseded run would read as rejected twice.
    async fn remove_uncommitted_quarantine(&self, sink_listing: &Listing, committed: &Manifest) -> Result<()> {
        sink_listing.remove_stale(self.sink, self.directory, crate::commit::cleanup::MARKER_PREFIX, &[]).await?;
        let rejected_listing = Listing::of(self.rejected, &self.rejected_directory, sink_listing).await?;
        rejected_listing.remove_stale(self.rejected, &self.rejected_directory, "rejected-", &committed.committed_rejected_files()).await
    }
}

/// The output of a conversion, before it is committed.
struct Converted {
    output: Output,
    rows_read: u64,
    rows_rejected: u64,
    /// Rows of another event-time partition (see [`crate::event_time`]).
    rows_routed: u64,
    /// The name of the file holding the quarantined rows, in the rejected-rows directory.
    quarantined: Option<String>,
}

/// The rows a read of the inputs saw: those the SQL saw, and the bad ones set apart; for an
/// event-time partition also those it routed and those it rejects for their event time.
struct RowsRead {
    accepted: u64,
    bad: Option<Arc<BadRows>>,
    /// Rows another event-time partition keeps or rejects: of other directories' objects, bad
    /// ones included.
    routed: u64,
    /// The bad rows among them: their own directory's run rejects them.
    routed_bad: u64,
    /// Rows rejected for their event time, and those rows with their reasons.
    rejected_by_time: u64,
    rejected_rows: Option<DataFrame>,
}

impl RowsRead {
    /// The rows of a partition by directory: all of them its own.
    fn of_partition(accepted: u64, bad: Option<Arc<BadRows>>) -> Self {
        Self { accepted, bad, routed: 0, routed_bad: 0, rejected_by_time: 0, rejected_rows: None }
    }

    fn bad_count(&self) -> u64 {
        self.bad.as_ref().map_or(0, |bad| bad.count())
    }
}

struct Run<'a> {
    task: &'a Task,
    checked: &'a CheckedPipeline,
    mode: &'a Mode,
    inputs: &'a [InputObject],
    /// The partition as listed, with when each object was last modified.
    listed: &'a DiscoveredPartition,
    run_id: &'a str,
    source: &'a Store,
    partition: &'a Partition<'a>,
}

impl Run<'_> {
    /// The inputs, located in the source store.
    fn source_objects(&self) -> Vec<SourceObject> {
        self.inputs.iter().map(|input| self.located(input)).collect()
    }

    fn located(&self, input: &InputObject) -> SourceObject {
        SourceObject {
            path: self.source.child(&input.path),
            size: input.size,
            gzip: is_gzip(&input.path, self.task.pipeline.source.csv.compression),
            etag: input.etag.clone(),
            modified: input.modified.as_deref().and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok()).map(|time| time.to_utc()),
        }
    }

    /// The inputs of an event-time partition grouped by what the run does with their rows.
    fn fate_groups(&self, event_time: &EventTime) -> Result<Vec<FateGroup>> {
        let arrived: BTreeMap<&InputObject, DateTime<Utc>> = self.listed.inputs.iter().zip(self.listed.modified.iter().copied()).collect();
        let mut groups: Vec<FateGroup> = Vec::new();
        for input in self.inputs {
            let unknown = || Error::Config(format!("{}: the object is not in a partition directory of the listing", input.path));
            let directory = self.checked.layout.partition_of(&input.path).ok_or_else(unknown)?;
            let modified = *arrived.get(input).ok_or_else(unknown)?;
            let bounds = event_time.fates(&self.task.partition, &directory, modified);
            match groups.iter_mut().find(|group| group.bounds == bounds) {
                Some(group) => group.objects.push(self.located(input)),
                None => groups.push(FateGroup { bounds, column: event_time.column.clone(), objects: vec![self.located(input)] }),
            }
        }
        Ok(groups)
    }

    fn engine(&self) -> Result<Engine> {
        let input_bytes = self.inputs.iter().map(|input| input.size).sum();
        let engine = Engine::new(&self.task.engine, input_bytes, self.mode)?;
        engine.register_store(self.source);
        engine.register_store(self.partition.sink);
        Ok(engine)
    }

    /// The declared columns, or the first object's header columns as text when none are declared.
    async fn columns(&self, objects: &[SourceObject]) -> Result<Arc<[ColumnRule]>> {
        let source = &self.task.pipeline.source;
        if !source.schema.is_empty() {
            return crate::csv::values::rules(&source.schema);
        }
        for object in objects.iter().filter(|object| object.size > 0) {
            if let Some(columns) = crate::csv::header::columns_of(self.source, object, &source.csv).await? {
                return Ok(columns.into());
            }
        }
        Err(Error::Config("source.schema is empty and no input object has a header to take the columns from".into()))
    }

    /// Reads the inputs strictly; when that fails on bad data, reads them again with the bad rows
    /// set apart, and applies the policy. Rows rejected for their event time go to the
    /// rejected-rows location whatever the policy: they are not bad.
    async fn convert(&self) -> Result<Converted> {
        let objects = self.source_objects();
        let columns = self.columns(&objects).await?;
        let error = match self.transform(&objects, &columns, None).await {
            Ok((output, rows)) => return self.converted(output, rows, None).await,
            Err(error) if is_data_error(&error) => error,
            Err(error) => return Err(header_error(error)),
        };
        self.discard_own_files().await?;
        let scratch = scratch_dir(self.task)?;
        let (output, rows) = self.transform(&objects, &columns, Some(scratch.path())).await?;
        if rows.bad_count() == 0 && rows.routed_bad == 0 {
            // Every row is well-formed: the failure was not about the input rows.
            return Err(error);
        }
        let bad = rows.bad.clone().filter(|bad| bad.count() > 0);
        match (self.task.pipeline.bad_records.policy, &bad) {
            (BadRecordPolicy::Fail, Some(bad)) => {
                let first = bad.first().expect("a bad row was kept");
                self.discard_own_files().await?;
                Err(Error::BadRecord { object: first.object, line: first.line, reason: first.reason, total: bad.count() })
            }
            (BadRecordPolicy::Quarantine, _) => self.converted(output, rows, bad.as_deref()).await,
            _ => self.converted(output, rows, None).await,
        }
    }

    /// The conversion's account of its rows; the rejected rows — `bad` ones to quarantine and
    /// those rejected for their event time — uploaded.
    async fn converted(&self, output: Output, rows: RowsRead, bad: Option<&BadRows>) -> Result<Converted> {
        let rows_rejected = rows.bad_count() + rows.rejected_by_time;
        let quarantined = match (bad, rows.rejected_rows.filter(|_| rows.rejected_by_time > 0)) {
            (None, None) => None,
            (bad, by_time) => Some(self.quarantine(bad, by_time).await?),
        };
        let rows_read = rows.accepted + rows.routed + rows_rejected;
        Ok(Converted { output, rows_read, rows_rejected, rows_routed: rows.routed, quarantined })
    }

    /// Runs the SQL over the objects and writes its output. Bad rows stop the read, or, with a
    /// scratch directory, are set apart there. Returns the output and the rows read: counted at
    /// the scans when the query reads `events` once and whole, else by a read of its own.
    async fn transform(&self, objects: &[SourceObject], columns: &Arc<[ColumnRule]>, scratch: Option<&std::path::Path>) -> Result<(Output, RowsRead)> {
        let pipeline = &self.task.pipeline;
        let engine = self.engine()?;
        let collector = |name: &str| -> Result<Option<Arc<BadRows>>> {
            scratch
                .map(|dir| BadRows::create(&dir.join(name)).map(Arc::new).map_err(|e| Error::io("creating a scratch file", e)))
                .transpose()
        };
        let handling = |bad: &Option<Arc<BadRows>>| bad.clone().map_or(BadRowHandling::Refuse, BadRowHandling::Separate);
        let csv = &pipeline.source.csv;
        if let Some(event_time) = &self.checked.event_time {
            return self.transform_by_event_time(event_time, &engine, columns, &collector).await;
        }
        let bad = collector("bad-rows.jsonl")?;
        engine.register_csv_events(self.source, objects, csv, columns, &self.task.partition, handling(&bad))?;
        let frame = engine.transform(&pipeline.transform.sql, &self.task.partition).await?;
        let reads_once = crate::query::row_count::reads_events_once(frame.logical_plan())?;
        let output = writer::write(frame, self.partition.sink, self.partition.directory, self.run_id, pipeline.sink.compression, engine.writers()).await?;
        let rows = match output.scanned_rows {
            Some(accepted) if reads_once => RowsRead::of_partition(accepted, bad),
            _ => {
                let bad = collector("bad-rows-of-count.jsonl")?;
                engine.register_csv_events(self.source, objects, csv, columns, &self.task.partition, handling(&bad))?;
                let accepted = engine.context().table(crate::query::engine::EVENTS_TABLE).await?.count().await? as u64;
                RowsRead::of_partition(accepted, bad)
            }
        };
        Ok((output, rows))
    }

    /// [`Self::transform`] for an event-time partition: `events` holds the rows it keeps. The rows
    /// are counted by fate in a read of their own; bad rows of other directories' objects are
    /// routed (their own directory's run rejects them).
    async fn transform_by_event_time(
        &self,
        event_time: &EventTime,
        engine: &Engine,
        columns: &Arc<[ColumnRule]>,
        collector: &dyn Fn(&str) -> Result<Option<Arc<BadRows>>>,
    ) -> Result<(Output, RowsRead)> {
        let pipeline = &self.task.pipeline;
        let (csv, partition) = (&pipeline.source.csv, &self.task.partition);
        let groups = self.fate_groups(event_time)?;
        let register = |own: &Option<Arc<BadRows>>, others: &Option<Arc<BadRows>>| {
            let handling = |group: &FateGroup| {
                let bad = if group.bounds.routed.is_some() { own } else { others };
                bad.clone().map_or(BadRowHandling::Refuse, BadRowHandling::Separate)
            };
            engine.register_event_time_events(self.source, &groups, csv, columns, partition, handling)
        };
        register(&collector("bad-rows.jsonl")?, &collector("routed-bad-rows.jsonl")?)?;
        let frame = engine.transform(&pipeline.transform.sql, partition).await?;
        let output = writer::write(frame, self.partition.sink, self.partition.directory, self.run_id, pipeline.sink.compression, engine.writers()).await?;
        let (bad, routed_bad) = (collector("bad-rows-of-count.jsonl")?, collector("routed-bad-rows-of-count.jsonl")?);
        let counts = FateCounts::of(register(&bad, &routed_bad)?).await?;
        let routed_bad = routed_bad.as_ref().map_or(0, |bad| bad.count());
        let rejected_rows = match counts.rejected() {
            0 => None,
            _ => Some(fates::rejected_rows(register(&collector("bad-rows-of-rejected.jsonl")?, &collector("routed-bad-rows-of-rejected.jsonl")?)?, columns)?),
        };
        let rows = RowsRead {
            accepted: counts.rows(Fate::Kept),
            bad,
            routed: counts.rows(Fate::Routed) + routed_bad,
            routed_bad,
            rejected_by_time: counts.rejected(),
            rejected_rows,
        };
        Ok((output, rows))
    }

    /// Uploads the rejected rows as JSON lines below the rejected-rows location: the `bad` rows,
    /// then the rows rejected for their event time (`{"reason": "late", "row": {...}}`); returns
    /// the file's name.
    async fn quarantine(&self, bad: Option<&BadRows>, by_time: Option<DataFrame>) -> Result<String> {
        let Partition { rejected: store, rejected_directory: directory, .. } = self.partition;
        let name = format!("rejected-{}.jsonl", self.run_id);
        let path = directory.clone().join(name.as_str());
        let failed = |e: std::io::Error| Error::io(format!("writing {}", store.url_of(&path)), e);
        let mut upload = BufWriter::new(Arc::clone(&store.store), path.clone());
        if let Some(bad) = bad {
            let rows = bad.finish().map_err(|e| Error::io("writing bad rows", e))?;
            let mut file = tokio::fs::File::open(rows).await.map_err(|e| Error::io("reading bad rows", e))?;
            tokio::io::copy(&mut file, &mut upload).await.map_err(failed)?;
        }
        if let Some(rows) = by_time {
            let mut batches = rows.execute_stream().await?;
            while let Some(batch) = batches.next().await.transpose()? {
                let mut lines = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
                lines.write(&batch).map_err(DataFusionError::from)?;
                lines.finish().map_err(DataFusionError::from)?;
                upload.write_all(&lines.into_inner()).await.map_err(failed)?;
            }
        }
        upload.shutdown().await.map_err(failed)?;
        Ok(name)
    }

    /// Deletes the data and quarantine files this run wrote, after a failure — except those the
    /// stored manifest lists (a commit whose response was lost may have landed and been built on).
    async fn discard_own_files(&self) -> Result<()> {
        let Partition { sink, rejected, directory, rejected_directory } = self.partition;
        let stored = manifest::read(sink, directory).await?.map(|committed| committed.manifest);
        let keep: Vec<String> = stored.iter().flat_map(|m| m.files.iter().map(|f| f.name.clone()).chain(m.committed_rejected_files())).collect();
        let own = |location: &Path, prefix: &str| {
            location.filename().is_some_and(|name| crate::commit::cleanup::run_of(name, prefix) == Some(self.run_id) && !keep.iter().any(|k| k == name))
        };
        for (store, directory, prefix) in [(sink, *directory, "part-"), (rejected, rejected_directory, "rejected-")] {
            for object in store.list(store.relative(directory)).await? {
                if own(&object.location, prefix) {
                    match store.store.delete(&object.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(store.error(&object.location, e)),
                    }
                }
            }
        }
        Ok(())
    }

    fn manifest(&self, converted: &Converted, input_fingerprint: String, spec_hash: String) -> Manifest {
        let output = &converted.output;
        let Partition { rejected, rejected_directory, .. } = self.partition;
        Manifest {
            run_id: self.run_id.to_string(),
            partition: self.task.partition.to_string(),
            input_fingerprint,
            spec_hash,
            inputs: self.inputs.to_vec(),
            files: output.files.iter().map(ManifestFile::from).collect(),
            rows_read: converted.rows_read,
            rows_rejected: converted.rows_rejected,
            rows_routed: converted.rows_routed,
            rows_written: output.files.iter().map(|f| f.rows).sum(),
            bytes_written: output.files.iter().map(|f| f.bytes).sum(),
            rejected_rows_url: converted.quarantined.as_ref().map(|name| rejected.url_of(&rejected_directory.clone().join(name.as_str()))),
            rejected_files: converted.quarantined.iter().cloned().collect(),
            increments: 1,
            schema: output
                .schema
                .fields()
                .iter()
                .map(|field| ManifestColumn {
                    name: field.name().clone(),
                    data_type: field.data_type().to_string(),
                    nullable: field.is_nullable(),
                })
                .collect(),
            tool: format!("eventpipe-transformer {}", env!("CARGO_PKG_VERSION")),
            committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// The summary of a committed manifest; `converted` is the run's own work, `None` when skipped.
fn summary(manifest: &Manifest, sink: &Store, directory: &Path, converted: Option<&Converted>, started: Instant) -> Summary {
    Summary {
        files: manifest.files.iter().map(|f| sink.relative(&directory.clone().join(f.name.as_str())).to_string()).collect(),
        by_run: converted.map_or_else(RunRows::default, |c| RunRows {
            read: c.rows_read,
            rejected: c.rows_rejected,
            routed: c.rows_routed,
            written: c.output.files.iter().map(|f| f.rows).sum(),
        }),
        spilled_bytes: converted.map_or(0, |c| c.output.spilled_bytes),
        skipped: converted.is_none(),
        seconds: started.elapsed().as_secs_f64(),
        ..manifest.summary()
    }
}

fn scratch_dir(task: &Task) -> Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("eventpipe-");
    match &task.engine.scratch_dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .map_err(|e| Error::io("creating a scratch directory", e))
}

/// Whether a fast-path failure may come from the input rows (so that reading them again with bad
/// rows set apart can tell), rather than from storage, resources, the SQL or a header.
fn is_data_error(error: &Error) -> bool {
    use datafusion::error::DataFusionError as E;
    match error {
        Error::Engine(engine) => !matches!(
            engine.find_root(),
            E::ObjectStore(_) | E::IoError(_) | E::ResourcesExhausted(_) | E::NotImplemented(_) | E::Plan(_)
        ) && header_problem(engine).is_none(),
        _ => false,
    }
}

/// An object whose header does not name the columns: a problem of the data's shape, not of its
/// rows, reported as the spec's (the same inputs fail again).
fn header_error(error: Error) -> Error {
    match &error {
        Error::Engine(engine) => header_problem(engine).map_or(error, Error::Config),
        _ => error,
    }
}

fn header_problem(error: &datafusion::error::DataFusionError) -> Option<String> {
    use datafusion::arrow::error::ArrowError;
    match error.find_root() {
        datafusion::error::DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            ArrowError::SchemaError(message) => Some(message.clone()),
            _ => None,
        },
        _ => None,
    }
}
