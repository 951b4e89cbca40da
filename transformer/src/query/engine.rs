//! The query engine for one partition: a DataFusion session with a memory limit and spilling, the
//! typed `events` table over the partition's CSV objects, and the sandboxed transform SQL.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, when};
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext, col, ident, lit};
use object_store::path::Path;
use url::Url;

use crate::csv::decoder::BadRowHandling;
use crate::csv::dialect::CsvDialect;
use crate::csv::source::EventsCsvFormat;
use crate::error::{Error, Result};
use crate::event_time::{Fate, FateBounds};
use crate::layout::PartitionKey;
use crate::query::mode::Mode;
use crate::query::schema;
use crate::query::single_phase::SinglePhaseLatestMap;
use crate::query::source_rows::SourceRows;
use crate::spec::{Column, CsvCompression, CsvOptions};
use crate::store::{SourceObject, Store};
use crate::task::EngineSettings;
use crate::csv::values::{self, ColumnRule};

/// Memory the query may hold before spilling, when the task does not say.
pub const DEFAULT_MEMORY_LIMIT_MIB: u64 = 1024;

/// Input bytes that justify one more parallel writer.
const BYTES_PER_PARTITION: u64 = 16 * 1024 * 1024;

/// Query partitions per writer for transforms over the whole partition (see [`Mode`]). A hash
/// aggregation's state is split over its partitions, and smaller states stay in the CPU caches:
/// the `latest_map` aggregation over a million users took 0.82× the wall time with 16 partitions
/// instead of 2 on 2 cores, for 100 MiB more memory (paired whole-process runs; in one phase, see
/// [`SinglePhaseLatestMap`], 8 partitions took 1.12× the time of 16 at 30 M rows). A row-by-row
/// conversion gains nothing from it (1.03× the time, the same 100 MiB more) and keeps one.
const QUERY_PARTITIONS_PER_WRITER: usize = 8;

/// The column of [`Engine::register_event_time_events`]' rows holding each row's fate.
pub const FATE_COLUMN: &str = "__eventpipe_fate";

/// The objects of an event-time run whose rows share their fates (see [`crate::event_time::EventTime::fates`]).
#[derive(Clone, Debug)]
pub struct FateGroup {
    /// What becomes of their rows, by event time.
    pub bounds: FateBounds,
    /// The column holding the event time.
    pub column: String,
    /// The objects.
    pub objects: Vec<SourceObject>,
}

/// The table name the transform SQL reads.
pub const EVENTS_TABLE: &str = "events";

/// A DataFusion session set up for one partition.
pub struct Engine {
    ctx: SessionContext,
    writers: usize,
    /// Partition value names that a declared column has too: in `events` they are the column.
    shadowed: std::sync::Mutex<Vec<String>>,
}

impl Engine {
    /// A session with the task's parallelism, memory limit and scratch directory. Without a set
    /// parallelism the output is written by one writer per CPU, fewer for small inputs (so fewer,
    /// larger files), and a query in full mode runs in [`QUERY_PARTITIONS_PER_WRITER`] times as
    /// many partitions.
    pub fn new(settings: &EngineSettings, input_bytes: u64, mode: &Mode) -> Result<Self> {
        let (writers, target_partitions) = match settings.target_partitions {
            Some(partitions) => (partitions, partitions),
            None => {
                let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
                let by_size = usize::try_from(input_bytes / BYTES_PER_PARTITION).unwrap_or(usize::MAX);
                let writers = by_size.clamp(1, cpus);
                let per_writer = if mode.is_append() { 1 } else { QUERY_PARTITIONS_PER_WRITER };
                (writers, writers * per_writer)
            }
        };
        let memory_limit = settings.memory_limit_mib.unwrap_or(DEFAULT_MEMORY_LIMIT_MIB) * 1024 * 1024;
        let mut runtime = RuntimeEnvBuilder::new().with_memory_pool(Arc::new(FairSpillPool::new(memory_limit as usize)));
        if let Some(dir) = &settings.scratch_dir {
            runtime = runtime.with_temp_file_path(dir);
        }
        let config = SessionConfig::new()
            .with_target_partitions(target_partitions)
            .with_information_schema(false)
            .with_batch_size(32 * 1024);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime.build_arc()?)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(SinglePhaseLatestMap))
            .build();
        let ctx = SessionContext::new_with_state(state);
        ctx.register_udaf(crate::query::latest_map::udaf());
        Ok(Self { ctx, writers, shadowed: Default::default() })
    }

    /// How many files the output is written to, in parallel.
    pub fn writers(&self) -> usize {
        self.writers
    }

    /// Makes a store's objects readable by URL.
    pub fn register_store(&self, store: &Store) {
        self.ctx.register_object_store(&store.root_url, Arc::clone(&store.store));
    }

    /// Registers the typed `events` table over the given CSV objects of `source`, decoded with
    /// [`EventsCsvFormat`]; bad rows are handled as `handling` says.
    pub fn register_csv_events(
        &self,
        source: &Store,
        objects: &[SourceObject],
        csv: &CsvOptions,
        columns: &Arc<[ColumnRule]>,
        partition: &PartitionKey,
        handling: BadRowHandling,
    ) -> Result<()> {
        let rows = self.typed_rows(csv_rows(source, objects, csv, columns, handling)?, columns, partition)?;
        self.register_view(rows)
    }

    /// Registers the `events` table of an event-time partition: the rows of every group's objects
    /// that the partition keeps. Returns all the rows read, each with its [`Fate`] (by name) in
    /// the column [`FATE_COLUMN`]; `handling` tells how each group's bad rows are handled.
    pub fn register_event_time_events(
        &self,
        source: &Store,
        groups: &[FateGroup],
        csv: &CsvOptions,
        columns: &Arc<[ColumnRule]>,
        partition: &PartitionKey,
        handling: impl Fn(&FateGroup) -> BadRowHandling,
    ) -> Result<DataFrame> {
        let mut all: Option<DataFrame> = None;
        for group in groups {
            let rows = self.typed_rows(csv_rows(source, &group.objects, csv, columns, handling(group))?, columns, partition)?;
            let rows = rows.with_column(FATE_COLUMN, fate_expr(&group.bounds, &group.column))?;
            all = Some(match all {
                Some(all) => all.union(rows)?,
                None => rows,
            });
        }
        let all = all.ok_or_else(|| Error::Config(format!("partition {partition} has no input objects")))?;
        self.register_view(all.clone().filter(col(FATE_COLUMN).eq(lit(Fate::Kept.name())))?.drop_columns(&[FATE_COLUMN])?)?;
        Ok(all)
    }

    /// Registers an empty `events` table with the declared columns: enough to plan a query and
    /// report unknown columns or type errors without reading data.
    pub fn register_empty_events(&self, columns: &Arc<[ColumnRule]>, partition: &PartitionKey) -> Result<()> {
        let raw = Arc::new(MemTable::try_new(values::schema(columns), vec![vec![]])?);
        let rows = self.typed_rows(raw, columns, partition)?;
        self.register_view(rows)
    }

    /// The rows of `raw` as `events` has them: the declared columns, typed, and the partition
    /// values.
    fn typed_rows(&self, raw: Arc<dyn TableProvider>, columns: &[ColumnRule], partition: &PartitionKey) -> Result<DataFrame> {
        let declared = |name: &str| columns.iter().any(|column| column.name() == name);
        *self.shadowed.lock().expect("not poisoned") =
            partition.columns().into_iter().map(|(name, _)| name.to_string()).filter(|name| declared(name)).collect();
        let rows = self.ctx.read_table(Arc::new(SourceRows::new(raw)))?;
        Ok(rows.select(schema::events_projection(columns, partition))?)
    }

    fn register_view(&self, rows: DataFrame) -> Result<()> {
        self.ctx.deregister_table(EVENTS_TABLE)?;
        self.ctx.register_table(EVENTS_TABLE, rows.into_view())?;
        Ok(())
    }

    /// Plans the transform: sandbox check, then the query, with the output columns normalised for
    /// Parquet readers and the partition columns left out (their values live in the path).
    pub async fn transform(&self, sql: &str, partition: &PartitionKey) -> Result<DataFrame> {
        crate::query::sandbox::check(sql)?;
        let frame = self
            .ctx
            .sql_with_options(sql, crate::query::sandbox::options())
            .await
            .map_err(|e| Error::Sql(crate::error::one_line(&e)))?;
        let partition_columns: Vec<&str> = partition.columns().into_iter().map(|(name, _)| name).collect();
        let shadowed = self.shadowed.lock().expect("not poisoned").clone();
        if let Some(clash) = frame.schema().fields().iter().find(|field| shadowed.contains(field.name())) {
            return Err(Error::Sql(format!(
                "the output column {:?} is a column of the CSV and has the name of a partition value, whose place is the \
                 path; select it under another name (SELECT ..., {0} AS event_{0})",
                clash.name()
            )));
        }
        let output: Vec<_> = frame
            .schema()
            .fields()
            .iter()
            .filter(|field| !partition_columns.contains(&field.name().as_str()))
            .map(|field| schema::output_expr(field.name(), field.data_type()))
            .collect();
        if output.is_empty() {
            return Err(Error::Sql("the query returns no column besides the partition values".into()));
        }
        Ok(frame.select(output)?)
    }

    /// The rows of Parquet files in `store`: a sink's own files, rewritten by compaction.
    pub async fn read_parquet(&self, store: &Store, paths: &[Path]) -> Result<DataFrame> {
        self.register_store(store);
        let urls = paths.iter().map(|path| encoded_url(&store.url_of(path))).collect::<Result<Vec<_>>>()?;
        Ok(self.ctx.read_parquet(urls, ParquetReadOptions::default()).await?)
    }

    /// The session, for executing plans.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }
}

/// The objects of `source`, decoded with [`EventsCsvFormat`]; bad rows handled as `handling` says.
fn csv_rows(source: &Store, objects: &[SourceObject], csv: &CsvOptions, columns: &Arc<[ColumnRule]>, handling: BadRowHandling) -> Result<Arc<dyn TableProvider>> {
    let schema = values::schema(columns);
    if objects.is_empty() {
        return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
    }
    let named: Vec<(SourceObject, String)> = objects.iter().map(|object| (object.clone(), source.url_of(&object.path))).collect();
    let urls: Vec<ListingTableUrl> = named.iter().map(|(_, url)| Ok(ListingTableUrl::parse(encoded_url(url)?)?)).collect::<Result<_>>()?;
    let format = EventsCsvFormat::new(CsvDialect::from(csv), Arc::clone(columns), named, handling);
    let options = ListingOptions::new(Arc::new(format)).with_file_extension("");
    let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// The name of the [`Fate`] of each row, by its event time in `column`.
fn fate_expr(bounds: &FateBounds, column: &str) -> Expr {
    let at = |time: chrono::DateTime<chrono::Utc>| lit(ScalarValue::TimestampMicrosecond(Some(time.timestamp_micros()), Some("UTC".into())));
    let event_time = || ident(column);
    let within = |(start, end)| event_time().gt_eq(at(start)).and(event_time().lt(at(end)));
    let name = |fate: Fate| lit(fate.name());
    let fates = match bounds.routed {
        None => when(within(bounds.kept), name(Fate::Kept)).otherwise(name(Fate::Routed)),
        Some(routed) => when(event_time().is_null(), name(Fate::NoEventTime))
            .when(within(bounds.kept), name(Fate::Kept))
            .when(within(routed), name(Fate::Routed))
            .when(event_time().gt_eq(at(bounds.early_from)), name(Fate::Early))
            .otherwise(name(Fate::Late)),
    };
    fates.expect("a CASE with WHEN clauses")
}

/// The Arrow schema a transform produces, without running it on data.
pub async fn output_schema(sql: &str, columns: &[Column], partition: &PartitionKey) -> Result<Arc<Schema>> {
    let frame = plan_sql(sql, columns, partition).await?;
    Ok(Arc::new(frame.schema().as_arrow().clone()))
}

/// The SQL planned over an empty `events` table with these columns.
pub async fn plan_sql(sql: &str, columns: &[Column], partition: &PartitionKey) -> Result<DataFrame> {
    let engine = Engine::new(&EngineSettings::default(), 0, &Mode::Append)?;
    engine.register_empty_events(&values::rules(columns)?, partition)?;
    engine.transform(sql, partition).await
}

/// The URL DataFusion reads an object from. DataFusion percent-decodes a URL's path into the key,
/// so a key spelled verbatim loses what follows a `#` or `?` and has its `%XX` sequences decoded;
/// each segment is encoded here so that decoding gives the key back.
fn encoded_url(verbatim: &str) -> Result<String> {
    let invalid = || Error::Config(format!("{verbatim:?} is not an object URL"));
    let (scheme, rest) = verbatim.split_once("://").ok_or_else(invalid)?;
    let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
    let mut url = Url::parse(&format!("{scheme}://{authority}/")).map_err(|_| invalid())?;
    url.path_segments_mut().map_err(|()| invalid())?.pop_if_empty().extend(key.split('/'));
    Ok(url.into())
}

/// Whether objects named `name` are gzip-compressed under the given setting.
pub fn is_gzip(name: &str, compression: CsvCompression) -> bool {
    match compression {
        CsvCompression::Auto => name.ends_with(".gz"),
        CsvCompression::Gzip => true,
        CsvCompression::None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_urls_decode_to_the_verbatim_key() {
        let cases = [
            ("s3://bucket/raw/a+b é#1.csv", "raw/a+b é#1.csv"),
            ("s3://bucket/50%25 literal?x=[1]~.csv", "50%25 literal?x=[1]~.csv"),
            ("file:///tmp/dir #2/back\\slash.csv", "tmp/dir #2/back\\slash.csv"),
            ("s3://bucket/dir/", "dir"),
        ];
        for (verbatim, key) in cases {
            let url = ListingTableUrl::parse(encoded_url(verbatim).unwrap()).unwrap();
            assert_eq!(url.prefix().as_ref(), key, "{verbatim}");
            assert_eq!(url.is_collection(), verbatim.ends_with('/'), "{verbatim}");
        }
        assert!(encoded_url("no-scheme").is_err());
    }
}
