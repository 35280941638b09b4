// The Cache service's typed client, and getOrLoad: the lease protocol of cache.proto (Fetch,
// Fill, ReleaseLease) done the way client/src/cache.rs does it, so that a key is loaded once
// across every caller, process and server replica while the others wait for its value.
import { Buffer } from "node:buffer";

import { CacheWaitExpiredError, RookeryError, Status } from "./errors.js";
import {
  CacheClient as RawCacheClient,
  CacheFetchOutcome,
  CacheFetchRequest,
  CacheFillRequest,
  CacheGetManyRequest,
  CacheGetRequest,
  CacheDeleteRequest,
  CacheInvalidateRequest,
  CacheReleaseLeaseRequest,
  CacheSetCondition,
  CacheSetManyRequest,
  CacheSetRequest,
} from "./gen/rookery/v1/cache.js";
import { fromDuration, optionalDuration } from "./time.js";
import type { CallOptions, Transport } from "./transport.js";

/** A value: bytes, or a string (stored as UTF-8). */
export type Value = Uint8Array | string;

/** A value read from the cache. */
export interface Entry {
  /** The stored bytes (a Buffer: `.toString()` decodes UTF-8). */
  value: Buffer;
  /** Time left to live, in milliseconds. */
  ttlMs: number;
}

/** When a write takes effect. */
export type SetCondition = "always" | "if-absent" | "if-present";

/** Options of a write. */
export interface SetOptions extends CallOptions {
  /** Time to live in ms (required unless the server has `cache.default_ttl`). */
  ttlMs?: number;
  /** A random extra TTL up to this, so that keys written together expire apart. */
  ttlJitterMs?: number;
  /** When the write takes effect (default "always"). */
  condition?: SetCondition;
  /** Tags for `invalidateTags`. */
  tags?: string[];
}

/** Options of a raw `fetch`. */
export interface FetchOptions extends CallOptions {
  /** How long to wait for another caller's fill (server default when unset, at most 10 s there). */
  waitMs?: number;
  /** Lifetime of a lease granted to this caller (server default when unset). */
  leaseTtlMs?: number;
  /** Grant a refresh lease when the entry has less than this left to live. */
  refreshAheadMs?: number;
}

/** What `fetch` returned; see `Cache.Fetch` in cache.proto. */
export type Fetched =
  | { outcome: "hit"; entry: Entry }
  | { outcome: "refresh"; entry: Entry; leaseToken: string }
  | { outcome: "fill"; leaseToken: string }
  | { outcome: "wait-expired" };

/** Options of `getOrLoad`. */
export interface LoadOptions {
  /** Cancels the wait, or the load (the loader gets the signal too); the lease is released at once. */
  signal?: AbortSignal;
  /** A random extra TTL up to this. */
  ttlJitterMs?: number;
  /** Lease lifetime: choose it above the loader's worst-case time (server default, 10 s, when unset). */
  leaseTtlMs?: number;
  /**
   * When the cached value has less than this left, one caller refreshes it (running the
   * loader) while everyone else keeps getting the cached value.
   */
  refreshAheadMs?: number;
  /** How long to wait, in total, for another caller's load before giving up (default 30 s). */
  maxWaitMs?: number;
  /** Tags of the loaded value. */
  tags?: string[];
}

/** Produces a missing value; it gets the caller's abort signal (or one that never aborts). */
export type Loader = (signal: AbortSignal) => Promise<Value> | Value;

/** Bytes of a value, as the Buffer the generated messages hold (no copy for bytes). */
export function toBytes(value: Value): Buffer {
  if (typeof value === "string") return Buffer.from(value, "utf8");
  return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function condition(c: SetCondition | undefined): CacheSetCondition {
  switch (c ?? "always") {
    case "always":
      return CacheSetCondition.CACHE_SET_CONDITION_ALWAYS;
    case "if-absent":
      return CacheSetCondition.CACHE_SET_CONDITION_IF_ABSENT;
    case "if-present":
      return CacheSetCondition.CACHE_SET_CONDITION_IF_PRESENT;
  }
}

/** How long a lease release may take before getOrLoad gives up on it (the lease expires anyway). */
const RELEASE_DEADLINE_MS = 5_000;

/** Typed calls to `rookery.v1.Cache`; get it as `client.cache`. */
export class CacheClient {
  /** The generated stub, for calls with options this API does not expose. */
  readonly raw: RawCacheClient;
  readonly #t: Transport;

  /** @internal Built by `Client`. */
  constructor(transport: Transport) {
    this.#t = transport;
    this.raw = transport.stub(RawCacheClient);
  }

  /** Reads a key; `null` on a miss. */
  async get(key: string, options: CallOptions = {}): Promise<Entry | null> {
    const r = await this.#t.unary(this.raw.get.bind(this.raw), CacheGetRequest.fromPartial({ key }), {
      ...options,
      idempotent: true,
    });
    return r.found ? { value: toBuffer(r.value), ttlMs: fromDuration(r.ttl) } : null;
  }

  /** Reads many keys in one call; one result per key, in order (`null` for a miss). */
  async getMany(keys: string[], options: CallOptions = {}): Promise<(Entry | null)[]> {
    const r = await this.#t.unary(this.raw.getMany.bind(this.raw), CacheGetManyRequest.fromPartial({ keys }), {
      ...options,
      idempotent: true,
    });
    return r.results.map((l) => (l.found ? { value: toBuffer(l.value), ttlMs: fromDuration(l.ttl) } : null));
  }

  /**
   * Writes a key with a TTL (ms) or options; returns whether it was written (false only when
   * the condition did not hold).
   */
  async set(key: string, value: Value, ttlOrOptions: number | SetOptions): Promise<boolean> {
    const options = typeof ttlOrOptions === "number" ? { ttlMs: ttlOrOptions } : ttlOrOptions;
    const request = CacheSetRequest.fromPartial({
      key,
      value: toBytes(value),
      ttl: optionalDuration(options.ttlMs),
      ttlJitter: optionalDuration(options.ttlJitterMs),
      condition: condition(options.condition),
      tags: options.tags ?? [],
    });
    // Writing the same value again is harmless only when the write is unconditional.
    const idempotent = (options.condition ?? "always") === "always";
    const r = await this.#t.unary(this.raw.set.bind(this.raw), request, { ...options, idempotent });
    return r.stored;
  }

  /** Writes many keys in one call (pipelined on the server); per entry, whether it was written. */
  async setMany(entries: Iterable<[string, Value]> | Record<string, Value>, options: SetOptions): Promise<boolean[]> {
    const pairs = Symbol.iterator in entries ? [...(entries as Iterable<[string, Value]>)] : Object.entries(entries);
    const request = CacheSetManyRequest.fromPartial({
      entries: pairs.map(([key, value]) => ({ key, value: toBytes(value) })),
      ttl: optionalDuration(options.ttlMs),
      ttlJitter: optionalDuration(options.ttlJitterMs),
      condition: condition(options.condition),
      tags: options.tags ?? [],
    });
    const idempotent = (options.condition ?? "always") === "always";
    return (await this.#t.unary(this.raw.setMany.bind(this.raw), request, { ...options, idempotent })).stored;
  }

  /** Deletes keys; returns how many existed. */
  async delete(keys: string | string[], options: CallOptions = {}): Promise<number> {
    const request = CacheDeleteRequest.fromPartial({ keys: typeof keys === "string" ? [keys] : keys });
    return Number((await this.#t.unary(this.raw.delete.bind(this.raw), request, options)).deleted);
  }

  /** Removes every key written with any of `tags`; returns how many were removed. */
  async invalidateTags(tags: string[], options: CallOptions = {}): Promise<number> {
    const request = CacheInvalidateRequest.fromPartial({ target: { $case: "tags", tags: { tags } } });
    return Number((await this.#t.unary(this.raw.invalidate.bind(this.raw), request, options)).removed);
  }

  /** Removes every key whose name starts with `prefix` (matched literally: `*` is a plain character). */
  async invalidatePrefix(prefix: string, options: CallOptions = {}): Promise<number> {
    const request = CacheInvalidateRequest.fromPartial({ target: { $case: "prefix", prefix } });
    return Number((await this.#t.unary(this.raw.invalidate.bind(this.raw), request, options)).removed);
  }

  /** Reads a key with the lease protocol (see `Cache.Fetch` in cache.proto). */
  async fetch(key: string, options: FetchOptions = {}): Promise<Fetched> {
    const request = CacheFetchRequest.fromPartial({
      key,
      wait: optionalDuration(options.waitMs),
      leaseTtl: optionalDuration(options.leaseTtlMs),
      refreshAhead: optionalDuration(options.refreshAheadMs),
    });
    // The server waits up to `wait` (10 s when unset) before answering: the deadline allows it.
    const r = await this.#t.unary(this.raw.fetch.bind(this.raw), request, {
      ...options,
      serverWaitMs: options.waitMs ?? 10_000,
    });
    const entry = () => ({ value: toBuffer(r.value), ttlMs: fromDuration(r.ttl) });
    switch (r.outcome) {
      case CacheFetchOutcome.CACHE_FETCH_OUTCOME_HIT:
        return { outcome: "hit", entry: entry() };
      case CacheFetchOutcome.CACHE_FETCH_OUTCOME_REFRESH:
        return { outcome: "refresh", entry: entry(), leaseToken: r.leaseToken };
      case CacheFetchOutcome.CACHE_FETCH_OUTCOME_FILL:
        return { outcome: "fill", leaseToken: r.leaseToken };
      case CacheFetchOutcome.CACHE_FETCH_OUTCOME_WAIT_EXPIRED:
        return { outcome: "wait-expired" };
      default:
        throw new RookeryError(Status.INTERNAL, `unknown fetch outcome ${r.outcome}`);
    }
  }

  /**
   * Stores a value with a lease from `fetch`, waking every waiter. FAILED_PRECONDITION means
   * the lease was no longer current (the key was written meanwhile) and nothing was stored.
   */
  async fill(key: string, leaseToken: string, value: Value, options: SetOptions): Promise<void> {
    const request = CacheFillRequest.fromPartial({
      key,
      leaseToken,
      value: toBytes(value),
      ttl: optionalDuration(options.ttlMs),
      ttlJitter: optionalDuration(options.ttlJitterMs),
      tags: options.tags ?? [],
    });
    await this.#t.unary(this.raw.fill.bind(this.raw), request, options);
  }

  /** Gives a lease back without filling, so the next waiter gets it at once; false if it was no longer current. */
  async releaseLease(key: string, leaseToken: string, options: CallOptions = {}): Promise<boolean> {
    const request = CacheReleaseLeaseRequest.fromPartial({ key, leaseToken });
    return (await this.#t.unary(this.raw.releaseLease.bind(this.raw), request, { ...options, idempotent: true })).released;
  }

  /**
   * Returns the cached value of `key`, or runs `loader` to produce it (cached for `ttlMs`),
   * such that the loader runs once per key across every caller, process and server replica
   * while the others wait for its value, woken the moment it is filled.
   *
   * - The caller granted the lease runs `loader` and fills the key. If the loader throws, the
   *   lease is given back at once (the next waiter loads without waiting for the lease to
   *   expire) and the error is rethrown. If the fill is rejected (the key was written
   *   meanwhile) or fails, the loaded value is still returned to this caller.
   * - With `refreshAheadMs`, the one caller granted a refresh lease reloads and returns the
   *   fresh value (or the cached one, if its loader throws); all others get the cached value.
   * - Aborting `options.signal` rejects with its reason and releases a lease held at once.
   * - Throws `CacheWaitExpiredError` after `maxWaitMs` of waiting for another caller.
   */
  async getOrLoad(key: string, ttlMs: number, loader: Loader, options: LoadOptions = {}): Promise<Buffer> {
    const { signal } = options;
    const maxWaitMs = options.maxWaitMs ?? 30_000;
    const started = Date.now();
    let lease: { token: string; cached: Buffer | null };
    for (;;) {
      const waitMs = maxWaitMs - (Date.now() - started);
      if (waitMs <= 0) throw new CacheWaitExpiredError(key, Date.now() - started);
      const fetched = await this.fetch(key, {
        waitMs,
        leaseTtlMs: options.leaseTtlMs,
        refreshAheadMs: options.refreshAheadMs,
        signal,
      });
      if (fetched.outcome === "hit") return fetched.entry.value;
      if (fetched.outcome === "refresh") {
        lease = { token: fetched.leaseToken, cached: fetched.entry.value };
        break;
      }
      if (fetched.outcome === "fill") {
        lease = { token: fetched.leaseToken, cached: null };
        break;
      }
    }
    // From here this caller holds the lease: every way out fills or releases it.
    const release = () =>
      this.releaseLease(key, lease.token, { deadlineMs: RELEASE_DEADLINE_MS }).catch(() => false);
    let value: Uint8Array;
    try {
      value = toBytes(await raceAbort(Promise.resolve().then(() => loader(signal ?? NEVER)), signal));
    } catch (error) {
      // Best effort: if the release fails, the lease still expires on its own.
      await release();
      if (lease.cached && !signal?.aborted) return lease.cached;
      throw error;
    }
    try {
      await this.fill(key, lease.token, value, { ttlMs, ttlJitterMs: options.ttlJitterMs, tags: options.tags });
    } catch (error) {
      // The loaded value is right whatever happened to the fill: a rejected fill means the key
      // changed meanwhile, and a failed one only that it is not cached (give the lease back).
      if (!RookeryError.hasCode(error, Status.FAILED_PRECONDITION)) await release();
    }
    return toBuffer(value);
  }
}

/** A signal that never aborts, for loaders of callers that gave none. */
const NEVER = new AbortController().signal;

/** `promise`, or a rejection with the signal's reason as soon as it aborts. */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => (signal.removeEventListener("abort", onAbort), resolve(v)),
      (e) => (signal.removeEventListener("abort", onAbort), reject(e)),
    );
  });
}
