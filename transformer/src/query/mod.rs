//! Running the transform: the DataFusion engine over a partition's rows, the SQL sandbox, the
//! processing mode a query allows (full or append), the output schema, the `latest_map`
//! aggregate and its single-phase rule, counting the rows a plan reads, and the fates of an
//! event-time run's rows.

pub mod engine;
pub mod fates;
pub mod latest_map;
pub mod mode;
pub mod row_count;
pub mod sandbox;
pub mod schema;
pub mod single_phase;
pub mod source_rows;
