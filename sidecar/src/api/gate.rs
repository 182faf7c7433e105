//! What a routed request passes before its handler: it is measured, and, where the route
//! asks for it, must carry a valid bearer token and wait for the server to be ready.
//!
//! A service of its own rather than `middleware::from_fn`: that clones the route (a boxed
//! service, so an allocation) for every request; this calls the route it holds directly,
//! since admitting a request never waits.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use tower::{Layer, Service};

use super::auth::Tokens;
use super::error::ApiError;
use super::metrics::{Metrics, RouteSeries, Timing};
use super::not_ready;

/// The checks of one group of routes; see the module's text.
#[derive(Clone)]
pub struct GateLayer(Arc<Checks>);

struct Checks {
    metrics: Arc<Metrics>,
    /// When set, must admit the request.
    tokens: Option<Arc<Tokens>>,
    /// When set, must be true (the queues are loaded).
    ready: Option<Arc<AtomicBool>>,
}

impl GateLayer {
    pub fn new(
        metrics: Arc<Metrics>,
        tokens: Option<Arc<Tokens>>,
        ready: Option<Arc<AtomicBool>>,
    ) -> Self {
        Self(Arc::new(Checks {
            metrics,
            tokens,
            ready,
        }))
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, route: S) -> Gate<S> {
        Gate {
            route,
            checks: self.0.clone(),
            series: Arc::default(),
        }
    }
}

impl Checks {
    fn admit(&self, request: &Request) -> Result<(), ApiError> {
        if let Some(tokens) = &self.tokens {
            tokens.check(request.headers())?;
        }
        // The API answers 503 until the queues are loaded.
        match &self.ready {
            Some(ready) if !ready.load(Ordering::Acquire) => Err(not_ready()),
            _ => Ok(()),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    route: S,
    checks: Arc<Checks>,
    /// This route's metric series (a gate guards one route and method).
    series: Arc<RouteSeries>,
}

impl<S> Service<Request> for Gate<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.route.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let timing = Timing::start(&request);
        let checks = self.checks.clone();
        let series = self.series.clone();
        let answer = match checks.admit(&request) {
            Ok(()) => Ok(self.route.call(request)),
            Err(refusal) => Err(refusal.into_response()),
        };
        Box::pin(async move {
            let response = match answer {
                Ok(handled) => handled.await?,
                Err(refused) => refused,
            };
            checks.metrics.record(&series, timing, response.status());
            Ok(response)
        })
    }
}
