// The Client itself: namespace validation, namespaces isolating keys, the bearer token and
// deadline reaching the server, errors carrying their gRPC code, and retries of idempotent
// calls while the server restarts.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Client, RookeryError, Status } from "../src/index.js";
import { client, Redis, Server } from "./fixtures.js";

let redis: Redis;
let server: Server;

before(async () => {
  redis = await Redis.start();
  server = await Server.start(redis);
});
after(async () => {
  await server?.stop();
  await redis?.stop();
});

describe("client", () => {
  test("a malformed namespace is refused before any call", () => {
    assert.throws(() => new Client(server.address, { namespace: "no spaces" }), RangeError);
  });

  test("namespaces keep the same key apart", async () => {
    const [one, two] = [client(server), client(server)];
    try {
      await one.cache.set("shared", "one", 60_000);
      assert.equal(await two.cache.get("shared"), null);
      assert.equal((await one.cache.get("shared"))?.value.toString(), "one");
    } finally {
      one.close();
      two.close();
    }
  });

  test("errors carry the gRPC code; an aborted call rejects with the signal's reason; deadlines hold", async () => {
    const c = client(server);
    try {
      const error = await c.cache.get("").catch((e: unknown) => e);
      assert.ok(error instanceof RookeryError);
      assert.ok(error.is(Status.INVALID_ARGUMENT));
      assert.equal(error.code, Status.INVALID_ARGUMENT);
      assert.ok(error.details.length > 0);
      await c.cache.fetch("held", { leaseTtlMs: 60_000 });
      const controller = new AbortController();
      const waiting = c.cache.fetch("held", { waitMs: 30_000, signal: controller.signal });
      controller.abort(new Error("stop waiting"));
      await assert.rejects(waiting, /stop waiting/);
      // A call's own deadline bounds the server's wait too.
      assert.ok(await c.lock.acquire("busy", { ttlMs: 60_000 }));
      await assert.rejects(c.lock.acquire("busy", { waitMs: 5_000, deadlineMs: 200 }), (e) =>
        RookeryError.hasCode(e, Status.DEADLINE_EXCEEDED),
      );
    } finally {
      c.close();
    }
  });

  test("idempotent calls are retried while the server restarts", async () => {
    const c = client(server, { retry: { retries: 100, initialBackoffMs: 50, maxBackoffMs: 200 }, deadlineMs: 60_000 });
    try {
      await c.cache.set("kept", "value", 60_000);
      await server.stop();
      const reading = c.cache.get("kept");
      await server.start();
      assert.equal((await reading)?.value.toString(), "value");
    } finally {
      c.close();
    }
  });
});
