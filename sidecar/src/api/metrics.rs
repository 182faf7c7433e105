//! Prometheus metrics: HTTP requests and latency by route, the log's syncs and commits,
//! and the engine's counters and per-queue backlog read at scrape time.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use parking_lot::RwLock;
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

    /// Counts a request that `timing` started measuring and that answered `status`, in
    /// the series that `route` (the gate the request passed) already found, or else
    /// finds them in the families and keeps them there.
    pub fn record(&self, route: &RouteSeries, timing: Timing, status: StatusCode) {
        let seconds = timing.started.elapsed().as_secs_f64();
        let status = status.as_u16();
        let path = timing
            .route
            .as_ref()
            .map_or("unmatched", MatchedPath::as_str);
        let known = route.0.read().iter().any(|series| {
            let found =
                series.status == status && series.method == timing.method && series.route == path;
            if found {
                series.latency.observe(seconds);
                series.requests.inc();
            }
            found
        });
        if known {
            return;
        }
        let labels = RouteLabels {
            method: method_label(&timing.method),
            route: Cow::Owned(path.to_string()),
        };
        let latency = self.latency.get_or_create_owned(&labels);
        let requests = self.requests.get_or_create_owned(&RequestLabels {
            method: labels.method,
            route: labels.route,
            status,
        });
        latency.observe(seconds);
        requests.inc();
        let mut known = route.0.write();
        if known.len() < RouteSeries::MOST {
            known.push(Series {
                method: timing.method,
                route: path.to_string(),
                status,
                latency,
                requests,
            });
        }
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

/// The series of one route's requests (one per method and status it answered), found in
/// the families once each: recording a request then costs a short scan, no hashing of
/// labels and no allocation.
#[derive(Default)]
pub struct RouteSeries(RwLock<Vec<Series>>);

impl RouteSeries {
    /// More are recorded through the families alone.
    const MOST: usize = 32;
}

struct Series {
    method: Method,
    route: String,
    status: u16,
    latency: Histogram,
    requests: Counter,
}

/// One request being measured: its method and route, taken before the request moves on,
/// and when it started.
pub struct Timing {
    method: Method,
    route: Option<MatchedPath>,
    started: Instant,
}

impl Timing {
    pub fn start(request: &Request) -> Self {
        Self {
            method: request.method().clone(),
            route: request.extensions().get::<MatchedPath>().cloned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(method: Method) -> Timing {
        Timing {
            method,
            route: None,
            started: Instant::now(),
        }
    }

    fn exposition(metrics: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &metrics.registry)
            .expect("encode the registry");
        out
    }

    #[test]
    fn a_route_counts_in_the_series_it_found_once() {
        let metrics = Metrics::new(&LogStats::default());
        let route = RouteSeries::default();
        for _ in 0..3 {
            metrics.record(&route, timing(Method::POST), StatusCode::OK);
        }
        metrics.record(&route, timing(Method::POST), StatusCode::NOT_FOUND);
        metrics.record(&route, timing(Method::HEAD), StatusCode::OK);
        // A second gate of the same route adds to the same series.
        metrics.record(
            &RouteSeries::default(),
            timing(Method::POST),
            StatusCode::OK,
        );
        assert_eq!(route.0.read().len(), 3, "one series per method and status");

        let text = exposition(&metrics);
        for line in [
            r#"queuelet_http_requests_total{method="POST",route="unmatched",status="200"} 4"#,
            r#"queuelet_http_requests_total{method="POST",route="unmatched",status="404"} 1"#,
            r#"queuelet_http_requests_total{method="HEAD",route="unmatched",status="200"} 1"#,
            r#"queuelet_http_request_duration_seconds_count{method="POST",route="unmatched"} 5"#,
            r#"queuelet_http_request_duration_seconds_count{method="HEAD",route="unmatched"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn a_route_keeps_a_bounded_number_of_series() {
        let metrics = Metrics::new(&LogStats::default());
        let route = RouteSeries::default();
        for code in 200..300 {
            let status = StatusCode::from_u16(code).expect("a valid status");
            metrics.record(&route, timing(Method::GET), status);
        }
        assert_eq!(route.0.read().len(), RouteSeries::MOST);
        let text = exposition(&metrics);
        assert!(text.contains(r#"status="299"} 1"#), "{text}");
    }
}
