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
}

export interface NodeIntrospection {
  /** 'single': concord's single-owner runtime. 'none': the uncoordinated baseline. */
  readonly ownership: Ownership;
  counters(): RuntimeCounters;
  /** The owner this node believes each shard has, indexed by shard (empty without shards). */
  shardOwners(): (string | null)[];
  /** The test-only fault switch, when the node runs with fault injection. */
  readonly faults: FaultSwitch | null;
}

export function introspectConcordNode(node: ConcordNode): NodeIntrospection {
  return {
    ownership: 'single',
    counters: () => ({ ...node.host.stats, ...node.router.stats }),
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
    }),
    shardOwners: () => [],
    faults: null,
  };
}
