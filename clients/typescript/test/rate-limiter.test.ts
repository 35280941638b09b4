// RateLimiter against a real server and Redis: decisions, several limits at once, the IETF
// headers, and the caller's fail-open / fail-closed choice while the server is down.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { rateLimitHeaders, RookeryError, Status, type RateLimit } from "../src/index.js";
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

describe("rate limiter", () => {
  test("allows up to the limit, then denies with a retry time and headers", async () => {
    const c = client(server);
    try {
      const limit: RateLimit = { limit: 3, periodMs: 60_000, algorithm: "fixed-window" };
      for (let i = 0; i < 3; i++) assert.equal((await c.rateLimiter.check("user-1", limit)).allowed, true);
      const denied = await c.rateLimiter.check("user-1", limit);
      assert.equal(denied.allowed, false);
      assert.ok(denied.retryAfterMs > 0);
      assert.equal(denied.remaining, 0);
      const headers = rateLimitHeaders(denied, "api");
      assert.equal(headers["RateLimit-Policy"], '"api";q=3;w=60');
      assert.match(headers.RateLimit!, /^"api";r=0;t=\d+$/);
      assert.ok(Number(headers["Retry-After"]) >= 1);
      assert.equal((await c.rateLimiter.check("user-1", limit, { cost: 0 })).allowed, false, "a peek");
      assert.equal(await c.rateLimiter.reset("user-1"), 1);
      const many = await c.rateLimiter.checkMany([
        { key: "user-1", limit },
        { key: "global", limit: { limit: 0.5 * 2, periodMs: 60_000 } },
      ]);
      assert.equal(many.allowed, true);
      assert.equal(many.decisions.length, 2);
      await assert.rejects(
        c.rateLimiter.check("user-1", { policy: "no-such-policy" }),
        (e) => e instanceof RookeryError && !e.is(Status.UNAVAILABLE),
      );
    } finally {
      c.close();
    }
  });

  test("while the server is down, checkOr fails open or closed as the caller chose", async () => {
    const c = client(server, { retry: false });
    const limit: RateLimit = { limit: 10, periodMs: 1_000 };
    try {
      assert.equal((await c.rateLimiter.checkOr("k", limit, "deny")).unavailable, false);
      await server.stop();
      const open = await c.rateLimiter.checkOr("k", limit, "allow");
      assert.deepEqual([open.allowed, open.unavailable], [true, true]);
      const closed = await c.rateLimiter.checkOr("k", limit, "deny");
      assert.deepEqual([closed.allowed, closed.unavailable], [false, true]);
      await assert.rejects(c.rateLimiter.check("k", limit), (e) => RookeryError.hasCode(e, Status.UNAVAILABLE));
    } finally {
      c.close();
      await server.start();
    }
  });
});
