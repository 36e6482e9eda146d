//! `GET /history/{uid}` and `DELETE /history/{uid}`: a uid's stream as the
//! backend sees it (what a resuming v2 client would be replayed), and the
//! way to start it over. They translate into
//! [`ConnectionMap::history`](crate::ConnectionMap::history) and
//! [`ConnectionMap::delete_history`](crate::ConnectionMap::delete_history)
//! and nothing more.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::error::ApiError;
use crate::App;
use crate::connections::HistoryError;
use crate::model::envelope::Data;
use crate::model::{HistoryDeleted, HistoryMessage, HistoryResponse, Uid};
use crate::store::{HistoryQuery, Order};

/// Messages a page holds when the query names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Most messages one page may hold (`limit`).
pub const MAX_LIMIT: usize = 1000;
/// Most payload bytes one page holds (always at least its first message):
/// `limit` large messages would otherwise make one answer as large as the
/// whole history. A page cut short is continued with `since` = its last
/// offset (oldest first).
pub const PAGE_BYTES: usize = 4 << 20;

/// The query of `GET /history/{uid}`. An unknown parameter is refused: a
/// misspelt `since` would otherwise silently read from the oldest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// Only messages after this offset (exclusive).
    since: Option<u64>,
    /// At most this many messages: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`]
    /// when absent.
    limit: Option<usize>,
    /// Which end of the stream the page starts from.
    order: Option<OrderParam>,
}

/// The query of `DELETE /history/{uid}`: none. A parameter is refused, as
/// for `GET`: a caller that meant to delete part of a stream must learn
/// that the whole stream goes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `order=oldest` (ascending offsets, the default) or `order=newest`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OrderParam {
    Oldest,
    Newest,
}

/// `GET /history/{uid}?since=&limit=&order=`: the stream's epoch, its top
/// offset and the messages asked for. Errors: 400 for a bad uid or query,
/// 404 while history is off, 503 when the store is unreachable.
pub async fn read(
    State(app): State<App>,
    uid: Result<Path<String>, PathRejection>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let uid = path_uid(uid)?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit is 1 to {MAX_LIMIT}, not {limit}"
        )));
    }
    let query = HistoryQuery {
        since: params.since,
        limit,
        order: match params.order {
            Some(OrderParam::Newest) => Order::NewestFirst,
            Some(OrderParam::Oldest) | None => Order::OldestFirst,
        },
        max_bytes: PAGE_BYTES,
    };
    let page = app.map.history(&uid, &query).await.map_err(refusal)?;
    Ok(Json(HistoryResponse {
        uid,
        epoch: page.top.epoch.to_string(),
        offset: page.top.offset,
        messages: page
            .messages
            .into_iter()
            .map(|m| HistoryMessage {
                offset: m.offset,
                data: Data(m.payload),
                time: humantime::format_rfc3339_millis(m.time).to_string(),
            })
            .collect(),
    }))
}

/// `DELETE /history/{uid}`: drops the uid's messages and starts a new
/// epoch at offset 0, so a client resuming across it is told it cannot
/// recover. Errors: as [`read`] (400 also for any query parameter).
pub async fn delete(
    State(app): State<App>,
    uid: Result<Path<String>, PathRejection>,
    params: Result<Query<NoParams>, QueryRejection>,
) -> Result<Json<HistoryDeleted>, ApiError> {
    let uid = path_uid(uid)?;
    params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let top = app.map.delete_history(&uid).await.map_err(refusal)?;
    Ok(Json(HistoryDeleted {
        uid,
        epoch: top.epoch.to_string(),
        offset: top.offset,
    }))
}

/// The uid of the path (percent-decoded by the router), under the rules
/// of every uid: 1 to 256 bytes of UTF-8.
fn path_uid(uid: Result<Path<String>, PathRejection>) -> Result<Uid, ApiError> {
    let Path(uid) = uid.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Uid::new(&uid).map_err(|e| ApiError::BadRequest(format!("invalid uid: {e}")))
}

fn refusal(e: HistoryError) -> ApiError {
    match e {
        HistoryError::Off => ApiError::Disabled(e.to_string()),
        HistoryError::Unavailable(cause) => ApiError::Unavailable(cause.to_string()),
    }
}
