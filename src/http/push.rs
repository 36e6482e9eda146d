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
        offline: Vec::new(),
    };
    for uid in req.uid.into_unique() {
        let outcome = app.map.push(Source::Http, &uid, &payload).await;
        answer.delivered += outcome.delivered;
        answer.dropped += outcome.dropped;
        if !outcome.is_ok() {
            answer.offline.push(uid);
        }
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
    let outcome = app.map.broadcast(Source::Http, &payload).await;
    Ok(Json(BroadcastResponse {
        delivered: outcome.delivered,
        dropped: outcome.dropped,
    }))
}

/// `POST /disconnect`: close every connection of each uid (close code 4001).
pub async fn disconnect(
    State(app): State<App>,
    JsonBody(req): JsonBody<DisconnectRequest>,
) -> Json<DisconnectResponse> {
    let disconnected = req
        .uid
        .into_unique()
        .iter()
        .map(|uid| app.map.disconnect(uid))
        .sum();
    Json(DisconnectResponse { disconnected })
}
