// Types of pushgate-client (hand-written; the source is src/pushgate.js).

/** A position in a uid's stream: the offset of a message and the epoch of its history. */
export interface Position {
  offset: number;
  epoch: string;
}

export type Transport = "websocket" | "sse";

export interface Backoff {
  /** The first retry's window, in ms (default 500). */
  base?: number;
  /** The largest window, in ms (default 30000). */
  cap?: number;
  /** Reconnect attempts in a row before giving up (default Infinity). */
  attempts?: number;
}

export interface PushgateOptions {
  /** The uid to bind (legacy mode, no `--jwt-*` flag on the gateway). */
  uid?: string | number;
  /** A JWT whose `sub` is the uid (secure mode). */
  token?: string;
  /** Called before every connection attempt, and again at once when the gateway closes with
   * 4004 (token expired). Its answer replaces `token`. */
  getToken?: () => string | Promise<string>;
  /** Transports allowed, in no order: WebSocket is preferred (default both). */
  transports?: Transport[];
  /** Reconnect backoff with full jitter: attempt n waits random(0, min(cap, base·2^(n-1))) ms. */
  backoff?: Backoff;
  /** WebSocket failures in a row (no `bound` frame) before falling back to SSE (default 2). */
  sseAfterFailures?: number;
  /** On SSE, how long before WebSocket is tried again, in ms (default 60000; Infinity: never). */
  retryWebSocketAfter?: number;
  /** How long an attempt may take to get its `bound` frame, in ms (default 10000). */
  timeout?: number;
  /** Resume from this position on the first connect (e.g. kept in sessionStorage). */
  since?: Position;
  /** The WebSocket class (default globalThis.WebSocket; injectable for tests or node). */
  WebSocket?: unknown;
  /** The EventSource class (default globalThis.EventSource). */
  EventSource?: unknown;
  /** A draw in [0, 1) for the jitter (default Math.random). */
  random?: () => number;
}

export interface MessageEvent {
  /** The push: its JSON value, or a string. */
  data: unknown;
  /** Absent when the gateway keeps no history (or the store was unreachable). */
  offset?: number;
  epoch?: string;
  /** Reserved: a group message. */
  group?: string;
}

export interface ConnectedEvent {
  uid: string;
  transport: Transport;
  /** The uid's stream top when bound (absent with history off). */
  offset?: number;
  epoch?: string;
  history: boolean;
  /** Only after a resume: whether every missed message follows. */
  recovered?: boolean;
}

export interface DisconnectedEvent {
  /** The close code (1006: network failure or timeout; 1000 after close()). */
  code: number;
  reason: string;
  /** false: the client stopped (close(), a code that must not retry, attempts used up). */
  willReconnect: boolean;
}

export interface PushgateEvents {
  message: MessageEvent;
  broadcast: { data: unknown };
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  reconnecting: { attempt: number; delay: number };
  /** A resume filled the gap: `count` missed messages follow as `message` events. */
  recovered: { count: number };
  /** A reconnect could not fill the gap: reload the page's state. `reason` is the gateway's
   * (history_off, epoch_changed, evicted, offset_ahead, too_large, store_unavailable) or no_position. */
  gap: { reason: string };
  error: unknown;
}

export declare class PushgateClient {
  /**
   * @param url the gateway's base URL, http(s)://host:port[/prefix] (default: the page's
   * origin); the client derives ws(s)://…/ws and …/sse from it.
   */
  constructor(url?: string, options?: PushgateOptions);
  on<K extends keyof PushgateEvents>(type: K, fn: (event: PushgateEvents[K]) => void): this;
  off<K extends keyof PushgateEvents>(type: K, fn: (event: PushgateEvents[K]) => void): this;
  /** Starts connecting and stays connected; a second call does nothing. */
  connect(): this;
  /** Closes for good (until connect() again). */
  close(): this;
  /** The last position held, or null. */
  readonly position: Position | null;
  /** The live connection's transport, or null while not connected. */
  readonly transport: Transport | null;
}

/** The reconnect decision for a close code (docs/protocol-v2.md). */
export declare function decide(code: number): "retry" | "refresh" | "stop";
/** Whether a close before `bound` counts as a WebSocket failure towards the SSE fallback. */
export declare function isTransportFailure(code: number): boolean;
/** The delay before attempt `attempt` (1 for the first), in whole ms. */
export declare function backoffDelay(attempt: number, backoff: { base: number; cap: number }, random?: () => number): number;
/** An endpoint of the gateway from its base URL. */
export declare function endpoint(base: string, path: "ws" | "sse"): URL;
/** "pushgate.v2" */
export declare const SUBPROTOCOL: string;
