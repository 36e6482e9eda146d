//! Online queries: `GET /users/{uid}` and `GET /stats`. They read the same
//! [`ConnectionMap`](crate::ConnectionMap) the pushes use, so "online" here
//! means exactly what `ok` means for a push.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde::Serialize;

use super::error::ApiError;
use crate::App;
use crate::connections::broker::BrokerError;
use crate::model::Uid;

/// Answer of `GET /users/{uid}`.
#[derive(Debug, Serialize)]
pub struct UserStatus {
    /// The uid asked about.
    pub uid: Uid,
    /// Whether at least one connection is bound to it.
    pub online: bool,
    /// Connections bound to it on this node.
    pub connections: usize,
    /// Nodes holding at least one of its connections.
    pub nodes: usize,
}

/// Answer of `GET /stats`.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Open WebSocket connections, bound or not.
    pub connections: usize,
    /// Bound connections.
    pub bound_connections: usize,
    /// Distinct bound uids (in cluster mode summed over nodes: a uid held by
    /// two nodes counts twice).
    pub bound_uids: usize,
    /// Nodes in the deployment (1 without a cluster).
    pub nodes: usize,
}

/// `GET /users/{uid}`.
pub async fn user(
    State(app): State<App>,
    uid: Result<Path<String>, PathRejection>,
) -> Result<Json<UserStatus>, ApiError> {
    // A path that is not UTF-8 (`/users/%FF`) is a bad request like any
    // other, answered as a problem document.
    let Path(uid) = uid.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let uid = Uid::new(&uid).map_err(|e| ApiError::BadRequest(format!("invalid uid: {e}")))?;
    let connections = app.map.connections_of(&uid);
    let nodes = app.map.nodes_holding(&uid).await.map_err(unavailable)?;
    Ok(Json(UserStatus {
        uid,
        online: connections > 0 || nodes > 0,
        connections,
        nodes,
    }))
}

/// `GET /stats`: this node's counts, or the cluster's totals in cluster mode
/// (each node reports every two seconds).
pub async fn stats(State(app): State<App>) -> Result<Json<Stats>, ApiError> {
    let totals = app.map.stats().await.map_err(unavailable)?;
    Ok(Json(Stats {
        connections: totals.connections,
        bound_connections: totals.bound_connections,
        bound_uids: totals.bound_uids,
        nodes: totals.nodes,
    }))
}

fn unavailable(e: BrokerError) -> ApiError {
    ApiError::Unavailable(e.to_string())
}
