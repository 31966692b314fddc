import { type FastifyInstance, fastify } from 'fastify';
import type { Logger } from '../logger.js';
import { ClusterActivity } from './activity.js';
import type { AppContext, AppNode, ConcordApp } from './app.js';
import { type DemoAction, registerDashboard } from './dashboard.js';
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
  /** Only under `concord demo`: the dashboard's fault buttons ask the demo to act. */
  demoControls?: ((action: DemoAction, node: string) => void) | null;
}

export interface HttpServer {
  readonly http: FastifyInstance;
  /** What the dashboard shows (events and state); the demo adds its processes and notices. */
  readonly activity: ClusterActivity;
  /** Listen on host:port; resolves with the base URL. */
  listen(port: number, host: string): Promise<string>;
  /**
   * The node is about to stop: /readyz answers 503 from now on, and every response carries
   * `Connection: close`, so keep-alive clients (load balancers) open their next connection
   * elsewhere. Requests keep being served meanwhile.
   */
  drain(): void;
  /**
   * Stop accepting connections, let in-flight requests finish, and close keep-alive connections
   * as soon as they are idle (also those that become idle later). After `forceAfterMs` (default
   * 6 s: a call's deadline and then some) the connections still open are closed regardless.
   */
  close(forceAfterMs?: number): Promise<void>;
  /** Open HTTP connections (for tests and logs). */
  connections(): number;
}

/** How often idle keep-alive connections are looked for while the server closes. */
const IDLE_SWEEP_MS = 50;
const DEFAULT_FORCE_CLOSE_MS = 6000;

export async function createHttpServer(options: HttpServerOptions): Promise<HttpServer> {
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const http = fastify({
    logger: false,
    bodyLimit,
    // Well above the id limit (200), so that longer ids reach the route and fail its schema.
    routerOptions: { maxParamLength: 8192 },
    forceCloseConnections: 'idle',
    // While closing, requests that still arrive on open connections are served (the node still
    // routes calls), each answered with `Connection: close`, rather than refused with a 503.
    return503OnClosing: false,
    frameworkErrors: frameworkErrorHandler(options.logger, bodyLimit),
  });
  let draining = false;
  let open = 0;
  http.server.on('connection', (socket) => {
    open++;
    socket.once('close', () => open--);
  });
  // At response time (not request time): a request admitted before the drain began is answered
  // after it, and its connection must not stay open as an idle keep-alive connection.
  http.addHook('onSend', async (_request, reply, payload) => {
    if (draining) reply.header('connection', 'close');
    return payload;
  });
  const { context, introspection } = options;
  const node: AppNode = context.node;

  installErrorHandling(http, options.logger, bodyLimit);
  registerOperationRoutes(http, node, introspection, () => draining);
  registerMetrics(http, node, introspection);
  const activity = new ClusterActivity(node, introspection);
  const streams = registerDashboard(http, { activity, demoControls: options.demoControls ?? null });
  if (introspection.faults) {
    registerTestFaultRoutes(http, introspection.faults);
    registerTestCallRoute(http, node);
  }

  for (const app of options.apps) await app.routes(http, context);
  await http.ready();
  activity.start();

  return {
    http,
    activity,
    async listen(port, host) {
      await http.listen({ port, host });
      const address = http.server.address();
      const bound = typeof address === 'object' && address ? address.port : port;
      return `http://${host.includes(':') ? `[${host}]` : host}:${bound}`;
    },
    drain() {
      draining = true;
      // Event streams never end by themselves: end them now, the dashboards reconnect elsewhere.
      streams.closeAll();
    },
    async close(forceAfterMs = DEFAULT_FORCE_CLOSE_MS) {
      draining = true;
      streams.closeAll();
      activity.stop();
      // Node's server.close() closes the connections idle at that moment only; a request in
      // flight leaves an idle keep-alive connection behind when it ends, which would hold the
      // close open until the keep-alive timeout. Sweep them as they turn idle.
      const sweep = setInterval(() => http.server.closeIdleConnections(), IDLE_SWEEP_MS);
      const force = setTimeout(() => http.server.closeAllConnections(), forceAfterMs);
      try {
        await http.close();
      } finally {
        clearInterval(sweep);
        clearTimeout(force);
      }
    },
    connections: () => open,
  };
}
