import { loadavg } from 'node:os';
import { EntityState } from '../examples/entity-state/entity.js';
import { rendezvousOwner, shardOf } from '../src/cluster/hash.js';
import { BenchChild } from './child.js';
import { type ClusterOptions, nodeConfig, SHARDS } from './cluster.js';
import type { Tracked } from './extras.js';
import { sleep } from './load-loop.js';
import type { StoreFactory } from './stores.js';
import type { BenchOptions, ScaleResult, StoreOpKind } from './types.js';

/**
 * Many nodes (issue 12): for each N, a fresh cluster of N node processes on one store, and
 * - the time from spawning them to every shard owned and every node ready (and to the final,
 *   rendezvous placement);
 * - the store operations each idle node makes per second, by kind, and the cluster's total;
 * - CPU and RSS per idle node, and (PostgreSQL) the server connections the cluster holds;
 * - the time until every node's `GET /cluster` shard map is equal, complete and the rendezvous
 *   placement, after one node joins and after it leaves (SIGTERM);
 * - failover after kill -9 of one node: until each of its shards answered a call again.
 */

/** Which kind of store work each Store method is (the rest is entity traffic: none when idle). */
const KIND: Record<string, StoreOpKind> = {
  registerNode: 'lease',
  renewLease: 'lease',
  listShards: 'shardMap',
  listNodes: 'membership',
  reportSuspicions: 'membership',
  evictMember: 'membership',
  setNodeStatus: 'membership',
  acknowledgeEviction: 'membership',
  removeNode: 'membership',
  pruneNodes: 'membership',
  claimShard: 'claims',
  releaseShard: 'claims',
};

export const STORE_OP_KINDS: readonly StoreOpKind[] = ['lease', 'shardMap', 'membership', 'claims', 'other'];

/** ConcordNode's default lease ttl. */
const DEFAULT_LEASE_MS = 1500;

interface ClusterBody {
  members: { name: string; status: string }[];
  shards: { map: (string | null)[] };
}

export async function scaleSection(
  factory: StoreFactory,
  options: BenchOptions,
  counts: number[],
  idleSeconds: number,
  tracked: Tracked,
): Promise<ScaleResult[]> {
  const results: ScaleResult[] = [];
  for (const n of counts) {
    options.log?.(`  ${n} nodes on ${factory.backend}`);
    results.push(await oneCluster(factory, options, n, idleSeconds, tracked));
  }
  return results;
}

async function oneCluster(
  factory: StoreFactory,
  options: BenchOptions,
  count: number,
  idleSeconds: number,
  tracked: Tracked,
): Promise<ScaleResult> {
  const log = (line: string) => options.log?.(`    ${line}`);
  const store = await factory.fresh();
  const leaseTtlMs = options.scaleLeaseMs ?? DEFAULT_LEASE_MS;
  const clusterOptions: ClusterOptions = {
    system: 'concord',
    store,
    durability: options.durability,
    http: true,
    leaseTtlMs,
  };
  const nodes = Array.from({ length: count }, (_, i) => new BenchChild(nodeConfig(clusterOptions, `n${i + 1}`)));
  const startTimeoutMs = 60_000 + count * 3000;
  // Filled in step by step: a step that fails (a timeout) is reported with what was measured before it.
  const result: ScaleResult = {
    store: factory.backend,
    nodes: count,
    leaseTtlMs,
    processesUpMs: Number.NaN,
    ownedMs: Number.NaN,
    settledMs: Number.NaN,
    startClaims: 0,
    idleSeconds: 0,
    storeOpsPerNodePerSecond: { lease: 0, shardMap: 0, membership: 0, claims: 0, other: 0 },
    storeOpsPerSecondByOp: {},
    clusterStoreOpsPerSecond: Number.NaN,
    idleCpuPercentPerNode: Number.NaN,
    rssMiBPerNode: Number.NaN,
    rssMiBMax: Number.NaN,
    storeConnections: null,
    joinAgreedMs: Number.NaN,
    leaveAgreedMs: Number.NaN,
    failoverMs: Number.NaN,
    failoverShards: 0,
    leaseFailures: {},
    slowRenewals: 0,
    maxLoopDelayMs: { start: 0, idle: 0, rest: 0 },
    loadAverage: Number.NaN,
    error: null,
  };
  try {
    // (a) Start: all at once, as a deployment of N replicas would.
    const spawned = performance.now();
    await Promise.all(nodes.map((node) => node.start(startTimeoutMs)));
    tracked.track(nodes);
    result.processesUpMs = performance.now() - spawned;
    await until(startTimeoutMs, 'every shard owned and every node ready', async () => {
      const statuses = await Promise.all(nodes.map((node) => node.status()));
      const owned = new Set(statuses.flatMap((s) => s.held));
      const unready = statuses.filter((s) => !s.ready).map((s) => `${s.name}: ${s.notReady}`);
      return owned.size === SHARDS && unready.length === 0
        ? true
        : `${owned.size} shards owned; not ready: ${unready.join('; ') || 'none'}`;
    });
    result.ownedMs = performance.now() - spawned;
    const names = nodes.map((node) => node.name);
    await agreement(nodes, names, startTimeoutMs);
    result.settledMs = performance.now() - spawned;

    // (b) Idle: store operations, CPU; then RSS and PostgreSQL connections.
    await sleep(1000);
    const before = await Promise.all(nodes.map((node) => Promise.all([node.storeOps(), node.cpu()])));
    result.startClaims = before.reduce((sum, [counters]) => sum + (counters.ops['claimShard'] ?? 0), 0);
    result.maxLoopDelayMs.start = Math.max(...before.map(([counters]) => counters.maxLoopDelayMs));
    log(
      `started: processes up ${fmt(result.processesUpMs)} ms, every shard owned and every node ready ${fmt(result.ownedMs)} ms, placement settled and agreed ${fmt(result.settledMs)} ms; ${result.startClaims} shard claims for ${SHARDS} shards`,
    );
    await sleep(idleSeconds * 1000);
    const after = await Promise.all(nodes.map((node) => Promise.all([node.storeOps(), node.cpu()])));
    result.loadAverage = loadavg()[0] ?? 0;
    result.maxLoopDelayMs.idle = Math.max(...after.map(([counters]) => counters.maxLoopDelayMs));
    const byOp: Record<string, number> = {};
    let cpuSeconds = 0;
    let windowSeconds = 0;
    nodes.forEach((_, i) => {
      const [ops0, cpu0] = before[i]!;
      const [ops1, cpu1] = after[i]!;
      const seconds = (cpu1.at - cpu0.at) / 1000;
      windowSeconds += seconds / count;
      cpuSeconds += (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / 1e6;
      for (const [op, value] of Object.entries(ops1.ops)) {
        byOp[op] = (byOp[op] ?? 0) + (value - (ops0.ops[op] ?? 0)) / seconds;
      }
    });
    const perNode = result.storeOpsPerNodePerSecond;
    for (const [op, rate] of Object.entries(byOp)) perNode[KIND[op] ?? 'other'] += rate / count;
    result.idleSeconds = windowSeconds;
    result.storeOpsPerSecondByOp = Object.fromEntries(Object.entries(byOp).filter(([, v]) => v > 0));
    result.clusterStoreOpsPerSecond = Object.values(byOp).reduce((sum, x) => sum + x, 0);
    result.idleCpuPercentPerNode = (cpuSeconds / count / windowSeconds) * 100;
    const rss = (await Promise.all(nodes.map((node) => node.memory()))).map((m) => m.rss);
    result.rssMiBPerNode = rss.reduce((sum, x) => sum + x, 0) / count / 2 ** 20;
    result.rssMiBMax = Math.max(...rss) / 2 ** 20;
    result.storeConnections = await factory.connections(store);
    log(
      `idle ${idleSeconds} s: ${fmt(result.clusterStoreOpsPerSecond)} store ops/s in all, ${(result.clusterStoreOpsPerSecond / count).toFixed(1)} per node (${STORE_OP_KINDS.map((k) => `${k} ${perNode[k].toFixed(2)}`).join(', ')}); CPU ${result.idleCpuPercentPerNode.toFixed(1)} % of a core per node; RSS ${result.rssMiBPerNode.toFixed(0)} MiB per node; load average ${result.loadAverage.toFixed(1)}${result.storeConnections === null ? '' : `; ${result.storeConnections} PostgreSQL connections`}`,
    );

    // (d) Join: one more node; then (SIGTERM) its leave.
    const joiner = new BenchChild(nodeConfig(clusterOptions, `n${count + 1}`));
    const joinAt = performance.now();
    nodes.push(joiner);
    await joiner.start(startTimeoutMs);
    tracked.track([joiner]);
    await agreement(nodes, [...names, joiner.name], 60_000);
    result.joinAgreedMs = performance.now() - joinAt;
    const leaveAt = performance.now();
    await joiner.stop();
    nodes.pop();
    await agreement(nodes, names, 60_000);
    result.leaveAgreedMs = performance.now() - leaveAt;
    log(
      `join: maps agreed ${fmt(result.joinAgreedMs)} ms after the spawn; leave: ${fmt(result.leaveAgreedMs)} ms after SIGTERM`,
    );

    // (c) Failover: one entity written on each shard of n2, kill -9 n2, each answered again via n1.
    const [caller, victim] = nodes as [BenchChild, BenchChild];
    const held = new Set((await victim.status()).held);
    const byShard = new Map<number, string>();
    for (let i = 0; byShard.size < held.size; i++) {
      const s = shardOf(EntityState.kind, `s${i}`, SHARDS);
      if (held.has(s) && !byShard.has(s)) byShard.set(s, `s${i}`);
    }
    await Promise.all([...byShard.values()].map((id) => caller.call(id, 'set', 10_000)));
    const killed = performance.now();
    await victim.kill();
    const times = await Promise.all(
      [...byShard.values()].map(async (id) => {
        for (;;) {
          try {
            await caller.call(id, 'get', 20_000);
            return performance.now() - killed;
          } catch (error) {
            if (performance.now() - killed > 30_000) throw error;
            await sleep(5);
          }
        }
      }),
    );
    result.failoverMs = Math.max(...times);
    result.failoverShards = byShard.size;
    log(`failover after kill -9: ${fmt(result.failoverMs)} ms (${byShard.size} shards)`);
  } catch (error) {
    result.error = error instanceof Error ? error.message : String(error);
    log(`failed: ${result.error}`);
  } finally {
    if (!Number.isFinite(result.loadAverage)) result.loadAverage = loadavg()[0] ?? 0;
    // Lease renewals that failed anywhere during the run (a node stalled past its lease, or evicted).
    const counters = await Promise.all(
      nodes.filter((node) => node.running).map((node) => node.storeOps().catch(() => null)),
    );
    for (const c of counters) {
      result.slowRenewals += c?.slowRenewals ?? 0;
      result.maxLoopDelayMs.rest = Math.max(result.maxLoopDelayMs.rest, c?.maxLoopDelayMs ?? 0);
      for (const [reason, n] of Object.entries(c?.leaseFailures ?? {})) {
        if (n > 0) result.leaseFailures[reason] = (result.leaseFailures[reason] ?? 0) + n;
      }
    }
    log(
      `lease renewals slower than 250 ms: ${result.slowRenewals}; failed: ${JSON.stringify(result.leaseFailures)}; longest event-loop delay: start ${fmt(result.maxLoopDelayMs.start)} ms, idle ${fmt(result.maxLoopDelayMs.idle)} ms, later ${fmt(result.maxLoopDelayMs.rest)} ms`,
    );
    await Promise.all(nodes.map((node) => node.kill()));
  }
  return result;
}

/**
 * Poll every node's `GET /cluster` until all shard maps are equal, complete and the rendezvous
 * placement over `names`.
 */
async function agreement(nodes: BenchChild[], names: string[], timeoutMs: number): Promise<void> {
  const want = Array.from({ length: SHARDS }, (_, s) => rendezvousOwner(s, names));
  await until(timeoutMs, 'every shard map equal, complete and placed', async () => {
    const maps = await Promise.all(nodes.map((node) => clusterMap(node)));
    const off = maps.map((body) =>
      body === null ? SHARDS : want.filter((owner, s) => body.shards.map[s] !== owner).length,
    );
    if (off.every((n) => n === 0)) return true;
    const others = maps[0]?.members.filter((m) => m.status !== 'alive').map((m) => `${m.name} ${m.status}`) ?? [];
    return `shards off the placement per node: ${off.join(', ')}; members not alive (n1's view): ${others.join(', ') || 'none'}`;
  });
}

async function clusterMap(node: BenchChild): Promise<ClusterBody | null> {
  try {
    const response = await fetch(`${node.httpUrl}/cluster`);
    if (!response.ok) return null;
    return (await response.json()) as ClusterBody;
  } catch {
    return null;
  }
}

/**
 * Poll `check` until it answers true; the time that took. Otherwise it says what is still
 * missing, for the error after `timeoutMs`. Every 200 ms: each poll asks every node (IPC or
 * HTTP), and with dozens of nodes on a few cores faster polling is load of its own.
 */
async function until(timeoutMs: number, what: string, check: () => Promise<true | string>): Promise<number> {
  const started = performance.now();
  for (;;) {
    const answer = await check();
    if (answer === true) return performance.now() - started;
    if (performance.now() - started > timeoutMs)
      throw new Error(`not reached within ${timeoutMs} ms: ${what} (${answer})`);
    await sleep(POLL_MS);
  }
}

const POLL_MS = 200;

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}
