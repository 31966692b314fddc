import type { FastifyInstance } from 'fastify';
import type { FaultSwitch } from '../transport/faults.js';

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
            allow: {
              anyOf: [
                { type: 'array', items: { type: 'string', maxLength: 64 }, maxItems: 64 },
                { type: 'string', const: 'all' },
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
