/** Messages between a test (or benchmark) process and a node process it forked. */

export interface IpcNodeConfig {
  name: string;
  store: string;
  secret: string;
  leaseTtlMs?: number;
  callTimeoutMs?: number;
  shardCount?: number;
  idleTimeoutMs?: number;
  maxActiveEntities?: number;
  durability?: 'strict' | 'relaxed';
  faultInjection?: boolean;
}

export type IpcRequest =
  | {
      id: number;
      op: 'call';
      kind: string;
      entityId: string;
      handler: string;
      message?: unknown;
      timeoutMs?: number;
      /** Passed to `node.callByName` as CallOptions.idempotencyKey. */
      idempotencyKey?: string;
    }
  | { id: number; op: 'status' }
  | { id: number; op: 'faults'; dropTo?: string[]; allow?: string[] | 'all'; cutStore?: boolean }
  | { id: number; op: 'stop' }
  /** Like `call`, but the outcome comes back as a value (errors with their details): a TryCallResult. */
  | {
      id: number;
      op: 'try-call';
      kind: string;
      entityId: string;
      handler: string;
      message?: unknown;
      timeoutMs?: number;
      idempotencyKey?: string;
    }
  /** The node's team projection (started on the first request): TeamsResult. */
  | { id: number; op: 'teams' }
  | ({ id: number; op: 'pubsub' } & PubSubOp)
  | ({ id: number; op: 'map' } & MapOp)
  | {
      id: number;
      op: 'load';
      kind: string;
      ids: string[];
      /** Share of calls that are writes (0..1). */
      writeRatio: number;
      concurrency: number;
      durationMs: number;
      warmupMs?: number;
    };

/** Pub/sub operations (ipc-services.ts). Published messages are `{ s: seq }`, seq counting up per topic. */
export type PubSubOp =
  | { action: 'subscribe'; topic: string }
  | { action: 'unsubscribe'; topic: string }
  | { action: 'publish'; topic: string; count: number; chunk?: number }
  | { action: 'members'; topic: string }
  | { action: 'received'; topic: string }
  | { action: 'stats' }
  /** Start recording node-up / node-down events; `nodeEvents` returns them ("up n2", "down n3"). */
  | { action: 'watchNodes' }
  | { action: 'nodeEvents' };

/** Replicated-map operations (ipc-services.ts); every one but `open` needs the map open. */
export type MapOp =
  | { action: 'open'; name: string; syncIntervalMs?: number; tombstoneGraceMs?: number }
  | { action: 'set'; name: string; entries: [string, unknown][] }
  | { action: 'delete'; name: string; keys: string[] }
  | { action: 'get'; name: string; key: string }
  | { action: 'dump'; name: string }
  | { action: 'stats'; name: string }
  | { action: 'flush'; name: string; timeoutMs?: number }
  | { action: 'sync'; name: string };

/** What one sender's messages on one topic looked like at a subscriber. */
export interface SenderReport {
  count: number;
  /** Highest sequence number seen. */
  last: number;
  /** Messages that arrived after a higher sequence number (FIFO violations). */
  reordered: number;
  /** Jumps over missing sequence numbers (lost messages). */
  gaps: number;
}

export interface ReceivedReport {
  total: number;
  afterUnsubscribe: number;
  /** Wall-clock ms (sub-ms precision) of the first and last delivery. */
  firstAt: number;
  lastAt: number;
  senders: Record<string, SenderReport>;
}

export type IpcEvent =
  | { type: 'ready'; name: string; incarnation: number | null; pid: number }
  | { type: 'start-failed'; error: { code: string; message: string } };

export type IpcResponse =
  | { id: number; ok: true; value: unknown }
  | {
      id: number;
      ok: false;
      error: { code: string; name: string; message: string; details?: Record<string, unknown> | undefined };
    };

export interface LoadResult {
  ops: number;
  errors: number;
  durationMs: number;
  /** Latencies in microseconds. */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  cpuUserMs: number;
  cpuSystemMs: number;
}

export type TryCallResult =
  | { ok: true; value: unknown }
  | { ok: false; error: { code: string; name: string; message: string; details?: Record<string, unknown> } };

export interface TeamsResult {
  teams: Record<string, string[]>;
  /** Events the projection has folded in. */
  applied: number;
}
