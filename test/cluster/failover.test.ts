import { describe, expect, it } from 'vitest';
import { IpcCallError } from '../../src/testing/process-node.js';
import { backends, freshStoreUrl, idsOwnedBy, sleep, startCluster } from '../support/cluster.js';

const LEASE_TTL_MS = 1500;

describe.each(backends)('kill -9 of an owner (%s)', (backend) => {
  it('the survivors serve its entities within the failover bound, with every acknowledged write', async () => {
    const store = await freshStoreUrl(backend);
    const [n1, n2, n3] = await startCluster({ store, nodes: 3, leaseTtlMs: LEASE_TTL_MS });
    const victimIds = await idsOwnedBy(n3!, 'register', 12);

    // Acknowledged writes, some through the victim itself, some routed to it.
    const acknowledged = new Map<string, { value: string; version: number }>();
    for (const [i, id] of victimIds.entries()) {
      const via = [n1, n2, n3][i % 3]!;
      acknowledged.set(
        id,
        (await via.call('register', id, 'set', `before-${id}`)) as { value: string; version: number },
      );
    }

    const killedAt = performance.now();
    await n3!.kill();
    // Like a client: a call answered Unavailable (certainly not applied) is retried after a
    // short pause. Once the owner is known to be down, those answers come at once, carrying
    // when the shard is expected to move, rather than after the call's deadline.
    const failFast: number[] = [];
    const recovered = await Promise.all(
      victimIds.map(async (id, i) => {
        const via = i % 2 === 0 ? n1! : n2!;
        for (;;) {
          const sent = performance.now();
          try {
            const reply = await via.call('register', id, 'get', undefined, 10_000);
            return { id, reply, afterMs: performance.now() - killedAt };
          } catch (error) {
            if (!(error instanceof IpcCallError) || error.code !== 'UNAVAILABLE') throw error;
            expect(error.details['maybeApplied']).toBe(false);
            // Attempts begun once the owner was known to be down (its connection gone for a moment).
            if (sent - killedAt > 300) failFast.push(performance.now() - sent);
            await sleep(50);
          }
        }
      }),
    );
    for (const { id, reply } of recovered) expect(reply).toEqual(acknowledged.get(id));
    const worst = Math.max(...recovered.map((r) => r.afterMs));
    console.log(
      `[${backend}] failover after kill -9: first successful calls within ${worst.toFixed(0)} ms (lease ${LEASE_TTL_MS} ms); ${failFast.length} fail-fast answers, slowest ${Math.max(0, ...failFast).toFixed(0)} ms`,
    );
    // Calls for the known-dead owner were answered at once, not after the 10 s deadline.
    expect(failFast.length).toBeGreaterThan(0);
    expect(Math.max(...failFast)).toBeLessThan(100);
    // The bound: the lease has to run out, plus one claim; generous slack for a loaded CI machine.
    expect(worst).toBeLessThan(LEASE_TTL_MS + 2500);

    // And the survivors keep writing on top of what was acknowledged.
    const id = victimIds[0]!;
    expect(await n2!.call('register', id, 'set', 'after')).toEqual({
      value: 'after',
      version: acknowledged.get(id)!.version + 1,
    });
  });
});
