//! The HTTP front end: one axum router for the WebSocket upgrade, the REST
//! push API, health and metrics, served by [`serve`].

pub mod access;
pub mod error;
pub mod health;
pub mod push;
pub mod query;
mod serve;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};

pub use serve::serve;

use crate::App;
use error::ApiError;

/// Every HTTP route, with `app` as state.
pub fn router(app: App) -> Router {
    let api = Router::new()
        .route("/push", post(push::push))
        .route("/broadcast", post(push::broadcast))
        .route("/users/{uid}", get(query::user))
        .route("/stats", get(query::stats))
        .route_layer(middleware::from_fn(access::local_only))
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes));
    Router::new()
        .route("/", get(crate::ws::upgrade))
        .route("/ws", get(crate::ws::upgrade))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(api)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(app)
}
