import { after } from "node:test";
import { PushgateClient } from "../src/pushgate.js";

// Small stand-ins for the browser's WebSocket and EventSource, injected through the client's
// options: the tests drive the server's side (open, frames, close codes) by hand and check the
// client's decisions. The real browser runs against the real gateway in tests/browser.

/** A fresh pair of classes whose instances are recorded in creation order. */
export function fakes() {
  const made = [];
  let waiters = [];
  const note = (x) => {
    made.push(x);
    const ready = waiters.filter((w) => made.length > w.i);
    waiters = waiters.filter((w) => made.length <= w.i);
    for (const w of ready) w.resolve(made[w.i]);
  };

  class WebSocket {
    kind = "websocket";
    sent = [];
    closed = null;
    constructor(url, protocol) {
      this.url = new URL(url);
      this.protocol = protocol;
      note(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close(code) {
      this.closed = { code };
    }
    /** The bind frame the client sent once open. */
    get bind() {
      return this.sent[0];
    }
    open() {
      this.onopen?.({});
    }
    frame(value) {
      this.onmessage?.({ data: typeof value == "string" ? value : JSON.stringify(value) });
    }
    end(code, reason = "") {
      this.onclose?.({ code, reason });
    }
    /** A failure reported only as an error event, as Node's WebSocket does for a refused connection. */
    fail() {
      this.onerror?.({});
    }
  }

  class EventSource {
    kind = "sse";
    closed = false;
    listeners = {};
    constructor(url) {
      this.url = new URL(url);
      note(this);
    }
    addEventListener(type, fn) {
      (this.listeners[type] ??= []).push(fn);
    }
    close() {
      this.closed = true;
    }
    /** Dispatches an event as the browser would: `type` "message" for a frame without `event:`. */
    emit(type, value) {
      const data = typeof value == "string" ? value : JSON.stringify(value);
      for (const fn of this.listeners[type] ?? []) fn({ type, data });
    }
  }

  /** The i-th connection the client made (0-based), once it exists. */
  const nth = (i) =>
    made.length > i ? Promise.resolve(made[i]) : new Promise((resolve) => waiters.push({ i, resolve }));

  return { WebSocket, EventSource, made, nth };
}

/** Every event the client emits, in order, as [type, event]. */
export function record(client) {
  const seen = [];
  for (const type of ["message", "broadcast", "connected", "disconnected", "reconnecting", "recovered", "gap", "error"]) {
    client.on(type, (e) => seen.push([type, e]));
  }
  seen.of = (type) => seen.filter(([t]) => t === type).map(([, e]) => e);
  return seen;
}

/** A `bound` frame as the gateway sends it. */
export function bound(extra = {}) {
  return { type: "bound", uid: "u1", history: true, offset: 0, epoch: "e1", ...extra };
}

/** Lets every timer already due (the reconnect timer with delay 0 included) run first: node
 * runs timers of the same duration in the order they were set. */
export function afterDueTimers() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

const clients = [];
// Stops every client's timers, so the test process ends as soon as the tests do.
after(() => clients.forEach((c) => c.close()));

/** A client on fake transports whose backoff always draws 0 (reconnects on the next tick). */
export function client(options = {}, url = "http://gw.test:1234") {
  const f = fakes();
  const c = new PushgateClient(url, { uid: "u1", WebSocket: f.WebSocket, EventSource: f.EventSource, random: () => 0, ...options });
  clients.push(c);
  return { c, f, seen: record(c) };
}
