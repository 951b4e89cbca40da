//! The upkeep of a Delta sink's table, run by a Job the operator schedules at most daily:
//!
//! - files no version within `sink.delta.retentionHours` lists are deleted: those a reprocess or
//!   a compaction took out of the table, once they are older than the retention, and those of
//!   runs that died before committing (the vacuum lists the whole table for them);
//! - a checkpoint of the current version is written, and the log's commits older than the
//!   table's log retention (`delta.logRetentionDuration`, 30 days by default) that the
//!   checkpoint covers are deleted.
//!
//! Readers of a version younger than the retention keep every file it lists. A run's own files
//! are listed by no version until it commits, so the retention must be longer than any run: the
//! operator refuses a spec whose retention is not longer than its Jobs' deadline.

use std::sync::Arc;

use deltalake::operations::vacuum::{Clock, VacuumMode};
use serde::{Deserialize, Serialize};

use crate::commit::delta::DeltaSink;
use crate::error::{Error, Result};
use crate::spec::{PipelineSpec, SinkFormat};
use crate::store::{Opener, Retrying};

/// What a vacuum did.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Vacuumed {
    /// Data files deleted.
    pub files_deleted: u64,
    /// Log files deleted.
    pub log_files_deleted: u64,
    /// The table's version when it was vacuumed; none when there is no table yet.
    pub version: Option<u64>,
}

/// Vacuums the table at the pipeline's sink, as at `clock`'s time (now when `None`).
pub async fn vacuum(pipeline: &PipelineSpec, clock: Option<Arc<dyn Clock>>) -> Result<Vacuumed> {
    if pipeline.sink.format != SinkFormat::Delta {
        return Err(Error::Config("a vacuum deletes what a Delta table no longer lists, and sink.format is not delta".into()));
    }
    let checked = crate::validate::check(pipeline)?;
    let sink = Opener::new(pipeline.s3.as_ref()).open(&checked.sink, Retrying::Patiently).await?;
    let opened = DeltaSink::open(&sink).await?;
    let Some(table) = opened.table() else { return Ok(Vacuumed::default()) };
    let url = sink.location.url();
    let failed = |error: deltalake::DeltaTableError| Error::Config(format!("vacuuming the Delta table {url}: {error}"));
    let retention = chrono::Duration::hours(i64::from(pipeline.sink.delta.retention_hours));
    let mut builder = table.clone().vacuum().with_retention_period(retention).with_enforce_retention_duration(false).with_mode(VacuumMode::Full);
    if let Some(clock) = clock {
        builder = builder.with_clock(clock);
    }
    let (table, metrics) = builder.await.map_err(failed)?;
    deltalake::protocol::checkpoints::create_checkpoint(&table, None).await.map_err(failed)?;
    let log_files_deleted = deltalake::protocol::checkpoints::cleanup_metadata(&table, None).await.map_err(failed)?;
    Ok(Vacuumed { files_deleted: metrics.files_deleted.len() as u64, log_files_deleted: log_files_deleted as u64, version: table.version() })
}
