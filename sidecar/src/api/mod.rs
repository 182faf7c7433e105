//! The native JSON API under `/v1`, plus health, readiness, metrics and the OpenAPI
//! document. Handlers parse, call the engine, and map its refusals through `ApiError`.

pub mod auth;
pub mod cmq;
mod envelope;
pub mod error;
mod gate;
pub mod messages;
pub mod metrics;
pub mod model;
mod paging;
pub mod queues;
pub mod topics;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower::{Service, ServiceBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::engine::Engine;
use auth::Tokens;
use envelope::EnvelopeLayer;
use error::ApiError;
use gate::GateLayer;
use metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    /// False until the store is open and declarations are applied.
    pub ready: Arc<AtomicBool>,
    /// SecretId → SecretKey of the CMQ API.
    pub cmq_keys: Arc<cmq::Keys>,
    /// Signatures of the CMQ requests accepted lately, to refuse their replays.
    pub cmq_replays: Arc<cmq::Replays>,
}

#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest request body accepted.
    pub max_request_bytes: usize,
    /// Longest a request may take (above the 30 s long-poll ceiling).
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 4 << 20,
            request_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "queuelet", description = "Durable message queue: native JSON API"),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "queues", description = "Queues and their attributes"),
         (name = "messages", description = "Sending, receiving and deleting messages"),
         (name = "topics", description = "Topics, their subscriptions, and publishing"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes of the native API with their OpenAPI description; both come from the
/// same handler annotations, so they cannot drift apart.
pub fn native_api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(queues::list_queues))
        .routes(routes!(
            queues::create_queue,
            queues::get_queue,
            queues::update_queue,
            queues::delete_queue
        ))
        .routes(routes!(queues::purge_queue))
        .routes(routes!(queues::rewind_queue))
        .routes(routes!(messages::send_message))
        .routes(routes!(messages::send_batch))
        .routes(routes!(messages::receive))
        .routes(routes!(messages::delete_message))
        .routes(routes!(messages::delete_batch))
        .routes(routes!(messages::change_visibility))
        .routes(routes!(topics::list_topics))
        .routes(routes!(
            topics::create_topic,
            topics::get_topic,
            topics::update_topic,
            topics::delete_topic
        ))
        .routes(routes!(topics::publish_message))
        .routes(routes!(topics::publish_batch))
        .routes(routes!(topics::list_subscriptions))
        .routes(routes!(
            topics::subscribe,
            topics::get_subscription,
            topics::update_subscription,
            topics::unsubscribe
        ))
}

/// 201 for something new, 200 when it already existed as asked.
fn created_status(created: crate::engine::Created) -> StatusCode {
    match created {
        crate::engine::Created::New => StatusCode::CREATED,
        crate::engine::Created::AlreadyExisted => StatusCode::OK,
    }
}

/// The whole HTTP surface. Routing comes first, then one gate per route (metrics, and
/// for the native API the bearer token, then readiness); the envelope (request id, trace,
/// timeout, error rendering) and the body limit wrap the router once, as a service,
/// instead of every route: a layer added with `Router::layer` wraps each route and is
/// cloned with it on every request. The result is served as it is (`into_make_service`),
/// not put back into a `Router`, which would route every request twice.
pub fn router(
    state: AppState,
    tokens: Tokens,
    limits: &HttpLimits,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    let (api, openapi) = native_api().split_for_parts();
    let openapi = Arc::new(openapi);
    let gated = |tokens: Option<Arc<Tokens>>, ready: Option<Arc<AtomicBool>>| {
        GateLayer::new(state.metrics.clone(), tokens, ready)
    };
    let api = api.route_layer(gated(Some(Arc::new(tokens)), Some(state.ready.clone())));
    // CMQ clients sign their requests instead of carrying a bearer token.
    let cmq = Router::new()
        .route(cmq::PATH, axum::routing::get(cmq::index).post(cmq::index))
        .route_layer(gated(None, Some(state.ready.clone())));
    let open = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(
            "/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .route_layer(gated(None, None));
    let routes = Router::new()
        .merge(api)
        .merge(cmq)
        .merge(open)
        .fallback(not_found)
        .with_state(state);
    ServiceBuilder::new()
        .layer(EnvelopeLayer::new(limits.request_timeout))
        .layer(DefaultBodyLimit::max(limits.max_request_bytes))
        .service(routes)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /openapi.json",
    )
}

fn not_ready() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        "starting: the queues are still being loaded from disk",
    )
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.ready.load(Ordering::Acquire) {
        Ok(Json(serde_json::json!({"status": "ready"})))
    } else {
        Err(not_ready())
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(&state.engine),
    )
}
