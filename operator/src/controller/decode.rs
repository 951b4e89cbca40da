//! Reading a pipeline from the API server's JSON, one object at a time, so that an object this
//! version cannot read stops nothing but itself. A spec that does not decode (a value only a newer
//! version knows, after a rollback) leaves the pipeline unreadable and reported; a status that
//! does not decode is reported and rebuilt from the Jobs and the sink.

use kube::api::DynamicObject;

use crate::crd::{EventPipeline, EventPipelineSpec, EventPipelineStatus};

/// A pipeline as read, and what of its status could not be read.
#[derive(Debug)]
pub struct Decoded {
    /// The pipeline; without its status when that did not decode.
    pub pipeline: EventPipeline,
    /// Why the status was dropped, naming the field.
    pub unreadable_status: Option<String>,
}

/// Decodes a pipeline; an error names the spec field that does not decode.
pub fn pipeline(object: &DynamicObject) -> Result<Decoded, String> {
    let spec: EventPipelineSpec = field(object.data.get("spec").unwrap_or(&serde_json::Value::Null), "spec")?;
    let (status, unreadable_status) = match object.data.get("status") {
        None | Some(serde_json::Value::Null) => (None, None),
        Some(status) => match field::<EventPipelineStatus>(status, "status") {
            Ok(status) => (Some(status), None),
            Err(error) => (None, Some(error)),
        },
    };
    Ok(Decoded { pipeline: EventPipeline { metadata: object.metadata.clone(), spec, status }, unreadable_status })
}

/// Decodes one top-level field, naming the path of what does not decode: `status.partitions[0].attempts: …`.
fn field<T: serde::de::DeserializeOwned>(value: &serde_json::Value, name: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let at = if path == "." { name.to_string() } else { format!("{name}.{path}") };
        format!("{at}: {}", error.inner())
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(body: serde_json::Value) -> DynamicObject {
        serde_json::from_value(body).unwrap()
    }

    fn spec() -> serde_json::Value {
        json!({"source": {"url": "s3://b/events/"}, "sink": {"url": "s3://b/out/"}})
    }

    #[test]
    fn an_unreadable_status_is_dropped_and_named() {
        let status = json!({"partitions": [{"partition": "year=2026/month=11/day=24", "fingerprint": "f", "state": "Succeeded", "attempts": 99_999_999_999u64}]});
        let decoded = pipeline(&object(json!({"metadata": {"name": "p"}, "spec": spec(), "status": status}))).unwrap();
        assert_eq!(decoded.pipeline.status, None);
        let problem = decoded.unreadable_status.unwrap();
        assert!(problem.starts_with("status.partitions[0].attempts: invalid value"), "{problem}");
    }

    #[test]
    fn an_unknown_state_is_read() {
        let status = json!({"partitions": [{"partition": "year=2026/month=11/day=24", "fingerprint": "f", "state": "Quarantined"}], "mode": "Streaming"});
        let decoded = pipeline(&object(json!({"metadata": {"name": "p"}, "spec": spec(), "status": status}))).unwrap();
        assert_eq!(decoded.unreadable_status, None);
        let status = decoded.pipeline.status.unwrap();
        assert_eq!((status.partitions[0].state, status.mode), (crate::crd::PartitionState::Unknown, Some(crate::crd::ProcessingMode::Unknown)));
    }

    #[test]
    fn an_unreadable_spec_is_an_error_naming_the_field() {
        let mut spec = spec();
        spec["execution"] = json!({"maxAttempts": "three"});
        let error = pipeline(&object(json!({"metadata": {"name": "p"}, "spec": spec}))).unwrap_err();
        assert!(error.starts_with("spec.execution.maxAttempts: invalid type"), "{error}");
    }
}
