//! Runs a planned transform and streams its output into Parquet files, one writer per output
//! partition of the plan so that encoding runs in parallel. Files are named after the run.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::{Compression, Encoding, GzipLevel, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning, SendableRecordBatchStream, execute_stream_partitioned};
use datafusion::prelude::DataFrame;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;

use crate::error::{Error, Result};
use crate::spec::ParquetCompression;
use crate::store::Store;

/// One Parquet file written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    /// The file's path in the sink store.
    pub path: Path,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// What executing the transform produced.
#[derive(Debug)]
pub struct Output {
    /// Files written, in name order.
    pub files: Vec<WrittenFile>,
    /// Rows the data-file scans produced, when every leaf of the plan was a full scan (see
    /// [`crate::query::row_count::scanned_rows`]).
    pub scanned_rows: Option<u64>,
    /// Bytes the query spilled to disk to stay within its memory limit.
    pub spilled_bytes: u64,
    /// The output schema.
    pub schema: SchemaRef,
}

/// The name prefix of the data files a run writes.
pub fn file_prefix(run_id: &str) -> String {
    format!("part-{run_id}-")
}

/// Executes `frame` and writes its rows as `part-<run id>-<n>.parquet` under `directory`, in
/// `writers` files written in parallel.
pub async fn write(
    frame: DataFrame,
    store: &Store,
    directory: &Path,
    run_id: &str,
    compression: ParquetCompression,
    writers: usize,
) -> Result<Output> {
    let task_ctx = Arc::new(frame.task_ctx());
    let plan = with_writer_partitions(frame.create_physical_plan().await?, writers)?;
    let schema = plan.schema();
    let properties = writer_properties(compression)?;
    let row_group_bytes = row_group_bytes(&task_ctx);
    let streams = execute_stream_partitioned(Arc::clone(&plan), task_ctx)?;
    // One task per stream, so that reading, the query and encoding run on every core.
    let mut writers = tokio::task::JoinSet::new();
    for (index, stream) in streams.into_iter().enumerate() {
        let path = directory.clone().join(format!("{}{index:03}.parquet", file_prefix(run_id)));
        let upload = Upload::new(store.clone(), path, UPLOAD_PART_BYTES);
        writers.spawn(write_stream(stream, upload, properties.clone(), row_group_bytes));
    }
    let mut files = Vec::new();
    while let Some(written) = writers.join_next().await {
        let written = written.map_err(|e| Error::Engine(datafusion::error::DataFusionError::External(Box::new(e))))?;
        files.extend(written?);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let scanned_rows = crate::query::row_count::scanned_rows(plan.as_ref());
    let spilled_bytes = sum_metric(plan.as_ref(), &|node| node.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0));
    Ok(Output { files, scanned_rows, spilled_bytes, schema })
}

/// Writes `part-<run id>-000.parquet` without rows, for a sink whose commit records what a
/// partition holds in its files (a Delta table): a run whose SQL kept no row commits that file.
pub async fn write_empty(store: &Store, directory: &Path, run_id: &str, schema: SchemaRef, compression: ParquetCompression) -> Result<WrittenFile> {
    let path = directory.clone().join(format!("{}000.parquet", file_prefix(run_id)));
    let mut bytes = Vec::new();
    let writer = datafusion::parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, Some(writer_properties(compression)?))?;
    writer.close()?;
    let size = bytes.len() as u64;
    store.store.put(&path, bytes.into()).await.map_err(|e| store.error(&path, e))?;
    Ok(WrittenFile { path, rows: 0, bytes: size })
}

/// The plan with exactly `writers` output partitions: one file and one encoding task each.
fn with_writer_partitions(plan: Arc<dyn ExecutionPlan>, writers: usize) -> Result<Arc<dyn ExecutionPlan>> {
    if plan.properties().output_partitioning().partition_count() == writers {
        return Ok(plan);
    }
    Ok(Arc::new(RepartitionExec::try_new(plan, Partitioning::RoundRobinBatch(writers))?))
}

/// Writes one stream into one file; a stream without rows writes none.
async fn write_stream(
    mut stream: SendableRecordBatchStream,
    mut upload: Upload,
    properties: WriterProperties,
    row_group_bytes: usize,
) -> Result<Option<WrittenFile>> {
    while let Some(batch) = stream.next().await {
        let batch = match batch {
            Ok(batch) if batch.num_rows() == 0 => continue,
            Ok(batch) => batch,
            Err(error) => {
                upload.abort().await;
                return Err(error.into());
            }
        };
        if let Err(error) = upload.write(&batch, &properties, row_group_bytes).await {
            upload.abort().await;
            return Err(error);
        }
    }
    upload.close().await
}

/// The size of the parts a Parquet file is uploaded in.
const UPLOAD_PART_BYTES: usize = 10 * 1024 * 1024;

/// A Parquet file being written, opened with its first batch. Parts of a large file are uploaded
/// while it is written, as an S3 multipart upload; a file given up — the query failed, or the run
/// was cancelled at its time limit — aborts that upload, so a failed run leaves no incomplete
/// upload behind (S3 keeps and bills them until a lifecycle rule removes them).
struct Upload {
    store: Store,
    path: Path,
    part_bytes: usize,
    writer: Option<AsyncArrowWriter<BufWriter>>,
    rows: u64,
}

impl Upload {
    fn new(store: Store, path: Path, part_bytes: usize) -> Self {
        Self { store, path, part_bytes, writer: None, rows: 0 }
    }

    async fn write(&mut self, batch: &RecordBatch, properties: &WriterProperties, row_group_bytes: usize) -> Result<()> {
        if self.writer.is_none() {
            let object = BufWriter::with_capacity(Arc::clone(&self.store.store), self.path.clone(), self.part_bytes);
            let properties = encodings_by_first_batch(properties.clone(), batch);
            self.writer = Some(AsyncArrowWriter::try_new(object, batch.schema(), Some(properties))?);
        }
        let writer = self.writer.as_mut().expect("opened above");
        writer.write(batch).await?;
        self.rows += batch.num_rows() as u64;
        if writer.memory_size() >= row_group_bytes {
            writer.flush().await?;
        }
        Ok(())
    }

    /// Finishes the file, or writes none when no row came.
    async fn close(mut self) -> Result<Option<WrittenFile>> {
        let Some(writer) = self.writer.take() else { return Ok(None) };
        writer.close().await?;
        let bytes = self.store.store.head(&self.path).await.map_err(|e| self.store.error(&self.path, e))?.size;
        Ok(Some(WrittenFile { path: self.path.clone(), rows: self.rows, bytes }))
    }

    async fn abort(&mut self) {
        if let Some(writer) = self.writer.take() {
            abort_upload(writer, self.store.url_of(&self.path)).await;
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(abort_upload(writer, self.store.url_of(&self.path)));
        }
    }
}

async fn abort_upload(writer: AsyncArrowWriter<BufWriter>, url: String) {
    if let Err(error) = writer.into_inner().abort().await {
        tracing::warn!(%url, %error, "aborting the upload of a file given up failed; an S3 lifecycle rule removes it");
    }
}

fn writer_properties(compression: ParquetCompression) -> Result<WriterProperties> {
    let codec = match compression {
        ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::try_new(3)?),
        ParquetCompression::Snappy => Compression::SNAPPY,
        ParquetCompression::Gzip => Compression::GZIP(GzipLevel::try_new(6)?),
        ParquetCompression::None => Compression::UNCOMPRESSED,
    };
    Ok(WriterProperties::builder()
        .set_compression(codec)
        .set_created_by(format!("eventpipe {}", env!("CARGO_PKG_VERSION")))
        .build())
}

/// How much of a first batch [`encodings_by_first_batch`] looks at per column.
const DICTIONARY_SAMPLE: usize = 4096;

/// `properties` with the encoding and statistics of each column chosen from the file's first batch.
///
/// A dictionary pays for few distinct values (setting names and values: small indices, much
/// smaller files). For mostly distinct ones each value is hashed and compared into a dictionary
/// that outgrows its page and falls back anyway, so those columns are written without one:
/// integers and times (user ids, timestamps) as DELTA_BINARY_PACKED, which stores the differences
/// between neighbouring values in as few bits as a block needs and leaves zstd little to do, the
/// others plain. Measured on the benchmark's conversion (10 M rows, user ids below 2^20): 36.2 MB
/// instead of 42.7 MB with plain ids, in 0.87× the wall time.
///
/// String columns keep min/max statistics only when the batch is sorted on them. Unsorted, a row
/// group's or page's range spans nearly every value and prunes nothing, while computing it compares
/// every value twice: without them the conversion took 0.90× the wall time.
fn encodings_by_first_batch(properties: WriterProperties, batch: &RecordBatch) -> WriterProperties {
    let mut builder = properties.into_builder();
    for (field, column) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        let path = ColumnPath::from(field.name().as_str());
        if distinct_share(column.as_ref()).is_some_and(|share| share > 0.5) {
            builder = builder.set_column_dictionary_enabled(path.clone(), false);
            if is_delta_encodable(field.data_type()) {
                builder = builder.set_column_encoding(path.clone(), Encoding::DELTA_BINARY_PACKED);
            }
        }
        if is_unsorted_text(column.as_ref()) {
            builder = builder.set_column_statistics_enabled(path, EnabledStatistics::None);
        }
    }
    builder.build()
}

/// Whether a string column's first values, nulls left out, are out of order.
fn is_unsorted_text(column: &dyn Array) -> bool {
    let sample = column.slice(0, column.len().min(DICTIONARY_SAMPLE));
    match sample.data_type() {
        DataType::Utf8 => !sample.as_string::<i32>().iter().flatten().is_sorted(),
        DataType::LargeUtf8 => !sample.as_string::<i64>().iter().flatten().is_sorted(),
        DataType::Utf8View => !sample.as_string_view().iter().flatten().is_sorted(),
        _ => false,
    }
}

/// Whether Parquet stores the type as INT32 or INT64, the physical types DELTA_BINARY_PACKED takes.
fn is_delta_encodable(data_type: &DataType) -> bool {
    data_type.is_integer()
        || matches!(
            data_type,
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) | DataType::Time32(_) | DataType::Time64(_) | DataType::Duration(_)
        )
}

/// The share of distinct values among the first non-null values of a flat column (numbers, times,
/// strings); `None` for other types or a column without values.
fn distinct_share(column: &dyn Array) -> Option<f64> {
    let sample = column.slice(0, column.len().min(DICTIONARY_SAMPLE));
    let values = sample.len() - sample.null_count();
    if values == 0 {
        return None;
    }
    let distinct = match sample.data_type() {
        data_type if data_type.is_primitive() => {
            let data = sample.to_data();
            let width = data_type.primitive_width()?;
            let bytes = &data.buffers()[0].as_slice()[data.offset() * width..(data.offset() + data.len()) * width];
            let valid = |index: &usize| sample.is_valid(*index);
            (0..sample.len()).filter(valid).map(|index| &bytes[index * width..(index + 1) * width]).collect::<HashSet<_>>().len()
        }
        DataType::Utf8 => distinct_strings(sample.as_string::<i32>().iter()),
        DataType::LargeUtf8 => distinct_strings(sample.as_string::<i64>().iter()),
        DataType::Utf8View => distinct_strings(sample.as_string_view().iter()),
        _ => return None,
    };
    Some(distinct as f64 / values as f64)
}

fn distinct_strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> usize {
    values.flatten().collect::<HashSet<_>>().len()
}

/// The most a writer buffers of one row group before it writes it out. Writers buffer outside the
/// query's memory pool, so a row group is cut by bytes as well as by rows: an eighth of the pool
/// per writer (writers run one per core), between 4 and 128 MiB.
fn row_group_bytes(task_ctx: &datafusion::execution::TaskContext) -> usize {
    const MIB: usize = 1024 * 1024;
    match task_ctx.memory_pool().memory_limit() {
        MemoryLimit::Finite(limit) => (limit / 8).clamp(4 * MIB, 128 * MIB),
        _ => 128 * MIB,
    }
}

/// The sum of a per-node figure over the whole plan.
fn sum_metric(plan: &dyn ExecutionPlan, figure: &dyn Fn(&dyn ExecutionPlan) -> usize) -> u64 {
    figure(plan) as u64 + plan.children().iter().map(|child| sum_metric(child.as_ref(), figure)).sum::<u64>()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::error::DataFusionError;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use object_store::memory::InMemory;
    use object_store::{MultipartUpload, ObjectStore, PutMultipartOptions, PutPayload, PutResult, UploadPart};

    use super::*;
    use crate::store::Location;
    use crate::store::test_store::{Misbehaving, Misbehaviour};

    /// Records the multipart uploads aborted.
    #[derive(Debug, Default)]
    struct RecordsAborts {
        aborted: Arc<Mutex<Vec<String>>>,
    }

    #[derive(Debug)]
    struct Recorded {
        upload: Box<dyn MultipartUpload>,
        location: String,
        aborted: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl MultipartUpload for Recorded {
        fn put_part(&mut self, data: PutPayload) -> UploadPart {
            self.upload.put_part(data)
        }
        async fn complete(&mut self) -> object_store::Result<PutResult> {
            self.upload.complete().await
        }
        async fn abort(&mut self) -> object_store::Result<()> {
            self.aborted.lock().unwrap().push(self.location.clone());
            self.upload.abort().await
        }
    }

    #[async_trait]
    impl Misbehaviour for RecordsAborts {
        async fn put_multipart_opts(
            &self,
            inner: &InMemory,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            let upload = inner.put_multipart_opts(location, opts).await?;
            Ok(Box::new(Recorded { upload, location: location.to_string(), aborted: Arc::clone(&self.aborted) }))
        }
    }

    fn batch(rows: usize) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("value", DataType::Utf8, false)]));
        let values: StringArray = (0..rows).map(|row| Some(format!("value-{row:08}-{}", row * 7919 % 104_729))).collect();
        RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap()
    }

    /// A query whose stream yields `batches` batches and then fails.
    fn failing_query(batches: usize) -> SendableRecordBatchStream {
        let schema = batch(1).schema();
        let items = (0..batches).map(|_| Ok(batch(4096))).chain([Err(DataFusionError::Execution("division by zero".into()))]);
        Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter(items)))
    }

    #[test]
    fn near_unique_columns_are_written_without_a_dictionary_and_integers_as_deltas() {
        use datafusion::arrow::array::{Float64Array, Int64Array, TimestampMicrosecondArray};
        let rows = 1000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("timestamp", DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())), false),
            Field::new("day", DataType::Int64, false),
            Field::new("score", DataType::Float64, false),
        ]));
        let ids: Int64Array = (0..rows).collect();
        let names: StringArray = (0..rows).map(|row| Some(["theme", "locale", "font_size"][row as usize % 3])).collect();
        let times = TimestampMicrosecondArray::from_iter_values((0..rows).map(|row| row * 7_919)).with_timezone("UTC");
        let days = Int64Array::from_iter_values((0..rows).map(|_| 24));
        let scores = Float64Array::from_iter_values((0..rows).map(|row| row as f64 / 7.0));
        let columns: Vec<Arc<dyn Array>> = vec![Arc::new(ids), Arc::new(names), Arc::new(times), Arc::new(days), Arc::new(scores)];
        let batch = RecordBatch::try_new(schema, columns).unwrap();
        let properties = encodings_by_first_batch(writer_properties(ParquetCompression::Zstd).unwrap(), &batch);
        let encoding = |column: &str| {
            let path = ColumnPath::from(column);
            (properties.dictionary_enabled(&path), properties.encoding(&path))
        };
        let delta = Some(Encoding::DELTA_BINARY_PACKED);
        assert_eq!(encoding("id"), (false, delta));
        assert_eq!(encoding("timestamp"), (false, delta));
        assert_eq!(encoding("name"), (true, None));
        assert_eq!(encoding("day"), (true, None));
        assert_eq!(encoding("score"), (false, None), "floats have no delta encoding");
    }

    #[test]
    fn string_columns_keep_statistics_only_when_sorted() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("sorted", DataType::Utf8, true),
            Field::new("unsorted", DataType::Utf8, true),
            Field::new("id", DataType::Int64, false),
        ]));
        let sorted: StringArray = [Some("a"), None, Some("b"), Some("b"), Some("c")].into_iter().collect();
        let unsorted: StringArray = [Some("theme"), Some("locale"), None, Some("zoom"), Some("a")].into_iter().collect();
        let ids = datafusion::arrow::array::Int64Array::from(vec![5, 3, 9, 1, 2]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(sorted), Arc::new(unsorted), Arc::new(ids)]).unwrap();
        let properties = encodings_by_first_batch(writer_properties(ParquetCompression::Zstd).unwrap(), &batch);
        let statistics = |column: &str| properties.statistics_enabled(&ColumnPath::from(column));
        assert_eq!(statistics("sorted"), EnabledStatistics::Page);
        assert_eq!(statistics("unsorted"), EnabledStatistics::None);
        assert_eq!(statistics("id"), EnabledStatistics::Page, "numbers keep theirs, sorted or not");
    }

    #[tokio::test]
    async fn a_file_given_up_mid_upload_aborts_its_upload() {
        let recording = Arc::new(Misbehaving::<RecordsAborts>::default());
        let location = Location::S3 { bucket: "out".into(), prefix: "curated/".into() };
        let root_url = url::Url::parse("s3://out").unwrap();
        let store = Store { store: Arc::clone(&recording) as _, root_url, prefix: Path::from("curated"), location };
        let path = store.child("part-run-000.parquet");
        // Row groups of at most 64 KiB and upload parts of 64 KiB: the failure comes mid-upload.
        let properties = writer_properties(ParquetCompression::None).unwrap();
        let upload = Upload::new(store.clone(), path.clone(), 64 * 1024);
        let error = write_stream(failing_query(8), upload, properties, 64 * 1024).await.unwrap_err();
        assert!(error.to_string().contains("division by zero"), "{error}");
        assert_eq!(*recording.misbehaviour.aborted.lock().unwrap(), [path.to_string()]);
        assert!(recording.inner.head(&path).await.is_err(), "nothing was completed");
    }
}
