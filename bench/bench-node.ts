#!/usr/bin/env node

/**
 * One node process of a benchmark cluster, driven over the IPC channel of `fork`. It runs
 * concord (ConcordNode), the naive per-node cache (NaiveNode, `--ownership none`) or the
 * store-on-every-call baseline (StoreCallNode), all serving the same entity-state app over
 * HTTP; and it runs the library-API load loop in-process, so that driver measures the calls
 * a service makes, not the IPC channel. Config: JSON in CONCORD_BENCH_CONFIG.
 */
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { entityStateApp } from '../examples/entity-state/app.js';
import { EntityState } from '../examples/entity-state/entity.js';
import type { AppNode } from '../src/http/app.js';
import { introspectConcordNode, introspectNaiveNode, type NodeIntrospection } from '../src/http/introspection.js';
import { createHttpServer, type HttpServer } from '../src/http/server.js';
import { createLogger } from '../src/logger.js';
import { NaiveNode } from '../src/runtime/naive-node.js';
import { ConcordNode } from '../src/runtime/node.js';
import { openStore } from '../src/store/open.js';
import { activateAll, closedLoop } from './load-loop.js';
import type {
  BenchEvent,
  BenchNodeConfig,
  BenchRequest,
  BenchResponse,
  CpuSample,
  MemorySample,
  NodeStatus,
  StoreOps,
} from './protocol.js';
import { STATES } from './states.js';
import { StoreCallNode } from './store-call-node.js';

const config = JSON.parse(process.env['CONCORD_BENCH_CONFIG'] ?? '{}') as BenchNodeConfig;

function send(message: BenchEvent | BenchResponse): void {
  if (process.connected) process.send?.(message);
}

interface Running {
  node: AppNode;
  concord: ConcordNode | null;
  http: HttpServer | null;
  httpUrl: string | null;
}

async function start(): Promise<Running> {
  const logger = createLogger();
  const entities = [EntityState];
  let node: AppNode;
  let concord: ConcordNode | null = null;
  let introspection: NodeIntrospection;
  if (config.system === 'concord') {
    concord = await ConcordNode.start({
      name: config.name,
      store: config.store,
      secret: config.secret,
      entities,
      durability: config.durability,
      leaseTtlMs: config.leaseTtlMs,
      maxActiveEntities: config.maxActiveEntities,
      faultInjection: false,
      ...(config.tls === undefined
        ? {}
        : {
            tls: {
              cert: readFileSync(config.tls.cert),
              key: readFileSync(config.tls.key),
              ca: readFileSync(config.tls.ca),
            },
          }),
      logger,
    });
    node = concord;
    introspection = introspectConcordNode(concord);
  } else if (config.system === 'naive') {
    const naive = await NaiveNode.start({ name: config.name, entities });
    node = naive;
    introspection = introspectNaiveNode(naive);
  } else {
    const store = await openStore(config.store, { durability: config.durability });
    const storeCall = new StoreCallNode(config.name, store, entities);
    node = storeCall;
    introspection = storeCall.introspection();
  }
  if (config.httpPort === null) return { node, concord, http: null, httpUrl: null };
  const http = await createHttpServer({
    context: { node, services: concord },
    introspection,
    apps: [entityStateApp],
    logger: logger.child({ node: config.name, component: 'http' }),
  });
  const httpUrl = await http.listen(config.httpPort, '127.0.0.1');
  return { node, concord, http, httpUrl };
}

/** Idempotency keys of workload WK: unique across every load of this process. */
let keySequence = 0;
const keyPrefix = `${config.name}-${process.pid}-`;

function call(
  node: AppNode,
  id: string,
  write: boolean,
  n: number,
  timeoutMs?: number,
  keyed = false,
): Promise<unknown> {
  if (write && keyed) {
    const options = { timeoutMs, idempotencyKey: `${keyPrefix}${keySequence++}` };
    return node.callByName(EntityState.kind, id, 'set', { state: STATES[n % STATES.length] }, options);
  }
  const options = timeoutMs === undefined ? undefined : { timeoutMs };
  return write
    ? node.callByName(EntityState.kind, id, 'set', { state: STATES[n % STATES.length] }, options)
    : node.callByName(EntityState.kind, id, 'get', undefined, options);
}

async function handle(running: Running, request: BenchRequest): Promise<unknown> {
  const { node } = running;
  switch (request.op) {
    case 'status': {
      const status = node.status();
      return {
        name: node.name,
        held: status.shards.held,
        activeEntities: status.activeEntities,
        ready: node.ready,
        notReady: running.concord?.notReadyReason() ?? null,
      } satisfies NodeStatus;
    }
    case 'cpu': {
      const usage = process.cpuUsage();
      return { user: usage.user, system: usage.system, at: performance.now() } satisfies CpuSample;
    }
    case 'memory': {
      const gc = (globalThis as { gc?: () => void }).gc;
      for (let i = 0; i < 2; i++) gc?.();
      const usage = process.memoryUsage();
      return {
        heapUsed: usage.heapUsed,
        rss: usage.rss,
        activeEntities: node.status().activeEntities,
      } satisfies MemorySample;
    }
    case 'store-ops':
      return running.concord
        ? storeOps(running.concord)
        : { ops: {}, leaseFailures: {}, slowRenewals: 0, maxLoopDelayMs: 0 };
    case 'call':
      return call(node, request.entityId, request.handler === 'set', 0, request.timeoutMs);
    case 'load': {
      const concord = running.concord;
      const isLocal =
        concord === null
          ? undefined
          : (id: string) => concord.shards.canServe(concord.router.shardOf(EntityState.kind, id));
      const deferredBefore = concord?.router.deferredLocalCalls ?? 0;
      const result = await closedLoop(
        (id, write, n) => call(node, id, write, n, undefined, request.idempotencyKeys),
        request,
        isLocal,
      );
      if (concord !== null) result.deferredLocalCalls = concord.router.deferredLocalCalls - deferredBefore;
      return result;
    }
    case 'activate':
      return activateAll(
        (id) => call(node, id, false, 0),
        request.prefix,
        request.from,
        request.count,
        request.concurrency,
      );
  }
}

/** The event loop's delays (a starved or blocked process), reported by store-ops since its last call. */
const loopDelay = monitorEventLoopDelay({ resolution: 20 });
loopDelay.enable();

type Metric = { get(): Promise<{ values: { labels: object; value: number; metricName?: string }[] }> };

/** Sum of a metric's values (a histogram's `_count` series) by one label. */
async function countsBy(metric: Metric, label: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const value of (await metric.get()).values) {
    if (value.metricName !== undefined && !value.metricName.endsWith('_count')) continue;
    const key = String((value.labels as Record<string, unknown>)[label]);
    out[key] = (out[key] ?? 0) + value.value;
  }
  return out;
}

/**
 * The count of every store operation so far, from the node's store latency histogram (ok and
 * error); failed lease renewals by reason (store_error, expired, evicted); renewals slower than
 * 250 ms (a sixth of the default lease); the longest event-loop delay since the last call.
 */
async function storeOps(concord: ConcordNode): Promise<StoreOps> {
  let renewals = 0;
  let fastRenewals = 0;
  for (const value of (await concord.telemetry.leaseRenewalDuration.get()).values) {
    if (value.metricName?.endsWith('_count')) renewals += value.value;
    if (value.metricName?.endsWith('_bucket') && (value.labels as Record<string, unknown>)['le'] === 0.25)
      fastRenewals += value.value;
  }
  const maxLoopDelayMs = loopDelay.max / 1e6;
  loopDelay.reset();
  return {
    ops: await countsBy(concord.telemetry.storeQueryDuration, 'op'),
    leaseFailures: await countsBy(concord.telemetry.leaseRenewalFailures, 'reason'),
    slowRenewals: renewals - fastRenewals,
    maxLoopDelayMs,
  };
}

async function main(): Promise<void> {
  let running: Running;
  try {
    running = await start();
  } catch (error) {
    send({ type: 'start-failed', message: error instanceof Error ? error.message : String(error) });
    setTimeout(() => process.exit(1), 50).unref();
    return;
  }
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await running.http?.close().catch(() => {});
    await running.node.stop().catch(() => {});
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('disconnect', () => void stop());
  process.on('message', (request: BenchRequest) => {
    void handle(running, request).then(
      (value) => send({ id: request.id, ok: true, value }),
      (error: unknown) => {
        const code = (error as { code?: unknown }).code;
        send({
          id: request.id,
          ok: false,
          error: {
            code: typeof code === 'string' ? code : 'ERROR',
            message: error instanceof Error ? error.message : String(error),
          },
        });
      },
    );
  });
  send({ type: 'ready', name: config.name, pid: process.pid, httpUrl: running.httpUrl });
}

void main();
