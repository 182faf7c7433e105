//! Push subscriptions to HTTP endpoints, at the engine with a controlled clock and a
//! local receiver that fails on purpose: retries follow BACKOFF_RETRY (fixed interval,
//! bounded tries) and EXPONENTIAL_DECAY_RETRY (1, 2, 4 … s), a failing endpoint never
//! blocks publishers, and pending pushes are bounded. Over TLS, an endpoint's
//! certificate must chain to a trusted CA; the real binary trusts `--push-ca-file`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use queuelet::engine::topic::{MAX_PENDING_PUSHES, push_queue_name};
use queuelet::engine::{
    ContentFormat, Engine, EngineConfig, ManualClock, MemoryJournal, NotifyStrategy, Origin,
    SubscriptionSpec, TopicAttributes, TopicMessage,
};
use queuelet::push::PushClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// A local endpoint that answers 500 to its first `fail_first` requests (all of them
/// with `usize::MAX`) and records every request.
struct Receiver {
    url: String,
    requests: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    /// TLS handshakes that failed (the client refused the certificate).
    failed_handshakes: Arc<AtomicUsize>,
}

/// A private CA, and a server certificate for `localhost` that it issued.
struct Pki {
    ca_pem: String,
    acceptor: TlsAcceptor,
}

/// Writes the CA's certificate to a file in `dir`.
fn write_ca(dir: &std::path::Path, pki: &Pki) -> std::path::PathBuf {
    let path = dir.join("ca.pem");
    std::fs::write(&path, &pki.ca_pem).unwrap();
    path
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "queuelet test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    Pki {
        ca_pem: ca.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    }
}

async fn receiver(fail_first: usize) -> Receiver {
    receiver_over(fail_first, None).await
}

/// Serves over TLS with `tls`, at `https://localhost:PORT/hook`.
async fn receiver_over(fail_first: usize, tls: Option<TlsAcceptor>) -> Receiver {
    let requests: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let recorded = requests.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let recorded = recorded.clone();
            let seen = seen.clone();
            async move {
                recorded.lock().push((headers, body));
                if seen.fetch_add(1, Ordering::SeqCst) < fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let failed_handshakes = Arc::new(AtomicUsize::new(0));
    let url = match tls {
        None => {
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://127.0.0.1:{port}/hook")
        }
        Some(acceptor) => {
            tokio::spawn(serve_tls(
                listener,
                acceptor,
                app,
                failed_handshakes.clone(),
            ));
            format!("https://localhost:{port}/hook")
        }
    };
    Receiver {
        url,
        requests,
        failed_handshakes,
    }
}

async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    failed_handshakes: Arc<AtomicUsize>,
) {
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, app, failed) = (acceptor.clone(), app.clone(), failed_handshakes.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                failed.fetch_add(1, Ordering::SeqCst);
                return;
            };
            let service = hyper::service::service_fn(move |request: Request<_>| {
                app.clone().oneshot(request.map(Body::new))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl Receiver {
    fn count(&self) -> usize {
        self.requests.lock().len()
    }

    /// Waits (in real time) until the receiver has seen `n` requests.
    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} requests arrived",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Let the worker settle the answer before the test moves the clock.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Waits until a client refused the receiver's certificate.
    async fn wait_for_refused_handshake(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.failed_handshakes.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "no TLS handshake was tried");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Asserts that no request beyond `n` arrives for a while (the clock stands still).
    async fn stays_at(&self, n: usize) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(self.count(), n, "a try came before its time");
    }
}

struct Setup {
    engine: Arc<Engine>,
    clock: Arc<ManualClock>,
    stop: CancellationToken,
}

async fn setup(endpoint: &str, strategy: NotifyStrategy, format: ContentFormat) -> Setup {
    setup_with(endpoint, strategy, format, PushClient::new(None).unwrap()).await
}

async fn setup_with(
    endpoint: &str,
    strategy: NotifyStrategy,
    format: ContentFormat,
    http: PushClient,
) -> Setup {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let engine = Arc::new(Engine::new(
        EngineConfig::new(0),
        clock.clone(),
        Arc::new(MemoryJournal),
    ));
    engine
        .create_topic("events", TopicAttributes::default(), Origin::Api)
        .await
        .unwrap();
    let spec = SubscriptionSpec {
        endpoint: Some(endpoint.to_string()),
        notify_strategy: strategy,
        notify_content_format: format,
        ..SubscriptionSpec::default()
    };
    engine
        .subscribe("events", "hook", spec, Origin::Api)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(queuelet::push::run(
        engine.clone(),
        http,
        Duration::from_millis(20),
        stop.clone(),
    ));
    Setup {
        engine,
        clock,
        stop,
    }
}

fn message(body: &str) -> TopicMessage {
    TopicMessage {
        body: Bytes::from(body.to_string()),
        tags: vec!["paid".into()],
        routing_key: None,
    }
}

async fn pending(engine: &Engine) -> u64 {
    engine.pending_pushes("events", "hook").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_decay_retries_after_1_then_2_seconds_until_delivered() {
    let endpoint = receiver(2).await;
    let s = setup(
        &endpoint.url,
        NotifyStrategy::ExponentialDecayRetry,
        ContentFormat::Json,
    )
    .await;
    let published = s
        .engine
        .publish("events", vec![message("hello")])
        .await
        .unwrap();
    assert_eq!(published.deliveries, 1);
    endpoint.wait_for(1).await;
    endpoint.stays_at(1).await;
    s.clock.advance(Duration::from_millis(1_000));
    endpoint.wait_for(2).await;
    s.clock.advance(Duration::from_millis(1_000));
    endpoint.stays_at(2).await;
    s.clock.advance(Duration::from_millis(1_000));
    endpoint.wait_for(3).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while pending(&s.engine).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the delivered push is still pending"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (headers, body) = endpoint.requests.lock()[2].clone();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["msgBody"], "hello");
    assert_eq!(json["topicName"], "events");
    assert_eq!(json["subscriptionName"], "hook");
    assert_eq!(headers["x-cmq-message-tag"], "paid");
    assert_eq!(headers["user-agent"], "Qcloud Notification Service Agent");
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_retry_gives_up_after_its_tries_and_never_blocks_publishers() {
    let endpoint = receiver(usize::MAX).await;
    let s = setup(
        &endpoint.url,
        NotifyStrategy::BackoffRetry,
        ContentFormat::Simplified,
    )
    .await;
    s.engine
        .publish("events", vec![message("doomed")])
        .await
        .unwrap();
    endpoint.wait_for(1).await;
    s.clock.advance(Duration::from_secs(5));
    endpoint.stays_at(1).await;
    s.clock.advance(Duration::from_secs(5));
    endpoint.wait_for(2).await;
    s.clock.advance(Duration::from_secs(10));
    endpoint.wait_for(3).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while pending(&s.engine).await > 0 {
        assert!(Instant::now() < deadline, "the push was not given up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.clock.advance(Duration::from_secs(100));
    endpoint.stays_at(3).await;
    assert_eq!(endpoint.requests.lock()[0].1, Bytes::from("doomed"));

    // The endpoint keeps failing; publishing does not wait for it.
    let started = Instant::now();
    for n in 0..50 {
        s.engine
            .publish("events", vec![message(&format!("m{n}"))])
            .await
            .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let attrs = s
        .engine
        .get_queue(&push_queue_name("events", "hook"))
        .await
        .unwrap()
        .attrs;
    assert_eq!(
        attrs.max_backlog, MAX_PENDING_PUSHES,
        "pending pushes are bounded"
    );
    s.stop.cancel();
}

#[tokio::test]
async fn pending_pushes_are_not_user_queues_and_go_with_their_subscription() {
    let s = setup(
        "http://127.0.0.1:9/hook",
        NotifyStrategy::BackoffRetry,
        ContentFormat::Json,
    )
    .await;
    s.stop.cancel();
    let (queues, total) = s.engine.list_queues("", 0, 100).await.unwrap();
    assert_eq!((queues.len(), total), (0, 0));
    assert!(s.engine.snapshot().is_empty());
    let internal = push_queue_name("events", "hook");
    assert!(s.engine.delete_queue(&internal, Origin::Api).await.is_err());
    s.engine
        .unsubscribe("events", "hook", Origin::Api)
        .await
        .unwrap();
    assert!(s.engine.get_queue(&internal).await.is_err());
}

/// Waits until pushes leave nothing pending.
async fn wait_until_settled(engine: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pending(engine).await > 0 {
        assert!(Instant::now() < deadline, "a push is still pending");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_get_pushes_when_their_ca_is_trusted() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &pki);
    let endpoint = receiver_over(0, Some(pki.acceptor)).await;
    let s = setup_with(
        &endpoint.url,
        NotifyStrategy::BackoffRetry,
        ContentFormat::Simplified,
        PushClient::new(Some(&ca_file)).unwrap(),
    )
    .await;
    for body in ["one", "two"] {
        s.engine
            .publish("events", vec![message(body)])
            .await
            .unwrap();
    }
    endpoint.wait_for(2).await;
    wait_until_settled(&s.engine).await;
    let bodies: Vec<Bytes> = endpoint
        .requests
        .lock()
        .iter()
        .map(|r| r.1.clone())
        .collect();
    assert_eq!(bodies, [Bytes::from("one"), Bytes::from("two")]);
    assert_eq!(endpoint.failed_handshakes.load(Ordering::SeqCst), 0);
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_with_an_untrusted_certificate_get_nothing() {
    let endpoint = receiver_over(0, Some(pki().acceptor)).await;
    // The system's roots do not hold the test CA.
    let s = setup(
        &endpoint.url,
        NotifyStrategy::BackoffRetry,
        ContentFormat::Simplified,
    )
    .await;
    s.engine
        .publish("events", vec![message("secret")])
        .await
        .unwrap();
    endpoint.wait_for_refused_handshake().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        endpoint.count(),
        0,
        "a request passed an unverified handshake"
    );
    assert_eq!(
        pending(&s.engine).await,
        1,
        "the push waits for its next try"
    );
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_push_ca_file_is_re_read() {
    let (old_ca, new_ca) = (pki(), pki());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &old_ca);
    // The endpoint's certificate comes from the CA the file does not hold yet.
    let endpoint = receiver_over(0, Some(new_ca.acceptor)).await;
    let s = setup_with(
        &endpoint.url,
        NotifyStrategy::BackoffRetry,
        ContentFormat::Simplified,
        PushClient::new(Some(&ca_file)).unwrap(),
    )
    .await;
    s.engine
        .publish("events", vec![message("rotated")])
        .await
        .unwrap();
    endpoint.wait_for_refused_handshake().await;
    // As a ConfigMap volume does: the new file replaces the old one at once.
    let next = dir.path().join("ca.pem.next");
    std::fs::write(&next, &new_ca.ca_pem).unwrap();
    std::fs::rename(&next, &ca_file).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.clock.advance(Duration::from_secs(10));
    endpoint.wait_for(1).await;
    wait_until_settled(&s.engine).await;
    assert_eq!(endpoint.requests.lock()[0].1, Bytes::from("rotated"));
    s.stop.cancel();
}

#[test]
fn an_unreadable_push_ca_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (path, says) in [
        (&empty, "holds no PEM certificate"),
        (&missing, "reading the push CA file"),
    ] {
        let (status, stderr) = support::run_to_exit(
            &["--push-ca-file", path.to_str().unwrap()],
            Duration::from_secs(15),
        );
        assert!(!status.success());
        assert!(stderr.contains(says), "{stderr}");
        assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pushes_over_tls_with_its_push_ca_file() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_ca(dir.path(), &pki);
    let endpoint = receiver_over(0, Some(pki.acceptor)).await;
    let config = dir.path().join("queuelet.toml");
    std::fs::write(
        &config,
        format!(
            "[topics.events.subscriptions.hook]\nendpoint = \"{}\"\n",
            endpoint.url
        ),
    )
    .unwrap();
    let server = support::Server::start(&[
        "--push-ca-file",
        ca_file.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    let http = reqwest::Client::new();
    let published = http
        .post(format!("{}/v1/topics/events/messages", server.url))
        .json(&serde_json::json!({"body": "over tls"}))
        .send()
        .await
        .unwrap();
    assert!(
        published.status().is_success(),
        "{:?}",
        published.text().await
    );
    endpoint.wait_for(1).await;
    let (headers, body) = endpoint.requests.lock()[0].clone();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["msgBody"], "over tls");
    assert_eq!(headers["user-agent"], "Qcloud Notification Service Agent");
}
