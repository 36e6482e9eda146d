//! Logs and metrics.
//!
//! Metric names live here and nowhere else, so `/metrics`, the README and the
//! alert rules agree. Names follow Prometheus conventions (`_total` counters,
//! base units); a uid is never a label (that would be one series per user).
//!
//! Handles are resolved once into [`Metrics`] so the push path does not hash a
//! metric name per push.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::model::Source;

mod names;

pub use names::*;

/// Sets up the tracing subscriber: `RUST_LOG` filters (default `info`), text or
/// JSON lines on standard error.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: files, pipes and journald get
    // plain text, without escape sequences.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second initialisation (tests embedding several servers) is harmless.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The process-wide Prometheus recorder.
///
/// The `metrics` facade has one global recorder per process, so it is built
/// once and its handle shared; servers embedded side by side in one process
/// (tests) share the series.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
                    0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ])
                .expect("static bucket list is not empty")
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(PUSH_BATCH_SIZE.to_owned()),
                    &[
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 256.0, 1024.0, 10_000.0,
                    ],
                )
                .expect("static bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first (an embedding
            // program's); then our handle renders our own, unused, registry.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            process_collector().describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

/// Drains histogram buckets periodically, as the exporter requires when it
/// does not run its own HTTP listener.
pub async fn run_upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(WS_CONNECTIONS, "Open WebSocket connections, bound or not.");
    describe_gauge!(
        BOUND_UIDS,
        "Distinct uids with at least one bound connection."
    );
    describe_counter!(
        PUSHES,
        "Pushes by source and result (ok: at least one connection took it)."
    );
    describe_counter!(BROADCASTS, "Broadcasts by source.");
    describe_counter!(
        DELIVERIES,
        "Messages accepted into a connection's outbound queue."
    );
    describe_counter!(
        DROPPED,
        "Messages not delivered to a bound connection, by reason."
    );
    describe_histogram!(
        PUSH_BATCH_ENQUEUE_SECONDS,
        Unit::Seconds,
        "Time to route and enqueue one batch of pushes (a text-port read's lines, a REST request) for every recipient."
    );
    describe_histogram!(PUSH_BATCH_SIZE, Unit::Count, "Pushes per routed batch.");
    describe_histogram!(
        BROADCAST_ENQUEUE_SECONDS,
        Unit::Seconds,
        "Time to enqueue one broadcast for every bound connection on this node."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by route template and status class."
    );
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        Unit::Seconds,
        "Time from an HTTP request to its answer, by route template."
    );
    describe_gauge!(
        MAX_CONNECTIONS,
        "WebSocket connections the gateway admits at most."
    );
    describe_gauge!(BUILD_INFO, "1, labelled with the build's version.");
    describe_gauge!(
        TEXT_CONNECTIONS,
        "Open connections on the legacy text port."
    );
    describe_counter!(
        DISCONNECTS,
        "WebSocket connections closed by the gateway, by reason."
    );
    describe_counter!(
        TEXT_DISCONNECTS,
        "Text-port connections closed by the gateway, by reason."
    );
    describe_counter!(
        TEXT_ANSWERS_DROPPED,
        "Text-port answers dropped: the client left --text-answer-backlog bytes unread (its lines were still routed)."
    );
    describe_counter!(REJECTED_UPGRADES, "WebSocket upgrades refused, by reason.");
    describe_counter!(PUSH_FAILURES, "Pushes that answered fail, by reason.");
    describe_gauge!(
        REDIS_UP,
        "1 while the Redis bus is connected and subscribed."
    );
    describe_counter!(REDIS_RECONNECTS, "Redis bus reconnections, by reason.");
    describe_histogram!(
        REDIS_PUBLISH_SECONDS,
        Unit::Seconds,
        "Time one Redis PUBLISH took."
    );
    describe_gauge!(REDIS_SUBSCRIPTIONS, "Uid channels this node subscribes to.");
    describe_counter!(
        DUPLICATE_NODE_ID,
        "Times another process using this node's id was detected on the bus."
    );
}

/// Pre-resolved handles for the hot path.
#[derive(Clone)]
pub struct Metrics {
    pub(crate) ws_connections: Gauge,
    pub(crate) bound_uids: Gauge,
    pub(crate) deliveries: Counter,
    pub(crate) dropped_slow: Counter,
    pub(crate) batch_enqueue_seconds: Histogram,
    pub(crate) batch_size: Histogram,
    pub(crate) broadcast_enqueue_seconds: Histogram,
    text_ok: Counter,
    text_fail: Counter,
    http_ok: Counter,
    http_fail: Counter,
}

impl Metrics {
    /// Resolves every handle once.
    pub fn new() -> Self {
        let pushes = |source: &'static str, result: &'static str| metrics::counter!(PUSHES, "source" => source, "result" => result);
        Metrics {
            ws_connections: metrics::gauge!(WS_CONNECTIONS),
            bound_uids: metrics::gauge!(BOUND_UIDS),
            deliveries: metrics::counter!(DELIVERIES),
            dropped_slow: metrics::counter!(DROPPED, "reason" => "slow_consumer"),
            batch_enqueue_seconds: metrics::histogram!(PUSH_BATCH_ENQUEUE_SECONDS),
            batch_size: metrics::histogram!(PUSH_BATCH_SIZE),
            broadcast_enqueue_seconds: metrics::histogram!(BROADCAST_ENQUEUE_SECONDS),
            text_ok: pushes("text", "ok"),
            text_fail: pushes("text", "fail"),
            http_ok: pushes("http", "ok"),
            http_fail: pushes("http", "fail"),
        }
    }

    /// Counts `ok` accepted and `failed` refused pushes at once (a batch).
    pub fn push_results(&self, source: Source, ok: u64, failed: u64) {
        let (ok_counter, fail_counter) = match source {
            Source::Text => (&self.text_ok, &self.text_fail),
            Source::Http => (&self.http_ok, &self.http_fail),
        };
        if ok > 0 {
            ok_counter.increment(ok);
        }
        if failed > 0 {
            fail_counter.increment(failed);
        }
    }

    /// Counts one push's result.
    pub fn push_result(&self, source: Source, ok: bool) {
        self.push_results(source, u64::from(ok), u64::from(!ok));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts a push that answered `fail`.
pub fn push_failed(reason: &'static str) {
    metrics::counter!(PUSH_FAILURES, "reason" => reason).increment(1);
}

/// Counts a WebSocket connection closed by the gateway.
pub fn ws_disconnect(reason: &'static str) {
    metrics::counter!(DISCONNECTS, "reason" => reason).increment(1);
}

/// Counts a text-port connection closed by the gateway.
pub fn text_disconnect(reason: &'static str) {
    metrics::counter!(TEXT_DISCONNECTS, "reason" => reason).increment(1);
}

/// Counts a refused WebSocket upgrade.
pub fn rejected_upgrade(reason: &'static str) {
    metrics::counter!(REJECTED_UPGRADES, "reason" => reason).increment(1);
}

/// Counts and times one HTTP request (see `http::observe`).
pub fn http_request(route: &'static str, status: u16, took: Duration) {
    metrics::counter!(HTTP_REQUESTS, "route" => route, "status_class" => status_class(status))
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_SECONDS, "route" => route).record(took.as_secs_f64());
}

/// `2xx` for 200 and so on: a label with five values, not one per code.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The process metrics (`process_resident_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_cpu_seconds_total`,
/// `process_start_time_seconds`, …), read from `/proc` by the
/// metrics-process crate at each scrape.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Renders `/metrics`, with the process metrics read now.
pub fn render(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

/// Sets the connection cap in force, for the capacity alert.
pub fn set_max_connections(max: usize) {
    metrics::gauge!(MAX_CONNECTIONS).set(max as f64);
}

/// Exports every labelled counter at zero for each of its label values
/// (and the HTTP request counter for every route and status class).
pub fn register_label_values(cluster: bool) {
    let mut lists = LABEL_VALUES.to_vec();
    if cluster {
        lists.extend_from_slice(CLUSTER_LABEL_VALUES);
    }
    for (name, label, values) in lists {
        for value in values {
            metrics::counter!(name, label => *value).increment(0);
        }
    }
    for route in crate::http::observe::ROUTES {
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            metrics::counter!(HTTP_REQUESTS, "route" => route, "status_class" => class)
                .increment(0);
        }
    }
}

/// The gauge of open text-port connections, resolved once per connection
/// (`pushgate_text_connections`).
pub fn text_connections() -> Gauge {
    metrics::gauge!(TEXT_CONNECTIONS)
}

/// The counter of text-port answers dropped for a client that did not read
/// them, resolved once per connection (`pushgate_text_answers_dropped_total`).
pub fn text_answers_dropped() -> Counter {
    metrics::counter!(TEXT_ANSWERS_DROPPED)
}

/// Whether `value` is a listed value of `label` on counter `name` (for the
/// label enums' tests).
pub fn is_listed(name: &str, value: &str) -> bool {
    LABEL_VALUES
        .iter()
        .chain(CLUSTER_LABEL_VALUES)
        .any(|(n, _, values)| *n == name && values.contains(&value))
}
