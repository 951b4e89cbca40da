//! Who the operator is when it reads a pipeline's S3 locations. With `--s3-identity=pipeline`
//! it is the pipeline: the credentials Secret the pipeline names, or else the identity the
//! pipeline's Jobs get from their ServiceAccount — a token of that ServiceAccount (TokenRequest)
//! exchanged for the role in its `eks.amazonaws.com/role-arn` annotation (IRSA, STS
//! `AssumeRoleWithWebIdentity`) or for its EKS Pod Identity association (EKS Auth
//! `AssumeRoleForPodIdentity`). The operator's own role then needs no S3 access, and a pipeline
//! reaches exactly what its own Jobs may. With `--s3-identity=operator` the operator uses its
//! own AWS credentials for pipelines without a Secret, as single-team installations may prefer.

use std::fmt;
use std::sync::Arc;

use aws_credential_types::Credentials;
use aws_sdk_sts::primitives::DateTime;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider, error::CredentialsError};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::OnceCell;

use crate::crd::EventPipeline;

use super::observe::Blocked;

/// The ServiceAccount annotation naming the IAM role of IRSA.
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// The audience of tokens for STS (IRSA).
const STS_AUDIENCE: &str = "sts.amazonaws.com";
/// The audience of tokens for EKS Pod Identity.
const POD_IDENTITY_AUDIENCE: &str = "pods.eks.amazonaws.com";
/// Lifetime of a token the operator requests; exchanged at once, so the API server's minimum.
const TOKEN_SECONDS: i64 = 600;

/// Whose identity the operator uses for pipelines that name no credentials Secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IdentityMode {
    /// The pipeline's: its ServiceAccount's role, exchanged for a token of that ServiceAccount.
    #[default]
    Pipeline,
    /// The operator's own AWS credentials.
    Operator,
}

/// The installation's settings for pipeline identities.
#[derive(Clone, Debug, Default)]
pub struct IdentitySettings {
    /// Whose identity pipelines without a Secret use.
    pub mode: IdentityMode,
    /// STS endpoint for `AssumeRoleWithWebIdentity` (a VPC endpoint, or a test server); also
    /// given to IRSA Jobs as `AWS_ENDPOINT_URL_STS`. AWS's regional endpoint when absent.
    pub sts_endpoint: Option<String>,
    /// The EKS cluster's name, for Pod Identity; Pod Identity is not used without it.
    pub pod_identity_cluster: Option<String>,
}

/// The identity a pipeline's S3 requests are made with.
#[derive(Clone, Debug, PartialEq)]
pub enum PipelineIdentity {
    /// The operator's own AWS credentials (`--s3-identity=operator`).
    Operator,
    /// The keys in the pipeline's credentials Secret.
    Secret {
        /// The Secret's name and resource version.
        name: String,
        version: Option<String>,
        credentials: Credentials,
    },
    /// IRSA: the ServiceAccount's token exchanged with STS for its annotated role.
    WebIdentity { service_account: String, role_arn: String },
    /// EKS Pod Identity: the ServiceAccount's token exchanged with EKS Auth for its association's
    /// role.
    PodIdentity { service_account: String },
}

impl PipelineIdentity {
    /// Tells identities apart for sharing S3 clients: equal keys, equal credentials.
    pub fn key(&self) -> String {
        match self {
            Self::Operator => "operator".to_string(),
            Self::Secret { name, version, .. } => format!("secret/{name}/{}", version.as_deref().unwrap_or_default()),
            Self::WebIdentity { service_account, role_arn } => format!("irsa/{service_account}/{role_arn}"),
            Self::PodIdentity { service_account } => format!("pod-identity/{service_account}"),
        }
    }
}

/// What a Job needs, besides its ServiceAccount, to run with the role its operator used: the
/// settings the EKS Pod Identity webhook would add for IRSA, given by the operator itself so that
/// the Job's role is the one checked, with or without the webhook (which leaves a container that
/// has them alone).
#[derive(Clone, Debug, PartialEq)]
pub struct JobWebIdentity {
    /// The role to assume.
    pub role_arn: String,
    /// The STS endpoint, when not AWS's regional one.
    pub sts_endpoint: Option<String>,
    /// The audience of the projected token.
    pub audience: &'static str,
}

impl PipelineIdentity {
    /// The IRSA settings of the pipeline's Jobs; none for other identities (a Secret's keys come
    /// from the Secret, Pod Identity from the EKS webhook and agent).
    pub fn for_jobs(&self, settings: &IdentitySettings) -> Option<JobWebIdentity> {
        match self {
            Self::WebIdentity { role_arn, .. } => {
                Some(JobWebIdentity { role_arn: role_arn.clone(), sts_endpoint: settings.sts_endpoint.clone(), audience: STS_AUDIENCE })
            }
            _ => None,
        }
    }
}

/// Finds the identity of a pipeline whose Jobs run as `service_account`: its Secret when it names
/// one, else (in pipeline mode) its ServiceAccount's IRSA role or Pod Identity.
pub async fn resolve(
    client: &Client,
    settings: &IdentitySettings,
    pipeline: &EventPipeline,
    service_account: &str,
) -> Result<PipelineIdentity, Blocked> {
    let namespace = pipeline.namespace().unwrap_or_default();
    if let Some(reference) = pipeline.spec.pipeline.s3.as_ref().and_then(|s3| s3.credentials_secret_ref.as_ref()) {
        let secret = Api::<Secret>::namespaced(client.clone(), &namespace).get(&reference.name).await.map_err(|e| {
            Blocked::SourceUnavailable(format!("reading Secret {} (s3.credentialsSecretRef): {e}", reference.name))
        })?;
        return Ok(PipelineIdentity::Secret {
            name: secret.name_any(),
            version: secret.metadata.resource_version.clone(),
            credentials: credentials_from(&secret)?,
        });
    }
    if settings.mode == IdentityMode::Operator {
        return Ok(PipelineIdentity::Operator);
    }
    let account = Api::<ServiceAccount>::namespaced(client.clone(), &namespace).get(service_account).await.map_err(|e| {
        Blocked::SourceUnavailable(format!("reading ServiceAccount {service_account}, whose identity the pipeline's S3 requests use: {e}"))
    })?;
    if let Some(role_arn) = account.annotations().get(ROLE_ARN_ANNOTATION).filter(|arn| !arn.is_empty()) {
        return Ok(PipelineIdentity::WebIdentity { service_account: service_account.to_string(), role_arn: role_arn.clone() });
    }
    if settings.pod_identity_cluster.is_some() {
        return Ok(PipelineIdentity::PodIdentity { service_account: service_account.to_string() });
    }
    Err(Blocked::SourceUnavailable(format!(
        "the pipeline has no S3 identity: ServiceAccount {service_account} has no {ROLE_ARN_ANNOTATION} annotation (IRSA), \
         EKS Pod Identity is off (chart value s3Identity.podIdentityClusterName) and s3.credentialsSecretRef is not set"
    )))
}

/// Exchanges ServiceAccount tokens for AWS credentials: one STS and one EKS Auth client for the
/// whole operator, made when first needed.
#[derive(Clone, Default)]
pub struct Exchanges {
    settings: IdentitySettings,
    sts: Arc<OnceCell<aws_sdk_sts::Client>>,
    eks: Arc<OnceCell<aws_sdk_eksauth::Client>>,
}

impl Exchanges {
    /// Exchanges for these settings.
    pub fn new(settings: IdentitySettings) -> Self {
        Self { settings, ..Self::default() }
    }

    /// The installation's identity settings.
    pub fn settings(&self) -> &IdentitySettings {
        &self.settings
    }

    /// The credentials of an identity for `pipeline`, refreshed by the caller's cache when they
    /// near expiry; `None` for the operator's own.
    pub fn provider(&self, client: &Client, pipeline: &EventPipeline, identity: &PipelineIdentity) -> Option<SharedCredentialsProvider> {
        let namespace = pipeline.namespace().unwrap_or_default();
        let tokens = Api::<ServiceAccount>::namespaced(client.clone(), &namespace);
        let session_name = session_name(&namespace, &pipeline.name_any());
        let provider = match identity {
            PipelineIdentity::Operator => return None,
            PipelineIdentity::Secret { credentials, .. } => return Some(SharedCredentialsProvider::new(credentials.clone())),
            PipelineIdentity::WebIdentity { service_account, role_arn } => ServiceAccountCredentials {
                tokens,
                service_account: service_account.clone(),
                exchange: Exchange::WebIdentity { role_arn: role_arn.clone(), session_name },
                exchanges: self.clone(),
            },
            PipelineIdentity::PodIdentity { service_account } => ServiceAccountCredentials {
                tokens,
                service_account: service_account.clone(),
                exchange: Exchange::PodIdentity,
                exchanges: self.clone(),
            },
        };
        Some(SharedCredentialsProvider::new(provider))
    }

    /// STS `AssumeRoleWithWebIdentity` (an unsigned call: the token is the proof).
    pub async fn assume_role_with_web_identity(&self, role_arn: &str, session_name: &str, token: &str) -> Result<Credentials, String> {
        let sts = self
            .sts
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).no_credentials();
                if let Some(endpoint) = &self.settings.sts_endpoint {
                    loader = loader.endpoint_url(endpoint);
                }
                aws_sdk_sts::Client::new(&with_region(loader).await)
            })
            .await;
        let answer = sts
            .assume_role_with_web_identity()
            .role_arn(role_arn)
            .role_session_name(session_name)
            .web_identity_token(token)
            .send()
            .await
            .map_err(|e| format!("STS AssumeRoleWithWebIdentity for role {role_arn}: {}", service_error(&e)))?;
        let given = answer.credentials().ok_or("STS answered without credentials")?;
        Ok(credentials(given.access_key_id(), given.secret_access_key(), given.session_token(), given.expiration()))
    }

    /// EKS Auth `AssumeRoleForPodIdentity`, signed with the operator's own credentials (its role
    /// needs `eks-auth:AssumeRoleForPodIdentity`).
    pub async fn assume_role_for_pod_identity(&self, token: &str) -> Result<Credentials, String> {
        let cluster = self.settings.pod_identity_cluster.as_deref().ok_or("EKS Pod Identity is off")?;
        let eks = self.eks.get_or_init(|| async { aws_sdk_eksauth::Client::new(&with_region(aws_config::defaults(aws_config::BehaviorVersion::latest())).await) }).await;
        let answer = eks
            .assume_role_for_pod_identity()
            .cluster_name(cluster)
            .token(token)
            .send()
            .await
            .map_err(|e| format!("EKS Auth AssumeRoleForPodIdentity in cluster {cluster}: {}", service_error(&e)))?;
        let given = answer.credentials().ok_or("EKS Auth answered without credentials")?;
        Ok(credentials(given.access_key_id(), given.secret_access_key(), given.session_token(), given.expiration()))
    }
}

impl fmt::Debug for Exchanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchanges").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// The SDK configuration of the operator's region (`AWS_REGION` and the usual chain), or
/// `us-east-1`.
async fn with_region(loader: aws_config::ConfigLoader) -> aws_config::SdkConfig {
    let config = loader.load().await;
    if config.region().is_some() {
        return config;
    }
    config.into_builder().region(aws_config::Region::new("us-east-1")).build()
}

/// An AWS service error as code and message; the transport's own text otherwise.
fn service_error<E, R>(error: &aws_sdk_sts::error::SdkError<E, R>) -> String
where
    E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    match error.as_service_error() {
        Some(service) => format!("{}: {}", service.code().unwrap_or("error"), service.message().unwrap_or_default()),
        None => eventpipe_transformer::error::one_line(error),
    }
}

fn credentials(key: &str, secret: &str, token: &str, expiry: &DateTime) -> Credentials {
    let expiry = std::time::SystemTime::try_from(*expiry).ok();
    Credentials::new(key, secret, Some(token.to_string()), expiry, "eventpipe-service-account")
}

/// How a ServiceAccount token becomes credentials.
#[derive(Debug)]
enum Exchange {
    WebIdentity { role_arn: String, session_name: String },
    PodIdentity,
}

/// Credentials of a pipeline's ServiceAccount: a fresh token exchanged each time the cache asks.
#[derive(Debug)]
struct ServiceAccountCredentials {
    tokens: Api<ServiceAccount>,
    service_account: String,
    exchange: Exchange,
    exchanges: Exchanges,
}

impl ServiceAccountCredentials {
    async fn fetch(&self) -> Result<Credentials, String> {
        let audience = match self.exchange {
            Exchange::WebIdentity { .. } => STS_AUDIENCE,
            Exchange::PodIdentity => POD_IDENTITY_AUDIENCE,
        };
        let request = TokenRequest {
            spec: TokenRequestSpec { audiences: vec![audience.to_string()], expiration_seconds: Some(TOKEN_SECONDS), bound_object_ref: None },
            ..TokenRequest::default()
        };
        let token = self
            .tokens
            .create_token_request(&self.service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("requesting a token of ServiceAccount {}: {e}", self.service_account))?
            .status
            .map(|status| status.token)
            .ok_or_else(|| format!("the token request of ServiceAccount {} returned no token", self.service_account))?;
        match &self.exchange {
            Exchange::WebIdentity { role_arn, session_name } => self.exchanges.assume_role_with_web_identity(role_arn, session_name, &token).await,
            Exchange::PodIdentity => self.exchanges.assume_role_for_pod_identity(&token).await,
        }
    }
}

impl ProvideCredentials for ServiceAccountCredentials {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move { self.fetch().await.map_err(CredentialsError::provider_error) })
    }
}

/// A role session name that tells the pipeline in CloudTrail: `eventpipe.<namespace>.<name>`,
/// in STS's characters and length.
fn session_name(namespace: &str, name: &str) -> String {
    let name: String = format!("eventpipe.{namespace}.{name}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) { c } else { '-' })
        .collect();
    name.chars().take(64).collect()
}

/// Static AWS credentials from a Secret's `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
/// optional `AWS_SESSION_TOKEN`.
fn credentials_from(secret: &Secret) -> Result<Credentials, Blocked> {
    let data = secret.data.clone().unwrap_or_default();
    let value = |key: &str| data.get(key).map(|bytes| String::from_utf8_lossy(&bytes.0).trim().to_string());
    let required = |key: &str| {
        value(key).filter(|v| !v.is_empty()).ok_or_else(|| {
            Blocked::InvalidSpec(format!("Secret {} (s3.credentialsSecretRef) has no key {key}", secret.name_any()))
        })
    };
    Ok(Credentials::new(required("AWS_ACCESS_KEY_ID")?, required("AWS_SECRET_ACCESS_KEY")?, value("AWS_SESSION_TOKEN"), None, "eventpipe-secret"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    impl Exchanges {
        /// Exchanges whose STS and EKS Auth clients use `config` (an endpoint that answers
        /// with recorded responses).
        fn against(settings: IdentitySettings, config: &aws_config::SdkConfig) -> Self {
            Self {
                settings,
                sts: Arc::new(OnceCell::new_with(Some(aws_sdk_sts::Client::new(config)))),
                eks: Arc::new(OnceCell::new_with(Some(aws_sdk_eksauth::Client::new(config)))),
            }
        }
    }

    /// Answers one HTTP request with `body` and returns the request as received.
    async fn answer_once(listener: tokio::net::TcpListener, content_type: &'static str, body: &'static str) -> String {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let read = stream.read(&mut buffer).await.unwrap();
            request.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&request).to_string();
            if let Some((head, sent)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|n| n.trim().parse::<usize>().unwrap()))
                    .unwrap_or(0);
                if sent.len() >= length {
                    break;
                }
            }
        }
        let response = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        stream.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8(request).unwrap()
    }

    async fn recorded(content_type: &'static str, body: &'static str) -> (aws_config::SdkConfig, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .endpoint_url(endpoint)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new("AKIDOPERATOR", "operator-secret", None, None, "test")))
            .build();
        (config, tokio::spawn(answer_once(listener, content_type, body)))
    }

    /// A response of STS `AssumeRoleWithWebIdentity`, as AWS documents it.
    const STS_ANSWER: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:team-a:eventpipe-jobs</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::111122223333:assumed-role/team-a/eventpipe.team-a.settings</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:eventpipe.team-a.settings</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>IQoJb3JpZ2luX2VjEXAMPLE</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY</SecretAccessKey>
      <Expiration>2026-12-05T04:00:00Z</Expiration>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;

    /// A response of EKS Auth `AssumeRoleForPodIdentity`, as AWS documents it.
    const EKS_AUTH_ANSWER: &str = r#"{"subject": {"namespace": "team-a", "serviceAccount": "eventpipe-jobs"},
  "audience": "pods.eks.amazonaws.com",
  "podIdentityAssociation": {"associationArn": "arn:aws:eks:eu-west-1:111122223333:podidentityassociation/data-platform/a-abcdefghijklmnop1", "associationId": "a-abcdefghijklmnop1"},
  "assumedRoleUser": {"arn": "arn:aws:sts::111122223333:assumed-role/team-a/eks-data-platf-eventpipe-a1b2c3", "assumeRoleId": "AROACLKWSDQRAOEXAMPLE:eks-data-platf-eventpipe-a1b2c3"},
  "credentials": {"sessionToken": "IQoJb3JpZ2luX2VjEXAMPLE", "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "accessKeyId": "ASIAIOSFODNN7EXAMPLE", "expiration": 1796443200}}"#;

    #[tokio::test]
    async fn a_web_identity_token_is_exchanged_unsigned_for_the_roles_credentials() {
        let (config, server) = recorded("text/xml", STS_ANSWER).await;
        let exchanges = Exchanges::against(IdentitySettings::default(), &config);
        let role = "arn:aws:iam::111122223333:role/team-a";
        let credentials = exchanges.assume_role_with_web_identity(role, "eventpipe.team-a.settings", "header.payload.signature").await.unwrap();
        assert_eq!((credentials.access_key_id(), credentials.session_token()), ("ASIAIOSFODNN7EXAMPLE", Some("IQoJb3JpZ2luX2VjEXAMPLE")));
        assert_eq!(credentials.expiry(), Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_443_200)));
        let request = server.await.unwrap();
        assert!(request.starts_with("POST / "), "{request}");
        assert!(request.contains("Action=AssumeRoleWithWebIdentity"), "{request}");
        assert!(request.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2Fteam-a"), "{request}");
        assert!(request.contains("WebIdentityToken=header.payload.signature"), "{request}");
        assert!(!request.to_ascii_lowercase().contains("authorization:"), "the token is the proof; the operator's keys are not sent: {request}");
    }

    #[tokio::test]
    async fn a_pod_identity_token_is_exchanged_with_eks_auth_signed_by_the_operator() {
        let (config, server) = recorded("application/json", EKS_AUTH_ANSWER).await;
        let settings = IdentitySettings { pod_identity_cluster: Some("data-platform".into()), ..IdentitySettings::default() };
        let credentials = Exchanges::against(settings, &config).assume_role_for_pod_identity("header.payload.signature").await.unwrap();
        assert_eq!((credentials.access_key_id(), credentials.secret_access_key()), ("ASIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"));
        assert_eq!(credentials.expiry(), Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_443_200)));
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /clusters/data-platform/assume-role-for-pod-identity "), "{request}");
        assert!(request.contains(r#""token":"header.payload.signature""#), "{request}");
        assert!(request.to_ascii_lowercase().contains("authorization: aws4-hmac-sha256 credential=akidoperator/"), "{request}");
    }

    #[test]
    fn session_names_keep_to_stss_characters_and_length() {
        assert_eq!(session_name("team-a", "settings"), "eventpipe.team-a.settings");
        let long = session_name("a-very-long-namespace-name-for-a-team", "a-pipeline-with-an-even-longer-name-than-that");
        assert_eq!(long.len(), 64);
    }
}
