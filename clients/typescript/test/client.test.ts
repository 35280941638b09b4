// The Client itself: namespace validation, namespaces isolating keys, the bearer token and
// deadline reaching the server, errors carrying their gRPC code, and retries of idempotent
// calls while the server restarts.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { Client, RookeryError, Status } from "../src/index.js";
import { client, paths, Redis, Server } from "./fixtures.js";

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
    const c = client(server, { retry: { retries: 1_000, initialBackoffMs: 50, maxBackoffMs: 200 }, deadlineMs: 60_000 });
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

  test("TLS with a given CA and a bearer token: refused without it, answered with it", async () => {
    // Throwaway credentials (scripts/dev-credentials.sh) and a token whose SHA-256 the server knows.
    const dir = mkdtempSync(join(tmpdir(), "rookery-tls-"));
    let secure: Server | undefined;
    try {
      execFileSync(join(paths.repoDir, "scripts", "dev-credentials.sh"), [dir], { stdio: "ignore" });
      const token = randomBytes(32).toString("hex");
      const sha256 = createHash("sha256").update(token).digest("hex");
      writeFileSync(
        join(dir, "rookery.toml"),
        [
          "[tls]",
          `cert_file = "${join(dir, "server.crt")}"`,
          `key_file = "${join(dir, "server.key")}"`,
          "[auth]",
          "enabled = true",
          "[[auth.tokens]]",
          'identity = "ts"',
          `sha256 = "${sha256}"`,
          "[[auth.grants]]",
          'identities = ["ts"]',
          'namespaces = ["*"]',
          'access = "admin"',
        ].join("\n"),
      );
      secure = await Server.start(redis, { ROOKERY_CONFIG: join(dir, "rookery.toml") });
      // The certificate names localhost, so the client dials that name.
      const address = `localhost:${secure.port}`;
      const tls = { caFile: join(dir, "ca.crt") };
      const anonymous = client(address, { tls });
      let asked = 0;
      const authenticated = client(address, { tls, token: () => (asked++, token) });
      try {
        await assert.rejects(anonymous.cache.get("k"), (e) => RookeryError.hasCode(e, Status.UNAUTHENTICATED));
        assert.equal(await authenticated.cache.set("k", "v", 10_000), true);
        assert.equal((await authenticated.cache.get("k"))?.value.toString(), "v");
        assert.equal(asked, 2, "the token function is asked before each call");
      } finally {
        anonymous.close();
        authenticated.close();
      }
    } finally {
      await secure?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
