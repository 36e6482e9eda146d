// A page's module: `npm install` then `npm run build` bundles it with the client.
import { PushgateClient } from "pushgate-client";

const client = new PushgateClient("https://push.example.com", {
  // Secure mode: a JWT from the page's own backend, fetched again on every reconnect and when
  // the gateway says it expired (close code 4004).
  getToken: () => fetch("/api/push-token").then((r) => r.text()),
  since: JSON.parse(sessionStorage.getItem("pushgate.position") ?? "null") ?? undefined,
});

client
  .on("message", ({ data }) => {
    console.log("push", data);
    sessionStorage.setItem("pushgate.position", JSON.stringify(client.position));
  })
  .on("gap", () => location.reload()) // missed pushes the history could not fill: reload state
  .on("disconnected", ({ code, willReconnect }) => willReconnect || console.warn("pushgate stopped", code))
  .connect();
