//! The HTTP front end: axum routers for the WebSocket upgrade, the REST push
//! API, health and metrics, served by [`serve`].
//!
//! With `--api-listen` the routes split in two: the public listener serves
//! WebSocket and health alone, the internal one the API and metrics (what a
//! Kubernetes NetworkPolicy wants). Without it, one router serves all.

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

/// Every route on one listener.
pub fn router(app: App) -> Router {
    finish(public_routes().merge(api_routes(&app)), app)
}

/// WebSocket and health only (the public listener when `--api-listen` is set).
pub fn public_router(app: App) -> Router {
    finish(public_routes(), app)
}

/// The REST API, metrics and health (the `--api-listen` listener).
pub fn api_router(app: App) -> Router {
    let health = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    finish(api_routes(&app).merge(health), app)
}

fn public_routes() -> Router<App> {
    Router::new()
        .route("/", get(crate::ws::upgrade))
        .route("/ws", get(crate::ws::upgrade))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
}

fn api_routes(app: &App) -> Router<App> {
    let protected = Router::new()
        .route("/push", post(push::push))
        .route("/push/batch", post(push::push_batch))
        .route("/broadcast", post(push::broadcast))
        .route("/disconnect", post(push::disconnect))
        .route("/users/{uid}", get(query::user))
        .route("/stats", get(query::stats))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            access::require_api_access,
        ))
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes));
    Router::new()
        .route("/metrics", get(health::metrics))
        .merge(protected)
}

fn finish(routes: Router<App>, app: App) -> Router {
    routes
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(app)
}
