//! S3 event notifications of a pipeline's source (`source.notifications`): one task per pipeline
//! long-polls its SQS queue with the pipeline's AWS identity, keeps the source keys the messages
//! announce, and, `settleSeconds` after the first of a burst, asks for a reconcile of the
//! pipeline. That reconcile lists the prefixes holding those keys at once (see
//! [`listing`](super::listing)) and plans as usual; once its status is written, the messages are
//! deleted. A message whose reconcile fails is not deleted: SQS delivers it again after its
//! visibility timeout. Messages about anything else are deleted when read.

mod message;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use eventpipe_transformer::store::Location;
use eventpipe_transformer::validate::CheckedPipeline;
use k8s_openapi::jiff::Timestamp;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use crate::crd::EventPipeline;
use crate::metrics::{Metrics, NotificationLabels, NotificationOutcome};

use super::observe::Caches;
use message::Message;

/// Longest wait of one receive; SQS allows 20 s.
const LONG_POLL_SECONDS: i32 = 20;
/// Pause after a failed receive.
const RECEIVE_RETRY: Duration = Duration::from_secs(5);

/// Asks the controller to reconcile a pipeline.
pub type Trigger = mpsc::UnboundedSender<ObjectRef<PartialObjectMeta<EventPipeline>>>;

/// The pipelines' notification pollers, by pipeline UID.
pub struct Notifications {
    pollers: Mutex<HashMap<String, Poller>>,
    trigger: Trigger,
    metrics: Arc<Metrics>,
}

/// A pipeline's poller: what it was started for, what it received, its task.
struct Poller {
    started_for: String,
    client: aws_sdk_sqs::Client,
    queue_url: String,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a poller received since the last reconcile took it, and how the queue does.
#[derive(Default)]
struct Received {
    announced: Announced,
    /// A reconcile is asked for and has not taken what was received yet.
    triggered: bool,
    health: QueueHealth,
}

/// Source keys notifications announced (relative to the source URL) and the receipts of their
/// messages, to delete once their partitions' state is recorded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Announced {
    /// The keys.
    pub keys: BTreeSet<String>,
    receipts: Vec<String>,
}

/// How a pipeline's queue does, for its `Notifications` condition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueHealth {
    /// When the last message arrived.
    pub last_message: Option<Timestamp>,
    /// The last receive's error, until a receive succeeds.
    pub error: Option<String>,
}

impl Notifications {
    /// No pollers yet; reconciles are asked for through `trigger`.
    pub fn new(trigger: Trigger, metrics: Arc<Metrics>) -> Self {
        Self { pollers: Mutex::default(), trigger, metrics }
    }

    /// Starts the pipeline's poller, restarts it when its queue, identity or source changed, or
    /// stops it when the spec has no notifications.
    pub async fn ensure(&self, client: &Client, caches: &Caches, pipeline: &EventPipeline, checked: &CheckedPipeline) {
        let uid = pipeline.uid().unwrap_or_default();
        let Some(spec) = pipeline.spec.pipeline.source.notifications.as_ref() else {
            self.forget(&uid);
            return;
        };
        // The identity's failure shows on the listing that follows; the queue waits for it.
        let Ok(identity) = caches.s3.identity(client, pipeline).await else { return };
        let started_for = format!("{}|{}|{}|{}|{}", spec.sqs_queue_url, identity.key(), spec.settle_seconds, checked.source.url(), checked.layout.template());
        if self.pollers.lock().expect("not poisoned").get(&uid).is_some_and(|poller| poller.started_for == started_for) {
            return;
        }
        let credentials = caches.s3.exchanges().provider(client, pipeline, &identity);
        let region = pipeline.spec.pipeline.s3.as_ref().and_then(|s3| s3.region.clone());
        let sqs = sqs_client(&spec.sqs_queue_url, region, credentials).await;
        let received = Arc::new(Mutex::new(Received::default()));
        let polling = Polling {
            client: sqs.clone(),
            queue_url: spec.sqs_queue_url.clone(),
            source: checked.source.clone(),
            settle: Duration::from_secs(spec.settle_seconds.into()),
            received: Arc::clone(&received),
            trigger: self.trigger.clone(),
            pipeline: ObjectRef::new(&pipeline.name_any()).within(&pipeline.namespace().unwrap_or_default()),
            metrics: Arc::clone(&self.metrics),
            labels: (pipeline.namespace().unwrap_or_default(), pipeline.name_any()),
        };
        let task = tokio::spawn(polling.run());
        let poller = Poller { started_for, client: sqs, queue_url: spec.sqs_queue_url.clone(), received, task };
        self.pollers.lock().expect("not poisoned").insert(uid, poller);
    }

    /// Takes what the pipeline's notifications announced since the last reconcile.
    pub fn take(&self, uid: &str) -> Announced {
        let pollers = self.pollers.lock().expect("not poisoned");
        let Some(poller) = pollers.get(uid) else { return Announced::default() };
        let mut received = poller.received.lock().expect("not poisoned");
        received.triggered = false;
        std::mem::take(&mut received.announced)
    }

    /// Deletes the messages of what a reconcile took, once it recorded their partitions' state.
    pub fn acknowledge(&self, uid: &str, announced: Announced) {
        if announced.receipts.is_empty() {
            return;
        }
        let Some((client, queue_url)) = self.pollers.lock().expect("not poisoned").get(uid).map(|p| (p.client.clone(), p.queue_url.clone())) else {
            return;
        };
        tokio::spawn(async move { delete(&client, &queue_url, announced.receipts).await });
    }

    /// How the pipeline's queue does; `None` without notifications.
    pub fn health(&self, uid: &str) -> Option<QueueHealth> {
        let pollers = self.pollers.lock().expect("not poisoned");
        pollers.get(uid).map(|poller| poller.received.lock().expect("not poisoned").health.clone())
    }

    /// Stops the pipeline's poller.
    pub fn forget(&self, uid: &str) {
        self.pollers.lock().expect("not poisoned").remove(uid);
    }
}

/// One pipeline's long-poll loop and what it needs.
struct Polling {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    source: Location,
    settle: Duration,
    received: Arc<Mutex<Received>>,
    trigger: Trigger,
    pipeline: ObjectRef<PartialObjectMeta<EventPipeline>>,
    metrics: Arc<Metrics>,
    labels: (String, String),
}

impl Polling {
    async fn run(self) {
        loop {
            let received = self
                .client
                .receive_message()
                .queue_url(&self.queue_url)
                .wait_time_seconds(LONG_POLL_SECONDS)
                .max_number_of_messages(10)
                .send()
                .await;
            match received {
                Ok(output) => {
                    self.received.lock().expect("not poisoned").health.error = None;
                    self.handle(output.messages.unwrap_or_default()).await;
                }
                Err(error) => {
                    let error = aws_sdk_sqs::error::DisplayErrorContext(&error).to_string();
                    tracing::warn!(queue = self.queue_url, %error, "receiving notifications failed");
                    self.received.lock().expect("not poisoned").health.error = Some(error);
                    tokio::time::sleep(RECEIVE_RETRY).await;
                }
            }
        }
    }

    /// Keeps the source keys the messages announce and deletes the others; asks for a reconcile
    /// `settle` after the first message of a burst.
    async fn handle(&self, messages: Vec<aws_sdk_sqs::types::Message>) {
        if messages.is_empty() {
            return;
        }
        let mut ignored = Vec::new();
        let mut announced = Announced::default();
        for message in messages {
            let Some(receipt) = message.receipt_handle else { continue };
            let keys = match message::read(message.body.as_deref().unwrap_or_default()) {
                Ok(message) => self.source_keys(message),
                Err(problem) => {
                    tracing::warn!(queue = self.queue_url, problem, "a message on the notification queue is no S3 notification; deleted");
                    self.count(NotificationOutcome::Unreadable);
                    ignored.push(receipt);
                    continue;
                }
            };
            if keys.is_empty() {
                self.count(NotificationOutcome::Ignored);
                ignored.push(receipt);
            } else {
                self.count(NotificationOutcome::Partition);
                announced.keys.extend(keys);
                announced.receipts.push(receipt);
            }
        }
        delete(&self.client, &self.queue_url, ignored).await;
        let ask = {
            let mut received = self.received.lock().expect("not poisoned");
            received.health.last_message = Some(Timestamp::now());
            if announced.keys.is_empty() {
                return;
            }
            received.announced.keys.extend(announced.keys);
            received.announced.receipts.extend(announced.receipts);
            !std::mem::replace(&mut received.triggered, true)
        };
        if ask {
            let (trigger, pipeline, settle) = (self.trigger.clone(), self.pipeline.clone(), self.settle);
            tokio::spawn(async move {
                tokio::time::sleep(settle).await;
                let _ = trigger.send(pipeline);
            });
        }
    }

    /// The keys, relative to the source URL, of the source's objects a message names.
    fn source_keys(&self, message: Message) -> Vec<String> {
        let Location::S3 { bucket, prefix } = &self.source else { return Vec::new() };
        let Message::Objects(changes) = message else { return Vec::new() };
        changes
            .into_iter()
            .filter(|change| change.bucket == *bucket)
            .flat_map(|change| change.keys)
            .filter_map(|key| key.strip_prefix(prefix.as_str()).map(str::to_string))
            .collect()
    }

    fn count(&self, outcome: NotificationOutcome) {
        let (namespace, pipeline) = self.labels.clone();
        self.metrics.notifications.get_or_create(&NotificationLabels { namespace, pipeline, outcome }).inc();
    }
}

/// Deletes messages, ten at a time; a failure leaves them to come again.
async fn delete(client: &aws_sdk_sqs::Client, queue_url: &str, receipts: Vec<String>) {
    for (batch, chunk) in receipts.chunks(10).enumerate() {
        let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(index, receipt)| DeleteMessageBatchRequestEntry::builder().id(format!("{batch}-{index}")).receipt_handle(receipt).build().ok())
            .collect();
        if let Err(error) = client.delete_message_batch().queue_url(queue_url).set_entries(Some(entries)).send().await {
            tracing::warn!(queue = queue_url, error = %aws_sdk_sqs::error::DisplayErrorContext(&error), "deleting notifications failed; they come again");
        }
    }
}

/// An SQS client for the queue: AWS's endpoint for the queue's region when the URL is AWS's,
/// else the URL's own endpoint (an SQS-compatible server); with the pipeline's credentials, or
/// the operator's own.
async fn sqs_client(queue_url: &str, region: Option<String>, credentials: Option<SharedCredentialsProvider>) -> aws_sdk_sqs::Client {
    let parsed = url::Url::parse(queue_url).ok();
    let host = parsed.as_ref().and_then(|url| url.host_str()).unwrap_or_default().to_string();
    let aws_region = host.strip_prefix("sqs.").and_then(|rest| rest.strip_suffix(".amazonaws.com")).map(str::to_string);
    let region = aws_region.clone().or(region).unwrap_or_else(|| "us-east-1".to_string());
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(aws_config::Region::new(region));
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    if aws_region.is_none()
        && let Some(url) = &parsed
    {
        loader = loader.endpoint_url(url.origin().ascii_serialization());
    }
    aws_sdk_sqs::Client::new(&loader.load().await)
}
