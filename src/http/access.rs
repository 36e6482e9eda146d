//! Who may use the REST API, and who a client is behind a proxy.
//!
//! Where the API is reachable is decided by listener, never by what a
//! request says about itself: a reverse proxy or TCP forwarder on the same
//! host connects from loopback and may add no header at all, so no rule based
//! on the peer address and the absence of forwarding headers can tell it from
//! a local backend.
//!
//! - API keys configured: every REST call needs `Authorization: Bearer KEY`
//!   (401 otherwise), on whichever listener it arrives.
//! - No keys: REST is routed only on the API listener (`--api-listen`), and
//!   served there unkeyed only when that listener is bound to a loopback
//!   address; on any other address it answers 403 (see [`Listener`]).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use super::error::ApiError;
use crate::App;
use crate::config::ClientIpHeader;

/// Which listener a REST route is served on; decides what an unkeyed call
/// gets when no API key is configured (keys may be reloaded, so this is
/// checked per request, not only when the routes are built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `--listen`: reachable from the internet; REST only with keys.
    Public,
    /// `--api-listen`; `loopback` when bound to a loopback address, where
    /// only processes on this host can connect.
    Api {
        /// The listener's own address is loopback.
        loopback: bool,
    },
}

/// Middleware for the REST API: the API key when keys are configured, else
/// the listener rule of the module docs.
pub async fn require_api_access(
    State((app, listener)): State<(App, Listener)>,
    req: Request,
    next: Next,
) -> Response {
    if app.api_keys.is_enabled() {
        return match bearer(req.headers()) {
            Some(key) if app.api_keys.accepts(key.as_bytes()) => next.run(req).await,
            Some(_) => unauthorized("the API key is not valid"),
            None => unauthorized("an API key is required: Authorization: Bearer KEY"),
        };
    }
    match listener {
        Listener::Api { loopback: true } => next.run(req).await,
        Listener::Api { loopback: false } => {
            ApiError::Forbidden("API keys are required on a non-loopback API listener".into())
                .into_response()
        }
        Listener::Public => {
            ApiError::Forbidden("API keys are required on the public listener".into())
                .into_response()
        }
    }
}

/// The credentials of an `Authorization: Bearer KEY` header. The scheme is
/// matched case-insensitively (RFC 9110 §11.1: `bearer`, `BEARER` are the
/// same scheme); one or more spaces separate it from the key. A request with
/// two `Authorization` headers (not a list field, RFC 9110 §11.6.2) has none
/// that counts, rather than being judged by whichever comes first.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let value = value.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

fn unauthorized(detail: &str) -> Response {
    let mut resp = ApiError::Unauthorized(detail.into()).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// The client's address: the TCP peer, unless the peer is in `trusted`, in
/// which case the one header `kind` names is read and nothing else (the
/// approach of axum-client-ip: the operator says which header the proxy
/// writes; any other header may come from the client and is ignored).
///
/// `X-Forwarded-For` and `Forwarded` (RFC 7239 §5.2 `for=`) list hops left
/// to right, each proxy appending the address it saw; they are walked from
/// the right, and the first hop that is not itself a trusted proxy is the
/// client (anything further left could be forged by it). A hop that is not
/// an address (`unknown`, an obfuscated identifier) stops the walk at the
/// peer: the client cannot be named. `X-Real-IP` holds one address.
pub fn client_ip(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    kind: ClientIpHeader,
) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer_ip) {
        return peer_ip;
    }
    let mut values = headers
        .get_all(header_name(kind))
        .iter()
        .filter_map(|v| v.to_str().ok());
    let hops: Vec<Option<IpAddr>> = match kind {
        ClientIpHeader::XForwardedFor => values
            .flat_map(|v| v.split(','))
            .map(|h| parse_hop(h.trim()))
            .collect(),
        ClientIpHeader::Forwarded => values
            .flat_map(|v| v.split(','))
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_hop(v.trim().trim_matches('"')))
                })?
            })
            .collect(),
        // One value; several header lines are ambiguous, so the last (the
        // nearest writer) is taken, as for the lists above.
        ClientIpHeader::XRealIp => values
            .next_back()
            .map(|v| parse_hop(v.trim()))
            .into_iter()
            .collect(),
    };
    let mut client = peer_ip;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    return client;
                }
            }
            None => return peer_ip,
        }
    }
    client
}

fn header_name(kind: ClientIpHeader) -> header::HeaderName {
    match kind {
        ClientIpHeader::XForwardedFor => header::HeaderName::from_static("x-forwarded-for"),
        ClientIpHeader::Forwarded => header::FORWARDED,
        ClientIpHeader::XRealIp => header::HeaderName::from_static("x-real-ip"),
    }
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

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    const PROXY: &str = "10.0.0.2:1";

    fn ip(peer: &str, h: &HeaderMap, kind: ClientIpHeader) -> String {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        client_ip(peer.parse().unwrap(), h, &trusted, kind).to_string()
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_and_believed_only_from_trusted_proxies() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.1.1")]);
        assert_eq!(ip(PROXY, &h, ClientIpHeader::XForwardedFor), "203.0.113.7");
        assert_eq!(
            ip("198.51.100.1:1", &h, ClientIpHeader::XForwardedFor),
            "198.51.100.1"
        );
        // Two header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.8"),
        ]);
        assert_eq!(ip(PROXY, &h, ClientIpHeader::XForwardedFor), "203.0.113.8");
        assert_eq!(
            ip(PROXY, &HeaderMap::new(), ClientIpHeader::XForwardedFor),
            "10.0.0.2"
        );
    }

    #[test]
    fn forwarded_elements_give_their_for_address() {
        let h = headers(&[(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8::1]:4711";proto=https, For=10.9.9.9"#,
        )]);
        assert_eq!(ip(PROXY, &h, ClientIpHeader::Forwarded), "2001:db8::1");
        let h = headers(&[("x-real-ip", "203.0.113.5")]);
        assert_eq!(ip(PROXY, &h, ClientIpHeader::XRealIp), "203.0.113.5");
    }

    #[test]
    fn only_the_configured_header_is_read() {
        // The proxy writes Forwarded; the client wrote its own X-Forwarded-For
        // and X-Real-IP, which pass through untouched and must not count.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.7"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        assert_eq!(ip(PROXY, &h, ClientIpHeader::Forwarded), "203.0.113.7");
        let h = headers(&[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(ip(PROXY, &h, ClientIpHeader::Forwarded), "10.0.0.2");
        assert_eq!(ip(PROXY, &h, ClientIpHeader::XRealIp), "10.0.0.2");
        let h = headers(&[("forwarded", "for=6.6.6.6")]);
        assert_eq!(ip(PROXY, &h, ClientIpHeader::XForwardedFor), "10.0.0.2");
    }

    #[test]
    fn a_hop_that_is_not_an_address_stops_the_walk_at_the_peer() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, unknown")]);
        assert_eq!(ip(PROXY, &h, ClientIpHeader::XForwardedFor), "10.0.0.2");
        let h = headers(&[("forwarded", "for=6.6.6.6, for=_hidden")]);
        assert_eq!(ip(PROXY, &h, ClientIpHeader::Forwarded), "10.0.0.2");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for (value, key) in [
            ("Bearer k1", Some("k1")),
            ("bearer k1", Some("k1")),
            ("BEARER   k1 ", Some("k1")),
            ("Basic k1", None),
            ("Bearer ", None),
            ("Bearerk1", None),
        ] {
            let h = headers(&[("authorization", value)]);
            assert_eq!(bearer(&h), key, "{value:?}");
        }
        let two = headers(&[
            ("authorization", "Bearer k1"),
            ("authorization", "Bearer k2"),
        ]);
        assert_eq!(bearer(&two), None);
    }
}
