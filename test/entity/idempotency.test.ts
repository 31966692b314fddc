/**
 * The entity host's idempotency keys, in-process on a real SQLite store (no cluster): replays,
 * reused keys, keys within one batch, changes vs no-changes, unserialisable replies, the
 * memory bound and its store fallback, reload by a newer owner, a fenced-out owner, the sweep.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { defineEntity, type EntityDefinition } from '../../src/entity/define.js';
import { EntityHost, type OwnershipGuard } from '../../src/entity/host.js';
import { canonicalJson, fingerprint, KeyMemory } from '../../src/entity/idempotency.js';
import { silentLogger } from '../../src/logger.js';
import { SqliteStore } from '../../src/store/sqlite-store.js';
import type { Store } from '../../src/store/types.js';
import { tempSqliteUrl } from '../support/tmp.js';

let runs = 0;

const Counter = defineEntity('counter', {
  initial: () => ({ n: 0 }),
  handlers: {
    get: (state) => state.n,
    add: (state, by: number, ctx) => {
      runs++;
      ctx.setState({ n: state.n + by });
      return { n: state.n + by, version: ctx.version };
    },
    /** Changes nothing: a read, whatever its key. */
    peek: (state) => {
      runs++;
      return { n: state.n };
    },
    /** Changes the state but replies with something JSON cannot hold. */
    addBig: (state, by: number, ctx) => {
      ctx.setState({ n: state.n + by });
      return BigInt(state.n + by);
    },
    /** A write whose reply is undefined. */
    silentAdd: (state, by: number, ctx) => {
      ctx.setState({ n: state.n + by });
    },
  },
});

const stores: Store[] = [];
const hosts: EntityHost[] = [];

afterEach(async () => {
  for (const host of hosts.splice(0)) host.close();
  await Promise.all(stores.splice(0).map((store) => store.close()));
});

async function openStore(path?: string): Promise<{ store: Store; path: string }> {
  const file = path ?? tempSqliteUrl().slice('sqlite:'.length);
  const store = new SqliteStore(file, { inProcess: true });
  stores.push(store);
  await store.migrate();
  return { store, path: file };
}

function guard(epoch: () => number): OwnershipGuard {
  return {
    canServe: () => true,
    heldEpoch: () => epoch(),
    leaseValid: () => true,
    ownerOf: () => ({ owner: 'self', epoch: epoch() }),
    suspect: () => {},
  };
}

function host(store: Store, epoch: number | (() => number), keysPerEntity = 10_000): EntityHost {
  const h = new EntityHost(
    new Map([[Counter.kind, Counter as unknown as EntityDefinition]]),
    store,
    guard(typeof epoch === 'number' ? () => epoch : epoch),
    {
      idleTimeoutMs: 60_000,
      maxActiveEntities: 1000,
      maxTurnsPerBatch: 256,
      maxConcurrentCommits: 1,
      maxIdempotencyKeysPerEntity: keysPerEntity,
    },
    silentLogger,
  );
  hosts.push(h);
  return h;
}

const call = (h: EntityHost, handler: string, message: unknown, key?: string, id = 'c1') =>
  h.invoke('counter', id, 0, handler, message, performance.now() + 5000, key);

async function failure(promise: Promise<unknown>): Promise<{ code?: string; name?: string; message: string }> {
  try {
    await promise;
  } catch (error) {
    return error as { code?: string; message: string };
  }
  throw new Error('expected a failure');
}

describe('canonical JSON and fingerprints', () => {
  it('sorts keys at every depth and treats undefined and null alike', () => {
    expect(canonicalJson({ b: 1, a: [{ y: 2, x: undefined, z: null }], c: 'é' })).toBe('{"a":[{"y":2}],"b":1,"c":"é"}');
    expect(canonicalJson([undefined, null, Number.NaN])).toBe('[null,null,null]');
    expect(canonicalJson(undefined)).toBe('null');
    expect(canonicalJson(new Date(0))).toBe('"1970-01-01T00:00:00.000Z"');
    expect(fingerprint('add', { a: 1, b: 2 })).toBe(fingerprint('add', { b: 2, a: 1 }));
    expect(fingerprint('add', { a: 1, b: null })).toBe(fingerprint('add', { a: 1 }));
    expect(fingerprint('add', 1)).not.toBe(fingerprint('sub', 1));
    expect(fingerprint('add', 1)).not.toBe(fingerprint('add', '1'));
    expect(fingerprint('add', 1)).toMatch(/^[0-9a-f]{64}$/);
  });

  it('refuses what JSON cannot hold', () => {
    const loop: Record<string, unknown> = {};
    loop.self = loop;
    expect(() => canonicalJson(loop)).toThrow(TypeError);
    expect(() => canonicalJson({ n: 1n })).toThrow(TypeError);
    // A shared (not circular) object is fine.
    const shared = { x: 1 };
    expect(canonicalJson([shared, shared])).toBe('[{"x":1},{"x":1}]');
  });

  it('KeyMemory keeps the newest `limit` keys and says when it is no longer complete', () => {
    const memory = new KeyMemory(2);
    memory.load([
      { key: 'c', fingerprint: 'f', reply: '3', createdAt: 3 },
      { key: 'b', fingerprint: 'f', reply: '2', createdAt: 2 },
    ]);
    expect(memory.complete).toBe(true);
    memory.remember({ key: 'd', fingerprint: 'f', reply: '4' });
    expect(memory.complete).toBe(false);
    expect(memory.get('b')).toBeUndefined();
    expect(memory.get('c')?.reply).toBe('3');
    const partial = new KeyMemory(1);
    partial.load([
      { key: 'new', fingerprint: 'f', reply: null, createdAt: 2 },
      { key: 'old', fingerprint: 'f', reply: null, createdAt: 1 },
    ]);
    expect(partial.complete).toBe(false);
    expect(partial.get('new')).toBeDefined();
    expect(partial.get('old')).toBeUndefined();
  });
});

describe('EntityHost with idempotency keys', () => {
  it('a retry with the key replays the first reply without running the handler', async () => {
    const { store } = await openStore();
    const h = host(store, 1);
    runs = 0;
    expect(await call(h, 'add', 5, 'k1')).toEqual({ n: 5, version: 1 });
    expect(await call(h, 'add', 5, 'k1')).toEqual({ n: 5, version: 1 });
    expect(runs).toBe(1);
    expect(await call(h, 'get', undefined)).toBe(5);
    expect(await store.readEntity('counter', 'c1')).toMatchObject({ version: 1 });
    expect(await store.readIdempotencyKey('counter', 'c1', 'k1')).toMatchObject({
      fingerprint: fingerprint('add', 5),
      reply: '{"n":5,"version":1}',
    });
  });

  it('the same key with another handler or message fails with IdempotencyKeyReused and runs nothing', async () => {
    const { store } = await openStore();
    const h = host(store, 1);
    await call(h, 'add', 1, 'k');
    runs = 0;
    const reused = await failure(call(h, 'add', 2, 'k'));
    expect(reused).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED', name: 'IdempotencyKeyReused' });
    expect((await failure(call(h, 'peek', 1, 'k'))).code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(runs).toBe(0);
    expect(await call(h, 'get', undefined)).toBe(1);
    // Keys are per entity: the same key on another entity is another key.
    expect(await call(h, 'add', 2, 'k', 'c2')).toEqual({ n: 2, version: 1 });
  });

  it('keys within one batch: a repeat replays, a different request is refused, one write covers the batch', async () => {
    const { store } = await openStore();
    const h = host(store, 1);
    runs = 0;
    // A fresh entity: the calls queue while it activates, then run as one batch.
    const results = await Promise.allSettled([
      call(h, 'add', 1, 'a'),
      call(h, 'add', 1, 'a'),
      call(h, 'add', 2, 'a'),
      call(h, 'add', 10, 'b'),
      call(h, 'add', 100),
    ]);
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as { code: string }).code))).toEqual([
      { n: 1, version: 1 },
      { n: 1, version: 1 },
      'IDEMPOTENCY_KEY_REUSED',
      { n: 11, version: 2 },
      { n: 111, version: 3 },
    ]);
    expect(runs).toBe(3);
    expect(h.stats.commits).toBe(1);
    expect((await store.readIdempotencyKeys('counter', 'c1', 0)).map((k) => k.key).sort()).toEqual(['a', 'b']);
  });

  it('a keyed call that changes nothing records nothing (a retry runs it again)', async () => {
    const { store } = await openStore();
    const h = host(store, 1);
    runs = 0;
    expect(await call(h, 'peek', undefined, 'p')).toEqual({ n: 0 });
    expect(await call(h, 'add', 3, 'p')).toEqual({ n: 3, version: 1 }); // the key was never taken
    expect(await call(h, 'peek', undefined, 'q')).toEqual({ n: 3 });
    expect(await call(h, 'peek', undefined, 'q')).toEqual({ n: 3 });
    expect(runs).toBe(4);
    expect((await store.readIdempotencyKeys('counter', 'c1', 0)).map((k) => k.key)).toEqual(['p']);
  });

  it('a reply JSON cannot hold fails only that turn, which changes nothing; undefined replays as undefined', async () => {
    const { store } = await openStore();
    const h = host(store, 1);
    // One batch (the calls queue while the entity activates).
    const results = await Promise.allSettled([
      call(h, 'add', 1, 'x'),
      call(h, 'addBig', 1000, 'big'),
      call(h, 'silentAdd', 10, 'quiet'),
    ]);
    expect(results[0]).toEqual({ status: 'fulfilled', value: { n: 1, version: 1 } });
    expect(results[1]).toMatchObject({ status: 'rejected', reason: { code: 'HANDLER_ERROR' } });
    expect(results[2]).toEqual({ status: 'fulfilled', value: undefined });
    expect(await call(h, 'get', undefined)).toBe(11);
    expect(await call(h, 'silentAdd', 10, 'quiet')).toBeUndefined();
    expect(await call(h, 'get', undefined)).toBe(11);
    expect(await store.readIdempotencyKey('counter', 'c1', 'big')).toBeNull();
    expect(await store.readIdempotencyKey('counter', 'c1', 'quiet')).toMatchObject({ reply: null });
  });

  it('a key that cannot be a key, or a message that cannot be fingerprinted, is a bad message', async () => {
    const { store } = await openStore();
    const h = host(store, 1);
    expect((await failure(call(h, 'add', 1, ''))).code).toBe('BAD_MESSAGE');
    expect((await failure(call(h, 'add', 1, 'x'.repeat(1025)))).code).toBe('BAD_MESSAGE');
    expect((await failure(call(h, 'add', 1n, 'k'))).code).toBe('BAD_MESSAGE');
    expect(await call(h, 'get', undefined)).toBe(0);
  });

  it('a newer owner sees the keys an older one committed; a fenced-out owner commits no key', async () => {
    const { store, path } = await openStore();
    const older = host(store, 1);
    expect(await call(older, 'add', 1, 'k1')).toEqual({ n: 1, version: 1 });
    // A newer owner (epoch 2, another store connection) activates the entity.
    const { store: other } = await openStore(path);
    const newer = host(other, 2);
    runs = 0;
    expect(await call(newer, 'add', 1, 'k1')).toEqual({ n: 1, version: 1 }); // replayed
    expect(runs).toBe(0);
    // The older owner, still active at epoch 1, is fenced: its change and its key are refused.
    const fenced = await failure(call(older, 'add', 1, 'k2'));
    expect(fenced.name).toBe('Moved');
    expect(await other.readIdempotencyKey('counter', 'c1', 'k2')).toBeNull();
    expect(await call(newer, 'add', 1, 'k2')).toEqual({ n: 2, version: 2 });
    expect(await call(newer, 'get', undefined)).toBe(2);
  });

  it('beyond the memory bound a key not in memory is looked up in the store: still exact', async () => {
    const { store, path } = await openStore();
    const h = host(store, 1, 3);
    for (let i = 0; i < 10; i++) expect(await call(h, 'add', 1, `k${i}`)).toEqual({ n: i + 1, version: i + 1 });
    runs = 0;
    // k0…k6 were evicted from memory; the store still answers for them.
    for (let i = 0; i < 10; i++) expect(await call(h, 'add', 1, `k${i}`)).toEqual({ n: i + 1, version: i + 1 });
    expect((await failure(call(h, 'add', 2, 'k0'))).code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(runs).toBe(0);
    // A new activation with more keys in the store than it may remember loads the newest.
    const { store: other } = await openStore(path);
    const newer = host(other, 2, 3);
    expect(await call(newer, 'add', 1, 'k1')).toEqual({ n: 2, version: 2 });
    expect(await call(newer, 'add', 1, 'k9')).toEqual({ n: 10, version: 10 });
    expect(await call(newer, 'add', 1, 'k10')).toEqual({ n: 11, version: 11 });
    expect(runs).toBe(1);
  });

  it('unkeyed calls on an entity that has keys neither record nor look up anything', async () => {
    const { store } = await openStore();
    const h = host(store, 1);
    await call(h, 'add', 1, 'k');
    for (let i = 0; i < 5; i++) await call(h, 'add', 1);
    expect(await call(h, 'get', undefined)).toBe(6);
    expect((await store.readIdempotencyKeys('counter', 'c1', 0)).map((k) => k.key)).toEqual(['k']);
  });

  it('the sweep deletes keys older than the window', async () => {
    const { store } = await openStore();
    const h = new EntityHost(
      new Map([[Counter.kind, Counter as unknown as EntityDefinition]]),
      store,
      guard(() => 1),
      {
        idleTimeoutMs: 60_000,
        maxActiveEntities: 1000,
        maxTurnsPerBatch: 256,
        maxConcurrentCommits: 1,
        idempotencyWindowMs: 200,
      },
      silentLogger,
    );
    hosts.push(h);
    await call(h, 'add', 1, 'old');
    const created = (await store.readIdempotencyKey('counter', 'c1', 'old'))!.createdAt;
    while ((await store.now()) <= created + 250) await new Promise((r) => setTimeout(r, 20));
    await call(h, 'add', 1, 'new');
    expect(await h.pruneKeys()).toBe(1);
    expect((await store.readIdempotencyKeys('counter', 'c1', 0)).map((k) => k.key)).toEqual(['new']);
  });
});
