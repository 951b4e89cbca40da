//! The pod settings an installation enforces on every Job (chart value `jobDefaults.enforced`):
//! where the pods run (node selector, tolerations, priority class) and what they carry
//! (annotations, labels). A pipeline may not change an enforced value, and may add its own only
//! from the lists in `pipelinesMayAdd`; a pipeline that tries is refused, naming the field and
//! the chart value, rather than silently overridden.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use serde::Deserialize;

use crate::pod_settings::PodSettings;

/// The chart value refusals name.
const CHART_VALUE: &str = "jobDefaults.enforced";

/// The chart value `jobDefaults`: defaults for what pipelines leave out, and what they may not
/// change.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobDefaults {
    /// Pod settings for the fields a pipeline leaves out.
    #[serde(flatten)]
    pub defaults: PodSettings,
    /// Pod settings every Job gets whatever its pipeline says.
    #[serde(default)]
    pub enforced: EnforcedPodSettings,
}

/// Pod settings every Job gets.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnforcedPodSettings {
    /// Node labels every pod must match; a pipeline may not set these keys to other values.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations every pod has, besides those a pipeline adds.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// The PriorityClass of every pod; a pipeline may not name another.
    #[serde(default)]
    pub priority_class_name: Option<String>,
    /// Annotations every pod has; a pipeline may not set these keys to other values.
    #[serde(default)]
    pub pod_annotations: BTreeMap<String, String>,
    /// Labels every pod has; a pipeline may not set these keys to other values.
    #[serde(default)]
    pub pod_labels: BTreeMap<String, String>,
    /// What a pipeline may add of its own; a list left out allows anything, `[]` nothing.
    #[serde(default)]
    pub pipelines_may_add: Additions,
}

/// What a pipeline may add beyond the enforced settings. Keys are matched exactly, or as a
/// prefix when they end with `/` (`example.com/` admits `example.com/team`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Additions {
    /// Tolerations a pipeline may add, matched exactly.
    #[serde(default)]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node selector keys a pipeline may set.
    #[serde(default)]
    pub node_selector_keys: Option<Vec<String>>,
    /// Pod annotation keys a pipeline may set.
    #[serde(default)]
    pub pod_annotation_keys: Option<Vec<String>>,
    /// Pod label keys a pipeline may set.
    #[serde(default)]
    pub pod_label_keys: Option<Vec<String>>,
}

impl EnforcedPodSettings {
    /// Refuses a pipeline's own settings where they change an enforced value or add something
    /// outside `pipelinesMayAdd`, naming the field.
    pub fn admit(&self, pipeline: &PodSettings) -> Result<(), String> {
        if let (Some(enforced), Some(chosen)) = (&self.priority_class_name, &pipeline.priority_class_name)
            && enforced != chosen
        {
            return Err(format!(
                "execution.priorityClassName {chosen:?} is not allowed here: the installation enforces {enforced:?} \
                 (chart value {CHART_VALUE}.priorityClassName)"
            ));
        }
        let maps = [
            ("nodeSelector", &pipeline.node_selector, &self.node_selector, &self.pipelines_may_add.node_selector_keys, "nodeSelectorKeys"),
            ("podAnnotations", &pipeline.pod_annotations, &self.pod_annotations, &self.pipelines_may_add.pod_annotation_keys, "podAnnotationKeys"),
            ("podLabels", &pipeline.pod_labels, &self.pod_labels, &self.pipelines_may_add.pod_label_keys, "podLabelKeys"),
        ];
        for (field, chosen, enforced, may_add, list) in maps {
            for (key, value) in chosen.iter().flatten() {
                match enforced.get(key) {
                    Some(required) if required != value => {
                        return Err(format!(
                            "execution.{field}.{key} {value:?} is not allowed here: the installation enforces {required:?} \
                             (chart value {CHART_VALUE}.{field})"
                        ));
                    }
                    Some(_) => {}
                    None if may_add.as_ref().is_some_and(|keys| !keys.iter().any(|allowed| key_matches(key, allowed))) => {
                        return Err(format!(
                            "execution.{field}.{key} is not allowed here: pipelines may add only the keys {:?} \
                             (chart value {CHART_VALUE}.pipelinesMayAdd.{list})",
                            may_add.as_deref().unwrap_or_default()
                        ));
                    }
                    None => {}
                }
            }
        }
        if let Some(allowed) = &self.pipelines_may_add.tolerations {
            for toleration in pipeline.tolerations.iter().flatten() {
                if !self.tolerations.contains(toleration) && !allowed.contains(toleration) {
                    return Err(format!(
                        "execution.tolerations {} is not allowed here: pipelines may add only the tolerations of the \
                         chart value {CHART_VALUE}.pipelinesMayAdd.tolerations",
                        serde_json::to_string(toleration).expect("tolerations serialise")
                    ));
                }
            }
        }
        Ok(())
    }

    /// `settings` with the enforced values put in: maps extended (enforced keys win), tolerations
    /// added, the priority class replaced.
    pub fn apply(&self, mut settings: PodSettings) -> PodSettings {
        fn extend(map: Option<BTreeMap<String, String>>, enforced: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
            if enforced.is_empty() {
                return map;
            }
            let mut map = map.unwrap_or_default();
            map.extend(enforced.iter().map(|(k, v)| (k.clone(), v.clone())));
            Some(map)
        }
        settings.node_selector = extend(settings.node_selector, &self.node_selector);
        settings.pod_labels = extend(settings.pod_labels, &self.pod_labels);
        if !self.pod_annotations.is_empty() {
            settings.pod_annotations = extend(Some(settings.pod_annotations()), &self.pod_annotations);
        }
        if !self.tolerations.is_empty() {
            let mut tolerations = settings.tolerations.unwrap_or_default();
            tolerations.extend(self.tolerations.iter().filter(|t| !tolerations.contains(t)).cloned().collect::<Vec<_>>());
            settings.tolerations = Some(tolerations);
        }
        if let Some(class) = &self.priority_class_name {
            settings.priority_class_name = Some(class.clone());
        }
        settings
    }
}

/// Whether a key is the allowed one, or lies under it when it ends with `/`.
fn key_matches(key: &str, allowed: &str) -> bool {
    key == allowed || (allowed.ends_with('/') && key.starts_with(allowed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enforced() -> EnforcedPodSettings {
        serde_json::from_value(json!({
            "nodeSelector": {"pool": "batch"},
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "batch-low",
            "podAnnotations": {"iam.amazonaws.com/role": ""},
            "podLabels": {"team": "data"},
            "pipelinesMayAdd": {
                "tolerations": [{"key": "spot", "operator": "Exists"}],
                "nodeSelectorKeys": ["topology.kubernetes.io/zone"],
                "podAnnotationKeys": ["example.com/"],
            },
        }))
        .unwrap()
    }

    fn settings(value: serde_json::Value) -> PodSettings {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_pipeline_within_the_lists_gets_the_enforced_values_added() {
        let enforced = enforced();
        let pipeline = settings(json!({
            "nodeSelector": {"topology.kubernetes.io/zone": "eu-west-1a", "pool": "batch"},
            "tolerations": [{"key": "spot", "operator": "Exists"}],
            "podAnnotations": {"example.com/owner": "a"},
            "podLabels": {"anything": "goes"},
        }));
        assert_eq!(enforced.admit(&pipeline), Ok(()));
        let applied = enforced.apply(pipeline);
        assert_eq!(applied.node_selector.unwrap()["pool"], "batch");
        assert_eq!(applied.tolerations.unwrap().len(), 2);
        assert_eq!(applied.priority_class_name.as_deref(), Some("batch-low"));
        assert_eq!(applied.pod_labels.unwrap()["team"], "data");
        let annotations = applied.pod_annotations.unwrap();
        assert_eq!((annotations["example.com/owner"].as_str(), annotations["iam.amazonaws.com/role"].as_str()), ("a", ""));
    }

    #[test]
    fn enforced_annotations_keep_the_built_in_ones_when_a_pipeline_sets_none() {
        let applied = enforced().apply(PodSettings::default());
        assert_eq!(applied.pod_annotations.unwrap().get("karpenter.sh/do-not-disrupt").map(String::as_str), Some("true"));
    }

    #[test]
    fn changing_an_enforced_value_or_adding_outside_the_lists_is_refused() {
        let enforced = enforced();
        let refused = [
            (json!({"priorityClassName": "system-cluster-critical"}), "execution.priorityClassName"),
            (json!({"nodeSelector": {"pool": "gpu"}}), "execution.nodeSelector.pool"),
            (json!({"nodeSelector": {"kubernetes.io/hostname": "node-1"}}), "pipelinesMayAdd.nodeSelectorKeys"),
            (json!({"tolerations": [{"operator": "Exists"}]}), "pipelinesMayAdd.tolerations"),
            (json!({"podAnnotations": {"iam.amazonaws.com/role": "team-b"}}), "execution.podAnnotations.iam.amazonaws.com/role"),
            (json!({"podAnnotations": {"example.org/x": "1"}}), "pipelinesMayAdd.podAnnotationKeys"),
            (json!({"podLabels": {"team": "other"}}), "execution.podLabels.team"),
        ];
        for (pipeline, named) in refused {
            let error = enforced.admit(&settings(pipeline.clone())).unwrap_err();
            assert!(error.contains(named), "{pipeline}: {error}");
            assert!(error.contains(CHART_VALUE), "{pipeline}: {error}");
        }
    }

    #[test]
    fn job_defaults_read_the_defaults_beside_the_enforced_part() {
        let defaults: JobDefaults = serde_json::from_value(json!({
            "priorityClassName": "batch", "enforced": {"podLabels": {"team": "data"}},
        }))
        .unwrap();
        assert_eq!(defaults.defaults.priority_class_name.as_deref(), Some("batch"));
        assert_eq!(defaults.enforced.pod_labels["team"], "data");
        assert!(serde_json::from_value::<JobDefaults>(json!({"enforced": {"podLabel": {}}})).is_err(), "typos are refused");
    }
}
