import { test } from "node:test";
import assert from "node:assert/strict";
import { afterDueTimers, bound, client } from "./fakes.js";

/** Fails the first `n` WebSocket attempts as a proxy refusing the upgrade does (1006, never open). */
async function refuse(t, n) {
  for (let i = 0; i < n; i++) {
    const ws = await t.f.nth(i);
    assert.equal(ws.kind, "websocket");
    ws.end(1006, "");
  }
  return t.f.nth(n);
}

test("after sseAfterFailures refused upgrades the client uses /sse with its uid", async () => {
  const t = client({ sseAfterFailures: 2 });
  t.c.connect();
  const es = await refuse(t, 2);
  assert.equal(es.kind, "sse");
  assert.equal(es.url.href, "http://gw.test:1234/sse?uid=u1");
  es.emit("bound", bound({ offset: 3 }));
  es.emit("message", { type: "message", offset: 4, epoch: "e1", data: { n: 4 } });
  es.emit("message", { type: "broadcast", data: "all" });
  assert.deepEqual(t.seen.of("connected")[0].transport, "sse");
  assert.equal(t.c.transport, "sse");
  assert.deepEqual(t.seen.of("message"), [{ data: { n: 4 }, offset: 4, epoch: "e1" }]);
  assert.deepEqual(t.seen.of("broadcast"), [{ data: "all" }]);
  assert.deepEqual(t.seen.of("reconnecting").map((e) => e.attempt), [1, 2], "the failures were not reported as disconnects");
  assert.deepEqual(t.seen.of("disconnected"), []);
});

test("closes the server chose before bound do not push the client to SSE", async () => {
  const t = client({ sseAfterFailures: 1 });
  t.c.connect();
  (await t.f.nth(0)).end(4005, "bind timeout");
  (await t.f.nth(1)).end(1001, "draining");
  assert.equal((await t.f.nth(2)).kind, "websocket");
});

test("an SSE close event decides like a WebSocket close code, and the client resumes with since", async () => {
  const t = client({ sseAfterFailures: 1 });
  t.c.connect();
  const es = await refuse(t, 1);
  es.emit("bound", bound({ offset: 3, epoch: "ab" }));
  es.emit("message", { type: "message", offset: 4, epoch: "ab", data: 4 });
  es.emit("close", { code: 1001, reason: "draining" });
  assert.ok(es.closed, "the stream is closed, so the browser does not reconnect on its own");
  assert.deepEqual(t.seen.of("disconnected"), [{ code: 1001, reason: "draining", willReconnect: true }]);
  const again = await t.f.nth(2);
  assert.equal(again.kind, "sse", "still within retryWebSocketAfter");
  assert.equal(again.url.searchParams.get("since"), "ab:4");
});

test("an SSE stream error reconnects with backoff; a stopping code stops", async () => {
  const t = client({ sseAfterFailures: 1, uid: undefined, token: "jwt1" });
  t.c.connect();
  const es = await refuse(t, 1);
  assert.equal(es.url.searchParams.get("token"), "jwt1");
  es.emit("bound", bound());
  es.emit("error", "");
  assert.deepEqual(t.seen.of("disconnected"), [{ code: 1006, reason: "", willReconnect: true }]);
  const again = await t.f.nth(2);
  again.emit("bound", bound());
  again.emit("close", { code: 4001, reason: "disconnected by the backend" });
  assert.deepEqual(t.seen.of("disconnected").at(-1), { code: 4001, reason: "disconnected by the backend", willReconnect: false });
  await afterDueTimers();
  assert.equal(t.f.made.length, 3);
});

test("on SSE with history, WebSocket is tried again after retryWebSocketAfter, resuming with since", async () => {
  const t = client({ sseAfterFailures: 2, retryWebSocketAfter: 1 });
  t.c.connect();
  const es = await refuse(t, 2);
  es.emit("bound", bound({ offset: 6 }));
  const ws = await t.f.nth(3);
  assert.equal(ws.kind, "websocket");
  assert.ok(es.closed);
  ws.open();
  assert.deepEqual(ws.bind.since, { offset: 6, epoch: "e1" });
  ws.frame(bound({ offset: 6, recovered: true }));
  assert.equal(t.c.transport, "websocket");
  assert.deepEqual(t.seen.of("recovered"), [{ count: 0 }]);
});

test("a failed retry of WebSocket goes straight back to SSE", async () => {
  const t = client({ sseAfterFailures: 2, retryWebSocketAfter: 1 });
  t.c.connect();
  const es = await refuse(t, 2);
  es.emit("bound", bound({ offset: 6 }));
  (await t.f.nth(3)).end(1006, "");
  const back = await t.f.nth(4);
  assert.equal(back.kind, "sse");
  assert.equal(back.url.searchParams.get("since"), "e1:6");
});

test("without history the client stays on SSE until the stream drops (a switch would lose pushes)", async () => {
  const t = client({ sseAfterFailures: 1, retryWebSocketAfter: 0 });
  t.c.connect();
  const es = await refuse(t, 1);
  es.emit("bound", { type: "bound", uid: "u1", history: false });
  await afterDueTimers();
  assert.equal(t.f.made.length, 2);
  es.emit("error", "");
  assert.equal((await t.f.nth(2)).kind, "websocket", "retryWebSocketAfter has passed: the reconnect tries WebSocket");
});

test("without WebSocket at all the client uses SSE from the start", async () => {
  const t = client({ WebSocket: null });
  t.c.connect();
  assert.equal((await t.f.nth(0)).kind, "sse");
});

test("with transports [\"websocket\"] the client never falls back", async () => {
  const t = client({ transports: ["websocket"], sseAfterFailures: 1 });
  t.c.connect();
  (await t.f.nth(0)).end(1006, "");
  (await t.f.nth(1)).end(1006, "");
  assert.equal((await t.f.nth(2)).kind, "websocket");
});
