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
        let unknown = unknown_fields(&value);
        if !unknown.is_empty() {
            bail!(
                "{}: document {} has fields an EventPipeline does not have: {} (check their spelling; `kubectl explain eventpipelines.spec` lists the fields)",
                path.display(),
                index + 1,
                unknown.join(", ")
            );
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

/// The paths of the fields of a manifest that the CRD's schema does not know, as the API server's
/// strict field validation (`kubectl apply --validate=strict`) names them: `spec.sink.format`.
fn unknown_fields(manifest: &serde_yaml::Value) -> Vec<String> {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(EventPipeline::crd()).expect("the CRD serialises");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let manifest = serde_json::to_value(manifest).unwrap_or_default();
    let mut unknown = Vec::new();
    for part in ["spec", "status"] {
        if let Some(value) = manifest.get(part) {
            collect_unknown(part, value, &schema["properties"][part], &mut unknown);
        }
    }
    unknown
}

fn collect_unknown(path: &str, value: &serde_json::Value, schema: &serde_json::Value, unknown: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&serde_json::Value::Bool(true)) {
        return;
    }
    match value {
        serde_json::Value::Object(fields) => {
            for (name, field) in fields {
                let known = schema["properties"].get(name).or_else(|| schema.get("additionalProperties").filter(|s| s.is_object()));
                match known {
                    Some(field_schema) => collect_unknown(&format!("{path}.{name}"), field, field_schema, unknown),
                    None if schema.get("properties").is_some() => unknown.push(format!("{path}.{name}")),
                    None => {}
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                collect_unknown(&format!("{path}[{index}]"), item, &schema["items"], unknown);
            }
        }
        _ => {}
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
            // Fields the CRD does not have are named, not dropped.
            (PIPELINE.replace("sink: {url: s3://out/}", "sink: {url: s3://out/, formats: delta, compresion: zstd}"), "spec.sink.compresion, spec.sink.formats"),
            (PIPELINE.replace("source: {url: s3://in/}", "source: {url: s3://in/, schema: [{name: id, type: int64, nullable: false, unti: seconds}]}"), "spec.source.schema[0].unti"),
            (format!("{PIPELINE}  execution: {{nodeSelector: {{any-key: x}}, resourcez: {{}}}}\n"), "spec.execution.resourcez"),
        ];
        for (text, expected) in cases {
            let message = format!("{:#}", load(write(&text).path()).unwrap_err());
            assert!(message.contains(expected), "{expected}: {message}");
        }
    }
}
