/**
 * The entity host's turns, in-process on a real SQLite store (no cluster): calls queued while
 * a write commits run as one batch on the state the earlier turns left, each seeing its
 * version; synchronous and asynchronous handlers mix in one batch in call order; a failing
 * handler changes nothing; `setState` works when taken out of the context; and a batch of
 * reads is answered without a write.
 */
import { afterEach, expect, it } from 'vitest';
import { defineEntity, type EntityDefinition } from '../../src/entity/define.js';
import { EntityHost } from '../../src/entity/host.js';
import { silentLogger } from '../../src/logger.js';
import { SqliteStore } from '../../src/store/sqlite-store.js';
import type { Store } from '../../src/store/types.js';
import { tempSqliteUrl } from '../support/tmp.js';

const Tally = defineEntity('tally', {
  initial: () => ({ items: [] as string[] }),
  handlers: {
    get: (state) => state.items,
    version: (_state, _m: undefined, ctx) => ctx.version,
    push: (state, item: string, ctx) => {
      const before = ctx.version;
      ctx.setState({ items: [...state.items, item] });
      return { before, after: ctx.version };
    },
    /** The same, with setState taken out of the context. */
    pushDetached: (state, item: string, { setState }) => {
      setState({ items: [...state.items, item] });
      return state.items.length + 1;
    },
    pushLater: async (state, item: string, ctx) => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      ctx.setState({ items: [...state.items, item] });
      return ctx.version;
    },
    pushThenFail: (state, item: string, ctx) => {
      ctx.setState({ items: [...state.items, item] });
      throw new Error(`refused ${item}`);
    },
    failLater: async (_state, item: string) => {
      await Promise.resolve();
      throw new Error(`refused ${item} later`);
    },
  },
});

let store: Store;
let host: EntityHost;

afterEach(async () => {
  host.close();
  await store.close();
});

async function start(): Promise<void> {
  store = new SqliteStore(tempSqliteUrl().slice('sqlite:'.length), { inProcess: true });
  await store.migrate();
  host = new EntityHost(
    new Map([[Tally.kind, Tally as unknown as EntityDefinition]]),
    store,
    {
      canServe: () => true,
      heldEpoch: () => 1,
      leaseValid: () => true,
      ownerOf: () => ({ owner: 'self', epoch: 1 }),
      suspect: () => {},
    },
    { idleTimeoutMs: 60_000, maxActiveEntities: 1000, maxTurnsPerBatch: 256, maxConcurrentCommits: 1 },
    silentLogger,
  );
}

const call = (handler: string, message?: unknown) =>
  host.invoke('tally', 't1', 0, handler, message, performance.now() + 5000);

it('runs the calls queued behind a write as one batch, in call order, sync and async handlers alike', async () => {
  await start();
  expect(await call('push', 'a')).toEqual({ before: 0, after: 1 });
  const commitsBefore = host.stats.commits;
  // Made in one go: the first runs (and commits) alone or with the rest; all are in order.
  const results = await Promise.allSettled([
    call('push', 'b'),
    call('pushLater', 'c'),
    call('get'),
    call('pushThenFail', 'x'),
    call('pushDetached', 'd'),
    call('failLater', 'y'),
    call('version'),
  ]);
  const values = results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message));
  expect(values).toEqual([{ before: 1, after: 2 }, 3, ['a', 'b', 'c'], 'refused x', 4, 'refused y later', 4]);
  expect(host.stats.commits - commitsBefore).toBeLessThanOrEqual(2);
  // What was acknowledged is what the store holds: the failed turns changed nothing.
  const row = await store.readEntity('tally', 't1');
  expect(JSON.parse(row!.state)).toEqual({ items: ['a', 'b', 'c', 'd'] });
  expect(row!.version).toBe(4);
});

it('answers a batch of reads from memory without writing', async () => {
  await start();
  await call('push', 'a');
  const commitsBefore = host.stats.commits;
  const reads = await Promise.all(Array.from({ length: 50 }, () => call('get')));
  expect(reads.every((items) => JSON.stringify(items) === '["a"]')).toBe(true);
  expect(host.stats.commits).toBe(commitsBefore);
});
