import { EventEmitter } from 'node:events';
import { NameInUse } from '../errors.js';
import type { Logger } from '../logger.js';
import type { RenewResult, Store } from '../store/types.js';

/**
 * The node's membership lease. The store holds `lease_expires_at` (store clock);
 * this process holds a *local* serving deadline on its monotonic clock that is
 * always earlier than the store's expiry:
 *
 *   deadline = t_sent + ttl − margin
 *
 * where t_sent is read BEFORE the renewal request is sent. The store computes its
 * expiry as (store time when the renewal executes) + ttl, and that execution happens
 * after t_sent, so as long as the two clocks advance at roughly the same rate (the
 * margin absorbs drift), the local deadline passes before the store lets anyone
 * else claim this node's shards. Nothing is served after the local deadline.
 */

export interface LeaseOptions {
  name: string;
  address: string;
  httpAddress: string | null;
  ttlMs: number;
  /** Safety margin subtracted from the local deadline (clock drift, scheduling). */
  marginMs: number;
  /** How often the lease is renewed; ttl/3 by default. */
  renewIntervalMs: number;
  /** How long to wait for a previous holder of the same name to expire before giving up. */
  nameWaitMs: number;
}

export interface LeaseEvents {
  renewed: [];
  /** The store refused a renewal: the lease expired, every shard must be treated as lost. */
  lost: [];
  /**
   * The store refused a renewal because the members evicted this incarnation: the lease is
   * cleared (nothing may be served any more); the node must drop everything and acknowledge.
   */
  evicted: [incarnation: number];
  'store-error': [error: unknown];
  /** Every renewal attempt, with its latency: ok, refused (expired or evicted), or error (store unreachable). */
  attempt: [durationMs: number, outcome: 'ok' | 'refused' | 'error'];
}

export class Lease extends EventEmitter<LeaseEvents> {
  private currentIncarnation: number | null = null;
  private deadline = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private renewing: Promise<void> | null = null;
  private consecutiveErrors = 0;
  /** t_sent of the last successful renewal (0 before the first). */
  private lastRenewalSentAt = 0;
  /** When the last renewal cycle began (its t_sent when it sent one); the cadence runs from it. */
  private lastCycleAt = 0;

  constructor(
    private readonly store: Store,
    private readonly options: LeaseOptions,
    private readonly logger: Logger,
    private readonly clock: () => number = () => performance.now(),
  ) {
    super();
  }

  get incarnation(): number | null {
    return this.currentIncarnation;
  }

  /** True while this process may serve: registered and before the local deadline. */
  valid(): boolean {
    return this.currentIncarnation !== null && this.clock() < this.deadline;
  }

  /** Milliseconds of serving time left (0 when invalid). */
  remainingMs(): number {
    return this.currentIncarnation === null ? 0 : Math.max(0, this.deadline - this.clock());
  }

  /**
   * Register a fresh incarnation, as `joining` (the node becomes a member, `alive`, once it
   * can reach the members: see Membership). If a live process holds the name (for example our
   * own predecessor killed a moment ago), wait for its lease to run out — never take over a
   * live lease — and give up with NameInUse after nameWaitMs.
   */
  async acquire(): Promise<number> {
    const { name, address, httpAddress, ttlMs, nameWaitMs } = this.options;
    const giveUpAt = this.clock() + nameWaitMs;
    let warned = false;
    for (;;) {
      if (this.stopped) throw new NameInUse(`node ${name} stopped while registering`);
      const tSent = this.clock();
      const result = await this.store.registerNode({ name, address, httpAddress, ttlMs, status: 'joining' });
      if (result.ok) {
        this.currentIncarnation = result.incarnation;
        this.deadline = tSent + ttlMs - this.options.marginMs;
        this.consecutiveErrors = 0;
        return result.incarnation;
      }
      const waitMs = Math.max(20, result.leaseExpiresAt - result.now + 20);
      if (this.clock() + waitMs > giveUpAt) {
        throw new NameInUse(
          `node name "${name}" is held by a live process (incarnation ${result.incarnation}); ` +
            'choose another --name or stop that process',
          { incarnation: result.incarnation },
        );
      }
      if (!warned) {
        this.logger.warn(
          { name, holder: result.incarnation, waitMs },
          'node name still leased by an earlier process; waiting for its lease to expire',
        );
        warned = true;
      }
      await sleep(waitMs);
    }
  }

  /** Start the periodic renewal. */
  start(): void {
    this.schedule(this.options.renewIntervalMs);
  }

  /** Renew now (coalesced with a renewal already in flight). */
  renewNow(): Promise<void> {
    if (!this.renewing) {
      this.renewing = this.renewOnce().finally(() => {
        this.renewing = null;
      });
    }
    return this.renewing;
  }

  /** Forget the lease locally (after a clean leave or when lost). */
  clear(): void {
    this.currentIncarnation = null;
    this.deadline = 0;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.renewNow().finally(() => {
        // After store errors retry faster, so a short outage costs as little serving time as possible.
        if (this.consecutiveErrors > 0) {
          this.schedule(Math.max(50, this.options.renewIntervalMs / 3));
          return;
        }
        // The cadence runs from when the last renewal was SENT (that is what the lease is
        // anchored to), not from when its reply arrived: a process paused while a renewal was
        // in flight must not then wait a whole further interval, or two pauses shorter than
        // the lease can add up to an expiry.
        this.schedule(Math.max(0, this.options.renewIntervalMs - (this.clock() - this.lastCycleAt)));
      });
    }, delayMs);
    this.timer.unref();
  }

  private async renewOnce(): Promise<void> {
    this.lastCycleAt = this.clock();
    const incarnation = this.currentIncarnation;
    if (incarnation === null || this.stopped) return;
    // Safety: t_sent is taken before the request leaves, see the comment at the top.
    const tSent = this.lastCycleAt;
    let result: RenewResult;
    try {
      result = await this.store.renewLease(this.options.name, incarnation, this.options.ttlMs);
    } catch (error) {
      this.consecutiveErrors++;
      this.emit('attempt', this.clock() - tSent, 'error');
      this.emit('store-error', error);
      return;
    }
    const tookMs = this.clock() - tSent;
    this.emit('attempt', tookMs, result.ok ? 'ok' : 'refused');
    // A renewal that comes late eats into the lease: say so (it is how lost leases begin).
    const sinceLastMs = tSent - this.lastRenewalSentAt;
    if (this.lastRenewalSentAt > 0 && (sinceLastMs > this.options.ttlMs / 2 || tookMs > this.options.ttlMs / 4)) {
      this.logger.warn(
        { sinceLastMs: Math.round(sinceLastMs), tookMs: Math.round(tookMs), ok: result.ok },
        'lease renewal late (event loop stalled, process paused, or the store slow)',
      );
    }
    if (result.ok) this.lastRenewalSentAt = tSent;
    this.consecutiveErrors = 0;
    if (this.currentIncarnation !== incarnation) return; // cleared meanwhile
    if (!result.ok) {
      // Stop serving at once: after an eviction the members wait for our acknowledgement (or
      // for the lease to run out) before they claim our shards; after an expiry they may
      // already have.
      this.clear();
      if (result.reason === 'evicted') {
        this.emit('evicted', incarnation);
      } else {
        this.logger.warn({ incarnation, reason: result.reason }, 'lease lost: renewal refused by the store');
        this.emit('lost');
      }
      return;
    }
    this.deadline = Math.max(this.deadline, tSent + this.options.ttlMs - this.options.marginMs);
    this.emit('renewed');
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
