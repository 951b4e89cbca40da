//! How the transformer pods are placed, pulled and sized: the part of a pipeline's `execution`
//! that a platform team also sets once for every pipeline (the chart's `jobDefaults`). A
//! pipeline's value wins field by field; what neither sets gets a built-in default, so a Job is
//! never BestEffort and its scratch volume never fills the node's disk.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, LocalObjectReference, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Requests and limits when neither a pipeline nor the installation gives any.
const DEFAULT_CPU_REQUEST: &str = "1";
const DEFAULT_MEMORY: &str = "2Gi";
/// The scratch volume's size when neither a pipeline nor the installation gives one.
const DEFAULT_SCRATCH_SIZE: &str = "10Gi";
/// The pod annotations when neither a pipeline nor the installation gives any.
const DEFAULT_POD_ANNOTATIONS: [(&str, &str); 1] = [("karpenter.sh/do-not-disrupt", "true")];

/// Pod settings of the transformer Jobs. Each field left out is taken from the defaults the
/// operator was installed with (chart value `jobDefaults`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// CPU, memory and ephemeral storage of the transformer container. With a memory limit, the
    /// query spills to disk beyond three quarters of it. When no requests and no limits are given
    /// anywhere: requests of 1 CPU and 2Gi of memory, and a 2Gi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,
    /// The service account the Jobs run as, e.g. one with an IAM role (IRSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
    /// Secrets in the pipeline's namespace for pulling the transformer image from a private
    /// registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// When the transformer image is pulled; Kubernetes' default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Node labels the Jobs' pods must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the Jobs' pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node and pod affinity of the Jobs' pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// The PriorityClass of the Jobs' pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
    /// Annotations of the Jobs' pods. When absent, `karpenter.sh/do-not-disrupt: "true"`, so that
    /// Karpenter does not consolidate a node under a running transformer; `{}` sets none. An
    /// eviction or drain never uses up an attempt either way: the Job starts a new pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// Labels of the Jobs' pods, besides the operator's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Size of the scratch volume the query spills to and bad rows are sorted in: the `emptyDir`'s
    /// `sizeLimit`, also requested as ephemeral storage (default 10Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_size: Option<Quantity>,
}

/// When the kubelet pulls an image.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum PullPolicy {
    /// Every time a pod starts.
    Always,
    /// Only when the node does not have it.
    IfNotPresent,
    /// Never: the image must be on the node.
    Never,
}

/// Compute resources of the transformer container.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct ContainerResources {
    /// What the container is guaranteed, e.g. `{cpu: "2", memory: 4Gi}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
    /// What it may use at most; above the memory limit the kernel kills it (OOMKilled).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
}

impl PodSettings {
    /// These settings, with `defaults` filling every field left out.
    pub fn or(&self, defaults: &PodSettings) -> PodSettings {
        fn either<T: Clone>(chosen: &Option<T>, default: &Option<T>) -> Option<T> {
            chosen.as_ref().or(default.as_ref()).cloned()
        }
        PodSettings {
            resources: either(&self.resources, &defaults.resources),
            service_account_name: either(&self.service_account_name, &defaults.service_account_name),
            image_pull_secrets: either(&self.image_pull_secrets, &defaults.image_pull_secrets),
            image_pull_policy: either(&self.image_pull_policy, &defaults.image_pull_policy),
            node_selector: either(&self.node_selector, &defaults.node_selector),
            tolerations: either(&self.tolerations, &defaults.tolerations),
            affinity: either(&self.affinity, &defaults.affinity),
            priority_class_name: either(&self.priority_class_name, &defaults.priority_class_name),
            pod_annotations: either(&self.pod_annotations, &defaults.pod_annotations),
            pod_labels: either(&self.pod_labels, &defaults.pod_labels),
            scratch_size: either(&self.scratch_size, &defaults.scratch_size),
        }
    }

    /// The pods' annotations: the ones given (`{}` included), or the built-in ones.
    pub fn pod_annotations(&self) -> BTreeMap<String, String> {
        match &self.pod_annotations {
            Some(chosen) => chosen.clone(),
            None => DEFAULT_POD_ANNOTATIONS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    /// The scratch volume's size.
    pub fn scratch_size(&self) -> Quantity {
        self.scratch_size.clone().unwrap_or_else(|| Quantity(DEFAULT_SCRATCH_SIZE.to_string()))
    }

    /// The container's resources: the ones given, or the built-in ones when none are, with the
    /// scratch volume requested as ephemeral storage unless a request for it is given.
    pub fn container_resources(&self) -> ResourceRequirements {
        let given = self.resources.clone().filter(|r| !r.requests.is_empty() || !r.limits.is_empty());
        let mut resources = given.unwrap_or_else(|| ContainerResources {
            requests: BTreeMap::from([
                ("cpu".to_string(), Quantity(DEFAULT_CPU_REQUEST.to_string())),
                ("memory".to_string(), Quantity(DEFAULT_MEMORY.to_string())),
            ]),
            limits: BTreeMap::from([("memory".to_string(), Quantity(DEFAULT_MEMORY.to_string()))]),
        });
        resources.requests.entry("ephemeral-storage".to_string()).or_insert_with(|| self.scratch_size());
        ResourceRequirements {
            requests: Some(resources.requests),
            limits: (!resources.limits.is_empty()).then_some(resources.limits),
            ..ResourceRequirements::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantity(text: &str) -> Quantity {
        Quantity(text.to_string())
    }

    #[test]
    fn a_pipelines_settings_win_field_by_field() {
        let defaults = PodSettings {
            priority_class_name: Some("batch".into()),
            node_selector: Some(BTreeMap::from([("pool".into(), "spot".into())])),
            pod_annotations: Some(BTreeMap::new()),
            ..PodSettings::default()
        };
        let pipeline = PodSettings {
            node_selector: Some(BTreeMap::from([("pool".into(), "on-demand".into())])),
            image_pull_policy: Some(PullPolicy::Always),
            ..PodSettings::default()
        };
        let merged = pipeline.or(&defaults);
        assert_eq!(merged.node_selector.unwrap()["pool"], "on-demand");
        assert_eq!(merged.priority_class_name.as_deref(), Some("batch"));
        assert_eq!(merged.image_pull_policy, Some(PullPolicy::Always));
        assert_eq!(merged.pod_annotations, Some(BTreeMap::new()), "an empty map set on purpose is kept");
        assert_eq!(merged.affinity, None);
    }

    #[test]
    fn a_job_is_never_best_effort_and_requests_its_scratch_space() {
        let built_in = PodSettings::default().container_resources();
        let requests = built_in.requests.unwrap();
        assert_eq!((&requests["cpu"], &requests["memory"], &requests["ephemeral-storage"]), (&quantity("1"), &quantity("2Gi"), &quantity("10Gi")));
        assert_eq!(built_in.limits.unwrap()["memory"], quantity("2Gi"));

        let given = PodSettings {
            resources: Some(ContainerResources { limits: BTreeMap::from([("memory".into(), quantity("8Gi"))]), ..ContainerResources::default() }),
            scratch_size: Some(quantity("50Gi")),
            ..PodSettings::default()
        };
        let resources = given.container_resources();
        assert_eq!(resources.limits.unwrap()["memory"], quantity("8Gi"));
        assert_eq!(resources.requests.unwrap(), BTreeMap::from([("ephemeral-storage".into(), quantity("50Gi"))]));
    }
}
