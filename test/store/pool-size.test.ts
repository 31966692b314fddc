/**
 * The PostgreSQL pool size: `?max=N` on the store URL bounds the connections a node opens (each
 * node may open up to the pool size, so N nodes need N × max of the server's max_connections).
 */
import postgres from 'postgres';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/open.js';
import { parsePoolSize } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/types.js';
import { createTestDatabase, dropTestDatabase } from '../support/pg.js';

describe('the max store URL option (pool size)', () => {
  it('is taken out of the URL; a whole number from 1 to 100; 8 when absent', () => {
    expect(parsePoolSize('postgres://u:p@h:5/db?max=3')).toEqual({ url: 'postgres://u:p@h:5/db', max: 3 });
    expect(parsePoolSize('postgres://h/db?sslmode=require&max=2&pgbouncer=true')).toEqual({
      url: 'postgres://h/db?sslmode=require&pgbouncer=true',
      max: 2,
    });
    expect(parsePoolSize('postgres://h/db')).toEqual({ url: 'postgres://h/db', max: 8 });
    expect(parsePoolSize('postgres://h/db?sslmode=require')).toEqual({
      url: 'postgres://h/db?sslmode=require',
      max: 8,
    });
    for (const bad of ['0', '101', '2.5', 'many', '']) {
      expect(() => parsePoolSize(`postgres://h/db?max=${bad}`)).toThrow(/max \(the pool size\)/);
    }
  });

  describe('on the server', () => {
    let url: string;
    const stores: Store[] = [];
    beforeEach(async () => {
      url = await createTestDatabase();
    });
    afterEach(async () => {
      await Promise.all(stores.splice(0).map((s) => s.close().catch(() => {})));
      await dropTestDatabase(url);
    });

    async function connectionsDuring(storeUrl: string): Promise<number> {
      const store = await openStore(storeUrl);
      stores.push(store);
      // 40 claims at once: the client opens as many connections as its pool allows.
      await Promise.all(Array.from({ length: 40 }, (_, s) => store.claimShard(s, 0, 'n1', 1)));
      const name = decodeURIComponent(new URL(url).pathname.slice(1));
      const admin = postgres(url, { max: 1, onnotice: () => {} });
      try {
        const [row] = await admin<{ count: number }[]>`
          SELECT count(*)::int AS count FROM pg_stat_activity
          WHERE datname = ${name} AND application_name = 'concord'`;
        return row!.count;
      } finally {
        await admin.end({ timeout: 5 });
        await store.close();
      }
    }

    it('bounds the connections one store opens', async () => {
      const store = await openStore(url);
      await store.initShards(256);
      await store.close();
      expect(await connectionsDuring(`${url}?max=2`)).toBeLessThanOrEqual(2);
      // Without the option: the default pool, and a burst does open more than 2.
      expect(await connectionsDuring(url)).toBeGreaterThan(2);
    });
  });
});
