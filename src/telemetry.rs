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
/// Time from a push's arrival at the map to the end of its enqueueing.
pub const PUSH_ENQUEUE_SECONDS: &str = "pushgate_push_enqueue_seconds";
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

/// Pushes that answered `fail`, by `reason` (offline, invalid, redis_unavailable).
pub const PUSH_FAILURES: &str = "pushgate_push_failures_total";
/// 1 while the Redis bus is connected and subscribed (cluster mode).
pub const REDIS_UP: &str = "pushgate_redis_up";
/// Redis bus reconnections, by `reason`.
pub const REDIS_RECONNECTS: &str = "pushgate_redis_reconnects_total";
/// Time one PUBLISH took.
pub const REDIS_PUBLISH_SECONDS: &str = "pushgate_redis_publish_seconds";
/// Uid channels this node subscribes to.
pub const REDIS_SUBSCRIPTIONS: &str = "pushgate_redis_subscriptions";

/// Sets up the tracing subscriber: `RUST_LOG` filters (default `info`), text or
/// JSON lines on standard error.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
                .expect("static bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first (an embedding
            // program's); then our handle renders our own, unused, registry.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
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
        PUSH_ENQUEUE_SECONDS,
        Unit::Seconds,
        "Time to route a push, or a batch of pushes, and enqueue it for every recipient."
    );
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
}

/// Pre-resolved handles for the hot path.
#[derive(Clone)]
pub struct Metrics {
    pub(crate) ws_connections: Gauge,
    pub(crate) bound_uids: Gauge,
    pub(crate) deliveries: Counter,
    pub(crate) dropped_slow: Counter,
    pub(crate) enqueue_seconds: Histogram,
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
            enqueue_seconds: metrics::histogram!(PUSH_ENQUEUE_SECONDS),
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
