/**
 * History types and validation.
 *
 * A history is what the clients of a test run recorded: one entry per
 * operation, with the time it was invoked, the time it completed (null when
 * the client never learned the outcome) and what it returned. All times come
 * from one clock; the unit (ms, ns) does not matter as long as it is the same
 * everywhere.
 */

/** The value of one entity (one key): its state and a version bumped by every successful write. */
export interface EntityValue {
  readonly state: string;
  readonly version: number;
}

export type OperationName = 'read' | 'write' | 'cas';

/**
 * - `ok`: the operation took effect and returned `result`.
 * - `fail`: the operation definitely did NOT take effect. For a `cas` this is a
 *   412 (the version was not `expectedVersion` at its linearization point), which
 *   is itself an observation; for a `write` or `read` it is a plain rejection
 *   (e.g. 400) and is ignored.
 * - `info`: the outcome is unknown (timeout, 503, connection reset). A write or
 *   cas may have taken effect at any point after its invocation, or never.
 */
export type Outcome = 'ok' | 'fail' | 'info';

export type ClientId = number | string;

export interface HistoryEntry {
  readonly key: string;
  readonly client: ClientId;
  readonly op: OperationName;
  /** The state written by a `write` or `cas`. */
  readonly value?: string;
  /** The version a `cas` requires (HTTP If-Match). */
  readonly expectedVersion?: number;
  readonly invokedAt: number;
  /** When the client learned the outcome; null (or ignored) for `info`. */
  readonly completedAt: number | null;
  readonly outcome: Outcome;
  /**
   * `ok`: the value after the operation (for a read, the value read).
   * `fail` cas: optionally the current value the 412 reported.
   */
  readonly result?: EntityValue;
  /**
   * For reports only (the checker ignores it): the answer the client got — an HTTP status code,
   * or what happened instead (`timeout`, `connection refused`, `connection reset`, …).
   */
  readonly status?: number | string;
  /** For reports only: when the client stopped waiting for an `info` operation (gave up, or got its answer). */
  readonly answeredAt?: number;
}

export type History = readonly HistoryEntry[];

export interface ValidationProblem {
  /** Index of the offending entry in the history. */
  readonly index: number;
  readonly message: string;
}

export class InvalidHistoryError extends Error {
  readonly problems: readonly ValidationProblem[];

  constructor(problems: readonly ValidationProblem[]) {
    const shown = problems
      .slice(0, 10)
      .map((p) => `  entry ${p.index}: ${p.message}`)
      .join('\n');
    const more = problems.length > 10 ? `\n  … and ${problems.length - 10} more` : '';
    super(`invalid history (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${shown}${more}`);
    this.name = 'InvalidHistoryError';
    this.problems = problems;
  }
}

const OPERATIONS: ReadonlySet<string> = new Set(['read', 'write', 'cas']);
const OUTCOMES: ReadonlySet<string> = new Set(['ok', 'fail', 'info']);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

function describeValueProblem(value: unknown): string | undefined {
  if (!isRecord(value)) return 'must be an object { state, version }';
  if (typeof value['state'] !== 'string') return 'state must be a string';
  if (!Number.isSafeInteger(value['version'])) return 'version must be an integer';
  return undefined;
}

/** Problems of one entry (an empty list when it is well formed). */
export function validateEntry(entry: unknown): string[] {
  if (!isRecord(entry)) return ['entry must be an object'];
  const problems: string[] = [];
  if (typeof entry['key'] !== 'string') problems.push('key must be a string');
  const client = entry['client'];
  if (typeof client !== 'string' && !isFiniteNumber(client)) problems.push('client must be a string or a number');
  const op = entry['op'];
  if (typeof op !== 'string' || !OPERATIONS.has(op)) problems.push(`op must be one of read, write, cas`);
  const outcome = entry['outcome'];
  if (typeof outcome !== 'string' || !OUTCOMES.has(outcome)) problems.push('outcome must be one of ok, fail, info');

  const invokedAt = entry['invokedAt'];
  if (!isFiniteNumber(invokedAt)) problems.push('invokedAt must be a finite number');
  const completedAt = entry['completedAt'];
  if (completedAt !== null && completedAt !== undefined && !isFiniteNumber(completedAt)) {
    problems.push('completedAt must be a finite number or null');
  }
  if ((outcome === 'ok' || outcome === 'fail') && !isFiniteNumber(completedAt)) {
    problems.push(`a completed (${outcome}) operation needs a completedAt time`);
  }
  if (outcome !== 'info' && isFiniteNumber(invokedAt) && isFiniteNumber(completedAt) && completedAt < invokedAt) {
    problems.push('completedAt is before invokedAt');
  }

  if ((op === 'write' || op === 'cas') && typeof entry['value'] !== 'string') {
    problems.push(`a ${op} needs a string value`);
  }
  if (op === 'cas' && !Number.isSafeInteger(entry['expectedVersion'])) {
    problems.push('a cas needs an integer expectedVersion');
  }

  const result = entry['result'];
  if (outcome === 'ok') {
    const problem = describeValueProblem(result);
    if (problem !== undefined) problems.push(`result ${problem}`);
  } else if (outcome === 'fail' && op === 'cas' && result !== undefined) {
    const problem = describeValueProblem(result);
    if (problem !== undefined) problems.push(`result ${problem}`);
  }
  return problems;
}

/** Every problem in the history; an empty list means the history can be checked. */
export function validateHistory(history: readonly unknown[]): ValidationProblem[] {
  const problems: ValidationProblem[] = [];
  history.forEach((entry, index) => {
    for (const message of validateEntry(entry)) problems.push({ index, message });
  });
  return problems;
}

export function assertValidHistory(history: readonly unknown[]): asserts history is History {
  const problems = validateHistory(history);
  if (problems.length > 0) throw new InvalidHistoryError(problems);
}
