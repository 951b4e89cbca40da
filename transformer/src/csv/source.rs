//! The `events` table's CSV objects as a DataFusion file format whose scan decodes with
//! [`CsvDecoder`]. Everything around the decoding stays DataFusion's: file groups per partition,
//! projection, the scan's row metrics, gzip.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, GetExt, Statistics, not_impl_err};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::physical_plan::{FileOpenFuture, FileOpener, FileScanConfig, FileSource};
use datafusion::datasource::projection::{ProjectionOpener, SplitProjection};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::projection::ProjectionExprs;
use datafusion_datasource::PartitionedFile;
use datafusion_datasource::decoder::{DecoderDeserializer, deserialize_stream};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetResultPayload, ObjectMeta, ObjectStore};

use crate::csv::decoder::{BadRowHandling, CsvDecoder, DecoderOptions};
use crate::csv::dialect::CsvDialect;
use crate::store::SourceObject;
use crate::csv::values::ColumnRule;

/// Bytes read at a time from a local file.
const LOCAL_READ_BYTES: usize = 256 * 1024;

/// The CSV objects of one partition read: the dialect, the declared columns, the objects as
/// listed (each read at its listed version, gzip-compressed or not), and what happens to bad rows.
#[derive(Debug)]
pub struct EventsCsvFormat {
    reading: Arc<Reading>,
}

/// Everything a scan of the objects needs to open one.
#[derive(Debug)]
struct Reading {
    dialect: CsvDialect,
    columns: Arc<[ColumnRule]>,
    /// The objects by path, with the URLs that messages and bad rows name them by.
    objects: HashMap<Path, (SourceObject, String)>,
    handling: BadRowHandling,
}

impl EventsCsvFormat {
    /// The format of `objects` (each with its URL), read in `dialect` as `columns`.
    pub fn new(dialect: CsvDialect, columns: Arc<[ColumnRule]>, objects: Vec<(SourceObject, String)>, handling: BadRowHandling) -> Self {
        let objects = objects.into_iter().map(|(object, url)| (object.path.clone(), (object, url))).collect();
        Self { reading: Arc::new(Reading { dialect, columns, objects, handling }) }
    }
}

#[async_trait]
impl FileFormat for EventsCsvFormat {
    fn get_ext(&self) -> String {
        "csv".into()
    }

    fn get_ext_with_compression(&self, compression: &FileCompressionType) -> Result<String> {
        Ok(format!("csv{}", compression.get_ext()))
    }

    /// Each object is compressed or not by itself (see [`SourceObject::gzip`]).
    fn compression_type(&self) -> Option<FileCompressionType> {
        None
    }

    async fn infer_schema(&self, _: &dyn Session, _: &Arc<dyn ObjectStore>, _: &[ObjectMeta]) -> Result<SchemaRef> {
        not_impl_err!("the events table's columns are declared, never inferred")
    }

    async fn infer_stats(&self, _: &dyn Session, _: &Arc<dyn ObjectStore>, schema: SchemaRef, _: &ObjectMeta) -> Result<Statistics> {
        Ok(Statistics::new_unknown(&schema))
    }

    async fn create_physical_plan(&self, _: &dyn Session, config: FileScanConfig) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(DataSourceExec::from_data_source(config))
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        Arc::new(EventsCsvSource {
            reading: Arc::clone(&self.reading),
            batch_size: None,
            projection: SplitProjection::unprojected(&table_schema),
            table_schema,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

/// The scan of [`EventsCsvFormat`] objects. An object is read whole by one partition: a quoted
/// value may hold line breaks, so a byte range cannot tell where its rows start.
#[derive(Clone)]
struct EventsCsvSource {
    reading: Arc<Reading>,
    batch_size: Option<usize>,
    table_schema: TableSchema,
    projection: SplitProjection,
    metrics: ExecutionPlanMetricsSet,
}

impl FileSource for EventsCsvSource {
    fn create_file_opener(
        &self,
        store: Arc<dyn ObjectStore>,
        _config: &FileScanConfig,
        _partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        let decoder = DecoderOptions {
            columns: Arc::clone(&self.reading.columns),
            projection: self.projection.file_indices.clone(),
            batch_size: self.batch_size.expect("DataFusion sets the batch size before opening files"),
            dialect: self.reading.dialect,
        };
        let opener = Arc::new(EventsCsvOpener { store, reading: Arc::clone(&self.reading), decoder });
        ProjectionOpener::try_new(self.projection.clone(), opener, self.table_schema.file_schema())
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        Arc::new(Self { batch_size: Some(batch_size), ..self.clone() })
    }

    fn try_pushdown_projection(&self, projection: &ProjectionExprs) -> Result<Option<Arc<dyn FileSource>>> {
        let merged = self.projection.source.try_merge(projection)?;
        let projection = SplitProjection::new(self.table_schema.file_schema(), &merged);
        Ok(Some(Arc::new(Self { projection, ..self.clone() })))
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        Some(&self.projection.source)
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        datafusion::physical_plan::apply_expression_roots(self.projection.source.iter(), f)
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        "csv"
    }

    fn supports_repartitioning(&self) -> bool {
        false
    }
}

/// Opens one object of the scan, at its listed version: its bytes, decompressed, through a
/// [`CsvDecoder`].
struct EventsCsvOpener {
    store: Arc<dyn ObjectStore>,
    reading: Arc<Reading>,
    decoder: DecoderOptions,
}

impl FileOpener for EventsCsvOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let location = file.object_meta.location;
        let listed = self.reading.objects.get(&location);
        let gzip = listed.is_some_and(|(object, _)| object.gzip);
        let read = listed.map(|(object, _)| object.read_options()).unwrap_or_default();
        let url = listed.map_or_else(|| location.to_string(), |(_, url)| url.clone());
        let (store, options, handling) = (Arc::clone(&self.store), self.decoder.clone(), self.reading.handling.clone());
        Ok(Box::pin(async move {
            let bytes = match store.get_opts(&location, read).await.map_err(|error| changed_since_listed(error, &location))?.payload {
                GetResultPayload::File(file, _) => local_blocks(file).boxed(),
                GetResultPayload::Stream(stream) => stream.map_err(DataFusionError::from).boxed(),
            };
            let compression = if gzip { FileCompressionType::GZIP } else { FileCompressionType::UNCOMPRESSED };
            let bytes = compression.convert_stream(bytes)?.fuse();
            let decoder = CsvDecoder::new(options, url, handling);
            Ok(deserialize_stream(bytes, DecoderDeserializer::new(decoder)).map_err(DataFusionError::from).boxed())
        }))
    }
}

/// A read refused because the object is no longer the version that was listed says so.
fn changed_since_listed(error: object_store::Error, location: &Path) -> DataFusionError {
    match error {
        object_store::Error::Precondition { path, .. } | object_store::Error::NotModified { path, .. } => {
            DataFusionError::ObjectStore(Box::new(object_store::Error::Precondition {
                path,
                source: format!("{location} changed after the partition was listed; the next attempt reads it again").into(),
            }))
        }
        other => DataFusionError::ObjectStore(Box::new(other)),
    }
}

/// A local file's bytes in blocks of [`LOCAL_READ_BYTES`], read as the stream is polled.
fn local_blocks(mut file: std::fs::File) -> impl Stream<Item = Result<Bytes>> + Send {
    let mut failed = false;
    futures::stream::iter(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let mut block = vec![0; LOCAL_READ_BYTES];
        match file.read(&mut block) {
            Ok(0) => None,
            Ok(read) => {
                block.truncate(read);
                Some(Ok(Bytes::from(block)))
            }
            Err(error) => {
                failed = true;
                Some(Err(DataFusionError::IoError(error)))
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use datafusion::arrow::array::{AsArray, RecordBatch};
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::csv::decoder::tests::events_columns;

    /// Runs `sql` over one object, read at the version `etag` names (any without one).
    async fn query(path: &std::path::Path, gzip: bool, etag: Option<String>, sql: &str) -> datafusion::error::Result<RecordBatch> {
        let columns = events_columns();
        let object = SourceObject { path: Path::from_absolute_path(path).unwrap(), size: 0, gzip, etag, modified: None };
        let dialect = CsvDialect { has_header: true, delimiter: b',', quote: b'"', max_row_bytes: 1 << 20 };
        let format = EventsCsvFormat::new(dialect, Arc::clone(&columns), vec![(object, path.display().to_string())], BadRowHandling::Refuse);
        let url = ListingTableUrl::parse(format!("file://{}", path.display())).unwrap();
        let options = ListingOptions::new(Arc::new(format)).with_file_extension("");
        let schema = crate::csv::values::schema(&columns);
        let table = ListingTable::try_new(ListingTableConfig::new(url).with_listing_options(options).with_schema(schema)).unwrap();
        let ctx = SessionContext::new();
        ctx.register_table("events", Arc::new(table)).unwrap();
        let batches = ctx.sql(sql).await?.collect().await?;
        assert_eq!(batches.len(), 1);
        Ok(batches.into_iter().next().unwrap())
    }

    /// Objects of several read blocks, with quoted line breaks and CRLF rows among plain rows, read
    /// whole through the scan — projected, and gzip-compressed or not.
    #[tokio::test]
    async fn objects_larger_than_a_read_block_are_read_whole() {
        let rows: i64 = 60_000;
        let mut text = String::from("id,name,value,timestamp\n");
        for id in 0..rows {
            let row = match id % 997 {
                0 => format!("{id},\"quoted, with a\nline break\",v,{id}\r\n"),
                _ => format!("{id},setting-{},value-{},{id}\n", id % 16, id % 12),
            };
            text.push_str(&row);
        }
        assert!(text.len() > 3 * LOCAL_READ_BYTES);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain.csv"), &text).unwrap();
        let mut gzipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzipped.write_all(text.as_bytes()).unwrap();
        std::fs::write(dir.path().join("zipped.csv.gz"), gzipped.finish().unwrap()).unwrap();
        for (name, gzip) in [("plain.csv", false), ("zipped.csv.gz", true)] {
            let sql = "SELECT count(*), sum(id), count(*) FILTER (WHERE strpos(name, chr(10)) > 0) FROM events";
            let batch = query(&dir.path().join(name), gzip, None, sql).await.unwrap();
            let column = |index: usize| batch.column(index).as_primitive::<Int64Type>().value(0);
            assert_eq!((column(0), column(1), column(2)), (rows, rows * (rows - 1) / 2, (rows - 1) / 997 + 1), "{name}");
        }
    }

    /// An object replaced after it was listed is not read as the listed version.
    #[tokio::test]
    async fn a_replaced_object_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, "id,name,value,timestamp\n1,a,b,1\n").unwrap();
        let store = object_store::local::LocalFileSystem::new();
        let listed = object_store::ObjectStoreExt::head(&store, &Path::from_absolute_path(&path).unwrap()).await.unwrap().e_tag;
        let sql = "SELECT count(*) FROM events";
        assert_eq!(query(&path, false, listed.clone(), sql).await.unwrap().column(0).as_primitive::<Int64Type>().value(0), 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "id,name,value,timestamp\n1,a,b,1\n2,c,d,2\n").unwrap();
        let error = query(&path, false, listed, sql).await.unwrap_err();
        assert!(error.to_string().contains("changed after the partition was listed"), "{error}");
    }
}
