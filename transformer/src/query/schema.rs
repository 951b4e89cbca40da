//! The `events` table the SQL sees — the declared columns, typed by the CSV decoder, plus the
//! partition values — and the normalisation of the query's output types for Parquet readers.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::logical_expr::{Expr, cast, lit};

use crate::error::{Error, Result};
use crate::layout::PartitionKey;
use crate::spec::{Column, ColumnType};
use crate::csv::timestamps::timestamp_type;
use crate::csv::values::ColumnRule;

/// Checks the column list: names unique and non-empty, `unit`/`format` only on timestamps and
/// never both, formats that can be honoured.
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
        ColumnRule::of(column)?;
    }
    Ok(())
}

/// The projection from the decoded columns to the `events` table: the columns as decoded, and
/// the partition values appended as `Int32` columns — but for a name a declared column has.
pub fn events_projection(columns: &[ColumnRule], partition: &PartitionKey) -> Vec<Expr> {
    let mut exprs: Vec<Expr> = columns.iter().map(|column| quoted_col(column.name())).collect();
    let declared = |name: &str| columns.iter().any(|column| column.name() == name);
    exprs.extend(partition.columns().into_iter().filter(|(name, _)| !declared(name)).map(|(name, value)| lit(value).alias(name)));
    exprs
}

/// An output column as Parquet readers such as Athena read it: every timestamp, nested ones
/// included, becomes UTC microseconds (seconds would be stored as a plain integer, nanoseconds
/// trouble Athena), and `Date64` (milliseconds, stored as a plain integer) becomes `Date32`.
pub fn output_expr(name: &str, data_type: &DataType) -> Expr {
    let column = quoted_col(name);
    let normalised = for_parquet(data_type);
    if normalised == *data_type { column } else { cast(column, normalised).alias(name) }
}

/// `data_type` with its timestamps and dates, at any depth, in the types Parquet readers expect.
fn for_parquet(data_type: &DataType) -> DataType {
    let field = |field: &Arc<Field>| Arc::new(field.as_ref().clone().with_data_type(for_parquet(field.data_type())));
    match data_type {
        DataType::Timestamp(..) => timestamp_type(),
        DataType::Date64 => DataType::Date32,
        DataType::List(item) => DataType::List(field(item)),
        DataType::LargeList(item) => DataType::LargeList(field(item)),
        DataType::FixedSizeList(item, size) => DataType::FixedSizeList(field(item), *size),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect::<Fields>()),
        DataType::Map(entries, sorted) => DataType::Map(field(entries), *sorted),
        other => other.clone(),
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
    use datafusion::arrow::datatypes::TimeUnit;

    fn column(name: &str, data_type: ColumnType) -> Column {
        Column { name: name.into(), data_type, nullable: true, unit: None, format: None }
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
        let mut zone_name = column("ts", ColumnType::Timestamp);
        zone_name.format = Some("%Y-%m-%d %H:%M %Z".into());
        assert!(validate(&[zone_name]).unwrap_err().to_string().contains("%Z"));
        assert!(validate(&[column("id", ColumnType::Int64), column("ts", ColumnType::Timestamp)]).is_ok());
    }

    #[test]
    fn nested_timestamps_and_dates_are_normalised_for_parquet() {
        let nanos = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let item = |data_type: DataType| Arc::new(Field::new("item", data_type, true));
        assert_eq!(for_parquet(&nanos), timestamp_type());
        assert_eq!(for_parquet(&DataType::Date64), DataType::Date32);
        assert_eq!(for_parquet(&DataType::List(item(nanos.clone()))), DataType::List(item(timestamp_type())));
        let structure = DataType::Struct(Fields::from(vec![Field::new("at", nanos.clone(), true), Field::new("n", DataType::Int64, true)]));
        let expected = DataType::Struct(Fields::from(vec![Field::new("at", timestamp_type(), true), Field::new("n", DataType::Int64, true)]));
        assert_eq!(for_parquet(&structure), expected);
        assert_eq!(for_parquet(&DataType::Utf8), DataType::Utf8);
        assert_eq!(output_expr("n", &DataType::Int64), quoted_col("n"));
    }
}
