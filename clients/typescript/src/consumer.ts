// A consumer of a group on one ConsumeWithAcks call (client/src/events.rs's `Consumer`): its
// deliveries as an async iterator, and acks that travel on the same call, answered in order.
// The call is read as messages arrive, whether or not the caller is iterating, so an ack
// awaited before the next batch is taken still gets its answer (the server's in-flight bound
// caps what queues meanwhile).
import type { ClientDuplexStream } from "@grpc/grpc-js";

import { RookeryError, Status } from "./errors.js";
import type {
  EventsConsumeResponse,
  EventsConsumeWithAcksRequest,
  EventsDelivery,
} from "./gen/rookery/v1/events.js";
import { fromDuration } from "./time.js";

/** An entry delivered to a consumer. */
export interface Delivery {
  /** The entry's ID: acknowledge it with `consumer.ack`. */
  id: string;
  /** Its fields (Buffers: `.toString()` decodes UTF-8). */
  fields: Record<string, Buffer>;
  /** How many times it has been delivered, this time included. */
  deliveries: number;
}

/** Entries delivered together. */
export interface Deliveries {
  /** The entries, in the order to process them. */
  entries: Delivery[];
  /** Entries that were pending but had been trimmed from the stream: they are gone. */
  trimmed: number;
}

/** The settings a consumer runs with, as the server confirmed them. */
export interface ConsumerSettings {
  /** The group's ack timeout, in ms. */
  ackTimeoutMs: number;
  /** The group's delivery limit (0: none). */
  maxDeliveries: number;
  /** The in-flight bound in effect. */
  maxInFlight: number;
}

/** Gives entries back (the Nack call); built by EventsClient for its consumer. */
export type NackFn = (ids: string[], delayMs: number) => Promise<{ requeued: number; deadLettered: number }>;

/** Fields as Buffers. */
export function fieldBuffers(fields: Record<string, Uint8Array>): Record<string, Buffer> {
  return Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, Buffer.from(v.buffer, v.byteOffset, v.byteLength)]));
}

function delivery(d: EventsDelivery): Delivery {
  return { id: d.id, fields: fieldBuffers(d.fields), deliveries: Number(d.deliveries) };
}

/**
 * A live consumer of a group: `for await (const batch of consumer)` yields Deliveries. The
 * server sends the next batch only while fewer than `maxInFlight` entries are unacknowledged,
 * so ack (or nack) what you finish. Iteration ends with a RookeryError if the group is deleted
 * or the call fails, and ends quietly when the server ends the call. `close()` (or leaving an
 * `await using` block) stops the consumer: entries it had not acknowledged come back first to
 * this consumer name when it consumes again, and to others after the ack timeout.
 */
export class Consumer implements AsyncIterable<Deliveries>, AsyncDisposable {
  /** The settings it runs with. */
  readonly settings: ConsumerSettings;
  readonly #call: ClientDuplexStream<EventsConsumeWithAcksRequest, EventsConsumeResponse>;
  readonly #nack: NackFn;
  /** Acks sent and not answered yet, oldest first. */
  readonly #awaited: { resolve: (acked: number) => void; reject: (error: RookeryError) => void }[] = [];
  /** The status the call ended with: every later ack fails with it. */
  #ended: RookeryError | null = null;
  /** Batches received and not yet taken, and a taker waiting for one. */
  readonly #batches: Deliveries[] = [];
  #failure: RookeryError | null = null;
  #finished = false;
  #wake: (() => void) | null = null;

  /** @internal Built by `EventsClient.consume` once the server confirmed the consumer. */
  constructor(
    call: ClientDuplexStream<EventsConsumeWithAcksRequest, EventsConsumeResponse>,
    settings: ConsumerSettings,
    nack: NackFn,
  ) {
    this.#call = call;
    this.settings = settings;
    this.#nack = nack;
    call.on("data", (message: EventsConsumeResponse) => {
      const event = message.event;
      if (event?.$case === "deliveries") {
        this.#batches.push({ entries: event.deliveries.deliveries.map(delivery), trimmed: Number(event.deliveries.trimmed) });
        this.#notify();
      } else if (event?.$case === "acked") {
        this.#awaited.shift()?.resolve(Number(event.acked.acked));
      }
    });
    // A failed ack ends the call too: the acks awaiting an answer get its status.
    call.on("error", (error) => this.#end(RookeryError.from(error), true));
    call.on("end", () =>
      this.#end(
        new RookeryError(Status.UNAVAILABLE, "the consumer's call has ended; unacknowledged entries come back after the ack timeout"),
        false,
      ),
    );
  }

  #notify(): void {
    this.#wake?.();
    this.#wake = null;
  }

  #end(status: RookeryError, failed: boolean): void {
    if (this.#ended) return;
    this.#ended = status;
    for (const answer of this.#awaited.splice(0)) answer.reject(status);
    if (failed) this.#failure = status;
    this.#finished = true;
    this.#notify();
  }

  /**
   * Acknowledges entries; resolves to how many were pending. Acks travel on the consumer's own
   * call and are answered in order. A failed ack ends the call, and once it has ended every
   * ack rejects with the status it ended with: the entries stay pending, and come back first
   * to this consumer name when it consumes again.
   */
  ack(ids: string[]): Promise<number> {
    if (this.#ended) return Promise.reject(this.#ended);
    return new Promise<number>((resolve, reject) => {
      this.#awaited.push({ resolve, reject });
      this.#call.write({ message: { $case: "ack", ack: { ids } } });
    });
  }

  /**
   * Gives entries back for delivery after `delayMs` (at most the ack timeout); resolves to how
   * many were requeued and how many moved to the dead letters.
   */
  nack(ids: string[], delayMs = 0): Promise<{ requeued: number; deadLettered: number }> {
    return this.#nack(ids, delayMs);
  }

  /** Stops consuming (cancels the call). */
  close(): void {
    this.#call.cancel();
    this.#end(new RookeryError(Status.CANCELLED, "the consumer was closed"), false);
  }

  /** Closes the consumer at the end of an `await using` block. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }

  /** The batches, in delivery order. */
  async *[Symbol.asyncIterator](): AsyncIterator<Deliveries> {
    for (;;) {
      const batch = this.#batches.shift();
      if (batch) {
        yield batch;
        continue;
      }
      if (this.#finished) {
        if (this.#failure) throw this.#failure;
        return;
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }
}

/** Reads the confirmation that starts a consumer's call: its settings. */
export function startedSettings(message: EventsConsumeResponse | null): ConsumerSettings {
  const event = message?.event;
  if (event?.$case !== "started") {
    throw new RookeryError(Status.INTERNAL, "the consumer did not start with its confirmation");
  }
  return {
    ackTimeoutMs: fromDuration(event.started.ackTimeout),
    maxDeliveries: event.started.maxDeliveries,
    maxInFlight: event.started.maxInFlight,
  };
}
