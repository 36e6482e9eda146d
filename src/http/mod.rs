//! The HTTP front end: axum routers for the WebSocket upgrade, the REST push
//! API, health and metrics, served by [`serve()`].
//!
//! Two listeners, two routers. The public one ([`public_router`], `--listen`)
//! serves WebSocket and health, and the REST API only when API keys are
//! configured; `/metrics` never. The API one ([`api_router`],
//! `--api-listen`, loopback by default) serves REST, metrics and health, and
//! never WebSocket. An unkeyed API is thus never reachable through the public
//! listener, whatever a proxy in front of it does (see [`access`]).

pub mod access;
pub mod health;
pub mod history;
pub mod observe;
pub mod push;
pub mod query;
mod serve;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{MethodRouter, delete, get, post};

pub use serve::serve;

// REST handlers name their refusals `super::error::ApiError`; the type lives
// in the neutral `net` module because the WebSocket upgrade answers with it too.
pub(crate) use crate::net::problem as error;

use crate::App;
use crate::net::problem::ApiError;
use observe::named;

/// The public listener: WebSocket and health; REST too, every call keyed,
/// when API keys are configured at start. `upgrade` is the WebSocket front
/// end's handler, mounted on `/` and `/ws`; the wiring hands it in so that
/// this front end never imports that one.
pub fn public_router(app: App, upgrade: MethodRouter<App>) -> Router {
    let mut routes = Router::new()
        .route("/", named("/", upgrade.clone()))
        .route("/ws", named("/ws", upgrade))
        .merge(health_routes());
    if app.api_keys.is_enabled() {
        routes = routes.merge(rest_routes(&app, access::Listener::Public));
    }
    finish(routes, app)
}

/// The API listener: REST, metrics and health. `loopback` says whether it is
/// bound to a loopback address, where REST is served without keys.
pub fn api_router(app: App, loopback: bool) -> Router {
    let routes = rest_routes(&app, access::Listener::Api { loopback })
        .route("/metrics", named("/metrics", get(health::metrics)))
        .merge(health_routes());
    finish(routes, app)
}

fn health_routes() -> Router<App> {
    Router::new()
        .route("/healthz", named("/healthz", get(health::healthz)))
        .route("/readyz", named("/readyz", get(health::readyz)))
}

fn rest_routes(app: &App, listener: access::Listener) -> Router<App> {
    Router::new()
        .route("/push", named("/push", post(push::push)))
        .route("/push/batch", named("/push/batch", post(push::push_batch)))
        .route("/broadcast", named("/broadcast", post(push::broadcast)))
        .route("/disconnect", named("/disconnect", post(push::disconnect)))
        .route("/users/{uid}", named("/users/{uid}", get(query::user)))
        .route("/stats", named("/stats", get(query::stats)))
        .route(
            "/history/{uid}",
            named(
                "/history/{uid}",
                get(history::read).merge(delete(history::delete)),
            ),
        )
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), listener),
            access::require_api_access,
        ))
        .layer(DefaultBodyLimit::max(app.config.http.max_body_bytes))
}

fn finish(routes: Router<App>, app: App) -> Router {
    let routes = routes
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    observe::observed(routes, &app).with_state(app)
}
