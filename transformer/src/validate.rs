//! Checks a pipeline's data path before any data is read: layout, columns, CSV options, URLs and
//! the SQL, planned against the declared columns. The operator runs the same checks before it
//! launches a Job, so a bad spec is reported on the resource instead of failing in a pod.

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::spec::PipelineSpec;
use crate::storage::Location;

/// A pipeline's data path, parsed.
#[derive(Clone, Debug)]
pub struct CheckedPipeline {
    /// The source partition layout.
    pub layout: Layout,
    /// Where the CSV partitions are.
    pub source: Location,
    /// Where the Parquet goes.
    pub sink: Location,
    /// Where quarantined rows go.
    pub rejected: Location,
}

/// Checks everything that needs no I/O.
pub fn check(spec: &PipelineSpec) -> Result<CheckedPipeline> {
    let layout = Layout::parse(&spec.source.layout).map_err(|e| Error::Config(format!("source.layout: {e}")))?;
    crate::schema::validate(&spec.source.schema)?;
    for (field, value) in [("delimiter", &spec.source.csv.delimiter), ("quote", &spec.source.csv.quote)] {
        if value.len() != 1 || !value.is_ascii() {
            return Err(Error::Config(format!("source.csv.{field} must be one ASCII character, not {value:?}")));
        }
    }
    if spec.source.csv.delimiter == spec.source.csv.quote {
        return Err(Error::Config("source.csv.delimiter and source.csv.quote must differ".into()));
    }
    let source = Location::parse(&spec.source.url).map_err(|e| prefixed("source.url", e))?;
    let sink = Location::parse(&spec.sink.url).map_err(|e| prefixed("sink.url", e))?;
    let rejected = match &spec.bad_records.url {
        Some(url) => Location::parse(url).map_err(|e| prefixed("badRecords.url", e))?,
        None => default_rejected_location(&sink),
    };
    if sink == source {
        return Err(Error::Config("sink.url must differ from source.url".into()));
    }
    crate::sandbox::check(&spec.transform.sql)?;
    Ok(CheckedPipeline { layout, source, sink, rejected })
}

/// Plans the SQL against the declared columns, without data: unknown columns, functions and type
/// errors surface here. With no declared columns only the sandbox check applies. `layout` is the
/// parsed source layout, as [`check`] returns it.
pub async fn check_sql(spec: &PipelineSpec, layout: &Layout) -> Result<()> {
    if spec.source.schema.is_empty() {
        return crate::sandbox::check(&spec.transform.sql);
    }
    let sample = layout.sample_partition();
    crate::engine::output_schema(&spec.transform.sql, &spec.source.schema, &sample).await.map(|_| ())
}

/// The sink location with `-rejected` appended to its last path segment (`s3://out/settings/` →
/// `s3://out/settings-rejected/`), or `_rejected/` below a bucket root.
pub fn default_rejected_location(sink: &Location) -> Location {
    match sink {
        Location::S3 { bucket, prefix } if prefix.is_empty() => {
            Location::S3 { bucket: bucket.clone(), prefix: "_rejected/".into() }
        }
        Location::S3 { bucket, prefix } => {
            Location::S3 { bucket: bucket.clone(), prefix: format!("{}-rejected/", prefix.trim_end_matches('/')) }
        }
        Location::Local(dir) => {
            let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "eventpipe".into());
            name.push("-rejected");
            Location::Local(dir.with_file_name(name))
        }
    }
}

fn prefixed(field: &str, error: Error) -> Error {
    match error {
        Error::Config(message) => Error::Config(format!("{field}: {message}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Column, ColumnType, SinkSpec, SourceSpec, TransformSpec};

    fn spec() -> PipelineSpec {
        PipelineSpec {
            source: SourceSpec {
                url: "s3://user-events/".into(),
                layout: crate::spec::default_layout(),
                schema: vec![
                    Column { name: "id".into(), data_type: ColumnType::Int64, nullable: false, unit: None, format: None },
                    Column { name: "name".into(), data_type: ColumnType::String, nullable: true, unit: None, format: None },
                ],
                ..Default::default()
            },
            sink: SinkSpec { url: "s3://output/user-settings/".into(), ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_filled_in() {
        let checked = check(&spec()).unwrap();
        assert_eq!(checked.rejected.url(), "s3://output/user-settings-rejected/");
        assert_eq!(default_rejected_location(&Location::parse("s3://out").unwrap()).url(), "s3://out/_rejected/");
        assert_eq!(default_rejected_location(&Location::parse("/tmp/out/").unwrap()).url(), "file:///tmp/out-rejected/");
    }

    #[test]
    fn each_problem_names_its_field() {
        let cases: Vec<(Box<dyn Fn(&mut PipelineSpec)>, &str)> = vec![
            (Box::new(|s| s.source.layout = "{year}/{month}/".into()), "source.layout"),
            (Box::new(|s| s.source.csv.delimiter = ";;".into()), "source.csv.delimiter"),
            (Box::new(|s| s.source.csv.quote = ",".into()), "must differ"),
            (Box::new(|s| s.sink.url = "gs://x/".into()), "sink.url"),
            (Box::new(|s| s.bad_records.url = Some("ftp://x".into())), "badRecords.url"),
            (Box::new(|s| s.sink.url = s.source.url.clone()), "sink.url must differ"),
            (Box::new(|s| s.transform = TransformSpec { sql: "DROP TABLE events".into() }), "transform.sql"),
        ];
        for (mutate, expected) in cases {
            let mut spec = spec();
            mutate(&mut spec);
            let message = check(&spec).unwrap_err().to_string();
            assert!(message.contains(expected), "{expected}: {message}");
        }
    }

    #[tokio::test]
    async fn sql_is_planned_against_the_declared_columns() {
        let mut spec = spec();
        spec.transform.sql = "SELECT id, upper(name) AS name, year FROM events WHERE day = 1".into();
        let layout = check(&spec).unwrap().layout;
        check_sql(&spec, &layout).await.unwrap();
        spec.transform.sql = "SELECT nope FROM events".into();
        let message = check_sql(&spec, &layout).await.unwrap_err().to_string();
        assert!(message.starts_with("invalid transform.sql") && message.contains("nope"), "{message}");
        spec.transform.sql = "SELECT * FROM other".into();
        assert!(check_sql(&spec, &layout).await.unwrap_err().to_string().contains("other"));
    }
}
