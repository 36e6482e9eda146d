//! `POST /push` and `POST /broadcast`: the REST equivalents of the text port.
//! They translate JSON into [`ConnectionMap`](crate::ConnectionMap) calls and
//! nothing more.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::App;
use crate::connections::RouteError;
use crate::model::{
    BroadcastRequest, BroadcastResponse, DisconnectRequest, DisconnectResponse, PushRequest,
    PushResponse, Source, payload_from_data,
};

/// A JSON body whose every failure is a problem document: 415 for another
/// content type, 413 past the body limit, 400 for invalid JSON or a missing
/// field (axum's own `Json` answers some of these in plain text or as 422).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<App> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = app.config.max_body_bytes;
        let body = Bytes::from_request(req, app).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })?;
        serde_json::from_slice(&body)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
    }
}

/// `POST /push`: deliver `data` to every connection of each uid.
pub async fn push(
    State(app): State<App>,
    JsonBody(req): JsonBody<PushRequest>,
) -> Result<Json<PushResponse>, ApiError> {
    let payload = payload_from_data(&req.data)
        .map_err(|e| ApiError::BadRequest(format!("invalid data: {e}")))?;
    let mut answer = PushResponse {
        delivered: 0,
        dropped: 0,
        nodes: 0,
        offline: Vec::new(),
    };
    let mut unknown = Vec::new();
    for uid in req.uid.into_unique() {
        let outcome = match app.map.push(Source::Http, &uid, &payload).await {
            Ok(outcome) => outcome,
            Err(RouteError::ClusterUnavailable(outcome)) => {
                unknown.push(uid.to_string());
                outcome
            }
        };
        answer.delivered += outcome.delivered;
        answer.dropped += outcome.dropped;
        answer.nodes += outcome.nodes;
        if !outcome.is_ok() {
            answer.offline.push(uid);
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "Redis is unavailable: not delivered to {}; delivered to {} local connection(s)",
            unknown.join(", "),
            answer.delivered
        )));
    }
    Ok(Json(answer))
}

/// `POST /broadcast`: deliver `data` to every bound connection.
pub async fn broadcast(
    State(app): State<App>,
    JsonBody(req): JsonBody<BroadcastRequest>,
) -> Result<Json<BroadcastResponse>, ApiError> {
    let payload = payload_from_data(&req.data)
        .map_err(|e| ApiError::BadRequest(format!("invalid data: {e}")))?;
    match app.map.broadcast(Source::Http, &payload).await {
        Ok(outcome) => Ok(Json(BroadcastResponse {
            delivered: outcome.delivered,
            dropped: outcome.dropped,
            nodes: outcome.nodes,
        })),
        Err(RouteError::ClusterUnavailable(outcome)) => Err(ApiError::Unavailable(format!(
            "Redis is unavailable: delivered to {} local connection(s) only",
            outcome.delivered
        ))),
    }
}

/// `POST /disconnect`: close every connection of each uid (close code 4001),
/// on every node.
pub async fn disconnect(
    State(app): State<App>,
    JsonBody(req): JsonBody<DisconnectRequest>,
) -> Result<Json<DisconnectResponse>, ApiError> {
    let mut disconnected = 0;
    for uid in req.uid.into_unique() {
        match app.map.disconnect(&uid).await {
            Ok(n) => disconnected += n,
            Err(RouteError::ClusterUnavailable(_)) => {
                return Err(ApiError::Unavailable(
                    "Redis is unavailable: other nodes were not told".into(),
                ));
            }
        }
    }
    Ok(Json(DisconnectResponse { disconnected }))
}
