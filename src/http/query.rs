//! Online queries: `GET /users/{uid}` and `GET /stats`. They read the same
//! [`ConnectionMap`](crate::ConnectionMap) the pushes use, so "online" here
//! means exactly what `ok` means for a push.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::error::ApiError;
use crate::App;
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
    /// Distinct bound uids.
    pub bound_uids: usize,
    /// Nodes in the deployment (1 without a cluster).
    pub nodes: usize,
}

/// `GET /users/{uid}`.
pub async fn user(
    State(app): State<App>,
    Path(uid): Path<String>,
) -> Result<Json<UserStatus>, ApiError> {
    let uid = Uid::new(&uid).map_err(|e| ApiError::BadRequest(format!("invalid uid: {e}")))?;
    let connections = app.map.connections_of(&uid);
    Ok(Json(UserStatus {
        uid,
        online: connections > 0,
        connections,
        nodes: usize::from(connections > 0),
    }))
}

/// `GET /stats`.
pub async fn stats(State(app): State<App>) -> Json<Stats> {
    Json(Stats {
        connections: app.map.connections(),
        bound_connections: app.map.bound_connections(),
        bound_uids: app.map.bound_uids(),
        nodes: 1,
    })
}
