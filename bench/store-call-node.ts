import type {
  AnyEntityDefinition,
  CallOptions,
  EntityDefinition,
  EntityRef,
  Handlers,
  MessageOf,
  ReplyOf,
} from '../src/entity/define.js';
import { entityRef, plainTurnContext } from '../src/entity/define.js';
import { ConcordError, HandlerError, Stopped } from '../src/errors.js';
import { NO_MEMBERSHIP_COUNTERS, type NodeIntrospection } from '../src/http/introspection.js';
import type { ClusterStatus } from '../src/runtime/node.js';
import type { Store } from '../src/store/types.js';
import { Telemetry } from '../src/telemetry.js';

/**
 * Baseline "store on every call": the service that keeps no state in memory and asks the
 * database on every call. Same entity definitions, same handlers, same Store as concord:
 *
 * - a call reads the row (one read query) and runs the handler on it;
 * - a handler that changes the state is then written back in one write transaction, a
 *   conditional update on the version just read (optimistic concurrency: if another node
 *   wrote in between, the call reads again and retries), acknowledged once committed with
 *   the store's durability. The first write of an id inserts its row first.
 *
 * No ownership, no fencing, no lease: every node may serve every id, and correctness comes
 * from the version check in the database.
 */
export class StoreCallNode {
  readonly stats = { calls: 0, reads: 0, writes: 0, conflicts: 0 };
  private readonly definitions: Map<string, EntityDefinition>;
  private stopped = false;

  constructor(
    readonly name: string,
    private readonly store: Store,
    definitions: readonly AnyEntityDefinition[],
  ) {
    this.definitions = new Map(definitions.map((d) => [d.kind, d as unknown as EntityDefinition]));
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

  async callByName(kind: string, id: string, handler: string, message: unknown, _options?: CallOptions) {
    if (this.stopped) throw new Stopped();
    const definition = this.definitions.get(kind);
    if (!definition) throw new ConcordError('UNKNOWN_ENTITY_KIND', `unknown entity kind "${kind}"`);
    const fn = definition.handlers[handler];
    if (typeof fn !== 'function') {
      throw new ConcordError('UNKNOWN_HANDLER', `entity kind "${kind}" has no handler "${handler}"`);
    }
    this.stats.calls++;
    for (;;) {
      this.stats.reads++;
      const row = await this.store.readEntity(kind, id);
      const state: unknown = row ? JSON.parse(row.state) : definition.initial(id);
      const version = row?.version ?? 0;
      const { ctx, changed, next } = plainTurnContext(kind, id, version);
      let reply: unknown;
      try {
        reply = await fn(state, message as never, ctx);
      } catch (error) {
        if (error instanceof ConcordError) throw error;
        throw new HandlerError(error instanceof Error ? error.message : String(error));
      }
      if (!changed()) return reply;
      let epoch = row?.epoch ?? 0;
      if (!row) {
        const [inserted] = await this.store.activate([
          { kind, id, epoch: 0, initialState: JSON.stringify(definition.initial(id)) },
        ]);
        if (!inserted?.ok || inserted.version !== 0) {
          this.stats.conflicts++;
          continue;
        }
        epoch = 0;
      }
      this.stats.writes++;
      const [applied] = await this.store.write([
        { kind, id, epoch, expectedVersion: version, newVersion: version + 1, state: JSON.stringify(next()) },
      ]);
      if (applied) return reply;
      this.stats.conflicts++;
    }
  }

  status(): ClusterStatus {
    return {
      self: this.name,
      incarnation: null,
      ready: this.ready,
      notReadyReason: this.ready ? null : 'stopped',
      leaseRemainingMs: 0,
      members: [],
      shards: { count: 0, held: [], owners: {}, unowned: 0 },
      activeEntities: 0,
    };
  }

  /** No owners: every call goes to the store. */
  ownerOf(kind: string, _id: string): { shard: number; owner: string | null; epoch: number } | null {
    return this.definitions.has(kind) ? { shard: 0, owner: this.name, epoch: 0 } : null;
  }

  /** Nothing to hand over: the store holds everything. */
  async leave(): Promise<void> {}

  async stop(): Promise<void> {
    this.stopped = true;
    await this.store.close();
  }

  introspection(): NodeIntrospection {
    return {
      ownership: 'none',
      clusterId: null,
      peerHandshakeFailures: () => 0,
      peerProtocolErrors: () => 0,
      refusedJoins: async () => ({ now: Date.now(), joins: [] }),
      counters: () => ({
        activations: 0,
        passivations: 0,
        turns: this.stats.calls,
        commits: this.stats.writes,
        fenced: this.stats.conflicts,
        replays: 0,
        localCalls: this.stats.calls,
        remoteCalls: 0,
        retries: this.stats.conflicts,
        servedForPeers: 0,
        ...NO_MEMBERSHIP_COUNTERS,
      }),
      shardOwners: () => [],
      shardEpochs: () => [],
      localStats: () => ({ callsPerSecond: 0, p99Ms: null, activeEntities: 0, shardsHeld: 0 }),
      memberStats: async () => ({}),
      telemetry: new Telemetry(this.name),
      peerTraffic: () => new Map(),
      peerLinks: () => new Map(),
      replicatedMaps: () => [],
      ownerOf: (kind) => (this.definitions.has(kind) ? { shard: null, owner: this.name, epoch: 0 } : null),
      faults: null,
      sharedWriter: async () => (await this.store.sharedWriterStatus?.()) ?? null,
    };
  }
}
