//! `eventpipe run` as a user runs it: the README's command on the shipped examples, local files and
//! S3, with the output read back by another engine (DuckDB).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use eventpipe_testkit::s3::S3Server;

/// A temporary directory DuckDB's globs can see (they skip names starting with a dot).
fn visible_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("eventpipe-test-").tempdir().unwrap()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn eventpipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eventpipe")).args(args).current_dir(workspace()).output().unwrap()
}

fn json_run(args: &[&str]) -> (bool, serde_json::Value) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let output = eventpipe(&all);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.success(), value)
}

/// Runs a Python snippet with DuckDB; the interpreter comes from `EVENTPIPE_PYTHON`, which
/// `scripts/test.sh` points at a virtualenv holding `tests/requirements.txt`.
fn duckdb(script: &str) -> String {
    let output = Command::new(python()).args(["-c", script]).current_dir(workspace()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_readme_command_aggregates_the_example_and_duckdb_reads_it() {
    let sink = visible_tempdir();
    let sink_arg = sink.path().to_str().unwrap();
    let output = eventpipe(&["run", "-f", "examples/user-settings.yaml", "--source", "examples/data", "--sink", sink_arg]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("PARTITION") && lines[0].contains("ROWS READ"), "{table}");
    assert!(lines[1].starts_with("year=2026/month=11/day=23") && lines[2].starts_with("year=2026/month=11/day=24"), "{table}");

    let (ok, again) = json_run(&["-f", "examples/user-settings.yaml", "--source", "examples/data", "--sink", sink_arg]);
    assert!(ok);
    let partitions = again["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2);
    for partition in partitions {
        assert_eq!(partition["skipped"], true, "{partition}");
        assert_eq!(partition["rowsRejected"], 0);
        for key in ["partition", "rowsRead", "rowsWritten", "bytesWritten", "seconds"] {
            assert!(partition.get(key).is_some(), "{key} missing in {partition}");
        }
    }
    assert_eq!(partitions[1]["rowsRead"], 60);

    let read_back = duckdb(&format!(
        r#"
import duckdb
rows = duckdb.sql("SELECT day, id, settings FROM read_parquet('{sink_arg}/**/*.parquet', hive_partitioning=true) ORDER BY day, id")
print(rows.types[2])
for day, id, settings in rows.fetchall():
    print(day, id, sorted(settings.items()))
"#
    ));
    let lines: Vec<&str> = read_back.lines().collect();
    assert_eq!(lines[0], "MAP(VARCHAR, VARCHAR)");
    assert_eq!(lines.len() - 1, 16, "8 users on each of the two days: {read_back}");
    // The newest value of each setting, recomputed by DuckDB from the raw CSV, matches.
    let expected = duckdb(
        r#"
import duckdb
rows = duckdb.sql("""
  SELECT day, id, map_from_entries(list(struct_pack(k := name, v := value))) AS settings FROM (
    SELECT day, id, name, arg_max(value, (timestamp, value)) AS value
    FROM read_csv('examples/data/**/*.csv', hive_partitioning=true) GROUP BY ALL)
  GROUP BY ALL ORDER BY day, id""")
for day, id, settings in rows.fetchall():
    print(day, id, sorted(settings.items()))
"#,
    );
    assert_eq!(lines[1..].join("\n"), expected.trim_end());
}

#[test]
fn the_typed_conversion_keeps_every_row_with_its_types() {
    let sink = visible_tempdir();
    let sink_arg = sink.path().to_str().unwrap();
    let (ok, outcome) = json_run(&["-f", "examples/user-events-parquet.yaml", "--source", "examples/data", "--sink", sink_arg]);
    assert!(ok, "{outcome}");
    let described = duckdb(&format!(
        r#"
import duckdb
rel = duckdb.sql("SELECT * FROM read_parquet('{sink_arg}/**/*.parquet', hive_partitioning=false)")
print(list(zip(rel.columns, map(str, rel.types))))
print(duckdb.sql("SELECT count(*), min(timestamp)::VARCHAR FROM read_parquet('{sink_arg}/year=2026/month=11/day=23/*.parquet')").fetchall())
"#
    ));
    let lines: Vec<&str> = described.lines().collect();
    assert_eq!(
        lines[0],
        "[('id', 'BIGINT'), ('name', 'VARCHAR'), ('value', 'VARCHAR'), ('timestamp', 'TIMESTAMP WITH TIME ZONE')]"
    );
    assert!(lines[1].starts_with("[(30, '2026-11-23 "), "{}", lines[1]);
}

#[test]
fn a_failed_partition_fails_the_run_and_is_reported() {
    let source = tempfile::tempdir().unwrap();
    let sink = tempfile::tempdir().unwrap();
    let good = source.path().join("year=2026/month=11/day=23");
    let bad = source.path().join("year=2026/month=11/day=24");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(good.join("a.csv"), "id,name,value,timestamp\n1,n,v,1795392000\n").unwrap();
    std::fs::write(bad.join("a.csv"), "id,name,value,timestamp\n1,n,v,not-a-time\n").unwrap();
    let manifest = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(workspace().join("examples/user-events-parquet.yaml")).unwrap();
    std::fs::write(manifest.path(), text.replace("policy: skip", "policy: fail")).unwrap();
    let (ok, outcome) = json_run(&[
        "-f",
        manifest.path().to_str().unwrap(),
        "--source",
        source.path().to_str().unwrap(),
        "--sink",
        sink.path().to_str().unwrap(),
    ]);
    assert!(!ok);
    let partitions = outcome["partitions"].as_array().unwrap();
    assert_eq!(partitions[0]["rowsWritten"], 1);
    let error = partitions[1]["error"].as_str().unwrap();
    assert!(error.contains("day=24/a.csv line 2") && error.contains("not-a-time"), "{error}");
}

#[test]
fn a_bad_manifest_is_one_clear_error() {
    let manifest = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(workspace().join("examples/user-settings.yaml")).unwrap();
    std::fs::write(manifest.path(), text.replace("latest_map(name,", "latest_map(nam,")).unwrap();
    let output = eventpipe(&["run", "-f", manifest.path().to_str().unwrap(), "--source", "examples/data", "--sink", "/tmp/unused"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: invalid transform.sql") && stderr.contains("nam"), "{stderr}");
}

#[test]
fn a_missing_source_directory_is_named() {
    let output = eventpipe(&["run", "-f", "examples/user-events-parquet.yaml", "--source", "/nonexistent/events", "--sink", "/tmp/unused"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("source directory /nonexistent/events does not exist"), "{stderr}");
    assert!(!Path::new("/nonexistent").exists());
}

/// The example data in a fresh source bucket of the test S3 server, and an example manifest
/// rewritten to read it and write to a fresh output bucket there; returns the manifest's text
/// and the output bucket.
async fn example_in_s3(s3: &S3Server, example: &str) -> (String, String) {
    let raw = s3.bucket("user-events").await.unwrap();
    let output = s3.bucket("output").await.unwrap();
    for entry in walk(&workspace().join("examples/data")) {
        let key = entry.strip_prefix(workspace().join("examples/data")).unwrap().to_str().unwrap().to_string();
        s3.put(&raw, &key, std::fs::read(&entry).unwrap()).await.unwrap();
    }
    let text = std::fs::read_to_string(workspace().join("examples").join(example)).unwrap();
    let text = text
        .replace("s3://user-events/", &format!("s3://{raw}/"))
        .replace("s3://output/", &format!("s3://{output}/"))
        .replace("    region: us-east-1", &format!("    region: us-east-1\n    endpoint: {}\n    forcePathStyle: true", s3.endpoint()));
    (text, output)
}

#[tokio::test]
async fn runs_against_s3() {
    let s3 = S3Server::get().unwrap();
    let (text, output) = example_in_s3(s3, "user-settings.yaml").await;
    let manifest = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(manifest.path(), text).unwrap();
    let (ok, outcome) = json_run(&["-f", manifest.path().to_str().unwrap()]);
    assert!(ok, "{outcome}");
    assert_eq!(outcome["partitions"].as_array().unwrap().len(), 2);
    let keys = s3.keys(&output, "user-settings/").await.unwrap();
    assert_eq!(keys.len(), 4, "a manifest and a Parquet file per day: {keys:?}");
    assert!(keys.iter().any(|k| k == "user-settings/year=2026/month=11/day=24/_manifest.json"));
}

/// `eventpipe convert-to-delta` turns the conversion example's Parquet sink in S3 into a Delta
/// table, and the pipeline, switched to `sink.format: delta`, goes on from there: nothing is
/// processed again.
#[tokio::test]
async fn a_parquet_sink_in_s3_converts_to_delta_and_nothing_is_processed_again() {
    let s3 = S3Server::get().unwrap();
    let (parquet, output) = example_in_s3(s3, "user-events-parquet.yaml").await;
    let delta = parquet.replace(&format!("    url: s3://{output}/user-events/\n"), &format!("    url: s3://{output}/user-events/\n    format: delta\n"));
    assert_ne!(parquet, delta);
    let (parquet_manifest, delta_manifest) = (tempfile::NamedTempFile::new().unwrap(), tempfile::NamedTempFile::new().unwrap());
    std::fs::write(parquet_manifest.path(), parquet).unwrap();
    std::fs::write(delta_manifest.path(), delta).unwrap();
    let (ok, first) = json_run(&["-f", parquet_manifest.path().to_str().unwrap()]);
    assert!(ok, "{first}");

    let converted = eventpipe(&["convert-to-delta", "-f", parquet_manifest.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&converted.stdout);
    assert!(converted.status.success(), "{stdout}{}", String::from_utf8_lossy(&converted.stderr));
    assert!(stdout.contains("year=2026/month=11/day=24 1 files committed") && stdout.contains("a Delta table of 2 partitions"), "{stdout}");
    assert!(s3.keys(&output, "user-events/_delta_log/").await.unwrap().iter().any(|key| key.ends_with(".json")));

    let (ok, after) = json_run(&["-f", delta_manifest.path().to_str().unwrap()]);
    assert!(ok, "{after}");
    for (before, now) in first["partitions"].as_array().unwrap().iter().zip(after["partitions"].as_array().unwrap()) {
        assert_eq!((now["skipped"].as_bool(), &now["runId"], &now["rowsWritten"]), (Some(true), &before["runId"], &before["rowsWritten"]), "{now}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A Firehose day replayed into one partition, `eventpipe run` after each of 12 arrivals
/// (`scripts/bench/firehose_replay.py`, which the README's figures come from at full size): the
/// conversion reads each row once, in one increment per object; the aggregation reads the day
/// once, when it closes. Into a Delta table, the run at the close compacts the 12 increments into
/// one file holding the rows a whole run of the day writes, as the independent reader
/// (`tests/delta_read.py`) reads both tables.
#[test]
fn a_replayed_firehose_day_reads_each_row_once() {
    let work = visible_tempdir();
    let output = Command::new(python())
        .arg("scripts/bench/firehose_replay.py")
        .arg(env!("CARGO_BIN_EXE_eventpipe"))
        .args(["--objects", "12", "--rows-per-object", "50", "--buffer-seconds", "7200", "--work"])
        .arg(work.path())
        .current_dir(workspace())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("conversion: rows read 600 (1.00x the day) in 12 runs; committed 600 rows in 12 increments"), "{stdout}");
    assert!(stdout.contains("conversion-delta: rows read 600 (1.00x the day) in 12 runs; committed 600 rows in 12 increments"), "{stdout}");
    assert!(stdout.contains("aggregation: rows read 600 (1.00x the day) in 1 runs"), "{stdout}");

    let replayed = work.path().join("conversion-delta");
    let whole = visible_tempdir();
    let (ok, _) = json_run(&["-f", "examples/user-events-delta.yaml", "--source", replayed.join("source").to_str().unwrap(), "--sink", whole.path().to_str().unwrap()]);
    assert!(ok);
    let compacted = delta_read(&replayed.join("sink"));
    let whole = delta_read(whole.path());
    assert_eq!(compacted["files"].as_array().unwrap().len(), 1, "{}", compacted["files"]);
    assert_eq!(compacted["rows"], 600);
    assert!(compacted["data"] == whole["data"], "the compacted partition holds other rows than a whole run");
}

/// Firehose files the 24th's last minute under the 25th. By arrival (the Spark job's way) the
/// 24th's latest theme is the one of noon and the 25th holds a setting of the 24th; by event time
/// (`examples/user-settings-event-time.yaml`) each day holds the latest setting of its own events,
/// as DuckDB reads them back. The README's example.
#[test]
fn event_days_hold_their_own_latest_settings_where_arrival_days_do_not() {
    let source = visible_tempdir();
    let write = |directory: &str, name: &str, rows: &str, arrived: &str| {
        let dir = source.path().join(directory);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, format!("id,name,value,timestamp\n{rows}")).unwrap();
        let arrived: chrono::DateTime<chrono::Utc> = arrived.parse().unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(arrived.into()).unwrap();
    };
    // 2026-11-24T12:00:00Z, 23:59:30 and 2026-11-25T00:00:30Z.
    write("year=2026/month=11/day=24", "a.csv", "1,theme,dark,1795521600\n", "2026-11-24T12:05:00Z");
    write("year=2026/month=11/day=25", "b.csv", "1,theme,light,1795564770\n1,locale,de,1795564830\n", "2026-11-25T00:01:00Z");
    let theme = |example: &str| {
        let sink = visible_tempdir();
        let sink_arg = sink.path().to_str().unwrap();
        let (ok, outcome) = json_run(&["-f", example, "--source", source.path().to_str().unwrap(), "--sink", sink_arg, "--now", "2026-12-01T00:00:00Z"]);
        assert!(ok, "{outcome}");
        duckdb(&format!(
            r#"
import duckdb
for day in (24, 25):
    print(day, duckdb.sql(f"SELECT settings['theme'], settings['locale'] FROM read_parquet('{sink_arg}/year=2026/month=11/day={{day}}/*.parquet')").fetchall())
"#
        ))
    };
    assert_eq!(theme("examples/user-settings.yaml"), "24 [('dark', None)]\n25 [('light', 'de')]\n", "by arrival");
    assert_eq!(theme("examples/user-settings-event-time.yaml"), "24 [('light', None)]\n25 [(None, 'de')]\n", "by event time");
}

/// The hours around midnight replayed with delays to arrival: by arrival directory the 25th holds
/// events of the 24th; by event time each day holds exactly its events that arrived within the
/// lateness, and the others are rejected as late (the script checks it against its own model).
#[test]
fn a_replayed_firehose_midnight_splits_by_event_day() {
    let output = Command::new(python())
        .arg("scripts/bench/firehose_replay.py")
        .arg(env!("CARGO_BIN_EXE_eventpipe"))
        .args(["--midnight", "--events", "400"])
        .current_dir(workspace())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("by event time (lateness 2h): 2026-11-24 holds ") && !stdout.contains("FAIL"), "{stdout}");
    let by_arrival = stdout.lines().find(|line| line.starts_with("by arrival: 2026-11-25 holds")).unwrap_or_default();
    assert!(!by_arrival.contains(" 0 of them of another day"), "Firehose files some of the 24th under the 25th: {stdout}");
    let late = stdout.lines().find(|line| line.starts_with("by event time") && line.ends_with("rejected as late")).unwrap_or_default();
    assert!(!late.contains(": 0 events"), "delays of up to 3 hours make some events later than 2 hours: {stdout}");
}

/// The Python `scripts/test.sh` sets up with `tests/requirements.txt`.
fn python() -> String {
    std::env::var("EVENTPIPE_PYTHON").expect("EVENTPIPE_PYTHON must name a Python with tests/requirements.txt installed; scripts/test.sh sets it up")
}

/// A Delta table as the independent reader reads it, with its rows.
fn delta_read(table: &Path) -> serde_json::Value {
    let output = Command::new(python()).arg("tests/delta_read.py").arg(table).arg("--rows").current_dir(workspace()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}
