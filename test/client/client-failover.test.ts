/**
 * concord-cluster/client while ownership changes, on a real cluster (`concord node` processes,
 * SQLite): a third node joins and takes shards over (the client, with an old map, is answered
 * MOVED and follows it); then a node is killed with kill -9 (the client's connections are
 * refused, it asks another node and refreshes its map until the shards are served again). No
 * call fails and no change is lost.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConcordClient } from '../../src/client/index.js';
import { LocalCluster } from '../../src/testing/local-cluster.js';
import { CLIENT_ENTITIES, ClientCounter } from './client-counter.js';

const run = Math.random().toString(36).slice(2, 8);
const ids = Array.from({ length: 60 }, (_, i) => `f${i}-${run}`);
let cluster: LocalCluster;
let client: ConcordClient;

type ClusterBody = { members: { name: string; status: string }[]; shards: { map: (string | null)[] } };

async function settledOn(names: string[]): Promise<void> {
  await cluster.eventually(
    async () => {
      for (const name of names) {
        const { body } = await cluster.node(name).get<ClusterBody>('/cluster');
        const owners = new Set(body.shards.map);
        if (owners.has(null) || owners.size !== names.length || names.some((n) => !owners.has(n))) {
          throw new Error(`${name}: shard map not settled on ${names.join(',')}`);
        }
      }
    },
    { timeout: 20_000 },
  );
}

beforeAll(async () => {
  cluster = await LocalCluster.start({
    nodes: 2,
    entities: CLIENT_ENTITIES,
    env: { CONCORD_LEASE_TTL_MS: '1500', CONCORD_LOG_LEVEL: 'error' },
  });
  await settledOn(['n1', 'n2']);
  // No timer: the map changes only when the client is told (MOVED, refused connections, errors).
  client = cluster.client({ entities: [ClientCounter], refreshIntervalMs: 0, deadlineMs: 10_000 });
  for (const id of ids) expect(await client.ref(ClientCounter, id).add(1)).toBe(1);
}, 40_000);

afterAll(async () => {
  await client?.close();
  await cluster?.destroy();
});

describe('concord-cluster/client while shards move', () => {
  it('follows MOVED after a node joins and takes shards over', async () => {
    const n3 = await cluster.addNode('n3');
    n3.launch();
    await n3.waitReady();
    await settledOn(['n1', 'n2', 'n3']);
    const movedBefore = client.stats.moved;
    const batchesBefore = client.stats.batches;
    // All at once: most go in batches, whose calls for n3's shards are each answered MOVED
    // (nothing run) and then sent to n3.
    const added = await Promise.all(ids.map((id) => client.ref(ClientCounter, id).add(1)));
    expect(added).toEqual(ids.map(() => 2));
    expect(client.stats.moved).toBeGreaterThan(movedBefore);
    expect(client.stats.batches).toBeGreaterThan(batchesBefore);
    const onN3 = ids.filter((id) => client.ownerOf('client-counter', id) === 'n3');
    expect(onN3.length).toBeGreaterThan(0);
    // The map is right now: another round goes direct, without MOVED.
    const settled = client.stats.moved;
    for (const id of ids) expect(await client.ref(ClientCounter, id).get()).toBe(2);
    expect(client.stats.moved).toBe(settled);
  });

  it('keeps every call answered after a node is killed with kill -9', async () => {
    const victims = ids.filter((id) => client.ownerOf('client-counter', id) === 'n2');
    expect(victims.length).toBeGreaterThan(0);
    await cluster.node('n2').kill();
    const started = performance.now();
    const results = await Promise.all(ids.map((id) => client.ref(ClientCounter, id).add(1)));
    expect(results).toEqual(ids.map(() => 3));
    expect(performance.now() - started).toBeLessThan(10_000);
    for (const id of victims) expect(client.ownerOf('client-counter', id)).not.toBe('n2');
  });
});
