//! The transformer end to end on local files: CSV dialects, typed output, the commit protocol,
//! bad rows under each policy, the SQL sandbox and spilling under a small memory limit.

mod support;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::prelude::SessionContext;
use eventpipe_transformer::Error;
use eventpipe_transformer::spec::BadRecordPolicy;
use eventpipe_transformer::task::EngineSettings;
use support::{DAY, Dirs, HEADER, TaskBuilder, gzip, query_parquet, table, write_partition};
use tempfile::TempDir;

#[tokio::test]
async fn every_valid_csv_dialect_is_read() {
    let dirs = Dirs::new();
    write_partition(
        dirs.source.path(),
        &[
            ("a.csv", b"\xEF\xBB\xBFid,name,value,timestamp\r\n1,font,\"a,b\",1795478400\r\n2,quote,\"say \"\"hi\"\"\",1795478401\r\n"),
            ("b.csv", b"id,name,value,timestamp\n3,multi,\"line1\nline2\",1795478402\n4,,,1795478403"),
            ("c.csv.gz", &gzip(b"id,name,value,timestamp\n5,zipped,yes,1795478404\n")),
            ("empty.csv", b""),
            ("header-only.csv", HEADER.as_bytes()),
            ("_SUCCESS", b""),
        ],
    );
    let summary = eventpipe_transformer::run::run(&dirs.builder().build()).await.unwrap();
    assert_eq!((summary.rows_read, summary.rows_rejected, summary.rows_written), (5, 0, 5));
    let rows = dirs.query("SELECT id, name, value, \"timestamp\" FROM out ORDER BY id").await;
    assert_eq!(
        rows[3..8],
        [
            "| 1  | font   | a,b      | 2026-11-24T00:00:00Z |",
            "| 2  | quote  | say \"hi\" | 2026-11-24T00:00:01Z |",
            "| 3  | multi  | line1    | 2026-11-24T00:00:02Z |",
            "|    |        | line2    |                      |",
            "| 4  |        |          | 2026-11-24T00:00:03Z |",
        ]
    );
    assert_eq!(rows[8], "| 5  | zipped | yes      | 2026-11-24T00:00:04Z |");
}

#[tokio::test]
async fn output_types_are_what_athena_reads() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name,value,timestamp\n7,n,v,1795478400\n")]);
    let task = dirs
        .builder()
        .sql("SELECT id, \"timestamp\", to_timestamp_seconds(\"timestamp\") AS ts_seconds, year, day FROM events")
        .build();
    eventpipe_transformer::run::run(&task).await.unwrap();
    let ctx = SessionContext::new();
    let frame = ctx.read_parquet(format!("{}/", dirs.output_dir().display()), Default::default()).await.unwrap();
    let schema = frame.schema();
    let utc_micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    assert_eq!(schema.field_with_unqualified_name("timestamp").unwrap().data_type(), &utc_micros);
    assert_eq!(schema.field_with_unqualified_name("ts_seconds").unwrap().data_type(), &utc_micros);
    assert!(!schema.field_with_unqualified_name("id").unwrap().is_nullable());
    // Partition values live in the path, not in the files.
    assert!(schema.field_with_unqualified_name("year").is_err() && schema.field_with_unqualified_name("day").is_err());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dirs.output_dir().join("_manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["schema"][1]["type"], "Timestamp(µs, \"UTC\")");
}

#[tokio::test]
async fn the_latest_value_per_setting_becomes_a_map_per_user() {
    let dirs = Dirs::new();
    let events = "id,name,value,timestamp\n\
        1,dark_mode,on,100\n1,dark_mode,off,200\n1,font_size,12,150\n\
        2,language,de-DE,300\n2,language,en-US,300\n2,language,fr-FR,299\n\
        1,dark_mode,on,199\n";
    write_partition(dirs.source.path(), &[("a.csv", events.as_bytes())]);
    let sql = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/user-settings.yaml")).unwrap();
    let sql = example_sql(&sql);
    let summary = eventpipe_transformer::run::run(&dirs.builder().sql(&sql).build()).await.unwrap();
    assert_eq!((summary.rows_read, summary.rows_written), (7, 2));
    // Tie on (2, language) at 300: the greatest value, en-US, wins.
    assert_eq!(
        dirs.query("SELECT id, settings FROM out ORDER BY id").await[3..5],
        ["| 1  | {dark_mode: off, font_size: 12} |", "| 2  | {language: en-US}               |"]
    );
}

/// The SQL of an example manifest (the `sql: |` block).
fn example_sql(manifest: &str) -> String {
    let start = manifest.find("sql: |").unwrap() + "sql: |".len();
    manifest[start..]
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with("      ") || line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn unchanged_input_is_a_no_op_and_late_files_replace_the_output() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name,value,timestamp\n1,n,v,1795478400\n")]);
    let first = eventpipe_transformer::run::run(&dirs.builder().build()).await.unwrap();
    assert!(!first.skipped);
    let files_after_first = dirs.output_files();

    let again = eventpipe_transformer::run::run(&dirs.builder().build()).await.unwrap();
    assert!(again.skipped);
    assert_eq!(again.run_id, first.run_id);
    assert_eq!(dirs.output_files(), files_after_first);

    // An aggregation needs the whole partition: a late file replaces the output.
    let aggregation = dirs.builder().sql("SELECT id, count(*) AS n FROM events GROUP BY id");
    let counted = eventpipe_transformer::run::run(&aggregation.clone().build()).await.unwrap();
    write_partition(dirs.source.path(), &[("late.csv", b"id,name,value,timestamp\n2,n,v,1795478401\n")]);
    let late = eventpipe_transformer::run::run(&aggregation.build()).await.unwrap();
    assert!(!late.skipped);
    assert_ne!(late.input_fingerprint, counted.input_fingerprint);
    assert_eq!((late.rows_read, late.rows_written, late.by_run.read, late.increments), (2, 2, 2, 1));
    let files = dirs.output_files();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| f == "_manifest.json" || f.contains(&late.run_id)), "{files:?}");
    assert_eq!(dirs.query("SELECT count(*) AS n FROM out").await[3], "| 2 |");
}

/// A row-by-row conversion grows by its new objects: each run converts only what the committed
/// output lacks. A committed object that changed makes the next run convert the whole partition.
#[tokio::test]
async fn a_conversion_appends_new_objects_and_reprocesses_a_changed_one() {
    let dirs = Dirs::new();
    let rows = |first: u32, count: u32| {
        let mut csv = HEADER.to_string();
        for id in first..first + count {
            csv.push_str(&format!("{id},n,v,{}\n", 1_795_478_400 + id));
        }
        csv.into_bytes()
    };
    write_partition(dirs.source.path(), &[("a.csv", &rows(0, 3))]);
    let first = eventpipe_transformer::run::run(&dirs.builder().build()).await.unwrap();
    assert_eq!((first.by_run.read, first.increments), (3, 1));

    write_partition(dirs.source.path(), &[("b.csv", &rows(3, 2))]);
    let second = eventpipe_transformer::run::run(&dirs.builder().build()).await.unwrap();
    assert_eq!((second.by_run.read, second.by_run.written, second.increments), (2, 2, 2), "only b.csv was read");
    assert_eq!((second.rows_read, second.rows_written), (5, 5), "the partition's output holds both");
    assert_eq!(dirs.output_files().len(), 3, "{:?}", dirs.output_files());
    assert!(eventpipe_transformer::run::run(&dirs.builder().build()).await.unwrap().skipped);
    assert_eq!(dirs.query("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM out").await[3], "| 5 | 5   |");

    write_partition(dirs.source.path(), &[("a.csv", &rows(10, 4))]);
    let replaced = eventpipe_transformer::run::run(&dirs.builder().build()).await.unwrap();
    assert_eq!((replaced.by_run.read, replaced.rows_read, replaced.increments), (6, 6, 1), "the whole partition again");
    assert_eq!(dirs.output_files().len(), 2, "{:?}", dirs.output_files());

    let mut full = dirs.builder().build();
    write_partition(dirs.source.path(), &[("c.csv", &rows(20, 1))]);
    full.full = true;
    let whole = eventpipe_transformer::run::run(&full).await.unwrap();
    assert_eq!((whole.by_run.read, whole.increments), (7, 1), "--full converts the whole partition");
}

#[tokio::test]
async fn a_changed_spec_reprocesses_and_a_skip_removes_uncommitted_files() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name,value,timestamp\n1,n,v,1795478400\n2,m,w,1795478401\n")]);
    let first = eventpipe_transformer::run::run(&dirs.builder().build()).await.unwrap();
    assert_eq!((first.skipped, first.rows_written), (false, 2));

    // A run killed mid-write leaves a data file nobody committed.
    let orphan = dirs.output_dir().join("part-20261124T000000-deadbeef-000.parquet");
    std::fs::write(&orphan, b"partial").unwrap();
    let again = eventpipe_transformer::run::run(&dirs.builder().build()).await.unwrap();
    assert!(again.skipped);
    assert!(!orphan.exists(), "{:?}", dirs.output_files());

    let filtered = dirs.builder().sql("SELECT * FROM events WHERE id = 1").build();
    let changed = eventpipe_transformer::run::run(&filtered).await.unwrap();
    assert!(!changed.skipped, "a new SQL must not be served by the old output");
    assert_ne!(changed.spec_hash, first.spec_hash);
    assert_eq!(changed.input_fingerprint, first.input_fingerprint);
    assert_eq!((changed.rows_read, changed.rows_written), (2, 1));
    assert!(eventpipe_transformer::run::run(&filtered).await.unwrap().skipped);
}

#[tokio::test]
async fn a_conversion_past_its_time_limit_fails_and_commits_nothing() {
    let dirs = Dirs::new();
    let mut csv = String::from("id,name,value,timestamp\n");
    for i in 0..100_000 {
        csv.push_str(&format!("{i},n,v,{}\n", 1_795_478_400 + i));
    }
    write_partition(dirs.source.path(), &[("a.csv", csv.as_bytes())]);
    let mut task = dirs.builder().build();
    task.engine.timeout_seconds = Some(0);
    let error = eventpipe_transformer::run::run(&task).await.unwrap_err();
    assert!(matches!(error, eventpipe_transformer::Error::Timeout(0)), "{error}");
    assert_eq!(error.exit_class(), eventpipe_transformer::error::ExitClass::Transient);
    assert!(dirs.output_files().is_empty(), "{:?}", dirs.output_files());
}

/// Rows read are the rows in the input, whatever the query does with them.
#[tokio::test]
async fn rows_read_count_the_input_whatever_the_query() {
    let dirs = Dirs::new();
    let mut csv = String::from("id,name,value,timestamp\n");
    for i in 0..1000 {
        csv.push_str(&format!("{i},n{},v,{}\n", i % 7, 1_795_478_400 + i));
    }
    write_partition(dirs.source.path(), &[("a.csv", csv.as_bytes())]);
    let queries = [
        ("SELECT * FROM events", 1000),
        ("SELECT * FROM events LIMIT 5", 5),
        ("SELECT a.id, a.name FROM events a JOIN events b ON a.id = b.id", 1000),
        ("SELECT id FROM events UNION ALL SELECT id FROM events", 2000),
        ("WITH e AS (SELECT id FROM events) SELECT id FROM e UNION ALL SELECT id FROM e", 2000),
        ("SELECT * FROM events WHERE 1 = 0", 0),
        ("SELECT name, count(*) AS n FROM events GROUP BY name", 7),
    ];
    for (sql, written) in queries {
        let summary = eventpipe_transformer::run::run(&dirs.builder().sql(sql).build()).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!((summary.rows_read, summary.rows_rejected, summary.rows_written), (1000, 0, written), "{sql}");
    }
}

/// Parquet writers buffer a row group outside the query's memory pool: with a small pool, row
/// groups are cut by bytes long before the row limit.
#[tokio::test]
async fn row_groups_are_cut_by_bytes_under_a_small_memory_limit() {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let dirs = Dirs::new();
    let mut csv = String::from("id,name,value,timestamp\n");
    for i in 0..200_000u64 {
        let noise = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        csv.push_str(&format!("{i},{noise:x}{noise:o},{noise:x}-{i},{}\n", 1_795_478_400 + i));
    }
    write_partition(dirs.source.path(), &[("a.csv", csv.as_bytes())]);
    let mut task = dirs.builder().build();
    task.engine = EngineSettings { target_partitions: Some(1), memory_limit_mib: Some(16), ..EngineSettings::default() };
    let summary = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!(summary.rows_written, 200_000);
    let file = dirs.output_dir().join(dirs.output_files().iter().find(|f| f.ends_with(".parquet")).unwrap());
    let reader = SerializedFileReader::new(std::fs::File::open(file).unwrap()).unwrap();
    let groups = reader.metadata().row_groups();
    assert!(groups.len() >= 2, "{} row group(s) of {:?} rows", groups.len(), groups.iter().map(|g| g.num_rows()).collect::<Vec<_>>());
}

/// The fast path and the row-by-row path share one timestamp parser: an epoch in nanoseconds or
/// milliseconds under `unit: seconds` is a bad row with a reason, never a timestamp centuries away.
#[tokio::test]
async fn out_of_range_epochs_are_bad_rows_on_both_paths() {
    let dirs = Dirs::new();
    let csv = b"id,name,value,timestamp\n1,n,v,1795478400\n2,n,v,1795478400000000000\n3,n,v,1795478400000\n4,n,v,1795478401\n";
    write_partition(dirs.source.path(), &[("a.csv", csv)]);
    let summary = eventpipe_transformer::run::run(&dirs.builder().policy(BadRecordPolicy::Skip).build()).await.unwrap();
    assert_eq!((summary.rows_read, summary.rows_rejected, summary.rows_written), (4, 2, 2));
    let error = eventpipe_transformer::run::run(&dirs.builder().policy(BadRecordPolicy::Fail).build()).await.unwrap_err().to_string();
    assert!(error.contains("line 3") && error.contains("outside the years 1 to 9999"), "{error}");
    assert_eq!(
        dirs.query("SELECT CAST(max(\"timestamp\") AS VARCHAR) AS t FROM out").await[3],
        "| 2026-11-24T00:00:01Z |"
    );
}

const BAD: &[u8] = b"id,name,value,timestamp\n1,n,v,100\nnope,n,v,100\n2,n,v\n3,n,v,100\n,n,v,100\n";

#[tokio::test]
async fn fail_policy_names_object_line_and_reason() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("good.csv", b"id,name,value,timestamp\n9,n,v,1\n"), ("bad.csv", BAD)]);
    let error = eventpipe_transformer::run::run(&dirs.builder().policy(BadRecordPolicy::Fail).build())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::BadRecord { line: 3, total: 3, .. }), "{message}");
    assert!(message.contains("year=2026/month=11/day=24/bad.csv line 3"), "{message}");
    assert!(message.contains("column \"id\": \"nope\" is not a valid int64"), "{message}");
    assert!(dirs.output_files().is_empty(), "nothing is committed or left behind: {:?}", dirs.output_files());
}

#[tokio::test]
async fn skip_policy_counts_every_bad_row() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("good.csv", b"id,name,value,timestamp\n9,n,v,1\n"), ("bad.csv", BAD)]);
    let summary =
        eventpipe_transformer::run::run(&dirs.builder().policy(BadRecordPolicy::Skip).build()).await.unwrap();
    assert_eq!((summary.rows_read, summary.rows_rejected, summary.rows_written), (6, 3, 3));
    assert_eq!(dirs.query("SELECT count(*) FROM out").await[3], "| 3        |");
}

#[tokio::test]
async fn quarantine_policy_writes_bad_rows_with_reasons() {
    let dirs = Dirs::new();
    let rejected = TempDir::new().unwrap();
    write_partition(dirs.source.path(), &[("bad.csv", BAD), ("bad-utf8.csv", b"id,name,value,timestamp\n5,n,\xff\xfe,100\n")]);
    let task = dirs
        .builder()
        .policy(BadRecordPolicy::Quarantine)
        .rejected_url(rejected.path().to_str().unwrap())
        .build();
    let summary = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!(summary.rows_read, summary.rows_written + summary.rows_rejected);
    assert_eq!(summary.rows_rejected, 4);
    let path = rejected.path().join(DAY.sink_path()).join(format!("rejected-{}.jsonl", summary.run_id));
    let mut lines: Vec<serde_json::Value> =
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.sort_by_key(|l| (l["object"].as_str().unwrap().contains("bad.csv"), l["line"].as_u64().unwrap()));
    let described: Vec<(u64, String, String)> = lines
        .iter()
        .map(|l| (l["line"].as_u64().unwrap(), l["reason"].as_str().unwrap().into(), l["text"].as_str().unwrap().into()))
        .collect();
    assert!(lines.iter().all(|l| l["object"].as_str().unwrap().starts_with("file:///")));
    assert_eq!(described[0], (2, "column \"value\": invalid UTF-8".into(), "5,n,\u{fffd}\u{fffd},100".into()));
    assert_eq!(described[1], (3, "column \"id\": \"nope\" is not a valid int64".into(), "nope,n,v,100".into()));
    assert_eq!(described[2], (4, "3 fields, expected 4".into(), "2,n,v".into()));
    assert_eq!(described[3], (6, "column \"id\": empty value in a non-nullable column".into(), ",n,v,100".into()));
}

#[tokio::test]
async fn refused_sql_reads_no_data() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name,value,timestamp\n1,n,v,1\n")]);
    for (sql, expected) in [
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "only a query is allowed"),
        ("SELECT * FROM events; DROP TABLE events", "2 statements"),
        ("SELECT * FROM '/etc/passwd'", "/etc/passwd"),
        ("SELECT missing FROM events", "missing"),
    ] {
        let error = eventpipe_transformer::run::run(&dirs.builder().sql(sql).build()).await.unwrap_err();
        assert!(matches!(error, Error::Sql(_)), "{sql}: {error}");
        assert!(error.to_string().contains(expected), "{sql}: {error}");
    }
    assert!(dirs.output_files().is_empty());
}

#[tokio::test]
async fn an_aggregation_larger_than_the_memory_limit_spills() {
    let dirs = Dirs::new();
    let mut csv = String::from(HEADER);
    for i in 0..120_000u64 {
        csv.push_str(&format!("{},setting_{},value_{},{}\n", i % 50_000, i % 16, i % 12, 1_795_478_400 + i % 86_400));
    }
    write_partition(dirs.source.path(), &[("big.csv", csv.as_bytes())]);
    let mut task = dirs
        .builder()
        .sql(&example_sql(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/user-settings.yaml")).unwrap()))
        .build();
    task.engine = EngineSettings { target_partitions: Some(2), memory_limit_mib: Some(10), ..EngineSettings::default() };
    let summary = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!((summary.rows_read, summary.rows_written), (120_000, 50_000));
    assert!(summary.spilled_bytes > 0, "{summary:?}");
}

#[tokio::test]
async fn every_column_type_is_parsed_and_typed() {
    use eventpipe_transformer::spec::{Column, ColumnType, TimestampUnit};
    let column = |name: &str, data_type| Column { name: name.into(), data_type, nullable: true, unit: None, format: None };
    let columns = vec![
        column("s", ColumnType::String),
        column("i", ColumnType::Int64),
        column("f", ColumnType::Float64),
        column("b", ColumnType::Bool),
        column("d", ColumnType::Date),
        Column { unit: Some(TimestampUnit::Millis), ..column("millis", ColumnType::Timestamp) },
        Column { format: Some("%Y-%m-%d %H:%M:%S".into()), ..column("formatted", ColumnType::Timestamp) },
        column("iso", ColumnType::Timestamp),
    ];
    let dirs = Dirs::new();
    write_partition(
        dirs.source.path(),
        &[(
            "a.csv",
            b"s,i,f,b,d,millis,formatted,iso\n\
              x,-7,2.5,TRUE,2026-11-24,1795478400123,2026-11-24 01:02:03,2026-11-24T05:00:00+02:00\n\
              y,8,1e3,false,2026-01-31,0,2026-11-24 23:59:59,2026-11-24T00:00:00Z\n\
              bad,1,1,maybe,2026-11-24,0,2026-11-24 00:00:00,2026-11-24T00:00:00Z\n\
              bad,1,1,true,2026-11-24,0,24/11/2026,2026-11-24T00:00:00Z\n",
        )],
    );
    let task = dirs.builder().columns(columns).policy(BadRecordPolicy::Skip).build();
    let summary = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!((summary.rows_read, summary.rows_rejected, summary.rows_written), (4, 2, 2));
    let ctx = SessionContext::new();
    let batches = query_parquet(&ctx, &format!("{}/", dirs.output_dir().display()), "SELECT * FROM out ORDER BY s").await;
    let schema = batches[0].schema();
    let types: Vec<String> = schema.fields().iter().map(|f| f.data_type().to_string()).collect();
    assert_eq!(
        types,
        ["Utf8View", "Int64", "Float64", "Boolean", "Date32", "Timestamp(µs, \"UTC\")", "Timestamp(µs, \"UTC\")", "Timestamp(µs, \"UTC\")"]
    );
    assert_eq!(
        table(&batches)[3..5],
        [
            "| x | -7 | 2.5    | true  | 2026-11-24 | 2026-11-24T00:00:00.123Z | 2026-11-24T01:02:03Z | 2026-11-24T03:00:00Z |",
            "| y | 8  | 1000.0 | false | 2026-01-31 | 1970-01-01T00:00:00Z     | 2026-11-24T23:59:59Z | 2026-11-24T00:00:00Z |",
        ]
    );
}

/// The newest value per (id, name) as a map per id, in portable SQL: the same result `latest_map`
/// gives in one pass.
const PLAIN_SQL_LATEST: &str = r#"
WITH latest AS (
  SELECT id, name, last_value(value ORDER BY "timestamp", value NULLS FIRST) AS value
  FROM events GROUP BY id, name
)
SELECT id, map(array_agg(name), array_agg(value)) AS settings FROM latest GROUP BY id"#;

#[tokio::test]
async fn latest_map_agrees_with_the_plain_sql_formulation() {
    let dirs = Dirs::new();
    let mut seed = 7u64;
    let mut next = move |bound: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % bound
    };
    let mut files = Vec::new();
    for _ in 0..3 {
        let mut csv = String::from(HEADER);
        for _ in 0..5_000 {
            let value = match next(6) {
                0 => String::new(),
                v => format!("v{v}"),
            };
            csv.push_str(&format!("{},name{},{value},{}\n", next(300), next(6), 1_795_478_400 + next(40)));
        }
        files.push(csv);
    }
    let named: Vec<(String, &[u8])> = files.iter().enumerate().map(|(i, f)| (format!("{i}.csv"), f.as_bytes())).collect();
    let named: Vec<(&str, &[u8])> = named.iter().map(|(n, f)| (n.as_str(), *f)).collect();
    write_partition(dirs.source.path(), &named);

    let mut outputs = Vec::new();
    for sql in [PLAIN_SQL_LATEST, "SELECT id, latest_map(name, value, \"timestamp\") AS settings FROM events GROUP BY id"] {
        let sink = TempDir::new().unwrap();
        let mut task = TaskBuilder::new(dirs.source.path().to_str().unwrap(), sink.path().to_str().unwrap()).sql(sql).build();
        task.engine.target_partitions = Some(2);
        let summary = eventpipe_transformer::run::run(&task).await.unwrap();
        assert_eq!((summary.rows_read, summary.rows_written), (15_000, 300));
        let ctx = SessionContext::new();
        let entries = "SELECT id, unnest(map_keys(settings)) AS k, unnest(map_values(settings)) AS v FROM out ORDER BY id, k";
        outputs.push(table(&query_parquet(&ctx, &format!("{}/{}", sink.path().display(), DAY.sink_path()), entries).await));
    }
    assert!(outputs[0].len() > 1000, "{}", outputs[0].len());
    assert_eq!(outputs[0], outputs[1]);
}

#[tokio::test]
async fn without_a_schema_every_header_column_is_a_string() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name,value,timestamp\n1,n,v,1795478400\n2,m,,x\n")]);
    let task = dirs.builder().columns(Vec::new()).build();
    let summary = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!((summary.rows_read, summary.rows_written), (2, 2));
    let ctx = SessionContext::new();
    let batches = query_parquet(&ctx, &format!("{}/", dirs.output_dir().display()), "SELECT * FROM out ORDER BY id").await;
    let names: Vec<&str> = batches[0].schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id", "name", "value", "timestamp"]);
    assert!(batches[0].schema_ref().fields().iter().all(|f| f.data_type() == &DataType::Utf8View && f.is_nullable()));
    assert_eq!(table(&batches)[4], "| 2  | m    |       | x          |");
}

/// Columns are read by the header's names: an object with its columns in another order is read
/// right, and one whose header names other columns (or that has none) is refused, naming it.
#[tokio::test]
async fn headers_are_read_by_name_and_others_refused() {
    let dirs = Dirs::new();
    write_partition(
        dirs.source.path(),
        &[("good.csv", b"ID,Name,Value,Timestamp\n1,n,v,1\n"), ("swapped.csv", b"id,value,name,timestamp\n2,v2,n2,2\n")],
    );
    let summary = eventpipe_transformer::run::run(&dirs.builder().build()).await.unwrap();
    assert_eq!((summary.rows_read, summary.rows_written), (2, 2));
    let rows = dirs.query("SELECT id, name, value FROM out ORDER BY id").await;
    assert_eq!(&rows[3..5], ["| 1  | n    | v     |", "| 2  | n2   | v2    |"]);

    for (name, content) in [("other.csv", &b"id,name,value,time\n3,n,v,3\n"[..]), ("headless.csv", b"3,n,v,3\n")] {
        let dirs = Dirs::new();
        write_partition(dirs.source.path(), &[("good.csv", b"id,name,value,timestamp\n1,n,v,1\n"), (name, content)]);
        let error = eventpipe_transformer::run::run(&dirs.builder().policy(BadRecordPolicy::Skip).build()).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, Error::Config(_)), "{message}");
        assert!(message.contains(&format!("day=24/{name}: its header")) && message.contains("does not name the columns"), "{message}");
        assert!(dirs.output_files().is_empty());
    }
}

/// Without declared columns, the first object's header declares them, and every other object is
/// read by its own header's names.
#[tokio::test]
async fn without_a_schema_every_object_is_read_by_its_header() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name\n1,n\n"), ("b.csv", b"name,id\nm,2\n"), ("c.csv", b"3,o\n")]);
    let error = eventpipe_transformer::run::run(&dirs.builder().columns(Vec::new()).build()).await.unwrap_err();
    assert!(error.to_string().contains("day=24/c.csv: its header [\"3\", \"o\"]"), "{error}");
    std::fs::remove_file(dirs.source.path().join(DAY.sink_path()).join("c.csv")).unwrap();
    let summary = eventpipe_transformer::run::run(&dirs.builder().columns(Vec::new()).build()).await.unwrap();
    assert_eq!(summary.rows_written, 2);
    let rows = dirs.query("SELECT id, name FROM out ORDER BY id").await;
    assert_eq!(&rows[3..5], ["| 1  | n    |", "| 2  | m    |"]);
}
