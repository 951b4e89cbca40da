//! What the pipelines of each namespace may reach in S3 (chart value `s3Allowances`): the
//! locations of their source, sink and rejected rows, as URL globs, and the S3 endpoints besides
//! AWS's own. A pipeline outside them is refused before the operator sends any request for it,
//! so that a tenant can neither point it at another team's prefix nor make the operator send
//! signed requests to an arbitrary host.

use std::collections::BTreeMap;

use eventpipe_transformer::store::Location;
use eventpipe_transformer::validate::CheckedPipeline;
use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use crate::crd::EventPipeline;

/// The key of the entry for namespaces that have none of their own.
pub const ANY_NAMESPACE: &str = "*";
/// The chart value the refusals name.
const CHART_VALUE: &str = "s3Allowances";

/// What one namespace's pipelines may reach, as written in the chart value.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reach {
    /// Globs of `source.url`, e.g. `s3://team-a-raw/*`; `*` also matches `/`. Absent: any.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// Globs of `sink.url`. Absent: any.
    #[serde(default)]
    pub sinks: Option<Vec<String>>,
    /// Globs of `badRecords.url` (the rejected rows' location; by default the sink's URL with
    /// `-rejected` appended). Absent: those of `sinks`, as rejected rows are written output too.
    #[serde(default)]
    pub rejected: Option<Vec<String>>,
    /// S3 endpoints pipelines may name in `s3.endpoint`, exactly (`https://minio.data:9000`);
    /// plain `http://` ones only when listed as such. None: AWS's own endpoints only.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

/// Every namespace's [`Reach`], parsed from the chart value's JSON; equal when written alike.
#[derive(Clone, Debug, Default)]
pub struct S3Allowances {
    written: BTreeMap<String, Reach>,
    by_namespace: BTreeMap<String, Compiled>,
}

impl PartialEq for S3Allowances {
    fn eq(&self, other: &Self) -> bool {
        self.written == other.written
    }
}

#[derive(Clone, Debug, Default)]
struct Compiled {
    sources: Option<Vec<GlobMatcher>>,
    sinks: Option<Vec<GlobMatcher>>,
    rejected: Option<Vec<GlobMatcher>>,
    endpoints: Vec<String>,
}

impl S3Allowances {
    /// Parses `{"team-a": {"sources": [...], ...}, "*": {...}}`; every glob must be valid.
    pub fn parse(json: &str) -> Result<Self, String> {
        let written: BTreeMap<String, Reach> =
            serde_json::from_str(json).map_err(|e| format!("not a map of namespaces to {{sources, sinks, rejected, endpoints}}: {e}"))?;
        let mut by_namespace = BTreeMap::new();
        for (namespace, reach) in written.clone() {
            let globs = |field: &str, list: Option<Vec<String>>| -> Result<Option<Vec<GlobMatcher>>, String> {
                list.map(|globs| {
                    globs
                        .iter()
                        .map(|glob| Glob::new(glob).map(|g| g.compile_matcher()).map_err(|e| format!("{namespace}.{field}: {e}")))
                        .collect()
                })
                .transpose()
            };
            let compiled = Compiled {
                sources: globs("sources", reach.sources)?,
                sinks: globs("sinks", reach.sinks.clone())?,
                rejected: globs("rejected", reach.rejected.or(reach.sinks))?,
                endpoints: reach.endpoints.iter().map(|endpoint| normalised(endpoint)).collect(),
            };
            by_namespace.insert(namespace, compiled);
        }
        Ok(Self { written, by_namespace })
    }

    /// Refuses a pipeline whose endpoint or locations its namespace may not reach, naming the
    /// field and the chart value that would allow it.
    pub fn admit(&self, pipeline: &EventPipeline, checked: &CheckedPipeline) -> Result<(), String> {
        let namespace = pipeline.metadata.namespace.as_deref().unwrap_or_default();
        let (entry, reach) = match self.by_namespace.get_key_value(namespace) {
            Some((key, reach)) => (key.as_str(), reach),
            None => (ANY_NAMESPACE, self.by_namespace.get(ANY_NAMESPACE).unwrap_or(&NOTHING_EXTRA)),
        };
        let value = |field: &str| format!("{CHART_VALUE}.{entry:?}.{field}");
        if let Some(endpoint) = pipeline.spec.pipeline.s3.as_ref().and_then(|s3| s3.endpoint.as_deref())
            && !reach.endpoints.contains(&normalised(endpoint))
        {
            return Err(format!(
                "s3.endpoint {endpoint:?} is not allowed in namespace {namespace}: pipelines here may use {:?}; \
                 ask for it to be added to the chart value {}",
                reach.endpoints,
                value("endpoints")
            ));
        }
        if let Some(queue) = pipeline.spec.pipeline.source.notifications.as_ref().map(|notifications| notifications.sqs_queue_url.as_str())
            && let Some(endpoint) = outside_aws(queue)
            && !reach.endpoints.contains(&normalised(&endpoint))
        {
            return Err(format!(
                "source.notifications.sqsQueueUrl {queue:?} is at {endpoint}, which is not allowed in namespace {namespace}: \
                 pipelines here may use {:?}; ask for it to be added to the chart value {}",
                reach.endpoints,
                value("endpoints")
            ));
        }
        let locations = [
            ("source.url", "sources", &checked.source, &reach.sources),
            ("sink.url", "sinks", &checked.sink, &reach.sinks),
            ("badRecords.url", "rejected", &checked.rejected, &reach.rejected),
        ];
        for (field, list, location, globs) in locations {
            let Some(globs) = globs else { continue };
            let url = location.url();
            if !matches!(location, Location::S3 { .. }) || !globs.iter().any(|glob| glob.is_match(&url)) {
                let allowed: Vec<&str> = globs.iter().map(|glob| glob.glob().glob()).collect();
                return Err(format!(
                    "{field} {url:?} is not allowed in namespace {namespace}: pipelines here may use {allowed:?}; \
                     ask for it to be added to the chart value {}",
                    value(list)
                ));
            }
        }
        Ok(())
    }
}

/// The endpoint (`scheme://host[:port]`) of a queue URL that is not AWS's.
fn outside_aws(queue_url: &str) -> Option<String> {
    let url = url::Url::parse(queue_url).ok()?;
    let aws = url.host_str().is_some_and(|host| host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"));
    (!aws).then(|| url.origin().ascii_serialization())
}

/// The allowance of a namespace without an entry when there is no `*` entry either: any
/// location, AWS's endpoints only.
static NOTHING_EXTRA: Compiled = Compiled { sources: None, sinks: None, rejected: None, endpoints: Vec::new() };

/// An endpoint as compared: without trailing slashes, scheme and host in lower case.
fn normalised(endpoint: &str) -> String {
    let trimmed = endpoint.trim().trim_end_matches('/');
    match trimmed.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').map_or((rest, ""), |(host, path)| (host, path));
            let path = if path.is_empty() { String::new() } else { format!("/{path}") };
            format!("{}://{}{path}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase())
        }
        None => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pipeline(namespace: &str, source: &str, sink: &str, endpoint: Option<&str>) -> (EventPipeline, CheckedPipeline) {
        let mut spec = json!({
            "source": {"url": source, "schema": [{"name": "id", "type": "int64"}]},
            "sink": {"url": sink},
        });
        if let Some(endpoint) = endpoint {
            spec["s3"] = json!({"endpoint": endpoint});
        }
        let pipeline: EventPipeline = serde_json::from_value(json!({
            "apiVersion": "eventpipe.dev/v1alpha1", "kind": "EventPipeline",
            "metadata": {"name": "p", "namespace": namespace}, "spec": spec,
        }))
        .unwrap();
        let checked = eventpipe_transformer::validate::check(&pipeline.spec.pipeline).unwrap();
        (pipeline, checked)
    }

    fn allowances() -> S3Allowances {
        S3Allowances::parse(
            &json!({
                "team-a": {"sources": ["s3://team-a-raw/*"], "sinks": ["s3://team-a-lake/*"], "endpoints": ["https://minio.data:9000/"]},
                "*": {"endpoints": ["http://127.0.0.1:9000"]},
            })
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn locations_inside_the_namespaces_globs_pass() {
        let (p, checked) = pipeline("team-a", "s3://team-a-raw/events/", "s3://team-a-lake/settings/", Some("HTTPS://Minio.data:9000"));
        assert_eq!(allowances().admit(&p, &checked), Ok(()));
    }

    #[test]
    fn another_teams_bucket_is_refused_naming_the_field_and_the_chart_value() {
        let (p, checked) = pipeline("team-a", "s3://team-b-raw/events/", "s3://team-a-lake/settings/", None);
        let error = allowances().admit(&p, &checked).unwrap_err();
        assert!(error.starts_with("source.url \"s3://team-b-raw/events/\" is not allowed in namespace team-a"), "{error}");
        assert!(error.contains("s3Allowances.\"team-a\".sources"), "{error}");
        let (p, checked) = pipeline("team-a", "s3://team-a-raw/events/", "s3://team-a-raw-but-not/x/", None);
        assert!(allowances().admit(&p, &checked).unwrap_err().contains("sink.url"));
        // Without a list of their own, rejected rows may go where sinks may.
        let (p, checked) = pipeline("team-a", "s3://team-a-raw/events/", "s3://team-a-lake/settings/", None);
        let mut elsewhere = p.clone();
        elsewhere.spec.pipeline.bad_records.url = Some("s3://team-b-lake/rows/".into());
        let elsewhere_checked = eventpipe_transformer::validate::check(&elsewhere.spec.pipeline).unwrap();
        assert_eq!(allowances().admit(&p, &checked), Ok(()));
        assert!(allowances().admit(&elsewhere, &elsewhere_checked).unwrap_err().contains("s3Allowances.\"team-a\".rejected"));
        // A list for them is checked like the others.
        let strict = S3Allowances::parse(&json!({"team-a": {"rejected": ["s3://team-a-lake/_rejected/*"]}}).to_string()).unwrap();
        let (p, checked) = pipeline("team-a", "s3://team-a-raw/events/", "s3://team-a-lake/settings/", None);
        assert!(strict.admit(&p, &checked).unwrap_err().contains("badRecords.url"));
    }

    #[test]
    fn endpoints_are_refused_unless_listed_exactly_and_plain_http_only_as_such() {
        let allowances = allowances();
        for endpoint in ["http://169.254.169.254", "http://minio.data:9000", "https://minio.data:9001", "https://minio.data:9000.evil.com"] {
            let (p, checked) = pipeline("team-a", "s3://team-a-raw/e/", "s3://team-a-lake/s/", Some(endpoint));
            let error = allowances.admit(&p, &checked).unwrap_err();
            assert!(error.contains("s3Allowances.\"team-a\".endpoints"), "{endpoint}: {error}");
        }
        // Another namespace falls back to the `*` entry: any location, its endpoints.
        let (p, checked) = pipeline("team-c", "s3://anything/e/", "s3://else/s/", Some("http://127.0.0.1:9000/"));
        assert_eq!(allowances.admit(&p, &checked), Ok(()));
        let (p, checked) = pipeline("team-c", "s3://anything/e/", "s3://else/s/", Some("https://minio.data:9000"));
        assert!(allowances.admit(&p, &checked).unwrap_err().contains("s3Allowances.\"*\".endpoints"));
    }

    #[test]
    fn without_any_entry_only_aws_endpoints_are_allowed() {
        let none = S3Allowances::default();
        let (p, checked) = pipeline("x", "s3://a/e/", "s3://b/s/", None);
        assert_eq!(none.admit(&p, &checked), Ok(()));
        let (p, checked) = pipeline("x", "s3://a/e/", "s3://b/s/", Some("http://localstack:4566"));
        assert!(none.admit(&p, &checked).is_err());
    }

    #[test]
    fn unknown_fields_and_bad_globs_are_refused_at_start_up() {
        assert!(S3Allowances::parse(r#"{"team-a": {"source": ["s3://a/*"]}}"#).unwrap_err().contains("unknown field"));
        assert!(S3Allowances::parse(r#"{"team-a": {"sources": ["s3://a/[*"]}}"#).unwrap_err().contains("team-a.sources"));
    }
}
