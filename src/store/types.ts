/**
 * The store contract. The store is the only authority on membership, shard
 * ownership and entity data; every safety property of concord reduces to the
 * conditional updates described here being atomic in the backend.
 *
 * All times are milliseconds since the Unix epoch *on the store's clock*.
 * Integers (incarnation, epoch, version) are JavaScript numbers (< 2^53).
 */

import type { SharedWriterStatus } from './sqlite-writer.js';

/**
 * A membership row's status:
 * - `joining`: registered (it holds a lease) but not yet a member: it owns nothing and is no
 *   shard's desired owner, until it can reach every member and turns itself `alive`;
 * - `alive`: a member, a candidate owner of shards;
 * - `leaving`: a graceful leave is handing its shards over;
 * - `evicted`: the members that could still reach each other ended its membership (see
 *   evictMember). Its lease can no longer be renewed; it stops serving, acknowledges, and
 *   registers again as `joining` when it can reach the members again.
 */
export type NodeStatus = 'joining' | 'alive' | 'leaving' | 'evicted';

export interface NodeRecord {
  name: string;
  incarnation: number;
  /** host:port of the node's cluster (peer transport) listener. */
  address: string;
  /** Base URL of the node's HTTP API, when it has one. */
  httpAddress: string | null;
  status: NodeStatus;
  leaseExpiresAt: number;
  /**
   * The reporters whose suspicions ended this name's last membership, and when (store clock);
   * kept on the row of a new incarnation until it becomes `alive`, null otherwise.
   */
  evictedBy: string[] | null;
  evictedAt: number | null;
}

/** "`reporter` cannot reach `suspect`", as recorded by the reporter (see reportSuspicions). */
export interface SuspicionRecord {
  reporter: string;
  reporterIncarnation: number;
  suspect: string;
  suspectIncarnation: number;
  /** Store clock when the reporter first recorded it. */
  since: number;
  /** Store clock of the reporter's latest report that still contained it. */
  refreshedAt: number;
}

export interface NodeList {
  /** The store's clock when the list was read. */
  now: number;
  nodes: NodeRecord[];
  /** Every recorded suspicion (the caller judges which are current). */
  suspicions: SuspicionRecord[];
  /**
   * The membership version: bumped by every change of a status or of the set of suspicions
   * (not by lease renewals). evictMember applies only at the version its decision was made on.
   */
  version: number;
}

export type RenewResult =
  | { ok: true; leaseExpiresAt: number }
  /**
   * `expired`: the lease had run out (someone may own our shards); `evicted`: the members ended
   * this incarnation's membership; `gone`: no row for this incarnation.
   */
  | { ok: false; reason: 'expired' | 'evicted' | 'gone' };

export interface SuspectRef {
  name: string;
  incarnation: number;
}

export interface EvictionRequest {
  suspect: string;
  suspectIncarnation: number;
  /** The member deciding (it must be alive with a live lease itself). */
  by: string;
  byIncarnation: number;
  /** The members whose suspicions back the decision (recorded on the row as evictedBy). */
  reporters: string[];
  /** The membership version the decision was made on. */
  expectedVersion: number;
}

export interface ShardRecord {
  shard: number;
  /** Node name of the owner, or null when the shard is free (never claimed or released). */
  owner: string | null;
  ownerIncarnation: number | null;
  /** Incremented by every successful claim. Never decreases. */
  epoch: number;
}

export interface RegisterRequest {
  name: string;
  address: string;
  httpAddress: string | null;
  ttlMs: number;
  /** The new row's status; default `alive`. Nodes register `joining` and promote themselves. */
  status?: 'joining' | 'alive';
}

export type RegisterResult =
  | { ok: true; incarnation: number; leaseExpiresAt: number; now: number }
  /** A live process holds the name; its lease ends at `leaseExpiresAt` (store clock). */
  | { ok: false; incarnation: number; leaseExpiresAt: number; now: number };

export interface ActivationRequest {
  kind: string;
  id: string;
  /** Epoch of the shard as held by the activating node. */
  epoch: number;
  /** JSON text of the initial state, inserted when the entity has no row. */
  initialState: string;
}

export type ActivationResult =
  | { ok: true; state: string; version: number }
  /** The row carries a higher epoch: a newer owner has claimed the entity. */
  | { ok: false };

export interface WriteRequest {
  kind: string;
  id: string;
  epoch: number;
  /** The version the writer read; the write applies only if the row still has it. */
  expectedVersion: number;
  newVersion: number;
  /**
   * JSON text of the new state; null keeps the row's state as it is (an event-sourced entity
   * between two snapshots).
   */
  state: string | null;
  /**
   * Events appended in the same transaction as the row update, at versions
   * `newVersion - events.length + 1 … newVersion` of `append.stream`. If any of those versions
   * already exists, this request applies nothing at all (neither the row nor any event) and
   * reports false, like a fence refusal; the other requests of the batch are unaffected.
   */
  append?: StreamAppend;
  /**
   * Idempotency keys of the turns this write covers (see CallOptions.idempotencyKey), inserted
   * into concord_idempotency in the same transaction as the row update, with `created_at` =
   * the store clock, and only if that update applied (and, with `append`, its events went in):
   * a fenced-out write inserts no key. Keys are distinct within one request. A row already
   * there for (kind, id, key) is replaced (it can only be one older than the window that the
   * sweep has not deleted yet).
   */
  keys?: IdempotencyRecord[];
}

/** One idempotency key recorded with a write (see WriteRequest.keys). */
export interface IdempotencyRecord {
  key: string;
  /** Hex SHA-256 of the request the key was first used with. */
  fingerprint: string;
  /** JSON text of the first reply; null when the handler returned undefined. */
  reply: string | null;
}

/** An idempotency key as stored. `createdAt` is the store's clock at the write (ms). */
export interface StoredIdempotencyKey extends IdempotencyRecord {
  createdAt: number;
}

/** Events a fenced write appends (see WriteRequest.append). */
export interface StreamAppend {
  stream: string;
  /** Name of the node appending (recorded with every event). */
  node: string;
  events: NewEvent[];
}

/** An event to append: its type and its data as JSON text. */
export interface NewEvent {
  type: string;
  data: string;
}

/** An event as stored. `at` is the store's clock at the append (ms). */
export interface StoredEvent {
  stream: string;
  /** 1 for the stream's first event, then consecutive. */
  version: number;
  type: string;
  /** JSON text. */
  data: string;
  /** The node (or outside writer) that appended it. */
  node: string;
  at: number;
}

export interface AppendRequest {
  stream: string;
  /** The stream's version the writer saw: 0 for a stream with no events. */
  expectedVersion: number;
  events: NewEvent[];
  node: string;
}

export type AppendResult =
  /** Appended at expectedVersion + 1 … `version`. */
  | { ok: true; version: number }
  /** The stream's version was not expectedVersion (it was `actualVersion`): nothing was appended. */
  | { ok: false; actualVersion: number };

/**
 * A position in the store-wide event log, opaque to callers (it differs by backend). Reading
 * the log after a cursor never skips an event that commits later: see readEventLog.
 */
export type LogCursor = string;

export interface EventLogPage {
  /** Events in log order (per stream, in version order). */
  events: StoredEvent[];
  /** Pass to the next readEventLog; equals the cursor passed in when there was nothing new. */
  cursor: LogCursor;
}

export interface EntityRow {
  kind: string;
  id: string;
  state: string;
  version: number;
  epoch: number;
}

export type Durability =
  /** Acknowledged writes survive a power loss (SQLite synchronous=FULL, PostgreSQL synchronous_commit=on). */
  | 'strict'
  /** Acknowledged writes survive a crash of any concord process, but the last few ms may be lost on power loss. */
  | 'relaxed';

export interface Store {
  readonly backend: 'sqlite' | 'postgres';
  /**
   * How many write batches a node should have in flight at once (its group commits). More
   * only pays where the store overlaps them: PostgreSQL's pool, or a SQLite shared writer that
   * folds every batch queued meanwhile into its next commit. Batches that each take the file's
   * write lock in turn would only contend for it.
   */
  readonly commitsInFlight: number;
  /**
   * How many activation batches a node should have in flight at once. Activations read and
   * insert on the node's own connection, never through a shared writer: on SQLite each one
   * takes the file's write lock, so one at a time; PostgreSQL's pool overlaps them.
   */
  readonly activationsInFlight: number;
  /**
   * SQLite with a shared writer: this process's role for the file and its counters (see
   * sqlite-writer.ts); null without one. Stores that never have one need not implement it.
   */
  sharedWriterStatus?(): Promise<SharedWriterStatus | null>;

  /** Create or upgrade the schema. Safe to call from many processes at once. */
  migrate(): Promise<void>;
  close(): Promise<void>;
  /** The store's clock. */
  now(): Promise<number>;

  // ---- membership -------------------------------------------------------
  /**
   * Register a new incarnation of node `name` with a lease of ttlMs from the store's now.
   * Succeeds only when no row for the name exists or the existing row's lease has expired;
   * the new incarnation is larger than any earlier one of that name.
   */
  registerNode(req: RegisterRequest): Promise<RegisterResult>;
  /**
   * Extend the lease of (name, incarnation) to now + ttlMs, but only if it has not expired yet
   * and the row is not evicted. Otherwise says why not; the node must then treat everything it
   * owned as lost.
   */
  renewLease(name: string, incarnation: number, ttlMs: number): Promise<RenewResult>;
  /**
   * Set the status of (name, incarnation) to `status` if its current status is one of `from`
   * (an evicted row never changes status). Becoming `alive` also needs a live lease, and clears
   * evictedBy/evictedAt. Bumps the membership version when it applies.
   */
  setNodeStatus(name: string, incarnation: number, status: NodeStatus, from: readonly NodeStatus[]): Promise<boolean>;
  /** Delete the row of (name, incarnation) — a clean leave — and its suspicions. */
  removeNode(name: string, incarnation: number): Promise<void>;
  /** Every row, live or not, the suspicions and the membership version, with the store's now. */
  listNodes(): Promise<NodeList>;
  /** Delete rows whose lease expired more than graceMs ago, and suspicions naming no live row; returns how many rows. */
  pruneNodes(graceMs: number): Promise<number>;
  /**
   * Replace the suspicions reported by (reporter, incarnation) with `suspects`: new ones are
   * recorded with since = now, kept ones refreshed, missing ones deleted. Only an `alive`
   * reporter with a live lease may hold suspicions (anyone else's are deleted). Bumps the
   * membership version when the set changed. Returns the membership as it is afterwards.
   */
  reportSuspicions(reporter: string, incarnation: number, suspects: readonly SuspectRef[]): Promise<NodeList>;
  /**
   * End the membership of (suspect, suspectIncarnation), a compare-and-set: applies only if the
   * membership version is still `expectedVersion`, the suspect is `alive` with a live lease,
   * and the deciding member is `alive` with a live lease. The suspect's row becomes `evicted`
   * (evictedBy = reporters, evictedAt = now) and its lease can no longer be renewed; the lease
   * itself is left to run out, or to be ended by the suspect (acknowledgeEviction) once it has
   * stopped serving, so no one may claim its shards while it might still serve them.
   */
  evictMember(request: EvictionRequest): Promise<boolean>;
  /**
   * The evicted (name, incarnation) has stopped serving: end its lease now (lease_expires_at =
   * now), so that its shards may be claimed at once. Applies only to an evicted row.
   */
  acknowledgeEviction(name: string, incarnation: number): Promise<boolean>;

  // ---- shards -----------------------------------------------------------
  /**
   * Make sure shard rows 0..count-1 exist. The count is fixed at the first call and
   * recorded; a later call with a different count throws ConfigMismatch.
   */
  initShards(count: number): Promise<void>;
  listShards(): Promise<ShardRecord[]>;
  /**
   * Compare-and-set claim: set owner = (owner, ownerIncarnation), epoch = expectedEpoch + 1,
   * only if the row's epoch is still expectedEpoch AND the shard is free: owner is null, or
   * no node row (owner, owner_incarnation) with an unexpired lease (store clock) exists;
   * AND the claimer is an `alive` member with a live lease.
   * Returns the new epoch, or null when the CAS failed.
   */
  claimShard(shard: number, expectedEpoch: number, owner: string, ownerIncarnation: number): Promise<number | null>;
  /** Set owner to null if (owner, ownerIncarnation, epoch) still match. The epoch is kept. */
  releaseShard(shard: number, epoch: number, owner: string, ownerIncarnation: number): Promise<boolean>;

  // ---- entities ---------------------------------------------------------
  /**
   * Fenced activation, batched. For each request, in one transaction:
   * insert (state = initialState, version 0, epoch) if absent; otherwise set epoch = request
   * epoch only if the row's epoch <= request epoch. Returns the row's state and version, or
   * { ok: false } when the row's epoch is higher (a newer owner exists).
   */
  activate(requests: ActivationRequest[]): Promise<ActivationResult[]>;
  /**
   * Fenced write-through, batched (group commit): all requests in one transaction, each
   * `UPDATE … SET state, version = newVersion WHERE kind, id AND epoch = e AND version = expected`.
   * Result i is true when write i applied. Resolves only once the transaction is durable
   * to the configured durability.
   */
  write(requests: WriteRequest[]): Promise<boolean[]>;
  /** Read a row directly (diagnostics, tests, the store-on-every-call baseline). */
  readEntity(kind: string, id: string): Promise<EntityRow | null>;

  // ---- idempotency keys -------------------------------------------------
  /**
   * The idempotency keys of entity (kind, id) created at or after `notBefore` (store clock),
   * newest first, at most `limit` (default: all). Keys are written only together with a
   * committed change (WriteRequest.keys), so once an activation's fenced claim has returned,
   * this sees every key any older owner of the entity committed.
   */
  readIdempotencyKeys(kind: string, id: string, notBefore: number, limit?: number): Promise<StoredIdempotencyKey[]>;
  /** One idempotency key of entity (kind, id), or null. */
  readIdempotencyKey(kind: string, id: string, key: string): Promise<StoredIdempotencyKey | null>;
  /**
   * Delete at most `limit` keys created more than `windowMs` before the store's now; returns
   * how many. Cheap (an index on created_at) and safe to run from every node at once.
   */
  pruneIdempotencyKeys(windowMs: number, limit: number): Promise<number>;

  // ---- events -----------------------------------------------------------
  /**
   * Append to a stream if, and only if, its version is still expectedVersion (compare-and-
   * append; the unique key on (stream, version) makes concurrent appends at one version have
   * exactly one winner). All of the events or none.
   */
  appendEvents(request: AppendRequest): Promise<AppendResult>;
  /** Events of `stream` with version >= fromVersion, in order, at most `limit`. */
  readEvents(stream: string, fromVersion: number, limit: number): Promise<StoredEvent[]>;
  /** The stream's version: its highest event version, 0 when it has none. */
  streamVersion(stream: string): Promise<number>;
  /**
   * The next events of the store-wide log after `cursor` (null: from the start), at most
   * `limit`, optionally only those of streams starting with `streamPrefix`. Only events whose
   * transactions have committed are returned, and an event is never returned after a cursor
   * that is past it, so a reader that follows the cursors sees every event exactly once.
   */
  readEventLog(cursor: LogCursor | null, limit: number, streamPrefix?: string): Promise<EventLogPage>;

  // ---- cluster metadata (concord_meta) -------------------------------------
  // Small named values the runtime keeps about the cluster (the cluster id, the verifiers of
  // the cluster secret, refused joins…). Keys used by the store itself (the shard count, the
  // incarnation high-water mark) are not for these methods to write.

  /** The value stored under `key`, or null when there is none. */
  readMeta(key: string): Promise<string | null>;
  /**
   * Store `value` under `key` unless the key already has a value. Returns the value stored
   * afterwards: `value` when this call inserted it, else the one that was there. Of concurrent
   * first inserts exactly one wins and every caller gets the winner's value.
   */
  insertMetaIfAbsent(key: string, value: string): Promise<string>;
  /**
   * Compare-and-set: replace the value of `key` with `next` only if it is still `expected`.
   * Returns whether it did (false also when the key has no value). Of concurrent CASes from
   * one value exactly one wins.
   */
  compareAndSetMeta(key: string, expected: string, next: string): Promise<boolean>;
}

export interface StoreOptions {
  durability?: Durability;
  /**
   * SQLite with a shared writer: called when this process becomes the file's writer or a
   * follower (at start, and whenever the writer changes), e.g. to log it. Other stores never
   * call it.
   */
  onSharedWriterRole?: (role: 'writer' | 'follower') => void;
}
