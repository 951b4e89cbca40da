//! The partition's rows as a table of their own, so that a plan's scans of them can be told apart
//! from every other relation the SQL names (see [`SourceRows::is_scanned_by`]).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType, source_as_provider};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableScan};
use datafusion::physical_plan::ExecutionPlan;

/// The partition's rows as read from its objects: the one table under the `events` view. A
/// plan's scans of it are where the query reads the partition — what decides the processing
/// mode and where rows are counted — whatever names the SQL gives its own subqueries.
#[derive(Debug)]
pub struct SourceRows(Arc<dyn TableProvider>);

impl SourceRows {
    /// The partition's rows as `provider` reads them.
    pub fn new(provider: Arc<dyn TableProvider>) -> Self {
        Self(provider)
    }

    /// Whether a scan in a logical plan reads the partition's rows.
    pub fn is_scanned_by(scan: &TableScan) -> bool {
        source_as_provider(&scan.source).is_ok_and(|provider| provider.is::<SourceRows>())
    }
}

#[async_trait]
impl TableProvider for SourceRows {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        self.0.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.0.scan(state, projection, filters, limit).await
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.0.supports_filters_pushdown(filters)
    }
}
