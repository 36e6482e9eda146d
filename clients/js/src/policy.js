// Reconnect policy: how long to wait, and whether to come back at all.
// Pure functions, so the node tests check them without a socket.

/**
 * What a client does after a connection ended with `code`, per the close-code table of
 * docs/protocol-v2.md:
 * - `"retry"`: reconnect with backoff, resuming with `since` (1001 drain, 1006 network failure,
 *   4005 bind timeout, 4006 slow consumer, and any code the table does not name);
 * - `"refresh"`: ask the token provider again and reconnect at once (4004 token expired);
 * - `"stop"`: do not come back (4001 disconnected by the backend, 4002 replaced under the
 *   per-uid cap, where coming back would push another connection out, 4003 token refused,
 *   4007 invalid bind frame, 1002/1007/1009 protocol errors that a retry would repeat).
 * @param {number} code a WebSocket close code, or the `code` of an SSE `close` event
 * @returns {"retry" | "refresh" | "stop"}
 */
export function decide(code) {
  switch (code) {
    case 4004:
      return "refresh";
    case 4001:
    case 4002:
    case 4003:
    case 4007:
    case 1002:
    case 1007:
    case 1009:
      return "stop";
    default:
      return "retry";
  }
}

/**
 * Whether a connection that ended before its `bound` frame with `code` failed as a transport:
 * the server never answered in v2 (a proxy refusing the upgrade shows as 1006 before the
 * socket opens, a proxy dropping frames as a close before `bound`). A code the server chose
 * (1001 drain and the 4xxx codes) means WebSocket itself works, so it does not count towards
 * the SSE fallback.
 * @param {number} code
 * @returns {boolean}
 */
export function isTransportFailure(code) {
  return code !== 1001 && !(code >= 4000 && code < 5000) && decide(code) === "retry";
}

/**
 * The delay before reconnect attempt `attempt` (1 for the first): exponential backoff with full
 * jitter (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015), a uniform draw in
 * [0, min(cap, base * 2^(attempt - 1))), so clients cut off together by a drain do not come
 * back together.
 * @param {number} attempt 1, 2, …
 * @param {{base: number, cap: number}} backoff milliseconds
 * @param {() => number} [random] a draw in [0, 1), Math.random by default
 * @returns {number} whole milliseconds
 */
export function backoffDelay(attempt, { base, cap }, random = Math.random) {
  const window = Math.min(cap, base * 2 ** Math.min(attempt - 1, 52));
  return Math.floor(random() * window);
}
