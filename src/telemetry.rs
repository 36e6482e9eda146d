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

/// Open WebSocket connections (bound or not).
pub const WS_CONNECTIONS: &str = "pushgate_ws_connections";
/// Distinct uids with at least one bound connection.
pub const BOUND_UIDS: &str = "pushgate_bound_uids";
/// Pushes by `source` (text, http) and `result` (ok, fail).
pub const PUSHES: &str = "pushgate_pushes_total";
/// Broadcasts by `source`.
pub const BROADCASTS: &str = "pushgate_broadcasts_total";
/// Messages accepted into a connection's queue.
pub const DELIVERIES: &str = "pushgate_deliveries_total";
/// Messages not delivered, by `reason`.
pub const DROPPED: &str = "pushgate_dropped_messages_total";
/// Time to route and enqueue one batch of pushes for every recipient: the
/// lines of one text-port read, or one REST request (`/push` with its uids,
/// `/push/batch`). One sample per batch, whatever its size.
pub const PUSH_BATCH_ENQUEUE_SECONDS: &str = "pushgate_push_batch_enqueue_seconds";
/// Pushes per batch (the batches [`PUSH_BATCH_ENQUEUE_SECONDS`] times).
pub const PUSH_BATCH_SIZE: &str = "pushgate_push_batch_size";
/// Time to enqueue one broadcast for every bound connection on this node.
pub const BROADCAST_ENQUEUE_SECONDS: &str = "pushgate_broadcast_enqueue_seconds";
/// HTTP requests by `route` (the template, never a uid) and `status_class`
/// (`2xx`…`5xx`), on both listeners.
pub const HTTP_REQUESTS: &str = "pushgate_http_requests_total";
/// Time from a request's arrival to its answer's head, by `route`.
pub const HTTP_REQUEST_SECONDS: &str = "pushgate_http_request_duration_seconds";
/// WebSocket connections the gateway admits at most (`--max-connections`,
/// or the cap derived from the open-file limit): alert on
/// [`WS_CONNECTIONS`] / this.
pub const MAX_CONNECTIONS: &str = "pushgate_max_connections";
/// 1, labelled with the build's `version`.
pub const BUILD_INFO: &str = "pushgate_build_info";
/// Open connections on the text port.
pub const TEXT_CONNECTIONS: &str = "pushgate_text_connections";
/// WebSocket connections closed by the gateway, by `reason`.
pub const DISCONNECTS: &str = "pushgate_disconnects_total";
/// Text-port connections closed by the gateway, by `reason`.
pub const TEXT_DISCONNECTS: &str = "pushgate_text_disconnects_total";
/// Text-port answers dropped because the client did not read them.
pub const TEXT_ANSWERS_DROPPED: &str = "pushgate_text_answers_dropped_total";
/// WebSocket upgrades refused, by `reason`.
pub const REJECTED_UPGRADES: &str = "pushgate_rejected_upgrades_total";

/// Pushes that answered `fail`, by `reason` (offline, invalid,
/// redis_unavailable, duplicate_node_id).
pub const PUSH_FAILURES: &str = "pushgate_push_failures_total";
/// 1 while the Redis bus is connected and subscribed (cluster mode).
pub const REDIS_UP: &str = "pushgate_redis_up";
/// Redis bus reconnections, by `reason`.
pub const REDIS_RECONNECTS: &str = "pushgate_redis_reconnects_total";
/// Time one PUBLISH took.
pub const REDIS_PUBLISH_SECONDS: &str = "pushgate_redis_publish_seconds";
/// Uid channels this node subscribes to.
pub const REDIS_SUBSCRIPTIONS: &str = "pushgate_redis_subscriptions";
/// Node id conflicts: times another process with this node's id was first
/// heard from after a quiet period.
pub const DUPLICATE_NODE_ID: &str = "pushgate_duplicate_node_id_total";
/// The [`DROPPED`] `reason` of a bus message of a format version this node
/// does not speak (a node of another release on the same channels).
pub const BUS_UNKNOWN_VERSION: &str = "bus_unknown_version";

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

/// Every value the label of each labelled counter takes: each series is
/// exported at zero from the start ([`register_label_values`]), so its
/// first event shows in `rate()` and `increase()` instead of vanishing into
/// a series that appears already at 1. Each module's label enum has a test
/// that its labels are listed here.
pub const LABEL_VALUES: &[(&str, &str, &[&str])] = &[
    (
        PUSH_FAILURES,
        "reason",
        &[
            "offline",
            "invalid",
            "redis_unavailable",
            "duplicate_node_id",
        ],
    ),
    (BROADCASTS, "source", &["text", "http"]),
    (DROPPED, "reason", &["slow_consumer"]),
    (
        DISCONNECTS,
        "reason",
        &[
            "shutdown",
            "bind_timeout",
            "invalid_uid",
            "binary_uid",
            "message_too_big",
            "invalid_utf8",
            "protocol_error",
            "pong_timeout",
            "slow_consumer",
            "kicked",
            "too_many_for_uid",
            "invalid_token",
            "token_expired",
            "write_failed",
        ],
    ),
    (
        TEXT_DISCONNECTS,
        "reason",
        &[
            "not_allowed",
            "line_too_long",
            "idle_timeout",
            "shutdown",
            "io_error",
        ],
    ),
    (
        REJECTED_UPGRADES,
        "reason",
        &[
            "shutting_down",
            "origin",
            "connection_cap",
            "per_ip_cap",
            "per_ip_rate",
        ],
    ),
];

/// [`LABEL_VALUES`] of the cluster bus, exported in cluster mode only.
pub const CLUSTER_LABEL_VALUES: &[(&str, &str, &[&str])] = &[
    (
        REDIS_RECONNECTS,
        "reason",
        &[
            "connect_failed",
            "connection_lost",
            "command_failed",
            "probe_failed",
            "not_master",
        ],
    ),
    (DROPPED, "reason", &["bus_malformed", BUS_UNKNOWN_VERSION]),
];

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

/// Whether `value` is a listed value of `label` on counter `name` (for the
/// label enums' tests).
pub fn is_listed(name: &str, value: &str) -> bool {
    LABEL_VALUES
        .iter()
        .chain(CLUSTER_LABEL_VALUES)
        .any(|(n, _, values)| *n == name && values.contains(&value))
}

/// Counts one broadcast taken from `source`.
pub fn broadcast_taken(source: Source) {
    metrics::counter!(BROADCASTS, "source" => source.as_str()).increment(1);
}

/// Records how long one publish (or pipelined batch) to Redis took.
pub fn redis_publish_took(took: Duration) {
    metrics::histogram!(REDIS_PUBLISH_SECONDS).record(took.as_secs_f64());
}

/// Sets whether the Redis bus is connected and subscribed.
pub fn redis_up(up: bool) {
    metrics::gauge!(REDIS_UP).set(if up { 1.0 } else { 0.0 });
}

/// Counts one loss of the Redis bus, by `reason`.
pub fn redis_reconnect(reason: &'static str) {
    metrics::counter!(REDIS_RECONNECTS, "reason" => reason).increment(1);
}

/// Sets how many uid channels the node subscribes to.
pub fn redis_subscriptions(n: usize) {
    metrics::gauge!(REDIS_SUBSCRIPTIONS).set(n as f64);
}

/// Counts one bus message dropped unread, by `reason`.
pub fn bus_dropped(reason: &'static str) {
    metrics::counter!(DROPPED, "reason" => reason).increment(1);
}

/// Counts the start of a node id conflict.
pub fn duplicate_node_id() {
    metrics::counter!(DUPLICATE_NODE_ID).increment(1);
}
