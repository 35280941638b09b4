// Events against a real server and Redis: publish/subscribe with a gap after a Redis restart,
// durable streams, a consumer's acks on its own call, and process(): acks what the handler
// finished, retries what failed, dead-letters the poison entry, keeps consuming across a
// Redis restart.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";

import { RookeryError, Status, type SubscriptionEvent } from "../src/index.js";
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

describe("events", () => {
  test("append, appendMany with idempotency keys, read and describe", async () => {
    const c = client(server);
    try {
      const first = await c.events.append("orders", { n: "1" }, { idempotencyKey: "order-1" });
      const retried = await c.events.append("orders", { n: "1" }, { idempotencyKey: "order-1" });
      assert.deepEqual(retried, { id: first.id, duplicate: true });
      const many = await c.events.appendMany("orders", [{ fields: { n: "2" } }, { fields: { n: "3" }, idempotencyKey: "order-3" }]);
      assert.equal(many.length, 2);
      const entries = [];
      for await (const entry of c.events.read("orders")) entries.push(entry.fields.n!.toString());
      assert.deepEqual(entries, ["1", "2", "3"]);
      const after = [];
      for await (const entry of c.events.read("orders", { after: first.id })) after.push(entry.id);
      assert.deepEqual(after, many.map((m) => m.id));
      assert.equal((await c.events.describe("orders")).length, 3n);
    } finally {
      c.close();
    }
  });

  test("a consumer acks on its own call; acks after the call ended fail with its status", async () => {
    const c = client(server);
    try {
      await c.events.append("acks", { n: "1" });
      const consumer = await c.events.consume("acks", "g", "c1", { createGroup: true });
      const iterator = consumer[Symbol.asyncIterator]();
      const batch = await iterator.next();
      assert.ok(!batch.done);
      assert.equal(await consumer.ack(batch.value.entries.map((e) => e.id)), 1);
      consumer.close();
      await assert.rejects(consumer.ack(["0-1"]), (e) => e instanceof RookeryError);
      const group = (await c.events.describe("acks")).groups[0]!;
      assert.equal(group.pending, 0n);
    } finally {
      c.close();
    }
  });

  test("process acks, retries, dead-letters and keeps consuming across Redis and server restarts", async () => {
    const c = client(server);
    const controller = new AbortController();
    try {
      const seen = new Map<string, number>();
      const done = new Set<string>();
      const processing = c.events.process(
        "jobs",
        "workers",
        "w1",
        async (delivery) => {
          const name = delivery.fields.name!.toString();
          seen.set(name, (seen.get(name) ?? 0) + 1);
          if (name === "poison") throw new Error("always fails");
          if (name.startsWith("flaky") && delivery.deliveries === 1) throw new Error("fails once");
          done.add(name);
        },
        { createGroup: true, settings: { maxDeliveries: 3, ackTimeoutMs: 5_000 }, retryDelayMs: 50, signal: controller.signal },
      );
      await c.events.appendMany("jobs", [
        { fields: { name: "ok-1" } },
        { fields: { name: "flaky-1" } },
        { fields: { name: "poison" } },
        { fields: { name: "ok-2" } },
      ]);
      await eventually("the handler finished every good entry", () => (done.size === 3 ? true : undefined));
      // The poison entry was delivered max_deliveries times, then moved to the dead letters.
      const dead = await eventually("the poison entry in the dead letters", async () => {
        const letters = [];
        for await (const e of c.events.read("jobs", { deadLetters: true })) letters.push(e);
        return letters.length > 0 ? letters : undefined;
      });
      assert.equal(dead.length, 1);
      assert.equal(dead[0]!.fields.name!.toString(), "poison");
      assert.equal(dead[0]!.fields["rookery.group"]!.toString(), "workers");
      assert.equal(seen.get("poison"), 3);
      assert.equal(seen.get("flaky-1"), 2);
      assert.equal(seen.get("ok-1"), 1);
      await eventually("nothing pending", async () => ((await c.events.describe("jobs")).groups[0]?.pending === 0n ? true : undefined));

      // Redis restarts without persistence: the stream and group are gone. process() consumes
      // again (creating the group again) and handles what is appended afterwards.
      await redis.restart();
      await eventually("an append after the restart is processed", async () => {
        await c.events.append("jobs", { name: "after-restart" }, { idempotencyKey: "after-restart" }).catch(() => undefined);
        return done.has("after-restart") ? true : undefined;
      });
      // The server restarts too: process() consumes again once it is back.
      await server.stop();
      await server.start();
      await eventually("an append after the server restart is processed", async () => {
        await c.events.append("jobs", { name: "after-server-restart" }, { idempotencyKey: "after-server-restart" }).catch(() => undefined);
        return done.has("after-server-restart") ? true : undefined;
      });
      controller.abort();
      await processing;
    } finally {
      controller.abort();
      c.close();
    }
  });

  test("a subscription reports a gap when the server's Redis connection was re-established", async () => {
    const c = client(server);
    try {
      const subscription = await c.events.subscribe(["news"], { patterns: ["sport.*"] });
      assert.equal(await c.events.publish("news", "before"), 1);
      await c.events.publish("sport.tennis", "match");
      const events: SubscriptionEvent[] = [];
      const reader = (async () => {
        for await (const event of subscription) {
          events.push(event);
          if (event.type === "message" && event.payload.toString() === "after") return;
        }
      })();
      await eventually("two messages", () => (events.length >= 2 ? true : undefined));
      assert.deepEqual(
        events.map((e) => (e.type === "message" ? [e.channel, e.pattern, e.payload.toString()] : e.type)),
        [["news", undefined, "before"], ["sport.tennis", "sport.*", "match"]],
      );
      await redis.restart();
      // Publish until the server's subscription is back and a message arrives.
      while (!events.some((e) => e.type === "message" && e.payload.toString() === "after")) {
        await c.events.publish("news", "after").catch(() => 0);
        await Promise.race([reader, delay(200)]);
      }
      await reader;
      const gap = events.findIndex((e) => e.type === "gap");
      assert.ok(gap >= 2, "a gap after the messages before the restart");
      assert.deepEqual(events[gap], { type: "gap", reason: "reconnected", missed: 0 });
    } finally {
      c.close();
    }
  });

  test("consuming a group that does not exist is NOT_FOUND", async () => {
    const c = client(server);
    try {
      await assert.rejects(c.events.consume("nothing", "none", "c"), (e) => RookeryError.hasCode(e, Status.NOT_FOUND));
    } finally {
      c.close();
    }
  });
});
