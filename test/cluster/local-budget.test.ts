import { describe, expect, it } from 'vitest';
import { shardOf } from '../../src/cluster/hash.js';
import { LocalBudget } from '../../src/cluster/local-budget.js';
import { type LocalInvoker, type PeerChannel, Router } from '../../src/cluster/router.js';
import type { ShardManager } from '../../src/cluster/shard-manager.js';

/**
 * The scheduling property of LocalBudget: local calls (answered from memory, a chain of
 * microtasks) cannot keep the event loop from reading replies from peers. No timing is
 * measured: the tests count calls and turns of the event loop.
 */

const SHARDS = 8;
const BUDGET = 16;
const CALLERS = 64;
/** Local calls after which the callers stop on their own (so a failing test ends). */
const CAP = 200_000;

/** Ids of kind 'k' whose shard is (or is not) this node's: shards 0-3 are local, 4-7 remote. */
function idsWhere(local: boolean, count: number): string[] {
  const ids: string[] = [];
  for (let i = 0; ids.length < count; i++) {
    const id = `e${i}`;
    if (shardOf('k', id, SHARDS) < 4 === local) ids.push(id);
  }
  return ids;
}

const shards = {
  shardCount: SHARDS,
  canServe: (shard: number) => shard < 4,
  ownerOf: (shard: number) => ({ owner: shard < 4 ? 'n1' : 'n2', epoch: 1 }),
  applyHint: () => {},
  refreshMap: async () => {},
} as unknown as ShardManager;

/** A local host that answers at once and logs the order calls reach it. */
function host(log: string[] = []): LocalInvoker & { calls: number } {
  return {
    calls: 0,
    invoke(_kind, id, _shard, _handler, message) {
      this.calls++;
      log.push(`${id}:${String(message)}`);
      return Promise.resolve(message);
    },
  };
}

/** A peer whose reply is ready `turns` turns of the event loop after the request (setImmediate). */
function peer(turns: number): PeerChannel {
  return {
    isConnected: () => true,
    knownUnreachable: () => null,
    notDelivered: () => false,
    request: (_peer, body) =>
      new Promise((resolve) => {
        let left = turns;
        const step = () => (--left <= 0 ? resolve({ v: (body as { m: unknown }).m }) : setImmediate(step));
        setImmediate(step);
      }),
  };
}

/** `callers` loops of local calls that never yield to the event loop themselves. */
async function saturate(router: Router, callers: number, stop: () => boolean): Promise<void> {
  const ids = idsWhere(true, callers);
  await Promise.all(
    ids.map(async (id) => {
      let n = 0;
      while (!stop() && n++ < CAP) await router.call('k', id, 'get', n);
    }),
  );
}

describe('LocalBudget: local calls are fair to replies from peers', () => {
  for (const turns of [1, 3]) {
    it(`a reply ready ${turns} turn(s) later is read within ${turns + 1} turns of saturating local calls`, async () => {
      const local = host();
      const router = new Router(shards, peer(turns), local, {
        self: 'n1',
        defaultTimeoutMs: 60_000,
        localCallsPerTurn: BUDGET,
      });
      let replied = -1;
      const [remoteId] = idsWhere(false, 1);
      const remote = router.call('k', remoteId!, 'get', 'r').then((value) => {
        replied = local.calls;
        return value;
      });
      await saturate(router, CALLERS, () => replied >= 0);
      expect(await remote).toBe('r');
      // Without the budget the callers' microtask chain never ends and the reply is read only
      // once they give up (replied === CALLERS * CAP). With it, each turn runs at most the
      // budget plus one call of each caller that waited (at most CALLERS).
      expect(replied).toBeGreaterThan(0);
      expect(replied).toBeLessThanOrEqual((turns + 1) * (BUDGET + CALLERS));
      expect(router.deferredLocalCalls).toBeGreaterThan(0);
    });
  }

  it('without the budget, the same callers starve the reply (what the budget is for)', async () => {
    const local = host();
    const router = new Router(shards, peer(1), local, {
      self: 'n1',
      defaultTimeoutMs: 60_000,
      localCallsPerTurn: Number.POSITIVE_INFINITY,
    });
    let replied = -1;
    const [remoteId] = idsWhere(false, 1);
    const remote = router.call('k', remoteId!, 'get', 'r').then(() => {
      replied = local.calls;
    });
    // Two callers, to keep the run short: each stops at CAP.
    await saturate(router, 2, () => replied >= 0);
    await remote;
    expect(replied).toBe(2 * CAP);
  });

  it('calls issued in order reach the host in that order, deferred or not', async () => {
    const log: string[] = [];
    const router = new Router(shards, peer(2), host(log), {
      self: 'n1',
      defaultTimeoutMs: 60_000,
      localCallsPerTurn: 4,
    });
    const [id] = idsWhere(true, 1);
    const [remoteId] = idsWhere(false, 1);
    const remote = router.call('k', remoteId!, 'get', 'r');
    // 20 pipelined calls to one entity: 4 run at once, 16 wait; a later batch queues behind them.
    const first = Array.from({ length: 20 }, (_, i) => router.call('k', id!, 'set', i));
    await new Promise(setImmediate);
    const second = Array.from({ length: 10 }, (_, i) => router.call('k', id!, 'set', 20 + i));
    expect(await Promise.all([...first, ...second])).toEqual(Array.from({ length: 30 }, (_, i) => i));
    await remote;
    expect(log).toEqual(Array.from({ length: 30 }, (_, i) => `${id}:${i}`));
    expect(router.deferredLocalCalls).toBeGreaterThan(0);
  });

  it('no reply awaited: local calls are never deferred (one caller, one node)', async () => {
    const local = host();
    const router = new Router(shards, peer(1), local, {
      self: 'n1',
      defaultTimeoutMs: 60_000,
      localCallsPerTurn: BUDGET,
    });
    const [id] = idsWhere(true, 1);
    for (let i = 0; i < 1000; i++) await router.call('k', id!, 'get', i);
    expect(local.calls).toBe(1000);
    expect(router.deferredLocalCalls).toBe(0);
  });

  it('admits at most the budget per turn while a reply is awaited; the others run at the next turn, in order', async () => {
    const budget = new LocalBudget(3);
    budget.awaiting = 1;
    const order: number[] = [];
    const admit = (i: number) => {
      const wait = budget.admit();
      if (wait === null) order.push(i);
      else void wait.then(() => order.push(i));
      return wait === null;
    };
    expect(Array.from({ length: 8 }, (_, i) => admit(i))).toEqual([
      true,
      true,
      true,
      false,
      false,
      false,
      false,
      false,
    ]);
    await new Promise(setImmediate); // the check phase: every call that waited runs
    expect(order).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    // A new turn, a new budget.
    expect(Array.from({ length: 4 }, (_, i) => admit(8 + i))).toEqual([true, true, true, false]);
    budget.awaiting = 0;
    // Nothing awaited any more, but one call still waits: the next ones queue behind it.
    expect(admit(12)).toBe(false);
    await new Promise(setImmediate);
    expect(order).toEqual(Array.from({ length: 13 }, (_, i) => i));
    expect(admit(13)).toBe(true);
    expect(budget.deferred).toBe(7);
  });
});
