/**
 * The wire shape of the generic entity-call route, shared by the node (src/http/entity-calls.ts)
 * and the outside client (src/client/). Plain constants and types only: the client imports
 * this without Fastify.
 *
 * `POST /entity-calls/:kind/:id/:method` with body `{"message": <JSON>}` answers 200
 * `{"reply": <JSON>}` with `Concord-Owner`. A call without a message may leave out the key, or
 * send no body at all (what the client does: nothing to parse on either side).
 *
 * `POST /entity-calls` with body `{"calls": [{"kind","id","method","message"?,"key"?,
 * "deadlineMs"?}, …]}` (1..MAX_BATCH_CALLS calls) runs every call as if sent alone to this node,
 * with the request's `Concord-Route` applying to each (`key`: the call's idempotency key;
 * `deadlineMs`: its deadline, else the request's `Concord-Deadline-Ms`). It answers 200
 * `application/x-ndjson`: one line per call, written as soon as that call is done (so a slow
 * handler holds up no other call's answer), in any order, each naming its call's index `i`.
 * Each line is what the call alone would have answered, with its HTTP status as a field:
 * `{"i":0,"status":200,"reply"?,"owner"?}`, `{"i":1,"status":421,"code":"MOVED",…}`,
 * `{"i":2,"status":503|504|…,"error",…}`. A malformed body is answered 400 (plain JSON) as a
 * whole, and then no call ran.
 */

import { ID_MAX_LENGTH, ID_PATTERN, ID_RULE } from './schemas.js';

export const ENTITY_CALLS_PATH = '/entity-calls';

/** `direct`: the caller believes this node owns the entity; a node that does not answers MOVED instead of forwarding. */
export const ROUTE_HEADER = 'concord-route';
export const ROUTE_DIRECT = 'direct';

/** The call's remaining deadline in whole milliseconds (1..600000); the node's default when absent. */
export const DEADLINE_HEADER = 'concord-deadline-ms';
export const MAX_DEADLINE_MS = 600_000;

/** The node that owns the entity (as the answering node sees it). */
export const OWNER_HEADER = 'concord-owner';

/** 421 Misdirected Request: nothing ran, the owner is elsewhere. Always safe to retry. */
export const MOVED_STATUS = 421;

export interface EntityCallBody {
  message?: unknown;
}

export interface EntityCallAnswer {
  /** The handler's reply; absent when it returned undefined. */
  reply?: unknown;
}

export type MovedAnswer = {
  error: string;
  code: 'MOVED';
  maybeApplied: false;
  shard: number;
  /** The owner as the answering node knows it (null while the shard has none). */
  owner: string | null;
  epoch: number;
  /** The owner's HTTP base URL, when the answering node knows it. */
  ownerUrl: string | null;
};

/** Most calls in one batch. */
export const MAX_BATCH_CALLS = 1000;

export interface BatchCall {
  kind: string;
  id: string;
  method: string;
  /** The message; absent for a call without one. */
  message?: unknown;
  /** The call's idempotency key (1-255 printable ASCII characters). */
  key?: string;
  /** The call's own remaining deadline (1..MAX_DEADLINE_MS); else the request's header, else the node's default. */
  deadlineMs?: number;
}

const BATCH_CALL_FIELDS = new Set(['kind', 'id', 'method', 'message', 'key', 'deadlineMs']);
const ID_REGEX = new RegExp(ID_PATTERN);
/** What the `Idempotency-Key` header allows: 1-255 printable ASCII characters. */
const BATCH_KEY = /^[\x20-\x7E]{1,255}$/;

/**
 * What is wrong with one call of a batch, or null. The node refuses a batch with any such call
 * (400, nothing run); the client sends a call that has one alone, so that only it fails.
 */
export function batchCallProblem(call: unknown): string | null {
  if (typeof call !== 'object' || call === null || Array.isArray(call)) return 'must be an object';
  for (const field of Object.keys(call)) {
    if (!BATCH_CALL_FIELDS.has(field)) return `has an unknown field "${field}"`;
  }
  const { kind, id, method, key, deadlineMs } = call as Record<string, unknown>;
  if (typeof kind !== 'string' || kind.length < 1 || kind.length > 64)
    return '.kind must be a string of 1-64 characters';
  if (typeof id !== 'string' || id.length > ID_MAX_LENGTH || !ID_REGEX.test(id)) return `.id must be ${ID_RULE}`;
  if (typeof method !== 'string' || method.length < 1 || method.length > 200) {
    return '.method must be a string of 1-200 characters';
  }
  if (key !== undefined && (typeof key !== 'string' || !BATCH_KEY.test(key))) {
    return '.key must be 1-255 printable ASCII characters';
  }
  if (
    deadlineMs !== undefined &&
    (typeof deadlineMs !== 'number' || !Number.isInteger(deadlineMs) || deadlineMs < 1 || deadlineMs > MAX_DEADLINE_MS)
  ) {
    return `.deadlineMs must be a whole number of milliseconds, 1-${MAX_DEADLINE_MS}`;
  }
  return null;
}

/** One call's answer in a batch: its status, and the body it would have had alone (with `owner` on 200). */
export type BatchResult = { status: number; reply?: unknown; owner?: string | null } & Record<string, unknown>;

/** One line of a batch's answer: a call's result and the call's index in the batch. */
export type BatchLine = BatchResult & { i: number };

export const BATCH_CONTENT_TYPE = 'application/x-ndjson';

export function entityCallPath(kind: string, id: string, method: string): string {
  return `${ENTITY_CALLS_PATH}/${encodeURIComponent(kind)}/${encodeURIComponent(id)}/${encodeURIComponent(method)}`;
}
