// Cache against a real server and Redis: the typed calls, and getOrLoad's promises — one load
// across processes and replicas, a failed loader's lease handed on at once, an aborted caller's
// lease released, refresh-ahead serving the cached value while one caller reloads.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";

import { CacheWaitExpiredError, Client, RookeryError, Status } from "../src/index.js";
import { client, namespace, paths, Redis, Server } from "./fixtures.js";

let redis: Redis;
let a: Server;
let b: Server;

before(async () => {
  redis = await Redis.start();
  [a, b] = await Promise.all([Server.start(redis), Server.start(redis)]);
});
after(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  await redis?.stop();
});

describe("cache", () => {
  test("typed calls read, write, delete and invalidate", async () => {
    const c = client(a);
    try {
      assert.equal(await c.cache.get("missing"), null);
      assert.equal(await c.cache.set("greeting", "hello", 60_000), true);
      const entry = await c.cache.get("greeting");
      assert.equal(entry?.value.toString(), "hello");
      assert.ok(entry!.ttlMs > 0 && entry!.ttlMs <= 60_000);
      assert.equal(await c.cache.set("greeting", "again", { ttlMs: 60_000, condition: "if-absent" }), false);
      assert.deepEqual(await c.cache.setMany({ "a*": "1", b: "2" }, { ttlMs: 60_000, tags: ["t"] }), [true, true]);
      const many = await c.cache.getMany(["a*", "nope", "b"]);
      assert.deepEqual(many.map((e) => e?.value.toString() ?? null), ["1", null, "2"]);
      // A prefix is literal: "a*" matches the key named "a*", never everything.
      assert.equal(await c.cache.invalidatePrefix("a*"), 1);
      assert.equal(await c.cache.invalidateTags(["t"]), 1);
      assert.equal(await c.cache.delete(["greeting", "b"]), 1);
      await assert.rejects(c.cache.set("", "x", 1000), (e) => RookeryError.hasCode(e, Status.INVALID_ARGUMENT));
    } finally {
      c.close();
    }
  });

  test("200 concurrent callers in two processes on two replicas load once", async () => {
    const ns = namespace();
    const key = "stampede";
    const child = spawn(process.execPath, [join(paths.packageDir, "build", "test", "load-child.js"), b.address, ns, key, "100"], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (output += d));
    while (!output.includes("ready\n")) await once(child.stdout, "data");
    const c = new Client(a.address, { namespace: ns });
    try {
      await c.cache.get("warm-up");
      let loads = 0;
      child.stdin.end("go\n");
      const values = await Promise.all(
        Array.from({ length: 100 }, () =>
          c.cache.getOrLoad(key, 60_000, async () => {
            loads++;
            await delay(500);
            return `loaded by ${process.pid}`;
          }, { leaseTtlMs: 30_000 }),
        ),
      );
      await once(child, "exit");
      const childResult = JSON.parse(output.slice(output.indexOf("ready\n") + 6)) as { loads: number; values: string[] };
      assert.equal(loads + childResult.loads, 1, "exactly one load across both processes");
      const all = [...values.map((v) => v.toString()), ...childResult.values];
      assert.equal(all.length, 200);
      assert.equal(new Set(all).size, 1, "every caller got the one loaded value");
    } finally {
      c.close();
      child.kill();
    }
  });

  test("a loader that throws hands its lease to the next waiter at once", async () => {
    const ns = namespace();
    const [ca, cb] = [new Client(a.address, { namespace: ns }), new Client(b.address, { namespace: ns })];
    try {
      let loads = 0;
      const loader = async () => {
        loads++;
        await delay(200);
        if (loads === 1) throw new Error("database down");
        return "second try";
      };
      // The lease would last a minute; the waiters give up after 30 s: only a lease handed on
      // at once lets them finish.
      const options = { leaseTtlMs: 60_000, maxWaitMs: 30_000 };
      const results = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) => (i % 2 ? ca : cb).cache.getOrLoad("flaky", 60_000, loader, options)),
      );
      const failed = results.filter((r) => r.status === "rejected");
      assert.equal(failed.length, 1);
      assert.equal((failed[0] as PromiseRejectedResult).reason.message, "database down");
      assert.equal(loads, 2, "one failed load, then one that succeeded");
      for (const r of results) if (r.status === "fulfilled") assert.equal(r.value.toString(), "second try");
    } finally {
      ca.close();
      cb.close();
    }
  });

  test("an aborted caller releases its lease", async () => {
    const c = client(a);
    try {
      const controller = new AbortController();
      let started!: () => void;
      const loading = new Promise<void>((ok) => (started = ok));
      const caller = c.cache.getOrLoad(
        "aborted",
        60_000,
        (signal) => {
          started();
          return new Promise<string>((_, fail) => signal.addEventListener("abort", () => fail(signal.reason)));
        },
        { signal: controller.signal, leaseTtlMs: 60_000 },
      );
      await loading;
      // The lease is held: another fetch that waits 1 ms gives up.
      assert.equal((await c.cache.fetch("aborted", { waitMs: 1 })).outcome, "wait-expired");
      controller.abort(new Error("caller left"));
      await assert.rejects(caller, /caller left/);
      // Released at once: the next fetch gets the lease, long before the minute of its TTL.
      const next = await c.cache.fetch("aborted", { waitMs: 1 });
      assert.equal(next.outcome, "fill");
    } finally {
      c.close();
    }
  });

  test("refresh-ahead serves the cached value while one caller reloads", async () => {
    const c = client(a);
    try {
      await c.cache.set("hot", "old", 5_000);
      let loads = 0;
      const values = await Promise.all(
        Array.from({ length: 10 }, () =>
          c.cache.getOrLoad("hot", 60_000, async () => {
            loads++;
            await delay(300);
            return "new";
          }, { refreshAheadMs: 30_000 }),
        ),
      );
      assert.equal(loads, 1);
      assert.ok(values.filter((v) => v.toString() === "old").length >= 9, "the others got the cached value");
      assert.equal((await c.cache.get("hot"))?.value.toString(), "new");
    } finally {
      c.close();
    }
  });

  test("getOrLoad gives up after maxWaitMs while another caller holds the lease", async () => {
    const c = client(a);
    try {
      const lease = await c.cache.fetch("held", { leaseTtlMs: 60_000 });
      assert.equal(lease.outcome, "fill");
      await assert.rejects(c.cache.getOrLoad("held", 1_000, () => "x", { maxWaitMs: 500 }), CacheWaitExpiredError);
    } finally {
      c.close();
    }
  });
});
