import { hostname } from 'node:os';
import { ConcordError } from '../errors.js';
import type { DemoProcess } from '../http/activity.js';
import type { AppContext, AppNode, ConcordApp } from '../http/app.js';
import { introspectConcordNode, introspectNaiveNode, type NodeIntrospection } from '../http/introspection.js';
import { createHttpServer, type HttpLimits, type HttpServer } from '../http/server.js';
import { createLogger, type Logger } from '../logger.js';
import { NaiveNode } from '../runtime/naive-node.js';
import { ConcordNode } from '../runtime/node.js';
import type { Durability } from '../store/types.js';
import type { MeshTlsOptions } from '../transport/tls.js';
import { apps as builtInApps } from './apps.js';
import { loadAppModules } from './load-apps.js';
import { type OwnershipMode, redactUrl } from './options.js';
import { portIsFree } from './ports.js';

/**
 * The life of one `concord node` process: start the node (or the naive baseline), serve
 * HTTP, and on SIGTERM / SIGINT (or, for demo children, when the parent goes away) stop
 * gracefully — readiness off, HTTP closed after in-flight requests, apps stopped, shards
 * handed over — then exit 0.
 */

export interface NodeRunConfig {
  name: string;
  httpPort: number;
  clusterPort: number;
  host: string;
  advertiseHost: string | undefined;
  /** `--advertise-port`: the cluster port other nodes dial (default: the bound one). */
  advertisePort?: number | undefined;
  store: string;
  secret: string;
  /** CONCORD_SECRET_PREVIOUS: the cluster's previous secret, during a rotation. */
  previousSecret: string | undefined;
  /** Accept a secret shorter than 16 bytes (only for `concord demo`'s children). */
  allowWeakSecret: boolean;
  ownership: OwnershipMode;
  callTimeoutMs: number | undefined;
  leaseTtlMs: number | undefined;
  suspicionTimeoutMs: number | undefined;
  durability: Durability | undefined;
  /** `--idempotency-window`: how long idempotency keys are remembered at least (default 24 h). */
  idempotencyWindowMs?: number | undefined;
  /** Mutual TLS between nodes (`--tls-cert`, `--tls-key`, `--tls-ca`, read already). */
  tls?: MeshTlsOptions | undefined;
  /** HTTP limits (`--http-*`); unset ones keep their defaults. */
  httpLimits?: Partial<HttpLimits>;
  /** `--trust-proxy`: proxies whose X-Forwarded-For names the client address. */
  trustProxy?: boolean | string[] | undefined;
  /** `--expose`: entity handlers callable over POST /entity-calls beyond the definitions' own. */
  exposedEntities?: Record<string, true | string[]> | undefined;
  /** Extra application modules (`--app`), served after the built-in example apps. */
  appModules: readonly string[];
  /** Stop when the IPC channel to the parent closes (set by `concord demo` for its children). */
  exitWithParent: boolean;
  /**
   * `--drain-delay`: on a graceful stop, how long after /readyz turned 503 the HTTP listener and
   * idle keep-alive connections stay open (requests are served meanwhile), so that load
   * balancers notice before connections close. Default 500 ms.
   */
  drainDelayMs?: number | undefined;
  /** `--log-level` / CONCORD_LOG_LEVEL (default info). */
  logLevel?: string | undefined;
  /**
   * `--demo-controls` (passed by `concord demo` only, effective only with its IPC channel): the
   * dashboard gets fault buttons whose requests go to the demo process, and fault injection is
   * on so that the demo can partition the node.
   */
  demoControls?: boolean;
}

export const DEFAULT_DRAIN_DELAY_MS = 500;

interface RunningNode {
  node: AppNode;
  context: AppContext;
  apps: readonly ConcordApp[];
  server: HttpServer;
  url: string;
}

/** A graceful stop that takes longer than this ends with exit 1 (the lease then frees the shards). */
export const HARD_EXIT_MS = 20_000;
const NAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

export async function runNode(config: NodeRunConfig): Promise<void> {
  const logger = createLogger({}, config.logLevel ?? 'info');
  const log = logger.child({ node: config.name });
  let running: RunningNode | null = null;
  let stopReason: string | null = null;
  const drainDelay = config.drainDelayMs ?? DEFAULT_DRAIN_DELAY_MS;

  const requestStop = (reason: string) => {
    if (stopReason !== null) return;
    stopReason = reason;
    setTimeout(() => {
      log.error({ reason }, `graceful stop took longer than ${HARD_EXIT_MS} ms; exiting`);
      process.exit(1);
    }, HARD_EXIT_MS).unref();
    // Still starting: the stop runs as soon as the start finishes.
    if (running) void stopAndExit(running, reason, log, drainDelay);
  };
  process.on('SIGTERM', () => requestStop('SIGTERM'));
  process.on('SIGINT', () => requestStop('SIGINT'));
  if (config.exitWithParent) {
    if (!process.connected) process.exit(0);
    process.on('disconnect', () => requestStop('parent exited'));
  }

  try {
    running = await start(config, logger);
  } catch (error) {
    const recorded =
      error instanceof ConcordError && error.code === 'SECRET_MISMATCH'
        ? '\nThe refusal is recorded in the store: the running nodes list it under refusedJoins in GET /cluster.'
        : '';
    process.stderr.write(`concord node: ${config.name} could not start: ${messageOf(error)}${recorded}\n`);
    process.exit(1);
  }
  if (stopReason !== null) {
    await stopAndExit(running, stopReason, log, drainDelay);
    return;
  }
  const where = config.ownership === 'none' ? 'no store: ownership none' : `store ${redactUrl(config.store)}`;
  process.stdout.write(`concord node ${config.name} ready at ${running.url} (${where})\n`);
}

async function start(config: NodeRunConfig, logger: Logger): Promise<RunningNode> {
  if (!NAME_PATTERN.test(config.name)) {
    throw new Error(`node name "${config.name}" must be 1-64 characters of letters, digits, _ . -`);
  }
  if (!(await portIsFree(config.httpPort, config.host))) {
    throw new Error(`HTTP port ${config.httpPort} on ${config.host} is already in use`);
  }
  const advertise = config.advertiseHost ?? (isWildcard(config.host) ? hostname() : config.host);
  const httpAddress = `http://${advertise.includes(':') ? `[${advertise}]` : advertise}:${config.httpPort}`;
  const apps: readonly ConcordApp[] = [...builtInApps, ...(await loadAppModules(config.appModules))];
  const demoControls = config.demoControls === true && typeof process.send === 'function';
  const entities = apps.flatMap((app) => app.entities);

  let node: AppNode;
  let services: AppContext['services'] = null;
  let introspection: NodeIntrospection;
  if (config.ownership === 'none') {
    logger.warn({ node: config.name }, 'ownership none: no coordination, nodes will disagree (baseline only)');
    const naive = await NaiveNode.start({ name: config.name, entities, httpAddress });
    node = naive;
    introspection = introspectNaiveNode(naive);
  } else {
    const concord = await ConcordNode.start({
      ...(demoControls ? { faultInjection: true } : {}),
      name: config.name,
      store: config.store,
      secret: config.secret,
      previousSecret: config.previousSecret,
      allowWeakSecret: config.allowWeakSecret,
      entities,
      host: config.host,
      clusterPort: config.clusterPort,
      advertiseHost: config.advertiseHost,
      ...(config.advertisePort === undefined ? {} : { advertisePort: config.advertisePort }),
      httpAddress,
      callTimeoutMs: config.callTimeoutMs,
      leaseTtlMs: config.leaseTtlMs,
      suspicionTimeoutMs: config.suspicionTimeoutMs,
      durability: config.durability,
      idempotencyWindowMs: config.idempotencyWindowMs,
      ...(config.tls === undefined ? {} : { tls: config.tls }),
      logger,
    });
    node = concord;
    services = concord;
    introspection = introspectConcordNode(concord);
  }

  const context: AppContext = { node, services };
  try {
    const server = await createHttpServer({
      context,
      introspection,
      apps,
      logger: logger.child({ node: config.name, component: 'http' }),
      demoControls: demoControls
        ? (action, target) => process.send?.({ t: 'demo-action', action, node: target, from: config.name })
        : null,
      ...(config.httpLimits === undefined ? {} : { limits: config.httpLimits }),
      ...(config.trustProxy === undefined ? {} : { trustProxy: config.trustProxy }),
      ...(config.exposedEntities === undefined ? {} : { exposedEntities: config.exposedEntities }),
    });
    if (demoControls) {
      process.on('message', (message: unknown) => {
        const m = message as { t?: string; processes?: DemoProcess[]; text?: string } | null;
        if (m?.t === 'demo-processes' && Array.isArray(m.processes)) server.activity.setDemo(m.processes);
        if (m?.t === 'demo-notice' && typeof m.text === 'string') server.activity.notice('demo', m.text);
      });
      process.send?.({ t: 'demo-hello', node: config.name });
    }
    for (const app of apps) await app.start?.(context);
    const url = await server.listen(config.httpPort, config.host);
    return { node, context, apps, server, url };
  } catch (error) {
    await node.stop().catch(() => {});
    throw error;
  }
}

/**
 * A graceful stop, in this order:
 * 1. /readyz turns 503 and every HTTP response carries `Connection: close` (clients and load
 *    balancers move on); HTTP requests keep being served.
 * 2. The node leaves at once — from this moment it claims nothing — and hands its shards over;
 *    requests still arriving are routed to the new owners.
 * 3. The HTTP server stops accepting connections, finishes the requests in flight and closes
 *    every keep-alive connection (idle ones at once, busy ones after their response; all of
 *    them after a bound).
 * 4. The apps stop, then the peer transport and the store close, and the process exits.
 */
async function stopAndExit(running: RunningNode, reason: string, log: Logger, drainDelayMs: number): Promise<void> {
  log.info({ reason }, 'stopping');
  let code = 0;
  const drainStarted = performance.now();
  running.server.drain();
  await running.node.leave().catch((error: unknown) => log.warn({ err: messageOf(error) }, 'leaving failed'));
  // Closing an idle keep-alive connection races with a client that sends on it at that moment;
  // a client that watches /readyz has stopped sending here by the end of the drain delay.
  const wait = drainDelayMs - (performance.now() - drainStarted);
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  const open = running.server.connections();
  const httpStarted = performance.now();
  await running.server.close().catch((error: unknown) => log.warn({ err: messageOf(error) }, 'closing HTTP failed'));
  log.info({ connections: open, ms: Math.round(performance.now() - httpStarted) }, 'HTTP server closed');
  const { context } = running;
  for (const app of [...running.apps].reverse()) {
    try {
      await app.stop?.(context);
    } catch (error) {
      log.warn({ app: app.name, err: messageOf(error) }, 'app did not stop cleanly');
    }
  }
  try {
    await running.node.stop();
  } catch (error) {
    log.error({ err: messageOf(error) }, 'node did not stop cleanly');
    code = 1;
  }
  process.exit(code);
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
