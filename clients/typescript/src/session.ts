// The Session service's typed client, with helpers that read and write attributes as JSON.
// Mirrors client/src/session.rs. Session IDs are secrets: nothing here logs them, and neither
// should callers.
import { createHash } from "node:crypto";
import { Buffer } from "node:buffer";

import { toBytes } from "./cache.js";
import { RookeryError, Status } from "./errors.js";
import {
  SessionClient as RawSessionClient,
  SessionCreateRequest,
  SessionDeleteBySubjectRequest,
  SessionDeleteRequest,
  SessionGetRequest,
  SessionListBySubjectRequest,
  SessionRotateRequest,
  SessionUpdateRequest,
} from "./gen/rookery/v1/session.js";
import { optionalDuration } from "./time.js";
import type { CallOptions, Transport } from "./transport.js";

/** Attributes: names to bytes (Buffers when read: `.toString()` decodes UTF-8). */
export type Attributes = Record<string, Buffer>;

/** How a new session expires, and its first attributes. */
export interface SessionOptions extends CallOptions {
  /** Attributes (see `jsonAttributes` to build them from values). */
  attributes?: Record<string, Uint8Array | string>;
  /** Inactivity after which it ends, ms (server default: 30 min). */
  idleTimeoutMs?: number;
  /** Age after which it ends however active, ms (server default: 12 h). */
  absoluteTimeoutMs?: number;
  /** Cap on the subject's live sessions for this call (server default when unset). */
  maxSessions?: number;
}

/** A created session. */
export interface CreatedSession {
  /** Its ID: hand it to the end user (e.g. in a Secure, HttpOnly cookie); never log it. */
  id: string;
  /** When it ends if unused. */
  idleExpiresAt: Date;
  /** When it ends at the latest. */
  absoluteExpiresAt: Date;
  /** How many of the subject's sessions were evicted to respect its cap. */
  evicted: number;
}

/** A session as listed for its subject (never its ID). */
export interface SessionSummary {
  /** Compare with `sessionHint(id)` to recognise a session ("this device"). */
  hint: string;
  /** When it was created. */
  createdAt: Date;
  /** When it ends if unused. */
  idleExpiresAt: Date;
  /** When it ends at the latest. */
  absoluteExpiresAt: Date;
}

const EPOCH = new Date(0);

/** A stored session. */
export class Session {
  /** Whom it belongs to. */
  readonly subject: string;
  /** Its attributes. */
  readonly attributes: Attributes;
  /** Incremented by every update: pass it to `SessionUpdate.ifVersion` for a safe read-modify-write. */
  readonly version: bigint;
  /** When it was created. */
  readonly createdAt: Date;
  /** When it ends if unused from now. */
  readonly idleExpiresAt: Date;
  /** When it ends at the latest. */
  readonly absoluteExpiresAt: Date;

  /** @internal Built from the server's answer. */
  constructor(fields: Omit<Session, "json" | "text">) {
    this.subject = fields.subject;
    this.attributes = fields.attributes;
    this.version = fields.version;
    this.createdAt = fields.createdAt;
    this.idleExpiresAt = fields.idleExpiresAt;
    this.absoluteExpiresAt = fields.absoluteExpiresAt;
  }

  /** Attribute `name` decoded from JSON; undefined if absent (throws SyntaxError if not JSON). */
  json<T = unknown>(name: string): T | undefined {
    const bytes = this.attributes[name];
    return bytes === undefined ? undefined : (JSON.parse(Buffer.from(bytes).toString("utf8")) as T);
  }

  /** Attribute `name` as UTF-8 text; undefined if absent. */
  text(name: string): string | undefined {
    const bytes = this.attributes[name];
    return bytes === undefined ? undefined : Buffer.from(bytes).toString("utf8");
  }
}

/** Attribute changes for `update`, built with JSON or raw values. */
export class SessionUpdate {
  /** Attributes to add or overwrite. */
  readonly set: Attributes = {};
  /** Attribute names to remove (applied before `set`). */
  readonly remove: string[] = [];
  /** Apply only if the session is still at this version (else ABORTED). */
  expectedVersion: bigint | undefined;

  /** Sets attribute `name` to bytes (a string is stored as UTF-8). */
  setBytes(name: string, value: Uint8Array | string): this {
    this.set[name] = toBytes(value);
    return this;
  }

  /** Sets attribute `name` to `value` as JSON. */
  setJson(name: string, value: unknown): this {
    return this.setBytes(name, JSON.stringify(value));
  }

  /** Removes attribute `name`. */
  delete(name: string): this {
    this.remove.push(name);
    return this;
  }

  /** Applies only if the session is still at `version` (else the call fails with ABORTED). */
  ifVersion(version: bigint): this {
    this.expectedVersion = version;
    return this;
  }
}

/** The hint `listBySubject` shows for the session with this ID. */
export function sessionHint(id: string): string {
  return createHash("sha256").update(id, "utf8").digest("base64url").slice(0, 8);
}

/** Encodes each value as JSON, for `SessionOptions.attributes`. */
export function jsonAttributes(values: Record<string, unknown>): Attributes {
  return Object.fromEntries(Object.entries(values).map(([k, v]) => [k, Buffer.from(JSON.stringify(v), "utf8")]));
}

/** Typed calls to `rookery.v1.Session`; get it as `client.session`. */
export class SessionClient {
  /** The generated stub, for calls with options this API does not expose. */
  readonly raw: RawSessionClient;
  readonly #t: Transport;

  /** @internal Built by `Client`. */
  constructor(transport: Transport) {
    this.#t = transport;
    this.raw = transport.stub(RawSessionClient);
  }

  /** Creates a session for `subject`. */
  async create(subject: string, options: SessionOptions = {}): Promise<CreatedSession> {
    const request = SessionCreateRequest.fromPartial({
      subject,
      attributes: Object.fromEntries(Object.entries(options.attributes ?? {}).map(([k, v]) => [k, toBytes(v)])),
      idleTimeout: optionalDuration(options.idleTimeoutMs),
      absoluteTimeout: optionalDuration(options.absoluteTimeoutMs),
      maxSessions: options.maxSessions ?? 0,
    });
    const r = await this.#t.unary(this.raw.create.bind(this.raw), request, options);
    return {
      id: r.id,
      idleExpiresAt: r.idleExpiresAt ?? EPOCH,
      absoluteExpiresAt: r.absoluteExpiresAt ?? EPOCH,
      evicted: r.evicted,
    };
  }

  /** Reads a session (`null` if unknown, expired or revoked); `touch` slides its idle expiry. */
  async get(id: string, options: CallOptions & { touch?: boolean } = {}): Promise<Session | null> {
    try {
      const request = SessionGetRequest.fromPartial({ id, touch: options.touch ?? false });
      const r = await this.#t.unary(this.raw.get.bind(this.raw), request, { ...options, idempotent: true });
      const s = r.session;
      return new Session({
        subject: s?.subject ?? "",
        attributes: s?.attributes ?? {},
        version: s?.version ?? 0n,
        createdAt: s?.createdAt ?? EPOCH,
        idleExpiresAt: s?.idleExpiresAt ?? EPOCH,
        absoluteExpiresAt: s?.absoluteExpiresAt ?? EPOCH,
      });
    } catch (error) {
      if (RookeryError.hasCode(error, Status.NOT_FOUND)) return null;
      throw error;
    }
  }

  /** Applies attribute changes; returns the new version. ABORTED when `ifVersion` no longer holds. */
  async update(id: string, update: SessionUpdate, options: CallOptions = {}): Promise<bigint> {
    const request = SessionUpdateRequest.fromPartial({
      id,
      set: update.set,
      remove: update.remove,
      expectedVersion: update.expectedVersion,
    });
    return (await this.#t.unary(this.raw.update.bind(this.raw), request, options)).version;
  }

  /** Gives the session a new ID (after login, against fixation); the old one keeps working for `graceMs`. */
  async rotate(id: string, options: CallOptions & { graceMs?: number } = {}): Promise<string> {
    const request = SessionRotateRequest.fromPartial({ id, grace: optionalDuration(options.graceMs) });
    return (await this.#t.unary(this.raw.rotate.bind(this.raw), request, options)).id;
  }

  /** Ends a session; false if there was none. */
  async delete(id: string, options: CallOptions = {}): Promise<boolean> {
    return (await this.#t.unary(this.raw.delete.bind(this.raw), SessionDeleteRequest.fromPartial({ id }), options)).deleted;
  }

  /** A subject's live sessions, most recently active first. */
  async listBySubject(subject: string, options: CallOptions = {}): Promise<SessionSummary[]> {
    const request = SessionListBySubjectRequest.fromPartial({ subject });
    const r = await this.#t.unary(this.raw.listBySubject.bind(this.raw), request, { ...options, idempotent: true });
    return r.sessions.map((s) => ({
      hint: s.hint,
      createdAt: s.createdAt ?? EPOCH,
      idleExpiresAt: s.idleExpiresAt ?? EPOCH,
      absoluteExpiresAt: s.absoluteExpiresAt ?? EPOCH,
    }));
  }

  /** Ends every session of a subject ("log out everywhere"); returns how many. */
  async deleteBySubject(subject: string, options: CallOptions = {}): Promise<number> {
    const request = SessionDeleteBySubjectRequest.fromPartial({ subject });
    return (await this.#t.unary(this.raw.deleteBySubject.bind(this.raw), request, options)).deleted;
  }
}
