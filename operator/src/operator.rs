//! `eventpipe operator`: the controller process. Serves `/metrics`, `/healthz` and `/readyz`,
//! optionally waits to lead through a Lease, runs the controller, and stops gracefully on SIGTERM
//! or Ctrl-C (reconciles in flight finish, the Lease is released).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;

use crate::controller::{self, Context, job::JobDefaults};
use crate::crd::EventPipeline;
use crate::metrics::Metrics;
use crate::server;

/// Options of `eventpipe operator`.
#[derive(clap::Args, Debug)]
pub struct OperatorArgs {
    /// The transformer image the Jobs run, unless a pipeline names its own.
    #[arg(long, env = "EVENTPIPE_TRANSFORMER_IMAGE")]
    pub transformer_image: String,
    /// Watch pipelines in this namespace only; all namespaces when absent.
    #[arg(long, env = "EVENTPIPE_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
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
}

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

/// Runs the operator with this client until `shutdown` resolves.
pub async fn serve_and_run(client: Client, args: OperatorArgs, shutdown: Shutdown) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let server = tokio::spawn(server::serve(listener, Arc::clone(&metrics), Arc::clone(&ready), shutdown.clone()));

    let (pipelines, jobs): (Api<EventPipeline>, Api<Job>) = match &args.namespace {
        Some(namespace) => (Api::namespaced(client.clone(), namespace), Api::namespaced(client.clone(), namespace)),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    pipelines
        .list(&ListParams::default().limit(1))
        .await
        .context("listing EventPipelines (is the CRD installed and may this service account list them?)")?;
    ready.store(true, Ordering::Relaxed);

    let ctx = Arc::new(Context::new(
        client.clone(),
        JobDefaults { image: args.transformer_image.clone() },
        metrics,
        args.identity.clone(),
    ));
    let code = if args.leader_election {
        run_as_leader(client, &args, ctx, pipelines, jobs, shutdown).await?
    } else {
        controller::run(ctx, pipelines, jobs, shutdown).await;
        ExitCode::SUCCESS
    };
    server.await.context("the HTTP server task")?.context("the HTTP server")?;
    Ok(code)
}

/// Waits for the Lease, runs the controller while holding it, and releases it on shutdown. Losing
/// the Lease ends the process with a failure, so that Kubernetes restarts it as a standby.
async fn run_as_leader(
    client: Client,
    args: &OperatorArgs,
    ctx: Arc<Context>,
    pipelines: Api<EventPipeline>,
    jobs: Api<Job>,
    shutdown: Shutdown,
) -> anyhow::Result<ExitCode> {
    let identity = args.identity.clone().unwrap_or_else(|| format!("eventpipe-{}", std::process::id()));
    let manager = LeaseManagerBuilder::new(client, &args.lease_name)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .context("preparing the leader-election Lease")?;
    let (mut leading, lease_task) = manager.watch().await;
    tracing::info!(identity, lease = args.lease_name, "waiting to lead");
    while !*leading.borrow_and_update() {
        tokio::select! {
            changed = leading.changed() => changed.context("leader election stopped")?,
            () = shutdown.clone() => return release(leading, lease_task).await.map(|()| ExitCode::SUCCESS),
        }
    }
    tracing::info!(identity, "leading");
    let mut watching = leading.clone();
    let lost = async move {
        while watching.changed().await.is_ok() {
            if !*watching.borrow() {
                return;
            }
        }
    };
    let code = tokio::select! {
        () = controller::run(ctx, pipelines, jobs, shutdown) => ExitCode::SUCCESS,
        () = lost => {
            tracing::error!(identity, "lost the Lease; exiting");
            ExitCode::FAILURE
        }
    };
    release(leading, lease_task).await?;
    Ok(code)
}

/// Closes the leader-election channel, which makes the Lease task release the Lease and end.
async fn release(
    leading: tokio::sync::watch::Receiver<bool>,
    lease_task: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
) -> anyhow::Result<()> {
    drop(leading);
    lease_task.await.context("the Lease task")?.context("releasing the Lease")?;
    Ok(())
}
