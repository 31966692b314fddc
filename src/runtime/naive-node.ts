import type {
  AnyEntityDefinition,
  CallOptions,
  EntityDefinition,
  EntityRef,
  Handlers,
  MessageOf,
  ReplyOf,
} from '../entity/define.js';
import { entityRef, plainTurnContext } from '../entity/define.js';
import { ConcordError, HandlerError, Stopped } from '../errors.js';
import type { ClusterStatus } from './node.js';

/**
 * `--ownership none`: the naive scaled-out service, kept as a teaching and benchmark
 * baseline. NEVER a default.
 *
 * Each process keeps its own entities in memory: no store, no lease, no routing, no peers.
 * Two nodes asked about the same id each answer from their own copy, so they diverge
 * (set `entity_1` to `working` on node 1, read it on node 2: still `initialized`), and a
 * restart forgets everything. It has the same call surface as ConcordNode so that the HTTP
 * layer and the apps run unchanged on top of it.
 */

export interface NaiveNodeOptions {
  name: string;
  entities: readonly AnyEntityDefinition[];
  /** Base URL of this node's HTTP API (shown in status()). */
  httpAddress?: string | null;
}

/** Counters shaped like the real node's host and router stats (most stay 0 here). */
export interface NaiveNodeStats {
  activations: number;
  turns: number;
  localCalls: number;
}

interface Activation {
  state: unknown;
  version: number;
  /** The end of the entity's current turn: turns run one at a time, as on a real node. */
  tail: Promise<void>;
}

export class NaiveNode {
  readonly ownership = 'none' as const;
  readonly stats: NaiveNodeStats = { activations: 0, turns: 0, localCalls: 0 };
  private readonly definitions: Map<string, EntityDefinition>;
  private readonly activations = new Map<string, Activation>();
  private stopped = false;

  private constructor(
    readonly name: string,
    definitions: readonly AnyEntityDefinition[],
    private readonly httpAddress: string | null,
  ) {
    this.definitions = new Map(definitions.map((d) => [d.kind, d as unknown as EntityDefinition]));
  }

  static async start(options: NaiveNodeOptions): Promise<NaiveNode> {
    return new NaiveNode(options.name, options.entities, options.httpAddress ?? null);
  }

  get ready(): boolean {
    return !this.stopped;
  }

  call<S, H extends Handlers<S>, K extends keyof H & string>(
    definition: EntityDefinition<S, H>,
    id: string,
    handler: K,
    message: MessageOf<H[K]>,
    options?: CallOptions,
  ): Promise<ReplyOf<H[K]>> {
    return this.callByName(definition.kind, id, handler, message, options) as Promise<ReplyOf<H[K]>>;
  }

  ref<S, H extends Handlers<S>>(definition: EntityDefinition<S, H>, id: string): EntityRef<H> {
    return entityRef(definition, id, (...args) => this.callByName(...args));
  }

  callByName(kind: string, id: string, handler: string, message: unknown, _options?: CallOptions): Promise<unknown> {
    if (this.stopped) return Promise.reject(new Stopped());
    const definition = this.definitions.get(kind);
    if (!definition) return Promise.reject(new ConcordError('UNKNOWN_ENTITY_KIND', `unknown entity kind "${kind}"`));
    if (typeof id !== 'string' || id.length === 0) {
      return Promise.reject(new ConcordError('BAD_MESSAGE', 'entity id must be a non-empty string'));
    }
    const fn = definition.handlers[handler];
    if (typeof fn !== 'function') {
      return Promise.reject(new ConcordError('UNKNOWN_HANDLER', `entity kind "${kind}" has no handler "${handler}"`));
    }
    this.stats.localCalls++;
    const activation = this.activate(definition, id);
    const result = activation.tail.then(() => this.turn(activation, definition, id, fn, message));
    activation.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  status(): ClusterStatus {
    return {
      self: this.name,
      incarnation: null,
      ready: this.ready,
      notReadyReason: this.ready ? null : 'stopped',
      leaseRemainingMs: 0,
      members: [
        {
          name: this.name,
          incarnation: 0,
          address: '(none: no coordination)',
          httpAddress: this.httpAddress,
          status: 'alive',
          leaseExpiresInMs: 0,
          connected: true,
          suspectedBy: [],
          evictedBy: null,
        },
      ],
      shards: { count: 0, held: [], owners: {}, unowned: 0 },
      activeEntities: this.activations.size,
    };
  }

  /** Every node serves every entity itself (there are no shards): the owner is this node. */
  ownerOf(kind: string, _id: string): { shard: number; owner: string | null; epoch: number } | null {
    return this.definitions.has(kind) ? { shard: 0, owner: this.name, epoch: 0 } : null;
  }

  /** Does this node define entity kind `kind`? */
  defines(kind: string): boolean {
    return this.definitions.has(kind);
  }

  /** Nothing to hand over: every node keeps its own copy. */
  async leave(): Promise<void> {}

  async stop(): Promise<void> {
    this.stopped = true;
    this.activations.clear();
  }

  private activate(definition: EntityDefinition, id: string): Activation {
    const key = `${definition.kind}\u0000${id}`;
    let activation = this.activations.get(key);
    if (!activation) {
      activation = { state: definition.initial(id), version: 0, tail: Promise.resolve() };
      this.activations.set(key, activation);
      this.stats.activations++;
    }
    return activation;
  }

  private async turn(
    activation: Activation,
    definition: EntityDefinition,
    id: string,
    fn: EntityDefinition['handlers'][string],
    message: unknown,
  ): Promise<unknown> {
    const { ctx, changed, next } = plainTurnContext(definition.kind, id, activation.version);
    this.stats.turns++;
    try {
      const reply = await fn(activation.state, message as never, ctx);
      if (changed()) {
        activation.state = next();
        activation.version++;
      }
      return reply;
    } catch (error) {
      if (error instanceof ConcordError) throw error;
      throw new HandlerError(error instanceof Error ? error.message : String(error));
    }
  }
}
