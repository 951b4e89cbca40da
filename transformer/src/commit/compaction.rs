//! Compaction of a closed append-mode partition of a Delta sink. Each increment adds its own
//! files (288 a day at one Firehose object per 5 minutes), which makes every later query open
//! them all. Once the partition has closed, the operator launches a compaction: the files the
//! table holds for the partition are read back and written anew as files of about
//! `sink.delta.targetFileMib`, committed in one commit that removes the small ones, so readers
//! see the increments or the compacted files, never both and never neither.
//!
//! The rows come from the table's files, not from the source: what is compacted is exactly what
//! was committed. A rewrite that does not hold the committed number of rows is not committed.

use object_store::ObjectStoreExt as _;

use crate::commit::delta::{Commit, DeltaSink, Joining};
use crate::commit::manifest::{Manifest, ManifestFile};
use crate::commit::writer::{self, WrittenFile};
use crate::error::{Error, Result};
use crate::query::engine::Engine;
use crate::query::mode::Mode;
use crate::spec::{SinkFormat, SinkSpec};
use crate::store::Store;
use crate::task::{Task, new_run_id};

/// What a compaction did.
pub enum Compaction {
    /// The partition's files were rewritten; the manifest now committed.
    Done(Manifest),
    /// The partition's output is already one run's (a whole run, or compacted before).
    NotNeeded(Manifest),
}

/// Whether a partition's committed output is due for compaction: it is made of several runs'
/// files (`increments`) of an append-mode pipeline with a Delta sink, and the partition has
/// closed.
pub fn is_due(sink: &SinkSpec, mode: &Mode, closed: bool, increments: u32) -> bool {
    sink.format == SinkFormat::Delta && mode.is_append() && closed && increments > 1
}

/// Compacts the task's partition in the Delta table at `sink`.
pub async fn compact(task: &Task, sink: &Store) -> Result<Compaction> {
    let pipeline = &task.pipeline;
    if pipeline.sink.format != SinkFormat::Delta {
        return Err(Error::Config("compaction rewrites the files of a Delta table, and sink.format is not delta".into()));
    }
    let partition = &task.partition;
    let mut table = DeltaSink::open(sink).await?;
    let Some(committed) = table.committed(partition).await? else {
        return Err(Error::Config(format!("{}: partition {partition} has no committed output to compact", sink.location.url())));
    };
    if committed.increments <= 1 {
        return Ok(Compaction::NotNeeded(committed));
    }
    let transaction = table.transaction_version(partition).await? + 1;
    let files = table.files(Some(partition)).await?;
    let bytes: u64 = files.iter().map(|file| u64::try_from(file.size).unwrap_or(0)).sum();
    let target_bytes = pipeline.sink.delta.target_file_bytes();
    let writers = usize::try_from(bytes.div_ceil(target_bytes)).unwrap_or(usize::MAX).max(1);
    let engine = Engine::new(&task.engine, bytes, &Mode::Append)?;
    let paths: Vec<_> = files.iter().map(|file| sink.child(&file.path)).collect();
    let frame = engine.read_parquet(sink, &paths).await?;
    let directory = sink.child(&partition.sink_path());
    let run_id = new_run_id();
    let mut output = writer::write(frame, sink, &directory, &run_id, pipeline.sink.compression, writers).await?;
    if output.files.is_empty() {
        output.files.push(writer::write_empty(sink, &directory, &run_id, std::sync::Arc::clone(&output.schema), pipeline.sink.compression).await?);
    }
    let rows: u64 = output.files.iter().map(|file| file.rows).sum();
    let rewritten = Manifest {
        run_id,
        files: output.files.iter().map(ManifestFile::from).collect(),
        bytes_written: output.files.iter().map(|file| file.bytes).sum(),
        increments: 1,
        committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ..committed.clone()
    };
    let refused = if rows != committed.rows_written {
        Some(format!("the rewrite holds {rows} rows and the committed output {}", committed.rows_written))
    } else {
        match table.commit(partition, &output.files, &output.schema, &rewritten, Joining::Compact { target_bytes }, transaction).await {
            Ok(Commit::Made(_)) => None,
            Ok(Commit::AlreadyMade) => Some("another run committed the partition meanwhile".to_string()),
            Err(error) => {
                discard(sink, &output.files).await;
                return Err(error);
            }
        }
    };
    if let Some(reason) = refused {
        discard(sink, &output.files).await;
        return Err(Error::Config(format!("{}: partition {partition} was not compacted: {reason}", sink.location.url())));
    }
    Ok(Compaction::Done(rewritten))
}

/// Deletes the files of a rewrite that was not committed; what cannot be deleted now is left
/// for the vacuum, which deletes files no commit lists.
async fn discard(sink: &Store, files: &[WrittenFile]) {
    for file in files {
        if let Err(error) = sink.store.delete(&file.path).await {
            tracing::warn!(file = %sink.url_of(&file.path), %error, "an uncommitted file of the compaction is left for the vacuum");
        }
    }
}
