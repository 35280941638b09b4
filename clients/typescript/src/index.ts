// The package's public surface: the Client, the five service clients and their types, the
// errors, and the helpers (rate limit headers, session hints and JSON attributes). The
// generated messages and stubs stay reachable through each service client's `raw`.
export { Client, type ClientOptions } from "./client.js";
export { RookeryError, Status, LockNotAcquiredError, CacheWaitExpiredError } from "./errors.js";
export { NAMESPACE_HEADER, type CallOptions, type RetryOptions } from "./transport.js";
export {
  CacheClient,
  type Entry,
  type FetchOptions,
  type Fetched,
  type LoadOptions,
  type Loader,
  type SetCondition,
  type SetOptions,
  type Value,
} from "./cache.js";
export {
  LockClient,
  HeldLock,
  LockLostError,
  safetyMarginMs,
  type CampaignEvent,
  type Leader,
  type Lease,
  type LockLostReasonName,
  type LockOptions,
  type LockState,
} from "./lock.js";
export {
  RateLimiterClient,
  rateLimitHeaders,
  unavailableDecision,
  type Algorithm,
  type Decision,
  type RateLimit,
  type RateLimitCheck,
  type WhenUnavailable,
} from "./rate-limiter.js";
export {
  SessionClient,
  Session,
  SessionUpdate,
  jsonAttributes,
  sessionHint,
  type Attributes,
  type CreatedSession,
  type SessionOptions,
  type SessionSummary,
} from "./session.js";
export {
  EventsClient,
  type AppendOptions,
  type ConsumeOptions,
  type Fields,
  type GroupSettings,
  type ProcessOptions,
  type StreamEntry,
  type SubscriptionEvent,
} from "./events.js";
export { Consumer, type ConsumerSettings, type Deliveries, type Delivery } from "./consumer.js";
