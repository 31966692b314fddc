import type { FastifyInstance } from 'fastify';
import type { AnyEntityDefinition } from '../entity/define.js';
import type { ConcordNode } from '../runtime/node.js';

/**
 * An application served by a node's HTTP API: the entity kinds it needs and the routes
 * that use them. The example applications under `examples/` are ConcordApps built only
 * on concord's public API; `concord node` serves every registered app (src/cli/apps.ts).
 */
export interface ConcordApp {
  /** Short name, used in logs. */
  readonly name: string;
  /** Entity kinds the app calls; registered on the node before it starts. */
  readonly entities: readonly AnyEntityDefinition[];
  /** Register the app's HTTP routes. Called once, after the node has started. */
  routes(http: FastifyInstance, context: AppContext): void | Promise<void>;
  /** Start background work (caches, projections) once the node runs. */
  start?(context: AppContext): void | Promise<void>;
  /**
   * Stop background work. Called during a graceful stop once the node has handed its shards
   * over and its HTTP server has finished every request, before the peer transport closes.
   */
  stop?(context: AppContext): void | Promise<void>;
}

/**
 * What an app (and the HTTP layer) may use of the node serving it. A `ConcordNode` is one;
 * so is the `NaiveNode` of `--ownership none` (the uncoordinated baseline), which is why
 * this is a subset of ConcordNode's API rather than the class itself.
 */
export type AppNode = Pick<
  ConcordNode,
  'name' | 'ready' | 'call' | 'ref' | 'callByName' | 'ownerOf' | 'status' | 'leave' | 'stop'
>;

/**
 * The cluster services of a coordinated node: pub/sub, replicated maps, the event store, and
 * store reads of committed entity state (for read-through caches).
 * The `--ownership none` baseline has none of them (it has no store and no peers).
 */
export type ClusterServices = Pick<ConcordNode, 'pubsub' | 'replicatedMap' | 'events' | 'readCommitted'>;

export interface AppContext {
  readonly node: AppNode;
  /**
   * Null under `--ownership none`: an app that needs these answers its routes with 501 and a
   * JSON error there instead of pretending to work.
   */
  readonly services: ClusterServices | null;
}
