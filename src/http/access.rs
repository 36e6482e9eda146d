//! Who may use the REST API, and who a client is behind a proxy.
//!
//! With API keys configured, every API request needs `Authorization: Bearer
//! KEY` (401 otherwise). Without keys, the API is accepted only from local
//! callers: the TCP peer is loopback and the request carries no forwarding
//! header. A reverse proxy on the same host connects from loopback too; the
//! header rule keeps it from turning the internet into a local caller.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use super::error::ApiError;
use crate::App;

/// Headers a proxy adds; any of them means the request came through one.
const FORWARDING_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

/// Whether a request from `peer` with `headers` counts as a local caller.
pub fn is_local_caller(peer: SocketAddr, headers: &HeaderMap) -> bool {
    peer.ip().to_canonical().is_loopback()
        && !FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h))
}

/// Middleware for the REST API: API key when keys are configured, else the
/// local-caller rule.
pub async fn require_api_access(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if app.api_keys.is_enabled() {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        return match presented {
            Some(key) if app.api_keys.accepts(key.as_bytes()) => next.run(req).await,
            Some(_) => unauthorized("the API key is not valid"),
            None => unauthorized("an API key is required: Authorization: Bearer KEY"),
        };
    }
    if is_local_caller(peer, req.headers()) {
        next.run(req).await
    } else {
        let client = client_ip(peer, req.headers(), &app.config.trusted_proxies);
        tracing::info!(%peer, %client, path = req.uri().path(), "refused non-local API call");
        ApiError::Forbidden(
            "without API keys the API accepts only local callers (loopback, not through a proxy)"
                .into(),
        )
        .into_response()
    }
}

fn unauthorized(detail: &str) -> Response {
    let mut resp = ApiError::Unauthorized(detail.into()).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy,
/// in which case the nearest untrusted hop of `X-Forwarded-For` (or the
/// `for=` of `Forwarded`) is believed. Headers from anyone else are ignored,
/// since any client can write them.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer_ip) {
        return peer_ip;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        if let Ok(v) = value.to_str() {
            hops.extend(v.split(',').filter_map(|h| parse_hop(h.trim())));
        }
    }
    if hops.is_empty() {
        for value in headers.get_all(header::FORWARDED) {
            if let Ok(v) = value.to_str() {
                hops.extend(
                    v.split(',')
                        .flat_map(|e| e.split(';'))
                        .filter_map(|p| {
                            let (k, v) = p.trim().split_once('=')?;
                            k.eq_ignore_ascii_case("for").then_some(v)
                        })
                        .filter_map(|v| parse_hop(v.trim_matches('"'))),
                );
            }
        }
    }
    // Walk from the nearest hop outwards; the first one we do not trust is
    // the client (anything further left could be forged by it).
    hops.iter()
        .rev()
        .map(|ip| ip.to_canonical())
        .find(|ip| !is_trusted(ip))
        .or_else(|| hops.first().map(|ip| ip.to_canonical()))
        .unwrap_or(peer_ip)
}

fn parse_hop(h: &str) -> Option<IpAddr> {
    if let Ok(ip) = h.parse() {
        return Some(ip);
    }
    if let Ok(sa) = h.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    // `[v6]` without a port.
    h.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
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

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.7, 10.1.1.1".parse().unwrap(),
        );
        let via_proxy: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let direct: SocketAddr = "198.51.100.1:1".parse().unwrap();
        assert_eq!(
            client_ip(via_proxy, &h, &trusted).to_string(),
            "203.0.113.7"
        );
        assert_eq!(client_ip(direct, &h, &trusted).to_string(), "198.51.100.1");
        let mut f = HeaderMap::new();
        f.insert(
            "forwarded",
            r#"for="[2001:db8::1]:4711";proto=https"#.parse().unwrap(),
        );
        assert_eq!(
            client_ip(via_proxy, &f, &trusted).to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            client_ip(via_proxy, &HeaderMap::new(), &trusted).to_string(),
            "10.0.0.2"
        );
    }
}
