import { describe, expect, it } from 'vitest';
import type { IpcCallError } from '../../src/testing/process-node.js';
import { backends, eventually, freshStoreUrl, idsOwnedBy, startCluster, status } from '../support/cluster.js';

describe.each(backends)('routing when owners cannot be reached (%s)', (backend) => {
  it('a partitioned owner makes calls fail with a typed error at the deadline, never hang; healing restores them', async () => {
    const store = await freshStoreUrl(backend);
    const [n1, n2] = await startCluster({ store, nodes: 2 });
    const [remote] = await idsOwnedBy(n2!, 'register', 1);
    expect(await n1!.call('register', remote!, 'set', 'before')).toEqual({ value: 'before', version: 1 });

    await n1!.faults({ dropTo: ['n2'] });
    await n2!.faults({ dropTo: ['n1'] });
    const started = performance.now();
    const error = (await n1!.call('register', remote!, 'get', undefined, 800).catch((e: unknown) => e)) as IpcCallError;
    const took = performance.now() - started;
    expect(['UNAVAILABLE', 'TIMEOUT']).toContain(error.code);
    expect(took).toBeLessThan(3000);

    // n2 still owns it (its lease is fine: the store is reachable) and serves it directly.
    expect(await n2!.call('register', remote!, 'get')).toEqual({ value: 'before', version: 1 });

    await n1!.faults({ allow: 'all' });
    await n2!.faults({ allow: 'all' });
    expect(await n1!.call('register', remote!, 'get', undefined, 10_000)).toEqual({ value: 'before', version: 1 });
  });

  it('a node cut off from its store stops serving before its lease ends, and another takes over', async () => {
    const store = await freshStoreUrl(backend);
    const [n1, n2] = await startCluster({ store, nodes: 2, leaseTtlMs: 1500 });
    const [id] = await idsOwnedBy(n1!, 'register', 1);
    expect(await n1!.call('register', id!, 'set', 'v1')).toEqual({ value: 'v1', version: 1 });

    await n1!.faults({ cutStore: true });
    // It cannot renew: once its local deadline (before the store's expiry) passes it serves nothing.
    await eventually(
      async () => {
        const s1 = (await status(n1!)) as unknown as { ready: boolean; leaseRemainingMs: number };
        expect(s1.leaseRemainingMs).toBe(0);
        expect(s1.ready).toBe(false);
      },
      3000,
      50,
    );
    const taken = await n2!.call('register', id!, 'set', 'v2', 10_000);
    expect(taken).toEqual({ value: 'v2', version: 2 });
    // The cut-off node never answers from its old memory.
    const stale = await n1!.call('register', id!, 'get', undefined, 500).catch((e: unknown) => e as IpcCallError);
    if (stale instanceof Error)
      expect(['UNAVAILABLE', 'TIMEOUT', 'STORE_UNAVAILABLE']).toContain((stale as IpcCallError).code);
    else expect(stale).toEqual({ value: 'v2', version: 2 });

    await n1!.faults({ cutStore: false });
    // n1 finds its lease gone, drops everything, rejoins under a new incarnation and routes to
    // the new owner. (A call in flight while it rejoins may fail: its connections are re-made.)
    await eventually(
      async () => expect(await n1!.call('register', id!, 'get', undefined, 5000)).toEqual({ value: 'v2', version: 2 }),
      10_000,
    );
    // Shards move back to the rejoined node by handoff from n2, which may still be under way.
    await eventually(async () => expect((await status(n1!)).shards.held.length).toBeGreaterThan(0), 10_000);
  });
});
