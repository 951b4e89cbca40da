//! An SQS-compatible server (moto's, see `scripts/sqs-server.sh`) shared by the tests of one test
//! binary, with a client to make queues, post notifications and count what is left on a queue.

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Result, anyhow};
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::kube_env::workspace_root;

/// A running SQS-compatible server.
pub struct SqsServer {
    endpoint: String,
}

static SHARED: OnceLock<Result<SqsServer, String>> = OnceLock::new();
static QUEUES: AtomicU32 = AtomicU32::new(0);

impl SqsServer {
    /// The server of this test binary, started on the first call.
    pub fn get() -> Result<&'static SqsServer> {
        SHARED
            .get_or_init(|| {
                let mut command = Command::new("bash");
                command.arg(workspace_root().join("scripts/sqs-server.sh")).arg("run");
                crate::supervisor::start_until_ready(command, "the SQS server (scripts/sqs-server.sh run; `scripts/sqs-server.sh install` first)")
                    .map(|endpoint| SqsServer { endpoint })
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow!("SQS test server unavailable: {e}"))
    }

    /// The endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client; the server takes any credentials.
    pub fn client(&self) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("eventpipe", "eventpipe-secret", None, None, "eventpipe-testkit"))
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    /// A new queue whose name starts with `prefix`, whose messages come again `visibility`
    /// seconds after a receive that did not delete them; returns its URL.
    pub async fn queue(&self, prefix: &str, visibility: u32) -> Result<String> {
        let name = format!("{prefix}-{}-{}", std::process::id(), QUEUES.fetch_add(1, Ordering::Relaxed));
        let created = self.client().create_queue().queue_name(name).attributes(QueueAttributeName::VisibilityTimeout, visibility.to_string()).send().await?;
        created.queue_url.ok_or_else(|| anyhow!("the server named no queue URL"))
    }

    /// Sends the S3 event notification of an object created in `bucket` under `key`, as S3 sends
    /// it (the key URL-encoded).
    pub async fn notify_created(&self, queue_url: &str, bucket: &str, key: &str) -> Result<()> {
        let encoded: String = key.split('/').map(|part| part.replace('=', "%3D").replace(' ', "+")).collect::<Vec<_>>().join("/");
        let body = serde_json::json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventName": "ObjectCreated:Put",
            "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": {"key": encoded, "size": 1}}
        }]});
        self.client().send_message().queue_url(queue_url).message_body(body.to_string()).send().await?;
        Ok(())
    }

    /// Messages on the queue, visible or in flight.
    pub async fn messages(&self, queue_url: &str) -> Result<u64> {
        let attributes = self
            .client()
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await?
            .attributes
            .unwrap_or_default();
        let count = |name: QueueAttributeName| attributes.get(&name).and_then(|value| value.parse::<u64>().ok()).unwrap_or(0);
        Ok(count(QueueAttributeName::ApproximateNumberOfMessages) + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }
}
