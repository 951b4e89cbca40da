//! `latest_map(key, value, ordering)` through a session set up the way the transformer sets one up
//! (`Engine::new` registers the aggregate): as a window function over growing and sliding frames,
//! as a plain aggregate with many keys per group and with nulls, and under spilling. Every result
//! is checked against a row-by-row reference of the rule: per key, the row with the greatest
//! ordering wins; on a tie the greatest value (nulls lowest); rows with a null key or ordering are
//! ignored; entries sorted by key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, Int64Array, MapArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use eventpipe_transformer::query::engine::Engine;
use eventpipe_transformer::query::mode::Mode;
use eventpipe_transformer::task::EngineSettings;

/// One input row.
#[derive(Clone, Debug)]
struct Row {
    id: i64,
    seq: i64,
    name: Option<String>,
    value: Option<String>,
    ts: Option<i64>,
}

/// A map as the test compares it: entries in output order.
type Entries = Vec<(String, Option<String>)>;

/// The reference: the newest value of every key among `rows`.
fn newest<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Entries {
    let mut newest: BTreeMap<&str, (i64, Option<&str>)> = BTreeMap::new();
    for row in rows {
        let (Some(name), Some(ts)) = (&row.name, row.ts) else { continue };
        let candidate = (ts, row.value.as_deref());
        if newest.get(name.as_str()).is_none_or(|current| candidate > *current) {
            newest.insert(name, candidate);
        }
    }
    newest.into_iter().map(|(k, (_, v))| (k.to_string(), v.map(str::to_string))).collect()
}

/// The reference per id.
fn newest_per_id(rows: &[Row]) -> BTreeMap<i64, Entries> {
    let mut by_id: BTreeMap<i64, Vec<&Row>> = BTreeMap::new();
    for row in rows {
        by_id.entry(row.id).or_default().push(row);
    }
    by_id.into_iter().map(|(id, rows)| (id, newest(rows))).collect()
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
        Field::new("timestamp", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
    ]))
}

fn batch(rows: &[Row]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.seq))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.name.as_deref()))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.value.as_deref()))),
            Arc::new(TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.ts)).with_timezone("UTC")),
        ],
    )
    .unwrap()
}

/// A session as the transformer makes one, with `rows` as the table `events`, split into
/// `partitions` input partitions of batches of at most `batch_rows` rows.
fn session(settings: EngineSettings, rows: &[Row], partitions: usize, batch_rows: usize) -> Engine {
    let engine = Engine::new(&settings, 0, &Mode::full("an aggregation")).unwrap();
    let mut parts = vec![Vec::new(); partitions];
    for (index, chunk) in rows.chunks(batch_rows.max(1)).enumerate() {
        parts[index % partitions].push(batch(chunk));
    }
    let table = MemTable::try_new(schema(), parts).unwrap();
    engine.context().register_table("events", Arc::new(table)).unwrap();
    engine
}

fn settings(partitions: usize) -> EngineSettings {
    EngineSettings { target_partitions: Some(partitions), ..EngineSettings::default() }
}

/// Runs a query; returns its batches and the bytes its plan spilled.
async fn run(ctx: &SessionContext, sql: &str) -> (Vec<RecordBatch>, usize) {
    let frame = ctx.sql(sql).await.unwrap();
    let plan = frame.create_physical_plan().await.unwrap();
    let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
    (batches, spilled(plan.as_ref()))
}

fn spilled(plan: &dyn ExecutionPlan) -> usize {
    plan.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0)
        + plan.children().iter().map(|child| spilled(child.as_ref())).sum::<usize>()
}

/// A map cell, or `None` for a null map.
fn map_at(maps: &MapArray, row: usize) -> Option<Entries> {
    if maps.is_null(row) {
        return None;
    }
    let entries = maps.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    let value = |i: usize| values.is_valid(i).then(|| values.value(i).to_string());
    Some((0..entries.len()).map(|i| (keys.value(i).to_string(), value(i))).collect())
}

/// `(first column as i64, map in column `column`)` for every output row.
/// Each row's map of `latest_map(...) OVER (PARTITION BY id ORDER BY seq <frame>)`, one per input
/// row, over `rows` split into `partitions` of `batch_rows`-row batches.
async fn window_maps(rows: &[Row], frame: &str, partitions: usize, batch_rows: usize) -> Vec<(i64, Option<Entries>)> {
    let engine = session(settings(2), rows, partitions, batch_rows);
    let sql = format!(
        r#"SELECT seq, latest_map(name, value, "timestamp") OVER (PARTITION BY id ORDER BY seq {frame}) AS settings
           FROM events ORDER BY seq"#
    );
    let (batches, _) = run(engine.context(), &sql).await;
    let maps = rows_of(&batches, "settings");
    assert_eq!(maps.len(), rows.len(), "{frame}");
    maps
}

fn rows_of(batches: &[RecordBatch], column: &str) -> Vec<(i64, Option<Entries>)> {
    let mut out = Vec::new();
    for batch in batches {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let maps = batch.column_by_name(column).unwrap().as_map();
        for row in 0..batch.num_rows() {
            out.push((ids.value(row), map_at(maps, row)));
        }
    }
    out
}

fn maps_per_id(batches: &[RecordBatch]) -> BTreeMap<i64, Entries> {
    let mut out = BTreeMap::new();
    for (id, map) in rows_of(batches, "settings") {
        assert!(out.insert(id, map.expect("an aggregate never returns a null map")).is_none(), "id {id} twice");
    }
    out
}

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

/// Events for `ids` ids over `names` setting names, with ties on the ordering, null values, null
/// names and null orderings. `seq` is unique and follows the row order.
fn events(rows: usize, ids: u64, names: u64, values: u64, seed: u64) -> Vec<Row> {
    let mut rng = Lcg(seed);
    (0..rows)
        .map(|seq| {
            let name = match rng.next(40) {
                0 => None,
                _ => Some(format!("setting_{:02}", rng.next(names))),
            };
            let value = match rng.next(10) {
                0 => None,
                _ => Some(format!("v{}", rng.next(values))),
            };
            let ts = match rng.next(50) {
                0 => None,
                // Few distinct orderings, so that ties are common.
                _ => Some(1_795_478_400_000_000 + rng.next(20) as i64 * 1_000_000),
            };
            Row { id: rng.next(ids) as i64, seq: seq as i64, name, value, ts }
        })
        .collect()
}

const GROUP_BY: &str = r#"SELECT id, latest_map(name, value, "timestamp") AS settings FROM events GROUP BY id"#;

#[tokio::test]
async fn a_growing_window_gives_every_row_the_newest_values_so_far() {
    let rows = events(3_000, 12, 8, 5, 1);
    // Two growing frames: explicit ROWS, and the default frame of an ORDER BY (RANGE … CURRENT ROW,
    // the same as ROWS here because `seq` is unique).
    for frame in ["ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW", ""] {
        for (seq, map) in window_maps(&rows, frame, 3, 256).await {
            let row = &rows[seq as usize];
            let expected = newest(rows.iter().filter(|r| r.id == row.id && r.seq <= seq));
            assert_eq!(map.as_ref(), Some(&expected), "{frame:?}: row {row:?}");
        }
    }
    // Without ORDER BY the frame is the whole partition: every row gets its id's final map.
    let engine = session(settings(2), &rows, 3, 256);
    let sql = r#"SELECT seq, latest_map(name, value, "timestamp") OVER (PARTITION BY id) AS settings FROM events"#;
    let (batches, _) = run(engine.context(), sql).await;
    let expected = newest_per_id(&rows);
    let got = rows_of(&batches, "settings");
    assert_eq!(got.len(), rows.len());
    for (seq, map) in got {
        assert_eq!(map.as_ref(), Some(&expected[&rows[seq as usize].id]), "row {seq}");
    }
}

#[tokio::test]
async fn a_sliding_window_forgets_the_rows_that_left_the_frame() {
    let rows = events(2_000, 6, 6, 4, 2);
    for (frame, lower, upper) in [
        ("ROWS BETWEEN 3 PRECEDING AND CURRENT ROW", 3, 0),
        ("ROWS BETWEEN 5 PRECEDING AND 2 FOLLOWING", 5, -2),
        ("ROWS BETWEEN 1 FOLLOWING AND 4 FOLLOWING", -1, -4),
    ] {
        for (seq, map) in window_maps(&rows, frame, 2, 100).await {
            let row = &rows[seq as usize];
            let partition: Vec<&Row> = rows.iter().filter(|r| r.id == row.id).collect();
            let at = partition.iter().position(|r| r.seq == seq).unwrap() as i64;
            let frame_rows: Vec<&Row> = partition
                .iter()
                .enumerate()
                .filter(|(i, _)| (at - lower..=at - upper).contains(&(*i as i64)))
                .map(|(_, r)| *r)
                .collect();
            if frame_rows.is_empty() {
                // An empty frame gives DataFusion's default value for the type, a null map.
                assert_eq!(map, None, "{frame}: row {row:?}");
            } else {
                assert_eq!(map, Some(newest(frame_rows)), "{frame}: row {row:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_range_window_with_gaps_empties_and_refills_the_frame() {
    // `seq` with gaps: RANGE frames that hold no row between two that do.
    let mut rows = events(600, 3, 5, 4, 3);
    for row in &mut rows {
        row.seq *= 7;
    }
    let engine = session(settings(2), &rows, 2, 64);
    let sql = r#"SELECT seq, latest_map(name, value, "timestamp")
                   OVER (PARTITION BY id ORDER BY seq RANGE BETWEEN 20 PRECEDING AND 10 PRECEDING) AS settings
                 FROM events ORDER BY seq"#;
    let (batches, _) = run(engine.context(), sql).await;
    let got = rows_of(&batches, "settings");
    assert_eq!(got.len(), rows.len());
    for (seq, map) in got {
        let row = &rows[(seq / 7) as usize];
        let frame_rows: Vec<&Row> =
            rows.iter().filter(|r| r.id == row.id && (seq - 20..=seq - 10).contains(&r.seq)).collect();
        let expected = if frame_rows.is_empty() { None } else { Some(newest(frame_rows)) };
        assert_eq!(map, expected, "row {row:?}");
    }
}

#[tokio::test]
async fn the_aggregate_agrees_with_the_reference_whatever_the_row_order_and_partitioning() {
    let rows = events(20_000, 500, 12, 6, 4);
    let expected = newest_per_id(&rows);
    assert!(expected.values().any(|entries| entries.iter().any(|(_, v)| v.is_none())), "some null values");
    let mut reversed = rows.clone();
    reversed.reverse();
    for (rows, partitions, batch_rows) in [(&rows, 1, 20_000), (&rows, 4, 333), (&reversed, 3, 1_000), (&reversed, 2, 7)] {
        let engine = session(settings(partitions), rows, partitions, batch_rows);
        let (batches, _) = run(engine.context(), GROUP_BY).await;
        assert_eq!(maps_per_id(&batches), expected, "{partitions} partitions, batches of {batch_rows}");
    }
}

#[tokio::test]
async fn without_group_by_there_is_one_map() {
    let rows = events(5_000, 1, 30, 8, 5);
    let engine = session(settings(2), &rows, 2, 500);
    let (batches, _) =
        run(engine.context(), r#"SELECT 0::BIGINT AS id, latest_map(name, value, "timestamp") AS settings FROM events"#).await;
    assert_eq!(rows_of(&batches, "settings"), [(0, Some(newest(&rows)))]);
    // No rows: an empty map.
    let (batches, _) = run(
        engine.context(),
        r#"SELECT 0::BIGINT AS id, latest_map(name, value, "timestamp") AS settings FROM events WHERE id < 0"#,
    )
    .await;
    assert_eq!(rows_of(&batches, "settings"), [(0, Some(Vec::new()))]);
}

#[tokio::test]
async fn nulls_filters_and_ties() {
    let row = |id, name: Option<&str>, value: Option<&str>, ts| Row {
        id,
        seq: 0,
        name: name.map(str::to_string),
        value: value.map(str::to_string),
        ts,
    };
    let rows = vec![
        // A null key or a null ordering is ignored.
        row(1, None, Some("x"), Some(5)),
        row(1, Some("a"), Some("late"), None),
        row(1, Some("a"), Some("old"), Some(1)),
        // A null value is a value, the lowest one on a tie.
        row(1, Some("b"), Some("kept"), Some(3)),
        row(1, Some("b"), None, Some(3)),
        row(1, Some("c"), Some("c-old"), Some(1)),
        row(1, Some("c"), None, Some(2)),
        // Ties on the ordering: the greatest value.
        row(1, Some("d"), Some("d1"), Some(4)),
        row(1, Some("d"), Some("d3"), Some(4)),
        row(1, Some("d"), Some("d2"), Some(4)),
        // Only ignored rows: an empty map.
        row(2, None, Some("x"), Some(1)),
        row(2, Some("a"), Some("x"), None),
        // Keys come out sorted by key, whatever the input order.
        row(3, Some("z"), Some("1"), Some(1)),
        row(3, Some("é"), Some("2"), Some(1)),
        row(3, Some("A"), Some("3"), Some(1)),
        row(3, Some(""), Some("4"), Some(1)),
    ];
    let rows: Vec<Row> = rows.into_iter().enumerate().map(|(seq, r)| Row { seq: seq as i64, ..r }).collect();
    let entries = |pairs: &[(&str, Option<&str>)]| -> Entries {
        pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect()
    };
    let expected = BTreeMap::from([
        (1, entries(&[("a", Some("old")), ("b", Some("kept")), ("c", None), ("d", Some("d3"))])),
        (2, Vec::new()),
        (3, entries(&[("", Some("4")), ("A", Some("3")), ("z", Some("1")), ("é", Some("2"))])),
    ]);
    assert_eq!(newest_per_id(&rows), expected, "the reference");
    for (partitions, batch_rows) in [(1, 100), (2, 1), (3, 2)] {
        let engine = session(settings(partitions), &rows, partitions, batch_rows);
        let (batches, _) = run(engine.context(), GROUP_BY).await;
        assert_eq!(maps_per_id(&batches), expected, "{partitions} partitions");
        // FILTER drops rows before they count.
        let sql = r#"SELECT id, latest_map(name, value, "timestamp") FILTER (WHERE value <> 'kept' AND value <> 'd3') AS settings
                     FROM events GROUP BY id"#;
        let (batches, _) = run(engine.context(), sql).await;
        let filtered = maps_per_id(&batches);
        assert_eq!(filtered[&1], entries(&[("a", Some("old")), ("c", Some("c-old")), ("d", Some("d2"))]));
    }
}

/// A group with tens of thousands of keys, each seen several times, next to many small groups.
fn many_keys(keys: usize, updates: usize) -> Vec<Row> {
    let mut rng = Lcg(6);
    let mut rows = Vec::new();
    for round in 0..updates {
        for key in 0..keys {
            let ts = Some(1_000 + rng.next(1_000) as i64);
            let (name, value) = (Some(format!("key{key:06}")), Some(format!("{round}-{}", rng.next(9))));
            rows.push(Row { id: 1, seq: 0, name, value, ts });
            if key % 10 == 0 {
                let id = 2 + rng.next(2_000) as i64;
                rows.push(Row { id, seq: 0, name: Some(format!("k{}", rng.next(5))), value: Some(format!("{round}")), ts });
            }
        }
    }
    rows.into_iter().enumerate().map(|(seq, r)| Row { seq: seq as i64, ..r }).collect()
}

#[tokio::test]
async fn a_group_with_many_keys() {
    let rows = many_keys(100_000, 2);
    let expected = newest_per_id(&rows);
    assert_eq!(expected[&1].len(), 100_000);
    let engine = session(settings(2), &rows, 2, 8_192);
    let started = Instant::now();
    let (batches, _) = run(engine.context(), GROUP_BY).await;
    let elapsed = started.elapsed();
    assert_eq!(maps_per_id(&batches), expected);
    // Each row finds its key without scanning the group: these 220k rows take a second or two in a
    // debug build, where a scan per row (~10^10 key comparisons) took about a minute.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

/// Many groups whose values are all distinct: the interned strings are most of the state.
fn distinct_values(rows: usize, ids: u64) -> Vec<Row> {
    let mut rng = Lcg(7);
    (0..rows)
        .map(|seq| Row {
            id: rng.next(ids) as i64,
            seq: seq as i64,
            name: Some(format!("setting_{}", rng.next(6))),
            value: Some(format!("value {seq:08} of a setting with a fairly long text {}", rng.next(1_000_000))),
            ts: Some(rng.next(1_000) as i64),
        })
        .collect()
}

#[tokio::test]
async fn under_a_small_memory_limit_the_aggregation_spills_and_gives_the_same_maps() {
    let rows = distinct_values(200_000, 40_000);
    let expected = newest_per_id(&rows);
    let unlimited = session(settings(2), &rows, 2, 8_192);
    let (batches, spilled_unlimited) = run(unlimited.context(), GROUP_BY).await;
    assert_eq!(spilled_unlimited, 0);
    assert_eq!(maps_per_id(&batches), expected);

    let limited = session(EngineSettings { memory_limit_mib: Some(24), ..settings(2) }, &rows, 2, 8_192);
    let (batches, spilled) = run(limited.context(), GROUP_BY).await;
    assert!(spilled > 0, "the aggregation should spill under 24 MiB");
    assert_eq!(maps_per_id(&batches), expected);
}
