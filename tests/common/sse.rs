//! A Server-Sent Events client for the tests: reqwest reads the response
//! chunk by chunk and a small parser (WHATWG HTML §9.2.6, the parts the
//! gateway sends: `event`, `id`, `data`, `retry`, comments) turns the bytes
//! into events as they arrive.

use std::time::Duration;

use super::{Gateway, PATIENCE};

/// One dispatched event, or a comment line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An event: its type (`message` when none was named), its `id` if
    /// the event set one, its data lines joined with LF, and `retry`.
    Event {
        /// `event:`, or `message`.
        event: String,
        /// `id:` of this event, if it had one.
        id: Option<String>,
        /// The `data:` lines, joined with LF.
        data: String,
        /// `retry:` seen in this event's block, in milliseconds.
        retry: Option<u64>,
    },
    /// A comment (`: ping`), without its colon and first space.
    Comment(String),
}

impl Item {
    /// The event's data as JSON (panics on a comment or non-JSON data).
    pub fn json(&self) -> serde_json::Value {
        match self {
            Item::Event { data, .. } => serde_json::from_str(data).expect("JSON data"),
            Item::Comment(c) => panic!("expected an event, got the comment {c:?}"),
        }
    }

    /// The event's type (panics on a comment).
    pub fn kind(&self) -> &str {
        match self {
            Item::Event { event, .. } => event,
            Item::Comment(c) => panic!("expected an event, got the comment {c:?}"),
        }
    }

    /// The event's id.
    pub fn id(&self) -> Option<&str> {
        match self {
            Item::Event { id, .. } => id.as_deref(),
            Item::Comment(_) => None,
        }
    }
}

/// An open event stream.
pub struct SseStream {
    /// The response, being read.
    pub response: reqwest::Response,
    buf: Vec<u8>,
    pending: Pending,
}

#[derive(Default)]
struct Pending {
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
    retry: Option<u64>,
}

/// `GET /sse?{query}` on `gw`'s public listener with
/// `Accept: text/event-stream` and `headers`; the response as it came.
pub async fn request(gw: &Gateway, query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .get(gw.public_url(&format!("/sse?{query}")))
        .header("accept", "text/event-stream");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    tokio::time::timeout(PATIENCE, req.send())
        .await
        .expect("answer in time")
        .expect("GET /sse")
}

/// Opens a stream that must be accepted (200).
pub async fn open(gw: &Gateway, query: &str, headers: &[(&str, &str)]) -> SseStream {
    let response = request(gw, query, headers).await;
    assert_eq!(response.status(), 200, "GET /sse?{query}");
    SseStream::new(response)
}

/// Opens a legacy-mode stream for `uid` and reads its `bound` event.
pub async fn bind(gw: &Gateway, uid: &str) -> SseStream {
    let mut s = open(gw, &format!("uid={uid}"), &[]).await;
    let bound = s.next_event().await.expect("the bound event");
    assert_eq!(bound.kind(), "bound");
    s
}

impl SseStream {
    /// Reads events from `response`.
    pub fn new(response: reqwest::Response) -> SseStream {
        SseStream {
            response,
            buf: Vec::new(),
            pending: Pending::default(),
        }
    }

    /// The next event or comment; `None` once the stream has ended
    /// (cleanly or not). Fails the test after [`PATIENCE`].
    pub async fn next(&mut self) -> Option<Item> {
        self.next_within(PATIENCE)
            .await
            .expect("an event or the end of the stream in time")
    }

    /// [`SseStream::next`] with a patience of `limit`: `Err` when nothing
    /// came in that time.
    pub async fn next_within(&mut self, limit: Duration) -> Result<Option<Item>, ()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(line) = self.take_line() {
                if let Some(item) = self.on_line(&line) {
                    return Ok(Some(item));
                }
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return Err(()),
                Ok(Ok(Some(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Ok(None)) | Ok(Err(_)) => return Ok(None),
            }
        }
    }

    /// The next event, skipping comments; `None` at the end of the stream.
    pub async fn next_event(&mut self) -> Option<Item> {
        loop {
            match self.next().await? {
                Item::Comment(_) => continue,
                event => return Some(event),
            }
        }
    }

    /// Reads until the stream ends and returns every event on the way.
    pub async fn rest(&mut self) -> Vec<Item> {
        let mut items = Vec::new();
        while let Some(item) = self.next().await {
            items.push(item);
        }
        items
    }

    fn take_line(&mut self) -> Option<String> {
        let end = self.buf.iter().position(|&b| b == b'\n')?;
        let mut line: Vec<u8> = self.buf.drain(..=end).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(String::from_utf8(line).expect("UTF-8 event stream"))
    }

    fn on_line(&mut self, line: &str) -> Option<Item> {
        if line.is_empty() {
            let p = std::mem::take(&mut self.pending);
            // A block of only `retry:` or `id:` dispatches no event; the
            // gateway never sends one, so report it rather than hide it.
            if p.data.is_none() && p.event.is_none() && p.id.is_none() && p.retry.is_none() {
                return None;
            }
            return Some(Item::Event {
                event: p.event.unwrap_or_else(|| "message".to_owned()),
                id: p.id,
                data: p.data.unwrap_or_default(),
                retry: p.retry,
            });
        }
        if let Some(comment) = line.strip_prefix(':') {
            return Some(Item::Comment(comment.trim_start().to_owned()));
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "event" => self.pending.event = Some(value),
            "id" => self.pending.id = Some(value),
            "retry" => self.pending.retry = value.parse().ok(),
            "data" => match &mut self.pending.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.pending.data = Some(value),
            },
            _ => {}
        }
        None
    }
}

/// An HTTP/1.1 exchange over a raw socket, for what no client library
/// sends: a head in pieces, a head too large, pipelined requests, a client
/// that stops reading. Every read waits at most [`PATIENCE`].
pub struct Raw {
    /// The socket.
    pub tcp: tokio::net::TcpStream,
    /// Bytes read and not consumed yet.
    buf: Vec<u8>,
}

/// The head of an answer read by [`Raw::head`].
#[derive(Debug)]
pub struct Head {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// The status code.
    pub status: u16,
    /// The header lines, names in lower case (the last line of a name wins).
    pub headers: std::collections::HashMap<String, String>,
}

impl Raw {
    /// Connects to `gw`'s public listener.
    pub async fn connect(gw: &Gateway) -> Raw {
        let tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
        Raw::new(tcp)
    }

    /// Uses an already connected socket.
    pub fn new(tcp: tokio::net::TcpStream) -> Raw {
        tcp.set_nodelay(true).unwrap();
        Raw {
            tcp,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` (a segment of its own, `TCP_NODELAY` being set).
    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// Reads more; `false` at the end of the connection (a reset included).
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(PATIENCE, self.tcp.read(&mut chunk))
            .await
            .expect("bytes or the end of the connection in time");
        match read {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads an answer's head.
    pub async fn head(&mut self) -> Head {
        let end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            assert!(
                self.fill().await,
                "closed before a head: {}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8(self.buf.drain(..end + 4).collect()).unwrap();
        let mut lines = head.trim_end().split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap().to_owned();
        let status = parts.next().unwrap().parse().unwrap();
        let headers = lines
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap();
                (name.to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        Head {
            version,
            status,
            headers,
        }
    }

    /// Reads a `Content-Length` body of `head`'s answer.
    pub async fn body(&mut self, head: &Head) -> Vec<u8> {
        let len: usize = head.headers["content-length"].parse().unwrap();
        while self.buf.len() < len {
            assert!(self.fill().await, "closed inside a body");
        }
        self.buf.drain(..len).collect()
    }

    /// Reads until `needle` has arrived; returns (and consumes) everything
    /// up to its end.
    pub async fn until(&mut self, needle: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(needle.len()).position(|w| w == needle) {
                return self.buf.drain(..at + needle.len()).collect();
            }
            assert!(
                self.fill().await,
                "closed before {:?}: {}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads to the end of the connection; returns what came.
    pub async fn rest(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }
}
