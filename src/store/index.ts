/**
 * store — the single source of truth of a concord cluster.
 *
 * Membership (node rows with leases), shard ownership (compare-and-set claims with epochs) and
 * durable entity state (fenced, batched writes) all live here, behind one `Store` interface
 * with two backends:
 *
 * - SQLite (`sqlite:PATH`): every node process on one machine shares the file. The work runs in
 *   a worker thread per store, so fsync and lock waits never block the node's event loop.
 * - PostgreSQL (`postgres://…`): for nodes on many machines. Works behind transaction poolers.
 *
 * Times are always the store's clock. `openStore(url)` picks the backend and migrates the
 * schema (tables prefixed `concord_`). This folder imports nothing of concord's except errors.
 */
export { MIGRATIONS, type Migration } from './migrations.js';
export { openStore } from './open.js';
export { PostgresStore } from './postgres.js';
export { SqliteStore, type SqliteStoreOptions } from './sqlite-store.js';
export type * from './types.js';
