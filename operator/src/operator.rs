//! `eventpipe operator`: the controller process. Serves `/metrics`, `/healthz` and `/readyz`,
//! optionally waits to lead through a Lease, runs the controller, and stops gracefully on SIGTERM
//! or Ctrl-C (reconciles in flight finish, the Lease is released). A leader that loses its Lease,
//! or cannot confirm it for a lease duration, stops acting and exits with a failure, so that
//! Kubernetes restarts it as a standby.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;

use crate::controller::allowances::S3Allowances;
use crate::controller::identity::{IdentityMode, IdentitySettings};
use crate::controller::{self, Watched, policy::JobPolicy};
use crate::enforced::JobDefaults;
use crate::lease;
use crate::crd::EventPipeline;
use crate::metrics::Metrics;
use crate::server;

/// Options of `eventpipe operator`.
#[derive(clap::Args, Debug)]
pub struct OperatorArgs {
    /// The transformer image the Jobs run, unless a pipeline names its own.
    #[arg(long, env = "EVENTPIPE_TRANSFORMER_IMAGE")]
    pub transformer_image: String,
    /// Prefixes of images pipelines may name besides the transformer image (repeat the flag, or
    /// separate with commas), e.g. `registry.example.com/data/`, matched by whole path segments;
    /// none: only the transformer image.
    #[arg(long = "allowed-image", env = "EVENTPIPE_ALLOWED_IMAGES", value_delimiter = ',')]
    pub allowed_images: Vec<String>,
    /// Service accounts pipelines may run their Jobs as (repeat, or separate with commas); none:
    /// any in the pipeline's namespace.
    #[arg(long = "allowed-service-account", env = "EVENTPIPE_ALLOWED_SERVICE_ACCOUNTS", value_delimiter = ',')]
    pub allowed_service_accounts: Vec<String>,
    /// Pod settings for what pipelines leave out of `execution`, as JSON in the shape of
    /// `execution` (`{"priorityClassName": "batch", "imagePullSecrets": [{"name": "registry"}]}`),
    /// with those pipelines may not change under `enforced` (`{"enforced": {"nodeSelector": …,
    /// "tolerations": …, "priorityClassName": …, "podAnnotations": …, "podLabels": …,
    /// "pipelinesMayAdd": {…}}}`).
    #[arg(long, env = "EVENTPIPE_JOB_DEFAULTS", default_value = "{}", value_parser = parse_job_defaults)]
    pub job_defaults: JobDefaults,
    /// Whose AWS identity reads pipelines' S3 locations when they name no credentials Secret:
    /// `pipeline` (the role of the pipeline's ServiceAccount, by IRSA or EKS Pod Identity; the
    /// operator's own role needs no S3 access) or `operator` (its own). Default: `pipeline` when
    /// namespaces are given, `operator` for a cluster-wide installation.
    #[arg(long, env = "EVENTPIPE_S3_IDENTITY", value_enum)]
    pub s3_identity: Option<IdentityMode>,
    /// STS endpoint for IRSA token exchanges, e.g. a VPC endpoint; also given to IRSA Jobs as
    /// `AWS_ENDPOINT_URL_STS`. AWS's regional endpoint when absent.
    #[arg(long, env = "EVENTPIPE_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,
    /// The EKS cluster's name: pipelines whose ServiceAccount has no IRSA role use its EKS Pod
    /// Identity association. Pod Identity is off when absent.
    #[arg(long, env = "EVENTPIPE_POD_IDENTITY_CLUSTER")]
    pub pod_identity_cluster: Option<String>,
    /// What each namespace's pipelines may reach in S3, as JSON:
    /// `{"team-a": {"sources": ["s3://team-a-raw/*"], "sinks": […], "rejected": […],
    /// "endpoints": ["https://minio.data:9000"]}, "*": {…}}`. A namespace without an entry uses
    /// `*`'s; globs left out allow any location (`rejected`: the `sinks` globs); endpoints left
    /// out allow AWS's only.
    #[arg(long, env = "EVENTPIPE_S3_ALLOWANCES", default_value = "{}", value_parser = S3Allowances::parse)]
    pub s3_allowances: S3Allowances,
    /// Watch pipelines in these namespaces only (repeat the flag, or separate with commas); all
    /// namespaces when none is given.
    #[arg(long = "namespace", env = "EVENTPIPE_WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Run the controller only while holding a Lease, so that one of several replicas works.
    #[arg(long, env = "EVENTPIPE_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "eventpipe-operator")]
    pub lease_name: String,
    /// Namespace of the Lease; the operator's own namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a Lease is valid without renewal; a leader that cannot renew it for this long
    /// exits.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_duration_seconds: u64,
    /// Pipelines reconciled at once.
    #[arg(long, env = "EVENTPIPE_MAX_CONCURRENT_RECONCILES", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_reconciles: u16,
}

/// First wait after the Kubernetes API did not answer at start-up; doubles up to
/// [`MAX_API_RETRY`].
const FIRST_API_RETRY: Duration = Duration::from_secs(1);
const MAX_API_RETRY: Duration = Duration::from_secs(30);
/// How long the start-up check waits for one answer.
const API_ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// A future that resolves once, when the process is asked to stop; cloneable.
pub type Shutdown = Shared<BoxFuture<'static, ()>>;

/// Resolves on SIGTERM or Ctrl-C.
pub fn shutdown_signal() -> Shutdown {
    async {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        tracing::info!("shutting down");
    }
    .boxed()
    .shared()
}

/// Runs the operator with the client from the environment (in-cluster or kubeconfig).
pub async fn run(args: OperatorArgs) -> anyhow::Result<ExitCode> {
    let client = Client::try_default().await.context("connecting to Kubernetes")?;
    serve_and_run(client, args, shutdown_signal()).await
}

/// Runs the operator with this client until `shutdown` resolves, or until a leader loses its
/// Lease (then with a failure exit code).
pub async fn serve_and_run(client: Client, args: OperatorArgs, shutdown: Shutdown) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server_shutdown = {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                _ = server_stopped => {}
            }
        }
    };
    let server = tokio::spawn(server::serve(listener, Arc::clone(&metrics), Arc::clone(&ready), server_shutdown));

    let watched = watched_apis(&client, &args.namespaces);
    if !api_answers(&watched, shutdown.clone()).await? {
        let _ = stop_server.send(());
        server.await.context("the HTTP server task")?.context("the HTTP server")?;
        return Ok(ExitCode::SUCCESS);
    }
    ready.store(true, Ordering::Relaxed);

    let settings = controller::Settings {
        client: client.clone(),
        job_policy: JobPolicy {
            image: args.transformer_image.clone(),
            allowed_images: args.allowed_images.clone(),
            allowed_service_accounts: args.allowed_service_accounts.clone(),
            pod_defaults: args.job_defaults.defaults.clone(),
            enforced: args.job_defaults.enforced.clone(),
        },
        identity: IdentitySettings {
            mode: args.s3_identity.unwrap_or(if args.namespaces.is_empty() { IdentityMode::Operator } else { IdentityMode::Pipeline }),
            sts_endpoint: args.sts_endpoint.clone(),
            pod_identity_cluster: args.pod_identity_cluster.clone(),
        },
        s3_allowances: args.s3_allowances.clone(),
        metrics,
        instance: args.identity.clone(),
    };
    // One controller per watched namespace: a Role there grants no list or watch across
    // namespaces, and each controller's watches need exactly its namespace's.
    let controllers = watched
        .into_iter()
        .map(|watched| controller::run(settings.clone(), watched, args.max_concurrent_reconciles, shutdown.clone()));
    let controller = futures::future::join_all(controllers).map(drop);
    let code = if args.leader_election {
        run_as_leader(client, &args, controller, shutdown).await?
    } else {
        controller.await;
        ExitCode::SUCCESS
    };
    let _ = stop_server.send(());
    server.await.context("the HTTP server task")?.context("the HTTP server")?;
    Ok(code)
}

fn parse_job_defaults(json: &str) -> Result<JobDefaults, String> {
    serde_json::from_str(json).map_err(|error| format!("not pod settings in the shape of execution (with `enforced`): {error}"))
}

/// The APIs of each watched namespace, or of all namespaces.
fn watched_apis(client: &Client, namespaces: &[String]) -> Vec<Watched> {
    if namespaces.is_empty() {
        return vec![Watched { pipelines: Api::all(client.clone()), jobs: Api::all(client.clone()), pods: Api::all(client.clone()) }];
    }
    namespaces
        .iter()
        .map(|namespace| Watched {
            pipelines: Api::namespaced(client.clone(), namespace),
            jobs: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client.clone(), namespace),
        })
        .collect()
}

fn scope_of(pipelines: &Api<PartialObjectMeta<EventPipeline>>) -> String {
    pipelines.namespace().map(|namespace| format!(" in namespace {namespace}")).unwrap_or_default()
}

/// Waits until pipelines can be listed in every watched scope, retrying with backoff while the
/// API server does not answer, answers with a server error, or does not serve the CRD yet (an API
/// server still starting, a CRD not applied yet); false when asked to stop first. A refusal of
/// this service account (401, 403) is an error: waiting does not grant permissions, and a
/// restarting pod with the message says so better than a pod that is never ready. Only metadata
/// is listed: whether each pipeline can be decoded is each reconcile's business.
async fn api_answers(watched: &[Watched], shutdown: Shutdown) -> anyhow::Result<bool> {
    let mut wait = FIRST_API_RETRY;
    for Watched { pipelines, .. } in watched {
        loop {
            let listed = tokio::time::timeout(API_ANSWER_LIMIT, pipelines.list(&ListParams::default().limit(1))).await;
            let problem = match listed {
                Ok(Ok(_)) => break,
                Ok(Err(kube::Error::Api(status))) if matches!(status.code, 401 | 403) => {
                    return Err(kube::Error::Api(status))
                        .with_context(|| format!("listing EventPipelines{} (may this service account list them?)", scope_of(pipelines)));
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {} s", API_ANSWER_LIMIT.as_secs()),
            };
            tracing::warn!(
                problem,
                retry_in = ?wait,
                "listing EventPipelines{} failed (is the API server reachable and the CRD installed?)",
                scope_of(pipelines)
            );
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.clone() => return Ok(false),
            }
            wait = (wait * 2).min(MAX_API_RETRY);
        }
    }
    Ok(true)
}

/// Waits for the Lease, runs the controller while holding it, and releases it on shutdown. Losing
/// the Lease — another holder took it, or it could not be renewed for a lease duration (an API
/// outage) — drops the controller with its watches and returns a failure.
async fn run_as_leader(
    client: Client,
    args: &OperatorArgs,
    controller: impl Future<Output = ()>,
    shutdown: Shutdown,
) -> anyhow::Result<ExitCode> {
    let identity = args.identity.clone().unwrap_or_else(|| format!("eventpipe-{}", std::process::id()));
    let duration = args.lease_duration_seconds;
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await
        .context("preparing the leader-election Lease")?;
    let (mut leading, lease_task) = manager.watch().await;
    tracing::info!(identity, lease = args.lease_name, "waiting to lead");
    while !*leading.borrow_and_update() {
        tokio::select! {
            changed = leading.changed() => changed.context("leader election stopped")?,
            () = shutdown.clone() => return release(leading, lease_task, Duration::from_secs(duration)).await.map(|()| ExitCode::SUCCESS),
        }
    }
    tracing::info!(identity, "leading");
    let leases: Api<Lease> = Api::namespaced(client, &args.lease_namespace);
    let mut watching = leading.clone();
    let released = async move {
        while watching.changed().await.is_ok() {
            if !*watching.borrow() {
                return;
            }
        }
    };
    let code = tokio::select! {
        () = controller => ExitCode::SUCCESS,
        () = released => {
            tracing::error!(identity, "another replica holds the Lease now; exiting");
            ExitCode::FAILURE
        }
        reason = lease::lost(&leases, &args.lease_name, &identity, Duration::from_secs(duration)) => {
            tracing::error!(identity, reason, "lost the Lease; exiting");
            ExitCode::FAILURE
        }
    };
    release(leading, lease_task, Duration::from_secs(duration)).await?;
    Ok(code)
}

/// Closes the leader-election channel, which makes the Lease task release the Lease (when this
/// replica still holds it) and end; waits for that at most a lease duration, after which the
/// Lease expires by itself anyway.
async fn release(
    leading: tokio::sync::watch::Receiver<bool>,
    lease_task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
    duration: Duration,
) -> anyhow::Result<()> {
    drop(leading);
    let abort = lease_task.abort_handle();
    match tokio::time::timeout(duration, lease_task).await {
        Ok(released) => match released.context("the Lease task")? {
            Ok(_) => Ok(()),
            // Releasing needs the API server, which may be what failed.
            Err(error) => {
                tracing::warn!(%error, "releasing the Lease failed; it expires by itself");
                Ok(())
            }
        },
        Err(_) => {
            abort.abort();
            tracing::warn!(seconds = duration.as_secs(), "releasing the Lease took too long; it expires by itself");
            Ok(())
        }
    }
}
