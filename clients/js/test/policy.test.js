import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, decide, isTransportFailure } from "../src/pushgate.js";

const backoff = { base: 500, cap: 30000 };

test("the backoff window doubles from base per attempt and stops at cap", () => {
  const top = (attempt) => backoffDelay(attempt, backoff, () => 1 - Number.EPSILON);
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8].map(top), [499, 999, 1999, 3999, 7999, 15999, 29999, 29999]);
  assert.equal(top(1000), 29999, "a huge attempt number stays at cap, never Infinity or NaN");
});

test("the backoff is full jitter: any delay from zero to the window", () => {
  assert.equal(backoffDelay(5, backoff, () => 0), 0);
  assert.equal(backoffDelay(5, backoff, () => 0.5), 4000);
  for (let attempt = 1; attempt < 40; attempt++) {
    const d = backoffDelay(attempt, backoff);
    assert.ok(Number.isInteger(d) && d >= 0 && d < Math.min(30000, 500 * 2 ** (attempt - 1)), `attempt ${attempt}: ${d}`);
  }
});

test("the close codes decide as the protocol table says", () => {
  for (const code of [1001, 1006, 4005, 4006, 1000, 1011]) assert.equal(decide(code), "retry", `code ${code}`);
  for (const code of [4001, 4002, 4003, 4007, 1002, 1007, 1009]) assert.equal(decide(code), "stop", `code ${code}`);
  assert.equal(decide(4004), "refresh");
});

test("only a close the server did not choose counts as a WebSocket failure", () => {
  for (const code of [1006, 1005, 1000, 1011]) assert.ok(isTransportFailure(code), `code ${code}`);
  for (const code of [1001, 4001, 4002, 4003, 4004, 4005, 4006, 4007, 1002]) assert.ok(!isTransportFailure(code), `code ${code}`);
});
