import { describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/open.js';
import { backends, freshStoreUrl, startCluster } from '../support/cluster.js';

interface RegisterReply {
  value: string | null;
  version: number;
}

describe.each(backends)('the split entity (%s)', (backend) => {
  it('a value set through one node is read through the other', async () => {
    const store = await freshStoreUrl(backend);
    const [a, b] = await startCluster({ store, nodes: 2 });
    expect(await a!.call('register', 'entity_1', 'get')).toEqual({ value: null, version: 0 });
    expect(await a!.call('register', 'entity_1', 'set', 'working')).toEqual({ value: 'working', version: 1 });
    expect(await b!.call('register', 'entity_1', 'get')).toEqual({ value: 'working', version: 1 });
    expect(await b!.call('register', 'entity_1', 'set', 'finalized')).toEqual({ value: 'finalized', version: 2 });
    expect(await a!.call('register', 'entity_1', 'get')).toEqual({ value: 'finalized', version: 2 });
  });

  it('300 interleaved sets from 3 nodes: every version acknowledged once, the last one wins', async () => {
    const store = await freshStoreUrl(backend);
    const nodes = await startCluster({ store, nodes: 3 });
    const calls: Promise<RegisterReply>[] = [];
    for (let i = 0; i < 300; i++) {
      const node = nodes[i % 3]!;
      calls.push(node.call('register', 'hot', 'set', `w${i}`, 20_000) as Promise<RegisterReply>);
    }
    const replies = await Promise.all(calls);
    const versions = replies.map((r) => r.version).sort((x, y) => x - y);
    expect(versions).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    const last = replies.find((r) => r.version === 300)!;

    for (const node of nodes)
      expect(await node.call('register', 'hot', 'get')).toEqual({ value: last.value, version: 300 });
    // The store holds exactly what was acknowledged last.
    const direct = await openStore(store);
    try {
      const row = await direct.readEntity('register', 'hot');
      expect(row?.version).toBe(300);
      expect(JSON.parse(row!.state)).toEqual({ value: last.value });
    } finally {
      await direct.close();
    }
  });
});
