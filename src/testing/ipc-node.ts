#!/usr/bin/env node
/**
 * A concord node process driven over the IPC channel of `child_process.fork`: the test
 * and benchmark harness use it to make library-API calls from inside a real node.
 * Configuration comes as JSON in CONCORD_IPC_CONFIG (see IpcNodeConfig).
 */
import * as hdr from 'hdr-histogram-js';
import { errorToShape } from '../errors.js';
import { Projection } from '../events/projection.js';
import { ConcordNode } from '../runtime/node.js';
import type {
  IpcEvent,
  IpcNodeConfig,
  IpcRequest,
  IpcResponse,
  LoadResult,
  TeamsResult,
  TryCallResult,
} from './ipc-protocol.js';
import { mapOp, pubsubOp } from './ipc-services.js';
import { TeamMember, TeamsView, testEntities } from './test-entities.js';

const config = JSON.parse(process.env.CONCORD_IPC_CONFIG ?? '{}') as IpcNodeConfig;

function send(message: IpcEvent | IpcResponse): void {
  if (process.connected) process.send?.(message);
}

async function main(): Promise<void> {
  let node: ConcordNode;
  try {
    node = await ConcordNode.start({
      name: config.name,
      store: config.store,
      secret: config.secret,
      entities: testEntities,
      leaseTtlMs: config.leaseTtlMs,
      callTimeoutMs: config.callTimeoutMs,
      shardCount: config.shardCount,
      idleTimeoutMs: config.idleTimeoutMs,
      maxActiveEntities: config.maxActiveEntities,
      durability: config.durability,
      faultInjection: config.faultInjection ?? true,
    });
  } catch (error) {
    const shape = errorToShape(error);
    send({ type: 'start-failed', error: { code: shape.code, message: shape.message } });
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 50).unref();
    return;
  }

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await node.stop().catch(() => {});
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('disconnect', () => void stop());

  process.on('message', (raw: IpcRequest) => {
    void handle(node, raw, stop).then(
      (value) => send({ id: raw.id, ok: true, value }),
      (error: unknown) => {
        const shape = errorToShape(error);
        send({
          id: raw.id,
          ok: false,
          error: { code: shape.code, name: shape.name, message: shape.message, details: shape.details },
        });
      },
    );
  });
  send({ type: 'ready', name: node.name, incarnation: node.incarnation, pid: process.pid });
}

async function handle(node: ConcordNode, request: IpcRequest, stop: () => Promise<void>): Promise<unknown> {
  switch (request.op) {
    case 'call':
      return node.callByName(request.kind, request.entityId, request.handler, request.message, {
        timeoutMs: request.timeoutMs,
        idempotencyKey: request.idempotencyKey,
      });
    case 'status':
      return { ...node.status(), router: node.router.stats, host: node.host.stats };
    case 'faults': {
      const faults = node.faults;
      if (!faults) throw new Error('fault injection is disabled in this node');
      if (request.dropTo) faults.dropTo(request.dropTo);
      if (request.allow === 'all') faults.allow();
      else if (request.allow) faults.allow(request.allow);
      if (request.cutStore === true) faults.cutStore();
      if (request.cutStore === false) faults.restoreStore();
      return { dropped: faults.droppedPeers(), storeCut: faults.storeCut };
    }
    case 'stop':
      setImmediate(() => void stop());
      return true;
    case 'load':
      return runLoad(node, request);
    case 'try-call':
      return node
        .callByName(request.kind, request.entityId, request.handler, request.message, {
          timeoutMs: request.timeoutMs,
          idempotencyKey: request.idempotencyKey,
        })
        .then(
          (value): TryCallResult => ({ ok: true, value }),
          (error: unknown): TryCallResult => ({ ok: false, error: errorToShape(error) }),
        );
    case 'teams':
      return teams(node);
    case 'pubsub':
      return pubsubOp(node, request);
    case 'map':
      return mapOp(node, request);
  }
}

let teamProjection: { view: TeamsView; projection: Projection } | null = null;

/** The team view of TeamMember's events, tailed from the store-wide log since the first request. */
function teams(node: ConcordNode): TeamsResult {
  if (!teamProjection) {
    const view = new TeamsView();
    const projection = new Projection(node.events, {
      streamPrefix: `${TeamMember.kind}/`,
      apply: (event) => view.apply(event),
      pollMs: 50,
    });
    projection.start();
    teamProjection = { view, projection };
  }
  return { teams: teamProjection.view.teams(), applied: teamProjection.projection.eventsApplied };
}

/** Closed-loop load from inside the node: `concurrency` callers, each waiting for its reply. */
async function runLoad(node: ConcordNode, request: Extract<IpcRequest, { op: 'load' }>): Promise<LoadResult> {
  const histogram = hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 60_000_000,
    numberOfSignificantValueDigits: 3,
  });
  let ops = 0;
  let errors = 0;
  let measuring = false;
  let running = true;
  let counter = 0;
  const ids = request.ids;
  const worker = async (w: number) => {
    let i = w;
    while (running) {
      i = (i * 1103515245 + 12345) >>> 0;
      const id = ids[i % ids.length]!;
      const write = request.writeRatio > 0 && Math.random() < request.writeRatio;
      const started = performance.now();
      try {
        if (write) await node.callByName(request.kind, id, 'set', `v${counter++}`);
        else await node.callByName(request.kind, id, 'get', undefined);
        if (measuring) {
          histogram.recordValue(Math.max(1, Math.round((performance.now() - started) * 1000)));
          ops++;
        }
      } catch {
        if (measuring) errors++;
      }
    }
  };
  const workers = Array.from({ length: request.concurrency }, (_, w) => worker(w + 1));
  await new Promise((resolve) => setTimeout(resolve, request.warmupMs ?? 1000));
  measuring = true;
  const cpuStart = process.cpuUsage();
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, request.durationMs));
  measuring = false;
  const durationMs = performance.now() - started;
  const cpu = process.cpuUsage(cpuStart);
  running = false;
  await Promise.all(workers);
  const result: LoadResult = {
    ops,
    errors,
    durationMs,
    p50: histogram.getValueAtPercentile(50),
    p90: histogram.getValueAtPercentile(90),
    p99: histogram.getValueAtPercentile(99),
    max: histogram.maxValue,
    cpuUserMs: cpu.user / 1000,
    cpuSystemMs: cpu.system / 1000,
  };
  histogram.destroy();
  return result;
}

void main();
