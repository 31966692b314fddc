import type { RefusedJoin } from '../cluster/secret-check.js';
import type { NaiveNode } from '../runtime/naive-node.js';
import type { ConcordNode } from '../runtime/node.js';
import type { SharedWriterStatus } from '../store/sqlite-writer.js';
import { Telemetry } from '../telemetry.js';
import type { PeerTraffic } from '../transport/connection.js';
import type { FaultSwitch } from '../transport/faults.js';
import type { LinkKind } from '../transport/mesh.js';

/**
 * What the operations routes (metrics, /cluster, dashboard) read of a node beyond the
 * app-facing API: its counters, who owns which shard, and its test fault switch. One
 * adapter per kind of node, so the HTTP layer never reaches into either's internals.
 */

export type Ownership = 'single' | 'none';

/** A member's load over the last few seconds, as the dashboard shows it. */
export interface MemberStats {
  callsPerSecond: number;
  /** 99th percentile latency of its calls, ms (null without calls). */
  p99Ms: number | null;
  activeEntities: number;
  shardsHeld: number;
}

export interface RuntimeCounters {
  activations: number;
  passivations: number;
  turns: number;
  commits: number;
  fenced: number;
  /** Keyed calls answered with their stored reply. */
  replays: number;
  localCalls: number;
  remoteCalls: number;
  retries: number;
  servedForPeers: number;
  /** Membership under partial failure (see src/cluster/membership.ts). */
  suspicionsRaised: number;
  suspicionsCleared: number;
  probes: number;
  evictionsDecided: number;
  evictedSelf: number;
  joins: number;
}

/** Counters that only a coordinated node has, at zero (for the baselines). */
export const NO_MEMBERSHIP_COUNTERS = {
  suspicionsRaised: 0,
  suspicionsCleared: 0,
  probes: 0,
  evictionsDecided: 0,
  evictedSelf: 0,
  joins: 0,
} as const;

/** Joins refused because of the cluster secret, as recorded in the store. */
export interface RefusedJoins {
  /** The store's clock when they were read (ms). */
  now: number;
  /** The last ones, oldest first; `at` is on the store's clock. */
  joins: RefusedJoin[];
}

export interface NodeIntrospection {
  /** 'single': concord's single-owner runtime. 'none': the uncoordinated baseline. */
  readonly ownership: Ownership;
  /** The cluster's random id from the store (null without a store). */
  readonly clusterId: string | null;
  counters(): RuntimeCounters;
  /** Peer handshakes that failed on this node (wrong secret, bad frames, timeouts…). */
  peerHandshakeFailures(): number;
  /** Authenticated peer connections dropped for a malformed frame or message (the mesh's count). */
  peerProtocolErrors(): number;
  /**
   * The refused joins recorded in the store, read when asked. If the store does not answer
   * within a second, the last answer (or none) is returned instead.
   */
  refusedJoins(): Promise<RefusedJoins>;
  /** The owner this node believes each shard has, indexed by shard (empty without shards). */
  shardOwners(): (string | null)[];
  /** The epoch of each shard as this node last saw it, indexed by shard (empty without shards). */
  shardEpochs(): number[];
  /** The node's metrics registry and recorders (calls, leases, store, handoffs, failovers…). */
  readonly telemetry: Telemetry;
  /** Frames and bytes exchanged with each peer since the node started. */
  peerTraffic(): Map<string, PeerTraffic>;
  /** How each open peer connection is carried: 'unix' (a peer on this host) or 'tcp'. */
  peerLinks(): Map<string, LinkKind>;
  /** The replicated maps open on the node: entries, and the sync lag since the last look (ms). */
  replicatedMaps(): { name: string; size: number; syncLagMs: number }[];
  /** This node's load over the last few seconds. */
  localStats(): MemberStats;
  /** The other members' loads, asked of them over the peer transport (those that answer in time). */
  memberStats(): Promise<Record<string, MemberStats>>;
  /** Which node owns an entity, by this node's view (null for an unknown kind). */
  ownerOf(kind: string, id: string): { shard: number | null; owner: string | null; epoch: number } | null;
  /** The test-only fault switch, when the node runs with fault injection. */
  readonly faults: FaultSwitch | null;
  /** On SQLite with a shared writer: this process's role and counters; null otherwise. */
  sharedWriter(): Promise<SharedWriterStatus | null>;
}

const REFUSED_JOINS_READ_TIMEOUT_MS = 1000;

const STATS_REQUEST = 'dash.stats';
const STATS_TIMEOUT_MS = 500;

export function introspectConcordNode(node: ConcordNode): NodeIntrospection {
  let lastRefusedJoins: RefusedJoins = { now: 0, joins: [] };
  const localStats = (): MemberStats => {
    const status = node.status();
    return {
      ...node.telemetry.recent.summary(),
      activeEntities: status.activeEntities,
      shardsHeld: status.shards.held.length,
    };
  };
  try {
    node.onPeerRequest(STATS_REQUEST, () => localStats());
  } catch {
    // Already answered by an earlier introspection of this node.
  }
  return {
    localStats,
    memberStats: async () => {
      const peers = node.shards
        .liveMembers()
        .map((m) => m.name)
        .filter((name) => name !== node.name && node.mesh.isConnected(name));
      const answers = await Promise.allSettled(
        peers.map((peer) => node.mesh.request(peer, { t: STATS_REQUEST }, STATS_TIMEOUT_MS)),
      );
      const result: Record<string, MemberStats> = {};
      answers.forEach((answer, i) => {
        if (answer.status === 'fulfilled' && answer.value && typeof answer.value === 'object') {
          result[peers[i]!] = answer.value as MemberStats;
        }
      });
      return result;
    },
    ownership: 'single',
    clusterId: node.clusterId,
    counters: () => ({ ...node.host.stats, ...node.router.stats, ...node.membership.stats }),
    peerHandshakeFailures: () => node.mesh.stats.handshakeFailures,
    peerProtocolErrors: () => node.mesh.stats.protocolErrors,
    refusedJoins: async () => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<null>((resolve) => {
        timer = setTimeout(() => resolve(null), REFUSED_JOINS_READ_TIMEOUT_MS);
      });
      try {
        const read = await Promise.race([node.refusedJoins(), timeout]);
        if (read !== null) lastRefusedJoins = read;
      } catch {
        // The store is unreachable: keep the last answer.
      } finally {
        clearTimeout(timer);
      }
      return lastRefusedJoins;
    },
    shardOwners: () => {
      const owners: (string | null)[] = new Array(node.shards.shardCount).fill(null);
      for (const { shard } of node.shards.snapshot()) owners[shard] = node.shards.ownerOf(shard).owner;
      return owners;
    },
    shardEpochs: () => node.shards.snapshot().map((entry) => entry.epoch),
    telemetry: node.telemetry,
    peerTraffic: () => node.mesh.traffic(),
    peerLinks: () => node.mesh.links(),
    replicatedMaps: () =>
      node.openMaps().map((map) => ({ name: map.name, size: map.size, syncLagMs: map.takeSyncLagMs() })),
    ownerOf: (kind, id) => node.ownerOf(kind, id),
    faults: node.faults,
    sharedWriter: () => node.sharedWriterStatus(),
  };
}

export function introspectNaiveNode(node: NaiveNode): NodeIntrospection {
  return {
    ownership: 'none',
    clusterId: null,
    peerHandshakeFailures: () => 0,
    peerProtocolErrors: () => 0,
    refusedJoins: async () => ({ now: Date.now(), joins: [] }),
    counters: () => ({
      activations: node.stats.activations,
      passivations: 0,
      turns: node.stats.turns,
      commits: 0,
      fenced: 0,
      replays: 0,
      localCalls: node.stats.localCalls,
      remoteCalls: 0,
      retries: 0,
      servedForPeers: 0,
      ...NO_MEMBERSHIP_COUNTERS,
    }),
    shardOwners: () => [],
    shardEpochs: () => [],
    localStats: () => ({
      callsPerSecond: 0,
      p99Ms: null,
      activeEntities: node.status().activeEntities,
      shardsHeld: 0,
    }),
    memberStats: async () => ({}),
    telemetry: new Telemetry(node.name),
    peerTraffic: () => new Map(),
    peerLinks: () => new Map(),
    replicatedMaps: () => [],
    ownerOf: (kind, _id) => (node.defines(kind) ? { shard: null, owner: node.name, epoch: 0 } : null),
    faults: null,
    sharedWriter: async () => null,
  };
}
