//! Which files of a partition directory may be deleted. A run writes its data files (and its
//! quarantined rows) under names carrying its run id before its manifest commits them, so a file
//! that no manifest lists is either garbage — of a run that failed, was killed or was superseded
//! — or the work of a run still going, which its manifest may yet list. Deleting the latter would
//! leave a committed manifest naming files that are gone.
//!
//! So every run announces itself: before its first file it writes a marker, `_running-<run id>`,
//! into the sink's partition directory, and rewrites it every [`HEARTBEAT`] until it ends. A run
//! is alive while its marker is younger than [`STALE_AFTER`]; a file of a run that is alive is
//! never deleted. A run that cannot keep its marker fresh stops before it commits, so that no
//! other run could have taken it for dead.
//!
//! A run killed by the kernel or a node leaves its marker behind, fresh for a while. The run that
//! retries the partition waits, after it committed, until such markers go stale (at most
//! [`STALE_AFTER`]) and then removes the killed run's files, so that they do not stay visible to
//! readers that list the directory. A run that finds the partition already committed does not
//! wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::Utc;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};
use crate::store::Store;

/// The name prefix of run markers.
pub const MARKER_PREFIX: &str = "_running-";
/// How often a run rewrites its marker.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How old a marker is when its run counts as dead.
pub const STALE_AFTER: Duration = Duration::from_secs(20);

/// A run's marker, kept fresh by a background task until [`RunMarker::finish`].
#[derive(Debug)]
pub struct RunMarker {
    store: Store,
    path: Path,
    /// When the marker was last written, in Unix milliseconds.
    written_at: Arc<AtomicI64>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl RunMarker {
    /// Writes the marker of `run_id` into `directory` and keeps it fresh.
    pub async fn start(store: &Store, directory: &Path, run_id: &str) -> Result<Self> {
        let path = directory.clone().join(format!("{MARKER_PREFIX}{run_id}"));
        write_marker(store, &path).await?;
        let written_at = Arc::new(AtomicI64::new(Utc::now().timestamp_millis()));
        let heartbeat = tokio::spawn(keep_fresh(store.clone(), path.clone(), Arc::clone(&written_at)));
        Ok(Self { store: store.clone(), path, written_at, heartbeat })
    }

    /// Fails when the marker may have looked stale to another run — its last write is older than
    /// the heartbeat's margin — so that this run does not commit files another run may have
    /// deleted.
    pub fn check_fresh(&self) -> Result<()> {
        let age = Utc::now().timestamp_millis() - self.written_at.load(Ordering::Relaxed);
        if age >= (STALE_AFTER - HEARTBEAT).as_millis() as i64 {
            return Err(Error::Io {
                context: format!("keeping the run marker {} fresh", self.store.url_of(&self.path)),
                source: std::io::Error::other(format!("it was last written {age} ms ago; the run stops before it commits")),
            });
        }
        Ok(())
    }

    /// Stops the heartbeat and removes the marker.
    pub async fn finish(self) {
        self.heartbeat.abort();
        if let Err(error) = self.store.store.delete(&self.path).await {
            tracing::warn!(url = self.store.url_of(&self.path), %error, "removing the run marker failed; it goes stale");
        }
    }
}

impl Drop for RunMarker {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

async fn write_marker(store: &Store, path: &Path) -> Result<()> {
    let body = serde_json::json!({ "heartbeat": Utc::now().to_rfc3339() }).to_string();
    store.store.put(path, PutPayload::from(body)).await.map(|_| ()).map_err(|e| store.error(path, e))
}

async fn keep_fresh(store: Store, path: Path, written_at: Arc<AtomicI64>) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        match write_marker(&store, &path).await {
            Ok(()) => written_at.store(Utc::now().timestamp_millis(), Ordering::Relaxed),
            Err(error) => tracing::warn!(%error, "refreshing the run marker failed"),
        }
    }
}

/// A partition directory as listed: its files by name, and the runs that are alive.
#[derive(Debug)]
pub struct Listing {
    files: HashMap<String, ObjectMeta>,
    alive: Vec<String>,
}

impl Listing {
    /// Lists the direct children of `directory`; runs are alive by the markers in
    /// `markers_directory` (the sink's partition directory, also for quarantined rows).
    pub async fn of(store: &Store, directory: &Path, markers: &Listing) -> Result<Listing> {
        let files = direct_children(store, directory).await?;
        Ok(Listing { files, alive: markers.alive.clone() })
    }

    /// Lists the sink's partition directory, with its markers.
    pub async fn sink(store: &Store, directory: &Path) -> Result<Listing> {
        let files = direct_children(store, directory).await?;
        let stale_before = Utc::now() - STALE_AFTER;
        let alive = files
            .iter()
            .filter(|(_, meta)| meta.last_modified > stale_before)
            .filter_map(|(name, _)| name.strip_prefix(MARKER_PREFIX).map(str::to_string))
            .collect();
        Ok(Listing { files, alive })
    }

    /// Lists the sink's partition directory once the runs that look alive, other than `own_run`,
    /// have ended or gone stale — at most [`STALE_AFTER`] later: a run killed just before is dead
    /// by then, and one that is really alive is left alone.
    pub async fn sink_after_live_runs(store: &Store, directory: &Path, own_run: &str) -> Result<Listing> {
        let deadline = tokio::time::Instant::now() + STALE_AFTER + HEARTBEAT;
        loop {
            let listing = Listing::sink(store, directory).await?;
            if listing.alive.iter().all(|run| run == own_run) || tokio::time::Instant::now() >= deadline {
                return Ok(listing);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Whether the directory holds a file of this name.
    pub fn holds(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    /// Deletes every file whose name starts with `prefix` (`part-`, `rejected-`, or
    /// [`MARKER_PREFIX`] for the markers of dead runs), that `keep` does not name and whose run is
    /// not alive.
    pub async fn remove_stale(&self, store: &Store, directory: &Path, prefix: &str, keep: &[String]) -> Result<()> {
        for name in self.files.keys() {
            let Some(run) = run_of(name, prefix) else { continue };
            if keep.iter().any(|kept| kept == name) || self.alive.iter().any(|alive| alive == run) {
                continue;
            }
            let path = directory.clone().join(name.as_str());
            match store.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store.error(&path, e)),
            }
        }
        Ok(())
    }
}

/// The run id in a data file's name (`part-<run id>-<n>.parquet`), a quarantine file's
/// (`rejected-<run id>.jsonl`) or a marker's (`_running-<run id>`); `None` for other names.
pub fn run_of<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    match prefix {
        "part-" => rest.rsplit_once('-').map(|(run, _)| run),
        MARKER_PREFIX => Some(rest),
        _ => rest.strip_suffix(".jsonl"),
    }
}

async fn direct_children(store: &Store, directory: &Path) -> Result<HashMap<String, ObjectMeta>> {
    let relative = store.relative(directory).to_string();
    let listed = store.list(&relative).await?;
    let depth = directory.parts().count() + 1;
    Ok(listed
        .into_iter()
        .filter(|object| object.location.prefix_matches(directory) && object.location.parts().count() == depth)
        .filter_map(|object| Some((object.location.filename()?.to_string(), object)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Location, Retrying};

    #[test]
    fn run_ids_come_from_file_names() {
        assert_eq!(run_of("part-20261124T031500-1a2b3c4d-003.parquet", "part-"), Some("20261124T031500-1a2b3c4d"));
        assert_eq!(run_of("rejected-20261124T031500-1a2b3c4d.jsonl", "rejected-"), Some("20261124T031500-1a2b3c4d"));
        assert_eq!(run_of("_running-20261124T031500-1a2b3c4d", MARKER_PREFIX), Some("20261124T031500-1a2b3c4d"));
        assert_eq!(run_of("_manifest.json", "part-"), None);
    }

    /// A run's files are left alone while its marker is fresh, and removed once it is gone.
    #[tokio::test]
    async fn files_of_live_runs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Location::parse(dir.path().to_str().unwrap()).unwrap().open(None, Retrying::Briefly).await.unwrap();
        let directory = store.child("year=2026/month=11/day=24/");
        let put = |name: &str| {
            let (store, path) = (store.clone(), directory.clone().join(name));
            async move { store.store.put(&path, PutPayload::from_static(b"x")).await.unwrap() }
        };
        put("part-live-1-000.parquet").await;
        put("part-dead-1-000.parquet").await;
        put("part-kept-1-000.parquet").await;
        let marker = RunMarker::start(&store, &directory, "live-1").await.unwrap();
        marker.check_fresh().unwrap();
        let listing = Listing::sink(&store, &directory).await.unwrap();
        listing.remove_stale(&store, &directory, "part-", &["part-kept-1-000.parquet".into()]).await.unwrap();
        let left = Listing::sink(&store, &directory).await.unwrap();
        assert!(left.holds("part-live-1-000.parquet") && left.holds("part-kept-1-000.parquet"));
        assert!(!left.holds("part-dead-1-000.parquet"));
        marker.finish().await;
        let listing = Listing::sink_after_live_runs(&store, &directory, "other").await.unwrap();
        listing.remove_stale(&store, &directory, "part-", &[]).await.unwrap();
        assert!(!Listing::sink(&store, &directory).await.unwrap().holds("part-live-1-000.parquet"));
    }

    /// A killed run's marker goes stale, and then it and its files are removed.
    #[tokio::test]
    async fn stale_markers_and_their_runs_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Location::parse(dir.path().to_str().unwrap()).unwrap().open(None, Retrying::Briefly).await.unwrap();
        let directory = store.child("year=2026/month=11/day=24/");
        let local = dir.path().join("year=2026/month=11/day=24");
        std::fs::create_dir_all(&local).unwrap();
        for name in ["_running-killed-1", "part-killed-1-000.parquet"] {
            std::fs::write(local.join(name), "x").unwrap();
        }
        let killed_at = std::time::SystemTime::now() - STALE_AFTER - Duration::from_secs(1);
        std::fs::File::options().write(true).open(local.join("_running-killed-1")).unwrap().set_modified(killed_at).unwrap();
        let listing = Listing::sink(&store, &directory).await.unwrap();
        listing.remove_stale(&store, &directory, "part-", &[]).await.unwrap();
        listing.remove_stale(&store, &directory, MARKER_PREFIX, &[]).await.unwrap();
        assert_eq!(std::fs::read_dir(&local).unwrap().count(), 0);
    }
}
