//! The transformer Job of one partition attempt: its deterministic name, the object the operator
//! creates, and how a listed Job is read back into what the planner needs.

use std::collections::BTreeMap;

use eventpipe_transformer::error::ExitClass;
use eventpipe_transformer::task::{EngineSettings, Task, VacuumTask};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
    PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, PodSecurityContext, PodSpec,
    PodTemplateSpec, ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::crd::EventPipeline;

use super::identity::JobWebIdentity;
use super::plan::{JobOutcome, Launch, ObservedJob, ObservedVacuum};
use super::policy::JobPolicy;

/// Label on every object the operator creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "eventpipe");
/// Label with the owning pipeline's UID; the operator finds a pipeline's Jobs by it.
pub const PIPELINE_UID_LABEL: &str = "eventpipe.dev/pipeline-uid";
/// Label with the owning pipeline's name, for people (`kubectl get jobs -l eventpipe.dev/pipeline=NAME`).
pub const PIPELINE_LABEL: &str = "eventpipe.dev/pipeline";
/// Label with the attempt number.
pub const ATTEMPT_LABEL: &str = "eventpipe.dev/attempt";
/// Label with the partition's launch number (see `PartitionStatus::launch`).
pub const LAUNCH_LABEL: &str = "eventpipe.dev/launch";
/// Label on Jobs that do other work than a partition's run, naming it.
pub const WORK_LABEL: &str = "eventpipe.dev/work";
/// The value of [`WORK_LABEL`] on a vacuum Job.
pub const VACUUM_WORK: &str = "vacuum";
/// Annotation with the partition (`year=YYYY/month=MM/day=DD`), which labels cannot hold.
pub const PARTITION_ANNOTATION: &str = "eventpipe.dev/partition";
/// Annotation with the full input fingerprint the operator saw at launch.
pub const FINGERPRINT_ANNOTATION: &str = "eventpipe.dev/fingerprint";
/// Annotation with the data-path spec hash.
pub const SPEC_HASH_ANNOTATION: &str = "eventpipe.dev/spec-hash";
/// Annotation with the transformer container's memory limit, which failure reports name (the
/// operator keeps Jobs without their pod template).
pub const MEMORY_LIMIT_ANNOTATION: &str = "eventpipe.dev/memory-limit";
/// The label the Job controller puts on a Job's pods, with the Job's UID.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The transformer container's name.
pub const CONTAINER: &str = "transformer";

/// Where IRSA's token is mounted, as the EKS webhook mounts it.
const WEB_IDENTITY_VOLUME: &str = "aws-iam-token";
const WEB_IDENTITY_DIR: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
const WEB_IDENTITY_TOKEN: &str = "token";
const WEB_IDENTITY_TOKEN_SECONDS: i64 = 86_400;

const MAX_NAME: usize = 63;
const SCRATCH: &str = "/scratch";


/// The Job for a launch: owned by the pipeline, labelled for lookup, hardened, with the task in
/// its environment and, for IRSA, the role the operator used. The task names the partition, never
/// its objects, so the Job's size does not grow with the partition.
pub fn build(pipeline: &EventPipeline, launch: &Launch, policy: &JobPolicy, web_identity: Option<&JobWebIdentity>) -> Job {
    let execution = &pipeline.spec.execution;
    let resources = policy.pod(execution).container_resources();
    let task = Task {
        partition: launch.partition,
        expected_fingerprint: Some(launch.fingerprint.clone()),
        pipeline: pipeline.spec.data_path(),
        engine: EngineSettings {
            target_partitions: None,
            memory_limit_mib: memory_limit_mib(&resources),
            scratch_dir: Some(SCRATCH.to_string()),
            timeout_seconds: Some(conversion_time_limit(execution.active_deadline_seconds)),
        },
        force: launch.force,
        full: false,
        compact: launch.compact,
        settled_before: launch.settled_before.map(|at| at.to_string()),
    };
    let work = Work {
        name: &launch.job,
        labels: BTreeMap::from([
            (ATTEMPT_LABEL.to_string(), launch.attempt.to_string()),
            (LAUNCH_LABEL.to_string(), launch.launch.to_string()),
        ]),
        annotations: BTreeMap::from([
            (PARTITION_ANNOTATION.to_string(), launch.partition.to_string()),
            (FINGERPRINT_ANNOTATION.to_string(), launch.fingerprint.clone()),
            (SPEC_HASH_ANNOTATION.to_string(), launch.spec_hash.clone()),
        ]),
        task: ("EVENTPIPE_TASK", serde_json::to_string(&task).expect("tasks serialise")),
    };
    transformer_job(pipeline, work, policy, web_identity)
}

/// The Job that vacuums the pipeline's Delta table (see `plan/vacuum.rs`), labelled
/// `eventpipe.dev/work: vacuum`; it runs as the pipeline's Jobs run.
pub fn build_vacuum(pipeline: &EventPipeline, name: &str, policy: &JobPolicy, web_identity: Option<&JobWebIdentity>) -> Job {
    let task = VacuumTask { pipeline: pipeline.spec.pipeline.clone() };
    let work = Work {
        name,
        labels: BTreeMap::from([(WORK_LABEL.to_string(), VACUUM_WORK.to_string())]),
        annotations: BTreeMap::new(),
        task: ("EVENTPIPE_VACUUM", serde_json::to_string(&task).expect("vacuum tasks serialise")),
    };
    transformer_job(pipeline, work, policy, web_identity)
}

/// What sets one transformer Job apart from another.
struct Work<'a> {
    name: &'a str,
    /// Labels besides those every Job of the pipeline has.
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// The environment variable that gives the transformer its task, and the task as JSON.
    task: (&'static str, String),
}

/// A transformer Job of the pipeline: owned by it, labelled for lookup, hardened, run with the
/// pipeline's pod settings and identity.
fn transformer_job(pipeline: &EventPipeline, work: Work<'_>, policy: &JobPolicy, web_identity: Option<&JobWebIdentity>) -> Job {
    let spec = &pipeline.spec;
    let execution = &spec.execution;
    let pod = policy.pod(execution);
    let resources = pod.container_resources();
    let name = pipeline.metadata.name.clone().unwrap_or_default();
    let uid = pipeline.metadata.uid.clone().unwrap_or_default();
    let mut labels = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        ("app.kubernetes.io/name".to_string(), "eventpipe-transformer".to_string()),
        (PIPELINE_UID_LABEL.to_string(), uid),
    ]);
    labels.extend(work.labels);
    if name.len() <= MAX_NAME {
        labels.insert(PIPELINE_LABEL.to_string(), name);
    }
    // The operator's labels win: it finds its pods by them.
    let mut pod_labels = pod.pod_labels.clone().unwrap_or_default();
    pod_labels.extend(labels.clone());
    let mut annotations = work.annotations;
    if let Some(limit) = resources.limits.as_ref().and_then(|limits| limits.get("memory")) {
        annotations.insert(MEMORY_LIMIT_ANNOTATION.to_string(), limit.0.clone());
    }
    let pod_annotations = pod.pod_annotations();
    let credentials = spec.pipeline.s3.as_ref().and_then(|s3| s3.credentials_secret_ref.as_ref());
    let mut env = vec![
        EnvVar { name: work.task.0.to_string(), value: Some(work.task.1), ..EnvVar::default() },
        EnvVar { name: "RUST_LOG".to_string(), value: Some("warn".to_string()), ..EnvVar::default() },
    ];
    let mut volume_mounts = vec![VolumeMount { name: "scratch".to_string(), mount_path: SCRATCH.to_string(), ..VolumeMount::default() }];
    let mut volumes = vec![Volume {
        name: "scratch".to_string(),
        empty_dir: Some(EmptyDirVolumeSource { size_limit: Some(pod.scratch_size()), ..EmptyDirVolumeSource::default() }),
        ..Volume::default()
    }];
    if let Some(web_identity) = web_identity {
        env.extend(web_identity_env(web_identity));
        volume_mounts.push(VolumeMount {
            name: WEB_IDENTITY_VOLUME.to_string(),
            mount_path: WEB_IDENTITY_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(web_identity_volume(web_identity));
    }
    let container = Container {
        name: CONTAINER.to_string(),
        image: Some(policy.image(execution)),
        image_pull_policy: pod.image_pull_policy.map(|policy| format!("{policy:?}")),
        command: Some(vec!["eventpipe-transformer".to_string()]),
        env: Some(env),
        env_from: credentials.map(|secret| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource { name: secret.name.clone(), optional: Some(false) }),
                ..EnvFromSource::default()
            }]
        }),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), ..Capabilities::default() }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Container::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(work.name.to_string()),
            namespace: pipeline.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            annotations: Some(annotations),
            owner_references: pipeline.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(execution.backoff_limit),
            // The pod may take startTimeoutSeconds to start; the transformer's own limit counts
            // from then.
            active_deadline_seconds: Some(execution.active_deadline_seconds.saturating_add(execution.start_timeout_seconds.into())),
            ttl_seconds_after_finished: Some(execution.ttl_seconds_after_finished),
            pod_failure_policy: Some(pod_failure_policy()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!pod_annotations.is_empty()).then_some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_string()),
                    service_account_name: pod.service_account_name.clone(),
                    automount_service_account_token: Some(false),
                    image_pull_secrets: pod.image_pull_secrets.clone().filter(|secrets| !secrets.is_empty()),
                    node_selector: pod.node_selector.clone().filter(|selector| !selector.is_empty()),
                    tolerations: pod.tolerations.clone().filter(|tolerations| !tolerations.is_empty()),
                    affinity: pod.affinity.clone(),
                    priority_class_name: pod.priority_class_name.clone(),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        fs_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_string(), ..SeccompProfile::default() }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// The IRSA environment, named as the EKS Pod Identity webhook names it.
fn web_identity_env(web_identity: &JobWebIdentity) -> Vec<EnvVar> {
    let var = |name: &str, value: &str| EnvVar { name: name.to_string(), value: Some(value.to_string()), ..EnvVar::default() };
    let mut env = vec![
        var("AWS_ROLE_ARN", &web_identity.role_arn),
        var("AWS_WEB_IDENTITY_TOKEN_FILE", &format!("{WEB_IDENTITY_DIR}/{WEB_IDENTITY_TOKEN}")),
        var("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
    ];
    if let Some(endpoint) = &web_identity.sts_endpoint {
        env.push(var("AWS_ENDPOINT_URL_STS", endpoint));
    }
    env
}

/// The ServiceAccount token for STS, renewed by the kubelet.
fn web_identity_volume(web_identity: &JobWebIdentity) -> Volume {
    Volume {
        name: WEB_IDENTITY_VOLUME.to_string(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(web_identity.audience.to_string()),
                    expiration_seconds: Some(WEB_IDENTITY_TOKEN_SECONDS),
                    path: WEB_IDENTITY_TOKEN.to_string(),
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// Disruptions (eviction, drain, preemption, a spot interruption: the pod gets the
/// `DisruptionTarget` condition) never count against the Job: it starts a new pod. A data error
/// or an unreadable task fails the Job at once, whatever `backoffLimit` says; transient errors are
/// retried by the operator with backoff.
fn pod_failure_policy() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![
            PodFailurePolicyRule {
                action: "Ignore".to_string(),
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".to_string(),
                    status: "True".to_string(),
                }]),
                on_exit_codes: None,
            },
            PodFailurePolicyRule {
                action: "FailJob".to_string(),
                on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                    container_name: Some(CONTAINER.to_string()),
                    operator: "In".to_string(),
                    values: vec![ExitClass::Data as i32, ExitClass::BadTask as i32],
                }),
                on_pod_conditions: None,
            },
        ],
    }
}

/// The transformer's own time limit: a little under the Job's deadline, so that a conversion that
/// runs too long ends with an error report (and nothing committed) before Kubernetes kills the pod.
fn conversion_time_limit(active_deadline_seconds: i64) -> u64 {
    let deadline = u64::try_from(active_deadline_seconds).unwrap_or(1).max(1);
    let margin = (deadline / 20).clamp(5, 120);
    deadline.saturating_sub(margin).max(1)
}

/// Three quarters of the container's memory limit, in MiB, for the query's memory pool; the rest
/// is for the process itself.
fn memory_limit_mib(resources: &ResourceRequirements) -> Option<u64> {
    let limit = resources.limits.as_ref()?.get("memory")?;
    quantity_bytes(limit).map(|bytes| (bytes / 4 * 3 / (1024 * 1024)).max(16))
}

/// The bytes of a memory quantity such as `2Gi`, `512M` or `1000000`.
fn quantity_bytes(quantity: &Quantity) -> Option<u64> {
    let text = quantity.0.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some((number * factor) as u64)
}

/// Reads a listed Job back: `None` for Jobs not made by this operator (no annotations). The
/// outcome of a finished Job is `Succeeded(None)` or the Kubernetes reason until its pods' report
/// is attached (see [`super::report`]).
pub fn observe(job: &Job) -> Option<ObservedJob> {
    let annotations = job.metadata.annotations.as_ref()?;
    let labels = job.metadata.labels.as_ref()?;
    let attempt = labels.get(ATTEMPT_LABEL)?.parse().ok()?;
    let outcome = outcome(job);
    Some(ObservedJob {
        name: job.metadata.name.clone()?,
        partition: annotations.get(PARTITION_ANNOTATION)?.clone(),
        fingerprint: annotations.get(FINGERPRINT_ANNOTATION)?.clone(),
        spec_hash: annotations.get(SPEC_HASH_ANNOTATION).cloned().unwrap_or_default(),
        attempt,
        // Jobs from before launch numbers carried the attempt where the launch is now.
        launch: labels.get(LAUNCH_LABEL).and_then(|launch| launch.parse().ok()).unwrap_or(attempt),
        outcome,
        stopping: job.metadata.deletion_timestamp.is_some(),
        waiting: None,
        disruptions: Vec::new(),
    })
}

/// Reads a listed vacuum Job back: `None` for any other Job. Like a partition's, a finished
/// one's outcome is the Kubernetes reason until its pods' report is attached.
pub fn observe_vacuum(job: &Job) -> Option<ObservedVacuum> {
    let labels = job.metadata.labels.as_ref()?;
    (labels.get(WORK_LABEL)? == VACUUM_WORK).then(|| ObservedVacuum { name: job.metadata.name.clone().unwrap_or_default(), outcome: outcome(job), vacuumed: None })
}

/// Whether and how a Job finished, as its conditions say.
fn outcome(job: &Job) -> JobOutcome {
    let condition = |kind: &str| {
        job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind && c.status == "True").cloned()
    };
    if condition("Complete").is_some() {
        JobOutcome::Succeeded(None)
    } else if let Some(failed) = condition("Failed") {
        let reason = failed.reason.unwrap_or_else(|| "Failed".to_string());
        let message = failed.message.unwrap_or_default();
        JobOutcome::Failed(format!("Job failed ({reason}) {message}").trim_end().to_string())
    } else {
        JobOutcome::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::naming::{job_name, version};
    use crate::crd::EventPipelineSpec;
    use eventpipe_transformer::layout::PartitionKey;
    use eventpipe_transformer::spec::{S3Settings, SecretReference};
    use crate::pod_settings::{ContainerResources, PodSettings};

    const UID: &str = "0b6c1f4e-0000-4000-8000-000000000001";
    const FINGERPRINT: &str = "9f86d081884c7d65";

    fn day(day: u8) -> PartitionKey {
        PartitionKey { year: 2026, month: 11, day, hour: None }
    }

    fn pipeline(name: &str) -> EventPipeline {
        let mut pipeline = EventPipeline::new(name, EventPipelineSpec::default());
        pipeline.metadata.namespace = Some("data".into());
        pipeline.metadata.uid = Some(UID.into());
        pipeline
    }

    fn policy() -> JobPolicy {
        JobPolicy { image: "eventpipe-transformer:1".into(), ..JobPolicy::default() }
    }

    /// The `attempt`-th launch of the 24th, its first for other inputs four launches before.
    fn launch(attempt: u32) -> Launch {
        Launch {
            job: job_name("settings", &day(24), &version(UID, FINGERPRINT, "spec"), attempt + 4),
            partition: day(24),
            fingerprint: FINGERPRINT.into(),
            spec_hash: "spec".into(),
            attempt,
            launch: attempt + 4,
            force: false,
            compact: false,
            settled_before: None,
        }
    }

    #[test]
    fn the_job_is_owned_labelled_hardened_and_carries_the_task() {
        let mut pipeline = pipeline("settings");
        pipeline.spec.pipeline.s3 = Some(S3Settings {
            credentials_secret_ref: Some(SecretReference { name: "s3-credentials".into() }),
            ..S3Settings::default()
        });
        pipeline.spec.execution.pod.resources = Some(ContainerResources {
            limits: BTreeMap::from([("memory".to_string(), Quantity("2Gi".into()))]),
            ..ContainerResources::default()
        });
        let job = build(&pipeline, &launch(2), &policy(), None);
        assert_eq!(job.metadata.name, Some(launch(2).job));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("EventPipeline", "settings", Some(true)));
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[PIPELINE_UID_LABEL], UID);
        assert_eq!((labels[ATTEMPT_LABEL].as_str(), labels[LAUNCH_LABEL].as_str()), ("2", "6"));
        let spec = job.spec.as_ref().unwrap();
        assert_eq!((spec.backoff_limit, spec.ttl_seconds_after_finished), (Some(0), Some(86400)));
        let rules = &spec.pod_failure_policy.as_ref().unwrap().rules;
        assert_eq!(rules[0].action, "Ignore");
        assert_eq!(rules[0].on_pod_conditions.as_ref().unwrap()[0].type_, "DisruptionTarget");
        assert_eq!((rules[1].action.as_str(), &rules[1].on_exit_codes.as_ref().unwrap().values), ("FailJob", &vec![2, 3]));
        let template = spec.template.metadata.as_ref().unwrap();
        assert_eq!(template.annotations.as_ref().unwrap()["karpenter.sh/do-not-disrupt"], "true");
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("eventpipe-transformer:1"));
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(
            (security.run_as_non_root, security.read_only_root_filesystem, security.allow_privilege_escalation),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!(container.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name, "s3-credentials");
        let task_json = container.env.as_ref().unwrap().iter().find(|e| e.name == "EVENTPIPE_TASK").unwrap();
        let task: Task = serde_json::from_str(task_json.value.as_deref().unwrap()).unwrap();
        assert_eq!((task.partition, task.expected_fingerprint.as_deref()), (day(24), Some(FINGERPRINT)));
        assert_eq!(job.metadata.annotations.as_ref().unwrap()[MEMORY_LIMIT_ANNOTATION], "2Gi");
        assert_eq!(task.engine.memory_limit_mib, Some(1536));
        assert_eq!(task.engine.scratch_dir.as_deref(), Some(SCRATCH));
        assert_eq!(task.engine.timeout_seconds, Some(3480), "the default deadline is 3600 s");
    }

    #[test]
    fn pod_annotations_replace_the_default() {
        let mut pipeline = pipeline("settings");
        pipeline.spec.execution.pod.pod_annotations = Some(BTreeMap::new());
        let job = build(&pipeline, &launch(1), &policy(), None);
        assert_eq!(job.spec.unwrap().template.metadata.unwrap().annotations, None);
    }

    #[test]
    fn the_installations_pod_settings_apply_where_the_pipeline_sets_none() {
        let mut pipeline = pipeline("settings");
        pipeline.spec.execution.pod.pod_labels = Some(BTreeMap::from([("team".into(), "data".into()), (ATTEMPT_LABEL.into(), "x".into())]));
        let defaults = PodSettings {
            priority_class_name: Some("batch-low".into()),
            image_pull_secrets: Some(vec![k8s_openapi::api::core::v1::LocalObjectReference { name: "registry".into() }]),
            image_pull_policy: Some(crate::pod_settings::PullPolicy::Always),
            pod_labels: Some(BTreeMap::from([("team".into(), "platform".into())])),
            scratch_size: Some(Quantity("40Gi".into())),
            ..PodSettings::default()
        };
        let job = build(&pipeline, &launch(3), &JobPolicy { pod_defaults: defaults, ..policy() }, None);
        let template = job.spec.unwrap().template;
        let labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!((labels["team"].as_str(), labels[ATTEMPT_LABEL].as_str()), ("data", "3"), "the pipeline's labels, the operator's last");
        let pod = template.spec.unwrap();
        assert_eq!(pod.priority_class_name.as_deref(), Some("batch-low"));
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "registry");
        assert_eq!(pod.containers[0].image_pull_policy.as_deref(), Some("Always"));
        let scratch = pod.volumes.unwrap()[0].empty_dir.clone().unwrap();
        assert_eq!(scratch.size_limit, Some(Quantity("40Gi".into())));
        let requests = pod.containers[0].resources.clone().unwrap().requests.unwrap();
        assert_eq!(requests["ephemeral-storage"], Quantity("40Gi".into()));
        assert_eq!(requests["memory"], Quantity("2Gi".into()), "never BestEffort");
    }

    /// A Firehose day holds thousands of objects; the Job names the partition, not its objects,
    /// so its size stays far below the 128 KiB a single environment string may have.
    #[test]
    fn the_jobs_size_does_not_depend_on_the_partitions_objects() {
        let mut pipeline = pipeline("settings");
        pipeline.spec.pipeline.transform.sql = format!("SELECT * FROM events WHERE name <> '{}'", "x".repeat(2000));
        let job = build(&pipeline, &launch(1), &policy(), None);
        let size = serde_json::to_vec(&job).unwrap().len();
        assert!(size < 8 * 1024, "{size} bytes");
    }

    #[test]
    fn a_built_job_reads_back_as_the_launch() {
        let job = build(&pipeline("settings"), &launch(1), &policy(), None);
        let observed = observe(&job).unwrap();
        assert_eq!(
            (observed.name, observed.partition.as_str(), observed.fingerprint.as_str(), observed.spec_hash.as_str()),
            (launch(1).job, "year=2026/month=11/day=24", FINGERPRINT, "spec")
        );
        assert_eq!((observed.attempt, observed.launch, observed.stopping), (1, 5, false));
        assert_eq!(observed.outcome, JobOutcome::Running);
        let mut before_launch_numbers = job;
        before_launch_numbers.metadata.labels.as_mut().unwrap().remove(LAUNCH_LABEL);
        assert_eq!(observe(&before_launch_numbers).unwrap().launch, 1, "the attempt stood where the launch is now");
    }

    /// The transformer's own limit counts from its pod's start; the Job's deadline counts from
    /// the Job's. A pod may take `startTimeoutSeconds` to start, so the Job's deadline leaves
    /// room for that, and the transformer still stops (reporting why) before Kubernetes kills it.
    #[test]
    fn a_slow_start_does_not_cut_the_run_short() {
        let mut pipeline = pipeline("settings");
        pipeline.spec.execution.active_deadline_seconds = 3600;
        pipeline.spec.execution.start_timeout_seconds = 300;
        let job = build(&pipeline, &launch(1), &policy(), None);
        assert_eq!(job.spec.as_ref().unwrap().active_deadline_seconds, Some(3900));
        let container = &job.spec.unwrap().template.spec.unwrap().containers[0];
        let task_json = container.env.as_ref().unwrap().iter().find(|e| e.name == "EVENTPIPE_TASK").unwrap();
        let task: Task = serde_json::from_str(task_json.value.as_deref().unwrap()).unwrap();
        assert_eq!(task.engine.timeout_seconds, Some(3480));
    }

    /// With IRSA the Job carries the role the operator used, as the EKS webhook would add it.
    #[test]
    fn an_irsa_job_gets_the_role_and_a_token_for_sts() {
        let identity = JobWebIdentity {
            role_arn: "arn:aws:iam::123456789012:role/team-a".into(),
            sts_endpoint: Some("https://sts.vpce.example".into()),
            audience: "sts.amazonaws.com",
        };
        let job = build(&pipeline("settings"), &launch(1), &policy(), Some(&identity));
        let pod = job.spec.unwrap().template.spec.unwrap();
        let env: BTreeMap<String, String> =
            pod.containers[0].env.clone().unwrap().into_iter().map(|e| (e.name, e.value.unwrap_or_default())).collect();
        assert_eq!(env["AWS_ROLE_ARN"], identity.role_arn);
        assert_eq!(env["AWS_WEB_IDENTITY_TOKEN_FILE"], "/var/run/secrets/eks.amazonaws.com/serviceaccount/token");
        assert_eq!(env["AWS_ENDPOINT_URL_STS"], "https://sts.vpce.example");
        let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "aws-iam-token").unwrap();
        let projection = volume.projected.unwrap().sources.unwrap()[0].service_account_token.clone().unwrap();
        assert_eq!(projection.audience.as_deref(), Some("sts.amazonaws.com"));
        let mount = pod.containers[0].volume_mounts.clone().unwrap().into_iter().find(|m| m.name == "aws-iam-token").unwrap();
        assert_eq!(mount.read_only, Some(true));
        let plain = build(&pipeline("settings"), &launch(1), &policy(), None).spec.unwrap().template.spec.unwrap();
        assert!(!plain.containers[0].env.clone().unwrap().iter().any(|e| e.name.starts_with("AWS_")));
    }

    #[test]
    fn the_conversion_ends_before_the_jobs_deadline() {
        let limits: Vec<u64> = [1, 10, 60, 600, 3600, 86400].into_iter().map(conversion_time_limit).collect();
        assert_eq!(limits, vec![1, 5, 55, 570, 3480, 86280]);
    }

    #[test]
    fn memory_quantities_parse() {
        let mib = |q: &str| quantity_bytes(&Quantity(q.into())).map(|b| b / (1024 * 1024));
        assert_eq!((mib("2Gi"), mib("512Mi"), mib("1G"), mib("1.5Gi"), mib("2x")), (Some(2048), Some(512), Some(953), Some(1536), None));
    }
}
