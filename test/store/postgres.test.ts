/**
 * PostgreSQL backend: the conformance suite, plus what is specific to PostgreSQL (lock-then-
 * read-the-clock claims, dropped connections, unreachable servers, transaction poolers).
 * The server comes from test/support/global-setup.ts; these tests never skip.
 */
import postgres from 'postgres';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/open.js';
import { PostgresStore } from '../../src/store/postgres.js';
import type { Store } from '../../src/store/types.js';
import { Telemetry, withStoreTiming } from '../../src/telemetry.js';
import { createTestDatabase, dropTestDatabase } from '../support/pg.js';
import { storeConformance } from './conformance.js';

function rawClient(url: string) {
  return postgres(url, { max: 2, onnotice: () => {}, types: { bigint: postgres.BigInt } });
}

storeConformance('postgres', {
  freshDatabase: createTestDatabase,
  dropDatabase: dropTestDatabase,
  connect: (url, options) => new PostgresStore(url, options),
  async durabilityOf(store) {
    return (await (store as PostgresStore).synchronousCommit()) === 'off' ? 'relaxed' : 'strict';
  },
  async migrationVersions(url) {
    const sql = rawClient(url);
    try {
      const rows = await sql<{ version: string }[]>`SELECT version::text FROM concord_migrations ORDER BY version`;
      return rows.map((row) => Number(row.version));
    } finally {
      await sql.end({ timeout: 5 });
    }
  },
});

describe('PostgresStore specifics', () => {
  let url: string;
  const stores: Store[] = [];
  const raws: ReturnType<typeof rawClient>[] = [];

  beforeEach(async () => {
    url = await createTestDatabase();
  });

  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close().catch(() => {})));
    await Promise.all(raws.splice(0).map((r) => r.end({ timeout: 5 })));
    await dropTestDatabase(url);
  });

  async function open(storeUrl = url): Promise<Store> {
    const store = await openStore(storeUrl);
    stores.push(store);
    return store;
  }

  function raw() {
    const sql = rawClient(url);
    raws.push(sql);
    return sql;
  }

  it('a claim waits for an in-flight renewal of the holder and then sees the renewed lease', async () => {
    const store = await open();
    await store.initShards(1);
    const a = await store.registerNode({ name: 'a', address: 'a:1', httpAddress: null, ttlMs: 400 });
    const b = await store.registerNode({ name: 'b', address: 'b:1', httpAddress: null, ttlMs: 30_000 });
    expect(await store.claimShard(0, 0, 'a', a.incarnation)).toBe(1);

    // A renewal of `a` that has read the clock (lease still valid) but not committed yet.
    const sql = raw();
    const reserved = await sql.reserve();
    try {
      await reserved`BEGIN`;
      await reserved`UPDATE concord_nodes SET lease_expires_at = lease_expires_at + 60000 WHERE name = 'a'`;
      // Meanwhile the old lease runs out.
      while ((await store.now()) <= a.leaseExpiresAt) await new Promise((r) => setTimeout(r, 20));

      let settled = false;
      const claim = store.claimShard(0, 1, 'b', b.incarnation).finally(() => {
        settled = true;
      });
      await new Promise((r) => setTimeout(r, 200));
      expect(settled).toBe(false); // waiting for the holder's row
      await reserved`COMMIT`;
      expect(await claim).toBeNull();
    } finally {
      reserved.release();
    }
    expect((await store.listShards())[0]).toMatchObject({ owner: 'a', epoch: 1 });
  });

  it('the event log stays in xid order across a decimal digit boundary of the xids', { timeout: 60_000 }, async () => {
    // Cursor order is numeric on the xid: a text order ("1000" < "999") would repeat or skip events.
    const store = await open();
    const sql = raw();
    await store.appendEvents({ stream: 's', expectedVersion: 0, events: [{ type: 'Before', data: '1' }], node: 'n' });
    const xid = (await sql<{ xid: string }[]>`SELECT pg_current_xact_id()::text AS xid`)[0]!.xid;
    const boundary = 10 ** String(xid).length;
    // Burn xids up to just past the boundary: each subtransaction that writes takes one.
    await sql.unsafe(`CREATE TEMP TABLE burn (x int)`);
    await sql.unsafe(`DO $$ BEGIN FOR i IN 1..${boundary - Number(xid) + 1} LOOP
      BEGIN INSERT INTO burn VALUES (i); EXCEPTION WHEN others THEN NULL; END; END LOOP; END $$`);
    await store.appendEvents({ stream: 's', expectedVersion: 1, events: [{ type: 'After', data: '2' }], node: 'n' });
    const after = (await sql<{ after: string }[]>`SELECT max(tx)::text AS after FROM concord_events`)[0]!.after;
    expect(String(after).length).toBeGreaterThan(String(xid).length);
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let i = 0; i < 4; i++) {
      const page = await store.readEventLog(cursor, 1);
      seen.push(...page.events.map((e) => e.type));
      cursor = page.cursor;
    }
    expect(seen).toEqual(['Before', 'After']);
  });

  it('a renewal waiting behind a claim re-reads the clock and fails once the lease expired', async () => {
    const store = await open();
    const a = await store.registerNode({ name: 'a', address: 'a:1', httpAddress: null, ttlMs: 300 });
    const sql = raw();
    const reserved = await sql.reserve();
    try {
      // A claim holding the share lock on a's row while the lease runs out.
      await reserved`BEGIN`;
      await reserved`SELECT 1 FROM concord_nodes WHERE name = 'a' FOR SHARE`;
      const renewal = store.renewLease('a', a.incarnation, 30_000);
      while ((await store.now()) <= a.leaseExpiresAt) await new Promise((r) => setTimeout(r, 20));
      await reserved`COMMIT`;
      expect(await renewal).toEqual({ ok: false, reason: 'expired' });
    } finally {
      reserved.release();
    }
  });

  it('survives connections dropped by the server', async () => {
    const store = await open();
    await store.initShards(2);
    const sql = raw();
    await sql`
      SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid()`;
    // The next calls may fail (their connection is gone) but must reject, not crash; the pool
    // then reconnects.
    await store.listShards().catch(() => []);
    let shards: unknown[] = [];
    for (let attempt = 0; attempt < 20 && shards.length === 0; attempt++) {
      shards = await store.listShards().catch(() => []);
    }
    expect(shards).toHaveLength(2);
  });

  it('a server that cannot be reached makes openStore reject', { timeout: 30_000 }, async () => {
    const started = Date.now();
    await expect(openStore('postgres://concord:secret@127.0.0.1:1/nothing')).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it('works without named prepared statements (transaction-pooler mode)', async () => {
    const store = await open(`${url}?prepare=false`);
    await store.initShards(4);
    const reg = await store.registerNode({ name: 'n', address: 'n:1', httpAddress: null, ttlMs: 10_000 });
    expect(reg.ok).toBe(true);
    expect(await store.claimShard(1, 0, 'n', reg.incarnation)).toBe(1);
    await store.activate([{ kind: 'k', id: 'a', epoch: 1, initialState: '0' }]);
    expect(
      await store.write([{ kind: 'k', id: 'a', epoch: 1, expectedVersion: 0, newVersion: 1, state: '1' }]),
    ).toEqual([true]);
  });

  it('postgresql:// URLs are accepted and relaxed durability turns synchronous_commit off', async () => {
    const store = (await openStore(url.replace(/^postgres:/, 'postgresql:'), {
      durability: 'relaxed',
    })) as PostgresStore;
    stores.push(store);
    expect(store.backend).toBe('postgres');
    expect(await store.synchronousCommit()).toBe('off');
  });

  it('closes through the store-timing wrapper of a node, also with ?pgbouncer=true', async () => {
    // The wrapper once ran close() with itself as `this`, and the client (a function) came back
    // wrapped: `this.sql.end is not a function`, and every node on PostgreSQL exited 1 on SIGTERM.
    for (const storeUrl of [url, `${url}?pgbouncer=true`]) {
      const store = withStoreTiming(new PostgresStore(storeUrl), new Telemetry('n1'));
      await store.migrate();
      expect(await store.now()).toBeGreaterThan(0);
      await store.close();
    }
  });

  it('shares the database: only concord_ tables are created', async () => {
    await open();
    const sql = raw();
    const tables = await sql<{ table_name: string }[]>`
      SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name`;
    expect(tables.map((t) => t.table_name)).toEqual([
      'concord_entities',
      'concord_events',
      'concord_idempotency',
      'concord_meta',
      'concord_migrations',
      'concord_nodes',
      'concord_shards',
      'concord_suspicions',
    ]);
  });

  it('a failed migration rolls back completely and a later migrate() applies it', async () => {
    const sql = raw();
    // Something already owns a name the migration needs: the migration fails as a whole.
    await sql`CREATE TABLE concord_shards (x int)`;
    const store = new PostgresStore(url);
    stores.push(store);
    await expect(store.migrate()).rejects.toThrow(/concord_shards/);
    const versions = await sql`SELECT version FROM concord_migrations`;
    expect(versions).toHaveLength(0);
    await sql`DROP TABLE concord_shards`;
    await store.migrate();
    await store.initShards(2);
    expect(await store.listShards()).toHaveLength(2);
  });
});
