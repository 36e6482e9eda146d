//! Who a client is: its own address, or the one a trusted proxy names.
//!
//! Shared by every front end that limits or logs per client (the WebSocket
//! admission limits, the HTTP access log), so none imports another for it.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};
use clap::ValueEnum;
use ipnet::IpNet;

/// Which header a trusted proxy writes the client address into
/// (`--client-ip-header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, ...` (de facto; nginx's
    /// `$proxy_add_x_forwarded_for`).
    #[value(name = "x-forwarded-for")]
    XForwardedFor,
    /// `Forwarded: for=client;proto=https, for=...` (RFC 7239).
    #[value(name = "forwarded")]
    Forwarded,
    /// `X-Real-IP: client` (one address; nginx's `$remote_addr`).
    #[value(name = "x-real-ip")]
    XRealIp,
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
pub(crate) mod tests {
    use super::*;

    /// A header map from `(name, value)` pairs, in order (shared with the
    /// REST access tests).
    pub(crate) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
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
}
