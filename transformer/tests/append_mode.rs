//! Append mode, checked by what it must not change: a partition whose objects arrive one at a
//! time and is processed after each — as increments where the transform keeps rows one by one,
//! whole again where it does not — must end with the same rows as one run over all its objects.
//! Each query of the corpus below (row-by-row ones, and ones that only look so: CTEs and
//! subqueries named `events`, windows, limits, set operations, joins, subqueries, aggregations)
//! is run both ways and the committed rows compared as multisets. (Every query is deterministic:
//! a LIMIT without ORDER BY may keep other rows in any two runs.)

mod support;

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use eventpipe_transformer::commit::manifest::Manifest;
use eventpipe_transformer::query::mode::Mode;
use support::{DAY, TaskBuilder, write_partition};
use tempfile::TempDir;

/// Queries users write, and queries that look row by row and are not.
const CORPUS: &[&str] = &[
    "SELECT * FROM events",
    "SELECT id, name FROM events",
    "SELECT id, upper(name) AS n FROM events WHERE value IS NOT NULL",
    "SELECT id, value FROM events WHERE id > 1 AND name LIKE 's%'",
    "SELECT e.id FROM events AS e",
    "SELECT id, CASE WHEN value = 'on' THEN 1 ELSE 0 END AS on_flag FROM events",
    "SELECT concat(name, '=', value) AS kv FROM events WHERE id % 2 = 0",
    "SELECT id, value FROM events WHERE value IS NULL",
    "SELECT id, \"timestamp\" FROM events WHERE \"timestamp\" > to_timestamp_seconds(1795478401)",
    "SELECT id, year, month, day FROM events",
    "WITH recent AS (SELECT * FROM events WHERE id > 1) SELECT id, name FROM recent",
    "WITH events AS (SELECT id, name FROM events WHERE id > 1) SELECT * FROM events",
    "WITH a AS (SELECT * FROM events), b AS (SELECT * FROM a WHERE id > 1) SELECT id FROM b",
    "SELECT id FROM (SELECT * FROM events) AS events",
    "WITH events AS (SELECT id, count(*) AS n FROM events GROUP BY id) SELECT * FROM events",
    "SELECT * FROM (SELECT id, count(*) AS n FROM events GROUP BY id) AS events",
    "WITH events AS (SELECT DISTINCT name FROM events) SELECT name FROM events",
    "SELECT id FROM (SELECT id FROM events ORDER BY \"timestamp\" LIMIT 2) AS events",
    "SELECT id, count(*) AS n FROM events GROUP BY id",
    "SELECT count(*) AS n FROM events",
    "SELECT id, name FROM events GROUP BY id, name",
    "SELECT name, count(DISTINCT id) AS users FROM events GROUP BY name HAVING count(*) > 1",
    "SELECT id, min(\"timestamp\") AS first_seen FROM events GROUP BY id",
    "SELECT id, array_agg(name ORDER BY name) AS names FROM events GROUP BY id",
    "SELECT id, latest_map(name, value, \"timestamp\") AS settings FROM events GROUP BY id",
    "SELECT DISTINCT name FROM events",
    "SELECT DISTINCT ON (id) id, name FROM events ORDER BY id, name",
    "SELECT id, row_number() OVER (PARTITION BY id ORDER BY \"timestamp\", name, value) AS n FROM events",
    "SELECT id, sum(id) OVER () AS total FROM events",
    "SELECT id, lag(name) OVER (ORDER BY id, \"timestamp\", name, value) AS previous FROM events",
    "SELECT * FROM events ORDER BY id, name, value LIMIT 3",
    "SELECT id FROM events ORDER BY \"timestamp\" DESC LIMIT 2",
    "SELECT id FROM events ORDER BY id, name OFFSET 1",
    "SELECT id FROM events UNION ALL SELECT id FROM events",
    "SELECT id FROM events UNION SELECT id FROM events",
    "SELECT name FROM events INTERSECT SELECT name FROM events WHERE id > 1",
    "SELECT name FROM events EXCEPT SELECT name FROM events WHERE id > 2",
    "SELECT e.id, v.label FROM events e JOIN (VALUES (1, 'one'), (2, 'two')) AS v(k, label) ON e.id = v.k",
    "SELECT a.id FROM events a JOIN events b ON a.id = b.id",
    "SELECT id FROM events CROSS JOIN (SELECT 1 AS one) AS k",
    "SELECT id, (SELECT max(id) FROM events) AS top FROM events",
    "SELECT id FROM events WHERE id IN (SELECT id FROM events WHERE name = 'sound')",
    "SELECT * FROM events WHERE id = (SELECT min(id) FROM events)",
    "SELECT id, name FROM events e WHERE NOT EXISTS (SELECT 1 FROM events f WHERE f.name = e.name AND f.id < e.id)",
    "SELECT unnest(make_array(id, id + 1)) AS x FROM events",
    "SELECT id, value FROM events WHERE value IN ('on', 'off')",
];

/// The partition's objects, in the order they arrive.
const OBJECTS: &[(&str, &[u8])] = &[
    ("a.csv", b"id,name,value,timestamp\n1,sound,on,1795478400\n1,theme,dark,1795478401\n2,sound,off,1795478402\n"),
    ("b.csv", b"id,name,value,timestamp\n2,sound,on,1795478403\n3,theme,,1795478404\n"),
    ("c.csv", b"id,name,value,timestamp\n1,sound,off,1795478405\n4,font,large,1795478406\n3,theme,light,1795478407\n"),
];

/// The committed rows of a sink's partition, each as text, sorted.
async fn committed_rows(sink: &TempDir) -> Vec<String> {
    let directory = sink.path().join(DAY.sink_path());
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(directory.join("_manifest.json")).unwrap()).unwrap();
    let ctx = SessionContext::new();
    let mut rows = Vec::new();
    for file in &manifest.files {
        let frame = ctx.read_parquet(directory.join(&file.name).to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
        for batch in frame.collect().await.unwrap() {
            let options = FormatOptions::default().with_null("∅");
            let formatters: Vec<ArrayFormatter> = batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap()).collect();
            rows.extend((0..batch.num_rows()).map(|row| formatters.iter().map(|f| f.value(row).to_string()).collect::<Vec<_>>().join(" | ")));
        }
    }
    rows.sort();
    rows
}

/// Runs `sql` over the partition once with every object, and once after each object's arrival;
/// returns the mode and both outcomes.
async fn both_ways(sql: &str) -> (Mode, Vec<String>, Vec<String>) {
    let whole = (TempDir::new().unwrap(), TempDir::new().unwrap());
    write_partition(whole.0.path(), OBJECTS);
    let task = |source: &TempDir, sink: &TempDir| TaskBuilder::new(source.path().to_str().unwrap(), sink.path().to_str().unwrap()).sql(sql).build();
    eventpipe_transformer::run::run(&task(&whole.0, &whole.1)).await.unwrap_or_else(|e| panic!("{sql}: {e}"));

    let growing = (TempDir::new().unwrap(), TempDir::new().unwrap());
    for object in OBJECTS {
        write_partition(growing.0.path(), std::slice::from_ref(object));
        eventpipe_transformer::run::run(&task(&growing.0, &growing.1)).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let spec = task(&whole.0, &whole.1).pipeline;
    let layout = eventpipe_transformer::validate::check(&spec).unwrap().layout;
    let mode = eventpipe_transformer::validate::check_sql(&spec, &layout).await.unwrap();
    (mode, committed_rows(&whole.1).await, committed_rows(&growing.1).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_end_with_the_rows_of_one_run() {
    use futures::StreamExt;
    assert!(CORPUS.len() >= 40);
    let outcomes: Vec<_> = futures::stream::iter(CORPUS).map(|sql| async move { (sql, both_ways(sql).await) }).buffer_unordered(4).collect().await;
    let mut appending = 0;
    for (sql, (mode, whole, grown)) in outcomes {
        assert_eq!(grown, whole, "{sql}: processed as {mode}");
        appending += usize::from(mode.is_append());
    }
    // Both modes are exercised: the row-by-row queries, and the rest.
    assert!((10..CORPUS.len() - 20).contains(&appending), "{appending} of {} queries append", CORPUS.len());
}
