// The errors this package throws: RookeryError for every failed call (it carries the gRPC
// status code, so callers branch on codes, not on message text), and the two outcomes of the
// helpers that are not gRPC failures (a lock held by others, a cache wait that ran out).
import { Metadata, status as grpcStatus, type ServiceError } from "@grpc/grpc-js";

/** The gRPC status codes (`Status.UNAVAILABLE`, …), as numbers. */
export const Status = grpcStatus;
/** A gRPC status code. */
export type Status = grpcStatus;

/**
 * A call to Rookery failed. `code` is the gRPC status code (see the table in the README:
 * UNAVAILABLE while Redis or the server is unreachable, RESOURCE_EXHAUSTED over a limit,
 * INVALID_ARGUMENT for bad input, …), `details` the server's explanation.
 *
 * ```ts
 * try { await client.cache.get("k"); }
 * catch (e) { if (RookeryError.hasCode(e, Status.UNAVAILABLE)) { … } }
 * ```
 */
export class RookeryError extends Error {
  /** The gRPC status code. */
  readonly code: Status;
  /** The server's (or the transport's) explanation. */
  readonly details: string;
  /** The trailing metadata of the failed call, when there was one. */
  readonly metadata: Metadata | undefined;

  /** An error with this code and explanation. */
  constructor(code: Status, details: string, options?: { metadata?: Metadata; cause?: unknown }) {
    super(`${Status[code] ?? `code ${code}`}: ${details}`, { cause: options?.cause });
    this.name = "RookeryError";
    this.code = code;
    this.details = details;
    this.metadata = options?.metadata;
  }

  /** Whether this error has status `code`. */
  is(code: Status): boolean {
    return this.code === code;
  }

  /** Whether `error` is a RookeryError with status `code` (for `catch (e)` blocks). */
  static hasCode(error: unknown, code: Status): boolean {
    return error instanceof RookeryError && error.code === code;
  }

  /** The RookeryError for anything a gRPC call rejected with. */
  static from(error: unknown): RookeryError {
    if (error instanceof RookeryError) return error;
    if (isServiceError(error)) {
      return new RookeryError(error.code, error.details || error.message, {
        metadata: error.metadata,
        cause: error,
      });
    }
    const message = error instanceof Error ? error.message : String(error);
    return new RookeryError(Status.INTERNAL, message, { cause: error });
  }
}

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === "number";
}

/** `client.lock.withHold` did not run its callback: others still held the lock after the wait. */
export class LockNotAcquiredError extends Error {
  /** The lock's name. */
  readonly lockName: string;

  /** The error for lock `name`. */
  constructor(name: string) {
    super(`the lock ${JSON.stringify(name)} is held by others`);
    this.name = "LockNotAcquiredError";
    this.lockName = name;
  }
}

/**
 * `client.cache.getOrLoad` gave up: another caller held the key's lease for longer than
 * `maxWaitMs` without filling it.
 */
export class CacheWaitExpiredError extends Error {
  /** The key. */
  readonly key: string;
  /** How long this caller waited, in milliseconds. */
  readonly waitedMs: number;

  /** The error for `key` after waiting `waitedMs`. */
  constructor(key: string, waitedMs: number) {
    super(`gave up after waiting ${waitedMs} ms for another caller to load ${JSON.stringify(key)}`);
    this.name = "CacheWaitExpiredError";
    this.key = key;
    this.waitedMs = waitedMs;
  }
}
