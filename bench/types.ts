import type { Durability, LoadResult, SystemKind } from './protocol.js';

export const SYSTEMS: readonly SystemKind[] = ['concord', 'concord+client', 'store-call', 'naive'];
/** Systems that only have an HTTP driver. */
export const HTTP_ONLY: ReadonlySet<SystemKind> = new Set(['concord+client']);

import type { StoreBackend } from './stores.js';

/** What a benchmark run is asked to do, and what it found (the JSON report). */

/** R: 100% get; M: 90% get; W: 100% set; WK: W with a fresh idempotency key on every set. */
export type Workload = 'R' | 'M' | 'W' | 'WK';
export type Driver = 'api' | 'http';
export type Section = 'throughput' | 'activation' | 'memory' | 'failover' | 'join' | 'partition' | 'scale';
export type Scale = 'full' | 'quick' | 'tiny';

export const WORKLOADS: readonly Workload[] = ['R', 'M', 'W', 'WK'];
export const WRITE_RATIO: Record<Workload, number> = { R: 0, M: 0.1, W: 1, WK: 1 };
/** Workloads whose sets carry an idempotency key (concord only: the baselines have no keys). */
export const KEYED: Record<Workload, boolean> = { R: false, M: false, W: false, WK: true };
export const SECTIONS: readonly Section[] = [
  'throughput',
  'activation',
  'memory',
  'failover',
  'join',
  'partition',
  'scale',
];
/** What runs without --only: everything but `scale` (dozens of node processes; run it by name). */
export const DEFAULT_SECTIONS: readonly Section[] = SECTIONS.filter((s) => s !== 'scale');

export interface BenchOptions {
  workloads: Workload[];
  /** Store specs: 'sqlite', 'postgres' (embedded, throwaway) or a postgres:// URL. */
  stores: string[];
  nodes: number;
  entities: number;
  concurrency: number[];
  seconds: number;
  warmupSeconds: number;
  /**
   * Measure every throughput row this many times on the same cluster (each with its warm-up)
   * and report the median run with the range (`--repeat`, default 1).
   */
  repeat?: number;
  drivers: Driver[];
  /** Systems of the throughput matrix: concord and its baselines. */
  systems: SystemKind[];
  durability: Durability;
  /** Mutual TLS 1.3 between concord's node processes (a CA and a node certificate made for the run). */
  tls?: boolean;
  scale: Scale;
  sections: Section[];
  /** Cluster sizes of the `scale` section (default 8,16,32; --quick 4,8,16). */
  scaleNodes?: number[];
  /** Lease ttl of the `scale` section's nodes (ms); the node's default (1,500) when absent. */
  scaleLeaseMs?: number;
  /** The command line, for the report. */
  command: string;
  /** Progress lines go here (stderr by default). */
  log?: (line: string) => void;
}

/** Sizes of the extra measurements at each scale. */
export interface ScaleSizes {
  coldActivations: number;
  memoryPoints: number[];
  failoverRuns: number;
  joinLoadMs: number;
  /** Default cluster sizes of the `scale` section, and its idle window (s). */
  scaleNodes: number[];
  scaleIdleSeconds: number;
}

export const SCALES: Record<Scale, ScaleSizes> = {
  full: {
    coldActivations: 10_000,
    memoryPoints: [100_000, 1_000_000],
    failoverRuns: 5,
    joinLoadMs: 9000,
    scaleNodes: [8, 16, 32],
    scaleIdleSeconds: 10,
  },
  quick: {
    coldActivations: 5_000,
    memoryPoints: [20_000, 100_000],
    failoverRuns: 3,
    joinLoadMs: 6000,
    scaleNodes: [4, 8, 16],
    scaleIdleSeconds: 5,
  },
  tiny: {
    coldActivations: 500,
    memoryPoints: [2_000, 5_000],
    failoverRuns: 1,
    joinLoadMs: 3000,
    scaleNodes: [4],
    scaleIdleSeconds: 2,
  },
};

export interface ProcessCpu {
  /** Node name, or 'load generator' (the bench process running autocannon). */
  process: string;
  /** CPU seconds (user + system) this process spent per 10,000 operations. */
  cpuSecondsPer10k: number;
}

export interface ThroughputRow {
  store: StoreBackend | null;
  system: SystemKind;
  driver: Driver;
  workload: Workload;
  concurrency: number;
  opsPerSecond: number;
  /** Latencies in milliseconds. */
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  cpu: ProcessCpu[];
  /** What survives an acknowledged write (W and M rows). */
  durability: string | null;
  /** This row's ops/s over the naive per-node cache's, same driver, workload and C. */
  vsNaive: number | null;
  /** This row's ops/s over store-on-every-call on the same store, same driver, workload and C. */
  vsStoreCall: number | null;
  /** Process ids of the cluster's nodes (all children of the bench process). */
  pids: number[];
  raw: LoadResult;
  /**
   * With `--repeat N` (N > 1): ops/s of each of the N runs, in the order they ran. The row's
   * ops/s, p50, p90 and p99 are then the medians over the runs, max and errors over all runs.
   */
  runs?: number[];
}

export interface ActivationResult {
  store: StoreBackend;
  /** Entities already active (whole cluster) when the fresh ids were called. */
  alreadyActive: number;
  count: number;
  perSecond: number;
  errors: number;
}

export interface MemoryResult {
  store: StoreBackend;
  activeEntities: number;
  heapBytesPerEntity: number;
  rssBytesPerEntity: number;
}

export interface FailoverResult {
  store: StoreBackend;
  runsMs: number[];
  medianMs: number;
  shardsPerRun: number;
}

/** One node of three cut off from the others (not from the store): times from the cut. */
export interface PartitionResult {
  store: StoreBackend;
  runs: { unreadyMs: number; evictedMs: number; servedMs: number; entities: number }[];
  median: { unreadyMs: number; evictedMs: number; servedMs: number };
  /** The documented detection bound for these settings. */
  boundMs: number;
}

export interface PauseResult {
  store: StoreBackend;
  event: 'join' | 'leave';
  longestCallMs: number;
  errors: number;
  errorCodes: Record<string, number>;
  /** How long the join or leave took, until the shard map had settled (ms). */
  rebalanceMs: number;
}

/** What a Store method is for: leases, the shard map, membership (nodes, suspicions), claims and releases. */
export type StoreOpKind = 'lease' | 'shardMap' | 'membership' | 'claims' | 'other';

/** One cluster of the `scale` section (times in ms from the spawn, the SIGTERM or the kill). */
export interface ScaleResult {
  store: StoreBackend;
  nodes: number;
  /** The nodes' lease ttl (ms). */
  leaseTtlMs: number;
  /** Until every node process had started (ConcordNode.start returned in each). */
  processesUpMs: number;
  /** Until every one of the shards was owned by some node and every node was ready. */
  ownedMs: number;
  /** Until every node's shard map was equal, complete and the rendezvous placement. */
  settledMs: number;
  /** Shard claims (CAS attempts, won or lost) made while the cluster started: 256 if no shard moved twice. */
  startClaims: number;
  /** The idle window the rates are measured over (s). */
  idleSeconds: number;
  /** Store operations per second of one idle node (mean over the nodes), by kind. */
  storeOpsPerNodePerSecond: Record<StoreOpKind, number>;
  /** The whole cluster's store operations per second, by Store method. */
  storeOpsPerSecondByOp: Record<string, number>;
  clusterStoreOpsPerSecond: number;
  /** CPU of one idle node (mean), in % of one core. */
  idleCpuPercentPerNode: number;
  /** RSS of one idle node after a GC: mean and largest. */
  rssMiBPerNode: number;
  rssMiBMax: number;
  /** PostgreSQL: server connections to the cluster's database when idle (null on SQLite). */
  storeConnections: number | null;
  /** From spawning one more node until every node's map is equal, complete and placed. */
  joinAgreedMs: number;
  /** From SIGTERM to that node until the same holds over the others. */
  leaveAgreedMs: number;
  /** kill -9 of n2 until each of its shards answered a call through n1. */
  failoverMs: number;
  failoverShards: number;
  /** Failed lease renewals during the run, all nodes, by reason (store_error, expired, evicted). */
  leaseFailures: Record<string, number>;
  /** Lease renewals (all nodes, whole run) that took longer than 250 ms, store queueing included. */
  slowRenewals: number;
  /** The longest event-loop delay of any node: during the start, the idle window, and the rest. */
  maxLoopDelayMs: { start: number; idle: number; rest: number };
  /** The step that did not complete (a timeout), or null. */
  error: string | null;
  /** The machine's 1-minute load average at the end of the idle window (other processes included). */
  loadAverage: number;
}

export interface MachineInfo {
  cores: number;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  platform: string;
}

export interface TargetCheck {
  figure: string;
  target: string;
  measured: string;
  met: boolean | null;
}

export interface BenchReport {
  date: string;
  command: string;
  machine: MachineInfo;
  /** pid of the bench process: every node process of the run is its child. */
  benchPid: number;
  options: Omit<BenchOptions, 'log'>;
  stores: { backend: StoreBackend; description: string }[];
  throughput: ThroughputRow[];
  activations: ActivationResult[];
  memory: MemoryResult[];
  failover: FailoverResult[];
  pauses: PauseResult[];
  partitions: PartitionResult[];
  scale: ScaleResult[];
  /**
   * The median time of one SQLite commit at synchronous=FULL on this machine (bench/fsync-probe.ts),
   * measured when the run writes to SQLite at strict durability: the ceiling of durable writes.
   */
  sqliteCommitMs?: number;
  targets: TargetCheck[];
  /** Node processes started by the run, with their parent pid as seen by the bench. */
  processes: { name: string; system: SystemKind; pid: number; ppid: number }[];
  durationSeconds: number;
}
