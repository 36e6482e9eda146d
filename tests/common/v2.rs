//! Protocol v2 clients (docs/protocol-v2.md): tokio-tungstenite clients that
//! offer the `pushgate.v2` subprotocol, send a JSON bind frame and read JSON
//! frames.

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::{Gateway, Ws, close_of, next_text};

/// The subprotocol that opts into protocol v2.
pub const V2: &str = "pushgate.v2";

/// Connects to `url` offering the subprotocols `offered` (none: no
/// header); returns the client and the subprotocol the server answered.
pub async fn connect_offering(url: &str, offered: Option<&str>) -> (Ws, Option<String>) {
    let mut request = url.into_client_request().expect("a ws URL");
    if let Some(offered) = offered {
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(offered).expect("a header value"),
        );
    }
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("ws connect");
    let answered = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().expect("ASCII").to_owned());
    (ws, answered)
}

/// Connects to `path` on `gw` as a v2 client (the subprotocol), checking
/// the server answered with it.
pub async fn connect_v2(gw: &Gateway, path: &str) -> Ws {
    let (ws, answered) = connect_offering(&gw.ws_url(path), Some(V2)).await;
    assert_eq!(
        answered.as_deref(),
        Some(V2),
        "the server did not accept v2"
    );
    ws
}

/// Sends `frame` as the bind frame.
pub async fn send_json(ws: &mut Ws, frame: &Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send the bind frame");
}

/// The next text frame, as JSON.
pub async fn next_frame(ws: &mut Ws) -> Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Connects as a v2 client, sends `frame` and returns the client and the
/// `bound` answer.
pub async fn bind_v2(gw: &Gateway, frame: Value) -> (Ws, Value) {
    let mut ws = connect_v2(gw, "/ws").await;
    send_json(&mut ws, &frame).await;
    let bound = next_frame(&mut ws).await;
    assert_eq!(bound["type"], "bound", "{bound}");
    (ws, bound)
}

/// Binds `uid` (legacy mode) resuming from `since` (`None`: fresh).
pub async fn bind_uid(gw: &Gateway, uid: &str, since: Option<&Value>) -> (Ws, Value) {
    let frame = match since {
        Some(since) => json!({"uid": uid, "since": since}),
        None => json!({"uid": uid}),
    };
    bind_v2(gw, frame).await
}

/// The position a frame (`bound` or `message`) carries, as `since` wants it.
pub fn position(frame: &Value) -> Value {
    json!({"offset": frame["offset"], "epoch": frame["epoch"]})
}

/// The close code `ws` ends with.
pub async fn close_code(ws: &mut Ws) -> u16 {
    close_of(ws).await.0
}
