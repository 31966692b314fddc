/**
 * The pub/sub and replicated-map operations of an IPC-driven node (see ipc-node.ts), used by
 * the multi-node tests and measurements. Subscriptions record what arrives inside the node,
 * so a test can check FIFO order of 100,000 messages without shipping them over IPC.
 */
import type { ConcordNode } from '../runtime/node.js';
import type { MapOp, PubSubOp, ReceivedReport, SenderReport } from './ipc-protocol.js';

interface TopicRecord {
  total: number;
  /** Handler calls after unsubscribe was called: must stay 0. */
  afterUnsubscribe: number;
  firstAt: number;
  lastAt: number;
  senders: Map<string, SenderReport>;
  unsubscribe: (() => void) | null;
}

const records = new Map<string, TopicRecord>();
const nodeEvents: string[] = [];
let watchingNodes = false;
const sequences = new Map<string, number>();

function wallNow(): number {
  return performance.timeOrigin + performance.now();
}

export async function pubsubOp(node: ConcordNode, op: PubSubOp): Promise<unknown> {
  switch (op.action) {
    case 'subscribe': {
      records.get(op.topic)?.unsubscribe?.();
      const record: TopicRecord = {
        total: 0,
        afterUnsubscribe: 0,
        firstAt: 0,
        lastAt: 0,
        senders: new Map(),
        unsubscribe: null,
      };
      records.set(op.topic, record);
      record.unsubscribe = node.pubsub.subscribe<{ s: number }>(op.topic, (message, from) => {
        if (record.unsubscribe === null) record.afterUnsubscribe++;
        const at = wallNow();
        if (record.total === 0) record.firstAt = at;
        record.lastAt = at;
        record.total++;
        let sender = record.senders.get(from);
        if (sender === undefined) {
          sender = { count: 0, last: -1, reordered: 0, gaps: 0 };
          record.senders.set(from, sender);
        }
        sender.count++;
        const s = message.s;
        if (s <= sender.last) sender.reordered++;
        else if (sender.last >= 0 && s !== sender.last + 1) sender.gaps++;
        sender.last = Math.max(sender.last, s);
      });
      return true;
    }
    case 'unsubscribe': {
      const record = records.get(op.topic);
      const unsubscribe = record?.unsubscribe;
      if (record) record.unsubscribe = null;
      unsubscribe?.();
      return true;
    }
    case 'publish': {
      const chunk = op.chunk ?? 1000;
      const started = performance.now();
      const first = sequences.get(op.topic) ?? 0;
      let next = first;
      while (next < first + op.count) {
        const end = Math.min(first + op.count, next + chunk);
        for (; next < end; next++) node.pubsub.publish(op.topic, { s: next });
        sequences.set(op.topic, next);
        // Let the transport write and read between chunks, like a real producer.
        if (next < first + op.count) await new Promise((resolve) => setImmediate(resolve));
      }
      return {
        first,
        last: next - 1,
        startedAt: wallNow() - (performance.now() - started),
        ms: performance.now() - started,
      };
    }
    case 'members':
      return node.pubsub.members(op.topic);
    case 'received': {
      const record = records.get(op.topic);
      const report: ReceivedReport = {
        total: record?.total ?? 0,
        afterUnsubscribe: record?.afterUnsubscribe ?? 0,
        firstAt: record?.firstAt ?? 0,
        lastAt: record?.lastAt ?? 0,
        senders: Object.fromEntries(record?.senders ?? []),
      };
      return report;
    }
    case 'stats':
      return { ...node.pubsub.stats(), nodes: node.pubsub.nodes() };
    case 'watchNodes':
      if (!watchingNodes) {
        watchingNodes = true;
        node.pubsub.on('node-up', (name) => nodeEvents.push(`up ${name}`));
        node.pubsub.on('node-down', (name) => nodeEvents.push(`down ${name}`));
      }
      return true;
    case 'nodeEvents':
      return [...nodeEvents];
  }
}

export async function mapOp(node: ConcordNode, op: MapOp): Promise<unknown> {
  if (op.action === 'open') {
    node.replicatedMap(op.name, { syncIntervalMs: op.syncIntervalMs, tombstoneGraceMs: op.tombstoneGraceMs });
    return true;
  }
  const map = node.replicatedMap<unknown>(op.name);
  switch (op.action) {
    case 'set':
      for (const [key, value] of op.entries) map.set(key, value);
      return op.entries.length;
    case 'delete':
      for (const key of op.keys) map.delete(key);
      return op.keys.length;
    case 'get':
      return map.get(op.key) ?? null;
    case 'dump':
      return [...map.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    case 'stats':
      return map.stats();
    case 'flush':
      return map.flush(op.timeoutMs);
    case 'sync':
      return map.sync();
  }
}
