/**
 * PostgresStore: the PostgreSQL Store, on porsager's `postgres` client.
 *
 * - A modest pool (8 connections; `?max=N` in the URL sets it); int8 columns come back as JS numbers.
 * - The store clock is the server's `clock_timestamp()`; node-supplied times are never used.
 * - 'relaxed' durability sets `synchronous_commit = off` as a startup parameter of every
 *   connection.
 * - No session state is relied on (no advisory locks, no session-level SET).
 * - `?pgbouncer=true` in the URL (the option is taken out of the URL; PostgreSQL never sees it)
 *   makes it work behind a transaction-pooling proxy such as PgBouncer, where consecutive
 *   transactions of one client connection may run on different server connections:
 *   - no named prepared statements (`prepare: false`): a statement prepared on one server
 *     connection does not exist on the next;
 *   - no pipelining across transactions: at most as many store calls run at once as the pool has
 *     connections, so the client never sends a query on a connection behind another query's
 *     Sync (PgBouncer may hand the server connection to someone else at that Sync, and the
 *     query behind it is then lost or lands elsewhere). Queries inside one transaction are
 *     still pipelined: a transaction keeps its server connection;
 *   - relaxed durability as `SET LOCAL synchronous_commit = off` at the start of every
 *     transaction (PgBouncer refuses unknown startup parameters), and the entity writes and
 *     activations always run in a transaction to get it. Other single statements (appending
 *     to the event store directly, pruning, metadata) then commit synchronously.
 * - A dropped connection rejects the queries that were using it; the client reconnects on the
 *   next query. Nothing is thrown outside a returned promise.
 *
 * Isolation is READ COMMITTED. Every conditional update is a single UPDATE/INSERT whose
 * condition PostgreSQL re-checks against the newest row version after waiting for a row lock,
 * so concurrent compare-and-sets on one row have exactly one winner. Where a decision depends
 * on the clock and on *another* row (a claim reading the holder's lease, a renewal), the rows
 * are locked first and the clock is read afterwards: see claimShard and renewLease.
 */
import postgres from 'postgres';
import {
  assertShardCount,
  META,
  MIGRATIONS,
  MIGRATIONS_TABLE,
  type Migration,
  shardCountMismatch,
} from './migrations.js';
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

const POOL_SIZE = 8;

/** int8 (BIGINT, count(*), ordinality) parsed to a JS number: every integer in the schema is < 2^53. */
const PG_TYPES = {
  int8: { to: 20, from: [20], serialize: (value: number) => String(value), parse: (raw: string) => Number(raw) },
};

function connect(url: string, options: StoreOptions, pgbouncer: boolean, max: number) {
  return postgres(url, {
    max,
    connect_timeout: 10,
    types: PG_TYPES,
    // `CREATE TABLE IF NOT EXISTS` notices would otherwise be printed to the console.
    onnotice: () => {},
    ...(pgbouncer ? { prepare: false } : {}),
    connection: {
      application_name: 'concord',
      ...(options.durability === 'relaxed' && !pgbouncer ? { synchronous_commit: 'off' } : {}),
    },
  });
}

/**
 * Takes `pgbouncer` out of a store URL's query (every other parameter reaches the client, which
 * sends unknown ones to the server as settings). `true` or `false`; anything else throws.
 */
export function parsePgbouncerOption(url: string): { url: string; pgbouncer: boolean } {
  const query = url.indexOf('?');
  if (query === -1) return { url, pgbouncer: false };
  const params = new URLSearchParams(url.slice(query + 1));
  const value = params.get('pgbouncer');
  if (value === null) return { url, pgbouncer: false };
  if (value !== 'true' && value !== 'false') {
    throw new Error(`store URL option pgbouncer must be true or false, not "${value}"`);
  }
  params.delete('pgbouncer');
  const rest = params.toString();
  return { url: url.slice(0, query) + (rest ? `?${rest}` : ''), pgbouncer: value === 'true' };
}

/**
 * Takes `max` (the pool size: connections this node may open, 1–100) out of a store URL's query.
 * Absent: POOL_SIZE. Every node opens up to this many connections, so N nodes need N × max of
 * the server's `max_connections` (PostgreSQL's default is 100).
 */
export function parsePoolSize(url: string): { url: string; max: number } {
  const query = url.indexOf('?');
  if (query === -1) return { url, max: POOL_SIZE };
  const params = new URLSearchParams(url.slice(query + 1));
  const value = params.get('max');
  if (value === null) return { url, max: POOL_SIZE };
  const max = Number(value);
  if (!/^[0-9]+$/.test(value) || max < 1 || max > 100) {
    throw new Error(`store URL option max (the pool size) must be a whole number from 1 to 100, not "${value}"`);
  }
  params.delete('max');
  const rest = params.toString();
  return { url: url.slice(0, query) + (rest ? `?${rest}` : ''), max };
}

/**
 * At most `size` calls at once (FIFO). A finished call hands its slot straight to the next one,
 * which starts after the finished call's connection is back in the pool (the client moves it
 * there before it resolves the query).
 */
class Gate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly size: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active < this.size) this.active++;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}

/**
 * Every method of `store`'s class (but those in `ungated`) called through `gate`. The methods run
 * on the store itself, so the calls a store makes to itself are not gated.
 */
function gated<T extends object>(store: T, gate: Gate, ungated: ReadonlySet<string>): T {
  return new Proxy(store, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function' || Object.hasOwn(target, property)) return value;
      const method = value as (...args: unknown[]) => Promise<unknown>;
      if (typeof property !== 'string' || ungated.has(property)) return method.bind(target);
      return (...args: unknown[]) => gate.run(() => method.apply(target, args));
    },
  });
}

type Sql = ReturnType<typeof connect>;
type Tx = postgres.TransactionSql<Sql extends postgres.Sql<infer T> ? T : never>;
type Queryable = Sql | Tx;

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

export class PostgresStore implements Store {
  readonly backend = 'postgres' as const;
  /** Commits overlap on the pool's connections. */
  readonly commitsInFlight = 4;
  readonly activationsInFlight = 4;
  private readonly sql: Sql;
  /** `?pgbouncer=true` with relaxed durability: `SET LOCAL synchronous_commit = off` in every transaction. */
  private readonly relaxedPerTransaction: boolean;

  /**
   * Connections open lazily, on the first query; call migrate() before anything else. With
   * `?pgbouncer=true` the store returned is gated: at most one call per pool connection at once.
   */
  constructor(url: string, options: StoreOptions = {}) {
    const pool = parsePoolSize(url);
    const parsed = parsePgbouncerOption(pool.url);
    this.sql = connect(parsed.url, options, parsed.pgbouncer, pool.max);
    this.relaxedPerTransaction = parsed.pgbouncer && options.durability === 'relaxed';
    // biome-ignore lint/correctness/noConstructorReturn: the gated proxy stands for this store
    if (parsed.pgbouncer) return gated(this, new Gate(pool.max), new Set(['constructor', 'close']));
  }

  async migrate(): Promise<void> {
    await this.createMigrationsTable();
    const rows = await this.sql<{ version: number }[]>`SELECT version FROM concord_migrations`;
    const applied = new Set(rows.map((row) => row.version));
    for (const migration of MIGRATIONS) {
      if (!applied.has(migration.version)) await this.applyMigration(migration);
    }
  }

  async close(): Promise<void> {
    // The timeout (seconds) also bounds close() when a connection died mid-query: the client
    // then waits forever for that query (porsager/postgres#1097) until forced to terminate.
    await this.sql.end({ timeout: 5 });
  }

  async now(): Promise<number> {
    const [row] = await this.sql<{ now: number }[]>`SELECT ${this.clock()} AS now`;
    return row!.now;
  }

  // ---- membership -------------------------------------------------------

  registerNode(req: RegisterRequest): Promise<RegisterResult> {
    return this.begin(async (tx): Promise<RegisterResult> => {
      // `now` is read before the upsert, which may wait for a lock: a `now` that is earlier
      // than the moment of the decision only makes the expiry check stricter and the new
      // lease shorter.
      const [clock] = await tx<{ now: number; high_water: string | null }[]>`
        SELECT ${this.clock()} AS now,
               (SELECT value FROM concord_meta WHERE key = ${META.incarnationHighWater}) AS high_water`;
      const now = clock!.now;
      const candidate = Math.max(now, Number(clock!.high_water ?? 0) + 1);
      // Replaces an existing row only when its lease has expired by the store clock: while the
      // old incarnation's lease runs it may still be serving, and nobody may claim its shards,
      // so a second process with the same name must wait. ON CONFLICT locks the existing row
      // and checks the condition against its newest version.
      const [row] = await tx<{ incarnation: number; lease_expires_at: number }[]>`
        INSERT INTO concord_nodes (name, incarnation, address, http_address, status, started_at, lease_expires_at)
        VALUES (${req.name}, ${candidate}, ${req.address}, ${req.httpAddress}, ${req.status ?? 'alive'}, ${now}, ${now + req.ttlMs})
        ON CONFLICT (name) DO UPDATE SET
          incarnation = greatest(concord_nodes.incarnation + 1, excluded.incarnation),
          address = excluded.address,
          http_address = excluded.http_address,
          status = excluded.status,
          started_at = excluded.started_at,
          lease_expires_at = excluded.lease_expires_at
        WHERE concord_nodes.lease_expires_at <= excluded.started_at
        RETURNING incarnation, lease_expires_at`;
      if (row) {
        await tx`
          INSERT INTO concord_meta (key, value) VALUES (${META.incarnationHighWater}, ${String(row.incarnation)})
          ON CONFLICT (key) DO UPDATE SET value = greatest(concord_meta.value::bigint, excluded.value::bigint)::text`;
        return { ok: true, incarnation: row.incarnation, leaseExpiresAt: row.lease_expires_at, now };
      }
      // The refused upsert still locked the holder's row, so it is there to read.
      const [holder] = await tx<{ incarnation: number; lease_expires_at: number }[]>`
        SELECT incarnation, lease_expires_at FROM concord_nodes WHERE name = ${req.name}`;
      return { ok: false, incarnation: holder!.incarnation, leaseExpiresAt: holder!.lease_expires_at, now };
    });
  }

  renewLease(name: string, incarnation: number, ttlMs: number): Promise<RenewResult> {
    return this.begin(async (tx): Promise<RenewResult> => {
      // Lock the row first, read the clock after. A single UPDATE would evaluate its
      // condition (and the clock) before waiting for a concurrent claim's lock on this row,
      // and could then extend a lease that expired while it waited, after the claim took the
      // shards. An expired lease is never extended: once it has expired other nodes may own
      // this node's shards, so reviving it would let two owners serve at once. An evicted row
      // is never extended either: that is how its node learns of the eviction.
      const [locked] = await tx<{ status: NodeStatus }[]>`
        SELECT status FROM concord_nodes WHERE name = ${name} AND incarnation = ${incarnation} FOR UPDATE`;
      if (!locked) return { ok: false, reason: 'gone' };
      if (locked.status === 'evicted') return { ok: false, reason: 'evicted' };
      const [row] = await tx<{ lease_expires_at: number }[]>`
        UPDATE concord_nodes SET lease_expires_at = c.now + ${ttlMs}
        FROM (SELECT ${this.clock()} AS now) AS c
        WHERE name = ${name} AND incarnation = ${incarnation} AND lease_expires_at > c.now
        RETURNING lease_expires_at`;
      return row ? { ok: true, leaseExpiresAt: row.lease_expires_at } : { ok: false, reason: 'expired' };
    });
  }

  setNodeStatus(name: string, incarnation: number, status: NodeStatus, from: readonly NodeStatus[]): Promise<boolean> {
    if (from.length === 0 || from.includes('evicted')) return Promise.resolve(false);
    return this.begin(async (tx) => {
      await this.lockMembershipVersion(tx);
      const result =
        status === 'alive'
          ? await tx`
              UPDATE concord_nodes SET status = ${status}, evicted_by = NULL, evicted_at = NULL
              WHERE name = ${name} AND incarnation = ${incarnation} AND status = ANY(${[...from]}::text[])
                AND lease_expires_at > ${this.clock()}`
          : await tx`
              UPDATE concord_nodes SET status = ${status}
              WHERE name = ${name} AND incarnation = ${incarnation} AND status = ANY(${[...from]}::text[])`;
      if (result.count === 1) await this.bumpMembershipVersion(tx);
      return result.count === 1;
    });
  }

  async removeNode(name: string, incarnation: number): Promise<void> {
    await this.begin(async (tx) => {
      await this.lockMembershipVersion(tx);
      const result = await tx`DELETE FROM concord_nodes WHERE name = ${name} AND incarnation = ${incarnation}`;
      if (result.count > 0) {
        await tx`DELETE FROM concord_suspicions WHERE reporter = ${name} OR suspect = ${name}`;
        await this.bumpMembershipVersion(tx);
      }
    });
  }

  async listNodes(): Promise<NodeList> {
    // One REPEATABLE READ transaction: nodes, suspicions and version from one snapshot.
    return this.begin((tx) => this.readMembership(tx), 'isolation level repeatable read read only');
  }

  async pruneNodes(graceMs: number): Promise<number> {
    const result = await this.sql`DELETE FROM concord_nodes WHERE lease_expires_at < ${this.clock()} - ${graceMs}`;
    await this.sql`
      DELETE FROM concord_suspicions AS s WHERE
        NOT EXISTS (SELECT 1 FROM concord_nodes AS n WHERE n.name = s.reporter AND n.incarnation = s.reporter_incarnation)
        OR NOT EXISTS (SELECT 1 FROM concord_nodes AS n WHERE n.name = s.suspect AND n.incarnation = s.suspect_incarnation)`;
    return result.count;
  }

  reportSuspicions(reporter: string, incarnation: number, suspects: readonly SuspectRef[]): Promise<NodeList> {
    return this.begin(async (tx) => {
      // Every membership change takes the version row's lock first: changes are serialised,
      // and evictMember's version check sees every change that committed before it.
      await this.lockMembershipVersion(tx);
      const [row] = await tx<{ member: boolean }[]>`
        SELECT (incarnation = ${incarnation} AND status = 'alive' AND lease_expires_at > ${this.clock()}) AS member
        FROM concord_nodes WHERE name = ${reporter}`;
      // Only a live member may hold suspicions: a joining, leaving, evicted or expired reporter's go.
      const wanted = row?.member ? suspects : [];
      const names = wanted.map((w) => w.name);
      const incarnations = wanted.map((w) => w.incarnation);
      const removed = await tx`
        DELETE FROM concord_suspicions AS s
        WHERE s.reporter = ${reporter} AND NOT EXISTS (
          SELECT 1 FROM unnest(${names}::text[], ${incarnations}::bigint[]) AS w (name, inc)
          WHERE w.name = s.suspect AND w.inc = s.suspect_incarnation)`;
      const inserted = await tx<{ inserted: boolean }[]>`
        INSERT INTO concord_suspicions AS s
          (reporter, reporter_incarnation, suspect, suspect_incarnation, since, refreshed_at)
        SELECT ${reporter}, ${incarnation}, w.name, w.inc, c.now, c.now
        FROM unnest(${names}::text[], ${incarnations}::bigint[]) AS w (name, inc),
             (SELECT ${this.clock()} AS now) AS c
        ON CONFLICT (reporter, suspect) DO UPDATE SET refreshed_at = excluded.refreshed_at
        RETURNING (xmax = 0) AS inserted`;
      if (removed.count > 0 || inserted.some((r) => r.inserted)) await this.bumpMembershipVersion(tx);
      return this.readMembership(tx);
    });
  }

  evictMember(request: EvictionRequest): Promise<boolean> {
    return this.begin(async (tx) => {
      const version = await this.lockMembershipVersion(tx);
      if (version !== request.expectedVersion) return false;
      // Lock both rows, then read the clock (see claimShard for why the order matters).
      const rows = await tx<{ name: string; incarnation: number; status: NodeStatus }[]>`
        SELECT name, incarnation, status FROM concord_nodes
        WHERE (name = ${request.by} AND incarnation = ${request.byIncarnation})
           OR (name = ${request.suspect} AND incarnation = ${request.suspectIncarnation})
        ORDER BY name FOR UPDATE`;
      if (rows.length !== 2) return false;
      const [live] = await tx<{ count: number }[]>`
        SELECT count(*) AS count FROM concord_nodes
        WHERE ((name = ${request.by} AND incarnation = ${request.byIncarnation})
            OR (name = ${request.suspect} AND incarnation = ${request.suspectIncarnation}))
          AND status = 'alive' AND lease_expires_at > ${this.clock()}`;
      if (live!.count !== 2) return false;
      // The lease is left as it is: nobody may claim the suspect's shards before it has
      // stopped serving (acknowledgeEviction) or its lease has run out.
      await tx`
        UPDATE concord_nodes
        SET status = 'evicted', evicted_by = ${JSON.stringify(request.reporters)}, evicted_at = ${this.clock()}
        WHERE name = ${request.suspect} AND incarnation = ${request.suspectIncarnation}`;
      await tx`DELETE FROM concord_suspicions WHERE reporter = ${request.suspect} OR suspect = ${request.suspect}`;
      await this.bumpMembershipVersion(tx);
      return true;
    });
  }

  acknowledgeEviction(name: string, incarnation: number): Promise<boolean> {
    return this.begin(async (tx) => {
      await tx`SELECT 1 FROM concord_nodes WHERE name = ${name} AND incarnation = ${incarnation} FOR UPDATE`;
      const result = await tx`
        UPDATE concord_nodes SET lease_expires_at = c.now
        FROM (SELECT ${this.clock()} AS now) AS c
        WHERE name = ${name} AND incarnation = ${incarnation} AND status = 'evicted' AND lease_expires_at > c.now`;
      return result.count === 1;
    });
  }

  /** Nodes, suspicions and the version (in `tx`, so that they come from one snapshot). */
  private async readMembership(tx: Tx): Promise<NodeList> {
    const rows = await tx<({ now: number } & (NodeRow | { [K in keyof NodeRow]: null }))[]>`
      SELECT c.now, n.name, n.incarnation, n.address, n.http_address, n.status, n.lease_expires_at,
             n.evicted_by, n.evicted_at
      FROM (SELECT ${this.clock()} AS now) AS c LEFT JOIN concord_nodes AS n ON true
      ORDER BY n.name COLLATE "C"`;
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
    const suspicionRows = await tx<SuspicionRow[]>`
      SELECT reporter, reporter_incarnation, suspect, suspect_incarnation, since, refreshed_at
      FROM concord_suspicions ORDER BY reporter COLLATE "C", suspect COLLATE "C"`;
    const suspicions = suspicionRows.map(
      (row): SuspicionRecord => ({
        reporter: row.reporter,
        reporterIncarnation: row.reporter_incarnation,
        suspect: row.suspect,
        suspectIncarnation: row.suspect_incarnation,
        since: row.since,
        refreshedAt: row.refreshed_at,
      }),
    );
    const [version] = await tx<{ value: string }[]>`
      SELECT value FROM concord_meta WHERE key = ${META.membershipVersion}`;
    return { now: rows[0]!.now, nodes, suspicions, version: Number(version?.value ?? 0) };
  }

  /** Lock the membership version row (serialising membership changes) and return the version. */
  private async lockMembershipVersion(tx: Tx): Promise<number> {
    const [row] = await tx<{ value: string }[]>`
      SELECT value FROM concord_meta WHERE key = ${META.membershipVersion} FOR UPDATE`;
    return Number(row?.value ?? 0);
  }

  private async bumpMembershipVersion(tx: Tx): Promise<void> {
    await tx`
      UPDATE concord_meta SET value = (value::bigint + 1)::text WHERE key = ${META.membershipVersion}`;
  }

  // ---- shards -----------------------------------------------------------

  async initShards(count: number): Promise<void> {
    assertShardCount(count);
    await this.begin(async (tx) => {
      // A concurrent first call blocks on the key, then does nothing and reads the winner's count.
      await tx`
        INSERT INTO concord_meta (key, value) VALUES (${META.shardCount}, ${String(count)})
        ON CONFLICT (key) DO NOTHING`;
      const [row] = await tx<{ value: string }[]>`SELECT value FROM concord_meta WHERE key = ${META.shardCount}`;
      const recorded = Number(row!.value);
      if (recorded !== count) throw shardCountMismatch(recorded, count);
      await tx`
        INSERT INTO concord_shards (shard, owner, owner_incarnation, epoch)
        SELECT s, NULL, NULL, 0 FROM generate_series(0, ${count - 1}::bigint) AS s
        ON CONFLICT (shard) DO NOTHING`;
    });
  }

  async listShards(): Promise<ShardRecord[]> {
    const rows = await this.sql<
      { shard: number; owner: string | null; owner_incarnation: number | null; epoch: number }[]
    >`
      SELECT shard, owner, owner_incarnation, epoch FROM concord_shards ORDER BY shard`;
    return rows.map((row) => ({
      shard: row.shard,
      owner: row.owner,
      ownerIncarnation: row.owner_incarnation,
      epoch: row.epoch,
    }));
  }

  claimShard(shard: number, expectedEpoch: number, owner: string, ownerIncarnation: number): Promise<number | null> {
    return this.begin(async (tx) => {
      // Lock the shard row and then the current holder's node row *before* the clock is read.
      // Without the share lock, a renewal of the holder that read the clock before the lease
      // expired but commits after this statement's snapshot would be invisible here: the claim
      // would see the old expiry, while the holder believes it was renewed. With it, such a
      // renewal has committed before we look, and a later one waits for us and then finds the
      // lease expired (renewLease reads the clock only once it holds the row).
      const [current] = await tx<{ epoch: number; owner: string | null; owner_incarnation: number | null }[]>`
        SELECT epoch, owner, owner_incarnation FROM concord_shards WHERE shard = ${shard} FOR UPDATE`;
      if (!current || current.epoch !== expectedEpoch) return null;
      if (current.owner !== null) {
        await tx`
          SELECT 1 FROM concord_nodes
          WHERE name = ${current.owner} AND incarnation = ${current.owner_incarnation} FOR SHARE`;
      }
      const [row] = await tx<{ epoch: number }[]>`
        UPDATE concord_shards AS s
        SET owner = ${owner}, owner_incarnation = ${ownerIncarnation}, epoch = s.epoch + 1
        WHERE s.shard = ${shard} AND s.epoch = ${expectedEpoch}
          AND (s.owner IS NULL OR NOT EXISTS (
            SELECT 1 FROM concord_nodes AS n
            WHERE n.name = s.owner AND n.incarnation = s.owner_incarnation
              AND n.lease_expires_at > ${this.clock()}))
          AND EXISTS (
            SELECT 1 FROM concord_nodes AS me
            WHERE me.name = ${owner} AND me.incarnation = ${ownerIncarnation} AND me.status = 'alive'
              AND me.lease_expires_at > ${this.clock()})
        RETURNING s.epoch`;
      return row ? row.epoch : null;
    });
  }

  async releaseShard(shard: number, epoch: number, owner: string, ownerIncarnation: number): Promise<boolean> {
    const result = await this.sql`
      UPDATE concord_shards SET owner = NULL, owner_incarnation = NULL
      WHERE shard = ${shard} AND epoch = ${epoch} AND owner = ${owner} AND owner_incarnation = ${ownerIncarnation}`;
    return result.count === 1;
  }

  // ---- entities ---------------------------------------------------------

  async activate(requests: ActivationRequest[]): Promise<ActivationResult[]> {
    if (requests.length === 0) return [];
    const rounds = intoRounds(requests);
    const perRound =
      rounds.length === 1 && !this.relaxedPerTransaction
        ? [await this.activateRound(this.sql, rounds[0]!)]
        : await this.begin((tx) => Promise.all(rounds.map((round) => this.activateRound(tx, round))));
    const results: ActivationResult[] = requests.map(() => ({ ok: false }));
    perRound.forEach((rows, r) => {
      const byKey = new Map(rows.map((row) => [entityKey(row.kind, row.id), row]));
      for (const { index, request } of rounds[r]!) {
        const row = byKey.get(entityKey(request.kind, request.id));
        if (row) results[index] = { ok: true, state: row.state, version: row.version };
      }
    });
    return results;
  }

  async write(requests: WriteRequest[]): Promise<boolean[]> {
    if (requests.length === 0) return [];
    if (requests.some(hasEvents)) return this.writeWithEvents(requests);
    const rounds = intoRounds(requests);
    const perRound =
      rounds.length === 1 && !this.relaxedPerTransaction
        ? [await this.writeRound(this.sql, rounds[0]!)]
        : await this.begin((tx) => Promise.all(rounds.map((round) => this.writeRound(tx, round))));
    const results = requests.map(() => false);
    perRound.forEach((rows, r) => {
      const round = rounds[r]!;
      // `i` is the 1-based position of the request within its round.
      for (const row of rows) results[round[row.i - 1]!.index] = true;
    });
    return results;
  }

  async readEntity(kind: string, id: string): Promise<EntityRow | null> {
    const [row] = await this.sql<EntityRow[]>`
      SELECT kind, id, state, version, epoch FROM concord_entities WHERE kind = ${kind} AND id = ${id}`;
    return row ?? null;
  }

  // ---- idempotency keys -------------------------------------------------

  readIdempotencyKeys(kind: string, id: string, notBefore: number, limit?: number): Promise<StoredIdempotencyKey[]> {
    return this.sql<StoredIdempotencyKey[]>`
      SELECT key, fingerprint, reply, created_at AS "createdAt" FROM concord_idempotency
      WHERE kind = ${kind} AND id = ${id} AND created_at >= ${notBefore}
      ORDER BY created_at DESC, key COLLATE "C"
      ${limit === undefined ? this.sql`` : this.sql`LIMIT ${limit}`}`;
  }

  async readIdempotencyKey(kind: string, id: string, key: string): Promise<StoredIdempotencyKey | null> {
    const [row] = await this.sql<StoredIdempotencyKey[]>`
      SELECT key, fingerprint, reply, created_at AS "createdAt" FROM concord_idempotency
      WHERE kind = ${kind} AND id = ${id} AND key = ${key}`;
    return row ?? null;
  }

  async pruneIdempotencyKeys(windowMs: number, limit: number): Promise<number> {
    // SKIP LOCKED: sweeps of several nodes at once take disjoint rows instead of queueing.
    const result = await this.sql`
      DELETE FROM concord_idempotency WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM concord_idempotency
        WHERE created_at < ${this.clock()} - ${windowMs}
        LIMIT ${limit}
        FOR UPDATE SKIP LOCKED))`;
    return result.count;
  }

  // ---- events -----------------------------------------------------------

  async appendEvents(request: AppendRequest): Promise<AppendResult> {
    const { stream, expectedVersion, events } = request;
    if (events.length > 0) {
      try {
        // One statement: inserts only if the stream's version is still the expected one. A
        // concurrent append of the same versions either committed before (the check fails)
        // or collides on the primary key (the insert waits for it, then fails): one winner.
        const rows = await this.sql`
          INSERT INTO concord_events (stream, version, type, data, node, at)
          SELECT ${stream}, ${expectedVersion}::bigint + e.n, e.type, e.data, ${request.node}, ${this.clock()}
          FROM unnest(${events.map((e) => e.type)}::text[], ${events.map((e) => e.data)}::text[])
            WITH ORDINALITY AS e (type, data, n)
          WHERE (SELECT coalesce(max(version), 0) FROM concord_events WHERE stream = ${stream}) = ${expectedVersion}
          ORDER BY e.n`;
        if (rows.count === events.length) return { ok: true, version: expectedVersion + events.length };
      } catch (err) {
        if (!isPgError(err, ['23505'])) throw err;
      }
    }
    const actualVersion = await this.streamVersion(stream);
    return actualVersion === expectedVersion && events.length === 0
      ? { ok: true, version: actualVersion }
      : { ok: false, actualVersion };
  }

  readEvents(stream: string, fromVersion: number, limit: number): Promise<StoredEvent[]> {
    return this.sql<StoredEvent[]>`
      SELECT stream, version, type, data, node, at FROM concord_events
      WHERE stream = ${stream} AND version >= ${fromVersion} ORDER BY version LIMIT ${limit}`;
  }

  async streamVersion(stream: string): Promise<number> {
    const [row] = await this.sql<{ version: number }[]>`
      SELECT coalesce(max(version), 0)::bigint AS version FROM concord_events WHERE stream = ${stream}`;
    return row!.version;
  }

  /**
   * Positions (an identity column) are handed out before commit, so transactions can make them
   * visible out of order: a reader that went past position 7 could miss a position 6 that
   * commits afterwards. The log is therefore read in (tx, position) order, where tx is the
   * inserting transaction's id, and only up to the oldest transaction still running
   * (`pg_snapshot_xmin`): every transaction below it has ended, so nothing can appear behind
   * the cursor any more. The price: a transaction that stays open anywhere on the server
   * holds readers back until it ends.
   */
  async readEventLog(cursor: LogCursor | null, limit: number, streamPrefix?: string): Promise<EventLogPage> {
    const [tx, position] = parsePgCursor(cursor);
    // The text of tx is selected under another name: `ORDER BY tx` would otherwise sort by the
    // output column (text, "1000" < "999") and the log would repeat and skip events.
    const rows = await this.sql<(StoredEvent & { tx_text: string; position: number })[]>`
      SELECT e.stream, e.version, e.type, e.data, e.node, e.at, e.tx::text AS tx_text, e.position
      FROM concord_events AS e
      WHERE (e.tx, e.position) > (${tx}::xid8, ${position}::bigint)
        AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
        ${streamPrefix === undefined ? this.sql`` : this.sql`AND starts_with(e.stream, ${streamPrefix})`}
      ORDER BY e.tx, e.position
      LIMIT ${limit}`;
    const last = rows.at(-1);
    return {
      events: rows.map(({ tx_text: _tx, position: _position, ...event }) => event),
      cursor: last ? `${last.tx_text}:${last.position}` : `${tx}:${position}`,
    };
  }

  /** The effective `synchronous_commit` of a writing transaction ('on' unless the server says otherwise; 'off' when relaxed). */
  async synchronousCommit(): Promise<string> {
    const [row] = await this.begin((tx) => tx<{ synchronous_commit: string }[]>`SHOW synchronous_commit`);
    return row!.synchronous_commit;
  }

  // ---- cluster metadata -------------------------------------------------

  async readMeta(key: string): Promise<string | null> {
    const [row] = await this.sql<{ value: string }[]>`SELECT value FROM concord_meta WHERE key = ${key}`;
    return row?.value ?? null;
  }

  async insertMetaIfAbsent(key: string, value: string): Promise<string> {
    // Two statements, not one: a concurrent first insert makes ours wait on the key, then do
    // nothing; the SELECT that follows takes a new snapshot (READ COMMITTED) and sees the
    // winner's committed value, which a single statement's snapshot might not.
    await this.sql`INSERT INTO concord_meta (key, value) VALUES (${key}, ${value}) ON CONFLICT (key) DO NOTHING`;
    const stored = await this.readMeta(key);
    if (stored === null) throw new Error(`concord_meta: "${key}" vanished right after it was inserted`);
    return stored;
  }

  async compareAndSetMeta(key: string, expected: string, next: string): Promise<boolean> {
    // A concurrent CAS holds the row lock; ours then re-checks `value` against its result.
    const result = await this.sql`
      UPDATE concord_meta SET value = ${next} WHERE key = ${key} AND value = ${expected}`;
    return result.count === 1;
  }

  // ---- helpers ----------------------------------------------------------

  /**
   * A batch in which some requests append events: one transaction with, per round, the fenced
   * row updates and then the events of the requests that passed the fence (ON CONFLICT DO
   * NOTHING, so a taken version does not abort the transaction). If any request could not
   * insert all of its events, the whole transaction is rolled back (nothing of it was ever
   * visible) and the batch runs again without those requests, which report false. Each retry
   * drops at least one request, so this ends; collisions need an outside writer, so retries
   * are rare.
   */
  private async writeWithEvents(requests: WriteRequest[]): Promise<boolean[]> {
    const results = requests.map(() => false);
    let live = requests.map((_, index) => index);
    while (live.length > 0) {
      const batch = live.map((index) => requests[index]!);
      const outcome = await this.begin(async (tx) => {
        const applied: number[] = [];
        const collided = new Set<number>();
        for (const round of intoRounds(batch)) {
          const rows = await this.writeRound(tx, round);
          const passed = rows.map((row) => round[row.i - 1]!.index);
          applied.push(...passed);
          const appending = passed.filter((b) => hasEvents(batch[b]!));
          if (appending.length === 0) continue;
          const complete = await this.insertEventsRound(
            tx,
            appending.map((b) => batch[b]!),
          );
          appending.forEach((b, k) => {
            if (!complete[k]) collided.add(b);
          });
        }
        if (collided.size > 0) throw new EventCollision(collided);
        return applied;
      }).catch((err: unknown) => {
        if (err instanceof EventCollision) return err;
        throw err;
      });
      if (outcome instanceof EventCollision) {
        live = live.filter((_, b) => !outcome.requests.has(b));
        continue;
      }
      for (const b of outcome) results[live[b]!] = true;
      break;
    }
    return results;
  }

  /** Insert the events of fenced writes that applied; result k: did all of request k's events go in? */
  private async insertEventsRound(tx: Tx, requests: WriteRequest[]): Promise<boolean[]> {
    const streams: string[] = [];
    const versions: number[] = [];
    const types: string[] = [];
    const datas: string[] = [];
    const nodes: string[] = [];
    const expected = new Map<string, number>();
    for (const request of requests) {
      const { stream, node, events } = request.append!;
      const first = request.newVersion - events.length + 1;
      expected.set(stream, (expected.get(stream) ?? 0) + events.length);
      events.forEach((event, j) => {
        streams.push(stream);
        versions.push(first + j);
        types.push(event.type);
        datas.push(event.data);
        nodes.push(node);
      });
    }
    // Inserted in (stream, version) order, like the row locks, so two batches never deadlock.
    const rows = await tx<{ stream: string }[]>`
      INSERT INTO concord_events (stream, version, type, data, node, at)
      SELECT e.stream, e.version, e.type, e.data, e.node, ${this.clock()}
      FROM unnest(${streams}::text[], ${versions}::bigint[], ${types}::text[], ${datas}::text[], ${nodes}::text[])
        AS e (stream, version, type, data, node)
      ORDER BY e.stream, e.version
      ON CONFLICT (stream, version) DO NOTHING
      RETURNING stream`;
    const inserted = new Map<string, number>();
    for (const row of rows) inserted.set(row.stream, (inserted.get(row.stream) ?? 0) + 1);
    // (Requests of one round sharing a stream stand or fall together.)
    return requests.map((request) => inserted.get(request.append!.stream) === expected.get(request.append!.stream));
  }

  /**
   * A transaction (`mode`: e.g. 'isolation level repeatable read read only'). With
   * `?pgbouncer=true` and relaxed durability, a writing transaction first sets
   * `synchronous_commit = off` for itself (pipelined ahead of its first statement).
   */
  private begin<T>(fn: (tx: Tx) => Promise<T>, mode = ''): Promise<T> {
    if (!this.relaxedPerTransaction || mode.includes('read only')) {
      return this.sql.begin(mode, fn) as Promise<T>;
    }
    return this.sql.begin(mode, (tx) => {
      // Not awaited: the statements of fn follow it on the same connection; a failure of it
      // fails the transaction (the client rethrows it before COMMIT).
      tx`SET LOCAL synchronous_commit = off`.execute();
      return fn(tx);
    }) as Promise<T>;
  }

  /** The store clock in integer milliseconds, as an SQL fragment. */
  private clock() {
    return this.sql`(extract(epoch from clock_timestamp()) * 1000)::bigint`;
  }

  /**
   * One round of activations in one statement. Rows are inserted/locked in (kind, id) order so
   * that two overlapping batches can never deadlock.
   */
  private activateRound(sql: Queryable, round: Round<ActivationRequest>) {
    const requests = round.map((entry) => entry.request);
    // `<=`, not `<`: the owner holding epoch e activates its entities at e again after
    // passivating them and must get its own row back; only a row stamped by a *newer* claim
    // (a higher epoch) is refused.
    return sql<{ kind: string; id: string; state: string; version: number }[]>`
      INSERT INTO concord_entities AS e (kind, id, state, version, epoch)
      SELECT r.kind, r.id, r.state, 0, r.epoch
      FROM unnest(
        ${requests.map((q) => q.kind)}::text[],
        ${requests.map((q) => q.id)}::text[],
        ${requests.map((q) => q.epoch)}::bigint[],
        ${requests.map((q) => q.initialState)}::text[]
      ) AS r (kind, id, epoch, state)
      ORDER BY r.kind, r.id
      ON CONFLICT (kind, id) DO UPDATE SET epoch = excluded.epoch
      WHERE e.epoch <= excluded.epoch
      RETURNING e.kind, e.id, e.state, e.version`;
  }

  /**
   * One round of fenced writes in one statement. The target rows are first locked in
   * (kind, id) order (the MATERIALIZED CTE), so that two overlapping batches can never
   * deadlock; the UPDATE then re-checks epoch and version against the newest row versions.
   */
  private writeRound(sql: Queryable, round: Round<WriteRequest>) {
    const requests = round.map((entry) => entry.request);
    if (requests.some(hasKeys)) return this.writeRoundWithKeys(sql, requests);
    return sql<{ i: number }[]>`
      WITH req AS (
        SELECT * FROM unnest(
          ${requests.map((q) => q.kind)}::text[],
          ${requests.map((q) => q.id)}::text[],
          ${requests.map((q) => q.epoch)}::bigint[],
          ${requests.map((q) => q.expectedVersion)}::bigint[],
          ${requests.map((q) => q.newVersion)}::bigint[],
          ${requests.map((q) => q.state)}::text[]
        ) WITH ORDINALITY AS r (kind, id, epoch, expected_version, new_version, state, i)
      ),
      locked AS MATERIALIZED (
        SELECT req.* FROM concord_entities AS e JOIN req ON e.kind = req.kind AND e.id = req.id
        ORDER BY e.kind, e.id
        FOR UPDATE OF e
      )
      UPDATE concord_entities AS e SET state = coalesce(l.state, e.state), version = l.new_version
      FROM locked AS l
      WHERE e.kind = l.kind AND e.id = l.id AND e.epoch = l.epoch AND e.version = l.expected_version
      RETURNING l.i`;
  }

  /**
   * writeRound for a round in which some requests carry idempotency keys: the same fenced
   * update, plus an INSERT of the keys joined to the rows the UPDATE returned, in one
   * statement. So a key goes in if, and only if, its request's update applied, atomically
   * with it. (Rounds hold each entity once, and keys are distinct per request, so no key row
   * is touched twice by the statement.)
   */
  private writeRoundWithKeys(sql: Queryable, requests: WriteRequest[]) {
    const positions: number[] = [];
    const keys: string[] = [];
    const fingerprints: string[] = [];
    const replies: (string | null)[] = [];
    requests.forEach((request, r) => {
      for (const record of request.keys ?? []) {
        positions.push(r + 1);
        keys.push(record.key);
        fingerprints.push(record.fingerprint);
        replies.push(record.reply);
      }
    });
    return sql<{ i: number }[]>`
      WITH req AS (
        SELECT * FROM unnest(
          ${requests.map((q) => q.kind)}::text[],
          ${requests.map((q) => q.id)}::text[],
          ${requests.map((q) => q.epoch)}::bigint[],
          ${requests.map((q) => q.expectedVersion)}::bigint[],
          ${requests.map((q) => q.newVersion)}::bigint[],
          ${requests.map((q) => q.state)}::text[]
        ) WITH ORDINALITY AS r (kind, id, epoch, expected_version, new_version, state, i)
      ),
      locked AS MATERIALIZED (
        SELECT req.* FROM concord_entities AS e JOIN req ON e.kind = req.kind AND e.id = req.id
        ORDER BY e.kind, e.id
        FOR UPDATE OF e
      ),
      updated AS (
        UPDATE concord_entities AS e SET state = coalesce(l.state, e.state), version = l.new_version
        FROM locked AS l
        WHERE e.kind = l.kind AND e.id = l.id AND e.epoch = l.epoch AND e.version = l.expected_version
        RETURNING l.i, l.kind, l.id
      ),
      keyed AS (
        INSERT INTO concord_idempotency AS k (kind, id, key, fingerprint, reply, created_at)
        SELECT u.kind, u.id, x.key, x.fingerprint, x.reply, c.now
        FROM unnest(
          ${positions}::bigint[],
          ${keys}::text[],
          ${fingerprints}::text[],
          ${replies}::text[]
        ) AS x (i, key, fingerprint, reply)
        JOIN updated AS u ON u.i = x.i
        -- One clock reading for the statement: the keys of one write share their time.
        CROSS JOIN (SELECT ${this.clock()} AS now) AS c
        ORDER BY u.kind, u.id, x.key
        ON CONFLICT (kind, id, key) DO UPDATE SET
          fingerprint = excluded.fingerprint, reply = excluded.reply, created_at = excluded.created_at
      )
      SELECT i FROM updated`;
  }

  private async createMigrationsTable(): Promise<void> {
    // Concurrent `CREATE TABLE IF NOT EXISTS` can still collide in the catalogs (unique
    // violation on pg_type, or duplicate table); the loser simply tries again.
    for (let attempt = 1; ; attempt++) {
      try {
        await this.sql.unsafe(MIGRATIONS_TABLE.postgres);
        return;
      } catch (err) {
        if (attempt >= 5 || !isPgError(err, ['23505', '42P07', '42710'])) throw err;
      }
    }
  }

  /**
   * One migration = one transaction that first inserts its version row. A concurrent migrator
   * inserting the same version blocks on the primary key until the first one finishes; it then
   * gets a unique violation (the migration is applied) or, if the first one rolled back,
   * proceeds to apply it itself. No session-level lock is needed.
   */
  private async applyMigration(migration: Migration): Promise<void> {
    try {
      await this.begin(async (tx) => {
        await tx`
          INSERT INTO concord_migrations (version, applied_at) VALUES (${migration.version}, ${this.clock()})`;
        await tx.unsafe(migration.postgres);
      });
    } catch (err) {
      if (isPgError(err, ['23505']) && err.constraint_name === 'concord_migrations_pkey') return;
      throw err;
    }
  }
}

type Round<T> = { index: number; request: T }[];

function hasKeys(request: WriteRequest): boolean {
  return request.keys !== undefined && request.keys.length > 0;
}

function hasEvents(request: WriteRequest): boolean {
  return request.append !== undefined && request.append.events.length > 0;
}

/** Thrown inside a write transaction to roll it back: these requests (batch indexes) hit a taken event version. */
class EventCollision extends Error {
  constructor(readonly requests: ReadonlySet<number>) {
    super('event version taken');
  }
}

/** A PostgreSQL event log cursor is `tx:position`; the start is `0:0`. */
function parsePgCursor(cursor: LogCursor | null): [tx: string, position: number] {
  if (cursor === null) return ['0', 0];
  const match = /^(\d+):(\d+)$/.exec(cursor);
  if (!match) throw new RangeError(`not a PostgreSQL event log cursor: ${cursor}`);
  return [match[1]!, Number(match[2])];
}

/**
 * Splits a batch into rounds in which no (kind, id) occurs twice (one SQL statement cannot
 * update a row twice); the requests for one key keep their order across rounds. Almost every
 * batch is a single round, i.e. a single statement.
 */
function intoRounds<T extends { kind: string; id: string }>(requests: readonly T[]): Round<T>[] {
  const seen = new Map<string, number>();
  const rounds: Round<T>[] = [];
  requests.forEach((request, index) => {
    const key = entityKey(request.kind, request.id);
    const r = seen.get(key) ?? 0;
    seen.set(key, r + 1);
    let round = rounds[r];
    if (!round) {
      round = [];
      rounds[r] = round;
    }
    round.push({ index, request });
  });
  return rounds;
}

function entityKey(kind: string, id: string): string {
  return JSON.stringify([kind, id]);
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

function isPgError(err: unknown, codes: string[]): err is postgres.PostgresError {
  return err instanceof postgres.PostgresError && codes.includes(err.code);
}
