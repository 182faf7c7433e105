//! Wiring: build the engine, apply declarations, serve HTTP until a signal, then drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::auth::Tokens;
use crate::api::metrics::Metrics;
use crate::api::{AppState, HttpLimits, router};
use crate::config::{self, Args};
use crate::engine::{Engine, EngineConfig, MemoryJournal, SystemClock};

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
    let tokens = Tokens::new(args.load_tokens()?);
    check_exposure(args.listen, &tokens, args.insecure)?;
    let engine = Arc::new(Engine::new(
        EngineConfig {
            max_batch: usize::from(args.max_batch),
            ..EngineConfig::new(args.replica_ordinal)
        },
        Arc::new(SystemClock::default()),
        Arc::new(MemoryJournal),
    ));
    let state = AppState {
        engine: engine.clone(),
        metrics: Arc::new(Metrics::default()),
        ready: Arc::new(AtomicBool::new(false)),
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;

    let stop = CancellationToken::new();
    if let Some(path) = &args.config {
        config::apply(&engine, path).await?;
        tokio::spawn(config::watch(
            engine.clone(),
            path.clone(),
            Duration::from_millis(args.config_poll_ms.max(100)),
            stop.clone(),
        ));
    }
    state.ready.store(true, Ordering::Release);

    let app = router(
        state,
        tokens.clone(),
        &HttpLimits {
            max_request_bytes: args.max_request_bytes,
            ..HttpLimits::default()
        },
    );
    // Install the signal handlers before announcing the address, so a SIGTERM that
    // follows the announcement is always handled gracefully.
    let signals = shutdown_signal()?;
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("queuelet listening on http://{local}");
    tracing::info!(address = %local, auth = !tokens.is_empty(), replica = args.replica_ordinal, "serving");

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
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        .context("serving HTTP")?;
    tracing::info!("stopped");
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
