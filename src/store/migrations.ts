/**
 * Versioned schema migrations for both backends.
 *
 * Every table is prefixed `concord_` so that concord can share a database with its users.
 * `concord_migrations` records the applied versions; it is created (idempotently) before the
 * list below is walked, and is not itself a migration.
 *
 * To change the schema, append a new entry with the next version number: never edit or
 * reorder an entry that has been released, since databases in the field have already run it.
 * Each entry runs in one transaction together with the insert of its version row
 * (see SqliteCore.migrate and PostgresStore.migrate for how concurrent migrators are handled),
 * so a migration's SQL needs no `IF NOT EXISTS` guards.
 */
import { ConfigMismatch } from '../errors.js';

export interface Migration {
  readonly version: number;
  readonly description: string;
  /** One or more statements for SQLite (run with `exec`). Integers are INTEGER (64-bit). */
  readonly sqlite: string;
  /** One or more statements for PostgreSQL (run as a simple query). Integers are BIGINT. */
  readonly postgres: string;
}

/** The bookkeeping table, created before any migration runs. */
export const MIGRATIONS_TABLE = {
  sqlite: `CREATE TABLE IF NOT EXISTS concord_migrations (
  version INTEGER PRIMARY KEY,
  applied_at INTEGER NOT NULL
) STRICT`,
  postgres: `CREATE TABLE IF NOT EXISTS concord_migrations (
  version BIGINT PRIMARY KEY,
  applied_at BIGINT NOT NULL
)`,
} as const;

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'membership, shards and entity state',
    sqlite: `
CREATE TABLE concord_meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;

-- One row per node name: a new incarnation replaces the row only once the old lease expired.
CREATE TABLE concord_nodes (
  name TEXT PRIMARY KEY,
  incarnation INTEGER NOT NULL,
  address TEXT NOT NULL,
  http_address TEXT,
  status TEXT NOT NULL CHECK (status IN ('alive', 'leaving')),
  started_at INTEGER NOT NULL,
  lease_expires_at INTEGER NOT NULL
) STRICT;

CREATE TABLE concord_shards (
  shard INTEGER PRIMARY KEY,
  owner TEXT,
  owner_incarnation INTEGER,
  epoch INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE concord_entities (
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  state TEXT NOT NULL,
  version INTEGER NOT NULL,
  epoch INTEGER NOT NULL,
  PRIMARY KEY (kind, id)
) STRICT;
`,
    postgres: `
CREATE TABLE concord_meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

-- One row per node name: a new incarnation replaces the row only once the old lease expired.
CREATE TABLE concord_nodes (
  name TEXT PRIMARY KEY,
  incarnation BIGINT NOT NULL,
  address TEXT NOT NULL,
  http_address TEXT,
  status TEXT NOT NULL CHECK (status IN ('alive', 'leaving')),
  started_at BIGINT NOT NULL,
  lease_expires_at BIGINT NOT NULL
);

CREATE TABLE concord_shards (
  shard BIGINT PRIMARY KEY,
  owner TEXT,
  owner_incarnation BIGINT,
  epoch BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE concord_entities (
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  state TEXT NOT NULL,
  version BIGINT NOT NULL,
  epoch BIGINT NOT NULL,
  PRIMARY KEY (kind, id)
);
`,
  },
  {
    version: 2,
    description: 'event store',
    // Unique on (stream, version): the database itself refuses a second event at a version,
    // which is what makes an expected-version append safe against every other writer.
    // `position` is the store-wide log order (SQLite: one writer at a time, so positions become
    // visible in order). PostgreSQL assigns positions before commit, so concurrent
    // transactions can make them visible out of order; the log is read in (tx, position)
    // order instead, and only for transactions older than every one still running
    // (see PostgresStore.readEventLog). Needs PostgreSQL 13+ (xid8).
    sqlite: `
CREATE TABLE concord_events (
  position INTEGER PRIMARY KEY AUTOINCREMENT,
  stream TEXT NOT NULL,
  version INTEGER NOT NULL CHECK (version >= 1),
  type TEXT NOT NULL,
  data TEXT NOT NULL,
  node TEXT NOT NULL,
  at INTEGER NOT NULL,
  UNIQUE (stream, version)
) STRICT;
`,
    postgres: `
CREATE TABLE concord_events (
  stream TEXT NOT NULL,
  version BIGINT NOT NULL CHECK (version >= 1),
  type TEXT NOT NULL,
  data TEXT NOT NULL,
  node TEXT NOT NULL,
  at BIGINT NOT NULL,
  position BIGINT GENERATED ALWAYS AS IDENTITY,
  tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
  PRIMARY KEY (stream, version)
);

CREATE INDEX concord_events_log ON concord_events (tx, position);
`,
  },
  {
    version: 3,
    description: 'membership under partial failure: joining/evicted statuses, suspicions',
    // SQLite cannot change a CHECK constraint in place: the nodes table is rebuilt.
    // concord_suspicions holds "reporter cannot reach suspect", one row per pair, replaced by
    // each report of the reporter; membership_version orders membership decisions (see
    // Store.evictMember).
    sqlite: `
CREATE TABLE concord_nodes_v3 (
  name TEXT PRIMARY KEY,
  incarnation INTEGER NOT NULL,
  address TEXT NOT NULL,
  http_address TEXT,
  status TEXT NOT NULL CHECK (status IN ('joining', 'alive', 'leaving', 'evicted')),
  started_at INTEGER NOT NULL,
  lease_expires_at INTEGER NOT NULL,
  evicted_by TEXT,
  evicted_at INTEGER
) STRICT;
INSERT INTO concord_nodes_v3 (name, incarnation, address, http_address, status, started_at, lease_expires_at)
  SELECT name, incarnation, address, http_address, status, started_at, lease_expires_at FROM concord_nodes;
DROP TABLE concord_nodes;
ALTER TABLE concord_nodes_v3 RENAME TO concord_nodes;

CREATE TABLE concord_suspicions (
  reporter TEXT NOT NULL,
  reporter_incarnation INTEGER NOT NULL,
  suspect TEXT NOT NULL,
  suspect_incarnation INTEGER NOT NULL,
  since INTEGER NOT NULL,
  refreshed_at INTEGER NOT NULL,
  PRIMARY KEY (reporter, suspect)
) STRICT;

INSERT INTO concord_meta (key, value) VALUES ('membership_version', '0') ON CONFLICT (key) DO NOTHING;
`,
    postgres: `
ALTER TABLE concord_nodes DROP CONSTRAINT concord_nodes_status_check;
ALTER TABLE concord_nodes ADD CONSTRAINT concord_nodes_status_check
  CHECK (status IN ('joining', 'alive', 'leaving', 'evicted'));
ALTER TABLE concord_nodes ADD COLUMN evicted_by TEXT, ADD COLUMN evicted_at BIGINT;

CREATE TABLE concord_suspicions (
  reporter TEXT NOT NULL,
  reporter_incarnation BIGINT NOT NULL,
  suspect TEXT NOT NULL,
  suspect_incarnation BIGINT NOT NULL,
  since BIGINT NOT NULL,
  refreshed_at BIGINT NOT NULL,
  PRIMARY KEY (reporter, suspect)
);

INSERT INTO concord_meta (key, value) VALUES ('membership_version', '0') ON CONFLICT (key) DO NOTHING;
`,
  },
  {
    version: 4,
    description: 'idempotency keys',
    // One row per (entity, key): written in the same transaction as the fenced row update of
    // the change it guards, and only when that update applied (see WriteRequest.keys).
    // `reply` is the JSON text of the first reply (NULL: the handler returned undefined).
    // `created_at` is the store clock at the write; the sweep deletes rows older than the
    // idempotency window through the index on it.
    sqlite: `
CREATE TABLE concord_idempotency (
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  key TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  reply TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (kind, id, key)
) STRICT;

CREATE INDEX concord_idempotency_created ON concord_idempotency (created_at);
`,
    postgres: `
CREATE TABLE concord_idempotency (
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  key TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  reply TEXT,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (kind, id, key)
);

CREATE INDEX concord_idempotency_created ON concord_idempotency (created_at);
`,
  },
  {
    version: 5,
    description: 'batches committed by the shared SQLite writer, by token',
    // SQLite's shared writer (sqlite-writer.ts) records each forwarded batch it commits here,
    // with its per-request results, in the batch's own savepoint; a sender that re-runs a
    // stalled batch on its own connection inserts the same token in its transaction. The
    // primary key lets exactly one of the two copies apply, and the other reads the results.
    // A token starts with its send time (fixed-width base 36), so tokens sort by age and the
    // prune is a range delete on the key. PostgreSQL has no shared writer: nothing to create
    // there (the version is still recorded, so both backends count versions alike).
    sqlite: `
CREATE TABLE concord_writer_batches (
  token TEXT PRIMARY KEY,
  results TEXT NOT NULL
) STRICT, WITHOUT ROWID;
`,
    postgres: 'SELECT 1',
  },
];

/** Keys used in concord_meta. */
export const META = {
  /** The shard count fixed by the first initShards call. */
  shardCount: 'shard_count',
  /**
   * The largest incarnation ever handed out. Node rows are deleted on leave and prune, so the
   * rows alone cannot prove a new incarnation is larger than every earlier one of its name.
   */
  incarnationHighWater: 'incarnation_high_water',
  /** Bumped by every membership decision's input or outcome (statuses, the set of suspicions). */
  membershipVersion: 'membership_version',
} as const;

/** The shard count is recorded in concord_meta at the first initShards and fixed from then on. */
export function assertShardCount(count: number): void {
  if (!Number.isSafeInteger(count) || count < 1) {
    throw new RangeError(`shard count must be a positive integer, got ${count}`);
  }
}

export function shardCountMismatch(recorded: number, requested: number): ConfigMismatch {
  return new ConfigMismatch(
    `the store was initialised with ${recorded} shards but this node is configured with ${requested}`,
    { recorded, requested },
  );
}
