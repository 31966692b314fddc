import type { LocalCluster } from '../local-cluster.js';

/**
 * The fault schedule of `concord check`: quiet periods alternate with fault windows. Each
 * window applies one fault to one node, holds it, and undoes it. Windows are recorded on
 * the same clock as the operations, so availability can be split inside/outside faults.
 */

export type FaultKind = 'kill' | 'pause' | 'partition' | 'store';
export const FAULT_KINDS: readonly FaultKind[] = ['kill', 'pause', 'partition', 'store'];

export interface FaultWindow {
  kind: FaultKind;
  node: string;
  start: number;
  end: number;
}

export interface ScheduleOptions {
  cluster: LocalCluster;
  kinds: readonly FaultKind[];
  clock: () => number;
  done: () => boolean;
  quietMs: number;
  /** How long a fault window lasts, by kind (a number: the same for every kind). */
  faultMs: number | Partial<Record<FaultKind, number>>;
  random?: () => number;
}

/**
 * Default window lengths: 3 s, except partitions, which last 7 s so that the time after the
 * detection bound (when the connected nodes have taken the cut-off node's entities over) is
 * long enough to measure.
 */
export const DEFAULT_FAULT_MS: Record<FaultKind, number> = { kill: 3000, pause: 3000, partition: 7000, store: 3000 };

/**
 * When the schedule opens the first window of each kind, at the earliest (ms from the start;
 * a kill window also waits for its node to restart, so it can end later than its length).
 */
export function firstWindows(
  kinds: readonly FaultKind[],
  quietMs: number,
  faultMs: number | Partial<Record<FaultKind, number>>,
): { kind: FaultKind; startsAtMs: number }[] {
  const length = (kind: FaultKind) =>
    typeof faultMs === 'number' ? faultMs : (faultMs[kind] ?? DEFAULT_FAULT_MS[kind]);
  let at = quietMs;
  return kinds.map((kind) => {
    const start = at;
    at += length(kind) + quietMs;
    return { kind, startsAtMs: start };
  });
}

export async function runFaultSchedule(options: ScheduleOptions): Promise<FaultWindow[]> {
  const windows: FaultWindow[] = [];
  const random = options.random ?? Math.random;
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  let turn = 0;
  await sleep(options.quietMs);
  while (!options.done() && options.kinds.length > 0) {
    const kind = options.kinds[turn % options.kinds.length]!;
    turn++;
    const nodes = options.cluster.nodes;
    const victim = nodes[Math.floor(random() * nodes.length)]!;
    const others = nodes.filter((n) => n !== victim).map((n) => n.name);
    const start = options.clock();
    const faultMs =
      typeof options.faultMs === 'number' ? options.faultMs : (options.faultMs[kind] ?? DEFAULT_FAULT_MS[kind]);
    switch (kind) {
      case 'kill':
        await victim.kill();
        await sleep(faultMs);
        await victim.restart();
        break;
      case 'pause':
        await victim.pause();
        await sleep(faultMs);
        victim.resume();
        break;
      case 'partition':
        await options.cluster.partition([victim.name], others);
        await sleep(faultMs);
        await options.cluster.heal();
        break;
      case 'store':
        await options.cluster.cutStore(victim);
        await sleep(faultMs);
        await options.cluster.restoreStore(victim);
        break;
    }
    windows.push({ kind, node: victim.name, start, end: options.clock() });
    if (options.done()) break;
    await sleep(options.quietMs);
  }
  return windows;
}
