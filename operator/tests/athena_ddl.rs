//! `eventpipe athena-ddl` on the shipped examples: the statement Athena is given, checked line by
//! line, and parsed as Hive DDL where sqlparser knows the types.

use std::process::Command;

use datafusion::sql::sqlparser::dialect::HiveDialect;
use datafusion::sql::sqlparser::parser::Parser;

fn athena_ddl(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_eventpipe"))
        .arg("athena-ddl")
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    (output.status.success(), String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

/// A Delta sink is registered as a Delta table: Athena takes columns and partitions from its log.
#[test]
fn a_delta_sink_becomes_a_delta_table() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/user-settings.yaml")).unwrap();
    let mut manifest: serde_yaml::Value = serde_yaml::from_str(&example).unwrap();
    manifest["spec"]["sink"]["format"] = "delta".into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("delta.yaml");
    std::fs::write(&path, serde_yaml::to_string(&manifest).unwrap()).unwrap();
    let (ok, ddl, stderr) = athena_ddl(&["-f", path.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        ddl.ends_with("CREATE EXTERNAL TABLE IF NOT EXISTS `user_settings`\nLOCATION 's3://output/user-settings/'\nTBLPROPERTIES ('table_type' = 'DELTA');\n"),
        "{ddl}"
    );
}

#[test]
fn the_aggregation_example_becomes_a_projected_table() {
    let (ok, ddl, stderr) = athena_ddl(&["-f", "examples/user-settings.yaml"]);
    assert!(ok, "{stderr}");
    let expected = "-- Processing mode full: the SQL aggregates rows (GROUP BY or an aggregate function), so every run processes the whole partition;
-- a partition's rows appear when it has closed (or at each schedule.openRefreshSeconds).
CREATE EXTERNAL TABLE IF NOT EXISTS `user_settings` (
  `id` bigint,
  `settings` map<string,string>
)
PARTITIONED BY (`year` int, `month` int, `day` int)
STORED AS PARQUET
LOCATION 's3://output/user-settings/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.year.type' = 'integer',
  'projection.year.range' = '2020,2099',
  'projection.year.digits' = '4',
  'projection.month.type' = 'integer',
  'projection.month.range' = '1,12',
  'projection.month.digits' = '2',
  'projection.day.type' = 'integer',
  'projection.day.range' = '1,31',
  'projection.day.digits' = '2',
  'storage.location.template' = 's3://output/user-settings/year=${year}/month=${month}/day=${day}/',
  'parquet.compression' = 'ZSTD'
);
";
    assert_eq!(ddl, expected);
}

/// An event-time sink's partitions are event days: the statement says so, and is otherwise the
/// same table.
#[test]
fn an_event_time_sink_is_partitioned_by_event_day() {
    let (ok, ddl, stderr) = athena_ddl(&["-f", "examples/user-settings-event-time.yaml"]);
    assert!(ok, "{stderr}");
    assert!(ddl.contains("-- Partitioned by event time: year, month and day are the day of `timestamp` in UTC, not the directory"), "{ddl}");
    assert!(ddl.contains("a day is complete 2h after it ends"), "{ddl}");
    assert!(ddl.contains("PARTITIONED BY (`year` int, `month` int, `day` int)"), "{ddl}");
    let (_, by_arrival, _) = athena_ddl(&["-f", "examples/user-settings.yaml"]);
    assert!(!by_arrival.contains("event time"), "{by_arrival}");
}

#[test]
fn the_conversion_example_keeps_its_typed_columns() {
    let (ok, ddl, stderr) = athena_ddl(&["-f", "examples/user-events-parquet.yaml", "--table", "events"]);
    assert!(ok, "{stderr}");
    assert!(ddl.starts_with("-- Processing mode append: the transform keeps rows one by one"), "{ddl}");
    assert!(ddl.contains(
        "CREATE EXTERNAL TABLE IF NOT EXISTS `events` (\n  `id` bigint,\n  `name` string,\n  `value` string,\n  `timestamp` timestamp\n)"
    ));
    assert!(ddl.contains("LOCATION 's3://output/user-events/'"));
    // sqlparser's Hive dialect knows no map<...> types, so only this table is parsed.
    assert_eq!(Parser::parse_sql(&HiveDialect {}, &ddl).unwrap().len(), 1);
}

#[test]
fn a_local_sink_has_no_athena_table() {
    let manifest = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/user-settings.yaml")).unwrap();
    std::fs::write(manifest.path(), text.replace("url: s3://output/user-settings/", "url: /tmp/out/")).unwrap();
    let (ok, _, stderr) = athena_ddl(&["-f", manifest.path().to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(stderr.trim(), "error: Athena reads S3; sink.url is /tmp/out/");
}
