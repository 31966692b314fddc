/** IPC helpers for the pub/sub and replicated-map tests (ops run inside the node processes). */

import type { ReplicatedMapStats } from '../../src/pubsub/replicated-map.js';
import type { MapOp, PubSubOp, ReceivedReport } from '../../src/testing/ipc-protocol.js';
import { eventually, type ProcessNode } from '../support/cluster.js';

export function pubsub(node: ProcessNode, op: PubSubOp): Promise<unknown> {
  return node.request({ op: 'pubsub', ...op });
}

export function map(node: ProcessNode, op: MapOp): Promise<unknown> {
  return node.request({ op: 'map', ...op });
}

export async function received(node: ProcessNode, topic: string): Promise<ReceivedReport> {
  return (await pubsub(node, { action: 'received', topic })) as ReceivedReport;
}

export async function members(node: ProcessNode, topic: string): Promise<string[]> {
  return (await pubsub(node, { action: 'members', topic })) as string[];
}

export async function mapStats(node: ProcessNode, name: string): Promise<ReplicatedMapStats> {
  return (await map(node, { action: 'stats', name })) as ReplicatedMapStats;
}

export async function dump(node: ProcessNode, name: string): Promise<[string, unknown][]> {
  return (await map(node, { action: 'dump', name })) as [string, unknown][];
}

/** Two-way partition between the groups (drops every frame either way; the store stays reachable). */
export async function partition(left: ProcessNode[], right: ProcessNode[]): Promise<void> {
  await Promise.all([
    ...left.map((n) => n.faults({ dropTo: right.map((r) => r.name) })),
    ...right.map((n) => n.faults({ dropTo: left.map((l) => l.name) })),
  ]);
}

export async function heal(nodes: ProcessNode[]): Promise<void> {
  await Promise.all(nodes.map((n) => n.faults({ allow: 'all' })));
}

/** Wait until every node's view of `topic`'s members is exactly `expected`. */
export async function waitForMembers(
  nodes: ProcessNode[],
  topic: string,
  expected: string[],
  timeoutMs = 10_000,
): Promise<void> {
  await eventually(async () => {
    for (const node of nodes) {
      const seen = await members(node, topic);
      if (JSON.stringify(seen) !== JSON.stringify(expected)) {
        throw new Error(
          `${node.name} sees members ${JSON.stringify(seen)} of ${topic}, expected ${JSON.stringify(expected)}`,
        );
      }
    }
  }, timeoutMs);
}
