/**
 * The SQLite backend, synchronous: one better-sqlite3 connection doing all the work.
 * SqliteStore runs it in a worker thread so that fsync and busy waits never block a node's
 * event loop.
 *
 * Many node processes share one database file. Every write transaction is `BEGIN IMMEDIATE`:
 * it takes the file's single write lock before reading anything, so each one sees the latest
 * committed data and the whole transaction is atomic with respect to every other process
 * (there are no lost updates and no upgrade deadlocks). Waits for the lock are bounded by
 * busy_timeout; past it the call throws SQLITE_BUSY, which the runtime treats as "store
 * unavailable".
 *
 * The store clock is SQLite's own (`unixepoch('subsec')`, the clock of the machine holding the
 * file, which every process sharing the file shares); node-supplied times are never used.
 */
import Database from 'better-sqlite3';
import { assertShardCount, META, MIGRATIONS, MIGRATIONS_TABLE, shardCountMismatch } from './migrations.js';
import type {
  ActivationRequest,
  ActivationResult,
  AppendRequest,
  AppendResult,
  EntityRow,
  EventLogPage,
  LogCursor,
  NodeList,
  NodeRecord,
  NodeStatus,
  RegisterRequest,
  RegisterResult,
  ShardRecord,
  Store,
  StoredEvent,
  StoredIdempotencyKey,
  StoreOptions,
  WriteRequest,
} from './types.js';

/** The Store's methods, made synchronous. */
export type SyncStore = {
  [K in Exclude<keyof Store, 'backend'>]: (...args: Parameters<Store[K]>) => Awaited<ReturnType<Store[K]>>;
};

/** Names of the methods a SqliteCore answers (what the worker protocol may call). */
export type CoreMethod = keyof SqliteCore;

/** Store clock in integer milliseconds. Within one statement SQLite returns the same 'now'. */
const NOW_MS = "CAST(round(unixepoch('subsec') * 1000) AS INTEGER)";

const BUSY_TIMEOUT_MS = 5000;

interface NodeRow {
  name: string;
  incarnation: number;
  address: string;
  http_address: string | null;
  status: NodeStatus;
  lease_expires_at: number;
}

/** A cell nobody ever notifies: Atomics.wait on it is a precise synchronous sleep. */
const SLEEP_CELL = new Int32Array(new SharedArrayBuffer(4));

export class SqliteCore implements SyncStore {
  private readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();

  constructor(path: string, options: StoreOptions = {}) {
    this.db = new Database(path, { timeout: BUSY_TIMEOUT_MS });
    try {
      // busy_timeout first: switching to WAL needs a lock another process may hold.
      this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      // SQLite does not call the busy handler for every lock it may wait for here (a new file
      // being set up by another process at the same moment), so retry on top of it.
      this.retryBusy(() => this.db.pragma('journal_mode = WAL'));
      // In WAL mode, FULL fsyncs the log at every commit (survives power loss); NORMAL only at
      // checkpoints (survives any process crash, may lose the last commits on power loss).
      this.db.pragma(`synchronous = ${options.durability === 'relaxed' ? 'NORMAL' : 'FULL'}`);
      // From here on, lock waits are retried by `retryBusy` instead of SQLite's busy handler,
      // whose sleeps (1, 2, 5, 10 … ms) are far longer than another process's commit (~0.3 ms)
      // and would make every lock handoff between node processes cost milliseconds.
      this.db.pragma('busy_timeout = 0');
    } catch (err) {
      this.db.close();
      throw err;
    }
  }

  /** The connection's `PRAGMA synchronous` (2 = FULL, 1 = NORMAL); for diagnostics and tests. */
  synchronousLevel(): number {
    return this.db.pragma('synchronous', { simple: true }) as number;
  }

  close(): void {
    this.statements.clear();
    this.db.close();
  }

  migrate(): void {
    // The whole walk is one IMMEDIATE transaction: a concurrent migrator waits for the write
    // lock, then finds every version already recorded and does nothing.
    this.immediate(() => {
      this.db.exec(MIGRATIONS_TABLE.sqlite);
      const rows = this.db.prepare('SELECT version FROM concord_migrations').all() as { version: number }[];
      const applied = new Set(rows.map((row) => row.version));
      for (const migration of MIGRATIONS) {
        if (applied.has(migration.version)) continue;
        this.db.exec(migration.sqlite);
        this.db
          .prepare(`INSERT INTO concord_migrations (version, applied_at) VALUES (?, ${NOW_MS})`)
          .run(migration.version);
      }
    });
  }

  now(): number {
    return this.clock();
  }

  // ---- membership -------------------------------------------------------

  registerNode(req: RegisterRequest): RegisterResult {
    return this.immediate(() => {
      const now = this.clock();
      const highWater = Number(this.readMeta(META.incarnationHighWater) ?? 0);
      const candidate = Math.max(now, highWater + 1);
      // Replaces an existing row only when its lease has expired by the store clock: while the
      // old incarnation's lease runs it may still be serving, and nobody may claim its shards,
      // so a second process with the same name must wait.
      const row = this.statement(
        `INSERT INTO concord_nodes (name, incarnation, address, http_address, status, started_at, lease_expires_at)
         VALUES (:name, :incarnation, :address, :httpAddress, 'alive', :now, :now + :ttlMs)
         ON CONFLICT (name) DO UPDATE SET
           incarnation = max(concord_nodes.incarnation + 1, excluded.incarnation),
           address = excluded.address,
           http_address = excluded.http_address,
           status = 'alive',
           started_at = excluded.started_at,
           lease_expires_at = excluded.lease_expires_at
         WHERE concord_nodes.lease_expires_at <= excluded.started_at
         RETURNING incarnation, lease_expires_at`,
      ).get({
        name: req.name,
        incarnation: candidate,
        address: req.address,
        httpAddress: req.httpAddress,
        now,
        ttlMs: req.ttlMs,
      }) as { incarnation: number; lease_expires_at: number } | undefined;

      if (row) {
        this.writeMeta(META.incarnationHighWater, String(row.incarnation));
        return { ok: true, incarnation: row.incarnation, leaseExpiresAt: row.lease_expires_at, now };
      }
      const holder = this.statement('SELECT incarnation, lease_expires_at FROM concord_nodes WHERE name = ?').get(
        req.name,
      ) as { incarnation: number; lease_expires_at: number };
      return { ok: false, incarnation: holder.incarnation, leaseExpiresAt: holder.lease_expires_at, now };
    });
  }

  renewLease(name: string, incarnation: number, ttlMs: number): number | null {
    // An expired lease is never extended: once it has expired, other nodes may already have
    // claimed this node's shards, so reviving it would let two owners serve at once.
    const row = this.immediate(
      () =>
        this.statement(
          `UPDATE concord_nodes SET lease_expires_at = ${NOW_MS} + ?
           WHERE name = ? AND incarnation = ? AND lease_expires_at > ${NOW_MS}
           RETURNING lease_expires_at`,
        ).get(ttlMs, name, incarnation) as { lease_expires_at: number } | undefined,
    );
    return row ? row.lease_expires_at : null;
  }

  setNodeStatus(name: string, incarnation: number, status: NodeStatus): boolean {
    return this.immediate(
      () =>
        this.statement('UPDATE concord_nodes SET status = ? WHERE name = ? AND incarnation = ?').run(
          status,
          name,
          incarnation,
        ).changes === 1,
    );
  }

  removeNode(name: string, incarnation: number): void {
    this.immediate(() => {
      this.statement('DELETE FROM concord_nodes WHERE name = ? AND incarnation = ?').run(name, incarnation);
    });
  }

  listNodes(): NodeList {
    // One statement, so `now` and the rows are read together (the LEFT JOIN keeps `now` when
    // there are no rows).
    const statement = this.statement(
      `SELECT c.now, n.name, n.incarnation, n.address, n.http_address, n.status, n.lease_expires_at
       FROM (SELECT ${NOW_MS} AS now) AS c LEFT JOIN concord_nodes AS n ON 1
       ORDER BY n.name`,
    );
    const rows = this.retryBusy(() => statement.all()) as ({ now: number } & (
      | NodeRow
      | { [K in keyof NodeRow]: null }
    ))[];
    const now = rows[0]?.now ?? this.clock();
    const nodes: NodeRecord[] = [];
    for (const row of rows) {
      if (row.name === null) continue;
      nodes.push({
        name: row.name,
        incarnation: row.incarnation,
        address: row.address,
        httpAddress: row.http_address,
        status: row.status,
        leaseExpiresAt: row.lease_expires_at,
      });
    }
    return { now, nodes };
  }

  pruneNodes(graceMs: number): number {
    return this.immediate(
      () => this.statement(`DELETE FROM concord_nodes WHERE lease_expires_at < ${NOW_MS} - ?`).run(graceMs).changes,
    );
  }

  // ---- shards -----------------------------------------------------------

  initShards(count: number): void {
    assertShardCount(count);
    this.immediate(() => {
      const recorded = this.readMeta(META.shardCount);
      if (recorded !== undefined && Number(recorded) !== count) {
        throw shardCountMismatch(Number(recorded), count);
      }
      if (recorded === undefined) this.writeMeta(META.shardCount, String(count));
      const insert = this.statement(
        'INSERT INTO concord_shards (shard, owner, owner_incarnation, epoch) VALUES (?, NULL, NULL, 0) ON CONFLICT (shard) DO NOTHING',
      );
      for (let shard = 0; shard < count; shard++) insert.run(shard);
    });
  }

  listShards(): ShardRecord[] {
    const statement = this.statement(
      'SELECT shard, owner, owner_incarnation, epoch FROM concord_shards ORDER BY shard',
    );
    const rows = this.retryBusy(() => statement.all()) as {
      shard: number;
      owner: string | null;
      owner_incarnation: number | null;
      epoch: number;
    }[];
    return rows.map((row) => ({
      shard: row.shard,
      owner: row.owner,
      ownerIncarnation: row.owner_incarnation,
      epoch: row.epoch,
    }));
  }

  claimShard(shard: number, expectedEpoch: number, owner: string, ownerIncarnation: number): number | null {
    const row = this.immediate(
      () =>
        this.statement(
          `UPDATE concord_shards SET owner = ?, owner_incarnation = ?, epoch = epoch + 1
           WHERE shard = ? AND epoch = ?
             AND (owner IS NULL OR NOT EXISTS (
               SELECT 1 FROM concord_nodes AS n
               WHERE n.name = concord_shards.owner
                 AND n.incarnation = concord_shards.owner_incarnation
                 AND n.lease_expires_at > ${NOW_MS}))
           RETURNING epoch`,
        ).get(owner, ownerIncarnation, shard, expectedEpoch) as { epoch: number } | undefined,
    );
    return row ? row.epoch : null;
  }

  releaseShard(shard: number, epoch: number, owner: string, ownerIncarnation: number): boolean {
    return this.immediate(
      () =>
        this.statement(
          `UPDATE concord_shards SET owner = NULL, owner_incarnation = NULL
           WHERE shard = ? AND epoch = ? AND owner = ? AND owner_incarnation = ?`,
        ).run(shard, epoch, owner, ownerIncarnation).changes === 1,
    );
  }

  // ---- entities ---------------------------------------------------------

  activate(requests: ActivationRequest[]): ActivationResult[] {
    if (requests.length === 0) return [];
    // `<=`, not `<`: the owner holding epoch e activates its entities at e again after
    // passivating them and must get its own row back; only a row stamped by a *newer* claim
    // (a higher epoch) is refused.
    const upsert = this.statement(
      `INSERT INTO concord_entities (kind, id, state, version, epoch) VALUES (?, ?, ?, 0, ?)
       ON CONFLICT (kind, id) DO UPDATE SET epoch = excluded.epoch
       WHERE concord_entities.epoch <= excluded.epoch
       RETURNING state, version`,
    );
    return this.immediate(() =>
      requests.map((req): ActivationResult => {
        const row = upsert.get(req.kind, req.id, req.initialState, req.epoch) as
          | { state: string; version: number }
          | undefined;
        return row ? { ok: true, state: row.state, version: row.version } : { ok: false };
      }),
    );
  }

  write(requests: WriteRequest[]): boolean[] {
    if (requests.length === 0) return [];
    const update = this.statement(
      `UPDATE concord_entities SET state = coalesce(?, state), version = ?
       WHERE kind = ? AND id = ? AND epoch = ? AND version = ?`,
    );
    const fenced = (req: WriteRequest) =>
      update.run(req.state, req.newVersion, req.kind, req.id, req.epoch, req.expectedVersion).changes === 1;
    // Idempotency keys go in only behind an update that applied, in the same transaction.
    const fencedWithKeys = (req: WriteRequest) => {
      if (!fenced(req)) return false;
      if (req.keys !== undefined && req.keys.length > 0) this.insertKeys(req);
      return true;
    };
    // A request that appends events runs in a savepoint (better-sqlite3 nests transactions
    // as savepoints): if one of its event versions is taken, the unique key throws, the
    // savepoint rolls its row update back (and its keys), and only this request reports false.
    const fencedWithEvents = this.db.transaction((req: WriteRequest): boolean => {
      if (!fenced(req)) return false;
      this.insertEvents(req.append!, req.newVersion - req.append!.events.length + 1);
      if (req.keys !== undefined && req.keys.length > 0) this.insertKeys(req);
      return true;
    });
    // One transaction for the batch: one fsync (group commit).
    return this.immediate(() =>
      requests.map((req) => {
        if (!req.append || req.append.events.length === 0) return fencedWithKeys(req);
        try {
          return fencedWithEvents(req);
        } catch (err) {
          if (isUniqueViolation(err)) return false;
          throw err;
        }
      }),
    );
  }

  readEntity(kind: string, id: string): EntityRow | null {
    const statement = this.statement(
      'SELECT kind, id, state, version, epoch FROM concord_entities WHERE kind = ? AND id = ?',
    );
    const row = this.retryBusy(() => statement.get(kind, id)) as EntityRow | undefined;
    return row ?? null;
  }

  // ---- idempotency keys -------------------------------------------------

  readIdempotencyKeys(kind: string, id: string, notBefore: number, limit = -1): StoredIdempotencyKey[] {
    // LIMIT -1: no limit.
    const statement = this.statement(
      `SELECT key, fingerprint, reply, created_at AS createdAt FROM concord_idempotency
       WHERE kind = ? AND id = ? AND created_at >= ? ORDER BY created_at DESC, key LIMIT ?`,
    );
    return this.retryBusy(() => statement.all(kind, id, notBefore, limit)) as StoredIdempotencyKey[];
  }

  readIdempotencyKey(kind: string, id: string, key: string): StoredIdempotencyKey | null {
    const statement = this.statement(
      `SELECT key, fingerprint, reply, created_at AS createdAt FROM concord_idempotency
       WHERE kind = ? AND id = ? AND key = ?`,
    );
    const row = this.retryBusy(() => statement.get(kind, id, key)) as StoredIdempotencyKey | undefined;
    return row ?? null;
  }

  pruneIdempotencyKeys(windowMs: number, limit: number): number {
    return this.immediate(
      () =>
        this.statement(
          `DELETE FROM concord_idempotency WHERE rowid IN (
             SELECT rowid FROM concord_idempotency WHERE created_at < ${NOW_MS} - ? LIMIT ?)`,
        ).run(windowMs, limit).changes,
    );
  }

  /** Insert (or replace: see WriteRequest.keys) the keys of a write that applied. */
  private insertKeys(req: WriteRequest): void {
    const insert = this.statement(
      `INSERT INTO concord_idempotency (kind, id, key, fingerprint, reply, created_at)
       VALUES (?, ?, ?, ?, ?, ${NOW_MS})
       ON CONFLICT (kind, id, key) DO UPDATE SET
         fingerprint = excluded.fingerprint, reply = excluded.reply, created_at = excluded.created_at`,
    );
    for (const record of req.keys!) insert.run(req.kind, req.id, record.key, record.fingerprint, record.reply);
  }

  // ---- events -----------------------------------------------------------

  appendEvents(request: AppendRequest): AppendResult {
    // IMMEDIATE: the version check and the insert happen under the file's write lock.
    return this.immediate(() => {
      const actual = this.currentStreamVersion(request.stream);
      if (actual !== request.expectedVersion) return { ok: false, actualVersion: actual };
      this.insertEvents(request, actual + 1);
      return { ok: true, version: actual + request.events.length };
    });
  }

  readEvents(stream: string, fromVersion: number, limit: number): StoredEvent[] {
    const statement = this.statement(
      `SELECT stream, version, type, data, node, at FROM concord_events
       WHERE stream = ? AND version >= ? ORDER BY version LIMIT ?`,
    );
    return this.retryBusy(() => statement.all(stream, fromVersion, limit)) as StoredEvent[];
  }

  streamVersion(stream: string): number {
    return this.retryBusy(() => this.currentStreamVersion(stream));
  }

  private currentStreamVersion(stream: string): number {
    const row = this.statement('SELECT max(version) AS version FROM concord_events WHERE stream = ?').get(stream) as {
      version: number | null;
    };
    return row.version ?? 0;
  }

  readEventLog(cursor: LogCursor | null, limit: number, streamPrefix?: string): EventLogPage {
    // One writer at a time holds the file, so positions become visible strictly in order:
    // nothing can commit later below a position a reader has already seen.
    const after = cursor === null ? 0 : Number(cursor);
    if (!Number.isSafeInteger(after)) throw new RangeError(`not a SQLite event log cursor: ${cursor}`);
    const rows = this.retryBusy(() =>
      streamPrefix === undefined
        ? this.statement(
            `SELECT position, stream, version, type, data, node, at FROM concord_events
             WHERE position > ? ORDER BY position LIMIT ?`,
          ).all(after, limit)
        : this.statement(
            `SELECT position, stream, version, type, data, node, at FROM concord_events
             WHERE position > ? AND substr(stream, 1, ?) = ? ORDER BY position LIMIT ?`,
          ).all(after, streamPrefix.length, streamPrefix, limit),
    ) as (StoredEvent & { position: number })[];
    const last = rows.at(-1);
    return {
      events: rows.map(({ position: _, ...event }) => event),
      cursor: last ? String(last.position) : String(after),
    };
  }

  /** Insert `append.events` at consecutive versions from `first`; throws on a taken version. */
  private insertEvents(append: { stream: string; node: string; events: AppendRequest['events'] }, first: number): void {
    const insert = this.statement(
      `INSERT INTO concord_events (stream, version, type, data, node, at) VALUES (?, ?, ?, ?, ?, ${NOW_MS})`,
    );
    append.events.forEach((event, i) => {
      insert.run(append.stream, first + i, event.type, event.data, append.node);
    });
  }

  // ---- helpers ----------------------------------------------------------

  private clock(): number {
    const statement = this.statement(`SELECT ${NOW_MS} AS now`);
    return (this.retryBusy(() => statement.get()) as { now: number }).now;
  }

  /** Prepared once per connection, on first use (tables may not exist before migrate()). */
  private statement(sql: string): Database.Statement {
    let stmt = this.statements.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.statements.set(sql, stmt);
    }
    return stmt;
  }

  private immediate<T>(fn: () => T): T {
    return this.retryBusy(() => this.db.transaction(fn).immediate());
  }

  /**
   * Run `op`, retrying while the database is locked by another connection: short sleeps
   * (50 µs doubling to 2 ms, jittered) for up to BUSY_TIMEOUT_MS, then SQLITE_BUSY is thrown.
   * Safe to retry: a statement or transaction that failed with SQLITE_BUSY changed nothing
   * (better-sqlite3 rolls the transaction back before rethrowing).
   */
  private retryBusy<T>(op: () => T): T {
    let delayMs = 0.05;
    let giveUpAt = 0;
    for (;;) {
      try {
        return op();
      } catch (err) {
        if (!isBusy(err)) throw err;
        const now = performance.now();
        if (giveUpAt === 0) giveUpAt = now + BUSY_TIMEOUT_MS;
        else if (now >= giveUpAt) throw err;
        Atomics.wait(SLEEP_CELL, 0, 0, delayMs * (0.5 + Math.random()));
        delayMs = Math.min(delayMs * 2, 2);
      }
    }
  }

  private readMeta(key: string): string | undefined {
    const row = this.statement('SELECT value FROM concord_meta WHERE key = ?').get(key) as
      | { value: string }
      | undefined;
    return row?.value;
  }

  private writeMeta(key: string, value: string): void {
    this.statement(
      'INSERT INTO concord_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    ).run(key, value);
  }
}

/**
 * SQLITE_BUSY and its extended codes (SQLITE_BUSY_RECOVERY while another process recovers the
 * WAL, SQLITE_BUSY_SNAPSHOT, SQLITE_BUSY_TIMEOUT): better-sqlite3 reports the extended code, and
 * all of them mean "another connection holds the file; nothing was done; try again".
 */
function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
}

function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}
