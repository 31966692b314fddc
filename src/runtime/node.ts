import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Lease } from '../cluster/lease.js';
import { type MemberDisplayStatus, Membership } from '../cluster/membership.js';
import { type CallRequest, Router } from '../cluster/router.js';
import {
  assertStrongSecret,
  checkClusterSecret,
  isWeakSecret,
  MIN_SECRET_BYTES,
  type RefusedJoin,
  readRefusedJoins,
  recordRefusedJoin,
  SECRET_ADVICE,
  type SecretCheckResult,
} from '../cluster/secret-check.js';
import { ShardManager } from '../cluster/shard-manager.js';
import type {
  AnyEntityDefinition,
  CallOptions,
  EntityDefinition,
  EntityRef,
  Handlers,
  MessageOf,
  ReplyOf,
} from '../entity/define.js';
import { entityRef } from '../entity/define.js';
import { EntityHost } from '../entity/host.js';
import { ConcordError, SecretMismatch, Stopped } from '../errors.js';
import { EventStore } from '../events/event-store.js';
import { createLogger, type Logger, silentLogger } from '../logger.js';
import { ReplicatedMaps } from '../pubsub/maps.js';
import { PubSub } from '../pubsub/pubsub.js';
import type { ReplicatedMap, ReplicatedMapOptions } from '../pubsub/replicated-map.js';
import { openStore } from '../store/open.js';
import type { SharedWriterStatus } from '../store/sqlite-writer.js';
import type { Durability, Store } from '../store/types.js';
import { type CallOutcome, Telemetry, withStoreTiming } from '../telemetry.js';
import { PeerUnreachable } from '../transport/errors.js';
import { FaultSwitch } from '../transport/faults.js';
import { Mesh } from '../transport/mesh.js';
import type { MeshTlsOptions } from '../transport/tls.js';
import type { PeerId } from '../transport/types.js';
import { withStoreFaults } from './faulty-store.js';

/**
 * A concord node: one process's membership lease, shard ownership, entity host, router
 * and peer transport, wired together. `ConcordNode.start()` returns once the node is
 * registered, holds a valid lease and has read the shard map.
 */

export interface NodeOptions {
  /** Unique name of this node in the cluster ([A-Za-z0-9_.-], up to 64). */
  name: string;
  /** Store URL (`sqlite:PATH`, `postgres://…`) or an opened store. */
  store: string | Store;
  /** The entity kinds this node hosts. Every node of a cluster must define the same kinds. */
  entities: readonly AnyEntityDefinition[];
  /**
   * Cluster secret shared by all nodes, at least 16 bytes (UTF-8): peers without it are
   * refused, and a node whose secret does not match the cluster's verifier in the store is
   * refused before it joins (SecretMismatch). Shorter secrets throw WeakSecret.
   */
  secret: string;
  /**
   * The cluster's previous secret, during a rotation only: this node also passes the store's
   * check and authenticates peers with it. See the README ("Rotating the secret").
   */
  previousSecret?: string;
  /** Accept a secret shorter than 16 bytes, with a warning. For throwaway local demos only. */
  allowWeakSecret?: boolean;
  /**
   * Mutual TLS 1.3 between nodes: this node's certificate and key and the cluster CA (PEM). A
   * peer must present a certificate the CA signed and pass the secret handshake. Every node of
   * a cluster uses TLS or none does. See SECURITY.md.
   */
  tls?: MeshTlsOptions;
  /** Interface the cluster port binds to. Default 127.0.0.1. */
  host?: string;
  /** Cluster (peer transport) port; 0 picks a free one. Default 0. */
  clusterPort?: number;
  /** Host other nodes dial; defaults to `host` (or the machine's hostname when binding 0.0.0.0 / ::). */
  advertiseHost?: string;
  /** Port other nodes dial (a port mapping or a proxy in between); defaults to the bound cluster port. */
  advertisePort?: number;
  /** Base URL of this node's HTTP API, published in the membership table. */
  httpAddress?: string | null;
  /** Shards in the cluster. Fixed when the store is first used. Default 256. */
  shardCount?: number;
  /** Membership lease. Default 1500 ms: failover after a crash within ~1.5–2 s. */
  leaseTtlMs?: number;
  /** Default deadline of a call, retries included. Default 5000 ms. */
  callTimeoutMs?: number;
  /**
   * Fairness of local calls to replies from peers: while this node awaits replies, at most
   * this many local calls run per turn of the event loop, the next ones at the next turn.
   * Default 256 (LOCAL_CALLS_PER_TURN: a bound on starvation; lower favours replies more, at
   * the cost of local calls' latency, see docs/benchmarks.md); Infinity turns it off.
   */
  localCallsPerTurn?: number;
  /**
   * A member this node cannot reach for this long is suspected (after an indirect probe) and,
   * once the members that can reach each other agree, evicted through the store. Default: the
   * lease ttl.
   */
  suspicionTimeoutMs?: number;
  /** How long start() waits to become a member (connected to every member) before returning anyway. Default 10 s. */
  joinTimeoutMs?: number;
  /** Passivate entities idle this long. Default 10 minutes. */
  idleTimeoutMs?: number;
  /** Passivate least recently used entities above this many. Default 1,000,000. */
  maxActiveEntities?: number;
  /** 'strict' (default): acknowledged writes survive power loss. 'relaxed': they survive process crashes. */
  durability?: Durability;
  /** Test-only fault injection switch (partitions, store cut). Default: env CONCORD_TEST_FAULTS=1. */
  faultInjection?: boolean;
  /** How long a graceful stop may take to hand shards over. Default 10 s. */
  stopTimeoutMs?: number;
  /**
   * Idempotency keys (CallOptions.idempotencyKey) are remembered at least this long, on the
   * store's clock; a sweep on every node deletes older ones. Default 24 h.
   */
  idempotencyWindowMs?: number;
  /**
   * Keys one active entity keeps in memory (default 10,000); beyond that a key not in memory is
   * looked up in the store, so the guarantee stays exact.
   */
  maxIdempotencyKeysPerEntity?: number;
  /**
   * Where the node logs (a pino logger, or anything with debug/info/warn/error/child). Without
   * one a node is quiet, unless CONCORD_LOG_LEVEL is set: then it logs JSON lines on stderr at
   * that level (`concord node` always logs, at `--log-level`).
   */
  logger?: Logger;
}

export interface MemberStatus {
  name: string;
  incarnation: number;
  address: string;
  httpAddress: string | null;
  status: MemberDisplayStatus;
  leaseExpiresInMs: number;
  connected: boolean;
  /** Members that report this one unreachable (status `suspected`). */
  suspectedBy: string[];
  /** For `evicted`: the members whose suspicions ended its membership. */
  evictedBy: string[] | null;
}

export interface ClusterStatus {
  self: string;
  incarnation: number | null;
  ready: boolean;
  /** Why the node is not ready (null when it is). */
  notReadyReason: string | null;
  leaseRemainingMs: number;
  members: MemberStatus[];
  shards: { count: number; held: number[]; owners: Record<string, number>; unowned: number };
  activeEntities: number;
}

const NAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

type PeerMessage = { t: 'released'; s: number } | { t: 'leaving' } | { t: 'joined' } | { t: 'evicted'; n: string };

/** A handler for one type of peer message or request (`body.t`), registered by a service (pub/sub, …). */
export type PeerMessageHandler = (from: PeerId, body: Record<string, unknown>) => void;
export type PeerRequestHandler = (from: PeerId, body: Record<string, unknown>) => unknown | Promise<unknown>;

const CORE_MESSAGE_TYPES = new Set(['released', 'leaving', 'joined', 'evicted', 'call', 'probe']);

/** Members whose lease ran out longer ago than this are left out of status() (and /cluster, the dashboard). */
const DEAD_MEMBER_VISIBLE_MS = 5000;

/** How long a leaving node waits for its peers to acknowledge the leave (see Mesh.drain). */
const LEAVE_DRAIN_MS = 1000;

export class ConcordNode {
  readonly name: string;
  readonly faults: FaultSwitch | null;
  private readonly definitions: Map<string, EntityDefinition>;
  /** Set when the node starts leaving (leave() or stop()). */
  private stopping: Promise<void> | null = null;
  private closing: Promise<void> | null = null;
  /** The peer transport and the store are being closed: no call can be made any more. */
  private closed = false;
  private pruneCounter = 0;
  private evictionHandled: number | null = null;
  private rejoining = false;
  private readonly messageHandlers = new Map<string, PeerMessageHandler>();
  private readonly requestHandlers = new Map<string, PeerRequestHandler>();
  private eventStore: EventStore | null = null;
  /** When the connection to each peer that is down now went down (failover durations). */
  private readonly downSince = new Map<string, number>();
  /** Topics across the cluster: `node.pubsub.subscribe(topic, handler)` / `publish(topic, message)`. */
  readonly pubsub: PubSub;
  private readonly maps: ReplicatedMaps;

  private constructor(
    options: NodeOptions,
    /** The random id of the cluster, recorded in the store by its first node. */
    readonly clusterId: string,
    private readonly store: Store,
    private readonly ownsStore: boolean,
    faults: FaultSwitch | null,
    readonly mesh: Mesh,
    private readonly lease: Lease,
    readonly shards: ShardManager,
    readonly host: EntityHost,
    readonly router: Router,
    readonly membership: Membership,
    private readonly logger: Logger,
    private readonly stopTimeoutMs: number,
    /** This node's metrics (served by `GET /metrics` with the HTTP and process metrics). */
    readonly telemetry: Telemetry,
  ) {
    this.name = options.name;
    this.faults = faults;
    this.definitions = new Map(options.entities.map((d) => [d.kind, d as unknown as EntityDefinition]));
    this.pubsub = new PubSub(this, logger);
    this.maps = new ReplicatedMaps(this, this.pubsub, logger);
  }

  /**
   * The replicated map `name` (created on first use; options only then): held whole on every
   * node that opens it, local reads, last-writer-wins writes, healed by anti-entropy.
   */
  replicatedMap<V, K extends string = string>(name: string, options?: ReplicatedMapOptions<V>): ReplicatedMap<K, V> {
    return this.maps.open<V, K>(name, options);
  }

  /** The replicated maps open on this node (metrics). */
  openMaps(): ReplicatedMap<string, unknown>[] {
    return this.maps.list();
  }

  static async start(options: NodeOptions): Promise<ConcordNode> {
    if (!NAME_PATTERN.test(options.name)) {
      throw new TypeError(`node name "${options.name}" must be 1-64 characters of letters, digits, _ . -`);
    }
    if (!options.secret) throw new TypeError('a cluster secret is required');
    const baseLogger = options.logger ?? (process.env.CONCORD_LOG_LEVEL ? createLogger() : silentLogger);
    const logger = baseLogger.child({ node: options.name });
    const telemetry = new Telemetry(options.name);
    if (isWeakSecret(options.secret)) {
      if (!options.allowWeakSecret) assertStrongSecret(options.secret);
      logger.warn(
        { bytes: Buffer.byteLength(options.secret, 'utf8'), minimum: MIN_SECRET_BYTES },
        `the cluster secret is too short; accepted only because weak secrets are allowed here (${SECRET_ADVICE})`,
      );
    }
    const previousSecret =
      options.previousSecret === undefined || options.previousSecret === '' || options.previousSecret === options.secret
        ? undefined
        : options.previousSecret;
    const leaseTtlMs = options.leaseTtlMs ?? 1500;
    const shardCount = options.shardCount ?? 256;
    const faultsEnabled = options.faultInjection ?? process.env.CONCORD_TEST_FAULTS === '1';
    const faults = faultsEnabled ? new FaultSwitch() : null;
    // Asked for explicitly (the demo's fault buttons) it is no surprise; by the environment it is a test mode.
    if (faults)
      (options.faultInjection ? logger.info : logger.warn).call(logger, {}, 'fault injection is ENABLED (test mode)');

    const definitions = new Map<string, EntityDefinition>();
    for (const definition of options.entities) {
      if (definitions.has(definition.kind)) throw new TypeError(`entity kind "${definition.kind}" defined twice`);
      definitions.set(definition.kind, definition as unknown as EntityDefinition);
    }

    const ownsStore = typeof options.store === 'string';
    const baseStore =
      typeof options.store === 'string'
        ? await openStore(options.store, {
            durability: options.durability ?? 'strict',
            onSharedWriterRole: (role) =>
              logger.info(
                { sharedWriter: role },
                role === 'writer'
                  ? "this process commits the SQLite file's writes for every node sharing it (shared writer)"
                  : "this process forwards its writes to the SQLite file's shared writer",
              ),
          })
        : options.store;
    const store = withStoreTiming(faults ? withStoreFaults(baseStore, faults) : baseStore, telemetry);
    const cleanup: (() => Promise<void>)[] = [];
    if (ownsStore) cleanup.push(() => baseStore.close());

    try {
      await store.initShards(shardCount);
      // Before anything is registered or claimed: a node with the wrong secret goes no further.
      const { clusterId } = await checkSecret(store, options.name, options.secret, previousSecret, logger);

      const host = options.host ?? '127.0.0.1';
      const mesh = new Mesh({
        self: { name: options.name, incarnation: 0 },
        secret: options.secret,
        ...(previousSecret === undefined ? {} : { previousSecret }),
        host,
        port: options.clusterPort ?? 0,
        faults: faults ?? undefined,
        ...(options.tls === undefined ? {} : { tls: options.tls }),
        // Ping often and call a connection silent after about one lease: a peer paused for
        // less than that (a GC pause) keeps its connection, a cut-off one is noticed in time.
        pingIntervalMs: Math.max(50, Math.round(leaseTtlMs / 6)),
        silentAfterMs: leaseTtlMs,
        logger,
      });
      const bound = await mesh.listen();
      cleanup.push(() => mesh.close());
      if (options.tls === undefined) {
        logger.warn(
          { clusterPort: bound.port },
          'peer traffic between nodes is NOT encrypted (no TLS): anyone on the network path can read it and change it. ' +
            'Keep the cluster port on a private network, or give every node --tls-cert, --tls-key and --tls-ca (see SECURITY.md)',
        );
      } else {
        logger.info({ clusterPort: bound.port }, 'peer traffic between nodes: mutual TLS 1.3 with the cluster CA');
      }
      const advertise = options.advertiseHost ?? advertisedHost(host);
      const address = formatAddress(advertise, options.advertisePort ?? bound.port);

      const lease = new Lease(
        store,
        {
          name: options.name,
          address,
          httpAddress: options.httpAddress ?? null,
          ttlMs: leaseTtlMs,
          marginMs: Math.max(50, Math.round(leaseTtlMs / 10)),
          renewIntervalMs: Math.round(leaseTtlMs / 3),
          nameWaitMs: leaseTtlMs * 2 + 1000,
        },
        logger,
      );

      // The host and the shard manager refer to each other; the guard closes over `shards`.
      let shards: ShardManager | null = null;
      const entityHost = new EntityHost(
        definitions,
        store,
        {
          canServe: (s) => shards!.canServe(s),
          heldEpoch: (s) => shards!.heldEpoch(s),
          leaseValid: () => lease.valid(),
          ownerOf: (s) => shards!.ownerOf(s),
          suspect: (s) => {
            telemetry.fenceRejections.inc();
            shards!.suspect(s);
          },
        },
        {
          idleTimeoutMs: options.idleTimeoutMs ?? 10 * 60_000,
          maxActiveEntities: options.maxActiveEntities ?? 1_000_000,
          maxTurnsPerBatch: 256,
          maxConcurrentCommits: store.commitsInFlight,
          maxConcurrentActivations: store.activationsInFlight,
          nodeName: options.name,
          idempotencyWindowMs: options.idempotencyWindowMs,
          maxIdempotencyKeysPerEntity: options.maxIdempotencyKeysPerEntity,
        },
        logger,
      );
      cleanup.push(async () => entityHost.close());
      shards = new ShardManager(
        store,
        lease,
        entityHost,
        { self: options.name, shardCount, drainTimeoutMs: Math.min(5000, options.callTimeoutMs ?? 5000) },
        logger,
      );
      const suspicionTimeoutMs = options.suspicionTimeoutMs ?? leaseTtlMs;
      const membership = new Membership(
        store,
        lease,
        {
          isConnected: (peer) => mesh.isConnected(peer),
          lastHeardAt: (peer) => mesh.lastHeardAt(peer),
          probe: async (via, target, timeoutMs) => {
            const answer = await mesh.request(via, { t: 'probe', n: target }, timeoutMs);
            return (answer as { reachable?: unknown } | null)?.reachable === true;
          },
        },
        {
          self: options.name,
          suspicionTimeoutMs,
          stableAfterMs: suspicionTimeoutMs,
          staleAfterMs: 3 * leaseTtlMs,
          // While it holds suspicions a node reports often: a cut-off node learns of its own
          // eviction from its next report, and the others wait for its acknowledgement.
          reportIntervalMs: Math.max(50, Math.round(leaseTtlMs / 15)),
          tickMs: Math.max(20, Math.min(100, Math.round(leaseTtlMs / 15))),
          probeTimeoutMs: Math.max(100, Math.round(leaseTtlMs / 5)),
          probeFreshMs: Math.max(100, Math.round(leaseTtlMs / 3)),
          failFastAfterMs: Math.min(100, Math.round(leaseTtlMs / 6)),
          leaseTtlMs,
        },
        logger,
      );
      const router = new Router(
        shards,
        {
          isConnected: (peer) => mesh.isConnected(peer),
          request: (peer, body, timeoutMs) => mesh.request(peer, body, timeoutMs),
          notDelivered: (error) => error instanceof PeerUnreachable && !error.maybeDelivered,
          knownUnreachable: (peer, soonMs) => membership.unreachableOwner(peer, soonMs),
        },
        entityHost,
        {
          self: options.name,
          defaultTimeoutMs: options.callTimeoutMs ?? 5000,
          localCallsPerTurn: options.localCallsPerTurn,
          onCallEnd: (kind, error, startedAt) =>
            telemetry.call(kind, error === null ? 'ok' : callOutcome(error), startedAt),
        },
      );

      const incarnation = await lease.acquire();
      mesh.setSelfIncarnation(incarnation);
      const node = new ConcordNode(
        { ...options, entities: options.entities },
        clusterId,
        store,
        ownsStore,
        faults,
        mesh,
        lease,
        shards,
        entityHost,
        router,
        membership,
        logger,
        options.stopTimeoutMs ?? 10_000,
        telemetry,
      );
      cleanup.push(async () => membership.stop());
      node.wire();
      lease.start();
      await shards.rebalance();
      membership.start();
      // Registered as `joining`: a member once connected to every member (see Membership).
      const joined = await node.waitUntilMember(options.joinTimeoutMs ?? 10_000);
      // A member now: claim this node's shards before start() returns.
      if (joined) await shards.rebalance();
      else {
        logger.warn(
          { reason: membership.readiness().reason },
          'not yet a member: cannot reach every member; serving nothing until it can',
        );
      }
      logger.info({ incarnation, address, held: shards.heldShards().length }, 'node started');
      return node;
    } catch (error) {
      for (const step of cleanup.reverse()) await step().catch(() => {});
      throw error;
    }
  }

  /**
   * The event store of the cluster's store: outside appends with an expected version, stream
   * reads, and the store-wide log that projections tail. Events appended through it record
   * this node's name.
   */
  get events(): EventStore {
    this.eventStore ??= new EventStore(this.store, { node: this.name });
    return this.eventStore;
  }

  /** The current incarnation (changes if the lease is ever lost and re-acquired). */
  get incarnation(): number | null {
    return this.lease.incarnation;
  }

  /**
   * Ready for traffic: a member (not joining, evicted or leaving), lease valid, shard map read,
   * and it reaches a majority of the members (see Membership.readiness).
   */
  get ready(): boolean {
    return this.notReadyReason() === null;
  }

  /** Why the node is not ready, or null when it is. */
  notReadyReason(): string | null {
    if (this.stopping !== null) return 'the node is stopping';
    if (!this.lease.valid()) return 'the node holds no valid lease';
    if (!this.shards.ready) return 'the node has no shard map yet';
    const readiness = this.membership.readiness();
    return readiness.ready ? null : (readiness.reason ?? 'not a member');
  }

  /** Resolves true once this node is a member (`alive`), false after `timeoutMs`. */
  private async waitUntilMember(timeoutMs: number): Promise<boolean> {
    const giveUpAt = performance.now() + timeoutMs;
    while (!this.membership.isMember) {
      if (performance.now() >= giveUpAt || this.stopping !== null) return false;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return true;
  }

  /** Call handler `handler` of entity `id` of kind `definition`, wherever it lives. */
  call<S, H extends Handlers<S>, K extends keyof H & string>(
    definition: EntityDefinition<S, H>,
    id: string,
    handler: K,
    message: MessageOf<H[K]>,
    options?: CallOptions,
  ): Promise<ReplyOf<H[K]>> {
    return this.callByName(definition.kind, id, handler, message, options) as Promise<ReplyOf<H[K]>>;
  }

  /** Untyped call by kind name (HTTP layer, tools). */
  callByName(kind: string, id: string, handler: string, message: unknown, options?: CallOptions): Promise<unknown> {
    if (this.closed) return Promise.reject(new Stopped());
    if (!this.definitions.has(kind)) {
      return Promise.reject(new ConcordError('UNKNOWN_ENTITY_KIND', `unknown entity kind "${kind}"`));
    }
    if (typeof id !== 'string' || id.length === 0) {
      return Promise.reject(new ConcordError('BAD_MESSAGE', 'entity id must be a non-empty string'));
    }
    // Its end is counted in telemetry by the router (RouterOptions.onCallEnd).
    return this.router.call(kind, id, handler, message, {
      timeoutMs: options?.timeoutMs,
      idempotencyKey: options?.idempotencyKey,
    });
  }

  /**
   * Which node owns entity `id` of kind `kind` by this node's view of the shard map (the store
   * decides; the view follows within moments): its shard, the owner (null while nobody live
   * holds it) and the shard's epoch. Null for a kind this node does not define.
   */
  ownerOf(kind: string, id: string): { shard: number; owner: string | null; epoch: number } | null {
    if (!this.definitions.has(kind)) return null;
    const shard = this.router.shardOf(kind, id);
    const held = this.shards.heldEpoch(shard);
    if (held !== null && this.shards.canServe(shard)) return { shard, owner: this.name, epoch: held };
    return { shard, ...this.shards.ownerOf(shard) };
  }

  /**
   * The last committed state of entity `id`, read straight from the store without its owner,
   * so it answers even when the owner is unreachable (a partition). Not linearizable: it may
   * be a moment behind the owner, and it is null for an entity never activated. Meant for
   * read-through caches; use `call` when the answer must be current. Plain entities only.
   */
  async readCommitted<S, H extends Handlers<S>>(
    definition: EntityDefinition<S, H>,
    id: string,
  ): Promise<{ state: S; version: number } | null> {
    if (this.closed) throw new Stopped();
    if (definition.persistence !== undefined) {
      throw new TypeError(`readCommitted reads plain entities; "${definition.kind}" is kept another way`);
    }
    const row = await this.store.readEntity(definition.kind, id);
    return row === null ? null : { state: JSON.parse(row.state) as S, version: row.version };
  }

  /**
   * Joins refused because of the secret (the last 20, oldest first), read from the store now,
   * with the store's clock at the read (`at` is on that clock too).
   */
  async refusedJoins(): Promise<{ now: number; joins: RefusedJoin[] }> {
    const [now, joins] = await Promise.all([this.store.now(), readRefusedJoins(this.store)]);
    return { now, joins };
  }

  /** A typed handle on one entity: `node.ref(Counter, 'c1').add(2)`. */
  ref<S, H extends Handlers<S>>(definition: EntityDefinition<S, H>, id: string): EntityRef<H> {
    return entityRef(definition, id, (...args) => this.callByName(...args));
  }

  /**
   * On SQLite with a shared writer (the default): whether this process commits the file's
   * writes or forwards them, and its counters (commits, forwarded batches, re-runs); null on
   * any other store.
   */
  async sharedWriterStatus(): Promise<SharedWriterStatus | null> {
    return (await this.store.sharedWriterStatus?.()) ?? null;
  }

  status(): ClusterStatus {
    const members: MemberStatus[] = [];
    const states = this.membership.memberStates();
    const storeNow = this.shards.storeNowEstimate();
    for (const member of this.shards.allMembers()) {
      const self = member.name === this.name;
      // A member whose lease ran out a while ago (a node of an earlier run, a crashed one that
      // never came back) is no longer shown; the store forgets its row later.
      if (!self && storeNow - member.leaseExpiresAt > DEAD_MEMBER_VISIBLE_MS) continue;
      const state = states.get(member.name);
      members.push({
        name: member.name,
        incarnation: member.incarnation,
        address: member.address,
        httpAddress: member.httpAddress,
        status: state?.status ?? 'dead',
        leaseExpiresInMs: Math.max(0, member.leaseExpiresAt - this.shards.storeNowEstimate()),
        connected: self || this.mesh.isConnected(member.name),
        suspectedBy: state?.suspectedBy ?? [],
        evictedBy: state?.evictedBy ?? null,
      });
    }
    const owners: Record<string, number> = {};
    let unowned = 0;
    for (const entry of this.shards.snapshot()) {
      const { owner } = this.shards.ownerOf(entry.shard);
      if (owner === null) unowned++;
      else owners[owner] = (owners[owner] ?? 0) + 1;
    }
    return {
      self: this.name,
      incarnation: this.lease.incarnation,
      ready: this.ready,
      notReadyReason: this.notReadyReason(),
      leaseRemainingMs: Math.round(this.lease.remainingMs()),
      members: members.sort((a, b) => a.name.localeCompare(b.name)),
      shards: { count: this.shards.shardCount, held: this.shards.heldShards(), owners, unowned },
      activeEntities: this.host.active,
    };
  }

  /**
   * Graceful stop (SIGTERM): leave the cluster (see leave), then close the peer transport and
   * the store. Resolves once nothing of the node runs any more.
   */
  stop(): Promise<void> {
    this.closing ??= this.leave().then(() => this.close());
    return this.closing;
  }

  /**
   * The first half of a graceful stop: from the moment this is called the node claims nothing
   * (not even a shard a leaving peer releases) and stops trying to become a member; then it
   * marks itself leaving in the store, hands every shard over to its next owner (drain admitted
   * calls, passivate, release, notify) and deregisters. Calls made through this node meanwhile
   * (HTTP requests still in flight) are still routed, to the new owners, until `stop()` closes
   * the peer transport. Idempotent; `stop()` calls it.
   */
  leave(): Promise<void> {
    if (!this.stopping) {
      this.shards.stopClaiming();
      this.membership.stop();
      this.router.setLeaving();
      this.stopping = this.leaveCluster();
    }
    return this.stopping;
  }

  private async leaveCluster(): Promise<void> {
    const startedAt = performance.now();
    const incarnation = this.lease.incarnation;
    const held = this.shards.heldShards().length;
    this.logger.info({ held }, 'leaving the cluster');
    if (incarnation !== null) {
      try {
        await this.store.setNodeStatus(this.name, incarnation, 'leaving', ['alive', 'joining']);
        this.announce({ t: 'leaving' });
        await withDeadline(this.shards.leave(), this.stopTimeoutMs);
      } catch (error) {
        this.logger.warn({ err: String(error) }, 'graceful handoff incomplete; remaining shards fail over by lease');
      }
    }
    this.shards.stop();
    this.shards.dropAll();
    this.host.dropAll();
    this.host.close();
    // The row stays (status `leaving`, lease renewed) until close(): the peers keep their
    // connections to a member, so calls this node still routes (HTTP requests in flight) reach
    // the new owners instead of a connection the peers drop.
    this.logger.info({ handedOver: held, ms: Math.round(performance.now() - startedAt) }, 'left the cluster');
  }

  /** The second half of a graceful stop: deregister, close the peer transport and the store. */
  private async close(): Promise<void> {
    this.closed = true;
    const incarnation = this.lease.incarnation;
    this.lease.stop();
    // Deregister only after nothing is served any more: removing the row frees our shards at once.
    this.lease.clear();
    if (incarnation !== null) await this.store.removeNode(this.name, incarnation).catch(() => {});
    this.maps.close();
    this.pubsub.close();
    // Answer (with `moved`) every call peers sent before they learned we left, then close:
    // closing first would leave those callers unsure whether their call was applied.
    await this.mesh.drain(LEAVE_DRAIN_MS);
    await this.mesh.close();
    if (this.ownsStore) await this.store.close();
    this.logger.info({}, 'stopped');
  }

  private wire(): void {
    const { mesh, shards, lease, router, logger } = this;
    mesh.onRequest((from: PeerId, body: unknown) => {
      if (isCallRequest(body)) return router.serve(body);
      if (isProbeRequest(body)) return { reachable: this.membership.canReach(body.n) };
      if (isTyped(body)) {
        const handler = this.requestHandlers.get(body.t);
        if (handler) return handler(from, body);
      }
      throw new ConcordError('BAD_MESSAGE', 'unknown request');
    });
    mesh.onMessage((from: PeerId, body: unknown) => {
      if (!isTyped(body)) return;
      const message = body as PeerMessage;
      if (message.t === 'released' || message.t === 'leaving' || message.t === 'joined' || message.t === 'evicted') {
        void shards.rebalance();
        return;
      }
      const handler = this.messageHandlers.get(body.t);
      if (!handler) return;
      try {
        handler(from, body);
      } catch (error) {
        logger.warn({ type: body.t, err: String(error) }, 'peer message handler failed');
      }
    });
    mesh.on('peer-up', (peer: PeerId) => {
      this.downSince.delete(peer.name);
      shards.peerUp(peer.name);
      void shards.rebalance();
    });
    mesh.on('peer-down', (peer: PeerId) => {
      if (!this.downSince.has(peer.name)) this.downSince.set(peer.name, performance.now());
      shards.peerDown(peer.name);
    });
    shards.on('members', (members) => {
      mesh.setPeers(
        members
          .filter((m) => m.name !== this.name)
          .map((m) => ({ name: m.name, incarnation: m.incarnation, address: m.address })),
      );
    });
    shards.on('released', (shard, desired) => {
      if (desired !== null && desired !== this.name) mesh.send(desired, { t: 'released', s: shard });
    });
    lease.on('renewed', () => {
      void shards.rebalance();
      if (++this.pruneCounter % 100 === 0) void this.store.pruneNodes(60_000).catch(() => {});
    });
    lease.on('store-error', (error) => {
      this.telemetry.leaseRenewalFailures.inc({ reason: 'store_error' });
      logger.warn({ err: String(error) }, 'lease renewal failed: store unreachable');
    });
    lease.on('attempt', (ms, outcome) => this.telemetry.leaseRenewalDuration.observe({ outcome }, ms / 1000));
    lease.on('lost', () => this.telemetry.leaseRenewalFailures.inc({ reason: 'expired' }));
    lease.on('evicted', () => this.telemetry.leaseRenewalFailures.inc({ reason: 'evicted' }));
    shards.on('handed-off', (_shard, ms) => {
      this.telemetry.handoffs.inc();
      this.telemetry.handoffDuration.observe(ms / 1000);
    });
    shards.on('claimed', (_shard, _epoch, previous) => {
      if (previous === null || previous === this.name) return; // released to us: a handoff
      this.telemetry.failovers.inc();
      const since = this.downSince.get(previous);
      if (since !== undefined) this.telemetry.failoverDuration.observe((performance.now() - since) / 1000);
    });
    lease.on('lost', () => {
      // Everything we held may belong to someone else now. Drop it all, then rejoin
      // under a new incarnation and claim shards afresh through the normal CAS.
      shards.dropAll();
      void this.rejoin();
    });
    lease.on('evicted', (incarnation) => void this.onEvicted(incarnation, null));
    shards.on('view', (view) => this.membership.onView(view));
    this.membership.on('self-evicted', (incarnation, by) => void this.onEvicted(incarnation, by));
    this.membership.on('joined', () => {
      void shards.rebalance();
      this.announce({ t: 'joined' });
    });
    this.membership.on('member-evicted', (name) => {
      this.announce({ t: 'evicted', n: name });
      void shards.rebalance();
    });
    this.membership.on('refresh', () => void shards.rebalance());
  }

  /**
   * The members evicted this incarnation (learnt from a refused renewal or a view of the
   * membership table). Stop serving at once and drop every shard; only then acknowledge in the
   * store, which ends the lease so that the members may claim our shards without waiting for
   * it to run out (the order is what makes that safe). Then register again, as `joining`: we
   * become a member again once we can reach every member.
   */
  private async onEvicted(incarnation: number, by: string[] | null): Promise<void> {
    if (this.evictionHandled === incarnation || this.stopping !== null) return;
    this.evictionHandled = incarnation;
    this.membership.evicted(incarnation);
    if (this.lease.incarnation === incarnation) this.lease.clear();
    this.shards.dropAll();
    this.logger.warn(
      { incarnation, evictedBy: by ?? undefined },
      'evicted: the other members could not reach this node; stopped serving, will rejoin once they are reachable',
    );
    for (let attempt = 0; attempt < 20 && this.stopping === null; attempt++) {
      try {
        await this.store.acknowledgeEviction(this.name, incarnation);
        break;
      } catch {
        // The store is unreachable too: the lease runs out by itself; keep trying briefly.
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    await this.rejoin();
  }

  /**
   * Register the handler of peer messages whose `t` is `type` (for services built on the
   * peer transport, such as pub/sub). Types used by the core are reserved.
   */
  onPeerMessage(type: string, handler: PeerMessageHandler): void {
    this.reserveType(type, this.messageHandlers);
    this.messageHandlers.set(type, handler);
  }

  /** Register the handler of peer requests whose `t` is `type`; its result (or error) is the answer. */
  onPeerRequest(type: string, handler: PeerRequestHandler): void {
    this.reserveType(type, this.requestHandlers);
    this.requestHandlers.set(type, handler);
  }

  private reserveType(type: string, map: Map<string, unknown>): void {
    if (CORE_MESSAGE_TYPES.has(type)) throw new TypeError(`peer message type "${type}" is reserved by the core`);
    if (map.has(type)) throw new TypeError(`peer message type "${type}" already has a handler`);
  }

  private async rejoin(): Promise<void> {
    if (this.rejoining) return;
    this.rejoining = true;
    try {
      await this.rejoinLoop();
    } finally {
      this.rejoining = false;
    }
  }

  private async rejoinLoop(): Promise<void> {
    while (this.stopping === null) {
      try {
        const incarnation = await this.lease.acquire();
        if (this.stopping !== null) {
          // The node began to stop while this registration was under way: undo it.
          this.lease.clear();
          await this.store.removeNode(this.name, incarnation).catch(() => {});
          return;
        }
        this.mesh.setSelfIncarnation(incarnation);
        this.logger.info({ incarnation }, 'registered again with a new incarnation (joining)');
        await this.shards.rebalance();
        return;
      } catch (error) {
        this.logger.warn({ err: String(error) }, 'rejoin failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  }

  private announce(message: PeerMessage): void {
    for (const member of this.shards.liveMembers()) {
      if (member.name !== this.name) this.mesh.send(member.name, message);
    }
  }
}

/**
 * The cluster secret against the store's verifiers (src/cluster/secret-check.ts). A refusal is
 * logged and recorded in the store, for the running nodes to show, then thrown.
 */
async function checkSecret(
  store: Store,
  name: string,
  secret: string,
  previousSecret: string | undefined,
  logger: Logger,
): Promise<SecretCheckResult> {
  try {
    const result = await checkClusterSecret(store, secret, previousSecret);
    const { clusterId, outcome } = result;
    if (outcome === 'created') logger.info({ clusterId }, 'new cluster: recorded its id and secret verifier');
    if (outcome === 'added') logger.info({ clusterId }, 'secret rotation: added the verifier of the new secret');
    if (outcome === 'ended-rotation')
      logger.info({ clusterId }, 'secret rotation ended: only this secret is accepted now');
    return result;
  } catch (error) {
    if (error instanceof SecretMismatch) {
      const reason =
        previousSecret === undefined
          ? "secret mismatch: the node's secret differs from the cluster's"
          : "secret mismatch: neither the node's secret nor its previous secret is the cluster's";
      try {
        await recordRefusedJoin(store, name, reason);
      } catch (recordError) {
        logger.warn({ err: String(recordError) }, 'could not record the refused join in the store');
      }
      logger.error({ clusterId: error.details?.['clusterId'] }, `refused to join: ${error.message}`);
    }
    throw error;
  }
}

function isTyped(body: unknown): body is Record<string, unknown> & { t: string } {
  return typeof body === 'object' && body !== null && typeof (body as { t?: unknown }).t === 'string';
}

function isProbeRequest(body: unknown): body is { t: 'probe'; n: string } {
  return isTyped(body) && body.t === 'probe' && typeof (body as { n?: unknown }).n === 'string';
}

function isCallRequest(body: unknown): body is CallRequest {
  if (typeof body !== 'object' || body === null) return false;
  const b = body as Record<string, unknown>;
  return b.t === 'call' && typeof b.k === 'string' && typeof b.i === 'string' && typeof b.h === 'string';
}

function advertisedHost(bindHost: string): string {
  if (bindHost === '0.0.0.0' || bindHost === '::') return hostname();
  return bindHost;
}

function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`did not finish within ${ms} ms`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

/** A random cluster secret (the demo generates one). */
export function generateSecret(): string {
  return randomBytes(24).toString('base64url');
}

export function startNode(options: NodeOptions): Promise<ConcordNode> {
  return ConcordNode.start(options);
}

function callOutcome(error: unknown): CallOutcome {
  const code = error instanceof ConcordError ? error.code : null;
  switch (code) {
    case 'UNAVAILABLE':
    case 'STOPPED':
      return 'unavailable';
    case 'TIMEOUT':
      return 'timeout';
    case 'STORE_UNAVAILABLE':
      return 'store_unavailable';
    case 'HANDLER_ERROR':
    case null:
      return 'error';
    default:
      return 'rejected';
  }
}
