import { type FastifyInstance, fastify } from 'fastify';
import type { Logger } from '../logger.js';
import type { AppContext, AppNode, ConcordApp } from './app.js';
import { registerDashboard } from './dashboard.js';
import { frameworkErrorHandler, installErrorHandling } from './errors.js';
import type { NodeIntrospection } from './introspection.js';
import { registerMetrics } from './metrics.js';
import { registerOperationRoutes } from './operations.js';
import { registerTestCallRoute, registerTestFaultRoutes } from './test-faults.js';

/**
 * A node's HTTP API on Fastify: the operations routes, metrics, dashboard and every app's
 * routes, with JSON errors only, a body size limit and long-enough path parameters that
 * an overlong id is answered 400 by its schema rather than a confusing 404.
 */

export const DEFAULT_BODY_LIMIT = 64 * 1024;

export interface HttpServerOptions {
  /** The node and the services the apps are given. */
  context: AppContext;
  introspection: NodeIntrospection;
  apps: readonly ConcordApp[];
  logger: Logger;
  /** Largest accepted request body in bytes; larger ones get 413. Default 64 KiB. */
  bodyLimit?: number;
}

export interface HttpServer {
  readonly http: FastifyInstance;
  /** Listen on host:port; resolves with the base URL. */
  listen(port: number, host: string): Promise<string>;
  /** /readyz answers 503 from now on (the node is about to stop). */
  drain(): void;
  /** Stop accepting connections and wait for in-flight requests. */
  close(): Promise<void>;
}

export async function createHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const http = fastify({
    logger: false,
    bodyLimit,
    // Well above the id limit (200), so that longer ids reach the route and fail its schema.
    routerOptions: { maxParamLength: 8192 },
    forceCloseConnections: 'idle',
    frameworkErrors: frameworkErrorHandler(options.logger, bodyLimit),
  });
  let draining = false;
  const { context, introspection } = options;
  const node: AppNode = context.node;

  installErrorHandling(http, options.logger, bodyLimit);
  registerOperationRoutes(http, node, introspection, () => draining);
  registerMetrics(http, node, introspection);
  registerDashboard(http);
  if (introspection.faults) {
    registerTestFaultRoutes(http, introspection.faults);
    registerTestCallRoute(http, node);
  }

  for (const app of options.apps) await app.routes(http, context);
  await http.ready();

  return {
    http,
    async listen(port, host) {
      await http.listen({ port, host });
      const address = http.server.address();
      const bound = typeof address === 'object' && address ? address.port : port;
      return `http://${host.includes(':') ? `[${host}]` : host}:${bound}`;
    },
    drain() {
      draining = true;
    },
    async close() {
      draining = true;
      await http.close();
    },
  };
}
