//! Inputs, queries and histories that once made a run succeed with wrong output, each run end to
//! end on local files as a user would meet it. Each test names the wrong output it rules out.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::parquet::basic::{ConvertedType, LogicalType, TimeUnit};
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use eventpipe_transformer::commit::manifest::{self, Manifest, ManifestFile};
use eventpipe_transformer::spec::{BadRecordPolicy, Column, ColumnType, CommitMode};
use eventpipe_transformer::store::{Location, Store};
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult,
};
use support::{DAY, Dirs, write_partition};
use tempfile::TempDir;

/// The Parquet schema of a sink's first data file: each leaf column's path and logical type.
fn parquet_leaves(dirs: &Dirs) -> Vec<(String, Option<LogicalType>, ConvertedType)> {
    let name = dirs.output_files().into_iter().find(|name| name.ends_with(".parquet")).expect("a data file");
    let reader = SerializedFileReader::new(std::fs::File::open(dirs.output_dir().join(name)).unwrap()).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    schema.columns().iter().map(|c| (c.path().string(), c.logical_type_ref().cloned(), c.converted_type())).collect()
}

fn column(name: &str, data_type: ColumnType, nullable: bool) -> Column {
    Column { name: name.into(), data_type, nullable, unit: None, format: None }
}

/// An unterminated quote in the last column took the rest of the object into its value: one row
/// read, one written, and rows 2 and 3 gone without a word.
#[tokio::test]
async fn a_quote_that_never_closes_costs_its_row_only() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name,timestamp,value\n1,a,1764000000,\"x\n2,c,1764000001,d\n3,e,1764000002,f\n")]);
    let columns = vec![
        column("id", ColumnType::Int64, false),
        column("name", ColumnType::String, true),
        Column { unit: Some(eventpipe_transformer::spec::TimestampUnit::Seconds), ..column("timestamp", ColumnType::Timestamp, false) },
        column("value", ColumnType::String, true),
    ];
    let task = dirs.builder().columns(columns).policy(BadRecordPolicy::Skip).build();
    let summary = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!((summary.rows_read, summary.rows_rejected, summary.rows_written), (3, 1, 2));
    assert_eq!(dirs.query("SELECT id, value FROM out ORDER BY id").await[3..5], ["| 2  | d     |", "| 3  | f     |"]);
}

/// A CTE named `events` made an aggregation look row by row: a late object was appended as an
/// increment, and the day held two partial counts for one id.
#[tokio::test]
async fn a_cte_named_events_does_not_make_an_aggregation_append() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name,value,timestamp\n1,a,x,1\n1,b,y,2\n2,a,z,3\n")]);
    let sql = "WITH events AS (SELECT id, count(*) AS n FROM events GROUP BY id) SELECT * FROM events";
    let task = dirs.builder().sql(sql).build();
    eventpipe_transformer::run::run(&task).await.unwrap();
    write_partition(dirs.source.path(), &[("late.csv", b"id,name,value,timestamp\n1,c,w,4\n")]);
    let summary = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!(summary.increments, 1, "the whole partition is processed again");
    assert_eq!(dirs.query("SELECT id, n FROM out ORDER BY id").await[3..], ["| 1  | 3 |", "| 2  | 1 |", "+----+---+"]);
}

/// `%Z` read a zone name and then the time as UTC (10:00 PST became 10:00Z); an hour without
/// minutes became midnight; an offset beyond ±24 h fell back to UTC.
#[tokio::test]
async fn timestamp_formats_never_shift_an_instant() {
    let formatted = |format: &str| Column { format: Some(format.into()), ..column("at", ColumnType::Timestamp, true) };
    let run = |format: &str, csv: &'static [u8]| {
        let dirs = Dirs::new();
        write_partition(dirs.source.path(), &[("a.csv", csv)]);
        let task = dirs.builder().columns(vec![column("id", ColumnType::Int64, false), formatted(format)]).policy(BadRecordPolicy::Skip).build();
        async move { (eventpipe_transformer::run::run(&task).await, dirs) }
    };
    let (refused, _) = run("%Y-%m-%d %H:%M:%S %Z", b"id,at\n1,2026-11-24 10:00:00 PST\n").await;
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("%Z") && message.contains("at"), "{message}");

    let (hourly, dirs) = run("%Y-%m-%d %H", b"id,at\n1,2026-11-24 10\n").await;
    assert_eq!(hourly.unwrap().rows_written, 1);
    assert_eq!(dirs.query("SELECT CAST(at AS VARCHAR) AS at FROM out").await[3], "| 2026-11-24T10:00:00Z |");

    let (far, _) = run("%Y-%m-%d %H:%M %z", b"id,at\n1,2026-11-24 10:00 +9900\n2,2026-11-24 10:00 +0100\n").await;
    assert_eq!(far.unwrap().rows_rejected, 1);
}

/// Spark writes `month=1/day=4/`: such objects were matched by the layout but never listed, so
/// they were left out of the output and the fingerprint.
#[tokio::test]
async fn unpadded_directories_are_read_with_padded_ones() {
    let dirs = Dirs::new();
    for (directory, content) in [("day=04", "id,name,value,timestamp\n1,a,x,1\n"), ("day=4", "id,name,value,timestamp\n2,b,y,2\n")] {
        let path = dirs.source.path().join("year=2026/month=11").join(directory);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("part.csv"), content).unwrap();
    }
    let mut task = dirs.builder().build();
    task.partition.day = 4;
    let summary = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!(summary.rows_read, 2, "both spellings are one partition");
}

/// Without declared columns, every object was read by the first object's header: a second
/// object with its header in another order had its columns swapped.
#[tokio::test]
async fn without_a_schema_columns_are_read_by_name() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name\n1,n\n"), ("b.csv", b"name,id\nm,2\n")]);
    eventpipe_transformer::run::run(&dirs.builder().columns(Vec::new()).build()).await.unwrap();
    assert_eq!(dirs.query("SELECT id, name FROM out ORDER BY id").await[3..5], ["| 1  | n    |", "| 2  | m    |"]);
}

/// A bad value in a column the SQL does not read was accepted when the object was otherwise
/// clean, and rejected when another bad row sent the object through the row-by-row pass.
#[tokio::test]
async fn a_bad_value_is_bad_whatever_the_query_reads() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name,value,timestamp\n1,a,x,1\n2,b,y,soon\n")]);
    let task = dirs.builder().sql("SELECT id FROM events").policy(BadRecordPolicy::Skip).build();
    let summary = eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!((summary.rows_read, summary.rows_rejected, summary.rows_written), (2, 1, 1));
}

/// A run that found the partition committed deleted every data file no manifest listed — also
/// those of a run still writing, whose manifest then committed files that were gone.
#[tokio::test]
async fn files_of_a_run_still_going_are_not_deleted() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name,value,timestamp\n1,a,x,1\n")]);
    let task = dirs.builder().build();
    eventpipe_transformer::run::run(&task).await.unwrap();
    // Another run is writing: its marker is fresh and its first file is there.
    let running = "20261124T000000-0000live";
    std::fs::write(dirs.output_dir().join(format!("_running-{running}")), "{}").unwrap();
    std::fs::write(dirs.output_dir().join(format!("part-{running}-000.parquet")), "not yet committed").unwrap();
    let skipped = eventpipe_transformer::run::run(&task).await.unwrap();
    assert!(skipped.skipped);
    assert!(dirs.output_files().contains(&format!("part-{running}-000.parquet")), "{:?}", dirs.output_files());
}

/// A committed manifest whose files are gone was skipped forever: inputs and spec hash matched.
#[tokio::test]
async fn a_manifest_whose_files_are_gone_is_not_a_reason_to_skip() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name,value,timestamp\n1,a,x,1\n")]);
    let task = dirs.builder().build();
    let first = eventpipe_transformer::run::run(&task).await.unwrap();
    std::fs::remove_file(dirs.sink.path().join(&first.files[0])).unwrap();
    let again = eventpipe_transformer::run::run(&task).await.unwrap();
    assert!(!again.skipped, "the partition is processed again");
    assert_eq!(dirs.query("SELECT count(*) AS n FROM out").await[3], "| 1 |");
}

/// An in-memory store whose manifest write lands, then a later run commits an increment on top
/// of it, and only then the first write's response is lost.
#[derive(Debug)]
struct BuiltOnBeforeTheReadBack {
    inner: InMemory,
    later: Manifest,
}

impl std::fmt::Display for BuiltOnBeforeTheReadBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BuiltOnBeforeTheReadBack")
    }
}

#[async_trait]
impl ObjectStore for BuiltOnBeforeTheReadBack {
    async fn put_opts(&self, location: &ObjectPath, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await?;
        let later = PutPayload::from(serde_json::to_vec(&self.later).unwrap());
        self.inner.put_opts(location, later, PutOptions::default()).await?;
        Err(object_store::Error::Generic { store: "test", source: "connection reset by peer".into() })
    }
    async fn put_multipart_opts(&self, location: &ObjectPath, opts: PutMultipartOptions) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &ObjectPath, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(&self, location: &ObjectPath, ranges: &[std::ops::Range<u64>]) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }
    fn delete_stream(&self, locations: BoxStream<'static, object_store::Result<ObjectPath>>) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&ObjectPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&ObjectPath>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &ObjectPath, to: &ObjectPath, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A commit whose response was lost was resolved by reading the manifest back; when a later
/// increment had already been committed on top of it, the run took itself for the loser and
/// deleted files the stored manifest lists.
#[tokio::test]
async fn a_commit_built_on_before_its_read_back_counts_as_landed() {
    let file = |name: &str| ManifestFile { name: name.into(), rows: 1, bytes: 1 };
    let ours = Manifest {
        run_id: "ours".into(),
        partition: DAY.to_string(),
        input_fingerprint: "f1".into(),
        spec_hash: "s".into(),
        inputs: Vec::new(),
        files: vec![file("part-ours-000.parquet")],
        rows_read: 1,
        rows_rejected: 0,
        rows_routed: 0,
        rows_written: 1,
        bytes_written: 1,
        rejected_rows_url: None,
        rejected_files: Vec::new(),
        increments: 1,
        schema: Vec::new(),
        tool: "test".into(),
        committed_at: "2026-11-24T00:00:00Z".into(),
    };
    let later = Manifest { run_id: "later".into(), files: vec![file("part-ours-000.parquet"), file("part-later-000.parquet")], increments: 2, ..ours.clone() };
    let store = Store {
        store: Arc::new(BuiltOnBeforeTheReadBack { inner: InMemory::new(), later }),
        root_url: url::Url::parse("s3://sink").unwrap(),
        prefix: ObjectPath::from("out"),
        location: Location::parse("s3://sink/out/").unwrap(),
    };
    let directory = store.child(&DAY.sink_path());
    manifest::commit(&store, &directory, &ours, None, CommitMode::Conditional).await.expect("the commit landed");
}

/// A value starting with a byte-order mark kept it on the fast path and lost it when csv_core
/// read its row (which stripped a mark at the start of every record).
#[tokio::test]
async fn a_byte_order_mark_inside_the_object_is_data_on_every_path() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", "a,b\n\u{feff}c,\"d\"\n".as_bytes())]);
    let columns = vec![column("name", ColumnType::String, true), column("value", ColumnType::String, true)];
    let task = dirs.builder().columns(columns).header(false).build();
    eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!(dirs.query("SELECT count(*) AS n FROM out WHERE starts_with(name, chr(65279))").await[3], "| 1 |");
}

/// ISO timestamps outside the years 1 to 9999 were accepted, where epochs and formats refuse them.
#[tokio::test]
async fn iso_timestamps_are_range_checked() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,at\n1,2026-11-24T10:00:00Z\n2,0000-06-01T00:00:00Z\n")]);
    let columns = vec![column("id", ColumnType::Int64, false), column("at", ColumnType::Timestamp, true)];
    let summary = eventpipe_transformer::run::run(&dirs.builder().columns(columns).policy(BadRecordPolicy::Skip).build()).await.unwrap();
    assert_eq!((summary.rows_rejected, summary.rows_written), (1, 1));
}

/// `Date64` was written as a bare INT64, while `athena-ddl` declares `date`; nested nanosecond
/// timestamps kept nanoseconds, which Athena misreads.
#[tokio::test]
async fn output_dates_and_nested_timestamps_are_written_as_readers_expect() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name,value,timestamp\n1,a,x,1795478400\n")]);
    let sql = "SELECT id, arrow_cast(arrow_cast(\"timestamp\", 'Date32'), 'Date64') AS seen_on, \
               named_struct('at', arrow_cast(\"timestamp\", 'Timestamp(Nanosecond, None)')) AS nested FROM events";
    eventpipe_transformer::run::run(&dirs.builder().sql(sql).build()).await.unwrap();
    let leaves = parquet_leaves(&dirs);
    let seen_on = leaves.iter().find(|(path, ..)| path == "seen_on").unwrap_or_else(|| panic!("{leaves:?}"));
    assert_eq!(seen_on.1, Some(LogicalType::Date), "{leaves:?}");
    let at = leaves.iter().find(|(path, ..)| path == "nested.at").unwrap_or_else(|| panic!("{leaves:?}"));
    assert_eq!(at.1, Some(LogicalType::timestamp(true, TimeUnit::MICROS)), "{leaves:?}");
}

/// The quarantine file of a superseded run stayed in the rejected-rows location after a run
/// without bad rows replaced it.
#[tokio::test]
async fn quarantine_files_of_superseded_runs_are_removed() {
    let dirs = Dirs::new();
    let rejected = TempDir::new().unwrap();
    write_partition(dirs.source.path(), &[("a.csv", b"id,name,value,timestamp\n1,a,x,1\nbad,b,y,2\n")]);
    let task = dirs.builder().policy(BadRecordPolicy::Quarantine).rejected_url(rejected.path().to_str().unwrap()).build();
    eventpipe_transformer::run::run(&task).await.unwrap();
    let quarantine = rejected.path().join(DAY.sink_path());
    assert_eq!(std::fs::read_dir(&quarantine).unwrap().count(), 1);
    write_partition(dirs.source.path(), &[("a.csv", b"id,name,value,timestamp\n1,a,x,1\n2,b,y,2\n")]);
    eventpipe_transformer::run::run(&task).await.unwrap();
    let left: Vec<_> = std::fs::read_dir(&quarantine).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A CSV column named like a partition value made every query fail with an ambiguous-name error;
/// it is the column in `events`, and selecting it under its own name says what to do.
#[tokio::test]
async fn a_csv_column_named_day_is_the_column() {
    let dirs = Dirs::new();
    write_partition(dirs.source.path(), &[("a.csv", b"id,day\n1,monday\n")]);
    let columns = vec![column("id", ColumnType::Int64, false), column("day", ColumnType::String, true)];
    let error = eventpipe_transformer::run::run(&dirs.builder().columns(columns.clone()).build()).await.unwrap_err();
    assert!(error.to_string().contains("SELECT ..., day AS event_day"), "{error}");
    let task = dirs.builder().columns(columns).sql("SELECT id, day AS weekday, month FROM events").build();
    eventpipe_transformer::run::run(&task).await.unwrap();
    assert_eq!(dirs.query("SELECT id, weekday FROM out").await[3], "| 1  | monday  |");
}
