import { mkdtempSync, readFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { makeCerts } from '../src/cli/certs.js';
import type { BenchChild } from './child.js';
import { setBenchTls, startCluster, stopCluster } from './cluster.js';
import { durabilityShort } from './durability.js';
import { activationAndMemory, failover, joinAndLeave } from './extras.js';
import { measureSqliteCommitMs } from './fsync-probe.js';
import { partitionDetection } from './partition.js';
import type { SystemKind } from './protocol.js';
import { checkTargets } from './report.js';
import { scaleSection } from './scale.js';
import { type StoreBackend, type StoreFactory, storeFactory } from './stores.js';
import { addRatios, throughputMatrix } from './throughput.js';
import {
  type BenchOptions,
  type BenchReport,
  type MachineInfo,
  SCALES,
  type ThroughputRow,
  WORKLOADS,
} from './types.js';

/**
 * One benchmark run: for each store, concord and the store-on-every-call baseline (and, once,
 * the naive per-node cache) through the throughput matrix, then concord's extra figures.
 * Every node process is a child of this process.
 */

export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const started = performance.now();
  const log = options.log ?? (() => {});
  const sizes = SCALES[options.scale];
  const want = (section: BenchOptions['sections'][number]) => options.sections.includes(section);
  const report: BenchReport = {
    date: new Date().toISOString(),
    command: options.command,
    machine: machine(),
    benchPid: process.pid,
    options: { ...options, log: undefined } as BenchReport['options'],
    stores: [],
    throughput: [],
    activations: [],
    memory: [],
    failover: [],
    pauses: [],
    partitions: [],
    scale: [],
    targets: [],
    processes: [],
    durationSeconds: 0,
  };
  delete (report.options as { log?: unknown }).log;
  if (options.tls) {
    const dir = mkdtempSync(join(tmpdir(), 'concord-bench-tls-'));
    const made = await makeCerts({ dir, nodes: ['bench-node'] });
    setBenchTls(made.nodes['bench-node']);
    log('concord nodes talk over mutual TLS 1.3 (one certificate of a throwaway CA for every node)');
  } else {
    setBenchTls(undefined);
  }
  const tracked = {
    track(nodes: BenchChild[]) {
      for (const node of nodes) {
        report.processes.push({ name: node.name, system: node.config.system, pid: node.pid, ppid: parentOf(node.pid) });
      }
    },
  };

  if (
    options.stores.some((spec) => spec.startsWith('sqlite')) &&
    options.durability === 'strict' &&
    want('throughput') &&
    options.workloads.some((workload) => workload.startsWith('W'))
  ) {
    report.sqliteCommitMs = measureSqliteCommitMs();
    log(`one SQLite commit at synchronous=FULL takes ${report.sqliteCommitMs.toFixed(3)} ms here (median)`);
  }

  let naiveDone = false;
  // With both concord and concord+client asked for, the client's rows are measured on concord's
  // cluster, each right after the autocannon row it is compared with.
  const http = options.drivers.includes('http');
  const clientWithConcord = http && options.systems.includes('concord') && options.systems.includes('concord+client');
  for (const spec of options.stores) {
    log(`store ${spec}: starting`);
    const factory = await storeFactory(spec);
    try {
      report.stores.push({ backend: factory.backend, description: factory.description });
      if (want('throughput')) {
        for (const system of options.systems) {
          if (system === 'naive' && naiveDone) continue;
          if (system === 'concord+client' && (clientWithConcord || !http)) continue;
          const withClient = system === 'concord' && clientWithConcord;
          report.throughput.push(...(await matrix(system, factory, options, tracked, withClient)));
          if (system === 'naive') naiveDone = true;
        }
      }
      if (want('activation') || want('memory')) {
        log(`store ${factory.backend}: activations and memory`);
        const r = await activationAndMemory(factory, options, sizes, tracked, want('activation'), want('memory'));
        report.activations.push(...r.activations);
        report.memory.push(...r.memory);
      }
      if (want('failover')) {
        log(`store ${factory.backend}: failover after kill -9`);
        report.failover.push(await failover(factory, options, sizes, tracked));
      }
      if (want('join')) {
        log(`store ${factory.backend}: join and leave under load`);
        report.pauses.push(...(await joinAndLeave(factory, options, sizes, tracked)));
      }
      if (want('partition')) {
        log(`store ${factory.backend}: one node of three cut off from the others`);
        report.partitions.push(await partitionDetection(factory, options, sizes));
      }
      if (want('scale')) {
        log(`store ${factory.backend}: scale (many node processes)`);
        const counts = options.scaleNodes ?? sizes.scaleNodes;
        report.scale.push(...(await scaleSection(factory, options, counts, sizes.scaleIdleSeconds, tracked)));
      }
    } finally {
      await factory.close();
    }
  }
  addRatios(report.throughput);
  report.throughput.sort(compareRows);
  report.targets = checkTargets(report);
  report.durationSeconds = (performance.now() - started) / 1000;
  return report;
}

async function matrix(
  system: SystemKind,
  factory: StoreFactory,
  options: BenchOptions,
  tracked: { track(nodes: BenchChild[]): void },
  withClient: boolean,
): Promise<ThroughputRow[]> {
  const backend: StoreBackend | null = system === 'naive' ? null : factory.backend;
  options.log?.(`${system}${backend ? ` on ${backend}` : ''}: ${options.nodes} nodes`);
  const nodes = await startCluster(
    {
      system,
      store: system === 'naive' ? '' : await factory.fresh(),
      durability: options.durability,
      http: options.drivers.includes('http'),
    },
    options.nodes,
  );
  tracked.track(nodes);
  try {
    return await throughputMatrix(
      {
        nodes,
        system,
        store: backend,
        durability: durabilityShort(system, backend, options.durability),
        withClient,
      },
      options,
    );
  } finally {
    await stopCluster(nodes);
  }
}

const SYSTEM_ORDER: Record<SystemKind, number> = { concord: 0, 'concord+client': 1, naive: 2, 'store-call': 3 };
const STORE_ORDER = (s: StoreBackend | null) => (s === 'sqlite' ? 0 : s === 'postgres' ? 1 : 2);

function compareRows(a: ThroughputRow, b: ThroughputRow): number {
  return (
    a.driver.localeCompare(b.driver) ||
    WORKLOADS.indexOf(a.workload) - WORKLOADS.indexOf(b.workload) ||
    a.concurrency - b.concurrency ||
    SYSTEM_ORDER[a.system] - SYSTEM_ORDER[b.system] ||
    STORE_ORDER(a.store) - STORE_ORDER(b.store)
  );
}

function machine(): MachineInfo {
  const list = cpus();
  return {
    cores: list.length,
    cpuModel: list[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
  };
}

/** The parent pid of a process, read from /proc (Linux); the bench's own pid elsewhere. */
function parentOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return process.pid;
  }
}
