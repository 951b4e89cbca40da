//! The commit protocol. A partition's output is the set of files its `_manifest.json` lists; the
//! manifest is written last, so it is the commit point. Files of superseded or failed runs are
//! deleted after it. Readers such as Athena skip names starting with `_`.

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Store;

/// The manifest's file name inside a partition directory.
pub const MANIFEST_NAME: &str = "_manifest.json";

/// The committed state of one output partition.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The run that committed this output.
    pub run_id: String,
    /// The partition, `year=YYYY/month=MM/day=DD`.
    pub partition: String,
    /// Fingerprint of the inputs the output was made from.
    pub input_fingerprint: String,
    /// Hash of the data-path spec the output was made with (empty in manifests written before
    /// it was recorded, which therefore never match a current spec).
    #[serde(default)]
    pub spec_hash: String,
    /// The inputs, as `path size etag` entries relative to the source URL.
    pub inputs: Vec<crate::task::InputObject>,
    /// The data files, relative to the partition directory.
    pub files: Vec<ManifestFile>,
    /// Input rows read.
    pub rows_read: u64,
    /// Input rows rejected as bad.
    pub rows_rejected: u64,
    /// Output rows written.
    pub rows_written: u64,
    /// Output bytes written.
    pub bytes_written: u64,
    /// Where the rejected rows were quarantined, when any were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_rows_url: Option<String>,
    /// The output columns with their Arrow types.
    pub schema: Vec<ManifestColumn>,
    /// The program that wrote the output.
    pub tool: String,
    /// When the output was committed (RFC 3339).
    pub committed_at: String,
}

/// One data file of a committed partition.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ManifestFile {
    /// File name inside the partition directory.
    pub name: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// One output column.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ManifestColumn {
    /// Column name.
    pub name: String,
    /// Arrow data type, as Arrow prints it.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether the column may hold nulls.
    pub nullable: bool,
}

/// A manifest as found in the store, with the version needed to replace it conditionally.
#[derive(Clone, Debug)]
pub struct Committed {
    /// The manifest.
    pub manifest: Manifest,
    version: UpdateVersion,
}

/// Reads the manifest of the partition directory, if one is committed.
pub async fn read(store: &Store, directory: &Path) -> Result<Option<Committed>> {
    let path = directory.clone().join(MANIFEST_NAME);
    let result = match store.store.get(&path).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store.error(&path, e)),
    };
    let version = UpdateVersion { e_tag: result.meta.e_tag.clone(), version: result.meta.version.clone() };
    let bytes = result.bytes().await.map_err(|e| store.error(&path, e))?;
    let manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Config(format!("{} is not a manifest eventpipe can read: {e}", store.url_of(&path))))?;
    Ok(Some(Committed { manifest, version }))
}

impl Manifest {
    /// Whether this output was made from these inputs with this spec.
    pub fn matches(&self, input_fingerprint: &str, spec_hash: &str) -> bool {
        self.input_fingerprint == input_fingerprint && self.spec_hash == spec_hash
    }

    /// What this committed output reports when a run finds it already done: its counts, no work
    /// of its own, and its files relative to the partition directory.
    pub fn summary(&self) -> crate::task::Summary {
        crate::task::Summary {
            partition: self.partition.clone(),
            run_id: self.run_id.clone(),
            input_fingerprint: self.input_fingerprint.clone(),
            spec_hash: self.spec_hash.clone(),
            rows_read: self.rows_read,
            rows_rejected: self.rows_rejected,
            rows_written: self.rows_written,
            bytes_written: self.bytes_written,
            files: self.files.iter().map(|f| f.name.clone()).collect(),
            spilled_bytes: 0,
            skipped: true,
            seconds: 0.0,
        }
    }
}

/// Writes `manifest` as the partition's commit point. When `previous` is given, the write succeeds
/// only if the stored manifest is still that one (on stores that support conditional writes), so
/// two runs can never both believe they committed.
pub async fn commit(store: &Store, directory: &Path, manifest: &Manifest, previous: Option<&Committed>) -> Result<()> {
    let path = directory.clone().join(MANIFEST_NAME);
    let payload = PutPayload::from(serde_json::to_vec_pretty(manifest).expect("manifests serialise"));
    let mode = match previous {
        Some(committed) => PutMode::Update(committed.version.clone()),
        None => PutMode::Create,
    };
    let outcome = store.store.put_opts(&path, payload.clone(), PutOptions::from(mode)).await;
    match outcome {
        Ok(_) => Ok(()),
        Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
            Err(Error::ConcurrentCommit(store.url_of(&path)))
        }
        // Local file systems cannot compare versions; a run there is the only writer.
        Err(object_store::Error::NotImplemented { .. }) => {
            store.store.put(&path, payload).await.map(|_| ()).map_err(|e| store.error(&path, e))
        }
        Err(e) => Err(store.error(&path, e)),
    }
}

/// Deletes every data file under `directory` whose name starts with `prefix` and is not in
/// `keep`: the files of superseded and failed runs.
pub async fn remove_stale(store: &Store, directory: &Path, prefix: &str, keep: &[String]) -> Result<()> {
    let relative = store.relative(directory).to_string();
    for object in store.list(&relative).await? {
        let Some(name) = object.location.filename() else { continue };
        let direct_child = object.location.prefix_matches(directory) && object.location.parts().count() == directory.parts().count() + 1;
        if direct_child && name.starts_with(prefix) && !keep.iter().any(|k| k == name) {
            match store.store.delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store.error(&object.location, e)),
            }
        }
    }
    Ok(())
}
