import type { FastifyInstance } from 'fastify';
import type { AppContext, ConcordApp } from '../../src/index.js';
import { idempotencyKeyOf, idParamsSchema } from '../../src/index.js';
import { EntityState, type EntityStateName, type Snapshot, STATES } from './entity.js';
import { parseIfMatch } from './if-match.js';

/**
 * The entity-state application: any node answers for any entity, and the answer is the
 * same whichever node is asked.
 *
 * - `GET /entities/:id` → 200 `{"id","state","version"}` (`ETag: "<version>"`, `Concord-Owner: <node>`)
 * - `PUT /entities/:id` `{"state"}` [+ `If-Match: "<version>"`] [+ `Idempotency-Key`] → 200
 *   once durable; 400 for a bad body, state, If-Match or key; 412 when If-Match is not the
 *   current version. With a key, a retry of an applied change answers the first 200 again (same
 *   body, same version: the change is not applied twice); the key with another body (or
 *   If-Match) answers 422. A 412 changed nothing, so it is not remembered: its retry is
 *   evaluated afresh.
 *
 * Errors of the runtime (no owner reachable in time → 503) are mapped by the HTTP layer.
 */

interface EntityRoute {
  Params: { id: string };
}

interface PutRoute extends EntityRoute {
  Body: { state: EntityStateName };
}

const putBodySchema = {
  type: 'object',
  required: ['state'],
  properties: { state: { type: 'string', enum: STATES } },
} as const;

function snapshotBody(id: string, snapshot: Snapshot) {
  return { id, state: snapshot.state, version: snapshot.version };
}

/** `Concord-Owner`: the node that owns the entity (as the answering node sees it once the call is done). */
function ownerHeader(node: AppContext['node'], id: string): Record<string, string> {
  const owner = node.ownerOf(EntityState.kind, id)?.owner;
  return owner ? { 'concord-owner': owner } : {};
}

function routes(http: FastifyInstance, { node }: AppContext): void {
  const params = idParamsSchema('id');

  http.get<EntityRoute>('/entities/:id', { schema: { params } }, async (request, reply) => {
    const { id } = request.params;
    const snapshot = await node.call(EntityState, id, 'get', undefined);
    return reply
      .headers(ownerHeader(node, id))
      .header('etag', `"${snapshot.version}"`)
      .send(snapshotBody(id, snapshot));
  });

  http.put<PutRoute>('/entities/:id', { schema: { params, body: putBodySchema } }, async (request, reply) => {
    const { id } = request.params;
    const ifMatch = parseIfMatch(request.headers['if-match']);
    if (ifMatch instanceof Error) return reply.code(400).send({ error: ifMatch.message });
    const idempotencyKey = idempotencyKeyOf(request);
    const result = await node.call(
      EntityState,
      id,
      'set',
      ifMatch === undefined ? { state: request.body.state } : { state: request.body.state, ifMatch },
      idempotencyKey === undefined ? undefined : { idempotencyKey },
    );
    reply.headers(ownerHeader(node, id)).header('etag', `"${result.version}"`);
    if (!result.ok) {
      return reply.code(412).send({
        error: `If-Match "${ifMatch}" does not match the current version ${result.version}`,
        ...snapshotBody(id, result),
      });
    }
    return reply.send(snapshotBody(id, result));
  });
}

export const entityStateApp: ConcordApp = {
  name: 'entity-state',
  entities: [EntityState],
  routes,
};
