import { misplacedShards } from '../src/testing/placement.js';
import { BenchChild } from './child.js';
import { sleep } from './load-loop.js';
import { type BenchNodeConfig, type Durability, nodeSystem, type SystemKind } from './protocol.js';

/** Start and settle small clusters of bench node processes. */

export const SHARDS = 256;

export interface ClusterOptions {
  system: SystemKind;
  store: string;
  durability: Durability;
  http: boolean;
  maxActiveEntities?: number;
  leaseTtlMs?: number;
}

/** TLS files every concord bench node uses (set by runBench with --tls; one certificate for all). */
let benchTls: BenchNodeConfig['tls'] | undefined;

export function setBenchTls(files: BenchNodeConfig['tls'] | undefined): void {
  benchTls = files;
}

export function nodeConfig(options: ClusterOptions, name: string): BenchNodeConfig {
  return {
    ...(benchTls !== undefined && nodeSystem(options.system) === 'concord' ? { tls: benchTls } : {}),
    name,
    system: nodeSystem(options.system),
    store: options.store,
    secret: 'concord-bench-secret',
    durability: options.durability,
    httpPort: options.http ? 0 : null,
    maxActiveEntities: options.maxActiveEntities,
    leaseTtlMs: options.leaseTtlMs,
  };
}

export async function startCluster(options: ClusterOptions, count: number, prefix = 'n'): Promise<BenchChild[]> {
  const nodes = Array.from({ length: count }, (_, i) => new BenchChild(nodeConfig(options, `${prefix}${i + 1}`)));
  try {
    await Promise.all(nodes.map((node) => node.start()));
    if (nodeSystem(options.system) === 'concord') await settle(nodes);
  } catch (error) {
    await Promise.all(nodes.map((node) => node.kill()));
    throw error;
  }
  return nodes;
}

/** Wait until every shard is held by exactly its rendezvous owner among `nodes`. */
export async function settle(nodes: BenchChild[], timeoutMs = 30_000): Promise<void> {
  const names = nodes.map((n) => n.name);
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const held = await Promise.all(nodes.map(async (n) => new Set((await n.status()).held)));
    const misplaced = misplacedShards(names, held, SHARDS);
    if (misplaced === 0) return;
    if (performance.now() > deadline)
      throw new Error(`cluster not settled after ${timeoutMs} ms (${misplaced} misplaced)`);
    await sleep(50);
  }
}

/**
 * kill -9: the cluster's store is thrown away anyway. Under CONCORD_BENCH_NODE_ARGS (e.g.
 * `--cpu-prof`) SIGTERM instead, so the children exit normally and write their profiles.
 */
export async function stopCluster(nodes: BenchChild[]): Promise<void> {
  const graceful = Boolean(process.env['CONCORD_BENCH_NODE_ARGS']);
  await Promise.all(nodes.map((node) => (graceful ? node.stop(10_000) : node.kill())));
}
