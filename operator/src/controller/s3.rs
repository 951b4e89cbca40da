//! Opening a pipeline's S3 locations (source and sink) with the pipeline's identity (see
//! [`identity`](super::identity)). An S3 client is made per bucket, S3 settings and identity,
//! and shared by every pipeline with the same ones, each location a view of it with its own
//! prefix: two hundred pipelines over one bucket hold one client, not four hundred. A
//! pipeline's identity (its Secret or ServiceAccount) is looked up again every few minutes, and at
//! once after a failed listing, so that a rotated key or a changed role is taken up; expiring
//! credentials are renewed shortly before they expire.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eventpipe_transformer::store::{Location, Opener, Retrying, Store};
use kube::{Client, ResourceExt};
use object_store::path::Path;

use crate::crd::EventPipeline;

use super::identity::{self, Exchanges, PipelineIdentity};
use super::observe::Blocked;
use super::policy::JobPolicy;

/// How long an opened location's identity is trusted before it is looked up again.
const IDENTITY_REREAD: Duration = Duration::from_secs(300);
/// The ServiceAccount of Jobs whose pipeline and installation name none.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The S3 clients, and which one each pipeline's locations use.
#[derive(Default)]
pub struct Clients {
    exchanges: Exchanges,
    /// Names the ServiceAccount each pipeline's Jobs run as.
    policy: JobPolicy,
    /// By (pipeline UID, location URL).
    opened: Mutex<HashMap<(String, String), Opened>>,
    /// A store of each shared client, by [`ClientKey`].
    clients: Mutex<HashMap<ClientKey, Store>>,
}

/// What makes an S3 client: the S3 settings, the identity (with its namespace), and the bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientKey {
    settings: String,
    identity: (String, String),
    bucket: String,
}

/// A location of a pipeline as opened: its client, identity, and when that was looked up.
#[derive(Clone)]
struct Opened {
    generation: Option<i64>,
    client: ClientKey,
    identity: PipelineIdentity,
    read_at: Instant,
    store: Store,
}

impl Clients {
    /// Clients that take identities through `exchanges`, for Jobs that `policy` decides.
    pub fn new(exchanges: Exchanges, policy: JobPolicy) -> Self {
        Self { exchanges, policy, ..Self::default() }
    }

    /// Drops what a pipeline opened, so that its identity is looked up again; a client no
    /// pipeline uses any more is closed.
    pub fn forget(&self, uid: &str) {
        let mut opened = self.opened.lock().expect("not poisoned");
        opened.retain(|(owner, _), _| owner != uid);
        self.clients.lock().expect("not poisoned").retain(|key, _| opened.values().any(|o| o.client == *key));
    }

    /// The identity a pipeline's S3 requests and Jobs use: the one its locations were opened
    /// with recently, or looked up now.
    pub async fn identity(&self, client: &Client, pipeline: &EventPipeline) -> Result<PipelineIdentity, Blocked> {
        let uid = pipeline.uid().unwrap_or_default();
        let kept = self
            .opened
            .lock()
            .expect("not poisoned")
            .iter()
            .find(|((owner, _), opened)| *owner == uid && self.fresh(opened, pipeline))
            .map(|(_, opened)| opened.identity.clone());
        match kept {
            Some(identity) => Ok(identity),
            None => self.look_up(client, pipeline).await,
        }
    }

    /// A location of a pipeline: the one opened before while its generation is the same and its
    /// identity was looked up recently; otherwise the identity is looked up and the shared client
    /// for it taken (or made).
    pub async fn open(&self, client: &Client, pipeline: &EventPipeline, location: &Location) -> Result<Store, Blocked> {
        let key = (pipeline.uid().unwrap_or_default(), location.url());
        let kept = self.opened.lock().expect("not poisoned").get(&key).filter(|kept| self.fresh(kept, pipeline)).cloned();
        if let Some(kept) = kept {
            return Ok(kept.store);
        }
        let identity = self.look_up(client, pipeline).await?;
        let s3 = pipeline.spec.pipeline.s3.as_ref();
        let Location::S3 { bucket, .. } = location else {
            return Err(Blocked::InvalidSpec(format!("{} is not an s3:// URL", location.url())));
        };
        let client_key = ClientKey {
            settings: serde_json::to_string(&s3).expect("settings serialise"),
            identity: (pipeline.namespace().unwrap_or_default(), identity.key()),
            bucket: bucket.clone(),
        };
        let shared = self.clients.lock().expect("not poisoned").get(&client_key).cloned();
        let store = match shared {
            Some(shared) => within(&shared, location)?,
            None => {
                let mut opener = Opener::new(s3);
                if let Some(credentials) = self.exchanges.provider(client, pipeline, &identity) {
                    opener = opener.with_credentials(credentials);
                }
                let store = opener
                    // The next poll lists again: a failing listing is reported, not waited out.
                    .open(location, Retrying::Briefly)
                    .await
                    .map_err(|e| Blocked::SourceUnavailable(format!("opening {}: {}", location.url(), describe(pipeline, e))))?;
                self.clients.lock().expect("not poisoned").insert(client_key.clone(), store.clone());
                store
            }
        };
        let opened = Opened { generation: pipeline.metadata.generation, client: client_key, identity, read_at: Instant::now(), store: store.clone() };
        let mut all = self.opened.lock().expect("not poisoned");
        all.insert(key, opened);
        // A rotated Secret or a changed setting leaves a client behind; it goes with its last user.
        self.clients.lock().expect("not poisoned").retain(|key, _| all.values().any(|o| o.client == *key));
        Ok(store)
    }

    fn fresh(&self, opened: &Opened, pipeline: &EventPipeline) -> bool {
        opened.generation == pipeline.metadata.generation && opened.read_at.elapsed() < IDENTITY_REREAD
    }

    async fn look_up(&self, client: &Client, pipeline: &EventPipeline) -> Result<PipelineIdentity, Blocked> {
        let pod = self.policy.pod(&pipeline.spec.execution);
        let service_account = pod.service_account_name.as_deref().unwrap_or(DEFAULT_SERVICE_ACCOUNT);
        identity::resolve(client, self.exchanges.settings(), pipeline, service_account).await
    }

    /// The installation's identity settings.
    pub fn exchanges(&self) -> &Exchanges {
        &self.exchanges
    }
}

/// `location` as a view of a client opened for another location of the same bucket.
fn within(shared: &Store, location: &Location) -> Result<Store, Blocked> {
    let Location::S3 { prefix, .. } = location else { unreachable!("only S3 locations share clients") };
    let prefix = Path::parse(prefix).map_err(|e| Blocked::InvalidSpec(format!("{}: {e}", location.url())))?;
    Ok(Store { prefix, location: location.clone(), ..shared.clone() })
}

/// The text of an S3 error for a pipeline's status. The response body of a pipeline's own
/// endpoint (`s3.endpoint`) is withheld, so that the status cannot serve to read what some host
/// answers to a signed request; its status line and S3 error code are kept.
pub fn describe(pipeline: &EventPipeline, error: impl Display) -> String {
    let text = error.to_string();
    if pipeline.spec.pipeline.s3.as_ref().and_then(|s3| s3.endpoint.as_ref()).is_none() {
        return text;
    }
    without_response_body(&text)
}

/// `text` cut where an HTTP response body starts (after `status NNN Reason: `, or at the first
/// markup), with the S3 error code of an XML body kept.
fn without_response_body(text: &str) -> String {
    let status_line_end = text.find("status ").and_then(|at| text[at..].find(": ").map(|end| at + end));
    let markup = text.find(['<', '{']);
    let cut = match (status_line_end, markup) {
        (Some(end), Some(markup)) => end.min(markup),
        (Some(end), None) => end,
        (None, Some(markup)) => markup,
        (None, None) => return text.to_string(),
    };
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code)
        .filter(|code| !code.is_empty() && code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
    let kept = text[..cut].trim_end_matches([' ', ':']);
    match code {
        Some(code) => format!("{kept} (S3 error {code}; the response body is withheld for a custom endpoint)"),
        None => format!("{kept} (the response body is withheld for a custom endpoint)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_endpoints_response_body_is_withheld_but_its_s3_code_kept() {
        let error = "Generic S3 error: Error performing list request: Client error with status 403 Forbidden: \
                     <?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>secret-bucket-layout</Message></Error>";
        let described = without_response_body(error);
        assert_eq!(
            described,
            "Generic S3 error: Error performing list request: Client error with status 403 Forbidden \
             (S3 error AccessDenied; the response body is withheld for a custom endpoint)"
        );
        let metadata = "Client error with status 200 OK: ami-id\nhostname\niam/security-credentials/node-role";
        assert!(!without_response_body(metadata).contains("iam/"), "{}", without_response_body(metadata));
        let html = "Error performing GET http://10.0.0.7/b?list-type=2: <html><body>admin console</body></html>";
        assert!(!without_response_body(html).contains("admin console"));
        assert_eq!(without_response_body("connection refused"), "connection refused");
    }
}
