//! How many input rows a run read. Rows are counted where the CSV is read — the output rows of
//! the plan's scans — when that count is exactly one per input row: the query reads `events` once,
//! nothing limits the read, and every leaf of the executed plan is a full scan. Otherwise (`LIMIT`,
//! a self-join, `UNION ALL` of `events`, a CTE used twice, a filter the optimizer proved empty) the
//! partition's rows are counted by a separate `count(*)` over `events`.

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;

use crate::engine::EVENTS_TABLE;
use crate::error::Result;

/// Whether a query's (unoptimized) plan reads `events` exactly once and unlimited, subqueries
/// included.
pub fn reads_events_once(plan: &LogicalPlan) -> Result<bool> {
    let (mut scans, mut limited) = (0, false);
    plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) if scan.table_name.table() == EVENTS_TABLE => {
                scans += 1;
                limited |= scan.fetch.is_some();
            }
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
