import type { BenchChild } from './child.js';
import { clientLoad } from './client-load.js';
import { httpLoad } from './http-load.js';
import { sleep } from './load-loop.js';
import type { CpuSample, LoadResult, SystemKind } from './protocol.js';
import type { StoreBackend } from './stores.js';
import {
  type BenchOptions,
  type Driver,
  HTTP_ONLY,
  KEYED,
  type ProcessCpu,
  type ThroughputRow,
  type Workload,
  WRITE_RATIO,
} from './types.js';

/** The R / M / W matrix on one running cluster: every driver × workload × concurrency. */

export const ENTITY_PREFIX = 'e';

export interface CellContext {
  nodes: BenchChild[];
  system: SystemKind;
  store: StoreBackend | null;
  durability: string | null;
  /**
   * Also measure `concord+client` on this (concord) cluster: each of its HTTP rows right after
   * the autocannon row with the same workload and C, so the two are compared under the same
   * conditions (the machine's load drifts).
   */
  withClient?: boolean;
}

export async function throughputMatrix(context: CellContext, options: BenchOptions): Promise<ThroughputRow[]> {
  const rows: ThroughputRow[] = [];
  const repeat = options.repeat ?? 1;
  const measure = async (cellContext: CellContext, driver: Driver, workload: Workload, concurrency: number) => {
    const runs: ThroughputRow[] = [];
    for (let run = 1; run <= repeat; run++) {
      runs.push(
        await measureOnce(cellContext, driver, workload, concurrency, repeat > 1 ? ` (run ${run}/${repeat})` : ''),
      );
    }
    const row = medianOfRuns(runs);
    if (repeat > 1) {
      options.log?.(
        `  ${cellContext.system.padEnd(14)} ${driver.padEnd(4)} ${workload} C=${String(concurrency).padEnd(3)} median of ${repeat}: ${Math.round(row.opsPerSecond).toLocaleString('en-US')} ops/s  p99 ${row.p99Ms.toFixed(2)} ms`,
      );
    }
    rows.push(row);
  };
  const measureOnce = async (
    cellContext: CellContext,
    driver: Driver,
    workload: Workload,
    concurrency: number,
    runLabel: string,
  ): Promise<ThroughputRow> => {
    const row = await cell(cellContext, options, driver, workload, concurrency);
    options.log?.(
      `  ${cellContext.system.padEnd(14)} ${driver.padEnd(4)} ${workload} C=${String(concurrency).padEnd(3)} ${Math.round(row.opsPerSecond).toLocaleString('en-US').padStart(9)} ops/s  p99 ${row.p99Ms.toFixed(2)} ms${row.errors ? `  errors ${row.errors}` : ''}${runLabel}`,
    );
    const kinds = row.raw.byKind;
    if (kinds !== undefined) {
      // The latency histogram, and per kind: is the tail local calls or replies from peers?
      const ms = (us: number) => (us / 1000).toFixed(3);
      const line = (name: string, l: { p50: number; p90: number; p99: number; p999?: number; max: number }) =>
        `${name} p50 ${ms(l.p50)} p90 ${ms(l.p90)} p99 ${ms(l.p99)} p99.9 ${ms(l.p999 ?? 0)} max ${ms(l.max)} ms`;
      options.log?.(`    ${line('all   ', row.raw)}`);
      options.log?.(`    ${line('local ', kinds.local)} (${kinds.local.count} calls)`);
      options.log?.(`    ${line('remote', kinds.remote)} (${kinds.remote.count} calls)`);
      options.log?.(`    local calls deferred to a later turn: ${row.raw.deferredLocalCalls ?? 0}`);
    }
    return row;
  };
  const client: CellContext = { ...context, system: 'concord+client', withClient: false };
  for (const driver of options.drivers) {
    if (HTTP_ONLY.has(context.system) && driver !== 'http') continue;
    for (const workload of options.workloads) {
      // The baselines have no idempotency keys: a keyed row of theirs would be a plain W row.
      if (KEYED[workload] && context.system !== 'concord' && context.system !== 'concord+client') continue;
      for (const concurrency of options.concurrency) {
        await measure(context, driver, workload, concurrency);
        if (context.withClient && driver === 'http') await measure(client, driver, workload, concurrency);
      }
    }
  }
  return rows;
}

async function cell(
  context: CellContext,
  options: BenchOptions,
  driver: Driver,
  workload: Workload,
  concurrency: number,
): Promise<ThroughputRow> {
  const { nodes } = context;
  const warmupMs = Math.round(options.warmupSeconds * 1000);
  const durationMs = Math.round(options.seconds * 1000);
  const load = {
    prefix: ENTITY_PREFIX,
    count: options.entities,
    writeRatio: WRITE_RATIO[workload],
    idempotencyKeys: KEYED[workload],
    concurrency,
    warmupMs,
    durationMs,
  };
  let before: CpuSample[] = [];
  let after: CpuSample[] = [];
  let generatorBefore = process.cpuUsage();
  let generatorCpuUs = 0;
  const sample = () => Promise.all(nodes.map((node) => node.cpu()));
  let result: LoadResult;
  const onWindow = async (edge: 'start' | 'end') => {
    if (edge === 'start') {
      before = await sample();
      generatorBefore = process.cpuUsage();
    } else {
      const used = process.cpuUsage(generatorBefore);
      generatorCpuUs = used.user + used.system;
      after = await sample();
    }
  };
  const urls = () => nodes.map((node) => node.httpUrl!);
  if (context.system === 'concord+client') {
    result = await clientLoad({ ...load, urls: urls(), onWindow });
  } else if (driver === 'api') {
    const running = nodes[0]!.load(load);
    await sleep(warmupMs);
    before = await sample();
    result = await running;
    after = await sample();
  } else {
    result = await httpLoad({ ...load, urls: urls(), onWindow });
  }
  const opsPerSecond = result.durationMs > 0 ? (result.ops / result.durationMs) * 1000 : 0;
  const cpu: ProcessCpu[] = nodes.map((node, i) => {
    const b = before[i]!;
    const a = after[i]!;
    const windowSeconds = (a.at - b.at) / 1000;
    const cpuSeconds = (a.user + a.system - b.user - b.system) / 1e6;
    return { process: node.name, cpuSecondsPer10k: perTenK(cpuSeconds, opsPerSecond * windowSeconds) };
  });
  if (driver === 'http') {
    cpu.push({
      process: 'load generator',
      cpuSecondsPer10k: perTenK(generatorCpuUs / 1e6, opsPerSecond * (result.durationMs / 1000)),
    });
  }
  return {
    store: context.store,
    system: context.system,
    driver,
    workload,
    concurrency,
    opsPerSecond,
    p50Ms: result.p50 / 1000,
    p90Ms: result.p90 / 1000,
    p99Ms: result.p99 / 1000,
    maxMs: result.max / 1000,
    errors: result.errors,
    cpu,
    durability: workload === 'R' ? null : context.durability,
    vsNaive: null,
    vsStoreCall: null,
    pids: nodes.map((node) => node.pid),
    raw: result,
  };
}

/**
 * One row from several runs of the same cell: the run with the median ops/s gives the CPU,
 * pids and histogram; ops/s, p50, p90 and p99 are the medians over the runs; max and errors
 * cover every run; `runs` lists each run's ops/s in the order they ran. With an even number
 * of runs each median is the less flattering of the two middle values: the lower ops/s, the
 * higher latency.
 */
export function medianOfRuns(runs: readonly ThroughputRow[]): ThroughputRow {
  if (runs.length === 0) throw new RangeError('medianOfRuns needs at least one run');
  if (runs.length === 1) return runs[0]!;
  const lowerMiddle = Math.floor((runs.length - 1) / 2);
  const upperMiddle = Math.floor(runs.length / 2);
  const latency = (values: number[]) => [...values].sort((a, b) => a - b)[upperMiddle]!;
  const representative = [...runs].sort((a, b) => a.opsPerSecond - b.opsPerSecond)[lowerMiddle]!;
  const errorCodes: Record<string, number> = {};
  for (const run of runs) {
    for (const [code, count] of Object.entries(run.raw.errorCodes)) errorCodes[code] = (errorCodes[code] ?? 0) + count;
  }
  return {
    ...representative,
    p50Ms: latency(runs.map((run) => run.p50Ms)),
    p90Ms: latency(runs.map((run) => run.p90Ms)),
    p99Ms: latency(runs.map((run) => run.p99Ms)),
    maxMs: Math.max(...runs.map((run) => run.maxMs)),
    errors: runs.reduce((sum, run) => sum + run.errors, 0),
    raw: { ...representative.raw, errorCodes },
    runs: runs.map((run) => run.opsPerSecond),
  };
}

function perTenK(cpuSeconds: number, ops: number): number {
  return ops > 0 ? (cpuSeconds / ops) * 10_000 : 0;
}

/** Fill in the baseline ratios: same driver, workload and C; store-call on the same store. */
export function addRatios(rows: ThroughputRow[]): void {
  const key = (r: ThroughputRow) => `${r.driver}/${r.workload}/${r.concurrency}`;
  for (const row of rows) {
    const naive = rows.find((r) => r.system === 'naive' && key(r) === key(row));
    const storeCall = rows.find((r) => r.system === 'store-call' && r.store === row.store && key(r) === key(row));
    row.vsNaive = naive && naive.opsPerSecond > 0 ? row.opsPerSecond / naive.opsPerSecond : null;
    row.vsStoreCall = storeCall && storeCall.opsPerSecond > 0 ? row.opsPerSecond / storeCall.opsPerSecond : null;
  }
}
