import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { detectionBoundMs } from '../../cluster/membership.js';
import type { HistoryEntry } from '../checker/history.js';
import { type CheckResult, checkHistory, formatReport } from '../checker/index.js';
import { LocalCluster } from '../local-cluster.js';
import { DEFAULT_FAULT_MS, type FaultKind, type FaultWindow, runFaultSchedule } from './faults.js';
import { renderHtmlReport } from './report-html.js';
import { runWorkload } from './workload.js';

/**
 * `concord check`: start a local cluster (or target running nodes), drive a randomized
 * HTTP workload while a fault schedule runs, and judge the history with the
 * linearizability checker. The verdict is linearizable or not, per key, with the
 * availability inside and outside fault windows.
 */

export interface CheckRunOptions {
  nodes: number;
  store?: string;
  seconds: number;
  faults: readonly FaultKind[];
  keys: number;
  clients: number;
  /** Target running nodes instead of starting a cluster (no kill/pause possible then). */
  urls?: string[];
  /** Extra `concord node` arguments, e.g. ['--ownership', 'none']. */
  nodeArgs?: string[];
  env?: Record<string, string>;
  /** Cluster secret of the nodes the check starts (default random; give the store's when reusing one). */
  secret?: string;
  reportDir?: string;
  opTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface Availability {
  operations: number;
  succeeded: number;
  share: number;
}

/** The node settings the check's cluster runs with (for the detection bound). */
const LEASE_TTL_MS = 1500;

export interface CheckRunReport {
  verdict: 'linearizable' | 'not linearizable' | 'unknown';
  startedAt: string;
  options: Omit<CheckRunOptions, 'log'>;
  operations: number;
  durationMs: number;
  checkerMs: number;
  faults: FaultWindow[];
  availability: {
    inFaults: Availability;
    /**
     * Inside fault windows, counting only operations begun once the detection bound had passed
     * since the window opened (a cut-off or dead node's entities are served by the others by then).
     */
    afterDetection: Availability;
    outsideFaults: Availability;
    overall: Availability;
  };
  /** The detection bound used for `afterDetection` (ms). */
  detectionBoundMs: number;
  keys: { key: string; ok: boolean | 'unknown'; operations: number; elapsedMs: number; explanation?: string }[];
  history: HistoryEntry[];
  result: CheckResult;
}

export async function runCheck(options: CheckRunOptions): Promise<CheckRunReport> {
  const log = options.log ?? (() => {});
  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  const clock = () => performance.now() - t0;
  if (options.urls && options.faults.length > 0) {
    throw new Error('faults are injected only into a cluster that the check starts (omit --urls, or use no faults)');
  }

  let cluster: LocalCluster | null = null;
  if (!options.urls) {
    log(`starting ${options.nodes} nodes on ${options.store ?? 'a fresh SQLite store'} …`);
    cluster = await LocalCluster.start({
      nodes: options.nodes,
      store: options.store,
      args: options.nodeArgs,
      env: options.env,
      ...(options.secret ? { secret: options.secret } : {}),
    });
  }
  try {
    const run = randomBytes(3).toString('hex');
    const keys = Array.from({ length: options.keys }, (_, i) => `check-${run}-k${i}`);
    const urls = () => (cluster ? cluster.nodes.filter((n) => n.running).map((n) => n.url) : options.urls!);
    const endAt = clock() + options.seconds * 1000;
    const done = () => clock() >= endAt;
    log(
      `running ${options.clients} clients on ${keys.length} keys for ${options.seconds} s; faults: ${options.faults.join(', ') || 'none'}`,
    );

    const workloadStart = clock();
    const [history, faults] = await Promise.all([
      runWorkload({ urls, keys, clients: options.clients, opTimeoutMs: options.opTimeoutMs ?? 3000, done, clock }),
      cluster && options.faults.length > 0
        ? runFaultSchedule({ cluster, kinds: options.faults, clock, done, quietMs: 2500, faultMs: DEFAULT_FAULT_MS })
        : Promise.resolve([] as FaultWindow[]),
    ]);
    const durationMs = clock() - workloadStart;
    const detectionBound = detectionBoundMs({ leaseTtlMs: LEASE_TTL_MS });

    log(`checking ${history.length} operations …`);
    const result = checkHistory(history, { timeoutMs: 20_000 });
    const verdict = result.ok === true ? 'linearizable' : result.ok === false ? 'not linearizable' : 'unknown';
    const report: CheckRunReport = {
      verdict,
      startedAt,
      options: { ...options, log: undefined } as Omit<CheckRunOptions, 'log'>,
      operations: history.length,
      durationMs,
      checkerMs: result.elapsedMs,
      faults,
      availability: availability(history, faults, detectionBound),
      detectionBoundMs: detectionBound,
      keys: result.keys.map((k) => ({
        key: k.key,
        ok: k.ok,
        operations: k.operations,
        elapsedMs: k.elapsedMs,
        explanation: k.failure?.explanation ?? k.unknownReason,
      })),
      history,
      result,
    };
    log(formatReport(result));
    if (options.reportDir) {
      const json = { ...report, result: undefined };
      await writeFile(`${options.reportDir}/report.json`, JSON.stringify(json, null, 2));
      await writeFile(`${options.reportDir}/report.html`, renderHtmlReport(report));
    }
    return report;
  } finally {
    await cluster?.stop(5000);
  }
}

/** Share of operations that succeeded (200, or a definite 412), inside and outside fault windows. */
function availability(
  history: HistoryEntry[],
  faults: FaultWindow[],
  detectionBound: number,
): CheckRunReport['availability'] {
  const count = (entries: HistoryEntry[]): Availability => {
    const succeeded = entries.filter((e) => e.outcome === 'ok' || (e.outcome === 'fail' && e.op === 'cas')).length;
    return { operations: entries.length, succeeded, share: entries.length === 0 ? 1 : succeeded / entries.length };
  };
  const inFault = (e: HistoryEntry) => faults.some((w) => e.invokedAt >= w.start && e.invokedAt <= w.end);
  const afterDetection = (e: HistoryEntry) =>
    faults.some((w) => e.invokedAt >= w.start + detectionBound && e.invokedAt <= w.end);
  return {
    inFaults: count(history.filter(inFault)),
    afterDetection: count(history.filter(afterDetection)),
    outsideFaults: count(history.filter((e) => !inFault(e))),
    overall: count(history),
  };
}
