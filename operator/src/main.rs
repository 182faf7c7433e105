//! queuelet-operator: reconciles MessageQueue resources into StatefulSets running the
//! queuelet server. Flags and wiring only; the pipeline lives in `controller`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args as ClapArgs, Parser, Subcommand};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::{Controller, controller, watcher};
use kube::{Api, Client, Resource};
use queuelet_operator::build::{Defaults, LABEL_MANAGED_BY, MANAGER};
use queuelet_operator::controller::{Context, error_policy, reconcile};
use queuelet_operator::resource::MessageQueue;
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

    /// Watch only this namespace (default: every namespace).
    #[arg(long, global = true, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,

    /// The cluster's DNS domain, used in status.endpoint.
    #[arg(
        long,
        global = true,
        env = "CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    cluster_domain: String,

    /// MessageQueues reconciled at the same time (0: no limit).
    #[arg(
        long,
        global = true,
        env = "RECONCILE_CONCURRENCY",
        default_value_t = 8
    )]
    concurrency: u16,

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

/// An Api over every namespace, or over the watched one.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run(args: RunArgs) -> Result<(), kube::Error> {
    let client = Client::try_default().await?;
    let ns = args.namespace.as_deref();
    let defaults = Defaults {
        image: args.image,
        cluster_domain: args.cluster_domain,
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        defaults,
        std::env::var("POD_NAME").ok(),
    ));
    tracing::info!(
        namespace = ns.unwrap_or("<all>"),
        image = %ctx.defaults.image,
        "starting the MessageQueue controller"
    );

    // Only the operator's own children: never cache every Secret of the cluster.
    let children = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGER}"));
    Controller::new(
        scoped::<MessageQueue>(&client, ns),
        watcher::Config::default().any_semantic(),
    )
    .owns(scoped::<StatefulSet>(&client, ns), children.clone())
    .owns(scoped::<Service>(&client, ns), children.clone())
    .owns(scoped::<ConfigMap>(&client, ns), children.clone())
    .owns(scoped::<Secret>(&client, ns), children.clone())
    .owns(scoped::<PodDisruptionBudget>(&client, ns), children)
    .with_config(controller::Config::default().concurrency(args.concurrency))
    .shutdown_on_signal()
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
            Err(err) => tracing::debug!(error = %err, "reconcile did not complete"),
        }
    })
    .await;
    tracing::info!("shut down");
    Ok(())
}
