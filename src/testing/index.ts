/**
 * concord-cluster/testing — test your own multi-node behaviour the way concord tests itself.
 *
 * - `LocalCluster`: real node processes started through `concord node`, with kill, pause,
 *   resume, restart, stop, partitions, one-way cuts and store cut-offs.
 * - `checkHistory`: a linearizability checker (Wing–Gong search with memoisation, per-key
 *   decomposition) for versioned registers, with minimal failing sub-histories.
 * - `runCheck`: the engine of `concord check`.
 * - `startLoad`: HTTP load through chosen nodes, every call recorded, with availability helpers;
 *   `startBalancedLoad`: load the way clients behind a load balancer make it (rolling restarts).
 */

export { FAULT_KINDS, type FaultKind, type FaultWindow } from './check/faults.js';
export { type Availability, type CheckRunOptions, type CheckRunReport, runCheck } from './check/run.js';
export * from './checker/index.js';
export {
  answeredShare,
  type BalancedCall,
  type BalancedLoad,
  type BalancedLoadOptions,
  callsBetween,
  failedCalls,
  type Load,
  type LoadCall,
  type LoadOptions,
  longestUnavailable,
  startBalancedLoad,
  startLoad,
} from './load.js';
export {
  type AddNodeOptions,
  ClusterNode,
  type EventuallyOptions,
  eventually,
  freePort,
  type HttpResult,
  LocalCluster,
  type LocalClusterOptions,
  quoteIdempotencyKey,
} from './local-cluster.js';
