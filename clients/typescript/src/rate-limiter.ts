// The RateLimiter service's typed client: checks, the caller's explicit choice of failing open
// or closed when the service is unreachable, and the IETF RateLimit headers. Mirrors
// client/src/rate_limiter.rs.
import { RookeryError, Status } from "./errors.js";
import {
  RateLimiterClient as RawRateLimiterClient,
  RateLimitAlgorithm,
  RateLimiterCheckManyRequest,
  type RateLimiterCheckRequest,
  RateLimiterResetRequest,
  type RateLimiterCheckResponse,
} from "./gen/rookery/v1/rate_limiter.js";
import { fromDuration, toDuration } from "./time.js";
import type { CallOptions, Transport } from "./transport.js";

/** How a limit counts (see rate_limiter.proto). */
export type Algorithm = "gcra" | "token-bucket" | "sliding-window-log" | "sliding-window-counter" | "fixed-window";

/**
 * Which limit to apply: a policy named in the server's config, or an inline limit of `limit`
 * per `periodMs`, up to `burst` at once (GCRA and token bucket; default `limit`).
 */
export type RateLimit =
  | { policy: string }
  | { limit: number; periodMs: number; algorithm?: Algorithm; burst?: number };

/** What to decide when the rate limiter cannot be reached (UNAVAILABLE): fail open or closed. */
export type WhenUnavailable = "allow" | "deny";

/** A rate limit decision. */
export interface Decision {
  /** Whether the request may proceed. */
  allowed: boolean;
  /** Units per period. */
  limit: number;
  /** The period, in ms. */
  periodMs: number;
  /** Units left now. */
  remaining: number;
  /** Time until the limit is fully available again, in ms. */
  resetAfterMs: number;
  /** When denied: wait this long before retrying, in ms. */
  retryAfterMs: number;
  /** A shadow-mode policy denied the request (it is allowed anyway). */
  shadowDenied: boolean;
  /** The service could not be reached: this decision is the caller's WhenUnavailable. */
  unavailable: boolean;
}

/** One limit of `checkMany`. */
export interface RateLimitCheck {
  /** The limited key. */
  key: string;
  /** The limit. */
  limit: RateLimit;
  /** Units to consume (default 1; 0 peeks). */
  cost?: number;
}

const ALGORITHMS: Record<Algorithm, RateLimitAlgorithm> = {
  gcra: RateLimitAlgorithm.RATE_LIMIT_ALGORITHM_GCRA,
  "token-bucket": RateLimitAlgorithm.RATE_LIMIT_ALGORITHM_TOKEN_BUCKET,
  "sliding-window-log": RateLimitAlgorithm.RATE_LIMIT_ALGORITHM_SLIDING_WINDOW_LOG,
  "sliding-window-counter": RateLimitAlgorithm.RATE_LIMIT_ALGORITHM_SLIDING_WINDOW_COUNTER,
  "fixed-window": RateLimitAlgorithm.RATE_LIMIT_ALGORITHM_FIXED_WINDOW,
};

function checkRequest(key: string, limit: RateLimit, cost: number): RateLimiterCheckRequest {
  return {
    key,
    cost: BigInt(cost),
    limit:
      "policy" in limit
        ? { $case: "policy", policy: limit.policy }
        : {
            $case: "spec",
            spec: {
              algorithm: ALGORITHMS[limit.algorithm ?? "gcra"],
              limit: BigInt(limit.limit),
              period: toDuration(limit.periodMs),
              burst: BigInt(limit.burst ?? 0),
            },
          },
  };
}

function decision(r: RateLimiterCheckResponse): Decision {
  return {
    allowed: r.allowed,
    limit: Number(r.limit),
    periodMs: fromDuration(r.period),
    remaining: Number(r.remaining),
    resetAfterMs: fromDuration(r.resetAfter),
    retryAfterMs: fromDuration(r.retryAfter),
    shadowDenied: r.shadowDenied,
    unavailable: false,
  };
}

/** The decision taken for an unreachable service, as the caller chose. */
export function unavailableDecision(when: WhenUnavailable): Decision {
  return {
    allowed: when === "allow",
    limit: 0,
    periodMs: 0,
    remaining: 0,
    resetAfterMs: 0,
    retryAfterMs: 0,
    shadowDenied: false,
    unavailable: true,
  };
}

/**
 * The IETF rate limit headers for a decision under the policy name `policy`
 * (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy`, `RateLimit`, and `Retry-After`
 * when denied. Seconds are rounded up, so a client that waits them is allowed.
 *
 * ```ts
 * for (const [name, value] of Object.entries(rateLimitHeaders(decision, "api"))) res.setHeader(name, value);
 * ```
 */
export function rateLimitHeaders(d: Decision, policy: string): Record<string, string> {
  const secs = (ms: number) => Math.ceil(ms / 1000);
  const name = policy.replace(/["\\]/g, "");
  const headers: Record<string, string> = {
    "RateLimit-Policy": `"${name}";q=${d.limit};w=${Math.max(secs(d.periodMs), 1)}`,
    RateLimit: `"${name}";r=${d.remaining};t=${secs(d.resetAfterMs)}`,
  };
  if (!d.allowed) headers["Retry-After"] = String(secs(d.retryAfterMs));
  return headers;
}

/** Typed calls to `rookery.v1.RateLimiter`; get it as `client.rateLimiter`. */
export class RateLimiterClient {
  /** The generated stub, for calls with options this API does not expose. */
  readonly raw: RawRateLimiterClient;
  readonly #t: Transport;

  /** @internal Built by `Client`. */
  constructor(transport: Transport) {
    this.#t = transport;
    this.raw = transport.stub(RawRateLimiterClient);
  }

  /**
   * Checks and (if allowed) consumes `cost` units (default 1; 0 peeks) of `limit` for `key`.
   * Rejects with UNAVAILABLE when the service cannot be reached: use `checkOr` to decide then.
   */
  async check(key: string, limit: RateLimit, options: CallOptions & { cost?: number } = {}): Promise<Decision> {
    const cost = options.cost ?? 1;
    // A peek consumes nothing, so sending it twice is harmless.
    const r = await this.#t.unary(this.raw.check.bind(this.raw), checkRequest(key, limit, cost), {
      ...options,
      idempotent: cost === 0,
    });
    return decision(r);
  }

  /**
   * `check`, deciding `whenUnavailable` ("allow": fail open, "deny": fail closed) when the
   * service cannot be reached; the decision then has `unavailable: true`. Other errors (a bad
   * request) still reject.
   */
  async checkOr(
    key: string,
    limit: RateLimit,
    whenUnavailable: WhenUnavailable,
    options: CallOptions & { cost?: number } = {},
  ): Promise<Decision> {
    try {
      return await this.check(key, limit, options);
    } catch (error) {
      if (RookeryError.hasCode(error, Status.UNAVAILABLE)) return unavailableDecision(whenUnavailable);
      throw error;
    }
  }

  /**
   * Checks several limits for one request: allowed only if all allow, and nothing consumed
   * when one denies. Returns whether all allowed, and one decision per check.
   */
  async checkMany(checks: RateLimitCheck[], options: CallOptions = {}): Promise<{ allowed: boolean; decisions: Decision[] }> {
    const request = RateLimiterCheckManyRequest.fromPartial({
      checks: checks.map((c) => checkRequest(c.key, c.limit, c.cost ?? 1)),
    });
    const r = await this.#t.unary(this.raw.checkMany.bind(this.raw), request, options);
    return { allowed: r.allowed, decisions: r.results.map(decision) };
  }

  /** Forgets `key`'s state under every algorithm; returns how many states existed. */
  async reset(key: string, options: CallOptions = {}): Promise<number> {
    const r = await this.#t.unary(this.raw.reset.bind(this.raw), RateLimiterResetRequest.fromPartial({ key }), options);
    return Number(r.removed);
  }
}
