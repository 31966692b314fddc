import type { FastifyInstance } from 'fastify';
import type { AnyEntityDefinition } from '../entity/define.js';
import type { ConcordNode } from '../runtime/node.js';

/**
 * An application served by a node's HTTP API: the entity kinds it needs and the routes
 * that use them. The example applications under `examples/` are ConcordApps built only
 * on concord's public API; `concord node` serves every registered app.
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
  /** Stop background work before the node leaves the cluster. */
  stop?(context: AppContext): void | Promise<void>;
}

export interface AppContext {
  readonly node: ConcordNode;
}
