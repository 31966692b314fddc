/**
 * The cluster secret end to end, with real `concord node` processes (LocalCluster):
 *
 * - a node started with another secret against a running, loaded cluster is refused before it
 *   joins (exit 1, a clear message, no membership row, no shard moved, the load unaffected),
 *   and every running node shows the refusal in /cluster and /metrics — on both stores;
 * - a secret rotation, node by node, with entity calls routed between the nodes at every step,
 *   after which a node holding only the old secret is refused — on both stores too.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { shardOf } from '../../src/cluster/hash.js';
import { openStore } from '../../src/store/open.js';
import { type ClusterNode, LocalCluster } from '../../src/testing/local-cluster.js';
import { type Backend, backends, freshStoreUrl } from '../support/cluster.js';

const KIND = 'entity-state';
const STATES = ['working', 'finalized'] as const;

interface ClusterBody {
  clusterId: string;
  members: { name: string; status: string; connected: boolean; shards: number }[];
  shards: { count: number; held: number[]; owners: Record<string, number>; map: (string | null)[] };
  refusedJoins: { name: string; host: string; at: number; ageMs: number; reason: string }[];
}

let cluster: LocalCluster | null = null;
afterEach(async () => {
  await cluster?.destroy();
  cluster = null;
});

const strongSecret = () => randomBytes(24).toString('hex');

async function view(node: ClusterNode): Promise<ClusterBody> {
  return (await node.get<ClusterBody>('/cluster')).body;
}

/** Every running node sees every running node alive and connected, and one owner for every shard. */
async function waitSettled(c: LocalCluster): Promise<void> {
  const live = c.nodes.filter((n) => n.running);
  await c.eventually(
    async () => {
      for (const node of live) {
        const body = await view(node);
        const alive = body.members.filter((m) => m.status === 'alive' && m.connected).map((m) => m.name);
        if (alive.length !== live.length) throw new Error(`${node.name} sees ${alive.join(',')} alive and connected`);
        const owners = new Set(body.shards.map);
        if (owners.has(null) || live.some((n) => !owners.has(n.name))) {
          throw new Error(`${node.name}: shard map not settled`);
        }
        if (body.shards.held.length === 0) throw new Error(`${node.name} holds no shards yet`);
      }
    },
    { timeout: 20_000 },
  );
}

interface Sample {
  at: number;
  ok: boolean;
  detail: string;
}

/** Closed-loop PUT/GET /entities/:id on `ids` through every node in turn, until stopped. */
function steadyLoad(nodes: ClusterNode[], ids: string[], loops: number) {
  const samples: Sample[] = [];
  let running = true;
  const workers = Array.from({ length: loops }, async (_, w) => {
    for (let i = 0; running; i++) {
      const node = nodes[(w + i) % nodes.length]!;
      const id = ids[(w * 13 + i * 7) % ids.length]!;
      const at = performance.now();
      try {
        const result =
          i % 2 === 0
            ? await node.put(`/entities/${id}`, { state: STATES[i % 4 === 0 ? 0 : 1] })
            : await node.get(`/entities/${id}`);
        samples.push({ at, ok: result.status === 200, detail: `${node.name} ${id}: ${result.status}` });
      } catch (error) {
        samples.push({ at, ok: false, detail: `${node.name} ${id}: ${String(error)}` });
      }
    }
  });
  return {
    samples,
    async stop(): Promise<void> {
      running = false;
      await Promise.all(workers);
    },
  };
}

function share(samples: Sample[], from: number, to: number): { total: number; answered: number; failures: string[] } {
  const inWindow = samples.filter((s) => s.at >= from && s.at < to);
  const failures = inWindow.filter((s) => !s.ok).map((s) => s.detail);
  return { total: inWindow.length, answered: inWindow.length - failures.length, failures };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.each(backends)('a node with the wrong secret (%s)', (backend: Backend) => {
  it('is refused before it joins, the load goes on unharmed, and every node shows the refusal', async () => {
    const store = await freshStoreUrl(backend);
    cluster = await LocalCluster.start({ nodes: 3, store });
    const c = cluster;
    await waitSettled(c);
    const members = [...c.nodes];
    const before = await Promise.all(members.map(view));
    const ids = Array.from({ length: 50 }, (_, i) => `secret-load-${i}`);
    const load = steadyLoad(members, ids, 4);
    await sleep(2000);

    const intruder = await c.addNode('n4', { secret: strongSecret() });
    const launchedAt = performance.now();
    intruder.launch();
    const code = await Promise.race([intruder.waitExit(), sleep(10_000).then(() => 'still running' as const)]);
    const exitedAfterMs = performance.now() - launchedAt;
    expect(code).not.toBe('still running');
    expect(code).toBe(1);
    expect(exitedAfterMs).toBeLessThan(8000);
    expect(intruder.logs()).toContain(
      "n4 could not start: this node's cluster secret (CONCORD_SECRET) differs from the secret of the cluster recorded in this store",
    );
    expect(intruder.logs()).toContain(`(cluster id ${before[0]!.clusterId})`);

    const windowEnd = launchedAt + 2000;
    if (performance.now() < windowEnd) await sleep(windowEnd - performance.now());
    await load.stop();

    const beforeShare = share(load.samples, launchedAt - 2000, launchedAt);
    const afterShare = share(load.samples, launchedAt, windowEnd);
    console.log(
      `${backend}: answered ${beforeShare.answered}/${beforeShare.total} in the 2 s before the refused start, ` +
        `${afterShare.answered}/${afterShare.total} in the 2 s after; n4 exited after ${exitedAfterMs.toFixed(0)} ms`,
    );
    expect(beforeShare.total).toBeGreaterThan(50);
    expect(afterShare.total).toBeGreaterThan(50);
    expect(beforeShare.failures).toEqual([]);
    expect(afterShare.answered / afterShare.total).toBeGreaterThanOrEqual(beforeShare.answered / beforeShare.total);

    // Nothing of n4 in the membership, no shard moved, and the refusal visible on every node.
    const after = await Promise.all(members.map(view));
    for (const [i, body] of after.entries()) {
      expect(body.members.map((m) => m.name)).toEqual(['n1', 'n2', 'n3']);
      expect(body.shards.owners).toEqual(before[i]!.shards.owners);
      expect(body.shards.held).toEqual(before[i]!.shards.held);
      expect(body.shards.map).toEqual(before[i]!.shards.map);
      expect(body.refusedJoins).toEqual([
        expect.objectContaining({ name: 'n4', reason: expect.stringContaining('secret mismatch') }),
      ]);
      expect(body.refusedJoins[0]!.ageMs).toBeLessThan(60_000);
    }
    const direct = await openStore(store);
    try {
      expect((await direct.listNodes()).nodes.map((n) => n.name)).toEqual(['n1', 'n2', 'n3']);
    } finally {
      await direct.close();
    }
    const metrics = (await members[0]!.get<string>('/metrics')).body;
    expect(metrics).toMatch(/^concord_refused_joins_last_hour\{node="n1"\} 1$/m);
    expect(metrics).toMatch(/^concord_peer_handshake_failures_total\{node="n1"\} \d+$/m);
  });
});

// Rotation runs on PostgreSQL, the store of clusters across machines, only, to keep CI inside
// its time; the refusal above, which reads the secret's record in the store, runs on both.
describe.each(['postgres'] as const)('rotating the cluster secret (%s)', (backend: Backend) => {
  it('old → new+old node by node → new only, with calls routed between the nodes throughout; then old alone is refused', {
    timeout: 90_000,
  }, async () => {
    const OLD = strongSecret();
    const NEW = strongSecret();
    cluster = await LocalCluster.start({ nodes: 2, store: await freshStoreUrl(backend), secret: OLD });
    const c = cluster;
    const [n1, n2] = c.nodes as [ClusterNode, ClusterNode];
    let step = 0;

    /** Each node writes an entity the other one owns, and reads back the other's write. */
    async function callsAcross(label: string): Promise<void> {
      await waitSettled(c);
      step++;
      const map = (await view(n1)).shards.map;
      const ownedBy = (owner: string) => {
        for (let i = 0; ; i++) {
          const id = `rotation-${step}-${owner}-${i}`;
          if (map[shardOf(KIND, id, map.length)] === owner) return id;
        }
      };
      for (const [caller, owner] of [
        [n1, n2],
        [n2, n1],
      ] as const) {
        const id = ownedBy(owner.name);
        const write = await caller.put(`/entities/${id}`, { state: 'working' });
        expect(write.status, `${label}: PUT via ${caller.name} of an entity of ${owner.name}`).toBe(200);
        const read = await owner.get(`/entities/${id}`);
        expect(read.body, label).toMatchObject({ id, state: 'working', version: 1 });
        const back = await caller.get(`/entities/${id}`);
        expect(back.body, label).toMatchObject({ id, state: 'working', version: 1 });
      }
    }

    async function restart(node: ClusterNode, secret: string, previous?: string): Promise<void> {
      node.setEnv({ CONCORD_SECRET: secret, CONCORD_SECRET_PREVIOUS: previous });
      await node.restart(30_000, { graceful: true });
    }

    await callsAcross('both on the old secret');
    // (a) every node, one at a time, with the new secret and the old one as previous.
    await restart(n2, NEW, OLD);
    await callsAcross('n1 old only, n2 new + old');
    await restart(n1, NEW, OLD);
    await callsAcross('both new + old');
    // (b) every node with the new secret only.
    await restart(n1, NEW);
    await callsAcross('n1 new only, n2 new + old');
    await restart(n2, NEW);
    await callsAcross('both on the new secret');

    const clusterId = (await view(n1)).clusterId;
    const straggler = await c.addNode('n3', { secret: OLD });
    straggler.launch();
    expect(await straggler.waitExit()).toBe(1);
    expect(straggler.logs()).toContain(
      `differs from the secret of the cluster recorded in this store (cluster id ${clusterId})`,
    );
    expect((await view(n2)).refusedJoins.map((j) => j.name)).toEqual(['n3']);
    expect((await view(n2)).members.map((m) => m.name)).toEqual(['n1', 'n2']);
  });
});
