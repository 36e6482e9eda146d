// The two ways to reach the gateway, behind one shape: open(…) starts a connection and returns
// a function that ends it silently; the connection reports each raw frame text to `h.frame`
// and its end, once, to `h.end(code, reason)`.

/** The subprotocol that opts a WebSocket into protocol v2. */
export const SUBPROTOCOL = "pushgate.v2";

/**
 * @typedef {{uid?: string | number, token?: string, since?: {offset: number, epoch: string}}} Bind
 * @typedef {{frame: (text: string) => void, end: (code: number, reason: string) => void}} Handlers
 */

/**
 * An endpoint of the gateway from its base URL: `http://h:1234` gives `ws://h:1234/ws` and
 * `http://h:1234/sse`; `https` gives `wss`; a path prefix (`https://h/push/`) is kept, so the
 * gateway can sit behind a proxy under a prefix. A relative base resolves against the page.
 * @param {string} base http(s):// or ws(s)://
 * @param {"ws" | "sse"} path
 * @returns {URL}
 */
export function endpoint(base, path) {
  const url = new URL(base, globalThis.location?.href);
  const secure = url.protocol === "https:" || url.protocol === "wss:";
  url.protocol = (path === "ws" ? "ws" : "http") + (secure ? "s:" : ":");
  url.pathname = url.pathname.replace(/\/+$/, "") + "/" + path;
  url.hash = "";
  return url;
}

/**
 * Opens `/ws` with the v2 subprotocol and sends the bind frame once open. The token travels in
 * the bind frame, never in the URL, so it stays out of proxies' access logs.
 * @param {typeof WebSocket} Ctor
 * @param {string} base
 * @param {Bind} bind
 * @param {Handlers} h
 * @returns {() => void}
 */
export function openWebSocket(Ctor, base, bind, h) {
  const ws = new Ctor(endpoint(base, "ws").href, SUBPROTOCOL);
  let ended = false;
  const end = (code, reason) => {
    if (!ended) {
      ended = true;
      h.end(code, reason);
    }
  };
  ws.onopen = () => ws.send(JSON.stringify(bind));
  ws.onmessage = (e) => h.frame(e.data);
  ws.onclose = (e) => end(e.code, e.reason);
  // Browsers follow an error with a close event (1006); Node's WebSocket fires only the error
  // for a refused connection, which would leave the attempt to its timeout.
  ws.onerror = () => setTimeout(() => end(1006, "connection failed"), 0);
  return () => {
    ended = true;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    ws.close(1000);
  };
}

/**
 * Opens `/sse?uid=…` (or `?token=…`, EventSource cannot send headers) with `since=<epoch>:<offset>`
 * when resuming. The stream's `bound` and default events carry the same JSON frames as
 * WebSocket; its `close` event carries `{code, reason}`. A stream error (network failure, an
 * HTTP refusal, the server ending the stream) ends the connection as 1006: the browser's own
 * reconnect is cut short so the client's backoff, token refresh and `since` apply alike on
 * both transports.
 * @param {typeof EventSource} Ctor
 * @param {string} base
 * @param {Bind} bind
 * @param {Handlers} h
 * @returns {() => void}
 */
export function openEventSource(Ctor, base, bind, h) {
  const url = endpoint(base, "sse");
  const q = url.searchParams;
  if (bind.token != null) q.set("token", bind.token);
  else q.set("uid", String(bind.uid));
  if (bind.since) q.set("since", bind.since.epoch + ":" + bind.since.offset);
  const es = new Ctor(url.href);
  let live = true;
  const stop = () => {
    live = false;
    es.close();
  };
  const on = (type, fn) => es.addEventListener(type, (e) => live && fn(e));
  const end = (code, reason) => {
    stop();
    h.end(code, reason);
  };
  on("bound", (e) => h.frame(e.data));
  on("message", (e) => h.frame(e.data));
  on("close", (e) => {
    let c;
    try {
      c = JSON.parse(e.data);
    } catch {}
    end(typeof c?.code == "number" ? c.code : 1006, String(c?.reason ?? ""));
  });
  on("error", () => end(1006, ""));
  return stop;
}
