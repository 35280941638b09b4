// Lock against a real server and Redis: typed calls, held locks with `await using` and
// withHold, the lost signal when the lease is deleted in Redis, a server restart (lost, never
// silently neither), the local safety timer when the server falls silent, and elections.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { LockLostError, LockNotAcquiredError, type HeldLock } from "../src/index.js";
import { client, eventually, Redis, Server } from "./fixtures.js";

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

/** The Redis keys of lock `name` (any namespace: names are unique per test). */
function lockKeys(name: string): string[] {
  return redis.cli("--scan", "--pattern", `*:lock:${name}}*`).split("\n").filter(Boolean);
}

describe("lock", () => {
  test("acquire, extend, inspect and release; fences increase", async () => {
    const c = client(server);
    try {
      const first = await c.lock.acquire("typed", { ttlMs: 10_000, owner: "test" });
      assert.ok(first && first.fence > 0n);
      assert.equal(await c.lock.acquire("typed", { ttlMs: 10_000 }), null, "held by the first");
      assert.ok((await c.lock.extend("typed", first.token, 20_000)) instanceof Date);
      const state = await c.lock.inspect("typed");
      assert.equal(state.holders.length, 1);
      assert.equal(state.holders[0]!.owner, "test");
      assert.equal(state.holders[0]!.fence, first.fence);
      assert.equal(await c.lock.release("typed", first.token), true);
      assert.equal(await c.lock.release("typed", first.token), false);
      const second = await c.lock.acquire("typed", { ttlMs: 10_000 });
      assert.ok(second && second.fence > first.fence);
    } finally {
      c.close();
    }
  });

  test("hold with await using releases at the end of the block; withHold runs under the lock", async () => {
    const c = client(server);
    try {
      let fence: bigint;
      {
        await using lease = await c.lock.hold("scoped", { ttlMs: 5_000 });
        assert.ok(lease?.isHeld);
        fence = lease.fence;
        assert.equal((await c.lock.inspect("scoped")).holders[0]?.fence, fence);
      }
      assert.equal((await c.lock.inspect("scoped")).holders.length, 0, "released by the block's end");
      const result = await c.lock.withHold("scoped", { ttlMs: 5_000 }, async (lease) => {
        assert.ok(lease.fence > fence);
        await assert.rejects(c.lock.withHold("scoped", { ttlMs: 5_000 }, () => "never"), LockNotAcquiredError);
        return "done";
      });
      assert.equal(result, "done");
      assert.equal((await c.lock.inspect("scoped")).holders.length, 0);
    } finally {
      c.close();
    }
  });

  test("a hold whose key is deleted in Redis signals lost", async () => {
    const c = client(server);
    try {
      const lease = await c.lock.hold("deleted", { ttlMs: 1_500 });
      assert.ok(lease);
      const keys = lockKeys("deleted");
      assert.ok(keys.length > 0, "the lease is in Redis");
      redis.cli("DEL", ...keys);
      const lost = await lease.lost;
      assert.equal(lost.reason, "revoked");
      assert.ok(lease.signal.aborted && lease.signal.reason instanceof LockLostError);
      assert.equal(lease.isHeld, false);
    } finally {
      c.close();
    }
  });

  test("a hold across a server restart signals lost or keeps the lock, never silently neither", async () => {
    const c = client(server);
    try {
      const lease = (await c.lock.hold("restart", { ttlMs: 3_000 })) as HeldLock;
      assert.ok(lease);
      await server.stop();
      await server.start();
      // The Hold stream does not survive its server: the holder must have been told.
      const lost = await lease.lost;
      assert.ok(["stream-ended", "unreachable", "revoked", "silent"].includes(lost.reason), lost.reason);
      // And nobody holds it any more once the holder stopped trusting it: a new grant (with a
      // higher fence) comes at the latest after the TTL.
      const next = await c.lock.acquire("restart", { ttlMs: 3_000, waitMs: 10_000 });
      assert.ok(next && next.fence > lease.fence);
    } finally {
      c.close();
    }
  });

  test("a silent server makes the holder stop trusting the lease before it ends in Redis", async () => {
    const c = client(server);
    try {
      // A 10 s lease has a 500 ms safety margin: room for a slow machine's timers and for
      // reading Redis after the loss, without which the check below could not be trusted.
      const lease = (await c.lock.hold("silent", { ttlMs: 10_000 })) as HeldLock;
      assert.ok(lease);
      server.signal("SIGSTOP");
      let pttlAtLoss: number;
      try {
        const lost = await lease.lost;
        // Redis's own record: the lease had time left when the holder gave up.
        pttlAtLoss = Number(redis.cli("PTTL", lockKeys("silent").find((k) => !k.endsWith(":fence") && !k.endsWith(":info"))!));
        assert.equal(lost.reason, "silent");
      } finally {
        server.signal("SIGCONT");
      }
      assert.ok(pttlAtLoss > 0, `the lease still had ${pttlAtLoss} ms in Redis when the holder gave up`);
    } finally {
      c.close();
    }
  });

  test("campaign and observe follow the leadership", async () => {
    const c = client(server);
    try {
      const observed: (string | null)[] = [];
      const observer = (async () => {
        for await (const leader of c.lock.observe("election")) {
          observed.push(leader?.candidate ?? null);
          if (leader?.candidate === "b") return;
        }
      })();
      const first = c.lock.campaign("election", "a", { ttlMs: 5_000 });
      const elected = await first.next();
      assert.equal(elected.value?.type, "elected");
      await eventually("the observer sees a", () => (observed.includes("a") ? true : undefined));
      // Leaving the loop resigns: b is elected next.
      await first.return();
      const second = c.lock.campaign("election", "b", { ttlMs: 5_000 });
      const next = await second.next();
      assert.equal(next.value?.type, "elected");
      if (next.value?.type === "elected" && elected.value?.type === "elected") {
        assert.ok(next.value.lease.fence > elected.value.lease.fence);
      }
      await observer;
      assert.equal(observed.at(-1), "b");
      await second.return();
    } finally {
      c.close();
    }
  });
});
