/**
 * The LocalCluster harness (`concord/testing`) driving real `concord node` processes on a real
 * store: the classic netsplit test, a killed node's shards taken over, a paused node fenced,
 * and a node cut off from its store stopping before its lease ends — on SQLite and PostgreSQL.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { rendezvousOwner, shardOf } from '../../src/cluster/hash.js';
import { type ClusterNode, LocalCluster } from '../../src/testing/local-cluster.js';
import { type Backend, backends, freshStoreUrl, sleep } from '../support/cluster.js';

const KIND = 'entity-state';
const LEASE_TTL_MS = 1500;

interface Entity {
  id: string;
  state: string;
  version: number;
}

interface ClusterBody {
  self: string;
  ready: boolean;
  members: { name: string; status: string }[];
  shards: { count: number; held: number[]; map: (string | null)[] };
}

let cluster: LocalCluster | null = null;
afterEach(async () => {
  for (const node of cluster?.nodes ?? []) node.resume();
  await cluster?.destroy();
  cluster = null;
});

async function start(backend: Backend, nodes = 3): Promise<LocalCluster> {
  cluster = await LocalCluster.start({ nodes, store: await freshStoreUrl(backend) });
  await waitSettled(cluster);
  return cluster;
}

/** Every running node sees every running node alive and one owner for every shard. */
async function waitSettled(c: LocalCluster): Promise<void> {
  const live = c.nodes.filter((n) => n.running);
  await c.eventually(
    async () => {
      for (const node of live) {
        const { body } = await node.get<ClusterBody>('/cluster');
        const alive = body.members.filter((m) => m.status === 'alive').map((m) => m.name);
        if (alive.length !== live.length) throw new Error(`${node.name} sees ${alive.join(',')}`);
        const owners = new Set(body.shards.map);
        if (owners.has(null) || [...owners].some((o) => !live.some((n) => n.name === o))) {
          throw new Error(`${node.name}: shard map not settled`);
        }
        // Every live node owns some shards (a node that just joined may not have claimed yet).
        if (live.some((n) => !owners.has(n.name))) throw new Error(`${node.name}: not every node owns shards yet`);
        if (body.shards.held.length === 0) throw new Error(`${node.name} holds no shards yet`);
      }
    },
    { timeout: 20_000 },
  );
}

async function shardMap(node: ClusterNode): Promise<(string | null)[]> {
  return (await node.get<ClusterBody>('/cluster')).body.shards.map;
}

/** A fresh entity id whose shard `owner` holds (per `map`). */
function idOwnedBy(map: (string | null)[], owner: string, prefix: string): string {
  for (let i = 0; i < 100_000; i++) {
    const id = `${prefix}-${i}`;
    if (map[shardOf(KIND, id, map.length)] === owner) return id;
  }
  throw new Error(`${owner} owns no shard in ${JSON.stringify(map.slice(0, 8))}…`);
}

describe.each(backends)('LocalCluster harness (%s)', (backend: Backend) => {
  const run = Math.random().toString(36).slice(2, 8);

  it('netsplit: n3 partitioned away is evicted, its entities move to n1/n2 with every acknowledged write; after heal all agree', async () => {
    const c = await start(backend);
    const [n1, , n3] = c.nodes as [ClusterNode, ClusterNode, ClusterNode];
    // Nodes on one host link over Unix sockets; the partition switch cuts those links too.
    for (const node of c.nodes) expect(await node.peerLinks(), node.name).toEqual({ unix: 2, tcp: 0 });
    const map = await shardMap(n1);
    const onMajority = idOwnedBy(map, 'n1', `split-a-${run}`);
    const onN3 = idOwnedBy(map, 'n3', `split-b-${run}`);
    expect((await n3.put<Entity>(`/entities/${onN3}`, { state: 'working' })).body.version).toBe(1);

    await c.partition(['n3'], ['n1', 'n2']);
    const write = await n1.put<Entity>(`/entities/${onMajority}`, { state: 'working' });
    expect(write.status).toBe(200);
    expect(write.body).toEqual({ id: onMajority, state: 'working', version: 1 });

    // n1 and n2 cannot reach n3; n3 cannot reach either: the store evicts n3, which stops
    // serving, and n3's entities are taken over — no second copy ever serves at the same time.
    await c.eventually(
      async () => {
        const { body } = await n1.get<ClusterBody>('/cluster');
        expect(body.members.find((m) => m.name === 'n3')?.status).toBe('evicted');
        expect(body.shards.map.every((owner) => owner === 'n1' || owner === 'n2')).toBe(true);
      },
      { timeout: 10_000 },
    );
    expect((await n3.get('/readyz')).status).toBe(503);
    const evictedRead = await n3.get<{ code?: string; maybeApplied?: boolean }>(`/entities/${onN3}`);
    expect(evictedRead.status).toBe(503);
    expect(evictedRead.body).toMatchObject({ code: 'UNAVAILABLE', maybeApplied: false });
    // The survivors serve it, starting from what n3 acknowledged.
    const moved = await n1.put<Entity>(`/entities/${onN3}`, { state: 'finalized' }, { 'if-match': '"1"' });
    expect(moved.body).toEqual({ id: onN3, state: 'finalized', version: 2 });

    await c.heal();
    await c.eventually(async () => expect((await n3.get('/readyz')).status).toBe(200), { timeout: 10_000 });
    await c.eventually(async () => {
      const read = await n3.get<Entity>(`/entities/${onMajority}`);
      expect(read.body).toEqual({ id: onMajority, state: 'working', version: 1 });
    });
    // Exactly one history per entity, whichever node is asked.
    for (const node of c.nodes) {
      expect((await node.get<Entity>(`/entities/${onN3}`)).body).toEqual({ id: onN3, state: 'finalized', version: 2 });
    }
  });

  it("a killed node's shards are taken over and its acknowledged writes survive", async () => {
    const c = await start(backend);
    const [n1, n2, n3] = c.nodes as [ClusterNode, ClusterNode, ClusterNode];
    const map = await shardMap(n1);
    const ids = Array.from({ length: 5 }, (_, i) => idOwnedBy(map, 'n2', `kill-${run}-${i}`));
    for (const id of ids) expect((await n1.put(`/entities/${id}`, { state: 'finalized' })).status).toBe(200);

    await n2.kill();
    const killedAt = performance.now();
    await c.eventually(
      async () => {
        const after = await shardMap(n1);
        expect(after.every((owner) => owner === 'n1' || owner === 'n3')).toBe(true);
      },
      { timeout: 10_000 },
    );
    for (const id of ids) {
      const read = await n3.get<Entity>(`/entities/${id}`);
      expect(read.body).toEqual({ id, state: 'finalized', version: 1 });
    }
    // Takeover waits for the lease (1.5 s) and must not take much longer.
    expect(performance.now() - killedAt).toBeLessThan(8000);
  });

  it('a paused node is fenced: after SIGCONT it serves no stale read and its old shards are gone', async () => {
    const c = await start(backend);
    const [n1, n2] = c.nodes as [ClusterNode, ClusterNode, ClusterNode];
    const id = idOwnedBy(await shardMap(n1), 'n2', `pause-${run}`);
    expect((await n2.put(`/entities/${id}`, { state: 'working' })).status).toBe(200);
    // n2 has the entity active in memory at version 1.
    expect((await n2.get<Entity>(`/entities/${id}`)).body.version).toBe(1);

    await n2.pause();
    // Another owner takes over once n2's lease has expired in store time, and writes.
    const taken = await c.eventually(
      async () => {
        const write = await n1.put<Entity>(`/entities/${id}`, { state: 'finalized' }, { 'if-match': '"1"' });
        if (write.status !== 200) throw new Error(`write answered ${write.status}`);
        return write.body;
      },
      { timeout: 15_000, interval: 200 },
    );
    expect(taken).toEqual({ id, state: 'finalized', version: 2 });
    n2.resume();

    // The paused node's in-memory copy (version 1) must never be served again. Right after
    // SIGCONT it may still be learning that it was evicted: it may say so (503, not applied) or
    // lose a forwarded read to its links being reset (504), which a client retries; the first
    // answer it does give must be the new version.
    let read = await n2.get<Entity>(`/entities/${id}`);
    for (let tries = 0; (read.status === 503 || read.status === 504) && tries < 50; tries++) {
      await sleep(100);
      read = await n2.get<Entity>(`/entities/${id}`);
    }
    expect({ status: read.status, body: read.body }).toEqual({
      status: 200,
      body: { id, state: 'finalized', version: 2 },
    });
    const stale = await n2.put<Entity & { error?: string }>(
      `/entities/${id}`,
      { state: 'initialized' },
      { 'if-match': '"1"' },
    );
    expect(stale.status).toBe(412);
    await waitSettled(c);
    for (const node of c.nodes) {
      expect((await node.get<Entity>(`/entities/${id}`)).body).toEqual({ id, state: 'finalized', version: 2 });
    }
  });

  it('a node cut off from its store stops serving before its lease can expire, then rejoins', async () => {
    const c = await start(backend, 2);
    const [n1, n2] = c.nodes as [ClusterNode, ClusterNode];
    const id = idOwnedBy(await shardMap(n1), 'n2', `cut-${run}`);
    expect((await n2.put(`/entities/${id}`, { state: 'working' })).status).toBe(200);

    await c.cutStore(n2);
    const cutAt = performance.now();
    // n2 cannot renew: by its own monotonic clock it stops serving within the lease TTL,
    // before n1 may claim anything (n1 waits for the lease to expire in store time).
    await c.eventually(
      async () => {
        const ready = await n2.get('/readyz');
        if (ready.status !== 503) throw new Error('still ready');
      },
      { timeout: LEASE_TTL_MS + 1000, interval: 20 },
    );
    const stoppedAfter = performance.now() - cutAt;
    expect(stoppedAfter).toBeLessThan(LEASE_TTL_MS);
    const refused = await n2.get(`/entities/${id}`);
    expect(refused.status).toBe(503);

    // The survivor takes over and writes.
    await c.eventually(
      async () => {
        const write = await n1.put<Entity>(`/entities/${id}`, { state: 'finalized' });
        if (write.status !== 200) throw new Error(`write answered ${write.status}`);
        expect(write.body).toEqual({ id, state: 'finalized', version: 2 });
      },
      { timeout: 10_000, interval: 100 },
    );

    await c.restoreStore(n2);
    // balanced(): n2 rejoins and takes its shards back by handoff; once it resolves, every
    // node holds exactly its rendezvous shards and every node's map already says so, so any
    // node names n2 as the owner again (the map of n1 lags n2's claims until its next read).
    await c.balanced();
    const names = ['n1', 'n2'];
    for (const node of [n1, n2]) {
      const { body } = await node.get<ClusterBody>('/cluster');
      const placement = body.shards.map.map((_, shard) => rendezvousOwner(shard, names));
      expect(body.shards.map).toEqual(placement);
      expect(body.shards.held).toEqual(placement.flatMap((owner, shard) => (owner === node.name ? [shard] : [])));
      const owner = await node.get<{ owner: string | null }>(`/cluster/owner/${KIND}/${id}`);
      expect(owner.body.owner).toBe('n2');
    }
    expect((await n2.get<Entity>(`/entities/${id}`)).body).toEqual({ id, state: 'finalized', version: 2 });
  });
});

describe('LocalCluster with the user’s own entities', () => {
  it('loads an entity module into every node and calls it through any node', async () => {
    const fixture = new URL('../fixtures/user-counter.mjs', import.meta.url).pathname;
    cluster = await LocalCluster.start({ nodes: 2, store: await freshStoreUrl('sqlite'), entities: [fixture] });
    await waitSettled(cluster);
    const [n1, n2] = cluster.nodes as [ClusterNode, ClusterNode];
    expect(await n1.call('user-counter', 'c1', 'add', 2)).toBe(2);
    expect(await n2.call('user-counter', 'c1', 'add', 3)).toBe(5);
    expect(await n1.call('user-counter', 'c1', 'get')).toBe(5);
    await expect(n1.call('no-such-kind', 'c1', 'get')).rejects.toMatchObject({ status: 404 });
  });
});

describe('LocalCluster teardown', () => {
  it('kill() keeps the cluster’s directory and store for a restart; destroy() kills and deletes it', async () => {
    cluster = await LocalCluster.start({ nodes: 1 });
    const n1 = cluster.node('n1');
    const id = `teardown-${Math.random().toString(36).slice(2, 8)}`;
    expect((await n1.put<Entity>(`/entities/${id}`, { state: 'working' })).status).toBe(200);
    await cluster.kill();
    expect(n1.running).toBe(false);
    expect(existsSync(join(cluster.dir, 'concord.db'))).toBe(true);

    // The same node, restarted on the store kill() left, still has the write.
    n1.launch();
    await n1.waitReady();
    expect((await n1.get<Entity>(`/entities/${id}`)).body).toEqual({ id, state: 'working', version: 1 });

    await cluster.destroy();
    expect(n1.running).toBe(false);
    expect(existsSync(cluster.dir)).toBe(false);
    cluster = null;
  });
});
