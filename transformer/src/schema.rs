//! The declared columns as Arrow types: the schema the CSV reader parses with, and the projection
//! that turns it into the typed `events` table the SQL sees.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::logical_expr::{Expr, cast, lit};

use crate::error::{Error, Result};
use crate::layout::PartitionKey;
use crate::spec::{Column, ColumnType};

/// The Arrow type every timestamp column ends up as: microseconds, UTC. Parquet stores it as
/// `TIMESTAMP(isAdjustedToUTC=true, MICROS)`, which Athena, Spark, DuckDB and pyarrow all read.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Checks the column list: names unique and non-empty, `unit`/`format` only on timestamps and
/// never both.
pub fn validate(columns: &[Column]) -> Result<()> {
    for (index, column) in columns.iter().enumerate() {
        let name = &column.name;
        if name.trim().is_empty() {
            return Err(Error::Config(format!("source.schema[{index}] has an empty name")));
        }
        if columns[..index].iter().any(|earlier| earlier.name.eq_ignore_ascii_case(name)) {
            return Err(Error::Config(format!("source.schema has the column {name:?} twice")));
        }
        let is_timestamp = column.data_type == ColumnType::Timestamp;
        if !is_timestamp && (column.unit.is_some() || column.format.is_some()) {
            return Err(Error::Config(format!(
                "source.schema column {name:?}: unit and format apply to timestamp columns only"
            )));
        }
        if column.unit.is_some() && column.format.is_some() {
            return Err(Error::Config(format!("source.schema column {name:?}: give either unit or format, not both")));
        }
    }
    Ok(())
}

/// The Arrow type the CSV reader parses a column as.
pub fn raw_type(column: &Column) -> DataType {
    match column.data_type {
        ColumnType::String => DataType::Utf8,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => match (column.unit, &column.format) {
            (Some(_), _) => DataType::Int64,
            (None, Some(_)) => DataType::Utf8,
            (None, None) => timestamp_type(),
        },
    }
}

/// The schema the CSV reader parses with. Non-nullable columns are declared so, and the reader
/// refuses empty values in them.
pub fn raw_schema(columns: &[Column]) -> SchemaRef {
    let fields: Vec<Field> = columns.iter().map(|c| Field::new(&c.name, raw_type(c), c.nullable)).collect();
    Arc::new(Schema::new(fields))
}

/// The projection from the raw CSV columns to the `events` table: timestamps converted to UTC
/// microseconds, and the partition values appended as `Int32` columns.
pub fn events_projection(columns: &[Column], partition: &PartitionKey) -> Vec<Expr> {
    let mut exprs: Vec<Expr> = columns.iter().map(typed_column).collect();
    exprs.extend(partition.columns().into_iter().map(|(name, value)| lit(value).alias(name)));
    exprs
}

fn typed_column(column: &Column) -> Expr {
    let raw = quoted_col(&column.name);
    let typed = match (column.data_type, column.unit, &column.format) {
        (ColumnType::Timestamp, Some(unit), _) => crate::timestamps::epoch_expr(raw, unit, &column.name),
        (ColumnType::Timestamp, None, Some(format)) => crate::timestamps::text_expr(raw, format, &column.name),
        _ => return raw,
    };
    typed.alias(&column.name)
}

/// Normalises an output column's type for Parquet readers such as Athena: every timestamp becomes
/// UTC microseconds (seconds would be stored as a plain integer, nanoseconds trouble Athena).
pub fn output_expr(name: &str, data_type: &DataType) -> Expr {
    let column = quoted_col(name);
    match data_type {
        DataType::Timestamp(unit, tz) if *unit != TimeUnit::Microsecond || tz.as_deref() != Some("UTC") => {
            cast(column, timestamp_type()).alias(name)
        }
        _ => column,
    }
}

/// A reference to a column by its exact name (no case folding, dots allowed).
fn quoted_col(name: &str) -> Expr {
    Expr::Column(datafusion::common::Column::new_unqualified(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TimestampUnit;

    fn column(name: &str, data_type: ColumnType) -> Column {
        Column { name: name.into(), data_type, nullable: true, unit: None, format: None }
    }

    #[test]
    fn raw_types_follow_the_timestamp_encoding() {
        let mut ts = column("ts", ColumnType::Timestamp);
        assert_eq!(raw_type(&ts), timestamp_type());
        ts.unit = Some(TimestampUnit::Seconds);
        assert_eq!(raw_type(&ts), DataType::Int64);
        ts.unit = None;
        ts.format = Some("%Y-%m-%d %H:%M:%S".into());
        assert_eq!(raw_type(&ts), DataType::Utf8);
        assert_eq!(raw_type(&column("d", ColumnType::Date)), DataType::Date32);
    }

    #[test]
    fn non_nullable_columns_are_declared_so() {
        let mut id = column("id", ColumnType::Int64);
        id.nullable = false;
        let schema = raw_schema(&[id, column("name", ColumnType::String)]);
        assert!(!schema.field(0).is_nullable());
        assert!(schema.field(1).is_nullable());
    }

    #[test]
    fn validation_names_the_column() {
        let twice = [column("id", ColumnType::Int64), column("ID", ColumnType::String)];
        assert!(validate(&twice).unwrap_err().to_string().contains("\"ID\" twice"));
        let mut unit_on_string = column("name", ColumnType::String);
        unit_on_string.unit = Some(TimestampUnit::Millis);
        assert!(validate(&[unit_on_string]).unwrap_err().to_string().contains("\"name\""));
        let mut both = column("ts", ColumnType::Timestamp);
        both.unit = Some(TimestampUnit::Millis);
        both.format = Some("%s".into());
        assert!(validate(&[both]).is_err());
        assert!(validate(&[column("", ColumnType::String)]).is_err());
        assert!(validate(&[column("id", ColumnType::Int64), column("ts", ColumnType::Timestamp)]).is_ok());
    }
}
