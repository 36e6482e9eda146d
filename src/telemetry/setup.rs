//! Setting up logs and the metrics recorder, and rendering `/metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use super::*;
use crate::config::LogFormat;

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
    describe_gauge!(
        SSE_CONNECTIONS,
        "Open Server-Sent Events streams (also counted in pushgate_ws_connections)."
    );
    describe_counter!(
        SSE_DISCONNECTS,
        "SSE streams the gateway ended, by reason (a client that leaves is not counted)."
    );
    describe_counter!(
        SSE_REFUSED,
        "SSE requests refused before the stream started, by reason."
    );
    describe_gauge!(
        HISTORY_MESSAGES,
        "Messages kept in history on this node (single node, --history)."
    );
    describe_gauge!(
        HISTORY_BYTES,
        Unit::Bytes,
        "Bytes history holds on this node: payloads and bookkeeping (single node, --history)."
    );
    describe_counter!(HISTORY_STORED, "Pushes stored in history on this node.");
    describe_counter!(
        HISTORY_EVICTIONS,
        "Messages that left history before being asked to, by reason (size, ttl, memory)."
    );
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
