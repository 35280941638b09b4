// Session against a real server and Redis: JSON attributes, versioned updates, rotation,
// listing by subject with hints, and "log out everywhere".
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { jsonAttributes, RookeryError, SessionUpdate, sessionHint, Status } from "../src/index.js";
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

describe("session", () => {
  test("create, read JSON attributes, update with a version, rotate, list and delete", async () => {
    const c = client(server);
    try {
      const created = await c.session.create("user-42", {
        attributes: jsonAttributes({ cart: { items: ["book"] }, theme: "dark" }),
        idleTimeoutMs: 60_000,
      });
      assert.match(created.id, /^s1\./);
      const session = await c.session.get(created.id, { touch: true });
      assert.ok(session);
      assert.equal(session.subject, "user-42");
      assert.deepEqual(session.json("cart"), { items: ["book"] });
      assert.equal(session.json("missing"), undefined);
      const version = await c.session.update(
        created.id,
        new SessionUpdate().setJson("cart", { items: [] }).delete("theme").ifVersion(session.version),
      );
      assert.equal(version, session.version + 1n);
      // A stale version is ABORTED: a concurrent change is never overwritten.
      await assert.rejects(
        c.session.update(created.id, new SessionUpdate().setBytes("x", "y").ifVersion(session.version)),
        (e) => RookeryError.hasCode(e, Status.ABORTED),
      );
      const rotated = await c.session.rotate(created.id);
      assert.equal(await c.session.get(created.id), null, "the old ID stops at once");
      const other = await c.session.create("user-42");
      const listed = await c.session.listBySubject("user-42");
      assert.deepEqual(new Set(listed.map((s) => s.hint)), new Set([sessionHint(rotated), sessionHint(other.id)]));
      assert.equal(await c.session.delete(other.id), true);
      assert.equal(await c.session.deleteBySubject("user-42"), 1);
      assert.equal(await c.session.get(rotated), null);
    } finally {
      c.close();
    }
  });
});
