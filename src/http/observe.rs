//! What every HTTP request leaves behind, on both listeners: a count by
//! route and status class and a duration by route (always), and, with
//! `--access-log`, one log line (method, route, status, duration, client
//! address; never the query string, which may carry a token). Both come from
//! tower-http's [`TraceLayer`].
//!
//! The route is the template a handler was registered under (`/users/{uid}`,
//! never the uid: a label per user would be a series per user). Each route
//! marks its responses with [`Route`]; an answer no route gave (404) is
//! `unmatched`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::routing::MethodRouter;
use tower_http::trace::TraceLayer;

use crate::App;
use crate::telemetry;

/// The route template a response came from, in its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route(pub &'static str);

/// Every route template both routers register, for metrics exported at zero
/// from the start (`telemetry::register_http_routes`), and `unmatched`.
pub const ROUTES: [&str; 13] = [
    "/",
    "/ws",
    "/healthz",
    "/readyz",
    "/metrics",
    "/push",
    "/push/batch",
    "/broadcast",
    "/disconnect",
    "/users/{uid}",
    "/stats",
    "/history/{uid}",
    UNMATCHED,
];

/// The route of answers no route gave (404).
pub const UNMATCHED: &str = "unmatched";

/// `method_router` registered as `route`: its responses carry [`Route`].
pub fn named(route: &'static str, method_router: MethodRouter<App>) -> MethodRouter<App> {
    method_router.layer(axum::middleware::map_response(
        move |mut response: axum::response::Response| async move {
            response.extensions_mut().insert(Route(route));
            response
        },
    ))
}

/// Wraps `routes` so each request is counted, timed and (with
/// `--access-log`) logged.
pub fn observed(routes: Router<App>, app: &App) -> Router<App> {
    let access_log = app.config.http.access_log;
    let trusted = app.config.http.trusted_proxies.clone();
    let header = app.config.http.client_ip_header;
    routes.layer(
        TraceLayer::new_for_http()
            .make_span_with(move |request: &Request<_>| {
                if !access_log {
                    // No span, no allocation: metrics alone need none.
                    return tracing::Span::none();
                }
                let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(
                    |ConnectInfo(peer)| {
                        crate::net::client_ip::client_ip(*peer, request.headers(), &trusted, header)
                    },
                );
                tracing::info_span!(
                    "http",
                    method = %request.method(),
                    client = %client.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
                )
            })
            .on_request(())
            .on_response(
                move |response: &Response<_>, latency: Duration, span: &tracing::Span| {
                    let route = response
                        .extensions()
                        .get::<Route>()
                        .map_or(UNMATCHED, |r| r.0);
                    let status = response.status().as_u16();
                    telemetry::http_request(route, status, latency);
                    if access_log {
                        tracing::info!(
                            target: "pushgate::access",
                            parent: span,
                            route,
                            status,
                            duration_ms = latency.as_secs_f64() * 1000.0,
                            "access"
                        );
                    }
                },
            )
            .on_body_chunk(())
            .on_eos(())
            .on_failure(()),
    )
}
