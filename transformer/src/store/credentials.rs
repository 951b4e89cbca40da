//! Bridges the AWS SDK's standard credential chain (environment, profile, web identity, container
//! and instance credentials) into `object_store`, which by itself knows only part of that chain.
//! Credentials are cached until five minutes before they expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::CredentialProvider;
use object_store::aws::AwsCredential;
use tokio::sync::Mutex;

const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// An `object_store` credential provider backed by the AWS SDK's credential chain.
#[derive(Debug)]
pub struct AwsChainCredentials {
    chain: SharedCredentialsProvider,
    cached: Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl AwsChainCredentials {
    /// Wraps a credential chain, typically `SdkConfig::credentials_provider()`.
    pub fn new(chain: SharedCredentialsProvider) -> Self {
        Self { chain, cached: Mutex::new(None) }
    }
}

#[async_trait::async_trait]
impl CredentialProvider for AwsChainCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((credential, expiry)) = cached.as_ref() {
            let fresh = expiry.is_none_or(|at| SystemTime::now() + REFRESH_BEFORE_EXPIRY < at);
            if fresh {
                return Ok(Arc::clone(credential));
            }
        }
        let provided = self.chain.provide_credentials().await.map_err(|e| object_store::Error::Generic {
            store: "S3",
            source: format!("no usable AWS credentials: {}", crate::error::one_line(&e)).into(),
        })?;
        let credential = Arc::new(AwsCredential {
            key_id: provided.access_key_id().to_string(),
            secret_key: provided.secret_access_key().to_string(),
            token: provided.session_token().map(str::to_string),
        });
        *cached = Some((Arc::clone(&credential), provided.expiry()));
        Ok(credential)
    }
}
