//! Push delivery for HTTP subscriptions. Pending pushes wait on disk in each
//! subscription's internal queue (so they survive restarts and a publish never waits
//! for an endpoint); one worker per subscription receives them, POSTs each, deletes it
//! on a 2xx, and otherwise hides it until its next try under the subscription's
//! strategy, dropping it when the strategy gives up or the topic's retention ends.
//! Endpoints are `http://` or `https://`; TLS certificates are verified against the
//! system's trusted roots and any CA certificates given with `--push-ca-file`, which is
//! re-read when it changes.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use axum::body::Body;
use http::{Request, StatusCode, header};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::RwLock;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_util::sync::CancellationToken;

use crate::engine::topic::retry_delay;
use crate::engine::{ContentFormat, Engine, EngineError, PushTarget, ReceivedMessage};

/// How long one POST may take.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(15);
const USER_AGENT: &str = "Qcloud Notification Service Agent";
/// Most bytes of an endpoint's answer that are read (and thrown away) so that its
/// connection can serve the next push.
const MAX_ANSWER_BYTES: usize = 64 << 10;

type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// What tells that a file changed: its device, inode, size and modification time (a
/// ConfigMap volume swaps the file behind a symbolic link).
type FileStamp = (u64, u64, u64, Option<SystemTime>);

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino(), meta.len(), meta.modified().ok()))
}

/// The HTTP client pushes go through, over plain HTTP or TLS. Its clones share one
/// client, rebuilt when the CA file changes.
#[derive(Clone)]
pub struct PushClient {
    ca_file: Option<PathBuf>,
    /// The client, and the stamp of the CA file it was built from.
    current: Arc<RwLock<(HttpClient, Option<FileStamp>)>>,
}

impl PushClient {
    /// Trusts the system's root certificates, plus the PEM CA certificates in
    /// `ca_file` (for endpoints whose certificates a private CA issued).
    pub fn new(ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let stamp = ca_file.and_then(stamp);
        let http = build(ca_file)?;
        Ok(Self {
            ca_file: ca_file.map(Path::to_path_buf),
            current: Arc::new(RwLock::new((http, stamp))),
        })
    }

    /// Rebuilds the client when the CA file changed since it was read. A changed file
    /// that cannot be used leaves the previous certificates in force.
    fn reload_if_changed(&self) {
        let Some(path) = &self.ca_file else {
            return;
        };
        let now = stamp(path);
        if now == self.current.read().1 {
            return;
        }
        match build(Some(path)) {
            Ok(http) => {
                *self.current.write() = (http, now);
                tracing::info!(file = %path.display(), "push CA file re-read");
            }
            Err(error) => {
                self.current.write().1 = now;
                tracing::warn!(
                    error = format!("{error:#}"),
                    "the push CA file changed but cannot be used; the previous certificates stay"
                );
            }
        }
    }

    /// POSTs `body` to `endpoint`; the status of the answer.
    async fn post(
        &self,
        endpoint: &str,
        body: Vec<u8>,
        message: &ReceivedMessage,
    ) -> anyhow::Result<StatusCode> {
        let request = Request::post(endpoint)
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::CONTENT_TYPE, "text/plain")
            .header("x-cmq-request-id", message.id.as_str())
            .header("x-cmq-message-id", message.id.as_str())
            .header("x-cmq-message-tag", message.tags.join(", "))
            .body(Body::from(body))
            .context("building the request")?;
        let exchange = async {
            let http = self.current.read().0.clone();
            let response = http.request(request).await?;
            let status = response.status();
            // Only the status counts; reading the answer lets the connection be reused.
            let _ = axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER_BYTES).await;
            anyhow::Ok(status)
        };
        tokio::time::timeout(PUSH_TIMEOUT, exchange)
            .await
            .context("no answer in time")?
    }
}

/// A client trusting the system's root certificates and those in `ca_file`.
fn build(ca_file: Option<&Path>) -> anyhow::Result<HttpClient> {
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::warn!(%error, "cannot read the system's CA certificates for https pushes");
    }
    let (system_roots, unusable) = roots.add_parsable_certificates(system.certs);
    let mut own_roots = 0;
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading the push CA file {}", path.display()))?;
        if certs.is_empty() {
            bail!(
                "the push CA file {} holds no PEM certificate",
                path.display()
            );
        }
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("a certificate in the push CA file {}", path.display()))?;
            own_roots += 1;
        }
    }
    tracing::debug!(system_roots, unusable, own_roots, "https push roots loaded");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions for pushes")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Keeps one worker per HTTP subscription, checking for new or changed ones (and for a
/// changed CA file) every `every`.
pub async fn run(engine: Arc<Engine>, http: PushClient, every: Duration, stop: CancellationToken) {
    let mut workers: HashMap<String, (PushTarget, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        http.reload_if_changed();
        let targets = engine.push_targets();
        workers.retain(|_, (target, handle)| !handle.is_finished() && targets.contains(target));
        for target in targets {
            if !workers.contains_key(&target.queue) {
                let handle = tokio::spawn(worker(
                    engine.clone(),
                    http.clone(),
                    target.clone(),
                    stop.clone(),
                ));
                workers.insert(target.queue.clone(), (target, handle));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn worker(
    engine: Arc<Engine>,
    http: PushClient,
    target: PushTarget,
    stop: CancellationToken,
) {
    tracing::debug!(topic = %target.topic, subscription = %target.subscription, "push worker started");
    loop {
        if stop.is_cancelled() || !engine.push_targets().contains(&target) {
            return;
        }
        let batch = tokio::select! {
            _ = stop.cancelled() => return,
            batch = engine.receive(&target.queue, engine.max_batch(), Some(1)) => batch,
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(EngineError::QueueNotFound(_)) => return,
            Err(error) => {
                tracing::warn!(queue = %target.queue, %error, "cannot read pending pushes");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for message in batch {
            let outcome = post(&http, &target, &message).await;
            if let Err(error) = settle(&engine, &target, message, outcome).await {
                tracing::warn!(queue = %target.queue, %error, "cannot settle a push");
            }
        }
    }
}

/// Deletes a delivered push; hides a failed one until its next try, or drops it.
async fn settle(
    engine: &Engine,
    target: &PushTarget,
    message: ReceivedMessage,
    outcome: Result<(), String>,
) -> Result<(), EngineError> {
    let handle = [message.receipt_handle.clone()];
    let Err(failure) = outcome else {
        return engine
            .delete_messages(&target.queue, &handle)
            .await
            .map(drop);
    };
    let age_seconds = engine.now_ms().saturating_sub(message.enqueued_ms) / 1_000;
    match retry_delay(target.strategy, message.dequeue_count) {
        Some(delay) if age_seconds + u64::from(delay) <= u64::from(target.retention_seconds) => {
            engine
                .change_visibility(&target.queue, &message.receipt_handle, delay)
                .await
                .map(drop)
        }
        _ => {
            tracing::warn!(topic = %target.topic, subscription = %target.subscription,
                message = %message.id, tries = message.dequeue_count, last_failure = %failure,
                "push given up");
            engine
                .delete_messages(&target.queue, &handle)
                .await
                .map(drop)
        }
    }
}

/// POSTs one message: delivered on a 2xx answer (a redirect is not followed), or why not.
async fn post(
    http: &PushClient,
    target: &PushTarget,
    message: &ReceivedMessage,
) -> Result<(), String> {
    let body = match target.format {
        ContentFormat::Simplified => message.body.to_vec(),
        ContentFormat::Json => serde_json::json!({
            "TopicOwner": "",
            "topicName": target.topic,
            "subscriptionName": target.subscription,
            "msgId": message.id,
            "msgBody": String::from_utf8_lossy(&message.body),
            "publishTime": message.enqueued_ms / 1_000,
        })
        .to_string()
        .into_bytes(),
    };
    let failure = match http.post(&target.endpoint, body, message).await {
        Ok(status) if status.is_success() => return Ok(()),
        Ok(status) => format!("answered {status}"),
        Err(error) => format!("{error:#}"),
    };
    tracing::debug!(endpoint = %target.endpoint, %failure, "push failed");
    Err(failure)
}
