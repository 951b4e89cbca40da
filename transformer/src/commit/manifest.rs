//! The commit protocol. A partition's output is the set of files its `_manifest.json` lists; the
//! manifest is written last, so it is the commit point. Files of superseded or failed runs are
//! deleted after it. Readers such as Athena skip names starting with `_`.

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::spec::CommitMode;
use crate::task::InputObject;
use crate::store::{Location, Store};

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
    /// Input rows rejected: bad ones, and those of an event-time partition rejected for their
    /// event time.
    pub rows_rejected: u64,
    /// Input rows of other event-time partitions (see `crate::event_time`): read, and left to
    /// the partition that keeps or rejects them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_routed: u64,
    /// Output rows written.
    pub rows_written: u64,
    /// Output bytes written.
    pub bytes_written: u64,
    /// Where the rejected rows of the latest run were quarantined, when it had any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_rows_url: Option<String>,
    /// The quarantine files of every run this output is made of, in the rejected-rows location's
    /// partition directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_files: Vec<String>,
    /// How many runs made this output: 1 for a whole partition, one more for each increment
    /// added in append mode.
    #[serde(default = "one")]
    pub increments: u32,
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

impl From<&crate::commit::writer::WrittenFile> for ManifestFile {
    fn from(file: &crate::commit::writer::WrittenFile) -> Self {
        Self { name: file.path.filename().unwrap_or_default().to_string(), rows: file.rows, bytes: file.bytes }
    }
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

fn is_zero(rows: &u64) -> bool {
    *rows == 0
}

fn one() -> u32 {
    1
}

impl Manifest {
    /// The objects of `listed` this output does not hold yet, when it can grow by them: it was
    /// made with this spec and every object it was made from is still listed, unchanged. `None`
    /// when the partition must be processed whole (or there is nothing new).
    pub fn increment(&self, listed: &[InputObject], spec_hash: &str) -> Option<Vec<InputObject>> {
        if self.spec_hash != spec_hash || !self.inputs.iter().all(|committed| listed.contains(committed)) {
            return None;
        }
        let new: Vec<InputObject> = listed.iter().filter(|input| !self.inputs.contains(input)).cloned().collect();
        (!new.is_empty()).then_some(new)
    }

    /// This output with an increment's output added: its inputs (and so the fingerprint), files,
    /// counts and quarantined rows; the increment's run id, schema and commit time.
    pub fn appended(&self, increment: Manifest) -> Manifest {
        let mut inputs = self.inputs.clone();
        inputs.extend(increment.inputs);
        inputs.sort();
        let input_fingerprint = crate::commit::fingerprint::fingerprint(&inputs);
        let mut files = self.files.clone();
        files.extend(increment.files);
        let mut rejected_files = self.committed_rejected_files();
        rejected_files.extend(increment.rejected_files);
        Manifest {
            input_fingerprint,
            inputs,
            files,
            rows_read: self.rows_read + increment.rows_read,
            rows_rejected: self.rows_rejected + increment.rows_rejected,
            rows_routed: self.rows_routed + increment.rows_routed,
            rows_written: self.rows_written + increment.rows_written,
            bytes_written: self.bytes_written + increment.bytes_written,
            rejected_rows_url: increment.rejected_rows_url.or_else(|| self.rejected_rows_url.clone()),
            rejected_files,
            increments: self.increments + 1,
            ..increment
        }
    }

    /// The quarantine files this output keeps; a manifest from before they were listed names
    /// its one file in `rejected_rows_url`.
    pub fn committed_rejected_files(&self) -> Vec<String> {
        match (&self.rejected_files[..], &self.rejected_rows_url) {
            ([], Some(url)) => url.rsplit('/').next().map(str::to_string).into_iter().collect(),
            (files, _) => files.to_vec(),
        }
    }

    /// Whether this output includes every data file of `earlier` (which has at least one): it is
    /// `earlier` grown by increments.
    pub fn builds_on(&self, earlier: &Manifest) -> bool {
        !earlier.files.is_empty() && earlier.files.iter().all(|file| self.files.contains(file))
    }

    /// The files this output lists that `listing` does not hold: a committed output must have none.
    pub fn missing_files<'a>(&'a self, listing: &crate::commit::cleanup::Listing) -> Vec<&'a str> {
        self.files.iter().map(|file| file.name.as_str()).filter(|name| !listing.holds(name)).collect()
    }

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
            rows_routed: self.rows_routed,
            rows_written: self.rows_written,
            bytes_written: self.bytes_written,
            files: self.files.iter().map(|f| f.name.clone()).collect(),
            increments: self.increments,
            by_run: crate::task::RunRows::default(),
            spilled_bytes: 0,
            skipped: true,
            seconds: 0.0,
        }
    }
}

/// Writes `manifest` as the partition's commit point. Conditionally (the default): the write
/// succeeds only if the stored manifest is still `previous` (or, without one, if none exists), so
/// two runs can never both believe they committed. A conditional write whose outcome is unclear —
/// its response lost to a time-out or a 5xx, or a retry refused with 412 because the first try
/// had in fact succeeded — is resolved by reading the manifest back: the commit landed when the
/// stored manifest is this run's, or one that lists this run's files (a later increment,
/// committed on top of it before the read).
pub async fn commit(store: &Store, directory: &Path, manifest: &Manifest, previous: Option<&Committed>, mode: CommitMode) -> Result<()> {
    let path = directory.clone().join(MANIFEST_NAME);
    let payload = PutPayload::from(serde_json::to_vec_pretty(manifest).expect("manifests serialise"));
    let put_mode = match (mode, previous) {
        (CommitMode::Unconditional, _) => PutMode::Overwrite,
        (CommitMode::Conditional, Some(committed)) => PutMode::Update(committed.version.clone()),
        (CommitMode::Conditional, None) => PutMode::Create,
    };
    let error = match store.store.put_opts(&path, payload.clone(), PutOptions::from(put_mode)).await {
        Ok(_) => return Ok(()),
        // Local file systems cannot compare versions; a run there is the only writer.
        Err(object_store::Error::NotImplemented { .. }) if matches!(store.location, Location::Local(_)) => {
            return store.store.put(&path, payload).await.map(|_| ()).map_err(|e| store.error(&path, e));
        }
        Err(error) => error,
    };
    match read(store, directory).await {
        Ok(Some(stored)) if stored.manifest.run_id == manifest.run_id || stored.manifest.builds_on(manifest) => {
            tracing::info!(url = store.url_of(&path), %error, "the commit's response was lost; the stored manifest is this run's");
            Ok(())
        }
        _ => match error {
            object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. } => {
                Err(Error::ConcurrentCommit(store.url_of(&path)))
            }
            other => Err(store.error(&path, other)),
        },
    }
}

/// Checks once per process and sink that the sink's store honours conditional writes, which the
/// commit relies on: a probe object is created twice with `If-None-Match: *`, and the second
/// create must be refused. Local sinks and `sink.commit: unconditional` need no check.
pub async fn check_conditional_writes(store: &Store, mode: CommitMode) -> Result<()> {
    static CHECKED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    if mode == CommitMode::Unconditional || matches!(store.location, Location::Local(_)) {
        return Ok(());
    }
    let url = store.location.url();
    if CHECKED.lock().expect("not poisoned").contains(&url) {
        return Ok(());
    }
    let probe = store.prefix.clone().join(format!("_eventpipe-commit-check-{}", crate::task::new_run_id()));
    let create = || store.store.put_opts(&probe, PutPayload::from_static(b"eventpipe commit check"), PutOptions::from(PutMode::Create));
    let refused = |detail: &str| {
        Error::Config(format!(
            "the sink {url} {detail}, so two runs of a partition could both commit. Use a store that supports \
             conditional writes, or set sink.commit: unconditional to accept last-writer-wins"
        ))
    };
    let outcome = match create().await {
        Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
            Err(refused("does not support conditional writes (If-None-Match)"))
        }
        // A 501 is retried like any 5xx before it surfaces here.
        Err(error) if error.to_string().contains("501") => Err(refused("answers 501 Not Implemented to conditional writes")),
        Err(error) => Err(store.error(&probe, error)),
        Ok(_) => match create().await {
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(()),
            Ok(_) => Err(refused("ignores conditional writes (If-None-Match)")),
            Err(error) => Err(store.error(&probe, error)),
        },
    };
    match store.store.delete(&probe).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(error) => tracing::warn!(%error, "deleting the commit check object failed"),
    }
    outcome?;
    CHECKED.lock().expect("not poisoned").push(url);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use object_store::memory::InMemory;
    use object_store::{ObjectStore, PutResult};

    use super::*;
    use crate::store::test_store::{Misbehaving, Misbehaviour};

    /// How a test store misbehaves on writes.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Fault {
        /// Writes everything, ignoring `If-None-Match`/`If-Match`.
        IgnoresConditions,
        /// Writes, then loses the response (a time-out or a reset connection).
        LosesResponses,
    }

    #[async_trait]
    impl Misbehaviour for Fault {
        async fn put_opts(&self, inner: &InMemory, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
            match self {
                Fault::IgnoresConditions => inner.put_opts(location, payload, PutOptions::default()).await,
                Fault::LosesResponses => {
                    inner.put_opts(location, payload, opts).await?;
                    Err(object_store::Error::Generic { store: "Faulty", source: "connection reset by peer".into() })
                }
            }
        }
    }

    fn s3_store(fault: Option<Fault>, bucket: &str) -> Store {
        let store: Arc<dyn ObjectStore> = match fault {
            Some(fault) => Arc::new(Misbehaving::new(fault)),
            None => Arc::new(InMemory::new()),
        };
        let location = Location::S3 { bucket: bucket.into(), prefix: "sink/".into() };
        Store { store, root_url: url::Url::parse(&format!("s3://{bucket}")).unwrap(), prefix: Path::from("sink"), location }
    }

    fn manifest(run_id: &str) -> Manifest {
        Manifest {
            run_id: run_id.into(),
            partition: "year=2026/month=11/day=24".into(),
            input_fingerprint: "f".into(),
            spec_hash: "s".into(),
            inputs: Vec::new(),
            files: Vec::new(),
            rows_read: 0,
            rows_rejected: 0,
            rows_routed: 0,
            rows_written: 0,
            bytes_written: 0,
            rejected_rows_url: None,
            rejected_files: Vec::new(),
            increments: 1,
            schema: Vec::new(),
            tool: "test".into(),
            committed_at: "2026-11-24T00:00:00Z".into(),
        }
    }

    fn input(path: &str, etag: &str) -> InputObject {
        InputObject { path: path.into(), size: 10, etag: Some(etag.into()), modified: None }
    }

    #[test]
    fn an_output_grows_only_by_new_objects_with_its_own_spec() {
        let committed = Manifest { inputs: vec![input("a.csv", "1"), input("b.csv", "1")], ..manifest("run-1") };
        let grown = [input("a.csv", "1"), input("b.csv", "1"), input("c.csv", "1")];
        assert_eq!(committed.increment(&grown, "s"), Some(vec![input("c.csv", "1")]));
        assert_eq!(committed.increment(&grown, "another spec"), None);
        assert_eq!(committed.increment(&grown[..2], "s"), None, "nothing new");
        let replaced = [input("a.csv", "2"), input("b.csv", "1"), input("c.csv", "1")];
        assert_eq!(committed.increment(&replaced, "s"), None, "a committed object changed");
        assert_eq!(committed.increment(&grown[1..], "s"), None, "a committed object is gone");
    }

    #[test]
    fn an_appended_output_adds_files_counts_and_quarantine_files() {
        let file = |name: &str, rows| ManifestFile { name: name.into(), rows, bytes: 100 };
        let committed = Manifest {
            inputs: vec![input("a.csv", "1")],
            files: vec![file("part-run-1-000.parquet", 5)],
            rows_read: 6,
            rows_rejected: 1,
            rows_written: 5,
            bytes_written: 100,
            rejected_rows_url: Some("s3://b/rejected/year=2026/month=11/day=24/rejected-run-1.jsonl".into()),
            ..manifest("run-1")
        };
        let increment = Manifest {
            inputs: vec![input("b.csv", "1")],
            files: vec![file("part-run-2-000.parquet", 3)],
            rows_read: 3,
            rows_written: 3,
            bytes_written: 100,
            ..manifest("run-2")
        };
        let grown = committed.appended(increment);
        let both = crate::commit::fingerprint::fingerprint(&[input("a.csv", "1"), input("b.csv", "1")]);
        assert_eq!((grown.run_id.as_str(), grown.input_fingerprint.as_str(), grown.increments), ("run-2", both.as_str(), 2));
        assert_eq!(grown.inputs, vec![input("a.csv", "1"), input("b.csv", "1")]);
        assert_eq!(grown.files.len(), 2);
        assert_eq!((grown.rows_read, grown.rows_rejected, grown.rows_written, grown.bytes_written), (9, 1, 8, 200));
        assert_eq!(grown.committed_rejected_files(), vec!["rejected-run-1.jsonl".to_string()], "the first run's file is kept");
    }

    #[tokio::test]
    async fn a_commit_whose_response_was_lost_is_resolved_by_reading_it_back() {
        let store = s3_store(Some(Fault::LosesResponses), "lost");
        let directory = store.child("year=2026/month=11/day=24/");
        commit(&store, &directory, &manifest("run-1"), None, CommitMode::Conditional).await.expect("the write landed");
        let first = read(&store, &directory).await.unwrap().unwrap();
        assert_eq!(first.manifest.run_id, "run-1");

        // A second run racing for the same version: its write is refused, and the stored
        // manifest is not its own.
        let racing = commit(&store, &directory, &manifest("run-2"), None, CommitMode::Conditional).await;
        assert!(matches!(racing, Err(Error::ConcurrentCommit(_))), "{racing:?}");
        commit(&store, &directory, &manifest("run-3"), Some(&first), CommitMode::Conditional).await.expect("an update that landed");
        assert_eq!(read(&store, &directory).await.unwrap().unwrap().manifest.run_id, "run-3");
    }

    #[tokio::test]
    async fn a_store_that_ignores_conditions_is_refused_unless_unconditional() {
        let ignoring = s3_store(Some(Fault::IgnoresConditions), "ignoring");
        let error = check_conditional_writes(&ignoring, CommitMode::Conditional).await.unwrap_err().to_string();
        assert!(error.contains("s3://ignoring/sink/") && error.contains("sink.commit: unconditional"), "{error}");
        check_conditional_writes(&ignoring, CommitMode::Unconditional).await.expect("last writer wins was chosen");
        let listed = ignoring.list("").await.unwrap();
        assert!(listed.is_empty(), "the check leaves nothing behind: {listed:?}");

        check_conditional_writes(&s3_store(None, "honouring"), CommitMode::Conditional).await.expect("in-memory stores honour conditions");
    }
}
