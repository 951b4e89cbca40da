//! The query engine for one partition: a DataFusion session with a memory limit and spilling, the
//! typed `events` table over the partition's CSV objects, and the sandboxed transform SQL.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{CsvReadOptions, DataFrame, SessionConfig, SessionContext};
use url::Url;

use crate::csv_decoder::CsvDialect;
use crate::csv_source::EventsCsvFormat;
use crate::error::{Error, Result};
use crate::layout::PartitionKey;
use crate::mode::Mode;
use crate::schema;
use crate::single_phase::SinglePhaseLatestMap;
use crate::spec::{Column, ColumnType, CsvCompression, CsvOptions};
use crate::storage::Store;
use crate::task::EngineSettings;

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

/// The table name the transform SQL reads.
pub const EVENTS_TABLE: &str = "events";

/// A DataFusion session set up for one partition.
pub struct Engine {
    ctx: SessionContext,
    writers: usize,
}

/// A CSV object to read.
#[derive(Clone, Debug)]
pub struct CsvObject {
    /// Full URL with the key verbatim (`s3://bucket/a b#1.csv` or `file:///path`), as
    /// [`crate::storage::Store::url_of`] spells it; it is percent-encoded for DataFusion here.
    pub url: String,
    /// Whether it is gzip-compressed.
    pub gzip: bool,
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
        ctx.register_udaf(crate::latest_map::udaf());
        Ok(Self { ctx, writers })
    }

    /// How many files the output is written to, in parallel.
    pub fn writers(&self) -> usize {
        self.writers
    }

    /// Makes a store's objects readable by URL.
    pub fn register_store(&self, store: &Store) {
        self.ctx.register_object_store(&store.root_url, Arc::clone(&store.store));
    }

    /// The header's columns, each as a nullable string: the schema used when none is declared.
    pub async fn header_columns(&self, first: &CsvObject, csv: &CsvOptions) -> Result<Vec<Column>> {
        let frame = self.ctx.read_csv(vec![encoded_url(&first.url)?], header_options(csv, first.gzip)).await?;
        Ok(frame
            .schema()
            .fields()
            .iter()
            .map(|field| Column {
                name: field.name().clone(),
                data_type: ColumnType::String,
                nullable: true,
                unit: None,
                format: None,
            })
            .collect())
    }

    /// Registers the typed `events` table over the given CSV objects, read by
    /// [`EventsCsvFormat`].
    pub async fn register_csv_events(
        &self,
        objects: &[CsvObject],
        csv: &CsvOptions,
        columns: &[Column],
        partition: &PartitionKey,
    ) -> Result<()> {
        let raw_schema = schema::raw_schema(columns);
        let dialect = CsvDialect::from(csv);
        let mut raw: Option<DataFrame> = None;
        for gzip in [false, true] {
            let urls: Vec<ListingTableUrl> = objects
                .iter()
                .filter(|o| o.gzip == gzip)
                .map(|o| Ok(ListingTableUrl::parse(encoded_url(&o.url)?)?))
                .collect::<Result<_>>()?;
            if urls.is_empty() {
                continue;
            }
            let options = ListingOptions::new(Arc::new(EventsCsvFormat::new(dialect, gzip))).with_file_extension("");
            let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(Arc::clone(&raw_schema));
            let frame = self.ctx.read_table(Arc::new(ListingTable::try_new(config)?))?;
            raw = Some(match raw {
                Some(previous) => previous.union(frame)?,
                None => frame,
            });
        }
        let raw = match raw {
            Some(frame) => frame,
            None => self.empty_frame(raw_schema)?,
        };
        self.register_events(raw, columns, partition)
    }

    /// Registers an empty `events` table with the declared columns: enough to plan a query and
    /// report unknown columns or type errors without reading data.
    pub fn register_empty_events(&self, columns: &[Column], partition: &PartitionKey) -> Result<()> {
        let raw = self.empty_frame(schema::raw_schema(columns))?;
        self.register_events(raw, columns, partition)
    }

    fn empty_frame(&self, schema: SchemaRef) -> Result<DataFrame> {
        Ok(self.ctx.read_table(Arc::new(MemTable::try_new(schema, vec![vec![]])?))?)
    }

    fn register_events(&self, raw: DataFrame, columns: &[Column], partition: &PartitionKey) -> Result<()> {
        let typed = raw.select(schema::events_projection(columns, partition))?;
        self.ctx.deregister_table(EVENTS_TABLE)?;
        self.ctx.register_table(EVENTS_TABLE, typed.into_view())?;
        Ok(())
    }

    /// Plans the transform: sandbox check, then the query, with the output columns normalised for
    /// Parquet readers and the partition columns left out (their values live in the path).
    pub async fn transform(&self, sql: &str, partition: &PartitionKey) -> Result<DataFrame> {
        crate::sandbox::check(sql)?;
        let frame = self
            .ctx
            .sql_with_options(sql, crate::sandbox::options())
            .await
            .map_err(|e| Error::Sql(crate::error::one_line(&e)))?;
        let partition_columns: Vec<&str> = partition.columns().into_iter().map(|(name, _)| name).collect();
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

    /// The session, for executing plans.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }
}

/// The Arrow schema a transform produces, without running it on data.
pub async fn output_schema(sql: &str, columns: &[Column], partition: &PartitionKey) -> Result<Arc<Schema>> {
    let frame = plan_sql(sql, columns, partition).await?;
    Ok(Arc::new(frame.schema().as_arrow().clone()))
}

/// The SQL planned over an empty `events` table with these columns.
pub async fn plan_sql(sql: &str, columns: &[Column], partition: &PartitionKey) -> Result<DataFrame> {
    let engine = Engine::new(&EngineSettings::default(), 0, &Mode::Append)?;
    engine.register_empty_events(columns, partition)?;
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

/// Options to read the header of an object in the `csv` dialect.
fn header_options(csv: &CsvOptions, gzip: bool) -> CsvReadOptions<'_> {
    let dialect = CsvDialect::from(csv);
    CsvReadOptions::new()
        .has_header(dialect.has_header)
        .delimiter(dialect.delimiter)
        .quote(dialect.quote)
        .newlines_in_values(true)
        .file_extension("")
        .file_compression_type(if gzip { FileCompressionType::GZIP } else { FileCompressionType::UNCOMPRESSED })
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
