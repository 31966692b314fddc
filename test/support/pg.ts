/**
 * Throwaway databases on the test PostgreSQL server started (or named) by global-setup.ts.
 */
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { inject } from 'vitest';

function adminUrl(): string {
  const url = process.env['CONCORD_TEST_PG_ADMIN'] ?? inject('pgAdminUrl');
  if (!url) throw new Error('no test PostgreSQL server: is test/support/global-setup.ts configured?');
  return url;
}

async function withAdmin<T>(fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(adminUrl(), { max: 1, connect_timeout: 10, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** URL of a brand-new, empty database with a unique name. */
export async function createTestDatabase(): Promise<string> {
  const name = `concord_test_${process.pid}_${randomBytes(6).toString('hex')}`;
  await withAdmin((sql) => sql`CREATE DATABASE ${sql(name)}`);
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  return url.toString();
}

/** Drop a database made by createTestDatabase, disconnecting anyone still using it. */
export async function dropTestDatabase(url: string): Promise<void> {
  const name = decodeURIComponent(new URL(url).pathname.slice(1));
  if (!name.startsWith('concord_test_')) throw new Error(`refusing to drop ${name}: not a test database`);
  await withAdmin((sql) => sql`DROP DATABASE IF EXISTS ${sql(name)} WITH (FORCE)`);
}
