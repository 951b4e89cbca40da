//! Converting a Parquet sink into a Delta table in place (`eventpipe convert-to-delta`): each
//! partition's committed files — those its `_manifest.json` lists, nothing else — are committed
//! to the table as that partition's output, each carrying the manifest, so the pipeline goes on
//! from there with `sink.format: delta` without processing any partition again.
//!
//! delta-rs' own convert-to-Delta is not used: it takes every Parquet file below the location,
//! and a Parquet sink can hold files no manifest lists (a run that died before its commit, a
//! superseded run's files not deleted yet), which would then be read as rows of the table.

use object_store::ObjectStoreExt as _;
use object_store::path::Path;

use crate::commit::delta::{Commit, DeltaSink, Joining};
use crate::commit::manifest::{self, MANIFEST_NAME, Manifest};
use crate::commit::writer::WrittenFile;
use crate::error::{Error, Result};
use crate::layout::PartitionKey;
use crate::query::engine::Engine;
use crate::query::mode::Mode;
use crate::store::Store;
use crate::task::EngineSettings;

/// What the conversion did with one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertedPartition {
    /// The partition.
    pub partition: PartitionKey,
    /// Files committed to the table.
    pub files: usize,
    /// Whether the table held the partition already (a conversion run again).
    pub already_converted: bool,
}

/// Commits every partition of the Parquet sink at `sink` to a Delta table at the same location.
pub async fn convert(sink: &Store) -> Result<Vec<ConvertedPartition>> {
    let mut manifests = committed_manifests(sink).await?;
    manifests.sort_by_key(|(partition, _, _)| *partition);
    let mut table = DeltaSink::open(sink).await?;
    let mut converted = Vec::new();
    for (partition, directory, manifest) in manifests {
        let files: Vec<WrittenFile> = manifest
            .files
            .iter()
            .map(|file| WrittenFile { path: directory.clone().join(file.name.as_str()), rows: file.rows, bytes: file.bytes })
            .collect();
        for file in &files {
            sink.store.head(&file.path).await.map_err(|e| {
                Error::Config(format!("{}: the manifest of {partition} lists a file that cannot be read: {e}", sink.url_of(&file.path)))
            })?;
        }
        let schema = match files.first() {
            Some(file) => Engine::new(&EngineSettings::default(), 0, &Mode::Append)?.read_parquet(sink, std::slice::from_ref(&file.path)).await?.schema().as_arrow().clone(),
            None => return Err(Error::Config(format!("{}: the manifest lists no file", sink.url_of(&directory)))),
        };
        let commit = table.commit(&partition, &files, &schema, &manifest, Joining::Replace, 1).await?;
        converted.push(ConvertedPartition { partition, files: files.len(), already_converted: commit == Commit::AlreadyMade });
    }
    Ok(converted)
}

/// The manifest of every partition directory below the sink, with the partition and directory.
async fn committed_manifests(sink: &Store) -> Result<Vec<(PartitionKey, Path, Manifest)>> {
    let mut found = Vec::new();
    for object in sink.list("").await? {
        if object.location.filename() != Some(MANIFEST_NAME) {
            continue;
        }
        let relative = sink.relative(&object.location);
        let directory_text = relative.strip_suffix(MANIFEST_NAME).unwrap_or(relative);
        let partition: PartitionKey = directory_text.parse().map_err(|e| Error::Config(format!("{}: {e}", sink.url_of(&object.location))))?;
        let directory = sink.child(directory_text);
        if let Some(committed) = manifest::read(sink, &directory).await? {
            found.push((partition, directory, committed.manifest));
        }
    }
    Ok(found)
}
