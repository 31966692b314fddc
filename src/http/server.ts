import type { Server as HttpServerType } from 'node:http';
import type { Socket } from 'node:net';
import { type FastifyHttpOptions, type FastifyInstance, fastify } from 'fastify';
import { ConcordError } from '../errors.js';
import type { Logger } from '../logger.js';
import { ClusterActivity } from './activity.js';
import type { AppContext, AppNode, ConcordApp } from './app.js';
import { type DemoAction, registerDashboard } from './dashboard.js';
import { type ExposedEntities, exposedHandlers, registerEntityCallRoute } from './entity-calls.js';
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

/**
 * Limits that keep slow or greedy clients from holding the server (README "HTTP limits"). Every
 * one is an option of `concord node` too.
 */
export interface HttpLimits {
  /** Largest request line + headers, bytes; larger → 431. Default 16 KiB. */
  maxHeaderBytes: number;
  /** Complete request headers must arrive within this, ms; else 408. Default 10 s. */
  headersTimeoutMs: number;
  /** The complete request (headers and body) must arrive within this, ms; else 408. Default 30 s. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this, ms. Default 72 s (above common load balancers' 60 s). */
  keepAliveTimeoutMs: number;
  /** Open connections from one client address; more are answered 429 and closed. Default 256; 0 = no limit. */
  maxConnectionsPerAddress: number;
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  maxHeaderBytes: 16 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 72_000,
  maxConnectionsPerAddress: 256,
};

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
  /** Header size, timeouts and connections per address (defaults: DEFAULT_HTTP_LIMITS). */
  limits?: Partial<HttpLimits>;
  /**
   * Fastify's `trustProxy`: which proxies' X-Forwarded-For to believe for the client address
   * (`request.ip`, used by login throttling). Default false: the TCP peer is the client.
   */
  trustProxy?: boolean | string | string[];
  /**
   * Entity handlers outside clients may call over `POST /entity-calls/:kind/:id/:method`, on top
   * of those the definitions mark `exposed`: kind → true (every handler) or handler names.
   * Default: none beyond the definitions' own.
   */
  exposedEntities?: ExposedEntities;
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
  const limits: HttpLimits = { ...DEFAULT_HTTP_LIMITS, ...options.limits };
  const fastifyOptions: FastifyHttpOptions<HttpServerType> = {
    logger: false,
    bodyLimit,
    // Well above the id limit (200), so that longer ids reach the route and fail its schema.
    routerOptions: { maxParamLength: 8192 },
    forceCloseConnections: 'idle',
    // While closing, requests that still arrive on open connections are served (the node still
    // routes calls), each answered with `Connection: close`, rather than refused with a 503.
    return503OnClosing: false,
    frameworkErrors: frameworkErrorHandler(options.logger, bodyLimit),
    trustProxy: options.trustProxy ?? false,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    http: {
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs),
      // How often Node enforces the two timeouts above (its default, 30 s, would let a slow
      // client hold a connection that much longer).
      connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs),
    },
    clientErrorHandler: clientErrorHandler(limits),
  };
  const http = fastify(fastifyOptions);
  limitConnectionsPerAddress(http, limits.maxConnectionsPerAddress, options.logger);
  installJsonBodyParser(http, bodyLimit);
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
  const exposed = exposedHandlers(
    options.apps.flatMap((app) => app.entities),
    options.exposedEntities,
  );
  registerEntityCallRoute(http, node, exposed, bodyLimit, options.logger);
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

/**
 * Errors Node's HTTP parser meets before Fastify sees a request (headers too large, a timeout,
 * bytes that are not HTTP): answered in the same JSON shape as every other error, then closed.
 */
function clientErrorHandler(limits: HttpLimits) {
  return (error: Error & { code?: string }, socket: Socket): void => {
    if (error.code === 'ECONNRESET' || socket.destroyed) return;
    let status = 400;
    let message = 'the request is not valid HTTP/1.1';
    if (error.code === 'HPE_HEADER_OVERFLOW') {
      status = 431;
      message = `the request line and headers are larger than ${limits.maxHeaderBytes} bytes`;
    } else if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      status = 408;
      message = `the request did not arrive completely within ${limits.requestTimeoutMs} ms (headers within ${limits.headersTimeoutMs} ms)`;
    }
    writeRawError(socket, status, message);
  };
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  408: 'Request Timeout',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
};

function writeRawError(socket: Socket, status: number, message: string): void {
  const body = JSON.stringify({ error: message });
  if (socket.writable) {
    socket.end(
      `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  setTimeout(() => socket.destroy(), 1000).unref();
}

/** More than `max` open connections from one address: the extra one is answered 429 and closed. */
function limitConnectionsPerAddress(http: FastifyInstance, max: number, logger: Logger): void {
  if (max <= 0) return;
  const open = new Map<string, number>();
  http.server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '?';
    const count = (open.get(address) ?? 0) + 1;
    open.set(address, count);
    socket.once('close', () => {
      const left = (open.get(address) ?? 1) - 1;
      if (left <= 0) open.delete(address);
      else open.set(address, left);
    });
    if (count > max) {
      logger.warn({ address, limit: max }, 'too many HTTP connections from one address; refusing');
      writeRawError(socket, 429, `more than ${max} open connections from this address`);
    }
  });
}

/**
 * Request bodies are JSON, sent as `application/json` (any charset): Fastify's other default
 * parser (text/plain) is removed, so a body of any other content type, or of none, is 415 on
 * every route, and a JSON body is parsed here: invalid JSON, an empty body, and keys that
 * could change an object's prototype when merged (`__proto__`, `constructor.prototype`) are 400
 * with a message that says which.
 */
function installJsonBodyParser(http: FastifyInstance, bodyLimit: number): void {
  http.removeContentTypeParser(['application/json', 'text/plain']);
  http.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit }, (_request, body, done) => {
    const text = body as string;
    if (text.length === 0 || text.trim().length === 0) {
      done(new ConcordError('BAD_MESSAGE', 'the body is empty; send a JSON object'), undefined);
      return;
    }
    try {
      done(null, JSON.parse(text, refusePrototypeKeys));
    } catch (error) {
      if (error instanceof ConcordError) done(error, undefined);
      else done(new ConcordError('BAD_MESSAGE', `the body is not valid JSON (${(error as Error).message})`), undefined);
    }
  });
}

function refusePrototypeKeys(this: unknown, key: string, value: unknown): unknown {
  if (key === '__proto__') {
    throw new ConcordError(
      'BAD_MESSAGE',
      'the body has a "__proto__" key, which is not allowed (it could change the prototype of objects it is merged into)',
    );
  }
  if (key === 'constructor' && value !== null && typeof value === 'object' && Object.hasOwn(value, 'prototype')) {
    throw new ConcordError(
      'BAD_MESSAGE',
      'the body has a "constructor" key holding a "prototype", which is not allowed',
    );
  }
  return value;
}
