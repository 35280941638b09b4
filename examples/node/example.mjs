// Rookery from Node.js with the @rookery/client package (clients/typescript): one client, every
// service. Exits non-zero if any call fails or returns something unexpected.
//
//   ROOKERY_ADDRESS=localhost:50051 node example.mjs
//
// Against a server with TLS and auth, also set ROOKERY_CA_FILE (PEM of the CA that signed the
// server's certificate, which must name the host of ROOKERY_ADDRESS: best a DNS name such as
// localhost, since grpc-js sends an IP address as the TLS server name, which RFC 6066 forbids)
// and ROOKERY_TOKEN (a bearer token the server's [[auth.tokens]] knows). scripts/examples.sh
// runs it that way (scripts/example-node.sh installs the package from clients/typescript).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { Client, RookeryError, Status, SessionUpdate, jsonAttributes, rateLimitHeaders } from "@rookery/client";

const address = process.env.ROOKERY_ADDRESS ?? "localhost:50051";
const caFile = process.env.ROOKERY_CA_FILE;
const token = process.env.ROOKERY_TOKEN;
const namespace = `example-node-${randomUUID().slice(0, 8)}`;
const tls = caFile ? { caFile } : false;
const client = new Client(address, { namespace, tls, token });

try {
  if (token) {
    // A call without the token is refused before any handler runs.
    const anonymous = new Client(address, { namespace, tls });
    const refused = await anonymous.cache.get("greeting").catch((e) => e);
    anonymous.close();
    assert.ok(RookeryError.hasCode(refused, Status.UNAUTHENTICATED), String(refused));
    console.log(`node example: without the token: ${refused.message}`);
  }

  // Cache: loads once per key across every caller; the others wait for its value.
  let loads = 0;
  const load = async () => {
    loads++;
    return JSON.stringify({ id: 42, name: "Ada" });
  };
  const profiles = await Promise.all(Array.from({ length: 20 }, () => client.cache.getOrLoad("user:42", 300_000, load)));
  assert.equal(loads, 1);
  assert.equal(JSON.parse(profiles[19].toString()).name, "Ada");

  // Lock: held (and renewed) while the callback runs; the fencing token goes with every write.
  const fence = await client.lock.withHold("nightly-report", { ttlMs: 10_000, waitMs: 5_000 }, async (lease) => {
    assert.ok(lease.isHeld);
    return lease.fence;
  });
  assert.ok(fence > 0n);
  assert.equal((await client.lock.inspect("nightly-report")).holders.length, 0, "released after the callback");

  // Rate limits: fail closed if the limiter cannot be reached, and the IETF headers.
  const decision = await client.rateLimiter.checkOr("user:42", { limit: 10, periodMs: 60_000 }, "deny");
  assert.equal(decision.allowed, true);
  console.log(`node example: rate limit headers ${JSON.stringify(rateLimitHeaders(decision, "api"))}`);

  // Sessions with JSON attributes and a versioned update.
  const created = await client.session.create("user-42", { attributes: jsonAttributes({ cart: ["book"] }) });
  const session = await client.session.get(created.id, { touch: true });
  await client.session.update(created.id, new SessionUpdate().setJson("cart", [...session.json("cart"), "pen"]).ifVersion(session.version));
  assert.deepEqual((await client.session.get(created.id)).json("cart"), ["book", "pen"]);

  // Events: a live subscription, then a consumer group processed with acks.
  const subscription = await client.events.subscribe(["news"]);
  await client.events.publish("news", "hello");
  const { value: event } = await subscription.next();
  assert.equal(event.type === "message" && event.payload.toString(), "hello");
  await subscription.return();

  await client.events.append("orders", { order: "1" });
  const stop = new AbortController();
  const handled = [];
  await client.events.process("orders", "billing", "worker-1", (delivery) => {
    handled.push(delivery.fields.order.toString());
    stop.abort();
  }, { createGroup: true, signal: stop.signal });
  assert.deepEqual(handled, ["1"]);

  console.log(`node example: every service answered (namespace ${namespace}, fence ${fence})`);
} finally {
  client.close();
}
