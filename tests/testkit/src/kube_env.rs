//! A real Kubernetes control plane for integration tests, in the spirit of controller-runtime's
//! envtest: `etcd` + `kube-apiserver` on 127.0.0.1 with RBAC, admission, the TokenRequest API and
//! the CRDs from `crds/*.yaml` installed, plus `kube-controller-manager` with the controllers tests
//! rely on: Jobs (and `ttlSecondsAfterFinished`), Deployments and ReplicaSets, disruption budgets,
//! the garbage collector, pod garbage collection, namespace deletion, and each namespace's
//! `default` ServiceAccount and `kube-root-ca.crt` ConfigMap, so a Job creates its Pods as on a
//! real cluster. There is no kubelet or scheduler (and no node-lifecycle controller to judge fake
//! Nodes): Pods stay `Pending` unless a test runs them, and the pod runner of this crate
//! (`pod_runner`) stands in for those two.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use eventpipe_testkit::kube_env::KubeEnv;
//! let env = KubeEnv::get().await?;              // started once per test binary
//! let admin = env.client()?;                     // a fresh client for this test's runtime
//! let ns = env.namespace("my-test").await?;      // a fresh namespace (with a `default` SA)
//! let limited = env.service_account_client(&ns, "reader").await?; // only what RBAC grants
//! # let _ = (admin, limited); Ok(()) }
//! ```
//!
//! # Where the control plane comes from
//! * `EVENTPIPE_TEST_KUBECONFIG` set: that (already running) cluster is used and nothing is started,
//!   e.g. one from `scripts/testenv.sh start`.
//! * Otherwise the first test that asks starts one through `scripts/testenv.sh run`, using the
//!   binaries that `scripts/testenv.sh install` put in the cache (`EVENTPIPE_CACHE`, or
//!   `EVENTPIPE_KUBE_APISERVER` / `EVENTPIPE_KUBE_CONTROLLER_MANAGER` / `EVENTPIPE_ETCD` to point at
//!   other binaries). Missing binaries are an error naming that command; the harness never skips
//!   (in particular not under `CI=true`).
//!
//! # No leftover processes
//! `scripts/testenv.sh run` is kept by [`crate::supervisor`]: when the test binary exits in any
//! way, the script sees end-of-file on its stdin, kills etcd, kube-apiserver and
//! kube-controller-manager and removes their state directory. The three servers also carry a
//! parent-death signal, so they die with the script even if the script itself is killed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Namespace, ServiceAccount},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    config::{AuthInfo, KubeConfigOptions, Kubeconfig},
    runtime::wait::{await_condition, conditions},
};

/// Environment variable naming the kubeconfig of an already running cluster to use instead of
/// starting one.
pub const KUBECONFIG_ENV: &str = "EVENTPIPE_TEST_KUBECONFIG";

/// The command that installs the binaries this harness needs.
pub const INSTALL_COMMAND: &str = "scripts/testenv.sh install";

/// Field manager used for everything the harness applies.
pub const FIELD_MANAGER: &str = "eventpipe-testkit";

/// Label put on every namespace created by [`KubeEnv::namespace`].
pub const TEST_NAMESPACE_LABEL: &str = "eventpipe.dev/test-namespace";

const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (where `crds/` and `scripts/` live).
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Installs the `ring` rustls CryptoProvider for the process, once. Needed because both `ring` and
/// `aws-lc-rs` may be compiled in (kube vs. the AWS SDK), and then rustls cannot pick one itself.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A running control plane shared by all tests of one test binary.
///
/// It holds no connection or runtime state: every test builds its own [`Client`] with
/// [`KubeEnv::client`], since each `#[tokio::test]` has its own runtime.
pub struct KubeEnv {
    kubeconfig_path: PathBuf,
    config: Config,
    crds: Vec<String>,
}

static SHARED: OnceLock<Result<KubeEnv, String>> = OnceLock::new();

impl KubeEnv {
    /// Returns the control plane of this test binary, starting it (and installing the CRDs) on the
    /// first call. Safe to call from any test and any runtime; concurrent callers wait for the
    /// first one. An error (e.g. missing binaries) is returned to every caller.
    pub async fn get() -> Result<&'static KubeEnv> {
        tokio::task::spawn_blocking(Self::get_blocking)
            .await
            .context("the control plane start-up task failed")?
    }

    /// Blocking version of [`KubeEnv::get`], for synchronous code.
    pub fn get_blocking() -> Result<&'static KubeEnv> {
        SHARED
            .get_or_init(|| Self::start().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow!("kube test environment unavailable: {e}"))
    }

    fn start() -> Result<KubeEnv> {
        install_crypto_provider();
        let kubeconfig_path = match std::env::var_os(KUBECONFIG_ENV) {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => start_control_plane()?,
        };
        let kubeconfig = Kubeconfig::read_from(&kubeconfig_path)
            .with_context(|| format!("reading kubeconfig {}", kubeconfig_path.display()))?;
        // Client set-up and CRD installation are async; run them on a private runtime on a
        // separate thread so that nothing ties the shared state to the caller's runtime.
        let (config, crds) = std::thread::spawn(move || -> Result<(Config, Vec<String>)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let config =
                    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                        .await
                        .context("building a client config from the kubeconfig")?;
                let client = Client::try_from(config.clone())?;
                let crds = install_crds(client).await?;
                Ok((config, crds))
            })
        })
        .join()
        .map_err(|_| anyhow!("the CRD installation thread panicked"))??;
        Ok(KubeEnv {
            kubeconfig_path,
            config,
            crds,
        })
    }

    /// Path of an admin kubeconfig for this control plane (e.g. for `kubectl` while debugging, or
    /// for a process under test).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The CA certificate (PEM) of the API server's serving certificate, which also signs its
    /// ServiceAccount tokens' issuer URL; only for the control plane this harness started.
    pub fn ca_cert_path(&self) -> Result<PathBuf> {
        let path = self.kubeconfig_path.parent().context("the kubeconfig's directory")?.join("pki/ca.crt");
        if !path.exists() {
            bail!("{} is missing: the API server was not started by scripts/testenv.sh", path.display());
        }
        Ok(path)
    }

    /// Names of the CustomResourceDefinitions installed from `crds/*.yaml`.
    pub fn crds(&self) -> &[String] {
        &self.crds
    }

    /// The admin client configuration (member of `system:masters`, bypasses RBAC).
    pub fn admin_config(&self) -> Config {
        self.config.clone()
    }

    /// A new admin [`Client`], bound to the calling test's runtime.
    pub fn client(&self) -> Result<Client> {
        Ok(Client::try_from(self.config.clone())?)
    }

    /// Creates a fresh namespace named `<prefix>-<random>` and returns its name, once its `default`
    /// ServiceAccount exists: the ServiceAccount admission plugin refuses Pods in a namespace
    /// without it. kube-controller-manager creates it too, a moment later; creating it here
    /// (tolerating the conflict when the controller was first) means a test need not wait.
    ///
    /// Namespaces are not deleted: the control plane is thrown away at exit. A test may delete
    /// one (the namespace controller empties and removes it). They carry the label
    /// [`TEST_NAMESPACE_LABEL`].
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        let client = self.client()?;
        let mut clean: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        clean.truncate(40);
        let clean = clean.trim_matches('-');
        let clean = if clean.is_empty() { "test" } else { clean };
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{clean}-")),
                labels: Some([(TEST_NAMESPACE_LABEL.to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .context("creating a test namespace")?;
        let name = created
            .metadata
            .name
            .context("created namespace has no name")?;
        ensure_service_account(&client, &name, "default").await?;
        Ok(name)
    }

    /// A [`Client`] authenticated as ServiceAccount `namespace/name` with a token from the
    /// TokenRequest API, so the test runs with exactly the permissions RBAC grants that account.
    /// The ServiceAccount is created if it does not exist. The token is valid for one hour.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Result<Client> {
        let token = self.service_account_token(namespace, name).await?;
        let mut config = self.config.clone();
        config.auth_info = AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        config.default_namespace = namespace.to_string();
        Ok(Client::try_from(config)?)
    }

    /// Mints a bearer token for ServiceAccount `namespace/name` (created if missing) through the
    /// TokenRequest API.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> Result<String> {
        let client = self.client()?;
        ensure_service_account(&client, namespace, name).await?;
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let response = Api::<ServiceAccount>::namespaced(client, namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for serviceaccount {namespace}/{name}"))?;
        let status = response.status.context("TokenRequest returned no status")?;
        Ok(status.token)
    }
}

async fn ensure_service_account(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &sa)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating serviceaccount {namespace}/{name}")),
    }
}

/// Starts `scripts/testenv.sh run` and waits for its `ready <kubeconfig>` line.
fn start_control_plane() -> Result<PathBuf> {
    let root = workspace_root();
    let script = root.join("scripts/testenv.sh");
    if !script.exists() {
        bail!("{} is missing", script.display());
    }
    // Fail early, with the command to run, when the binaries are not installed.
    let env = Command::new("bash")
        .arg(&script)
        .arg("env")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} env", script.display()))?;
    if !env.status.success() {
        bail!(
            "etcd / kube-apiserver / kube-controller-manager are not installed: run \
             `{INSTALL_COMMAND}` (once; it builds kube-apiserver and kube-controller-manager from \
             source and caches them), or set {KUBECONFIG_ENV} to the kubeconfig of a running \
             cluster.\n{}",
            String::from_utf8_lossy(&env.stderr).trim_end()
        );
    }

    let state = tempfile::Builder::new()
        .prefix("eventpipe-kube-")
        .tempdir()
        .context("creating the control plane's state directory")?
        .keep();
    let mut command = Command::new("bash");
    command.arg(&script).arg("run").arg(&state).arg("--cleanup");
    let kubeconfig = crate::supervisor::start_until_ready(command, "the control plane (scripts/testenv.sh run)")?;
    Ok(PathBuf::from(kubeconfig))
}

/// Server-side applies every CustomResourceDefinition in `crds/*.yaml` and waits until each one is
/// Established. Returns their names.
async fn install_crds(client: Client) -> Result<Vec<String>> {
    let dir = workspace_root().join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let api = Api::<CustomResourceDefinition>::all(client);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value =
                k8s_openapi::serde::Deserialize::deserialize(document)
                    .with_context(|| format!("parsing {}", file.display()))?;
            if value.is_null() {
                continue;
            }
            if value["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let name = value["metadata"]["name"]
                .as_str()
                .with_context(|| format!("a CRD in {} has no metadata.name", file.display()))?
                .to_string();
            api.patch(&name, &params, &Patch::Apply(&value))
                .await
                .with_context(|| format!("applying CRD {name} from {}", file.display()))?;
            names.push(name);
        }
    }
    for name in &names {
        tokio::time::timeout(
            CRD_ESTABLISHED_TIMEOUT,
            await_condition(api.clone(), name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not Established after {CRD_ESTABLISHED_TIMEOUT:?}"))?
        .with_context(|| format!("waiting for CRD {name}"))?;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
    use kube::api::{DeleteParams, ListParams};

    use super::*;

    /// The harness itself: admin access, a namespace with its `default` ServiceAccount, and a
    /// ServiceAccount token that RBAC restricts.
    #[tokio::test]
    async fn control_plane_namespaces_and_service_account_tokens() -> Result<()> {
        let env = KubeEnv::get().await?;
        let admin = env.client()?;
        let ns = env.namespace("Kube_Env smoke").await?;
        assert!(ns.starts_with("kube-env-smoke-"), "{ns}");
        Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
            .get("default")
            .await?;

        let as_sa = env.service_account_client(&ns, "nobody").await?;
        let denied = Api::<Pod>::namespaced(as_sa, &ns)
            .list(&ListParams::default())
            .await;
        match denied {
            Err(kube::Error::Api(status)) if status.code == 403 => {}
            other => bail!("expected 403 Forbidden, got {other:?}"),
        }
        Api::<Pod>::namespaced(admin, &ns)
            .list(&ListParams::default())
            .await?;
        Ok(())
    }

    /// kube-controller-manager runs: the Job controller creates a Job's Pod (which stays Pending:
    /// there is no scheduler), and deleting the Job in the background lets the garbage collector
    /// delete the Pod.
    #[tokio::test]
    async fn controller_manager_runs_jobs_and_collects_their_pods() -> Result<()> {
        let env = KubeEnv::get().await?;
        let client = env.client()?;
        let ns = env.namespace("kcm").await?;
        let jobs = Api::<Job>::namespaced(client.clone(), &ns);
        let pods = Api::<Pod>::namespaced(client, &ns);
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "hello" },
            "spec": { "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [{ "name": "main", "image": "busybox" }],
            }}},
        }))?;
        jobs.create(&PostParams::default(), &job).await?;
        let of_job = ListParams::default().labels("job-name=hello");
        wait_until("the Job controller to create a Pod", || async {
            Ok(!pods.list(&of_job).await?.items.is_empty())
        })
        .await?;

        jobs.delete("hello", &DeleteParams::background()).await?;
        wait_until("the garbage collector to delete the Job's Pod", || async {
            Ok(pods.list(&of_job).await?.items.is_empty())
        })
        .await
    }

    async fn wait_until<F, Fut>(what: &str, mut done: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done().await? {
            if tokio::time::Instant::now() >= deadline {
                bail!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}
