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

use crate::model::Source;

mod setup;

pub use setup::{init_tracing, prometheus, render, run_upkeep};

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
            "missed_messages",
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

/// Counts and times one HTTP request (see `http::observe`): an array index
/// and two atomic adds. The handles are resolved once (`HttpMetrics`):
/// looking a labelled series up by name on every request cost REST 11 % of
/// its CPU per request (BENCHMARKS.md).
pub fn http_request(route: &'static str, status: u16, took: Duration) {
    let m = http_metrics();
    let i = route_index(route);
    m.requests[i][class_index(status)].increment(1);
    m.durations[i].record(took.as_secs_f64());
}

/// The status classes, in the order of [`class_index`].
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `2xx` for 200 and so on: a label with five values, not one per code.
fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// Where `route` stands in `http::observe::ROUTES` (unknown routes count as
/// `unmatched`, the last).
fn route_index(route: &str) -> usize {
    let routes = &crate::http::observe::ROUTES;
    routes
        .iter()
        .position(|r| std::ptr::eq(*r, route) || *r == route)
        .unwrap_or(routes.len() - 1)
}

/// Every HTTP series' handle, per route and status class.
struct HttpMetrics {
    requests: Vec<[Counter; 5]>,
    durations: Vec<Histogram>,
}

fn http_metrics() -> &'static HttpMetrics {
    static METRICS: OnceLock<HttpMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let routes = crate::http::observe::ROUTES;
        HttpMetrics {
            requests: routes
                .iter()
                .map(|route| {
                    STATUS_CLASSES.map(|class| {
                        metrics::counter!(HTTP_REQUESTS, "route" => *route, "status_class" => class)
                    })
                })
                .collect(),
            durations: routes
                .iter()
                .map(|route| metrics::histogram!(HTTP_REQUEST_SECONDS, "route" => *route))
                .collect(),
        }
    })
}

/// Sets the connection cap in force, for the capacity alert.
pub fn set_max_connections(max: usize) {
    metrics::gauge!(MAX_CONNECTIONS).set(max as f64);
}

/// Exports every labelled counter at zero for each of its label values
/// (and the HTTP request counter for every route and status class).
pub fn register_label_values(cluster: bool) {
    // The series without labels that would otherwise appear only with their
    // first event.
    metrics::gauge!(TEXT_CONNECTIONS).increment(0.0);
    metrics::counter!(TEXT_ANSWERS_DROPPED).increment(0);
    if cluster {
        metrics::counter!(DUPLICATE_NODE_ID).increment(0);
    }
    let mut lists = LABEL_VALUES.to_vec();
    if cluster {
        lists.extend_from_slice(CLUSTER_LABEL_VALUES);
    }
    for (name, label, values) in lists {
        for value in values {
            metrics::counter!(name, label => *value).increment(0);
        }
    }
    for route in http_metrics().requests.iter() {
        for counter in route {
            counter.increment(0);
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

// History (the message store, `--history`). Exported only while history is
// on: the store registers every series at zero when it starts.

/// Messages kept in history on this node (a single node's memory store).
pub const HISTORY_MESSAGES: &str = "pushgate_history_messages";
/// Bytes the history holds by its own accounting: each message's payload
/// plus its bookkeeping, and each uid's stream record.
pub const HISTORY_BYTES: &str = "pushgate_history_bytes";
/// Pushes stored in history.
pub const HISTORY_STORED: &str = "pushgate_history_stored_total";
/// Messages dropped from history before anyone deleted them, by `reason`:
/// `size` (`--history-size` per uid), `ttl` (`--history-ttl` of age),
/// `memory` (`--history-memory` in all; the oldest of any uid go first).
pub const HISTORY_EVICTIONS: &str = "pushgate_history_evictions_total";

/// Why a message left history unasked: the `reason` of [`HISTORY_EVICTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Past `--history-size` messages of its uid.
    Size,
    /// Older than `--history-ttl`.
    Ttl,
    /// Past `--history-memory` in all.
    Memory,
}

impl Eviction {
    /// Every reason, in the order of [`HistoryMetrics`]' handles.
    pub const ALL: [Eviction; 3] = [Eviction::Size, Eviction::Ttl, Eviction::Memory];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Eviction::Size => "size",
            Eviction::Ttl => "ttl",
            Eviction::Memory => "memory",
        }
    }
}

/// The history's handles, resolved once (every series exported at zero).
#[derive(Clone)]
pub struct HistoryMetrics {
    messages: Gauge,
    bytes: Gauge,
    stored: Counter,
    evictions: [Counter; 3],
}

impl std::fmt::Debug for HistoryMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HistoryMetrics")
    }
}

impl HistoryMetrics {
    /// Resolves every handle and exports each series at zero.
    pub fn new() -> HistoryMetrics {
        let m = HistoryMetrics {
            messages: metrics::gauge!(HISTORY_MESSAGES),
            bytes: metrics::gauge!(HISTORY_BYTES),
            stored: metrics::counter!(HISTORY_STORED),
            evictions: Eviction::ALL
                .map(|r| metrics::counter!(HISTORY_EVICTIONS, "reason" => r.as_str())),
        };
        m.messages.set(0.0);
        m.bytes.set(0.0);
        m.stored.increment(0);
        for counter in &m.evictions {
            counter.increment(0);
        }
        m
    }

    /// Sets what the history holds: `messages`, and `bytes` by its accounting.
    pub fn retained(&self, messages: usize, bytes: usize) {
        self.messages.set(messages as f64);
        self.bytes.set(bytes as f64);
    }

    /// Counts one push stored.
    pub fn stored(&self) {
        self.stored.increment(1);
    }

    /// Counts one message evicted for `reason`.
    pub fn evicted(&self, reason: Eviction) {
        self.evictions[reason as usize].increment(1);
    }
}

impl Default for HistoryMetrics {
    fn default() -> Self {
        Self::new()
    }
}

// Server-Sent Events. Series of their own rather than a `transport` label
// on the WebSocket ones: `pushgate_disconnects_total{reason="…"}` and
// `pushgate_rejected_upgrades_total{reason="…"}` are matched label for label
// by dashboards, alerts and tests, and a new label would rename every
// series. An SSE stream holds a map connection like a WebSocket does, so
// `pushgate_ws_connections` (and the `--max-connections` cap) count both;
// [`SSE_CONNECTIONS`] is the SSE part.

/// Open Server-Sent Events streams (also counted in [`WS_CONNECTIONS`]).
pub const SSE_CONNECTIONS: &str = "pushgate_sse_connections";
/// SSE streams ended by the gateway, by `reason` (the WebSocket
/// [`DISCONNECTS`] labels that apply to SSE).
pub const SSE_DISCONNECTS: &str = "pushgate_sse_disconnects_total";
/// SSE requests refused before the stream started, by `reason`.
pub const SSE_REFUSED: &str = "pushgate_sse_refused_total";

/// [`LABEL_VALUES`] of the SSE series, exported at zero from the start
/// ([`register_sse_label_values`]).
pub const SSE_LABEL_VALUES: &[(&str, &str, &[&str])] = &[
    (
        SSE_DISCONNECTS,
        "reason",
        &[
            "shutdown",
            "slow_consumer",
            "kicked",
            "too_many_for_uid",
            "token_expired",
            "write_failed",
            "missed_messages",
        ],
    ),
    (
        SSE_REFUSED,
        "reason",
        &[
            "not_acceptable",
            "shutting_down",
            "origin",
            "bad_request",
            "connection_cap",
            "per_ip_cap",
            "per_ip_rate",
            "no_token",
            "invalid_token",
            "token_expired",
            "head_timeout",
            "head_too_large",
        ],
    ),
];

/// Exports the SSE series at zero.
pub fn register_sse_label_values() {
    metrics::gauge!(SSE_CONNECTIONS).increment(0.0);
    for (name, label, values) in SSE_LABEL_VALUES {
        for value in *values {
            metrics::counter!(*name, *label => *value).increment(0);
        }
    }
}

/// One more (`1.0`) or one less (`-1.0`) open SSE stream.
pub fn sse_streams(change: f64) {
    metrics::gauge!(SSE_CONNECTIONS).increment(change);
}

/// Counts an SSE stream ended by the gateway.
pub fn sse_disconnect(reason: &'static str) {
    metrics::counter!(SSE_DISCONNECTS, "reason" => reason).increment(1);
}

/// Counts a refused SSE request.
pub fn sse_refused(reason: &'static str) {
    metrics::counter!(SSE_REFUSED, "reason" => reason).increment(1);
}

/// Whether `value` is a listed value of `label` on SSE counter `name`.
pub fn is_listed_sse(name: &str, value: &str) -> bool {
    SSE_LABEL_VALUES
        .iter()
        .any(|(n, _, values)| *n == name && values.contains(&value))
}
