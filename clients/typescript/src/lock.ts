// The Lock service's typed client: one-shot leases, leases held by a Hold stream (`hold`,
// usable with `await using`, and `withHold`), semaphores, and leader election as async
// iterators. Mirrors client/src/lock.rs.
//
// A held lock is watched as its Hold stream delivers: it counts as lost when the server says
// so, when the stream breaks, or when no renewal has arrived by the lease's time left (as last
// heard) less a safety margin — the server or the network may be gone, and the lease may end
// on Redis's clock without anyone telling us. Whichever comes first aborts `lease.signal`.
// Code that writes under a lock passes `lease.fence` to the resource, and can stop early by
// watching the signal.
import type { ClientReadableStream } from "@grpc/grpc-js";

import { LockNotAcquiredError, RookeryError, Status } from "./errors.js";
import {
  LockClient as RawLockClient,
  LockAcquireRequest,
  LockCampaignRequest,
  LockExtendRequest,
  LockHoldRequest,
  LockInspectRequest,
  LockLostReason,
  LockObserveRequest,
  LockReleaseRequest,
  LockResignRequest,
  type LockHoldResponse,
  type LockLost as PbLockLost,
} from "./gen/rookery/v1/lock.js";
import { fromDuration, optionalDuration, toDuration } from "./time.js";
import { firstMessage, messages, type CallOptions, type Transport } from "./transport.js";

/** How to acquire a lock. */
export interface LockOptions extends CallOptions {
  /** Lease TTL in ms (server default, 10 s, when unset). For a held lock: how long it outlives a server that stopped renewing it. */
  ttlMs?: number;
  /** How long to wait while others hold it (unset: try once). */
  waitMs?: number;
  /** Permits: more than 1 makes a counting semaphore. */
  limit?: number;
  /** A label shown to operators by `inspect`. */
  owner?: string;
}

/** A lease granted by `acquire` (or an election term granted by `campaign`). */
export interface Lease {
  /** The holder's secret, for `release` and `extend`. Never log it. */
  token: string;
  /** The grant's fencing token: pass it to the protected resource, which refuses lower ones. */
  fence: bigint;
  /** When the lease ends, on Redis's clock. */
  expiresAt: Date;
  /** The lease's time left when the server answered, in ms. */
  ttlMs: number;
}

/** Why a held lock (or a leadership) was lost. */
export type LockLostReasonName =
  /** The server found the lease gone from Redis (expired, released, deleted, data lost). */
  | "revoked"
  /** The server could not reach Redis to renew the lease before it expired. */
  | "unreachable"
  /** Redis refused the renewals for lack of memory until the lease expired. */
  | "redis-out-of-memory"
  /** The Hold stream broke or ended. */
  | "stream-ended"
  /** No renewal arrived by the lease's time left (less the safety margin). */
  | "silent"
  /** This holder released it. */
  | "released";

/** The reason a lease was lost: `lease.signal.reason`, and what `lease.lost` resolves to. */
export class LockLostError extends Error {
  /** Why. */
  readonly reason: LockLostReasonName;

  /** A loss for `reason`, with details for humans. */
  constructor(reason: LockLostReasonName, message: string) {
    super(`lock lost (${reason}): ${message}`);
    this.name = "LockLostError";
    this.reason = reason;
  }
}

/** A leader seen by `observe`. */
export interface Leader {
  /** Its candidate value. */
  candidate: string;
  /** Its term's fencing token. */
  fence: bigint;
  /** When it was elected, on Redis's clock. */
  electedAt: Date;
}

/** An event of a `campaign`. */
export type CampaignEvent = { type: "elected"; lease: Lease } | { type: "lost"; lost: LockLostError };

/** A lock's holders and last fencing token, from `inspect`. */
export interface LockState {
  /** Live holders, oldest grant first. */
  holders: { owner: string; fence: bigint; acquiredAt: Date; expiresAt: Date }[];
  /** Permits while held (1 for a mutual-exclusion lock); 0 when free. */
  limit: number;
  /** The last fencing token granted on this name (0n if Redis no longer remembers it). */
  lastFence: bigint;
}

/**
 * How long before a lease's end, as last heard, the client stops trusting it when the server
 * falls silent: the server's own margin (a twentieth of the TTL, at least 50 ms, at most a
 * quarter of it). It covers the delay of the message that carried the time left, which its
 * arrival time cannot see, and clock drift over one TTL.
 */
export function safetyMarginMs(ttlMs: number): number {
  return Math.min(Math.max(ttlMs / 20, 50), ttlMs / 4);
}

function lostError(lost: PbLockLost): LockLostError {
  switch (lost.reason) {
    case LockLostReason.LOCK_LOST_REASON_UNREACHABLE:
      return new LockLostError("unreachable", lost.message);
    case LockLostReason.LOCK_LOST_REASON_REDIS_OUT_OF_MEMORY:
      return new LockLostError("redis-out-of-memory", lost.message);
    default:
      return new LockLostError("revoked", lost.message);
  }
}

const EPOCH = new Date(0);

/**
 * A lock held by a Hold stream: renewed by the server while it is held, released by
 * `release()` or at the end of an `await using` block (or when the options' signal aborts).
 */
export class HeldLock implements AsyncDisposable {
  /** The lock's name. */
  readonly name: string;
  /** The holder's secret (works with `release` and `extend` too). Never log it. */
  readonly token: string;
  /** The fencing token of this grant: pass it with every write to the protected resource. */
  readonly fence: bigint;
  /** Aborts when the lock is lost or released; `signal.reason` is a LockLostError saying why. */
  readonly signal: AbortSignal;
  /** Resolves with the reason when the lock is lost or released. */
  readonly lost: Promise<LockLostError>;
  readonly #lock: LockClient;
  readonly #call: ClientReadableStream<LockHoldResponse>;
  readonly #controller = new AbortController();
  readonly #margin: number;
  #timer: NodeJS.Timeout | undefined;
  /** Until when the lease is trusted, on the monotonic clock (performance.now()), which wall-clock steps cannot move. */
  #validUntil = 0;

  /** @internal Built by `LockClient.hold` once the grant arrived (`receivedAt` from performance.now()). */
  constructor(
    lock: LockClient,
    name: string,
    call: ClientReadableStream<LockHoldResponse>,
    token: string,
    fence: bigint,
    ttlMs: number,
    receivedAt: number,
  ) {
    this.#lock = lock;
    this.name = name;
    this.#call = call;
    this.token = token;
    this.fence = fence;
    this.signal = this.#controller.signal;
    this.lost = new Promise((resolve) =>
      this.signal.addEventListener("abort", () => resolve(this.signal.reason as LockLostError), { once: true }),
    );
    this.#margin = safetyMarginMs(ttlMs);
    this.#trustUntil(receivedAt + ttlMs - this.#margin);
    call.on("data", (message: LockHoldResponse) => {
      const event = message.event;
      if (event?.$case === "renewed") this.#trustUntil(performance.now() + fromDuration(event.renewed.ttl) - this.#margin);
      else if (event?.$case === "lost") this.#lose(lostError(event.lost));
    });
    call.on("error", (error) => this.#lose(new LockLostError("stream-ended", RookeryError.from(error).message)));
    call.on("end", () => this.#lose(new LockLostError("stream-ended", "the server ended the stream")));
  }

  /** Whether the lock is still held, as far as this client knows. */
  get isHeld(): boolean {
    return !this.signal.aborted;
  }

  /** Until when (ms since the epoch, local clock) this client trusts the lease without a new renewal. */
  get validUntil(): number {
    return Date.now() + (this.#validUntil - performance.now());
  }

  /** Each message moves the local deadline; silence past it counts as lost. */
  #trustUntil(until: number): void {
    if (this.signal.aborted) return;
    this.#validUntil = until;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(
      () => this.#lose(new LockLostError("silent", "no renewal arrived within the lease's time left")),
      Math.max(until - performance.now(), 0),
    );
  }

  /** Records the first reason the lock was lost, and stops the stream (the server then releases). */
  #lose(reason: LockLostError): void {
    clearTimeout(this.#timer);
    if (!this.signal.aborted) this.#controller.abort(reason);
    this.#call.cancel();
  }

  /**
   * Releases the lock now and waits for the server's answer; returns whether the lease was
   * still held. Releasing again returns false.
   */
  async release(): Promise<boolean> {
    if (this.signal.aborted) {
      this.#call.cancel();
      return false;
    }
    clearTimeout(this.#timer);
    this.#controller.abort(new LockLostError("released", "released by this holder"));
    // Release by token before closing the stream, so the answer says whether the lease was
    // still held (closing first would race the server's own release).
    try {
      return await this.#lock.release(this.name, this.token);
    } finally {
      this.#call.cancel();
    }
  }

  /** Releases the lock at the end of an `await using` block (a failed release only delays the next holder until the TTL). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release().catch(() => false);
  }
}

/** Typed calls to `rookery.v1.Lock`; get it as `client.lock`. */
export class LockClient {
  /** The generated stub, for calls with options this API does not expose. */
  readonly raw: RawLockClient;
  readonly #t: Transport;

  /** @internal Built by `Client`. */
  constructor(transport: Transport) {
    this.#t = transport;
    this.raw = transport.stub(RawLockClient);
  }

  /** Acquires a lease (waiting up to `options.waitMs`); `null` if others still hold the lock. */
  async acquire(name: string, options: LockOptions = {}): Promise<Lease | null> {
    const request = LockAcquireRequest.fromPartial({
      name,
      ttl: optionalDuration(options.ttlMs),
      wait: optionalDuration(options.waitMs),
      limit: options.limit ?? 0,
      owner: options.owner ?? "",
    });
    const r = await this.#t.unary(this.raw.acquire.bind(this.raw), request, {
      ...options,
      serverWaitMs: options.waitMs ?? 0,
    });
    return r.acquired ? { token: r.token, fence: r.fence, expiresAt: r.expiresAt ?? EPOCH, ttlMs: fromDuration(r.ttl) } : null;
  }

  /** Releases a lease; false if the token held no live lease. */
  async release(name: string, token: string, options: CallOptions = {}): Promise<boolean> {
    const request = LockReleaseRequest.fromPartial({ name, token });
    return (await this.#t.unary(this.raw.release.bind(this.raw), request, options)).released;
  }

  /** Sets a live lease's remaining time to `ttlMs`; the new expiry, or `null` if it had expired. */
  async extend(name: string, token: string, ttlMs: number, options: CallOptions = {}): Promise<Date | null> {
    const request = LockExtendRequest.fromPartial({ name, token, ttl: toDuration(ttlMs) });
    const r = await this.#t.unary(this.raw.extend.bind(this.raw), request, options);
    return r.extended ? (r.expiresAt ?? EPOCH) : null;
  }

  /** A lock's holders, permits and last fencing token. */
  async inspect(name: string, options: CallOptions = {}): Promise<LockState> {
    const r = await this.#t.unary(this.raw.inspect.bind(this.raw), LockInspectRequest.fromPartial({ name }), {
      ...options,
      idempotent: true,
    });
    return {
      holders: r.holders.map((h) => ({
        owner: h.owner,
        fence: h.fence,
        acquiredAt: h.acquiredAt ?? EPOCH,
        expiresAt: h.expiresAt ?? EPOCH,
      })),
      limit: r.limit,
      lastFence: r.lastFence,
    };
  }

  /**
   * Holds a lock for as long as the returned HeldLock is not released (see HeldLock); `null`
   * if others still hold it after `options.waitMs`. Aborting `options.signal` cancels the
   * wait, or releases the lock once held.
   *
   * ```ts
   * await using lease = await client.lock.hold("report", { ttlMs: 10_000, waitMs: 30_000 });
   * if (lease) await writeReport(lease.fence, lease.signal);
   * ```
   */
  async hold(name: string, options: LockOptions = {}): Promise<HeldLock | null> {
    const request = LockHoldRequest.fromPartial({
      name,
      ttl: optionalDuration(options.ttlMs),
      wait: optionalDuration(options.waitMs),
      limit: options.limit ?? 0,
      owner: options.owner ?? "",
    });
    // No deadline: the stream lives as long as the lock is held (a deadline would end the hold).
    const call = this.#t.serverStream(this.raw.hold.bind(this.raw), request);
    const first = await firstMessage(call, options.signal);
    const receivedAt = performance.now();
    const event = first?.event;
    if (event?.$case === "acquired") {
      const { token, fence, ttl } = event.acquired;
      const held = new HeldLock(this, name, call, token, fence, fromDuration(ttl), receivedAt);
      if (options.signal) {
        const onAbort = () => void held.release().catch(() => false);
        options.signal.addEventListener("abort", onAbort, { once: true });
        held.signal.addEventListener("abort", () => options.signal?.removeEventListener("abort", onAbort), { once: true });
      }
      call.resume();
      return held;
    }
    call.cancel();
    if (event?.$case === "notAcquired") return null;
    if (event?.$case === "lost") throw new RookeryError(Status.ABORTED, event.lost.message);
    throw new RookeryError(Status.INTERNAL, "the hold stream did not start with a grant");
  }

  /**
   * Runs `work` while holding the lock `name`, then releases it, and returns what `work`
   * returned. `work` gets the HeldLock: its fencing token, and a signal that aborts if the lock
   * is lost meanwhile (the work keeps running: it decides whether to stop). Throws
   * LockNotAcquiredError if others still hold the lock after `options.waitMs`.
   */
  async withHold<T>(name: string, options: LockOptions, work: (lease: HeldLock) => Promise<T> | T): Promise<T> {
    const held = await this.hold(name, options);
    if (!held) throw new LockNotAcquiredError(name);
    try {
      return await work(held);
    } finally {
      // A failed release only delays the next holder until the lease's TTL; the work is done.
      await held.release().catch(() => false);
    }
  }

  /**
   * Campaigns for leadership of `election` as `candidate`: yields `elected` when this
   * candidate leads and `lost` if it stops leading (then ends). Leaving the loop (or aborting
   * `options.signal`) ends the campaign, which resigns.
   */
  async *campaign(
    election: string,
    candidate: string,
    options: { ttlMs?: number; signal?: AbortSignal } = {},
  ): AsyncGenerator<CampaignEvent, void, undefined> {
    const request = LockCampaignRequest.fromPartial({ election, candidate, ttl: optionalDuration(options.ttlMs) });
    const call = this.#t.serverStream(this.raw.campaign.bind(this.raw), request, { signal: options.signal });
    for await (const message of messages(call, options.signal)) {
      const event = message.event;
      if (event?.$case === "elected") {
        const e = event.elected;
        const lease = { token: e.token, fence: e.fence, expiresAt: e.expiresAt ?? EPOCH, ttlMs: fromDuration(e.ttl) };
        yield { type: "elected", lease };
      } else if (event?.$case === "lost") {
        yield { type: "lost", lost: lostError(event.lost) };
      }
    }
  }

  /**
   * The leaders of `election`: the current state first, then every new leader; `null` when
   * the election is found without one. Leave the loop (or abort the signal) to stop.
   */
  async *observe(election: string, options: { signal?: AbortSignal } = {}): AsyncGenerator<Leader | null, void, undefined> {
    const call = this.#t.serverStream(this.raw.observe.bind(this.raw), LockObserveRequest.fromPartial({ election }), options);
    for await (const message of messages(call, options.signal)) {
      const l = message.leader;
      yield l ? { candidate: l.candidate, fence: l.fence, electedAt: l.electedAt ?? EPOCH } : null;
    }
  }

  /** Gives up leadership; false if the token did not lead. */
  async resign(election: string, token: string, options: CallOptions = {}): Promise<boolean> {
    const request = LockResignRequest.fromPartial({ election, token });
    return (await this.#t.unary(this.raw.resign.bind(this.raw), request, options)).resigned;
  }
}
