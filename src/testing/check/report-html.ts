import type { HistoryEntry } from '../checker/history.js';
import { formatPercent } from './format.js';
import type { CheckRunReport } from './run.js';

/**
 * The self-contained HTML report of `concord check`: verdict, availability, per-key
 * results, the minimal failing sub-history of each failing key, and a timeline of every
 * operation (one lane per client) with the fault windows shaded; hovering an operation shows
 * what it was and its answer (status code). No external assets.
 */

const COLORS = { ok: '#2e7d32', fail: '#ef6c00', info: '#c62828' } as const;
const FAULT_COLOR = '#fde0dc';

export function renderHtmlReport(report: CheckRunReport): string {
  const verdictColor =
    report.verdict === 'linearizable' ? '#2e7d32' : report.verdict === 'unknown' ? '#ef6c00' : '#c62828';
  const a = report.availability;
  const pct = (share: number, operations: number) => (operations === 0 ? '—' : `${formatPercent(share)} %`);
  const failing = report.result.keys.filter((k) => k.failure);
  const byKind = new Map<string, number>();
  for (const f of report.faults) byKind.set(f.kind, (byKind.get(f.kind) ?? 0) + 1);
  const injected = report.faults.length === 0 ? 'none' : [...byKind].map(([k, n]) => `${k} ×${n}`).join(', ');
  const notInjected = report.faultsNotInjected?.length
    ? ` (asked for but not injected: ${escapeHtml(report.faultsNotInjected.join(', '))} — the run ended before their turn; --seconds ${report.secondsForEveryFault} or more injects every kind)`
    : '';
  const outcomes = report.outcomes;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>concord check — ${escapeHtml(report.verdict)}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} table{border-collapse:collapse;margin:8px 0 16px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left} th{background:#f5f5f5}
.verdict{color:${verdictColor};font-weight:700} code{background:#f5f5f5;padding:1px 4px}
.legend span{display:inline-block;margin-right:14px} .sw{display:inline-block;width:10px;height:10px;margin-right:4px}
</style></head><body>
<h1>concord check: <span class="verdict">${escapeHtml(report.verdict)}</span></h1>
<p>${report.operations.toLocaleString('en-US')} operations in ${(report.durationMs / 1000).toFixed(1)} s,
checked in ${report.checkerMs.toFixed(0)} ms. Started ${escapeHtml(report.startedAt)}.
Nodes: ${report.options.urls ? escapeHtml(report.options.urls.join(', ')) : report.options.nodes},
store: <code>${escapeHtml(report.options.store ?? 'SQLite (fresh file)')}</code>,
faults injected: ${escapeHtml(injected)}${notInjected}${report.options.nodeArgs?.length ? `, node args: <code>${escapeHtml(report.options.nodeArgs.join(' '))}</code>` : ''}.
${outcomes ? `Outcomes: ${outcomes.ok} ok, ${outcomes.failed} definitely failed, ${outcomes.unknown} unknown.` : ''}</p>
<h2>Availability</h2>
<table><tr><th></th><th>operations</th><th>succeeded</th><th>share</th></tr>
<tr><td>outside fault windows</td><td>${a.outsideFaults.operations}</td><td>${a.outsideFaults.succeeded}</td><td>${pct(a.outsideFaults.share, a.outsideFaults.operations)}</td></tr>
<tr><td>inside fault windows</td><td>${a.inFaults.operations}</td><td>${a.inFaults.succeeded}</td><td>${pct(a.inFaults.share, a.inFaults.operations)}</td></tr>
<tr><td>inside, after the ${(report.detectionBoundMs / 1000).toFixed(1)} s detection bound</td><td>${a.afterDetection.operations}</td><td>${a.afterDetection.succeeded}</td><td>${pct(a.afterDetection.share, a.afterDetection.operations)}</td></tr>
<tr><td>overall</td><td>${a.overall.operations}</td><td>${a.overall.succeeded}</td><td>${pct(a.overall.share, a.overall.operations)}</td></tr></table>
<h2>Faults</h2>
<table><tr><th>kind</th><th>node</th><th>from (s)</th><th>to (s)</th></tr>
${report.faults.map((f) => `<tr><td>${f.kind}</td><td>${escapeHtml(f.node)}</td><td>${(f.start / 1000).toFixed(2)}</td><td>${(f.end / 1000).toFixed(2)}</td></tr>`).join('\n')}
</table>
<h2>Keys</h2>
<table><tr><th>key</th><th>verdict</th><th>operations</th><th>check ms</th><th>explanation</th></tr>
${report.keys.map((k) => `<tr><td>${escapeHtml(k.key)}</td><td>${k.ok === true ? 'linearizable' : k.ok === false ? '<b style="color:#c62828">violation</b>' : 'unknown'}</td><td>${k.operations}</td><td>${k.elapsedMs.toFixed(1)}</td><td>${escapeHtml(k.explanation ?? '')}</td></tr>`).join('\n')}
</table>
${failing
  .map(
    (k) => `<h3>Minimal failing sub-history of ${escapeHtml(k.key)}</h3><p>${escapeHtml(k.failure!.explanation)}</p>
<table><tr><th>client</th><th>op</th><th>value</th><th>if-match</th><th>invoked (ms)</th><th>completed (ms)</th><th>outcome</th><th>status</th><th>result</th></tr>
${k.failure!.minimalHistory.map(historyRow).join('\n')}</table>`,
  )
  .join('\n')}
<h2>Timeline</h2>
<p class="legend"><span><i class="sw" style="background:${COLORS.ok}"></i>ok (200)</span><span><i class="sw" style="background:${COLORS.fail}"></i>definitely failed: 412 (a compare-and-set whose version differed), 400, 503 not applied, connection refused</span><span><i class="sw" style="background:${COLORS.info}"></i>unknown outcome (may or may not have taken effect): 504, another 5xx, a timeout, a broken connection; also a compare-and-set refused without a 412</span><span><i class="sw" style="background:${FAULT_COLOR}"></i>fault window (labelled with its kind and node)</span></p>
${timeline(report)}
</body></html>
`;
}

function historyRow(e: HistoryEntry): string {
  const result = e.result ? `${e.result.state} v${e.result.version}` : '';
  return `<tr><td>${escapeHtml(String(e.client))}</td><td>${e.op}</td><td>${escapeHtml(e.value ?? '')}</td><td>${e.expectedVersion ?? ''}</td><td>${e.invokedAt.toFixed(1)}</td><td>${e.completedAt === null ? '—' : e.completedAt.toFixed(1)}</td><td>${e.outcome}</td><td>${escapeHtml(String(e.status ?? ''))}</td><td>${escapeHtml(result)}</td></tr>`;
}

function timeline(report: CheckRunReport): string {
  const history = report.history;
  if (history.length === 0) return '<p>No operations.</p>';
  const clients = [...new Set(history.map((e) => String(e.client)))];
  const lane = new Map(clients.map((c, i) => [c, i]));
  const endOf = (e: HistoryEntry) => e.completedAt ?? e.answeredAt ?? e.invokedAt;
  const end = history.reduce((max, e) => Math.max(max, endOf(e)), Math.max(1, ...report.faults.map((f) => f.end)));
  const width = 1200;
  const laneHeight = 10;
  const height = clients.length * laneHeight + 30;
  const x = (t: number) => ((t / end) * width).toFixed(1);
  const faults = report.faults
    .map(
      (f) =>
        `<rect x="${x(f.start)}" y="0" width="${Math.max(1, ((f.end - f.start) / end) * width).toFixed(1)}" height="${height - 20}" fill="${FAULT_COLOR}"><title>${f.kind} ${escapeHtml(f.node)}</title></rect><text x="${x(f.start)}" y="${height - 6}" font-size="10">${f.kind} ${escapeHtml(f.node)}</text>`,
    )
    .join('');
  const ops = history
    .map((e) => {
      const y = (lane.get(String(e.client)) ?? 0) * laneHeight + 2;
      // An operation of unknown outcome is drawn until the client stopped waiting for it.
      const stop = endOf(e);
      const w = Math.max(0.6, ((stop - e.invokedAt) / end) * width).toFixed(1);
      const what = `client ${e.client} ${e.op}${e.value === undefined ? '' : ` ${e.value}`}${e.expectedVersion === undefined ? '' : ` if v${e.expectedVersion}`} on ${e.key}: ${e.status ?? e.outcome}${e.result ? ` → ${e.result.state} v${e.result.version}` : ''} (${(stop - e.invokedAt).toFixed(1)} ms)`;
      return `<rect x="${x(e.invokedAt)}" y="${y}" width="${w}" height="${laneHeight - 3}" fill="${COLORS[e.outcome]}"><title>${escapeHtml(what)}</title></rect>`;
    })
    .join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">${faults}${ops}</svg>
<p>Time runs left to right over ${(end / 1000).toFixed(1)} s; one lane per client.</p>`;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
