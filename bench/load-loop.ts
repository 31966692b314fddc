import * as hdr from 'hdr-histogram-js';
import type { ActivateResult, KindLatency, LoadResult } from './protocol.js';

/**
 * The library-API driver: a closed loop of `concurrency` callers inside a node process, each
 * waiting for its reply before the next call, with latencies in an HDR histogram (µs).
 */

export type Caller = (id: string, write: boolean, n: number) => Promise<unknown>;
/** Whether this node serves `id` itself (a local call) rather than routing it to a peer. */
export type IsLocal = (id: string) => boolean;

export interface LoopOptions {
  prefix: string;
  count: number;
  writeRatio: number;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
  /** Called when the measuring window opens and closes (CPU samples). */
  onWindow?: (edge: 'start' | 'end') => Promise<void>;
}

export function latencyHistogram(): hdr.Histogram {
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 120_000_000,
    numberOfSignificantValueDigits: 3,
  });
}

function summary(histogram: hdr.Histogram): KindLatency {
  return {
    count: histogram.totalCount,
    p50: histogram.getValueAtPercentile(50),
    p90: histogram.getValueAtPercentile(90),
    p99: histogram.getValueAtPercentile(99),
    p999: histogram.getValueAtPercentile(99.9),
    max: histogram.maxValue,
  };
}

export async function closedLoop(call: Caller, options: LoopOptions, isLocal?: IsLocal): Promise<LoadResult> {
  const histogram = latencyHistogram();
  // Per kind (local / remote), when the caller can tell: which calls make the tail.
  const local = isLocal === undefined ? null : latencyHistogram();
  const remote = isLocal === undefined ? null : latencyHistogram();
  const ids = Array.from({ length: options.count }, (_, i) => `${options.prefix}${i}`);
  // Which ids are local, looked up once when the window opens (ownership is settled by then)
  // rather than on every call, so that the split costs the measured calls nothing.
  let localIds: Uint8Array | null = null;
  let ops = 0;
  let errors = 0;
  const errorCodes: Record<string, number> = {};
  let measuring = false;
  let running = true;
  let n = 0;
  const worker = async (seed: number) => {
    let x = seed;
    let k = 0;
    while (running) {
      // Calls answered from memory resolve in microtasks only: yield now and then so that
      // timers and I/O (the measuring window, peers, IPC) still run, as in a real service.
      if ((++k & 31) === 0) await new Promise(setImmediate);
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const index = x % ids.length;
      const id = ids[index]!;
      const write = options.writeRatio > 0 && Math.random() < options.writeRatio;
      const kind = localIds === null ? null : localIds[index] === 1 ? local : remote;
      const started = performance.now();
      try {
        await call(id, write, n++);
        if (measuring) {
          const us = Math.max(1, Math.round((performance.now() - started) * 1000));
          histogram.recordValue(us);
          kind?.recordValue(us);
          ops++;
        }
      } catch (error) {
        if (measuring) {
          errors++;
          const code = String((error as { code?: unknown }).code ?? (error as Error).name);
          errorCodes[code] = (errorCodes[code] ?? 0) + 1;
        }
      }
    }
  };
  const workers = Array.from({ length: options.concurrency }, (_, w) => worker(w * 7919 + 1));
  await sleep(options.warmupMs);
  await options.onWindow?.('start');
  if (isLocal !== undefined) localIds = Uint8Array.from(ids, (id) => (isLocal(id) ? 1 : 0));
  measuring = true;
  const started = performance.now();
  await sleep(options.durationMs);
  measuring = false;
  const durationMs = performance.now() - started;
  await options.onWindow?.('end');
  running = false;
  await Promise.all(workers);
  const result: LoadResult = {
    ops,
    errors,
    errorCodes,
    durationMs,
    p50: histogram.getValueAtPercentile(50),
    p90: histogram.getValueAtPercentile(90),
    p99: histogram.getValueAtPercentile(99),
    p999: histogram.getValueAtPercentile(99.9),
    max: histogram.maxValue,
  };
  if (local !== null && remote !== null) {
    result.byKind = { local: summary(local), remote: summary(remote) };
    local.destroy();
    remote.destroy();
  }
  histogram.destroy();
  return result;
}

/** Call each fresh id once, `concurrency` calls in flight: cold activations. */
export async function activateAll(
  call: (id: string) => Promise<unknown>,
  prefix: string,
  from: number,
  count: number,
  concurrency: number,
): Promise<ActivateResult> {
  let next = from;
  const end = from + count;
  let errors = 0;
  const started = performance.now();
  const worker = async () => {
    let k = 0;
    while (next < end) {
      if ((++k & 31) === 0) await new Promise(setImmediate);
      const id = `${prefix}${next++}`;
      try {
        await call(id);
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { count, errors, elapsedMs: performance.now() - started };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
