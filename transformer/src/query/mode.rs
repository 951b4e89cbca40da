//! Whether a pipeline's partitions can grow in increments. A transform that only keeps, drops
//! and computes columns of single rows of `events` gives, over a partition, the union of what it
//! gives over any split of the partition's objects: new objects can be converted on their own and
//! their files added (append mode). Anything that looks at several rows at once — an aggregate, a
//! window, a sort, a limit, a join, `DISTINCT`, `events` read twice, a subquery — needs the whole
//! partition (full mode). Decided from DataFusion's logical plan, never from the SQL text, and
//! from the scans of the partition's rows themselves ([`SourceRows`]), never from a name: a CTE
//! or subquery the SQL calls `events` is just another step.

use std::fmt;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::query::source_rows::SourceRows;
use crate::error::Result;

/// How a pipeline's partitions are processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// New objects of a partition are converted on their own and added to its committed output.
    Append,
    /// Every run processes the whole partition, for the reason given.
    Full {
        /// Why the transform needs the whole partition, for people.
        reason: String,
    },
}

impl Mode {
    /// Full mode for `reason`.
    pub fn full(reason: impl Into<String>) -> Self {
        Self::Full { reason: reason.into() }
    }

    /// Whether partitions grow in increments.
    pub fn is_append(&self) -> bool {
        matches!(self, Self::Append)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Append => f.write_str("append: the transform keeps rows one by one, so new objects are converted on their own"),
            Self::Full { reason } => write!(f, "full: {reason}, so every run processes the whole partition"),
        }
    }
}

/// The mode of a query from its unoptimized logical plan.
pub fn of_plan(plan: &LogicalPlan) -> Result<Mode> {
    let mut reason = None;
    let mut reads = 0;
    plan.apply(|node| {
        let found = match node {
            // Names, of `events` or of anything else, say nothing: the scans below them do.
            LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => None,
            LogicalPlan::TableScan(scan) if SourceRows::is_scanned_by(scan) => {
                reads += 1;
                scan.fetch.map(|_| "the SQL reads a limited number of rows".to_string())
            }
            LogicalPlan::TableScan(scan) => Some(format!("the SQL reads the table {}", scan.table_name)),
            LogicalPlan::Aggregate(_) => Some("the SQL aggregates rows (GROUP BY or an aggregate function)".into()),
            LogicalPlan::Window(_) => Some("the SQL uses a window function".into()),
            LogicalPlan::Sort(_) => Some("the SQL sorts rows (ORDER BY)".into()),
            LogicalPlan::Limit(_) => Some("the SQL limits the rows (LIMIT or OFFSET)".into()),
            LogicalPlan::Join(_) => Some("the SQL joins".into()),
            LogicalPlan::Distinct(_) => Some("the SQL removes duplicate rows (DISTINCT)".into()),
            LogicalPlan::Union(_) => Some("the SQL combines queries (UNION)".into()),
            other => Some(format!("the SQL's plan holds a {} step", other.display().to_string().split(':').next().unwrap_or("complex"))),
        };
        if found.is_none() && node.expressions().iter().any(has_subquery) {
            reason = Some("the SQL has a subquery".to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        match found {
            Some(found) => {
                reason = Some(found);
                Ok(TreeNodeRecursion::Stop)
            }
            None => Ok(TreeNodeRecursion::Continue),
        }
    })?;
    Ok(match reason {
        Some(reason) => Mode::full(reason),
        None if reads != 1 => Mode::full("the SQL does not read events exactly once"),
        None => Mode::Append,
    })
}

fn has_subquery(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_))))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::engine::plan_sql;
    use crate::layout::PartitionKey;
    use crate::spec::{Column, ColumnType};

    async fn mode(sql: &str) -> Mode {
        let column = |name: &str, data_type| Column { name: name.into(), data_type, nullable: true, unit: None, format: None };
        let columns = [column("id", ColumnType::Int64), column("name", ColumnType::String), column("value", ColumnType::String)];
        let partition = PartitionKey { year: 2026, month: 11, day: 24, hour: None };
        of_plan(plan_sql(sql, &columns, &partition).await.unwrap().logical_plan()).unwrap()
    }

    #[tokio::test]
    async fn row_by_row_queries_append() {
        for sql in [
            "SELECT * FROM events",
            "SELECT id, upper(name) AS name, year FROM events WHERE value IS NOT NULL AND id > 3",
            "SELECT e.id, CASE WHEN e.value = 'on' THEN true ELSE false END AS enabled FROM events AS e",
            "WITH recent AS (SELECT * FROM events WHERE id > 0) SELECT id FROM recent",
            "WITH events AS (SELECT id, name FROM events WHERE id > 0) SELECT * FROM events",
            "SELECT id FROM (SELECT * FROM events) AS events",
        ] {
            assert_eq!(mode(sql).await, Mode::Append, "{sql}");
        }
    }

    #[tokio::test]
    async fn queries_over_several_rows_need_the_whole_partition() {
        for (sql, reason) in [
            ("SELECT id, count(*) AS n FROM events GROUP BY id", "aggregates"),
            ("SELECT count(*) FROM events", "aggregates"),
            ("SELECT id, row_number() OVER (PARTITION BY id ORDER BY name) AS n FROM events", "window"),
            ("SELECT * FROM events ORDER BY id", "sorts"),
            ("SELECT * FROM events LIMIT 10", "limit"),
            ("SELECT DISTINCT id FROM events", "duplicate"),
            ("SELECT a.id FROM events a JOIN events b ON a.id = b.id", "joins"),
            ("SELECT id FROM events UNION ALL SELECT id FROM events", "UNION"),
            ("SELECT id FROM events WHERE id IN (SELECT max(id) FROM events)", "subquery"),
            ("SELECT 1 AS one", "plan holds"),
            // A name a user can write is not the source: these aggregate.
            ("WITH events AS (SELECT id, count(*) AS n FROM events GROUP BY id) SELECT * FROM events", "aggregates"),
            ("SELECT * FROM (SELECT id, count(*) AS n FROM events GROUP BY id) AS events", "aggregates"),
            ("SELECT * FROM generate_series(1, 3)", "reads the table"),
        ] {
            match mode(sql).await {
                Mode::Full { reason: found } => assert!(found.contains(reason), "{sql}: {found}"),
                Mode::Append => panic!("{sql} was found row by row"),
            }
        }
    }
}
