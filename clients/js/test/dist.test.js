// The committed builds expose the same client: the ES module, and the classic script's global.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import vm from "node:vm";

test("dist/pushgate.mjs exports the client", async () => {
  const m = await import("../dist/pushgate.mjs");
  assert.equal(typeof m.PushgateClient, "function");
  assert.equal(m.SUBPROTOCOL, "pushgate.v2");
});

test("dist/pushgate.js defines the global Pushgate.PushgateClient for one script tag", () => {
  const context = vm.createContext({ URL });
  vm.runInContext(readFileSync(new URL("../dist/pushgate.js", import.meta.url), "utf8"), context);
  assert.equal(vm.runInContext("typeof Pushgate.PushgateClient", context), "function");
  assert.equal(vm.runInContext("Pushgate.decide(4002)", context), "stop");
});
