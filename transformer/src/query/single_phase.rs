//! A physical plan rule: `latest_map` aggregations run in one phase, over rows hash-partitioned by
//! their group keys.
//!
//! DataFusion plans a grouped aggregation in two phases: a partial aggregation per input partition,
//! a hash repartition of its intermediate states, and a final aggregation merging them. The partial
//! phase pays when it merges many rows per group. For `latest_map` it rarely does: a partial state is
//! three lists per group, a user's settings events are spread over the whole day, and every input
//! partition sees most users (on the benchmark day a partial phase turned 625 thousand rows into 350
//! thousand list states, and DataFusion's own switch to skipping it needs 80 % distinct groups). The
//! rule moves the hash repartition below the aggregation and drops the partial phase:
//!
//! ```text
//! FinalPartitioned ← Repartition(Hash(keys)) ← Partial ← input
//!     becomes
//! SinglePartitioned ← Repartition(Hash(keys)) ← input
//! ```
//!
//! Only aggregations whose every aggregate is `latest_map`, with plain GROUP BY keys and unordered
//! input, are changed; the output is the same.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, InputOrderMode, Partitioning};

/// The rule; add it after DataFusion's own rules, which place the repartition it moves.
#[derive(Debug, Default)]
pub struct SinglePhaseLatestMap;

impl PhysicalOptimizerRule for SinglePhaseLatestMap {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| Ok(match single_phase(&node)? {
            Some(rewritten) => Transformed::yes(rewritten),
            None => Transformed::no(node),
        }))
        .data()
    }

    fn name(&self) -> &str {
        "SinglePhaseLatestMap"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The one-phase form of a two-phase `latest_map` aggregation rooted at `node`, if it is one.
fn single_phase(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(last) = node.downcast_ref::<AggregateExec>() else { return Ok(None) };
    if *last.mode() != AggregateMode::FinalPartitioned {
        return Ok(None);
    }
    let Some(repartition) = last.input().downcast_ref::<RepartitionExec>() else { return Ok(None) };
    let Partitioning::Hash(_, partitions) = repartition.partitioning() else { return Ok(None) };
    let Some(partial) = repartition.input().downcast_ref::<AggregateExec>() else { return Ok(None) };
    let only_latest_map = !partial.aggr_expr().is_empty()
        && partial.aggr_expr().iter().all(|aggregate| aggregate.fun().name() == crate::query::latest_map::NAME);
    if *partial.mode() != AggregateMode::Partial
        || !only_latest_map
        || !partial.group_expr().is_single()
        || *partial.input_order_mode() != InputOrderMode::Linear
    {
        return Ok(None);
    }
    let by_keys = Partitioning::Hash(partial.group_expr().input_exprs(), *partitions);
    let rows_by_keys = Arc::new(RepartitionExec::try_new(Arc::clone(partial.input()), by_keys)?);
    let aggregate = AggregateExec::try_new(
        AggregateMode::SinglePartitioned,
        partial.group_expr().clone(),
        partial.aggr_expr().to_vec(),
        partial.filter_expr().to_vec(),
        rows_by_keys,
        partial.input_schema(),
    )?
    .with_limit_options(last.limit_options());
    Ok(Some(Arc::new(aggregate)))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// 300 events of 40 users in three input partitions, every user in each of them, with ties on
    /// the ordering and null values.
    fn events() -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
            Field::new("ts", DataType::Int64, false),
        ]));
        let partition = |part: i64| {
            let rows = 0..100i64;
            let ids = Int64Array::from_iter_values(rows.clone().map(|row| (row * 7 + part) % 40));
            let names = StringArray::from_iter_values(rows.clone().map(|row| ["theme", "zoom", "tz"][(row % 3) as usize]));
            let values =
                StringArray::from_iter(rows.clone().map(|row| (row % 11 != 0).then(|| format!("v{}", (row * 13 + part) % 5))));
            let orderings = Int64Array::from_iter_values(rows.map(|row| (row * 31 + part * 17) % 9));
            let columns: Vec<Arc<dyn datafusion::arrow::array::Array>> =
                vec![Arc::new(ids), Arc::new(names), Arc::new(values), Arc::new(orderings)];
            vec![RecordBatch::try_new(Arc::clone(&schema), columns).unwrap()]
        };
        MemTable::try_new(Arc::clone(&schema), (0..3).map(partition).collect()).unwrap()
    }

    fn session(with_rule: bool) -> SessionContext {
        let mut state = SessionStateBuilder::new().with_config(SessionConfig::new().with_target_partitions(4)).with_default_features();
        if with_rule {
            state = state.with_physical_optimizer_rule(Arc::new(SinglePhaseLatestMap));
        }
        let ctx = SessionContext::new_with_state(state.build());
        ctx.register_udaf(crate::query::latest_map::udaf());
        ctx.register_table("events", Arc::new(events())).unwrap();
        ctx
    }

    /// The physical plan as text, and the result rows sorted.
    async fn run(with_rule: bool, sql: &str) -> (String, Vec<String>) {
        let ctx = session(with_rule);
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        let batches = collect(plan, ctx.task_ctx()).await.unwrap();
        let mut rows: Vec<String> = pretty_format_batches(&batches).unwrap().to_string().lines().map(str::to_string).collect();
        rows.sort();
        (text, rows)
    }

    #[tokio::test]
    async fn latest_map_aggregates_in_one_phase_with_the_same_result() {
        let sql = "SELECT id, latest_map(name, value, ts) AS settings FROM events GROUP BY id";
        let (two_phase_plan, expected) = run(false, sql).await;
        let (plan, rows) = run(true, sql).await;
        assert!(two_phase_plan.contains("mode=Partial"), "{two_phase_plan}");
        assert!(plan.contains("AggregateExec: mode=SinglePartitioned"), "{plan}");
        assert!(!plan.contains("mode=Partial") && !plan.contains("mode=FinalPartitioned"), "{plan}");
        assert!(plan.contains("RepartitionExec: partitioning=Hash([id@0], 4)"), "{plan}");
        assert_eq!(rows.len(), 40 + 4, "40 users and the table's frame");
        assert_eq!(rows, expected);
    }

    #[tokio::test]
    async fn other_aggregates_keep_their_two_phases() {
        for sql in [
            "SELECT id, latest_map(name, value, ts) AS settings, count(*) AS events FROM events GROUP BY id",
            "SELECT name, count(*) AS events FROM events GROUP BY name",
        ] {
            let (plan, rows) = run(true, sql).await;
            assert!(plan.contains("mode=Partial") && plan.contains("mode=FinalPartitioned"), "{sql}: {plan}");
            assert_eq!(rows, run(false, sql).await.1, "{sql}");
        }
    }
}
