import { EventEmitter } from 'node:events';
import type { Logger } from '../logger.js';
import type { NodeList, NodeRecord, ShardRecord, Store } from '../store/types.js';
import { rendezvousOwner } from './hash.js';
import type { Lease } from './lease.js';

/**
 * Shard ownership on one node: the node's view of the whole shard map (who owns
 * what, at which epoch), the shards this node holds, and the rebalance loop that
 * claims, hands off and takes over shards.
 *
 * Safety rests on the store, never on this view:
 *  - a shard is claimed only by a compare-and-set that bumps its epoch and succeeds
 *    only when the previous owner released it or its lease expired (store clock);
 *  - a held shard is served only while the lease is valid on the local monotonic
 *    clock (see lease.ts), which ends before the store lets anyone else claim it;
 *  - every entity write carries the epoch, so even a stale holder cannot write.
 * A stale or wrong view here only costs a retry (`moved`).
 */

/** What the entity host does when shard ownership changes. */
export interface ShardHost {
  /** This node now owns `shard` at `epoch`; its entities may be activated. */
  acquired(shard: number, epoch: number): void;
  /** Stop admitting calls for `shard`, let admitted turns finish (bounded), passivate its entities. */
  drain(shard: number): Promise<void>;
  /** Ownership is gone (lease lost or fenced): drop the shard's entities now; queued calls fail as moved. */
  drop(shard: number): void;
}

type Phase = 'active' | 'draining' | 'releasing';

interface HeldShard {
  epoch: number;
  phase: Phase;
}

export interface ShardOwnerView {
  owner: string | null;
  epoch: number;
}

export interface ShardManagerEvents {
  /** The live members changed (or were re-read); the runtime points the peer transport at them. */
  members: [members: NodeRecord[]];
  /** A fresh read of the membership table (for Membership: suspicions, evictions, joining). */
  view: [view: NodeList];
  /** A shard was released by this node; tell the new desired owner so it claims at once. */
  released: [shard: number, desiredOwner: string | null];
  /** A handoff finished: `shard` was drained and released, `ms` after it began. */
  'handed-off': [shard: number, ms: number];
  /** This node claimed `shard`; `previousOwner` held it before (null: it was free, released). */
  claimed: [shard: number, epoch: number, previousOwner: string | null];
}

export interface ShardManagerOptions {
  self: string;
  shardCount: number;
  /** Bound on how long a handoff waits for admitted turns before dropping them. */
  drainTimeoutMs: number;
}

export class ShardManager extends EventEmitter<ShardManagerEvents> {
  private readonly owners: (string | null)[];
  private readonly ownerIncarnations: (number | null)[];
  private readonly epochs: number[];
  private readonly held = new Map<number, HeldShard>();
  private readonly handoffs = new Set<Promise<void>>();
  private members: NodeRecord[] = [];
  private liveNames = new Set<string>();
  private mapLoaded = false;
  private leaving = false;
  /** Set at the very start of a graceful stop: claim nothing from then on. */
  private claimsStopped = false;
  private rebalancing: Promise<void> | null = null;
  private rebalanceAgain = false;
  private refreshing: Promise<void> | null = null;
  private readonly expiryTimers = new Map<string, NodeJS.Timeout>();
  /** Peers whose connection dropped: their shards may soon need new owners. */
  private readonly suspects = new Set<string>();
  private stopped = false;

  constructor(
    private readonly store: Store,
    private readonly lease: Lease,
    private readonly host: ShardHost,
    private readonly options: ShardManagerOptions,
    private readonly logger: Logger,
  ) {
    super();
    const n = options.shardCount;
    this.owners = new Array<string | null>(n).fill(null);
    this.ownerIncarnations = new Array<number | null>(n).fill(null);
    this.epochs = new Array<number>(n).fill(0);
  }

  get shardCount(): number {
    return this.options.shardCount;
  }

  /** True once the shard map has been read at least once. */
  get ready(): boolean {
    return this.mapLoaded;
  }

  /** May this node serve `shard` right now? Held, not being handed off, lease valid. */
  canServe(shard: number): boolean {
    return this.held.get(shard)?.phase === 'active' && this.lease.valid();
  }

  /** Is the node's lease valid right now? */
  leaseValid(): boolean {
    return this.lease.valid();
  }

  /** A write for `shard` was refused by the fence: look at the store again soon. */
  suspect(_shard: number): void {
    void this.rebalance();
  }

  /** The epoch at which this node holds `shard`, or null. */
  heldEpoch(shard: number): number | null {
    return this.held.get(shard)?.epoch ?? null;
  }

  heldShards(): number[] {
    return [...this.held.keys()].sort((a, b) => a - b);
  }

  /** Where calls for `shard` should go, by this node's view; owner null when nobody live owns it. */
  ownerOf(shard: number): ShardOwnerView {
    const owner = this.owners[shard] ?? null;
    const epoch = this.epochs[shard] ?? 0;
    if (owner === null || !this.liveNames.has(owner)) return { owner: null, epoch };
    return { owner, epoch };
  }

  /** Fold in an owner hint from a peer's `moved` answer; only a newer epoch can change the view. */
  applyHint(shard: number, owner: string | null, epoch: number): void {
    if (epoch > (this.epochs[shard] ?? 0) && owner !== null) {
      this.owners[shard] = owner;
      this.ownerIncarnations[shard] = null;
      this.epochs[shard] = epoch;
    }
  }

  /** Every membership row from the last read, live or not. */
  allMembers(): NodeRecord[] {
    return this.members;
  }

  /** The store's clock now, estimated from the last read and the local monotonic clock. */
  storeNowEstimate(): number {
    return this.lastStoreNow + (performance.now() - this.lastReadAt);
  }

  liveMembers(): NodeRecord[] {
    return this.members.filter((m) => this.liveNames.has(m.name));
  }

  /** Snapshot of the map for /cluster and tests. */
  snapshot(): { shard: number; owner: string | null; epoch: number; held: boolean }[] {
    return this.epochs.map((epoch, shard) => ({
      shard,
      owner: this.owners[shard] ?? null,
      epoch,
      held: this.held.get(shard)?.phase === 'active',
    }));
  }

  /** Re-read the shard table (coalesced). Used by callers after a `moved`. */
  refreshMap(): Promise<void> {
    if (!this.refreshing) {
      this.refreshing = this.store
        .listShards()
        .then((rows) => this.applyShardRows(rows))
        .catch((error: unknown) => this.logger.debug({ err: String(error) }, 'shard map refresh failed'))
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  }

  /** Run the rebalance loop now; calls made while one runs are coalesced into one more run. */
  rebalance(): Promise<void> {
    if (this.rebalancing) {
      this.rebalanceAgain = true;
      return this.rebalancing;
    }
    this.rebalancing = (async () => {
      do {
        this.rebalanceAgain = false;
        try {
          await this.rebalanceOnce();
        } catch (error) {
          // Once stopped (a graceful stop closes the store next), a failed read is expected.
          if (this.stopped) this.logger.debug({ err: String(error) }, 'rebalance failed while stopping');
          else this.logger.warn({ err: String(error) }, 'rebalance failed; will retry');
        }
      } while (this.rebalanceAgain && !this.stopped);
    })().finally(() => {
      this.rebalancing = null;
    });
    return this.rebalancing;
  }

  /**
   * A peer's connection dropped. It may be dead: its shards become claimable when its
   * lease expires in store time, so look again right after that moment instead of
   * waiting for the next periodic pass. This is only about speed; the CAS decides.
   */
  peerDown(name: string): void {
    this.suspects.add(name);
    void this.rebalance();
  }

  /** A peer's connection is up again: it is alive, no need to watch its lease. */
  peerUp(name: string): void {
    this.suspects.delete(name);
  }

  /** The lease is gone: everything held may already be someone else's. */
  dropAll(): void {
    for (const shard of this.held.keys()) this.host.drop(shard);
    this.held.clear();
  }

  /**
   * Graceful leave: mark this node as leaving so every node's rendezvous skips it, hand
   * each held shard over (drain, release, tell the next owner), then let callers move on.
   */
  async leave(): Promise<void> {
    this.leaving = true;
    await this.rebalance();
    await this.waitForHandoffs();
  }

  /** A graceful stop has begun: never claim a shard again (leave() hands the held ones over). */
  stopClaiming(): void {
    this.claimsStopped = true;
  }

  stop(): void {
    this.stopped = true;
    for (const timer of this.expiryTimers.values()) clearTimeout(timer);
    this.expiryTimers.clear();
  }

  async waitForHandoffs(): Promise<void> {
    while (this.handoffs.size > 0) await Promise.allSettled([...this.handoffs]);
  }

  private lastStoreNow = 0;
  private lastReadAt = 0;

  private async rebalanceOnce(): Promise<void> {
    const incarnation = this.lease.incarnation;
    const view = await this.store.listNodes();
    const { now, nodes } = view;
    const rows = await this.store.listShards();
    this.lastStoreNow = now;
    this.lastReadAt = performance.now();
    this.members = nodes;
    this.liveNames = new Set(nodes.filter((n) => n.leaseExpiresAt > now).map((n) => n.name));
    this.applyShardRows(rows);
    this.emit('members', this.liveMembers());
    this.emit('view', view);
    // Look again right after each suspect's lease expires (in store time, from this fresh read).
    for (const name of this.suspects) {
      const member = nodes.find((n) => n.name === name);
      if (!member || member.leaseExpiresAt <= now) this.suspects.delete(name);
      else this.scheduleAt(name, member.leaseExpiresAt - now + 15);
    }
    if (incarnation === null || this.stopped) return;

    const self = this.options.self;
    const candidates = nodes
      .filter((n) => n.leaseExpiresAt > now && n.status === 'alive' && !(n.name === self && this.leaving))
      .map((n) => n.name);
    // Only a member claims: a `joining` node waits until it reaches every member, an evicted
    // or leaving one never claims (the store's claim checks this too).
    const selfRow = nodes.find((n) => n.name === self && n.incarnation === incarnation);
    const canClaim = !this.leaving && !this.claimsStopped && this.lease.valid() && selfRow?.status === 'alive';
    const claims: ShardRecord[] = [];

    for (const row of rows) {
      const shard = row.shard;
      const desired = rendezvousOwner(shard, candidates);
      const held = this.held.get(shard);
      const mineInStore = row.owner === self && row.ownerIncarnation === incarnation;

      if (held) {
        if (row.epoch > held.epoch) {
          // Someone claimed it after us: we lost it (our lease must have lapsed). Never serve it again.
          this.logger.warn({ shard, heldEpoch: held.epoch, storeEpoch: row.epoch }, 'shard lost to a newer epoch');
          this.host.drop(shard);
          this.held.delete(shard);
        } else if (held.phase === 'active' && desired !== self) {
          this.startHandoff(shard, held, desired);
        } else if (held.phase === 'releasing' && !this.isHandingOff(shard)) {
          this.track(this.release(shard, held, desired).then(() => {}));
        }
        continue;
      }

      if (mineInStore) {
        // The row names us but we do not hold it: a claim whose reply was lost, or a stale
        // read of a shard we released a moment ago. Either way release it (a CAS: harmless if stale);
        // never adopt it, since it may have been released and re-claimed in between.
        this.track(this.release(shard, { epoch: row.epoch, phase: 'releasing' }, desired).then(() => {}));
        continue;
      }

      if (desired === self && canClaim) {
        const ownerLive =
          row.owner !== null &&
          nodes.some((n) => n.name === row.owner && n.incarnation === row.ownerIncarnation && n.leaseExpiresAt > now);
        if (!ownerLive) claims.push(row);
      }
    }

    if (claims.length > 0) await this.claimAll(claims, incarnation);
  }

  private async claimAll(rows: ShardRecord[], incarnation: number): Promise<void> {
    const results = await Promise.allSettled(
      rows.map((row) => this.store.claimShard(row.shard, row.epoch, this.options.self, incarnation)),
    );
    let claimed = 0;
    results.forEach((result, i) => {
      const row = rows[i]!;
      if (result.status === 'rejected') {
        this.logger.debug({ shard: row.shard, err: String(result.reason) }, 'claim failed');
        return;
      }
      const epoch = result.value;
      if (epoch === null) return; // lost the CAS: someone else moved first
      if (this.lease.incarnation !== incarnation) return; // lease lost while claiming; the claim is void for us
      this.held.set(row.shard, { epoch, phase: 'active' });
      this.owners[row.shard] = this.options.self;
      this.ownerIncarnations[row.shard] = incarnation;
      this.epochs[row.shard] = epoch;
      this.host.acquired(row.shard, epoch);
      this.emit('claimed', row.shard, epoch, row.owner);
      claimed++;
    });
    if (claimed > 0) {
      // Claims are never sent once a stop began; these were sent before it and are handed over too.
      const msg = this.claimsStopped ? 'claims sent before the stop began succeeded' : 'claimed shards';
      this.logger.info({ claimed, held: this.held.size }, msg);
    }
  }

  private startHandoff(shard: number, held: HeldShard, desired: string | null): void {
    held.phase = 'draining';
    const startedAt = performance.now();
    const task = (async () => {
      try {
        await withTimeout(this.host.drain(shard), this.options.drainTimeoutMs);
      } catch (error) {
        this.logger.warn({ shard, err: String(error) }, 'drain did not finish in time; dropping the shard');
      }
      this.host.drop(shard);
      if (this.held.get(shard) !== held) return; // lost meanwhile
      held.phase = 'releasing';
      if (await this.release(shard, held, desired)) this.emit('handed-off', shard, performance.now() - startedAt);
    })();
    this.track(task, shard);
  }

  /** Resolves true when the store released the shard. */
  private async release(shard: number, held: HeldShard, desired: string | null): Promise<boolean> {
    const incarnation = this.lease.incarnation;
    if (incarnation === null) return false;
    let released: boolean;
    try {
      released = await this.store.releaseShard(shard, held.epoch, this.options.self, incarnation);
    } catch (error) {
      this.logger.warn({ shard, err: String(error) }, 'release failed; will retry');
      return false; // stays 'releasing'; the next rebalance retries
    }
    if (this.held.get(shard) === held) this.held.delete(shard);
    if (released && this.epochs[shard] === held.epoch) {
      this.owners[shard] = null;
      this.ownerIncarnations[shard] = null;
    }
    if (released) this.emit('released', shard, desired);
    return released;
  }

  private readonly handoffShards = new Set<number>();

  private isHandingOff(shard: number): boolean {
    return this.handoffShards.has(shard);
  }

  private track(task: Promise<void>, shard?: number): void {
    if (shard !== undefined) this.handoffShards.add(shard);
    this.handoffs.add(task);
    void task.finally(() => {
      this.handoffs.delete(task);
      if (shard !== undefined) this.handoffShards.delete(shard);
    });
  }

  private applyShardRows(rows: ShardRecord[]): void {
    for (const row of rows) {
      const s = row.shard;
      // Reads can race with our own claims and with other reads: never go back in epoch.
      if (row.epoch < (this.epochs[s] ?? 0)) continue;
      this.owners[s] = row.owner;
      this.ownerIncarnations[s] = row.ownerIncarnation;
      this.epochs[s] = row.epoch;
    }
    this.mapLoaded = true;
  }

  private scheduleAt(key: string, delayMs: number): void {
    const existing = this.expiryTimers.get(key);
    if (existing) clearTimeout(existing);
    const timer = setTimeout(() => {
      this.expiryTimers.delete(key);
      void this.rebalance();
    }, delayMs);
    timer.unref();
    this.expiryTimers.set(key, timer);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
