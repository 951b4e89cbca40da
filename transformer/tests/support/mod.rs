//! Fixtures for the transformer's integration tests: a task builder and Parquet read-back.

#![allow(dead_code, reason = "each test binary uses a different part of the fixtures")]

use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use eventpipe_transformer::layout::PartitionKey;
use eventpipe_transformer::spec::{
    BadRecordPolicy, Column, ColumnType, PipelineSpec, S3Settings, SinkSpec, SourceSpec, TimestampUnit, TransformSpec,
};
use eventpipe_transformer::task::Task;
use tempfile::TempDir;

/// The partition most tests use: 2026-11-24.
pub const DAY: PartitionKey = PartitionKey { year: 2026, month: 11, day: 24, hour: None };

/// The header of the user-event files.
pub const HEADER: &str = "id,name,value,timestamp\n";

/// The user-event columns: `id int64 not null, name string, value string, timestamp seconds not null`.
pub fn event_columns() -> Vec<Column> {
    let column = |name: &str, data_type, nullable| Column { name: name.into(), data_type, nullable, unit: None, format: None };
    vec![
        column("id", ColumnType::Int64, false),
        column("name", ColumnType::String, true),
        column("value", ColumnType::String, true),
        Column { unit: Some(TimestampUnit::Seconds), ..column("timestamp", ColumnType::Timestamp, false) },
    ]
}

/// Builds a task for one partition; inputs are discovered from the source like production does.
#[derive(Clone)]
pub struct TaskBuilder {
    pipeline: PipelineSpec,
    partition: PartitionKey,
}

impl TaskBuilder {
    /// A typed conversion of the user events from `source` to `sink` (URLs or directories).
    pub fn new(source: &str, sink: &str) -> Self {
        Self {
            pipeline: PipelineSpec {
                source: SourceSpec { url: source.into(), schema: event_columns(), ..Default::default() },
                sink: SinkSpec { url: sink.into(), ..Default::default() },
                ..Default::default()
            },
            partition: DAY,
        }
    }

    pub fn sql(mut self, sql: &str) -> Self {
        self.pipeline.transform = TransformSpec { sql: sql.into() };
        self
    }

    pub fn columns(mut self, columns: Vec<Column>) -> Self {
        self.pipeline.source.schema = columns;
        self
    }

    pub fn policy(mut self, policy: BadRecordPolicy) -> Self {
        self.pipeline.bad_records.policy = policy;
        self
    }

    pub fn rejected_url(mut self, url: &str) -> Self {
        self.pipeline.bad_records.url = Some(url.into());
        self
    }

    pub fn s3_endpoint(mut self, endpoint: &str) -> Self {
        self.pipeline.s3 = Some(S3Settings { endpoint: Some(endpoint.into()), force_path_style: true, ..S3Settings::default() });
        self
    }

    pub fn format(mut self, format: eventpipe_transformer::spec::SinkFormat) -> Self {
        self.pipeline.sink.format = format;
        self
    }

    pub fn header(mut self, header: bool) -> Self {
        self.pipeline.source.csv.header = header;
        self
    }

    /// The task; the run lists the partition itself.
    pub fn build(self) -> Task {
        Task {
            partition: self.partition,
            expected_fingerprint: None,
            pipeline: self.pipeline,
            engine: Default::default(),
            force: false,
            full: false,
            compact: false,
            settled_before: None,
        }
    }
}

/// Writes files into the partition directory of [`DAY`] below `root`.
pub fn write_partition(root: &Path, files: &[(&str, &[u8])]) {
    let dir = root.join("year=2026/month=11/day=24");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

/// Gzip-compresses bytes.
pub fn gzip(content: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(content).unwrap();
    encoder.finish().unwrap()
}

/// Runs `sql` over the Parquet files at `url` (a directory or a single file), registered as `out`.
pub async fn query_parquet(ctx: &SessionContext, url: &str, sql: &str) -> Vec<RecordBatch> {
    ctx.register_parquet("out", url, ParquetReadOptions::default()).await.unwrap();
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

/// Batches as the pretty table Arrow prints, one string per line.
pub fn table(batches: &[RecordBatch]) -> Vec<String> {
    pretty_format_batches(batches).unwrap().to_string().lines().map(str::to_string).collect()
}

/// A source and a sink directory on local disk, for runs end to end.
pub struct Dirs {
    /// The source directory.
    pub source: TempDir,
    /// The sink directory.
    pub sink: TempDir,
}

impl Dirs {
    /// Two new temporary directories.
    pub fn new() -> Self {
        Self { source: TempDir::new().unwrap(), sink: TempDir::new().unwrap() }
    }

    /// A task converting the partition of [`DAY`] from the source to the sink.
    pub fn builder(&self) -> TaskBuilder {
        TaskBuilder::new(self.source.path().to_str().unwrap(), self.sink.path().to_str().unwrap())
    }

    /// The partition's directory in the sink.
    pub fn output_dir(&self) -> std::path::PathBuf {
        self.sink.path().join(DAY.sink_path())
    }

    /// The names in the partition's sink directory, sorted.
    pub fn output_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.output_dir())
            .map(|entries| entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// `sql` over the partition's Parquet files, registered as `out`, as table lines.
    pub async fn query(&self, sql: &str) -> Vec<String> {
        let ctx = SessionContext::new();
        table(&query_parquet(&ctx, &format!("{}/", self.output_dir().display()), sql).await)
    }
}
