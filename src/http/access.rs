//! Who may push.
//!
//! Until API keys are configured, REST pushes are accepted only from local
//! callers: the TCP peer is loopback and the request carries no forwarding
//! header. A reverse proxy on the same host connects from loopback too; the
//! header rule keeps it from turning the internet into a local caller.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;

/// Headers a proxy adds; any of them means the request came through one.
const FORWARDING_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

/// Whether a request from `peer` with `headers` counts as a local caller.
pub fn is_local_caller(peer: SocketAddr, headers: &HeaderMap) -> bool {
    peer.ip().to_canonical().is_loopback()
        && !FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h))
}

/// Middleware: refuses non-local callers with 403.
pub async fn local_only(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if is_local_caller(peer, req.headers()) {
        Ok(next.run(req).await)
    } else {
        tracing::info!(%peer, path = req.uri().path(), "refused non-local push");
        Err(ApiError::Forbidden(
            "pushes are accepted only from local callers (loopback, not through a proxy)".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_without_proxy_headers_is_local() {
        let mut h = HeaderMap::new();
        assert!(is_local_caller("127.0.0.1:9".parse().unwrap(), &h));
        assert!(is_local_caller("[::1]:9".parse().unwrap(), &h));
        assert!(is_local_caller("[::ffff:127.0.0.1]:9".parse().unwrap(), &h));
        assert!(!is_local_caller("10.0.0.1:9".parse().unwrap(), &h));
        h.insert("x-real-ip", "1.2.3.4".parse().unwrap());
        assert!(!is_local_caller("127.0.0.1:9".parse().unwrap(), &h));
    }
}
