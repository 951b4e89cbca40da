//! One transformer run: one partition from CSV to committed Parquet.
//!
//! 1. The partition is listed; its input fingerprint and the spec hash identify the output.
//! 2. If the committed manifest has both, nothing is converted. In append mode (see
//!    [`crate::mode`]), when the committed output was made with this spec from objects that are
//!    all still there unchanged, only the objects it lacks are converted: an increment.
//! 3. Fast path: a strict DataFusion read of the inputs, the SQL, and Parquet out.
//! 4. If the read fails on bad data, the inputs are checked row by row; bad rows fail the run or
//!    are left out (and quarantined), and the clean rows go through the same fast path again.
//! 5. The manifest is written (the commit point; an increment's adds to the previous one, on
//!    the condition that it is still the stored one), then every data file it does not list is
//!    deleted — also after a skip, so files of a run killed mid-write never stay visible.

use std::time::Instant;

use object_store::buffered::BufWriter;
use object_store::path::Path;
use tokio::io::AsyncWriteExt;

use crate::badrows::{self, Separated};
use crate::engine::{CsvObject, Engine, is_gzip};
use crate::error::{Error, Result};
use crate::fingerprint::{fingerprint, spec_hash};
use crate::header;
use crate::manifest::{self, Manifest, ManifestColumn, ManifestFile};
use crate::mode::Mode;
use crate::spec::{BadRecordPolicy, Column, CsvOptions};
use crate::storage::{Location, Opener, Retrying, SourceObject, Store};
use crate::task::{InputObject, RunRows, Summary, Task, new_run_id};
use crate::validate::CheckedPipeline;
use crate::writer::{self, Output};

/// Runs a task to completion and returns what it did.
pub async fn run(task: &Task) -> Result<Summary> {
    let started = Instant::now();
    let pipeline = &task.pipeline;
    let checked = crate::validate::check(pipeline)?;
    let mode = crate::validate::check_sql(pipeline, &checked.layout).await?;
    let opener = Opener::new(pipeline.s3.as_ref());
    let source = opener.open(&checked.source, Retrying::Patiently).await?;
    let sink = opener.open(&checked.sink, Retrying::Patiently).await?;
    let inputs = list_partition(&source, &checked, task).await?;
    let fingerprint = fingerprint(&inputs);
    if let Some(expected) = task.expected_fingerprint.as_deref().filter(|expected| **expected != fingerprint) {
        tracing::info!(partition = %task.partition, expected, listed = fingerprint, "the partition changed since it was planned; processing what is there now");
    }
    let spec_hash = spec_hash(pipeline);
    let directory = sink.child(&task.partition.sink_path());

    let previous = manifest::read(&sink, &directory).await?;
    if let Some(committed) = previous.as_ref().filter(|c| c.manifest.matches(&fingerprint, &spec_hash) && !task.force) {
        remove_uncommitted(&sink, &directory, &committed.manifest).await?;
        return Ok(summary(&committed.manifest, &sink, &directory, None, started));
    }

    let commit_mode = pipeline.sink.commit;
    // A store that answers the probe with 501 has answered: it is not asked again for minutes.
    manifest::check_conditional_writes(&opener.open(&checked.sink, Retrying::Briefly).await?, commit_mode).await?;
    let increment = previous
        .as_ref()
        .filter(|_| mode.is_append() && !task.full && !task.force)
        .and_then(|committed| committed.manifest.increment(&inputs, &spec_hash));
    let run_id = new_run_id();
    let to_convert = increment.as_deref().unwrap_or(&inputs);
    let run = Run { task, mode: &mode, inputs: to_convert, run_id: &run_id, opener: &opener, source: &source, sink: &sink, directory: &directory };
    let converted = match within_time_limit(task.engine.timeout_seconds, run.convert(&checked.rejected)).await {
        Ok(converted) => converted,
        Err(error) => {
            run.discard_own_files().await?;
            return Err(error);
        }
    };

    let converted_manifest = run.manifest(&converted, fingerprint, spec_hash);
    let manifest = match previous.as_ref().filter(|_| increment.is_some()) {
        Some(committed) => committed.manifest.appended(converted_manifest),
        None => converted_manifest,
    };
    if let Err(error) = manifest::commit(&sink, &directory, &manifest, previous.as_ref(), commit_mode).await {
        run.discard_own_files().await?;
        return Err(error);
    }
    remove_uncommitted(&sink, &directory, &manifest).await?;
    if let Some(rejected) = &converted.rejected {
        manifest::remove_stale(&rejected.store, &rejected.directory, "rejected-", &manifest.committed_rejected_files()).await?;
    }
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

/// The partition's input objects as the source holds them now, those modified after the task's
/// `settled_before` left out. A partition without objects is an error: there is nothing to commit.
async fn list_partition(source: &Store, checked: &CheckedPipeline, task: &Task) -> Result<Vec<InputObject>> {
    let directory = checked.layout.source_path(&task.partition);
    let cutoff = match &task.settled_before {
        Some(text) => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| Error::Config(format!("settledBefore {text:?} is not an RFC 3339 time: {e}")))?
                .to_utc(),
        ),
        None => None,
    };
    let mut found = crate::discovery::discover_below(source, &checked.layout, std::slice::from_ref(&directory)).await?;
    let partition = found.remove(&task.partition).and_then(|partition| match cutoff {
        Some(cutoff) => partition.settled(cutoff),
        None => Some(partition),
    });
    match partition {
        Some(partition) => Ok(partition.inputs),
        None => Err(Error::Config(format!(
            "partition {} has no input objects under {}",
            task.partition,
            source.url_of(&source.child(&directory))
        ))),
    }
}

/// Deletes every data file in the partition directory that the committed manifest does not list:
/// those of superseded runs and of runs that died before committing.
async fn remove_uncommitted(sink: &Store, directory: &Path, committed: &Manifest) -> Result<()> {
    let keep: Vec<String> = committed.files.iter().map(|f| f.name.clone()).collect();
    manifest::remove_stale(sink, directory, "part-", &keep).await
}

/// The output of a conversion, before it is committed.
struct Converted {
    output: Output,
    rows_read: u64,
    rows_rejected: u64,
    rejected: Option<QuarantinedRows>,
}

/// Where a run's quarantined rows were written.
struct QuarantinedRows {
    store: Store,
    directory: Path,
    name: String,
}

struct Run<'a> {
    task: &'a Task,
    mode: &'a Mode,
    inputs: &'a [InputObject],
    run_id: &'a str,
    opener: &'a Opener,
    source: &'a Store,
    sink: &'a Store,
    directory: &'a Path,
}

impl Run<'_> {
    /// The partition's inputs, located in the source store.
    fn source_objects(&self) -> Vec<SourceObject> {
        let compression = self.task.pipeline.source.csv.compression;
        let located = |input: &InputObject| SourceObject {
            path: self.source.child(&input.path),
            size: input.size,
            gzip: is_gzip(&input.path, compression),
        };
        self.inputs.iter().map(located).collect()
    }

    /// The partition's inputs as DataFusion reads them.
    fn csv_objects(&self) -> Vec<CsvObject> {
        let readable = |object: SourceObject| CsvObject { url: self.source.url_of(&object.path), gzip: object.gzip };
        self.source_objects().into_iter().map(readable).collect()
    }

    fn engine(&self) -> Result<Engine> {
        let input_bytes = self.inputs.iter().map(|input| input.size).sum();
        let engine = Engine::new(&self.task.engine, input_bytes, self.mode)?;
        engine.register_store(self.source);
        engine.register_store(self.sink);
        Ok(engine)
    }

    /// The declared columns, or the header's columns as strings when none are declared.
    async fn columns(&self, engine: &Engine) -> Result<Vec<Column>> {
        let declared = &self.task.pipeline.source.schema;
        match self.csv_objects().first() {
            Some(first) if declared.is_empty() => engine.header_columns(first, &self.task.pipeline.source.csv).await,
            _ => Ok(declared.clone()),
        }
    }

    /// The fast path, and the row-by-row path when the fast one fails on bad data.
    async fn convert(&self, rejected_location: &Location) -> Result<Converted> {
        match self.convert_fast().await {
            Err(error) if is_data_error(&error) => {
                self.discard_own_files().await?;
                self.convert_row_by_row(error, rejected_location).await
            }
            outcome => outcome,
        }
    }

    async fn convert_fast(&self) -> Result<Converted> {
        let engine = self.engine()?;
        let columns = self.columns(&engine).await?;
        let csv = &self.task.pipeline.source.csv;
        if csv.header && !self.task.pipeline.source.schema.is_empty() {
            header::check(self.source, &self.source_objects(), csv, &columns).await?;
        }
        let (output, rows_read) = self.transform(&engine, &self.csv_objects(), &self.task.pipeline.source.csv, &columns).await?;
        Ok(Converted { rows_read, rows_rejected: 0, output, rejected: None })
    }

    /// Runs the SQL over the given objects and writes its output; returns it with the number of
    /// input rows read.
    async fn transform(&self, engine: &Engine, objects: &[CsvObject], csv: &CsvOptions, columns: &[Column]) -> Result<(Output, u64)> {
        let pipeline = &self.task.pipeline;
        engine.register_csv_events(objects, csv, columns, &self.task.partition).await?;
        let frame = engine.transform(&pipeline.transform.sql, &self.task.partition).await?;
        let reads_once = crate::row_count::reads_events_once(frame.logical_plan())?;
        let output = writer::write(frame, self.sink, self.directory, self.run_id, pipeline.sink.compression, engine.writers()).await?;
        let rows_read = match output.scanned_rows {
            Some(rows) if reads_once => rows,
            _ => engine.context().table(crate::engine::EVENTS_TABLE).await?.count().await? as u64,
        };
        Ok((output, rows_read))
    }

    /// The slow path: separates bad rows, applies the policy, converts the clean rows.
    async fn convert_row_by_row(&self, fast_path_error: Error, rejected_location: &Location) -> Result<Converted> {
        let engine = self.engine()?;
        let columns = self.columns(&engine).await?;
        let scratch = scratch_dir(self.task)?;
        let separated =
            badrows::separate(self.source, &self.source_objects(), &self.task.pipeline.source.csv, &columns, scratch.path())
                .await?;
        let Some(first_bad) = separated.first_bad.clone() else {
            // Every row is well-formed: the failure was not about the input rows.
            return Err(fast_path_error);
        };
        let policy = self.task.pipeline.bad_records.policy;
        if policy == BadRecordPolicy::Fail {
            return Err(Error::BadRecord {
                object: first_bad.object,
                line: first_bad.line,
                reason: first_bad.reason,
                total: separated.rows_rejected,
            });
        }
        let clean: Vec<CsvObject> = separated
            .clean_files
            .iter()
            .map(|path| CsvObject { url: format!("file://{}", path.display()), gzip: false })
            .collect();
        let (output, rows_read) = self.transform(&engine, &clean, &CsvOptions::default(), &columns).await?;
        let accepted = separated.rows_read - separated.rows_rejected;
        if rows_read != accepted {
            return Err(Error::Config(format!(
                "the row-by-row check accepted {accepted} rows but the reader read {rows_read}: a value passes one parser and not the other"
            )));
        }
        let rejected = match policy {
            BadRecordPolicy::Quarantine => Some(self.quarantine(&separated, rejected_location).await?),
            _ => None,
        };
        Ok(Converted { output, rows_read: separated.rows_read, rows_rejected: separated.rows_rejected, rejected })
    }

    /// Uploads the bad rows as JSON lines below the rejected-rows location.
    async fn quarantine(&self, separated: &Separated, location: &Location) -> Result<QuarantinedRows> {
        let store = self.opener.open(location, Retrying::Patiently).await?;
        let directory = store.child(&self.task.partition.sink_path());
        let name = format!("rejected-{}.jsonl", self.run_id);
        let path = directory.clone().join(name.as_str());
        let mut file = tokio::fs::File::open(&separated.bad_rows_file)
            .await
            .map_err(|e| Error::io("reading bad rows", e))?;
        let mut upload = BufWriter::new(std::sync::Arc::clone(&store.store), path.clone());
        tokio::io::copy(&mut file, &mut upload).await.map_err(|e| Error::io(format!("writing {}", store.url_of(&path)), e))?;
        upload.shutdown().await.map_err(|e| Error::io(format!("writing {}", store.url_of(&path)), e))?;
        Ok(QuarantinedRows { store, directory, name })
    }

    /// Deletes the data files this run wrote, after a failure.
    async fn discard_own_files(&self) -> Result<()> {
        manifest::remove_stale(self.sink, self.directory, &writer::file_prefix(self.run_id), &[]).await
    }

    fn manifest(&self, converted: &Converted, input_fingerprint: String, spec_hash: String) -> Manifest {
        let output = &converted.output;
        Manifest {
            run_id: self.run_id.to_string(),
            partition: self.task.partition.to_string(),
            input_fingerprint,
            spec_hash,
            inputs: self.inputs.to_vec(),
            files: output
                .files
                .iter()
                .map(|file| ManifestFile {
                    name: file.path.filename().unwrap_or_default().to_string(),
                    rows: file.rows,
                    bytes: file.bytes,
                })
                .collect(),
            rows_read: converted.rows_read,
            rows_rejected: converted.rows_rejected,
            rows_written: output.files.iter().map(|f| f.rows).sum(),
            bytes_written: output.files.iter().map(|f| f.bytes).sum(),
            rejected_rows_url: converted
                .rejected
                .as_ref()
                .map(|r| r.store.url_of(&r.directory.clone().join(r.name.as_str()))),
            rejected_files: converted.rejected.iter().map(|r| r.name.clone()).collect(),
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

/// Whether a fast-path failure may come from the input rows (so the row-by-row pass can tell),
/// rather than from storage, resources or the SQL itself.
fn is_data_error(error: &Error) -> bool {
    use datafusion::error::DataFusionError as E;
    match error {
        Error::Engine(engine) => !matches!(
            engine.find_root(),
            E::ObjectStore(_) | E::IoError(_) | E::ResourcesExhausted(_) | E::NotImplemented(_) | E::Plan(_)
        ),
        _ => false,
    }
}
