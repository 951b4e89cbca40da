//! A SeaweedFS S3 server that enforces IAM policies per identity and serves STS
//! `AssumeRoleWithWebIdentity` (see `scripts/seaweedfs.sh`): the identity boundary of the tests
//! that check what each pipeline may reach. Each server is started with the identities, roles and
//! policies its test needs, and stops when the test binary exits.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use serde_json::Value;

use crate::kube_env::workspace_root;

/// A running SeaweedFS server.
pub struct SeaweedFs {
    endpoint: String,
    dir: PathBuf,
}

impl SeaweedFs {
    /// Starts a server with these static identities (`-s3.config`) and this IAM configuration
    /// (`-s3.iam.config`: STS, OIDC providers, roles, policies).
    pub fn start(identities: &Value, iam: &Value) -> Result<Self> {
        let script = workspace_root().join("scripts/seaweedfs.sh");
        let dir = tempfile::Builder::new().prefix("eventpipe-seaweedfs-").tempdir()?.keep();
        let s3_config = dir.join("s3.json");
        let iam_config = dir.join("iam.json");
        std::fs::write(&s3_config, serde_json::to_vec_pretty(identities)?)?;
        std::fs::write(&iam_config, serde_json::to_vec_pretty(iam)?)?;
        let mut command = Command::new("bash");
        command.arg(&script).arg("run").arg(&dir).arg(&s3_config).arg(&iam_config);
        let what = format!("SeaweedFS (scripts/seaweedfs.sh run; `scripts/seaweedfs.sh install` first; log: {})", dir.join("logs/weed.log").display());
        let endpoint = crate::supervisor::start_until_ready(command, &what)?;
        Ok(Self { endpoint, dir })
    }

    /// The S3 (and STS) endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The port the endpoint listens on.
    pub fn port(&self) -> u16 {
        self.endpoint.rsplit(':').next().and_then(|port| port.parse().ok()).expect("the endpoint has a port")
    }

    /// The request log: one line per S3 or STS request, naming the identity, method, path and
    /// status (`"admin" PUT "/bucket/key" 200 …`).
    pub fn requests(&self) -> Result<Vec<String>> {
        let log = std::fs::read_to_string(self.dir.join("logs/weed.log")).context("reading the SeaweedFS log")?;
        Ok(log.lines().filter(|line| line.contains("stats.go")).map(str::to_string).collect())
    }

    /// An S3 client with static keys.
    pub fn client(&self, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(access_key, secret_key, None, None, "eventpipe-testkit"))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}
