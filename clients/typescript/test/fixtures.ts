// Test fixtures: real redis-server and rookery-server processes on free ports, started and
// stopped by the tests themselves (no mocks). The server binary is $ROOKERY_SERVER_BIN, or the
// repository's target/debug/rookery-server (scripts/test-typescript.sh builds it).
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { createServer, connect } from "node:net";
import { dirname, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import { Client, type ClientOptions } from "../src/index.js";

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const repoDir = resolve(packageDir, "..", "..");

/** The server binary the tests run. */
export const serverBin = process.env.ROOKERY_SERVER_BIN ?? resolve(repoDir, "target", "debug", "rookery-server");

/** Every process the fixtures started, killed when this test process exits however it exits. */
const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});
// node:test stops a file that timed out with a signal: exit (and so kill the children) then too.
for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => process.exit(1));

/** Spawns a process that the fixtures own. */
function own(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** A port nobody listens on right now. */
export async function freePort(): Promise<number> {
  return await new Promise((ok, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? ok(address.port) : fail(new Error("no port"))));
    });
  });
}

/** Resolves once `port` accepts TCP connections; fails if `child` exits first or after `timeoutMs`. */
async function waitForPort(port: number, child: ChildProcess, what: string, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before listening`);
    const open = await new Promise<boolean>((ok) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => (socket.destroy(), ok(true)));
      socket.once("error", () => ok(false));
    });
    if (open) return;
    await delay(50);
  }
  throw new Error(`${what} did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((ok) => child.once("exit", () => ok()));
  child.kill(signal);
  const killer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  await exited;
  clearTimeout(killer);
}

/** A redis-server without persistence on a free port. */
export class Redis {
  readonly port: number;
  #child: ChildProcess | null = null;

  private constructor(port: number) {
    this.port = port;
  }

  /** Starts one. */
  static async start(): Promise<Redis> {
    const redis = new Redis(await freePort());
    await redis.#spawn();
    return redis;
  }

  /** Its URL for the server. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async #spawn(): Promise<void> {
    const child = own(spawn("redis-server", ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: "ignore",
    }));
    child.once("error", (e) => {
      throw new Error(`cannot run redis-server (install it: apt-get install redis-server): ${e.message}`);
    });
    this.#child = child;
    await waitForPort(this.port, child, "redis-server");
  }

  /** Runs one command with redis-cli and returns its output. */
  cli(...args: string[]): string {
    return execFileSync("redis-cli", ["-p", String(this.port), ...args], { encoding: "utf8" }).trim();
  }

  /** Kills it (its data is gone: no persistence) and starts it again on the same port. */
  async restart(): Promise<void> {
    await this.stop("SIGKILL");
    await this.#spawn();
  }

  /** Stops it. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (this.#child) await stopProcess(this.#child, signal);
  }
}

/** A rookery-server on a free port, over one Redis. */
export class Server {
  readonly port: number;
  readonly redis: Redis;
  readonly #env: Record<string, string>;
  #child: ChildProcess | null = null;

  private constructor(port: number, redis: Redis, env: Record<string, string>) {
    this.port = port;
    this.redis = redis;
    this.#env = env;
  }

  /** Starts one over `redis`, with extra environment (e.g. ROOKERY_CONFIG). */
  static async start(redis: Redis, env: Record<string, string> = {}): Promise<Server> {
    if (!existsSync(serverBin)) throw new Error(`no server binary at ${serverBin}: set ROOKERY_SERVER_BIN or run cargo build -p rookery-server`);
    const server = new Server(await freePort(), redis, env);
    await server.#spawn();
    return server;
  }

  /** Its gRPC address. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async #spawn(): Promise<void> {
    const child = own(spawn(serverBin, [], {
      stdio: ["ignore", "ignore", "inherit"],
      env: {
        ...process.env,
        ROOKERY_REDIS_URL: this.redis.url,
        ROOKERY_LISTEN: this.address,
        ROOKERY_ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
        ROOKERY_LOG_LEVEL: "error",
        ROOKERY_PRE_DRAIN_DELAY: "0s",
        ROOKERY_DRAIN_TIMEOUT: "2s",
        ...this.#env,
      },
    }));
    this.#child = child;
    await waitForPort(this.port, child, "rookery-server");
  }

  /** Stops it (SIGTERM drains: held locks are released, streams end with UNAVAILABLE). */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (this.#child) await stopProcess(this.#child, signal);
  }

  /** Starts it again on the same port (after `stop`). */
  async start(): Promise<void> {
    await this.#spawn();
  }

  /** Pauses (SIGSTOP) or resumes (SIGCONT) the process: a server that says nothing. */
  signal(signal: "SIGSTOP" | "SIGCONT"): void {
    this.#child?.kill(signal);
  }
}

/** A namespace of its own for one test, so tests never see each other's keys. */
export function namespace(): string {
  return `ts-${randomUUID().slice(0, 8)}`;
}

/** A client of `server` in a fresh namespace (or the given one). */
export function client(server: Server | string, options: ClientOptions = {}): Client {
  const address = typeof server === "string" ? server : server.address;
  return new Client(address, { namespace: namespace(), ...options });
}

/** Polls `check` until it returns a value other than undefined; fails after `timeoutMs`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await delay(50);
  }
}

/** The package directory (for the drift test and child processes). */
export const paths = { packageDir, repoDir };
