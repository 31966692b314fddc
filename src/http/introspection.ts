import type { RefusedJoin } from '../cluster/secret-check.js';
import type { NaiveNode } from '../runtime/naive-node.js';
import type { ConcordNode } from '../runtime/node.js';
import type { FaultSwitch } from '../transport/faults.js';

/**
 * What the operations routes (metrics, /cluster, dashboard) read of a node beyond the
 * app-facing API: its counters, who owns which shard, and its test fault switch. One
 * adapter per kind of node, so the HTTP layer never reaches into either's internals.
 */

export type Ownership = 'single' | 'none';

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
  /** The test-only fault switch, when the node runs with fault injection. */
  readonly faults: FaultSwitch | null;
}

const REFUSED_JOINS_READ_TIMEOUT_MS = 1000;

export function introspectConcordNode(node: ConcordNode): NodeIntrospection {
  let lastRefusedJoins: RefusedJoins = { now: 0, joins: [] };
  return {
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
    faults: node.faults,
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
    faults: null,
  };
}
