import type { FastifyInstance } from 'fastify';
import type { FaultSwitch } from '../transport/faults.js';
import type { AppNode } from './app.js';
import { idempotencyKeyOf } from './idempotency.js';

/**
 * Test-only control channel for fault injection: `POST /_test/faults`.
 * Registered only when the node runs with fault injection enabled (CONCORD_TEST_FAULTS=1);
 * a production node has no such route (a JSON 404 answers instead).
 *
 * Body: `{ "dropTo"?: string[], "allow"?: string[] | "all", "cutStore"?: boolean }`
 * - dropTo: start dropping every frame this node sends to those peers;
 * - allow: stop dropping to those peers (or to all);
 * - cutStore: fail (true) or restore (false) every store call of this node.
 * Answers `{ "dropped": string[], "storeCut": boolean }`.
 */
export function registerTestFaultRoutes(http: FastifyInstance, faults: FaultSwitch): void {
  http.post<{ Body: { dropTo?: string[]; allow?: string[] | 'all'; cutStore?: boolean } }>(
    '/_test/faults',
    {
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            dropTo: { type: 'array', items: { type: 'string', maxLength: 64 }, maxItems: 64 },
            // "all" first: Fastify's Ajv coerces types ('array'), so with the array branch first
            // the string "all" became ["all"] (a peer named "all") and healing never happened.
            allow: {
              anyOf: [
                { type: 'string', const: 'all' },
                { type: 'array', items: { type: 'string', maxLength: 64 }, maxItems: 64 },
              ],
            },
            cutStore: { type: 'boolean' },
          },
        },
      },
    },
    async (request) => {
      const { dropTo, allow, cutStore } = request.body ?? {};
      if (dropTo) faults.dropTo(dropTo);
      if (allow === 'all') faults.allow();
      else if (allow) faults.allow(allow);
      if (cutStore === true) faults.cutStore();
      if (cutStore === false) faults.restoreStore();
      return { dropped: faults.droppedPeers(), storeCut: faults.storeCut };
    },
  );
  http.get('/_test/faults', async () => ({ dropped: faults.droppedPeers(), storeCut: faults.storeCut }));
}

/**
 * Test-only generic entity call: `POST /_test/call` with `{ kind, id, handler, message? }`
 * answers `{ "value": <the handler's reply> }` (errors as usual: 503 unavailable, 504 outcome
 * unknown, 400 bad message, 422 idempotency key reused, 500 handler error). An
 * `Idempotency-Key` header is passed on to the call as its key. It lets a LocalCluster test drive a user's own entities that
 * have no HTTP routes. Registered only with CONCORD_TEST_FAULTS=1, like the fault routes.
 */
export function registerTestCallRoute(http: FastifyInstance, node: Pick<AppNode, 'callByName'>): void {
  http.post<{ Body: { kind: string; id: string; handler: string; message?: unknown } }>(
    '/_test/call',
    {
      schema: {
        body: {
          type: 'object',
          required: ['kind', 'id', 'handler'],
          additionalProperties: false,
          properties: {
            kind: { type: 'string', minLength: 1, maxLength: 200 },
            id: { type: 'string', minLength: 1, maxLength: 200 },
            handler: { type: 'string', minLength: 1, maxLength: 200 },
            message: {},
          },
        },
      },
    },
    async (request) => {
      const { kind, id, handler, message } = request.body;
      const idempotencyKey = idempotencyKeyOf(request);
      const options = idempotencyKey === undefined ? undefined : { idempotencyKey };
      return { value: (await node.callByName(kind, id, handler, message, options)) ?? null };
    },
  );
}
