//! Object locations (`s3://bucket/prefix/` or a local directory) and the object stores behind them,
//! with the AWS credential chain, reads that resume where they stopped, and the discovery of a
//! source's partitions and objects. Local files and S3 go through the same `object_store`
//! interface, so every code path above this module is the same for both.

pub mod credentials;
pub mod discovery;
pub mod resuming;
#[cfg(test)]
pub(crate) mod test_store;

use std::path::{Component, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::SharedCredentialsProvider;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::{Path, PathPart};
use object_store::client::{HttpClient, HttpConnector};
use object_store::{ClientOptions, ObjectMeta, ObjectStore, RetryConfig};
use tokio::sync::OnceCell;
use url::Url;

use crate::error::{Error, Result};
use crate::spec::S3Settings;
use credentials::AwsChainCredentials;
use resuming::ResumingStore;

/// A parsed location: an S3 bucket and key prefix, or a local directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// `s3://bucket/prefix/`.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix, without leading slash; empty or ending with `/`.
        prefix: String,
    },
    /// A directory on this machine (absolute).
    Local(PathBuf),
}

impl Location {
    /// Parses `s3://bucket[/prefix]`, `file:///dir` or a plain (relative or absolute) directory.
    /// The prefix is treated as a directory. URLs name keys verbatim, as the AWS CLI reads them:
    /// `s3://b/a%20b/` is the prefix `a%20b/`. A local directory is resolved as the system
    /// resolves it — `..` and symbolic links included — so that two spellings of one directory
    /// give the same location.
    pub fn parse(text: &str) -> Result<Self> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Config(format!("{text:?} names no bucket")));
            }
            let mut prefix = prefix.trim_matches('/').to_string();
            // Verbatim segments; those the object store cannot hold (empty, `.`, `..`, control
            // characters) are refused rather than escaped into another prefix.
            Path::parse(&prefix).map_err(|e| Error::Config(format!("{text:?}: {e}")))?;
            if !prefix.is_empty() {
                prefix.push('/');
            }
            return Ok(Self::S3 { bucket: bucket.to_string(), prefix });
        }
        let path = match text.strip_prefix("file://") {
            Some(path) => PathBuf::from(path),
            None if text.contains("://") => {
                return Err(Error::Config(format!("{text:?}: only s3:// URLs and local directories are supported")));
            }
            None => PathBuf::from(text),
        };
        let resolved = resolve_local(&path).map_err(|e| Error::Config(format!("{text:?} is not a usable path: {e}")))?;
        Ok(Self::Local(resolved))
    }

    /// Whether `other` is this location or lies inside it.
    pub fn contains(&self, other: &Location) -> bool {
        match (self, other) {
            (Self::S3 { bucket, prefix }, Self::S3 { bucket: other_bucket, prefix: other_prefix }) => {
                bucket == other_bucket && other_prefix.starts_with(prefix.as_str())
            }
            (Self::Local(dir), Self::Local(other_dir)) => other_dir.starts_with(dir),
            _ => false,
        }
    }

    /// The URL of the location's root (`s3://bucket/prefix/` or `file:///dir/`).
    pub fn url(&self) -> String {
        match self {
            Self::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
            Self::Local(dir) => format!("file://{}/", dir.display().to_string().trim_end_matches('/')),
        }
    }

    /// Opens the object store behind this location with its own S3 configuration; use an
    /// [`Opener`] to open several locations with one.
    pub async fn open(&self, s3: Option<&S3Settings>, retrying: Retrying) -> Result<Store> {
        Opener::new(s3).open(self, retrying).await
    }
}

/// Opens locations with one S3 configuration. The AWS region and credential chain are resolved
/// once, when the first S3 location is opened, and shared by every store opened after it; local
/// locations never touch them.
#[derive(Debug)]
pub struct Opener {
    settings: S3Settings,
    credentials: Option<SharedCredentialsProvider>,
    aws: OnceCell<AwsContext>,
}

/// How persistently an S3 client retries a failing request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retrying {
    /// For as long as `s3.retryTimeoutSeconds`, with reads resumed where they stopped: a run
    /// rides out throttling, a restarting endpoint and reset connections.
    Patiently,
    /// A few times within seconds: for callers that try again later anyway (the operator's
    /// listings) and for probes whose refusal is the answer.
    Briefly,
}

#[derive(Debug)]
struct AwsContext {
    region: String,
    credentials: Arc<AwsChainCredentials>,
}

impl Opener {
    /// An opener for the given S3 settings (defaults when absent).
    pub fn new(s3: Option<&S3Settings>) -> Self {
        Self { settings: s3.cloned().unwrap_or_default(), credentials: None, aws: OnceCell::new() }
    }

    /// Uses these credentials instead of the AWS credential chain (static keys, or a provider
    /// that fetches expiring ones: they are cached until shortly before they expire).
    pub fn with_credentials(mut self, credentials: SharedCredentialsProvider) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Opens the object store behind a location. Nothing is created: local directories appear
    /// when the first object is written into them.
    pub async fn open(&self, location: &Location, retrying: Retrying) -> Result<Store> {
        match location {
            Location::S3 { bucket, prefix } => Ok(Store {
                store: self.s3_store(bucket, retrying).await?,
                root_url: Url::parse(&format!("s3://{bucket}")).expect("bucket names form valid URLs"),
                prefix: Path::parse(prefix).map_err(|e| Error::Config(format!("{}: {e}", location.url())))?,
                location: location.clone(),
            }),
            Location::Local(dir) => {
                let prefix = Path::from_absolute_path(dir)
                    .map_err(|e| Error::Config(format!("cannot use directory {}: {e}", dir.display())))?;
                Ok(Store {
                    store: Arc::new(LocalFileSystem::new()),
                    root_url: Url::parse("file:///").expect("constant URL"),
                    prefix,
                    location: location.clone(),
                })
            }
        }
    }

    async fn aws(&self) -> Result<&AwsContext> {
        self.aws
            .get_or_try_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
                if let Some(region) = &self.settings.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                if let Some(credentials) = &self.credentials {
                    loader = loader.credentials_provider(credentials.clone());
                }
                let sdk_config = loader.load().await;
                let credentials = sdk_config
                    .credentials_provider()
                    .ok_or_else(|| Error::Config("no AWS credentials provider is configured".to_string()))?;
                Ok(AwsContext {
                    region: sdk_config.region().map_or_else(|| "us-east-1".to_string(), |r| r.to_string()),
                    credentials: Arc::new(AwsChainCredentials::new(credentials)),
                })
            })
            .await
    }

    async fn s3_store(&self, bucket: &str, retrying: Retrying) -> Result<Arc<dyn ObjectStore>> {
        let aws = self.aws().await?;
        let store = s3_builder(&self.settings, bucket, retrying)?
            .with_region(aws.region.clone())
            .with_credentials(Arc::clone(&aws.credentials) as _)
            .build()
            .map_err(|source| Error::Storage { url: format!("s3://{bucket}"), source })?;
        Ok(match retrying {
            Retrying::Patiently => Arc::new(ResumingStore::new(Arc::new(store))),
            Retrying::Briefly => Arc::new(store),
        })
    }
}

/// The S3 client for `bucket` before the AWS context is known: retries, timeouts and addressing.
fn s3_builder(settings: &S3Settings, bucket: &str, retrying: Retrying) -> Result<AmazonS3Builder> {
    let retry = match retrying {
        // Bounded by time, not by count: a throttled or restarting store is waited out for the
        // configured time however quickly it answers.
        Retrying::Patiently => RetryConfig { max_retries: usize::MAX, retry_timeout: settings.retry_timeout(), ..RetryConfig::default() },
        Retrying::Briefly => RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(30), ..RetryConfig::default() },
    };
    let builder = AmazonS3Builder::new()
        .with_retry(retry)
        .with_http_connector(IdleTimeoutConnector { read_timeout: settings.read_timeout() })
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(!settings.force_path_style);
    let Some(endpoint) = &settings.endpoint else { return Ok(builder) };
    // object_store takes a virtual-hosted endpoint as the bucket's own address, so the bucket is
    // put into the host here, as AWS SDKs do with a custom endpoint.
    let endpoint = if settings.force_path_style { endpoint.clone() } else { virtual_hosted_endpoint(endpoint, bucket)? };
    Ok(builder.with_allow_http(endpoint.starts_with("http://")).with_endpoint(endpoint))
}

/// HTTP clients without object_store's overall request timeout, which also covers reading the
/// body and so fails any object that takes longer to read: a request fails when its connection
/// cannot be made within 5 seconds or its response stops arriving for `read_timeout`.
#[derive(Debug)]
struct IdleTimeoutConnector {
    read_timeout: Duration,
}

impl HttpConnector for IdleTimeoutConnector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(self.read_timeout)
            .build()
            .map_err(|error| object_store::Error::Generic { store: "S3", source: Box::new(error) })?;
        Ok(HttpClient::new(client))
    }
}

/// `endpoint` with `bucket.` before its host name.
fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> Result<String> {
    let invalid = |why: &str| {
        Error::Config(format!(
            "s3.endpoint {endpoint:?} {why}; set s3.forcePathStyle: true to address buckets as endpoint/bucket"
        ))
    };
    let mut url = Url::parse(endpoint).map_err(|e| invalid(&format!("is not a URL ({e})")))?;
    let host = match url.host() {
        Some(url::Host::Domain(host)) => host.to_string(),
        Some(_) => return Err(invalid("is an IP address, where virtual-hosted-style addressing cannot put the bucket")),
        None => return Err(invalid("has no host")),
    };
    let hosted = format!("{bucket}.{host}");
    url.set_host(Some(&hosted)).map_err(|e| invalid(&format!("cannot take the bucket in its host ({e})")))?;
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// One segment of a key as a path part: verbatim when the object store can hold it, escaped
/// otherwise. `PathPart::from` alone would percent-encode `#`, `%`, `~`, brackets and non-ASCII
/// letters and so name another object than the listed one.
fn verbatim_segment(part: &str) -> PathPart<'_> {
    PathPart::parse(part).unwrap_or_else(|_| PathPart::from(part))
}

/// `path` made absolute the way the system resolves it: its longest existing ancestor is
/// canonicalized (symbolic links and `..` resolved); the components below it do not exist yet, so
/// they hold no links and a `..` among them just drops the component before it.
fn resolve_local(path: &std::path::Path) -> std::io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let components: Vec<Component> = absolute.components().collect();
    for existing in (1..=components.len()).rev() {
        let ancestor: PathBuf = components[..existing].iter().collect();
        match std::fs::canonicalize(&ancestor) {
            Ok(resolved) => return Ok(components[existing..].iter().fold(resolved, push_lexically)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        }
    }
    unreachable!("the root directory always exists")
}

fn push_lexically(mut path: PathBuf, component: &Component) -> PathBuf {
    match component {
        Component::ParentDir => {
            path.pop();
        }
        Component::CurDir => {}
        other => path.push(other),
    }
    path
}

/// A CSV object of a partition, located in its store.
#[derive(Clone, Debug)]
pub struct SourceObject {
    /// The object's path in the source store.
    pub path: Path,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it is gzip-compressed.
    pub gzip: bool,
    /// The ETag it was listed with: every read of it asks for this version, so an object replaced
    /// after the listing fails the read instead of being recorded under the old ETag.
    pub etag: Option<String>,
    /// When it was last modified, where the store listed no ETag: reads ask for the object
    /// unmodified since.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

impl SourceObject {
    /// Options that read this version of the object, or fail.
    pub fn read_options(&self) -> object_store::GetOptions {
        object_store::GetOptions {
            if_match: self.etag.clone(),
            if_unmodified_since: self.modified,
            ..object_store::GetOptions::default()
        }
    }
}

/// An opened location: the object store and the prefix inside it.
#[derive(Clone, Debug)]
pub struct Store {
    /// The object store.
    pub store: Arc<dyn ObjectStore>,
    /// The URL DataFusion knows this store by (`s3://bucket` or `file:///`).
    pub root_url: Url,
    /// The location's prefix inside the store.
    pub prefix: Path,
    /// The location this store was opened for.
    pub location: Location,
}

impl Store {
    /// The path of `relative`, a `/`-separated key below the location as [`Store::relative`],
    /// layouts and partitions spell it. Segments are taken verbatim, so the path names the object
    /// with exactly that key. A segment no listed key can have (`.`, `..`, control characters) is
    /// escaped as object_store escapes it, so that it never leaves the location.
    pub fn child(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|part| !part.is_empty())
            .fold(self.prefix.clone(), |path, part| path.join(verbatim_segment(part)))
    }

    /// The URL of an object in this store with its key verbatim (`s3://bucket/a b#1.csv`), as
    /// people read it and as messages and quarantined rows name the object. It is not
    /// percent-encoded: the query engine encodes it before DataFusion reads the object.
    pub fn url_of(&self, path: &Path) -> String {
        match &self.location {
            Location::S3 { bucket, .. } => format!("s3://{bucket}/{path}"),
            Location::Local(_) => format!("file:///{path}"),
        }
    }

    /// The path of `path` relative to this location's prefix.
    pub fn relative<'a>(&self, path: &'a Path) -> &'a str {
        let prefix = self.prefix.as_ref();
        let full = path.as_ref();
        let rest = full.strip_prefix(prefix).unwrap_or(full);
        rest.strip_prefix('/').unwrap_or(rest)
    }

    /// Every object below `relative` (recursively), or below the location's prefix when empty.
    pub async fn list(&self, relative: &str) -> Result<Vec<ObjectMeta>> {
        use futures::TryStreamExt;
        let prefix = self.child(relative);
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        let objects = self.store.list(prefix.as_ref()).try_collect().await;
        objects.map_err(|source| self.error(prefix.as_ref().unwrap_or(&self.prefix), source))
    }

    /// A storage error about `path`, naming its URL.
    pub fn error(&self, path: &Path, source: object_store::Error) -> Error {
        Error::Storage { url: self.url_of(path), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_split_into_bucket_and_directory_prefix() {
        assert_eq!(
            Location::parse("s3://user-events").unwrap(),
            Location::S3 { bucket: "user-events".into(), prefix: String::new() }
        );
        assert_eq!(
            Location::parse("s3://out/user-settings").unwrap(),
            Location::S3 { bucket: "out".into(), prefix: "user-settings/".into() }
        );
        assert_eq!(Location::parse("s3://out/a/b/").unwrap().url(), "s3://out/a/b/");
        assert!(Location::parse("s3:///x").is_err());
        assert!(Location::parse("gs://bucket/x").is_err());
    }

    #[test]
    fn local_paths_become_absolute() {
        let Location::Local(dir) = Location::parse("examples/data").unwrap() else { panic!("not local") };
        assert!(dir.is_absolute() && dir.ends_with("examples/data"));
        assert_eq!(Location::parse("file:///tmp/x").unwrap(), Location::Local("/tmp/x".into()));
        assert_eq!(Location::parse("/tmp/x/").unwrap().url(), "file:///tmp/x/");
    }

    #[test]
    fn local_paths_resolve_dot_dot_and_links_also_below_missing_directories() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("link")).unwrap();
        let parse = |path: PathBuf| Location::parse(path.to_str().unwrap()).unwrap();
        assert_eq!(parse(root.join("link/out")), Location::Local(root.join("real/out")));
        assert_eq!(parse(root.join("link/../out")), Location::Local(root.join("out")));
        assert_eq!(parse(root.join("missing/../gone/./x/..")), Location::Local(root.join("gone")));
    }

    #[test]
    fn s3_prefixes_are_verbatim_keys() {
        assert_eq!(
            Location::parse("s3://b/raw é#%20/").unwrap(),
            Location::S3 { bucket: "b".into(), prefix: "raw é#%20/".into() }
        );
        for unusable in ["s3://b/a//c/", "s3://b/a/../c", "s3://b/a\tb/"] {
            assert!(Location::parse(unusable).is_err(), "{unusable:?}");
        }
    }

    #[test]
    fn locations_contain_themselves_and_what_is_below_them() {
        let location = |text: &str| Location::parse(text).unwrap();
        assert!(location("s3://b/").contains(&location("s3://b/x/")));
        assert!(location("s3://b/x/").contains(&location("s3://b/x/")));
        assert!(!location("s3://b/x/").contains(&location("s3://b/xy/")));
        assert!(!location("s3://b/x/").contains(&location("s3://c/x/")));
        assert!(location("/tmp/x").contains(&location("/tmp/x/y")));
        assert!(!location("/tmp/x").contains(&location("/tmp/xy")));
        assert!(!location("/tmp/x").contains(&location("s3://tmp/x/")));
    }

    #[tokio::test]
    async fn children_name_objects_by_their_verbatim_keys() {
        let store = Location::parse("/tmp/raw #1%41").unwrap().open(None, Retrying::Patiently).await.unwrap();
        assert_eq!(store.prefix.as_ref(), "tmp/raw #1%41");
        let child = store.child("year=2026/a+b é#1[%].csv");
        assert_eq!(child.as_ref(), "tmp/raw #1%41/year=2026/a+b é#1[%].csv");
        assert_eq!(store.relative(&child), "year=2026/a+b é#1[%].csv");
        assert_eq!(store.url_of(&child), "file:///tmp/raw #1%41/year=2026/a+b é#1[%].csv");
        assert_eq!(store.child("../x/./y").as_ref(), "tmp/raw #1%41/%2E%2E/x/%2E/y", "no segment leaves the location");
    }

    #[test]
    fn s3_addressing_follows_force_path_style_also_with_an_endpoint() {
        use object_store::aws::AmazonS3ConfigKey::{Endpoint, VirtualHostedStyleRequest};
        let settings = |endpoint: Option<&str>, force_path_style| S3Settings {
            endpoint: endpoint.map(str::to_string),
            force_path_style,
            ..S3Settings::default()
        };
        let config = |settings: &S3Settings| {
            let builder = s3_builder(settings, "events", Retrying::Patiently).unwrap();
            (builder.get_config_value(&VirtualHostedStyleRequest), builder.get_config_value(&Endpoint))
        };
        let http = Some("http://minio.local:9000");
        assert_eq!(config(&settings(http, true)), (Some("false".into()), Some("http://minio.local:9000".into())));
        assert_eq!(config(&settings(http, false)), (Some("true".into()), Some("http://events.minio.local:9000".into())));
        assert_eq!(config(&settings(None, false)), (Some("true".into()), None));
        assert_eq!(config(&settings(None, true)), (Some("false".into()), None));
        let message = s3_builder(&settings(Some("http://127.0.0.1:9000"), false), "events", Retrying::Patiently).unwrap_err().to_string();
        assert!(message.contains("s3.endpoint") && message.contains("s3.forcePathStyle"), "{message}");
    }
}
