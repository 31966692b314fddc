import { describe, expect, it } from 'vitest';
import { eventually, freshStoreUrl, idsOwnedBy, nodeConfig, startNode, status } from '../support/cluster.js';

interface ActiveStatus {
  activeEntities: number;
  host: { passivations: number };
}

async function active(node: Awaited<ReturnType<typeof startNode>>): Promise<ActiveStatus> {
  return (await status(node)) as unknown as ActiveStatus;
}

describe('passivation', () => {
  it('deactivates idle entities after the idle timeout, and their state survives', async () => {
    const store = await freshStoreUrl('sqlite');
    const node = await startNode({ ...nodeConfig({ store, nodes: 1 }, 'solo'), idleTimeoutMs: 1000 });
    for (let i = 0; i < 50; i++) await node.call('register', `idle-${i}`, 'set', `v${i}`);
    expect((await active(node)).activeEntities).toBe(50);
    await eventually(async () => expect((await active(node)).activeEntities).toBe(0), 8000, 200);
    // Re-activation reads the state back from the store.
    expect(await node.call('register', 'idle-7', 'get')).toEqual({ value: 'v7', version: 1 });
  });

  it('keeps at most about maxActiveEntities active, evicting idle ones', async () => {
    const store = await freshStoreUrl('sqlite');
    const node = await startNode({ ...nodeConfig({ store, nodes: 1 }, 'solo'), maxActiveEntities: 100 });
    for (let i = 0; i < 400; i++) await node.call('register', `cap-${i}`, 'set', `v${i}`);
    const { activeEntities, host } = await active(node);
    expect(activeEntities).toBeLessThanOrEqual(101);
    expect(host.passivations).toBeGreaterThanOrEqual(299);
    for (const i of [0, 150, 399])
      expect(await node.call('register', `cap-${i}`, 'get')).toEqual({ value: `v${i}`, version: 1 });
  });

  it('deactivates every entity of a shard that is handed over', async () => {
    const store = await freshStoreUrl('sqlite');
    const n1 = await startNode(nodeConfig({ store, nodes: 1 }, 'n1'));
    const ids = await idsOwnedBy(n1, 'register', 200);
    for (const id of ids) await n1.call('register', id, 'set', 'x');
    expect((await active(n1)).activeEntities).toBe(200);
    const n2 = await startNode(nodeConfig({ store, nodes: 2 }, 'n2'));
    await eventually(
      async () => {
        const moved = (await status(n2)).shards.held.length;
        expect(moved).toBeGreaterThan(80);
        // Only the entities of shards n1 still holds stay active there.
        const held = new Set((await status(n1)).shards.held);
        const { shardOf } = await import('../../src/cluster/hash.js');
        const stillOwned = ids.filter((id) => held.has(shardOf('register', id, 256))).length;
        expect((await active(n1)).activeEntities).toBe(stillOwned);
        expect(stillOwned).toBeLessThan(170);
      },
      10_000,
      100,
    );
  });
});
