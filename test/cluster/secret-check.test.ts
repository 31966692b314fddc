/**
 * The cluster secret's verifier in the store, checked in-process on both backends: first
 * node, later nodes, a rotation step by step, concurrent first starters, the refusal record,
 * and ConcordNode.start refusing before it registers anything.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import {
  checkClusterSecret,
  MAX_REFUSED_JOINS,
  readRefusedJoins,
  recordRefusedJoin,
  SECRET_META,
  secretVerifier,
} from '../../src/cluster/secret-check.js';
import { SecretMismatch, WeakSecret } from '../../src/errors.js';
import { silentLogger } from '../../src/logger.js';
import { ConcordNode } from '../../src/runtime/node.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/types.js';
import { type Backend, backends, freshStoreUrl } from '../support/cluster.js';

const OLD = 'the-old-secret-of-this-cluster';
const NEW = 'the-new-secret-of-this-cluster';
const OTHER = 'somebody-elses-cluster-secret';

const opened: Store[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close().catch(() => {})));
});

async function open(url: string): Promise<Store> {
  const store = await openStore(url);
  opened.push(store);
  return store;
}

async function verifiers(store: Store): Promise<string[]> {
  return JSON.parse((await store.readMeta(SECRET_META.verifiers))!) as string[];
}

async function refusal(promise: Promise<unknown>): Promise<SecretMismatch> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(SecretMismatch);
  return error as SecretMismatch;
}

describe.each(backends)('the cluster secret check (%s)', (backend: Backend) => {
  it('the first node records a random cluster id and its verifier, never the secret', async () => {
    const store = await open(await freshStoreUrl(backend));
    const result = await checkClusterSecret(store, OLD);
    expect(result.outcome).toBe('created');
    expect(result.clusterId).toMatch(/^[0-9a-f]{32}$/);
    expect(await store.readMeta(SECRET_META.clusterId)).toBe(result.clusterId);
    expect(await verifiers(store)).toEqual([secretVerifier(OLD, result.clusterId)]);
    expect(await store.readMeta(SECRET_META.verifiers)).not.toContain(OLD);
    // Later nodes with the same secret match; the id stays.
    expect(await checkClusterSecret(store, OLD)).toEqual({ clusterId: result.clusterId, outcome: 'matched' });
  });

  it('another secret is refused, naming the cluster id, and changes nothing', async () => {
    const store = await open(await freshStoreUrl(backend));
    const { clusterId } = await checkClusterSecret(store, OLD);
    const before = await store.readMeta(SECRET_META.verifiers);
    const error = await refusal(checkClusterSecret(store, OTHER));
    expect(error.code).toBe('SECRET_MISMATCH');
    expect(error.message).toContain(
      `differs from the secret of the cluster recorded in this store (cluster id ${clusterId})`,
    );
    expect(error.message).toContain('README');
    expect(await refusal(checkClusterSecret(store, OTHER, NEW))).toBeInstanceOf(SecretMismatch);
    expect(await store.readMeta(SECRET_META.verifiers)).toBe(before);
  });

  it('a rotation: old → old+new (adds) → new only (ends it) → old alone is refused', async () => {
    const store = await open(await freshStoreUrl(backend));
    const { clusterId } = await checkClusterSecret(store, OLD);
    const v = (secret: string) => secretVerifier(secret, clusterId);
    // (a) nodes restarted with the new secret and the old one as previous.
    expect((await checkClusterSecret(store, NEW, OLD)).outcome).toBe('added');
    expect(await verifiers(store)).toEqual([v(OLD), v(NEW)]);
    expect((await checkClusterSecret(store, NEW, OLD)).outcome).toBe('matched');
    // A node not restarted yet (old secret only) that restarts meanwhile is let in, and resets
    // the list to the old secret; the next node restarted with new + old adds the new one back.
    expect((await checkClusterSecret(store, OLD)).outcome).toBe('ended-rotation');
    expect(await verifiers(store)).toEqual([v(OLD)]);
    expect((await checkClusterSecret(store, NEW, OLD)).outcome).toBe('added');
    // (b) a node restarted with the new secret alone ends the rotation.
    expect((await checkClusterSecret(store, NEW)).outcome).toBe('ended-rotation');
    expect(await verifiers(store)).toEqual([v(NEW)]);
    await refusal(checkClusterSecret(store, OLD));
    // A node that still has the old secret as previous passes on the new one, changing nothing.
    expect((await checkClusterSecret(store, NEW, OLD)).outcome).toBe('matched');
    expect(await verifiers(store)).toEqual([v(NEW)]);
  });

  it('concurrent first starters: one cluster id and one first secret win; the others are checked against it', {
    timeout: 30_000,
  }, async () => {
    const url = await freshStoreUrl(backend);
    const stores = await Promise.all([0, 1, 2, 3].map(() => open(url)));
    // Same secret: all pass, one id.
    const same = await Promise.all(stores.map((s) => checkClusterSecret(s, OLD)));
    expect(new Set(same.map((r) => r.clusterId)).size).toBe(1);
    expect(same.filter((r) => r.outcome === 'created')).toHaveLength(1);

    // Different secrets on a fresh store: exactly one secret wins.
    const url2 = await freshStoreUrl(backend);
    const racers = await Promise.all([0, 1, 2, 3].map(() => open(url2)));
    const secrets = racers.map((_, i) => `racing-secret-number-${i}-${randomBytes(4).toString('hex')}`);
    const outcomes = await Promise.allSettled(racers.map((s, i) => checkClusterSecret(s, secrets[i]!)));
    const winners = outcomes.flatMap((o, i) => (o.status === 'fulfilled' ? [i] : []));
    expect(winners).toHaveLength(1);
    for (const o of outcomes) if (o.status === 'rejected') expect(o.reason).toBeInstanceOf(SecretMismatch);
    const clusterId = (await racers[0]!.readMeta(SECRET_META.clusterId))!;
    expect(await verifiers(racers[0]!)).toEqual([secretVerifier(secrets[winners[0]!]!, clusterId)]);
  });

  it('refused joins: recorded with the store clock, the last 20 kept, concurrent records all land', {
    timeout: 30_000,
  }, async () => {
    const url = await freshStoreUrl(backend);
    const stores = await Promise.all([0, 1, 2].map(() => open(url)));
    const before = await stores[0]!.now();
    await Promise.all(stores.map((s, i) => recordRefusedJoin(s, `intruder-${i}`, 'secret mismatch')));
    const joins = await readRefusedJoins(stores[1]!);
    expect(joins.map((j) => j.name).sort()).toEqual(['intruder-0', 'intruder-1', 'intruder-2']);
    for (const join of joins) {
      expect(join.at).toBeGreaterThanOrEqual(before);
      expect(join.reason).toBe('secret mismatch');
      expect(typeof join.host).toBe('string');
    }
    for (let i = 0; i < MAX_REFUSED_JOINS + 5; i++) await recordRefusedJoin(stores[0]!, `late-${i}`, 'x');
    const kept = await readRefusedJoins(stores[2]!);
    expect(kept).toHaveLength(MAX_REFUSED_JOINS);
    expect(kept.at(-1)!.name).toBe(`late-${MAX_REFUSED_JOINS + 4}`);
  });
});

describe('ConcordNode.start and the secret', () => {
  const base = (name: string, store: string, secret: string) => ({
    name,
    store,
    secret,
    entities: [],
    leaseTtlMs: 1000,
    logger: silentLogger,
  });

  it('refuses a secret shorter than 16 bytes (UTF-8) with WeakSecret, unless explicitly allowed', async () => {
    const url = await freshStoreUrl('sqlite');
    const error = await ConcordNode.start(base('n1', url, 'fifteen-bytes!!')).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WeakSecret);
    expect((error as Error).message).toContain('openssl rand -hex 24');
    const node = await ConcordNode.start({ ...base('n1', url, 'short'), allowWeakSecret: true });
    await node.stop();
    // Six 3-byte characters are 18 bytes: long enough.
    const euro = await ConcordNode.start(base('n2', await freshStoreUrl('sqlite'), '€€€€€€'));
    await euro.stop();
  });

  it('a node with another secret is refused before it registers or claims anything; the refusal is recorded', async () => {
    const url = await freshStoreUrl('sqlite');
    const n1 = await ConcordNode.start(base('n1', url, OLD));
    try {
      const store = await open(url);
      const shardsBefore = await store.listShards();
      const error = await ConcordNode.start(base('n2', url, OTHER)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(SecretMismatch);
      expect((error as Error).message).toContain(n1.clusterId);
      expect((await store.listNodes()).nodes.map((n) => n.name)).toEqual(['n1']);
      expect(await store.listShards()).toEqual(shardsBefore);
      const { joins, now } = await n1.refusedJoins();
      expect(joins).toEqual([
        expect.objectContaining({ name: 'n2', reason: expect.stringContaining('secret mismatch') }),
      ]);
      expect(now - joins[0]!.at).toBeGreaterThanOrEqual(0);
    } finally {
      await n1.stop();
    }
  });
});
