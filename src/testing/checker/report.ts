/** Text rendering of check results: per-key verdicts and minimal failing sub-histories as aligned tables. */

import { formatTime, formatValue } from './explain.js';
import type { HistoryEntry } from './history.js';
import type { CheckResult, KeyCheckResult } from './index.js';

export interface ReportOptions {
  /** Rows shown per minimal history table (default 50). */
  readonly maxRows?: number;
  /** Also list keys that passed (default true). */
  readonly showPassing?: boolean;
}

function describeCall(entry: HistoryEntry): string {
  switch (entry.op) {
    case 'read':
      return 'read';
    case 'write':
      return `write ${JSON.stringify(entry.value ?? '')}`;
    case 'cas':
      return `cas ${JSON.stringify(entry.value ?? '')} if v${entry.expectedVersion ?? '?'}`;
  }
}

function describeResult(entry: HistoryEntry): string {
  if (entry.outcome === 'info') return entry.status === undefined ? '? (unknown)' : `? (unknown: ${entry.status})`;
  if (entry.outcome === 'ok') return entry.result === undefined ? '' : formatValue(entry.result);
  if (entry.op === 'cas') return entry.result === undefined ? '412' : `412 ${formatValue(entry.result)}`;
  return 'rejected';
}

function table(header: readonly string[], rows: readonly (readonly string[])[], indent: string): string[] {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: readonly string[]): string =>
    indent +
    cells
      .map((cell, column) => cell.padEnd(widths[column] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((width) => '-'.repeat(width))), ...rows.map(line)];
}

/**
 * An aligned table of history entries. `indices` (positions in the full
 * history) label the rows when given.
 */
export function formatHistoryTable(
  entries: readonly HistoryEntry[],
  indices?: readonly number[],
  options: { readonly indent?: string; readonly maxRows?: number } = {},
): string {
  const maxRows = options.maxRows ?? Number.POSITIVE_INFINITY;
  // Histories recorded over HTTP carry each answer's status code: then shown in its own column.
  const withStatus = entries.some((entry) => entry.status !== undefined);
  const rows = entries
    .slice(0, maxRows)
    .map((entry, row) => [
      String(indices?.[row] ?? row),
      String(entry.client),
      describeCall(entry),
      formatTime(entry.invokedAt),
      entry.outcome === 'info' || entry.completedAt === null ? '-' : formatTime(entry.completedAt),
      entry.outcome,
      ...(withStatus ? [String(entry.status ?? '')] : []),
      describeResult(entry),
    ]);
  const lines = table(
    ['#', 'client', 'operation', 'invoked', 'completed', 'outcome', ...(withStatus ? ['status'] : []), 'result'],
    rows,
    options.indent ?? '',
  );
  if (entries.length > rows.length) lines.push(`${options.indent ?? ''}… ${entries.length - rows.length} more`);
  return lines.join('\n');
}

function formatMs(ms: number): string {
  return ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(0)} ms`;
}

function verdictLabel(ok: KeyCheckResult['ok']): string {
  if (ok === true) return 'OK';
  if (ok === false) return 'FAIL';
  return 'UNKNOWN';
}

/** Human-readable report of a `checkHistory` result. */
export function formatReport(result: CheckResult, options: ReportOptions = {}): string {
  const failed = result.keys.filter((key) => key.ok === false).length;
  const undecided = result.keys.filter((key) => key.ok === 'unknown').length;
  const operations = result.keys.reduce((sum, key) => sum + key.operations, 0);
  const unknownOutcomes = result.keys.reduce((sum, key) => sum + key.unknownOutcomes, 0);
  const lines = [
    `Linearizability: ${verdictLabel(result.ok)} — ${result.keys.length} key(s), ${operations} operation(s) ` +
      `(${unknownOutcomes} with unknown outcome), keys: ${failed} not linearizable, ${undecided} undecided (${formatMs(result.elapsedMs)})`,
  ];
  const shown = options.showPassing === false ? result.keys.filter((key) => key.ok !== true) : result.keys;
  const keyWidth = Math.max(0, ...shown.map((key) => key.key.length));
  for (const key of shown) {
    lines.push(
      `  ${verdictLabel(key.ok).padEnd(7)}  ${key.key.padEnd(keyWidth)}  ${String(key.operations).padStart(6)} ops  ${String(key.unknownOutcomes).padStart(5)} unknown outcome  ${formatMs(key.elapsedMs)}`,
    );
    if (key.unknownReason !== undefined) lines.push(`    ${key.unknownReason}`);
    const failure = key.failure;
    if (failure === undefined) continue;
    lines.push(`    ${failure.explanation}`);
    const of = failure.shrunk ? ` of ${key.operations}` : '';
    const note = failure.shrunk
      ? failure.minimal
        ? ' (1-minimal: every other operation of the key was treated as possibly not having happened)'
        : ' (shrinking ran out of time; not necessarily minimal)'
      : ' (not shrunk)';
    lines.push(`    Failing sub-history: ${failure.minimalHistory.length}${of} operation(s)${note}`);
    lines.push(
      formatHistoryTable(failure.minimalHistory, failure.historyIndices, {
        indent: '      ',
        maxRows: options.maxRows ?? 50,
      }),
    );
  }
  return lines.join('\n');
}
