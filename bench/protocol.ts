/** Messages between the bench orchestrator and the node processes it forks (bench-node.ts). */

/** Which service the node process runs. */
export type SystemKind =
  /** concord: single owner, fenced write-through. */
  | 'concord'
  /** `--ownership none`: each process keeps its own in-memory copy (NaiveNode). */
  | 'naive'
  /** Store on every call: get = a read query, set = a read + a fenced write transaction. */
  | 'store-call'
  /**
   * concord called through `concord-cluster/client` (HTTP driver only): the bench process runs
   * the client against a concord cluster, each call sent straight to the entity's owner.
   */
  | 'concord+client';

/** The service a system's node processes run (concord+client runs concord nodes). */
export function nodeSystem(system: SystemKind): Exclude<SystemKind, 'concord+client'> {
  return system === 'concord+client' ? 'concord' : system;
}

export type Durability = 'strict' | 'relaxed';

export interface BenchNodeConfig {
  name: string;
  system: Exclude<SystemKind, 'concord+client'>;
  /** Store URL (concord and store-call). */
  store: string;
  secret: string;
  durability: Durability;
  /** Serve the HTTP API (entity-state app) on this port; 0 picks one; null: no HTTP. */
  httpPort: number | null;
  maxActiveEntities?: number;
  leaseTtlMs?: number;
  /** Peer TLS files (paths) for concord nodes; absent: plain TCP. */
  tls?: { cert: string; key: string; ca: string };
}

export type BenchRequest =
  | { id: number; op: 'status' }
  | { id: number; op: 'cpu' }
  | { id: number; op: 'memory' }
  /** Store operations this node has made since it started, by Store method (concord only). */
  | { id: number; op: 'store-ops' }
  | { id: number; op: 'call'; entityId: string; handler: 'get' | 'set'; timeoutMs: number }
  | {
      id: number;
      op: 'load';
      /** Ids are `${prefix}${0..count-1}`. */
      prefix: string;
      count: number;
      /** Share of calls that are sets (0..1). */
      writeRatio: number;
      /** Every set carries a fresh idempotency key (workload WK). */
      idempotencyKeys?: boolean;
      concurrency: number;
      warmupMs: number;
      durationMs: number;
    }
  | {
      id: number;
      op: 'activate';
      /** Fresh ids `${prefix}${from..from+count-1}`, each called once (get), `concurrency` in flight. */
      prefix: string;
      from: number;
      count: number;
      concurrency: number;
    };

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
export type BenchRequestBody = DistributiveOmit<BenchRequest, 'id'>;

export type BenchEvent =
  | { type: 'ready'; name: string; pid: number; httpUrl: string | null }
  | { type: 'start-failed'; message: string };

export type BenchResponse =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { code: string; message: string } };

export interface CpuSample {
  /** process.cpuUsage() in microseconds, user + system, all threads of the process. */
  user: number;
  system: number;
  at: number;
}

export interface MemorySample {
  heapUsed: number;
  rss: number;
  activeEntities: number;
}

export interface NodeStatus {
  name: string;
  held: number[];
  activeEntities: number;
  /** Ready for traffic (concord: a member with a valid lease and a shard map). */
  ready: boolean;
  /** Why it is not ready (concord), or null. */
  notReady: string | null;
}

/** Store operations made so far, by Store method (e.g. renewLease, listShards); failed lease renewals by reason. */
export interface StoreOps {
  ops: Record<string, number>;
  leaseFailures: Record<string, number>;
  /** Lease renewals that took longer than 250 ms in the store (queueing in the node included). */
  slowRenewals: number;
  /** The longest event-loop delay since the previous store-ops request (ms). */
  maxLoopDelayMs: number;
}

/** A latency summary in microseconds. */
export interface Latency {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface KindLatency extends Latency {
  p999: number;
  count: number;
}

export interface LoadResult extends Latency {
  /** 99.9th percentile (µs); absent from the HTTP driver. */
  p999?: number;
  /**
   * Library driver on concord: the same percentiles for calls this node owns (answered from its
   * own memory) and for calls routed to a peer, to tell which kind makes the tail.
   */
  byKind?: { local: KindLatency; remote: KindLatency };
  /** Concord: local calls the router's budget made wait for a later turn (warm-up included). */
  deferredLocalCalls?: number;
  ops: number;
  errors: number;
  /** Failed calls by error code (library driver) or status / error (HTTP driver). */
  errorCodes: Record<string, number>;
  durationMs: number;
  /** concord+client rows: the client's counters over the row (warm-up included). */
  client?: { calls: number; retries: number; moved: number; undirected: number; refreshes: number };
}

export interface ActivateResult {
  count: number;
  errors: number;
  elapsedMs: number;
}
