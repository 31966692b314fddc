/**
 * The wire shape of the generic entity-call route, shared by the node (src/http/entity-calls.ts)
 * and the outside client (src/client/). Plain constants and types only: the client imports
 * this without Fastify.
 *
 * `POST /entity-calls/:kind/:id/:method` with body `{"message": <JSON>}` answers 200
 * `{"reply": <JSON>}` with `Concord-Owner`. A call without a message may leave out the key, or
 * send no body at all (what the client does: nothing to parse on either side).
 */

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

export function entityCallPath(kind: string, id: string, method: string): string {
  return `${ENTITY_CALLS_PATH}/${encodeURIComponent(kind)}/${encodeURIComponent(id)}/${encodeURIComponent(method)}`;
}
