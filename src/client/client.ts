import { randomUUID } from 'node:crypto';
import { Pool } from 'undici';
import type { AnyEntityDefinition, EntityDefinition, Handlers, MessageOf, ReplyOf } from '../entity/define.js';
import { type ConcordError, Timeout, Unavailable } from '../errors.js';
import { type EntityCallAnswer, MOVED_STATUS, type MovedAnswer, OWNER_HEADER } from '../http/entity-call-wire.js';
import { type ErrorBody, errorFromAnswer } from './errors.js';
import { exchange } from './http-exchange.js';
import { NodeCalls } from './node-calls.js';
import { type ClusterAnswer, ShardMap } from './shard-map.js';

/**
 * `concord-cluster/client`: call a concord cluster's entities from outside it, each call sent
 * straight to the node that owns the entity.
 *
 * ```ts
 * const client = createClient({ nodes: ['http://10.0.0.1:4001', 'http://10.0.0.2:4001'], entities: [Counter] });
 * const n = await client.ref(Counter, 'c1').add(2); // typed from the definition
 * await client.close();
 * ```
 *
 * It learns the shard map from `GET /cluster`, hashes the entity to its shard as the nodes do,
 * and sends the call over a keep-alive connection pool (undici) to the owner with
 * `Concord-Route: direct`; a node that is not the owner answers MOVED before running anything,
 * and the client corrects its map and calls the owner. Retries happen only when they are safe:
 * MOVED and 503 (`maybeApplied: false`) and a refused connection always; a 504 or a dropped
 * connection (outcome unknown) only for a call with an idempotency key. Every call has a
 * deadline, retries included.
 */

export interface ClientOptions {
  /** Base URLs of some of the cluster's nodes (`http://host:port`); more are learned from the map. */
  nodes: readonly string[];
  /** The entity definitions this client calls (the same modules the nodes run). */
  entities: readonly AnyEntityDefinition[];
  /** Default deadline of a call, retries included, ms. Default 5000. */
  deadlineMs?: number;
  /** How often the shard map is fetched again, ms (it is also fetched after MOVED and errors). Default 5000; 0: never. */
  refreshIntervalMs?: number;
  /**
   * Give calls that carry no idempotency key a fresh one, so that they can be retried after a
   * 504 or a dropped connection: true for every call, or a predicate on (kind, method), e.g. only
   * the handlers that change state (a keyed read stores nothing, but costs a key lookup).
   */
  autoIdempotencyKeys?: boolean | ((kind: string, method: string) => boolean);
  /** Most connections to one node; default: as many as there are calls in flight to it. */
  connectionsPerNode?: number;
}

export interface ClientCallOptions {
  /** This call's deadline, retries included, ms (default: the client's). */
  deadlineMs?: number;
  /** Makes the call safe to retry when its outcome is unknown (see CallOptions.idempotencyKey). */
  idempotencyKey?: string;
}

/** A typed handle on one entity: one method per handler, with the definition's message and reply types. */
export type ClientRef<H> = {
  readonly [K in keyof H]: undefined extends MessageOf<H[K]>
    ? (message?: MessageOf<H[K]>, options?: ClientCallOptions) => Promise<ReplyOf<H[K]>>
    : (message: MessageOf<H[K]>, options?: ClientCallOptions) => Promise<ReplyOf<H[K]>>;
};

export interface ClientStats {
  /** Calls made (each counted once, whatever its retries). */
  calls: number;
  /** Requests sent again after a MOVED, 503, refused connection or (keyed) 504. */
  retries: number;
  /** MOVED answers followed. */
  moved: number;
  /** Requests sent to a node without knowing the owner (the node forwarded them). */
  undirected: number;
  /** Shard maps fetched. */
  refreshes: number;
  /** Batch requests sent (calls that waited for a node together, see NodeCalls), and the calls in them. */
  batches: number;
  batchedCalls: number;
}

const DEFAULT_DEADLINE_MS = 5000;
const DEFAULT_REFRESH_MS = 5000;
/** How long a node that refused a connection is avoided. */
const DOWN_FOR_MS = 1000;
/** A retry is not started with less time than this left. */
const MIN_ATTEMPT_MS = 10;
const BACKOFF_MS = [5, 10, 20, 50, 100, 200];
/** How long a node may take to answer `GET /cluster` or `/healthz`. */
const VIEW_WAIT_MS = 2000;
/** Errors of undici that prove the request never left: safe to send again, anywhere. */
const NOT_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH']);

export class ConcordClient {
  readonly stats: ClientStats = {
    calls: 0,
    retries: 0,
    moved: 0,
    undirected: 0,
    refreshes: 0,
    batches: 0,
    batchedCalls: 0,
  };
  private readonly map = new ShardMap();
  private readonly pools = new Map<string, Pool>();
  private readonly calls = new Map<string, NodeCalls>();
  private readonly downUntil = new Map<string, number>();
  /** Seed URL → the node's name, from its /healthz. */
  private readonly seedNames = new Map<string, string>();
  private readonly kinds: ReadonlySet<string>;
  private readonly seeds: string[];
  private readonly deadlineMs: number;
  private refreshing: Promise<void> | null = null;
  private readonly timer: NodeJS.Timeout | null;
  private nextSeed = 0;
  private firstMapAsked = false;
  private closed = false;

  constructor(private readonly options: ClientOptions) {
    if (options.nodes.length === 0) throw new TypeError('createClient needs at least one node URL');
    this.seeds = options.nodes.map((url) => new URL(url).origin);
    this.kinds = new Set(options.entities.map((e) => e.kind));
    this.deadlineMs = options.deadlineMs ?? DEFAULT_DEADLINE_MS;
    const every = options.refreshIntervalMs ?? DEFAULT_REFRESH_MS;
    this.timer = every > 0 ? setInterval(() => void this.refresh().catch(() => {}), every) : null;
    this.timer?.unref();
  }

  /** A typed handle on entity `id` of `definition`. */
  ref<S, H extends Handlers<S>>(definition: EntityDefinition<S, H>, id: string): ClientRef<H> {
    if (!this.kinds.has(definition.kind)) {
      throw new TypeError(`entity kind "${definition.kind}" is not among the client's entities`);
    }
    const ref: Record<string, (message?: unknown, options?: ClientCallOptions) => Promise<unknown>> = {};
    for (const method of Object.keys(definition.handlers)) {
      ref[method] = (message?: unknown, options?: ClientCallOptions) =>
        this.callByName(definition.kind, id, method, message, options);
    }
    return ref as ClientRef<H>;
  }

  /** The node the client would send a call on (kind, id) to, by its current map (null: unknown). */
  ownerOf(kind: string, id: string): string | null {
    return this.map.ownerOf(kind, id)?.owner ?? null;
  }

  /** Fetch the shard map now (from every seed that answers). */
  refresh(): Promise<void> {
    this.refreshing ??= this.fetchMap().finally(() => {
      this.refreshing = null;
      this.firstMapAsked = true;
    });
    return this.refreshing;
  }

  /** Stop the refresh timer and close every connection. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    const pools = [...this.pools.values()];
    this.pools.clear();
    this.calls.clear();
    await Promise.all(pools.map((pool) => pool.close().catch(() => {})));
  }

  /** Call a handler by name (what `ref` uses). */
  async callByName(
    kind: string,
    id: string,
    method: string,
    message: unknown,
    options: ClientCallOptions = {},
  ): Promise<unknown> {
    if (this.closed) throw new Unavailable('the client is closed; the call was not sent');
    this.stats.calls++;
    const deadline = performance.now() + (options.deadlineMs ?? this.deadlineMs);
    const key = options.idempotencyKey ?? this.autoKey(kind, method);
    // The first calls wait for the first map (or its failure); after that a missing map (a node
    // without shards, such as an `--ownership none` baseline) just means calls go to any node.
    if (!this.firstMapAsked) await this.refreshWithin(deadline);
    const messageJson = message === undefined ? undefined : JSON.stringify(message);
    let last: ConcordError | null = null;
    for (let attempt = 0; ; attempt++) {
      const remaining = deadline - performance.now();
      // Too little time left for a request to be answered: fail with what the last attempt said.
      if (remaining <= 0 || (last !== null && remaining < MIN_ATTEMPT_MS)) {
        throw (
          last ?? new Unavailable(`no node answered for ${kind}/${id} within the deadline; the call was not applied`)
        );
      }
      if (attempt > 0) this.stats.retries++;
      const target = this.targetFor(kind, id);
      if (!target.direct) this.stats.undirected++;
      let status: number;
      let answer: unknown;
      let owner: string | undefined;
      try {
        // Abandoned a little after the node's own deadline, so its 503/504 arrives first.
        const response = await this.nodeCalls(target.url).send({
          kind,
          id,
          method,
          messageJson,
          key,
          deadline,
          direct: target.direct,
        });
        status = response.status;
        answer = response.body;
        owner = response.owner;
      } catch (error) {
        if (isNotSent(error)) {
          // Nothing left this process: avoid that node for a moment and ask another.
          this.downUntil.set(target.url, performance.now() + DOWN_FOR_MS);
          last = new Unavailable(`${target.url} refused the connection; the call was not applied`, {
            node: target.url,
          });
          void this.refresh().catch(() => {});
          continue;
        }
        const timeout = new Timeout(
          `no answer from ${target.url} for ${kind}/${id}.${method} (${describe(error)}); the call may or may not have been applied`,
          { node: target.url },
        );
        if (key === undefined || performance.now() >= deadline) throw timeout;
        last = timeout;
        await this.backoff(attempt, deadline);
        continue;
      }
      if (status === 200) {
        if (owner !== undefined) this.map.applyOwnerHint(kind, id, owner);
        return (answer as EntityCallAnswer | null)?.reply;
      }
      if (status === MOVED_STATUS) {
        const moved = answer as MovedAnswer;
        this.stats.moved++;
        this.map.applyMoved(moved.shard, moved.owner, moved.epoch, moved.ownerUrl);
        if (moved.owner === null || attempt > 1) {
          void this.refresh().catch(() => {});
          await this.backoff(attempt, deadline);
        }
        continue;
      }
      const error = errorFromAnswer(status, answer as ErrorBody | null, target.url);
      if (status === 503 || (status === 504 && key !== undefined)) {
        last = error;
        void this.refresh().catch(() => {});
        await this.backoff(attempt, deadline);
        continue;
      }
      throw error;
    }
  }

  /** Where to send a call: its owner (direct) when known and reachable, else any node (which forwards). */
  private targetFor(kind: string, id: string): { url: string; direct: boolean } {
    const owner = this.map.ownerOf(kind, id);
    if (owner !== null && !this.isDown(owner.url)) return { url: owner.url, direct: true };
    for (let i = 0; i < this.seeds.length; i++) {
      const url = this.seeds[this.nextSeed++ % this.seeds.length]!;
      if (!this.isDown(url)) return { url, direct: false };
    }
    return { url: this.seeds[this.nextSeed++ % this.seeds.length]!, direct: false };
  }

  private isDown(url: string): boolean {
    const until = this.downUntil.get(url);
    if (until === undefined) return false;
    if (until > performance.now()) return true;
    this.downUntil.delete(url);
    return false;
  }

  private nodeCalls(url: string): NodeCalls {
    let calls = this.calls.get(url);
    if (!calls) {
      calls = new NodeCalls(this.pool(url), this.stats);
      this.calls.set(url, calls);
    }
    return calls;
  }

  private pool(url: string): Pool {
    let pool = this.pools.get(url);
    if (!pool) {
      pool = new Pool(url, {
        connections: this.options.connectionsPerNode ?? null,
        pipelining: 1,
        // Below the nodes' keep-alive timeout (72 s), so the node never closes a connection under a request.
        keepAliveTimeout: 30_000,
        keepAliveMaxTimeout: 60_000,
      });
      this.pools.set(url, pool);
    }
    return pool;
  }

  /** Ask every seed that is not known down for its map, in parallel, and fold in every answer. */
  private async fetchMap(): Promise<void> {
    const up = this.seeds.filter((url) => !this.isDown(url));
    const candidates = up.length > 0 ? up : this.seeds;
    const answers = await Promise.allSettled(candidates.map((url) => this.fetchClusterView(url)));
    let learnt = 0;
    let lastError: unknown = null;
    answers.forEach((answer, i) => {
      if (answer.status === 'fulfilled') {
        this.map.learn(answer.value, candidates[i]!);
        learnt++;
      } else {
        lastError = answer.reason;
        if (isNotSent(answer.reason)) this.downUntil.set(candidates[i]!, performance.now() + DOWN_FOR_MS);
      }
    });
    if (learnt === 0) throw new Unavailable(`no node answered GET /cluster (${describe(lastError)})`);
    this.stats.refreshes++;
    await this.nameSeeds();
  }

  private async fetchClusterView(url: string): Promise<ClusterAnswer> {
    const response = await exchange(this.pool(url), { method: 'GET', path: '/cluster' }, VIEW_WAIT_MS, OWNER_HEADER);
    if (response.status !== 200) throw new Error(`GET /cluster answered ${response.status}`);
    return JSON.parse(response.text) as ClusterAnswer;
  }

  /**
   * Nodes started without an advertised HTTP address (a library node that was not told one)
   * have none in `GET /cluster`: the seeds' own URLs are learnt from their `/healthz`, once.
   */
  private async nameSeeds(): Promise<void> {
    const unnamed = this.seeds.filter((url) => !this.seedNames.has(url) && !this.isDown(url));
    await Promise.all(
      unnamed.map(async (url) => {
        try {
          const response = await exchange(
            this.pool(url),
            { method: 'GET', path: '/healthz' },
            VIEW_WAIT_MS,
            OWNER_HEADER,
          );
          const health = JSON.parse(response.text) as { node?: unknown };
          if (response.status === 200 && typeof health.node === 'string') this.seedNames.set(url, health.node);
        } catch {
          // Asked again at the next refresh.
        }
      }),
    );
    for (const [url, name] of this.seedNames) this.map.learnUrl(name, url);
  }

  /** The first map, waited for at most until the call's deadline; without one, calls go to any node. */
  private async refreshWithin(deadline: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, Math.max(0, deadline - performance.now()));
    });
    try {
      await Promise.race([this.refresh().catch(() => {}), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  private autoKey(kind: string, method: string): string | undefined {
    const auto = this.options.autoIdempotencyKeys;
    if (auto === true || (typeof auto === 'function' && auto(kind, method))) return randomUUID();
    return undefined;
  }

  private async backoff(attempt: number, deadline: number): Promise<void> {
    const pause = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]! * (0.5 + Math.random());
    const wait = Math.min(pause, deadline - performance.now());
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

export function createClient(options: ClientOptions): ConcordClient {
  return new ConcordClient(options);
}

function isNotSent(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  const causeCode = (error as { cause?: { code?: unknown } } | null)?.cause?.code;
  return NOT_SENT.has(String(code)) || NOT_SENT.has(String(causeCode));
}

function describe(error: unknown): string {
  if (error instanceof Error) return (error as { code?: string }).code ?? error.message;
  return String(error);
}
