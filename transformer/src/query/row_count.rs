//! How many input rows a run read. Rows are counted where the CSV is read — the output rows of
//! the plan's scans — when that count is exactly one per input row: the query reads `events` once,
//! nothing limits the read, and every leaf of the executed plan is a full scan. Otherwise (`LIMIT`,
//! a self-join, `UNION ALL` of `events`, a CTE used twice, a filter the optimizer proved empty) the
//! partition's rows are counted by a separate `count(*)` over `events`.

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;

use crate::query::source_rows::SourceRows;
use crate::error::Result;

/// Whether a query's (unoptimized) plan reads the partition's rows exactly once and unlimited,
/// subqueries included: one scan of [`SourceRows`], whatever names the SQL uses.
pub fn reads_events_once(plan: &LogicalPlan) -> Result<bool> {
    let (mut scans, mut limited) = (0, false);
    plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) if SourceRows::is_scanned_by(scan) => {
                scans += 1;
                limited |= scan.fetch.is_some();
            }
            LogicalPlan::TableScan(scan) => limited |= scan.fetch.is_some(),
            LogicalPlan::Limit(_) => limited = true,
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(scans == 1 && !limited)
}

/// The rows the executed plan's scans produced, when every leaf is a full scan of data files;
/// `None` when a leaf is something else (an empty relation, a literal table) or a node stops
/// reading early.
pub fn scanned_rows(plan: &dyn ExecutionPlan) -> Option<u64> {
    if plan.fetch().is_some() {
        return None;
    }
    let children = plan.children();
    if children.is_empty() {
        if !plan.is::<DataSourceExec>() {
            return None;
        }
        return plan.metrics()?.output_rows().map(|rows| rows as u64);
    }
    children.into_iter().map(|child| scanned_rows(child.as_ref())).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::engine::plan_sql;
    use crate::layout::PartitionKey;
    use crate::spec::{Column, ColumnType};

    async fn reads_once(sql: &str) -> bool {
        let columns = [Column { name: "id".into(), data_type: ColumnType::Int64, nullable: true, unit: None, format: None }];
        let partition = PartitionKey { year: 2026, month: 11, day: 24, hour: None };
        reads_events_once(plan_sql(sql, &columns, &partition).await.unwrap().logical_plan()).unwrap()
    }

    /// The common queries keep the cheap count at the scans; the others are counted apart.
    #[tokio::test]
    async fn only_a_single_unlimited_read_of_events_counts_at_the_scans() {
        assert!(reads_once("SELECT * FROM events").await);
        assert!(reads_once("SELECT id, count(*) AS n FROM events WHERE id > 3 GROUP BY id").await);
        assert!(reads_once("WITH events AS (SELECT id FROM events WHERE id > 3) SELECT * FROM events").await);
        for sql in [
            "SELECT * FROM events LIMIT 5",
            "SELECT a.id FROM events a JOIN events b ON a.id = b.id",
            "SELECT id FROM events UNION ALL SELECT id FROM events",
            "WITH e AS (SELECT id FROM events) SELECT id FROM e UNION ALL SELECT id FROM e",
            "WITH events AS (SELECT id FROM events) SELECT id FROM events UNION ALL SELECT id FROM events",
        ] {
            assert!(!reads_once(sql).await, "{sql}");
        }
    }
}
