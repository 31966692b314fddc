import { EntityState } from '../examples/entity-state/entity.js';
import { shardOf } from '../src/cluster/hash.js';
import { detectionBoundMs } from '../src/cluster/membership.js';
import { type ClusterNode, LocalCluster } from '../src/testing/local-cluster.js';
import { sleep } from './load-loop.js';
import type { StoreFactory } from './stores.js';
import type { BenchOptions, PartitionResult, ScaleSizes } from './types.js';

/**
 * Detection under partial failure: three `concord node` processes (through concord-cluster/testing's
 * LocalCluster, with the default lease and suspicion timeout), the third cut off from the other
 * two (not from the store) — then, from the cut: when its /readyz turns 503, when the others
 * have evicted it, and when every entity it owned (one per shard) is served again through the
 * others. Healed and rejoined between runs.
 */

const LEASE_TTL_MS = 1500;

interface ClusterBody {
  members: { name: string; status: string; shards: number }[];
  shards: { map: (string | null)[] };
}

export async function partitionDetection(
  factory: StoreFactory,
  options: BenchOptions,
  sizes: ScaleSizes,
): Promise<PartitionResult> {
  const cluster = await LocalCluster.start({ nodes: 3, store: await factory.fresh() });
  const runs: PartitionResult['runs'] = [];
  try {
    const [n1, n2, n3] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode];
    for (let run = 0; run < sizes.failoverRuns; run++) {
      const ids = await settledIds(n1, 'n3', `pd${run}`);
      const cutAt = performance.now();
      await cluster.partition(['n3'], ['n1', 'n2']);
      let unreadyMs = Number.NaN;
      let evictedMs = Number.NaN;
      const watch = (async () => {
        while (Number.isNaN(unreadyMs) || Number.isNaN(evictedMs)) {
          if (performance.now() - cutAt > 30_000) throw new Error('n3 was neither unready nor evicted within 30 s');
          if (Number.isNaN(unreadyMs) && (await n3.get('/readyz')).status === 503)
            unreadyMs = performance.now() - cutAt;
          if (Number.isNaN(evictedMs)) {
            const { body } = await n1.get<ClusterBody>('/cluster');
            if (body.members.find((m) => m.name === 'n3')?.status === 'evicted') evictedMs = performance.now() - cutAt;
          }
          await sleep(10);
        }
      })();
      const served = await Promise.all(
        ids.map(async (id, i) => {
          const via = i % 2 === 0 ? n1 : n2;
          for (;;) {
            const answer = await via.get(`/entities/${id}`).catch(() => ({ status: 0 }));
            if (answer.status === 200) return performance.now() - cutAt;
            if (performance.now() - cutAt > 30_000) throw new Error(`${id} not served within 30 s`);
            await sleep(10);
          }
        }),
      );
      await watch;
      const row = { unreadyMs, evictedMs, servedMs: Math.max(...served), entities: ids.length };
      runs.push(row);
      options.log?.(
        `  partition run ${run + 1}: unready ${Math.round(unreadyMs)} ms, evicted ${Math.round(evictedMs)} ms, all ${ids.length} entities served ${Math.round(row.servedMs)} ms after the cut`,
      );
      await cluster.heal();
      await cluster.eventually(async () => {
        if ((await n3.get('/readyz')).status !== 200) throw new Error('n3 not back yet');
      });
    }
  } finally {
    await cluster.stop(5000);
  }
  return {
    store: factory.backend,
    runs,
    median: {
      unreadyMs: median(runs.map((r) => r.unreadyMs)),
      evictedMs: median(runs.map((r) => r.evictedMs)),
      servedMs: median(runs.map((r) => r.servedMs)),
    },
    boundMs: detectionBoundMs({ leaseTtlMs: LEASE_TTL_MS }),
  };
}

/** Once every node owns shards: one id per shard that `owner` holds. */
async function settledIds(node: ClusterNode, owner: string, prefix: string): Promise<string[]> {
  for (let attempt = 0; ; attempt++) {
    const { body } = await node.get<ClusterBody>('/cluster');
    const settled = body.members.filter((m) => m.status === 'alive' && m.shards > 0).length === 3;
    if (settled) {
      const byShard = new Map<number, string>();
      const held = body.shards.map.filter((o) => o === owner).length;
      for (let i = 0; byShard.size < held && i < 1_000_000; i++) {
        const shard = shardOf(EntityState.kind, `${prefix}-${i}`, body.shards.map.length);
        if (body.shards.map[shard] === owner && !byShard.has(shard)) byShard.set(shard, `${prefix}-${i}`);
      }
      return [...byShard.values()];
    }
    if (attempt > 300) throw new Error('the cluster did not settle');
    await sleep(100);
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}
