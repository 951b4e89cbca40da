//! The `EventPipeline` custom resource. Its spec embeds the transformer's data-path types, so the
//! same Rust types define the CRD schema, the local runner's manifest and the Job's task.

use eventpipe_transformer::spec::PipelineSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An EventPipeline turns every date partition of CSV files under `spec.source.url` into Parquet
/// under `spec.sink.url`, one Kubernetes Job per partition, exactly once per input version.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "eventpipe.dev",
    version = "v1alpha1",
    kind = "EventPipeline",
    plural = "eventpipelines",
    shortname = "evp",
    namespaced,
    doc = "An EventPipeline turns date partitions of CSV files in S3 into query-ready Parquet.",
    status = "EventPipelineStatus",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Last Done", type_ = "string", json_path = ".status.lastCompletedPartition"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pendingPartitions"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failedPartitions"),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspend", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.source.schema) || self.source.schema.all(c, c.type == 'timestamp' || (!has(c.unit) && !has(c.format)))"
).message("unit and format apply to timestamp columns only"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.source.schema) || self.source.schema.all(c, !(has(c.unit) && has(c.format)))"
).message("a timestamp column takes either unit or format, not both"))]
#[serde(rename_all = "camelCase")]
pub struct EventPipelineSpec {
    /// The data path: source, transform, sink, bad-record policy and S3 settings.
    #[serde(flatten)]
    pub pipeline: PipelineSpec,
    /// Stop launching Jobs for new partitions; Jobs already running finish.
    #[serde(default)]
    pub suspend: bool,
}

/// What the operator observed and did.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EventPipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The newest partition whose output is committed, `year=YYYY/month=MM/day=DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed_partition: Option<String>,
    /// Partitions found but not yet committed.
    #[serde(default)]
    pub pending_partitions: u32,
    /// Partitions that failed and will not be retried.
    #[serde(default)]
    pub failed_partitions: u32,
}

/// The CustomResourceDefinition as YAML, as `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&EventPipeline::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_directory_is_generated_from_these_types() {
        let committed = include_str!("../../crds/eventpipe.dev_eventpipelines.yaml");
        assert!(
            committed == crd_yaml().unwrap(),
            "crds/eventpipe.dev_eventpipelines.yaml is stale: run `cargo run --bin eventpipe -- crd > crds/eventpipe.dev_eventpipelines.yaml`"
        );
    }

    #[test]
    fn every_spec_field_is_documented() {
        let crd = serde_json::to_value(<EventPipeline as kube::CustomResourceExt>::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut undocumented = Vec::new();
        find_undocumented("spec", spec, &mut undocumented);
        assert!(undocumented.is_empty(), "fields without a description: {undocumented:?}");
    }

    fn find_undocumented(path: &str, schema: &serde_json::Value, undocumented: &mut Vec<String>) {
        if schema.get("description").is_none() {
            undocumented.push(path.to_string());
        }
        let children = schema["properties"].as_object().into_iter().flatten();
        for (name, child) in children {
            find_undocumented(&format!("{path}.{name}"), child, undocumented);
        }
        if let Some(items) = schema.get("items") {
            for (name, child) in items["properties"].as_object().into_iter().flatten() {
                find_undocumented(&format!("{path}[].{name}"), child, undocumented);
            }
        }
    }
}
