//! Checks a pipeline's data path before any data is read: layout, columns, CSV options, URLs (and
//! that source, sink and rejected rows do not overlap) and the SQL, planned against the declared
//! columns. The operator runs the same checks before it launches a Job, so a bad spec is reported on
//! the resource instead of failing in a pod.

use crate::error::{Error, Result};
use crate::event_time::EventTime;
use crate::layout::Layout;
use crate::query::mode::Mode;
use crate::spec::{BadRecordPolicy, PipelineSpec};
use crate::store::Location;

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
    /// The event-time partitioning, with `source.eventTime`.
    pub event_time: Option<EventTime>,
}

/// Checks everything that reads no data. Local paths are resolved on the filesystem, nothing else
/// is looked up.
pub fn check(spec: &PipelineSpec) -> Result<CheckedPipeline> {
    let layout = Layout::parse(&spec.source.layout).map_err(|e| Error::Config(format!("source.layout: {e}")))?;
    crate::query::schema::validate(&spec.source.schema)?;
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
    let (rejected, rejected_field) = match &spec.bad_records.url {
        Some(url) => (Location::parse(url).map_err(|e| prefixed("badRecords.url", e))?, "badRecords.url"),
        None => (default_rejected_location(&sink), "badRecords.url (default from sink.url)"),
    };
    apart(("sink.url", &sink), ("source.url", &source))?;
    // The default location matters only where rows are written to it; a location given is
    // checked always, so a mistake shows before the policy changes.
    let event_time = EventTime::of(&spec.source, &layout)?;
    // Late rows of event-time partitions go to the rejected-rows location whatever the policy.
    if spec.bad_records.url.is_some() || spec.bad_records.policy == BadRecordPolicy::Quarantine || event_time.is_some() {
        apart((rejected_field, &rejected), ("sink.url", &sink))?;
        apart((rejected_field, &rejected), ("source.url", &source))?;
    }
    crate::query::sandbox::check(&spec.transform.sql)?;
    Ok(CheckedPipeline { layout, source, sink, rejected, event_time })
}

/// Refuses two locations of which one is the other or lies inside it: files written inside the
/// source are listed as input by the next run, and files inside the sink are read by whoever
/// queries the sink's table. Local directories are compared as [`Location::parse`] resolved them.
fn apart((field, location): (&str, &Location), (other_field, other): (&str, &Location)) -> Result<()> {
    let relation = if location == other {
        "is the same location as"
    } else if other.contains(location) {
        "lies inside"
    } else if location.contains(other) {
        "contains"
    } else {
        return Ok(());
    };
    Err(Error::Config(format!(
        "{field} {} {relation} {other_field} {}; they must not overlap",
        location.url(),
        other.url()
    )))
}

/// Plans the SQL against the declared columns, without data: unknown columns, functions and type
/// errors surface here, and the plan tells whether partitions can grow in increments. With no
/// declared columns only the sandbox check applies and every run processes the whole partition.
/// `layout` is the parsed source layout, as [`check`] returns it.
pub async fn check_sql(spec: &PipelineSpec, layout: &Layout) -> Result<Mode> {
    if spec.source.schema.is_empty() {
        crate::query::sandbox::check(&spec.transform.sql)?;
        return Ok(Mode::full("source.schema is empty, so the SQL is planned only once the data is read"));
    }
    let frame = crate::query::engine::plan_sql(&spec.transform.sql, &spec.source.schema, &layout.sample_partition()).await?;
    crate::query::mode::of_plan(frame.logical_plan())
}

/// The sink location with `-rejected` appended to its last path segment (`s3://out/settings/` →
/// `s3://out/settings-rejected/`), or `_rejected/` below a bucket root — which lies inside the
/// sink, so [`check`] asks for `badRecords.url` when such a pipeline quarantines.
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

    /// A change that makes a valid spec invalid.
    type Breakage = fn(&mut PipelineSpec);

    #[test]
    fn each_problem_names_its_field() {
        let cases: [(Breakage, &str); 7] = [
            (|s| s.source.layout = "{year}/{month}/".into(), "source.layout"),
            (|s| s.source.csv.delimiter = ";;".into(), "source.csv.delimiter"),
            (|s| s.source.csv.quote = ",".into(), "must differ"),
            (|s| s.sink.url = "gs://x/".into(), "sink.url"),
            (|s| s.bad_records.url = Some("ftp://x".into()), "badRecords.url"),
            (|s| s.sink.url = s.source.url.clone(), "sink.url s3://user-events/ is the same location as source.url"),
            (|s| s.transform = TransformSpec { sql: "DROP TABLE events".into() }, "transform.sql"),
        ];
        for (mutate, expected) in cases {
            let mut spec = spec();
            mutate(&mut spec);
            let message = check(&spec).unwrap_err().to_string();
            assert!(message.contains(expected), "{expected}: {message}");
        }
    }

    /// The message for `spec` with the given URLs; `None` when the spec passes.
    fn overlap(source: &str, sink: &str, rejected: Option<&str>, policy: BadRecordPolicy) -> Option<String> {
        let mut spec = spec();
        spec.source.url = source.into();
        spec.sink.url = sink.into();
        spec.bad_records.url = rejected.map(str::to_string);
        spec.bad_records.policy = policy;
        check(&spec).err().map(|e| e.to_string())
    }

    #[test]
    fn source_sink_and_rejected_rows_must_not_overlap() {
        use BadRecordPolicy::{Fail, Quarantine};
        let raw = "s3://a/raw/";
        let refused = [
            (raw, "s3://a/raw/out/", None, Fail, "sink.url s3://a/raw/out/ lies inside source.url s3://a/raw/"),
            (raw, "s3://a/", None, Fail, "sink.url s3://a/ contains source.url s3://a/raw/"),
            (raw, "s3://b/out/", Some("s3://b/out/"), Fail, "badRecords.url s3://b/out/ is the same location as sink.url"),
            (raw, "s3://b/out/", Some("s3://b/out/bad/"), Quarantine, "badRecords.url s3://b/out/bad/ lies inside sink.url"),
            (raw, "s3://b/out/", Some("s3://a/raw/bad"), Quarantine, "badRecords.url s3://a/raw/bad/ lies inside source.url"),
            (raw, "s3://b/", None, Quarantine, "badRecords.url (default from sink.url) s3://b/_rejected/ lies inside"),
        ];
        for (source, sink, rejected, policy, expected) in refused {
            let message = overlap(source, sink, rejected, policy).unwrap_or_default();
            assert!(message.contains(expected), "{expected}: {message}");
        }
        let accepted = [
            ("s3://a/raw/", "s3://a/rawer/", None, Quarantine),
            ("s3://a/raw/", "s3://b/", None, Fail),
            ("s3://a/raw/", "s3://b/out/", Some("s3://b/out-bad/"), Quarantine),
            ("/tmp/x/raw", "/tmp/x/out", None, Quarantine),
        ];
        for (source, sink, rejected, policy) in accepted {
            assert_eq!(overlap(source, sink, rejected, policy), None, "{source} {sink} {rejected:?}");
        }
    }

    #[test]
    fn local_locations_are_compared_after_resolving_dot_dot_and_links() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        std::fs::create_dir_all(root.join("data/raw")).unwrap();
        std::os::unix::fs::symlink(root.join("data"), root.join("link")).unwrap();
        let at = |relative: &str| root.join(relative).to_str().unwrap().to_string();
        let url = |relative: &str| format!("file://{}/", at(relative));
        let message = overlap(&at("data/raw"), &at("link/raw/../raw/out"), None, BadRecordPolicy::Fail).unwrap();
        let expected = format!("sink.url {} lies inside source.url {}", url("data/raw/out"), url("data/raw"));
        assert!(message.contains(&expected), "{message}");
        let rejected = at("data/raw/../raw");
        let message = overlap(&at("link/raw"), &at("data/out"), Some(&rejected), BadRecordPolicy::Fail).unwrap();
        let expected = format!("badRecords.url {} is the same location as source.url {}", url("data/raw"), url("data/raw"));
        assert!(message.contains(&expected), "{message}");
        assert_eq!(overlap(&at("link/raw"), &at("data/raw/../out"), None, BadRecordPolicy::Quarantine), None);
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
