//! Wiring: build the engine, apply declarations, serve HTTP (on TCP, and on a Unix socket
//! when asked) until a signal, then drain.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::api::auth::Tokens;
use crate::api::metrics::Metrics;
use crate::api::{AppState, HttpLimits, router};
use crate::compaction;
use crate::config::{self, Args, Command, DurabilityMode};
use crate::engine::{Engine, EngineConfig, LateJournal, SystemClock};
use crate::push::PushClient;
use crate::store::file::RealFs;
use crate::store::log::LogOptions;
use crate::store::log_stats::LogStats;
use crate::store::{self, Durability, Store, identity_key};

/// Refuses to expose an unauthenticated server beyond loopback.
pub fn check_exposure(listen: SocketAddr, tokens: &Tokens, insecure: bool) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() && tokens.is_empty() && !insecure {
        bail!(
            "refusing to listen on {listen} without authentication: give tokens with \
             --token-file or QUEUELET_TOKENS, listen on loopback, or pass --insecure"
        );
    }
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Command::Repair) = args.command {
        return repair(&args.data_dir);
    }
    let tokens = Tokens::new(args.load_tokens()?);
    let push = PushClient::new(args.push_ca_file.as_deref())?;
    check_exposure(args.listen, &tokens, args.insecure)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let unix = args.unix_socket.as_deref().map(bind_unix).transpose()?;
    let signals = shutdown_signal()?;

    // Serve health and readiness while the log is read back; the API answers 503 until
    // recovery ends.
    let started = Instant::now();
    let journal = Arc::new(LateJournal::default());
    let engine = Arc::new(Engine::new(
        EngineConfig {
            max_batch: usize::from(args.max_batch),
            id_key: identity_key(&args.data_dir)?,
            ..EngineConfig::new(args.replica_ordinal)
        },
        Arc::new(SystemClock::default()),
        journal.clone(),
    ));
    let log_stats = LogStats::default();
    let ready = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let app = router(
        AppState {
            engine: engine.clone(),
            metrics: Arc::new(Metrics::new(&log_stats)),
            ready: ready.clone(),
            cmq_keys: Arc::new(crate::api::cmq::Keys::new(args.load_cmq_keys()?)),
            cmq_replays: Arc::default(),
        },
        tokens.clone(),
        &HttpLimits {
            max_request_bytes: args.max_request_bytes,
            ..HttpLimits::default()
        },
    );
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("queuelet listening on http://{local}");
    tracing::info!(address = %local, unix_socket = ?args.unix_socket, auth = !tokens.is_empty(),
        replica = args.replica_ordinal, data_dir = %args.data_dir.display(),
        durability = ?args.durability,
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(), "serving");
    let unix_server = unix.map(|listener| {
        tokio::spawn(
            axum::serve(listener, axum::ServiceExt::into_make_service(app.clone()))
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        )
    });
    let server = tokio::spawn(
        axum::serve(listener, axum::ServiceExt::into_make_service(app))
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );

    let store = open(&args, &engine, &journal, log_stats).await?;
    tokio::spawn(compaction::run(
        engine.clone(),
        store.clone(),
        Duration::from_millis(args.compact_interval_ms),
        stop.clone(),
    ));
    if let Some(path) = &args.config {
        config::apply(&engine, path).await?;
        tokio::spawn(config::watch(
            engine.clone(),
            path.clone(),
            Duration::from_millis(args.config_poll_ms.max(100)),
            stop.clone(),
        ));
    }
    tokio::spawn(crate::push::run(
        engine.clone(),
        push,
        Duration::from_secs(1),
        stop.clone(),
    ));
    ready.store(true, Ordering::Release);
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "ready");

    tokio::spawn({
        let stop = stop.clone();
        let engine = engine.clone();
        async move {
            signals.await;
            tracing::info!("shutting down: finishing requests in flight");
            engine.release_waiters();
            stop.cancel();
        }
    });
    server
        .await
        .context("the HTTP server task failed")?
        .context("serving HTTP")?;
    if let Some(unix_server) = unix_server {
        unix_server
            .await
            .context("the Unix socket server task failed")?
            .context("serving HTTP on the Unix socket")?;
    }
    if let Some(path) = &args.unix_socket
        && let Err(error) = std::fs::remove_file(path)
    {
        tracing::warn!(socket = %path.display(), %error, "cannot remove the Unix socket");
    }
    store.close();
    tracing::info!("stopped");
    Ok(())
}

/// Binds the Unix socket at `path`. A socket an earlier run left there is replaced, but
/// not one that a running server still answers on, nor a file of another kind. Only the
/// owner and the group may connect (0660).
pub fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("another process serves on {}", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket: not replacing it",
            path.display()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("inspecting {}", path.display())),
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the Unix socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("restricting {} to its owner and group", path.display()))?;
    Ok(listener)
}

/// Opens the data directory, rebuilds the engine from its log, and makes the log the
/// engine's journal.
async fn open(
    args: &Args,
    engine: &Arc<Engine>,
    journal: &Arc<LateJournal>,
    stats: LogStats,
) -> anyhow::Result<Arc<Store>> {
    let data_dir = args.data_dir.clone();
    let options = LogOptions {
        durability: match args.durability {
            DurabilityMode::Fsync => Durability::Fsync,
            DurabilityMode::Interval => {
                Durability::Interval(Duration::from_millis(args.sync_interval_ms))
            }
        },
        segment_bytes: args.segment_bytes,
        stats,
        ..LogOptions::default()
    };
    let started = Instant::now();
    let replay_into = engine.clone();
    let (store, recovered) = tokio::task::spawn_blocking(move || {
        Store::open(&data_dir, options, Arc::new(RealFs), &mut |record| {
            replay_into.replay(record)
        })
    })
    .await
    .context("the recovery task failed")??;
    let store = Arc::new(store);
    journal.set(store.clone());
    engine.start_replayed();
    tracing::info!(
        records = recovered.records,
        segments = recovered.segments.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "log recovered"
    );
    Ok(store)
}

fn repair(data_dir: &Path) -> anyhow::Result<()> {
    let log_dir = data_dir.join("log");
    let report = store::repair::repair(&log_dir)
        .with_context(|| format!("repairing {}", log_dir.display()))?;
    println!("kept {} records", report.kept_records);
    for (file, offset, bytes) in &report.dropped {
        println!(
            "dropped {bytes} bytes of {} at offset {offset}",
            file.display()
        );
    }
    if report.dropped.is_empty() {
        println!("nothing was damaged");
    }
    if let Some(copy) = &report.damaged_copy {
        println!("the previous log is kept in {}", copy.display());
    }
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C; the handlers are installed when this returns.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
