import type { Dispatcher } from 'undici';
import {
  type BatchLine,
  batchCallProblem,
  DEADLINE_HEADER,
  ENTITY_CALLS_PATH,
  entityCallPath,
  OWNER_HEADER,
  ROUTE_DIRECT,
  ROUTE_HEADER,
} from '../http/entity-call-wire.js';
import { exchange } from './http-exchange.js';

/**
 * The calls of one client to one node. A call goes out at once, alone, while fewer than
 * MAX_IN_FLIGHT requests to the node are waiting for their answer; after that it waits for
 * one of them to come back (at most MAX_WAIT_MS), and every call that waited meanwhile goes in one batch
 * (`POST /entity-calls`, see entity-call-wire.ts). Under load, that is what shares one
 * request's HTTP work (parsing, headers, a write and a read on each side) among many calls;
 * a lone caller never waits. Each call keeps its own deadline and its own answer: a batch's
 * result for a call is what the node would have answered it alone.
 */

/** One attempt of a call, as the client's retry loop sees it. */
export interface OutgoingCall {
  kind: string;
  id: string;
  method: string;
  /** The message as JSON text (undefined: no message). */
  messageJson: string | undefined;
  key: string | undefined;
  /** performance.now() by which the call must be answered. */
  deadline: number;
  /** The client believes this node owns the entity (`Concord-Route: direct`). */
  direct: boolean;
}

/** A call's answer: its HTTP status, its parsed body (null when empty), and the owner hint. */
export interface CallAnswer {
  status: number;
  body: unknown;
  owner: string | undefined;
}

/** Requests to one node that may be waiting for their answer before calls wait to be batched. */
const MAX_IN_FLIGHT = 2;
/**
 * Longest a call waits for a request in flight to be answered: then the calls waiting go anyway
 * (two slow handlers must not hold up every other call to their node).
 */
const MAX_WAIT_MS = 2;
/** Most calls in one batch (the node accepts up to MAX_BATCH_CALLS). */
const BATCH_SIZE = 256;
/**
 * Most bytes of calls in one batch: half the node's default body limit (64 KiB), so that a
 * batch of calls that would each pass alone is not refused as too large.
 */
const BATCH_BYTES = 32 * 1024;
/**
 * The node is told a deadline a little shorter than the call's, and the request is abandoned a
 * little after it, so that a node's own 503/504 arrives rather than a client-side abort.
 */
export const ABORT_GRACE_MS = 25;
/** Calls whose deadlines differ by more than this do not share a batch (its answer waits for the slowest). */
const DEADLINE_SPREAD_MS = 100;
const JSON_HEADERS = { 'content-type': 'application/json' } as const;

interface Waiting {
  call: OutgoingCall;
  resolve: (answer: CallAnswer) => void;
  reject: (error: unknown) => void;
}

export interface BatchStats {
  /** Batch requests sent, and the calls they carried. */
  batches: number;
  batchedCalls: number;
}

export class NodeCalls {
  private inFlight = 0;
  private waiting: Waiting[] = [];
  /** Set while calls wait: sends them after MAX_WAIT_MS whatever is in flight. */
  private waitTimer: NodeJS.Timeout | null = null;
  /** The node answered a batch with 404/405 (a version without the batch route): calls go alone. */
  private batchesRefused = false;

  constructor(
    private readonly dispatcher: Dispatcher,
    private readonly stats: BatchStats,
  ) {}

  send(call: OutgoingCall): Promise<CallAnswer> {
    if (this.inFlight < MAX_IN_FLIGHT || !call.direct || this.batchesRefused || batchCallProblem(wireCall(call))) {
      return this.alone(call);
    }
    this.waitTimer ??= setTimeout(() => {
      this.waitTimer = null;
      this.flush(true);
    }, MAX_WAIT_MS);
    return new Promise<CallAnswer>((resolve, reject) => {
      this.waiting.push({ call, resolve, reject });
    });
  }

  private alone(call: OutgoingCall): Promise<CallAnswer> {
    const remaining = call.deadline - performance.now();
    const headers: Record<string, string> = {
      ...(call.messageJson === undefined ? {} : JSON_HEADERS),
      [DEADLINE_HEADER]: String(nodeDeadline(remaining)),
    };
    if (call.direct) headers[ROUTE_HEADER] = ROUTE_DIRECT;
    if (call.key !== undefined) headers['idempotency-key'] = quoteKey(call.key);
    // No message, no body (and no JSON to write or parse on either side).
    const body = call.messageJson === undefined ? null : `{"message":${call.messageJson}}`;
    // In flight until answered; then what waited meanwhile goes.
    const release = this.hold();
    return exchange(
      this.dispatcher,
      { method: 'POST', path: entityCallPath(call.kind, call.id, call.method), headers, body },
      Math.ceil(remaining) + ABORT_GRACE_MS,
      OWNER_HEADER,
    )
      .then((answer) => ({
        status: answer.status,
        body: answer.text.length > 0 ? JSON.parse(answer.text) : null,
        owner: answer.header,
      }))
      .finally(release);
  }

  /** A place in flight; the function given back frees it (once) and sends what waited. */
  private hold(): () => void {
    this.inFlight++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.inFlight--;
      this.flush();
    };
  }

  /** Send the calls that wait, as far as MAX_IN_FLIGHT allows (all of them when `now`). */
  private flush(now = false): void {
    while (this.waiting.length > 0 && (now || this.inFlight < MAX_IN_FLIGHT)) {
      // The first waiting call, and those after it with a deadline close to its own.
      const first = this.waiting[0]!.call.deadline;
      const batch: Waiting[] = [];
      const rest: Waiting[] = [];
      let bytes = 0;
      for (const entry of this.waiting) {
        const size = sizeOf(entry.call);
        if (
          batch.length < BATCH_SIZE &&
          (batch.length === 0 || bytes + size <= BATCH_BYTES) &&
          Math.abs(entry.call.deadline - first) <= DEADLINE_SPREAD_MS
        ) {
          batch.push(entry);
          bytes += size;
        } else {
          rest.push(entry);
        }
      }
      this.waiting = rest;
      if (batch.length === 1) {
        const only = batch[0]!;
        this.alone(only.call).then(only.resolve, only.reject);
      } else {
        this.sendBatch(batch);
      }
    }
    if (this.waiting.length === 0 && this.waitTimer !== null) {
      clearTimeout(this.waitTimer);
      this.waitTimer = null;
    }
  }

  private sendBatch(batch: Waiting[]): void {
    this.stats.batches++;
    this.stats.batchedCalls += batch.length;
    const now = performance.now();
    let longest = 0;
    const parts: string[] = [];
    for (const { call } of batch) {
      const remaining = call.deadline - now;
      longest = Math.max(longest, remaining);
      let part = `{"kind":${JSON.stringify(call.kind)},"id":${JSON.stringify(call.id)},"method":${JSON.stringify(call.method)},"deadlineMs":${nodeDeadline(remaining)}`;
      if (call.messageJson !== undefined) part += `,"message":${call.messageJson}`;
      if (call.key !== undefined) part += `,"key":${JSON.stringify(call.key)}`;
      parts.push(`${part}}`);
    }
    let answered = 0;
    const done = new Array<boolean>(batch.length).fill(false);
    // The request holds its place in flight until its first line: from then on the node is
    // answering it, and calls that wait may go (a slow call in it holds up nothing).
    let release: (() => void) | null = this.hold();
    const onLine = (line: string) => {
      let result: BatchLine;
      try {
        result = JSON.parse(line) as BatchLine;
      } catch {
        return; // Not a line of ours: its call stays unanswered, and fails when the answer ends.
      }
      const entry = batch[result.i];
      if (entry === undefined || done[result.i]) return;
      done[result.i] = true;
      answered++;
      const owner = result.status === 200 && typeof result.owner === 'string' ? result.owner : undefined;
      entry.resolve({ status: result.status, body: result, owner });
      release?.();
      release = null;
    };
    exchange(
      this.dispatcher,
      {
        method: 'POST',
        path: ENTITY_CALLS_PATH,
        headers: { ...JSON_HEADERS, [ROUTE_HEADER]: ROUTE_DIRECT },
        body: `{"calls":[${parts.join(',')}]}`,
      },
      Math.ceil(longest) + ABORT_GRACE_MS,
      OWNER_HEADER,
      onLine,
    )
      .then(
        (answer) => {
          if (answer.status === 200) {
            if (answered < batch.length) {
              // The answer ended without some calls' lines (the node stopped mid-way): their outcome is unknown.
              const error = new Error('the batch answer ended before this call was answered');
              batch.forEach((entry, i) => {
                if (!done[i]) entry.reject(error);
              });
            }
          } else if (answer.status === 404 || answer.status === 405 || answer.status === 413) {
            // A node without the batch route (404/405: from now on calls go alone), or a batch
            // over a node's smaller body limit: nothing ran; every call goes again, alone.
            if (answer.status !== 413) this.batchesRefused = true;
            for (const entry of batch) this.alone(entry.call).then(entry.resolve, entry.reject);
          } else {
            // The whole request was refused (a 503 while the node stops…): each call gets that answer.
            const body = parseOrNull(answer.text);
            for (const entry of batch) entry.resolve({ status: answer.status, body, owner: undefined });
          }
        },
        (error: unknown) => {
          batch.forEach((entry, i) => {
            if (!done[i]) entry.reject(error);
          });
        },
      )
      .finally(() => {
        release?.();
        release = null;
      });
  }
}

/** About the bytes a call takes in a batch body. */
function sizeOf(call: OutgoingCall): number {
  return (
    80 +
    call.kind.length +
    call.id.length +
    call.method.length +
    (call.messageJson?.length ?? 0) +
    (call.key?.length ?? 0)
  );
}

function parseOrNull(text: string): unknown {
  try {
    return text.length > 0 ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/** The deadline a node is told: a little less than the call's remaining time (at least 1 ms). */
function nodeDeadline(remaining: number): number {
  return Math.max(1, Math.floor(remaining - Math.min(50, remaining / 10)));
}

/** The call as the node's batch check sees it (the message is not checked there). */
function wireCall(call: OutgoingCall): Record<string, unknown> {
  const wire: Record<string, unknown> = { kind: call.kind, id: call.id, method: call.method };
  if (call.key !== undefined) wire['key'] = call.key;
  return wire;
}

/** An Idempotency-Key header value: a Structured Field string. */
function quoteKey(key: string): string {
  return `"${key.replace(/["\\]/g, '\\$&')}"`;
}
