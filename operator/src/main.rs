//! queuelet-operator: reconciles MessageQueue resources into StatefulSets running the
//! queuelet server. Flags and wiring only; the pipeline lives in `controller`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::{Args as ClapArgs, Parser, Subcommand};
use kube::Client;
use queuelet_operator::build::Defaults;
use queuelet_operator::controller::{self, Context};
use queuelet_operator::http::{self, Health};
use queuelet_operator::leader::{LeaderElector, LeaseConfig};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// Kubernetes operator for queuelet message queues.
#[derive(Debug, Parser)]
#[command(name = "queuelet-operator", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the MessageQueue CustomResourceDefinition as YAML (what crds/messagequeue.yaml holds).
    Crd,
    /// Run the controller (the default when no command is given).
    Run,
}

#[derive(Debug, Clone, ClapArgs)]
struct RunArgs {
    /// Image of the queue server for MessageQueues that name none.
    #[arg(long, global = true, env = "QUEUELET_IMAGE", default_value_t = Defaults::default().image)]
    image: String,

    /// Watch only these namespaces, comma-separated (default: every namespace).
    #[arg(
        long,
        global = true,
        env = "WATCH_NAMESPACES",
        value_delimiter = ',',
        num_args = 0..
    )]
    watch_namespaces: Vec<String>,

    /// The cluster's DNS domain, used in status.endpoint and to reach the queue pods.
    #[arg(
        long,
        global = true,
        env = "CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    cluster_domain: String,

    /// MessageQueues reconciled at the same time, per watched namespace (0: no limit).
    #[arg(
        long,
        global = true,
        env = "RECONCILE_CONCURRENCY",
        default_value_t = 8
    )]
    concurrency: u16,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, global = true, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,

    /// Reconcile only while holding a Lease, so several replicas can run.
    #[arg(long, global = true, env = "LEADER_ELECT")]
    leader_elect: bool,

    /// Name of the leader Lease.
    #[arg(
        long,
        global = true,
        env = "LEASE_NAME",
        default_value = "queuelet-operator"
    )]
    lease_name: String,

    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, global = true, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// This replica's identity in the Lease and in events (its pod name).
    #[arg(long, global = true, env = "POD_NAME")]
    identity: Option<String>,

    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "LOG_JSON")]
    log_json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Crd) => {
            print!("{}", queuelet_operator::crd_yaml());
            ExitCode::SUCCESS
        }
        Some(Command::Run) | None => run_blocking(args.run),
    }
}

fn run_blocking(args: RunArgs) -> ExitCode {
    init_logs(args.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "the controller stopped");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

async fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::try_default().await?;
    let defaults = Defaults {
        image: args.image.clone(),
        cluster_domain: args.cluster_domain.clone(),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        defaults,
        args.identity.clone(),
    )?);
    let health = Health {
        metrics: ctx.metrics.clone(),
        ready: Arc::default(),
    };
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.http_addr))?;
    let http = tokio::spawn(http::serve(listener, health.clone(), async {
        let _ = http_stopped.await;
    }));

    let result = if args.leader_elect {
        lead_then_run(&args, client, ctx, &health).await
    } else {
        health.metrics.leader.set(1);
        health.ready.store(true, Ordering::Release);
        run_controllers(&args, &client, ctx).await;
        Ok(())
    };
    let _ = stop_http.send(());
    match http.await {
        Ok(Err(err)) => tracing::warn!(error = %err, "the HTTP endpoints stopped"),
        Err(err) => tracing::warn!(error = %err, "the HTTP task failed"),
        Ok(Ok(())) => {}
    }
    tracing::info!("shut down");
    result
}

/// Waits for the leader Lease (ready meanwhile, as a standby), then runs the controllers
/// while leading. Losing the Lease ends the process with an error, so that a restart
/// starts clean rather than racing the new leader; a shutdown signal releases the Lease
/// so a standby takes over at once.
async fn lead_then_run(
    args: &RunArgs,
    client: Client,
    ctx: Arc<Context>,
    health: &Health,
) -> Result<(), Box<dyn std::error::Error>> {
    let identity = args
        .identity
        .clone()
        .ok_or("--leader-elect needs this replica's identity: set POD_NAME or --identity")?;
    let config = LeaseConfig::new(&args.lease_namespace, &args.lease_name, identity);
    let elector = Arc::new(LeaderElector::new(client.clone(), config));
    let (leading_tx, mut leading) = watch::channel(false);
    let election = tokio::spawn({
        let elector = elector.clone();
        async move { elector.run(leading_tx).await }
    });
    health.ready.store(true, Ordering::Release);

    // Some(true): leading; Some(false): the election ended; None: asked to stop.
    let first = tokio::select! {
        became = leading.wait_for(|leads| *leads) => Some(became.is_ok()),
        () = shutdown_signal() => None,
    };
    let outcome = match first {
        None => Ok(()),
        Some(false) => Err("the leader election stopped".into()),
        Some(true) => {
            health.metrics.leader.set(1);
            tracing::info!(lease = %args.lease_name, "leading: starting the controllers");
            tokio::select! {
                () = run_controllers(args, &client, ctx) => Ok(()),
                _ = leading.wait_for(|leads| !*leads) => {
                    Err("lost the leader Lease: exiting so that a restart starts clean".into())
                }
            }
        }
    };
    health.metrics.leader.set(0);
    if let Err(err) = elector.release().await {
        tracing::warn!(error = %err, "could not release the leader Lease");
    }
    election.abort();
    outcome
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// One Controller per watched namespace (or one over all), until a shutdown signal.
async fn run_controllers(args: &RunArgs, client: &Client, ctx: Arc<Context>) {
    // `WATCH_NAMESPACES=""` (or stray commas) names no namespace: watch them all.
    let named: Vec<&str> = args
        .watch_namespaces
        .iter()
        .map(|ns| ns.trim())
        .filter(|ns| !ns.is_empty())
        .collect();
    let scopes: Vec<Option<&str>> = if named.is_empty() {
        vec![None]
    } else {
        named.into_iter().map(Some).collect()
    };
    tracing::info!(
        namespaces = ?args.watch_namespaces,
        image = %ctx.defaults.image,
        "starting the MessageQueue controller"
    );
    let controllers = scopes
        .into_iter()
        .map(|ns| controller::run(client.clone(), ns, args.concurrency, ctx.clone()));
    futures::future::join_all(controllers).await;
}
