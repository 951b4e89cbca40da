//! Opening a pipeline's S3 locations (source and sink). An S3 client is made per bucket, S3
//! settings and credentials, and shared by every pipeline with the same ones, each location a
//! view of it with its own prefix: two hundred pipelines over one bucket hold one client, not
//! four hundred. A pipeline's credentials Secret is read again every few minutes, and at once
//! after a failed listing, so that a rotated key is taken up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eventpipe_transformer::storage::{Location, Opener, Retrying, Store};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use object_store::path::Path;

use crate::crd::EventPipeline;

use super::observe::Blocked;

/// How long an opened location's credentials Secret is trusted before it is read again.
const CREDENTIALS_REREAD: Duration = Duration::from_secs(300);

/// The S3 clients, and which one each pipeline's locations use.
#[derive(Default)]
pub struct Clients {
    /// By (pipeline UID, location URL).
    opened: Mutex<HashMap<(String, String), Opened>>,
    /// A store of each shared client, by [`ClientKey`].
    clients: Mutex<HashMap<ClientKey, Store>>,
}

/// What makes an S3 client: the S3 settings, the credentials Secret (namespace, name and
/// version; none for the operator's own identity), and the bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientKey {
    settings: String,
    secret: Option<(String, String, Option<String>)>,
    bucket: String,
}

/// A location of a pipeline as opened: its client and when its Secret was read.
#[derive(Clone)]
struct Opened {
    generation: Option<i64>,
    client: ClientKey,
    read_at: Instant,
    store: Store,
}

impl Clients {
    /// Drops what a pipeline opened, so that its credentials Secret is read again; a client no
    /// pipeline uses any more is closed.
    pub fn forget(&self, uid: &str) {
        let mut opened = self.opened.lock().expect("not poisoned");
        opened.retain(|(owner, _), _| owner != uid);
        self.clients.lock().expect("not poisoned").retain(|key, _| opened.values().any(|o| o.client == *key));
    }

    /// A location of a pipeline: the one opened before while its generation is the same and its
    /// Secret was read recently; otherwise the Secret is read and the shared client for it taken
    /// (or made).
    pub async fn open(&self, client: &Client, pipeline: &EventPipeline, location: &Location) -> Result<Store, Blocked> {
        let key = (pipeline.uid().unwrap_or_default(), location.url());
        let generation = pipeline.metadata.generation;
        let kept = self.opened.lock().expect("not poisoned").get(&key).filter(|kept| kept.generation == generation).cloned();
        if let Some(kept) = kept.filter(|kept| kept.read_at.elapsed() < CREDENTIALS_REREAD) {
            return Ok(kept.store);
        }
        let s3 = pipeline.spec.pipeline.s3.as_ref();
        let namespace = pipeline.namespace().unwrap_or_default();
        let secret = match s3.and_then(|s3| s3.credentials_secret_ref.as_ref()) {
            Some(reference) => {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
                let secret = secrets.get(&reference.name).await.map_err(|e| {
                    Blocked::SourceUnavailable(format!("reading Secret {} (s3.credentialsSecretRef): {e}", reference.name))
                })?;
                Some(secret)
            }
            None => None,
        };
        let Location::S3 { bucket, .. } = location else {
            return Err(Blocked::InvalidSpec(format!("{} is not an s3:// URL", location.url())));
        };
        let client_key = ClientKey {
            settings: serde_json::to_string(&s3).expect("settings serialise"),
            secret: secret.as_ref().map(|s| (namespace.clone(), s.name_any(), s.metadata.resource_version.clone())),
            bucket: bucket.clone(),
        };
        let shared = self.clients.lock().expect("not poisoned").get(&client_key).cloned();
        let store = match shared {
            Some(shared) => within(&shared, location)?,
            None => {
                let mut opener = Opener::new(s3);
                if let Some(secret) = &secret {
                    opener = opener.with_credentials(credentials_from(secret)?);
                }
                let store = opener
                    // The next poll lists again: a failing listing is reported, not waited out.
                    .open(location, Retrying::Briefly)
                    .await
                    .map_err(|e| Blocked::SourceUnavailable(format!("opening {}: {e}", location.url())))?;
                self.clients.lock().expect("not poisoned").insert(client_key.clone(), store.clone());
                store
            }
        };
        let opened = Opened { generation, client: client_key, read_at: Instant::now(), store: store.clone() };
        let mut all = self.opened.lock().expect("not poisoned");
        all.insert(key, opened);
        // A rotated Secret or a changed setting leaves a client behind; it goes with its last user.
        self.clients.lock().expect("not poisoned").retain(|key, _| all.values().any(|o| o.client == *key));
        Ok(store)
    }
}

/// `location` as a view of a client opened for another location of the same bucket.
fn within(shared: &Store, location: &Location) -> Result<Store, Blocked> {
    let Location::S3 { prefix, .. } = location else { unreachable!("only S3 locations share clients") };
    let prefix = Path::parse(prefix).map_err(|e| Blocked::InvalidSpec(format!("{}: {e}", location.url())))?;
    Ok(Store { prefix, location: location.clone(), ..shared.clone() })
}

/// Static AWS credentials from a Secret's `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
/// optional `AWS_SESSION_TOKEN`.
fn credentials_from(secret: &Secret) -> Result<aws_credential_types::Credentials, Blocked> {
    let data = secret.data.clone().unwrap_or_default();
    let value = |key: &str| data.get(key).map(|bytes| String::from_utf8_lossy(&bytes.0).trim().to_string());
    let required = |key: &str| {
        value(key).filter(|v| !v.is_empty()).ok_or_else(|| {
            Blocked::InvalidSpec(format!("Secret {} (s3.credentialsSecretRef) has no key {key}", secret.name_any()))
        })
    };
    Ok(aws_credential_types::Credentials::new(
        required("AWS_ACCESS_KEY_ID")?,
        required("AWS_SECRET_ACCESS_KEY")?,
        value("AWS_SESSION_TOKEN"),
        None,
        "eventpipe-secret",
    ))
}
