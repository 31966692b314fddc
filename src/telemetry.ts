import { Counter, Histogram, Registry } from 'prom-client';
import { LatencyMetrics } from './latency-metrics.js';

/**
 * The metrics a node records as it works (a leaf module, like logger.ts): one Prometheus
 * registry per node, labelled with the node's name, that `GET /metrics` serves together with
 * the HTTP and process metrics. What an operator alerts on: calls by kind and outcome and
 * their latency, lease renewals (latency, failures), fence rejections, handoffs and failovers
 * (counts and durations), store query latency, and — read at scrape time by the HTTP layer —
 * peer traffic, replicated maps, active entities and shards.
 */

/** Latency buckets in seconds: 0.25 ms … 10 s. */
const LATENCY_BUCKETS = [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Buckets for moves of ownership (handoffs, failovers): 5 ms … 30 s. */
const MOVE_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30];

export type CallOutcome = 'ok' | 'unavailable' | 'timeout' | 'store_unavailable' | 'rejected' | 'error';

export class Telemetry {
  readonly registry = new Registry();
  /** Calls by kind and outcome, with their latency (concord_calls_total, concord_call_duration_seconds). */
  readonly calls: LatencyMetrics<'kind' | 'outcome'>;
  readonly leaseRenewalDuration: Histogram<'outcome'>;
  readonly leaseRenewalFailures: Counter<'reason'>;
  readonly fenceRejections: Counter;
  readonly handoffs: Counter;
  readonly handoffDuration: Histogram;
  readonly failovers: Counter;
  readonly failoverDuration: Histogram;
  readonly storeQueryDuration: Histogram<'op' | 'outcome'>;

  constructor(nodeName: string) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ node: nodeName });
    this.calls = new LatencyMetrics(['kind', 'outcome'], LATENCY_BUCKETS);
    this.registry.registerMetric(
      this.calls.counter(
        'concord_calls_total',
        'Entity calls made through this node (library API and HTTP), by entity kind and outcome (ok, unavailable: certainly not applied, timeout: outcome unknown, store_unavailable, rejected: a domain or input error, error)',
      ),
    );
    this.registry.registerMetric(
      this.calls.histogram(
        'concord_call_duration_seconds',
        'Latency of entity calls made through this node, routing and retries included, by kind and outcome',
      ),
    );
    this.leaseRenewalDuration = new Histogram({
      name: 'concord_lease_renewal_duration_seconds',
      help: 'Latency of lease renewals in the store, by outcome (ok, refused, error)',
      labelNames: ['outcome'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.leaseRenewalFailures = new Counter({
      name: 'concord_lease_renewal_failures_total',
      help: 'Lease renewals that failed: store_error (the store did not answer; the lease runs on), expired (refused: the lease had run out, everything held is dropped), evicted (refused: the members evicted this node)',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of ['store_error', 'expired', 'evicted']) this.leaseRenewalFailures.inc({ reason }, 0);
    this.fenceRejections = new Counter({
      name: 'concord_fence_rejections_total',
      help: 'Writes and activations of this node refused by the store because a newer owner exists (the entity moves; nothing was written)',
      registers,
    });
    this.handoffs = new Counter({
      name: 'concord_handoffs_total',
      help: 'Shards this node handed over to their next owner (drained, passivated, released)',
      registers,
    });
    this.handoffDuration = new Histogram({
      name: 'concord_handoff_duration_seconds',
      help: 'Time from the start of a shard handoff (drain) to its release in the store',
      buckets: MOVE_BUCKETS,
      registers,
    });
    this.failovers = new Counter({
      name: 'concord_failovers_total',
      help: 'Shards this node took over from an owner that did not release them (crashed, cut off, evicted)',
      registers,
    });
    this.failoverDuration = new Histogram({
      name: 'concord_failover_duration_seconds',
      help: 'Time from losing the connection to a shard’s previous owner to claiming the shard here',
      buckets: MOVE_BUCKETS,
      registers,
    });
    this.storeQueryDuration = new Histogram({
      name: 'concord_store_query_duration_seconds',
      help: 'Latency of store operations as this node sees them (queueing included), by operation and outcome (ok, error)',
      labelNames: ['op', 'outcome'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
  }

  /** The last few seconds of calls, for the dashboard (calls/s and p99). */
  readonly recent = new RecentCalls();

  /** Record one finished call, started at `startedAt` (performance.now()). */
  call(kind: string, outcome: CallOutcome, startedAt: number): void {
    const now = performance.now();
    const ms = now - startedAt;
    this.calls.record([kind, outcome], ms / 1000);
    this.recent.record(ms, now);
  }
}

/**
 * Calls of the last few seconds, in one-second slots: how many per second, and the 99th
 * percentile of their latency (from at most 2,000 samples a second).
 */
export class RecentCalls {
  private static readonly SLOTS = 5;
  private static readonly SAMPLES = 2000;
  private readonly counts = new Array<number>(RecentCalls.SLOTS).fill(0);
  private readonly samples: number[][] = Array.from({ length: RecentCalls.SLOTS }, () => []);
  private readonly seconds = new Array<number>(RecentCalls.SLOTS).fill(-1);

  /** One call of `ms`, ended at `now` (performance.now()). */
  record(ms: number, now = performance.now()): void {
    const second = Math.floor(now / 1000);
    const slot = second % RecentCalls.SLOTS;
    if (this.seconds[slot] !== second) {
      this.seconds[slot] = second;
      this.counts[slot] = 0;
      this.samples[slot] = [];
    }
    this.counts[slot]!++;
    const list = this.samples[slot]!;
    if (list.length < RecentCalls.SAMPLES) list.push(ms);
    else list[Math.floor(Math.random() * RecentCalls.SAMPLES)] = ms;
  }

  /** Calls per second and p99 (ms) over the last complete seconds (null p99 without calls). */
  summary(): { callsPerSecond: number; p99Ms: number | null } {
    const now = Math.floor(performance.now() / 1000);
    let count = 0;
    const all: number[] = [];
    let seconds = 0;
    for (let ago = 1; ago < RecentCalls.SLOTS; ago++) {
      const second = now - ago;
      const slot = ((second % RecentCalls.SLOTS) + RecentCalls.SLOTS) % RecentCalls.SLOTS;
      seconds++;
      if (this.seconds[slot] !== second) continue;
      count += this.counts[slot]!;
      all.push(...this.samples[slot]!);
    }
    if (all.length === 0) return { callsPerSecond: 0, p99Ms: null };
    all.sort((a, b) => a - b);
    const p99 = all[Math.min(all.length - 1, Math.floor(all.length * 0.99))]!;
    return { callsPerSecond: Math.round(count / seconds), p99Ms: Math.round(p99 * 100) / 100 };
  }
}

/**
 * `store` with every asynchronous method timed into `telemetry.storeQueryDuration` (labelled by
 * method name). Synchronous members pass through untouched. Every method, `close` too, runs on
 * the store itself (`this` is never the proxy, which would wrap a store's own function-valued
 * fields — PostgresStore's client — as if they were methods).
 */
export function withStoreTiming<T extends object>(store: T, telemetry: Telemetry): T {
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== 'function' || typeof property !== 'string') return value;
      if (property === 'close') return (value as () => unknown).bind(target);
      let fn = wrapped.get(property);
      if (fn === undefined) {
        const histogram = telemetry.storeQueryDuration;
        fn = function timed(this: unknown, ...args: unknown[]) {
          const started = performance.now();
          const result = (value as (...a: unknown[]) => unknown).apply(target, args);
          if (!(result instanceof Promise)) return result;
          return result.then(
            (v) => {
              histogram.observe({ op: property, outcome: 'ok' }, (performance.now() - started) / 1000);
              return v;
            },
            (error: unknown) => {
              histogram.observe({ op: property, outcome: 'error' }, (performance.now() - started) / 1000);
              throw error;
            },
          );
        };
        wrapped.set(property, fn);
      }
      return fn;
    },
  });
}
