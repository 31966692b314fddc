import type { FastifyInstance } from 'fastify';
import type { RefusedJoin } from '../cluster/secret-check.js';
import type { ClusterStatus } from '../runtime/node.js';
import type { AppNode } from './app.js';
import { sendError } from './errors.js';
import type { NodeIntrospection, Ownership } from './introspection.js';

/**
 * Operations routes: `/healthz` (the process runs), `/readyz` (the node should get traffic: a
 * member with a valid lease and a shard map that reaches a majority of the members; 503 while
 * joining, evicted, cut off or stopping), `/cluster` (membership and shard ownership as this
 * node sees it, with suspicions and evictions).
 */

export interface ClusterView {
  self: string;
  ownership: Ownership;
  /** The cluster's random id, as recorded in the store (null for the baseline). */
  clusterId: string | null;
  ready: boolean;
  /** Why the node is not ready (null when it is). */
  notReadyReason: string | null;
  incarnation: number | null;
  leaseRemainingMs: number;
  activeEntities: number;
  members: {
    name: string;
    address: string;
    httpAddress: string | null;
    /** alive, joining, leaving, suspected, evicted or dead. */
    status: ClusterStatus['members'][number]['status'];
    connected: boolean;
    incarnation: number;
    leaseExpiresInMs: number;
    shards: number;
    /** The members that report this one unreachable (non-empty when `suspected`). */
    suspectedBy: string[];
    /** For `evicted`: the members whose suspicions ended its membership. */
    evictedBy: string[] | null;
  }[];
  shards: ClusterStatus['shards'] & { map: (string | null)[]; epochs: number[] };
  /**
   * Nodes refused because their secret is not the cluster's (the last 20 recorded in the
   * store, oldest first): `at` in ms on the store's clock, `ageMs` how long ago that was.
   */
  refusedJoins: (RefusedJoin & { ageMs: number })[];
}

export async function clusterView(node: AppNode, introspection: NodeIntrospection): Promise<ClusterView> {
  const status = node.status();
  const refused = await introspection.refusedJoins();
  return {
    self: status.self,
    ownership: introspection.ownership,
    clusterId: introspection.clusterId,
    ready: status.ready,
    notReadyReason: status.notReadyReason,
    incarnation: status.incarnation,
    leaseRemainingMs: status.leaseRemainingMs,
    activeEntities: status.activeEntities,
    members: status.members.map((m) => ({
      name: m.name,
      address: m.address,
      httpAddress: m.httpAddress,
      status: m.status,
      connected: m.connected,
      incarnation: m.incarnation,
      leaseExpiresInMs: Math.round(m.leaseExpiresInMs),
      shards: status.shards.owners[m.name] ?? 0,
      suspectedBy: m.suspectedBy,
      evictedBy: m.evictedBy,
    })),
    shards: { ...status.shards, map: introspection.shardOwners(), epochs: introspection.shardEpochs() },
    refusedJoins: refused.joins.map((join) => ({ ...join, ageMs: Math.max(0, refused.now - join.at) })),
  };
}

export function registerOperationRoutes(
  http: FastifyInstance,
  node: AppNode,
  introspection: NodeIntrospection,
  isDraining: () => boolean,
): void {
  http.get('/healthz', async () => ({ status: 'ok', node: node.name }));

  http.get('/readyz', async (_request, reply) => {
    if (node.ready && !isDraining()) return { ready: true, node: node.name };
    const reason = isDraining() ? 'the node is stopping' : (node.status().notReadyReason ?? 'not ready');
    return sendError(reply, {
      status: 503,
      body: { error: `not ready: ${reason}`, ready: false },
      retryAfterSeconds: 1,
    });
  });

  http.get('/cluster', async () => clusterView(node, introspection));

  http.get<{ Params: { kind: string; id: string } }>(
    '/cluster/owner/:kind/:id',
    {
      schema: {
        params: {
          type: 'object',
          required: ['kind', 'id'],
          properties: {
            kind: { type: 'string', minLength: 1, maxLength: 200 },
            id: { type: 'string', minLength: 1, maxLength: 200 },
          },
        },
      },
    },
    async (request, reply) => {
      const { kind, id } = request.params;
      const owner = introspection.ownerOf(kind, id);
      if (owner === null) {
        return sendError(reply, { status: 404, body: { error: `unknown entity kind "${kind}"` } });
      }
      return { kind, id, ...owner };
    },
  );
}
