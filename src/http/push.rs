//! `POST /push` and `POST /broadcast`: the REST equivalents of the text port.
//! They translate JSON into [`ConnectionMap`](crate::ConnectionMap) calls and
//! nothing more.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::App;
use crate::connections::{PushOutcome, RouteError};
use crate::model::{
    BatchRequest, BatchResponse, BatchResult, BroadcastRequest, BroadcastResponse,
    DisconnectRequest, DisconnectResponse, Payload, PushRequest, PushResponse, Source, StoredAt,
    Uid, payload_from_data,
};
use crate::net::problem::ApiError;

/// A JSON body whose every failure is a problem document: 415 for another
/// content type, 413 past the body limit (at once, before any of the body is
/// read or `100 Continue` sent, when `Content-Length` already says so), 408
/// when the body does not arrive within `--body-read-timeout`, 400 for
/// invalid JSON or a missing field (axum's own `Json` answers some of these
/// in plain text or as 422).
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
        let limit = app.config.http.max_body_bytes;
        // An unparsable length is hyper's to refuse; it never gets here.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        let timeout = app.config.http.body_read_timeout;
        let body = tokio::time::timeout(timeout, Bytes::from_request(req, app))
            .await
            .map_err(|_| ApiError::BodyTimeout(timeout))?
            .map_err(|rejection| {
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

/// `POST /push`: deliver `data` to every connection of each uid. When the
/// cluster bus cannot route some uids, the 503 problem carries the answer's
/// members (`delivered`, `dropped`, `remote_deliveries`, `offline`) and the
/// `unrouted` uids: what was delivered anyway, so a retry can be limited to
/// the unrouted uids.
pub async fn push(
    State(app): State<App>,
    JsonBody(req): JsonBody<PushRequest>,
) -> Result<Json<PushResponse>, ApiError> {
    let routed = route(&app, vec![req])
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    if let Some(cause) = routed.cause {
        let uids: Vec<&str> = routed.unrouted.iter().map(Uid::as_str).collect();
        let detail = format!(
            "{cause}: not routed to {}; delivered to {} local connection(s)",
            uids.join(", "),
            routed.answer.delivered
        );
        let mut done = members(&routed.answer);
        done.insert("unrouted".into(), serde_json::json!(routed.unrouted));
        return Err(ApiError::Incomplete(detail, done));
    }
    Ok(Json(routed.answer))
}

/// An answer's members, for a problem document's extension members.
fn members(answer: &impl serde::Serialize) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(answer) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

/// Most pushes one `POST /push/batch` may carry.
pub const MAX_PUSHES_PER_BATCH: usize = 10_000;

/// `POST /push/batch`: many pushes in one request, each answered like
/// `POST /push`, in order. A push that Redis could not route lists its uids
/// in `unrouted` instead of failing the whole batch.
pub async fn push_batch(
    State(app): State<App>,
    JsonBody(req): JsonBody<BatchRequest>,
) -> Result<Json<BatchResponse>, ApiError> {
    if req.pushes.is_empty() {
        return Err(ApiError::BadRequest(
            "pushes is an empty list: give at least one push".into(),
        ));
    }
    if req.pushes.len() > MAX_PUSHES_PER_BATCH {
        return Err(ApiError::BadRequest(format!(
            "a batch carries at most {MAX_PUSHES_PER_BATCH} pushes, not {}",
            req.pushes.len()
        )));
    }
    let mut answer = BatchResponse {
        delivered: 0,
        dropped: 0,
        remote_deliveries: 0,
        results: Vec::with_capacity(req.pushes.len()),
    };
    for routed in route(&app, req.pushes).await? {
        answer.delivered += routed.answer.delivered;
        answer.dropped += routed.answer.dropped;
        answer.remote_deliveries += routed.answer.remote_deliveries;
        answer.results.push(BatchResult {
            push: routed.answer,
            unrouted: routed.unrouted,
        });
    }
    Ok(Json(answer))
}

/// One push's answer, plus the uids the bus could not route and why.
#[derive(Default)]
struct Routed {
    answer: PushResponse,
    unrouted: Vec<Uid>,
    cause: Option<crate::connections::broker::BrokerError>,
}

/// Routes REST pushes, each to each of its uids, through one
/// [`ConnectionMap::push_batch`](crate::ConnectionMap::push_batch) call: the
/// (uid, payload) pairs in order, the routing table locked once per 64 and,
/// in cluster mode, one pipelined Redis round trip for all of them instead
/// of one per uid. Every push's `data` is checked first, so a bad request
/// delivers nothing. The answers come back one per push, in order.
async fn route(app: &App, reqs: Vec<PushRequest>) -> Result<Vec<Routed>, ApiError> {
    let mut pairs: Vec<(Uid, Payload)> = Vec::with_capacity(reqs.len());
    // Where each push's pairs end in `pairs`.
    let mut ends = Vec::with_capacity(reqs.len());
    for req in reqs {
        let payload = payload_from_data(&req.data)
            .map_err(|e| ApiError::BadRequest(format!("invalid data: {e}")))?;
        for uid in req.uid.into_unique() {
            pairs.push((uid, payload.clone()));
        }
        ends.push(pairs.len());
    }
    let results = app.map.push_batch(Source::Http, &pairs).await;
    let history = app.map.history_enabled();
    let mut answers = pairs.into_iter().map(|(uid, _)| uid).zip(results);
    let mut routed = Vec::with_capacity(ends.len());
    let mut start = 0;
    for end in ends {
        let mut one = Routed::default();
        let mut stored = Vec::new();
        for (uid, result) in answers.by_ref().take(end - start) {
            let outcome = match result {
                Ok(outcome) => {
                    if !outcome.is_ok() {
                        one.answer.offline.push(uid.clone());
                    }
                    outcome
                }
                // Not offline: unknown, since Redis could not be asked.
                Err(RouteError::ClusterUnavailable(outcome, cause)) => {
                    one.unrouted.push(uid.clone());
                    one.cause = Some(cause);
                    outcome
                }
            };
            one.answer.delivered += outcome.delivered;
            one.answer.dropped += outcome.dropped;
            one.answer.remote_deliveries += outcome.remote_nodes;
            if let Some(at) = outcome.stored {
                stored.push(StoredAt {
                    uid,
                    offset: at.offset,
                    epoch: at.epoch.to_string(),
                });
            }
        }
        if history {
            if let ([at], 1) = (stored.as_slice(), end - start) {
                one.answer.offset = Some(at.offset);
                one.answer.epoch = Some(at.epoch.clone());
            }
            one.answer.stored = Some(stored);
        }
        start = end;
        routed.push(one);
    }
    Ok(routed)
}

/// `POST /broadcast`: deliver `data` to every bound connection. When the
/// cluster bus is unavailable, the local connections have it already: the
/// 503 problem says so (`delivered`, `dropped`), and a retry would repeat it
/// for them.
pub async fn broadcast(
    State(app): State<App>,
    JsonBody(req): JsonBody<BroadcastRequest>,
) -> Result<Json<BroadcastResponse>, ApiError> {
    let payload = payload_from_data(&req.data)
        .map_err(|e| ApiError::BadRequest(format!("invalid data: {e}")))?;
    let answer = |outcome: PushOutcome| BroadcastResponse {
        delivered: outcome.delivered,
        dropped: outcome.dropped,
        remote_deliveries: outcome.remote_nodes,
    };
    match app.map.broadcast(Source::Http, &payload).await {
        Ok(outcome) => Ok(Json(answer(outcome))),
        Err(RouteError::ClusterUnavailable(outcome, cause)) => Err(ApiError::Incomplete(
            format!(
                "{cause}: delivered to {} local connection(s) only; other nodes were not \
                 reached, and a retry delivers again to these",
                outcome.delivered
            ),
            members(&answer(outcome)),
        )),
    }
}

/// `POST /disconnect`: close every connection of each uid (close code 4001),
/// on every node. The answer counts the connections closed here and the
/// other nodes the request reached; when the bus cannot reach them, every
/// uid is still closed locally and the 503 problem lists the `unrouted`
/// uids beside those counts (a retry is harmless: closing is idempotent).
pub async fn disconnect(
    State(app): State<App>,
    JsonBody(req): JsonBody<DisconnectRequest>,
) -> Result<Json<DisconnectResponse>, ApiError> {
    let mut answer = DisconnectResponse {
        disconnected: 0,
        remote_deliveries: 0,
    };
    let mut unrouted = Vec::new();
    let mut cause = None;
    for uid in req.uid.into_unique() {
        let outcome = match app.map.disconnect(&uid).await {
            Ok(outcome) => outcome,
            Err(RouteError::ClusterUnavailable(outcome, e)) => {
                cause = Some(e);
                unrouted.push(uid);
                outcome
            }
        };
        answer.disconnected += outcome.delivered;
        answer.remote_deliveries += outcome.remote_nodes;
    }
    if let Some(cause) = cause {
        let mut done = members(&answer);
        done.insert("unrouted".into(), serde_json::json!(unrouted));
        return Err(ApiError::Incomplete(
            format!(
                "{cause}: other nodes were not told to close {}; {} local connection(s) closed",
                unrouted
                    .iter()
                    .map(Uid::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
                answer.disconnected
            ),
            done,
        ));
    }
    Ok(Json(answer))
}
