import { EntityState } from '../examples/entity-state/entity.js';
import { shardOf } from '../src/cluster/hash.js';
import { BenchChild } from './child.js';
import { type ClusterOptions, nodeConfig, SHARDS, settle, startCluster, stopCluster } from './cluster.js';
import { sleep } from './load-loop.js';
import type { MemorySample } from './protocol.js';
import type { StoreBackend, StoreFactory } from './stores.js';
import type { ActivationResult, BenchOptions, FailoverResult, MemoryResult, PauseResult, ScaleSizes } from './types.js';

/**
 * The measurements beyond throughput, on concord only: cold activations (at ~0 and at the
 * largest memory point already active), memory per active idle entity, failover after
 * kill -9, and the longest call pause while a node joins and while one leaves gracefully.
 */

const ACTIVATION_CONCURRENCY = 1000;

export interface Tracked {
  track(nodes: BenchChild[]): void;
}

function clusterOptions(store: string, options: BenchOptions, http = false): ClusterOptions {
  return { system: 'concord', store, durability: options.durability, http, maxActiveEntities: 4_000_000 };
}

/** Cold activations/s and memory per entity, on one 2-node cluster filled step by step. */
export async function activationAndMemory(
  factory: StoreFactory,
  options: BenchOptions,
  sizes: ScaleSizes,
  tracked: Tracked,
  wantActivation: boolean,
  wantMemory: boolean,
): Promise<{ activations: ActivationResult[]; memory: MemoryResult[] }> {
  const backend = factory.backend;
  // A long lease: the forced full GCs of the memory samples stop the event loop for a while
  // with a million entities, and a lost lease would passivate a node's entities mid-run.
  const nodes = await startCluster(
    { ...clusterOptions(await factory.fresh(), options), leaseTtlMs: 15_000 },
    options.nodes,
  );
  tracked.track(nodes);
  const activations: ActivationResult[] = [];
  const memory: MemoryResult[] = [];
  try {
    const caller = nodes[0]!;
    const total = async () =>
      (await Promise.all(nodes.map((n) => n.status()))).reduce((s, n) => s + n.activeEntities, 0);
    // A little warm-up so code paths are compiled before anything is measured.
    await caller.activate('warm', 0, Math.min(10_000, sizes.coldActivations * 2), ACTIVATION_CONCURRENCY);
    const base = await Promise.all(nodes.map((n) => n.memory()));
    const baseActive = await total();
    const cold = async (prefix: string) => {
      const alreadyActive = await total();
      const result = await caller.activate(prefix, 0, sizes.coldActivations, ACTIVATION_CONCURRENCY);
      const row: ActivationResult = {
        store: backend,
        alreadyActive,
        count: result.count,
        perSecond: (result.count / result.elapsedMs) * 1000,
        errors: result.errors,
      };
      options.log?.(
        `  cold activations with ${alreadyActive.toLocaleString('en-US')} active: ${Math.round(row.perSecond).toLocaleString('en-US')}/s`,
      );
      activations.push(row);
    };
    if (wantActivation) await cold('cold0-');
    let filled = 0;
    for (const point of wantMemory || wantActivation ? sizes.memoryPoints : []) {
      // Fill in chunks so the callers' promise arrays stay small.
      while ((await total()) - baseActive < point) {
        const chunk = Math.min(50_000, point - ((await total()) - baseActive));
        await caller.activate('m', filled, chunk, ACTIVATION_CONCURRENCY);
        filled += chunk;
      }
      if (wantMemory) {
        const now = await Promise.all(nodes.map((n) => n.memory()));
        memory.push(perEntity(backend, base, now));
        const last = memory[memory.length - 1]!;
        options.log?.(
          `  memory at ${last.activeEntities.toLocaleString('en-US')} active: heap ${Math.round(last.heapBytesPerEntity)} B, RSS ${Math.round(last.rssBytesPerEntity)} B per entity`,
        );
      }
    }
    if (wantActivation) await cold('cold1-');
  } finally {
    await stopCluster(nodes);
  }
  return { activations, memory };
}

function perEntity(store: StoreBackend, base: MemorySample[], now: MemorySample[]): MemoryResult {
  const sum = (samples: MemorySample[], f: (s: MemorySample) => number) => samples.reduce((s, x) => s + f(x), 0);
  const entities = sum(now, (s) => s.activeEntities) - sum(base, (s) => s.activeEntities);
  return {
    store,
    activeEntities: sum(now, (s) => s.activeEntities),
    heapBytesPerEntity: (sum(now, (s) => s.heapUsed) - sum(base, (s) => s.heapUsed)) / entities,
    rssBytesPerEntity: (sum(now, (s) => s.rss) - sum(base, (s) => s.rss)) / entities,
  };
}

/** Failover after kill -9: from the kill to the first successful call on every shard the dead node held. */
export async function failover(
  factory: StoreFactory,
  options: BenchOptions,
  sizes: ScaleSizes,
  tracked: Tracked,
): Promise<FailoverResult> {
  const runs: number[] = [];
  let shardsPerRun = 0;
  for (let run = 0; run < sizes.failoverRuns; run++) {
    const nodes = await startCluster(clusterOptions(await factory.fresh(), options), 2);
    tracked.track(nodes);
    try {
      const [a, b] = nodes as [BenchChild, BenchChild];
      const held = new Set((await b.status()).held);
      const byShard = new Map<number, string>();
      for (let i = 0; byShard.size < held.size; i++) {
        const s = shardOf(EntityState.kind, `f${i}`, SHARDS);
        if (held.has(s) && !byShard.has(s)) byShard.set(s, `f${i}`);
      }
      await Promise.all([...byShard.values()].map((id) => a.call(id, 'set', 10_000)));
      shardsPerRun = byShard.size;
      const killed = performance.now();
      await b.kill();
      const times = await Promise.all(
        [...byShard.values()].map(async (id) => {
          for (;;) {
            try {
              await a.call(id, 'get', 20_000);
              return performance.now() - killed;
            } catch (error) {
              if (performance.now() - killed > 30_000) throw error;
              // Unavailable comes at once while the shard has not moved: do not spin.
              await sleep(5);
            }
          }
        }),
      );
      runs.push(Math.max(...times));
      options.log?.(`  failover run ${run + 1}: ${Math.round(runs[runs.length - 1]!)} ms (${byShard.size} shards)`);
    } finally {
      await stopCluster(nodes);
    }
  }
  const sorted = [...runs].sort((x, y) => x - y);
  return { store: factory.backend, runsMs: runs, medianMs: sorted[Math.floor(sorted.length / 2)]!, shardsPerRun };
}

/** The longest call while a third node joins a loaded 2-node cluster, then while it leaves (SIGTERM). */
export async function joinAndLeave(
  factory: StoreFactory,
  options: BenchOptions,
  sizes: ScaleSizes,
  tracked: Tracked,
): Promise<PauseResult[]> {
  const store = await factory.fresh();
  const nodes = await startCluster(clusterOptions(store, options), 2);
  tracked.track(nodes);
  const results: PauseResult[] = [];
  const warmupMs = 500;
  const load = () =>
    Promise.all(
      nodes.slice(0, 2).map((node) =>
        node.load({
          prefix: 'j',
          count: options.entities,
          writeRatio: 0.1,
          concurrency: 16,
          warmupMs,
          durationMs: sizes.joinLoadMs,
        }),
      ),
    );
  try {
    for (const event of ['join', 'leave'] as const) {
      const during = load();
      await sleep(warmupMs + 500);
      const started = performance.now();
      if (event === 'join') {
        const third = new BenchChild(nodeConfig(clusterOptions(store, options), 'n3'));
        nodes.push(third);
        tracked.track([third]);
        await third.start();
        await settle(nodes);
      } else {
        await nodes[2]!.stop();
        nodes.pop();
        await settle(nodes);
      }
      const rebalanceMs = performance.now() - started;
      const loads = await during;
      const row: PauseResult = {
        store: factory.backend,
        event,
        longestCallMs: Math.max(...loads.map((r) => r.max)) / 1000,
        errors: loads.reduce((s, r) => s + r.errors, 0),
        errorCodes: mergeCounts(loads.map((r) => r.errorCodes)),
        rebalanceMs,
      };
      if (rebalanceMs > sizes.joinLoadMs - 500) {
        options.log?.(`  warning: the ${event} took ${Math.round(rebalanceMs)} ms, longer than the load around it`);
      }
      options.log?.(
        `  ${event} under load: longest call ${row.longestCallMs.toFixed(0)} ms, errors ${row.errors}${row.errors ? ` ${JSON.stringify(row.errorCodes)}` : ''}, rebalanced in ${Math.round(rebalanceMs)} ms`,
      );
      results.push(row);
    }
  } finally {
    await stopCluster(nodes);
  }
  return results;
}

function mergeCounts(counts: Record<string, number>[]): Record<string, number> {
  const merged: Record<string, number> = {};
  for (const c of counts) for (const [k, v] of Object.entries(c)) merged[k] = (merged[k] ?? 0) + v;
  return merged;
}
