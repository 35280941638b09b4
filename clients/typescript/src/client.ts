// The entry point: `new Client("host:port", { namespace, … })` opens one gRPC channel (TLS
// with a given CA, a bearer token, a default deadline, retries of UNAVAILABLE for idempotent
// calls) and hands out the five service clients over it. Mirrors client/src/lib.rs and
// client/src/connect.rs.
import { readFileSync } from "node:fs";

import { Channel, credentials as grpcCredentials, type ChannelOptions } from "@grpc/grpc-js";

import { CacheClient } from "./cache.js";
import { EventsClient } from "./events.js";
import { LockClient } from "./lock.js";
import { RateLimiterClient } from "./rate-limiter.js";
import { SessionClient } from "./session.js";
import { Transport, type RetryOptions } from "./transport.js";

/** How a Client connects and what every call carries. */
export interface ClientOptions {
  /** The namespace (tenant) of every call, sent as `x-rookery-namespace` (server default: `default`). */
  namespace?: string;
  /**
   * Use TLS: `true` trusts the system's roots; an object gives the CA (PEM, or `caFile`), a
   * client certificate for mTLS, and the name the server's certificate must carry when the
   * address does not. An `https://` address turns TLS on as well.
   */
  tls?:
    | boolean
    | {
        /** PEM of the CA certificates to trust instead of the system's roots. */
        ca?: string | Buffer;
        /** A file holding that PEM. */
        caFile?: string;
        /** PEM of a client certificate chain (mTLS). */
        cert?: string | Buffer;
        /** PEM of its private key. */
        key?: string | Buffer;
        /** The name the server's certificate must carry (when the address's host is not it). */
        serverName?: string;
      };
  /**
   * A bearer token sent as `authorization: Bearer …` on every call; a function is asked
   * before each call (for tokens that rotate, e.g. a re-read projected ServiceAccount token).
   */
  token?: string | (() => string);
  /** The deadline of every unary call, in ms (default 30 000); a call's own `deadlineMs` wins. Streams have none. */
  deadlineMs?: number;
  /** Retries of idempotent calls after UNAVAILABLE (default 3, backoff 50 ms doubling to 1 s); `false` for none. */
  retry?: RetryOptions | false;
  /** Extra @grpc/grpc-js channel options. */
  channelOptions?: ChannelOptions;
}

const NAMESPACE = /^[A-Za-z0-9._-]{1,64}$/;

function pem(value: string | Buffer | undefined): Buffer | null {
  return value === undefined ? null : Buffer.from(value);
}

/**
 * A connection to a Rookery server: one HTTP/2 connection multiplexing every call, shared by
 * the service clients `cache`, `lock`, `rateLimiter`, `session` and `events`. Close it with
 * `close()` (or `using`), which ends every call still open on it.
 *
 * ```ts
 * const client = new Client("localhost:50051", { namespace: "my-team" });
 * const profile = await client.cache.getOrLoad("user:42", 300_000, () => loadProfile(42));
 * ```
 */
export class Client implements Disposable {
  /** The Cache service: values with TTLs, tags, and `getOrLoad`. */
  readonly cache: CacheClient;
  /** The Lock service: leases with fencing tokens, held locks, semaphores, elections. */
  readonly lock: LockClient;
  /** The RateLimiter service. */
  readonly rateLimiter: RateLimiterClient;
  /** The Session service. */
  readonly session: SessionClient;
  /** The Events service: pub/sub, durable streams and consumer groups. */
  readonly events: EventsClient;
  /** The channel, for generated stubs this package does not wrap (with `channelOverride`). */
  readonly channel: Channel;

  /**
   * Connects (lazily, at the first call) to `address`: `host:port`, or `http://host:port` /
   * `https://host:port`. Throws RangeError for a malformed namespace.
   */
  constructor(address: string, options: ClientOptions = {}) {
    const { namespace } = options;
    if (namespace !== undefined && !NAMESPACE.test(namespace)) {
      throw new RangeError(`invalid namespace ${JSON.stringify(namespace)}: use 1-64 letters, digits, '.', '_' and '-'`);
    }
    const https = address.startsWith("https://");
    const target = address.replace(/^https?:\/\//, "");
    const tls = options.tls === true || https ? {} : options.tls || null;
    const channelOptions: ChannelOptions = {
      // The server bounds its answers itself (limits.max_response_bytes); the client takes them.
      "grpc.max_receive_message_length": -1,
      "grpc.max_send_message_length": -1,
      ...options.channelOptions,
    };
    let credentials = grpcCredentials.createInsecure();
    if (tls) {
      const ca = tls.caFile !== undefined ? readFileSync(tls.caFile) : pem(tls.ca);
      credentials = grpcCredentials.createSsl(ca, pem(tls.key), pem(tls.cert));
      if (tls.serverName !== undefined) {
        channelOptions["grpc.ssl_target_name_override"] = tls.serverName;
        channelOptions["grpc.default_authority"] = tls.serverName;
      }
    }
    this.channel = new Channel(target, credentials, channelOptions);
    const token = options.token;
    const retry = options.retry === false ? { retries: 0 } : (options.retry ?? {});
    const transport = new Transport(this.channel, credentials, {
      namespace,
      token: typeof token === "string" ? () => token : token,
      deadlineMs: options.deadlineMs ?? 30_000,
      retry: {
        retries: retry.retries ?? 3,
        initialBackoffMs: retry.initialBackoffMs ?? 50,
        maxBackoffMs: retry.maxBackoffMs ?? 1_000,
      },
    });
    this.cache = new CacheClient(transport);
    this.lock = new LockClient(transport);
    this.rateLimiter = new RateLimiterClient(transport);
    this.session = new SessionClient(transport);
    this.events = new EventsClient(transport);
  }

  /** Closes the connection; calls still open on it end with CANCELLED or UNAVAILABLE. */
  close(): void {
    this.channel.close();
  }

  /** Closes the connection at the end of a `using` block. */
  [Symbol.dispose](): void {
    this.close();
  }
}
