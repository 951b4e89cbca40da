//! A real S3-compatible server for integration tests: `s3s-fs` on 127.0.0.1, serving a temporary
//! directory. It checks SigV4 signatures, so tests see real authentication failures.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use eventpipe_testkit::s3::S3Server;
//! let s3 = S3Server::get()?;                  // started once per test binary
//! let bucket = s3.bucket("events").await?;     // a fresh, uniquely named bucket
//! s3.put(&bucket, "year=2026/month=11/day=24/a.csv", b"id\n1\n".to_vec()).await?;
//! # Ok(()) }
//! ```
//!
//! The first call also exports the server's credentials as `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and `AWS_REGION`, so code under test finds them through the standard AWS
//! credential chain, exactly as it would in production.
//!
//! The binary comes from `scripts/s3-server.sh install` (or `EVENTPIPE_S3S_FS`). It runs under a
//! small shell supervisor kept by [`crate::supervisor`], which stops it when the test binary exits.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;

/// Access key the server accepts.
pub const ACCESS_KEY: &str = "eventpipe";
/// Secret key the server accepts.
pub const SECRET_KEY: &str = "eventpipe-secret";
/// Region the tests sign for.
pub const REGION: &str = "us-east-1";
/// The command that installs the server binary.
pub const INSTALL_COMMAND: &str = "scripts/s3-server.sh install";

/// A running S3-compatible server shared by all tests of one test binary.
pub struct S3Server {
    endpoint: String,
    _data: tempfile::TempDir,
}

static SHARED: OnceLock<Result<S3Server, String>> = OnceLock::new();
static BUCKETS: AtomicU32 = AtomicU32::new(0);

impl S3Server {
    /// The server of this test binary, started on the first call.
    pub fn get() -> Result<&'static S3Server> {
        SHARED
            .get_or_init(|| Self::start().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("S3 test server unavailable: {e}"))
    }

    fn start() -> Result<Self> {
        let binary = binary()?;
        let data = tempfile::Builder::new().prefix("eventpipe-s3-").tempdir()?;
        let port = free_port()?;
        // The supervisor waits for its stdin to close (this process exiting), then stops the server.
        let script = r#""$0" --host 127.0.0.1 --port "$1" --access-key "$2" --secret-key "$3" "$4" >/dev/null 2>&1 &
server=$!
cat >/dev/null
kill "$server" 2>/dev/null
wait "$server" 2>/dev/null"#;
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(&binary)
            .arg(port.to_string())
            .arg(ACCESS_KEY)
            .arg(SECRET_KEY)
            .arg(data.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait()? {
                let mut stderr = String::new();
                child.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
                bail!("s3s-fs exited with {status} before listening: {stderr}");
            }
            if Instant::now() > deadline {
                bail!("s3s-fs did not listen on 127.0.0.1:{port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: set once, while the first test starts the server and before any code under test
        // reads AWS settings; Rust's own environment access is synchronised.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
            std::env::set_var("AWS_REGION", REGION);
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        }
        crate::supervisor::keep_until_exit(child);
        Ok(Self { endpoint: format!("http://127.0.0.1:{port}"), _data: data })
    }

    /// The server's URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// An AWS SDK client for the server, with the given secret (use [`SECRET_KEY`] to succeed).
    pub fn client_with_secret(&self, secret: &str) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, secret, None, None, "eventpipe-testkit"))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// An AWS SDK client for the server.
    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client_with_secret(SECRET_KEY)
    }

    /// Creates a bucket with a unique name starting with `prefix` and returns the name.
    pub async fn bucket(&self, prefix: &str) -> Result<String> {
        let name = format!("{prefix}-{}-{}", std::process::id(), BUCKETS.fetch_add(1, Ordering::Relaxed));
        self.client().create_bucket().bucket(&name).send().await.with_context(|| format!("creating bucket {name}"))?;
        Ok(name)
    }

    /// Uploads an object.
    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
        self.client()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .with_context(|| format!("uploading s3://{bucket}/{key}"))?;
        Ok(())
    }

    /// Downloads an object.
    pub async fn read(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let object = self.client().get_object().bucket(bucket).key(key).send().await;
        let object = object.with_context(|| format!("downloading s3://{bucket}/{key}"))?;
        Ok(object.body.collect().await?.into_bytes().to_vec())
    }

    /// The keys below `prefix`, sorted.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self.client().list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.with_context(|| format!("listing s3://{bucket}/{prefix}"))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        keys.sort();
        Ok(keys)
    }
}

fn binary() -> Result<PathBuf> {
    let path = match std::env::var_os("EVENTPIPE_S3S_FS") {
        Some(path) => PathBuf::from(path),
        None => {
            let script = crate::kube_env::workspace_root().join("scripts/s3-server.sh");
            let output = Command::new(&script).arg("path").output().with_context(|| format!("running {}", script.display()))?;
            PathBuf::from(String::from_utf8(output.stdout)?.trim())
        }
    };
    if !path.exists() {
        bail!("{} is missing; run `{INSTALL_COMMAND}` first", path.display());
    }
    Ok(path)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
