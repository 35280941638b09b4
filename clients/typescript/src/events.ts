// The Events service's typed client: publish, subscriptions as async iterators that say when
// messages were lost, durable streams (append, read and follow), and consumer groups (a
// consumer as an async iterator of deliveries, and `process`, which acks what its handler
// finished, nacks what it failed, and keeps consuming across server and Redis restarts).
// Mirrors client/src/events.rs.
import type { ClientDuplexStream } from "@grpc/grpc-js";

import { Consumer, fieldBuffers, startedSettings, type ConsumerSettings, type Delivery } from "./consumer.js";
import { RookeryError, Status } from "./errors.js";
import {
  EventsClient as RawEventsClient,
  EventsAckRequest,
  EventsAppendManyRequest,
  EventsAppendRequest,
  EventsConsumeRequest,
  EventsCreateGroupRequest,
  EventsDeleteGroupRequest,
  EventsDescribeStreamRequest,
  EventsGapReason,
  EventsNackRequest,
  EventsPublishRequest,
  EventsReadRequest,
  EventsSubscribeRequest,
  type EventsConsumeResponse,
  type EventsConsumeWithAcksRequest,
  type EventsDescribeStreamResponse,
  type EventsMessage,
} from "./gen/rookery/v1/events.js";
import { toBytes, type Value } from "./cache.js";
import { optionalDuration, toDuration } from "./time.js";
import { firstMessage, messages, sleep, type CallOptions, type Transport } from "./transport.js";

/** One event of a subscription: a message, or a gap where messages were lost. */
export type SubscriptionEvent =
  | { type: "message"; channel: string; pattern: string | undefined; payload: Buffer }
  | {
      type: "gap";
      /** "slow-subscriber": it did not take messages fast enough; "reconnected": the server's Redis connection was re-established. */
      reason: "slow-subscriber" | "reconnected";
      /** How many were lost, when known (0 otherwise). */
      missed: number;
    };

/** One entry of a durable stream. */
export interface StreamEntry {
  /** Its ID; pass it as `after` to resume after it. */
  id: string;
  /** Its fields. */
  fields: Record<string, Buffer>;
}

/** Fields of a new entry: names to bytes or strings. */
export type Fields = Record<string, Value>;

/** How an append trims its stream and guards against retries. */
export interface AppendOptions extends CallOptions {
  /** Keep about this many entries (0: the server's bound). */
  maxLen?: number;
  /** Drop entries older than this, ms. */
  maxAgeMs?: number;
  /** The same key within the server's window answers the first append's ID (and makes the append safe to retry). */
  idempotencyKey?: string;
}

/** How a consumer group delivers; unset fields follow the server's defaults. */
export interface GroupSettings {
  /** How long a delivered entry may stay unacknowledged before it goes to another consumer, ms. */
  ackTimeoutMs?: number;
  /** Deliveries after which an entry moves to the dead-letter stream (0: never). */
  maxDeliveries?: number;
}

/** How to consume. */
export interface ConsumeOptions {
  /** Create the group (at the stream's first entry, with `settings`) if it does not exist. */
  createGroup?: boolean;
  /** Settings of a group this call creates. */
  settings?: GroupSettings;
  /** Most unacknowledged deliveries at once (0: the server's default, 100). */
  maxInFlight?: number;
  /** Cancels the wait for the confirmation, and then stops the consumer. */
  signal?: AbortSignal;
}

/** How `process` consumes. */
export interface ProcessOptions extends ConsumeOptions {
  /** How long a failed entry waits before it is delivered again, ms (at most the ack timeout; default 0). */
  retryDelayMs?: number;
}

export type { Consumer, ConsumerSettings, Deliveries, Delivery } from "./consumer.js";

/** First and longest wait before `process` consumes again after losing the server. */
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5_000;

function groupSettings(s: GroupSettings | undefined) {
  return { ackTimeout: optionalDuration(s?.ackTimeoutMs), maxDeliveries: s?.maxDeliveries };
}

function fieldBytes(fields: Fields): Record<string, Buffer> {
  return Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, toBytes(v)]));
}

function message(m: EventsMessage): SubscriptionEvent {
  return { type: "message", channel: m.channel, pattern: m.pattern || undefined, payload: Buffer.from(m.payload) };
}

/** Typed calls to `rookery.v1.Events`; get it as `client.events`. */
export class EventsClient {
  /** The generated stub, for calls with options this API does not expose. */
  readonly raw: RawEventsClient;
  readonly #t: Transport;

  /** @internal Built by `Client`. */
  constructor(transport: Transport) {
    this.#t = transport;
    this.raw = transport.stub(RawEventsClient);
  }

  /** Publishes a message; returns how many server replicas received it (at most once delivery). */
  async publish(channel: string, payload: Value, options: CallOptions = {}): Promise<number> {
    const request = EventsPublishRequest.fromPartial({ channel, payload: toBytes(payload) });
    return Number((await this.#t.unary(this.raw.publish.bind(this.raw), request, options)).receivers);
  }

  /**
   * Subscribes to channels (and `*`/`?` patterns), and resolves once the subscription is live:
   * anything published after that is delivered, or reported lost by a gap event. Leave the
   * loop (or abort `options.signal`) to unsubscribe. Iteration throws a RookeryError if the
   * subscriber is cut (RESOURCE_EXHAUSTED) or the server goes away.
   */
  async subscribe(
    channels: string[],
    options: { patterns?: string[]; signal?: AbortSignal } = {},
  ): Promise<AsyncGenerator<SubscriptionEvent, void, undefined>> {
    const request = EventsSubscribeRequest.fromPartial({ channels, patterns: options.patterns ?? [], batch: true });
    const stream = messages(this.#t.serverStream(this.raw.subscribe.bind(this.raw), request, options), options.signal);
    const first = await stream.next();
    if (first.done || first.value.event?.$case !== "subscribed") {
      await stream.return();
      throw new RookeryError(Status.INTERNAL, "the subscription did not start with its confirmation");
    }
    return (async function* () {
      try {
        for await (const response of stream) {
          const event = response.event;
          if (event?.$case === "message") yield message(event.message);
          // Messages that arrive together are handed out one by one, in order.
          else if (event?.$case === "messages") for (const m of event.messages.messages) yield message(m);
          else if (event?.$case === "gap") {
            const reason = event.gap.reason === EventsGapReason.EVENTS_GAP_REASON_RECONNECTED ? "reconnected" : "slow-subscriber";
            yield { type: "gap", reason, missed: Number(event.gap.missed) };
          }
        }
      } finally {
        await stream.return();
      }
    })();
  }

  /** Appends an entry; returns its ID and whether this was a retry of an earlier append (same idempotency key). */
  async append(stream: string, fields: Fields, options: AppendOptions = {}): Promise<{ id: string; duplicate: boolean }> {
    const request = EventsAppendRequest.fromPartial({
      stream,
      fields: fieldBytes(fields),
      maxLen: BigInt(options.maxLen ?? 0),
      maxAge: optionalDuration(options.maxAgeMs),
      idempotencyKey: options.idempotencyKey ?? "",
    });
    const idempotent = options.idempotencyKey !== undefined;
    return await this.#t.unary(this.raw.append.bind(this.raw), request, { ...options, idempotent });
  }

  /**
   * Appends entries to one stream in one call, in order, all or none; returns each entry's ID
   * and whether it was a retry, in order. Each entry may carry its own idempotency key.
   */
  async appendMany(
    stream: string,
    entries: { fields: Fields; idempotencyKey?: string }[],
    options: Omit<AppendOptions, "idempotencyKey"> = {},
  ): Promise<{ id: string; duplicate: boolean }[]> {
    const request = EventsAppendManyRequest.fromPartial({
      stream,
      entries: entries.map((e) => ({ fields: fieldBytes(e.fields), idempotencyKey: e.idempotencyKey ?? "" })),
      maxLen: BigInt(options.maxLen ?? 0),
      maxAge: optionalDuration(options.maxAgeMs),
    });
    const idempotent = entries.every((e) => e.idempotencyKey !== undefined);
    return (await this.#t.unary(this.raw.appendMany.bind(this.raw), request, { ...options, idempotent })).appended;
  }

  /**
   * Reads a stream's entries in order: from the start (`after` unset), after an entry ID
   * (resume), or only new ones (`"$"`); with `follow`, keeps delivering new entries as they
   * are appended (read only as fast as the loop takes them); with `deadLetters`, reads the
   * stream's dead letters (with `rookery.id`, `rookery.group`, `rookery.deliveries`,
   * `rookery.reason` fields).
   */
  async *read(
    stream: string,
    options: { after?: string; follow?: boolean; deadLetters?: boolean; signal?: AbortSignal } = {},
  ): AsyncGenerator<StreamEntry, void, undefined> {
    const request = EventsReadRequest.fromPartial({
      stream,
      after: options.after ?? "",
      follow: options.follow ?? false,
      deadLetters: options.deadLetters ?? false,
    });
    const call = this.#t.serverStream(this.raw.read.bind(this.raw), request, options);
    for await (const batch of messages(call, options.signal)) {
      for (const e of batch.entries) yield { id: e.id, fields: fieldBuffers(e.fields) };
    }
  }

  /**
   * Creates a consumer group at the first entry (`start` unset), at new entries (`"$"`) or
   * after an entry ID; ALREADY_EXISTS if it exists.
   */
  async createGroup(
    stream: string,
    group: string,
    options: CallOptions & { start?: string; settings?: GroupSettings } = {},
  ): Promise<void> {
    const request = EventsCreateGroupRequest.fromPartial({
      stream,
      group,
      start: options.start ?? "",
      settings: groupSettings(options.settings),
    });
    await this.#t.unary(this.raw.createGroup.bind(this.raw), request, options);
  }

  /** Deletes a consumer group with its pending entries; false when there was none. */
  async deleteGroup(stream: string, group: string, options: CallOptions = {}): Promise<boolean> {
    const request = EventsDeleteGroupRequest.fromPartial({ stream, group });
    return (await this.#t.unary(this.raw.deleteGroup.bind(this.raw), request, options)).deleted;
  }

  /** Acknowledges entries of a group (its own call); returns how many were pending. */
  async ack(stream: string, group: string, ids: string[], options: CallOptions = {}): Promise<number> {
    const request = EventsAckRequest.fromPartial({ stream, group, ids });
    // Acking twice counts once: safe to retry.
    return Number((await this.#t.unary(this.raw.ack.bind(this.raw), request, { ...options, idempotent: true })).acked);
  }

  /** Gives entries pending for `consumer` back for delivery after `delayMs`; counts requeued and dead-lettered. */
  async nack(
    stream: string,
    group: string,
    consumer: string,
    ids: string[],
    delayMs = 0,
    options: CallOptions = {},
  ): Promise<{ requeued: number; deadLettered: number }> {
    const request = EventsNackRequest.fromPartial({ stream, group, consumer, ids, delay: toDuration(delayMs) });
    const r = await this.#t.unary(this.raw.nack.bind(this.raw), request, options);
    return { requeued: Number(r.requeued), deadLettered: Number(r.deadLettered) };
  }

  /** Describes a stream: length, dead letters, and each group's pending entries, lag and consumers. */
  async describe(stream: string, options: CallOptions = {}): Promise<EventsDescribeStreamResponse> {
    const request = EventsDescribeStreamRequest.fromPartial({ stream });
    return await this.#t.unary(this.raw.describeStream.bind(this.raw), request, { ...options, idempotent: true });
  }

  /** Starts consuming as `consumer` of `group` (one ConsumeWithAcks call), and resolves once the server confirmed it. */
  async consume(stream: string, group: string, consumer: string, options: ConsumeOptions = {}): Promise<Consumer> {
    options.signal?.throwIfAborted();
    const call: ClientDuplexStream<EventsConsumeWithAcksRequest, EventsConsumeResponse> = this.raw.consumeWithAcks(this.#t.metadata());
    const start = EventsConsumeRequest.fromPartial({
      stream,
      group,
      consumer,
      createGroup: options.createGroup ?? false,
      settings: groupSettings(options.settings),
      maxInFlight: options.maxInFlight ?? 0,
    });
    // Closing the request side would stop nothing (see events.proto), so it stays open for acks.
    call.write({ message: { $case: "start", start } });
    const first = await firstMessage(call, options.signal);
    const settings: ConsumerSettings = startedSettings(first);
    const nack = (ids: string[], delayMs: number) => this.nack(stream, group, consumer, ids, delayMs);
    const live = new Consumer(call, settings, nack);
    // The signal stops the consumer quietly (iteration ends), and is let go with the call.
    const { signal } = options;
    if (signal) {
      const onAbort = () => live.close();
      signal.addEventListener("abort", onAbort, { once: true });
      call.once("close", () => signal.removeEventListener("abort", onAbort));
    }
    call.resume();
    return live;
  }

  /**
   * Consumes with `handler`, one entry at a time in delivery order: entries it finishes are
   * acknowledged, entries it throws on are given back for delivery after `retryDelayMs` (and
   * reach the dead letters after the group's delivery limit). Each batch is settled after its
   * last entry (acks on the consumer's call, one Nack call).
   *
   * Runs until `options.signal` aborts (then resolves). When the server or Redis is
   * unavailable (a restart, a replica shutting down) it starts consuming again with backoff,
   * getting back first the entries it had not settled. It rejects only with an error that
   * retrying cannot fix: the group was deleted, bad arguments, or ABORTED when another call
   * took the consumer name over (two instances share one name). The handler logs its own
   * errors: here a throw only means "deliver this entry again".
   */
  async process(
    stream: string,
    group: string,
    consumer: string,
    handler: (delivery: Delivery) => Promise<void> | void,
    options: ProcessOptions = {},
  ): Promise<void> {
    const { signal } = options;
    let backoff = RETRY_MIN_MS;
    while (!signal?.aborted) {
      let started = false;
      try {
        await this.#processOnce(stream, group, consumer, handler, options, () => (started = true));
      } catch (error) {
        if (signal?.aborted) break;
        const code = error instanceof RookeryError ? error.code : Status.UNKNOWN;
        // UNAVAILABLE: the server or Redis is restarting. Anything else (ABORTED: another
        // live call took this consumer name over) is the caller's to fix.
        if (code !== Status.UNAVAILABLE && code !== Status.UNKNOWN) throw error;
      }
      if (started) backoff = RETRY_MIN_MS;
      await sleep(backoff, signal).catch(() => undefined);
      backoff = Math.min(backoff * 2, RETRY_MAX_MS);
    }
  }

  /** One consumer's life for `process`; `onStart` tells that it got going. */
  async #processOnce(
    stream: string,
    group: string,
    name: string,
    handler: (delivery: Delivery) => Promise<void> | void,
    options: ProcessOptions,
    onStart: () => void,
  ): Promise<void> {
    const consumer = await this.consume(stream, group, name, options);
    try {
      onStart();
      const retryDelayMs = Math.min(options.retryDelayMs ?? 0, consumer.settings.ackTimeoutMs);
      // A slow batch acks as it goes, well within the ack timeout of its first entries.
      const flushEveryMs = consumer.settings.ackTimeoutMs / 4;
      for await (const batch of consumer) {
        let done: string[] = [];
        const failed: string[] = [];
        let sinceFlush = Date.now();
        for (const delivery of batch.entries) {
          if (options.signal?.aborted) return;
          try {
            await handler(delivery);
            done.push(delivery.id);
          } catch {
            failed.push(delivery.id);
          }
          if (done.length > 0 && Date.now() - sinceFlush >= flushEveryMs) {
            await consumer.ack(done);
            done = [];
            sinceFlush = Date.now();
          }
        }
        if (done.length > 0) await consumer.ack(done);
        if (failed.length > 0) await consumer.nack(failed, retryDelayMs);
      }
    } finally {
      consumer.close();
    }
  }
}
