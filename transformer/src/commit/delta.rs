//! A Delta Lake table as the sink (`sink.format: delta`): the Parquet files a run writes are
//! committed to the table's log in one commit per partition run, which readers (Athena, Spark)
//! see whole or not at all. A full run's commit adds the new files and removes the partition's
//! previous ones; an increment's only adds. Each commit carries a transaction action
//! (`txn`, app id `eventpipe:<partition>`) whose version a retried commit is recognised by, and
//! every file it adds carries the run's manifest in its tags, so that the skip check and the
//! operator read what a partition holds from the table itself.
//!
//! Runs of different partitions commit concurrently: each commit names its partition in a
//! predicate, and delta-rs' conflict checker lets commits of disjoint partitions through.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow as _;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, Add, DataType, Remove, StructField, StructType, Transaction};
use deltalake::logstore::{LogStoreRef, StorageConfig, default_logstore};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError, FilterOp, FilterValue};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use url::Url;

use crate::commit::manifest::Manifest;
use crate::commit::writer::WrittenFile;
use crate::error::{Error, Result};
use crate::layout::PartitionKey;
use crate::store::Store;

/// The tag every added file carries: the manifest of the run that committed it.
const MANIFEST_TAG: &str = "eventpipe.manifest";
/// Commits of one partition may race with commits of others this many times before the run fails.
const COMMIT_RETRIES: usize = 100;

/// How a run's files join the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joining {
    /// They replace the partition's files (a whole run).
    Replace,
    /// They are added to them (an increment in append mode).
    Add,
    /// They hold the partition's rows anew, in fewer files: the commit changes no data, and
    /// streaming readers of the table skip it.
    Compact {
        /// The size the files were aimed at, in bytes.
        target_bytes: u64,
    },
}

/// What a commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// The table's new version.
    Made(u64),
    /// A commit with this transaction version was already in the table: a retry of a commit
    /// that landed.
    AlreadyMade,
}

/// A Delta table at a sink location, or the place for one.
pub struct DeltaSink {
    log_store: LogStoreRef,
    /// None until the table exists.
    table: Option<DeltaTable>,
    url: String,
}

impl DeltaSink {
    /// Opens the table at the sink, if there is one.
    pub async fn open(sink: &Store) -> Result<Self> {
        let url = sink.location.url();
        // delta-rs takes a local table's missing directory for an invalid location, not for a
        // place without a table; S3 has no directories.
        if let crate::store::Location::Local(dir) = &sink.location {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let log_store = log_store(sink)?;
        let mut table = DeltaTable::new(log_store.clone());
        let table = match table.load().await {
            Ok(()) => Some(table),
            Err(DeltaTableError::NotATable(_)) => None,
            Err(error) => return Err(delta_error(&url, error)),
        };
        Ok(Self { log_store, table, url })
    }

    /// The table, created (reader 1 / writer 2, partitioned by the partition's columns) with
    /// `schema`'s other columns when there is none yet.
    async fn created(&mut self, schema: &Schema, partition: &PartitionKey) -> Result<&mut DeltaTable> {
        if self.table.is_none() {
            self.table = Some(create(&self.log_store, &self.url, schema, partition).await?);
        }
        Ok(self.table.as_mut().expect("created above"))
    }

    /// The manifest of the run whose files the partition holds now, if any: the newest one its
    /// files carry (an increment's files carry the manifest of the whole output).
    pub async fn committed(&self, partition: &PartitionKey) -> Result<Option<Manifest>> {
        let files = self.files(Some(partition)).await?;
        Ok(self.newest_by_partition(&files)?.remove(&partition.to_string()))
    }

    /// The manifest of every partition the table holds, by partition (`year=YYYY/month=MM/day=DD`).
    pub async fn committed_partitions(&self) -> Result<HashMap<String, Manifest>> {
        let files = self.files(None).await?;
        self.newest_by_partition(&files)
    }

    /// The newest manifest the files of each partition carry.
    fn newest_by_partition(&self, files: &[Add]) -> Result<HashMap<String, Manifest>> {
        let mut newest: HashMap<String, Manifest> = HashMap::new();
        for add in files {
            let Some(Some(text)) = add.tags.as_ref().and_then(|tags| tags.get(MANIFEST_TAG)) else { continue };
            let manifest: Manifest = serde_json::from_str(text)
                .map_err(|e| Error::Config(format!("{}: the manifest tag of {} is unreadable: {e}", self.url, add.path)))?;
            let newer = |kept: &Manifest| (kept.increments, &kept.committed_at) < (manifest.increments, &manifest.committed_at);
            if newest.get(&manifest.partition).is_none_or(newer) {
                newest.insert(manifest.partition.clone(), manifest);
            }
        }
        Ok(newest)
    }

    /// The transaction version of the partition's latest commit (0 before any).
    pub async fn transaction_version(&self, partition: &PartitionKey) -> Result<i64> {
        let Some(table) = &self.table else { return Ok(0) };
        let snapshot = table.snapshot().map_err(|e| delta_error(&self.url, e))?;
        let version = snapshot.transaction_version(table.log_store().as_ref(), &app_id(partition)).await.map_err(|e| delta_error(&self.url, e))?;
        Ok(version.unwrap_or(0))
    }

    /// Commits `files` (of `schema`), written under the partition's directory, as transaction
    /// version `version` of the partition, each carrying `manifest`; creates the table first when
    /// there is none.
    pub async fn commit(&mut self, partition: &PartitionKey, files: &[WrittenFile], schema: &Schema, manifest: &Manifest, joining: Joining, version: i64) -> Result<Commit> {
        if self.transaction_version(partition).await? >= version {
            return Ok(Commit::AlreadyMade);
        }
        let now = chrono::Utc::now().timestamp_millis();
        let values: HashMap<String, Option<String>> = partition.columns().into_iter().map(|(name, value)| (name.to_string(), Some(value.to_string()))).collect();
        let tags = HashMap::from([(MANIFEST_TAG.to_string(), Some(serde_json::to_string(manifest).expect("manifests serialise")))]);
        let data_change = !matches!(joining, Joining::Compact { .. });
        let mut actions = Vec::new();
        if joining != Joining::Add {
            for old in self.files(Some(partition)).await? {
                actions.push(Action::Remove(Remove {
                    path: old.path.clone(),
                    data_change,
                    deletion_timestamp: Some(now),
                    extended_file_metadata: Some(true),
                    partition_values: Some(old.partition_values.clone()),
                    size: Some(old.size),
                    tags: old.tags.clone(),
                    ..Remove::default()
                }));
            }
        }
        for file in files {
            actions.push(Action::Add(Add {
                path: format!("{}{}", partition.sink_path(), file.path.filename().unwrap_or_default()),
                partition_values: values.clone(),
                size: file.bytes as i64,
                modification_time: now,
                data_change,
                stats: Some(serde_json::json!({ "numRecords": file.rows }).to_string()),
                tags: Some(tags.clone()),
                ..Add::default()
            }));
        }
        let operation = match joining {
            Joining::Compact { target_bytes } => DeltaOperation::Optimize {
                predicate: Some(predicate(partition)),
                target_size: i64::try_from(target_bytes).unwrap_or(i64::MAX),
            },
            Joining::Replace | Joining::Add => DeltaOperation::Write {
                mode: if joining == Joining::Add { SaveMode::Append } else { SaveMode::Overwrite },
                partition_by: Some(values.keys().cloned().collect()),
                predicate: Some(predicate(partition)),
            },
        };
        let properties = CommitProperties::default()
            .with_application_transaction(Transaction::new_with_last_update(app_id(partition), version, Some(now)))
            .with_max_retries(COMMIT_RETRIES)
            .with_create_checkpoint(true)
            .with_cleanup_expired_logs(Some(false));
        let url = self.url.clone();
        let table = self.created(schema, partition).await?;
        let snapshot = table.snapshot().map_err(|e| delta_error(&url, e))?;
        let committed = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(snapshot as &dyn TableReference), table.log_store(), operation)
            .await;
        table.update_state().await.map_err(|e| delta_error(&url, e))?;
        match committed {
            Ok(finalized) => Ok(Commit::Made(finalized.version())),
            // The commit may have landed and only its response been lost (a retry of the
            // write then finds its own version taken), or another run of the partition may have
            // committed this transaction version first: it is the table that tells.
            Err(error) => match self.committed(partition).await? {
                Some(landed) if landed.run_id == manifest.run_id => Ok(Commit::Made(self.version().unwrap_or_default())),
                _ if self.transaction_version(partition).await? >= version => Ok(Commit::AlreadyMade),
                _ => Err(delta_error(&url, error)),
            },
        }
    }

    /// The table; none before it exists.
    pub fn table(&self) -> Option<&DeltaTable> {
        self.table.as_ref()
    }

    /// The table's current version; none before the table exists.
    pub fn version(&self) -> Option<u64> {
        self.table.as_ref().and_then(DeltaTable::version)
    }

    /// The current files of the partition, or of the whole table; their paths are relative to
    /// the table.
    pub async fn files(&self, partition: Option<&PartitionKey>) -> Result<Vec<Add>> {
        let Some(table) = &self.table else { return Ok(Vec::new()) };
        let values: Vec<(&str, String)> = partition.map(PartitionKey::columns).unwrap_or_default().into_iter().map(|(name, value)| (name, value.to_string())).collect();
        let filters: Vec<(&str, FilterOp, FilterValue<'_>)> =
            values.iter().map(|(name, value)| (*name, FilterOp::Eq, FilterValue::Scalar(value.as_str()))).collect();
        let views: Vec<_> = table.get_active_add_actions_by_partitions(&filters).try_collect().await.map_err(|e| delta_error(&self.url, e))?;
        // The only public way to a file's tags in this delta-rs release.
        #[allow(deprecated)]
        Ok(views.iter().map(|view| view.add_action()).collect())
    }
}

/// Creates the table; when another run created it first, loads that one.
async fn create(log_store: &LogStoreRef, url: &str, schema: &Schema, partition: &PartitionKey) -> Result<DeltaTable> {
    let partition_columns: Vec<&str> = partition.columns().into_iter().map(|(name, _)| name).collect();
    let data = Schema::new(schema.fields().iter().filter(|f| !partition_columns.contains(&f.name().as_str())).cloned().collect::<Vec<_>>());
    let data = StructType::try_from_arrow(&data).map_err(|e| Error::Config(format!("{url}: the output schema has no Delta type: {e}")))?;
    let mut columns: Vec<StructField> = data.fields().cloned().collect();
    columns.extend(partition_columns.iter().map(|name| StructField::new(*name, DataType::INTEGER, false)));
    let created = CreateBuilder::new()
        .with_log_store(log_store.clone())
        .with_columns(columns)
        .with_partition_columns(partition_columns)
        .with_save_mode(SaveMode::ErrorIfExists)
        // A creator that loses the race for version 0 must not commit a second table as
        // version 1: it fails, and the table the winner created is loaded.
        .with_commit_properties(CommitProperties::default().with_max_retries(0))
        .await;
    match created {
    Ok(table) => Ok(table),
    Err(_) => {
        let mut table = DeltaTable::new(log_store.clone());
        table.load().await.map_err(|e| delta_error(url, e))?;
        Ok(table)
    }
    }
}

/// The table's log store over the sink's object store (rooted at the bucket, or `/`).
fn log_store(sink: &Store) -> Result<LogStoreRef> {
    let url = Url::parse(&sink.location.url()).map_err(|e| Error::Config(format!("{}: {e}", sink.location.url())))?;
    let root: Arc<dyn ObjectStore> = Arc::clone(&sink.store);
    let prefixed: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(Arc::clone(&root), Path::from(sink.prefix.as_ref())));
    Ok(default_logstore(prefixed, root, &url, &StorageConfig::default()))
}

/// The transaction app id of a partition's commits.
fn app_id(partition: &PartitionKey) -> String {
    format!("eventpipe:{partition}")
}

/// The partition as a predicate over the partition columns, for the conflict checker.
fn predicate(partition: &PartitionKey) -> String {
    partition.columns().into_iter().map(|(name, value)| format!("{name} = {value}")).collect::<Vec<_>>().join(" AND ")
}

fn delta_error(url: &str, error: DeltaTableError) -> Error {
    Error::Config(format!("Delta table {url}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Location, Opener, Retrying};
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType as ArrowType, Field};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::parquet::arrow::ArrowWriter;
    use futures::stream::BoxStream;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStoreExt as _, PutMultipartOptions, PutOptions, PutPayload,
        PutResult,
    };

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![Field::new("id", ArrowType::Int64, false)]))
    }

    fn day(day: u8) -> PartitionKey {
        PartitionKey { year: 2026, month: 11, day, hour: None }
    }

    async fn sink(dir: &std::path::Path) -> Store {
        Opener::new(None).open(&Location::parse(dir.to_str().unwrap()).unwrap(), Retrying::Briefly).await.unwrap()
    }

    /// Writes a Parquet file of `rows` ids under the partition's directory, as a run does.
    async fn written(sink: &Store, partition: &PartitionKey, name: &str, rows: i64) -> WrittenFile {
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from_iter_values(0..rows))]).unwrap();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let path = sink.child(&format!("{}{name}", partition.sink_path()));
        let size = bytes.len() as u64;
        sink.store.put(&path, bytes.into()).await.unwrap();
        WrittenFile { path, rows: rows as u64, bytes: size }
    }

    fn manifest(partition: &PartitionKey, run: &str, increments: u32) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "runId": run, "partition": partition.to_string(), "inputFingerprint": format!("f-{run}"), "specHash": "s",
            "inputs": [], "files": [], "rowsRead": 1, "rowsRejected": 0, "rowsWritten": 1, "bytesWritten": 1,
            "increments": increments, "schema": [], "tool": "test", "committedAt": format!("2026-12-05T00:00:0{increments}Z"),
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_whole_run_replaces_the_partitions_files_in_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path()).await;
        let partition = day(24);
        let mut table = DeltaSink::open(&sink).await.unwrap();
        assert_eq!(table.version(), None);
        let first = [written(&sink, &partition, "a-0.parquet", 3).await, written(&sink, &partition, "a-1.parquet", 2).await];
        assert_eq!(table.commit(&partition, &first, &schema(), &manifest(&partition, "a", 1), Joining::Replace, 1).await.unwrap(), Commit::Made(1));
        let second = [written(&sink, &partition, "b-0.parquet", 4).await];
        assert_eq!(table.commit(&partition, &second, &schema(), &manifest(&partition, "b", 1), Joining::Replace, 2).await.unwrap(), Commit::Made(2));
        let files: Vec<String> = table.files(Some(&partition)).await.unwrap().into_iter().map(|add| add.path).collect();
        assert_eq!(files, vec!["year=2026/month=11/day=24/b-0.parquet"]);
        assert_eq!(table.committed(&partition).await.unwrap().unwrap().run_id, "b");
        let protocol = table.table.as_ref().unwrap().snapshot().unwrap().protocol().clone();
        assert_eq!((protocol.min_reader_version(), protocol.min_writer_version()), (1, 2));
    }

    #[tokio::test]
    async fn an_increment_adds_and_its_manifest_is_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path()).await;
        let partition = day(24);
        let mut table = DeltaSink::open(&sink).await.unwrap();
        let first = [written(&sink, &partition, "a-0.parquet", 3).await];
        table.commit(&partition, &first, &schema(), &manifest(&partition, "a", 1), Joining::Replace, 1).await.unwrap();
        let increment = [written(&sink, &partition, "b-0.parquet", 1).await];
        table.commit(&partition, &increment, &schema(), &manifest(&partition, "b", 2), Joining::Add, 2).await.unwrap();
        assert_eq!(table.files(Some(&partition)).await.unwrap().len(), 2);
        assert_eq!(table.committed(&partition).await.unwrap().unwrap().increments, 2);
    }

    /// A commit whose response was lost is retried with the same transaction version: it is
    /// recognised and commits nothing twice.
    #[tokio::test]
    async fn a_retried_commit_is_recognised_by_its_transaction_version() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path()).await;
        let partition = day(24);
        let mut table = DeltaSink::open(&sink).await.unwrap();
        let files = [written(&sink, &partition, "a-0.parquet", 3).await];
        table.commit(&partition, &files, &schema(), &manifest(&partition, "a", 1), Joining::Add, 1).await.unwrap();
        let mut reopened = DeltaSink::open(&sink).await.unwrap();
        assert_eq!(reopened.commit(&partition, &files, &schema(), &manifest(&partition, "a", 1), Joining::Add, 1).await.unwrap(), Commit::AlreadyMade);
        assert_eq!((reopened.version(), reopened.files(Some(&partition)).await.unwrap().len()), (Some(1), 1));
    }

    /// A store that writes the first commit after the table's creation and then reports the
    /// write as failed, as a connection reset after the request reached S3 does.
    #[derive(Debug)]
    struct LosesACommitResponse {
        inner: Arc<dyn ObjectStore>,
        lost: std::sync::atomic::AtomicBool,
    }

    impl std::fmt::Display for LosesACommitResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("LosesACommitResponse")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for LosesACommitResponse {
        async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
            let written = self.inner.put_opts(location, payload, opts).await?;
            let commit = location.as_ref().contains("_delta_log/") && location.as_ref().ends_with("01.json");
            if commit && !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Err(object_store::Error::Generic { store: "test", source: "connection reset by peer".into() });
            }
            Ok(written)
        }
        async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }
        async fn get_ranges(&self, location: &Path, ranges: &[std::ops::Range<u64>]) -> object_store::Result<Vec<bytes::Bytes>> {
            self.inner.get_ranges(location, ranges).await
        }
        fn delete_stream(&self, locations: BoxStream<'static, object_store::Result<Path>>) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// A commit that landed while its response was lost counts as made: the run neither fails
    /// (and deletes the files the table now lists) nor commits again.
    #[tokio::test]
    async fn a_commit_whose_response_was_lost_counts_as_made() {
        let dir = tempfile::tempdir().unwrap();
        let local = sink(dir.path()).await;
        let lossy = Store { store: Arc::new(LosesACommitResponse { inner: Arc::clone(&local.store), lost: false.into() }), ..local.clone() };
        let partition = day(24);
        let mut table = DeltaSink::open(&lossy).await.unwrap();
        let files = [written(&lossy, &partition, "a-0.parquet", 3).await];
        let made = table.commit(&partition, &files, &schema(), &manifest(&partition, "a", 1), Joining::Replace, 1).await.unwrap();
        assert!(table.table.is_some() && made == Commit::Made(1), "{made:?}");
        let reopened = DeltaSink::open(&local).await.unwrap();
        assert_eq!((reopened.version(), reopened.committed(&partition).await.unwrap().unwrap().run_id.as_str()), (Some(1), "a"));
    }

    /// Eight runs of eight partitions commit at once, each with its own handle on the table:
    /// every commit lands, each as its own version.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn runs_of_different_partitions_commit_concurrently() {
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(dir.path()).await;
        DeltaSink::open(&sink).await.unwrap();
        let runs = (1..=8u8).map(|d| {
            let sink = sink.clone();
            tokio::spawn(async move {
                let partition = day(d);
                let mut table = DeltaSink::open(&sink).await.unwrap();
                let files = [written(&sink, &partition, "a-0.parquet", i64::from(d)).await];
                table.commit(&partition, &files, &schema(), &manifest(&partition, "a", 1), Joining::Replace, 1).await
            })
        });
        let mut versions = Vec::new();
        for run in runs.collect::<Vec<_>>() {
            match run.await.unwrap().unwrap() {
                Commit::Made(version) => versions.push(version),
                Commit::AlreadyMade => panic!("a first commit was taken for a retry"),
            }
        }
        versions.sort();
        assert_eq!(versions, (1..=8).collect::<Vec<u64>>());
        let table = DeltaSink::open(&sink).await.unwrap();
        for d in 1..=8 {
            assert_eq!(table.files(Some(&day(d))).await.unwrap().len(), 1, "day {d}");
        }
    }
}
