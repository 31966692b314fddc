import { Stopped } from '../errors.js';
import { AntiEntropy, type SyncLink, type SyncOutcome } from './anti-entropy.js';
import { Confirmations } from './confirmations.js';
import type { HybridClock } from './hlc.js';
import { messageOf, type PubSubLogger } from './host.js';
import { MapState } from './map-state.js';
import type { PubSub } from './pubsub.js';
import { isWireEntry, isWireVersion, listOf, type WireEntry, type WireVersion } from './wire.js';

/**
 * A map replicated on every node of the cluster that opens it (`node.replicatedMap(name)`).
 *
 * Consistency: **eventual, last-writer-wins per key.** Reads are local and never wait. Every
 * `set`/`delete` is applied locally at once, stamped with a version (hybrid logical clock +
 * origin node) and broadcast to the nodes that have the map; a replica takes a write only if
 * its version is higher than the one it holds, so all replicas that have seen the same writes
 * hold the same contents, whatever the order they saw them in. A write made after another
 * one was seen on the same node always wins over it; two writes to the same key on different
 * nodes without one seeing the other are ordered by their wall-clock times (then node name) —
 * the other write is lost, even if it was "later" by a clock that runs behind.
 *
 * Repair: broadcasts are best effort (nothing is re-sent after a dropped connection). When
 * two nodes see each other (start, reconnect, healed partition), and every `syncIntervalMs`
 * with every peer, they compare digests and exchange only the entries that differ (see
 * anti-entropy.ts), so every replica converges without a restart.
 *
 * Deletes leave a tombstone, which wins over older writes wherever it arrives. A tombstone
 * is collected once every node in the membership table has confirmed (by an equal digest)
 * that it holds it, and it is at least `tombstoneGraceMs` old; the collecting node tells the
 * others, and remembers the collection for a while so a copy still in flight is not taken
 * back in.
 *
 * Limits: no transactions or compare-and-set (use an entity for that); no read-your-writes
 * across nodes (a read on another node may not show a write yet — use `flush()` to wait for
 * the connected peers); values must be MessagePack-serialisable and are shared by reference
 * locally (treat them as immutable); every node holds the whole map in memory. Every node
 * should open the same maps: tombstones are collected only once all members hold them. A node
 * that dropped out of the membership (lease expired) but kept running may bring back keys
 * deleted while it was out, once their tombstones have been collected.
 */

export interface ReplicatedMapOptions<V> {
  /**
   * Read-through on a miss: `fetch(key)` calls it when the key has neither a value nor a
   * tombstone here. What it returns is cached on this node only (not replicated) and yields
   * to any replicated write of the key.
   */
  loader?: (key: string) => V | undefined | Promise<V | undefined>;
  /** Background anti-entropy with every peer, and tombstone collection. Default 1000 ms. */
  syncIntervalMs?: number;
  /** Minimum age of a tombstone before it may be collected. Default 60 s. */
  tombstoneGraceMs?: number;
}

export interface MapChange<K extends string, V> {
  key: K;
  /** The new value (undefined after a delete). */
  value: V | undefined;
  /** The value before (undefined if there was none). */
  previous: V | undefined;
  deleted: boolean;
  /** The node that made the write. */
  origin: string;
  /** Made on this node. */
  local: boolean;
}

export interface ReplicatedMapStats {
  /** Live entries. */
  size: number;
  tombstones: number;
  /** Collected tombstones still remembered. */
  purged: number;
  /** Values cached by the loader (not replicated). */
  loaded: number;
  /** Fingerprint of all versions held (tombstones included): equal on replicas with equal contents. */
  digest: string;
  syncs: { runs: number; equal: number; repaired: number; failed: number; received: number; pushed: number };
  collected: number;
}

/** Given by the registry (maps.ts). */
export interface MapContext {
  readonly self: string;
  readonly pubsub: PubSub;
  readonly clock: HybridClock;
  readonly link: SyncLink;
  /** Names of the nodes in the membership table. */
  readonly members: () => string[];
  readonly logger: PubSubLogger;
  register(name: string, endpoint: MapEndpoint): void;
  unregister(name: string): void;
}

/** What the registry dispatches to a map: sync requests and pushes from peers. */
export interface MapEndpoint {
  answer(from: string, body: Record<string, unknown>): unknown;
  push(from: string, body: Record<string, unknown>): void;
}

const DEFAULT_SYNC_INTERVAL_MS = 1000;
const DEFAULT_TOMBSTONE_GRACE_MS = 60_000;
const MAX_NOTICES_PER_MESSAGE = 2_000;

export type ChangeListener<K extends string, V> = (change: MapChange<K, V>) => void;

export class ReplicatedMap<K extends string = string, V = unknown> {
  readonly name: string;
  private readonly topic: string;
  private readonly state = new MapState<V>();
  private readonly confirmations = new Confirmations();
  private readonly antiEntropy: AntiEntropy;
  private readonly loaded = new Map<string, V>();
  private readonly loading = new Map<string, Promise<V | undefined>>();
  private readonly listeners = new Set<ChangeListener<K, V>>();
  private readonly running = new Set<string>();
  private readonly again = new Set<string>();
  private readonly syncIntervalMs: number;
  private readonly graceMs: number;
  private readonly loader: ((key: string) => V | undefined | Promise<V | undefined>) | undefined;
  private readonly unsubscribe: () => void;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly counters = { runs: 0, equal: 0, repaired: 0, failed: 0, received: 0, pushed: 0 };
  private lagMaxMs = 0;
  private collected = 0;

  constructor(
    name: string,
    options: ReplicatedMapOptions<V>,
    private readonly ctx: MapContext,
  ) {
    this.name = name;
    this.topic = `$rmap:${name}`;
    this.syncIntervalMs = positive('syncIntervalMs', options.syncIntervalMs, DEFAULT_SYNC_INTERVAL_MS);
    this.graceMs = nonNegative('tombstoneGraceMs', options.tombstoneGraceMs, DEFAULT_TOMBSTONE_GRACE_MS);
    this.loader = options.loader;
    this.antiEntropy = new AntiEntropy(
      name,
      {
        state: this.state as MapState<unknown>,
        mergeWire: (entries, from) => this.mergeWire(entries, from),
        applyPurges: (versions) => this.applyPurges(versions),
      },
      this.confirmations,
      ctx.link,
      // A root request lost in a partition blocks the next round with that peer until it times
      // out; one interval bounds how long a heal waits for it.
      Math.max(500, this.syncIntervalMs),
    );
    ctx.register(name, {
      answer: (from, body) => this.antiEntropy.answer(from, body),
      push: (from, body) => this.antiEntropy.onPush(from, body),
    });
    this.unsubscribe = ctx.pubsub.subscribe(this.topic, (message, from) => this.onBroadcast(message, from));
    ctx.pubsub.on('join', this.onJoin);
    ctx.pubsub.on('leave', this.onLeave);
    // Start at a random phase so that nodes do not all sync at the same moment.
    const start = setTimeout(() => {
      if (this.closed) return;
      this.timer = setInterval(() => this.tick(), this.syncIntervalMs);
      this.timer.unref();
      this.tick();
    }, Math.random() * this.syncIntervalMs);
    start.unref();
    for (const peer of ctx.pubsub.members(this.topic)) this.onJoin(this.topic, peer);
  }

  // ---- reads (local) ------------------------------------------------------------------------

  get(key: K): V | undefined {
    const entry = this.state.entry(key);
    if (entry !== undefined) return entry.deleted ? undefined : entry.value;
    return this.loaded.get(key);
  }

  has(key: K): boolean {
    const entry = this.state.entry(key);
    return entry !== undefined ? !entry.deleted : this.loaded.has(key);
  }

  /** Replicated live entries (loader-cached values are not counted). */
  get size(): number {
    return this.state.size;
  }

  *entries(): IterableIterator<[K, V]> {
    for (const [key, value] of this.state.liveEntries()) yield [key as K, value];
  }

  *keys(): IterableIterator<K> {
    for (const [key] of this.state.liveEntries()) yield key as K;
  }

  *values(): IterableIterator<V> {
    for (const [, value] of this.state.liveEntries()) yield value;
  }

  [Symbol.iterator](): IterableIterator<[K, V]> {
    return this.entries();
  }

  /**
   * The value of `key`; on a miss (no value and no tombstone here) the `loader`'s answer,
   * cached on this node. Concurrent fetches of one key share one load.
   */
  async fetch(key: K): Promise<V | undefined> {
    const entry = this.state.entry(key);
    if (entry !== undefined) return entry.deleted ? undefined : entry.value;
    if (this.loaded.has(key)) return this.loaded.get(key);
    const loader = this.loader;
    if (loader === undefined) return undefined;
    let load = this.loading.get(key);
    if (load === undefined) {
      load = Promise.resolve()
        .then(() => loader(key))
        .finally(() => this.loading.delete(key));
      this.loading.set(key, load);
    }
    const value = await load;
    // A replicated write that arrived meanwhile wins over what the loader read.
    const after = this.state.entry(key);
    if (after !== undefined) return after.deleted ? undefined : after.value;
    if (value !== undefined && !this.closed) this.loaded.set(key, value);
    return value;
  }

  // ---- writes (local, then broadcast) -------------------------------------------------------

  set(key: K, value: V): void {
    this.checkWrite(key);
    if (value === undefined) throw new TypeError('a replicated map value cannot be undefined (use delete)');
    this.write(key, false, value);
  }

  /** Delete `key` everywhere (a tombstone). Returns whether it had a value here. */
  delete(key: K): boolean {
    this.checkWrite(key);
    return this.write(key, true, undefined) !== undefined;
  }

  private write(key: K, deleted: boolean, value: V | undefined): V | undefined {
    const { l, c } = this.ctx.clock.now();
    const self = this.ctx.self;
    const loadedValue = this.loaded.get(key);
    this.loaded.delete(key);
    const merged = this.state.merge(key, l, c, self, deleted, value);
    // A fresh HLC timestamp is above everything this node has seen, so a local write always wins.
    const previous = typeof merged === 'object' ? (merged.previous ?? loadedValue) : loadedValue;
    const wire: WireEntry = deleted ? [key, l, c, self, 1] : [key, l, c, self, 0, value];
    this.ctx.pubsub.broadcast(this.topic, wire);
    if (!deleted || previous !== undefined)
      this.emitChange({ key, value, previous, deleted, origin: self, local: true });
    return previous;
  }

  private checkWrite(key: K): void {
    if (this.closed) throw new Stopped(`replicated map "${this.name}" is closed`);
    if (typeof key !== 'string') throw new TypeError('replicated map keys are strings');
  }

  /** Listen to every change of a value here, local or replicated. Returns the function that stops listening. */
  onChange(listener: ChangeListener<K, V>): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /**
   * Wait until every connected peer that has this map has applied all writes made here before
   * the call (a barrier over the FIFO connections). Resolves with the peers that confirmed
   * within `timeoutMs`; peers that are unreachable are not waited for.
   */
  async flush(timeoutMs = 1000): Promise<string[]> {
    this.ctx.pubsub.flush();
    const peers = this.peers();
    const results = await Promise.allSettled(
      peers.map((peer) => this.ctx.link.request(peer, { t: 'rm.sync', m: this.name, s: 'ping' }, timeoutMs)),
    );
    return peers.filter((_, i) => results[i]!.status === 'fulfilled');
  }

  /** Run anti-entropy with every connected peer now (normally periodic); resolves when done. */
  async sync(): Promise<SyncOutcome[]> {
    const outcomes = await Promise.allSettled(this.peers().map((peer) => this.antiEntropy.syncWith(peer)));
    return outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
  }

  /**
   * The sync lag: the longest time, since the last call, between a write made on another node
   * (by its hybrid clock's wall time) and its arrival here, by broadcast or anti-entropy. 0 when
   * nothing arrived. Resets the maximum.
   */
  takeSyncLagMs(): number {
    const lag = Math.max(0, this.lagMaxMs);
    this.lagMaxMs = 0;
    return lag;
  }

  stats(): ReplicatedMapStats {
    return {
      size: this.state.size,
      tombstones: this.state.tombstones.size,
      purged: this.state.purgedCount,
      loaded: this.loaded.size,
      digest: this.state.digest.fingerprint(),
      syncs: { ...this.counters },
      collected: this.collected,
    };
  }

  /** Stop replicating (this node's copy stays readable). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.unsubscribe();
    this.ctx.pubsub.off('join', this.onJoin);
    this.ctx.pubsub.off('leave', this.onLeave);
    this.ctx.unregister(this.name);
    this.listeners.clear();
  }

  // ---- replication --------------------------------------------------------------------------

  private peers(): string[] {
    return this.ctx.pubsub.members(this.topic).filter((node) => node !== this.ctx.self);
  }

  private onBroadcast(message: unknown, from: string): void {
    if (from === this.ctx.self || this.closed) return;
    if (isWireEntry(message)) {
      const notices = this.mergeWire([message], from);
      if (notices.length > 0) this.ctx.link.send(from, { t: 'rm.push', m: this.name, e: [], p: notices });
      return;
    }
    const purges = listOf((message as { p?: unknown } | null)?.p, isWireVersion);
    if (purges !== null) this.applyPurges(purges);
  }

  private mergeWire(entries: readonly WireEntry[], from: string): WireVersion[] {
    const notices: WireVersion[] = [];
    for (const entry of entries) {
      const [key, l, c, origin, deleted] = entry;
      this.ctx.clock.observe(l, c);
      const value = deleted === 0 ? (entry[5] as V) : undefined;
      const result = this.state.merge(key, l, c, origin, deleted === 1, value);
      if (result === 'stale') continue;
      if (result === 'purged') {
        notices.push(this.state.purgedVersion(key)!);
        continue;
      }
      // How long after it was made (its clock's wall time) the write arrived here.
      this.lagMaxMs = Math.max(this.lagMaxMs, Date.now() - l);
      const loadedValue = this.loaded.get(key);
      this.loaded.delete(key);
      const previous = result.previous ?? loadedValue;
      if (previous === undefined && deleted === 1) continue;
      this.emitChange({ key: key as K, value, previous, deleted: deleted === 1, origin, local: false });
    }
    if (notices.length > 0) this.ctx.logger.debug({ map: this.name, from, count: notices.length }, 'refused collected');
    return notices;
  }

  private applyPurges(versions: readonly WireVersion[]): void {
    for (const [key, l, c, o] of versions) {
      const { previous } = this.state.purge(key, l, c, o, this.purgeRetentionMs());
      if (previous !== undefined) {
        this.emitChange({ key: key as K, value: undefined, previous, deleted: true, origin: o, local: false });
      }
    }
  }

  private readonly onJoin = (topic: string, node: string): void => {
    // The lower-named node starts the exchange (both would only double the traffic).
    if (topic === this.topic && node !== this.ctx.self && this.ctx.self < node) this.runSync(node);
  };

  private readonly onLeave = (topic: string, node: string): void => {
    if (topic === this.topic && node !== this.ctx.self) this.confirmations.forget(node);
  };

  private runSync(peer: string): void {
    if (this.closed) return;
    if (this.running.has(peer)) {
      this.again.add(peer);
      return;
    }
    this.running.add(peer);
    this.counters.runs++;
    this.antiEntropy
      .syncWith(peer)
      .then(
        (outcome) => {
          if (outcome.equal) this.counters.equal++;
          else this.counters.repaired++;
          this.counters.received += outcome.received;
          this.counters.pushed += outcome.pushed;
        },
        (error: unknown) => {
          this.counters.failed++;
          this.ctx.logger.debug({ map: this.name, peer, err: messageOf(error) }, 'anti-entropy round failed');
        },
      )
      .finally(() => {
        this.running.delete(peer);
        if (this.again.delete(peer) && this.ctx.pubsub.members(this.topic).includes(peer)) this.runSync(peer);
      });
  }

  private tick(): void {
    if (this.closed) return;
    for (const peer of this.peers()) this.runSync(peer);
    this.collectTombstones();
    this.state.expirePurged(performance.now());
  }

  /** Collect the tombstones every member is known to hold (see Confirmations), and tell the others. */
  private collectTombstones(): void {
    if (this.state.tombstones.size === 0) return;
    const self = this.ctx.self;
    const members = this.ctx.members().filter((name) => name !== self);
    const now = performance.now();
    const retain = this.purgeRetentionMs();
    const notices: WireVersion[] = [];
    for (const key of [...this.state.tombstones]) {
      const entry = this.state.entry(key)!;
      if (now - entry.at < this.graceMs) continue;
      if (!this.confirmations.covers(members, entry.bucket, entry.seq)) continue;
      this.state.purge(key, entry.l, entry.c, entry.o, retain);
      notices.push([key, entry.l, entry.c, entry.o]);
    }
    this.collected += notices.length;
    for (let i = 0; i < notices.length; i += MAX_NOTICES_PER_MESSAGE) {
      this.ctx.pubsub.broadcast(this.topic, { p: notices.slice(i, i + MAX_NOTICES_PER_MESSAGE) });
    }
  }

  /** How long a collected tombstone is remembered: long enough for copies in flight to die out. */
  private purgeRetentionMs(): number {
    return Math.max(this.graceMs, 30 * this.syncIntervalMs);
  }

  private emitChange(change: MapChange<K, V>): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(change);
      } catch (error) {
        this.ctx.logger.warn({ map: this.name, err: messageOf(error) }, 'replicated map change listener threw');
      }
    }
  }
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a positive number`);
  return value;
}

function nonNegative(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`${name} must be a number >= 0`);
  return value;
}
