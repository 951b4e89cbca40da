//! Object locations (`s3://bucket/prefix/` or a local directory) and the object stores behind them.
//! Local files and S3 go through the same `object_store` interface, so every code path above this
//! module is the same for both.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectMeta, ObjectStore, RetryConfig};
use tokio::sync::OnceCell;
use url::Url;

use crate::credentials::AwsChainCredentials;
use crate::error::{Error, Result};
use crate::spec::S3Settings;

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
    /// The prefix is treated as a directory.
    pub fn parse(text: &str) -> Result<Self> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Config(format!("{text:?} names no bucket")));
            }
            let mut prefix = prefix.trim_matches('/').to_string();
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
        let absolute = std::path::absolute(&path)
            .map_err(|e| Error::Config(format!("{text:?} is not a usable path: {e}")))?;
        Ok(Self::Local(absolute))
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
    pub async fn open(&self, s3: Option<&S3Settings>) -> Result<Store> {
        Opener::new(s3).open(self).await
    }
}

/// Opens locations with one S3 configuration. The AWS region and credential chain are resolved
/// once, when the first S3 location is opened, and shared by every store opened after it; local
/// locations never touch them.
#[derive(Debug)]
pub struct Opener {
    settings: S3Settings,
    credentials: Option<aws_credential_types::Credentials>,
    aws: OnceCell<AwsContext>,
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

    /// Uses these credentials instead of the AWS credential chain.
    pub fn with_credentials(mut self, credentials: aws_credential_types::Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Opens the object store behind a location. Nothing is created: local directories appear
    /// when the first object is written into them.
    pub async fn open(&self, location: &Location) -> Result<Store> {
        match location {
            Location::S3 { bucket, prefix } => Ok(Store {
                store: self.s3_store(bucket).await?,
                root_url: Url::parse(&format!("s3://{bucket}")).expect("bucket names form valid URLs"),
                prefix: Path::from(prefix.as_str()),
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

    async fn s3_store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        let aws = self.aws().await?;
        let settings = &self.settings;
        let retry = RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(30), ..RetryConfig::default() };
        let client = ClientOptions::new().with_connect_timeout(Duration::from_secs(5));
        let mut builder = AmazonS3Builder::new()
            .with_retry(retry)
            .with_client_options(client)
            .with_bucket_name(bucket)
            .with_region(aws.region.clone())
            .with_credentials(Arc::clone(&aws.credentials) as _)
            .with_virtual_hosted_style_request(!settings.force_path_style && settings.endpoint.is_none());
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(|source| Error::Storage { url: format!("s3://{bucket}"), source })?;
        Ok(Arc::new(store))
    }
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
    /// The path of `relative` (a `/`-separated path below the location).
    pub fn child(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|part| !part.is_empty())
            .fold(self.prefix.clone(), |path, part| path.clone().join(part))
    }

    /// The full URL of an object in this store, as DataFusion and error messages use it.
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
}
