import { afterEach, describe, expect, it, vi } from 'vitest';
import { Lease } from '../../src/cluster/lease.js';
import { silentLogger } from '../../src/logger.js';
import type { RenewResult, Store } from '../../src/store/types.js';

/**
 * The renewal cadence, on fake timers: the lease is anchored to when a renewal is SENT, so
 * the next one is due an interval after that, however late the reply came back.
 */
describe('lease renewal cadence', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  function leaseWith(replyDelays: number[]) {
    vi.useFakeTimers();
    const sentAt: number[] = [];
    const store = {
      registerNode: async () => ({ ok: true, incarnation: 7, leaseExpiresAt: 0, now: 0 }),
      renewLease: (): Promise<RenewResult> => {
        sentAt.push(Date.now());
        const delay = replyDelays[sentAt.length - 1] ?? 0;
        return new Promise((resolve) => setTimeout(() => resolve({ ok: true, leaseExpiresAt: 0 }), delay));
      },
    } as unknown as Store;
    const lease = new Lease(
      store,
      { name: 'n1', address: 'x', httpAddress: null, ttlMs: 1500, marginMs: 150, renewIntervalMs: 500, nameWaitMs: 0 },
      silentLogger,
      () => Date.now(),
    );
    return { lease, sentAt };
  }

  it('sends the next renewal an interval after the previous was sent, not after its reply', async () => {
    // The first reply takes 750 ms (a process paused while its renewal was in flight).
    const { lease, sentAt } = leaseWith([750, 0, 0]);
    const t0 = Date.now();
    await lease.acquire();
    lease.start();
    await vi.advanceTimersByTimeAsync(2000);
    lease.stop();
    const relative = sentAt.map((t) => t - t0);
    // Sent at 500; its reply at 1250 is already past the next due time (1000): renew at once.
    // (Before this cadence it waited a whole interval after the reply: 1750.)
    expect(relative[0]).toBe(500);
    expect(relative[1]).toBeGreaterThanOrEqual(1250);
    expect(relative[1]).toBeLessThanOrEqual(1251);
    expect(relative[2]! - relative[1]!).toBe(500);
    expect(lease.valid()).toBe(true);
  });

  it('keeps a steady interval when replies are quick', async () => {
    const { lease, sentAt } = leaseWith([20, 20, 20, 20]);
    const t0 = Date.now();
    await lease.acquire();
    lease.start();
    await vi.advanceTimersByTimeAsync(2100);
    lease.stop();
    expect(sentAt.map((t) => t - t0)).toEqual([500, 1000, 1500, 2000]);
  });

  it('does not spin when there is no lease to renew', async () => {
    const { lease, sentAt } = leaseWith([]);
    await lease.acquire();
    lease.clear();
    lease.start();
    await vi.advanceTimersByTimeAsync(2000);
    lease.stop();
    expect(sentAt).toEqual([]);
    expect(vi.getTimerCount()).toBeLessThanOrEqual(1);
  });
});
