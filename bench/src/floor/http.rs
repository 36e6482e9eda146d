//! The floor relay's HTTP port: WebSocket upgrades, and the REST calls the
//! bench makes, answered in pushgate's shapes (see `openapi.yaml`):
//!
//! - `POST /push` `{"uid":U,"data":D}` (U a uid or a list):
//!   `{"delivered":N,"dropped":0,"remote_deliveries":0,"offline":[…]}`
//! - `POST /push/batch` `{"pushes":[…]}` (at most pushgate's `MAX_BATCH`):
//!   `{"delivered":N,"dropped":0,"remote_deliveries":0,"results":[{…,"unrouted":[]},…]}`
//! - `POST /broadcast` `{"data":D}`: `{"delivered":N,"dropped":0,"remote_deliveries":0}`
//! - `GET /stats`: `{"connections":N,"bound_connections":N,"bound_uids":U,"nodes":1}`
//!
//! Requests are read with a byte scan of the head (`Content-Length`,
//! `Sec-WebSocket-Key`, `Connection: close`) and the bodies with the scans of
//! `scan.rs`; `D` is delivered as pushgate does (a string's text, anything
//! else as its own JSON text). Bad bodies answer a 400 problem document.
//! As on the text port, a request is answered once it is routed (`delivered`
//! counts the registered connections about to be written), then its frames
//! are sent.
//!
//! The limits and the fixed answers (`/broadcast`, `/stats`) are pushgate's
//! own constants and types. The push answers are written by hand instead,
//! splicing the request's uid bytes into `offline` unparsed: the floor's
//! point is next to no user-space work. The tests hold them to pushgate's
//! answer types.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use pushgate::config::DEFAULT_MAX_BODY_BYTES as MAX_BODY;
use pushgate::http::push::MAX_PUSHES_PER_BATCH as MAX_BATCH;
use pushgate::http::query::Stats;
use pushgate::model::{BroadcastResponse, MAX_UID_BYTES as MAX_UID};

use super::{Conn, Relay, Routes, WRITE_TIMEOUT, scan};

/// Longest request head. The floor's own: pushgate leaves the head's bound
/// to hyper's buffer, while the floor reads a head into one fixed buffer;
/// the bench's heads are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// Time a client has to send its first request head, and its uid frame:
/// the value of pushgate's `--header-read-timeout` and `--bind-timeout`
/// defaults, which are text in its flags, no constants.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the relay reads of a request head.
struct Head<'a> {
    method: &'a [u8],
    path: &'a [u8],
    content_length: usize,
    ws_key: Option<&'a [u8]>,
    close: bool,
}

/// Parses the head `h` (up to and including its blank line).
fn head(h: &[u8]) -> Option<Head<'_>> {
    let mut lines = h
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut request = lines.next()?.split(|&b| b == b' ');
    let (method, path) = (request.next()?, request.next()?);
    let mut out = Head {
        method,
        path,
        content_length: 0,
        ws_key: None,
        close: false,
    };
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], scan::trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            out.content_length = std::str::from_utf8(value).ok()?.parse().ok()?;
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            out.ws_key = Some(value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            out.close = value.eq_ignore_ascii_case(b"close");
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return None;
        }
    }
    Some(out)
}

/// A connection's read buffer: `buf[..filled]` holds what was read.
struct Input {
    buf: Vec<u8>,
    filled: usize,
}

impl Input {
    /// One `read` more (growing the buffer when full); false at EOF or error.
    fn fill(&mut self, s: &mut TcpStream) -> bool {
        if self.filled == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match s.read(&mut self.buf[self.filled..]) {
                Ok(0) => return false,
                Ok(n) => {
                    self.filled += n;
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Drops the first `n` bytes.
    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }
}

/// Serves one HTTP connection: a WebSocket upgrade (then the socket belongs
/// to the registry), or REST requests until the client closes.
pub fn serve(relay: &'static Relay, mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(HEAD_TIMEOUT));
    let mut input = Input {
        buf: vec![0u8; 4096],
        filled: 0,
    };
    let mut reply = Reply::default();
    let mut first = true;
    loop {
        let end = loop {
            if let Some(i) = input.buf[..input.filled]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                break i + 4;
            }
            if input.filled > MAX_HEAD || !input.fill(&mut s) {
                return;
            }
        };
        let Some(h) = head(&input.buf[..end]) else {
            reply.problem(400, "Bad Request", "bad head");
            let _ = reply.write(&mut s);
            return;
        };
        if let (b"GET", Some(key)) = (h.method, h.ws_key) {
            let accept = tungstenite::handshake::derive_accept_key(key);
            let rest = input.buf[end..input.filled].to_vec();
            upgrade(relay, s, &accept, rest);
            return;
        }
        if h.content_length > MAX_BODY {
            let detail = format!("the body is over {MAX_BODY} bytes");
            reply.problem(413, "Payload Too Large", &detail);
            let _ = reply.write(&mut s);
            return;
        }
        let (route, close) = (Route::of(h.method, h.path), h.close);
        let need = end + h.content_length;
        while input.filled < need {
            if input.buf.len() < need {
                input.buf.resize(need, 0);
            }
            if !input.fill(&mut s) {
                return;
            }
        }
        if first {
            // Keep-alive REST connections wait for their next request as
            // long as the client likes.
            let _ = s.set_read_timeout(None);
            first = false;
        }
        let body = scan::trim(&input.buf[end..need]);
        let answered = route.serve(relay, body, &mut s, &mut reply);
        input.consume(need);
        if !answered || close {
            return;
        }
    }
}

/// The REST calls the relay answers.
#[derive(Debug, Clone, Copy)]
enum Route {
    Push,
    Batch,
    Broadcast,
    Stats,
    Health,
    NotFound,
}

impl Route {
    fn of(method: &[u8], path: &[u8]) -> Route {
        match (method, path) {
            (b"POST", b"/push") => Route::Push,
            (b"POST", b"/push/batch") => Route::Batch,
            (b"POST", b"/broadcast") => Route::Broadcast,
            (b"GET", b"/stats") => Route::Stats,
            (b"GET", b"/healthz" | b"/readyz") => Route::Health,
            _ => Route::NotFound,
        }
    }

    /// Serves one request: answers it on `s` (false if that failed), then
    /// sends its frames.
    fn serve(self, relay: &Relay, body: &[u8], s: &mut TcpStream, reply: &mut Reply) -> bool {
        reply.clear();
        match self {
            Route::Push => match parse_push(body) {
                Ok(p) => relay.deliver(|r| push(r, &[p], false, s, reply)),
                Err(detail) => reply.problem(400, "Bad Request", &detail).write(s),
            },
            Route::Batch => match parse_batch(body) {
                Ok(pushes) => relay.deliver(|r| push(r, &pushes, true, s, reply)),
                Err(detail) => reply.problem(400, "Bad Request", &detail).write(s),
            },
            Route::Broadcast => {
                let payload = match parse_broadcast(body) {
                    Ok(p) => p,
                    Err(detail) => return reply.problem(400, "Bad Request", &detail).write(s),
                };
                let (delivered, must_sweep) = relay.queue_broadcast(&payload);
                reply.json(&BroadcastResponse {
                    delivered,
                    dropped: 0,
                    remote_deliveries: 0,
                });
                let answered = reply.write(s);
                if must_sweep {
                    relay.sweep();
                }
                answered
            }
            Route::Stats => {
                let (bound, uids) = relay.counts();
                // Every connection the floor holds is bound (it registers
                // one only once its uid frame arrived); it is one node.
                reply.json(&Stats {
                    connections: bound,
                    bound_connections: bound,
                    bound_uids: uids,
                    nodes: 1,
                });
                reply.write(s)
            }
            Route::Health => {
                reply.body.extend_from_slice(br#"{"status":"ok"}"#);
                reply.write(s)
            }
            Route::NotFound => {
                let detail = "no such route in the floor relay";
                reply.problem(404, "Not Found", detail).write(s)
            }
        }
    }
}

/// An answer being built: its status, body, and the bytes written.
struct Reply {
    status: &'static str,
    body: Vec<u8>,
    out: Vec<u8>,
}

impl Default for Reply {
    fn default() -> Reply {
        Reply {
            status: "200 OK",
            body: Vec::with_capacity(1024),
            out: Vec::with_capacity(4096),
        }
    }
}

impl Reply {
    fn clear(&mut self) {
        self.status = "200 OK";
        self.body.clear();
    }

    /// Makes it an RFC 9457 problem document.
    /// Sets the body to `answer`, one of pushgate's answer types.
    fn json(&mut self, answer: &impl serde::Serialize) {
        // Plain structs of numbers: serializing them cannot fail.
        let _ = serde_json::to_writer(&mut self.body, answer);
    }

    fn problem(&mut self, status: u16, title: &str, detail: &str) -> &mut Reply {
        self.status = match status {
            400 => "400 Bad Request",
            404 => "404 Not Found",
            _ => "413 Payload Too Large",
        };
        self.body.clear();
        let doc = serde_json::json!({
            "type": "about:blank", "title": title, "status": status, "detail": detail,
        });
        self.body.extend_from_slice(doc.to_string().as_bytes());
        self
    }

    /// Writes head and body with one write; false if that failed.
    fn write(&mut self, s: &mut TcpStream) -> bool {
        let ctype = if self.status.starts_with("200") {
            "application/json"
        } else {
            "application/problem+json"
        };
        self.out.clear();
        let head = format!(
            "HTTP/1.1 {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n",
            self.status,
            self.body.len()
        );
        self.out.extend_from_slice(head.as_bytes());
        self.out.extend_from_slice(&self.body);
        s.write_all(&self.out).is_ok()
    }
}

/// Why a request is refused: the `detail` of its 400 problem document.
type Detail = Cow<'static, str>;

/// One push, parsed: its uid value(s) and what receivers get.
struct Push<'a> {
    uids: &'a [u8],
    payload: Cow<'a, [u8]>,
}

/// Picks `uid` and `data` out of a push object.
fn parse_push(v: &[u8]) -> Result<Push<'_>, Detail> {
    let (mut uids, mut data) = (None, None);
    scan::walk(v, |k, v| match k {
        b"uid" => uids = Some(v),
        b"data" => data = Some(v),
        _ => {}
    })
    .ok_or(Detail::Borrowed("invalid request body"))?;
    let uids = uids.ok_or(Detail::Borrowed("missing field `uid`"))?;
    let payload = scan::payload(data.ok_or(Detail::Borrowed("missing field `data`"))?)
        .ok_or(Detail::Borrowed("invalid data"))?;
    Ok(Push { uids, payload })
}

/// The pushes of a `POST /push/batch` body, every one parsed before any is
/// delivered.
fn parse_batch(body: &[u8]) -> Result<Vec<Push<'_>>, Detail> {
    let mut list = None;
    scan::walk(body, |k, v| {
        if k == b"pushes" {
            list = Some(v);
        }
    })
    .ok_or(Detail::Borrowed("invalid request body"))?;
    let mut raw = Vec::new();
    scan::walk(
        list.ok_or(Detail::Borrowed("missing field `pushes`"))?,
        |_, v| raw.push(v),
    )
    .ok_or(Detail::Borrowed("invalid `pushes`"))?;
    if raw.len() > MAX_BATCH {
        return Err(format!("a batch carries at most {MAX_BATCH} pushes").into());
    }
    raw.into_iter().map(parse_push).collect()
}

/// What a `POST /broadcast` body asks receivers to get.
fn parse_broadcast(body: &[u8]) -> Result<Cow<'_, [u8]>, Detail> {
    let mut data = None;
    scan::walk(body, |k, v| {
        if k == b"data" {
            data = Some(v);
        }
    })
    .ok_or(Detail::Borrowed("invalid request body"))?;
    scan::payload(data.ok_or(Detail::Borrowed("missing field `data`"))?)
        .ok_or(Detail::Borrowed("invalid data"))
}

/// Routes `pushes`, answers them (`batch`: in `POST /push/batch`'s shape,
/// else in `POST /push`'s), then sends their frames. False if the answer
/// could not be written.
fn push(
    r: &mut Routes<'_>,
    pushes: &[Push<'_>],
    batch: bool,
    s: &mut TcpStream,
    reply: &mut Reply,
) -> bool {
    let mut targets: Vec<(usize, &[Arc<Conn>])> = Vec::new();
    let mut results = Vec::with_capacity(pushes.len() * 72);
    let mut total = 0;
    for (i, p) in pushes.iter().enumerate() {
        if i > 0 {
            results.push(b',');
        }
        results.push(b'{');
        match route_one(r, p, &mut results, &mut |conns| targets.push((i, conns))) {
            Ok(n) => total += n,
            Err(detail) => return reply.problem(400, "Bad Request", &detail).write(s),
        }
        if batch {
            results.extend_from_slice(br#","unrouted":[]"#);
        }
        results.push(b'}');
    }
    if batch {
        let head =
            format!(r#"{{"delivered":{total},"dropped":0,"remote_deliveries":0,"results":["#);
        reply.body.extend_from_slice(head.as_bytes());
        reply.body.extend_from_slice(&results);
        reply.body.extend_from_slice(b"]}");
    } else {
        reply.body.extend_from_slice(&results);
    }
    let answered = reply.write(s);
    for (i, conns) in targets {
        r.send(conns, &pushes[i].payload);
    }
    answered
}

/// Routes one push: hands each of its uids' connections to `target`, and
/// appends `"delivered":N,"dropped":0,"remote_deliveries":0,"offline":[…]` to `out`;
/// returns the connections it will reach.
fn route_one<'a>(
    r: &Routes<'a>,
    p: &Push<'_>,
    out: &mut Vec<u8>,
    target: &mut dyn FnMut(&'a [Arc<Conn>]),
) -> Result<usize, Detail> {
    let mut delivered = 0;
    let mut offline: Vec<u8> = Vec::new();
    let mut one = |raw: &[u8]| -> Result<(), Detail> {
        let uid = scan::uid(raw).ok_or(Detail::Borrowed(
            "a uid is a non-empty string or an integer",
        ))?;
        if uid.len() > MAX_UID {
            return Err(format!("a uid is at most {MAX_UID} bytes").into());
        }
        let conns = r.conns(&uid);
        delivered += conns.len();
        if conns.is_empty() {
            if !offline.is_empty() {
                offline.push(b',');
            }
            if raw.first() == Some(&b'"') {
                offline.extend_from_slice(raw);
            } else {
                offline.push(b'"');
                offline.extend_from_slice(raw);
                offline.push(b'"');
            }
        } else {
            target(conns);
        }
        Ok(())
    };
    if p.uids.first() == Some(&b'[') {
        let mut list: Vec<&[u8]> = Vec::new();
        scan::walk(p.uids, |_, v| list.push(v)).ok_or(Detail::Borrowed("invalid uid list"))?;
        for (i, raw) in list.iter().enumerate() {
            // Each connection gets a push once, even when a uid repeats.
            if !list[..i].contains(raw) {
                one(raw)?;
            }
        }
    } else {
        one(p.uids)?;
    }
    let fields =
        format!(r#""delivered":{delivered},"dropped":0,"remote_deliveries":0,"offline":["#);
    out.extend_from_slice(fields.as_bytes());
    out.extend_from_slice(&offline);
    out.push(b']');
    Ok(delivered)
}

/// Completes a WebSocket handshake, reads the uid frame and registers the
/// socket. `rest`: bytes read after the request head.
fn upgrade(relay: &Relay, mut s: TcpStream, accept: &str, rest: Vec<u8>) {
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
         sec-websocket-accept: {accept}\r\n\r\n"
    );
    if s.write_all(answer.as_bytes()).is_err() {
        return;
    }
    let filled = rest.len();
    let mut input = Input { buf: rest, filled };
    input.buf.resize(input.buf.len().max(512), 0);
    let uid = loop {
        match uid_frame(&input.buf[..input.filled]) {
            Ok(Some(uid)) => break uid,
            Ok(None) if input.fill(&mut s) => {}
            // Cut short, bad frame, too long a uid: dropped without a close
            // frame (the bench never does this).
            _ => return,
        }
    };
    let _ = s.set_read_timeout(None);
    let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
    relay.bind(uid, s);
}

/// The uid in the client's first frame, once `b` holds all of it: a masked
/// final text frame of 1 to 256 bytes. Err for anything else.
fn uid_frame(b: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    let [b0, b1, ..] = *b else { return Ok(None) };
    if b0 != 0x81 || b1 & 0x80 == 0 {
        return Err(());
    }
    let (len, at) = match b1 & 0x7f {
        126 => match b.get(2..4) {
            Some(l) => (usize::from(u16::from_be_bytes([l[0], l[1]])), 4),
            None => return Ok(None),
        },
        127 => return Err(()),
        n => (usize::from(n), 2),
    };
    if len == 0 || len > MAX_UID {
        return Err(());
    }
    let Some(frame) = b.get(at..at + 4 + len) else {
        return Ok(None);
    };
    let (mask, payload) = frame.split_at(4);
    Ok(Some(
        payload
            .iter()
            .enumerate()
            .map(|(i, &c)| c ^ mask[i % 4])
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushgate::model::{BatchResponse, BatchResult, PushResponse, Uid};

    #[test]
    fn heads() {
        let h = head(
            b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nconnection: Close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (h.method, h.path, h.content_length),
            (&b"POST"[..], &b"/push"[..], 12)
        );
        assert!(h.close && h.ws_key.is_none());
        let h = head(b"GET /ws HTTP/1.1\r\nSec-WebSocket-Key:  abc== \r\n\r\n").unwrap();
        assert_eq!(h.ws_key, Some(&b"abc=="[..]));
        assert!(head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").is_none());
        assert!(head(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_none());
    }

    #[test]
    fn uid_frames() {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![0x81, 0x80 | 3];
        f.extend_from_slice(&mask);
        f.extend(b"abc".iter().enumerate().map(|(i, c)| c ^ mask[i % 4]));
        assert_eq!(uid_frame(&f), Ok(Some(b"abc".to_vec())));
        assert_eq!(uid_frame(&f[..5]), Ok(None));
        assert_eq!(uid_frame(&[0x81]), Ok(None));
        assert_eq!(uid_frame(&[0x82, 0x83]), Err(()));
        assert_eq!(uid_frame(&[0x81, 0x03]), Err(()));
        assert_eq!(uid_frame(&[0x81, 0x80]), Err(()));
    }

    /// Serves `body` on `route` through a real socket pair; the answer.
    fn call(relay: &Relay, route: Route, body: &[u8]) -> (String, serde_json::Value) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert!(route.serve(relay, body, &mut server, &mut Reply::default()));
        drop(server);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let status = head.lines().next().unwrap().to_owned();
        (status, serde_json::from_str(body).unwrap())
    }

    /// What pushgate's own type serializes to.
    fn json(answer: &impl serde::Serialize) -> serde_json::Value {
        serde_json::to_value(answer).unwrap()
    }

    #[test]
    fn answers_in_pushgates_shapes() {
        let relay = Relay::default();
        let (status, v) = call(
            &relay,
            Route::Push,
            br#"{"uid":["a",7,"a"],"data":{"x":1}}"#,
        );
        assert_eq!(status, "HTTP/1.1 200 OK");
        let offline = |uids: &[&str]| uids.iter().map(|u| Uid::new(u).unwrap()).collect();
        let answer = |uids: &[&str]| PushResponse {
            offline: offline(uids),
            ..PushResponse::default()
        };
        assert_eq!(v, json(&answer(&["a", "7"])));
        let body = br#"{"pushes":[{"uid":"a","data":1},{"uid":"b","data":"x"}]}"#;
        let (_, v) = call(&relay, Route::Batch, body);
        let batch = BatchResponse {
            delivered: 0,
            dropped: 0,
            remote_deliveries: 0,
            results: ["a", "b"]
                .map(|u| BatchResult {
                    push: answer(&[u]),
                    unrouted: Vec::new(),
                })
                .into(),
        };
        assert_eq!(v, json(&batch));
        let (_, v) = call(&relay, Route::Broadcast, br#"{"data":"hi"}"#);
        let broadcast = BroadcastResponse {
            delivered: 0,
            dropped: 0,
            remote_deliveries: 0,
        };
        assert_eq!(v, json(&broadcast));
        let (_, v) = call(&relay, Route::Stats, b"");
        let stats = Stats {
            connections: 0,
            bound_connections: 0,
            bound_uids: 0,
            nodes: 1,
        };
        assert_eq!(v, json(&stats));
        let (status, v) = call(&relay, Route::Push, br#"{"data":1}"#);
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        assert_eq!(v["status"], 400);
        let bad = br#"{"pushes":[{"uid":"a","data":1},{"uid":"b"}]}"#;
        assert_eq!(
            call(&relay, Route::Batch, bad).0,
            "HTTP/1.1 400 Bad Request"
        );
    }
}
