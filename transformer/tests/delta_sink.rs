//! Runs into a Delta sink, read back from the Delta log by a replay written for these tests (the
//! log's JSON commits, not delta-rs): each run is one commit, a whole run replaces the partition's
//! files in that one commit, an unchanged partition is skipped from what the table holds.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use eventpipe_transformer::spec::SinkFormat;
use support::{Dirs, HEADER, write_partition};

/// The JSON commits of the table's log, oldest first.
fn commits(table: &Path) -> Vec<Vec<serde_json::Value>> {
    let log = table.join("_delta_log");
    let mut names: Vec<String> = std::fs::read_dir(&log).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.ends_with(".json")).collect();
    names.sort();
    names
        .iter()
        .map(|name| std::fs::read_to_string(log.join(name)).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect())
        .collect()
}

/// The files the log holds at its latest version: adds replayed, removes taken out.
fn current_files(table: &Path) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    for commit in commits(table) {
        for action in commit {
            if let Some(path) = action["add"]["path"].as_str() {
                files.insert(path.to_string());
            }
            if let Some(path) = action["remove"]["path"].as_str() {
                files.remove(path);
            }
        }
    }
    files
}

fn rows_of(table: &Path, files: &BTreeSet<String>) -> u64 {
    let mut rows = 0;
    for commit in commits(table) {
        for action in commit {
            if let Some(path) = action["add"]["path"].as_str().filter(|path| files.contains(*path)) {
                let stats: serde_json::Value = serde_json::from_str(action["add"]["stats"].as_str().unwrap()).unwrap();
                assert!(table.join(path).exists(), "{path} is in the log but not in the store");
                rows += stats["numRecords"].as_u64().unwrap();
            }
        }
    }
    rows
}

#[tokio::test]
async fn each_run_is_one_commit_and_a_whole_run_replaces_the_partition() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", format!("{HEADER}1,theme,dark,1764000000\n2,theme,light,1764000001\n").as_bytes())]);
    let task = dirs.builder().format(SinkFormat::Delta).build();
    let first = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!(first.rows_written, 2);
    let table = dirs.sink.path();
    let after_first = current_files(table);
    assert!(!after_first.is_empty() && after_first.iter().all(|f| f.starts_with("year=2026/month=11/day=24/")), "{after_first:?}");
    assert_eq!(rows_of(table, &after_first), 2);
    assert!(!table.join("year=2026/month=11/day=24/_manifest.json").exists(), "the table is the commit point");

    let again = eventpipe_transformer::run::run(&task).await.unwrap();
    assert!(again.skipped, "an unchanged partition is skipped from what the table holds");
    assert_eq!(commits(table).len(), 2, "creation and one commit");

    // A row-wise transform runs in append mode: a new object is an increment, added alone.
    write_partition(dirs.source.path(), &[("b.csv", format!("{HEADER}3,theme,dark,1764000002\n").as_bytes())]);
    let increment = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!((increment.skipped, increment.rows_written), (false, 3));
    let log = commits(table);
    assert_eq!(log.len(), 3);
    assert!(!log[2].iter().any(|a| a.get("remove").is_some()), "an increment only adds: {:?}", log[2]);
    let grown = current_files(table);
    assert_eq!((grown.len(), rows_of(table, &grown)), (after_first.len() + 1, 3));

    // A whole run (here a reprocess request) replaces the partition's files in its one commit.
    let forced = eventpipe_transformer::run::run(&eventpipe_transformer::task::Task { force: true, ..task.clone() }).await.unwrap();
    assert_eq!(forced.rows_written, 3);
    let log = commits(table);
    assert_eq!(log.len(), 4);
    let last = &log[3];
    let removed: BTreeSet<String> = last.iter().filter_map(|a| a["remove"]["path"].as_str().map(str::to_string)).collect();
    assert_eq!(removed, grown, "the old files leave in the commit that adds the new ones");
    assert!(last.iter().any(|a| a["txn"]["appId"] == "eventpipe:year=2026/month=11/day=24"), "{last:?}");
    let now = current_files(table);
    assert!(now.is_disjoint(&grown));
    assert_eq!(rows_of(table, &now), 3);
    assert!(grown.iter().all(|f| table.join(f).exists()), "removed files stay for readers of the earlier version");
}

/// A run whose SQL keeps no row still commits what it did: the next run of the same inputs is
/// skipped, not run again and again.
#[tokio::test]
async fn a_run_without_output_rows_is_committed_too() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", format!("{HEADER}1,theme,dark,1764000000\n").as_bytes())]);
    let task = dirs.builder().format(SinkFormat::Delta).sql("SELECT * FROM events WHERE name = 'none'").build();
    let first = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!((first.rows_read, first.rows_written), (1, 0));
    let again = eventpipe_transformer::run::run(&task).await.unwrap();
    assert!(again.skipped, "{again:?}");
}

/// A closed append-mode partition's increments are rewritten into one file, in one commit that
/// removes them without changing data; the output holds the same rows, and is still taken as
/// the committed output of the same inputs.
#[tokio::test]
async fn compaction_rewrites_the_increments_in_one_commit() {
    let dirs = Dirs::new();
    let task = dirs.builder().format(SinkFormat::Delta).build();
    for (object, id) in [("a.csv", 1), ("b.csv", 2), ("c.csv", 3)] {
        write_partition(dirs.source.path(), &[(object, format!("{HEADER}{id},theme,dark,176400000{id}\n{id},locale,de,176400001{id}\n").as_bytes())]);
        eventpipe_transformer::run::run(&task).await.unwrap();
    }
    let table = dirs.sink.path();
    let increments = current_files(table);
    assert_eq!((increments.len(), rows_of(table, &increments)), (3, 6));

    let compact = eventpipe_transformer::task::Task { compact: true, ..task.clone() };
    let compacted = eventpipe_transformer::run::run(&compact).await.unwrap();
    assert_eq!((compacted.skipped, compacted.increments, compacted.rows_read, compacted.rows_written, compacted.files.len()), (false, 1, 6, 6, 1));
    let log = commits(table);
    let last = log.last().unwrap();
    let removed: BTreeSet<String> = last.iter().filter_map(|a| a["remove"]["path"].as_str().map(str::to_string)).collect();
    assert_eq!(removed, increments, "the increments leave in the commit that adds their rewrite");
    assert!(last.iter().filter(|a| a.get("add").is_some() || a.get("remove").is_some()).all(|a| a["add"]["dataChange"] == false || a["remove"]["dataChange"] == false));
    assert!(last.iter().any(|a| a["commitInfo"]["operation"] == "OPTIMIZE"), "{last:?}");
    let now = current_files(table);
    assert_eq!((now.len(), rows_of(table, &now)), (1, 6));

    assert!(eventpipe_transformer::run::run(&compact).await.unwrap().skipped, "a compacted output is not compacted again");
    assert!(eventpipe_transformer::run::run(&task).await.unwrap().skipped, "the compacted output is the committed output of the same inputs");
    write_partition(dirs.source.path(), &[("d.csv", format!("{HEADER}4,theme,dark,1764000004\n").as_bytes())]);
    let late = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!((late.increments, late.rows_written), (2, 7), "a late object is an increment on the compacted output");
}

/// The Python with pyarrow that `scripts/test.sh` sets up, for the independent reader.
fn python() -> String {
    std::env::var("EVENTPIPE_PYTHON").expect("EVENTPIPE_PYTHON must name a Python with tests/requirements.txt installed; scripts/test.sh sets it up")
}

const INDEPENDENT_READER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/delta_read.py");

/// A reader polling the table (the independent reader, replaying the log and reading the files
/// with pyarrow) while the partition is processed again 20 times, its rows changing between two
/// and three each time, sees two or three rows at every version: never both runs' files, never
/// none, never a file that is gone.
#[tokio::test]
async fn a_reader_sees_the_old_or_the_new_partition_while_it_is_reprocessed() {
    let dirs = Dirs::new();
    let task = dirs.builder().format(SinkFormat::Delta).build();
    let object = |rows: u64| (1..=rows).map(|id| format!("{id},theme,dark,176400000{id}\n")).fold(HEADER.to_string(), |text, row| text + &row);
    write_partition(dirs.source.path(), &[("a.csv", object(2).as_bytes())]);
    eventpipe_transformer::run::run(&task).await.unwrap();
    let stop = dirs.source.path().join("stop");
    // The reads go to a file: a pipe nobody drains while the runs go on would stop the reader.
    let reads_file = dirs.source.path().join("reads.jsonl");
    let reader = std::process::Command::new(python())
        .arg(INDEPENDENT_READER)
        .arg(dirs.sink.path())
        .arg("--poll-until")
        .arg(&stop)
        .stdout(std::fs::File::create(&reads_file).unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut expected = vec![2];
    for run in 1..=20 {
        let rows = if run % 2 == 1 { 3 } else { 2 };
        write_partition(dirs.source.path(), &[("a.csv", object(rows).as_bytes())]);
        let summary = eventpipe_transformer::run::run(&task).await.unwrap();
        assert_eq!((summary.skipped, summary.rows_written), (false, rows));
        expected.push(rows);
        // Give the reader time for a read of each version.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    std::fs::write(&stop, "").unwrap();
    let output = reader.wait_with_output().unwrap();
    assert!(output.status.success(), "the reader failed: {}", String::from_utf8_lossy(&output.stderr));
    let reads: Vec<serde_json::Value> = std::fs::read_to_string(&reads_file).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let mut versions = BTreeSet::new();
    for read in &reads {
        let version = read["version"].as_u64().unwrap();
        let rows = read["rowsByPartition"]["year=2026/month=11/day=24"].as_u64();
        // Version 1 is the first run's commit, and version 1 + n the n-th reprocess's.
        assert_eq!(rows, Some(expected[version as usize - 1]), "version {version}: {read}");
        versions.insert(version);
    }
    assert!(versions.len() >= 15, "the reader saw too few of the 21 versions to tell: {versions:?} in {} reads", reads.len());
}

/// The commits of the table that add or remove files of the partition.
fn partition_commits(table: &Path) -> usize {
    commits(table).iter().filter(|commit| commit.iter().any(|a| a.get("add").is_some() || a.get("remove").is_some())).count()
}

/// Exactly once under faults: a run killed after writing its files and before committing leaves
/// nothing in the table; a Job retried after its run committed (its pod killed before it
/// reported) commits nothing more; two Jobs of one partition at once commit one version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_a_retried_job_and_a_duplicate_job_commit_once() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", format!("{HEADER}1,theme,dark,1764000001\n2,theme,light,1764000002\n").as_bytes())]);
    let task = dirs.builder().format(SinkFormat::Delta).build();
    let table = dirs.sink.path();
    // What a run killed before its commit leaves: a written file, no commit.
    let killed = table.join("year=2026/month=11/day=24/part-killed-000.parquet");
    std::fs::create_dir_all(killed.parent().unwrap()).unwrap();
    std::fs::write(&killed, b"PAR1 half written").unwrap();

    let first = eventpipe_transformer::run::run(&task).await.unwrap();
    assert!(!current_files(table).iter().any(|f| f.contains("killed")), "the killed run's file is not in the table");
    let retried = eventpipe_transformer::run::run(&task).await.unwrap();
    assert!(retried.skipped && retried.run_id == first.run_id, "{retried:?}");
    assert_eq!(partition_commits(table), 1);

    // A new object, and two Jobs for it at once (a restarted operator's and its predecessor's).
    write_partition(dirs.source.path(), &[("b.csv", format!("{HEADER}3,theme,dark,1764000003\n").as_bytes())]);
    let (one, other) = tokio::join!(eventpipe_transformer::run::run(&task), eventpipe_transformer::run::run(&task));
    let made = [&one, &other].iter().filter(|outcome| outcome.as_ref().is_ok_and(|summary| !summary.skipped)).count();
    assert_eq!(made, 1, "exactly one of the two commits: {one:?} {other:?}");
    for outcome in [&one, &other] {
        if let Err(error) = outcome {
            assert!(error.to_string().contains("another run committed partition year=2026/month=11/day=24 meanwhile"), "{error}");
        }
    }
    assert_eq!(partition_commits(table), 2);
    let read = independent_read(table);
    assert_eq!(read["rows"], 3, "{read}");
}

/// The table as the independent reader reads it.
fn independent_read(table: &Path) -> serde_json::Value {
    let output = std::process::Command::new(python()).arg(INDEPENDENT_READER).arg(table).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A clock set to a time, for vacuums as at that time.
#[derive(Debug)]
struct At(chrono::DateTime<chrono::Utc>);

impl deltalake::operations::vacuum::Clock for At {
    fn current_timestamp_millis(&self) -> i64 {
        self.0.timestamp_millis()
    }
}

/// The vacuum deletes the files a reprocess took out of the table and those of a run that never
/// committed, once they are older than the retention, and keeps every file a version within the
/// retention lists; the table reads the same after it, and has a checkpoint.
#[tokio::test]
async fn the_vacuum_deletes_what_no_version_within_the_retention_lists() {
    use eventpipe_transformer::commit::vacuum::vacuum;
    let dirs = Dirs::new();
    let task = dirs.builder().format(SinkFormat::Delta).build();
    let table = dirs.sink.path();
    write_partition(dirs.source.path(), &[("a.csv", format!("{HEADER}1,theme,dark,1764000001\n").as_bytes())]);
    eventpipe_transformer::run::run(&task).await.unwrap();
    let replaced = current_files(table);
    write_partition(dirs.source.path(), &[("a.csv", format!("{HEADER}1,theme,dark,1764000001\n2,theme,dark,1764000002\n").as_bytes())]);
    eventpipe_transformer::run::run(&task).await.unwrap();
    let kept = current_files(table);
    let killed = table.join("year=2026/month=11/day=24/part-killed-000.parquet");
    std::fs::write(&killed, b"PAR1 half written").unwrap();
    let now = chrono::Utc::now();

    let soon = vacuum(&task.pipeline, Some(std::sync::Arc::new(At(now + chrono::Duration::hours(1))))).await.unwrap();
    assert_eq!(soon.files_deleted, 0, "within the retention every file stays");
    assert!(killed.exists() && replaced.iter().all(|f| table.join(f).exists()));

    let later = vacuum(&task.pipeline, Some(std::sync::Arc::new(At(now + chrono::Duration::hours(169))))).await.unwrap();
    assert_eq!(later.files_deleted, replaced.len() as u64 + 1, "{later:?}");
    assert!(!killed.exists() && replaced.iter().all(|f| !table.join(f).exists()));
    assert!(kept.iter().all(|f| table.join(f).exists()));
    assert_eq!(independent_read(table)["rows"], 2);
    assert!(table.join("_delta_log/_last_checkpoint").exists());
    assert!(eventpipe_transformer::run::run(&task).await.unwrap().skipped, "the vacuumed table is still the committed output");
}

/// A Parquet sink converts into a Delta table of exactly the files its manifests list (not the
/// file a dead run left), and the pipeline goes on with `sink.format: delta` from there without
/// processing the partition again; a second conversion changes nothing.
#[tokio::test]
async fn a_parquet_sink_converts_to_a_table_of_its_committed_files() {
    use eventpipe_transformer::commit::conversion::convert;
    use eventpipe_transformer::store::{Location, Opener, Retrying};
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", format!("{HEADER}1,theme,dark,1764000001\n2,theme,light,1764000002\n").as_bytes())]);
    let parquet = dirs.builder().build();
    let committed = eventpipe_transformer::run::run(&parquet).await.unwrap();
    let partition_dir = dirs.sink.path().join("year=2026/month=11/day=24");
    let listed = partition_dir.join(committed.files[0].rsplit('/').next().unwrap());
    std::fs::copy(&listed, partition_dir.join("part-dead-000.parquet")).unwrap();

    let sink = Opener::new(None).open(&Location::parse(dirs.sink.path().to_str().unwrap()).unwrap(), Retrying::Briefly).await.unwrap();
    let converted = convert(&sink).await.unwrap();
    assert_eq!(converted.len(), 1);
    assert_eq!((converted[0].files, converted[0].already_converted), (committed.files.len(), false));
    let table = dirs.sink.path();
    let read = independent_read(table);
    assert_eq!(read["rows"], 2, "the dead run's file is not in the table: {read}");
    assert_eq!(current_files(table), committed.files.iter().cloned().collect::<BTreeSet<_>>());

    let delta = dirs.builder().format(SinkFormat::Delta).build();
    let next = eventpipe_transformer::run::run(&delta).await.unwrap();
    assert!(next.skipped && next.run_id == committed.run_id, "the converted partition is the committed output: {next:?}");
    assert!(convert(&sink).await.unwrap()[0].already_converted);
    assert_eq!(partition_commits(table), 1);
}

/// The rows a superseded run quarantined leave with it: only the committed run's quarantine file
/// stays, as for a Parquet sink, while its data files stay for the table's earlier versions.
#[tokio::test]
async fn a_superseded_runs_quarantined_rows_leave_with_it() {
    let dirs = Dirs::new();
    let rejected = tempfile::tempdir().unwrap();
    let task = dirs
        .builder()
        .format(SinkFormat::Delta)
        .policy(eventpipe_transformer::spec::BadRecordPolicy::Quarantine)
        .rejected_url(rejected.path().to_str().unwrap())
        .build();
    let quarantined = || -> Vec<String> {
        let dir = rejected.path().join("year=2026/month=11/day=24");
        let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    };
    write_partition(dirs.source.path(), &[("a.csv", format!("{HEADER}1,theme,dark,1764000001\nx,theme,dark,1\n").as_bytes())]);
    let first = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!(quarantined(), vec![format!("rejected-{}.jsonl", first.run_id)]);
    write_partition(dirs.source.path(), &[("a.csv", format!("{HEADER}1,theme,dark,1764000001\ny,theme,dark,2\n").as_bytes())]);
    let second = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!((second.rows_rejected, second.rows_written), (1, 1));
    assert_eq!(quarantined(), vec![format!("rejected-{}.jsonl", second.run_id)], "the first run's bad row is not rejected twice");
}
