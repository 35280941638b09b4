// How every call leaves this package: one gRPC channel (one HTTP/2 connection multiplexing
// every call), the metadata each call carries (namespace, bearer token), deadlines,
// cancellation by AbortSignal, retries of UNAVAILABLE for idempotent calls, and the
// conversion of every failure into a RookeryError. The service clients (cache.ts, lock.ts, …)
// only build requests and read answers.
import {
  Metadata,
  type CallOptions as GrpcCallOptions,
  type Channel,
  type ChannelCredentials,
  type ClientDuplexStream,
  type ClientReadableStream,
  type ClientUnaryCall,
  type ServiceError,
} from "@grpc/grpc-js";

import { RookeryError, Status } from "./errors.js";

/** The metadata header that selects the namespace (tenant) of a call. */
export const NAMESPACE_HEADER = "x-rookery-namespace";

/** Options every call of the typed API accepts. */
export interface CallOptions {
  /** Aborting it cancels the call; the call then rejects with `signal.reason`. */
  signal?: AbortSignal;
  /**
   * This call's whole deadline in ms, instead of the client's `deadlineMs` (which calls that
   * wait on the server, `fetch` and `acquire`, extend by their wait).
   */
  deadlineMs?: number;
}

/** When and how often idempotent calls are retried after UNAVAILABLE. */
export interface RetryOptions {
  /** Retries after the first attempt (default 3; 0 turns retries off). */
  retries?: number;
  /** The first wait, doubled after each retry (default 50 ms). */
  initialBackoffMs?: number;
  /** The longest wait (default 1000 ms). */
  maxBackoffMs?: number;
}

/** What the transport needs from the client's options. */
export interface TransportSettings {
  namespace: string | undefined;
  token: (() => string) | undefined;
  deadlineMs: number;
  retry: Required<RetryOptions>;
}

/** A generated unary method, in the overload that takes metadata and options. */
type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<GrpcCallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/** A generated server-streaming method, in the overload that takes metadata and options. */
type StreamMethod<Req, Res> = (
  request: Req,
  metadata?: Metadata,
  options?: Partial<GrpcCallOptions>,
) => ClientReadableStream<Res>;

/** Options of one unary call, as the service clients give them. */
export interface UnaryOptions extends CallOptions {
  /** Safe to send twice: retried after UNAVAILABLE. */
  idempotent?: boolean;
  /** How long the server may wait inside this call (a lock or fill wait): added to the deadline. */
  serverWaitMs?: number;
}

/** The shared channel and call machinery of one Client. */
export class Transport {
  /** The channel every stub of this client uses. */
  readonly channel: Channel;
  readonly #credentials: ChannelCredentials;
  readonly #settings: TransportSettings;

  /** A transport over `channel` (made with `credentials`) with these settings. */
  constructor(channel: Channel, credentials: ChannelCredentials, settings: TransportSettings) {
    this.channel = channel;
    this.#credentials = credentials;
    this.#settings = settings;
  }

  /** A generated stub on this transport's channel. */
  stub<T>(constructor: new (address: string, credentials: ChannelCredentials, options: object) => T): T {
    return new constructor("", this.#credentials, { channelOverride: this.channel });
  }

  /** Fresh metadata for one call: the namespace and the bearer token. */
  metadata(): Metadata {
    const metadata = new Metadata();
    if (this.#settings.namespace !== undefined) metadata.set(NAMESPACE_HEADER, this.#settings.namespace);
    const token = this.#settings.token?.();
    if (token !== undefined) metadata.set("authorization", `Bearer ${token.trim()}`);
    return metadata;
  }

  /** The gRPC options of a call with this deadline (none when `deadlineMs` is Infinity). */
  #grpcOptions(deadlineMs: number): Partial<GrpcCallOptions> {
    return Number.isFinite(deadlineMs) ? { deadline: new Date(Date.now() + deadlineMs) } : {};
  }

  /**
   * One unary call: with the client's metadata and deadline, cancelled by `options.signal`,
   * retried with backoff after UNAVAILABLE when `options.idempotent` (never past the
   * deadline), rejected with a RookeryError.
   */
  async unary<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, options: UnaryOptions = {}): Promise<Res> {
    // A call's own deadline is its whole deadline; the client's default also allows the wait.
    const deadlineMs = options.deadlineMs ?? this.#settings.deadlineMs + (options.serverWaitMs ?? 0);
    const end = Date.now() + deadlineMs;
    const { retries, initialBackoffMs, maxBackoffMs } = this.#settings.retry;
    let backoff = initialBackoffMs;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#unaryOnce(method, request, end - Date.now(), options.signal);
      } catch (error) {
        const failed = RookeryError.from(error);
        const wait = backoff * (0.5 + Math.random() / 2);
        const retry =
          options.idempotent && failed.code === Status.UNAVAILABLE && attempt < retries && Date.now() + wait < end;
        if (!retry) throw error === options.signal?.reason ? error : failed;
        await sleep(wait, options.signal);
        backoff = Math.min(backoff * 2, maxBackoffMs);
      }
    }
  }

  #unaryOnce<Req, Res>(
    method: UnaryMethod<Req, Res>,
    request: Req,
    deadlineMs: number,
    signal: AbortSignal | undefined,
  ): Promise<Res> {
    signal?.throwIfAborted();
    return new Promise<Res>((resolve, reject) => {
      const onAbort = () => {
        call.cancel();
        reject(signal?.reason);
      };
      const call = method(request, this.metadata(), this.#grpcOptions(Math.max(deadlineMs, 1)), (error, response) => {
        signal?.removeEventListener("abort", onAbort);
        if (error) reject(RookeryError.from(error));
        else resolve(response);
      });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * Starts a server-streaming call (no deadline unless given: streams live as long as their
   * reader wants), cancelled by `options.signal`.
   */
  serverStream<Req, Res>(method: StreamMethod<Req, Res>, request: Req, options: CallOptions = {}): ClientReadableStream<Res> {
    options.signal?.throwIfAborted();
    const call = method(request, this.metadata(), this.#grpcOptions(options.deadlineMs ?? Infinity));
    cancelOnAbort(call, options.signal);
    return call;
  }
}

/** Cancels `call` when `signal` aborts (and forgets the signal once the call is over). */
export function cancelOnAbort(
  call: { cancel(): void; once(event: "close", listener: () => void): unknown },
  signal?: AbortSignal,
): void {
  if (!signal) return;
  const onAbort = () => call.cancel();
  signal.addEventListener("abort", onAbort, { once: true });
  call.once("close", () => signal.removeEventListener("abort", onAbort));
}

/**
 * The messages of a server stream as an async generator: errors become RookeryErrors, and
 * leaving the loop early (break, return, a throw) cancels the call, so the server frees what
 * the stream held (a lock, a subscription).
 */
export async function* messages<T>(call: ClientReadableStream<T>, signal?: AbortSignal): AsyncGenerator<T, void, undefined> {
  try {
    for await (const message of call) yield message as T;
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw RookeryError.from(error);
  } finally {
    call.cancel();
  }
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * The first message of a stream (null if it ended without one), leaving the stream paused so
 * that no later message is emitted before its reader is attached.
 */
export function firstMessage<T>(
  call: ClientReadableStream<T> | ClientDuplexStream<never, T>,
  signal?: AbortSignal,
): Promise<T | null> {
  // An error emitted before the HeldLock listens must not go unhandled (an EventEmitter throws).
  call.on("error", () => {});
  return new Promise<T | null>((resolve, reject) => {
    const onAbort = () => call.cancel();
    const done = () => {
      call.off("data", onData).off("error", onError).off("end", onEnd);
      signal?.removeEventListener("abort", onAbort);
    };
    const onData = (message: T) => {
      call.pause();
      done();
      resolve(message);
    };
    const onError = (error: Error) => {
      done();
      reject(signal?.aborted ? signal.reason : RookeryError.from(error));
    };
    const onEnd = () => {
      done();
      resolve(null);
    };
    call.on("data", onData).on("error", onError).on("end", onEnd);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
  });
}
