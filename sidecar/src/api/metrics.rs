//! Prometheus metrics: HTTP requests and latency by route, the log's syncs and commits,
//! and the engine's counters and per-queue backlog read at scrape time.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::engine::Engine;
use crate::store::log_stats::LogStats;

/// A label value: most are known when the program is built.
type Label = Cow<'static, str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: Label,
    route: Label,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: Label,
    route: Label,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    /// Metrics that include what the log's writer reports to `log`.
    pub fn new(log: &LogStats) -> Self {
        let mut registry = Registry::with_prefix("queuelet");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            latency.clone(),
        );
        log.register(&mut registry);
        Self {
            registry,
            requests,
            latency,
        }
    }

    /// Counts a request that `timing` started measuring and that answered `status`.
    pub fn record(&self, timing: Timing, status: StatusCode) {
        self.latency
            .get_or_create(&timing.labels)
            .observe(timing.started.elapsed().as_secs_f64());
        let RouteLabels { method, route } = timing.labels;
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status: status.as_u16(),
            })
            .inc();
    }

    /// The OpenMetrics text of everything, with the engine's figures read now.
    pub fn render(&self, engine: &Engine) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            out.clear();
        }
        let counters = engine.counters();
        for (name, help, value) in [
            (
                "messages_sent",
                "Messages accepted by sends",
                &counters.sent,
            ),
            (
                "messages_received",
                "Messages handed out by receives",
                &counters.received,
            ),
            (
                "messages_deleted",
                "Messages deleted by consumers",
                &counters.deleted,
            ),
            (
                "messages_dead_lettered",
                "Messages moved to a dead-letter queue",
                &counters.dead_lettered,
            ),
            (
                "messages_expired",
                "Messages dropped at the end of their retention",
                &counters.expired,
            ),
            (
                "messages_published",
                "Messages accepted by topic publishes",
                &counters.published,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP queuelet_{name} {help}.\n# TYPE queuelet_{name} counter\nqueuelet_{name}_total {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP queuelet_queue_messages Messages in each queue by state.\n# TYPE queuelet_queue_messages gauge"
        );
        for (queue, stats) in engine.snapshot() {
            for (state, value) in [
                ("active", stats.active),
                ("inactive", stats.inactive),
                ("delayed", stats.delayed),
            ] {
                // Queue names are letters, digits, '-' and '_': nothing to escape.
                let _ = writeln!(
                    out,
                    "queuelet_queue_messages{{queue=\"{queue}\",state=\"{state}\"}} {value}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP queuelet_store_read_only 1 when the store refuses writes after a failed sync.\n# TYPE queuelet_store_read_only gauge\nqueuelet_store_read_only {}",
            u8::from(engine.storage_failure().is_some())
        );
        out.push_str("# EOF\n");
        out
    }
}

/// One request being measured: its labels, taken before the request moves on, and when
/// it started.
pub struct Timing {
    labels: RouteLabels,
    started: Instant,
}

impl Timing {
    /// At most one allocation (the route); the labels move from one family's key to the
    /// other's when the request is recorded.
    pub fn start(request: &Request) -> Self {
        let route = match request.extensions().get::<MatchedPath>() {
            Some(path) => Cow::Owned(path.as_str().to_string()),
            None => Cow::Borrowed("unmatched"),
        };
        Self {
            labels: RouteLabels {
                method: method_label(request.method()),
                route,
            },
            started: Instant::now(),
        }
    }
}

/// The method as a label, borrowed for the methods HTTP defines.
fn method_label(method: &Method) -> Label {
    match *method {
        Method::GET => Cow::Borrowed("GET"),
        Method::POST => Cow::Borrowed("POST"),
        Method::PUT => Cow::Borrowed("PUT"),
        Method::DELETE => Cow::Borrowed("DELETE"),
        Method::HEAD => Cow::Borrowed("HEAD"),
        Method::PATCH => Cow::Borrowed("PATCH"),
        Method::OPTIONS => Cow::Borrowed("OPTIONS"),
        _ => Cow::Owned(method.as_str().to_string()),
    }
}
