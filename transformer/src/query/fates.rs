//! The rows of an event-time run by fate (see [`crate::event_time`]): how many met each, and the
//! rejected ones with their reasons, from the rows
//! [`Engine::register_event_time_events`](crate::query::engine::Engine::register_event_time_events)
//! returns.

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::error::DataFusionError;
use datafusion::functions::core::expr_fn::named_struct;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::Expr;
use datafusion::prelude::{DataFrame, col, ident, lit};

use crate::csv::values::ColumnRule;
use crate::error::Result;
use crate::event_time::Fate;
use crate::query::engine::FATE_COLUMN;

/// How many rows met each fate.
#[derive(Debug, Default)]
pub struct FateCounts(Vec<(String, u64)>);

impl FateCounts {
    /// Counts the rows by fate: one read of them.
    pub async fn of(fates: DataFrame) -> Result<Self> {
        let batches = fates.aggregate(vec![col(FATE_COLUMN)], vec![count(lit(1)).alias("rows")])?.collect().await?;
        let mut counts = Vec::new();
        for batch in &batches {
            let names = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8).map_err(DataFusionError::from)?;
            let names = names.as_string::<i32>();
            let rows = batch.column(1).as_primitive::<Int64Type>();
            counts.extend((0..batch.num_rows()).map(|row| (names.value(row).to_string(), rows.value(row) as u64)));
        }
        Ok(Self(counts))
    }

    /// The rows that met `fate`.
    pub fn rows(&self, fate: Fate) -> u64 {
        self.0.iter().filter(|(name, _)| name == fate.name()).map(|(_, rows)| rows).sum()
    }

    /// The rows rejected for their event time.
    pub fn rejected(&self) -> u64 {
        Fate::REJECTED.into_iter().map(|fate| self.rows(fate)).sum()
    }
}

/// The rows rejected for their event time, each as its `reason` (the fate's name) and its `row`,
/// a struct of the declared columns.
pub fn rejected_rows(fates: DataFrame, columns: &[ColumnRule]) -> Result<DataFrame> {
    let rejected: Vec<Expr> = Fate::REJECTED.into_iter().map(|fate| lit(fate.name())).collect();
    let fields = columns.iter().flat_map(|column| [lit(column.name()), ident(column.name())]).collect();
    Ok(fates.filter(col(FATE_COLUMN).in_list(rejected, false))?.select(vec![col(FATE_COLUMN).alias("reason"), named_struct(fields).alias("row")])?)
}
