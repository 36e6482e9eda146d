// pushgate-client: a browser client for the pushgate gateway, protocol v2
// (docs/protocol-v2.md): binds a uid or a token, resumes from the last offset after a
// reconnect, reconnects with backoff by close code, and falls back to Server-Sent Events when
// WebSocket cannot get through.

import { backoffDelay, decide, isTransportFailure } from "./policy.js";
import { openEventSource, openWebSocket } from "./transports.js";

export { backoffDelay, decide, isTransportFailure } from "./policy.js";
export { endpoint, SUBPROTOCOL } from "./transports.js";

/** @typedef {import("../pushgate").PushgateOptions} PushgateOptions */
/** @typedef {import("../pushgate").Position} Position */

/**
 * A connection to the gateway that stays up: see pushgate.d.ts for the options and events.
 */
export class PushgateClient {
  #url;
  #o;
  /** @type {Map<string, Set<Function>>} */
  #listeners = new Map();
  /** Bumped by every attempt and by close(): callbacks of an older attempt are ignored. */
  #gen = 0;
  /** Ends the live transport silently, or null. */
  #stop = null;
  /** @type {"websocket" | "sse" | null} */
  #kind = null;
  #active = false;
  #bound = false;
  #everBound = false;
  /** Reconnect attempts since the last `bound`. */
  #attempt = 0;
  /** Consecutive WebSocket transport failures; SSE once it reaches sseAfterFailures. */
  #wsFailures = 0;
  /** When the client last fell back to SSE (ms since the epoch; 0: not on SSE yet). */
  #sseAt = 0;
  /** Whether the token was refreshed once since the last `bound` (4004 skips backoff once). */
  #refreshed = false;
  /** @type {Position | null} */
  #pos;
  /** @type {Position | null} the `since` sent with the live attempt */
  #sent = null;
  #timer;
  #retryTimer;

  /**
   * @param {string} [url] the gateway's base URL, http(s)://host:port (the page's origin when
   *   omitted)
   * @param {PushgateOptions} [options]
   */
  constructor(url, options = {}) {
    const o = {
      transports: ["websocket", "sse"],
      sseAfterFailures: 2,
      retryWebSocketAfter: 60000,
      timeout: 10000,
      WebSocket: globalThis.WebSocket,
      EventSource: globalThis.EventSource,
      random: Math.random,
      ...options,
    };
    o.backoff = { base: 500, cap: 30000, attempts: Infinity, ...options.backoff };
    if (o.uid == null && o.token == null && !o.getToken) {
      throw new TypeError("pushgate: one of uid, token or getToken is needed");
    }
    this.#url = url ?? globalThis.location?.origin;
    this.#o = o;
    this.#pos = options.since ?? null;
  }

  /**
   * Adds a listener; a listener that throws does not break the client (the error is rethrown
   * outside, for window.onerror).
   * @param {string} type
   * @param {Function} fn
   * @returns {this}
   */
  on(type, fn) {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(fn);
    return this;
  }

  /**
   * @param {string} type
   * @param {Function} fn
   * @returns {this}
   */
  off(type, fn) {
    this.#listeners.get(type)?.delete(fn);
    return this;
  }

  /** The last position held: pass it as `since` to a later client to resume across pages. */
  get position() {
    return this.#pos && { ...this.#pos };
  }

  /** The transport of the live connection, or null while not connected. */
  get transport() {
    return this.#bound ? this.#kind : null;
  }

  /** Starts connecting (and staying connected); a second call does nothing. */
  connect() {
    if (!this.#active) {
      this.#active = true;
      this.#attempt = 0;
      this.#open();
    }
    return this;
  }

  /** Closes the connection for good (until connect() again). */
  close() {
    if (this.#active) {
      const was = this.#bound;
      this.#active = false;
      this.#drop();
      if (was) this.#emit("disconnected", { code: 1000, reason: "closed by client", willReconnect: false });
    }
    return this;
  }

  #emit(type, event) {
    for (const fn of this.#listeners.get(type) ?? []) {
      try {
        fn(event);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }

  /** Ends the live attempt without a word: its callbacks and timers go quiet. */
  #drop() {
    this.#gen++;
    clearTimeout(this.#timer);
    clearTimeout(this.#retryTimer);
    const stop = this.#stop;
    this.#stop = null;
    this.#bound = false;
    try {
      stop?.();
    } catch {}
  }

  /** One connection attempt: a token when a provider is given, a transport, the bind. */
  async #open() {
    const gen = ++this.#gen;
    const o = this.#o;
    this.#kind = null;
    // A token provider that never answers, or a bound frame that never comes (a proxy that
    // accepts the upgrade and then holds frames), fails the attempt like a refused upgrade.
    this.#timer = setTimeout(() => gen === this.#gen && this.#ended(1006, "timeout"), o.timeout);
    let token = o.token;
    if (o.getToken) {
      try {
        token = await o.getToken();
      } catch (e) {
        if (gen === this.#gen) {
          this.#emit("error", e);
          this.#ended(1006, "token provider failed");
        }
        return;
      }
      if (gen !== this.#gen) return;
    }
    const kind = (this.#kind = this.#pick());
    if (!kind) {
      this.#emit("error", new Error("pushgate: neither WebSocket nor EventSource is available"));
      return this.#ended(1002, "no transport");
    }
    const bind = {};
    if (o.uid != null) bind.uid = o.uid;
    if (token != null) bind.token = token;
    if ((this.#sent = this.#pos)) bind.since = this.#pos;
    const h = {
      frame: (text) => gen === this.#gen && this.#frame(text),
      end: (code, reason) => gen === this.#gen && this.#ended(code, reason),
    };
    try {
      this.#stop = (kind === "sse" ? openEventSource : openWebSocket)(o[kind === "sse" ? "EventSource" : "WebSocket"], this.#url, bind, h);
    } catch (e) {
      this.#emit("error", e);
      this.#ended(1006, String(e?.message ?? e));
    }
  }

  /** WebSocket until it failed sseAfterFailures times in a row; then SSE, with WebSocket tried
   * again once retryWebSocketAfter has passed. */
  #pick() {
    const o = this.#o;
    const ws = o.WebSocket && o.transports.includes("websocket");
    const sse = o.EventSource && o.transports.includes("sse");
    const n = o.sseAfterFailures;
    if (ws && sse && this.#wsFailures >= n) {
      if (!this.#sseAt) this.#sseAt = Date.now();
      else if (Date.now() - this.#sseAt >= o.retryWebSocketAfter) this.#wsFailures = Math.max(0, n - 1);
    }
    return ws && !(sse && this.#wsFailures >= n) ? "websocket" : sse ? "sse" : null;
  }

  #frame(text) {
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return this.#emit("error", new Error("pushgate: a frame that is not JSON"));
    }
    if (f?.type === "bound") this.#onBound(f);
    else if (!this.#bound) return;
    else if (f.type === "message") this.#onMessage(f);
    else if (f.type === "broadcast") this.#emit("broadcast", { data: f.data });
    // Any other type is a later addition: ignored, as the protocol asks.
  }

  #onBound(f) {
    if (this.#bound) return;
    clearTimeout(this.#timer);
    const o = this.#o;
    const gen = this.#gen;
    const sent = this.#sent;
    const again = this.#everBound || sent != null;
    const at = f.offset != null && f.epoch != null;
    this.#bound = this.#everBound = true;
    this.#attempt = 0;
    this.#refreshed = false;
    if (this.#kind === "websocket") this.#wsFailures = 0;
    // After recovered: true the replay brings the position up; otherwise continue from here.
    if (f.recovered !== true && at) this.#pos = { offset: f.offset, epoch: f.epoch };
    this.#emit("connected", {
      uid: f.uid,
      transport: this.#kind,
      offset: f.offset,
      epoch: f.epoch,
      history: f.history,
      recovered: f.recovered,
    });
    if (gen !== this.#gen) return; // a listener closed the client
    if (f.recovered === true) {
      const count = at && sent?.epoch === f.epoch ? Math.max(0, f.offset - sent.offset) : 0;
      this.#emit("recovered", { count });
    } else if (again) {
      // A rebind without recovery: pushes may have been missed, the page reloads its state.
      this.#emit("gap", { reason: f.reason ?? (f.history ? "no_position" : "history_off") });
    }
    // On SSE with history on, move back to WebSocket after a while: `since` makes the switch
    // lossless. With history off the switch would lose pushes, so it waits for a reconnect.
    // (Infinity turns this off; setTimeout would fire at once past 2^31 - 1 ms.)
    const after = o.retryWebSocketAfter;
    if (this.#kind === "sse" && f.history && after < 2 ** 31 && o.WebSocket && o.transports.includes("websocket")) {
      this.#retryTimer = setTimeout(() => {
        if (gen !== this.#gen) return;
        this.#drop();
        this.#wsFailures = Math.max(0, o.sseAfterFailures - 1);
        this.#open();
      }, after);
    }
  }

  #onMessage(f) {
    const { data, offset, epoch, group } = f;
    // Group streams (reserved) have offsets of their own: they never move the uid's position.
    if (group == null && offset != null && epoch != null) {
      const p = this.#pos;
      // Defence in depth: at or below the position held, in the same epoch, is a duplicate.
      if (p && p.epoch === epoch && offset <= p.offset) return;
      this.#pos = { offset, epoch };
    }
    this.#emit("message", group == null ? { data, offset, epoch } : { data, offset, epoch, group });
  }

  /** The attempt or connection ended with `code`: decide, tell the page, maybe come back. */
  #ended(code, reason) {
    const o = this.#o;
    const was = this.#bound;
    this.#drop();
    if (this.#kind === "websocket" && !was && isTransportFailure(code)) {
      if (++this.#wsFailures >= o.sseAfterFailures) this.#sseAt = 0;
    }
    let action = decide(code);
    if (action === "refresh") {
      // Once at once, without a word to the page; a provider that keeps handing out expired
      // tokens then goes through the backoff like any failure.
      if (o.getToken && !this.#refreshed) {
        this.#refreshed = true;
        return this.#open();
      }
      action = o.getToken ? "retry" : "stop";
    }
    const willReconnect = action === "retry" && this.#attempt < o.backoff.attempts;
    if (!willReconnect) this.#active = false;
    if (was || !willReconnect) this.#emit("disconnected", { code, reason, willReconnect });
    if (!willReconnect || !this.#active) return;
    const attempt = ++this.#attempt;
    const delay = backoffDelay(attempt, o.backoff, o.random);
    this.#emit("reconnecting", { attempt, delay });
    if (this.#active) this.#timer = setTimeout(() => this.#open(), delay);
  }
}
