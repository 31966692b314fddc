import { describe, expect, it } from 'vitest';
import type { ProcessNode } from '../support/cluster.js';
import { eventually, freshStoreUrl, sleep, startCluster } from '../support/cluster.js';
import { dump, heal, map, mapStats, members, partition } from './support.js';

const NAME = 'kv';
const TOPIC = `$rmap:${NAME}`;
const SYNC_INTERVAL_MS = 200;
const GRACE_MS = 300;

/** What every replica must converge to: the writes applied in the order the test made them. */
class Model {
  readonly contents = new Map<string, unknown>();
  readonly deleted = new Set<string>();
  writes = 0;

  async set(node: ProcessNode, keys: string[], value: unknown): Promise<void> {
    await map(node, { action: 'set', name: NAME, entries: keys.map((k) => [k, value]) });
    for (const k of keys) {
      this.contents.set(k, value);
      this.deleted.delete(k);
    }
    this.writes += keys.length;
  }

  async delete(node: ProcessNode, keys: string[]): Promise<void> {
    await map(node, { action: 'delete', name: NAME, keys });
    for (const k of keys) {
      this.contents.delete(k);
      this.deleted.add(k);
    }
    this.writes += keys.length;
  }

  sorted(): [string, unknown][] {
    return [...this.contents].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  }
}

const range = (prefix: string, from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => `${prefix}-${from + i}`);

async function digests(nodes: ProcessNode[]): Promise<string[]> {
  return Promise.all(nodes.map(async (n) => (await mapStats(n, NAME)).digest));
}

/** Poll until every replica has the same digest; resolves with the moment it was seen. */
async function converged(nodes: ProcessNode[], timeoutMs: number): Promise<number> {
  return eventually(
    async () => {
      const all = await digests(nodes);
      if (new Set(all).size !== 1) throw new Error(`replicas differ: ${all.join(' ')}`);
      return performance.now();
    },
    timeoutMs,
    10,
  );
}

async function expectContents(nodes: ProcessNode[], model: Model): Promise<void> {
  const expected = model.sorted();
  for (const node of nodes) {
    const contents = await dump(node, NAME);
    expect(contents.length).toBe(expected.length);
    expect(contents).toEqual(expected);
    const keys = new Set(contents.map(([k]) => k));
    expect([...model.deleted].filter((k) => keys.has(k))).toEqual([]);
  }
}

describe('replicated map across node processes, with partitions', () => {
  it('10,000 writes on both sides of a partition converge after heal; deletes stick; tombstones are collected', async () => {
    const store = await freshStoreUrl('sqlite');
    // Lease 3 s: failure detection takes 3 s, so the first partition below (< 1 s) only
    // loses frames and the connections survive, as on a flaky link.
    const nodes = await startCluster({ store, nodes: 3, leaseTtlMs: 3000 });
    const [n1, n2, n3] = nodes as [ProcessNode, ProcessNode, ProcessNode];
    for (const n of nodes) {
      await map(n, { action: 'open', name: NAME, syncIntervalMs: SYNC_INTERVAL_MS, tombstoneGraceMs: GRACE_MS });
    }
    const model = new Model();
    await model.set(n1, range('base', 0, 4000), 'v0');
    await converged(nodes, 5000);
    await expectContents(nodes, model);

    // ---- 1. a short partition: every frame between the sides is lost, connections stay up.
    await partition([n1, n2], [n3]);
    const before = model.writes;
    await model.set(n1, range('base', 0, 2000), 'A1');
    await sleep(5);
    await model.delete(n3, range('base', 0, 1000)); // keys the other side updated earlier
    await model.set(n3, range('base', 2000, 3000), 'B1');
    await model.set(n3, range('b', 0, 3000), 'B1');
    await sleep(5);
    await model.set(n2, range('a', 0, 2500), 'A2');
    await model.delete(n1, range('base', 2500, 3000)); // keys the other side updated earlier
    expect(model.writes - before).toBe(10_000);
    // Each side converges on its own (broadcasts are asynchronous); the two sides differ.
    await eventually(async () => {
      const [d1, d2, d3] = await digests(nodes);
      if (d1 !== d2 || d1 === d3) throw new Error(`sides not settled: ${d1} ${d2} ${d3}`);
    }, 5000);

    await heal(nodes);
    const healedAt = performance.now();
    const done = await converged(nodes, 5000);
    console.log(`[map] short partition: 10,000 writes converged ${(done - healedAt).toFixed(0)} ms after heal`);
    expect(done - healedAt).toBeLessThan(2000);
    await expectContents(nodes, model);
    // Every delete is held as a tombstone, or already collected (and remembered as such).
    for (const n of nodes) {
      const stats = await mapStats(n, NAME);
      expect(stats.tombstones + stats.purged).toBe(1500);
    }

    // ---- tombstones go once every member holds them, and no deleted key comes back.
    const collectedAt = await eventually(
      async () => {
        const stats = await Promise.all(nodes.map((n) => mapStats(n, NAME)));
        if (stats.some((s) => s.tombstones > 0)) throw new Error(`tombstones: ${stats.map((s) => s.tombstones)}`);
        return performance.now();
      },
      10_000,
      50,
    );
    console.log(`[map] all 1,500 tombstones collected ${(collectedAt - done).toFixed(0)} ms after convergence`);
    await sleep(3 * SYNC_INTERVAL_MS);
    await converged(nodes, 2000);
    await expectContents(nodes, model);

    // ---- 2. a long partition: the connections drop and have to be re-established.
    await partition([n1, n2], [n3]);
    await eventually(async () => {
      if ((await members(n1, TOPIC)).includes('n3') || (await members(n3, TOPIC)).length > 1) {
        throw new Error('the sides still see each other');
      }
    }, 10_000);
    await model.set(n1, range('c', 0, 5000), 'A3');
    await sleep(5);
    await model.delete(n3, range('base', 1000, 2000)); // updated by the other side in step 1
    await model.set(n3, range('d', 0, 4000), 'B3');
    await heal(nodes);
    const healed2 = performance.now();
    const reconnected = await eventually(
      async () => {
        for (const n of nodes) {
          if ((await members(n, TOPIC)).length !== 3) throw new Error(`${n.name} not reconnected`);
        }
        return performance.now();
      },
      10_000,
      10,
    );
    const done2 = await converged(nodes, 5000);
    console.log(
      `[map] long partition: reconnected ${(reconnected - healed2).toFixed(0)} ms after heal (transport redial), ` +
        `10,000 writes converged ${(done2 - healed2).toFixed(0)} ms after heal`,
    );
    expect(done2 - healed2).toBeLessThan(2000);
    await expectContents(nodes, model);
    await eventually(async () => {
      const stats = await Promise.all(nodes.map((n) => mapStats(n, NAME)));
      if (stats.some((s) => s.tombstones > 0)) throw new Error('tombstones left');
    }, 10_000);
    await expectContents(nodes, model);
  });
});
