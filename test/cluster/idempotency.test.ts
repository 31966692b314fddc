/**
 * Exactly-once keyed calls through the library API, on real node processes over real sockets,
 * on both stores: the owner of one counter is killed (-9) while 1,000 keyed `add(1)` calls are
 * in flight from another node; every failure is retried with its key until it succeeds. The
 * counter ends at exactly 1,000 and the replies are exactly 1 … 1,000 (each call's own). Then a
 * keyed write acknowledged by one owner is replayed, unchanged, by the next one.
 */
import { describe, expect, it } from 'vitest';
import type { TryCallResult } from '../../src/testing/ipc-protocol.js';
import { backends, freshStoreUrl, idsOwnedBy, type ProcessNode, startCluster, status } from '../support/cluster.js';

const CALLS = 1000;
/** Callers working through the keys at once (each retries its key until it succeeds). */
const IN_FLIGHT = 100;
/** The owner is killed once this many calls have been acknowledged. */
const KILL_AFTER = 250;

describe.each(backends)('idempotency keys across kill -9 of the owner (%s)', (backend) => {
  it('1,000 keyed add(1) from a non-owner, owner killed mid-flight, failures retried with their keys: exactly 1,000', {
    timeout: 90_000,
  }, async () => {
    const nodes = await startCluster({ store: await freshStoreUrl(backend), nodes: 3 });
    const [owner, caller] = [nodes[2]!, nodes[0]!];
    const [id] = await idsOwnedBy(owner, 'counter', 1);

    const replies = new Map<string, number>();
    const failures: Record<string, number> = {};
    let maybeAppliedFailures = 0;
    let maybeDelivered = 0;
    let acknowledged = 0;
    let killed: Promise<void> | null = null;
    let next = 0;
    const worker = async () => {
      while (next < CALLS) {
        const key = `add-${next++}`;
        for (let attempt = 1; ; attempt++) {
          const result: TryCallResult = await caller.tryCall('counter', id!, 'add', 1, { idempotencyKey: key });
          if (result.ok) {
            replies.set(key, result.value as number);
            break;
          }
          failures[result.error.code] = (failures[result.error.code] ?? 0) + 1;
          if (result.error.details?.['maybeApplied'] === true) maybeAppliedFailures++;
          if (result.error.details?.['maybeDelivered'] === true) maybeDelivered++;
          if (attempt > 50) throw new Error(`${key}: still failing after 50 attempts: ${result.error.message}`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        if (++acknowledged === KILL_AFTER) killed = owner.kill();
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    await killed;

    const failed = Object.values(failures).reduce((a, b) => a + b, 0);
    const survivors = [caller, nodes[1]!];
    const replays = (await Promise.all(survivors.map((n) => status(n)))).reduce((sum, s) => sum + s.host.replays, 0);
    console.log(
      `[${backend}] ${CALLS} keyed calls, owner killed after ${KILL_AFTER}: ${failed} failed attempts retried (${JSON.stringify(failures)}; maybeApplied: ${maybeAppliedFailures}, maybeDelivered: ${maybeDelivered}); retries answered by replay at the new owner: ${replays}`,
    );
    // The kill did land while calls were in flight.
    expect(failed).toBeGreaterThan(0);
    expect(replies.size).toBe(CALLS);
    // Each call's reply is the counter right after its own add: 1 … 1,000, each exactly once.
    expect([...replies.values()].sort((a, b) => a - b)).toEqual(Array.from({ length: CALLS }, (_, i) => i + 1));
    expect(await caller.call('counter', id!, 'get', undefined, 10_000)).toBe(CALLS);
    expect(await nodes[1]!.call('counter', id!, 'get', undefined, 10_000)).toBe(CALLS);
    // Retrying any key again, anywhere, replays its reply and changes nothing.
    for (const key of ['add-0', `add-${KILL_AFTER}`, `add-${CALLS - 1}`]) {
      expect(await nodes[1]!.call('counter', id!, 'add', 1, { idempotencyKey: key })).toBe(replies.get(key));
    }
    expect(await caller.call('counter', id!, 'get', undefined)).toBe(CALLS);
  });

  it('a keyed write acknowledged by owner A is replayed by the next owner after A is killed', {
    timeout: 60_000,
  }, async () => {
    const [b, a] = (await startCluster({ store: await freshStoreUrl(backend), nodes: 2 })) as [
      ProcessNode,
      ProcessNode,
    ];
    const [id] = await idsOwnedBy(a, 'register', 1);
    const first = await b.call('register', id!, 'set', 'v1', { idempotencyKey: 'once' });
    expect(first).toEqual({ value: 'v1', version: 1 });
    await a.kill();
    // Retried (once its owner is known down, calls answer Unavailable at once) until served.
    const retried = await b.callUntilServed('register', id!, 'set', 'v1', { idempotencyKey: 'once' });
    expect(retried).toEqual(first);
    expect(await b.call('register', id!, 'get', undefined)).toEqual({ value: 'v1', version: 1 });
    // The same key with another request is refused at the new owner too; nothing is applied.
    const reused = await b.tryCall('register', id!, 'set', 'v2', { idempotencyKey: 'once' });
    expect(reused).toMatchObject({ ok: false, error: { code: 'IDEMPOTENCY_KEY_REUSED' } });
    expect(await b.call('register', id!, 'get', undefined)).toEqual({ value: 'v1', version: 1 });
  });
});
