//! Which browser origins may connect: the `--allowed-origins` rule, shared
//! by the transports browsers open (the WebSocket upgrade, the Server-Sent
//! Events stream and its CORS answers).

use axum::http::{HeaderMap, header};

use crate::config::normalize_origin;

/// Whether the request's `Origin` may connect: no `Origin` (a non-browser
/// client) always passes; with an allow list, exactly one `Origin` that is
/// on it. A browser sends one `Origin` (RFC 6454 §7.2), so two are a forgery
/// or a confused proxy and are refused rather than judged by whichever
/// comes first.
pub fn origin_passes(allowed: &[String], headers: &HeaderMap) -> bool {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (None, _) => true,
        (Some(origin), None) => origin_allowed(allowed, origin.as_bytes()),
        (Some(_), Some(_)) => allowed.is_empty(),
    }
}

/// Whether `origin` is one of `allowed` (both in their normal form,
/// [`normalize_origin`]: `https://app.example:443` is `https://app.example`);
/// an empty list allows every origin.
pub fn origin_allowed(allowed: &[String], origin: &[u8]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    std::str::from_utf8(origin)
        .ok()
        .and_then(normalize_origin)
        .is_some_and(|origin| allowed.contains(&origin))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn an_origin_passes_in_its_normal_form_and_two_origins_never_do() {
        let allowed = vec!["https://app.example".to_owned()];
        let mut h = HeaderMap::new();
        assert!(origin_passes(&allowed, &h), "no Origin: not a browser");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example:443"),
        );
        assert!(origin_passes(&allowed, &h));
        h.append(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        assert!(!origin_passes(&allowed, &h));
        assert!(!origin_allowed(&allowed, b"https://evil.example"));
        assert!(origin_allowed(&[], b"https://evil.example"));
    }
}
