//! Reading an `EventPipeline` manifest from a YAML file, as `kubectl apply -f` would take it.

use std::path::Path;

use anyhow::{Context, bail};
use kube::Resource;
use serde::Deserialize;

use crate::crd::EventPipeline;

/// Reads the one `EventPipeline` document of a (possibly multi-document) YAML file; documents of
/// other kinds, such as a Secret, are passed over.
pub fn load(path: &Path) -> anyhow::Result<EventPipeline> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut found = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .with_context(|| format!("{}: document {} is not valid YAML", path.display(), index + 1))?;
        let kind = value.get("kind").and_then(serde_yaml::Value::as_str);
        if kind != Some(EventPipeline::kind(&()).as_ref()) {
            continue;
        }
        let api_version = value.get("apiVersion").and_then(serde_yaml::Value::as_str).unwrap_or_default();
        let expected = EventPipeline::api_version(&());
        if api_version != expected {
            bail!("{}: apiVersion is {api_version:?}, expected {expected:?}", path.display());
        }
        let pipeline: EventPipeline = serde_yaml::from_value(value)
            .with_context(|| format!("{}: document {} is not a valid EventPipeline", path.display(), index + 1))?;
        found.push(pipeline);
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("{} holds no EventPipeline", path.display()),
        n => bail!("{} holds {n} EventPipelines; keep one per file", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    const PIPELINE: &str = "apiVersion: eventpipe.dev/v1alpha1\nkind: EventPipeline\nmetadata: {name: p}\nspec:\n  source: {url: s3://in/}\n  sink: {url: s3://out/}\n";

    #[test]
    fn picks_the_pipeline_among_other_documents() {
        let file = write(&format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\n---\n{PIPELINE}"));
        let pipeline = load(file.path()).unwrap();
        assert_eq!(pipeline.spec.pipeline.source.url, "s3://in/");
        assert_eq!(pipeline.spec.pipeline.transform.sql, "SELECT * FROM events");
        assert_eq!(pipeline.spec.pipeline.source.layout, "year={year}/month={month}/day={day}/");
    }

    #[test]
    fn wrong_documents_are_named() {
        let missing_sink = PIPELINE.replace("  sink: {url: s3://out/}\n", "");
        let cases = [
            (missing_sink, "not a valid EventPipeline"),
            (PIPELINE.replace("v1alpha1", "v9"), "apiVersion"),
            ("kind: Secret\n".to_string(), "holds no EventPipeline"),
            (format!("{PIPELINE}---\n{PIPELINE}"), "holds 2 EventPipelines"),
            (PIPELINE.replace("policy", "x").replace("source: {url: s3://in/}", "source: {url: s3://in/, csv: {compression: zip}}"), "not a valid"),
        ];
        for (text, expected) in cases {
            let message = format!("{:#}", load(write(&text).path()).unwrap_err());
            assert!(message.contains(expected), "{expected}: {message}");
        }
    }
}
