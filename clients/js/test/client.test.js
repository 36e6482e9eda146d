import { test } from "node:test";
import assert from "node:assert/strict";
import { afterDueTimers, bound, client } from "./fakes.js";


test("the client opens /ws with the v2 subprotocol and binds its uid", async () => {
  const { c, f, seen } = client();
  c.connect();
  const ws = await f.nth(0);
  assert.equal(ws.url.href, "ws://gw.test:1234/ws");
  assert.equal(ws.protocol, "pushgate.v2");
  ws.open();
  assert.deepEqual(ws.bind, { uid: "u1" });
  ws.frame(bound({ offset: 3 }));
  assert.deepEqual(seen.of("connected"), [{ uid: "u1", transport: "websocket", offset: 3, epoch: "e1", history: true, recovered: undefined }]);
  assert.equal(c.transport, "websocket");
  assert.deepEqual(c.position, { offset: 3, epoch: "e1" });
  assert.deepEqual(seen.of("gap"), [], "a first connect has no gap to report");
});

test("https gives wss, and a path prefix is kept", async () => {
  const { c, f } = client({}, "https://gw.test/push/");
  c.connect();
  assert.equal((await f.nth(0)).url.href, "wss://gw.test/push/ws");
});

test("pushes and broadcasts reach the page; unknown frame types are ignored", async () => {
  const { c, f, seen } = client();
  c.connect();
  const ws = await f.nth(0);
  ws.open();
  ws.frame(bound());
  ws.frame({ type: "message", offset: 1, epoch: "e1", data: { percent: "88%" } });
  ws.frame({ type: "later-addition", x: 1 });
  ws.frame({ type: "broadcast", data: "maintenance at 22:00" });
  ws.frame({ type: "message", data: "no history" });
  assert.deepEqual(seen.of("message"), [
    { data: { percent: "88%" }, offset: 1, epoch: "e1" },
    { data: "no history", offset: undefined, epoch: undefined },
  ]);
  assert.deepEqual(seen.of("broadcast"), [{ data: "maintenance at 22:00" }]);
  assert.deepEqual(c.position, { offset: 1, epoch: "e1" }, "a message without offset leaves the position alone");
});

test("a token is sent in the bind frame, never in the URL", async () => {
  const { c, f } = client({ uid: undefined, token: "jwt1" });
  c.connect();
  const ws = await f.nth(0);
  ws.open();
  assert.deepEqual(ws.bind, { token: "jwt1" });
  assert.equal(ws.url.search, "");
});

for (const code of [1001, 1006, 4005, 4006]) {
  test(`close code ${code} reconnects with backoff and resumes from the last message`, async () => {
    const { c, f, seen } = client();
    c.connect();
    const ws = await f.nth(0);
    ws.open();
    ws.frame(bound({ offset: 4 }));
    ws.frame({ type: "message", offset: 5, epoch: "e1", data: 1 });
    ws.end(code, "bye");
    assert.deepEqual(seen.of("disconnected"), [{ code, reason: "bye", willReconnect: true }]);
    assert.deepEqual(seen.of("reconnecting"), [{ attempt: 1, delay: 0 }]);
    const again = await f.nth(1);
    again.open();
    assert.deepEqual(again.bind, { uid: "u1", since: { offset: 5, epoch: "e1" } });
  });
}

for (const code of [4001, 4002, 4003, 4007, 1002, 1007, 1009]) {
  test(`close code ${code} stops the client and tells the page`, async () => {
    const { c, f, seen } = client();
    c.connect();
    const ws = await f.nth(0);
    ws.open();
    ws.frame(bound());
    ws.end(code, "no");
    assert.deepEqual(seen.of("disconnected"), [{ code, reason: "no", willReconnect: false }]);
    await afterDueTimers();
    assert.equal(f.made.length, 1, "no second connection");
    assert.deepEqual(seen.of("reconnecting"), []);
    assert.equal(c.transport, null);
  });
}

test("a refusal before bound (4003) stops too, without counting as a WebSocket failure", async () => {
  const { c, f, seen } = client({ sseAfterFailures: 1 });
  c.connect();
  const ws = await f.nth(0);
  ws.open();
  ws.end(4003, "token refused");
  assert.deepEqual(seen.of("disconnected"), [{ code: 4003, reason: "token refused", willReconnect: false }]);
  c.connect();
  assert.equal((await f.nth(1)).kind, "websocket");
});

test("token expired (4004) asks the provider again and reconnects at once, unnoticed", async () => {
  let n = 0;
  const { c, f, seen } = client({ uid: undefined, getToken: async () => `jwt${++n}`, backoff: { base: 1e9 } });
  c.connect();
  const ws = await f.nth(0);
  ws.open();
  assert.deepEqual(ws.bind, { token: "jwt1" });
  ws.frame(bound({ offset: 7 }));
  ws.end(4004, "token expired");
  const again = await f.nth(1);
  again.open();
  assert.deepEqual(again.bind, { token: "jwt2", since: { offset: 7, epoch: "e1" } });
  assert.deepEqual(seen.of("disconnected"), [], "the page is not told");
  assert.deepEqual(seen.of("reconnecting"), [], "no backoff (base is huge here)");
  again.frame(bound({ offset: 7, recovered: true }));
  assert.deepEqual(seen.of("recovered"), [{ count: 0 }]);
});

test("a provider that keeps handing out expired tokens goes through the backoff", async () => {
  const { c, f, seen } = client({ uid: undefined, getToken: () => "stale" });
  c.connect();
  (await f.nth(0)).end(4004, "token expired");
  (await f.nth(1)).end(4004, "token expired");
  await f.nth(2);
  assert.deepEqual(seen.of("reconnecting"), [{ attempt: 1, delay: 0 }]);
});

test("token expired without a provider stops: the same token would be refused again", async () => {
  const { c, f, seen } = client({ uid: undefined, token: "jwt1" });
  c.connect();
  const ws = await f.nth(0);
  ws.open();
  ws.frame(bound());
  ws.end(4004, "token expired");
  assert.deepEqual(seen.of("disconnected"), [{ code: 4004, reason: "token expired", willReconnect: false }]);
});

test("the token provider is called on every reconnect", async () => {
  let n = 0;
  const { c, f } = client({ uid: undefined, getToken: () => `jwt${++n}` });
  c.connect();
  const ws = await f.nth(0);
  ws.open();
  ws.frame(bound());
  ws.end(1006, "");
  const again = await f.nth(1);
  again.open();
  assert.equal(again.bind.token, "jwt2");
});

test("a failing token provider is reported and retried with backoff", async () => {
  let n = 0;
  const { c, f, seen } = client({
    uid: undefined,
    getToken: async () => {
      if (++n === 1) throw new Error("auth backend down");
      return "jwt";
    },
  });
  c.connect();
  const ws = await f.nth(0);
  assert.equal(seen.of("error")[0].message, "auth backend down");
  assert.deepEqual(seen.of("reconnecting"), [{ attempt: 1, delay: 0 }]);
  ws.open();
  assert.equal(ws.bind.token, "jwt");
});

test("attempts bounds the reconnects in a row; a bind resets the count", async () => {
  const { c, f, seen } = client({ backoff: { attempts: 2 }, transports: ["websocket"] });
  c.connect();
  const first = await f.nth(0);
  first.open();
  first.frame(bound());
  first.end(1006, "");
  (await f.nth(1)).end(1006, "");
  (await f.nth(2)).end(1006, "");
  assert.deepEqual(seen.of("reconnecting").map((e) => e.attempt), [1, 2]);
  assert.deepEqual(seen.of("disconnected").at(-1), { code: 1006, reason: "", willReconnect: false });
  await afterDueTimers();
  assert.equal(f.made.length, 3);
});

test("close() ends the connection for good and tells the page", async () => {
  const { c, f, seen } = client();
  c.connect();
  const ws = await f.nth(0);
  ws.open();
  ws.frame(bound());
  c.close();
  assert.deepEqual(ws.closed, { code: 1000 });
  ws.end(1006, "late");
  assert.deepEqual(seen.of("disconnected"), [{ code: 1000, reason: "closed by client", willReconnect: false }]);
  await afterDueTimers();
  assert.equal(f.made.length, 1);
});

test("a connection that never gets its bound frame times out and is retried", async () => {
  const { c, f, seen } = client({ timeout: 1 });
  c.connect();
  const ws = await f.nth(0);
  ws.open();
  await f.nth(1);
  assert.deepEqual(ws.closed, { code: 1000 });
  assert.deepEqual(seen.of("reconnecting"), [{ attempt: 1, delay: 0 }]);
});

test("a token provider that never answers times out the attempt, which is retried", async () => {
  let n = 0;
  const { c, f, seen } = client({
    uid: undefined,
    timeout: 1,
    getToken: () => (++n === 1 ? new Promise(() => {}) : "jwt"),
  });
  c.connect();
  const ws = await f.nth(0);
  ws.open();
  assert.deepEqual(ws.bind, { token: "jwt" });
  assert.deepEqual(seen.of("reconnecting"), [{ attempt: 1, delay: 0 }]);
});

test("a connection that fails with an error event alone (Node's WebSocket) is retried without waiting for the timeout", async () => {
  // The attempt's own deadline is a minute: only the error event can bring the retry within
  // the second this test allows.
  const { c, f, seen } = client({ backoff: { base: 1, cap: 1 }, timeout: 60000 });
  c.connect();
  const first = await f.nth(0);
  first.fail();
  let deadline;
  const late = new Promise((_, reject) => {
    deadline = setTimeout(() => reject(new Error("no retry within a second of the error")), 1000);
  });
  const second = await Promise.race([f.nth(1), late]);
  clearTimeout(deadline);
  assert.equal(second.kind, "websocket");
  assert.equal(seen.of("reconnecting").length, 1);
  c.close();
});
