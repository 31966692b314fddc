/**
 * Multi-node test support: real node processes (forked from the compiled build, driven
 * over IPC) on a real store, for each store backend.
 */

import { randomBytes } from 'node:crypto';
import { afterEach } from 'vitest';
import { shardOf } from '../../src/cluster/hash.js';
import type { IpcNodeConfig } from '../../src/testing/ipc-protocol.js';
import { misplacedShards } from '../../src/testing/placement.js';
import { ProcessNode } from '../../src/testing/process-node.js';
import { createTestDatabase } from './pg.js';
import { tempSqliteUrl } from './tmp.js';

export type Backend = 'sqlite' | 'postgres';
export const backends: Backend[] = ['sqlite', 'postgres'];

export async function freshStoreUrl(backend: Backend): Promise<string> {
  return backend === 'sqlite' ? tempSqliteUrl() : createTestDatabase();
}

const started: ProcessNode[] = [];

/** Kill every node a test started, even when it failed half-way. */
afterEach(async () => {
  const nodes = started.splice(0);
  for (const node of nodes) node.resume();
  await Promise.all(nodes.map((node) => (node.running ? node.kill() : Promise.resolve())));
});

export interface ClusterOptions {
  store: string;
  nodes: number;
  leaseTtlMs?: number;
  callTimeoutMs?: number;
  shardCount?: number;
  secret?: string;
  names?: string[];
}

export function nodeConfig(options: ClusterOptions, name: string): IpcNodeConfig {
  return {
    name,
    store: options.store,
    secret: options.secret ?? 'concord-test-cluster-secret',
    leaseTtlMs: options.leaseTtlMs,
    callTimeoutMs: options.callTimeoutMs,
    shardCount: options.shardCount,
    faultInjection: true,
  };
}

/** Start one node process and track it for cleanup. */
export async function startNode(config: IpcNodeConfig): Promise<ProcessNode> {
  const node = new ProcessNode(config);
  started.push(node);
  await node.start();
  return node;
}

/** Start N nodes one after another (each joins the cluster the previous ones formed). */
export async function startCluster(options: ClusterOptions): Promise<ProcessNode[]> {
  const names = options.names ?? Array.from({ length: options.nodes }, (_, i) => `n${i + 1}`);
  const nodes: ProcessNode[] = [];
  for (const name of names) nodes.push(await startNode(nodeConfig(options, name)));
  await waitForStableOwnership(nodes, options.shardCount ?? 256);
  return nodes;
}

export interface NodeStatus {
  self: string;
  ready: boolean;
  shards: { count: number; held: number[]; owners: Record<string, number>; unowned: number };
  host: { fenced: number; commits: number; activations: number; turns: number; replays: number };
  router: { localCalls: number; remoteCalls: number; retries: number };
}

export async function status(node: ProcessNode): Promise<NodeStatus> {
  return (await node.status()) as unknown as NodeStatus;
}

/**
 * Wait until ownership has settled on exactly the rendezvous assignment over these nodes:
 * every shard held by its desired owner and by no one else.
 */
export async function waitForStableOwnership(
  nodes: ProcessNode[],
  shardCount: number,
  timeoutMs = 15_000,
): Promise<void> {
  const names = nodes.map((n) => n.name);
  await eventually(async () => {
    const held = await Promise.all(nodes.map(async (n) => new Set((await status(n)).shards.held)));
    const misplaced = misplacedShards(names, held, shardCount);
    if (misplaced > 0) {
      throw new Error(
        `ownership not settled: ${misplaced} misplaced (${held.map((h) => h.size).join('+')} of ${shardCount})`,
      );
    }
  }, timeoutMs);
}

export async function eventually<T>(fn: () => Promise<T>, timeoutMs = 10_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) throw lastError;
    await sleep(intervalMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Entity ids whose shard is currently held by `node`. */
export async function idsOwnedBy(node: ProcessNode, kind: string, count: number, shardCount = 256): Promise<string[]> {
  const held = new Set((await status(node)).shards.held);
  const ids: string[] = [];
  for (let i = 0; ids.length < count; i++) {
    const id = `e-${i}`;
    if (held.has(shardOf(kind, id, shardCount))) ids.push(id);
    if (i > 100_000) throw new Error(`${node.name} holds no shards`);
  }
  return ids;
}

export function randomSecret(): string {
  return randomBytes(12).toString('hex');
}

export { ProcessNode };
