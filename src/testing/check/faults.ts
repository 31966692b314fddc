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
  faultMs: number;
  random?: () => number;
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
    switch (kind) {
      case 'kill':
        await victim.kill();
        await sleep(options.faultMs);
        await victim.restart();
        break;
      case 'pause':
        victim.pause();
        await sleep(options.faultMs);
        victim.resume();
        break;
      case 'partition':
        await options.cluster.partition([victim.name], others);
        await sleep(options.faultMs);
        await options.cluster.heal();
        break;
      case 'store':
        await options.cluster.cutStore(victim);
        await sleep(options.faultMs);
        await options.cluster.restoreStore(victim);
        break;
    }
    windows.push({ kind, node: victim.name, start, end: options.clock() });
    if (options.done()) break;
    await sleep(options.quietMs);
  }
  return windows;
}
