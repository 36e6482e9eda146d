//! A connection that opens with a streamed request (`GET /sse`), served
//! below hyper so that an idle stream holds no connection buffers (see the
//! module docs of `http::serve` for why).
//!
//! Step by step, and where it differs from hyper:
//!
//! - The request head is read into a buffer that lives only until it is
//!   parsed (by httparse, as hyper parses), within the header-read deadline
//!   (else 408), at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] lines (else
//!   431; malformed: 400). These three are problem documents like every
//!   other refusal, where hyper answers bare ones (and closes a slow head
//!   without an answer). They go through the router too, as a stand-in
//!   request (a `GET` of the path, with the head's `Origin` if that line
//!   arrived, carrying a [`HeadRefused`]), so they pass the same layers as
//!   the route's own refusals: the access log and request metrics, CORS,
//!   and the route's refusal counter.
//! - The router gets it with the peer's address and a [`ConnectionAbort`]
//!   naming the writer's task, as hyper's requests get them. A body, if the
//!   request has one, is not read: a `GET` body has no meaning here (RFC
//!   9110 §9.3.1), and hyper's handlers never read it either.
//! - The answer's head is written as hyper writes it (the same header lines
//!   in the same order, then `Date`), plus `Connection: close`: this
//!   connection serves one request. Its body goes out chunked (HTTP/1.0:
//!   until the close, as hyper does) or with its length, with no buffer
//!   kept between writes. Each write has `--write-timeout`; past it the
//!   writer gives up, says so on the [`ConnectionAbort`] and drops the
//!   connection, so a client that stopped reading never holds a stuck
//!   socket (before or after the stream's own end).
//! - Whatever the client sends after the head (a body, pipelined requests)
//!   is read and dropped, at most [`MAX_DISCARD`] bytes (past that the
//!   connection is dropped): after an answer that says `Connection: close`
//!   a server processes no further request (RFC 9112 §9.6) and the client
//!   retries what was not answered on a new connection (§9.3.2). Reading
//!   keeps the receive buffer empty, so the close at the end does not turn
//!   into a reset that could destroy the end of the answer, and it is how a
//!   client that leaves is seen.
//! - At the end: a half-close, then reading until the client closes too, at
//!   most [`linger::LINGER`] (RFC 9112 §9.6's staged close).

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{
    HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header, request, response,
};
use bytes::{Buf, BufMut, Bytes};
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tower::ServiceExt;
use tracing::Instrument;

use crate::App;
use crate::net::abort::ConnectionAbort;
use crate::net::linger;
use crate::net::problem::HeadRefused;

/// The largest request head read, in bytes: the total of nginx's default
/// `large_client_header_buffers` (4 × 8 KiB), room for a token in the URL
/// and a browser's cookies.
pub(super) const MAX_HEAD: usize = 32 * 1024;

/// The most header lines a request head may have (hyper's default).
pub(super) const MAX_HEADERS: usize = 100;

/// The most bytes read and dropped after the head before the connection is
/// dropped: a client has no reason to send anything there, but a small body
/// or a pipelined request is no attack.
pub(super) const MAX_DISCARD: usize = 64 * 1024;

/// The most bytes read from the socket at a time while reading the head.
const READ_CHUNK: usize = 2048;

/// Serves the connection's one request: reads its head by `deadline`,
/// answers through `router`, and spawns the writer (a task of its own,
/// small, since an idle stream's memory is mostly its size), which the
/// request's [`ConnectionAbort`] names. The client's bytes are still unread
/// (see `first_request`).
pub(super) async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    path: &'static str,
    router: axum::Router,
    app: App,
    deadline: Instant,
) {
    let header_timeout = app.config.http.header_read_timeout;
    let head = tokio::select! {
        _ = app.shutdown.stopping() => return,
        head = read_head(&mut stream, deadline, header_timeout) => head,
    };
    let abort = ConnectionAbort::new();
    let (version, mut parts) = match head {
        // The client left before its head ended.
        Ok(None) => return,
        Ok(Some(request)) => {
            let (parts, ()) = request.into_parts();
            (parts.version, parts)
        }
        Err(Refused { why, origin }) => {
            tracing::debug!(%peer, error = ?why, "request head refused");
            (Version::HTTP_11, stand_in(path, origin, why))
        }
    };
    parts.extensions.insert(ConnectInfo(peer));
    parts.extensions.insert(abort.clone());
    let response = router
        .oneshot(Request::from_parts(parts, Body::empty()))
        .await
        .unwrap_or_else(|e| match e {});
    let writer = respond(
        stream,
        version,
        response,
        abort.clone(),
        app.config.websocket.write_timeout,
    );
    let task = app.shutdown.services().spawn(writer.in_current_span());
    abort.bind(task.abort_handle());
}

/// A refused request head: why, and the `Origin` it named if that line
/// arrived whole (so the refusal can carry CORS for it).
#[derive(Debug)]
struct Refused {
    why: HeadRefused,
    origin: Option<HeaderValue>,
}

/// The request handed to the router for a head refused as `why`: a `GET`
/// of `path` (what the connection's first bytes named) with only the
/// head's `Origin`, carrying `why` for the route to answer (see
/// [`HeadRefused`]).
fn stand_in(path: &'static str, origin: Option<HeaderValue>, why: HeadRefused) -> request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = Method::GET;
    parts.uri = Uri::from_static(path);
    if let Some(origin) = origin {
        parts.headers.insert(header::ORIGIN, origin);
    }
    parts.extensions.insert(why);
    parts
}

/// The value of the first complete `Origin` line after the request line of
/// the head `buf` starts with, if any, whatever else is wrong with it.
fn origin_in(buf: &[u8]) -> Option<HeaderValue> {
    let mut lines = buf.split(|&b| b == b'\n');
    // Only complete lines: the last piece has no line end after it.
    let complete = buf.iter().filter(|&&b| b == b'\n').count();
    lines.next();
    lines
        .take(complete.saturating_sub(1))
        .take_while(|line| !line.trim_ascii().is_empty())
        .find_map(|line| {
            let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
            name.eq_ignore_ascii_case(b"origin")
                .then(|| HeaderValue::from_bytes(value[1..].trim_ascii()).ok())
                .flatten()
        })
}

/// Reads a request head from `io` by `deadline` (which `--header-read-timeout`
/// set, named in a refusal as `limit`). `Ok(None)`: the client closed or
/// failed first. Refusals: 408, 431, 400 (see the module docs).
async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    deadline: Instant,
    limit: Duration,
) -> Result<Option<Request<()>>, Refused> {
    let mut buf = Vec::new();
    read_head_into(io, &mut buf, deadline, limit)
        .await
        .map_err(|why| Refused {
            origin: origin_in(&buf),
            why,
        })
}

async fn read_head_into<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
    deadline: Instant,
    limit: Duration,
) -> Result<Option<Request<()>>, HeadRefused> {
    loop {
        // One byte more than allowed, to tell a head of exactly MAX_HEAD
        // bytes from a longer one.
        let room = MAX_HEAD + 1 - buf.len();
        buf.reserve(room.min(READ_CHUNK));
        let start = buf.len();
        match timeout_at(deadline, io.read_buf(&mut buf.limit(room))).await {
            Err(_) => return Err(HeadRefused::Timeout(limit)),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
            Ok(Ok(_)) => {}
        }
        // Only the end of a line can end the head: a client that sends it
        // a byte at a time is not parsed again for each.
        if buf[start..].contains(&b'\n')
            && let Some(request) = parse_head(buf)?
        {
            return Ok(Some(request));
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadRefused::TooLarge(MAX_HEAD, MAX_HEADERS));
        }
    }
}

/// The request whose head `buf` starts with; `None` while it is
/// incomplete. What follows the head is not looked at.
fn parse_head(buf: &[u8]) -> Result<Option<Request<()>>, HeadRefused> {
    let malformed = |why: &dyn std::fmt::Display| HeadRefused::Malformed(why.to_string());
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadRefused::TooLarge(MAX_HEAD, MAX_HEADERS));
        }
        Err(e) => return Err(malformed(&e)),
    };
    if len > MAX_HEAD {
        return Err(HeadRefused::TooLarge(MAX_HEAD, MAX_HEADERS));
    }
    let (Some(method), Some(path), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(malformed(&"no request line"));
    };
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut request = Request::builder().method(method).uri(path).version(version);
    for h in parsed.headers.iter() {
        request = request.header(h.name, h.value);
    }
    request.body(()).map(Some).map_err(|e| malformed(&e))
}

/// How an answer's body is delimited on the wire (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body may follow (1xx, 204, 304).
    Bodyless,
    /// `Content-Length`: the body as it is.
    Length(u64),
    /// `Transfer-Encoding: chunked` (§7.1): each chunk after its size in
    /// hex, then a chunk of size zero.
    Chunked,
    /// HTTP/1.0 knows no chunks: the body as it is, ended by the close
    /// (§6.3, item 8).
    UntilClose,
}

impl Framing {
    fn of(status: StatusCode, version: Version, exact: Option<u64>) -> Framing {
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Bodyless
        } else if let Some(len) = exact {
            Framing::Length(len)
        } else if version == Version::HTTP_10 {
            Framing::UntilClose
        } else {
            Framing::Chunked
        }
    }

    /// `data` as it goes on the wire: for a chunk, its size line, itself
    /// and its CRLF, with no copy of `data`.
    fn frame(self, data: Bytes) -> impl Buf {
        let mut size = [0u8; 18];
        let mut start = size.len();
        if self == Framing::Chunked {
            start -= 2;
            size[start..].copy_from_slice(b"\r\n");
            let mut n = data.len();
            loop {
                start -= 1;
                size[start] = b"0123456789ABCDEF"[n % 16];
                n /= 16;
                if n == 0 {
                    break;
                }
            }
        }
        let crlf: &'static [u8] = if self == Framing::Chunked {
            b"\r\n"
        } else {
            b""
        };
        let mut size = io::Cursor::new(size);
        size.set_position(start as u64);
        Buf::chain(size, data).chain(crlf)
    }

    /// What ends the body on the wire: the last chunk (no trailers).
    fn end(self) -> &'static [u8] {
        if self == Framing::Chunked {
            b"0\r\n\r\n"
        } else {
            b""
        }
    }
}

/// The answer's head: status line, the answer's header lines in order but
/// for those about the connection and framing, which this writer decides,
/// then `Connection: close`, the framing and `Date`, as hyper orders them.
fn head(parts: &response::Parts, version: Version, framing: Framing) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut line = |name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    for (name, value) in &parts.headers {
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::CONTENT_LENGTH
        {
            continue;
        }
        line(name.as_str().as_bytes(), value.as_bytes());
    }
    line(b"connection", b"close");
    match framing {
        Framing::Length(len) => line(b"content-length", len.to_string().as_bytes()),
        Framing::Chunked => line(b"transfer-encoding", b"chunked"),
        Framing::Bodyless | Framing::UntilClose => {}
    }
    if !parts.headers.contains_key(header::DATE) {
        line(
            b"date",
            httpdate::fmt_http_date(SystemTime::now()).as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes `response` on `stream` and closes it (see the module docs). A
/// function returning an `async move` block rather than an `async fn`, so
/// that the answer's head (headers, extensions) is not part of the state
/// an idle stream keeps: only the socket, the body and a few words are.
fn respond(
    mut stream: TcpStream,
    version: Version,
    response: Response<Body>,
    abort: ConnectionAbort,
    limit: Duration,
) -> impl Future<Output = ()> + Send {
    let (parts, mut body) = response.into_parts();
    let framing = Framing::of(parts.status, version, body.size_hint().exact());
    let mut first = head(&parts, version, framing);
    drop(parts);
    async move {
        let mut ended = framing == Framing::Bodyless;
        // The body's first chunk is usually there already (a refusal's
        // document, a stream's opening): it goes out with the head.
        if !ended {
            match body.frame().now_or_never() {
                None => {}
                Some(None) => ended = true,
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        first.put(framing.frame(data));
                    }
                }
                Some(Some(Err(_))) => return,
            }
        }
        if ended {
            first.extend_from_slice(framing.end());
        }
        if !send(&mut stream, Bytes::from(first), limit, &abort).await {
            return;
        }
        let mut discarded = 0;
        while !ended {
            let next = tokio::select! {
                frame = body.frame() => frame,
                () = client_gone(&stream, &mut discarded) => return,
            };
            let sent = match next {
                None => {
                    ended = true;
                    send(&mut stream, framing.end(), limit, &abort).await
                }
                // A failed body: the client sees an answer cut short, as
                // hyper shows it.
                Some(Err(_)) => return,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => {
                        send(&mut stream, framing.frame(data), limit, &abort).await
                    }
                    // An empty chunk would end a chunked body; trailers
                    // are not sent.
                    _ => true,
                },
            };
            if !sent {
                return;
            }
        }
        close(stream).await;
    }
}

/// Writes `buf` whole within `limit`: `false` when the client is gone or
/// the write did not get through in time (then the writer says so on
/// `abort`). The socket nearly always takes it at once, in one `writev`,
/// and no timer is set then.
async fn send(
    stream: &mut TcpStream,
    mut buf: impl Buf,
    limit: Duration,
    abort: &ConnectionAbort,
) -> bool {
    while buf.has_remaining() {
        let wrote = {
            let mut slices = [IoSlice::new(&[]); 4];
            let n = buf.chunks_vectored(&mut slices);
            stream.try_write_vectored(&slices[..n])
        };
        match wrote {
            Ok(n) if n > 0 => buf.advance(n),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return false,
        }
    }
    if !buf.has_remaining() {
        return true;
    }
    match timeout(limit, stream.write_all_buf(&mut buf)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            abort.fail_write();
            false
        }
    }
}

/// Resolves once the client closed its side, failed, or sent more than
/// [`MAX_DISCARD`] bytes after its head in all (`discarded` counts them);
/// what it sends is dropped.
async fn client_gone(stream: &TcpStream, discarded: &mut usize) {
    linger::until_closed(stream, discarded, MAX_DISCARD).await;
}

/// The staged close ([`linger`]): the answer is complete.
async fn close(mut stream: TcpStream) {
    linger::staged_close(&mut stream, MAX_DISCARD).await;
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn a_head_is_parsed_once_complete_and_its_limits_hold() {
        let head = b"GET /sse?uid=a HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\nGET /";
        assert!(parse_head(&head[..30]).unwrap().is_none());
        let request = parse_head(head).unwrap().unwrap();
        assert_eq!(request.uri(), "/sse?uid=a");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["accept"], "text/event-stream");

        let mut many = b"GET /sse HTTP/1.0\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse_head(&many), Err(HeadRefused::TooLarge(..))));
        assert!(matches!(
            parse_head(b"GET /sse HTTP/1.1\r\nno colon\r\n\r\n"),
            Err(HeadRefused::Malformed(_))
        ));
        assert!(matches!(
            parse_head(b"GET /sse HTTP/1.1\r\nAccept: a\x01b\r\n\r\n"),
            Err(HeadRefused::Malformed(_))
        ));
    }

    #[test]
    fn a_refused_heads_origin_is_found_in_its_complete_lines_only() {
        let origin = |buf: &[u8]| origin_in(buf).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            origin(b"GET /sse HTTP/1.1\r\nHost: x\r\nORIGIN:  https://a.example \r\nX-"),
            Some("https://a.example".into())
        );
        assert_eq!(origin(b"GET /sse HTTP/1.1\r\nOrigin: https://a.exa"), None);
        assert_eq!(origin(b"GET /sse HTTP/1.1\r\nX-Origin: b\r\n"), None);
        assert_eq!(origin(b"GET /sse?origin: HTTP/1.1\r\n"), None);
        assert_eq!(
            origin(b"GET /sse HTTP/1.1\r\n\r\nOrigin: https://body.example\r\n"),
            None,
            "not past the head"
        );
    }

    #[tokio::test]
    async fn a_head_in_pieces_is_read_piece_by_piece_until_it_ends() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let deadline = Instant::now() + Duration::from_secs(20);
        let limit = Duration::from_secs(20);
        let read = read_head(&mut server, deadline, limit);
        tokio::pin!(read);
        for piece in [
            &b"GET /sse?ui"[..],
            b"d=a HTTP/1.1\r\n",
            b"Accept: text/event-",
            b"stream\r\n",
        ] {
            client.write_all(piece).await.unwrap();
            assert!(futures_util::poll!(read.as_mut()).is_pending());
        }
        client.write_all(b"\r\n").await.unwrap();
        let request = read.await.unwrap().unwrap();
        assert_eq!(request.uri(), "/sse?uid=a");
        assert_eq!(request.headers()["accept"], "text/event-stream");
    }

    #[tokio::test]
    async fn a_head_too_long_or_too_late_is_refused() {
        let (mut client, mut server) = tokio::io::duplex(256 * 1024);
        let deadline = Instant::now() + Duration::from_secs(20);
        let limit = Duration::from_secs(20);
        let mut long = b"GET /sse HTTP/1.1\r\nx-big: ".to_vec();
        long.resize(MAX_HEAD + 10, b'a');
        long.extend_from_slice(b"\r\n\r\n");
        client.write_all(&long).await.unwrap();
        assert!(matches!(
            read_head(&mut server, deadline, limit).await,
            Err(Refused {
                why: HeadRefused::TooLarge(..),
                ..
            })
        ));

        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET /sse HTTP/1.1\r\n").await.unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(matches!(
            read_head(&mut server, soon, limit).await,
            Err(Refused {
                why: HeadRefused::Timeout(_),
                ..
            })
        ));
        drop(client);
        let (client, mut server) = tokio::io::duplex(1024);
        drop(client);
        assert!(matches!(
            read_head(&mut server, deadline, limit).await,
            Ok(None)
        ));
    }

    #[test]
    fn chunks_carry_their_size_in_hex_and_nothing_is_framed_without_chunks() {
        let wire = |framing: Framing, data: &'static [u8]| {
            let mut buf = framing.frame(Bytes::from_static(data));
            buf.copy_to_bytes(buf.remaining())
        };
        assert_eq!(wire(Framing::Chunked, b"hello"), &b"5\r\nhello\r\n"[..]);
        let big: &'static [u8] = &[b'x'; 300];
        assert!(wire(Framing::Chunked, big).starts_with(b"12C\r\nxx"));
        assert_eq!(wire(Framing::UntilClose, b"hello"), &b"hello"[..]);
        assert_eq!(wire(Framing::Length(5), b"hello"), &b"hello"[..]);
        assert_eq!(
            Framing::of(StatusCode::OK, Version::HTTP_10, None),
            Framing::UntilClose
        );
        assert_eq!(
            Framing::of(StatusCode::NOT_ACCEPTABLE, Version::HTTP_11, Some(9)),
            Framing::Length(9)
        );
    }
}
