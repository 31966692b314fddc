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
import { StoreUnavailable } from '../errors.js';
import { assertShardCount, META, MIGRATIONS, MIGRATIONS_TABLE, shardCountMismatch } from './migrations.js';
import type {
  ActivationRequest,
  ActivationResult,
  AppendRequest,
  AppendResult,
  EntityRow,
  EventLogPage,
  EvictionRequest,
  LogCursor,
  NodeList,
  NodeRecord,
  NodeStatus,
  RegisterRequest,
  RegisterResult,
  RenewResult,
  ShardRecord,
  Store,
  StoredEvent,
  StoredIdempotencyKey,
  StoreOptions,
  SuspectRef,
  SuspicionRecord,
  WriteRequest,
} from './types.js';

/** The Store's methods, made synchronous. */
export type SyncStore = {
  [K in Exclude<keyof Store, 'backend' | 'commitsInFlight' | 'activationsInFlight' | 'sharedWriterStatus'>]: (
    ...args: Parameters<Store[K]>
  ) => Awaited<ReturnType<Store[K]>>;
};

/** Names of the methods a SqliteCore answers (what the worker protocol may call). */
export type CoreMethod = keyof SqliteCore;

/** Store clock in integer milliseconds. Within one statement SQLite returns the same 'now'. */
const NOW_MS = "CAST(round(unixepoch('subsec') * 1000) AS INTEGER)";

const BUSY_TIMEOUT_MS = 5000;
/**
 * A stalled forwarded batch is re-run (writeOnce) only this long after it was first sent;
 * batch tokens are pruned only once they are BATCH_TOKEN_TTL_MS old, well past it, so a
 * re-run always finds the token of a copy the writer committed.
 */
export const RERUN_WINDOW_MS = 30_000;
export const BATCH_TOKEN_TTL_MS = 120_000;

/**
 * The start of a batch token: its send time (Date.now()) in fixed-width base 36, so that
 * tokens sort by age (until the year 5188).
 */
export function batchTokenTime(sentAt: number): string {
  return Math.max(0, Math.floor(sentAt)).toString(36).padStart(9, '0');
}

/** A write batch of SharedWriter's fold; `token` when forwarded by another process. */
export interface FoldedBatch {
  requests: WriteRequest[];
  token?: string;
}

/** A forwarded batch's copy from the writer, after its sender's own re-run applied it (writeOnce). */
export class BatchSuperseded extends Error {
  constructor(token: string) {
    super(`batch ${token} was already applied by its sender's re-run`);
    this.name = 'BatchSuperseded';
  }
}

interface NodeRow {
  name: string;
  incarnation: number;
  address: string;
  http_address: string | null;
  status: NodeStatus;
  lease_expires_at: number;
  evicted_by: string | null;
  evicted_at: number | null;
}

interface SuspicionRow {
  reporter: string;
  reporter_incarnation: number;
  suspect: string;
  suspect_incarnation: number;
  since: number;
  refreshed_at: number;
}

interface WriteTransactions {
  batch: Database.Transaction<(requests: WriteRequest[]) => boolean[]>;
  folded: Database.Transaction<(batches: FoldedBatch[]) => (boolean[] | Error)[]>;
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
      this.strictCommits = options.durability !== 'relaxed';
      this.db.pragma(`synchronous = ${this.strictCommits ? 'FULL' : 'NORMAL'}`);
      // From here on, lock waits are retried by `retryBusy` instead of SQLite's busy handler,
      // whose sleeps (1, 2, 5, 10 … ms) are far longer than another process's commit (~0.3 ms)
      // and would make every lock handoff between node processes cost milliseconds.
      this.db.pragma('busy_timeout = 0');
    } catch (err) {
      this.db.close();
      throw err;
    }
  }

  /** Whether this connection commits at synchronous=FULL (asked for once, not per fold). */
  private strictCommits = true;

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
      const highWater = Number(this.metaValue(META.incarnationHighWater) ?? 0);
      const candidate = Math.max(now, highWater + 1);
      // Replaces an existing row only when its lease has expired by the store clock: while the
      // old incarnation's lease runs it may still be serving, and nobody may claim its shards,
      // so a second process with the same name must wait.
      const row = this.statement(
        `INSERT INTO concord_nodes (name, incarnation, address, http_address, status, started_at, lease_expires_at)
         VALUES (:name, :incarnation, :address, :httpAddress, :status, :now, :now + :ttlMs)
         ON CONFLICT (name) DO UPDATE SET
           incarnation = max(concord_nodes.incarnation + 1, excluded.incarnation),
           address = excluded.address,
           http_address = excluded.http_address,
           status = excluded.status,
           started_at = excluded.started_at,
           lease_expires_at = excluded.lease_expires_at
         WHERE concord_nodes.lease_expires_at <= excluded.started_at
         RETURNING incarnation, lease_expires_at`,
      ).get({
        name: req.name,
        incarnation: candidate,
        address: req.address,
        httpAddress: req.httpAddress,
        status: req.status ?? 'alive',
        now,
        ttlMs: req.ttlMs,
      }) as { incarnation: number; lease_expires_at: number } | undefined;

      if (row) {
        this.setMeta(META.incarnationHighWater, String(row.incarnation));
        return { ok: true, incarnation: row.incarnation, leaseExpiresAt: row.lease_expires_at, now };
      }
      const holder = this.statement('SELECT incarnation, lease_expires_at FROM concord_nodes WHERE name = ?').get(
        req.name,
      ) as { incarnation: number; lease_expires_at: number };
      return { ok: false, incarnation: holder.incarnation, leaseExpiresAt: holder.lease_expires_at, now };
    });
  }

  renewLease(name: string, incarnation: number, ttlMs: number): RenewResult {
    // An expired lease is never extended: once it has expired, other nodes may already have
    // claimed this node's shards, so reviving it would let two owners serve at once. An
    // evicted row is never extended either: that is how its node learns of the eviction.
    return this.immediate((): RenewResult => {
      const row = this.statement(
        `UPDATE concord_nodes SET lease_expires_at = ${NOW_MS} + ?
         WHERE name = ? AND incarnation = ? AND lease_expires_at > ${NOW_MS} AND status <> 'evicted'
         RETURNING lease_expires_at`,
      ).get(ttlMs, name, incarnation) as { lease_expires_at: number } | undefined;
      if (row) return { ok: true, leaseExpiresAt: row.lease_expires_at };
      const current = this.statement('SELECT status FROM concord_nodes WHERE name = ? AND incarnation = ?').get(
        name,
        incarnation,
      ) as { status: NodeStatus } | undefined;
      if (!current) return { ok: false, reason: 'gone' };
      return { ok: false, reason: current.status === 'evicted' ? 'evicted' : 'expired' };
    });
  }

  setNodeStatus(name: string, incarnation: number, status: NodeStatus, from: readonly NodeStatus[]): boolean {
    if (from.length === 0 || from.includes('evicted')) return false;
    return this.immediate(() => {
      const live = status === 'alive' ? `AND lease_expires_at > ${NOW_MS}` : '';
      const clear = status === 'alive' ? ', evicted_by = NULL, evicted_at = NULL' : '';
      const changed =
        this.db
          .prepare(
            `UPDATE concord_nodes SET status = ?${clear}
             WHERE name = ? AND incarnation = ? AND status IN (${from.map(() => '?').join(', ')}) ${live}`,
          )
          .run(status, name, incarnation, ...from).changes === 1;
      if (changed) this.bumpMembershipVersion();
      return changed;
    });
  }

  removeNode(name: string, incarnation: number): void {
    this.immediate(() => {
      const removed = this.statement('DELETE FROM concord_nodes WHERE name = ? AND incarnation = ?').run(
        name,
        incarnation,
      ).changes;
      if (removed > 0) {
        this.statement('DELETE FROM concord_suspicions WHERE reporter = ? OR suspect = ?').run(name, name);
        this.bumpMembershipVersion();
      }
    });
  }

  listNodes(): NodeList {
    return this.retryBusy(() => this.db.transaction(() => this.readMembership())());
  }

  pruneNodes(graceMs: number): number {
    return this.immediate(() => {
      const removed = this.statement(`DELETE FROM concord_nodes WHERE lease_expires_at < ${NOW_MS} - ?`).run(
        graceMs,
      ).changes;
      // Suspicions whose reporter or suspect no longer has that incarnation's row.
      this.statement(
        `DELETE FROM concord_suspicions WHERE
           NOT EXISTS (SELECT 1 FROM concord_nodes AS n
                       WHERE n.name = concord_suspicions.reporter AND n.incarnation = concord_suspicions.reporter_incarnation)
           OR NOT EXISTS (SELECT 1 FROM concord_nodes AS n
                          WHERE n.name = concord_suspicions.suspect AND n.incarnation = concord_suspicions.suspect_incarnation)`,
      ).run();
      return removed;
    });
  }

  reportSuspicions(reporter: string, incarnation: number, suspects: readonly SuspectRef[]): NodeList {
    return this.immediate(() => {
      const now = this.clock();
      const row = this.statement('SELECT incarnation, status, lease_expires_at FROM concord_nodes WHERE name = ?').get(
        reporter,
      ) as { incarnation: number; status: NodeStatus; lease_expires_at: number } | undefined;
      // Only a live member may hold suspicions: a joining, leaving, evicted or expired reporter's go.
      const member =
        row !== undefined && row.incarnation === incarnation && row.status === 'alive' && row.lease_expires_at > now;
      const wanted = member ? suspects : [];
      const existing = this.statement(
        'SELECT suspect, suspect_incarnation FROM concord_suspicions WHERE reporter = ?',
      ).all(reporter) as { suspect: string; suspect_incarnation: number }[];
      const kept = new Map(existing.map((e) => [e.suspect, e.suspect_incarnation]));
      let changed = false;
      const remove = this.statement('DELETE FROM concord_suspicions WHERE reporter = ? AND suspect = ?');
      for (const e of existing) {
        if (!wanted.some((w) => w.name === e.suspect && w.incarnation === e.suspect_incarnation)) {
          remove.run(reporter, e.suspect);
          changed = true;
        }
      }
      const refresh = this.statement(
        'UPDATE concord_suspicions SET refreshed_at = ? WHERE reporter = ? AND suspect = ?',
      );
      const insert = this.statement(
        `INSERT INTO concord_suspicions (reporter, reporter_incarnation, suspect, suspect_incarnation, since, refreshed_at)
         VALUES (?, ?, ?, ?, ?, ?)`,
      );
      for (const w of wanted) {
        if (kept.get(w.name) === w.incarnation) {
          refresh.run(now, reporter, w.name);
        } else {
          insert.run(reporter, incarnation, w.name, w.incarnation, now, now);
          changed = true;
        }
      }
      if (changed) this.bumpMembershipVersion();
      return this.readMembership();
    });
  }

  evictMember(request: EvictionRequest): boolean {
    return this.immediate(() => {
      if (this.membershipVersion() !== request.expectedVersion) return false;
      const live = (name: string, incarnation: number) =>
        this.statement(
          `SELECT 1 AS ok FROM concord_nodes
           WHERE name = ? AND incarnation = ? AND status = 'alive' AND lease_expires_at > ${NOW_MS}`,
        ).get(name, incarnation) !== undefined;
      if (!live(request.by, request.byIncarnation) || !live(request.suspect, request.suspectIncarnation)) return false;
      // The lease is left as it is: nobody may claim the suspect's shards before it has
      // stopped serving (acknowledgeEviction) or its lease has run out.
      this.statement(
        `UPDATE concord_nodes SET status = 'evicted', evicted_by = ?, evicted_at = ${NOW_MS}
         WHERE name = ? AND incarnation = ?`,
      ).run(JSON.stringify(request.reporters), request.suspect, request.suspectIncarnation);
      this.statement('DELETE FROM concord_suspicions WHERE reporter = ? OR suspect = ?').run(
        request.suspect,
        request.suspect,
      );
      this.bumpMembershipVersion();
      return true;
    });
  }

  acknowledgeEviction(name: string, incarnation: number): boolean {
    return this.immediate(
      () =>
        this.statement(
          `UPDATE concord_nodes SET lease_expires_at = ${NOW_MS}
           WHERE name = ? AND incarnation = ? AND status = 'evicted' AND lease_expires_at > ${NOW_MS}`,
        ).run(name, incarnation).changes === 1,
    );
  }

  /** Nodes, suspicions and the version, read together (call inside a transaction). */
  private readMembership(): NodeList {
    const rows = this.statement(
      `SELECT c.now, n.name, n.incarnation, n.address, n.http_address, n.status, n.lease_expires_at,
              n.evicted_by, n.evicted_at
       FROM (SELECT ${NOW_MS} AS now) AS c LEFT JOIN concord_nodes AS n ON 1
       ORDER BY n.name`,
    ).all() as ({ now: number } & (NodeRow | { [K in keyof NodeRow]: null }))[];
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
        evictedBy: parseNames(row.evicted_by),
        evictedAt: row.evicted_at,
      });
    }
    const suspicions = (
      this.statement(
        `SELECT reporter, reporter_incarnation, suspect, suspect_incarnation, since, refreshed_at
         FROM concord_suspicions ORDER BY reporter, suspect`,
      ).all() as SuspicionRow[]
    ).map(
      (row): SuspicionRecord => ({
        reporter: row.reporter,
        reporterIncarnation: row.reporter_incarnation,
        suspect: row.suspect,
        suspectIncarnation: row.suspect_incarnation,
        since: row.since,
        refreshedAt: row.refreshed_at,
      }),
    );
    return { now, nodes, suspicions, version: this.membershipVersion() };
  }

  private membershipVersion(): number {
    return Number(this.metaValue(META.membershipVersion) ?? 0);
  }

  private bumpMembershipVersion(): void {
    this.setMeta(META.membershipVersion, String(this.membershipVersion() + 1));
  }

  // ---- shards -----------------------------------------------------------

  initShards(count: number): void {
    assertShardCount(count);
    this.immediate(() => {
      const recorded = this.metaValue(META.shardCount);
      if (recorded !== undefined && Number(recorded) !== count) {
        throw shardCountMismatch(Number(recorded), count);
      }
      if (recorded === undefined) this.setMeta(META.shardCount, String(count));
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
             AND EXISTS (
               SELECT 1 FROM concord_nodes AS me
               WHERE me.name = ? AND me.incarnation = ? AND me.status = 'alive'
                 AND me.lease_expires_at > ${NOW_MS})
           RETURNING epoch`,
        ).get(owner, ownerIncarnation, shard, expectedEpoch, owner, ownerIncarnation) as { epoch: number } | undefined,
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
    // One transaction for the batch: one fsync (group commit).
    const { batch } = this.writeTransactions();
    return this.retryBusy(() => batch.immediate(requests));
  }

  /**
   * The write paths' transaction functions, made once: better-sqlite3's transaction() builds
   * four wrappers each time, which showed in the shared writer's profile at a commit per 0.3 ms.
   */
  private writeTransactions(): WriteTransactions {
    if (this.writeTx === undefined) {
      const batch = this.db.transaction((requests: WriteRequest[]) => requests.map((req) => this.applyWrite(req)));
      // Each folded batch in its own savepoint (a nested transaction).
      const one = this.db.transaction(({ requests, token }: FoldedBatch): boolean[] =>
        this.applyBatch(requests, token),
      );
      const folded = this.db.transaction((batches: FoldedBatch[]) =>
        batches.map((entry): boolean[] | Error => {
          try {
            return one(entry);
          } catch (err) {
            return err instanceof Error ? err : new Error(String(err));
          }
        }),
      );
      this.writeTx = { batch, folded };
    }
    return this.writeTx;
  }

  private writeTx: WriteTransactions | undefined;

  /**
   * Several write batches (of several node processes: see SharedWriter) in ONE transaction, so
   * that they share one commit and one fsync. Every request is fenced exactly as in write():
   * its epoch and version are checked by its own UPDATE inside this transaction. Each batch
   * runs in a savepoint: a batch that throws is rolled back alone and gets its error, the
   * others are unaffected. When the transaction itself fails (BEGIN or COMMIT), this throws
   * and every batch's outcome is unknown to the caller. `strict`: one of the batches needs a
   * power-loss-safe commit (synchronous=FULL) even if this connection is relaxed.
   */
  writeFolded(batches: FoldedBatch[], strict = false): (boolean[] | Error)[] {
    // A batch from a strict process, committed by a relaxed one: this commit is made with
    // synchronous=FULL, so that it is power-loss safe as its sender promised.
    if (strict && !this.strictCommits) {
      this.db.pragma('synchronous = FULL');
      try {
        return this.writeFolded(batches, false);
      } finally {
        this.db.pragma('synchronous = NORMAL');
      }
    }
    // Each batch in its own savepoint: with its token, the token goes in exactly when the
    // batch's writes do. If it is there already, the sender re-ran the batch on its own
    // connection (it stopped waiting for us) and that copy applied: BatchSuperseded rolls
    // this copy back.
    const { folded } = this.writeTransactions();
    return this.retryBusy(() => folded.immediate(batches));
  }

  /**
   * A forwarded batch that its sender stopped waiting for (the writer went away, stalled or
   * failed it), run on the sender's own connection: in one transaction, the results recorded
   * under its token if the writer's copy committed, else the batch applied now and its token
   * recorded, so that a later copy from the writer applies nothing. Exactly one copy applies,
   * and both report the same results. `sentAt` (Date.now() when first sent): a batch older
   * than RERUN_WINDOW_MS is not re-run (its token may have been pruned); it fails as
   * "outcome unknown".
   */
  writeOnce(token: string, requests: WriteRequest[], sentAt: number): boolean[] {
    return this.immediate(() => {
      const recorded = this.recordedBatch(token);
      if (recorded !== undefined) return recorded;
      if (Date.now() - sentAt > RERUN_WINDOW_MS) {
        throw new StoreUnavailable(
          `a write batch forwarded to the shared SQLite writer ${Date.now() - sentAt} ms ago is too old to re-run; it may or may not have been applied`,
          { maybeApplied: true },
        );
      }
      return this.applyBatch(requests, token);
    });
  }

  /** The fenced requests of a batch, and its token recorded with their results (call inside a transaction). */
  private applyBatch(requests: WriteRequest[], token: string | undefined): boolean[] {
    const results = requests.map((req) => this.applyWrite(req));
    if (token !== undefined) this.recordBatch(token, results);
    return results;
  }

  /** Delete the tokens of batches sent before `before` (Date.now() ms); returns how many. */
  pruneBatchTokens(before: number): number {
    const statement = this.statement('DELETE FROM concord_writer_batches WHERE token < ?');
    // Tokens start with their send time (batchTokenTime): a range of the primary key.
    return this.immediate(() => statement.run(batchTokenTime(before)).changes);
  }

  private recordedBatch(token: string): boolean[] | undefined {
    const row = this.statement('SELECT results FROM concord_writer_batches WHERE token = ?').get(token) as
      | { results: string }
      | undefined;
    return row === undefined ? undefined : Array.from(row.results, (bit) => bit === '1');
  }

  private recordBatch(token: string, results: boolean[]): void {
    try {
      this.statement('INSERT INTO concord_writer_batches (token, results) VALUES (?, ?)').run(
        token,
        results.map((ok) => (ok ? '1' : '0')).join(''),
      );
    } catch (err) {
      if (isUniqueViolation(err)) throw new BatchSuperseded(token);
      throw err;
    }
  }

  /** One fenced request of a write batch (call inside the batch's transaction). */
  private applyWrite(req: WriteRequest): boolean {
    const update = this.statement(
      `UPDATE concord_entities SET state = coalesce(?, state), version = ?
       WHERE kind = ? AND id = ? AND epoch = ? AND version = ?`,
    );
    const fenced = () =>
      update.run(req.state, req.newVersion, req.kind, req.id, req.epoch, req.expectedVersion).changes === 1;
    if (!req.append || req.append.events.length === 0) {
      if (!fenced()) return false;
      // Idempotency keys go in only behind an update that applied, in the same transaction.
      if (req.keys !== undefined && req.keys.length > 0) this.insertKeys(req);
      return true;
    }
    // A request that appends events runs in a savepoint (better-sqlite3 nests transactions
    // as savepoints): if one of its event versions is taken, the unique key throws, the
    // savepoint rolls its row update back (and its keys), and only this request reports false.
    try {
      return this.withEvents(req);
    } catch (err) {
      if (isUniqueViolation(err)) return false;
      throw err;
    }
  }

  private withEvents(req: WriteRequest): boolean {
    return this.db.transaction((r: WriteRequest): boolean => {
      const applied =
        this.statement(
          `UPDATE concord_entities SET state = coalesce(?, state), version = ?
           WHERE kind = ? AND id = ? AND epoch = ? AND version = ?`,
        ).run(r.state, r.newVersion, r.kind, r.id, r.epoch, r.expectedVersion).changes === 1;
      if (!applied) return false;
      this.insertEvents(r.append!, r.newVersion - r.append!.events.length + 1);
      if (r.keys !== undefined && r.keys.length > 0) this.insertKeys(r);
      return true;
    })(req);
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

  // ---- cluster metadata -------------------------------------------------

  readMeta(key: string): string | null {
    const statement = this.statement('SELECT value FROM concord_meta WHERE key = ?');
    const row = this.retryBusy(() => statement.get(key)) as { value: string } | undefined;
    return row?.value ?? null;
  }

  insertMetaIfAbsent(key: string, value: string): string {
    // Under the write lock: a concurrent first insert waits, then finds the winner's value.
    return this.immediate(() => {
      this.statement('INSERT INTO concord_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING').run(
        key,
        value,
      );
      return this.metaValue(key)!;
    });
  }

  compareAndSetMeta(key: string, expected: string, next: string): boolean {
    return this.immediate(
      () =>
        this.statement('UPDATE concord_meta SET value = ? WHERE key = ? AND value = ?').run(next, key, expected)
          .changes === 1,
    );
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

  private metaValue(key: string): string | undefined {
    const row = this.statement('SELECT value FROM concord_meta WHERE key = ?').get(key) as
      | { value: string }
      | undefined;
    return row?.value;
  }

  private setMeta(key: string, value: string): void {
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

/** evicted_by is a JSON list of names. */
function parseNames(text: string | null): string[] | null {
  if (text === null) return null;
  try {
    const value: unknown = JSON.parse(text);
    return Array.isArray(value) ? value.map(String) : null;
  } catch {
    return null;
  }
}

function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}
