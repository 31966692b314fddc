/**
 * Core figures of the runtime, measured on real node processes:
 *   node dist/bench/core.js [--store sqlite|postgres-url] [--runs 5] [--seconds 5]
 *
 * - failover after kill -9: from the kill to the first successful call on every shard the
 *   dead node held (median of N runs);
 * - the longest call pause while a third node joins a loaded 2-node cluster;
 * - get / set / mixed throughput with p50/p99 from inside node 1 of a 2-node cluster
 *   (1,000 entities, 64 concurrent callers, library API).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { shardOf } from '../src/cluster/hash.js';
import type { IpcNodeConfig, LoadResult } from '../src/testing/ipc-protocol.js';
import { misplacedShards } from '../src/testing/placement.js';
import { ProcessNode } from '../src/testing/process-node.js';

const { values } = parseArgs({
  options: {
    store: { type: 'string', default: 'sqlite' },
    runs: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '5' },
    only: { type: 'string' },
  },
});

const SHARDS = 256;
const runs = Number(values.runs);
const seconds = Number(values.seconds);

function freshStore(): string {
  if (values.store === 'sqlite') return `sqlite:${join(mkdtempSync(join(tmpdir(), 'concord-bench-')), 'c.db')}`;
  return values.store!;
}

function config(store: string, name: string): IpcNodeConfig {
  return { name, store, secret: 'concord-bench-secret', faultInjection: false };
}

async function cluster(store: string, names: string[]): Promise<ProcessNode[]> {
  const nodes = await Promise.all(
    names.map(async (name) => {
      const node = new ProcessNode(config(store, name));
      await node.start();
      return node;
    }),
  );
  await settle(nodes);
  return nodes;
}

async function settle(nodes: ProcessNode[]): Promise<void> {
  const names = nodes.map((n) => n.name);
  for (;;) {
    const held = await Promise.all(
      nodes.map(async (n) => new Set(((await n.status()) as { shards: { held: number[] } }).shards.held)),
    );
    if (misplacedShards(names, held, SHARDS) === 0) return;
    await sleep(50);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function failoverOnce(): Promise<number> {
  const store = freshStore();
  const [a, b] = await cluster(store, ['n1', 'n2']);
  const held = ((await b!.status()) as { shards: { held: number[] } }).shards.held;
  // One entity on every shard of the victim.
  const byShard = new Map<number, string>();
  for (let i = 0; byShard.size < held.length; i++) {
    const s = shardOf('register', `f${i}`, SHARDS);
    if (held.includes(s) && !byShard.has(s)) byShard.set(s, `f${i}`);
  }
  await Promise.all([...byShard.values()].map((id) => a!.call('register', id, 'set', 'x')));
  const killed = performance.now();
  await b!.kill();
  const times = await Promise.all(
    [...byShard.values()].map(async (id) => {
      await a!.call('register', id, 'get', undefined, 20_000);
      return performance.now() - killed;
    }),
  );
  await a!.kill();
  return Math.max(...times);
}

async function load(node: ProcessNode, writeRatio: number, ms: number, concurrency = 64): Promise<LoadResult> {
  const ids = Array.from({ length: 1000 }, (_, i) => `b${i}`);
  return (await node.request({
    op: 'load',
    kind: 'register',
    ids,
    writeRatio,
    concurrency,
    durationMs: ms,
    warmupMs: 1000,
  })) as LoadResult;
}

function row(label: string, r: LoadResult): string {
  const ops = (r.ops / r.durationMs) * 1000;
  return `| ${label} | ${Math.round(ops).toLocaleString('en-US')} | ${(r.p50 / 1000).toFixed(2)} | ${(r.p99 / 1000).toFixed(2)} | ${(r.max / 1000).toFixed(1)} | ${r.errors} |`;
}

async function main(): Promise<void> {
  const only = values.only?.split(',');
  console.log(
    `concord core figures — store ${values.store === 'sqlite' ? 'SQLite' : 'PostgreSQL'}, Node ${process.version}\n`,
  );

  if (!only || only.includes('throughput')) {
    const [n1, n2] = await cluster(freshStore(), ['n1', 'n2']);
    console.log(
      '| workload (2 nodes, caller in n1, 1,000 entities, C=64) | ops/s | p50 ms | p99 ms | max ms | errors |',
    );
    console.log('|---|---|---|---|---|---|');
    console.log(row('get (R)', await load(n1!, 0, seconds * 1000)));
    console.log(row('90% get / 10% set (M)', await load(n1!, 0.1, seconds * 1000)));
    console.log(row('set (W, strict durability)', await load(n1!, 1, seconds * 1000)));
    await Promise.all([n1!.kill(), n2!.kill()]);
    console.log();
  }

  if (!only || only.includes('join')) {
    const store = freshStore();
    const [n1, n2] = await cluster(store, ['n1', 'n2']);
    const during = Promise.all([load(n1!, 0.1, 4000, 16), load(n2!, 0.1, 4000, 16)]);
    await sleep(2000);
    const n3 = new ProcessNode(config(store, 'n3'));
    await n3.start();
    await settle([n1!, n2!, n3]);
    const results = await during;
    console.log(
      `join under load: longest call ${(Math.max(...results.map((r) => r.max)) / 1000).toFixed(0)} ms, errors ${results.reduce((s, r) => s + r.errors, 0)}`,
    );
    const leaving = Promise.all([load(n1!, 0.1, 3000, 16), load(n2!, 0.1, 3000, 16)]);
    await sleep(1500);
    await n3.stop();
    const left = await leaving;
    console.log(
      `graceful leave under load: longest call ${(Math.max(...left.map((r) => r.max)) / 1000).toFixed(0)} ms, errors ${left.reduce((s, r) => s + r.errors, 0)}`,
    );
    await Promise.all([n1!.kill(), n2!.kill()]);
  }

  if (!only || only.includes('failover')) {
    const samples: number[] = [];
    for (let i = 0; i < runs; i++) samples.push(await failoverOnce());
    const sorted = [...samples].sort((x, y) => x - y);
    console.log(
      `failover after kill -9 (every shard of the dead node served again): median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0)} ms; runs: ${samples.map((s) => s.toFixed(0)).join(', ')} ms`,
    );
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
