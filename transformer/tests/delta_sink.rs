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
