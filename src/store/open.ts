import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { PostgresStore } from './postgres.js';
import { SqliteStore } from './sqlite-store.js';
import type { Store, StoreOptions } from './types.js';

/**
 * Open the store named by `url` and bring its schema up to date.
 *
 * - `sqlite:PATH` (relative paths resolve against the working directory; the parent directory
 *   is created if missing). Every node process of the cluster opens the same file.
 * - `postgres://…` or `postgresql://…`: any URL the `postgres` client accepts, plus
 *   `?pgbouncer=true` behind a transaction-pooling proxy (see PostgresStore).
 */
export async function openStore(url: string, options: StoreOptions = {}): Promise<Store> {
  const store = await createStore(url, options);
  try {
    await store.migrate();
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
  return store;
}

async function createStore(url: string, options: StoreOptions): Promise<Store> {
  if (url.startsWith('sqlite:')) {
    const path = url.slice('sqlite:'.length);
    if (path === '' || path === ':memory:' || path.includes('mode=memory')) {
      throw new Error(
        `unsupported SQLite store URL "${url}": nodes share the store through a file, so give a path, e.g. sqlite:./data/concord.db`,
      );
    }
    const file = resolve(path);
    await mkdir(dirname(file), { recursive: true });
    return new SqliteStore(file, options);
  }
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    return new PostgresStore(url, options);
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1];
  throw new Error(
    `unsupported store URL ${scheme ? `scheme "${scheme}:"` : `"${url}"`}: use sqlite:PATH, postgres:// or postgresql://`,
  );
}
