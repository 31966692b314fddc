import { describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/open.js';
import { IpcCallError } from '../../src/testing/process-node.js';
import { backends, freshStoreUrl, idsOwnedBy, sleep, startCluster, status } from '../support/cluster.js';

interface RegisterReply {
  value: string | null;
  version: number;
}

describe.each(backends)('a paused (stale) owner (%s)', (backend) => {
  it('returns no stale read after SIGCONT, and its pending write is refused by the fence', async () => {
    const store = await freshStoreUrl(backend);
    const [a, b] = await startCluster({ store, nodes: 2, leaseTtlMs: 1500 });
    const [id] = await idsOwnedBy(a!, 'register', 1);
    expect(await b!.call('register', id!, 'set', 'v1')).toEqual({ value: 'v1', version: 1 });

    // A write is mid-turn on the owner when it freezes; a read is queued behind the freeze.
    // (Its outcome is taken at once, so that an early failure is never an unhandled rejection.)
    const inFlightWrite = a!.call('register', id!, 'slowSet', { value: 'stale-write', delayMs: 300 }, 15_000).then(
      (value) => ({ ok: true as const, value: value as RegisterReply }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    await sleep(100);
    await a!.pause();
    const queuedRead = a!.call('register', id!, 'get', undefined, 15_000) as Promise<RegisterReply>;

    await sleep(2600); // well past the lease: b may claim a's shards now
    const taken = (await b!.call('register', id!, 'set', 'v2', 10_000)) as RegisterReply;
    expect(taken).toEqual({ value: 'v2', version: 2 });

    a!.resume();
    // The stale owner must not answer from its old memory (v1).
    const read = await queuedRead;
    expect(read.version).toBeGreaterThanOrEqual(2);
    expect(read.value).not.toBe('v1');

    // Its in-flight write ran into the fence: the store refused it. The call itself was then
    // retried at the new owner, where it is a fresh write ordered after v2 — or it failed. A
    // failure that says "maybe applied" (the link dropped while the retry was in flight) may
    // still have landed there, as version 3; one that says "not applied" must not have.
    const outcome = await inFlightWrite;
    const aStatus = await status(a!);
    expect(aStatus.host.fenced).toBeGreaterThanOrEqual(1);
    if (outcome.ok) expect(outcome.value).toEqual({ value: 'stale-write', version: 3 });
    const failure = outcome.ok ? null : outcome.error;
    const maybeLanded = failure instanceof IpcCallError && failure.details.maybeApplied !== false;

    // Nothing acknowledged was lost or overwritten: v2 is version 2, and the row is the last write.
    const direct = await openStore(store);
    let expected: RegisterReply;
    try {
      const row = await direct.readEntity('register', id!);
      expected = JSON.parse(row!.state) as RegisterReply;
      if (outcome.ok) expect(row?.version).toBe(3);
      else if (!maybeLanded) expect(row?.version).toBe(2);
      else expect([2, 3]).toContain(row?.version);
      expect(expected).toEqual({ value: row?.version === 3 ? 'stale-write' : 'v2' });
      expected = { value: expected.value, version: row!.version };
    } finally {
      await direct.close();
    }
    for (const node of [a!, b!]) {
      expect(await node.call('register', id!, 'get', undefined, 10_000)).toEqual(expected);
    }
  });
});
