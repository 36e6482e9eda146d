import { test } from "node:test";
import assert from "node:assert/strict";
import { bound, client } from "./fakes.js";

/** Connects over the fake WebSocket and binds with `frame`; returns the socket. */
async function connected(t, n, frame) {
  const ws = await t.f.nth(n);
  ws.open();
  ws.frame(frame);
  return ws;
}

test("with nothing received yet, the bound frame's position is resumed from", async () => {
  const t = client();
  t.c.connect();
  (await connected(t, 0, bound({ offset: 12, epoch: "e7" }))).end(1006, "");
  const again = await t.f.nth(1);
  again.open();
  assert.deepEqual(again.bind.since, { offset: 12, epoch: "e7" });
});

test("a message at or below the position held in the same epoch is dropped as a duplicate", async () => {
  const t = client();
  t.c.connect();
  const ws = await connected(t, 0, bound({ offset: 2 }));
  for (const offset of [3, 2, 3, 4, 1]) ws.frame({ type: "message", offset, epoch: "e1", data: offset });
  ws.frame({ type: "message", offset: 1, epoch: "e2", data: "new epoch" });
  assert.deepEqual(
    t.seen.of("message").map((m) => m.data),
    [3, 4, "new epoch"],
  );
  assert.deepEqual(t.c.position, { offset: 1, epoch: "e2" });
});

test("a recovered resume reports how many missed messages follow, then replays them", async () => {
  const t = client();
  t.c.connect();
  const ws = await connected(t, 0, bound({ offset: 4 }));
  ws.frame({ type: "message", offset: 5, epoch: "e1", data: 5 });
  ws.end(1001, "draining");
  const again = await connected(t, 1, bound({ offset: 8, recovered: true }));
  assert.deepEqual(again.bind.since, { offset: 5, epoch: "e1" });
  assert.deepEqual(t.seen.of("recovered"), [{ count: 3 }]);
  assert.deepEqual(t.c.position, { offset: 5, epoch: "e1" }, "the replay moves the position, not the bound frame");
  for (const offset of [5, 6, 7, 8]) again.frame({ type: "message", offset, epoch: "e1", data: offset });
  assert.deepEqual(t.seen.of("message").map((m) => m.data), [5, 6, 7, 8]);
  assert.deepEqual(t.seen.of("gap"), []);
});

test("an unrecovered resume reports a gap with the server's reason and continues from the bound frame", async () => {
  const t = client();
  t.c.connect();
  const ws = await connected(t, 0, bound({ offset: 4 }));
  ws.end(1006, "");
  await connected(t, 1, bound({ offset: 1, epoch: "e9", recovered: false, reason: "epoch_changed" }));
  assert.deepEqual(t.seen.of("gap"), [{ reason: "epoch_changed" }]);
  assert.deepEqual(t.seen.of("recovered"), []);
  assert.deepEqual(t.c.position, { offset: 1, epoch: "e9" });
});

test("a reconnect to a gateway without history reports a gap, since pushes may have been missed", async () => {
  const t = client();
  t.c.connect();
  const noHistory = { type: "bound", uid: "u1", history: false };
  const ws = await connected(t, 0, noHistory);
  ws.frame({ type: "message", data: "x" });
  ws.end(1006, "");
  const again = await connected(t, 1, noHistory);
  assert.equal(again.bind.since, undefined, "no position to send");
  assert.deepEqual(t.seen.of("gap"), [{ reason: "history_off" }]);
});

test("a position given as since is resumed from on the first connect", async () => {
  const t = client({ since: { offset: 40, epoch: "e3" } });
  t.c.connect();
  const ws = await t.f.nth(0);
  ws.open();
  assert.deepEqual(ws.bind, { uid: "u1", since: { offset: 40, epoch: "e3" } });
  ws.frame(bound({ offset: 41, epoch: "e3", recovered: true }));
  assert.deepEqual(t.seen.of("recovered"), [{ count: 1 }]);
});

test("group messages never move the uid's position", async () => {
  const t = client();
  t.c.connect();
  const ws = await connected(t, 0, bound({ offset: 2 }));
  ws.frame({ type: "message", group: "g", offset: 90, epoch: "g1", data: "to the group" });
  assert.deepEqual(t.seen.of("message"), [{ data: "to the group", offset: 90, epoch: "g1", group: "g" }]);
  assert.deepEqual(t.c.position, { offset: 2, epoch: "e1" });
});

test("frames before bound and frames that are not JSON are not delivered", async () => {
  const t = client();
  t.c.connect();
  const ws = await t.f.nth(0);
  ws.open();
  ws.frame({ type: "message", offset: 1, epoch: "e1", data: "early" });
  ws.frame("not json");
  ws.frame(bound());
  assert.deepEqual(t.seen.of("message"), []);
  assert.equal(t.seen.of("error").length, 1);
});
