//! The JavaScript client and the demo page, embedded in the binary so a
//! page can load the client with one script tag from the gateway itself.
//! Built by `clients/js` (committed, so `cargo build` never needs node).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `GET /pushgate.js`: the client as a classic script (IIFE).
const SCRIPT: &str = include_str!("../../clients/js/dist/pushgate.js");
/// `GET /pushgate.mjs`: the client as an ES module.
const MODULE: &str = include_str!("../../clients/js/dist/pushgate.mjs");
/// `GET /demo`: a page that connects with the client and shows what comes.
const DEMO: &str = include_str!("../../clients/js/examples/index.html");

/// How long a browser may use its copy without asking: the files change
/// only with the binary, and the `ETag` makes asking cheap (304).
const CACHE_CONTROL: &str = "public, max-age=3600";

/// FNV-1a (64 bits) of `bytes`: an `ETag` computed at compile time, which
/// changes whenever the file does (a cache key, not a security check).
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

const SCRIPT_TAG: u64 = fnv1a(SCRIPT.as_bytes());
const MODULE_TAG: u64 = fnv1a(MODULE.as_bytes());
const DEMO_TAG: u64 = fnv1a(DEMO.as_bytes());

/// `GET /pushgate.js`.
pub async fn script(headers: HeaderMap) -> Response {
    file(
        &headers,
        SCRIPT,
        SCRIPT_TAG,
        "text/javascript; charset=utf-8",
        CACHE_CONTROL,
    )
}

/// `GET /pushgate.mjs`.
pub async fn module(headers: HeaderMap) -> Response {
    file(
        &headers,
        MODULE,
        MODULE_TAG,
        "text/javascript; charset=utf-8",
        CACHE_CONTROL,
    )
}

/// `GET /demo`: revalidated on every load, so a new binary shows its page.
pub async fn demo(headers: HeaderMap) -> Response {
    file(
        &headers,
        DEMO,
        DEMO_TAG,
        "text/html; charset=utf-8",
        "no-cache",
    )
}

/// `body` with its type, caching headers and a strong `ETag`; 304 when the
/// request's `If-None-Match` names that tag (RFC 9110 §13.1.2).
fn file(
    headers: &HeaderMap,
    body: &'static str,
    tag: u64,
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    let etag = format!("\"{tag:016x}\"");
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        });
    let etag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""));
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
    ];
    if matches {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matching_if_none_match_is_answered_304_without_a_body() {
        let fresh = file(&HeaderMap::new(), "x", 1, "text/plain", "no-cache");
        assert_eq!(fresh.status(), StatusCode::OK);
        let tag = fresh.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(
            file(&h, "x", 1, "text/plain", "no-cache").status(),
            StatusCode::NOT_MODIFIED
        );
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }
}
