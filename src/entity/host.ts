import { Moved } from '../cluster/moved.js';
import type { ShardHost } from '../cluster/shard-manager.js';
import { ConcordError, HandlerError, IdempotencyKeyReused, StoreUnavailable, Unavailable } from '../errors.js';
import type { Logger } from '../logger.js';
import type {
  ActivationRequest,
  ActivationResult,
  IdempotencyRecord,
  NewEvent,
  Store,
  WriteRequest,
} from '../store/types.js';
import { TickBatcher } from './batcher.js';
import type { EntityDefinition, Handler, TurnContext } from './define.js';
import {
  fingerprint,
  KeyMemory,
  type KnownKey,
  MAX_IDEMPOTENCY_KEY_LENGTH,
  replayOf,
  replyText,
} from './idempotency.js';
import type { AppendingTurnContext, LoadedState } from './persistence.js';

/**
 * The entity host: the live entities of the shards this node owns.
 *
 * - Activation is a fenced claim of the entity's row (batched per tick): the row's
 *   epoch is raised to the shard's epoch, refused if a newer owner already raised it.
 * - One entity runs one batch of turns at a time. The turns queued while the previous
 *   batch was committing run back to back on the in-memory state; if any changed the
 *   state, ONE fenced write covers them all (version + number of changes), and no reply
 *   of the batch is released before that write is durable. Reads are answered from
 *   memory, and only after checking the lease is still valid (self-fencing).
 * - A write refused by the fence means a newer owner exists: nothing was written, the
 *   entity is dropped and the callers retry at the new owner.
 * - A write whose outcome is unknown (store error) drops the entity (the next call
 *   re-reads the store) and fails its callers with StoreUnavailable.
 * - Kinds with persistence hooks (event-sourced entities, see entity/persistence.ts) differ
 *   only in what is loaded after the claim, what the row's text is, and that a write also
 *   appends the batch's events in the same transaction (refused like a fence when a version
 *   is taken; the callers then retry and the entity is re-activated on fresh events).
 * - Idempotency keys (CallOptions.idempotencyKey): a keyed turn that changes the state records
 *   `{key, fingerprint, reply}` in the batch's fenced write, so the key commits with the change
 *   or not at all. Before a batch with keyed turns runs, the activation loads its entity's keys
 *   (once, after its fenced claim: every key an older owner committed is visible by then) and
 *   then answers a known key from memory instead of running the handler again — the stored
 *   reply when the request matches, IdempotencyKeyReused when it does not. Keys written by this
 *   activation are remembered once their write has committed. A keyed turn that changed
 *   nothing records nothing: it applied nothing, so running it again on a retry is harmless.
 *   Unkeyed calls never touch any of this.
 */

/** What the host needs to know about shard ownership (implemented by the shard manager). */
export interface OwnershipGuard {
  /** May new calls for this shard be admitted? */
  canServe(shard: number): boolean;
  /** The epoch this node holds the shard at, or null. Admitted turns keep running while draining. */
  heldEpoch(shard: number): number | null;
  /** Is the node's lease valid right now (local monotonic deadline)? */
  leaseValid(): boolean;
  ownerOf(shard: number): { owner: string | null; epoch: number };
  /** A write for this shard was refused by the fence: look at the shard map again soon. */
  suspect(shard: number): void;
}

export interface HostOptions {
  /** Passivate an entity after this long without calls. */
  idleTimeoutMs: number;
  /** Passivate the least recently used idle entities above this many. */
  maxActiveEntities: number;
  /** Most turns folded into one write. */
  maxTurnsPerBatch: number;
  /** Concurrent group-commit transactions. */
  maxConcurrentCommits: number;
  /** Concurrent activation batches (default: maxConcurrentCommits). */
  maxConcurrentActivations?: number;
  /** This node's name, recorded with the events it appends. */
  nodeName?: string;
  /** Idempotency keys are kept at least this long (store clock); older ones are swept. Default 24 h. */
  idempotencyWindowMs?: number;
  /** Keys one active entity remembers in memory; beyond that, misses are looked up in the store. Default 10,000. */
  maxIdempotencyKeysPerEntity?: number;
}

export const DEFAULT_IDEMPOTENCY_WINDOW_MS = 24 * 60 * 60 * 1000;
export const DEFAULT_IDEMPOTENCY_KEYS_PER_ENTITY = 10_000;
/** Keys deleted per sweep statement, and statements per sweep at most. */
const PRUNE_BATCH = 1000;
const PRUNE_ROUNDS = 10;

interface Turn {
  handler: Handler<unknown>;
  message: unknown;
  deadline: number;
  /** The call's idempotency key, if any (see CallOptions.idempotencyKey). */
  idempotencyKey?: string;
  /** With a key: the fingerprint of [handler name, message]. */
  fingerprint?: string;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/** One live entity. Kept small: a million of them must fit in memory. */
class Activation {
  state: unknown = undefined;
  version = 0;
  /**
   * The row's version as last read or written: what the next fenced write expects. Always
   * equal to `version`, except for an event-sourced entity that caught up on events appended
   * by an outside writer (its stream is then ahead of its row until its next write).
   */
  rowVersion = 0;
  /** Event-sourced entities: the version the row's snapshot covers. */
  snapshotVersion = 0;
  ready = false;
  running = false;
  dead = false;
  queue: Turn[] | null = null;
  lastUsed: number;
  /** The entity's idempotency keys; null until the first keyed call of this activation. */
  keys: KeyMemory | null = null;

  constructor(
    readonly definition: EntityDefinition,
    readonly id: string,
    readonly shard: number,
    readonly epoch: number,
    now: number,
  ) {
    this.lastUsed = now;
  }

  get idle(): boolean {
    return !this.running && this.queue === null && (this.ready || this.dead);
  }
}

export interface HostStats {
  activations: number;
  passivations: number;
  turns: number;
  commits: number;
  fenced: number;
  /** Keyed calls answered with the reply stored under their key (the handler did not run). */
  replays: number;
}

export class EntityHost implements ShardHost {
  private readonly shards: (Map<string, Activation> | undefined)[];
  private readonly drainWaiters = new Map<number, () => void>();
  private readonly activator: TickBatcher<ActivationRequest, ActivationResult>;
  private readonly writer: TickBatcher<WriteRequest, boolean>;
  private readonly sweepTimer: NodeJS.Timeout;
  private readonly pruneTimer: NodeJS.Timeout;
  private pruning = false;
  private readonly store: Store;
  private readonly keyWindowMs: number;
  private readonly keysPerEntity: number;
  private activeCount = 0;
  readonly stats: HostStats = {
    activations: 0,
    passivations: 0,
    turns: 0,
    commits: 0,
    fenced: 0,
    replays: 0,
  };

  constructor(
    private readonly definitions: ReadonlyMap<string, EntityDefinition>,
    store: Store,
    private readonly guard: OwnershipGuard,
    private readonly options: HostOptions,
    private readonly logger: Logger,
  ) {
    this.shards = [];
    this.store = store;
    this.activator = new TickBatcher(
      (requests) => store.activate(requests),
      options.maxConcurrentActivations ?? options.maxConcurrentCommits,
      512,
    );
    this.writer = new TickBatcher(
      (requests) => {
        this.stats.commits++;
        return store.write(requests);
      },
      options.maxConcurrentCommits,
      1024,
    );
    const sweepEvery = Math.max(1000, Math.min(30_000, options.idleTimeoutMs / 2));
    this.sweepTimer = setInterval(() => this.passivateIdle(), sweepEvery);
    this.sweepTimer.unref();
    this.keyWindowMs = options.idempotencyWindowMs ?? DEFAULT_IDEMPOTENCY_WINDOW_MS;
    this.keysPerEntity = options.maxIdempotencyKeysPerEntity ?? DEFAULT_IDEMPOTENCY_KEYS_PER_ENTITY;
    if (!(this.keyWindowMs > 0) || !Number.isSafeInteger(this.keysPerEntity) || this.keysPerEntity < 1) {
      throw new RangeError('idempotencyWindowMs and maxIdempotencyKeysPerEntity must be positive');
    }
    const pruneEvery = Math.max(1000, Math.min(60_000, Math.round(this.keyWindowMs / 10)));
    this.pruneTimer = setInterval(() => void this.pruneKeys(), pruneEvery);
    this.pruneTimer.unref();
  }

  get active(): number {
    return this.activeCount;
  }

  /**
   * Run `handlerName` on entity (kind, id) of `shard`, which the caller believes this node
   * owns. Rejects with Moved (retryable, nothing executed) when it does not.
   */
  invoke(
    kind: string,
    id: string,
    shard: number,
    handlerName: string,
    message: unknown,
    deadline: number,
    idempotencyKey?: string,
  ): Promise<unknown> {
    const definition = this.definitions.get(kind);
    if (!definition) {
      return Promise.reject(new ConcordError('UNKNOWN_ENTITY_KIND', `unknown entity kind "${kind}"`));
    }
    const handler = Object.hasOwn(definition.handlers, handlerName) ? definition.handlers[handlerName] : undefined;
    if (!handler) {
      return Promise.reject(
        new ConcordError('UNKNOWN_HANDLER', `entity kind "${kind}" has no handler "${handlerName}"`),
      );
    }
    if (!this.guard.canServe(shard)) return Promise.reject(this.moved(shard));

    const key = kind + '\u0000' + id;
    let map = this.shards[shard];
    if (!map) {
      map = new Map();
      this.shards[shard] = map;
    }
    let print: string | undefined;
    if (idempotencyKey !== undefined) {
      if (
        typeof idempotencyKey !== 'string' ||
        idempotencyKey.length === 0 ||
        idempotencyKey.length > MAX_IDEMPOTENCY_KEY_LENGTH
      ) {
        return Promise.reject(
          new ConcordError(
            'BAD_MESSAGE',
            `an idempotency key must be a string of 1-${MAX_IDEMPOTENCY_KEY_LENGTH} characters`,
          ),
        );
      }
      try {
        print = fingerprint(handlerName, message);
      } catch (error) {
        return Promise.reject(
          new ConcordError(
            'BAD_MESSAGE',
            `a call with an idempotency key needs a JSON-serialisable message: ${String(error)}`,
          ),
        );
      }
    }
    const target = map.get(key) ?? this.activate(definition, id, shard, key, map);
    if (!target) return Promise.reject(this.moved(shard));
    if (print !== undefined) target.keys ??= new KeyMemory(this.keysPerEntity);
    return new Promise<unknown>((resolve, reject) => {
      const turn: Turn = { handler: handler as Handler<unknown>, message, deadline, resolve, reject };
      if (print !== undefined) {
        turn.idempotencyKey = idempotencyKey;
        turn.fingerprint = print;
      }
      if (target.queue === null) target.queue = [turn];
      else target.queue.push(turn);
      if (target.ready && !target.running) this.run(target, key);
    });
  }

  // ---- ShardHost ------------------------------------------------------------

  acquired(_shard: number, _epoch: number): void {
    // Entities are activated lazily on their first call.
  }

  drain(shard: number): Promise<void> {
    // New calls are already refused (the shard manager marks the shard draining);
    // wait for the admitted ones to finish, then passivate everything.
    return new Promise<void>((resolve) => {
      const check = () => {
        const map = this.shards[shard];
        if (!map) return true;
        for (const activation of map.values()) if (!activation.idle) return false;
        return true;
      };
      const finish = () => {
        this.drainWaiters.delete(shard);
        this.removeShard(shard, null);
        resolve();
      };
      if (check()) return finish();
      this.drainWaiters.set(shard, () => {
        if (check()) finish();
      });
    });
  }

  drop(shard: number): void {
    this.drainWaiters.get(shard)?.();
    this.removeShard(shard, this.moved(shard));
  }

  /** Deactivate everything (node stopping). Queued calls fail as moved so callers retry elsewhere. */
  dropAll(): void {
    for (let shard = 0; shard < this.shards.length; shard++) if (this.shards[shard]) this.drop(shard);
  }

  close(): void {
    clearInterval(this.sweepTimer);
    clearInterval(this.pruneTimer);
  }

  /**
   * The sweep: delete keys older than the window, a batch at a time (an indexed DELETE … LIMIT),
   * a few batches per run. Every node runs it; the store makes concurrent sweeps harmless.
   */
  async pruneKeys(): Promise<number> {
    if (this.pruning) return 0;
    this.pruning = true;
    let deleted = 0;
    try {
      for (let round = 0; round < PRUNE_ROUNDS; round++) {
        const n = await this.store.pruneIdempotencyKeys(this.keyWindowMs, PRUNE_BATCH);
        deleted += n;
        if (n < PRUNE_BATCH) break;
      }
    } catch (error) {
      this.logger.debug({ err: String(error) }, 'idempotency key sweep failed; retrying at the next one');
    } finally {
      this.pruning = false;
    }
    return deleted;
  }

  // ---- activation -----------------------------------------------------------

  private activate(
    definition: EntityDefinition,
    id: string,
    shard: number,
    key: string,
    map: Map<string, Activation>,
  ): Activation | null {
    const epoch = this.guard.heldEpoch(shard);
    if (epoch === null) return null;
    let initialState: string;
    try {
      initialState = definition.persistence
        ? definition.persistence.initialRow(id)
        : JSON.stringify(definition.initial(id));
    } catch (error) {
      throw new HandlerError(`initial state of ${definition.kind} is not JSON-serialisable: ${String(error)}`);
    }
    const activation = new Activation(definition, id, shard, epoch, performance.now());
    map.set(key, activation);
    this.activeCount++;
    this.stats.activations++;
    if (this.activeCount > this.options.maxActiveEntities) this.evictLeastRecentlyUsed();

    this.activator.submit({ kind: definition.kind, id, epoch, initialState }).then(
      (result) => {
        if (activation.dead) return;
        if (!result.ok) {
          // The row carries a newer epoch: someone else owns this entity now.
          this.stats.fenced++;
          this.guard.suspect(shard);
          this.kill(activation, key, this.moved(shard));
          return;
        }
        if (definition.persistence) {
          // The claim above fenced every older owner out; only now is the rest loaded.
          definition.persistence.load(id, result, this.store).then(
            (loaded) => {
              if (!activation.dead) this.ready(activation, key, loaded, result.version);
            },
            (error: unknown) => this.activationFailed(activation, key, error),
          );
          return;
        }
        const state = JSON.parse(result.state);
        this.ready(
          activation,
          key,
          { state, version: result.version, snapshotVersion: result.version },
          result.version,
        );
      },
      (error: unknown) => this.activationFailed(activation, key, error),
    );
    return activation;
  }

  private ready(activation: Activation, key: string, loaded: LoadedState, rowVersion: number): void {
    activation.state = loaded.state;
    activation.version = loaded.version;
    activation.rowVersion = rowVersion;
    activation.snapshotVersion = loaded.snapshotVersion;
    activation.ready = true;
    if (activation.queue !== null && !activation.running) this.run(activation, key);
  }

  private activationFailed(activation: Activation, key: string, error: unknown): void {
    if (activation.dead) return;
    const { kind } = activation.definition;
    this.logger.warn({ kind, id: activation.id, err: String(error) }, 'activation failed');
    // Nothing ran: the turns queued behind the activation were never applied.
    this.kill(
      activation,
      key,
      new StoreUnavailable(`could not load ${kind}/${activation.id}: the store failed`, { maybeApplied: false }),
    );
  }

  // ---- turns ----------------------------------------------------------------

  /** Runs the activation's queued turns, batch after batch, until its queue is empty. */
  private run(activation: Activation, key: string): void {
    activation.running = true;
    this.runQueued(activation, key);
  }

  /**
   * The loop of `run`, as plain calls while batches complete synchronously (reads answered from
   * memory); a batch that has to wait resumes the loop when it settles.
   */
  private runQueued(activation: Activation, key: string): void {
    try {
      while (activation.queue !== null && !activation.dead) {
        const queue = activation.queue;
        const batch =
          queue.length <= this.options.maxTurnsPerBatch ? queue : queue.splice(0, this.options.maxTurnsPerBatch);
        if (batch === queue) activation.queue = null;
        if (!this.stillOwned(activation)) {
          for (const turn of batch) turn.reject(this.moved(activation.shard));
          continue;
        }
        const pending = this.runBatch(activation, key, batch);
        if (pending !== undefined) {
          pending.then(
            () => this.runQueued(activation, key),
            (error: unknown) => {
              this.logger.error(
                { kind: activation.definition.kind, id: activation.id, err: String(error) },
                'batch failed',
              );
              this.endRun(activation);
            },
          );
          return;
        }
      }
    } catch (error) {
      this.endRun(activation);
      throw error;
    }
    this.endRun(activation);
  }

  private endRun(activation: Activation): void {
    activation.running = false;
    activation.lastUsed = performance.now();
    if (activation.queue !== null && activation.dead) {
      const moved = this.moved(activation.shard);
      for (const turn of activation.queue) turn.reject(moved);
      activation.queue = null;
    }
    this.drainWaiters.get(activation.shard)?.();
  }

  /**
   * Runs one batch. Returns a promise only when something in it is asynchronous (keys to read,
   * a handler that returns a promise, a write to commit): a batch of synchronous reads settles
   * at once, without the promise and suspended frame an async function costs on every call.
   */
  private runBatch(activation: Activation, key: string, batch: Turn[]): Promise<void> | undefined {
    const memory = activation.keys;
    if (memory !== null && hasKeyedTurn(batch)) return this.runKeyedBatch(activation, key, batch, memory);
    return this.runTurnsFrom(activation, key, batch, null);
  }

  /** A batch with keyed turns: the keys it needs are made known first (see prepareKeys). */
  private async runKeyedBatch(activation: Activation, key: string, batch: Turn[], memory: KeyMemory): Promise<void> {
    const { definition, id } = activation;
    let lookedUp: Map<string, KnownKey> | null;
    try {
      lookedUp = await this.prepareKeys(activation, memory, batch);
    } catch (error) {
      // Nothing ran: the turns certainly were not applied.
      this.logger.warn({ kind: definition.kind, id, err: String(error) }, 'reading idempotency keys failed');
      const failure = new StoreUnavailable(
        `could not read the idempotency keys of ${definition.kind}/${id}: the store failed`,
        { maybeApplied: false },
      );
      for (const turn of batch) turn.reject(failure);
      return;
    }
    if (activation.dead || !this.stillOwned(activation)) {
      const moved = this.moved(activation.shard);
      for (const turn of batch) turn.reject(moved);
      return;
    }
    await this.runTurnsFrom(activation, key, batch, lookedUp);
  }

  /** Runs the batch's turns in order, then completes it (write or lease check, then replies). */
  private runTurnsFrom(
    activation: Activation,
    key: string,
    batch: Turn[],
    lookedUp: Map<string, KnownKey> | null,
  ): Promise<void> | undefined {
    const tally = new BatchTally(activation.version, activation.state, batch.length, lookedUp);
    const now = performance.now();
    const waiting = this.runTurns(activation, batch, tally, 0, now);
    if (waiting !== null) return this.finishAsynchronously(activation, key, batch, tally, now, waiting);
    return this.complete(activation, key, batch, tally);
  }

  /** The rest of a batch whose handler `waiting` answered with a promise. */
  private async finishAsynchronously(
    activation: Activation,
    key: string,
    batch: Turn[],
    tally: BatchTally,
    now: number,
    first: WaitingTurn,
  ): Promise<void> {
    let waiting: WaitingTurn | null = first;
    while (waiting !== null) {
      const { index, scope } = waiting;
      try {
        const value = await waiting.reply;
        this.afterHandler(activation, batch[index]!, index, tally, scope, value);
      } catch (error) {
        // A failing handler changes nothing: its setState, if any, is discarded.
        tally.outcomes[index] = { ok: false, error: toHandlerError(error) };
      }
      waiting = this.runTurns(activation, batch, tally, index + 1, now);
    }
    await this.complete(activation, key, batch, tally);
  }

  /**
   * Runs turns `from`, `from + 1`, … on the batch's state, each seeing the changes of the ones
   * before it. Stops at a handler that answers with a promise and returns it (its turn is then
   * finished by finishAsynchronously), else returns null when every turn has run.
   */
  private runTurns(
    activation: Activation,
    batch: Turn[],
    tally: BatchTally,
    from: number,
    now: number,
  ): WaitingTurn | null {
    const { definition, id } = activation;
    const memory = activation.keys;
    for (let i = from; i < batch.length; i++) {
      const turn = batch[i]!;
      if (turn.deadline <= now) {
        // Its deadline passed while it queued: it never ran, so it certainly was not applied.
        tally.outcomes[i] = {
          ok: false,
          error: new Unavailable(`call to ${definition.kind}/${id} expired before it ran; it was not applied`),
        };
        continue;
      }
      const idempotencyKey = turn.idempotencyKey;
      if (idempotencyKey !== undefined) {
        const seen =
          tally.batchKeys?.get(idempotencyKey) ?? memory!.get(idempotencyKey) ?? tally.lookedUp?.get(idempotencyKey);
        if (seen !== undefined) {
          // A replay: the change this key guards is committed (or commits with this batch).
          if (seen.fingerprint === turn.fingerprint) this.stats.replays++;
          tally.outcomes[i] =
            seen.fingerprint === turn.fingerprint
              ? { ok: true, value: replayOf(seen) }
              : {
                  ok: false,
                  error: new IdempotencyKeyReused(
                    `idempotency key ${JSON.stringify(idempotencyKey)} was already used on ${definition.kind}/${id} with another request; nothing was applied`,
                    { key: idempotencyKey },
                  ),
                };
          continue;
        }
      }
      const baseVersion = tally.baseVersion + tally.changes;
      const scope = definition.persistence
        ? new AppendingTurnScope(definition.kind, id, baseVersion)
        : new TurnScope(definition.kind, id, baseVersion);
      try {
        const value = turn.handler(tally.state, turn.message as never, scope);
        if (isThenable(value)) return { index: i, scope, reply: value };
        this.afterHandler(activation, turn, i, tally, scope, value);
      } catch (error) {
        // A failing handler changes nothing: its setState, if any, is discarded.
        tally.outcomes[i] = { ok: false, error: toHandlerError(error) };
      }
    }
    return null;
  }

  /** Folds a handler's answer (`value`) and its changes (`scope`) into the batch. */
  private afterHandler(
    activation: Activation,
    turn: Turn,
    index: number,
    tally: BatchTally,
    scope: TurnScope,
    value: unknown,
  ): void {
    if (scope.increments > 0) {
      const idempotencyKey = turn.idempotencyKey;
      if (idempotencyKey !== undefined) {
        // The reply is stored with the key: it must be JSON, checked before the change is
        // folded in, so that only this turn fails (and changes nothing) when it is not.
        let reply: string | null;
        try {
          reply = replyText(value);
        } catch (error) {
          const { kind } = activation.definition;
          tally.outcomes[index] = {
            ok: false,
            error: new HandlerError(
              `the reply of ${kind}/${activation.id} is not JSON-serialisable, so it cannot be kept with its idempotency key; nothing was applied: ${String(error)}`,
            ),
          };
          return;
        }
        const record: IdempotencyRecord = { key: idempotencyKey, fingerprint: turn.fingerprint!, reply };
        tally.records ??= [];
        tally.records.push(record);
        tally.batchKeys ??= new Map();
        tally.batchKeys.set(idempotencyKey, record);
      }
      tally.state = scope.next;
      tally.changes += scope.increments;
      if (scope.appended !== null) {
        tally.events ??= [];
        tally.events.push(...scope.appended);
      }
    }
    tally.outcomes[index] = { ok: true, value };
  }

  /**
   * After every turn has run: a batch that changed the state is written (fenced) before any
   * reply is released; a batch of reads is answered only while the lease is valid.
   */
  private complete(activation: Activation, key: string, batch: Turn[], tally: BatchTally): Promise<void> | undefined {
    this.stats.turns += batch.length;
    if (tally.changes > 0) return this.commit(activation, key, batch, tally);
    if (!this.guard.leaseValid()) {
      // Self-fencing: a read is answered only while no one else can have claimed the shard.
      const moved = this.moved(activation.shard);
      for (const turn of batch) turn.reject(moved);
      return undefined;
    }
    settle(batch, tally.outcomes);
    return undefined;
  }

  /** One fenced write of the batch's changes; the replies are released once it is durable. */
  private async commit(activation: Activation, key: string, batch: Turn[], tally: BatchTally): Promise<void> {
    const { definition, id } = activation;
    const persistence = definition.persistence;
    const newVersion = tally.baseVersion + tally.changes;
    let stateText: string | null;
    try {
      stateText = persistence
        ? persistence.snapshot(tally.state, newVersion, activation.snapshotVersion)
        : JSON.stringify(tally.state);
    } catch (error) {
      const failure = new HandlerError(
        `new state of ${definition.kind}/${id} is not JSON-serialisable: ${String(error)}`,
      );
      for (const turn of batch) turn.reject(failure);
      return;
    }
    const request: WriteRequest = {
      kind: definition.kind,
      id,
      epoch: activation.epoch,
      // The fence: the row must still be exactly as this activation last saw it.
      expectedVersion: activation.rowVersion,
      newVersion,
      state: stateText,
    };
    if (tally.events !== null && persistence) {
      // Same transaction as the fenced update, at versions baseVersion+1 … newVersion.
      request.append = {
        stream: persistence.stream(id),
        node: this.options.nodeName ?? 'unknown',
        events: tally.events,
      };
    }
    // Same transaction too, and only if the fenced update applies.
    if (tally.records !== null) request.keys = tally.records;
    let applied: boolean;
    try {
      applied = await this.writer.submit(request);
    } catch (error) {
      // Unknown outcome: the transaction may or may not have committed. Forget the entity
      // so the next call re-reads the truth, and tell these callers we do not know.
      this.logger.warn({ kind: definition.kind, id, err: String(error) }, 'write failed; outcome unknown');
      this.kill(activation, key, null);
      const failure = new StoreUnavailable(
        `write of ${definition.kind}/${id} failed; it may or may not have been applied`,
      );
      for (const turn of batch) turn.reject(failure);
      return;
    }
    if (!applied) {
      // Fenced: a newer owner activated the entity, or (event-sourced) someone appended to
      // its stream. Nothing was written; callers retry, at the new owner or here on a fresh
      // activation that has caught up on the stream.
      this.stats.fenced++;
      this.guard.suspect(activation.shard);
      const moved = this.moved(activation.shard);
      this.kill(activation, key, moved);
      for (const turn of batch) turn.reject(moved);
      return;
    }
    activation.state = tally.state;
    activation.version = newVersion;
    activation.rowVersion = newVersion;
    if (stateText !== null) activation.snapshotVersion = newVersion;
    // Committed: from now on a retry with one of these keys is answered from memory.
    if (tally.records !== null) for (const record of tally.records) activation.keys!.remember(record);
    settle(batch, tally.outcomes);
  }

  /**
   * Make sure the activation can tell every key of this batch apart: load the entity's keys
   * once (this runs after the activation's fenced claim, so every key an older owner committed
   * is visible), and when memory does not hold them all, look up the batch's unknown keys.
   * Loads every key the sweep has not deleted yet (notBefore 0): the sweep alone decides, on
   * the store's clock, when a key is forgotten, so no node clock is compared with the window.
   */
  private async prepareKeys(
    activation: Activation,
    memory: KeyMemory,
    batch: Turn[],
  ): Promise<Map<string, KnownKey> | null> {
    const { kind } = activation.definition;
    if (!memory.loaded) {
      memory.load(await this.store.readIdempotencyKeys(kind, activation.id, 0, memory.limit + 1));
    }
    if (memory.complete) return null;
    const missing = new Set<string>();
    for (const turn of batch) {
      if (turn.idempotencyKey !== undefined && memory.get(turn.idempotencyKey) === undefined) {
        missing.add(turn.idempotencyKey);
      }
    }
    if (missing.size === 0) return null;
    const found = new Map<string, KnownKey>();
    const rows = await Promise.all([...missing].map((key) => this.store.readIdempotencyKey(kind, activation.id, key)));
    for (const row of rows) {
      if (row === null) continue;
      found.set(row.key, { fingerprint: row.fingerprint, reply: row.reply });
      memory.remember(row);
    }
    return found;
  }

  /** Admitted turns run while the lease is valid and the shard is still held at the activation's epoch. */
  private stillOwned(activation: Activation): boolean {
    return this.guard.leaseValid() && this.guard.heldEpoch(activation.shard) === activation.epoch;
  }

  // ---- passivation ----------------------------------------------------------

  private kill(activation: Activation, key: string, error: unknown): void {
    if (activation.dead) return;
    activation.dead = true;
    const map = this.shards[activation.shard];
    if (map?.get(key) === activation) {
      map.delete(key);
      this.activeCount--;
    }
    if (error !== null && activation.queue !== null && !activation.running) {
      for (const turn of activation.queue) turn.reject(error);
      activation.queue = null;
    }
    this.drainWaiters.get(activation.shard)?.();
  }

  private removeShard(shard: number, error: unknown): void {
    const map = this.shards[shard];
    if (!map) return;
    for (const activation of map.values()) {
      activation.dead = true;
      if (error !== null && activation.queue !== null && !activation.running) {
        for (const turn of activation.queue) turn.reject(error);
        activation.queue = null;
      }
    }
    this.activeCount -= map.size;
    this.stats.passivations += map.size;
    this.shards[shard] = undefined;
  }

  private passivateIdle(): void {
    const cutoff = performance.now() - this.options.idleTimeoutMs;
    for (const map of this.shards) {
      if (!map) continue;
      for (const [key, activation] of map) {
        if (activation.idle && activation.lastUsed < cutoff) this.passivate(map, key, activation);
      }
    }
  }

  /**
   * Above the cap, passivate idle entities, oldest activations first (Map iteration is
   * insertion order), skipping those used in the last second: an approximate LRU that
   * costs nothing on the call path.
   */
  private evictLeastRecentlyUsed(): void {
    const target = Math.floor(this.options.maxActiveEntities * 0.9);
    const recent = performance.now() - 1000;
    for (const pass of [0, 1]) {
      for (const map of this.shards) {
        if (!map) continue;
        for (const [key, activation] of map) {
          if (this.activeCount <= target) return;
          if (activation.idle && (pass === 1 || activation.lastUsed < recent)) this.passivate(map, key, activation);
        }
      }
    }
  }

  private passivate(map: Map<string, Activation>, key: string, activation: Activation): void {
    activation.dead = true;
    map.delete(key);
    this.activeCount--;
    this.stats.passivations++;
  }

  private moved(shard: number): Moved {
    const { owner, epoch } = this.guard.ownerOf(shard);
    return new Moved(shard, owner, epoch);
  }
}

/** What the turns of one batch did so far. */
class BatchTally {
  /** Version increments so far: one per setState, one per appended event. */
  changes = 0;
  /** Event-sourced kinds: the events of this batch, in order (versions baseVersion+1…). */
  events: NewEvent[] | null = null;
  readonly outcomes: Outcome[];
  /** Keys of this batch's keyed changes, for its write (and for later turns of the batch). */
  records: IdempotencyRecord[] | null = null;
  batchKeys: Map<string, KnownKey> | null = null;

  constructor(
    readonly baseVersion: number,
    /** The state as the batch's turns have left it so far. */
    public state: unknown,
    size: number,
    /** Keys looked up in the store for this batch (memory incomplete). */
    readonly lookedUp: Map<string, KnownKey> | null,
  ) {
    this.outcomes = new Array<Outcome>(size);
  }
}

/**
 * One turn's context, as its handler sees it, and what the handler did through it. One plain
 * object per turn: `setState` (and `append`) are functions made on first use, so that a turn
 * that only reads allocates no closures, and `const { setState } = ctx` still works.
 */
class TurnScope implements TurnContext<unknown> {
  next: unknown = undefined;
  increments = 0;
  appended: readonly NewEvent[] | null = null;
  private setter: ((value: unknown) => void) | null = null;

  constructor(
    readonly kind: string,
    readonly id: string,
    /** The entity's version before this turn (the batch's earlier turns included). */
    private readonly baseVersion: number,
  ) {}

  get version(): number {
    return this.baseVersion + this.increments;
  }

  get setState(): (value: unknown) => void {
    this.setter ??= (value: unknown) => {
      this.next = value;
      this.increments = 1;
    };
    return this.setter;
  }
}

/** The context of a turn of an event-sourced kind: `append` as well. */
class AppendingTurnScope extends TurnScope implements AppendingTurnContext<unknown> {
  private appender: ((value: unknown, events: readonly NewEvent[]) => void) | null = null;

  get append(): (value: unknown, events: readonly NewEvent[]) => void {
    this.appender ??= (value: unknown, events: readonly NewEvent[]) => {
      this.next = value;
      this.increments = events.length;
      this.appended = events;
    };
    return this.appender;
  }
}

/** A turn whose handler answered with a promise. */
interface WaitingTurn {
  index: number;
  scope: TurnScope;
  reply: PromiseLike<unknown>;
}

function settle(batch: Turn[], outcomes: Outcome[]): void {
  for (let i = 0; i < batch.length; i++) {
    const outcome = outcomes[i]!;
    if (outcome.ok) batch[i]!.resolve(outcome.value);
    else batch[i]!.reject(outcome.error);
  }
}

function hasKeyedTurn(batch: Turn[]): boolean {
  for (const turn of batch) if (turn.idempotencyKey !== undefined) return true;
  return false;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}

function toHandlerError(error: unknown): ConcordError {
  if (error instanceof ConcordError) return error;
  if (error instanceof Error) {
    const wrapped = new HandlerError(error.message, { name: error.name });
    return wrapped;
  }
  return new HandlerError(String(error));
}
