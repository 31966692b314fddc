import { PassThrough } from 'node:stream';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { AnyEntityDefinition } from '../entity/define.js';
import { ConcordError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { AppNode } from './app.js';
import {
  BATCH_CONTENT_TYPE,
  type BatchCall,
  type BatchResult,
  batchCallProblem,
  DEADLINE_HEADER,
  ENTITY_CALLS_PATH,
  MAX_BATCH_CALLS,
  MAX_DEADLINE_MS,
  MOVED_STATUS,
  type MovedAnswer,
  OWNER_HEADER,
  ROUTE_DIRECT,
  ROUTE_HEADER,
} from './entity-call-wire.js';
import { errorAnswer, sendError } from './errors.js';
import { idempotencyKeyOf } from './idempotency.js';
import { idSchema } from './schemas.js';

/**
 * The generic entity-call route for outside clients (`concord-cluster/client`):
 * `POST /entity-calls/:kind/:id/:method` `{"message"}` → 200 `{"reply"}` + `Concord-Owner`.
 *
 * Opt-in: only handlers that a definition (`exposed`) or the server's options mark as exposed
 * are callable; everything else answers 404 exactly like an unknown kind, so the route does not
 * tell which internal kinds exist. Errors are the HTTP layer's usual JSON answers (400, 404,
 * 422, 503, 504, 409 for a domain error).
 *
 * With `Concord-Route: direct` the caller says it believes this node owns the entity: a node
 * that does not answers 421 `{"code":"MOVED","owner","shard","epoch","ownerUrl"}` at once,
 * before anything runs, so the caller fixes its shard map and calls the owner itself (one hop
 * instead of two). Without the header the call is routed as any other (forwarded to the owner).
 */

/** Extra exposure set by the node's operator: kind → true (every handler) or handler names. */
export type ExposedEntities = Readonly<Record<string, true | readonly string[]>>;

interface Params {
  kind: string;
  id: string;
  method: string;
}

const paramsSchema = {
  type: 'object',
  required: ['kind', 'id', 'method'],
  properties: {
    kind: { type: 'string', minLength: 1, maxLength: 64 },
    id: idSchema,
    method: { type: 'string', minLength: 1, maxLength: 200 },
  },
} as const;

/** kind → the handler names outside clients may call. */
export function exposedHandlers(
  definitions: readonly AnyEntityDefinition[],
  extra: ExposedEntities = {},
): Map<string, Set<string>> {
  const exposed = new Map<string, Set<string>>();
  for (const definition of definitions) {
    const names = new Set(definition.exposed ?? []);
    const more = Object.hasOwn(extra, definition.kind) ? extra[definition.kind] : undefined;
    if (more === true) for (const name of Object.keys(definition.handlers)) names.add(name);
    else if (more) {
      for (const name of more) {
        if (!Object.hasOwn(definition.handlers, name)) {
          throw new TypeError(`cannot expose ${definition.kind}.${name}: the kind has no such handler`);
        }
        names.add(name);
      }
    }
    if (names.size > 0) exposed.set(definition.kind, names);
  }
  for (const kind of Object.keys(extra)) {
    if (!definitions.some((d) => d.kind === kind)) throw new TypeError(`cannot expose "${kind}": no such entity kind`);
  }
  return exposed;
}

export function registerEntityCallRoute(
  http: FastifyInstance,
  node: AppNode,
  exposed: ReadonlyMap<string, ReadonlySet<string>>,
  bodyLimit: number,
  logger: Logger,
): void {
  http.post<{ Params: Params; Body: unknown }>(
    `${ENTITY_CALLS_PATH}/:kind/:id/:method`,
    { schema: { params: paramsSchema } },
    async (request, reply) => {
      const { kind, id, method } = request.params;
      if (exposed.get(kind)?.has(method) !== true) {
        return sendError(reply, {
          status: 404,
          body: { error: `no exposed entity method ${kind}.${method}`, code: 'UNKNOWN_ENTITY_KIND' },
        });
      }
      const body = request.body;
      // No body at all: a call without a message. Checked here rather than by a schema:
      // Fastify's Ajv would drop unknown keys instead of refusing them.
      if (body !== undefined && (!isRecord(body) || Object.keys(body).some((key) => key !== 'message'))) {
        throw new ConcordError('BAD_MESSAGE', 'the body must be a JSON object {"message": …} with no other keys');
      }
      const timeoutMs = deadlineOf(request.headers[DEADLINE_HEADER]);
      const idempotencyKey = idempotencyKeyOf(request);
      if (request.headers[ROUTE_HEADER] === ROUTE_DIRECT) {
        const where = node.ownerOf(kind, id);
        if (where !== null && where.owner !== node.name) return sendMoved(reply, node, where);
      }
      const result = await node.callByName(kind, id, method, body?.['message'], {
        ...(timeoutMs === undefined ? {} : { timeoutMs }),
        ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
      });
      const owner = node.ownerOf(kind, id)?.owner;
      if (owner) reply.header(OWNER_HEADER, owner);
      return reply.send(result === undefined ? {} : { reply: result });
    },
  );

  // The batch form (see entity-call-wire.ts): what the client sends when several calls to this
  // node are waiting at once, so that they share one request's HTTP work.
  // Each call's result is written as soon as it is known (one NDJSON line, with its index), so
  // a slow handler holds up no other call's answer.
  http.post<{ Body: unknown }>(ENTITY_CALLS_PATH, async (request, reply) => {
    const calls = batchCallsOf(request.body);
    const timeoutMs = deadlineOf(request.headers[DEADLINE_HEADER]);
    const direct = request.headers[ROUTE_HEADER] === ROUTE_DIRECT;
    let pending = '';
    let left = calls.length;
    let out: PassThrough | null = null;
    let flushing = false;
    // Streaming: the lines of the calls that finish in one turn of the event loop go out in one write.
    const flush = () => {
      flushing = false;
      // The caller may have gone (its connection closed): what is left has no one to go to.
      if (out!.destroyed) return;
      out!.write(pending);
      pending = '';
      if (left === 0) out!.end();
    };
    calls.forEach((call, i) => {
      void runBatchCall(node, exposed, call, direct, timeoutMs, bodyLimit, logger).then((result) => {
        pending += `${JSON.stringify({ i, ...result })}\n`;
        left--;
        if (out !== null && !flushing) {
          flushing = true;
          setImmediate(flush);
        }
      });
    });
    // Usually every call is done after one turn (entities in memory): then the answer is one
    // plain body. Otherwise what is done goes now and the rest follows as it comes.
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (left === 0) return reply.type(BATCH_CONTENT_TYPE).send(pending);
    out = new PassThrough();
    out.on('error', () => {}); // Torn down with its connection: nothing to report.
    flush();
    return reply.type(BATCH_CONTENT_TYPE).send(out);
  });
}

/** One call of a batch, answered as the single route would have (never throws). */
async function runBatchCall(
  node: AppNode,
  exposed: ReadonlyMap<string, ReadonlySet<string>>,
  call: BatchCall,
  direct: boolean,
  timeoutMs: number | undefined,
  bodyLimit: number,
  logger: Logger,
): Promise<BatchResult> {
  const { kind, id, method } = call;
  if (exposed.get(kind)?.has(method) !== true) {
    return { status: 404, error: `no exposed entity method ${kind}.${method}`, code: 'UNKNOWN_ENTITY_KIND' };
  }
  if (direct) {
    const where = node.ownerOf(kind, id);
    if (where !== null && where.owner !== node.name) return { status: MOVED_STATUS, ...movedAnswer(node, where) };
  }
  try {
    const deadline = call.deadlineMs ?? timeoutMs;
    const result = await node.callByName(kind, id, method, call.message, {
      ...(deadline === undefined ? {} : { timeoutMs: deadline }),
      ...(call.key === undefined ? {} : { idempotencyKey: call.key }),
    });
    const owner = node.ownerOf(kind, id)?.owner;
    const answer: BatchResult = { status: 200 };
    if (result !== undefined) answer.reply = result;
    if (owner) answer.owner = owner;
    return answer;
  } catch (error) {
    const answer = errorAnswer(error, bodyLimit);
    if (answer.status >= 500 && answer.status !== 503 && answer.status !== 504) {
      logger.error({ kind, id, method, status: answer.status, err: error }, 'batched entity call failed');
    }
    return answer.retryAfterSeconds === undefined
      ? { status: answer.status, ...answer.body }
      : { status: answer.status, ...answer.body, retryAfter: answer.retryAfterSeconds };
  }
}

/** The calls of a batch body; throws BAD_MESSAGE (400, nothing run) when any is malformed. */
function batchCallsOf(body: unknown): BatchCall[] {
  const calls = isRecord(body) ? body['calls'] : undefined;
  if (!isRecord(body) || Object.keys(body).some((key) => key !== 'calls') || !Array.isArray(calls)) {
    throw new ConcordError('BAD_MESSAGE', 'the body must be a JSON object {"calls": [...]} with no other keys');
  }
  if (calls.length === 0 || calls.length > MAX_BATCH_CALLS) {
    throw new ConcordError('BAD_MESSAGE', `a batch holds 1-${MAX_BATCH_CALLS} calls, not ${calls.length}`);
  }
  calls.forEach((call, i) => {
    const problem = batchCallProblem(call);
    if (problem !== null)
      throw new ConcordError('BAD_MESSAGE', `calls[${i}]${problem.startsWith('.') ? '' : ' '}${problem}`);
  });
  return calls as BatchCall[];
}

type Where = { shard: number | null; owner: string | null; epoch: number };

function sendMoved(reply: FastifyReply, node: AppNode, where: Where): FastifyReply {
  if (where.owner) reply.header(OWNER_HEADER, where.owner);
  return sendError(reply, { status: MOVED_STATUS, body: movedAnswer(node, where) });
}

function movedAnswer(node: AppNode, where: Where): MovedAnswer {
  const ownerUrl =
    where.owner === null ? null : (node.status().members.find((m) => m.name === where.owner)?.httpAddress ?? null);
  return {
    error: `${node.name} does not own this entity (owner: ${where.owner ?? 'none yet'}); nothing ran, call the owner`,
    code: 'MOVED',
    maybeApplied: false,
    shard: where.shard ?? 0,
    owner: where.owner,
    epoch: where.epoch,
    ownerUrl,
  };
}

function deadlineOf(header: string | string[] | undefined): number | undefined {
  if (header === undefined) return undefined;
  const value = Array.isArray(header) ? header[0] : header;
  const ms = Number(value);
  if (!Number.isInteger(ms) || ms < 1 || ms > MAX_DEADLINE_MS) {
    throw new ConcordError(
      'BAD_MESSAGE',
      `${DEADLINE_HEADER} must be a whole number of milliseconds, 1-${MAX_DEADLINE_MS}`,
    );
  }
  return ms;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
