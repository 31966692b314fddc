import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { detectionBoundMs } from '../../cluster/membership.js';
import type { HistoryEntry } from '../checker/history.js';
import { type CheckResult, checkHistory, formatReport } from '../checker/index.js';
import { LocalCluster } from '../local-cluster.js';
import { DEFAULT_FAULT_MS, type FaultKind, type FaultWindow, firstWindows, runFaultSchedule } from './faults.js';
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
  /**
   * The cluster's temporary directory (its SQLite store unless `store` is given, and the node
   * logs): deleted after the run unless it failed — a verdict other than linearizable, or an
   * error — in which case it is kept and its path logged ('on-failure', the default); or
   * always / never kept.
   */
  keepFiles?: 'on-failure' | 'always' | 'never';
  log?: (line: string) => void;
}

export interface Availability {
  operations: number;
  succeeded: number;
  share: number;
}

/** The node settings the check's cluster runs with (for the detection bound). */
const LEASE_TTL_MS = 1500;
/** Quiet time before the first fault window and between windows. */
const QUIET_MS = 2500;

export interface CheckRunReport {
  verdict: 'linearizable' | 'not linearizable' | 'unknown';
  startedAt: string;
  options: Omit<CheckRunOptions, 'log'>;
  operations: number;
  durationMs: number;
  checkerMs: number;
  faults: FaultWindow[];
  /** Fault kinds asked for that got no window: the run ended before their turn. */
  faultsNotInjected: FaultKind[];
  /** The `seconds` at which every fault kind asked for gets a window (0 without faults). */
  secondsForEveryFault: number;
  /** Operations by outcome: succeeded, definitely failed (not applied), unknown (may or may not have taken effect). */
  outcomes: { ok: number; failed: number; unknown: number };
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

  const schedule = options.urls ? [] : firstWindows(options.faults, QUIET_MS, DEFAULT_FAULT_MS);
  const secondsForEveryFault = schedule.length === 0 ? 0 : Math.floor(schedule.at(-1)!.startsAtMs / 1000) + 1;
  const late = schedule.filter((w) => w.startsAtMs >= options.seconds * 1000);
  if (late.length > 0) {
    log(
      `note: ${options.seconds} s is too short for the fault schedule: ${late.map((w) => `${w.kind} would start at ${(w.startsAtMs / 1000).toFixed(1)} s`).join(', ')}; --seconds ${secondsForEveryFault} or more injects every kind once`,
    );
  }

  let cluster: LocalCluster | null = null;
  let failed = true;
  if (!options.urls) {
    log(`starting ${options.nodes} nodes on ${options.store ?? 'a fresh SQLite store'} …`);
    cluster = await LocalCluster.start({
      nodes: options.nodes,
      store: options.store,
      args: options.nodeArgs,
      env: options.env,
      ...(options.secret ? { secret: options.secret } : {}),
      keepFiles: options.keepFiles === 'always',
    });
  }
  try {
    const run = randomBytes(3).toString('hex');
    const keys = Array.from({ length: options.keys }, (_, i) => `check-${run}-k${i}`);
    const urls = () => (cluster ? cluster.nodes.filter((n) => n.running).map((n) => n.url) : options.urls!);
    const endAt = clock() + options.seconds * 1000;
    const done = () => clock() >= endAt;
    const windows = options.faults.map((kind) => `${kind} ${(DEFAULT_FAULT_MS[kind] / 1000).toFixed(0)} s`).join(', ');
    log(
      `running ${options.clients} clients on ${keys.length} keys for ${options.seconds} s; ${cluster && options.faults.length > 0 ? `fault schedule: one window at a time, kinds in turn (${windows}), ${QUIET_MS / 1000} s quiet before each` : 'no faults'}`,
    );

    const workloadStart = clock();
    const [history, faults] = await Promise.all([
      runWorkload({ urls, keys, clients: options.clients, opTimeoutMs: options.opTimeoutMs ?? 3000, done, clock }),
      cluster && options.faults.length > 0
        ? runFaultSchedule({
            cluster,
            kinds: options.faults,
            clock,
            done,
            quietMs: QUIET_MS,
            faultMs: DEFAULT_FAULT_MS,
          })
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
      faultsNotInjected: cluster ? options.faults.filter((kind) => !faults.some((w) => w.kind === kind)) : [],
      secondsForEveryFault,
      outcomes: {
        ok: history.filter((e) => e.outcome === 'ok').length,
        failed: history.filter((e) => e.outcome === 'fail').length,
        unknown: history.filter((e) => e.outcome === 'info').length,
      },
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
    failed = verdict !== 'linearizable';
    return report;
  } finally {
    const keep = options.keepFiles === 'always' || (options.keepFiles !== 'never' && failed);
    await cluster?.stop(5000, { keepFiles: keep });
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
