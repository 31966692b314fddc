/**
 * The Store conformance suite: every backend must pass it unchanged.
 *
 * It covers each method and each edge named in the doc comments of src/store/types.ts, plus
 * races between separate store instances (separate connections / worker threads) on one
 * database. Time-dependent checks wait on the *store's* clock, never on a local timer.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MIGRATIONS } from '../../src/store/migrations.js';
import type {
  ActivationRequest,
  EventLogPage,
  IdempotencyRecord,
  Store,
  StoredEvent,
  StoreOptions,
  WriteRequest,
} from '../../src/store/types.js';

export interface ConformanceTarget {
  /** Location of a brand-new, empty database (a file path or URL, whatever `connect` takes). */
  freshDatabase(): Promise<string>;
  /** Dispose of a database made by freshDatabase (after every store on it was closed). */
  dropDatabase?(location: string): Promise<void>;
  /** A new store instance on the database — its own connection(s) or worker — not yet migrated. */
  connect(location: string, options?: StoreOptions): Store;
  /** The durability the backend actually applies to this store's connection(s). */
  durabilityOf(store: Store): Promise<'strict' | 'relaxed'>;
  /** The versions recorded in concord_migrations, read directly (not through a Store). */
  migrationVersions(location: string): Promise<number[]>;
}

/** Every migration's version, in order (version 3 is reserved for another branch). */
const MIGRATION_VERSIONS = MIGRATIONS.map((m) => m.version);

const LONG_TTL = 30_000;
const SHORT_TTL = 300;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Wait until the store's clock has passed `t` (so that a lease ending at `t` has expired). */
async function untilStoreTime(store: Store, t: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await store.now()) <= t) {
    if (Date.now() > deadline) throw new Error(`store clock did not reach ${t} within ${timeoutMs} ms`);
    await sleep(Math.min(50, Math.max(5, t - Date.now())));
  }
}

function node(name: string, ttlMs = LONG_TTL, address = `127.0.0.1:${4000 + name.length}`) {
  return { name, address, httpAddress: null, ttlMs };
}

async function registered(store: Store, name: string, ttlMs = LONG_TTL): Promise<number> {
  const result = await store.registerNode(node(name, ttlMs));
  if (!result.ok) throw new Error(`could not register ${name}`);
  return result.incarnation;
}

async function rejection(promise: Promise<unknown>): Promise<Error & { code?: unknown }> {
  try {
    await promise;
  } catch (err) {
    return err as Error & { code?: unknown };
  }
  throw new Error('expected the promise to reject');
}

export function storeConformance(name: string, target: ConformanceTarget): void {
  describe(`${name} — Store conformance`, () => {
    let location: string;
    let opened: Store[] = [];

    /** Another instance on the test database, migrated. */
    async function open(options?: StoreOptions): Promise<Store> {
      const store = target.connect(location, options);
      opened.push(store);
      await store.migrate();
      return store;
    }

    beforeEach(async () => {
      location = await target.freshDatabase();
    });

    afterEach(async () => {
      const stores = opened;
      opened = [];
      await Promise.all(stores.map((store) => store.close().catch(() => {})));
      await target.dropDatabase?.(location);
    });

    describe('schema and clock', () => {
      it('migrate() creates the schema once and is idempotent', async () => {
        const store = await open();
        await store.migrate();
        const other = await open();
        await other.migrate();
        expect(await target.migrationVersions(location)).toEqual(MIGRATION_VERSIONS);
        await store.initShards(4);
        expect(await other.listShards()).toHaveLength(4);
      });

      it('now() is the store clock: integer milliseconds, close to real time, never going back', async () => {
        const store = await open();
        const before = Date.now();
        const a = await store.now();
        await sleep(20);
        const b = await store.now();
        expect(Number.isSafeInteger(a)).toBe(true);
        // Same machine in the tests: the clocks agree to well within a few seconds.
        expect(Math.abs(a - before)).toBeLessThan(5_000);
        expect(b).toBeGreaterThanOrEqual(a + 10);
      });
    });

    describe('membership', () => {
      it('registers a new name with a lease of ttl from the store clock', async () => {
        const store = await open();
        const before = await store.now();
        const result = await store.registerNode({
          name: 'n1',
          address: '10.0.0.1:7000',
          httpAddress: 'http://10.0.0.1:8080',
          ttlMs: 5_000,
        });
        const after = await store.now();
        expect(result.ok).toBe(true);
        expect(result.now).toBeGreaterThanOrEqual(before);
        expect(result.now).toBeLessThanOrEqual(after);
        expect(result.leaseExpiresAt).toBe(result.now + 5_000);
        expect(result.incarnation).toBeGreaterThanOrEqual(result.now);

        const list = await store.listNodes();
        expect(list.nodes).toEqual([
          {
            name: 'n1',
            incarnation: result.incarnation,
            address: '10.0.0.1:7000',
            httpAddress: 'http://10.0.0.1:8080',
            status: 'alive',
            leaseExpiresAt: result.leaseExpiresAt,
            evictedBy: null,
            evictedAt: null,
          },
        ]);
        expect(list.suspicions).toEqual([]);
        expect(Number.isSafeInteger(list.version)).toBe(true);
      });

      it('refuses a name whose lease is live, reporting the live holder', async () => {
        const store = await open();
        const first = await store.registerNode(node('n1'));
        const second = await store.registerNode({ ...node('n1'), address: 'elsewhere:1' });
        expect(second.ok).toBe(false);
        expect(second.incarnation).toBe(first.incarnation);
        expect(second.leaseExpiresAt).toBe(first.leaseExpiresAt);
        expect(second.now).toBeLessThan(second.leaseExpiresAt);
        const list = await store.listNodes();
        expect(list.nodes[0]?.address).toBe(node('n1').address);
      });

      it('replaces a name once its lease expired, with a larger incarnation and the new details', async () => {
        const store = await open();
        const first = await store.registerNode(node('n1', SHORT_TTL));
        await untilStoreTime(store, first.leaseExpiresAt);
        const second = await store.registerNode({
          name: 'n1',
          address: 'new:1',
          httpAddress: 'http://new',
          ttlMs: LONG_TTL,
        });
        expect(second.ok).toBe(true);
        expect(second.incarnation).toBeGreaterThan(first.incarnation);
        const list = await store.listNodes();
        expect(list.nodes).toHaveLength(1);
        expect(list.nodes[0]).toMatchObject({
          incarnation: second.incarnation,
          address: 'new:1',
          httpAddress: 'http://new',
          status: 'alive',
        });
      });

      it('hands out strictly increasing incarnations, even across removal and rapid restarts', async () => {
        const store = await open();
        const seen: number[] = [];
        for (let i = 0; i < 5; i++) {
          const result = await store.registerNode(node('n1', 0));
          expect(result.ok).toBe(true);
          seen.push(result.incarnation);
          if (i % 2 === 1) await store.removeNode('n1', result.incarnation);
        }
        for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]!);
      });

      it('renews a live lease to now + ttl', async () => {
        const store = await open();
        const reg = await store.registerNode(node('n1', 2_000));
        await sleep(20);
        const before = await store.now();
        const renewed = await store.renewLease('n1', reg.incarnation, 10_000);
        const after = await store.now();
        if (!renewed.ok) throw new Error(`renewal refused: ${renewed.reason}`);
        expect(renewed.leaseExpiresAt).toBeGreaterThanOrEqual(before + 10_000);
        expect(renewed.leaseExpiresAt).toBeLessThanOrEqual(after + 10_000);
        expect((await store.listNodes()).nodes[0]?.leaseExpiresAt).toBe(renewed.leaseExpiresAt);
      });

      it('refuses to renew an expired lease, even when nobody took the name', async () => {
        const store = await open();
        const reg = await store.registerNode(node('n1', SHORT_TTL));
        await untilStoreTime(store, reg.leaseExpiresAt);
        expect(await store.renewLease('n1', reg.incarnation, LONG_TTL)).toEqual({ ok: false, reason: 'expired' });
        expect((await store.listNodes()).nodes[0]?.leaseExpiresAt).toBe(reg.leaseExpiresAt);
      });

      it('refuses to renew a stale incarnation, an unknown name or a removed row', async () => {
        const store = await open();
        const old = await store.registerNode(node('n1', SHORT_TTL));
        await untilStoreTime(store, old.leaseExpiresAt);
        const fresh = await store.registerNode(node('n1'));
        expect(fresh.ok).toBe(true);
        expect(await store.renewLease('n1', old.incarnation, LONG_TTL)).toEqual({ ok: false, reason: 'gone' });
        expect(await store.renewLease('nobody', fresh.incarnation, LONG_TTL)).toEqual({ ok: false, reason: 'gone' });
        expect((await store.renewLease('n1', fresh.incarnation, LONG_TTL)).ok).toBe(true);
        await store.removeNode('n1', fresh.incarnation);
        expect(await store.renewLease('n1', fresh.incarnation, LONG_TTL)).toEqual({ ok: false, reason: 'gone' });
      });

      it('sets the status of the matching incarnation only; re-registration resets it', async () => {
        const store = await open();
        const reg = await store.registerNode(node('n1', SHORT_TTL));
        expect(await store.setNodeStatus('n1', reg.incarnation + 1, 'leaving', ['alive'])).toBe(false);
        expect(await store.setNodeStatus('nobody', reg.incarnation, 'leaving', ['alive'])).toBe(false);
        expect(await store.setNodeStatus('n1', reg.incarnation, 'leaving', ['joining'])).toBe(false);
        expect(await store.setNodeStatus('n1', reg.incarnation, 'leaving', ['alive'])).toBe(true);
        expect((await store.listNodes()).nodes[0]?.status).toBe('leaving');
        await untilStoreTime(store, reg.leaseExpiresAt);
        await store.registerNode(node('n1'));
        expect((await store.listNodes()).nodes[0]?.status).toBe('alive');
      });

      it('removes only the matching incarnation; the name is free at once afterwards', async () => {
        const store = await open();
        const reg = await store.registerNode(node('n1'));
        await store.removeNode('n1', reg.incarnation - 1);
        expect((await store.listNodes()).nodes).toHaveLength(1);
        await store.removeNode('n1', reg.incarnation);
        expect((await store.listNodes()).nodes).toHaveLength(0);
        const again = await store.registerNode(node('n1'));
        expect(again.ok).toBe(true);
        expect(again.incarnation).toBeGreaterThan(reg.incarnation);
      });

      it('lists every row, live or expired, by name, with the store clock', async () => {
        const store = await open();
        const empty = await store.listNodes();
        expect(empty.nodes).toEqual([]);
        expect(Math.abs(empty.now - (await store.now()))).toBeLessThan(1_000);

        const dead = await store.registerNode(node('b-dead', SHORT_TTL));
        await registered(store, 'c-live');
        await registered(store, 'a-live');
        await untilStoreTime(store, dead.leaseExpiresAt);
        const list = await store.listNodes();
        expect(list.nodes.map((n) => n.name)).toEqual(['a-live', 'b-dead', 'c-live']);
        const live = list.nodes.filter((n) => n.leaseExpiresAt > list.now).map((n) => n.name);
        expect(live).toEqual(['a-live', 'c-live']);
      });

      it('prunes only rows whose lease expired more than the grace ago', async () => {
        const store = await open();
        const dead = await store.registerNode(node('dead', SHORT_TTL));
        await registered(store, 'live');
        await untilStoreTime(store, dead.leaseExpiresAt + 50);
        expect(await store.pruneNodes(60_000)).toBe(0);
        expect((await store.listNodes()).nodes).toHaveLength(2);
        expect(await store.pruneNodes(0)).toBe(1);
        expect((await store.listNodes()).nodes.map((n) => n.name)).toEqual(['live']);
        expect(await store.pruneNodes(0)).toBe(0);
      });
    });

    describe('membership under partial failure', () => {
      /** Register `name` as an alive member with a long lease. */
      async function member(store: Store, name: string, ttlMs = LONG_TTL): Promise<number> {
        return registered(store, name, ttlMs);
      }

      it('registers joining; only a live joining row becomes alive, and evicted never changes', async () => {
        const store = await open();
        const reg = await store.registerNode({ ...node('j'), status: 'joining' });
        expect((await store.listNodes()).nodes[0]?.status).toBe('joining');
        const v0 = (await store.listNodes()).version;
        expect(await store.setNodeStatus('j', reg.incarnation, 'alive', ['joining'])).toBe(true);
        expect((await store.listNodes()).nodes[0]?.status).toBe('alive');
        expect((await store.listNodes()).version).toBeGreaterThan(v0);
        expect(await store.setNodeStatus('j', reg.incarnation, 'alive', ['joining'])).toBe(false);
        // An expired joining row cannot become alive.
        const late = await store.registerNode({ ...node('late', SHORT_TTL), status: 'joining' });
        await untilStoreTime(store, late.leaseExpiresAt);
        expect(await store.setNodeStatus('late', late.incarnation, 'alive', ['joining'])).toBe(false);
      });

      it('records, refreshes and withdraws a reporter’s suspicions; only a live member may hold any', async () => {
        const store = await open();
        const a = await member(store, 'a');
        const b = await member(store, 'b');
        const c = await member(store, 'c');
        const v0 = (await store.listNodes()).version;
        const first = await store.reportSuspicions('a', a, [{ name: 'b', incarnation: b }]);
        expect(first.suspicions).toMatchObject([
          { reporter: 'a', reporterIncarnation: a, suspect: 'b', suspectIncarnation: b },
        ]);
        expect(first.version).toBe(v0 + 1);
        const since = first.suspicions[0]!.since;
        await sleep(20);
        // The same set again: refreshed, not re-recorded, and the version does not move.
        const again = await store.reportSuspicions('a', a, [{ name: 'b', incarnation: b }]);
        expect(again.version).toBe(first.version);
        expect(again.suspicions[0]!.since).toBe(since);
        expect(again.suspicions[0]!.refreshedAt).toBeGreaterThan(since);
        // Replaced by another set.
        const other = await store.reportSuspicions('a', a, [{ name: 'c', incarnation: c }]);
        expect(other.suspicions.map((x) => x.suspect)).toEqual(['c']);
        expect(other.version).toBe(first.version + 1);
        // Withdrawn.
        expect((await store.reportSuspicions('a', a, [])).suspicions).toEqual([]);
        // A stale incarnation or a joining reporter records nothing.
        expect((await store.reportSuspicions('a', a - 1, [{ name: 'b', incarnation: b }])).suspicions).toEqual([]);
        const j = await store.registerNode({ ...node('j'), status: 'joining' });
        expect((await store.reportSuspicions('j', j.incarnation, [{ name: 'b', incarnation: b }])).suspicions).toEqual(
          [],
        );
      });

      it('evicts by compare-and-set on the membership version; the suspect can no longer renew', async () => {
        const store = await open();
        const a = await member(store, 'a');
        const b = await member(store, 'b');
        const view = await store.reportSuspicions('a', a, [{ name: 'b', incarnation: b }]);
        const request = {
          suspect: 'b',
          suspectIncarnation: b,
          by: 'a',
          byIncarnation: a,
          reporters: ['a'],
          expectedVersion: view.version,
        };
        // A decision made on an older version is refused.
        expect(await store.evictMember({ ...request, expectedVersion: view.version - 1 })).toBe(false);
        // The decider must itself be a live member; the suspect must be the named incarnation.
        expect(await store.evictMember({ ...request, byIncarnation: a + 1 })).toBe(false);
        expect(await store.evictMember({ ...request, suspectIncarnation: b + 1 })).toBe(false);
        expect(await store.evictMember(request)).toBe(true);
        // Exactly once: the version moved.
        expect(await store.evictMember(request)).toBe(false);

        const after = await store.listNodes();
        const row = after.nodes.find((n) => n.name === 'b')!;
        expect(row.status).toBe('evicted');
        expect(row.evictedBy).toEqual(['a']);
        expect(row.evictedAt).toBeGreaterThan(0);
        expect(row.leaseExpiresAt).toBeGreaterThan(after.now); // the lease is left to run
        expect(after.suspicions).toEqual([]);
        expect(await store.renewLease('b', b, LONG_TTL)).toEqual({ ok: false, reason: 'evicted' });
        expect(await store.setNodeStatus('b', b, 'leaving', ['alive', 'joining'])).toBe(false);
      });

      it('an evicted owner’s shards stay claimed until it acknowledges; then they are free at once', async () => {
        const store = await open();
        await store.initShards(1);
        const a = await member(store, 'a');
        const b = await member(store, 'b');
        expect(await store.claimShard(0, 0, 'b', b)).toBe(1);
        const view = await store.reportSuspicions('a', a, [{ name: 'b', incarnation: b }]);
        expect(
          await store.evictMember({
            suspect: 'b',
            suspectIncarnation: b,
            by: 'a',
            byIncarnation: a,
            reporters: ['a'],
            expectedVersion: view.version,
          }),
        ).toBe(true);
        // Evicted but possibly still serving until it learns: nobody may claim yet.
        expect(await store.claimShard(0, 1, 'a', a)).toBeNull();
        // An evicted member cannot claim anything either.
        await store.initShards(1);
        expect(await store.acknowledgeEviction('a', a)).toBe(false); // not evicted
        expect(await store.acknowledgeEviction('b', b)).toBe(true);
        expect(await store.acknowledgeEviction('b', b)).toBe(false);
        expect(await store.claimShard(0, 1, 'a', a)).toBe(2);
        // The name can register again at once, as joining, and shows its eviction until alive.
        const again = await store.registerNode({ ...node('b'), status: 'joining' });
        expect(again.ok).toBe(true);
        const row = (await store.listNodes()).nodes.find((n) => n.name === 'b')!;
        expect(row).toMatchObject({ status: 'joining', evictedBy: ['a'] });
        expect(await store.setNodeStatus('b', again.incarnation, 'alive', ['joining'])).toBe(true);
        expect((await store.listNodes()).nodes.find((n) => n.name === 'b')).toMatchObject({
          status: 'alive',
          evictedBy: null,
          evictedAt: null,
        });
      });

      it('only an alive member with a live lease may claim a shard', async () => {
        const store = await open();
        await store.initShards(2);
        const j = await store.registerNode({ ...node('j'), status: 'joining' });
        expect(await store.claimShard(0, 0, 'j', j.incarnation)).toBeNull();
        const l = await member(store, 'l');
        expect(await store.setNodeStatus('l', l, 'leaving', ['alive'])).toBe(true);
        expect(await store.claimShard(0, 0, 'l', l)).toBeNull();
        expect(await store.claimShard(0, 0, 'nobody', 1)).toBeNull();
        const a = await member(store, 'a');
        expect(await store.claimShard(0, 0, 'a', a)).toBe(1);
      });

      it('concurrent evictions of each other: exactly one applies', { timeout: 30_000 }, async () => {
        const stores = [await open(), await open()];
        for (let round = 0; round < 10; round++) {
          const a = await member(stores[0]!, `a${round}`);
          const b = await member(stores[0]!, `b${round}`);
          await stores[0]!.reportSuspicions(`a${round}`, a, [{ name: `b${round}`, incarnation: b }]);
          const view = await stores[1]!.reportSuspicions(`b${round}`, b, [{ name: `a${round}`, incarnation: a }]);
          const results = await Promise.all([
            stores[0]!.evictMember({
              suspect: `b${round}`,
              suspectIncarnation: b,
              by: `a${round}`,
              byIncarnation: a,
              reporters: [`a${round}`],
              expectedVersion: view.version,
            }),
            stores[1]!.evictMember({
              suspect: `a${round}`,
              suspectIncarnation: a,
              by: `b${round}`,
              byIncarnation: b,
              reporters: [`b${round}`],
              expectedVersion: view.version,
            }),
          ]);
          expect(results.filter(Boolean)).toHaveLength(1);
        }
      });

      it('removal and pruning take the suspicions of the departed along', async () => {
        const store = await open();
        const a = await member(store, 'a');
        const b = await member(store, 'b');
        await store.reportSuspicions('a', a, [{ name: 'b', incarnation: b }]);
        await store.reportSuspicions('b', b, [{ name: 'a', incarnation: a }]);
        await store.removeNode('b', b);
        expect((await store.listNodes()).suspicions).toEqual([]);
      });
    });

    describe('shards', () => {
      it('initShards creates free shards at epoch 0 and is idempotent', async () => {
        const store = await open();
        await store.initShards(8);
        const shards = await store.listShards();
        expect(shards).toHaveLength(8);
        expect(shards.map((s) => s.shard)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
        for (const s of shards) expect(s).toEqual({ shard: s.shard, owner: null, ownerIncarnation: null, epoch: 0 });

        const inc = await registered(store, 'a');
        expect(await store.claimShard(3, 0, 'a', inc)).toBe(1);
        await store.initShards(8);
        await (await open()).initShards(8);
        const again = await store.listShards();
        expect(again).toHaveLength(8);
        expect(again[3]).toEqual({ shard: 3, owner: 'a', ownerIncarnation: inc, epoch: 1 });
      });

      it('initShards with a different count throws ConfigMismatch', async () => {
        const store = await open();
        await store.initShards(16);
        const err = await rejection(store.initShards(32));
        expect(err.name).toBe('ConfigMismatch');
        expect(err.code).toBe('CONFIG_MISMATCH');
        expect(err.message).toMatch(/16/);
        const fromAnother = await rejection((await open()).initShards(8));
        expect(fromAnother.code).toBe('CONFIG_MISMATCH');
        expect(await store.listShards()).toHaveLength(16);
      });

      it('initShards rejects a count that is not a positive integer', async () => {
        const store = await open();
        for (const bad of [0, -1, 1.5, Number.NaN]) {
          expect((await rejection(store.initShards(bad))).name).toBe('RangeError');
        }
        expect(await store.listShards()).toEqual([]);
      });

      it('claims a free shard at the expected epoch and increments the epoch', async () => {
        const store = await open();
        await store.initShards(4);
        const a = await registered(store, 'a');
        expect(await store.claimShard(2, 0, 'a', a)).toBe(1);
        expect((await store.listShards())[2]).toEqual({ shard: 2, owner: 'a', ownerIncarnation: a, epoch: 1 });
        expect((await store.listShards()).filter((s) => s.owner !== null)).toHaveLength(1);
      });

      it('refuses a claim at a wrong epoch or on a missing shard', async () => {
        const store = await open();
        await store.initShards(4);
        const a = await registered(store, 'a');
        expect(await store.claimShard(0, 1, 'a', a)).toBeNull();
        expect(await store.claimShard(0, -1, 'a', a)).toBeNull();
        expect(await store.claimShard(99, 0, 'a', a)).toBeNull();
        expect(await store.claimShard(0, 0, 'a', a)).toBe(1);
        expect(await store.claimShard(0, 0, 'a', a)).toBeNull();
        expect((await store.listShards())[0]?.epoch).toBe(1);
      });

      it('refuses a claim while the owner is alive, and allows it once its lease expired', async () => {
        const store = await open();
        await store.initShards(2);
        const aReg = await store.registerNode(node('a', 600));
        const b = await registered(store, 'b');
        expect(await store.claimShard(0, 0, 'a', aReg.incarnation)).toBe(1);
        expect(await store.claimShard(0, 1, 'b', b)).toBeNull();
        // The owner itself cannot claim again either: the shard is not free.
        expect(await store.claimShard(0, 1, 'a', aReg.incarnation)).toBeNull();
        await untilStoreTime(store, aReg.leaseExpiresAt);
        expect(await store.claimShard(0, 1, 'b', b)).toBe(2);
        expect((await store.listShards())[0]).toEqual({ shard: 0, owner: 'b', ownerIncarnation: b, epoch: 2 });
      });

      it('keeps a shard held while its owner renews', async () => {
        const store = await open();
        await store.initShards(1);
        const aReg = await store.registerNode(node('a', 400));
        const b = await registered(store, 'b');
        expect(await store.claimShard(0, 0, 'a', aReg.incarnation)).toBe(1);
        expect((await store.renewLease('a', aReg.incarnation, LONG_TTL)).ok).toBe(true);
        await untilStoreTime(store, aReg.leaseExpiresAt + 50);
        expect(await store.claimShard(0, 1, 'b', b)).toBeNull();
      });

      it('allows a claim once the owner released, left (row removed) or restarted (new incarnation)', async () => {
        const store = await open();
        await store.initShards(3);
        const a = await registered(store, 'a');
        const b = await registered(store, 'b');
        const cReg = await store.registerNode(node('c', SHORT_TTL));
        expect(await store.claimShard(0, 0, 'a', a)).toBe(1);
        expect(await store.claimShard(1, 0, 'a', a)).toBe(1);
        expect(await store.claimShard(2, 0, 'c', cReg.incarnation)).toBe(1);

        // Released: the owner is null.
        expect(await store.releaseShard(0, 1, 'a', a)).toBe(true);
        expect(await store.claimShard(0, 1, 'b', b)).toBe(2);

        // Left: the owner's row is gone, so no unexpired lease vouches for it.
        await store.removeNode('a', a);
        expect(await store.claimShard(1, 1, 'b', b)).toBe(2);

        // Restarted: the (name, incarnation) recorded on the shard no longer exists.
        await untilStoreTime(store, cReg.leaseExpiresAt);
        const cAgain = await store.registerNode(node('c'));
        expect(cAgain.ok).toBe(true);
        expect(await store.claimShard(2, 1, 'c', cAgain.incarnation)).toBe(2);
        expect((await store.listShards()).map((s) => [s.owner, s.epoch])).toEqual([
          ['b', 2],
          ['b', 2],
          ['c', 2],
        ]);
      });

      it('releases only for the current holder at the current epoch, keeping the epoch', async () => {
        const store = await open();
        await store.initShards(1);
        const a = await registered(store, 'a');
        const b = await registered(store, 'b');
        expect(await store.claimShard(0, 0, 'a', a)).toBe(1);
        expect(await store.releaseShard(0, 0, 'a', a)).toBe(false);
        expect(await store.releaseShard(0, 1, 'b', b)).toBe(false);
        expect(await store.releaseShard(0, 1, 'a', a + 1)).toBe(false);
        expect(await store.releaseShard(1, 1, 'a', a)).toBe(false);
        expect((await store.listShards())[0]?.owner).toBe('a');
        expect(await store.releaseShard(0, 1, 'a', a)).toBe(true);
        expect((await store.listShards())[0]).toEqual({ shard: 0, owner: null, ownerIncarnation: null, epoch: 1 });
        expect(await store.releaseShard(0, 1, 'a', a)).toBe(false);
      });
    });

    describe('entities', () => {
      const act = (kind: string, id: string, epoch: number, initialState = '{"n":0}'): ActivationRequest => ({
        kind,
        id,
        epoch,
        initialState,
      });
      const wr = (kind: string, id: string, epoch: number, expectedVersion: number, state: string): WriteRequest => ({
        kind,
        id,
        epoch,
        expectedVersion,
        newVersion: expectedVersion + 1,
        state,
      });

      it('activation inserts the initial state at version 0 with the epoch', async () => {
        const store = await open();
        expect(await store.readEntity('counter', 'c1')).toBeNull();
        expect(await store.activate([act('counter', 'c1', 3, '{"n":42}')])).toEqual([
          { ok: true, state: '{"n":42}', version: 0 },
        ]);
        expect(await store.readEntity('counter', 'c1')).toEqual({
          kind: 'counter',
          id: 'c1',
          state: '{"n":42}',
          version: 0,
          epoch: 3,
        });
      });

      it('re-activation at the same or a higher epoch returns the stored state, not the initial one', async () => {
        const store = await open();
        await store.activate([act('counter', 'c1', 1)]);
        expect(await store.write([wr('counter', 'c1', 1, 0, '{"n":1}')])).toEqual([true]);
        expect(await store.activate([act('counter', 'c1', 1, '{"n":999}')])).toEqual([
          { ok: true, state: '{"n":1}', version: 1 },
        ]);
        expect(await store.activate([act('counter', 'c1', 5, '{"n":999}')])).toEqual([
          { ok: true, state: '{"n":1}', version: 1 },
        ]);
        expect(await store.readEntity('counter', 'c1')).toMatchObject({ epoch: 5, version: 1, state: '{"n":1}' });
      });

      it('activation at a lower epoch is refused and leaves the row alone', async () => {
        const store = await open();
        await store.activate([act('counter', 'c1', 4)]);
        expect(await store.activate([act('counter', 'c1', 3, '{"n":7}')])).toEqual([{ ok: false }]);
        expect(await store.readEntity('counter', 'c1')).toMatchObject({ epoch: 4, version: 0, state: '{"n":0}' });
      });

      it('a fenced write applies only at the row epoch and expected version', async () => {
        const store = await open();
        await store.activate([act('k', 'a', 2), act('k', 'b', 2), act('k', 'c', 2)]);
        const results = await store.write([
          wr('k', 'a', 2, 0, '"a1"'), // applies
          wr('k', 'b', 1, 0, '"b-old-epoch"'), // epoch too low
          wr('k', 'b', 3, 0, '"b-new-epoch"'), // epoch not the row's either
          wr('k', 'c', 2, 5, '"c-wrong-version"'), // version mismatch
          wr('k', 'missing', 2, 0, '"nothing"'), // no row
        ]);
        expect(results).toEqual([true, false, false, false, false]);
        expect(await store.readEntity('k', 'a')).toMatchObject({ state: '"a1"', version: 1, epoch: 2 });
        expect(await store.readEntity('k', 'b')).toMatchObject({ state: '{"n":0}', version: 0 });
        expect(await store.readEntity('k', 'c')).toMatchObject({ state: '{"n":0}', version: 0 });
        expect(await store.readEntity('k', 'missing')).toBeNull();
      });

      it('stores newVersion as given', async () => {
        const store = await open();
        await store.activate([act('k', 'a', 1)]);
        expect(
          await store.write([{ kind: 'k', id: 'a', epoch: 1, expectedVersion: 0, newVersion: 10, state: '1' }]),
        ).toEqual([true]);
        expect(await store.readEntity('k', 'a')).toMatchObject({ version: 10, state: '1' });
      });

      it('a stale owner is fenced out once a newer owner activated the entity', async () => {
        const store = await open();
        const other = await open();
        await store.activate([act('k', 'x', 1)]);
        expect(await store.write([wr('k', 'x', 1, 0, '"by-epoch-1"')])).toEqual([true]);
        expect(await other.activate([act('k', 'x', 2)])).toEqual([{ ok: true, state: '"by-epoch-1"', version: 1 }]);
        expect(await store.write([wr('k', 'x', 1, 1, '"stale"')])).toEqual([false]);
        expect(await store.activate([act('k', 'x', 1)])).toEqual([{ ok: false }]);
        expect(await other.write([wr('k', 'x', 2, 1, '"by-epoch-2"')])).toEqual([true]);
        expect(await store.readEntity('k', 'x')).toMatchObject({ state: '"by-epoch-2"', version: 2, epoch: 2 });
      });

      it('maps batched results to the right requests (same ids across kinds, odd ids)', async () => {
        const store = await open();
        const ids = ['1', "o'brien", 'quote"d', 'comma,brace{}', 'back\\slash', 'ünïcødé-🚀', '', ' spaced ', 'NULL'];
        const kinds = ['user', 'order', "ki'nd"];
        const activations: ActivationRequest[] = [];
        for (const kind of kinds) {
          for (const id of ids) activations.push(act(kind, id, 1, JSON.stringify({ kind, id })));
        }
        // One row pre-exists at a higher epoch: only that activation is refused.
        await store.activate([act('order', 'ünïcødé-🚀', 9, '"newer"')]);
        const results = await store.activate(activations);
        activations.forEach((req, i) => {
          if (req.kind === 'order' && req.id === 'ünïcødé-🚀') expect(results[i]).toEqual({ ok: false });
          else expect(results[i]).toEqual({ ok: true, state: req.initialState, version: 0 });
        });

        // Every other write carries a wrong version: results must alternate accordingly.
        const writes = activations.map((req, i) => ({
          ...wr(req.kind, req.id, 1, i % 2 === 0 ? 0 : 7, JSON.stringify({ written: i, s: 'a"b\\c,{d}' })),
        }));
        const applied = await store.write(writes);
        writes.forEach((w, i) => {
          const refusedRow = w.kind === 'order' && w.id === 'ünïcødé-🚀';
          expect(applied[i]).toBe(i % 2 === 0 && !refusedRow);
        });
        for (const [i, w] of writes.entries()) {
          const row = await store.readEntity(w.kind, w.id);
          if (w.kind === 'order' && w.id === 'ünïcødé-🚀') expect(row).toMatchObject({ state: '"newer"', epoch: 9 });
          else if (i % 2 === 0) expect(row).toMatchObject({ state: w.state, version: 1 });
          else expect(row).toMatchObject({ state: JSON.stringify({ kind: w.kind, id: w.id }), version: 0 });
        }
      });

      it('applies repeated keys within one batch in order', async () => {
        const store = await open();
        expect(await store.activate([act('k', 'a', 1, '"first"'), act('k', 'a', 1, '"second"')])).toEqual([
          { ok: true, state: '"first"', version: 0 },
          { ok: true, state: '"first"', version: 0 },
        ]);
        expect(
          await store.write([
            wr('k', 'a', 1, 0, '"v1"'),
            wr('k', 'b', 1, 0, '"no row"'),
            wr('k', 'a', 1, 1, '"v2"'),
            wr('k', 'a', 1, 1, '"v2 again"'),
            wr('k', 'a', 1, 2, '"v3"'),
          ]),
        ).toEqual([true, false, true, false, true]);
        expect(await store.readEntity('k', 'a')).toMatchObject({ state: '"v3"', version: 3 });
        // Activation and write of the same key at increasing epochs in one batch.
        expect(await store.activate([act('k', 'a', 2), act('k', 'a', 1), act('k', 'a', 3)])).toEqual([
          { ok: true, state: '"v3"', version: 3 },
          { ok: false },
          { ok: true, state: '"v3"', version: 3 },
        ]);
      });

      it('handles empty and large batches', async () => {
        const store = await open();
        expect(await store.activate([])).toEqual([]);
        expect(await store.write([])).toEqual([]);
        const n = 500;
        const acts = Array.from({ length: n }, (_, i) => act('bulk', `e${i}`, 1, `{"i":${i}}`));
        const activated = await store.activate(acts);
        expect(activated.every((r) => r.ok)).toBe(true);
        const applied = await store.write(acts.map((a, i) => wr(a.kind, a.id, 1, 0, `{"i":${i},"w":1}`)));
        expect(applied.every(Boolean)).toBe(true);
        expect(await store.readEntity('bulk', 'e321')).toMatchObject({ state: '{"i":321,"w":1}', version: 1 });
      });

      it('keeps large state values intact', async () => {
        const store = await open();
        const big = JSON.stringify({ blob: 'x'.repeat(1_000_000), unicode: 'Ω≈ç√∫😀' });
        await store.activate([act('k', 'big', 1, big)]);
        expect((await store.readEntity('k', 'big'))?.state).toBe(big);
      });
    });

    describe('idempotency keys', () => {
      const act = (kind: string, id: string, epoch: number, initialState = '0'): ActivationRequest => ({
        kind,
        id,
        epoch,
        initialState,
      });
      const rec = (key: string, reply: string | null = JSON.stringify({ for: key })): IdempotencyRecord => ({
        key,
        fingerprint: `fp-${key}`,
        reply,
      });
      const keyed = (
        kind: string,
        id: string,
        epoch: number,
        expectedVersion: number,
        keys: IdempotencyRecord[],
        state = `"v${expectedVersion + 1}"`,
      ): WriteRequest => ({ kind, id, epoch, expectedVersion, newVersion: expectedVersion + 1, state, keys });
      const keysOf = async (store: Store, kind: string, id: string) =>
        (await store.readIdempotencyKeys(kind, id, 0)).map((k) => k.key).sort();

      it('keys land with an applied write, atomically, and never with a fenced one', async () => {
        const store = await open();
        await store.activate([act('k', 'a', 2), act('k', 'b', 2), act('k', 'c', 2)]);
        const before = await store.now();
        const results = await store.write([
          keyed('k', 'a', 2, 0, [rec('a1'), rec('a2', null)]), // applies
          keyed('k', 'b', 1, 0, [rec('b1')]), // fenced: epoch too low
          keyed('k', 'c', 2, 5, [rec('c1')]), // fenced: version mismatch
          keyed('k', 'missing', 2, 0, [rec('m1')]), // no row
          { kind: 'k', id: 'c', epoch: 2, expectedVersion: 0, newVersion: 1, state: '"c-no-keys"' }, // applies
        ]);
        const after = await store.now();
        expect(results).toEqual([true, false, false, false, true]);
        const stored = await store.readIdempotencyKeys('k', 'a', 0);
        expect(stored.map(({ createdAt: _, ...k }) => k).sort((x, y) => x.key.localeCompare(y.key))).toEqual([
          { key: 'a1', fingerprint: 'fp-a1', reply: '{"for":"a1"}' },
          { key: 'a2', fingerprint: 'fp-a2', reply: null },
        ]);
        for (const k of stored) {
          expect(Number.isSafeInteger(k.createdAt)).toBe(true);
          expect(k.createdAt).toBeGreaterThanOrEqual(before);
          expect(k.createdAt).toBeLessThanOrEqual(after);
        }
        expect(await keysOf(store, 'k', 'b')).toEqual([]);
        expect(await keysOf(store, 'k', 'c')).toEqual([]);
        expect(await keysOf(store, 'k', 'missing')).toEqual([]);
        expect(await store.readIdempotencyKey('k', 'b', 'b1')).toBeNull();
        expect(await store.readIdempotencyKey('k', 'a', 'a1')).toMatchObject({ key: 'a1', fingerprint: 'fp-a1' });
      });

      it('a stale owner fenced out by a newer activation inserts no key; the new owner sees the old keys', async () => {
        const store = await open();
        const other = await open();
        await store.activate([act('k', 'x', 1)]);
        expect(await store.write([keyed('k', 'x', 1, 0, [rec('old')])])).toEqual([true]);
        // A newer owner claims the entity: every key committed before is visible to it.
        expect(await other.activate([act('k', 'x', 2)])).toEqual([{ ok: true, state: '"v1"', version: 1 }]);
        expect(await keysOf(other, 'k', 'x')).toEqual(['old']);
        // The stale owner's next write (and its key) is refused.
        expect(await store.write([keyed('k', 'x', 1, 1, [rec('stale')])])).toEqual([false]);
        expect(await other.write([keyed('k', 'x', 2, 1, [rec('new')])])).toEqual([true]);
        expect(await keysOf(other, 'k', 'x')).toEqual(['new', 'old']);
        expect(await store.readIdempotencyKey('k', 'x', 'stale')).toBeNull();
      });

      it('keys ride on writes with events: in with the row and events, out when an event version is taken', async () => {
        const store = await open();
        await store.activate([act('es', 'a', 1), act('es', 'b', 1), act('es', 'c', 1)]);
        await store.appendEvents({
          stream: 'es/b',
          expectedVersion: 0,
          events: [{ type: 'Outside', data: '1' }],
          node: 'outside',
        });
        const withEvents = (id: string, epoch: number, keys: IdempotencyRecord[]): WriteRequest => ({
          ...keyed('es', id, epoch, 0, keys, 'null'),
          append: { stream: `es/${id}`, node: 'owner', events: [{ type: 'E', data: '{}' }] },
        });
        const results = await store.write([
          withEvents('a', 1, [rec('ka')]), // applies
          withEvents('b', 1, [rec('kb')]), // version 1 of es/b is taken
          withEvents('c', 0, [rec('kc')]), // fenced
          keyed('es', 'c', 1, 0, [rec('kc-plain')]), // a plain keyed write in the same batch: applies
        ]);
        expect(results).toEqual([true, false, false, true]);
        expect(await keysOf(store, 'es', 'a')).toEqual(['ka']);
        expect(await keysOf(store, 'es', 'b')).toEqual([]);
        expect(await keysOf(store, 'es', 'c')).toEqual(['kc-plain']);
        expect(await store.streamVersion('es/a')).toBe(1);
        expect(await store.streamVersion('es/c')).toBe(0);
      });

      it('keys are per entity, listed newest first, filtered by notBefore and limit, and survive', async () => {
        const store = await open();
        await store.activate([act('k', 'a', 1), act('k', 'b', 1), act('other', 'a', 1)]);
        expect(await store.write([keyed('k', 'a', 1, 0, [rec('shared'), rec('first')])])).toEqual([true]);
        const later = (await store.now()) + 30;
        await untilStoreTime(store, later);
        expect(
          await store.write([
            keyed('k', 'a', 1, 1, [rec('second')]),
            keyed('k', 'b', 1, 0, [{ key: 'shared', fingerprint: 'fp-b', reply: '"b"' }]),
            keyed('other', 'a', 1, 0, [{ key: 'shared', fingerprint: 'fp-other', reply: '"o"' }]),
          ]),
        ).toEqual([true, true, true]);
        const all = await store.readIdempotencyKeys('k', 'a', 0);
        expect(all.map((k) => k.key)).toEqual(['second', 'first', 'shared']);
        expect((await store.readIdempotencyKeys('k', 'a', 0, 1)).map((k) => k.key)).toEqual(['second']);
        expect((await store.readIdempotencyKeys('k', 'a', later)).map((k) => k.key)).toEqual(['second']);
        expect((await store.readIdempotencyKey('k', 'a', 'shared'))?.fingerprint).toBe('fp-shared');
        expect((await store.readIdempotencyKey('k', 'b', 'shared'))?.fingerprint).toBe('fp-b');
        expect((await store.readIdempotencyKey('other', 'a', 'shared'))?.fingerprint).toBe('fp-other');
        expect(await store.readIdempotencyKey('k', 'a', 'nope')).toBeNull();
        // A re-activation (even by a newer owner) keeps them; so does another connection.
        await store.activate([act('k', 'a', 7)]);
        const reopened = await open();
        expect(await reopened.readIdempotencyKeys('k', 'a', 0)).toEqual(all);
      });

      it('a key written again replaces the old row (a key older than the window)', async () => {
        const store = await open();
        await store.activate([act('k', 'a', 1)]);
        await store.write([keyed('k', 'a', 1, 0, [rec('again')])]);
        const first = await store.readIdempotencyKey('k', 'a', 'again');
        await untilStoreTime(store, first!.createdAt + 5);
        expect(await store.write([keyed('k', 'a', 1, 1, [{ key: 'again', fingerprint: 'fp-2', reply: '2' }])])).toEqual(
          [true],
        );
        const second = await store.readIdempotencyKey('k', 'a', 'again');
        expect(second).toMatchObject({ fingerprint: 'fp-2', reply: '2' });
        expect(second!.createdAt).toBeGreaterThan(first!.createdAt);
      });

      it('prunes only keys older than the window, at most `limit` at a time', async () => {
        const store = await open();
        await store.activate([act('k', 'a', 1), act('k', 'b', 1)]);
        await store.write([keyed('k', 'a', 1, 0, [rec('o1'), rec('o2')]), keyed('k', 'b', 1, 0, [rec('o3')])]);
        const t = await store.now();
        await untilStoreTime(store, t + 1000);
        await store.write([keyed('k', 'a', 1, 1, [rec('n1')])]);
        // Old keys are > 1000 ms old, new ones < 500 ms: a 500 ms window splits them.
        const window = (await store.now()) - (t + 500);
        expect(await store.pruneIdempotencyKeys(window, 2)).toBe(2);
        expect(await store.pruneIdempotencyKeys(window, 2)).toBe(1);
        expect(await store.pruneIdempotencyKeys(window, 2)).toBe(0);
        expect(await keysOf(store, 'k', 'a')).toEqual(['n1']);
        expect(await keysOf(store, 'k', 'b')).toEqual([]);
        expect(await store.pruneIdempotencyKeys(60_000, 100)).toBe(0);
        expect(await keysOf(store, 'k', 'a')).toEqual(['n1']);
      });
    });

    describe('events', () => {
      const ev = (type: string, data: unknown = null) => ({ type, data: JSON.stringify(data) });
      const append = (stream: string, expectedVersion: number, types: string[], nodeName = 'n1') => ({
        stream,
        expectedVersion,
        events: types.map((t) => ev(t, { t })),
        node: nodeName,
      });

      /** Follow the log from the start until it is drained; returns every event seen. */
      async function drainLog(store: Store, limit = 1000, prefix?: string) {
        const seen: StoredEvent[] = [];
        let cursor: string | null = null;
        for (;;) {
          const page: EventLogPage = await store.readEventLog(cursor, limit, prefix);
          seen.push(...page.events);
          cursor = page.cursor;
          if (page.events.length < limit) return { seen, cursor };
        }
      }

      it('appends at the expected version; events carry type, data, time (store clock) and node', async () => {
        const store = await open();
        const before = await store.now();
        expect(await store.appendEvents(append('user/sue', 0, ['A', 'B'], 'node-a'))).toEqual({ ok: true, version: 2 });
        expect(await store.appendEvents(append('user/sue', 2, ['C'], 'node-b'))).toEqual({ ok: true, version: 3 });
        const after = await store.now();
        const events = await store.readEvents('user/sue', 1, 100);
        expect(events.map((e) => [e.stream, e.version, e.type, JSON.parse(e.data), e.node])).toEqual([
          ['user/sue', 1, 'A', { t: 'A' }, 'node-a'],
          ['user/sue', 2, 'B', { t: 'B' }, 'node-a'],
          ['user/sue', 3, 'C', { t: 'C' }, 'node-b'],
        ]);
        for (const event of events) {
          expect(Number.isSafeInteger(event.at)).toBe(true);
          expect(event.at).toBeGreaterThanOrEqual(before);
          expect(event.at).toBeLessThanOrEqual(after);
        }
        expect(await store.streamVersion('user/sue')).toBe(3);
        expect(await store.streamVersion('user/nobody')).toBe(0);
      });

      it('refuses an append at any other version, appending nothing, and reports the actual version', async () => {
        const store = await open();
        await store.appendEvents(append('s', 0, ['A', 'B']));
        expect(await store.appendEvents(append('s', 0, ['X']))).toEqual({ ok: false, actualVersion: 2 });
        expect(await store.appendEvents(append('s', 1, ['X', 'Y']))).toEqual({ ok: false, actualVersion: 2 });
        expect(await store.appendEvents(append('s', 3, ['X']))).toEqual({ ok: false, actualVersion: 2 });
        expect(await store.appendEvents(append('fresh', 1, ['X']))).toEqual({ ok: false, actualVersion: 0 });
        expect((await store.readEvents('s', 1, 100)).map((e) => e.type)).toEqual(['A', 'B']);
        expect(await store.streamVersion('fresh')).toBe(0);
        // An empty append is a version check that writes nothing.
        expect(await store.appendEvents(append('s', 2, []))).toEqual({ ok: true, version: 2 });
        expect(await store.appendEvents(append('s', 1, []))).toEqual({ ok: false, actualVersion: 2 });
      });

      it('reads from a version with a limit; streams are independent', async () => {
        const store = await open();
        await store.appendEvents(append('a', 0, ['1', '2', '3', '4', '5']));
        await store.appendEvents(append('b', 0, ['x']));
        await store.appendEvents(append('ab', 0, ['y']));
        expect((await store.readEvents('a', 3, 100)).map((e) => e.version)).toEqual([3, 4, 5]);
        expect((await store.readEvents('a', 2, 2)).map((e) => e.version)).toEqual([2, 3]);
        expect(await store.readEvents('a', 6, 100)).toEqual([]);
        expect((await store.readEvents('b', 1, 100)).map((e) => e.type)).toEqual(['x']);
        expect(await store.streamVersion('a')).toBe(5);
        expect(await store.streamVersion('b')).toBe(1);
      });

      it('keeps large and unicode event data intact', async () => {
        const store = await open();
        const data = JSON.stringify({ blob: 'x'.repeat(200_000), unicode: 'Ω≈ç√∫😀' });
        await store.appendEvents({ stream: 'big', expectedVersion: 0, events: [{ type: 'Big', data }], node: 'n' });
        expect((await store.readEvents('big', 1, 1))[0]?.data).toBe(data);
      });

      it('a fenced write with events applies the row and the events together, or neither', async () => {
        const store = await open();
        await store.activate([
          { kind: 'es', id: 'a', epoch: 2, initialState: '"snap0"' },
          { kind: 'es', id: 'b', epoch: 2, initialState: '"snap0"' },
          { kind: 'es', id: 'c', epoch: 2, initialState: '"snap0"' },
        ]);
        // c's stream moved under it (an outside writer appended version 1).
        await store.appendEvents(append('es/c', 0, ['Outside'], 'outside'));
        const withEvents = (id: string, epoch: number, state: string | null, types: string[]): WriteRequest => ({
          kind: 'es',
          id,
          epoch,
          expectedVersion: 0,
          newVersion: types.length,
          state,
          append: { stream: `es/${id}`, node: 'owner', events: types.map((t) => ev(t)) },
        });
        const results = await store.write([
          withEvents('a', 2, null, ['A1', 'A2']), // applies; null keeps the row's snapshot
          withEvents('b', 1, '"stale"', ['B1']), // fenced: wrong epoch
          withEvents('c', 2, '"c1"', ['C1']), // version 1 of es/c is taken
        ]);
        expect(results).toEqual([true, false, false]);
        expect(await store.readEntity('es', 'a')).toMatchObject({ state: '"snap0"', version: 2 });
        expect((await store.readEvents('es/a', 1, 10)).map((e) => [e.version, e.type, e.node])).toEqual([
          [1, 'A1', 'owner'],
          [2, 'A2', 'owner'],
        ]);
        expect(await store.readEntity('es', 'b')).toMatchObject({ state: '"snap0"', version: 0 });
        expect(await store.streamVersion('es/b')).toBe(0);
        expect(await store.readEntity('es', 'c')).toMatchObject({ state: '"snap0"', version: 0 });
        expect((await store.readEvents('es/c', 1, 10)).map((e) => e.type)).toEqual(['Outside']);
        // The writer that caught up (row at 0, stream at 1) appends after the outside event.
        expect(
          await store.write([
            {
              kind: 'es',
              id: 'c',
              epoch: 2,
              expectedVersion: 0,
              newVersion: 2,
              state: '"c2"',
              append: { stream: 'es/c', node: 'owner', events: [ev('C2')] },
            },
          ]),
        ).toEqual([true]);
        expect(await store.readEntity('es', 'c')).toMatchObject({ state: '"c2"', version: 2 });
        expect((await store.readEvents('es/c', 1, 10)).map((e) => e.type)).toEqual(['Outside', 'C2']);
      });

      it('the log visits every event once, per stream in version order, with prefix filter and stable cursor', async () => {
        const store = await open();
        for (let i = 0; i < 5; i++) {
          await store.appendEvents(append('user/a', i, [`a${i}`]));
          await store.appendEvents(append('team/t', i, [`t${i}`]));
          await store.appendEvents(append('user/b', 2 * i, [`b${2 * i}`, `b${2 * i + 1}`]));
        }
        const all = await drainLog(store, 3);
        expect(all.seen).toHaveLength(20);
        const byStream = (events: StoredEvent[], stream: string) =>
          events.filter((e) => e.stream === stream).map((e) => e.version);
        expect(byStream(all.seen, 'user/a')).toEqual([1, 2, 3, 4, 5]);
        expect(byStream(all.seen, 'user/b')).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        expect(byStream(all.seen, 'team/t')).toEqual([1, 2, 3, 4, 5]);
        const users = await drainLog(store, 4, 'user/');
        expect(users.seen).toHaveLength(15);
        expect(users.seen.every((e) => e.stream.startsWith('user/'))).toBe(true);
        // Nothing new: the cursor stays put; something new: only that.
        expect(await store.readEventLog(all.cursor, 10)).toEqual({ events: [], cursor: all.cursor });
        await store.appendEvents(append('user/a', 5, ['late']));
        const next = await store.readEventLog(all.cursor, 10);
        expect(next.events.map((e) => [e.stream, e.version, e.type])).toEqual([['user/a', 6, 'late']]);
        expect(next.cursor).not.toBe(all.cursor);
      });

      it('the log includes events appended by fenced writes, and never refused ones', async () => {
        const store = await open();
        await store.activate([{ kind: 'es', id: 'x', epoch: 1, initialState: '"s"' }]);
        const req = (epoch: number, type: string): WriteRequest => ({
          kind: 'es',
          id: 'x',
          epoch,
          expectedVersion: 0,
          newVersion: 1,
          state: null,
          append: { stream: 'es/x', node: 'owner', events: [ev(type)] },
        });
        expect(await store.write([req(0, 'Refused')])).toEqual([false]);
        expect(await store.write([req(1, 'Applied')])).toEqual([true]);
        const { seen } = await drainLog(store);
        expect(seen.map((e) => [e.stream, e.version, e.type])).toEqual([['es/x', 1, 'Applied']]);
      });
    });

    describe('cluster metadata', () => {
      it('readMeta is null for a key never written; insertMetaIfAbsent stores a value once', async () => {
        const store = await open();
        expect(await store.readMeta('cluster_id')).toBeNull();
        expect(await store.insertMetaIfAbsent('cluster_id', 'first')).toBe('first');
        expect(await store.readMeta('cluster_id')).toBe('first');
        // A later insert keeps what is there and says so.
        expect(await store.insertMetaIfAbsent('cluster_id', 'second')).toBe('first');
        const other = await open();
        expect(await other.readMeta('cluster_id')).toBe('first');
        expect(await other.insertMetaIfAbsent('cluster_id', 'third')).toBe('first');
        // Text round-trips exactly (JSON, quotes, non-ASCII, a few KiB).
        const text = JSON.stringify([{ name: "n'1", reason: 'naïve — ✓' }, 'x'.repeat(4000)]);
        expect(await store.insertMetaIfAbsent('refused_joins', text)).toBe(text);
        expect(await other.readMeta('refused_joins')).toBe(text);
      });

      it('compareAndSetMeta replaces the value only when it is still the expected one', async () => {
        const store = await open();
        expect(await store.compareAndSetMeta('absent', '', 'x')).toBe(false);
        expect(await store.readMeta('absent')).toBeNull();
        await store.insertMetaIfAbsent('list', '[]');
        expect(await store.compareAndSetMeta('list', '["a"]', '["b"]')).toBe(false);
        expect(await store.readMeta('list')).toBe('[]');
        expect(await store.compareAndSetMeta('list', '[]', '["a"]')).toBe(true);
        expect(await store.readMeta('list')).toBe('["a"]');
        // The old expected value no longer matches.
        expect(await store.compareAndSetMeta('list', '[]', '["c"]')).toBe(false);
        expect(await store.readMeta('list')).toBe('["a"]');
        // Setting the same value again is a successful CAS.
        expect(await store.compareAndSetMeta('list', '["a"]', '["a"]')).toBe(true);
      });

      it('the meta keys of the store itself are untouched by other keys', async () => {
        const store = await open();
        await store.initShards(4);
        await store.insertMetaIfAbsent('cluster_id', 'c');
        await store.initShards(4);
        expect(await store.listShards()).toHaveLength(4);
        expect(await store.readMeta('cluster_id')).toBe('c');
      });
    });

    describe('durability', () => {
      it("defaults to 'strict'", async () => {
        expect(await target.durabilityOf(await open())).toBe('strict');
        expect(await target.durabilityOf(await open({ durability: 'strict' }))).toBe('strict');
      });

      it("'relaxed' applies to the connection and stores the same data", async () => {
        const relaxed = await open({ durability: 'relaxed' });
        expect(await target.durabilityOf(relaxed)).toBe('relaxed');
        await relaxed.activate([{ kind: 'k', id: 'r', epoch: 1, initialState: '0' }]);
        expect(
          await relaxed.write([{ kind: 'k', id: 'r', epoch: 1, expectedVersion: 0, newVersion: 1, state: '1' }]),
        ).toEqual([true]);
        const strict = await open();
        expect(await strict.readEntity('k', 'r')).toMatchObject({ state: '1', version: 1 });
      });
    });

    describe('races between separate store instances', () => {
      const INSTANCES = 4;

      async function instances(count = INSTANCES): Promise<Store[]> {
        return Promise.all(Array.from({ length: count }, () => open()));
      }

      it('concurrent migrate() on a fresh database: all succeed, the schema is applied once', {
        timeout: 30_000,
      }, async () => {
        const stores = Array.from({ length: 3 }, () => {
          const store = target.connect(location);
          opened.push(store);
          return store;
        });
        await Promise.all(stores.map((s) => s.migrate()));
        expect(await target.migrationVersions(location)).toEqual(MIGRATION_VERSIONS);
        await Promise.all(stores.map((s) => s.initShards(4)));
        expect(await stores[2]!.listShards()).toHaveLength(4);
      });

      it('concurrent registerNode of one name: exactly one wins', { timeout: 30_000 }, async () => {
        const stores = await instances();
        for (let round = 0; round < 3; round++) {
          const name = `race-${round}`;
          const results = await Promise.all(
            stores.map((s, i) => s.registerNode({ name, address: `host-${i}:1`, httpAddress: null, ttlMs: LONG_TTL })),
          );
          const winners = results.filter((r) => r.ok);
          expect(winners).toHaveLength(1);
          for (const loser of results.filter((r) => !r.ok)) {
            expect(loser.incarnation).toBe(winners[0]!.incarnation);
          }
          const row = (await stores[0]!.listNodes()).nodes.find((n) => n.name === name);
          expect(row?.incarnation).toBe(winners[0]!.incarnation);
        }
      });

      it('concurrent claimShard of one (shard, epoch): exactly one wins', { timeout: 30_000 }, async () => {
        const stores = await instances();
        await stores[0]!.initShards(4);
        const incs = await Promise.all(stores.map((s, i) => registered(s, `node-${i}`, 1_000)));
        for (const shard of [0, 1, 2, 3]) {
          const results = await Promise.all(stores.map((s, i) => s.claimShard(shard, 0, `node-${i}`, incs[i]!)));
          const winners = results.map((r, i) => [r, i] as const).filter(([r]) => r !== null);
          expect(winners).toHaveLength(1);
          expect(winners[0]![0]).toBe(1);
          const row = (await stores[0]!.listShards())[shard];
          expect(row).toMatchObject({ owner: `node-${winners[0]![1]}`, epoch: 1 });
        }
        // Once every owner's lease expired, the next generation races again at epoch 1.
        const leases = (await stores[0]!.listNodes()).nodes.map((n) => n.leaseExpiresAt);
        await untilStoreTime(stores[0]!, Math.max(...leases));
        const next = await Promise.all(stores.map((s, i) => registered(s, `next-${i}`)));
        const results = await Promise.all(stores.map((s, i) => s.claimShard(0, 1, `next-${i}`, next[i]!)));
        expect(results.filter((r) => r !== null)).toEqual([2]);
      });

      it('concurrent first insertMetaIfAbsent: exactly one value wins and every caller gets it', {
        timeout: 30_000,
      }, async () => {
        const stores = await instances();
        for (let round = 0; round < 3; round++) {
          const key = `first-${round}`;
          const candidates = stores.map((_, i) => `value-${round}-${i}`);
          const results = await Promise.all(stores.map((s, i) => s.insertMetaIfAbsent(key, candidates[i]!)));
          const winner = results[0]!;
          expect(candidates).toContain(winner);
          expect(results).toEqual(stores.map(() => winner));
          for (const s of stores) expect(await s.readMeta(key)).toBe(winner);
        }
      });

      it('concurrent compareAndSetMeta from one value: exactly one wins; a CAS retry loop loses no update', {
        timeout: 30_000,
      }, async () => {
        const stores = await instances();
        await stores[0]!.insertMetaIfAbsent('cas', '0');
        const won = await Promise.all(stores.map((s, i) => s.compareAndSetMeta('cas', '0', `by-${i}`)));
        expect(won.filter(Boolean)).toHaveLength(1);
        expect(await stores[0]!.readMeta('cas')).toBe(`by-${won.indexOf(true)}`);

        // Every instance appends to one JSON list with read + CAS, retrying on a lost race.
        await stores[0]!.insertMetaIfAbsent('appends', '[]');
        const PER_INSTANCE = 5;
        await Promise.all(
          stores.map(async (s, i) => {
            for (let n = 0; n < PER_INSTANCE; n++) {
              for (;;) {
                const current = (await s.readMeta('appends'))!;
                const next = JSON.stringify([...(JSON.parse(current) as string[]), `${i}.${n}`]);
                if (await s.compareAndSetMeta('appends', current, next)) break;
              }
            }
          }),
        );
        const list = JSON.parse((await stores[1]!.readMeta('appends'))!) as string[];
        expect(list).toHaveLength(INSTANCES * PER_INSTANCE);
        expect(new Set(list).size).toBe(INSTANCES * PER_INSTANCE);
      });

      it('concurrent initShards: same count all succeed, a different count is refused', {
        timeout: 30_000,
      }, async () => {
        const stores = await instances();
        const outcomes = await Promise.allSettled(stores.map((s, i) => s.initShards(i === 0 ? 8 : 16)));
        const fulfilled = outcomes.filter((o) => o.status === 'fulfilled').length;
        const shards = await stores[0]!.listShards();
        if (shards.length === 8) expect(fulfilled).toBe(1);
        else {
          expect(shards).toHaveLength(16);
          expect(fulfilled).toBe(INSTANCES - 1);
        }
        for (const o of outcomes) {
          if (o.status === 'rejected') expect((o.reason as { code?: unknown }).code).toBe('CONFIG_MISMATCH');
        }
      });

      it('concurrent fenced read-modify-write: no lost update', { timeout: 60_000 }, async () => {
        const stores = await instances();
        await stores[0]!.activate([{ kind: 'counter', id: 'shared', epoch: 1, initialState: '0' }]);
        const ATTEMPTS = 25;
        const successes = await Promise.all(
          stores.map(async (s) => {
            let won = 0;
            for (let i = 0; i < ATTEMPTS; i++) {
              const row = await s.readEntity('counter', 'shared');
              const [ok] = await s.write([
                {
                  kind: 'counter',
                  id: 'shared',
                  epoch: 1,
                  expectedVersion: row!.version,
                  newVersion: row!.version + 1,
                  state: String(Number(row!.state) + 1),
                },
              ]);
              if (ok) won++;
            }
            return won;
          }),
        );
        const total = successes.reduce((a, b) => a + b, 0);
        expect(total).toBeGreaterThanOrEqual(ATTEMPTS);
        const final = await stores[0]!.readEntity('counter', 'shared');
        expect(final?.version).toBe(total);
        expect(Number(final?.state)).toBe(total);
      });

      it('concurrent overlapping write batches in opposite orders all complete', { timeout: 60_000 }, async () => {
        const stores = await instances(2);
        const keys = Array.from({ length: 20 }, (_, i) => `e${i}`);
        await stores[0]!.activate(keys.map((id) => ({ kind: 'k', id, epoch: 1, initialState: '0' })));
        let version = 0;
        for (let round = 0; round < 10; round++) {
          const batch = (order: string[]) =>
            order.map((id) => ({
              kind: 'k',
              id,
              epoch: 1,
              expectedVersion: version,
              newVersion: version + 1,
              state: `${round}`,
            }));
          const [a, b] = await Promise.all([
            stores[0]!.write(batch(keys)),
            stores[1]!.write(batch([...keys].reverse())),
          ]);
          // Each key was written by exactly one of the two batches.
          keys.forEach((_, i) => {
            expect(Number(a![i]) + Number(b![keys.length - 1 - i])).toBe(1);
          });
          version++;
        }
      });

      it('a stale owner racing a new owner never overwrites the new owner', { timeout: 60_000 }, async () => {
        const [stale, fresh] = await instances(2);
        await stale!.activate([{ kind: 'k', id: 'x', epoch: 1, initialState: '"init"' }]);
        let staleVersion = 0;
        const staleWrites = (async () => {
          for (let i = 0; i < 30; i++) {
            const [ok] = await stale!.write([
              {
                kind: 'k',
                id: 'x',
                epoch: 1,
                expectedVersion: staleVersion,
                newVersion: staleVersion + 1,
                state: '"stale"',
              },
            ]);
            if (!ok) return;
            staleVersion++;
          }
        })();
        await sleep(5);
        const [activated] = await fresh!.activate([{ kind: 'k', id: 'x', epoch: 2, initialState: '"unused"' }]);
        await staleWrites;
        expect(activated?.ok).toBe(true);
        if (!activated?.ok) return;
        // Everything the new owner read is still there: the stale owner wrote nothing after it.
        expect(await stale!.readEntity('k', 'x')).toMatchObject({ version: activated.version, epoch: 2 });
        expect(
          await fresh!.write([
            {
              kind: 'k',
              id: 'x',
              epoch: 2,
              expectedVersion: activated.version,
              newVersion: activated.version + 1,
              state: '"fresh"',
            },
          ]),
        ).toEqual([true]);
      });

      it('two writers appending at the same expected version: exactly one succeeds', { timeout: 60_000 }, async () => {
        const [a, b] = await instances(2);
        const ROUNDS = 40;
        for (let round = 0; round < ROUNDS; round++) {
          const results = await Promise.all(
            [a!, b!].map((s, i) =>
              s.appendEvents({
                stream: 'user/sue',
                expectedVersion: round,
                events: [{ type: 'Joined', data: JSON.stringify({ writer: i, round }) }],
                node: `writer-${i}`,
              }),
            ),
          );
          expect(results.filter((r) => r.ok)).toEqual([{ ok: true, version: round + 1 }]);
          expect(results.filter((r) => !r.ok)).toEqual([{ ok: false, actualVersion: round + 1 }]);
        }
        const events = await a!.readEvents('user/sue', 1, 1000);
        expect(events.map((e) => e.version)).toEqual(Array.from({ length: ROUNDS }, (_, i) => i + 1));
      });

      it('a fenced write with events and a direct append at one version: exactly one lands', {
        timeout: 60_000,
      }, async () => {
        const [owner, outside] = await instances(2);
        await owner!.activate([{ kind: 'es', id: 'u', epoch: 1, initialState: '"s"' }]);
        let row = 0;
        let stream = 0;
        for (let round = 0; round < 30; round++) {
          const [[fenced], direct] = await Promise.all([
            owner!.write([
              {
                kind: 'es',
                id: 'u',
                epoch: 1,
                expectedVersion: row,
                newVersion: stream + 1,
                state: null,
                append: { stream: 'es/u', node: 'owner', events: [{ type: 'Owner', data: '1' }] },
              },
            ]),
            outside!.appendEvents({
              stream: 'es/u',
              expectedVersion: stream,
              events: [{ type: 'Outside', data: '1' }],
              node: 'outside',
            }),
          ]);
          expect(Number(fenced) + Number(direct.ok)).toBe(1);
          stream++;
          if (fenced) row = stream;
          const stored = await owner!.readEntity('es', 'u');
          expect(stored?.version).toBe(row);
        }
        const events = await owner!.readEvents('es/u', 1, 100);
        expect(events.map((e) => e.version)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
      });

      it('concurrent appenders and a log reader: following the cursor sees every event exactly once', {
        timeout: 60_000,
      }, async () => {
        const stores = await instances(4);
        const reader = stores[0]!;
        const WRITERS = 3;
        const PER_WRITER = 60;
        let done = false;
        const seen: StoredEvent[] = [];
        const reading = (async () => {
          let cursor: string | null = null;
          for (;;) {
            const finished = done;
            const page: EventLogPage = await reader.readEventLog(cursor, 7);
            seen.push(...page.events);
            cursor = page.cursor;
            if (finished && page.events.length === 0) return;
          }
        })();
        await Promise.all(
          stores.slice(1).map(async (s, w) => {
            for (let i = 0; i < PER_WRITER; i++) {
              // Two streams per writer, several events per append, all racing each other.
              const stream = `w${w}/${i % 2}`;
              const version = await s.streamVersion(stream);
              const result = await s.appendEvents({
                stream,
                expectedVersion: version,
                events: [
                  { type: 'E', data: String(i) },
                  { type: 'E', data: String(i) },
                ],
                node: `w${w}`,
              });
              expect(result.ok).toBe(true);
            }
          }),
        );
        done = true;
        await reading;
        expect(seen).toHaveLength(WRITERS * PER_WRITER * 2);
        const keys = seen.map((e) => `${e.stream}@${e.version}`);
        expect(new Set(keys).size).toBe(keys.length);
        for (let w = 0; w < WRITERS; w++) {
          for (const half of [0, 1]) {
            const versions = seen.filter((e) => e.stream === `w${w}/${half}`).map((e) => e.version);
            expect(versions).toEqual(Array.from({ length: PER_WRITER }, (_, i) => i + 1));
          }
        }
      });
    });
  });
}
