//! Runs a planned transform and streams its output into Parquet files, one writer per output
//! partition of the plan so that encoding runs in parallel. Files are named after the run.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::{Compression, GzipLevel, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
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
use crate::storage::Store;

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
    /// [`crate::row_count::scanned_rows`]).
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

/// Executes `frame` and writes its rows as `part-<run id>-<n>.parquet` under `directory`.
pub async fn write(
    frame: DataFrame,
    store: &Store,
    directory: &Path,
    run_id: &str,
    compression: ParquetCompression,
) -> Result<Output> {
    let task_ctx = Arc::new(frame.task_ctx());
    let plan = with_writer_partitions(frame.create_physical_plan().await?, task_ctx.session_config().target_partitions())?;
    let schema = plan.schema();
    let properties = writer_properties(compression)?;
    let row_group_bytes = row_group_bytes(&task_ctx);
    let streams = execute_stream_partitioned(Arc::clone(&plan), task_ctx)?;
    // One task per stream, so that reading, the query and encoding run on every core.
    let mut writers = tokio::task::JoinSet::new();
    for (index, stream) in streams.into_iter().enumerate() {
        let path = directory.clone().join(format!("{}{index:03}.parquet", file_prefix(run_id)));
        writers.spawn(write_stream(stream, store.clone(), path, properties.clone(), row_group_bytes));
    }
    let mut files = Vec::new();
    while let Some(written) = writers.join_next().await {
        let written = written.map_err(|e| Error::Engine(datafusion::error::DataFusionError::External(Box::new(e))))?;
        files.extend(written?);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let scanned_rows = crate::row_count::scanned_rows(plan.as_ref());
    let spilled_bytes = sum_metric(plan.as_ref(), &|node| node.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0));
    Ok(Output { files, scanned_rows, spilled_bytes, schema })
}

/// The plan with exactly `writers` output partitions: one file and one encoding task each.
fn with_writer_partitions(plan: Arc<dyn ExecutionPlan>, writers: usize) -> Result<Arc<dyn ExecutionPlan>> {
    if plan.properties().output_partitioning().partition_count() == writers {
        return Ok(plan);
    }
    Ok(Arc::new(RepartitionExec::try_new(plan, Partitioning::RoundRobinBatch(writers))?))
}

async fn write_stream(
    mut stream: SendableRecordBatchStream,
    store: Store,
    path: Path,
    properties: WriterProperties,
    row_group_bytes: usize,
) -> Result<Option<WrittenFile>> {
    let mut writer: Option<AsyncArrowWriter<BufWriter>> = None;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        if writer.is_none() {
            let object = BufWriter::new(Arc::clone(&store.store), path.clone());
            writer = Some(AsyncArrowWriter::try_new(object, batch.schema(), Some(properties.clone()))?);
        }
        rows += batch.num_rows() as u64;
        let writer = writer.as_mut().expect("created above");
        writer.write(&batch).await?;
        if writer.memory_size() >= row_group_bytes {
            writer.flush().await?;
        }
    }
    let Some(writer) = writer else { return Ok(None) };
    writer.close().await?;
    let bytes = store.store.head(&path).await.map_err(|e| store.error(&path, e))?.size;
    Ok(Some(WrittenFile { path, rows, bytes }))
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
