//! Health and metrics endpoints: always open, never authenticated, so probes
//! and Prometheus need no credentials.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::RETRY_AFTER_SECS;
use crate::App;
use crate::connections::broker::Readiness;

/// `GET /healthz`: the process is alive and serving HTTP.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: ready to take traffic; 503 from the moment a shutdown begins,
/// so the load balancer stops sending new clients here, in cluster mode while
/// another node uses this node's id (its cross-node pushes cannot be
/// counted), and (with `--require-redis`) while the Redis bus is down.
/// Its 503 carries `Retry-After` like every other 503 here.
pub async fn readyz(State(app): State<App>) -> Response {
    let retry_after = [(header::RETRY_AFTER, RETRY_AFTER_SECS)];
    if app.shutdown.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            retry_after,
            Json(json!({ "status": "draining" })),
        )
            .into_response()
    } else if app.map.readiness() == Readiness::DuplicateNodeId {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            retry_after,
            Json(json!({ "status": "duplicate node id" })),
        )
            .into_response()
    } else if app.config.broker.require_redis && app.map.readiness() != Readiness::Up {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            retry_after,
            Json(json!({ "status": "redis unavailable" })),
        )
            .into_response()
    } else {
        Json(json!({ "status": "ready" })).into_response()
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::render(&app.prometheus),
    )
        .into_response()
}
