//! `eventpipe athena-ddl`: the `CREATE EXTERNAL TABLE` statement for a pipeline's output, with the
//! columns of the transform's output schema (planned from the declared columns, no data read), Hive
//! partitions from the layout, and partition projection so Athena finds new partitions without a
//! crawler or `MSCK REPAIR TABLE`; for a Delta sink, the Delta table's statement, whose columns
//! and partitions Athena reads from the table's log.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use datafusion::arrow::datatypes::{DataType, Field};
use eventpipe_transformer::spec::{ParquetCompression, SinkFormat};
use eventpipe_transformer::store::Location;
use eventpipe_transformer::{query::engine, validate};

/// Arguments of `eventpipe athena-ddl`.
#[derive(Args)]
pub struct AthenaDdlArgs {
    /// The EventPipeline manifest (YAML).
    #[arg(short = 'f', long = "filename")]
    manifest: PathBuf,
    /// Table name; defaults to the pipeline's name with `-` replaced by `_`.
    #[arg(long)]
    table: Option<String>,
    /// First year the partition projection covers.
    #[arg(long, default_value_t = 2020)]
    first_year: u16,
}

/// Prints the DDL.
pub async fn print(args: AthenaDdlArgs) -> anyhow::Result<ExitCode> {
    let pipeline = crate::manifest_file::load(&args.manifest)?;
    let name = pipeline.metadata.name.clone().unwrap_or_default();
    let table = args.table.unwrap_or_else(|| name.replace('-', "_"));
    let spec = pipeline.spec.data_path();
    let checked = validate::check(&spec)?;
    let Location::S3 { .. } = &checked.sink else {
        bail!("Athena reads S3; sink.url is {}", spec.sink.url);
    };
    if spec.source.schema.is_empty() {
        bail!("declare source.schema: without it the output columns are known only from the data");
    }
    let mode = validate::check_sql(&spec, &checked.layout).await?;
    let sample = checked.layout.sample_partition();
    let schema = engine::output_schema(&spec.transform.sql, &spec.source.schema, &sample).await?;
    let columns = schema
        .fields()
        .iter()
        .map(|field| Ok(format!("  `{}` {}", field.name(), hive_type(field.data_type())?)))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("the output schema has a type Athena cannot read")?;
    let visible = if mode.is_append() {
        "a partition's rows appear as its objects are converted, during the day"
    } else {
        "a partition's rows appear when it has closed (or at each schedule.openRefreshSeconds)"
    };
    println!("-- Processing mode {mode};\n-- {visible}.");
    if let (Some(event_time), Some(spec)) = (&checked.event_time, &spec.source.event_time) {
        let zone = pipeline.spec.schedule.timezone.as_deref().unwrap_or("UTC");
        println!(
            "-- Partitioned by event time: year, month and day are the day of `{}` in {zone}, not the directory an event\n\
             -- arrived in; a day is complete {} after it ends (plus the grace period), events later than that are rejected.",
            event_time.column, spec.lateness
        );
    }
    if spec.sink.format == SinkFormat::Delta {
        // Athena (engine v3) reads a Delta table's columns and partitions from its log.
        println!("-- A Delta Lake table: Athena reads its columns and partitions from the Delta log.");
        println!("CREATE EXTERNAL TABLE IF NOT EXISTS `{table}`\nLOCATION '{}'\nTBLPROPERTIES ('table_type' = 'DELTA');", checked.sink.url());
        return Ok(ExitCode::SUCCESS);
    }
    let partitions: Vec<&str> = sample.columns().into_iter().map(|(name, _)| name).collect();
    let ddl = Ddl { table: &table, columns, partitions, location: checked.sink.url(), compression: spec.sink.compression, first_year: args.first_year };
    print!("{ddl}");
    Ok(ExitCode::SUCCESS)
}

struct Ddl<'a> {
    table: &'a str,
    columns: Vec<String>,
    partitions: Vec<&'static str>,
    location: String,
    compression: ParquetCompression,
    first_year: u16,
}

impl std::fmt::Display for Ddl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "CREATE EXTERNAL TABLE IF NOT EXISTS `{}` (", self.table)?;
        writeln!(f, "{}", self.columns.join(",\n"))?;
        let partitions: Vec<String> = self.partitions.iter().map(|p| format!("`{p}` int")).collect();
        writeln!(f, ")\nPARTITIONED BY ({})", partitions.join(", "))?;
        writeln!(f, "STORED AS PARQUET\nLOCATION '{}'", self.location)?;
        writeln!(f, "TBLPROPERTIES (\n  'projection.enabled' = 'true',")?;
        for partition in &self.partitions {
            let (range, digits) = match *partition {
                "year" => (format!("{},2099", self.first_year), 4),
                "month" => ("1,12".to_string(), 2),
                "day" => ("1,31".to_string(), 2),
                _ => ("0,23".to_string(), 2),
            };
            writeln!(f, "  'projection.{partition}.type' = 'integer',")?;
            writeln!(f, "  'projection.{partition}.range' = '{range}',")?;
            writeln!(f, "  'projection.{partition}.digits' = '{digits}',")?;
        }
        let template: Vec<String> = self.partitions.iter().map(|p| format!("{p}=${{{p}}}")).collect();
        writeln!(f, "  'storage.location.template' = '{}{}/',", self.location, template.join("/"))?;
        let codec = match self.compression {
            ParquetCompression::Zstd => "ZSTD",
            ParquetCompression::Snappy => "SNAPPY",
            ParquetCompression::Gzip => "GZIP",
            ParquetCompression::None => "UNCOMPRESSED",
        };
        writeln!(f, "  'parquet.compression' = '{codec}'\n);")
    }
}

/// The Hive type Athena reads an Arrow type as.
fn hive_type(data_type: &DataType) -> anyhow::Result<String> {
    use DataType::*;
    let item = |field: &Field| hive_type(field.data_type());
    Ok(match data_type {
        Boolean => "boolean".into(),
        Int8 => "tinyint".into(),
        Int16 => "smallint".into(),
        Int32 => "int".into(),
        Int64 => "bigint".into(),
        Float32 => "float".into(),
        Float64 => "double".into(),
        Utf8 | LargeUtf8 | Utf8View => "string".into(),
        Binary | LargeBinary | BinaryView => "binary".into(),
        Date32 | Date64 => "date".into(),
        Timestamp(..) => "timestamp".into(),
        Decimal128(precision, scale) => format!("decimal({precision},{scale})"),
        List(field) | LargeList(field) => format!("array<{}>", item(field)?),
        Map(entries, _) => match entries.data_type() {
            Struct(fields) if fields.len() == 2 => format!("map<{},{}>", item(&fields[0])?, item(&fields[1])?),
            other => bail!("map entries of type {other}"),
        },
        Struct(fields) => {
            let members = fields
                .iter()
                .map(|field| Ok(format!("{}:{}", field.name(), item(field)?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            format!("struct<{}>", members.join(","))
        }
        other => bail!("{other} has no Athena equivalent; cast it in the SQL"),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{Fields, TimeUnit};

    use super::*;

    #[test]
    fn arrow_types_map_to_hive_types() {
        let string = Arc::new(Field::new("s", DataType::Utf8, true));
        let entries = Field::new("entries", DataType::Struct(Fields::from(vec![string.as_ref().clone(), Field::new("v", DataType::Int64, true)])), false);
        let cases = [
            (DataType::Int64, "bigint"),
            (DataType::Utf8View, "string"),
            (DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), "timestamp"),
            (DataType::Decimal128(12, 2), "decimal(12,2)"),
            (DataType::List(Arc::clone(&string)), "array<string>"),
            (DataType::Map(Arc::new(entries), false), "map<string,bigint>"),
            (DataType::Struct(Fields::from(vec![Field::new("a", DataType::Date32, true)])), "struct<a:date>"),
        ];
        for (data_type, expected) in cases {
            assert_eq!(hive_type(&data_type).unwrap(), expected);
        }
        assert!(hive_type(&DataType::Duration(TimeUnit::Second)).unwrap_err().to_string().contains("cast it"));
    }
}
