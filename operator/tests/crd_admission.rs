//! The generated CRD at admission, on a real kube-apiserver: the shipped examples are accepted with
//! their defaults filled in, and bad specs are refused with a message naming the field.

use eventpipe_testkit::kube_env::KubeEnv;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

fn pipelines(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "eventpipe.dev".into(),
        version: "v1alpha1".into(),
        api_version: "eventpipe.dev/v1alpha1".into(),
        kind: "EventPipeline".into(),
        plural: "eventpipelines".into(),
    };
    Api::namespaced_with(client, namespace, &resource)
}

fn example(name: &str) -> DynamicObject {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn the_examples_are_accepted_with_defaults_filled_in() {
    let env = KubeEnv::get().await.unwrap();
    let api = pipelines(env.client().unwrap(), &env.namespace("examples").await.unwrap());
    let cluster_example = example("cluster/user-settings-localstack.yaml");
    let cluster_namespace = env.namespace("cluster-example").await.unwrap();
    pipelines(env.client().unwrap(), &cluster_namespace).create(&PostParams::default(), &cluster_example).await.unwrap();
    for name in ["user-settings.yaml", "user-events-parquet.yaml", "user-events-delta.yaml", "user-settings-event-time.yaml"] {
        let created = api.create(&PostParams::default(), &example(name)).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let spec = &created.data["spec"];
        assert_eq!(spec["source"]["layout"], "year={year}/month={month}/day={day}/", "{name}");
        assert_eq!(spec["source"]["csv"]["delimiter"], ",", "{name}");
        assert_eq!(spec["suspend"], false, "{name}");
        assert_eq!(spec["execution"]["maxAttempts"], 3, "{name}");
    }
    let cluster = pipelines(env.client().unwrap(), &cluster_namespace).get("user-settings").await.unwrap();
    assert_eq!(cluster.data["spec"]["s3"]["credentialsSecretRef"]["name"], "s3-credentials");
    assert_eq!(cluster.data["spec"]["schedule"]["pollIntervalSeconds"], 30);
    let conversion = api.get("user-events-parquet").await.unwrap();
    assert_eq!(conversion.data["spec"]["transform"]["sql"], "SELECT * FROM events");
    assert_eq!(conversion.data["spec"]["sink"]["compression"], "zstd");
    let delta = api.get("user-events-delta").await.unwrap();
    assert_eq!(delta.data["spec"]["sink"]["format"], "delta");
}

#[tokio::test]
async fn bad_specs_are_refused_naming_the_field() {
    let env = KubeEnv::get().await.unwrap();
    let api = pipelines(env.client().unwrap(), &env.namespace("refused").await.unwrap());
    let column = |extra: Value| {
        let mut column = json!({"name": "c", "type": "string"});
        column.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        column
    };
    let cases = [
        (json!({"source": {"layout": "year={year}/month={month}/"}}), "spec.source.layout"),
        (json!({"source": {"csv": {"delimiter": ";;"}}}), "spec.source.csv.delimiter"),
        (json!({"source": {"csv": {"compression": "zip"}}}), "spec.source.csv.compression"),
        (json!({"source": {"schema": [column(json!({"unit": "seconds"}))]}}), "unit and format apply to timestamp columns only"),
        (
            json!({"source": {"schema": [column(json!({"type": "timestamp", "unit": "seconds", "format": "%s"}))]}}),
            "either unit or format",
        ),
        (json!({"source": {"schema": [column(json!({"type": "uuid"}))]}}), "spec.source.schema[0].type"),
        (json!({"sink": {"compression": "lz4"}}), "spec.sink.compression"),
        (json!({"execution": {"maxConcurrentJobs": 0}}), "spec.execution.maxConcurrentJobs"),
        (json!({"execution": {"ttlSecondsAfterFinished": 0}}), "spec.execution.ttlSecondsAfterFinished"),
        (json!({"schedule": {"startDate": "yesterday"}}), "spec.schedule.startDate"),
        (json!({"schedule": {"startDate": "2026-02-30"}}), "schedule.startDate must be a real day"),
        (json!({"source": {"schema": [column(json!({})), column(json!({"type": "int64"}))]}}), "spec.source.schema[1]: Duplicate value"),
        (json!({"execution": {"imagePullPolicy": "Sometimes"}}), "spec.execution.imagePullPolicy"),
        (json!({"sink": {"format": "delta", "delta": {"retentionHours": 4_294_967_296u64}}}), "spec.sink.delta.retentionHours"),
        (json!({"execution": {"ttlSecondsAfterFinished": 4_294_967_296u64}}), "spec.execution.ttlSecondsAfterFinished"),
        (json!({"source": {"schema": [column(json!({"type": "timestamp"}))], "eventTime": {"column": "c", "lateness": "8d"}}}), "at most 7d"),
        (json!({"source": {"schema": [column(json!({"type": "timestamp"}))], "eventTime": {"column": "c", "lateness": "169h"}}}), "at most 7d"),
        (json!({"source": {"schema": [column(json!({"type": "timestamp"}))], "eventTime": {"column": "c", "lateness": "2 h"}}}), "spec.source.eventTime.lateness"),
    ];
    for (index, (change, expected)) in cases.into_iter().enumerate() {
        let mut object = example("user-events-parquet.yaml");
        object.metadata.name = Some(format!("bad-{index}"));
        merge(&mut object.data["spec"], &change);
        let error = api.create(&PostParams::default(), &object).await.expect_err(expected);
        let kube::Error::Api(status) = error else { panic!("{expected}: {error}") };
        assert_eq!(status.code, 422, "{expected}: {}", status.message);
        assert!(status.message.contains(expected), "{expected}: {}", status.message);
    }

    // Resource claims would make every Job creation fail (a Job's pods cannot claim resources
    // without a ResourceClaim the operator never makes): the CRD has no such field, so it is dropped.
    let mut object = example("user-events-parquet.yaml");
    object.metadata.name = Some("claims".into());
    merge(&mut object.data["spec"], &json!({"execution": {"resources": {"claims": [{"name": "gpu"}], "limits": {"memory": "1Gi"}}}}));
    let created = api.create(&PostParams::default(), &object).await.unwrap();
    assert_eq!(created.data["spec"]["execution"]["resources"], json!({"limits": {"memory": "1Gi"}}));
}

/// Merges `change` into `target`, object by object.
fn merge(target: &mut Value, change: &Value) {
    match (target, change) {
        (Value::Object(target), Value::Object(change)) => {
            for (key, value) in change {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (target, change) => *target = change.clone(),
    }
}
