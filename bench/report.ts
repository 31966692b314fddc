import { durabilityNote } from './durability.js';
import type { BenchReport, ScaleResult, TargetCheck, ThroughputRow, Workload } from './types.js';

/** The report's targets (issue 7) and its Markdown rendering. */

const fmt = (n: number, digits = 0) =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const ms = (n: number) => (n < 1 ? n.toFixed(3) : n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : fmt(n));
const codes = (errors: number, byCode: Record<string, number>) =>
  errors === 0
    ? '0'
    : `${errors} (${Object.entries(byCode)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')})`;
const ratio = (r: number | null) => (r === null ? '—' : `${r.toFixed(2)}x`);
/** A row's ops/s; with `--repeat`, the median and the range of its runs. */
const ops = (row: ThroughputRow) =>
  row.runs === undefined || row.runs.length < 2
    ? fmt(row.opsPerSecond)
    : `${fmt(row.opsPerSecond)} (median of ${row.runs.length}: ${fmt(Math.min(...row.runs))}–${fmt(Math.max(...row.runs))})`;

function targetConcurrency(report: BenchReport): number {
  const cs = report.options.concurrency;
  return cs.includes(64) ? 64 : Math.max(...cs);
}

function find(
  report: BenchReport,
  where: Partial<Pick<ThroughputRow, 'system' | 'store' | 'driver' | 'workload' | 'concurrency'>>,
): ThroughputRow | undefined {
  return report.throughput.find((row) => Object.entries(where).every(([k, v]) => row[k as keyof ThroughputRow] === v));
}

export function checkTargets(report: BenchReport): TargetCheck[] {
  const c = targetConcurrency(report);
  const checks: TargetCheck[] = [];
  const notRun = (figure: string, target: string) => checks.push({ figure, target, measured: 'not run', met: null });
  const api = (workload: Workload) =>
    find(report, { system: 'concord', store: 'sqlite', driver: 'api', workload, concurrency: c });
  const label = (w: string) =>
    `${w} ops/s (2 nodes, caller in n1, ${fmt(report.options.entities)} entities, C=${c}, SQLite, library API)`;

  const r = api('R');
  if (r) {
    checks.push({
      figure: label('R'),
      target: '>= 200,000, p99 <= 1.5 ms',
      measured: `${ops(r)}, p99 ${ms(r.p99Ms)} ms`,
      met: r.opsPerSecond >= 200_000 && r.p99Ms <= 1.5,
    });
  } else notRun(label('R'), '>= 200,000, p99 <= 1.5 ms');
  const w = api('W');
  const wLabel = `${label('W')}, ${report.options.durability === 'strict' ? 'acknowledged after a commit that survives power loss (synchronous=FULL)' : 'relaxed durability (synchronous=NORMAL)'}`;
  if (w) {
    checks.push({ figure: wLabel, target: '>= 55,000', measured: ops(w), met: w.opsPerSecond >= 55_000 });
    const commitMs = report.sqliteCommitMs;
    if (commitMs !== undefined && report.options.durability === 'strict') {
      // Each of C callers waits for at least one fsync per write: C / commit time is the ceiling.
      const limit = (c * 1000) / commitMs;
      checks.push({
        figure: `W of the fsync limit: C / one commit at synchronous=FULL (${ms(commitMs)} ms here) = ${fmt(limit)} ops/s`,
        target: 'report',
        measured: `${((100 * w.opsPerSecond) / limit).toFixed(0)} %`,
        met: null,
      });
    }
  } else notRun(wLabel, '>= 55,000');
  const m = api('M');
  if (m)
    checks.push({
      figure: label('M'),
      target: '>= 100,000',
      measured: ops(m),
      met: m.opsPerSecond >= 100_000,
    });
  else notRun(label('M'), '>= 100,000');

  for (const store of ['sqlite', 'postgres'] as const) {
    const acts = report.activations.filter((a) => a.store === store);
    if (acts.length === 0) continue;
    const measured = acts.map((a) => `${fmt(a.perSecond)}/s with ${fmt(a.alreadyActive)} active`).join('; ');
    checks.push({
      figure: `cold activations/s (${fmt(acts[0]!.count)} fresh ids, ${store}), the same with many entities already active`,
      target: '>= 50,000 at both',
      measured,
      met: acts.every((a) => a.perSecond >= 50_000),
    });
  }
  const mem = report.memory.filter((x) => x.store === 'sqlite').at(-1) ?? report.memory.at(-1);
  if (mem) {
    checks.push({
      figure: `memory per active idle entity (small state, ${fmt(mem.activeEntities)} active)`,
      target: '<= 1 KB',
      measured: `heap ${fmt(mem.heapBytesPerEntity)} B, RSS ${fmt(mem.rssBytesPerEntity)} B`,
      met: mem.heapBytesPerEntity <= 1024 && mem.rssBytesPerEntity <= 1024,
    });
  } else notRun('memory per active idle entity', '<= 1 KB');
  for (const f of report.failover) {
    checks.push({
      figure: `failover after kill -9 (${f.store}, median of ${f.runsMs.length})`,
      target: '<= 2 s',
      measured: `${fmt(f.medianMs)} ms`,
      met: f.medianMs <= 2000,
    });
  }
  for (const p of report.partitions) {
    checks.push({
      figure: `one node of three cut off (${p.store}, median of ${p.runs.length}): cut to every one of its entities served by the others`,
      target: `<= ${fmt(p.boundMs)} ms (the detection bound)`,
      measured: `${fmt(p.median.servedMs)} ms`,
      met: p.median.servedMs <= p.boundMs,
    });
  }
  const httpGet = (system: ThroughputRow['system'], store: ThroughputRow['store']) =>
    find(report, { system, store, driver: 'http', workload: 'R', concurrency: c });
  const naive = httpGet('naive', null);
  const concordSqlite = httpGet('concord', 'sqlite');
  const concordPg = httpGet('concord', 'postgres');
  const concordAny = concordSqlite ?? concordPg;
  if (naive && concordAny) {
    const x = concordAny.opsPerSecond / naive.opsPerSecond;
    checks.push({
      figure: `HTTP get (C=${c}) vs the naive per-node cache (concord on ${concordAny.store})`,
      target: '>= 0.7x',
      measured: `${x.toFixed(2)}x (${fmt(concordAny.opsPerSecond)} vs ${fmt(naive.opsPerSecond)} ops/s)`,
      met: x >= 0.7,
    });
  } else notRun('HTTP get vs the naive per-node cache', '>= 0.7x');
  const pgCall = httpGet('store-call', 'postgres');
  if (pgCall && (concordPg ?? concordSqlite)) {
    const concord = (concordPg ?? concordSqlite)!;
    const x = concord.opsPerSecond / pgCall.opsPerSecond;
    checks.push({
      figure: `HTTP get (C=${c}) vs PostgreSQL on every call (concord on ${concord.store})`,
      target: '>= 3x',
      measured: `${x.toFixed(2)}x (${fmt(concord.opsPerSecond)} vs ${fmt(pgCall.opsPerSecond)} ops/s)`,
      met: x >= 3,
    });
  } else notRun('HTTP get vs PostgreSQL on every call', '>= 3x');
  const clientPg = httpGet('concord+client', 'postgres');
  const clientAny = clientPg ?? httpGet('concord+client', 'sqlite');
  if (pgCall && clientPg) {
    const x = clientPg.opsPerSecond / pgCall.opsPerSecond;
    checks.push({
      figure: `HTTP get (C=${c}) with concord-cluster/client vs PostgreSQL on every call (concord on postgres)`,
      target: '>= 3x',
      measured: `${x.toFixed(2)}x (${fmt(clientPg.opsPerSecond)} vs ${fmt(pgCall.opsPerSecond)} ops/s)`,
      met: x >= 3,
    });
  } else if (clientAny) notRun('HTTP get with concord-cluster/client vs PostgreSQL on every call', '>= 3x');
  if (naive && clientAny) {
    const x = clientAny.opsPerSecond / naive.opsPerSecond;
    checks.push({
      figure: `HTTP get (C=${c}) with concord-cluster/client vs the naive per-node cache (concord on ${clientAny.store})`,
      target: '>= 0.9x',
      measured: `${x.toFixed(2)}x (${fmt(clientAny.opsPerSecond)} vs ${fmt(naive.opsPerSecond)} ops/s)`,
      met: x >= 0.9,
    });
  } else if (clientAny) notRun('HTTP get with concord-cluster/client vs the naive per-node cache', '>= 0.9x');
  return checks;
}

const SYSTEM_LABEL: Record<ThroughputRow['system'], string> = {
  concord: 'concord',
  naive: 'naive per-node cache (`--ownership none`)',
  'store-call': 'store on every call',
  'concord+client': 'concord + `concord-cluster/client`',
};

export function renderMarkdown(report: BenchReport): string {
  const out: string[] = [];
  const m = report.machine;
  out.push(`### concord benchmark — ${report.date}`);
  out.push('');
  out.push(`- Command: \`${report.command}\``);
  out.push(
    `- Machine: ${m.cores} cores (${m.cpuModel}), ${fmt(m.memoryGiB)} GiB, Node ${m.node}, ${m.platform}; run took ${fmt(report.durationSeconds)} s`,
  );
  out.push(
    `- Cluster: ${report.options.nodes} node processes per system, ${fmt(report.options.entities)} entities, warm-up ${report.options.warmupSeconds} s, ${report.options.seconds} s measured per row${(report.options.repeat ?? 1) > 1 ? `, each row the median of ${report.options.repeat} runs (ops/s, p50, p90 and p99; max and errors over all runs)` : ''}; durability \`${report.options.durability}\``,
  );
  out.push(`- Stores: ${report.stores.map((s) => s.description).join('; ')}`);
  out.push(
    '- All systems ran in this one run, on this machine, as children of one bench process, with the same driver and the same entity (the entity-state example).',
  );
  out.push('');
  // `--only scale`: no throughput, targets or extra figures to show, only its own table.
  if (report.options.sections.every((section) => section === 'scale')) {
    out.push(...scaleTable(report.scale), '');
    return out.join('\n');
  }
  out.push('#### Targets');
  out.push('');
  out.push('| figure | target | measured | met |');
  out.push('|---|---|---|---|');
  for (const t of report.targets) {
    out.push(`| ${t.figure} | ${t.target} | ${t.measured} | ${t.met === null ? '—' : t.met ? 'yes' : '**no**'} |`);
  }
  out.push('');
  out.push('#### Throughput and latency');
  out.push('');
  out.push(
    'Library API: a closed loop of C callers inside node 1 (`node.call`). HTTP: autocannon from the bench process, C connections spread over all nodes, one request in flight each; concord + client: C callers in the bench process calling through `concord-cluster/client` (each call straight to the owner), one call in flight each, measured right after the autocannon row of the same workload and C on the same cluster. Latencies from an HDR histogram. CPU: seconds of CPU (user + system, all threads) per 10,000 operations, per process. Ratios: ops/s over the baseline with the same driver, workload and C (store on every call: on the same store).',
  );
  out.push('');
  out.push(
    '| store | system | driver | workload | C | ops/s | p50 ms | p90 ms | p99 ms | max ms | errors | CPU s / 10k ops | vs naive | vs store on every call | acknowledged writes survive |',
  );
  out.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of report.throughput) {
    const cpu = r.cpu.map((c) => `${c.process} ${c.cpuSecondsPer10k.toFixed(3)}`).join(', ');
    out.push(
      `| ${r.store ?? '—'} | ${SYSTEM_LABEL[r.system]} | ${r.driver === 'api' ? 'library API' : 'HTTP'} | ${r.workload} | ${r.concurrency} | ${ops(r)} | ${ms(r.p50Ms)} | ${ms(r.p90Ms)} | ${ms(r.p99Ms)} | ${ms(r.maxMs)} | ${codes(r.errors, r.raw.errorCodes)} | ${cpu} | ${r.system === 'naive' ? '—' : ratio(r.vsNaive)} | ${r.system === 'store-call' ? '—' : ratio(r.vsStoreCall)} | ${r.durability ?? '(reads only)'} |`,
    );
  }
  out.push('');
  out.push('#### Activations, memory, failover, rebalancing (concord)');
  out.push('');
  out.push('| store | figure | measured | target |');
  out.push('|---|---|---|---|');
  for (const a of report.activations) {
    out.push(
      `| ${a.store} | cold activations/s, ${fmt(a.count)} fresh ids, ${fmt(a.alreadyActive)} entities already active | ${fmt(a.perSecond)}${a.errors ? ` (${a.errors} errors)` : ''} | >= 50,000, the same at any count |`,
    );
  }
  for (const x of report.memory) {
    out.push(
      `| ${x.store} | memory per active idle entity at ${fmt(x.activeEntities)} active (heap / RSS delta) | ${fmt(x.heapBytesPerEntity)} B / ${fmt(x.rssBytesPerEntity)} B | <= 1 KB |`,
    );
  }
  for (const f of report.failover) {
    out.push(
      `| ${f.store} | failover after kill -9: kill to first successful call on each of the dead node's ${f.shardsPerRun} shards (median of ${f.runsMs.length}; runs ${f.runsMs.map((x) => fmt(x)).join(', ')} ms) | ${fmt(f.medianMs)} ms | <= 2 s |`,
    );
  }
  for (const p of report.pauses) {
    out.push(
      `| ${p.store} | longest call during a ${p.event === 'join' ? 'join (3rd node)' : 'graceful leave (SIGTERM)'} under load; rebalanced in ${fmt(p.rebalanceMs)} ms | ${fmt(p.longestCallMs)} ms, ${codes(p.errors, p.errorCodes)} failed calls | no failed call |`,
    );
  }
  for (const p of report.partitions) {
    out.push(
      `| ${p.store} | one node of three cut off from the others (median of ${p.runs.length}): cut → its /readyz 503 / cut → evicted / cut → all its ${p.runs[0]?.entities ?? 0} entities (one per shard) served by the others; runs ${p.runs.map((r) => `${fmt(r.unreadyMs)}/${fmt(r.evictedMs)}/${fmt(r.servedMs)}`).join(', ')} ms | ${fmt(p.median.unreadyMs)} / ${fmt(p.median.evictedMs)} / ${fmt(p.median.servedMs)} ms | served <= ${fmt(p.boundMs)} ms |`,
    );
  }
  out.push('');
  if (report.scale.length > 0) out.push(...scaleTable(report.scale), '');
  out.push('#### Durability of the write figures');
  out.push('');
  const seen = new Set<string>();
  for (const r of report.throughput) {
    if (r.workload === 'R') continue;
    const key = `${r.system}/${r.store}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(
      `- ${SYSTEM_LABEL[r.system]}${r.store ? ` on ${r.store}` : ''}: ${durabilityNote(r.system, r.store, report.options.durability)}.`,
    );
  }
  out.push('');
  return out.join('\n');
}

/** Failed lease renewals and a step that did not complete, for the scale table. */
function incidents(r: ScaleResult): string {
  const lease = Object.entries(r.leaseFailures).map(([reason, n]) => `${n} lease renewals failed (${reason})`);
  const slow = r.slowRenewals > 0 ? [`${r.slowRenewals} renewals > 250 ms`] : [];
  const d = r.maxLoopDelayMs;
  const stall = `event loop stalled up to ${fmt(d.start)} / ${fmt(d.idle)} / ${fmt(d.rest)} ms (start / idle / rest)`;
  return [...lease, ...slow, stall, ...(r.error ? [`**stopped: ${r.error.replaceAll('|', '/')}**`] : [])].join('; ');
}

/** The `scale` section: one row per store × cluster size. */
function scaleTable(rows: ScaleResult[]): string[] {
  const out = ['#### Scale: many node processes on one machine (concord)', ''];
  out.push(
    `Each row a fresh cluster of N node processes started at once. Start: until every process was up / every shard owned and every node ready / every node's \`GET /cluster\` map equal, complete and placed. Store ops: Store operations (each one round trip, most of them one transaction) per second of one idle node over ${rows[0]!.idleSeconds.toFixed(0)} s, by kind: lease renewals / shard-map reads / membership reads and writes / claims and releases. Join, leave: from spawning one more node, and from its SIGTERM, until every map is equal, complete and placed again. Failover: kill -9 of n2 until each of its shards answered a call through n1. Start claims: shard claims made during the start (256 if no shard had to move twice). Load avg: the machine's, other processes included.`,
  );
  out.push('');
  out.push(
    '| store | N | start ms: up / owned + ready / agreed | store ops/s per idle node: lease / map / membership / claims (total) | cluster store ops/s | CPU per idle node | RSS per idle node (max) | PostgreSQL connections | join → agreed | leave → agreed | failover (shards) | start claims | load avg | incidents |',
  );
  out.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  // A step that timed out leaves the figures after it unmeasured (NaN): shown as —.
  const n = (x: number, unit = '') => (Number.isFinite(x) ? `${fmt(x)}${unit}` : '—');
  for (const r of rows) {
    const q = r.storeOpsPerNodePerSecond;
    const total = Object.values(q).reduce((sum, x) => sum + x, 0);
    const other = q.other > 0.005 ? ` / other ${q.other.toFixed(2)}` : '';
    const idle = Number.isFinite(r.clusterStoreOpsPerSecond);
    out.push(
      `| ${r.store} | ${r.nodes}${r.leaseTtlMs === 1500 ? '' : ` (lease ${fmt(r.leaseTtlMs)} ms)`} | ${n(r.processesUpMs)} / ${n(r.ownedMs)} / ${n(r.settledMs)} | ${idle ? `${q.lease.toFixed(2)} / ${q.shardMap.toFixed(2)} / ${q.membership.toFixed(2)} / ${q.claims.toFixed(2)}${other} (${total.toFixed(2)})` : '—'} | ${n(r.clusterStoreOpsPerSecond)} | ${idle ? `${r.idleCpuPercentPerNode.toFixed(1)} %` : '—'} | ${n(r.rssMiBPerNode, ' MiB')} (${n(r.rssMiBMax)}) | ${r.storeConnections ?? '—'} | ${n(r.joinAgreedMs, ' ms')} | ${n(r.leaveAgreedMs, ' ms')} | ${n(r.failoverMs, ' ms')} (${r.failoverShards}) | ${idle ? fmt(r.startClaims) : '—'} | ${Number.isFinite(r.loadAverage) ? r.loadAverage.toFixed(1) : '—'} | ${incidents(r)} |`,
    );
  }
  return out;
}
